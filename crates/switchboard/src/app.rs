//! What every command that touches data shares: the configuration, the data
//! directory, the secret key, and a migrated [`Store`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_store::{SecretBox, Store, StoreError, StoreOptions};

use crate::config::{Config, Overrides, Sources};
use crate::Failure;

/// Environment variable with the base64 secret key (else the key file).
pub(crate) const SECRET_KEY_VAR: &str = "SWITCHBOARD_SECRET_KEY";

/// The actor recorded in the audit log for CLI changes.
pub(crate) const AUDIT_ACTOR: &str = "cli";

pub(crate) fn load_config(file: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<Config> {
    Ok(Config::load(&Sources::from_process(file, overrides))?)
}

/// An opened installation: configuration and a migrated store.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) store: Store,
}

impl App {
    /// Prepares the data directory, loads the secret key, connects to the
    /// database and brings its schema up to date.
    pub(crate) async fn open(config: Config) -> anyhow::Result<App> {
        prepare_dir(
            &config.storage.data_dir,
            "storage.data_dir",
            &config.how_to_set("storage.data_dir", Some("--data-dir")),
        )?;
        let secrets = load_secret_key(&config)?;
        let store = connect(&config, secrets, Duration::from_secs(5)).await?;
        store.migrate().await?;
        Ok(App { config, store })
    }
}

/// Creates `dir` if needed and proves it writable, or says what to do.
pub(crate) fn prepare_dir(dir: &Path, key: &str, how_to_change: &str) -> anyhow::Result<()> {
    check_writable(dir).map_err(|reason| {
        Failure::usage(format!(
            "{key} {} {reason} — make it writable for this user, or {how_to_change}",
            dir.display()
        ))
    })
}

/// Creates `dir` (and parents) and writes and removes a probe file in it.
pub(crate) fn check_writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot be created ({e})"))?;
    let probe = dir.join(format!(".switchboard-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| format!("is not writable ({e})"))?;
    // The probe is ours; failing to remove it is harmless.
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The secret key from `SWITCHBOARD_SECRET_KEY`, else `<data_dir>/secret.key`
/// (created with mode 0600 at first use).
pub(crate) fn load_secret_key(config: &Config) -> anyhow::Result<SecretBox> {
    match std::env::var(SECRET_KEY_VAR) {
        Ok(text) if !text.trim().is_empty() => SecretBox::from_base64(&text)
            .map_err(|e| Failure::usage(format!("{SECRET_KEY_VAR}: {e}"))),
        _ => {
            let path = config.storage.secret_key_file();
            SecretBox::load_or_create(&path).map_err(|e| {
                Failure::usage(format!(
                    "{e} — fix or remove the file (secrets stored with it become unreadable), or set {SECRET_KEY_VAR}"
                ))
            })
        }
    }
}

/// Connects to the configured database. Unreachable → one line naming the
/// (redacted) URL and the setting to check.
pub(crate) async fn connect(
    config: &Config,
    secrets: SecretBox,
    acquire_timeout: Duration,
) -> anyhow::Result<Store> {
    let unreachable = |reason: &str| {
        Failure::usage(format!(
            "database {} is unreachable ({reason}) — start it or {}",
            config.database.redacted_url(),
            config.how_to_set("database.url", None)
        ))
    };
    // The pool retries refused connections until its timeout and then reports
    // only "timed out"; one TCP connect first gives the real reason, at once.
    if let Some(server) = server_address(&config.database.url) {
        let probe = tokio::time::timeout(acquire_timeout, tokio::net::TcpStream::connect(&server));
        match probe.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(&format!("{server}: {e}"))),
            Err(_) => {
                return Err(unreachable(&format!(
                    "{server}: no answer within {acquire_timeout:?}"
                )))
            }
        }
    }
    let options = StoreOptions {
        max_connections: config.database.max_connections,
        acquire_timeout,
    };
    Store::connect(&config.database.url, options, secrets)
        .await
        .map_err(|e| match e {
            StoreError::Unavailable { source, .. } => unreachable(&one_line(&source.to_string())),
            other => other.into(),
        })
}

/// `host:port` of a PostgreSQL URL's server, when it names one over TCP
/// (not for SQLite or Unix sockets).
fn server_address(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    // Several hosts (`h1,h2`) are a failover list: leave those to the driver.
    if host_port.is_empty() || host_port.contains(',') {
        return None;
    }
    let has_port = match host_port.rfind(']') {
        Some(end) => host_port[end..].contains(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    })
}

/// Joins a multi-line message into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_of_database_urls() {
        let cases = [
            ("postgresql://x:y@127.0.0.1:1/db", Some("127.0.0.1:1")),
            (
                "postgres://db.internal/sb?sslmode=require",
                Some("db.internal:5432"),
            ),
            ("postgresql://u@[::1]:6543/db", Some("[::1]:6543")),
            ("postgresql://u@[::1]/db", Some("[::1]:5432")),
            ("postgresql:///db?host=/run/postgresql", None),
            ("postgresql://u@h1:5432,h2:5432/db", None),
            ("sqlite://data/switchboard.db", None),
        ];
        for (url, want) in cases {
            assert_eq!(server_address(url).as_deref(), want, "{url}");
        }
    }
}
