//! The SIP endpoint and the inbound path: listen, authenticate the trunk,
//! route the called number to an agent, answer, and hand the call over.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Method, StatusCode};
use rsipstack::transaction::endpoint::EndpointOption;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transport::tls::{TlsConfig, TlsListenerConnection};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{TcpListenerConnection, TransportLayer};
use rsipstack::EndpointBuilder;
use switchboard_model::{
    AgentId, Clock, Direction, NewSession, SessionId, SystemClock, TrunkId, E164,
};
use switchboard_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::call::{ActiveCall, CallControl, CallDriver, CallHandler, CallInfo};
use crate::control::{
    self, call_limit, CallLeg, LegTimers, RouteRefusal, StrangerLimiter, TrunkVerdict,
};
use crate::directory::Directory;
use crate::register::TrunkReload;
use crate::rtp::{MediaEngine, RtpError};
use crate::{sip, SipConfig, SipTls, TelephonyError};

/// TLS settings after [`crate::tls`] checked them: (listen address, the
/// listener's config, the client side's trust anchors).
type CheckedTls = (Option<SocketAddr>, Option<TlsConfig>, Option<TlsConfig>);

/// One rsipstack endpoint with its dialog layer.
pub(crate) struct Stack {
    pub(crate) dialogs: Arc<DialogLayer>,
    pub(crate) contact: rsipstack::sip::Uri,
    pub(crate) local: SocketAddr,
    /// Where the TLS listener accepts connections, if there is one.
    pub(crate) tls_local: Option<SocketAddr>,
    pub(crate) cancel: CancellationToken,
}

impl Stack {
    /// The Contact for a dialog or registration towards `target`: over TLS
    /// (`;transport=tls`), our TLS listener, so the far end's in-dialog
    /// requests and incoming calls come back over TLS; else the UDP/TCP one.
    pub(crate) fn contact_for(&self, target: &rsipstack::sip::Uri) -> rsipstack::sip::Uri {
        use rsipstack::sip::{Param, Transport};
        let tls = target
            .params
            .iter()
            .any(|p| matches!(p, Param::Transport(Transport::Tls)));
        match (tls, self.tls_local) {
            (true, Some(addr)) => {
                let mut contact = self.contact.clone();
                contact.host_with_port.port = Some(addr.port().into());
                contact.params.retain(|p| !matches!(p, Param::Transport(_)));
                contact.params.push(Param::Transport(Transport::Tls));
                contact
            }
            _ => self.contact.clone(),
        }
    }

