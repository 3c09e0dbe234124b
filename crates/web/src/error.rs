//! Every failure a handler can return, mapped to a status and a JSON body
//! `{"error": {"code", "message", "field"?}}`. Internal details (SQL, paths)
//! are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard_model::ModelError;
use switchboard_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{}", .errors.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "))]
    InvalidMany { errors: Vec<(String, String)> },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("authentication required: send `Authorization: Bearer <token>` or log in")]
    Unauthorized,
    #[error("{message}")]
    Forbidden { message: String },
    #[error("{entity} not found: {key}")]
    NotFound { entity: String, key: String },
    #[error("{message}")]
    Conflict { field: String, message: String },
    #[error("too many attempts; try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("the database is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `invalid` or `conflict`.
    pub code: &'static str,
    pub message: String,
    /// The input the error is about (a JSON path such as `routing_attributes.session_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every invalid field, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } | ApiError::InvalidMany { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Invalid { .. } | ApiError::InvalidMany { .. } => "invalid",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } | ApiError::Conflict { field, .. } => Some(field),
            ApiError::InvalidMany { errors } => errors.first().map(|(f, _)| f.as_str()),
            _ => None,
        }
    }

    pub fn not_found(entity: &str, key: impl ToString) -> Self {
        ApiError::NotFound {
            entity: entity.to_string(),
            key: key.to_string(),
        }
    }

    pub fn invalid(field: impl ToString, message: impl ToString) -> Self {
        ApiError::Invalid {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Invalid { field, reason } => ApiError::Invalid {
                field,
                message: reason,
            },
            _ => ApiError::BadRequest {
                message: e.to_string(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, key } => ApiError::not_found(entity, key),
            StoreError::Conflict { field, message } => ApiError::Conflict {
                field: field.to_string(),
                message,
            },
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            e => {
                tracing::error!(error = %e, "store error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: match &self {
                    // The field is reported separately; the message stays readable alone.
                    ApiError::Invalid { field, message } => format!("{field}: {message}"),
                    other => other.to_string(),
                },
                field: self.field().map(str::to_string),
                errors: match &self {
                    ApiError::InvalidMany { errors } => errors
                        .iter()
                        .map(|(f, m)| FieldError {
                            field: f.clone(),
                            message: m.clone(),
                        })
                        .collect(),
                    _ => Vec::new(),
                },
            },
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        match &self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"switchboard\""),
                );
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::Unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}
