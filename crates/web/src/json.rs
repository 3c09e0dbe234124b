//! A JSON body extractor whose errors name the offending field.
//!
//! axum's own `Json` answers with plain text; ours answers like every other
//! API error: malformed JSON is 400 with line and column, a well-formed body
//! of the wrong shape (wrong type, missing or unknown field) is 422 with the
//! JSON path of the field, found with `serde_path_to_error`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || v.to_ascii_lowercase().ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType {
                message: "send the body as JSON with `Content-Type: application/json`".into(),
            });
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest {
                message: format!("could not read the request body: {e}"),
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses `bytes` as `T`, with errors that say where the problem is.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::Invalid {
                field: if path == "." { "body".into() } else { path },
                message: strip_position(&inner.to_string()),
            },
            _ => ApiError::BadRequest {
                message: format!("malformed JSON: {inner}"),
            },
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        message: format!("malformed JSON: {e}"),
    })?;
    Ok(value)
}

/// serde_json appends "at line L column C"; for data errors the path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A query-string extractor whose errors name the parameter (422).
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(ApiQuery)
            .map_err(|e| ApiError::Invalid {
                field: if e.path().to_string() == "." {
                    "query".into()
                } else {
                    e.path().to_string()
                },
                message: e.into_inner().to_string(),
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_model::AgentInput;

    #[test]
    fn errors_name_the_field_path() {
        let err = parse::<AgentInput>(br#"{"name": "x", "routing_attributes": {"session_id": 5}}"#)
            .unwrap_err();
        assert_eq!(err.field(), Some("routing_attributes.session_id"));
        assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);

        let err = parse::<AgentInput>(br#"{"name": "x", "colour": "red"}"#).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");

        let err = parse::<AgentInput>(br#"{"name": "x""#).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("line 1"), "{err}");

        let err = parse::<AgentInput>(br#"{}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");
    }
}
