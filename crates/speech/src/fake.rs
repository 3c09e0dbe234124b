//! Local fakes of the cloud speech providers, for tests and benches (cargo
//! feature `fake`): [`FakeDeepgram`], a WebSocket server speaking Deepgram's
//! live-streaming protocol, [`FakeElevenLabs`], an HTTP server streaming
//! µ-law audio like ElevenLabs' `/stream` endpoint, and [`FakeOpenAi`], the
//! two OpenAI-compatible audio endpoints. All listen on
//! `127.0.0.1` on a port of their own, record what they were sent, and
//! inject [`Fault`]s, one per connection, in the order they were queued.
//!
//! ```text
//! let dg = FakeDeepgram::start().await?;
//! dg.push_transcript("I need to speak with a person");
//! dg.push_fault(Fault::Status { status: 503, body: "{}".into() }); // next connection
//! let stt = DeepgramStt::new(DeepgramConfig::new("key").with_base_url(dg.base_url()))?;
//! ```
//!
//! The Deepgram fake "recognises" the connection's scripted transcript
//! progressively: one more word every 100 ms of audio received, as an
//! interim `Results` (`is_final: false`); every three words become a final
//! segment (`is_final: true`). `Finalize` finalises the rest of the
//! transcript whatever audio was sent (`from_finalize: true`); `CloseStream`
//! answers with `Metadata` and a 1000 close. Message shapes follow
//! Deepgram's documented ones.
//!
//! The ElevenLabs fake streams its audio (by default 1 s of a 440 Hz tone)
//! as µ-law in chunks of [`FakeElevenLabs::set_pacing`] bytes, pausing
//! between chunks, with chunked transfer encoding.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{http, Message};

/// A failure to inject into the next connection or request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long before the first result (Deepgram) or before the
    /// response headers (ElevenLabs), then behave normally.
    Latency(Duration),
    /// Refuse the WebSocket handshake / the request with this HTTP status
    /// and body.
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body (JSON, as the real services send).
        body: String,
    },
    /// Drop the TCP connection without a close frame / without ending the
    /// chunked body, right after the first result or audio chunk.
    CloseMidStream,
    /// Deepgram only: send a close frame with this code and reason after
    /// the first result (e.g. 1011 `NET-0000`, 1008 `DATA-0000`).
    CloseWith {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Accept the connection and never answer: no result, no header.
    Hang,
}

/// What a fake was sent at connection or request time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query, e.g. `/v1/listen?encoding=linear16&…`.
    pub path_and_query: String,
    /// The `Authorization` header (Deepgram, OpenAI) or `xi-api-key`
    /// (ElevenLabs).
    pub credentials: Option<String>,
    /// The request body (ElevenLabs; empty for Deepgram).
    pub body: Vec<u8>,
}

/// Words revealed per 20 ms frame of audio: one word per 5 frames.
const FRAMES_PER_WORD: u64 = 5;
/// Words per final segment.
const SEGMENT_WORDS: usize = 3;
const FRAME_BYTES: u64 = 2 * switchboard_media::FRAME_SAMPLES as u64;

/// A local Deepgram live-streaming server. Stops when dropped.
#[derive(Debug)]
pub struct FakeDeepgram {
    addr: SocketAddr,
    state: Arc<DeepgramState>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct DeepgramState {
    faults: Mutex<VecDeque<Fault>>,
    transcripts: Mutex<VecDeque<String>>,
    default_transcript: Mutex<String>,
    connections: AtomicU32,
    requests: Mutex<Vec<FakeRequest>>,
    audio_bytes: AtomicU64,
    control: Mutex<Vec<String>>,
}

impl FakeDeepgram {
    /// Starts the server on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<FakeDeepgram> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(DeepgramState::default());
        *lock(&state.default_transcript) = "hello".into();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_deepgram(socket, shared.clone()));
            }
        });
        Ok(FakeDeepgram { addr, state, task })
    }

    /// `ws://127.0.0.1:PORT`, for [`DeepgramConfig::with_base_url`](crate::DeepgramConfig::with_base_url).
    pub fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The transcript of the next connection without a scripted one.
    pub fn set_transcript(&self, text: impl Into<String>) {
        *lock(&self.state.default_transcript) = text.into();
    }

    /// Scripts the transcript of one more connection (in order of arrival).
    pub fn push_transcript(&self, text: impl Into<String>) {
        lock(&self.state.transcripts).push_back(text.into());
    }

    /// Injects `fault` into one more connection (in order of arrival).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u32 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Handshake requests, in order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        lock(&self.state.requests).clone()
    }

    /// Audio bytes received over all connections.
    pub fn audio_bytes(&self) -> u64 {
        self.state.audio_bytes.load(Ordering::SeqCst)
    }

    /// The `type` of every text message received, in order
    /// (`KeepAlive`, `Finalize`, `CloseStream`, …).
    pub fn control_messages(&self) -> Vec<String> {
        lock(&self.state.control).clone()
    }
}

