//! Sessions (calls), their turns and their trace steps.

use sqlx::any::AnyRow;
use std::collections::HashMap;

use switchboard_model::{
    AgentId, Direction, HandoffStatus, NewSession, Outcome, Session, SessionId, SessionStatus,
    Speaker, Timestamp, TraceStep, TraceStepId, Turn, TurnId,
};

use crate::{
    get_i64, get_opt_i64, get_opt_parsed, get_opt_str, get_opt_ts, get_parsed, get_str, get_ts,
    Result, Store, StoreError,
};

const T: &str = "sessions";
const COLS: &str =
    "id, agent_id, direction, from_addr, to_addr, contact_id, status, outcome, end_reason, started_at, answered_at, ended_at, recording";

/// Which sessions to list, newest first.
#[derive(Debug, Clone)]
pub struct SessionFilter {
    pub agent_id: Option<AgentId>,
    pub direction: Option<Direction>,
    pub outcome: Option<Outcome>,
    pub status: Option<SessionStatus>,
    /// Only sessions whose handoff is in this delivery state.
    pub handoff_status: Option<HandoffStatus>,
    /// Only sessions started at or after this instant.
    pub from: Option<Timestamp>,
    /// Only sessions started before this instant (the end of a date range).
    pub to: Option<Timestamp>,
    /// Only sessions with a turn containing this text (case-insensitive for
    /// ASCII letters on both backends; `%` and `_` match themselves).
    pub text: Option<String>,
    /// Keyset paging: only sessions listed after (`before`, `before_id`),
    /// that is started before `before`, or at the same instant with a
    /// smaller id. Without `before_id`, only sessions started before it.
    pub before: Option<Timestamp>,
    pub before_id: Option<SessionId>,
    pub limit: i64,
}

impl Default for SessionFilter {
    fn default() -> Self {
        Self {
            agent_id: None,
            direction: None,
            outcome: None,
            status: None,
            handoff_status: None,
            from: None,
            to: None,
            text: None,
            before: None,
            before_id: None,
            limit: 50,
        }
    }
}

