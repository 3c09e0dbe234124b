//! The sandbox: a local emulation of the MIAW API with a rep console.
//!
//! It is what users see when no org is configured, and what tests run
//! against. It serves the real paths (`/iamessage/api/v2/...`,
//! `/eventrouter/v1/sse`) with the validation Salesforce does (reference §9c)
//! and can inject faults (latency, statuses, timeouts, resets, lost
//! responses, a down server).
//!
//! Layout: this module holds the state and the rep simulation; `api`
//! the REST handlers, `auth` access tokens and customer-identity
//! verification, `events` the SSE endpoint, `faults` fault injection,
//! `console` the HTML rep console and the `/sandbox/api` control routes.
//!
//! State lives behind one `std::sync::Mutex` that is never held across an
//! `await`. Every SSE event is appended to one log (monotonic ids) and a
//! `watch` channel wakes the open streams, which replay from the log — so
//! replay from `Last-Event-Id` and live delivery are the same code path.
//! The rep's timers are spawned tokio tasks (the sandbox is a driver).
//!
//! Choices where Salesforce's behaviour is undocumented (each is also in
//! the crate docs):
//! - error bodies are JSON `{"message": ..., "code": ...}`;
//! - create conversation answers `201 {}`; repeating it from the same end
//!   user answers `200 {}` and changes nothing; another end user gets `409`;
//! - a message answers `201 {"conversationEntries":[{id, clientTimestamp}]}`;
//!   repeating a message id answers `200` with the first copy's entry and
//!   stores nothing;
//! - a closed (DELETEd) conversation is gone: `404` for messages, status and
//!   DELETE; its entries stay readable;
//! - routing-attribute keys that are not hidden pre-chat fields are dropped
//!   silently, as Salesforce does (the console lists them as ignored).

mod api;
mod auth;
mod console;
mod events;
mod faults;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

pub use faults::{Fault, FaultScope, Faults, ScopedFault};

/// The most events kept for `Last-Event-Id` replay.
const EVENT_LOG_CAPACITY: usize = 10_000;
const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The fake id of the Messaging channel (`channelAddressIdentifier`).
const CHANNEL_ID: &str = "0Mj000000000001AAA";
const REP_USER_ID: &str = "005000000000001AAA";

/// How the sandbox org is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// The org id clients must send (15 characters; an 18-character form of it is accepted too).
    pub org_id: String,
    /// The Custom Client deployment's API name (`esDeveloperName`).
    pub deployment_name: String,
    /// User Verification on the Messaging channel: on = only authenticated
    /// tokens, off = only unauthenticated ones.
    pub user_verification: bool,
    /// The keyset: `(kid, public JWK with n, e and optionally alg)`.
    pub keys: Vec<(String, Value)>,
    /// The keyset's issuer; `None` accepts any `iss`.
    pub issuer: Option<String>,
    /// Channel Variable Names of the hidden pre-chat fields.
    pub hidden_prechat_fields: Vec<String>,
    pub rep: RepBehaviour,
    /// The longest message text accepted, in characters.
    pub max_message_chars: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            org_id: "00D000000000001".to_string(),
            deployment_name: "Switchboard_Sandbox".to_string(),
            user_verification: false,
            keys: Vec::new(),
            issuer: None,
            hidden_prechat_fields: [
                "SessionId",
                "OpencxSessionId",
                "CallerPhone",
                "HandoffReason",
                "HandoffMode",
                "PreferredChannel",
            ]
            .into_iter()
            .map(str::to_string)
            .collect(),
            rep: RepBehaviour::default(),
            max_message_chars: 4000,
        }
    }
}

/// What the simulated Omni-Channel rep does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepBehaviour {
    /// When the rep accepts a newly routed session; `None` = never by
    /// itself (accept from the console or with [`Sandbox::rep_accept`]).
    pub accept_after: Option<Duration>,
    pub rep_name: String,
    /// Reported in the RoutingResult (`estimatedWaitTime`).
    pub estimated_wait_seconds: Option<i64>,
}

impl Default for RepBehaviour {
    fn default() -> Self {
        RepBehaviour {
            accept_after: Some(Duration::from_secs(3)),
            rep_name: "Riley (Sandbox rep)".to_string(),
            estimated_wait_seconds: Some(30),
        }
    }
}

