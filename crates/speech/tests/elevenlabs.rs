//! The ElevenLabs adapter against the local fake (`fake::FakeElevenLabs`) on
//! 127.0.0.1: frames stream as bytes arrive, errors quote ElevenLabs'
//! detail message, truncated and hanging responses end the utterance.

use std::time::Duration;

use switchboard_speech::fake::{FakeElevenLabs, Fault};
use switchboard_speech::{ElevenLabsConfig, ElevenLabsTts, SpeechError, TextToSpeech, TtsStream};

fn tts(fake: &FakeElevenLabs) -> ElevenLabsTts {
    let mut config = ElevenLabsConfig::new("xi-test", "voice-1").with_base_url(fake.base_url());
    config.timeout = Duration::from_secs(2);
    ElevenLabsTts::new(config).expect("client")
}

async fn first_error(mut stream: TtsStream) -> (usize, SpeechError) {
    let mut frames = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.frames.recv())
            .await
            .expect("in time")
        {
            Some(Ok(_)) => frames += 1,
            Some(Err(e)) => return (frames, e),
            None => panic!("stream ended without an error after {frames} frames"),
        }
    }
}

#[tokio::test]
async fn the_first_frame_arrives_before_the_body_is_complete() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    // 1 s of audio in ten 100 ms chunks, 150 ms apart.
    fake.set_pacing(800, Duration::from_millis(150));
    let mut stream = tts(&fake).synthesize("Hello there.");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.frames.recv())
        .await
        .expect("in time")
        .expect("a frame")
        .expect("audio");
    let sent = fake.bytes_sent();
    assert!(
        sent < fake.audio_len() as u64,
        "first frame after {sent} of {} bytes: it must not wait for the body",
        fake.audio_len()
    );
    assert!(!first.is_silence());
    let rest = stream
        .collect(Duration::from_secs(10))
        .await
        .expect("the rest");
    assert_eq!(rest.len() + 1, 50, "8000 µ-law bytes are 50 frames");
    assert!(rest.iter().all(|f| !f.is_silence()));

    let request = &fake.requests()[0];
    assert_eq!(
        request.path_and_query,
        "/v1/text-to-speech/voice-1/stream?output_format=ulaw_8000"
    );
    assert_eq!(request.credentials.as_deref(), Some("xi-test"));
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
    assert_eq!(body["text"], "Hello there.");
    assert_eq!(body["model_id"], "eleven_flash_v2_5");
}

#[tokio::test]
async fn a_partial_last_frame_is_padded() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    fake.set_audio(vec![4_000; 250]);
    let frames = tts(&fake)
        .synthesize("Hi.")
        .collect(Duration::from_secs(10))
        .await
        .expect("audio");
    assert_eq!(frames.len(), 2);
    assert!(frames[1].samples()[90..].iter().all(|&s| s == 0));
}

#[tokio::test]
async fn errors_quote_the_detail_message() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    fake.push_fault(Fault::Status {
        status: 401,
        body: r#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#.into(),
    });
    let (frames, error) = first_error(tts(&fake).synthesize("x")).await;
    assert_eq!(frames, 0);
    assert!(
        matches!(error, SpeechError::Status { status: 401, ref message, .. } if message == "invalid_api_key: Invalid API key"),
        "{error}"
    );
    assert!(!error.is_retryable());

    fake.push_fault(Fault::Status {
        status: 429,
        body: r#"{"detail":{"status":"too_many_concurrent_requests","message":"Too many concurrent requests."}}"#.into(),
    });
    let (_, error) = first_error(tts(&fake).synthesize("x")).await;
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("too_many_concurrent_requests"));
}

#[tokio::test]
async fn a_truncated_body_ends_the_utterance_with_a_retryable_error() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    fake.push_fault(Fault::CloseMidStream);
    let (frames, error) = first_error(tts(&fake).synthesize("x")).await;
    assert_eq!(frames, 5, "the first 800-byte chunk was played");
    assert!(matches!(error, SpeechError::Http { .. }), "{error}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    fake.push_fault(Fault::Hang);
    let mut config = ElevenLabsConfig::new("k", "v").with_base_url(fake.base_url());
    config.timeout = Duration::from_millis(300);
    let tts = ElevenLabsTts::new(config).expect("client");
    let (_, error) = first_error(tts.synthesize("x")).await;
    assert!(matches!(error, SpeechError::Timeout { .. }), "{error}");
    assert!(error.is_retryable());
}
