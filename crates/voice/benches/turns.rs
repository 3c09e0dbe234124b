//! Voice engine benchmarks (issue 6, "Benchmarks"): whole calls through
//! [`Engine::run`] over an in-memory line, in real time, with a real SQLite
//! store and the real playbook brain.
//!
//! `cargo bench -p switchboard-voice --bench turns [-- SECTION...]`
//!
//! Sections (default: all, in this order):
//!
//! - `overhead` (a): zero-latency fake STT/TTS; end of caller speech → first
//!   audible frame handed to the line, minus the configured end-of-turn
//!   silence: what the engine, machine, brain and store path cost per turn.
//! - `eot` (b): end-of-turn decision time (last voiced caller frame → the
//!   STT is told `Finish`, and → the turn is committed to the brain, from
//!   the machine's latency trace) on plain sentences at the default
//!   `end_of_turn` (250 ms) and at 600 ms, and on digit strings read in
//!   groups with 450 ms pauses, with and without streaming partials:
//!   cut-offs counted (a caller turn in the store that is not the whole
//!   utterance).
//! - `cloud` (d): fake cloud providers at fixed latencies (STT final 150 ms
//!   after `Finish`, TTS first frame 100 ms after the request): overhead on
//!   top of end of turn + provider latency.
//! - `offline` (c): the offline defaults — Whisper tiny.en (`WhisperStt`,
//!   default config) and Piper (`PiperTts`, else espeak-ng) — with caller
//!   audio synthesised by Piper (else espeak-ng): end of caller speech →
//!   first audible frame out, at the default `end_of_turn` (250 ms; 600 ms
//!   too with `BENCH_OFFLINE_600=1`), plus the
//!   machine's own latency trace read back from the store and the WER of
//!   what the engine heard.
//!   `BENCH_VAD=webrtc` runs it with the machine's libfvad detector.
//! - `concurrency` (e): N simultaneous calls sharing one Whisper and one
//!   Piper, each caller saying a sentence every few seconds; latency p50/p90
//!   and unanswered turns vs N (`BENCH_CONCURRENCY=1,2,4,6`).
//! - `tts` (f): TTS time to first frame and first audible frame, espeak-ng
//!   and Piper (sidecar warm; its cold start reported separately).
//! - `memory` (g): VmRSS of this process before/after loading Whisper, the
//!   Piper sidecar's own RSS, and VmRSS growth over N idle calls
//!   (`BENCH_IDLE_CALLS`, default 100) sharing the loaded model.
//!
//! "End of caller speech" is the last caller frame the call machine's VAD
//! (default config) calls voiced — the instant its end-of-turn timer starts
//! from. "First audio out" is the first frame above −40 dBFS the engine hands
//! to the line's `audio_out` (a real media task sends it within the next
//! 20 ms tick). The line is two channels, so telephony is not included.
//!
//! Prints a table and writes `$CARGO_TARGET_DIR/bench/voice-turns.json`.
//! Timing is reported, never asserted.

#![allow(clippy::unwrap_used)] // reason: a benchmark aborts on setup failure

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use switchboard_call::{Config as CallConfig, Vad, VadConfig};
use switchboard_media::{Frame, Level, FRAME_DURATION};
use switchboard_model::{
    Agent, AgentInput, Direction, HandoffMode, NewSession, Region, SessionId, Speaker, Timestamp,
};
use switchboard_speech::{
    EspeakTts, PiperTts, SpeechError, SpeechToText, SttEvent, SttInput, SttStream, TextToSpeech,
    TtsStream, WhisperConfig, WhisperStt, STT_CHANNEL_INPUTS, TTS_CHANNEL_FRAMES,
};
use switchboard_store::Store;
use switchboard_voice::{
    CallSetup, Engine, EngineConfig, Line, LineControl, LineEvent, TransferFuture, TransferResult,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

/// A frame above this is audible (the test caller's default is −35 dBFS).
const AUDIBLE_DBFS: f32 = -40.0;
/// The caller starts talking after this long without audio from the engine.
const QUIET: Duration = Duration::from_millis(500);
/// A turn with no audible reply within this long counts as unanswered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

const GREETING: &str = "Hi, how can I help?";
const INSTRUCTIONS: &str = "\
Q: What are your opening hours?
A: Monday to Friday, nine to five.

Q: Where are you located?
A: Twelve Harbour Street.

Q: Do you take new patients?
A: Yes, we do.

Q: How much is a cleaning?
A: Eighty dollars.
";
const QUESTIONS: [&str; 4] = [
    "What are your opening hours?",
    "Where are you located?",
    "Do you take new patients?",
    "How much is a cleaning?",
];

fn main() -> Result<()> {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut report = Report::default();
        let started = Instant::now();
        if run("overhead") {
            section("overhead", overhead(&mut report)).await;
        }
        if run("eot") {
            section("eot", end_of_turn(&mut report)).await;
        }
        if run("cloud") {
            section("cloud", cloud(&mut report)).await;
        }
        let mut offline_kit: Option<Offline> = None;
        if run("offline") || run("concurrency") || run("memory") {
            match Offline::load(&mut report).await {
                Ok(kit) => offline_kit = Some(kit),
                Err(e) => report.note(format!("offline defaults unavailable: {e:#}")),
            }
        }
        if let Some(kit) = &offline_kit {
            if run("offline") {
                section("offline", offline(&mut report, kit)).await;
            }
            if run("concurrency") {
                section("concurrency", concurrency(&mut report, kit)).await;
            }
        }
        if run("tts") {
            section("tts", tts_first_audio(&mut report)).await;
        }
        if run("memory") {
            if let Some(kit) = &offline_kit {
                section("memory", memory(&mut report, kit)).await;
            }
        }
        report.total_secs = started.elapsed().as_secs_f64();
        report.print();
        report.write("voice-turns.json");
        Ok(())
    })
}

