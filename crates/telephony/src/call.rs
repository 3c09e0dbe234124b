//! One live call: what the engine gets ([`ActiveCall`], [`CallControl`]) and
//! the task that drives the call's dialog ([`CallDriver`]).
//!
//! The driver waits on the dialog's state events, commands from
//! [`CallControl`], the outcomes of its own in-dialog requests (REFER,
//! session refresh) and of the transfer leg, the far end of a bridge, and
//! the leg's next deadline; feeds one input into the sans-IO [`CallLeg`];
//! and executes the outputs (BYE, CANCEL, REFER, dial and bridge, refresh,
//! store updates). Requests whose answers take time run in small tasks that
//! report back as [`SipEvent`]s, so the loop keeps serving the dialog. It
//! ends when the leg is terminated.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::StatusCode;
use switchboard_model::{Agent, Contact, Direction, Session, SessionId, SessionStatus, TrunkId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn, Instrument};

use crate::control::{
    self, CallLeg, LegCommand, LegInput, LegOutput, LegState, SessionTimerVerdict, SipEvent,
    TransferFailure,
};
use crate::rtp::{self, MediaHandle, MediaLeg};
use crate::server::Ctx;
use crate::sip;

/// What the engine knows about a call.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The session row (for the test caller's [`crate::dial_uri`], a row
    /// that exists only in memory).
    pub session: Session,
    pub agent: Option<Agent>,
    pub contact: Option<Contact>,
    pub direction: Direction,
    /// The trunk the call came in on or went out through.
    pub trunk: Option<TrunkId>,
    /// Where the stereo recording is written (`<recordings_dir>/<session id>.wav`).
    pub recording: Option<PathBuf>,
}

/// An answered call, handed to the engine.
pub struct ActiveCall {
    pub info: CallInfo,
    pub media: MediaLeg,
    pub control: CallControl,
}

/// The engine side of telephony: called once per answered call.
pub trait CallHandler: Send + Sync + 'static {
    /// Called once per answered call (inbound, or outbound when the callee
    /// answers). Runs until the call ends.
    fn handle(&self, call: ActiveCall) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Options for [`CallControl::transfer`].
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    /// Caller id shown to the transfer target (default: the trunk's
    /// outbound caller id, else the original caller).
    pub caller_id: Option<String>,
    /// How long the target may ring (default: the driver's no-answer timeout).
    pub no_answer_timeout: Option<std::time::Duration>,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Media is now relayed between the caller and the target; the engine
    /// no longer has the leg.
    Bridged,
    /// The carrier took the call over after REFER.
    Referred,
    /// Nothing changed: the caller is still connected to the engine.
    Failed(TransferFailure),
}

/// Control of one call. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct CallControl {
    inner: Arc<ControlInner>,
}

struct ControlInner {
    session: SessionId,
    commands: mpsc::UnboundedSender<Command>,
    ended: watch::Receiver<Option<String>>,
}

pub(crate) enum Command {
    Hangup(String),
    Transfer {
        target: String,
        media: MediaLeg,
        opts: TransferOptions,
        reply: oneshot::Sender<(TransferOutcome, Option<MediaLeg>)>,
    },
}

impl std::fmt::Debug for CallControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallControl")
            .field("session", &self.inner.session)
            .field("ended", &*self.inner.ended.borrow())
            .finish()
    }
}

impl CallControl {
    pub(crate) fn new(
        session: SessionId,
    ) -> (
        Self,
        mpsc::UnboundedReceiver<Command>,
        watch::Sender<Option<String>>,
    ) {
        let (commands, rx) = mpsc::unbounded_channel();
        let (ended_tx, ended) = watch::channel(None);
        (
            Self {
                inner: Arc::new(ControlInner {
                    session,
                    commands,
                    ended,
                }),
            },
            rx,
            ended_tx,
        )
    }

    pub fn session_id(&self) -> SessionId {
        self.inner.session
    }

    /// Sends BYE (or CANCEL before an answer) and ends the session row with
    /// `reason`. Does nothing once the call has ended.
    pub fn hangup(&self, reason: &str) {
        self.inner
            .commands
            .send(Command::Hangup(reason.to_string()))
            .ok();
    }

