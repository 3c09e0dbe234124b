//! [`bridge`]: relay two running legs through us (live transfer).
//!
//! Bridging takes both legs' tasks over. Each leg hands its sockets, port
//! claim, recording and counters to one bridge task (`leg::Detached`), which
//! from then on drives both legs' sockets itself. A packet from one peer is
//! checked (`relay::Inbound`), recorded, rewritten in place as ours
//! (`relay::Outbound`: our SSRC, continuous sequence numbers and RTP clock,
//! the other leg's payload type) and sent to the other peer in the same
//! wake-up: no queue between tasks, no 20 ms pacing tick, no jitter buffer,
//! and no decode or encode unless the legs negotiated different G.711 laws
//! (then a 256-byte table translates the payload). Telephone-events are
//! forwarded the same way, with the payload type mapped; a leg that did not
//! negotiate them gets none.
//!
//! The legs' [`MediaHandle`]s keep working: their commands (stop, re-INVITE,
//! DTMF) now reach the bridge task. Recording continues on the side of the
//! forwarding: each leg records what its peer sent (left) and what we sent
//! it (right), decoded from the forwarded packets and placed by their RTP
//! timestamps. A small reorder window (`relay::Tape`) holds the newest
//! 120–140 ms of each direction's recording so a packet overtaken on the
//! way in still fills its slot; it is flushed when the bridge ends. The
//! forwarding never waits for it.
//!
//! # The run loop
//!
//! ```text
//! loop {                                  // one task per bridged call
//!     stop requested                  => end Cancelled
//!     command on a leg                => Stop (end) | Remote(sdp) | Dtmf(digits)
//!     rtp datagram on A (then on B)   => check, record, rewrite, send from B's socket at once
//!     rtcp datagram                   => peer's reports into stats
//!     timer (RTCP every 5 s, RTP timeout, our digits, stats) => housekeeping
//! }
//! then both legs end: recordings finalised, ports freed, closed() completes
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use switchboard_media::rtcp::{RtcpPacket, SenderReport};
use switchboard_media::{DtmfDigit, Frame, MediaError};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Sleep;
use tracing::Instrument;

use crate::leg::{
    lock, ntp_now, Command, Detached, Leg, MediaEvent, MediaHandle, MediaLeg, DTMF_DURATION,
    RELATCH_AFTER, RTCP_INTERVAL,
};
use crate::ports::PortGuard;
use crate::relay::{Accepted, Inbound, InboundStart, Kind, Outbound, OutboundStart, Tape};

/// Datagrams read from one socket before the task yields to others.
const BUDGET: usize = 32;
/// How often a bridged leg's counters reach [`MediaHandle::stats`].
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// How long after a key press's last packet its end is looked for.
const DTMF_CHECK_AFTER: Duration = Duration::from_millis(250);
/// Largest datagram read; longer ones are truncated and then rejected.
const MAX_DATAGRAM: usize = 2048;

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
    stop: mpsc::UnboundedSender<()>,
    ended: watch::Receiver<Option<BridgeEnd>>,
    /// True once the bridge task drives both legs.
    running: watch::Receiver<bool>,
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

    /// Waits until the bridge task has taken both legs over: from then on
    /// every packet is forwarded (before, a leg's own task may still take a
    /// packet or two for the engine). Returns at once if the bridge ended.
    pub async fn running(&self) {
        let mut running = self.running.clone();
        let mut ended = self.ended.clone();
        tokio::select! {
            _ = running.wait_for(|r| *r) => {}
            _ = ended.wait_for(Option::is_some) => {}
        }
    }

    /// Ends the bridge and stops both legs.
    pub fn stop(&self) {
        // An error: the bridge has already ended.
        let _ = self.stop.send(());
    }

    /// The two legs' handles (stats, DTMF), `a` first.
    pub fn legs(&self) -> (MediaHandle, MediaHandle) {
        (self.a.clone(), self.b.clone())
    }
}

