//! The media task of one leg and the handles that talk to it.
//!
//! The task owns the two sockets, the sans-IO [`RtpSession`] (receive) and
//! [`Packetizer`] (send) and the recording. It wakes for a datagram, a
//! command, or the 20 ms tick; ticks are computed from the start instant
//! (`start + n × 20 ms`), so the pace never drifts, and a stall is caught up
//! by running the missed ticks back to back (at most [`MAX_CATCH_UP`]; a
//! longer stall skips ahead and is counted).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_media::rtcp::{self, RtcpPacket};
use switchboard_media::rtp::RtpPacket;
use switchboard_media::{
    Codec, DtmfDigit, Frame, Packetizer, RtpSession, SessionConfig, SessionEvent, FRAME_DURATION,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::MediaConfig;
use crate::negotiate::{self, LocalDescription, Negotiated};
use crate::ports::{Allocation, PortGuard};
use crate::recording::Recording;
use crate::sdp::{Direction, SessionDescription};
use crate::RtpError;

/// Frames the voice engine may queue towards the peer: enough to ride out
/// scheduling jitter, few enough that barge-in stops playback at once.
pub const AUDIO_OUT_CAPACITY: usize = 2;
/// Events buffered for a slow consumer (two seconds of audio) before audio
/// events are dropped and counted.
pub const EVENTS_CAPACITY: usize = 100;
/// Ticks run back to back after a stall before the clock skips ahead.
const MAX_CATCH_UP: u32 = 10;
/// Interval between our RTCP sender reports (RFC 3550 suggests 5 s).
pub(crate) const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// How long the latched source (and the current SSRC) must be silent before
/// another may take over.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);
/// Length of a DTMF key press we send.
pub(crate) const DTMF_DURATION: Duration = Duration::from_millis(100);

/// What a running leg reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // reason: Audio is 50 of every 50-and-a-bit events; boxing would allocate per frame
pub enum MediaEvent {
    /// The peer's audio for one 20 ms tick: exactly one per tick once the
    /// leg has started; concealment or silence when nothing arrived.
    Audio(Frame),
    /// A key press (`0`–`9`, `*`, `#`, `A`–`D`), reported when it ends.
    Dtmf(char),
    /// No RTP for [`MediaConfig::no_rtp_timeout`] while the peer should be
    /// sending. Reported once per silence; the leg keeps running.
    RtpTimeout,
}

/// A running leg: its event stream, its audio input and a handle.
///
/// Dropping `events` (or the whole leg) stops the task like
/// [`MediaHandle::stop`]: nobody is listening any more.
#[derive(Debug)]
pub struct MediaLeg {
    /// Peer audio (one frame per 20 ms), DTMF and timeouts.
    pub events: mpsc::Receiver<MediaEvent>,
    /// Our audio: the task takes one frame per 20 ms and sends silence when
    /// the queue is empty. Capacity [`AUDIO_OUT_CAPACITY`].
    pub audio_out: mpsc::Sender<Frame>,
    handle: MediaHandle,
}

impl MediaLeg {
    /// A handle for controlling the leg without owning its channels.
    pub fn handle(&self) -> MediaHandle {
        self.handle.clone()
    }
}

/// Controls a running leg. Clone + Send + Sync; calls after the leg ended
/// are no-ops (or [`RtpError::Stopped`]).
#[derive(Clone, Debug)]
pub struct MediaHandle {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    done: watch::Receiver<bool>,
}

/// Counters and state of a leg, as of its last tick.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MediaStats {
    /// RTP packets accepted (audio and telephone-events).
    pub packets_in: u64,
    /// Bytes of accepted RTP packets.
    pub bytes_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Bytes of RTP packets sent.
    pub bytes_out: u64,
    /// Audio packets lost (RFC 3550 cumulative; negative with duplicates).
    pub lost: i64,
    /// Datagrams dropped: malformed, not negotiated, wrong size, foreign
    /// source or SSRC.
    pub rejected: u64,
    /// Ticks played from concealment.
    pub concealed: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Key presses received.
    pub dtmf_in: u64,
    /// Key presses sent.
    pub dtmf_out: u64,
    /// The source we latched to (symmetric RTP), if any.
    pub latched: Option<SocketAddr>,
    /// The codec we send.
    pub codec: Option<Codec>,
    /// Our current direction.
    pub direction: Direction,
    /// RTCP packets received (well-formed, from the peer's host).
    pub rtcp_in: u64,
    /// RTCP packets sent.
    pub rtcp_out: u64,
    /// The loss fraction (0–1) the peer last reported about our stream.
    pub remote_fraction_lost: Option<f32>,
    /// The jitter (ms) the peer last reported about our stream.
    pub remote_jitter_ms: Option<f64>,
    /// Events dropped because the consumer did not keep up.
    pub events_dropped: u64,
    /// Ticks skipped after a stall longer than the catch-up limit.
    pub ticks_skipped: u64,
    /// Whether the recording is being written.
    pub recording: bool,
    /// Why the recording stopped early (e.g. disk full); the call went on.
    pub recording_error: Option<String>,
    /// Whether the task has ended.
    pub ended: bool,
}

