//! [`PiperTts`]: a natural neural voice (Piper, ONNX) served by one
//! persistent Python sidecar per server.
//!
//! Loading a Piper voice takes about half a second and 100 MB, so it is
//! done once: the first synthesis (or [`PiperTts::start`]) launches
//! `python -c <python/piper_sidecar.py> VOICE.onnx` from the speech
//! virtualenv, waits for its ready record, and every later request from
//! every call goes to that process. Clones of a [`PiperTts`] share it.
//!
//! Protocol (documented in the script): one JSON line per request
//! (`{"id": 7, "text": "…"}` or `{"cancel": 7}`) in; length-framed binary
//! records out (`kind: u8, id: u32 LE, len: u32 LE, payload`), kinds
//! `R` ready (JSON with the sample rate), `A` s16le audio, `E` end, `X` error.
//! Piper synthesises sentence by sentence, so the first audio of a long
//! reply arrives after its first sentence, not after the whole reply.
//!
//! Run loop: a reader task owns the sidecar's stdout and routes records by
//! id to per-request unbounded channels (a slow consumer must never stall
//! other calls' audio; a request's backlog is bounded by its text). Each
//! request's task resamples 22.05 kHz → 8 kHz and fills its bounded
//! [`TtsStream`]. Dropping the stream sends `cancel`; the sidecar stops at
//! the next sentence and the router discards what is still in flight. If
//! the sidecar dies, its requests fail with a retryable
//! [`SpeechError::Process`] and the next request starts a fresh one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::locate::{piper_voice_path, venv_python};
use crate::resample::{PcmDecoder, ToFrames};
use crate::{runtime, Frame, SpeechError, TextToSpeech, TtsStream, TTS_CHANNEL_FRAMES};

const PROGRAM: &str = "piper sidecar";
const SCRIPT: &str = include_str!("../python/piper_sidecar.py");
/// Largest record we accept from the sidecar (a sentence of audio is
/// ~100 KB per second of speech).
const MAX_RECORD: usize = 16 << 20;

/// Settings for [`PiperTts`]. `None` paths are found through the speech
/// virtualenv (see the crate docs).
#[derive(Clone, Debug)]
pub struct PiperConfig {
    /// The Python interpreter with `piper-tts` installed.
    pub python: Option<PathBuf>,
    /// The voice model (`.onnx`; its `.onnx.json` must sit beside it).
    pub voice: Option<PathBuf>,
    /// Phoneme length scale: below 1 speaks faster.
    pub length_scale: Option<f32>,
    /// Generator noise (the voice's default when `None`); 0 is deterministic.
    pub noise_scale: Option<f32>,
    /// Phoneme width noise.
    pub noise_w: Option<f32>,
    /// Speaker id for multi-speaker voices.
    pub speaker: Option<u32>,
    /// How long the sidecar may take to load the voice.
    pub startup_timeout: Duration,
}

