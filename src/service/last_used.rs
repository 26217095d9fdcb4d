//! `last_used_at` without a database write, or a shared lock, per request: uses are noted in
//! the answering thread's own shard and written in one batch every few seconds and at
//! shutdown. When writing cannot keep up (a million clients each calling now and then), last
//! uses lag rather than usage counts being lost: they are written after the counts, in what
//! is left of the interval.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::domain::Error;
use crate::domain::client::ClientId;
use crate::per_thread::PerThread;
use crate::storage::Store;

/// Clients whose last use one write (one transaction) records: a flush after a million
/// clients holds the database's write lock for moments rather than seconds.
const CLIENTS_PER_WRITE: usize = 2_000;

type Uses = foldhash::HashMap<ClientId, DateTime<Utc>>;

#[derive(Clone, Default)]
pub struct LastUse {
    pending: Arc<PerThread<Uses>>,
    /// Where the next flush starts, when the last one ran out of time.
    resume_at: Arc<Mutex<Option<ClientId>>>,
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
    /// same order) and a part at a time. Past `until`, what is left waits for the next flush,
    /// which starts where this one stopped, so every client's turn comes; at least one part
    /// is written each time. On failure keeps what was not written for the next flush.
    pub async fn flush(&self, store: &dyn Store, until: Option<Instant>) -> Result<(), Error> {
        let mut latest = Uses::default();
        for shard in self.pending.take_each() {
            for (client, at) in shard {
                note(&mut latest, &client, at);
            }
        }
        let mut batch: Vec<(ClientId, DateTime<Utc>)> = latest.into_iter().collect();
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(resume) = self.lock_resume().take() {
            let start = batch.partition_point(|(client, _)| *client < resume);
            batch.rotate_left(start);
        }
        let started = Instant::now();
        let mut written = 0;
        while written < batch.len() {
            if written > 0 && until.is_some_and(|until| Instant::now() >= until) {
                *self.lock_resume() = Some(batch[written].0.clone());
                break;
            }
            let end = (written + CLIENTS_PER_WRITE).min(batch.len());
            let part = &mut batch[written..end];
            // The part that wraps around from the last id to the first holds two runs.
            part.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let count = part.len();
            if let Err(e) = store.record_last_used(part).await {
                self.keep(&batch[written..]);
                return Err(e.into());
            }
            written += count;
        }
        self.keep(&batch[written..]);
        tracing::debug!(
            clients = written,
            left_for_next_flush = batch.len() - written,
            seconds = started.elapsed().as_secs_f64(),
            "last uses written"
        );
        Ok(())
    }

    fn keep(&self, uses: &[(ClientId, DateTime<Utc>)]) {
        for (client, at) in uses {
            self.record(client, *at);
        }
    }

    fn lock_resume(&self) -> std::sync::MutexGuard<'_, Option<ClientId>> {
        self.resume_at.lock().unwrap_or_else(|e| e.into_inner())
    }
}