impl MediaHandle {
    /// Applies a re-INVITE's offer (hold with `sendonly`/`inactive`, unhold,
    /// new address or codec) and returns our answer.
    pub fn update_remote(&self, sdp: &str) -> Result<String, RtpError> {
        // The task reports done before its command receiver is dropped, so
        // a send could still succeed after `closed()`: ask `done` instead.
        if self.is_closed() {
            return Err(RtpError::Stopped);
        }
        let offer = SessionDescription::parse(sdp)?;
        let (index, negotiated) = negotiate::answer(&offer)?;
        let mut negotiation = lock(&self.shared.negotiation);
        self.commands
            .send(Command::Remote(negotiated.clone()))
            .map_err(|_| RtpError::Stopped)?;
        Ok(negotiation.render_answer(&offer, index, &negotiated))
    }

    /// Sends `digits` as RFC 4733 telephone-events, one after the other
    /// (100 ms each, 60 ms apart). Characters that are not DTMF keys are
    /// skipped.
    pub fn send_dtmf(&self, digits: &str) {
        let _ = self.commands.send(Command::Dtmf(digits.to_owned()));
    }

    /// The leg's counters as of its last tick.
    pub fn stats(&self) -> MediaStats {
        lock(&self.shared.stats).clone()
    }

    /// Ends the task; the recording is finalised and the ports freed shortly
    /// after (await [`Self::closed`] to know when).
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// The local RTP address (bind address and port).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Asks the leg's task to hand itself over to a bridge. The receiver
    /// fails when the task has already ended.
    pub(crate) fn detach(&self) -> oneshot::Receiver<Detached> {
        let (tx, rx) = oneshot::channel();
        // A send error drops `tx`: the receiver then reports the leg gone.
        let _ = self.commands.send(Command::Detach(tx));
        rx
    }

    /// Whether the task has ended.
    pub fn is_closed(&self) -> bool {
        *self.done.borrow()
    }

    /// Completes when the task has ended, its recording finalised and its
    /// ports freed.
    pub async fn closed(&self) {
        let mut done = self.done.clone();
        // An error means the task is gone without saying so (its runtime
        // shut down): closed either way.
        let _ = done.wait_for(|d| *d).await;
    }
}