    /// Binds UDP (and TCP on the same port when `tcp`) and starts serving.
    ///
    /// With `public`, rsipstack writes `public:port` instead of the bound
    /// address into the Via of our requests and the Contact of our requests
    /// and responses (we are behind NAT; the carrier must reach us there).
    /// The external address needs the port, so port 0 is resolved first by
    /// binding a probe socket (a tiny race a test may lose, never a
    /// production config, which names its port).
    ///
    /// With `tls`, SIP over TLS too: a listener on `tls.listen` and/or
    /// trust anchors for connecting to TLS trunks.
    pub(crate) async fn bind(
        listen: SocketAddr,
        tcp: bool,
        t1: Duration,
        user_agent: &str,
        public: Option<IpAddr>,
        tls: Option<&SipTls>,
    ) -> Result<(Stack, TransactionReceiver), TelephonyError> {
        // Bad certificate files stop start-up, with the file to fix.
        let tls = match tls {
            Some(t) => Some((
                t.listen,
                crate::tls::listener_config(t)?,
                crate::tls::client_config(t)?,
            )),
            None => None,
        };
        // Port 0 picks a free UDP port, and TCP must then get the same one:
        // another process may hold it, so pick again (a few times).
        let attempts = if listen.port() == 0 { 20 } else { 1 };
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::bind_once(listen, tcp, t1, user_agent, public, tls.clone()).await {
                Err(TelephonyError::Bind { .. }) if tries < attempts => continue,
                other => return other,
            }
        }
    }

    async fn bind_once(
        listen: SocketAddr,
        tcp: bool,
        t1: Duration,
        user_agent: &str,
        public: Option<IpAddr>,
        tls: Option<CheckedTls>,
    ) -> Result<(Stack, TransactionReceiver), TelephonyError> {
        let mut listen = listen;
        if public.is_some() && listen.port() == 0 {
            let probe = std::net::UdpSocket::bind(listen)
                .and_then(|s| s.local_addr())
                .map_err(|source| TelephonyError::Bind {
                    addr: listen,
                    source,
                })?;
            listen.set_port(probe.port());
        }
        let external = public.map(|ip| SocketAddr::new(ip, listen.port()));
        let cancel = CancellationToken::new();
        let transport = TransportLayer::new(cancel.clone());
        let udp = UdpConnection::create_connection(listen, external, Some(cancel.child_token()))
            .await
            .map_err(|e| TelephonyError::Bind {
                addr: listen,
                source: std::io::Error::other(e.to_string()),
            })?;
        // `get_addr` is the external address when there is one.
        let local = match external {
            Some(_) => listen,
            None => udp
                .get_addr()
                .get_socketaddr()
                .map_err(TelephonyError::Sip)?,
        };
        let local = SocketAddr::new(
            if listen.ip().is_unspecified() {
                local.ip()
            } else {
                listen.ip()
            },
            local.port(),
        );
        transport.add_transport(udp.into());
        if tcp {
            let tcp_addr = SocketAddr::new(listen.ip(), local.port());
            // rsipstack binds the TCP listener lazily; try it now so a taken
            // port is reported at start-up, not lost in a log line.
            if let Err(source) = std::net::TcpListener::bind(tcp_addr) {
                cancel.cancel();
                return Err(TelephonyError::Bind {
                    addr: tcp_addr,
                    source,
                });
            }
            let listener = TcpListenerConnection::new(tcp_addr, external).await?;
            transport.add_transport(listener.into());
        }
        let mut tls_local = None;
        if let Some((tls_listen, server, client)) = tls {
            if let Some(client) = client {
                transport.set_tls_config(client);
            }
            if let (Some(addr), Some(server)) = (tls_listen, server) {
                // As for TCP: a taken port is a start-up error. Port 0 is
                // resolved here (the listener binds lazily).
                let probe = std::net::TcpListener::bind(addr).and_then(|l| l.local_addr());
                let addr = match probe {
                    Ok(bound) => bound,
                    Err(source) => {
                        cancel.cancel();
                        return Err(TelephonyError::Bind { addr, source });
                    }
                };
                let external = public.map(|ip| SocketAddr::new(ip, addr.port()));
                let listener = TlsListenerConnection::new(addr, external, server).await?;
                transport.add_transport(listener.into());
                tls_local = Some(addr);
            }
        }
        let option = EndpointOption {
            t1,
            t1x64: t1 * 64,
            ..Default::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport)
            .with_user_agent(user_agent)
            .with_option(option)
            .build();
        let incoming = endpoint.incoming_transactions()?;
        let inner = endpoint.inner.clone();
        let dialogs = Arc::new(DialogLayer::new(inner.clone()));
        let contact = dialogs.build_local_contact(None, None)?;
        tokio::spawn(async move {
            endpoint.serve().await;
        });
        Ok((
            Stack {
                dialogs,
                contact,
                local,
                tls_local,
                cancel,
            },
            incoming,
        ))
    }
}

