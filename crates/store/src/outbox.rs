//! The outbox: jobs written in the same transaction as the change that asks
//! for them, worked by any number of workers on any number of nodes.
//!
//! A worker claims one due job at a time with a lease (`lease_owner`,
//! `lease_expires_at`). On PostgreSQL the claim skips rows other workers have
//! locked (`FOR UPDATE SKIP LOCKED`); SQLite has a single writer, so the
//! claiming `UPDATE … WHERE id = (SELECT …)` is atomic there as it stands. A
//! job whose worker died is claimed again once its lease expires. Every state
//! change checks the lease owner, so a worker that lost its lease cannot
//! overwrite the new owner's result.

use switchboard_model::Timestamp;

use crate::{get_i64, get_opt_i64, get_str, Backend, Result, Store};

/// The job kind that delivers a handoff to Salesforce.
pub const HANDOFF_JOB: &str = "handoff";

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxJob {
    pub id: String,
    pub kind: String,
    /// The record the job is about (a handoff id).
    pub ref_id: String,
    /// Attempts including this one.
    pub attempts: i64,
    /// When the first failed attempt happened, if any (for the dead-letter age).
    pub first_failed_at: Option<Timestamp>,
    pub owner: String,
}

/// Counts of jobs by state (for metrics and Troubleshooting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub running: i64,
    pub parked: i64,
    pub dead: i64,
}

impl Store {
    /// Claims the next due job of `kind` for `owner`, leased for `lease_ms`.
    pub async fn claim_job(
        &self,
        kind: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<OutboxJob>> {
        let now = self.now().as_millis();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET status = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM outbox WHERE kind = $4 AND ((status = 'pending' AND next_attempt_at <= $3) \
             OR (status = 'running' AND lease_expires_at < $3)) ORDER BY next_attempt_at, id LIMIT 1{lock}) \
             RETURNING id, kind, ref_id, attempts, first_failed_at"
        );
        let row = sqlx::query(&sql)
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(kind)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(OutboxJob {
            id: get_str(&row, "id", "outbox")?,
            kind: get_str(&row, "kind", "outbox")?,
            ref_id: get_str(&row, "ref_id", "outbox")?,
            attempts: get_i64(&row, "attempts", "outbox")?,
            first_failed_at: get_opt_i64(&row, "first_failed_at", "outbox")?
                .map(Timestamp::from_millis),
            owner: owner.to_string(),
        }))
    }

    /// Extends the lease; false if `job` is no longer ours.
    pub async fn renew_lease(&self, job: &OutboxJob, lease_ms: i64) -> Result<bool> {
        let now = self.now().as_millis();
        let done = sqlx::query("UPDATE outbox SET lease_expires_at = $3 WHERE id = $1 AND lease_owner = $2 AND status = 'running'")
            .bind(&job.id)
            .bind(&job.owner)
            .bind(now.saturating_add(lease_ms))
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// The job succeeded.
    pub async fn finish_job(&self, job: &OutboxJob) -> Result<bool> {
        self.settle(job, "done", None, None).await
    }

    /// The job failed and should run again at `next_at`.
    pub async fn retry_job(
        &self,
        job: &OutboxJob,
        next_at: Timestamp,
        error: &str,
    ) -> Result<bool> {
        self.settle(job, "pending", Some(next_at), Some(error))
            .await
    }

    /// The job failed for good (dead letter); only a re-drive runs it again.
    pub async fn kill_job(&self, job: &OutboxJob, error: &str) -> Result<bool> {
        self.settle(job, "dead", None, Some(error)).await
    }

    /// The job cannot run until something changes (e.g. settings); parked
    /// jobs wait for a re-drive.
    pub async fn park_job(&self, job: &OutboxJob, error: &str) -> Result<bool> {
        self.settle(job, "parked", None, Some(error)).await
    }

    /// Gives the job back untouched (shutdown): due again at once, and this
    /// attempt does not count.
    pub async fn release_job(&self, job: &OutboxJob) -> Result<bool> {
        let now = self.now().as_millis();
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = $3, \
             attempts = attempts - 1, updated_at = $3 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(&job.id)
        .bind(&job.owner)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn settle(
        &self,
        job: &OutboxJob,
        status: &str,
        next_at: Option<Timestamp>,
        error: Option<&str>,
    ) -> Result<bool> {
        let now = self.now().as_millis();
        let failed_at = error.map(|_| now);
        let done = sqlx::query(
            "UPDATE outbox SET status = $3, lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = COALESCE($4, next_attempt_at), last_error = $5, \
             first_failed_at = CASE WHEN $5 IS NULL THEN NULL ELSE COALESCE(first_failed_at, $6) END, updated_at = $7 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(&job.id)
        .bind(&job.owner)
        .bind(status)
        .bind(next_at.map(|t| t.as_millis()))
        .bind(error)
        .bind(failed_at)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// When the next job of `kind` is due (for a worker deciding how long to sleep).
    pub async fn next_job_due(&self, kind: &str) -> Result<Option<Timestamp>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN status = 'pending' THEN next_attempt_at ELSE lease_expires_at END) AS due \
             FROM outbox WHERE kind = $1 AND status IN ('pending', 'running')",
        )
        .bind(kind)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(get_opt_i64(&row, "due", "outbox")?.map(Timestamp::from_millis))
    }

    pub async fn outbox_counts(&self, kind: &str) -> Result<OutboxCounts> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM outbox WHERE kind = $1 GROUP BY status")
                .bind(kind)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
        let mut c = OutboxCounts::default();
        for r in &rows {
            let n = get_i64(r, "n", "outbox")?;
            match get_str(r, "status", "outbox")?.as_str() {
                "pending" => c.pending = n,
                "running" => c.running = n,
                "parked" => c.parked = n,
                "dead" => c.dead = n,
                _ => {}
            }
        }
        Ok(c)
    }
}
