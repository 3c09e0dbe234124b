//! `switchboard serve`: prepare, migrate, bind, create the first user, serve
//! until SIGINT/SIGTERM, then drain.
//!
//! Start-up failures a user can fix (data directory, secret key, database,
//! busy port) end with one `error:` line and exit code 2. The listener is
//! bound here, before anything is printed, so `--http 127.0.0.1:0` works and
//! the printed `Dashboard:` line carries the real port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use switchboard_store::{Store, StoreError};
use switchboard_web::{AppState, WebSettings};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// Browser test calls at once on one server: they share its speech models.
const BROWSER_CALLS_MAX: usize = 4;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::app::{connect, load_secret_key, prepare_dir};
use crate::config::Config;
use crate::{wiring, Failure};

/// Name of the user created at first start.
pub(crate) const ADMIN_USER: &str = "admin";
/// Environment variable with the first user's password.
pub(crate) const ADMIN_PASSWORD_VAR: &str = "SWITCHBOARD_ADMIN_PASSWORD";
/// How long in-flight requests may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

pub(crate) async fn run(config: Config) -> anyhow::Result<ExitCode> {
    prepare_dir(
        &config.storage.data_dir,
        "storage.data_dir",
        &config.how_to_set("storage.data_dir", Some("--data-dir")),
    )?;
    prepare_dir(
        &config.storage.recordings_dir,
        "storage.recordings_dir",
        &config.how_to_set("storage.recordings_dir", None),
    )?;
    let secrets = load_secret_key(&config)?;
    let store = connect(&config, secrets, Duration::from_secs(5)).await?;
    store.migrate().await?;
    info!(
        backend = store.backend().name(),
        database = %config.database.redacted_url(),
        "database ready"
    );

    let listener = bind(&config).await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let mut background = JoinSet::new();
    let sandbox = wiring::start_sandbox(&config, &mut background).await?;
    let public_url = config
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| dashboard_url(addr).trim_end_matches('/').to_string());
    let salesforce = Arc::new(wiring::salesforce_settings(
        &config,
        &store,
        sandbox.as_ref().map(|s| s.addr),
        &public_url,
    )?);

    let signalled = shutdown_signal()?;
    if let Some(password) = ensure_admin(&store).await? {
        println!("Created the dashboard user `{ADMIN_USER}` with password: {password}");
        println!("This password is shown only once: store it, or change it after logging in.");
    }
    println!("Dashboard: {} (user {ADMIN_USER})", dashboard_url(addr));
    if let Some(s) = &sandbox {
        println!(
            "Salesforce sandbox: http://{}/sandbox/console (handoffs go here until an org is configured; also in the dashboard at {}sandbox)",
            s.addr,
            dashboard_url(addr)
        );
    }
    info!(%addr, "dashboard and API listening");

    // `..Default` keeps this compiling when the web side grows a setting.
    #[allow(clippy::needless_update)]
    let settings = WebSettings {
        default_region: config.phone.default_region,
        login_ttl: config.http.login_ttl,
        secure_cookies: config.http.secure_cookies,
        login_attempts_per_minute: config.http.login_attempts_per_minute,
        recordings_dir: Some(config.storage.recordings_dir.clone()),
        ..WebSettings::default()
    };
    let notify = Arc::new(Notify::new());
    let (stop_workers, workers_stop) = watch::channel(false);
    let workers = wiring::start_workers(
        &config,
        &store,
        salesforce.clone(),
        notify.clone(),
        workers_stop,
    );
    let engines = wiring::call_engines(&config, &store, notify.clone()).await;
    let telephony = wiring::start_telephony(&config, &store, engines.clone()).await?;
    if let Some(t) = &telephony {
        println!("SIP: {} (UDP and TCP)", t.local_addr());
    }
    let mut state = AppState::new(store.clone(), settings)
        .with_salesforce(salesforce)
        .with_handoff_notify(notify);
    if let Some(s) = &sandbox {
        state = state.with_sandbox(s.sandbox.clone());
    }
    state = state.with_browser_calls(Arc::new(crate::browser::BrowserPhone {
        engines,
        recordings_dir: config.storage.recordings_dir.clone(),
        live: Default::default(),
        max_live: BROWSER_CALLS_MAX,
    }));
    if let Some(t) = &telephony {
        state = state.with_dialer(Arc::new(crate::calls::TelephonyDialer {
            telephony: t.clone(),
        }));
        wiring::follow_routing_changes(t.clone(), state.routing_changed.clone());
    }

    // The signal starts a graceful shutdown; the grace period bounds it.
    let stopping = Arc::new(Notify::new());
    let signal = {
        let stopping = Arc::clone(&stopping);
        async move {
            signalled.await;
            info!("shutting down: finishing in-flight requests");
            stopping.notify_one();
        }
    };
    let served = tokio::select! {
        result = switchboard_web::serve(listener, state, signal) => result,
        () = async { stopping.notified().await; tokio::time::sleep(GRACE).await } => {
            warn!(grace_seconds = GRACE.as_secs(), "requests still running after the grace period; stopping anyway");
            Ok(())
        }
    };
    // Calls get the grace period to finish, then are hung up.
    if let Some(t) = &telephony {
        t.shutdown(GRACE).await;
    }
    // Workers finish the message in flight and give their job back.
    let _ = stop_workers.send(true);
    wiring::drain_workers(workers, GRACE).await;
    background.abort_all();
    store.close().await;
    served.context("the HTTP server stopped with an error")?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let addr = config.http.addr;
    TcpListener::bind(addr).await.map_err(|e| {
        let change = config.how_to_set("http.addr", Some("--http"));
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the address is already in use (is another switchboard running?)".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_string()
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "the IP address does not belong to this machine".to_string()
            }
            _ => e.to_string(),
        };
        Failure::usage(format!("cannot listen on {addr}: {why} — {change}"))
    })
}

