//! The records Switchboard keeps, and the input forms they are built from.
//!
//! Each `*Input` is what arrives from the API, the CLI or a CSV row: plain
//! strings, deserialised strictly (unknown fields refused). `validate` turns it
//! into the checked `*Spec` that the store accepts, or a [`ModelError`] naming
//! the field.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    AgentId, ContactId, HandoffId, ModelError, NumberId, Region, SessionId, Timestamp, TokenId,
    TraceStepId, TrunkId, TurnId, UserId, E164,
};

/// A closed set of lowercase words, (de)serialised as those words.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ModelError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim() {
                    $($word => Ok($name::$variant),)+
                    other => Err(ModelError::invalid(
                        stringify!($name),
                        format!("`{other}` is not one of: {}", [$($word),+].join(", ")),
                    )),
                }
            }
        }
    };
}

word_enum!(
    /// How a call reaches a human.
    HandoffMode { LiveTransfer => "live_transfer", LoggedEscalation => "logged_escalation" }
);
word_enum!(Direction { Inbound => "inbound", Outbound => "outbound" });
word_enum!(SessionStatus { Ringing => "ringing", Active => "active", Ended => "ended" });
word_enum!(
    /// How a session ended, as the Inbox filters it.
    Outcome {
        Resolved => "resolved",
        LiveTransfer => "live_transfer",
        LoggedEscalation => "logged_escalation",
        Abandoned => "abandoned",
        Failed => "failed",
    }
);
word_enum!(Speaker { Caller => "caller", Ai => "ai", Rep => "rep", System => "system" });
word_enum!(Transport { Udp => "udp", Tcp => "tcp", Tls => "tls" });
word_enum!(
    /// How a live transfer leaves a trunk: `bridge` dials the target and
    /// relays media through us (we keep the recording); `refer` first asks
    /// the carrier to connect the caller (SIP REFER) and falls back to a
    /// bridge when the carrier refuses.
    TrunkTransfer { Bridge => "bridge", Refer => "refer" }
);

// reason: word_enum! cannot put `#[default]` on a variant.
#[allow(clippy::derivable_impls)]
impl Default for TrunkTransfer {
    fn default() -> Self {
        TrunkTransfer::Bridge
    }
}
word_enum!(PreferredChannel { Email => "email", Sms => "sms", Callback => "callback" });
word_enum!(SttProvider { Offline => "offline", Deepgram => "deepgram", Openai => "openai" });
word_enum!(TtsProvider { Offline => "offline", Openai => "openai", Elevenlabs => "elevenlabs" });
word_enum!(
    /// The agent brain: the offline playbook or an OpenAI-compatible LLM.
    Brain { Playbook => "playbook", Llm => "llm" }
);
word_enum!(
    /// Delivery state of a handoff to Salesforce.
    HandoffStatus {
        Pending => "pending",
        Delivering => "delivering",
        Delivered => "delivered",
        NotConfigured => "not_configured",
        DeadLetter => "dead_letter",
    }
);

// ---------------------------------------------------------------------------
// Agents

/// The names of the Salesforce routing attributes (Channel Variable Names of
/// hidden pre-chat fields) under which a handoff sends its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingAttributeNames {
    /// Carries our session id. Set it to `OpencxSessionId` for orgs set up for OpenCX.
    pub session_id: String,
    pub caller_phone: String,
    pub handoff_reason: String,
    pub handoff_mode: String,
    pub preferred_channel: String,
}

impl Default for RoutingAttributeNames {
    fn default() -> Self {
        Self {
            session_id: "SessionId".into(),
            caller_phone: "CallerPhone".into(),
            handoff_reason: "HandoffReason".into(),
            handoff_mode: "HandoffMode".into(),
            preferred_channel: "PreferredChannel".into(),
        }
    }
}

impl RoutingAttributeNames {
    pub fn validate(&self) -> Result<(), ModelError> {
        let fields = [
            ("session_id", &self.session_id),
            ("caller_phone", &self.caller_phone),
            ("handoff_reason", &self.handoff_reason),
            ("handoff_mode", &self.handoff_mode),
            ("preferred_channel", &self.preferred_channel),
        ];
        for (field, value) in fields {
            validate_api_name(value).map_err(|reason| {
                ModelError::invalid(format!("routing_attributes.{field}"), reason)
            })?;
        }
        for (i, (a, x)) in fields.iter().enumerate() {
            if let Some((b, _)) = fields[i + 1..].iter().find(|(_, y)| y == x) {
                return Err(ModelError::invalid(
                    format!("routing_attributes.{b}"),
                    format!("`{x}` is already used by routing_attributes.{a}; each attribute needs its own name"),
                ));
            }
        }
        Ok(())
    }
}