/// Relays media between two legs through us (live transfer): each packet
/// is forwarded to the other leg as it arrives. Recording of either leg
/// continues: left = its peer, right = the other leg's peer. Ends when
/// either side stops or times out, or on [`BridgeHandle::stop`]; then both
/// legs stop.
///
/// Spawns a task: call from inside a tokio runtime.
pub fn bridge(a: MediaLeg, b: MediaLeg) -> BridgeHandle {
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let (ended_tx, ended_rx) = watch::channel(None);
    let (running_tx, running_rx) = watch::channel(false);
    let handle = BridgeHandle {
        stop: stop_tx,
        ended: ended_rx,
        running: running_rx,
        a: a.handle(),
        b: b.handle(),
    };
    let span = tracing::debug_span!(
        "bridge",
        a = handle.a.local_addr().port(),
        b = handle.b.local_addr().port()
    );
    tokio::spawn(run(a, b, stop_rx, ended_tx, running_tx).instrument(span));
    handle
}

async fn run(
    mut a: MediaLeg,
    mut b: MediaLeg,
    stop: mpsc::UnboundedReceiver<()>,
    ended: watch::Sender<Option<BridgeEnd>>,
    running: watch::Sender<bool>,
) {
    // The legs keep their channels until they have handed over: a leg whose
    // `events` closed would stop on its own.
    let (detached_a, detached_b) = tokio::join!(a.handle().detach(), b.handle().detach());
    // A timeout the previous consumer left unread still counts: that peer
    // is gone. (Unread audio is simply stale.)
    let mut stale_end = None;
    for (side, leg) in [(BridgeSide::A, &mut a), (BridgeSide::B, &mut b)] {
        while let Ok(event) = leg.events.try_recv() {
            if event == MediaEvent::RtpTimeout {
                stale_end = stale_end.or(Some(BridgeEnd::RtpTimeout(side)));
            }
        }
    }
    drop((a, b));
    let end = match (detached_a, detached_b) {
        (Ok(a), Ok(b)) => {
            let mut driver = Driver::new(a, b, stop);
            running.send_replace(true);
            let end = match stale_end {
                Some(end) => end,
                None => std::future::poll_fn(|cx| driver.poll(cx)).await,
            };
            driver.finish(end);
            end
        }
        (Err(_), b) => {
            if let Ok(b) = b {
                b.finish();
            }
            BridgeEnd::Stopped(BridgeSide::A)
        }
        (Ok(a), Err(_)) => {
            a.finish();
            BridgeEnd::Stopped(BridgeSide::B)
        }
    };
    let _ = ended.send(Some(end));
}

/// Both legs of a bridged call and what drives them.
///
/// The task has three groups of wake-up sources: A's RTP socket, B's RTP
/// socket, and everything else (stop, commands, RTCP, the timer), which is
/// rare. Each group registers its own [`Source`] waker, so a wake-up polls
/// only the group that asked for it: a packet costs one socket poll, not
/// seven.
struct Driver {
    a: Side,
    b: Side,
    stop: mpsc::UnboundedReceiver<()>,
    stop_open: bool,
    buf: Box<[u8]>,
    scratch: Vec<u8>,
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
    next_publish: Instant,
    sources: Sources,
}

/// A waker for one group of wake-up sources: it marks the group ready and
/// wakes the bridge task.
#[derive(Debug)]
struct Source {
    ready: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Source {
    fn new() -> Arc<Self> {
        Arc::new(Source {
            // Everything is polled once at the start.
            ready: AtomicBool::new(true),
            task: Mutex::new(None),
        })
    }

    /// Whether the group asked to be polled since the last call.
    fn take(&self) -> bool {
        self.ready.swap(false, Ordering::AcqRel)
    }
}

impl Wake for Source {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        if let Some(task) = lock(&self.task).as_ref() {
            task.wake_by_ref();
        }
    }
}

/// The three groups' sources and their wakers.
struct Sources {
    rtp_a: Arc<Source>,
    rtp_b: Arc<Source>,
    control: Arc<Source>,
    rtp_a_waker: Waker,
    rtp_b_waker: Waker,
    control_waker: Waker,
    /// The task's waker as last handed to the sources.
    task: Option<Waker>,
}

impl Sources {
    fn new() -> Self {
        let (rtp_a, rtp_b, control) = (Source::new(), Source::new(), Source::new());
        Sources {
            rtp_a_waker: Waker::from(Arc::clone(&rtp_a)),
            rtp_b_waker: Waker::from(Arc::clone(&rtp_b)),
            control_waker: Waker::from(Arc::clone(&control)),
            rtp_a,
            rtp_b,
            control,
            task: None,
        }
    }

    /// Makes the sources wake the task behind `waker`.
    fn register(&mut self, waker: &Waker) {
        if self.task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            return;
        }
        for source in [&self.rtp_a, &self.rtp_b, &self.control] {
            *lock(&source.task) = Some(waker.clone());
        }
        self.task = Some(waker.clone());
    }
}

