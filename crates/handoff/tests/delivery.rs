//! Delivery end to end, against the built-in sandbox over real HTTP on
//! loopback: exactly-once conversations and messages through outages, 429
//! storms and lost responses; authenticated identities verified by the
//! sandbox; dead letters with Salesforce's words; re-drive.

use std::sync::Arc;
use std::time::Duration;

use switchboard_handoff::intake::{record_text_call, request_handoff, TextCallInput, TurnInput};
use switchboard_handoff::policy::Backoff;
use switchboard_handoff::settings::MiawSettingsInput;
use switchboard_handoff::worker::wait_delivered;
use switchboard_handoff::{
    ConfigOverrides, SalesforceSettings, SandboxTarget, Worker, WorkerConfig,
};
use switchboard_model::*;
use switchboard_salesforce::{keygen, Fault, JwtAlgorithm, Sandbox, SandboxConfig};
use switchboard_store::Store;
use tokio::sync::{watch, Notify};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Rig {
    store: Store,
    sandbox: Sandbox,
    url: String,
    settings: Arc<SalesforceSettings>,
    notify: Arc<Notify>,
    stop: watch::Sender<bool>,
    _dir: Option<tempfile::TempDir>,
}

async fn serve_sandbox(sandbox: &Sandbox) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = sandbox.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn fast_config() -> WorkerConfig {
    WorkerConfig {
        backoff: Backoff {
            base: Duration::from_millis(5),
            cap: Duration::from_millis(40),
        },
        idle_poll: Duration::from_millis(20),
        lease: Duration::from_secs(5),
        ..Default::default()
    }
}

impl Rig {
    async fn new(store: Store, dir: Option<tempfile::TempDir>, workers: usize) -> Rig {
        let sandbox = Sandbox::new(SandboxConfig::default());
        let url = serve_sandbox(&sandbox).await;
        let cfg = sandbox.config();
        let settings = Arc::new(
            SalesforceSettings::new(
                store.clone(),
                ConfigOverrides::default(),
                SandboxTarget {
                    url: url.clone(),
                    org_id: cfg.org_id.clone(),
                    deployment_name: cfg.deployment_name.clone(),
                },
                Some("http://127.0.0.1:8080".into()),
            )
            .with_request_timeout(Duration::from_secs(2)),
        );
        let notify = Arc::new(Notify::new());
        let (stop, rx) = watch::channel(false);
        for i in 0..workers {
            let worker = Worker::new(
                store.clone(),
                settings.clone(),
                Arc::new(SystemClock),
                fast_config(),
                format!("test-{i}"),
            )
            .with_notifier(notify.clone());
            let rx = rx.clone();
            tokio::spawn(async move { worker.run(rx).await });
        }
        Rig {
            store,
            sandbox,
            url,
            settings,
            notify,
            stop,
            _dir: dir,
        }
    }

