//! The logged-escalation dialogue: after the agent decides to hand off and
//! no one can take the call live, it asks how the team should follow up,
//! captures the address or number, reads it back and confirms.
//!
//! ```text
//! Channel ──email──────────────▶ Detail(email) ──parsed──▶ Confirm ──yes──▶ done
//!    │  └─sms/callback, caller ID─▶ OfferCallerId ──yes──────────────────▶ done
//!    │                               └─no──▶ Detail(number) ──parsed──▶ Confirm
//!    └─ too many misses anywhere ─▶ done: callback on the caller ID (or none)
//! ```

use std::fmt;

use serde::Serialize;
use switchboard_model::{PreferredChannel, Region, E164};

use crate::text;

/// Where the team should reach the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FollowUp {
    pub channel: PreferredChannel,
    pub contact: ContactPoint,
    /// Whether the caller confirmed it, as opposed to a fallback.
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactPoint {
    Email(String),
    Phone(E164),
}

impl fmt::Display for FollowUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let to = match &self.contact {
            ContactPoint::Email(e) => e.as_str(),
            ContactPoint::Phone(p) => p.as_str(),
        };
        match self.channel {
            PreferredChannel::Email => write!(f, "email to {to}"),
            PreferredChannel::Sms => write!(f, "SMS to {to}"),
            PreferredChannel::Callback => write!(f, "callback on {to}"),
        }
    }
}

/// The question the agent is waiting on, as the engine and the trace see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "step", content = "channel")]
pub enum FollowUpStep {
    AskChannel,
    AskDetail(PreferredChannel),
    OfferCallerId(PreferredChannel),
    Confirm(PreferredChannel),
}

/// The channel question that opens the follow-up dialogue.
pub const ASK_CHANNEL: &str = "How would you like us to follow up: email, SMS or a callback? You can also press 1 for email, 2 for SMS or 3 for a callback.";

/// One answer's effect on the dialogue.
#[derive(Debug)]
pub(crate) enum Step {
    Ask {
        step: FollowUpStep,
        say: String,
        why: String,
    },
    Done {
        follow_up: Option<FollowUp>,
        farewell: String,
        why: String,
    },
}

#[derive(Debug, Clone)]
enum Stage {
    Channel,
    Detail(PreferredChannel),
    OfferCallerId(PreferredChannel),
    Confirm(FollowUp),
}

#[derive(Debug, Clone)]
pub(crate) struct Dialogue {
    stage: Stage,
    misses: u32,
    max_misses: u32,
    caller_id: Option<E164>,
    region: Region,
}

impl Dialogue {
    /// Starts at the channel question ([`ASK_CHANNEL`]). After `max_misses`
    /// unusable answers it falls back to a callback on the caller ID.
    pub(crate) fn new(caller_id: Option<E164>, region: Region, max_misses: u32) -> Self {
        Self {
            stage: Stage::Channel,
            misses: 0,
            max_misses,
            caller_id,
            region,
        }
    }

    pub(crate) fn handle(&mut self, utterance: &str, dtmf: Option<&str>) -> Step {
        match self.stage.clone() {
            Stage::Channel => match parse_channel(utterance, dtmf) {
                Some(channel) => self.ask_detail(channel, format!("caller chose {channel}")),
                None => self.miss(
                    FollowUpStep::AskChannel,
                    format!("Sorry, I didn't catch that. {ASK_CHANNEL}"),
                    "no channel in the answer",
                ),
            },
            Stage::OfferCallerId(channel) => {
                if let Some(number) = self.parse_number(utterance, dtmf) {
                    return self.confirm(channel, ContactPoint::Phone(number));
                }
                match parse_yes_no(utterance, dtmf) {
                    Some(true) => match self.caller_id.clone() {
                        Some(number) => done(
                            FollowUp {
                                channel,
                                contact: ContactPoint::Phone(number),
                                confirmed: true,
                            },
                            "caller accepted the number they are calling from",
                        ),
                        None => self.ask_number(channel),
                    },
                    Some(false) => self.ask_number(channel),
                    None => self.miss(
                        FollowUpStep::OfferCallerId(channel),
                        "Sorry, shall we use the number you're calling from? Please say yes or no."
                            .into(),
                        "no yes or no in the answer",
                    ),
                }
            }
            Stage::Detail(channel) => {
                let contact = match channel {
                    PreferredChannel::Email => parse_email(utterance).map(ContactPoint::Email),
                    _ => self.parse_number(utterance, dtmf).map(ContactPoint::Phone),
                };
                match contact {
                    Some(contact) => self.confirm(channel, contact),
                    None => self.miss(
                        FollowUpStep::AskDetail(channel),
                        format!("Sorry, I didn't get that. {}", detail_question(channel)),
                        "could not parse the detail",
                    ),
                }
            }
            Stage::Confirm(follow_up) => match parse_yes_no(utterance, dtmf) {
                Some(true) => done(
                    FollowUp {
                        confirmed: true,
                        ..follow_up
                    },
                    "caller confirmed the read-back",
                ),
                Some(false) => {
                    self.misses += 1;
                    if self.misses > self.max_misses {
                        return self.fallback();
                    }
                    self.stage = Stage::Detail(follow_up.channel);
                    Step::Ask {
                        step: FollowUpStep::AskDetail(follow_up.channel),
                        say: format!("Let's try again. {}", detail_question(follow_up.channel)),
                        why: "caller rejected the read-back".into(),
                    }
                }
                None => self.miss(
                    FollowUpStep::Confirm(follow_up.channel),
                    format!(
                        "Sorry, {} Please say yes or no.",
                        read_back(&follow_up.contact)
                    ),
                    "no yes or no in the answer",
                ),
            },
        }
    }