impl Driver {
    fn new(a: Detached, b: Detached, stop: mpsc::UnboundedReceiver<()>) -> Self {
        let now = Instant::now();
        let (a, b) = (
            Side::new(BridgeSide::A, a, now),
            Side::new(BridgeSide::B, b, now),
        );
        let armed = now + PUBLISH_EVERY;
        Driver {
            a,
            b,
            stop,
            stop_open: true,
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            scratch: Vec::with_capacity(256),
            sleep: Box::pin(tokio::time::sleep_until(armed.into())),
            armed,
            next_publish: armed,
            sources: Sources::new(),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<BridgeEnd> {
        self.sources.register(cx.waker());
        if self.sources.control.take() {
            let waker = self.sources.control_waker.clone();
            let mut control = Context::from_waker(&waker);
            if let Some(end) = self.poll_control(&mut control) {
                return Poll::Ready(end);
            }
        }
        let Driver {
            a, b, buf, sources, ..
        } = self;
        if sources.rtp_a.take() {
            let waker = &sources.rtp_a_waker;
            if poll_rtp(a, b, buf, &mut Context::from_waker(waker)) {
                // Budget spent with datagrams still waiting: let other
                // calls run, then come back.
                waker.wake_by_ref();
            }
        }
        if sources.rtp_b.take() {
            let waker = &sources.rtp_b_waker;
            if poll_rtp(b, a, buf, &mut Context::from_waker(waker)) {
                waker.wake_by_ref();
            }
        }
        // A packet can move the timer (stats to publish).
        if self.next_deadline() != self.armed {
            let waker = self.sources.control_waker.clone();
            if let Some(end) = self.poll_timer(&mut Context::from_waker(&waker)) {
                return Poll::Ready(end);
            }
        }
        Poll::Pending
    }

    /// Polls the rare sources: stop, commands, RTCP, the timer.
    fn poll_control(&mut self, cx: &mut Context<'_>) -> Option<BridgeEnd> {
        if self.stop_open {
            match self.stop.poll_recv(cx) {
                Poll::Ready(Some(())) => return Some(BridgeEnd::Cancelled),
                // Every handle dropped: run until a leg ends.
                Poll::Ready(None) => self.stop_open = false,
                Poll::Pending => {}
            }
        }
        for side in [BridgeSide::A, BridgeSide::B] {
            if let Some(end) = self.poll_commands(side, cx) {
                return Some(end);
            }
        }
        let Driver { a, b, buf, .. } = self;
        poll_rtcp(a, buf, cx);
        poll_rtcp(b, buf, cx);
        self.poll_timer(cx)
    }

    /// Runs housekeeping when the timer fired and re-arms it.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<BridgeEnd> {
        for _ in 0..4 {
            if self.sleep.as_mut().poll(cx).is_ready() {
                if let Some(end) = self.housekeeping(Instant::now()) {
                    return Some(end);
                }
            }
            let deadline = self.next_deadline();
            if deadline == self.armed {
                return None;
            }
            self.armed = deadline;
            self.sleep.as_mut().reset(deadline.into());
        }
        // Still due after four rounds: come back after other tasks ran.
        cx.waker().wake_by_ref();
        None
    }

    fn poll_commands(&mut self, which: BridgeSide, cx: &mut Context<'_>) -> Option<BridgeEnd> {
        let side = self.side(which);
        while side.commands_open {
            match side.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Stop)) => return Some(BridgeEnd::Stopped(which)),
                Poll::Ready(Some(Command::Remote(negotiated))) => {
                    side.apply_remote(negotiated, Instant::now())
                }
                Poll::Ready(Some(Command::Dtmf(digits))) => side.queue_digits(&digits),
                // Already bridged: dropping the reply says so.
                Poll::Ready(Some(Command::Detach(_))) => {}
                // Every handle dropped: run until the bridge ends otherwise.
                Poll::Ready(None) => side.commands_open = false,
                Poll::Pending => break,
            }
        }
        None
    }

    fn side(&mut self, which: BridgeSide) -> &mut Side {
        match which {
            BridgeSide::A => &mut self.a,
            BridgeSide::B => &mut self.b,
        }
    }

    /// Everything due by `now` that no packet triggers.
    fn housekeeping(&mut self, now: Instant) -> Option<BridgeEnd> {
        for which in [BridgeSide::A, BridgeSide::B] {
            let scratch = &mut self.scratch;
            let side = match which {
                BridgeSide::A => &mut self.a,
                BridgeSide::B => &mut self.b,
            };
            if side.housekeeping(now, scratch) {
                return Some(BridgeEnd::RtpTimeout(which));
            }
        }
        if now >= self.next_publish {
            self.next_publish = now + PUBLISH_EVERY;
            for side in [&mut self.a, &mut self.b] {
                if side.dirty {
                    side.publish();
                }
            }
        }
        None
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.a.next_deadline().min(self.b.next_deadline());
        if self.a.dirty || self.b.dirty {
            deadline = deadline.min(self.next_publish);
        }
        deadline
    }

    fn finish(self, end: BridgeEnd) {
        // Wakers left registered in the legs' command channels (held by
        // their handles) must not keep this task's memory alive.
        for source in [
            &self.sources.rtp_a,
            &self.sources.rtp_b,
            &self.sources.control,
        ] {
            *lock(&source.task) = None;
        }
        tracing::debug!(
            ?end,
            a_to_b = self.b.leg.stats.packets_out,
            b_to_a = self.a.leg.stats.packets_out,
            "bridge ended"
        );
        // Both tapes first: each records on both legs.
        let (mut a, mut b) = (self.a, self.b);
        flush_tape(&mut a, &mut b);
        flush_tape(&mut b, &mut a);
        a.finish();
        b.finish();
    }
}

