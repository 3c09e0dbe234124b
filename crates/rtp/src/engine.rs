//! [`MediaEngine`]: configuration, port allocation and offer/answer, up to
//! the point where a leg's sockets are bound and its parameters agreed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchboard_media::jitter::JitterConfig;
use switchboard_media::Codec;

use crate::leg::{self, MediaLeg};
use crate::negotiate::{self, LocalDescription, Negotiated};
use crate::ports::{Allocation, PortAllocator, PortRange};
use crate::sdp::{Direction, SessionDescription};
use crate::RtpError;

/// How the engine binds and advertises media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// The address RTP sockets bind to (`0.0.0.0` for all interfaces).
    pub bind_ip: IpAddr,
    /// The address to advertise in SDP when it differs from the bind
    /// address (behind 1:1 NAT). Never a private address when set.
    pub public_ip: Option<IpAddr>,
    /// Even RTP ports; RTCP uses the port above each.
    pub ports: PortRange,
    /// Silence (no RTP while the peer should be sending) after which the leg
    /// reports [`crate::MediaEvent::RtpTimeout`].
    pub no_rtp_timeout: Duration,
    /// Jitter buffer limits.
    pub jitter: JitterConfig,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            public_ip: None,
            ports: PortRange::default(),
            no_rtp_timeout: Duration::from_secs(30),
            jitter: JitterConfig::default(),
        }
    }
}

/// Creates media endpoints: owns the configuration and the port allocator.
/// Cheap to clone; all clones share the ports.
#[derive(Clone, Debug)]
pub struct MediaEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: MediaConfig,
    ports: Arc<PortAllocator>,
}

impl MediaEngine {
    /// An engine with `cfg`. Nothing is bound until an offer or answer.
    pub fn new(cfg: MediaConfig) -> Self {
        MediaEngine {
            inner: Arc::new(Inner {
                ports: Arc::new(PortAllocator::new(cfg.ports)),
                config: cfg,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// Port pairs currently held by endpoints (pending, ready or running).
    pub fn ports_in_use(&self) -> usize {
        self.inner.ports.in_use()
    }

    /// Answer side: negotiates `offer_sdp`, binds a port pair and returns the
    /// endpoint with our answer.
    ///
    /// [`RtpError::NoCommonCodec`] and [`RtpError::InvalidSdp`] mean: reply
    /// 488 Not Acceptable Here (see [`RtpError::is_not_acceptable`]).
    pub async fn answer(&self, offer_sdp: &str) -> Result<(RtpEndpoint, String), RtpError> {
        let offer = SessionDescription::parse(offer_sdp)?;
        let (index, negotiated) = negotiate::answer(&offer)?;
        let allocation = self.allocate()?;
        let mut local = self.local_description(&allocation, negotiated.remote_ip);
        let answer = local.render_answer(&offer, index, &negotiated);
        let endpoint = RtpEndpoint {
            config: self.inner.config.clone(),
            allocation,
            local,
            negotiated,
        };
        Ok((endpoint, answer))
    }

    /// Offer side (outbound calls, transfer legs, the test caller): binds a
    /// port pair and returns our offer; complete it with
    /// [`PendingEndpoint::accept_answer`].
    pub async fn offer(&self) -> Result<(PendingEndpoint, String), RtpError> {
        let allocation = self.allocate()?;
        let mut local = self.local_description(&allocation, None);
        let offer = local.render_offer(Direction::SendRecv);
        let pending = PendingEndpoint {
            config: self.inner.config.clone(),
            allocation,
            local,
        };
        Ok((pending, offer))
    }

    fn allocate(&self) -> Result<Allocation, RtpError> {
        self.inner.ports.allocate(self.inner.config.bind_ip)
    }

    fn local_description(
        &self,
        allocation: &Allocation,
        remote: Option<IpAddr>,
    ) -> LocalDescription {
        let cfg = &self.inner.config;
        let ip = negotiate::sdp_address(cfg.bind_ip, cfg.public_ip, remote);
        LocalDescription::new(ip, allocation.guard.port())
    }
}

/// Our offer is out; waiting for the answer. Dropping it frees its ports.
#[derive(Debug)]
pub struct PendingEndpoint {
    config: MediaConfig,
    allocation: Allocation,
    local: LocalDescription,
}

impl PendingEndpoint {
    /// Completes the negotiation with the peer's answer. On error the ports
    /// are freed.
    pub fn accept_answer(self, answer_sdp: &str) -> Result<RtpEndpoint, RtpError> {
        let answer = SessionDescription::parse(answer_sdp)?;
        let negotiated = negotiate::accept(&answer)?;
        Ok(RtpEndpoint {
            config: self.config,
            allocation: self.allocation,
            local: self.local,
            negotiated,
        })
    }

    /// The local RTP address (the bind address and port).
    pub fn local_addr(&self) -> SocketAddr {
        local_addr(&self.allocation)
    }
}

/// A negotiated leg with bound sockets, not yet running.
/// Dropping it frees its ports.
#[derive(Debug)]
pub struct RtpEndpoint {
    config: MediaConfig,
    allocation: Allocation,
    local: LocalDescription,
    negotiated: Negotiated,
}

impl RtpEndpoint {
    /// Spawns the media task on the current tokio runtime (call it from
    /// inside one). `recorder`: a stereo WAV path, peer left, our output
    /// right.
    pub fn start(self, recorder: Option<PathBuf>) -> MediaLeg {
        let parts = leg::LegParts {
            config: self.config,
            allocation: self.allocation,
            negotiated: self.negotiated,
            recorder,
        };
        leg::spawn(parts, self.local)
    }

    /// The local RTP address (the bind address and port).
    pub fn local_addr(&self) -> SocketAddr {
        local_addr(&self.allocation)
    }

    /// The codec we send.
    pub fn codec(&self) -> Codec {
        self.negotiated.codec
    }

    /// The payload type we send audio with.
    pub fn payload_type(&self) -> u8 {
        self.negotiated.payload_type
    }

    /// The telephone-event payload type, if negotiated.
    pub fn telephone_event(&self) -> Option<u8> {
        self.negotiated.telephone_event
    }

    /// Our media direction.
    pub fn direction(&self) -> Direction {
        self.negotiated.direction
    }

    /// Where the SDP says to send RTP (until symmetric RTP latches).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.negotiated.remote_rtp
    }
}

fn local_addr(allocation: &Allocation) -> SocketAddr {
    allocation.rtp.local_addr().unwrap_or_else(|_| {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), allocation.guard.port())
    })
}
