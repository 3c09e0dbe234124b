//! The sans-IO audio path of one call: bytes from an RTP peer in, 20 ms PCM
//! frames out, and back again.
//!
//! This crate owns no socket, no timer and no task, and never reads a clock:
//! every input carries its own `now: Instant` (or an RTP timestamp), and every
//! output is a value the driver (`switchboard-telephony`) sends or plays. That
//! is what lets the simulator run lossy, jittery calls on virtual time.
//!
//! Layout, bottom up:
//!
//! - [`g711`]: µ-law / A-law sample codecs (ITU-T G.711).
//! - [`rtp`]: RTP packet parse/build (RFC 3550) with strict bounds checks.
//! - [`rtcp`]: the RTCP packets a call needs: SR, RR, BYE.
//! - [`dtmf`]: RFC 4733 telephone-events: payload codec, a detector that does
//!   not need the marker bit, and a generator for sending digits.
//! - [`jitter`]: an adaptive, bounded jitter buffer and packet loss
//!   concealment.
//! - [`session`]: [`RtpSession`] ties the above together for one call leg
//!   (receive side) and [`Packetizer`] builds the packets we send.
//! - [`wav`]: a stereo recorder (caller left, agent right) over any
//!   `Write + Seek` sink.
//! - [`level`]: frame energy in dBFS, for echo-guard decisions.
//! - [`resample`]: 8 kHz ⇄ 16 kHz half-band FIR resamplers.
//!
//! The run loop a driver writes around an [`RtpSession`]:
//!
//! ```text
//! loop {
//!     select! {
//!         datagram = rtp_socket.recv_from() => session.handle_packet(now, &buf, from)?,
//!         _ = ticker.tick() /* every 20 ms */ => {
//!             if let Some(frame) = session.poll_frame(now) { call.handle_input(Input::Audio(now, &frame)) }
//!             session.handle_timeout(now);
//!             if let Some(pkt) = packetizer.packetize(outgoing_frame.as_ref()) { rtp_socket.send_to(&pkt, remote) }
//!         }
//!     }
//!     while let Some(event) = session.poll_event() { /* DTMF, latching, SSRC change */ }
//! }
//! ```

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod level;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod wav;

mod frame;

#[doc(hidden)]
pub mod fuzzing;

pub use dtmf::{DtmfDigit, DtmfEvent};
pub use frame::{Frame, FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};
pub use g711::Codec;
pub use level::Level;
pub use session::{Packetizer, RtpSession, SessionConfig, SessionEvent, SessionStats};
pub use wav::StereoRecorder;

/// Everything that can go wrong in the audio path.
///
/// Parse errors are expected on a public RTP port (scanners, misrouted
/// streams, broken carriers): the driver counts and drops them; none of them
/// ends a call on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The input ended before a field it announces.
    #[error("{what} truncated: {len} bytes, need at least {need}")]
    Truncated {
        /// Which structure was being read (e.g. "rtp header").
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not RTP/RTCP version 2.
    #[error("unsupported rtp version {0}")]
    Version(u8),
    /// The padding count is zero or larger than the payload.
    #[error("invalid padding length {padding} for {len} payload bytes")]
    Padding {
        /// The padding count from the last byte.
        padding: u8,
        /// Payload bytes including the padding.
        len: usize,
    },
    /// An RTCP length field that does not fit the datagram.
    #[error("invalid rtcp length: {0}")]
    RtcpLength(&'static str),
    /// A payload type that was not negotiated for this call.
    #[error("payload type {0} was not negotiated")]
    PayloadType(u8),
    /// An audio payload that is not a whole number of 10 ms frames (at most
    /// 120 ms), or, for [`Codec::decode`], not one 20 ms frame.
    #[error("audio payload of {len} bytes is not a whole number of 10 ms frames")]
    FrameSize {
        /// Payload bytes received.
        len: usize,
    },
    /// A packet from a source other than the latched one.
    #[error("packet from {from} ignored: latched to {latched}")]
    ForeignSource {
        /// Where the packet came from.
        from: std::net::SocketAddr,
        /// Where the session is latched.
        latched: std::net::SocketAddr,
    },
    /// DTMF was requested but no telephone-event payload type was negotiated.
    #[error("telephone-event was not negotiated; DTMF cannot be sent")]
    DtmfNotNegotiated,
    /// Too many digits are waiting to be sent.
    #[error("dtmf send queue is full")]
    DtmfQueueFull,
    /// A sample slice that is not exactly one frame long.
    #[error("expected {FRAME_SAMPLES} samples, got {0}")]
    FrameLength(usize),
    /// The recording sink failed.
    #[error("recording sink failed")]
    Io(#[from] std::io::Error),
}

impl MediaError {
    /// Whether the error is about the packet itself (malformed, unexpected),
    /// as opposed to the local sink: packet errors are counted and dropped.
    pub fn is_packet_error(&self) -> bool {
        !matches!(
            self,
            MediaError::Io(_)
                | MediaError::FrameLength(_)
                | MediaError::DtmfNotNegotiated
                | MediaError::DtmfQueueFull
        )
    }
}

/// Bounds-checked big-endian reads shared by the parsers.
pub(crate) mod be {
    pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        let s = b.get(at..at.checked_add(2)?)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        let s = b.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}
