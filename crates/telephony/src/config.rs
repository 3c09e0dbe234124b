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
    /// Live transfer by REFER: fall back to a bridge when the carrier has
    /// not reported the outcome (final NOTIFY) within this long.
    pub refer_timeout: Duration,
    /// RFC 4028 Min-SE: INVITEs asking for a shorter session interval get
    /// 422. 90 s is the RFC's floor; only tests set it lower.
    pub min_session_expires: Duration,
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
    /// How long admission may use trunks, numbers and agents read from the
    /// store before reading them again: a change made in the store reaches
    /// new INVITEs at the latest this long after (at once after
    /// [`crate::Telephony::reload_trunks`] or
    /// [`crate::Telephony::reload_routing`]). Zero reads the store on every
    /// INVITE.
    pub directory_ttl: Duration,
    /// SIP over TLS (RFC 3261 §26, port 5061 by convention): a listener for
    /// trunks that send us calls over TLS, and the trust anchors for trunks
    /// we connect to over TLS. `None`: no TLS.
    pub tls: Option<SipTls>,
}

/// SIP over TLS. Certificates and keys are PEM text (read by the caller);
/// they are checked when telephony starts, so a bad file is a start-up
/// error, not a failed handshake later.
#[derive(Clone, Default)]
pub struct SipTls {
    /// Where to accept TLS connections; `None`: outbound only.
    pub listen: Option<SocketAddr>,
    /// Our certificate chain (leaf first), PEM. Needed with `listen`.
    pub cert_pem: Option<Vec<u8>>,
    /// The certificate's private key (PKCS#8 or PKCS#1), PEM.
    pub key_pem: Option<Vec<u8>>,
    /// Certificates we trust when connecting to a TLS trunk, PEM (such as
    /// the system bundle `/etc/ssl/certs/ca-certificates.crt`). Without
    /// them no TLS trunk can be verified, and none is connected to.
    pub ca_pem: Option<Vec<u8>>,
}

impl SipTls {
    /// Checks the PEM material as start-up would (`switchboard doctor`):
    /// the reason in words, naming the file's role.
    pub fn check(&self) -> Result<(), crate::tls::TlsError> {
        crate::tls::listener_config(self)?;
        crate::tls::client_config(self)?;
        Ok(())
    }
}

impl std::fmt::Debug for SipTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("SipTls")
            .field("listen", &self.listen)
            .field("cert", &self.cert_pem.as_ref().map(Vec::len))
            .field("key", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
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
            refer_timeout: Duration::from_secs(45),
            min_session_expires: Duration::from_secs(90),
            max_calls_per_agent: 10,
            recordings_dir: PathBuf::from("recordings"),
            region: Region::default(),
            t1: Duration::from_millis(500),
            realm: "switchboard".into(),
            user_agent: concat!("switchboard/", env!("CARGO_PKG_VERSION")).into(),
            directory_ttl: Duration::from_secs(1),
            tls: None,
        }
    }
}
