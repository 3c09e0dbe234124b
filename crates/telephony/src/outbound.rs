//! Outbound calls: through a trunk (digest credentials, caller id) or to a
//! SIP URI; the agent's outbound call, the transfer leg and the test caller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::DialogStateReceiver;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Param, Transport as SipTransport, Uri};
use switchboard_model::{
    AgentId, Clock, Direction, NewSession, Outcome, Session, SessionId, SessionStatus, SystemClock,
    Transport, TrunkId, E164,
};
use tracing::{info, Instrument};

use crate::call::{ActiveCall, CallControl, CallDriver, CallInfo, TransferOptions};
use crate::control::{self, CallLeg, LegInput, SipEvent, TransferFailure};
use crate::rtp::{MediaEngine, RtpEndpoint};
use crate::server::{Ctx, Stack, Telephony};
use crate::sip;
use crate::{DialError, SipConfig};

/// An outbound call through [`Telephony::dial`].
#[derive(Debug, Clone, Default)]
pub struct DialRequest {
    /// E.164 number (dialled through a trunk) or a `sip:` URI.
    pub to: String,
    /// Trunk id or name; default: the only trunk, if there is exactly one.
    pub trunk: Option<String>,
    /// The agent that talks (sets the session's agent and, for
    /// [`Telephony::dial_agent`], hands the call to the engine).
    pub agent: Option<AgentId>,
    /// Caller id; default: the trunk's outbound caller id.
    pub caller_id: Option<String>,
    /// Ring timeout; default: `SipConfig::no_answer_timeout`.
    pub no_answer_timeout: Option<Duration>,
}

/// Options for the test caller ([`dial_uri`]).
#[derive(Debug, Clone)]
pub struct DialUriOptions {
    /// Local SIP address (port 0 picks one).
    pub bind: SocketAddr,
    /// The user part of our From (a phone number or a name).
    pub from: String,
    pub no_answer_timeout: Duration,
    /// Stereo WAV of the call, if wanted.
    pub recording: Option<std::path::PathBuf>,
    /// CAs trusted for a `;transport=tls` target, PEM (such as the system
    /// bundle). Without them a TLS target cannot be verified.
    pub tls_ca: Option<Vec<u8>>,
}

impl Default for DialUriOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            from: "switchboard".into(),
            no_answer_timeout: Duration::from_secs(30),
            recording: None,
            tls_ca: None,
        }
    }
}

/// The test caller: dial `target` (a SIP URI such as
/// `sip:+14155550100@127.0.0.1:5070`) from a private SIP endpoint, without
/// any store or agent. The session in the returned [`CallInfo`] exists only
/// in memory. The endpoint lives as long as the call.
pub async fn dial_uri(
    target: &str,
    engine: &MediaEngine,
    opts: DialUriOptions,
) -> Result<ActiveCall, DialError> {
    let cfg = SipConfig {
        listen: opts.bind,
        no_answer_timeout: opts.no_answer_timeout,
        ..SipConfig::default()
    };
    let tls = opts.tls_ca.clone().map(|ca_pem| crate::SipTls {
        ca_pem: Some(ca_pem),
        ..crate::SipTls::default()
    });
    let (stack, incoming) = Stack::bind(
        opts.bind,
        false,
        cfg.t1,
        &cfg.user_agent,
        None,
        tls.as_ref(),
    )
    .await
    .map_err(|e| DialError::Network(e.to_string()))?;
    let ctx = Arc::new(Ctx::new(stack, None, cfg, engine.clone(), None));
    tokio::spawn(crate::server::serve(ctx.clone(), incoming));
    let resolved = resolve_uri(&ctx, target, Some(&opts.from))?;
    let connected = match connect(&ctx, &resolved, opts.no_answer_timeout, Timer::Ask).await {
        Ok(c) => c,
        Err(e) => {
            ctx.stack.cancel.cancel();
            return Err(e);
        }
    };
    let now = SystemClock.now();
    let session = Session {
        id: SessionId::new(),
        agent_id: None,
        direction: Direction::Outbound,
        from: opts.from.clone(),
        to: target.to_string(),
        contact_id: None,
        status: SessionStatus::Active,
        outcome: None,
        end_reason: None,
        started_at: now,
        answered_at: Some(now),
        ended_at: None,
        recording: None,
    };
    let info = CallInfo {
        session,
        agent: None,
        contact: None,
        direction: Direction::Outbound,
        trunk: None,
        recording: opts.recording.clone(),
    };
    let stop_stack = {
        let cancel = ctx.stack.cancel.clone();
        move || {
            // Leave the stack up briefly so our BYE's response and any
            // retransmission still find it.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                cancel.cancel();
            });
        }
    };
    Ok(start_outbound(&ctx, connected, info, Box::new(stop_stack)))
}

