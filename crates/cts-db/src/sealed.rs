//! Secrets a store keeps in its database (access-key secrets, digest
//! signing keys), sealed: AES-256-GCM with a random nonce per value, bound
//! to what the value belongs to (`aad`, e.g. the access key id) so that a
//! ciphertext moved to another row does not open. Stored as
//! `nonce || ciphertext`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

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
}