async fn section(name: &str, work: impl std::future::Future<Output = Result<()>>) {
    let t = Instant::now();
    eprintln!("== {name} …");
    match work.await {
        Ok(()) => eprintln!("== {name} done in {:.1} s", t.elapsed().as_secs_f64()),
        Err(e) => eprintln!("== {name} failed: {e:#}"),
    }
}

// ---------------------------------------------------------------------------
// Sections

/// (a) Pipeline overhead with zero-latency fakes, and (b) its end-of-turn
/// decision times on plain sentences at the default end of turn.
async fn overhead(report: &mut Report) -> Result<()> {
    let eot = CallConfig::default().end_of_turn;
    let run = fake_run(
        eot,
        Duration::ZERO,
        Duration::ZERO,
        false,
        3,
        4,
        plain_turns,
    )
    .await?;
    let over: Vec<f64> = run.audible_ms().iter().map(|ms| ms - ms_of(eot)).collect();
    report.row(
        "a overhead",
        "speech end → first audio − end_of_turn (fakes at 0 ms)",
        &over,
        "< 20 ms",
        format!("end_of_turn {} ms; {}", ms_of(eot), run.missing_note()),
    );
    report.row(
        "b end of turn",
        &format!("plain sentence, end_of_turn {} ms (default)", ms_of(eot)),
        &run.eot_ms(),
        "≤ 250 ms median",
        format!("cut off {}/{}", run.cut_offs(), run.samples.len()),
    );
    report.row(
        "b end of turn",
        "  turn committed (machine trace: speech end → ask)",
        &run.committed_ms(),
        "",
        String::new(),
    );
    report.raw("overhead", run.json());
    Ok(())
}

/// (b) End-of-turn decision time at 600 ms (the old default), and on digit
/// strings.
async fn end_of_turn(report: &mut Report) -> Result<()> {
    let slow = Duration::from_millis(600);
    let run = fake_run(
        slow,
        Duration::ZERO,
        Duration::ZERO,
        false,
        2,
        4,
        plain_turns,
    )
    .await?;
    report.row(
        "b end of turn",
        "plain sentence, end_of_turn 600 ms (the old default)",
        &run.eot_ms(),
        "≤ 250 ms median",
        format!("cut off {}/{}", run.cut_offs(), run.samples.len()),
    );
    report.raw("eot_plain_600", run.json());

    let default = CallConfig::default().end_of_turn;
    for (eot, partials, label) in [
        (
            default,
            false,
            "digits, 250 ms (default), no partials (as Whisper)",
        ),
        (
            default,
            true,
            "digits, 250 ms (default), streaming partials",
        ),
        (slow, false, "digits, 600 ms, no partials"),
    ] {
        let run = fake_run(
            eot,
            Duration::ZERO,
            Duration::ZERO,
            partials,
            1,
            3,
            digit_turns,
        )
        .await?;
        report.row(
            "b end of turn",
            label,
            &run.eot_ms(),
            "no cut-off",
            format!(
                "cut off {}/{} (groups of 0.8 s, pauses 450 ms)",
                run.cut_offs(),
                run.samples.len()
            ),
        );
        report.row(
            "b end of turn",
            "  turn committed (machine trace: speech end → ask)",
            &run.committed_ms(),
            "",
            String::new(),
        );
        report.raw(&format!("eot_{label}"), run.json());
    }
    Ok(())
}

/// (d) Fake cloud providers at fixed latencies.
async fn cloud(report: &mut Report) -> Result<()> {
    let eot = CallConfig::default().end_of_turn;
    let (stt_ms, tts_ms) = (150, 100);
    let run = fake_run(
        eot,
        Duration::from_millis(stt_ms),
        Duration::from_millis(tts_ms),
        false,
        2,
        4,
        plain_turns,
    )
    .await?;
    let fixed = ms_of(eot) + stt_ms as f64 + tts_ms as f64;
    let over: Vec<f64> = run.audible_ms().iter().map(|ms| ms - fixed).collect();
    report.row(
        "d cloud fakes",
        "speech end → first audio",
        &run.audible_ms(),
        "",
        format!(
            "end_of_turn {} + STT 150 + TTS 100 = {fixed} ms fixed",
            ms_of(eot)
        ),
    );
    report.row(
        "d cloud fakes",
        "overhead on top of end_of_turn + provider latency",
        &over,
        "< 50 ms",
        run.missing_note(),
    );
    report.raw("cloud", run.json());
    Ok(())
}

