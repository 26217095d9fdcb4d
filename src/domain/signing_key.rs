//! Ed25519 signing keys for access tokens. The seed is secret: `Debug` never prints it and it
//! is zeroed when dropped. In the database it is sealed (XChaCha20-Poly1305, bound to its
//! kid) under a key derived from the operator's `RELAY_SIGNING_KEY_SECRET` when one is set;
//! without one it is stored as it is, and whoever can read the database can sign tokens.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub struct SigningKey {
    /// RFC 7638 JWK thumbprint of the public key.
    pub kid: String,
    seed: Zeroizing<[u8; 32]>,
    pub created_at: DateTime<Utc>,
    /// When a newer key replaced it (it then only verifies).
    pub retired_at: Option<DateTime<Utc>>,
}

impl SigningKey {
    pub fn generate(now: DateTime<Utc>) -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())?;
        Ok(SigningKey::from_seed(seed, now, None))
    }

    /// The key as the store keeps it: sealed with `seal`, or in plain text without one.
    pub fn seal(&self, seal: Option<&SeedSeal>) -> Result<StoredSigningKey, getrandom::Error> {
        let stored_seed = match seal {
            Some(seal) => seal.seal(&self.kid, &self.seed)?,
            None => Zeroizing::new(self.seed.to_vec()),
        };
        Ok(StoredSigningKey {
            kid: self.kid.clone(),
            stored_seed,
            created_at: self.created_at,
            retired_at: self.retired_at,
        })
    }

    fn from_seed(
        seed: Zeroizing<[u8; 32]>,
        created_at: DateTime<Utc>,
        retired_at: Option<DateTime<Utc>>,
    ) -> Self {
        let x = public_x(&seed);
        // RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        SigningKey {
            kid,
            seed,
            created_at,
            retired_at,
        }
    }

    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key, base64url: the JWK `x` member.
    pub fn public_x(&self) -> String {
        public_x(&self.seed)
    }

    /// Whether tokens it signed may still be valid: it is current, or it was retired less
    /// than `token_lifetime` ago.
    pub fn still_verifies(&self, now: DateTime<Utc>, token_lifetime: Duration) -> bool {
        self.retired_at
            .is_none_or(|retired| retired + token_lifetime > now)
    }
}

/// A signing key as the store keeps it: its seed sealed, or plain (32 bytes) when no secret
/// was set.
pub struct StoredSigningKey {
    pub kid: String,
    stored_seed: Zeroizing<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// Why a stored key cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("it is sealed: set RELAY_SIGNING_KEY_SECRET to the secret it was sealed with")]
    SecretNeeded,
    #[error("RELAY_SIGNING_KEY_SECRET does not open it: it was sealed with another secret")]
    WrongSecret,
    #[error("it is damaged: its seed does not match its kid")]
    Damaged,
}

impl StoredSigningKey {
    pub fn from_row(
        kid: String,
        stored_seed: Vec<u8>,
        created_at: DateTime<Utc>,
        retired_at: Option<DateTime<Utc>>,
    ) -> Self {
        StoredSigningKey {
            kid,
            stored_seed: Zeroizing::new(stored_seed),
            created_at,
            retired_at,
        }
    }

    /// The bytes for the store's `private_key` column.
    pub fn stored_seed(&self) -> &[u8] {
        &self.stored_seed
    }

    pub fn is_sealed(&self) -> bool {
        self.stored_seed.starts_with(SEALED_MAGIC)
    }

    /// The usable key. A plain seed opens with or without `seal` (it is sealed on the next
    /// write back); a sealed one only with the secret it was sealed with.
    pub fn open(&self, seal: Option<&SeedSeal>) -> Result<SigningKey, OpenError> {
        let seed: Zeroizing<[u8; 32]> = if self.is_sealed() {
            let seal = seal.ok_or(OpenError::SecretNeeded)?;
            seal.open(&self.kid, &self.stored_seed)?
        } else {
            let seed: [u8; 32] = self.stored_seed[..]
                .try_into()
                .map_err(|_| OpenError::Damaged)?;
            Zeroizing::new(seed)
        };
        let key = SigningKey::from_seed(seed, self.created_at, self.retired_at);
        if key.kid != self.kid {
            return Err(OpenError::Damaged);
        }
        Ok(key)
    }
}

impl fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("sealed", &self.is_sealed())
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Marks a sealed seed: `EGS1` + a 24-byte nonce + the seed encrypted with its 16-byte tag.
const SEALED_MAGIC: &[u8] = b"EGS1";
const NONCE_LEN: usize = 24;

