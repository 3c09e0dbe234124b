//! The sans-IO per-call machine: one [`Call`] per phone call.
//!
//! It owns turn-taking (greeting, end of turn, barge-in with an echo guard,
//! no-input reprompts, maximum call duration), asks the brain what to do
//! after each caller turn ([`Output::Ask`], answered by [`Input::Decision`]),
//! runs the handoff flow (live transfer → bridged, or failed → logged
//! escalation), paces the synthesised audio towards RTP, and reports
//! transcripts (AI turns *as heard*) and per-turn latency traces. It
//! owns no socket, no timer and no task, and never reads a clock: every
//! [`Input`] carries its `now`, and every [`Output`] is a value the driver
//! acts on. Speech recognition and synthesis run outside, driven through
//! outputs ([`Output::StartStt`], [`Output::Say`], …) and answered with inputs.
//!
//! Layout: [`vad`] (voice activity detection: energy, or libfvad through
//! `switchboard-fvad`), [`words`] (what a transcript says about turn-taking: an
//! unfinished phone number, another language), `machine` ([`Call`] itself),
//! and the vocabulary below.
//!
//! Run loop, as a driver writes it:
//!
//! ```text
//! let mut call = Call::new(greeting, Config::default(), now);
//! loop {
//!     drain: loop { match call.poll_output() {
//!         Output::Timeout(at) => { deadline = at; break }
//!         Output::Play(frame) => rtp.send(frame),        // at most one per 20 ms
//!         Output::Say { generation, text } => tts.start(generation, text),
//!         Output::CancelSpeech { generation } => tts.cancel(generation),
//!         Output::StartStt => stt.start(/* with ~100 ms pre-roll */),
//!         Output::FinishStt => stt.finish(),      // keep it until its final
//!         Output::CancelStt => stt.drop_all(),
//!         Output::Ask(turn) => brain.start(turn),           // playbook: answer at once
//!         Output::Handoff(h) if live => telephony.transfer(h),
//!         Output::Bridged => return,                        // the person has the caller
//!         other => store / trace / hang up,
//!     } }
//!     select! {
//!         frame = rtp.next_frame() /* every 20 ms */ => call.handle_input(Input::Audio(now, &frame)),
//!         ev = stt.next() => call.handle_input(Input::Stt(now, ev)),
//!         (g, frame) = tts.next() => call.handle_input(Input::TtsFrame(now, g, frame)),
//!         (id, s) = brain.sentence() => call.handle_input(Input::Sentence(now, id, s)),
//!         (id, d) = brain.decision() => call.handle_input(Input::Decision(now, id, d)),
//!         result = transfer.next() => call.handle_input(Input::Transfer(now, result)),
//!         _ = sleep_until(deadline) => call.handle_input(Input::Timeout(now)),
//!     }
//! }
//! ```
//!
//! Between [`Output::StartStt`] and [`Output::FinishStt`] the driver streams
//! every caller frame to the STT; after `FinishStt` the STT answers with a
//! [`SttEvent::Final`] (or [`SttEvent::Error`]).
//!
//! End of turn works without partials (offline Whisper has none): after
//! [`Config::end_of_turn`] of silence the machine finishes the STT stream;
//! when the final transcript [looks unfinished](words::looks_unfinished)
//! ("my number is 415 555") it does not ask yet but keeps listening until
//! [`Config::end_of_turn_digits`] of silence. If the caller goes on, a new
//! STT stream is started for the continuation (possibly while the first one
//! is still finishing: the driver keeps finishing streams and delivers their
//! finals in order) and the texts are joined into one turn.
//!
//! A synchronous brain answers an ask on the spot:
//! `Output::Ask(turn) => call.handle_input(Input::Decision(now, turn.id, agent.answer(&turn)))`
//! (with [`switchboard_agent::Agent::answer`]); an asynchronous one (the
//! LLM) answers whenever it is done, and a late answer to a superseded turn
//! is dropped by the machine. A streaming brain may send the first
//! sentences of its answer as [`Input::Sentence`]s: each is said as soon as
//! the one before it ends, and the decision's words after them follow.

pub mod vad;
pub mod words;

mod machine;

use std::time::{Duration, Instant};

use switchboard_agent::ASK_CHANNEL;
use switchboard_media::Frame;
use switchboard_model::{Speaker, Timestamp};

