//! The MIAW REST + SSE client.
//!
//! One [`MiawClient`] per configured deployment; it is cheap to clone and
//! holds no per-conversation state, so the handoff worker decides retries
//! (through [`MiawError::is_retryable`] and friends) and owns ids: the
//! conversation id and every message id are chosen by the caller, which is
//! what makes a retried request idempotent.
//!
//! Wire facts (see `reference/salesforce-miaw.md`):
//! - every REST path is under `{scrt}/iamessage/api/v2/`, the event stream
//!   is `{scrt}/eventrouter/v1/sse`;
//! - ids go out as lowercase hyphenated UUIDs;
//! - list-entries answers carry `entryPayload` as a JSON object, SSE events
//!   carry it as a JSON *string*: both decoders accept either form;
//! - error bodies have no documented schema, so [`MiawError::Http`] keeps
//!   the body word for word (up to 2 KB).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{json, Map, Value};
use switchboard_model::Redacted;
use uuid::Uuid;

use crate::identity::unverified_claims;
use crate::sse::{RawEvent, SseParser};

/// The largest error body kept in [`MiawError::Http`].
pub const MAX_ERROR_BODY: usize = 2048;
/// The most entries one list-entries call returns (Salesforce's maximum).
pub const MAX_LIST_LIMIT: u32 = 50;
/// How long the event stream may stay silent before we call it dead
/// (Salesforce's own sample uses a 90 s heartbeat timeout).
pub const SSE_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const API: &str = "/iamessage/api/v2";
const CAPABILITIES_VERSION: &str = "1";
const PLATFORM: &str = "Web";

/// Where and as what to connect. Values come from the Custom Client
/// deployment's Code Snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiawConfig {
    /// `https://<domain>.my.salesforce-scrt.com` (plain `http` only on loopback, for the sandbox).
    pub scrt_url: String,
    /// 15- or 18-character org id beginning `00D`; sent as given.
    pub org_id: String,
    /// API name of the Embedded Service deployment (`esDeveloperName`).
    pub deployment_name: String,
    /// Per-request deadline (connect + response). The event stream uses it
    /// only until the response headers arrive.
    pub request_timeout: Duration,
}

impl MiawConfig {
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

    pub fn new(
        scrt_url: impl Into<String>,
        org_id: impl Into<String>,
        deployment_name: impl Into<String>,
    ) -> Self {
        MiawConfig {
            scrt_url: scrt_url.into(),
            org_id: org_id.into(),
            deployment_name: deployment_name.into(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What went wrong talking to Salesforce, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MiawError {
    /// A configuration value is unusable; nothing was sent.
    #[error("salesforce setting {field}: {reason}")]
    Config { field: &'static str, reason: String },
    /// No HTTP answer arrived (DNS, connect, TLS, timeout, connection reset).
    /// The request may or may not have been applied.
    #[error("could not reach salesforce ({kind}): {message}; check the SCRT URL and the network — retrying may help")]
    Transport {
        kind: TransportKind,
        message: String,
    },
    /// Salesforce answered with a non-success status. `body` is what it
    /// said, word for word (truncated to 2 KB).
    #[error("salesforce answered HTTP {status}: {}; {}", display_body(body), http_hint(*status, *retry_after))]
    Http {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// A success answer we could not understand.
    #[error("salesforce sent an unexpected {what}: {message}")]
    Decode { what: &'static str, message: String },
}

/// Why no HTTP answer arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    Dns,
    Connect,
    Tls,
    Timeout,
    /// The connection closed before a complete answer.
    Reset,
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Dns => "name lookup failed",
            TransportKind::Connect => "connection failed",
            TransportKind::Tls => "TLS failed",
            TransportKind::Timeout => "timed out",
            TransportKind::Reset => "connection closed without an answer",
            TransportKind::Other => "transport error",
        })
    }
}

impl MiawError {
    /// Transport failures, 408, 429 and 5xx: the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            MiawError::Transport { .. } => true,
            MiawError::Http { status, .. } => matches!(status, 408 | 429 | 500..=599),
            MiawError::Config { .. } | MiawError::Decode { .. } => false,
        }
    }

    /// 401: the access token was refused or expired; get a new one and retry.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// A retry with the same input cannot succeed: configuration and decode
    /// errors, and 4xx other than 401, 408 and 429.
    pub fn is_permanent(&self) -> bool {
        match self {
            MiawError::Config { .. } | MiawError::Decode { .. } => true,
            MiawError::Http { status, .. } => {
                (400..500).contains(status) && !matches!(status, 401 | 408 | 429)
            }
            MiawError::Transport { .. } => false,
        }
    }

    /// 409: the id is already in use (a retried create may see this when
    /// the first attempt was applied but its answer was lost).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// How long Salesforce asked us to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MiawError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            MiawError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            MiawError::Transport { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// The body on one line (runs of whitespace collapsed); the `body` field
/// keeps it verbatim.
fn display_body(body: &str) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        "(empty body)".to_string()
    } else {
        one_line
    }
}

