//! The fallback wrappers with real cloud adapters against the local fakes
//! as primaries and the scripted providers as secondaries: retry once on
//! retryable errors, fall back on permanent ones and on missed deadlines,
//! replay the turn's audio, never replay speech the caller already heard.

use std::sync::Arc;
use std::time::Duration;

use switchboard_speech::fake::{FakeDeepgram, FakeElevenLabs, Fault};
use switchboard_speech::{
    DeepgramConfig, DeepgramStt, ElevenLabsConfig, ElevenLabsTts, FallbackConfig, FallbackStt,
    FallbackTts, Frame, ScriptedStt, SpeechError, SpeechToText, SttEvent, SttInput, TextToSpeech,
    ToneTts,
};

fn config() -> FallbackConfig {
    FallbackConfig {
        retry_delay: Duration::from_millis(20),
        stt_final_timeout: Duration::from_millis(500),
        tts_first_frame_timeout: Duration::from_millis(500),
        ..FallbackConfig::default()
    }
}

fn deepgram(fake: &FakeDeepgram) -> Arc<dyn SpeechToText> {
    let config = DeepgramConfig::new("k").with_base_url(fake.base_url());
    Arc::new(DeepgramStt::new(config).expect("tls config"))
}

fn elevenlabs(fake: &FakeElevenLabs) -> Arc<dyn TextToSpeech> {
    let config = ElevenLabsConfig::new("k", "v").with_base_url(fake.base_url());
    Arc::new(ElevenLabsTts::new(config).expect("client"))
}

/// Sends `frames` frames of speech then `Finish` while reading events;
/// returns the final transcript or the error.
async fn turn(stt: &FallbackStt, frames: usize) -> Result<String, SpeechError> {
    let mut stream = stt.open().expect("runtime");
    let audio = stream.audio.clone();
    tokio::spawn(async move {
        for _ in 0..frames {
            if audio
                .send(SttInput::Audio(Frame::new([900; 160])))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = audio.send(SttInput::Finish).await;
    });
    drop(stream.audio);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.events.recv())
            .await
            .expect("the turn ends in time")
        {
            Some(Ok(SttEvent::Final { text, .. })) => return Ok(text),
            Some(Ok(SttEvent::Partial { .. })) => {}
            Some(Err(e)) => return Err(e),
            None => panic!("stream closed without a final or an error"),
        }
    }
}

#[tokio::test]
async fn stt_served_by_the_primary_when_it_works() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_transcript("from deepgram");
    let scripted = ScriptedStt::new(["from the fallback"]);
    let stt = FallbackStt::with_config(vec![deepgram(&fake), Arc::new(scripted.clone())], config());
    assert_eq!(stt.name(), "deepgram>scripted");
    assert_eq!(turn(&stt, 30).await.expect("final"), "from deepgram");
    assert_eq!(scripted.remaining(), 1);
    let stats = stt.stats();
    assert_eq!((stats.retries, stats.fallbacks), (0, 0));
    assert_eq!(
        stats.served,
        [("deepgram".to_owned(), 1), ("scripted".to_owned(), 0)]
    );
}

#[tokio::test]
async fn stt_primary_503_twice_is_served_by_the_secondary_with_the_whole_turn() {
    let fake = FakeDeepgram::start().await.expect("bind");
    for _ in 0..2 {
        fake.push_fault(Fault::Status {
            status: 503,
            body: r#"{"err_code":"SERVICE_UNAVAILABLE","err_msg":"busy"}"#.into(),
        });
    }
    let scripted = ScriptedStt::new(["from the fallback"]);
    let stt = FallbackStt::with_config(vec![deepgram(&fake), Arc::new(scripted.clone())], config());
    assert_eq!(turn(&stt, 40).await.expect("final"), "from the fallback");
    assert_eq!(fake.connections(), 2, "tried, then retried once");
    assert_eq!(scripted.heard(), [40], "the secondary heard the whole turn");
    let stats = stt.stats();
    assert_eq!((stats.retries, stats.fallbacks, stats.failures), (1, 1, 0));
    assert_eq!(stats.served[1], ("scripted".to_owned(), 1));
}

