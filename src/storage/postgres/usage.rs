//! Usage counts on PostgreSQL. Each table is range-partitioned by time (minutes by day, hours
//! by month, days by year), so retention drops whole partitions and leaves no dead rows to
//! vacuum. Partitions are made ahead of time and, if a flush brings a bucket without one,
//! before the flush's own transaction; DDL runs under one advisory lock, so nodes never race
//! to create or drop the same partition.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use sqlx::Row;

use super::PostgresStore;
use crate::domain::usage::{BucketRange, Counters, Granularity};
use crate::storage::Error;
use crate::storage::usage::{
    ALL_CLIENTS, CLAIM_BATCH, ClientUsage, Dialect, SeriesQuery, TopQuery, UsageBatch, UsageRow,
    UsageStore, client_usage, column_value, read_counters, series_of_clients_sql, series_sql,
    table, top_clients_sql, upsert_sql,
};

const DIALECT: Dialect = Dialect {
    integer: "BIGINT",
    endpoint_param: "$4::text",
};

/// Serialises partition DDL between nodes ("relay-us" in ASCII).
const PARTITION_LOCK: i64 = 0x7265_6c61_792d_7573;

/// One partition: the table it belongs to and the range of bucket starts it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Partition {
    name: String,
    parent: &'static str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

/// The partition holding buckets of size `granularity` that start at `bucket`.
fn partition_of(granularity: Granularity, bucket: DateTime<Utc>) -> Partition {
    let date = bucket.date_naive();
    let parent = table(granularity);
    let (suffix, start, end) = match granularity {
        Granularity::Minute => {
            let start = midnight(date);
            (
                date.format("%Y%m%d").to_string(),
                start,
                start + Duration::days(1),
            )
        }
        Granularity::Hour => {
            let first = date.with_day(1).unwrap_or(date);
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(first);
            (
                first.format("%Y%m").to_string(),
                midnight(first),
                midnight(next),
            )
        }
        Granularity::Day => {
            let first = date.with_ordinal(1).unwrap_or(date);
            let next = first.with_year(first.year() + 1).unwrap_or(first);
            (
                first.format("%Y").to_string(),
                midnight(first),
                midnight(next),
            )
        }
    };
    Partition {
        name: format!("{parent}_p{suffix}"),
        parent,
        start,
        end,
    }
}

/// The partition a name of ours stands for; `None` for a table we did not make.
fn parse_partition(granularity: Granularity, name: &str) -> Option<Partition> {
    let digits = name.strip_prefix(table(granularity))?.strip_prefix("_p")?;
    let date = match (granularity, digits.len()) {
        (Granularity::Minute, 8) => NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?,
        (Granularity::Hour, 6) => {
            NaiveDate::parse_from_str(&format!("{digits}01"), "%Y%m%d").ok()?
        }
        (Granularity::Day, 4) => NaiveDate::from_yo_opt(digits.parse().ok()?, 1)?,
        _ => return None,
    };
    let partition = partition_of(granularity, midnight(date));
    (partition.name == name).then_some(partition)
}

fn literal(t: DateTime<Utc>) -> String {
    t.format("'%Y-%m-%d %H:%M:%S+00'").to_string()
}

