//! The RSA key pairs that sign digest files (SHA256withRSA: RSASSA-PKCS1-v1_5
//! with SHA-256), in the formats the rest of the world reads: PKCS#8 PEM for
//! the private key, SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`, Java's
//! `X509EncodedKeySpec`, `openssl pkey -pubin`) for the public key.
//!
//! aws-lc-rs rather than RustCrypto's `rsa` (DESIGN.md): `rsa` has no
//! constant-time private-key operation (RUSTSEC-2023-0071), and a digest is
//! signed with the private key every hour.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{
    KeyPair as _, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use sha2::{Digest as _, Sha256};

/// `digest_signature_algorithm` and `meta-signature-algorithm`.
pub const SIGNATURE_ALGORITHM: &str = "SHA256withRSA";

/// The smallest modulus accepted for signing or verifying.
pub const MIN_RSA_BITS: usize = 2048;

/// Errors of reading or making keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM block: {0}")]
    Pem(String),
    #[error("expected a PEM block {expected:?}, found {found:?}")]
    WrongPemTag {
        expected: &'static str,
        found: String,
    },
    #[error("not an RSA key of at least {MIN_RSA_BITS} bits: {0}")]
    Rejected(String),
    #[error("RSA key generation failed")]
    Generate,
}

/// A digest signing key: RSA private key and the fingerprint of its public
/// half.
pub struct SigningKey {
    pair: KeyPair,
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public.fingerprint)
    }
}

impl SigningKey {
    /// A new RSA-2048 key pair.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        Self::from_pair(pair)
    }

    /// Reads a PKCS#8 PEM private key (`BEGIN PRIVATE KEY`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_contents(pem, "PRIVATE KEY")?;
        let pair = KeyPair::from_pkcs8(&der).map_err(|e| KeyError::Rejected(e.to_string()))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<Self, KeyError> {
        if pair.public_modulus_len() * 8 < MIN_RSA_BITS {
            return Err(KeyError::Rejected(format!(
                "{} bits",
                pair.public_modulus_len() * 8
            )));
        }
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Rejected("public key does not encode".into()))?;
        let public = VerifyingKey::from_spki_der(spki.as_ref().to_vec())?;
        Ok(Self { pair, public })
    }

    /// The private key as PKCS#8 PEM. Secret: store it like a password.
    pub fn to_pkcs8_pem(&self) -> String {
        let der = self
            .pair
            .as_der()
            .expect("a key pair that was loaded encodes again");
        encode_pem("PRIVATE KEY", der.as_ref())
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// SHA-256 hex of the DER SubjectPublicKeyInfo of the public key.
    pub fn fingerprint(&self) -> &str {
        &self.public.fingerprint
    }

    /// The SHA256withRSA signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .expect("the buffer has the modulus length");
        signature
    }
}

/// A public key that checks digest signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    spki_der: Vec<u8>,
    fingerprint: String,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.fingerprint)
    }
}

impl VerifyingKey {
    /// Reads a `BEGIN PUBLIC KEY` PEM block, or the bare base64 of the DER
    /// (how the reference prints CTS's public key).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let der = if text.contains("-----BEGIN") {
            pem_contents(text, "PUBLIC KEY")?
        } else {
            let wrapped = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                text.trim()
            );
            pem_contents(&wrapped, "PUBLIC KEY")?
        };
        Self::from_spki_der(der)
    }

    fn from_spki_der(der: Vec<u8>) -> Result<Self, KeyError> {
        let key = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der)
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        if key.key_size_bits() < MIN_RSA_BITS {
            return Err(KeyError::Rejected(format!("{} bits", key.key_size_bits())));
        }
        let fingerprint = hex::encode(Sha256::digest(&der));
        Ok(Self {
            spki_der: der,
            fingerprint,
        })
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo).
    pub fn to_pem(&self) -> String {
        encode_pem("PUBLIC KEY", &self.spki_der)
    }

    /// SHA-256 hex of the DER SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `signature` is a SHA256withRSA signature of `message` by this
    /// key's private half.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.spki_der)
            .verify(message, signature)
            .is_ok()
    }
}

fn pem_contents(text: &str, tag: &'static str) -> Result<Vec<u8>, KeyError> {
    let block = pem::parse(text.trim()).map_err(|e| KeyError::Pem(e.to_string()))?;
    if block.tag() != tag {
        return Err(KeyError::WrongPemTag {
            expected: tag,
            found: block.tag().to_string(),
        });
    }
    Ok(block.into_contents())
}

fn encode_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_export_import_sign_verify() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_eq!(key.fingerprint().len(), 64);

        let public_pem = key.verifying_key().to_pem();
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let public = VerifyingKey::from_pem(&public_pem).unwrap();
        assert_eq!(public.fingerprint(), key.fingerprint());
        let bare: String = public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(VerifyingKey::from_pem(&bare).unwrap(), public);

        let signature = key.sign(b"message");
        assert_eq!(signature.len(), 256);
        assert!(public.verify(b"message", &signature));
        assert!(!public.verify(b"messagE", &signature));
        let other = SigningKey::generate().unwrap();
        assert!(!other.verifying_key().verify(b"message", &signature));
        assert!(!format!("{key:?}").contains("PRIVATE"));

        assert!(matches!(
            VerifyingKey::from_pem(&pem),
            Err(KeyError::WrongPemTag { .. })
        ));
        assert!(SigningKey::from_pkcs8_pem("not pem").is_err());
    }

    #[test]
    fn the_reference_public_key_reads() {
        // CTS's public key as verifying_trace_file_integrity.rst prints it.
        let reference = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAsjQDkl8COPRhOCvm7ZI8sYZ20ojl+ay/gwRSk9q0gkY3pP0RrAhSsEzgYdYjaMCqixkmbpt4AH9AROJU4drnoCAZSMqRxgv0bGC9kVd4q95l4zibswAsksjuNQo/XoJjBl+rRAqCa+1uetgVU4k4Yx8RryYxYx/tImvMe/O4mGAIaTf+rsqt3VXR1QIj5lYR/nx41BEgC/Kb1elYAfDaaab8WS5INRprj7qdu6oAo4Ug47WqbecvEtG3JRpj5+oqLyW41Fvse3osC0h5DQdxTt4x00/rVZ+gH7Kua00y7gC8YOxFVpYbfn/oW61PUDeHG/N9hUjOrIgDDJpD2YbCIQIDAQAB";
        let key = VerifyingKey::from_pem(reference).unwrap();
        assert_eq!(key.fingerprint().len(), 64);
    }
}
