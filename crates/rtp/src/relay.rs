//! The bridged packet path, sans-IO: what one bridged leg does per packet.
//!
//! - [`Inbound`] accepts the peer's RTP the way `RtpSession` does
//!   (negotiated payload types, whole 10 ms of G.711, symmetric latching,
//!   one SSRC at a time) and keeps the reception statistics RTCP needs, but
//!   has no jitter buffer: nothing is played out on a bridge, packets are
//!   forwarded as they arrive.
//! - [`Outbound`] is our stream towards the peer. It continues the SSRC,
//!   sequence numbers and RTP clock the leg's packetizer used before the
//!   bridge, and rewrites each forwarded packet's header in place: the
//!   sender's sequence and timestamp are shifted by offsets fixed when its
//!   stream starts (so loss and reordering show through unchanged), the
//!   payload type becomes ours, and the payload is translated byte by byte
//!   only when the two legs negotiated different G.711 laws.
//! - [`Tape`] cuts forwarded audio into 20 ms frames on the sender's RTP
//!   clock for the call recording, off the forwarding path. It holds the
//!   newest 120–140 ms in a small ring so packets overtaken on the way in
//!   still reach the recording, in order.
//!
//! Nothing here reads a clock or owns a socket: every input carries `now`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use switchboard_media::dtmf::{DtmfDetector, DtmfEvent, DtmfGenerator, DEFAULT_END_TIMEOUT};
use switchboard_media::jitter::JitterEstimator;
use switchboard_media::rtcp::{self, ReportBlock, RtcpPacket};
use switchboard_media::rtp::{seq_after, ts_after, RtpPacket, HEADER_LEN};
use switchboard_media::session::{SeqCounter, MAX_PACKET_MS};
use switchboard_media::{Codec, DtmfDigit, Frame, MediaError, FRAME_DURATION, FRAME_SAMPLES};

/// Samples in 10 ms, the G.711 packetisation unit.
const PART_SAMPLES: usize = FRAME_SAMPLES / 2;
/// RTP clock units per millisecond (8 kHz).
const UNITS_PER_MS: u64 = 8;
/// Most digits waiting to be sent on a bridged leg.
const MAX_QUEUED_DIGITS: usize = 32;
/// Ticks of silence between two digits we generate (60 ms).
const DTMF_GAP_TICKS: u32 = 3;

/// What an accepted packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// G.711 audio in this law.
    Audio(Codec),
    /// An RFC 4733 telephone-event.
    Event,
}

/// The fields of an accepted packet the forwarding needs, detached from the
/// buffer so the buffer can be rewritten in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) kind: Kind,
    pub(crate) marker: bool,
    pub(crate) sequence: u16,
    pub(crate) timestamp: u32,
    pub(crate) ssrc: u32,
    /// Where the payload (without padding) sits in the datagram.
    pub(crate) payload: Range<usize>,
}

/// Why a datagram was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejected {
    #[error(transparent)]
    Packet(#[from] MediaError),
    #[error("second ssrc {got:#x} while {current:#x} is live")]
    StraySsrc { got: u32, current: u32 },
}

/// The receive side of one bridged leg (see the module docs).
#[derive(Debug)]
pub(crate) struct Inbound {
    audio: Vec<(u8, Codec)>,
    telephone_event: Option<u8>,
    relatch_after: Duration,
    latched: Option<SocketAddr>,
    last_packet_at: Option<Instant>,
    ssrc: Option<u32>,
    last_audio_at: Option<Instant>,
    seq: Option<SeqCounter>,
    jitter: JitterEstimator,
    dtmf: DtmfDetector,
    /// Arrival and sender clock at the last known end of a DTMF event.
    last_dtmf: Option<(Instant, u32)>,
    last_sr: Option<(u32, Instant)>,
    /// Loss the leg counted before the bridge.
    lost_before: i64,
}

/// Where a bridged leg's receive side starts: what the leg had learnt.
#[derive(Clone, Debug)]
pub(crate) struct InboundStart {
    pub(crate) audio: Vec<(u8, Codec)>,
    pub(crate) telephone_event: Option<u8>,
    pub(crate) relatch_after: Duration,
    pub(crate) latched: Option<SocketAddr>,
    pub(crate) ssrc: Option<u32>,
    pub(crate) last_packet_at: Option<Instant>,
    pub(crate) last_audio_at: Option<Instant>,
    pub(crate) lost_before: i64,
}

impl Inbound {
    pub(crate) fn new(start: InboundStart) -> Self {
        Inbound {
            audio: start.audio,
            telephone_event: start.telephone_event,
            relatch_after: start.relatch_after,
            latched: start.latched,
            last_packet_at: start.last_packet_at,
            ssrc: start.ssrc,
            last_audio_at: start.last_audio_at,
            seq: None,
            jitter: JitterEstimator::default(),
            dtmf: DtmfDetector::new(DEFAULT_END_TIMEOUT),
            last_dtmf: None,
            last_sr: None,
            lost_before: start.lost_before,
        }
    }

    /// A re-INVITE changed the payload types.
    pub(crate) fn renegotiate(&mut self, audio: Vec<(u8, Codec)>, telephone_event: Option<u8>) {
        self.audio = audio;
        self.telephone_event = telephone_event;
    }

