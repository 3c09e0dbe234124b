//! A userspace stand-in for `tc netem` between two RTP endpoints on
//! 127.0.0.1.
//!
//! The kernels these tests run on often lack `sch_netem` (containers), and
//! the `tbf` fallback of `switchboard-telephony`'s `tests/netem.rs` only
//! drops and queues: no jitter, no reordering. [`ImpairedLink`] is a UDP
//! proxy with two faces, one per endpoint, each an RTP and an RTCP socket.
//! Each endpoint's SDP names the face meant for it (see [`through`]), so
//! legs latch to the proxy as they would to a carrier's SBC. Per direction
//! and per datagram it draws, from a seeded generator, whether to drop it,
//! how long to hold it (`delay ± jitter`, uniform), and whether to send a
//! second copy with its own delay. Held datagrams wait in a heap keyed by
//! release time, and one task sleeps until the earliest is due: the delay
//! costs no thread, and a datagram held longer than the next one's gap is
//! overtaken, which is how netem reorders too.
//!
//! Bounded: at most [`MAX_HELD`] datagrams are held (more are dropped and
//! counted), at most [`MAX_DATAGRAMS`] are read per direction, and the task
//! ends after [`MAX_LIFETIME`] whether or not it was stopped.
//!
//! Deterministic: every datagram draws the same four numbers whatever its
//! fate, from a generator per direction and channel, so the n-th RTP packet
//! from A meets the same fate on every run. (When it arrives is up to the
//! scheduler; what happens to it is not.)

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use switchboard_media::rtp::seq_after;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::LOCALHOST;

/// Datagrams held at once, over both directions.
pub const MAX_HELD: usize = 4096;
/// Datagrams read per direction and channel before the rest are dropped.
pub const MAX_DATAGRAMS: u64 = 50_000;
/// The proxy task ends after this long even if nobody stops it.
pub const MAX_LIFETIME: Duration = Duration::from_secs(120);

/// What happens to the datagrams of one direction.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Mean delay.
    pub delay: Duration,
    /// Delay is uniform in `delay ± jitter` (clamped at zero).
    pub jitter: Duration,
    /// Probability that a datagram is sent twice (the copy is delayed on
    /// its own draw).
    pub duplicate: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl Impairment {
    /// `netem loss 5% delay 40ms 40ms duplicate 1%`, with netem's default
    /// uniform jitter: delays of 0–80 ms, so packets 20 ms apart often swap.
    pub fn netem_like(seed: u64) -> Self {
        Impairment {
            loss: 0.05,
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(40),
            duplicate: 0.01,
            seed,
        }
    }
}

/// What one direction of the link did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// RTP datagrams read from the sender.
    pub rtp_in: u64,
    /// RTP datagrams dropped by the loss draw.
    pub rtp_dropped: u64,
    /// RTP datagrams sent twice.
    pub rtp_duplicated: u64,
    /// RTP datagrams sent on (copies included).
    pub rtp_out: u64,
    /// RTP datagrams sent after one with a higher sequence number (copies
    /// not counted): what the receiver has to put back in order.
    pub rtp_reordered: u64,
    /// RTCP datagrams read / sent on.
    pub rtcp_in: u64,
    pub rtcp_out: u64,
    /// Datagrams dropped because too many were held or read.
    pub overflow: u64,
    /// Datagrams from an address other than the endpoint's, ignored.
    pub foreign: u64,
    /// The longest delay applied.
    pub max_delay: Duration,
}

/// Both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub a_to_b: DirectionStats,
    pub b_to_a: DirectionStats,
}

/// The proxy's sockets, bound but not yet forwarding: put [`Self::a_side`]
/// into the SDP given to A and [`Self::b_side`] into the one given to B,
/// then [`Self::start`] with the endpoints' addresses.
pub struct ImpairedLink {
    /// `[A's face, B's face]`, each `[rtp, rtcp]`.
    faces: [[UdpSocket; 2]; 2],
    impairment: [Impairment; 2],
}