/// (c) The offline defaults, end to end.
async fn offline(report: &mut Report, kit: &Offline) -> Result<()> {
    let default = CallConfig::default().end_of_turn.as_millis() as u64;
    let mut ends = vec![default];
    if std::env::var_os("BENCH_OFFLINE_600").is_some() {
        ends.push(600);
    }
    for eot_ms in ends {
        let eot = Duration::from_millis(eot_ms);
        let stt = TimedStt::new(kit.stt.clone());
        let fixture = Fixture::new().await?;
        let engine = kit.engine(&fixture, Arc::new(stt.clone()), eot);
        let mut run = Run::default();
        let mut heard = Vec::new();
        let mut said = Vec::new();
        for call in 0..2 {
            let turns: Vec<Utterance> = (0..3)
                .map(|t| kit.questions[(call * 3 + t) % kit.questions.len()].clone())
                .collect();
            said.extend(turns.iter().map(|u| u.text.clone()));
            let (samples, session) = run_call(&engine, &fixture, turns, None).await?;
            run.samples.extend(samples);
            heard.extend(caller_turns(&fixture.store, session).await?);
            run.traces
                .extend(latency_traces(&fixture.store, session).await?);
        }
        run.stt_log = stt.log();
        let wer = switchboard_speech::text::word_error_rate(&said.join(" "), &heard.join(" "));
        report.row(
            "c offline",
            &format!(
                "speech end → first audio, {} + {}, end_of_turn {eot_ms} ms",
                kit.stt_name, kit.tts_name
            ),
            &run.audible_ms(),
            "p50 < 1.0 s",
            format!(
                "{}; caller turns {} for {} utterances; WER {:.0} %",
                run.missing_note(),
                heard.len(),
                run.samples.len(),
                wer * 100.0
            ),
        );
        report.row(
            "c offline",
            &format!("  of which STT (Finish → final), end_of_turn {eot_ms} ms"),
            &run.stt_ms(),
            "",
            String::new(),
        );
        for key in [
            "speech_end_to_stt_final_ms",
            "stt_final_to_decision_ms",
            "decision_to_first_tts_ms",
            "first_tts_to_first_play_ms",
            "speech_end_to_first_play_ms",
        ] {
            let v: Vec<f64> = run
                .traces
                .iter()
                .filter_map(|t| t.get(key).and_then(Value::as_f64))
                .collect();
            report.row(
                "c offline",
                &format!("  machine trace {key}"),
                &v,
                "",
                String::new(),
            );
        }
        let mut j = run.json();
        j["heard"] = json!(heard);
        j["said"] = json!(said);
        j["wer"] = json!(wer);
        report.raw(&format!("offline_{eot_ms}"), j);
    }
    Ok(())
}

/// (e) N simultaneous calls on one Whisper and one Piper.
async fn concurrency(report: &mut Report, kit: &Offline) -> Result<()> {
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 6]);
    for n in levels {
        let stt = TimedStt::new(kit.stt.clone());
        let fixture = Arc::new(Fixture::new().await?);
        let engine = kit.engine(
            &fixture,
            Arc::new(stt.clone()),
            CallConfig::default().end_of_turn,
        );
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..n {
            let engine = engine.clone();
            let fixture = fixture.clone();
            let turns: Vec<Utterance> = (0..3)
                .map(|t| kit.questions[(i + t) % kit.questions.len()].clone())
                .collect();
            // Stagger the calls over 3 s so turns do not line up by construction.
            let delay = Duration::from_millis(3000 * i as u64 / n as u64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                run_call(&engine, &fixture, turns, None).await
            }));
        }
        let mut run = Run::default();
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(90), t).await {
                Ok(Ok(Ok((samples, _)))) => run.samples.extend(samples),
                other => report.note(format!("concurrency {n}: a call failed: {other:?}")),
            }
        }
        run.stt_log = stt.log();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        report.row(
            "e concurrency",
            &format!(
                "{n} calls: speech end → first audio ({} ms eot)",
                ms_of(CallConfig::default().end_of_turn)
            ),
            &run.audible_ms(),
            "",
            format!(
                "{}; STT p50 {:.0} ms; process CPU {:.0} % of 2 cores",
                run.missing_note(),
                percentile(&run.stt_ms(), 50.0),
                100.0 * cpu / wall / 2.0
            ),
        );
        report.raw(&format!("concurrency_{n}"), run.json());
    }
    Ok(())
}

/// (f) TTS time to first audio.
async fn tts_first_audio(report: &mut Report) -> Result<()> {
    let texts = [
        "Hello.",
        "We are open Monday to Friday, nine to five.",
        "Thanks for calling. We are open Monday to Friday, nine to five. Is there anything else I can help you with today?",
    ];
    let mut providers: Vec<(String, Arc<dyn TextToSpeech>)> = Vec::new();
    let espeak = EspeakTts::default();
    match espeak.check().await {
        Ok(_) => providers.push(("espeak-ng".into(), Arc::new(espeak))),
        Err(e) => report.note(format!("espeak-ng unavailable: {e}")),
    }
    let piper = PiperTts::default();
    let t = Instant::now();
    match piper.start().await {
        Ok(_) => {
            report.row(
                "f tts",
                "piper sidecar cold start (voice load)",
                &[t.elapsed().as_secs_f64() * 1000.0],
                "",
                "once per server".into(),
            );
            providers.push(("piper".into(), Arc::new(piper)));
        }
        Err(e) => report.note(format!("piper unavailable: {e}")),
    }
    for (name, tts) in providers {
        for (i, text) in texts.iter().enumerate() {
            let mut first = Vec::new();
            let mut audible = Vec::new();
            let mut total = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let mut stream = tts.synthesize(text);
                let mut got_first = false;
                let mut got_audible = false;
                while let Some(frame) = stream.frames.recv().await {
                    let Ok(frame) = frame else { break };
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    if !got_first {
                        got_first = true;
                        first.push(ms);
                    }
                    if !got_audible && Level::of(&frame).is_above(AUDIBLE_DBFS) {
                        got_audible = true;
                        audible.push(ms);
                    }
                }
                total.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let label = ["short", "one sentence", "three sentences"][i];
            report.row(
                "f tts",
                &format!("{name}, {label}: first frame"),
                &first,
                if name == "espeak-ng" {
                    "< 20 ms"
                } else {
                    "0.1–0.2 s"
                },
                String::new(),
            );
            report.row(
                "f tts",
                &format!("{name}, {label}: first audible frame"),
                &audible,
                "",
                format!("whole utterance p50 {:.0} ms", percentile(&total, 50.0)),
            );
        }
    }
    Ok(())
}

