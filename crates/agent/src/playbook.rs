//! The offline playbook agent: answers from the agent's instructions, hands
//! off when asked or when it cannot help, and runs the follow-up dialogue of
//! a logged escalation. Deterministic, no model, no IO.
//!
//! Per caller turn, first rule wins:
//! 1. silence → ask again;
//! 2. a handoff phrase (not negated) → hand off;
//! 3. a frustration phrase → hand off, "could not find an answer";
//! 4. goodbye → end the call;
//! 5. no content words ("hi", "thanks") → small talk;
//! 6. the same question as an earlier caller turn (Jaccard ≥ threshold) → hand off;
//! 7. a knowledge entry clears the thresholds → answer with it;
//! 8. otherwise no match; the `no_match_limit`-th in a row → hand off.

use switchboard_model::{AgentSpec, HandoffMode, Region, Speaker, E164};

use crate::escalation::{self, Dialogue, Step};
use crate::intent::{self, HandoffPhrases};
use crate::knowledge::{Knowledge, Thresholds};
use crate::{
    text, Agent, Decision, EndReason, HandoffRequest, Repeat, Rule, TraceInfo, TurnContext,
};

/// Tuning of the playbook rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaybookConfig {
    /// Consecutive unanswered questions before handing off.
    pub no_match_limit: u32,
    pub thresholds: Thresholds,
    /// Token-set Jaccard at which a question counts as asked before.
    pub repeat_jaccard: f64,
    /// Unusable answers in the follow-up dialogue before falling back to a
    /// callback on the caller ID.
    pub max_follow_up_misses: u32,
    /// Region for phone numbers given without a country code.
    pub region: Region,
}

impl Default for PlaybookConfig {
    fn default() -> Self {
        Self {
            no_match_limit: 2,
            thresholds: Thresholds::default(),
            repeat_jaccard: 0.8,
            max_follow_up_misses: 2,
            region: Region::default(),
        }
    }
}

const NO_MATCH_REPLY: &str = "Sorry, I don't have an answer to that. Could you put it another way, or ask to speak with a person?";
pub(crate) const HOLD: &str = "Please hold while I connect you.";

/// The offline agent of one call. Build one per call.
#[derive(Debug, Clone)]
pub struct PlaybookAgent {
    knowledge: Knowledge,
    phrases: HandoffPhrases,
    mode: HandoffMode,
    caller_id: Option<E164>,
    config: PlaybookConfig,
    no_match_streak: u32,
    first_question: Option<String>,
    last_question: Option<String>,
    phase: Phase,
}

#[derive(Debug, Clone)]
enum Phase {
    Talking,
    Transferring,
    Escalating {
        handoff: HandoffRequest,
        dialogue: Dialogue,
    },
    Ended {
        reason: EndReason,
        farewell: String,
    },
}

impl PlaybookAgent {
    /// An agent for a call from `caller_id` (offered as the callback number).
    pub fn new(spec: &AgentSpec, caller_id: Option<&E164>) -> Self {
        Self::with_config(spec, caller_id, PlaybookConfig::default())
    }