/// A forwarding link; [`Self::stop`] ends it and says what it did.
pub struct RunningLink {
    stop: oneshot::Sender<()>,
    task: JoinHandle<LinkStats>,
}

impl ImpairedLink {
    /// Binds the four sockets; `a_to_b` impairs what A sends, `b_to_a` what
    /// B sends.
    pub async fn bind(a_to_b: Impairment, b_to_a: Impairment) -> ImpairedLink {
        let mut sockets = Vec::with_capacity(4);
        for _ in 0..4 {
            let socket = UdpSocket::bind(SocketAddr::from((LOCALHOST, 0)))
                .await
                .expect("bind proxy socket");
            sockets.push(socket);
        }
        let [a_rtp, a_rtcp, b_rtp, b_rtcp]: [UdpSocket; 4] = sockets
            .try_into()
            .unwrap_or_else(|_| unreachable!("four sockets were bound"));
        ImpairedLink {
            faces: [[a_rtp, a_rtcp], [b_rtp, b_rtcp]],
            impairment: [a_to_b, b_to_a],
        }
    }

    /// Where A sends: `(rtp, rtcp)`.
    pub fn a_side(&self) -> (SocketAddr, SocketAddr) {
        face_addrs(&self.faces[0])
    }

    /// Where B sends: `(rtp, rtcp)`.
    pub fn b_side(&self) -> (SocketAddr, SocketAddr) {
        face_addrs(&self.faces[1])
    }

    /// Starts forwarding between the endpoints whose RTP sockets are `a`
    /// and `b` (RTCP on the port above each).
    pub fn start(self, a: SocketAddr, b: SocketAddr) -> RunningLink {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(self, [a, b], stopped));
        RunningLink { stop, task }
    }
}

impl RunningLink {
    /// Stops forwarding (datagrams still held are dropped) and returns the
    /// counters.
    pub async fn stop(self) -> LinkStats {
        let _ = self.stop.send(());
        self.task.await.expect("the proxy task does not panic")
    }
}