/// (g) Memory per call with the models loaded once.
async fn memory(report: &mut Report, kit: &Offline) -> Result<()> {
    let n: usize = std::env::var("BENCH_IDLE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // Instant greeting: the calls must be idle, not queued at the sidecar.
    let fixture = Arc::new(Fixture::new().await?);
    let engine = Engine::new(
        fixture.store.clone(),
        Arc::new(kit.stt.clone()),
        Arc::new(FakeTts::new(Duration::ZERO)),
        Arc::new(Notify::new()),
        EngineConfig::default(),
    );
    // Warm up allocator and store with one short call.
    idle_calls(&engine, &fixture, 1, Duration::from_secs(1)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    let (during, after) = {
        let stop = Arc::new(Notify::new());
        let handles = start_idle_calls(&engine, &fixture, n, stop.clone()).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let during = rss_kib();
        stop.notify_waiters();
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(20), h).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        (during, rss_kib())
    };
    let per_call = (during.saturating_sub(before)) as f64 / n as f64;
    report.row(
        "g memory",
        &format!("VmRSS growth per idle call ({n} calls, KiB)"),
        &[per_call],
        "",
        format!(
            "before {} MiB, during {} MiB, after hangup {} MiB; includes the in-memory line and its caller task",
            before / 1024,
            during / 1024,
            after / 1024
        ),
    );
    report.raw(
        "memory",
        json!({
            "idle_calls": n,
            "rss_before_kib": before,
            "rss_during_kib": during,
            "rss_after_kib": after,
            "per_call_kib": per_call,
            "whisper_load_kib": kit.whisper_rss_kib,
            "piper_sidecar_kib": kit.piper_rss_kib().await,
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Calls over an in-memory line

/// What the caller says in one turn.
#[derive(Clone)]
struct Utterance {
    frames: Vec<Frame>,
    /// The last frame the call machine's VAD calls voiced.
    last_voiced: usize,
    /// What a perfect STT would hear (the fakes report it).
    text: String,
    /// (frame index, transcript so far): a streaming STT's partials.
    marks: Vec<(usize, String)>,
}

/// One caller turn as the caller measured it.
#[derive(Debug, Clone)]
struct Sample {
    speech_start: Instant,
    speech_end: Instant,
    first_out: Option<Instant>,
    first_audible: Option<Instant>,
}

/// The samples of a section and the STT's view of them.
#[derive(Default)]
struct Run {
    samples: Vec<Sample>,
    stt_log: Vec<SttMark>,
    traces: Vec<Value>,
    /// What the callers said, and the caller turns the store recorded.
    said: Vec<String>,
    heard: Vec<String>,
}

impl Run {
    fn audible_ms(&self) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|s| s.first_audible.map(|t| ms_between(s.speech_end, t)))
            .collect()
    }

    fn missing(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| s.first_audible.is_none())
            .count()
    }

    fn missing_note(&self) -> String {
        format!("unanswered {}/{}", self.missing(), self.samples.len())
    }

    /// Utterances not recorded whole as one caller turn: the machine cut
    /// the caller off (a `Finish` during a pause is fine when the turn is
    /// held and continued).
    fn cut_offs(&self) -> usize {
        let mut heard = self.heard.clone();
        self.said
            .iter()
            .filter(|said| match heard.iter().position(|h| h == *said) {
                Some(i) => {
                    heard.remove(i);
                    false
                }
                None => true,
            })
            .count()
    }

    /// The machine's own speech end → the turn asked of the brain.
    fn committed_ms(&self) -> Vec<f64> {
        self.traces
            .iter()
            .filter_map(|t| t.get("speech_end_to_stt_final_ms").and_then(Value::as_f64))
            .collect()
    }

    /// Last voiced frame → the STT told `Finish` (the first one after it).
    fn eot_ms(&self) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|s| {
                self.stt_log
                    .iter()
                    .map(|m| m.finish)
                    .filter(|f| *f >= s.speech_end)
                    .min()
                    .map(|f| ms_between(s.speech_end, f))
            })
            .collect()
    }

    fn stt_ms(&self) -> Vec<f64> {
        self.stt_log
            .iter()
            .filter_map(|m| m.final_at.map(|f| ms_between(m.finish, f)))
            .collect()
    }

    fn json(&self) -> Value {
        let audible = self.audible_ms();
        let first: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|s| s.first_out.map(|t| ms_between(s.speech_end, t)))
            .collect();
        json!({
            "turns": self.samples.len(),
            "unanswered": self.missing(),
            "cut_offs": self.cut_offs(),
            "speech_end_to_first_audible_ms": audible,
            "speech_end_to_first_frame_ms": first,
            "end_of_turn_decision_ms": self.eot_ms(),
            "stt_ms": self.stt_ms(),
            "machine_latency_traces": self.traces,
        })
    }
}

