//! `switchboard users list|set-password`.

use std::io::Read;
use std::process::ExitCode;

use serde_json::json;

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::UsersCommand;
use crate::output::{self, Table};
use crate::Failure;

pub(crate) async fn run(app: &App, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    match cmd {
        UsersCommand::List(out) => {
            let users = store.list_users().await?;
            if out.json {
                return output::json(&users).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["USERNAME", "CREATED"]);
            for u in &users {
                table.row(vec![u.username.clone(), u.created_at.to_string()]);
            }
            table.print("No users.");
        }
        UsersCommand::SetPassword { username, stdin } => {
            let (password, generated) = if stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                let p = text.trim_end_matches(['\r', '\n']).to_string();
                if p.chars().count() < 8 {
                    return Err(Failure::usage("the password must be at least 8 characters"));
                }
                (p, false)
            } else {
                (switchboard_store::auth::random_token(18), true)
            };
            store
                .set_password(&username, &password)
                .await
                .map_err(|e| match e {
                    switchboard_store::StoreError::NotFound { .. } => Failure::failed(format!(
                        "no user `{username}` (see `switchboard users list`)"
                    )),
                    other => other.into(),
                })?;
            store
                .audit(AUDIT_ACTOR, "user.set_password", &username, json!({}))
                .await?;
            if generated {
                println!("New password for {username}: {password}");
            } else {
                println!("Password of {username} changed.");
            }
            println!("Their open dashboard logins have ended.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
