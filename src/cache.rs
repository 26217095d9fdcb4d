//! The client cache: key id → the client that owns it, and client id → client (for access
//! tokens), so a warm credential costs no database round trip. Bounded in size, entries live
//! at most `ttl`, and a change to a client makes its entries stale at once; `change_feed`
//! carries changes made by other processes here.
//!
//! Invalidation is by client id and never misses a load racing with it: every entry remembers
//! the invalidation epoch at which its database read *started*; invalidating a client bumps
//! the epoch and notes it for that client, so an entry read before the change is stale even if
//! it is inserted after it. Clearing the cache works the same way for every client at once.
//! An entry's age, too, counts from the start of its read, so no answer older than `ttl` is
//! served.

pub mod change_feed;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::domain::api_key::KeyId;
use crate::domain::client::{Client, ClientId};

/// What an entry is found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// The id of a key the client holds (current or previous).
    Key(KeyId),
    /// The client's own id.
    Client(ClientId),
    /// SHA-256 of an adopted key of the original service.
    LegacyDigest([u8; 32]),
}

#[derive(Clone)]
pub struct ClientCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: quick_cache::sync::Cache<CacheKey, Entry>,
    ttl: Duration,
    epoch: AtomicU64,
    /// The epoch of the last `clear`: entries read before it are stale.
    cleared_at: AtomicU64,
    /// Clients invalidated recently, with the epoch of their invalidation. Pruned after `ttl`,
    /// when every entry loaded before it has expired anyway.
    invalidated: RwLock<HashMap<ClientId, (u64, Instant)>>,
}

#[derive(Clone)]
struct Entry {
    client: Arc<Client>,
    loaded_at: Instant,
    epoch: u64,
}

/// Marks the start of a database read whose result may be cached.
#[derive(Debug, Clone, Copy)]
struct LoadTicket {
    epoch: u64,
    started: Instant,
}

/// What `get_or_load` found, and whether the cache answered.
pub struct Lookup {
    pub client: Option<Arc<Client>>,
    pub hit: bool,
}

