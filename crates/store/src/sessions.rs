//! Sessions (calls), their turns and their trace steps.

use sqlx::any::AnyRow;
use switchboard_model::{
    AgentId, Direction, NewSession, Outcome, Session, SessionId, SessionStatus, Speaker, Timestamp,
    TraceStep, TraceStepId, Turn, TurnId,
};

use crate::{
    get_i64, get_opt_i64, get_opt_parsed, get_opt_str, get_opt_ts, get_parsed, get_str, get_ts,
    Result, Store, StoreError,
};

const T: &str = "sessions";
const COLS: &str =
    "id, agent_id, direction, from_addr, to_addr, contact_id, status, outcome, end_reason, started_at, answered_at, ended_at";

/// Which sessions to list, newest first.
#[derive(Debug, Clone)]
pub struct SessionFilter {
    pub agent_id: Option<AgentId>,
    pub direction: Option<Direction>,
    pub outcome: Option<Outcome>,
    pub status: Option<SessionStatus>,
    /// Only sessions started before this instant (keyset paging).
    pub before: Option<Timestamp>,
    pub limit: i64,
}

impl Default for SessionFilter {
    fn default() -> Self {
        Self {
            agent_id: None,
            direction: None,
            outcome: None,
            status: None,
            before: None,
            limit: 50,
        }
    }
}

