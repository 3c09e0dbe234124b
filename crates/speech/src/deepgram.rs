//! [`DeepgramStt`]: Deepgram live streaming speech to text over a WebSocket,
//! one connection per caller turn.
//!
//! Protocol (Deepgram "Live Audio" / `/v1/listen`, as documented at
//! developers.deepgram.com, checked Nov 2026):
//!
//! - Connect to `{base}/v1/listen?encoding=linear16&sample_rate=8000&channels=1&interim_results=true&punctuate=true&model=…&language=…`
//!   with `Authorization: Token <key>`. A refused handshake is an HTTP
//!   answer (401 bad key, 400 bad parameter, 429, 5xx) whose JSON body
//!   carries `err_code`/`err_msg`; it becomes [`SpeechError::Status`].
//! - Send caller audio as binary frames (one 320-byte PCM16LE frame per
//!   20 ms). While the caller is silent and no audio flows, send the text
//!   message `{"type":"KeepAlive"}` (every [`DeepgramConfig::keepalive_interval`],
//!   4 s by default): without data for 10 s Deepgram closes with `NET-0001`.
//! - Receive `Results` messages: `is_final: false` are interim results
//!   (mapped to [`SttEvent::Partial`] of everything heard so far);
//!   `is_final: true` segments are concatenated into the turn's transcript.
//!   `Metadata`, `UtteranceEnd` and `SpeechStarted` carry no text.
//! - At the end of the turn send `{"type":"Finalize"}` (flush: the server
//!   processes buffered audio and answers with `from_finalize: true`
//!   results) immediately followed by `{"type":"CloseStream"}` (the server
//!   sends any remaining results, a `Metadata` summary, then closes with
//!   1000). The turn is complete at the first of: a `from_finalize` result,
//!   `Metadata`, or a normal close. Deepgram documents that the
//!   `from_finalize` answer is not guaranteed when little audio is
//!   buffered, hence `CloseStream` as the backstop, and
//!   [`DeepgramConfig::finalize_timeout`] bounds the whole wait.
//! - Errors during streaming arrive as a WebSocket close frame with a code
//!   and a reason such as `DATA-0000` (1008, or 1002 in older docs: audio
//!   cannot be decoded — permanent) or `NET-0000`/`NET-0001` (1011:
//!   timeouts on either side — retryable). They become
//!   [`SpeechError::Connection`] carrying the close code, so
//!   [`SpeechError::is_retryable`] can tell them apart.
//!
//! Assumptions, not verified against the live service: when the handshake
//! body is empty the `dg-error` response header is quoted instead; a text
//! message of type `Error` (not in the documents we found) is treated like
//! a retryable connection failure; unknown message types are ignored.
//!
//! Confidence of the final transcript is the mean of the final segments'
//! confidences (0.0 when nothing was said).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{
    runtime, SpeechError, SpeechToText, SttEvent, SttInput, SttStream, STT_CHANNEL_INPUTS,
};

const PROVIDER: &str = "deepgram";
/// Error bodies and close reasons are quoted up to this many bytes.
const MAX_ERROR_BODY: usize = 512;
/// Inputs held while the connection is being opened: 60 s of audio.
const MAX_QUEUED: usize = 3_000;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Where and how to reach Deepgram.
#[derive(Clone)]
pub struct DeepgramConfig {
    /// Base URL without the path, e.g. `wss://api.deepgram.com`;
    /// `https://`/`http://` are accepted and mean `wss://`/`ws://`.
    pub base_url: String,
    /// API key, sent as `Authorization: Token <key>`.
    pub api_key: String,
    /// Model (default `nova-3`).
    pub model: String,
    /// Language (BCP-47, default `en-US`).
    pub language: String,
    /// Bound on opening the connection (TCP, TLS and handshake).
    pub connect_timeout: Duration,
    /// Bound on the wait for the final transcript after `Finish`.
    pub finalize_timeout: Duration,
    /// How long without audio before a `KeepAlive` is sent (Deepgram closes
    /// idle connections after 10 s; it recommends every 3-5 s).
    pub keepalive_interval: Duration,
}

impl DeepgramConfig {
    /// A config for Deepgram's public endpoint with defaults for everything
    /// but the key.
    pub fn new(api_key: impl Into<String>) -> Self {
        DeepgramConfig {
            base_url: "wss://api.deepgram.com".into(),
            api_key: api_key.into(),
            model: "nova-3".into(),
            language: "en-US".into(),
            connect_timeout: Duration::from_secs(5),
            finalize_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(4),
        }
    }

