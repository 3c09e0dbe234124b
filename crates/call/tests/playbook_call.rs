//! A whole call on virtual time: the real playbook agent answering the call
//! machine's asks at once (as a driver does for a synchronous brain), a
//! scripted caller (loud tone = speech, zeros = silence), a fake
//! STT that answers `FinishStt` with the caller's scripted words and a fake
//! TTS that delivers two frames per word of every `Say` at once.

use std::collections::VecDeque;
use std::time::Instant;

use switchboard_agent::{Agent, ContactPoint, EndReason as AgentEndReason, PlaybookAgent};
use switchboard_call::{
    Call, Config, EndReason, Generation, Input, Output, SttEvent, TraceKind, TransferResult,
};
use switchboard_media::{Frame, FRAME_DURATION};
use switchboard_model::{
    AgentInput, HandoffMode, PreferredChannel, Region, Speaker, Timestamp, E164,
};

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

struct World {
    call: Call,
    agent: PlaybookAgent,
    now: Instant,
    /// What the STT will hear for the next caller turns.
    finals: VecDeque<String>,
    /// Frames played per generation, with the time of each.
    played: Vec<(Instant, Generation)>,
    outputs: Vec<(Instant, Output)>,
}

impl World {
    fn start() -> Self {
        Self::with_caller_id(None)
    }

    fn with_caller_id(caller_id: Option<&E164>) -> Self {
        let spec = AgentInput {
            name: "Acme front desk".into(),
            instructions: Some(INSTRUCTIONS.into()),
            handoff_mode: Some(HandoffMode::LiveTransfer),
            handoff_number: Some("+14155550100".into()),
            ..Default::default()
        }
        .validate(Region::default())
        .expect("valid agent");
        let agent = PlaybookAgent::new(&spec, caller_id);
        let now = Instant::now();
        let call = Call::new(spec.greeting, Config::default(), now)
            .with_wall_clock(Timestamp::from_millis(1_700_000_000_000));
        let mut world = World {
            call,
            agent,
            now,
            finals: VecDeque::new(),
            played: Vec::new(),
            outputs: Vec::new(),
        };
        world.drain();
        world
    }

    fn feed(&mut self, input: Input<'_>) {
        if !self.call.is_ended() {
            self.call.handle_input(input).expect("input accepted");
            self.drain();
        }
    }

    fn drain(&mut self) {
        let mut tts = Vec::new();
        let mut finish = false;
        let mut decisions = Vec::new();
        loop {
            match self.call.poll_output() {
                Output::Timeout(_) => break,
                Output::Play(frame) => {
                    // The TTS tone's amplitude carries its generation.
                    let generation = Generation::from((frame.samples()[0] - 4000) as u64);
                    self.played.push((self.now, generation));
                }
                Output::Say { generation, text } => {
                    tts.push((generation, text.split_whitespace().count() * 2));
                    self.outputs
                        .push((self.now, Output::Say { generation, text }));
                }
                Output::FinishStt => {
                    finish = true;
                    self.outputs.push((self.now, Output::FinishStt));
                }
                Output::Ask(turn) => {
                    decisions.push((turn.id, self.agent.answer(&turn)));
                    self.outputs.push((self.now, Output::Ask(turn)));
                }
                other => self.outputs.push((self.now, other)),
            }
        }
        let now = self.now;
        for (id, decision) in decisions {
            self.feed(Input::Decision(now, id, decision));
        }
        for (generation, frames) in tts {
            let tone = square(4000 + generation.value() as i16);
            for _ in 0..frames {
                self.feed(Input::TtsFrame(now, generation, tone.clone()));
            }
            self.feed(Input::TtsDone(now, generation));
        }
        if finish {
            let text = self.finals.pop_front().unwrap_or_default();
            self.feed(Input::Stt(
                now,
                SttEvent::Final {
                    text,
                    confidence: 0.9,
                },
            ));
        }
    }

    fn ticks(&mut self, n: usize, caller: &Frame) {
        for _ in 0..n {
            self.now += FRAME_DURATION;
            let now = self.now;
            self.feed(Input::Audio(now, caller));
            self.feed(Input::Timeout(now));
        }
    }

