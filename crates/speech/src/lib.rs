//! Speech for Switchboard: the [`SpeechToText`] and [`TextToSpeech`] traits
//! and the providers behind them. This crate knows nothing about calls: it
//! turns 20 ms 8 kHz [`Frame`]s into text and text into frames.
//!
//! Layout:
//!
//! - this file: the two traits, their stream types and [`SpeechError`].
//! - [`espeak`]: [`EspeakTts`], `espeak-ng` run as a subprocess per
//!   utterance (GPL: never linked), its WAV output streamed as it arrives.
//! - [`piper`]: [`PiperTts`], a natural voice served by one persistent
//!   Python sidecar per server (model loaded once, shared by every call).
//! - [`whisper`]: [`WhisperStt`], Whisper tiny.en (CTranslate2 format) run
//!   in-process through `ct2rs` on a dedicated inference thread with a
//!   bounded queue (cargo feature `whisper`, off by default: it builds
//!   CTranslate2 from source).
//! - [`openai`]: OpenAI-compatible cloud adapters, [`OpenAiTts`]
//!   (`/v1/audio/speech`, streamed PCM) and [`OpenAiStt`]
//!   (`/v1/audio/transcriptions`).
//! - [`deepgram`]: [`DeepgramStt`], Deepgram live streaming STT over a
//!   WebSocket (interim results as partials, `Finalize` at the end of turn).
//! - [`elevenlabs`]: [`ElevenLabsTts`], ElevenLabs streaming TTS in
//!   telephony-native 8 kHz µ-law, framed as bytes arrive.
//! - [`fallback`]: [`FallbackStt`] and [`FallbackTts`], a chain of providers
//!   with one retry on retryable errors, first-result deadlines and replay
//!   of the turn's audio into the next STT provider.
//! - `fake` (cargo feature `fake`): local Deepgram and ElevenLabs servers
//!   with injectable faults, for tests and benches of any crate.
//! - [`scripted`]: [`ScriptedStt`] and [`ToneTts`], deterministic providers
//!   for tests of other crates.
//! - [`resample`]: a streaming rational resampler (22.05/24 kHz → 8 kHz,
//!   8 kHz → 16 kHz) and the [`FrameAssembler`] cutting samples into frames.
//! - [`text`]: transcript normalisation and word error rate.
//!
//! Every provider follows one run loop: a tokio task per stream owns the
//! provider-side resource (child process, sidecar request, HTTP response,
//! inference job) and talks to the caller only through the stream's
//! channels. Dropping the receiving side is the cancellation signal: the
//! task notices on its next `select!`, kills or cancels what it owns and
//! ends. `open`/`synthesize` must be called inside a tokio runtime.
//!
//! ```text
//! let mut stt = stt.open()?;               // one stream per caller turn
//! for frame in turn { stt.audio.send(SttInput::Audio(frame)).await? }
//! stt.audio.send(SttInput::Finish).await?;
//! while let Some(ev) = stt.events.recv().await { /* Partial…, Final */ }
//!
//! let mut tts = tts.synthesize("How can I help?");
//! while let Some(frame) = tts.frames.recv().await { play(frame?) }   // None = done
//! ```
//!
//! Environment used to find offline models (see also `scripts/install-speech.sh`):
//! `SWITCHBOARD_VENV` (default `$HOME/.cache/switchboard/venv`),
//! `SWITCHBOARD_WHISPER_MODEL` (a CTranslate2 Whisper directory),
//! `SWITCHBOARD_PIPER_VOICE` (a Piper `.onnx` voice, its `.onnx.json` beside it).

use std::time::Duration;

pub use switchboard_media::Frame;
use tokio::sync::mpsc;

pub mod deepgram;
pub mod elevenlabs;
pub mod espeak;
#[cfg(feature = "fake")]
pub mod fake;
pub mod fallback;
pub mod openai;
pub mod piper;
pub mod resample;
pub mod scripted;
pub mod text;
#[cfg(feature = "whisper")]
pub mod whisper;

mod locate;

pub use deepgram::{DeepgramConfig, DeepgramStt};
pub use elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
pub use espeak::{EspeakConfig, EspeakTts};
pub use fallback::{ChainLink, Fallback, FallbackConfig, FallbackStats, FallbackStt, FallbackTts};
pub use locate::{piper_voice_path, venv_dir, venv_python, whisper_model_dir};
pub use openai::{OpenAiConfig, OpenAiStt, OpenAiTts};
pub use piper::{PiperConfig, PiperTts};
pub use resample::{FrameAssembler, Resampler};
pub use scripted::{ScriptedStt, ToneTts};
#[cfg(feature = "whisper")]
pub use whisper::{Transcript, WhisperConfig, WhisperStt};

/// Frames buffered between a TTS task and its consumer (1 s of audio): the
/// synthesiser runs ahead of real time by at most this much, so a dropped
/// stream wastes little work.
pub const TTS_CHANNEL_FRAMES: usize = 50;

