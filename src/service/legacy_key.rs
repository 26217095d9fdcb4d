//! Keys of the original Python service, adopted with its database: `eg_` + 40 hex, stored as
//! bcrypt hashes that cannot be looked up. The first successful check of such a key records
//! its SHA-256 beside the row (bound to the bcrypt hash it matched), so every later check (on
//! any node) is one index lookup.
//!
//! The bcrypt work an unknown key can cause is bounded: it runs off the async runtime on at
//! most `concurrency` threads in all, at most `MAX_WAITING` checks queue for them (others are
//! turned away at once: `Busy`), and a key that matched nothing is not checked again for ten
//! minutes. Each check runs in a task of its own that holds its queue slot and its bcrypt
//! permit until the scan is over and its result recorded, so a caller that gives up waiting
//! frees neither and cannot skip the ten-minute rule.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::domain::Error;
use crate::domain::api_key::KeyHash;
use crate::domain::client::Client;
use crate::storage::Store;

const FAILURE_MEMORY: Duration = Duration::from_secs(600);
const MAX_WAITING: usize = 64;
const FAILURE_CAPACITY: usize = 100_000;

/// What a legacy-key check found.
#[derive(Debug)]
pub enum LegacyMatch {
    Found(Box<Client>),
    NotFound,
    /// The bcrypt budget is spent: try again after this many seconds.
    Busy {
        retry_after_seconds: u64,
    },
}

pub struct LegacyKeys {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    concurrency: usize,
    permits: Arc<Semaphore>,
    /// Checks queued or running; each holds a `Slot`.
    waiting: AtomicUsize,
    /// SHA-256 of keys that matched no adopted hash → when that was found.
    failures: quick_cache::sync::Cache<[u8; 32], Instant>,
    /// Every bcrypt comparison made, for `/metrics`.
    bcrypt_checks: Counter,
    /// `waiting`, for `/metrics`.
    queued: Gauge,
    /// How long the last scan took, to tell a turned-away caller when to come back.
    last_scan_millis: AtomicU64,
}

/// A place in the queue, given back when dropped, however the check ends.
struct Slot(Arc<Shared>);

impl Slot {
    fn claim(shared: &Arc<Shared>) -> Option<Slot> {
        if shared.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        shared.queued.inc();
        Some(Slot(shared.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.queued.dec();
    }
}

impl LegacyKeys {
    pub fn new(
        store: Arc<dyn Store>,
        concurrency: usize,
        bcrypt_checks: Counter,
        queued: Gauge,
    ) -> Self {
        let concurrency = concurrency.max(1);
        LegacyKeys {
            shared: Arc::new(Shared {
                store,
                concurrency,
                permits: Arc::new(Semaphore::new(concurrency)),
                waiting: AtomicUsize::new(0),
                failures: quick_cache::sync::Cache::new(FAILURE_CAPACITY),
                bcrypt_checks,
                queued,
                last_scan_millis: AtomicU64::new(0),
            }),
        }
    }

    /// Finds the adopted client whose bcrypt hash matches `key` (whose SHA-256 is `digest`)
    /// and records the digest for it. Cancelling the returned future does not cancel the
    /// check: it runs to its end, and its result is remembered.
    pub async fn find(&self, key: &str, digest: KeyHash) -> Result<LegacyMatch, Error> {
        let shared = &self.shared;
        if shared.recently_failed(&digest) {
            return Ok(LegacyMatch::NotFound);
        }
        let Some(slot) = Slot::claim(shared) else {
            tracing::warn!("too many legacy key checks waiting: one turned away");
            return Ok(LegacyMatch::Busy {
                retry_after_seconds: shared.retry_after_seconds(),
            });
        };
        let key = Zeroizing::new(key.to_string());
        let task = tokio::spawn(async move {
            let result = slot.0.clone().check(key, digest).await;
            drop(slot);
            result
        });
        match task.await {
            Ok(result) => result.map(|found| {
                found.map_or(LegacyMatch::NotFound, |c| LegacyMatch::Found(Box::new(c)))
            }),
            Err(e) => {
                tracing::error!(error = %e, "a legacy key check failed");
                Ok(LegacyMatch::NotFound)
            }
        }
    }
}

impl Shared {
    fn recently_failed(&self, digest: &KeyHash) -> bool {
        self.failures
            .get(&digest.to_bytes())
            .is_some_and(|at| at.elapsed() < FAILURE_MEMORY)
    }

    /// Seconds until the queue has probably moved: the last scan's time for each check ahead,
    /// spread over the bcrypt threads; 1..=60.
    fn retry_after_seconds(&self) -> u64 {
        let scan = self.last_scan_millis.load(Ordering::Relaxed);
        let ahead = u64::try_from(self.waiting.load(Ordering::Relaxed)).unwrap_or(u64::MAX);
        let threads = u64::try_from(self.concurrency).unwrap_or(1);
        (scan.saturating_mul(ahead) / threads)
            .div_ceil(1000)
            .clamp(1, 60)
    }

    async fn check(
        self: Arc<Self>,
        key: Zeroizing<String>,
        digest: KeyHash,
    ) -> Result<Option<Client>, Error> {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Ok(None);
        };
        // Another check may have settled this key while this one waited.
        if self.recently_failed(&digest) {
            return Ok(None);
        }
        if let Some(client) = self.store.client_by_legacy_digest(&digest).await? {
            return Ok(Some(client));
        }
        let candidates = self.store.legacy_candidates().await?;
        let checks = self.bcrypt_checks.clone();
        let started = Instant::now();
        // The permit goes into the blocking work: it is released when bcrypt stops, not
        // when somebody stops waiting for it.
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            candidates.into_iter().find(|(_, hash)| {
                checks.inc();
                bcrypt::verify(key.as_str(), hash).unwrap_or(false)
            })
        })
        .await
        .unwrap_or(None);
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_scan_millis.store(millis, Ordering::Relaxed);
        match matched {
            Some((id, hash)) => {
                let upgraded = self.store.upgrade_legacy_key(&id, &digest, &hash).await?;
                tracing::info!(client_id = %id, "adopted key upgraded: later checks skip bcrypt");
                Ok(upgraded)
            }
            None => {
                self.failures.insert(digest.to_bytes(), Instant::now());
                Ok(None)
            }
        }
    }
}
