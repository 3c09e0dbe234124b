//! The dashboard: server-rendered pages (maud), one stylesheet and a few
//! lines of script inlined in each page, so nothing is fetched from anywhere
//! and there is no public asset route.
//!
//! Forms post back to the same resources; validation errors re-render the
//! form with the submitted values and the message next to the field.
//!
//! Live updates: the Inbox and a live session's page render the version of
//! what they show (`data-version`) and open `GET /inbox/events`, a
//! server-sent event stream that polls the store once a second and says
//! `change` when that version moves; the page then re-fetches itself and
//! swaps the elements marked `data-live` (space for them is always reserved,
//! so nothing jumps). The stream owns no task, so a browser that leaves ends
//! its polling; each stream also ends after five minutes and the page
//! reconnects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use serde_json::json;
use switchboard_handoff::settings::{
    ConnectionTest, Destination, EffectiveSettings, MiawSettingsInput, Source,
};
use switchboard_model::{
    Agent, AgentId, AgentInput, Brain, HandoffMode, HandoffStatus, MiawSettings,
    RoutingAttributeNames, SessionId, SessionStatus, Speaker, SttProvider, Timestamp, TokenId,
    TtsProvider, E164,
};
use switchboard_store::SessionFilter;

use crate::api::audit;
use crate::auth::{safe_next, see_other, Caller, SESSION_COOKIE};
use crate::error::ApiError;
use crate::AppState;

const CSS: &str = include_str!("dashboard.css");
const SCRIPT: &str = include_str!("dashboard.js");
/// Sessions not ended that started longer ago than this are not counted as
/// live: a process that died mid-call never ended them.
const LIVE_CALL_WINDOW: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Phone,
    Inbox,
    Contacts,
    Integrations,
    Providers,
    Trunks,
    Tokens,
    Troubleshooting,
}

pub(crate) fn html(status: StatusCode, markup: Markup) -> Response {
    html_response(status, markup)
}

pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Switchboard" }
            style { (PreEscaped(CSS)) }
        }
    }
}

pub(crate) fn layout(title: &str, caller: &Caller, active: Nav, body: Markup) -> Markup {
    let link = |nav: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(nav == active).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Switchboard" }
                    nav aria-label="Main" {
                        span.group { "Channels" }
                        (link(Nav::Phone, "/channels/phone", "Phone"))
                        (link(Nav::Inbox, "/inbox", "Inbox"))
                        (link(Nav::Contacts, "/contacts", "Contacts"))
                        span.group { "Settings" }
                        (link(Nav::Integrations, "/settings/integrations", "Integrations"))
                        (link(Nav::Providers, "/settings/providers", "Speech & LLM"))
                        (link(Nav::Trunks, "/settings/trunks", "SIP trunks"))
                        (link(Nav::Tokens, "/settings/tokens", "API tokens"))
                        (link(Nav::Troubleshooting, "/troubleshooting", "Troubleshooting"))
                    }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(caller.csrf_token());
                        span.who { (caller.actor().trim_start_matches("user:")) }
                        button type="submit" { "Log out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

pub(crate) fn time(t: Timestamp) -> Markup {
    html! { time datetime=(t.to_rfc3339()) title=(format!("{} UTC", t.to_rfc3339())) { (t.to_rfc3339()) } }
}

pub(crate) fn csrf_field(caller: &Caller) -> Markup {
    html! { input type="hidden" name="csrf" value=(caller.csrf_token()); }
}

pub(crate) fn error_banner(error: Option<&ApiError>) -> Markup {
    html! {
        @if let Some(e) = error {
            div.error role="alert" { (e.to_string()) }
        }
    }
}

/// A page for an error that happened before a handler could render one.
pub(crate) fn error_page(error: &ApiError) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Error"))
            body { main.narrow { h1 { "Something went wrong" } div.error role="alert" { (error.to_string()) } p { a href="/" { "Back to the dashboard" } } } }
        }
    };
    html_response(error.status(), markup)
}

pub(crate) fn not_found_page() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" { (head("Not found")) body { main.narrow { h1 { "Not found" } p { a href="/" { "Back to the dashboard" } } } } }
    }
}

/// Renders a store/validation failure inside the page instead of as JSON.
pub(crate) fn page_error(e: impl Into<ApiError>) -> Response {
    error_page(&e.into())
}

// ---------------------------------------------------------------------------
// Login

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