/// One bridged leg: what its task owned, plus the bridged packet path.
struct Side {
    which: BridgeSide,
    leg: Leg,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    guard: PortGuard,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    done: watch::Sender<bool>,
    inbound: Inbound,
    outbound: Outbound,
    /// The peer's audio, cut into frames for the recordings (the newest
    /// ~130 ms held back for late packets).
    tape: Tape,
    /// When to look again for the peer's silence.
    timeout_check: Instant,
    /// When to look for the end of a key press whose end packets are lost.
    dtmf_check: Option<Instant>,
    /// Counters changed since the last publish.
    dirty: bool,
}

impl Side {
    fn new(which: BridgeSide, detached: Detached, now: Instant) -> Self {
        let Detached {
            leg,
            rtp,
            rtcp,
            guard,
            commands,
            done,
            next_tick,
        } = detached;
        let inbound = Inbound::new(InboundStart {
            audio: leg.negotiated.accepted.clone(),
            telephone_event: leg.negotiated.telephone_event,
            relatch_after: RELATCH_AFTER,
            latched: leg.session.remote(),
            ssrc: leg.session.remote_ssrc(),
            last_packet_at: (leg.stats.packets_in > 0).then_some(leg.last_rtp_at),
            last_audio_at: leg.last_audio_at,
            lost_before: leg.session.stats().lost,
        });
        let packets_out = u32::try_from(leg.stats.packets_out).unwrap_or(u32::MAX);
        let header_bytes = leg.stats.packets_out.saturating_mul(12);
        let outbound = Outbound::new(OutboundStart {
            ssrc: leg.packetizer.ssrc(),
            codec: leg.negotiated.codec,
            payload_type: leg.negotiated.payload_type,
            telephone_event: leg.negotiated.telephone_event,
            next_seq: leg
                .last_sequence
                .map_or_else(rand::random, |s| s.wrapping_add(1)),
            clock: (next_tick, leg.packetizer.timestamp()),
            packets_sent: leg.packetizer.packets_sent().max(packets_out),
            octets_sent: leg.stats.bytes_out.saturating_sub(header_bytes) as u32,
        });
        let timeout_check = now + leg.config.no_rtp_timeout.min(Duration::from_secs(1));
        Side {
            which,
            leg,
            rtp,
            rtcp,
            guard,
            commands,
            commands_open: true,
            done,
            inbound,
            outbound,
            tape: Tape::default(),
            timeout_check,
            dtmf_check: None,
            dirty: false,
        }
    }

