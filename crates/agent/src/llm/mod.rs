//! The LLM agent: any OpenAI-compatible Chat Completions endpoint, streamed,
//! with tools.
//!
//! Layout: [`protocol`] (sans-IO: request bodies, SSE decoding, delta
//! assembly, sentence cutting), [`tools`] (strict tool-call parsing and the
//! user's HTTP tools), `prompt` (system prompt and messages from a turn),
//! and [`LlmAgent`] here, the IO shell around them.
//!
//! One caller turn, as [`LlmAgent::respond`] runs it:
//! ```text
//! AgentTurn ─▶ messages ─▶ POST /chat/completions (stream) ─▶ deltas
//!     content ─▶ LlmEvent::Sentence as each sentence ends (start TTS now)
//!     tool calls ─▶ parse ─┬─ transfer_to_human ─▶ Handoff (+ summary call)
//!                          ├─ end_call ─────────▶ EndCall
//!                          ├─ lookup / HTTP tool ─▶ tool message ─▶ next round (≤ 3)
//!                          └─ refused ──────────▶ error tool message ─▶ next round
//!     timeout, 429, 5xx, malformed ─▶ Handoff "The AI service was unavailable"
//! ─▶ LlmEvent::Decision (always last, exactly once)
//! ```
//! The sentences, joined by spaces, are the decision's [`Decision::say`].
//! A voice engine forwards them to the call machine as they come:
//! `Sentence(s)` → `Input::Sentence(now, turn.id, s)` (said at once) and
//! `Decision(d)` → `Input::Decision(now, turn.id, d)` (only the words after
//! the sentences are said).
//! After a logged-escalation handoff the follow-up dialogue (channel,
//! details, read-back) is the playbook's, deterministic on purpose: spelled
//! addresses and numbers are no place for a model's creativity.

mod prompt;
pub mod protocol;
pub mod tools;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::{json, Value};
use switchboard_model::{AgentSpec, Contact, HandoffMode, Redacted, Region, Speaker, E164};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::playbook::{handoff_words, summarise, HOLD};
use crate::{
    Agent, AgentTurn, Decision, EndReason, HandoffRequest, PlaybookAgent, Rule, TraceInfo,
    TurnContext, TurnId,
};
use protocol::{
    completion_text, Assembled, ChatMessage, ChatRequest, Sentences, SseDecoder, StreamAssembler,
    StreamProblem, ToolSpec, Usage,
};
pub use tools::{HttpTool, ToolCall, ToolCallError};

/// Where and how to reach the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// Such as `https://api.openai.com/v1`; `chat/completions` is appended.
    pub base_url: Url,
    pub model: String,
    /// Sent as a bearer token.
    pub api_key: Option<Redacted<String>>,
    pub temperature: f32,
    pub max_tokens: Option<u32>,
    /// One model request, from connecting to the end of the stream.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// A whole caller turn, tool rounds included. Keep it below the call
    /// machine's `decision_timeout` so the agent's own fallback wins.
    pub turn_timeout: Duration,
    /// Model requests that may end in tool calls per turn; the next one
    /// must answer in words.
    pub max_tool_rounds: u32,
    /// The handoff summary request; on timeout the extractive summary is used.
    pub summary_timeout: Duration,
    /// Region for phone numbers without a country code (lookup, follow-up).
    pub region: Region,
}

