//! One call leg's RTP: [`RtpSession`] for what we receive, [`Packetizer`]
//! for what we send.
//!
//! [`RtpSession`] takes datagrams with their source address and arrival
//! time, and hands out decoded 20 ms frames on the driver's playout tick and
//! events (DTMF, latching, SSRC changes, BYE). It filters by the payload types
//! negotiated in SDP, latches to the first source that sends a valid packet
//! (symmetric RTP: the driver then sends to [`RtpSession::remote`]) and keeps
//! the reception statistics RTCP and the latency trace need.
//!
//! # Any packetisation time
//!
//! Carriers send 10, 20, 30, 40 or 60 ms per packet whatever the SDP said.
//! Any G.711 payload of N × 10 ms up to [`MAX_PACKET_MS`] is accepted: it is
//! decoded and cut into 20 ms frames by its RTP timestamp. The jitter buffer
//! is keyed by *frame number* — `(timestamp − base) / 160`, where `base` is
//! the stream's first timestamp — not by RTP sequence number, so a 60 ms
//! packet fills three slots, two 10 ms packets fill the two halves of one
//! slot, and a 30 ms packet fills one slot and half of the next. A slot
//! played with one half missing (its other 10 ms packet lost) plays silence
//! in that half. Loss statistics still count RTP packets by sequence number.
//! The base follows the timestamp (see `FrameClock`), so the 32-bit
//! timestamp wrapping after 6 days changes nothing.
//!
//! [`Packetizer`] turns the voice engine's frames into RTP packets — sequence
//! numbers, timestamps +160 per tick, the marker bit on the first packet of a
//! talkspurt — and interleaves RFC 4733 digits when asked to send DTMF.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtmf::{DtmfDetector, DtmfEvent, DtmfGenerator, DEFAULT_END_TIMEOUT};
use crate::jitter::{extend, Concealer, JitterBuffer, JitterConfig, Playout, Push};
use crate::rtcp::{self, ReportBlock, RtcpPacket, SenderReport};
use crate::rtp::{RtpHeader, RtpPacket};
use crate::{Codec, DtmfDigit, Frame, MediaError, FRAME_SAMPLES};

/// Events queued beyond this are dropped oldest-first, so a peer cannot grow
/// a session's memory by flooding SSRC changes or digits.
const MAX_EVENTS: usize = 256;

/// The longest audio packet accepted, in milliseconds (RFC 3551 allows
/// G.711 frames of any multiple of 10 ms; 120 ms is beyond what any carrier
/// sends and still fits an ordinary MTU).
pub const MAX_PACKET_MS: usize = 120;
/// Samples in 10 ms, the G.711 packetisation unit.
const PART_SAMPLES: usize = FRAME_SAMPLES / 2;

/// What was negotiated for the leg, and tuning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Accepted audio payload types and their codecs (from the SDP answer).
    pub audio: Vec<(u8, Codec)>,
    /// The telephone-event payload type, if negotiated (commonly 101).
    pub telephone_event: Option<u8>,
    /// Jitter buffer limits.
    pub jitter: JitterConfig,
    /// How long the latched source must be silent before another source
    /// may take over (carriers do move media mid-call). Shorter helps
    /// recovery, longer resists a third party spraying packets at the port.
    pub relatch_after: Duration,
    /// RTP clock units after which a DTMF event with no E bit ends.
    pub dtmf_end_timeout: u32,
}

impl SessionConfig {
    /// A configuration for the negotiated payload types, default tuning.
    pub fn new(audio: Vec<(u8, Codec)>, telephone_event: Option<u8>) -> Self {
        SessionConfig {
            audio,
            telephone_event,
            jitter: JitterConfig::default(),
            relatch_after: Duration::from_secs(2),
            dtmf_end_timeout: DEFAULT_END_TIMEOUT,
        }
    }
}

impl Default for SessionConfig {
    /// PCMU (0), PCMA (8) and telephone-event 101: what most trunks offer.
    fn default() -> Self {
        SessionConfig::new(vec![(0, Codec::Pcmu), (8, Codec::Pcma)], Some(101))
    }
}

/// Something the call (or the driver) should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The first valid packet came from here: send our RTP to it.
    SourceLatched(SocketAddr),
    /// The latched source went quiet and another took over: send there now.
    SourceChanged {
        /// The previous source.
        from: SocketAddr,
        /// The new one.
        to: SocketAddr,
    },
    /// The sender's SSRC changed (a new stream, e.g. after a carrier moved
    /// the call to another media server); buffers were reset.
    SsrcChanged {
        /// The previous SSRC.
        from: u32,
        /// The new one.
        to: u32,
    },
    /// A key press, once per press.
    Dtmf(DtmfEvent),
    /// The peer sent an RTCP BYE.
    Bye {
        /// The reason, if given.
        reason: Option<String>,
    },
}