    fn ask_detail(&mut self, channel: PreferredChannel, why: String) -> Step {
        if channel != PreferredChannel::Email && self.caller_id.is_some() {
            self.stage = Stage::OfferCallerId(channel);
            return Step::Ask {
                step: FollowUpStep::OfferCallerId(channel),
                say: "Shall we use the number you're calling from?".into(),
                why,
            };
        }
        self.stage = Stage::Detail(channel);
        Step::Ask {
            step: FollowUpStep::AskDetail(channel),
            say: detail_question(channel).into(),
            why,
        }
    }

    fn ask_number(&mut self, channel: PreferredChannel) -> Step {
        self.stage = Stage::Detail(channel);
        Step::Ask {
            step: FollowUpStep::AskDetail(channel),
            say: detail_question(channel).into(),
            why: "caller declined the number they are calling from".into(),
        }
    }

    fn confirm(&mut self, channel: PreferredChannel, contact: ContactPoint) -> Step {
        let say = read_back(&contact);
        self.stage = Stage::Confirm(FollowUp {
            channel,
            contact,
            confirmed: false,
        });
        Step::Ask {
            step: FollowUpStep::Confirm(channel),
            say,
            why: "captured a detail; reading it back".into(),
        }
    }

    fn miss(&mut self, step: FollowUpStep, say: String, why: &str) -> Step {
        self.misses += 1;
        if self.misses > self.max_misses {
            return self.fallback();
        }
        Step::Ask {
            step,
            say,
            why: format!("{why} (attempt {} of {})", self.misses, self.max_misses),
        }
    }

    fn fallback(&mut self) -> Step {
        let why = format!("{} unusable answers; falling back", self.misses);
        match self.caller_id.clone() {
            Some(number) => Step::Done {
                follow_up: Some(FollowUp {
                    channel: PreferredChannel::Callback,
                    contact: ContactPoint::Phone(number),
                    confirmed: false,
                }),
                farewell: "No problem. We'll call you back on the number you're calling from. Thanks for calling, goodbye.".into(),
                why: format!("{why} to a callback on the caller ID"),
            },
            None => Step::Done {
                follow_up: None,
                farewell: "No problem. Someone from our team will review your call. Thanks for calling, goodbye.".into(),
                why: format!("{why}; no caller ID to call back"),
            },
        }
    }

    fn parse_number(&self, utterance: &str, dtmf: Option<&str>) -> Option<E164> {
        parse_phone(utterance, dtmf, self.region)
    }
}

fn done(follow_up: FollowUp, why: &str) -> Step {
    let farewell = match follow_up.channel {
        PreferredChannel::Email => "Thank you. Someone from our team will email you soon. Goodbye.",
        PreferredChannel::Sms => "Thank you. Someone from our team will text you soon. Goodbye.",
        PreferredChannel::Callback => {
            "Thank you. Someone from our team will call you back soon. Goodbye."
        }
    };
    Step::Done {
        follow_up: Some(follow_up),
        farewell: farewell.into(),
        why: why.into(),
    }
}

fn detail_question(channel: PreferredChannel) -> &'static str {
    match channel {
        PreferredChannel::Email => "What email address should we use?",
        PreferredChannel::Sms | PreferredChannel::Callback => {
            "What number should we use? You can say it or key it in."
        }
    }
}

fn read_back(contact: &ContactPoint) -> String {
    match contact {
        ContactPoint::Email(e) => format!("I have {e} — is that right?"),
        ContactPoint::Phone(p) => {
            let spoken: Vec<String> = p.as_str().chars().map(String::from).collect();
            format!("I have {} — is that right?", spoken.join(" "))
        }
    }
}

