//! Customer identity tokens for Enhanced Chat User Verification.
//!
//! With User Verification on, Salesforce accepts an access-token request only
//! with a `customerIdentityToken`: a JWT we sign with a private key whose
//! public half is registered in an Enhanced Chat User Verification keyset.
//! The token carries exactly what Salesforce's own key utility puts in it:
//! header `alg` (RS256 or RS512), `kid` (the key's id in the keyset) and
//! `typ: JWT`; claims `iss` (the keyset's issuer), `sub` (the end user),
//! `iat` and `exp` — and **no `aud`**.
//!
//! [`JwtSigner`] signs; [`keygen`] makes a key pair plus the JWK to upload
//! (with an `x5c` self-signed certificate, which Salesforce requires).
//!
//! Crypto: signatures go through `jsonwebtoken` on `ring`; the `rsa` crate is
//! used only to parse, generate and serialise keys (never to decrypt).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::Serialize;
use serde_json::{json, Value};

/// The smallest RSA modulus we sign with (Salesforce's utility and OpenCX's
/// setup both ask for ≥ 2048 bits).
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus `ring` signs with.
pub const MAX_RSA_BITS: usize = 8192;

/// Why a key or a token could not be made. Each variant that the user can
/// cause names the input (`jwt_private_key`, `jwt_key_id`, `jwt_issuer`,
/// `subject`, `bits`, ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// An input was refused; `field` names it and `reason` says what would work.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Signing failed although the key was accepted: a bug or a key that the
    /// signing backend refuses.
    #[error("could not sign the customer identity token: {0}")]
    Sign(String),
    /// Generating or serialising a key pair failed.
    #[error("could not generate the key pair: {0}")]
    Keygen(String),
}

impl IdentityError {
    fn invalid(field: &'static str, reason: impl fmt::Display) -> Self {
        IdentityError::Invalid {
            field,
            reason: reason.to_string(),
        }
    }
}

/// The JWS algorithms Salesforce accepts for customer identity tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JwtAlgorithm {
    #[default]
    Rs256,
    Rs512,
}

impl JwtAlgorithm {
    /// The JOSE name: `RS256` or `RS512`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Rs512 => "RS512",
        }
    }

    fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            JwtAlgorithm::Rs512 => jsonwebtoken::Algorithm::RS512,
        }
    }

    fn certificate_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            JwtAlgorithm::Rs256 => &rcgen::PKCS_RSA_SHA256,
            JwtAlgorithm::Rs512 => &rcgen::PKCS_RSA_SHA512,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = IdentityError;

    /// `RS256` or `RS512` (case-insensitive, surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "RS256" => Ok(JwtAlgorithm::Rs256),
            "RS512" => Ok(JwtAlgorithm::Rs512),
            _ => Err(IdentityError::invalid(
                "jwt_algorithm",
                format!(
                    "`{}` is not RS256 or RS512 (the algorithms Salesforce accepts)",
                    s.trim()
                ),
            )),
        }
    }
}

/// Signs customer identity tokens with one registered key.
///
/// Built once from the configured private key; `Debug` never shows the key.
#[derive(Clone)]
pub struct JwtSigner {
    encoding_key: jsonwebtoken::EncodingKey,
    key_id: String,
    issuer: String,
    algorithm: JwtAlgorithm,
    jwk: Value,
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("key_id", &self.key_id)
            .field("issuer", &self.issuer)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct IdentityClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
}