    /// Forgets the latched source (the media moved).
    pub(crate) fn relatch(&mut self) {
        self.latched = None;
    }

    /// Checks one datagram from `from` arrived at `now`; on success it
    /// counts for the statistics and may be forwarded.
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        datagram: &[u8],
        from: SocketAddr,
    ) -> Result<Accepted, Rejected> {
        let packet = RtpPacket::parse(datagram)?;
        let pt = packet.payload_type;
        let kind = if self.telephone_event == Some(pt) {
            Kind::Event
        } else {
            let codec = self
                .audio
                .iter()
                .find_map(|&(p, c)| (p == pt).then_some(c))
                .ok_or(MediaError::PayloadType(pt))?;
            let len = packet.payload().len();
            if len == 0 || len % PART_SAMPLES != 0 || len > MAX_PACKET_MS * 8 {
                return Err(MediaError::FrameSize { len }.into());
            }
            Kind::Audio(codec)
        };
        if let (Kind::Audio(_), Some(current), Some(at)) = (kind, self.ssrc, self.last_audio_at) {
            let live = now.saturating_duration_since(at) < self.relatch_after;
            if packet.ssrc != current && live && self.latched == Some(from) {
                return Err(Rejected::StraySsrc {
                    got: packet.ssrc,
                    current,
                });
            }
        }
        self.latch(now, from)?;
        self.last_packet_at = Some(now);
        match kind {
            Kind::Event => {
                if self.ssrc == Some(packet.ssrc) {
                    if let Some(seq) = &mut self.seq {
                        seq.update(packet.sequence);
                    }
                }
                self.dtmf
                    .handle_packet(packet.timestamp, packet.payload())?;
                if let Ok(te) = switchboard_media::dtmf::TelephoneEvent::parse(packet.payload()) {
                    let end = packet.timestamp.wrapping_add(u32::from(te.duration));
                    self.last_dtmf = Some((now, end));
                }
            }
            Kind::Audio(_) => {
                if self.ssrc != Some(packet.ssrc) {
                    if self.ssrc.is_some() {
                        tracing::debug!(to = packet.ssrc, "ssrc changed");
                    }
                    self.ssrc = Some(packet.ssrc);
                    self.seq = None;
                    self.jitter = JitterEstimator::default();
                    self.dtmf.reset();
                }
                match &mut self.seq {
                    Some(seq) => seq.update(packet.sequence),
                    None => self.seq = Some(SeqCounter::new(packet.sequence)),
                }
                self.jitter.update(now, packet.timestamp);
                // Audio resuming after a key press ends an event that lost
                // its end packets.
                self.dtmf.handle_time(packet.timestamp);
                self.last_audio_at = Some(now);
            }
        }
        let payload = packet.payload();
        let padding = if datagram.first().is_some_and(|b| b & 0x20 != 0) {
            datagram.last().map_or(0, |&p| usize::from(p))
        } else {
            0
        };
        // The parser checked the padding against the payload.
        let end = datagram.len().saturating_sub(padding);
        Ok(Accepted {
            kind,
            marker: packet.marker,
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            ssrc: packet.ssrc,
            payload: end.saturating_sub(payload.len())..end,
        })
    }

    /// Checks an RTCP datagram (from the latched host) and remembers the
    /// peer's last sender report; returns its packets.
    pub(crate) fn handle_rtcp(
        &mut self,
        now: Instant,
        datagram: &[u8],
        from: SocketAddr,
    ) -> Result<Vec<RtcpPacket>, MediaError> {
        if let Some(latched) = self.latched {
            if latched.ip() != from.ip() {
                return Err(MediaError::ForeignSource { from, latched });
            }
        }
        let packets = rtcp::parse_compound(datagram)?;
        for packet in &packets {
            if let RtcpPacket::SenderReport(sr) = packet {
                if self.ssrc.is_none_or(|s| s == sr.ssrc) {
                    self.last_sr = Some((rtcp::ntp_middle(sr.ntp), now));
                }
            }
        }
        Ok(packets)
    }

    /// Ends a key press whose end packets never came.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, rtp_at)) = self.last_dtmf {
            let elapsed = now.saturating_duration_since(at);
            let units = (elapsed.as_millis() * 8).min(u128::from(u32::MAX / 2)) as u32;
            self.dtmf.handle_time(rtp_at.wrapping_add(units));
        }
        if !self.dtmf.is_active() {
            self.last_dtmf = None;
        }
    }

    /// Whether a key press is in progress (its end may have to be found by
    /// [`Self::handle_timeout`]).
    pub(crate) fn dtmf_active(&self) -> bool {
        self.last_dtmf.is_some()
    }

    /// The next finished key press.
    pub(crate) fn poll_dtmf(&mut self) -> Option<DtmfEvent> {
        self.dtmf.poll_event()
    }

    /// Where the peer's media comes from.
    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Audio packets lost since the start of the leg.
    pub(crate) fn lost(&self) -> i64 {
        let now = self.seq.as_ref().map_or(0, SeqCounter::lost);
        self.lost_before + now
    }

    /// Interarrival jitter in milliseconds.
    pub(crate) fn jitter_ms(&self) -> f64 {
        self.jitter.millis()
    }

    /// The reception report about the peer for our next sender report.
    pub(crate) fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let jitter = self.jitter.rtp_units();
        let last_sr = self.last_sr;
        Some(self.seq.as_mut()?.report_block(ssrc, jitter, last_sr, now))
    }

    fn latch(&mut self, now: Instant, from: SocketAddr) -> Result<(), MediaError> {
        match self.latched {
            None => {
                tracing::debug!(%from, "latched");
                self.latched = Some(from);
            }
            Some(latched) if latched == from => {}
            Some(latched) => {
                let quiet = self
                    .last_packet_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.relatch_after);
                if !quiet {
                    return Err(MediaError::ForeignSource { from, latched });
                }
                tracing::info!(%latched, to = %from, "peer media moved; re-latched");
                self.latched = Some(from);
            }
        }
        Ok(())
    }
}

