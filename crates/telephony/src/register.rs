//! REGISTER to trunks that ask for it (`register = true`): one task per
//! trunk, driven by the sans-IO [`RegistrationTimer`]. rsipstack's
//! `Registration` sends the request and answers the registrar's digest
//! challenge with the trunk's outbound credentials. [`reconcile`] (behind
//! `Telephony::reload_trunks`) starts, stops and restarts keepers as trunks
//! change in the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::Registration;
use rsipstack::sip::{Param, Uri};
use switchboard_model::{Transport, Trunk, TrunkId};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::{RegistrationState, RegistrationTimer};
use crate::server::Ctx;
use crate::TelephonyError;

/// The expiry we ask registrars for.
const REQUESTED_EXPIRY: Duration = Duration::from_secs(3600);

/// One running REGISTER keeper.
pub(crate) struct Keeper {
    stop: CancellationToken,
    /// What the keeper registers with; a change restarts it.
    fingerprint: String,
}

/// What [`crate::Telephony::reload_trunks`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrunkReload {
    /// Keepers started (new trunks with `register = true`, or changed ones).
    pub started: usize,
    /// Keepers stopped (trunks removed, no longer registering, or changed);
    /// each sends a last REGISTER with `Expires: 0`.
    pub stopped: usize,
}

fn fingerprint(trunk: &Trunk) -> String {
    format!(
        "{}:{}:{}:{:?}:{}",
        trunk.host,
        trunk.port,
        trunk.transport,
        trunk.outbound_username,
        trunk.outbound_password_set
    )
}

/// Brings the REGISTER keepers in line with the store: starts one for every
/// trunk with `register = true` that has none, stops those whose trunk is
/// gone or no longer registers, and restarts those whose address or
/// credentials changed. Idempotent.
pub(crate) async fn reconcile(ctx: &Arc<Ctx>) -> Result<TrunkReload, TelephonyError> {
    let Some(store) = &ctx.store else {
        return Ok(TrunkReload::default());
    };
    let trunks = store.list_trunks().await?;
    let wanted: HashMap<TrunkId, (&Trunk, String)> = trunks
        .iter()
        .filter(|t| t.register)
        .map(|t| (t.id, (t, fingerprint(t))))
        .collect();
    let mut reload = TrunkReload::default();
    let to_start: Vec<&Trunk> = {
        let mut keepers = ctx.registering.lock().unwrap_or_else(|p| p.into_inner());
        keepers.retain(|id, keeper| {
            let keep = wanted
                .get(id)
                .is_some_and(|(_, f)| *f == keeper.fingerprint);
            if !keep {
                keeper.stop.cancel();
                reload.stopped += 1;
            }
            keep
        });
        wanted
            .values()
            .filter(|(t, _)| !keepers.contains_key(&t.id))
            .map(|(t, _)| *t)
            .collect()
    };
    for trunk in to_start {
        let credential = match &trunk.outbound_username {
            Some(user) => store
                .trunk_credentials(trunk.id)
                .await?
                .outbound_password
                .map(|p| Credential {
                    username: user.clone(),
                    password: p.expose().clone(),
                    realm: None,
                    auth_username: None,
                }),
            None => None,
        };
        let stop = ctx.stack.cancel.child_token();
        let fresh = {
            let mut keepers = ctx.registering.lock().unwrap_or_else(|p| p.into_inner());
            // A concurrent reload may have started it meanwhile.
            match keepers.entry(trunk.id) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Keeper {
                        stop: stop.clone(),
                        fingerprint: fingerprint(trunk),
                    });
                    true
                }
            }
        };
        if fresh {
            tokio::spawn(keep_registered(
                ctx.clone(),
                trunk.clone(),
                credential,
                stop,
            ));
            reload.started += 1;
        }
    }
    if reload != TrunkReload::default() {
        info!(
            started = reload.started,
            stopped = reload.stopped,
            "trunk registrations reloaded"
        );
    }
    Ok(reload)
}

async fn keep_registered(
    ctx: Arc<Ctx>,
    trunk: Trunk,
    credential: Option<Credential>,
    stop: CancellationToken,
) {
    let target = format!("sip:{}:{}", trunk.host, trunk.port);
    let mut server = match Uri::try_from(target.as_str()) {
        Ok(uri) => uri,
        Err(e) => {
            warn!(trunk = %trunk.name, error = %e, "trunk host is not a SIP address; not registering");
            return;
        }
    };
    if let Some(transport) = crate::outbound::sip_transport(trunk.transport) {
        server.params.push(Param::Transport(transport));
    }
    let mut registration = Registration::new(ctx.stack.dialogs.endpoint.clone(), credential);
    if trunk.transport == Transport::Tls {
        if ctx.stack.tls_local.is_none() {
            warn!(trunk = %trunk.name, "trunk registers over TLS but sip.tls_addr is unset: the carrier has no TLS address to send calls to");
        }
        // Calls for a TLS trunk's numbers must come back over TLS.
        registration.contact = Some(rsipstack::sip::typed::Contact {
            display_name: None,
            uri: ctx.stack.contact_for(&server),
            params: Vec::new(),
        });
    }
    let mut timer = RegistrationTimer::new(REQUESTED_EXPIRY, Instant::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(timer.next_timeout().into()) => {}
            _ = stop.cancelled() => break,
        }
        let result = tokio::select! {
            r = registration.register(server.clone(), Some(timer.requested_secs())) => r,
            _ = stop.cancelled() => break,
        };
        let now = Instant::now();
        match result {
            Ok(response) => {
                let code = response.status_code.code();
                // rsipstack reads the granted expiry from the 2xx.
                let granted = Duration::from_secs(u64::from(registration.expires()));
                timer.handle_response(now, code, Some(granted));
            }
            Err(e) => {
                warn!(trunk = %trunk.name, error = %e, "REGISTER failed");
                timer.handle_failure(now);
            }
        }
        match timer.state() {
            RegistrationState::Registered { until } => info!(
                trunk = %trunk.name,
                expires_in = ?until.saturating_duration_since(now),
                "registered"
            ),
            RegistrationState::Failing(why) => {
                warn!(trunk = %trunk.name, %why, "registration failing")
            }
            RegistrationState::Pending => {}
        }
    }
    // Removed or changed at run time (not at shutdown): withdraw the
    // binding so the carrier stops routing calls here.
    let registered = matches!(timer.state(), RegistrationState::Registered { .. });
    if registered && !ctx.stack.cancel.is_cancelled() {
        let bye = registration.register(server, Some(0));
        match tokio::time::timeout(Duration::from_secs(5), bye).await {
            Ok(Ok(_)) => info!(trunk = %trunk.name, "unregistered"),
            _ => warn!(trunk = %trunk.name, "could not unregister"),
        }
    }
}