/// A Salesforce API name: a letter first, then letters, digits and single
/// underscores, not ending in an underscore, at most 40 characters.
pub fn validate_api_name(value: &str) -> Result<(), String> {
    let ok_chars = value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if value.is_empty()
        || value.len() > 40
        || !value.starts_with(|c: char| c.is_ascii_alphabetic())
        || !ok_chars
        || value.ends_with('_')
        || value.contains("__")
    {
        return Err(format!(
            "`{value}` is not a Salesforce API name: start with a letter, use letters, digits and single underscores, at most 40 characters (such as OpencxSessionId)"
        ));
    }
    Ok(())
}

/// Where a live transfer dials: a phone number through the trunk, or a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffTarget {
    Phone(E164),
    Sip(String),
}

impl HandoffTarget {
    pub fn parse(input: &str, region: Region) -> Result<Self, ModelError> {
        let s = input.trim();
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("sip:") || lower.starts_with("sips:") {
            let rest = &s[s.find(':').map_or(0, |i| i + 1)..];
            let host = rest.rsplit('@').next().unwrap_or_default();
            if rest.is_empty()
                || host.is_empty()
                || s.len() > 256
                || s.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ModelError::invalid(
                    "handoff_number",
                    format!("`{s}` is not a SIP URI such as sip:support@pbx.example.com"),
                ));
            }
            return Ok(HandoffTarget::Sip(s.to_string()));
        }
        E164::parse(s, region)
            .map(HandoffTarget::Phone)
            .map_err(|e| match e {
                ModelError::Invalid { reason, .. } => ModelError::invalid(
                    "handoff_number",
                    format!("{reason} (or give a SIP URI such as sip:support@pbx.example.com)"),
                ),
            })
    }

    pub fn as_str(&self) -> &str {
        match self {
            HandoffTarget::Phone(n) => n.as_str(),
            HandoffTarget::Sip(uri) => uri,
        }
    }
}

impl fmt::Display for HandoffTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for HandoffTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An AI phone agent.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Agent {
    pub id: AgentId,
    #[serde(flatten)]
    pub spec: AgentSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A validated agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgentSpec {
    pub name: String,
    /// BCP 47 language tag, such as `en-US`.
    pub language: String,
    pub greeting: String,
    /// Instructions and knowledge for the brain.
    pub instructions: String,
    pub voice: String,
    pub stt_provider: SttProvider,
    pub tts_provider: TtsProvider,
    pub brain: Brain,
    pub handoff_mode: HandoffMode,
    /// E.164 number or SIP URI dialled on live transfer.
    #[schema(value_type = Option<String>, example = "+14155550123")]
    pub handoff_number: Option<HandoffTarget>,
    pub handoff_phrases: Vec<String>,
    pub routing_attributes: RoutingAttributeNames,
    /// IANA time zone used for transcript timestamps, such as `America/New_York`.
    pub time_zone: String,
    pub max_concurrent_calls: u32,
    /// HTTP tools the LLM brain may call (ignored by the playbook).
    pub tools: Vec<AgentTool>,
}

/// A user-defined HTTP tool offered to the LLM brain: the model calls it by
/// `name` with arguments matching `parameters` (a JSON Schema object), and
/// Switchboard sends them to `url` (`GET` as query parameters, `POST` as a
/// JSON body) and gives the model the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTool {
    /// 1–64 letters, digits, `_` or `-`; not a built-in tool's name.
    pub name: String,
    /// What the tool does, for the model.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments: `{"type": "object", "properties": {…}}`.
    #[schema(value_type = Object)]
    #[serde(default = "empty_object_schema")]
    pub parameters: serde_json::Value,
    /// `https://…` (plain `http://` too: tools often run beside the server).
    pub url: String,
    /// `GET` or `POST` (default `POST`).
    #[serde(default = "default_tool_method")]
    pub method: String,
    /// How long a call may take before the model is told it failed.
    #[serde(default = "default_tool_timeout_ms")]
    pub timeout_ms: u32,
}

fn empty_object_schema() -> serde_json::Value {
    serde_json::json!({ "type": "object", "properties": {} })
}

fn default_tool_method() -> String {
    "POST".into()
}

fn default_tool_timeout_ms() -> u32 {
    3000
}