impl Telephony {
    /// Dials out and returns the answered call (the caller drives it).
    /// Creates the outbound session row; a failure ends it with the reason.
    pub async fn dial(&self, req: DialRequest) -> Result<ActiveCall, DialError> {
        let ctx = &self.ctx;
        let store = ctx
            .store
            .clone()
            .ok_or_else(|| DialError::Network("no store".into()))?;
        let resolved = resolve(ctx, &req).await?;
        let agent = match req.agent {
            Some(id) => Some(store.agent(id).await?),
            None => None,
        };
        let contact = match &resolved.callee_number {
            Some(n) => store.contact_by_phone(n).await.unwrap_or(None),
            None => None,
        };
        let session = store
            .create_session(&NewSession {
                agent_id: req.agent,
                direction: Direction::Outbound,
                from: resolved.caller_display.clone(),
                to: resolved.callee_display.clone(),
                contact_id: contact.as_ref().map(|c| c.id),
                started_at: SystemClock.now(),
            })
            .await?;
        let span = tracing::info_span!("call", session = %session.id, direction = "outbound");
        let timeout = req.no_answer_timeout.unwrap_or(ctx.cfg.no_answer_timeout);
        let connected = match connect(ctx, &resolved, timeout, Timer::Ask)
            .instrument(span.clone())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let reason = e.end_reason();
                span.in_scope(|| info!(%reason, "outbound call failed"));
                store
                    .end_session(session.id, SystemClock.now(), Outcome::Failed, &reason)
                    .await
                    .ok();
                return Err(e);
            }
        };
        let recording = ctx.cfg.recordings_dir.join(format!("{}.wav", session.id));
        let info = CallInfo {
            session,
            agent,
            contact,
            direction: Direction::Outbound,
            trunk: resolved.trunk,
            recording: Some(recording),
        };
        let untrack = {
            let ctx = Arc::downgrade(ctx);
            let id = info.session.id;
            move || {
                if let Some(ctx) = ctx.upgrade() {
                    ctx.untrack(id);
                }
            }
        };
        Ok(start_outbound(ctx, connected, info, Box::new(untrack)))
    }

    /// `switchboard dial --agent`: dials, and when the callee answers hands
    /// the call to the engine like an inbound one. Returns the session id.
    pub async fn dial_agent(&self, req: DialRequest) -> Result<SessionId, DialError> {
        let call = self.dial(req).await?;
        let id = call.info.session.id;
        match self.ctx.handler.clone() {
            Some(handler) => {
                tokio::spawn(handler.handle(call));
            }
            None => call.control.hangup("no call handler"),
        }
        Ok(id)
    }
}

/// A callee that answered.
pub(crate) struct Connected {
    pub(crate) dialog: InviteDialog,
    pub(crate) states: DialogStateReceiver,
    pub(crate) endpoint: RtpEndpoint,
    pub(crate) local_sdp: String,
    /// The RFC 4028 timer the 2xx granted, if any.
    pub(crate) session_timer: Option<control::SessionTimer>,
}

/// Where and how to send an INVITE.
pub(crate) struct Resolved {
    callee: Uri,
    caller: Uri,
    credential: Option<Credential>,
    trunk: Option<TrunkId>,
    callee_number: Option<E164>,
    callee_display: String,
    caller_display: String,
}

