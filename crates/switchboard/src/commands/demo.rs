//! `switchboard demo`: a short text call that ends in a handoff, so a fresh
//! install shows the whole path — session, transcript, Salesforce (or the
//! sandbox) — without a phone.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use switchboard_handoff::intake::{record_text_call, request_handoff, TextCallInput, TurnInput};
use switchboard_model::{
    AgentInput, Clock, HandoffInput, HandoffStatus, PreferredChannel, Speaker, SystemClock, E164,
};
use tokio::sync::Notify;

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::DemoArgs;
use crate::output;

const DEMO_AGENT: &str = "Demo";
const DEMO_NUMBER: &str = "+14155550100";
const DEMO_CALLER: &str = "+14155550199";

pub(crate) async fn run(app: &App, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    let region = app.config.phone.default_region;
    let agents = store.list_agents().await?;
    let agent = match agents.into_iter().next() {
        Some(a) => a,
        None => {
            let spec = AgentInput {
                name: DEMO_AGENT.into(),
                instructions: Some("Opening hours: Monday to Friday, 9 am to 5 pm.".into()),
                ..Default::default()
            }
            .validate(region)?;
            let agent = store.create_agent(&spec).await?;
            let number = E164::parse(DEMO_NUMBER, region)?;
            store.add_number(&number, Some(agent.id), "demo").await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "agent.create",
                    DEMO_AGENT,
                    json!({ "demo": true }),
                )
                .await?;
            agent
        }
    };
    let now = SystemClock.now();
    let at = |s: i64| now.plus_millis(s * 1000 - 20_000);
    let turns = [
        (Speaker::Ai, agent.spec.greeting.as_str()),
        (Speaker::Caller, "What are your opening hours?"),
        (Speaker::Ai, "We are open Monday to Friday, 9 am to 5 pm."),
        (
            Speaker::Caller,
            "Thanks. I need to speak with a person about my bill.",
        ),
        (
            Speaker::Ai,
            "Of course. How would you like us to follow up: email, SMS or a callback?",
        ),
        (Speaker::Caller, "A callback, please."),
    ];
    let session = record_text_call(
        store,
        TextCallInput {
            agent: agent.id.to_string(),
            from: DEMO_CALLER.into(),
            to: None,
            direction: None,
            started_at: Some(at(0)),
            turns: turns
                .iter()
                .enumerate()
                .map(|(i, (speaker, text))| TurnInput {
                    speaker: *speaker,
                    text: text.to_string(),
                    started_at: at(3 * i as i64),
                    ended_at: Some(at(3 * i as i64 + 2)),
                })
                .collect(),
        },
        region,
        now,
    )
    .await?;
    let handoff = request_handoff(
        store,
        session.id,
        HandoffInput {
            mode: None,
            reason: "The caller asked to speak with a person about a bill; the AI cannot see billing records.".into(),
            summary: Some("Billing question. Caller asked for a person and prefers a callback on this number.".into()),
            preferred_channel: Some(PreferredChannel::Callback),
            channel_details: Some(DEMO_CALLER.into()),
            end_session: true,
        },
        now,
        &Notify::new(),
    )
    .await?;
    store
        .audit(AUDIT_ACTOR, "demo.call", &session.id.to_string(), json!({}))
        .await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let mut h = handoff;
    while args.wait > 0
        && tokio::time::Instant::now() < deadline
        && !matches!(
            h.status,
            HandoffStatus::Delivered | HandoffStatus::DeadLetter | HandoffStatus::NotConfigured
        )
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h = store.handoff(h.id).await?;
    }
    let base = app
        .config
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", app.config.http.addr));
    if args.json.json {
        output::json(&json!({ "session": session.id, "handoff": h }))?;
    } else {
        println!(
            "Demo call recorded: agent {}, caller {DEMO_CALLER}, {} turns, handed off.",
            agent.spec.name,
            turns.len()
        );
        println!(
            "Session (what happened, transcript, handoff status): {base}/inbox/{}",
            session.id
        );
        match h.status {
            HandoffStatus::Delivered => {
                println!(
                    "Delivered to Salesforce: conversation {} with {} messages.",
                    h.conversation_id.as_deref().unwrap_or("?"),
                    h.messages_acked
                );
                if let Some(addr) = app.config.sandbox.addr {
                    println!("What a rep sees (built-in sandbox while no org is configured): {base}/sandbox or http://{addr}/sandbox/console");
                }
            }
            HandoffStatus::Pending | HandoffStatus::Delivering => {
                println!("Not delivered yet: is `switchboard serve` running? It delivers the handoff as soon as it runs.");
            }
            _ => println!(
                "Delivery stopped: {} — see {base}/troubleshooting",
                h.last_error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
    Ok(if h.status == HandoffStatus::Delivered || args.wait == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
