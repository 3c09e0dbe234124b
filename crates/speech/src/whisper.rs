//! [`WhisperStt`]: offline speech to text with Whisper (tiny.en by default)
//! in CTranslate2 format, run in-process through `ct2rs`.
//!
//! The model is loaded once per [`WhisperStt`] (clones share it) and owned
//! by dedicated inference threads fed through a bounded queue: inference is
//! CPU-bound C++ that would stall a tokio worker for half a second, and a
//! bounded queue turns overload into a prompt, retryable
//! [`SpeechError::Busy`] instead of an ever-growing backlog.
//!
//! Per stream, a tokio task buffers the turn's 8 kHz audio (at most
//! [`MAX_TURN`]; Whisper sees a 30 s window anyway). On
//! [`SttInput::Finish`](crate::SttInput::Finish) it upsamples to 16 kHz
//! (`switchboard_media::resample`), queues one job and sends the
//! [`SttEvent::Final`] the worker answers. No partials: one decode costs
//! about as much as the final one, which would halve capacity for text the
//! caller never sees.
//!
//! Decoding is greedy (beam 1, top-k 1: temperature 0) in English, with the
//! output capped at [`WhisperConfig::max_tokens`] because a Whisper model
//! once looped for 20 s on one utterance. Near-silent turns are not decoded
//! (Whisper hallucinates "Thank you." on silence), and a decode the model
//! itself rates as no-speech with low confidence is returned empty.
//! Confidence is `exp(mean token log-probability)`.

use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ct2rs::sys::{ComputeType, Config, Device, StorageView, Whisper as Model, WhisperOptions};
use ct2rs::tokenizers::hf::Tokenizer as HfTokenizer;
use ct2rs::Tokenizer as _;
use mel_spec::mel::{log_mel_spectrogram, mel};
use mel_spec::stft::Spectrogram;
use ndarray::Array2;
use switchboard_media::resample::Upsampler;
use switchboard_media::SAMPLE_RATE;
use tokio::sync::{mpsc, oneshot};

use crate::locate::whisper_model_dir;
use crate::{
    runtime, SpeechError, SpeechToText, SttEvent, SttInput, SttStream, STT_CHANNEL_INPUTS,
};

/// The longest turn buffered: Whisper decodes one 30 s window.
pub const MAX_TURN: Duration = Duration::from_secs(30);

const MODEL_RATE: usize = 16_000;
const N_FFT: usize = 400;
const HOP: usize = 160;
/// Mel frames in Whisper's 30 s window.
const WINDOW_FRAMES: usize = 3_000;
/// Turns quieter than this (RMS, dBFS) are silence: not decoded.
const SILENCE_DBFS: f64 = -55.0;

/// Settings for [`WhisperStt`].
#[derive(Clone, Debug)]
pub struct WhisperConfig {
    /// The model directory; `None` finds it through
    /// `SWITCHBOARD_WHISPER_MODEL` or the speech virtualenv.
    pub model_dir: Option<PathBuf>,
    /// Threads per inference (intra-op). Default 2.
    pub threads: usize,
    /// Parallel inferences, each with its own thread; they share one model.
    /// Default 1.
    pub workers: usize,
    /// Turns waiting for a worker before `open`ed streams get
    /// [`SpeechError::Busy`]. Default 8.
    pub queue: usize,
    /// Cap on generated tokens per utterance (prompt included). Default 96,
    /// about 70 words: far more than one caller turn.
    pub max_tokens: usize,
    /// Language token for multilingual models (ignored by `.en` models).
    pub language: String,
    /// Quantise weights to int8 at load (faster on CPU, same accuracy on
    /// phone audio in our measurements). Default true.
    pub int8: bool,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        WhisperConfig {
            model_dir: None,
            threads: 2,
            workers: 1,
            queue: 8,
            max_tokens: 96,
            language: "en".into(),
            int8: true,
        }
    }
}

/// Offline speech to text with a shared Whisper model.
#[derive(Clone)]
pub struct WhisperStt {
    jobs: std_mpsc::SyncSender<Job>,
    model_dir: Arc<Path>,
}

impl std::fmt::Debug for WhisperStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperStt")
            .field("model_dir", &self.model_dir)
            .finish_non_exhaustive()
    }
}

/// A transcript with what the decoder thought of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transcript {
    /// The text, trimmed.
    pub text: String,
    /// `exp(mean token log-probability)`, 0 ..= 1.
    pub confidence: f32,
    /// Time spent in the model.
    pub elapsed: Duration,
}

struct Job {
    /// 16 kHz samples in [-1, 1].
    samples: Vec<f32>,
    reply: oneshot::Sender<Result<Transcript, SpeechError>>,
}

