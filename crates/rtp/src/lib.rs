//! The RTP media driver: the sockets, timers and tasks around the sans-IO
//! audio path of `switchboard-media`.
//!
//! This crate owns, per call leg, an RTP/RTCP port pair, the SDP offer/answer
//! that set it up, and one tokio task that moves audio between the network
//! and the voice engine every 20 ms. It makes no conversational decision;
//! `switchboard-telephony` creates legs from SIP and hands them on.
//!
//! # Layout
//!
//! - [`sdp`]: a small, strict SDP reader (errors name the line, never panic).
//! - `negotiate`: offer/answer for PCMU/PCMA + telephone-event; our SDP text.
//! - [`ports`]: even RTP ports (RTCP = RTP + 1) from a range, freed on drop.
//! - [`MediaEngine`] → [`RtpEndpoint`] (answer side) or [`PendingEndpoint`]
//!   → [`RtpEndpoint`] (offer side) → [`RtpEndpoint::start`] → [`MediaLeg`].
//! - `leg`: the media task, [`MediaLeg`], [`MediaHandle`], [`MediaStats`].
//! - [`bridge()`]: relay two legs through us for a live transfer: one task
//!   takes both legs over and forwards each packet as it arrives.
//! - `relay`: the bridged packet path, sans-IO: receive checks and
//!   statistics without a jitter buffer, in-place header rewriting onto our
//!   stream, frames for the recording.
//!
//! # Ownership
//!
//! A [`MediaLeg`] is the leg: whoever holds its `events` receiver consumes
//! the peer's audio and must keep reading (events for a consumer more than
//! two seconds behind are dropped and counted, never block the media).
//! Dropping `events` ends the task. [`MediaHandle`]s are cheap clones for
//! control (re-INVITE, DTMF, stats, stop) from anywhere. The task owns the
//! sockets, the port claim and the recording; when it ends (stop, `events`
//! dropped) it finalises the WAV, frees the ports, then completes
//! [`MediaHandle::closed`]. [`bridge()`] asks both legs' tasks to hand all of
//! that over to one bridge task, which then plays the same part for both
//! (handles keep working; see the `bridge` module for its run loop).
//!
//! # The run loop
//!
//! ```text
//! loop {
//!     select! {                              // biased, in this order
//!         command  => Stop | Remote(sdp) | Dtmf(digits)
//!         tick (start + n × 20 ms) => {
//!             frame_in  = session.poll_frame(now) or silence   // jitter buffer + concealment
//!             frame_out = audio_out.try_recv() or silence
//!             packetizer.packetize(frame_out) → RTP to latched source (else SDP address)
//!             recording.push(n × 20 ms, frame_in, frame_out)
//!             events ← Audio(frame_in); RtpTimeout after no_rtp_timeout; RTCP SR every 5 s
//!         }
//!         rtp datagram  => session.handle_packet → DTMF events, latching
//!         rtcp datagram => session.handle_rtcp, peer's reports into stats
//!     }
//!     flush queued datagrams (non-blocking sends)
//! }
//! ```
//!
//! # Symmetric RTP
//!
//! We send to the address the peer's packets come from, not only to the one
//! its SDP names (NAT). Until the first valid packet we send to the SDP
//! address; the first valid RTP packet (negotiated payload type, a whole
//! number of 10 ms) latches its source. Packets from any other source are dropped
//! while the latched one is live; once it has been silent for
//! [`RELATCH_AFTER`] (1 s), the next valid source takes over. Likewise a
//! second SSRC from the latched source is dropped while the current SSRC is
//! live, and replaces it after one second of silence. A re-INVITE that moves
//! the SDP address forgets the latch.

pub mod ports;
pub mod sdp;

#[doc(hidden)]
pub mod fuzzing;

mod bridge;
mod engine;
mod leg;
mod negotiate;
mod recording;
mod relay;

pub use bridge::{bridge, BridgeEnd, BridgeHandle, BridgeSide};
pub use engine::{MediaConfig, MediaEngine, PendingEndpoint, RtpEndpoint};
pub use leg::{
    MediaEvent, MediaHandle, MediaLeg, MediaStats, AUDIO_OUT_CAPACITY, EVENTS_CAPACITY,
    RELATCH_AFTER,
};
pub use ports::PortRange;
pub use sdp::Direction;
pub use switchboard_media::jitter::JitterConfig;
pub use switchboard_media::{Codec, Frame};

/// What can go wrong setting up or controlling a media leg.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// The SDP could not be read (`line` 0: the description as a whole).
    #[error("invalid sdp at line {line}: {reason}")]
    InvalidSdp {
        /// 1-based line number, 0 when not about one line.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// No audio stream with PCMU or PCMA over RTP/AVP: reply 488.
    #[error("no common codec: we support PCMU and PCMA over RTP/AVP")]
    NoCommonCodec,
    /// Every RTP port pair in the range is in use; retrying helps once
    /// calls end, raising `ports` in the media configuration helps now.
    #[error("no free rtp port pair in {first}-{last}")]
    PortsExhausted {
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// A socket could not be bound (wrong `bind_ip`, permissions).
    #[error("cannot bind rtp socket {addr}")]
    Bind {
        /// The address we tried.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The leg's media task has ended.
    #[error("media leg has stopped")]
    Stopped,
}

impl RtpError {
    /// Whether the SIP answer to the offer should be 488 Not Acceptable Here
    /// (the SDP is unusable), as opposed to a 500/503 (our side failed).
    pub fn is_not_acceptable(&self) -> bool {
        matches!(self, RtpError::InvalidSdp { .. } | RtpError::NoCommonCodec)
    }

    /// Whether trying again later may succeed (ports free up as calls end).
    pub fn is_retryable(&self) -> bool {
        matches!(self, RtpError::PortsExhausted { .. })
    }
}
