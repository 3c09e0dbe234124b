//! Agents: their configuration, looked up by id or by name.

use sqlx::any::AnyRow;
use switchboard_model::{Agent, AgentId, AgentSpec, HandoffTarget, Region, RoutingAttributeNames};

use crate::{get_i64, get_opt_str, get_parsed, get_str, get_ts, Result, Store, StoreError};

const T: &str = "agents";
const COLS: &str = "id, name, language, greeting, instructions, voice, stt_provider, tts_provider, brain, \
    handoff_mode, handoff_number, handoff_phrases, attr_session_id, attr_caller_phone, attr_handoff_reason, \
    attr_handoff_mode, attr_preferred_channel, time_zone, max_concurrent_calls, tools, created_at, updated_at";

impl Store {
    pub async fn create_agent(&self, spec: &AgentSpec) -> Result<Agent> {
        let id = AgentId::new();
        let now = self.now().as_millis();
        let sql = format!(
            "INSERT INTO agents ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$21)"
        );
        let phrases = serde_json::to_string(&spec.handoff_phrases).unwrap_or_else(|_| "[]".into());
        let a = &spec.routing_attributes;
        sqlx::query(&sql)
            .bind(id.to_string())
            .bind(&spec.name)
            .bind(&spec.language)
            .bind(&spec.greeting)
            .bind(&spec.instructions)
            .bind(&spec.voice)
            .bind(spec.stt_provider.as_str())
            .bind(spec.tts_provider.as_str())
            .bind(spec.brain.as_str())
            .bind(spec.handoff_mode.as_str())
            .bind(spec.handoff_number.as_ref().map(|n| n.to_string()))
            .bind(phrases)
            .bind(&a.session_id)
            .bind(&a.caller_phone)
            .bind(&a.handoff_reason)
            .bind(&a.handoff_mode)
            .bind(&a.preferred_channel)
            .bind(&spec.time_zone)
            .bind(i64::from(spec.max_concurrent_calls))
            .bind(tools_json(spec))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| self.unique_err(e, "name", || name_taken(&spec.name)))?;
        self.agent(id).await
    }

    /// Replaces an agent's whole configuration.
    pub async fn update_agent(&self, id: AgentId, spec: &AgentSpec) -> Result<Agent> {
        let phrases = serde_json::to_string(&spec.handoff_phrases).unwrap_or_else(|_| "[]".into());
        let a = &spec.routing_attributes;
        let done = sqlx::query(
            "UPDATE agents SET name=$2, language=$3, greeting=$4, instructions=$5, voice=$6, stt_provider=$7, \
             tts_provider=$8, brain=$9, handoff_mode=$10, handoff_number=$11, handoff_phrases=$12, \
             attr_session_id=$13, attr_caller_phone=$14, attr_handoff_reason=$15, attr_handoff_mode=$16, \
             attr_preferred_channel=$17, time_zone=$18, max_concurrent_calls=$19, tools=$20, updated_at=$21 WHERE id=$1",
        )
        .bind(id.to_string())
        .bind(&spec.name)
        .bind(&spec.language)
        .bind(&spec.greeting)
        .bind(&spec.instructions)
        .bind(&spec.voice)
        .bind(spec.stt_provider.as_str())
        .bind(spec.tts_provider.as_str())
        .bind(spec.brain.as_str())
        .bind(spec.handoff_mode.as_str())
        .bind(spec.handoff_number.as_ref().map(|n| n.to_string()))
        .bind(phrases)
        .bind(&a.session_id)
        .bind(&a.caller_phone)
        .bind(&a.handoff_reason)
        .bind(&a.handoff_mode)
        .bind(&a.preferred_channel)
        .bind(&spec.time_zone)
        .bind(i64::from(spec.max_concurrent_calls))
        .bind(tools_json(spec))
        .bind(self.now().as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| self.unique_err(e, "name", || name_taken(&spec.name)))?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        self.agent(id).await
    }

    pub async fn agent(&self, id: AgentId) -> Result<Agent> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM agents WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| agent_from_row(&r))
            .transpose()?
            .ok_or_else(|| not_found(id))
    }

    /// Finds an agent by id or, failing that, by exact name (CLI and API accept either).
    pub async fn find_agent(&self, id_or_name: &str) -> Result<Agent> {
        if let Ok(id) = id_or_name.parse::<AgentId>() {
            if let Ok(agent) = self.agent(id).await {
                return Ok(agent);
            }
        }
        let row = sqlx::query(&format!("SELECT {COLS} FROM agents WHERE name = $1"))
            .bind(id_or_name.trim())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| agent_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "agent",
                key: id_or_name.to_string(),
            })
    }

    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM agents ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Deletes an agent. Its numbers stay, unbound; its sessions stay, for the record.
    pub async fn delete_agent(&self, id: AgentId) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE phone_numbers SET agent_id = NULL WHERE agent_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        sqlx::query("UPDATE sessions SET agent_id = NULL WHERE agent_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        let done = sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        tx.commit().await.map_err(|e| self.db_err(e))
    }
}

