//! Piper speaks, the audio goes through the 8 kHz call path, Whisper
//! listens: the text must survive, also with noise. Reports WER.
#![cfg(feature = "whisper")]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use switchboard_speech::text::{normalize, word_error_rate};
use switchboard_speech::{
    EspeakTts, Frame, PiperConfig, PiperTts, SpeechToText, TextToSpeech, WhisperConfig, WhisperStt,
};

mod common;

/// One model for the whole test binary: loading it per test would
/// dominate the run time (the model is `Send + Sync` and runtime-free).
fn whisper() -> &'static WhisperStt {
    static WHISPER: OnceLock<WhisperStt> = OnceLock::new();
    WHISPER.get_or_init(|| {
        let started = Instant::now();
        let stt = WhisperStt::new(WhisperConfig::default()).expect("whisper model loads");
        println!(
            "whisper loaded from {} in {:?}",
            stt.model_dir().display(),
            started.elapsed()
        );
        stt
    })
}

/// Piper with its generator noise off: the same text gives the same audio,
/// so these assertions do not depend on the draw.
fn piper() -> PiperTts {
    PiperTts::new(PiperConfig {
        noise_scale: Some(0.0),
        noise_w: Some(0.0),
        ..PiperConfig::default()
    })
}

async fn hear(frames: Vec<Frame>) -> (String, f32, Duration) {
    let stream = whisper().open().expect("runtime");
    let started = Instant::now();
    let (text, confidence) = stream
        .transcribe(frames, Duration::from_secs(60))
        .await
        .expect("final transcript");
    (text, confidence, started.elapsed())
}

#[tokio::test]
async fn piper_to_whisper_round_trip_survives_noise() {
    if !common::venv_or_skip("roundtrip::piper_to_whisper_round_trip_survives_noise") {
        return;
    }
    let tts = piper();
    tts.start().await.expect("sidecar");
    for sentence in [
        "I need to speak with a person.",
        "What are your opening hours?",
    ] {
        let (frames, first) = common::speak(&tts, sentence).await.expect("spoken");
        let (clean, confidence, latency) = hear(frames.clone()).await;
        println!("clean: {sentence:?} -> {clean:?} (confidence {confidence:.2}, stt {latency:?}, tts first audio {first:?})");
        assert_eq!(normalize(&clean), normalize(sentence));
        assert!(confidence > 0.5, "confidence {confidence}");

        let noisy = common::with_noise(&frames, 15.0, 7);
        let (heard, confidence, latency) = hear(noisy).await;
        println!(
            "15 dB SNR: {sentence:?} -> {heard:?} (confidence {confidence:.2}, stt {latency:?})"
        );
        assert_eq!(normalize(&heard), normalize(sentence));
    }
}

#[tokio::test]
async fn silence_is_heard_as_nothing() {
    if !common::venv_or_skip("roundtrip::silence_is_heard_as_nothing") {
        return;
    }
    let (text, _, _) = hear(vec![Frame::silence(); 100]).await;
    assert_eq!(text, "");
    let (text, _, _) = hear(Vec::new()).await;
    assert_eq!(text, "");
}

const SENTENCES: [&str; 6] = [
    "I need to speak with a person.",
    "What are your opening hours?",
    "My order has not arrived yet.",
    "Can you send me an email with the details?",
    "I would like to cancel my subscription.",
    "Please call me back tomorrow morning.",
];

#[tokio::test]
async fn word_error_rate_report() {
    if !common::venv_or_skip("roundtrip::word_error_rate_report") {
        return;
    }
    let piper = piper();
    piper.start().await.expect("sidecar");
    let espeak = EspeakTts::default();
    let voices: [(&str, &dyn TextToSpeech); 2] = [("piper", &piper), ("espeak-ng", &espeak)];
    let mut piper_wer = 0.0;
    for (voice, tts) in voices {
        for snr in [None, Some(15.0)] {
            let (mut errors, mut words, mut latencies) = (0.0, 0usize, Vec::new());
            for (i, sentence) in SENTENCES.iter().enumerate() {
                let (frames, _) = common::speak(tts, sentence).await.expect("spoken");
                let frames = match snr {
                    Some(snr) => common::with_noise(&frames, snr, i as u64 + 1),
                    None => frames,
                };
                let (heard, _, latency) = hear(frames).await;
                let n = normalize(sentence).split(' ').count();
                let wer = word_error_rate(sentence, &heard);
                println!("  {voice} {snr:?}: {sentence:?} -> {heard:?} WER {wer:.2}");
                errors += wer * n as f64;
                words += n;
                latencies.push(latency);
            }
            let wer = errors / words as f64;
            let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
            println!(
                "WER {voice} snr={snr:?}: {:.1} % over {words} words; mean STT latency {mean:?}",
                wer * 100.0
            );
            if voice == "piper" && snr.is_none() {
                piper_wer = wer;
            }
        }
    }
    assert!(
        piper_wer <= 0.10,
        "piper clean WER {:.1} %",
        piper_wer * 100.0
    );
}

#[tokio::test]
async fn per_utterance_latency_report() {
    if !common::venv_or_skip("roundtrip::per_utterance_latency_report") {
        return;
    }
    let tts = piper();
    tts.start().await.expect("sidecar");
    let mut model_times = Vec::new();
    for sentence in SENTENCES.iter().take(3) {
        let (frames, _) = common::speak(&tts, sentence).await.expect("spoken");
        let samples: Vec<i16> = frames
            .iter()
            .flat_map(|f| f.samples().iter().copied())
            .collect();
        let started = Instant::now();
        let heard = whisper().transcribe(&samples).await.expect("transcript");
        println!(
            "whisper: {:.2} s of audio -> {:?}: model {:?}, end to end {:?}",
            samples.len() as f64 / 8_000.0,
            heard.text,
            heard.elapsed,
            started.elapsed()
        );
        model_times.push(heard.elapsed);
    }
    let best = model_times.iter().min().copied().unwrap_or_default();
    // ≈ 0.5 s on an idle two-core machine; loose for a loaded one.
    assert!(best < Duration::from_secs(10), "{model_times:?}");
}

#[tokio::test]
async fn a_full_inference_queue_says_busy_instead_of_queueing_forever() {
    if !common::venv_or_skip("roundtrip::a_full_inference_queue_says_busy") {
        return;
    }
    let stt = WhisperStt::load(WhisperConfig {
        queue: 1,
        workers: 1,
        ..WhisperConfig::default()
    })
    .await
    .expect("model loads");
    // Loud enough not to be skipped as silence.
    let tone: Vec<i16> = (0..16_000).map(|i| ((i % 40) as i16 - 20) * 500).collect();
    let results = futures_util::future::join_all((0..4).map(|_| stt.transcribe(&tone))).await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_retryable()))
        .count();
    let done = results.iter().filter(|r| r.is_ok()).count();
    println!("4 turns at once, queue 1: {done} decoded, {busy} busy");
    assert!(busy >= 1 && done >= 1, "{results:?}");
}
