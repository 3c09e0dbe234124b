//! After delivery: follow the conversation on Salesforce's event stream,
//! record what happens to it, and close it.
//!
//! A delivered handoff is an open MIAW conversation that holds one of the
//! org's concurrent Messaging sessions until someone closes it. This module
//! records on the handoff when Salesforce routed the conversation (and its
//! wait estimate) and which rep joined, and DELETEs the conversation when
//! the rep ends the chat or, at the latest, `retention` after delivery.
//!
//! Layout:
//! - [`ConversationWatch`]: sans-IO. Events of the stream and timer ticks
//!   go in with an explicit `now`; what to record and when to close come
//!   out ([`Output`]). It owns no socket and reads no clock.
//! - [`ReconnectPolicy`]: sans-IO back-off for the event stream
//!   (1 s × 1.5 up to 30 s, ten tries — Salesforce's own sample).
//! - [`watch`]: the driver for one handoff. It opens the stream with the
//!   access token the delivery worker saved (the conversation belongs to that
//!   token's subject), feeds the machine, writes to the store, DELETEs, and
//!   renews the token with its continuation token before it expires.
//! - [`Watchers`]: spawns one [`watch`] per delivered handoff it is told
//!   about ([`WatchRequests::delivered`]) and, at start, resumes the
//!   handoffs a previous process left open; at most `max_watches` at once.
//!
//! Run loop of a watch: drain the machine → connect (`Last-Event-Id` = the
//! last event seen, at first the id issued with the token, which predates
//! the conversation, so the RoutingResult that came before we connected is
//! replayed) → feed each event, drain → on a cut, back off and reconnect →
//! stop on `Output::Done` or shutdown. Shutdown leaves the conversation
//! open (the rep may still be in it); the next process resumes it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use switchboard_model::{Clock, Handoff, HandoffId, HandoffStatus, Redacted, Timestamp};
use switchboard_salesforce::{AccessToken, MiawError, SseEvent, SseEventKind};
use switchboard_store::{HandoffFilter, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::worker::{NotConfigured, Target, TargetSource};

/// How long watches last, how they reconnect, how many run at once.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// A conversation still open this long after delivery is closed by us.
    pub retention: Duration,
    /// After the last rep leaves, how long to wait for a new one (a
    /// transfer) before treating the chat as ended. `CloseConversation`
    /// ends it at once.
    pub leave_grace: Duration,
    pub reconnect: ReconnectPolicy,
    /// Renew the access token (continuation token) this long before it
    /// expires, so the DELETE at the end still has a valid token.
    pub renew_before_expiry: Duration,
    /// The most watches at once; more delivered handoffs are not watched
    /// (logged).
    pub max_watches: usize,
    /// At start, resume the watches of delivered handoffs that are not
    /// closed (delivered within the retention plus an hour; older ones are
    /// past saving: their tokens have long expired).
    pub resume_on_start: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            leave_grace: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            renew_before_expiry: Duration::from_secs(300),
            max_watches: 1000,
            resume_on_start: true,
        }
    }
}

/// Back-off between connection attempts of the event stream. Attempts are
/// counted from the last connection that worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Failed attempts in a row before giving up on the stream (the watch
    /// then only waits for the retention to close the conversation).
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_attempts: 10,
        }
    }
}

impl ReconnectPolicy {
    /// The wait before the next attempt after `failures` failures in a row
    /// (1-based): `first_delay × 1.5^(failures-1)`, at most `max_delay`;
    /// `None` once `max_attempts` is used up.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures == 0 {
            return Some(Duration::ZERO);
        }
        if failures > self.max_attempts {
            return None;
        }
        let exponent = i32::try_from(failures - 1).unwrap_or(i32::MAX);
        let secs = self.first_delay.as_secs_f64() * 1.5f64.powi(exponent);
        Some(
            Duration::try_from_secs_f64(secs)
                .unwrap_or(self.max_delay)
                .min(self.max_delay),
        )
    }
}

/// What goes into a [`ConversationWatch`].
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An event from the stream (any conversation: others are ignored).
    Event(Timestamp, &'a SseEvent),
    /// Time passed; feed it when the last [`Output::Timeout`] is due.
    Timeout(Timestamp),
    /// The DELETE asked for by [`Output::Close`] worked (or the
    /// conversation was already gone).
    Closed(Timestamp),
    /// The DELETE failed for good.
    CloseFailed(Timestamp),
}

/// What a [`ConversationWatch`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Salesforce routed the conversation (first successful RoutingResult).
    RecordRouted {
        at: Timestamp,
        estimated_wait_seconds: Option<i64>,
    },
    /// A RoutingResult reported a failure. No column holds it: log it.
    RoutingFailed {
        failure_type: String,
        reason: Option<String>,
    },
    /// The first rep joined.
    RecordRep { name: String, at: Timestamp },
    /// The conversation ended at `at` (emitted after the close).
    RecordClosed { at: Timestamp },
    /// DELETE the conversation, then feed [`Input::Closed`] or
    /// [`Input::CloseFailed`].
    Close(CloseReason),
    /// Nothing more to do; the watch is over.
    Done,
    /// Nothing to do until this time (feed [`Input::Timeout`] then, or an event before).
    Timeout(Timestamp),
}

/// Why the watch closes the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The rep ended the chat (or Salesforce closed the conversation).
    Ended,
    /// Still open at the end of the retention.
    Retention,
}

