//! The rep console (server-rendered HTML, every value escaped by maud) and
//! the `/sandbox/api` control routes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use uuid::Uuid;

use super::api::ApiError;
use super::{Sandbox, SandboxConversation, ScopedFault};

pub(super) fn router(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/sandbox/console", get(console_page))
        .route(
            "/sandbox/console/conversations/{id}/accept",
            post(form_accept),
        )
        .route(
            "/sandbox/console/conversations/{id}/reply",
            post(form_reply),
        )
        .route("/sandbox/console/conversations/{id}/end", post(form_end))
        .route("/sandbox/api/conversations", get(api_conversations))
        .route("/sandbox/api/conversations/{id}/accept", post(api_accept))
        .route("/sandbox/api/conversations/{id}/end", post(api_end))
        .route(
            "/sandbox/api/conversations/{id}/messages",
            post(api_message),
        )
        .route(
            "/sandbox/api/faults",
            get(api_faults)
                .post(api_push_faults)
                .delete(api_clear_faults),
        )
        .with_state(sandbox)
}

const STYLE: &str = "
.sandbox-console{font-family:system-ui,sans-serif;font-size:14px;color:#1b1b1b;max-width:72rem}
.sandbox-console h2{font-size:1.2rem;margin:.5rem 0}
.sandbox-console h3{font-size:1rem;margin:.25rem 0}
.sandbox-console table{border-collapse:collapse;margin:.25rem 0}
.sandbox-console th,.sandbox-console td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}
.sandbox-console .conv{border:1px solid #bbb;border-radius:6px;padding:.5rem .75rem;margin:.75rem 0}
.sandbox-console .meta{color:#555}
.sandbox-console .msg{margin:.15rem 0;white-space:pre-wrap}
.sandbox-console .EndUser{color:#0b4f8a}.sandbox-console .Agent{color:#0a6b2d}.sandbox-console .System{color:#666}
.sandbox-console form{display:inline-block;margin:.25rem .5rem .25rem 0}
.sandbox-console .badge{display:inline-block;padding:0 .4rem;border-radius:4px;background:#eee}
";

/// The console as an embeddable fragment.
pub(super) fn render_fragment(sandbox: &Sandbox) -> String {
    fragment(sandbox).into_string()
}

fn fragment(sandbox: &Sandbox) -> Markup {
    let config = sandbox.config();
    let conversations = sandbox.conversations();
    let open: Vec<&SandboxConversation> = conversations
        .iter()
        .filter(|c| c.status == "open")
        .collect();
    let faults = sandbox.faults().list();
    html! {
        section.sandbox-console {
            style { (PreEscaped(STYLE)) }
            h2 { "Salesforce sandbox — Omni-Channel" }
            p.meta {
                "Org " code { (config.org_id) } " · deployment " code { (config.deployment_name) }
                " · User Verification " (if config.user_verification { "on" } else { "off" })
                " · rep " (config.rep.rep_name)
                " · " (sandbox.request_count()) " API requests"
                @if !faults.is_empty() { " · " span.badge { (faults.len()) " active fault(s)" } }
            }
            h3 { "Queue" }
            @if open.is_empty() {
                p.meta { "No open conversations." }
            } @else {
                table {
                    tr { th { "Conversation" } th { "End user" } th { "Waiting since" } th { "State" } }
                    @for c in &open {
                        tr {
                            td { a href={ "#c-" (c.id) } { code { (c.id) } } }
                            td { (end_user(c)) }
                            td { (time(c.created_at_ms)) }
                            td { @match &c.rep_joined { Some(rep) => { "with " (rep) }, None => { "waiting" } } }
                        }
                    }
                }
            }
            h3 { "Conversations" }
            @if conversations.is_empty() {
                p.meta { "None yet: a handoff creates one." }
            }
            @for c in conversations.iter().rev() {
                (conversation(c))
            }
        }
    }
}

fn end_user(c: &SandboxConversation) -> Markup {
    html! {
        @if c.authenticated { "verified: " code { (c.end_user) } } @else { "guest" }
    }
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn conversation(c: &SandboxConversation) -> Markup {
    let base = format!("/sandbox/console/conversations/{}", c.id);
    html! {
        div.conv id={ "c-" (c.id) } {
            p {
                strong { "Conversation " code { (c.id) } }
                " · " span.badge { (c.status) } " · routing " (c.routing_status)
                " · " (end_user(c))
                " · sessions " (c.sessions)
                " · rep " (c.rep_joined.as_deref().unwrap_or("none"))
            }
            p.meta { "created " (time(c.created_at_ms)) }
            @if c.routing_attributes.is_empty() {
                p.meta { "No routing attributes." }
            } @else {
                table {
                    tr { th { "Routing attribute" } th { "Value" } }
                    @for (k, v) in &c.routing_attributes { tr { td { code { (k) } } td { (v) } } }
                }
            }
            @if !c.ignored_routing_attributes.is_empty() {
                p.meta {
                    "Ignored (not hidden pre-chat fields, Salesforce drops them): "
                    @for (i, k) in c.ignored_routing_attributes.iter().enumerate() {
                        @if i > 0 { ", " } code { (k) }
                    }
                }
            }
            div {
                @for m in &c.messages {
                    div.msg.(m.sender_role) {
                        span.meta { "[" (time(m.received_at_ms)) "] " } strong { (m.sender_role) ": " } (m.text)
                    }
                }
            }
            @if c.status == "open" {
                @if c.rep_joined.is_none() {
                    form method="post" action={ (base) "/accept" } { button type="submit" { "Accept" } }
                }
                form method="post" action={ (base) "/reply" } {
                    input type="text" name="text" placeholder="Reply as the rep" size="50" required;
                    " " button type="submit" { "Send" }
                }
                form method="post" action={ (base) "/end" } { button type="submit" { "End chat" } }
            }
        }
    }
}

fn page(sandbox: &Sandbox, refresh: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="2"; }
                title { "Switchboard — Salesforce sandbox console" }
            }
            body {
                p {
                    @if refresh {
                        a href="/sandbox/console?refresh=0" { "Pause auto-refresh (to type a reply)" }
                    } @else {
                        a href="/sandbox/console" { "Resume auto-refresh" }
                    }
                }
                (fragment(sandbox))
            }
        }
    }
}

async fn console_page(
    State(sandbox): State<Sandbox>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let refresh = query.get("refresh").is_none_or(|v| v != "0");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page(&sandbox, refresh).into_string(),
    )
        .into_response()
}