    pub fn with_config(spec: &AgentSpec, caller_id: Option<&E164>, config: PlaybookConfig) -> Self {
        Self {
            knowledge: Knowledge::parse(&spec.instructions),
            phrases: HandoffPhrases::new(&spec.handoff_phrases),
            mode: spec.handoff_mode,
            caller_id: caller_id.cloned(),
            config,
            no_match_streak: 0,
            first_question: None,
            last_question: None,
            phase: Phase::Talking,
        }
    }

    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    fn talk(&mut self, ctx: &TurnContext<'_>) -> Decision {
        let utterance = ctx.utterance.trim();
        let now = ctx.now;
        if utterance.is_empty() {
            return Decision::Reply {
                say: "Sorry, I didn't catch that. Could you say that again?".into(),
                trace: TraceInfo::new(Rule::SmallTalk, "nothing was said", now),
            };
        }
        if let Some(phrase) = self.phrases.detect(utterance) {
            let reason = match &self.last_question {
                Some(q) => {
                    format!("The caller asked to speak with a person after asking about \"{q}\"")
                }
                None => "The caller asked to speak with a person".to_string(),
            };
            let mut trace = TraceInfo::new(
                Rule::HandoffRequested,
                format!("the caller used the handoff phrase \"{phrase}\""),
                now,
            );
            trace.phrase = Some(phrase.to_string());
            return self.hand_off(reason, "", trace);
        }
        if let Some(phrase) = intent::frustration(utterance) {
            let reason = cannot_resolve(self.last_question.as_deref());
            let mut trace = TraceInfo::new(
                Rule::Frustration,
                format!("the caller sounded frustrated (\"{phrase}\")"),
                now,
            );
            trace.phrase = Some(phrase.to_string());
            return self.hand_off(reason, "I'm sorry this hasn't helped. ", trace);
        }
        if intent::goodbye(utterance) {
            let farewell = "Thanks for calling. Goodbye!".to_string();
            self.phase = Phase::Ended {
                reason: EndReason::CallerDone,
                farewell: farewell.clone(),
            };
            return Decision::EndCall {
                reason: EndReason::CallerDone,
                farewell,
                trace: TraceInfo::new(Rule::Goodbye, "the caller said goodbye", now),
            };
        }
        let terms = text::term_set(utterance);
        if terms.is_empty() {
            let thanks = text::words(utterance)
                .iter()
                .any(|w| w == "thanks" || w == "thank");
            let say = if thanks {
                "You're welcome. Is there anything else I can help with?"
            } else {
                "Hello! How can I help you today?"
            };
            return Decision::Reply {
                say: say.into(),
                trace: TraceInfo::new(Rule::SmallTalk, "no question to look up", now),
            };
        }

        // A substantive question from here on.
        self.first_question
            .get_or_insert_with(|| utterance.to_string());
        self.last_question = Some(utterance.to_string());

        if let Some(repeat) = self.repeat_of(ctx, &terms) {
            let reason = cannot_resolve(Some(utterance));
            let mut trace = TraceInfo::new(
                Rule::RepeatedQuestion,
                "the caller asked the same question again",
                now,
            );
            trace.repeats = Some(repeat);
            return self.hand_off(reason, "I'm sorry I couldn't help with that. ", trace);
        }

        let found = self.knowledge.search(utterance, self.config.thresholds);
        let mut trace = TraceInfo::new(Rule::NoMatch, "", now);
        trace.thresholds = Some(self.config.thresholds);
        trace.candidates = found.candidates.clone();
        if let Some(entry) = found.best {
            self.no_match_streak = 0;
            trace.rule = Rule::KnowledgeMatch;
            trace.why = format!(
                "answered from knowledge entry {} \"{}\"",
                entry.id, entry.title
            );
            trace.entry = found.candidates.first().cloned();
            return Decision::Reply {
                say: entry.answer.clone(),
                trace,
            };
        }
        self.no_match_streak += 1;
        trace.no_match_streak = self.no_match_streak;
        if self.no_match_streak >= self.config.no_match_limit {
            trace.rule = Rule::NoMatchLimit;
            trace.why = format!(
                "{} questions in a row without an answer in the knowledge",
                self.no_match_streak
            );
            let reason = cannot_resolve(Some(utterance));
            return self.hand_off(reason, "I'm sorry I couldn't answer that. ", trace);
        }
        trace.why = "no knowledge entry cleared the thresholds".into();
        Decision::Reply {
            say: NO_MATCH_REPLY.into(),
            trace,
        }
    }

    /// The earliest caller turn this question repeats, if any. A trailing
    /// copy of the current utterance in `history` is not a repeat.
    fn repeat_of(
        &self,
        ctx: &TurnContext<'_>,
        terms: &std::collections::BTreeSet<String>,
    ) -> Option<Repeat> {
        let mut history = ctx.history;
        if let Some((last, rest)) = history.split_last() {
            if last.speaker == Speaker::Caller && last.text.trim() == ctx.utterance.trim() {
                history = rest;
            }
        }
        history
            .iter()
            .filter(|s| s.speaker == Speaker::Caller)
            .map(|s| (s.text, text::jaccard(terms, &text::term_set(s.text))))
            .find(|(_, j)| *j >= self.config.repeat_jaccard)
            .map(|(earlier, j)| Repeat {
                earlier: earlier.to_string(),
                jaccard: (j * 1000.0).round() / 1000.0,
                threshold: self.config.repeat_jaccard,
            })
    }

