//! [`EspeakTts`]: `espeak-ng` as a subprocess, one per utterance.
//!
//! espeak-ng is GPL, so it is run, never linked. `espeak-ng --stdout` writes
//! a WAV stream (22.05 kHz mono s16 on every voice we know of, but the
//! header is read rather than assumed) whose size fields are placeholders,
//! in 4 KiB pipe writes as it synthesises. The task below parses the header
//! incrementally, resamples each chunk to 8 kHz and sends frames as soon as
//! they exist: the first frame of a short sentence leaves within a few tens
//! of milliseconds of `synthesize`.
//!
//! Cancellation: the task waits on the child's stdout and on the consumer
//! dropping the stream at once; on drop it kills the child (and the child
//! is `kill_on_drop` besides, should the task itself be aborted).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::resample::ToFrames;
use crate::{runtime, Frame, SpeechError, TextToSpeech, TtsStream, TTS_CHANNEL_FRAMES};

const PROGRAM: &str = "espeak-ng";

/// Voice settings for [`EspeakTts`].
#[derive(Clone, Debug)]
pub struct EspeakConfig {
    /// The binary (default `espeak-ng`, found on `PATH`).
    pub program: PathBuf,
    /// `-v`: voice name, e.g. `en-us`, `en-gb`, `en-us+f3`.
    pub voice: String,
    /// `-s`: speed in words per minute (80 ..= 450; espeak's default is 175).
    pub words_per_minute: u32,
    /// `-p`: pitch 0 ..= 99 (default 50).
    pub pitch: u32,
    /// `-a`: amplitude 0 ..= 200 (default 100).
    pub amplitude: u32,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        EspeakConfig {
            program: PathBuf::from(PROGRAM),
            voice: "en-us".into(),
            words_per_minute: 165,
            pitch: 50,
            amplitude: 100,
        }
    }
}

/// Text to speech through `espeak-ng` (Debian package `espeak-ng`).
/// Robotic but instant and tiny: the offline fallback voice.
#[derive(Debug, Clone)]
pub struct EspeakTts {
    config: EspeakConfig,
    in_flight: Arc<AtomicUsize>,
}