fn console_id(id: &str) -> Result<Uuid, ApiError> {
    let id = Uuid::parse_str(id)
        .map_err(|_| ApiError::bad_request(format!("'{id}' is not a conversation id")))?;
    Ok(id)
}

fn known(sandbox: &Sandbox, id: &str) -> Result<Uuid, ApiError> {
    let id = console_id(id)?;
    sandbox
        .conversation(id)
        .map(|c| c.id)
        .ok_or_else(|| ApiError::not_found(format!("no conversation {id} in the sandbox")))
}

#[derive(Deserialize)]
struct ReplyForm {
    text: String,
}

async fn form_accept(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
) -> Result<Redirect, ApiError> {
    let id = known(&sandbox, &id)?;
    sandbox.rep_accept(id);
    Ok(Redirect::to("/sandbox/console?refresh=0"))
}

async fn form_reply(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    Form(form): Form<ReplyForm>,
) -> Result<Redirect, ApiError> {
    let id = known(&sandbox, &id)?;
    sandbox.rep_send(id, &form.text);
    Ok(Redirect::to("/sandbox/console?refresh=0"))
}

async fn form_end(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
) -> Result<Redirect, ApiError> {
    let id = known(&sandbox, &id)?;
    sandbox.rep_end_chat(id);
    Ok(Redirect::to("/sandbox/console"))
}

async fn api_conversations(State(sandbox): State<Sandbox>) -> Json<Vec<SandboxConversation>> {
    Json(sandbox.conversations())
}

async fn api_accept(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
) -> Result<Json<SandboxConversation>, ApiError> {
    let id = known(&sandbox, &id)?;
    sandbox.rep_accept(id);
    sandbox
        .conversation(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("gone"))
}

async fn api_end(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
) -> Result<Json<SandboxConversation>, ApiError> {
    let id = known(&sandbox, &id)?;
    sandbox.rep_end_chat(id);
    sandbox
        .conversation(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("gone"))
}

async fn api_message(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<SandboxConversation>, ApiError> {
    let id = known(&sandbox, &id)?;
    #[derive(Deserialize)]
    struct Body {
        text: String,
    }
    let body: Body = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"text\": ...}}: {e}")))?;
    sandbox.rep_send(id, &body.text);
    sandbox
        .conversation(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("gone"))
}

async fn api_faults(State(sandbox): State<Sandbox>) -> Json<Vec<ScopedFault>> {
    Json(sandbox.faults().list())
}

/// Appends the faults in the body (a JSON list); answers the active list.
async fn api_push_faults(
    State(sandbox): State<Sandbox>,
    body: axum::body::Bytes,
) -> Result<Json<Vec<ScopedFault>>, ApiError> {
    let faults: Vec<ScopedFault> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON list of faults such as [{{\"kind\":\"status\",\"status\":429}}]: {e}"
        ))
    })?;
    for f in &faults {
        if let super::Fault::Status { status, .. } = f.fault {
            if !(400..=599).contains(&status) {
                return Err(ApiError::bad_request(format!(
                    "status {status} must be an error status (400-599)"
                )));
            }
        }
    }
    for f in faults {
        sandbox.faults().push_scoped(f.fault, f.scope);
    }
    Ok(Json(sandbox.faults().list()))
}

async fn api_clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.faults().clear();
    StatusCode::NO_CONTENT
}
