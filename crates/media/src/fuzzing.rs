//! Fuzz target bodies, shared by `fuzz/fuzz_targets/*.rs` (libFuzzer, on
//! nightly) and by `tests/fuzz_corpus.rs` (stable `cargo test`: the checked-in
//! seed corpus plus a few thousand deterministic mutations), so the targets
//! can never stop compiling unnoticed.
//!
//! Each function takes arbitrary bytes and panics only when an invariant
//! breaks — that panic is the fuzzer's finding.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtmf::{DtmfDetector, TelephoneEvent};
use crate::jitter::{JitterBuffer, JitterConfig};
use crate::rtcp::{self, RtcpPacket};
use crate::rtp::RtpPacket;
use crate::{RtpSession, SessionConfig};

/// RTP parsing: never panics; whatever parses re-serialises to a packet
/// that parses to the same header and payload.
pub fn rtp_packet(data: &[u8]) {
    if let Ok(packet) = RtpPacket::parse(data) {
        let rebuilt = packet.header().to_packet(packet.payload());
        let again = RtpPacket::parse(&rebuilt);
        assert!(again.is_ok(), "a built packet does not parse");
        if let Ok(again) = again {
            assert_eq!(again.header(), packet.header());
            assert_eq!(again.payload(), packet.payload());
        }
        let _ = packet.csrcs().count();
    }
}

/// Compound RTCP parsing: never panics; parsed reports re-serialise to
/// packets that parse to the same values.
pub fn rtcp_packet(data: &[u8]) {
    let Ok(packets) = rtcp::parse_compound(data) else {
        return;
    };
    for packet in packets {
        let mut out = Vec::new();
        match &packet {
            RtcpPacket::SenderReport(sr) => sr.write(&mut out),
            RtcpPacket::ReceiverReport(rr) => rr.write(&mut out),
            _ => continue,
        }
        assert_eq!(rtcp::parse_compound(&out).ok(), Some(vec![packet]));
    }
}

/// RFC 4733 payloads: parsing never panics and round-trips; a detector fed
/// the input as 8-byte records `[timestamp: 4][payload: 4]` never panics.
pub fn dtmf_payload(data: &[u8]) {
    if let Ok(event) = TelephoneEvent::parse(data) {
        let bytes = event.to_bytes();
        let again = TelephoneEvent::parse(&bytes).map(|e| e.to_bytes());
        assert_eq!(again.ok(), Some(bytes), "payload round-trip");
    }
    let mut detector = DtmfDetector::default();
    for record in data.chunks(8) {
        let (ts, payload) = record.split_at(record.len().min(4));
        let mut ts_bytes = [0u8; 4];
        ts_bytes[..ts.len()].copy_from_slice(ts);
        let ts = u32::from_be_bytes(ts_bytes);
        let _ = detector.handle_packet(ts, payload);
        detector
            .handle_time(ts.wrapping_add(u32::from(payload.first().copied().unwrap_or(0)) << 8));
    }
    while detector.poll_event().is_some() {}
}

/// A whole receive session fed a stream of datagrams: never panics, the
/// jitter buffer never exceeds its capacity.
///
/// Input: records of `[len: u8][flags: u8][datagram: len bytes]`; `flags`
/// picks the source address (bits 0–1), how far the clock moves (bits 2–5,
/// in 20 ms steps), whether the datagram goes to the RTCP handler (bit 6)
/// and whether a playout tick follows (bit 7).
pub fn rtp_session(data: &[u8]) {
    let config = SessionConfig::default();
    let capacity = config.jitter.capacity;
    let mut session = RtpSession::new(config);
    let mut now = Instant::now();
    let mut rest = data;
    while let [len, flags, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        let source = SocketAddr::from(([192, 0, 2, flags & 0x03], 4000));
        now += Duration::from_millis(20 * u64::from((flags >> 2) & 0x0F));
        if flags & 0x40 != 0 {
            let _ = session.handle_rtcp(now, datagram, source);
        } else {
            let _ = session.handle_packet(now, datagram, source);
        }
        if flags & 0x80 != 0 {
            let _ = session.poll_frame(now);
            session.handle_timeout(now);
            let _ = session.report_block(now);
        }
        assert!(session.buffered() <= capacity);
        while session.poll_event().is_some() {}
    }
    let _ = session.stats();
}

