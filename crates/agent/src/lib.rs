//! The brain of a call: given what the caller just said, decide what to do.
//!
//! This crate owns the [`Agent`] policy trait the call machine asks once per
//! caller turn, the [`Decision`] it gets back (with a [`TraceInfo`] saying
//! why, for the Inbox reasoning trace), the offline [`PlaybookAgent`] and
//! the [`LlmAgent`] for any OpenAI-compatible Chat Completions endpoint.
//! It knows nothing of SIP or audio. The playbook is sans-IO: no clock reads
//! (time arrives in [`TurnContext::now`]), no network, no tasks; the LLM
//! agent keeps its protocol (request building, stream assembly, tool-call
//! parsing) sans-IO too, in [`llm`], and does its HTTP with reqwest.
//!
//! Layout: [`llm`] (the LLM agent: prompt, streaming, tools),
//! [`playbook`] (the offline agent: knowledge answers, handoff
//! intent, can't-resolve detection, summaries), [`knowledge`] (instructions
//! parsed into entries, BM25), [`intent`] (handoff / frustration / goodbye
//! phrases with a negation guard), [`escalation`] (the follow-up channel
//! dialogue of a logged escalation), `text` (tokens, stems, similarity).
//!
//! Run loop, as the engine drives it:
//! ```text
//! Output::Ask(turn) ─▶ agent.answer(&turn) ─▶ Input::Decision(now, turn.id, decision)
//!   Reply    ─▶ say it, wait for the next turn
//!   Handoff  ─▶ record the handoff; live_transfer: say + dial;
//!               logged_escalation: say (asks the follow-up channel), keep asking
//!   Collect  ─▶ say it, wait for the answer (follow-up dialogue)
//!   EndCall  ─▶ say the farewell, hang up; an escalation carries the final
//!               handoff (summary included) and the captured follow-up
//! ```

pub mod escalation;
pub mod intent;
pub mod knowledge;
pub mod llm;
pub mod playbook;
mod text;

use serde::Serialize;
use switchboard_model::{HandoffMode, Speaker, Timestamp, Turn};

pub use escalation::{ContactPoint, FollowUp, FollowUpStep, ASK_CHANNEL};
pub use knowledge::{Knowledge, Scored, Thresholds};
pub use llm::{LlmAgent, LlmConfig, LlmEvent};
pub use playbook::{PlaybookAgent, PlaybookConfig};

/// A synchronous conversation policy. The call machine asks once per
/// finished caller turn (speech or DTMF) with an [`AgentTurn`]; the driver
/// answers with [`Agent::answer`] and feeds the [`Decision`] back.
pub trait Agent {
    fn respond(&mut self, ctx: &TurnContext<'_>) -> Decision;

    /// The call machine fell back to a logged escalation on its own (a live
    /// transfer failed, or a decision came too late) and has already asked
    /// the caller how to follow up: from now on, run the follow-up dialogue
    /// for `handoff`.
    fn fall_back_to_escalation(&mut self, handoff: &HandoffRequest);

    /// Answer an [`AgentTurn`] as the call machine hands it out: apply its
    /// [`TurnEvent`], then [`respond`](Agent::respond).
    fn answer(&mut self, turn: &AgentTurn) -> Decision {
        if let Some(event) = &turn.event {
            self.fall_back_to_escalation(event.handoff());
        }
        let history = turn.said();
        self.respond(&TurnContext {
            history: &history,
            utterance: &turn.utterance,
            dtmf: turn.dtmf.as_deref(),
            now: turn.now,
        })
    }
}

/// Identifies one [`AgentTurn`]: a decision for any other turn is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TurnId(u64);

impl TurnId {
    pub fn value(self) -> u64 {
        self.0
    }
}

impl From<u64> for TurnId {
    fn from(value: u64) -> Self {
        TurnId(value)
    }
}

impl std::fmt::Display for TurnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One caller turn, owned, so it can cross to another task: what the call
/// machine asks the brain in its `Output::Ask`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTurn {
    /// Echo it back with the decision.
    pub id: TurnId,
    /// The conversation before this turn, oldest first, as the caller heard
    /// it; does not include [`utterance`](Self::utterance).
    pub history: Vec<(Speaker, String)>,
    /// What the caller just said (may be empty when only keys were pressed).
    pub utterance: String,
    /// Keys pressed during the turn, such as `"3"` or `"4155550123#"`.
    pub dtmf: Option<String>,
    /// Wall-clock time of the end of the turn.
    pub now: Timestamp,
    /// Something the machine did since the last turn that changes the
    /// conversation.
    pub event: Option<TurnEvent>,
    /// The latest turn whose decision the machine acted on. A decision for
    /// a later turn was dropped (the caller spoke again, or it came too
    /// late): an agent must not keep the state that decision implied.
    pub last_applied: Option<TurnId>,
}

impl AgentTurn {
    /// The history, borrowed, as [`TurnContext`] takes it.
    pub fn said(&self) -> Vec<Said<'_>> {
        self.history
            .iter()
            .map(|(speaker, text)| Said {
                speaker: *speaker,
                text,
            })
            .collect()
    }
}

/// What the call machine did on its own before this turn. Both events mean:
/// the caller has been told, has been asked how the team should follow up
/// ([`escalation::ASK_CHANNEL`]), and this turn is their answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum TurnEvent {
    /// The live transfer failed; the call continues as a logged escalation.
    TransferFailed {
        handoff: HandoffRequest,
        reason: String,
    },
    /// The brain did not decide in time; the machine handed off itself.
    DecisionTimedOut { handoff: HandoffRequest },
    /// The machine could not understand the caller (speech recognition
    /// kept failing, or they spoke another language) and handed off itself.
    NotUnderstood { handoff: HandoffRequest },
}

