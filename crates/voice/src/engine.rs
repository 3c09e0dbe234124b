//! The per-call driver: one [`Call`] machine fed from a [`Line`], speech
//! providers and the brain, its outputs executed and written to the store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use switchboard_agent::{
    AgentTurn, EndReason as AgentEnd, HandoffRequest, LlmAgent, LlmConfig, LlmEvent, PlaybookAgent,
};
use switchboard_call::{
    Call, Config as CallConfig, EndReason, Generation, Input, Output, SttEvent, TraceKind,
    TransferResult as CallTransfer,
};
use switchboard_media::Frame;
use switchboard_model::{
    Agent, HandoffInput, HandoffMode, Outcome, PreferredChannel, Session, Timestamp, E164,
};
use switchboard_speech::{SpeechToText, SttInput, SttStream, TextToSpeech, TtsStream};
use switchboard_store::Store;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::brain::{Answer, Brain};
use crate::line::{Line, LineEvent, TransferFuture, TransferResult};
use crate::writer::{self, Write};

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub call: CallConfig,
    /// Caller audio kept from before the VAD fired, sent to the STT first so
    /// the first syllable is not clipped (25 frames = 500 ms: the VAD needs
    /// a few voiced frames, and soft onsets such as "I" start below it;
    /// Whisper does not mind the extra lead-in).
    pub stt_preroll_frames: usize,
    /// How long a live transfer may ring before we fall back.
    pub transfer_timeout: Duration,
    /// The OpenAI-compatible endpoint for agents whose brain is `llm`;
    /// without it they run the playbook (and the trace says so).
    pub llm: Option<LlmConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            call: CallConfig {
                // Offline Whisper answers in ~0.5 s, but several seconds on a
                // loaded 2-core machine: dropping a late final loses the
                // caller's whole turn, which is worse than waiting.
                stt_final_timeout: Duration::from_secs(6),
                ..CallConfig::default()
            },
            stt_preroll_frames: 25,
            transfer_timeout: Duration::from_secs(30),
            llm: None,
        }
    }
}

/// Runs calls. Cheap to clone; the providers are shared by every call.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    stt: Arc<dyn SpeechToText>,
    tts: Arc<dyn TextToSpeech>,
    handoff_notify: Arc<Notify>,
    config: EngineConfig,
}

/// Who is on the line, as telephony matched it.
#[derive(Debug, Clone)]
pub struct CallSetup {
    pub session: Session,
    pub agent: Agent,
    /// The caller's number, when the network gave a usable one.
    pub caller_id: Option<E164>,
}

/// How a call went, once it is over.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    pub outcome: Outcome,
    pub end_reason: String,
    pub turns: usize,
    pub handoff: Option<switchboard_model::HandoffId>,
    /// Writes that failed even after retries (logged with their content).
    pub lost_writes: usize,
}