fn not_found(id: AgentId) -> StoreError {
    StoreError::NotFound {
        entity: "agent",
        key: id.to_string(),
    }
}

fn name_taken(name: &str) -> String {
    format!("an agent named `{name}` already exists; choose another name")
}

fn agent_from_row(row: &AnyRow) -> Result<Agent> {
    let phrases_json = get_str(row, "handoff_phrases", T)?;
    let handoff_phrases: Vec<String> =
        serde_json::from_str(&phrases_json).map_err(|e| StoreError::Corrupt {
            table: T,
            reason: format!("handoff_phrases: {e}"),
        })?;
    let handoff_number =
        match get_opt_str(row, "handoff_number", T)? {
            None => None,
            Some(n) => Some(HandoffTarget::parse(&n, Region::default()).map_err(|e| {
                StoreError::Corrupt {
                    table: T,
                    reason: e.to_string(),
                }
            })?),
        };
    let max_calls = get_i64(row, "max_concurrent_calls", T)?;
    let tools =
        serde_json::from_str(&get_str(row, "tools", T)?).map_err(|e| StoreError::Corrupt {
            table: T,
            reason: format!("tools: {e}"),
        })?;
    Ok(Agent {
        id: get_parsed(row, "id", T)?,
        spec: AgentSpec {
            name: get_str(row, "name", T)?,
            language: get_str(row, "language", T)?,
            greeting: get_str(row, "greeting", T)?,
            instructions: get_str(row, "instructions", T)?,
            voice: get_str(row, "voice", T)?,
            stt_provider: get_parsed(row, "stt_provider", T)?,
            tts_provider: get_parsed(row, "tts_provider", T)?,
            brain: get_parsed(row, "brain", T)?,
            handoff_mode: get_parsed(row, "handoff_mode", T)?,
            handoff_number,
            handoff_phrases,
            routing_attributes: RoutingAttributeNames {
                session_id: get_str(row, "attr_session_id", T)?,
                caller_phone: get_str(row, "attr_caller_phone", T)?,
                handoff_reason: get_str(row, "attr_handoff_reason", T)?,
                handoff_mode: get_str(row, "attr_handoff_mode", T)?,
                preferred_channel: get_str(row, "attr_preferred_channel", T)?,
            },
            time_zone: get_str(row, "time_zone", T)?,
            max_concurrent_calls: u32::try_from(max_calls).unwrap_or(1),
            tools,
        },
        created_at: get_ts(row, "created_at", T)?,
        updated_at: get_ts(row, "updated_at", T)?,
    })
}

fn tools_json(spec: &AgentSpec) -> String {
    serde_json::to_string(&spec.tools).unwrap_or_else(|_| "[]".into())
}
