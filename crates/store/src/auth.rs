//! Users (argon2id password hashes), dashboard logins (cookie sessions with a
//! CSRF token) and API bearer tokens (stored as SHA-256 hashes: they are 256
//! random bits, so a fast hash is enough and keeps every request cheap).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use switchboard_model::{ApiToken, Timestamp, TokenId, User, UserId};

use crate::{get_opt_ts, get_parsed, get_str, get_ts, Result, Store, StoreError};

/// A logged-in dashboard user.
#[derive(Debug, Clone)]
pub struct LoginSession {
    pub user: User,
    /// Echoed in every form and in `X-CSRF-Token` by dashboard scripts.
    pub csrf_token: String,
    pub expires_at: Timestamp,
}

/// A freshly created API token: the secret is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub token: ApiToken,
    pub secret: String,
}

/// Prefix of every API token, so leaked tokens are easy to find in code scans.
pub const TOKEN_PREFIX: &str = "sb_";

/// A random URL-safe string of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        crate::get_i64(&row, "n", "users")
    }

    pub async fn create_user(&self, username: &str, password: &str) -> Result<User> {
        let hash = hash_password(password)?;
        let user = User {
            id: UserId::new(),
            username: username.to_string(),
            created_at: self.now(),
        };
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1,$2,$3,$4)",
        )
        .bind(user.id.to_string())
        .bind(username)
        .bind(hash)
        .bind(user.created_at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            self.unique_err(e, "username", || {
                format!("user `{username}` already exists")
            })
        })?;
        Ok(user)
    }

    pub async fn set_password(&self, username: &str, password: &str) -> Result<()> {
        let hash = hash_password(password)?;
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE username = $1")
            .bind(username)
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "user",
                key: username.to_string(),
            });
        }
        // A new password ends every open dashboard session of that user.
        sqlx::query(
            "DELETE FROM logins WHERE user_id IN (SELECT id FROM users WHERE username = $1)",
        )
        .bind(username)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Checks a username and password. Runs a full hash even for unknown users
    /// so response time does not reveal which usernames exist.
    pub async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, created_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        let password = password.to_string();
        let Some(row) = row else {
            let _ = tokio::task::spawn_blocking(move || hash_password(&password)).await;
            return Ok(None);
        };
        let stored = get_str(&row, "password_hash", "users")?;
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Ok(None);
        }
        Ok(Some(User {
            id: get_parsed(&row, "id", "users")?,
            username: get_str(&row, "username", "users")?,
            created_at: get_ts(&row, "created_at", "users")?,
        }))
    }

    /// Opens a dashboard session; returns the cookie value and the session.
    pub async fn create_login(&self, user: &User, ttl_ms: i64) -> Result<(String, LoginSession)> {
        let token = random_token(32);
        let csrf_token = random_token(24);
        let now = self.now();
        let expires_at = now.plus_millis(ttl_ms);
        sqlx::query("INSERT INTO logins (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1,$2,$3,$4,$5)")
            .bind(sha256_hex(&token))
            .bind(user.id.to_string())
            .bind(&csrf_token)
            .bind(now.as_millis())
            .bind(expires_at.as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        // Expired logins are swept opportunistically; the table stays small.
        sqlx::query("DELETE FROM logins WHERE expires_at < $1")
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok((
            token,
            LoginSession {
                user: user.clone(),
                csrf_token,
                expires_at,
            },
        ))
    }

    /// The live session for a cookie value, if any.
    pub async fn login(&self, token: &str) -> Result<Option<LoginSession>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.created_at, l.csrf_token, l.expires_at FROM logins l \
             JOIN users u ON u.id = l.user_id WHERE l.token_hash = $1 AND l.expires_at > $2",
        )
        .bind(sha256_hex(token))
        .bind(self.now().as_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(LoginSession {
            user: User {
                id: get_parsed(&row, "id", "users")?,
                username: get_str(&row, "username", "users")?,
                created_at: get_ts(&row, "created_at", "users")?,
            },
            csrf_token: get_str(&row, "csrf_token", "logins")?,
            expires_at: get_ts(&row, "expires_at", "logins")?,
        }))
    }

    pub async fn delete_login(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM logins WHERE token_hash = $1")
            .bind(sha256_hex(token))
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    pub async fn create_api_token(&self, name: &str) -> Result<NewApiToken> {
        let secret = format!("{TOKEN_PREFIX}{}", random_token(32));
        let token = ApiToken {
            id: TokenId::new(),
            name: name.to_string(),
            created_at: self.now(),
            last_used_at: None,
        };
        sqlx::query("INSERT INTO api_tokens (id, name, token_hash, created_at, last_used_at) VALUES ($1,$2,$3,$4,NULL)")
            .bind(token.id.to_string())
            .bind(name)
            .bind(sha256_hex(&secret))
            .bind(token.created_at.as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(NewApiToken { token, secret })
    }

    /// The token a bearer secret belongs to; records its use.
    pub async fn verify_api_token(&self, secret: &str) -> Result<Option<ApiToken>> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = sha256_hex(secret);
        let row = sqlx::query(
            "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        let Some(row) = row else { return Ok(None) };
        let now = self.now();
        let mut token = token_from_row(&row)?;
        // Write last use at most once a minute per token, not on every request.
        if token
            .last_used_at
            .is_none_or(|t| now.as_millis() - t.as_millis() > 60_000)
        {
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE token_hash = $1")
                .bind(&hash)
                .bind(now.as_millis())
                .execute(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    pub async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, last_used_at FROM api_tokens ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter().map(token_from_row).collect()
    }

    pub async fn revoke_api_token(&self, id: TokenId) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "token",
                key: id.to_string(),
            });
        }
        Ok(())
    }
}

fn token_from_row(row: &sqlx::any::AnyRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: get_parsed(row, "id", "api_tokens")?,
        name: get_str(row, "name", "api_tokens")?,
        created_at: get_ts(row, "created_at", "api_tokens")?,
        last_used_at: get_opt_ts(row, "last_used_at", "api_tokens")?,
    })
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::PasswordHash(e.to_string()))
}

impl Store {
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT id, username, created_at FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                Ok(User {
                    id: get_parsed(r, "id", "users")?,
                    username: get_str(r, "username", "users")?,
                    created_at: get_ts(r, "created_at", "users")?,
                })
            })
            .collect()
    }
}