impl ClientCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ClientCache {
            inner: Arc::new(Inner {
                entries: quick_cache::sync::Cache::new(capacity.max(1)),
                ttl,
                epoch: AtomicU64::new(0),
                cleared_at: AtomicU64::new(0),
                invalidated: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The client found by `key`: a fresh cached entry, else what `load` reads (from the
    /// database), cached on the way unless a change to that client raced with the read.
    pub async fn get_or_load<E, F, Fut>(&self, key: CacheKey, load: F) -> Result<Lookup, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Client>, E>>,
    {
        if let Some(client) = self.get(&key) {
            return Ok(Lookup {
                client: Some(client),
                hit: true,
            });
        }
        let ticket = self.ticket();
        let client = load().await?.map(Arc::new);
        if let Some(client) = &client {
            self.insert(key, client.clone(), ticket);
        }
        Ok(Lookup { client, hit: false })
    }

    /// The client found by `key`, if a fresh entry is cached.
    fn get(&self, key: &CacheKey) -> Option<Arc<Client>> {
        let entry = self.inner.entries.get(key)?;
        if entry.loaded_at.elapsed() >= self.inner.ttl || self.invalidated_since(&entry) {
            self.inner.entries.remove(key);
            return None;
        }
        Some(entry.client)
    }

    /// Call before reading the database; hand the ticket to `insert` with the result.
    fn ticket(&self) -> LoadTicket {
        LoadTicket {
            epoch: self.inner.epoch.load(Ordering::Acquire),
            started: Instant::now(),
        }
    }

    fn insert(&self, key: CacheKey, client: Arc<Client>, ticket: LoadTicket) {
        let entry = Entry {
            client,
            loaded_at: ticket.started,
            epoch: ticket.epoch,
        };
        self.inner.entries.insert(key, entry);
    }

    /// Makes every cached entry of `client_id` stale now.
    pub fn invalidate(&self, client_id: &ClientId) {
        let mut invalidated = self
            .inner
            .invalidated
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        invalidated.insert(client_id.clone(), (epoch, Instant::now()));
    }

    /// Drops everything, loads in flight included (used when change notifications may have
    /// been missed).
    pub fn clear(&self) {
        let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.cleared_at.fetch_max(epoch, Ordering::AcqRel);
        self.inner.entries.clear();
    }

    /// Forgets invalidation marks older than the TTL; run periodically.
    pub fn prune(&self) {
        let ttl = self.inner.ttl;
        let mut invalidated = self
            .inner
            .invalidated
            .write()
            .unwrap_or_else(|e| e.into_inner());
        invalidated.retain(|_, (_, at)| at.elapsed() < ttl);
    }

    fn invalidated_since(&self, entry: &Entry) -> bool {
        // Fast path: nothing was invalidated since this entry's read began.
        if entry.epoch == self.inner.epoch.load(Ordering::Acquire) {
            return false;
        }
        if entry.epoch < self.inner.cleared_at.load(Ordering::Acquire) {
            return true;
        }
        let invalidated = self
            .inner
            .invalidated
            .read()
            .unwrap_or_else(|e| e.into_inner());
        invalidated
            .get(&entry.client.client_id)
            .is_some_and(|(epoch, _)| *epoch > entry.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::api_key;
    use crate::domain::client::{ClientDraft, NewClient};

    fn client() -> (CacheKey, Arc<Client>) {
        let key = api_key::generate().unwrap();
        let now = crate::domain::now();
        let draft = ClientDraft {
            name: "c".into(),
            ..Default::default()
        };
        let client = NewClient::validate(draft, now).unwrap().into_client(
            ClientId::generate().unwrap(),
            &key,
            now,
        );
        (CacheKey::Key(key.key_id), Arc::new(client))
    }

    #[test]
    fn a_cached_client_is_returned_until_invalidated() {
        let cache = ClientCache::new(10, Duration::from_secs(60));
        let (key_id, c) = client();
        cache.insert(key_id.clone(), c.clone(), cache.ticket());
        assert!(cache.get(&key_id).is_some());
        cache.invalidate(&c.client_id);
        assert!(cache.get(&key_id).is_none());
    }

    #[test]
    fn a_load_racing_an_invalidation_is_not_served() {
        let cache = ClientCache::new(10, Duration::from_secs(60));
        let (key_id, c) = client();
        let ticket = cache.ticket();
        cache.invalidate(&c.client_id); // the change lands while the read is in flight
        cache.insert(key_id.clone(), c, ticket);
        assert!(cache.get(&key_id).is_none());
    }

    #[test]
    fn invalidating_one_client_keeps_the_others() {
        let cache = ClientCache::new(10, Duration::from_secs(60));
        let (k1, c1) = client();
        let (k2, c2) = client();
        cache.insert(k1.clone(), c1.clone(), cache.ticket());
        cache.insert(k2.clone(), c2, cache.ticket());
        cache.invalidate(&c1.client_id);
        assert!(cache.get(&k1).is_none());
        assert!(cache.get(&k2).is_some());
    }

    #[test]
    fn a_load_racing_a_clear_is_not_served() {
        let cache = ClientCache::new(10, Duration::from_secs(60));
        let (key_id, c) = client();
        let ticket = cache.ticket();
        cache.clear(); // everything is dropped while the read is in flight
        cache.insert(key_id.clone(), c, ticket);
        assert!(cache.get(&key_id).is_none());
        // A read that starts after the clear is cached as usual.
        let (key_id, c) = client();
        cache.insert(key_id.clone(), c, cache.ticket());
        assert!(cache.get(&key_id).is_some());
    }

    #[test]
    fn an_entry_ages_from_the_start_of_its_read() {
        let ttl = Duration::from_secs(60);
        let cache = ClientCache::new(10, ttl);
        let (key_id, c) = client();
        // A read that started a TTL ago (a slow query) answers with data already too old.
        let mut ticket = cache.ticket();
        ticket.started -= ttl;
        cache.insert(key_id.clone(), c, ticket);
        assert!(cache.get(&key_id).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = ClientCache::new(10, Duration::ZERO);
        let (key_id, c) = client();
        cache.insert(key_id.clone(), c, cache.ticket());
        assert!(cache.get(&key_id).is_none());
    }
}