impl LlmConfig {
    /// Defaults for everything but the endpoint and the model.
    pub fn new(base_url: &str, model: impl Into<String>) -> Result<Self, LlmError> {
        let mut base_url = Url::parse(base_url).map_err(|e| LlmError::InvalidConfig {
            key: "llm.base_url",
            reason: e.to_string(),
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(LlmError::InvalidConfig {
                key: "llm.base_url",
                reason: "must be an http or https URL".into(),
            });
        }
        // `join` replaces the last segment unless the path ends in '/'.
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        let model = model.into();
        if model.trim().is_empty() {
            return Err(LlmError::InvalidConfig {
                key: "llm.model",
                reason: "must not be empty".into(),
            });
        }
        Ok(Self {
            base_url,
            model,
            api_key: None,
            temperature: 0.3,
            max_tokens: Some(300),
            timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(3),
            turn_timeout: Duration::from_secs(7),
            max_tool_rounds: 3,
            summary_timeout: Duration::from_secs(2),
            region: Region::default(),
        })
    }

    /// A client for these settings; share one per process (it pools
    /// connections).
    pub fn client(&self) -> Result<reqwest::Client, LlmError> {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(LlmError::Client)
    }

    fn completions_url(&self) -> Result<Url, LlmError> {
        self.base_url
            .join("chat/completions")
            .map_err(|e| LlmError::InvalidConfig {
                key: "llm.base_url",
                reason: e.to_string(),
            })
    }
}

/// Why the model could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    #[error("invalid setting {key}: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    #[error("could not build the http client")]
    Client(#[source] reqwest::Error),
    #[error("the AI service did not answer in time")]
    Timeout,
    #[error("could not reach the AI service")]
    Unreachable(#[source] reqwest::Error),
    #[error("the AI service is rate limiting requests")]
    RateLimited,
    #[error("the AI service failed: {status}")]
    Server { status: u16, body: String },
    #[error("the AI service refused the request: {status} {body}")]
    Rejected { status: u16, body: String },
    #[error("the AI service sent an unusable answer: {what}")]
    Malformed { what: String },
    #[error("the model kept calling tools")]
    TooManyToolRounds,
}

impl LlmError {
    /// Whether trying again later may help (outages, limits, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::Timeout
                | LlmError::Unreachable(_)
                | LlmError::RateLimited
                | LlmError::Server { .. }
        )
    }
}

/// The caller's record, for `lookup_contact`.
pub trait ContactLookup: Send + Sync {
    fn lookup<'a>(
        &'a self,
        phone: &'a E164,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Contact>, LookupError>> + Send + 'a>>;
}

/// The directory behind [`ContactLookup`] failed.
#[derive(Debug, thiserror::Error)]
#[error("contact lookup failed")]
pub struct LookupError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What [`LlmAgent::respond`] yields.
// One decision per turn, a handful of sentences: boxing would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// A complete sentence of the answer: synthesise it now.
    Sentence(String),
    /// The decision for the turn; always the last event.
    Decision(Decision),
}

/// What the model was asked and did during a turn, for the Inbox.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct LlmTrace {
    pub model: String,
    /// The prompt as last sent: system, history, this turn, tool exchanges.
    pub messages: Vec<Value>,
    /// Everything the model said this turn.
    pub response: String,
    pub rounds: Vec<RoundTrace>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolTrace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryTrace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One model request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundTrace {
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub ignored_lines: u32,
}

/// One tool call: what the model asked and what it got back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolTrace {
    pub name: String,
    /// Parsed when they were JSON, the raw text otherwise.
    pub arguments: Value,
    pub result: Value,
    pub ok: bool,
    pub latency_ms: u64,
}

/// The handoff summary request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryTrace {
    /// "llm", or "extractive" when the model could not be used.
    pub source: &'static str,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

const UNAVAILABLE_REASON: &str = "The AI service was unavailable";
const UNAVAILABLE_APOLOGY: &str = "I'm sorry, I'm having trouble right now.";
const DEFAULT_FAREWELL: &str = "Thanks for calling. Goodbye!";

/// The LLM agent of one call. Build one per call with a shared client.
pub struct LlmAgent {
    config: LlmConfig,
    client: reqwest::Client,
    system_prompt: String,
    mode: HandoffMode,
    http_tools: Vec<HttpTool>,
    contacts: Option<Arc<dyn ContactLookup>>,
    /// Runs the follow-up dialogue once the call is a logged escalation.
    playbook: PlaybookAgent,
    phase: Phase,
    /// The phase the last decision leads to, kept until the call machine
    /// confirms it acted on that decision ([`AgentTurn::last_applied`]).
    tentative: Option<Tentative>,
}

#[derive(Debug, Clone)]
struct Tentative {
    turn: TurnId,
    phase: Phase,
    /// The handoff whose follow-up dialogue starts.
    escalate: Option<HandoffRequest>,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Talking,
    Transferring,
    Escalating,
    Ended { reason: EndReason, farewell: String },
}

impl std::fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmAgent")
            .field("model", &self.config.model)
            .field("phase", &self.phase)
            .field("tools", &self.http_tools.len())
            .finish_non_exhaustive()
    }
}