/// The state of one delivered conversation, sans-IO.
///
/// Contract: after every input, call [`Self::poll_output`] until it returns
/// [`Output::Timeout`] or [`Output::Done`]. Rules:
/// - a RoutingResult whose `failureType` is `None` (or empty) → routed,
///   recorded once with its wait estimate; a failure → [`Output::RoutingFailed`];
/// - ParticipantChanged `add` of an `Agent` → the first rep's display name
///   (an Agent message names the rep too, if the join was missed);
/// - the last Agent's `remove` → ended after `leave_grace` unless an Agent
///   is added again (a transfer); `CloseConversation` → ended now;
/// - `retention` after delivery → closed by us;
/// - ending asks for [`Output::Close`]; events after that (the echo of
///   our own DELETE) are ignored.
#[derive(Debug)]
pub struct ConversationWatch {
    conversation: Uuid,
    retention_deadline: Timestamp,
    leave_grace_ms: i64,
    routed: bool,
    rep_recorded: bool,
    reps_present: u32,
    /// When the last rep left, while waiting out the grace.
    left_at: Option<Timestamp>,
    phase: Phase,
    outputs: VecDeque<Output>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Watching,
    /// A close was asked for; `ended_at` is set when the rep ended it.
    Closing {
        reason: CloseReason,
        ended_at: Option<Timestamp>,
    },
    Finished,
}

impl ConversationWatch {
    pub fn new(conversation: Uuid, delivered_at: Timestamp, config: &WatchConfig) -> Self {
        Self {
            conversation,
            retention_deadline: delivered_at.plus_millis(ms(config.retention)),
            leave_grace_ms: ms(config.leave_grace),
            routed: false,
            rep_recorded: false,
            reps_present: 0,
            left_at: None,
            phase: Phase::Watching,
            outputs: VecDeque::new(),
        }
    }

    pub fn conversation(&self) -> Uuid {
        self.conversation
    }

    /// Why the conversation was closed, once a close was asked for.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Closing { reason, .. } => Some(reason),
            Phase::Watching | Phase::Finished => None,
        }
    }

    pub fn handle_input(&mut self, input: Input<'_>) {
        match input {
            Input::Event(now, event) => self.handle_event(now, event),
            Input::Timeout(now) => self.handle_timeout(now),
            Input::Closed(now) => self.handle_close_result(now, true),
            Input::CloseFailed(now) => self.handle_close_result(now, false),
        }
    }

    /// The next thing to do; [`Output::Timeout`] when there is nothing
    /// until then, [`Output::Done`] (repeatedly) once finished.
    pub fn poll_output(&mut self) -> Output {
        if let Some(out) = self.outputs.pop_front() {
            return out;
        }
        match self.timeout() {
            Some(at) => Output::Timeout(at),
            None => Output::Done,
        }
    }

    /// When the machine next needs [`Input::Timeout`]; `None` once finished.
    pub fn timeout(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::Finished => None,
            Phase::Watching => Some(match self.left_at {
                Some(left) => left
                    .plus_millis(self.leave_grace_ms)
                    .min(self.retention_deadline),
                None => self.retention_deadline,
            }),
            // The driver answers a close before it waits again.
            Phase::Closing { .. } => Some(self.retention_deadline),
        }
    }

    fn handle_event(&mut self, now: Timestamp, event: &SseEvent) {
        if self.phase != Phase::Watching || !event.is_for(self.conversation) {
            return;
        }
        match &event.kind {
            SseEventKind::RoutingResult {
                failure_type,
                failure_reason,
                estimated_wait_seconds,
                ..
            } => {
                if failure_type.is_empty() || failure_type.eq_ignore_ascii_case("None") {
                    if !self.routed {
                        self.routed = true;
                        self.outputs.push_back(Output::RecordRouted {
                            at: now,
                            estimated_wait_seconds: *estimated_wait_seconds,
                        });
                    }
                } else {
                    self.outputs.push_back(Output::RoutingFailed {
                        failure_type: failure_type.clone(),
                        reason: failure_reason.clone(),
                    });
                }
            }
            SseEventKind::ParticipantChanged {
                operation,
                role,
                display_name,
                ..
            } if is_agent(role) => {
                if operation.eq_ignore_ascii_case("add") {
                    self.reps_present += 1;
                    self.left_at = None;
                    self.rep_joined(now, display_name);
                } else if operation.eq_ignore_ascii_case("remove") {
                    self.reps_present = self.reps_present.saturating_sub(1);
                    if self.reps_present == 0 {
                        self.left_at = Some(now);
                        // A zero grace ends it now.
                        self.handle_timeout(now);
                    }
                }
            }
            SseEventKind::Message {
                role, display_name, ..
            } if is_agent(role) => {
                self.reps_present = self.reps_present.max(1);
                self.left_at = None;
                self.rep_joined(now, display_name);
            }
            SseEventKind::CloseConversation { .. } => {
                let ended_at = self.left_at.unwrap_or(now);
                self.close(CloseReason::Ended, Some(ended_at));
            }
            _ => {}
        }
    }

    fn rep_joined(&mut self, now: Timestamp, name: &str) {
        let name = name.trim();
        if self.rep_recorded || name.is_empty() {
            return;
        }
        self.rep_recorded = true;
        self.outputs.push_back(Output::RecordRep {
            name: name.to_string(),
            at: now,
        });
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.phase != Phase::Watching {
            return;
        }
        if let Some(left) = self.left_at {
            if left.plus_millis(self.leave_grace_ms) <= now {
                self.close(CloseReason::Ended, Some(left));
                return;
            }
        }
        if self.retention_deadline <= now {
            self.close(CloseReason::Retention, None);
        }
    }

    fn close(&mut self, reason: CloseReason, ended_at: Option<Timestamp>) {
        self.phase = Phase::Closing { reason, ended_at };
        self.outputs.push_back(Output::Close(reason));
    }

    fn handle_close_result(&mut self, now: Timestamp, closed: bool) {
        let Phase::Closing { ended_at, .. } = self.phase else {
            return;
        };
        // Ended by the rep: it is over whether or not our DELETE worked (the
        // session ended with the chat). Retention: only if we did close it.
        let at = ended_at.or(closed.then_some(now));
        if let Some(at) = at {
            self.outputs.push_back(Output::RecordClosed { at });
        }
        self.phase = Phase::Finished;
    }
}

