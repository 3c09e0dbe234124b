//! `switchboard trunks list|add|show|remove`.
//!
//! Passwords are read from a named environment variable or stdin, never from
//! an argument (arguments are visible to every user in `ps`), and are never
//! printed: the trunk record only says whether one is set.

use std::io::BufRead;
use std::process::ExitCode;

use serde_json::json;
use switchboard_model::{Trunk, TrunkInput};

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::{TrunkAddArgs, TrunksCommand};
use crate::output::{self, or_dash, Table};
use crate::Failure;

pub(crate) async fn run(app: &App, cmd: TrunksCommand) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    match cmd {
        TrunksCommand::List(out) => {
            let trunks = store.list_trunks().await?;
            if out.json {
                return output::json(&trunks).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["ID", "NAME", "HOST", "TRANSPORT", "INBOUND AUTH"]);
            for t in &trunks {
                table.row(vec![
                    t.id.to_string(),
                    t.name.clone(),
                    format!("{}:{}", t.host, t.port),
                    t.transport.to_string(),
                    inbound_auth(t),
                ]);
            }
            table.print("No trunks yet: add one with `switchboard trunks add --name NAME --host HOST --allow CIDR`.");
        }
        TrunksCommand::Add(args) => {
            let json_out = args.json;
            let input = trunk_input(*args)?;
            let spec = input.validate(app.config.phone.default_region)?;
            let trunk = store.create_trunk(&spec).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "trunk.create",
                    &trunk.id.to_string(),
                    json!({ "name": trunk.name, "host": trunk.host }),
                )
                .await?;
            if json_out {
                output::json(&trunk)?;
            } else {
                println!("Added trunk {} ({}).", trunk.name, trunk.id);
            }
        }
        TrunksCommand::Show { trunk, json } => {
            let t = store.find_trunk(&trunk).await?;
            if json.json {
                output::json(&t)?;
            } else {
                show(&t);
            }
        }
        TrunksCommand::Remove { trunk } => {
            let t = store.find_trunk(&trunk).await?;
            store.delete_trunk(t.id).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "trunk.delete",
                    &t.id.to_string(),
                    json!({ "name": t.name }),
                )
                .await?;
            println!("Removed trunk {} ({}).", t.name, t.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn trunk_input(args: TrunkAddArgs) -> anyhow::Result<TrunkInput> {
    let mut stdin_lines = None;
    let mut read_stdin = |flag: &str| -> anyhow::Result<String> {
        let lines = stdin_lines.get_or_insert_with(|| std::io::stdin().lock().lines());
        match lines.next() {
            Some(Ok(line)) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Some(Err(e)) => Err(Failure::usage(format!("{flag}: cannot read stdin: {e}"))),
            None => Err(Failure::usage(format!(
                "{flag}: stdin ended before a password line"
            ))),
        }
    };
    let inbound_password = if args.inbound_password_stdin {
        Some(read_stdin("--inbound-password-stdin")?)
    } else {
        password_from_env("--inbound-password-env", args.inbound_password_env)?
    };
    let outbound_password = if args.outbound_password_stdin {
        Some(read_stdin("--outbound-password-stdin")?)
    } else {
        password_from_env("--outbound-password-env", args.outbound_password_env)?
    };
    let transport = args.transport.map(|t| t.parse()).transpose()?;
    Ok(TrunkInput {
        name: args.name,
        host: args.host,
        port: args.port,
        transport,
        allowed_cidrs: args.allow,
        inbound_username: args.inbound_username,
        inbound_password,
        outbound_username: args.outbound_username,
        outbound_password,
        register: args.register,
        outbound_caller_id: args.caller_id,
        transfer: match args.transfer.as_deref() {
            None => Default::default(),
            Some(t) => t
                .parse()
                .map_err(|_| Failure::usage(format!("--transfer {t}: use bridge or refer")))?,
        },
    })
}

/// The password in the environment variable named by `flag`, if given.
fn password_from_env(flag: &str, var: Option<String>) -> anyhow::Result<Option<String>> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(&var) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        Ok(_) => Err(Failure::usage(format!(
            "{flag}: environment variable {var} is empty; put the password in it"
        ))),
        Err(std::env::VarError::NotPresent) => Err(Failure::usage(format!(
            "{flag}: environment variable {var} is not set; export it with the password (or use the matching --…-password-stdin)"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::usage(format!(
            "{flag}: environment variable {var} is not valid UTF-8"
        ))),
    }
}

fn inbound_auth(t: &Trunk) -> String {
    let mut parts = Vec::new();
    if !t.allowed_cidrs.is_empty() {
        parts.push(format!("{} source(s)", t.allowed_cidrs.len()));
    }
    if t.inbound_username.is_some() {
        parts.push("digest".to_string());
    }
    parts.join(" + ")
}

fn set(yes: bool) -> String {
    if yes { "set" } else { "not set" }.to_string()
}

fn show(t: &Trunk) {
    output::fields(&[
        ("id", t.id.to_string()),
        ("name", t.name.clone()),
        ("host", t.host.clone()),
        ("port", t.port.to_string()),
        ("transport", t.transport.to_string()),
        (
            "allowed sources",
            if t.allowed_cidrs.is_empty() {
                "-".into()
            } else {
                t.allowed_cidrs
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("inbound username", or_dash(t.inbound_username.as_ref())),
        ("inbound password", set(t.inbound_password_set)),
        ("outbound username", or_dash(t.outbound_username.as_ref())),
        ("outbound password", set(t.outbound_password_set)),
        ("register", t.register.to_string()),
        ("caller id", or_dash(t.outbound_caller_id.as_ref())),
        ("transfer", t.transfer.to_string()),
        ("created", t.created_at.to_string()),
    ]);
}
