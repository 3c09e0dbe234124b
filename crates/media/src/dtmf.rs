//! DTMF as RTP telephone-events (RFC 4733): the 4-byte payload, a detector
//! for received events and a generator for sending digits.
//!
//! The detector keys events on the **RTP timestamp**, not the marker bit:
//! every packet of one event carries the event's start timestamp, so a new
//! timestamp means a new event. Some carriers never set the marker on the
//! first packet (and the first packet can be lost anyway), and a detector
//! that waits for the marker drops those digits — a known failure of other
//! voice-agent stacks. An event ends at the first packet with the E bit (its
//! two retransmissions are recognised by their timestamp and dropped), when
//! a newer event starts, or after a quiet timeout in RTP clock units.

use std::collections::VecDeque;

use crate::rtp::ts_after;
use crate::MediaError;

/// RTP clock ticks (8 kHz) after the last known end of an event with no E bit
/// before it is considered finished: 200 ms, four typical update intervals.
pub const DEFAULT_END_TIMEOUT: u32 = 1_600;

/// Most events a detector queues before dropping the oldest; a flood of
/// one-packet events cannot grow memory.
const MAX_QUEUED: usize = 64;

/// One of the sixteen DTMF keys (RFC 4733 events 0–15).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfDigit(u8);

impl DtmfDigit {
    const CHARS: [char; 16] = [
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
    ];

    /// The digit for a telephone-event code, if it is a DTMF key (0–15;
    /// flash hook and the fax/modem tones are not).
    pub fn from_event_code(code: u8) -> Option<Self> {
        (code < 16).then_some(DtmfDigit(code))
    }

    /// The key as a character: `0`–`9`, `*`, `#`, `A`–`D`.
    pub fn from_char(c: char) -> Option<Self> {
        let c = c.to_ascii_uppercase();
        Self::CHARS
            .iter()
            .position(|&k| k == c)
            .map(|i| DtmfDigit(i as u8))
    }

    /// The RFC 4733 event code.
    pub fn event_code(self) -> u8 {
        self.0
    }

    /// The key as a character.
    pub fn as_char(self) -> char {
        Self::CHARS[usize::from(self.0 & 0x0F)]
    }
}

impl std::fmt::Debug for DtmfDigit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DtmfDigit({})", self.as_char())
    }
}

impl std::fmt::Display for DtmfDigit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// The telephone-event payload (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–15 are DTMF keys).
    pub event: u8,
    /// The E bit: this packet reports the end of the event.
    pub end: bool,
    /// Power level in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in RTP clock units from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first four bytes of a payload; trailing bytes are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, MediaError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(MediaError::Truncated {
                what: "telephone-event",
                len: payload.len(),
                need: 4,
            });
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d0,
            d1,
        ]
    }
}

/// A received key press, reported once when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfEvent {
    /// The key.
    pub digit: DtmfDigit,
    /// RTP timestamp of the start of the event.
    pub start_ts: u32,
    /// Longest duration reported, in RTP clock units (8 per ms).
    pub duration: u32,
    /// Power level in −dBm0 of the last packet.
    pub volume: u8,
    /// Why the detector considers it finished; anything but
    /// [`DtmfEnd::EndBit`] means the sender's end packets were lost or
    /// never sent, worth a debug log per carrier.
    pub end: DtmfEnd,
}

impl DtmfEvent {
    /// The duration in milliseconds at 8 kHz.
    pub fn duration_ms(&self) -> u32 {
        self.duration / 8
    }
}

/// How an event was found to be over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtmfEnd {
    /// A packet with the E bit.
    EndBit,
    /// A packet of a newer event arrived first.
    NewEvent,
    /// Nothing arrived for the timeout.
    Timeout,
}

/// Turns received telephone-event packets into one [`DtmfEvent`] per press.
#[derive(Debug)]
pub struct DtmfDetector {
    current: Option<DtmfEvent>,
    last_finished_ts: Option<u32>,
    end_timeout: u32,
    events: VecDeque<DtmfEvent>,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new(DEFAULT_END_TIMEOUT)
    }
}