impl WhisperStt {
    /// Loads the model and starts the inference threads. Blocks for the
    /// load (≈ 0.3 s for tiny.en): call from start-up code or use
    /// [`WhisperStt::load`].
    pub fn new(config: WhisperConfig) -> Result<Self, SpeechError> {
        let dir = match &config.model_dir {
            Some(dir) => dir.clone(),
            None => whisper_model_dir()?,
        };
        if !dir.join("model.bin").is_file() {
            return Err(SpeechError::NotInstalled {
                what: "whisper model",
                fix: format!("{} has no model.bin", dir.display()),
            });
        }
        let engine = Arc::new(Engine::load(&dir, &config)?);
        let (jobs, rx) = std_mpsc::sync_channel::<Job>(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..config.workers.max(1) {
            let engine = engine.clone();
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("whisper-{n}"))
                .spawn(move || worker(&engine, &rx))
                .map_err(|e| SpeechError::Spawn {
                    program: "whisper inference thread".into(),
                    source: e,
                })?;
        }
        Ok(WhisperStt {
            jobs,
            model_dir: dir.into(),
        })
    }

    /// [`WhisperStt::new`] on the blocking pool.
    pub async fn load(config: WhisperConfig) -> Result<Self, SpeechError> {
        tokio::task::spawn_blocking(move || Self::new(config))
            .await
            .map_err(|e| SpeechError::Model {
                model: "whisper",
                message: format!("loader panicked: {e}"),
            })?
    }

    /// Where the model was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// Transcribes 8 kHz audio directly (no stream): for tools and tests.
    pub async fn transcribe(&self, samples_8k: &[i16]) -> Result<Transcript, SpeechError> {
        let rx = self.submit(samples_8k)?;
        rx.await.map_err(|_| SpeechError::Closed)?
    }

    fn submit(
        &self,
        samples_8k: &[i16],
    ) -> Result<oneshot::Receiver<Result<Transcript, SpeechError>>, SpeechError> {
        let (reply, rx) = oneshot::channel();
        if dbfs(samples_8k) < SILENCE_DBFS {
            let _ = reply.send(Ok(Transcript {
                text: String::new(),
                confidence: 0.0,
                elapsed: Duration::ZERO,
            }));
            return Ok(rx);
        }
        let mut wide = Vec::with_capacity(samples_8k.len() * 2);
        Upsampler::new().process(samples_8k, &mut wide);
        let samples = wide.iter().map(|&s| f32::from(s) / 32_768.0).collect();
        match self.jobs.try_send(Job { samples, reply }) {
            Ok(()) => Ok(rx),
            Err(std_mpsc::TrySendError::Full(_)) => Err(SpeechError::Busy {
                provider: "whisper",
            }),
            Err(std_mpsc::TrySendError::Disconnected(_)) => Err(SpeechError::Closed),
        }
    }
}