/// A conversation as the sandbox recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxConversation {
    pub id: Uuid,
    pub created_at_ms: i64,
    /// Kept routing attributes: from create and from messages that start a session.
    pub routing_attributes: BTreeMap<String, String>,
    /// Keys that were sent but are not hidden pre-chat fields (Salesforce drops them silently).
    pub ignored_routing_attributes: Vec<String>,
    /// `Guest`, or the customer identity token's `sub`.
    pub end_user: String,
    pub authenticated: bool,
    /// Messages in order (end user, rep and system).
    pub messages: Vec<SandboxMessage>,
    /// `open`; `ended` (the rep ended the chat — the next post starts a new
    /// session); `closed` (the client closed the conversation).
    pub status: String,
    /// `routingStatus` as the API reports it.
    pub routing_status: String,
    /// The rep currently in the conversation.
    pub rep_joined: Option<String>,
    /// Messaging sessions so far (1 at creation).
    pub sessions: u32,
}

/// One message of a sandbox conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxMessage {
    pub id: Uuid,
    pub text: String,
    pub received_at_ms: i64,
    /// `EndUser`, `Agent` or `System`.
    pub sender_role: String,
}

/// The sandbox. Clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    faults: Faults,
    requests: AtomicU64,
    /// The id of the newest event; open streams wait on it.
    latest_event: watch::Sender<u64>,
    /// Bumped to cut every open event stream.
    stream_generation: watch::Sender<u64>,
    /// HS256 key of the access tokens this sandbox issues.
    secret: [u8; 32],
}

struct State {
    config: SandboxConfig,
    access_token_ttl: Duration,
    ping_interval: Duration,
    conversations: Vec<Conv>,
    events: std::collections::VecDeque<StoredEvent>,
    next_event_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvStatus {
    Open,
    Ended,
    Closed,
}

impl ConvStatus {
    fn as_str(self) -> &'static str {
        match self {
            ConvStatus::Open => "open",
            ConvStatus::Ended => "ended",
            ConvStatus::Closed => "closed",
        }
    }
}