impl LlmAgent {
    /// An agent for a call from `caller_id`.
    pub fn new(
        client: reqwest::Client,
        config: LlmConfig,
        spec: &AgentSpec,
        caller_id: Option<&E164>,
    ) -> Self {
        let playbook_config = crate::PlaybookConfig {
            region: config.region,
            ..crate::PlaybookConfig::default()
        };
        Self {
            system_prompt: prompt::system_prompt(spec, caller_id),
            mode: spec.handoff_mode,
            http_tools: Vec::new(),
            contacts: None,
            playbook: PlaybookAgent::with_config(spec, caller_id, playbook_config),
            phase: Phase::Talking,
            tentative: None,
            config,
            client,
        }
    }

    /// Offer `lookup_contact`, answered by `contacts`.
    pub fn with_contacts(mut self, contacts: Arc<dyn ContactLookup>) -> Self {
        self.contacts = Some(contacts);
        self
    }

    /// Offer the agent's own HTTP tools.
    pub fn with_tools(mut self, tools: Vec<HttpTool>) -> Self {
        self.http_tools = tools;
        self
    }

    pub fn system_prompt(&self) -> &str {
        &self.system_prompt
    }

    /// Answer a turn: sentences as soon as each is complete, then the
    /// decision. Dropping the stream cancels the requests.
    pub fn respond<'a>(&'a mut self, turn: &'a AgentTurn) -> Responding<'a> {
        let (tx, rx) = mpsc::unbounded_channel();
        Responding {
            sentences: rx,
            run: Some(Box::pin(self.run(turn, tx))),
            decision: None,
        }
    }

    /// Answer a turn without streaming: only the decision.
    pub async fn decide(&mut self, turn: &AgentTurn) -> Decision {
        let (tx, _rx) = mpsc::unbounded_channel();
        self.run(turn, tx).await
    }

    async fn run(&mut self, turn: &AgentTurn, out: mpsc::UnboundedSender<String>) -> Decision {
        let mut speech = Speech {
            out,
            spoken: Vec::new(),
            cutter: Sentences::default(),
        };
        if let Some(next) = self.tentative.take() {
            // A decision the machine dropped must not leave us transferring
            // or ended while the caller is still talking to us.
            if turn.last_applied == Some(next.turn) {
                if let Some(handoff) = &next.escalate {
                    self.playbook.fall_back_to_escalation(handoff);
                }
                self.phase = next.phase;
            }
        }
        if let Some(event) = &turn.event {
            self.playbook.fall_back_to_escalation(event.handoff());
            if !matches!(self.phase, Phase::Ended { .. }) {
                self.phase = Phase::Escalating;
            }
        }
        match self.phase.clone() {
            Phase::Talking => self.talk(turn, &mut speech).await,
            Phase::Escalating => self.follow_up(turn, &mut speech).await,
            Phase::Transferring => {
                speech.say(HOLD);
                Decision::Reply {
                    say: speech.text(),
                    trace: TraceInfo::new(
                        Rule::AwaitingTransfer,
                        "a live transfer is under way",
                        turn.now,
                    ),
                }
            }
            Phase::Ended { reason, farewell } => {
                speech.say(&farewell);
                Decision::EndCall {
                    reason,
                    farewell,
                    trace: TraceInfo::new(Rule::Ended, "the call has already ended", turn.now),
                }
            }
        }
    }