    /// The same config pointed at another server (a proxy, a self-hosted
    /// Deepgram, or the fake in tests).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// The `/v1/listen` URL with the query this adapter relies on.
    pub fn listen_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        format!(
            "{base}/v1/listen?encoding=linear16&sample_rate={}&channels=1&interim_results=true&punctuate=true&model={}&language={}",
            switchboard_media::SAMPLE_RATE,
            query_escape(&self.model),
            query_escape(&self.language),
        )
    }
}

impl std::fmt::Debug for DeepgramConfig {
    // The API key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("language", &self.language)
            .field("connect_timeout", &self.connect_timeout)
            .field("finalize_timeout", &self.finalize_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .finish()
    }
}

/// Streaming speech to text through Deepgram's `/v1/listen` WebSocket.
///
/// The connection is opened when the stream is, so recognition runs while
/// the caller speaks; audio sent before the handshake completes is queued
/// (up to 60 s) and sent as soon as it does.
#[derive(Clone, Debug)]
pub struct DeepgramStt {
    config: Arc<DeepgramConfig>,
    tls: Arc<rustls::ClientConfig>,
}

impl DeepgramStt {
    /// An adapter for `config`.
    pub fn new(config: DeepgramConfig) -> Result<Self, SpeechError> {
        Ok(DeepgramStt {
            config: Arc::new(config),
            tls: Arc::new(tls_config()?),
        })
    }
}

impl SpeechToText for DeepgramStt {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let rt = runtime()?;
        let (audio_tx, audio_rx) = mpsc::channel(STT_CHANNEL_INPUTS);
        let (events_tx, events_rx) = mpsc::channel(16);
        let this = self.clone();
        rt.spawn(async move {
            if let Err(e) = this.run(audio_rx, &events_tx).await {
                tracing::debug!(error = %e, "deepgram stream failed");
                let _ = events_tx.send(Err(e)).await;
            }
        });
        Ok(SttStream {
            audio: audio_tx,
            events: events_rx,
        })
    }
}

