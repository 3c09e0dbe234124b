//! Whole calls through the engine in real time (a paused clock would time
//! out the database pool while SQLite works): a virtual line
//! (loud square wave = the caller speaking, zeros = silence), an STT that
//! answers each turn with the caller's scripted words, a TTS that makes two
//! frames per word, the real playbook agent and a real SQLite store.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_media::Frame;
use switchboard_model::{
    AgentInput, HandoffMode, NewSession, Outcome, PreferredChannel, Region, Speaker, Timestamp,
    E164,
};
use switchboard_speech::{
    SpeechError, SpeechToText, SttEvent, SttInput, SttStream, TextToSpeech, TtsStream,
};
use switchboard_store::Store;
use switchboard_voice::{
    CallSetup, Engine, EngineConfig, Line, LineControl, LineEvent, TransferFuture, TransferResult,
};
use tokio::sync::{mpsc, Notify};

const INSTRUCTIONS: &str = "\
You are the receptionist of Acme Dental. Be brief and friendly.

Opening hours: Monday to Friday 9 to 5. Closed on weekends.
";

fn square(amplitude: i16) -> Frame {
    Frame::new(std::array::from_fn(|i| {
        if i % 2 == 0 {
            amplitude
        } else {
            -amplitude
        }
    }))
}

/// Answers each turn with the next scripted sentence.
struct ScriptStt {
    lines: Mutex<VecDeque<String>>,
}

impl SpeechToText for ScriptStt {
    fn name(&self) -> &str {
        "script"
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let (audio_tx, mut audio_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(8);
        let text = self.lines.lock().unwrap().pop_front().unwrap_or_default();
        tokio::spawn(async move {
            while let Some(input) = audio_rx.recv().await {
                if let SttInput::Finish = input {
                    let _ = ev_tx
                        .send(Ok(SttEvent::Final {
                            text,
                            confidence: 0.9,
                        }))
                        .await;
                    return;
                }
            }
        });
        Ok(SttStream {
            audio: audio_tx,
            events: ev_rx,
        })
    }
}

/// Two quiet frames per word, delivered at once.
struct WordTts;

impl TextToSpeech for WordTts {
    fn name(&self) -> &str {
        "words"
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let frames = text.split_whitespace().count() * 2;
        let (tx, rx) = mpsc::channel(frames.max(1));
        for _ in 0..frames {
            let _ = tx.try_send(Ok(square(2000)));
        }
        TtsStream { frames: rx }
    }
}

#[derive(Default)]
struct Control {
    hangups: Mutex<Vec<String>>,
    transfers: Mutex<Vec<String>>,
    transfer_result: Mutex<Option<TransferResult>>,
}

/// The test's handle on what the engine asked of the line.
struct Ctl(Arc<Control>);

impl LineControl for Ctl {
    fn hangup(&self, reason: &str) {
        self.0.hangups.lock().unwrap().push(reason.to_string());
    }

    fn transfer(&self, target: &str) -> TransferFuture {
        self.0.transfers.lock().unwrap().push(target.to_string());
        let result = self
            .0
            .transfer_result
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(TransferResult::Connected);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            result
        })
    }
}

/// What the caller does at each moment of the call, in 20 ms ticks.
enum Step {
    /// Speak (loud audio) for this long, then wait this long in silence.
    Say(Duration, Duration),
    Key(char, Duration),
    HangUp,
}

struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = switchboard_store::testing::sqlite_store(dir.path())
        .await
        .unwrap();
    Fixture { store, _dir: dir }
}

/// The Acme agent in `mode` (handoff number +14155550100) and an inbound
/// session from +14155550123 for it.
async fn agent_and_call(
    f: &Fixture,
    mode: HandoffMode,
) -> (switchboard_model::Agent, switchboard_model::Session) {
    let spec = AgentInput {
        name: "Acme front desk".into(),
        instructions: Some(INSTRUCTIONS.into()),
        handoff_mode: Some(mode),
        handoff_number: Some("+14155550100".into()),
        ..Default::default()
    }
    .validate(Region::default())
    .unwrap();
    let agent = f.store.create_agent(&spec).await.unwrap();
    let session = f
        .store
        .create_session(&NewSession {
            agent_id: Some(agent.id),
            direction: switchboard_model::Direction::Inbound,
            from: "+14155550123".into(),
            to: "+14155550000".into(),
            contact_id: None,
            started_at: Timestamp::from_millis(1_800_000_000_000),
        })
        .await
        .unwrap();
    (agent, session)
}

