//! The OpenAI-compatible adapters against a local fake server that can
//! stream slowly, stall and fail.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use switchboard_speech::{
    Frame, OpenAiConfig, OpenAiStt, OpenAiTts, SpeechError, SpeechToText, SttInput, TextToSpeech,
};

#[derive(Default)]
struct Fake {
    /// Answer the next N requests with this status.
    fail_next: AtomicU32,
    fail_status: AtomicU32,
    /// Wait this long before answering.
    delay_ms: AtomicU64,
    requests: AtomicU32,
    last_body: Mutex<Vec<u8>>,
    last_auth: Mutex<Option<String>>,
}

impl Fake {
    fn fail(&self, times: u32, status: u16) {
        self.fail_status.store(u32::from(status), Ordering::SeqCst);
        self.fail_next.store(times, Ordering::SeqCst);
    }

    /// Common prologue: latency, injected failures, recording.
    async fn before(&self, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        *self.last_body.lock().expect("lock") = body.to_vec();
        *self.last_auth.lock().expect("lock") = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let failing = self.fail_next.load(Ordering::SeqCst);
        if failing > 0 {
            self.fail_next.store(failing - 1, Ordering::SeqCst);
            let status = StatusCode::from_u16(self.fail_status.load(Ordering::SeqCst) as u16)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Some((status, "{\"error\":{\"message\":\"injected\"}}").into_response());
        }
        None
    }
}

/// 1 s of a 500 Hz tone at 24 kHz, in ten chunks 30 ms apart.
async fn speech(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = fake.before(&headers, &body).await {
        return r;
    }
    let pcm: Vec<u8> = (0..24_000)
        .flat_map(|i| {
            let v = (8_000.0 * (2.0 * std::f64::consts::PI * 500.0 * f64::from(i) / 24_000.0).sin())
                as i16;
            v.to_le_bytes()
        })
        .collect();
    // 4 801 bytes: chunks split samples in half, as networks do.
    let chunks: Vec<Bytes> = pcm.chunks(4_801).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
        let chunk = it.next()?;
        tokio::time::sleep(Duration::from_millis(30)).await;
        Some((Ok::<_, std::io::Error>(chunk), it))
    });
    Response::new(Body::from_stream(stream))
}

async fn transcriptions(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = fake.before(&headers, &body).await {
        return r;
    }
    let multipart = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data; boundary="));
    let has_wav = body.windows(4).any(|w| w == b"RIFF");
    if !multipart || !has_wav {
        return (StatusCode::BAD_REQUEST, "expected a multipart WAV upload").into_response();
    }
    axum::Json(serde_json::json!({ "text": "  I need to speak with a person. " })).into_response()
}

async fn serve() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/v1/audio/speech", post(speech))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), fake)
}

fn config(base: &str) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(base, Some("sk-test".into()));
    config.timeout = Duration::from_millis(500);
    config
}

#[tokio::test]
async fn tts_streams_frames_before_the_response_ends() {
    let (base, fake) = serve().await;
    let tts = OpenAiTts::new(config(&base)).expect("client");
    let started = Instant::now();
    let mut stream = tts.synthesize("Hello there.");
    let mut frames = Vec::new();
    let mut first = None;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), stream.frames.recv())
        .await
        .expect("in time")
    {
        first.get_or_insert_with(|| started.elapsed());
        frames.push(frame.expect("audio"));
    }
    let total = started.elapsed();
    let first = first.expect("some audio");
    println!(
        "openai tts: first frame {first:?}, last {total:?}, {} frames",
        frames.len()
    );
    assert_eq!(frames.len(), 50, "1 s at 24 kHz is 50 frames at 8 kHz");
    assert!(
        first + Duration::from_millis(150) < total,
        "frames must stream, not wait for the body"
    );
    assert!(frames[5..45].iter().all(|f| !f.is_silence()));
    assert_eq!(
        fake.last_auth.lock().expect("lock").as_deref(),
        Some("Bearer sk-test")
    );
    let body: serde_json::Value =
        serde_json::from_slice(&fake.last_body.lock().expect("lock")).expect("json");
    assert_eq!(body["response_format"], "pcm");
    assert_eq!(body["input"], "Hello there.");
}

