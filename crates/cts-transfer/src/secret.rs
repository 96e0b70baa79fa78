//! The store's secret key (`store.secret_key`): what seals the private
//! halves of the digest signing keys where nodes share them (PostgreSQL).
//! AES-256-GCM under a key derived for this use alone (the identity store
//! derives its own from the same secret), a random nonce per value; the
//! key is known by its fingerprint, stored beside what it sealed, so that a
//! node started with another key refuses at once instead of failing to
//! sign later.

use base64::Engine as _;
use cts_db::Sealer;
use sha2::{Digest, Sha256};

use crate::TransferError;

/// How a sealed value begins; a PEM (`-----BEGIN`) is a key stored in the
/// clear (an embedded node's `transfer.db` from before).
const SEALED: &str = "aes256gcm:";

/// The 32-byte key of `store.secret_key`.
#[derive(Clone)]
pub struct SecretKey {
    sealer: Sealer,
    fingerprint: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.fingerprint)
    }
}

impl SecretKey {
    pub fn new(secret: &[u8; 32]) -> SecretKey {
        let derive = |label: &[u8]| {
            let mut h = Sha256::new();
            h.update(label);
            h.update(secret);
            h.finalize()
        };
        let key = derive(b"cts-transfer digest signing keys\0");
        let fingerprint = derive(b"cts-transfer digest signing keys fingerprint\0");
        SecretKey {
            sealer: Sealer::new(&key.into()),
            fingerprint: fingerprint[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// Names the key without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `plaintext` sealed, bound to `aad` (what it belongs to), as text.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, TransferError> {
        let sealed = self.sealer.seal(plaintext, aad);
        Ok(format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        ))
    }

    /// What [`SecretKey::seal`] sealed with the same `aad`.
    pub(crate) fn open(&self, stored: &str, aad: &[u8]) -> Result<Vec<u8>, TransferError> {
        let bad = || TransferError::Key(format!("the sealed value of {aad:?} cannot be opened"));
        let bytes = stored
            .strip_prefix(SEALED)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(bad)?;
        self.sealer.open(&bytes, aad).map_err(|_| bad())
    }
}

/// Whether a stored value is sealed (else it is in the clear).
pub(crate) fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_owner() {
        let key = SecretKey::new(&[7; 32]);
        let sealed = key.seal(b"private", b"fp1").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("private"));
        assert_ne!(sealed, key.seal(b"private", b"fp1").unwrap(), "nonce");
        assert_eq!(key.open(&sealed, b"fp1").unwrap(), b"private");
        assert!(key.open(&sealed, b"fp2").is_err(), "bound to its owner");
        assert!(SecretKey::new(&[8; 32]).open(&sealed, b"fp1").is_err());
        assert_ne!(key.fingerprint(), SecretKey::new(&[8; 32]).fingerprint());
        assert!(key.open("-----BEGIN PRIVATE KEY-----", b"fp1").is_err());
    }
}
