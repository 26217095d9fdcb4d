//! Counting every use of a credential, per client, endpoint, outcome and minute, without a
//! database write or a shared lock per request: each thread counts into a shard of its own
//! (an uncontended mutex), and a flush every few seconds drains the shards into one batch of
//! deltas for the minute, hour and day tables (see `storage::usage`). The counts in memory are
//! bounded; what does not fit is counted as dropped (a metric and a log line), never silently.
//! A flush is written in parts, each its own transaction under its own batch id; a part that
//! fails is kept and retried as it was, so it counts once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

use crate::domain::Error;
use crate::domain::client::{Client, ClientId};
use crate::domain::usage::{Counters, Granularity, Outcome};
use crate::per_thread::PerThread;
use crate::storage::Store;
use crate::storage::usage::{ALL_CLIENTS, UsageBatch, UsageRow};

/// Where a credential was used.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    Verify,
    Token,
    /// A relay route, by its prefix.
    Route(&'a str),
}

/// The most (client, endpoint, minute) counters held between flushes: about 75 MB at worst,
/// reached only by a million distinct clients within one flush interval.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// Rows a flush writes per transaction (see `UsageBatch::into_parts`): tens of milliseconds of
/// the database's write lock at a time.
const ROWS_PER_WRITE: usize = 5_000;

/// One counter's key: the client by row id (no string is hashed or cloned per request),
/// the endpoint by its index in `Meter::endpoints`, the minute since the Unix epoch (an
/// `i32` lasts until the year 6053). 24 bytes: a million of them are held at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    client: Option<i64>,
    minute: i32,
    endpoint: u16,
}

struct Tally {
    /// Cloned once, when the counter is created.
    client_id: Option<ClientId>,
    counts: MinuteCounts,
}

/// Uses by outcome of one client at one endpoint in one minute: they fit in 32 bits (four
/// billion uses in a minute), half the size of the stored `Counters`.
#[derive(Debug, Clone, Copy, Default)]
struct MinuteCounts([u32; 8]);

impl MinuteCounts {
    fn of(outcome: Outcome) -> Self {
        let mut counts = MinuteCounts::default();
        counts.add(outcome);
        counts
    }

    fn add(&mut self, outcome: Outcome) {
        let slot = &mut self.0[outcome as usize];
        *slot = slot.saturating_add(1);
    }

    fn widen(self) -> Counters {
        Counters(self.0.map(u64::from))
    }
}

/// Counters metrics of the meter itself.
#[derive(Clone, Default)]
pub struct MeterMetrics {
    pub dropped: Counter,
    pub flush_failures: Counter,
}

pub struct Meter {
    enabled: bool,
    /// `verify`, `token`, then the relay routes' prefixes.
    endpoints: Vec<Arc<str>>,
    shards: PerThread<foldhash::HashMap<Key, Tally>>,
    entries: AtomicUsize,
    capacity: usize,
    dropped_since_flush: AtomicU64,
    /// Parts of a batch not written yet (a write failed), retried before anything newer. An
    /// async lock: held across the write, so two flushes (the timer's, the shutdown's) never
    /// interleave.
    pending: tokio::sync::Mutex<VecDeque<UsageBatch>>,
    node: String,
    batches: AtomicU64,
    metrics: MeterMetrics,
}

impl Meter {
    /// A meter for the given relay route prefixes; `enabled: false` counts nothing.
    pub fn new(
        enabled: bool,
        route_prefixes: impl IntoIterator<Item = String>,
        capacity: usize,
        metrics: MeterMetrics,
    ) -> Result<Self, Error> {
        let endpoints = ["verify".to_string(), "token".to_string()]
            .into_iter()
            .chain(route_prefixes)
            .map(Arc::from)
            .collect();
        Ok(Meter {
            enabled,
            endpoints,
            shards: PerThread::default(),
            entries: AtomicUsize::new(0),
            capacity,
            dropped_since_flush: AtomicU64::new(0),
            pending: tokio::sync::Mutex::new(VecDeque::new()),
            node: crate::domain::random_hex(8)?,
            batches: AtomicU64::new(0),
            metrics,
        })
    }

    fn endpoint_index(&self, endpoint: Endpoint<'_>) -> Option<u16> {
        let index = match endpoint {
            Endpoint::Verify => 0,
            Endpoint::Token => 1,
            Endpoint::Route(prefix) => self.endpoints.iter().position(|e| &**e == prefix)?,
        };
        u16::try_from(index).ok()
    }

