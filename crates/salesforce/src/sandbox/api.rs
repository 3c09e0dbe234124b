//! The MIAW REST endpoints of the sandbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{verify_identity, AccessClaims};
use super::{message_payload, now_ms, ConvStatus, Entry, Shared, CHANNEL_ID};

const API: &str = "/iamessage/api/v2";

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            &format!("{API}/authorization/unauthenticated/access-token"),
            post(unauthenticated_token),
        )
        .route(
            &format!("{API}/authorization/authenticated/access-token"),
            post(authenticated_token),
        )
        .route(
            &format!("{API}/authorization/continuation-access-token"),
            get(continuation_token),
        )
        .route(&format!("{API}/conversation"), post(create_conversation))
        .route(&format!("{API}/conversation/list"), get(list_conversations))
        .route(
            &format!("{API}/conversation/{{id}}"),
            get(conversation_status).delete(close_conversation),
        )
        .route(
            &format!("{API}/conversation/{{id}}/session"),
            axum::routing::delete(end_session),
        )
        .route(
            &format!("{API}/conversation/{{id}}/message"),
            post(send_message),
        )
        .route(
            &format!("{API}/conversation/{{id}}/entries"),
            get(list_entries),
        )
        .route(
            &format!("{API}/conversation/{{id}}/entry"),
            post(typing_entry),
        )
        .route(
            &format!("{API}/conversation/{{id}}/acknowledge-entries"),
            post(acknowledge_entries),
        )
        .with_state(shared)
}

/// An error answer: JSON `{"message": ..., "code": ...}` with the status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status.as_u16() {
            400 => "INVALID_REQUEST",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            409 => "CONFLICT",
            413 => "PAYLOAD_TOO_LARGE",
            429 => "TOO_MANY_REQUESTS",
            503 => "SERVICE_UNAVAILABLE",
            504 => "GATEWAY_TIMEOUT",
            s if s >= 500 => "SERVER_ERROR",
            _ => "ERROR",
        };
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn server(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "message": self.message, "code": self.code })),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn string_field<'a>(
    body: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

fn required<'a>(
    body: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<&'a str, ApiError> {
    string_field(body, field)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{field} is required")))
}

/// The lowercase hyphenated UUID Salesforce requires for client ids.
fn lowercase_uuid(field: &str, value: &str) -> Result<Uuid, ApiError> {
    match Uuid::parse_str(value) {
        Ok(id) if id.hyphenated().to_string() == value => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "{field} '{value}' must be a lowercase UUID such as 3f2504e0-4f89-41d3-9a0c-0305e82c3301"
        ))),
    }
}

fn check_deployment(shared: &Shared, name: Option<&str>) -> Result<(), ApiError> {
    let expected = shared.lock().config.deployment_name.clone();
    match name {
        None | Some("") => Err(ApiError::bad_request("esDeveloperName is required")),
        Some(n) if n == expected => Ok(()),
        Some(n) => Err(ApiError::bad_request(format!(
            "no Embedded Service deployment named '{n}' in this org: esDeveloperName must be the API name of a published Custom Client deployment"
        ))),
    }
}

fn routing_attributes(value: Option<&Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "routingAttributes.{k} must be a string"
                        )))
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "routingAttributes must be an object of strings",
            ))
        }
    }
    Ok(out)
}

fn path_uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::bad_request(format!("conversation id '{id}' in the path is not a UUID"))
    })
}

// ---- tokens ----

/// Validates the common access-token request fields (org, deployment, capabilities, platform).
fn check_token_request(
    shared: &Shared,
    body: &serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    let org = required(body, "orgId")?;
    let config_org = shared.lock().config.org_id.clone();
    let well_formed = (org.len() == 15 || org.len() == 18)
        && org.starts_with("00D")
        && org.chars().all(|c| c.is_ascii_alphanumeric());
    if !well_formed {
        return Err(ApiError::bad_request(format!(
            "orgId '{org}' is not an org id (15 or 18 characters beginning 00D)"
        )));
    }
    if org.get(..15) != config_org.get(..15) {
        return Err(ApiError::bad_request(format!(
            "orgId '{org}' does not match this Messaging deployment's org"
        )));
    }
    check_deployment(shared, string_field(body, "esDeveloperName")?)?;
    match string_field(body, "capabilitiesVersion")? {
        Some("1") => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "capabilitiesVersion '{v}' is not supported; use \"1\""
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "capabilitiesVersion is required (\"1\")",
            ))
        }
    }
    required(body, "platform")?;
    Ok(())
}

