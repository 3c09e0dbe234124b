//! `switchboard demo`: a short phone call that ends in a handoff, so a fresh
//! install shows the whole path — SIP, speech, the agent, the session with
//! its recording and transcript, Salesforce (or the sandbox) — without a
//! carrier. `--text` records the same conversation as a text call.

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
const DEMO_INSTRUCTIONS: &str = "\
You are the front desk of Acme Dental. Be brief and friendly.

Opening hours: Monday to Friday, 9 am to 5 pm. Closed on weekends and public holidays.

Where are you? We are at 100 Main Street, Springfield, next to the library.

Do you take new patients? Yes, new patients are welcome; the first visit takes about an hour.
";

pub(crate) async fn run(app: &App, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    let region = app.config.phone.default_region;
    let agents = store.list_agents().await?;
    let agent = match agents.into_iter().next() {
        Some(a) => a,
        None => {
            let spec = AgentInput {
                name: DEMO_AGENT.into(),
                instructions: Some(DEMO_INSTRUCTIONS.into()),
                handoff_mode: Some(switchboard_model::HandoffMode::LoggedEscalation),
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
    if !args.text {
        return phone_call(app, &agent, &args).await;
    }
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
    if !args.json.json {
        println!(
            "Demo call recorded: agent {}, caller {DEMO_CALLER}, {} turns, handed off.",
            agent.spec.name,
            turns.len()
        );
    }
    report(app, &session, Some(&h), &args)
}

/// The demo over SIP: make sure this machine may call in, call the running
/// server as the test caller, then report the session and its handoff.
async fn phone_call(
    app: &App,
    agent: &switchboard_model::Agent,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    let region = app.config.phone.default_region;
    let number = match store.list_numbers(Some(agent.id)).await?.into_iter().next() {
        Some(n) => n.e164,
        None => {
            let n = E164::parse(DEMO_NUMBER, region)?;
            store.add_number(&n, Some(agent.id), "demo").await?;
            n
        }
    };
    let loopback_allowed = store.list_trunks().await?.iter().any(|t| {
        t.allowed_cidrs
            .iter()
            .any(|c| c.contains(&std::net::IpAddr::from([127, 0, 0, 1])))
    });
    if !loopback_allowed {
        let spec = switchboard_model::TrunkInput {
            name: "local".into(),
            host: "127.0.0.1".into(),
            allowed_cidrs: vec!["127.0.0.1/32".into()],
            ..Default::default()
        }
        .validate(region)?;
        store.create_trunk(&spec).await?;
        store
            .audit(
                AUDIT_ACTOR,
                "trunk.create",
                "local",
                json!({ "demo": true }),
            )
            .await?;
    }
    let before = SystemClock.now();
    if !args.json.json {
        println!(
            "Calling {number} (agent {}) over SIP as the test caller…",
            agent.spec.name
        );
    }
    let call_args = crate::cli::CallArgs {
        to: number.to_string(),
        say: vec![
            "What are your opening hours?".into(),
            "I need to speak with a person".into(),
        ],
        wav: None,
        record: None,
        timeout: 90,
        from: DEMO_CALLER.into(),
        wait_for_hangup: false,
    };
    let (ok, summary) = crate::commands::call::place(&app.config, call_args).await?;
    if !ok {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        println!(
            "The demo call failed. Is `switchboard serve` running with SIP on {}?",
            app.config
                .sip
                .addr
                .map_or_else(|| "(off)".to_string(), |a| a.to_string())
        );
        return Ok(ExitCode::from(1));
    }
    if !args.json.json {
        println!("The caller said:");
        for s in summary["said"].as_array().into_iter().flatten() {
            println!("  > {}", s.as_str().unwrap_or_default());
        }
        println!("and heard:");
        for h in summary["heard"].as_array().into_iter().flatten() {
            match h["text"].as_str() {
                Some(t) => println!("  < {t}"),
                None => println!("  < ({} ms of speech)", h["duration_ms"]),
            }
        }
    }
    // The session the call made: the newest one of the demo agent.
    let session = store
        .list_sessions(&switchboard_store::SessionFilter {
            agent_id: Some(agent.id),
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_iter()
        .next()
        .filter(|s| s.started_at >= before.plus_millis(-5_000));
    let Some(session) = session else {
        println!(
            "The call ended but no session was recorded for agent {}.",
            agent.spec.name
        );
        return Ok(ExitCode::from(1));
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let mut handoff = None;
    loop {
        if let Some(h) = store.handoff_for_session(session.id).await? {
            let done = matches!(
                h.status,
                HandoffStatus::Delivered | HandoffStatus::DeadLetter | HandoffStatus::NotConfigured
            );
            handoff = Some(h);
            if done {
                break;
            }
        }
        if args.wait == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report(app, &session, handoff.as_ref(), args)
}

fn report(
    app: &App,
    session: &switchboard_model::Session,
    handoff: Option<&switchboard_model::Handoff>,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    let base = app
        .config
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", app.config.http.addr));
    if args.json.json {
        output::json(&json!({ "session": session.id, "handoff": handoff }))?;
    } else {
        println!();
        println!(
            "Session (recording, transcript, reasoning trace, handoff): {base}/inbox/{}",
            session.id
        );
        match handoff {
            None => println!("No handoff was made on this call."),
            Some(h) if h.status == HandoffStatus::Delivered => {
                println!(
                    "Handed off and delivered to Salesforce: conversation {} with {} messages.",
                    h.conversation_id.as_deref().unwrap_or("?"),
                    h.messages_acked
                );
                if let Some(addr) = app.config.sandbox.addr {
                    println!("What a rep sees (built-in sandbox while no org is configured): {base}/sandbox or http://{addr}/sandbox/console");
                }
            }
            Some(h) if matches!(h.status, HandoffStatus::Pending | HandoffStatus::Delivering) => {
                println!(
                    "Handed off; not delivered yet — the server delivers it as soon as it can."
                );
            }
            Some(h) => println!(
                "Handed off, but delivery stopped: {} — see {base}/troubleshooting",
                h.last_error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
    let ok = handoff.is_some_and(|h| h.status == HandoffStatus::Delivered) || args.wait == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