    /// Counts one use: by `client` (`None`: the credential named none), at `endpoint`, at `at`.
    pub fn count(
        &self,
        client: Option<&Client>,
        endpoint: Endpoint<'_>,
        outcome: Outcome,
        at: DateTime<Utc>,
    ) {
        if !self.enabled {
            return;
        }
        let Some(endpoint) = self.endpoint_index(endpoint) else {
            self.drop_count();
            return;
        };
        let Ok(minute) = i32::try_from(at.timestamp().div_euclid(60)) else {
            self.drop_count();
            return;
        };
        let key = Key {
            client: client.map(|c| c.row_id),
            minute,
            endpoint,
        };
        let counted = self.shards.with(|tallies| {
            if let Some(tally) = tallies.get_mut(&key) {
                tally.counts.add(outcome);
                return true;
            }
            if self.entries.fetch_add(1, Ordering::Relaxed) >= self.capacity {
                self.entries.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
            tallies.insert(
                key,
                Tally {
                    client_id: client.map(|c| c.client_id.clone()),
                    counts: MinuteCounts::of(outcome),
                },
            );
            true
        });
        if !counted {
            self.drop_count();
        }
    }

    fn drop_count(&self) {
        self.metrics.dropped.inc();
        self.dropped_since_flush.fetch_add(1, Ordering::Relaxed);
    }

    /// Drains every shard into one batch: rows for each bucket size, for each client and for
    /// all clients together, sorted by key.
    pub fn take_batch(&self, now: DateTime<Utc>) -> Result<UsageBatch, Error> {
        // Each counter becomes one minute row; the all-clients rows are summed on the way.
        let mut minutes = Vec::new();
        let mut all_clients: HashMap<(i32, u16), Counters> = HashMap::new();
        for tallies in self.shards.take_each() {
            self.entries.fetch_sub(tallies.len(), Ordering::Relaxed);
            minutes.reserve(tallies.len());
            for (key, tally) in tallies {
                let counters = tally.counts.widen();
                all_clients
                    .entry((key.minute, key.endpoint))
                    .or_default()
                    .merge(&counters);
                if let Some(client) = tally.client_id {
                    let row = self.row(client.shared_str(), key.minute, key.endpoint, counters);
                    minutes.push(row);
                }
            }
        }
        let everyone: Arc<str> = ALL_CLIENTS.into();
        minutes.extend(
            all_clients
                .into_iter()
                .map(|((minute, endpoint), counters)| {
                    self.row(everyone.clone(), minute, endpoint, counters)
                }),
        );
        let hours = in_buckets(minutes.clone(), Granularity::Hour);
        let days = in_buckets(minutes.clone(), Granularity::Day);
        let minutes = in_buckets(minutes, Granularity::Minute);
        let sequence = self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(UsageBatch {
            id: format!("{}-{sequence}", self.node),
            at: now,
            tables: vec![
                (Granularity::Minute, minutes),
                (Granularity::Hour, hours),
                (Granularity::Day, days),
            ],
        })
    }

    fn row(&self, client_id: Arc<str>, minute: i32, endpoint: u16, counters: Counters) -> UsageRow {
        UsageRow {
            client_id,
            bucket: DateTime::from_timestamp(i64::from(minute) * 60, 0).unwrap_or_default(),
            endpoint: self.endpoints[usize::from(endpoint)].clone(),
            counters,
        }
    }

    /// Writes what was counted. Parts of a batch that failed before are written first, as they
    /// were; while they keep failing, new counts stay in memory (bounded).
    pub async fn flush(&self, store: &dyn Store, now: DateTime<Utc>) -> Result<(), Error> {
        let dropped = self.dropped_since_flush.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::error!(
                dropped,
                capacity = self.capacity,
                "usage counters full: uses were not counted"
            );
        }
        let mut pending = self.pending.lock().await;
        self.write_parts(store, &mut pending).await?;
        let batch = self.take_batch(now)?;
        if batch.is_empty() {
            return Ok(());
        }
        let rows = batch.rows();
        pending.extend(batch.into_parts(ROWS_PER_WRITE));
        let started = std::time::Instant::now();
        self.write_parts(store, &mut pending).await?;
        tracing::debug!(
            rows,
            seconds = started.elapsed().as_secs_f64(),
            "usage batch written"
        );
        Ok(())
    }

    /// Writes the parts in order, each dropped once written; stops at the first failure.
    async fn write_parts(
        &self,
        store: &dyn Store,
        parts: &mut VecDeque<UsageBatch>,
    ) -> Result<(), Error> {
        while let Some(part) = parts.front() {
            self.write(store, part).await?;
            parts.pop_front();
        }
        Ok(())
    }

    async fn write(&self, store: &dyn Store, batch: &UsageBatch) -> Result<(), Error> {
        match store.record_usage(batch).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.metrics.flush_failures.inc();
                Err(e.into())
            }
        }
    }
}

