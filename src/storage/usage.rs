//! Usage counts as stored: one table per bucket size (`usage_minute`, `usage_hour`,
//! `usage_day`), a row per client, bucket and endpoint with a column per outcome, plus rows
//! under `ALL_CLIENTS` that hold every use together (those naming no client included). A flush
//! adds its deltas in parts (`UsageBatch::into_parts`), each one transaction of upserts in key
//! order, so any number of nodes write at once without losing a count or deadlocking; each
//! part's batch id makes a retried part count once.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Error;
use crate::domain::usage::{BucketRange, Counters, Granularity, Outcome};

/// The `client_id` of the rows that sum every use: no client id has this shape.
pub const ALL_CLIENTS: &str = "*";

/// One row's deltas. The texts are shared: a batch from a million clients holds each client
/// id and endpoint once, however many rows name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// A client's id, or `ALL_CLIENTS`.
    pub client_id: Arc<str>,
    pub bucket: DateTime<Utc>,
    pub endpoint: Arc<str>,
    pub counters: Counters,
}

impl UsageRow {
    /// What a table is keyed and a batch sorted by.
    pub fn key(&self) -> (&str, DateTime<Utc>, &str) {
        (&self.client_id, self.bucket, &self.endpoint)
    }
}

/// What one flush writes: for each bucket size, rows sorted by `(client_id, bucket,
/// endpoint)`, each key once.
#[derive(Debug, Clone)]
pub struct UsageBatch {
    /// Unique per flush; written in the same transaction, so a retry of a batch that did
    /// commit is recognised and not counted twice.
    pub id: String,
    pub at: DateTime<Utc>,
    pub tables: Vec<(Granularity, Vec<UsageRow>)>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|(_, rows)| rows.is_empty())
    }

    pub fn rows(&self) -> usize {
        self.tables.iter().map(|(_, rows)| rows.len()).sum()
    }

    /// The batch cut into parts of at most `rows` rows, in order, each with an id of its own:
    /// each part is one transaction, so a flush from a million clients holds the database's
    /// write lock for moments rather than seconds, and a retry repeats only unwritten parts.
    pub fn into_parts(self, rows: usize) -> Vec<UsageBatch> {
        let rows = rows.max(1);
        let mut parts: Vec<UsageBatch> = Vec::new();
        let mut room = 0;
        for (granularity, table) in self.tables {
            let mut table = table.into_iter().peekable();
            while table.peek().is_some() {
                if room == 0 {
                    parts.push(UsageBatch {
                        id: format!("{}.{}", self.id, parts.len()),
                        at: self.at,
                        tables: Vec::new(),
                    });
                    room = rows;
                }
                let taken: Vec<UsageRow> = table.by_ref().take(room).collect();
                room -= taken.len();
                if let Some(part) = parts.last_mut() {
                    part.tables.push((granularity, taken));
                }
            }
        }
        parts
    }
}

/// One series: a client's (or `ALL_CLIENTS`') buckets in a range, of one endpoint or all.
#[derive(Debug, Clone)]
pub struct SeriesQuery<'a> {
    pub client_id: &'a str,
    pub endpoint: Option<&'a str>,
    pub range: BucketRange,
}

/// The clients with the most uses in a range.
#[derive(Debug, Clone)]
pub struct TopQuery<'a> {
    pub endpoint: Option<&'a str>,
    pub range: BucketRange,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientUsage {
    pub client_id: String,
    /// `None` once the client has been deleted (its counts stay).
    pub name: Option<String>,
    pub counters: Counters,
}

#[async_trait::async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds the batch's deltas in one transaction; `false` when this batch id was recorded
    /// before (nothing is added again).
    async fn record_usage(&self, batch: &UsageBatch) -> Result<bool, Error>;
    /// The buckets of the range that hold counts, ascending (summed over endpoints unless
    /// one is named).
    async fn usage_series(
        &self,
        query: &SeriesQuery<'_>,
    ) -> Result<Vec<(DateTime<Utc>, Counters)>, Error>;
    /// Like `usage_series` (all endpoints), for several clients in one query: `(client_id,
    /// bucket, counters)` ordered by client, then bucket.
    async fn usage_series_of_clients(
        &self,
        client_ids: &[&str],
        range: BucketRange,
    ) -> Result<Vec<(String, DateTime<Utc>, Counters)>, Error>;
    /// Most uses first, ties by client id.
    async fn top_clients(&self, query: &TopQuery<'_>) -> Result<Vec<ClientUsage>, Error>;
    /// Prepares storage for the buckets around `now` (PostgreSQL creates partitions ahead).
    async fn prepare_usage(&self, now: DateTime<Utc>) -> Result<(), Error>;
    /// Forgets buckets older than each size's cutoff and batch ids older than
    /// `batches_before`.
    async fn prune_usage(
        &self,
        cutoffs: &[(Granularity, DateTime<Utc>)],
        batches_before: DateTime<Utc>,
    ) -> Result<(), Error>;
}

/// Records a batch id in the flush's transaction; no row affected: the batch was written before.
pub(super) const CLAIM_BATCH: &str =
    "INSERT INTO usage_batches (id, at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

/// The counter columns, in the order of `Outcome::ALL`.
pub(super) const COUNTER_COLUMNS: [&str; 8] = [
    "allowed",
    "rate_limited",
    "usage_exceeded",
    "forbidden",
    "disabled",
    "expired",
    "upstream_error",
    "invalid",
];

pub(super) fn table(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "usage_minute",
        Granularity::Hour => "usage_hour",
        Granularity::Day => "usage_day",
    }
}