async fn unauthenticated_token(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    check_token_request(&shared, &body)?;
    if shared.lock().config.user_verification {
        return Err(ApiError::forbidden(
            "User Verification is on for this Messaging channel: unauthenticated access tokens are refused; use the authenticated access-token endpoint with a customerIdentityToken",
        ));
    }
    let sub = format!("guest-{}", Uuid::new_v4());
    token_response(&shared, sub, None, StatusCode::OK)
}

async fn authenticated_token(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let body = parse_body(&body)?;
    check_token_request(&shared, &body)?;
    let config = shared.lock().config.clone();
    if !config.user_verification {
        return Err(ApiError::forbidden(
            "User Verification is off for this Messaging channel: authenticated access tokens are refused; use the unauthenticated access-token endpoint or turn User Verification on",
        ));
    }
    match string_field(&body, "authorizationType")? {
        Some("JWT") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "authorizationType '{other}' is not supported; use \"JWT\""
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "authorizationType is required (\"JWT\")",
            ))
        }
    }
    let identity = required(&body, "customerIdentityToken")?;
    let subject = verify_identity(&config, identity)?;
    token_response(
        &shared,
        format!("verified-{subject}"),
        Some(subject),
        StatusCode::OK,
    )
}

async fn continuation_token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    token_response(&shared, claims.sub, claims.verified_subject, StatusCode::OK)
}

fn token_response(
    shared: &Shared,
    sub: String,
    verified: Option<String>,
    status: StatusCode,
) -> ApiResult {
    let authenticated = verified.is_some();
    let token = shared.issue_access_token(sub, verified)?;
    let state = shared.lock();
    let config = &state.config;
    let fields: Vec<Value> = config
        .hidden_prechat_fields
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({
                "name": name, "label": name, "isHidden": true, "required": false,
                "order": i + 1, "type": "Text", "maxLength": 255,
            })
        })
        .collect();
    let body = json!({
        "accessToken": token,
        "lastEventId": state.latest_event_id().to_string(),
        "context": {
            "deviceId": Uuid::new_v4().to_string(),
            "configuration": {
                "embeddedServiceConfig": {
                    "name": config.deployment_name,
                    "deploymentType": "api",
                    "embeddedServiceMessagingChannel": {
                        "channelAddressIdentifier": CHANNEL_ID,
                        "authMode": if authenticated { "Auth" } else { "UnAuth" },
                    },
                    "forms": [{
                        "formType": "PreChat",
                        "displayContext": "Conversation",
                        "formFields": fields,
                    }],
                }
            }
        }
    });
    Ok((status, Json(body)).into_response())
}

// ---- conversations ----

async fn create_conversation(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let body = parse_body(&body)?;
    let id = lowercase_uuid("conversationId", required(&body, "conversationId")?)?;
    check_deployment(&shared, string_field(&body, "esDeveloperName")?)?;
    let attributes = routing_attributes(body.get("routingAttributes"))?;
    let (session, delay) = {
        let mut state = shared.lock();
        if let Some(existing) = state.find(id) {
            if existing.owner == claims.sub {
                // Idempotent: a retried create changes nothing.
                return Ok((StatusCode::OK, Json(json!({}))).into_response());
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("conversationId {id} is already used by another end user"),
            ));
        }
        let hidden = state.config.hidden_prechat_fields.clone();
        let now = now_ms();
        let mut conv = super::Conv {
            id,
            owner: claims.sub.clone(),
            end_user: claims.end_user(),
            authenticated: claims.authenticated(),
            created_at_ms: now,
            closed_at_ms: None,
            routing_attributes: BTreeMap::new(),
            ignored_routing_attributes: Vec::new(),
            entries: Vec::new(),
            status: ConvStatus::Open,
            routing_status: "INITIAL",
            rep: None,
            sessions: 1,
            last_timestamp: now - 1,
        };
        conv.apply_routing_attributes(&attributes, &hidden);
        state.conversations.push(conv);
        state.route(id);
        shared.notify(&state);
        tracing::info!(conversation = %id, "sandbox: conversation created and routed");
        (1, state.config.rep.accept_after)
    };
    shared.schedule_rep(id, session, delay);
    Ok((StatusCode::CREATED, Json(json!({}))).into_response())
}

/// The caller's conversation, or 404 (also for another end user's, so ids do not leak).
fn owned<'a>(
    state: &'a super::State,
    id: Uuid,
    claims: &AccessClaims,
) -> Result<&'a super::Conv, ApiError> {
    state
        .find(id)
        .filter(|c| c.owner == claims.sub)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "conversation {id} does not exist for this end user"
            ))
        })
}

