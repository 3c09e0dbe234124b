//! A sans-IO parser for `text/event-stream` (the WHATWG server-sent events
//! format): feed it bytes as they arrive, take complete events out.
//!
//! It keeps only the fields MIAW uses (`event`, `id`, `data`), ignores
//! comments and `retry`, accepts `\n`, `\r\n` and `\r` line ends (also when
//! a `\r\n` is split between two chunks), and refuses to buffer more than
//! [`MAX_BUFFERED`] bytes without a complete line so a broken peer cannot
//! make it grow without bound.

use std::collections::VecDeque;

/// The longest line (or unfinished event) we hold in memory.
pub(crate) const MAX_BUFFERED: usize = 1024 * 1024;

/// One dispatched event, before its `data` is interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEvent {
    /// The `event:` field; `message` when absent (as the standard says).
    pub(crate) event: String,
    /// The event's own `id:` field, if it had one.
    pub(crate) id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event stream sent more than {MAX_BUFFERED} bytes without a line end")]
pub(crate) struct Overflow;

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    /// Pending event size, to bound memory across many `data:` lines.
    pending_bytes: usize,
    ready: VecDeque<RawEvent>,
}

impl SseParser {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; complete events become available from [`Self::poll_event`].
    pub(crate) fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.buffer[start..];
            let Some(pos) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                break;
            };
            let terminator_len = if rest[pos] == b'\r' {
                match rest.get(pos + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A lone `\r` at the end: wait to see whether `\n` follows.
                    None => break,
                }
            } else {
                1
            };
            let line = String::from_utf8_lossy(&rest[..pos]).into_owned();
            start += pos + terminator_len;
            self.handle_line(&line)?;
        }
        self.buffer.drain(..start);
        if self.buffer.len() > MAX_BUFFERED {
            self.buffer.clear();
            return Err(Overflow);
        }
        Ok(())
    }

    /// Call when the stream ended: a trailing `\r` completes its line; an
    /// event without its terminating blank line is discarded (per the standard).
    pub(crate) fn handle_eof(&mut self) -> Result<(), Overflow> {
        if self.buffer.last() == Some(&b'\r') {
            self.buffer.pop();
            let line = String::from_utf8_lossy(&self.buffer).into_owned();
            self.buffer.clear();
            self.handle_line(&line)?;
        }
        self.buffer.clear();
        self.event = None;
        self.id = None;
        self.data = None;
        self.pending_bytes = 0;
        Ok(())
    }

    pub(crate) fn poll_event(&mut self) -> Option<RawEvent> {
        self.ready.pop_front()
    }

    fn handle_line(&mut self, line: &str) -> Result<(), Overflow> {
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        self.pending_bytes += value.len();
        if self.pending_bytes > MAX_BUFFERED {
            self.data = None;
            self.pending_bytes = 0;
            return Err(Overflow);
        }
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        let id = self.id.take();
        let data = self.data.take();
        self.pending_bytes = 0;
        if event.is_none() && data.is_none() {
            return;
        }
        self.ready.push_back(RawEvent {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_string()),
            id,
            data: data.unwrap_or_default(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<RawEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.handle_bytes(chunk).unwrap();
            while let Some(e) = parser.poll_event() {
                out.push(e);
            }
        }
        parser.handle_eof().unwrap();
        while let Some(e) = parser.poll_event() {
            out.push(e);
        }
        out
    }

    #[test]
    fn parses_named_events_with_ids_and_multiline_data() {
        let events = parse_chunks(&[b"event: CONVERSATION_MESSAGE\nid: 7\ndata: {\"a\":\ndata: 1}\n\n: comment\n\nevent: ping\ndata: {}\n\n"]);
        assert_eq!(
            events,
            vec![
                RawEvent {
                    event: "CONVERSATION_MESSAGE".into(),
                    id: Some("7".into()),
                    data: "{\"a\":\n1}".into()
                },
                RawEvent {
                    event: "ping".into(),
                    id: None,
                    data: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn any_split_and_any_line_ending_gives_the_same_events() {
        let text = b"event: A\r\nid: 1\r\ndata: x\r\n\r\nevent: B\rdata: y\r\revent:C\ndata:z\n\n";
        let whole = parse_chunks(&[text]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2].event, "C");
        assert_eq!(whole[2].data, "z");
        for split in 1..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(parse_chunks(&[a, b]), whole, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_chunks(&bytewise), whole);
    }

    #[test]
    fn unterminated_event_is_dropped_and_huge_lines_are_refused() {
        assert!(parse_chunks(&[b"event: A\ndata: x\n"]).is_empty());
        let mut parser = SseParser::new();
        let big = vec![b'a'; MAX_BUFFERED + 1];
        assert_eq!(parser.handle_bytes(&big), Err(Overflow));
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        let events = parse_chunks(&[b"event: \xff\xfe\ndata: \xc3\n\n"]);
        assert_eq!(events.len(), 1);
    }
}