    /// Live transfer to `target` (E.164 through the call's trunk, or a SIP
    /// URI). When the call's trunk has `transfer = refer` — inbound, or an
    /// outbound call dialled through it — first REFER the other party there
    /// (the carrier connects them; our leg ends with "transferred by
    /// REFER"); a refused or failed REFER, or a trunk that bridges, dials
    /// the target and, when it answers, bridges it to the caller through us
    /// (the recording continues). `media` is the call's leg: on
    /// [`TransferOutcome::Bridged`] and [`TransferOutcome::Referred`] it is
    /// no longer the engine's and `None` comes back; on failure it is handed
    /// back unchanged.
    pub async fn transfer(
        &self,
        target: &str,
        media: MediaLeg,
        opts: TransferOptions,
    ) -> (TransferOutcome, Option<MediaLeg>) {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Transfer {
            target: target.to_string(),
            media,
            opts,
            reply,
        };
        if let Err(mpsc::error::SendError(cmd)) = self.inner.commands.send(cmd) {
            let media = match cmd {
                Command::Transfer { media, .. } => Some(media),
                Command::Hangup(_) => None,
            };
            return (
                TransferOutcome::Failed(TransferFailure::Error("the call has ended".into())),
                media,
            );
        }
        rx.await.unwrap_or_else(|_| {
            (
                TransferOutcome::Failed(TransferFailure::Error("the call has ended".into())),
                None,
            )
        })
    }

    /// `None` while the call lives; the end reason once it is over.
    pub fn ended(&self) -> watch::Receiver<Option<String>> {
        self.inner.ended.clone()
    }

    pub fn is_ended(&self) -> bool {
        self.inner.ended.borrow().is_some()
    }
}

/// The far end of a bridged transfer.
struct BridgedLeg {
    dialog: InviteDialog,
    states: DialogStateReceiver,
    media: MediaHandle,
    bridge: rtp::BridgeHandle,
}

/// What happened on the far side of a bridge.
enum FarEnd {
    Dialog(Option<Box<DialogState>>),
    Media(rtp::BridgeEnd),
}

type TransferDone = Result<crate::outbound::Connected, TransferFailure>;

/// A transfer the engine asked for and has not been answered yet.
pub(crate) struct PendingTransfer {
    target: String,
    /// Refer-To, when the trunk transfers by REFER.
    refer_to: Option<rsipstack::sip::Uri>,
    media: MediaLeg,
    opts: TransferOptions,
    reply: oneshot::Sender<(TransferOutcome, Option<MediaLeg>)>,
    /// The call's trunk transfers by REFER (tried first).
    refer: bool,
    /// The bridge leg is being dialled.
    dialling: bool,
}

/// Drives one call until it ends.
pub(crate) struct CallDriver {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) leg: CallLeg,
    pub(crate) dialog: InviteDialog,
    pub(crate) states: DialogStateReceiver,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) ended_tx: watch::Sender<Option<String>>,
    pub(crate) media: Option<MediaHandle>,
    /// The persisted session, if any (the test caller has none).
    pub(crate) session: Option<SessionId>,
    pub(crate) trunk: Option<TrunkId>,
    /// The SDP we last sent, for a re-INVITE without an offer.
    pub(crate) local_sdp: String,
    /// Handed to the engine when the leg is answered (inbound).
    pub(crate) pending: Option<ActiveCall>,
    /// Inbound: when to send the 200 OK (after ringing).
    pub(crate) answer_at: Option<Instant>,
    /// Run once when the call ends (frees the agent's call slot).
    pub(crate) on_end: Option<Box<dyn FnOnce() + Send>>,
    /// Set while bridged: stopping it ends both media legs.
    pub(crate) bridge_stop: Option<rtp::BridgeHandle>,
    /// The transfer in progress.
    pub(crate) transfer: Option<PendingTransfer>,
    /// Outcomes of our own in-dialog requests (REFER, session refresh),
    /// which run in tasks so the loop keeps serving the dialog meanwhile.
    pub(crate) sip_events: Option<mpsc::UnboundedSender<SipEvent>>,
    /// The smallest session interval we accept (RFC 4028 Min-SE).
    pub(crate) min_se: std::time::Duration,
}

