//! One call direction over a virtual network on virtual time: our
//! [`Packetizer`] sends a tone and a key press, the network delays (with
//! jitter), reorders, duplicates and loses packets, and an [`RtpSession`]
//! plays it out on a 20 ms tick. What a caller would notice — gaps, the
//! digit, added delay — is asserted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_media::{
    Codec, DtmfDigit, Frame, Level, Packetizer, RtpSession, SessionConfig, SessionEvent,
};

const TICK: Duration = Duration::from_millis(20);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn tone() -> Frame {
    let mut f = Frame::silence();
    for (i, s) in f.samples_mut().iter_mut().enumerate() {
        let phase = 2.0 * std::f64::consts::PI * 400.0 * i as f64 / 8000.0;
        *s = (8000.0 * phase.sin()) as i16;
    }
    f
}

struct Outcome {
    played: usize,
    quiet_frames: usize,
    digits: Vec<char>,
    late: u64,
    concealed: u64,
    lost: i64,
    max_depth: usize,
    target: Duration,
}

/// Sends `ticks` frames (a key press at tick 100) through a network with
/// `loss`% loss, `dup`% duplication and up to `jitter_ms` extra delay.
fn run(seed: u64, ticks: u32, loss: u64, dup: u64, jitter_ms: u64) -> Outcome {
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let peer = SocketAddr::from(([192, 0, 2, 10], 30_000));
    let mut tx = Packetizer::new(Codec::Pcmu, 0, Some(101), 0xCA11, 40_000, 12_345);
    let mut rx = RtpSession::new(SessionConfig::default());
    let mut in_flight: BTreeMap<(Instant, u64), Vec<u8>> = BTreeMap::new();
    let frame = tone();
    let mut out = Outcome {
        played: 0,
        quiet_frames: 0,
        digits: Vec::new(),
        late: 0,
        concealed: 0,
        lost: 0,
        max_depth: 0,
        target: Duration::ZERO,
    };
    let mut n = 0u64;

    // Run a little past the last send so the buffer drains.
    for tick in 0..ticks + 20 {
        let now = t0 + TICK * tick;
        if tick == 100 {
            let five = DtmfDigit::from_char('5').expect("a key");
            tx.send_dtmf(five, Duration::from_millis(100))
                .expect("negotiated");
        }
        if tick < ticks {
            if let Some(packet) = tx.packetize(Some(&frame)) {
                let copies = if rng.chance(dup) { 2 } else { 1 };
                for _ in 0..copies {
                    if !rng.chance(loss) {
                        let delay = 30 + rng.next() % (jitter_ms + 1);
                        n += 1;
                        in_flight.insert((now + Duration::from_millis(delay), n), packet.clone());
                    }
                }
            }
        }
        // Deliver everything due by now, in arrival order.
        while let Some(entry) = in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), packet) = entry.remove_entry();
            rx.handle_packet(at, &packet, peer)
                .expect("our own packets are valid");
        }
        out.max_depth = out.max_depth.max(rx.buffered());
        rx.handle_timeout(now);
        if let Some(played) = rx.poll_frame(now) {
            out.played += 1;
            // The drain after the last send is expected to be silent.
            if tick < ticks && !Level::of(&played).is_above(-30.0) {
                out.quiet_frames += 1;
            }
        }
        while let Some(event) = rx.poll_event() {
            if let SessionEvent::Dtmf(d) = event {
                out.digits.push(d.digit.as_char());
            }
        }
    }
    let stats = rx.stats();
    out.late = stats.late;
    out.concealed = stats.concealed;
    out.lost = stats.lost;
    out.target = stats.target_delay;
    out
}

#[test]
fn clean_network_plays_every_frame_with_minimal_delay() {
    let o = run(1, 500, 0, 0, 0);
    assert_eq!(o.digits, vec!['5']);
    assert_eq!(o.lost, 0);
    assert_eq!(o.late, 0);
    // Only the key press (7 ticks of DTMF instead of audio, concealed with
    // a fade) is not tone.
    assert!(o.quiet_frames <= 7, "{} quiet frames", o.quiet_frames);
    assert_eq!(o.target, Duration::from_millis(20));
}

#[test]
fn lossy_jittery_network_is_concealed_and_the_digit_survives() {
    for seed in 1..=5 {
        let o = run(seed, 1500, 3, 2, 60);
        assert_eq!(o.digits, vec!['5'], "seed {seed}");
        // Losses are counted and concealed, not played as holes of silence:
        // a single lost frame comes back as a faded repeat of the last one.
        // (RFC 3550 `lost` is net of duplicates, so it can read 0 here.)
        assert!(o.concealed > 7, "seed {seed}");
        assert!(o.concealed >= o.lost.max(0) as u64, "seed {seed}");
        // The buffer adapted instead of dropping most late packets.
        assert!(o.late < 1500 / 20, "seed {seed}: {} late", o.late);
        assert!(o.target > Duration::from_millis(20), "seed {seed}");
        assert!(o.target <= Duration::from_millis(200));
        assert!(o.max_depth <= 50);
        assert!(o.played >= 1500, "seed {seed}");
        // Most of what the caller hears is the tone, not silence.
        assert!(
            o.quiet_frames < 150,
            "seed {seed}: {} quiet",
            o.quiet_frames
        );
    }
}