impl Store {
    pub async fn create_session(&self, new: &NewSession) -> Result<Session> {
        let id = SessionId::new();
        self.execute_write(sqlx::query(&format!(
            "INSERT INTO sessions ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,NULL,NULL,$8,NULL,NULL,NULL)"
        ))
        .bind(id.to_string())
        .bind(new.agent_id.map(|a| a.to_string()))
        .bind(new.direction.as_str())
        .bind(&new.from)
        .bind(&new.to)
        .bind(new.contact_id.map(|c| c.to_string()))
        .bind(SessionStatus::Ringing.as_str())
        .bind(new.started_at.as_millis()))
        .await
        .map_err(|e| self.db_err(e))?;
        // The row is exactly what was bound above: no need to read it back
        // (one store round trip less on every call setup).
        Ok(Session {
            id,
            agent_id: new.agent_id,
            direction: new.direction,
            from: new.from.clone(),
            to: new.to.clone(),
            contact_id: new.contact_id,
            status: SessionStatus::Ringing,
            outcome: None,
            end_reason: None,
            started_at: new.started_at,
            answered_at: None,
            ended_at: None,
            recording: None,
        })
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
        let text = filter
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| format!("%{}%", escape_like(t)));
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM sessions WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR direction = $2) \
             AND ($3 IS NULL OR outcome = $3) AND ($4 IS NULL OR status = $4) AND ($5 IS NULL OR started_at < $5 OR (started_at = $5 AND id < $11)) \
             AND ($6 IS NULL OR started_at >= $6) AND ($7 IS NULL OR started_at < $7) \
             AND ($8 IS NULL OR EXISTS (SELECT 1 FROM handoffs h WHERE h.session_id = sessions.id AND h.status = $8)) \
             AND ($9 IS NULL OR EXISTS (SELECT 1 FROM turns t WHERE t.session_id = sessions.id AND LOWER(t.text) LIKE LOWER($9) ESCAPE '\\')) \
             ORDER BY started_at DESC, id DESC LIMIT $10"
        ))
        .bind(filter.agent_id.map(|a| a.to_string()))
        .bind(filter.direction.map(|d| d.as_str()))
        .bind(filter.outcome.map(|o| o.as_str()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.before.map(|t| t.as_millis()))
        .bind(filter.from.map(|t| t.as_millis()))
        .bind(filter.to.map(|t| t.as_millis()))
        .bind(filter.handoff_status.map(|s| s.as_str()))
        .bind(text)
        .bind(filter.limit.clamp(1, 500))
        .bind(filter.before_id.map(|i| i.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter().map(session_from_row).collect()
    }

    /// The delivery state of each listed session's handoff (sessions without
    /// one are absent from the map).
    pub async fn handoff_statuses(
        &self,
        sessions: &[SessionId],
    ) -> Result<HashMap<SessionId, HandoffStatus>> {
        let mut out = HashMap::new();
        // Bounded chunks keep the statement within every backend's limit on parameters.
        for chunk in sessions.chunks(200) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT session_id, status FROM handoffs WHERE session_id IN ({})",
                marks.join(",")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            let rows = q.fetch_all(&self.pool).await.map_err(|e| self.db_err(e))?;
            for r in &rows {
                out.insert(
                    get_parsed(r, "session_id", "handoffs")?,
                    get_parsed(r, "status", "handoffs")?,
                );
            }
        }
        Ok(out)
    }

    /// Calls in progress per agent: sessions not ended that started after
    /// `since` (a session whose process died mid-call never ends, so the
    /// caller passes the longest call it allows ago).
    pub async fn live_calls_by_agent(&self, since: Timestamp) -> Result<HashMap<AgentId, i64>> {
        let rows = sqlx::query(
            "SELECT agent_id, COUNT(*) AS n FROM sessions \
             WHERE status <> $1 AND agent_id IS NOT NULL AND started_at >= $2 \
             GROUP BY agent_id",
        )
        .bind(SessionStatus::Ended.as_str())
        .bind(since.as_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            out.insert(get_parsed(r, "agent_id", T)?, get_i64(r, "n", T)?);
        }
        Ok(out)
    }

    /// A value that changes whenever a session starts, is answered or ends,
    /// or a handoff changes: the Inbox polls it to know when to refresh.
    pub async fn inbox_version(&self) -> Result<String> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM sessions) AS n, \
             (SELECT COALESCE(MAX(started_at), 0) FROM sessions) AS started, \
             (SELECT COALESCE(MAX(answered_at), 0) FROM sessions) AS answered, \
             (SELECT COALESCE(MAX(ended_at), 0) FROM sessions) AS ended, \
             (SELECT COUNT(*) FROM handoffs) AS handoffs, \
             (SELECT COALESCE(MAX(updated_at), 0) FROM handoffs) AS handoff_updated",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        let parts = [
            "n",
            "started",
            "answered",
            "ended",
            "handoffs",
            "handoff_updated",
        ]
        .iter()
        .map(|c| get_i64(&row, c, T).map(|v| v.to_string()))
        .collect::<Result<Vec<_>>>()?;
        Ok(parts.join("."))
    }

    /// A value that changes whenever the session's status, turns, trace or
    /// handoff change: the session page polls it while the call is live.
    pub async fn session_version(&self, id: SessionId) -> Result<String> {
        let row = sqlx::query(
            "SELECT s.status AS status, COALESCE(s.ended_at, 0) AS ended, \
             (SELECT COUNT(*) FROM turns WHERE session_id = s.id) AS turns, \
             (SELECT COUNT(*) FROM trace_steps WHERE session_id = s.id) AS steps, \
             (SELECT COALESCE(MAX(updated_at), 0) FROM handoffs WHERE session_id = s.id) AS handoff \
             FROM sessions s WHERE s.id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?
        .ok_or_else(|| StoreError::NotFound {
            entity: "session",
            key: id.to_string(),
        })?;
        Ok(format!(
            "{}.{}.{}.{}.{}",
            get_str(&row, "status", T)?,
            get_i64(&row, "ended", T)?,
            get_i64(&row, "turns", T)?,
            get_i64(&row, "steps", T)?,
            get_i64(&row, "handoff", T)?,
        ))
    }

    pub async fn mark_answered(&self, id: SessionId, at: Timestamp) -> Result<()> {
        self.expect_one(
            self.execute_write(
                sqlx::query("UPDATE sessions SET status = $2, answered_at = $3 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(SessionStatus::Active.as_str())
                    .bind(at.as_millis()),
            )
            .await,
            id,
        )
    }

    /// Ends the session. The first end wins: an end time, reason or outcome
    /// already recorded (by a handoff, or by the other side of the call
    /// racing this one) is kept, so the most specific account survives.
    pub async fn end_session(
        &self,
        id: SessionId,
        at: Timestamp,
        outcome: Outcome,
        reason: &str,
    ) -> Result<()> {
        self.expect_one(
            self.execute_write(sqlx::query("UPDATE sessions SET status = $2, ended_at = COALESCE(ended_at, $3), outcome = COALESCE(outcome, $4), end_reason = COALESCE(end_reason, $5) WHERE id = $1")
                .bind(id.to_string())
                .bind(SessionStatus::Ended.as_str())
                .bind(at.as_millis())
                .bind(outcome.as_str())
                .bind(reason))
                .await,
            id,
        )
    }

    /// Links the session's recording: `key` is relative to the recording
    /// storage (the recordings directory), such as `"<session id>.wav"`.
    pub async fn set_recording(&self, id: SessionId, key: &str) -> Result<()> {
        self.expect_one(
            self.execute_write(
                sqlx::query("UPDATE sessions SET recording = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(key),
            )
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

/// Escapes `\`, `%` and `_` so they match themselves in `LIKE … ESCAPE '\'`.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
        recording: get_opt_str(row, "recording", T)?,
    })
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_and_the_escape_itself_match_literally() {
        assert_eq!(escape_like("100%_sure"), "100\\%\\_sure");
        assert_eq!(escape_like("a\\b"), "a\\\\b");
        assert_eq!(escape_like("refund"), "refund");
    }
}