#[tokio::test]
async fn stt_primary_dropping_mid_turn_is_retried_with_the_audio_replayed() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::CloseMidStream);
    fake.set_transcript("one two three four five six");
    let scripted = ScriptedStt::new(["unused"]);
    let stt = FallbackStt::with_config(vec![deepgram(&fake), Arc::new(scripted.clone())], config());
    assert_eq!(
        turn(&stt, 50).await.expect("final"),
        "one two three four five six"
    );
    assert_eq!(fake.connections(), 2);
    assert_eq!(stt.stats().retries, 1);
    assert!(scripted.heard().is_empty());
    // The retry got the whole turn again: 50 frames on the first
    // connection at most, 50 on the second.
    assert!(fake.audio_bytes() >= 50 * 320, "{}", fake.audio_bytes());
}

#[tokio::test]
async fn stt_a_hanging_primary_times_out_and_the_secondary_answers() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::Hang);
    let scripted = ScriptedStt::new(["from the fallback"]);
    let stt = FallbackStt::with_config(vec![deepgram(&fake), Arc::new(scripted.clone())], config());
    assert_eq!(turn(&stt, 20).await.expect("final"), "from the fallback");
    assert_eq!(
        fake.connections(),
        1,
        "a provider past its deadline is not retried"
    );
    assert_eq!(scripted.heard(), [20]);
    let stats = stt.stats();
    assert_eq!((stats.retries, stats.fallbacks), (0, 1));
}

#[tokio::test]
async fn stt_primary_401_goes_straight_to_the_secondary() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::Status {
        status: 401,
        body: r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#.into(),
    });
    let scripted = ScriptedStt::new(["from the fallback"]);
    let stt = FallbackStt::with_config(vec![deepgram(&fake), Arc::new(scripted.clone())], config());
    assert_eq!(turn(&stt, 10).await.expect("final"), "from the fallback");
    assert_eq!(fake.connections(), 1, "no retry of a permanent error");
    let stats = stt.stats();
    assert_eq!((stats.retries, stats.fallbacks), (0, 1));
}

#[tokio::test]
async fn stt_reports_the_last_error_when_every_provider_fails() {
    let first = FakeDeepgram::start().await.expect("bind");
    let second = FakeDeepgram::start().await.expect("bind");
    for fake in [&first, &second] {
        fake.push_fault(Fault::Status {
            status: 403,
            body: r#"{"err_code":"ACCESS_DENIED","err_msg":"no"}"#.into(),
        });
    }
    let stt = FallbackStt::with_config(vec![deepgram(&first), deepgram(&second)], config());
    let error = turn(&stt, 10).await.expect_err("both refuse");
    assert!(
        matches!(error, SpeechError::Status { status: 403, .. }),
        "{error}"
    );
    assert_eq!(stt.stats().failures, 1);
}

#[tokio::test]
async fn tts_primary_503_twice_is_served_by_the_secondary() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    for _ in 0..2 {
        fake.push_fault(Fault::Status {
            status: 503,
            body: r#"{"detail":{"status":"service_unavailable","message":"busy"}}"#.into(),
        });
    }
    let tone = ToneTts::new();
    let tts = FallbackTts::with_config(vec![elevenlabs(&fake), Arc::new(tone.clone())], config());
    assert_eq!(tts.name(), "elevenlabs>tone");
    let frames = tts
        .synthesize("Hello.")
        .collect(Duration::from_secs(10))
        .await
        .expect("served");
    assert_eq!(frames, tone.frames_for("Hello."));
    assert_eq!(fake.requests().len(), 2);
    let stats = tts.stats();
    assert_eq!((stats.retries, stats.fallbacks), (1, 1));
}

#[tokio::test]
async fn tts_a_hanging_primary_falls_back_after_the_first_frame_deadline() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    fake.push_fault(Fault::Hang);
    let tone = ToneTts::new();
    let tts = FallbackTts::with_config(vec![elevenlabs(&fake), Arc::new(tone.clone())], config());
    let frames = tts
        .synthesize("Hello.")
        .collect(Duration::from_secs(10))
        .await
        .expect("served");
    assert_eq!(frames, tone.frames_for("Hello."));
    assert_eq!(
        fake.requests().len(),
        1,
        "not retried after a missed deadline"
    );
}

