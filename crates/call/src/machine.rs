//! [`Call`]: the per-call state machine.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use switchboard_agent::playbook::summarise;
use switchboard_agent::{AgentTurn, Decision, HandoffRequest, TurnEvent, TurnId};
use switchboard_media::{Frame, Level, FRAME_DURATION};
use switchboard_model::{HandoffMode, Speaker, Timestamp};

use crate::vad::Vad;
use crate::words::{ends_sentence, looks_foreign, looks_unfinished};
use crate::{
    CallError, Config, EndReason, Generation, Input, Output, SttEvent, TraceKind, TransferResult,
};

/// Frames [`Call`] may emit in one go when the driver ticks late: the most
/// that ever sits between the machine and RTP.
const MAX_PLAY_BURST: usize = 2;
/// Our own recent output the echo guard compares the caller's level with
/// (echo arrives delayed by the far end's path).
const ECHO_MEMORY_FRAMES: usize = 5;
/// The window [`Config::dtmf_flood_keys`] counts keys in.
const KEY_FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// One phone call, sans-IO.
///
/// Contract: feed every event with [`Call::handle_input`], then drain
/// [`Call::poll_output`] until it returns [`Output::Timeout`]; call
/// `handle_input(Input::Timeout(now))` no later than that deadline. Frames
/// to play are released one per 20 ms as time passes, so the driver should
/// also feed caller audio or timeouts at that pace while we speak.
///
/// After each caller turn it emits [`Output::Ask`] and waits for the
/// brain's [`Input::Decision`] for that [`TurnId`]: the caller may talk
/// again meanwhile (the decision is then held until their new turn ends:
/// used if it was only noise, dropped as stale if they said something,
/// which asks again), and after [`Config::decision_timeout`] the machine
/// apologises and hands off as a logged escalation by itself.
pub struct Call {
    config: Config,
    started: Instant,
    wall_start: Timestamp,
    now: Instant,
    vad: Vad,
    phase: Phase,
    /// The last generation handed out (or retired by a barge-in).
    generation: Generation,
    speech: Option<Utterance>,
    caller: Option<CallerTurn>,
    history: Vec<(Speaker, String)>,
    /// When the caller's current silence began (not reset by a reprompt).
    silence_since: Instant,
    /// Levels of the frames we played last, newest last.
    played_levels: VecDeque<Level>,
    last_play_at: Option<Instant>,
    barge_frames: u32,
    turns: u32,
    time_limit_reached: bool,
    /// The turn the brain is deciding.
    pending: Option<PendingAsk>,
    /// For the next [`AgentTurn`]: what the machine did on its own.
    event: Option<TurnEvent>,
    /// The live transfer under way (announced, waiting for its result).
    transfer: Option<HandoffRequest>,
    /// A handoff was made (by the agent or by the machine).
    handed_off: bool,
    /// The caller's first words, for a summary the machine writes itself.
    first_question: Option<String>,
    /// The latest turn whose decision was acted on.
    last_applied: Option<TurnId>,
    /// Wordless caller turns in a row that got a "didn't catch that".
    not_heard_streak: u32,
    /// Unclear caller turns in a row (low confidence, another language).
    unclear_streak: u32,
    /// Failed transcriptions in a row.
    stt_failures: u32,
    /// When the latest keys came (one [`KEY_FLOOD_WINDOW`] of them).
    recent_keys: VecDeque<Instant>,
    /// A DTMF flood is under way (traced once, ends after a quiet window).
    key_flood: bool,
    outputs: VecDeque<Output>,
}

/// An [`Output::Ask`] waiting for its [`Input::Decision`].
struct PendingAsk {
    id: TurnId,
    asked_at: Instant,
    speech_end: Instant,
    event: Option<TurnEvent>,
    /// A decision that arrived while the caller was talking again (or while
    /// early sentences play), with its arrival time.
    held: Option<(Instant, Decision)>,
    /// Early sentences started so far ([`Input::Sentence`]), in order.
    early: Vec<String>,
    /// Early sentences waiting for the one being said.
    queue: VecDeque<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// We are speaking ([`Call::speech`] is set).
    Speaking,
    /// It is the caller's turn and they have not started.
    Listening {
        since: Instant,
    },
    /// The caller is talking or keying ([`Call::caller`] is set).
    CallerTurn,
    /// The turn ended; waiting for the STT final(s).
    AwaitingFinal {
        since: Instant,
    },
    /// The words so far look unfinished ("my number is 415 555"): the turn
    /// is held until `until` in case the caller goes on.
    Unfinished {
        until: Instant,
    },
    /// The turn was asked ([`Call::pending`] is set); nobody is speaking.
    AwaitingDecision,
    /// Live transfer under way: the driver dials and bridges.
    Holding,
    /// The transfer connected: the caller talks to a person; our part is over.
    Bridged,
    Ended,
}

/// What follows our utterance once it has been played.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Then {
    Listen,
    /// An early sentence: then the next one, or the decision.
    AwaitDecision,
    Hold,
    Hangup(EndReason),
}

struct Utterance {
    generation: Generation,
    text: String,
    then: Then,
    is_reprompt: bool,
    queue: VecDeque<Frame>,
    received: usize,
    played: usize,
    done: bool,
    said_at: Instant,
    /// The latest synthesised frame (or the request): a stall is timed
    /// from here.
    last_tts_at: Instant,
    first_play_at: Option<Instant>,
    next_play_at: Option<Instant>,
    latency: Option<Latency>,
}

/// The caller's turn: one or more STT streams ("segments": the caller may
/// pause mid-number and go on), keys, and what went wrong.
#[derive(Debug)]
struct CallerTurn {
    /// When the turn began (speech or a key): [`Config::max_turn`] counts
    /// from here.
    opened_at: Instant,
    /// When the caller started speaking.
    started_at: Option<Instant>,
    last_input_at: Option<Instant>,
    /// The finals so far, joined.
    text: String,
    /// The latest partial of the listening stream.
    partial: String,
    dtmf: String,
    /// An STT stream takes the caller's audio (StartStt sent, FinishStt not).
    listening: bool,
    /// Streams finished whose final has not come yet.
    finishing: u32,
    /// STT streams started in this turn.
    segments: u32,
    /// The lowest confidence of the finals with words.
    confidence: f32,
    /// Why a stream of this turn failed; no stream is started after that.
    stt_error: Option<String>,
    voiced_frames: u32,
    /// Times the turn was held because it looked unfinished.
    holds: u32,
    /// The turn reached [`Config::max_turn`]: no continuation.
    capped: bool,
    /// Keys dropped beyond [`Config::max_dtmf_digits`].
    dropped_keys: u32,
}

impl CallerTurn {
    fn new(opened_at: Instant, speech: bool) -> Self {
        CallerTurn {
            opened_at,
            started_at: speech.then_some(opened_at),
            last_input_at: None,
            text: String::new(),
            partial: String::new(),
            dtmf: String::new(),
            listening: speech,
            finishing: 0,
            segments: u32::from(speech),
            confidence: 1.0,
            stt_error: None,
            voiced_frames: 0,
            holds: 0,
            capped: false,
            dropped_keys: 0,
        }
    }

    /// A stream's final (or error) came: the oldest finishing stream's, or
    /// the listening one's when it ended by itself.
    fn settle_segment(&mut self) {
        if self.finishing > 0 {
            self.finishing -= 1;
        } else {
            self.listening = false;
        }
    }

    fn streams_open(&self) -> bool {
        self.listening || self.finishing > 0
    }
}

struct Latency {
    speech_end: Instant,
    stt_final: Instant,
    decision: Instant,
    first_tts: Option<Instant>,
}

impl Call {
    /// Start a call answered at `now`: says the greeting.
    pub fn new(greeting: impl Into<String>, config: Config, now: Instant) -> Self {
        let mut call = Call {
            vad: Vad::new(config.vad.clone()),
            config,
            started: now,
            wall_start: Timestamp::from_millis(0),
            now,
            phase: Phase::Listening { since: now },
            generation: Generation(0),
            speech: None,
            caller: None,
            history: Vec::new(),
            silence_since: now,
            played_levels: VecDeque::with_capacity(ECHO_MEMORY_FRAMES),
            last_play_at: None,
            barge_frames: 0,
            turns: 0,
            time_limit_reached: false,
            pending: None,
            event: None,
            transfer: None,
            handed_off: false,
            first_question: None,
            last_applied: None,
            not_heard_streak: 0,
            unclear_streak: 0,
            stt_failures: 0,
            recent_keys: VecDeque::new(),
            key_flood: false,
            outputs: VecDeque::new(),
        };
        let greeting = greeting.into();
        if !greeting.is_empty() {
            call.say(now, greeting, Then::Listen, None);
        }
        call
    }

    /// Anchor transcript and agent timestamps: `at` is the wall-clock time of
    /// the `now` given to [`Call::new`] (default: the epoch).
    pub fn with_wall_clock(mut self, at: Timestamp) -> Self {
        self.wall_start = at;
        self
    }

