//! The Chat Completions wire protocol, sans-IO: request bodies from the
//! conversation and the tools, server-sent-event lines from raw bytes,
//! streamed deltas assembled into one response, and spoken sentences cut
//! from the streamed text. Nothing here touches the network or a clock, so
//! every quirk of a provider's stream is a unit test.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    System(String),
    User(String),
    Assistant {
        content: String,
        tool_calls: Vec<RawToolCall>,
    },
    /// The answer to one tool call.
    Tool {
        call_id: String,
        content: String,
    },
}

impl ChatMessage {
    pub fn to_json(&self) -> Value {
        match self {
            ChatMessage::System(text) => json!({ "role": "system", "content": text }),
            ChatMessage::User(text) => json!({ "role": "user", "content": text }),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } if tool_calls.is_empty() => json!({ "role": "assistant", "content": content }),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let calls: Vec<Value> = tool_calls.iter().map(RawToolCall::to_json).collect();
                let content = if content.is_empty() {
                    Value::Null
                } else {
                    Value::String(content.clone())
                };
                json!({ "role": "assistant", "content": content, "tool_calls": calls })
            }
            ChatMessage::Tool { call_id, content } => {
                json!({ "role": "tool", "tool_call_id": call_id, "content": content })
            }
        }
    }
}

/// A tool call as the model sent it: the name and the arguments are not
/// checked yet (see [`super::tools::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as streamed.
    pub arguments: String,
}

impl RawToolCall {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": { "name": self.name, "arguments": self.arguments },
        })
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// A `POST {base}/chat/completions` body.
#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub temperature: f32,
    pub max_tokens: Option<u32>,
    pub messages: &'a [ChatMessage],
    pub tools: &'a [ToolSpec],
    /// Whether the model may call tools this round (`tool_choice: none`
    /// otherwise, which forces a spoken answer).
    pub allow_tools: bool,
    pub stream: bool,
}

impl ChatRequest<'_> {
    pub fn body(&self) -> Value {
        let mut body = json!({
            "model": self.model,
            "temperature": self.temperature,
            "messages": self.messages.iter().map(ChatMessage::to_json).collect::<Vec<_>>(),
            "stream": self.stream,
        });
        if self.stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        if let Some(max) = self.max_tokens {
            body["max_tokens"] = json!(max);
        }
        if !self.tools.is_empty() {
            body["tools"] = self
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        },
                    })
                })
                .collect();
            body["tool_choice"] = json!(if self.allow_tools { "auto" } else { "none" });
        }
        body
    }
}

/// Token counts, when the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    fn parse(value: &Value) -> Option<Usage> {
        let n = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        value.is_object().then(|| Usage {
            prompt_tokens: n("prompt_tokens"),
            completion_tokens: n("completion_tokens"),
            total_tokens: n("total_tokens"),
        })
    }

    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// The longest line kept while waiting for its end: a stream that never
/// sends a newline must not grow memory without bound.
const MAX_LINE: usize = 1 << 20;

/// Splits a server-sent-event body into `data:` payloads, whatever the
/// chunking of the bytes (a line or a UTF-8 character may straddle two
/// chunks). Comments, `event:`/`id:` fields and garbage lines are skipped.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
}

impl SseDecoder {
    /// The payloads of the lines completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            if let Some(data) = data_of(&line[..line.len() - 1]) {
                out.push(data);
            }
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
        }
        out
    }

    /// The payload of a last line without a newline, if any.
    pub fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.buf);
        data_of(&line)
    }
}

fn data_of(line: &[u8]) -> Option<String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let data = line.strip_prefix(b"data:")?;
    let data = data.strip_prefix(b" ").unwrap_or(data);
    Some(String::from_utf8_lossy(data).into_owned())
}

/// Builds one response from the streamed chunks of a Chat Completion:
/// content deltas appended, tool-call deltas assembled by their `index`,
/// the finish reason and the usage kept. Lines that are not JSON are
/// counted and skipped; a missing `[DONE]` is fine.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    content: String,
    calls: BTreeMap<u64, RawToolCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    error: Option<String>,
    done: bool,
    ignored: u32,
}

/// A whole model answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub content: String,
    pub tool_calls: Vec<RawToolCall>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// Lines that were not understood and skipped.
    pub ignored_lines: u32,
}

/// Why a stream could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamProblem {
    /// The provider sent an error object in the stream.
    Error(String),
    /// No content, no tool call: nothing to act on.
    Empty { ignored_lines: u32 },
}

