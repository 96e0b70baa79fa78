//! Secrets a store keeps in its database (access-key secrets, digest
//! signing keys, webhook signing secrets), sealed: AES-256-GCM with a
//! random nonce per value, bound to what the value belongs to (`aad`, e.g.
//! the access key id) so that a ciphertext moved to another row does not
//! open. Stored as `nonce || ciphertext`, or as text by [`SecretKey`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Length of the nonce in front of each sealed value.
pub const NONCE_LEN: usize = 12;

/// Seals and opens values under one 32-byte key.
#[derive(Clone)]
pub struct Sealer(Aes256Gcm);

/// Why a stored value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the sealed value is truncated")]
    Truncated,
    #[error("the sealed value does not authenticate (another key, or another row's)")]
    NotAuthentic,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)))
    }

    /// `plaintext` sealed and bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // AES-GCM refuses only plaintexts of 64 GiB and more.
            .expect("a secret is far below AES-GCM's limit");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// What [`Sealer::seal`] sealed with the same key and `aad`.
    pub fn open(&self, stored: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        if stored.len() < NONCE_LEN {
            return Err(SealError::Truncated);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| SealError::NotAuthentic)
    }
}

/// How a value sealed as text begins (anything else is in the clear: a
/// row written before its store sealed).
const SEALED: &str = "aes256gcm:";

/// The store's secret key (`store.secret_key`), derived for one purpose
/// (each store derives its own from the same secret), sealing values as
/// text. Known by a fingerprint, so that a node started with another key
/// can refuse at once instead of failing later.
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
    /// The key of `secret` for `purpose` (e.g. `cts-transfer digest signing keys`).
    pub fn derive(secret: &[u8; 32], purpose: &str) -> SecretKey {
        let derive = |label: &str| {
            let mut h = Sha256::new();
            h.update(label.as_bytes());
            h.update(b"\0");
            h.update(secret);
            h.finalize()
        };
        let key = derive(purpose);
        let fingerprint = derive(&format!("{purpose} fingerprint"));
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
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let sealed = self.sealer.seal(plaintext, aad);
        format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        )
    }

    /// What [`SecretKey::seal`] sealed with the same `aad`.
    pub fn open(&self, stored: &str, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let bytes = stored
            .strip_prefix(SEALED)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or(SealError::NotAuthentic)?;
        self.sealer.open(&bytes, aad)
    }

    /// Whether a stored value is sealed (else it is in the clear).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_aad() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal(b"secret", b"AK1");
        assert_eq!(sealed.len(), NONCE_LEN + 6 + 16);
        assert_ne!(sealed, sealer.seal(b"secret", b"AK1"), "a nonce per value");
        assert_eq!(sealer.open(&sealed, b"AK1").unwrap(), b"secret");
        assert_eq!(sealer.open(&sealed, b"AK2"), Err(SealError::NotAuthentic));
        assert_eq!(sealer.open(&sealed[..5], b"AK1"), Err(SealError::Truncated));
        let other = Sealer::new(&[8; 32]);
        assert_eq!(other.open(&sealed, b"AK1"), Err(SealError::NotAuthentic));
    }

    #[test]
    fn text_sealed_values_open_only_with_their_key_purpose_and_owner() {
        let key = SecretKey::derive(&[7; 32], "a");
        let sealed = key.seal(b"private", b"fp1");
        assert!(SecretKey::is_sealed(&sealed));
        assert!(!sealed.contains("private"));
        assert_ne!(sealed, key.seal(b"private", b"fp1"), "nonce");
        assert_eq!(key.open(&sealed, b"fp1").unwrap(), b"private");
        assert!(key.open(&sealed, b"fp2").is_err(), "bound to its owner");
        assert!(SecretKey::derive(&[8; 32], "a")
            .open(&sealed, b"fp1")
            .is_err());
        assert!(SecretKey::derive(&[7; 32], "b")
            .open(&sealed, b"fp1")
            .is_err());
        assert_ne!(
            key.fingerprint(),
            SecretKey::derive(&[8; 32], "a").fingerprint()
        );
        assert!(key.open("-----BEGIN PRIVATE KEY-----", b"fp1").is_err());
        assert!(!SecretKey::is_sealed("-----BEGIN PRIVATE KEY-----"));
    }
}
