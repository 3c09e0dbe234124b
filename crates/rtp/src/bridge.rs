//! [`bridge`]: relay two running legs through us (live transfer).
//!
//! A small task moves each leg's decoded frames into the other's
//! `audio_out` as they are produced, and forwards key presses as
//! telephone-events. Both legs tick every 20 ms on their own phase, so a
//! frame waits less than one tick in the queue. When the phases drift so
//! that a frame is still queued at every send for [`TRIM_AFTER`] frames in a
//! row, one frame is dropped to take the standing 20 ms back out: the added
//! delay stays under one frame at the cost of a rare 20 ms gap.
//!
//! Recording needs nothing special: leg `a` records what it hears (its
//! peer, left) and what it sends (b's audio, right).

use std::sync::Arc;

use switchboard_media::Frame;
use tokio::sync::{mpsc, watch, Notify};

use crate::leg::{MediaEvent, MediaHandle, MediaLeg};

/// Consecutive sends that found the queue non-empty before one frame is
/// dropped to cut delay.
pub const TRIM_AFTER: u32 = 25;

/// One of the two bridged legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BridgeSide {
    /// The first leg given to [`bridge`] (usually the caller).
    A,
    /// The second leg (usually the transfer target).
    B,
}

/// Why a bridge ended. Either way both legs are stopped and their
/// recordings finalised by the time [`BridgeHandle::wait`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeEnd {
    /// That leg's media task ended ([`MediaHandle::stop`], e.g. on BYE).
    Stopped(BridgeSide),
    /// That leg's peer stopped sending RTP.
    RtpTimeout(BridgeSide),
    /// [`BridgeHandle::stop`] was called.
    Cancelled,
}

impl BridgeEnd {
    /// The side that ended the bridge, if one did.
    pub fn side(self) -> Option<BridgeSide> {
        match self {
            BridgeEnd::Stopped(side) | BridgeEnd::RtpTimeout(side) => Some(side),
            BridgeEnd::Cancelled => None,
        }
    }
}

/// Controls a running bridge. Clone + Send + Sync.
#[derive(Clone, Debug)]
pub struct BridgeHandle {
    stop: Arc<Notify>,
    ended: watch::Receiver<Option<BridgeEnd>>,
    a: MediaHandle,
    b: MediaHandle,
}

impl BridgeHandle {
    /// Waits until the bridge ends and says why. Both legs are stopped by
    /// then.
    pub async fn wait(&self) -> BridgeEnd {
        let mut ended = self.ended.clone();
        let end = ended.wait_for(Option::is_some).await.map(|end| *end);
        // An error: the task is gone without a word (runtime shutdown).
        end.ok().flatten().unwrap_or(BridgeEnd::Cancelled)
    }

    /// Ends the bridge and stops both legs.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// The two legs' handles (stats, DTMF), `a` first.
    pub fn legs(&self) -> (MediaHandle, MediaHandle) {
        (self.a.clone(), self.b.clone())
    }
}

/// Relays media between two legs through us (live transfer). Recording of
/// `a` continues: left = a's peer, right = b's peer. Ends when either side
/// stops or times out, or on [`BridgeHandle::stop`]; then both legs stop.
///
/// Spawns a task: call from inside a tokio runtime.
pub fn bridge(a: MediaLeg, b: MediaLeg) -> BridgeHandle {
    let stop = Arc::new(Notify::new());
    let (ended_tx, ended_rx) = watch::channel(None);
    let handle = BridgeHandle {
        stop: Arc::clone(&stop),
        ended: ended_rx,
        a: a.handle(),
        b: b.handle(),
    };
    tokio::spawn(run(a, b, stop, ended_tx));
    handle
}

async fn run(
    mut a: MediaLeg,
    mut b: MediaLeg,
    stop: Arc<Notify>,
    ended: watch::Sender<Option<BridgeEnd>>,
) {
    let (a_handle, b_handle) = (a.handle(), b.handle());
    let mut to_b = Relay::default();
    let mut to_a = Relay::default();
    // Audio the previous consumer left unread is stale: relaying it would
    // start the bridge up to two seconds late.
    // A timeout among them still counts: that peer is gone.
    let mut stale_end = None;
    for (side, leg) in [(BridgeSide::A, &mut a), (BridgeSide::B, &mut b)] {
        while let Ok(event) = leg.events.try_recv() {
            if event == MediaEvent::RtpTimeout {
                stale_end = stale_end.or(Some(BridgeEnd::RtpTimeout(side)));
            }
        }
    }
    let end = match stale_end {
        Some(end) => end,
        None => relay(&mut a, &mut b, &stop, (&mut to_b, &mut to_a)).await,
    };
    tracing::debug!(
        ?end,
        trimmed_a_to_b = to_b.trimmed,
        trimmed_b_to_a = to_a.trimmed,
        "bridge ended"
    );
    a_handle.stop();
    b_handle.stop();
    a_handle.closed().await;
    b_handle.closed().await;
    let _ = ended.send(Some(end));
}

/// Moves frames and digits until one side ends or the bridge is stopped.
async fn relay(
    a: &mut MediaLeg,
    b: &mut MediaLeg,
    stop: &Notify,
    (to_b, to_a): (&mut Relay, &mut Relay),
) -> BridgeEnd {
    let (a_handle, b_handle) = (a.handle(), b.handle());
    loop {
        tokio::select! {
            biased;
            () = stop.notified() => return BridgeEnd::Cancelled,
            event = a.events.recv() => match event {
                None => return BridgeEnd::Stopped(BridgeSide::A),
                Some(MediaEvent::RtpTimeout) => return BridgeEnd::RtpTimeout(BridgeSide::A),
                Some(MediaEvent::Audio(frame)) => to_b.forward(&b.audio_out, frame),
                Some(MediaEvent::Dtmf(digit)) => b_handle.send_dtmf(digit.encode_utf8(&mut [0; 4])),
            },
            event = b.events.recv() => match event {
                None => return BridgeEnd::Stopped(BridgeSide::B),
                Some(MediaEvent::RtpTimeout) => return BridgeEnd::RtpTimeout(BridgeSide::B),
                Some(MediaEvent::Audio(frame)) => to_a.forward(&a.audio_out, frame),
                Some(MediaEvent::Dtmf(digit)) => a_handle.send_dtmf(digit.encode_utf8(&mut [0; 4])),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Relay {
    backlog: u32,
    trimmed: u64,
}

impl Relay {
    fn forward(&mut self, to: &mpsc::Sender<Frame>, frame: Frame) {
        let queued = to.max_capacity().saturating_sub(to.capacity());
        self.backlog = if queued > 0 { self.backlog + 1 } else { 0 };
        if self.backlog >= TRIM_AFTER {
            self.backlog = 0;
            self.trimmed += 1;
            return;
        }
        // Full: the other leg is behind; dropping is the same trim. Closed:
        // its events channel closes too, and the loop ends on that.
        let _ = to.try_send(frame);
    }
}