async fn resolve(ctx: &Arc<Ctx>, req: &DialRequest) -> Result<Resolved, DialError> {
    let to = req.to.trim();
    let lower = to.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let caller_id = req.caller_id.as_deref().unwrap_or("switchboard");
        return resolve_uri(ctx, to, Some(caller_id));
    }
    let number = E164::parse(to, ctx.cfg.region).map_err(|e| DialError::InvalidTarget {
        target: to.to_string(),
        reason: e.to_string(),
    })?;
    let store = ctx
        .store
        .as_ref()
        .ok_or_else(|| DialError::Network("no store".into()))?;
    let trunk = match &req.trunk {
        Some(name) => store.find_trunk(name).await?,
        None => {
            let mut all = store.list_trunks().await?;
            if all.len() != 1 {
                return Err(DialError::InvalidTarget {
                    target: to.to_string(),
                    reason: format!(
                        "{} trunks are configured; name the trunk to dial through",
                        all.len()
                    ),
                });
            }
            all.remove(0)
        }
    };
    let mut r = resolve_trunk(ctx, &trunk, &number, req.caller_id.as_deref()).await?;
    r.callee_number = Some(number);
    Ok(r)
}

async fn resolve_trunk(
    ctx: &Arc<Ctx>,
    trunk: &switchboard_model::Trunk,
    number: &E164,
    caller_id: Option<&str>,
) -> Result<Resolved, DialError> {
    let store = ctx
        .store
        .as_ref()
        .ok_or_else(|| DialError::Network("no store".into()))?;
    let mut callee = Uri::try_from(
        format!("sip:{}@{}:{}", number, trunk.host, trunk.port).as_str(),
    )
    .map_err(|e| DialError::InvalidTarget {
        target: number.to_string(),
        reason: format!("trunk host `{}`: {e}", trunk.host),
    })?;
    if let Some(transport) = sip_transport(trunk.transport) {
        callee.params.push(Param::Transport(transport));
    }
    let credential = match &trunk.outbound_username {
        Some(user) => {
            let creds = store.trunk_credentials(trunk.id).await?;
            creds.outbound_password.map(|p| Credential {
                username: user.clone(),
                password: p.expose().clone(),
                realm: None,
                auth_username: None,
            })
        }
        None => None,
    };
    let caller_user = caller_id
        .map(str::to_string)
        .or_else(|| trunk.outbound_caller_id.as_ref().map(E164::to_string))
        .or_else(|| trunk.outbound_username.clone())
        .unwrap_or_else(|| "anonymous".into());
    let caller = local_uri(ctx, &caller_user)?;
    Ok(Resolved {
        callee,
        caller,
        credential,
        trunk: Some(trunk.id),
        callee_number: None,
        callee_display: number.to_string(),
        caller_display: caller_user,
    })
}

fn resolve_uri(ctx: &Arc<Ctx>, target: &str, from: Option<&str>) -> Result<Resolved, DialError> {
    let callee = Uri::try_from(target).map_err(|e| DialError::InvalidTarget {
        target: target.to_string(),
        reason: format!("not a SIP URI: {e}"),
    })?;
    let from = from.unwrap_or("switchboard");
    let caller = local_uri(ctx, from)?;
    let callee_number = callee
        .auth
        .as_ref()
        .and_then(|a| control::normalise_user(&a.user, ctx.cfg.region));
    Ok(Resolved {
        callee,
        caller,
        credential: None,
        trunk: None,
        callee_number,
        callee_display: target.to_string(),
        caller_display: from.to_string(),
    })
}

fn local_uri(ctx: &Ctx, user: &str) -> Result<Uri, DialError> {
    let host = ctx.stack.contact.host_with_port.to_string();
    Uri::try_from(format!("sip:{user}@{host}").as_str()).map_err(|e| DialError::InvalidTarget {
        target: user.to_string(),
        reason: format!("not usable as a caller id: {e}"),
    })
}