impl Engine {
    pub fn new(
        store: Store,
        stt: Arc<dyn SpeechToText>,
        tts: Arc<dyn TextToSpeech>,
        handoff_notify: Arc<Notify>,
        config: EngineConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                stt,
                tts,
                handoff_notify,
                config,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn brain_for(&self, setup: &CallSetup) -> Brain {
        let spec = &setup.agent.spec;
        let caller = setup.caller_id.as_ref();
        if spec.brain == switchboard_model::Brain::Llm {
            match &self.inner.config.llm {
                Some(cfg) => match cfg.client() {
                    Ok(client) => {
                        let agent = LlmAgent::new(client, cfg.clone(), spec, caller)
                            .with_contacts(Arc::new(StoreContacts(self.inner.store.clone())))
                            .with_tools(http_tools(spec));
                        return Brain::llm(agent);
                    }
                    Err(e) => warn!(error = %e, "cannot build the LLM client; using the playbook"),
                },
                None => warn!("the agent's brain is `llm` but no LLM is configured ([llm] base_url); using the playbook"),
            }
        }
        Brain::playbook(PlaybookAgent::new(spec, caller))
    }

    /// Runs one answered call to its end: greeting, turns, handoff, hangup.
    pub async fn run(&self, setup: CallSetup, line: Line) -> CallReport {
        let span = tracing::info_span!("call", session = %setup.session.id, agent = %setup.agent.spec.name);
        self.run_inner(setup, line).instrument(span).await
    }

    async fn run_inner(&self, setup: CallSetup, mut line: Line) -> CallReport {
        let inner = &self.inner;
        let session = setup.session.id;
        let (writes, writer) =
            writer::spawn(inner.store.clone(), session, inner.handoff_notify.clone());
        let mut brain = self.brain_for(&setup);
        let start = Instant::now();
        let wall_start = wall_now();
        let mut call = Call::new(
            setup.agent.spec.greeting.clone(),
            inner.config.call.clone(),
            start.into_std(),
        )
        .with_wall_clock(wall_start);
        let mut run = Running {
            engine: inner,
            setup: &setup,
            writes,
            audio_out: line.audio_out.clone(),
            stt: None,
            finishing: VecDeque::new(),
            stt_inputs: VecDeque::new(),
            preroll: VecDeque::with_capacity(inner.config.stt_preroll_frames + 1),
            tts: None,
            transfer: None,
            pending_handoff: None,
            handoff_written: false,
            bridged: false,
            control: line.control.clone(),
            ended: None,
            line_reason: None,
            dropped_frames: 0,
        };
        info!(brain = brain.name(), "call started");
        run.trace(
            "call_started",
            serde_json::json!({
                "brain": brain.name(),
                "stt": inner.stt.name(),
                "tts": inner.tts.name(),
                "agent": setup.agent.spec.name,
            }),
            None,
        );
        let mut deadline;
        let mut line_gone = false;
        let mut asks: Vec<AgentTurn> = Vec::new();
        loop {
            // Drain everything the machine wants done.
            loop {
                match call.poll_output() {
                    Output::Timeout(at) => {
                        deadline = Instant::from_std(at);
                        break;
                    }
                    Output::Ask(turn) => asks.push(turn),
                    out => run.execute(out),
                }
            }
            if let Some(event) = run.stt_inputs.pop_front() {
                // The engine's own answer to an output (an STT that could
                // not be opened): feed it, then drain again.
                let now = Instant::now().into_std();
                let _ = call.handle_input(Input::Stt(now, event));
                continue;
            }
            if !asks.is_empty() {
                // The playbook answers on the spot (then drain again); the
                // LLM answers through `brain.next()` below.
                for turn in asks.drain(..) {
                    let id = turn.id;
                    if let Answer::Now(decision) = brain.ask(turn) {
                        let now = Instant::now().into_std();
                        let _ = call.handle_input(Input::Decision(now, id, decision));
                    }
                }
                continue;
            }
            if run.ended.is_some() || line_gone {
                break;
            }
            if run.bridged {
                // The rep has the caller; the machine has nothing left to time.
                deadline = Instant::now() + Duration::from_secs(24 * 3600);
            }
            let event: InputEvent = tokio::select! {
                ev = line.events.recv() => match ev {
                    Some(LineEvent::Audio(frame)) => InputEvent::Audio(frame),
                    Some(LineEvent::Dtmf(d)) => InputEvent::Dtmf(d),
                    Some(LineEvent::Hangup { reason }) => InputEvent::Hangup(reason),
                    None => InputEvent::Hangup("caller hung up".into()),
                },
                ev = recv_stt(&mut run.stt, &mut run.finishing) => InputEvent::Stt(ev),
                fr = recv_tts(&mut run.tts) => InputEvent::Tts(fr),
                res = poll_transfer(&mut run.transfer) => InputEvent::Transfer(res),
                ev = brain.next() => InputEvent::Brain(ev),
                _ = tokio::time::sleep_until(deadline) => InputEvent::Timeout,
            };
            let now = Instant::now().into_std();
            let input = match event {
                InputEvent::Audio(frame) => {
                    if run.bridged {
                        continue;
                    }
                    run.feed_stt(&frame);
                    let _ = call.handle_input(Input::Audio(now, &frame));
                    continue;
                }
                InputEvent::Dtmf(d) => Input::Dtmf(now, d),
                InputEvent::Hangup(reason) => {
                    // The machine records the AI turn as heard and reports
                    // the end; the next drain writes both, then we stop.
                    line_gone = true;
                    run.line_reason = Some(reason);
                    Input::Hangup(now)
                }
                InputEvent::Stt(Some(ev)) => Input::Stt(now, ev),
                InputEvent::Stt(None) => continue,
                InputEvent::Tts(TtsItem::Frame(g, f)) => Input::TtsFrame(now, g, f),
                InputEvent::Tts(TtsItem::Done(g)) => Input::TtsDone(now, g),
                InputEvent::Tts(TtsItem::Failed(g, error)) => {
                    // Whatever was synthesised plays; the call goes on.
                    run.trace(
                        "speech_error",
                        serde_json::json!({
                            "provider": "tts",
                            "error": error,
                            "generation": g.value(),
                            "then": "the rest of the sentence is skipped",
                        }),
                        None,
                    );
                    Input::TtsDone(now, g)
                }
                InputEvent::Transfer(result) => {
                    run.trace_transfer(&result);
                    Input::Transfer(
                        now,
                        match result {
                            TransferResult::Connected => CallTransfer::Connected,
                            TransferResult::Failed { reason } => CallTransfer::Failed { reason },
                        },
                    )
                }
                InputEvent::Brain((id, LlmEvent::Sentence(text))) => Input::Sentence(now, id, text),
                InputEvent::Brain((id, LlmEvent::Decision(d))) => Input::Decision(now, id, d),
                InputEvent::Timeout => {
                    if run.bridged {
                        continue;
                    }
                    Input::Timeout(now)
                }
            };
            let _ = call.handle_input(input);
        }
        run.finish(&mut call).await;
        drop(line.events);
        let fallback_reason = run.end_reason();
        drop(run);
        let written = writer.await.unwrap_or_default();
        let session_row = inner.store.session(session).await.ok();
        let report = CallReport {
            outcome: session_row
                .as_ref()
                .and_then(|s| s.outcome)
                .unwrap_or(Outcome::Resolved),
            end_reason: session_row
                .and_then(|s| s.end_reason)
                .unwrap_or(fallback_reason),
            turns: written.turns,
            handoff: written.handoff,
            lost_writes: written.failures,
        };
        info!(outcome = %report.outcome.as_str(), reason = %report.end_reason, turns = report.turns, "call ended");
        report
    }
}

enum InputEvent {
    Audio(Frame),
    Dtmf(char),
    Hangup(String),
    Stt(Option<SttEvent>),
    Tts(TtsItem),
    Transfer(TransferResult),
    Brain((switchboard_agent::TurnId, LlmEvent)),
    Timeout,
}

// Frames inline on purpose (50 per second per call, no allocation).
#[allow(clippy::large_enum_variant)]
enum TtsItem {
    Frame(Generation, Frame),
    Done(Generation),
    Failed(Generation, String),
}

struct Running<'a> {
    engine: &'a Inner,
    setup: &'a CallSetup,
    writes: mpsc::UnboundedSender<Write>,
    audio_out: mpsc::Sender<Frame>,
    /// The STT stream taking the caller's audio.
    stt: Option<SttStream>,
    /// Streams told to finish whose final has not come, oldest first (the
    /// caller may go on after a pause before the first final is in).
    finishing: VecDeque<SttStream>,
    /// STT events the engine makes itself (a stream that could not be
    /// opened), fed to the machine after the drain.
    stt_inputs: VecDeque<SttEvent>,
    preroll: VecDeque<Frame>,
    tts: Option<(Generation, TtsStream, u32)>,
    transfer: Option<TransferFuture>,
    /// A logged escalation waiting for its follow-up dialogue to finish.
    pending_handoff: Option<HandoffRequest>,
    handoff_written: bool,
    bridged: bool,
    control: Arc<dyn crate::line::LineControl>,
    /// Set when the machine reported the end of the call.
    ended: Option<Ended>,
    /// Why the line went away, when it did before the machine ended.
    line_reason: Option<String>,
    dropped_frames: u64,
}

