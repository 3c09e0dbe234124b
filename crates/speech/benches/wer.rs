//! Word error rate of the default offline STT (Whisper tiny.en) on natural
//! synthesized phone speech (the Piper voice, at 8 kHz like a G.711 call),
//! clean and with added noise.
//!
//! ```text
//! cargo bench -p switchboard-speech --features whisper --bench wer
//! ```
//!
//! Each sentence is synthesised once, then transcribed clean and with white
//! noise and low-frequency "line hum + crowd" noise (white noise through a
//! one-pole low-pass) mixed at 20, 10 and 5 dB SNR (speech RMS over voiced
//! samples vs noise RMS). Noise is seeded: every run hears the same audio.
//! Prints a table and writes `$CARGO_TARGET_DIR/bench/speech-wer.json`.
//! Needs `scripts/install-speech.sh` (Piper voice and Whisper model); without
//! them it says so and exits 0.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_speech::text::{normalize, word_error_rate};
use switchboard_speech::{
    Frame, PiperConfig, PiperTts, SpeechToText, TextToSpeech, WhisperConfig, WhisperStt,
};

/// What callers of a support line say, digits and an address included.
const SENTENCES: &[&str] = &[
    "What are your opening hours?",
    "I need to speak with a person.",
    "Can I talk to a human please?",
    "I would like to book an appointment for next Tuesday.",
    "Do you take new patients?",
    "How much is a cleaning?",
    "My number is 415 555 0100.",
    "Please call me back tomorrow morning.",
    "I was charged twice for the same visit.",
    "Where are you located?",
    "I want to cancel my appointment.",
    "Is there parking near the office?",
];

#[derive(Clone, Copy)]
enum Noise {
    Clean,
    White(f64),
    LowPass(f64),
}

impl Noise {
    fn label(self) -> String {
        match self {
            Noise::Clean => "clean".into(),
            Noise::White(snr) => format!("white noise, {snr} dB SNR"),
            Noise::LowPass(snr) => format!("low rumble, {snr} dB SNR"),
        }
    }
}

/// A small deterministic Gaussian source (xorshift + Box–Muller).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn gauss(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn rms(samples: &[i16]) -> f64 {
    // Over voiced samples only, so leading/trailing silence does not lower it.
    let voiced: Vec<f64> = samples
        .iter()
        .map(|&s| s as f64)
        .filter(|s| s.abs() > 100.0)
        .collect();
    if voiced.is_empty() {
        return 0.0;
    }
    (voiced.iter().map(|s| s * s).sum::<f64>() / voiced.len() as f64).sqrt()
}

fn mix(frames: &[Frame], noise: Noise, seed: u64) -> Vec<Frame> {
    let samples: Vec<i16> = frames.iter().flat_map(|f| *f.samples()).collect();
    let (snr, low_pass) = match noise {
        Noise::Clean => return frames.to_vec(),
        Noise::White(snr) => (snr, false),
        Noise::LowPass(snr) => (snr, true),
    };
    let mut rng = Rng(seed | 1);
    let mut raw: Vec<f64> = Vec::with_capacity(samples.len());
    let mut state = 0.0;
    for _ in 0..samples.len() {
        let g = rng.gauss();
        if low_pass {
            state += 0.08 * (g - state);
            raw.push(state);
        } else {
            raw.push(g);
        }
    }
    let noise_rms = (raw.iter().map(|x| x * x).sum::<f64>() / raw.len().max(1) as f64).sqrt();
    let gain = rms(&samples) / 10f64.powf(snr / 20.0) / noise_rms.max(1e-9);
    let mixed: Vec<i16> = samples
        .iter()
        .zip(&raw)
        .map(|(&s, &n)| (s as f64 + n * gain).clamp(-32768.0, 32767.0) as i16)
        .collect();
    mixed
        .chunks(160)
        .map(|c| {
            let mut f = [0i16; 160];
            f[..c.len()].copy_from_slice(c);
            Frame::new(f)
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let piper = PiperTts::new(PiperConfig::default());
    if let Err(e) = piper.start().await {
        println!("skipping: Piper is not installed ({e}); run scripts/install-speech.sh");
        return;
    }
    let whisper = match WhisperStt::new(WhisperConfig::default()) {
        Ok(w) => w,
        Err(e) => {
            println!("skipping: Whisper is not installed ({e}); run scripts/install-speech.sh");
            return;
        }
    };
    let started = Instant::now();
    let mut voices = Vec::new();
    for s in SENTENCES {
        match piper.synthesize(s).collect(Duration::from_secs(30)).await {
            Ok(frames) => voices.push((*s, frames)),
            Err(e) => {
                eprintln!("cannot synthesise {s:?}: {e}");
                return;
            }
        }
    }
    let conditions = [
        Noise::Clean,
        Noise::White(20.0),
        Noise::White(10.0),
        Noise::White(5.0),
        Noise::LowPass(10.0),
        Noise::LowPass(5.0),
    ];
    println!(
        "| condition | WER (all words) | sentences exact | STT time p50 | misheard examples |"
    );
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (ci, noise) in conditions.iter().enumerate() {
        let (mut refs, mut hyps) = (Vec::new(), Vec::new());
        let mut exact = 0;
        let mut times = Vec::new();
        let mut examples = Vec::new();
        let mut details = Vec::new();
        for (si, (said, frames)) in voices.iter().enumerate() {
            let audio = mix(frames, *noise, 0x5eed + (ci * 100 + si) as u64);
            let t = Instant::now();
            let heard = match whisper.open() {
                Ok(stream) => stream
                    .transcribe(audio, Duration::from_secs(60))
                    .await
                    .map(|(text, _)| text)
                    .unwrap_or_else(|e| format!("<error: {e}>")),
                Err(e) => format!("<error: {e}>"),
            };
            times.push(t.elapsed().as_millis() as u64);
            if normalize(said) == normalize(&heard) {
                exact += 1;
            } else if examples.len() < 2 {
                examples.push(format!("{said:?} → {heard:?}"));
            }
            details.push(
                json!({ "said": said, "heard": heard, "wer": word_error_rate(said, &heard) }),
            );
            refs.push(normalize(said));
            hyps.push(normalize(&heard));
        }
        times.sort_unstable();
        let wer = word_error_rate(&refs.join(" "), &hyps.join(" "));
        let p50 = times[times.len() / 2];
        println!(
            "| {} | {:.1} % | {}/{} | {} ms | {} |",
            noise.label(),
            wer * 100.0,
            exact,
            voices.len(),
            p50,
            examples.join("; ")
        );
        rows.push(json!({
            "condition": noise.label(),
            "wer": wer,
            "exact": exact,
            "sentences": voices.len(),
            "stt_ms_p50": p50,
            "details": details,
        }));
    }
    let doc = json!({
        "bench": "speech-wer",
        "stt": whisper.name(),
        "tts": piper.name(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "total_secs": started.elapsed().as_secs_f64(),
        "rows": rows,
    });
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from("target"))
        .join("bench");
    let path = dir.join("speech-wer.json");
    match std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()))
    {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
