//! Access tokens end to end: issuing one for an authenticated client (scope narrowing, rate
//! limit, signature) and accepting one (signature, claims, and the client still standing
//! behind it). The one token verifier every endpoint uses.
//!
//! A token seen before skips its signature check: verified claims are remembered by the
//! token's SHA-256 until it expires. The client is looked up through the verification cache,
//! so the common case needs no database round trip.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::cache::{CacheKey, KeyCache};
use crate::domain::access_token::{self, Claims, Rejection, TokenSettings};
use crate::domain::client::{Client, ClientId};
use crate::domain::rate_limit::Decision;
use crate::domain::signing_key::SigningKey;
use crate::keyring::{KeyRing, SignError};
use crate::limiter::RateLimiter;
use crate::storage::{self, Store};

/// A token just issued.
#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
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

pub struct TokenService {
    keyring: Arc<KeyRing>,
    store: Arc<dyn Store>,
    cache: KeyCache,
    limiter: Arc<dyn RateLimiter>,
    settings: TokenSettings,
    /// SHA-256 of a token whose signature checked out → its claims.
    verified: quick_cache::sync::Cache<[u8; 32], Arc<Claims>>,
}

const VERIFIED_CAPACITY: usize = 100_000;

impl TokenService {
    pub fn new(
        keyring: Arc<KeyRing>,
        store: Arc<dyn Store>,
        cache: KeyCache,
        limiter: Arc<dyn RateLimiter>,
        settings: TokenSettings,
    ) -> Self {
        let verified = quick_cache::sync::Cache::new(VERIFIED_CAPACITY);
        TokenService {
            keyring,
            store,
            cache,
            limiter,
            settings,
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
        if let Some(claims) = self.verified.get(&digest) {
            return Ok(claims);
        }
        let claims = Arc::new(self.keyring.verify(token)?);
        self.verified.insert(digest, claims.clone());
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
    pub async fn load_keys(&self, now: DateTime<Utc>) -> Result<(), crate::domain::Error> {
        let mut keys = self.store.signing_keys().await?;
        if !keys.iter().any(|k| k.retired_at.is_none()) {
            let first = SigningKey::generate(now)?;
            self.store.insert_first_signing_key(&first).await?;
            keys = self.store.signing_keys().await?;
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

/// Rotates the signing key: a new current key; the previous one keeps verifying.
pub async fn rotate_signing_key(
    store: &dyn Store,
    actor: &crate::domain::audit::Actor,
    now: DateTime<Utc>,
) -> Result<SigningKey, crate::domain::Error> {
    let key = SigningKey::generate(now)?;
    let audit = crate::domain::audit::NewAuditEvent::signing_key_rotated(now, actor, &key.kid);
    store
        .rotate_signing_key(&key, forget_retired_keys_before(now), &audit)
        .await?;
    Ok(key)
}

/// 128 random bits: unique and unguessable (RFC 7519 §4.1.7).
fn new_jti() -> Result<String, getrandom::Error> {
    crate::domain::random_hex(16)
}

/// How often each process re-reads the signing keys, so a rotation anywhere is in force
/// everywhere within a second.
pub const KEY_RELOAD: StdDuration = StdDuration::from_millis(500);
