//! [`Call`]: the per-call state machine.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use switchboard_agent::{Agent, Decision, Said, TurnContext};
use switchboard_media::{Frame, Level, FRAME_DURATION};
use switchboard_model::{HandoffMode, Speaker, Timestamp};

use crate::vad::Vad;
use crate::{CallError, Config, EndReason, Generation, Input, Output, SttEvent, TraceKind};

/// Frames [`Call`] may emit in one go when the driver ticks late: the most
/// that ever sits between the machine and RTP.
const MAX_PLAY_BURST: usize = 2;
/// Our own recent output the echo guard compares the caller's level with
/// (echo arrives delayed by the far end's path).
const ECHO_MEMORY_FRAMES: usize = 5;

/// One phone call, sans-IO.
///
/// Contract: feed every event with [`Call::handle_input`], then drain
/// [`Call::poll_output`] until it returns [`Output::Timeout`]; call
/// `handle_input(Input::Timeout(now))` no later than that deadline. Frames
/// to play are released one per 20 ms as time passes, so the driver should
/// also feed caller audio or timeouts at that pace while we speak.
pub struct Call<A> {
    agent: A,
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
    outputs: VecDeque<Output>,
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
    /// The turn ended; waiting for the STT final.
    AwaitingFinal {
        since: Instant,
    },
    /// Live transfer under way: the driver dials and bridges.
    Holding,
    Ended,
}

/// What follows our utterance once it has been played.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Then {
    Listen,
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
    first_play_at: Option<Instant>,
    next_play_at: Option<Instant>,
    latency: Option<Latency>,
}

#[derive(Debug, Default)]
struct CallerTurn {
    started_at: Option<Instant>,
    last_input_at: Option<Instant>,
    text: String,
    partial: String,
    dtmf: String,
    stt_started: bool,
}

struct Latency {
    speech_end: Instant,
    stt_final: Instant,
    decision: Instant,
    first_tts: Option<Instant>,
}

