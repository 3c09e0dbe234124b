//! The agent's knowledge: entries parsed from its `instructions`, ranked
//! with BM25.
//!
//! Instructions are split into blocks at blank lines. A block of `Q:` / `A:`
//! lines yields one entry per question (the answer is what the caller hears);
//! any other block is a short document whose first line (or, for a single
//! line, first sentence) is its title and whose whole text is the answer.
//! Blocks that speak to the agent itself ("You are a friendly receptionist…")
//! are persona, not knowledge, and are skipped.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::text;

/// BM25 term-frequency saturation.
pub const K1: f64 = 1.2;
/// BM25 length normalisation.
pub const B: f64 = 0.75;

/// One thing the agent knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Position among the parsed entries, from 1; stable for the same text.
    pub id: usize,
    pub kind: EntryKind,
    pub title: String,
    /// What the agent says when this entry answers the caller.
    pub answer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A `Q:` / `A:` pair; the title is the question.
    Faq,
    /// A paragraph of the instructions.
    Paragraph,
}

/// When a ranked entry counts as an answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Least BM25 score.
    pub min_score: f64,
    /// Least share of the question's distinct terms found in the entry, so
    /// one shared word in a long question is not an answer.
    pub min_coverage: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_score: 0.3,
            min_coverage: 0.5,
        }
    }
}

/// An entry scored against a question, as the trace shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub id: usize,
    pub kind: EntryKind,
    pub title: String,
    pub score: f64,
    pub coverage: f64,
}

/// The outcome of a search: the best entry if it clears the thresholds, and
/// the top candidates either way.
#[derive(Debug, Clone, PartialEq)]
pub struct Search<'k> {
    pub best: Option<&'k Entry>,
    pub candidates: Vec<Scored>,
}

/// Entries with their BM25 index.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    entries: Vec<Entry>,
    docs: Vec<Doc>,
    /// Number of documents containing each term.
    df: HashMap<String, usize>,
    avg_len: f64,
}

#[derive(Debug, Clone)]
struct Doc {
    tf: HashMap<String, usize>,
    len: usize,
}

