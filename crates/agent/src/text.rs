//! Text normalisation shared by the knowledge index and the intent rules.
//!
//! Two views of an utterance: [`words`] keeps every word (lowercased, with
//! apostrophes) for phrase matching, where "a" and "to" matter; [`terms`]
//! drops stop words and lightly stems for ranking and similarity.

use std::collections::BTreeSet;

/// Lowercased words: runs of letters, digits and apostrophes. Curly
/// apostrophes (as speech-to-text often emits) become straight ones.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace('\u{2019}', "'")
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Content terms: [`words`] without stop words, stemmed.
pub(crate) fn terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !is_stop_word(w))
        .map(|w| stem(&w))
        .filter(|w| !w.is_empty() && !is_stop_word(w))
        .collect()
}

/// The distinct content terms of `text`.
pub(crate) fn term_set(text: &str) -> BTreeSet<String> {
    terms(text).into_iter().collect()
}

/// |A ∩ B| / |A ∪ B|; 0 when both are empty, so two empty utterances
/// ("hi", "hello") never count as the same question.
pub(crate) fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// Whether `phrase` occurs in `haystack` as a run of whole words. Returns
/// the index of the first word of each occurrence.
pub(crate) fn find_phrase(haystack: &[String], phrase: &[String]) -> Vec<usize> {
    if phrase.is_empty() || phrase.len() > haystack.len() {
        return Vec::new();
    }
    (0..=haystack.len() - phrase.len())
        .filter(|&i| haystack[i..i + phrase.len()] == *phrase)
        .collect()
}

/// A deliberately light stemmer: it only folds the endings that separate a
/// caller's wording from the knowledge text most often ("hours"/"hour",
/// "opening"/"open", "delivered"/"deliver"), and keeps short words intact so
/// "need", "bus" or "sing" are not mangled.
pub(crate) fn stem(word: &str) -> String {
    let w = word.strip_suffix("'s").unwrap_or(word);
    let n = w.chars().count();
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if n > 5 && w.ends_with("ing") {
        return w[..w.len() - 3].to_string();
    }
    if n > 4 && w.ends_with("ed") && !w.ends_with("eed") {
        return w[..w.len() - 2].to_string();
    }
    if n > 3 && w.ends_with('s') && !(w.ends_with("ss") || w.ends_with("us") || w.ends_with("is")) {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// Function words and conversational filler that carry no topic. Sorted, for
/// `binary_search`.
const STOP_WORDS: &[&str] = &[
    "a", "about", "all", "am", "an", "and", "any", "anything", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "get", "got", "had", "has",
    "have", "hello", "hey", "hi", "how", "i", "i'd", "i'm", "if", "in", "is", "it", "it's", "just",
    "know", "let", "like", "me", "much", "my", "need", "of", "oh", "ok", "okay", "on", "or", "our",
    "please", "so", "some", "tell", "than", "thank", "thanks", "that", "that's", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "to", "uh", "um", "us", "very",
    "want", "was", "we", "well", "were", "what", "what's", "when", "where", "which", "who", "why",
    "will", "with", "would", "yeah", "yes", "you", "you're", "your", "yours",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn terms_drop_filler_and_fold_endings() {
        assert_eq!(terms("What are your opening hours?"), ["open", "hour"]);
        assert_eq!(terms("Opening hours: Monday"), ["open", "hour", "monday"]);
        assert_eq!(stem("address"), "address");
        assert_eq!(stem("need"), "need");
        assert_eq!(stem("deliveries"), "delivery");
        assert_eq!(stem("shipped"), "shipp");
    }

    #[test]
    fn words_keep_apostrophes_and_split_punctuation() {
        assert_eq!(
            words("I don’t—want, a HUMAN!"),
            ["i", "don't", "want", "a", "human"]
        );
    }

    #[test]
    fn phrases_match_whole_words_only() {
        let hay = words("is this agentic or a real agent");
        assert_eq!(find_phrase(&hay, &words("agent")), [6]);
        assert!(find_phrase(&words("agentic"), &words("agent")).is_empty());
    }

    #[test]
    fn jaccard_of_reworded_question() {
        let a = term_set("What are your opening hours?");
        let b = term_set("what are the opening hours");
        assert!((jaccard(&a, &b) - 1.0).abs() < f64::EPSILON);
        assert_eq!(jaccard(&term_set("hi"), &term_set("hello")), 0.0);
    }
}
