//! The crate's errors. Each says who failed and whether trying again can help.

use std::net::SocketAddr;

/// Starting or running the SIP driver failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelephonyError {
    #[error("cannot listen for SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sip stack: {0}")]
    Sip(#[from] rsipstack::Error),
    /// The TLS settings cannot work; the message says which file to fix.
    #[error("sip tls: {0}")]
    Tls(String),
    #[error("store: {0}")]
    Store(#[from] switchboard_store::StoreError),
}

/// An outbound call did not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// 486 Busy Here / 600 Busy Everywhere.
    #[error("busy")]
    Busy,
    /// Nobody answered before the no-answer timeout; we sent CANCEL.
    #[error("no answer")]
    NoAnswer,
    /// A final error response (4xx–6xx other than busy).
    #[error("rejected: {code} {reason}")]
    Rejected { code: u16, reason: String },
    /// The trunk refused our outbound credentials.
    #[error("trunk credentials rejected ({code}) — check the trunk's outbound username/password")]
    Unauthorized { code: u16 },
    /// No response, unreachable host, socket error.
    #[error("network error: {0}")]
    Network(String),
    /// The target is neither an E.164 number nor a SIP URI, or names no trunk.
    #[error("invalid target `{target}`: {reason}")]
    InvalidTarget { target: String, reason: String },
    /// No common codec or a broken SDP answer.
    #[error("media: {0}")]
    Media(String),
    #[error("store: {0}")]
    Store(#[from] switchboard_store::StoreError),
}

impl DialError {
    /// Whether dialling again later can succeed without a config change.
    pub fn is_retryable(&self) -> bool {
        match self {
            DialError::Busy | DialError::NoAnswer | DialError::Network(_) => true,
            DialError::Store(e) => e.is_retryable(),
            DialError::Rejected { code, .. } => matches!(code, 480 | 503 | 408),
            DialError::Unauthorized { .. }
            | DialError::InvalidTarget { .. }
            | DialError::Media(_) => false,
        }
    }

    /// The session end reason in words.
    pub fn end_reason(&self) -> String {
        self.to_string()
    }
}