impl Drop for FakeDeepgram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// The handshake callback's `Result<Response, ErrorResponse>` is
// tungstenite's signature, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn serve_deepgram(socket: TcpStream, state: Arc<DeepgramState>) {
    state.connections.fetch_add(1, Ordering::SeqCst);
    let fault = lock(&state.faults).pop_front();
    let transcript = lock(&state.transcripts)
        .pop_front()
        .unwrap_or_else(|| lock(&state.default_transcript).clone());
    let refuse = match &fault {
        Some(Fault::Status { status, body }) => Some((*status, body.clone())),
        _ => None,
    };
    let record = state.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        lock(&record.requests).push(FakeRequest {
            method: req.method().to_string(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            credentials: req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: Vec::new(),
        });
        match refuse {
            None => Ok(resp),
            Some((status, body)) => Err(http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("content-length", body.len().to_string())
                .body(Some(body))
                .unwrap_or_else(|_| {
                    let mut r = http::Response::new(Some("bad fake status".to_owned()));
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                })),
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(socket, callback).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let words: Vec<String> = transcript.split_whitespace().map(str::to_owned).collect();
    let mut session = Session {
        words,
        revealed: 0,
        finalized: 0,
        first_sent: false,
    };
    let hang = fault == Some(Fault::Hang);
    let mut bytes = 0u64;
    while let Some(Ok(message)) = source.next().await {
        let replies = match message {
            Message::Binary(audio) => {
                let before = bytes / FRAME_BYTES / FRAMES_PER_WORD;
                bytes += audio.len() as u64;
                state
                    .audio_bytes
                    .fetch_add(audio.len() as u64, Ordering::SeqCst);
                let after = bytes / FRAME_BYTES / FRAMES_PER_WORD;
                (before..after)
                    .filter_map(|_| session.hear_word())
                    .collect()
            }
            Message::Text(text) => {
                let kind = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                lock(&state.control).push(kind.clone());
                match kind.as_str() {
                    "Finalize" => vec![session.finalize(true)],
                    "CloseStream" => {
                        let mut out = Vec::new();
                        if session.finalized < session.words.len() {
                            out.push(session.finalize(false));
                        }
                        out.push(metadata(bytes));
                        out
                    }
                    _ => Vec::new(),
                }
            }
            Message::Close(_) => return,
            _ => Vec::new(),
        };
        if hang {
            continue;
        }
        for reply in replies {
            let closing = reply.contains("\"Metadata\"");
            if !session.first_sent {
                session.first_sent = true;
                if let Some(Fault::Latency(delay)) = &fault {
                    tokio::time::sleep(*delay).await;
                }
                if sink.send(Message::text(reply)).await.is_err() {
                    return;
                }
                match &fault {
                    // Dropping both halves drops the TCP stream: no close
                    // frame, as when the network fails.
                    Some(Fault::CloseMidStream) => return,
                    Some(Fault::CloseWith { code, reason }) => {
                        let frame = CloseFrame {
                            code: CloseCode::from(*code),
                            reason: reason.as_str().into(),
                        };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        // Keep reading until the client goes: closing a
                        // socket with unread audio in it would reset the
                        // connection and lose the close frame.
                        drain(&mut source).await;
                        return;
                    }
                    _ => {}
                }
            } else if sink.send(Message::text(reply)).await.is_err() {
                return;
            }
            if closing {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                drain(&mut source).await;
                return;
            }
        }
    }
}

/// Reads (and ignores) whatever the client still sends, for at most 2 s.
async fn drain<S>(source: &mut S)
where
    S: futures_util::Stream + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while source.next().await.is_some() {}
    })
    .await;
}