/// The channel named in the answer; DTMF 1, 2, 3 pick email, SMS, callback.
pub(crate) fn parse_channel(utterance: &str, dtmf: Option<&str>) -> Option<PreferredChannel> {
    match dtmf.map(str::trim) {
        Some("1") => return Some(PreferredChannel::Email),
        Some("2") => return Some(PreferredChannel::Sms),
        Some("3") => return Some(PreferredChannel::Callback),
        _ => {}
    }
    let words = text::words(utterance);
    let has = |w: &[&str]| words.iter().any(|x| w.contains(&x.as_str()));
    if has(&["email", "e", "mail"]) {
        Some(PreferredChannel::Email)
    } else if has(&["sms", "text", "message", "texting"]) {
        Some(PreferredChannel::Sms)
    } else if has(&["callback", "call", "phone", "ring"]) {
        Some(PreferredChannel::Callback)
    } else {
        None
    }
}

/// Yes, no, or neither. Negatives are checked first so "that's not right"
/// is a no. DTMF 1 is yes, 2 is no.
pub(crate) fn parse_yes_no(utterance: &str, dtmf: Option<&str>) -> Option<bool> {
    match dtmf.map(str::trim) {
        Some("1") => return Some(true),
        Some("2") => return Some(false),
        _ => {}
    }
    let words = text::words(utterance);
    let has = |w: &[&str]| words.iter().any(|x| w.contains(&x.as_str()));
    if has(&[
        "no",
        "nope",
        "not",
        "wrong",
        "incorrect",
        "don't",
        "different",
        "another",
    ]) {
        Some(false)
    } else if has(&[
        "yes", "yeah", "yep", "yup", "correct", "right", "sure", "ok", "okay", "fine", "please",
        "perfect",
    ]) {
        Some(true)
    } else {
        None
    }
}

/// An email address, written ("ana@example.com") or spoken ("ana dot smith
/// at example dot com"). Lowercased.
pub(crate) fn parse_email(utterance: &str) -> Option<String> {
    for raw in utterance.split_whitespace() {
        let candidate = raw.trim_matches(|c: char| !(c.is_alphanumeric()));
        if candidate.contains('@') && valid_email(candidate) {
            return Some(candidate.to_lowercase());
        }
    }
    let words: Vec<String> = utterance
        .to_lowercase()
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !(c.is_alphanumeric())).to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let joiner = |w: &str| match w {
        "dot" | "period" | "point" => Some("."),
        "underscore" => Some("_"),
        "dash" | "hyphen" => Some("-"),
        _ => None,
    };
    // The last "at" followed by a dotted domain: "I'm at home, it's ana at x dot com".
    for at in (1..words.len()).rev().filter(|&i| words[i] == "at") {
        let mut local = vec![words[at - 1].clone()];
        let mut i = at - 1;
        while i >= 2 && joiner(&words[i - 1]).is_some() {
            local.insert(0, joiner(&words[i - 1]).unwrap_or_default().to_string());
            local.insert(0, words[i - 2].clone());
            i -= 2;
        }
        let mut domain = String::new();
        let mut j = at + 1;
        if let Some(first) = words.get(j) {
            domain.push_str(first);
            j += 1;
        }
        while let (Some(sep), Some(part)) = (words.get(j).and_then(|w| joiner(w)), words.get(j + 1))
        {
            domain.push_str(sep);
            domain.push_str(part);
            j += 2;
        }
        let address = format!("{}@{domain}", local.concat());
        if valid_email(&address) {
            return Some(address);
        }
    }
    None
}

fn valid_email(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._-+".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'));
    local_ok && domain_ok
}