async fn run_call(
    f: &Fixture,
    mode: HandoffMode,
    heard: &[&str],
    steps: Vec<Step>,
    control: Arc<Control>,
) -> (switchboard_voice::CallReport, usize) {
    let (agent, session) = agent_and_call(f, mode).await;
    let engine = Engine::new(
        f.store.clone(),
        Arc::new(ScriptStt {
            lines: Mutex::new(heard.iter().map(|s| s.to_string()).collect()),
        }),
        Arc::new(WordTts),
        Arc::new(Notify::new()),
        EngineConfig::default(),
    );
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel(2);
    let line = Line {
        events: ev_rx,
        audio_out: out_tx,
        control: Arc::new(Ctl(control)),
    };
    // The caller: one frame in (and one out) per 20 ms, following the steps.
    let caller = tokio::spawn(async move {
        let tick = Duration::from_millis(20);
        let mut played = 0usize;
        // Wait for the greeting to be over.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for step in steps {
            let (speak, pause) = match step {
                Step::Say(speak, pause) => (speak, pause),
                Step::Key(key, pause) => {
                    let _ = ev_tx.send(LineEvent::Dtmf(key)).await;
                    (Duration::ZERO, pause)
                }
                Step::HangUp => {
                    let _ = ev_tx
                        .send(LineEvent::Hangup {
                            reason: "caller hung up".into(),
                        })
                        .await;
                    break;
                }
            };
            let ticks = (speak + pause).as_millis() / tick.as_millis();
            for i in 0..ticks {
                let frame = if i * tick.as_millis() < speak.as_millis() {
                    square(12_000)
                } else {
                    Frame::silence()
                };
                if ev_tx.send(LineEvent::Audio(frame)).await.is_err() {
                    return played;
                }
                while let Ok(f) = out_rx.try_recv() {
                    if !f.is_silence() {
                        played += 1;
                    }
                }
                tokio::time::sleep(tick).await;
            }
        }
        // Keep the line open (silence) until the engine is done with it.
        for _ in 0..3000 {
            if ev_tx
                .send(LineEvent::Audio(Frame::silence()))
                .await
                .is_err()
            {
                break;
            }
            while out_rx.try_recv().is_ok() {
                played += 1;
            }
            tokio::time::sleep(tick).await;
        }
        played
    });
    let report = engine
        .run(
            CallSetup {
                session,
                agent,
                caller_id: Some(E164::parse("+14155550123", Region::default()).unwrap()),
            },
            line,
        )
        .await;
    let played = caller.await.unwrap();
    (report, played)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_question_then_transfers_live() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let (report, played) = run_call(
        &f,
        HandoffMode::LiveTransfer,
        &[
            "What are your opening hours?",
            "I need to speak with a person",
        ],
        vec![
            Step::Say(secs(1), secs(3)),
            Step::Say(secs(1), secs(5)),
            Step::HangUp,
        ],
        control.clone(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::LiveTransfer, "{report:?}");
    assert_eq!(report.lost_writes, 0);
    assert!(played > 0, "the caller heard the AI");
    assert_eq!(*control.transfers.lock().unwrap(), vec!["+14155550100"]);

    let sessions = f.store.list_sessions(&Default::default()).await.unwrap();
    let s = &sessions[0];
    let turns = f.store.turns(s.id).await.unwrap();
    let said: Vec<(Speaker, &str)> = turns.iter().map(|t| (t.speaker, t.text.as_str())).collect();
    assert_eq!(said[0].0, Speaker::Ai, "greeting first: {said:?}");
    assert_eq!(said[1], (Speaker::Caller, "What are your opening hours?"));
    assert!(said[2].1.contains("9 to 5"), "{said:?}");
    assert_eq!(said[3], (Speaker::Caller, "I need to speak with a person"));
    let handoff = f.store.handoff_for_session(s.id).await.unwrap().unwrap();
    assert_eq!(handoff.mode, HandoffMode::LiveTransfer);
    let trace = f.store.trace_steps(s.id).await.unwrap();
    let kinds: Vec<&str> = trace.iter().map(|t| t.kind.as_str()).collect();
    assert!(
        kinds.contains(&"decision") && kinds.contains(&"latency"),
        "{kinds:?}"
    );
    assert!(
        trace
            .iter()
            .any(|t| t.kind == "transfer" && t.payload["status"] == "connected"),
        "{kinds:?}"
    );
    let latency = trace.iter().find(|t| t.kind == "latency").unwrap();
    assert!(latency.latency_ms.is_some());
    assert_eq!(s.status, switchboard_model::SessionStatus::Ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_escalation_captures_a_callback_and_hangs_up() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let (report, _) = run_call(
        &f,
        HandoffMode::LoggedEscalation,
        &[
            "I need to speak with a person",
            "a callback please",
            "yes",
            "yes",
            "yes",
        ],
        (0..5).map(|_| Step::Say(secs(1), secs(4))).collect(),
        control.clone(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::LoggedEscalation, "{report:?}");
    assert_eq!(control.hangups.lock().unwrap().len(), 1, "we hung up");
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    let handoff = f.store.handoff_for_session(s.id).await.unwrap().unwrap();
    assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
    assert_eq!(handoff.preferred_channel, Some(PreferredChannel::Callback));
    assert_eq!(handoff.channel_details.as_deref(), Some("+14155550123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_mid_escalation_still_gets_a_handoff() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let (report, _) = run_call(
        &f,
        HandoffMode::LoggedEscalation,
        &["I need to speak with a person"],
        vec![Step::Say(secs(1), secs(3)), Step::HangUp],
        control.clone(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::LoggedEscalation, "{report:?}");
    assert!(
        control.hangups.lock().unwrap().is_empty(),
        "the caller hung up, not us"
    );
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    let handoff = f.store.handoff_for_session(s.id).await.unwrap().unwrap();
    assert_eq!(handoff.preferred_channel, None);
    assert_eq!(s.end_reason.as_deref(), Some("caller hung up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_the_agent() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let (report, _) = run_call(
        &f,
        HandoffMode::LoggedEscalation,
        &["I need to speak with a person", "", "yes", "yes"],
        vec![
            Step::Say(secs(1), secs(4)),
            Step::Key('3', secs(4)),
            Step::Say(secs(1), secs(4)),
            Step::Say(secs(1), secs(4)),
            Step::Say(secs(1), secs(4)),
        ],
        control,
    )
    .await;
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    let handoff = f.store.handoff_for_session(s.id).await.unwrap().unwrap();
    assert_eq!(
        handoff.preferred_channel,
        Some(PreferredChannel::Callback),
        "{report:?}"
    );
}

/// Two lines joined back to back: what one side plays, the other hears.
/// Both sides get a frame every 20 ms of (paused) tokio time.
fn line_pair() -> (Line, Line, Arc<Control>, Arc<Control>) {
    let (a_ev_tx, a_ev_rx) = mpsc::channel(64);
    let (a_out_tx, mut a_out_rx) = mpsc::channel::<Frame>(2);
    let (b_ev_tx, b_ev_rx) = mpsc::channel(64);
    let (b_out_tx, mut b_out_rx) = mpsc::channel::<Frame>(2);
    let a_control = Arc::new(Control::default());
    let b_control = Arc::new(Control::default());
    let (ac, bc) = (a_control.clone(), b_control.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..30_000 {
            tick.tick().await;
            let a_says = a_out_rx.try_recv().unwrap_or_else(|_| Frame::silence());
            let b_says = b_out_rx.try_recv().unwrap_or_else(|_| Frame::silence());
            let hung_up =
                !ac.hangups.lock().unwrap().is_empty() || !bc.hangups.lock().unwrap().is_empty();
            if hung_up {
                let _ = a_ev_tx
                    .send(LineEvent::Hangup {
                        reason: "the other side hung up".into(),
                    })
                    .await;
                let _ = b_ev_tx
                    .send(LineEvent::Hangup {
                        reason: "the other side hung up".into(),
                    })
                    .await;
                return;
            }
            if a_ev_tx.send(LineEvent::Audio(b_says)).await.is_err()
                || b_ev_tx.send(LineEvent::Audio(a_says)).await.is_err()
            {
                return;
            }
        }
    });
    let a = Line {
        events: a_ev_rx,
        audio_out: a_out_tx,
        control: Arc::new(Ctl(a_control.clone())),
    };
    let b = Line {
        events: b_ev_rx,
        audio_out: b_out_tx,
        control: Arc::new(Ctl(b_control.clone())),
    };
    (a, b, a_control, b_control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_caller_talks_to_the_engine() {
    use switchboard_voice::caller::{run_script, CallerConfig, Step as CallerStep};
    let f = fixture().await;
    let (agent, session) = agent_and_call(&f, HandoffMode::LoggedEscalation).await;
    let engine = Engine::new(
        f.store.clone(),
        Arc::new(ScriptStt {
            lines: Mutex::new(
                [
                    "What are your opening hours?",
                    "I need to speak with a person",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
        }),
        Arc::new(WordTts),
        Arc::new(Notify::new()),
        EngineConfig::default(),
    );
    let (agent_line, caller_line, _, _) = line_pair();
    let agent_side = tokio::spawn(async move {
        engine
            .run(
                CallSetup {
                    session,
                    agent,
                    caller_id: None,
                },
                agent_line,
            )
            .await
    });
    // The caller's own TTS must be loud enough to count as speech.
    struct LoudTts;
    impl TextToSpeech for LoudTts {
        fn name(&self) -> &str {
            "loud"
        }
        fn synthesize(&self, text: &str) -> TtsStream {
            let n = text.split_whitespace().count() * 10;
            let (tx, rx) = mpsc::channel(n.max(1));
            for _ in 0..n {
                let _ = tx.try_send(Ok(square(12_000)));
            }
            TtsStream { frames: rx }
        }
    }
    let report = run_script(
        caller_line,
        vec![
            CallerStep::Say("What are your opening hours?".into()),
            CallerStep::Say("I need to speak with a person".into()),
        ],
        Arc::new(LoudTts),
        None,
        CallerConfig {
            timeout: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .await;
    let call = agent_side.await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.said.len(), 2);
    // Greeting, the answer, and the escalation question at least.
    assert!(report.heard.len() >= 3, "{report:?}");
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    let turns = f.store.turns(s.id).await.unwrap();
    assert!(
        turns
            .iter()
            .any(|t| t.speaker == Speaker::Caller && t.text == "What are your opening hours?"),
        "{turns:?}"
    );
    assert!(call.turns >= 5, "{call:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transfer_falls_back_to_logged_escalation() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    *control.transfer_result.lock().unwrap() = Some(TransferResult::Failed {
        reason: "busy (486)".into(),
    });
    let (report, _) = run_call(
        &f,
        HandoffMode::LiveTransfer,
        &[
            "I need to speak with a person",
            "a callback please",
            "yes",
            "yes",
            "yes",
        ],
        vec![
            Step::Say(secs(1), secs(8)),
            Step::Say(secs(1), secs(4)),
            Step::Say(secs(1), secs(4)),
            Step::Say(secs(1), secs(4)),
            Step::Say(secs(1), secs(4)),
        ],
        control.clone(),
    )
    .await;
    assert_eq!(*control.transfers.lock().unwrap(), vec!["+14155550100"]);
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    let trace = f.store.trace_steps(s.id).await.unwrap();
    assert!(
        trace
            .iter()
            .any(|t| t.kind == "transfer" && t.payload["reason"] == "busy (486)"),
        "{trace:?}"
    );
    let turns = f.store.turns(s.id).await.unwrap();
    assert!(
        turns.iter().any(|t| t.speaker == Speaker::Ai
            && (t.text.contains("email") || t.text.contains("callback"))),
        "the caller is asked how to follow up: {turns:?}"
    );
    // The handoff was created when the transfer started (the rep's
    // conversation appears while we dial); the call then ends as the
    // follow-up dialogue finishes.
    let handoff = f.store.handoff_for_session(s.id).await.unwrap().unwrap();
    assert_eq!(handoff.mode, HandoffMode::LiveTransfer);
    assert_eq!(control.hangups.lock().unwrap().len(), 1, "{report:?}");
}