/// What one Deepgram connection has recognised so far.
#[derive(Debug)]
struct Session {
    words: Vec<String>,
    revealed: usize,
    finalized: usize,
    first_sent: bool,
}

impl Session {
    /// 100 ms more audio: one more word, as an interim result or, when a
    /// segment is complete, a final one.
    fn hear_word(&mut self) -> Option<String> {
        if self.revealed >= self.words.len() {
            return None;
        }
        self.revealed += 1;
        let is_final = self.revealed - self.finalized >= SEGMENT_WORDS;
        let reply = results(&self.words, self.finalized, self.revealed, is_final, false);
        if is_final {
            self.finalized = self.revealed;
        }
        Some(reply)
    }

    /// Everything not yet final, as a final result.
    fn finalize(&mut self, from_finalize: bool) -> String {
        let start = self.finalized;
        self.revealed = self.words.len();
        self.finalized = self.words.len();
        results(&self.words, start, self.words.len(), true, from_finalize)
    }
}

/// A `Results` message for `words[from..to]`, 100 ms per word.
fn results(
    words: &[String],
    from: usize,
    to: usize,
    is_final: bool,
    from_finalize: bool,
) -> String {
    let segment = words.get(from..to).unwrap_or_default();
    let word_list: Vec<serde_json::Value> = segment
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let start = (from + i) as f64 * 0.1;
            serde_json::json!({
                "word": w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase(),
                "start": start,
                "end": start + 0.1,
                "confidence": 0.98,
                "punctuated_word": w,
            })
        })
        .collect();
    serde_json::json!({
        "type": "Results",
        "channel_index": [0, 1],
        "duration": segment.len() as f64 * 0.1,
        "start": from as f64 * 0.1,
        "is_final": is_final,
        "speech_final": is_final && to == words.len(),
        "from_finalize": from_finalize,
        "channel": { "alternatives": [ {
            "transcript": segment.join(" "),
            "confidence": 0.98,
            "words": word_list,
        } ] },
        "metadata": {
            "request_id": "00000000-0000-0000-0000-000000000000",
            "model_info": { "name": "fake", "version": "0", "arch": "fake" },
            "model_uuid": "00000000-0000-0000-0000-000000000000",
        },
    })
    .to_string()
}

fn metadata(bytes: u64) -> String {
    serde_json::json!({
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": "00000000-0000-0000-0000-000000000000",
        "sha256": "",
        "created": "2026-01-01T00:00:00.000Z",
        "duration": bytes as f64 / FRAME_BYTES as f64 * 0.02,
        "channels": 1,
    })
    .to_string()
}

