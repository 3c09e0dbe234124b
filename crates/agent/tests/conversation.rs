//! A whole call against the playbook agent, as the call machine drives it:
//! greeting, an answer from knowledge, a request for a person, and (for a
//! logged escalation) the follow-up dialogue to the end of the call.

use switchboard_agent::{
    Agent, ContactPoint, Decision, EndReason, FollowUpStep, PlaybookAgent, Rule, Said, TurnContext,
};
use switchboard_model::{
    AgentInput, AgentSpec, HandoffMode, PreferredChannel, Region, Speaker, Timestamp, E164,
};

const INSTRUCTIONS: &str = "\
You are the receptionist of Acme Dental. Be brief and friendly.

Opening hours: Monday to Friday 9 to 5. Closed on weekends.

Q: Where are you located?
A: We are at 12 Harbour Street, next to the library.
";

fn spec(mode: HandoffMode) -> AgentSpec {
    AgentInput {
        name: "Acme front desk".into(),
        instructions: Some(INSTRUCTIONS.into()),
        handoff_mode: Some(mode),
        handoff_number: Some("+14155550100".into()),
        ..Default::default()
    }
    .validate(Region::default())
    .expect("valid agent")
}

fn caller() -> E164 {
    E164::parse("+14155550123", Region::default()).expect("valid caller ID")
}

/// The engine's side: keeps the transcript, feeds each caller turn with a
/// virtual clock, records the agent's words.
struct Call {
    agent: PlaybookAgent,
    transcript: Vec<(Speaker, String)>,
    now: i64,
}

impl Call {
    fn start(mode: HandoffMode) -> Self {
        let spec = spec(mode);
        let agent = PlaybookAgent::new(&spec, Some(&caller()));
        Self {
            agent,
            transcript: vec![(Speaker::Ai, spec.greeting)],
            now: 1_700_000_000_000,
        }
    }

    fn turn(&mut self, utterance: &str, dtmf: Option<&str>) -> Decision {
        self.now += 4_000;
        let history: Vec<Said<'_>> = self
            .transcript
            .iter()
            .map(|(speaker, text)| Said {
                speaker: *speaker,
                text,
            })
            .collect();
        let decision = self.agent.respond(&TurnContext {
            history: &history,
            utterance,
            dtmf,
            now: Timestamp::from_millis(self.now),
        });
        assert_eq!(decision.trace().at.as_millis(), self.now);
        assert!(!decision.trace().why.is_empty(), "every decision says why");
        self.transcript.push((Speaker::Caller, utterance.into()));
        self.transcript.push((Speaker::Ai, decision.say().into()));
        decision
    }

    fn say(&mut self, utterance: &str) -> Decision {
        self.turn(utterance, None)
    }
}

/// Greeting → hours from knowledge → "I need to speak with a person".
fn opening(call: &mut Call) -> Decision {
    let hello = call.say("Hi there");
    assert_eq!(hello.trace().rule, Rule::SmallTalk);
    assert!(matches!(hello, Decision::Reply { .. }));

    let hours = call.say("What are your opening hours?");
    assert!(
        hours
            .say()
            .starts_with("Opening hours: Monday to Friday 9 to 5"),
        "{}",
        hours.say()
    );
    let trace = serde_json::to_value(hours.trace()).expect("trace is JSON");
    assert_eq!(trace["rule"], "knowledge_match");
    assert_eq!(trace["entry"]["id"], 1);
    assert_eq!(
        trace["entry"]["title"],
        "Opening hours: Monday to Friday 9 to 5."
    );
    assert!(
        trace["entry"]["score"].as_f64().expect("a score")
            >= trace["thresholds"]["min_score"]
                .as_f64()
                .expect("a threshold")
    );
    assert!(trace["why"]
        .as_str()
        .is_some_and(|w| w.contains("knowledge entry 1")));

    call.say("I need to speak with a person")
}

