//! Contacts: known callers, matched by phone number.

use sqlx::any::AnyRow;
use switchboard_model::{Contact, ContactId, ContactSpec, E164};

use crate::{get_opt_str, get_parsed, get_str, get_ts, Result, Store, StoreError};

const T: &str = "contacts";
const COLS: &str = "id, phone, name, email, external_id, created_at, updated_at";

/// Whether [`Store::upsert_contact`] created or updated the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
}

impl Store {
    pub async fn create_contact(&self, spec: &ContactSpec) -> Result<Contact> {
        let id = ContactId::new();
        let now = self.now().as_millis();
        sqlx::query(&format!(
            "INSERT INTO contacts ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$6)"
        ))
        .bind(id.to_string())
        .bind(spec.phone.as_str())
        .bind(&spec.name)
        .bind(spec.email.clone())
        .bind(spec.external_id.clone())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            self.unique_err(e, "phone", || {
                format!("a contact with phone {} already exists", spec.phone)
            })
        })?;
        self.contact(id).await
    }

    /// Creates the contact, or updates the one with the same phone (CSV import).
    pub async fn upsert_contact(&self, spec: &ContactSpec) -> Result<(Contact, Upserted)> {
        match self.contact_by_phone(&spec.phone).await? {
            Some(existing) => Ok((
                self.update_contact(existing.id, spec).await?,
                Upserted::Updated,
            )),
            None => Ok((self.create_contact(spec).await?, Upserted::Created)),
        }
    }

    pub async fn update_contact(&self, id: ContactId, spec: &ContactSpec) -> Result<Contact> {
        let done = sqlx::query("UPDATE contacts SET phone=$2, name=$3, email=$4, external_id=$5, updated_at=$6 WHERE id=$1")
            .bind(id.to_string())
            .bind(spec.phone.as_str())
            .bind(&spec.name)
            .bind(spec.email.clone())
            .bind(spec.external_id.clone())
            .bind(self.now().as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.unique_err(e, "phone", || format!("a contact with phone {} already exists", spec.phone)))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "contact",
                key: id.to_string(),
            });
        }
        self.contact(id).await
    }

    pub async fn contact(&self, id: ContactId) -> Result<Contact> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM contacts WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| contact_from_row(&r))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                entity: "contact",
                key: id.to_string(),
            })
    }

    /// The contact a caller is matched to.
    pub async fn contact_by_phone(&self, phone: &E164) -> Result<Option<Contact>> {
        let row = self
            .fetch_optional_fast(
                sqlx::query(&format!("SELECT {COLS} FROM contacts WHERE phone = $1"))
                    .bind(phone.as_str()),
            )
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| contact_from_row(&r)).transpose()
    }

    /// Contacts whose name, phone or email contains `search` (all when empty).
    pub async fn list_contacts(
        &self,
        search: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Contact>> {
        let pattern = format!("%{}%", search.trim().to_lowercase().replace(['%', '_'], ""));
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM contacts WHERE LOWER(name) LIKE $1 OR phone LIKE $1 OR LOWER(COALESCE(email, '')) LIKE $1 \
             ORDER BY name, phone LIMIT $2 OFFSET $3"
        ))
        .bind(pattern)
        .bind(limit.clamp(1, 1000))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter().map(contact_from_row).collect()
    }

    pub async fn delete_contact(&self, id: ContactId) -> Result<()> {
        let done = sqlx::query("DELETE FROM contacts WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "contact",
                key: id.to_string(),
            });
        }
        Ok(())
    }
}

fn contact_from_row(row: &AnyRow) -> Result<Contact> {
    Ok(Contact {
        id: get_parsed(row, "id", T)?,
        phone: E164::parse_strict(&get_str(row, "phone", T)?).map_err(|e| StoreError::Corrupt {
            table: T,
            reason: e.to_string(),
        })?,
        name: get_str(row, "name", T)?,
        email: get_opt_str(row, "email", T)?,
        external_id: get_opt_str(row, "external_id", T)?,
        created_at: get_ts(row, "created_at", T)?,
        updated_at: get_ts(row, "updated_at", T)?,
    })
}
