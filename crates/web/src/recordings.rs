//! `GET /api/v1/sessions/{id}/recording`: the stereo WAV of a call, with
//! HTTP range support so the dashboard's audio player can seek.
//!
//! Files are streamed in 64 KiB chunks, never read whole: a 30-minute call
//! is ~58 MB. Only logged-in users and API tokens reach this route (it is
//! declared `Access::Api` in the route table).

use std::io::SeekFrom;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_model::SessionId;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::ApiError;
use crate::AppState;

const CHUNK: usize = 64 * 1024;

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(get, path = "/api/v1/sessions/{id}/recording", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The whole stereo WAV (caller left, AI or rep right)", content_type = "audio/wav"),
        (status = 206, description = "The requested byte range", content_type = "audio/wav"),
        (status = 404, body = crate::error::ErrorBody, description = "No such session, or it has no recording"),
        (status = 416, description = "The range lies outside the file"),
    ))]
pub async fn get_recording(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id: SessionId = id
        .parse()
        .map_err(|_| ApiError::not_found("session", &id))?;
    let session = s.store.session(id).await?;
    let not_found = || ApiError::not_found("recording", id.to_string());
    let (Some(key), Some(dir)) = (
        session.recording.as_deref(),
        s.settings.recordings_dir.as_deref(),
    ) else {
        return Err(not_found());
    };
    let path = resolve(dir, key).ok_or_else(not_found)?;
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open recording");
            return Err(ApiError::Internal);
        }
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "cannot stat recording");
            ApiError::Internal
        })?
        .len();

    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (status, start, end) = match range {
        None | Some(RangeVerdict::Ignore) => (StatusCode::OK, 0, len),
        Some(RangeVerdict::Satisfiable { start, end }) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(RangeVerdict::Unsatisfiable) => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return Err(ApiError::Internal);
    }
    let body = Body::from_stream(chunks(file, end - start));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// The file for `key` under `dir`, refusing keys that would leave it.
fn resolve(dir: &Path, key: &str) -> Option<PathBuf> {
    let rel = Path::new(key);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

fn chunks(
    file: tokio::fs::File,
    remaining: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold((file, remaining), |(mut file, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let want = usize::try_from(remaining).map_or(CHUNK, |r| r.min(CHUNK));
        let mut buf = vec![0; want];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), (file, remaining - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

/// What to do with a `Range` header, per RFC 9110 §14.
#[derive(Debug, PartialEq, Eq)]
enum RangeVerdict {
    /// Serve `start..end` (end exclusive) with 206.
    Satisfiable { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// Not a single bytes range we understand: serve the whole file.
    Ignore,
}

fn parse_range(value: &str, len: u64) -> RangeVerdict {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeVerdict::Ignore;
    };
    // Several ranges would need multipart/byteranges; browsers never ask.
    if spec.contains(',') {
        return RangeVerdict::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeVerdict::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeVerdict::Unsatisfiable,
            Some(n) if len > 0 => RangeVerdict::Satisfiable {
                start: len.saturating_sub(n),
                end: len,
            },
            Some(_) => RangeVerdict::Unsatisfiable,
            None => RangeVerdict::Ignore,
        },
        // bytes=A-: from A to the end.
        (false, true) => match parse(first) {
            Some(a) if a < len => RangeVerdict::Satisfiable { start: a, end: len },
            Some(_) => RangeVerdict::Unsatisfiable,
            None => RangeVerdict::Ignore,
        },
        // bytes=A-B, inclusive; B past the end is clamped.
        (false, false) => match (parse(first), parse(last)) {
            (Some(a), Some(b)) if a > b => RangeVerdict::Ignore,
            (Some(a), Some(b)) if a < len => RangeVerdict::Satisfiable {
                start: a,
                end: b.saturating_add(1).min(len),
            },
            (Some(_), Some(_)) => RangeVerdict::Unsatisfiable,
            _ => RangeVerdict::Ignore,
        },
        (true, true) => RangeVerdict::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeVerdict::*;
        assert_eq!(
            parse_range("bytes=0-99", 1000),
            Satisfiable { start: 0, end: 100 }
        );
        assert_eq!(
            parse_range("bytes=900-", 1000),
            Satisfiable {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            parse_range("bytes=-100", 1000),
            Satisfiable {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            parse_range("bytes=-5000", 1000),
            Satisfiable {
                start: 0,
                end: 1000
            }
        );
        assert_eq!(
            parse_range("bytes=990-5000", 1000),
            Satisfiable {
                start: 990,
                end: 1000
            }
        );
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 1000), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ignore);
        assert_eq!(parse_range("items=0-1", 1000), Ignore);
        assert_eq!(parse_range("bytes=x-y", 1000), Ignore);
        assert_eq!(parse_range("bytes=-", 1000), Ignore);
    }

    #[test]
    fn keys_cannot_escape_the_recordings_dir() {
        let dir = Path::new("/srv/rec");
        assert_eq!(resolve(dir, "a.wav"), Some(PathBuf::from("/srv/rec/a.wav")));
        assert_eq!(
            resolve(dir, "2026/a.wav"),
            Some(PathBuf::from("/srv/rec/2026/a.wav"))
        );
        assert_eq!(resolve(dir, "../etc/passwd"), None);
        assert_eq!(resolve(dir, "/etc/passwd"), None);
    }
}
