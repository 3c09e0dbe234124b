//! The Piper sidecar: loads once, first audio quickly, cancellation stops
//! the request without killing the shared process.

use std::time::{Duration, Instant};

use switchboard_speech::{PiperConfig, PiperTts, TextToSpeech};

mod common;

#[tokio::test]
async fn speaks_quickly_and_shares_one_process() {
    if !common::venv_or_skip("piper::speaks_quickly_and_shares_one_process") {
        return;
    }
    let tts = PiperTts::default();
    let started = Instant::now();
    let rate = tts.start().await.expect("sidecar starts");
    println!("piper sidecar ready in {:?} ({rate} Hz)", started.elapsed());
    let pid = tts.sidecar_pid().await.expect("running");

    let mut firsts = Vec::new();
    for text in [
        "Hello, thanks for calling.",
        "How can I help you today?",
        "One moment please.",
    ] {
        let (frames, first) = common::speak(&tts, text).await.expect("synthesised");
        assert!(frames.len() > 40, "{text}: {} frames", frames.len());
        assert!(common::dbfs(&frames) > -40.0);
        firsts.push(first);
    }
    println!("piper first audio: {firsts:?}");
    let best = firsts.iter().min().copied().unwrap_or_default();
    assert!(
        best < Duration::from_millis(1500),
        "first audio after {best:?}"
    );

    // Concurrent requests from several "calls" go to the same process.
    let clone = tts.clone();
    let (a, b) = tokio::join!(
        common::speak(&tts, "First caller."),
        common::speak(&clone, "Second caller.")
    );
    assert!(a.expect("a").0.len() > 20 && b.expect("b").0.len() > 20);
    assert_eq!(
        tts.sidecar_pid().await,
        Some(pid),
        "one sidecar for every call"
    );
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_request() {
    if !common::venv_or_skip("piper::dropping_the_stream_cancels_the_request") {
        return;
    }
    let tts = PiperTts::new(PiperConfig::default());
    tts.start().await.expect("sidecar starts");
    let long = "This is one sentence of a very long answer. ".repeat(40);
    let mut stream = tts.synthesize(&long);
    let first = tokio::time::timeout(Duration::from_secs(10), stream.frames.recv())
        .await
        .expect("in time");
    assert!(matches!(first, Some(Ok(_))));
    drop(stream);
    let started = Instant::now();
    while tts.pending_requests().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request still routed after drop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The sidecar stops at the next sentence and serves the next request at once.
    let (frames, first) = common::speak(&tts, "Still here.")
        .await
        .expect("next request");
    assert!(frames.len() > 20);
    println!("first audio after a cancelled request: {first:?}");
    assert!(first < Duration::from_secs(3), "{first:?}");
}

#[tokio::test]
async fn a_missing_voice_is_reported_at_start() {
    let tts = PiperTts::new(PiperConfig {
        voice: Some("/nonexistent/voice.onnx".into()),
        python: switchboard_speech::venv_python().ok(),
        ..PiperConfig::default()
    });
    let err = tts.start().await.expect_err("no such voice");
    println!("{err}");
    assert!(!err.to_string().is_empty());
}
