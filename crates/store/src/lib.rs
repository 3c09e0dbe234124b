//! Persistence for Switchboard.
//!
//! One [`Store`] over an sqlx `AnyPool` speaks to SQLite (the embedded default,
//! a file in the data directory) or PostgreSQL (the scale-out path, chosen by a
//! `postgres://` URL). Both run the same queries: ids are UUID text, times are
//! integer milliseconds (UTC), booleans are integers, JSON is text, and
//! parameters are written `$1`, which both drivers accept. Each backend has its
//! own migration directory with the same schema.
//!
//! The store holds no business rules: it stores validated specs from
//! `switchboard-model`, enforces uniqueness, and reports conflicts in words a
//! user can act on. Secrets (trunk passwords, later the Salesforce key) are
//! encrypted at rest with a [`SecretBox`].
//!
//! Layout: this file (connect, migrate, errors, row helpers), then one module
//! per table family: [`agents`], [`numbers`], [`trunks`], [`contacts`],
//! [`sessions`], [`auth`] (users, dashboard logins, API tokens), [`audit`],
//! [`settings`]; [`secrets`] is the at-rest encryption.

use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use switchboard_model::{Clock, SystemClock, Timestamp};

pub mod agents;
pub mod audit;
pub mod auth;
pub mod contacts;
pub mod handoffs;
pub mod numbers;
pub mod outbox;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod testing;
pub mod trunks;

