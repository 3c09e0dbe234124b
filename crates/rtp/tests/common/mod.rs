//! A hand-written RTP peer on 127.0.0.1 for the integration tests.

#![allow(dead_code, unreachable_pub)] // reason: each test file uses a subset

pub mod impair;

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_media::dtmf::TelephoneEvent;
use switchboard_media::rtp::{RtpHeader, RtpPacket};
use switchboard_media::{Codec, Frame, Level, FRAME_SAMPLES};
use switchboard_rtp::{MediaConfig, MediaEngine, MediaEvent, MediaLeg, PortRange};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

pub const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

/// An engine on loopback with its own port range (tests run in parallel).
pub fn engine(first_port: u16, pairs: u16) -> MediaEngine {
    engine_with(first_port, pairs, |_| {})
}

pub fn engine_with(
    first_port: u16,
    pairs: u16,
    tweak: impl FnOnce(&mut MediaConfig),
) -> MediaEngine {
    let mut cfg = MediaConfig {
        bind_ip: LOCALHOST.into(),
        ports: PortRange::new(first_port, first_port + pairs * 2 - 1),
        ..MediaConfig::default()
    };
    tweak(&mut cfg);
    MediaEngine::new(cfg)
}

/// A frame of a sine at `freq` Hz, continuing phase from frame `index`.
pub fn tone(freq: f64, amplitude: f64, index: usize) -> Frame {
    let mut samples = [0i16; FRAME_SAMPLES];
    for (i, s) in samples.iter_mut().enumerate() {
        let n = (index * FRAME_SAMPLES + i) as f64;
        *s = (amplitude * (2.0 * std::f64::consts::PI * freq * n / 8000.0).sin()) as i16;
    }
    Frame::new(samples)
}

pub fn dbfs(frame: &Frame) -> f32 {
    Level::of(frame).dbfs()
}

/// Zero crossings per frame: ≈ 2 × freq / 50.
pub fn crossings(samples: &[i16]) -> usize {
    samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count()
}

/// A received RTP packet, owned.
#[derive(Clone, Debug)]
pub struct Received {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    pub from: SocketAddr,
}

pub struct Peer {
    pub socket: UdpSocket,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
}

impl Peer {
    pub async fn bind() -> Peer {
        let socket = UdpSocket::bind(std::net::SocketAddr::from((LOCALHOST, 0)))
            .await
            .expect("bind peer");
        Peer {
            socket,
            seq: 1000,
            ts: 80_000,
            ssrc: 0x1234_5678,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// An offer advertising `port` (usually our own) with `formats` and
    /// extra attribute lines.
    pub fn offer_for(port: u16, formats: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=peer 42 42 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {formats}\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n{extra}"
        )
    }

    pub fn offer(&self, formats: &str, extra: &str) -> String {
        Peer::offer_for(self.addr().port(), formats, extra)
    }

    pub async fn send_audio(&mut self, to: SocketAddr, pt: u8, codec: Codec, frame: &Frame) {
        let packet = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
        }
        .to_packet(&codec.encode(frame));
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        self.socket.send_to(&packet, to).await.expect("send");
    }

    /// Sends `frames(i)` for `count` ticks, paced at 20 ms.
    pub async fn stream(
        &mut self,
        to: SocketAddr,
        pt: u8,
        codec: Codec,
        count: usize,
        frames: impl Fn(usize) -> Frame,
    ) {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for i in 0..count {
            ticker.tick().await;
            self.send_audio(to, pt, codec, &frames(i)).await;
        }
    }

    /// Sends one key press as telephone-events, never setting the marker bit
    /// (some carriers do not), with three end packets.
    pub async fn send_digit_without_marker(&mut self, to: SocketAddr, event: u8) {
        let start = self.ts;
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for k in 1..=8u16 {
            ticker.tick().await;
            let end = k >= 6;
            let payload = TelephoneEvent {
                event,
                end,
                volume: 10,
                duration: k.min(6) * 160,
            }
            .to_bytes();
            let packet = RtpHeader {
                marker: false,
                payload_type: 101,
                sequence: self.seq,
                timestamp: start,
                ssrc: self.ssrc,
            }
            .to_packet(&payload);
            self.seq = self.seq.wrapping_add(1);
            self.socket.send_to(&packet, to).await.expect("send");
        }
        self.ts = self.ts.wrapping_add(8 * 160);
    }

    /// Collects the packets that arrive within `window`.
    pub async fn collect(&self, window: Duration) -> Vec<Received> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(Ok((len, from))) =
            tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await
        {
            if let Ok(p) = RtpPacket::parse(&buf[..len]) {
                out.push(Received {
                    marker: p.marker,
                    payload_type: p.payload_type,
                    sequence: p.sequence,
                    timestamp: p.timestamp,
                    ssrc: p.ssrc,
                    payload: p.payload().to_vec(),
                    from,
                });
            }
        }
        out
    }
}

/// Reads events for `window`, returning audio frames and other events.
pub async fn drain_events(leg: &mut MediaLeg, window: Duration) -> (Vec<Frame>, Vec<MediaEvent>) {
    let deadline = Instant::now() + window;
    let mut frames = Vec::new();
    let mut other = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, leg.events.recv()).await {
        match event {
            MediaEvent::Audio(f) => frames.push(f),
            e => other.push(e),
        }
    }
    (frames, other)
}

/// Waits for the first event matching `want`, discarding others.
pub async fn wait_for_event(
    leg: &mut MediaLeg,
    within: Duration,
    want: impl Fn(&MediaEvent) -> bool,
) -> Option<MediaEvent> {
    timeout(within, async {
        while let Some(event) = leg.events.recv().await {
            if want(&event) {
                return Some(event);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}
