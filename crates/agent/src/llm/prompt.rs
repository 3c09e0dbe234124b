//! What the model reads: the system prompt built from the agent's settings,
//! and the conversation of a turn as chat messages.

use switchboard_model::{AgentSpec, Speaker, E164};

use super::protocol::ChatMessage;
use crate::AgentTurn;

/// The agent's instructions, then how to behave on a phone line, when to
/// hand off and how the call opened.
pub(crate) fn system_prompt(spec: &AgentSpec, caller_id: Option<&E164>) -> String {
    let mut prompt = String::new();
    let instructions = spec.instructions.trim();
    if !instructions.is_empty() {
        prompt.push_str(instructions);
        prompt.push_str("\n\n");
    }
    prompt.push_str(&format!(
        "You are {name}, answering a phone call. Everything you write is spoken aloud by a \
         text-to-speech voice: answer in one to three short sentences of plain text (no \
         markdown, lists, emoji or links) and ask at most one question at a time.\n\
         Answer only from the instructions above and from tool results. If you do not know, say \
         so briefly and offer to connect the caller with a person.\n\
         Call transfer_to_human with a one-line reason for the team when the caller asks for a \
         person, when they are frustrated, or when you cannot resolve their request.\n\
         When the caller has nothing else, say a short goodbye and call end_call.\n",
        name = spec.name.trim(),
    ));
    if !spec.handoff_phrases.is_empty() {
        let phrases: Vec<String> = spec
            .handoff_phrases
            .iter()
            .map(|p| format!("\"{}\"", p.trim()))
            .collect();
        prompt.push_str(&format!(
            "Phrases such as {} mean the caller wants a person.\n",
            phrases.join(", ")
        ));
    }
    let greeting = spec.greeting.trim();
    if !greeting.is_empty() {
        prompt.push_str(&format!("The call opened with: \"{greeting}\"\n"));
    }
    match caller_id {
        Some(number) => prompt.push_str(&format!(
            "The caller is calling from {}.\n",
            number.as_str()
        )),
        None => prompt.push_str("The caller's number is withheld.\n"),
    }
    prompt
}

/// System prompt, the conversation so far, and the caller's turn.
pub(crate) fn messages(system: &str, turn: &AgentTurn) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::System(system.to_string())];
    for (speaker, text) in &turn.history {
        match speaker {
            Speaker::Caller => messages.push(ChatMessage::User(text.clone())),
            Speaker::Ai => messages.push(ChatMessage::Assistant {
                content: text.clone(),
                tool_calls: Vec::new(),
            }),
            // Not ours to answer: a rep's words or a system note.
            Speaker::Rep | Speaker::System => {}
        }
    }
    messages.push(ChatMessage::User(caller_words(turn)));
    messages
}

fn caller_words(turn: &AgentTurn) -> String {
    let said = turn.utterance.trim();
    match (said.is_empty(), turn.dtmf.as_deref()) {
        (false, None) => said.to_string(),
        (false, Some(keys)) => format!("{said} [keys {keys}]"),
        (true, Some(keys)) => format!("[keys {keys}]"),
        (true, None) => "[silence]".to_string(),
    }
}

/// The request for a handoff summary.
pub(crate) fn summary_messages(turn: &AgentTurn, reason: &str) -> Vec<ChatMessage> {
    let mut transcript = String::new();
    for (speaker, text) in &turn.history {
        let who = match speaker {
            Speaker::Caller => "Caller",
            Speaker::Ai => "AI",
            Speaker::Rep => "Rep",
            Speaker::System => continue,
        };
        transcript.push_str(&format!("{who}: {text}\n"));
    }
    transcript.push_str(&format!("Caller: {}\n", caller_words(turn)));
    vec![
        ChatMessage::System(
            "You write handoff notes for a customer-service team. Summarise the phone call below \
             in at most two sentences: what the caller wants and what is still unresolved. Plain \
             text, no preamble."
                .into(),
        ),
        ChatMessage::User(format!(
            "Reason for the handoff: {reason}\n\nTranscript:\n{transcript}"
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TurnId;
    use switchboard_model::{AgentInput, Region, Timestamp};

    #[test]
    fn prompt_and_messages_carry_the_agent_and_the_turn() {
        let spec = AgentInput {
            name: "Acme front desk".into(),
            instructions: Some("Opening hours: 9 to 5.".into()),
            greeting: Some("Hello, Acme.".into()),
            handoff_phrases: Some(vec!["operator".into()]),
            ..Default::default()
        }
        .validate(Region::default())
        .expect("valid spec");
        let caller = E164::parse("+14155550123", Region::default()).expect("valid number");
        let system = system_prompt(&spec, Some(&caller));
        assert!(system.starts_with("Opening hours: 9 to 5.\n\nYou are Acme front desk"));
        assert!(system.contains("\"operator\""));
        assert!(system.contains("The call opened with: \"Hello, Acme.\""));
        assert!(system.contains("+14155550123"));

        let turn = AgentTurn {
            id: TurnId::from(2),
            history: vec![
                (Speaker::Ai, "Hello, Acme.".into()),
                (Speaker::Caller, "hours?".into()),
                (Speaker::Ai, "9 to 5.".into()),
            ],
            utterance: String::new(),
            dtmf: Some("0".into()),
            now: Timestamp::from_millis(0),
            event: None,
            last_applied: Some(TurnId::from(1)),
        };
        let messages = messages(&system, &turn);
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[4], ChatMessage::User("[keys 0]".into()));
        let summary = summary_messages(&turn, "wants a person");
        let ChatMessage::User(text) = &summary[1] else {
            panic!("expected the transcript");
        };
        assert!(text.contains("Caller: hours?\nAI: 9 to 5.\nCaller: [keys 0]"));
    }
}