    fn apply_remote(&mut self, negotiated: crate::negotiate::Negotiated, now: Instant) {
        let current = &self.leg.negotiated;
        let codec_changed = negotiated.payload_type != current.payload_type
            || negotiated.codec != current.codec
            || negotiated.telephone_event != current.telephone_event
            || negotiated.accepted != current.accepted;
        if codec_changed {
            self.inbound
                .renegotiate(negotiated.accepted.clone(), negotiated.telephone_event);
            self.outbound.renegotiate(
                negotiated.codec,
                negotiated.payload_type,
                negotiated.telephone_event,
            );
        }
        if codec_changed || negotiated.remote_rtp != current.remote_rtp {
            // The media may have moved: latch again to whatever comes next.
            self.inbound.relatch();
            self.leg.rtcp_source = None;
        }
        tracing::debug!(
            side = ?self.which,
            direction = negotiated.direction.as_str(),
            "bridged leg renegotiated"
        );
        self.leg.stats.codec = Some(negotiated.codec);
        self.leg.stats.direction = negotiated.direction;
        self.leg.negotiated = negotiated;
        // A new negotiation restarts the silence clock (e.g. on unhold).
        self.leg.last_rtp_at = now;
        self.leg.timed_out = false;
        self.timeout_check = after(now, self.leg.config.no_rtp_timeout);
        self.dirty = true;
    }

    fn queue_digits(&mut self, digits: &str) {
        for c in digits.chars() {
            match DtmfDigit::from_char(c) {
                Some(digit) if self.outbound.send_dtmf(digit) => self.leg.stats.dtmf_out += 1,
                Some(_) => tracing::warn!(?c, "dtmf not sent: not negotiated or queue full"),
                None => tracing::debug!(?c, "not a dtmf key; skipped"),
            }
        }
        self.dirty = true;
    }

    /// Runs what is due; true when the peer has been silent too long.
    fn housekeeping(&mut self, now: Instant, scratch: &mut Vec<u8>) -> bool {
        if self.dtmf_check.is_some_and(|at| now >= at) {
            self.inbound.handle_timeout(now);
            self.drain_dtmf();
            self.dtmf_check = self.inbound.dtmf_active().then_some(now + DTMF_CHECK_AFTER);
        }
        if now >= self.timeout_check {
            let timeout = self.leg.config.no_rtp_timeout;
            let silent = now.saturating_duration_since(self.leg.last_rtp_at);
            if self.leg.negotiated.direction.receives() && !self.leg.timed_out && silent >= timeout
            {
                self.leg.timed_out = true;
                tracing::info!(side = ?self.which, ?timeout, "no rtp from the peer");
                return true;
            }
            self.timeout_check =
                after(self.leg.last_rtp_at, timeout).max(now + Duration::from_millis(20));
        }
        if now >= self.leg.next_rtcp {
            self.leg.next_rtcp = now + RTCP_INTERVAL;
            self.send_sender_report(now, scratch);
        }
        let units = (DTMF_DURATION.as_millis() * 8) as u32;
        while self.outbound.dtmf_due().is_some_and(|at| now >= at) {
            if !self.outbound.poll_dtmf(now, units, scratch) {
                if self.outbound.dtmf_due().is_some_and(|at| now >= at) {
                    continue;
                }
                break;
            }
            self.send_rtp(scratch);
        }
        false
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.timeout_check.min(self.leg.next_rtcp);
        if let Some(at) = self.dtmf_check {
            deadline = deadline.min(at);
        }
        if let Some(at) = self.outbound.dtmf_due() {
            deadline = deadline.min(at);
        }
        deadline
    }

    fn destination(&self) -> Option<SocketAddr> {
        if !self.leg.negotiated.direction.sends() {
            return None;
        }
        self.inbound.remote().or(self.leg.negotiated.remote_rtp)
    }

    fn send_rtp(&mut self, packet: &[u8]) {
        let Some(to) = self.destination() else {
            return;
        };
        match self.rtp.try_send_to(packet, to) {
            Ok(_) => {
                self.leg.stats.packets_out += 1;
                self.leg.stats.bytes_out += packet.len() as u64;
                self.dirty = true;
            }
            // A full send buffer drops the datagram like the network would.
            Err(error) => tracing::trace!(%error, %to, "rtp send failed"),
        }
    }