/// Everything a call task needs, shared.
pub(crate) struct Ctx {
    pub(crate) stack: Stack,
    pub(crate) store: Option<Store>,
    pub(crate) cfg: SipConfig,
    pub(crate) engine: MediaEngine,
    pub(crate) handler: Option<Arc<dyn CallHandler>>,
    /// Trunks and number routes for admission, re-read at most once per
    /// `cfg.directory_ttl`.
    pub(crate) directory: Directory,
    agent_calls: Mutex<HashMap<AgentId, u32>>,
    limiter: Mutex<StrangerLimiter>,
    nonce_secret: u64,
    accepting: AtomicBool,
    pub(crate) live: Mutex<HashMap<SessionId, CallControl>>,
    /// The running REGISTER keepers, by trunk.
    pub(crate) registering: Mutex<HashMap<TrunkId, crate::register::Keeper>>,
}

impl Ctx {
    pub(crate) fn new(
        stack: Stack,
        store: Option<Store>,
        cfg: SipConfig,
        engine: MediaEngine,
        handler: Option<Arc<dyn CallHandler>>,
    ) -> Self {
        let nonce_secret = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(u64::from(std::process::id()));
            h.finish()
        };
        Self {
            directory: Directory::new(cfg.directory_ttl),
            stack,
            store,
            cfg,
            engine,
            handler,
            agent_calls: Mutex::new(HashMap::new()),
            limiter: Mutex::new(StrangerLimiter::new(4096, Duration::from_secs(60), 20)),
            nonce_secret,
            accepting: AtomicBool::new(true),
            live: Mutex::new(HashMap::new()),
            registering: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn leg_timers(&self) -> LegTimers {
        LegTimers {
            t1: self.cfg.t1,
            no_answer: self.cfg.no_answer_timeout,
            refer: self.cfg.refer_timeout,
        }
    }

    /// Takes one of the agent's call slots, or `None` at the limit.
    pub(crate) fn reserve_slot(self: &Arc<Self>, agent: AgentId, limit: u32) -> Option<SlotGuard> {
        let mut calls = self.agent_calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(agent).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SlotGuard {
            ctx: Arc::downgrade(self),
            agent,
        })
    }

    pub(crate) fn track(&self, control: &CallControl) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(control.session_id(), control.clone());
    }

    pub(crate) fn untrack(&self, id: SessionId) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Frees an agent's call slot when dropped.
pub(crate) struct SlotGuard {
    ctx: std::sync::Weak<Ctx>,
    agent: AgentId,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.upgrade() {
            let mut calls = ctx.agent_calls.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = calls.get_mut(&self.agent) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    calls.remove(&self.agent);
                }
            }
        }
    }
}

/// The running SIP driver. Dropping it does not stop it; call
/// [`Telephony::shutdown`].
#[derive(Clone)]
pub struct Telephony {
    pub(crate) ctx: Arc<Ctx>,
}

impl std::fmt::Debug for Telephony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telephony")
            .field("local_addr", &self.ctx.stack.local)
            .finish_non_exhaustive()
    }
}

impl Telephony {
    /// Binds `cfg.listen` (UDP and TCP) and starts answering calls; each
    /// answered call goes to `handler`.
    pub async fn start(
        store: Store,
        cfg: SipConfig,
        handler: Arc<dyn CallHandler>,
    ) -> Result<Telephony, TelephonyError> {
        let engine = MediaEngine::new(cfg.media.clone());
        Self::start_with_engine(store, cfg, engine, handler).await
    }

    /// As [`Telephony::start`], sharing an existing media engine.
    pub async fn start_with_engine(
        store: Store,
        cfg: SipConfig,
        engine: MediaEngine,
        handler: Arc<dyn CallHandler>,
    ) -> Result<Telephony, TelephonyError> {
        let (stack, incoming) = Stack::bind(
            cfg.listen,
            true,
            cfg.t1,
            &cfg.user_agent,
            cfg.public_addr,
            cfg.tls.as_ref(),
        )
        .await?;
        tokio::fs::create_dir_all(&cfg.recordings_dir).await.ok();
        info!(addr = %stack.local, "SIP listening (UDP and TCP)");
        if let Some(addr) = stack.tls_local {
            info!(%addr, "SIP listening (TLS)");
        }
        let ctx = Arc::new(Ctx::new(stack, Some(store), cfg, engine, Some(handler)));
        tokio::spawn(serve(ctx.clone(), incoming));
        // A store hiccup must not keep us from answering calls; the
        // operator can retry with `register_trunks`.
        if let Err(error) = crate::register::reconcile(&ctx).await {
            warn!(%error, "could not start trunk registrations");
        }
        Ok(Telephony { ctx })
    }