/// A local ElevenLabs streaming TTS server. Stops when dropped.
#[derive(Debug)]
pub struct FakeElevenLabs {
    addr: SocketAddr,
    state: Arc<ElevenLabsState>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct ElevenLabsState {
    faults: Mutex<VecDeque<Fault>>,
    audio: Mutex<Vec<i16>>,
    chunk_bytes: AtomicUsize,
    chunk_interval_ms: AtomicU64,
    requests: Mutex<Vec<FakeRequest>>,
    bytes_sent: AtomicU64,
}

impl FakeElevenLabs {
    /// Starts the server on `127.0.0.1:0`, streaming 1 s of a 440 Hz tone
    /// in 100 ms chunks 20 ms apart.
    pub async fn start() -> std::io::Result<FakeElevenLabs> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let rate = switchboard_media::SAMPLE_RATE;
        let tone = (0..rate)
            .map(|i| {
                let t = f64::from(i) / f64::from(rate);
                (8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect();
        let state = Arc::new(ElevenLabsState {
            faults: Mutex::default(),
            audio: Mutex::new(tone),
            chunk_bytes: AtomicUsize::new(800),
            chunk_interval_ms: AtomicU64::new(20),
            requests: Mutex::default(),
            bytes_sent: AtomicU64::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_elevenlabs(socket, shared.clone()));
            }
        });
        Ok(FakeElevenLabs { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`, for [`ElevenLabsConfig::with_base_url`](crate::ElevenLabsConfig::with_base_url).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The audio every request streams (8 kHz samples, sent as µ-law).
    pub fn set_audio(&self, samples: Vec<i16>) {
        *lock(&self.state.audio) = samples;
    }

    /// Samples (= µ-law bytes) in one response body.
    pub fn audio_len(&self) -> usize {
        lock(&self.state.audio).len()
    }

    /// Body chunk size in bytes and the pause between chunks.
    pub fn set_pacing(&self, chunk_bytes: usize, interval: Duration) {
        self.state
            .chunk_bytes
            .store(chunk_bytes.max(1), Ordering::SeqCst);
        self.state
            .chunk_interval_ms
            .store(interval.as_millis() as u64, Ordering::SeqCst);
    }

    /// Injects `fault` into one more request (in order of arrival).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    /// Requests received, in order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        lock(&self.state.requests).clone()
    }

    /// Audio bytes written to response bodies so far, over all requests.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for FakeElevenLabs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Request heads larger than this are refused.
const MAX_HEAD: usize = 64 * 1024;
/// Request bodies larger than this are refused.
const MAX_BODY: usize = 1 << 20;

async fn serve_elevenlabs(mut socket: TcpStream, state: Arc<ElevenLabsState>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    lock(&state.requests).push(request.clone());
    let fault = lock(&state.faults).pop_front();
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    if request.method != "POST"
        || !path.starts_with("/v1/text-to-speech/")
        || !path.ends_with("/stream")
    {
        let _ = respond(&mut socket, 404, r#"{"detail":"Not Found"}"#).await;
        return;
    }
    if !before_response(&mut socket, fault.as_ref()).await {
        return;
    }
    let ulaw: Vec<u8> = lock(&state.audio)
        .iter()
        .map(|&s| switchboard_media::g711::ulaw_encode(s))
        .collect();
    let pacing = Pacing {
        chunk_bytes: state.chunk_bytes.load(Ordering::SeqCst),
        interval: Duration::from_millis(state.chunk_interval_ms.load(Ordering::SeqCst)),
    };
    let cut = fault == Some(Fault::CloseMidStream);
    stream_chunked(
        &mut socket,
        "audio/basic",
        &ulaw,
        pacing,
        cut,
        &state.bytes_sent,
    )
    .await;
}

/// A local OpenAI-compatible speech server (`/v1/audio/speech`: 1 s of a
/// 500 Hz tone as 24 kHz PCM in ten chunks 30 ms apart;
/// `/v1/audio/transcriptions`: `{"text": …}` for a multipart WAV upload).
/// Stops when dropped.
#[derive(Debug)]
pub struct FakeOpenAi {
    addr: SocketAddr,
    state: Arc<OpenAiState>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct OpenAiState {
    faults: Mutex<VecDeque<Fault>>,
    transcripts: Mutex<VecDeque<String>>,
    default_transcript: Mutex<String>,
    requests: Mutex<Vec<FakeRequest>>,
    bytes_sent: AtomicU64,
}

impl FakeOpenAi {
    /// Starts the server on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<FakeOpenAi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(OpenAiState::default());
        *lock(&state.default_transcript) = "hello".into();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_openai(socket, shared.clone()));
            }
        });
        Ok(FakeOpenAi { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`, for [`OpenAiConfig::new`](crate::OpenAiConfig::new).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The transcript of transcriptions without a scripted one.
    pub fn set_transcript(&self, text: impl Into<String>) {
        *lock(&self.state.default_transcript) = text.into();
    }

    /// Scripts the transcript of one more transcription request.
    pub fn push_transcript(&self, text: impl Into<String>) {
        lock(&self.state.transcripts).push_back(text.into());
    }

    /// Injects `fault` into one more request (in order of arrival).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    /// Requests received, in order (`credentials` is the `Authorization`
    /// header).
    pub fn requests(&self) -> Vec<FakeRequest> {
        lock(&self.state.requests).clone()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_openai(mut socket: TcpStream, state: Arc<OpenAiState>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    lock(&state.requests).push(request.clone());
    let fault = lock(&state.faults).pop_front();
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    let not_found = r#"{"error":{"message":"not found"}}"#;
    if request.method != "POST" {
        let _ = respond(&mut socket, 404, not_found).await;
        return;
    }
    match path {
        "/v1/audio/speech" => {
            if !before_response(&mut socket, fault.as_ref()).await {
                return;
            }
            let pcm: Vec<u8> = (0..24_000)
                .flat_map(|i| {
                    let t = f64::from(i) / 24_000.0;
                    ((8_000.0 * (2.0 * std::f64::consts::PI * 500.0 * t).sin()) as i16)
                        .to_le_bytes()
                })
                .collect();
            let pacing = Pacing {
                // Odd: chunks split samples in half, as networks do.
                chunk_bytes: 4_801,
                interval: Duration::from_millis(30),
            };
            let cut = fault == Some(Fault::CloseMidStream);
            stream_chunked(
                &mut socket,
                "application/octet-stream",
                &pcm,
                pacing,
                cut,
                &state.bytes_sent,
            )
            .await;
        }
        "/v1/audio/transcriptions" => {
            if !before_response(&mut socket, fault.as_ref()).await {
                return;
            }
            if !request.body.windows(4).any(|w| w == b"RIFF") {
                let _ = respond(
                    &mut socket,
                    400,
                    r#"{"error":{"message":"expected a multipart WAV upload"}}"#,
                )
                .await;
                return;
            }
            let text = lock(&state.transcripts)
                .pop_front()
                .unwrap_or_else(|| lock(&state.default_transcript).clone());
            let body = serde_json::json!({ "text": text }).to_string();
            let _ = respond(&mut socket, 200, &body).await;
        }
        _ => {
            let _ = respond(&mut socket, 404, not_found).await;
        }
    }
}

/// Applies the fault that concerns the response head: `false` when the
/// request was answered (an error status) or left hanging.
async fn before_response(socket: &mut TcpStream, fault: Option<&Fault>) -> bool {
    match fault {
        Some(Fault::Hang) => {
            // Never answer; notice when the client gives up.
            let mut scratch = [0u8; 256];
            while matches!(socket.read(&mut scratch).await, Ok(n) if n > 0) {}
            false
        }
        Some(Fault::Status { status, body }) => {
            let _ = respond(socket, *status, body).await;
            false
        }
        Some(Fault::Latency(delay)) => {
            tokio::time::sleep(*delay).await;
            true
        }
        _ => true,
    }
}

/// How a body is cut and paced.
#[derive(Clone, Copy, Debug)]
struct Pacing {
    chunk_bytes: usize,
    interval: Duration,
}

/// Streams `body` with chunked transfer encoding; with `cut`, stops after
/// the first chunk without the terminating one (a truncated body).
async fn stream_chunked(
    socket: &mut TcpStream,
    content_type: &str,
    body: &[u8],
    pacing: Pacing,
    cut: bool,
    sent: &AtomicU64,
) {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for (i, chunk) in body.chunks(pacing.chunk_bytes.max(1)).enumerate() {
        if i > 0 {
            tokio::time::sleep(pacing.interval).await;
        }
        let mut out = format!("{:x}\r\n", chunk.len()).into_bytes();
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        if socket.write_all(&out).await.is_err() || socket.flush().await.is_err() {
            return;
        }
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if cut {
            return;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
}

/// Reads one HTTP/1.1 request (head and `content-length` body).
async fn read_request(socket: &mut TcpStream) -> Option<FakeRequest> {
    let mut buf = Vec::new();
    let mut scratch = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = socket.read(&mut scratch).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&scratch[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path_and_query = first.next()?.to_owned();
    let mut content_length = 0usize;
    let mut credentials = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse().ok()?,
            "xi-api-key" | "authorization" => credentials = Some(value.to_owned()),
            _ => {}
        }
    }
    if content_length > MAX_BODY {
        return None;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < content_length {
        let n = socket.read(&mut scratch).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&scratch[..n]);
    }
    body.truncate(content_length);
    Some(FakeRequest {
        method,
        path_and_query,
        credentials,
        body,
    })
}

async fn respond(socket: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a test thread panicked; the recorded data
    // is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
