//! Phone numbers we answer, each bound to at most one agent.

use sqlx::any::AnyRow;
use switchboard_model::{Agent, AgentId, NumberId, PhoneNumber, E164};

use crate::{get_opt_parsed, get_parsed, get_str, get_ts, Result, Store, StoreError};

const T: &str = "phone_numbers";
const COLS: &str = "id, e164, agent_id, label, created_at";

impl Store {
    /// Adds a number, or binds an existing unbound one. A number bound to
    /// another agent is a conflict that names that agent.
    pub async fn add_number(
        &self,
        e164: &E164,
        agent: Option<AgentId>,
        label: &str,
    ) -> Result<PhoneNumber> {
        let mut tx = self.write_tx().await?;
        let existing = sqlx::query(&format!("SELECT {COLS} FROM phone_numbers WHERE e164 = $1"))
            .bind(e164.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        let id = match existing {
            Some(row) => {
                let number = number_from_row(&row)?;
                if let Some(current) = number.agent_id {
                    drop(tx);
                    return Err(self.bound_conflict(e164, current).await);
                }
                if agent.is_none() {
                    return Err(StoreError::Conflict {
                        field: "number",
                        message: format!("{e164} is already added"),
                    });
                }
                sqlx::query("UPDATE phone_numbers SET agent_id = $2, label = CASE WHEN $3 = '' THEN label ELSE $3 END WHERE id = $1")
                    .bind(number.id.to_string())
                    .bind(agent.map(|a| a.to_string()))
                    .bind(label)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                number.id
            }
            None => {
                let id = NumberId::new();
                sqlx::query(&format!(
                    "INSERT INTO phone_numbers ({COLS}) VALUES ($1, $2, $3, $4, $5)"
                ))
                .bind(id.to_string())
                .bind(e164.as_str())
                .bind(agent.map(|a| a.to_string()))
                .bind(label)
                .bind(self.now().as_millis())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    self.unique_err(e, "number", || {
                        format!("{e164} was added at the same time by another request")
                    })
                })?;
                id
            }
        };
        tx.commit().await.map_err(|e| self.db_err(e))?;
        self.number(id).await
    }

    /// Binds a number to `agent` (or unbinds it with `None`).
    pub async fn bind_number(&self, e164: &E164, agent: Option<AgentId>) -> Result<PhoneNumber> {
        let number = self.number_by_e164(e164).await?;
        if let (Some(current), Some(wanted)) = (number.agent_id, agent) {
            if current != wanted {
                return Err(self.bound_conflict(e164, current).await);
            }
        }
        // Guard in the UPDATE too, so two racing binds cannot both win.
        let done = sqlx::query("UPDATE phone_numbers SET agent_id = $2 WHERE id = $1 AND (agent_id IS NULL OR agent_id = $2 OR $2 IS NULL)")
            .bind(number.id.to_string())
            .bind(agent.map(|a| a.to_string()))
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            let now_bound = self.number(number.id).await?;
            if let Some(current) = now_bound.agent_id {
                return Err(self.bound_conflict(e164, current).await);
            }
        }
        self.number(number.id).await
    }

    pub async fn number(&self, id: NumberId) -> Result<PhoneNumber> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM phone_numbers WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| number_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "number",
                key: id.to_string(),
            })
    }

    pub async fn number_by_e164(&self, e164: &E164) -> Result<PhoneNumber> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM phone_numbers WHERE e164 = $1"))
            .bind(e164.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| number_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "number",
                key: e164.to_string(),
            })
    }

    pub async fn list_numbers(&self, agent: Option<AgentId>) -> Result<Vec<PhoneNumber>> {
        let rows = match agent {
            Some(a) => {
                sqlx::query(&format!(
                    "SELECT {COLS} FROM phone_numbers WHERE agent_id = $1 ORDER BY e164"
                ))
                .bind(a.to_string())
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!("SELECT {COLS} FROM phone_numbers ORDER BY e164"))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        rows.iter().map(number_from_row).collect()
    }

    pub async fn delete_number(&self, e164: &E164) -> Result<()> {
        let done = sqlx::query("DELETE FROM phone_numbers WHERE e164 = $1")
            .bind(e164.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "number",
                key: e164.to_string(),
            });
        }
        Ok(())
    }

    /// The agent that answers calls to `e164`, if the number is bound.
    pub async fn agent_for_number(&self, e164: &E164) -> Result<Option<Agent>> {
        match self.number_by_e164(e164).await {
            Ok(PhoneNumber {
                agent_id: Some(id), ..
            }) => self.agent(id).await.map(Some),
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn bound_conflict(&self, e164: &E164, current: AgentId) -> StoreError {
        let who = match self.agent(current).await {
            Ok(agent) => format!("agent `{}` ({})", agent.spec.name, agent.id),
            Err(_) => format!("agent {current}"),
        };
        StoreError::Conflict {
            field: "number",
            message: format!("{e164} is already bound to {who}; unbind it there first"),
        }
    }
}

fn number_from_row(row: &AnyRow) -> Result<PhoneNumber> {
    let e164 = get_str(row, "e164", T)?;
    Ok(PhoneNumber {
        id: get_parsed(row, "id", T)?,
        e164: E164::parse_strict(&e164).map_err(|e| StoreError::Corrupt {
            table: T,
            reason: e.to_string(),
        })?,
        agent_id: get_opt_parsed(row, "agent_id", T)?,
        label: get_str(row, "label", T)?,
        created_at: get_ts(row, "created_at", T)?,
    })
}