    /// Brings trunk registrations in line with the store after trunks were
    /// added, changed or removed at run time: starts REGISTERing every trunk
    /// with `register = true` that is not registering yet, stops (and
    /// unregisters) trunks that were removed or no longer register, and
    /// restarts those whose host, port, transport or credentials changed.
    /// Idempotent; cheap to call after every trunk change. Each keeper
    /// refreshes at 75 % of the granted expiry and backs off on failure;
    /// the log says why a registration fails. Inbound admission sees the
    /// change from the next INVITE on (it would within
    /// [`SipConfig::directory_ttl`] anyway); transfers read trunks per call.
    pub async fn reload_trunks(&self) -> Result<TrunkReload, TelephonyError> {
        self.ctx.directory.invalidate();
        crate::register::reconcile(&self.ctx).await
    }

    /// Makes the next INVITE read trunks, numbers and agents from the store
    /// instead of waiting out [`SipConfig::directory_ttl`]: call it after
    /// a number is bound, moved or deleted, or an agent changed.
    pub fn reload_routing(&self) {
        self.ctx.directory.invalidate();
    }

    /// As [`Telephony::reload_trunks`]; returns how many keepers started.
    pub async fn register_trunks(&self) -> Result<usize, TelephonyError> {
        Ok(self.reload_trunks().await?.started)
    }

    /// The address SIP listens on (UDP and TCP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.ctx.stack.local
    }

    /// Where SIP over TLS is accepted, when [`SipConfig::tls`] has a listener.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.ctx.stack.tls_local
    }

    pub fn engine(&self) -> &MediaEngine {
        &self.ctx.engine
    }

    /// Calls in progress.
    pub fn live_calls(&self) -> usize {
        self.ctx
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Stops taking new INVITEs (503), waits up to `grace` for live calls to
    /// end, hangs up the rest, and stops the SIP stack.
    pub async fn shutdown(&self, grace: Duration) {
        self.ctx.accepting.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while self.live_calls() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rest: Vec<CallControl> = self
            .ctx
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for call in &rest {
            call.hangup("server shutting down");
        }
        for call in rest {
            let mut ended = call.ended();
            tokio::time::timeout(Duration::from_secs(2), ended.wait_for(|e| e.is_some()))
                .await
                .ok();
        }
        self.ctx.stack.cancel.cancel();
    }
}

/// The accept loop: one transaction at a time, each handled in its own task.
pub(crate) async fn serve(ctx: Arc<Ctx>, mut incoming: TransactionReceiver) {
    loop {
        let tx = tokio::select! {
            tx = incoming.recv() => tx,
            _ = ctx.stack.cancel.cancelled() => None,
        };
        let Some(tx) = tx else { break };
        let ctx = ctx.clone();
        tokio::spawn(async move { dispatch(ctx, tx).await });
    }
    debug!("SIP accept loop stopped");
}