/// Names of the tools every LLM agent has.
pub const BUILT_IN_TOOLS: &[&str] = &["transfer_to_human", "end_call", "lookup_contact"];
/// Tools one agent may declare.
pub const MAX_AGENT_TOOLS: usize = 16;

fn validate_tools(tools: Vec<AgentTool>) -> Result<Vec<AgentTool>, ModelError> {
    if tools.len() > MAX_AGENT_TOOLS {
        return Err(ModelError::invalid(
            "tools",
            format!("at most {MAX_AGENT_TOOLS} tools per agent"),
        ));
    }
    let mut out: Vec<AgentTool> = Vec::with_capacity(tools.len());
    for (i, mut t) in tools.into_iter().enumerate() {
        let field = |f: &str| format!("tools[{i}].{f}");
        t.name = t.name.trim().to_string();
        let name_ok = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(ModelError::invalid(
                field("name"),
                format!("`{}` must be 1 to 64 letters, digits, '_' or '-'", t.name),
            ));
        }
        if BUILT_IN_TOOLS.contains(&t.name.as_str()) {
            return Err(ModelError::invalid(
                field("name"),
                format!("`{}` is a built-in tool", t.name),
            ));
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(ModelError::invalid(
                field("name"),
                format!("`{}` is declared twice", t.name),
            ));
        }
        t.description = text(&field("description"), &t.description, 1000)?;
        let schema_ok = t.parameters.as_object().is_some_and(|o| {
            o.get("type").is_none_or(|ty| ty == "object")
                && o.get("properties").is_none_or(|p| p.is_object())
        });
        if !schema_ok {
            return Err(ModelError::invalid(
                field("parameters"),
                "must be a JSON Schema object such as {\"type\": \"object\", \"properties\": {\"order_id\": {\"type\": \"string\"}}}",
            ));
        }
        t.url = t.url.trim().to_string();
        let url_ok = (t.url.starts_with("https://") || t.url.starts_with("http://"))
            && t.url
                .split("://")
                .nth(1)
                .is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
            && !t.url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !url_ok {
            return Err(ModelError::invalid(
                field("url"),
                format!("`{}` must be an absolute http:// or https:// URL", t.url),
            ));
        }
        t.method = t.method.trim().to_ascii_uppercase();
        if !matches!(t.method.as_str(), "GET" | "POST") {
            return Err(ModelError::invalid(field("method"), "must be GET or POST"));
        }
        if !(100..=30_000).contains(&t.timeout_ms) {
            return Err(ModelError::invalid(
                field("timeout_ms"),
                "must be between 100 and 30000 (the caller is waiting)",
            ));
        }
        out.push(t);
    }
    Ok(out)
}

pub const DEFAULT_GREETING: &str = "Hello, thanks for calling. How can I help you today?";
pub const DEFAULT_HANDOFF_PHRASES: &[&str] = &[
    "speak with a person",
    "speak to a person",
    "talk to a human",
    "talk to someone",
    "representative",
    "agent",
    "operator",
    "manager",
];

/// An agent as the API, the CLI and the dashboard submit it. Every field but
/// `name` has a default; `PUT` replaces the whole configuration.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentInput {
    pub name: String,
    pub language: Option<String>,
    pub greeting: Option<String>,
    pub instructions: Option<String>,
    pub voice: Option<String>,
    pub stt_provider: Option<SttProvider>,
    pub tts_provider: Option<TtsProvider>,
    pub brain: Option<Brain>,
    pub handoff_mode: Option<HandoffMode>,
    /// E.164 number (or SIP URI) dialled on live transfer.
    pub handoff_number: Option<String>,
    pub handoff_phrases: Option<Vec<String>>,
    pub routing_attributes: Option<RoutingAttributeNames>,
    pub time_zone: Option<String>,
    pub max_concurrent_calls: Option<u32>,
    /// HTTP tools for the LLM brain.
    pub tools: Option<Vec<AgentTool>>,
}

