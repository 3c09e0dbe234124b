//! What the words of a caller turn say about turn-taking, as pure functions:
//! whether the caller stopped in the middle of something (a phone number,
//! an email address spelled out, "my number is…"), whether a streaming
//! partial already ends a sentence, and whether the words look like another
//! language than the agent's (English).
//!
//! They only read text, so they work the same on an offline STT's final
//! transcript (Whisper gives no partials) and on a cloud STT's partials.

/// Whether `text` seems to stop mid-thought: it ends with a number (digits
/// or a number word), a spelled letter, an `@`, or a word that cannot end a
/// sentence ("at", "dot", "and", "is", "my", …), or with a comma or an
/// ellipsis. The call machine then waits longer before it commits the turn.
pub fn looks_unfinished(text: &str) -> bool {
    let text = text.trim();
    if text.ends_with(',') || text.ends_with("...") || text.ends_with('…') || text.ends_with('@')
    {
        return true;
    }
    let Some(last) = text.split_whitespace().next_back() else {
        return false;
    };
    let word = last
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '@')
        .to_lowercase();
    if word.is_empty() {
        return false;
    }
    if word.ends_with('@') {
        return true;
    }
    // "415", "555-0100", "4-1-5".
    if word.chars().any(|c| c.is_ascii_digit())
        && word.chars().all(|c| c.is_ascii_digit() || c == '-')
    {
        return true;
    }
    // A spelled letter ("j", "J.") or spelled run ("J-O-H-N").
    if word.split('-').all(|part| part.chars().count() == 1)
        && word.chars().any(char::is_alphabetic)
    {
        return true;
    }
    NUMBER_WORDS.contains(&word.as_str()) || OPEN_ENDED.contains(&word.as_str())
}

/// Whether a streaming partial reads as a whole sentence: it ends with
/// sentence punctuation and does not [look unfinished](looks_unfinished).
/// Cloud recognisers only punctuate once they consider the sentence done.
pub fn ends_sentence(text: &str) -> bool {
    let text = text.trim_end();
    text.ends_with(['.', '?', '!']) && !text.ends_with("...") && !looks_unfinished(text)
}

/// Whether `text` looks like another language than English: mostly
/// non-Latin letters (Cyrillic, CJK, Arabic…), or more common function words
/// of Spanish, French, German, Italian or Portuguese than of English.
pub fn looks_foreign(text: &str) -> bool {
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    // Latin script ends at U+024F (Latin Extended-B).
    let non_latin = text
        .chars()
        .filter(|c| c.is_alphabetic() && u32::from(*c) > 0x024F)
        .count();
    if letters >= 4 && non_latin * 2 > letters {
        return true;
    }
    let (mut english, mut foreign) = (0, 0);
    for word in text.split_whitespace() {
        let word = word
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
            .to_lowercase();
        if ENGLISH.contains(&word.as_str()) {
            english += 1;
        } else if FOREIGN.contains(&word.as_str()) {
            foreign += 1;
        }
    }
    foreign >= 2 && foreign > english
}

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "oh",
    "o",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "double",
    "triple",
];

/// Words a sentence does not end with: the caller is mid-phrase.
const OPEN_ENDED: &[&str] = &[
    "at",
    "dot",
    "dash",
    "hyphen",
    "underscore",
    "plus",
    "and",
    "or",
    "is",
    "it's",
    "that's",
    "are",
    "was",
    "the",
    "an",
    "my",
    "your",
    "to",
    "of",
    "for",
    "with",
    "from",
    "um",
    "uh",
    "erm",
];

const ENGLISH: &[&str] = &[
    "the", "a", "is", "are", "i", "you", "my", "to", "and", "of", "it", "what", "do", "can", "for",
    "in", "on", "with", "have", "need", "please", "yes", "hello", "how", "when", "where", "want",
    "would", "like", "this", "that", "i'm", "it's", "me", "your", "speak",
];

const FOREIGN: &[&str] = &[
    // Spanish
    "el",
    "los",
    "las",
    "que",
    "por",
    "para",
    "una",
    "está",
    "estoy",
    "necesito",
    "quiero",
    "hola",
    "gracias",
    "dónde",
    "donde",
    "cuándo",
    "qué",
    "cómo",
    "sí",
    "usted",
    "tengo",
    "puedo",
    "hablar",
    "habla",
    "español",
    "buenos",
    "días",
    "cita",
    "mi",
    "es",
    "del",
    "muy",
    // French
    "le",
    "les",
    "je",
    "vous",
    "est",
    "bonjour",
    "merci",
    "oui",
    "avec",
    "pour",
    "une",
    "des",
    "suis",
    "voudrais",
    "c'est",
    "parler",
    "français",
    "rendez-vous",
    "du",
    "et",
    "mon",
    // German
    "der",
    "das",
    "ich",
    "nicht",
    "und",
    "ist",
    "bitte",
    "danke",
    "ja",
    "mit",
    "sie",
    "wir",
    "haben",
    "möchte",
    "guten",
    "tag",
    "sprechen",
    "deutsch",
    "einen",
    "termin",
    // Italian
    "il",
    "gli",
    "che",
    "sono",
    "buongiorno",
    "grazie",
    "vorrei",
    "parlare",
    "italiano",
    // Portuguese
    "você",
    "obrigado",
    "obrigada",
    "não",
    "eu",
    "uma",
    "preciso",
    "falar",
    "português",
    "olá",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_open_words_are_unfinished() {
        for text in [
            "my number is 415 555",
            "my number is 415-555.",
            "it's four one five,",
            "Double Seven",
            "my number is",
            "My email is",
            "john at",
            "john at example dot",
            "j o h n",
            "J-O-H-N.",
            "it's john@",
            "I'd like to book a cleaning and",
            "I was wondering...",
            "Um,",
        ] {
            assert!(looks_unfinished(text), "{text:?} should look unfinished");
        }
    }

    #[test]
    fn whole_sentences_are_finished() {
        for text in [
            "I'd like an appointment",
            "When do you open?",
            "What are your opening hours?",
            "my email is john at example dot com",
            "john@example.com",
            "my number is 415 555 0100 thanks",
            "",
            "   ",
            "?",
        ] {
            assert!(!looks_unfinished(text), "{text:?} should look finished");
        }
    }

    #[test]
    fn a_punctuated_partial_ends_a_sentence_unless_it_is_a_number() {
        assert!(ends_sentence("When do you open?"));
        assert!(ends_sentence("Thanks, bye."));
        assert!(!ends_sentence("When do you open"));
        assert!(!ends_sentence("My number is 415."));
        assert!(!ends_sentence("Well..."));
    }

    #[test]
    fn other_languages_are_noticed() {
        for text in [
            "Hola, necesito una cita para mañana",
            "¿Dónde está la clínica?",
            "Bonjour, je voudrais un rendez-vous",
            "Guten Tag, ich möchte einen Termin",
            "Здравствуйте, мне нужна помощь",
            "我想预约",
        ] {
            assert!(looks_foreign(text), "{text:?} should look foreign");
        }
        for text in [
            "What are your opening hours?",
            "I need to speak with a person",
            "Do you take new patients at the clinic in La Jolla?",
            "Café Olé is my favourite",
            "yes",
            "",
        ] {
            assert!(!looks_foreign(text), "{text:?} should look English");
        }
    }
}