    fn says(&self) -> Vec<String> {
        self.outputs
            .iter()
            .filter_map(|(_, o)| match o {
                Output::Say { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_caller_asks_interrupts_and_is_transferred() {
    let voice = square(16_000);
    let silence = Frame::silence();
    let mut world = World::start();

    // The greeting plays in full.
    world.ticks(100, &silence);
    let greeting = world.says()[0].clone();
    assert!(!greeting.is_empty());
    assert!(world.played.iter().all(|(_, g)| g.value() == 1));
    assert_eq!(world.played.len(), greeting.split_whitespace().count() * 2);

    // A question from knowledge.
    world
        .finals
        .push_back("What are your opening hours?".into());
    world.ticks(40, &voice);
    // 500 ms: the end of turn (250 ms), and the reply has played past the
    // echo guard.
    world.ticks(25, &silence);
    let reply = world.says()[1].clone();
    assert!(
        reply.starts_with("Opening hours: Monday to Friday"),
        "{reply}"
    );
    assert!(world.played.iter().any(|(_, g)| g.value() == 2));

    // The caller talks over the answer and asks for a person.
    world
        .finals
        .push_back("I need to speak with a person".into());
    world.ticks(2, &voice);
    let barged_at = world.now;
    assert!(world
        .outputs
        .iter()
        .any(|(t, o)| *t == barged_at && matches!(o, Output::CancelSpeech { .. })));
    world.ticks(30, &voice);
    assert!(
        world
            .played
            .iter()
            .all(|(t, g)| g.value() != 2 || *t < barged_at),
        "no frame of the interrupted answer after the barge-in"
    );
    world.ticks(200, &silence);

    // The handoff is requested and announced; the call holds for the transfer.
    let handoff = world
        .outputs
        .iter()
        .find_map(|(_, o)| match o {
            Output::Handoff(h) => Some(h.clone()),
            _ => None,
        })
        .expect("a handoff");
    assert_eq!(handoff.mode, HandoffMode::LiveTransfer);
    assert!(world.says()[2].contains("connect you"));
    assert!(!world.call.is_ended());

    // The store gets the conversation as the caller heard it.
    let transcript: Vec<(Speaker, String, bool)> = world
        .outputs
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Transcript {
                speaker,
                text,
                interrupted,
                started_at,
                ended_at,
            } => {
                assert!(started_at <= ended_at);
                assert!(started_at.as_millis() >= 1_700_000_000_000);
                Some((*speaker, text.clone(), *interrupted))
            }
            _ => None,
        })
        .collect();
    assert_eq!(transcript.len(), 5, "{transcript:?}");
    assert_eq!(transcript[0], (Speaker::Ai, greeting, false));
    assert_eq!(transcript[1].1, "What are your opening hours?");
    let (speaker, heard, interrupted) = &transcript[2];
    assert_eq!(*speaker, Speaker::Ai);
    assert!(*interrupted);
    assert!(reply.starts_with(heard.as_str()) && heard.len() < reply.len());
    assert_eq!(transcript[3].1, "I need to speak with a person");
    assert_eq!(transcript[4], (Speaker::Ai, world.says()[2].clone(), false));

    // One latency trace per answered turn, end of speech → first frame out.
    let latencies = world
        .outputs
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                Output::Trace {
                    kind: TraceKind::Latency,
                    ..
                }
            )
        })
        .count();
    assert_eq!(latencies, 2);
}

#[test]
fn a_failed_transfer_becomes_a_logged_escalation_to_the_end() {
    let voice = square(16_000);
    let silence = Frame::silence();
    let caller = E164::parse("+14155550123", Region::default()).expect("valid number");
    let mut world = World::with_caller_id(Some(&caller));
    world.ticks(100, &silence);

    world.finals.push_back("Can I speak to a person?".into());
    world.ticks(30, &voice);
    world.ticks(200, &silence);
    assert!(
        world.says()[1].contains("connect you"),
        "{:?}",
        world.says()
    );

    // The handoff number is busy.
    let now = world.now;
    world.feed(Input::Transfer(
        now,
        TransferResult::Failed {
            reason: "busy".into(),
        },
    ));
    assert!(world.says()[2].starts_with("I couldn't reach anyone right now."));
    world.ticks(200, &silence);

    // The follow-up dialogue: channel, then the number they call from.
    for answer in ["A callback please", "yes"] {
        world.finals.push_back(answer.into());
        world.ticks(30, &voice);
        world.ticks(300, &silence);
    }
    assert!(world.call.is_ended(), "{:?}", world.says());
    let end = world
        .outputs
        .iter()
        .find_map(|(_, o)| match o {
            Output::Hangup(reason) => Some(reason.clone()),
            _ => None,
        })
        .expect("hung up");
    let EndReason::Agent(AgentEndReason::Escalated { handoff, follow_up }) = end else {
        panic!("expected an escalation, got {end:?}");
    };
    assert_eq!(handoff.mode, HandoffMode::LoggedEscalation);
    let follow_up = follow_up.expect("a follow-up");
    assert_eq!(follow_up.channel, PreferredChannel::Callback);
    assert_eq!(follow_up.contact, ContactPoint::Phone(caller));
    assert!(follow_up.confirmed);
    assert!(world
        .says()
        .last()
        .is_some_and(|s| s.contains("call you back")));
    let transfer = world
        .outputs
        .iter()
        .find_map(|(_, o)| match o {
            Output::Trace {
                kind: TraceKind::Transfer,
                json,
            } => Some(json.clone()),
            _ => None,
        })
        .expect("transfer traced");
    assert_eq!(transfer["result"], "failed");
}
