//! The token-signing keys in memory: the current key signs, every key whose tokens may still be
//! valid verifies, and the JWKS publishes their public halves. Loaded from the store (shared by
//! every node) and reloaded when it changes there.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::domain::access_token::{Claims, Rejection};
use crate::domain::signing_key::SigningKey;

/// The `typ` header of an access token (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";

pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    /// How long after its retirement a key still verifies: the longest token lifetime.
    token_lifetime: Duration,
}

#[derive(Default)]
struct KeySet {
    signer: Option<(String, EncodingKey)>,
    verifiers: HashMap<String, DecodingKey>,
    jwks: Value,
    /// `(kid, retired)` of every key loaded, to tell whether a reload changes anything.
    fingerprint: Vec<(String, bool)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no signing key is loaded")]
    NoKey,
    #[error("could not sign the token")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

impl KeyRing {
    pub fn new(token_lifetime: Duration) -> Self {
        KeyRing {
            current: RwLock::new(Arc::new(KeySet::default())),
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
        if fingerprint == self.snapshot().fingerprint {
            return false;
        }
        let signer = live.iter().find(|k| k.retired_at.is_none()).and_then(|k| {
            let der = ed25519_dalek::SigningKey::from_bytes(k.seed())
                .to_pkcs8_der()
                .ok()?;
            Some((k.kid.clone(), EncodingKey::from_ed_der(der.as_bytes())))
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
        true
    }

    /// Signs `claims` with the current key as an RFC 9068 access token.
    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let set = self.snapshot();
        let (kid, key) = set.signer.as_ref().ok_or(SignError::NoKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// Checks a token's header and signature and returns its claims. Only EdDSA, only
    /// `at+jwt`, only a known `kid`: `alg: none`, HMAC signed with a public key and the like
    /// are refused before any signature check. Claims are checked by the caller.
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
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
        self.snapshot().signer.as_ref().map(|(kid, _)| kid.clone())
    }
}

/// RFC 9068 §4: `at+jwt`, also written with its `application/` prefix.
fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
}