/// Reception counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SessionStats {
    /// Audio packets accepted.
    pub received: u64,
    /// Telephone-event packets accepted.
    pub dtmf_packets: u64,
    /// Audio packets expected from the sequence numbers.
    pub expected: u64,
    /// `expected - received` (negative with duplicates), RFC 3550 style.
    pub lost: i64,
    /// Dropped because their playout time had passed.
    pub late: u64,
    /// Dropped as duplicates.
    pub duplicate: u64,
    /// Dropped by the jitter buffer to cut delay.
    pub discarded: u64,
    /// Ticks played from concealment.
    pub concealed: u64,
    /// Times the jitter buffer ran dry.
    pub underruns: u64,
    /// Packets rejected: malformed, not negotiated, wrong size, foreign source.
    pub rejected: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Current jitter buffer target delay.
    pub target_delay: Duration,
    /// Current jitter buffer depth in frames.
    pub depth: usize,
}

/// The receive side of one call leg. Sans-IO: feed datagrams and ticks,
/// drain frames and events.
#[derive(Debug)]
pub struct RtpSession {
    config: SessionConfig,
    latched: Option<SocketAddr>,
    last_packet_at: Option<Instant>,
    ssrc: Option<u32>,
    jitter: JitterBuffer<Part>,
    concealer: Concealer,
    dtmf: DtmfDetector,
    /// Arrival time and sender clock at the last known end of a DTMF event,
    /// to time out an event whose end packets never come.
    last_dtmf: Option<(Instant, u32)>,
    seq: Option<SeqCounter>,
    /// Maps RTP timestamps to 20 ms frame numbers; `None` until the
    /// stream's first audio packet (and again after an SSRC change).
    clock: Option<FrameClock>,
    last_sr: Option<(u32, Instant)>,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
}

impl RtpSession {
    /// A session for the negotiated configuration, not yet latched.
    pub fn new(config: SessionConfig) -> Self {
        RtpSession {
            jitter: JitterBuffer::new(config.jitter),
            dtmf: DtmfDetector::new(config.dtmf_end_timeout),
            config,
            latched: None,
            last_packet_at: None,
            ssrc: None,
            concealer: Concealer::default(),
            last_dtmf: None,
            seq: None,
            clock: None,
            last_sr: None,
            events: VecDeque::new(),
            stats: SessionStats::default(),
        }
    }

