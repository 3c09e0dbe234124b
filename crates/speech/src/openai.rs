//! OpenAI-compatible cloud adapters: [`OpenAiTts`] (`POST /v1/audio/speech`,
//! raw 24 kHz PCM streamed as it is generated) and [`OpenAiStt`]
//! (`POST /v1/audio/transcriptions`, the turn uploaded as an 8 kHz WAV).
//! Any server speaking these two endpoints works (OpenAI, LocalAI,
//! faster-whisper-server, …).
//!
//! The adapters do not retry on their own: a call has a latency budget the
//! adapter cannot see. Errors say whether a retry can help
//! ([`SpeechError::is_retryable`]: transport errors, timeouts, 429 and 5xx).
//! Timeouts: [`OpenAiConfig::timeout`] bounds the wait for response headers
//! and every gap between body chunks, so a stalled stream ends instead of
//! hanging the call.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::resample::{PcmDecoder, ToFrames};
use crate::{
    runtime, Frame, SpeechError, SpeechToText, SttEvent, SttInput, SttStream, TextToSpeech,
    TtsStream, STT_CHANNEL_INPUTS,
};

const TTS: &str = "openai tts";
const STT: &str = "openai stt";
/// `response_format: "pcm"` is 24 kHz s16le mono.
const PCM_RATE: u32 = 24_000;
/// Error bodies are quoted up to this many bytes.
const MAX_ERROR_BODY: usize = 512;
/// Transcription responses larger than this are refused.
const MAX_JSON_BODY: usize = 1 << 20;

/// Where and how to reach an OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Base URL without the `/v1/...` path, e.g. `https://api.openai.com`.
    pub base_url: String,
    /// Bearer token; `None` for local servers without auth.
    pub api_key: Option<String>,
    /// Model name; `None` uses `gpt-4o-mini-tts` (TTS) or `whisper-1` (STT).
    pub model: Option<String>,
    /// TTS voice (default `alloy`).
    pub voice: String,
    /// STT language hint (ISO 639-1, default `en`); empty to let the server
    /// detect it.
    pub language: String,
    /// Bound on the wait for headers and on every gap between body chunks.
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// A config for `base_url` with defaults for everything else.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key,
            model: None,
            voice: "alloy".into(),
            language: "en".into(),
            timeout: Duration::from_secs(10),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    // The API key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("voice", &self.voice)
            .field("language", &self.language)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Text to speech through `POST /v1/audio/speech`.
#[derive(Clone, Debug)]
pub struct OpenAiTts {
    config: OpenAiConfig,
    client: reqwest::Client,
}

impl OpenAiTts {
    /// An adapter for `config`.
    pub fn new(config: OpenAiConfig) -> Result<Self, SpeechError> {
        Ok(OpenAiTts {
            client: client(TTS)?,
            config,
        })
    }
}

impl TextToSpeech for OpenAiTts {
    fn name(&self) -> &str {
        "openai"
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let this = self.clone();
        let text = text.to_owned();
        crate::spawn_tts(move |tx| async move { this.stream(&text, &tx).await })
    }
}