#[tokio::test]
async fn tts_primary_401_goes_straight_to_the_secondary() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    fake.push_fault(Fault::Status {
        status: 401,
        body: r#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#.into(),
    });
    let tone = ToneTts::new();
    let tts = FallbackTts::with_config(vec![elevenlabs(&fake), Arc::new(tone.clone())], config());
    let frames = tts
        .synthesize("Hi.")
        .collect(Duration::from_secs(10))
        .await
        .expect("served");
    assert_eq!(frames, tone.frames_for("Hi."));
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(tts.stats().retries, 0);
}

#[tokio::test]
async fn tts_an_error_after_the_first_frame_is_not_replayed() {
    let fake = FakeElevenLabs::start().await.expect("bind");
    fake.push_fault(Fault::CloseMidStream);
    let tone = ToneTts::new();
    let tts = FallbackTts::with_config(vec![elevenlabs(&fake), Arc::new(tone.clone())], config());
    let mut stream = tts.synthesize("Hello there.");
    let mut frames = 0;
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.frames.recv())
            .await
            .expect("in time")
        {
            Some(Ok(_)) => frames += 1,
            Some(Err(e)) => break e,
            None => panic!("ended without the error"),
        }
    };
    assert_eq!(frames, 5, "what the primary delivered, and nothing more");
    assert!(error.is_retryable(), "{error}");
    assert!(stream.frames.recv().await.is_none());
    assert!(tone.spoken().is_empty(), "the secondary was never asked");
    assert_eq!(fake.requests().len(), 1, "no retry after audio was heard");
    let stats = tts.stats();
    assert_eq!((stats.retries, stats.fallbacks), (0, 0));
}

#[tokio::test]
async fn stt_a_turn_longer_than_the_replay_bound_is_not_replayed() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::Hang);
    let scripted = ScriptedStt::new(["never used"]);
    let stt = FallbackStt::with_config(
        vec![deepgram(&fake), Arc::new(scripted.clone())],
        FallbackConfig {
            max_replay: Duration::from_millis(200), // 10 frames
            ..config()
        },
    );
    let error = turn(&stt, 30).await.expect_err("cannot replay 30 frames");
    assert!(matches!(error, SpeechError::Timeout { .. }), "{error}");
    assert!(
        scripted.heard().is_empty(),
        "a truncated turn is not replayed"
    );
    assert_eq!(stt.stats().failures, 1);
}

#[tokio::test]
async fn cloud_to_cloud_fallback_deepgram_then_openai() {
    use switchboard_speech::fake::FakeOpenAi;
    use switchboard_speech::{OpenAiConfig, OpenAiStt, OpenAiTts};

    let deepgram_fake = FakeDeepgram::start().await.expect("bind");
    deepgram_fake.push_fault(Fault::CloseWith {
        code: 1008,
        reason: "DATA-0000".into(),
    });
    let openai_fake = FakeOpenAi::start().await.expect("bind");
    openai_fake.push_transcript("from openai");
    let openai = OpenAiConfig::new(openai_fake.base_url(), Some("sk-test".into()));
    let stt = FallbackStt::with_config(
        vec![
            deepgram(&deepgram_fake),
            Arc::new(OpenAiStt::new(openai.clone()).expect("client")),
        ],
        config(),
    );
    assert_eq!(stt.name(), "deepgram>openai");
    assert_eq!(turn(&stt, 30).await.expect("final"), "from openai");
    assert_eq!(
        deepgram_fake.connections(),
        1,
        "a data error is not retried"
    );

    let elevenlabs_fake = FakeElevenLabs::start().await.expect("bind");
    elevenlabs_fake.push_fault(Fault::Hang);
    let tts = FallbackTts::with_config(
        vec![
            elevenlabs(&elevenlabs_fake),
            Arc::new(OpenAiTts::new(openai).expect("client")),
        ],
        config(),
    );
    let frames = tts
        .synthesize("Hello.")
        .collect(Duration::from_secs(10))
        .await
        .expect("served by openai");
    assert_eq!(frames.len(), 50, "1 s at 24 kHz is 50 frames at 8 kHz");
    let requests = openai_fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].credentials.as_deref(), Some("Bearer sk-test"));
}