struct Conv {
    id: Uuid,
    /// The access token subject that created it (events go to its streams).
    owner: String,
    end_user: String,
    authenticated: bool,
    created_at_ms: i64,
    closed_at_ms: Option<i64>,
    routing_attributes: BTreeMap<String, String>,
    ignored_routing_attributes: Vec<String>,
    entries: Vec<Entry>,
    status: ConvStatus,
    routing_status: &'static str,
    rep: Option<String>,
    sessions: u32,
    last_timestamp: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    identifier: String,
    entry_type: &'static str,
    role: &'static str,
    sender_subject: String,
    display_name: String,
    client_timestamp: i64,
    transcripted_timestamp: i64,
    payload: Value,
    message_id: Option<Uuid>,
    text: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    id: u64,
    subject: String,
    name: &'static str,
    data: String,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut secret[..]);
        Sandbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    config,
                    access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
                    ping_interval: events::PING_INTERVAL,
                    conversations: Vec::new(),
                    events: std::collections::VecDeque::new(),
                    next_event_id: 1,
                }),
                faults: Faults::default(),
                requests: AtomicU64::new(0),
                latest_event: watch::Sender::new(0),
                stream_generation: watch::Sender::new(0),
                secret,
            }),
        }
    }

    /// Replaces the org setup (existing conversations and tokens stay valid).
    pub fn set_config(&self, config: SandboxConfig) {
        self.shared.lock().config = config;
    }

    pub fn config(&self) -> SandboxConfig {
        self.shared.lock().config.clone()
    }

    /// Lifetime of access tokens issued from now on (default 1 h; zero makes
    /// them expire at once, for tests of 401 handling).
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.shared.lock().access_token_ttl = ttl;
    }

    /// How often event streams opened from now on send a `ping` when
    /// nothing else happens (default 15 s).
    pub fn set_ping_interval(&self, interval: Duration) {
        self.shared.lock().ping_interval = interval.max(Duration::from_millis(1));
    }

    /// The MIAW API at the real paths, plus the console (`GET
    /// /sandbox/console`) and control routes (`GET /sandbox/api/conversations`,
    /// `GET|POST|DELETE /sandbox/api/faults`, `POST
    /// /sandbox/api/conversations/{id}/accept|end|messages`).
    pub fn router(&self) -> axum::Router {
        api::router(self.shared.clone())
            .merge(events::router(self.shared.clone()))
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                faults::middleware,
            ))
            .merge(console::router(self.clone()))
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// All conversations, in creation order.
    pub fn conversations(&self) -> Vec<SandboxConversation> {
        self.shared
            .lock()
            .conversations
            .iter()
            .map(Conv::snapshot)
            .collect()
    }

    pub fn conversation(&self, id: Uuid) -> Option<SandboxConversation> {
        self.shared.lock().find(id).map(Conv::snapshot)
    }

    /// API requests received (REST and SSE, faulted ones included; console
    /// and control routes excluded).
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The rep console as an HTML fragment (one `<section>`, styles
    /// included, every value escaped) for embedding in another page.
    pub fn console_html(&self) -> String {
        console::render_fragment(self)
    }

    /// The rep accepts the waiting session: `ParticipantChanged(add)` and a
    /// greeting. No effect when the session is not open or a rep is already in.
    pub fn rep_accept(&self, id: Uuid) {
        let mut state = self.shared.lock();
        state.rep_join(id, None);
        self.shared.notify(&state);
    }

    /// The rep sends `text` (joining first if nobody has accepted yet).
    /// No effect unless the session is open.
    pub fn rep_send(&self, id: Uuid, text: &str) {
        let mut state = self.shared.lock();
        state.rep_say(id, text);
        self.shared.notify(&state);
    }

    /// The rep ends the chat: `ParticipantChanged(remove)` and
    /// `CloseConversation`. The conversation stays; a later post starts a
    /// new session (as in Salesforce).
    pub fn rep_end_chat(&self, id: Uuid) {
        let mut state = self.shared.lock();
        state.end_session(id);
        self.shared.notify(&state);
    }

    /// Cuts every open event stream mid-body (a dropped SSE connection).
    pub fn drop_event_streams(&self) {
        self.shared.stream_generation.send_modify(|g| *g += 1);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a sandbox bug; the state is
        // still consistent enough to keep serving, so take it back.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes event streams after the state appended events.
    fn notify(&self, state: &State) {
        let latest = state.next_event_id.saturating_sub(1);
        self.latest_event.send_if_modified(|current| {
            if *current == latest {
                false
            } else {
                *current = latest;
                true
            }
        });
    }

    /// Starts the rep's accept timer for `session` of a conversation.
    fn schedule_rep(self: &Arc<Self>, id: Uuid, session: u32, delay: Option<Duration>) {
        let Some(delay) = delay else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut state = shared.lock();
            state.rep_join(id, Some(session));
            shared.notify(&state);
        });
    }
}

impl State {
    fn find(&self, id: Uuid) -> Option<&Conv> {
        self.conversations.iter().find(|c| c.id == id)
    }

    fn find_mut(&mut self, id: Uuid) -> Option<&mut Conv> {
        self.conversations.iter_mut().find(|c| c.id == id)
    }

    fn latest_event_id(&self) -> u64 {
        self.next_event_id.saturating_sub(1)
    }

    /// Appends `entry` to the conversation (when `store`) and logs its SSE
    /// event for the conversation's owner.
    fn record(&mut self, id: Uuid, name: &'static str, entry: Entry, store: bool) {
        let Some(conv) = self.conversations.iter_mut().find(|c| c.id == id) else {
            return;
        };
        let data = json!({
            "channelPlatformKey": conv.owner,
            "channelType": "embedded_messaging",
            "channelAddressIdentifier": CHANNEL_ID,
            "conversationId": conv.id.to_string(),
            "conversationEntry": {
                "senderDisplayName": entry.display_name,
                "identifier": entry.identifier,
                "entryType": entry.entry_type,
                "sender": {
                    "role": entry.role,
                    "appType": app_type(entry.role),
                    "subject": entry.sender_subject,
                    "clientIdentifier": entry.sender_subject,
                },
                "clientTimestamp": entry.client_timestamp,
                "transcriptedTimestamp": entry.transcripted_timestamp,
                // SSE carries the payload as a JSON *string* (list entries as an object).
                "entryPayload": entry.payload.to_string(),
                "relatedRecords": [session_record_id(conv.id, conv.sessions)],
            }
        })
        .to_string();
        let subject = conv.owner.clone();
        if store {
            conv.entries.push(entry);
        }
        let event_id = self.next_event_id;
        self.next_event_id += 1;
        self.events.push_back(StoredEvent {
            id: event_id,
            subject,
            name,
            data,
        });
        while self.events.len() > EVENT_LOG_CAPACITY {
            self.events.pop_front();
        }
    }