impl OpenAiTts {
    async fn stream(
        &self,
        text: &str,
        tx: &mpsc::Sender<Result<Frame, SpeechError>>,
    ) -> Result<(), SpeechError> {
        let body = serde_json::json!({
            "model": self.config.model.as_deref().unwrap_or("gpt-4o-mini-tts"),
            "input": text,
            "voice": self.config.voice,
            "response_format": "pcm",
        });
        let req = self
            .config
            .authorize(self.client.post(self.config.url("/v1/audio/speech")))
            .json(&body);
        let mut response = send(req, TTS, self.config.timeout).await?;
        let mut convert = ToFrames::new(PCM_RATE).ok_or(SpeechError::InvalidAudio {
            provider: TTS,
            reason: "unsupported sample rate".into(),
        })?;
        let mut pcm = PcmDecoder::default();
        let mut samples = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.config.timeout, response.chunk())
                .await
                .map_err(|_| SpeechError::Timeout { provider: TTS })?
                .map_err(|e| SpeechError::Http {
                    provider: TTS,
                    source: e,
                })?;
            let Some(chunk) = chunk else { break };
            samples.clear();
            pcm.decode(&chunk, &mut samples);
            for frame in convert.push(&samples) {
                if tx.send(Ok(frame)).await.is_err() {
                    return Ok(());
                }
            }
        }
        for frame in convert.finish() {
            if tx.send(Ok(frame)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Speech to text through `POST /v1/audio/transcriptions`: the turn is
/// buffered and uploaded on `Finish`. Confidence is 1.0: the JSON response
/// format reports none.
#[derive(Clone, Debug)]
pub struct OpenAiStt {
    config: OpenAiConfig,
    client: reqwest::Client,
}

impl OpenAiStt {
    /// An adapter for `config`.
    pub fn new(config: OpenAiConfig) -> Result<Self, SpeechError> {
        Ok(OpenAiStt {
            client: client(STT)?,
            config,
        })
    }

    /// Uploads 8 kHz audio and returns the transcript.
    pub async fn transcribe(&self, samples_8k: &[i16]) -> Result<String, SpeechError> {
        let boundary = format!("switchboard-{:016x}", boundary_seed(samples_8k));
        let model = self.config.model.as_deref().unwrap_or("whisper-1");
        let mut body = Vec::with_capacity(samples_8k.len() * 2 + 1024);
        let mut field = |name: &str, value: &str| {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        };
        field("model", model);
        field("response_format", "json");
        if !self.config.language.is_empty() {
            let language = self.config.language.clone();
            field("language", &language);
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"turn.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&wav_8k(samples_8k));
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

        let req = self
            .config
            .authorize(
                self.client
                    .post(self.config.url("/v1/audio/transcriptions")),
            )
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        let response = send(req, STT, self.config.timeout).await?;
        let bytes = read_limited(response, MAX_JSON_BODY, STT, self.config.timeout).await?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| SpeechError::Response {
                provider: STT,
                reason: format!("not JSON: {e}"),
            })?;
        value
            .get("text")
            .and_then(|t| t.as_str())
            .map(|t| t.trim().to_owned())
            .ok_or(SpeechError::Response {
                provider: STT,
                reason: "no \"text\" field".into(),
            })
    }
}

impl SpeechToText for OpenAiStt {
    fn name(&self) -> &str {
        "openai"
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let rt = runtime()?;
        let (audio_tx, mut audio_rx) = mpsc::channel(STT_CHANNEL_INPUTS);
        let (events_tx, events_rx) = mpsc::channel(4);
        let this = self.clone();
        rt.spawn(async move {
            // 60 s of audio at most (1 MB): bounded whatever the caller sends.
            let max = 60 * switchboard_media::SAMPLE_RATE as usize;
            let mut audio: Vec<i16> = Vec::new();
            while let Some(input) = audio_rx.recv().await {
                match input {
                    SttInput::Audio(frame) => {
                        if audio.len() < max {
                            audio.extend_from_slice(frame.samples());
                        }
                    }
                    SttInput::Finish => {
                        let result = tokio::select! {
                            _ = events_tx.closed() => return,
                            r = this.transcribe(&audio) => r,
                        };
                        let event = result.map(|text| SttEvent::Final {
                            text,
                            confidence: 1.0,
                        });
                        let _ = events_tx.send(event).await;
                        return;
                    }
                }
            }
        });
        Ok(SttStream {
            audio: audio_tx,
            events: events_rx,
        })
    }
}

pub(crate) fn client(provider: &'static str) -> Result<reqwest::Client, SpeechError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| SpeechError::Http {
            provider,
            source: e,
        })
}

/// Sends `req`, waiting at most `timeout` for the headers; non-2xx answers
/// become [`SpeechError::Status`] quoting the start of the body.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    provider: &'static str,
    timeout: Duration,
) -> Result<reqwest::Response, SpeechError> {
    let response = tokio::time::timeout(timeout, req.send())
        .await
        .map_err(|_| SpeechError::Timeout { provider })?
        .map_err(|e| SpeechError::Http {
            provider,
            source: e,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = read_limited(response, MAX_ERROR_BODY, provider, timeout)
        .await
        .unwrap_or_default();
    Err(SpeechError::Status {
        provider,
        status: status.as_u16(),
        message: String::from_utf8_lossy(&body).trim().to_owned(),
    })
}

/// The body, cut at `limit` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    provider: &'static str,
    timeout: Duration,
) -> Result<Vec<u8>, SpeechError> {
    let mut body = Vec::new();
    while body.len() < limit {
        let chunk = tokio::time::timeout(timeout, response.chunk())
            .await
            .map_err(|_| SpeechError::Timeout { provider })?
            .map_err(|e| SpeechError::Http {
                provider,
                source: e,
            })?;
        let Some(chunk) = chunk else { break };
        body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]);
    }
    Ok(body)
}

/// A mono 16-bit 8 kHz WAV file.
fn wav_8k(samples: &[i16]) -> Vec<u8> {
    let rate = switchboard_media::SAMPLE_RATE;
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A boundary that cannot occur in the body: the WAV is binary, so derive
/// it from the clock and the audio and rely on 64 bits of it.
fn boundary_seed(samples: &[i16]) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    samples
        .iter()
        .take(4096)
        .fold(nanos ^ 0x9e37_79b9_7f4a_7c15, |h, &s| {
            (h ^ s as u16 as u64).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_is_not_in_debug_output() {
        let config = OpenAiConfig::new("http://127.0.0.1:1", Some("sk-secret".into()));
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn wav_header_matches_the_samples() {
        let wav = wav_8k(&[1, -1, 2]);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]), 6);
        assert_eq!(wav.len(), 50);
    }
}