impl DeepgramStt {
    /// One turn: connect, stream, finalize. `Ok` also covers abandonment
    /// (either side of the stream dropped).
    async fn run(
        &self,
        mut audio: mpsc::Receiver<SttInput>,
        events: &mpsc::Sender<Result<SttEvent, SpeechError>>,
    ) -> Result<(), SpeechError> {
        // Connect while the caller keeps talking: inputs are queued, so the
        // caller never waits for the handshake.
        let mut queued = Vec::new();
        let connect = tokio::time::timeout(self.config.connect_timeout, self.connect());
        tokio::pin!(connect);
        let ws = loop {
            tokio::select! {
                _ = events.closed() => return Ok(()),
                result = &mut connect => {
                    break result.map_err(|_| SpeechError::Timeout { provider: PROVIDER })??;
                }
                // After `Finish` the caller may drop its sender: that is
                // not abandonment, so stop reading.
                input = audio.recv(), if queued.len() < MAX_QUEUED
                    && !matches!(queued.last(), Some(SttInput::Finish)) => match input {
                    Some(input) => queued.push(input),
                    None => return Ok(()),
                },
            }
        };
        let (mut sink, mut stream) = ws.split();
        let mut turn = Turn::default();
        let mut finishing: Option<Instant> = None;

        let mut pending = std::collections::VecDeque::from(queued);
        let mut keepalive = tokio::time::interval(self.config.keepalive_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        loop {
            let deadline = finishing.unwrap_or_else(|| Instant::now() + Duration::from_secs(3_600));
            tokio::select! {
                biased;
                _ = events.closed() => {
                    let _ = sink.send(Message::text(CLOSE_STREAM)).await;
                    return Ok(());
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        let message = parse_message(&text)?;
                        let done = finishing.is_some() && message.ends_turn();
                        if let Some(event) = turn.handle(&message) {
                            if events.send(Ok(event)).await.is_err() {
                                return Ok(());
                            }
                        }
                        if done {
                            let _ = events.send(Ok(turn.final_event())).await;
                            return Ok(());
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return match (finishing, close_error(frame)) {
                            // A normal close after CloseStream: every result
                            // has been sent.
                            (Some(_), None) => {
                                let _ = events.send(Ok(turn.final_event())).await;
                                Ok(())
                            }
                            (None, None) => Err(SpeechError::Connection {
                                provider: PROVIDER,
                                close_code: Some(1000),
                                reason: "closed by the server before the end of the turn".into(),
                            }),
                            (_, Some(e)) => Err(e),
                        };
                    }
                    Some(Ok(_)) => {} // ping/pong (answered by tungstenite), binary
                    Some(Err(e)) => return Err(transport(e)),
                    None => {
                        return Err(SpeechError::Connection {
                            provider: PROVIDER,
                            close_code: None,
                            reason: "connection dropped without a close frame".into(),
                        })
                    }
                },
                _ = tokio::time::sleep_until(deadline), if finishing.is_some() => {
                    return Err(SpeechError::Timeout { provider: PROVIDER });
                }
                // Queued inputs first, then live ones. Popping and returning
                // happen in one poll, so a cancelled branch loses nothing.
                input = async {
                    match pending.pop_front() {
                        Some(input) => Some(input),
                        None => audio.recv().await,
                    }
                }, if finishing.is_none() => {
                    match input {
                        Some(SttInput::Audio(frame)) => {
                            let result = sink.send(Message::binary(pcm_bytes(&frame))).await;
                            self.check_send(result, &mut stream).await?;
                            keepalive.reset();
                        }
                        Some(SttInput::Finish) => {
                            let result = sink.send(Message::text(FINALIZE)).await;
                            self.check_send(result, &mut stream).await?;
                            let result = sink.send(Message::text(CLOSE_STREAM)).await;
                            self.check_send(result, &mut stream).await?;
                            finishing = Some(Instant::now() + self.config.finalize_timeout);
                        }
                        None => {
                            // The caller abandoned the turn.
                            let _ = sink.send(Message::text(CLOSE_STREAM)).await;
                            return Ok(());
                        }
                    }
                }
                _ = keepalive.tick(), if finishing.is_none() => {
                    let result = sink.send(Message::text(KEEP_ALIVE)).await;
                    self.check_send(result, &mut stream).await?;
                }
            }
        }
    }

    async fn connect(&self) -> Result<Ws, SpeechError> {
        let mut request = self
            .config
            .listen_url()
            .into_client_request()
            .map_err(|e| SpeechError::Config {
                what: "deepgram url",
                reason: e.to_string(),
            })?;
        let auth =
            HeaderValue::from_str(&format!("Token {}", self.config.api_key)).map_err(|_| {
                SpeechError::Config {
                    what: "deepgram api key",
                    reason: "not a valid header value".into(),
                }
            })?;
        request.headers_mut().insert("Authorization", auth);
        let connector = Connector::Rustls(self.tls.clone());
        let (ws, _response) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await
                .map_err(handshake_error)?;
        Ok(ws)
    }

    /// A failed send usually means the server closed the connection: look
    /// briefly for its close frame, whose code says whether to retry.
    async fn check_send(
        &self,
        result: Result<(), tungstenite::Error>,
        stream: &mut futures_util::stream::SplitStream<Ws>,
    ) -> Result<(), SpeechError> {
        let Err(err) = result else { return Ok(()) };
        let look = async {
            while let Some(msg) = stream.next().await {
                if let Ok(Message::Close(frame)) = msg {
                    return close_error(frame);
                }
            }
            None
        };
        match tokio::time::timeout(Duration::from_millis(200), look).await {
            Ok(Some(e)) => Err(e),
            _ => Err(transport(err)),
        }
    }
}

const FINALIZE: &str = r#"{"type":"Finalize"}"#;
const CLOSE_STREAM: &str = r#"{"type":"CloseStream"}"#;
const KEEP_ALIVE: &str = r#"{"type":"KeepAlive"}"#;

/// A message from Deepgram, reduced to what a turn needs.
#[derive(Clone, Debug, PartialEq)]
enum ServerMessage {
    Results {
        transcript: String,
        confidence: f32,
        is_final: bool,
        from_finalize: bool,
    },
    Metadata,
    UtteranceEnd,
    SpeechStarted,
    Other(String),
}

impl ServerMessage {
    /// Whether, once `Finalize`/`CloseStream` were sent, this message means
    /// every result of the turn has arrived.
    fn ends_turn(&self) -> bool {
        matches!(
            self,
            ServerMessage::Metadata
                | ServerMessage::Results {
                    from_finalize: true,
                    ..
                }
        )
    }
}

/// Parses one text message. Unknown types are kept as `Other`; a message
/// that is not JSON, or a `Results` without its fields, is a protocol error.
fn parse_message(text: &str) -> Result<ServerMessage, SpeechError> {
    let bad = |reason: String| SpeechError::Response {
        provider: PROVIDER,
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("message is not JSON: {e}")))?;
    let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
    Ok(match kind {
        "Results" => {
            let is_final = value
                .get("is_final")
                .and_then(|v| v.as_bool())
                .ok_or_else(|| bad("Results without is_final".into()))?;
            let best = value
                .get("channel")
                .and_then(|c| c.get("alternatives"))
                .and_then(|a| a.as_array())
                .and_then(|a| a.first());
            let transcript = best
                .and_then(|b| b.get("transcript"))
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .trim()
                .to_owned();
            let confidence = best
                .and_then(|b| b.get("confidence"))
                .and_then(|c| c.as_f64())
                .unwrap_or(0.0)
                .clamp(0.0, 1.0) as f32;
            let from_finalize = value
                .get("from_finalize")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            ServerMessage::Results {
                transcript,
                confidence,
                is_final,
                from_finalize,
            }
        }
        "Metadata" => ServerMessage::Metadata,
        "UtteranceEnd" => ServerMessage::UtteranceEnd,
        "SpeechStarted" => ServerMessage::SpeechStarted,
        "Error" => {
            let reason = ["description", "message", "err_msg"]
                .iter()
                .find_map(|k| value.get(*k).and_then(|v| v.as_str()))
                .unwrap_or("error message from the server");
            return Err(SpeechError::Connection {
                provider: PROVIDER,
                close_code: None,
                reason: truncate(reason),
            });
        }
        other => ServerMessage::Other(other.to_owned()),
    })
}