    async fn sqlite(workers: usize) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = switchboard_store::testing::sqlite_store(dir.path())
            .await
            .expect("store");
        Rig::new(store, Some(dir), workers).await
    }

    async fn agent(&self, name: &str, tweak: impl FnOnce(&mut AgentInput)) -> Agent {
        let mut input = AgentInput {
            name: name.into(),
            time_zone: Some("America/New_York".into()),
            ..Default::default()
        };
        tweak(&mut input);
        self.store
            .create_agent(&input.validate(Region::default()).expect("agent"))
            .await
            .expect("create")
    }

    async fn call(&self, agent: &str, from: &str, turns: &[(Speaker, &str)]) -> Session {
        let t0 = Timestamp::parse_rfc3339("2026-11-25T19:03:07.000Z").expect("ts");
        let input = TextCallInput {
            agent: agent.into(),
            from: from.into(),
            to: None,
            direction: None,
            started_at: None,
            turns: turns
                .iter()
                .enumerate()
                .map(|(i, (s, t))| TurnInput {
                    speaker: *s,
                    text: t.to_string(),
                    started_at: t0.plus_millis(2000 * i as i64),
                    ended_at: None,
                })
                .collect(),
        };
        record_text_call(&self.store, input, Region::default(), t0)
            .await
            .expect("text call")
    }

    async fn hand_off(&self, session: &Session) -> Handoff {
        let input = HandoffInput {
            reason: "Caller asked for a person: refund for order 1234".into(),
            preferred_channel: Some(PreferredChannel::Callback),
            channel_details: Some("+14155550100".into()),
            end_session: true,
            ..Default::default()
        };
        request_handoff(
            &self.store,
            session.id,
            input,
            Timestamp::from_millis(1_800_000_000_000),
            &self.notify,
        )
        .await
        .expect("handoff")
    }

    async fn delivered(&self, h: &Handoff) -> Handoff {
        wait_delivered(&self.store, h.id, Duration::from_secs(20))
            .await
            .expect("wait")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

const TURNS: &[(Speaker, &str)] = &[
    (
        Speaker::Ai,
        "Hello, thanks for calling. How can I help you today?",
    ),
    (Speaker::Caller, "I want a refund for order 1234."),
    (
        Speaker::Ai,
        "I can't find that order. Could you repeat the number?",
    ),
    (Speaker::Caller, "I need to speak with a person."),
];

#[tokio::test]
async fn a_handoff_becomes_one_conversation_with_the_whole_transcript() -> TestResult {
    let rig = Rig::sqlite(1).await;
    rig.agent("Support", |_| {}).await;
    rig.settings
        .save(MiawSettingsInput {
            settings: MiawSettings {
                routing_attributes: RoutingAttributeNames {
                    session_id: "OpencxSessionId".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            jwt_private_key: None,
        })
        .await?;
    let session = rig.call("Support", "+1 415 555 0199", TURNS).await;
    let h = rig.delivered(&rig.hand_off(&session).await).await;
    assert_eq!(h.status, HandoffStatus::Delivered, "{:?}", h.last_error);
    assert_eq!((h.messages_acked, h.messages_total), (6, Some(6)));
    assert_eq!(h.identity.as_deref(), Some("unauthenticated"));

    let convs = rig.sandbox.conversations();
    assert_eq!(convs.len(), 1);
    let c = &convs[0];
    assert_eq!(
        c.id.to_string(),
        h.conversation_id.clone().unwrap_or_default()
    );
    assert_eq!(
        c.routing_attributes.get("OpencxSessionId"),
        Some(&session.id.to_string()),
        "the session id under the configured name"
    );
    assert_eq!(
        c.routing_attributes.get("CallerPhone").map(String::as_str),
        Some("+14155550199")
    );
    assert_eq!(
        c.routing_attributes.get("HandoffMode").map(String::as_str),
        Some("logged_escalation")
    );
    assert!(c
        .routing_attributes
        .get("HandoffReason")
        .is_some_and(|r| r.contains("refund")));
    assert!(!c.authenticated);
    let texts: Vec<&str> = c.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(
        texts[0].starts_with("Handoff from the AI phone agent"),
        "{}",
        texts[0]
    );
    assert!(texts[0].contains(&format!("Session id: {}", session.id)));
    assert_eq!(
        texts[1], "[14:03:07] AI: Hello, thanks for calling. How can I help you today?",
        "agent time zone"
    );
    assert_eq!(
        texts[4],
        "[14:03:13] Caller: I need to speak with a person."
    );
    assert!(texts[5].starts_with("Summary: "));
    let session = rig.store.session(session.id).await?;
    assert_eq!(session.outcome, Some(Outcome::LoggedEscalation));
    Ok(())
}

#[tokio::test]
async fn known_callers_get_an_authenticated_identity_the_sandbox_verifies() -> TestResult {
    let rig = Rig::sqlite(1).await;
    rig.agent("Support", |_| {}).await;
    let key = keygen("sb-key-1", JwtAlgorithm::Rs256, 2048)?;
    let mut cfg = rig.sandbox.config();
    cfg.user_verification = true;
    cfg.issuer = Some("switchboard-test".into());
    cfg.keys = vec![("sb-key-1".into(), key.jwk.clone())];
    rig.sandbox.set_config(cfg.clone());
    rig.settings
        .save(MiawSettingsInput {
            settings: MiawSettings {
                scrt_url: rig.url.clone(),
                org_id: cfg.org_id.clone(),
                deployment_name: cfg.deployment_name.clone(),
                jwt_key_id: "sb-key-1".into(),
                jwt_issuer: "switchboard-test".into(),
                jwt_algorithm: "RS256".into(),
                ..Default::default()
            },
            jwt_private_key: Some(key.private_pem.clone()),
        })
        .await?;
    let contact = ContactInput {
        phone: "+14155550123".into(),
        name: "Ana".into(),
        email: None,
        external_id: Some("003XX000004TMM2".into()),
    };
    rig.store
        .create_contact(&contact.validate(Region::default())?)
        .await?;

    let session = rig.call("Support", "+14155550123", TURNS).await;
    let h = rig.delivered(&rig.hand_off(&session).await).await;
    assert_eq!(h.status, HandoffStatus::Delivered, "{:?}", h.last_error);
    assert_eq!(h.identity.as_deref(), Some("authenticated"));
    let c = &rig.sandbox.conversations()[0];
    assert!(c.authenticated);
    assert_eq!(
        c.end_user, "003XX000004TMM2",
        "sub is the contact's external id"
    );

    // A key the org did not register: Salesforce's 401 is kept word for word
    // and the handoff dead-letters at once (retrying cannot fix a key).
    let other = keygen("sb-key-1", JwtAlgorithm::Rs256, 2048)?;
    rig.settings
        .save(MiawSettingsInput {
            settings: MiawSettings {
                scrt_url: rig.url.clone(),
                org_id: cfg.org_id.clone(),
                deployment_name: cfg.deployment_name.clone(),
                jwt_key_id: "sb-key-1".into(),
                jwt_issuer: "switchboard-test".into(),
                jwt_algorithm: "RS256".into(),
                ..Default::default()
            },
            jwt_private_key: Some(other.private_pem.clone()),
        })
        .await?;
    let again = rig.call("Support", "+14155550123", TURNS).await;
    let h = rig.delivered(&rig.hand_off(&again).await).await;
    assert_eq!(h.status, HandoffStatus::DeadLetter);
    let err = h.last_error.clone().unwrap_or_default();
    assert!(err.contains("401"), "{err}");
    // The attempt row is written just after the status; give it a moment.
    let mut attempts = rig.store.handoff_attempts(h.id).await?;
    for _ in 0..50 {
        if !attempts.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        attempts = rig.store.handoff_attempts(h.id).await?;
    }
    assert_eq!(attempts.len(), 1);

    // An unknown caller on the same org: with User Verification on, an
    // unauthenticated token is refused — that is Salesforce's rule, and the
    // handoff dead-letters with its words rather than retrying forever.
    let stranger = rig.call("Support", "+14155550777", TURNS).await;
    let h = rig.delivered(&rig.hand_off(&stranger).await).await;
    assert_eq!(h.status, HandoffStatus::DeadLetter);
    assert!(
        h.last_error.as_deref().is_some_and(|e| e.contains("40")),
        "{:?}",
        h.last_error
    );
    Ok(())
}

#[tokio::test]
async fn outages_429_storms_and_lost_responses_never_duplicate_on_sqlite() -> TestResult {
    outages_and_storms(Rig::sqlite(2).await).await
}

#[tokio::test]
async fn outages_429_storms_and_lost_responses_never_duplicate_on_postgres() -> TestResult {
    match switchboard_store::testing::postgres_store().await? {
        Some(store) => outages_and_storms(Rig::new(store, None, 2).await).await,
        None => {
            eprintln!("note: PostgreSQL not configured; skipped");
            Ok(())
        }
    }
}

async fn outages_and_storms(rig: Rig) -> TestResult {
    rig.agent("Support", |_| {}).await;
    rig.sandbox.faults().push(Fault::Down);
    let mut handoffs = Vec::new();
    for i in 0..5 {
        let s = rig.call("Support", &format!("+1415555010{i}"), TURNS).await;
        handoffs.push(rig.hand_off(&s).await);
    }
    // Let the workers fail against the outage for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let failed = rig
            .store
            .list_handoffs(&switchboard_store::HandoffFilter {
                status: None,
                limit: 100,
            })
            .await?
            .iter()
            .filter(|h| h.last_error.is_some())
            .count();
        if failed == handoffs.len() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rig.sandbox.conversations().is_empty());
    rig.sandbox.faults().clear();
    rig.sandbox.faults().push(Fault::Status {
        status: 429,
        retry_after_secs: Some(0),
        times: 6,
    });
    rig.sandbox.faults().push(Fault::LostResponse { times: 4 });
    rig.sandbox.faults().push(Fault::Status {
        status: 503,
        retry_after_secs: None,
        times: 3,
    });
    rig.notify.notify_waiters();
    for h in &handoffs {
        let h = rig.delivered(h).await;
        assert_eq!(h.status, HandoffStatus::Delivered, "{:?}", h.last_error);
        assert!(h.attempts > 1, "it took retries");
    }
    let convs = rig.sandbox.conversations();
    assert_eq!(convs.len(), handoffs.len(), "one conversation per handoff");
    for c in convs {
        let mut ids: Vec<_> = c.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 6, "every message exactly once in {}", c.id);
        ids.dedup();
        assert_eq!(ids.len(), 6);
        assert!(c.messages[0].text.starts_with("Handoff from"), "in order");
    }
    Ok(())
}

#[tokio::test]
async fn permanent_errors_dead_letter_with_salesforces_words_and_redrive_fixes() -> TestResult {
    let rig = Rig::sqlite(1).await;
    rig.agent("Support", |_| {}).await;
    let cfg = rig.sandbox.config();
    rig.settings
        .save(MiawSettingsInput {
            settings: MiawSettings {
                scrt_url: rig.url.clone(),
                org_id: cfg.org_id.clone(),
                deployment_name: "Wrong_Deployment".into(),
                ..Default::default()
            },
            jwt_private_key: None,
        })
        .await?;
    let s = rig.call("Support", "+14155550100", TURNS).await;
    let h = rig.delivered(&rig.hand_off(&s).await).await;
    assert_eq!(h.status, HandoffStatus::DeadLetter);
    let err = h.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("Wrong_Deployment"),
        "Salesforce's message is kept word for word: {err}"
    );
    assert_eq!(
        rig.store.handoff_attempts(h.id).await?.len(),
        1,
        "no retries for a permanent error"
    );

    rig.settings
        .save(MiawSettingsInput {
            settings: MiawSettings {
                scrt_url: rig.url.clone(),
                org_id: cfg.org_id.clone(),
                deployment_name: cfg.deployment_name.clone(),
                ..Default::default()
            },
            jwt_private_key: None,
        })
        .await?;
    rig.store.redrive_handoff(h.id).await?;
    rig.notify.notify_waiters();
    let h = rig.delivered(&h).await;
    assert_eq!(h.status, HandoffStatus::Delivered, "{:?}", h.last_error);
    assert_eq!(rig.sandbox.conversations().len(), 1);
    Ok(())
}