/// A phone number from DTMF digits or the spoken or written digits of the
/// answer ("four one five, five five five, oh one two three").
pub(crate) fn parse_phone(utterance: &str, dtmf: Option<&str>, region: Region) -> Option<E164> {
    let mut digits = String::new();
    if let Some(keys) = dtmf {
        digits.extend(keys.chars().filter(char::is_ascii_digit));
    }
    if digits.is_empty() {
        let trimmed = utterance.trim_start();
        if trimmed.starts_with('+') || trimmed.to_lowercase().starts_with("plus ") {
            digits.push('+');
        }
        for word in text::words(utterance) {
            let spoken = match word.as_str() {
                "zero" | "oh" | "o" => Some('0'),
                "one" => Some('1'),
                "two" => Some('2'),
                "three" => Some('3'),
                "four" => Some('4'),
                "five" => Some('5'),
                "six" => Some('6'),
                "seven" => Some('7'),
                "eight" => Some('8'),
                "nine" => Some('9'),
                _ => None,
            };
            match spoken {
                Some(d) => digits.push(d),
                None => digits.extend(word.chars().filter(char::is_ascii_digit)),
            }
        }
    }
    if digits.chars().filter(char::is_ascii_digit).count() < 7 {
        return None;
    }
    E164::parse(&digits, region).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> E164 {
        E164::parse("+14155550123", Region::default()).expect("valid test number")
    }

    #[test]
    fn channel_from_words_and_keys() {
        assert_eq!(
            parse_channel("Email is best", None),
            Some(PreferredChannel::Email)
        );
        assert_eq!(
            parse_channel("just text me", None),
            Some(PreferredChannel::Sms)
        );
        assert_eq!(
            parse_channel("a call back please", None),
            Some(PreferredChannel::Callback)
        );
        assert_eq!(
            parse_channel("", Some("3")),
            Some(PreferredChannel::Callback)
        );
        assert_eq!(parse_channel("carrier pigeon", None), None);
    }

    #[test]
    fn yes_no_negatives_win() {
        assert_eq!(parse_yes_no("yes please", None), Some(true));
        assert_eq!(parse_yes_no("that's not right", None), Some(false));
        assert_eq!(parse_yes_no("", Some("1")), Some(true));
        assert_eq!(parse_yes_no("hmm", None), None);
    }

    #[test]
    fn email_written_and_spoken() {
        assert_eq!(
            parse_email("it's Ana@Example.com."),
            Some("ana@example.com".into())
        );
        assert_eq!(
            parse_email("ana at example dot com"),
            Some("ana@example.com".into())
        );
        assert_eq!(
            parse_email("my email is ana dot smith at mail dot example dot co dot uk"),
            Some("ana.smith@mail.example.co.uk".into())
        );
        assert_eq!(parse_email("I'm at home"), None);
    }

    #[test]
    fn phone_from_spoken_digits_and_dtmf() {
        let want = Some(caller());
        let r = Region::default();
        assert_eq!(
            parse_phone("four one five five five five oh one two three", None, r),
            want
        );
        assert_eq!(parse_phone("", Some("4155550123#"), r), want);
        assert_eq!(parse_phone("+1 415 555 0123", None, r), want);
        assert_eq!(parse_phone("five five five", None, r), None);
    }

    #[test]
    fn email_flow_reads_back_and_confirms() {
        let mut d = Dialogue::new(Some(caller()), Region::default(), 2);
        let Step::Ask { step, .. } = d.handle("email please", None) else {
            panic!("expected a question");
        };
        assert_eq!(step, FollowUpStep::AskDetail(PreferredChannel::Email));
        let Step::Ask { say, .. } = d.handle("ana at example dot com", None) else {
            panic!("expected a read-back");
        };
        assert_eq!(say, "I have ana@example.com — is that right?");
        let Step::Done { follow_up, .. } = d.handle("yes", None) else {
            panic!("expected the end");
        };
        assert_eq!(
            follow_up,
            Some(FollowUp {
                channel: PreferredChannel::Email,
                contact: ContactPoint::Email("ana@example.com".into()),
                confirmed: true,
            })
        );
    }

    #[test]
    fn rejected_read_back_asks_again_then_other_number_is_kept() {
        let mut d = Dialogue::new(Some(caller()), Region::default(), 2);
        d.handle("sms", None);
        let Step::Ask { step, .. } = d.handle("no, another number", None) else {
            panic!("expected a question");
        };
        assert_eq!(step, FollowUpStep::AskDetail(PreferredChannel::Sms));
        d.handle("four one five five five five oh one nine nine", None);
        let Step::Ask { step, .. } = d.handle("no", None) else {
            panic!("expected to ask again");
        };
        assert_eq!(step, FollowUpStep::AskDetail(PreferredChannel::Sms));
        d.handle("", Some("4155550188"));
        let Step::Done { follow_up, .. } = d.handle("yes", None) else {
            panic!("expected the end");
        };
        let follow_up = follow_up.expect("a follow-up");
        assert_eq!(follow_up.to_string(), "SMS to +14155550188");
    }

    #[test]
    fn bounded_retries_fall_back_to_callback_on_caller_id() {
        let mut d = Dialogue::new(Some(caller()), Region::default(), 2);
        assert!(matches!(d.handle("what?", None), Step::Ask { .. }));
        assert!(matches!(d.handle("hmm", None), Step::Ask { .. }));
        let Step::Done { follow_up, why, .. } = d.handle("no idea", None) else {
            panic!("expected the fallback");
        };
        let follow_up = follow_up.expect("the caller ID");
        assert_eq!(follow_up.to_string(), "callback on +14155550123");
        assert!(!follow_up.confirmed);
        assert!(why.contains("falling back"), "{why}");
    }

    #[test]
    fn fallback_without_caller_id_captures_nothing() {
        let mut d = Dialogue::new(None, Region::default(), 0);
        let Step::Done { follow_up, .. } = d.handle("hmm", None) else {
            panic!("expected the fallback");
        };
        assert_eq!(follow_up, None);
    }
}
