//! `last_used_at` without a database write, or a shared lock, per request: uses are noted in
//! the answering thread's own shard and written in one batch every few seconds and at
//! shutdown.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::Error;
use crate::domain::client::ClientId;
use crate::per_thread::PerThread;
use crate::storage::Store;

/// Clients whose last use one write (one transaction) records: a flush after a million
/// clients holds the database's write lock for moments rather than seconds.
const CLIENTS_PER_WRITE: usize = 2_000;

type Uses = HashMap<ClientId, DateTime<Utc>, foldhash::fast::RandomState>;

#[derive(Clone, Default)]
pub struct LastUse {
    pending: Arc<PerThread<Uses>>,
}

/// Keeps the later of two uses.
fn note(uses: &mut Uses, client: &ClientId, at: DateTime<Utc>) {
    match uses.get_mut(client) {
        Some(last) if *last >= at => {}
        Some(last) => *last = at,
        None => {
            uses.insert(client.clone(), at);
        }
    }
}

impl LastUse {
    pub fn record(&self, client: &ClientId, at: DateTime<Utc>) {
        self.pending.with(|uses| note(uses, client, at));
    }

    /// Writes what was collected, in id order (nodes writing at once then lock rows in the
    /// same order) and a part at a time; on failure keeps what was not written for the next
    /// flush.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), Error> {
        let mut latest = Uses::default();
        for shard in self.pending.take_each() {
            for (client, at) in shard {
                note(&mut latest, &client, at);
            }
        }
        let mut batch: Vec<(ClientId, DateTime<Utc>)> = latest.into_iter().collect();
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let started = std::time::Instant::now();
        for (n, part) in batch.chunks(CLIENTS_PER_WRITE).enumerate() {
            if let Err(e) = store.record_last_used(part).await {
                for (client, at) in &batch[n * CLIENTS_PER_WRITE..] {
                    self.record(client, *at);
                }
                return Err(e.into());
            }
        }
        tracing::debug!(
            clients = batch.len(),
            seconds = started.elapsed().as_secs_f64(),
            "last uses written"
        );
        Ok(())
    }
}