impl Store {
    pub async fn create_session(&self, new: &NewSession) -> Result<Session> {
        let id = SessionId::new();
        sqlx::query(&format!(
            "INSERT INTO sessions ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,NULL,NULL,$8,NULL,NULL)"
        ))
        .bind(id.to_string())
        .bind(new.agent_id.map(|a| a.to_string()))
        .bind(new.direction.as_str())
        .bind(&new.from)
        .bind(&new.to)
        .bind(new.contact_id.map(|c| c.to_string()))
        .bind(SessionStatus::Ringing.as_str())
        .bind(new.started_at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        self.session(id).await
    }

    pub async fn session(&self, id: SessionId) -> Result<Session> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM sessions WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| session_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "session",
                key: id.to_string(),
            })
    }

    pub async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<Session>> {
        // Unused filters compare a NULL parameter, so one statement serves all.
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM sessions WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR direction = $2) \
             AND ($3 IS NULL OR outcome = $3) AND ($4 IS NULL OR status = $4) AND ($5 IS NULL OR started_at < $5) \
             ORDER BY started_at DESC, id DESC LIMIT $6"
        ))
        .bind(filter.agent_id.map(|a| a.to_string()))
        .bind(filter.direction.map(|d| d.as_str()))
        .bind(filter.outcome.map(|o| o.as_str()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.before.map(|t| t.as_millis()))
        .bind(filter.limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter().map(session_from_row).collect()
    }

    pub async fn mark_answered(&self, id: SessionId, at: Timestamp) -> Result<()> {
        self.expect_one(
            sqlx::query("UPDATE sessions SET status = $2, answered_at = $3 WHERE id = $1")
                .bind(id.to_string())
                .bind(SessionStatus::Active.as_str())
                .bind(at.as_millis())
                .execute(&self.pool)
                .await,
            id,
        )
    }

    pub async fn end_session(
        &self,
        id: SessionId,
        at: Timestamp,
        outcome: Outcome,
        reason: &str,
    ) -> Result<()> {
        self.expect_one(
            sqlx::query("UPDATE sessions SET status = $2, ended_at = $3, outcome = $4, end_reason = $5 WHERE id = $1")
                .bind(id.to_string())
                .bind(SessionStatus::Ended.as_str())
                .bind(at.as_millis())
                .bind(outcome.as_str())
                .bind(reason)
                .execute(&self.pool)
                .await,
            id,
        )
    }

    /// Appends a turn at the next position of the session.
    pub async fn append_turn(
        &self,
        session: SessionId,
        speaker: Speaker,
        text: &str,
        started_at: Timestamp,
        ended_at: Timestamp,
    ) -> Result<Turn> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(seq), -1) + 1 AS next FROM turns WHERE session_id = $1",
        )
        .bind(session.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.db_err(e))?;
        let seq = get_i64(&row, "next", "turns")?;
        let turn = Turn {
            id: TurnId::new(),
            session_id: session,
            seq,
            speaker,
            text: text.to_string(),
            started_at,
            ended_at,
        };
        sqlx::query("INSERT INTO turns (id, session_id, seq, speaker, text, started_at, ended_at) VALUES ($1,$2,$3,$4,$5,$6,$7)")
            .bind(turn.id.to_string())
            .bind(session.to_string())
            .bind(seq)
            .bind(speaker.as_str())
            .bind(text)
            .bind(started_at.as_millis())
            .bind(ended_at.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(turn)
    }

    pub async fn turns(&self, session: SessionId) -> Result<Vec<Turn>> {
        let rows = sqlx::query(
            "SELECT id, session_id, seq, speaker, text, started_at, ended_at FROM turns WHERE session_id = $1 ORDER BY seq",
        )
        .bind(session.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                Ok(Turn {
                    id: get_parsed(r, "id", "turns")?,
                    session_id: get_parsed(r, "session_id", "turns")?,
                    seq: get_i64(r, "seq", "turns")?,
                    speaker: get_parsed::<Speaker>(r, "speaker", "turns")?,
                    text: get_str(r, "text", "turns")?,
                    started_at: get_ts(r, "started_at", "turns")?,
                    ended_at: get_ts(r, "ended_at", "turns")?,
                })
            })
            .collect()
    }

    pub async fn add_trace_step(
        &self,
        session: SessionId,
        turn_seq: Option<i64>,
        kind: &str,
        payload: &serde_json::Value,
        latency_ms: Option<i64>,
    ) -> Result<TraceStep> {
        let step = TraceStep {
            id: TraceStepId::new(),
            session_id: session,
            turn_seq,
            kind: kind.to_string(),
            payload: payload.clone(),
            latency_ms,
            created_at: self.now(),
        };
        sqlx::query(
            "INSERT INTO trace_steps (id, session_id, turn_seq, kind, payload, latency_ms, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(step.id.to_string())
        .bind(session.to_string())
        .bind(turn_seq)
        .bind(kind)
        .bind(payload.to_string())
        .bind(latency_ms)
        .bind(step.created_at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(step)
    }

    pub async fn trace_steps(&self, session: SessionId) -> Result<Vec<TraceStep>> {
        let rows = sqlx::query(
            "SELECT id, session_id, turn_seq, kind, payload, latency_ms, created_at FROM trace_steps \
             WHERE session_id = $1 ORDER BY created_at, id",
        )
        .bind(session.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                let payload = get_str(r, "payload", "trace_steps")?;
                Ok(TraceStep {
                    id: get_parsed(r, "id", "trace_steps")?,
                    session_id: get_parsed(r, "session_id", "trace_steps")?,
                    turn_seq: get_opt_i64(r, "turn_seq", "trace_steps")?,
                    kind: get_str(r, "kind", "trace_steps")?,
                    payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                        table: "trace_steps",
                        reason: format!("payload: {e}"),
                    })?,
                    latency_ms: get_opt_i64(r, "latency_ms", "trace_steps")?,
                    created_at: get_ts(r, "created_at", "trace_steps")?,
                })
            })
            .collect()
    }

    fn expect_one(
        &self,
        done: std::result::Result<sqlx::any::AnyQueryResult, sqlx::Error>,
        id: SessionId,
    ) -> Result<()> {
        let done = done.map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "session",
                key: id.to_string(),
            });
        }
        Ok(())
    }
}

fn session_from_row(row: &AnyRow) -> Result<Session> {
    Ok(Session {
        id: get_parsed(row, "id", T)?,
        agent_id: get_opt_parsed(row, "agent_id", T)?,
        direction: get_parsed(row, "direction", T)?,
        from: get_str(row, "from_addr", T)?,
        to: get_str(row, "to_addr", T)?,
        contact_id: get_opt_parsed(row, "contact_id", T)?,
        status: get_parsed(row, "status", T)?,
        outcome: get_opt_parsed(row, "outcome", T)?,
        end_reason: get_opt_str(row, "end_reason", T)?,
        started_at: get_ts(row, "started_at", T)?,
        answered_at: get_opt_ts(row, "answered_at", T)?,
        ended_at: get_opt_ts(row, "ended_at", T)?,
    })
}