impl<A: Agent> Call<A> {
    /// Start a call answered at `now`: says the greeting.
    pub fn new(agent: A, greeting: impl Into<String>, config: Config, now: Instant) -> Self {
        let mut call = Call {
            agent,
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

    /// The agent this call asks.
    pub fn agent(&self) -> &A {
        &self.agent
    }

    /// The conversation so far, as heard.
    pub fn history(&self) -> &[(Speaker, String)] {
        &self.history
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
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
        let vad = self.vad.process(level);
        match self.phase {
            Phase::Speaking => {
                let can_barge_in = self.speech.as_ref().is_some_and(|s| {
                    s.then == Then::Listen
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
            Phase::Listening { .. } => {
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
                        if !turn.stt_started {
                            // Keys first, then speech: transcribe the speech too.
                            turn.stt_started = true;
                            turn.started_at.get_or_insert(now);
                            self.outputs.push_back(Output::StartStt);
                        }
                    }
                }
            }
            Phase::AwaitingFinal { .. } | Phase::Holding | Phase::Ended => {}
        }
    }

    fn handle_stt(&mut self, now: Instant, event: SttEvent) {
        let Some(turn) = self.caller.as_mut() else {
            return;
        };
        match event {
            SttEvent::Partial { text } => turn.partial = text,
            SttEvent::Final { text, .. } => {
                let text = text.trim();
                if !text.is_empty() {
                    if !turn.text.is_empty() {
                        turn.text.push(' ');
                    }
                    turn.text.push_str(text);
                }
                turn.partial.clear();
                if matches!(self.phase, Phase::AwaitingFinal { .. }) {
                    self.complete_caller_turn(now);
                }
            }
        }
    }

    fn handle_tts_frame(&mut self, now: Instant, generation: Generation, frame: Frame) {
        let Some(speech) = self.speech.as_mut().filter(|s| s.generation == generation) else {
            return; // stale: interrupted or superseded speech
        };
        if let Some(latency) = speech.latency.as_mut() {
            latency.first_tts.get_or_insert(now);
        }
        speech.queue.push_back(frame);
        speech.received += 1;
        if speech.next_play_at.is_none_or(|t| t < now) {
            speech.next_play_at = Some(now);
        }
    }

    fn handle_dtmf(&mut self, now: Instant, digit: char) {
        match self.phase {
            Phase::Speaking if self.speech.as_ref().is_some_and(|s| s.then == Then::Listen) => {
                self.barge_in(now);
                self.start_caller_turn(now, false);
            }
            Phase::Listening { .. } => self.start_caller_turn(now, false),
            Phase::CallerTurn | Phase::AwaitingFinal { .. } => {}
            Phase::Speaking | Phase::Holding | Phase::Ended => return,
        }
        let Some(turn) = self.caller.as_mut() else {
            return;
        };
        turn.dtmf.push(digit);
        turn.last_input_at = Some(now);
        if digit == '#' && self.phase == Phase::CallerTurn {
            self.end_caller_turn(now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.time_limit_reached && now >= self.started + self.config.max_duration {
            self.time_limit_reached = true;
            self.interrupt_speech(now);
            self.caller = None;
            let farewell = self.config.max_duration_farewell.clone();
            self.say(now, farewell, Then::Hangup(EndReason::MaxDuration), None);
        }
        self.pump_playback(now);
        match self.phase {
            Phase::CallerTurn if self.end_of_turn_at().is_some_and(|at| now >= at) => {
                self.end_caller_turn(now);
            }
            Phase::AwaitingFinal { since } if now >= since + self.config.stt_final_timeout => {
                self.complete_caller_turn(now);
            }
            Phase::Listening { since } => {
                if now >= self.silence_since + self.config.max_silence {
                    let farewell = self.config.silence_farewell.clone();
                    self.say(now, farewell, Then::Hangup(EndReason::Silence), None);
                } else if now >= since + self.config.reprompt_after {
                    let reprompt = self.config.reprompt.clone();
                    self.say(now, reprompt, Then::Listen, None);
                    if let Some(speech) = self.speech.as_mut() {
                        speech.is_reprompt = true;
                    }
                }
            }
            _ => {}
        }
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
            Then::Hold => self.phase = Phase::Holding,
            Then::Hangup(reason) => self.end(reason),
        }
    }

    /// The caller talks over us: stop at once and take back anything not
    /// yet handed to the driver.
    fn barge_in(&mut self, now: Instant) {
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
        self.phase = Phase::CallerTurn;
        self.caller = Some(CallerTurn {
            started_at: speech.then_some(started),
            stt_started: speech,
            ..CallerTurn::default()
        });
        if speech {
            self.outputs.push_back(Output::StartStt);
        }
    }

    fn end_of_turn_at(&self) -> Option<Instant> {
        let turn = self.caller.as_ref()?;
        let last = turn.last_input_at?;
        let reading_digits = !turn.dtmf.is_empty()
            || ends_with_number(&turn.partial)
            || (turn.partial.is_empty() && ends_with_number(&turn.text));
        let silence = if reading_digits {
            self.config.end_of_turn_digits
        } else {
            self.config.end_of_turn
        };
        Some(last + silence)
    }

    fn end_caller_turn(&mut self, now: Instant) {
        let stt = self.caller.as_ref().is_some_and(|t| t.stt_started);
        if stt {
            self.outputs.push_back(Output::FinishStt);
            self.phase = Phase::AwaitingFinal { since: now };
        } else {
            self.complete_caller_turn(now);
        }
    }

    /// The turn's words are in: record them and ask the agent.
    fn complete_caller_turn(&mut self, now: Instant) {
        let Some(turn) = self.caller.take() else {
            self.phase = Phase::Listening { since: now };
            return;
        };
        let utterance = if turn.text.is_empty() {
            turn.partial.trim().to_string()
        } else {
            turn.text
        };
        let speech_end = turn.last_input_at.unwrap_or(now);
        if utterance.is_empty() && turn.dtmf.is_empty() {
            // Noise, a cough: nothing to answer; the caller's silence goes on.
            self.phase = Phase::Listening { since: now };
            return;
        }
        self.turns += 1;
        if !utterance.is_empty() {
            let started = turn.started_at.unwrap_or(speech_end);
            self.outputs.push_back(Output::Transcript {
                speaker: Speaker::Caller,
                text: utterance.clone(),
                started_at: self.wall(started),
                ended_at: self.wall(speech_end),
                interrupted: false,
            });
        }
        let decision = {
            let history: Vec<Said<'_>> = self
                .history
                .iter()
                .map(|(speaker, text)| Said {
                    speaker: *speaker,
                    text,
                })
                .collect();
            let dtmf = (!turn.dtmf.is_empty()).then_some(turn.dtmf.as_str());
            self.agent.respond(&TurnContext {
                history: &history,
                utterance: &utterance,
                dtmf,
                now: self.wall(now),
            })
        };
        let mut said = utterance;
        if let Some(dtmf) = (!turn.dtmf.is_empty()).then_some(&turn.dtmf) {
            said = if said.is_empty() {
                format!("[keys {dtmf}]")
            } else {
                format!("{said} [keys {dtmf}]")
            };
        }
        self.history.push((Speaker::Caller, said));
        if let Ok(json) = serde_json::to_value(decision.trace()) {
            self.outputs.push_back(Output::Trace {
                kind: TraceKind::Decision,
                json,
            });
        }
        let latency = Latency {
            speech_end,
            stt_final: now,
            decision: now,
            first_tts: None,
        };
        let (text, then) = match decision {
            Decision::Reply { say, .. } | Decision::Collect { say, .. } => (say, Then::Listen),
            Decision::Handoff { handoff, say, .. } => {
                let then = match handoff.mode {
                    HandoffMode::LiveTransfer => Then::Hold,
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
        self.say(now, text, then, Some(latency));
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
            first_play_at: None,
            next_play_at: None,
            latency,
        });
        self.barge_frames = 0;
        self.phase = Phase::Speaking;
    }

    fn end(&mut self, reason: EndReason) {
        self.speech = None;
        self.caller = None;
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
        if self.phase == Phase::Ended {
            return far;
        }
        let mut deadline = far;
        if !self.time_limit_reached {
            deadline = deadline.min(self.started + self.config.max_duration);
        }
        if let Some(speech) = &self.speech {
            // The next frame is due, or the last one ends (then the utterance
            // finishes). A TTS underrun has no deadline: the next frame wakes
            // us, and a past deadline would make the driver spin.
            if let Some(at) = speech.next_play_at {
                if !speech.queue.is_empty() || at > self.now {
                    deadline = deadline.min(at);
                }
            }
        }
        match self.phase {
            Phase::CallerTurn => {
                if let Some(at) = self.end_of_turn_at() {
                    deadline = deadline.min(at);
                }
            }
            Phase::AwaitingFinal { since } => {
                deadline = deadline.min(since + self.config.stt_final_timeout);
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

/// Whether the caller seems to be in the middle of a number: the text ends
/// with digits or a spoken digit.
fn ends_with_number(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "zero", "oh", "o", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        "ten", "double", "triple", "hundred", "thousand",
    ];
    let Some(last) = text
        .split_whitespace()
        .next_back()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
    else {
        return false;
    };
    let last = last.to_lowercase();
    (!last.is_empty() && last.chars().all(|c| c.is_ascii_digit() || c == '-'))
        || WORDS.contains(&last.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_agent::{EndReason as AgentEndReason, HandoffRequest, Rule, TraceInfo};

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
        call: Call<ScriptedAgent>,
        t0: Instant,
        now: Instant,
        tts_frames: usize,
        finals: VecDeque<String>,
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
            let call = Call::new(agent, "Hello, Acme Dental.", config, t0)
                .with_wall_clock(Timestamp::from_millis(1_000_000));
            let mut sim = Sim {
                call,
                t0,
                now: t0,
                tts_frames,
                finals: VecDeque::new(),
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
                    Output::Say { generation, .. } => {
                        for _ in 0..self.tts_frames {
                            follow_ups.push(FollowUp::TtsFrame(generation));
                        }
                        follow_ups.push(FollowUp::TtsDone(generation));
                        self.log.push((self.now, output));
                    }
                    Output::FinishStt => {
                        follow_ups.push(FollowUp::Final);
                        self.log.push((self.now, output));
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
                        let text = self.finals.pop_front().unwrap_or_default();
                        let event = SttEvent::Final {
                            text,
                            confidence: 0.9,
                        };
                        self.feed(Input::Stt(now, event));
                    }
                }
            }
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
    fn end_of_turn_after_600_ms_then_the_agent_replies() {
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
            waited >= Duration::from_millis(600) && waited <= Duration::from_millis(640),
            "{waited:?}"
        );
        assert_eq!(
            sim.call.agent().heard,
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
            assert!((600..=660).contains(&total), "{l}");
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
        assert_eq!(
            sim.call.agent().heard,
            vec![(String::new(), Some("42#".into()))]
        );
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
        sim.run_for(Duration::from_millis(640), &Frame::silence());
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
        let mut call = Call::new(ScriptedAgent::default(), "Hi", Config::default(), t0);
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

    #[test]
    fn numbers_are_recognised_at_the_end() {
        assert!(ends_with_number("my number is 415"));
        assert!(ends_with_number("it's four one five,"));
        assert!(ends_with_number("Double Seven"));
        assert!(!ends_with_number("I'd like an appointment"));
        assert!(!ends_with_number(""));
    }
}