    async fn talk(&mut self, turn: &AgentTurn, speech: &mut Speech) -> Decision {
        let deadline = Instant::now() + self.config.turn_timeout;
        let mut messages = prompt::messages(&self.system_prompt, turn);
        let tools = tools::specs(&self.http_tools, self.contacts.is_some());
        let mut trace = LlmTrace {
            model: self.config.model.clone(),
            ..LlmTrace::default()
        };
        for round in 0..=self.config.max_tool_rounds {
            let allow_tools = round < self.config.max_tool_rounds;
            let started = Instant::now();
            let mut first_token = None;
            let result = self
                .stream_round(
                    &messages,
                    &tools,
                    allow_tools,
                    deadline,
                    speech,
                    &mut first_token,
                )
                .await;
            let assembled = match result {
                Ok(assembled) => assembled,
                Err(error) => {
                    trace.messages = messages.iter().map(ChatMessage::to_json).collect();
                    return self.unavailable(error, turn, speech, trace);
                }
            };
            trace.rounds.push(RoundTrace {
                latency_ms: ms(started.elapsed()),
                first_token_ms: first_token.map(|t: Instant| ms(t - started)),
                finish_reason: assembled.finish_reason.clone(),
                ignored_lines: assembled.ignored_lines,
            });
            if let Some(usage) = assembled.usage {
                trace.usage.get_or_insert_with(Usage::default).add(usage);
            }
            if !assembled.content.is_empty() {
                if !trace.response.is_empty() {
                    trace.response.push(' ');
                }
                trace.response.push_str(assembled.content.trim());
            }
            speech.flush();
            if assembled.tool_calls.is_empty() {
                trace.messages = messages.iter().map(ChatMessage::to_json).collect();
                return Decision::Reply {
                    say: speech.text(),
                    trace: llm_trace(Rule::LlmReply, "the model answered", turn, trace),
                };
            }
            messages.push(ChatMessage::Assistant {
                content: assembled.content.clone(),
                tool_calls: assembled.tool_calls.clone(),
            });
            for call in &assembled.tool_calls {
                let arguments = serde_json::from_str(&call.arguments)
                    .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                let parsed = tools::parse(
                    &call.name,
                    &call.arguments,
                    &self.http_tools,
                    self.contacts.is_some(),
                );
                let started = Instant::now();
                let (result, ok) = match parsed {
                    Err(error) => (tools::error_message(&error), false),
                    Ok(ToolCall::TransferToHuman { reason }) => {
                        trace.tool_calls.push(ToolTrace {
                            name: call.name.clone(),
                            arguments,
                            result: json!("handing off"),
                            ok: true,
                            latency_ms: 0,
                        });
                        trace.messages = messages.iter().map(ChatMessage::to_json).collect();
                        return self.hand_off(reason, turn, speech, trace, deadline).await;
                    }
                    Ok(ToolCall::EndCall { reason }) => {
                        trace.tool_calls.push(ToolTrace {
                            name: call.name.clone(),
                            arguments,
                            result: json!("ending the call"),
                            ok: true,
                            latency_ms: 0,
                        });
                        trace.messages = messages.iter().map(ChatMessage::to_json).collect();
                        return self.end_call(reason, turn, speech, trace);
                    }
                    Ok(ToolCall::LookupContact { phone }) => self.lookup(&phone, deadline).await,
                    Ok(ToolCall::Http { index, args }) => {
                        self.call_http(index, args, deadline).await
                    }
                };
                trace.tool_calls.push(ToolTrace {
                    name: call.name.clone(),
                    arguments,
                    result: serde_json::from_str(&result).unwrap_or(Value::String(result.clone())),
                    ok,
                    latency_ms: ms(started.elapsed()),
                });
                messages.push(ChatMessage::Tool {
                    call_id: call.id.clone(),
                    content: result,
                });
            }
        }
        trace.messages = messages.iter().map(ChatMessage::to_json).collect();
        self.unavailable(LlmError::TooManyToolRounds, turn, speech, trace)
    }

