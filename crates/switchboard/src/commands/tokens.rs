//! `switchboard tokens create|list|revoke`: bearer tokens for the API.

use std::process::ExitCode;

use serde_json::json;
use switchboard_model::TokenId;

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::TokensCommand;
use crate::output::{self, or_dash, Table};
use crate::Failure;

pub(crate) async fn run(app: &App, cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    match cmd {
        TokensCommand::Create { name, json } => {
            let name = switchboard_model::single_line("name", &name, 80)?;
            if name.is_empty() {
                return Err(Failure::usage(
                    "--name: is required: say what the token is for, such as ci",
                ));
            }
            let created = store.create_api_token(&name).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "token.create",
                    &created.token.id.to_string(),
                    json!({ "name": name }),
                )
                .await?;
            if json.json {
                output::json(&json!({
                    "id": created.token.id,
                    "name": created.token.name,
                    "token": created.secret,
                }))?;
            } else {
                println!(
                    "Created token {} ({}).",
                    created.token.name, created.token.id
                );
                println!("Token: {}", created.secret);
                println!(
                    "It is shown only now: store it; send it as `Authorization: Bearer <token>`."
                );
            }
        }
        TokensCommand::List(out) => {
            let tokens = store.list_api_tokens().await?;
            if out.json {
                return output::json(&tokens).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["ID", "NAME", "CREATED", "LAST USED"]);
            for t in &tokens {
                table.row(vec![
                    t.id.to_string(),
                    t.name.clone(),
                    t.created_at.to_string(),
                    or_dash(t.last_used_at),
                ]);
            }
            table.print("No tokens: create one with `switchboard tokens create --name NAME`.");
        }
        TokensCommand::Revoke { id } => {
            let id: TokenId = id.parse().map_err(|_| {
                Failure::usage(format!(
                    "{id:?} is not a token id; `switchboard tokens list` shows them"
                ))
            })?;
            store.revoke_api_token(id).await?;
            store
                .audit(AUDIT_ACTOR, "token.revoke", &id.to_string(), json!({}))
                .await?;
            println!("Revoked token {id}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
