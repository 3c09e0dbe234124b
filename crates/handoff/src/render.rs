//! Turning a session into the messages a rep reads in Salesforce.
//!
//! MIAW posts every message as the end user, so each line says who spoke:
//! `[14:03:07] Caller: …` / `[14:03:09] AI: …`, in the agent's time zone. The
//! first message is the handoff header (reason, mode, preferred channel,
//! session id, Inbox link); the last is the summary. Text is cleaned of
//! control characters and split at the message size limit on a word boundary.
//!
//! Ids are derived, never random: the conversation id is a UUID v5 of the
//! session id and each message id a UUID v5 of (conversation, position), so
//! a retry re-sends exactly the same ids and Salesforce (or the sandbox)
//! never sees a second conversation or a duplicate message.

use chrono_tz::Tz;
use switchboard_model::{Handoff, HandoffMode, PreferredChannel, SessionId, Speaker, Turn};
use uuid::Uuid;

/// Namespace for conversation ids (a fixed, random UUID).
const CONVERSATION_NS: Uuid = Uuid::from_u128(0x5b1e_6a4e_2f0c_4d7e_9a51_0c6f_3e2d_8b17);

/// Salesforce's limit for one message is not documented; 4,000 characters is
/// the commonly cited agent-message limit, so stay at or below it.
pub const DEFAULT_MAX_CHARS: usize = 4000;

/// The Salesforce conversation id for a session: stable across retries and
/// nodes, lowercase as MIAW requires.
pub fn conversation_id(session: SessionId) -> Uuid {
    Uuid::new_v5(&CONVERSATION_NS, session.as_uuid().as_bytes())
}

/// The id of the message at `position` in a conversation.
pub fn message_id(conversation: Uuid, position: usize) -> Uuid {
    Uuid::new_v5(&conversation, position.to_string().as_bytes())
}

/// One message to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub position: usize,
    pub id: Uuid,
    pub text: String,
}

/// What the renderer needs.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    pub session_id: SessionId,
    pub caller: &'a str,
    pub handoff: &'a Handoff,
    /// The turns included in the transcript (the first `turn_count`).
    pub turns: &'a [Turn],
    pub time_zone: Tz,
    /// Link to the session in our Inbox, when the public URL is known.
    pub inbox_url: Option<String>,
    pub max_chars: usize,
    /// Pack several turns into each message (fewer round-trips).
    pub pack_turns: bool,
}

pub fn render(input: &RenderInput<'_>) -> Vec<OutgoingMessage> {
    let max = input.max_chars.max(200);
    let mut texts: Vec<String> = Vec::new();
    texts.extend(split(&header(input), max));
    let lines: Vec<String> = input
        .turns
        .iter()
        .map(|t| turn_line(t, input.time_zone))
        .collect();
    if input.pack_turns {
        let mut current = String::new();
        for line in lines {
            for piece in split(&line, max) {
                if !current.is_empty() && current.chars().count() + 1 + piece.chars().count() > max
                {
                    texts.push(std::mem::take(&mut current));
                }
                if !current.is_empty() {
                    current.push('\n');
                }
                current.push_str(&piece);
            }
        }
        if !current.is_empty() {
            texts.push(current);
        }
    } else {
        for line in lines {
            texts.extend(split(&line, max));
        }
    }
    texts.extend(split(
        &format!("Summary: {}", clean(&input.handoff.summary)),
        max,
    ));
    let conversation = conversation_id(input.session_id);
    texts
        .into_iter()
        .enumerate()
        .map(|(position, text)| OutgoingMessage {
            position,
            id: message_id(conversation, position),
            text,
        })
        .collect()
}

fn header(input: &RenderInput<'_>) -> String {
    let h = input.handoff;
    let mode = match h.mode {
        HandoffMode::LiveTransfer => {
            "live transfer (the caller is being connected to a rep by phone)"
        }
        HandoffMode::LoggedEscalation => "logged escalation (follow up with the caller)",
    };
    let mut out = format!(
        "Handoff from the AI phone agent\nCaller: {}\nReason: {}\nMode: {mode}",
        clean(input.caller),
        clean(&h.reason)
    );
    if let Some(channel) = h.preferred_channel {
        let label = match channel {
            PreferredChannel::Email => "email",
            PreferredChannel::Sms => "SMS",
            PreferredChannel::Callback => "callback",
        };
        out.push_str(&format!("\nPreferred follow-up: {label}"));
        if let Some(d) = &h.channel_details {
            out.push_str(&format!(" ({})", clean(d)));
        }
    }
    out.push_str(&format!("\nSession id: {}", input.session_id));
    if let Some(url) = &input.inbox_url {
        out.push_str(&format!("\nRecording and trace: {url}"));
    }
    out.push_str(&format!(
        "\nTranscript: {} turns follow.",
        input.turns.len()
    ));
    out
}

fn turn_line(turn: &Turn, tz: Tz) -> String {
    let at = turn
        .started_at
        .to_datetime()
        .with_timezone(&tz)
        .format("%H:%M:%S");
    let who = match turn.speaker {
        Speaker::Caller => "Caller",
        Speaker::Ai => "AI",
        Speaker::Rep => "Rep",
        Speaker::System => "System",
    };
    format!("[{at}] {who}: {}", clean(&turn.text))
}