fn http_hint(status: u16, retry_after: Option<Duration>) -> String {
    match status {
        400 => "the request or the org setup is wrong (org id, deployment name, ids, text length); retrying will not help".into(),
        401 => "a token was refused or has expired (the access token, or the identity token's key, issuer or expiry); get a new one and retry".into(),
        403 => "the deployment refused this access; check that it is a Custom Client deployment and whether User Verification is on".into(),
        404 => "no such conversation or endpoint; check the SCRT URL, or the conversation was closed".into(),
        408 | 429 | 500..=599 => match retry_after {
            Some(d) => format!("salesforce is busy or unavailable; retry after {} s", d.as_secs()),
            None => "salesforce is busy or unavailable; retry later".into(),
        },
        _ if (400..500).contains(&status) => "salesforce refused the request; retrying will not help".into(),
        _ => "unexpected answer".into(),
    }
}

/// A Messaging access token and what came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The JWT to send as `Authorization: Bearer`.
    pub access_token: Redacted<String>,
    /// Where to resume the event stream from (`Last-Event-Id`).
    pub last_event_id: String,
    /// `context.configuration.embeddedServiceConfig.deploymentType`; `"api"` for a Custom Client deployment.
    pub deployment_type: Option<String>,
    /// Names (Channel Variable Names) of the deployment's hidden pre-chat
    /// fields: the only routing-attribute keys Salesforce keeps.
    pub hidden_prechat_fields: Vec<String>,
    /// The token's `exp`, read without verification; `None` if it is not a JWT.
    pub expires_at_unix: Option<i64>,
}

impl AccessToken {
    /// True when the token expires within `margin_secs` of `now_unix`
    /// (always false when the expiry is unknown).
    pub fn expires_within(&self, now_unix: i64, margin_secs: i64) -> bool {
        self.expires_at_unix
            .is_some_and(|exp| exp <= now_unix.saturating_add(margin_secs))
    }

    /// The routing-attribute keys that are not hidden pre-chat fields of the
    /// deployment — Salesforce would silently drop them.
    pub fn unknown_routing_attributes<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        keys.into_iter()
            .filter(|k| !self.hidden_prechat_fields.iter().any(|h| h == k))
            .map(str::to_string)
            .collect()
    }

    /// Whether the deployment is a Custom Client (`deploymentType: "api"`).
    pub fn is_custom_client(&self) -> bool {
        self.deployment_type.as_deref() == Some("api")
    }
}

/// Salesforce's acknowledgement of a posted message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentMessage {
    pub entry_id: Option<String>,
    pub client_timestamp: Option<i64>,
}

/// `routingStatus` of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingStatus {
    Initial,
    NeedsRouting,
    Routed,
    Transfer,
    /// The answer had no routing status (null or absent).
    Unknown,
    /// A value this version does not know.
    Other(String),
}

impl RoutingStatus {
    fn parse(value: Option<&str>) -> Self {
        match value {
            None => RoutingStatus::Unknown,
            Some(s) => match s.to_ascii_uppercase().as_str() {
                "INITIAL" => RoutingStatus::Initial,
                "NEEDS_ROUTING" => RoutingStatus::NeedsRouting,
                "ROUTED" => RoutingStatus::Routed,
                "TRANSFER" => RoutingStatus::Transfer,
                "" => RoutingStatus::Unknown,
                _ => RoutingStatus::Other(s.to_string()),
            },
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RoutingStatus::Initial => "INITIAL",
            RoutingStatus::NeedsRouting => "NEEDS_ROUTING",
            RoutingStatus::Routed => "ROUTED",
            RoutingStatus::Transfer => "TRANSFER",
            RoutingStatus::Unknown => "",
            RoutingStatus::Other(s) => s,
        }
    }
}

/// One entry of a conversation's transcript (from list-entries).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationEntry {
    /// `identifier`; for end-user messages, the client's message id.
    pub entry_id: String,
    /// `Message`, `ParticipantChanged`, `RoutingResult`, ...
    pub entry_type: String,
    /// `EndUser`, `Agent`, `Chatbot`, `System`, `Router`, `Supervisor`.
    pub sender_role: String,
    pub sender_display_name: String,
    /// `abstractMessage.staticContent.text` of text messages.
    pub text: Option<Redacted<String>>,
    /// `abstractMessage.id` of messages.
    pub message_id: Option<String>,
    pub client_timestamp: Option<i64>,
    pub transcripted_timestamp: Option<i64>,
    /// The whole `entryPayload`, decoded to an object.
    pub payload: Redacted<Value>,
}

/// One event from the event stream, with its SSE `id` (pass the last one
/// seen as `last_event_id` when reconnecting).
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub kind: SseEventKind,
}