/// `rows` moved into buckets of `granularity`, sorted by key, each key once. Sorted by text,
/// not by index: every node then writes in the same order whatever its route table.
fn in_buckets(mut rows: Vec<UsageRow>, granularity: Granularity) -> Vec<UsageRow> {
    for row in &mut rows {
        row.bucket = granularity.floor(row.bucket);
    }
    rows.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
    rows.dedup_by(|later, kept| {
        let same = later.key() == kept.key();
        if same {
            kept.counters.merge(&later.counters);
        }
        same
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::client::{ClientDraft, NewClient};

    fn client(row_id: i64) -> Client {
        let now = crate::domain::now();
        let draft = ClientDraft {
            name: format!("c{row_id}"),
            ..ClientDraft::default()
        };
        let key = crate::domain::api_key::generate().unwrap();
        let mut client = NewClient::validate(draft, now).unwrap().into_client(
            ClientId::generate().unwrap(),
            &key,
            now,
        );
        client.row_id = row_id;
        client
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn rows(batch: &UsageBatch, granularity: Granularity) -> &[UsageRow] {
        &batch
            .tables
            .iter()
            .find(|(g, _)| *g == granularity)
            .unwrap()
            .1
    }

    #[test]
    fn counts_from_many_threads_add_up_in_one_sorted_batch() {
        let meter = Meter::new(true, ["/v1/chat".into()], 1000, MeterMetrics::default()).unwrap();
        let (a, b) = (client(1), client(2));
        let t = at("2026-12-01T10:15:30Z");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..250 {
                        meter.count(Some(&a), Endpoint::Route("/v1/chat"), Outcome::Allowed, t);
                        meter.count(Some(&b), Endpoint::Verify, Outcome::RateLimited, t);
                        meter.count(None, Endpoint::Token, Outcome::Invalid, t);
                    }
                });
            }
        });
        let batch = meter.take_batch(t).unwrap();
        let minute = rows(&batch, Granularity::Minute);
        let keys: Vec<_> = minute
            .iter()
            .map(|r| (&*r.client_id, &*r.endpoint))
            .collect();
        let (ida, idb) = (a.client_id.as_str(), b.client_id.as_str());
        let mut expected = vec![
            ("*", "/v1/chat"),
            ("*", "token"),
            ("*", "verify"),
            (ida, "/v1/chat"),
            (idb, "verify"),
        ];
        expected.sort();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "rows come in key order");
        assert_eq!(sorted, expected);
        let of = |client: &str, endpoint: &str| {
            minute
                .iter()
                .find(|r| &*r.client_id == client && &*r.endpoint == endpoint)
                .unwrap()
                .counters
        };
        assert_eq!(of(ida, "/v1/chat").get(Outcome::Allowed), 1000);
        assert_eq!(of(idb, "verify").get(Outcome::RateLimited), 1000);
        assert_eq!(of("*", "token").get(Outcome::Invalid), 1000);
        assert_eq!(of("*", "/v1/chat").total(), 1000);
        let hour = rows(&batch, Granularity::Hour);
        assert!(hour.iter().all(|r| r.bucket == at("2026-12-01T10:00:00Z")));
        assert!(
            rows(&batch, Granularity::Day)
                .iter()
                .all(|r| r.bucket == at("2026-12-01T00:00:00Z"))
        );
        assert!(
            meter.take_batch(t).unwrap().is_empty(),
            "a batch drains the shards"
        );
    }

    #[test]
    fn minutes_are_kept_apart_and_rolled_into_one_hour() {
        let meter = Meter::new(true, [], 1000, MeterMetrics::default()).unwrap();
        let a = client(1);
        meter.count(
            Some(&a),
            Endpoint::Verify,
            Outcome::Allowed,
            at("2026-12-01T10:00:59Z"),
        );
        meter.count(
            Some(&a),
            Endpoint::Verify,
            Outcome::Allowed,
            at("2026-12-01T10:01:00Z"),
        );
        let batch = meter.take_batch(crate::domain::now()).unwrap();
        let of_client = |g| -> Vec<u64> {
            rows(&batch, g)
                .iter()
                .filter(|r| &*r.client_id == a.client_id.as_str())
                .map(|r| r.counters.get(Outcome::Allowed))
                .collect()
        };
        assert_eq!(of_client(Granularity::Minute), vec![1, 1]);
        assert_eq!(of_client(Granularity::Hour), vec![2]);
    }

    #[test]
    fn what_does_not_fit_is_counted_as_dropped() {
        let metrics = MeterMetrics::default();
        let meter = Meter::new(true, [], 2, metrics.clone()).unwrap();
        let t = at("2026-12-01T10:00:00Z");
        for row_id in 1..=5 {
            meter.count(Some(&client(row_id)), Endpoint::Verify, Outcome::Allowed, t);
        }
        meter.count(Some(&client(1)), Endpoint::Verify, Outcome::Allowed, t);
        assert_eq!(metrics.dropped.get(), 3);
        let batch = meter.take_batch(t).unwrap();
        let all = rows(&batch, Granularity::Minute)
            .iter()
            .find(|r| &*r.client_id == ALL_CLIENTS)
            .unwrap();
        assert_eq!(
            all.counters.get(Outcome::Allowed),
            3,
            "two clients fitted, one twice"
        );
        meter.count(Some(&client(9)), Endpoint::Verify, Outcome::Allowed, t);
        assert_eq!(metrics.dropped.get(), 3, "a drained meter has room again");
    }

    #[test]
    fn a_disabled_meter_counts_nothing() {
        let meter = Meter::new(false, [], 10, MeterMetrics::default()).unwrap();
        meter.count(
            None,
            Endpoint::Verify,
            Outcome::Invalid,
            crate::domain::now(),
        );
        assert!(meter.take_batch(crate::domain::now()).unwrap().is_empty());
    }
}