    fn send_sender_report(&mut self, now: Instant, scratch: &mut Vec<u8>) {
        let destination = self
            .leg
            .rtcp_source
            .or_else(|| match self.inbound.remote() {
                Some(latched) if Some(latched) != self.leg.negotiated.remote_rtp => Some(
                    SocketAddr::new(latched.ip(), latched.port().checked_add(1)?),
                ),
                _ => self.leg.negotiated.remote_rtcp,
            });
        let Some(destination) = destination else {
            return;
        };
        let (packet_count, octet_count) = self.outbound.counts();
        scratch.clear();
        SenderReport {
            ssrc: self.outbound.ssrc(),
            ntp: ntp_now(),
            rtp_timestamp: self.outbound.timestamp_at(now),
            packet_count,
            octet_count,
            reports: self.inbound.report_block(now).into_iter().collect(),
        }
        .write(scratch);
        match self.rtcp.try_send_to(scratch, destination) {
            Ok(_) => self.leg.stats.rtcp_out += 1,
            Err(error) => tracing::trace!(%error, %destination, "rtcp send failed"),
        }
        self.dirty = true;
    }

    fn handle_rtcp(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        let packets = match self.inbound.handle_rtcp(now, datagram, from) {
            Ok(packets) => packets,
            Err(error) => {
                tracing::trace!(%error, %from, "rtcp packet dropped");
                return;
            }
        };
        self.leg.stats.rtcp_in += 1;
        self.leg.rtcp_source = Some(from);
        let ours = self.outbound.ssrc();
        for packet in packets {
            let reports = match packet {
                RtcpPacket::SenderReport(sr) => sr.reports,
                RtcpPacket::ReceiverReport(rr) => rr.reports,
                RtcpPacket::Bye(bye) => {
                    tracing::debug!(side = ?self.which, reason = ?bye.reason, "rtcp bye");
                    continue;
                }
                _ => continue,
            };
            for block in reports.into_iter().filter(|b| b.ssrc == ours) {
                self.leg.stats.remote_fraction_lost = Some(f32::from(block.fraction_lost) / 256.0);
                self.leg.stats.remote_jitter_ms = Some(f64::from(block.jitter) / 8.0);
            }
        }
        self.dirty = true;
    }

    fn drain_dtmf(&mut self) {
        while let Some(dtmf) = self.inbound.poll_dtmf() {
            self.leg.stats.dtmf_in += 1;
            tracing::debug!(side = ?self.which, digit = %dtmf.digit, ms = dtmf.duration_ms(), end = ?dtmf.end, "dtmf");
        }
    }

    fn publish(&mut self) {
        self.leg.stats.lost = self.inbound.lost();
        self.leg.stats.jitter_ms = self.inbound.jitter_ms();
        self.leg.stats.latched = self.inbound.remote();
        *lock(&self.leg.shared.stats) = self.leg.stats.clone();
        self.dirty = false;
    }

    fn finish(mut self) {
        self.leg.end_recording();
        self.publish();
        lock(&self.leg.shared.stats).ended = true;
        tracing::debug!(
            side = ?self.which,
            packets_in = self.leg.stats.packets_in,
            packets_out = self.leg.stats.packets_out,
            "bridged leg ended"
        );
        let Side {
            rtp,
            rtcp,
            guard,
            done,
            ..
        } = self;
        // Free the ports before saying we are done, so `closed()` means
        // reusable.
        drop((rtp, rtcp, guard));
        let _ = done.send(true);
    }
}

/// `at + wait`, or a day after `at` when a configured wait is too large to
/// add (a config file is input too).
fn after(at: Instant, wait: Duration) -> Instant {
    const DAY: Duration = Duration::from_secs(86_400);
    at.checked_add(wait)
        .or_else(|| at.checked_add(DAY))
        .unwrap_or(at)
}

/// Reads what `from`'s RTP socket holds and forwards it through `to`; true
/// when the budget ran out before the socket did.
fn poll_rtp(from: &mut Side, to: &mut Side, buf: &mut [u8], cx: &mut Context<'_>) -> bool {
    for _ in 0..BUDGET {
        let mut read = ReadBuf::new(buf);
        match from.rtp.poll_recv_from(cx, &mut read) {
            Poll::Ready(Ok(source)) => {
                let len = read.filled().len();
                if let Some(datagram) = buf.get_mut(..len) {
                    relay_rtp(Instant::now(), from, to, datagram, source);
                }
            }
            Poll::Ready(Err(error)) => tracing::debug!(%error, "rtp receive failed"),
            Poll::Pending => return false,
        }
    }
    true
}

fn poll_rtcp(side: &mut Side, buf: &mut [u8], cx: &mut Context<'_>) {
    for _ in 0..BUDGET {
        let mut read = ReadBuf::new(buf);
        match side.rtcp.poll_recv_from(cx, &mut read) {
            Poll::Ready(Ok(source)) => {
                let len = read.filled().len();
                if let Some(datagram) = buf.get(..len) {
                    side.handle_rtcp(Instant::now(), datagram, source);
                }
            }
            Poll::Ready(Err(error)) => tracing::debug!(%error, "rtcp receive failed"),
            Poll::Pending => return,
        }
    }
}