pub use machine::Call;
pub use switchboard_agent::{AgentTurn, Decision, HandoffRequest, TurnEvent, TurnId};
pub use vad::{Detector, Vad, VadConfig, VadFrame};

/// Something that happened to the call, with the time it happened.
// A `Frame` is 320 bytes inline on purpose (see its docs): boxing it would
// allocate fifty times a second per call to save a move.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Input<'a> {
    /// 20 ms of caller audio (from the jitter buffer), every 20 ms.
    Audio(Instant, &'a Frame),
    /// A transcription event from the STT started by [`Output::StartStt`].
    Stt(Instant, SttEvent),
    /// Synthesised audio for the [`Output::Say`] of that generation.
    TtsFrame(Instant, Generation, Frame),
    /// The TTS has delivered every frame of that generation.
    TtsDone(Instant, Generation),
    /// A key the caller pressed.
    Dtmf(Instant, char),
    /// The deadline from the last [`Output::Timeout`] (or any later time).
    Timeout(Instant),
    /// The caller hung up.
    Hangup(Instant),
    /// The brain's answer to the [`Output::Ask`] of that turn. Answers to
    /// any turn but the one awaited are stale and dropped (with a trace).
    Decision(Instant, TurnId, Decision),
    /// Early words of the answer to that turn (an LLM's first sentences,
    /// as they stream): said at once while the decision is still coming.
    /// The decision's `say` must start with them; only the rest is said
    /// then. Ignored unless the machine is waiting on that turn.
    Sentence(Instant, TurnId, String),
    /// How the live transfer requested by [`Output::Handoff`] went.
    Transfer(Instant, TransferResult),
}

impl Input<'_> {
    pub fn now(&self) -> Instant {
        match self {
            Input::Audio(now, _)
            | Input::Stt(now, _)
            | Input::TtsFrame(now, _, _)
            | Input::TtsDone(now, _)
            | Input::Dtmf(now, _)
            | Input::Timeout(now)
            | Input::Hangup(now)
            | Input::Decision(now, _, _)
            | Input::Sentence(now, _, _)
            | Input::Transfer(now, _) => *now,
        }
    }
}

/// The outcome of a live transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferResult {
    /// The person answered and the legs are bridged: the machine stops
    /// talking ([`Output::Bridged`]).
    Connected,
    /// Busy, no answer, refused…: the caller is told and the call goes on as
    /// a logged escalation ([`TurnEvent::TransferFailed`] on the next ask).
    Failed { reason: String },
}

/// What the STT reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// A provisional transcript of the turn so far.
    Partial { text: String },
    /// Settled text (after [`Output::FinishStt`], the end of the turn).
    Final { text: String, confidence: f32 },
    /// The stream failed (or could not be opened) and will give no final:
    /// the turn is not heard. The machine apologises, and hands off once
    /// recognition keeps failing ([`Config::max_stt_failures`]).
    Error { message: String },
}

/// Identifies one [`Output::Say`]: frames and completions of any other
/// generation are stale (interrupted speech) and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(u64);

impl Generation {
    pub fn value(self) -> u64 {
        self.0
    }

    fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

impl From<u64> for Generation {
    fn from(value: u64) -> Self {
        Generation(value)
    }
}

/// What the driver should do. Drain with [`Call::poll_output`] until
/// [`Output::Timeout`], which always comes last.
// Inline `Frame` on purpose, as for `Input`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this frame to the caller now. Emitted one per 20 ms (at most two
    /// at once when catching up), so nothing queues up that a barge-in could
    /// not take back.
    Play(Frame),
    /// Synthesise this text; answer with [`Input::TtsFrame`]s and
    /// [`Input::TtsDone`] of the same generation.
    Say {
        generation: Generation,
        text: String,
    },
    /// Stop synthesising that generation; its late frames are dropped anyway.
    CancelSpeech { generation: Generation },
    /// The caller started a turn: start streaming caller audio to the STT.
    StartStt,
    /// The caller's turn ended: ask the STT for the final transcript. The
    /// stream keeps running until its final; a [`Output::StartStt`] may
    /// come before that (the caller went on): keep both, and deliver their
    /// events oldest stream first.
    FinishStt,
    /// Drop every STT stream of the turn: the machine no longer wants
    /// their events (it gave up waiting, or the turn was cut short).
    CancelStt,
    /// Ask the brain about this turn; answer with [`Input::Decision`] and
    /// the turn's id.
    Ask(AgentTurn),
    /// A finished turn for the store. AI turns are recorded as heard: cut at
    /// a word boundary and `interrupted` when the caller barged in.
    Transcript {
        speaker: Speaker,
        text: String,
        started_at: Timestamp,
        ended_at: Timestamp,
        interrupted: bool,
    },
    /// A trace step for the Inbox.
    Trace {
        kind: TraceKind,
        json: serde_json::Value,
    },
    /// The caller goes to a human: the agent decided so, or the machine did
    /// when the agent did not answer in time (then as a logged escalation).
    /// For a live transfer, dial and answer with [`Input::Transfer`].
    Handoff(HandoffRequest),
    /// The live transfer connected: stop feeding audio and playing; the
    /// machine's part of the call is over (only [`Input::Hangup`] is still
    /// accepted).
    Bridged,
    /// The call is over: hang up (unless the caller already did).
    Hangup(EndReason),
    /// Call [`Call::handle_input`] with [`Input::Timeout`] at this time.
    Timeout(Instant),
}