/// Seals and opens seeds with a key derived from the operator's secret (HKDF-SHA256, RFC
/// 5869), each bound to its kid as associated data so a sealed seed cannot be moved to
/// another row.
pub struct SeedSeal {
    cipher: XChaCha20Poly1305,
}

impl SeedSeal {
    pub fn from_secret(secret: &str) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"egregore-relay"), secret.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: this cannot fail.
        let _ = hkdf.expand(b"signing-key seed v1", key.as_mut());
        SeedSeal {
            cipher: XChaCha20Poly1305::new(key.as_ref().into()),
        }
    }

    fn seal(&self, kid: &str, seed: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, getrandom::Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)?;
        let payload = Payload {
            msg: seed,
            aad: kid.as_bytes(),
        };
        // Encryption into a Vec fails only on allocation, which aborts anyway.
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut sealed = Zeroizing::new(Vec::with_capacity(4 + NONCE_LEN + ciphertext.len()));
        sealed.extend_from_slice(SEALED_MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<[u8; 32]>, OpenError> {
        let body = &sealed[SEALED_MAGIC.len()..];
        if body.len() <= NONCE_LEN {
            return Err(OpenError::Damaged);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: kid.as_bytes(),
        };
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(XNonce::from_slice(nonce), payload)
                .map_err(|_| OpenError::WrongSecret)?,
        );
        let seed: [u8; 32] = plain[..].try_into().map_err(|_| OpenError::Damaged)?;
        Ok(Zeroizing::new(seed))
    }
}

impl fmt::Debug for SeedSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeedSeal(<redacted>)")
    }
}

fn public_x(seed: &[u8; 32]) -> String {
    let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
    URL_SAFE_NO_PAD.encode(public.as_bytes())
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("seed", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.1 key; its thumbprint is given in appendix A.3.
        let seed = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let seed: [u8; 32] = seed.try_into().unwrap();
        let key = SigningKey::from_seed(Zeroizing::new(seed), Utc::now(), None);
        assert_eq!(
            key.public_x(),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(key.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn a_retired_key_verifies_until_its_tokens_have_expired() {
        let now = Utc::now();
        let mut key = SigningKey::generate(now).unwrap();
        assert!(key.still_verifies(now, Duration::seconds(900)));
        key.retired_at = Some(now);
        assert!(key.still_verifies(now + Duration::seconds(899), Duration::seconds(900)));
        assert!(!key.still_verifies(now + Duration::seconds(900), Duration::seconds(900)));
    }

    #[test]
    fn a_sealed_seed_opens_only_with_its_secret_and_its_kid() {
        let key = SigningKey::generate(Utc::now()).unwrap();
        let seal = SeedSeal::from_secret("an operator secret of at least 32 characters");
        let stored = key.seal(Some(&seal)).unwrap();
        assert!(stored.is_sealed());
        assert!(
            !stored
                .stored_seed()
                .windows(32)
                .any(|w| w == key.seed().as_slice())
        );
        assert_eq!(stored.open(Some(&seal)).unwrap().seed(), key.seed());
        assert_eq!(stored.open(None).unwrap_err(), OpenError::SecretNeeded);
        let other = SeedSeal::from_secret("another operator secret, also 32 characters");
        assert_eq!(
            stored.open(Some(&other)).unwrap_err(),
            OpenError::WrongSecret
        );
        // Moved to another row, it no longer opens.
        let moved = StoredSigningKey::from_row(
            "another-kid".into(),
            stored.stored_seed().to_vec(),
            key.created_at,
            None,
        );
        assert_eq!(moved.open(Some(&seal)).unwrap_err(), OpenError::WrongSecret);
    }

    #[test]
    fn a_plain_seed_opens_with_or_without_a_secret_and_is_checked_against_its_kid() {
        let key = SigningKey::generate(Utc::now()).unwrap();
        let stored = key.seal(None).unwrap();
        assert!(!stored.is_sealed());
        let seal = SeedSeal::from_secret("an operator secret of at least 32 characters");
        assert_eq!(stored.open(None).unwrap().kid, key.kid);
        assert_eq!(stored.open(Some(&seal)).unwrap().kid, key.kid);
        let mut tampered = stored.stored_seed().to_vec();
        tampered[0] ^= 1;
        let tampered = StoredSigningKey::from_row(key.kid.clone(), tampered, key.created_at, None);
        assert_eq!(tampered.open(None).unwrap_err(), OpenError::Damaged);
        assert!(!format!("{stored:?}").contains(&format!("{:?}", key.seed())));
    }

    #[test]
    fn debug_hides_the_seed() {
        let key = SigningKey::generate(Utc::now()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>") && !shown.contains(&format!("{:?}", key.seed())));
    }
}
