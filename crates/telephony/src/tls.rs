//! SIP over TLS: checking the configured PEM files up front and turning
//! them into rsipstack's TLS settings.
//!
//! rsipstack does the handshakes (rustls with the ring provider). What we
//! add is the early, worded failure: a certificate that does not parse, a
//! key that does not match it, or a listener without either stops start-up
//! with the file to fix, instead of every TLS connection failing later with
//! a line in the log.

use rsipstack::transport::tls::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::SipTls;
use crate::TelephonyError;

/// What is wrong with the TLS settings, in words (at start-up it becomes
/// [`TelephonyError::Tls`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl From<TlsError> for TelephonyError {
    fn from(e: TlsError) -> Self {
        TelephonyError::Tls(e.0)
    }
}

/// The listener's server config, checked; `None` without a listener.
pub(crate) fn listener_config(tls: &SipTls) -> Result<Option<TlsConfig>, TlsError> {
    let Some(listen) = tls.listen else {
        return Ok(None);
    };
    let (Some(cert_pem), Some(key_pem)) = (&tls.cert_pem, &tls.key_pem) else {
        return Err(TlsError(format!(
            "a TLS listener on {listen} needs a certificate and its private key (PEM)"
        )));
    };
    let certs = certificates(cert_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError(format!(
            "the private key is not a PEM PKCS#8, PKCS#1 or SEC1 key ({e})"
        ))
    })?;
    // Building the server config checks that the key belongs to the leaf.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            TlsError(format!(
                "the certificate and key cannot be used together: {e}"
            ))
        })?;
    Ok(Some(TlsConfig {
        cert: Some(cert_pem.clone()),
        key: Some(key_pem.clone()),
        ..TlsConfig::default()
    }))
}

/// What we trust when connecting to a TLS trunk, checked; `None` when no
/// trust anchors are configured (TLS trunks then cannot be verified).
pub(crate) fn client_config(tls: &SipTls) -> Result<Option<TlsConfig>, TlsError> {
    let Some(ca_pem) = &tls.ca_pem else {
        return Ok(None);
    };
    let certs = certificates(ca_pem, "trusted CA bundle")?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError(
            "the trusted CA bundle holds no usable certificate".into(),
        ));
    }
    Ok(Some(TlsConfig {
        ca_certs: Some(ca_pem.clone()),
        ..TlsConfig::default()
    }))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the {what} is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "the {what} holds no `BEGIN CERTIFICATE` block"
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["sip.example.com".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }

    fn listener(cert: Option<Vec<u8>>, key: Option<Vec<u8>>) -> SipTls {
        SipTls {
            listen: Some("127.0.0.1:5061".parse().expect("addr")),
            cert_pem: cert,
            key_pem: key,
            ca_pem: None,
        }
    }

    #[test]
    fn a_matching_pair_is_accepted() {
        let (cert, key) = pair();
        let config = listener_config(&listener(Some(cert), Some(key))).expect("valid");
        assert!(config.is_some_and(|c| c.cert.is_some() && c.key.is_some()));
        let outbound_only = SipTls::default();
        assert!(listener_config(&outbound_only)
            .expect("no listener")
            .is_none());
    }

    #[test]
    fn bad_files_are_named() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let err = |tls: SipTls| match listener_config(&tls) {
            Err(TlsError(m)) => m,
            other => panic!("expected a TLS error, got {other:?}"),
        };
        assert!(err(listener(None, Some(key.clone()))).contains("needs a certificate"));
        assert!(err(listener(Some(b"hello".to_vec()), Some(key.clone())))
            .contains("no `BEGIN CERTIFICATE`"));
        assert!(err(listener(Some(cert.clone()), Some(b"nope".to_vec()))).contains("private key"));
        assert!(err(listener(Some(cert), Some(other_key))).contains("cannot be used together"));
    }

    #[test]
    fn trust_anchors_must_hold_a_certificate() {
        let (cert, _) = pair();
        let tls = |ca: &[u8]| SipTls {
            ca_pem: Some(ca.to_vec()),
            ..SipTls::default()
        };
        assert!(client_config(&tls(&cert)).expect("valid").is_some());
        assert!(client_config(&SipTls::default()).expect("none").is_none());
        assert!(matches!(
            client_config(&tls(b"")),
            Err(TlsError(m)) if m.contains("no `BEGIN CERTIFICATE`")
        ));
    }
}