pub(crate) enum Command {
    Remote(Negotiated),
    Dtmf(String),
    Stop,
    /// Hand the leg's sockets and state to a bridge, which drives them from
    /// then on (see [`Detached`]).
    Detach(oneshot::Sender<Detached>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Remote(n) => f.debug_tuple("Remote").field(n).finish(),
            Command::Dtmf(d) => f.debug_tuple("Dtmf").field(d).finish(),
            Command::Stop => f.write_str("Stop"),
            Command::Detach(_) => f.write_str("Detach"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    local_addr: SocketAddr,
    negotiation: Mutex<LocalDescription>,
    pub(crate) stats: Mutex<MediaStats>,
}

/// A running leg taken over by a bridge: everything its task owned, so the
/// bridge's task can drive both legs' sockets itself. The leg's
/// [`MediaHandle`]s keep working: their commands now reach the bridge.
pub(crate) struct Detached {
    pub(crate) leg: Leg,
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    pub(crate) guard: PortGuard,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) done: watch::Sender<bool>,
    /// When the leg's next 20 ms tick was due: our RTP clock's anchor.
    pub(crate) next_tick: Instant,
}

impl Detached {
    /// Ends the leg as its own task would have: recording finalised, ports
    /// freed, then `closed()` completes.
    pub(crate) fn finish(self) {
        let Detached {
            leg,
            rtp,
            rtcp,
            guard,
            done,
            ..
        } = self;
        leg.finish();
        drop((rtp, rtcp, guard));
        let _ = done.send(true);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data, consistent after any panic mid-update.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct LegParts {
    pub(crate) config: MediaConfig,
    pub(crate) allocation: Allocation,
    pub(crate) negotiated: Negotiated,
    pub(crate) recorder: Option<PathBuf>,
}

pub(crate) fn spawn(parts: LegParts, local: LocalDescription) -> MediaLeg {
    let (events_tx, events_rx) = mpsc::channel(EVENTS_CAPACITY);
    let (audio_tx, audio_rx) = mpsc::channel(AUDIO_OUT_CAPACITY);
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = watch::channel(false);
    let local_addr = parts.allocation.rtp.local_addr().unwrap_or_else(|_| {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            parts.allocation.guard.port(),
        )
    });
    // What `stats()` says before the first tick.
    let stats = MediaStats {
        codec: Some(parts.negotiated.codec),
        direction: parts.negotiated.direction,
        recording: parts.recorder.is_some(),
        ..MediaStats::default()
    };
    let shared = Arc::new(Shared {
        local_addr,
        negotiation: Mutex::new(local),
        stats: Mutex::new(stats),
    });
    let handle = MediaHandle {
        shared: Arc::clone(&shared),
        commands: commands_tx,
        done: done_rx,
    };
    let span = tracing::debug_span!("rtp", port = parts.allocation.guard.port());
    let channels = Channels {
        events: events_tx,
        audio_out: audio_rx,
        commands: commands_rx,
        done: done_tx,
    };
    tokio::spawn(tracing::Instrument::instrument(
        run(parts, channels, shared),
        span,
    ));
    MediaLeg {
        events: events_rx,
        audio_out: audio_tx,
        handle,
    }
}

struct Channels {
    events: mpsc::Sender<MediaEvent>,
    audio_out: mpsc::Receiver<Frame>,
    commands: mpsc::UnboundedReceiver<Command>,
    done: watch::Sender<bool>,
}

async fn run(parts: LegParts, channels: Channels, shared: Arc<Shared>) {
    let Channels {
        events,
        audio_out,
        mut commands,
        done,
    } = channels;
    let LegParts {
        config,
        allocation,
        negotiated,
        recorder,
    } = parts;
    let Allocation { rtp, rtcp, guard } = allocation;
    let sockets = UdpSocket::from_std(rtp).and_then(|rtp| Ok((rtp, UdpSocket::from_std(rtcp)?)));
    let (rtp, rtcp) = match sockets {
        Ok(pair) => pair,
        Err(error) => {
            tracing::error!(%error, "rtp sockets could not join the runtime; leg not started");
            lock(&shared.stats).ended = true;
            drop(guard);
            let _ = done.send(true);
            return;
        }
    };
    let start = Instant::now();
    let mut leg = Leg::new(
        config, negotiated, recorder, start, events, audio_out, shared,
    );
    leg.publish();
    let mut rtp_buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut next_tick = first_tick(start);
    let sleep = tokio::time::sleep_until(next_tick.into());
    tokio::pin!(sleep);
    let mut commands_open = true;
    let mut detach = None;

    loop {
        let mut ticked = false;
        tokio::select! {
            biased;
            command = commands.recv(), if commands_open => match command {
                Some(Command::Stop) => break,
                Some(Command::Detach(reply)) => {
                    detach = Some(reply);
                    break;
                }
                Some(command) => leg.handle_command(command),
                // Every handle dropped: keep running until `events` closes.
                None => commands_open = false,
            },
            () = &mut sleep => {
                let now = Instant::now();
                let mut ran = 0;
                while next_tick <= now {
                    if ran == MAX_CATCH_UP {
                        let behind = now.saturating_duration_since(next_tick);
                        let skipped = behind.as_micros() / FRAME_DURATION.as_micros() + 1;
                        leg.skip_ticks(skipped as u64);
                        next_tick += FRAME_DURATION * skipped as u32;
                        break;
                    }
                    leg.handle_tick(now);
                    ticked = true;
                    next_tick += FRAME_DURATION;
                    ran += 1;
                }
                if leg.events.is_closed() {
                    break;
                }
                sleep.as_mut().reset(next_tick.into());
            }
            received = rtp.recv_from(&mut rtp_buf) => match received {
                Ok((len, from)) => leg.handle_rtp(Instant::now(), rtp_buf.get(..len).unwrap_or_default(), from),
                Err(error) => tracing::debug!(%error, "rtp receive failed"),
            },
            received = rtcp.recv_from(&mut rtcp_buf) => match received {
                Ok((len, from)) => leg.handle_rtcp(Instant::now(), rtcp_buf.get(..len).unwrap_or_default(), from),
                Err(error) => tracing::debug!(%error, "rtcp receive failed"),
            },
        }
        leg.flush(&rtp, &rtcp);
        if ticked {
            // After the flush, so the send counters include this tick.
            leg.publish();
        }
    }
    if let Some(reply) = detach {
        leg.flush(&rtp, &rtcp);
        leg.publish();
        let detached = Detached {
            leg,
            rtp,
            rtcp,
            guard,
            commands,
            done,
            next_tick,
        };
        // The bridge gave up waiting (its runtime is shutting down): end
        // here as if stopped.
        if let Err(detached) = reply.send(detached) {
            detached.finish();
        }
        return;
    }
    leg.finish();
    // Free the ports before saying we are done, so `closed()` means reusable.
    drop((rtp, rtcp, guard));
    let _ = done.send(true);
}

/// The leg's state between wake-ups: sans-IO pieces plus counters. Outgoing
/// datagrams are queued and flushed by the run loop, which owns the sockets.
pub(crate) struct Leg {
    pub(crate) config: MediaConfig,
    pub(crate) negotiated: Negotiated,
    pub(crate) session: RtpSession,
    pub(crate) packetizer: Packetizer,
    pub(crate) recording: Option<Recording>,
    events: mpsc::Sender<MediaEvent>,
    audio_out: mpsc::Receiver<Frame>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: MediaStats,
    pub(crate) start: Instant,
    ticks: u64,
    pub(crate) last_rtp_at: Instant,
    pub(crate) last_audio_at: Option<Instant>,
    pub(crate) timed_out: bool,
    pub(crate) next_rtcp: Instant,
    pub(crate) rtcp_source: Option<SocketAddr>,
    /// The previous tick sent no audio from `audio_out`: the next one that
    /// does starts a talkspurt.
    idle_out: bool,
    pub(crate) last_sequence: Option<u16>,
    out_rtp: Vec<(Vec<u8>, SocketAddr)>,
    out_rtcp: Vec<(Vec<u8>, SocketAddr)>,
}

impl Leg {
    fn new(
        config: MediaConfig,
        negotiated: Negotiated,
        recorder: Option<PathBuf>,
        start: Instant,
        events: mpsc::Sender<MediaEvent>,
        audio_out: mpsc::Receiver<Frame>,
        shared: Arc<Shared>,
    ) -> Self {
        let session = RtpSession::new(session_config(&config, &negotiated));
        let packetizer = Packetizer::new(
            negotiated.codec,
            negotiated.payload_type,
            negotiated.telephone_event,
            rand::random(),
            rand::random(),
            rand::random(),
        );
        let mut stats = MediaStats {
            codec: Some(negotiated.codec),
            direction: negotiated.direction,
            ..MediaStats::default()
        };
        let recording = recorder.and_then(|path| match Recording::create(&path) {
            Ok(r) => Some(r),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "recording not started");
                stats.recording_error = Some(error.to_string());
                None
            }
        });
        stats.recording = recording.is_some();
        Leg {
            config,
            negotiated,
            session,
            packetizer,
            recording,
            events,
            audio_out,
            shared,
            stats,
            start,
            ticks: 0,
            last_rtp_at: start,
            last_audio_at: None,
            timed_out: false,
            next_rtcp: start + RTCP_INTERVAL,
            rtcp_source: None,
            idle_out: true,
            last_sequence: None,
            out_rtp: Vec::with_capacity(2),
            out_rtcp: Vec::new(),
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Remote(negotiated) => self.apply_remote(negotiated),
            Command::Dtmf(digits) => {
                for c in digits.chars() {
                    let Some(digit) = DtmfDigit::from_char(c) else {
                        tracing::debug!(?c, "not a dtmf key; skipped");
                        continue;
                    };
                    match self.packetizer.send_dtmf(digit, DTMF_DURATION) {
                        Ok(()) => self.stats.dtmf_out += 1,
                        Err(error) => tracing::warn!(%error, "dtmf not sent"),
                    }
                }
            }
            // Handled by the run loop.
            Command::Stop | Command::Detach(_) => {}
        }
    }