/// Removes control characters (keeping newlines and tabs) and trims.
pub fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect::<String>()
        .trim()
        .to_string()
}

/// Splits `text` into pieces of at most `max` characters, preferring to break
/// at whitespace; continuation pieces are marked.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return vec![text.to_string()];
    }
    let budget = max.saturating_sub(4).max(1); // room for a "… " marker
    let mut out = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let end = (start + budget).min(chars.len());
        let mut cut = end;
        if end < chars.len() {
            if let Some(ws) = (start + budget / 2..end)
                .rev()
                .find(|&i| chars[i].is_whitespace())
            {
                cut = ws + 1;
            }
        }
        let piece: String = chars[start..cut].iter().collect();
        let piece = piece.trim_end();
        out.push(if start == 0 {
            piece.to_string()
        } else {
            format!("… {piece}")
        });
        start = cut;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_model::{HandoffId, HandoffStatus, Timestamp, TurnId};

    fn handoff(session: SessionId) -> Handoff {
        Handoff {
            id: HandoffId::new(),
            session_id: session,
            mode: HandoffMode::LoggedEscalation,
            reason: "Caller asked for a person about a refund".into(),
            summary: "Refund for order 1234; AI could not verify the order.".into(),
            preferred_channel: Some(PreferredChannel::Callback),
            channel_details: Some("+14155550100".into()),
            status: HandoffStatus::Pending,
            turn_count: 2,
            conversation_id: None,
            conversation_created: false,
            messages_acked: 0,
            messages_total: None,
            identity: None,
            routing_attributes: None,
            attempts: 0,
            last_error: None,
            routed_at: None,
            estimated_wait_seconds: None,
            rep_name: None,
            rep_joined_at: None,
            closed_at: None,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            delivered_at: None,
        }
    }

    fn turn(session: SessionId, seq: i64, speaker: Speaker, text: &str, at: &str) -> Turn {
        let t = Timestamp::parse_rfc3339(at).expect("valid");
        Turn {
            id: TurnId::new(),
            session_id: session,
            seq,
            speaker,
            text: text.into(),
            started_at: t,
            ended_at: t,
        }
    }

    #[test]
    fn header_turns_and_summary_in_order_with_local_times() {
        let session = SessionId::new();
        let h = handoff(session);
        let turns = vec![
            turn(
                session,
                0,
                Speaker::Ai,
                "Hello, how can I help?",
                "2026-11-25T19:03:07.000Z",
            ),
            turn(
                session,
                1,
                Speaker::Caller,
                "I need to speak with a person\u{0}",
                "2026-11-25T19:03:09.500Z",
            ),
        ];
        let msgs = render(&RenderInput {
            session_id: session,
            caller: "+14155550100",
            handoff: &h,
            turns: &turns,
            time_zone: "America/New_York".parse().expect("tz"),
            inbox_url: Some(format!("https://sb.example.com/inbox/{session}")),
            max_chars: DEFAULT_MAX_CHARS,
            pack_turns: false,
        });
        assert_eq!(msgs.len(), 4);
        assert!(msgs[0]
            .text
            .contains("Reason: Caller asked for a person about a refund"));
        assert!(msgs[0]
            .text
            .contains("Preferred follow-up: callback (+14155550100)"));
        assert!(msgs[0].text.contains(&format!("Session id: {session}")));
        assert_eq!(msgs[1].text, "[14:03:07] AI: Hello, how can I help?");
        assert_eq!(
            msgs[2].text, "[14:03:09] Caller: I need to speak with a person",
            "control characters removed"
        );
        assert!(msgs[3].text.starts_with("Summary: Refund"));
        let conv = conversation_id(session);
        assert_eq!(msgs[2].id, message_id(conv, 2));
        assert_eq!(
            conversation_id(session),
            conv,
            "ids are stable across retries"
        );
        assert_eq!(conv.to_string(), conv.to_string().to_lowercase());
    }

    #[test]
    fn long_turns_are_split_and_packing_cuts_round_trips() {
        let session = SessionId::new();
        let h = handoff(session);
        let long = "word ".repeat(25_000); // ~125 KB
        let mut turns = vec![turn(
            session,
            0,
            Speaker::Caller,
            &long,
            "2026-11-25T19:03:07.000Z",
        )];
        for i in 1..40 {
            turns.push(turn(
                session,
                i,
                Speaker::Ai,
                "short answer",
                "2026-11-25T19:03:08.000Z",
            ));
        }
        let input = RenderInput {
            session_id: session,
            caller: "+14155550100",
            handoff: &h,
            turns: &turns,
            time_zone: Tz::UTC,
            inbox_url: None,
            max_chars: 4000,
            pack_turns: false,
        };
        let one_per_turn = render(&input);
        assert!(one_per_turn.iter().all(|m| m.text.chars().count() <= 4000));
        assert!(
            one_per_turn.len() > 40 + 30,
            "the 125 KB turn became many messages"
        );
        assert!(
            one_per_turn[2].text.starts_with("… word"),
            "continuations are marked"
        );
        let packed = render(&RenderInput {
            pack_turns: true,
            ..input
        });
        assert!(packed.len() < one_per_turn.len());
        assert!(packed.iter().all(|m| m.text.chars().count() <= 4000));
        let all: String = packed
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            all.matches("short answer").count(),
            39,
            "every turn is still there"
        );
    }
}
