//! The browser test call: the agent page's **Test call** button talks to the
//! agent through the browser's microphone, on the same voice engine as a
//! phone call.
//!
//! ```text
//! getUserMedia → AudioWorklet (resample to 8 kHz, 20 ms frames)
//!   → WebSocket /channels/phone/{id}/test-call/ws (binary: 320-byte PCM16LE frames;
//!     text: {"type":"dtmf","digit":"5"} | {"type":"hangup"})
//!   → BrowserCalls (the binary: a session row, the engine, a stereo recording)
//!   ← binary frames of the agent's voice, paced in real time
//!   ← text: {"type":"started",…} {"type":"turn",…} {"type":"ended",…} {"type":"error",…}
//! ```
//!
//! The web side knows nothing of the engine: the binary implements
//! [`BrowserCalls`]. Turns reach the page from the store (what the Inbox
//! will show), polled while the call is live. The socket needs the login
//! cookie, the login's CSRF token in the query, and a same-origin `Origin`,
//! so another site cannot open a call with a visitor's login.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, PreEscaped};
use serde::Deserialize;
use serde_json::json;
use switchboard_model::{Agent, AgentId, SessionId, SessionStatus};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pages::{csrf_field, html_response, layout, page_error, Nav, PageAgent};
use crate::AppState;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// One frame of 8 kHz mono PCM.
pub type PcmFrame = [i16; FRAME_SAMPLES];

/// How often the page is sent the turns written so far.
const TURN_POLL: Duration = Duration::from_millis(250);
/// How long to keep sending turns after the call ended (the engine's store
/// writer may still be flushing the last ones).
const FLUSH_AFTER_END: Duration = Duration::from_millis(600);

/// What the browser sends into the call.
// A frame is 320 bytes, 50 times a second: inline, no allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum BrowserInput {
    /// 20 ms of microphone audio at 8 kHz.
    Audio(PcmFrame),
    /// A key pressed on the page's keypad.
    Dtmf(char),
    /// The page hung up (or went away).
    Hangup,
}

/// A started browser call.
pub struct BrowserLine {
    pub session_id: SessionId,
    /// Microphone frames, keys and hangup. Dropping it hangs up.
    pub input: mpsc::Sender<BrowserInput>,
    /// The agent's voice, one frame per 20 ms while it speaks.
    pub output: mpsc::Receiver<PcmFrame>,
    /// Resolves with the end reason when the call is over.
    pub ended: oneshot::Receiver<String>,
}

/// Why a browser call could not start, in words for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserCallError(pub String);

pub type BrowserCallFuture =
    Pin<Box<dyn Future<Output = Result<BrowserLine, BrowserCallError>> + Send>>;

/// Starts browser calls on the voice engine; the binary implements it.
pub trait BrowserCalls: Send + Sync + 'static {
    /// Starts a call to `agent`; `user` names who is calling ("alice").
    fn start(&self, agent: AgentId, user: String) -> BrowserCallFuture;
}

/// `GET /channels/phone/{id}/test-call`: the call page.
pub async fn test_call_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageAgent(agent): PageAgent,
) -> Response {
    let body = page_body(&s, &caller, &agent);
    html_response(
        StatusCode::OK,
        layout(
            &format!("Test call: {}", agent.spec.name),
            &caller,
            Nav::Phone,
            body,
        ),
    )
}

fn page_body(s: &AppState, caller: &Caller, agent: &Agent) -> maud::Markup {
    let ws = format!("/channels/phone/{}/test-call/ws", agent.id);
    html! {
        p.muted {
            "Talk to " strong { (agent.spec.name) } " with your microphone, exactly as a caller would on the phone: "
            "the same speech recognition, brain, handoff and recording. The session appears in the Inbox."
        }
        @if s.browser_calls.is_none() {
            p.error role="alert" { "Browser calls are off on this server (no voice engine is running)." }
        }
        (csrf_field(caller))
        section.testcall aria-labelledby="call-h" data-ws=(ws) data-csrf=(caller.csrf_token()) {
            h2 id="call-h" { "Call" }
            div.controls {
                button id="call-start" type="button" disabled[s.browser_calls.is_none()] { "Start call" }
                button.danger id="call-hangup" type="button" disabled { "Hang up" }
                span id="call-status" role="status" aria-live="polite" { "Not connected" }
            }
            div.keypad role="group" aria-label="Keypad" {
                @for k in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"] {
                    button.secondary type="button" data-digit=(k) disabled { (k) }
                }
            }
            p id="call-session" hidden { "Session " a href="#" { "" } }
            h3 { "Live transcript" }
            ol.transcript.live id="live-transcript" aria-live="polite" {}
            p.muted {
                small { "The microphone needs HTTPS or localhost. Audio is 8 kHz, like a phone line." }
            }
        }
        script { (PreEscaped(PAGE_SCRIPT)) }
    }
}

