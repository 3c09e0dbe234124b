//! The dashboard's browser test call over a real WebSocket against
//! `switchboard serve`: log in, open the call socket as the page does, hear
//! the greeting, press keys, hang up, and find the session, its turns and a
//! stereo recording. (The page itself, with a fake microphone in Chromium,
//! is tested in `e2e/`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Sandbox, Server};
use futures_util::{SinkExt, StreamExt};
use switchboard_model::{SessionId, Speaker};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

/// Sends a raw request and returns (status, headers, body).
fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// Logs in as admin; returns the session cookie (`sb_session=…`).
fn login(addr: SocketAddr) -> String {
    let body = "username=admin&password=correct+horse+battery&next=%2F";
    let (status, head, _) = raw(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 303, "{head}");
    head.lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string()
}

fn get_page(addr: SocketAddr, path: &str, cookie: &str) -> (u16, String) {
    let (status, _, body) = raw(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
    );
    (status, body)
}

fn attr<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let len = html[start..].find('"').unwrap();
    &html[start..start + len]
}

fn tone(n: usize) -> Vec<u8> {
    (0..160)
        .map(|i| ((((n * 160 + i) as f64) * 0.2).sin() * 6000.0) as i16)
        .flat_map(|s| s.to_le_bytes())
        .collect()
}

