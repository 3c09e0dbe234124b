//! The brain of a call: given what the caller just said, decide what to do.
//!
//! This crate owns the [`Agent`] policy trait the call machine asks once per
//! caller turn, the [`Decision`] it gets back (with a [`TraceInfo`] saying
//! why, for the Inbox reasoning trace), and the offline [`PlaybookAgent`].
//! It knows nothing of SIP, audio or HTTP, and is sans-IO: no clock reads
//! (time arrives in [`TurnContext::now`]), no network, no tasks.
//!
//! Layout: [`playbook`] (the offline agent: knowledge answers, handoff
//! intent, can't-resolve detection, summaries), [`knowledge`] (instructions
//! parsed into entries, BM25), [`intent`] (handoff / frustration / goodbye
//! phrases with a negation guard), [`escalation`] (the follow-up channel
//! dialogue of a logged escalation), `text` (tokens, stems, similarity).
//!
//! Run loop, as the engine drives it:
//! ```text
//! caller turn ─▶ agent.respond(&TurnContext { history, utterance, dtmf, now })
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
pub mod playbook;
mod text;

use serde::Serialize;
use switchboard_model::{HandoffMode, Speaker, Timestamp, Turn};

pub use escalation::{ContactPoint, FollowUp, FollowUpStep};
pub use knowledge::{Knowledge, Scored, Thresholds};
pub use playbook::{PlaybookAgent, PlaybookConfig};

/// A conversation policy. The call machine calls [`Agent::respond`] once per
/// finished caller turn (speech or DTMF) and acts on the [`Decision`].
pub trait Agent {
    fn respond(&mut self, ctx: &TurnContext<'_>) -> Decision;
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
    /// The call has ended; further input is ignored.
    Ended,
}