impl StreamAssembler {
    /// Feed one `data:` payload; returns the content text it adds.
    pub fn push(&mut self, data: &str) -> Option<String> {
        let data = data.trim();
        if data.is_empty() {
            return None;
        }
        if data == "[DONE]" {
            self.done = true;
            return None;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            self.ignored += 1;
            return None;
        };
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_string);
            self.error = Some(message);
            return None;
        }
        if let Some(usage) = chunk.get("usage").and_then(Usage::parse) {
            self.usage = Some(usage);
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| {
                choices
                    .iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            })?;
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        let delta = choice.get("delta").or_else(|| choice.get("message"))?;
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                self.push_call(position, call);
            }
        }
        let text = delta.get("content").and_then(Value::as_str)?;
        if text.is_empty() {
            return None;
        }
        self.content.push_str(text);
        Some(text.to_string())
    }

    fn push_call(&mut self, position: usize, call: &Value) {
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        let entry = self.calls.entry(index).or_insert_with(|| RawToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            if !id.is_empty() {
                entry.id = id.to_string();
            }
        }
        let Some(function) = call.get("function") else {
            return;
        };
        if let Some(name) = function.get("name").and_then(Value::as_str) {
            // Most providers send the name once; some stream it in pieces,
            // a few repeat it whole in every chunk.
            if entry.name != name {
                entry.name.push_str(name);
            }
        }
        match function.get("arguments") {
            Some(Value::String(piece)) => entry.arguments.push_str(piece),
            // A few servers send the arguments as an object, not JSON text.
            Some(args @ Value::Object(_)) => entry.arguments = args.to_string(),
            _ => {}
        }
    }

    /// Whether `[DONE]` arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn finish(self) -> Result<Assembled, StreamProblem> {
        if let Some(error) = self.error {
            return Err(StreamProblem::Error(error));
        }
        let tool_calls: Vec<RawToolCall> = self
            .calls
            .into_iter()
            .map(|(index, mut call)| {
                if call.id.is_empty() {
                    call.id = format!("call_{index}");
                }
                call
            })
            .collect();
        if self.content.trim().is_empty() && tool_calls.is_empty() {
            return Err(StreamProblem::Empty {
                ignored_lines: self.ignored,
            });
        }
        Ok(Assembled {
            content: self.content,
            tool_calls,
            finish_reason: self.finish_reason,
            usage: self.usage,
            ignored_lines: self.ignored,
        })
    }
}

/// The text of a non-streamed completion (`choices[0].message.content`).
pub fn completion_text(body: &Value) -> Option<String> {
    let text = body
        .get("choices")?
        .as_array()?
        .first()?
        .get("message")?
        .get("content")?
        .as_str()?
        .trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Cuts streamed text into sentences as soon as each is complete, so speech
/// synthesis can start on the first one while the model is still writing.
#[derive(Debug, Default)]
pub struct Sentences {
    buf: String,
}

/// Words that end in a period without ending a sentence.
const ABBREVIATIONS: &[&str] = &[
    "dr", "mr", "mrs", "ms", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "approx",
];

impl Sentences {
    /// The sentences completed by `text`.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let sentence: String = self.buf.drain(..end).collect();
            let sentence = clean(&sentence);
            if !sentence.is_empty() {
                out.push(sentence);
            }
        }
        out
    }

    /// Whatever is left once the text is complete.
    pub fn finish(&mut self) -> Option<String> {
        let rest = clean(&std::mem::take(&mut self.buf));
        (!rest.is_empty()).then_some(rest)
    }

    /// Byte offset just after the first sentence end followed by whitespace
    /// (the whitespace proves the sentence is over: "3.5" and "…" are not).
    fn boundary(&self) -> Option<usize> {
        let mut chars = self.buf.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let next = chars.peek().map(|&(_, n)| n);
            if c == '\n' && !self.buf[..i].trim().is_empty() {
                return Some(i + 1);
            }
            if matches!(c, '.' | '!' | '?') && next.is_some_and(char::is_whitespace) {
                if c == '.' && self.is_abbreviation(i) {
                    continue;
                }
                return Some(i + c.len_utf8());
            }
        }
        None
    }

    fn is_abbreviation(&self, dot: usize) -> bool {
        let word = self.buf[..dot]
            .rsplit(char::is_whitespace)
            .next()
            .unwrap_or("")
            .to_lowercase();
        ABBREVIATIONS.contains(&word.as_str()) || (word.len() == 1 && word != "i")
    }
}