/// The agent's id, then `serve` (SIP off) started, and a dashboard login.
fn serve_and_log_in(sb: &Sandbox, agent: &str) -> (String, Server, SocketAddr, String) {
    let id = sb.ok(&["agents", "show", agent, "--json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut cmd = sb.cmd(&["serve", "--http", "127.0.0.1:0", "--sip", "off"]);
    cmd.env("SWITCHBOARD_ADMIN_PASSWORD", "correct horse battery");
    let mut server = Server::start(cmd);
    let addr = server.wait_for_dashboard();
    let cookie = login(addr);
    (id, server, addr, cookie)
}

async fn connect(
    addr: SocketAddr,
    cookie: &str,
    ws_path: &str,
    csrf: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{addr}{ws_path}?csrf={csrf}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", format!("http://{addr}").parse().unwrap());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    ws
}

/// What one browser call saw.
struct CallRun {
    session: SessionId,
    ai_turns: Vec<String>,
    caller_turns: Vec<String>,
    audio_frames: usize,
    loud_frames: usize,
    ended: serde_json::Value,
}

/// Drives a call: silence until the greeting is over (speaking over it
/// would be a barge-in), then a second of "speech" (a tone) and a key, then
/// silence until `replies` agent turns after the greeting, then hang up.
async fn run_call(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    replies: usize,
    server: &Server,
) -> CallRun {
    let mut session: Option<SessionId> = None;
    let (mut audio_frames, mut loud_frames, mut sent) = (0usize, 0usize, 0usize);
    let (mut ai_turns, mut caller_turns) = (Vec::new(), Vec::new());
    let mut hung_up = false;
    let mut ended = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while ended.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no end: session {session:?}, {audio_frames} frames, turns {ai_turns:?} {caller_turns:?}\n{}",
            server.stderr()
        );
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    assert_eq!(b.len(), 320);
                    audio_frames += 1;
                    let peak = b.chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]]).unsigned_abs()).max().unwrap();
                    if peak > 1000 { loud_frames += 1; }
                }
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str().unwrap() {
                        "started" => session = Some(v["session_id"].as_str().unwrap().parse().unwrap()),
                        "turn" => {
                            let text = v["text"].as_str().unwrap().to_string();
                            if v["speaker"] == "ai" { ai_turns.push(text) } else { caller_turns.push(text) }
                        }
                        "ended" => ended = Some(v),
                        other => panic!("unexpected message {other}: {t}"),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket closed before the end message"),
            },
            _ = tick.tick() => {
                if ai_turns.is_empty() || (sent > 50 && ai_turns.len() < 1 + replies) {
                    ws.send(Message::Binary(vec![0u8; 320].into())).await.unwrap();
                } else if sent < 50 {
                    ws.send(Message::Binary(tone(sent).into())).await.unwrap();
                    sent += 1;
                } else if sent == 50 {
                    ws.send(Message::Text(r#"{"type":"dtmf","digit":"5"}"#.into())).await.unwrap();
                    sent += 1;
                } else if !hung_up {
                    ws.send(Message::Text(r#"{"type":"hangup"}"#.into())).await.unwrap();
                    hung_up = true;
                }
            }
        }
    }
    CallRun {
        session: session.unwrap(),
        ai_turns,
        caller_turns,
        audio_frames,
        loud_frames,
        ended: ended.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_test_call_talks_to_the_agent_and_lands_in_the_inbox() {
    let sb = Sandbox::new();
    sb.ok(&[
        "agents",
        "add",
        "--name",
        "Front desk",
        "--greeting",
        "Hello from the front desk.",
    ]);
    let (agent, mut server, addr, cookie) = serve_and_log_in(&sb, "Front desk");

    let (status, page) = get_page(addr, &format!("/channels/phone/{agent}/test-call"), &cookie);
    assert_eq!(status, 200);
    let ws_path = attr(&page, "data-ws").to_string();
    let csrf = attr(&page, "data-csrf").to_string();
    assert!(page.contains("Start call"), "{page}");

    // Without the CSRF token, or from another origin, the socket is refused.
    for (query, origin) in [
        (String::new(), format!("http://{addr}")),
        (format!("?csrf={csrf}"), "http://evil.example".to_string()),
    ] {
        let mut req = format!("ws://{addr}{ws_path}{query}")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
    }

    let ws = connect(addr, &cookie, &ws_path, &csrf).await;
    let CallRun {
        session,
        ai_turns,
        loud_frames,
        audio_frames,
        ended,
        ..
    } = run_call(ws, 0, &server).await;
    assert_eq!(ended["reason"], "caller hung up", "{ended}");
    assert!(
        loud_frames > 10,
        "the greeting was heard ({loud_frames} of {audio_frames} frames)"
    );
    assert_eq!(
        ai_turns.first().map(String::as_str),
        Some("Hello from the front desk.")
    );

    // The session is in the store like a phone call's, with a recording.
    let store = sb.store().await;
    let s = store.session(session).await.unwrap();
    assert_eq!(s.from, "browser:admin");
    assert!(s.ended_at.is_some());
    let turns = store.turns(session).await.unwrap();
    assert_eq!(turns[0].speaker, Speaker::Ai);
    let key = s.recording.expect("the call was recorded");
    let wav = hound::WavReader::open(sb.data_dir().join("recordings").join(key)).unwrap();
    assert_eq!((wav.spec().channels, wav.spec().sample_rate), (2, 8000));
    let samples: Vec<i16> = wav.into_samples::<i16>().map(Result::unwrap).collect();
    let left_peak = samples
        .iter()
        .step_by(2)
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap();
    let right_peak = samples
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap();
    assert!(
        left_peak > 3000,
        "the caller's tone is on the left ({left_peak})"
    );
    assert!(
        right_peak > 1000,
        "the greeting is on the right ({right_peak})"
    );

    // The session page opens and the recording is served to the login.
    let (status, _) = get_page(addr, &format!("/inbox/{session}"), &cookie);
    assert_eq!(status, 200);
    assert_eq!(server.terminate(), 0, "{}", server.stderr());
}

/// An agent on Deepgram and ElevenLabs (local fakes speaking their
/// protocols): the dashboard's provider settings reach the call, the cloud
/// transcript drives the brain and the cloud voice speaks; when ElevenLabs
/// fails (503 twice) the call falls back to the offline voice rather than
/// going silent, and the session's trace names the providers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_providers_from_the_settings_serve_the_call_and_fall_back_offline() {
    use switchboard_speech::fake::{FakeDeepgram, FakeElevenLabs, Fault};
    let deepgram = FakeDeepgram::start().await.unwrap();
    deepgram.set_transcript("What are your opening hours?");
    let eleven = FakeElevenLabs::start().await.unwrap();

    let sb = Sandbox::new();
    let agent_json = sb.path().join("agent.json");
    std::fs::write(
        &agent_json,
        serde_json::json!({
            "name": "Cloud desk",
            "greeting": "Hello from the cloud.",
            "instructions": "Opening hours: Monday to Friday, 9 am to 5 pm.\n\nWhere are you? 100 Main Street.\n\nParking: free behind the building.",
            "stt_provider": "deepgram",
            "tts_provider": "elevenlabs",
        })
        .to_string(),
    )
    .unwrap();
    sb.ok(&["agents", "add", "--from-json", agent_json.to_str().unwrap()]);
    let (agent, mut server, addr, cookie) = serve_and_log_in(&sb, "Cloud desk");

    // Settings → Speech & LLM, through the page as a user fills it.
    let (status, page) = get_page(addr, "/settings/providers", &cookie);
    assert_eq!(status, 200);
    assert!(page.contains("Used by: Cloud desk"), "{page}");
    let csrf = attr(&page[page.find("name=\"csrf\"").unwrap()..], "value").to_string();
    let form = format!(
        "csrf={csrf}&deepgram_api_key=dg-test-key&deepgram_base_url={}&elevenlabs_api_key=el-test-key&elevenlabs_voice_id=voice-1&elevenlabs_base_url={}",
        deepgram.base_url().replace(':', "%3A").replace('/', "%2F"),
        eleven.base_url().replace(':', "%3A").replace('/', "%2F"),
    );
    let (status, head, _) = raw(
        addr,
        &format!(
            "POST /settings/providers HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 303, "{head}");
    let (_, page) = get_page(addr, "/settings/providers", &cookie);
    assert!(!page.contains("dg-test-key"), "keys are write-only");
    assert_eq!(page.matches("data-key-state=\"set\"").count(), 2, "{page}");

    // The second sentence (the answer) fails twice on ElevenLabs: the
    // offline voice says it instead.
    let (status, call_page) =
        get_page(addr, &format!("/channels/phone/{agent}/test-call"), &cookie);
    assert_eq!(status, 200);
    let ws = connect(
        addr,
        &cookie,
        attr(&call_page, "data-ws"),
        attr(&call_page, "data-csrf"),
    )
    .await;
    // The greeting is served by ElevenLabs; the answer's sentence is refused.
    let run = {
        // Queue the faults for the requests after the greeting's.
        let fut = run_call(ws, 1, &server);
        tokio::pin!(fut);
        let mut armed = false;
        loop {
            tokio::select! {
                run = &mut fut => break run,
                _ = tokio::time::sleep(Duration::from_millis(50)), if !armed => {
                    if !eleven.requests().is_empty() {
                        let busy = || Fault::Status { status: 503, body: r#"{"detail":{"status":"busy","message":"overloaded"}}"#.into() };
                        eleven.push_fault(busy());
                        eleven.push_fault(busy());
                        armed = true;
                    }
                }
            }
        }
    };
    assert_eq!(
        run.ai_turns.first().map(String::as_str),
        Some("Hello from the cloud.")
    );
    assert!(
        run.ai_turns.iter().any(|t| t.contains("9 am")),
        "the answer came from Deepgram's transcript: {:?} / {:?}",
        run.ai_turns,
        run.caller_turns
    );
    assert_eq!(run.caller_turns, ["What are your opening hours?"]);
    assert!(run.loud_frames > 10, "audio was heard");

    // Deepgram got our key, 8 kHz linear16 and the caller's audio.
    let dg = deepgram.requests();
    assert!(!dg.is_empty());
    assert_eq!(
        dg[0].credentials.as_deref(),
        Some("Token dg-test-key"),
        "{:?}",
        dg[0]
    );
    assert!(
        dg[0].path_and_query.contains("sample_rate=8000"),
        "{:?}",
        dg[0]
    );
    assert!(deepgram.audio_bytes() > 320 * 25);
    // ElevenLabs: the greeting, then the answer tried twice (503), then offline.
    let el = eleven.requests();
    assert!(el.len() >= 3, "{el:?}");
    assert!(
        el[0]
            .path_and_query
            .contains("/v1/text-to-speech/voice-1/stream"),
        "{:?}",
        el[0]
    );
    assert!(
        String::from_utf8_lossy(&el[0].body).contains("Hello from the cloud."),
        "{:?}",
        el[0]
    );

    let store = sb.store().await;
    let trace = store.trace_steps(run.session).await.unwrap();
    let providers = trace
        .iter()
        .find(|t| t.kind == "providers")
        .expect("a providers step");
    assert_eq!(
        providers.payload["stt"], "deepgram>none",
        "{:?}",
        providers.payload
    );
    assert_eq!(
        providers.payload["tts"], "elevenlabs>espeak-ng",
        "{:?}",
        providers.payload
    );
    assert_eq!(server.terminate(), 0, "{}", server.stderr());
}