async fn dispatch(ctx: Arc<Ctx>, mut tx: Transaction) {
    if !crate::sip::cseq_matches(&tx.original) {
        if tx.original.method != Method::Ack {
            tx.reply(StatusCode::BadRequest).await.ok();
        }
        return;
    }
    let in_dialog = tx
        .original
        .to_header_tag()
        .is_some_and(|tag| !tag.is_empty());
    if in_dialog {
        match ctx.stack.dialogs.match_dialog(&tx) {
            Some(rsipstack::dialog::dialog::Dialog::Invite(mut dialog)) => {
                if let Err(e) = dialog.handle(&mut tx).await {
                    debug!(error = %e, "in-dialog request failed");
                }
            }
            _ => {
                let status = if tx.original.method == Method::Ack {
                    return;
                } else {
                    StatusCode::CallTransactionDoesNotExist
                };
                tx.reply(status).await.ok();
            }
        }
        return;
    }
    match tx.original.method {
        Method::Invite => {
            if !ctx.accepting.load(Ordering::SeqCst) {
                tx.reply(StatusCode::ServiceUnavailable).await.ok();
                return;
            }
            inbound_invite(ctx, tx).await;
        }
        Method::Options => {
            tx.reply(StatusCode::OK).await.ok();
        }
        Method::Bye | Method::Cancel | Method::Update | Method::Info | Method::PRack => {
            tx.reply(StatusCode::CallTransactionDoesNotExist).await.ok();
        }
        Method::Ack => {}
        _ => {
            tx.reply(StatusCode::MethodNotAllowed).await.ok();
        }
    }
}

trait ToTag {
    fn to_header_tag(&self) -> Option<String>;
}

impl ToTag for rsipstack::sip::Request {
    fn to_header_tag(&self) -> Option<String> {
        use rsipstack::sip::prelude::HeadersExt;
        self.to_header()
            .ok()?
            .tag()
            .ok()
            .flatten()
            .map(|t| t.to_string())
    }
}