/// What a [`Output::Trace`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceKind {
    /// The agent's [`TraceInfo`](switchboard_agent::TraceInfo) for a turn.
    Decision,
    /// End of caller speech → STT final → decision → first TTS frame → first
    /// frame played, in milliseconds.
    Latency,
    /// The brain did not answer within [`Config::decision_timeout`].
    DecisionTimeout,
    /// A decision (or a pending ask) was dropped: the caller had moved on.
    StaleDecision,
    /// The result of a live transfer.
    Transfer,
    /// A caller turn the machine could not use (noise, a failed or slow
    /// STT, low confidence, another language) and what it did instead.
    Unheard,
    /// The machine prompted the caller on its own (silence).
    Reprompt,
    /// A caller input limit was reached (a DTMF flood, the longest turn).
    InputLimit,
    /// A turn that looked unfinished was held open (digits, an address).
    EndOfTurn,
    /// Speech synthesis stalled and the utterance was given up.
    SpeechError,
}

/// Why the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The agent ended the call (goodbye, or a finished escalation).
    Agent(switchboard_agent::EndReason),
    /// The caller hung up.
    CallerHungUp,
    /// The caller stayed silent through the reprompts.
    Silence,
    /// The call reached [`Config::max_duration`].
    MaxDuration,
    /// The brain stopped answering after a handoff was already under way.
    AgentUnavailable,
    /// Speech recognition kept failing after the call was handed off.
    SpeechFailure,
}

