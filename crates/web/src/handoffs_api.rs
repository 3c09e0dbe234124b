//! API for text calls, handoffs and the Salesforce MIAW settings.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_handoff::intake::{self, IntakeError, TextCallInput};
use switchboard_handoff::settings::{
    ConnectionTest, EffectiveSettings, MiawSettingsInput, SettingsError,
};
use switchboard_model::{
    Handoff, HandoffAttempt, HandoffId, HandoffInput, HandoffStatus, SessionId,
};
use switchboard_store::HandoffFilter;
use utoipa::{IntoParams, ToSchema};

use crate::api::{audit, session_detail, SessionDetail};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::{ApiJson, ApiQuery};
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid(m) => m.into(),
            IntakeError::Store(s) => s.into(),
            _ => ApiError::Internal,
        }
    }
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::Invalid(problems) => ApiError::InvalidMany {
                errors: problems
                    .iter()
                    .map(|p| (p.field().to_string(), p.to_string()))
                    .collect(),
            },
            SettingsError::Store(s) => s.into(),
            _ => ApiError::Internal,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = TextCallInput,
    responses((status = 201, body = SessionDetail), (status = 422, body = ErrorBody)))]
pub async fn create_text_call(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<TextCallInput>,
) -> ApiResult<(StatusCode, Json<SessionDetail>)> {
    let session =
        intake::record_text_call(&s.store, input, s.settings.default_region, s.clock.now()).await?;
    audit(
        &s,
        &caller,
        "session.create",
        &session.id.to_string(),
        json!({ "kind": "text_call" }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(session_detail(&s, session.id).await?),
    ))
}

#[utoipa::path(post, path = "/api/v1/sessions/{id}/handoff", tag = "handoffs", request_body = HandoffInput,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 202, body = Handoff, description = "Recorded; delivery to Salesforce follows"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_handoff(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<HandoffInput>,
) -> ApiResult<(StatusCode, Json<Handoff>)> {
    let session = id
        .parse::<SessionId>()
        .map_err(|_| ApiError::not_found("session", &id))?;
    let handoff =
        intake::request_handoff(&s.store, session, input, s.clock.now(), &s.handoff_notify).await?;
    audit(
        &s,
        &caller,
        "handoff.create",
        &handoff.id.to_string(),
        json!({ "session": session, "mode": handoff.mode }),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(handoff)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HandoffQuery {
    pub status: Option<HandoffStatus>,
    pub limit: Option<i64>,
}

/// A handoff with every delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandoffDetail {
    pub handoff: Handoff,
    pub attempts: Vec<HandoffAttempt>,
}

#[utoipa::path(get, path = "/api/v1/handoffs", tag = "handoffs", params(HandoffQuery), responses((status = 200, body = [Handoff])))]
pub async fn list_handoffs(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<HandoffQuery>,
) -> ApiResult<Json<Vec<Handoff>>> {
    Ok(Json(
        s.store
            .list_handoffs(&HandoffFilter {
                status: q.status,
                limit: q.limit.unwrap_or(50),
            })
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/handoffs/{id}", tag = "handoffs", params(("id" = String, Path)),
    responses((status = 200, body = HandoffDetail), (status = 404, body = ErrorBody)))]
pub async fn get_handoff(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<HandoffDetail>> {
    let id = id
        .parse::<HandoffId>()
        .map_err(|_| ApiError::not_found("handoff", &id))?;
    Ok(Json(HandoffDetail {
        handoff: s.store.handoff(id).await?,
        attempts: s.store.handoff_attempts(id).await?,
    }))
}

#[utoipa::path(post, path = "/api/v1/handoffs/{id}/redrive", tag = "handoffs", params(("id" = String, Path)),
    responses((status = 202, body = Handoff), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn redrive_handoff(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Handoff>)> {
    let id = id
        .parse::<HandoffId>()
        .map_err(|_| ApiError::not_found("handoff", &id))?;
    let h = s.store.redrive_handoff(id).await?;
    s.handoff_notify.notify_one();
    audit(&s, &caller, "handoff.redrive", &id.to_string(), json!({})).await;
    Ok((StatusCode::ACCEPTED, Json(h)))
}

fn salesforce(s: &AppState) -> ApiResult<&switchboard_handoff::SalesforceSettings> {
    s.salesforce.as_deref().ok_or(ApiError::Unavailable)
}

#[utoipa::path(get, path = "/api/v1/settings/salesforce", tag = "settings",
    responses((status = 200, body = EffectiveSettings, description = "The private key is never returned; `private_key_set` says whether one is stored")))]
pub async fn get_salesforce_settings(
    State(s): State<AppState>,
) -> ApiResult<Json<EffectiveSettings>> {
    Ok(Json(salesforce(&s)?.effective().await?))
}

#[utoipa::path(put, path = "/api/v1/settings/salesforce", tag = "settings", request_body = MiawSettingsInput,
    responses((status = 200, body = EffectiveSettings), (status = 422, body = ErrorBody, description = "Every invalid field, in `errors`")))]
pub async fn put_salesforce_settings(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<MiawSettingsInput>,
) -> ApiResult<Json<EffectiveSettings>> {
    let key_changed = input.jwt_private_key.is_some();
    let saved = salesforce(&s)?.save(input).await?;
    s.handoff_notify.notify_one();
    audit(
        &s,
        &caller,
        "settings.salesforce",
        "miaw",
        json!({ "private_key_changed": key_changed }),
    )
    .await;
    Ok(Json(saved))
}

#[utoipa::path(post, path = "/api/v1/settings/salesforce/test", tag = "settings",
    responses((status = 200, body = ConnectionTest, description = "Each step with Salesforce's exact answer")))]
pub async fn test_salesforce(State(s): State<AppState>) -> ApiResult<Json<ConnectionTest>> {
    Ok(Json(salesforce(&s)?.test_connection().await))
}