impl AgentInput {
    pub fn validate(self, region: Region) -> Result<AgentSpec, ModelError> {
        let name = required_line("name", &self.name, 80)?;
        let language = self.language.unwrap_or_else(|| "en-US".into());
        validate_language(&language)?;
        let greeting = text(
            "greeting",
            self.greeting.as_deref().unwrap_or(DEFAULT_GREETING),
            1000,
        )?;
        if greeting.is_empty() {
            return Err(ModelError::invalid(
                "greeting",
                "must not be empty: it is the first thing callers hear",
            ));
        }
        let instructions = text(
            "instructions",
            self.instructions.as_deref().unwrap_or(""),
            50_000,
        )?;
        let voice = single_line("voice", self.voice.as_deref().unwrap_or("default"), 100)?;
        let handoff_number = match self.handoff_number.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(n) => Some(HandoffTarget::parse(n, region)?),
        };
        let handoff_mode = self.handoff_mode.unwrap_or(HandoffMode::LoggedEscalation);
        if handoff_mode == HandoffMode::LiveTransfer && handoff_number.is_none() {
            return Err(ModelError::invalid(
                "handoff_number",
                "is required when handoff_mode is live_transfer: it is the number the caller is bridged to",
            ));
        }
        let handoff_phrases = match self.handoff_phrases {
            None => DEFAULT_HANDOFF_PHRASES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, p) in list.iter().enumerate() {
                    let p = single_line(&format!("handoff_phrases[{i}]"), p, 100)?;
                    if !p.is_empty() && !out.contains(&p.to_lowercase()) {
                        out.push(p.to_lowercase());
                    }
                }
                out
            }
        };
        let routing_attributes = self.routing_attributes.unwrap_or_default();
        routing_attributes.validate()?;
        let time_zone = self.time_zone.unwrap_or_else(|| "UTC".into());
        validate_time_zone(&time_zone)?;
        let max_concurrent_calls = self.max_concurrent_calls.unwrap_or(10);
        if !(1..=10_000).contains(&max_concurrent_calls) {
            return Err(ModelError::invalid(
                "max_concurrent_calls",
                "must be between 1 and 10000",
            ));
        }
        Ok(AgentSpec {
            name,
            language,
            greeting,
            instructions,
            voice,
            stt_provider: self.stt_provider.unwrap_or(SttProvider::Offline),
            tts_provider: self.tts_provider.unwrap_or(TtsProvider::Offline),
            brain: self.brain.unwrap_or(Brain::Playbook),
            handoff_mode,
            handoff_number,
            handoff_phrases,
            routing_attributes,
            time_zone,
            max_concurrent_calls,
            tools: validate_tools(self.tools.unwrap_or_default())?,
        })
    }
}

impl From<&AgentSpec> for AgentInput {
    fn from(spec: &AgentSpec) -> Self {
        AgentInput {
            name: spec.name.clone(),
            language: Some(spec.language.clone()),
            greeting: Some(spec.greeting.clone()),
            instructions: Some(spec.instructions.clone()),
            voice: Some(spec.voice.clone()),
            stt_provider: Some(spec.stt_provider),
            tts_provider: Some(spec.tts_provider),
            brain: Some(spec.brain),
            handoff_mode: Some(spec.handoff_mode),
            handoff_number: spec.handoff_number.as_ref().map(|t| t.to_string()),
            handoff_phrases: Some(spec.handoff_phrases.clone()),
            routing_attributes: Some(spec.routing_attributes.clone()),
            time_zone: Some(spec.time_zone.clone()),
            max_concurrent_calls: Some(spec.max_concurrent_calls),
            tools: Some(spec.tools.clone()),
        }
    }
}

fn validate_language(tag: &str) -> Result<(), ModelError> {
    let mut parts = tag.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_lowercase()));
    let rest_ok =
        parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if primary_ok && rest_ok {
        Ok(())
    } else {
        Err(ModelError::invalid(
            "language",
            format!("`{tag}` is not a BCP 47 language tag such as en-US"),
        ))
    }
}

pub fn validate_time_zone(tz: &str) -> Result<(), ModelError> {
    tz.parse::<chrono_tz::Tz>().map(|_| ()).map_err(|_| {
        ModelError::invalid(
            "time_zone",
            format!("`{tz}` is not an IANA time zone such as UTC or America/New_York"),
        )
    })
}

