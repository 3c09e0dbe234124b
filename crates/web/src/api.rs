//! The JSON API under `/api/v1`. Handlers validate with the model's rules,
//! call the store, write an audit entry for every change, and let
//! [`ApiError`] turn failures into responses.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_model::{
    Agent, AgentInput, ApiToken, Contact, ContactId, ContactInput, Direction, Handoff,
    HandoffStatus, NumberInput, Outcome, PhoneNumber, Session, SessionId, SessionStatus, Timestamp,
    TokenId, TraceStep, Trunk, TrunkInput, Turn, E164,
};
use switchboard_store::SessionFilter;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiQuery};
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// Records a change in the audit log. A failure to audit is logged, not
/// returned: the change itself already happened.
pub(crate) async fn audit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) {
    if let Err(e) = state
        .store
        .audit(&caller.actor(), action, target, detail)
        .await
    {
        tracing::warn!(error = %e, action, "could not write audit entry");
    }
    // Every change to what routes a call passes through here: telephony
    // drops its routing cache and follows trunk registrations at once.
    if ["agent.", "number.", "trunk."]
        .iter()
        .any(|p| action.starts_with(p))
    {
        state.routing_changed.notify_one();
    }
}

// ---------------------------------------------------------------------------
// Agents

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = [Agent])))]
pub async fn list_agents(State(s): State<AppState>) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(s.store.list_agents().await?))
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = AgentInput,
    responses((status = 201, body = Agent), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_agent(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<AgentInput>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    let spec = input.validate(s.settings.default_region)?;
    let agent = s.store.create_agent(&spec).await?;
    audit(
        &s,
        &caller,
        "agent.create",
        &agent.spec.name,
        json!({ "id": agent.id }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(agent)))
}

#[utoipa::path(get, path = "/api/v1/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn get_agent(
    State(s): State<AppState>,
    Path(agent): Path<String>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(s.store.find_agent(&agent).await?))
}

#[utoipa::path(put, path = "/api/v1/agents/{agent}", tag = "agents", request_body = AgentInput,
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_agent(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(agent): Path<String>,
    ApiJson(input): ApiJson<AgentInput>,
) -> ApiResult<Json<Agent>> {
    let existing = s.store.find_agent(&agent).await?;
    let spec = input.validate(s.settings.default_region)?;
    let updated = s.store.update_agent(existing.id, &spec).await?;
    audit(
        &s,
        &caller,
        "agent.update",
        &updated.spec.name,
        json!({ "id": updated.id }),
    )
    .await;
    Ok(Json(updated))
}

#[utoipa::path(delete, path = "/api/v1/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_agent(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(agent): Path<String>,
) -> ApiResult<StatusCode> {
    let existing = s.store.find_agent(&agent).await?;
    s.store.delete_agent(existing.id).await?;
    audit(
        &s,
        &caller,
        "agent.delete",
        &existing.spec.name,
        json!({ "id": existing.id }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Numbers

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NumberQuery {
    /// Only numbers bound to this agent (id or name).
    pub agent: Option<String>,
}

/// Binds a number to an agent, or unbinds it with `null`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberBinding {
    pub agent: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/numbers", tag = "numbers", params(NumberQuery),
    responses((status = 200, body = [PhoneNumber])))]
pub async fn list_numbers(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<NumberQuery>,
) -> ApiResult<Json<Vec<PhoneNumber>>> {
    let agent = match q.agent {
        Some(a) => Some(s.store.find_agent(&a).await?.id),
        None => None,
    };
    Ok(Json(s.store.list_numbers(agent).await?))
}

#[utoipa::path(post, path = "/api/v1/numbers", tag = "numbers", request_body = NumberInput,
    responses((status = 201, body = PhoneNumber), (status = 409, body = ErrorBody, description = "Bound to another agent; the message names it"), (status = 422, body = ErrorBody)))]
pub async fn create_number(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<NumberInput>,
) -> ApiResult<(StatusCode, Json<PhoneNumber>)> {
    let e164 =
        E164::parse(&input.number, s.settings.default_region).map_err(|e| e.for_field("number"))?;
    let label = switchboard_model::single_line("label", &input.label, 100)?;
    let agent = resolve_agent(&s, input.agent.as_deref()).await?;
    let number = s.store.add_number(&e164, agent, &label).await?;
    audit(
        &s,
        &caller,
        "number.add",
        e164.as_str(),
        json!({ "agent": agent }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(number)))
}

#[utoipa::path(get, path = "/api/v1/numbers/{number}", tag = "numbers",
    params(("number" = String, Path, description = "The number, E.164")),
    responses((status = 200, body = PhoneNumber), (status = 404, body = ErrorBody)))]
pub async fn get_number(
    State(s): State<AppState>,
    Path(number): Path<String>,
) -> ApiResult<Json<PhoneNumber>> {
    let e164 = parse_number_path(&s, &number)?;
    Ok(Json(s.store.number_by_e164(&e164).await?))
}