impl EspeakTts {
    /// A synthesiser with `config`. Does not check the binary: see
    /// [`EspeakTts::check`].
    pub fn new(config: EspeakConfig) -> Self {
        EspeakTts {
            config,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `espeak-ng --version`, for `switchboard doctor`.
    pub async fn check(&self) -> Result<String, SpeechError> {
        let out = Command::new(&self.config.program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| spawn_error(&self.config, e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Child processes alive right now (a synthesis runs until its last
    /// frame is queued or its stream is dropped).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

impl Default for EspeakTts {
    fn default() -> Self {
        Self::new(EspeakConfig::default())
    }
}

impl TextToSpeech for EspeakTts {
    fn name(&self) -> &str {
        PROGRAM
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return TtsStream::failed(e),
        };
        let mut cmd = Command::new(&self.config.program);
        cmd.arg("--stdout")
            .arg("-v")
            .arg(&self.config.voice)
            .arg("-s")
            .arg(self.config.words_per_minute.clamp(80, 450).to_string())
            .arg("-p")
            .arg(self.config.pitch.min(99).to_string())
            .arg("-a")
            .arg(self.config.amplitude.min(200).to_string())
            // Text after `--` can never be taken for an option.
            .arg("--")
            .arg(text)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = {
            // Spawning registers the child with the runtime's reaper.
            let _guard = rt.enter();
            cmd.spawn()
        };
        let child = match child {
            Ok(child) => child,
            Err(e) => return TtsStream::failed(spawn_error(&self.config, e)),
        };
        let (tx, rx) = mpsc::channel(TTS_CHANNEL_FRAMES);
        let in_flight = InFlight::new(self.in_flight.clone());
        rt.spawn(async move {
            let _in_flight = in_flight;
            if let Err(e) = run(child, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        TtsStream { frames: rx }
    }
}

/// Counts a child from spawn until it has been killed or reaped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn run(
    mut child: tokio::process::Child,
    tx: &mpsc::Sender<Result<Frame, SpeechError>>,
) -> Result<(), SpeechError> {
    let mut stdout = child.stdout.take().ok_or(SpeechError::Process {
        program: PROGRAM,
        message: "no stdout pipe".into(),
    })?;
    let mut wav = WavStream::default();
    let mut convert: Option<ToFrames> = None;
    let mut samples = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = tokio::select! {
            _ = tx.closed() => {
                // Cancelled: the consumer dropped the stream.
                let _ = child.kill().await;
                return Ok(());
            }
            read = stdout.read(&mut buf) => read.map_err(|e| SpeechError::Process {
                program: PROGRAM,
                message: format!("reading stdout: {e}"),
            })?,
        };
        if n == 0 {
            break;
        }
        samples.clear();
        wav.push(&buf[..n], &mut samples)?;
        if let (None, Some(rate)) = (&convert, wav.sample_rate()) {
            convert = Some(
                ToFrames::new(rate).ok_or_else(|| SpeechError::InvalidAudio {
                    provider: PROGRAM,
                    reason: format!("unsupported sample rate {rate}"),
                })?,
            );
        }
        if let Some(convert) = &mut convert {
            for frame in convert.push(&samples) {
                if tx.send(Ok(frame)).await.is_err() {
                    let _ = child.kill().await;
                    return Ok(());
                }
            }
        }
    }
    let status = child.wait().await.map_err(|e| SpeechError::Process {
        program: PROGRAM,
        message: format!("waiting for exit: {e}"),
    })?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = (&mut err).take(4096).read_to_string(&mut stderr).await;
        }
        return Err(SpeechError::Process {
            program: PROGRAM,
            message: format!("{status}: {}", stderr.trim()),
        });
    }
    let Some(mut convert) = convert else {
        return Err(SpeechError::InvalidAudio {
            provider: PROGRAM,
            reason: "no wav header in the output".into(),
        });
    };
    for frame in convert.finish() {
        if tx.send(Ok(frame)).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn spawn_error(config: &EspeakConfig, e: std::io::Error) -> SpeechError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SpeechError::NotInstalled {
            what: PROGRAM,
            fix: format!(
                "apt-get install espeak-ng (looked for {})",
                config.program.display()
            ),
        }
    } else {
        SpeechError::Spawn {
            program: config.program.display().to_string(),
            source: e,
        }
    }
}

/// An incremental reader for a streamed RIFF/WAVE file whose size fields
/// cannot be trusted (a pipe cannot seek back to fix them): reads `fmt `,
/// skips other chunks, then treats everything after `data` as samples.
#[derive(Debug, Default)]
struct WavStream {
    header: Vec<u8>,
    format: Option<Format>,
    in_data: bool,
    pcm: crate::resample::PcmDecoder,
}

#[derive(Debug, Clone, Copy)]
struct Format {
    sample_rate: u32,
    channels: u16,
}

/// Headers longer than this are not a WAV stream we can use.
const MAX_HEADER: usize = 4096;

impl WavStream {
    fn sample_rate(&self) -> Option<u32> {
        self.in_data
            .then_some(self.format.map(|f| f.sample_rate))
            .flatten()
    }

    /// Appends the mono samples in `bytes` to `out`.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<i16>) -> Result<(), SpeechError> {
        if self.in_data {
            self.decode(bytes, out);
            return Ok(());
        }
        self.header.extend_from_slice(bytes);
        let invalid = |reason: &str| SpeechError::InvalidAudio {
            provider: PROGRAM,
            reason: reason.into(),
        };
        if self.header.len() < 12 {
            return Ok(());
        }
        if &self.header[0..4] != b"RIFF" || &self.header[8..12] != b"WAVE" {
            return Err(invalid("not a RIFF/WAVE stream"));
        }
        let mut at = 12;
        // Bounded: every step advances `at` by at least 8 bytes.
        while self.header.len() >= at + 8 {
            let id = &self.header[at..at + 4];
            let size = u32::from_le_bytes([
                self.header[at + 4],
                self.header[at + 5],
                self.header[at + 6],
                self.header[at + 7],
            ]) as usize;
            let body = at + 8;
            if id == b"data" {
                let format = self.format.ok_or_else(|| invalid("data before fmt"))?;
                if format.channels == 0 {
                    return Err(invalid("zero channels"));
                }
                self.in_data = true;
                let rest = self.header.split_off(body);
                self.header = Vec::new();
                self.decode(&rest, out);
                return Ok(());
            }
            if size > MAX_HEADER {
                return Err(invalid("oversized header chunk"));
            }
            if self.header.len() < body + size {
                break;
            }
            if id == b"fmt " {
                let f = &self.header[body..body + size];
                if size < 16 {
                    return Err(invalid("short fmt chunk"));
                }
                let tag = u16::from_le_bytes([f[0], f[1]]);
                let channels = u16::from_le_bytes([f[2], f[3]]);
                let sample_rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                if tag != 1 || bits != 16 {
                    return Err(invalid("not 16-bit PCM"));
                }
                self.format = Some(Format {
                    sample_rate,
                    channels,
                });
            }
            at = body + size + (size & 1);
        }
        if self.header.len() > MAX_HEADER {
            return Err(invalid("no data chunk in the first 4 KiB"));
        }
        Ok(())
    }

    fn decode(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        let channels = self.format.map_or(1, |f| f.channels.max(1)) as usize;
        if channels == 1 {
            self.pcm.decode(bytes, out);
        } else {
            // Keep the first channel. Rare enough that a copy is fine.
            let mut all = Vec::new();
            self.pcm.decode(bytes, &mut all);
            out.extend(all.iter().step_by(channels));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rate: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&0x7fff_f024u32.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * 2).to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(b"abc\0"); // odd size + pad byte
        h.extend_from_slice(b"data");
        h.extend_from_slice(&0x7fff_f000u32.to_le_bytes());
        h
    }

    #[test]
    fn wav_header_is_parsed_byte_by_byte() {
        let mut bytes = header(22_050);
        bytes.extend_from_slice(&[1, 0, 2, 0, 3]);
        let mut wav = WavStream::default();
        let mut out = Vec::new();
        for b in &bytes {
            wav.push(std::slice::from_ref(b), &mut out).expect("valid");
        }
        assert_eq!(wav.sample_rate(), Some(22_050));
        assert_eq!(out, vec![1, 2]);
        wav.push(&[0], &mut out).expect("valid");
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(WavStream::default()
            .push(b"hello, this is not a wav file", &mut out)
            .is_err());
        let mut huge = header(8_000);
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // fmt size
        assert!(WavStream::default().push(&huge, &mut out).is_err());
        let mut endless = b"RIFF\0\0\0\0WAVE".to_vec();
        for _ in 0..600 {
            endless.extend_from_slice(b"junk\0\0\0\0");
        }
        assert!(WavStream::default().push(&endless, &mut out).is_err());
    }
}