/// Trims and checks a one-line field (no control characters).
pub fn single_line(field: &str, value: &str, max: usize) -> Result<String, ModelError> {
    let v = value.trim();
    if v.chars().any(char::is_control) {
        return Err(ModelError::invalid(
            field,
            "must be a single line without control characters",
        ));
    }
    if v.chars().count() > max {
        return Err(ModelError::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(v.to_string())
}

fn required_line(field: &str, value: &str, max: usize) -> Result<String, ModelError> {
    let v = single_line(field, value, max)?;
    if v.is_empty() {
        return Err(ModelError::invalid(field, "is required"));
    }
    Ok(v)
}

/// Multi-line text: newlines and tabs allowed, other control characters not.
fn text(field: &str, value: &str, max: usize) -> Result<String, ModelError> {
    let v = value.trim();
    if v.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ModelError::invalid(field, "contains control characters"));
    }
    if v.chars().count() > max {
        return Err(ModelError::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(v.replace("\r\n", "\n"))
}

// ---------------------------------------------------------------------------
// Phone numbers

/// A phone number we answer, bound to at most one agent.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PhoneNumber {
    pub id: NumberId,
    pub e164: E164,
    pub agent_id: Option<AgentId>,
    pub label: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberInput {
    /// The number in any common form; stored as E.164.
    pub number: String,
    /// The agent (id or name) that answers it.
    pub agent: Option<String>,
    #[serde(default)]
    pub label: String,
}

// ---------------------------------------------------------------------------
// Trunks

/// A SIP trunk (carrier or PBX). Passwords are write-only: the record says
/// only whether one is set.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Trunk {
    pub id: TrunkId,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    #[schema(value_type = Vec<String>)]
    pub allowed_cidrs: Vec<IpNet>,
    pub inbound_username: Option<String>,
    pub inbound_password_set: bool,
    pub outbound_username: Option<String>,
    pub outbound_password_set: bool,
    pub register: bool,
    pub outbound_caller_id: Option<E164>,
    /// How live transfers of calls on this trunk are made.
    pub transfer: TrunkTransfer,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrunkInput {
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    pub inbound_username: Option<String>,
    pub inbound_password: Option<String>,
    pub outbound_username: Option<String>,
    pub outbound_password: Option<String>,
    #[serde(default)]
    pub register: bool,
    pub outbound_caller_id: Option<String>,
    /// `bridge` (default) or `refer`.
    #[serde(default)]
    pub transfer: TrunkTransfer,
}

/// A validated trunk; passwords still in clear, for the store to encrypt.
#[derive(Debug, Clone)]
pub struct TrunkSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub allowed_cidrs: Vec<IpNet>,
    pub inbound_username: Option<String>,
    pub inbound_password: Option<crate::Redacted<String>>,
    pub outbound_username: Option<String>,
    pub outbound_password: Option<crate::Redacted<String>>,
    pub register: bool,
    pub outbound_caller_id: Option<E164>,
    pub transfer: TrunkTransfer,
}

impl TrunkInput {
    pub fn validate(self, region: Region) -> Result<TrunkSpec, ModelError> {
        let name = required_line("name", &self.name, 80)?;
        let host = required_line("host", &self.host, 253)?;
        if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            return Err(ModelError::invalid(
                "host",
                format!("`{host}` is not a host name or IP address"),
            ));
        }
        let transport = self.transport.unwrap_or(Transport::Udp);
        let port = self.port.unwrap_or(if transport == Transport::Tls {
            5061
        } else {
            5060
        });
        if port == 0 {
            return Err(ModelError::invalid("port", "must be between 1 and 65535"));
        }
        let mut allowed_cidrs = Vec::new();
        for (i, c) in self.allowed_cidrs.iter().enumerate() {
            let c = c.trim();
            let net = c
                .parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ModelError::invalid(
                        format!("allowed_cidrs[{i}]"),
                        format!("`{c}` is not an IP address or CIDR such as 203.0.113.0/24"),
                    )
                })?;
            allowed_cidrs.push(net);
        }
        let opt_line = |field: &str, v: Option<String>| -> Result<Option<String>, ModelError> {
            match v {
                None => Ok(None),
                Some(v) => {
                    let v = single_line(field, &v, 128)?;
                    Ok((!v.is_empty()).then_some(v))
                }
            }
        };
        let inbound_username = opt_line("inbound_username", self.inbound_username)?;
        let inbound_password = self.inbound_password.filter(|p| !p.is_empty());
        if inbound_password.is_some() != inbound_username.is_some() {
            return Err(ModelError::invalid(
                "inbound_password",
                "digest credentials need both inbound_username and inbound_password",
            ));
        }
        if allowed_cidrs.is_empty() && inbound_username.is_none() {
            return Err(ModelError::invalid(
                "allowed_cidrs",
                "a trunk must allow at least one source address or require digest credentials (inbound_username/inbound_password), or anyone could place calls",
            ));
        }
        let outbound_username = opt_line("outbound_username", self.outbound_username)?;
        let outbound_password = self.outbound_password.filter(|p| !p.is_empty());
        if self.register && outbound_username.is_none() {
            return Err(ModelError::invalid(
                "register",
                "REGISTER needs outbound_username and outbound_password",
            ));
        }
        let outbound_caller_id = match self.outbound_caller_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(n) => Some(E164::parse(n, region).map_err(|e| e.within("outbound_caller_id"))?),
        };
        Ok(TrunkSpec {
            name,
            host,
            port,
            transport,
            allowed_cidrs,
            inbound_username,
            inbound_password: inbound_password.map(Into::into),
            outbound_username,
            outbound_password: outbound_password.map(Into::into),
            register: self.register,
            outbound_caller_id,
            transfer: self.transfer,
        })
    }
}