impl SpeechToText for WhisperStt {
    fn name(&self) -> &str {
        "whisper"
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let rt = runtime()?;
        let (audio_tx, mut audio_rx) = mpsc::channel(STT_CHANNEL_INPUTS);
        let (events_tx, events_rx) = mpsc::channel(4);
        let this = self.clone();
        rt.spawn(async move {
            let max = MAX_TURN.as_secs() as usize * SAMPLE_RATE as usize;
            let mut audio: Vec<i16> = Vec::with_capacity(max / 6);
            let mut truncated = false;
            while let Some(input) = audio_rx.recv().await {
                match input {
                    SttInput::Audio(frame) => {
                        if audio.len() + frame.samples().len() <= max {
                            audio.extend_from_slice(frame.samples());
                        } else if !truncated {
                            truncated = true;
                            tracing::warn!(
                                "turn longer than {MAX_TURN:?}: the rest is not transcribed"
                            );
                        }
                    }
                    SttInput::Finish => {
                        let result = match this.submit(&audio) {
                            Ok(rx) => tokio::select! {
                                // The consumer left: don't wait (the worker
                                // skips jobs nobody waits for).
                                _ = events_tx.closed() => return,
                                r = rx => r.unwrap_or(Err(SpeechError::Closed)),
                            },
                            Err(e) => Err(e),
                        };
                        let event = result.map(|t| SttEvent::Final {
                            text: t.text,
                            confidence: t.confidence,
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

fn worker(engine: &Engine, jobs: &Mutex<std_mpsc::Receiver<Job>>) {
    loop {
        // Held only while waiting for the next job, on this dedicated thread.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return; // every WhisperStt is gone
        };
        if job.reply.is_closed() {
            continue;
        }
        let started = Instant::now();
        let result = engine
            .transcribe(&job.samples)
            .map(|(text, confidence)| Transcript {
                text,
                confidence,
                elapsed: started.elapsed(),
            });
        if let Ok(t) = &result {
            tracing::debug!(
                elapsed_ms = t.elapsed.as_millis() as u64,
                confidence = t.confidence,
                "whisper decoded a turn"
            );
        }
        let _ = job.reply.send(result);
    }
}

/// The loaded model, tokenizer and feature extractor.
struct Engine {
    model: Model,
    tokenizer: HfTokenizer,
    mel_filters: Array2<f64>,
    n_mels: usize,
    prompt: Vec<String>,
    options: WhisperOptions,
}

impl Engine {
    fn load(dir: &Path, config: &WhisperConfig) -> Result<Engine, SpeechError> {
        let model_err = |message: String| SpeechError::Model {
            model: "whisper",
            message,
        };
        let ct2_config = Config {
            device: Device::CPU,
            compute_type: if config.int8 {
                ComputeType::INT8
            } else {
                ComputeType::DEFAULT
            },
            num_threads_per_replica: config.threads.max(1),
            ..Config::default()
        };
        let model = Model::new(dir, ct2_config)
            .map_err(|e| model_err(format!("loading {}: {e:#}", dir.display())))?;
        let tokenizer = HfTokenizer::new(dir)
            .map_err(|e| model_err(format!("loading {}/tokenizer.json: {e:#}", dir.display())))?;
        let n_mels = model.n_mels();
        let mel_filters = mel(MODEL_RATE as f64, N_FFT, n_mels, None, None, false, true);
        let mut prompt = vec!["<|startoftranscript|>".to_owned()];
        if model.is_multilingual() {
            prompt.push(format!("<|{}|>", config.language));
            prompt.push("<|transcribe|>".to_owned());
        }
        prompt.push("<|notimestamps|>".to_owned());
        let options = WhisperOptions {
            beam_size: 1,
            sampling_topk: 1,
            sampling_temperature: 1.0,
            max_length: config.max_tokens.max(8),
            return_scores: true,
            return_no_speech_prob: true,
            ..WhisperOptions::default()
        };
        Ok(Engine {
            model,
            tokenizer,
            mel_filters,
            n_mels,
            prompt,
            options,
        })
    }

    /// Text and confidence for up to 30 s of 16 kHz audio.
    fn transcribe(&self, samples: &[f32]) -> Result<(String, f32), SpeechError> {
        let model_err = |message: String| SpeechError::Model {
            model: "whisper",
            message,
        };
        let mut features = self.features(samples);
        let shape = [1, self.n_mels, WINDOW_FRAMES];
        let slice = features
            .as_slice_mut()
            .ok_or_else(|| model_err("features not contiguous".into()))?;
        let view = StorageView::new(&shape, slice, Device::CPU)
            .map_err(|e| model_err(format!("features: {e:#}")))?;
        let results = self
            .model
            .generate(&view, std::slice::from_ref(&self.prompt), &self.options)
            .map_err(|e| model_err(format!("{e:#}")))?;
        let Some(result) = results.into_iter().next() else {
            return Ok((String::new(), 0.0));
        };
        let score = result.scores.first().copied().unwrap_or(f32::NEG_INFINITY);
        let no_speech = result.no_speech_prob;
        let Some(tokens) = result.sequences.into_iter().next() else {
            return Ok((String::new(), 0.0));
        };
        let text = self
            .tokenizer
            .decode(tokens)
            .map_err(|e| model_err(format!("decoding tokens: {e:#}")))?;
        // faster-whisper's rule: the model says "no speech" and is unsure of
        // what it wrote.
        if no_speech > 0.6 && score < -1.0 {
            return Ok((String::new(), 0.0));
        }
        Ok((text.trim().to_owned(), score.exp().clamp(0.0, 1.0)))
    }

    /// Log-mel features of one 30 s window, `[n_mels, 3000]`, computed as
    /// Whisper was trained: the audio zero-padded to 30 s, log10 power
    /// floored at 1e-10, clamped to 8 (decades) below the window's maximum
    /// and scaled by `(x + 4) / 4`. (`ct2rs::Whisper` normalises each frame
    /// on its own and leaves the padding at 0, which cost us words on 8 kHz
    /// audio.) Frames past the end of the audio are all-zero input, so their
    /// value is the floor and needs no FFT.
    fn features(&self, samples: &[f32]) -> Array2<f32> {
        const FLOOR: f64 = -10.0; // log10(1e-10)
        let window = &samples[..samples.len().min(WINDOW_FRAMES * HOP)];
        let mut log_mel = Array2::<f64>::from_elem((self.n_mels, WINDOW_FRAMES), FLOOR);
        let mut stft = Spectrogram::new(N_FFT, HOP);
        // The STFT is causal (a frame is ready once N_FFT samples are in),
        // so feed the audio plus enough silence to flush its tail.
        let tail = [0.0f32; HOP];
        let hops = window
            .chunks(HOP)
            .chain(std::iter::repeat_n(&tail[..], N_FFT / HOP + 1));
        let mut frame = 0;
        for hop in hops {
            if frame >= WINDOW_FRAMES {
                break;
            }
            if let Some(fft) = stft.add(hop) {
                let column = log_mel_spectrogram(&fft, &self.mel_filters);
                log_mel.column_mut(frame).assign(&column.column(0));
                frame += 1;
            }
        }
        let max = log_mel.fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        log_mel.mapv(|x| ((x.max(max - 8.0) + 4.0) / 4.0) as f32)
    }
}

fn dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let power = samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64;
    10.0 * (power / (32_768.0f64 * 32_768.0)).log10()
}