impl DtmfDetector {
    /// A detector that ends an event with no E bit `end_timeout` RTP clock
    /// units after its last reported duration.
    pub fn new(end_timeout: u32) -> Self {
        DtmfDetector {
            current: None,
            last_finished_ts: None,
            end_timeout,
            events: VecDeque::new(),
        }
    }

    /// Feeds one telephone-event packet: its RTP timestamp and payload. The
    /// marker bit is deliberately not an input.
    pub fn handle_packet(&mut self, timestamp: u32, payload: &[u8]) -> Result<(), MediaError> {
        let te = TelephoneEvent::parse(payload)?;
        let Some(digit) = DtmfDigit::from_event_code(te.event) else {
            return Ok(()); // flash hook, tones: not keys
        };
        if self.last_finished_ts == Some(timestamp) {
            return Ok(()); // E-bit retransmission or a late update of a finished event
        }
        match self.current {
            Some(ref mut cur) if cur.start_ts == timestamp => {
                cur.duration = cur.duration.max(u32::from(te.duration));
                cur.volume = te.volume;
                if te.end {
                    self.finish(DtmfEnd::EndBit);
                }
                return Ok(());
            }
            Some(cur) if !ts_after(timestamp, cur.start_ts) => return Ok(()), // reordered stale packet
            Some(_) => self.finish(DtmfEnd::NewEvent),
            None => {}
        }
        if let Some(last) = self.last_finished_ts {
            if !ts_after(timestamp, last) {
                return Ok(()); // stale packet of an older event
            }
        }
        self.current = Some(DtmfEvent {
            digit,
            start_ts: timestamp,
            duration: u32::from(te.duration),
            volume: te.volume,
            end: DtmfEnd::EndBit,
        });
        if te.end {
            self.finish(DtmfEnd::EndBit);
        }
        Ok(())
    }

    /// Advances the detector's view of the sender's RTP clock (e.g. from an
    /// audio packet's timestamp, or an estimate from wallclock): an event
    /// whose end has not been heard for the timeout is finished.
    pub fn handle_time(&mut self, rtp_now: u32) {
        if let Some(cur) = self.current {
            let deadline = cur
                .start_ts
                .wrapping_add(cur.duration)
                .wrapping_add(self.end_timeout);
            if ts_after(rtp_now, deadline) {
                self.finish(DtmfEnd::Timeout);
            }
        }
    }

    /// The next finished event.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.events.pop_front()
    }

    /// Whether an event is in progress (the key is held).
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Forgets the event in progress and the de-duplication state, e.g. when
    /// the sender's SSRC changed and its timestamps mean something else.
    pub fn reset(&mut self) {
        self.current = None;
        self.last_finished_ts = None;
    }

    fn finish(&mut self, end: DtmfEnd) {
        if let Some(mut event) = self.current.take() {
            event.end = end;
            self.last_finished_ts = Some(event.start_ts);
            if self.events.len() == MAX_QUEUED {
                self.events.pop_front();
            }
            self.events.push_back(event);
        }
    }
}

/// One telephone-event packet to send: payload and marker bit. All packets of
/// one digit share the RTP timestamp of its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfPacket {
    /// The 4-byte payload.
    pub payload: [u8; 4],
    /// Set on the first packet of the event only.
    pub marker: bool,
}

/// The packets for sending one digit, one per 20 ms tick: a start packet with
/// the marker, updates with a growing duration, then the end packet sent
/// three times (RFC 4733 §2.5.1.4) so one loss does not stretch the press.
#[derive(Clone, Debug)]
pub struct DtmfGenerator {
    digit: DtmfDigit,
    volume: u8,
    ticks: u32,
    next: u32,
}

impl DtmfGenerator {
    /// RTP clock units per packet (20 ms at 8 kHz).
    pub const TICK: u32 = 160;