/// Tuning of a [`Call`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Caller silence that ends a turn (then the STT is finished; a final
    /// transcript that looks unfinished is held up to `end_of_turn_digits`).
    pub end_of_turn: Duration,
    /// Caller silence that ends a turn while they are reading digits (keys,
    /// a partial or a final that [looks unfinished](words::looks_unfinished)).
    pub end_of_turn_digits: Duration,
    /// Caller silence that ends a turn when a streaming partial already
    /// [ends a sentence](words::ends_sentence) (cloud STT only).
    pub end_of_turn_punctuated: Duration,
    /// The longest caller turn: then it is finalised even if they go on
    /// talking, so no turn buffers unbounded audio.
    pub max_turn: Duration,
    /// How long to wait for the STT final after [`Output::FinishStt`] before
    /// going on with the last partial.
    pub stt_final_timeout: Duration,
    /// Caller energy is ignored this long after our playback starts (and
    /// must beat our level for this long after it ends).
    pub echo_guard: Duration,
    /// Caller level must exceed our outgoing level by this much to barge in.
    pub echo_margin_db: f32,
    /// Consecutive qualifying frames that make a barge-in.
    pub barge_in_frames: u32,
    /// Caller silence on their turn before [`Config::reprompt`] is said.
    pub reprompt_after: Duration,
    /// Caller silence on their turn before the call is ended politely.
    pub max_silence: Duration,
    /// The longest call; then [`Config::max_duration_farewell`] and hang up.
    pub max_duration: Duration,
    pub reprompt: String,
    pub silence_farewell: String,
    pub max_duration_farewell: String,
    /// Said for a live transfer when the agent gave no words of its own.
    pub hold_message: String,
    /// How long the brain may take over a turn before the machine
    /// apologises and hands off as a logged escalation.
    pub decision_timeout: Duration,
    /// Said on that timeout; ends with the follow-up channel question.
    pub decision_timeout_message: String,
    /// Said when a live transfer fails; ends with the channel question.
    pub transfer_failed_message: String,
    /// Said before hanging up when the brain times out during a handoff.
    pub agent_unavailable_farewell: String,
    /// Finals below this confidence are unclear: the caller is asked to
    /// repeat (in the agent's language) instead of the brain being asked.
    pub min_confidence: f32,
    /// Unclear turns in a row (low confidence, another language) answered
    /// with `language_reprompt`; the next one hands off.
    pub max_unclear: u32,
    /// Said for an unclear turn.
    pub language_reprompt: String,
    /// Said when unclear turns hand off; ends with the channel question.
    pub unclear_handoff_message: String,
    /// Turns of noise in a row (speech heard, no words) answered with
    /// `not_heard_reprompt`; later ones are ignored (silence rules apply).
    pub max_not_heard: u32,
    /// Voiced audio a wordless turn needs to be apologised for; shorter is
    /// a cough or a click, ignored.
    pub not_heard_min_speech: Duration,
    /// Said for a wordless turn and after a failed transcription.
    pub not_heard_reprompt: String,
    /// Failed transcriptions in a row that hand the call off.
    pub max_stt_failures: u32,
    /// Said when failing recognition hands off; ends with the channel
    /// question.
    pub stt_failed_message: String,
    /// Said before hanging up when recognition still fails after that.
    pub stt_failed_farewell: String,
    /// Synthesis that delivers no frame for this long is given up.
    pub tts_stall_timeout: Duration,
    /// Keys kept per turn; more are dropped.
    pub max_dtmf_digits: usize,
    /// More keys than this within one second is a flood: `#` no longer ends
    /// the turn, keys are coalesced until the caller stops.
    pub dtmf_flood_keys: usize,
    pub vad: VadConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            end_of_turn: Duration::from_millis(250),
            end_of_turn_digits: Duration::from_millis(1500),
            end_of_turn_punctuated: Duration::from_millis(150),
            max_turn: Duration::from_secs(30),
            stt_final_timeout: Duration::from_secs(2),
            echo_guard: Duration::from_millis(200),
            echo_margin_db: 6.0,
            barge_in_frames: 2,
            reprompt_after: Duration::from_secs(7),
            max_silence: Duration::from_secs(20),
            max_duration: Duration::from_secs(30 * 60),
            reprompt: "Are you still there?".into(),
            silence_farewell: "I can't hear anything, so I'll end the call now. Goodbye!".into(),
            max_duration_farewell: "We've reached the time limit for this call. Goodbye!".into(),
            hold_message: "Please hold while I connect you.".into(),
            decision_timeout: Duration::from_secs(8),
            decision_timeout_message: format!(
                "Sorry, I'm having trouble answering right now. I'll pass this to our team so someone can follow up with you. {ASK_CHANNEL}"
            ),
            transfer_failed_message: format!(
                "I couldn't reach anyone right now. I'll pass this to our team so someone can follow up with you. {ASK_CHANNEL}"
            ),
            agent_unavailable_farewell:
                "Sorry, I'm having trouble right now. Someone from our team will review your call. Goodbye."
                    .into(),
            min_confidence: 0.3,
            max_unclear: 1,
            language_reprompt:
                "Sorry, I didn't understand that. I can only help in English: could you say it again?"
                    .into(),
            unclear_handoff_message: format!(
                "Sorry, I'm having trouble understanding. I'll pass this to our team so someone can follow up with you. {ASK_CHANNEL}"
            ),
            max_not_heard: 2,
            not_heard_min_speech: Duration::from_millis(400),
            not_heard_reprompt: "Sorry, I didn't catch that — could you say it again?".into(),
            max_stt_failures: 2,
            stt_failed_message: format!(
                "Sorry, I'm having trouble hearing you. I'll pass this to our team so someone can follow up with you. {ASK_CHANNEL}"
            ),
            stt_failed_farewell:
                "Sorry, I still can't hear you. Someone from our team will follow up. Goodbye."
                    .into(),
            tts_stall_timeout: Duration::from_secs(8),
            max_dtmf_digits: 32,
            dtmf_flood_keys: 20,
            vad: VadConfig::default(),
        }
    }
}

/// Why an input was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call has ended; the input was ignored.
    #[error("the call has ended")]
    Ended,
}