impl TurnEvent {
    /// The handoff the escalation continues, in logged-escalation mode.
    pub fn handoff(&self) -> &HandoffRequest {
        match self {
            TurnEvent::TransferFailed { handoff, .. }
            | TurnEvent::DecisionTimedOut { handoff }
            | TurnEvent::NotUnderstood { handoff } => handoff,
        }
    }
}

/// What the agent sees of a turn.
#[derive(Debug, Clone, Copy)]
pub struct TurnContext<'a> {
    /// The conversation before this turn, oldest first; does not include
    /// [`utterance`](Self::utterance).
    pub history: &'a [Said<'a>],
    /// What the caller just said (may be empty when only keys were pressed).
    pub utterance: &'a str,
    /// Keys pressed during the turn, such as `"3"` or `"4155550123#"`.
    pub dtmf: Option<&'a str>,
    pub now: Timestamp,
}

/// One line of the conversation, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Said<'a> {
    pub speaker: Speaker,
    pub text: &'a str,
}

impl<'a> From<&'a Turn> for Said<'a> {
    fn from(turn: &'a Turn) -> Self {
        Said {
            speaker: turn.speaker,
            text: &turn.text,
        }
    }
}

/// What to do after a caller turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// Say this and wait for the caller.
    Reply { say: String, trace: TraceInfo },
    /// Hand the caller to a human. For [`HandoffMode::LiveTransfer`] the
    /// engine says `say` and dials; for [`HandoffMode::LoggedEscalation`]
    /// `say` asks how to follow up and [`Decision::Collect`] turns follow
    /// until an [`EndReason::Escalated`] carries the channel and details.
    Handoff {
        handoff: HandoffRequest,
        say: String,
        trace: TraceInfo,
    },
    /// A step of the follow-up dialogue of a logged escalation.
    Collect {
        step: FollowUpStep,
        say: String,
        trace: TraceInfo,
    },
    /// Say the farewell and hang up.
    EndCall {
        reason: EndReason,
        farewell: String,
        trace: TraceInfo,
    },
}

impl Decision {
    /// The text the caller hears.
    pub fn say(&self) -> &str {
        match self {
            Decision::Reply { say, .. }
            | Decision::Handoff { say, .. }
            | Decision::Collect { say, .. } => say,
            Decision::EndCall { farewell, .. } => farewell,
        }
    }

    pub fn trace(&self) -> &TraceInfo {
        match self {
            Decision::Reply { trace, .. }
            | Decision::Handoff { trace, .. }
            | Decision::Collect { trace, .. }
            | Decision::EndCall { trace, .. } => trace,
        }
    }
}

/// Why and how a call goes to a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandoffRequest {
    /// One line for the rep, such as "The caller asked about "Do you sell
    /// pizza?"; the AI could not find an answer".
    pub reason: String,
    /// "Caller asked: …. Not resolved: …. Preferred follow-up: …."
    pub summary: String,
    pub mode: HandoffMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EndReason {
    /// The caller said goodbye.
    CallerDone,
    /// A logged escalation finished its dialogue. `handoff.summary` now
    /// names the follow-up; `follow_up` is `None` only when nothing usable
    /// was captured and there is no caller ID.
    Escalated {
        handoff: HandoffRequest,
        follow_up: Option<FollowUp>,
    },
}

/// Why the agent decided what it did: JSON for the Inbox reasoning trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceInfo {
    pub rule: Rule,
    /// One sentence a reviewer can read.
    pub why: String,
    pub at: Timestamp,
    /// The knowledge entry that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<Scored>,
    /// The best-ranked entries, answering or not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Scored>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// The handoff, frustration or goodbye phrase that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phrase: Option<String>,
    /// The earlier caller turn this one repeats, and how similar it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<Repeat>,
    /// Consecutive turns without an answer, including this one.
    pub no_match_streak: u32,
    /// What the language model was asked and answered (LLM agent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<Box<llm::LlmTrace>>,
}

impl TraceInfo {
    pub(crate) fn new(rule: Rule, why: impl Into<String>, at: Timestamp) -> Self {
        Self {
            rule,
            why: why.into(),
            at,
            entry: None,
            candidates: Vec::new(),
            thresholds: None,
            phrase: None,
            repeats: None,
            no_match_streak: 0,
            llm: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repeat {
    pub earlier: String,
    pub jaccard: f64,
    pub threshold: f64,
}

/// The rule that produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Greeting, thanks or silence: nothing to look up.
    SmallTalk,
    KnowledgeMatch,
    NoMatch,
    HandoffRequested,
    Frustration,
    RepeatedQuestion,
    NoMatchLimit,
    FollowUpDialogue,
    FollowUpCaptured,
    FollowUpFallback,
    Goodbye,
    /// A live transfer is under way; the agent only holds.
    AwaitingTransfer,
    /// The language model answered.
    LlmReply,
    /// The language model called `transfer_to_human`.
    LlmHandoff,
    /// The language model called `end_call`.
    LlmEndCall,
    /// The language model could not be used (timeout, error, malformed
    /// answer); the agent handed off instead.
    LlmUnavailable,
    /// The call has ended; further input is ignored.
    Ended,
}