fn login_page(next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in"))
            body {
                main.narrow id="main" {
                    h1 { "Switchboard" }
                    p.muted { "Log in to manage your phone agents." }
                    @if let Some(e) = error { div.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label for="username" { "Username" }
                        input id="username" name="username" autocomplete="username" required autofocus;
                        label for="password" { "Password" }
                        input id="password" name="password" type="password" autocomplete="current-password" required;
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    };
    html_response(status, markup)
}

pub async fn login_form(Query(q): Query<LoginQuery>) -> Response {
    login_page(&safe_next(q.next.as_deref()), None, StatusCode::OK)
}

pub async fn login_submit(
    State(s): State<AppState>,
    ext: Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let ip = crate::auth::client_ip(ext.get::<ConnectInfo<SocketAddr>>());
    let next = safe_next(form.next.as_deref());
    if let Err(wait) = s.limiter.check(ip, Instant::now()) {
        s.metrics.record_login_throttled();
        let mut r = login_page(
            &next,
            Some(&format!(
                "Too many failed attempts from your address. Try again in {wait} s."
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        if let Ok(v) = wait.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let user = match s
        .store
        .verify_password(form.username.trim(), &form.password)
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => {
            s.limiter.record_failure(ip, Instant::now());
            s.metrics.record_login_failure();
            tracing::info!(%ip, "failed dashboard login");
            return login_page(
                &next,
                Some("Wrong username or password."),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(e) => return page_error(e),
    };
    s.limiter.record_success(ip);
    let ttl = s.settings.login_ttl;
    let (token, _) = match s
        .store
        .create_login(&user, i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
        .await
    {
        Ok(x) => x,
        Err(e) => return page_error(e),
    };
    if let Err(e) = s
        .store
        .audit(
            &format!("user:{}", user.username),
            "login",
            &user.username,
            json!({ "ip": ip.to_string() }),
        )
        .await
    {
        tracing::warn!(error = %e, "could not audit login");
    }
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        ttl.as_secs(),
        if s.settings.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    let mut r = see_other(&next);
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = crate::auth::cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = s.store.delete_login(token).await {
            return page_error(e);
        }
    }
    let mut r = see_other("/login");
    if let Ok(v) = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0").parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn home() -> Redirect {
    Redirect::to("/channels/phone")
}

// ---------------------------------------------------------------------------
// Channels → Phone

pub async fn agents_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let since = s
        .clock
        .now()
        .plus_millis(-(LIVE_CALL_WINDOW.as_millis() as i64));
    let (agents, numbers, live) = match (
        s.store.list_agents().await,
        s.store.list_numbers(None).await,
        s.store.live_calls_by_agent(since).await,
    ) {
        (Ok(a), Ok(n), Ok(l)) => (a, n, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return page_error(e),
    };
    let mut by_agent: HashMap<AgentId, Vec<&E164>> = HashMap::new();
    for n in &numbers {
        if let Some(a) = n.agent_id {
            by_agent.entry(a).or_default().push(&n.e164);
        }
    }
    let body = html! {
        p.actions { a.button href="/channels/phone/new" { "New agent" } }
        @if agents.is_empty() {
            p.empty { "No phone agents yet. Create one, then bind a phone number to it so calls can reach it." }
        } @else {
            table {
                thead { tr { th { "Agent" } th { "Numbers" } th { "Live calls" } th { "Handoff" } th { "Brain" } th { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for a in &agents {
                        tr {
                            td { a href=(format!("/channels/phone/{}", a.id)) { (a.spec.name) } }
                            td {
                                @match by_agent.get(&a.id) {
                                    Some(ns) => { @for n in ns { span.pill { (n.as_str()) } " " } }
                                    None => { span.muted { "no number — calls cannot reach this agent" } }
                                }
                            }
                            td data-label="Live calls" {
                                @match live.get(&a.id).copied().unwrap_or(0) {
                                    0 => { span.muted data-live-calls="0" { "idle" } }
                                    n => { span.pill.live data-live-calls=(n) { (n) " in progress" } }
                                }
                                " " span.muted { "of " (a.spec.max_concurrent_calls) }
                            }
                            td { (mode_label(a.spec.handoff_mode)) @if let Some(n) = &a.spec.handoff_number { " → " (n.as_str()) } }
                            td { (a.spec.brain.as_str()) }
                            td { a.button.plain href=(format!("/channels/phone/{}/test-call", a.id)) { "Test call" } }
                        }
                    }
                }
            }
        }
    };
    html_response(
        StatusCode::OK,
        layout("Phone agents", &caller, Nav::Phone, body),
    )
}

fn speaker_label(speaker: Speaker) -> &'static str {
    match speaker {
        Speaker::Caller => "Caller",
        Speaker::Ai => "AI",
        Speaker::Rep => "Rep",
        Speaker::System => "System",
    }
}

fn mode_label(mode: HandoffMode) -> &'static str {
    match mode {
        HandoffMode::LiveTransfer => "Live transfer",
        HandoffMode::LoggedEscalation => "Logged escalation",
    }
}

/// The agent form as submitted: every field a string, so a bad value can be
/// shown back to the user as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AgentForm {
    name: String,
    language: String,
    greeting: String,
    instructions: String,
    voice: String,
    stt_provider: String,
    tts_provider: String,
    brain: String,
    handoff_mode: String,
    handoff_number: String,
    handoff_phrases: String,
    time_zone: String,
    max_concurrent_calls: String,
    attr_session_id: String,
    attr_caller_phone: String,
    attr_handoff_reason: String,
    attr_handoff_mode: String,
    attr_preferred_channel: String,
    /// The LLM brain's HTTP tools as a JSON array (empty: none).
    tools: String,
}

impl AgentForm {
    fn from_agent(a: &Agent) -> Self {
        let s = &a.spec;
        AgentForm {
            name: s.name.clone(),
            language: s.language.clone(),
            greeting: s.greeting.clone(),
            instructions: s.instructions.clone(),
            voice: s.voice.clone(),
            stt_provider: s.stt_provider.to_string(),
            tts_provider: s.tts_provider.to_string(),
            brain: s.brain.to_string(),
            handoff_mode: s.handoff_mode.to_string(),
            handoff_number: s
                .handoff_number
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            handoff_phrases: s.handoff_phrases.join("\n"),
            time_zone: s.time_zone.clone(),
            max_concurrent_calls: s.max_concurrent_calls.to_string(),
            attr_session_id: s.routing_attributes.session_id.clone(),
            attr_caller_phone: s.routing_attributes.caller_phone.clone(),
            attr_handoff_reason: s.routing_attributes.handoff_reason.clone(),
            attr_handoff_mode: s.routing_attributes.handoff_mode.clone(),
            attr_preferred_channel: s.routing_attributes.preferred_channel.clone(),
            tools: if s.tools.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&s.tools).unwrap_or_default()
            },
        }
    }

    fn defaults() -> Self {
        let spec = AgentInput {
            name: "x".into(),
            ..Default::default()
        }
        .validate(Default::default());
        match spec {
            Ok(spec) => {
                let mut f = Self::from_agent(&Agent {
                    id: AgentId::new(),
                    spec,
                    created_at: Timestamp::from_millis(0),
                    updated_at: Timestamp::from_millis(0),
                });
                f.name.clear();
                f
            }
            Err(_) => Self::default(),
        }
    }

    fn to_input(&self) -> Result<AgentInput, ApiError> {
        fn word<T: std::str::FromStr<Err = switchboard_model::ModelError>>(
            field: &str,
            v: &str,
        ) -> Result<Option<T>, ApiError> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            v.parse::<T>()
                .map(Some)
                .map_err(|e| e.for_field(field).into())
        }
        let opt = |v: &str| (!v.trim().is_empty()).then(|| v.to_string());
        let max_concurrent_calls = match self.max_concurrent_calls.trim() {
            "" => None,
            v => Some(v.parse::<u32>().map_err(|_| {
                ApiError::invalid("max_concurrent_calls", "must be a whole number")
            })?),
        };
        Ok(AgentInput {
            name: self.name.clone(),
            language: opt(&self.language),
            greeting: opt(&self.greeting),
            instructions: Some(self.instructions.clone()),
            voice: opt(&self.voice),
            stt_provider: word::<SttProvider>("stt_provider", &self.stt_provider)?,
            tts_provider: word::<TtsProvider>("tts_provider", &self.tts_provider)?,
            brain: word::<Brain>("brain", &self.brain)?,
            handoff_mode: word::<HandoffMode>("handoff_mode", &self.handoff_mode)?,
            handoff_number: opt(&self.handoff_number),
            handoff_phrases: Some(self.handoff_phrases.lines().map(str::to_string).collect()),
            routing_attributes: Some({
                // An empty box means the default name.
                let d = RoutingAttributeNames::default();
                let pick = |v: &str, default: String| {
                    if v.trim().is_empty() {
                        default
                    } else {
                        v.trim().to_string()
                    }
                };
                RoutingAttributeNames {
                    session_id: pick(&self.attr_session_id, d.session_id),
                    caller_phone: pick(&self.attr_caller_phone, d.caller_phone),
                    handoff_reason: pick(&self.attr_handoff_reason, d.handoff_reason),
                    handoff_mode: pick(&self.attr_handoff_mode, d.handoff_mode),
                    preferred_channel: pick(&self.attr_preferred_channel, d.preferred_channel),
                }
            }),
            time_zone: opt(&self.time_zone),
            max_concurrent_calls,
            tools: Some(match self.tools.trim() {
                "" => Vec::new(),
                json => serde_json::from_str(json).map_err(|e| {
                    ApiError::invalid(
                        "tools",
                        format!(
                            "is not a JSON array of tools ({e}); see the example below the box"
                        ),
                    )
                })?,
            }),
        })
    }
}

pub(crate) fn field_error(error: Option<&ApiError>, field: &str) -> Markup {
    html! {
        @if let Some(e) = error.filter(|e| e.field().is_some_and(|f| f == field || f.ends_with(&format!(".{field}")))) {
            span.field-error id=(format!("{field}-error")) { (e.to_string()) }
        }
    }
}

pub(crate) fn text_input(
    label: &str,
    name: &str,
    value: &str,
    hint: &str,
    error: Option<&ApiError>,
) -> Markup {
    let invalid = error
        .and_then(|e| e.field())
        .is_some_and(|f| f == name || f.ends_with(&format!(".{name}")));
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) name=(name) value=(value) aria-invalid=[invalid.then_some("true")] aria-describedby=(format!("{name}-hint"));
            @if !hint.is_empty() { small id=(format!("{name}-hint")) { (hint) } }
            (field_error(error, name))
        }
    }
}

pub(crate) fn select<T: Copy + std::fmt::Display>(
    label: &str,
    name: &str,
    choices: &[T],
    value: &str,
    describe: fn(T) -> &'static str,
) -> Markup {
    html! {
        div.field {
            label for=(name) { (label) }
            select id=(name) name=(name) {
                @for c in choices {
                    option value=(c.to_string()) selected[c.to_string() == value] { (describe(*c)) }
                }
            }
        }
    }
}

fn agent_form(action: &str, form: &AgentForm, error: Option<&ApiError>, caller: &Caller) -> Markup {
    html! {
        (error_banner(error))
        form.agent method="post" action=(action) {
            (csrf_field(caller))
            fieldset {
                legend { "Agent" }
                (text_input("Name", "name", &form.name, "", error))
                (text_input("Language", "language", &form.language, "BCP 47 tag, such as en-US", error))
                div.field {
                    label for="greeting" { "Greeting" }
                    textarea id="greeting" name="greeting" rows="2" { (form.greeting) }
                    (field_error(error, "greeting"))
                }
                div.field {
                    label for="instructions" { "Instructions and knowledge" }
                    textarea id="instructions" name="instructions" rows="6" { (form.instructions) }
                    small { "What the agent should know and how it should behave." }
                    (field_error(error, "instructions"))
                }
                (text_input("Voice", "voice", &form.voice, "", error))
                (select("Speech to text", "stt_provider", SttProvider::ALL, &form.stt_provider, |p| match p {
                    SttProvider::Offline => "Offline (on this server)", SttProvider::Deepgram => "Deepgram", SttProvider::Openai => "OpenAI-compatible" }))
                (select("Text to speech", "tts_provider", TtsProvider::ALL, &form.tts_provider, |p| match p {
                    TtsProvider::Offline => "Offline (on this server)", TtsProvider::Openai => "OpenAI-compatible", TtsProvider::Elevenlabs => "ElevenLabs" }))
                (select("Brain", "brain", Brain::ALL, &form.brain, |b| match b {
                    Brain::Playbook => "Playbook (offline)", Brain::Llm => "LLM (OpenAI-compatible)" }))
                div.field {
                    label for="tools" { "LLM tools (JSON)" }
                    textarea id="tools" name="tools" rows="5" spellcheck="false" aria-describedby="tools-hint"
                        aria-invalid=[error.and_then(|e| e.field()).is_some_and(|f| f == "tools").then_some("true")] { (form.tools) }
                    small id="tools-hint" {
                        "HTTP tools the LLM brain may call, besides transfer_to_human, end_call and lookup_contact. Example: "
                        code { r#"[{"name": "order_status", "description": "Where an order is", "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}, "url": "https://api.example.com/orders", "method": "GET", "timeout_ms": 3000}]"# }
                    }
                    (field_error(error, "tools"))
                }
                (text_input("Time zone", "time_zone", &form.time_zone, "IANA name used for transcript times, such as America/New_York", error))
                (text_input("Concurrent call limit", "max_concurrent_calls", &form.max_concurrent_calls, "", error))
            }
            fieldset {
                legend { "Agent Configuration: handoff" }
                (select("Handoff mode", "handoff_mode", HandoffMode::ALL, &form.handoff_mode, mode_label))
                (text_input("Handoff phone number", "handoff_number", &form.handoff_number,
                    "Live transfer bridges the caller to this number (E.164, such as +14155550123, or a SIP URI)", error))
                div.field {
                    label for="handoff_phrases" { "Handoff phrases" }
                    textarea id="handoff_phrases" name="handoff_phrases" rows="4" { (form.handoff_phrases) }
                    small { "One per line: callers who say one of these are handed to a person." }
                    (field_error(error, "handoff_phrases"))
                }
            }
            fieldset {
                legend { "Salesforce routing attributes" }
                p.muted { "Channel Variable Names of the hidden pre-chat fields in your Embedded Service deployment." }
                (text_input("Session id", "attr_session_id", &form.attr_session_id, "Use OpencxSessionId if your org is set up for it", error))
                (text_input("Caller phone", "attr_caller_phone", &form.attr_caller_phone, "", error))
                (text_input("Handoff reason", "attr_handoff_reason", &form.attr_handoff_reason, "", error))
                (text_input("Handoff mode", "attr_handoff_mode", &form.attr_handoff_mode, "", error))
                (text_input("Preferred channel", "attr_preferred_channel", &form.attr_preferred_channel, "", error))
            }
            button type="submit" { "Save" }
        }
    }
}

/// Maps `routing_attributes.x` errors to the form's `attr_x` field names.
fn form_error(e: ApiError) -> ApiError {
    match e {
        ApiError::Invalid { field, message } if field.starts_with("routing_attributes.") => {
            ApiError::Invalid {
                field: field.replacen("routing_attributes.", "attr_", 1),
                message,
            }
        }
        // One box holds every tool: name the tool's field in the message.
        ApiError::Invalid { field, message } if field.starts_with("tools[") => ApiError::Invalid {
            message: format!("{field} {message}"),
            field: "tools".into(),
        },
        other => other,
    }
}

pub async fn new_agent_page(Extension(caller): Extension<Caller>) -> Response {
    let body = agent_form("/channels/phone", &AgentForm::defaults(), None, &caller);
    html_response(
        StatusCode::OK,
        layout("New phone agent", &caller, Nav::Phone, body),
    )
}

pub async fn create_agent_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<AgentForm>,
) -> Response {
    let result = async {
        let spec = form.to_input()?.validate(s.settings.default_region)?;
        Ok::<_, ApiError>(s.store.create_agent(&spec).await?)
    }
    .await;
    match result {
        Ok(agent) => {
            audit(
                &s,
                &caller,
                "agent.create",
                &agent.spec.name,
                json!({ "id": agent.id }),
            )
            .await;
            see_other(&format!("/channels/phone/{}", agent.id))
        }
        Err(e) if e.status().is_client_error() => {
            let e = form_error(e);
            let status = e.status();
            html_response(
                status,
                layout(
                    "New phone agent",
                    &caller,
                    Nav::Phone,
                    agent_form("/channels/phone", &form, Some(&e), &caller),
                ),
            )
        }
        Err(e) => page_error(e),
    }
}