    /// A press of `duration` RTP clock units (rounded up to whole 20 ms
    /// ticks, at least one, at most what a 16-bit duration can say), at
    /// `volume` −dBm0 (10 is typical).
    pub fn new(digit: DtmfDigit, duration: u32, volume: u8) -> Self {
        let max_ticks = u32::from(u16::MAX) / Self::TICK;
        let ticks = duration.div_ceil(Self::TICK).clamp(1, max_ticks);
        DtmfGenerator {
            digit,
            volume: volume.min(63),
            ticks,
            next: 1,
        }
    }

    /// How many packets the digit takes in total.
    pub fn packet_count(&self) -> u32 {
        self.ticks + 2
    }
}

impl Iterator for DtmfGenerator {
    type Item = DtmfPacket;

    fn next(&mut self) -> Option<DtmfPacket> {
        let k = self.next;
        if k > self.ticks + 2 {
            return None;
        }
        self.next += 1;
        let end = k >= self.ticks;
        let duration = k.min(self.ticks) * Self::TICK;
        let payload = TelephoneEvent {
            event: self.digit.event_code(),
            end,
            volume: self.volume,
            duration: u16::try_from(duration).unwrap_or(u16::MAX),
        }
        .to_bytes();
        Some(DtmfPacket {
            payload,
            marker: k == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn te(event: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    fn feed(d: &mut DtmfDetector, ts: u32, payload: [u8; 4]) {
        d.handle_packet(ts, &payload).expect("valid payload");
    }

    fn drain(d: &mut DtmfDetector) -> Vec<DtmfEvent> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    #[test]
    fn payload_round_trip_and_truncation() {
        let p = TelephoneEvent {
            event: 11,
            end: true,
            volume: 63,
            duration: 0x1234,
        };
        assert_eq!(p.to_bytes(), [11, 0xBF, 0x12, 0x34]);
        assert_eq!(TelephoneEvent::parse(&p.to_bytes()).expect("valid"), p);
        for n in 0..4 {
            assert!(TelephoneEvent::parse(&p.to_bytes()[..n]).is_err());
        }
    }

    #[test]
    fn digits_and_chars() {
        let all: String = (0..16)
            .filter_map(DtmfDigit::from_event_code)
            .map(DtmfDigit::as_char)
            .collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(
            DtmfDigit::from_char('#').map(DtmfDigit::event_code),
            Some(11)
        );
        assert_eq!(
            DtmfDigit::from_char('b').map(DtmfDigit::event_code),
            Some(13)
        );
        assert_eq!(DtmfDigit::from_event_code(16), None);
        assert_eq!(DtmfDigit::from_char('x'), None);
    }

    #[test]
    fn one_event_per_press_with_end_retransmissions() {
        let mut d = DtmfDetector::default();
        for (i, dur) in [160u16, 320, 480].iter().enumerate() {
            feed(&mut d, 8000, te(5, false, *dur));
            assert!(d.poll_event().is_none(), "update {i} reports nothing");
        }
        for _ in 0..3 {
            feed(&mut d, 8000, te(5, true, 640));
        }
        let events = drain(&mut d);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].digit.as_char(), '5');
        assert_eq!(events[0].start_ts, 8000);
        assert_eq!(events[0].duration_ms(), 80);
        assert_eq!(events[0].end, DtmfEnd::EndBit);
        assert!(!d.is_active());
    }

    #[test]
    fn no_marker_and_lost_first_packets_still_detected() {
        // The detector never sees the marker bit; here the first two
        // packets were lost too, so the first one seen is an update.
        let mut d = DtmfDetector::default();
        feed(&mut d, 1000, te(1, false, 480));
        feed(&mut d, 1000, te(1, true, 800));
        // The same digit again: a new timestamp is a new press.
        feed(&mut d, 3000, te(1, false, 160));
        feed(&mut d, 3000, te(1, true, 320));
        feed(&mut d, 3000, te(1, true, 320));
        let digits: Vec<_> = drain(&mut d).iter().map(|e| e.digit.as_char()).collect();
        assert_eq!(digits, vec!['1', '1']);
    }

    #[test]
    fn lost_end_packets_end_on_the_next_event() {
        let mut d = DtmfDetector::default();
        feed(&mut d, 1000, te(2, false, 160));
        feed(&mut d, 1000, te(2, false, 320));
        feed(&mut d, 2000, te(3, false, 160));
        let events = drain(&mut d);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].digit.as_char(), '2');
        assert_eq!(events[0].end, DtmfEnd::NewEvent);
        assert_eq!(events[0].duration, 320);
        // A reordered update of '2' arriving now is stale, not a new press.
        feed(&mut d, 1000, te(2, false, 480));
        assert!(d.poll_event().is_none());
    }

