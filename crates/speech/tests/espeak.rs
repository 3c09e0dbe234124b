//! espeak-ng as a subprocess: audio arrives quickly, is not silent, and
//! dropping the stream kills the child.

use std::time::{Duration, Instant};

use switchboard_speech::{EspeakConfig, EspeakTts, SpeechError, TextToSpeech};

mod common;

#[tokio::test]
async fn speaks_non_silent_frames_quickly() {
    let tts = EspeakTts::default();
    // Warm the page cache (first exec of the binary and its voice data).
    let _ = common::speak(&tts, "Hi.").await.expect("espeak-ng runs");
    let mut firsts = Vec::new();
    for _ in 0..3 {
        let (frames, first) = common::speak(&tts, "Hello, thanks for calling.")
            .await
            .expect("espeak-ng runs");
        assert!(
            frames.len() > 50,
            "{} frames: at least a second of speech",
            frames.len()
        );
        assert!(
            common::dbfs(&frames) > -40.0,
            "level {:.1} dBFS",
            common::dbfs(&frames)
        );
        firsts.push(first);
    }
    let best = firsts.iter().min().copied().unwrap_or_default();
    println!("espeak-ng first audio: {firsts:?}");
    // Target < 50 ms; the bound is loose for a loaded two-core machine.
    assert!(
        best < Duration::from_millis(250),
        "first audio after {best:?}"
    );
}

#[tokio::test]
async fn dropping_the_stream_kills_the_child() {
    let tts = EspeakTts::default();
    let long = "This sentence is long and will keep espeak busy for a while. ".repeat(200);
    let mut stream = tts.synthesize(&long);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.frames.recv())
        .await
        .expect("first frame in time");
    assert!(matches!(first, Some(Ok(_))));
    assert_eq!(tts.in_flight(), 1);
    drop(stream);
    let started = Instant::now();
    while tts.in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "child still alive after drop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("espeak-ng child gone {:?} after drop", started.elapsed());
}

#[tokio::test]
async fn a_missing_binary_names_the_package() {
    let tts = EspeakTts::new(EspeakConfig {
        program: "/nonexistent/espeak-ng".into(),
        ..EspeakConfig::default()
    });
    let mut stream = tts.synthesize("hello");
    match stream.frames.recv().await {
        Some(Err(e @ SpeechError::NotInstalled { .. })) => {
            assert!(e.to_string().contains("apt-get install espeak-ng"), "{e}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected NotInstalled, got {other:?}"),
    }
}

#[tokio::test]
async fn text_that_looks_like_an_option_is_spoken_not_parsed() {
    let tts = EspeakTts::default();
    let (frames, _) = common::speak(&tts, "--version").await.expect("spoken");
    assert!(frames.len() > 10);
}
