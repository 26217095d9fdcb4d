//! Access tokens end to end: issuing one for an authenticated client (scope narrowing, rate
//! limit, signature) and accepting one (signature, claims, and the client still standing
//! behind it). The one token verifier every endpoint uses.
//!
//! A token seen before skips its signature check: verified claims are remembered by the
//! token's SHA-256, for as long as no signing key has left the key ring since (a key deleted
//! from the database ends its tokens at once). The client is looked up through the
//! verification cache, so the common case needs no database round trip.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::cache::{CacheKey, KeyCache};
use crate::domain::access_token::{self, Claims, Rejection, TokenSettings};
use crate::domain::client::{Client, ClientId};
use crate::domain::rate_limit::Decision;
use crate::domain::signing_key::{OpenError, SeedSeal, SigningKey};
use crate::keyring::{KeyRing, SignError};
use crate::limiter::RateLimiter;
use crate::storage::{self, Store};

/// A token just issued.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Why an exchange did not produce a token.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("the client does not hold scope {0:?}")]
    InvalidScope(String),
    #[error("rate limited")]
    RateLimited(Decision),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Randomness(#[from] getrandom::Error),
}

/// A token that is good now, with the scopes it grants now.
#[derive(Debug, Clone)]
pub struct AcceptedToken {
    pub claims: Arc<Claims>,
    pub client: Arc<Client>,
    pub scopes: Vec<String>,
}

/// Why the signing keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("could not read or write the signing keys")]
    Storage(#[from] crate::domain::Error),
    #[error("signing key {kid} cannot be used: {reason}")]
    Open { kid: String, reason: OpenError },
}

impl From<storage::Error> for KeyLoadError {
    fn from(e: storage::Error) -> Self {
        KeyLoadError::Storage(e.into())
    }
}

impl From<getrandom::Error> for KeyLoadError {
    fn from(e: getrandom::Error) -> Self {
        KeyLoadError::Storage(e.into())
    }
}

pub struct TokenService {
    keyring: Arc<KeyRing>,
    store: Arc<dyn Store>,
    cache: KeyCache,
    limiter: Arc<dyn RateLimiter>,
    settings: TokenSettings,
    /// Seals signing seeds in the store (`RELAY_SIGNING_KEY_SECRET`).
    seal: Option<SeedSeal>,
    /// SHA-256 of a token whose signature checked out → its claims, and the key ring's
    /// removal count when it was checked.
    verified: quick_cache::sync::Cache<[u8; 32], (Arc<Claims>, u64)>,
}

const VERIFIED_CAPACITY: usize = 100_000;