async fn agent_body(
    s: &AppState,
    caller: &Caller,
    agent: &Agent,
    form: &AgentForm,
    error: Option<&ApiError>,
    number_error: Option<&ApiError>,
) -> Result<Markup, ApiError> {
    let numbers = s.store.list_numbers(Some(agent.id)).await?;
    let base = format!("/channels/phone/{}", agent.id);
    Ok(html! {
        p.actions.buttons {
            a.button href=(format!("{base}/test-call")) { "Test call" }
            a.button.plain href=(format!("/inbox?agent={}", agent.id)) { "Calls in the Inbox" }
        }
        section.numbers aria-labelledby="numbers-h" {
            h2 id="numbers-h" { "Phone numbers" }
            @if numbers.is_empty() { p.muted { "No number is bound: calls cannot reach this agent yet." } }
            ul {
                @for n in &numbers {
                    li {
                        span.pill { (n.e164.as_str()) } " " (n.label) " "
                        form.inline method="post" action=(format!("{base}/numbers/unbind")) {
                            (csrf_field(caller))
                            input type="hidden" name="number" value=(n.e164.as_str());
                            button.secondary type="submit" { "Unbind" }
                        }
                    }
                }
            }
            (error_banner(number_error))
            form.inline method="post" action=(format!("{base}/numbers")) {
                (csrf_field(caller))
                label for="number" { "Bind a number" }
                input id="number" name="number" placeholder="+14155550100" required;
                label for="label" class="visually-hidden" { "Label" }
                input id="label" name="label" placeholder="Label (optional)";
                button type="submit" { "Bind" }
            }
        }
        section aria-labelledby="config-h" {
            h2 id="config-h" { "Agent Configuration" }
            (agent_form(&base, form, error, caller))
        }
        section.danger aria-labelledby="danger-h" {
            h2 id="danger-h" { "Delete" }
            form method="post" action=(format!("{base}/delete")) data-confirm=(format!("Delete agent {}? Its numbers stay, unbound.", agent.spec.name)) {
                (csrf_field(caller))
                button.danger type="submit" { "Delete this agent" }
            }
        }
    })
}

async fn render_agent(
    s: &AppState,
    caller: &Caller,
    agent: &Agent,
    form: &AgentForm,
    error: Option<&ApiError>,
    number_error: Option<&ApiError>,
    status: StatusCode,
) -> Response {
    match agent_body(s, caller, agent, form, error, number_error).await {
        Ok(body) => html_response(status, layout(&agent.spec.name, caller, Nav::Phone, body)),
        Err(e) => page_error(e),
    }
}

/// The agent named by the `{id}` path segment of a page route; an unknown
/// id renders the error page instead of reaching the handler.
pub struct PageAgent(pub Agent);

impl axum::extract::FromRequestParts<AppState> for PageAgent {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, Response> {
        let Path(id) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        let id = id
            .parse::<AgentId>()
            .map_err(|_| page_error(ApiError::not_found("agent", &id)))?;
        s.store.agent(id).await.map(PageAgent).map_err(page_error)
    }
}

pub async fn agent_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageAgent(agent): PageAgent,
) -> Response {
    let form = AgentForm::from_agent(&agent);
    render_agent(&s, &caller, &agent, &form, None, None, StatusCode::OK).await
}

pub async fn update_agent_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageAgent(agent): PageAgent,
    Form(form): Form<AgentForm>,
) -> Response {
    let result = async {
        let spec = form.to_input()?.validate(s.settings.default_region)?;
        Ok::<_, ApiError>(s.store.update_agent(agent.id, &spec).await?)
    }
    .await;
    match result {
        Ok(updated) => {
            audit(
                &s,
                &caller,
                "agent.update",
                &updated.spec.name,
                json!({ "id": updated.id }),
            )
            .await;
            see_other(&format!("/channels/phone/{}", updated.id))
        }
        Err(e) if e.status().is_client_error() => {
            let e = form_error(e);
            render_agent(&s, &caller, &agent, &form, Some(&e), None, e.status()).await
        }
        Err(e) => page_error(e),
    }
}

pub async fn delete_agent_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageAgent(agent): PageAgent,
) -> Response {
    if let Err(e) = s.store.delete_agent(agent.id).await {
        return page_error(e);
    }
    audit(
        &s,
        &caller,
        "agent.delete",
        &agent.spec.name,
        json!({ "id": agent.id }),
    )
    .await;
    see_other("/channels/phone")
}

#[derive(Debug, Deserialize)]
pub struct NumberForm {
    #[serde(default)]
    number: String,
    #[serde(default)]
    label: String,
}

pub async fn bind_number_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageAgent(agent): PageAgent,
    Form(form): Form<NumberForm>,
) -> Response {
    let result = async {
        let e164 = E164::parse(&form.number, s.settings.default_region)
            .map_err(|e| e.for_field("number"))?;
        let label = switchboard_model::single_line("label", &form.label, 100)?;
        Ok::<_, ApiError>(s.store.add_number(&e164, Some(agent.id), &label).await?)
    }
    .await;
    match result {
        Ok(n) => {
            audit(
                &s,
                &caller,
                "number.bind",
                n.e164.as_str(),
                json!({ "agent": agent.id }),
            )
            .await;
            see_other(&format!("/channels/phone/{}", agent.id))
        }
        Err(e) if e.status().is_client_error() => {
            render_agent(
                &s,
                &caller,
                &agent,
                &AgentForm::from_agent(&agent),
                None,
                Some(&e),
                e.status(),
            )
            .await
        }
        Err(e) => page_error(e),
    }
}

pub async fn unbind_number_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageAgent(agent): PageAgent,
    Form(form): Form<NumberForm>,
) -> Response {
    let result = async {
        let e164 = E164::parse(&form.number, s.settings.default_region)
            .map_err(|e| e.for_field("number"))?;
        let n = s.store.number_by_e164(&e164).await?;
        if n.agent_id != Some(agent.id) {
            return Err(ApiError::Conflict {
                field: "number".into(),
                message: format!("{e164} is not bound to this agent"),
            });
        }
        Ok::<_, ApiError>(s.store.bind_number(&e164, None).await?)
    }
    .await;
    match result {
        Ok(n) => {
            audit(
                &s,
                &caller,
                "number.unbind",
                n.e164.as_str(),
                json!({ "agent": agent.id }),
            )
            .await;
            see_other(&format!("/channels/phone/{}", agent.id))
        }
        Err(e) => page_error(e),
    }
}

// ---------------------------------------------------------------------------
// Inbox

