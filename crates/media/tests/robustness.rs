//! Whatever arrives on a public RTP port — scanners, garbage, truncated or
//! mutated packets, floods of valid-looking ones — the audio path must not
//! panic and must not grow. A deterministic stand-in for the fuzz targets in
//! `fuzz/`, so every `cargo test` runs it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_media::dtmf::{DtmfDetector, TelephoneEvent};
use switchboard_media::rtcp::{self, ReceiverReport, ReportBlock, SenderReport};
use switchboard_media::rtp::{RtpHeader, RtpPacket};
use switchboard_media::{Codec, Frame, RtpSession, SessionConfig};

/// xorshift64*: tiny, deterministic, good enough to shake parsers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn valid_packets() -> Vec<Vec<u8>> {
    let audio = RtpHeader {
        marker: true,
        payload_type: 0,
        sequence: 1,
        timestamp: 160,
        ssrc: 7,
    }
    .to_packet(&Codec::Pcmu.encode(&Frame::silence()));
    let dtmf = RtpHeader {
        marker: false,
        payload_type: 101,
        sequence: 2,
        timestamp: 320,
        ssrc: 7,
    }
    .to_packet(
        &TelephoneEvent {
            event: 5,
            end: true,
            volume: 10,
            duration: 800,
        }
        .to_bytes(),
    );
    let mut compound = Vec::new();
    SenderReport {
        ssrc: 7,
        ntp: 1 << 40,
        reports: vec![ReportBlock::default()],
        ..SenderReport::default()
    }
    .write(&mut compound);
    ReceiverReport {
        ssrc: 7,
        reports: vec![ReportBlock::default(); 2],
    }
    .write(&mut compound);
    rtcp::Bye {
        ssrcs: vec![7],
        reason: Some("done".into()),
    }
    .write(&mut compound);
    vec![audio, dtmf, compound]
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    match rng.below(4) {
        0 => {
            let n = rng.below(p.len() as u64 + 1) as usize;
            p.truncate(n);
        }
        1 => {
            for _ in 0..=rng.below(4) {
                if !p.is_empty() {
                    let i = rng.below(p.len() as u64) as usize;
                    let b = rng.next() as u8;
                    p[i] = b;
                }
            }
        }
        2 => {
            // Header flag soup: padding, extension, CSRC count, RTCP counts.
            if let Some(b0) = p.first_mut() {
                *b0 = 0x80 | (rng.next() as u8 & 0x3F);
            }
        }
        _ => {
            let n = rng.below(64) as usize;
            let extra = rng.bytes(n);
            p.extend_from_slice(&extra);
        }
    }
    p
}

/// Random bytes shaped enough like RTP (version 2, a negotiated payload
/// type) to get past the parser into latching, SSRC tracking, the jitter
/// buffer and the DTMF detector.
fn plausible_rtp(rng: &mut Rng) -> Vec<u8> {
    let len = 12 + rng.below(200) as usize;
    let mut p = rng.bytes(len);
    p[0] = 0x80 | (rng.next() as u8 & 0x30); // maybe padding/extension, no CSRC
    p[1] = [0u8, 8, 101, 0x80, 0x88, 0xE5][rng.below(6) as usize];
    if rng.below(2) == 0 {
        p.truncate(12);
        let n = if rng.below(2) == 0 { 160 } else { 4 };
        p.extend_from_slice(&rng.bytes(n));
    }
    p
}

#[test]
fn garbage_never_panics_and_memory_stays_bounded() {
    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    let config = SessionConfig::default();
    let capacity = config.jitter.capacity;
    let mut session = RtpSession::new(config);
    let mut detector = DtmfDetector::default();
    let seeds = valid_packets();
    let sources: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from(([198, 51, 100, i], 4000 + u16::from(i))))
        .collect();
    let mut now = Instant::now();
    let mut accepted = 0;

    for i in 0..10_000u32 {
        let datagram = match i % 3 {
            0 => {
                let n = rng.below(300) as usize;
                rng.bytes(n)
            }
            1 => {
                let seed = &seeds[rng.below(seeds.len() as u64) as usize];
                mutate(&mut rng, seed)
            }
            _ => plausible_rtp(&mut rng),
        };
        // Mostly one peer, sometimes a stranger (who wins after a quiet spell).
        let source = if rng.below(10) == 0 {
            sources[rng.below(sources.len() as u64) as usize]
        } else {
            sources[0]
        };

        let _ = RtpPacket::parse(&datagram);
        let _ = rtcp::parse_compound(&datagram);
        let _ = TelephoneEvent::parse(&datagram);
        let _ = detector.handle_packet(rng.next() as u32, &datagram);
        detector.handle_time(rng.next() as u32);
        let _ = session.handle_rtcp(now, &datagram, source);
        if session.handle_packet(now, &datagram, source).is_ok() {
            accepted += 1;
        }

        assert!(
            session.buffered() <= capacity,
            "jitter buffer over capacity"
        );
        if i % 2 == 0 {
            now += Duration::from_millis(20);
            let _ = session.poll_frame(now);
            session.handle_timeout(now);
        }
        if i % 100 == 0 {
            while session.poll_event().is_some() {}
            while detector.poll_event().is_some() {}
            let _ = session.report_block(now);
        }
        // Occasionally let the latched source fall quiet so others relatch.
        if i % 1000 == 999 {
            now += Duration::from_secs(3);
        }
    }
    // The plausible third actually exercised the session, not just the parser.
    assert!(accepted > 500, "only {accepted} packets accepted");
    let stats = session.stats();
    assert!(stats.rejected > 5000);
    assert!(stats.depth <= capacity);
}

#[test]
fn every_truncation_of_valid_packets_is_an_error_or_a_prefix_parse() {
    let seeds = valid_packets();
    let source = SocketAddr::from(([192, 0, 2, 1], 4000));
    for seed in &seeds {
        for n in 0..=seed.len() {
            let mut session = RtpSession::new(SessionConfig::default());
            let _ = session.handle_packet(Instant::now(), &seed[..n], source);
            let _ = rtcp::parse_compound(&seed[..n]);
            let _ = TelephoneEvent::parse(&seed[..n]);
        }
    }
    // And the untruncated ones are accepted.
    let mut session = RtpSession::new(SessionConfig::default());
    let now = Instant::now();
    assert!(session.handle_packet(now, &seeds[0], source).is_ok());
    assert!(session.handle_packet(now, &seeds[1], source).is_ok());
    assert!(session.handle_rtcp(now, &seeds[2], source).is_ok());
}