    /// Feeds one datagram received on the RTP port at `now` from `source`.
    ///
    /// An error means the packet was dropped (and counted); the session is
    /// unaffected. Nothing here panics on any input.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        datagram: &[u8],
        source: SocketAddr,
    ) -> Result<(), MediaError> {
        let result = self.accept(now, datagram, source);
        if result.is_err() {
            self.stats.rejected += 1;
        }
        result
    }

    /// Feeds one datagram received on the RTCP port: remembers sender
    /// reports for our receiver reports, and reports a BYE.
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        datagram: &[u8],
        source: SocketAddr,
    ) -> Result<(), MediaError> {
        if let Some(latched) = self.latched {
            // RTCP comes from another port of the same host.
            if latched.ip() != source.ip() {
                return Err(MediaError::ForeignSource {
                    from: source,
                    latched,
                });
            }
        }
        for packet in rtcp::parse_compound(datagram)? {
            match packet {
                RtcpPacket::SenderReport(sr) if self.ssrc.is_none_or(|s| s == sr.ssrc) => {
                    self.last_sr = Some((rtcp::ntp_middle(sr.ntp), now));
                }
                RtcpPacket::Bye(bye) => self.push_event(SessionEvent::Bye { reason: bye.reason }),
                _ => {}
            }
        }
        Ok(())
    }

    /// Lets time pass without a packet: ends a DTMF event whose end packets
    /// were lost. Call it on every playout tick.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, rtp_at)) = self.last_dtmf {
            let elapsed = now.saturating_duration_since(at);
            let ticks = (elapsed.as_millis() * 8).min(u128::from(u32::MAX / 2)) as u32;
            self.dtmf.handle_time(rtp_at.wrapping_add(ticks));
            self.drain_dtmf();
        }
    }

    /// Forgets the latched source, e.g. after a re-INVITE moved the media:
    /// the next valid packet latches again.
    pub fn relatch(&mut self) {
        self.latched = None;
    }

    /// The frame for this 20 ms playout tick: decoded audio, or concealment
    /// when a packet is missing. `None` before the first audio is buffered.
    pub fn poll_frame(&mut self, now: Instant) -> Option<Frame> {
        let playout = match self.jitter.pop(now)? {
            Playout::Frame(part) => Playout::Frame(part.frame),
            Playout::Missing => {
                self.stats.concealed += 1;
                Playout::Missing
            }
        };
        Some(self.concealer.conceal(playout))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Where the peer's media comes from (and where ours should go).
    pub fn remote(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// The peer's current SSRC.
    pub fn remote_ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Reception counters.
    pub fn stats(&self) -> SessionStats {
        let jb = self.jitter.stats();
        let (expected, received) = self
            .seq
            .as_ref()
            .map_or((0, 0), |s| (s.expected(), s.received));
        SessionStats {
            expected,
            lost: expected as i64 - received as i64,
            late: jb.late,
            duplicate: jb.duplicate,
            discarded: jb.discarded,
            underruns: jb.underruns,
            jitter_ms: self.jitter.jitter().millis(),
            target_delay: self.jitter.target_delay(),
            depth: self.jitter.depth(),
            ..self.stats
        }
    }

    /// Jitter buffer depth in frames; never above its capacity.
    pub fn buffered(&self) -> usize {
        self.jitter.depth()
    }

    /// The reception report about the peer for our next RTCP SR/RR, and
    /// starts a new reporting interval. `None` before any audio.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let jitter = self.jitter.jitter().rtp_units();
        let last_sr = self.last_sr;
        Some(self.seq.as_mut()?.report_block(ssrc, jitter, last_sr, now))
    }

    fn accept(
        &mut self,
        now: Instant,
        datagram: &[u8],
        source: SocketAddr,
    ) -> Result<(), MediaError> {
        let packet = RtpPacket::parse(datagram)?;
        let pt = packet.payload_type;
        let is_dtmf = self.config.telephone_event == Some(pt);
        let codec = self
            .config
            .audio
            .iter()
            .find_map(|&(p, c)| (p == pt).then_some(c));
        if codec.is_none() && !is_dtmf {
            return Err(MediaError::PayloadType(pt));
        }
        // Check the size before latching, so a wrongly sized packet cannot
        // latch.
        let audio = match codec {
            Some(codec) if !is_dtmf => {
                let len = packet.payload().len();
                if len == 0 || len % PART_SAMPLES != 0 || len > MAX_PACKET_MS * 8 {
                    return Err(MediaError::FrameSize { len });
                }
                Some(codec)
            }
            _ => None,
        };
        self.latch(now, source)?;
        self.last_packet_at = Some(now);

        let Some(codec) = audio else {
            self.stats.dtmf_packets += 1;
            // Events share the stream's sequence space: count them for loss.
            if self.ssrc == Some(packet.ssrc) {
                if let Some(seq) = &mut self.seq {
                    seq.update(packet.sequence);
                }
            }
            self.dtmf
                .handle_packet(packet.timestamp, packet.payload())?;
            if let Ok(te) = crate::dtmf::TelephoneEvent::parse(packet.payload()) {
                let end = packet.timestamp.wrapping_add(u32::from(te.duration));
                self.last_dtmf = Some((now, end));
            }
            self.drain_dtmf();
            return Ok(());
        };

        // Only audio decides the stream's SSRC: some gateways send DTMF from
        // a separate SSRC, and that must not reset the audio every digit.
        match self.ssrc {
            Some(old) if old != packet.ssrc => {
                self.push_event(SessionEvent::SsrcChanged {
                    from: old,
                    to: packet.ssrc,
                });
                self.jitter.reset();
                self.dtmf.reset();
                self.seq = None;
                self.clock = None;
                self.ssrc = Some(packet.ssrc);
            }
            Some(_) => {}
            None => self.ssrc = Some(packet.ssrc),
        }
        self.stats.received += 1;
        match &mut self.seq {
            Some(seq) => seq.update(packet.sequence),
            None => self.seq = Some(SeqCounter::new(packet.sequence)),
        }
        // A talkspurt resuming after a key press ends an event that lost its
        // end packets.
        self.dtmf.handle_time(packet.timestamp);
        self.drain_dtmf();
        self.buffer_audio(
            now,
            codec,
            packet.timestamp,
            packet.sequence,
            packet.payload(),
        );
        Ok(())
    }

    /// Decodes a checked audio payload (a whole number of 10 ms) and buffers
    /// it as 20 ms frame parts by its timestamp.
    fn buffer_audio(
        &mut self,
        now: Instant,
        codec: Codec,
        timestamp: u32,
        sequence: u16,
        payload: &[u8],
    ) {
        let capacity = self.jitter.capacity() as i64;
        let clock = self.clock.get_or_insert_with(|| FrameClock::new(timestamp));
        let first = clock.half_of(timestamp, capacity);
        let parts = payload.len() / PART_SAMPLES;
        self.jitter.observe_arrival(now, timestamp);
        self.jitter.set_packet_frames(parts.div_ceil(2));
        let mut restarted = false;
        for (half, chunk) in (first..).zip(payload.chunks_exact(PART_SAMPLES)) {
            let mut part = Part {
                frame: Frame::silence(),
                halves: 0,
            };
            let at = (half.rem_euclid(2) as usize) * PART_SAMPLES;
            for (s, &b) in part.frame.samples_mut()[at..at + PART_SAMPLES]
                .iter_mut()
                .zip(chunk)
            {
                *s = codec.decode_sample(b);
            }
            part.halves = 1 << half.rem_euclid(2);
            // Frame numbers wrap like sequence numbers; the buffer extends them.
            let slot = half.div_euclid(2) as u16;
            if self.jitter.push_part(now, slot, part, Part::merge) == Push::Resync {
                restarted = true;
            }
        }
        if restarted {
            // A restarted stream: sequence statistics start over with it.
            self.seq = Some(SeqCounter::new(sequence));
        }
    }

    fn latch(&mut self, now: Instant, source: SocketAddr) -> Result<(), MediaError> {
        match self.latched {
            None => {
                self.latched = Some(source);
                self.push_event(SessionEvent::SourceLatched(source));
            }
            Some(latched) if latched == source => {}
            Some(latched) => {
                let quiet = self.last_packet_at.is_none_or(|at| {
                    now.saturating_duration_since(at) >= self.config.relatch_after
                });
                if !quiet {
                    return Err(MediaError::ForeignSource {
                        from: source,
                        latched,
                    });
                }
                self.latched = Some(source);
                self.push_event(SessionEvent::SourceChanged {
                    from: latched,
                    to: source,
                });
            }
        }
        Ok(())
    }

    fn drain_dtmf(&mut self) {
        while let Some(event) = self.dtmf.poll_event() {
            self.push_event(SessionEvent::Dtmf(event));
        }
        if !self.dtmf.is_active() {
            self.last_dtmf = None;
        }
    }

    fn push_event(&mut self, event: SessionEvent) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

/// 20 ms worth of one stream's audio in the jitter buffer, possibly only
/// one 10 ms half of it so far.
#[derive(Debug)]
struct Part {
    frame: Frame,
    /// Bit 0: the first 10 ms is here; bit 1: the second.
    halves: u8,
}

impl Part {
    /// Folds `other` into `self`; false when it adds nothing (a duplicate).
    fn merge(&mut self, other: Part) -> bool {
        let new = other.halves & !self.halves;
        if new == 0 {
            return false;
        }
        for h in 0..2 {
            if new & (1 << h) != 0 {
                let range = h * PART_SAMPLES..(h + 1) * PART_SAMPLES;
                self.frame.samples_mut()[range.clone()]
                    .copy_from_slice(&other.frame.samples()[range]);
            }
        }
        self.halves |= new;
        true
    }
}

/// RTP timestamp → 10 ms half-frame number, relative to a base timestamp.
///
/// The base moves by whole multiples of 65 536 frames when the stream gets
/// far from it, so the 16-bit frame numbers handed to the jitter buffer stay
/// continuous across the 32-bit timestamp wrap. A jump further than the
/// jitter buffer's capacity (a sender restart with a new random timestamp)
/// re-bases on the new timestamp, so 20 ms packets stay aligned with slots.
#[derive(Debug)]
struct FrameClock {
    base: u32,
    /// The highest half-frame number seen.
    highest: i64,
}

impl FrameClock {
    /// 65 536 frames × 160 samples × 64: below 2^31, frame-number neutral.
    const REBASE: u32 = 160 * 65_536 * 64;

    fn new(timestamp: u32) -> Self {
        FrameClock {
            base: timestamp,
            highest: 0,
        }
    }

    /// The half-frame number of `timestamp`; `capacity` in frames.
    fn half_of(&mut self, timestamp: u32, capacity: i64) -> i64 {
        let mut offset = i64::from(timestamp.wrapping_sub(self.base) as i32);
        if offset > i64::from(Self::REBASE) {
            self.base = self.base.wrapping_add(Self::REBASE);
            self.highest -= i64::from(Self::REBASE) / PART_SAMPLES as i64;
            offset -= i64::from(Self::REBASE);
        }
        let half = offset.div_euclid(PART_SAMPLES as i64);
        if (half - self.highest).abs() >= 2 * capacity {
            *self = FrameClock::new(timestamp);
            return 0;
        }
        self.highest = self.highest.max(half);
        half
    }
}

/// Sequence accounting of one received RTP stream (RFC 3550 A.3): the
/// extended highest sequence number, packets received, and the interval
/// counters of the next reception report. Shared by [`RtpSession`] and the
/// bridge's forwarding path in `switchboard-rtp`.
#[derive(Debug, Clone)]
pub struct SeqCounter {
    base: u64,
    max: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
}

impl SeqCounter {
    /// Starts counting at the stream's first packet.
    pub fn new(sequence: u16) -> Self {
        let ext = u64::from(sequence) + (1 << 16);
        SeqCounter {
            base: ext,
            max: ext,
            received: 1,
            expected_prior: 0,
            received_prior: 0,
        }
    }

    /// Counts one more packet.
    pub fn update(&mut self, sequence: u16) {
        let ext = extend(sequence, self.max);
        self.max = self.max.max(ext);
        self.base = self.base.min(ext);
        self.received += 1;
    }

    /// Packets the sequence numbers say were sent.
    pub fn expected(&self) -> u64 {
        self.max - self.base + 1
    }

    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets lost so far (negative with duplicates).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// The reception report block for `ssrc`, and starts a new reporting
    /// interval. `jitter` in RTP timestamp units; `last_sr` is the middle of
    /// the peer's last sender report's NTP time and when it arrived.
    pub fn report_block(
        &mut self,
        ssrc: u32,
        jitter: u32,
        last_sr: Option<(u32, Instant)>,
        now: Instant,
    ) -> ReportBlock {
        let expected = self.expected();
        let interval_expected = expected.saturating_sub(self.expected_prior);
        let interval_received = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let interval_lost = interval_expected.saturating_sub(interval_received);
        let fraction_lost = (interval_lost << 8)
            .checked_div(interval_expected)
            .map_or(0, |f| f.min(255) as u8);
        let (last_sr, delay_since_last_sr) = match last_sr {
            Some((middle, at)) => {
                let delay = now.saturating_duration_since(at).as_secs_f64() * 65_536.0;
                (middle, delay.min(f64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            highest_sequence: self.max as u32,
            jitter,
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// Most digits waiting to be sent.
const MAX_QUEUED_DIGITS: usize = 32;
/// Ticks of audio between two digits (60 ms): receivers need a gap to tell
/// "55" from a long "5".
const DTMF_GAP_TICKS: u32 = 3;

/// Builds the RTP packets we send on one leg, one call per 20 ms tick.
///
/// The initial sequence number, timestamp and SSRC should be random (RFC
/// 3550 §5.1); they are inputs so this stays deterministic in tests.
#[derive(Debug)]
pub struct Packetizer {
    codec: Codec,
    payload_type: u8,
    telephone_event: Option<u8>,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    talkspurt_start: bool,
    digits: VecDeque<(DtmfDigit, u32)>,
    sending: Option<(DtmfGenerator, u32)>,
    gap: u32,
    packets_sent: u32,
    octets_sent: u32,
}

impl Packetizer {
    /// A packetizer for the negotiated codec and payload types.
    pub fn new(
        codec: Codec,
        payload_type: u8,
        telephone_event: Option<u8>,
        ssrc: u32,
        initial_sequence: u16,
        initial_timestamp: u32,
    ) -> Self {
        Packetizer {
            codec,
            payload_type,
            telephone_event,
            ssrc,
            sequence: initial_sequence,
            timestamp: initial_timestamp,
            talkspurt_start: true,
            digits: VecDeque::new(),
            sending: None,
            gap: 0,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// The packet for this 20 ms tick.
    ///
    /// `frame` is the audio to send, or `None` when there is nothing to say
    /// (nothing is sent, the clock still advances, and the next audio packet
    /// carries the marker bit). While a digit is being sent its packets take
    /// the place of the audio, which is dropped.
    pub fn packetize(&mut self, frame: Option<&Frame>) -> Option<Vec<u8>> {
        let tick_ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);

        if self.sending.is_none() && self.gap == 0 {
            if let Some((digit, duration)) = self.digits.pop_front() {
                self.sending = Some((DtmfGenerator::new(digit, duration, 10), tick_ts));
            }
        }
        if let (Some((generator, start_ts)), Some(pt)) = (&mut self.sending, self.telephone_event) {
            let start_ts = *start_ts;
            if let Some(packet) = generator.next() {
                self.talkspurt_start = true; // audio after a digit starts a talkspurt
                return Some(self.build(packet.marker, pt, start_ts, &packet.payload));
            }
            self.sending = None;
            self.gap = DTMF_GAP_TICKS;
        }
        self.gap = self.gap.saturating_sub(1);

        let Some(frame) = frame else {
            self.talkspurt_start = true;
            return None;
        };
        let marker = std::mem::take(&mut self.talkspurt_start);
        let payload = self.codec.encode(frame);
        Some(self.build(marker, self.payload_type, tick_ts, &payload))
    }

    /// Queues a key press of `duration` (clamped to 20 ms – 8 s) to be sent
    /// on the next free ticks.
    pub fn send_dtmf(&mut self, digit: DtmfDigit, duration: Duration) -> Result<(), MediaError> {
        if self.telephone_event.is_none() {
            return Err(MediaError::DtmfNotNegotiated);
        }
        if self.digits.len() >= MAX_QUEUED_DIGITS {
            return Err(MediaError::DtmfQueueFull);
        }
        let units = (duration.as_millis() * 8).min(u128::from(u16::MAX)) as u32;
        self.digits.push_back((digit, units));
        Ok(())
    }

    /// Whether a digit is being sent or waiting.
    pub fn is_sending_dtmf(&self) -> bool {
        self.sending.is_some() || !self.digits.is_empty()
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The RTP timestamp the next tick will carry.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Packets sent so far.
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    /// An RTCP sender report for wallclock `ntp` (64-bit NTP format, taken
    /// by the driver at the time of the next tick), with reception reports.
    pub fn sender_report(&self, ntp: u64, reports: Vec<ReportBlock>) -> Vec<u8> {
        let mut out = Vec::new();
        SenderReport {
            ssrc: self.ssrc,
            ntp,
            rtp_timestamp: self.timestamp,
            packet_count: self.packets_sent,
            octet_count: self.octets_sent,
            reports,
        }
        .write(&mut out);
        out
    }

    fn build(&mut self, marker: bool, payload_type: u8, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let packet = RtpHeader {
            marker,
            payload_type,
            sequence: self.sequence,
            timestamp,
            ssrc: self.ssrc,
        }
        .to_packet(payload);
        self.sequence = self.sequence.wrapping_add(1);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload.len() as u32);
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::{DtmfEnd, TelephoneEvent};

    const TICK: Duration = crate::FRAME_DURATION;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 5], port))
    }

    fn tone(amplitude: i16) -> Frame {
        let mut f = Frame::silence();
        for (i, s) in f.samples_mut().iter_mut().enumerate() {
            *s = if i % 2 == 0 { amplitude } else { -amplitude };
        }
        f
    }

    fn audio(seq: u16, ts: u32, ssrc: u32, frame: &Frame) -> Vec<u8> {
        RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc,
        }
        .to_packet(&Codec::Pcmu.encode(frame))
    }

    fn dtmf(seq: u16, ts: u32, marker: bool, event: TelephoneEvent) -> Vec<u8> {
        RtpHeader {
            marker,
            payload_type: 101,
            sequence: seq,
            timestamp: ts,
            ssrc: 7,
        }
        .to_packet(&event.to_bytes())
    }

    fn events(s: &mut RtpSession) -> Vec<SessionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn latches_plays_and_rejects_others() {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        let f = tone(4000);
        // A scanner's garbage first must not latch.
        assert!(s.handle_packet(t0, b"GET / HTTP/1.1\r\n", addr(1)).is_err());
        assert!(s.remote().is_none());
        s.handle_packet(t0, &audio(1, 0, 7, &f), addr(4000))
            .expect("valid");
        assert_eq!(
            events(&mut s),
            vec![SessionEvent::SourceLatched(addr(4000))]
        );
        // Someone else while the peer is active: dropped.
        let err = s.handle_packet(t0 + TICK, &audio(2, 160, 9, &f), addr(5000));
        assert!(matches!(err, Err(MediaError::ForeignSource { .. })));
        // Unnegotiated payload type.
        let mut g722 = audio(2, 160, 7, &f);
        g722[1] = 9;
        assert!(matches!(
            s.handle_packet(t0 + TICK, &g722, addr(4000)),
            Err(MediaError::PayloadType(9))
        ));
        let out = s.poll_frame(t0 + TICK).expect("playing");
        let back = Codec::Pcmu.decode(&Codec::Pcmu.encode(&f)).expect("frame");
        assert_eq!(out, back);
        assert_eq!(s.stats().rejected, 3);
        assert_eq!(s.stats().received, 1);
    }

    /// A continuous test signal, sample `i` of the stream, as PCMU bytes.
    fn signal(i: usize) -> u8 {
        let phase = i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0;
        Codec::Pcmu.encode_sample((phase.sin() * 8000.0) as i16)
    }

    /// Feeds `total_ms` of the signal in `ptime` ms packets, each arriving
    /// when its last sample was captured (skipping packets in `lost`), ticks
    /// every 20 ms, and returns the frames played and the statistics as of
    /// the last packet (the ticks after it conceal the end of the stream).
    fn play(ptime: usize, total_ms: usize, lost: &[u16]) -> (Vec<Frame>, SessionStats) {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        let per_packet = ptime * 8;
        let ts0: u32 = 0xFFFF_F000; // wraps during the stream
        let mut packets = (0..total_ms / ptime).map(|n| {
            let payload: Vec<u8> = (n * per_packet..(n + 1) * per_packet).map(signal).collect();
            let seq = 65_530u16.wrapping_add(n as u16);
            let header = RtpHeader {
                marker: n == 0,
                payload_type: 0,
                sequence: seq,
                timestamp: ts0.wrapping_add((n * per_packet) as u32),
                ssrc: 7,
            };
            let arrival = t0 + Duration::from_millis(((n + 1) * ptime) as u64);
            (arrival, seq, header.to_packet(&payload))
        });
        let mut next = packets.next();
        let mut frames = Vec::new();
        let mut stats = None;
        for tick in 0..(total_ms / 20 + 10) {
            let now = t0 + TICK * tick as u32;
            while let Some((arrival, seq, packet)) = next.take() {
                if arrival > now {
                    next = Some((arrival, seq, packet));
                    break;
                }
                if !lost.contains(&seq) {
                    s.handle_packet(arrival, &packet, addr(4000))
                        .expect("accepted");
                }
                next = packets.next();
                if next.is_none() {
                    stats = Some(s.stats());
                }
            }
            if let Some(frame) = s.poll_frame(now) {
                frames.push(frame);
            }
        }
        (frames, stats.unwrap_or_else(|| s.stats()))
    }

    /// The played samples from the first non-silent one on.
    fn played(frames: &[Frame]) -> Vec<i16> {
        let all: Vec<i16> = frames.iter().flat_map(|f| *f.samples()).collect();
        let start = all.iter().position(|&x| x != 0).unwrap_or(all.len());
        all[start..].to_vec()
    }

    fn expected(samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| Codec::Pcmu.decode_sample(signal(i)))
            .collect()
    }

    #[test]
    fn any_ptime_is_reframed_into_continuous_20ms_frames() {
        for ptime in [10, 20, 30, 40, 60, 120] {
            let (frames, stats) = play(ptime, 1_200, &[]);
            let got = played(&frames);
            let want = expected(1_200 * 8);
            // Everything sent is played in order, without gaps or repeats.
            assert!(got.len() >= want.len(), "{ptime} ms: {} samples", got.len());
            // The first sample is sin(0) = 0 and skipped by `played`.
            assert_eq!(got[..want.len() - 1], want[1..], "{ptime} ms");
            assert_eq!(stats.rejected, 0, "{ptime} ms");
            assert_eq!(stats.lost, 0, "{ptime} ms");
            assert_eq!(stats.concealed, 0, "{ptime} ms: {stats:?}");
            assert_eq!(stats.received, (1_200 / ptime) as u64, "{ptime} ms");
        }
    }

    #[test]
    fn a_lost_10ms_packet_silences_only_its_half_frame() {
        // Packet 4 (65_530 + 10, wrapped) is the 11th: samples 800..880, the first half of
        // frame 5.
        let (frames, stats) = play(10, 400, &[4]);
        let got = played(&frames);
        let want = expected(400 * 8);
        assert_eq!(got[..799], want[1..800]);
        assert!(got[799..879].iter().all(|&x| x == 0));
        assert_eq!(got[879..want.len() - 1], want[880..]);
        assert_eq!(stats.lost, 1);
        assert_eq!(stats.concealed, 0);
    }

    #[test]
    fn a_lost_60ms_packet_is_concealed_for_three_ticks() {
        let (_, stats) = play(60, 600, &[65_533]);
        assert_eq!(stats.lost, 1);
        assert_eq!(stats.concealed, 3);
        assert_eq!(stats.rejected, 0);
    }

    #[test]
    fn rejects_payloads_that_are_not_whole_10ms_or_too_long() {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        for len in [0, 1, 79, 200, 968, 1_040] {
            let packet = RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: 1,
                timestamp: 0,
                ssrc: 7,
            }
            .to_packet(&vec![0xFF; len]);
            assert!(
                matches!(
                    s.handle_packet(t0, &packet, addr(4000)),
                    Err(MediaError::FrameSize { .. })
                ),
                "{len} bytes"
            );
        }
        assert!(s.remote().is_none(), "a wrongly sized packet latched");
        assert_eq!(s.stats().rejected, 6);
    }

    #[test]
    fn relatches_after_the_source_goes_quiet_and_reports_ssrc_change() {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        let f = tone(1000);
        s.handle_packet(t0, &audio(1, 0, 7, &f), addr(4000))
            .expect("valid");
        let later = t0 + Duration::from_secs(3);
        s.handle_packet(later, &audio(500, 99_000, 8, &f), addr(4002))
            .expect("relatched");
        assert_eq!(
            events(&mut s),
            vec![
                SessionEvent::SourceLatched(addr(4000)),
                SessionEvent::SourceChanged {
                    from: addr(4000),
                    to: addr(4002)
                },
                SessionEvent::SsrcChanged { from: 7, to: 8 },
            ]
        );
        assert_eq!(s.remote(), Some(addr(4002)));
        // The new stream's sequence numbers are not "late".
        s.handle_packet(later + TICK, &audio(501, 99_160, 8, &f), addr(4002))
            .expect("valid");
        assert_eq!(s.stats().late, 0);
        assert_eq!(s.stats().lost, 0);
    }

    #[test]
    fn dtmf_without_marker_and_with_three_ends_is_one_digit() {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        let ev = |end, duration| TelephoneEvent {
            event: 3,
            end,
            volume: 10,
            duration,
        };
        let mut seq = 10;
        for (i, (end, d)) in [
            (false, 160),
            (false, 320),
            (true, 480),
            (true, 480),
            (true, 480),
        ]
        .into_iter()
        .enumerate()
        {
            seq += 1;
            s.handle_packet(
                t0 + TICK * i as u32,
                &dtmf(seq, 1600, false, ev(end, d)),
                addr(4000),
            )
            .expect("valid");
        }
        let digits: Vec<_> = events(&mut s)
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Dtmf(d) => Some((d.digit.as_char(), d.duration, d.end)),
                _ => None,
            })
            .collect();
        assert_eq!(digits, vec![('3', 480, DtmfEnd::EndBit)]);
        assert_eq!(s.stats().dtmf_packets, 5);
    }

    #[test]
    fn dtmf_without_end_packets_times_out_on_the_tick() {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        let ev = TelephoneEvent {
            event: 11,
            end: false,
            volume: 10,
            duration: 160,
        };
        s.handle_packet(t0, &dtmf(1, 0, true, ev), addr(4000))
            .expect("valid");
        s.handle_timeout(t0 + Duration::from_millis(150));
        assert!(!events(&mut s)
            .iter()
            .any(|e| matches!(e, SessionEvent::Dtmf(_))));
        s.handle_timeout(t0 + Duration::from_millis(250));
        let got: Vec<_> = events(&mut s)
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Dtmf(d) => Some((d.digit.as_char(), d.end)),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![('#', DtmfEnd::Timeout)]);
    }

    #[test]
    fn loss_is_concealed_and_counted() {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        let f = tone(8000);
        let full = Codec::Pcmu.decode_sample(Codec::Pcmu.encode_sample(8000));
        let mut levels = Vec::new();
        let mut now = t0;
        // The driver's tick: packet 2 never arrives.
        for seq in 0u16..5 {
            if seq != 2 {
                s.handle_packet(now, &audio(seq, u32::from(seq) * 160, 7, &f), addr(4000))
                    .expect("valid");
            }
            levels.push(s.poll_frame(now).expect("playing").samples()[0]);
            now += TICK;
        }
        // The gap is concealed with a faded repeat, and playout resumes on
        // time: no delay is added for a packet that is simply gone.
        assert_eq!(levels, vec![full, full, full / 2, full, full]);
        let stats = s.stats();
        assert_eq!((stats.expected, stats.lost, stats.concealed), (5, 1, 1));
        let block = s.report_block(now).expect("audio seen");
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.fraction_lost, 51); // 1/5 of 256
        assert_eq!(block.ssrc, 7);
    }

    #[test]
    fn rtcp_sender_report_feeds_lsr_and_bye_is_reported() {
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        s.handle_packet(t0, &audio(1, 0, 7, &tone(10)), addr(4000))
            .expect("valid");
        let mut buf = Vec::new();
        SenderReport {
            ssrc: 7,
            ntp: 0x0000_1234_5678_0000,
            ..SenderReport::default()
        }
        .write(&mut buf);
        rtcp::Bye {
            ssrcs: vec![7],
            reason: Some("bye".into()),
        }
        .write(&mut buf);
        s.handle_rtcp(t0, &buf, addr(4001)).expect("valid");
        let block = s
            .report_block(t0 + Duration::from_millis(500))
            .expect("audio seen");
        assert_eq!(block.last_sr, 0x1234_5678);
        assert_eq!(block.delay_since_last_sr, 32_768);
        assert!(events(&mut s).contains(&SessionEvent::Bye {
            reason: Some("bye".into())
        }));
        // RTCP from another host is refused.
        assert!(s
            .handle_rtcp(t0, &buf, SocketAddr::from(([198, 51, 100, 1], 4001)))
            .is_err());
    }

    #[test]
    fn packetizer_numbers_marks_and_interleaves_dtmf() {
        let mut p = Packetizer::new(Codec::Pcma, 8, Some(101), 0xABCD, 65_535, 1000);
        let f = tone(500);
        let parse = |b: &[u8]| {
            let pkt = RtpPacket::parse(b).expect("valid");
            (pkt.payload_type, pkt.marker, pkt.sequence, pkt.timestamp)
        };
        let a = p.packetize(Some(&f)).expect("audio");
        let b = p.packetize(Some(&f)).expect("audio");
        assert_eq!(parse(&a), (8, true, 65_535, 1000));
        assert_eq!(parse(&b), (8, false, 0, 1160));
        // Silence: nothing sent, clock runs, next packet marks a talkspurt.
        assert!(p.packetize(None).is_none());
        let c = p.packetize(Some(&f)).expect("audio");
        assert_eq!(parse(&c), (8, true, 1, 1480));
        assert_eq!(RtpPacket::parse(&c).expect("valid").payload().len(), 160);

        // A 60 ms digit: 3 ticks + 2 end retransmissions, same timestamp.
        p.send_dtmf(
            DtmfDigit::from_char('9').expect("key"),
            Duration::from_millis(60),
        )
        .expect("negotiated");
        let digit: Vec<_> = (0..5)
            .map(|_| parse(&p.packetize(Some(&f)).expect("dtmf")))
            .collect();
        assert_eq!(
            digit,
            vec![
                (101, true, 2, 1640),
                (101, false, 3, 1640),
                (101, false, 4, 1640),
                (101, false, 5, 1640),
                (101, false, 6, 1640),
            ]
        );
        // Audio resumes with a marker and the clock that kept running.
        let next = parse(&p.packetize(Some(&f)).expect("audio"));
        assert_eq!(next, (8, true, 7, 1640 + 5 * 160));
        assert_eq!(p.packets_sent(), 9);
        assert!(!p.is_sending_dtmf());
    }

    #[test]
    fn packetizer_round_trips_through_a_session() {
        let mut p = Packetizer::new(Codec::Pcmu, 0, Some(101), 1, 100, 0);
        let mut s = RtpSession::new(SessionConfig::default());
        let t0 = Instant::now();
        p.send_dtmf(
            DtmfDigit::from_char('4').expect("key"),
            Duration::from_millis(100),
        )
        .expect("negotiated");
        for i in 0..20u32 {
            if let Some(pkt) = p.packetize(Some(&tone(3000))) {
                s.handle_packet(t0 + TICK * i, &pkt, addr(4000))
                    .expect("valid");
            }
        }
        let digits: Vec<_> = events(&mut s)
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Dtmf(d) => Some(d.digit.as_char()),
                _ => None,
            })
            .collect();
        assert_eq!(digits, vec!['4']);
        assert!(s.stats().received >= 10);
    }

    #[test]
    fn dtmf_requires_negotiation_and_the_queue_is_bounded() {
        let digit = DtmfDigit::from_char('1').expect("key");
        let mut none = Packetizer::new(Codec::Pcmu, 0, None, 1, 0, 0);
        assert!(matches!(
            none.send_dtmf(digit, Duration::from_millis(100)),
            Err(MediaError::DtmfNotNegotiated)
        ));
        let mut p = Packetizer::new(Codec::Pcmu, 0, Some(101), 1, 0, 0);
        for _ in 0..MAX_QUEUED_DIGITS {
            p.send_dtmf(digit, Duration::from_millis(100))
                .expect("room");
        }
        assert!(matches!(
            p.send_dtmf(digit, Duration::from_millis(100)),
            Err(MediaError::DtmfQueueFull)
        ));
    }

    #[test]
    fn sender_report_counts_what_was_sent() {
        let mut p = Packetizer::new(Codec::Pcmu, 0, None, 42, 0, 0);
        for _ in 0..3 {
            p.packetize(Some(&Frame::silence()));
        }
        let sr = p.sender_report(1 << 32, vec![]);
        let parsed = rtcp::parse_compound(&sr).expect("valid");
        let [RtcpPacket::SenderReport(sr)] = parsed.as_slice() else {
            panic!("one SR: {parsed:?}")
        };
        assert_eq!(
            (sr.ssrc, sr.packet_count, sr.octet_count, sr.rtp_timestamp),
            (42, 3, 480, 480)
        );
    }
}
