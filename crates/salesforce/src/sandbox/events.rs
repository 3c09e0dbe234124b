//! `GET /eventrouter/v1/sse`: one stream per access-token subject.
//!
//! Each stream is fed by a task that replays the event log from the
//! client's `Last-Event-Id` (or from "now" without one), then waits for the
//! log to grow, sending a `ping` after each ping interval of silence.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::api::ApiError;
use super::Shared;

/// Default keep-alive interval of the event stream.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(15);

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/eventrouter/v1/sse", get(event_stream))
        .with_state(shared)
}

async fn event_stream(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = shared.authorize(&headers)?;
    let org = headers
        .get("x-org-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("X-Org-Id header is required (the org id)"))?;
    let config_org = shared.lock().config.org_id.clone();
    if org.get(..15) != config_org.get(..15) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("X-Org-Id '{org}' does not match the org of this access token"),
        ));
    }
    let from = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        None | Some("") => shared.lock().latest_event_id(),
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Last-Event-Id '{v}' is not an event id from this stream"
            ))
        })?,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(feed(shared, claims.sub, from, tx));
    let body = Body::from_stream(ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

async fn feed(
    shared: Arc<Shared>,
    subject: String,
    mut last_sent: u64,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut latest = shared.latest_event.subscribe();
    let mut generation = shared.stream_generation.subscribe();
    generation.mark_unchanged();
    let every = shared.lock().ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        latest.mark_unchanged();
        let pending: Vec<String> = {
            let state = shared.lock();
            let pending = state
                .events
                .iter()
                .filter(|e| e.id > last_sent && e.subject == subject)
                .map(|e| format!("id: {}\nevent: {}\ndata: {}\n\n", e.id, e.name, e.data))
                .collect();
            // Everything up to the newest event has now been considered for this subject.
            last_sent = last_sent.max(state.latest_event_id());
            pending
        };
        if !pending.is_empty() {
            ping.reset();
            if tx.send(Ok(Bytes::from(pending.concat()))).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = latest.changed() => if changed.is_err() { return },
            _ = ping.tick() => {
                if tx.send(Ok(Bytes::from_static(b"event: ping\ndata: {}\n\n"))).await.is_err() {
                    return;
                }
            }
            _ = generation.changed() => {
                // A dropped connection: end the body with an error so the client sees it cut.
                let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "sandbox dropped the event stream"))).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}