    fn hand_off(&mut self, reason: String, apology: &str, mut trace: TraceInfo) -> Decision {
        trace.no_match_streak = self.no_match_streak;
        let say = format!("{apology}{}", handoff_words(self.mode));
        let follow_up = match self.mode {
            HandoffMode::LiveTransfer => {
                self.phase = Phase::Transferring;
                "live transfer to a person"
            }
            HandoffMode::LoggedEscalation => "not given yet",
        };
        let handoff = HandoffRequest {
            summary: summarise(self.first_question.as_deref(), &reason, follow_up),
            reason,
            mode: self.mode,
        };
        if self.mode == HandoffMode::LoggedEscalation {
            self.phase = Phase::Escalating {
                handoff: handoff.clone(),
                dialogue: Dialogue::new(
                    self.caller_id.clone(),
                    self.config.region,
                    self.config.max_follow_up_misses,
                ),
            };
        }
        Decision::Handoff {
            handoff,
            say,
            trace,
        }
    }

    fn escalate(&mut self, ctx: &TurnContext<'_>) -> Decision {
        let Phase::Escalating { handoff, dialogue } = &mut self.phase else {
            return self.talk(ctx);
        };
        match dialogue.handle(ctx.utterance, ctx.dtmf) {
            Step::Ask { step, say, why } => Decision::Collect {
                step,
                say,
                trace: TraceInfo::new(Rule::FollowUpDialogue, why, ctx.now),
            },
            Step::Done {
                follow_up,
                farewell,
                why,
            } => {
                let mut handoff = handoff.clone();
                let captured = follow_up
                    .as_ref()
                    .map_or_else(|| "none captured".to_string(), ToString::to_string);
                // After a fallback the agent may not have heard the question
                // itself (another brain talked): take it from the history.
                let first_question = self.first_question.as_deref().or_else(|| {
                    ctx.history
                        .iter()
                        .find(|s| s.speaker == Speaker::Caller && !s.text.starts_with("[keys"))
                        .map(|s| s.text)
                });
                handoff.summary = summarise(first_question, &handoff.reason, &captured);
                let rule = if follow_up.as_ref().is_some_and(|f| f.confirmed) {
                    Rule::FollowUpCaptured
                } else {
                    Rule::FollowUpFallback
                };
                let reason = EndReason::Escalated { handoff, follow_up };
                self.phase = Phase::Ended {
                    reason: reason.clone(),
                    farewell: farewell.clone(),
                };
                Decision::EndCall {
                    reason,
                    farewell,
                    trace: TraceInfo::new(rule, why, ctx.now),
                }
            }
        }
    }
}

impl Agent for PlaybookAgent {
    fn fall_back_to_escalation(&mut self, handoff: &HandoffRequest) {
        if matches!(self.phase, Phase::Escalating { .. } | Phase::Ended { .. }) {
            return;
        }
        self.phase = Phase::Escalating {
            handoff: HandoffRequest {
                mode: HandoffMode::LoggedEscalation,
                ..handoff.clone()
            },
            dialogue: Dialogue::new(
                self.caller_id.clone(),
                self.config.region,
                self.config.max_follow_up_misses,
            ),
        };
    }

    fn respond(&mut self, ctx: &TurnContext<'_>) -> Decision {
        match &self.phase {
            Phase::Talking => self.talk(ctx),
            Phase::Escalating { .. } => self.escalate(ctx),
            Phase::Transferring => Decision::Reply {
                say: HOLD.into(),
                trace: TraceInfo::new(
                    Rule::AwaitingTransfer,
                    "a live transfer is under way",
                    ctx.now,
                ),
            },
            Phase::Ended { reason, farewell } => Decision::EndCall {
                reason: reason.clone(),
                farewell: farewell.clone(),
                trace: TraceInfo::new(Rule::Ended, "the call has already ended", ctx.now),
            },
        }
    }
}