struct Ended {
    outcome: Outcome,
    words: String,
    by_caller: bool,
}

impl Running<'_> {
    fn execute(&mut self, out: Output) {
        match out {
            Output::Play(frame) => {
                if self.bridged {
                    return;
                }
                if self.audio_out.try_send(frame).is_err() {
                    self.dropped_frames += 1;
                }
            }
            Output::Say { generation, text } => {
                debug!(generation = generation.value(), %text, "say");
                let stream = self.engine.tts.synthesize(&text);
                self.tts = Some((generation, stream, 0));
            }
            // Dropping the stream cancels synthesis.
            Output::CancelSpeech { generation }
                if self.tts.as_ref().is_some_and(|(g, _, _)| *g == generation) =>
            {
                self.tts = None;
            }
            Output::StartStt => match self.engine.stt.open() {
                Ok(stream) => {
                    for frame in self.preroll.drain(..) {
                        let _ = stream.audio.try_send(SttInput::Audio(frame));
                    }
                    self.stt = Some(stream);
                }
                Err(e) => {
                    warn!(error = %e, "speech recognition unavailable");
                    self.stt = None;
                    self.stt_inputs.push_back(SttEvent::Error {
                        message: e.to_string(),
                    });
                }
            },
            Output::FinishStt => {
                if let Some(stt) = self.stt.take() {
                    if let Err(mpsc::error::TrySendError::Full(finish)) =
                        stt.audio.try_send(SttInput::Finish)
                    {
                        // The provider lags behind the audio: the finish
                        // must still reach it, after what is queued.
                        let audio = stt.audio.clone();
                        tokio::spawn(async move {
                            let _ = audio.send(finish).await;
                        });
                    }
                    self.finishing.push_back(stt);
                }
            }
            Output::CancelStt => {
                self.stt = None;
                self.finishing.clear();
            }
            Output::Transcript {
                speaker,
                text,
                started_at,
                ended_at,
                interrupted,
            } => {
                if interrupted {
                    self.trace("interrupted", serde_json::json!({ "heard": text }), None);
                }
                let _ = self.writes.send(Write::Turn {
                    speaker,
                    text,
                    started_at,
                    ended_at,
                });
            }
            Output::Trace { kind, json } => {
                let (name, latency) = match kind {
                    TraceKind::Decision => ("decision", None),
                    TraceKind::DecisionTimeout => ("decision_timeout", None),
                    TraceKind::StaleDecision => ("stale_decision", None),
                    // The engine writes its own transfer steps (with the target).
                    TraceKind::Transfer => return,
                    TraceKind::Latency => (
                        "latency",
                        json.get("speech_end_to_first_play_ms")
                            .and_then(serde_json::Value::as_i64),
                    ),
                    TraceKind::Unheard => ("unheard", None),
                    TraceKind::Reprompt => ("reprompt", None),
                    TraceKind::InputLimit => ("input_limit", None),
                    TraceKind::EndOfTurn => ("end_of_turn", None),
                    TraceKind::SpeechError => ("speech_error", None),
                    _ => ("other", None),
                };
                self.trace(name, json, latency);
            }
            Output::Handoff(request) => self.on_handoff(request),
            Output::Bridged => {
                info!("live transfer: bridged to the rep");
                self.bridged = true;
                self.tts = None;
                self.stt = None;
                self.finishing.clear();
            }
            Output::Hangup(reason) => {
                let (outcome, mut words) = self.end_words(&reason);
                let by_caller = matches!(reason, EndReason::CallerHungUp);
                if by_caller {
                    if let Some(r) = &self.line_reason {
                        words.clone_from(r);
                    }
                }
                let outcome = if self.bridged {
                    Outcome::LiveTransfer
                } else {
                    outcome
                };
                if let EndReason::Agent(AgentEnd::Escalated { handoff, follow_up }) = &reason {
                    self.write_escalation(handoff, follow_up.as_ref());
                }
                self.ended = Some(Ended {
                    outcome,
                    words,
                    by_caller,
                });
            }
            Output::Timeout(_) => {}
            _ => {}
        }
    }

    fn feed_stt(&mut self, frame: &Frame) {
        match &self.stt {
            Some(stt) => {
                let _ = stt.audio.try_send(SttInput::Audio(frame.clone()));
            }
            None => {
                if self.preroll.len() == self.engine.config.stt_preroll_frames {
                    self.preroll.pop_front();
                }
                if self.engine.config.stt_preroll_frames > 0 {
                    self.preroll.push_back(frame.clone());
                }
            }
        }
    }

    fn trace(&self, kind: &'static str, json: serde_json::Value, latency_ms: Option<i64>) {
        let _ = self.writes.send(Write::Trace {
            kind,
            json,
            latency_ms,
        });
    }

    fn on_handoff(&mut self, request: HandoffRequest) {
        match request.mode {
            HandoffMode::LiveTransfer => {
                self.write_handoff(&request, None, None, false);
                match self.setup.agent.spec.handoff_number.clone() {
                    Some(target) => {
                        let target = target.to_string();
                        info!(%target, "live transfer: dialling");
                        self.trace(
                            "transfer",
                            serde_json::json!({ "status": "dialling", "target": target }),
                            None,
                        );
                        let fut = self.control.transfer(&target);
                        let timeout = self.engine.config.transfer_timeout;
                        self.transfer = Some(Box::pin(async move {
                            match tokio::time::timeout(timeout, fut).await {
                                Ok(r) => r,
                                Err(_) => TransferResult::Failed {
                                    reason: format!("no answer within {} s", timeout.as_secs()),
                                },
                            }
                        }));
                    }
                    None => {
                        self.transfer = Some(Box::pin(async {
                            TransferResult::Failed {
                                reason: "the agent has no handoff number configured".into(),
                            }
                        }));
                    }
                }
            }
            HandoffMode::LoggedEscalation => {
                // Written when the follow-up dialogue ends (or the caller
                // hangs up first), so the conversation carries the channel.
                self.pending_handoff = Some(request);
            }
        }
    }

    fn trace_transfer(&mut self, result: &TransferResult) {
        self.transfer = None;
        let json = match result {
            TransferResult::Connected => serde_json::json!({ "status": "connected" }),
            TransferResult::Failed { reason } => {
                warn!(%reason, "live transfer failed; continuing as a logged escalation");
                serde_json::json!({ "status": "failed", "reason": reason })
            }
        };
        self.trace("transfer", json, None);
    }

    fn write_escalation(
        &mut self,
        handoff: &HandoffRequest,
        follow_up: Option<&switchboard_agent::FollowUp>,
    ) {
        let (channel, details) = match follow_up {
            Some(f) => (
                Some(f.channel),
                Some(match &f.contact {
                    switchboard_agent::ContactPoint::Email(e) => e.clone(),
                    switchboard_agent::ContactPoint::Phone(p) => p.to_string(),
                }),
            ),
            None => (None, None),
        };
        self.pending_handoff = None;
        self.write_handoff(handoff, channel, details, true);
    }

    fn write_handoff(
        &mut self,
        request: &HandoffRequest,
        channel: Option<PreferredChannel>,
        details: Option<String>,
        end_session: bool,
    ) {
        if self.handoff_written {
            return;
        }
        self.handoff_written = true;
        let _ = self.writes.send(Write::Handoff {
            input: HandoffInput {
                mode: Some(request.mode),
                reason: request.reason.clone(),
                summary: Some(request.summary.clone()),
                preferred_channel: channel,
                channel_details: details,
                end_session,
            },
            at: wall_now(),
        });
    }

    fn end_words(&self, reason: &EndReason) -> (Outcome, String) {
        match reason {
            EndReason::Agent(AgentEnd::CallerDone) => {
                (Outcome::Resolved, "the caller said goodbye".into())
            }
            EndReason::Agent(AgentEnd::Escalated { .. }) => (
                Outcome::LoggedEscalation,
                "logged escalation: follow-up captured".into(),
            ),
            EndReason::CallerHungUp => (Outcome::Abandoned, "caller hung up".into()),
            EndReason::Silence => (Outcome::Abandoned, "no response from the caller".into()),
            EndReason::MaxDuration => (Outcome::Failed, "maximum call duration reached".into()),
            // Only after the machine handed off: the escalation is written
            // at the end of the call.
            EndReason::SpeechFailure => (
                Outcome::LoggedEscalation,
                "speech recognition is failing".into(),
            ),
            _ => (Outcome::Resolved, "call ended".into()),
        }
    }

    /// The call is over: close speech, write what is still owed, hang up.
    async fn finish(&mut self, call: &mut Call) {
        // Outputs the machine produced on its way out (the AI turn as heard).
        loop {
            match call.poll_output() {
                Output::Timeout(_) => break,
                out => self.execute(out),
            }
        }
        self.stt = None;
        self.finishing.clear();
        self.tts = None;
        self.transfer = None;
        let ended = self.ended.take().unwrap_or_else(|| Ended {
            outcome: if self.bridged {
                Outcome::LiveTransfer
            } else {
                Outcome::Abandoned
            },
            words: self
                .line_reason
                .clone()
                .unwrap_or_else(|| "caller hung up".into()),
            by_caller: true,
        });
        let _ = self.writes.send(Write::End {
            at: wall_now(),
            outcome: ended.outcome,
            reason: ended.words.clone(),
        });
        // A logged escalation the caller hung up on: keep the handoff (after
        // the end, so the session keeps the caller's reason for ending).
        if let Some(request) = self.pending_handoff.take() {
            self.write_handoff(&request, None, None, true);
        }
        if !ended.by_caller && self.line_reason.is_none() {
            // Let the last queued frames (two at most) reach the caller.
            tokio::time::sleep(Duration::from_millis(60)).await;
            self.control.hangup(&ended.words);
        }
        if self.dropped_frames > 0 {
            debug!(dropped = self.dropped_frames, "frames dropped towards RTP");
        }
        self.ended = Some(ended);
    }

    fn end_reason(&self) -> String {
        self.ended
            .as_ref()
            .map_or_else(|| "call ended".into(), |e| e.words.clone())
    }
}