    /// The conversation so far, as heard.
    pub fn history(&self) -> &[(Speaker, String)] {
        &self.history
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether a live transfer connected: the caller talks to a person and
    /// the machine only waits for the hangup.
    pub fn is_bridged(&self) -> bool {
        self.phase == Phase::Bridged
    }

    /// The turn whose decision the machine is waiting for.
    pub fn awaiting_decision(&self) -> Option<TurnId> {
        self.pending.as_ref().map(|p| p.id)
    }

    /// The generation of the words being spoken, if any.
    pub fn speaking(&self) -> Option<Generation> {
        self.speech.as_ref().map(|s| s.generation)
    }

    pub fn handle_input(&mut self, input: Input<'_>) -> Result<(), CallError> {
        if self.phase == Phase::Ended {
            return Err(CallError::Ended);
        }
        // Inputs can race (a TTS frame stamped before the last audio frame);
        // time never goes backwards inside the machine.
        let now = input.now().max(self.now);
        self.now = now;
        if self.phase == Phase::Bridged {
            // The person has the caller now; only the end of the call matters.
            if let Input::Hangup(_) = input {
                self.end(EndReason::CallerHungUp);
            }
            return Ok(());
        }
        match input {
            Input::Audio(_, frame) => self.handle_audio(now, frame),
            Input::Stt(_, event) => self.handle_stt(now, event),
            Input::TtsFrame(_, generation, frame) => self.handle_tts_frame(now, generation, frame),
            Input::TtsDone(_, generation) => {
                if let Some(speech) = self.speech.as_mut().filter(|s| s.generation == generation) {
                    speech.done = true;
                }
            }
            Input::Dtmf(_, digit) => self.handle_dtmf(now, digit),
            Input::Decision(_, id, decision) => self.handle_decision(now, id, decision),
            Input::Sentence(_, id, text) => self.handle_sentence(now, id, text),
            Input::Transfer(_, result) => self.handle_transfer(now, result),
            Input::Timeout(_) => {}
            Input::Hangup(_) => {
                self.interrupt_speech(now);
                self.end(EndReason::CallerHungUp);
                return Ok(());
            }
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// The next thing to do; [`Output::Timeout`] when there is nothing else.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        Output::Timeout(self.next_deadline())
    }

    fn handle_audio(&mut self, now: Instant, frame: &Frame) {
        let level = Level::of(frame);
        let vad = self.vad.process_frame(frame);
        match self.phase {
            Phase::Speaking => {
                let can_barge_in = self.speech.as_ref().is_some_and(|s| {
                    matches!(s.then, Then::Listen | Then::AwaitDecision)
                        && s.first_play_at
                            .is_some_and(|t| now >= t + self.config.echo_guard)
                });
                if can_barge_in && vad.voiced && self.louder_than_echo(level) {
                    self.barge_frames += 1;
                } else {
                    self.barge_frames = 0;
                }
                if self.barge_frames >= self.config.barge_in_frames {
                    self.barge_frames = 0;
                    let started = now - FRAME_DURATION * self.config.barge_in_frames;
                    self.barge_in(now);
                    self.start_caller_turn(started, true);
                    if let Some(turn) = self.caller.as_mut() {
                        turn.last_input_at = Some(now);
                    }
                }
            }
            Phase::Listening { .. } | Phase::AwaitingDecision => {
                let in_echo_tail = self
                    .last_play_at
                    .is_some_and(|t| now < t + self.config.echo_guard);
                if vad.onset && (!in_echo_tail || self.louder_than_echo(level)) {
                    let started = now - FRAME_DURATION * self.config.vad.onset_frames;
                    self.start_caller_turn(started, true);
                    if let Some(turn) = self.caller.as_mut() {
                        turn.last_input_at = Some(now);
                    }
                }
            }
            Phase::CallerTurn => {
                if vad.voiced {
                    if let Some(turn) = self.caller.as_mut() {
                        turn.last_input_at = Some(now);
                        turn.voiced_frames += 1;
                        if !turn.listening && turn.stt_error.is_none() && !turn.capped {
                            // Keys first, then speech (or a stream that
                            // ended by itself): transcribe the speech too.
                            turn.listening = true;
                            turn.segments += 1;
                            turn.started_at.get_or_insert(now);
                            self.outputs.push_back(Output::StartStt);
                        }
                    }
                }
            }
            Phase::AwaitingFinal { .. } | Phase::Unfinished { .. } => {
                // The caller goes on after a pause ("415 555" … "0100"):
                // the same turn continues in a new STT stream.
                if vad.active && vad.voiced {
                    if let Some(turn) = self
                        .caller
                        .as_mut()
                        .filter(|t| t.stt_error.is_none() && !t.capped)
                    {
                        turn.last_input_at = Some(now);
                        turn.voiced_frames += 1;
                        turn.listening = true;
                        turn.segments += 1;
                        turn.partial.clear();
                        self.outputs.push_back(Output::StartStt);
                        self.phase = Phase::CallerTurn;
                    }
                }
            }
            Phase::Holding | Phase::Bridged | Phase::Ended => {}
        }
    }

    fn handle_stt(&mut self, now: Instant, event: SttEvent) {
        let Some(turn) = self.caller.as_mut() else {
            return;
        };
        match event {
            SttEvent::Partial { text } => {
                // With a continuation listening, a finishing stream's late
                // partials would overwrite the new one's.
                if !(turn.listening && turn.finishing > 0) {
                    turn.partial = text;
                }
                return;
            }
            SttEvent::Final { text, confidence } => {
                let text = text.trim();
                if !text.is_empty() {
                    if !turn.text.is_empty() {
                        turn.text.push(' ');
                    }
                    turn.text.push_str(text);
                    turn.confidence = turn.confidence.min(confidence);
                }
                turn.settle_segment();
            }
            SttEvent::Error { message } => {
                turn.settle_segment();
                turn.stt_error.get_or_insert(message);
            }
        }
        if !turn.listening {
            turn.partial.clear();
        }
        if matches!(self.phase, Phase::AwaitingFinal { .. }) && !turn.streams_open() {
            self.words_in(now);
        }
    }

    /// Every final of the turn is in: commit it, or hold it when the words
    /// look unfinished and the caller may go on.
    fn words_in(&mut self, now: Instant) {
        let Some(turn) = self.caller.as_mut() else {
            return;
        };
        let until = turn.last_input_at.unwrap_or(now) + self.config.end_of_turn_digits;
        if turn.stt_error.is_none() && !turn.capped && now < until && looks_unfinished(&turn.text) {
            turn.holds += 1;
            self.phase = Phase::Unfinished { until };
        } else {
            self.complete_caller_turn(now);
        }
    }

    fn handle_tts_frame(&mut self, now: Instant, generation: Generation, frame: Frame) {
        let Some(speech) = self.speech.as_mut().filter(|s| s.generation == generation) else {
            return; // stale: interrupted or superseded speech
        };
        if let Some(latency) = speech.latency.as_mut() {
            latency.first_tts.get_or_insert(now);
        }
        speech.last_tts_at = now;
        speech.queue.push_back(frame);
        speech.received += 1;
        if speech.next_play_at.is_none_or(|t| t < now) {
            speech.next_play_at = Some(now);
        }
    }

    fn handle_dtmf(&mut self, now: Instant, digit: char) {
        let flooding = self.count_key(now);
        match self.phase {
            Phase::Speaking
                if self
                    .speech
                    .as_ref()
                    .is_some_and(|s| matches!(s.then, Then::Listen | Then::AwaitDecision)) =>
            {
                self.barge_in(now);
                self.start_caller_turn(now, false);
            }
            Phase::Listening { .. } | Phase::AwaitingDecision => self.start_caller_turn(now, false),
            // Keys after a held, unfinished turn continue it.
            Phase::Unfinished { .. } => self.phase = Phase::CallerTurn,
            Phase::CallerTurn | Phase::AwaitingFinal { .. } => {}
            Phase::Speaking | Phase::Holding | Phase::Bridged | Phase::Ended => return,
        }
        let max_digits = self.config.max_dtmf_digits;
        let Some(turn) = self.caller.as_mut() else {
            return;
        };
        turn.last_input_at = Some(now);
        if turn.dtmf.chars().count() < max_digits {
            turn.dtmf.push(digit);
        } else {
            turn.dropped_keys += 1;
            if turn.dropped_keys == 1 {
                self.outputs.push_back(Output::Trace {
                    kind: TraceKind::InputLimit,
                    json: serde_json::json!({
                        "limit": "dtmf_digits",
                        "kept": max_digits,
                        "then": "further keys of this turn are dropped",
                    }),
                });
            }
        }
        // In a flood `#` does not end the turn: the keys are coalesced into
        // one turn that ends when they stop (or at the longest turn).
        if digit == '#' && !flooding && self.phase == Phase::CallerTurn {
            self.end_caller_turn(now);
        }
    }

    /// Count a key; whether keys now come as a flood (traced once per flood).
    fn count_key(&mut self, now: Instant) -> bool {
        if self
            .recent_keys
            .back()
            .is_some_and(|t| now.saturating_duration_since(*t) >= KEY_FLOOD_WINDOW)
        {
            // A quiet window ends a flood.
            self.key_flood = false;
        }
        while self
            .recent_keys
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= KEY_FLOOD_WINDOW)
        {
            self.recent_keys.pop_front();
        }
        if self.recent_keys.len() > self.config.dtmf_flood_keys {
            self.recent_keys.pop_front();
        }
        self.recent_keys.push_back(now);
        if self.recent_keys.len() > self.config.dtmf_flood_keys && !self.key_flood {
            self.key_flood = true;
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::InputLimit,
                json: serde_json::json!({
                    "limit": "dtmf_flood",
                    "keys_per_second": self.recent_keys.len(),
                    "then": "keys coalesced into one turn until they stop",
                }),
            });
        }
        self.key_flood
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.time_limit_reached && now >= self.started + self.config.max_duration {
            self.time_limit_reached = true;
            self.interrupt_speech(now);
            self.drop_caller_turn();
            self.pending = None;
            self.transfer = None;
            let farewell = self.config.max_duration_farewell.clone();
            self.say(now, farewell, Then::Hangup(EndReason::MaxDuration), None);
        }
        self.check_tts_stall(now);
        self.pump_playback(now);
        match self.phase {
            Phase::CallerTurn if self.turn_cap_at().is_some_and(|at| now >= at) => {
                if let Some(turn) = self.caller.as_mut() {
                    turn.capped = true;
                    self.outputs.push_back(Output::Trace {
                        kind: TraceKind::InputLimit,
                        json: serde_json::json!({
                            "limit": "max_turn",
                            "max_ms": self.config.max_turn.as_millis() as u64,
                            "then": "the turn is finalised",
                        }),
                    });
                }
                self.end_caller_turn(now);
            }
            Phase::CallerTurn if self.end_of_turn_at().is_some_and(|at| now >= at) => {
                self.end_caller_turn(now);
            }
            Phase::AwaitingFinal { since } if now >= since + self.config.stt_final_timeout => {
                if let Some(turn) = self.caller.as_mut() {
                    if turn.text.is_empty() && turn.partial.trim().is_empty() {
                        let waited = self.config.stt_final_timeout.as_millis();
                        turn.stt_error
                            .get_or_insert(format!("no transcript within {waited} ms"));
                    }
                }
                self.complete_caller_turn(now);
            }
            Phase::Unfinished { until } if now >= until => self.complete_caller_turn(now),
            Phase::AwaitingDecision
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| now >= p.asked_at + self.config.decision_timeout) =>
            {
                self.decision_timed_out(now);
            }
            Phase::Listening { since } => {
                let silent_ms = now
                    .saturating_duration_since(self.silence_since)
                    .as_millis() as u64;
                if now >= self.silence_since + self.config.max_silence {
                    self.outputs.push_back(Output::Trace {
                        kind: TraceKind::Reprompt,
                        json: serde_json::json!({
                            "why": "silence",
                            "silent_ms": silent_ms,
                            "then": "hang up",
                        }),
                    });
                    let farewell = self.config.silence_farewell.clone();
                    self.say(now, farewell, Then::Hangup(EndReason::Silence), None);
                } else if now >= since + self.config.reprompt_after {
                    self.outputs.push_back(Output::Trace {
                        kind: TraceKind::Reprompt,
                        json: serde_json::json!({
                            "why": "silence",
                            "silent_ms": silent_ms,
                            "then": "reprompt",
                        }),
                    });
                    let reprompt = self.config.reprompt.clone();
                    self.say_reprompt(now, reprompt);
                }
            }
            _ => {}
        }
    }

    /// Synthesis that stalled (no frame for [`Config::tts_stall_timeout`])
    /// is given up as if it had ended, so a hung TTS never leaves the call
    /// waiting forever.
    fn check_tts_stall(&mut self, now: Instant) {
        let Some(speech) = self.speech.as_mut() else {
            return;
        };
        if speech.done
            || !speech.queue.is_empty()
            || now < speech.last_tts_at + self.config.tts_stall_timeout
        {
            return;
        }
        speech.done = true;
        let generation = speech.generation;
        let played = speech.played;
        self.outputs.push_back(Output::CancelSpeech { generation });
        self.outputs.push_back(Output::Trace {
            kind: TraceKind::SpeechError,
            json: serde_json::json!({
                "provider": "tts",
                "error": format!(
                    "no audio for {} ms",
                    self.config.tts_stall_timeout.as_millis()
                ),
                "frames_played": played,
                "then": "the utterance is given up",
            }),
        });
    }

    /// Release the frames due by `now`, and finish the utterance once its
    /// last frame has been played.
    fn pump_playback(&mut self, now: Instant) {
        let Some(speech) = self.speech.as_mut() else {
            return;
        };
        let mut released = 0;
        while let Some(at) = speech.next_play_at {
            if at > now || released == MAX_PLAY_BURST {
                break;
            }
            let Some(frame) = speech.queue.pop_front() else {
                break;
            };
            released += 1;
            speech.played += 1;
            if speech.first_play_at.is_none() {
                speech.first_play_at = Some(now);
                if let Some(latency) = speech.latency.take() {
                    self.outputs
                        .push_back(latency_trace(self.turns, &latency, now));
                }
            }
            if self.played_levels.len() == ECHO_MEMORY_FRAMES {
                self.played_levels.pop_front();
            }
            self.played_levels.push_back(Level::of(&frame));
            self.last_play_at = Some(now);
            self.outputs.push_back(Output::Play(frame));
            // Late ticks catch up by at most MAX_PLAY_BURST frames; beyond
            // that the schedule restarts from now rather than bursting.
            let next = at + FRAME_DURATION;
            speech.next_play_at = Some(if next + FRAME_DURATION * 2 < now {
                now
            } else {
                next
            });
        }
        let finished =
            speech.done && speech.queue.is_empty() && speech.next_play_at.is_none_or(|t| now >= t);
        if finished {
            self.finish_speech(now);
        }
    }

    fn finish_speech(&mut self, now: Instant) {
        let Some(speech) = self.speech.take() else {
            return;
        };
        self.record_ai(&speech, speech.text.clone(), now, false);
        match speech.then {
            Then::Listen => {
                if !speech.is_reprompt {
                    self.silence_since = now;
                }
                self.phase = Phase::Listening { since: now };
            }
            Then::AwaitDecision => self.after_early_sentence(now),
            Then::Hold => self.phase = Phase::Holding,
            Then::Hangup(reason) => self.end(reason),
        }
    }

    /// An early sentence was said: say the next, use the decision if it is
    /// in, or wait for it.
    fn after_early_sentence(&mut self, now: Instant) {
        let Some(pending) = self.pending.as_mut() else {
            self.phase = Phase::Listening { since: now };
            return;
        };
        if let Some(next) = pending.queue.pop_front() {
            pending.early.push(next.clone());
            self.say(now, next, Then::AwaitDecision, None);
            return;
        }
        match pending.held.take() {
            Some((decided_at, decision)) => {
                if let Some(pending) = self.pending.take() {
                    self.apply_decision(now, decided_at, &pending, decision);
                }
            }
            None => self.phase = Phase::AwaitingDecision,
        }
    }

    /// The caller talks over us: stop at once and take back anything not
    /// yet handed to the driver.
    fn barge_in(&mut self, now: Instant) {
        if let Some(pending) = self.pending.as_mut() {
            // The caller cut in: the rest of the early answer is stale.
            pending.queue.clear();
        }
        self.interrupt_speech(now);
        self.outputs.retain(|o| !matches!(o, Output::Play(_)));
    }

    /// Stop the current utterance, recording the part that was heard.
    fn interrupt_speech(&mut self, now: Instant) {
        let Some(speech) = self.speech.take() else {
            return;
        };
        self.outputs.push_back(Output::CancelSpeech {
            generation: speech.generation,
        });
        // Retire the generation so its late frames are dropped.
        self.generation = self.generation.next();
        let total = if speech.done {
            speech.received
        } else {
            speech.received.max(speech.played)
        };
        let fraction = if total == 0 {
            0.0
        } else {
            speech.played as f64 / total as f64
        };
        let heard = heard_prefix(&speech.text, fraction).to_string();
        if speech.played > 0 {
            self.record_ai(&speech, heard, now, true);
        }
    }

    fn record_ai(&mut self, speech: &Utterance, text: String, now: Instant, interrupted: bool) {
        let started = speech.first_play_at.unwrap_or(speech.said_at);
        self.outputs.push_back(Output::Transcript {
            speaker: Speaker::Ai,
            text: text.clone(),
            started_at: self.wall(started),
            ended_at: self.wall(now),
            interrupted,
        });
        self.history.push((Speaker::Ai, text));
    }

    fn start_caller_turn(&mut self, started: Instant, speech: bool) {
        self.drop_caller_turn();
        self.phase = Phase::CallerTurn;
        self.caller = Some(CallerTurn::new(started, speech));
        if speech {
            self.outputs.push_back(Output::StartStt);
        }
    }

    /// Forget the caller's turn, telling the driver to drop its streams.
    fn drop_caller_turn(&mut self) {
        if self.caller.take().is_some_and(|t| t.streams_open()) {
            self.outputs.push_back(Output::CancelStt);
        }
    }

    /// When silence ends the caller's turn. Without partials (offline
    /// Whisper) this is always [`Config::end_of_turn`]: the final is
    /// checked for unfinished words afterwards ([`Call::words_in`]).
    fn end_of_turn_at(&self) -> Option<Instant> {
        let turn = self.caller.as_ref()?;
        let last = turn.last_input_at?;
        let partial = if turn.listening {
            turn.partial.trim()
        } else {
            ""
        };
        let silence = if !turn.dtmf.is_empty() || self.key_flood || looks_unfinished(partial) {
            self.config.end_of_turn_digits
        } else if ends_sentence(partial) {
            self.config
                .end_of_turn_punctuated
                .min(self.config.end_of_turn)
        } else {
            self.config.end_of_turn
        };
        Some(last + silence)
    }

    /// When the caller's turn reaches [`Config::max_turn`].
    fn turn_cap_at(&self) -> Option<Instant> {
        let turn = self.caller.as_ref().filter(|t| !t.capped)?;
        Some(turn.opened_at + self.config.max_turn)
    }

    fn end_caller_turn(&mut self, now: Instant) {
        let Some(turn) = self.caller.as_mut() else {
            self.complete_caller_turn(now);
            return;
        };
        if turn.listening {
            turn.listening = false;
            turn.finishing += 1;
            self.outputs.push_back(Output::FinishStt);
        }
        if turn.finishing > 0 {
            self.phase = Phase::AwaitingFinal { since: now };
        } else {
            self.complete_caller_turn(now);
        }
    }

    /// The turn's words are in: record them and ask the brain (or reprompt,
    /// or hand off, when they are unusable).
    fn complete_caller_turn(&mut self, now: Instant) {
        let Some(turn) = self.caller.take() else {
            self.resume_after_turn(now);
            return;
        };
        if turn.streams_open() {
            self.outputs.push_back(Output::CancelStt);
        }
        let utterance = if turn.text.is_empty() {
            turn.partial.trim().to_string()
        } else {
            turn.text.clone()
        };
        let speech_end = turn.last_input_at.unwrap_or(now);
        if turn.holds > 0 || turn.segments > 1 {
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::EndOfTurn,
                json: serde_json::json!({
                    "segments": turn.segments,
                    "held": turn.holds,
                    "silence_ms": now.saturating_duration_since(speech_end).as_millis() as u64,
                    "why": "the words looked unfinished (a number, an address)",
                }),
            });
        }
        if utterance.is_empty() && turn.dtmf.is_empty() {
            self.unheard(now, &turn);
            return;
        }
        if turn.dtmf.is_empty()
            && !self.handed_off
            && self.pending.is_none()
            && (turn.confidence < self.config.min_confidence || looks_foreign(&utterance))
        {
            self.unclear(now, &turn, utterance, speech_end);
            return;
        }
        self.not_heard_streak = 0;
        self.unclear_streak = 0;
        if turn.stt_error.is_none() {
            self.stt_failures = 0;
        }
        // The caller said more while the brain was deciding: what it decides
        // no longer answers them. Ask again, with everything they said.
        let mut event = self.event.take();
        if let Some(stale) = self.pending.take() {
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::StaleDecision,
                json: serde_json::json!({
                    "turn": stale.id,
                    "why": "the caller spoke again before the decision was used",
                    "decision_arrived": stale.held.is_some(),
                }),
            });
            event = event.or(stale.event);
        }
        self.turns += 1;
        let id = TurnId::from(u64::from(self.turns));
        if !utterance.is_empty() {
            let started = turn.started_at.unwrap_or(speech_end);
            self.outputs.push_back(Output::Transcript {
                speaker: Speaker::Caller,
                text: utterance.clone(),
                started_at: self.wall(started),
                ended_at: self.wall(speech_end),
                interrupted: false,
            });
            self.first_question.get_or_insert_with(|| utterance.clone());
        }
        let dtmf = (!turn.dtmf.is_empty()).then_some(turn.dtmf);
        let mut said = utterance.clone();
        if let Some(dtmf) = &dtmf {
            said = if said.is_empty() {
                format!("[keys {dtmf}]")
            } else {
                format!("{said} [keys {dtmf}]")
            };
        }
        let ask = AgentTurn {
            id,
            history: self.history.clone(),
            utterance,
            dtmf,
            now: self.wall(now),
            event: event.clone(),
            last_applied: self.last_applied,
        };
        self.history.push((Speaker::Caller, said));
        self.pending = Some(PendingAsk {
            id,
            asked_at: now,
            speech_end,
            event,
            held: None,
            early: Vec::new(),
            queue: VecDeque::new(),
        });
        self.phase = Phase::AwaitingDecision;
        self.outputs.push_back(Output::Ask(ask));
    }

    /// A caller turn ended without words: go back to what we were doing.
    fn resume_after_turn(&mut self, now: Instant) {
        let held = self.pending.as_mut().and_then(|p| p.held.take());
        match held {
            Some((decided_at, decision)) => {
                if let Some(pending) = self.pending.take() {
                    self.apply_decision(now, decided_at, &pending, decision);
                }
            }
            None if self.pending.is_some() => self.phase = Phase::AwaitingDecision,
            None => self.phase = Phase::Listening { since: now },
        }
    }

    /// A turn without words: noise, or a transcription that failed. Never
    /// silence in return when the caller clearly spoke, never a brain call,
    /// and a handoff once recognition keeps failing.
    fn unheard(&mut self, now: Instant, turn: &CallerTurn) {
        let voiced_ms = (FRAME_DURATION * turn.voiced_frames).as_millis() as u64;
        let Some(error) = &turn.stt_error else {
            // Noise, a cough, a word the STT could not make out.
            let speech_like =
                FRAME_DURATION * turn.voiced_frames >= self.config.not_heard_min_speech;
            let then = if self.pending.is_some() {
                "ignored: a decision is coming"
            } else if !speech_like {
                "ignored: too short to be speech"
            } else if self.not_heard_streak < self.config.max_not_heard {
                "reprompt"
            } else {
                "ignored: reprompted enough"
            };
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::Unheard,
                json: serde_json::json!({ "why": "no words", "voiced_ms": voiced_ms, "then": then }),
            });
            if then == "reprompt" {
                self.not_heard_streak += 1;
                let say = self.config.not_heard_reprompt.clone();
                self.say_reprompt(now, say);
            } else {
                self.resume_after_turn(now);
            }
            return;
        };
        self.stt_failures += 1;
        let give_up = self.stt_failures >= self.config.max_stt_failures;
        let then = match (give_up, self.handed_off) {
            (true, false) => "logged escalation",
            (true, true) => "hang up",
            (false, _) if self.pending.is_some() => "ignored: a decision is coming",
            (false, _) => "apology",
        };
        self.outputs.push_back(Output::Trace {
            kind: TraceKind::Unheard,
            json: serde_json::json!({
                "why": "speech recognition failed",
                "error": error,
                "failures_in_a_row": self.stt_failures,
                "then": then,
            }),
        });
        match then {
            "logged escalation" => {
                let say = self.config.stt_failed_message.clone();
                self.hand_off_not_understood(now, "speech recognition is failing", say);
            }
            "hang up" => {
                self.pending = None;
                let farewell = self.config.stt_failed_farewell.clone();
                self.say(now, farewell, Then::Hangup(EndReason::SpeechFailure), None);
            }
            "apology" => {
                let say = self.config.not_heard_reprompt.clone();
                self.say_reprompt(now, say);
            }
            _ => self.resume_after_turn(now),
        }
    }

    /// Words the machine does not trust: low STT confidence, or another
    /// language than the agent's. Ask once to repeat, then hand off.
    fn unclear(&mut self, now: Instant, turn: &CallerTurn, utterance: String, speech_end: Instant) {
        self.unclear_streak += 1;
        let foreign = looks_foreign(&utterance);
        let reprompt = self.unclear_streak <= self.config.max_unclear;
        self.outputs.push_back(Output::Trace {
            kind: TraceKind::Unheard,
            json: serde_json::json!({
                "why": if foreign { "another language" } else { "low confidence" },
                "confidence": turn.confidence,
                "min_confidence": self.config.min_confidence,
                "unclear_in_a_row": self.unclear_streak,
                "then": if reprompt { "reprompt" } else { "logged escalation" },
            }),
        });
        // What the STT made of it stays in the transcript for the reviewer.
        let started = turn.started_at.unwrap_or(speech_end);
        self.outputs.push_back(Output::Transcript {
            speaker: Speaker::Caller,
            text: utterance.clone(),
            started_at: self.wall(started),
            ended_at: self.wall(speech_end),
            interrupted: false,
        });
        self.history.push((Speaker::Caller, utterance));
        if reprompt {
            let say = self.config.language_reprompt.clone();
            self.say(now, say, Then::Listen, None);
        } else {
            let say = self.config.unclear_handoff_message.clone();
            self.hand_off_not_understood(
                now,
                "The caller could not be understood (another language, or a poor line)",
                say,
            );
        }
    }

    /// The machine hands off by itself as a logged escalation (the caller
    /// cannot be understood); the next ask carries
    /// [`TurnEvent::NotUnderstood`] so the agent runs the follow-up.
    fn hand_off_not_understood(&mut self, now: Instant, reason: &str, say: String) {
        let handoff = HandoffRequest {
            summary: summarise(self.first_question.as_deref(), reason, "not given yet"),
            reason: reason.to_string(),
            mode: HandoffMode::LoggedEscalation,
        };
        self.handed_off = true;
        self.pending = None;
        self.outputs.push_back(Output::Handoff(handoff.clone()));
        self.event = Some(TurnEvent::NotUnderstood { handoff });
        self.say(now, say, Then::Listen, None);
    }

    /// Say something the caller did not ask for: it does not restart the
    /// silence clock, so reprompts alone never keep a call alive.
    fn say_reprompt(&mut self, now: Instant, text: String) {
        self.say(now, text, Then::Listen, None);
        if let Some(speech) = self.speech.as_mut() {
            speech.is_reprompt = true;
        }
    }

    fn handle_decision(&mut self, now: Instant, id: TurnId, decision: Decision) {
        let awaited = self
            .pending
            .as_ref()
            .filter(|p| p.held.is_none())
            .map(|p| p.id);
        if awaited != Some(id) {
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::StaleDecision,
                json: serde_json::json!({
                    "turn": id,
                    "awaiting": awaited,
                    "why": "no longer waiting for a decision on that turn",
                    "decision": decision.trace(),
                }),
            });
            return;
        }
        match self.phase {
            Phase::AwaitingDecision => {
                if let Some(pending) = self.pending.take() {
                    self.apply_decision(now, now, &pending, decision);
                }
            }
            // The caller is talking again: keep it until we know whether
            // they said something new. Or early sentences are playing:
            // keep it until they are done.
            Phase::CallerTurn
            | Phase::AwaitingFinal { .. }
            | Phase::Unfinished { .. }
            | Phase::Speaking => {
                if let Some(pending) = self.pending.as_mut() {
                    pending.held = Some((now, decision));
                }
            }
            _ => self.pending = None,
        }
    }

    fn handle_sentence(&mut self, now: Instant, id: TurnId, text: String) {
        let text = text.trim().to_string();
        let speaking_early = self
            .speech
            .as_ref()
            .is_some_and(|s| s.then == Then::AwaitDecision);
        let phase = self.phase;
        let Some(pending) = self
            .pending
            .as_mut()
            .filter(|p| p.id == id && p.held.is_none())
        else {
            return; // a superseded turn, or the decision is already in
        };
        if text.is_empty() {
            return;
        }
        match phase {
            Phase::AwaitingDecision => {
                let latency = pending.early.is_empty().then_some(Latency {
                    speech_end: pending.speech_end,
                    stt_final: pending.asked_at,
                    decision: now,
                    first_tts: None,
                });
                pending.early.push(text.clone());
                self.say(now, text, Then::AwaitDecision, latency);
            }
            Phase::Speaking if speaking_early => pending.queue.push_back(text),
            // The caller is talking: whatever they say next decides.
            _ => {}
        }
    }

    fn apply_decision(
        &mut self,
        now: Instant,
        decided_at: Instant,
        pending: &PendingAsk,
        decision: Decision,
    ) {
        self.last_applied = Some(pending.id);
        if let Ok(json) = serde_json::to_value(decision.trace()) {
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::Decision,
                json,
            });
        }
        // Early sentences already carried the latency and part of the words.
        let early = pending.early.join(" ");
        let latency = early.is_empty().then_some(Latency {
            speech_end: pending.speech_end,
            stt_final: pending.asked_at,
            decision: decided_at,
            first_tts: None,
        });
        let (text, then) = match decision {
            Decision::Reply { say, .. } | Decision::Collect { say, .. } => (say, Then::Listen),
            Decision::Handoff { handoff, say, .. } => {
                self.handed_off = true;
                let then = match handoff.mode {
                    HandoffMode::LiveTransfer => {
                        self.transfer = Some(handoff.clone());
                        Then::Hold
                    }
                    HandoffMode::LoggedEscalation => Then::Listen,
                };
                let say = if say.is_empty() && then == Then::Hold {
                    self.config.hold_message.clone()
                } else {
                    say
                };
                self.outputs.push_back(Output::Handoff(handoff));
                (say, then)
            }
            Decision::EndCall {
                reason, farewell, ..
            } => (farewell, Then::Hangup(EndReason::Agent(reason))),
        };
        if early.is_empty() {
            self.say(now, text, then, latency);
            return;
        }
        // An agent that broke the contract gets its whole answer said.
        let rest = text
            .strip_prefix(early.as_str())
            .map_or(text.as_str(), str::trim)
            .to_string();
        if !rest.is_empty() {
            self.say(now, rest, then, None);
            return;
        }
        match then {
            Then::Listen | Then::AwaitDecision => {
                self.silence_since = now;
                self.phase = Phase::Listening { since: now };
            }
            Then::Hold => self.phase = Phase::Holding,
            Then::Hangup(reason) => self.end(reason),
        }
    }

    /// The brain did not answer in time: apologise and hand off as a logged
    /// escalation, or, when a handoff is already under way, give up politely.
    fn decision_timed_out(&mut self, now: Instant) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        self.outputs.push_back(Output::Trace {
            kind: TraceKind::DecisionTimeout,
            json: serde_json::json!({
                "turn": pending.id,
                "waited_ms": now.saturating_duration_since(pending.asked_at).as_millis() as u64,
                "then": if self.handed_off { "hang up" } else { "logged escalation" },
            }),
        });
        if self.handed_off {
            let farewell = self.config.agent_unavailable_farewell.clone();
            self.say(
                now,
                farewell,
                Then::Hangup(EndReason::AgentUnavailable),
                None,
            );
            return;
        }
        let reason = "The AI did not answer in time".to_string();
        let handoff = HandoffRequest {
            summary: summarise(self.first_question.as_deref(), &reason, "not given yet"),
            reason,
            mode: HandoffMode::LoggedEscalation,
        };
        self.handed_off = true;
        self.outputs.push_back(Output::Handoff(handoff.clone()));
        self.event = Some(TurnEvent::DecisionTimedOut { handoff });
        let say = self.config.decision_timeout_message.clone();
        self.say(now, say, Then::Listen, None);
    }

    fn handle_transfer(&mut self, now: Instant, result: TransferResult) {
        let Some(handoff) = self.transfer.take() else {
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::Transfer,
                json: serde_json::json!({
                    "result": transfer_result_name(&result),
                    "ignored": "no live transfer under way",
                }),
            });
            return;
        };
        match result {
            TransferResult::Connected => {
                self.interrupt_speech(now);
                self.outputs.retain(|o| !matches!(o, Output::Play(_)));
                self.drop_caller_turn();
                self.pending = None;
                self.outputs.push_back(Output::Trace {
                    kind: TraceKind::Transfer,
                    json: serde_json::json!({ "result": "connected" }),
                });
                self.outputs.push_back(Output::Bridged);
                self.phase = Phase::Bridged;
            }
            TransferResult::Failed { reason } => {
                self.outputs.push_back(Output::Trace {
                    kind: TraceKind::Transfer,
                    json: serde_json::json!({
                        "result": "failed",
                        "reason": reason,
                        "then": "logged escalation",
                    }),
                });
                self.caller = None;
                self.pending = None;
                let handoff = HandoffRequest {
                    mode: HandoffMode::LoggedEscalation,
                    ..handoff
                };
                self.event = Some(TurnEvent::TransferFailed { handoff, reason });
                let say = self.config.transfer_failed_message.clone();
                self.say(now, say, Then::Listen, None);
            }
        }
    }

    fn say(&mut self, now: Instant, text: String, then: Then, latency: Option<Latency>) {
        self.interrupt_speech(now);
        self.generation = self.generation.next();
        let generation = self.generation;
        self.outputs.push_back(Output::Say {
            generation,
            text: text.clone(),
        });
        self.speech = Some(Utterance {
            generation,
            text,
            then,
            is_reprompt: false,
            queue: VecDeque::new(),
            received: 0,
            played: 0,
            done: false,
            said_at: now,
            last_tts_at: now,
            first_play_at: None,
            next_play_at: None,
            latency,
        });
        self.barge_frames = 0;
        self.phase = Phase::Speaking;
    }

    fn end(&mut self, reason: EndReason) {
        self.speech = None;
        self.drop_caller_turn();
        self.pending = None;
        self.transfer = None;
        self.outputs.retain(|o| !matches!(o, Output::Play(_)));
        self.outputs.push_back(Output::Hangup(reason));
        self.phase = Phase::Ended;
    }

    fn louder_than_echo(&self, level: Level) -> bool {
        let ours = self
            .played_levels
            .iter()
            .copied()
            .fold(None, |max: Option<Level>, l| {
                Some(max.map_or(l, |m| if l.dbfs() > m.dbfs() { l } else { m }))
            });
        ours.is_none_or(|ours| level.exceeds(ours, self.config.echo_margin_db))
    }

    fn next_deadline(&self) -> Instant {
        let far = self.now + Duration::from_secs(3600);
        if matches!(self.phase, Phase::Ended | Phase::Bridged) {
            return far;
        }
        let mut deadline = far;
        if !self.time_limit_reached {
            deadline = deadline.min(self.started + self.config.max_duration);
        }
        if let Some(speech) = &self.speech {
            // The next frame is due, or the last one ends (then the utterance
            // finishes). A TTS underrun waits for the next frame, up to the
            // stall timeout (a past deadline would make the driver spin).
            if let Some(at) = speech.next_play_at {
                if !speech.queue.is_empty() || at > self.now {
                    deadline = deadline.min(at);
                }
            }
            if !speech.done && speech.queue.is_empty() {
                deadline = deadline.min(speech.last_tts_at + self.config.tts_stall_timeout);
            }
        }
        match self.phase {
            Phase::CallerTurn => {
                if let Some(at) = self.end_of_turn_at() {
                    deadline = deadline.min(at);
                }
                if let Some(at) = self.turn_cap_at() {
                    deadline = deadline.min(at);
                }
            }
            Phase::Unfinished { until } => deadline = deadline.min(until),
            Phase::AwaitingFinal { since } => {
                deadline = deadline.min(since + self.config.stt_final_timeout);
            }
            Phase::AwaitingDecision => {
                if let Some(pending) = &self.pending {
                    deadline = deadline.min(pending.asked_at + self.config.decision_timeout);
                }
            }
            Phase::Listening { since } => {
                deadline = deadline
                    .min(since + self.config.reprompt_after)
                    .min(self.silence_since + self.config.max_silence);
            }
            _ => {}
        }
        deadline.max(self.now)
    }

    fn wall(&self, at: Instant) -> Timestamp {
        let offset = at.saturating_duration_since(self.started).as_millis();
        Timestamp::from_millis(
            self.wall_start
                .as_millis()
                .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX)),
        )
    }
}