impl SseEvent {
    /// The conversation the event belongs to (one stream carries every
    /// conversation of the token's subject).
    pub fn conversation_id(&self) -> Option<&str> {
        match &self.kind {
            SseEventKind::RoutingResult {
                conversation_id, ..
            }
            | SseEventKind::ParticipantChanged {
                conversation_id, ..
            }
            | SseEventKind::Message {
                conversation_id, ..
            }
            | SseEventKind::CloseConversation { conversation_id } => Some(conversation_id),
            SseEventKind::Other {
                conversation_id, ..
            } => conversation_id.as_deref(),
        }
    }

    /// Whether the event is about `conversation` (ids compare case-insensitively).
    pub fn is_for(&self, conversation: Uuid) -> bool {
        self.conversation_id()
            .is_some_and(|c| c.eq_ignore_ascii_case(&conversation.to_string()))
    }
}

/// What an event says. Role, operation and type values are Salesforce's
/// words, kept as strings (`Agent`, `add`, `Initial`, `None`, ...).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SseEventKind {
    /// `CONVERSATION_ROUTING_RESULT`.
    RoutingResult {
        conversation_id: String,
        /// `Initial` or `Transfer`.
        routing_type: String,
        /// `None`, `Unknown`, `SubmissionError`, `RoutingError`.
        failure_type: String,
        failure_reason: Option<String>,
        estimated_wait_seconds: Option<i64>,
    },
    /// `CONVERSATION_PARTICIPANT_CHANGED` (first entry): `add` + `Agent` = a rep joined.
    ParticipantChanged {
        conversation_id: String,
        /// `add` or `remove`.
        operation: String,
        role: String,
        display_name: String,
    },
    /// `CONVERSATION_MESSAGE`: a rep's reply, or the echo of our own post (role `EndUser`).
    Message {
        conversation_id: String,
        role: String,
        display_name: String,
        /// Empty for non-text messages.
        text: Redacted<String>,
        entry_id: String,
    },
    /// `CONVERSATION_CLOSE_CONVERSATION`: the conversation (or the rep's session) ended.
    CloseConversation { conversation_id: String },
    /// Any other event (typing, receipts, queue position, ...). `ping` keep-alives are not reported.
    Other {
        event: String,
        conversation_id: Option<String>,
    },
}

/// The MIAW client. Cheap to clone (connection pools are shared).
#[derive(Debug, Clone)]
pub struct MiawClient {
    http: reqwest::Client,
    sse_http: reqwest::Client,
    base: String,
    config: MiawConfig,
}