/// The transcript of one turn as results arrive (sans-IO).
#[derive(Debug, Default)]
struct Turn {
    finals: Vec<String>,
    confidences: Vec<f32>,
    last_partial: String,
}

impl Turn {
    /// Takes in a message; returns the partial to report, if the text
    /// heard so far changed.
    fn handle(&mut self, message: &ServerMessage) -> Option<SttEvent> {
        let ServerMessage::Results {
            transcript,
            confidence,
            is_final,
            ..
        } = message
        else {
            return None;
        };
        let text = if *is_final {
            if !transcript.is_empty() {
                self.finals.push(transcript.clone());
                self.confidences.push(*confidence);
            }
            self.finals.join(" ")
        } else {
            let mut text = self.finals.join(" ");
            if !transcript.is_empty() {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(transcript);
            }
            text
        };
        if text.is_empty() || text == self.last_partial {
            return None;
        }
        self.last_partial.clone_from(&text);
        Some(SttEvent::Partial { text })
    }

    /// The final transcript: the final segments joined.
    fn final_event(&self) -> SttEvent {
        let confidence = if self.confidences.is_empty() {
            0.0
        } else {
            self.confidences.iter().sum::<f32>() / self.confidences.len() as f32
        };
        SttEvent::Final {
            text: self.finals.join(" ").trim().to_owned(),
            confidence,
        }
    }
}

/// `None` for a normal close (1000 or no code); otherwise the error the
/// close frame stands for.
fn close_error(frame: Option<CloseFrame>) -> Option<SpeechError> {
    let frame = frame?;
    let code = u16::from(frame.code);
    if code == 1000 {
        return None;
    }
    Some(SpeechError::Connection {
        provider: PROVIDER,
        close_code: Some(code),
        reason: truncate(frame.reason.as_str()),
    })
}

fn handshake_error(err: tungstenite::Error) -> SpeechError {
    match err {
        tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            let mut message = error_message(body);
            if message.is_empty() {
                message = response
                    .headers()
                    .get("dg-error")
                    .and_then(|v| v.to_str().ok())
                    .map(truncate)
                    .unwrap_or_default();
            }
            SpeechError::Status {
                provider: PROVIDER,
                status: response.status().as_u16(),
                message,
            }
        }
        other => transport(other),
    }
}

/// `err_code: err_msg` from a Deepgram error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let code = value.get("err_code").and_then(|v| v.as_str());
        let msg = value.get("err_msg").and_then(|v| v.as_str());
        match (code, msg) {
            (Some(code), Some(msg)) => return truncate(&format!("{code}: {msg}")),
            (None, Some(msg)) | (Some(msg), None) => return truncate(msg),
            (None, None) => {}
        }
    }
    truncate(String::from_utf8_lossy(body).trim())
}