/// Our stream towards one bridged leg's peer (see the module docs).
#[derive(Debug)]
pub(crate) struct Outbound {
    ssrc: u32,
    codec: Codec,
    payload_type: u8,
    telephone_event: Option<u8>,
    /// The sequence number after the highest one sent.
    next_seq: u16,
    /// Our RTP clock: `timestamp` at `at`, running at 8 kHz from there.
    clock: (Instant, u32),
    /// The highest timestamp sent, if any.
    last_ts: Option<u32>,
    /// How the current source's numbers map onto ours.
    map: Option<Mapping>,
    /// A separate timestamp mapping for telephone-events that come with an
    /// SSRC of their own (some gateways do that).
    event_map: Option<(u32, u32)>,
    /// Byte translation from the other leg's law to ours, when they differ.
    translate: Option<(Codec, [u8; 256])>,
    digits: VecDeque<DtmfDigit>,
    sending: Option<Sending>,
    packets_sent: u32,
    octets_sent: u32,
}

#[derive(Debug)]
struct Mapping {
    source: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// The first sequence number of this mapping: stragglers of the
    /// previous source that would land before it are dropped.
    floor: u16,
}

#[derive(Debug)]
struct Sending {
    generator: Option<DtmfGenerator>,
    start_ts: u32,
    next_at: Instant,
    gap: u32,
}

/// Where our stream starts on a bridged leg: the packetizer's state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutboundStart {
    pub(crate) ssrc: u32,
    pub(crate) codec: Codec,
    pub(crate) payload_type: u8,
    pub(crate) telephone_event: Option<u8>,
    pub(crate) next_seq: u16,
    /// The timestamp the leg's next tick would have carried, and when.
    pub(crate) clock: (Instant, u32),
    pub(crate) packets_sent: u32,
    pub(crate) octets_sent: u32,
}

impl Outbound {
    pub(crate) fn new(start: OutboundStart) -> Self {
        Outbound {
            ssrc: start.ssrc,
            codec: start.codec,
            payload_type: start.payload_type,
            telephone_event: start.telephone_event,
            next_seq: start.next_seq,
            clock: start.clock,
            last_ts: None,
            map: None,
            event_map: None,
            translate: None,
            digits: VecDeque::new(),
            sending: None,
            packets_sent: start.packets_sent,
            octets_sent: start.octets_sent,
        }
    }

    /// A re-INVITE changed what we send.
    pub(crate) fn renegotiate(
        &mut self,
        codec: Codec,
        payload_type: u8,
        telephone_event: Option<u8>,
    ) {
        self.codec = codec;
        self.payload_type = payload_type;
        self.telephone_event = telephone_event;
        self.translate = None;
    }

    /// Our SSRC.
    pub(crate) fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets and payload octets sent on this stream since the leg started.
    pub(crate) fn counts(&self) -> (u32, u32) {
        (self.packets_sent, self.octets_sent)
    }

    /// Our RTP clock at `now`.
    pub(crate) fn timestamp_at(&self, now: Instant) -> u32 {
        let (at, ts) = self.clock;
        let elapsed = now.saturating_duration_since(at);
        let units = (elapsed.as_micros() * u128::from(UNITS_PER_MS) / 1000) as u32;
        ts.wrapping_add(units)
    }