/// The next STT event for the machine: the oldest finishing stream's final
/// (its late partials are dropped) or the listening stream's partials. A
/// stream that fails, or closes without a final, gives an
/// [`SttEvent::Error`]: the machine apologises rather than wait.
async fn recv_stt(
    listening: &mut Option<SttStream>,
    finishing: &mut VecDeque<SttStream>,
) -> Option<SttEvent> {
    if listening.is_none() && finishing.is_empty() {
        return std::future::pending().await;
    }
    loop {
        let (from_finishing, event) = tokio::select! {
            biased;
            ev = async { finishing.front_mut()?.events.recv().await }, if !finishing.is_empty() => (true, ev),
            ev = async { listening.as_mut()?.events.recv().await }, if listening.is_some() => (false, ev),
        };
        let event = match event {
            Some(Ok(switchboard_speech::SttEvent::Partial { text })) => {
                if from_finishing {
                    continue;
                }
                return Some(SttEvent::Partial { text });
            }
            Some(Ok(switchboard_speech::SttEvent::Final { text, confidence })) => {
                SttEvent::Final { text, confidence }
            }
            Some(Err(e)) => {
                warn!(error = %e, "speech recognition failed for this turn");
                SttEvent::Error {
                    message: e.to_string(),
                }
            }
            None => SttEvent::Error {
                message: "the recogniser closed the stream without a transcript".into(),
            },
        };
        if from_finishing {
            finishing.pop_front();
        } else {
            *listening = None;
        }
        return Some(event);
    }
}

