//! The token-signing keys. `KeyRing` holds them in memory: the current key signs, every key
//! whose tokens may still be valid verifies, and the JWKS publishes their public halves; a
//! token whose signature checked out is remembered by its SHA-256 for as long as no key has
//! left the ring since (a key deleted from the database ends its tokens at once).
//! `SigningKeys` keeps them in the store (shared by every node), sealed when a secret is set:
//! loading, rotating, listing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::Signer as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::domain::Error;
use crate::domain::access_token::{self, Claims, Rejection};
use crate::domain::audit::{Actor, NewAuditEvent};
use crate::domain::signing_key::{OpenError, SeedSeal, SigningKey, StoredSigningKey};
use crate::storage::Store;

/// The `typ` header of an access token (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";

pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    /// How many loads have dropped a key that was loaded before: what a token verified
    /// earlier was checked against may be gone.
    removals: AtomicU64,
    /// SHA-256 of a token whose signature checked out → its claims, and `removals` when it
    /// was checked.
    verified: quick_cache::sync::Cache<[u8; 32], (Arc<Claims>, u64)>,
    /// How long after its retirement a key still verifies: the longest token lifetime.
    token_lifetime: Duration,
}

#[derive(Default)]
struct KeySet {
    signer: Option<Signer>,
    verifiers: HashMap<String, DecodingKey>,
    jwks: Value,
    /// `(kid, retired)` of every key loaded, to tell whether a reload changes anything.
    fingerprint: Vec<(String, bool)>,
}

/// The current key, ready to sign: the key expanded once, and its JWS header already encoded.
/// (jsonwebtoken rebuilds the key from PKCS#8 on every `encode`, which doubles the cost of a
/// signature; the compact serialization, RFC 7515 §7.1, is three base64url parts.)
struct Signer {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoded_header: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no signing key is loaded")]
    NoKey,
    #[error("could not encode the claims")]
    Claims(#[from] serde_json::Error),
}

impl KeyRing {
    pub fn new(token_lifetime: Duration) -> Self {
        KeyRing {
            current: RwLock::new(Arc::new(KeySet::default())),
            removals: AtomicU64::new(0),
            verified: quick_cache::sync::Cache::new(VERIFIED_CAPACITY),
            token_lifetime,
        }
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs `keys` (newest first, as stored) if they differ from what is loaded; returns
    /// whether anything changed.
    pub fn load(&self, keys: &[SigningKey], now: DateTime<Utc>) -> bool {
        let live: Vec<&SigningKey> = keys
            .iter()
            .filter(|k| k.still_verifies(now, self.token_lifetime))
            .collect();
        let fingerprint: Vec<(String, bool)> = live
            .iter()
            .map(|k| (k.kid.clone(), k.retired_at.is_some()))
            .collect();
        let before = self.snapshot();
        if fingerprint == before.fingerprint {
            return false;
        }
        let removed = before
            .fingerprint
            .iter()
            .any(|(kid, _)| !fingerprint.iter().any(|(k, _)| k == kid));
        let signer = live.iter().find(|k| k.retired_at.is_none()).map(|k| {
            let header = json!({"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": k.kid});
            Signer {
                kid: k.kid.clone(),
                key: ed25519_dalek::SigningKey::from_bytes(k.seed()),
                encoded_header: URL_SAFE_NO_PAD.encode(header.to_string()),
            }
        });
        let verifiers = live
            .iter()
            .filter_map(|k| {
                DecodingKey::from_ed_components(&k.public_x())
                    .ok()
                    .map(|d| (k.kid.clone(), d))
            })
            .collect();
        let jwks = json!({
            "keys": live.iter().map(|k| json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": k.public_x(),
                "kid": k.kid,
                "alg": "EdDSA",
                "use": "sig",
            })).collect::<Vec<_>>()
        });
        let set = KeySet {
            signer,
            verifiers,
            jwks,
            fingerprint,
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        if removed {
            self.removals.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Moves on each time a key leaves the ring (see `removals`).
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// A token's claims if its header and signature check out (see `check_signature`); a
    /// token seen before is answered from memory while its key is still in the ring.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, Rejection> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Read before the check: a key removed while it runs makes the entry stale.
        let removals = self.removals();
        if let Some((claims, checked_at)) = self.verified.get(&digest) {
            if checked_at == removals {
                return Ok(claims);
            }
            self.verified.remove(&digest);
        }
        let claims = Arc::new(self.check_signature(token)?);
        self.verified.insert(digest, (claims.clone(), removals));
        Ok(claims)
    }

    /// Signs `claims` with the current key as an RFC 9068 access token.
    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let set = self.snapshot();
        let signer = set.signer.as_ref().ok_or(SignError::NoKey)?;
        let mut token = signer.encoded_header.clone();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims)?, &mut token);
        let signature = signer.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    /// Checks a token's header and signature and returns its claims. Only EdDSA, only
    /// `at+jwt`, only a known `kid`: `alg: none`, HMAC signed with a public key and the like
    /// are refused before any signature check. Claims are checked by the caller.
    pub fn check_signature(&self, token: &str) -> Result<Claims, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if header.alg != Algorithm::EdDSA
            || !header.typ.as_deref().is_some_and(is_access_token_type)
        {
            return Err(Rejection::WrongAlgorithm);
        }
        let set = self.snapshot();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| set.verifiers.get(kid))
            .ok_or(Rejection::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Times, issuer and audience are checked by `domain::access_token` with the caller's
        // clock; here only the signature and the shape.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => Rejection::BadSignature,
                    _ => Rejection::Malformed,
                }
            })
    }

    /// The JSON Web Key Set (RFC 7517) of every key that may have signed a live token.
    pub fn jwks(&self) -> Value {
        self.snapshot().jwks.clone()
    }

    pub fn current_kid(&self) -> Option<String> {
        self.snapshot().signer.as_ref().map(|s| s.kid.clone())
    }
}

