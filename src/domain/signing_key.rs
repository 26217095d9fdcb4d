//! Ed25519 signing keys for access tokens. The seed is secret: `Debug` never prints it and it
//! is zeroed when dropped.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

    /// Rebuilds a stored key; `None` if the stored seed is not 32 bytes.
    pub fn from_stored(
        seed: &[u8],
        created_at: DateTime<Utc>,
        retired_at: Option<DateTime<Utc>>,
    ) -> Option<Self> {
        let seed: [u8; 32] = seed.try_into().ok()?;
        Some(SigningKey::from_seed(
            Zeroizing::new(seed),
            created_at,
            retired_at,
        ))
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
        let key = SigningKey::from_stored(&seed, Utc::now(), None).unwrap();
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
    fn debug_hides_the_seed() {
        let key = SigningKey::generate(Utc::now()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>") && !shown.contains(&format!("{:?}", key.seed())));
    }
}
