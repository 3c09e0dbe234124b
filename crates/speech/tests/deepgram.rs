//! The Deepgram adapter against the local fake (`fake::FakeDeepgram`) on
//! 127.0.0.1: streaming results, handshake refusals, dropped and closed
//! connections, keep-alives, a server that never answers.

use std::time::Duration;

use switchboard_speech::fake::{FakeDeepgram, Fault};
use switchboard_speech::{
    DeepgramConfig, DeepgramStt, Frame, SpeechError, SpeechToText, SttEvent, SttInput,
};

const TURN: &str = "I need to speak with a person, please.";

fn stt(fake: &FakeDeepgram) -> DeepgramStt {
    let mut config = DeepgramConfig::new("dg-test").with_base_url(fake.base_url());
    config.finalize_timeout = Duration::from_secs(2);
    DeepgramStt::new(config).expect("tls config")
}

fn speech(frames: usize) -> Vec<Frame> {
    (0..frames)
        .map(|i| Frame::new([if i % 2 == 0 { 1_000 } else { -1_000 }; 160]))
        .collect()
}

/// Sends `frames` then `Finish` from another task (ignoring a provider that
/// stopped reading), and collects events until the stream ends.
async fn turn(stt: &dyn SpeechToText, frames: Vec<Frame>) -> (Vec<SttEvent>, Option<SpeechError>) {
    let mut stream = stt.open().expect("runtime");
    let audio = stream.audio.clone();
    tokio::spawn(async move {
        for frame in frames {
            if audio.send(SttInput::Audio(frame)).await.is_err() {
                return;
            }
        }
        let _ = audio.send(SttInput::Finish).await;
    });
    drop(stream.audio);
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.events.recv())
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(event)) => events.push(event),
            Some(Err(e)) => {
                assert!(
                    stream.events.recv().await.is_none(),
                    "closed after the error"
                );
                return (events, Some(e));
            }
            None => return (events, None),
        }
    }
}

#[tokio::test]
async fn partials_stream_while_the_caller_speaks_then_one_final() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_transcript(TURN);
    let (events, error) = turn(&stt(&fake), speech(50)).await;
    assert!(error.is_none(), "{error:?}");

    let (last, partials) = events.split_last().expect("events");
    assert_eq!(
        last,
        &SttEvent::Final {
            text: TURN.into(),
            confidence: 0.98
        }
    );
    let partials: Vec<&str> = partials
        .iter()
        .map(|e| match e {
            SttEvent::Partial { text } => text.as_str(),
            other => panic!("only partials before the final: {other:?}"),
        })
        .collect();
    assert!(partials.len() >= 5, "{partials:?}");
    assert_eq!(partials[0], "I");
    assert!(
        partials.iter().all(|p| TURN.starts_with(p)),
        "every partial is what was heard so far: {partials:?}"
    );

    let request = &fake.requests()[0];
    assert_eq!(request.credentials.as_deref(), Some("Token dg-test"));
    assert!(
        request.path_and_query.starts_with(
            "/v1/listen?encoding=linear16&sample_rate=8000&channels=1&interim_results=true&punctuate=true&model=nova-3&language=en-US"
        ),
        "{}",
        request.path_and_query
    );
    assert_eq!(fake.audio_bytes(), 50 * 320, "every frame as PCM16LE");
    // CloseStream follows Finalize at once, but the final may be read
    // before the fake has recorded it.
    let control = fake.control_messages();
    assert_eq!(
        control.first().map(String::as_str),
        Some("Finalize"),
        "{control:?}"
    );
}

#[tokio::test]
async fn a_silent_turn_is_an_empty_final() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_transcript("");
    let (events, error) = turn(&stt(&fake), vec![Frame::silence(); 10]).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        [SttEvent::Final {
            text: String::new(),
            confidence: 0.0
        }]
    );
}

#[tokio::test]
async fn a_refused_handshake_is_a_status_error_quoting_deepgram() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::Status {
        status: 401,
        body: r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials.","request_id":"r"}"#
            .into(),
    });
    let (events, error) = turn(&stt(&fake), speech(10)).await;
    assert!(events.is_empty());
    let error = error.expect("an error");
    assert!(
        matches!(error, SpeechError::Status { status: 401, .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert!(
        error
            .to_string()
            .contains("INVALID_AUTH: Invalid credentials."),
        "{error}"
    );

    fake.push_fault(Fault::Status {
        status: 503,
        body: String::new(),
    });
    let (_, error) = turn(&stt(&fake), speech(10)).await;
    let error = error.expect("an error");
    assert!(
        matches!(error, SpeechError::Status { status: 503, .. }),
        "{error}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_retryable() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::CloseMidStream);
    let (events, error) = turn(&stt(&fake), speech(50)).await;
    assert!(
        events.iter().all(|e| matches!(e, SttEvent::Partial { .. })),
        "no final from a broken stream: {events:?}"
    );
    let error = error.expect("an error");
    assert!(matches!(error, SpeechError::Connection { .. }), "{error}");
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test]
async fn close_codes_decide_retryability() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::CloseWith {
        code: 1008,
        reason: "DATA-0000".into(),
    });
    fake.push_fault(Fault::CloseWith {
        code: 1011,
        reason: "NET-0000".into(),
    });
    let (_, error) = turn(&stt(&fake), speech(50)).await;
    let error = error.expect("an error");
    assert!(
        matches!(
            error,
            SpeechError::Connection {
                close_code: Some(1008),
                ..
            }
        ),
        "{error}"
    );
    assert!(
        !error.is_retryable(),
        "undecodable audio will not decode twice"
    );
    assert!(error.to_string().contains("DATA-0000"), "{error}");

    let (_, error) = turn(&stt(&fake), speech(50)).await;
    let error = error.expect("an error");
    assert!(
        matches!(
            error,
            SpeechError::Connection {
                close_code: Some(1011),
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_after_finish() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_fault(Fault::Hang);
    let mut config = DeepgramConfig::new("k").with_base_url(fake.base_url());
    config.finalize_timeout = Duration::from_millis(300);
    let stt = DeepgramStt::new(config).expect("tls config");
    let (events, error) = turn(&stt, speech(20)).await;
    assert!(events.is_empty(), "{events:?}");
    let error = error.expect("an error");
    assert!(matches!(error, SpeechError::Timeout { .. }), "{error}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn keepalives_flow_while_the_caller_is_silent() {
    let fake = FakeDeepgram::start().await.expect("bind");
    fake.push_transcript("yes");
    let mut config = DeepgramConfig::new("k").with_base_url(fake.base_url());
    config.keepalive_interval = Duration::from_millis(50);
    let stt = DeepgramStt::new(config).expect("tls config");
    let mut stream = stt.open().expect("runtime");
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream.audio.send(SttInput::Finish).await.expect("open");
    let mut last = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.events.recv())
        .await
        .expect("in time")
    {
        last = Some(event.expect("no error"));
    }
    assert_eq!(
        last,
        Some(SttEvent::Final {
            text: "yes".into(),
            confidence: 0.98
        })
    );
    let control = fake.control_messages();
    assert!(
        control.iter().filter(|m| *m == "KeepAlive").count() >= 2,
        "{control:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = DeepgramConfig::new("k").with_base_url(format!("ws://127.0.0.1:{port}"));
    let stt = DeepgramStt::new(config).expect("tls config");
    let (_, error) = turn(&stt, speech(5)).await;
    let error = error.expect("an error");
    assert!(matches!(error, SpeechError::Connection { .. }), "{error}");
    assert!(error.is_retryable());
}