#[tokio::test]
async fn tts_errors_say_whether_to_retry() {
    let (base, fake) = serve().await;
    let tts = OpenAiTts::new(config(&base)).expect("client");

    fake.fail(1, 503);
    let err = first_error(tts.synthesize("x")).await;
    assert!(
        matches!(err, SpeechError::Status { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("injected"), "{err}");

    fake.fail(1, 401);
    let err = first_error(tts.synthesize("x")).await;
    assert!(
        matches!(err, SpeechError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());

    fake.delay_ms.store(2_000, Ordering::SeqCst);
    let started = Instant::now();
    let err = first_error(tts.synthesize("x")).await;
    assert!(matches!(err, SpeechError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "timed out after {:?}",
        started.elapsed()
    );

    // After the failures, the same adapter works again.
    fake.delay_ms.store(0, Ordering::SeqCst);
    let frames = tts
        .synthesize("x")
        .collect(Duration::from_secs(5))
        .await
        .expect("recovered");
    assert_eq!(frames.len(), 50);
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_transport_error() {
    // Bind then drop: a port on which nobody listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let tts = OpenAiTts::new(config(&format!("http://127.0.0.1:{port}"))).expect("client");
    let err = first_error(tts.synthesize("x")).await;
    assert!(matches!(err, SpeechError::Http { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn stt_uploads_a_wav_and_returns_the_text() {
    let (base, fake) = serve().await;
    let stt = OpenAiStt::new(config(&base)).expect("client");
    let stream = stt.open().expect("runtime");
    let (text, confidence) = stream
        .transcribe(vec![Frame::new([100; 160]); 50], Duration::from_secs(5))
        .await
        .expect("transcript");
    assert_eq!(text, "I need to speak with a person.");
    assert_eq!(confidence, 1.0);
    let body = fake.last_body.lock().expect("lock").clone();
    let body_text = String::from_utf8_lossy(&body);
    assert!(body_text.contains("name=\"model\"\r\n\r\nwhisper-1"));
    assert!(body_text.contains("name=\"language\"\r\n\r\nen"));
    // 50 frames × 160 samples × 2 bytes, plus the 44-byte header.
    let riff = body.windows(4).position(|w| w == b"RIFF").expect("wav");
    let data_len = u32::from_le_bytes([
        body[riff + 40],
        body[riff + 41],
        body[riff + 42],
        body[riff + 43],
    ]);
    assert_eq!(data_len, 16_000);
}

#[tokio::test]
async fn stt_server_errors_arrive_as_events() {
    let (base, fake) = serve().await;
    let stt = OpenAiStt::new(config(&base)).expect("client");
    fake.fail(1, 500);
    let mut stream = stt.open().expect("runtime");
    stream
        .audio
        .send(SttInput::Audio(Frame::silence()))
        .await
        .expect("open");
    stream.audio.send(SttInput::Finish).await.expect("open");
    match tokio::time::timeout(Duration::from_secs(5), stream.events.recv())
        .await
        .expect("in time")
    {
        Some(Err(e)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(
        stream.events.recv().await.is_none(),
        "closed after the error"
    );

    fake.fail(1, 400);
    let stream = stt.open().expect("runtime");
    let err = stream
        .transcribe(vec![Frame::silence()], Duration::from_secs(5))
        .await
        .expect_err("400");
    assert!(!err.is_retryable(), "{err}");
    assert!(matches!(
        stt.open().expect("runtime").transcribe(vec![Frame::silence()], Duration::from_secs(5)).await,
        Ok((ref t, _)) if t == "I need to speak with a person."
    ));
}

async fn first_error(mut stream: switchboard_speech::TtsStream) -> SpeechError {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.frames.recv())
            .await
            .expect("in time")
        {
            Some(Err(e)) => return e,
            Some(Ok(_)) => continue,
            None => panic!("stream ended without an error"),
        }
    }
}
