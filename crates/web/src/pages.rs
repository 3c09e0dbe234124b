//! The dashboard: server-rendered pages (maud), one stylesheet and a few
//! lines of script inlined in each page, so nothing is fetched from anywhere
//! and there is no public asset route.
//!
//! Forms post back to the same resources; validation errors re-render the
//! form with the submitted values and the message next to the field.

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
use switchboard_model::{
    Agent, AgentId, AgentInput, Brain, ContactInput, HandoffMode, RoutingAttributeNames, SessionId,
    SttProvider, Timestamp, TokenId, TtsProvider, E164,
};
use switchboard_store::SessionFilter;

use crate::api::audit;
use crate::auth::{safe_next, see_other, Caller, SESSION_COOKIE};
use crate::error::ApiError;
use crate::AppState;

const CSS: &str = include_str!("dashboard.css");
const SCRIPT: &str = include_str!("dashboard.js");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nav {
    Phone,
    Inbox,
    Contacts,
    Integrations,
    Tokens,
    Troubleshooting,
}

pub(crate) fn html(status: StatusCode, markup: Markup) -> Response {
    html_response(status, markup)
}

fn html_response(status: StatusCode, markup: Markup) -> Response {
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

fn layout(title: &str, caller: &Caller, active: Nav, body: Markup) -> Markup {
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

fn time(t: Timestamp) -> Markup {
    html! { time datetime=(t.to_rfc3339()) title=(format!("{} UTC", t.to_rfc3339())) { (t.to_rfc3339()) } }
}

fn csrf_field(caller: &Caller) -> Markup {
    html! { input type="hidden" name="csrf" value=(caller.csrf_token()); }
}

fn error_banner(error: Option<&ApiError>) -> Markup {
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
fn page_error(e: impl Into<ApiError>) -> Response {
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
    let (agents, numbers) = match (
        s.store.list_agents().await,
        s.store.list_numbers(None).await,
    ) {
        (Ok(a), Ok(n)) => (a, n),
        (Err(e), _) | (_, Err(e)) => return page_error(e),
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
                thead { tr { th { "Agent" } th { "Numbers" } th { "Handoff" } th { "Brain" } } }
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
                            td { (mode_label(a.spec.handoff_mode)) @if let Some(n) = &a.spec.handoff_number { " → " (n.as_str()) } }
                            td { (a.spec.brain.as_str()) }
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
        })
    }
}

fn field_error(error: Option<&ApiError>, field: &str) -> Markup {
    html! {
        @if let Some(e) = error.filter(|e| e.field().is_some_and(|f| f == field || f.ends_with(&format!(".{field}")))) {
            span.field-error id=(format!("{field}-error")) { (e.to_string()) }
        }
    }
}

fn text_input(
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

fn select<T: Copy + std::fmt::Display>(
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

async fn find_agent_by_path(s: &AppState, id: &str) -> Result<Agent, ApiError> {
    let id = id
        .parse::<AgentId>()
        .map_err(|_| ApiError::not_found("agent", id))?;
    Ok(s.store.agent(id).await?)
}

pub async fn agent_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match find_agent_by_path(&s, &id).await {
        Ok(agent) => {
            render_agent(
                &s,
                &caller,
                &agent,
                &AgentForm::from_agent(&agent),
                None,
                None,
                StatusCode::OK,
            )
            .await
        }
        Err(e) => page_error(e),
    }
}

pub async fn update_agent_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<AgentForm>,
) -> Response {
    let agent = match find_agent_by_path(&s, &id).await {
        Ok(a) => a,
        Err(e) => return page_error(e),
    };
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
    Path(id): Path<String>,
) -> Response {
    let agent = match find_agent_by_path(&s, &id).await {
        Ok(a) => a,
        Err(e) => return page_error(e),
    };
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
    Path(id): Path<String>,
    Form(form): Form<NumberForm>,
) -> Response {
    let agent = match find_agent_by_path(&s, &id).await {
        Ok(a) => a,
        Err(e) => return page_error(e),
    };
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
    Path(id): Path<String>,
    Form(form): Form<NumberForm>,
) -> Response {
    let agent = match find_agent_by_path(&s, &id).await {
        Ok(a) => a,
        Err(e) => return page_error(e),
    };
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

pub async fn inbox_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let sessions = match s
        .store
        .list_sessions(&SessionFilter {
            limit: 100,
            ..Default::default()
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return page_error(e),
    };
    let agents: HashMap<AgentId, String> = match s.store.list_agents().await {
        Ok(list) => list.into_iter().map(|a| (a.id, a.spec.name)).collect(),
        Err(e) => return page_error(e),
    };
    let body = html! {
        @if sessions.is_empty() {
            p.empty { "No calls yet. Calls and text sessions appear here as they happen." }
        } @else {
            table {
                thead { tr { th { "Started" } th { "Agent" } th { "Direction" } th { "From" } th { "To" } th { "Status" } th { "Outcome" } } }
                tbody {
                    @for x in &sessions {
                        tr {
                            td { a href=(format!("/inbox/{}", x.id)) { (time(x.started_at)) } }
                            td { (x.agent_id.and_then(|a| agents.get(&a)).map_or("—", |n| n.as_str())) }
                            td { (x.direction.as_str()) }
                            td { (x.from) }
                            td { (x.to) }
                            td { (x.status.as_str()) }
                            td { (x.outcome.map_or("—", |o| o.as_str())) }
                        }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, layout("Inbox", &caller, Nav::Inbox, body))
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
    let body = html! {
        dl.meta {
            dt { "Session id" } dd { code { (d.session.id) } }
            dt { "Direction" } dd { (d.session.direction.as_str()) }
            dt { "From" } dd { (d.session.from) }
            dt { "To" } dd { (d.session.to) }
            dt { "Started" } dd { (time(d.session.started_at)) }
            dt { "Status" } dd { (d.session.status.as_str()) }
            dt { "Outcome" } dd { (d.session.outcome.map_or("—", |o| o.as_str())) }
        }
        section aria-labelledby="transcript-h" {
            h2 id="transcript-h" { "Transcript" }
            @if d.turns.is_empty() { p.muted { "No turns were recorded." } }
            ol.transcript {
                @for t in &d.turns {
                    li class=(t.speaker.as_str()) {
                        span.speaker { (t.speaker.as_str()) } " " (time(t.started_at))
                        p { (t.text) }
                    }
                }
            }
        }
        section aria-labelledby="trace-h" {
            h2 id="trace-h" { "Reasoning trace" }
            @if d.trace.is_empty() { p.muted { "No trace steps were recorded." } }
            @for step in &d.trace {
                details {
                    summary { (step.kind) @if let Some(t) = step.turn_seq { " · turn " (t) } @if let Some(ms) = step.latency_ms { " · " (ms) " ms" } }
                    pre { (serde_json::to_string_pretty(&step.payload).unwrap_or_default()) }
                }
            }
        }
        section aria-labelledby="handoff-h" {
            h2 id="handoff-h" { "Handoff" }
            @match &d.handoff {
                None => { p.muted { "This call was not handed off." } }
                Some(h) => {
                    dl.meta {
                        dt { "Mode" } dd { (mode_label(h.mode)) }
                        dt { "Reason" } dd { (h.reason) }
                        dt { "Summary" } dd { (h.summary) }
                        dt { "Delivery" } dd { (h.status.as_str()) " (" (h.attempts) " attempts)" }
                        @if let Some(c) = &h.conversation_id { dt { "Salesforce conversation" } dd { code { (c) } } }
                        @if let Some(e) = &h.last_error { dt { "Last error" } dd.error-text { (e) } }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, layout("Session", &caller, Nav::Inbox, body))
}

// ---------------------------------------------------------------------------
// Contacts

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContactsQuery {
    q: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContactForm {
    phone: String,
    name: String,
    email: String,
    external_id: String,
}

async fn render_contacts(
    s: &AppState,
    caller: &Caller,
    q: &str,
    form: &ContactForm,
    error: Option<&ApiError>,
    status: StatusCode,
) -> Response {
    let contacts = match s.store.list_contacts(q, 200, 0).await {
        Ok(c) => c,
        Err(e) => return page_error(e),
    };
    let body = html! {
        form.inline role="search" method="get" action="/contacts" {
            label for="q" { "Search" }
            input id="q" name="q" value=(q) placeholder="Name, phone or email";
            button type="submit" { "Search" }
        }
        @if contacts.is_empty() { p.empty { "No contacts. Callers whose number matches a contact get an authenticated Salesforce identity." } }
        @else {
            table {
                thead { tr { th { "Name" } th { "Phone" } th { "Email" } th { "External id" } } }
                tbody { @for c in &contacts { tr { td { (c.name) } td { (c.phone.as_str()) } td { (c.email.as_deref().unwrap_or("")) } td { (c.external_id.as_deref().unwrap_or("")) } } } }
            }
        }
        h2 { "Add a contact" }
        (error_banner(error))
        form method="post" action="/contacts" {
            (csrf_field(caller))
            (text_input("Phone", "phone", &form.phone, "", error))
            (text_input("Name", "name", &form.name, "", error))
            (text_input("Email", "email", &form.email, "", error))
            (text_input("External id", "external_id", &form.external_id, "The contact's id in your CRM", error))
            button type="submit" { "Add contact" }
        }
        p.muted { "Bulk import: " code { "switchboard contacts import FILE.csv" } }
    };
    html_response(status, layout("Contacts", caller, Nav::Contacts, body))
}

pub async fn contacts_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ContactsQuery>,
) -> Response {
    render_contacts(
        &s,
        &caller,
        &q.q,
        &ContactForm::default(),
        None,
        StatusCode::OK,
    )
    .await
}

pub async fn create_contact_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<ContactForm>,
) -> Response {
    let input = ContactInput {
        phone: form.phone.clone(),
        name: form.name.clone(),
        email: Some(form.email.clone()),
        external_id: Some(form.external_id.clone()),
    };
    let result = async {
        let spec = input.validate(s.settings.default_region)?;
        Ok::<_, ApiError>(s.store.create_contact(&spec).await?)
    }
    .await;
    match result {
        Ok(c) => {
            audit(&s, &caller, "contact.create", &c.id.to_string(), json!({})).await;
            see_other("/contacts")
        }
        Err(e) if e.status().is_client_error() => {
            render_contacts(&s, &caller, "", &form, Some(&e), e.status()).await
        }
        Err(e) => page_error(e),
    }
}

// ---------------------------------------------------------------------------
// Settings

pub async fn integrations_page(Extension(caller): Extension<Caller>) -> Response {
    let body = html! {
        section aria-labelledby="sf-h" {
            h2 id="sf-h" { "Salesforce → MIAW" }
            p.status.warn { "Not connected." }
            p { "Handoffs to Salesforce Messaging for In-App and Web are not available in this build yet: the connection settings (SCRT URL, org id, Embedded Service deployment, JWT key id, private key and issuer) and the connection test arrive with the Salesforce handoff feature." }
        }
    };
    html_response(
        StatusCode::OK,
        layout("Integrations", &caller, Nav::Integrations, body),
    )
}

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

pub async fn troubleshooting_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let db = s.store.ping().await;
    let agents = s.store.list_agents().await.unwrap_or_default();
    let numbers = s.store.list_numbers(None).await.unwrap_or_default();
    let unreachable: Vec<&Agent> = agents
        .iter()
        .filter(|a| !numbers.iter().any(|n| n.agent_id == Some(a.id)))
        .collect();
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
        section aria-labelledby="transcript-h" {
            h2 id="transcript-h" { "Transcript missing" }
            p { "The transcript is attached to the Salesforce conversation at handoff time, not live. Open the session in the " a href="/inbox" { "Inbox" } " to see whether its turns were recorded." }
        }
        section aria-labelledby="conv-h" {
            h2 id="conv-h" { "Handoff not creating a conversation" }
            p.status.warn { "Salesforce MIAW is not connected in this build, so no conversation can be created yet." }
        }
    };
    html_response(
        StatusCode::OK,
        layout("Troubleshooting", &caller, Nav::Troubleshooting, body),
    )
}
