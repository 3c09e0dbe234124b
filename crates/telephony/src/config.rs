//! Driver configuration.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use switchboard_model::Region;

use crate::rtp::MediaConfig;

/// How the SIP driver listens, answers and dials.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// UDP and TCP listen address (port 0 picks a free port, the same for both).
    pub listen: SocketAddr,
    /// Address put in Contact/Via when we are behind NAT.
    pub public_addr: Option<IpAddr>,
    pub media: MediaConfig,
    /// Send 180 Ringing before answering.
    pub ringing: bool,
    /// Wait this long after 180 before the 200 OK (0 answers at once).
    pub answer_delay: Duration,
    /// Outbound: CANCEL after this long without an answer.
    pub no_answer_timeout: Duration,
    /// Upper bound on concurrent calls per agent (the agent's own
    /// `max_concurrent_calls` applies too; the lower wins).
    pub max_calls_per_agent: u32,
    /// Where `<session id>.wav` recordings are written.
    pub recordings_dir: PathBuf,
    /// Region for called/caller numbers written without a country code.
    pub region: Region,
    /// RFC 3261 T1 (500 ms); timer H / the ACK wait is 64 × T1.
    pub t1: Duration,
    /// Digest realm in our 407 challenges.
    pub realm: String,
    /// User-Agent / Server header.
    pub user_agent: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            public_addr: None,
            media: MediaConfig::default(),
            ringing: true,
            answer_delay: Duration::ZERO,
            no_answer_timeout: Duration::from_secs(30),
            max_calls_per_agent: 10,
            recordings_dir: PathBuf::from("recordings"),
            region: Region::default(),
            t1: Duration::from_millis(500),
            realm: "switchboard".into(),
            user_agent: concat!("switchboard/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}