    /// One streamed request; content is cut into sentences as it arrives.
    async fn stream_round(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        allow_tools: bool,
        deadline: Instant,
        speech: &mut Speech,
        first_token: &mut Option<Instant>,
    ) -> Result<Assembled, LlmError> {
        let body = ChatRequest {
            model: &self.config.model,
            temperature: self.config.temperature,
            max_tokens: self.config.max_tokens,
            messages,
            tools,
            allow_tools,
            stream: true,
        }
        .body();
        let response = self.post(&body, self.config.timeout, deadline).await?;
        let mut bytes = response.bytes_stream();
        let mut sse = SseDecoder::default();
        let mut assembler = StreamAssembler::default();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, bytes.next()).await {
                Err(_) => return Err(LlmError::Timeout),
                Ok(None) => break,
                Ok(Some(Err(e))) if e.is_timeout() => return Err(LlmError::Timeout),
                Ok(Some(Err(e))) => return Err(LlmError::Unreachable(e)),
                Ok(Some(Ok(chunk))) => chunk,
            };
            for data in sse.push(&chunk) {
                if let Some(text) = assembler.push(&data) {
                    first_token.get_or_insert_with(Instant::now);
                    speech.push(&text);
                }
            }
            if assembler.is_done() {
                break;
            }
        }
        if let Some(data) = sse.finish() {
            if let Some(text) = assembler.push(&data) {
                speech.push(&text);
            }
        }
        assembler.finish().map_err(|problem| match problem {
            StreamProblem::Error(what) => LlmError::Malformed {
                what: format!("error in the stream: {what}"),
            },
            StreamProblem::Empty { ignored_lines } => LlmError::Malformed {
                what: format!("no content and no tool call ({ignored_lines} unreadable lines)"),
            },
        })
    }

    async fn post(
        &self,
        body: &Value,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<reqwest::Response, LlmError> {
        let timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        let mut request = self
            .client
            .post(self.config.completions_url()?)
            .timeout(timeout)
            .json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Err(LlmError::Timeout),
            Ok(Err(e)) if e.is_timeout() => return Err(LlmError::Timeout),
            Ok(Err(e)) => return Err(LlmError::Unreachable(e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = tokio::time::timeout_at(deadline, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => LlmError::RateLimited,
            s if s.is_server_error() => LlmError::Server {
                status: s.as_u16(),
                body,
            },
            s => LlmError::Rejected {
                status: s.as_u16(),
                body,
            },
        })
    }

    async fn lookup(&self, phone: &str, deadline: Instant) -> (String, bool) {
        let Some(contacts) = &self.contacts else {
            return (tools::error_message("no contact directory"), false);
        };
        let Ok(number) = E164::parse(phone, self.config.region) else {
            return (
                tools::error_message(format!("\"{phone}\" is not a phone number")),
                false,
            );
        };
        match tokio::time::timeout_at(deadline, contacts.lookup(&number)).await {
            Err(_) => (
                tools::error_message("the directory did not answer in time"),
                false,
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "contact lookup failed");
                (tools::error_message("the directory is unavailable"), false)
            }
            Ok(Ok(None)) => (json!({ "found": false }).to_string(), true),
            Ok(Ok(Some(contact))) => (
                json!({
                    "found": true,
                    "name": contact.name,
                    "email": contact.email,
                    "phone": contact.phone.as_str(),
                })
                .to_string(),
                true,
            ),
        }
    }

    async fn call_http(
        &self,
        index: usize,
        args: serde_json::Map<String, Value>,
        deadline: Instant,
    ) -> (String, bool) {
        let Some(tool) = self.http_tools.get(index) else {
            return (tools::error_message("no such tool"), false);
        };
        let timeout = tool
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let mut request = self
            .client
            .request(tool.method.clone(), tool.url.clone())
            .timeout(timeout);
        request = if matches!(tool.method, Method::GET | Method::DELETE | Method::HEAD) {
            let query: Vec<(String, String)> = args
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), s.clone()),
                    other => (k.clone(), other.to_string()),
                })
                .collect();
            request.query(&query)
        } else {
            request.json(&Value::Object(args))
        };
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => {
                return (
                    tools::error_message("the tool did not answer in time"),
                    false,
                )
            }
            Ok(Err(e)) if e.is_timeout() => {
                return (
                    tools::error_message("the tool did not answer in time"),
                    false,
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(tool = %tool.name, error = %e, "http tool failed");
                return (tools::error_message("the tool could not be reached"), false);
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let text = tokio::time::timeout_at(deadline, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let text: String = text.chars().take(4000).collect();
        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        (
            json!({ "status": status, "body": body }).to_string(),
            (200..300).contains(&status),
        )
    }

    async fn hand_off(
        &mut self,
        reason: String,
        turn: &AgentTurn,
        speech: &mut Speech,
        mut trace: LlmTrace,
        deadline: Instant,
    ) -> Decision {
        let reason = if reason.is_empty() {
            "The caller asked for a person".to_string()
        } else {
            reason
        };
        match (self.mode, speech.is_empty()) {
            (HandoffMode::LiveTransfer, false) => speech.say(HOLD),
            (mode, _) => speech.say(&handoff_words(mode)),
        }
        let follow_up = match self.mode {
            HandoffMode::LiveTransfer => "live transfer to a person",
            HandoffMode::LoggedEscalation => "not given yet",
        };
        let (summary, summary_trace) = self.summarise(turn, &reason, follow_up, deadline).await;
        trace.summary = Some(summary_trace);
        let handoff = HandoffRequest {
            reason: reason.clone(),
            summary,
            mode: self.mode,
        };
        self.enter_handoff(turn, &handoff);
        Decision::Handoff {
            handoff,
            say: speech.text(),
            trace: llm_trace(
                Rule::LlmHandoff,
                format!("the model handed off: {reason}"),
                turn,
                trace,
            ),
        }
    }

    fn enter_handoff(&mut self, turn: &AgentTurn, handoff: &HandoffRequest) {
        self.tentative = Some(match handoff.mode {
            HandoffMode::LiveTransfer => Tentative {
                turn: turn.id,
                phase: Phase::Transferring,
                escalate: None,
            },
            HandoffMode::LoggedEscalation => Tentative {
                turn: turn.id,
                phase: Phase::Escalating,
                escalate: Some(handoff.clone()),
            },
        });
    }

    fn end(&mut self, turn: &AgentTurn, reason: EndReason, farewell: String) {
        self.tentative = Some(Tentative {
            turn: turn.id,
            phase: Phase::Ended { reason, farewell },
            escalate: None,
        });
    }

    fn end_call(
        &mut self,
        reason: String,
        turn: &AgentTurn,
        speech: &mut Speech,
        trace: LlmTrace,
    ) -> Decision {
        if speech.is_empty() {
            speech.say(DEFAULT_FAREWELL);
        }
        let farewell = speech.text();
        self.end(turn, EndReason::CallerDone, farewell.clone());
        Decision::EndCall {
            reason: EndReason::CallerDone,
            farewell,
            trace: llm_trace(
                Rule::LlmEndCall,
                format!("the model ended the call: {reason}"),
                turn,
                trace,
            ),
        }
    }

    /// The model could not be used: hand off the way the playbook does.
    fn unavailable(
        &mut self,
        error: LlmError,
        turn: &AgentTurn,
        speech: &mut Speech,
        mut trace: LlmTrace,
    ) -> Decision {
        tracing::warn!(error = %error, model = %self.config.model, "LLM unavailable; handing off");
        trace.error = Some(error_chain(&error));
        speech.discard_partial();
        speech.say(UNAVAILABLE_APOLOGY);
        speech.say(&handoff_words(self.mode));
        let follow_up = match self.mode {
            HandoffMode::LiveTransfer => "live transfer to a person",
            HandoffMode::LoggedEscalation => "not given yet",
        };
        let handoff = HandoffRequest {
            reason: UNAVAILABLE_REASON.into(),
            summary: summarise(
                first_caller_line(turn).as_deref(),
                UNAVAILABLE_REASON,
                follow_up,
            ),
            mode: self.mode,
        };
        self.enter_handoff(turn, &handoff);
        Decision::Handoff {
            handoff,
            say: speech.text(),
            trace: llm_trace(
                Rule::LlmUnavailable,
                format!("the model could not be used ({error}); handed off"),
                turn,
                trace,
            ),
        }
    }

    /// The follow-up dialogue of a logged escalation, by the playbook; the
    /// final handoff gets the model's summary.
    async fn follow_up(&mut self, turn: &AgentTurn, speech: &mut Speech) -> Decision {
        let history = turn.said();
        let decision = self.playbook.respond(&TurnContext {
            history: &history,
            utterance: &turn.utterance,
            dtmf: turn.dtmf.as_deref(),
            now: turn.now,
        });
        speech.say(decision.say());
        match decision {
            Decision::EndCall {
                reason:
                    EndReason::Escalated {
                        mut handoff,
                        follow_up,
                    },
                farewell,
                mut trace,
            } => {
                let captured = follow_up
                    .as_ref()
                    .map_or_else(|| "none captured".to_string(), ToString::to_string);
                let deadline = Instant::now() + self.config.summary_timeout;
                let (summary, summary_trace) = self
                    .summarise(turn, &handoff.reason, &captured, deadline)
                    .await;
                handoff.summary = summary;
                trace.llm = Some(Box::new(LlmTrace {
                    model: self.config.model.clone(),
                    summary: Some(summary_trace),
                    ..LlmTrace::default()
                }));
                let reason = EndReason::Escalated { handoff, follow_up };
                self.end(turn, reason.clone(), farewell.clone());
                Decision::EndCall {
                    reason,
                    farewell,
                    trace,
                }
            }
            other => other,
        }
    }

    /// A two-sentence summary by the model, ending with the follow-up;
    /// the extractive one when the model cannot be used by `deadline` (the
    /// turn's: the caller is waiting) or within the summary timeout.
    async fn summarise(
        &self,
        turn: &AgentTurn,
        reason: &str,
        follow_up: &str,
        deadline: Instant,
    ) -> (String, SummaryTrace) {
        let started = Instant::now();
        let extractive = summarise(first_caller_line(turn).as_deref(), reason, follow_up);
        let messages = prompt::summary_messages(turn, reason);
        let body = ChatRequest {
            model: &self.config.model,
            temperature: 0.0,
            max_tokens: Some(120),
            messages: &messages,
            tools: &[],
            allow_tools: false,
            stream: false,
        }
        .body();
        let deadline = deadline.min(started + self.config.summary_timeout);
        let result = async {
            let response = self
                .post(&body, self.config.summary_timeout, deadline)
                .await?;
            let json = tokio::time::timeout_at(deadline, response.json::<Value>())
                .await
                .map_err(|_| LlmError::Timeout)?
                .map_err(|e| LlmError::Malformed {
                    what: format!("summary: {e}"),
                })?;
            completion_text(&json).ok_or(LlmError::Malformed {
                what: "summary: no text".into(),
            })
        }
        .await;
        match result {
            Ok(text) => (
                format!("{} Preferred follow-up: {follow_up}.", text.trim()),
                SummaryTrace {
                    source: "llm",
                    latency_ms: ms(started.elapsed()),
                    error: None,
                },
            ),
            Err(error) => (
                extractive,
                SummaryTrace {
                    source: "extractive",
                    latency_ms: ms(started.elapsed()),
                    error: Some(error_chain(&error)),
                },
            ),
        }
    }
}

/// The stream [`LlmAgent::respond`] returns.
pub struct Responding<'a> {
    sentences: mpsc::UnboundedReceiver<String>,
    run: Option<Pin<Box<dyn Future<Output = Decision> + Send + 'a>>>,
    decision: Option<Decision>,
}