/// Inputs buffered between the caller and an STT stream's task.
pub const STT_CHANNEL_INPUTS: usize = 64;

/// Speech to text: one stream per caller turn.
pub trait SpeechToText: Send + Sync + 'static {
    /// Short provider name for traces and metrics ("whisper", "openai", …).
    fn name(&self) -> &str;

    /// Opens a stream for one caller turn. Call inside a tokio runtime.
    fn open(&self) -> Result<SttStream, SpeechError>;
}

/// One turn's recognition: send [`SttInput`]s, read [`SttEvent`]s.
///
/// After [`SttInput::Finish`] the provider sends at most some partials and
/// exactly one [`SttEvent::Final`] (or an error), then closes `events`.
/// Dropping either side abandons the turn.
#[derive(Debug)]
pub struct SttStream {
    /// Caller audio, then `Finish`.
    pub audio: mpsc::Sender<SttInput>,
    /// Recognition results; closed when the turn is done.
    pub events: mpsc::Receiver<Result<SttEvent, SpeechError>>,
}

/// Input to an [`SttStream`].
// A frame is 320 bytes moved through a channel 50 times a second; boxing it
// would add an allocation per frame to save nothing (`Finish` is sent once).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SttInput {
    /// 20 ms of caller audio.
    Audio(Frame),
    /// End of the caller's turn: produce the final transcript.
    Finish,
}

/// Output of an [`SttStream`].
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// A provisional transcript of the audio so far.
    Partial {
        /// Text heard so far (may change).
        text: String,
    },
    /// The transcript of the whole turn.
    Final {
        /// The transcript, trimmed; empty when nothing was said.
        text: String,
        /// 0.0 ..= 1.0; for Whisper `exp(average token log-probability)`.
        confidence: f32,
    },
}

/// Text to speech.
pub trait TextToSpeech: Send + Sync + 'static {
    /// Short provider name for traces and metrics ("espeak-ng", "piper", …).
    fn name(&self) -> &str;

    /// Starts synthesising `text`. Frames arrive as soon as the first chunk
    /// exists; dropping the stream cancels synthesis. Call inside a tokio
    /// runtime.
    fn synthesize(&self, text: &str) -> TtsStream;
}

/// Synthesised audio. The channel closing means the utterance is complete;
/// an `Err` item is followed by the channel closing.
#[derive(Debug)]
pub struct TtsStream {
    /// 20 ms frames at 8 kHz; the last one is padded with silence.
    pub frames: mpsc::Receiver<Result<Frame, SpeechError>>,
}

impl TtsStream {
    /// A stream that yields `err` and ends: for providers that fail before
    /// producing anything.
    pub fn failed(err: SpeechError) -> TtsStream {
        let (tx, rx) = mpsc::channel(1);
        // Capacity 1 and a fresh channel: this cannot fail.
        let _ = tx.try_send(Err(err));
        TtsStream { frames: rx }
    }

    /// Collects every frame until the end of the utterance, waiting at most
    /// `limit` in all. Mostly for tests and tools.
    pub async fn collect(mut self, limit: Duration) -> Result<Vec<Frame>, SpeechError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Err(_) => return Err(SpeechError::Timeout { provider: "tts" }),
                Ok(None) => return Ok(frames),
                Ok(Some(frame)) => frames.push(frame?),
            }
        }
    }
}

impl SttStream {
    /// Sends `frames` then `Finish`, and waits (at most `limit`) for the
    /// final transcript. Mostly for tests and tools.
    pub async fn transcribe(
        mut self,
        frames: impl IntoIterator<Item = Frame>,
        limit: Duration,
    ) -> Result<(String, f32), SpeechError> {
        let work = async {
            for frame in frames {
                self.audio
                    .send(SttInput::Audio(frame))
                    .await
                    .map_err(|_| SpeechError::Closed)?;
            }
            self.audio
                .send(SttInput::Finish)
                .await
                .map_err(|_| SpeechError::Closed)?;
            while let Some(event) = self.events.recv().await {
                if let SttEvent::Final { text, confidence } = event? {
                    return Ok((text, confidence));
                }
            }
            Err(SpeechError::Closed)
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| SpeechError::Timeout { provider: "stt" })?
    }
}