struct Fixture {
    store: Store,
    agent: Agent,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let store = switchboard_store::testing::sqlite_store(dir.path()).await?;
        let spec = AgentInput {
            name: "Acme Dental".into(),
            greeting: Some(GREETING.into()),
            instructions: Some(INSTRUCTIONS.into()),
            handoff_mode: Some(HandoffMode::LoggedEscalation),
            max_concurrent_calls: Some(10_000),
            ..Default::default()
        }
        .validate(Region::default())?;
        let agent = store.create_agent(&spec).await?;
        Ok(Fixture {
            store,
            agent,
            _dir: dir,
        })
    }

    async fn setup(&self) -> Result<CallSetup> {
        let session = self
            .store
            .create_session(&NewSession {
                agent_id: Some(self.agent.id),
                direction: Direction::Inbound,
                from: "+14155550123".into(),
                to: "+14155550000".into(),
                contact_id: None,
                started_at: Timestamp::from_millis(1_800_000_000_000),
            })
            .await?;
        Ok(CallSetup {
            session,
            agent: self.agent.clone(),
            caller_id: None,
        })
    }
}

/// The line's verbs: the bench only needs to know we hung up.
struct Control(Arc<AtomicBool>);

impl LineControl for Control {
    fn hangup(&self, _reason: &str) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn transfer(&self, _target: &str) -> TransferFuture {
        Box::pin(async {
            TransferResult::Failed {
                reason: "no transfers in the bench".into(),
            }
        })
    }
}

struct Wire {
    events: mpsc::Sender<LineEvent>,
    audio: mpsc::Receiver<Frame>,
    hung_up: Arc<AtomicBool>,
}

fn line() -> (Line, Wire) {
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(2);
    let hung_up = Arc::new(AtomicBool::new(false));
    (
        Line {
            events: ev_rx,
            audio_out: out_tx,
            control: Arc::new(Control(hung_up.clone())),
        },
        Wire {
            events: ev_tx,
            audio: out_rx,
            hung_up,
        },
    )
}

/// One call: the engine on one side, a scripted caller on the other. The
/// caller waits for the engine to be quiet, says the next utterance (one
/// frame per 20 ms), waits for the reply, and hangs up after the last one.
async fn run_call(
    engine: &Engine,
    fixture: &Fixture,
    turns: Vec<Utterance>,
    said: Option<watch::Sender<String>>,
) -> Result<(Vec<Sample>, SessionId)> {
    let setup = fixture.setup().await?;
    let session = setup.session.id;
    let (line, wire) = line();
    let engine = engine.clone();
    let call = tokio::spawn(async move { engine.run(setup, line).await });
    let samples = caller(wire, turns, said).await;
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .context("the engine did not end the call")??;
    Ok((samples, session))
}

async fn caller(
    mut wire: Wire,
    turns: Vec<Utterance>,
    said: Option<watch::Sender<String>>,
) -> Vec<Sample> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(FRAME_DURATION);
    let mut last_out: Option<Instant> = None;
    let mut turns = turns.into_iter();
    let mut speaking: Option<(Utterance, usize, Sample)> = None;
    let mut awaiting: Option<Sample> = None;
    let mut samples = Vec::new();
    let mut done = false;
    loop {
        tokio::select! {
            biased;
            frame = wire.audio.recv() => {
                let Some(frame) = frame else { break };
                let now = Instant::now();
                last_out = Some(now);
                if let Some(s) = awaiting.as_mut() {
                    s.first_out.get_or_insert(now);
                    if Level::of(&frame).is_above(AUDIBLE_DBFS) {
                        s.first_audible = Some(now);
                        samples.extend(awaiting.take());
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let mut frame = Frame::silence();
                if let Some((utt, idx, sample)) = speaking.as_mut() {
                    frame = utt.frames[*idx].clone();
                    if let Some(said) = &said {
                        for (at, text) in &utt.marks {
                            if *at == *idx {
                                said.send_replace(text.clone());
                            }
                        }
                    }
                    if *idx == 0 {
                        sample.speech_start = now;
                    }
                    if *idx == utt.last_voiced {
                        sample.speech_end = now;
                    }
                    *idx += 1;
                }
                if done || wire.hung_up.load(Ordering::SeqCst) {
                    break;
                }
                if wire.events.send(LineEvent::Audio(frame)).await.is_err() {
                    break;
                }
                if speaking.as_ref().is_some_and(|(u, i, _)| *i >= u.frames.len()) {
                    awaiting = speaking.take().map(|(_, _, s)| s);
                }
                if awaiting.as_ref().is_some_and(|s| now.duration_since(s.speech_end) > REPLY_TIMEOUT) {
                    samples.extend(awaiting.take());
                }
                if speaking.is_none() && awaiting.is_none() {
                    let quiet = match last_out {
                        Some(t) => now.duration_since(t) >= QUIET,
                        None => now.duration_since(started) >= Duration::from_secs(5),
                    };
                    if quiet {
                        match turns.next() {
                            Some(utt) => {
                                let sample = Sample {
                                    speech_start: now,
                                    speech_end: now,
                                    first_out: None,
                                    first_audible: None,
                                };
                                speaking = Some((utt, 0, sample));
                            }
                            None => {
                                let _ = wire
                                    .events
                                    .send(LineEvent::Hangup { reason: "caller hung up".into() })
                                    .await;
                                done = true;
                            }
                        }
                    }
                }
            }
        }
    }
    samples.extend(awaiting.take());
    samples
}

/// Starts `n` calls whose callers send silence until `stop`.
async fn start_idle_calls(
    engine: &Engine,
    fixture: &Arc<Fixture>,
    n: usize,
    stop: Arc<Notify>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let setup = fixture.setup().await?;
        let (line, mut wire) = line();
        let engine = engine.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let call = tokio::spawn(async move { engine.run(setup, line).await });
            let mut tick = tokio::time::interval(FRAME_DURATION);
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    f = wire.audio.recv() => if f.is_none() { break },
                    _ = tick.tick() => {
                        if wire.events.send(LineEvent::Audio(Frame::silence())).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = wire
                .events
                .send(LineEvent::Hangup {
                    reason: "caller hung up".into(),
                })
                .await;
            drop(wire);
            let _ = call.await;
        }));
    }
    Ok(handles)
}

