//! Handoffs and their delivery state.
//!
//! [`Store::create_handoff`] writes the handoff, its outbox job and the
//! session's new outcome in one transaction: a handoff is never recorded
//! without the job that delivers it, nor the other way round. Progress writes
//! made by a worker also renew its lease and tell it when the lease was lost.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use switchboard_model::{
    Handoff, HandoffAttempt, HandoffId, HandoffMode, HandoffSpec, HandoffStatus, Outcome,
    SessionId, SessionStatus, Timestamp,
};
use uuid::Uuid;

use crate::outbox::{OutboxJob, HANDOFF_JOB};
use crate::{
    get_i64, get_opt_i64, get_opt_parsed, get_opt_str, get_opt_ts, get_parsed, get_str, get_ts,
    Result, Store, StoreError,
};

const T: &str = "handoffs";
const COLS: &str = "id, session_id, mode, reason, summary, preferred_channel, channel_details, status, turn_count, \
    conversation_id, conversation_created, messages_acked, messages_total, identity, routing_attributes, attempts, \
    last_error, routed_at, estimated_wait_seconds, rep_name, rep_joined_at, closed_at, created_at, updated_at, delivered_at";

/// Which handoffs to list, newest first.
#[derive(Debug, Clone)]
pub struct HandoffFilter {
    pub status: Option<HandoffStatus>,
    pub limit: i64,
}

impl Default for HandoffFilter {
    fn default() -> Self {
        Self {
            status: None,
            limit: 50,
        }
    }
}