// ---------------------------------------------------------------------------
// Contacts

/// A known caller. A call from `phone` gets an authenticated Salesforce identity.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Contact {
    pub id: ContactId,
    pub phone: E164,
    pub name: String,
    pub email: Option<String>,
    /// The contact's id in the CRM; the `sub` of its identity token.
    pub external_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    pub phone: String,
    #[serde(default)]
    pub name: String,
    pub email: Option<String>,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContactSpec {
    pub phone: E164,
    pub name: String,
    pub email: Option<String>,
    pub external_id: Option<String>,
}

impl ContactInput {
    pub fn validate(self, region: Region) -> Result<ContactSpec, ModelError> {
        let phone = E164::parse(&self.phone, region)?;
        let name = single_line("name", &self.name, 200)?;
        let email = match self.email.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => Some(validate_email(e)?),
        };
        let external_id = match self.external_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(x) => Some(single_line("external_id", x, 255)?),
        };
        Ok(ContactSpec {
            phone,
            name,
            email,
            external_id,
        })
    }
}

fn validate_email(e: &str) -> Result<String, ModelError> {
    let bad = || {
        ModelError::invalid(
            "email",
            format!("`{e}` is not an email address such as ana@example.com"),
        )
    };
    let (local, domain) = e.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || e.len() > 254
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || e.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    Ok(e.to_string())
}

// ---------------------------------------------------------------------------
// Sessions, turns, trace steps, handoffs

/// One call (or text call) from start to end.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub agent_id: Option<AgentId>,
    pub direction: Direction,
    /// Caller: E.164 where the network gave one, else the SIP identity.
    pub from: String,
    pub to: String,
    pub contact_id: Option<ContactId>,
    pub status: SessionStatus,
    pub outcome: Option<Outcome>,
    pub end_reason: Option<String>,
    pub started_at: Timestamp,
    pub answered_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Key of the stereo recording in the recording storage (caller left,
    /// AI or rep right); `GET /api/v1/sessions/{id}/recording` serves it.
    pub recording: Option<String>,
}

/// What a new session starts with.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub agent_id: Option<AgentId>,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub contact_id: Option<ContactId>,
    pub started_at: Timestamp,
}

/// One utterance in a session.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Turn {
    pub id: TurnId,
    pub session_id: SessionId,
    /// Position in the session, from 0.
    pub seq: i64,
    pub speaker: Speaker,
    pub text: String,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
}

/// One thing the engine or the brain did during a turn, with its cost.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TraceStep {
    pub id: TraceStepId,
    pub session_id: SessionId,
    pub turn_seq: Option<i64>,
    /// `stt`, `decision`, `tool_call`, `tts`, `latency`, …
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub latency_ms: Option<i64>,
    pub created_at: Timestamp,
}

/// A decision to hand the caller to a human, and its delivery to Salesforce.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Handoff {
    pub id: HandoffId,
    pub session_id: SessionId,
    pub mode: HandoffMode,
    /// What the caller asked for and what the AI could not resolve.
    pub reason: String,
    pub summary: String,
    pub preferred_channel: Option<PreferredChannel>,
    /// The address or number for the preferred channel.
    pub channel_details: Option<String>,
    pub status: HandoffStatus,
    /// How many turns of the session the transcript holds (frozen at handoff).
    pub turn_count: i64,
    /// The Salesforce conversation id (a UUID derived from the session id).
    pub conversation_id: Option<String>,
    pub conversation_created: bool,
    /// Messages Salesforce has acknowledged, of `messages_total`.
    pub messages_acked: i64,
    pub messages_total: Option<i64>,
    /// `authenticated` (known contact) or `unauthenticated`.
    pub identity: Option<String>,
    /// The routing attributes sent, by their Salesforce names.
    #[schema(value_type = Option<Object>)]
    pub routing_attributes: Option<std::collections::BTreeMap<String, String>>,
    pub attempts: i64,
    /// The last failure, with Salesforce's own words when it answered.
    pub last_error: Option<String>,
    pub routed_at: Option<Timestamp>,
    pub estimated_wait_seconds: Option<i64>,
    /// The rep who picked the conversation up.
    pub rep_name: Option<String>,
    pub rep_joined_at: Option<Timestamp>,
    pub closed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

