//! Turns a presented credential into a client (or the admin token): parse and checksum first,
//! then the cache, then one indexed lookup. Never writes per request (uses go to the
//! `UsageRecorder`); the only scan is the bounded bcrypt check of keys adopted from the
//! original service that have not been seen yet (see `legacy`), which the presenting address
//! pays for in failed authentications before it starts.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::cache::{CacheKey, KeyCache};
use crate::domain::api_key::{self, KeyHash};
use crate::domain::audit::Actor;
use crate::domain::client::{Client, ClientStatus};
use crate::domain::{Error, scope};
use crate::legacy::{LegacyKeys, LegacyMatch};
use crate::limiter::FailedAuthLimiter;
use crate::metrics::Metrics;
use crate::storage::Store;
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
    failed_auth: Arc<FailedAuthLimiter>,
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
        failed_auth: Arc<FailedAuthLimiter>,
    ) -> Self {
        let admin_token = admin_token.map(|t| KeyHash::of(t.expose_secret()));
        Verifier {
            store,
            cache,
            usage,
            metrics,
            admin_token,
            legacy,
            failed_auth,
        }
    }

    /// Checks an API key presented from `addr`. A malformed key or a bad checksum is
    /// `NotFound` without any lookup.
    pub async fn check_key(
        &self,
        key: &str,
        addr: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<KeyCheck, Error> {
        if api_key::is_legacy_format(key) {
            return self.check_legacy_key(key, addr, now).await;
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
        addr: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<KeyCheck, Error> {
        let digest = KeyHash::of(key);
        let cache_key = CacheKey::LegacyDigest(digest.to_bytes());
        if let Some(client) = self.cache.get(&cache_key) {
            self.metrics.observe_cache(true);
            return Ok(status_check(client, now));
        }
        self.metrics.observe_cache(false);
        let ticket = self.cache.ticket();
        let client = match self.store.client_by_legacy_digest(&digest).await? {
            Some(client) => client,
            None => match self.scan_legacy_keys(key, digest, addr, now).await? {
                Some(client) => client,
                None => return Ok(KeyCheck::NotFound),
            },
        };
        let client = Arc::new(client);
        self.cache.insert(cache_key, client.clone(), ticket);
        Ok(status_check(client, now))
    }

    /// The bcrypt path, paid for in advance: refused to an address that has failed too often,
    /// and charged to it as a failure before it starts, so a caller that gives up waiting
    /// still pays. A caller still here has the charge taken back and is judged by the
    /// outcome, like any other.
    async fn scan_legacy_keys(
        &self,
        key: &str,
        digest: KeyHash,
        addr: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Option<Client>, Error> {
        if let Some(wait) = self.failed_auth.blocked_for(addr, now) {
            return Err(Error::RateLimited {
                retry_after_seconds: wait,
            });
        }
        self.failed_auth.record_failure(addr, now);
        let found = self.legacy.find(key, digest).await;
        self.failed_auth.refund(addr);
        match found? {
            LegacyMatch::Found(client) => Ok(Some(*client)),
            LegacyMatch::NotFound => Ok(None),
            LegacyMatch::Busy {
                retry_after_seconds,
            } => Err(Error::Busy {
                retry_after_seconds,
            }),
        }
    }

    /// Notes a successful use of the client's credential for `last_used_at` (batched).
    pub fn record_use(&self, client: &Client, now: DateTime<Utc>) {
        self.usage.record(&client.client_id, now);
    }

    /// Authorizes a credential presented from `addr` for an endpoint needing `scope` (the
    /// admin token and clients holding `admin` pass everywhere). `Unauthenticated` for
    /// anything that is not a valid credential, `Forbidden` for a valid key without the scope.
    pub async fn authorize(
        &self,
        credential: &str,
        scope: &'static str,
        addr: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Actor, Error> {
        if let Some(token) = &self.admin_token {
            if token.matches(&KeyHash::of(credential)) {
                return Ok(Actor::AdminToken);
            }
        }
        match self.check_key(credential, addr, now).await? {
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
