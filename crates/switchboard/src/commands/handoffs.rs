//! `switchboard handoffs list|show|redrive`.

use std::process::ExitCode;

use serde_json::json;
use switchboard_model::{Handoff, HandoffId, HandoffStatus, SessionId};
use switchboard_store::{HandoffFilter, Store, StoreError};

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::HandoffsCommand;
use crate::output::{self, or_dash, Table};
use crate::Failure;

pub(crate) async fn run(app: &App, cmd: HandoffsCommand) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    match cmd {
        HandoffsCommand::List {
            status,
            limit,
            json,
        } => {
            let status = match status {
                Some(s) => Some(
                    s.parse::<HandoffStatus>()
                        .map_err(|e| Failure::usage(format!("--status: {e}")))?,
                ),
                None => None,
            };
            let list = store
                .list_handoffs(&HandoffFilter { status, limit })
                .await?;
            if json.json {
                return output::json(&list).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                "ID",
                "SESSION",
                "CREATED",
                "MODE",
                "STATUS",
                "MESSAGES",
                "LAST ERROR",
            ]);
            for h in &list {
                table.row(vec![
                    h.id.to_string(),
                    h.session_id.to_string(),
                    h.created_at.to_string(),
                    h.mode.to_string(),
                    h.status.to_string(),
                    format!(
                        "{}/{}",
                        h.messages_acked,
                        h.messages_total.map_or("?".into(), |t| t.to_string())
                    ),
                    or_dash(
                        h.last_error
                            .as_deref()
                            .map(|e| e.chars().take(80).collect::<String>()),
                    ),
                ]);
            }
            table.print("No handoffs.");
        }
        HandoffsCommand::Show { id, json } => {
            let h = find(store, &id).await?;
            let attempts = store.handoff_attempts(h.id).await?;
            if json.json {
                return output::json(&json!({ "handoff": h, "attempts": attempts }))
                    .map(|()| ExitCode::SUCCESS);
            }
            println!("id: {}", h.id);
            println!("session: {}", h.session_id);
            println!("mode: {}", h.mode);
            println!("reason: {}", h.reason);
            println!("status: {}", h.status);
            println!(
                "messages acknowledged: {} of {}",
                h.messages_acked,
                h.messages_total.map_or("?".into(), |t| t.to_string())
            );
            println!("conversation: {}", or_dash(h.conversation_id.as_deref()));
            println!("identity: {}", or_dash(h.identity.as_deref()));
            if let Some(attrs) = &h.routing_attributes {
                for (k, v) in attrs {
                    println!("routing attribute {k}: {v}");
                }
            }
            println!("rep: {}", or_dash(h.rep_name.as_deref()));
            println!("last error: {}", or_dash(h.last_error.as_deref()));
            let mut table = Table::new(&["STARTED", "MS", "OUTCOME", "SENT", "ERROR"]);
            for a in &attempts {
                table.row(vec![
                    a.started_at.to_string(),
                    (a.finished_at.as_millis() - a.started_at.as_millis()).to_string(),
                    a.outcome.clone(),
                    a.messages_sent.to_string(),
                    or_dash(a.error.as_deref()),
                ]);
            }
            table.print("No delivery attempt yet.");
        }
        HandoffsCommand::Redrive { id } => {
            let h = find(store, &id).await?;
            let h = store.redrive_handoff(h.id).await.map_err(|e| match e {
                StoreError::Conflict { message, .. } => Failure::failed(message),
                other => other.into(),
            })?;
            store
                .audit(AUDIT_ACTOR, "handoff.redrive", &h.id.to_string(), json!({}))
                .await?;
            println!("Handoff {} queued again; a running `switchboard serve` delivers it within a second.", h.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A handoff by its id or by its session's id.
async fn find(store: &Store, id: &str) -> anyhow::Result<Handoff> {
    if let Ok(hid) = id.parse::<HandoffId>() {
        match store.handoff(hid).await {
            Ok(h) => return Ok(h),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Ok(sid) = id.parse::<SessionId>() {
        if let Some(h) = store.handoff_for_session(sid).await? {
            return Ok(h);
        }
    }
    Err(Failure::failed(format!(
        "no handoff with id or session id `{id}` (see `switchboard handoffs list`)"
    )))
}
