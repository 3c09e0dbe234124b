//! switchboard-telephony: the SIP driver.
//!
//! **Owns** the SIP side of every call: the SIP stack (rsipstack: transports,
//! transactions, dialogs, digest), trunk authentication (source CIDRs and/or
//! digest with a 407 challenge), routing of the called number to an agent,
//! the session rows (`create_session`, `mark_answered`, `end_session`), the
//! recording path, outbound dialling through trunks, live transfer (REFER
//! where the trunk allows it, else or on refusal a bridge through us), RFC
//! 4028 session timers, trunk registration, and the test caller's user
//! agent. Media is `switchboard-rtp`'s;
//! conversation is the engine's, reached through [`CallHandler`].
//!
//! **Layout**
//! - [`control`]: the sans-IO core — [`control::CallLeg`] (Trying → Ringing →
//!   Answered → Confirmed → Transferring/Bridged → Terminated, timer H, the
//!   outbound no-answer timer), trunk verdicts, called-number normalisation,
//!   the stranger rate limiter, the transfer fallback order
//!   ([`control::TransferPlan`]: REFER → bridge → failed), session timers
//!   ([`control::SessionTimer`]). Unit-tested on explicit `Instant`s, no
//!   sockets.
//! - `server`: the endpoint (UDP + TCP on one port), the accept loop and the
//!   inbound INVITE path; [`Telephony`].
//! - `directory`: the trunks and number → agent routes admission reads,
//!   cached for [`SipConfig::directory_ttl`] (1 s) so an INVITE costs no
//!   store round trip for them; dropped by [`Telephony::reload_trunks`] and
//!   [`Telephony::reload_routing`].
//! - `call`: [`ActiveCall`], [`CallControl`], and the per-call driver task.
//! - `outbound`: [`Telephony::dial`], [`Telephony::dial_agent`], the transfer
//!   leg, and [`dial_uri`] (the test caller).
//! - `sip`: message helpers (source address, users, digest).
//! - `register`: REGISTER keepers for trunks with `register = true`, timed
//!   by the sans-IO [`control::RegistrationTimer`] and reconciled with the
//!   store by [`Telephony::reload_trunks`].
//!
//! **Run loop.** The accept loop receives each new server transaction from
//! rsipstack and spawns a task for it. An INVITE is admitted (trunk → number
//! → agent → call slot), answered through the media engine, and its dialog
//! is given to a per-call driver. The driver waits on the dialog's state
//! events, commands from [`CallControl`], the outcomes of its own in-dialog
//! requests (REFER, session refresh, the transfer leg) and the leg's next
//! deadline; feeds one input to its [`control::CallLeg`]; and executes the
//! outputs (hand the call to the engine, BYE, CANCEL, REFER, dial and
//! bridge, refresh, end the session row). One call's task
//! failing never touches another's.

pub mod control;

#[doc(hidden)]
pub mod fuzzing;

mod call;
mod config;
mod directory;
mod error;
mod outbound;
mod register;
mod server;
mod sip;
mod tls;

/// The media driver this crate talks to.
pub(crate) use switchboard_rtp as rtp;

pub use call::{ActiveCall, CallControl, CallHandler, CallInfo, TransferOptions, TransferOutcome};
pub use config::{SipConfig, SipTls};
pub use control::TransferFailure;
pub use error::{DialError, TelephonyError};
pub use outbound::{dial_uri, DialRequest, DialUriOptions};
pub use register::TrunkReload;
pub use rtp::{MediaConfig, MediaEngine, MediaLeg};
pub use server::Telephony;
pub use tls::TlsError;
