//! REGISTER to trunks that ask for it (`register = true`): one task per
//! trunk, driven by the sans-IO [`RegistrationTimer`]. rsipstack's
//! `Registration` sends the request and answers the registrar's digest
//! challenge with the trunk's outbound credentials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::Registration;
use rsipstack::sip::{Param, Transport as SipTransport, Uri};
use switchboard_model::{Transport, Trunk};
use tracing::{info, warn};

use crate::control::{RegistrationState, RegistrationTimer};
use crate::server::Ctx;
use crate::TelephonyError;

/// The expiry we ask registrars for.
const REQUESTED_EXPIRY: Duration = Duration::from_secs(3600);

/// Starts a keeper for every trunk with `register = true` that has none
/// yet; returns how many were started.
pub(crate) async fn register_trunks(ctx: &Arc<Ctx>) -> Result<usize, TelephonyError> {
    let Some(store) = &ctx.store else {
        return Ok(0);
    };
    let mut started = 0;
    for trunk in store.list_trunks().await? {
        if !trunk.register {
            continue;
        }
        let new = ctx
            .registering
            .lock()
            .map(|mut set| set.insert(trunk.id))
            .unwrap_or(false);
        if !new {
            continue;
        }
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
        tokio::spawn(keep_registered(ctx.clone(), trunk, credential));
        started += 1;
    }
    Ok(started)
}

async fn keep_registered(ctx: Arc<Ctx>, trunk: Trunk, credential: Option<Credential>) {
    let target = format!("sip:{}:{}", trunk.host, trunk.port);
    let mut server = match Uri::try_from(target.as_str()) {
        Ok(uri) => uri,
        Err(e) => {
            warn!(trunk = %trunk.name, error = %e, "trunk host is not a SIP address; not registering");
            return;
        }
    };
    if trunk.transport == Transport::Tcp {
        server.params.push(Param::Transport(SipTransport::Tcp));
    }
    let mut registration = Registration::new(ctx.stack.dialogs.endpoint.clone(), credential);
    let mut timer = RegistrationTimer::new(REQUESTED_EXPIRY, Instant::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(timer.next_timeout().into()) => {}
            _ = ctx.stack.cancel.cancelled() => break,
        }
        let result = registration
            .register(server.clone(), Some(timer.requested_secs()))
            .await;
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
}
