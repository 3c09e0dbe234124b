//! [`ElevenLabsTts`]: ElevenLabs streaming text to speech,
//! `POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000`.
//!
//! Protocol (elevenlabs.io API reference, "Stream speech", checked Nov 2026):
//! the API key goes in the `xi-api-key` header, the body is
//! `{"text": …, "model_id": …}`, and the answer is a chunked body of raw
//! audio in the requested `output_format`. We ask for `ulaw_8000` (G.711
//! µ-law at 8 kHz, the format ElevenLabs documents for telephony): one byte
//! per sample, no resampling, so every byte that arrives is a sample and the
//! first 20 ms frame is played as soon as 160 bytes are in. Errors are JSON
//! `{"detail": {"status": "invalid_api_key", "message": "…"}}`; validation
//! errors (422) carry `detail` as a list. They become
//! [`SpeechError::Status`] quoting `status: message`.
//!
//! Like the OpenAI adapter this one does not retry (wrap it in a
//! [`FallbackTts`](crate::FallbackTts) for that) and
//! [`ElevenLabsConfig::timeout`] bounds the wait for the headers and every
//! gap between body chunks. Dropping the stream drops the response, which
//! closes the connection and stops the synthesis being billed further.
//!
//! Assumption: `ulaw_8000` bodies are headerless µ-law (as ElevenLabs'
//! telephony examples forward them straight to Twilio); a body that starts
//! with a RIFF header would be played as a short click.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::resample::FrameAssembler;
use crate::{Frame, SpeechError, TextToSpeech, TtsStream};

const PROVIDER: &str = "elevenlabs";

/// Where and how to reach ElevenLabs.
#[derive(Clone)]
pub struct ElevenLabsConfig {
    /// Base URL without the path, e.g. `https://api.elevenlabs.io`.
    pub base_url: String,
    /// API key, sent as `xi-api-key`.
    pub api_key: String,
    /// Voice id (from the voice library, e.g. `JBFqnCBsd6RMkjVDRZzb`).
    pub voice_id: String,
    /// Model (default `eleven_flash_v2_5`, ElevenLabs' low-latency model).
    pub model_id: String,
    /// Bound on the wait for headers and on every gap between body chunks.
    pub timeout: Duration,
}

impl ElevenLabsConfig {
    /// A config for ElevenLabs' public endpoint with defaults for everything
    /// but the key and the voice.
    pub fn new(api_key: impl Into<String>, voice_id: impl Into<String>) -> Self {
        ElevenLabsConfig {
            base_url: "https://api.elevenlabs.io".into(),
            api_key: api_key.into(),
            voice_id: voice_id.into(),
            model_id: "eleven_flash_v2_5".into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// The same config pointed at another server (a proxy or the fake).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// The streaming URL for the configured voice.
    pub fn stream_url(&self) -> Result<reqwest::Url, SpeechError> {
        let bad = |reason: String| SpeechError::Config {
            what: "elevenlabs url",
            reason,
        };
        let mut url = reqwest::Url::parse(&self.base_url).map_err(|e| bad(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| bad("cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(["v1", "text-to-speech", &self.voice_id, "stream"]);
        url.query_pairs_mut()
            .append_pair("output_format", "ulaw_8000");
        Ok(url)
    }
}

impl std::fmt::Debug for ElevenLabsConfig {
    // The API key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("voice_id", &self.voice_id)
            .field("model_id", &self.model_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Streaming text to speech through ElevenLabs, in 8 kHz µ-law.
#[derive(Clone, Debug)]
pub struct ElevenLabsTts {
    config: ElevenLabsConfig,
    client: reqwest::Client,
}

impl ElevenLabsTts {
    /// An adapter for `config`.
    pub fn new(config: ElevenLabsConfig) -> Result<Self, SpeechError> {
        Ok(ElevenLabsTts {
            client: crate::openai::client(PROVIDER)?,
            config,
        })
    }
}

impl TextToSpeech for ElevenLabsTts {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let this = self.clone();
        let text = text.to_owned();
        crate::spawn_tts(move |tx| async move { this.stream(&text, &tx).await })
    }
}

impl ElevenLabsTts {
    async fn stream(
        &self,
        text: &str,
        tx: &mpsc::Sender<Result<Frame, SpeechError>>,
    ) -> Result<(), SpeechError> {
        let url = self.config.stream_url()?;
        let body = serde_json::json!({
            "text": text,
            "model_id": self.config.model_id,
        });
        let req = self
            .client
            .post(url)
            .header("xi-api-key", &self.config.api_key)
            .header(reqwest::header::ACCEPT, "audio/basic")
            .json(&body);
        let mut response = crate::openai::send(req, PROVIDER, self.config.timeout)
            .await
            .map_err(|e| match e {
                SpeechError::Status {
                    provider,
                    status,
                    message,
                } => SpeechError::Status {
                    provider,
                    status,
                    message: error_message(&message),
                },
                other => other,
            })?;
        let mut frames = FrameAssembler::new();
        let mut samples = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.config.timeout, response.chunk())
                .await
                .map_err(|_| SpeechError::Timeout { provider: PROVIDER })?
                .map_err(|e| SpeechError::Http {
                    provider: PROVIDER,
                    source: e,
                })?;
            let Some(chunk) = chunk else { break };
            samples.clear();
            samples.extend(
                chunk
                    .iter()
                    .map(|&b| switchboard_media::g711::ulaw_decode(b)),
            );
            for frame in frames.push(&samples) {
                if tx.send(Ok(frame)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(frame) = frames.finish() {
            let _ = tx.send(Ok(frame)).await;
        }
        Ok(())
    }
}

/// `status: message` from an ElevenLabs error body
/// (`{"detail":{"status":…,"message":…}}`), the first validation error of a
/// 422 (`{"detail":[{"msg":…}]}`), a plain string `detail`, or the body.
fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_owned();
    };
    let Some(detail) = value.get("detail") else {
        return body.to_owned();
    };
    if let Some(text) = detail.as_str() {
        return text.to_owned();
    }
    if let Some(first) = detail.as_array().and_then(|a| a.first()) {
        if let Some(msg) = first.get("msg").and_then(|m| m.as_str()) {
            return msg.to_owned();
        }
    }
    let status = detail.get("status").and_then(|s| s.as_str());
    let message = detail.get("message").and_then(|s| s.as_str());
    match (status, message) {
        (Some(status), Some(message)) => format!("{status}: {message}"),
        (None, Some(text)) | (Some(text), None) => text.to_owned(),
        (None, None) => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_reduced_to_their_message() {
        assert_eq!(
            error_message(r#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#),
            "invalid_api_key: Invalid API key"
        );
        assert_eq!(
            error_message(
                r#"{"detail":[{"loc":["body","text"],"msg":"field required","type":"value_error.missing"}]}"#
            ),
            "field required"
        );
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
    }

    #[test]
    fn the_url_asks_for_telephony_audio_and_escapes_the_voice() {
        let config = ElevenLabsConfig::new("xi-secret", "voice/../1").with_base_url("http://h:1/");
        let url = config.stream_url().expect("url");
        assert_eq!(
            url.as_str(),
            "http://h:1/v1/text-to-speech/voice%2F..%2F1/stream?output_format=ulaw_8000"
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("xi-secret"), "{shown}");
    }
}