    /// Records the RoutingResult of a new session and marks it routed.
    fn route(&mut self, id: Uuid) {
        let ewt = self.config.rep.estimated_wait_seconds;
        let Some(conv) = self.find_mut(id) else {
            return;
        };
        let ts = conv.next_timestamp();
        conv.routing_status = "ROUTED";
        let session = session_record_id(conv.id, conv.sessions);
        let entry_id = Uuid::new_v4().to_string();
        let entry = Entry {
            identifier: entry_id.clone(),
            entry_type: "RoutingResult",
            role: "Router",
            sender_subject: "Omni-Channel".to_string(),
            display_name: "Automated Process".to_string(),
            client_timestamp: ts,
            transcripted_timestamp: ts,
            payload: json!({
                "entryType": "RoutingResult",
                "id": entry_id,
                "recordId": session,
                "routingType": "Initial",
                "failureType": "None",
                "failureReason": null,
                "errorMessages": [],
                "pendingServiceRoutingId": format!("0JR{}", &id.simple().to_string()[..15]),
                "workOwnerId": null,
                "isExternallyRouted": false,
                "cancelReason": null,
                "estimatedWaitTime": { "estimatedWaitTimeInSeconds": ewt, "isEWTRequested": ewt.is_some() },
                "routingConfigurationDetails": { "routingConfigurationType": "Queue", "queueId": "00G000000000001AAA" },
            }),
            message_id: None,
            text: None,
        };
        self.record(id, "CONVERSATION_ROUTING_RESULT", entry, true);
    }

    /// The rep joins the open session (only `session` if given, for timers).
    fn rep_join(&mut self, id: Uuid, session: Option<u32>) {
        let rep_name = self.config.rep.rep_name.clone();
        let Some(conv) = self.find_mut(id) else {
            return;
        };
        if conv.status != ConvStatus::Open
            || conv.rep.is_some()
            || session.is_some_and(|s| s != conv.sessions)
        {
            return;
        }
        conv.rep = Some(rep_name.clone());
        let ts = conv.next_timestamp();
        let entry = participant_entry("add", &rep_name, ts);
        self.record(id, "CONVERSATION_PARTICIPANT_CHANGED", entry, true);
        let greeting = format!(
            "Hi, this is {rep_name}. I have the conversation so far and I'll take it from here."
        );
        self.push_agent_message(id, &rep_name, &greeting);
    }

    fn rep_say(&mut self, id: Uuid, text: &str) {
        let open = self.find(id).is_some_and(|c| c.status == ConvStatus::Open);
        if !open || text.trim().is_empty() {
            return;
        }
        self.rep_join(id, None);
        let Some(rep) = self.find(id).and_then(|c| c.rep.clone()) else {
            return;
        };
        self.push_agent_message(id, &rep, text);
    }

    fn push_agent_message(&mut self, id: Uuid, rep_name: &str, text: &str) {
        let Some(conv) = self.find_mut(id) else {
            return;
        };
        let ts = conv.next_timestamp();
        let message_id = Uuid::new_v4();
        let entry = Entry {
            identifier: message_id.to_string(),
            entry_type: "Message",
            role: "Agent",
            sender_subject: REP_USER_ID.to_string(),
            display_name: rep_name.to_string(),
            client_timestamp: ts,
            transcripted_timestamp: ts,
            payload: message_payload(message_id, text),
            message_id: Some(message_id),
            text: Some(text.to_string()),
        };
        self.record(id, "CONVERSATION_MESSAGE", entry, true);
    }

    /// Ends the open session (rep ended the chat, or the client ended the session).
    fn end_session(&mut self, id: Uuid) {
        let Some(conv) = self.find_mut(id) else {
            return;
        };
        if conv.status != ConvStatus::Open {
            return;
        }
        conv.status = ConvStatus::Ended;
        conv.routing_status = "NEEDS_ROUTING";
        self.leave_and_close(id);
    }

    /// The client closed the conversation.
    fn close(&mut self, id: Uuid) {
        let now = now_ms();
        let Some(conv) = self.find_mut(id) else {
            return;
        };
        if conv.status == ConvStatus::Closed {
            return;
        }
        conv.status = ConvStatus::Closed;
        conv.closed_at_ms = Some(now);
        self.leave_and_close(id);
    }