#[utoipa::path(put, path = "/api/v1/numbers/{number}", tag = "numbers", request_body = NumberBinding,
    params(("number" = String, Path, description = "The number, E.164")),
    responses((status = 200, body = PhoneNumber), (status = 409, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn bind_number(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(number): Path<String>,
    ApiJson(binding): ApiJson<NumberBinding>,
) -> ApiResult<Json<PhoneNumber>> {
    let e164 = parse_number_path(&s, &number)?;
    let agent = resolve_agent(&s, binding.agent.as_deref()).await?;
    let bound = s.store.bind_number(&e164, agent).await?;
    audit(
        &s,
        &caller,
        "number.bind",
        e164.as_str(),
        json!({ "agent": agent }),
    )
    .await;
    Ok(Json(bound))
}

#[utoipa::path(delete, path = "/api/v1/numbers/{number}", tag = "numbers",
    params(("number" = String, Path, description = "The number, E.164")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_number(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(number): Path<String>,
) -> ApiResult<StatusCode> {
    let e164 = parse_number_path(&s, &number)?;
    s.store.delete_number(&e164).await?;
    audit(&s, &caller, "number.remove", e164.as_str(), json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_number_path(s: &AppState, number: &str) -> ApiResult<E164> {
    E164::parse(number, s.settings.default_region)
        .map_err(|_| ApiError::not_found("number", number))
}

/// Resolves an agent given by id or name; an unknown one is a 422 on `agent`.
async fn resolve_agent(
    s: &AppState,
    agent: Option<&str>,
) -> ApiResult<Option<switchboard_model::AgentId>> {
    match agent.map(str::trim).filter(|a| !a.is_empty()) {
        None => Ok(None),
        Some(a) => match s.store.find_agent(a).await {
            Ok(agent) => Ok(Some(agent.id)),
            Err(switchboard_store::StoreError::NotFound { .. }) => Err(ApiError::invalid(
                "agent",
                format!("no agent with id or name `{a}`"),
            )),
            Err(e) => Err(e.into()),
        },
    }
}

// ---------------------------------------------------------------------------
// Contacts

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ContactQuery {
    /// Matches name, phone or email.
    pub search: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", params(ContactQuery),
    responses((status = 200, body = [Contact])))]
pub async fn list_contacts(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ContactQuery>,
) -> ApiResult<Json<Vec<Contact>>> {
    Ok(Json(
        s.store
            .list_contacts(
                q.search.as_deref().unwrap_or(""),
                q.limit.unwrap_or(100),
                q.offset.unwrap_or(0),
            )
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/contacts", tag = "contacts", request_body = ContactInput,
    responses((status = 201, body = Contact), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_contact(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<ContactInput>,
) -> ApiResult<(StatusCode, Json<Contact>)> {
    let spec = input.validate(s.settings.default_region)?;
    let contact = s.store.create_contact(&spec).await?;
    audit(
        &s,
        &caller,
        "contact.create",
        &contact.id.to_string(),
        json!({}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(contact)))
}

#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path)), responses((status = 200, body = Contact), (status = 404, body = ErrorBody)))]
pub async fn get_contact(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Contact>> {
    let id = parse_id::<ContactId>("contact", &id)?;
    Ok(Json(s.store.contact(id).await?))
}

#[utoipa::path(put, path = "/api/v1/contacts/{id}", tag = "contacts", request_body = ContactInput,
    params(("id" = String, Path)),
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_contact(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ContactInput>,
) -> ApiResult<Json<Contact>> {
    let id = parse_id::<ContactId>("contact", &id)?;
    let spec = input.validate(s.settings.default_region)?;
    let contact = s.store.update_contact(id, &spec).await?;
    audit(&s, &caller, "contact.update", &id.to_string(), json!({})).await;
    Ok(Json(contact))
}

#[utoipa::path(delete, path = "/api/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_contact(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id::<ContactId>("contact", &id)?;
    s.store.delete_contact(id).await?;
    audit(&s, &caller, "contact.delete", &id.to_string(), json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_id<T: std::str::FromStr>(entity: &str, raw: &str) -> ApiResult<T> {
    raw.parse::<T>()
        .map_err(|_| ApiError::not_found(entity, raw))
}

// ---------------------------------------------------------------------------
// Sessions (read-only)

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Agent id or name.
    pub agent: Option<String>,
    pub direction: Option<Direction>,
    pub outcome: Option<Outcome>,
    pub status: Option<SessionStatus>,
    /// Only sessions whose handoff is in this delivery state.
    pub handoff_status: Option<HandoffStatus>,
    /// Only sessions started at or after this RFC 3339 instant.
    pub from: Option<String>,
    /// Only sessions started before this RFC 3339 instant.
    pub to: Option<String>,
    /// Full-text search: only sessions with a turn containing this text
    /// (case-insensitive; `%` and `_` match themselves).
    pub q: Option<String>,
    /// Paging: only sessions started before this RFC 3339 instant — pass the
    /// last listed session's `started_at`, with its `id` as `before_id`.
    pub before: Option<String>,
    /// Paging: with `before`, also sessions started at that same instant
    /// whose id sorts below this one (the last listed session's id).
    pub before_id: Option<String>,
    /// At most this many sessions (1–500, default 50).
    pub limit: Option<i64>,
}

/// A session with everything recorded about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDetail {
    pub session: Session,
    pub turns: Vec<Turn>,
    pub trace: Vec<TraceStep>,
    pub handoff: Option<Handoff>,
}

#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", params(SessionQuery),
    responses((status = 200, body = [Session]), (status = 422, body = ErrorBody)))]
pub async fn list_sessions(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> ApiResult<Json<Vec<Session>>> {
    let agent_id = match q.agent {
        Some(a) => Some(s.store.find_agent(&a).await?.id),
        None => None,
    };
    let instant = |field: &str, value: Option<String>| -> ApiResult<Option<Timestamp>> {
        value
            .map(|v| Timestamp::parse_rfc3339(&v).map_err(|e| e.for_field(field).into()))
            .transpose()
    };
    let before_id = match q.before_id {
        Some(b) => Some(b.parse::<SessionId>().map_err(|_| {
            ApiError::from(switchboard_model::ModelError::invalid(
                "before_id",
                "is not a session id",
            ))
        })?),
        None => None,
    };
    let filter = SessionFilter {
        agent_id,
        direction: q.direction,
        outcome: q.outcome,
        status: q.status,
        handoff_status: q.handoff_status,
        from: instant("from", q.from)?,
        to: instant("to", q.to)?,
        text: q.q,
        before: instant("before", q.before)?,
        before_id,
        limit: q.limit.unwrap_or(50),
    };
    Ok(Json(s.store.list_sessions(&filter).await?))
}

#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id: the value reps see in the session-id routing attribute")),
    responses((status = 200, body = SessionDetail), (status = 404, body = ErrorBody)))]
pub async fn get_session(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionDetail>> {
    let id = parse_id::<SessionId>("session", &id)?;
    Ok(Json(session_detail(&s, id).await?))
}

pub(crate) async fn session_detail(s: &AppState, id: SessionId) -> ApiResult<SessionDetail> {
    Ok(SessionDetail {
        session: s.store.session(id).await?,
        turns: s.store.turns(id).await?,
        trace: s.store.trace_steps(id).await?,
        handoff: s.store.handoff_for_session(id).await?,
    })
}

// ---------------------------------------------------------------------------
// Trunks

#[utoipa::path(get, path = "/api/v1/trunks", tag = "trunks", responses((status = 200, body = [Trunk])))]
pub async fn list_trunks(State(s): State<AppState>) -> ApiResult<Json<Vec<Trunk>>> {
    Ok(Json(s.store.list_trunks().await?))
}

#[utoipa::path(post, path = "/api/v1/trunks", tag = "trunks", request_body = TrunkInput,
    responses((status = 201, body = Trunk), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_trunk(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<TrunkInput>,
) -> ApiResult<(StatusCode, Json<Trunk>)> {
    let spec = input.validate(s.settings.default_region)?;
    let trunk = s.store.create_trunk(&spec).await?;
    audit(
        &s,
        &caller,
        "trunk.create",
        &trunk.name,
        json!({ "id": trunk.id }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(trunk)))
}

#[utoipa::path(get, path = "/api/v1/trunks/{trunk}", tag = "trunks",
    params(("trunk" = String, Path, description = "Trunk id or name")),
    responses((status = 200, body = Trunk), (status = 404, body = ErrorBody)))]
pub async fn get_trunk(
    State(s): State<AppState>,
    Path(trunk): Path<String>,
) -> ApiResult<Json<Trunk>> {
    Ok(Json(s.store.find_trunk(&trunk).await?))
}

#[utoipa::path(delete, path = "/api/v1/trunks/{trunk}", tag = "trunks",
    params(("trunk" = String, Path, description = "Trunk id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_trunk(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(trunk): Path<String>,
) -> ApiResult<StatusCode> {
    let t = s.store.find_trunk(&trunk).await?;
    s.store.delete_trunk(t.id).await?;
    audit(&s, &caller, "trunk.delete", &t.name, json!({ "id": t.id })).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// API tokens and identity

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub name: String,
}

/// A new token. `token` is shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: ApiToken,
    pub token: String,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = [ApiToken])))]
pub async fn list_tokens(State(s): State<AppState>) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(s.store.list_api_tokens().await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let name = switchboard_model::single_line("name", &req.name, 80)?;
    if name.is_empty() {
        return Err(ApiError::invalid(
            "name",
            "is required: say what the token is for",
        ));
    }
    let new = s.store.create_api_token(&name).await?;
    audit(
        &s,
        &caller,
        "token.create",
        &name,
        json!({ "id": new.token.id }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: new.token,
            token: new.secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id::<TokenId>("token", &id)?;
    s.store.revoke_api_token(id).await?;
    audit(&s, &caller, "token.revoke", &id.to_string(), json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// `user:NAME` or `token:NAME`.
    pub actor: String,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(Extension(caller): Extension<Caller>) -> Json<Me> {
    Json(Me {
        actor: caller.actor(),
    })
}
