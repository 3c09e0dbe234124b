//! `switchboard numbers list|add|show|remove|bind|unbind`.

use std::collections::HashMap;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;
use switchboard_model::{AgentId, NumberId, PhoneNumber, E164};
use switchboard_store::Store;

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::NumbersCommand;
use crate::output::{self, or_dash, Table};

/// A number with the name of the agent that answers it, for output.
#[derive(Serialize)]
struct NumberView {
    #[serde(flatten)]
    number: PhoneNumber,
    agent_name: Option<String>,
}

pub(crate) async fn run(app: &App, cmd: NumbersCommand) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    let region = app.config.phone.default_region;
    match cmd {
        NumbersCommand::List { agent, json } => {
            let agent_id = match agent {
                Some(a) => Some(store.find_agent(&a).await?.id),
                None => None,
            };
            let names = agent_names(store).await?;
            let views: Vec<NumberView> = store
                .list_numbers(agent_id)
                .await?
                .into_iter()
                .map(|n| view(n, &names))
                .collect();
            if json.json {
                return output::json(&views).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["NUMBER", "AGENT", "LABEL", "ID"]);
            for v in &views {
                table.row(vec![
                    v.number.e164.to_string(),
                    or_dash(v.agent_name.as_ref()),
                    v.number.label.clone(),
                    v.number.id.to_string(),
                ]);
            }
            table.print(
                "No numbers yet: add one with `switchboard numbers add NUMBER --agent AGENT`.",
            );
        }
        NumbersCommand::Add {
            number,
            agent,
            label,
            json,
        } => {
            let e164 = E164::parse(&number, region)?;
            let agent = match agent {
                Some(a) => Some(store.find_agent(&a).await?),
                None => None,
            };
            let added = store
                .add_number(&e164, agent.as_ref().map(|a| a.id), label.trim())
                .await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "number.add",
                    added.e164.as_str(),
                    json!({ "agent_id": added.agent_id, "label": added.label }),
                )
                .await?;
            if json.json {
                let names = agent_names(store).await?;
                output::json(&view(added, &names))?;
            } else {
                match agent {
                    Some(a) => println!("Added {} → agent {}.", added.e164, a.spec.name),
                    None => println!(
                        "Added {} (not bound: bind it with `switchboard numbers bind {} --agent AGENT`).",
                        added.e164, added.e164
                    ),
                }
            }
        }
        NumbersCommand::Show { number, json } => {
            let n = find(store, &number, region).await?;
            let names = agent_names(store).await?;
            let v = view(n, &names);
            if json.json {
                output::json(&v)?;
            } else {
                output::fields(&[
                    ("number", v.number.e164.to_string()),
                    (
                        "agent",
                        match (&v.agent_name, v.number.agent_id) {
                            (Some(name), Some(id)) => format!("{name} ({id})"),
                            _ => "- (calls to it are refused)".into(),
                        },
                    ),
                    (
                        "label",
                        or_dash(Some(&v.number.label).filter(|l| !l.is_empty())),
                    ),
                    ("id", v.number.id.to_string()),
                    ("created", v.number.created_at.to_string()),
                ]);
            }
        }
        NumbersCommand::Remove { number } => {
            let n = find(store, &number, region).await?;
            store.delete_number(&n.e164).await?;
            store
                .audit(AUDIT_ACTOR, "number.delete", n.e164.as_str(), json!({}))
                .await?;
            println!("Removed {}.", n.e164);
        }
        NumbersCommand::Bind {
            number,
            agent,
            json,
        } => {
            let n = find(store, &number, region).await?;
            let agent = store.find_agent(&agent).await?;
            let bound = store.bind_number(&n.e164, Some(agent.id)).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "number.bind",
                    bound.e164.as_str(),
                    json!({ "agent_id": agent.id }),
                )
                .await?;
            if json.json {
                let names = agent_names(store).await?;
                output::json(&view(bound, &names))?;
            } else {
                println!("{} → agent {}.", bound.e164, agent.spec.name);
            }
        }
        NumbersCommand::Unbind { number, json } => {
            let n = find(store, &number, region).await?;
            let unbound = store.bind_number(&n.e164, None).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "number.unbind",
                    unbound.e164.as_str(),
                    json!({}),
                )
                .await?;
            if json.json {
                output::json(&view(unbound, &HashMap::new()))?;
            } else {
                println!("{} is no longer bound to an agent.", unbound.e164);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A number by id, or by the number in any common form.
async fn find(
    store: &Store,
    text: &str,
    region: switchboard_model::Region,
) -> anyhow::Result<PhoneNumber> {
    if let Ok(id) = text.parse::<NumberId>() {
        return Ok(store.number(id).await?);
    }
    let e164 = E164::parse(text, region)?;
    Ok(store.number_by_e164(&e164).await?)
}

async fn agent_names(store: &Store) -> anyhow::Result<HashMap<AgentId, String>> {
    Ok(store
        .list_agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a.spec.name))
        .collect())
}

fn view(number: PhoneNumber, names: &HashMap<AgentId, String>) -> NumberView {
    let agent_name = number.agent_id.and_then(|id| names.get(&id).cloned());
    NumberView { number, agent_name }
}
