//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use std::time::{Duration, Instant};

use switchboard_speech::{Frame, SpeechError, TextToSpeech};

/// Whether the speech virtualenv is installed. Without it the test is
/// skipped with a printed reason, unless CI is set: CI must have it.
pub fn venv_or_skip(test: &str) -> bool {
    match switchboard_speech::venv_python() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
        Err(e) => panic!("{test}: {e} (CI is set, so the speech virtualenv is required)"),
    }
}

/// RMS level of frames in dBFS.
pub fn dbfs(frames: &[Frame]) -> f64 {
    let (sum, n) = frames
        .iter()
        .flat_map(|f| f.samples().iter())
        .fold((0.0, 0usize), |(s, n), &x| {
            (s + f64::from(x).powi(2), n + 1)
        });
    if n == 0 {
        return f64::NEG_INFINITY;
    }
    10.0 * (sum / n as f64 / (32_768.0f64 * 32_768.0)).log10()
}

/// Synthesises `text`, returning the frames and the time to the first one.
pub async fn speak(
    tts: &dyn TextToSpeech,
    text: &str,
) -> Result<(Vec<Frame>, Duration), SpeechError> {
    let started = Instant::now();
    let mut stream = tts.synthesize(text);
    let mut frames = Vec::new();
    let mut first = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, stream.frames.recv()).await {
            Err(_) => return Err(SpeechError::Timeout { provider: "test" }),
            Ok(None) => break,
            Ok(Some(frame)) => {
                first.get_or_insert_with(|| started.elapsed());
                frames.push(frame?);
            }
        }
    }
    Ok((frames, first.unwrap_or_default()))
}

/// `frames` with white noise added at `snr_db` below the speech level
/// (speech level measured over frames louder than −50 dBFS). Deterministic.
pub fn with_noise(frames: &[Frame], snr_db: f64, seed: u64) -> Vec<Frame> {
    let speech: Vec<Frame> = frames
        .iter()
        .filter(|f| dbfs(std::slice::from_ref(f)) > -50.0)
        .cloned()
        .collect();
    let speech_rms = 32_768.0 * 10f64.powf(dbfs(&speech) / 20.0);
    let noise_rms = speech_rms / 10f64.powf(snr_db / 20.0);
    let mut state = seed | 1;
    let mut uniform = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    frames
        .iter()
        .map(|f| {
            let mut out = f.clone();
            for s in out.samples_mut().iter_mut() {
                // Box–Muller: Gaussian noise.
                let (u1, u2) = (uniform().max(1e-12), uniform());
                let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                *s = (f64::from(*s) + g * noise_rms)
                    .round()
                    .clamp(-32_768.0, 32_767.0) as i16;
            }
            out
        })
        .collect()
}
