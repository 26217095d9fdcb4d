//! Follows the store's change log so that a change written by another process (the CLI, or
//! another node) drops this process's cached entries for that client within a poll interval.
//!
//! Change numbers come from a sequence, and on PostgreSQL a transaction can commit after one
//! that took a later number. A number skipped over is therefore remembered as a gap and looked
//! for again until `GAP_PATIENCE` has passed (a rolled-back transaction leaves a gap forever).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ClientCache;
use crate::storage::{self, Store};

const GAP_PATIENCE: Duration = Duration::from_secs(10);
/// More skipped numbers than this at once: give up tracking them and drop the whole cache.
const MAX_GAPS: i64 = 1000;

pub struct ChangeFeed {
    store: Arc<dyn Store>,
    cache: ClientCache,
    last: i64,
    gaps: BTreeMap<i64, Instant>,
}

impl ChangeFeed {
    /// Starts after the newest change: everything older is already reflected in the store,
    /// and this process has cached nothing yet.
    pub async fn start(store: Arc<dyn Store>, cache: ClientCache) -> Result<Self, storage::Error> {
        let last = store.latest_change().await?;
        Ok(ChangeFeed {
            store,
            cache,
            last,
            gaps: BTreeMap::new(),
        })
    }

    /// Reads new changes and invalidates the clients they name; returns how many it applied.
    pub async fn poll(&mut self) -> Result<usize, storage::Error> {
        let from = self.gaps.keys().next().map_or(self.last, |first| first - 1);
        let changes = self.store.changes_after(from).await?;
        let now = Instant::now();
        let mut applied = 0;
        for (seq, client) in changes {
            if seq > self.last {
                if seq - self.last > MAX_GAPS {
                    self.gaps.clear();
                    self.cache.clear();
                } else {
                    self.gaps.extend((self.last + 1..seq).map(|s| (s, now)));
                }
                self.last = seq;
            } else if self.gaps.remove(&seq).is_none() {
                continue; // seen on an earlier poll
            }
            self.cache.invalidate(&client);
            applied += 1;
        }
        self.gaps
            .retain(|_, noticed| noticed.elapsed() < GAP_PATIENCE);
        Ok(applied)
    }
}
