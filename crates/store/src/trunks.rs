//! SIP trunks. Passwords are sealed with the store's [`crate::SecretBox`] and
//! leave the store only through [`Store::trunk_credentials`].

use ipnet::IpNet;
use sqlx::any::AnyRow;
use switchboard_model::{Redacted, Trunk, TrunkId, TrunkSpec, E164};

use crate::{get_i64, get_opt_str, get_parsed, get_str, get_ts, Result, Store, StoreError};

const T: &str = "trunks";
const COLS: &str =
    "id, name, host, port, transport, allowed_cidrs, inbound_username, inbound_password_enc, \
    outbound_username, outbound_password_enc, register, outbound_caller_id, created_at, transfer";

/// A trunk's passwords in clear, for the SIP stack.
#[derive(Debug, Clone, Default)]
pub struct TrunkCredentials {
    pub inbound_password: Option<Redacted<String>>,
    pub outbound_password: Option<Redacted<String>>,
}

impl Store {
    pub async fn create_trunk(&self, spec: &TrunkSpec) -> Result<Trunk> {
        let id = TrunkId::new();
        let cidrs: Vec<String> = spec.allowed_cidrs.iter().map(ToString::to_string).collect();
        let seal = |p: &Option<Redacted<String>>| p.as_ref().map(|p| self.secrets.seal(p.expose()));
        sqlx::query(&format!(
            "INSERT INTO trunks ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
        ))
        .bind(id.to_string())
        .bind(&spec.name)
        .bind(&spec.host)
        .bind(i64::from(spec.port))
        .bind(spec.transport.as_str())
        .bind(serde_json::to_string(&cidrs).unwrap_or_else(|_| "[]".into()))
        .bind(spec.inbound_username.clone())
        .bind(seal(&spec.inbound_password))
        .bind(spec.outbound_username.clone())
        .bind(seal(&spec.outbound_password))
        .bind(i64::from(spec.register))
        .bind(spec.outbound_caller_id.as_ref().map(|n| n.to_string()))
        .bind(self.now().as_millis())
        .bind(spec.transfer.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            self.unique_err(e, "name", || {
                format!(
                    "a trunk named `{}` already exists; choose another name",
                    spec.name
                )
            })
        })?;
        self.trunk(id).await
    }

    pub async fn trunk(&self, id: TrunkId) -> Result<Trunk> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM trunks WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| trunk_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "trunk",
                key: id.to_string(),
            })
    }

    pub async fn find_trunk(&self, id_or_name: &str) -> Result<Trunk> {
        if let Ok(id) = id_or_name.parse::<TrunkId>() {
            if let Ok(t) = self.trunk(id).await {
                return Ok(t);
            }
        }
        let row = sqlx::query(&format!("SELECT {COLS} FROM trunks WHERE name = $1"))
            .bind(id_or_name.trim())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| trunk_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "trunk",
                key: id_or_name.to_string(),
            })
    }

    pub async fn list_trunks(&self) -> Result<Vec<Trunk>> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM trunks ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter().map(trunk_from_row).collect()
    }

    pub async fn delete_trunk(&self, id: TrunkId) -> Result<()> {
        let done = sqlx::query("DELETE FROM trunks WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "trunk",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    /// Decrypts a trunk's passwords.
    pub async fn trunk_credentials(&self, id: TrunkId) -> Result<TrunkCredentials> {
        let row = sqlx::query(
            "SELECT inbound_password_enc, outbound_password_enc FROM trunks WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?
        .ok_or_else(|| StoreError::NotFound {
            entity: "trunk",
            key: id.to_string(),
        })?;
        let open = |col: &str| -> Result<Option<Redacted<String>>> {
            match get_opt_str(&row, col, T)? {
                None => Ok(None),
                Some(sealed) => Ok(Some(Redacted::new(self.secrets.open(&sealed)?))),
            }
        };
        Ok(TrunkCredentials {
            inbound_password: open("inbound_password_enc")?,
            outbound_password: open("outbound_password_enc")?,
        })
    }
}

fn trunk_from_row(row: &AnyRow) -> Result<Trunk> {
    let cidrs: Vec<String> =
        serde_json::from_str(&get_str(row, "allowed_cidrs", T)?).map_err(|e| {
            StoreError::Corrupt {
                table: T,
                reason: format!("allowed_cidrs: {e}"),
            }
        })?;
    let allowed_cidrs = cidrs
        .iter()
        .map(|c| c.parse::<IpNet>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt {
            table: T,
            reason: format!("allowed_cidrs: {e}"),
        })?;
    let caller_id = get_opt_str(row, "outbound_caller_id", T)?
        .map(|n| E164::parse_strict(&n))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            table: T,
            reason: e.to_string(),
        })?;
    Ok(Trunk {
        id: get_parsed(row, "id", T)?,
        name: get_str(row, "name", T)?,
        host: get_str(row, "host", T)?,
        port: u16::try_from(get_i64(row, "port", T)?).map_err(|e| StoreError::Corrupt {
            table: T,
            reason: format!("port: {e}"),
        })?,
        transport: get_parsed(row, "transport", T)?,
        allowed_cidrs,
        inbound_username: get_opt_str(row, "inbound_username", T)?,
        inbound_password_set: get_opt_str(row, "inbound_password_enc", T)?.is_some(),
        outbound_username: get_opt_str(row, "outbound_username", T)?,
        outbound_password_set: get_opt_str(row, "outbound_password_enc", T)?.is_some(),
        register: get_i64(row, "register", T)? != 0,
        outbound_caller_id: caller_id,
        transfer: get_parsed(row, "transfer", T)?,
        created_at: get_ts(row, "created_at", T)?,
    })
}