async fn idle_calls(
    engine: &Engine,
    fixture: &Arc<Fixture>,
    n: usize,
    hold: Duration,
) -> Result<()> {
    let stop = Arc::new(Notify::new());
    let handles = start_idle_calls(engine, fixture, n, stop.clone()).await?;
    tokio::time::sleep(hold).await;
    stop.notify_waiters();
    for h in handles {
        let _ = h.await;
    }
    Ok(())
}

/// A section's calls with fake providers: `calls` sequential calls of
/// `turns_per_call` turns each.
async fn fake_run(
    end_of_turn: Duration,
    stt_latency: Duration,
    tts_latency: Duration,
    partials: bool,
    calls: usize,
    turns_per_call: usize,
    script: fn(usize) -> Vec<Utterance>,
) -> Result<Run> {
    let fixture = Fixture::new().await?;
    let (said_tx, said_rx) = watch::channel(String::new());
    let stt = FakeStt {
        latency: stt_latency,
        partials: partials.then_some(Duration::from_millis(150)),
        said: said_rx,
        log: Arc::default(),
    };
    let config = EngineConfig {
        call: CallConfig {
            end_of_turn,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::new(
        fixture.store.clone(),
        Arc::new(stt.clone()),
        Arc::new(FakeTts::new(tts_latency)),
        Arc::new(Notify::new()),
        config,
    );
    let mut run = Run::default();
    for _ in 0..calls {
        let turns = script(turns_per_call);
        run.said.extend(turns.iter().map(|u| u.text.clone()));
        let (samples, session) = run_call(&engine, &fixture, turns, Some(said_tx.clone())).await?;
        run.heard
            .extend(caller_turns(&fixture.store, session).await?);
        run.samples.extend(samples);
        run.traces
            .extend(latency_traces(&fixture.store, session).await?);
    }
    run.stt_log = stt.log.lock().unwrap().clone();
    Ok(run)
}

fn plain_turns(n: usize) -> Vec<Utterance> {
    (0..n)
        .map(|i| {
            let text = QUESTIONS[i % QUESTIONS.len()];
            // ~1.2 s of loud "speech" for a short question.
            let frames = vec![square(12_000); 60];
            Utterance {
                last_voiced: frames.len() - 1,
                marks: vec![(0, String::new()), (frames.len() - 1, text.into())],
                frames,
                text: text.into(),
            }
        })
        .collect()
}

/// "my number is 415 555 0123", in three groups of 0.8 s with 450 ms pauses.
fn digit_turns(n: usize) -> Vec<Utterance> {
    let groups = ["four one five", "five five five", "zero one two three"];
    (0..n)
        .map(|_| {
            let mut frames = Vec::new();
            let mut marks = vec![(0, String::new())];
            let mut text = String::from("my number is");
            for (g, words) in groups.iter().enumerate() {
                frames.extend(std::iter::repeat_n(square(12_000), 40));
                text.push(' ');
                text.push_str(words);
                marks.push((frames.len() - 1, text.clone()));
                if g + 1 < groups.len() {
                    frames.extend(std::iter::repeat_n(Frame::silence(), 22));
                }
            }
            Utterance {
                last_voiced: frames.len() - 1,
                frames,
                text,
                marks,
            }
        })
        .collect()
}

fn square(amplitude: i16) -> Frame {
    Frame::new(std::array::from_fn(|i| {
        if i % 2 == 0 {
            amplitude
        } else {
            -amplitude
        }
    }))
}

/// Real speech as the caller's words: trailing silence cut after the last
/// frame the machine's VAD calls voiced.
fn speech(frames: Vec<Frame>, text: &str) -> Option<Utterance> {
    let mut vad = Vad::new(VadConfig::default());
    for _ in 0..25 {
        vad.process(Level::of(&Frame::silence()));
    }
    let last = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| vad.process(Level::of(f)).voiced)
        .map(|(i, _)| i)
        .last()?;
    let mut frames = frames;
    frames.truncate(last + 1);
    Some(Utterance {
        last_voiced: last,
        frames,
        text: text.into(),
        marks: vec![(0, text.into())],
    })
}

async fn latency_traces(store: &Store, session: SessionId) -> Result<Vec<Value>> {
    Ok(store
        .trace_steps(session)
        .await?
        .into_iter()
        .filter(|t| t.kind == "latency")
        .map(|t| t.payload)
        .collect())
}

async fn caller_turns(store: &Store, session: SessionId) -> Result<Vec<String>> {
    Ok(store
        .turns(session)
        .await?
        .into_iter()
        .filter(|t| t.speaker == Speaker::Caller)
        .map(|t| t.text)
        .collect())
}

// ---------------------------------------------------------------------------
// Providers

/// When the STT was told a turn ended, and when it answered.
#[derive(Debug, Clone)]
struct SttMark {
    finish: Instant,
    final_at: Option<Instant>,
}

type SttLog = Arc<Mutex<Vec<SttMark>>>;

fn mark_finish(log: &SttLog) -> usize {
    let mut log = log.lock().unwrap();
    log.push(SttMark {
        finish: Instant::now(),
        final_at: None,
    });
    log.len() - 1
}

fn mark_final(log: &SttLog, i: usize) {
    if let Some(m) = log.lock().unwrap().get_mut(i) {
        m.final_at = Some(Instant::now());
    }
}

/// A streaming STT fake: reports what the caller said (shared through a
/// watch), `latency` after `Finish`; with `partials`, a partial that long
/// after each change of what the caller has said so far.
#[derive(Clone)]
struct FakeStt {
    latency: Duration,
    partials: Option<Duration>,
    said: watch::Receiver<String>,
    log: SttLog,
}

impl SpeechToText for FakeStt {
    fn name(&self) -> &str {
        "fake"
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let (audio_tx, mut audio_rx) = mpsc::channel(STT_CHANNEL_INPUTS);
        let (ev_tx, ev_rx) = mpsc::channel(8);
        let mut said = self.said.clone();
        said.mark_unchanged();
        // A stream hears only its own audio: what was said before it opened
        // (the first groups of a number) belongs to earlier streams.
        let before = said.borrow().clone();
        let own = move |text: &str| -> String {
            match text.strip_prefix(before.as_str()) {
                Some(rest) if !before.is_empty() => rest.trim().to_string(),
                _ => text.to_string(),
            }
        };
        let (latency, partials, log) = (self.latency, self.partials, self.log.clone());
        tokio::spawn(async move {
            let mut watching = partials.is_some();
            loop {
                tokio::select! {
                    input = audio_rx.recv() => match input {
                        Some(SttInput::Audio(_)) => {}
                        Some(SttInput::Finish) => {
                            let i = mark_finish(&log);
                            if !latency.is_zero() {
                                tokio::time::sleep(latency).await;
                            }
                            let text = own(&said.borrow());
                            mark_final(&log, i);
                            let _ = ev_tx.send(Ok(SttEvent::Final { text, confidence: 0.9 })).await;
                            return;
                        }
                        None => return,
                    },
                    changed = said.changed(), if watching => {
                        if changed.is_err() {
                            watching = false;
                            continue;
                        }
                        let text = own(&said.borrow_and_update());
                        let ev_tx = ev_tx.clone();
                        let delay = partials.unwrap_or_default();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = ev_tx.send(Ok(SttEvent::Partial { text })).await;
                        });
                    }
                }
            }
        });
        Ok(SttStream {
            audio: audio_tx,
            events: ev_rx,
        })
    }
}

