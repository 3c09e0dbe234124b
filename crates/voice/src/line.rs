//! The engine's view of a phone line: audio and keys in, audio out, and the
//! telephony verbs (hang up, transfer). Telephony adapts its SIP call to
//! this; tests drive it with channels.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchboard_media::Frame;
use tokio::sync::mpsc;

/// What the line delivers, in order.
// `Frame` inline on purpose: 50 per second per call, no allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LineEvent {
    /// 20 ms of caller audio, every 20 ms once the call is answered.
    Audio(Frame),
    /// A key the caller pressed (RFC 4733 event).
    Dtmf(char),
    /// The far end hung up (or media stopped for good).
    Hangup { reason: String },
}

/// The result of [`LineControl::transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferResult {
    /// The rep answered; the line's media is now bridged to them and the
    /// engine must stop playing into it.
    Connected,
    /// Nobody could be reached; the caller is still on the line with us.
    Failed { reason: String },
}

pub type TransferFuture = Pin<Box<dyn Future<Output = TransferResult> + Send>>;

/// Telephony verbs the engine needs. Cheap to call from the engine's loop.
pub trait LineControl: Send + Sync + 'static {
    /// End the call from our side, with a reason in words for the session.
    fn hangup(&self, reason: &str);
    /// Dial `target` (E.164 or a SIP URI) and bridge the caller to it.
    fn transfer(&self, target: &str) -> TransferFuture;
    /// Send keys (RFC 4733) to the far end; the test caller uses it.
    fn send_dtmf(&self, _digits: &str) {}
}

/// One answered call as the engine sees it.
pub struct Line {
    pub events: mpsc::Receiver<LineEvent>,
    /// Frames to the caller; the media task takes one per 20 ms, so keep the
    /// capacity small (2): anything queued here cannot be taken back on a
    /// barge-in.
    pub audio_out: mpsc::Sender<Frame>,
    pub control: Arc<dyn LineControl>,
}