impl CallDriver {
    pub(crate) async fn run(mut self) {
        let span = tracing::info_span!(
            "call",
            session = %self.session.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            direction = %self.leg.direction(),
        );
        async move {
            let (transfer_tx, mut transfer_rx) = mpsc::unbounded_channel::<TransferDone>();
            let (sip_tx, mut sip_rx) = mpsc::unbounded_channel::<SipEvent>();
            self.sip_events = Some(sip_tx);
            let mut bridged: Option<BridgedLeg> = None;
            // Bound the loop: a call cannot outlive a day of events.
            for _ in 0..10_000_000u32 {
                self.drain_outputs(&transfer_tx).await;
                if self.leg.is_terminated() {
                    break;
                }
                let deadline = [self.leg.next_timeout(), self.answer_at]
                    .into_iter()
                    .flatten()
                    .min();
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let far_end = async {
                    match bridged.as_mut() {
                        Some(b) => tokio::select! {
                            s = b.states.recv() => FarEnd::Dialog(s.map(Box::new)),
                            end = b.bridge.wait() => FarEnd::Media(end),
                        },
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    state = self.states.recv() => match state {
                        Some(state) => self.handle_dialog_state(state).await,
                        None => self.leg.handle_input(LegInput::Sip(
                            Instant::now(),
                            SipEvent::TransportFailed("dialog closed".into()),
                        )),
                    },
                    cmd = self.commands.recv() => match cmd {
                        Some(Command::Hangup(reason)) => self
                            .leg
                            .handle_input(LegInput::Command(Instant::now(), LegCommand::Hangup(reason))),
                        Some(Command::Transfer { target, media, opts, reply }) => {
                            self.start_transfer(target, media, opts, reply).await;
                        }
                        // Every CallControl is gone; the call goes on until
                        // the far end hangs up.
                        None => {
                            self.commands = mpsc::unbounded_channel().1;
                        }
                    },
                    done = transfer_rx.recv() => {
                        if let Some(done) = done {
                            bridged = self.finish_transfer(done).await;
                        }
                    }
                    Some(event) = sip_rx.recv() => {
                        self.leg.handle_input(LegInput::Sip(Instant::now(), event));
                    }
                    far = far_end => {
                        if let Some(b) = bridged.as_ref() {
                            let reason = match far {
                                FarEnd::Dialog(None) => Some("transfer target hung up"),
                                FarEnd::Dialog(Some(state)) => match *state {
                                    DialogState::Terminated(..) => Some("transfer target hung up"),
                                    other => {
                                        answer_in_dialog(other).await;
                                        None
                                    }
                                },
                                FarEnd::Media(rtp::BridgeEnd::RtpTimeout(_)) => {
                                    Some("no audio on the bridged call")
                                }
                                FarEnd::Media(rtp::BridgeEnd::Stopped(rtp::BridgeSide::B)) => {
                                    Some("transfer target hung up")
                                }
                                FarEnd::Media(_) => Some("bridge ended"),
                            };
                            if let Some(reason) = reason {
                                b.media.stop();
                                b.bridge.stop();
                                self.leg.handle_input(LegInput::Command(
                                    Instant::now(),
                                    LegCommand::BridgeEnded(reason.into()),
                                ));
                            }
                        }
                    }
                    _ = sleep => {
                        let now = Instant::now();
                        if self.answer_at.is_some_and(|t| now >= t) {
                            self.answer_at = None;
                            self.answer();
                        }
                        self.leg.handle_input(LegInput::Timeout(now));
                    }
                }
            }
            self.drain_outputs(&transfer_tx).await;
            if let Some(pending) = self.transfer.take() {
                // The call ended while a transfer was under way.
                let failure = TransferFailure::Error("the caller hung up".into());
                pending
                    .reply
                    .send((TransferOutcome::Failed(failure), Some(pending.media)))
                    .ok();
                if pending.dialling {
                    // A target that answers now is hung up at once.
                    let ctx = self.ctx.clone();
                    tokio::spawn(async move {
                        if let Some(Ok(connected)) = transfer_rx.recv().await {
                            connected.dialog.bye().await.ok();
                            ctx.stack.dialogs.remove_dialog(&connected.dialog.id());
                        }
                    });
                }
            }
            if let Some(b) = bridged {
                b.media.stop();
                b.dialog.bye().await.ok();
                self.ctx.stack.dialogs.remove_dialog(&b.dialog.id());
            }
            self.ctx.stack.dialogs.remove_dialog(&self.dialog.id());
        }
        .instrument(span)
        .await
    }

    /// Inbound: send the 200 OK with our SDP answer.
    pub(crate) fn answer(&mut self) {
        if self.leg.state() != LegState::Trying && self.leg.state() != LegState::Ringing {
            return;
        }
        let mut headers = vec![sip::sdp_header()];
        headers.extend(self.session_timer_headers());
        let result = self
            .dialog
            .accept(Some(headers), Some(self.local_sdp.clone().into_bytes()));
        match result {
            Ok(()) => self
                .leg
                .handle_input(LegInput::Sip(Instant::now(), SipEvent::Answered)),
            Err(e) => self.leg.handle_input(LegInput::Sip(
                Instant::now(),
                SipEvent::TransportFailed(format!("cannot send 200 OK: {e}")),
            )),
        }
    }

    async fn handle_dialog_state(&mut self, state: DialogState) {
        let now = Instant::now();
        match state {
            DialogState::Confirmed(..) => {
                if self.leg.state() == LegState::Answered {
                    self.leg.handle_input(LegInput::Sip(now, SipEvent::Ack));
                }
            }
            DialogState::Terminated(_, reason) => {
                debug!(?reason, "dialog terminated");
                let event = match reason {
                    TerminatedReason::UacCancel => SipEvent::Cancelled,
                    TerminatedReason::Timeout if self.leg.state() == LegState::Answered => {
                        // The stack's own timer L fired first: same verdict.
                        let at = self.leg.next_timeout().unwrap_or(now).max(now);
                        self.leg.handle_input(LegInput::Timeout(at));
                        return;
                    }
                    TerminatedReason::Timeout => SipEvent::TransportFailed("timeout".into()),
                    _ => SipEvent::RemoteBye,
                };
                self.leg.handle_input(LegInput::Sip(now, event));
            }
            DialogState::Updated(_, req, handle) => {
                // re-INVITE or UPDATE: hold/unhold, codec change, session
                // refresh. With a session timer running, each one answered
                // 200 is a refresh (RFC 4028 §10), and may renegotiate it.
                let refreshed = self.leg.session_timer().map(|_| {
                    match control::negotiate_session_timer(
                        sip::header_value(&req, "Session-Expires").as_deref(),
                        sip::header_value(&req, "Supported")
                            .is_some_and(|v| control::lists_timer(&v)),
                        self.min_se,
                    ) {
                        SessionTimerVerdict::Use(timer) => Some(timer),
                        SessionTimerVerdict::None | SessionTimerVerdict::TooSmall { .. } => None,
                    }
                });
                let offer = sip::body_text(&req.body).map(str::to_string);
                let result = match (offer, self.media.as_ref()) {
                    (Some(offer), Some(media)) => media.update_remote(&offer).map(Some),
                    (Some(_), None) => Ok(None),
                    (None, _) if req.method == rsipstack::sip::Method::Invite => {
                        Ok(Some(self.local_sdp.clone()))
                    }
                    (None, _) => Ok(None),
                };
                if let Some(Some(timer)) = refreshed {
                    self.leg.set_session_timer(timer);
                }
                let timer_headers = self.session_timer_headers();
                match result {
                    Ok(Some(answer)) => {
                        self.local_sdp = answer.clone();
                        let mut headers = vec![sip::sdp_header()];
                        headers.extend(timer_headers);
                        handle
                            .respond(StatusCode::OK, Some(headers), Some(answer.into_bytes()))
                            .await
                            .ok();
                        if let Some(timer) = refreshed {
                            self.leg.handle_input(LegInput::Sip(
                                now,
                                SipEvent::SessionRefreshed(timer),
                            ));
                        }
                    }
                    Ok(None) => {
                        handle
                            .respond(StatusCode::OK, Some(timer_headers), None)
                            .await
                            .ok();
                        if let Some(timer) = refreshed {
                            self.leg.handle_input(LegInput::Sip(
                                now,
                                SipEvent::SessionRefreshed(timer),
                            ));
                        }
                    }
                    Err(e) => {
                        info!(error = %e, "refusing re-INVITE offer");
                        handle.reply(StatusCode::NotAcceptableHere).await.ok();
                    }
                }
            }
            DialogState::Notify(_, req, handle) if self.leg.refer_pending() => {
                // RFC 3515: progress of our REFER, as a sipfrag status line.
                handle.reply(StatusCode::OK).await.ok();
                let is_refer = sip::header_value(&req, "Event")
                    .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("refer"));
                let status = sip::body_text(&req.body).and_then(control::sipfrag_status);
                if let (true, Some(status)) = (is_refer, status) {
                    info!(status, "transfer: REFER progress");
                    self.leg
                        .handle_input(LegInput::Sip(now, SipEvent::ReferNotify(status)));
                }
            }
            other => answer_in_dialog(other).await,
        }
    }