/// A handoff as the API or the voice engine asks for it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffInput {
    /// Defaults to the agent's configured mode.
    pub mode: Option<HandoffMode>,
    pub reason: String,
    /// Defaults to the reason.
    pub summary: Option<String>,
    pub preferred_channel: Option<PreferredChannel>,
    pub channel_details: Option<String>,
    /// End the session with the handoff (logged escalation ends the call).
    #[serde(default)]
    pub end_session: bool,
}

/// A validated handoff request.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffSpec {
    pub mode: HandoffMode,
    pub reason: String,
    pub summary: String,
    pub preferred_channel: Option<PreferredChannel>,
    pub channel_details: Option<String>,
}

impl HandoffInput {
    /// Validates against the agent's default mode.
    pub fn validate(self, default_mode: HandoffMode) -> Result<HandoffSpec, ModelError> {
        let reason = text("reason", &self.reason, 2000)?;
        if reason.is_empty() {
            return Err(ModelError::invalid(
                "reason",
                "is required: say what the caller asked for and what the AI could not resolve",
            ));
        }
        let summary = match self.summary {
            Some(s) => text("summary", &s, 8000)?,
            None => reason.clone(),
        };
        let channel_details = match self.channel_details.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(single_line("channel_details", d, 320)?),
        };
        if channel_details.is_some() && self.preferred_channel.is_none() {
            return Err(ModelError::invalid(
                "preferred_channel",
                "is required when channel_details is given",
            ));
        }
        Ok(HandoffSpec {
            mode: self.mode.unwrap_or(default_mode),
            reason,
            summary,
            preferred_channel: self.preferred_channel,
            channel_details,
        })
    }
}

/// One delivery attempt of a handoff.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HandoffAttempt {
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// `delivered`, `retry`, `dead_letter`, `not_configured`, `released`.
    pub outcome: String,
    pub messages_sent: i64,
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------
// Users, tokens, audit

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub created_at: Timestamp,
}