    fn apply_remote(&mut self, negotiated: Negotiated) {
        let now = Instant::now();
        let codec_changed = negotiated.payload_type != self.negotiated.payload_type
            || negotiated.codec != self.negotiated.codec
            || negotiated.telephone_event != self.negotiated.telephone_event
            || negotiated.accepted != self.negotiated.accepted;
        if codec_changed {
            self.session = RtpSession::new(session_config(&self.config, &negotiated));
            let sequence = self
                .last_sequence
                .map_or_else(rand::random, |s| s.wrapping_add(1));
            self.packetizer = Packetizer::new(
                negotiated.codec,
                negotiated.payload_type,
                negotiated.telephone_event,
                self.packetizer.ssrc(),
                sequence,
                self.packetizer.timestamp(),
            );
        } else if negotiated.remote_rtp != self.negotiated.remote_rtp {
            // The media moved: latch again to whatever comes next.
            self.session.relatch();
            self.rtcp_source = None;
        }
        if negotiated.direction != self.negotiated.direction {
            tracing::debug!(
                from = self.negotiated.direction.as_str(),
                to = negotiated.direction.as_str(),
                "media direction changed"
            );
        }
        self.stats.codec = Some(negotiated.codec);
        self.stats.direction = negotiated.direction;
        self.negotiated = negotiated;
        // A new negotiation restarts the silence clock (e.g. on unhold).
        self.last_rtp_at = now;
        self.timed_out = false;
    }