fn latency_trace(turn: u32, l: &Latency, first_play: Instant) -> Output {
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_millis() as u64;
    let first_tts = l.first_tts.unwrap_or(first_play);
    Output::Trace {
        kind: TraceKind::Latency,
        json: serde_json::json!({
            "turn": turn,
            "speech_end_to_stt_final_ms": ms(l.speech_end, l.stt_final),
            "stt_final_to_decision_ms": ms(l.stt_final, l.decision),
            "decision_to_first_tts_ms": ms(l.decision, first_tts),
            "first_tts_to_first_play_ms": ms(first_tts, first_play),
            "speech_end_to_first_play_ms": ms(l.speech_end, first_play),
        }),
    }
}

fn transfer_result_name(result: &TransferResult) -> &'static str {
    match result {
        TransferResult::Connected => "connected",
        TransferResult::Failed { .. } => "failed",
    }
}

/// The part of `text` a listener heard after `fraction` of its audio, cut
/// back to a word boundary.
fn heard_prefix(text: &str, fraction: f64) -> &str {
    if fraction >= 1.0 {
        return text;
    }
    let keep = (text.chars().count() as f64 * fraction.max(0.0)).floor() as usize;
    let Some((byte, _)) = text.char_indices().nth(keep) else {
        return text;
    };
    let head = &text[..byte];
    if text[byte..].starts_with(char::is_whitespace) {
        head.trim_end()
    } else {
        match head.rfind(char::is_whitespace) {
            Some(i) => head[..i].trim_end(),
            None => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_agent::{
        Agent, EndReason as AgentEndReason, HandoffRequest, Rule, TraceInfo, TurnContext,
    };

    const TICK: Duration = FRAME_DURATION;

    /// An agent that answers from a script and remembers what it was asked.
    #[derive(Default)]
    struct ScriptedAgent {
        replies: VecDeque<Decision>,
        heard: Vec<(String, Option<String>)>,
    }

    impl Agent for ScriptedAgent {
        fn respond(&mut self, ctx: &TurnContext<'_>) -> Decision {
            self.heard
                .push((ctx.utterance.to_string(), ctx.dtmf.map(str::to_string)));
            self.replies.pop_front().unwrap_or_else(|| reply("Okay."))
        }

        fn fall_back_to_escalation(&mut self, _handoff: &HandoffRequest) {}
    }

    fn trace() -> TraceInfo {
        TraceInfo {
            rule: Rule::SmallTalk,
            why: "scripted".into(),
            at: Timestamp::from_millis(0),
            entry: None,
            candidates: Vec::new(),
            thresholds: None,
            phrase: None,
            repeats: None,
            no_match_streak: 0,
            llm: None,
        }
    }

    fn reply(text: &str) -> Decision {
        Decision::Reply {
            say: text.into(),
            trace: trace(),
        }
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

    /// TTS audio: a tone whose amplitude names its generation, so a played
    /// frame tells which utterance it came from.
    fn tts_frame(generation: Generation) -> Frame {
        square(4000 + generation.value() as i16)
    }

    fn generation_of(frame: &Frame) -> u64 {
        (frame.samples()[0] - 4000) as u64
    }

    fn voice() -> Frame {
        square(16_000)
    }

    /// A call on virtual time with a fake TTS (all frames at once) and a fake
    /// STT (answers `FinishStt` with the next scripted final).
    struct Sim {
        call: Call,
        agent: ScriptedAgent,
        /// Asks the agent has not answered yet (all of them when `manual`).
        asks: VecDeque<AgentTurn>,
        /// Leave asks for the test to answer instead of answering at once.
        manual: bool,
        t0: Instant,
        now: Instant,
        tts_frames: usize,
        /// The TTS never answers (a hung provider).
        tts_hangs: bool,
        finals: VecDeque<String>,
        /// Confidence of the scripted finals.
        confidence: f32,
        /// This many next `FinishStt`s are answered with an error.
        stt_errors: u32,
        /// Leave `FinishStt`s for the test to answer ([`Sim::final_now`]).
        late_finals: bool,
        owed_finals: usize,
        /// (time, generation) of every frame played.
        played: Vec<(Instant, u64)>,
        /// Everything else the call asked for, with the time.
        log: Vec<(Instant, Output)>,
    }

    /// What the fake TTS and STT answer once the outputs are drained.
    enum FollowUp {
        TtsFrame(Generation),
        TtsDone(Generation),
        Final,
        Decide(AgentTurn),
    }

    impl Sim {
        fn new(replies: Vec<Decision>) -> Self {
            Self::with_config(replies, Config::default(), 10)
        }

        fn with_config(replies: Vec<Decision>, config: Config, tts_frames: usize) -> Self {
            let t0 = Instant::now();
            let agent = ScriptedAgent {
                replies: replies.into(),
                heard: Vec::new(),
            };
            let call = Call::new("Hello, Acme Dental.", config, t0)
                .with_wall_clock(Timestamp::from_millis(1_000_000));
            let mut sim = Sim {
                call,
                agent,
                asks: VecDeque::new(),
                manual: false,
                t0,
                now: t0,
                tts_frames,
                tts_hangs: false,
                finals: VecDeque::new(),
                confidence: 0.9,
                stt_errors: 0,
                late_finals: false,
                owed_finals: 0,
                played: Vec::new(),
                log: Vec::new(),
            };
            sim.drain();
            sim
        }

        fn feed(&mut self, input: Input<'_>) {
            if self.call.is_ended() {
                return; // a driver stops feeding after the hangup
            }
            self.call.handle_input(input).expect("call accepts input");
            self.drain();
        }

        fn drain(&mut self) {
            let mut follow_ups = Vec::new();
            loop {
                let output = self.call.poll_output();
                match output {
                    Output::Timeout(at) => {
                        assert!(at >= self.now, "deadlines are never in the past");
                        break;
                    }
                    Output::Play(frame) => self.played.push((self.now, generation_of(&frame))),
                    Output::Say { generation, .. } if self.tts_hangs => {
                        self.log.push((
                            self.now,
                            Output::Say {
                                generation,
                                text: String::new(),
                            },
                        ));
                    }
                    Output::Say { generation, .. } => {
                        for _ in 0..self.tts_frames {
                            follow_ups.push(FollowUp::TtsFrame(generation));
                        }
                        follow_ups.push(FollowUp::TtsDone(generation));
                        self.log.push((self.now, output));
                    }
                    Output::FinishStt if self.late_finals => {
                        self.owed_finals += 1;
                        self.log.push((self.now, output));
                    }
                    Output::FinishStt => {
                        follow_ups.push(FollowUp::Final);
                        self.log.push((self.now, output));
                    }
                    Output::Ask(turn) => {
                        if self.manual {
                            self.asks.push_back(turn.clone());
                        } else {
                            follow_ups.push(FollowUp::Decide(turn.clone()));
                        }
                        self.log.push((self.now, Output::Ask(turn)));
                    }
                    other => self.log.push((self.now, other)),
                }
            }
            let now = self.now;
            for follow_up in follow_ups {
                match follow_up {
                    FollowUp::TtsFrame(generation) => {
                        self.feed(Input::TtsFrame(now, generation, tts_frame(generation)))
                    }
                    FollowUp::TtsDone(generation) => self.feed(Input::TtsDone(now, generation)),
                    FollowUp::Final => {
                        let event = self.next_final();
                        self.feed(Input::Stt(now, event));
                    }
                    FollowUp::Decide(turn) => {
                        let decision = self.agent.answer(&turn);
                        self.feed(Input::Decision(now, turn.id, decision));
                    }
                }
            }
        }

        fn next_final(&mut self) -> SttEvent {
            if self.stt_errors > 0 {
                self.stt_errors -= 1;
                return SttEvent::Error {
                    message: "scripted failure".into(),
                };
            }
            SttEvent::Final {
                text: self.finals.pop_front().unwrap_or_default(),
                confidence: self.confidence,
            }
        }

        /// The STT answers the oldest owed `FinishStt` now.
        fn final_now(&mut self) {
            assert!(self.owed_finals > 0, "no final owed");
            self.owed_finals -= 1;
            let event = self.next_final();
            let now = self.now;
            self.feed(Input::Stt(now, event));
        }

        fn count(&self, pred: impl Fn(&Output) -> bool) -> usize {
            self.log.iter().filter(|(_, o)| pred(o)).count()
        }

        /// One 20 ms tick: caller audio, then the timer.
        fn tick(&mut self, caller: &Frame) {
            self.now += TICK;
            let now = self.now;
            self.feed(Input::Audio(now, caller));
            self.feed(Input::Timeout(now));
        }

        fn ticks(&mut self, n: usize, caller: &Frame) {
            for _ in 0..n {
                self.tick(caller);
            }
        }

        fn run_for(&mut self, d: Duration, caller: &Frame) {
            self.ticks((d.as_millis() / TICK.as_millis()) as usize, caller);
        }

        fn says(&self) -> Vec<(Generation, String)> {
            self.log
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::Say { generation, text } => Some((*generation, text.clone())),
                    _ => None,
                })
                .collect()
        }

        /// The agent answers the oldest unanswered ask now.
        fn decide(&mut self) -> TurnId {
            let turn = self.asks.pop_front().expect("an ask to answer");
            let decision = self.agent.answer(&turn);
            let now = self.now;
            self.feed(Input::Decision(now, turn.id, decision));
            turn.id
        }

        fn traces(&self, kind: TraceKind) -> Vec<serde_json::Value> {
            self.log
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::Trace { kind: k, json } if *k == kind => Some(json.clone()),
                    _ => None,
                })
                .collect()
        }

        fn first(&self, pred: impl Fn(&Output) -> bool) -> Option<Instant> {
            self.log.iter().find(|(_, o)| pred(o)).map(|(t, _)| *t)
        }

        fn transcripts(&self) -> Vec<(Speaker, String, bool)> {
            self.log
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::Transcript {
                        speaker,
                        text,
                        interrupted,
                        ..
                    } => Some((*speaker, text.clone(), *interrupted)),
                    _ => None,
                })
                .collect()
        }

        /// Caller says something: `frames` of voice, then silence until the
        /// machine has answered.
        fn caller_says(&mut self, text: &str, frames: usize) {
            self.finals.push_back(text.into());
            self.ticks(frames, &voice());
            self.run_for(Duration::from_millis(700), &Frame::silence());
        }
    }

    #[test]
    fn greeting_plays_then_the_caller_has_the_floor() {
        let mut sim = Sim::new(vec![]);
        assert_eq!(
            sim.says(),
            vec![(Generation(1), "Hello, Acme Dental.".into())]
        );
        sim.ticks(15, &Frame::silence());
        assert_eq!(sim.played.len(), 10);
        assert!(sim.played.iter().all(|(_, g)| *g == 1));
        // Paced: one frame per tick.
        assert!(sim.played.windows(2).all(|w| w[1].0 - w[0].0 == TICK));
        assert_eq!(
            sim.transcripts(),
            vec![(Speaker::Ai, "Hello, Acme Dental.".into(), false)]
        );
        assert!(sim.call.speaking().is_none());
    }

    #[test]
    fn a_plain_sentence_ends_after_250_ms_of_silence_then_the_agent_replies() {
        let mut sim = Sim::new(vec![reply("We open at nine.")]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("When do you open?".into());
        sim.ticks(25, &voice());
        let speech_end = sim.now;
        assert!(sim.log.iter().any(|(_, o)| *o == Output::StartStt));
        sim.run_for(Duration::from_millis(1000), &Frame::silence());

        let finish = sim.first(|o| *o == Output::FinishStt).expect("FinishStt");
        let waited = finish - speech_end;
        assert!(
            waited >= Duration::from_millis(250) && waited <= Duration::from_millis(280),
            "{waited:?}"
        );
        assert_eq!(
            sim.agent.heard,
            vec![("When do you open?".to_string(), None)]
        );
        assert_eq!(sim.says()[1].1, "We open at nine.");
        assert!(sim.played.iter().any(|(_, g)| *g == 2));
        let transcripts = sim.transcripts();
        assert_eq!(
            transcripts[1],
            (Speaker::Caller, "When do you open?".into(), false)
        );
        assert_eq!(
            transcripts[2],
            (Speaker::Ai, "We open at nine.".into(), false)
        );
        assert_eq!(sim.call.history().len(), 3);
    }

    #[test]
    fn latency_trace_per_turn() {
        let mut sim = Sim::new(vec![reply("One."), reply("Two.")]);
        sim.ticks(15, &Frame::silence());
        sim.caller_says("first", 20);
        sim.ticks(15, &Frame::silence());
        sim.caller_says("second", 20);
        sim.ticks(15, &Frame::silence());
        let latencies: Vec<&serde_json::Value> = sim
            .log
            .iter()
            .filter_map(|(_, o)| match o {
                Output::Trace {
                    kind: TraceKind::Latency,
                    json,
                } => Some(json),
                _ => None,
            })
            .collect();
        assert_eq!(latencies.len(), 2);
        for (i, l) in latencies.iter().enumerate() {
            assert_eq!(l["turn"], i as u64 + 1);
            let total = l["speech_end_to_first_play_ms"].as_u64().expect("ms");
            assert!((250..=310).contains(&total), "{l}");
            assert!(l["decision_to_first_tts_ms"].is_u64());
        }
        let decisions = sim
            .log
            .iter()
            .filter(|(_, o)| {
                matches!(
                    o,
                    Output::Trace {
                        kind: TraceKind::Decision,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(decisions, 2);
    }

    #[test]
    fn barge_in_stops_playback_within_two_frames_and_drops_stale_audio() {
        let long = "We are open Monday to Friday from nine to five and on Saturday mornings.";
        let mut sim = Sim::new(vec![reply(long)]);
        sim.ticks(15, &Frame::silence());
        sim.tts_frames = 50;
        sim.caller_says("When are you open?", 20);
        let reply_plays = sim.played.iter().filter(|(_, g)| *g == 2).count();
        assert!(reply_plays > 0, "the reply started playing");
        sim.ticks(15, &Frame::silence()); // ~300 ms into the reply

        sim.tick(&voice());
        sim.tick(&voice());
        let barge_at = sim.now;
        let cancel = sim
            .first(|o| {
                *o == Output::CancelSpeech {
                    generation: Generation(2),
                }
            })
            .expect("speech cancelled");
        assert_eq!(cancel, barge_at, "stopped on the second loud frame");
        assert!(
            sim.played.iter().all(|(t, _)| *t < barge_at),
            "nothing played from the barge-in tick on"
        );
        let heard_frames = sim.played.iter().filter(|(_, g)| *g == 2).count();

        // Late audio of the interrupted generation is dropped.
        let now = sim.now;
        sim.feed(Input::TtsFrame(
            now,
            Generation(2),
            tts_frame(Generation(2)),
        ));
        sim.feed(Input::TtsDone(now, Generation(2)));
        sim.ticks(5, &voice());
        assert!(sim.played.iter().all(|(t, _)| *t < barge_at));
        assert_eq!(sim.call.speaking(), None);

        // Recorded as heard: cut in proportion, at a word boundary.
        let (speaker, text, interrupted) = sim.transcripts()[2].clone();
        assert_eq!(speaker, Speaker::Ai);
        assert!(interrupted);
        assert!(long.starts_with(&text) && text.len() < long.len(), "{text}");
        let expected = long.len() * heard_frames / 50;
        assert!(
            text.len() <= expected && text.len() + 12 >= expected,
            "{text}"
        );
        assert!(long[text.len()..].starts_with(' '));
        assert_eq!(sim.call.history()[2].1, text);
    }

    #[test]
    fn echo_of_our_own_playback_does_not_barge_in() {
        let mut sim = Sim::with_config(vec![], Config::default(), 60);
        // The caller's side carries our greeting back, 6 dB down, plus a loud
        // burst in the first 200 ms (guard window).
        sim.ticks(1, &Frame::silence());
        sim.ticks(5, &voice());
        for _ in 0..60 {
            let echo = sim
                .played
                .last()
                .map(|(_, g)| tts_frame(Generation(*g)).scaled(0.5))
                .unwrap_or_else(Frame::silence);
            sim.tick(&echo);
        }
        assert!(sim
            .first(|o| matches!(o, Output::CancelSpeech { .. }))
            .is_none());
        assert_eq!(sim.played.len(), 60);
        assert_eq!(
            sim.transcripts(),
            vec![(Speaker::Ai, "Hello, Acme Dental.".into(), false)]
        );
    }

    #[test]
    fn digits_extend_the_end_of_turn() {
        let mut sim = Sim::new(vec![]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("my number is 415 555".into());
        sim.ticks(10, &voice());
        let now = sim.now;
        sim.feed(Input::Stt(
            now,
            SttEvent::Partial {
                text: "my number is four one five".into(),
            },
        ));
        sim.run_for(Duration::from_millis(1000), &Frame::silence());
        assert!(sim.first(|o| *o == Output::FinishStt).is_none());
        sim.run_for(Duration::from_millis(600), &Frame::silence());
        let finish = sim.first(|o| *o == Output::FinishStt).expect("FinishStt");
        let waited = finish - now;
        assert!(
            waited >= Duration::from_millis(1500) && waited <= Duration::from_millis(1540),
            "{waited:?}"
        );
    }

    #[test]
    fn dtmf_reaches_the_agent() {
        let mut sim = Sim::new(vec![reply("Thanks.")]);
        sim.ticks(15, &Frame::silence());
        for key in ['4', '2', '#'] {
            let now = sim.now;
            sim.feed(Input::Dtmf(now, key));
            sim.tick(&Frame::silence());
        }
        assert_eq!(sim.agent.heard, vec![(String::new(), Some("42#".into()))]);
        assert_eq!(sim.says()[1].1, "Thanks.");
    }

    #[test]
    fn silence_reprompts_then_hangs_up() {
        let mut sim = Sim::new(vec![]);
        sim.run_for(Duration::from_secs(30), &Frame::silence());
        let texts: Vec<String> = sim.says().into_iter().map(|(_, t)| t).collect();
        let config = Config::default();
        assert_eq!(texts[0], "Hello, Acme Dental.");
        assert!(texts[1..texts.len() - 1]
            .iter()
            .all(|t| *t == config.reprompt));
        assert!(texts.len() >= 3);
        assert_eq!(texts.last(), Some(&config.silence_farewell));
        let reprompt = sim
            .first(|o| matches!(o, Output::Say { text, .. } if *text == config.reprompt))
            .expect("reprompt");
        let greeting_end = sim.t0 + TICK * 10;
        assert!(reprompt - greeting_end >= config.reprompt_after);
        assert!(sim.call.is_ended());
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::Silence)))
        ));
        // The farewell was played in full before the hangup.
        let farewell_gen = sim.says().last().map(|(g, _)| g.value());
        assert_eq!(
            sim.played
                .iter()
                .filter(|(_, g)| Some(*g) == farewell_gen)
                .count(),
            10
        );
    }

    #[test]
    fn live_handoff_is_announced_and_holds() {
        let handoff = HandoffRequest {
            reason: "caller asked for a person".into(),
            summary: "Caller asked: a person.".into(),
            mode: HandoffMode::LiveTransfer,
        };
        let mut sim = Sim::new(vec![Decision::Handoff {
            handoff: handoff.clone(),
            say: "Let me connect you. Please hold.".into(),
            trace: trace(),
        }]);
        sim.ticks(15, &Frame::silence());
        sim.caller_says("a person please", 20);
        assert!(sim
            .log
            .iter()
            .any(|(_, o)| *o == Output::Handoff(handoff.clone())));
        assert_eq!(sim.says()[1].1, "Let me connect you. Please hold.");
        sim.run_for(Duration::from_secs(30), &Frame::silence());
        assert_eq!(sim.says().len(), 2, "no reprompt while holding");
        assert!(!sim.call.is_ended());
    }

    #[test]
    fn end_call_says_farewell_then_hangs_up() {
        let mut sim = Sim::new(vec![Decision::EndCall {
            reason: AgentEndReason::CallerDone,
            farewell: "Goodbye!".into(),
            trace: trace(),
        }]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("bye".into());
        sim.ticks(20, &voice());
        sim.run_for(Duration::from_millis(300), &Frame::silence());
        assert_eq!(sim.says()[1].1, "Goodbye!");
        assert!(!sim.call.is_ended(), "farewell still playing");
        // Talking over the farewell does not cut it.
        sim.ticks(5, &voice());
        sim.ticks(10, &Frame::silence());
        assert!(sim.call.is_ended());
        assert_eq!(sim.played.iter().filter(|(_, g)| *g == 2).count(), 10);
        assert!(matches!(
            sim.log.last(),
            Some((
                _,
                Output::Hangup(EndReason::Agent(AgentEndReason::CallerDone))
            ))
        ));
        let now = sim.now;
        assert!(matches!(
            sim.call.handle_input(Input::Timeout(now)),
            Err(CallError::Ended)
        ));
    }

    #[test]
    fn caller_hangup_records_what_was_heard() {
        let mut sim = Sim::new(vec![]);
        sim.ticks(4, &Frame::silence());
        let now = sim.now;
        sim.feed(Input::Hangup(now));
        assert!(sim.call.is_ended());
        let t = sim.transcripts();
        assert_eq!(t.len(), 1);
        assert!(t[0].2, "interrupted");
        assert_eq!(t[0].1, "Hello,");
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::CallerHungUp)))
        ));
    }

    #[test]
    fn max_duration_ends_the_call() {
        let config = Config {
            max_duration: Duration::from_secs(5),
            ..Config::default()
        };
        let mut sim = Sim::with_config(vec![], config.clone(), 10);
        sim.ticks(15, &Frame::silence());
        sim.ticks(300, &voice()); // a caller who never stops
        assert!(sim.call.is_ended());
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.max_duration_farewell)
        );
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::MaxDuration)))
        ));
    }

    #[test]
    fn a_slow_tts_neither_spins_the_driver_nor_ends_the_utterance() {
        let t0 = Instant::now();
        let mut call = Call::new("Hi", Config::default(), t0);
        let generation = match call.poll_output() {
            Output::Say { generation, .. } => generation,
            other => panic!("expected the greeting, got {other:?}"),
        };
        call.handle_input(Input::TtsFrame(t0, generation, tts_frame(generation)))
            .expect("accepted");
        assert!(matches!(call.poll_output(), Output::Play(_)));
        assert_eq!(call.poll_output(), Output::Timeout(t0 + TICK));
        let later = t0 + TICK * 3;
        call.handle_input(Input::Timeout(later)).expect("accepted");
        // Underrun: nothing to play, no deadline due now.
        match call.poll_output() {
            Output::Timeout(at) => assert!(at > later, "{at:?}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(call.speaking(), Some(generation));
        // The next frame plays at once.
        call.handle_input(Input::TtsFrame(later, generation, tts_frame(generation)))
            .expect("accepted");
        assert!(matches!(call.poll_output(), Output::Play(_)));
    }

    #[test]
    fn heard_prefix_cuts_at_word_boundaries() {
        let text = "Our opening hours are nine to five.";
        assert_eq!(heard_prefix(text, 1.0), text);
        assert_eq!(heard_prefix(text, 0.0), "");
        assert_eq!(heard_prefix(text, 0.5), "Our opening hours");
        assert_eq!(heard_prefix("Hello", 0.5), "");
        assert_eq!(heard_prefix("héllo wörld again", 0.7), "héllo wörld");
    }

    fn live_handoff() -> Decision {
        Decision::Handoff {
            handoff: HandoffRequest {
                reason: "caller asked for a person".into(),
                summary: "Caller asked: a person.".into(),
                mode: HandoffMode::LiveTransfer,
            },
            say: "Let me connect you. Please hold.".into(),
            trace: trace(),
        }
    }

    fn asks(sim: &Sim) -> Vec<AgentTurn> {
        sim.log
            .iter()
            .filter_map(|(_, o)| match o {
                Output::Ask(turn) => Some(turn.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_decision_arrives_when_it_arrives_and_latency_counts_the_wait() {
        let mut sim = Sim::new(vec![reply("We open at nine.")]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("When do you open?", 20);
        assert_eq!(sim.call.awaiting_decision(), Some(TurnId::from(1)));
        let ask = sim.asks[0].clone();
        assert_eq!(ask.utterance, "When do you open?");
        assert_eq!(
            ask.history,
            vec![(Speaker::Ai, "Hello, Acme Dental.".into())]
        );
        assert!(ask.now.as_millis() > 1_000_000);
        // Nobody talks while the brain thinks: no reprompt, no timeout yet.
        sim.ticks(15, &Frame::silence());
        assert_eq!(sim.says().len(), 1);
        let asked_at = sim.first(|o| matches!(o, Output::Ask(_))).expect("asked");
        sim.decide();
        let waited = (sim.now - asked_at).as_millis() as u64;
        assert!(waited >= 300);
        assert_eq!(sim.call.awaiting_decision(), None);
        sim.ticks(15, &Frame::silence());
        assert_eq!(sim.says()[1].1, "We open at nine.");
        let latency = &sim.traces(TraceKind::Latency)[0];
        assert_eq!(latency["stt_final_to_decision_ms"], waited, "{latency}");
    }

    #[test]
    fn caller_speaking_again_while_waiting_supersedes_the_late_decision() {
        let mut sim = Sim::new(vec![reply("We open at nine."), reply("Saturdays too.")]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("When do you open?", 20);
        // The caller goes on before the brain has answered…
        sim.finals.push_back("and on Saturdays?".into());
        sim.ticks(10, &voice());
        // …and the answer to the first part arrives while they talk: held.
        assert_eq!(sim.decide(), TurnId::from(1));
        assert_eq!(sim.says().len(), 1, "nothing said over the caller");
        sim.run_for(Duration::from_millis(700), &Frame::silence());
        // They said something new: the held answer is stale, ask again.
        let stale = sim.traces(TraceKind::StaleDecision);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0]["turn"], 1);
        assert_eq!(stale[0]["decision_arrived"], true);
        let ask = sim.asks.front().expect("a second ask").clone();
        assert_eq!(ask.id, TurnId::from(2));
        assert_eq!(ask.last_applied, None, "turn 1's decision was dropped");
        assert_eq!(ask.utterance, "and on Saturdays?");
        assert_eq!(
            ask.history.last(),
            Some(&(Speaker::Caller, "When do you open?".to_string()))
        );
        sim.decide();
        sim.ticks(15, &Frame::silence());
        let texts: Vec<String> = sim.says().into_iter().map(|(_, t)| t).collect();
        assert_eq!(texts, ["Hello, Acme Dental.", "Saturdays too."]);
    }

    #[test]
    fn noise_while_waiting_keeps_the_held_decision() {
        let mut sim = Sim::new(vec![reply("We open at nine.")]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("When do you open?", 20);
        sim.finals.push_back(String::new()); // a cough: the STT hears nothing
        sim.ticks(5, &voice());
        sim.decide();
        sim.run_for(Duration::from_millis(700), &Frame::silence());
        assert_eq!(asks(&sim).len(), 1, "not asked again");
        assert_eq!(sim.says()[1].1, "We open at nine.");
        assert!(sim.traces(TraceKind::StaleDecision).is_empty());
    }

    #[test]
    fn early_sentences_are_said_while_the_decision_streams_in() {
        let mut sim = Sim::new(vec![]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("When do you open?", 20);
        let id = sim.call.awaiting_decision().expect("waiting");
        let now = sim.now;
        sim.feed(Input::Sentence(now, id, "We open at nine.".into()));
        assert_eq!(
            sim.says().last().map(|(_, t)| t.as_str()),
            Some("We open at nine.")
        );
        sim.ticks(3, &Frame::silence());
        let now = sim.now;
        sim.feed(Input::Sentence(now, id, "Saturdays at ten.".into()));
        // The whole answer arrives while the first sentence still plays.
        sim.feed(Input::Decision(
            now,
            id,
            reply("We open at nine. Saturdays at ten. Anything else?"),
        ));
        assert_eq!(sim.says().len(), 2, "one sentence at a time");
        sim.ticks(40, &Frame::silence());
        let texts: Vec<String> = sim.says().into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            texts,
            [
                "Hello, Acme Dental.",
                "We open at nine.",
                "Saturdays at ten.",
                "Anything else?"
            ]
        );
        assert_eq!(sim.call.awaiting_decision(), None);
        assert_eq!(sim.traces(TraceKind::Latency).len(), 1);
        assert_eq!(sim.traces(TraceKind::Decision).len(), 1);
        let ai: Vec<String> = sim
            .transcripts()
            .into_iter()
            .filter(|(s, _, _)| *s == Speaker::Ai)
            .map(|(_, t, _)| t)
            .collect();
        assert_eq!(ai.len(), 4);
        // Back to the caller: reprompts run again.
        sim.run_for(Duration::from_secs(8), &Frame::silence());
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(Config::default().reprompt)
        );
    }

    #[test]
    fn a_decision_that_only_repeats_the_early_sentences_says_nothing_more() {
        let mut sim = Sim::new(vec![]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("When do you open?", 20);
        let id = sim.call.awaiting_decision().expect("waiting");
        let now = sim.now;
        sim.feed(Input::Sentence(now, id, "We open at nine.".into()));
        sim.ticks(20, &Frame::silence());
        let now = sim.now;
        sim.feed(Input::Decision(now, id, reply("We open at nine.")));
        sim.ticks(5, &Frame::silence());
        assert_eq!(sim.says().len(), 2);
        assert_eq!(sim.call.awaiting_decision(), None);
        assert!(sim.call.speaking().is_none());
        // A late sentence for that turn changes nothing.
        let now = sim.now;
        sim.feed(Input::Sentence(now, id, "Stale.".into()));
        assert_eq!(sim.says().len(), 2);
    }

    #[test]
    fn barging_into_early_sentences_drops_the_rest() {
        let mut sim = Sim::with_config(vec![], Config::default(), 40);
        sim.manual = true;
        sim.ticks(60, &Frame::silence());
        sim.caller_says("When do you open?", 20);
        let id = sim.call.awaiting_decision().expect("waiting");
        let now = sim.now;
        sim.feed(Input::Sentence(now, id, "We open at nine.".into()));
        sim.feed(Input::Sentence(now, id, "Saturdays at ten.".into()));
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("what about Sunday?".into());
        sim.ticks(10, &voice());
        assert!(sim
            .log
            .iter()
            .any(|(_, o)| matches!(o, Output::CancelSpeech { .. })));
        sim.feed(Input::Decision(
            sim.now,
            id,
            reply("We open at nine. Saturdays at ten."),
        ));
        sim.run_for(Duration::from_millis(700), &Frame::silence());
        let texts: Vec<String> = sim.says().into_iter().map(|(_, t)| t).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        let ask = sim.asks.back().expect("asked again");
        assert_eq!(ask.utterance, "what about Sunday?");
        assert_eq!(ask.id, TurnId::from(2));
    }

    #[test]
    fn hangup_while_waiting_ends_the_call_and_the_decision_is_refused() {
        let mut sim = Sim::new(vec![]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("When do you open?", 20);
        let id = sim.call.awaiting_decision().expect("waiting");
        let now = sim.now;
        sim.feed(Input::Hangup(now));
        assert!(sim.call.is_ended());
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::CallerHungUp)))
        ));
        assert!(matches!(
            sim.call
                .handle_input(Input::Decision(now, id, reply("Too late."))),
            Err(CallError::Ended)
        ));
    }

    #[test]
    fn keys_while_waiting_start_a_new_turn() {
        let mut sim = Sim::new(vec![reply("Which option?"), reply("Option two.")]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("I need help", 20);
        let now = sim.now;
        sim.feed(Input::Dtmf(now, '2'));
        sim.feed(Input::Dtmf(now, '#'));
        let asks = asks(&sim);
        assert_eq!(asks.len(), 2);
        assert_eq!(asks[1].dtmf.as_deref(), Some("2#"));
        assert_eq!(sim.traces(TraceKind::StaleDecision)[0]["turn"], 1);
        sim.asks.pop_front();
        sim.decide();
        sim.ticks(15, &Frame::silence());
        assert_eq!(sim.says()[1].1, "Which option?");
    }

    #[test]
    fn stale_and_unexpected_decisions_are_dropped_with_a_trace() {
        let mut sim = Sim::new(vec![]);
        sim.ticks(15, &Frame::silence());
        let now = sim.now;
        sim.feed(Input::Decision(
            now,
            TurnId::from(7),
            reply("Out of the blue."),
        ));
        sim.feed(Input::Transfer(now, TransferResult::Connected));
        sim.ticks(5, &Frame::silence());
        assert_eq!(sim.says().len(), 1);
        assert!(!sim.call.is_bridged());
        let stale = sim.traces(TraceKind::StaleDecision);
        assert_eq!(stale[0]["turn"], 7);
        assert_eq!(stale[0]["awaiting"], serde_json::Value::Null);
        assert_eq!(
            sim.traces(TraceKind::Transfer)[0]["ignored"],
            "no live transfer under way"
        );
    }

    #[test]
    fn decision_timeout_apologises_and_escalates_then_gives_up() {
        let config = Config::default();
        let mut sim = Sim::new(vec![]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.caller_says("Do you sell pizza?", 20);
        let asked_at = sim.first(|o| matches!(o, Output::Ask(_))).expect("asked");
        sim.run_for(Duration::from_secs(9), &Frame::silence());

        let timeouts = sim.traces(TraceKind::DecisionTimeout);
        assert_eq!(timeouts.len(), 1);
        assert_eq!(timeouts[0]["then"], "logged escalation");
        let apology_at = sim
            .first(|o| matches!(o, Output::Say { text, .. } if *text == config.decision_timeout_message))
            .expect("apology said");
        assert_eq!(apology_at - asked_at, config.decision_timeout);
        let handoff = sim
            .log
            .iter()
            .find_map(|(_, o)| match o {
                Output::Handoff(h) => Some(h.clone()),
                _ => None,
            })
            .expect("handed off");
        assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
        assert!(handoff
            .summary
            .starts_with("Caller asked: Do you sell pizza?"));

        // The late answer is dropped.
        sim.decide();
        assert_eq!(sim.traces(TraceKind::StaleDecision).len(), 1);
        assert_eq!(sim.says().len(), 2);

        // The caller's answer to the channel question tells the agent.
        sim.caller_says("email please", 20);
        let ask = sim.asks.front().expect("asked").clone();
        assert_eq!(
            ask.event,
            Some(TurnEvent::DecisionTimedOut {
                handoff: handoff.clone()
            })
        );
        // Silent again: this time the machine says goodbye and hangs up.
        sim.run_for(Duration::from_secs(9), &Frame::silence());
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.agent_unavailable_farewell)
        );
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::AgentUnavailable)))
        ));
    }

    #[test]
    fn connected_transfer_stops_our_audio_for_good() {
        let mut sim = Sim::new(vec![live_handoff()]);
        sim.ticks(15, &Frame::silence());
        sim.caller_says("a person please", 20);
        sim.ticks(15, &Frame::silence());
        assert_eq!(sim.says()[1].1, "Let me connect you. Please hold.");
        assert_eq!(sim.call.speaking(), None, "hold message played");
        let now = sim.now;
        sim.feed(Input::Transfer(now, TransferResult::Connected));
        assert!(sim.call.is_bridged());
        assert!(sim.log.iter().any(|(_, o)| *o == Output::Bridged));
        assert_eq!(sim.traces(TraceKind::Transfer)[0]["result"], "connected");
        let played = sim.played.len();
        let logged = sim.log.len();
        sim.run_for(Duration::from_secs(60), &voice());
        assert_eq!(sim.played.len(), played, "nothing played after the bridge");
        assert_eq!(sim.log.len(), logged, "no output after the bridge");
        let now = sim.now;
        sim.feed(Input::Hangup(now));
        assert!(sim.call.is_ended());
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::CallerHungUp)))
        ));
    }

    #[test]
    fn connected_during_the_hold_message_cuts_it() {
        let mut sim = Sim::with_config(vec![live_handoff()], Config::default(), 50);
        sim.ticks(60, &Frame::silence());
        sim.caller_says("a person please", 20);
        assert!(sim.call.speaking().is_some());
        let now = sim.now;
        sim.feed(Input::Transfer(now, TransferResult::Connected));
        assert!(sim
            .log
            .iter()
            .any(|(_, o)| matches!(o, Output::CancelSpeech { .. })));
        sim.ticks(10, &Frame::silence());
        assert!(sim.played.iter().all(|(t, _)| *t <= now));
    }

    #[test]
    fn failed_transfer_tells_the_caller_and_asks_as_an_escalation() {
        let config = Config::default();
        let mut sim = Sim::new(vec![live_handoff()]);
        sim.ticks(15, &Frame::silence());
        sim.caller_says("a person please", 20);
        sim.run_for(Duration::from_secs(20), &Frame::silence());
        assert_eq!(sim.says().len(), 2, "holding quietly");
        let now = sim.now;
        sim.feed(Input::Transfer(
            now,
            TransferResult::Failed {
                reason: "busy".into(),
            },
        ));
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.transfer_failed_message)
        );
        let transfer = &sim.traces(TraceKind::Transfer)[0];
        assert_eq!(transfer["result"], "failed");
        assert_eq!(transfer["reason"], "busy");
        sim.ticks(15, &Frame::silence());
        sim.caller_says("a callback", 20);
        let ask = asks(&sim).pop().expect("asked");
        let Some(TurnEvent::TransferFailed { handoff, reason }) = ask.event else {
            panic!("expected the transfer failure on the ask: {:?}", ask.event);
        };
        assert_eq!(reason, "busy");
        assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
        assert_eq!(handoff.reason, "caller asked for a person");
        // Only that turn carries it.
        sim.ticks(15, &Frame::silence());
        sim.caller_says("yes", 20);
        let all = asks(&sim);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[2].event, None);
        assert_eq!(all[2].last_applied, Some(TurnId::from(2)));
    }

    fn starts(sim: &Sim) -> usize {
        sim.count(|o| *o == Output::StartStt)
    }

    #[test]
    fn a_number_read_in_groups_is_one_turn_without_partials() {
        let mut sim = Sim::new(vec![reply("Thanks, got it.")]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("My number is 415 555".into());
        sim.finals.push_back("0100.".into());
        sim.ticks(20, &voice());
        // A 450 ms pause: the STT is finished at 250 ms, its final looks
        // unfinished, so the turn is held, not asked.
        sim.run_for(Duration::from_millis(460), &Frame::silence());
        assert_eq!(sim.count(|o| *o == Output::FinishStt), 1);
        assert!(asks(&sim).is_empty(), "held, not asked");
        sim.ticks(10, &voice());
        assert_eq!(starts(&sim), 2, "the continuation has its own stream");
        let speech_end = sim.now;
        sim.run_for(Duration::from_millis(2000), &Frame::silence());
        let asked = asks(&sim);
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].utterance, "My number is 415 555 0100.");
        // "0100." ends with digits too: held again up to the digit wait.
        let asked_at = sim.first(|o| matches!(o, Output::Ask(_))).expect("asked");
        let waited = asked_at - speech_end;
        assert!(
            waited >= Duration::from_millis(1500) && waited <= Duration::from_millis(1540),
            "{waited:?}"
        );
        let eot = &sim.traces(TraceKind::EndOfTurn)[0];
        assert_eq!(eot["segments"], 2);
        assert_eq!(sim.says()[1].1, "Thanks, got it.");
        let callers: Vec<String> = sim
            .transcripts()
            .into_iter()
            .filter(|(s, _, _)| *s == Speaker::Caller)
            .map(|(_, t, _)| t)
            .collect();
        assert_eq!(callers, ["My number is 415 555 0100."]);
    }

    #[test]
    fn an_email_spelled_out_is_one_turn() {
        let mut sim = Sim::new(vec![]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("My email is j o h n".into());
        sim.finals.push_back("at example dot".into());
        sim.finals.push_back("com".into());
        sim.ticks(25, &voice());
        sim.run_for(Duration::from_millis(600), &Frame::silence());
        sim.ticks(15, &voice());
        sim.run_for(Duration::from_millis(800), &Frame::silence());
        sim.ticks(5, &voice());
        let speech_end = sim.now;
        sim.run_for(Duration::from_millis(600), &Frame::silence());
        let asked = asks(&sim);
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].utterance, "My email is j o h n at example dot com");
        // "com" ends the address: committed at the plain end of turn.
        let asked_at = sim.first(|o| matches!(o, Output::Ask(_))).expect("asked");
        assert!(asked_at - speech_end <= Duration::from_millis(280));
        assert_eq!(sim.traces(TraceKind::EndOfTurn)[0]["held"], 2);
    }

    #[test]
    fn held_words_are_committed_after_the_long_wait() {
        let mut sim = Sim::new(vec![]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("my number is 415 555".into());
        sim.ticks(20, &voice());
        let speech_end = sim.now;
        sim.run_for(Duration::from_millis(1400), &Frame::silence());
        assert!(asks(&sim).is_empty());
        sim.run_for(Duration::from_millis(200), &Frame::silence());
        let asked = asks(&sim);
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].utterance, "my number is 415 555");
        let asked_at = sim.first(|o| matches!(o, Output::Ask(_))).expect("asked");
        assert_eq!(asked_at - speech_end, Config::default().end_of_turn_digits);
        assert_eq!(starts(&sim), 1);
    }

    #[test]
    fn the_caller_may_go_on_while_the_first_final_is_still_coming() {
        let mut sim = Sim::new(vec![]);
        sim.late_finals = true;
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("my number is 415".into());
        sim.finals.push_back("555 0100 thanks".into());
        sim.ticks(20, &voice());
        sim.run_for(Duration::from_millis(300), &Frame::silence());
        assert_eq!(sim.owed_finals, 1);
        // They go on before the (slow) STT has answered.
        sim.ticks(15, &voice());
        assert_eq!(starts(&sim), 2);
        sim.final_now();
        assert!(asks(&sim).is_empty(), "the caller is still talking");
        sim.run_for(Duration::from_millis(300), &Frame::silence());
        sim.final_now();
        let asked = asks(&sim);
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].utterance, "my number is 415 555 0100 thanks");
        assert_eq!(sim.count(|o| *o == Output::CancelStt), 0);
    }

    #[test]
    fn a_punctuated_partial_ends_the_turn_early_and_digits_wait() {
        let mut sim = Sim::new(vec![reply("Nine."), reply("Thanks.")]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("When do you open?".into());
        sim.ticks(10, &voice());
        let now = sim.now;
        sim.feed(Input::Stt(
            now,
            SttEvent::Partial {
                text: "When do you open?".into(),
            },
        ));
        sim.run_for(Duration::from_millis(300), &Frame::silence());
        let finish = sim.first(|o| *o == Output::FinishStt).expect("FinishStt");
        let waited = finish - now;
        let early = Config::default().end_of_turn_punctuated;
        assert!(waited >= early && waited < early + TICK, "{waited:?}");
        // A punctuated number is not a sentence end.
        sim.ticks(30, &Frame::silence());
        sim.finals.push_back("it's 415.".into());
        sim.ticks(10, &voice());
        let now = sim.now;
        sim.feed(Input::Stt(
            now,
            SttEvent::Partial {
                text: "it's 415.".into(),
            },
        ));
        sim.run_for(Duration::from_millis(1000), &Frame::silence());
        assert_eq!(sim.count(|o| *o == Output::FinishStt), 1);
    }

    #[test]
    fn noise_gets_a_did_not_catch_that_at_most_twice_and_never_asks() {
        let config = Config::default();
        let mut sim = Sim::new(vec![]);
        sim.ticks(15, &Frame::silence());
        // A cough: too short to apologise for.
        sim.ticks(5, &voice());
        sim.run_for(Duration::from_millis(400), &Frame::silence());
        assert_eq!(sim.says().len(), 1);
        // Longer noise the STT makes nothing of, four times.
        for _ in 0..4 {
            sim.ticks(30, &voice());
            sim.run_for(Duration::from_millis(800), &Frame::silence());
        }
        let apologies = sim
            .says()
            .iter()
            .filter(|(_, t)| *t == config.not_heard_reprompt)
            .count();
        assert_eq!(apologies, 2);
        assert!(asks(&sim).is_empty(), "no brain call for noise");
        let unheard = sim.traces(TraceKind::Unheard);
        assert_eq!(unheard.len(), 5, "{unheard:?}");
        assert_eq!(unheard[0]["then"], "ignored: too short to be speech");
        assert_eq!(unheard[1]["then"], "reprompt");
        assert_eq!(unheard[4]["then"], "ignored: reprompted enough");
        // The noise does not keep the call alive: the silence rules end it.
        sim.run_for(Duration::from_secs(25), &Frame::silence());
        assert!(sim.call.is_ended());
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::Silence)))
        ));
        assert!(!sim.traces(TraceKind::Reprompt).is_empty());
    }

    #[test]
    fn failed_recognition_apologises_then_hands_off_then_hangs_up() {
        let config = Config::default();
        let mut sim = Sim::new(vec![]);
        sim.manual = true;
        sim.ticks(15, &Frame::silence());
        sim.stt_errors = 1;
        sim.caller_says("lost", 20);
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.not_heard_reprompt.clone())
        );
        assert!(asks(&sim).is_empty());
        let unheard = sim.traces(TraceKind::Unheard);
        assert_eq!(unheard[0]["why"], "speech recognition failed");
        assert_eq!(unheard[0]["error"], "scripted failure");
        assert_eq!(unheard[0]["then"], "apology");

        sim.ticks(30, &Frame::silence());
        sim.stt_errors = 1;
        sim.finals.clear();
        sim.caller_says("lost again", 20);
        let handoff = sim
            .log
            .iter()
            .find_map(|(_, o)| match o {
                Output::Handoff(h) => Some(h.clone()),
                _ => None,
            })
            .expect("handed off");
        assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
        assert_eq!(handoff.reason, "speech recognition is failing");
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.stt_failed_message.clone())
        );
        assert_eq!(
            sim.traces(TraceKind::Unheard)[1]["then"],
            "logged escalation"
        );

        // A turn that is heard carries the event to the agent.
        sim.ticks(40, &Frame::silence());
        sim.finals.clear();
        sim.caller_says("email please", 20);
        let ask = sim.asks.pop_front().expect("asked");
        assert_eq!(
            ask.event,
            Some(TurnEvent::NotUnderstood {
                handoff: handoff.clone()
            })
        );
        sim.feed(Input::Decision(
            sim.now,
            ask.id,
            reply("What is your email?"),
        ));
        // Failing again after the handoff: goodbye.
        sim.ticks(40, &Frame::silence());
        sim.stt_errors = 2;
        sim.caller_says("lost", 20);
        sim.caller_says("lost", 20);
        sim.run_for(Duration::from_secs(3), &Frame::silence());
        assert!(sim.call.is_ended());
        assert!(matches!(
            sim.log.last(),
            Some((_, Output::Hangup(EndReason::SpeechFailure)))
        ));
        assert!(sim
            .says()
            .iter()
            .any(|(_, t)| *t == config.stt_failed_farewell));
    }

    #[test]
    fn a_stt_that_never_answers_counts_as_a_failure() {
        let config = Config::default();
        let mut sim = Sim::new(vec![]);
        sim.late_finals = true;
        sim.ticks(15, &Frame::silence());
        sim.ticks(20, &voice());
        sim.run_for(
            config.stt_final_timeout + Duration::from_millis(400),
            &Frame::silence(),
        );
        assert_eq!(sim.count(|o| *o == Output::CancelStt), 1, "streams dropped");
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.not_heard_reprompt)
        );
        let unheard = &sim.traces(TraceKind::Unheard)[0];
        assert!(unheard["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no transcript within")));
    }

    #[test]
    fn another_language_is_asked_once_then_handed_off() {
        let config = Config::default();
        let mut sim = Sim::new(vec![reply("Email it is.")]);
        sim.ticks(15, &Frame::silence());
        sim.caller_says("Hola, necesito una cita para mañana", 30);
        assert!(asks(&sim).is_empty(), "the brain is not asked");
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.language_reprompt.clone())
        );
        let unheard = &sim.traces(TraceKind::Unheard)[0];
        assert_eq!(unheard["why"], "another language");
        assert_eq!(unheard["then"], "reprompt");
        // What was heard stays in the transcript.
        assert!(sim
            .transcripts()
            .iter()
            .any(|(s, t, _)| *s == Speaker::Caller && t.starts_with("Hola")));

        sim.ticks(80, &Frame::silence());
        // Low confidence counts too.
        sim.confidence = 0.1;
        sim.caller_says("I said I need a appointment", 30);
        let handoff = sim
            .log
            .iter()
            .find_map(|(_, o)| match o {
                Output::Handoff(h) => Some(h.clone()),
                _ => None,
            })
            .expect("handed off");
        assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
        assert!(handoff.reason.contains("could not be understood"));
        assert_eq!(
            sim.says().last().map(|(_, t)| t.clone()),
            Some(config.unclear_handoff_message)
        );
        assert_eq!(sim.traces(TraceKind::Unheard)[1]["why"], "low confidence");
        // Once handed off, the follow-up dialogue gets whatever is heard.
        sim.ticks(150, &Frame::silence());
        sim.caller_says("email", 30);
        let asked = asks(&sim);
        assert_eq!(asked.len(), 1);
        assert!(matches!(
            asked[0].event,
            Some(TurnEvent::NotUnderstood { .. })
        ));
    }

    #[test]
    fn a_dtmf_flood_is_coalesced_bounded_and_traced_once() {
        let config = Config::default();
        let mut sim = Sim::new(vec![]);
        sim.ticks(15, &Frame::silence());
        // 500 keys in a second, '#' among them, then quiet.
        let keys = "1234567890#";
        for i in 0..500 {
            let at = sim.now + Duration::from_millis(2);
            sim.now = at;
            let key = keys.chars().nth(i % keys.len()).unwrap_or('1');
            sim.feed(Input::Dtmf(at, key));
            if i % 10 == 0 {
                sim.feed(Input::Timeout(at));
            }
        }
        sim.run_for(Duration::from_secs(3), &Frame::silence());
        let asked = asks(&sim);
        // At most the turn ended by a '#' before the flood was recognised,
        // and the flood itself.
        assert!(!asked.is_empty() && asked.len() <= 2, "{asked:?}");
        let last = asked
            .last()
            .and_then(|a| a.dtmf.clone())
            .unwrap_or_default();
        assert_eq!(last.len(), config.max_dtmf_digits);
        let limits = sim.traces(TraceKind::InputLimit);
        let floods = limits.iter().filter(|l| l["limit"] == "dtmf_flood").count();
        assert_eq!(floods, 1, "{limits:?}");
        assert_eq!(
            limits
                .iter()
                .filter(|l| l["limit"] == "dtmf_digits")
                .count(),
            1
        );
        // Keys at a human pace work again afterwards.
        for key in ['4', '2', '#'] {
            let now = sim.now;
            sim.feed(Input::Dtmf(now, key));
            sim.ticks(10, &Frame::silence());
        }
        assert_eq!(
            asks(&sim).last().and_then(|a| a.dtmf.clone()).as_deref(),
            Some("42#")
        );
    }

    #[test]
    fn a_monologue_is_finalised_at_the_longest_turn() {
        let config = Config::default();
        let mut sim = Sim::new(vec![reply("Let me stop you there.")]);
        sim.ticks(15, &Frame::silence());
        sim.finals.push_back("blah ".repeat(100));
        let started = sim.now;
        sim.run_for(Duration::from_secs(40), &voice());
        let asked_at = sim.first(|o| matches!(o, Output::Ask(_))).expect("asked");
        let took = asked_at - started;
        assert!(
            took >= config.max_turn && took <= config.max_turn + Duration::from_millis(100),
            "{took:?}"
        );
        assert_eq!(starts(&sim), 1, "no continuation stream after the cap");
        let limit = &sim.traces(TraceKind::InputLimit)[0];
        assert_eq!(limit["limit"], "max_turn");
        assert_eq!(asks(&sim).len(), 1);
    }

    #[test]
    fn a_hung_tts_is_given_up_and_the_call_goes_on() {
        let config = Config::default();
        let mut sim = Sim::new(vec![]);
        // The reprompt is asked of a TTS that never answers.
        sim.tts_hangs = true;
        sim.run_for(
            config.reprompt_after + config.tts_stall_timeout + Duration::from_millis(500),
            &Frame::silence(),
        );
        assert_eq!(sim.says().len(), 2);
        assert_eq!(sim.call.speaking(), None, "the reprompt was given up");
        let errors = sim.traces(TraceKind::SpeechError);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["provider"], "tts");
        assert!(sim
            .log
            .iter()
            .any(|(_, o)| matches!(o, Output::CancelSpeech { .. })));
        sim.tts_hangs = false;
        sim.caller_says("hello?", 20);
        assert_eq!(asks(&sim).len(), 1);
    }
}