fn is_agent(role: &str) -> bool {
    role.eq_ignore_ascii_case("Agent")
}

/// How a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEnd {
    /// The rep ended the chat; the conversation is closed.
    Ended,
    /// The retention passed; we closed the conversation.
    Retention,
    /// The conversation ended (or the retention passed) but our DELETE failed (logged).
    CloseFailed(CloseReason),
    /// Shutdown; the conversation is left open for the next process.
    Shutdown,
    /// Nothing to watch (no conversation id, or no saved access token).
    Skipped(&'static str),
}

/// Why a watch could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error("could not read the handoff: {0}")]
    Store(#[from] StoreError),
}

/// Follows one delivered handoff's conversation until it ends, retention
/// passes, or `shutdown` turns true, in a span keyed by handoff and session.
/// See the module docs for the loop.
pub async fn watch(
    store: Store,
    target: Arc<Target>,
    handoff: Handoff,
    clock: Arc<dyn Clock>,
    config: WatchConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<WatchEnd, WatchError> {
    let span = tracing::info_span!(
        "handoff_watch",
        handoff = %handoff.id,
        session = %handoff.session_id,
        conversation = handoff.conversation_id.as_deref().unwrap_or(""),
    );
    watch_in_span(store, target, handoff, clock, config, shutdown)
        .instrument(span)
        .await
}

async fn watch_in_span(
    store: Store,
    target: Arc<Target>,
    handoff: Handoff,
    clock: Arc<dyn Clock>,
    config: WatchConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<WatchEnd, WatchError> {
    let Some(conversation) = handoff
        .conversation_id
        .as_deref()
        .and_then(|c| c.parse::<Uuid>().ok())
    else {
        tracing::info!("handoff has no conversation to watch");
        return Ok(WatchEnd::Skipped("no conversation"));
    };
    let Some(saved) = store.handoff_token(handoff.id).await? else {
        tracing::warn!("no access token saved for the handoff; its conversation is not watched");
        return Ok(WatchEnd::Skipped("no access token"));
    };
    let Some(token) = parse_saved_token(&saved) else {
        tracing::warn!("the saved access token is unreadable; the conversation is not watched");
        return Ok(WatchEnd::Skipped("unreadable access token"));
    };
    let delivered_at = handoff.delivered_at.unwrap_or_else(|| clock.now());
    let machine = ConversationWatch::new(conversation, delivered_at, &config);
    let mut driver = Driver {
        resume_from: token.last_event_id.clone(),
        renew_at: None,
        token,
        store,
        target,
        clock,
        config,
        id: handoff.id,
        conversation,
        machine,
        close_failed: false,
        shutdown,
    };
    driver.schedule_renewal();
    Ok(driver.run().await)
}

/// The saved token JSON (`{"token","exp","last_event_id"}`, written by the
/// worker and by [`watch`] when it renews) as an [`AccessToken`].
fn parse_saved_token(text: &str) -> Option<AccessToken> {
    let v = serde_json::from_str::<serde_json::Value>(text).ok()?;
    let secret = v["token"].as_str()?;
    Some(AccessToken {
        access_token: Redacted::new(secret.to_string()),
        last_event_id: v["last_event_id"].as_str().unwrap_or("0").to_string(),
        deployment_type: None,
        hidden_prechat_fields: Vec::new(),
        expires_at_unix: v["exp"].as_i64(),
    })
}

type Events = Pin<Box<dyn Stream<Item = Result<SseEvent, MiawError>> + Send>>;

struct Driver {
    store: Store,
    target: Arc<Target>,
    clock: Arc<dyn Clock>,
    config: WatchConfig,
    id: HandoffId,
    conversation: Uuid,
    token: AccessToken,
    /// `Last-Event-Id` for the next connection: the last event seen, at
    /// first the one issued with the token (before the conversation existed).
    resume_from: String,
    /// When to renew the token; `None` when its expiry is unknown or
    /// renewing failed for good.
    renew_at: Option<Timestamp>,
    machine: ConversationWatch,
    close_failed: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Why the driver woke up while waiting.
enum Wake {
    Timer,
    Shutdown,
}

/// How an open stream stopped (when the watch goes on).
struct Disconnect {
    /// The stream delivered events or stayed up long enough to count as working.
    worked: bool,
    why: String,
}

impl Driver {
    async fn run(&mut self) -> WatchEnd {
        let mut failures = 0u32;
        let mut renewed = false;
        let mut streaming = true;
        loop {
            if let Some(end) = self.drain().await {
                return end;
            }
            if self.stopping() {
                return WatchEnd::Shutdown;
            }
            if !streaming {
                // No event stream: only the retention (and token renewal) remain.
                if let Some(end) = self.wait(None).await {
                    return end;
                }
                continue;
            }
            match self
                .target
                .client
                .events(&self.token, Some(&self.resume_from))
                .await
            {
                Ok(stream) => {
                    renewed = false;
                    match self.pump(Box::pin(stream)).await {
                        Ok(disconnect) => {
                            if disconnect.worked {
                                failures = 0;
                            }
                            failures += 1;
                            tracing::info!(reason = %disconnect.why, "event stream cut; reconnecting");
                        }
                        Err(end) => return end,
                    }
                }
                Err(e) if e.is_unauthorized() && !renewed => {
                    renewed = true;
                    if let Err(e) = self.renew().await {
                        tracing::warn!(error = %e, "the access token was refused and could not be renewed; waiting for the retention only");
                        streaming = false;
                    }
                    continue;
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    tracing::info!(error = %e, attempt = failures, "could not open the event stream");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the event stream was refused; waiting for the retention only");
                    streaming = false;
                    continue;
                }
            }
            match self.config.reconnect.delay(failures) {
                Some(delay) => {
                    let until = tokio::time::Instant::now() + delay;
                    if let Some(end) = self.wait(Some(until)).await {
                        return end;
                    }
                }
                None => {
                    tracing::warn!(
                        attempts = failures - 1,
                        "gave up on the event stream; waiting for the retention only"
                    );
                    streaming = false;
                }
            }
        }
    }

    /// Feeds the stream's events to the machine until the stream stops
    /// (`Ok`) or the watch is over (`Err`).
    async fn pump(&mut self, mut events: Events) -> Result<Disconnect, WatchEnd> {
        let opened = tokio::time::Instant::now();
        let mut seen = false;
        loop {
            let sleep = self.until_next_timer();
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                item = events.next() => match item {
                    Some(Ok(event)) => {
                        seen = true;
                        if let Some(id) = &event.id {
                            self.resume_from.clone_from(id);
                        }
                        let now = self.clock.now();
                        self.machine.handle_input(Input::Event(now, &event));
                        if let Some(end) = self.drain().await {
                            return Err(end);
                        }
                    }
                    Some(Err(e @ MiawError::Decode { .. })) => {
                        tracing::warn!(error = %e, "skipped an event that could not be read");
                    }
                    Some(Err(e)) => {
                        return Ok(Disconnect { worked: seen || opened.elapsed() >= self.config.reconnect.max_delay, why: e.to_string() });
                    }
                    None => {
                        return Ok(Disconnect { worked: seen || opened.elapsed() >= self.config.reconnect.max_delay, why: "salesforce closed the stream".into() });
                    }
                },
                _ = tokio::time::sleep(sleep) => {
                    self.on_timer().await;
                    if let Some(end) = self.drain().await {
                        return Err(end);
                    }
                }
                _ = shutdown.changed() => return Err(WatchEnd::Shutdown),
            }
            if self.stopping() {
                return Err(WatchEnd::Shutdown);
            }
        }
    }

    /// Waits until `until` (or forever), serving the machine's timers and
    /// the token renewal meanwhile. `Some` when the watch is over.
    async fn wait(&mut self, until: Option<tokio::time::Instant>) -> Option<WatchEnd> {
        loop {
            if self.stopping() {
                return Some(WatchEnd::Shutdown);
            }
            if until.is_some_and(|u| u <= tokio::time::Instant::now()) {
                return None;
            }
            let timer = self.until_next_timer();
            let mut shutdown = self.shutdown.clone();
            let wake = tokio::select! {
                _ = sleep_until_opt(until) => return None,
                _ = tokio::time::sleep(timer) => Wake::Timer,
                _ = shutdown.changed() => Wake::Shutdown,
            };
            match wake {
                Wake::Shutdown => return Some(WatchEnd::Shutdown),
                Wake::Timer => {
                    self.on_timer().await;
                    if let Some(end) = self.drain().await {
                        return Some(end);
                    }
                }
            }
        }
    }

    /// Time until the machine's next deadline or the token renewal.
    fn until_next_timer(&self) -> Duration {
        let now = self.clock.now();
        let at = match (self.machine.timeout(), self.renew_at) {
            (Some(m), Some(r)) => m.min(r),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => now,
        };
        Duration::from_millis(u64::try_from(at.as_millis() - now.as_millis()).unwrap_or(0))
    }

    async fn on_timer(&mut self) {
        let now = self.clock.now();
        if self.renew_at.is_some_and(|r| r <= now) {
            if let Err(e) = self.renew().await {
                if e.is_unauthorized() || e.is_permanent() {
                    tracing::warn!(error = %e, "could not renew the access token; closing may fail");
                    self.renew_at = None;
                } else {
                    tracing::info!(error = %e, "could not renew the access token; will retry");
                    self.renew_at = Some(now.plus_millis(ms(self.config.reconnect.max_delay)));
                }
            }
        }
        self.machine.handle_input(Input::Timeout(self.clock.now()));
    }

    /// Carries out the machine's outputs until it waits. `Some` when the watch is over.
    async fn drain(&mut self) -> Option<WatchEnd> {
        loop {
            match self.machine.poll_output() {
                Output::Timeout(_) => return None,
                Output::Done => {
                    let reason = self
                        .machine
                        .close_reason()
                        .unwrap_or(CloseReason::Retention);
                    return Some(match (self.close_failed, reason) {
                        (true, reason) => WatchEnd::CloseFailed(reason),
                        (false, CloseReason::Ended) => WatchEnd::Ended,
                        (false, CloseReason::Retention) => WatchEnd::Retention,
                    });
                }
                Output::RecordRouted {
                    at,
                    estimated_wait_seconds,
                } => {
                    tracing::info!(estimated_wait_seconds, "salesforce routed the conversation");
                    self.record(Some(at), estimated_wait_seconds, None, None)
                        .await;
                }
                Output::RoutingFailed {
                    failure_type,
                    reason,
                } => {
                    tracing::warn!(%failure_type, reason = reason.as_deref().unwrap_or(""), "salesforce could not route the conversation");
                }
                Output::RecordRep { name, at } => {
                    tracing::info!("a rep joined the conversation");
                    self.record(None, None, Some((&name, at)), None).await;
                }
                Output::RecordClosed { at } => {
                    self.record(None, None, None, Some(at)).await;
                }
                Output::Close(reason) => {
                    tracing::info!(?reason, "closing the conversation");
                    match self.close().await {
                        CloseResult::Closed => {
                            self.machine.handle_input(Input::Closed(self.clock.now()));
                        }
                        CloseResult::Failed(e) => {
                            tracing::warn!(error = %e, "could not close the conversation; it stays open at salesforce until it times out");
                            self.close_failed = true;
                            self.machine
                                .handle_input(Input::CloseFailed(self.clock.now()));
                        }
                        CloseResult::Shutdown => return Some(WatchEnd::Shutdown),
                    }
                }
            }
        }
    }

    async fn record(
        &self,
        routed_at: Option<Timestamp>,
        estimated_wait_seconds: Option<i64>,
        rep: Option<(&str, Timestamp)>,
        closed_at: Option<Timestamp>,
    ) {
        if let Err(e) = self
            .store
            .record_handoff_routing(self.id, routed_at, estimated_wait_seconds, rep, closed_at)
            .await
        {
            // Replayed on resume: every write keeps the first value.
            tracing::warn!(error = %e, "could not record the conversation's progress");
        }
    }

    /// DELETEs the conversation: retries what may pass later, renews the
    /// token once on 401. A 404 (already gone) counts as closed.
    async fn close(&mut self) -> CloseResult {
        let mut failures = 0u32;
        let mut renewed = false;
        loop {
            let e = match self
                .target
                .client
                .close_conversation(&self.token, self.conversation)
                .await
            {
                Ok(()) => return CloseResult::Closed,
                Err(e) => e,
            };
            if e.is_unauthorized() && !renewed {
                renewed = true;
                if let Err(renew_error) = self.renew().await {
                    tracing::warn!(error = %renew_error, "could not renew the access token");
                    return CloseResult::Failed(e);
                }
                continue;
            }
            if !e.is_retryable() {
                return CloseResult::Failed(e);
            }
            failures += 1;
            let Some(delay) = self.config.reconnect.delay(failures) else {
                return CloseResult::Failed(e);
            };
            let delay = delay.max(e.retry_after().unwrap_or_default());
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return CloseResult::Shutdown,
            }
            if self.stopping() {
                return CloseResult::Shutdown;
            }
        }
    }

    /// Replaces the token with its continuation token (same end user, so
    /// the same conversations) and saves it, with where to resume the stream.
    async fn renew(&mut self) -> Result<(), MiawError> {
        let token = self.target.client.continuation_token(&self.token).await?;
        self.token = token;
        self.schedule_renewal();
        let saved = serde_json::json!({
            "token": self.token.access_token.expose(),
            "exp": self.token.expires_at_unix,
            "last_event_id": self.resume_from,
        });
        if let Err(e) = self
            .store
            .save_handoff_token(self.id, &saved.to_string())
            .await
        {
            tracing::warn!(error = %e, "could not save the renewed access token");
        }
        tracing::debug!("access token renewed");
        Ok(())
    }

    /// Renew `renew_before_expiry` before the token expires, or at half its
    /// remaining life if that is later (a token issued for less than the
    /// margin must not renew in a loop).
    fn schedule_renewal(&mut self) {
        let now = self.clock.now();
        self.renew_at = self
            .token
            .expires_at_unix
            .map(|exp| renewal_time(now, exp, self.config.renew_before_expiry));
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// When to renew a token expiring at `exp_unix`: `margin` before, or half
/// way through its remaining life if that is later.
fn renewal_time(now: Timestamp, exp_unix: i64, margin: Duration) -> Timestamp {
    let exp = Timestamp::from_millis(exp_unix.saturating_mul(1000));
    let remaining = (exp.as_millis() - now.as_millis()).max(0);
    exp.plus_millis(-ms(margin).min(remaining / 2))
}

enum CloseResult {
    Closed,
    Failed(MiawError),
    Shutdown,
}

async fn sleep_until_opt(until: Option<tokio::time::Instant>) {
    match until {
        Some(u) => tokio::time::sleep_until(u).await,
        None => std::future::pending().await,
    }
}

/// Starts a [`watch`] for each delivered handoff it hears of, at most
/// `max_watches` at once, one per handoff.
///
/// Wiring: hand [`Self::requests`] to whoever marks handoffs delivered (the
/// worker) and spawn [`Self::run`]. At start it also resumes the handoffs
/// a previous process delivered and did not close, so a restart does not
/// leak sessions.
pub struct Watchers<S> {
    store: Store,
    source: S,
    clock: Arc<dyn Clock>,
    config: WatchConfig,
    tx: mpsc::UnboundedSender<HandoffId>,
    rx: mpsc::UnboundedReceiver<HandoffId>,
}

/// Tells [`Watchers`] that a handoff was delivered. Cheap to clone; never
/// blocks (the channel is unbounded: one id per delivery, drained at once).
/// The default is connected to nothing (no watchers: deliveries are not
/// followed), so a worker can hold one whether or not watchers run.
#[derive(Debug, Clone, Default)]
pub struct WatchRequests(Option<mpsc::UnboundedSender<HandoffId>>);

impl WatchRequests {
    /// Watch `id`'s conversation. Ignored if it is already watched, not
    /// delivered, or closed.
    pub fn delivered(&self, id: HandoffId) {
        let Some(tx) = &self.0 else { return };
        if tx.send(id).is_err() {
            tracing::debug!(handoff = %id, "watchers stopped; the handoff is not watched");
        }
    }
}

impl<S: TargetSource> Watchers<S> {
    pub fn new(store: Store, source: S, clock: Arc<dyn Clock>, config: WatchConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            store,
            source,
            clock,
            config,
            tx,
            rx,
        }
    }

    pub fn requests(&self) -> WatchRequests {
        WatchRequests(Some(self.tx.clone()))
    }

    /// Runs watches until `shutdown` turns true, then waits for them to stop
    /// (each leaves its conversation open for the next process).
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, HandoffId> = HashMap::new();
        let mut active: HashSet<HandoffId> = HashSet::new();
        if self.config.resume_on_start {
            for h in self.resumable().await {
                self.start(h, &mut tasks, &mut running, &mut active, &shutdown)
                    .await;
            }
        }
        while !*shutdown.borrow() {
            tokio::select! {
                Some(id) = self.rx.recv() => {
                    if active.contains(&id) {
                        continue;
                    }
                    match self.store.handoff(id).await {
                        Ok(h) => self.start(h, &mut tasks, &mut running, &mut active, &shutdown).await,
                        Err(e) => tracing::warn!(handoff = %id, error = %e, "could not read a delivered handoff; not watching it"),
                    }
                }
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    finished(done, &mut running, &mut active);
                }
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
        while let Some(done) = tasks.join_next_with_id().await {
            finished(done, &mut running, &mut active);
        }
    }

    /// Delivered, unclosed handoffs of the last retention plus an hour
    /// (among the newest 500 delivered).
    async fn resumable(&self) -> Vec<Handoff> {
        let filter = HandoffFilter {
            status: Some(HandoffStatus::Delivered),
            limit: 500,
        };
        let window = ms(self.config.retention).saturating_add(ms(RESUME_SLACK));
        let since = self.clock.now().plus_millis(-window);
        match self.store.list_handoffs(&filter).await {
            Ok(list) => list
                .into_iter()
                .filter(|h| h.closed_at.is_none() && h.delivered_at.is_some_and(|d| d >= since))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list delivered handoffs to resume watching");
                Vec::new()
            }
        }
    }

    async fn start(
        &self,
        handoff: Handoff,
        tasks: &mut JoinSet<Result<WatchEnd, WatchError>>,
        running: &mut HashMap<tokio::task::Id, HandoffId>,
        active: &mut HashSet<HandoffId>,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) {
        let id = handoff.id;
        if active.contains(&id)
            || handoff.status != HandoffStatus::Delivered
            || handoff.closed_at.is_some()
            || handoff.conversation_id.is_none()
        {
            return;
        }
        if active.len() >= self.config.max_watches {
            tracing::warn!(handoff = %id, max_watches = self.config.max_watches, "too many conversations watched; this one is not (it stays open until Salesforce times it out)");
            return;
        }
        let target = match self.source.target().await {
            Ok(t) => t,
            Err(NotConfigured(why)) => {
                tracing::warn!(handoff = %id, reason = %why, "salesforce is not configured; the conversation is not watched");
                return;
            }
        };
        let task = watch(
            self.store.clone(),
            target,
            handoff,
            self.clock.clone(),
            self.config.clone(),
            shutdown.clone(),
        );
        let abort = tasks.spawn(task);
        running.insert(abort.id(), id);
        active.insert(id);
    }
}

fn finished(
    done: Result<(tokio::task::Id, Result<WatchEnd, WatchError>), tokio::task::JoinError>,
    running: &mut HashMap<tokio::task::Id, HandoffId>,
    active: &mut HashSet<HandoffId>,
) {
    let (task, result) = match done {
        Ok((task, result)) => (task, Ok(result)),
        Err(e) => (e.id(), Err(e)),
    };
    let Some(id) = running.remove(&task) else {
        return;
    };
    active.remove(&id);
    match result {
        Ok(Ok(end)) => tracing::info!(handoff = %id, ?end, "stopped watching the conversation"),
        Ok(Err(e)) => tracing::warn!(handoff = %id, error = %e, "could not watch the conversation"),
        Err(e) => tracing::error!(handoff = %id, error = %e, "the conversation watch failed"),
    }
}

/// How much older than the retention a handoff may be and still be resumed.
const RESUME_SLACK: Duration = Duration::from_secs(3600);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: &str = "6f1d1c2e-1111-4a5b-9c8d-000000000001";
    const OTHER: &str = "6f1d1c2e-2222-4a5b-9c8d-000000000002";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
    }

    fn config() -> WatchConfig {
        WatchConfig {
            retention: Duration::from_secs(3600),
            leave_grace: Duration::from_secs(10),
            ..WatchConfig::default()
        }
    }

    fn machine() -> ConversationWatch {
        ConversationWatch::new(CONV.parse().expect("uuid"), at(0), &config())
    }

    fn event(kind: SseEventKind) -> SseEvent {
        SseEvent {
            id: Some("1".into()),
            kind,
        }
    }

    fn routed(conv: &str, failure: &str, ewt: Option<i64>) -> SseEvent {
        event(SseEventKind::RoutingResult {
            conversation_id: conv.into(),
            routing_type: "Initial".into(),
            failure_type: failure.into(),
            failure_reason: (failure != "None").then(|| "no queue".to_string()),
            estimated_wait_seconds: ewt,
        })
    }

    fn participant(op: &str, role: &str, name: &str) -> SseEvent {
        event(SseEventKind::ParticipantChanged {
            conversation_id: CONV.into(),
            operation: op.into(),
            role: role.into(),
            display_name: name.into(),
        })
    }

    fn message(role: &str, name: &str) -> SseEvent {
        event(SseEventKind::Message {
            conversation_id: CONV.into(),
            role: role.into(),
            display_name: name.into(),
            text: Redacted::new("hello".into()),
            entry_id: "e1".into(),
        })
    }

    fn closed_event() -> SseEvent {
        event(SseEventKind::CloseConversation {
            conversation_id: CONV.to_uppercase(),
        })
    }

    /// Feeds `input` and returns every output up to the next wait.
    fn feed(m: &mut ConversationWatch, input: Input<'_>) -> Vec<Output> {
        m.handle_input(input);
        drain(m)
    }

    fn drain(m: &mut ConversationWatch) -> Vec<Output> {
        let mut out = Vec::new();
        loop {
            let o = m.poll_output();
            let stop = matches!(o, Output::Timeout(_) | Output::Done);
            out.push(o);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn routing_is_recorded_once_with_its_wait_estimate() {
        let mut m = machine();
        let out = feed(&mut m, Input::Event(at(1), &routed(CONV, "None", Some(30))));
        assert_eq!(
            out,
            vec![
                Output::RecordRouted {
                    at: at(1),
                    estimated_wait_seconds: Some(30)
                },
                Output::Timeout(at(3600)),
            ]
        );
        let transfer = feed(&mut m, Input::Event(at(9), &routed(CONV, "", Some(5))));
        assert_eq!(transfer, vec![Output::Timeout(at(3600))]);
    }

    #[test]
    fn a_routing_failure_is_reported_not_recorded_and_a_later_success_is() {
        let mut m = machine();
        let out = feed(
            &mut m,
            Input::Event(at(1), &routed(CONV, "RoutingError", None)),
        );
        assert_eq!(
            out[0],
            Output::RoutingFailed {
                failure_type: "RoutingError".into(),
                reason: Some("no queue".into())
            }
        );
        let out = feed(&mut m, Input::Event(at(5), &routed(CONV, "None", None)));
        assert_eq!(
            out[0],
            Output::RecordRouted {
                at: at(5),
                estimated_wait_seconds: None
            }
        );
    }

    #[test]
    fn other_conversations_and_end_user_echoes_are_ignored() {
        let mut m = machine();
        assert_eq!(
            feed(&mut m, Input::Event(at(1), &routed(OTHER, "None", Some(3)))),
            vec![Output::Timeout(at(3600))]
        );
        assert_eq!(
            feed(&mut m, Input::Event(at(1), &message("EndUser", "Guest"))),
            vec![Output::Timeout(at(3600))]
        );
        let other_close = event(SseEventKind::CloseConversation {
            conversation_id: OTHER.into(),
        });
        assert_eq!(
            feed(&mut m, Input::Event(at(2), &other_close)),
            vec![Output::Timeout(at(3600))]
        );
    }

    #[test]
    fn the_first_rep_to_join_is_recorded() {
        let mut m = machine();
        let out = feed(
            &mut m,
            Input::Event(at(2), &participant("add", "Agent", "Riley")),
        );
        assert_eq!(
            out[0],
            Output::RecordRep {
                name: "Riley".into(),
                at: at(2)
            }
        );
        assert_eq!(
            feed(&mut m, Input::Event(at(3), &message("Agent", "Riley"))),
            vec![Output::Timeout(at(3600))]
        );
        assert_eq!(
            feed(
                &mut m,
                Input::Event(at(4), &participant("add", "Chatbot", "Bot"))
            ),
            vec![Output::Timeout(at(3600))]
        );
    }

    #[test]
    fn an_agent_message_names_the_rep_when_the_join_was_missed() {
        let mut m = machine();
        let out = feed(&mut m, Input::Event(at(2), &message("Agent", "Sam")));
        assert_eq!(
            out[0],
            Output::RecordRep {
                name: "Sam".into(),
                at: at(2)
            }
        );
    }

    #[test]
    fn the_rep_ending_the_chat_closes_and_records_when_it_ended() {
        let mut m = machine();
        feed(
            &mut m,
            Input::Event(at(2), &participant("add", "Agent", "Riley")),
        );
        let out = feed(
            &mut m,
            Input::Event(at(60), &participant("remove", "Agent", "Riley")),
        );
        assert_eq!(out, vec![Output::Timeout(at(70))], "grace for a transfer");
        let out = feed(&mut m, Input::Event(at(61), &closed_event()));
        assert_eq!(
            out,
            vec![Output::Close(CloseReason::Ended), Output::Timeout(at(3600))]
        );
        // Our own DELETE comes back as events: ignored.
        assert_eq!(
            feed(&mut m, Input::Event(at(62), &closed_event())),
            vec![Output::Timeout(at(3600))]
        );
        let out = feed(&mut m, Input::Closed(at(63)));
        assert_eq!(out, vec![Output::RecordClosed { at: at(60) }, Output::Done]);
        assert_eq!(m.poll_output(), Output::Done);
    }

    #[test]
    fn a_rep_leaving_without_a_close_ends_after_the_grace() {
        let mut m = machine();
        feed(
            &mut m,
            Input::Event(at(2), &participant("add", "Agent", "Riley")),
        );
        feed(
            &mut m,
            Input::Event(at(60), &participant("remove", "Agent", "Riley")),
        );
        assert_eq!(
            feed(&mut m, Input::Timeout(at(69))),
            vec![Output::Timeout(at(70))]
        );
        assert_eq!(
            feed(&mut m, Input::Timeout(at(70))),
            vec![Output::Close(CloseReason::Ended), Output::Timeout(at(3600))]
        );
        assert_eq!(
            feed(&mut m, Input::CloseFailed(at(71))),
            vec![Output::RecordClosed { at: at(60) }, Output::Done],
            "the chat ended even if our DELETE failed"
        );
    }

    #[test]
    fn a_transfer_to_another_rep_does_not_close() {
        let mut m = machine();
        feed(
            &mut m,
            Input::Event(at(2), &participant("add", "Agent", "Riley")),
        );
        feed(
            &mut m,
            Input::Event(at(60), &participant("remove", "Agent", "Riley")),
        );
        let out = feed(
            &mut m,
            Input::Event(at(65), &participant("add", "Agent", "Sam")),
        );
        assert_eq!(out, vec![Output::Timeout(at(3600))], "first rep kept");
        assert_eq!(
            feed(&mut m, Input::Timeout(at(80))),
            vec![Output::Timeout(at(3600))]
        );
        // Added before the first one left: no grace needed.
        let mut m = machine();
        feed(
            &mut m,
            Input::Event(at(2), &participant("add", "Agent", "A")),
        );
        feed(
            &mut m,
            Input::Event(at(3), &participant("add", "Agent", "B")),
        );
        assert_eq!(
            feed(
                &mut m,
                Input::Event(at(4), &participant("remove", "Agent", "A"))
            ),
            vec![Output::Timeout(at(3600))]
        );
    }

    #[test]
    fn zero_grace_ends_on_the_remove() {
        let mut m = ConversationWatch::new(
            CONV.parse().expect("uuid"),
            at(0),
            &WatchConfig {
                leave_grace: Duration::ZERO,
                ..config()
            },
        );
        feed(
            &mut m,
            Input::Event(at(2), &participant("add", "Agent", "R")),
        );
        assert_eq!(
            feed(
                &mut m,
                Input::Event(at(5), &participant("remove", "Agent", "R"))
            )[0],
            Output::Close(CloseReason::Ended)
        );
    }

    #[test]
    fn a_close_without_a_rep_still_closes() {
        let mut m = machine();
        let out = feed(&mut m, Input::Event(at(30), &closed_event()));
        assert_eq!(out[0], Output::Close(CloseReason::Ended));
        assert_eq!(
            feed(&mut m, Input::Closed(at(31))),
            vec![Output::RecordClosed { at: at(30) }, Output::Done]
        );
    }

    #[test]
    fn retention_closes_an_unended_conversation() {
        let mut m = machine();
        assert_eq!(
            feed(&mut m, Input::Timeout(at(3599))),
            vec![Output::Timeout(at(3600))]
        );
        assert_eq!(
            feed(&mut m, Input::Timeout(at(3600))),
            vec![
                Output::Close(CloseReason::Retention),
                Output::Timeout(at(3600))
            ]
        );
        assert_eq!(m.close_reason(), Some(CloseReason::Retention));
        assert_eq!(
            feed(&mut m, Input::Closed(at(3601))),
            vec![Output::RecordClosed { at: at(3601) }, Output::Done]
        );
    }

    #[test]
    fn a_failed_retention_close_records_nothing() {
        let mut m = machine();
        feed(&mut m, Input::Timeout(at(4000)));
        assert_eq!(
            feed(&mut m, Input::CloseFailed(at(4001))),
            vec![Output::Done]
        );
    }

    #[test]
    fn a_handoff_delivered_long_ago_is_due_at_once() {
        let mut m = ConversationWatch::new(CONV.parse().expect("uuid"), at(-7200), &config());
        assert_eq!(m.poll_output(), Output::Timeout(at(-3600)));
        assert_eq!(
            feed(&mut m, Input::Timeout(at(0)))[0],
            Output::Close(CloseReason::Retention)
        );
    }

    #[test]
    fn the_grace_never_outlasts_the_retention() {
        let mut m = machine();
        feed(
            &mut m,
            Input::Event(at(3595), &participant("add", "Agent", "R")),
        );
        assert_eq!(
            feed(
                &mut m,
                Input::Event(at(3596), &participant("remove", "Agent", "R"))
            ),
            vec![Output::Timeout(at(3600))]
        );
    }

    #[test]
    fn reconnect_backs_off_by_half_up_to_the_cap_then_gives_up() {
        let p = ReconnectPolicy::default();
        let secs = |n| p.delay(n).map(|d| d.as_secs_f64());
        assert_eq!(secs(1), Some(1.0));
        assert_eq!(secs(2), Some(1.5));
        assert_eq!(secs(3), Some(2.25));
        assert_eq!(secs(10), Some(30.0), "capped");
        assert_eq!(secs(11), None, "ten attempts");
    }

    #[test]
    fn tokens_renew_before_expiry_but_never_in_a_loop() {
        let five_min = Duration::from_secs(300);
        let exp = |secs: i64| (at(secs).as_millis()) / 1000;
        assert_eq!(renewal_time(at(0), exp(3600), five_min), at(3300));
        assert_eq!(
            renewal_time(at(0), exp(2), five_min),
            at(1),
            "a 2 s token renews after 1 s"
        );
        assert_eq!(
            renewal_time(at(10), exp(5), five_min),
            at(5),
            "expired: now"
        );
    }

    #[test]
    fn the_saved_token_is_read_like_the_worker_writes_it() {
        let t = parse_saved_token(r#"{"token":"abc","exp":1800000000,"last_event_id":"41"}"#)
            .expect("token");
        assert_eq!(t.access_token.expose(), "abc");
        assert_eq!(t.last_event_id, "41");
        assert_eq!(t.expires_at_unix, Some(1_800_000_000));
        assert!(parse_saved_token("not json").is_none());
        assert!(parse_saved_token(r#"{"exp":1}"#).is_none());
    }
}