/// Why an INVITE was refused before a session existed.
enum Refusal {
    /// Answer with this status.
    Reply(StatusCode, &'static str),
    /// Reply 407 with a challenge.
    Challenge,
    /// Drop silently (rate-limited stranger).
    Drop,
}

async fn inbound_invite(ctx: Arc<Ctx>, mut tx: Transaction) {
    let now = Instant::now();
    let admitted = admit(&ctx, &tx, now).await;
    let Admitted {
        trunk,
        agent,
        slot,
        called,
    } = match admitted {
        Ok(a) => a,
        Err(Refusal::Drop) => return,
        Err(Refusal::Challenge) => {
            let header = sip::challenge(&ctx.cfg.realm, ctx.nonce_secret);
            tx.reply_with(StatusCode::ProxyAuthenticationRequired, vec![header], None)
                .await
                .ok();
            return;
        }
        Err(Refusal::Reply(status, why)) => {
            info!(status = %status.code(), why, "INVITE refused");
            tx.reply(status).await.ok();
            return;
        }
    };
    // RFC 4028: a session timer the caller asks for, or 422 when its
    // interval is below our Min-SE (before any session row exists).
    let session_timer = match control::negotiate_session_timer(
        sip::header_value(&tx.original, "Session-Expires").as_deref(),
        sip::header_value(&tx.original, "Supported").is_some_and(|v| control::lists_timer(&v)),
        ctx.cfg.min_session_expires,
    ) {
        control::SessionTimerVerdict::TooSmall { min_se } => {
            info!(min_se = min_se.as_secs(), "session interval too small: 422");
            let min_se = rsipstack::sip::Header::MinSE(min_se.as_secs().to_string().into());
            tx.reply_with(StatusCode::SessionIntervalTooSmall, vec![min_se], None)
                .await
                .ok();
            return;
        }
        control::SessionTimerVerdict::Use(timer) => Some(timer),
        control::SessionTimerVerdict::None => None,
    };
    tx.send_trying().await.ok();

    // The caller: E.164 where the network gave one, else the SIP identity.
    let caller_number =
        sip::from_user(&tx.original).and_then(|u| control::normalise_user(&u, ctx.cfg.region));
    let from = caller_number
        .as_ref()
        .map(E164::to_string)
        .unwrap_or_else(|| sip::from_identity(&tx.original));
    let Some(store) = ctx.store.clone() else {
        tx.reply(StatusCode::ServiceUnavailable).await.ok();
        return;
    };
    let contact = match &caller_number {
        Some(n) => store.contact_by_phone(n).await.unwrap_or_else(|e| {
            warn!(error = %e, "contact lookup failed");
            None
        }),
        None => None,
    };

    // Media first: a 488 needs no session row.
    let Some(offer) = sip::body_text(&tx.original.body).map(str::to_string) else {
        info!("INVITE without an SDP offer refused");
        tx.reply(StatusCode::NotAcceptableHere).await.ok();
        return;
    };
    let (endpoint, answer_sdp) = match ctx.engine.answer(&offer).await {
        Ok(a) => a,
        Err(RtpError::NoCommonCodec) => {
            info!("no common codec");
            tx.reply(StatusCode::NotAcceptableHere).await.ok();
            return;
        }
        Err(e) => {
            info!(error = %e, "cannot answer the offer");
            tx.reply(StatusCode::NotAcceptableHere).await.ok();
            return;
        }
    };

    let started_at = SystemClock.now();
    let session = match store
        .create_session(&NewSession {
            agent_id: Some(agent.id),
            direction: Direction::Inbound,
            from,
            to: called.to_string(),
            contact_id: contact.as_ref().map(|c| c.id),
            started_at,
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot create the session row");
            tx.reply(StatusCode::ServiceUnavailable).await.ok();
            return;
        }
    };
    let span = tracing::info_span!("call", session = %session.id, direction = "inbound");
    let recording = ctx.cfg.recordings_dir.join(format!("{}.wav", session.id));

    let (state_tx, states) = ctx.stack.dialogs.new_dialog_state_channel();
    let dialog = match ctx.stack.dialogs.get_or_create_server_invite(
        &tx,
        state_tx,
        None,
        Some(ctx.stack.contact.clone()),
    ) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot create the dialog");
            tx.reply(StatusCode::BadRequest).await.ok();
            let at = SystemClock.now();
            store
                .end_session(
                    session.id,
                    at,
                    switchboard_model::Outcome::Failed,
                    "malformed INVITE",
                )
                .await
                .ok();
            return;
        }
    };
    // The dialog runs the INVITE server transaction: 100/180/200
    // retransmission (timer G), the ACK or CANCEL, timer L.
    {
        let mut dialog = dialog.clone();
        tokio::spawn(
            async move {
                if let Err(e) = dialog.handle(&mut tx).await {
                    debug!(error = %e, "INVITE transaction ended with an error");
                }
            }
            .instrument(span.clone()),
        );
    }
    let media = endpoint.start(Some(recording.clone()));
    let (control, commands, ended_tx) = CallControl::new(session.id);
    ctx.track(&control);
    let mut leg = CallLeg::new(Direction::Inbound, ctx.leg_timers(), now);
    if let Some(timer) = session_timer {
        leg.set_session_timer(timer);
    }
    let mut answer_at = Some(Instant::now() + ctx.cfg.answer_delay);
    if ctx.cfg.ringing {
        if dialog.ringing(None, None).is_ok() {
            leg.handle_input(control::LegInput::Sip(now, control::SipEvent::Ringing));
        }
    } else {
        answer_at = Some(Instant::now());
    }
    let media_handle = media.handle();
    let info = CallInfo {
        session,
        agent: Some(agent),
        contact,
        direction: Direction::Inbound,
        trunk: Some(trunk),
        recording: Some(recording),
    };
    let session_id = info.session.id;
    let untrack = {
        let ctx = Arc::downgrade(&ctx);
        move || {
            drop(slot);
            if let Some(ctx) = ctx.upgrade() {
                ctx.untrack(session_id);
            }
        }
    };
    let driver = CallDriver {
        ctx: ctx.clone(),
        leg,
        dialog,
        states,
        commands,
        ended_tx,
        media: Some(media_handle),
        session: Some(session_id),
        trunk: Some(trunk),
        local_sdp: answer_sdp,
        pending: Some(ActiveCall {
            info,
            media,
            control,
        }),
        answer_at,
        on_end: Some(Box::new(untrack)),
        bridge_stop: None,
        transfer: None,
        sip_events: None,
        min_se: ctx.cfg.min_session_expires,
    };
    driver.run().instrument(span).await;
}