/// Creates the first user if there is none. Returns the password to print
/// when it was generated (never when it came from the environment).
async fn ensure_admin(store: &Store) -> anyhow::Result<Option<String>> {
    if store.user_count().await? > 0 {
        if std::env::var_os(ADMIN_PASSWORD_VAR).is_some() {
            info!("{ADMIN_PASSWORD_VAR} is ignored: dashboard users exist already (change passwords in the dashboard)");
        }
        return Ok(None);
    }
    let (password, generated) = match std::env::var(ADMIN_PASSWORD_VAR) {
        Ok(p) if !p.is_empty() => {
            if p.chars().count() < 8 {
                return Err(Failure::usage(format!(
                    "{ADMIN_PASSWORD_VAR}: must be at least 8 characters"
                )));
            }
            (p, false)
        }
        // 18 random bytes → 24 URL-safe characters.
        _ => (switchboard_store::auth::random_token(18), true),
    };
    match store.create_user(ADMIN_USER, &password).await {
        Ok(user) => {
            store
                .audit(
                    "system",
                    "user.create",
                    &user.id.to_string(),
                    json!({ "username": ADMIN_USER, "reason": "first start" }),
                )
                .await?;
            if !generated {
                println!("Created the dashboard user `{ADMIN_USER}` with the password from {ADMIN_PASSWORD_VAR}.");
            }
            Ok(generated.then_some(password))
        }
        // Another node created it at the same moment: nothing to show.
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The URL to open: wildcard addresses are shown as loopback.
fn dashboard_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, addr.port()))
}

/// Registers for SIGINT (Ctrl-C) and SIGTERM now, so a signal that comes
/// right after the `Dashboard:` line is already handled; the returned future
/// resolves on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_show_as_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().expect("literal");
        assert_eq!(dashboard_url(a), "http://127.0.0.1:8080/");
        let a: SocketAddr = "[::]:8080".parse().expect("literal");
        assert_eq!(dashboard_url(a), "http://[::1]:8080/");
        let a: SocketAddr = "10.0.0.5:80".parse().expect("literal");
        assert_eq!(dashboard_url(a), "http://10.0.0.5:80/");
    }
}