    #[test]
    fn lost_end_packets_end_on_timeout() {
        let mut d = DtmfDetector::new(1600);
        feed(&mut d, u32::MAX - 100, te(9, false, 400)); // across the wrap
        d.handle_time((u32::MAX - 100).wrapping_add(400 + 1600));
        assert!(d.poll_event().is_none(), "not yet");
        d.handle_time((u32::MAX - 100).wrapping_add(400 + 1601));
        let e = d.poll_event().expect("timed out");
        assert_eq!(e.end, DtmfEnd::Timeout);
        assert_eq!(e.digit.as_char(), '9');
        // Late end retransmissions of the timed-out event are dropped.
        feed(&mut d, u32::MAX - 100, te(9, true, 800));
        assert!(d.poll_event().is_none());
    }

    #[test]
    fn single_end_packet_is_a_press() {
        let mut d = DtmfDetector::default();
        feed(&mut d, 500, te(0, true, 800));
        feed(&mut d, 500, te(0, true, 800));
        assert_eq!(drain(&mut d).len(), 1);
    }

    #[test]
    fn non_key_events_are_ignored() {
        let mut d = DtmfDetector::default();
        feed(&mut d, 500, te(16, true, 800)); // flash hook
        assert!(d.poll_event().is_none());
        assert!(!d.is_active());
    }

    #[test]
    fn queue_is_bounded() {
        let mut d = DtmfDetector::default();
        for i in 0..1000u32 {
            feed(&mut d, i * 1000, te(4, true, 160));
        }
        assert_eq!(drain(&mut d).len(), MAX_QUEUED);
    }

    #[test]
    fn generator_sequence() {
        let digit = DtmfDigit::from_char('7').expect("key");
        let gen = DtmfGenerator::new(digit, 800, 10);
        assert_eq!(gen.packet_count(), 7);
        let packets: Vec<_> = gen.collect();
        let parsed: Vec<_> = packets
            .iter()
            .map(|p| TelephoneEvent::parse(&p.payload).expect("valid"))
            .collect();
        let durations: Vec<_> = parsed.iter().map(|t| t.duration).collect();
        assert_eq!(durations, vec![160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<_> = parsed.iter().map(|t| t.end).collect();
        assert_eq!(ends, vec![false, false, false, false, true, true, true]);
        let markers: Vec<_> = packets.iter().map(|p| p.marker).collect();
        assert_eq!(
            markers,
            vec![true, false, false, false, false, false, false]
        );
        assert!(parsed.iter().all(|t| t.event == 7 && t.volume == 10));
    }

    #[test]
    fn generator_output_is_detected_once() {
        let digit = DtmfDigit::from_char('#').expect("key");
        let mut d = DtmfDetector::default();
        for p in DtmfGenerator::new(digit, 1000, 10) {
            d.handle_packet(42, &p.payload).expect("valid");
        }
        let events = drain(&mut d);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].digit, digit);
        assert_eq!(events[0].duration, 1120); // rounded up to 7 ticks
    }

    #[test]
    fn generator_bounds() {
        let digit = DtmfDigit::from_char('1').expect("key");
        assert_eq!(DtmfGenerator::new(digit, 0, 10).packet_count(), 3);
        let long: Vec<_> = DtmfGenerator::new(digit, u32::MAX, 99).collect();
        let last = TelephoneEvent::parse(&long[long.len() - 1].payload).expect("valid");
        assert!(last.end && last.duration >= 65_440 && last.volume == 63);
    }
}
