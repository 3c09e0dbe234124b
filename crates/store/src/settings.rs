//! Runtime settings that users edit in the dashboard (JSON values by key).

use crate::{get_str, Result, Store, StoreError};

impl Store {
    pub async fn setting(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        match row {
            None => Ok(None),
            Some(r) => serde_json::from_str(&get_str(&r, "value", "settings")?)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    table: "settings",
                    reason: format!("{key}: {e}"),
                }),
        }
    }

    pub async fn put_setting(&self, key: &str, value: &serde_json::Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value.to_string())
        .bind(self.now().as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }
}