/// Over TLS, connects (and verifies the server) before the INVITE, so a
/// certificate we do not trust is an immediate error in words rather than
/// an INVITE that times out unanswered. The connection is kept and carries
/// the INVITE.
async fn tls_preflight(ctx: &Ctx, callee: &Uri) -> Result<(), DialError> {
    let tls = callee
        .params
        .iter()
        .any(|p| matches!(p, Param::Transport(SipTransport::Tls)));
    if !tls {
        return Ok(());
    }
    let target = rsipstack::transport::SipAddr::try_from(callee)
        .map_err(|e| DialError::Network(format!("{callee}: {e}")))?;
    match ctx
        .stack
        .dialogs
        .endpoint
        .transport_layer
        .lookup(&target, None)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(DialError::Network(format!(
            "TLS connection to {target} failed: {e} — the server's certificate must chain to a CA in sip.tls_ca"
        ))),
    }
}

/// The `transport` URI parameter a trunk's transport needs (none for UDP,
/// SIP's default).
pub(crate) fn sip_transport(transport: Transport) -> Option<SipTransport> {
    match transport {
        Transport::Udp => None,
        Transport::Tcp => Some(SipTransport::Tcp),
        Transport::Tls => Some(SipTransport::Tls),
    }
}

/// Whether an INVITE we send asks for an RFC 4028 session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The call's own leg: its driver refreshes or watches the session.
    Ask,
    /// A bridged transfer leg: nothing would refresh it, so we ask for none.
    Omit,
}

/// Sends the INVITE and waits for a final answer, CANCELling after `timeout`
/// (counted over both attempts when a 422 earns a retry).
async fn connect(
    ctx: &Arc<Ctx>,
    r: &Resolved,
    timeout: Duration,
    timer: Timer,
) -> Result<Connected, DialError> {
    let (pending, offer) = ctx
        .engine
        .offer()
        .await
        .map_err(|e| DialError::Media(e.to_string()))?;
    let mut session_timer =
        (timer == Timer::Ask).then(|| control::UacSessionTimer::new(ctx.cfg.min_session_expires));
    let give_up = tokio::time::Instant::now() + timeout;
    tls_preflight(ctx, &r.callee).await?;
    let mut call_id = None;
    // One INVITE, plus one retry after a 422 (RFC 4028 §7.4).
    for _attempt in 0..2 {
        let (state_tx, states) = ctx.stack.dialogs.new_dialog_state_channel();
        let headers = session_timer.map(|st| {
            use rsipstack::sip::Header;
            vec![
                Header::Supported("timer".to_string().into()),
                Header::SessionExpires(st.session_expires().into()),
                Header::MinSE(st.min_se().into()),
            ]
        });
        let opt = InviteOption {
            caller: r.caller.clone(),
            callee: r.callee.clone(),
            content_type: Some("application/sdp".into()),
            offer: Some(offer.clone().into_bytes()),
            contact: ctx.stack.contact_for(&r.callee),
            credential: r.credential.clone(),
            headers,
            // The retry is the same call to the callee (sipp, and carriers
            // that key state on it, see one call with two INVITEs).
            call_id: call_id.clone(),
            ..Default::default()
        };
        let (dialog, handle) = ctx
            .stack
            .dialogs
            .do_invite_async(opt, state_tx)
            .map_err(|e| DialError::Network(e.to_string()))?;
        call_id = Some(dialog.id().call_id);
        let started = Instant::now();
        let result = tokio::select! {
            r = handle => r,
            _ = tokio::time::sleep_until(give_up) => {
                info!(after = ?started.elapsed(), "no answer; cancelling");
                dialog.cancel().await.ok();
                return Err(DialError::NoAnswer);
            }
        };
        let response = match result {
            Ok(Ok((_, Some(resp)))) => resp,
            Ok(Ok((_, None))) => return Err(DialError::Network("no response".into())),
            Ok(Err(e)) => return Err(DialError::Network(e.to_string())),
            Err(e) => return Err(DialError::Network(format!("invite task: {e}"))),
        };
        let code = response.status_code.code();
        let retry = match (code, session_timer.as_mut()) {
            (422, Some(st)) => {
                let min_se = sip::response_header_value(&response, "Min-SE");
                st.handle_too_small(min_se.as_deref())
            }
            _ => None,
        };
        if let Some(interval) = retry {
            info!(
                session_expires = interval.as_secs(),
                "session interval too small (422); retrying with the callee's Min-SE"
            );
            ctx.stack.dialogs.remove_dialog(&dialog.id());
            continue;
        }
        match code {
            200..=299 => {}
            486 | 600 => return Err(DialError::Busy),
            401 | 407 => return Err(DialError::Unauthorized { code }),
            408 | 480 | 487 => return Err(DialError::NoAnswer),
            _ => {
                return Err(DialError::Rejected {
                    code,
                    reason: response.status_code.text().to_string(),
                })
            }
        }
        let answer = String::from_utf8_lossy(&response.body).to_string();
        let endpoint = match pending.accept_answer(&answer) {
            Ok(e) => e,
            Err(e) => {
                dialog.bye().await.ok();
                ctx.stack.dialogs.remove_dialog(&dialog.id());
                return Err(DialError::Media(e.to_string()));
            }
        };
        let session_timer = session_timer.and_then(|st| {
            st.handle_answer(sip::response_header_value(&response, "Session-Expires").as_deref())
        });
        if let Some(timer) = session_timer {
            info!(
                interval = timer.interval.as_secs(),
                refresher = timer.refresher.as_str(),
                "session timer granted"
            );
        }
        return Ok(Connected {
            dialog,
            states,
            endpoint,
            local_sdp: offer,
            session_timer,
        });
    }
    Err(DialError::Rejected {
        code: 422,
        reason: "Session Interval Too Small".into(),
    })
}