    fn handle_tick(&mut self, now: Instant) {
        self.ticks += 1;
        let ts_ms = self.ticks * FRAME_DURATION.as_millis() as u64;

        self.session.handle_timeout(now);
        let incoming = self.session.poll_frame(now).unwrap_or_else(Frame::silence);
        self.drain_session_events();

        let queued = self.audio_out.try_recv().ok();
        let sent = self.send_audio(queued);

        if let Some(recording) = &mut self.recording {
            if let Err(error) = recording.push(ts_ms, &incoming, &sent) {
                self.recording_failed(&error);
            }
        }
        self.emit(MediaEvent::Audio(incoming));

        if self.negotiated.direction.receives()
            && !self.timed_out
            && now.saturating_duration_since(self.last_rtp_at) >= self.config.no_rtp_timeout
        {
            self.timed_out = true;
            tracing::info!(timeout = ?self.config.no_rtp_timeout, "no rtp from the peer");
            self.emit(MediaEvent::RtpTimeout);
        }
        if now >= self.next_rtcp {
            self.next_rtcp = now + RTCP_INTERVAL;
            self.queue_sender_report(now);
        }
    }

    fn skip_ticks(&mut self, ticks: u64) {
        tracing::warn!(ticks, "media task stalled; skipping ahead");
        self.stats.ticks_skipped += ticks;
        self.ticks += ticks;
        for _ in 0..ticks.min(1_000) {
            // Keep the RTP clock running across the gap.
            self.packetizer.packetize(None);
        }
    }