impl Stream for Responding<'_> {
    type Item = LlmEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LlmEvent>> {
        if let Some(run) = self.run.as_mut() {
            if let Poll::Ready(decision) = run.as_mut().poll(cx) {
                self.run = None;
                self.decision = Some(decision);
            }
        }
        match self.sentences.poll_recv(cx) {
            Poll::Ready(Some(sentence)) => Poll::Ready(Some(LlmEvent::Sentence(sentence))),
            // The sender lives in `run`: closed means the decision is in.
            Poll::Ready(None) => Poll::Ready(self.decision.take().map(LlmEvent::Decision)),
            Poll::Pending if self.run.is_none() => {
                Poll::Ready(self.decision.take().map(LlmEvent::Decision))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The words of a turn's answer, sent out sentence by sentence.
struct Speech {
    out: mpsc::UnboundedSender<String>,
    spoken: Vec<String>,
    cutter: Sentences,
}

impl Speech {
    /// Streamed model text.
    fn push(&mut self, text: &str) {
        for sentence in self.cutter.push(text) {
            self.emit(sentence);
        }
    }

    /// The end of the model's text: its last sentence may lack a full stop.
    fn flush(&mut self) {
        if let Some(rest) = self.cutter.finish() {
            self.emit(rest);
        }
    }

    /// A failed stream: its unfinished sentence is never said.
    fn discard_partial(&mut self) {
        self.cutter = Sentences::default();
    }

    /// Words of our own.
    fn say(&mut self, text: &str) {
        self.flush();
        let mut cutter = Sentences::default();
        let mut sentences = cutter.push(text);
        sentences.extend(cutter.finish());
        for sentence in sentences {
            self.emit(sentence);
        }
    }

    fn emit(&mut self, sentence: String) {
        // The listener may be gone (stream dropped): the words still count.
        let _ = self.out.send(sentence.clone());
        self.spoken.push(sentence);
    }

    fn is_empty(&self) -> bool {
        self.spoken.is_empty()
    }

    fn text(&self) -> String {
        self.spoken.join(" ")
    }
}

fn llm_trace(rule: Rule, why: impl Into<String>, turn: &AgentTurn, trace: LlmTrace) -> TraceInfo {
    let mut info = TraceInfo::new(rule, why, turn.now);
    info.llm = Some(Box::new(trace));
    info
}

fn first_caller_line(turn: &AgentTurn) -> Option<String> {
    turn.history
        .iter()
        .filter(|(speaker, _)| *speaker == Speaker::Caller)
        .map(|(_, text)| text.as_str())
        .chain(std::iter::once(turn.utterance.as_str()))
        .find(|text| !text.trim().is_empty() && !text.starts_with("[keys"))
        .map(str::to_string)
}

/// "could not reach the AI service: connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