impl JwtSigner {
    /// Accepts an unencrypted RSA private key in PEM, PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`), of at least
    /// 2048 bits. `key_id` is the key's `kid` in the keyset and `issuer` the
    /// keyset's "JSON web key issuer".
    pub fn from_pem(
        private_key_pem: &str,
        key_id: &str,
        issuer: &str,
        algorithm: JwtAlgorithm,
    ) -> Result<Self, IdentityError> {
        let key_id = key_id.trim();
        if key_id.is_empty() {
            return Err(IdentityError::invalid(
                "jwt_key_id",
                "is required: the key id (kid) of the key registered in the Enhanced Chat User Verification keyset",
            ));
        }
        let issuer = issuer.trim();
        if issuer.is_empty() {
            return Err(IdentityError::invalid(
                "jwt_issuer",
                "is required: the keyset's \"JSON web key issuer\"",
            ));
        }
        let key = parse_private_key(private_key_pem)?;
        let der = key.to_pkcs1_der().map_err(|e| {
            IdentityError::invalid("jwt_private_key", format!("cannot be re-encoded: {e}"))
        })?;
        let encoding_key = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
        let mut jwk = public_jwk_of(&key, key_id, algorithm);
        match self_signed_certificate(&key, key_id, algorithm) {
            Ok(cert) => {
                jwk["x5c"] = json!([cert]);
            }
            Err(e) => tracing::warn!(error = %e, "no x5c certificate for the public JWK"),
        }
        let signer = JwtSigner {
            encoding_key,
            key_id: key_id.to_string(),
            issuer: issuer.to_string(),
            algorithm,
            jwk,
        };
        // Prove now, not at the first handoff, that the backend accepts the key.
        signer.sign("switchboard-self-test", 0, 1).map_err(|e| {
            IdentityError::invalid(
                "jwt_private_key",
                format!("the key is refused by the signer: {e}"),
            )
        })?;
        Ok(signer)
    }

    /// Signs a token for `subject` (the end user Salesforce keys the
    /// Messaging End User on), valid from `now_unix` for `ttl_secs`.
    pub fn sign(
        &self,
        subject: &str,
        now_unix: i64,
        ttl_secs: i64,
    ) -> Result<String, IdentityError> {
        if subject.trim().is_empty() {
            return Err(IdentityError::invalid(
                "subject",
                "is required: a stable id of the end user (e.g. the caller's number or CRM id)",
            ));
        }
        if ttl_secs <= 0 {
            return Err(IdentityError::invalid(
                "ttl_secs",
                format!("{ttl_secs} must be positive"),
            ));
        }
        let mut header = jsonwebtoken::Header::new(self.algorithm.jsonwebtoken());
        header.kid = Some(self.key_id.clone());
        header.typ = Some("JWT".to_string());
        let claims = IdentityClaims {
            iss: &self.issuer,
            sub: subject,
            iat: now_unix,
            exp: now_unix.saturating_add(ttl_secs),
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding_key)
            .map_err(|e| IdentityError::Sign(e.to_string()))
    }

    /// The public key as a JWK: `kty`, `kid`, `alg`, `use: "sig"`, `n`, `e`,
    /// and `x5c` (a self-signed certificate for the key) — ready to upload to
    /// the keyset.
    pub fn public_jwk(&self) -> Value {
        self.jwk.clone()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }
}