impl TokenService {
    pub fn new(
        keyring: Arc<KeyRing>,
        store: Arc<dyn Store>,
        cache: KeyCache,
        limiter: Arc<dyn RateLimiter>,
        settings: TokenSettings,
        seal: Option<SeedSeal>,
    ) -> Self {
        let verified = quick_cache::sync::Cache::new(VERIFIED_CAPACITY);
        TokenService {
            keyring,
            store,
            cache,
            limiter,
            settings,
            seal,
            verified,
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }

    /// Issues a token to an authenticated, active `client`, counting one request against its
    /// rate limit. Returns the token and the limiter's decision (for the RateLimit headers).
    pub async fn exchange(
        &self,
        client: &Client,
        requested_scope: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(IssuedToken, Decision), ExchangeError> {
        let scopes = access_token::grant_scopes(client, requested_scope)
            .map_err(ExchangeError::InvalidScope)?;
        let decision = self
            .limiter
            .acquire(&client.client_id, client.effective_rate_limit(), now)
            .await;
        if !decision.allowed {
            return Err(ExchangeError::RateLimited(decision));
        }
        let claims = access_token::claims_for(client, &scopes, &self.settings, now, new_jti()?);
        let access_token = self.keyring.sign(&claims)?;
        let issued = IssuedToken {
            access_token,
            expires_in: claims.exp - claims.iat,
            scope: claims.scope,
        };
        Ok((issued, decision))
    }

    /// Accepts or rejects a presented access token.
    pub async fn accept(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<AcceptedToken, Rejection>, storage::Error> {
        let claims = match self.verified_claims(token) {
            Ok(claims) => claims,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if let Err(rejection) = access_token::check_claims(&claims, &self.settings, now) {
            return Ok(Err(rejection));
        }
        let Some(client) = self.client(&ClientId::new(&claims.client_id)).await? else {
            return Ok(Err(Rejection::ClientRevoked));
        };
        Ok(
            access_token::effective_scopes(&claims, &client, now).map(|scopes| AcceptedToken {
                claims,
                client,
                scopes,
            }),
        )
    }

    fn verified_claims(&self, token: &str) -> Result<Arc<Claims>, Rejection> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Read before the check: a key removed while it runs makes the entry stale.
        let removals = self.keyring.removals();
        if let Some((claims, checked_at)) = self.verified.get(&digest) {
            if checked_at == removals {
                return Ok(claims);
            }
            self.verified.remove(&digest);
        }
        let claims = Arc::new(self.keyring.verify(token)?);
        self.verified.insert(digest, (claims.clone(), removals));
        Ok(claims)
    }

    async fn client(&self, id: &ClientId) -> Result<Option<Arc<Client>>, storage::Error> {
        let key = CacheKey::Client(id.clone());
        if let Some(client) = self.cache.get(&key) {
            return Ok(Some(client));
        }
        let ticket = self.cache.ticket();
        let Some(client) = self.store.client(id).await? else {
            return Ok(None);
        };
        let client = Arc::new(client);
        self.cache.insert(key, client.clone(), ticket);
        Ok(Some(client))
    }

    /// Loads the signing keys from the store, creating the first one on a fresh database.
    /// With a seal, keys stored in plain text (from before the secret was set) are sealed.
    pub async fn load_keys(&self, now: DateTime<Utc>) -> Result<(), KeyLoadError> {
        let mut stored = self.store.signing_keys().await?;
        if !stored.iter().any(|k| k.retired_at.is_none()) {
            let first = SigningKey::generate(now)?;
            self.store
                .insert_first_signing_key(&first.seal(self.seal.as_ref())?)
                .await?;
            stored = self.store.signing_keys().await?;
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
                self.store
                    .reseal_signing_key(&key.seal(Some(seal))?)
                    .await?;
                tracing::info!(kid = %k.kid, "signing key sealed with RELAY_SIGNING_KEY_SECRET");
            }
            keys.push(key);
        }
        if self.keyring.load(&keys, now) {
            tracing::info!(kid = ?self.keyring.current_kid(), "signing keys loaded");
        }
        Ok(())
    }
}

/// Keys are retired, never deleted, while tokens they signed may live; forget them a day
/// after the longest possible token lifetime.
pub fn forget_retired_keys_before(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::seconds(i64::from(access_token::MAX_TTL_SECONDS)) - Duration::days(1)
}

/// Rotates the signing key: a new current key, sealed with `seal` when there is one; the
/// previous one keeps verifying.
pub async fn rotate_signing_key(
    store: &dyn Store,
    seal: Option<&SeedSeal>,
    actor: &crate::domain::audit::Actor,
    now: DateTime<Utc>,
) -> Result<SigningKey, crate::domain::Error> {
    let key = SigningKey::generate(now)?;
    let audit = crate::domain::audit::NewAuditEvent::signing_key_rotated(now, actor, &key.kid);
    store
        .rotate_signing_key(&key.seal(seal)?, forget_retired_keys_before(now), &audit)
        .await?;
    Ok(key)
}

/// 128 random bits: unique and unguessable (RFC 7519 §4.1.7).
fn new_jti() -> Result<String, getrandom::Error> {
    crate::domain::random_hex(16)
}