/// The page's script: microphone, worklet, socket, transcript.
const PAGE_SCRIPT: &str = include_str!("test_call.js");
/// The AudioWorklet module (served at [`WORKLET_PATH`]).
const WORKLET_SCRIPT: &str = include_str!("test_call_worklet.js");
/// Where the worklet module is served.
pub const WORKLET_PATH: &str = "/assets/test-call-worklet.js";

/// `GET /assets/test-call-worklet.js`.
pub async fn worklet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        WORKLET_SCRIPT,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    #[serde(default)]
    csrf: String,
}

/// `GET /channels/phone/{id}/test-call/ws`: the call's socket.
pub async fn test_call_ws(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageAgent(agent): PageAgent,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = check_same_origin(&headers) {
        return page_error(e);
    }
    let expected = caller.csrf_token();
    if expected.is_empty() || !crate::auth::constant_time_eq(q.csrf.as_bytes(), expected.as_bytes())
    {
        return page_error(ApiError::Forbidden {
            message: "the CSRF token is missing or wrong: reload the page".into(),
        });
    }
    let Some(calls) = s.browser_calls.clone() else {
        return page_error(ApiError::Conflict {
            field: "engine".into(),
            message: "browser calls are off on this server".into(),
        });
    };
    let user = caller.actor().trim_start_matches("user:").to_string();
    ws.on_upgrade(move |socket| async move {
        run_socket(s, calls, agent.id, user, socket).await;
    })
}

/// The `Origin` of a browser's WebSocket handshake must be this server.
fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    if host.is_empty() || origin_host != host {
        return Err(ApiError::Forbidden {
            message: format!(
                "a test call must come from this dashboard (Origin {origin:?} is not {host:?})"
            ),
        });
    }
    Ok(())
}

async fn send_json(socket: &mut WebSocket, value: serde_json::Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn run_socket(
    s: AppState,
    calls: std::sync::Arc<dyn BrowserCalls>,
    agent: AgentId,
    user: String,
    mut socket: WebSocket,
) {
    let line = match calls.start(agent, user).await {
        Ok(line) => line,
        Err(BrowserCallError(why)) => {
            send_json(&mut socket, json!({ "type": "error", "message": why })).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let BrowserLine {
        session_id,
        input,
        mut output,
        mut ended,
    } = line;
    if !send_json(
        &mut socket,
        json!({ "type": "started", "session_id": session_id, "inbox": format!("/inbox/{session_id}") }),
    )
    .await
    {
        let _ = input.send(BrowserInput::Hangup).await;
        return;
    }
    let mut sent_turns = 0usize;
    let mut poll = tokio::time::interval(TURN_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropped = 0u64;
    let reason = loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(frame) = decode_frame(&bytes) {
                        if input.try_send(BrowserInput::Audio(frame)).is_err() {
                            dropped += 1;
                        }
                    }
                }
                Some(Ok(Message::Text(text))) => match parse_control(&text) {
                    Some(BrowserInput::Hangup) => {
                        let _ = input.send(BrowserInput::Hangup).await;
                    }
                    Some(other) => { let _ = input.send(other).await; }
                    None => tracing::debug!(%text, "test call: ignoring an unknown message"),
                },
                Some(Ok(_)) => {}
                // The page went away: hang up and stop; nobody is listening.
                Some(Err(_)) | None => {
                    let _ = input.send(BrowserInput::Hangup).await;
                    if dropped > 0 {
                        tracing::debug!(dropped, "test call: microphone frames dropped");
                    }
                    return;
                }
            },
            frame = output.recv() => {
                if let Some(frame) = frame {
                    if socket.send(Message::Binary(encode_frame(&frame).into())).await.is_err() {
                        let _ = input.send(BrowserInput::Hangup).await;
                        return;
                    }
                }
            }
            _ = poll.tick() => {
                if !send_new_turns(&s, &mut socket, session_id, &mut sent_turns).await {
                    let _ = input.send(BrowserInput::Hangup).await;
                    return;
                }
            }
            r = &mut ended => break r.unwrap_or_else(|_| "the call ended".into()),
        }
    };
    // Let the engine's writer land the last turns, then report the end.
    let flush_until = tokio::time::Instant::now() + FLUSH_AFTER_END;
    loop {
        if !send_new_turns(&s, &mut socket, session_id, &mut sent_turns).await {
            return;
        }
        let ended_row = s
            .store
            .session(session_id)
            .await
            .map(|x| x.status == SessionStatus::Ended)
            .unwrap_or(false);
        if ended_row && tokio::time::Instant::now() >= flush_until {
            break;
        }
        if tokio::time::Instant::now() >= flush_until + Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(TURN_POLL / 2).await;
    }
    let outcome = s
        .store
        .session(session_id)
        .await
        .ok()
        .and_then(|x| x.outcome)
        .map(|o| o.as_str());
    send_json(
        &mut socket,
        json!({ "type": "ended", "reason": reason, "outcome": outcome, "inbox": format!("/inbox/{session_id}") }),
    )
    .await;
    let _ = socket.send(Message::Close(None)).await;
}

