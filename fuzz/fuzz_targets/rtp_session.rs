//! A whole receive session fed a stream of datagrams: never panics, the
//! jitter buffer never exceeds its capacity.
//!
//! Input format: records of `[len: u8][flags: u8][datagram: len bytes]`;
//! `flags` picks the source address (bits 0-1), how far the clock moves
//! (bits 2-5, in 20 ms steps) and whether the datagram goes to the RTCP
//! handler (bit 6) and a playout tick follows (bit 7).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_media::{RtpSession, SessionConfig};

fuzz_target!(|data: &[u8]| {
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
});
