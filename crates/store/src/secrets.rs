//! Encryption of secrets at rest (trunk passwords, the Salesforce private key,
//! provider API keys).
//!
//! XChaCha20-Poly1305 with a 256-bit key that never enters the database: it
//! comes from `SWITCHBOARD_SECRET_KEY` (base64) or from a key file created at
//! first start with mode 0600. Stored form: `v1:` + base64(nonce ‖ ciphertext).

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("secret key: {reason}; give 32 random bytes in base64 (for example `openssl rand -base64 32`)")]
    BadKey { reason: String },
    #[error("secret key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a stored secret cannot be decrypted: it was written with another secret key (check SWITCHBOARD_SECRET_KEY or the key file)")]
    Decrypt,
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

impl SecretBox {
    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// A box with a random key, for tests and throwaway stores.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self::from_key(key)
    }

    /// Parses a base64 key (as in `SWITCHBOARD_SECRET_KEY`).
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| SecretError::BadKey {
                reason: format!("not base64 ({e})"),
            })?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| SecretError::BadKey {
            reason: format!("{} bytes long, expected 32", b.len()),
        })?;
        Ok(Self::from_key(key))
    }

    /// Loads the key file at `path`, creating it (mode 0600) with a fresh
    /// random key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let io = |source| SecretError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                write_private(path, STANDARD.encode(key).as_bytes()).map_err(io)?;
                Ok(Self::from_key(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and a 24-byte nonce cannot fail for
        // inputs under 256 GiB; an empty ciphertext would fail to open later.
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("v1:{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let body = sealed.strip_prefix("v1:").ok_or(SecretError::Decrypt)?;
        let bytes = STANDARD.decode(body).map_err(|_| SecretError::Decrypt)?;
        if bytes.len() < 24 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ct) = bytes.split_at(24);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(pt).map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key_fails() {
        let a = SecretBox::ephemeral();
        let sealed = a.seal("hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(a.open(&sealed).expect("same key opens"), "hunter2");
        let b = SecretBox::ephemeral();
        assert!(matches!(b.open(&sealed), Err(SecretError::Decrypt)));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let a = SecretBox::load_or_create(&path).expect("created");
        let sealed = a.seal("x");
        let b = SecretBox::load_or_create(&path).expect("loaded");
        assert_eq!(b.open(&sealed).expect("same key"), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_base64_key_says_what_to_give() {
        let err = SecretBox::from_base64("short").unwrap_err();
        assert!(err.to_string().contains("32 random bytes"), "{err}");
    }
}