fn owned_open<'a>(
    state: &'a super::State,
    id: Uuid,
    claims: &AccessClaims,
) -> Result<&'a super::Conv, ApiError> {
    let conv = owned(state, id, claims)?;
    if conv.status == ConvStatus::Closed {
        return Err(ApiError::not_found(format!("conversation {id} is closed")));
    }
    Ok(conv)
}

async fn conversation_status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let id = path_uuid(&id)?;
    let state = shared.lock();
    let conv = owned_open(&state, id, &claims)?;
    Ok(
        Json(
            json!({ "conversationId": conv.id.to_string(), "routingStatus": conv.routing_status }),
        )
        .into_response(),
    )
}

async fn close_conversation(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let id = path_uuid(&id)?;
    check_deployment(&shared, query.get("esDeveloperName").map(String::as_str))?;
    let mut state = shared.lock();
    owned_open(&state, id, &claims)?;
    state.close(id);
    shared.notify(&state);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn end_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let id = path_uuid(&id)?;
    check_deployment(&shared, query.get("esDeveloperName").map(String::as_str))?;
    let mut state = shared.lock();
    owned_open(&state, id, &claims)?;
    state.end_session(id);
    shared.notify(&state);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_conversations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let limit = parse_limit(query.get("limit"))?;
    let include_closed = query.get("inclClosedConvs").is_some_and(|v| v == "true");
    let state = shared.lock();
    let mine: Vec<&super::Conv> = state
        .conversations
        .iter()
        .filter(|c| c.owner == claims.sub)
        .collect();
    let open = mine
        .iter()
        .filter(|c| c.status != ConvStatus::Closed)
        .count();
    let closed = mine.len() - open;
    let conversations: Vec<Value> = mine
        .iter()
        .rev()
        .filter(|c| include_closed || c.status != ConvStatus::Closed)
        .take(limit)
        .map(|c| json!({ "conversationId": c.id.to_string(), "startTimestamp": c.created_at_ms, "endTimestamp": c.closed_at_ms }))
        .collect();
    Ok(Json(json!({
        "openConversationsFound": open,
        "closedConversationsFound": closed,
        "conversations": conversations,
    }))
    .into_response())
}

fn parse_limit(value: Option<&String>) -> Result<usize, ApiError> {
    match value {
        None => Ok(20),
        Some(v) => match v.parse::<usize>() {
            Ok(n @ 1..=50) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit '{v}' must be a number from 1 to 50"
            ))),
        },
    }
}

// ---- messages and entries ----