    fn leave_and_close(&mut self, id: Uuid) {
        let Some(conv) = self.find_mut(id) else {
            return;
        };
        let rep = conv.rep.take();
        let ts = conv.next_timestamp();
        if let Some(rep) = rep {
            let entry = participant_entry("remove", &rep, ts);
            self.record(id, "CONVERSATION_PARTICIPANT_CHANGED", entry, true);
        }
        let entry_id = Uuid::new_v4().to_string();
        let entry = Entry {
            identifier: entry_id.clone(),
            entry_type: "CloseConversation",
            role: "System",
            sender_subject: "system".to_string(),
            display_name: "Automated Process".to_string(),
            client_timestamp: ts,
            transcripted_timestamp: ts,
            payload: json!({ "entryType": "CloseConversation", "id": entry_id }),
            message_id: None,
            text: None,
        };
        self.record(id, "CONVERSATION_CLOSE_CONVERSATION", entry, false);
    }
}

impl Conv {
    fn snapshot(&self) -> SandboxConversation {
        SandboxConversation {
            id: self.id,
            created_at_ms: self.created_at_ms,
            routing_attributes: self.routing_attributes.clone(),
            ignored_routing_attributes: self.ignored_routing_attributes.clone(),
            end_user: self.end_user.clone(),
            authenticated: self.authenticated,
            messages: self
                .entries
                .iter()
                .filter(|e| e.entry_type == "Message")
                .map(|e| SandboxMessage {
                    id: e.message_id.unwrap_or_else(Uuid::nil),
                    text: e.text.clone().unwrap_or_default(),
                    received_at_ms: e.transcripted_timestamp,
                    sender_role: e.role.to_string(),
                })
                .collect(),
            status: self.status.as_str().to_string(),
            routing_status: self.routing_status.to_string(),
            rep_joined: self.rep.clone(),
            sessions: self.sessions,
        }
    }

    /// Strictly increasing per conversation, so entries never tie.
    fn next_timestamp(&mut self) -> i64 {
        let ts = now_ms().max(self.last_timestamp + 1);
        self.last_timestamp = ts;
        ts
    }

    /// Keeps the hidden pre-chat fields, notes the others.
    fn apply_routing_attributes(
        &mut self,
        attributes: &BTreeMap<String, String>,
        hidden: &[String],
    ) {
        for (key, value) in attributes {
            if hidden.iter().any(|h| h == key) {
                self.routing_attributes.insert(key.clone(), value.clone());
            } else {
                tracing::warn!(conversation = %self.id, key = %key, "sandbox: routing attribute is not a hidden pre-chat field; Salesforce drops it");
                if !self.ignored_routing_attributes.contains(key) {
                    self.ignored_routing_attributes.push(key.clone());
                }
            }
        }
    }
}

fn participant_entry(operation: &str, rep_name: &str, ts: i64) -> Entry {
    let entry_id = Uuid::new_v4().to_string();
    Entry {
        identifier: entry_id.clone(),
        entry_type: "ParticipantChanged",
        role: "System",
        sender_subject: "system".to_string(),
        display_name: "Automated Process".to_string(),
        client_timestamp: ts,
        transcripted_timestamp: ts,
        payload: json!({
            "entryType": "ParticipantChanged",
            "id": entry_id,
            "entries": [{
                "operation": operation,
                "displayName": rep_name,
                "participant": { "role": "Agent", "appType": "agent", "subject": REP_USER_ID, "clientIdentifier": REP_USER_ID },
                "menuMetadata": null,
            }],
        }),
        message_id: None,
        text: None,
    }
}

fn message_payload(message_id: Uuid, text: &str) -> Value {
    json!({
        "entryType": "Message",
        "id": message_id.to_string(),
        "abstractMessage": {
            "messageType": "StaticContentMessage",
            "id": message_id.to_string(),
            "staticContent": { "formatType": "Text", "text": text },
        },
        "messageReason": null,
    })
}

fn app_type(role: &str) -> &'static str {
    match role {
        "EndUser" => "iamessage",
        "Agent" => "agent",
        _ => "system",
    }
}

/// A stable fake MessagingSession record id for a conversation's n-th session.
fn session_record_id(id: Uuid, session: u32) -> String {
    format!("0Mw{}{:03}", &id.simple().to_string()[..12], session % 1000)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}