async fn recv_tts(tts: &mut Option<(Generation, TtsStream, u32)>) -> TtsItem {
    let Some((generation, stream, frames)) = tts.as_mut() else {
        return std::future::pending().await;
    };
    let g = *generation;
    match stream.frames.recv().await {
        Some(Ok(frame)) => {
            *frames += 1;
            TtsItem::Frame(g, frame)
        }
        Some(Err(e)) => {
            warn!(error = %e, "speech synthesis failed");
            *tts = None;
            TtsItem::Failed(g, e.to_string())
        }
        None => {
            *tts = None;
            TtsItem::Done(g)
        }
    }
}

async fn poll_transfer(t: &mut Option<TransferFuture>) -> TransferResult {
    match t.as_mut() {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

fn wall_now() -> Timestamp {
    use switchboard_model::Clock as _;
    switchboard_model::SystemClock.now()
}

/// The agent's own HTTP tools; one that cannot be built (validated on save,
/// so only if the rules changed since) is left out with a warning.
fn http_tools(spec: &switchboard_model::AgentSpec) -> Vec<switchboard_agent::llm::HttpTool> {
    spec.tools
        .iter()
        .filter_map(|t| {
            switchboard_agent::llm::HttpTool::new(
                &t.name,
                &t.description,
                t.parameters.clone(),
                &t.url,
                &t.method,
                Duration::from_millis(u64::from(t.timeout_ms)),
            )
            .map_err(|e| warn!(tool = %t.name, error = %e, "agent tool left out"))
            .ok()
        })
        .collect()
}

/// `lookup_contact` for the LLM brain, answered from the contacts table.
struct StoreContacts(Store);

impl switchboard_agent::llm::ContactLookup for StoreContacts {
    fn lookup<'a>(
        &'a self,
        phone: &'a switchboard_model::E164,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        Option<switchboard_model::Contact>,
                        switchboard_agent::llm::LookupError,
                    >,
                > + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            self.0
                .contact_by_phone(phone)
                .await
                .map_err(|e| switchboard_agent::llm::LookupError(Box::new(e)))
        })
    }
}
