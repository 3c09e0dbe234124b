//! Access tokens the sandbox issues (HS256 JWTs with a per-sandbox random
//! key) and verification of customer identity tokens against the keyset.

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::api::ApiError;
use super::{now_secs, SandboxConfig, Shared};

/// Claims of a sandbox access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AccessClaims {
    /// The Messaging end user (random for guests, the identity's `sub` otherwise).
    pub(super) sub: String,
    pub(super) iat: i64,
    pub(super) exp: i64,
    /// This token's client id (a continuation token gets a new one).
    pub(super) jti: String,
    pub(super) org: String,
    /// The identity's `sub` when authenticated.
    #[serde(default)]
    pub(super) verified_subject: Option<String>,
}

impl AccessClaims {
    pub(super) fn end_user(&self) -> String {
        self.verified_subject
            .clone()
            .unwrap_or_else(|| "Guest".to_string())
    }

    pub(super) fn authenticated(&self) -> bool {
        self.verified_subject.is_some()
    }
}

impl Shared {
    pub(super) fn issue_access_token(
        &self,
        sub: String,
        verified_subject: Option<String>,
    ) -> Result<String, ApiError> {
        let (ttl, org) = {
            let state = self.lock();
            (state.access_token_ttl, state.config.org_id.clone())
        };
        let now = now_secs();
        let claims = AccessClaims {
            sub,
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            jti: uuid::Uuid::new_v4().to_string(),
            org,
            verified_subject,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| ApiError::server(format!("could not sign the access token: {e}")))
    }

    /// The caller behind `Authorization: Bearer <access token>`, or 401.
    pub(super) fn authorize(&self, headers: &HeaderMap) -> Result<AccessClaims, ApiError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization header is required: Bearer <accessToken>")
            })?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("Authorization header is not text"))?
            .trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::unauthorized(
                    "Authorization header must be `Bearer <accessToken>`",
                ))
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<AccessClaims>(
            token,
            &DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .map_err(|_| {
            ApiError::unauthorized(
                "the access token is not valid (not issued by this Messaging deployment)",
            )
        })?
        .claims;
        let now = now_secs();
        if claims.exp <= now {
            return Err(ApiError::unauthorized(format!(
                "the access token expired {} s ago; get a new token (continuation-access-token or a new access token)",
                now - claims.exp
            )));
        }
        Ok(claims)
    }
}

/// Verifies a customer identity token as Salesforce does for Enhanced Chat
/// User Verification: RS256/RS512 signature with the keyset's key named by
/// `kid`, `iss` equal to the keyset issuer, `exp` in the future, `sub` set.
/// Returns the `sub`; every refusal is a 401 that says why.
pub(super) fn verify_identity(config: &SandboxConfig, token: &str) -> Result<String, ApiError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| ApiError::unauthorized(format!("customerIdentityToken is not a JWT: {e}")))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::RS512) {
        return Err(ApiError::unauthorized(format!(
            "customerIdentityToken is signed with {:?}; User Verification accepts RS256 and RS512",
            header.alg
        )));
    }
    let kid = header.kid.ok_or_else(|| {
        ApiError::unauthorized(
            "customerIdentityToken has no kid header: set it to the key id in the keyset",
        )
    })?;
    let (_, jwk) = config.keys.iter().find(|(k, _)| *k == kid).ok_or_else(|| {
        ApiError::unauthorized(format!(
            "no key with kid '{kid}' in the User Verification keyset"
        ))
    })?;
    if let Some(alg) = jwk.get("alg").and_then(Value::as_str) {
        let header_alg = format!("{:?}", header.alg);
        if alg != header_alg {
            return Err(ApiError::unauthorized(format!(
                "key '{kid}' is registered for {alg} but the token is signed with {header_alg}"
            )));
        }
    }
    let (Some(n), Some(e)) = (
        jwk.get("n").and_then(Value::as_str),
        jwk.get("e").and_then(Value::as_str),
    ) else {
        return Err(ApiError::unauthorized(format!(
            "key '{kid}' in the keyset has no RSA n and e"
        )));
    };
    let key = DecodingKey::from_rsa_components(n, e).map_err(|e| {
        ApiError::unauthorized(format!(
            "key '{kid}' in the keyset is not a valid RSA key: {e}"
        ))
    })?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => ApiError::unauthorized(format!(
                "customerIdentityToken signature does not verify with key '{kid}'"
            )),
            _ => ApiError::unauthorized(format!("customerIdentityToken is invalid: {e}")),
        })?
        .claims;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::unauthorized("customerIdentityToken has no sub claim"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::unauthorized("customerIdentityToken has no exp claim"))?;
    let now = now_secs();
    if exp <= now {
        return Err(ApiError::unauthorized(format!(
            "customerIdentityToken expired {} s ago (exp {exp})",
            now - exp
        )));
    }
    if let Some(issuer) = &config.issuer {
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if iss != issuer {
            return Err(ApiError::unauthorized(format!(
                "customerIdentityToken iss '{iss}' does not match the keyset issuer '{issuer}'"
            )));
        }
    }
    Ok(sub.to_string())
}