    /// Sends this tick's frame (or silence) and returns what was sent, for
    /// the recording.
    fn send_audio(&mut self, queued: Option<Frame>) -> Frame {
        let destination = self.session.remote().or(self.negotiated.remote_rtp);
        let sending = self.negotiated.direction.sends();
        let Some(destination) = destination.filter(|_| sending) else {
            self.packetizer.packetize(None);
            self.idle_out = true;
            return Frame::silence();
        };
        let talkspurt = queued.is_some() && self.idle_out;
        self.idle_out = queued.is_none();
        let frame = queued.unwrap_or_else(Frame::silence);
        if let Some(mut packet) = self.packetizer.packetize(Some(&frame)) {
            if let Some(second) = packet.get_mut(1) {
                if talkspurt && *second & 0x7F == self.negotiated.payload_type {
                    *second |= 0x80;
                }
            }
            if let Some(seq) = packet.get(2..4) {
                self.last_sequence = Some(u16::from_be_bytes([seq[0], seq[1]]));
            }
            self.out_rtp.push((packet, destination));
        }
        frame
    }

    fn handle_rtp(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        let mut is_audio = false;
        if let Ok(packet) = RtpPacket::parse(datagram) {
            is_audio = self
                .negotiated
                .accepted
                .iter()
                .any(|&(pt, _)| pt == packet.payload_type);
            // A second stream with another SSRC while ours is live is a
            // stray (a forked call, a misrouted stream): drop it. After
            // `RELATCH_AFTER` of silence the new SSRC takes over.
            if let (true, Some(current), Some(at)) =
                (is_audio, self.session.remote_ssrc(), self.last_audio_at)
            {
                let live = now.saturating_duration_since(at) < RELATCH_AFTER;
                if packet.ssrc != current && live && self.session.remote() == Some(from) {
                    self.stats.rejected += 1;
                    return;
                }
            }
        }
        match self.session.handle_packet(now, datagram, from) {
            Ok(()) => {
                self.stats.packets_in += 1;
                self.stats.bytes_in += datagram.len() as u64;
                self.last_rtp_at = now;
                self.timed_out = false;
                if is_audio {
                    self.last_audio_at = Some(now);
                }
            }
            Err(error) => tracing::trace!(%error, %from, "rtp packet dropped"),
        }
        self.drain_session_events();
    }

    fn handle_rtcp(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        if let Err(error) = self.session.handle_rtcp(now, datagram, from) {
            tracing::trace!(%error, %from, "rtcp packet dropped");
            return;
        }
        self.stats.rtcp_in += 1;
        self.rtcp_source = Some(from);
        let ours = self.packetizer.ssrc();
        for packet in rtcp::parse_compound(datagram).unwrap_or_default() {
            let reports = match packet {
                RtcpPacket::SenderReport(sr) => sr.reports,
                RtcpPacket::ReceiverReport(rr) => rr.reports,
                _ => continue,
            };
            for block in reports.into_iter().filter(|b| b.ssrc == ours) {
                self.stats.remote_fraction_lost = Some(f32::from(block.fraction_lost) / 256.0);
                self.stats.remote_jitter_ms = Some(f64::from(block.jitter) / 8.0);
            }
        }
        self.drain_session_events();
    }

    fn queue_sender_report(&mut self, now: Instant) {
        let destination = self.rtcp_source.or_else(|| match self.session.remote() {
            Some(latched) if Some(latched) != self.negotiated.remote_rtp => Some(SocketAddr::new(
                latched.ip(),
                latched.port().checked_add(1)?,
            )),
            _ => self.negotiated.remote_rtcp,
        });
        let Some(destination) = destination else {
            return;
        };
        let reports = self.session.report_block(now).into_iter().collect();
        let packet = self.packetizer.sender_report(ntp_now(), reports);
        self.out_rtcp.push((packet, destination));
    }