/// A bearer token for the API. The secret is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// `user:admin`, `token:ci`, `cli`, `system`.
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentInput {
        AgentInput {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn agent_defaults_are_usable() {
        let spec = agent("Support").validate(Region::default()).expect("valid");
        assert_eq!(spec.handoff_mode, HandoffMode::LoggedEscalation);
        assert_eq!(spec.routing_attributes.session_id, "SessionId");
        assert!(spec.handoff_phrases.iter().any(|p| p == "representative"));
    }

    #[test]
    fn live_transfer_needs_a_number() {
        let mut input = agent("Support");
        input.handoff_mode = Some(HandoffMode::LiveTransfer);
        let err = input.clone().validate(Region::default()).unwrap_err();
        assert_eq!(err.field(), "handoff_number");
        input.handoff_number = Some("(415) 555-0123".into());
        let spec = input.validate(Region::default()).expect("valid");
        assert_eq!(
            spec.handoff_number.expect("set").to_string(),
            "+14155550123"
        );
    }

    #[test]
    fn routing_attribute_names_are_checked_and_opencx_works() {
        let mut input = agent("Support");
        input.routing_attributes = Some(RoutingAttributeNames {
            session_id: "OpencxSessionId".into(),
            ..Default::default()
        });
        assert!(input.clone().validate(Region::default()).is_ok());
        input.routing_attributes = Some(RoutingAttributeNames {
            session_id: "Session Id".into(),
            ..Default::default()
        });
        let err = input.clone().validate(Region::default()).unwrap_err();
        assert_eq!(err.field(), "routing_attributes.session_id");
        input.routing_attributes = Some(RoutingAttributeNames {
            caller_phone: "SessionId".into(),
            ..Default::default()
        });
        let err = input.validate(Region::default()).unwrap_err();
        assert_eq!(err.field(), "routing_attributes.caller_phone");
    }

    #[test]
    fn bad_fields_are_named() {
        let mut a = agent("  ");
        assert_eq!(
            a.clone().validate(Region::default()).unwrap_err().field(),
            "name"
        );
        a.name = "x\u{7}".into();
        assert_eq!(
            a.clone().validate(Region::default()).unwrap_err().field(),
            "name"
        );
        a.name = "ok".into();
        a.time_zone = Some("Mars/Olympus".into());
        assert_eq!(
            a.clone().validate(Region::default()).unwrap_err().field(),
            "time_zone"
        );
        a.time_zone = Some("Europe/Paris".into());
        a.language = Some("english".into());
        assert_eq!(
            a.validate(Region::default()).unwrap_err().field(),
            "language"
        );
    }

    #[test]
    fn trunk_must_be_closed_to_strangers() {
        let input = TrunkInput {
            name: "carrier".into(),
            host: "sip.example.com".into(),
            ..Default::default()
        };
        assert_eq!(
            input
                .clone()
                .validate(Region::default())
                .unwrap_err()
                .field(),
            "allowed_cidrs"
        );
        let input = TrunkInput {
            allowed_cidrs: vec!["203.0.113.0/24".into(), "198.51.100.7".into()],
            ..input
        };
        let spec = input.validate(Region::default()).expect("valid");
        assert_eq!(spec.port, 5060);
        assert_eq!(spec.allowed_cidrs[1].to_string(), "198.51.100.7/32");
    }

    #[test]
    fn trunk_transfer_defaults_to_bridge_and_rejects_unknown_words() {
        let base =
            r#""name":"carrier","host":"sip.example.com","allowed_cidrs":["203.0.113.0/24"]"#;
        let input: TrunkInput =
            serde_json::from_str(&format!("{{{base}}}")).expect("old clients still work");
        assert_eq!(input.transfer, TrunkTransfer::Bridge);
        let input: TrunkInput =
            serde_json::from_str(&format!(r#"{{{base},"transfer":"refer"}}"#)).expect("refer");
        let spec = input.validate(Region::default()).expect("valid");
        assert_eq!(spec.transfer, TrunkTransfer::Refer);
        assert!(
            serde_json::from_str::<TrunkInput>(&format!(r#"{{{base},"transfer":"blind"}}"#))
                .is_err()
        );
        assert_eq!(
            "refer".parse::<TrunkTransfer>().ok(),
            Some(TrunkTransfer::Refer)
        );
    }

    #[test]
    fn contact_email_and_phone_checked() {
        let c = ContactInput {
            phone: "415 555 0100".into(),
            name: "Ana".into(),
            email: Some("ana@example".into()),
            external_id: None,
        };
        assert_eq!(
            c.clone().validate(Region::default()).unwrap_err().field(),
            "email"
        );
        let c = ContactInput {
            email: Some("ana@example.com".into()),
            ..c
        };
        assert_eq!(
            c.validate(Region::default()).expect("valid").phone.as_str(),
            "+14155550100"
        );
    }

    #[test]
    fn word_enums_list_choices() {
        let err = "transfer".parse::<HandoffMode>().unwrap_err();
        assert!(
            err.to_string().contains("live_transfer, logged_escalation"),
            "{err}"
        );
    }

    #[test]
    fn agent_tools_are_validated_with_the_field_named() {
        let tool = |name: &str, url: &str| AgentTool {
            name: name.into(),
            description: "Looks up an order".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
            url: url.into(),
            method: "post".into(),
            timeout_ms: 2000,
        };
        let input = |tools: Vec<AgentTool>| AgentInput {
            name: "Tools".into(),
            tools: Some(tools),
            ..Default::default()
        };
        let spec = input(vec![tool("order_status", "https://api.example.com/orders")])
            .validate(Region::default())
            .unwrap();
        assert_eq!(spec.tools[0].method, "POST");
        for (tools, field) in [
            (vec![tool("end_call", "https://x.example")], "tools[0].name"),
            (vec![tool("bad name", "https://x.example")], "tools[0].name"),
            (
                vec![
                    tool("a", "https://x.example"),
                    tool("a", "https://x.example"),
                ],
                "tools[1].name",
            ),
            (vec![tool("a", "ftp://x.example")], "tools[0].url"),
            (vec![tool("a", "https:///nohost")], "tools[0].url"),
            (
                vec![AgentTool {
                    parameters: serde_json::json!([1]),
                    ..tool("a", "https://x.example")
                }],
                "tools[0].parameters",
            ),
            (
                vec![AgentTool {
                    method: "DELETE".into(),
                    ..tool("a", "https://x.example")
                }],
                "tools[0].method",
            ),
            (
                vec![AgentTool {
                    timeout_ms: 60_000,
                    ..tool("a", "https://x.example")
                }],
                "tools[0].timeout_ms",
            ),
        ] {
            match input(tools).validate(Region::default()) {
                Err(ModelError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        // Defaults from JSON: POST, 3 s, an empty object schema.
        let t: AgentTool =
            serde_json::from_str(r#"{"name":"x","url":"http://127.0.0.1:9/x"}"#).unwrap();
        assert_eq!((t.method.as_str(), t.timeout_ms), ("POST", 3000));
        assert!(t.parameters.is_object());
    }
}