const VERIFIED_CAPACITY: usize = 100_000;

/// Why the signing keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("could not read or write the signing keys")]
    Store(#[from] Error),
    #[error("signing key {kid} cannot be used: {reason}")]
    Open { kid: String, reason: OpenError },
}

/// The signing keys in the store: sealed with `seal` when the operator set a secret.
pub struct SigningKeys {
    store: Arc<dyn Store>,
    seal: Option<SeedSeal>,
}

impl SigningKeys {
    pub fn new(store: Arc<dyn Store>, seal: Option<SeedSeal>) -> Self {
        SigningKeys { store, seal }
    }

    /// Loads the keys into `ring`, creating the first one on a fresh database. With a seal,
    /// keys stored in plain text (from before the secret was set) are sealed.
    pub async fn load_into(&self, ring: &KeyRing, now: DateTime<Utc>) -> Result<(), KeyLoadError> {
        let mut stored = self.store.signing_keys().await.map_err(Error::from)?;
        if !stored.iter().any(|k| k.retired_at.is_none()) {
            let first = SigningKey::generate(now).map_err(Error::from)?;
            let first = first.seal(self.seal.as_ref()).map_err(Error::from)?;
            self.store
                .insert_first_signing_key(&first)
                .await
                .map_err(Error::from)?;
            stored = self.store.signing_keys().await.map_err(Error::from)?;
        }
        let mut keys = Vec::with_capacity(stored.len());
        for k in &stored {
            let key = k
                .open(self.seal.as_ref())
                .map_err(|reason| KeyLoadError::Open {
                    kid: k.kid.clone(),
                    reason,
                })?;
            if let (Some(seal), false) = (&self.seal, k.is_sealed()) {
                let sealed = key.seal(Some(seal)).map_err(Error::from)?;
                self.store
                    .reseal_signing_key(&sealed)
                    .await
                    .map_err(Error::from)?;
                tracing::info!(kid = %k.kid, "signing key sealed with RELAY_SIGNING_KEY_SECRET");
            }
            keys.push(key);
        }
        if ring.load(&keys, now) {
            tracing::info!(kid = ?ring.current_kid(), "signing keys loaded");
        }
        Ok(())
    }

    /// Makes a new key current (sealed like the others); the previous one keeps verifying
    /// until its tokens have expired. Refused without the secret when the keys are sealed.
    pub async fn rotate(&self, actor: &Actor, now: DateTime<Utc>) -> Result<SigningKey, Error> {
        if self.seal.is_none() && self.list().await?.iter().any(|k| k.is_sealed()) {
            return Err(Error::invalid(
                "",
                "the signing keys are sealed: set RELAY_SIGNING_KEY_SECRET to the servers' secret",
            ));
        }
        let key = SigningKey::generate(now)?;
        let audit = NewAuditEvent::signing_key_rotated(now, actor, &key.kid);
        self.store
            .rotate_signing_key(
                &key.seal(self.seal.as_ref())?,
                forget_retired_keys_before(now),
                &audit,
            )
            .await?;
        Ok(key)
    }

    /// Every stored key, newest first (their seeds stay sealed).
    pub async fn list(&self) -> Result<Vec<StoredSigningKey>, Error> {
        Ok(self.store.signing_keys().await?)
    }
}

/// Keys are retired, never deleted, while tokens they signed may live; forget them a day
/// after the longest possible token lifetime.
fn forget_retired_keys_before(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::seconds(i64::from(access_token::MAX_TTL_SECONDS)) - Duration::days(1)
}

/// RFC 9068 §4: `at+jwt`, also written with its `application/` prefix.
fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "i".into(),
            sub: "client_1".into(),
            client_id: "client_1".into(),
            aud: "a".into(),
            iat: 1,
            exp: 2,
            nbf: None,
            jti: "j".into(),
            scope: "chat".into(),
            generation: 0,
        }
    }

    #[test]
    fn tokens_signed_here_verify_with_jsonwebtoken() {
        let ring = KeyRing::new(Duration::seconds(900));
        let now = chrono::Utc::now();
        ring.load(&[SigningKey::generate(now).unwrap()], now);
        let token = ring.sign(&claims()).unwrap();
        assert_eq!(*ring.verify(&token).unwrap(), claims());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid, ring.current_kid());
    }

    #[test]
    fn a_key_retired_longer_than_a_token_lives_no_longer_verifies() {
        let ring = KeyRing::new(Duration::seconds(900));
        let t0 = chrono::Utc::now();
        let mut old = SigningKey::generate(t0).unwrap();
        ring.load(std::slice::from_ref(&old), t0);
        let token = ring.sign(&claims()).unwrap();
        old.retired_at = Some(t0);
        let new = SigningKey::generate(t0).unwrap();
        let old_kid = old.kid.clone();
        let keys = [new, old];
        ring.load(&keys, t0 + Duration::seconds(899));
        assert!(ring.verify(&token).is_ok());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(ring.removals(), 0);
        ring.load(&keys, t0 + Duration::seconds(900));
        assert_eq!(ring.verify(&token), Err(Rejection::UnknownKey));
        assert_eq!(ring.removals(), 1);
        assert!(!ring.jwks().to_string().contains(&old_kid));
    }
}