#[tokio::test]
async fn incomplete_settings_wait_as_not_configured_until_saved() -> TestResult {
    let rig = Rig::sqlite(1).await;
    rig.agent("Support", |_| {}).await;
    // Settings saved through the API are validated; bad values stored by an
    // older version (or edited in the database) must still not lose a handoff.
    rig.store
        .put_setting(
            "salesforce.miaw",
            &serde_json::json!({ "org_id": "00D000000000001" }),
        )
        .await?;
    let s = rig.call("Support", "+14155550100", TURNS).await;
    let h = rig.delivered(&rig.hand_off(&s).await).await;
    assert_eq!(h.status, HandoffStatus::NotConfigured);
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.contains("scrt_url")),
        "{:?}",
        h.last_error
    );
    let cfg = rig.sandbox.config();
    rig.settings
        .save(MiawSettingsInput {
            settings: MiawSettings {
                scrt_url: rig.url.clone(),
                org_id: cfg.org_id.clone(),
                deployment_name: cfg.deployment_name.clone(),
                ..Default::default()
            },
            jwt_private_key: None,
        })
        .await?;
    rig.notify.notify_waiters();
    let h = rig.delivered(&h).await;
    assert_eq!(
        h.status,
        HandoffStatus::Delivered,
        "saving valid settings re-drives waiting handoffs: {:?}",
        h.last_error
    );
    Ok(())
}