/// Wraps a real STT to log when each turn was finished and answered.
#[derive(Clone)]
struct TimedStt {
    inner: Arc<dyn SpeechToText>,
    log: SttLog,
}

impl TimedStt {
    fn new(inner: impl SpeechToText) -> TimedStt {
        TimedStt {
            inner: Arc::new(inner),
            log: Arc::default(),
        }
    }

    fn log(&self) -> Vec<SttMark> {
        self.log.lock().unwrap().clone()
    }
}

impl SpeechToText for TimedStt {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let SttStream { audio, mut events } = self.inner.open()?;
        let (audio_tx, mut audio_rx) = mpsc::channel(STT_CHANNEL_INPUTS);
        let (ev_tx, ev_rx) = mpsc::channel(8);
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut finished = None;
            let mut feeding = true;
            loop {
                tokio::select! {
                    input = audio_rx.recv(), if feeding => match input {
                        Some(input) => {
                            if matches!(input, SttInput::Finish) {
                                finished = Some(mark_finish(&log));
                            }
                            let _ = audio.send(input).await;
                        }
                        None => feeding = false,
                    },
                    ev = events.recv() => match ev {
                        Some(ev) => {
                            if let (Ok(SttEvent::Final { .. }) | Err(_), Some(i)) = (&ev, finished) {
                                mark_final(&log, i);
                            }
                            if ev_tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                }
            }
        });
        Ok(SttStream {
            audio: audio_tx,
            events: ev_rx,
        })
    }
}

/// A TTS fake: the first frame `latency` after the request, then two loud
/// frames per word at once.
struct FakeTts {
    latency: Duration,
}

impl FakeTts {
    fn new(latency: Duration) -> FakeTts {
        FakeTts { latency }
    }
}