/// Starts the media and the call task for an answered outbound leg.
fn start_outbound(
    ctx: &Arc<Ctx>,
    connected: Connected,
    info: CallInfo,
    on_end: Box<dyn FnOnce() + Send>,
) -> ActiveCall {
    let media = connected.endpoint.start(info.recording.clone());
    let (control, commands, ended_tx) = CallControl::new(info.session.id);
    let persisted = ctx.store.is_some();
    if persisted {
        ctx.track(&control);
    }
    let now = Instant::now();
    let mut leg = CallLeg::new(Direction::Outbound, ctx.leg_timers(), now);
    if let Some(timer) = connected.session_timer {
        leg.set_session_timer(timer);
    }
    leg.handle_input(LegInput::Sip(now, SipEvent::Answered));
    let driver = CallDriver {
        ctx: ctx.clone(),
        leg,
        dialog: connected.dialog,
        states: connected.states,
        commands,
        ended_tx,
        media: Some(media.handle()),
        session: persisted.then_some(info.session.id),
        trunk: info.trunk,
        local_sdp: connected.local_sdp,
        pending: None,
        answer_at: None,
        on_end: Some(on_end),
        bridge_stop: None,
        transfer: None,
        sip_events: None,
        min_se: ctx.cfg.min_session_expires,
    };
    tokio::spawn(driver.run());
    ActiveCall {
        info,
        media,
        control,
    }
}

/// Dials the transfer target: E.164 through the call's trunk, or a SIP URI.
pub(crate) async fn connect_transfer(
    ctx: &Arc<Ctx>,
    target: &str,
    trunk: Option<TrunkId>,
    opts: &TransferOptions,
) -> Result<Connected, TransferFailure> {
    let req = DialRequest {
        to: target.to_string(),
        trunk: trunk.map(|t| t.to_string()),
        agent: None,
        caller_id: opts.caller_id.clone(),
        no_answer_timeout: opts.no_answer_timeout,
    };
    let resolved = resolve(ctx, &req).await.map_err(to_failure)?;
    let timeout = opts.no_answer_timeout.unwrap_or(ctx.cfg.no_answer_timeout);
    connect(ctx, &resolved, timeout, Timer::Omit)
        .await
        .map_err(to_failure)
}

fn to_failure(e: DialError) -> TransferFailure {
    match e {
        DialError::Busy => TransferFailure::Busy,
        DialError::NoAnswer => TransferFailure::NoAnswer,
        DialError::Rejected { code, .. } => TransferFailure::Rejected(code),
        DialError::Unauthorized { code } => TransferFailure::Rejected(code),
        other => TransferFailure::Error(other.to_string()),
    }
}