/// How a backend spells what the shared queries need.
pub(super) struct Dialect {
    /// The type a backend reads as `i64`.
    pub integer: &'static str,
    /// The optional endpoint parameter, `$4`, typed so `IS NULL` works on it.
    pub endpoint_param: &'static str,
}

/// One series: `$1` client, `$2`..`$3` bucket range, `$4` endpoint or NULL.
pub(super) fn series_sql(granularity: Granularity, dialect: &Dialect) -> String {
    format!(
        "SELECT bucket_start, {} FROM {} WHERE client_id = $1 \
         AND bucket_start >= $2 AND bucket_start < $3 AND ({e} IS NULL OR endpoint = {e}) \
         GROUP BY bucket_start ORDER BY bucket_start",
        summed_counters(dialect.integer),
        table(granularity),
        e = dialect.endpoint_param,
    )
}

/// Several clients' series: `$1` the clients (as `clients_param` spells a list), `$2`..`$3`
/// the bucket range. Columns: client_id, bucket_start, the counters.
pub(super) fn series_of_clients_sql(
    granularity: Granularity,
    dialect: &Dialect,
    clients_param: &str,
) -> String {
    format!(
        "SELECT client_id, bucket_start, {} FROM {} WHERE client_id IN ({clients_param}) \
         AND bucket_start >= $2 AND bucket_start < $3 \
         GROUP BY client_id, bucket_start ORDER BY client_id, bucket_start",
        summed_counters(dialect.integer),
        table(granularity),
    )
}

/// Top clients: `$1` `ALL_CLIENTS` (left out), `$2`..`$3` bucket range, `$4` endpoint or
/// NULL, `$5` limit. Columns: client_id, the counters, name.
pub(super) fn top_clients_sql(granularity: Granularity, dialect: &Dialect) -> String {
    format!(
        "WITH totals AS (SELECT client_id, {} FROM {} WHERE client_id <> $1 \
         AND bucket_start >= $2 AND bucket_start < $3 AND ({e} IS NULL OR endpoint = {e}) \
         GROUP BY client_id) \
         SELECT t.*, c.name FROM totals t LEFT JOIN api_clients c ON c.client_id = t.client_id \
         ORDER BY {} DESC, t.client_id LIMIT $5",
        summed_counters(dialect.integer),
        table(granularity),
        COUNTER_COLUMNS.map(|c| format!("t.{c}")).join(" + "),
        e = dialect.endpoint_param,
    )
}

/// An upsert of one row per placeholder set `values` into `table`, adding to what is there.
pub(super) fn upsert_sql(granularity: Granularity, values: &str) -> String {
    let t = table(granularity);
    format!(
        "INSERT INTO {t} (client_id, bucket_start, endpoint, {}) {values} \
         ON CONFLICT (client_id, bucket_start, endpoint) DO UPDATE SET {}",
        COUNTER_COLUMNS.join(", "),
        added_counters(t)
    )
}

/// A row of `top_clients_sql`.
pub(super) fn client_usage<R: sqlx::Row>(row: &R) -> Result<ClientUsage, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ClientUsage {
        client_id: row.try_get(0)?,
        counters: read_counters(row, 1)?,
        name: row.try_get(1 + COUNTER_COLUMNS.len())?,
    })
}

/// `sum(allowed) AS allowed, ...`, each cast to what a backend reads as `i64`.
fn summed_counters(cast: &str) -> String {
    COUNTER_COLUMNS
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS {cast}) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `allowed = t.allowed + excluded.allowed, ...` for an upsert into `table`.
fn added_counters(table: &str) -> String {
    COUNTER_COLUMNS
        .iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the eight counter columns starting at column `first`.
pub(super) fn read_counters<R: sqlx::Row>(row: &R, first: usize) -> Result<Counters, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut counters = Counters::default();
    for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
        let n: i64 = row.try_get(first + i)?;
        counters.add(outcome, u64::try_from(n).unwrap_or(0));
    }
    Ok(counters)
}

/// A counter as a column value (counts never reach `i64::MAX`; saturate if one did).
pub(super) fn column_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(client: &str, minute: i64) -> UsageRow {
        UsageRow {
            client_id: client.into(),
            bucket: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            endpoint: "verify".into(),
            counters: Counters::of(Outcome::Allowed),
        }
    }

    #[test]
    fn parts_hold_every_row_once_in_order_under_ids_of_their_own() {
        let minutes: Vec<UsageRow> = (0..7).map(|m| row("a", m)).collect();
        let hours = vec![row("a", 0), row("b", 0)];
        let batch = UsageBatch {
            id: "node-3".into(),
            at: DateTime::from_timestamp(0, 0).unwrap(),
            tables: vec![(Granularity::Minute, minutes), (Granularity::Hour, hours)],
        };
        let parts = batch.clone().into_parts(4);
        let ids: Vec<&str> = parts.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["node-3.0", "node-3.1", "node-3.2"]);
        assert_eq!(
            parts.iter().map(UsageBatch::rows).collect::<Vec<_>>(),
            [4, 4, 1]
        );
        let mut joined: Vec<(Granularity, Vec<UsageRow>)> = Vec::new();
        for (granularity, rows) in parts.into_iter().flat_map(|p| p.tables) {
            match joined.last_mut() {
                Some((g, kept)) if *g == granularity => kept.extend(rows),
                _ => joined.push((granularity, rows)),
            }
        }
        assert_eq!(joined, batch.tables, "the rows, in order, each once");
        assert!(batch.into_parts(100).len() == 1);
    }
}