/// Everything a speech provider can fail with. Variants say who failed and
/// what to install or fix; [`SpeechError::is_retryable`] says whether trying
/// the same request again can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeechError {
    /// A program, package or model is missing.
    #[error("{what} not found: {fix}")]
    NotInstalled {
        /// What is missing ("espeak-ng", "whisper model", …).
        what: &'static str,
        /// How to get it.
        fix: String,
    },
    /// A helper process could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A helper process failed, exited early or broke its protocol.
    #[error("{program} failed: {message}")]
    Process {
        /// The program ("espeak-ng", "piper sidecar").
        program: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Audio from a provider could not be decoded.
    #[error("invalid audio from {provider}: {reason}")]
    InvalidAudio {
        /// Who sent it.
        provider: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A model failed to load or to run.
    #[error("{model} model failed: {message}")]
    Model {
        /// Which model.
        model: &'static str,
        /// The engine's message.
        message: String,
    },
    /// The inference queue is full; the caller may retry shortly.
    #[error("{provider} is busy: inference queue full")]
    Busy {
        /// The provider.
        provider: &'static str,
    },
    /// A provider did not answer in time.
    #[error("{provider} timed out")]
    Timeout {
        /// The provider.
        provider: &'static str,
    },
    /// An HTTP request could not be completed (connect, TLS, body).
    #[error("{provider} request failed")]
    Http {
        /// The provider.
        provider: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP provider answered with an error status.
    #[error("{provider} answered {status}: {message}")]
    Status {
        /// The provider.
        provider: &'static str,
        /// HTTP status code.
        status: u16,
        /// The start of the response body.
        message: String,
    },
    /// An HTTP provider answered with a body we cannot read.
    #[error("unexpected response from {provider}: {reason}")]
    Response {
        /// The provider.
        provider: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A provider's configuration cannot work (a URL that does not parse, an
    /// API key that cannot be sent in a header, …).
    #[error("invalid {what}: {reason}")]
    Config {
        /// What is wrong ("deepgram url", "elevenlabs api key", …).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A streaming connection (WebSocket) could not be opened, broke, or was
    /// closed by the provider before the turn was done.
    #[error("{provider} connection failed: {reason}")]
    Connection {
        /// The provider.
        provider: &'static str,
        /// The WebSocket close code the provider sent, if it sent one.
        close_code: Option<u16>,
        /// What happened (the close reason, or the transport error).
        reason: String,
    },
    /// `open`/`synthesize` was called outside a tokio runtime.
    #[error("speech streams need a tokio runtime")]
    NoRuntime,
    /// The other side of a stream or the engine behind it went away.
    #[error("speech stream closed")]
    Closed,
}

impl SpeechError {
    /// Whether the same request may succeed if tried again: overload,
    /// timeouts, transport errors, 5xx/429 answers and crashed helper
    /// processes (restarted on the next request), broken or dropped
    /// streaming connections. Missing installs, bad configuration, 4xx
    /// answers and connections closed because our data was refused
    /// (WebSocket close codes 1002, 1003, 1007, 1008) are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            SpeechError::Busy { .. }
            | SpeechError::Timeout { .. }
            | SpeechError::Process { .. }
            | SpeechError::Http { .. } => true,
            SpeechError::Status { status, .. } => *status >= 500 || *status == 429,
            SpeechError::Connection { close_code, .. } => {
                !matches!(close_code, Some(1002 | 1003 | 1007 | 1008))
            }
            SpeechError::NotInstalled { .. }
            | SpeechError::Spawn { .. }
            | SpeechError::InvalidAudio { .. }
            | SpeechError::Model { .. }
            | SpeechError::Response { .. }
            | SpeechError::Config { .. }
            | SpeechError::NoRuntime
            | SpeechError::Closed => false,
        }
    }
}

/// The current runtime, or [`SpeechError::NoRuntime`].
fn runtime() -> Result<tokio::runtime::Handle, SpeechError> {
    tokio::runtime::Handle::try_current().map_err(|_| SpeechError::NoRuntime)
}

/// Runs `work` as the task behind a [`TtsStream`]: the frames it sends reach
/// the stream, an error it returns is sent last, and dropping the stream
/// drops `work` (and with it the provider's response or process).
fn spawn_tts<F, Fut>(work: F) -> TtsStream
where
    F: FnOnce(mpsc::Sender<Result<Frame, SpeechError>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), SpeechError>> + Send + 'static,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return TtsStream::failed(e),
    };
    let (tx, rx) = mpsc::channel(TTS_CHANNEL_FRAMES);
    rt.spawn(async move {
        let last = tx.clone();
        tokio::select! {
            _ = last.closed() => {} // cancelled
            result = work(tx) => if let Err(e) = result {
                let _ = last.send(Err(e)).await;
            }
        }
    });
    TtsStream { frames: rx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_the_kind_of_failure() {
        let status = |status| SpeechError::Status {
            provider: "openai",
            status,
            message: String::new(),
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(SpeechError::Busy {
            provider: "whisper"
        }
        .is_retryable());
        assert!(!SpeechError::NotInstalled {
            what: "espeak-ng",
            fix: "apt-get install espeak-ng".into()
        }
        .is_retryable());
    }

    #[test]
    fn messages_name_the_fix() {
        let err = SpeechError::NotInstalled {
            what: "espeak-ng",
            fix: "apt-get install espeak-ng".into(),
        };
        assert_eq!(
            err.to_string(),
            "espeak-ng not found: apt-get install espeak-ng"
        );
    }

    #[tokio::test]
    async fn a_failed_stream_yields_its_error_then_ends() {
        let mut stream = TtsStream::failed(SpeechError::Closed);
        assert!(matches!(
            stream.frames.recv().await,
            Some(Err(SpeechError::Closed))
        ));
        assert!(stream.frames.recv().await.is_none());
    }
}