impl Store {
    /// Records a handoff for `session` with its delivery job, and sets the
    /// session's outcome — all in one transaction. With `end_at`, the session
    /// also ends (a logged escalation hangs up). A second handoff for the same
    /// session is a conflict.
    pub async fn create_handoff(
        &self,
        session: SessionId,
        spec: &HandoffSpec,
        end_at: Option<Timestamp>,
    ) -> Result<Handoff> {
        let now = self.now();
        let id = HandoffId::new();
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT status FROM sessions WHERE id = $1")
            .bind(session.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                entity: "session",
                key: session.to_string(),
            });
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM turns WHERE session_id = $1")
            .bind(session.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        let turn_count = get_i64(&row, "n", "turns")?;
        sqlx::query(
            "INSERT INTO handoffs (id, session_id, mode, reason, summary, preferred_channel, channel_details, status, \
             turn_count, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10)",
        )
        .bind(id.to_string())
        .bind(session.to_string())
        .bind(spec.mode.as_str())
        .bind(&spec.reason)
        .bind(&spec.summary)
        .bind(spec.preferred_channel.map(|c| c.as_str()))
        .bind(spec.channel_details.clone())
        .bind(HandoffStatus::Pending.as_str())
        .bind(turn_count)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.unique_err(e, "session", || format!("session {session} was already handed off")))?;
        sqlx::query(
            "INSERT INTO outbox (id, kind, ref_id, status, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(HANDOFF_JOB)
        .bind(id.to_string())
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db_err(e))?;
        let outcome = match spec.mode {
            HandoffMode::LiveTransfer => Outcome::LiveTransfer,
            HandoffMode::LoggedEscalation => Outcome::LoggedEscalation,
        };
        match end_at {
            Some(at) => sqlx::query("UPDATE sessions SET outcome = $2, status = $3, ended_at = COALESCE(ended_at, $4), end_reason = COALESCE(end_reason, $5) WHERE id = $1")
                .bind(session.to_string())
                .bind(outcome.as_str())
                .bind(SessionStatus::Ended.as_str())
                .bind(at.as_millis())
                .bind("handed off")
                .execute(&mut *tx)
                .await,
            None => sqlx::query("UPDATE sessions SET outcome = $2 WHERE id = $1")
                .bind(session.to_string())
                .bind(outcome.as_str())
                .execute(&mut *tx)
                .await,
        }
        .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        self.handoff(id).await
    }

    pub async fn handoff(&self, id: HandoffId) -> Result<Handoff> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM handoffs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| handoff_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "handoff",
                key: id.to_string(),
            })
    }

    /// The session's handoff, if the call was handed to a human.
    pub async fn handoff_for_session(&self, session: SessionId) -> Result<Option<Handoff>> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM handoffs WHERE session_id = $1"
        ))
        .bind(session.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        row.map(|r| handoff_from_row(&r)).transpose()
    }

    pub async fn list_handoffs(&self, filter: &HandoffFilter) -> Result<Vec<Handoff>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM handoffs WHERE ($1 IS NULL OR status = $1) ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter().map(handoff_from_row).collect()
    }

    /// Sets the delivery status shown to users (and the error, if any).
    pub async fn set_handoff_status(
        &self,
        id: HandoffId,
        status: HandoffStatus,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE handoffs SET status = $2, last_error = COALESCE($3, last_error), updated_at = $4 WHERE id = $1")
            .bind(id.to_string())
            .bind(status.as_str())
            .bind(error)
            .bind(self.now().as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Records the start of a delivery attempt and what it will send. The
    /// values are the same at every attempt (ids and attributes derive from
    /// the session), so writing them again is harmless.
    pub async fn plan_handoff(
        &self,
        id: HandoffId,
        conversation_id: Uuid,
        identity: &str,
        routing_attributes: &BTreeMap<String, String>,
        messages_total: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE handoffs SET conversation_id = $2, identity = $3, routing_attributes = $4, messages_total = $5, \
             attempts = attempts + 1, status = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(conversation_id.to_string())
        .bind(identity)
        .bind(serde_json::to_string(routing_attributes).unwrap_or_else(|_| "{}".into()))
        .bind(messages_total)
        .bind(HandoffStatus::Delivering.as_str())
        .bind(self.now().as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Records that the conversation exists at Salesforce, if `job` is
    /// still ours. Returns false when the lease was lost.
    pub async fn mark_conversation_created(&self, job: &OutboxJob, id: HandoffId) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE handoffs SET conversation_created = 1, updated_at = $2 WHERE id = $1 AND {}",
            still_ours_guard(3)
        ))
        .bind(id.to_string())
        .bind(self.now().as_millis())
        .bind(&job.id)
        .bind(&job.owner)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(done.rows_affected() == 1 || self.still_ours(job).await?)
    }

    /// Records that the first `acked` messages are acknowledged — one
    /// statement that also checks `job` is still ours. Returns false when the
    /// lease was lost. (The lease itself is renewed by the worker, a few
    /// times per lease period, not on every message.)
    pub async fn ack_handoff_messages(
        &self,
        job: &OutboxJob,
        id: HandoffId,
        acked: i64,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE handoffs SET messages_acked = $2, updated_at = $3 WHERE id = $1 AND messages_acked < $2 AND {}",
            still_ours_guard(4)
        ))
        .bind(id.to_string())
        .bind(acked)
        .bind(self.now().as_millis())
        .bind(&job.id)
        .bind(&job.owner)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        // No row changed: either the count was already there, or the job is
        // not ours any more; only the second is a lost lease.
        Ok(done.rows_affected() == 1 || self.still_ours(job).await?)
    }

    async fn still_ours(&self, job: &OutboxJob) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE id = $1 AND lease_owner = $2 AND status = 'running'")
            .bind(&job.id)
            .bind(&job.owner)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(get_i64(&row, "n", "outbox")? == 1)
    }

    /// Settles a delivered handoff in one transaction: the job is done, the
    /// handoff delivered, the attempt recorded. Returns false (and changes
    /// nothing) when `job` is no longer ours.
    pub async fn complete_handoff(
        &self,
        job: &OutboxJob,
        id: HandoffId,
        attempt: &HandoffAttempt,
    ) -> Result<bool> {
        let now = self.now().as_millis();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE outbox SET status = 'done', lease_owner = NULL, lease_expires_at = NULL, last_error = NULL, \
             first_failed_at = NULL, updated_at = $3 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(&job.id)
        .bind(&job.owner)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db_err(e))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE handoffs SET status = $2, delivered_at = COALESCE(delivered_at, $3), last_error = NULL, updated_at = $3 WHERE id = $1")
            .bind(id.to_string())
            .bind(HandoffStatus::Delivered.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        insert_attempt(&mut tx, id, attempt)
            .await
            .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(true)
    }

    pub async fn record_handoff_attempt(
        &self,
        id: HandoffId,
        attempt: &HandoffAttempt,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.db_err(e))?;
        insert_attempt(&mut conn, id, attempt)
            .await
            .map_err(|e| self.db_err(e))
    }

    pub async fn handoff_attempts(&self, id: HandoffId) -> Result<Vec<HandoffAttempt>> {
        let rows = sqlx::query(
            "SELECT started_at, finished_at, outcome, messages_sent, error FROM handoff_attempts WHERE handoff_id = $1 ORDER BY started_at, id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                Ok(HandoffAttempt {
                    started_at: get_ts(r, "started_at", "handoff_attempts")?,
                    finished_at: get_ts(r, "finished_at", "handoff_attempts")?,
                    outcome: get_str(r, "outcome", "handoff_attempts")?,
                    messages_sent: get_i64(r, "messages_sent", "handoff_attempts")?,
                    error: get_opt_str(r, "error", "handoff_attempts")?,
                })
            })
            .collect()
    }

    /// Records routing news from Salesforce's event stream.
    pub async fn record_handoff_routing(
        &self,
        id: HandoffId,
        routed_at: Option<Timestamp>,
        estimated_wait_seconds: Option<i64>,
        rep: Option<(&str, Timestamp)>,
        closed_at: Option<Timestamp>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE handoffs SET routed_at = COALESCE(routed_at, $2), estimated_wait_seconds = COALESCE($3, estimated_wait_seconds), \
             rep_name = COALESCE($4, rep_name), rep_joined_at = COALESCE(rep_joined_at, $5), closed_at = COALESCE(closed_at, $6), \
             updated_at = $7 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(routed_at.map(|t| t.as_millis()))
        .bind(estimated_wait_seconds)
        .bind(rep.map(|(n, _)| n.to_string()))
        .bind(rep.map(|(_, t)| t.as_millis()))
        .bind(closed_at.map(|t| t.as_millis()))
        .bind(self.now().as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Puts a handoff back in the queue now, whatever state it is in
    /// (dead-lettered, waiting for configuration, or delivered — a delivered
    /// handoff re-sends nothing that was acknowledged).
    pub async fn redrive_handoff(&self, id: HandoffId) -> Result<Handoff> {
        let now = self.now().as_millis();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $3, first_failed_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $3 WHERE kind = $1 AND ref_id = $2 AND status <> 'running'",
        )
        .bind(HANDOFF_JOB)
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            let row = sqlx::query("SELECT status FROM outbox WHERE kind = $1 AND ref_id = $2")
                .bind(HANDOFF_JOB)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            return match row {
                None => Err(StoreError::NotFound {
                    entity: "handoff",
                    key: id.to_string(),
                }),
                Some(_) => Err(StoreError::Conflict {
                    field: "handoff",
                    message:
                        "this handoff is being delivered right now; wait for the attempt to finish"
                            .into(),
                }),
            };
        }
        sqlx::query("UPDATE handoffs SET status = $2, updated_at = $3 WHERE id = $1 AND status <> 'delivered'")
            .bind(id.to_string())
            .bind(HandoffStatus::Pending.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        self.handoff(id).await
    }

    /// Re-drives every handoff that waits for Salesforce settings (called when
    /// the settings are saved). Returns how many were queued again.
    pub async fn redrive_not_configured(&self) -> Result<u64> {
        let rows = sqlx::query("SELECT id FROM handoffs WHERE status = $1")
            .bind(HandoffStatus::NotConfigured.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        let mut n = 0;
        for r in &rows {
            let id: HandoffId = get_parsed(r, "id", T)?;
            match self.redrive_handoff(id).await {
                Ok(_) => n += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// Guard: the outbox job (parameter `$n`) is still leased by its owner (`$n+1`).
fn still_ours_guard(n: usize) -> String {
    format!("EXISTS (SELECT 1 FROM outbox WHERE id = ${n} AND lease_owner = ${} AND status = 'running')", n + 1)
}

async fn insert_attempt(
    conn: &mut sqlx::AnyConnection,
    id: HandoffId,
    attempt: &HandoffAttempt,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO handoff_attempts (id, handoff_id, started_at, finished_at, outcome, messages_sent, error) \
         VALUES ($1,$2,$3,$4,$5,$6,$7)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(id.to_string())
    .bind(attempt.started_at.as_millis())
    .bind(attempt.finished_at.as_millis())
    .bind(&attempt.outcome)
    .bind(attempt.messages_sent)
    .bind(attempt.error.clone())
    .execute(conn)
    .await?;
    Ok(())
}

fn handoff_from_row(row: &AnyRow) -> Result<Handoff> {
    let attrs = match get_opt_str(row, "routing_attributes", T)? {
        None => None,
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
            table: T,
            reason: format!("routing_attributes: {e}"),
        })?),
    };
    Ok(Handoff {
        id: get_parsed(row, "id", T)?,
        session_id: get_parsed(row, "session_id", T)?,
        mode: get_parsed(row, "mode", T)?,
        reason: get_str(row, "reason", T)?,
        summary: get_str(row, "summary", T)?,
        preferred_channel: get_opt_parsed(row, "preferred_channel", T)?,
        channel_details: get_opt_str(row, "channel_details", T)?,
        status: get_parsed(row, "status", T)?,
        turn_count: get_i64(row, "turn_count", T)?,
        conversation_id: get_opt_str(row, "conversation_id", T)?,
        conversation_created: get_i64(row, "conversation_created", T)? != 0,
        messages_acked: get_i64(row, "messages_acked", T)?,
        messages_total: get_opt_i64(row, "messages_total", T)?,
        identity: get_opt_str(row, "identity", T)?,
        routing_attributes: attrs,
        attempts: get_i64(row, "attempts", T)?,
        last_error: get_opt_str(row, "last_error", T)?,
        routed_at: get_opt_ts(row, "routed_at", T)?,
        estimated_wait_seconds: get_opt_i64(row, "estimated_wait_seconds", T)?,
        rep_name: get_opt_str(row, "rep_name", T)?,
        rep_joined_at: get_opt_ts(row, "rep_joined_at", T)?,
        closed_at: get_opt_ts(row, "closed_at", T)?,
        created_at: get_ts(row, "created_at", T)?,
        updated_at: get_ts(row, "updated_at", T)?,
        delivered_at: get_opt_ts(row, "delivered_at", T)?,
    })
}

impl Store {
    /// Keeps the access token a handoff posts with, sealed.
    pub async fn save_handoff_token(&self, id: HandoffId, token: &str) -> Result<()> {
        sqlx::query("UPDATE handoffs SET access_token_enc = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(self.secrets.seal(token))
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// The access token saved for a handoff, opened.
    pub async fn handoff_token(&self, id: HandoffId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT access_token_enc FROM handoffs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        match row
            .map(|r| get_opt_str(&r, "access_token_enc", T))
            .transpose()?
            .flatten()
        {
            Some(sealed) => Ok(Some(self.secrets.open(&sealed)?)),
            None => Ok(None),
        }
    }
}