    /// Rewrites the accepted packet `p` in `buf` (from the other leg) in
    /// place as a packet of ours; returns the range of `buf` to send, or
    /// `None` when it must not be sent (an event we cannot carry, a
    /// straggler from before the current source, a digit of ours on the
    /// wire).
    pub(crate) fn forward(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        p: &Accepted,
    ) -> Option<Range<usize>> {
        if self.sending.is_some() {
            // Our own digit has the stream; audio resumes after it.
            return None;
        }
        let payload_type = match (p.kind, self.telephone_event) {
            (Kind::Audio(_), _) => self.payload_type,
            (Kind::Event, Some(pt)) => pt,
            (Kind::Event, None) => {
                self.interrupt();
                return None;
            }
        };
        let start = p.payload.start.checked_sub(HEADER_LEN)?;
        let mut marker = p.marker;
        let (sequence, timestamp) = match (&self.map, p.kind) {
            (Some(map), _) if map.source == p.ssrc => {
                let sequence = p.sequence.wrapping_add(map.seq_offset);
                if seq_after(map.floor, sequence) {
                    return None;
                }
                (sequence, p.timestamp.wrapping_add(map.ts_offset))
            }
            (Some(_), Kind::Event) => {
                // Events on an SSRC of their own: keep their timestamps
                // consistent among themselves, number them after ours.
                let offset = match self.event_map {
                    Some((source, offset)) if source == p.ssrc => offset,
                    _ => {
                        let offset = self.fresh_timestamp(now).wrapping_sub(p.timestamp);
                        self.event_map = Some((p.ssrc, offset));
                        offset
                    }
                };
                (self.next_seq, p.timestamp.wrapping_add(offset))
            }
            _ => {
                let timestamp = self.fresh_timestamp(now);
                self.map = Some(Mapping {
                    source: p.ssrc,
                    seq_offset: self.next_seq.wrapping_sub(p.sequence),
                    ts_offset: timestamp.wrapping_sub(p.timestamp),
                    floor: self.next_seq,
                });
                // A new stream for the peer's jitter buffer.
                marker = marker || matches!(p.kind, Kind::Audio(_));
                (self.next_seq, timestamp)
            }
        };
        if let Kind::Audio(from) = p.kind {
            if from != self.codec {
                let table = self.table(from);
                for b in buf.get_mut(p.payload.clone())? {
                    *b = table[usize::from(*b)];
                }
            }
        }
        let header = buf.get_mut(start..p.payload.start)?;
        header[0] = 0x80;
        header[1] = (u8::from(marker) << 7) | (payload_type & 0x7F);
        header[2..4].copy_from_slice(&sequence.to_be_bytes());
        header[4..8].copy_from_slice(&timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.sent(now, sequence, timestamp, p.payload.len());
        Some(start..p.payload.end)
    }

    /// Packets of the current source are being left out on purpose (hold,
    /// events the peer cannot take): the next one starts a new stream
    /// (marker, numbers continuing ours) rather than leaving a gap the peer
    /// would count as loss.
    pub(crate) fn interrupt(&mut self) {
        self.map = None;
    }

    /// Queues a key press to be sent as telephone-events; false when none
    /// were negotiated or too many are waiting.
    pub(crate) fn send_dtmf(&mut self, digit: DtmfDigit) -> bool {
        if self.telephone_event.is_none() || self.digits.len() >= MAX_QUEUED_DIGITS {
            return false;
        }
        self.digits.push_back(digit);
        true
    }

    /// When [`Self::poll_dtmf`] has the next digit packet due.
    pub(crate) fn dtmf_due(&self) -> Option<Instant> {
        match &self.sending {
            Some(s) => Some(s.next_at),
            None if !self.digits.is_empty() => Some(self.clock.0),
            None => None,
        }
    }

    /// Writes the next due telephone-event packet of a key press we send
    /// into `out` (cleared first); false when none is due.
    pub(crate) fn poll_dtmf(&mut self, now: Instant, duration: u32, out: &mut Vec<u8>) -> bool {
        out.clear();
        if self.sending.is_none() {
            let Some(digit) = self.digits.pop_front() else {
                return false;
            };
            self.sending = Some(Sending {
                generator: Some(DtmfGenerator::new(digit, duration, 10)),
                start_ts: self.fresh_timestamp(now),
                next_at: now,
                gap: DTMF_GAP_TICKS,
            });
        }
        let (Some(sending), Some(pt)) = (&mut self.sending, self.telephone_event) else {
            self.sending = None;
            return false;
        };
        if now < sending.next_at {
            return false;
        }
        sending.next_at += FRAME_DURATION;
        let Some(generator) = &mut sending.generator else {
            // The gap after a digit, so "55" is not one long "5".
            sending.gap = sending.gap.saturating_sub(1);
            if sending.gap == 0 {
                self.sending = None;
                // Forwarded audio resumes as a new stream after the digit.
                self.interrupt();
            }
            return false;
        };
        let Some(packet) = generator.next() else {
            sending.generator = None;
            return false;
        };
        let (sequence, timestamp) = (self.next_seq, sending.start_ts);
        switchboard_media::rtp::RtpHeader {
            marker: packet.marker,
            payload_type: pt,
            sequence,
            timestamp,
            ssrc: self.ssrc,
        }
        .write(&packet.payload, out);
        self.sent(now, sequence, timestamp, packet.payload.len());
        true
    }

    /// A timestamp for a new stream: our clock now, after anything sent.
    fn fresh_timestamp(&self, now: Instant) -> u32 {
        let ts = self.timestamp_at(now);
        match self.last_ts {
            Some(last) if !ts_after(ts, last) => last.wrapping_add(FRAME_SAMPLES as u32),
            _ => ts,
        }
    }

    fn sent(&mut self, now: Instant, sequence: u16, timestamp: u32, payload_len: usize) {
        if !seq_after(self.next_seq, sequence) {
            self.next_seq = sequence.wrapping_add(1);
        }
        if self.last_ts.is_none_or(|last| ts_after(timestamp, last)) {
            self.last_ts = Some(timestamp);
            self.clock = (now, timestamp);
        }
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    /// The byte translation from `from`'s law to ours, built on first use.
    fn table(&mut self, from: Codec) -> &[u8; 256] {
        if self.translate.as_ref().is_some_and(|(c, _)| *c != from) {
            self.translate = None;
        }
        let to = self.codec;
        let (_, table) = self.translate.get_or_insert_with(|| {
            let mut table = [0u8; 256];
            for (byte, out) in (0..=u8::MAX).zip(table.iter_mut()) {
                *out = to.encode_sample(from.decode_sample(byte));
            }
            (from, table)
        });
        table
    }
}

/// Frames a [`Tape`] holds back for late packets: 140 ms. A packet overtaken
/// on the way in still finds its slot when it is at most 120–140 ms (where
/// the newest packet ends within its frame decides) behind the newest one.
const TAPE_FRAMES: usize = 7;
/// Samples a [`Tape`]'s window spans.
const TAPE_SAMPLES: u32 = (TAPE_FRAMES * FRAME_SAMPLES) as u32;

/// Cuts one direction's forwarded audio into 20 ms frames for recording,
/// placed by the sender's RTP timestamps (so arrival jitter does not shift
/// the recording) from the arrival of the stream's first packet.
///
/// The newest 120–140 ms are held in a ring of frames on a 20 ms grid
/// starting at the stream's first timestamp: a packet overtaken on the way
/// in fills its slot as long as that slot is still held, and a frame is
/// emitted only when the newest audio pushes it out of the window (or on
/// [`Self::flush`]). So frames come out in timestamp order, complete up to
/// the network's loss, with a delay of the window that the forwarding
/// never sees. A duplicate rewrites the same samples; audio older than the
/// window is dropped. Frames no audio reached are not emitted: the
/// recorder fills gaps with silence by time.
#[derive(Debug)]
pub(crate) struct Tape {
    /// Source SSRC, arrival of its first packet and that packet's timestamp.
    base: Option<(u32, Instant, u32)>,
    ring: [Slot; TAPE_FRAMES],
    /// Ring index of the oldest frame held.
    oldest: usize,
    /// Timestamp of that frame's first sample: the window spans
    /// `oldest_ts .. oldest_ts + TAPE_SAMPLES`.
    oldest_ts: u32,
    /// Slots holding audio.
    held: usize,
}

/// One 20 ms frame of a [`Tape`]'s window.
#[derive(Clone, Debug)]
struct Slot {
    frame: Frame,
    /// Whether any audio landed here.
    filled: bool,
    /// Whether any of that audio was forwarded to the other leg's peer.
    sent: bool,
}

impl Default for Tape {
    fn default() -> Self {
        let slot = Slot {
            frame: Frame::silence(),
            filled: false,
            sent: false,
        };
        Tape {
            base: None,
            ring: std::array::from_fn(|_| slot.clone()),
            oldest: 0,
            oldest_ts: 0,
            held: 0,
        }
    }
}

impl Tape {
    /// Adds the audio of packet `p` (in `datagram`), arrived at `now` and
    /// forwarded if `sent`; calls `emit(at, frame, sent)` for every 20 ms
    /// frame leaving the window, in timestamp order, `at` being when its
    /// first sample arrived on our clock and `sent` whether any of it was
    /// forwarded. Telephone-events are not recorded.
    pub(crate) fn push(
        &mut self,
        now: Instant,
        datagram: &[u8],
        p: &Accepted,
        sent: bool,
        mut emit: impl FnMut(Instant, &Frame, bool),
    ) {
        let (Kind::Audio(codec), Some(payload)) = (p.kind, datagram.get(p.payload.clone())) else {
            return;
        };
        let (ssrc, timestamp) = (p.ssrc, p.timestamp);
        let rebase = match self.base {
            None => true,
            Some((source, at, base_ts)) => {
                // A new stream, or a jump of more than a second against the
                // wallclock (a sender restart): start over from here.
                let sent_after = i64::from(timestamp.wrapping_sub(base_ts) as i32);
                let arrived =
                    (now.saturating_duration_since(at).as_millis() as i64) * UNITS_PER_MS as i64;
                source != ssrc || (sent_after - arrived).abs() > 8_000
            }
        };
        if rebase {
            self.flush(&mut emit);
            self.base = Some((ssrc, now, timestamp));
            // The first packet lands in the newest frame, so the packets it
            // overtook still fit behind it.
            self.oldest_ts = timestamp.wrapping_sub(TAPE_SAMPLES - FRAME_SAMPLES as u32);
        }
        // A payload is at most MAX_PACKET_MS (the parser's bound), far
        // below 2^31 samples.
        let len = payload.len() as u32;
        let end = timestamp.wrapping_add(len);
        // Move the window up to the packet's end; what falls out is final.
        loop {
            let over = end.wrapping_sub(self.oldest_ts.wrapping_add(TAPE_SAMPLES)) as i32;
            if over <= 0 {
                break;
            }
            if self.held == 0 {
                // Nothing held (a pause in the stream): jump, on the grid.
                let frames = (over as u32).div_ceil(FRAME_SAMPLES as u32);
                let jump = frames.wrapping_mul(FRAME_SAMPLES as u32);
                self.oldest_ts = self.oldest_ts.wrapping_add(jump);
                break;
            }
            self.emit_oldest(&mut emit);
        }
        // Audio older than the window has been recorded past: drop it.
        let behind = self.oldest_ts.wrapping_sub(timestamp) as i32;
        let skip = usize::try_from(behind).unwrap_or(0);
        let Some(mut rest) = payload.get(skip..).filter(|r| !r.is_empty()) else {
            return;
        };
        let mut pos = timestamp
            .wrapping_add(skip as u32)
            .wrapping_sub(self.oldest_ts) as usize;
        while !rest.is_empty() && pos < TAPE_SAMPLES as usize {
            let slot = &mut self.ring[(self.oldest + pos / FRAME_SAMPLES) % TAPE_FRAMES];
            let at = pos % FRAME_SAMPLES;
            let (now_in, later) = rest.split_at(rest.len().min(FRAME_SAMPLES - at));
            for (sample, &byte) in slot.frame.samples_mut()[at..].iter_mut().zip(now_in) {
                *sample = codec.decode_sample(byte);
            }
            if !slot.filled {
                slot.filled = true;
                self.held += 1;
            }
            slot.sent |= sent;
            pos += now_in.len();
            rest = later;
        }
    }

    /// Emits everything held (end of the stream or of the bridge): frames
    /// partly filled come out with the rest silent.
    pub(crate) fn flush(&mut self, mut emit: impl FnMut(Instant, &Frame, bool)) {
        // Each step frees a slot or passes an empty one: at most a window.
        for _ in 0..TAPE_FRAMES {
            if self.held == 0 {
                break;
            }
            self.emit_oldest(&mut emit);
        }
    }

    /// Moves the window one frame on, emitting the oldest frame if audio
    /// reached it.
    fn emit_oldest(&mut self, emit: &mut impl FnMut(Instant, &Frame, bool)) {
        let slot = &mut self.ring[self.oldest];
        if slot.filled {
            if let Some((_, at, base_ts)) = self.base {
                let offset = i64::from(self.oldest_ts.wrapping_sub(base_ts) as i32);
                let micros = Duration::from_micros(offset.unsigned_abs() * 1000 / UNITS_PER_MS);
                let when = if offset >= 0 {
                    at.checked_add(micros)
                } else {
                    at.checked_sub(micros)
                };
                emit(when.unwrap_or(at), &slot.frame, slot.sent);
            }
            slot.frame.samples_mut().fill(0);
            slot.filled = false;
            slot.sent = false;
            self.held -= 1;
        }
        self.oldest = (self.oldest + 1) % TAPE_FRAMES;
        self.oldest_ts = self.oldest_ts.wrapping_add(FRAME_SAMPLES as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_media::rtp::RtpHeader;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], port))
    }