impl TextToSpeech for FakeTts {
    fn name(&self) -> &str {
        "fake"
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let frames = (text.split_whitespace().count() * 2).max(1);
        let (tx, rx) = mpsc::channel(TTS_CHANNEL_FRAMES);
        let latency = self.latency;
        tokio::spawn(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            for _ in 0..frames {
                if tx.send(Ok(square(3_000))).await.is_err() {
                    return;
                }
            }
        });
        TtsStream { frames: rx }
    }
}

/// The offline defaults, loaded once for every section that needs them.
struct Offline {
    stt: WhisperStt,
    stt_name: String,
    tts: Arc<dyn TextToSpeech>,
    tts_name: String,
    piper: Option<PiperTts>,
    questions: Vec<Utterance>,
    whisper_rss_kib: u64,
}

impl Offline {
    async fn load(report: &mut Report) -> Result<Offline> {
        let before = rss_kib();
        let t = Instant::now();
        let stt = WhisperStt::load(WhisperConfig::default()).await?;
        let load_ms = t.elapsed().as_secs_f64() * 1000.0;
        let whisper_rss_kib = rss_kib().saturating_sub(before);
        report.row(
            "g memory",
            "Whisper tiny.en load: time (ms)",
            &[load_ms],
            "",
            format!(
                "VmRSS +{} MiB, shared by every call",
                whisper_rss_kib / 1024
            ),
        );
        let piper = PiperTts::default();
        let (tts, tts_name, piper): (Arc<dyn TextToSpeech>, String, Option<PiperTts>) =
            match piper.start().await {
                Ok(_) => (Arc::new(piper.clone()), "piper".into(), Some(piper)),
                Err(e) => {
                    report.note(format!("piper unavailable ({e}); using espeak-ng"));
                    (Arc::new(EspeakTts::default()), "espeak-ng".into(), None)
                }
            };
        let mut questions = Vec::new();
        for q in QUESTIONS {
            let frames = tts
                .synthesize(q)
                .collect(Duration::from_secs(30))
                .await
                .with_context(|| format!("synthesising the caller's {q:?}"))?;
            questions.extend(speech(frames, q));
        }
        anyhow::ensure!(
            !questions.is_empty(),
            "no caller speech could be synthesised"
        );
        Ok(Offline {
            stt_name: format!("whisper ({})", stt.model_dir().display()),
            stt,
            tts,
            tts_name,
            piper,
            questions,
            whisper_rss_kib,
        })
    }

    fn engine(
        &self,
        fixture: &Fixture,
        stt: Arc<dyn SpeechToText>,
        end_of_turn: Duration,
    ) -> Engine {
        // `BENCH_VAD=webrtc`: the machine hears the caller through libfvad
        // (real speech only: the fake sections' tones are noise to it).
        let vad = match std::env::var("BENCH_VAD").as_deref() {
            Ok("webrtc") => VadConfig::webrtc(),
            _ => VadConfig::default(),
        };
        let config = EngineConfig {
            call: CallConfig {
                end_of_turn,
                vad,
                ..Default::default()
            },
            ..Default::default()
        };
        Engine::new(
            fixture.store.clone(),
            stt,
            self.tts.clone(),
            Arc::new(Notify::new()),
            config,
        )
    }

    async fn piper_rss_kib(&self) -> Option<u64> {
        let pid = self.piper.as_ref()?.sidecar_pid().await?;
        rss_of(&format!("/proc/{pid}/status"))
    }
}

// ---------------------------------------------------------------------------
// Measurement helpers and the report

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn rss_of(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rss_kib() -> u64 {
    rss_of("/proc/self/status").unwrap_or(0)
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based): 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    raw: BTreeMap<String, Value>,
    total_secs: f64,
}

struct Row {
    section: String,
    metric: String,
    n: usize,
    p50: f64,
    p90: f64,
    target: String,
    note: String,
}

impl Report {
    fn row(&mut self, section: &str, metric: &str, values: &[f64], target: &str, note: String) {
        self.rows.push(Row {
            section: section.into(),
            metric: metric.into(),
            n: values.len(),
            p50: percentile(values, 50.0),
            p90: percentile(values, 90.0),
            target: target.into(),
            note,
        });
    }

    fn note(&mut self, note: String) {
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    fn raw(&mut self, key: &str, value: Value) {
        self.raw.insert(key.into(), value);
    }

    fn print(&self) {
        println!();
        println!(
            "{:<14} {:<62} {:>4} {:>9} {:>9}  {:<16} note",
            "section", "metric", "n", "p50", "p90", "target"
        );
        for r in &self.rows {
            println!(
                "{:<14} {:<62} {:>4} {:>9.1} {:>9.1}  {:<16} {}",
                r.section, r.metric, r.n, r.p50, r.p90, r.target, r.note
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        println!(
            "(times in ms unless stated; {:.0} s in all)",
            self.total_secs
        );
    }

    fn write(&self, name: &str) {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "section": r.section, "metric": r.metric, "n": r.n,
                    "p50": finite(r.p50), "p90": finite(r.p90),
                    "target": r.target, "note": r.note,
                })
            })
            .collect();
        let doc = json!({
            "bench": "voice-turns",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "total_secs": self.total_secs,
            "rows": rows,
            "notes": self.notes,
            "raw": self.raw,
        });
        let dir = std::env::var("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::path::PathBuf::from("target"))
            .join("bench");
        let path = dir.join(name);
        match std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default())
        }) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}
