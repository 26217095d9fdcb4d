//! Keys of the original Python service, adopted with its database: `eg_` + 40 hex, stored as
//! bcrypt hashes that cannot be looked up. The first successful check of such a key records
//! its SHA-256 beside the row, so every later check (on any node) is one index lookup.
//!
//! The bcrypt work an unknown key can cause is bounded: it runs off the async runtime on at
//! most `concurrency` threads, at most `MAX_WAITING` requests queue for it (others are turned
//! away at once), and a key that matched nothing is not checked again for ten minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::domain::api_key::KeyHash;
use crate::domain::client::ClientId;
use crate::storage::{self, Store};

const FAILURE_MEMORY: Duration = Duration::from_secs(600);
const MAX_WAITING: usize = 64;
const FAILURE_CAPACITY: usize = 100_000;

pub struct LegacyKeys {
    store: Arc<dyn Store>,
    permits: Semaphore,
    waiting: AtomicUsize,
    /// SHA-256 of keys that matched no adopted hash → when that was found.
    failures: quick_cache::sync::Cache<[u8; 32], Instant>,
    /// Every bcrypt comparison made, for `/metrics`.
    bcrypt_checks: Counter,
}

impl LegacyKeys {
    pub fn new(store: Arc<dyn Store>, concurrency: usize, bcrypt_checks: Counter) -> Self {
        LegacyKeys {
            store,
            permits: Semaphore::new(concurrency.max(1)),
            waiting: AtomicUsize::new(0),
            failures: quick_cache::sync::Cache::new(FAILURE_CAPACITY),
            bcrypt_checks,
        }
    }

    fn recently_failed(&self, digest: &KeyHash) -> bool {
        self.failures
            .get(&digest.to_bytes())
            .is_some_and(|at| at.elapsed() < FAILURE_MEMORY)
    }

    /// Finds the adopted client whose bcrypt hash matches `key` (whose SHA-256 is `digest`)
    /// and records the digest for it. `None` when nothing matches, or when too many checks are
    /// already waiting.
    pub async fn find(
        &self,
        key: &str,
        digest: &KeyHash,
    ) -> Result<Option<ClientId>, storage::Error> {
        if self.recently_failed(digest) {
            return Ok(None);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("too many legacy key checks waiting: one turned away");
            return Ok(None);
        }
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let Ok(_permit) = permit else { return Ok(None) };
        // Another request may have settled this key while we waited.
        if self.recently_failed(digest) {
            return Ok(None);
        }
        if let Some(client) = self.store.client_by_legacy_digest(digest).await? {
            return Ok(Some(client.client_id));
        }
        let candidates = self.store.legacy_candidates().await?;
        let key = key.to_string();
        let checks = self.bcrypt_checks.clone();
        let matched = tokio::task::spawn_blocking(move || {
            candidates.into_iter().find_map(|(id, hash)| {
                checks.inc();
                bcrypt::verify(&key, &hash).unwrap_or(false).then_some(id)
            })
        })
        .await
        .unwrap_or(None);
        match matched {
            Some(id) => {
                self.store.upgrade_legacy_key(&id, digest).await?;
                tracing::info!(client_id = %id, "adopted key upgraded: later checks skip bcrypt");
                Ok(Some(id))
            }
            None => {
                self.failures.insert(digest.to_bytes(), Instant::now());
                Ok(None)
            }
        }
    }
}