#[test]
fn live_transfer_hands_off_at_once() {
    let mut call = Call::start(HandoffMode::LiveTransfer);
    let decision = opening(&mut call);
    let Decision::Handoff {
        handoff,
        say,
        trace,
    } = &decision
    else {
        panic!("expected a handoff, got {decision:?}");
    };
    assert_eq!(handoff.mode, HandoffMode::LiveTransfer);
    assert!(say.contains("connect you"));
    assert_eq!(trace.rule, Rule::HandoffRequested);
    assert_eq!(trace.phrase.as_deref(), Some("speak with a person"));
    assert_eq!(
        handoff.reason,
        "The caller asked to speak with a person after asking about \"What are your opening hours?\""
    );
    assert!(handoff
        .summary
        .starts_with("Caller asked: What are your opening hours?"));
    assert!(handoff
        .summary
        .ends_with("Preferred follow-up: live transfer to a person."));

    let json = serde_json::to_value(&decision).expect("decision is JSON");
    assert_eq!(json["decision"], "handoff");
    assert_eq!(json["handoff"]["mode"], "live_transfer");
    assert_eq!(json["trace"]["rule"], "handoff_requested");
}

#[test]
fn logged_escalation_captures_a_confirmed_callback_on_the_caller_id() {
    let mut call = Call::start(HandoffMode::LoggedEscalation);
    let decision = opening(&mut call);
    let Decision::Handoff { handoff, say, .. } = &decision else {
        panic!("expected a handoff, got {decision:?}");
    };
    assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
    assert!(say.contains("How would you like us to follow up: email, SMS or a callback?"));
    assert!(handoff
        .summary
        .ends_with("Preferred follow-up: not given yet."));

    let offer = call.say("A callback would be great");
    let Decision::Collect { step, say, trace } = &offer else {
        panic!("expected the caller-ID offer, got {offer:?}");
    };
    assert_eq!(
        *step,
        FollowUpStep::OfferCallerId(PreferredChannel::Callback)
    );
    assert_eq!(say, "Shall we use the number you're calling from?");
    assert_eq!(trace.rule, Rule::FollowUpDialogue);
    assert!(trace.why.contains("callback"));

    let end = call.say("Yes, that's fine");
    let Decision::EndCall {
        reason: EndReason::Escalated { handoff, follow_up },
        farewell,
        trace,
    } = &end
    else {
        panic!("expected the call to end, got {end:?}");
    };
    let follow_up = follow_up.as_ref().expect("a follow-up");
    assert_eq!(follow_up.channel, PreferredChannel::Callback);
    assert_eq!(follow_up.contact, ContactPoint::Phone(caller()));
    assert!(follow_up.confirmed);
    assert_eq!(trace.rule, Rule::FollowUpCaptured);
    assert!(farewell.contains("call you back"));
    assert_eq!(
        handoff.summary,
        "Caller asked: What are your opening hours? \
         Not resolved: The caller asked to speak with a person after asking about \"What are your opening hours?\". \
         Preferred follow-up: callback on +14155550123."
    );

    let json = serde_json::to_value(&end).expect("decision is JSON");
    assert_eq!(json["decision"], "end_call");
    assert_eq!(json["reason"]["kind"], "escalated");
    assert_eq!(json["reason"]["follow_up"]["channel"], "callback");
    assert_eq!(
        json["reason"]["follow_up"]["contact"]["phone"],
        "+14155550123"
    );
}

#[test]
fn logged_escalation_accepts_keypad_answers() {
    let mut call = Call::start(HandoffMode::LoggedEscalation);
    opening(&mut call);
    let d = call.turn("", Some("2"));
    assert!(matches!(
        d,
        Decision::Collect {
            step: FollowUpStep::OfferCallerId(PreferredChannel::Sms),
            ..
        }
    ));
    let d = call.turn("", Some("2"));
    assert!(matches!(
        d,
        Decision::Collect {
            step: FollowUpStep::AskDetail(PreferredChannel::Sms),
            ..
        }
    ));
    let d = call.turn("", Some("4155550177#"));
    assert_eq!(d.say(), "I have + 1 4 1 5 5 5 5 0 1 7 7 — is that right?");
    let d = call.turn("", Some("1"));
    let Decision::EndCall {
        reason: EndReason::Escalated {
            follow_up: Some(f), ..
        },
        ..
    } = d
    else {
        panic!("expected the call to end, got {d:?}");
    };
    assert_eq!(f.to_string(), "SMS to +14155550177");
}