/// One datagram from `from`'s peer: checked, recorded on both legs,
/// rewritten in place and sent to `to`'s peer.
fn relay_rtp(
    now: Instant,
    from: &mut Side,
    to: &mut Side,
    datagram: &mut [u8],
    source: SocketAddr,
) {
    let accepted = match from.inbound.handle_packet(now, datagram, source) {
        Ok(accepted) => accepted,
        Err(error) => {
            from.leg.stats.rejected += 1;
            from.dirty = true;
            tracing::trace!(%error, %source, "rtp packet dropped");
            return;
        }
    };
    let stats = &mut from.leg.stats;
    stats.packets_in += 1;
    stats.bytes_in += datagram.len() as u64;
    from.leg.last_rtp_at = now;
    from.leg.timed_out = false;
    from.dirty = true;
    let destination = to.destination();
    match accepted.kind {
        Kind::Event => {
            from.drain_dtmf();
            from.dtmf_check = Some(now + DTMF_CHECK_AFTER);
        }
        Kind::Audio(_) if from.leg.recording.is_some() || to.leg.recording.is_some() => {
            record(now, from, to, destination.is_some(), datagram, &accepted);
        }
        Kind::Audio(_) => {}
    }
    let Some(destination) = destination else {
        to.outbound.interrupt();
        return;
    };
    let Some(range) = to.outbound.forward(now, datagram, &accepted) else {
        return;
    };
    let Some(packet) = datagram.get(range) else {
        return;
    };
    match to.rtp.try_send_to(packet, destination) {
        Ok(_) => {
            to.leg.stats.packets_out += 1;
            to.leg.stats.bytes_out += packet.len() as u64;
            to.dirty = true;
        }
        // A full send buffer drops the datagram like the network would.
        Err(error) => tracing::trace!(%error, %destination, "rtp send failed"),
    }
}

/// Records forwarded audio: on `from`'s recording as its peer (left), on
/// `to`'s as what we sent (right) when it was `sent` (not on hold). The
/// tape may hold it back a little for packets still on their way.
fn record(now: Instant, from: &mut Side, to: &mut Side, sent: bool, datagram: &[u8], p: &Accepted) {
    let mut recorders = Recorders::new(&mut from.leg, &mut to.leg);
    from.tape
        .push(now, datagram, p, sent, |at, frame: &Frame, sent| {
            recorders.push(at, frame, sent)
        });
    recorders.finish();
}

/// Records what `from`'s tape still holds (the bridge is ending), so the
/// recordings' tail is complete.
fn flush_tape(from: &mut Side, to: &mut Side) {
    let mut recorders = Recorders::new(&mut from.leg, &mut to.leg);
    from.tape
        .flush(|at, frame: &Frame, sent| recorders.push(at, frame, sent));
    recorders.finish();
}

/// Where one direction's recorded frames go: the sender's leg records them
/// as its peer (left), the other leg as what we sent it (right).
struct Recorders<'a> {
    from: &'a mut Leg,
    to: &'a mut Leg,
    left_error: Option<MediaError>,
    right_error: Option<MediaError>,
}

impl<'a> Recorders<'a> {
    fn new(from: &'a mut Leg, to: &'a mut Leg) -> Self {
        Recorders {
            from,
            to,
            left_error: None,
            right_error: None,
        }
    }

    fn push(&mut self, at: Instant, frame: &Frame, sent: bool) {
        if let Some(recording) = &mut self.from.recording {
            let ms = at.saturating_duration_since(self.from.start).as_millis() as u64;
            if let Err(error) = recording.push_remote(ms, frame) {
                self.left_error = Some(error);
            }
        }
        if let Some(recording) = self.to.recording.as_mut().filter(|_| sent) {
            let ms = at.saturating_duration_since(self.to.start).as_millis() as u64;
            if let Err(error) = recording.push_ours(ms, frame) {
                self.right_error = Some(error);
            }
        }
    }

    /// Stops a recording that failed; the call goes on.
    fn finish(self) {
        if let Some(error) = self.left_error {
            self.from.recording_failed(&error);
        }
        if let Some(error) = self.right_error {
            self.to.recording_failed(&error);
        }
    }
}
