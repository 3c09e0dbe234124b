//! `POST /api/v1/calls`: an agent calls someone. Telephony places the call
//! through a trunk; once it is answered the agent speaks first, like on an
//! inbound call. Failures (busy, no answer, rejected) end the call's session
//! with the reason and come back as an error naming it.

use std::future::Future;
use std::pin::Pin;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_model::{AgentId, SessionId};
use utoipa::ToSchema;

use crate::api::audit;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// Why a call could not be placed, in words for the API caller.
#[derive(Debug, Clone)]
pub enum DialFailure {
    /// Busy, no answer, rejected: the far end's answer.
    Refused(String),
    /// The target cannot be dialled as given.
    InvalidTarget(String),
    /// Our side failed (network, media, database).
    Unavailable(String),
}

pub type DialFuture = Pin<Box<dyn Future<Output = Result<SessionId, DialFailure>> + Send>>;

/// Places outbound calls; telephony implements it in the binary.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, agent: AgentId, to: String, trunk: Option<String>) -> DialFuture;
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallInput {
    /// Agent id or name; it speaks first when the call is answered.
    pub agent: String,
    /// E.164 number (through the trunk) or a `sip:` URI.
    pub to: String,
    /// Trunk name or id (default: the only trunk, or the one the agent's numbers use).
    pub trunk: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallPlaced {
    pub session_id: SessionId,
    /// Always `answered`: the request returns once the callee picked up.
    pub status: &'static str,
}

#[utoipa::path(post, path = "/api/v1/calls", tag = "calls", request_body = CallInput,
    responses(
        (status = 201, body = CallPlaced, description = "The callee answered; the agent is talking"),
        (status = 404, body = crate::error::ErrorBody, description = "No such agent"),
        (status = 409, body = crate::error::ErrorBody, description = "Busy, no answer or rejected (the session records it)"),
        (status = 422, body = crate::error::ErrorBody, description = "The number or URI cannot be dialled"),
        (status = 503, body = crate::error::ErrorBody, description = "Telephony is off or failed"),
    ))]
pub async fn place_call(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<CallInput>,
) -> ApiResult<(StatusCode, Json<CallPlaced>)> {
    let agent = s.store.find_agent(&input.agent).await?;
    let Some(dialer) = s.dialer.clone() else {
        return Err(ApiError::Conflict {
            field: "telephony".into(),
            message: "telephony is off on this server (sip.addr = \"off\"): no calls can be placed"
                .into(),
        });
    };
    let to = input.to.trim().to_string();
    if to.is_empty() {
        return Err(ApiError::invalid(
            "to",
            "is required: an E.164 number or a sip: URI",
        ));
    }
    match dialer.dial(agent.id, to.clone(), input.trunk).await {
        Ok(session_id) => {
            audit(
                &s,
                &caller,
                "call.place",
                &session_id.to_string(),
                json!({ "agent": agent.spec.name, "to": to }),
            )
            .await;
            Ok((
                StatusCode::CREATED,
                Json(CallPlaced {
                    session_id,
                    status: "answered",
                }),
            ))
        }
        Err(DialFailure::Refused(why)) => Err(ApiError::Conflict {
            field: "to".into(),
            message: format!("the call was not answered: {why}"),
        }),
        Err(DialFailure::InvalidTarget(why)) => Err(ApiError::invalid("to", why)),
        Err(DialFailure::Unavailable(why)) => {
            tracing::warn!(reason = %why, "outbound call failed on our side");
            Err(ApiError::Unavailable)
        }
    }
}