    fn inbound() -> Inbound {
        Inbound::new(InboundStart {
            audio: vec![(0, Codec::Pcmu), (8, Codec::Pcma)],
            telephone_event: Some(101),
            relatch_after: Duration::from_secs(1),
            latched: None,
            ssrc: None,
            last_packet_at: None,
            last_audio_at: None,
            lost_before: 0,
        })
    }

    fn outbound(codec: Codec, at: Instant) -> Outbound {
        Outbound::new(OutboundStart {
            ssrc: 0xABCD,
            codec,
            payload_type: codec.static_payload_type(),
            telephone_event: Some(96),
            next_seq: 500,
            clock: (at, 10_000),
            packets_sent: 0,
            octets_sent: 0,
        })
    }

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc,
        }
        .to_packet(payload)
    }

    #[test]
    fn rewrites_headers_with_continuous_numbers_and_keeps_gaps() {
        let t0 = Instant::now();
        let mut inb = inbound();
        let mut out = outbound(Codec::Pcmu, t0);
        let mut sent = Vec::new();
        for (i, seq) in [7u16, 8, 10].into_iter().enumerate() {
            let now = t0 + FRAME_DURATION * (i as u32 + 1);
            let mut buf = packet(0, seq, 1_000 + u32::from(seq - 7) * 160, 42, &[0xAA; 160]);
            let accepted = inb.handle_packet(now, &buf, addr(4000)).expect("accepted");
            let range = out.forward(now, &mut buf, &accepted).expect("forwarded");
            let p = RtpPacket::parse(&buf[range]).expect("valid rtp");
            assert_eq!((p.ssrc, p.payload_type), (0xABCD, 0));
            assert_eq!(p.payload(), &[0xAA; 160]);
            sent.push((p.sequence, p.timestamp, p.marker));
        }
        // Continues at our next sequence number; the lost packet stays a gap.
        assert_eq!(
            sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            [500, 501, 503]
        );
        assert!(sent[0].2 && !sent[1].2, "marker on the first packet only");
        // The clock continues from ours, 20 ms after it, in the sender's steps.
        assert_eq!(sent[0].1, 10_000 + 160);
        assert_eq!(sent[2].1 - sent[0].1, 3 * 160);
    }

    #[test]
    fn a_new_source_continues_after_the_old_one() {
        let t0 = Instant::now();
        let mut inb = inbound();
        let mut out = outbound(Codec::Pcmu, t0);
        let mut buf = packet(0, 100, 5_000, 1, &[0xAA; 160]);
        let a = inb.handle_packet(t0, &buf, addr(4000)).expect("ok");
        out.forward(t0, &mut buf, &a).expect("sent");
        // Two seconds later the peer restarts with a new SSRC and numbers.
        let later = t0 + Duration::from_secs(2);
        let mut buf = packet(0, 9, 77, 2, &[0xAA; 160]);
        let b = inb.handle_packet(later, &buf, addr(4000)).expect("ok");
        let range = out.forward(later, &mut buf, &b).expect("sent");
        let p = RtpPacket::parse(&buf[range]).expect("rtp");
        assert_eq!(p.sequence, 501);
        assert!(p.marker);
        assert_eq!(p.timestamp, 10_000 + 16_000);
        // A straggler of the old stream is not let back in.
        let buf = packet(0, 99, 4_840, 1, &[0xAA; 160]);
        assert!(matches!(
            inb.handle_packet(later, &buf, addr(4000)),
            Err(Rejected::StraySsrc { .. })
        ));
    }

    #[test]
    fn translates_between_laws_and_maps_event_payload_types() {
        let t0 = Instant::now();
        let mut inb = inbound();
        let mut out = outbound(Codec::Pcma, t0);
        let frame = Frame::new([1000; FRAME_SAMPLES]);
        let mut buf = packet(0, 1, 0, 3, &Codec::Pcmu.encode(&frame));
        let a = inb.handle_packet(t0, &buf, addr(4000)).expect("ok");
        let range = out.forward(t0, &mut buf, &a).expect("sent");
        let p = RtpPacket::parse(&buf[range]).expect("rtp");
        assert_eq!(p.payload_type, 8);
        let decoded = Codec::Pcma.decode(p.payload()).expect("a 20 ms frame");
        assert!(decoded.samples().iter().all(|&s| (s - 1000).abs() < 64));

        let event = switchboard_media::dtmf::TelephoneEvent {
            event: 5,
            end: false,
            volume: 10,
            duration: 160,
        };
        let mut buf = packet(101, 2, 160, 3, &event.to_bytes());
        let e = inb.handle_packet(t0, &buf, addr(4000)).expect("ok");
        assert_eq!(e.kind, Kind::Event);
        let range = out.forward(t0, &mut buf, &e).expect("sent");
        let p = RtpPacket::parse(&buf[range]).expect("rtp");
        assert_eq!((p.payload_type, p.sequence), (96, 501));
    }

    #[test]
    fn rejects_unnegotiated_misshaped_and_foreign_packets() {
        let t0 = Instant::now();
        let mut inb = inbound();
        assert!(inb
            .handle_packet(t0, &packet(18, 1, 0, 1, &[0; 160]), addr(1))
            .is_err());
        assert!(inb
            .handle_packet(t0, &packet(0, 1, 0, 1, &[0; 81]), addr(1))
            .is_err());
        assert!(inb.handle_packet(t0, &[0x80, 0], addr(1)).is_err());
        inb.handle_packet(t0, &packet(0, 1, 0, 1, &[0; 160]), addr(1))
            .expect("latches");
        assert!(inb
            .handle_packet(t0, &packet(0, 2, 160, 1, &[0; 160]), addr(2))
            .is_err());
        assert!(matches!(
            inb.handle_packet(t0, &packet(0, 2, 160, 9, &[0; 160]), addr(1)),
            Err(Rejected::StraySsrc { .. })
        ));
        assert_eq!(inb.remote(), Some(addr(1)));
    }

    /// What a tape emitted: when (after `t0`), the level of the frame's
    /// first and last sample, and whether it was sent.
    type Taped = Vec<(Duration, i16, i16, bool)>;

    fn taped(t0: Instant, frames: &mut Taped) -> impl FnMut(Instant, &Frame, bool) + '_ {
        move |at, f, sent| {
            let s = f.samples();
            frames.push((at - t0, s[0], s[FRAME_SAMPLES - 1], sent));
        }
    }

    /// Pushes a PCMU payload from `ssrc` at `timestamp` onto `tape`.
    fn push(
        tape: &mut Tape,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
        sent: bool,
        emit: impl FnMut(Instant, &Frame, bool),
    ) {
        let datagram = packet(0, 1, timestamp, ssrc, payload);
        let p = Accepted {
            kind: Kind::Audio(Codec::Pcmu),
            marker: false,
            sequence: 1,
            timestamp,
            ssrc,
            payload: HEADER_LEN..datagram.len(),
        };
        tape.push(now, &datagram, &p, sent, emit);
    }

    /// A 20 ms payload at a level telling frame `i` apart after µ-law.
    fn level(i: u32) -> Vec<u8> {
        vec![Codec::Pcmu.encode_sample(1000 * (i as i16 + 1)); FRAME_SAMPLES]
    }

    /// Pushes frame `i` of a stream starting at timestamp 8_000, arrived
    /// `i * 20 ms` after `t0`.
    fn push_frame(tape: &mut Tape, t0: Instant, i: u32, frames: &mut Taped) {
        let now = t0 + FRAME_DURATION * i;
        let ts = 8_000 + i * FRAME_SAMPLES as u32;
        push(tape, now, 1, ts, &level(i), true, taped(t0, frames));
    }

    /// The frame indices (by level) the tape emitted, in order.
    fn indices(frames: &Taped) -> Vec<i16> {
        frames.iter().map(|f| (f.1 + 500) / 1000 - 1).collect()
    }

    #[test]
    fn tape_puts_overtaken_packets_back_in_order() {
        let t0 = Instant::now();
        let mut tape = Tape::default();
        let mut frames = Taped::new();
        // Each packet overtaken by up to four behind it (80 ms).
        for i in [0, 2, 1, 5, 3, 4, 6, 10, 7, 8, 9, 11] {
            push_frame(&mut tape, t0, i, &mut frames);
        }
        // The newest 140 ms (7 frames, 5 to 11) are still held.
        assert_eq!(indices(&frames), (0..=4).collect::<Vec<_>>());
        tape.flush(taped(t0, &mut frames));
        assert_eq!(indices(&frames), (0..=11).collect::<Vec<_>>());
        // Placed by timestamp from the first arrival, whole frames.
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.0, FRAME_DURATION * i as u32);
            assert_eq!(f.1, f.2, "frame {i} whole");
            assert!(f.3);
        }
    }

    #[test]
    fn tape_takes_a_packet_overtaken_by_the_first() {
        let t0 = Instant::now();
        let mut tape = Tape::default();
        let mut frames = Taped::new();
        push_frame(&mut tape, t0, 1, &mut frames);
        push_frame(&mut tape, t0, 0, &mut frames);
        tape.flush(taped(t0, &mut frames));
        assert_eq!(indices(&frames), [0, 1]);
        // Frame 0 was sent 20 ms before the first arrival (frame 1 at 20 ms).
        assert_eq!(frames[1].0 - frames[0].0, FRAME_DURATION);
    }

    #[test]
    fn tape_drops_audio_older_than_its_window_and_duplicates() {
        let t0 = Instant::now();
        let mut tape = Tape::default();
        let mut frames = Taped::new();
        for i in [0, 1, 1, 2, 12, 3, 2, 9, 3] {
            push_frame(&mut tape, t0, i, &mut frames);
        }
        tape.flush(taped(t0, &mut frames));
        // 3 came 180 ms behind 12: the recording had moved past it. 9 was
        // inside the window; the duplicates of 1, 2 and 3 changed nothing.
        assert_eq!(indices(&frames), [0, 1, 2, 9, 12]);
        let at: Vec<_> = frames.iter().map(|f| f.0.as_millis()).collect();
        assert_eq!(at, [0, 20, 40, 180, 240]);
    }

    #[test]
    fn tape_flush_emits_the_tail_and_partial_frames() {
        let t0 = Instant::now();
        let mut tape = Tape::default();
        let mut frames = Taped::new();
        let loud = Codec::Pcmu.encode_sample(8000);
        // 10 ms halves; the last frame gets only its first half, unsent.
        push(
            &mut tape,
            t0,
            1,
            800,
            &[loud; 80],
            true,
            taped(t0, &mut frames),
        );
        push(
            &mut tape,
            t0,
            1,
            880,
            &[loud; 80],
            true,
            taped(t0, &mut frames),
        );
        push(
            &mut tape,
            t0,
            1,
            960,
            &[loud; 80],
            false,
            taped(t0, &mut frames),
        );
        assert!(frames.is_empty(), "held until it leaves the window");
        tape.flush(taped(t0, &mut frames));
        assert_eq!(frames.len(), 2);
        assert!(frames[0].1 > 7000 && frames[0].2 > 7000 && frames[0].3);
        assert!(frames[1].1 > 7000 && frames[1].2 == 0 && !frames[1].3);
        assert_eq!(frames[1].0, FRAME_DURATION);
        // Nothing is held twice.
        tape.flush(taped(t0, &mut frames));
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn tape_keeps_its_grid_across_pauses_and_restarts_on_a_new_source() {
        let t0 = Instant::now();
        let mut tape = Tape::default();
        let mut frames = Taped::new();
        push_frame(&mut tape, t0, 0, &mut frames);
        // Half a second of silence suppression, resuming 10 ms off the grid.
        let ts = 8_000 + 25 * FRAME_SAMPLES as u32 + 80;
        let now = t0 + Duration::from_millis(510);
        push(
            &mut tape,
            now,
            1,
            ts,
            &level(3),
            true,
            taped(t0, &mut frames),
        );
        tape.flush(taped(t0, &mut frames));
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].0, Duration::from_millis(500));
        // The packet straddles two frames of the grid.
        let halves = (frames[1].1, frames[1].2, frames[2].1, frames[2].2);
        assert_eq!(halves, (0, frames[2].1, frames[1].2, 0));
        assert!(frames[1].2 > 3000);
        // A new SSRC starts over from its own first packet.
        frames.clear();
        let later = t0 + Duration::from_secs(2);
        push(
            &mut tape,
            later,
            2,
            77,
            &level(1),
            true,
            taped(t0, &mut frames),
        );
        tape.flush(taped(t0, &mut frames));
        assert_eq!(indices(&frames), [1]);
        assert_eq!(frames[0].0, Duration::from_secs(2));
    }
}