impl Knowledge {
    /// Parses `instructions` into entries and indexes them.
    pub fn parse(instructions: &str) -> Self {
        let mut entries = Vec::new();
        let mut indexed = Vec::new();
        for block in blocks(instructions) {
            if is_faq(&block) {
                for (q, a) in faq_pairs(&block) {
                    // The question counts twice: callers ask in its words.
                    indexed.push(format!("{q} {q} {a}"));
                    entries.push((EntryKind::Faq, q, a));
                }
            } else if !is_persona(&block) {
                let body = block.join(" ");
                indexed.push(body.clone());
                entries.push((EntryKind::Paragraph, title_of(&block), body));
            }
        }
        let entries: Vec<Entry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, (kind, title, answer))| Entry {
                id: i + 1,
                kind,
                title,
                answer,
            })
            .collect();
        let docs: Vec<Doc> = indexed
            .iter()
            .map(|t| {
                let terms = text::terms(t);
                let mut tf = HashMap::new();
                for term in &terms {
                    *tf.entry(term.clone()).or_insert(0) += 1;
                }
                Doc {
                    tf,
                    len: terms.len(),
                }
            })
            .collect();
        let mut df = HashMap::new();
        for doc in &docs {
            for term in doc.tf.keys() {
                *df.entry(term.clone()).or_insert(0) += 1;
            }
        }
        let avg_len = if docs.is_empty() {
            0.0
        } else {
            docs.iter().map(|d| d.len).sum::<usize>() as f64 / docs.len() as f64
        };
        Self {
            entries,
            docs,
            df,
            avg_len,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Ranks the entries for `question`; keeps the top three candidates.
    pub fn search(&self, question: &str, thresholds: Thresholds) -> Search<'_> {
        let query: BTreeSet<String> = text::term_set(question);
        let mut candidates: Vec<(usize, Scored)> = self
            .docs
            .iter()
            .enumerate()
            .filter_map(|(i, doc)| {
                let (score, coverage) = self.score(doc, &query);
                (score > 0.0).then(|| {
                    let e = &self.entries[i];
                    let scored = Scored {
                        id: e.id,
                        kind: e.kind,
                        title: e.title.clone(),
                        score: round3(score),
                        coverage: round3(coverage),
                    };
                    (i, scored)
                })
            })
            .collect();
        candidates.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
        candidates.truncate(3);
        let best = candidates
            .first()
            .filter(|(_, s)| {
                s.score >= thresholds.min_score && s.coverage >= thresholds.min_coverage
            })
            .map(|(i, _)| &self.entries[*i]);
        Search {
            best,
            candidates: candidates.into_iter().map(|(_, s)| s).collect(),
        }
    }

    /// BM25 with the non-negative IDF `ln(1 + (N - n + ½) / (n + ½))`, and
    /// the share of query terms the document holds.
    fn score(&self, doc: &Doc, query: &BTreeSet<String>) -> (f64, f64) {
        let n_docs = self.docs.len() as f64;
        let mut score = 0.0;
        let mut matched = 0;
        for term in query {
            let Some(&tf) = doc.tf.get(term) else {
                continue;
            };
            matched += 1;
            let n = self.df.get(term).copied().unwrap_or(0) as f64;
            let idf = (1.0 + (n_docs - n + 0.5) / (n + 0.5)).ln();
            let tf = tf as f64;
            let norm = 1.0 - B + B * doc.len as f64 / self.avg_len.max(1.0);
            score += idf * tf * (K1 + 1.0) / (tf + K1 * norm);
        }
        let coverage = if query.is_empty() {
            0.0
        } else {
            matched as f64 / query.len() as f64
        };
        (score, coverage)
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Non-empty trimmed lines, grouped at blank lines.
fn blocks(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line.to_string());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Tag {
    Q,
    A,
}

fn tag(line: &str) -> Option<(Tag, &str)> {
    let (head, rest) = line.split_once(':')?;
    match head.trim().to_ascii_lowercase().as_str() {
        "q" | "question" => Some((Tag::Q, rest.trim())),
        "a" | "answer" => Some((Tag::A, rest.trim())),
        _ => None,
    }
}

fn is_faq(block: &[String]) -> bool {
    block
        .first()
        .and_then(|l| tag(l))
        .is_some_and(|(t, _)| t == Tag::Q)
}

/// `Q:` then `A:`, with untagged lines continuing the one before. A question
/// without an answer is dropped: there is nothing to say.
fn faq_pairs(block: &[String]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut q = String::new();
    let mut a = String::new();
    let mut last = Tag::Q;
    for line in block {
        match tag(line) {
            Some((Tag::Q, rest)) => {
                if !q.is_empty() && !a.is_empty() {
                    pairs.push((std::mem::take(&mut q), std::mem::take(&mut a)));
                }
                q = rest.to_string();
                a.clear();
                last = Tag::Q;
            }
            Some((Tag::A, rest)) => {
                a = rest.to_string();
                last = Tag::A;
            }
            None => {
                let target = if last == Tag::Q { &mut q } else { &mut a };
                if !target.is_empty() {
                    target.push(' ');
                }
                target.push_str(line);
            }
        }
    }
    if !q.is_empty() && !a.is_empty() {
        pairs.push((q, a));
    }
    pairs
}

fn is_persona(block: &[String]) -> bool {
    let first = block.first().map(|l| l.to_lowercase()).unwrap_or_default();
    [
        "you are ",
        "you're ",
        "your name is ",
        "always ",
        "never ",
        "be ",
    ]
    .iter()
    .any(|p| first.starts_with(p))
}

fn title_of(block: &[String]) -> String {
    let first = block.first().map(String::as_str).unwrap_or_default();
    if block.len() > 1 {
        return first.trim_end_matches(':').to_string();
    }
    let end = first.find(['.', '?', '!']).map_or(first.len(), |i| i + 1);
    first[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTRUCTIONS: &str = "\
You are the friendly receptionist of Acme Dental. Keep answers short.

Opening hours: Monday to Friday 9 to 5. We are closed on weekends and public holidays.

Q: Where are you located?
A: We are at 12 Harbour Street, next to the library.
Q: Do you take new patients?
A: Yes, we welcome new patients.
Call ahead to book your first visit.

Parking
Free parking is available behind the building.
";

    #[test]
    fn parses_paragraphs_and_question_answer_pairs() {
        let k = Knowledge::parse(INSTRUCTIONS);
        let summary: Vec<(usize, EntryKind, &str)> = k
            .entries()
            .iter()
            .map(|e| (e.id, e.kind, e.title.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    1,
                    EntryKind::Paragraph,
                    "Opening hours: Monday to Friday 9 to 5."
                ),
                (2, EntryKind::Faq, "Where are you located?"),
                (3, EntryKind::Faq, "Do you take new patients?"),
                (4, EntryKind::Paragraph, "Parking"),
            ]
        );
        assert_eq!(
            k.entries()[2].answer,
            "Yes, we welcome new patients. Call ahead to book your first visit."
        );
    }

    #[test]
    fn a_slightly_misheard_question_still_finds_its_entry_in_a_real_sized_base() {
        // Whisper on 8 kHz audio sometimes hears "opening nowers".
        let k = Knowledge::parse(
            "You are the receptionist of Acme Dental.\n\n\
             Opening hours: Monday to Friday, 9 am to 5 pm. Closed on weekends.\n\n\
             Where are you? We are at 100 Main Street, Springfield, next to the library.\n\n\
             Do you take new patients? Yes, new patients are welcome; the first visit takes about an hour.\n\n\
             How much is a cleaning? A routine cleaning costs 90 dollars; most insurance plans cover it.",
        );
        let found = k.search("What are your opening nowers?", Thresholds::default());
        let best = found.best.expect("the hours entry still answers");
        assert!(best.answer.starts_with("Opening hours"), "{}", best.answer);
    }

    #[test]
    fn opening_hours_question_finds_the_hours_paragraph() {
        let k = Knowledge::parse(INSTRUCTIONS);
        let found = k.search("What are your opening hours?", Thresholds::default());
        let best = found.best.expect("the hours entry answers");
        assert_eq!(best.id, 1);
        assert!(best
            .answer
            .starts_with("Opening hours: Monday to Friday 9 to 5"));
        assert_eq!(found.candidates[0].id, 1);
        assert!(found.candidates[0].score >= Thresholds::default().min_score);
        assert!((found.candidates[0].coverage - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn faq_question_finds_its_answer() {
        let k = Knowledge::parse(INSTRUCTIONS);
        let found = k.search("where is your office located", Thresholds::default());
        assert_eq!(found.best.map(|e| e.id), Some(2));
    }

    #[test]
    fn unrelated_question_matches_nothing() {
        let k = Knowledge::parse(INSTRUCTIONS);
        let found = k.search("Do you sell pizza?", Thresholds::default());
        assert!(found.best.is_none());
        assert!(found.candidates.is_empty());
    }

    #[test]
    fn one_shared_word_in_a_long_question_is_not_an_answer() {
        let k = Knowledge::parse(INSTRUCTIONS);
        let found = k.search(
            "Is there parking for my boat trailer and camper van overnight?",
            Thresholds::default(),
        );
        assert_eq!(found.candidates.first().map(|c| c.id), Some(4));
        assert!(found.best.is_none(), "coverage is below the threshold");
    }

    #[test]
    fn empty_instructions_know_nothing() {
        let k = Knowledge::parse("");
        assert!(k.entries().is_empty());
        assert!(k
            .search("opening hours", Thresholds::default())
            .best
            .is_none());
    }
}