    fn drain_session_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Dtmf(dtmf) => {
                    self.stats.dtmf_in += 1;
                    tracing::debug!(digit = %dtmf.digit, ms = dtmf.duration_ms(), end = ?dtmf.end, "dtmf");
                    self.emit(MediaEvent::Dtmf(dtmf.digit.as_char()));
                }
                SessionEvent::SourceLatched(addr) => tracing::debug!(%addr, "latched"),
                SessionEvent::SourceChanged { from, to } => {
                    tracing::info!(%from, %to, "peer media moved; re-latched")
                }
                SessionEvent::SsrcChanged { from, to } => tracing::debug!(from, to, "ssrc changed"),
                SessionEvent::Bye { reason } => tracing::debug!(?reason, "rtcp bye"),
                other => tracing::trace!(?other, "session event"),
            }
        }
    }

    fn emit(&mut self, event: MediaEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.stats.events_dropped += 1;
                if !matches!(event, MediaEvent::Audio(_)) {
                    tracing::warn!(?event, "event dropped: consumer too slow");
                }
            }
            // Nobody listens: the run loop stops at the end of this tick.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends what the last wake-up queued. Sockets are non-blocking; a full
    /// send buffer drops the datagram like the network would.
    fn flush(&mut self, rtp: &UdpSocket, rtcp: &UdpSocket) {
        for (packet, to) in self.out_rtp.drain(..) {
            match rtp.try_send_to(&packet, to) {
                Ok(_) => {
                    self.stats.packets_out += 1;
                    self.stats.bytes_out += packet.len() as u64;
                }
                Err(error) => tracing::trace!(%error, %to, "rtp send failed"),
            }
        }
        for (packet, to) in self.out_rtcp.drain(..) {
            match rtcp.try_send_to(&packet, to) {
                Ok(_) => self.stats.rtcp_out += 1,
                Err(error) => tracing::trace!(%error, %to, "rtcp send failed"),
            }
        }
    }

    /// Finalises the recording, if any.
    pub(crate) fn end_recording(&mut self) {
        if let Some(recording) = self.recording.take() {
            let path = recording.path().to_owned();
            if let Err(error) = recording.finish() {
                tracing::warn!(path = %path.display(), %error, "recording could not be finalised");
                self.stats.recording_error = Some(error.to_string());
            }
        }
        self.stats.recording = false;
    }

    /// Records a recording failure: the call goes on without it.
    pub(crate) fn recording_failed(&mut self, error: &switchboard_media::MediaError) {
        if let Some(recording) = self.recording.take() {
            tracing::warn!(path = %recording.path().display(), %error, "recording stopped; the call goes on");
        }
        self.stats.recording_error = Some(error.to_string());
        self.stats.recording = false;
    }

    fn publish(&mut self) {
        let s = self.session.stats();
        self.stats.lost = s.lost;
        self.stats.rejected = self.stats.rejected.max(s.rejected);
        self.stats.concealed = s.concealed;
        self.stats.jitter_ms = s.jitter_ms;
        self.stats.latched = self.session.remote();
        *lock(&self.shared.stats) = self.stats.clone();
    }

    fn finish(mut self) {
        self.end_recording();
        self.publish();
        lock(&self.shared.stats).ended = true;
        tracing::debug!(
            secs = self.start.elapsed().as_secs(),
            packets_in = self.stats.packets_in,
            packets_out = self.stats.packets_out,
            "media leg ended"
        );
    }
}

/// The leg's first tick: the next point of a process-wide 20 ms grid.
/// Every leg ticks on the same grid, so the runtime's timer fires once per
/// period for all of them (a wake-up of a worker each 20 ms) instead of at
/// twenty scattered 1 ms slots; each call's packets still leave 20 ms apart.
pub(crate) fn first_tick(now: Instant) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| now);
    let period = FRAME_DURATION.as_nanos();
    let periods = now.saturating_duration_since(origin).as_nanos() / period + 1;
    origin + Duration::from_nanos(u64::try_from(periods * period).unwrap_or(u64::MAX))
}

pub(crate) fn session_config(config: &MediaConfig, negotiated: &Negotiated) -> SessionConfig {
    let mut session = SessionConfig::new(negotiated.accepted.clone(), negotiated.telephone_event);
    session.jitter = config.jitter;
    session.relatch_after = RELATCH_AFTER;
    session
}

/// The wallclock as a 64-bit NTP timestamp (seconds since 1900 in the high
/// word).
pub(crate) fn ntp_now() -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}