/// The jitter buffer alone, fed arbitrary packets: never panics, never
/// holds more than its capacity, yields exactly one item per tick once
/// playing, and never yields an item twice.
///
/// Input: records of 6 bytes `[sequence: 2][timestamp-delta: 2][op: 1]
/// [advance: 1]`: `op` bit 0 pushes a whole packet, bit 1 pushes a part
/// (merging), bit 2 pops; `advance` moves the clock in milliseconds.
pub fn jitter_buffer(data: &[u8]) {
    let config = JitterConfig {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(120),
        capacity: 16,
    };
    let mut jb: JitterBuffer<u64> = JitterBuffer::new(config);
    let mut now = Instant::now();
    let mut timestamp = 0u32;
    let mut id = 0u64;
    let mut seen = std::collections::HashSet::new();
    for record in data.chunks_exact(6) {
        let sequence = u16::from_be_bytes([record[0], record[1]]);
        timestamp = timestamp.wrapping_add(u32::from(u16::from_be_bytes([record[2], record[3]])));
        let op = record[4];
        now += Duration::from_millis(u64::from(record[5]));
        if op & 1 != 0 {
            id += 1;
            jb.push(now, sequence, timestamp, id);
        }
        if op & 2 != 0 {
            id += 1;
            jb.observe_arrival(now, timestamp);
            jb.set_packet_frames(usize::from(op >> 4));
            jb.push_part(now, sequence, id, |_, _| op & 8 != 0);
        }
        if op & 4 != 0 {
            if let Some(crate::jitter::Playout::Frame(item)) = jb.pop(now) {
                assert!(seen.insert(item), "item {item} played twice");
            }
        }
        assert!(jb.depth() <= jb.capacity());
    }
}

/// The stable stand-in for a fuzzer: runs `body` over every file in
/// `corpus` (a `fuzz/corpus/<target>` directory), then over `iterations`
/// deterministic mutations of them (bit flips, truncations, splices,
/// duplicated runs, random bytes), each at most `max_len` bytes. Returns
/// how many seeds were read. A missing directory is an empty corpus.
pub fn exercise(
    corpus: &std::path::Path,
    iterations: usize,
    max_len: usize,
    body: fn(&[u8]),
) -> usize {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(corpus)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .collect();
    for seed in &seeds {
        body(seed);
    }
    let count = seeds.len();
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    let mut rng = Rng(0x5EED_0FC0_FFEE ^ count as u64);
    for _ in 0..iterations {
        let base = &seeds[rng.below(seeds.len())];
        let mut input = base.clone();
        for _ in 0..=rng.below(4) {
            mutate(&mut rng, &mut input, &seeds);
        }
        input.truncate(max_len);
        body(&input);
    }
    count
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let len = input.len();
    match rng.below(7) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = [0x00, 0xFF, 0x7F, 0x80, b'\r', b'\n', b':', b' '][rng.below(8)];
        }
        2 => input.truncate(rng.below(len + 1)),
        3 => {
            let other = &seeds[rng.below(seeds.len())];
            let at = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.splice(at..at, other[from..].iter().copied().take(64));
        }
        4 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            let run = input[start..end].to_vec();
            for _ in 0..=rng.below(8) {
                input.splice(start..start, run.iter().copied());
            }
        }
        5 => {
            let n = rng.below(64);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        _ => {
            let n = rng.below(256);
            *input = (0..n).map(|_| rng.next() as u8).collect();
        }
    }
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