/// The Inbox filters, as the filter form submits them (every field a string
/// so an empty select means "any").
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InboxQuery {
    /// Full-text search over transcripts.
    q: String,
    /// Agent id.
    agent: String,
    direction: String,
    outcome: String,
    handoff: String,
    /// First day, `YYYY-MM-DD`: midnight UTC unless `from_ms` is given.
    from: String,
    /// Last day, `YYYY-MM-DD`, inclusive: up to the next midnight UTC unless
    /// `to_ms` is given.
    to: String,
    /// The range in UTC milliseconds as the browser computed it from the
    /// viewer's time zone (the dashboard script fills these in).
    from_ms: String,
    to_ms: String,
    /// Keyset paging: the last listed session's start (UTC ms) and id.
    before: String,
    before_id: String,
}

/// Sessions per Inbox page.
const INBOX_PAGE: i64 = 50;

impl InboxQuery {
    /// The store filter, and a message for each field that could not be read
    /// (that field is then ignored).
    fn to_filter(&self) -> (SessionFilter, Vec<String>) {
        let mut problems = Vec::new();
        let given = |raw: &str| Some(raw.trim().to_string()).filter(|r| !r.is_empty());
        let agent = given(&self.agent);
        let direction = given(&self.direction);
        let outcome = given(&self.outcome);
        let handoff = given(&self.handoff);
        let mut filter = SessionFilter {
            limit: INBOX_PAGE,
            ..Default::default()
        };
        if let Some(a) = agent {
            match a.parse::<AgentId>() {
                Ok(id) => filter.agent_id = Some(id),
                Err(_) => problems.push(format!("Agent: `{a}` is not an agent id.")),
            }
        }
        if let Some(d) = direction {
            match d.parse() {
                Ok(v) => filter.direction = Some(v),
                Err(e) => problems.push(format!("Direction: {e}.")),
            }
        }
        if let Some(o) = outcome {
            match o.parse() {
                Ok(v) => filter.outcome = Some(v),
                Err(e) => problems.push(format!("Outcome: {e}.")),
            }
        }
        if let Some(h) = handoff {
            match h.parse() {
                Ok(v) => filter.handoff_status = Some(v),
                Err(e) => problems.push(format!("Handoff delivery: {e}.")),
            }
        }
        filter.from = day_bound("From", &self.from_ms, &self.from, 0, &mut problems);
        filter.to = day_bound("To", &self.to_ms, &self.to, 1, &mut problems);
        let q = self.q.trim();
        filter.text = (!q.is_empty()).then(|| q.to_string());
        if !self.before.trim().is_empty() {
            match self.before.trim().parse::<i64>() {
                Ok(ms) => filter.before = Some(Timestamp::from_millis(ms)),
                Err(_) => problems.push("Paging: `before` is not a time.".into()),
            }
            filter.before_id = self.before_id.trim().parse().ok();
        }
        (filter, problems)
    }

    /// This query as a URL query string, with the paging replaced.
    fn with_page(&self, before: Option<(Timestamp, SessionId)>) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("q", &self.q),
            ("agent", &self.agent),
            ("direction", &self.direction),
            ("outcome", &self.outcome),
            ("handoff", &self.handoff),
            ("from", &self.from),
            ("to", &self.to),
            ("from_ms", &self.from_ms),
            ("to_ms", &self.to_ms),
        ] {
            if !v.trim().is_empty() {
                out.append_pair(k, v.trim());
            }
        }
        if let Some((t, id)) = before {
            out.append_pair("before", &t.as_millis().to_string());
            out.append_pair("before_id", &id.to_string());
        }
        out.finish()
    }

    fn is_filtered(&self) -> bool {
        !self.with_page(None).is_empty()
    }
}

/// A range bound: the browser's UTC milliseconds when given, else the day
/// (`YYYY-MM-DD`) as a UTC day, plus `add_days` (1 makes an inclusive last
/// day an exclusive bound).
fn day_bound(
    label: &str,
    ms: &str,
    day: &str,
    add_days: i64,
    problems: &mut Vec<String>,
) -> Option<Timestamp> {
    if let Ok(ms) = ms.trim().parse::<i64>() {
        return Some(Timestamp::from_millis(ms));
    }
    let day = day.trim();
    if day.is_empty() {
        return None;
    }
    match chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") {
        Ok(d) => {
            let start = d
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_millis();
            Some(Timestamp::from_millis(start + add_days * 86_400_000))
        }
        Err(_) => {
            problems.push(format!("{label}: `{day}` is not a date like 2026-11-25."));
            None
        }
    }
}