#[tokio::test]
async fn huge_and_dirty_turns_are_cleaned_and_split() -> TestResult {
    let rig = Rig::sqlite(1).await;
    rig.agent("Support", |_| {}).await;
    let huge = format!("start {} end\u{7}\u{1b}[31m", "blah ".repeat(20_000));
    let s = rig
        .call(
            "Support",
            "+14155550100",
            &[
                (Speaker::Caller, huge.as_str()),
                (Speaker::Caller, "I need to speak with a person"),
            ],
        )
        .await;
    let h = rig.delivered(&rig.hand_off(&s).await).await;
    assert_eq!(h.status, HandoffStatus::Delivered, "{:?}", h.last_error);
    let c = &rig.sandbox.conversations()[0];
    let max = rig.sandbox.config().max_message_chars;
    assert!(c.messages.len() > 25, "100 KB became many messages");
    assert!(c.messages.iter().all(|m| m.text.chars().count() <= max));
    assert!(c
        .messages
        .iter()
        .all(|m| !m.text.contains('\u{7}') && !m.text.contains('\u{1b}')));
    Ok(())
}

#[tokio::test]
async fn several_workers_on_postgres_deliver_each_handoff_once() -> TestResult {
    let Some(store) = switchboard_store::testing::postgres_store().await? else {
        eprintln!("note: PostgreSQL not configured; skipped");
        return Ok(());
    };
    let rig = Rig::new(store, None, 4).await;
    rig.agent("Support", |_| {}).await;
    let mut handoffs = Vec::new();
    for i in 0..30 {
        let s = rig
            .call("Support", &format!("+141555501{i:02}"), TURNS)
            .await;
        handoffs.push(rig.hand_off(&s).await);
    }
    rig.sandbox.faults().push(Fault::LostResponse { times: 10 });
    for h in &handoffs {
        assert_eq!(rig.delivered(h).await.status, HandoffStatus::Delivered);
    }
    let convs = rig.sandbox.conversations();
    assert_eq!(convs.len(), 30);
    assert!(convs.iter().all(|c| c.messages.len() == 6));
    Ok(())
}
