//! Glue between telephony and the voice engine: an answered SIP call
//! ([`ActiveCall`]) becomes the engine's [`Line`], and the engine is
//! telephony's [`CallHandler`].
//!
//! The media leg stays with a small pump task: it forwards the leg's events
//! to the engine, and lends the leg to telephony for a live transfer (the
//! bridge needs to own it), taking it back when the transfer fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchboard_model::{Region, E164};
use switchboard_rtp::{MediaEvent, MediaLeg};
use switchboard_telephony::{
    ActiveCall, CallControl, CallHandler, TransferOptions, TransferOutcome,
};
use switchboard_voice::{CallSetup, Line, LineControl, LineEvent, TransferFuture, TransferResult};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Runs every answered call that has an agent through the engine.
pub(crate) struct EngineHandler {
    pub(crate) engines: crate::providers::CallEngines,
    pub(crate) region: Region,
}

impl CallHandler for EngineHandler {
    fn handle(&self, call: ActiveCall) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let engines = self.engines.clone();
        let region = self.region;
        Box::pin(async move {
            let Some(agent) = call.info.agent.clone() else {
                warn!(session = %call.info.session.id, "answered call without an agent; hanging up");
                call.control.hangup("no agent for this call");
                return;
            };
            let engine = engines.engine_for(&agent, call.info.session.id).await;
            if let Some(path) = &call.info.recording {
                let key = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Err(e) = engine
                    .store()
                    .set_recording(call.info.session.id, &key)
                    .await
                {
                    warn!(error = %e, "cannot link the recording to the session");
                }
            }
            let caller_id = call
                .info
                .contact
                .as_ref()
                .map(|c| c.phone.clone())
                .or_else(|| E164::parse(&call.info.session.from, region).ok());
            let setup = CallSetup {
                session: call.info.session.clone(),
                agent,
                caller_id,
            };
            let line = into_line(call);
            engine.run(setup, line).await;
        })
    }
}

/// Wraps an answered call as an engine [`Line`].
pub(crate) fn into_line(call: ActiveCall) -> Line {
    let ActiveCall { media, control, .. } = call;
    let (events_tx, events_rx) = mpsc::channel(64);
    let (lend_tx, lend_rx) = mpsc::channel(1);
    let audio_out = media.audio_out.clone();
    let keys = media.handle();
    tokio::spawn(pump(media, control.clone(), events_tx, lend_rx));
    Line {
        events: events_rx,
        audio_out,
        control: Arc::new(SipLine {
            control,
            lend: lend_tx,
            keys,
        }),
    }
}

/// A request to lend the leg to a transfer.
struct Lend {
    target: String,
    reply: oneshot::Sender<TransferResult>,
}

struct SipLine {
    control: CallControl,
    lend: mpsc::Sender<Lend>,
    keys: switchboard_rtp::MediaHandle,
}

impl LineControl for SipLine {
    fn hangup(&self, reason: &str) {
        self.control.hangup(reason);
    }

    fn transfer(&self, target: &str) -> TransferFuture {
        let lend = self.lend.clone();
        let target = target.to_string();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            if lend.send(Lend { target, reply }).await.is_err() {
                return TransferResult::Failed {
                    reason: "the call has ended".into(),
                };
            }
            rx.await.unwrap_or(TransferResult::Failed {
                reason: "the call has ended".into(),
            })
        })
    }

    fn send_dtmf(&self, digits: &str) {
        self.keys.send_dtmf(digits);
    }
}

async fn pump(
    mut media: MediaLeg,
    control: CallControl,
    events: mpsc::Sender<LineEvent>,
    mut lend: mpsc::Receiver<Lend>,
) {
    let mut ended = control.ended();
    loop {
        tokio::select! {
            ev = media.events.recv() => {
                let ev = match ev {
                    Some(MediaEvent::Audio(frame)) => LineEvent::Audio(frame),
                    Some(MediaEvent::Dtmf(d)) => LineEvent::Dtmf(d),
                    Some(MediaEvent::RtpTimeout) => {
                        // Media stopped: hang up rather than talk to nobody.
                        control.hangup("no audio from the caller (RTP timeout)");
                        LineEvent::Hangup { reason: "no audio from the caller (RTP timeout)".into() }
                    }
                    None => LineEvent::Hangup { reason: "caller hung up".into() },
                };
                let last = matches!(ev, LineEvent::Hangup { .. });
                if events.send(ev).await.is_err() || last {
                    return;
                }
            }
            changed = ended.changed() => {
                let reason = match changed {
                    Ok(()) => ended.borrow().clone(),
                    Err(_) => None,
                };
                if changed.is_err() || reason.is_some() {
                    let reason = reason.unwrap_or_else(|| "caller hung up".into());
                    let _ = events.send(LineEvent::Hangup { reason }).await;
                    media.handle().stop();
                    return;
                }
            }
            req = lend.recv() => {
                let Some(Lend { target, reply }) = req else { continue };
                let (outcome, back) = control
                    .transfer(&target, media, TransferOptions::default())
                    .await;
                let result = match outcome {
                    TransferOutcome::Bridged | TransferOutcome::Referred => TransferResult::Connected,
                    TransferOutcome::Failed(f) => TransferResult::Failed { reason: f.to_string() },
                };
                let _ = reply.send(result);
                match back {
                    Some(leg) => media = leg,
                    None => {
                        // The bridge has the leg: wait for the call to end.
                        let _ = ended.wait_for(|r| r.is_some()).await;
                        let reason = ended.borrow().clone().unwrap_or_else(|| "call ended".into());
                        let _ = events.send(LineEvent::Hangup { reason }).await;
                        return;
                    }
                }
            }
        }
    }
}

/// `POST /api/v1/calls` through telephony: the answered call goes to the
/// engine (the agent speaks first).
pub(crate) struct TelephonyDialer {
    pub(crate) telephony: switchboard_telephony::Telephony,
}

impl switchboard_web::calls_api::Dialer for TelephonyDialer {
    fn dial(
        &self,
        agent: switchboard_model::AgentId,
        to: String,
        trunk: Option<String>,
    ) -> switchboard_web::calls_api::DialFuture {
        use switchboard_telephony::DialError;
        use switchboard_web::calls_api::DialFailure;
        let telephony = self.telephony.clone();
        Box::pin(async move {
            let req = switchboard_telephony::DialRequest {
                to,
                trunk,
                agent: Some(agent),
                ..Default::default()
            };
            telephony.dial_agent(req).await.map_err(|e| match e {
                DialError::Busy
                | DialError::NoAnswer
                | DialError::Rejected { .. }
                | DialError::Unauthorized { .. } => DialFailure::Refused(e.end_reason()),
                DialError::InvalidTarget { .. } => DialFailure::InvalidTarget(e.to_string()),
                other => DialFailure::Unavailable(other.to_string()),
            })
        })
    }
}