impl PostgresStore {
    /// The partitions that exist now, by name.
    async fn existing_partitions(&self) -> Result<HashSet<String>, Error> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = ANY($1) AND pg_table_is_visible(c.oid)",
        )
        .bind(Granularity::ALL.map(table).to_vec())
        .fetch_all(&self.pool)
        .await?;
        Ok(names.into_iter().collect())
    }

    /// Makes every partition in `needed` that does not exist yet.
    async fn ensure_partitions(&self, needed: HashSet<Partition>) -> Result<(), Error> {
        let unknown = |known: &HashSet<String>| -> Vec<Partition> {
            needed
                .iter()
                .filter(|p| !known.contains(&p.name))
                .cloned()
                .collect()
        };
        if unknown(&self.known_partitions()).is_empty() {
            return Ok(());
        }
        let existing = self.existing_partitions().await?;
        let mut missing = unknown(&existing);
        // Creating a partition locks its parent; taking the parents in the order flushes
        // write them (minute, hour, day) means a flush and this can never deadlock.
        let parents = Granularity::ALL.map(table);
        missing.sort_by_key(|p| (parents.iter().position(|t| *t == p.parent), p.start));
        self.remember_partitions(existing);
        if missing.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        for p in &missing {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})",
                p.name,
                p.parent,
                literal(p.start),
                literal(p.end)
            );
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.remember_partitions(missing.into_iter().map(|p| p.name).collect());
        Ok(())
    }

    fn known_partitions(&self) -> HashSet<String> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember_partitions(&self, names: HashSet<String>) {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(names);
    }

    fn forget_partitions(&self) {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    async fn write_batch(&self, batch: &UsageBatch) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(CLAIM_BATCH)
            .bind(&batch.id)
            .bind(batch.at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        // One statement per table, rows in key order: concurrent flushes lock shared rows
        // (the all-clients ones) in the same order, so they wait for each other, never deadlock.
        for (granularity, rows) in &batch.tables {
            if rows.is_empty() {
                continue;
            }
            let sql = upsert_sql(
                *granularity,
                "SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::int8[], \
                 $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[])",
            );
            let mut query = sqlx::query(&sql)
                .bind(rows.iter().map(|r| &*r.client_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.bucket).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| &*r.endpoint).collect::<Vec<_>>());
            for column in 0..8 {
                query = query.bind(counter_column(rows, column));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

fn counter_column(rows: &[UsageRow], column: usize) -> Vec<i64> {
    rows.iter()
        .map(|r| column_value(r.counters.0[column]))
        .collect()
}

#[async_trait::async_trait]
impl UsageStore for PostgresStore {
    async fn record_usage(&self, batch: &UsageBatch) -> Result<bool, Error> {
        let needed = batch
            .tables
            .iter()
            .flat_map(|(g, rows)| rows.iter().map(|r| partition_of(*g, r.bucket)))
            .collect();
        let result = match self.ensure_partitions(needed).await {
            Ok(()) => self.write_batch(batch).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Another node may have dropped a partition this one remembered: look again.
            self.forget_partitions();
        }
        result
    }

    async fn usage_series(
        &self,
        query: &SeriesQuery<'_>,
    ) -> Result<Vec<(DateTime<Utc>, Counters)>, Error> {
        let sql = series_sql(query.range.granularity, &DIALECT);
        let rows = sqlx::query(&sql)
            .bind(query.client_id)
            .bind(query.range.start)
            .bind(query.range.end)
            .bind(query.endpoint)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, read_counters(row, 1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    async fn usage_series_of_clients(
        &self,
        client_ids: &[&str],
        range: BucketRange,
    ) -> Result<Vec<(String, DateTime<Utc>, Counters)>, Error> {
        let sql = series_of_clients_sql(range.granularity, &DIALECT, "SELECT UNNEST($1::text[])");
        let rows = sqlx::query(&sql)
            .bind(client_ids)
            .bind(range.start)
            .bind(range.end)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, read_counters(row, 2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    async fn top_clients(&self, query: &TopQuery<'_>) -> Result<Vec<ClientUsage>, Error> {
        let sql = top_clients_sql(query.range.granularity, &DIALECT);
        let rows = sqlx::query(&sql)
            .bind(ALL_CLIENTS)
            .bind(query.range.start)
            .bind(query.range.end)
            .bind(query.endpoint)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(client_usage)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    async fn prepare_usage(&self, now: DateTime<Utc>) -> Result<(), Error> {
        let mut needed = HashSet::new();
        for granularity in Granularity::ALL {
            // This span, the next (made before it starts) and the last (for late flushes).
            let current = partition_of(granularity, now);
            needed.insert(partition_of(
                granularity,
                current.start - Duration::seconds(1),
            ));
            needed.insert(partition_of(granularity, current.end));
            needed.insert(current);
        }
        self.ensure_partitions(needed).await
    }

    async fn prune_usage(
        &self,
        cutoffs: &[(Granularity, DateTime<Utc>)],
        batches_before: DateTime<Utc>,
    ) -> Result<(), Error> {
        let existing = self.existing_partitions().await?;
        let expired: Vec<Partition> = cutoffs
            .iter()
            .flat_map(|(granularity, cutoff)| {
                existing
                    .iter()
                    .filter_map(|name| parse_partition(*granularity, name))
                    .filter(|p| p.end <= *cutoff)
                    .collect::<Vec<_>>()
            })
            .collect();
        if !expired.is_empty() {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PARTITION_LOCK)
                .execute(&mut *tx)
                .await?;
            for p in &expired {
                sqlx::query(&format!("DROP TABLE IF EXISTS {}", p.name))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.forget_partitions();
        }
        sqlx::query("DELETE FROM usage_batches WHERE at < $1")
            .bind(batches_before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn partitions_span_a_day_a_month_or_a_year_and_round_trip_their_names() {
        let t = at("2026-12-31T23:59:00Z");
        let minute = partition_of(Granularity::Minute, t);
        assert_eq!(minute.name, "usage_minute_p20261231");
        assert_eq!(
            (minute.start, minute.end),
            (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        let hour = partition_of(Granularity::Hour, t);
        assert_eq!(hour.name, "usage_hour_p202612");
        assert_eq!(hour.end, at("2027-01-01T00:00:00Z"));
        let day = partition_of(Granularity::Day, t);
        assert_eq!(day.name, "usage_day_p2026");
        assert_eq!(day.start, at("2026-01-01T00:00:00Z"));
        for (g, p) in [
            (Granularity::Minute, minute),
            (Granularity::Hour, hour),
            (Granularity::Day, day),
        ] {
            assert_eq!(parse_partition(g, &p.name), Some(p));
        }
        assert_eq!(
            parse_partition(Granularity::Hour, "usage_hour_p202613"),
            None
        );
        assert_eq!(
            parse_partition(Granularity::Day, "usage_minute_p2026"),
            None
        );
    }
}