/// A freshly generated key pair, in the shapes the setup needs.
#[derive(Clone)]
pub struct GeneratedKey {
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`): the value for `jwt_private_key`.
    pub private_pem: String,
    /// SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub public_pem: String,
    /// The JWK to upload to the keyset (with `x5c`).
    pub jwk: Value,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("public_pem", &self.public_pem)
            .field("jwk", &self.jwk)
            .finish_non_exhaustive()
    }
}

/// Generates an RSA key pair of `bits` (2048..=8192; 2048 takes about a
/// second in an optimised build, several in a debug one).
pub fn keygen(
    key_id: &str,
    algorithm: JwtAlgorithm,
    bits: usize,
) -> Result<GeneratedKey, IdentityError> {
    let key_id = key_id.trim();
    if key_id.is_empty() {
        return Err(IdentityError::invalid(
            "jwt_key_id",
            "is required to label the generated key",
        ));
    }
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(IdentityError::invalid(
            "bits",
            format!("{bits} is outside {MIN_RSA_BITS}..={MAX_RSA_BITS} (Salesforce needs at least 2048)"),
        ));
    }
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
        .map_err(|e| IdentityError::Keygen(e.to_string()))?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| IdentityError::Keygen(e.to_string()))?
        .to_string();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| IdentityError::Keygen(e.to_string()))?;
    let mut jwk = public_jwk_of(&key, key_id, algorithm);
    let cert = self_signed_certificate(&key, key_id, algorithm).map_err(IdentityError::Keygen)?;
    jwk["x5c"] = json!([cert]);
    Ok(GeneratedKey {
        private_pem,
        public_pem,
        jwk,
    })
}

/// Reads a JWT's claims **without verifying** it (for a token's `exp`).
/// `None` when the text is not a JWT with a JSON object payload.
pub(crate) fn unverified_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn parse_private_key(pem: &str) -> Result<RsaPrivateKey, IdentityError> {
    const NOT_A_KEY: &str = "not a PEM RSA private key (PKCS#1 or PKCS#8)";
    let pem = pem.trim();
    if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(IdentityError::invalid(
            "jwt_private_key",
            "is encrypted; store it unencrypted (`openssl pkey -in key.pem -out plain.pem`): Switchboard seals secrets itself",
        ));
    }
    if pem.contains("PUBLIC KEY") || pem.contains("CERTIFICATE") {
        return Err(IdentityError::invalid(
            "jwt_private_key",
            format!("{NOT_A_KEY}: this is the public half; paste the private key"),
        ));
    }
    let key = if pem.contains("BEGIN RSA PRIVATE KEY") {
        RsaPrivateKey::from_pkcs1_pem(pem)
            .map_err(|e| IdentityError::invalid("jwt_private_key", format!("{NOT_A_KEY}: {e}")))?
    } else if pem.contains("BEGIN PRIVATE KEY") {
        RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| IdentityError::invalid("jwt_private_key", format!("{NOT_A_KEY}: {e}")))?
    } else {
        return Err(IdentityError::invalid("jwt_private_key", NOT_A_KEY));
    };
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(IdentityError::invalid(
            "jwt_private_key",
            format!("the RSA key has {bits} bits; Salesforce needs at least {MIN_RSA_BITS} — generate a new one"),
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(IdentityError::invalid(
            "jwt_private_key",
            format!("the RSA key has {bits} bits; at most {MAX_RSA_BITS} are supported"),
        ));
    }
    Ok(key)
}

fn public_jwk_of(key: &RsaPrivateKey, key_id: &str, algorithm: JwtAlgorithm) -> Value {
    json!({
        "kty": "RSA",
        "kid": key_id,
        "alg": algorithm.as_str(),
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

/// A self-signed X.509 certificate for the key, base64 DER (the `x5c` entry
/// Salesforce requires in uploaded JWKs). Valid for 20 years from 1 January
/// of the current year.
fn self_signed_certificate(
    key: &RsaPrivateKey,
    key_id: &str,
    algorithm: JwtAlgorithm,
) -> Result<String, String> {
    use chrono::Datelike as _;

    let pkcs8 = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    let key_pair =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, algorithm.certificate_algorithm())
            .map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        rcgen::DnType::CommonName,
        format!("Switchboard customer identity {key_id}"),
    );
    params.distinguished_name = name;
    let year = chrono::Utc::now().year();
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 20, 1, 1);
    let cert = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    Ok(STANDARD.encode(cert.der()))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    fn key() -> &'static GeneratedKey {
        static KEY: OnceLock<GeneratedKey> = OnceLock::new();
        KEY.get_or_init(|| keygen("test-kid", JwtAlgorithm::Rs256, 2048).unwrap())
    }

    fn verify(
        token: &str,
        jwk: &Value,
        alg: jsonwebtoken::Algorithm,
    ) -> serde_json::Map<String, Value> {
        let n = jwk["n"].as_str().unwrap();
        let e = jwk["e"].as_str().unwrap();
        let mut validation = Validation::new(alg);
        validation.validate_aud = false;
        validation.set_issuer(&["https://switchboard.example/identity"]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &DecodingKey::from_rsa_components(n, e).unwrap(),
            &validation,
        )
        .unwrap();
        data.claims
    }

    #[test]
    fn signs_and_verifies_with_rs256_and_rs512_without_aud() {
        let now = chrono::Utc::now().timestamp();
        for alg in [JwtAlgorithm::Rs256, JwtAlgorithm::Rs512] {
            let signer = JwtSigner::from_pem(
                &key().private_pem,
                "test-kid",
                "https://switchboard.example/identity",
                alg,
            )
            .unwrap();
            let token = signer.sign("+14155550100", now, 300).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, alg.jsonwebtoken());
            assert_eq!(header.kid.as_deref(), Some("test-kid"));
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            let claims = verify(&token, &signer.public_jwk(), alg.jsonwebtoken());
            assert_eq!(claims["sub"], "+14155550100");
            assert_eq!(claims["iss"], "https://switchboard.example/identity");
            assert_eq!(claims["iat"], now);
            assert_eq!(claims["exp"], now + 300);
            assert!(
                !claims.contains_key("aud"),
                "Salesforce's utility sets no aud"
            );
            assert_eq!(signer.public_jwk()["alg"], alg.as_str());
        }
    }

    #[test]
    fn pkcs1_pem_is_accepted_too() {
        let key = RsaPrivateKey::from_pkcs8_pem(&key().private_pem).unwrap();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let signer = JwtSigner::from_pem(&pkcs1, "k", "iss", JwtAlgorithm::Rs256).unwrap();
        assert_eq!(signer.public_jwk()["n"], key_public_n());
    }

    fn key_public_n() -> Value {
        key().jwk["n"].clone()
    }

    #[test]
    fn jwk_has_what_salesforce_requires() {
        let jwk = &key().jwk;
        for field in ["kty", "kid", "alg", "use", "n", "e"] {
            assert!(jwk[field].is_string(), "{field} missing in {jwk}");
        }
        assert_eq!(jwk["e"], "AQAB");
        let x5c = jwk["x5c"][0].as_str().expect("x5c present");
        let der = STANDARD.decode(x5c).unwrap();
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        assert!(key().public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(key().private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn short_keys_are_refused() {
        let small = RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        let err = JwtSigner::from_pem(&pem, "k", "iss", JwtAlgorithm::Rs256).unwrap_err();
        assert!(err.to_string().starts_with("jwt_private_key: "), "{err}");
        assert!(err.to_string().contains("1024 bits"), "{err}");
        let err = keygen("k", JwtAlgorithm::Rs256, 1024).unwrap_err();
        assert!(err.to_string().starts_with("bits: "), "{err}");
    }

    #[test]
    fn bad_pem_names_the_field() {
        for bad in [
            "",
            "hello",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            let err = JwtSigner::from_pem(bad, "k", "iss", JwtAlgorithm::Rs256).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("jwt_private_key: not a PEM RSA private key (PKCS#1 or PKCS#8)"),
                "{err}"
            );
        }
        let err =
            JwtSigner::from_pem(&key().public_pem, "k", "iss", JwtAlgorithm::Rs256).unwrap_err();
        assert!(err.to_string().contains("public half"), "{err}");
        let err =
            JwtSigner::from_pem(&key().private_pem, " ", "iss", JwtAlgorithm::Rs256).unwrap_err();
        assert!(err.to_string().starts_with("jwt_key_id: "), "{err}");
        let err =
            JwtSigner::from_pem(&key().private_pem, "k", "", JwtAlgorithm::Rs256).unwrap_err();
        assert!(err.to_string().starts_with("jwt_issuer: "), "{err}");
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!(
            "RS256".parse::<JwtAlgorithm>().unwrap(),
            JwtAlgorithm::Rs256
        );
        assert_eq!(
            " rs512 ".parse::<JwtAlgorithm>().unwrap(),
            JwtAlgorithm::Rs512
        );
        assert!("HS256"
            .parse::<JwtAlgorithm>()
            .unwrap_err()
            .to_string()
            .starts_with("jwt_algorithm: "));
    }

    #[test]
    fn unverified_claims_read_exp_and_refuse_non_jwts() {
        let signer =
            JwtSigner::from_pem(&key().private_pem, "k", "iss", JwtAlgorithm::Rs256).unwrap();
        let token = signer.sign("me", 100, 50).unwrap();
        assert_eq!(unverified_claims(&token).unwrap()["exp"], 150);
        assert!(unverified_claims("opaque-token").is_none());
        assert!(unverified_claims("a.b.c.d").is_none());
        assert!(unverified_claims("a.!!!.c").is_none());
    }

    #[test]
    fn debug_does_not_show_the_private_key() {
        let signer =
            JwtSigner::from_pem(&key().private_pem, "k", "iss", JwtAlgorithm::Rs256).unwrap();
        assert!(!format!("{signer:?}").contains("PRIVATE"));
        assert!(!format!("{:?}", key()).contains("PRIVATE"));
    }
}