pub use auth::{LoginSession, NewApiToken};
pub use handoffs::HandoffFilter;
pub use outbox::{OutboxCounts, OutboxJob, HANDOFF_JOB};
pub use secrets::SecretBox;
pub use sessions::SessionFilter;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database url `{url}` is not supported: use sqlite://PATH or postgresql://USER:PASS@HOST:PORT/DB")]
    UnsupportedUrl { url: String },
    #[error("database unreachable ({backend}): {source}")]
    Unavailable {
        backend: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{entity} not found: {key}")]
    NotFound { entity: &'static str, key: String },
    #[error("{field}: {message}")]
    Conflict {
        field: &'static str,
        message: String,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("stored {table} row is unreadable: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
}

impl StoreError {
    /// True when the database could not be reached; the API answers 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable()
    }

    fn corrupt(table: &'static str, reason: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            table,
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long to wait for a connection before answering "unavailable".
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The database handle. Cheap to clone (a pool inside).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite only: a connection kept out of the pool for the call path's
    /// single-row statements (see [`Store::execute_write`] and
    /// [`Store::fetch_optional_fast`]).
    writer: Option<Arc<tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<sqlx::Any>>>>>,
    backend: Backend,
    secrets: SecretBox,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

static DRIVERS: Once = Once::new();

/// Gives up the writer connection when the connection itself failed (not a
/// statement error): later statements go through the pool, which replaces
/// broken connections.
fn drop_if_broken<T>(
    slot: &mut Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    done: &std::result::Result<T, sqlx::Error>,
) {
    if let Err(sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed) = done {
        tracing::warn!("sqlite writer connection failed; using the pool");
        slot.take();
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` — created if missing — or
    /// `postgres[ql]://…`). Does not migrate; call [`Store::migrate`].
    pub async fn connect(url: &str, options: StoreOptions, secrets: SecretBox) -> Result<Store> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut u = format!("sqlite:{rest}");
            if !rest.contains("mode=") && !rest.contains(":memory:") {
                u.push_str(if rest.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
            (Backend::Sqlite, u)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            });
        };
        let mut pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        if backend == Backend::Sqlite {
            // An SQLite connection is a file handle in this process; it
            // cannot go stale like a socket. sqlx's default ping before
            // every acquire was a round trip to the connection's worker
            // thread per query, a fifth of the store's CPU on a call setup.
            pool = pool.test_before_acquire(false);
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets the dashboard read while calls write; the busy
                    // timeout turns writer contention into a short wait.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        }
        let pool = pool
            .connect(&url)
            .await
            .map_err(|source| StoreError::Unavailable {
                backend: backend.name(),
                source,
            })?;
        // SQLite has one writer at a time anyway; a connection of its own
        // for the call path's writes skips the pool's acquire and the ping
        // sqlx sends on every release (a round trip to the connection's
        // worker thread). Only when the pool has connections to spare.
        let writer = if backend == Backend::Sqlite && options.max_connections >= 2 {
            let conn = pool
                .acquire()
                .await
                .map_err(|source| StoreError::Unavailable {
                    backend: backend.name(),
                    source,
                })?;
            Some(Arc::new(tokio::sync::Mutex::new(Some(conn))))
        } else {
            None
        };
        Ok(Store {
            pool,
            writer,
            backend,
            secrets,
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock used for `created_at`/`updated_at` (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Brings the schema up to date. Safe to run at every start and from
    /// several nodes (the migrator takes a lock).
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Checks that the database answers (`/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            // The pool waits for every connection to come back.
            writer.lock().await.take();
        }
        self.pool.close().await;
    }

    /// Runs one autocommit write statement: on SQLite through the writer
    /// connection, elsewhere (or once that connection broke) on the pool.
    async fn execute_write<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> std::result::Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        if let Some(writer) = &self.writer {
            let mut slot = writer.lock().await;
            if let Some(conn) = slot.as_mut() {
                let done = query.execute(&mut **conn).await;
                drop_if_broken(&mut slot, &done);
                return done;
            }
        }
        query.execute(&self.pool).await
    }

    /// A one-row read on the call path (the caller's contact), on the same
    /// connection as [`Store::execute_write`] for the same reason.
    async fn fetch_optional_fast<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> std::result::Result<Option<AnyRow>, sqlx::Error> {
        if let Some(writer) = &self.writer {
            let mut slot = writer.lock().await;
            if let Some(conn) = slot.as_mut() {
                let row = query.fetch_optional(&mut **conn).await;
                drop_if_broken(&mut slot, &row);
                return row;
            }
        }
        query.fetch_optional(&self.pool).await
    }

    /// A transaction that will write. On SQLite it takes the write lock up
    /// front (`BEGIN IMMEDIATE`): a deferred transaction that reads first and
    /// writes later fails with "database is locked" when another connection
    /// wrote in between, and the busy timeout cannot save it.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        tx.map_err(|e| self.db_err(e))
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Classifies an sqlx error: connection trouble is "unavailable" (503),
    /// anything else a database error.
    fn db_err(&self, e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable {
                backend: self.backend.name(),
                source: e,
            },
            other => StoreError::Database(other),
        }
    }

    /// Maps a unique-constraint violation to a [`StoreError::Conflict`] on `field`.
    fn unique_err(
        &self,
        e: sqlx::Error,
        field: &'static str,
        message: impl FnOnce() -> String,
    ) -> StoreError {
        let unique = matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation());
        if unique {
            StoreError::Conflict {
                field,
                message: message(),
            }
        } else {
            self.db_err(e)
        }
    }
}

/// Hides the password in a database URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Row helpers shared by the table modules.

fn get_str(row: &AnyRow, col: &str, table: &'static str) -> Result<String> {
    row.try_get::<String, _>(col)
        .map_err(|e| StoreError::corrupt(table, format!("{col}: {e}")))
}

fn get_opt_str(row: &AnyRow, col: &str, table: &'static str) -> Result<Option<String>> {
    row.try_get::<Option<String>, _>(col)
        .map_err(|e| StoreError::corrupt(table, format!("{col}: {e}")))
}

fn get_i64(row: &AnyRow, col: &str, table: &'static str) -> Result<i64> {
    row.try_get::<i64, _>(col)
        .map_err(|e| StoreError::corrupt(table, format!("{col}: {e}")))
}

fn get_opt_i64(row: &AnyRow, col: &str, table: &'static str) -> Result<Option<i64>> {
    row.try_get::<Option<i64>, _>(col)
        .map_err(|e| StoreError::corrupt(table, format!("{col}: {e}")))
}

fn get_ts(row: &AnyRow, col: &str, table: &'static str) -> Result<Timestamp> {
    get_i64(row, col, table).map(Timestamp::from_millis)
}

fn get_opt_ts(row: &AnyRow, col: &str, table: &'static str) -> Result<Option<Timestamp>> {
    Ok(get_opt_i64(row, col, table)?.map(Timestamp::from_millis))
}

/// Parses a stored value with its `FromStr`, reporting a corrupt row otherwise.
fn get_parsed<T>(row: &AnyRow, col: &str, table: &'static str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = get_str(row, col, table)?;
    s.parse::<T>()
        .map_err(|e| StoreError::corrupt(table, format!("{col}: {e}")))
}

fn get_opt_parsed<T>(row: &AnyRow, col: &str, table: &'static str) -> Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match get_opt_str(row, col, table)? {
        None => Ok(None),
        Some(s) => s
            .parse::<T>()
            .map(Some)
            .map_err(|e| StoreError::corrupt(table, format!("{col}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgresql://sb:hunter2@db:5432/sb"),
            "postgresql://sb:***@db:5432/sb"
        );
        assert_eq!(redact_url("sqlite://data/sb.db"), "sqlite://data/sb.db");
    }
}