pub async fn inbox_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<InboxQuery>,
) -> Response {
    // Read before the list, so a change racing the render shows up as one
    // more refresh rather than being missed.
    let version = s.store.inbox_version().await.unwrap_or_default();
    let (filter, problems) = q.to_filter();
    let sessions = match s.store.list_sessions(&filter).await {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let agent_list = match s.store.list_agents().await {
        Ok(list) => list,
        Err(e) => return page_error(e),
    };
    let agents: HashMap<AgentId, &str> = agent_list
        .iter()
        .map(|a| (a.id, a.spec.name.as_str()))
        .collect();
    let ids: Vec<SessionId> = sessions.iter().map(|x| x.id).collect();
    let handoffs = match s.store.handoff_statuses(&ids).await {
        Ok(m) => m,
        Err(e) => return page_error(e),
    };
    let older = (sessions.len() as i64 >= INBOX_PAGE)
        .then(|| sessions.last().map(|x| (x.started_at, x.id)))
        .flatten();
    let choice = |name: &str, label: &str, current: &str, options: &[(&str, &str)]| {
        html! {
            div.filter {
                label for=(format!("f-{name}")) { (label) }
                select id=(format!("f-{name}")) name=(name) {
                    option value="" { "Any" }
                    @for (value, text) in options {
                        option value=(value) selected[current.trim() == *value] { (text) }
                    }
                }
            }
        }
    };
    let agent_options: Vec<(String, &str)> = agent_list
        .iter()
        .map(|a| (a.id.to_string(), a.spec.name.as_str()))
        .collect();
    let agent_options: Vec<(&str, &str)> = agent_options
        .iter()
        .map(|(id, n)| (id.as_str(), *n))
        .collect();
    let body = html! {
        form.filters method="get" action="/inbox" role="search" aria-label="Filter sessions" {
            div.filter.wide {
                label for="f-q" { "Search transcripts" }
                input type="search" id="f-q" name="q" value=(q.q) placeholder="Words a caller or the AI said";
            }
            (choice("agent", "Agent", &q.agent, &agent_options))
            (choice("direction", "Direction", &q.direction, &[("inbound", "Inbound"), ("outbound", "Outbound")]))
            (choice("outcome", "Outcome", &q.outcome, &[("resolved", "Resolved"), ("live_transfer", "Live transfer"), ("logged_escalation", "Logged escalation"), ("abandoned", "Abandoned"), ("failed", "Failed")]))
            (choice("handoff", "Handoff delivery", &q.handoff, &[("pending", "Pending"), ("delivering", "Delivering"), ("delivered", "Delivered"), ("not_configured", "Waiting for settings"), ("dead_letter", "Failed (dead letter)")]))
            div.filter {
                label for="f-from" { "From" }
                input type="date" id="f-from" name="from" value=(q.from);
            }
            div.filter {
                label for="f-to" { "To" }
                input type="date" id="f-to" name="to" value=(q.to);
            }
            // The script fills these with the range in the viewer's time zone;
            // without it, the days are UTC days.
            input type="hidden" name="from_ms" value="";
            input type="hidden" name="to_ms" value="";
            div.filter.buttons {
                button type="submit" { "Filter" }
                @if q.is_filtered() { a.button.plain href="/inbox" { "Clear" } }
            }
        }
        @for p in &problems { div.error role="alert" { (p) } }
        p.live-note id="live-note" aria-live="polite" data-events="/inbox/events" data-version=(version) { "" }
        div id="live-region" data-live {
            @if sessions.is_empty() {
                @if q.is_filtered() {
                    p.empty { "No sessions match these filters." }
                } @else {
                    p.empty { "No calls yet. Calls and text sessions appear here as they happen." }
                }
            } @else {
                table.sessions {
                    thead { tr { th { "Started" } th { "Agent" } th { "Direction" } th { "From" } th { "To" } th { "Status" } th { "Outcome" } th { "Handoff" } } }
                    tbody {
                        @for x in &sessions {
                            tr data-session=(x.id) {
                                td data-label="Started" { a href=(format!("/inbox/{}", x.id)) { (time(x.started_at)) } }
                                td data-label="Agent" { (x.agent_id.and_then(|a| agents.get(&a).copied()).unwrap_or("—")) }
                                td data-label="Direction" { (x.direction.as_str()) }
                                td data-label="From" { (x.from) }
                                td data-label="To" { (x.to) }
                                td data-label="Status" { (x.status.as_str()) }
                                td data-label="Outcome" { (x.outcome.map_or("—", |o| o.as_str())) }
                                td data-label="Handoff" { (handoffs.get(&x.id).map_or("—", |h| h.as_str())) }
                            }
                        }
                    }
                }
            }
            @if let Some(page) = older {
                p.paging { a href=(format!("/inbox?{}", q.with_page(Some(page)))) rel="next" { "Older" } }
            }
        }
    };
    html_response(StatusCode::OK, layout("Inbox", &caller, Nav::Inbox, body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventsQuery {
    /// Watch one session (its page) instead of the Inbox list.
    session: String,
    /// The version the page was rendered at: any other value is a change.
    since: String,
}

/// How often the event stream looks at the store.
const EVENTS_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long one event stream lasts; the page reconnects, so a stream that a
/// proxy or a sleeping laptop silently lost is not polled for ever.
const EVENTS_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);
/// How often an idle event stream sends a comment.
const EVENTS_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /inbox/events`: server-sent events telling the Inbox (or, with
/// `session`, a session page) that what it shows changed. Each `change`
/// event carries the new version; the page then re-fetches itself.
///
/// The stream polls the store and owns no task: when the browser goes away,
/// the server drops the stream and the polling stops with it.
pub async fn inbox_events(State(s): State<AppState>, Query(q): Query<EventsQuery>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let session = if q.session.trim().is_empty() {
        None
    } else {
        match q.session.trim().parse::<SessionId>() {
            Ok(id) => Some(id),
            Err(_) => return page_error(ApiError::not_found("session", q.session)),
        }
    };
    if let Some(id) = session {
        if let Err(e) = s.store.session(id).await {
            return page_error(e);
        }
    }
    let deadline = tokio::time::Instant::now() + EVENTS_LIFETIME;
    let guard = s.metrics.open_event_stream();
    let stream = futures_util::stream::unfold(
        (s.store, q.since, guard),
        move |(store, last, guard)| async move {
            loop {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                let version = match session {
                    Some(id) => store.session_version(id).await,
                    None => store.inbox_version().await,
                };
                match version {
                    Ok(v) if v != last => {
                        let event = Event::default().event("change").data(v.clone());
                        return Some((Ok::<_, std::convert::Infallible>(event), (store, v, guard)));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "inbox events: store not readable"),
                }
                tokio::time::sleep(EVENTS_POLL).await;
            }
        },
    );
    // The keep-alive also bounds how long a stream outlives a browser that
    // vanished without closing its connection: the next write fails.
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(EVENTS_KEEP_ALIVE))
        .into_response()
}

pub async fn session_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<SessionId>() else {
        return page_error(ApiError::not_found("session", id));
    };
    let d = match crate::api::session_detail(&s, id).await {
        Ok(d) => d,
        Err(e) => return page_error(e),
    };
    let attempts = match &d.handoff {
        Some(h) => match s.store.handoff_attempts(h.id).await {
            Ok(a) => a,
            Err(e) => return page_error(e),
        },
        None => Vec::new(),
    };
    // Read before the parts it covers, so a change racing the render shows up
    // as one more refresh rather than being missed.
    let live = d.session.status != SessionStatus::Ended
        || d.handoff.as_ref().is_some_and(|h| {
            !matches!(
                h.status,
                HandoffStatus::Delivered | HandoffStatus::DeadLetter
            )
        });
    let version = if live {
        s.store.session_version(id).await.unwrap_or_default()
    } else {
        String::new()
    };
    let body = html! {
        // Always present with a fixed height, so the note appearing or
        // changing never moves the page.
        @if live {
            p.live-note id="live-note" aria-live="polite" data-events=(format!("/inbox/events?session={id}")) data-version=(version) { "" }
        } @else {
            p.live-note id="live-note" { "" }
        }
        dl.meta id="session-meta" data-live {
            dt { "Session id" } dd { code { (d.session.id) } }
            dt { "Direction" } dd { (d.session.direction.as_str()) }
            dt { "From" } dd { (d.session.from) }
            dt { "To" } dd { (d.session.to) }
            dt { "Started" } dd { (time(d.session.started_at)) }
            dt { "Status" } dd { (d.session.status.as_str()) }
            dt { "Outcome" } dd { (d.session.outcome.map_or("—", |o| o.as_str())) }
        }
        @if d.session.recording.is_some() {
            section aria-labelledby="recording-h" {
                h2 id="recording-h" { "Recording" }
                // Caller on the left channel, AI or rep on the right.
                audio id="recording" controls preload="metadata" src=(format!("/api/v1/sessions/{}/recording", d.session.id)) {
                    "Your browser cannot play this recording; "
                    a href=(format!("/api/v1/sessions/{}/recording", d.session.id)) { "download it" } "."
                }
                p.muted { "Caller on the left channel, AI or rep on the right. Click a turn to hear it." }
            }
        }
        section id="transcript" data-live aria-labelledby="transcript-h" {
            h2 id="transcript-h" { "Transcript" }
            @if d.turns.is_empty() { p.muted { "No turns were recorded." } }
            @let media_start = d.session.answered_at.unwrap_or(d.session.started_at);
            ol.transcript data-seekable[d.session.recording.is_some()] {
                @for t in &d.turns {
                    li class=(t.speaker.as_str()) data-offset=(format!("{:.2}", (t.started_at.as_millis() - media_start.as_millis()).max(0) as f64 / 1000.0)) data-end=(format!("{:.2}", (t.ended_at.as_millis() - media_start.as_millis()).max(0) as f64 / 1000.0)) {
                        span.speaker { (speaker_label(t.speaker)) } " " (time(t.started_at))
                        p { (t.text) }
                    }
                }
            }
        }
        section id="trace" data-live aria-labelledby="trace-h" {
            h2 id="trace-h" { "Reasoning trace" }
            @if d.trace.is_empty() { p.muted { "No trace steps were recorded." } }
            @for step in &d.trace {
                details id=(format!("step-{}", step.id)) {
                    summary { (step.kind) @if let Some(t) = step.turn_seq { " · turn " (t) } @if let Some(ms) = step.latency_ms { " · " (ms) " ms" } }
                    pre { (serde_json::to_string_pretty(&step.payload).unwrap_or_default()) }
                }
            }
        }
        section id="handoff" data-live aria-labelledby="handoff-h" {
            h2 id="handoff-h" { "Handoff" }
            @match &d.handoff {
                None => { p.muted { "This call was not handed off." } }
                Some(h) => {
                    dl.meta {
                        dt { "Mode" } dd { (mode_label(h.mode)) }
                        dt { "Reason" } dd { (h.reason) }
                        dt { "Summary" } dd { (h.summary) }
                        @if let Some(c) = h.preferred_channel { dt { "Preferred follow-up" } dd { (c.as_str()) @if let Some(d) = &h.channel_details { " (" (d) ")" } } }
                        dt { "Delivery" } dd id="handoff-status" data-status=(h.status.as_str()) { (h.status.as_str()) " · " (h.messages_acked) " of " (h.messages_total.map_or("?".to_string(), |t| t.to_string())) " messages acknowledged" }
                        @if let Some(i) = &h.identity { dt { "Identity" } dd { (i) } }
                        @if let Some(c) = &h.conversation_id { dt { "Salesforce conversation" } dd { code { (c) } } }
                        @if let Some(attrs) = &h.routing_attributes {
                            dt { "Routing attributes" }
                            dd { table.attrs { @for (k, v) in attrs { tr { th { code { (k) } } td { (v) } } } } }
                        }
                        @if let Some(t) = h.routed_at { dt { "Routed" } dd { (time(t)) @if let Some(w) = h.estimated_wait_seconds { " · estimated wait " (w) " s" } } }
                        @if let Some(r) = &h.rep_name { dt { "Rep" } dd { (r) } }
                        @if let Some(e) = &h.last_error { dt { "Last error" } dd.error-text { (e) } }
                    }
                    @if !matches!(h.status, HandoffStatus::Delivered | HandoffStatus::Delivering) || h.last_error.is_some() {
                        form method="post" action=(format!("/inbox/{}/redrive", d.session.id)) {
                            (csrf_field(&caller))
                            button type="submit" { "Re-drive" }
                        }
                    }
                    @if !attempts.is_empty() {
                        h3 { "Delivery attempts" }
                        table {
                            thead { tr { th { "Started" } th { "Took" } th { "Result" } th { "Messages" } th { "Error" } } }
                            tbody {
                                @for a in &attempts {
                                    tr {
                                        td { (time(a.started_at)) }
                                        td { (a.finished_at.as_millis() - a.started_at.as_millis()) " ms" }
                                        td { (a.outcome) }
                                        td { (a.messages_sent) }
                                        td { (a.error.as_deref().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, layout("Session", &caller, Nav::Inbox, body))
}

// ---------------------------------------------------------------------------
// Settings

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenForm {
    name: String,
}

async fn render_tokens(
    s: &AppState,
    caller: &Caller,
    created: Option<(&str, &str)>,
    error: Option<&ApiError>,
    status: StatusCode,
) -> Response {
    let tokens = match s.store.list_api_tokens().await {
        Ok(t) => t,
        Err(e) => return page_error(e),
    };
    let body = html! {
        p.muted { "Scripts call the API at " code { "/api/v1" } " with " code { "Authorization: Bearer TOKEN" } ". The OpenAPI document is at " a href="/api/openapi.json" { "/api/openapi.json" } "." }
        @if let Some((name, secret)) = created {
            div.notice role="status" {
                p { "Token " strong { (name) } " created. Copy it now: it is not shown again." }
                pre.secret { (secret) }
            }
        }
        @if tokens.is_empty() { p.empty { "No API tokens." } }
        @else {
            table {
                thead { tr { th { "Name" } th { "Created" } th { "Last used" } th { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) }
                            td { (time(t.created_at)) }
                            td { @match t.last_used_at { Some(u) => (time(u)), None => "never" } }
                            td {
                                form.inline method="post" action=(format!("/settings/tokens/{}/revoke", t.id)) data-confirm=(format!("Revoke token {}?", t.name)) {
                                    (csrf_field(caller))
                                    button.secondary type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Create a token" }
        (error_banner(error))
        form.inline method="post" action="/settings/tokens" {
            (csrf_field(caller))
            label for="name" { "Name" }
            input id="name" name="name" placeholder="What it is for" required;
            button type="submit" { "Create" }
        }
    };
    html_response(status, layout("API tokens", caller, Nav::Tokens, body))
}

pub async fn tokens_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    render_tokens(&s, &caller, None, None, StatusCode::OK).await
}

pub async fn create_token_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<TokenForm>,
) -> Response {
    let name = match switchboard_model::single_line("name", &form.name, 80) {
        Ok(n) if !n.is_empty() => n,
        Ok(_) => {
            let e = ApiError::invalid("name", "is required: say what the token is for");
            return render_tokens(&s, &caller, None, Some(&e), e.status()).await;
        }
        Err(e) => {
            let e = ApiError::from(e);
            return render_tokens(&s, &caller, None, Some(&e), e.status()).await;
        }
    };
    match s.store.create_api_token(&name).await {
        Ok(new) => {
            audit(
                &s,
                &caller,
                "token.create",
                &name,
                json!({ "id": new.token.id }),
            )
            .await;
            render_tokens(
                &s,
                &caller,
                Some((&name, &new.secret)),
                None,
                StatusCode::CREATED,
            )
            .await
        }
        Err(e) => page_error(e),
    }
}

pub async fn revoke_token_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Ok(token) = id.parse::<TokenId>() else {
        return page_error(ApiError::not_found("token", id));
    };
    if let Err(e) = s.store.revoke_api_token(token).await {
        return page_error(e);
    }
    audit(&s, &caller, "token.revoke", &token.to_string(), json!({})).await;
    see_other("/settings/tokens")
}

// ---------------------------------------------------------------------------
// Troubleshooting

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TroubleshootingQuery {
    /// A session to diagnose for "transcript missing".
    session: String,
}

pub async fn troubleshooting_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<TroubleshootingQuery>,
) -> Response {
    render_troubleshooting(&s, &caller, &q.session, None).await
}

/// Re-tests the Salesforce connection (token, deployment, routing attribute
/// names) and shows the answer in place on the Troubleshooting page.
pub async fn troubleshooting_test_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let Some(settings) = s.salesforce.clone() else {
        return page_error(ApiError::Unavailable);
    };
    let test = settings.test_connection().await;
    render_troubleshooting(&s, &caller, "", Some(&test)).await
}

/// What the product can say about one session's transcript reaching Salesforce.
struct TranscriptCheck {
    session: switchboard_model::Session,
    turns: usize,
    handoff: Option<switchboard_model::Handoff>,
    attempts: Vec<switchboard_model::HandoffAttempt>,
}

async fn transcript_check(s: &AppState, raw: &str) -> Option<Result<TranscriptCheck, ApiError>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    // Accept the id as a rep sees it, or a pasted Inbox link.
    let raw = raw.rsplit('/').next().unwrap_or(raw);
    let Ok(id) = raw.parse::<SessionId>() else {
        return Some(Err(ApiError::not_found("session", raw)));
    };
    Some(
        async {
            let session = s.store.session(id).await?;
            let turns = s.store.turns(id).await?.len();
            let handoff = s.store.handoff_for_session(id).await?;
            let attempts = match &handoff {
                Some(h) => s.store.handoff_attempts(h.id).await?,
                None => Vec::new(),
            };
            Ok(TranscriptCheck {
                session,
                turns,
                handoff,
                attempts,
            })
        }
        .await,
    )
}

fn transcript_diagnosis(c: &TranscriptCheck, caller: &Caller) -> Markup {
    let link = format!("/inbox/{}", c.session.id);
    html! {
        div id="transcript-check" {
            h3 { "Session " a href=(link) { code { (c.session.id) } } }
            ul.checks {
                @if c.turns == 0 {
                    li.fail { "No turns were recorded for this session, so there is no transcript to send. For phone calls, check the speech-to-text provider under the agent's configuration and that the caller was heard (the recording, if any, is on the session page)." }
                } @else {
                    li.ok { (c.turns) " turn(s) were recorded." }
                }
                @match &c.handoff {
                    None => { li.fail { "The call was not handed off, so nothing was sent to Salesforce: the transcript only travels with a handoff. If the caller asked for a person, check the agent's handoff phrases." } }
                    Some(h) => {
                        @if h.turn_count < c.turns as i64 {
                            li.ok { "The handoff carries the " (h.turn_count) " turn(s) recorded before it; later turns stay in the Inbox." }
                        }
                        @match h.status {
                            HandoffStatus::Delivered => {
                                @if h.messages_total.is_some_and(|t| h.messages_acked >= t) {
                                    li.ok { "Delivered: Salesforce acknowledged all " (h.messages_acked) " messages (header, one per turn, summary)" @if let Some(c) = &h.conversation_id { " in conversation " code { (c) } } "." }
                                } @else {
                                    li.fail { "Delivered, but Salesforce acknowledged only " (h.messages_acked) " of " (h.messages_total.map_or("?".to_string(), |t| t.to_string())) " messages. Re-drive to send the rest; ids are fixed, so nothing is duplicated." }
                                }
                            }
                            HandoffStatus::Pending | HandoffStatus::Delivering => {
                                li.fail { "Still being delivered (" (h.status.as_str()) "): " (h.messages_acked) " message(s) acknowledged so far, " (h.attempts) " attempt(s)." @if let Some(e) = &h.last_error { " Last error: " span.error-text { (e) } } }
                            }
                            HandoffStatus::NotConfigured => {
                                li.fail { "Waiting for Salesforce settings: fix them under " a href="/settings/integrations" { "Integrations" } "; waiting handoffs are sent when you save." }
                            }
                            HandoffStatus::DeadLetter => {
                                li.fail { "Delivery gave up after " (h.attempts) " attempt(s) with " (h.messages_acked) " message(s) acknowledged. Salesforce's answer: " span.error-text { (h.last_error.as_deref().unwrap_or("none recorded")) } ". Fix the cause, then re-drive." }
                            }
                        }
                        @if !c.attempts.is_empty() {
                            li.ok { (c.attempts.len()) " delivery attempt(s) recorded; each one with its result is on the " a href=(link) { "session page" } "." }
                        }
                    }
                }
            }
            div.actions.buttons {
                form.inline method="get" action="/troubleshooting" {
                    input type="hidden" name="session" value=(c.session.id);
                    button.secondary type="submit" { "Re-test" }
                }
                @if let Some(h) = &c.handoff {
                    @if h.status != HandoffStatus::Delivered || h.messages_total.is_some_and(|t| h.messages_acked < t) {
                        form.inline method="post" action=(format!("/inbox/{}/redrive", c.session.id)) {
                            (csrf_field(caller))
                            button.secondary type="submit" { "Re-drive" }
                        }
                    }
                }
            }
        }
    }
}

async fn render_troubleshooting(
    s: &AppState,
    caller: &Caller,
    session: &str,
    test: Option<&ConnectionTest>,
) -> Response {
    let caller = caller.clone();
    let check = transcript_check(s, session).await;
    let db = s.store.ping().await;
    let agents = s.store.list_agents().await.unwrap_or_default();
    let numbers = s.store.list_numbers(None).await.unwrap_or_default();
    let unreachable: Vec<&Agent> = agents
        .iter()
        .filter(|a| !numbers.iter().any(|n| n.agent_id == Some(a.id)))
        .collect();
    let failing: Vec<switchboard_model::Handoff> = s
        .store
        .list_handoffs(&switchboard_store::HandoffFilter {
            status: None,
            limit: 200,
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.status != HandoffStatus::Delivered && h.last_error.is_some())
        .take(20)
        .collect();
    let incomplete: Vec<switchboard_model::Handoff> = s
        .store
        .list_handoffs(&switchboard_store::HandoffFilter {
            status: Some(HandoffStatus::Delivered),
            limit: 200,
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.messages_total.is_some_and(|t| h.messages_acked < t) || h.turn_count == 0)
        .take(20)
        .collect();
    let effective = match &s.salesforce {
        Some(sf) => sf.effective().await.ok(),
        None => None,
    };
    let body = html! {
        section aria-labelledby="basics-h" {
            h2 id="basics-h" { "Basics" }
            ul.checks {
                @match &db {
                    Ok(()) => { li.ok { "Database answers (" (s.store.backend().name()) ")." } }
                    Err(e) => { li.fail { "Database does not answer: " (e.to_string()) ". Check " code { "[database] url" } " and that the server runs." } }
                }
                @if agents.is_empty() {
                    li.fail { "No phone agent exists. Create one under " a href="/channels/phone" { "Channels → Phone" } "." }
                }
                @for a in &unreachable {
                    li.fail { "Agent " a href=(format!("/channels/phone/{}", a.id)) { (a.spec.name) } " has no phone number bound, so no call can reach it or hand off." }
                }
                @if !agents.is_empty() && unreachable.is_empty() { li.ok { "Every agent has a phone number." } }
            }
        }
        section aria-labelledby="conv-h" {
            h2 id="conv-h" { "Handoff not creating a conversation" }
            ul.checks {
                @match effective.as_ref().map(|e| &e.destination) {
                    Some(Destination::Salesforce { url }) => { li.ok { "MIAW is configured: handoffs go to " code { (url) } "." } }
                    Some(Destination::Sandbox { .. }) => { li.fail { "No Salesforce org is configured: handoffs go to the built-in " a href="/sandbox" { "sandbox" } ", not to your reps. Fill in " a href="/settings/integrations" { "Settings → Integrations → Salesforce → MIAW" } "." } }
                    Some(Destination::NotConfigured { problems }) => { li.fail { "The MIAW settings are incomplete, so handoffs wait: " (problems.join("; ")) ". Fix them under " a href="/settings/integrations" { "Integrations" } "; waiting handoffs are sent when you save." } }
                    None => { li.fail { "The Salesforce settings cannot be read." } }
                }
            }
            form method="post" action="/troubleshooting/test" {
                (csrf_field(&caller))
                button.secondary type="submit" { "Re-test: can a token be obtained?" }
            }
            @if let Some(t) = test {
                div id="connection-test" class=(if t.ok { "notice" } else { "error" }) role="status" {
                    p { strong { @if t.ok { "Connection works: a conversation can be created." } @else { "Connection test failed: handoffs cannot create a conversation until this is fixed." } } }
                    ul.checks {
                        @for step in &t.steps {
                            li class=(if step.ok { "ok" } else { "fail" }) { strong { (step.name) } ": " (step.detail) }
                        }
                    }
                    @if !t.ok { p { "Fix the named setting under " a href="/settings/integrations" { "Integrations" } ", test again, then re-drive the handoffs below." } }
                }
            }
            @if failing.is_empty() {
                p.ok { "No handoff is failing." }
            } @else {
                h3 { "Handoffs that failed" }
                p.muted { "Each error is Salesforce's own answer where it gave one. 401: the JWT key id, issuer or private key do not match the key registered under Enhanced Chat User Verification. 400 naming the deployment: check the deployment API name and that it is a published Custom Client deployment. Fix the cause, then re-drive." }
                table {
                    thead { tr { th { "Created" } th { "Status" } th { "Attempts" } th { "Error" } th { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for h in &failing {
                            tr {
                                td { a href=(format!("/inbox/{}", h.session_id)) { (time(h.created_at)) } }
                                td { (h.status.as_str()) }
                                td { (h.attempts) }
                                td.error-text { (h.last_error.as_deref().unwrap_or("")) }
                                td {
                                    form.inline method="post" action=(format!("/inbox/{}/redrive", h.session_id)) {
                                        (csrf_field(&caller))
                                        button.secondary type="submit" { "Re-drive" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="transcript-h" {
            h2 id="transcript-h" { "Transcript missing" }
            p { "The transcript is attached when the call hands off, not live during the call: one message per turn, after a header with the reason and before the summary. If a rep sees the conversation without the transcript, the handoff is still being delivered or stopped part-way; its session in the " a href="/inbox" { "Inbox" } " shows how many messages Salesforce acknowledged and every attempt." }
            form.inline method="get" action="/troubleshooting" role="search" {
                label for="check-session" { "Check a session" }
                input id="check-session" name="session" value=(session) placeholder="Session id, as the rep sees it, or its Inbox link";
                button.secondary type="submit" { "Check" }
            }
            @match &check {
                Some(Ok(c)) => { (transcript_diagnosis(c, &caller)) }
                Some(Err(e)) => { div.error role="alert" { (e.to_string()) } }
                None => {}
            }
            @if incomplete.is_empty() {
                p.ok { "Every delivered handoff had turns and all its messages acknowledged." }
            } @else {
                ul.checks {
                    @for h in &incomplete {
                        li.fail {
                            a href=(format!("/inbox/{}", h.session_id)) { "Session " (h.session_id) }
                            @if h.turn_count == 0 { ": no turns were recorded before the handoff." } @else { ": " (h.messages_acked) " of " (h.messages_total.unwrap_or(0)) " messages acknowledged." }
                        }
                    }
                }
            }
        }
    };
    html_response(
        StatusCode::OK,
        layout("Troubleshooting", &caller, Nav::Troubleshooting, body),
    )
}

// ---------------------------------------------------------------------------
// Settings → Integrations → Salesforce → MIAW

/// The MIAW form as submitted.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SalesforceForm {
    scrt_url: String,
    org_id: String,
    deployment_name: String,
    jwt_key_id: String,
    jwt_issuer: String,
    jwt_algorithm: String,
    jwt_private_key: String,
    remove_private_key: String,
    attr_session_id: String,
    attr_caller_phone: String,
    attr_handoff_reason: String,
    attr_handoff_mode: String,
    attr_preferred_channel: String,
}

impl SalesforceForm {
    fn from_settings(s: &MiawSettings) -> Self {
        SalesforceForm {
            scrt_url: s.scrt_url.clone(),
            org_id: s.org_id.clone(),
            deployment_name: s.deployment_name.clone(),
            jwt_key_id: s.jwt_key_id.clone(),
            jwt_issuer: s.jwt_issuer.clone(),
            jwt_algorithm: s.jwt_algorithm.clone(),
            attr_session_id: s.routing_attributes.session_id.clone(),
            attr_caller_phone: s.routing_attributes.caller_phone.clone(),
            attr_handoff_reason: s.routing_attributes.handoff_reason.clone(),
            attr_handoff_mode: s.routing_attributes.handoff_mode.clone(),
            attr_preferred_channel: s.routing_attributes.preferred_channel.clone(),
            ..Default::default()
        }
    }

    fn to_input(&self) -> MiawSettingsInput {
        let d = RoutingAttributeNames::default();
        let pick = |v: &str, default: String| {
            if v.trim().is_empty() {
                default
            } else {
                v.trim().to_string()
            }
        };
        MiawSettingsInput {
            settings: MiawSettings {
                scrt_url: self.scrt_url.clone(),
                org_id: self.org_id.clone(),
                deployment_name: self.deployment_name.clone(),
                jwt_key_id: self.jwt_key_id.clone(),
                jwt_issuer: self.jwt_issuer.clone(),
                jwt_algorithm: self.jwt_algorithm.clone(),
                routing_attributes: RoutingAttributeNames {
                    session_id: pick(&self.attr_session_id, d.session_id),
                    caller_phone: pick(&self.attr_caller_phone, d.caller_phone),
                    handoff_reason: pick(&self.attr_handoff_reason, d.handoff_reason),
                    handoff_mode: pick(&self.attr_handoff_mode, d.handoff_mode),
                    preferred_channel: pick(&self.attr_preferred_channel, d.preferred_channel),
                },
            },
            jwt_private_key: if !self.remove_private_key.is_empty() {
                Some(String::new())
            } else if self.jwt_private_key.trim().is_empty() {
                None
            } else {
                Some(self.jwt_private_key.clone())
            },
        }
    }
}

fn destination_banner(d: &Destination) -> Markup {
    html! {
        @match d {
            Destination::Sandbox { url } => {
                p.status.warn role="status" { "No Salesforce org is configured: handoffs go to the built-in MIAW sandbox at " code { (url) } ". See what a rep would see in the " a href="/sandbox" { "sandbox console" } "." }
            }
            Destination::Salesforce { url } => { p.status.ok role="status" { "Handoffs go to Salesforce at " code { (url) } "." } }
            Destination::NotConfigured { problems } => {
                div.error role="alert" { "Handoffs are waiting: the settings are incomplete or invalid. " @for p in problems { br; (p) } }
            }
        }
    }
}

fn source_note(sources: &std::collections::BTreeMap<String, Source>, field: &str) -> Markup {
    html! {
        @match sources.get(field) {
            Some(Source::ConfigFile) => { small.source { "Set in the config file (or its SWITCHBOARD_SALESFORCE_* variable); change it there." } }
            Some(Source::Dashboard) => { small.source { "Saved here." } }
            _ => {}
        }
    }
}

fn errors_for(errors: &[(String, String)], field: &str) -> Markup {
    html! {
        @for (f, m) in errors.iter().filter(|(f, _)| f == field || f.ends_with(&format!(".{}", field.trim_start_matches("attr_")))) {
            span.field-error id=(format!("{field}-error")) data-field=(f) { (m) }
        }
    }
}

fn sf_input(
    label: &str,
    name: &str,
    value: &str,
    hint: &str,
    eff: &EffectiveSettings,
    errors: &[(String, String)],
) -> Markup {
    let from_config = matches!(eff.sources.get(name), Some(Source::ConfigFile));
    let invalid = errors.iter().any(|(f, _)| f == name);
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) name=(name) value=(value) readonly[from_config] aria-invalid=[invalid.then_some("true")];
            @if !hint.is_empty() { small { (hint) } }
            (source_note(&eff.sources, name))
            (errors_for(errors, name))
        }
    }
}

async fn render_integrations(
    s: &AppState,
    caller: &Caller,
    form: Option<&SalesforceForm>,
    errors: &[(String, String)],
    test: Option<&ConnectionTest>,
    notice: Option<&str>,
    status: StatusCode,
) -> Response {
    let Some(settings) = s.salesforce.as_deref() else {
        return page_error(ApiError::Unavailable);
    };
    let eff = match settings.effective().await {
        Ok(e) => e,
        Err(e) => return page_error(e),
    };
    let saved_form = SalesforceForm::from_settings(&eff.settings);
    let f = form.unwrap_or(&saved_form);
    let body = html! {
        section aria-labelledby="sf-h" {
            h2 id="sf-h" { "Salesforce → MIAW" }
            (destination_banner(&eff.destination))
            @if let Some(n) = notice { div.notice role="status" { (n) } }
            @if !errors.is_empty() { div.error role="alert" { "Not saved: " (errors.len()) " field(s) need attention." } }
            p.muted { "Copy these from Salesforce: Setup → Embedded Service Deployments → your " strong { "Custom Client" } " deployment → Code Snippet (SCRT URL, org id, API name); and Setup → Enhanced Chat User Verification for the key id and issuer. Leave the connection fields empty to use the built-in sandbox. " a href="https://developer.salesforce.com/docs/service/messaging-api/overview" { "MIAW API" } }
            form method="post" action="/settings/integrations/salesforce" {
                (csrf_field(caller))
                fieldset {
                    legend { "Connection" }
                    (sf_input("SCRT URL", "scrt_url", &f.scrt_url, "https://<domain>.my.salesforce-scrt.com", &eff, errors))
                    (sf_input("Salesforce org id", "org_id", &f.org_id, "15 or 18 characters, beginning 00D", &eff, errors))
                    (sf_input("Embedded Service deployment API name", "deployment_name", &f.deployment_name, "esDeveloperName; must be a Custom Client deployment", &eff, errors))
                }
                fieldset {
                    legend { "Identity (authenticated callers)" }
                    p.muted { "Callers matched to a contact get an authenticated identity signed with this key; others an unauthenticated token carrying their number." }
                    (sf_input("JWT key id", "jwt_key_id", &f.jwt_key_id, "The kid of the key registered in the User Verification keyset", &eff, errors))
                    (sf_input("JWT issuer", "jwt_issuer", &f.jwt_issuer, "The keyset's JSON web key issuer (iss)", &eff, errors))
                    div.field {
                        label for="jwt_algorithm" { "Signing algorithm" }
                        select id="jwt_algorithm" name="jwt_algorithm" {
                            @for a in ["RS256", "RS512"] { option value=(a) selected[f.jwt_algorithm == a] { (a) } }
                        }
                    }
                    div.field {
                        label for="jwt_private_key" { "JWT private key (PEM)" }
                        textarea id="jwt_private_key" name="jwt_private_key" rows="4" autocomplete="off" spellcheck="false"
                            placeholder=(if eff.private_key_set { "A key is stored. Paste a new one to replace it." } else { "-----BEGIN PRIVATE KEY-----" }) {}
                        small { "Write-only: it is stored encrypted and never shown again. Create one with " code { "switchboard salesforce keygen" } "." }
                        (source_note(&eff.sources, "jwt_private_key"))
                        (errors_for(errors, "jwt_private_key"))
                        @if eff.private_key_set {
                            label.check { input type="checkbox" name="remove_private_key" value="1"; " Remove the stored key" }
                        }
                    }
                }
                fieldset {
                    legend { "Routing attributes" }
                    p.muted { "Channel Variable Names of the hidden pre-chat fields. Salesforce silently drops any name it does not know — Test connection checks them." }
                    (sf_input("Session id", "attr_session_id", &f.attr_session_id, "OpencxSessionId keeps orgs set up for OpenCX working unchanged", &eff, errors))
                    (sf_input("Caller phone", "attr_caller_phone", &f.attr_caller_phone, "", &eff, errors))
                    (sf_input("Handoff reason", "attr_handoff_reason", &f.attr_handoff_reason, "", &eff, errors))
                    (sf_input("Handoff mode", "attr_handoff_mode", &f.attr_handoff_mode, "", &eff, errors))
                    (sf_input("Preferred channel", "attr_preferred_channel", &f.attr_preferred_channel, "", &eff, errors))
                }
                button type="submit" { "Save" }
            }
            form method="post" action="/settings/integrations/salesforce/test" {
                (csrf_field(caller))
                button.secondary type="submit" { "Test connection" }
            }
            @if let Some(t) = test {
                div id="connection-test" class=(if t.ok { "notice" } else { "error" }) role="status" {
                    p { strong { @if t.ok { "Connection works." } @else { "Connection test failed." } } }
                    ul.checks {
                        @for step in &t.steps {
                            li class=(if step.ok { "ok" } else { "fail" }) { strong { (step.name) } ": " (step.detail) }
                        }
                    }
                }
            }
        }
    };
    html_response(
        status,
        layout("Integrations", caller, Nav::Integrations, body),
    )
}

pub async fn integrations_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SavedQuery>,
) -> Response {
    let notice = q
        .saved
        .then_some("Saved. Handoffs waiting for settings were queued again.");
    render_integrations(&s, &caller, None, &[], None, notice, StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SavedQuery {
    saved: bool,
}

pub async fn salesforce_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<SalesforceForm>,
) -> Response {
    let Some(settings) = s.salesforce.clone() else {
        return page_error(ApiError::Unavailable);
    };
    let key_changed =
        !form.jwt_private_key.trim().is_empty() || !form.remove_private_key.is_empty();
    match settings.save(form.to_input()).await {
        Ok(_) => {
            s.handoff_notify.notify_one();
            audit(
                &s,
                &caller,
                "settings.salesforce",
                "miaw",
                json!({ "private_key_changed": key_changed }),
            )
            .await;
            see_other("/settings/integrations?saved=true")
        }
        Err(e) => match ApiError::from(e) {
            ApiError::InvalidMany { errors } => {
                let errors: Vec<(String, String)> = errors
                    .into_iter()
                    .map(|(f, m)| (f.replacen("routing_attributes.", "attr_", 1), m))
                    .collect();
                render_integrations(
                    &s,
                    &caller,
                    Some(&form),
                    &errors,
                    None,
                    None,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
            other => page_error(other),
        },
    }
}

pub async fn salesforce_test_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let Some(settings) = s.salesforce.clone() else {
        return page_error(ApiError::Unavailable);
    };
    let test = settings.test_connection().await;
    render_integrations(&s, &caller, None, &[], Some(&test), None, StatusCode::OK).await
}

pub async fn sandbox_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let body = match &s.sandbox {
        Some(sandbox) => html! {
            p.muted { "The built-in MIAW sandbox: what a Salesforce rep would see for each handoff — the Omni-Channel queue, the routing attributes and the transcript messages. It keeps conversations in memory until the server restarts." }
            // The console's rep forms post to /sandbox/console/…, which the
            // dashboard serves too (below); as dashboard forms they carry the
            // login's CSRF token.
            div.console { (PreEscaped(with_csrf(&sandbox.console_html(), caller.csrf_token()))) }
        },
        None => {
            html! { p.empty { "The sandbox does not run in this server (a Salesforce org is configured, or it runs on its own with " code { "switchboard sandbox" } ")." } }
        }
    };
    html_response(
        StatusCode::OK,
        layout("Salesforce sandbox", &caller, Nav::Integrations, body),
    )
}

/// Adds the CSRF field to every POST form of embedded HTML.
fn with_csrf(html: &str, token: &str) -> String {
    let field = html! { input type="hidden" name="csrf" value=(token); }.into_string();
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find("<form method=\"post\"") {
        let Some(end) = rest[i..].find('>') else {
            break;
        };
        out.push_str(&rest[..i + end + 1]);
        out.push_str(&field);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RepForm {
    text: String,
}

/// The sandbox rep's actions, from the dashboard's embedded console.
pub async fn sandbox_rep_submit(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<RepForm>,
) -> Response {
    let Some(sandbox) = &s.sandbox else {
        return page_error(ApiError::not_found("sandbox", "this server"));
    };
    let Some(conversation) = id.parse().ok().and_then(|c| sandbox.conversation(c)) else {
        return page_error(ApiError::not_found("conversation", id));
    };
    match action.as_str() {
        "accept" => sandbox.rep_accept(conversation.id),
        "reply" if !form.text.trim().is_empty() => {
            sandbox.rep_send(conversation.id, form.text.trim())
        }
        "reply" => {}
        "end" => sandbox.rep_end_chat(conversation.id),
        other => return page_error(ApiError::not_found("action", other)),
    }
    see_other("/sandbox")
}

pub async fn redrive_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Ok(session) = id.parse::<SessionId>() else {
        return page_error(ApiError::not_found("session", id));
    };
    let handoff = match s.store.handoff_for_session(session).await {
        Ok(Some(h)) => h,
        Ok(None) => return page_error(ApiError::not_found("handoff", session)),
        Err(e) => return page_error(e),
    };
    if let Err(e) = s.store.redrive_handoff(handoff.id).await {
        return page_error(e);
    }
    s.handoff_notify.notify_one();
    audit(
        &s,
        &caller,
        "handoff.redrive",
        &handoff.id.to_string(),
        json!({}),
    )
    .await;
    see_other(&format!("/inbox/{session}"))
}