    /// Session-Expires (and Require: timer when the caller refreshes) for
    /// our 2xx, when a session timer runs.
    fn session_timer_headers(&self) -> Vec<rsipstack::sip::Header> {
        use rsipstack::sip::Header;
        let Some(timer) = self.leg.session_timer() else {
            return Vec::new();
        };
        let mut headers = vec![
            Header::SessionExpires(timer.header_value().into()),
            Header::Supported("timer".to_string().into()),
        ];
        if timer.requires_timer() {
            headers.push(Header::Require("timer".to_string().into()));
        }
        headers
    }

    async fn drain_outputs(&mut self, transfers: &mpsc::UnboundedSender<TransferDone>) {
        while let Some(output) = self.leg.poll_output() {
            match output {
                LegOutput::Answered => self.on_answered().await,
                LegOutput::SendBye => {
                    if let Err(e) = self.dialog.bye().await {
                        debug!(error = %e, "BYE failed");
                    }
                }
                LegOutput::SendCancel => {
                    if let Err(e) = self.dialog.cancel().await {
                        debug!(error = %e, "CANCEL failed");
                    }
                }
                LegOutput::SendRefer => self.send_refer(),
                LegOutput::DialTransfer => self.dial_transfer(transfers.clone()),
                LegOutput::Referred => {
                    if let Some(pending) = self.transfer.take() {
                        info!(target = %pending.target, "transfer: the carrier took the call (REFER)");
                        // The leg is over; the media stops with it.
                        drop(pending.media);
                        pending.reply.send((TransferOutcome::Referred, None)).ok();
                    }
                    // Our 200 to the final NOTIFY leaves from the dialog's
                    // transaction task; give it a moment so the BYE that
                    // follows does not overtake it (strict transferees,
                    // sipp among them, abort on a BYE before that 200).
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                LegOutput::SendRefresh => self.send_refresh(),
                LegOutput::End { outcome, reason } => {
                    info!(%reason, %outcome, "call ended");
                    // Watchers learn first; the media stops after, so an
                    // engine that sees its events close finds the reason set.
                    self.ended_tx.send_replace(Some(reason.clone()));
                    if matches!(self.dialog.state(), DialogState::Terminated(..)) {
                        // nothing more to send
                    } else if self.leg.direction() == Direction::Inbound
                        && !matches!(
                            self.dialog.state(),
                            DialogState::Confirmed(..) | DialogState::WaitAck(..)
                        )
                    {
                        // Ended before we answered (e.g. shutdown): refuse it.
                        self.dialog
                            .reject(Some(StatusCode::TemporarilyUnavailable), None)
                            .ok();
                    }

                    if let (Some(id), Some(store)) = (self.session, self.ctx.store.as_ref()) {
                        // No read first: `end_session` keeps an end already
                        // recorded (by a handoff, say), so the first end wins
                        // without a round trip on every call.
                        let at = switchboard_model::Clock::now(&switchboard_model::SystemClock);
                        if let Err(e) = store.end_session(id, at, outcome, &reason).await {
                            warn!(error = %e, "cannot end the session row");
                        }
                    }
                    if let Some(media) = &self.media {
                        media.stop();
                    }
                    if let Some(bridge) = &self.bridge_stop {
                        bridge.stop();
                    }
                    if let Some(f) = self.on_end.take() {
                        f();
                    }
                }
            }
        }
    }

    async fn on_answered(&mut self) {
        if let (Some(id), Some(store)) = (self.session, self.ctx.store.as_ref()) {
            let at = switchboard_model::Clock::now(&switchboard_model::SystemClock);
            if let Err(e) = store.mark_answered(id, at).await {
                warn!(error = %e, "cannot mark the session answered");
            }
        }
        if let Some(mut call) = self.pending.take() {
            call.info.session.status = SessionStatus::Active;
            match self.ctx.handler.clone() {
                Some(handler) => {
                    let span = tracing::Span::current();
                    tokio::spawn(handler.handle(call).instrument(span));
                }
                None => drop(call),
            }
        }
    }

    async fn start_transfer(
        &mut self,
        target: String,
        media: MediaLeg,
        opts: TransferOptions,
        reply: oneshot::Sender<(TransferOutcome, Option<MediaLeg>)>,
    ) {
        if self.leg.state() != LegState::Confirmed || self.transfer.is_some() {
            let failure = TransferFailure::Error("the call is not in a state to transfer".into());
            reply
                .send((TransferOutcome::Failed(failure), Some(media)))
                .ok();
            return;
        }
        let ctx = self.ctx.clone();
        let refer_to = refer_target(&ctx, self.trunk, &target).await;
        self.transfer = Some(PendingTransfer {
            target,
            refer: refer_to.is_some(),
            refer_to,
            media,
            opts,
            reply,
            dialling: false,
        });
        let refer = self.transfer.as_ref().is_some_and(|t| t.refer);
        self.leg.handle_input(LegInput::Command(
            Instant::now(),
            LegCommand::Transfer { refer },
        ));
    }

    /// Sends REFER in the caller's dialog; the outcome comes back as a
    /// [`SipEvent`].
    fn send_refer(&mut self) {
        let (Some(refer_to), Some(events)) = (
            self.transfer.as_ref().and_then(|t| t.refer_to.clone()),
            self.sip_events.clone(),
        ) else {
            self.leg.handle_input(LegInput::Sip(
                Instant::now(),
                SipEvent::ReferFailed("no REFER target".into()),
            ));
            return;
        };
        info!(refer_to = %refer_to, "transfer: sending REFER");
        let referred_by =
            rsipstack::sip::Header::ReferredBy(format!("<{}>", self.ctx.stack.contact).into());
        let dialog = self.dialog.clone();
        tokio::spawn(
            async move {
                let event = match dialog.refer(refer_to, Some(vec![referred_by]), None).await {
                    Ok(Some(resp)) => SipEvent::ReferAnswered(resp.status_code.code()),
                    Ok(None) => SipEvent::ReferFailed("the dialog is not confirmed".into()),
                    Err(e) => SipEvent::ReferFailed(e.to_string()),
                };
                if let SipEvent::ReferAnswered(code) = &event {
                    info!(code, "transfer: REFER answered");
                }
                events.send(event).ok();
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// Dials the transfer target for a bridge.
    fn dial_transfer(&mut self, done: mpsc::UnboundedSender<TransferDone>) {
        let Some(pending) = self.transfer.as_mut() else {
            return;
        };
        if pending.refer {
            info!("transfer: REFER refused or failed; bridging instead");
        }
        pending.dialling = true;
        let ctx = self.ctx.clone();
        let trunk = self.trunk;
        let (target, opts) = (pending.target.clone(), pending.opts.clone());
        tokio::spawn(
            async move {
                info!(%target, "transfer: dialling");
                let result = crate::outbound::connect_transfer(&ctx, &target, trunk, &opts).await;
                done.send(result).ok();
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// Sends a session refresh: a re-INVITE with our current SDP.
    fn send_refresh(&mut self) {
        let Some(events) = self.sip_events.clone() else {
            return;
        };
        let mut headers = vec![sip::sdp_header()];
        headers.extend(self.session_timer_headers());
        let dialog = self.dialog.clone();
        let sdp = self.local_sdp.clone().into_bytes();
        // On a call we placed we are the dialog's UAC, and the 2xx to our
        // refresh may change the interval as the first one set it (RFC 4028
        // §7.4); one without Session-Expires keeps the timer we have.
        let outbound = self.leg.direction() == Direction::Outbound;
        tokio::spawn(
            async move {
                let event = match dialog.reinvite(Some(headers), Some(sdp)).await {
                    Ok(Some(resp)) if (200..300).contains(&resp.status_code.code()) => {
                        let timer = outbound
                            .then(|| {
                                control::answered_session_timer(
                                    sip::response_header_value(&resp, "Session-Expires").as_deref(),
                                )
                            })
                            .flatten();
                        SipEvent::SessionRefreshed(timer)
                    }
                    // RFC 4028 §10: only a timeout, 408 or 481 ends the
                    // session; after any other refusal (491 glare, 488…)
                    // the dialog lives on and we try again at the next
                    // half interval.
                    Ok(Some(resp)) if matches!(resp.status_code.code(), 408 | 481) => {
                        SipEvent::RefreshFailed(resp.status_code.code().to_string())
                    }
                    Ok(Some(resp)) => {
                        info!(code = resp.status_code.code(), "session refresh refused");
                        SipEvent::SessionRefreshed(None)
                    }
                    Ok(None) => return,
                    Err(e) => SipEvent::RefreshFailed(e.to_string()),
                };
                events.send(event).ok();
            }
            .instrument(tracing::Span::current()),
        );
    }

    async fn finish_transfer(&mut self, result: TransferDone) -> Option<BridgedLeg> {
        let Some(pending) = self.transfer.take() else {
            // Nobody waits for this leg any more.
            if let Ok(connected) = result {
                connected.dialog.bye().await.ok();
                self.ctx.stack.dialogs.remove_dialog(&connected.dialog.id());
            }
            return None;
        };
        let PendingTransfer { media, reply, .. } = pending;
        match result {
            Ok(connected) if self.leg.state() == LegState::Transferring => {
                let far = connected.endpoint.start(None);
                let far_handle = far.handle();
                let bridge = rtp::bridge(media, far);
                // The caller's leg now lives in the bridge; stopping the
                // bridge (on BYE) stops it too.
                self.bridge_stop = Some(bridge.clone());
                self.leg.handle_input(LegInput::Command(
                    Instant::now(),
                    LegCommand::TransferBridged,
                ));
                info!("transfer: bridged");
                reply.send((TransferOutcome::Bridged, None)).ok();
                Some(BridgedLeg {
                    dialog: connected.dialog,
                    states: connected.states,
                    media: far_handle,
                    bridge,
                })
            }
            Ok(connected) => {
                // The caller left while the target rang.
                connected.dialog.bye().await.ok();
                self.ctx.stack.dialogs.remove_dialog(&connected.dialog.id());
                reply
                    .send((
                        TransferOutcome::Failed(TransferFailure::Error(
                            "the caller hung up".into(),
                        )),
                        Some(media),
                    ))
                    .ok();
                None
            }
            Err(failure) => {
                info!(%failure, "transfer failed");
                self.leg.handle_input(LegInput::Command(
                    Instant::now(),
                    LegCommand::TransferFailed,
                ));
                reply
                    .send((TransferOutcome::Failed(failure), Some(media)))
                    .ok();
                None
            }
        }
    }
}

/// Refer-To for `target` when the call's trunk (the one it came in on, or
/// went out through) transfers by REFER: a SIP URI as given, an E.164 number
/// as `sip:<number>@<trunk host>:<port>`. REFER is an ordinary in-dialog
/// request, so it leaves the same way from the dialog we answered (UAS) and
/// from the one we dialled (UAC); only the far end differs (the caller, or
/// the callee). `None`: transfer by bridge.
async fn refer_target(
    ctx: &Ctx,
    trunk: Option<TrunkId>,
    target: &str,
) -> Option<rsipstack::sip::Uri> {
    let (store, trunk) = (ctx.store.as_ref()?, trunk?);
    let trunk = match store.trunk(trunk).await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "cannot read the trunk; transferring by bridge");
            return None;
        }
    };
    if trunk.transfer != switchboard_model::TrunkTransfer::Refer {
        return None;
    }
    let target = target.trim();
    let lower = target.to_ascii_lowercase();
    let uri = if lower.starts_with("sip:") || lower.starts_with("sips:") {
        target.to_string()
    } else {
        let number = control::normalise_user(target, ctx.cfg.region)?;
        format!("sip:{number}@{}:{}", trunk.host, trunk.port)
    };
    match rsipstack::sip::Uri::try_from(uri.as_str()) {
        Ok(uri) => Some(uri),
        Err(e) => {
            warn!(%uri, error = %e, "transfer target is not a SIP URI; transferring by bridge");
            None
        }
    }
}

/// Mid-dialog requests we accept without changing anything.
async fn answer_in_dialog(state: DialogState) {
    match state {
        DialogState::Options(_, _, h)
        | DialogState::Info(_, _, h)
        | DialogState::Notify(_, _, h)
        | DialogState::Message(_, _, h)
        | DialogState::Publish(_, _, h) => {
            h.reply(StatusCode::OK).await.ok();
        }
        DialogState::Updated(_, _, h) => {
            h.reply(StatusCode::OK).await.ok();
        }
        DialogState::Refer(_, _, h) => {
            // We do not let the far end move our calls elsewhere.
            h.reply(StatusCode::Decline).await.ok();
        }
        _ => {}
    }
}
