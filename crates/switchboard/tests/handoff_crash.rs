//! Exactly-once delivery across a crash: the real binary is killed with
//! SIGKILL while it delivers handoffs to a sandbox (in this test process,
//! slowed down so the kill lands mid-delivery), then restarted. Afterwards
//! every conversation exists exactly once with every message exactly once,
//! as the sandbox recorded them.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Sandbox as TempDir, Server};
use switchboard_handoff::intake::{record_text_call, request_handoff, TextCallInput, TurnInput};
use switchboard_model::{AgentInput, HandoffInput, HandoffStatus, Region, Speaker, Timestamp};
use switchboard_salesforce::{Fault, RepBehaviour, Sandbox, SandboxConfig};

const HANDOFFS: usize = 8;
const TURNS: usize = 20;
/// Header + turns + summary.
const MESSAGES: usize = TURNS + 2;

async fn serve_sandbox() -> (Sandbox, String) {
    let sandbox = Sandbox::new(SandboxConfig {
        rep: RepBehaviour {
            accept_after: None,
            ..Default::default()
        },
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = sandbox.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (sandbox, url)
}

fn serve_cmd(
    dir: &TempDir,
    sandbox_url: &str,
    database_url: Option<&str>,
) -> std::process::Command {
    let defaults = SandboxConfig::default();
    let mut cmd = dir.cmd(&["serve", "--http", "127.0.0.1:0"]);
    cmd.env("SWITCHBOARD_ADMIN_PASSWORD", "correct horse battery")
        .env("SWITCHBOARD_SANDBOX_ADDR", "off")
        .env("SWITCHBOARD_SALESFORCE_SCRT_URL", sandbox_url)
        .env("SWITCHBOARD_SALESFORCE_ORG_ID", &defaults.org_id)
        .env(
            "SWITCHBOARD_SALESFORCE_DEPLOYMENT_NAME",
            &defaults.deployment_name,
        )
        .env("SWITCHBOARD_HANDOFF_WORKERS", "2")
        // A crashed worker's lease must expire quickly for the test.
        .env("SWITCHBOARD_HANDOFF_LEASE_SECONDS", "2");
    if let Some(url) = database_url {
        cmd.env("SWITCHBOARD_DATABASE_URL", url);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_on_sqlite() {
    crash_and_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_on_postgres() {
    match switchboard_store::testing::fresh_postgres_url()
        .await
        .unwrap()
    {
        Some(url) => crash_and_restart(Some(&url)).await,
        None => eprintln!("note: PostgreSQL not configured; skipped"),
    }
}

async fn crash_and_restart(database_url: Option<&str>) {
    let (sandbox, url) = serve_sandbox().await;
    sandbox.faults().push(Fault::Latency { ms: 25 });
    let dir = TempDir::new();

    // First start migrates and creates the admin; then the handoffs are
    // written straight into the same database, as the voice engine will.
    let mut server = Server::start(serve_cmd(&dir, &url, database_url));
    server.wait_for_dashboard();
    let store = match database_url {
        Some(db) => switchboard_store::Store::connect(
            db,
            Default::default(),
            switchboard_store::SecretBox::ephemeral(),
        )
        .await
        .unwrap(),
        None => dir.store().await,
    };
    let agent = AgentInput {
        name: "Support".into(),
        ..Default::default()
    }
    .validate(Region::default())
    .unwrap();
    store.create_agent(&agent).await.unwrap();
    let t0 = Timestamp::parse_rfc3339("2026-11-25T19:00:00.000Z").unwrap();
    let notify = tokio::sync::Notify::new();
    let mut ids = Vec::new();
    for i in 0..HANDOFFS {
        let turns = (0..TURNS)
            .map(|t| TurnInput {
                speaker: if t % 2 == 0 {
                    Speaker::Ai
                } else {
                    Speaker::Caller
                },
                text: format!("call {i} turn {t}"),
                started_at: t0.plus_millis(1000 * t as i64),
                ended_at: None,
            })
            .collect();
        let input = TextCallInput {
            agent: "Support".into(),
            from: format!("+1415555{:04}", 100 + i),
            to: None,
            direction: None,
            started_at: None,
            turns,
        };
        let session = record_text_call(&store, input, Region::default(), t0)
            .await
            .unwrap();
        let h = request_handoff(
            &store,
            session.id,
            HandoffInput {
                reason: "asked for a person".into(),
                ..Default::default()
            },
            t0,
            &notify,
        )
        .await
        .unwrap();
        ids.push(h.id);
    }

    // Kill -9 once delivery is well under way but not finished.
    let end = Instant::now() + Duration::from_secs(30);
    while sandbox.request_count() < (HANDOFFS * MESSAGES / 3) as u64 {
        assert!(
            Instant::now() < end,
            "delivery never started: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let delivered_before = sandbox
        .conversations()
        .iter()
        .filter(|c| c.messages.len() == MESSAGES)
        .count();
    assert!(
        delivered_before < HANDOFFS,
        "the kill landed mid-delivery ({delivered_before} of {HANDOFFS} were complete)"
    );

    // Restart: the new process takes the crashed jobs over when their leases expire.
    let mut server = Server::start(serve_cmd(&dir, &url, database_url));
    server.wait_for_dashboard();
    let end = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let h = store.handoff(*id).await.unwrap();
            if h.status == HandoffStatus::Delivered {
                break;
            }
            assert!(
                Instant::now() < end,
                "handoff {id} not delivered after restart: {h:?}\n{}",
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(server.terminate(), 0);

    let conversations = sandbox.conversations();
    assert_eq!(
        conversations.len(),
        HANDOFFS,
        "each conversation exists exactly once"
    );
    for c in &conversations {
        assert_eq!(
            c.messages.len(),
            MESSAGES,
            "every message exactly once in {}",
            c.id
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            c.messages.iter().all(|m| seen.insert(m.id)),
            "no duplicate message ids in {}",
            c.id
        );
        assert!(
            c.messages[0].text.starts_with("Handoff from"),
            "header first"
        );
        for t in 0..TURNS {
            assert!(
                c.messages[t + 1].text.ends_with(&format!("turn {t}")),
                "turn {t} in order: {}",
                c.messages[t + 1].text
            );
        }
        assert!(c.messages[MESSAGES - 1].text.starts_with("Summary:"));
    }
    store.close().await;
}