impl Default for PiperConfig {
    fn default() -> Self {
        PiperConfig {
            python: None,
            voice: None,
            length_scale: None,
            noise_scale: None,
            noise_w: None,
            speaker: None,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// Text to speech through a shared Piper sidecar.
#[derive(Clone, Debug)]
pub struct PiperTts {
    config: Arc<PiperConfig>,
    sidecar: Arc<tokio::sync::Mutex<Option<Arc<Sidecar>>>>,
}

impl PiperTts {
    /// A synthesiser with `config`; the sidecar starts on first use.
    pub fn new(config: PiperConfig) -> Self {
        PiperTts {
            config: Arc::new(config),
            sidecar: Arc::default(),
        }
    }

    /// Starts the sidecar now (at server start-up, so the first call does
    /// not wait for the voice to load) and returns its output sample rate.
    pub async fn start(&self) -> Result<u32, SpeechError> {
        Ok(self.sidecar().await?.sample_rate)
    }

    /// The running sidecar's process id, if one is running.
    pub async fn sidecar_pid(&self) -> Option<u32> {
        let guard = self.sidecar.lock().await;
        guard
            .as_ref()
            .filter(|s| s.shared.alive.load(Ordering::SeqCst))
            .and_then(|s| s.pid)
    }

    /// Requests the sidecar is serving or has queued.
    pub async fn pending_requests(&self) -> usize {
        let guard = self.sidecar.lock().await;
        guard.as_ref().map_or(0, |s| s.shared.routes().len())
    }

    async fn sidecar(&self) -> Result<Arc<Sidecar>, SpeechError> {
        let mut guard = self.sidecar.lock().await;
        if let Some(s) = guard.as_ref() {
            if s.shared.alive.load(Ordering::SeqCst) {
                return Ok(s.clone());
            }
        }
        let sidecar = Arc::new(Sidecar::start(&self.config).await?);
        *guard = Some(sidecar.clone());
        Ok(sidecar)
    }
}

impl Default for PiperTts {
    fn default() -> Self {
        Self::new(PiperConfig::default())
    }
}

impl TextToSpeech for PiperTts {
    fn name(&self) -> &str {
        "piper"
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return TtsStream::failed(e),
        };
        let (tx, rx) = mpsc::channel(TTS_CHANNEL_FRAMES);
        let this = self.clone();
        let text = text.to_owned();
        rt.spawn(async move {
            if let Err(e) = this.run(&text, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        TtsStream { frames: rx }
    }
}

impl PiperTts {
    async fn run(
        &self,
        text: &str,
        tx: &mpsc::Sender<Result<Frame, SpeechError>>,
    ) -> Result<(), SpeechError> {
        let sidecar = tokio::select! {
            _ = tx.closed() => return Ok(()),
            s = self.sidecar() => s?,
        };
        let (id, mut records) = sidecar.shared.register();
        let _route = Route {
            shared: &sidecar.shared,
            id,
        };
        let request = serde_json::json!({ "id": id, "text": text });
        sidecar.send_line(&request).await?;
        let mut convert = ToFrames::new(sidecar.sample_rate).ok_or(SpeechError::InvalidAudio {
            provider: PROGRAM,
            reason: format!("unsupported sample rate {}", sidecar.sample_rate),
        })?;
        let mut pcm = PcmDecoder::default();
        let mut samples = Vec::new();
        loop {
            let record = tokio::select! {
                _ = tx.closed() => {
                    sidecar.cancel(id).await;
                    return Ok(());
                }
                r = records.recv() => r,
            };
            let frames = match record {
                Some(Record::Audio(bytes)) => {
                    samples.clear();
                    pcm.decode(&bytes, &mut samples);
                    convert.push(&samples)
                }
                Some(Record::End) => {
                    for frame in convert.finish() {
                        if tx.send(Ok(frame)).await.is_err() {
                            break;
                        }
                    }
                    return Ok(());
                }
                Some(Record::Error(message)) => {
                    return Err(SpeechError::Process {
                        program: PROGRAM,
                        message,
                    })
                }
                None => {
                    return Err(SpeechError::Process {
                        program: PROGRAM,
                        message: "sidecar exited".into(),
                    })
                }
            };
            for frame in frames {
                if tx.send(Ok(frame)).await.is_err() {
                    sidecar.cancel(id).await;
                    return Ok(());
                }
            }
        }
    }
}

/// One running sidecar process.
#[derive(Debug)]
struct Sidecar {
    stdin: tokio::sync::Mutex<ChildStdin>,
    shared: Arc<Shared>,
    sample_rate: u32,
    pid: Option<u32>,
    /// Held for `kill_on_drop`: the process lives as long as this value.
    _child: Child,
}

/// What the router task and the requests share.
#[derive(Debug, Default)]
struct Shared {
    routes: Mutex<HashMap<u32, mpsc::UnboundedSender<Record>>>,
    next_id: AtomicU32,
    alive: AtomicBool,
}

#[derive(Debug)]
enum Record {
    Audio(Vec<u8>),
    End,
    Error(String),
}

/// Unregisters a request when its task ends, however it ends.
struct Route<'a> {
    shared: &'a Shared,
    id: u32,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.shared.routes().remove(&self.id);
    }
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<Record>>> {
        // Never held across an await; a poisoned map is still a valid map.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> (u32, mpsc::UnboundedReceiver<Record>) {
        // Id 0 is the sidecar's own (ready / startup errors).
        let id = self
            .next_id
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1)
            .max(1);
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes().insert(id, tx);
        (id, rx)
    }

    fn fail_all(&self, message: &str) {
        self.alive.store(false, Ordering::SeqCst);
        for (_, route) in self.routes().drain() {
            let _ = route.send(Record::Error(message.to_owned()));
        }
    }
}

impl Sidecar {
    async fn start(config: &PiperConfig) -> Result<Sidecar, SpeechError> {
        let python = match &config.python {
            Some(p) => p.clone(),
            None => venv_python()?,
        };
        let voice = match &config.voice {
            Some(v) => v.clone(),
            None => piper_voice_path()?,
        };
        let mut cmd = Command::new(&python);
        cmd.arg("-c").arg(SCRIPT).arg(&voice);
        let envs = [
            (
                "PIPER_LENGTH_SCALE",
                config.length_scale.map(|v| v.to_string()),
            ),
            (
                "PIPER_NOISE_SCALE",
                config.noise_scale.map(|v| v.to_string()),
            ),
            ("PIPER_NOISE_W", config.noise_w.map(|v| v.to_string())),
            ("PIPER_SPEAKER", config.speaker.map(|v| v.to_string())),
        ];
        for (key, value) in envs {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| SpeechError::Spawn {
            program: python.display().to_string(),
            source: e,
        })?;
        let pid = child.id();
        let (Some(stdin), Some(mut stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SpeechError::Process {
                program: PROGRAM,
                message: "missing stdio pipes".into(),
            });
        };
        let stderr_tail = Arc::new(Mutex::new(Vec::<String>::new()));
        tokio::spawn(log_stderr(stderr, stderr_tail.clone()));

        let ready = tokio::time::timeout(config.startup_timeout, read_record(&mut stdout)).await;
        let sample_rate = match ready {
            Err(_) => {
                return Err(SpeechError::Timeout { provider: PROGRAM });
            }
            Ok(Ok((b'R', _, payload))) => serde_json::from_slice::<serde_json::Value>(&payload)
                .ok()
                .and_then(|v| v.get("sample_rate")?.as_u64())
                .and_then(|r| u32::try_from(r).ok())
                .ok_or(SpeechError::Process {
                    program: PROGRAM,
                    message: "ready record without a sample rate".into(),
                })?,
            Ok(Ok((b'X', _, payload))) => {
                let message = String::from_utf8_lossy(&payload).into_owned();
                return Err(if message.contains("cannot import piper") {
                    SpeechError::NotInstalled {
                        what: "piper-tts",
                        fix: format!("{} ({message})", crate::locate::INSTALL_HINT),
                    }
                } else {
                    SpeechError::Model {
                        model: "piper",
                        message,
                    }
                });
            }
            Ok(Ok((kind, _, _))) => {
                return Err(SpeechError::Process {
                    program: PROGRAM,
                    message: format!("unexpected record {kind} before ready"),
                })
            }
            Ok(Err(e)) => {
                // Give the stderr logger a moment to collect the traceback.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let tail = stderr_tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join(" | ");
                return Err(SpeechError::Process {
                    program: PROGRAM,
                    message: format!("{e}; stderr: {tail}"),
                });
            }
        };
        tracing::info!(pid, sample_rate, voice = %voice.display(), "piper sidecar ready");
        let shared = Arc::new(Shared {
            alive: AtomicBool::new(true),
            ..Shared::default()
        });
        tokio::spawn(route(stdout, shared.clone()));
        Ok(Sidecar {
            stdin: tokio::sync::Mutex::new(stdin),
            shared,
            sample_rate,
            pid,
            _child: child,
        })
    }

    async fn send_line(&self, value: &serde_json::Value) -> Result<(), SpeechError> {
        let mut line = value.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        written.await.map_err(|e| {
            self.shared.fail_all("sidecar stdin closed");
            SpeechError::Process {
                program: PROGRAM,
                message: format!("writing request: {e}"),
            }
        })
    }

    async fn cancel(&self, id: u32) {
        self.shared.routes().remove(&id);
        // Best effort: if the sidecar is gone there is nothing to cancel.
        let _ = self.send_line(&serde_json::json!({ "cancel": id })).await;
    }
}

/// Reads records until the sidecar's stdout ends, delivering each to its
/// request.
async fn route(mut stdout: ChildStdout, shared: Arc<Shared>) {
    let reason = loop {
        match read_record(&mut stdout).await {
            Err(e) => break e,
            Ok((kind, id, payload)) => {
                let record = match kind {
                    b'A' => Record::Audio(payload),
                    b'E' => Record::End,
                    b'X' => Record::Error(String::from_utf8_lossy(&payload).into_owned()),
                    other => {
                        tracing::warn!(kind = other, "piper sidecar sent an unknown record");
                        continue;
                    }
                };
                let done = !matches!(record, Record::Audio(_));
                let mut routes = shared.routes();
                if let Some(tx) = routes.get(&id) {
                    let _ = tx.send(record);
                }
                if done {
                    routes.remove(&id);
                }
            }
        }
    };
    tracing::warn!(%reason, "piper sidecar stopped");
    shared.fail_all(&reason);
}

async fn read_record(stdout: &mut ChildStdout) -> Result<(u8, u32, Vec<u8>), String> {
    let mut head = [0u8; 9];
    stdout
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("sidecar output ended: {e}"))?;
    let id = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]) as usize;
    if len > MAX_RECORD {
        return Err(format!("record of {len} bytes exceeds the limit"));
    }
    let mut payload = vec![0u8; len];
    stdout
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("sidecar output truncated: {e}"))?;
    Ok((head[0], id, payload))
}

async fn log_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "switchboard_speech::piper", "{line}");
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() >= 20 {
            tail.remove(0);
        }
        tail.push(line);
    }
}