/// `sdp` as the proxy relays it to the other endpoint: the audio port moved
/// to `side`'s RTP socket, with an `a=rtcp` line for its RTCP socket (what
/// an SBC in the media path does to the SDP).
pub fn through(sdp: &str, side: (SocketAddr, SocketAddr)) -> String {
    let (rtp, rtcp) = side;
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("m=audio ") {
            let (_, formats) = rest.split_once(' ').expect("an m= line has a port");
            out.push_str(&format!(
                "m=audio {} {formats}\r\na=rtcp:{}\r\n",
                rtp.port(),
                rtcp.port()
            ));
        } else if !line.starts_with("a=rtcp:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

fn face_addrs(face: &[UdpSocket; 2]) -> (SocketAddr, SocketAddr) {
    let addr = |s: &UdpSocket| s.local_addr().expect("bound socket");
    (addr(&face[0]), addr(&face[1]))
}

/// A datagram waiting for its release time.
struct Held {
    due: Instant,
    /// Arrival order, so equal release times keep it.
    order: u64,
    /// 0: A → B, 1: B → A.
    direction: usize,
    /// 0: RTP, 1: RTCP.
    channel: usize,
    copy: bool,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

async fn run(
    link: ImpairedLink,
    endpoints: [SocketAddr; 2],
    mut stopped: oneshot::Receiver<()>,
) -> LinkStats {
    let ImpairedLink { faces, impairment } = link;
    let rtcp_of = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    // [direction][channel]: where datagrams come from and go to.
    let sources = [
        [endpoints[0], rtcp_of(endpoints[0])],
        [endpoints[1], rtcp_of(endpoints[1])],
    ];
    let mut rngs = [0u64, 1, 2, 3].map(|k| SplitMix64(impairment[(k / 2) as usize].seed ^ k));
    let mut stats = [DirectionStats::default(); 2];
    let mut highest: [Option<u16>; 2] = [None, None];
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut order = 0u64;
    let end = Instant::now() + MAX_LIFETIME;
    let mut bufs = [[0u8; 2048]; 4];

    loop {
        let [buf_a_rtp, buf_a_rtcp, buf_b_rtp, buf_b_rtcp] = &mut bufs;
        let next_due = held.peek().map(|Reverse(h)| h.due).unwrap_or(end);
        // Which socket (face × channel) a datagram came in on.
        let (index, received) = tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep_until(next_due) => {
                let now = Instant::now();
                while held.peek().is_some_and(|Reverse(h)| h.due <= now) {
                    let Some(Reverse(h)) = held.pop() else { break };
                    let to = sources[1 - h.direction][h.channel];
                    let out = &faces[1 - h.direction][h.channel];
                    let s = &mut stats[h.direction];
                    if h.channel == 0 {
                        s.rtp_out += 1;
                        if let (false, Some(seq)) = (h.copy, sequence(&h.bytes)) {
                            match highest[h.direction] {
                                Some(top) if seq_after(top, seq) => s.rtp_reordered += 1,
                                _ => highest[h.direction] = Some(seq),
                            }
                        }
                    } else {
                        s.rtcp_out += 1;
                    }
                    // Loopback UDP: a failed send is a drop, as on a wire.
                    let _ = out.send_to(&h.bytes, to).await;
                }
                continue;
            }
            r = faces[0][0].recv_from(buf_a_rtp) => (0, r),
            r = faces[0][1].recv_from(buf_a_rtcp) => (1, r),
            r = faces[1][0].recv_from(buf_b_rtp) => (2, r),
            r = faces[1][1].recv_from(buf_b_rtcp) => (3, r),
        };
        let (direction, channel) = (index / 2, index % 2);
        let Ok((len, from)) = received else {
            continue; // e.g. ICMP port unreachable from an earlier send
        };
        let s = &mut stats[direction];
        if from != sources[direction][channel] {
            s.foreign += 1;
            continue;
        }
        let read = if channel == 0 {
            &mut s.rtp_in
        } else {
            &mut s.rtcp_in
        };
        *read += 1;
        if *read > MAX_DATAGRAMS {
            s.overflow += 1;
            continue;
        }
        // Four draws per datagram whatever happens, so fates stay aligned
        // with datagram numbers.
        let imp = impairment[direction];
        let rng = &mut rngs[index];
        let (lose, delay, twice, copy_delay) = (rng.unit(), rng.unit(), rng.unit(), rng.unit());
        if lose < imp.loss {
            if channel == 0 {
                s.rtp_dropped += 1;
            }
            continue;
        }
        let now = Instant::now();
        let bytes = bufs[index][..len].to_vec();
        let mut copies = vec![(spread(imp, delay), false)];
        if twice < imp.duplicate {
            copies.push((spread(imp, copy_delay), true));
            if channel == 0 {
                s.rtp_duplicated += 1;
            }
        }
        for (delay, copy) in copies {
            if held.len() >= MAX_HELD {
                s.overflow += 1;
                continue;
            }
            s.max_delay = s.max_delay.max(delay);
            order += 1;
            held.push(Reverse(Held {
                due: now + delay,
                order,
                direction,
                channel,
                copy,
                bytes: bytes.clone(),
            }));
        }
    }
    LinkStats {
        a_to_b: stats[0],
        b_to_a: stats[1],
    }
}

/// `delay ± jitter` for a uniform draw `u` in [0, 1).
fn spread(imp: Impairment, u: f64) -> Duration {
    let ms = imp.delay.as_secs_f64() * 1000.0 + imp.jitter.as_secs_f64() * 1000.0 * (2.0 * u - 1.0);
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

/// The RTP sequence number, if `bytes` looks like RTP.
fn sequence(bytes: &[u8]) -> Option<u16> {
    let seq = bytes.get(2..4)?;
    Some(u16::from_be_bytes([seq[0], seq[1]]))
}

/// SplitMix64: tiny, seedable, and the same on every platform and `rand`
/// version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