/// Sends turns written since the last call; false when the socket is gone.
async fn send_new_turns(
    s: &AppState,
    socket: &mut WebSocket,
    session: SessionId,
    sent: &mut usize,
) -> bool {
    let turns = match s.store.turns(session).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "test call: turns not readable yet");
            return true;
        }
    };
    for t in turns.iter().skip(*sent) {
        let ok = send_json(
            socket,
            json!({
                "type": "turn",
                "speaker": t.speaker.as_str(),
                "text": t.text,
                "started_at": t.started_at.to_rfc3339(),
            }),
        )
        .await;
        if !ok {
            return false;
        }
        *sent += 1;
    }
    true
}

/// A 320-byte little-endian PCM16 frame; anything else is ignored.
pub fn decode_frame(bytes: &[u8]) -> Option<PcmFrame> {
    if bytes.len() != FRAME_SAMPLES * 2 {
        return None;
    }
    let mut frame = [0i16; FRAME_SAMPLES];
    for (sample, pair) in frame.iter_mut().zip(bytes.chunks_exact(2)) {
        *sample = i16::from_le_bytes([pair[0], pair[1]]);
    }
    Some(frame)
}

pub fn encode_frame(frame: &PcmFrame) -> Vec<u8> {
    frame.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// `{"type":"dtmf","digit":"5"}` or `{"type":"hangup"}`.
pub fn parse_control(text: &str) -> Option<BrowserInput> {
    #[derive(Deserialize)]
    struct Control {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        digit: String,
    }
    let c: Control = serde_json::from_str(text).ok()?;
    match c.kind.as_str() {
        "hangup" => Some(BrowserInput::Hangup),
        "dtmf" => {
            let mut chars = c.digit.chars();
            match (chars.next(), chars.next()) {
                (Some(d), None) if d.is_ascii_digit() || matches!(d, '*' | '#' | 'A'..='D') => {
                    Some(BrowserInput::Dtmf(d))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wrong_sizes_are_ignored() {
        let mut frame = [0i16; FRAME_SAMPLES];
        for (i, s) in frame.iter_mut().enumerate() {
            *s = (i as i16 - 80) * 400;
        }
        let bytes = encode_frame(&frame);
        assert_eq!(bytes.len(), 320);
        assert_eq!(decode_frame(&bytes), Some(frame));
        assert_eq!(decode_frame(&bytes[..318]), None);
        assert_eq!(decode_frame(&[]), None);
    }

    #[test]
    fn control_messages() {
        assert_eq!(
            parse_control(r#"{"type":"dtmf","digit":"5"}"#),
            Some(BrowserInput::Dtmf('5'))
        );
        assert_eq!(
            parse_control(r##"{"type":"dtmf","digit":"#"}"##),
            Some(BrowserInput::Dtmf('#'))
        );
        assert_eq!(parse_control(r#"{"type":"dtmf","digit":"55"}"#), None);
        assert_eq!(parse_control(r#"{"type":"dtmf","digit":"x"}"#), None);
        assert_eq!(
            parse_control(r#"{"type":"hangup"}"#),
            Some(BrowserInput::Hangup)
        );
        assert_eq!(parse_control("not json"), None);
        assert_eq!(parse_control(r#"{"type":"reboot"}"#), None);
    }

    #[test]
    fn origin_must_be_this_server() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&h).is_err(), "no Origin");
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_same_origin(&h).is_err());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&h).is_ok());
        h.insert(header::ORIGIN, "https://127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&h).is_ok());
    }
}