fn transport(err: tungstenite::Error) -> SpeechError {
    SpeechError::Connection {
        provider: PROVIDER,
        close_code: None,
        reason: truncate(&err.to_string()),
    }
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn pcm_bytes(frame: &crate::Frame) -> Vec<u8> {
    frame
        .samples()
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect()
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// TLS for `wss://`: rustls with the ring provider named explicitly (other
/// crates in the process may enable a second provider, which would make
/// rustls' implicit default ambiguous) and Mozilla's roots.
fn tls_config() -> Result<rustls::ClientConfig, SpeechError> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SpeechError::Config {
        what: "deepgram tls",
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(transcript: &str, is_final: bool, from_finalize: bool) -> String {
        serde_json::json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": 1.0,
            "start": 0.0,
            "is_final": is_final,
            "speech_final": is_final,
            "from_finalize": from_finalize,
            "channel": { "alternatives": [ {
                "transcript": transcript,
                "confidence": 0.9,
                "words": []
            } ] }
        })
        .to_string()
    }

    #[test]
    fn interim_and_final_results_become_partials_then_one_final() {
        let mut turn = Turn::default();
        let mut partials = Vec::new();
        for (text, is_final) in [
            ("I need", false),
            ("I need to speak", false),
            ("I need to speak", true),
            ("with a", false),
            ("with a person", true),
        ] {
            let message = parse_message(&results(text, is_final, false)).expect("valid");
            if let Some(SttEvent::Partial { text }) = turn.handle(&message) {
                partials.push(text);
            }
        }
        assert_eq!(
            partials,
            [
                "I need",
                "I need to speak",
                "I need to speak with a",
                "I need to speak with a person"
            ]
        );
        assert_eq!(
            turn.final_event(),
            SttEvent::Final {
                text: "I need to speak with a person".into(),
                confidence: 0.9
            }
        );
    }

    #[test]
    fn silence_gives_an_empty_final_with_no_confidence() {
        let mut turn = Turn::default();
        let message = parse_message(&results("", true, true)).expect("valid");
        assert_eq!(turn.handle(&message), None);
        assert!(message.ends_turn());
        assert_eq!(
            turn.final_event(),
            SttEvent::Final {
                text: String::new(),
                confidence: 0.0
            }
        );
    }

    #[test]
    fn other_messages_parse_without_text() {
        let metadata = r#"{"type":"Metadata","transaction_key":"deprecated","request_id":"x","sha256":"y","created":"2024-08-29T22:37:55.202Z","duration":0.0,"channels":0}"#;
        assert_eq!(
            parse_message(metadata).expect("valid"),
            ServerMessage::Metadata
        );
        assert!(ServerMessage::Metadata.ends_turn());
        assert_eq!(
            parse_message(r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.3}"#)
                .expect("valid"),
            ServerMessage::UtteranceEnd
        );
        assert_eq!(
            parse_message(r#"{"type":"SpeechStarted","channel":[0],"timestamp":0.5}"#)
                .expect("valid"),
            ServerMessage::SpeechStarted
        );
        assert!(!parse_message(&results("hi", true, false))
            .expect("valid")
            .ends_turn());
        assert!(matches!(
            parse_message(r#"{"type":"Something"}"#),
            Ok(ServerMessage::Other(_))
        ));
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        for text in ["not json", r#"{"type":"Results"}"#] {
            let err = parse_message(text).expect_err(text);
            assert!(matches!(err, SpeechError::Response { .. }), "{err}");
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn close_codes_say_whether_to_retry() {
        let close = |code: u16, reason: &str| {
            close_error(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
        };
        assert!(close(1000, "").is_none());
        assert!(close_error(None).is_none());
        let data = close(1008, "DATA-0000").expect("error");
        assert!(!data.is_retryable(), "{data}");
        assert!(data.to_string().contains("DATA-0000"));
        let net = close(1011, "NET-0001").expect("error");
        assert!(net.is_retryable(), "{net}");
    }

    #[test]
    fn handshake_errors_quote_the_deepgram_message() {
        assert_eq!(
            error_message(
                br#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials.","request_id":"r"}"#
            ),
            "INVALID_AUTH: Invalid credentials."
        );
        assert_eq!(error_message(b" plain text \n"), "plain text");
    }

    #[test]
    fn the_url_carries_the_audio_format_and_escapes_values() {
        let mut config = DeepgramConfig::new("k").with_base_url("https://example.test/");
        config.language = "en US".into();
        let url = config.listen_url();
        assert!(url.starts_with("wss://example.test/v1/listen?encoding=linear16&sample_rate=8000&channels=1&interim_results=true"), "{url}");
        assert!(url.ends_with("model=nova-3&language=en%20US"), "{url}");
        let shown = format!("{:?}", DeepgramConfig::new("dg-secret"));
        assert!(!shown.contains("dg-secret"), "{shown}");
    }
}
