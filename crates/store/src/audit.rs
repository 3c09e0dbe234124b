//! The audit log: who changed what, for configuration changes and logins.

use switchboard_model::AuditEntry;
use uuid::Uuid;

use crate::{get_str, get_ts, Result, Store, StoreError};

impl Store {
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (id, at, actor, action, target, detail) VALUES ($1,$2,$3,$4,$5,$6)")
            .bind(Uuid::now_v7().to_string())
            .bind(self.now().as_millis())
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(detail.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// The newest entries first.
    pub async fn audit_entries(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT at, actor, action, target, detail FROM audit_log ORDER BY at DESC, id DESC LIMIT $1")
            .bind(limit.clamp(1, 1000))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                let detail = get_str(r, "detail", "audit_log")?;
                Ok(AuditEntry {
                    at: get_ts(r, "at", "audit_log")?,
                    actor: get_str(r, "actor", "audit_log")?,
                    action: get_str(r, "action", "audit_log")?,
                    target: get_str(r, "target", "audit_log")?,
                    detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt {
                        table: "audit_log",
                        reason: e.to_string(),
                    })?,
                })
            })
            .collect()
    }
}