/// What the caller hears when handed off: a live transfer holds, a logged
/// escalation asks for the follow-up channel.
pub(crate) fn handoff_words(mode: HandoffMode) -> String {
    match mode {
        HandoffMode::LiveTransfer => {
            format!("Let me connect you with someone from our team. {HOLD}")
        }
        HandoffMode::LoggedEscalation => format!(
            "I'll pass this to our team so someone can follow up with you. {}",
            escalation::ASK_CHANNEL
        ),
    }
}

/// "The caller asked about X; the AI could not find an answer".
fn cannot_resolve(question: Option<&str>) -> String {
    match question {
        Some(q) => format!("The caller asked about \"{q}\"; the AI could not find an answer"),
        None => "The caller's issue could not be resolved; the AI could not find an answer".into(),
    }
}

/// The extractive summary a rep reads first.
pub fn summarise(first_question: Option<&str>, reason: &str, follow_up: &str) -> String {
    format!(
        "Caller asked: {} Not resolved: {} Preferred follow-up: {}",
        sentence(first_question.unwrap_or("nothing specific")),
        sentence(reason),
        sentence(follow_up),
    )
}

fn sentence(s: &str) -> String {
    let s = s.trim();
    if s.ends_with(['.', '?', '!']) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContactPoint, Said};
    use switchboard_model::{AgentInput, PreferredChannel, Timestamp};

    const KNOWLEDGE: &str =
        "Opening hours: Monday to Friday 9 to 5.\n\nQ: Where are you located?\nA: 12 Harbour Street.";

    fn spec(mode: HandoffMode) -> AgentSpec {
        AgentInput {
            name: "Front desk".into(),
            instructions: Some(KNOWLEDGE.into()),
            handoff_mode: Some(mode),
            handoff_number: Some("+14155550100".into()),
            ..Default::default()
        }
        .validate(Region::default())
        .expect("valid spec")
    }

    /// Drives an agent and keeps the history as the engine would.
    struct Call {
        agent: PlaybookAgent,
        lines: Vec<(Speaker, String)>,
    }

    impl Call {
        fn new(mode: HandoffMode) -> Self {
            let caller = E164::parse("+14155550123", Region::default()).expect("valid number");
            Self {
                agent: PlaybookAgent::new(&spec(mode), Some(&caller)),
                lines: Vec::new(),
            }
        }

        fn say(&mut self, utterance: &str) -> Decision {
            let history: Vec<Said<'_>> = self
                .lines
                .iter()
                .map(|(speaker, text)| Said {
                    speaker: *speaker,
                    text,
                })
                .collect();
            let d = self.agent.respond(&TurnContext {
                history: &history,
                utterance,
                dtmf: None,
                now: Timestamp::from_millis(1_000),
            });
            self.lines.push((Speaker::Caller, utterance.into()));
            self.lines.push((Speaker::Ai, d.say().into()));
            d
        }
    }

    #[test]
    fn answers_from_knowledge_with_a_trace() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        let d = call.say("When are you open? What are the opening hours?");
        assert!(d
            .say()
            .starts_with("Opening hours: Monday to Friday 9 to 5"));
        let t = d.trace();
        assert_eq!(t.rule, Rule::KnowledgeMatch);
        assert_eq!(t.entry.as_ref().map(|e| e.id), Some(1));
        assert!(t.thresholds.is_some());
    }

    #[test]
    fn two_unanswered_questions_hand_off_with_the_last_question() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        let first = call.say("Do you sell pizza?");
        assert_eq!(first.trace().rule, Rule::NoMatch);
        assert_eq!(first.trace().no_match_streak, 1);
        let Decision::Handoff { handoff, trace, .. } = call.say("Can I rent a kayak?") else {
            panic!("expected a handoff");
        };
        assert_eq!(trace.rule, Rule::NoMatchLimit);
        assert_eq!(trace.no_match_streak, 2);
        assert_eq!(
            handoff.reason,
            "The caller asked about \"Can I rent a kayak?\"; the AI could not find an answer"
        );
        assert!(handoff
            .summary
            .starts_with("Caller asked: Do you sell pizza? Not resolved:"));
    }

    #[test]
    fn an_answer_resets_the_no_match_streak() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        call.say("Do you sell pizza?");
        call.say("where are you located");
        assert_eq!(call.say("Can I rent a kayak?").trace().rule, Rule::NoMatch);
    }

    #[test]
    fn repeated_question_hands_off() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        call.say("Do you sell pizza?");
        call.say("hello?");
        let d = call.say("do you sell pizza");
        let Decision::Handoff { handoff, trace, .. } = d else {
            panic!("expected a handoff, got {d:?}");
        };
        assert_eq!(trace.rule, Rule::RepeatedQuestion);
        let repeat = trace.repeats.expect("names the earlier turn");
        assert_eq!(repeat.earlier, "Do you sell pizza?");
        assert!(repeat.jaccard >= 0.8);
        assert!(handoff.reason.contains("could not find an answer"));
    }

    #[test]
    fn frustration_hands_off_about_the_last_question() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        call.say("Do you sell pizza?");
        let Decision::Handoff { handoff, trace, .. } = call.say("This is ridiculous") else {
            panic!("expected a handoff");
        };
        assert_eq!(trace.rule, Rule::Frustration);
        assert_eq!(trace.phrase.as_deref(), Some("ridiculous"));
        assert_eq!(
            handoff.reason,
            "The caller asked about \"Do you sell pizza?\"; the AI could not find an answer"
        );
    }

    #[test]
    fn negated_request_is_not_a_handoff() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        let d = call.say("I don't want to talk to a human");
        assert!(matches!(d, Decision::Reply { .. }), "{d:?}");
        assert_eq!(d.trace().rule, Rule::NoMatch);
        let d = call.say("where are you located?");
        assert_eq!(d.say(), "12 Harbour Street.");
    }

    #[test]
    fn live_transfer_holds_after_the_handoff() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        let d = call.say("A representative please");
        assert!(matches!(
            d,
            Decision::Handoff {
                handoff: HandoffRequest {
                    mode: HandoffMode::LiveTransfer,
                    ..
                },
                ..
            }
        ));
        assert_eq!(call.say("hello?").trace().rule, Rule::AwaitingTransfer);
    }

    #[test]
    fn logged_escalation_with_email_ends_with_the_address() {
        let mut call = Call::new(HandoffMode::LoggedEscalation);
        call.say("Do you sell pizza?");
        let d = call.say("let me talk to someone");
        assert!(d.say().contains("email, SMS or a callback"));
        call.say("email");
        call.say("ana at example dot com");
        let Decision::EndCall {
            reason: EndReason::Escalated { handoff, follow_up },
            ..
        } = call.say("yes")
        else {
            panic!("expected the escalation to end the call");
        };
        let follow_up = follow_up.expect("captured");
        assert_eq!(follow_up.channel, PreferredChannel::Email);
        assert_eq!(
            follow_up.contact,
            ContactPoint::Email("ana@example.com".into())
        );
        assert!(handoff
            .summary
            .ends_with("Preferred follow-up: email to ana@example.com."));
    }

    #[test]
    fn failed_transfer_falls_back_to_the_follow_up_dialogue() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        let Decision::Handoff { handoff, .. } = call.say("A representative please") else {
            panic!("expected a handoff");
        };
        call.agent.fall_back_to_escalation(&handoff);
        let d = call.say("a callback please");
        assert_eq!(d.trace().rule, Rule::FollowUpDialogue);
        let Decision::EndCall {
            reason: EndReason::Escalated { handoff, follow_up },
            ..
        } = call.say("yes")
        else {
            panic!("expected the escalation to end the call");
        };
        assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
        assert_eq!(
            follow_up.map(|f| f.to_string()).as_deref(),
            Some("callback on +14155550123")
        );
    }

    #[test]
    fn goodbye_ends_the_call_and_stays_ended() {
        let mut call = Call::new(HandoffMode::LiveTransfer);
        assert!(matches!(
            call.say("ok bye"),
            Decision::EndCall {
                reason: EndReason::CallerDone,
                ..
            }
        ));
        assert_eq!(call.say("hello?").trace().rule, Rule::Ended);
    }

    #[test]
    fn summary_reads_as_sentences() {
        assert_eq!(
            summarise(Some("Do you sell pizza?"), "No answer", "callback on +14155550123"),
            "Caller asked: Do you sell pizza? Not resolved: No answer. Preferred follow-up: callback on +14155550123."
        );
    }
}
