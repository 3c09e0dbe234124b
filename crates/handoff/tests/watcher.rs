//! Following delivered conversations on the sandbox's event stream, over
//! real HTTP on loopback: routing, the rep's name and the end of the chat
//! are recorded on the handoff, and the conversation is closed at Salesforce
//! — when the rep ends it, or when nobody does before the retention.

use std::sync::Arc;
use std::time::Duration;

use switchboard_handoff::intake::{record_text_call, request_handoff, TextCallInput, TurnInput};
use switchboard_handoff::policy::Backoff;
use switchboard_handoff::watcher::{
    watch, ReconnectPolicy, WatchConfig, WatchEnd, WatchRequests, Watchers,
};
use switchboard_handoff::worker::wait_delivered;
use switchboard_handoff::{
    ConfigOverrides, SalesforceSettings, SandboxTarget, TargetSource, Worker, WorkerConfig,
};
use switchboard_model::*;
use switchboard_salesforce::{
    Fault, FaultScope, RepBehaviour, Sandbox, SandboxConfig, SandboxConversation,
};
use switchboard_store::Store;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    store: Store,
    sandbox: Sandbox,
    settings: Arc<SalesforceSettings>,
    notify: Arc<Notify>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// A store, the sandbox with `rep`, and one delivery worker.
    async fn new(rep: RepBehaviour) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = switchboard_store::testing::sqlite_store(dir.path())
            .await
            .expect("store");
        let sandbox = Sandbox::new(SandboxConfig {
            rep,
            ..SandboxConfig::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = sandbox.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let cfg = sandbox.config();
        let settings = Arc::new(
            SalesforceSettings::new(
                store.clone(),
                ConfigOverrides::default(),
                SandboxTarget {
                    url,
                    org_id: cfg.org_id.clone(),
                    deployment_name: cfg.deployment_name.clone(),
                },
                None,
            )
            .with_request_timeout(Duration::from_secs(2)),
        );
        let notify = Arc::new(Notify::new());
        let (stop, rx) = watch::channel(false);
        let worker = Worker::new(
            store.clone(),
            settings.clone(),
            Arc::new(SystemClock),
            WorkerConfig {
                backoff: Backoff {
                    base: Duration::from_millis(5),
                    cap: Duration::from_millis(40),
                },
                idle_poll: Duration::from_millis(20),
                ..Default::default()
            },
            "test".into(),
        )
        .with_notifier(notify.clone());
        tokio::spawn(async move { worker.run(rx).await });
        store
            .create_agent(
                &AgentInput {
                    name: "Support".into(),
                    ..Default::default()
                }
                .validate(Region::default())
                .expect("agent"),
            )
            .await
            .expect("create agent");
        Rig {
            store,
            sandbox,
            settings,
            notify,
            stop,
            _dir: dir,
        }
    }

    /// Starts the watchers; they stop with the rig.
    fn watchers(&self, config: WatchConfig) -> WatchRequests {
        let watchers = Watchers::new(
            self.store.clone(),
            self.settings.clone(),
            Arc::new(SystemClock),
            config,
        );
        let requests = watchers.requests();
        tokio::spawn(watchers.run(self.stop.subscribe()));
        requests
    }

    /// A call handed off and delivered; returns the handoff and its conversation.
    async fn delivered_handoff(&self) -> (Handoff, Uuid) {
        let t0 = Timestamp::parse_rfc3339("2026-11-25T19:03:07.000Z").expect("ts");
        let session = record_text_call(
            &self.store,
            TextCallInput {
                agent: "Support".into(),
                from: "+14155550199".into(),
                to: None,
                direction: None,
                started_at: None,
                turns: vec![
                    TurnInput {
                        speaker: Speaker::Ai,
                        text: "Hello, how can I help?".into(),
                        started_at: t0,
                        ended_at: None,
                    },
                    TurnInput {
                        speaker: Speaker::Caller,
                        text: "I need to speak with a person.".into(),
                        started_at: t0.plus_millis(2000),
                        ended_at: None,
                    },
                ],
            },
            Region::default(),
            t0,
        )
        .await
        .expect("text call");
        let h = request_handoff(
            &self.store,
            session.id,
            HandoffInput {
                reason: "Caller asked for a person".into(),
                end_session: true,
                ..Default::default()
            },
            t0.plus_millis(5000),
            &self.notify,
        )
        .await
        .expect("handoff");
        let h = wait_delivered(&self.store, h.id, WAIT).await.expect("wait");
        assert_eq!(h.status, HandoffStatus::Delivered, "{:?}", h.last_error);
        let conversation = h
            .conversation_id
            .as_deref()
            .and_then(|c| c.parse().ok())
            .expect("conversation id");
        (h, conversation)
    }

    /// The handoff once `done` holds (or its last state after the wait).
    async fn handoff_when(&self, id: HandoffId, done: impl Fn(&Handoff) -> bool) -> Handoff {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let h = self.store.handoff(id).await.expect("handoff");
            if done(&h) || tokio::time::Instant::now() >= deadline {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The sandbox's conversation once `done` holds (or after the wait).
    async fn conversation_when(
        &self,
        id: Uuid,
        done: impl Fn(&SandboxConversation) -> bool,
    ) -> SandboxConversation {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let c = self.sandbox.conversation(id).expect("conversation");
            if done(&c) || tokio::time::Instant::now() >= deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the watcher has opened a new event stream since `before`.
    async fn reconnected_since(&self, before: u64) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.sandbox.request_count() > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn rep(accept_after: Option<Duration>) -> RepBehaviour {
    RepBehaviour {
        accept_after,
        rep_name: "Riley".into(),
        ..RepBehaviour::default()
    }
}

fn fast(retention: Duration) -> WatchConfig {
    WatchConfig {
        retention,
        reconnect: ReconnectPolicy {
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_attempts: 10,
        },
        ..WatchConfig::default()
    }
}

#[tokio::test]
async fn routing_and_the_rep_are_recorded_and_ending_the_chat_closes_it() -> TestResult {
    let rig = Rig::new(rep(Some(Duration::from_millis(20)))).await;
    let requests = rig.watchers(fast(Duration::from_secs(3600)));
    let (h, conversation) = rig.delivered_handoff().await;
    requests.delivered(h.id);

    let h = rig
        .handoff_when(h.id, |h| h.routed_at.is_some() && h.rep_name.is_some())
        .await;
    assert!(h.routed_at.is_some(), "routed_at: {h:?}");
    assert_eq!(h.estimated_wait_seconds, Some(30));
    assert_eq!(h.rep_name.as_deref(), Some("Riley"));
    assert!(h.rep_joined_at.is_some());
    assert_eq!(h.closed_at, None, "the rep is still in the chat");
    assert_eq!(
        rig.sandbox.conversation(conversation).map(|c| c.status),
        Some("open".to_string())
    );

    rig.sandbox.rep_end_chat(conversation);
    let h = rig.handoff_when(h.id, |h| h.closed_at.is_some()).await;
    assert!(h.closed_at.is_some(), "closed_at: {h:?}");
    assert_eq!(h.status, HandoffStatus::Delivered);
    let c = rig
        .conversation_when(conversation, |c| c.status == "closed")
        .await;
    assert_eq!(c.status, "closed", "we DELETEd the conversation");
    assert_eq!(
        c.sessions, 1,
        "nothing was posted after the rep ended the chat"
    );
    Ok(())
}

#[tokio::test]
async fn a_conversation_nobody_ends_is_closed_after_the_retention() -> TestResult {
    let rig = Rig::new(rep(None)).await;
    let (h, conversation) = rig.delivered_handoff().await;
    // Started after delivery: the watch is resumed from the store, no request needed.
    let _requests = rig.watchers(fast(Duration::from_millis(200)));

    let h = rig.handoff_when(h.id, |h| h.closed_at.is_some()).await;
    assert!(h.closed_at.is_some(), "closed_at: {h:?}");
    assert_eq!(h.rep_name, None, "no rep ever joined");
    let c = rig
        .conversation_when(conversation, |c| c.status == "closed")
        .await;
    assert_eq!(c.status, "closed");
    assert_eq!(c.rep_joined, None);
    Ok(())
}

#[tokio::test]
async fn a_dropped_event_stream_is_resumed_and_the_rep_still_recorded() -> TestResult {
    let rig = Rig::new(rep(None)).await;
    let requests = rig.watchers(fast(Duration::from_secs(3600)));
    let (h, conversation) = rig.delivered_handoff().await;
    requests.delivered(h.id);
    let h = rig.handoff_when(h.id, |h| h.routed_at.is_some()).await;
    assert_eq!(h.estimated_wait_seconds, Some(30), "{h:?}");

    let before = rig.sandbox.request_count();
    rig.sandbox.drop_event_streams();
    assert!(
        rig.reconnected_since(before).await,
        "the watcher opened the stream again"
    );
    rig.sandbox.rep_accept(conversation);

    let h = rig.handoff_when(h.id, |h| h.rep_name.is_some()).await;
    assert_eq!(h.rep_name.as_deref(), Some("Riley"));
    assert_eq!(h.closed_at, None);
    rig.sandbox.rep_end_chat(conversation);
    let c = rig
        .conversation_when(conversation, |c| c.status == "closed")
        .await;
    assert_eq!(c.status, "closed");
    Ok(())
}

#[tokio::test]
async fn the_access_token_is_renewed_on_401_and_before_it_expires() -> TestResult {
    let rig = Rig::new(rep(None)).await;
    let requests = rig.watchers(fast(Duration::from_secs(3600)));
    let (h, conversation) = rig.delivered_handoff().await;
    let delivered_token = rig.store.handoff_token(h.id).await?;
    requests.delivered(h.id);
    rig.handoff_when(h.id, |h| h.routed_at.is_some()).await;

    // From now on tokens live 2 s; the next connection is refused once.
    rig.sandbox.set_access_token_ttl(Duration::from_secs(2));
    rig.sandbox.faults().push_scoped(
        Fault::Status {
            status: 401,
            retry_after_secs: None,
            times: 1,
        },
        FaultScope::Events,
    );
    rig.sandbox.drop_event_streams();

    // The 401 renews the token once; its short life renews it again.
    let mut seen = vec![delivered_token.clone()];
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        let now = rig.store.handoff_token(h.id).await?;
        if !seen.contains(&now) {
            seen.push(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 3, "two renewed tokens were saved");

    rig.sandbox.rep_accept(conversation);
    let h = rig.handoff_when(h.id, |h| h.rep_name.is_some()).await;
    assert_eq!(h.rep_name.as_deref(), Some("Riley"));
    rig.sandbox.rep_end_chat(conversation);
    let c = rig
        .conversation_when(conversation, |c| c.status == "closed")
        .await;
    assert_eq!(
        c.status, "closed",
        "the renewed token belongs to the conversation's end user"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_watching_and_leaves_the_conversation_open() -> TestResult {
    let rig = Rig::new(rep(None)).await;
    let (h, conversation) = rig.delivered_handoff().await;
    let target = rig.settings.target().await.map_err(|e| e.0)?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(watch(
        rig.store.clone(),
        target,
        h.clone(),
        Arc::new(SystemClock),
        fast(Duration::from_secs(3600)),
        stopped,
    ));
    rig.handoff_when(h.id, |h| h.routed_at.is_some()).await;
    stop.send(true)?;
    let end = tokio::time::timeout(WAIT, task).await???;
    assert_eq!(end, WatchEnd::Shutdown);
    assert_eq!(rig.store.handoff(h.id).await?.closed_at, None);
    assert_eq!(
        rig.sandbox.conversation(conversation).map(|c| c.status),
        Some("open".to_string()),
        "the rep may still be in it; the next process resumes the watch"
    );
    Ok(())
}