impl MiawClient {
    /// Checks the configuration (naming the field that is wrong) and builds
    /// the HTTP clients. Sends nothing.
    pub fn new(config: MiawConfig) -> Result<Self, MiawError> {
        let scrt_url = config.scrt_url.trim();
        switchboard_model::salesforce::validate_scrt_url(scrt_url)
            .map_err(|e| config_error("scrt_url", &e))?;
        let parsed = reqwest::Url::parse(scrt_url).map_err(|e| MiawError::Config {
            field: "scrt_url",
            reason: format!("`{scrt_url}` is not a URL: {e}"),
        })?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(MiawError::Config {
                field: "scrt_url",
                reason: format!("`{scrt_url}` must not have a query or fragment; use just https://<domain>.my.salesforce-scrt.com"),
            });
        }
        switchboard_model::salesforce::validate_org_id(&config.org_id)
            .map_err(|e| config_error("org_id", &e))?;
        switchboard_model::salesforce::validate_deployment_name(&config.deployment_name)
            .map_err(|e| config_error("deployment_name", &e))?;
        if config.request_timeout.is_zero() {
            return Err(MiawError::Config {
                field: "request_timeout",
                reason: "must be longer than zero".into(),
            });
        }
        let user_agent = concat!("switchboard/", env!("CARGO_PKG_VERSION"));
        let connect_timeout = config.request_timeout.min(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(config.request_timeout)
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| MiawError::Config {
                field: "scrt_url",
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let sse_http = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(connect_timeout)
            .read_timeout(SSE_IDLE_TIMEOUT)
            .build()
            .map_err(|e| MiawError::Config {
                field: "scrt_url",
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let base = scrt_url.trim_end_matches('/').to_string();
        let config = MiawConfig {
            scrt_url: base.clone(),
            org_id: config.org_id.trim().to_string(),
            deployment_name: config.deployment_name.trim().to_string(),
            request_timeout: config.request_timeout,
        };
        Ok(MiawClient {
            http,
            sse_http,
            base,
            config,
        })
    }

    pub fn config(&self) -> &MiawConfig {
        &self.config
    }

    /// `POST /authorization/unauthenticated/access-token` (User Verification off).
    pub async fn unauthenticated_token(&self) -> Result<AccessToken, MiawError> {
        let body = self.token_body();
        let req = self
            .http
            .post(self.url("/authorization/unauthenticated/access-token"))
            .json(&body);
        let value = self.json(req, "access-token answer").await?;
        parse_token(&value)
    }

    /// `POST /authorization/authenticated/access-token` with a customer
    /// identity JWT (see [`crate::JwtSigner`]); needs User Verification on.
    pub async fn authenticated_token(
        &self,
        customer_identity_token: &str,
    ) -> Result<AccessToken, MiawError> {
        let mut body = self.token_body();
        body["authorizationType"] = json!("JWT");
        body["customerIdentityToken"] = json!(customer_identity_token);
        let req = self
            .http
            .post(self.url("/authorization/authenticated/access-token"))
            .json(&body);
        let value = self.json(req, "access-token answer").await?;
        parse_token(&value)
    }

    /// `GET /authorization/continuation-access-token`: a new token for the
    /// same end user.
    pub async fn continuation_token(&self, token: &AccessToken) -> Result<AccessToken, MiawError> {
        let req = self
            .http
            .get(self.url("/authorization/continuation-access-token"))
            .bearer_auth(token.access_token.expose());
        let value = self.json(req, "continuation-token answer").await?;
        parse_token(&value)
    }

    /// `POST /conversation` with a caller-chosen id. 200 and 201 are success;
    /// the body is ignored.
    pub async fn create_conversation(
        &self,
        token: &AccessToken,
        conversation_id: Uuid,
        routing_attributes: &BTreeMap<String, String>,
    ) -> Result<(), MiawError> {
        let mut body = json!({
            "conversationId": conversation_id.to_string(),
            "esDeveloperName": self.config.deployment_name,
        });
        if !routing_attributes.is_empty() {
            body["routingAttributes"] = json!(routing_attributes);
        }
        let req = self
            .http
            .post(self.url("/conversation"))
            .bearer_auth(token.access_token.expose())
            .json(&body);
        self.execute(req).await?;
        Ok(())
    }

    /// `POST /conversation/{id}/message`: one text message as the end user.
    /// `new_session_routing`: `Some` on the first message of a session — the
    /// body then carries `isNewMessagingSession: true` and these `routingAttributes`.
    pub async fn send_message(
        &self,
        token: &AccessToken,
        conversation_id: Uuid,
        message_id: Uuid,
        text: &str,
        new_session_routing: Option<&BTreeMap<String, String>>,
    ) -> Result<SentMessage, MiawError> {
        let mut body = json!({
            "message": {
                "id": message_id.to_string(),
                "messageType": "StaticContentMessage",
                "staticContent": { "formatType": "Text", "text": text },
            },
            "esDeveloperName": self.config.deployment_name,
        });
        if let Some(routing) = new_session_routing {
            body["isNewMessagingSession"] = json!(true);
            body["routingAttributes"] = json!(routing);
        }
        let req = self
            .http
            .post(self.url(&format!("/conversation/{conversation_id}/message")))
            .bearer_auth(token.access_token.expose())
            .json(&body);
        let value = self.json_or_empty(req, "send-message answer").await?;
        let first = value
            .get("conversationEntries")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        Ok(SentMessage {
            entry_id: first
                .and_then(|e| e.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            client_timestamp: first
                .and_then(|e| e.get("clientTimestamp"))
                .and_then(Value::as_i64),
        })
    }

    /// `DELETE /conversation/{id}?esDeveloperName=...`. A 404 means it is
    /// already gone and counts as success.
    pub async fn close_conversation(
        &self,
        token: &AccessToken,
        conversation_id: Uuid,
    ) -> Result<(), MiawError> {
        let req = self
            .http
            .delete(self.url(&format!("/conversation/{conversation_id}")))
            .query(&[("esDeveloperName", &self.config.deployment_name)])
            .bearer_auth(token.access_token.expose());
        match self.execute(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /conversation/{id}` → `routingStatus`.
    pub async fn conversation_status(
        &self,
        token: &AccessToken,
        conversation_id: Uuid,
    ) -> Result<RoutingStatus, MiawError> {
        let req = self
            .http
            .get(self.url(&format!("/conversation/{conversation_id}")))
            .bearer_auth(token.access_token.expose());
        let value = self.json(req, "conversation answer").await?;
        Ok(RoutingStatus::parse(
            value.get("routingStatus").and_then(Value::as_str),
        ))
    }

    /// `GET /conversation/{id}/entries`: the newest `limit` entries (clamped
    /// to 1..=50), returned **oldest first**.
    pub async fn list_entries(
        &self,
        token: &AccessToken,
        conversation_id: Uuid,
        limit: u32,
    ) -> Result<Vec<ConversationEntry>, MiawError> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let req = self
            .http
            .get(self.url(&format!("/conversation/{conversation_id}/entries")))
            .query(&[
                ("limit", limit.to_string()),
                ("direction", "FromEnd".to_string()),
            ])
            .bearer_auth(token.access_token.expose());
        let value = self.json(req, "list-entries answer").await?;
        let raw = value
            .get("conversationEntries")
            .and_then(Value::as_array)
            .ok_or_else(|| decode("list-entries answer", "no conversationEntries array"))?;
        let mut entries = raw.iter().map(parse_entry).collect::<Result<Vec<_>, _>>()?;
        // Salesforce lists newest first; entries sharing a millisecond keep that order reversed.
        entries.reverse();
        entries.sort_by_key(|e| e.transcripted_timestamp.or(e.client_timestamp));
        Ok(entries)
    }

    /// Opens `GET /eventrouter/v1/sse` (one stream per end user, for all of
    /// its conversations). Open it **before** creating the conversation.
    ///
    /// The stream ends after a transport error (yielded first) or when the
    /// server closes it; reconnect with the last event id seen. An event whose
    /// data cannot be decoded is yielded as `Err(Decode)` and the stream goes on.
    pub async fn events(
        &self,
        token: &AccessToken,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<SseEvent, MiawError>> + Send + 'static, MiawError> {
        let mut req = self
            .sse_http
            .get(format!("{}/eventrouter/v1/sse", self.base))
            .bearer_auth(token.access_token.expose())
            .header("X-Org-Id", &self.config.org_id)
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
            req = req.header("Last-Event-Id", id);
        }
        let response =
            match tokio::time::timeout(self.config.request_timeout, self.execute(req)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(MiawError::Transport {
                        kind: TransportKind::Timeout,
                        message: format!(
                            "no answer to the event-stream request within {:?}",
                            self.config.request_timeout
                        ),
                    })
                }
            };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if !content_type.starts_with("text/event-stream") {
            return Err(decode(
                "event-stream answer",
                format!("content type is `{content_type}`, not text/event-stream"),
            ));
        }
        let state = EventStreamState {
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            done: false,
        };
        Ok(futures_util::stream::unfold(state, next_event))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API}{path}", self.base)
    }

    fn token_body(&self) -> Value {
        json!({
            "orgId": self.config.org_id,
            "esDeveloperName": self.config.deployment_name,
            "capabilitiesVersion": CAPABILITIES_VERSION,
            "platform": PLATFORM,
            "context": { "appName": "Switchboard", "clientVersion": env!("CARGO_PKG_VERSION") },
        })
    }

    async fn execute(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, MiawError> {
        let response = req.send().await.map_err(transport_error)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(http_error(response).await)
        }
    }

    async fn json(
        &self,
        req: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<Value, MiawError> {
        let value = self.json_or_empty(req, what).await?;
        if value.is_null() {
            return Err(decode(what, "empty body"));
        }
        Ok(value)
    }

    /// The answer as JSON; an empty body is `Value::Null`.
    async fn json_or_empty(
        &self,
        req: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<Value, MiawError> {
        let response = self.execute(req).await?;
        let bytes = response.bytes().await.map_err(transport_error)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| decode(what, format!("not JSON: {e}")))
    }
}

struct EventStreamState {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<hyper::body::Bytes>> + Send>>,
    parser: SseParser,
    done: bool,
}

async fn next_event(
    mut state: EventStreamState,
) -> Option<(Result<SseEvent, MiawError>, EventStreamState)> {
    loop {
        while let Some(raw) = state.parser.poll_event() {
            if let Some(result) = decode_event(raw) {
                return Some((result, state));
            }
        }
        if state.done {
            return None;
        }
        match state.body.next().await {
            Some(Ok(chunk)) => {
                if let Err(e) = state.parser.handle_bytes(&chunk) {
                    state.done = true;
                    return Some((Err(decode("event stream", e.to_string())), state));
                }
            }
            Some(Err(e)) => {
                state.done = true;
                return Some((Err(transport_error(e)), state));
            }
            None => {
                state.done = true;
                if let Err(e) = state.parser.handle_eof() {
                    return Some((Err(decode("event stream", e.to_string())), state));
                }
            }
        }
    }
}

/// Interprets one raw SSE event; `None` for keep-alives.
pub(crate) fn decode_event(raw: RawEvent) -> Option<Result<SseEvent, MiawError>> {
    if raw.event.eq_ignore_ascii_case("ping") {
        return None;
    }
    let id = raw.id.clone();
    Some(decode_event_kind(&raw).map(|kind| SseEvent { id, kind }))
}

fn decode_event_kind(raw: &RawEvent) -> Result<SseEventKind, MiawError> {
    const WHAT: &str = "event";
    let known = matches!(
        raw.event.as_str(),
        "CONVERSATION_ROUTING_RESULT"
            | "CONVERSATION_PARTICIPANT_CHANGED"
            | "CONVERSATION_MESSAGE"
            | "CONVERSATION_CLOSE_CONVERSATION"
    );
    let data: Value = match serde_json::from_str(&raw.data) {
        Ok(v) => v,
        Err(e) if known => {
            return Err(decode(WHAT, format!("{} data is not JSON: {e}", raw.event)))
        }
        Err(_) => Value::Null,
    };
    let conversation_id = data
        .get("conversationId")
        .and_then(Value::as_str)
        .map(str::to_string);
    if !known {
        return Ok(SseEventKind::Other {
            event: raw.event.clone(),
            conversation_id,
        });
    }
    let conversation_id = conversation_id
        .ok_or_else(|| decode(WHAT, format!("{} without conversationId", raw.event)))?;
    if raw.event == "CONVERSATION_CLOSE_CONVERSATION" {
        return Ok(SseEventKind::CloseConversation { conversation_id });
    }
    let entry = data
        .get("conversationEntry")
        .ok_or_else(|| decode(WHAT, format!("{} without conversationEntry", raw.event)))?;
    let payload = entry_payload(entry)?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(match raw.event.as_str() {
        "CONVERSATION_ROUTING_RESULT" => SseEventKind::RoutingResult {
            conversation_id,
            routing_type: text(payload.get("routingType")),
            failure_type: text(payload.get("failureType")),
            failure_reason: payload
                .get("failureReason")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            estimated_wait_seconds: payload
                .get("estimatedWaitTime")
                .and_then(|w| w.get("estimatedWaitTimeInSeconds"))
                .and_then(Value::as_i64),
        },
        "CONVERSATION_PARTICIPANT_CHANGED" => {
            let first = payload
                .get("entries")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .ok_or_else(|| decode(WHAT, "ParticipantChanged without entries"))?;
            SseEventKind::ParticipantChanged {
                conversation_id,
                operation: text(first.get("operation")),
                role: text(first.get("participant").and_then(|p| p.get("role"))),
                display_name: text(first.get("displayName")),
            }
        }
        _ => SseEventKind::Message {
            conversation_id,
            role: text(entry.get("sender").and_then(|s| s.get("role"))),
            display_name: text(entry.get("senderDisplayName")),
            text: Redacted::new(text(message_text(&payload))),
            entry_id: text(entry.get("identifier")),
        },
    })
}

fn message_text(payload: &Value) -> Option<&Value> {
    payload
        .get("abstractMessage")
        .and_then(|m| m.get("staticContent"))
        .and_then(|c| c.get("text"))
}

/// `entryPayload` as an object, whether it came as one (list entries) or as
/// a JSON string (SSE).
fn entry_payload(entry: &Value) -> Result<Value, MiawError> {
    match entry.get("entryPayload") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(decode(
                "entry",
                "entryPayload string does not hold a JSON object",
            )),
            Err(e) => Err(decode(
                "entry",
                format!("entryPayload string is not JSON: {e}"),
            )),
        },
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(Value::Null) | None => Ok(Value::Object(Map::new())),
        Some(_) => Err(decode(
            "entry",
            "entryPayload is neither an object nor a JSON string",
        )),
    }
}

fn parse_entry(entry: &Value) -> Result<ConversationEntry, MiawError> {
    let payload = entry_payload(entry)?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let entry_type = s(entry.get("entryType"))
        .or_else(|| s(payload.get("entryType")))
        .unwrap_or_default();
    Ok(ConversationEntry {
        entry_id: s(entry.get("identifier")).unwrap_or_default(),
        entry_type,
        sender_role: s(entry.get("sender").and_then(|x| x.get("role"))).unwrap_or_default(),
        sender_display_name: s(entry.get("senderDisplayName")).unwrap_or_default(),
        text: s(message_text(&payload)).map(Redacted::new),
        message_id: s(payload.get("abstractMessage").and_then(|m| m.get("id"))),
        client_timestamp: entry.get("clientTimestamp").and_then(Value::as_i64),
        transcripted_timestamp: entry.get("transcriptedTimestamp").and_then(Value::as_i64),
        payload: Redacted::new(payload),
    })
}

fn parse_token(value: &Value) -> Result<AccessToken, MiawError> {
    const WHAT: &str = "access-token answer";
    let access_token = value
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| decode(WHAT, "no accessToken"))?
        .to_string();
    let last_event_id = match value.get("lastEventId") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    };
    let config = value
        .get("context")
        .and_then(|c| c.get("configuration"))
        .and_then(|c| c.get("embeddedServiceConfig"));
    let deployment_type = config
        .and_then(|c| c.get("deploymentType"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let hidden_prechat_fields = config.map(hidden_fields).unwrap_or_default();
    let expires_at_unix =
        unverified_claims(&access_token).and_then(|c| c.get("exp").and_then(Value::as_i64));
    Ok(AccessToken {
        access_token: Redacted::new(access_token),
        last_event_id,
        deployment_type,
        hidden_prechat_fields,
        expires_at_unix,
    })
}

/// `forms[*].formFields[*]` with `isHidden: true`, plus any `hiddenFormFields`
/// (strings or objects with `name`), in order, without repeats.
fn hidden_fields(config: &Value) -> Vec<String> {
    fn add(out: &mut Vec<String>, name: Option<&str>) {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    fn add_list(out: &mut Vec<String>, list: Option<&Value>) {
        for f in list.and_then(Value::as_array).into_iter().flatten() {
            add(
                out,
                f.as_str().or_else(|| f.get("name").and_then(Value::as_str)),
            );
        }
    }
    let mut out = Vec::new();
    for form in config
        .get("forms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for field in form
            .get("formFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if field.get("isHidden").and_then(Value::as_bool) == Some(true) {
                add(&mut out, field.get("name").and_then(Value::as_str));
            }
        }
        add_list(&mut out, form.get("hiddenFormFields"));
    }
    add_list(&mut out, config.get("hiddenFormFields"));
    out
}

fn decode(what: &'static str, message: impl Into<String>) -> MiawError {
    MiawError::Decode {
        what,
        message: message.into(),
    }
}

fn config_error(field: &'static str, e: &switchboard_model::ModelError) -> MiawError {
    let full = e.to_string();
    let reason = full
        .strip_prefix(&format!("{}: ", e.field()))
        .unwrap_or(&full)
        .to_string();
    MiawError::Config { field, reason }
}

async fn http_error(response: reqwest::Response) -> MiawError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let body = read_bounded_body(response).await;
    MiawError::Http {
        status,
        body,
        retry_after,
    }
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of the body (a failure to read
/// the rest does not hide the status).
async fn read_bounded_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() <= MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    truncate_utf8(&String::from_utf8_lossy(&bytes), MAX_ERROR_BODY)
}

fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn transport_error(e: reqwest::Error) -> MiawError {
    MiawError::Transport {
        kind: classify(&e),
        message: error_chain(&e),
    }
}

fn classify(e: &reqwest::Error) -> TransportKind {
    if e.is_timeout() {
        return TransportKind::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return TransportKind::Tls;
        }
        let mut next = err.source();
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return TransportKind::Timeout,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => return TransportKind::Reset,
                std::io::ErrorKind::ConnectionRefused => return TransportKind::Connect,
                _ => {}
            }
            // An io::Error's `source()` skips the error it wraps (often
            // another io::Error around a rustls::Error): descend into it.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return TransportKind::Timeout;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return TransportKind::Reset;
            }
        }
        // hyper-util's connector reports resolver failures only in its text.
        if err.to_string().starts_with("dns error") {
            return TransportKind::Dns;
        }
        source = next;
    }
    if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(event: &str, data: Value) -> RawEvent {
        RawEvent {
            event: event.into(),
            id: Some("42".into()),
            data: data.to_string(),
        }
    }

    #[test]
    fn message_event_decodes_a_string_payload() {
        let payload = json!({"entryType":"Message","abstractMessage":{"messageType":"StaticContentMessage","id":"m1","staticContent":{"formatType":"Text","text":"Hi <there>"}}});
        let data = json!({"conversationId":"c1","conversationEntry":{"senderDisplayName":"Jane Rep","identifier":"e1","entryType":"Message","sender":{"role":"Agent"},"entryPayload": payload.to_string()}});
        let event = decode_event(raw("CONVERSATION_MESSAGE", data))
            .unwrap()
            .unwrap();
        assert_eq!(event.id.as_deref(), Some("42"));
        assert_eq!(
            event.kind,
            SseEventKind::Message {
                conversation_id: "c1".into(),
                role: "Agent".into(),
                display_name: "Jane Rep".into(),
                text: Redacted::new("Hi <there>".into()),
                entry_id: "e1".into()
            }
        );
    }

    #[test]
    fn routing_and_participant_events_decode_object_payloads_too() {
        let data = json!({"conversationId":"c1","conversationEntry":{"entryPayload":{"entryType":"RoutingResult","routingType":"Initial","failureType":"None","failureReason":null,"estimatedWaitTime":{"estimatedWaitTimeInSeconds":90,"isEWTRequested":true}}}});
        let event = decode_event(raw("CONVERSATION_ROUTING_RESULT", data))
            .unwrap()
            .unwrap();
        assert_eq!(
            event.kind,
            SseEventKind::RoutingResult {
                conversation_id: "c1".into(),
                routing_type: "Initial".into(),
                failure_type: "None".into(),
                failure_reason: None,
                estimated_wait_seconds: Some(90)
            }
        );
        let payload = json!({"entryType":"ParticipantChanged","entries":[{"operation":"add","displayName":"Riley","participant":{"role":"Agent"}}]});
        let data = json!({"conversationId":"c1","conversationEntry":{"entryPayload": payload.to_string()}});
        let event = decode_event(raw("CONVERSATION_PARTICIPANT_CHANGED", data))
            .unwrap()
            .unwrap();
        assert!(
            matches!(event.kind, SseEventKind::ParticipantChanged { ref operation, ref role, ref display_name, .. }
            if operation == "add" && role == "Agent" && display_name == "Riley")
        );
    }

    #[test]
    fn pings_are_skipped_unknown_events_kept_and_garbage_is_an_error() {
        assert!(decode_event(raw("ping", json!({}))).is_none());
        let event = decode_event(raw(
            "CONVERSATION_TYPING_STARTED_INDICATOR",
            json!({"conversationId":"c9"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(event.conversation_id(), Some("c9"));
        let bad = RawEvent {
            event: "CONVERSATION_MESSAGE".into(),
            id: None,
            data: "{not json".into(),
        };
        assert!(matches!(
            decode_event(bad),
            Some(Err(MiawError::Decode { .. }))
        ));
        let bad_payload =
            json!({"conversationId":"c1","conversationEntry":{"entryPayload":"[1,2]"}});
        assert!(matches!(
            decode_event(raw("CONVERSATION_MESSAGE", bad_payload)),
            Some(Err(_))
        ));
    }

    #[test]
    fn token_answer_yields_hidden_fields_and_expiry() {
        let value = json!({
            "accessToken": "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.sig",
            "lastEventId": 0,
            "context": {"configuration": {"embeddedServiceConfig": {
                "deploymentType": "api",
                "forms": [{"formFields": [
                    {"name": "SessionId", "isHidden": true},
                    {"name": "Email", "isHidden": false}
                ], "hiddenFormFields": ["CallerPhone"]}],
                "hiddenFormFields": [{"name": "SessionId"}, {"name": "HandoffReason"}]
            }}}
        });
        let token = parse_token(&value).unwrap();
        assert_eq!(token.last_event_id, "0");
        assert!(token.is_custom_client());
        assert_eq!(
            token.hidden_prechat_fields,
            ["SessionId", "CallerPhone", "HandoffReason"]
        );
        assert_eq!(token.expires_at_unix, Some(1_700_000_000));
        assert!(token.expires_within(1_699_999_990, 30));
        assert_eq!(
            token.unknown_routing_attributes(["SessionId", "Bogus"]),
            ["Bogus"]
        );
        assert!(!format!("{token:?}").contains("eyJ"));
        assert!(matches!(
            parse_token(&json!({})),
            Err(MiawError::Decode { .. })
        ));
    }

    #[test]
    fn errors_classify_for_the_outbox() {
        let http = |status| MiawError::Http {
            status,
            body: String::new(),
            retry_after: None,
        };
        for s in [408, 429, 500, 503] {
            assert!(http(s).is_retryable() && !http(s).is_permanent(), "{s}");
        }
        for s in [400, 403, 404, 409, 413] {
            assert!(!http(s).is_retryable() && http(s).is_permanent(), "{s}");
        }
        assert!(
            http(401).is_unauthorized() && !http(401).is_permanent() && !http(401).is_retryable()
        );
        let t = MiawError::Transport {
            kind: TransportKind::Reset,
            message: "x".into(),
        };
        assert!(t.is_retryable() && !t.is_permanent());
        assert!(decode("x", "y").is_permanent());
        let e = MiawError::Http {
            status: 429,
            body: "slow down".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(e.to_string(), "salesforce answered HTTP 429: slow down; salesforce is busy or unavailable; retry after 3 s");
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(MAX_ERROR_BODY);
        let t = truncate_utf8(&s, MAX_ERROR_BODY);
        assert!(t.len() <= MAX_ERROR_BODY && t.chars().all(|c| c == 'é'));
    }

    #[test]
    fn config_is_checked_field_by_field() {
        let ok = MiawConfig::new(
            "https://acme.my.salesforce-scrt.com/",
            "00D000000000001",
            "Switchboard_Sandbox",
        );
        let client = MiawClient::new(ok.clone()).unwrap();
        assert_eq!(
            client.config().scrt_url,
            "https://acme.my.salesforce-scrt.com"
        );
        for (cfg, field) in [
            (
                MiawConfig {
                    scrt_url: "http://acme.my.salesforce-scrt.com".into(),
                    ..ok.clone()
                },
                "scrt_url",
            ),
            (
                MiawConfig {
                    scrt_url: "ftp://x".into(),
                    ..ok.clone()
                },
                "scrt_url",
            ),
            (
                MiawConfig {
                    scrt_url: "https://acme.my.salesforce-scrt.com/?a=1".into(),
                    ..ok.clone()
                },
                "scrt_url",
            ),
            (
                MiawConfig {
                    org_id: "12345".into(),
                    ..ok.clone()
                },
                "org_id",
            ),
            (
                MiawConfig {
                    deployment_name: "1bad name".into(),
                    ..ok.clone()
                },
                "deployment_name",
            ),
            (
                MiawConfig {
                    request_timeout: Duration::ZERO,
                    ..ok.clone()
                },
                "request_timeout",
            ),
        ] {
            match MiawClient::new(cfg) {
                Err(MiawError::Config { field: f, reason }) => {
                    assert_eq!(f, field);
                    assert!(!reason.starts_with(field), "{reason}");
                }
                other => panic!("expected a config error for {field}, got {other:?}"),
            }
        }
        for loopback in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(
                MiawClient::new(MiawConfig {
                    scrt_url: loopback.into(),
                    ..ok.clone()
                })
                .is_ok(),
                "{loopback}"
            );
        }
    }
}
