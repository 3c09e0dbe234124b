//! What the caller wants besides an answer: a person, out of frustration,
//! or to hang up. Phrase rules over whole words, so "agent" never matches
//! "agentic".

use crate::text;

/// Phrases that ask for a person whatever the agent's configuration says.
pub const BUILTIN_HANDOFF_PHRASES: &[&str] = &[
    "speak to someone",
    "speak with someone",
    "talk to someone",
    "talk with someone",
    "real person",
    "live person",
    "a person",
    "human",
];

/// Phrases that say the conversation is not working.
pub const FRUSTRATION_PHRASES: &[&str] = &[
    "useless",
    "ridiculous",
    "not helping",
    "not helpful",
    "no help",
    "waste of time",
    "pointless",
    "stupid",
    "frustrating",
    "annoying",
    "you don't understand",
    "you're not listening",
];

const GOODBYE_PHRASES: &[&str] = &[
    "bye",
    "goodbye",
    "that's all",
    "that is all",
    "that's everything",
];

/// Words that, shortly before a handoff phrase, turn it around: "I don't
/// want to talk to a human". "No" is left out on purpose: "No, a person
/// please" is a request.
const NEGATIONS: &[&str] = &[
    "not", "don't", "dont", "never", "doesn't", "without", "no need",
];

/// How many words before a phrase the negation guard looks at.
pub const NEGATION_WINDOW: usize = 3;

/// Detects a request for a person.
#[derive(Debug, Clone)]
pub struct HandoffPhrases {
    phrases: Vec<(String, Vec<String>)>,
}

impl HandoffPhrases {
    /// The configured phrases plus [`BUILTIN_HANDOFF_PHRASES`].
    pub fn new<S: AsRef<str>>(configured: &[S]) -> Self {
        let mut phrases: Vec<(String, Vec<String>)> = Vec::new();
        let all = configured
            .iter()
            .map(AsRef::as_ref)
            .chain(BUILTIN_HANDOFF_PHRASES.iter().copied());
        for p in all {
            let words = text::words(p);
            if !words.is_empty() && !phrases.iter().any(|(_, w)| *w == words) {
                phrases.push((words.join(" "), words));
            }
        }
        // Longest first, so the trace names "speak with a person", not "a person".
        phrases.sort_by_key(|p| std::cmp::Reverse(p.1.len()));
        Self { phrases }
    }

    /// The first phrase the utterance asks with, not negated.
    pub fn detect(&self, utterance: &str) -> Option<&str> {
        let words = text::words(utterance);
        // Spans of negated requests: "human" inside a negated "talk to a
        // human" is negated too, though its own window holds no negation.
        let mut negated_spans = Vec::new();
        for (_, phrase) in &self.phrases {
            for at in text::find_phrase(&words, phrase) {
                if negated(&words, at) {
                    negated_spans.push(at..at + phrase.len());
                }
            }
        }
        let inside_negated = |at: usize, len: usize| {
            negated_spans
                .iter()
                .any(|s| s.start <= at && at + len <= s.end)
        };
        self.phrases
            .iter()
            .find(|(_, phrase)| {
                text::find_phrase(&words, phrase)
                    .into_iter()
                    .any(|at| !negated(&words, at) && !inside_negated(at, phrase.len()))
            })
            .map(|(p, _)| p.as_str())
    }
}

/// The frustration phrase in `utterance`, if any.
pub fn frustration(utterance: &str) -> Option<&'static str> {
    first_phrase(utterance, FRUSTRATION_PHRASES)
}

/// Whether the caller is saying goodbye.
pub fn goodbye(utterance: &str) -> bool {
    first_phrase(utterance, GOODBYE_PHRASES).is_some()
}

fn first_phrase(utterance: &str, phrases: &[&'static str]) -> Option<&'static str> {
    let words = text::words(utterance);
    phrases
        .iter()
        .find(|p| !text::find_phrase(&words, &text::words(p)).is_empty())
        .copied()
}

fn negated(words: &[String], at: usize) -> bool {
    let window = &words[at.saturating_sub(NEGATION_WINDOW)..at];
    NEGATIONS
        .iter()
        .any(|n| !text::find_phrase(window, &text::words(n)).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_model::DEFAULT_HANDOFF_PHRASES;

    fn defaults() -> HandoffPhrases {
        HandoffPhrases::new(DEFAULT_HANDOFF_PHRASES)
    }

    #[test]
    fn configured_phrase_matches_on_word_boundaries() {
        let h = defaults();
        assert_eq!(
            h.detect("A representative, please."),
            Some("representative")
        );
        assert_eq!(h.detect("Can I get an AGENT"), Some("agent"));
        assert_eq!(h.detect("Do you support agentic workflows?"), None);
        assert_eq!(h.detect("I manage the managerial accounts"), None);
    }

    #[test]
    fn builtin_patterns_apply_without_configuration() {
        let h = HandoffPhrases::new::<&str>(&[]);
        assert_eq!(
            h.detect("Can I speak to someone?"),
            Some("speak to someone")
        );
        assert_eq!(h.detect("I want a real person"), Some("real person"));
        assert_eq!(h.detect("human!"), Some("human"));
        assert_eq!(h.detect("What are your opening hours?"), None);
    }

    #[test]
    fn longest_phrase_is_reported() {
        assert_eq!(
            defaults().detect("I need to speak with a person"),
            Some("speak with a person")
        );
    }

    #[test]
    fn negation_before_the_phrase_is_not_a_request() {
        let h = defaults();
        assert_eq!(h.detect("I don't want to talk to a human"), None);
        assert_eq!(h.detect("I do not need an agent, just the hours"), None);
        assert_eq!(
            h.detect("No, I want to talk to a human"),
            Some("talk to a human")
        );
        // A negation far away does not cancel a later request.
        assert_eq!(
            h.detect("that's not what I asked so put me through to an operator"),
            Some("operator")
        );
    }

    #[test]
    fn frustration_and_goodbye() {
        assert_eq!(frustration("This is useless"), Some("useless"));
        assert_eq!(
            frustration("this is not helping at all"),
            Some("not helping")
        );
        assert_eq!(frustration("How useful is the app?"), None);
        assert!(goodbye("OK that's all, bye"));
        assert!(!goodbye("Do you sell bicycles?"));
    }
}
