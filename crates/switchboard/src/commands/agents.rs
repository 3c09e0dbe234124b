//! `switchboard agents list|add|show|remove`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use switchboard_model::{Agent, AgentInput, RoutingAttributeNames};

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::{AgentAddArgs, AgentsCommand};
use crate::output::{self, or_dash, Table};
use crate::Failure;

pub(crate) async fn run(app: &App, cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    match cmd {
        AgentsCommand::List(out) => {
            let agents = store.list_agents().await?;
            if out.json {
                return output::json(&agents).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["ID", "NAME", "LANGUAGE", "HANDOFF", "HANDOFF NUMBER"]);
            for a in &agents {
                table.row(vec![
                    a.id.to_string(),
                    a.spec.name.clone(),
                    a.spec.language.clone(),
                    a.spec.handoff_mode.to_string(),
                    or_dash(a.spec.handoff_number.as_ref()),
                ]);
            }
            table.print("No agents yet: add one with `switchboard agents add --name NAME`.");
        }
        AgentsCommand::Add(args) => {
            let json_out = args.json;
            let input = agent_input(*args)?;
            let spec = input.validate(app.config.phone.default_region)?;
            let agent = store.create_agent(&spec).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "agent.create",
                    &agent.id.to_string(),
                    json!({ "name": agent.spec.name }),
                )
                .await?;
            if json_out {
                output::json(&agent)?;
            } else {
                println!("Added agent {} ({}).", agent.spec.name, agent.id);
            }
        }
        AgentsCommand::Show { agent, json } => {
            let agent = store.find_agent(&agent).await?;
            if json.json {
                output::json(&agent)?;
            } else {
                show(&agent);
            }
        }
        AgentsCommand::Remove { agent } => {
            let agent = store.find_agent(&agent).await?;
            store.delete_agent(agent.id).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "agent.delete",
                    &agent.id.to_string(),
                    json!({ "name": agent.spec.name }),
                )
                .await?;
            println!("Removed agent {} ({}).", agent.spec.name, agent.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The agent described by `--from-json` (if any) with the flags on top.
fn agent_input(args: AgentAddArgs) -> anyhow::Result<AgentInput> {
    let mut input = match &args.from_json {
        Some(path) => read_json(path)?,
        None => AgentInput::default(),
    };
    if let Some(name) = args.name {
        input.name = name;
    }
    if let Some(v) = args.greeting {
        input.greeting = Some(v);
    }
    if let Some(v) = args.language {
        input.language = Some(v);
    }
    if let Some(v) = args.instructions {
        input.instructions = Some(v);
    }
    if let Some(path) = args.instructions_file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Failure::usage(format!(
                "--instructions-file: cannot read {}: {e}",
                path.display()
            ))
        })?;
        input.instructions = Some(text);
    }
    if let Some(v) = args.voice {
        input.voice = Some(v);
    }
    if let Some(v) = args.handoff_mode {
        input.handoff_mode = Some(v.parse()?);
    }
    if let Some(v) = args.handoff_number {
        input.handoff_number = Some(v);
    }
    if !args.handoff_phrases.is_empty() {
        input.handoff_phrases = Some(args.handoff_phrases);
    }
    if let Some(v) = args.session_id_attribute {
        let mut names = input
            .routing_attributes
            .take()
            .unwrap_or_else(RoutingAttributeNames::default);
        names.session_id = v;
        input.routing_attributes = Some(names);
    }
    if let Some(v) = args.time_zone {
        input.time_zone = Some(v);
    }
    if let Some(v) = args.max_concurrent_calls {
        input.max_concurrent_calls = Some(v);
    }
    Ok(input)
}

fn read_json(path: &Path) -> anyhow::Result<AgentInput> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::usage(format!("--from-json: cannot read stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("--from-json: cannot read {shown}: {e}")))?
    };
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." {
            String::new()
        } else {
            format!("{at}: ")
        };
        Failure::usage(format!("--from-json {shown}: {at}{}", e.inner()))
    })
}

fn show(a: &Agent) {
    let s = &a.spec;
    let r = &s.routing_attributes;
    output::fields(&[
        ("id", a.id.to_string()),
        ("name", s.name.clone()),
        ("language", s.language.clone()),
        ("greeting", s.greeting.clone()),
        ("voice", s.voice.clone()),
        ("brain", s.brain.to_string()),
        ("speech to text", s.stt_provider.to_string()),
        ("text to speech", s.tts_provider.to_string()),
        ("handoff mode", s.handoff_mode.to_string()),
        ("handoff number", or_dash(s.handoff_number.as_ref())),
        ("handoff phrases", s.handoff_phrases.join(", ")),
        (
            "routing attributes",
            format!(
                "session id → {}, caller phone → {}, reason → {}, mode → {}, channel → {}",
                r.session_id, r.caller_phone, r.handoff_reason, r.handoff_mode, r.preferred_channel
            ),
        ),
        ("time zone", s.time_zone.clone()),
        ("max concurrent calls", s.max_concurrent_calls.to_string()),
        ("created", a.created_at.to_string()),
        ("updated", a.updated_at.to_string()),
        (
            "instructions",
            if s.instructions.is_empty() {
                "-".into()
            } else {
                s.instructions.clone()
            },
        ),
    ]);
}
