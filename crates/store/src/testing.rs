//! Test support: a fresh, migrated store on SQLite (a temp file) and, when
//! `SWITCHBOARD_TEST_DATABASE_URL` points at a PostgreSQL server (as
//! `make test` arranges with `scripts/with-postgres.sh`), a fresh database on
//! it for each call, so tests run in parallel without seeing each other.

use std::path::Path;

use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

use crate::{Result, SecretBox, Store, StoreError, StoreOptions};

/// The environment variable naming the test PostgreSQL server.
pub const POSTGRES_URL_VAR: &str = "SWITCHBOARD_TEST_DATABASE_URL";

/// A migrated SQLite store in `dir`.
pub async fn sqlite_store(dir: &Path) -> Result<Store> {
    let url = format!("sqlite://{}", dir.join("test.db").display());
    let store = Store::connect(&url, StoreOptions::default(), SecretBox::ephemeral()).await?;
    store.migrate().await?;
    Ok(store)
}

/// A fresh database URL on the test PostgreSQL server, if one is configured.
pub async fn fresh_postgres_url() -> Result<Option<String>> {
    let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
        return Ok(None);
    };
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .map_err(|source| StoreError::Unavailable {
            backend: "postgresql",
            source,
        })?;
    let name = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .map_err(StoreError::Database)?;
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap_or((base.as_str(), ""));
    Ok(Some(format!("{prefix}/{name}")))
}

/// A migrated store on a fresh PostgreSQL database, if one is configured.
pub async fn postgres_store() -> Result<Option<Store>> {
    let Some(url) = fresh_postgres_url().await? else {
        return Ok(None);
    };
    let store = Store::connect(&url, StoreOptions::default(), SecretBox::ephemeral()).await?;
    store.migrate().await?;
    Ok(Some(store))
}

/// Every backend available to this test run: SQLite always, PostgreSQL when
/// configured. Prints a note when PostgreSQL is skipped.
pub async fn all_stores(dir: &Path) -> Result<Vec<Store>> {
    let mut stores = vec![sqlite_store(dir).await?];
    match postgres_store().await? {
        Some(pg) => stores.push(pg),
        None => eprintln!(
            "note: {POSTGRES_URL_VAR} is not set; PostgreSQL tests skipped (make test sets it)"
        ),
    }
    Ok(stores)
}