/// A sentence ready to be spoken: no markdown emphasis, one line.
fn clean(text: &str) -> String {
    text.replace(['*', '#', '`'], "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value) -> String {
        json!({ "choices": [{ "index": 0, "delta": delta, "finish_reason": null }] }).to_string()
    }

    #[test]
    fn request_carries_messages_tools_and_tool_choice() {
        let messages = [
            ChatMessage::System("be brief".into()),
            ChatMessage::User("hi".into()),
            ChatMessage::Assistant {
                content: String::new(),
                tool_calls: vec![RawToolCall {
                    id: "c1".into(),
                    name: "end_call".into(),
                    arguments: "{}".into(),
                }],
            },
            ChatMessage::Tool {
                call_id: "c1".into(),
                content: "{\"ok\":true}".into(),
            },
        ];
        let tools = [ToolSpec {
            name: "end_call".into(),
            description: "hang up".into(),
            parameters: json!({ "type": "object" }),
        }];
        let body = ChatRequest {
            model: "m",
            temperature: 0.2,
            max_tokens: Some(200),
            messages: &messages,
            tools: &tools,
            allow_tools: false,
            stream: true,
        }
        .body();
        assert_eq!(body["model"], "m");
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 200);
        assert_eq!(body["tool_choice"], "none");
        assert_eq!(body["tools"][0]["function"]["name"], "end_call");
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
    }

    #[test]
    fn sse_lines_survive_any_chunking() {
        let body = "data: {\"a\":\"é\"}\r\n\r\n: keep-alive\nevent: x\ndata: [DONE]\n";
        let bytes = body.as_bytes();
        for split in 1..bytes.len() {
            let mut sse = SseDecoder::default();
            let mut got = sse.push(&bytes[..split]);
            got.extend(sse.push(&bytes[split..]));
            got.extend(sse.finish());
            assert_eq!(got, ["{\"a\":\"é\"}", "[DONE]"], "split at {split}");
        }
    }

    #[test]
    fn tool_call_deltas_are_assembled_by_index() {
        let mut a = StreamAssembler::default();
        a.push(&chunk(
            json!({ "role": "assistant", "content": "One moment." }),
        ));
        a.push(&chunk(json!({ "tool_calls": [
            { "index": 0, "id": "call_a", "type": "function", "function": { "name": "transfer_to_human", "arguments": "" } }
        ] })));
        a.push(&chunk(json!({ "tool_calls": [
            { "index": 1, "id": "call_b", "function": { "name": "end_", "arguments": "{}" } }
        ] })));
        a.push(&chunk(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"reas" } }] }),
        ));
        a.push(&chunk(
            json!({ "tool_calls": [{ "index": 1, "function": { "name": "call" } }] }),
        ));
        a.push(&chunk(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "on\":\"billing\"}" } }] }),
        ));
        a.push(
            &json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }] })
                .to_string(),
        );
        a.push(&json!({ "choices": [], "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 } }).to_string());
        let done = a.finish().expect("a response");
        assert_eq!(done.content, "One moment.");
        assert_eq!(done.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(done.usage.map(|u| u.total_tokens), Some(15));
        assert_eq!(
            done.tool_calls,
            vec![
                RawToolCall {
                    id: "call_a".into(),
                    name: "transfer_to_human".into(),
                    arguments: "{\"reason\":\"billing\"}".into(),
                },
                RawToolCall {
                    id: "call_b".into(),
                    name: "end_call".into(),
                    arguments: "{}".into(),
                },
            ]
        );
    }

    #[test]
    fn garbage_is_skipped_and_done_is_optional() {
        let mut a = StreamAssembler::default();
        assert_eq!(a.push("not json"), None);
        assert_eq!(
            a.push(&chunk(json!({ "content": "Hi" }))),
            Some("Hi".into())
        );
        assert_eq!(a.push("{\"choices\": 3}"), None);
        let done = a.finish().expect("usable");
        assert_eq!(done.content, "Hi");
        assert_eq!(done.ignored_lines, 1);
    }

    #[test]
    fn empty_or_error_streams_are_problems() {
        let mut a = StreamAssembler::default();
        a.push("garbage");
        a.push("[DONE]");
        assert!(a.is_done());
        assert_eq!(a.finish(), Err(StreamProblem::Empty { ignored_lines: 1 }));
        let mut a = StreamAssembler::default();
        a.push(&chunk(json!({ "content": "Hi" })));
        a.push(r#"{"error":{"message":"overloaded"}}"#);
        assert_eq!(a.finish(), Err(StreamProblem::Error("overloaded".into())));
    }

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = Sentences::default();
        assert!(s.push("We open at 9.").is_empty(), "could be 9.30");
        assert_eq!(
            s.push("30 on weekdays. Dr"),
            ["We open at 9.30 on weekdays."]
        );
        assert!(s.push(". Smith is in on Monday").is_empty());
        assert_eq!(
            s.push("! Anything **else**?"),
            ["Dr. Smith is in on Monday!"]
        );
        assert_eq!(s.finish().as_deref(), Some("Anything else?"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn completion_text_of_a_plain_answer() {
        let body = json!({ "choices": [{ "message": { "role": "assistant", "content": " Two sentences. " } }] });
        assert_eq!(completion_text(&body).as_deref(), Some("Two sentences."));
        assert_eq!(completion_text(&json!({})), None);
    }
}