/// An INVITE that may come in.
struct Admitted {
    trunk: TrunkId,
    agent: switchboard_model::Agent,
    /// The agent's call slot, held until the call ends.
    slot: SlotGuard,
    /// The called number the call was routed by.
    called: E164,
}

/// Trunk authentication and routing, or why the INVITE is refused.
async fn admit(ctx: &Arc<Ctx>, tx: &Transaction, now: Instant) -> Result<Admitted, Refusal> {
    let Some(store) = ctx.store.as_ref() else {
        return Err(Refusal::Reply(StatusCode::ServiceUnavailable, "no store"));
    };
    let req = &tx.original;
    let forbid = || -> Refusal {
        let source = sip::source_ip(req);
        let mut limiter = ctx.limiter.lock().unwrap_or_else(|p| p.into_inner());
        match source {
            Some(ip) if limiter.allow(ip, now) => {
                Refusal::Reply(StatusCode::Forbidden, "not from a configured trunk")
            }
            _ => Refusal::Drop,
        }
    };
    let Some(source) = sip::source_ip(req) else {
        return Err(Refusal::Reply(StatusCode::BadRequest, "no usable Via"));
    };
    let rules = ctx.directory.trunks(store, now).await.map_err(|e| {
        warn!(error = %e, "cannot list trunks");
        Refusal::Reply(StatusCode::ServiceUnavailable, "store unavailable")
    })?;
    let auth = sip::authorization(req);
    // Fetch the password only for trunks whose username the request claims.
    let claimed = auth.as_deref().and_then(sip::authorization_user);
    let mut passwords: HashMap<TrunkId, String> = HashMap::new();
    if let Some(user) = &claimed {
        for rule in rules
            .iter()
            .filter(|r| r.digest_username.as_deref() == Some(user.as_str()))
        {
            if let Ok(creds) = store.trunk_credentials(rule.id).await {
                if let Some(p) = creds.inbound_password {
                    passwords.insert(rule.id, p.expose().clone());
                }
            }
        }
    }
    let verdict = control::trunk_verdict(source, &rules, auth.is_some(), |rule| {
        match (
            auth.as_deref(),
            rule.digest_username.as_deref(),
            passwords.get(&rule.id),
        ) {
            (Some(raw), Some(user), Some(password)) => {
                sip::digest_ok(raw, req, user, password, ctx.nonce_secret)
            }
            _ => false,
        }
    });
    let trunk = match verdict {
        TrunkVerdict::Allowed(id) => id,
        TrunkVerdict::Challenge => return Err(Refusal::Challenge),
        TrunkVerdict::Forbidden => return Err(forbid()),
    };

    let called = control::called_number(
        sip::request_user(req).as_deref(),
        sip::to_user(req).as_deref(),
        ctx.cfg.region,
    );
    let unknown = Refusal::Reply(
        StatusCode::from(RouteRefusal::UnknownNumber.status()),
        "unknown number",
    );
    let Some(called) = called else {
        return Err(unknown);
    };
    let agent = match ctx.directory.agent_for_number(store, &called, now).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return Err(unknown),
        Err(e) => {
            warn!(error = %e, "number lookup failed");
            return Err(Refusal::Reply(
                StatusCode::ServiceUnavailable,
                "store unavailable",
            ));
        }
    };
    let limit = call_limit(agent.spec.max_concurrent_calls, ctx.cfg.max_calls_per_agent);
    let Some(slot) = ctx.reserve_slot(agent.id, limit) else {
        return Err(Refusal::Reply(
            StatusCode::from(RouteRefusal::Busy.status()),
            "agent at its concurrent-call limit",
        ));
    };
    Ok(Admitted {
        trunk,
        agent,
        slot,
        called,
    })
}
