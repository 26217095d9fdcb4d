//! Turns a presented credential into a client (or the admin token): parse and checksum first,
//! then the cache, then one indexed lookup. Never writes per request (uses go to the
//! `UsageRecorder`); the only scan is the bounded bcrypt check of keys adopted from the
//! original service that have not been seen yet (see `legacy`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::cache::{CacheKey, KeyCache};
use crate::domain::api_key::{self, KeyHash};
use crate::domain::audit::Actor;
use crate::domain::client::{Client, ClientStatus};
use crate::domain::{Error, scope};
use crate::legacy::LegacyKeys;
use crate::metrics::Metrics;
use crate::storage::{self, Store};
use crate::usage::UsageRecorder;

/// The result of checking an API key, in the order verification reports problems.
#[derive(Debug, Clone)]
pub enum KeyCheck {
    Valid(Arc<Client>),
    NotFound,
    Disabled,
    Expired,
}

impl KeyCheck {
    pub fn code(&self) -> &'static str {
        match self {
            KeyCheck::Valid(_) => "VALID",
            KeyCheck::NotFound => "NOT_FOUND",
            KeyCheck::Disabled => "DISABLED",
            KeyCheck::Expired => "EXPIRED",
        }
    }
}

/// Checks API keys and the admin token; shared by every endpoint that takes a credential.
pub struct Verifier {
    store: Arc<dyn Store>,
    cache: KeyCache,
    usage: UsageRecorder,
    metrics: Arc<Metrics>,
    /// SHA-256 of `RELAY_ADMIN_TOKEN`, so comparing it takes the same time whatever its length.
    admin_token: Option<KeyHash>,
    legacy: LegacyKeys,
}

fn status_check(client: Arc<Client>, now: DateTime<Utc>) -> KeyCheck {
    match client.status(now) {
        ClientStatus::Disabled => KeyCheck::Disabled,
        ClientStatus::Expired => KeyCheck::Expired,
        ClientStatus::Active => KeyCheck::Valid(client),
    }
}

impl Verifier {
    pub fn new(
        store: Arc<dyn Store>,
        cache: KeyCache,
        usage: UsageRecorder,
        metrics: Arc<Metrics>,
        admin_token: Option<&SecretString>,
        legacy: LegacyKeys,
    ) -> Self {
        let admin_token = admin_token.map(|t| KeyHash::of(t.expose_secret()));
        Verifier {
            store,
            cache,
            usage,
            metrics,
            admin_token,
            legacy,
        }
    }

    /// Checks an API key. A malformed key or a bad checksum is `NotFound` without any lookup.
    pub async fn check_key(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyCheck, storage::Error> {
        if api_key::is_legacy_format(key) {
            return self.check_legacy_key(key, now).await;
        }
        let Some(presented) = api_key::parse(key) else {
            return Ok(KeyCheck::NotFound);
        };
        let cache_key = CacheKey::Key(presented.key_id);
        let cached = self.cache.get(&cache_key);
        self.metrics.observe_cache(cached.is_some());
        let client = match cached {
            Some(client) => client,
            None => {
                let ticket = self.cache.ticket();
                let Some(client) = self.store.client_by_key_id(&presented.key_id).await? else {
                    return Ok(KeyCheck::NotFound);
                };
                let client = Arc::new(client);
                self.cache.insert(cache_key, client.clone(), ticket);
                client
            }
        };
        if !client.accepts_key(&presented, now) {
            return Ok(KeyCheck::NotFound);
        }
        Ok(status_check(client, now))
    }

    /// A key of the original service: by its SHA-256 once seen, else (bounded) bcrypt.
    async fn check_legacy_key(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyCheck, storage::Error> {
        let digest = KeyHash::of(key);
        let cache_key = CacheKey::LegacyDigest(digest.to_bytes());
        if let Some(client) = self.cache.get(&cache_key) {
            self.metrics.observe_cache(true);
            return Ok(status_check(client, now));
        }
        self.metrics.observe_cache(false);
        let ticket = self.cache.ticket();
        let mut found = self.store.client_by_legacy_digest(&digest).await?;
        if found.is_none() && self.legacy.find(key, &digest).await?.is_some() {
            found = self.store.client_by_legacy_digest(&digest).await?;
        }
        let Some(client) = found else {
            return Ok(KeyCheck::NotFound);
        };
        let client = Arc::new(client);
        self.cache.insert(cache_key, client.clone(), ticket);
        Ok(status_check(client, now))
    }

    /// Notes a successful use of the client's credential for `last_used_at` (batched).
    pub fn record_use(&self, client: &Client, now: DateTime<Utc>) {
        self.usage.record(&client.client_id, now);
    }

    /// Authorizes a credential for an endpoint needing `scope` (the admin token and clients
    /// holding `admin` pass everywhere). `Unauthenticated` for anything that is not a valid
    /// credential, `Forbidden` for a valid key without the scope.
    pub async fn authorize(
        &self,
        credential: &str,
        scope: &'static str,
        now: DateTime<Utc>,
    ) -> Result<Actor, Error> {
        if let Some(token) = &self.admin_token {
            if token.matches(&KeyHash::of(credential)) {
                return Ok(Actor::AdminToken);
            }
        }
        match self.check_key(credential, now).await? {
            KeyCheck::Valid(client)
                if client.has_scope(scope::ADMIN) || client.has_scope(scope) =>
            {
                self.record_use(&client, now);
                Ok(Actor::Client(client.client_id.clone()))
            }
            KeyCheck::Valid(_) => Err(Error::Forbidden(scope.to_string())),
            _ => Err(Error::Unauthenticated),
        }
    }
}
