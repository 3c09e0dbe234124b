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
    /// Press these keys all at once (a flood), then wait.
    Keys(String, Duration),
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
    let stt = Arc::new(ScriptStt {
        lines: Mutex::new(heard.iter().map(|s| s.to_string()).collect()),
    });
    let speech = Speech {
        stt,
        tts: Arc::new(WordTts),
        config: EngineConfig::default(),
        llm: None,
    };
    run_call_with(f, mode, speech, steps, control).await
}

/// The providers and tuning of a [`run_call_with`] call.
struct Speech {
    stt: Arc<dyn SpeechToText>,
    tts: Arc<dyn TextToSpeech>,
    config: EngineConfig,
    /// Make the agent's brain the LLM at this endpoint, with these tools.
    llm: Option<(
        switchboard_agent::LlmConfig,
        Vec<switchboard_model::AgentTool>,
    )>,
}

async fn run_call_with(
    f: &Fixture,
    mode: HandoffMode,
    speech: Speech,
    steps: Vec<Step>,
    control: Arc<Control>,
) -> (switchboard_voice::CallReport, usize) {
    let (mut agent, session) = agent_and_call(f, mode).await;
    let mut config = speech.config;
    if let Some((llm, tools)) = speech.llm {
        let mut spec = agent.spec.clone();
        spec.brain = switchboard_model::Brain::Llm;
        spec.tools = tools;
        agent = f.store.update_agent(agent.id, &spec).await.unwrap();
        config.llm = Some(llm);
    }
    let engine = Engine::new(
        f.store.clone(),
        speech.stt,
        speech.tts,
        Arc::new(Notify::new()),
        config,
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
                Step::Keys(keys, pause) => {
                    for key in keys.chars() {
                        let _ = ev_tx.send(LineEvent::Dtmf(key)).await;
                    }
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

/// Fails every turn: odd streams cannot be opened, even ones fail after the
/// audio (as a crashed provider would).
#[derive(Default)]
struct FailingStt {
    opened: Mutex<u32>,
}

impl SpeechToText for FailingStt {
    fn name(&self) -> &str {
        "failing"
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let n = {
            let mut opened = self.opened.lock().unwrap();
            *opened += 1;
            *opened
        };
        if n % 2 == 1 {
            return Err(SpeechError::Closed);
        }
        let (audio_tx, mut audio_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(input) = audio_rx.recv().await {
                if let SttInput::Finish = input {
                    let _ = ev_tx.send(Err(SpeechError::Closed)).await;
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

/// Like [`WordTts`], but any sentence containing `fail` errors after one
/// frame and any containing `hang` never delivers a frame nor ends.
struct FlakyTts {
    fail: &'static str,
    hang: &'static str,
}

impl TextToSpeech for FlakyTts {
    fn name(&self) -> &str {
        "flaky"
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        if text.contains(self.hang) {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            });
            return TtsStream { frames: rx };
        }
        if text.contains(self.fail) {
            let (tx, rx) = mpsc::channel(2);
            let _ = tx.try_send(Ok(square(2000)));
            let _ = tx.try_send(Err(SpeechError::Closed));
            return TtsStream { frames: rx };
        }
        WordTts.synthesize(text)
    }
}

async fn trace_kinds(f: &Fixture) -> Vec<switchboard_model::TraceStep> {
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    f.store.trace_steps(s.id).await.unwrap()
}

async fn ai_said(f: &Fixture) -> Vec<String> {
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    let turns = f.store.turns(s.id).await.unwrap();
    turns
        .iter()
        .filter(|t| t.speaker == Speaker::Ai)
        .map(|t| t.text.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_recognition_apologises_then_hands_off_then_says_goodbye() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let config = EngineConfig::default();
    let call = config.call.clone();
    let speech = Speech {
        stt: Arc::new(FailingStt::default()),
        tts: Arc::new(WordTts),
        config,
        llm: None,
    };
    let (report, _) = run_call_with(
        &f,
        HandoffMode::LiveTransfer,
        speech,
        (0..3).map(|_| Step::Say(secs(1), secs(5))).collect(),
        control.clone(),
    )
    .await;
    let said = ai_said(&f).await;
    assert_eq!(said[1], call.not_heard_reprompt, "{said:?}");
    assert_eq!(said[2], call.stt_failed_message, "{said:?}");
    assert_eq!(said[3], call.stt_failed_farewell, "{said:?}");
    assert_eq!(control.hangups.lock().unwrap().len(), 1, "we hung up");
    assert_eq!(report.outcome, Outcome::LoggedEscalation, "{report:?}");
    assert!(
        control.transfers.lock().unwrap().is_empty(),
        "a logged escalation, even for a live-transfer agent"
    );
    let s = &f.store.list_sessions(&Default::default()).await.unwrap()[0];
    let handoff = f.store.handoff_for_session(s.id).await.unwrap().unwrap();
    assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
    assert_eq!(handoff.reason, "speech recognition is failing");
    let trace = trace_kinds(&f).await;
    let unheard: Vec<&str> = trace
        .iter()
        .filter(|t| t.kind == "unheard")
        .filter_map(|t| t.payload["then"].as_str())
        .collect();
    assert_eq!(
        unheard,
        ["apology", "logged escalation", "hang up"],
        "{trace:?}"
    );
    assert!(trace.iter().all(|t| t.kind != "decision"), "no brain call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hung_synthesis_is_traced_and_the_call_goes_on() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let mut config = EngineConfig::default();
    config.call.tts_stall_timeout = Duration::from_secs(1);
    let speech = Speech {
        stt: Arc::new(ScriptStt {
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
        // The answer fails, the hold message hangs…
        tts: Arc::new(FlakyTts {
            fail: "9 to 5",
            hang: "connect",
        }),
        config,
        llm: None,
    };
    let (report, _) = run_call_with(
        &f,
        HandoffMode::LiveTransfer,
        speech,
        vec![
            Step::Say(secs(1), secs(3)),
            Step::Say(secs(1), secs(6)),
            Step::HangUp,
        ],
        control.clone(),
    )
    .await;
    let trace = trace_kinds(&f).await;
    let errors: Vec<&switchboard_model::TraceStep> =
        trace.iter().filter(|t| t.kind == "speech_error").collect();
    // The failing answer (engine), the hung hold message (machine).
    assert_eq!(errors.len(), 2, "{trace:?}");
    assert!(errors.iter().all(|t| t.payload["provider"] == "tts"));
    // …and the call went on to the transfer all the same.
    assert_eq!(*control.transfers.lock().unwrap(), vec!["+14155550100"]);
    assert_eq!(report.outcome, Outcome::LiveTransfer, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_is_reprompted_then_the_call_ends() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let mut config = EngineConfig::default();
    config.call.reprompt_after = Duration::from_secs(1);
    config.call.max_silence = Duration::from_secs(3);
    let speech = Speech {
        stt: Arc::new(ScriptStt {
            lines: Mutex::new(VecDeque::new()),
        }),
        tts: Arc::new(WordTts),
        config,
        llm: None,
    };
    let (report, _) = run_call_with(
        &f,
        HandoffMode::LiveTransfer,
        speech,
        vec![],
        control.clone(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Abandoned, "{report:?}");
    assert_eq!(report.end_reason, "no response from the caller");
    assert_eq!(control.hangups.lock().unwrap().len(), 1);
    let reprompts: Vec<String> = trace_kinds(&f)
        .await
        .iter()
        .filter(|t| t.kind == "reprompt")
        .map(|t| t.payload["then"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(reprompts.len() >= 2, "{reprompts:?}");
    assert_eq!(reprompts.last().map(String::as_str), Some("hang up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_is_never_sent_to_the_brain() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let mut config = EngineConfig::default();
    config.call.max_silence = Duration::from_secs(12);
    let speech = Speech {
        // The STT hears nothing in the noise.
        stt: Arc::new(ScriptStt {
            lines: Mutex::new(VecDeque::new()),
        }),
        tts: Arc::new(WordTts),
        config: config.clone(),
        llm: None,
    };
    let (report, _) = run_call_with(
        &f,
        HandoffMode::LiveTransfer,
        speech,
        (0..3).map(|_| Step::Say(secs(1), secs(2))).collect(),
        control.clone(),
    )
    .await;
    let said = ai_said(&f).await;
    let apologies = said
        .iter()
        .filter(|t| **t == config.call.not_heard_reprompt)
        .count();
    assert_eq!(apologies, 2, "{said:?}");
    let trace = trace_kinds(&f).await;
    assert_eq!(trace.iter().filter(|t| t.kind == "unheard").count(), 3);
    assert!(trace.iter().all(|t| t.kind != "decision"), "no brain call");
    assert_eq!(report.end_reason, "no response from the caller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtmf_flood_makes_one_brain_call_and_one_trace() {
    let f = fixture().await;
    let control = Arc::new(Control::default());
    let flood: String = "1234567890#".repeat(30);
    let (report, _) = run_call(
        &f,
        HandoffMode::LiveTransfer,
        &[],
        vec![Step::Keys(flood, secs(4)), Step::HangUp],
        control,
    )
    .await;
    let trace = trace_kinds(&f).await;
    let floods = trace
        .iter()
        .filter(|t| t.kind == "input_limit" && t.payload["limit"] == "dtmf_flood")
        .count();
    assert_eq!(floods, 1, "{trace:?}");
    let decisions = trace.iter().filter(|t| t.kind == "decision").count();
    // At most the turn a '#' ended before the flood was recognised, and the
    // flood itself.
    assert!((1..=2).contains(&decisions), "{decisions}: {trace:?}");
    assert_eq!(report.lost_writes, 0);
}

/// A local OpenAI-compatible server: answers each chat request with the next
/// scripted SSE body and records the requests; `/tools/order` is an agent's
/// own HTTP tool and records its arguments.
#[derive(Default)]
struct FakeLlm {
    replies: Mutex<VecDeque<String>>,
    requests: Mutex<Vec<serde_json::Value>>,
    tool_calls: Mutex<Vec<serde_json::Value>>,
}

async fn start_fake_llm(replies: Vec<String>) -> (String, Arc<FakeLlm>) {
    use axum::routing::post;
    let fake = Arc::new(FakeLlm {
        replies: Mutex::new(replies.into()),
        ..Default::default()
    });
    let chat = |axum::extract::State(f): axum::extract::State<Arc<FakeLlm>>,
                axum::Json(body): axum::Json<serde_json::Value>| async move {
        f.requests.lock().unwrap().push(body);
        let reply = f.replies.lock().unwrap().pop_front().unwrap_or_default();
        ([("content-type", "text/event-stream")], reply)
    };
    let order = |axum::extract::State(f): axum::extract::State<Arc<FakeLlm>>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
        f.tool_calls.lock().unwrap().push(body);
        axum::Json(serde_json::json!({ "status": "shipped", "carrier": "UPS" }))
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/tools/order", post(order))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), fake)
}

fn sse_tool_call(id: &str, name: &str, args: &str) -> String {
    let chunks = [
        serde_json::json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [
            { "index": 0, "id": id, "type": "function", "function": { "name": name, "arguments": args } }
        ] } }] }),
        serde_json::json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }] }),
    ];
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

fn sse_text(text: &str) -> String {
    let chunks = [
        serde_json::json!({ "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": null }] }),
        serde_json::json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }),
    ];
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

/// The LLM brain gets the agent's own HTTP tools and `lookup_contact`
/// answered from the store: the model looks the caller up, calls the
/// agent's order tool, and says what it returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_brain_calls_the_agents_own_tools_and_looks_up_the_caller() {
    let f = fixture().await;
    f.store
        .create_contact(
            &switchboard_model::ContactInput {
                phone: "+14155550123".into(),
                name: "Dana Scully".into(),
                email: None,
                external_id: None,
            }
            .validate(Region::default())
            .unwrap(),
        )
        .await
        .unwrap();
    let (base, fake) = start_fake_llm(vec![
        sse_tool_call("c1", "lookup_contact", r#"{"phone":"+14155550123"}"#),
        sse_tool_call("c2", "order_status", r#"{"order_id":"A17"}"#),
        sse_text("Dana, your order A17 has shipped with UPS."),
    ])
    .await;
    let mut llm = switchboard_agent::LlmConfig::new(&format!("{base}/v1"), "fake-model").unwrap();
    llm.turn_timeout = Duration::from_secs(8);
    let tools = vec![switchboard_model::AgentTool {
        name: "order_status".into(),
        description: "Where an order is".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}),
        url: format!("{base}/tools/order"),
        method: "POST".into(),
        timeout_ms: 2000,
    }];
    let speech = Speech {
        stt: Arc::new(ScriptStt {
            lines: Mutex::new(["Where is my order A17?".to_string()].into()),
        }),
        tts: Arc::new(WordTts),
        config: EngineConfig::default(),
        llm: Some((llm, tools)),
    };
    let control = Arc::new(Control::default());
    run_call_with(
        &f,
        HandoffMode::LoggedEscalation,
        speech,
        vec![Step::Say(secs(1), secs(5)), Step::HangUp],
        control,
    )
    .await;

    assert_eq!(
        fake.tool_calls.lock().unwrap().as_slice(),
        [serde_json::json!({"order_id": "A17"})],
        "the agent's tool got the model's arguments"
    );
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let offered: Vec<String> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(offered.contains(&"order_status".to_string()), "{offered:?}");
    assert!(
        offered.contains(&"lookup_contact".to_string()),
        "{offered:?}"
    );
    // The tool results went back to the model.
    let second = requests[1]["messages"].to_string();
    assert!(second.contains("Dana Scully"), "{second}");
    let third = requests[2]["messages"].to_string();
    assert!(third.contains("shipped"), "{third}");
    let said = ai_said(&f).await;
    assert!(
        said.iter().any(|t| t.contains("A17 has shipped")),
        "{said:?}"
    );
}
