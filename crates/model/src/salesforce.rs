//! The Salesforce MIAW connection settings and their validation.
//!
//! These are the values an admin copies from the org: the SCRT URL and org id
//! from the Custom Client deployment's Code Snippet, the deployment's API
//! name, and — for authenticated identities — the key id, issuer and private
//! key registered under Enhanced Chat User Verification. The private key is
//! not part of this type: it is write-only and stored sealed.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ModelError, RoutingAttributeNames};

/// Stored (non-secret) MIAW settings. Empty strings mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MiawSettings {
    /// `https://<domain>.my.salesforce-scrt.com`.
    pub scrt_url: String,
    /// The 15- or 18-character org id, beginning `00D`.
    pub org_id: String,
    /// API name of the Embedded Service deployment (Custom Client).
    pub deployment_name: String,
    /// Key id (`kid`) of the key registered in the User Verification keyset.
    pub jwt_key_id: String,
    /// The keyset's "JSON web key issuer" (`iss`).
    pub jwt_issuer: String,
    /// `RS256` or `RS512`.
    pub jwt_algorithm: String,
    /// Channel Variable Names of the hidden pre-chat fields.
    pub routing_attributes: RoutingAttributeNames,
}

impl MiawSettings {
    /// True when no connection field is set: handoffs go to the built-in sandbox.
    pub fn is_blank(&self) -> bool {
        self.scrt_url.trim().is_empty()
            && self.org_id.trim().is_empty()
            && self.deployment_name.trim().is_empty()
    }

    /// Every problem, field by field (not just the first), so a form can
    /// mark them all at once.
    pub fn problems(&self) -> Vec<ModelError> {
        let mut out = Vec::new();
        if let Err(e) = validate_scrt_url(&self.scrt_url) {
            out.push(e);
        }
        if let Err(e) = validate_org_id(&self.org_id) {
            out.push(e);
        }
        if let Err(e) = validate_deployment_name(&self.deployment_name) {
            out.push(e);
        }
        let alg = self.jwt_algorithm.trim();
        if !(alg.is_empty() || alg == "RS256" || alg == "RS512") {
            out.push(ModelError::invalid(
                "jwt_algorithm",
                format!("`{alg}` is not RS256 or RS512 (the algorithms Salesforce accepts)"),
            ));
        }
        let id_parts = [
            !self.jwt_key_id.trim().is_empty(),
            !self.jwt_issuer.trim().is_empty(),
        ];
        if id_parts.iter().any(|x| *x) && !id_parts.iter().all(|x| *x) {
            let missing = if id_parts[0] {
                "jwt_issuer"
            } else {
                "jwt_key_id"
            };
            out.push(ModelError::invalid(
                missing,
                "authenticated identities need the key id, the issuer and the private key together",
            ));
        }
        if let Err(e) = self.routing_attributes.validate() {
            out.push(e);
        }
        out
    }
}

pub fn validate_scrt_url(url: &str) -> Result<(), ModelError> {
    let u = url.trim();
    let bad = |why: &str| {
        ModelError::invalid("scrt_url", format!("`{u}` {why}; copy the SCRT URL from the Custom Client deployment's Code Snippet, such as https://acme.my.salesforce-scrt.com"))
    };
    if u.is_empty() {
        return Err(ModelError::invalid("scrt_url", "is required: copy it from the Custom Client deployment's Code Snippet, such as https://acme.my.salesforce-scrt.com"));
    }
    let (scheme, rest) = u.split_once("://").ok_or_else(|| bad("is not a URL"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or_default()
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    if host.is_empty() || u.chars().any(char::is_whitespace) {
        return Err(bad("is not a URL"));
    }
    let loopback = host == "localhost" || host == "::1" || host.starts_with("127.");
    match scheme {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(bad(
            "must use https (plain http is allowed only on loopback, for the sandbox)",
        )),
        _ => Err(bad("must start with https://")),
    }
}

pub fn validate_org_id(id: &str) -> Result<(), ModelError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(ModelError::invalid(
            "org_id",
            "is required: the org id from the Code Snippet, beginning 00D",
        ));
    }
    if !(id.len() == 15 || id.len() == 18)
        || !id.starts_with("00D")
        || !id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ModelError::invalid(
            "org_id",
            format!("`{id}` is not a Salesforce org id: 15 or 18 letters and digits beginning 00D (Setup → Company Information)"),
        ));
    }
    Ok(())
}

pub fn validate_deployment_name(name: &str) -> Result<(), ModelError> {
    let n = name.trim();
    if n.is_empty() {
        return Err(ModelError::invalid(
            "deployment_name",
            "is required: the API name of the Embedded Service deployment",
        ));
    }
    if !n.starts_with(|c: char| c.is_ascii_alphabetic())
        || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || n.len() > 80
    {
        return Err(ModelError::invalid(
            "deployment_name",
            format!("`{n}` is not an API name: letters, digits and underscores, beginning with a letter"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_settings_mean_sandbox_and_partial_ones_name_each_field() {
        assert!(MiawSettings::default().is_blank());
        let partial = MiawSettings {
            org_id: "00Dxx".into(),
            ..Default::default()
        };
        let fields: Vec<_> = partial
            .problems()
            .iter()
            .map(|e| e.field().to_string())
            .collect();
        assert_eq!(fields, ["scrt_url", "org_id", "deployment_name"]);
    }

    #[test]
    fn urls_must_be_https_except_loopback() {
        assert!(validate_scrt_url("https://acme.my.salesforce-scrt.com").is_ok());
        assert!(validate_scrt_url("http://127.0.0.1:8089").is_ok());
        assert!(validate_scrt_url("http://[::1]:8089").is_ok());
        assert!(validate_scrt_url("http://acme.my.salesforce-scrt.com").is_err());
        assert!(validate_scrt_url("acme.my.salesforce-scrt.com")
            .unwrap_err()
            .to_string()
            .contains("not a URL"));
    }

    #[test]
    fn org_ids_begin_00d() {
        assert!(validate_org_id("00D5g000004abcd").is_ok());
        assert!(validate_org_id("00D5g000004abcdEAA").is_ok());
        assert!(validate_org_id("0015g000004abcd").is_err());
        assert!(validate_org_id("00D5g").is_err());
    }
}