async fn send_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let id = path_uuid(&id)?;
    let body = parse_body(&body)?;
    check_deployment(&shared, string_field(&body, "esDeveloperName")?)?;
    let message = match body.get("message") {
        Some(Value::Object(m)) => m,
        _ => {
            return Err(ApiError::bad_request(
                "message is required (an object with id, messageType and staticContent)",
            ))
        }
    };
    let message_id = lowercase_uuid(
        "message.id",
        required(message, "id").map_err(|_| ApiError::bad_request("message.id is required"))?,
    )?;
    match string_field(message, "messageType")? {
        Some("StaticContentMessage") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "message.messageType '{other}' is not supported here; send StaticContentMessage"
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "message.messageType is required (StaticContentMessage)",
            ))
        }
    }
    let content = match message.get("staticContent") {
        Some(Value::Object(c)) => c,
        _ => return Err(ApiError::bad_request("message.staticContent is required")),
    };
    match string_field(content, "formatType")? {
        Some("Text") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "message.staticContent.formatType '{other}' is not supported; use Text"
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "message.staticContent.formatType is required (Text)",
            ))
        }
    }
    let text = string_field(content, "text")?.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "message.staticContent.text is required and must not be blank",
        ));
    }
    let new_session = match body.get("isNewMessagingSession") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "isNewMessagingSession must be true or false",
            ))
        }
    };
    let attributes = routing_attributes(body.get("routingAttributes"))?;

    let (schedule, delay, response) = {
        let mut state = shared.lock();
        let max = state.config.max_message_chars;
        let chars = text.chars().count();
        if chars > max {
            return Err(ApiError::bad_request(format!(
                "message.staticContent.text has {chars} characters; the limit is {max}: split the text into several messages"
            )));
        }
        let conv = owned_open(&state, id, &claims)?;
        let mid = message_id.to_string();
        if let Some(first) = conv
            .entries
            .iter()
            .find(|e| e.message_id == Some(message_id))
        {
            // Accepted once: a repeated id is acknowledged with the first copy.
            let body = json!({ "conversationEntries": [{ "id": first.identifier, "clientTimestamp": first.client_timestamp }] });
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
        let hidden = state.config.hidden_prechat_fields.clone();
        let delay = state.config.rep.accept_after;
        let Some(conv) = state.find_mut(id) else {
            return Err(ApiError::not_found(format!(
                "conversation {id} does not exist for this end user"
            )));
        };
        let starts_session = conv.status == ConvStatus::Ended;
        if starts_session {
            conv.sessions += 1;
            conv.status = ConvStatus::Open;
        }
        if starts_session || new_session {
            conv.apply_routing_attributes(&attributes, &hidden);
        }
        let session = conv.sessions;
        let ts = conv.next_timestamp();
        let entry = Entry {
            identifier: mid.clone(),
            entry_type: "Message",
            role: "EndUser",
            sender_subject: claims.sub.clone(),
            display_name: "Guest".to_string(),
            client_timestamp: ts,
            transcripted_timestamp: ts,
            payload: message_payload(message_id, text),
            message_id: Some(message_id),
            text: Some(text.to_string()),
        };
        if starts_session {
            state.route(id);
        }
        state.record(id, "CONVERSATION_MESSAGE", entry, true);
        shared.notify(&state);
        let response = json!({ "conversationEntries": [{ "id": mid, "clientTimestamp": ts }] });
        (starts_session.then_some(session), delay, response)
    };
    if let Some(session) = schedule {
        shared.schedule_rep(id, session, delay);
    }
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

async fn list_entries(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let id = path_uuid(&id)?;
    let limit = parse_limit(query.get("limit"))?;
    let from_start = match query.get("direction").map(String::as_str) {
        None | Some("FromEnd") => false,
        Some("FromStart") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "direction '{other}' must be FromStart or FromEnd"
            )))
        }
    };
    let filter: Option<Vec<&str>> = query.get("entryTypeFilter").map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    let bound = |name: &str| -> Result<Option<i64>, ApiError> {
        match query.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name} '{v}' must be milliseconds since the epoch"))
            }),
        }
    };
    let (start, end) = (bound("startTimestamp")?, bound("endTimestamp")?);
    let state = shared.lock();
    let conv = owned(&state, id, &claims)?;
    let selected = conv.entries.iter().filter(|e| {
        filter.as_ref().is_none_or(|f| f.contains(&e.entry_type))
            && start.is_none_or(|s| e.transcripted_timestamp >= s)
            && end.is_none_or(|t| e.transcripted_timestamp <= t)
    });
    let entries: Vec<Value> = if from_start {
        selected.take(limit).map(list_entry).collect()
    } else {
        selected.rev().take(limit).map(list_entry).collect()
    };
    Ok(Json(json!({ "conversationEntries": entries })).into_response())
}

/// A list-entries item: `entryPayload` is an **object** here (a string over SSE).
fn list_entry(e: &Entry) -> Value {
    json!({
        "entryType": e.entry_type,
        "entryPayload": e.payload,
        "sender": { "role": e.role, "subject": e.sender_subject, "appType": super::app_type(e.role) },
        "senderDisplayName": e.display_name,
        "identifier": e.identifier,
        "clientTimestamp": e.client_timestamp,
        "transcriptedTimestamp": e.transcripted_timestamp,
    })
}

async fn typing_entry(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let id = path_uuid(&id)?;
    let body = parse_body(&body)?;
    match string_field(&body, "entryType")? {
        Some("TypingStartedIndicator" | "TypingStoppedIndicator") => {}
        _ => {
            return Err(ApiError::bad_request(
                "entryType must be TypingStartedIndicator or TypingStoppedIndicator",
            ))
        }
    }
    lowercase_uuid("id", required(&body, "id")?)?;
    let state = shared.lock();
    owned_open(&state, id, &claims)?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

async fn acknowledge_entries(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let claims = shared.authorize(&headers)?;
    let id = path_uuid(&id)?;
    let body = parse_body(&body)?;
    if !body.get("acks").is_some_and(Value::is_array) {
        return Err(ApiError::bad_request(
            "acks must be a list of {id, entryType, conversationEntryId}",
        ));
    }
    let state = shared.lock();
    owned_open(&state, id, &claims)?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}
