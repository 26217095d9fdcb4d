//! Usage counts on SQLite: plain tables (one writer at a time, so no ordering concern), old
//! buckets removed in small batches so no delete holds the write lock for long.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{ROWS_PER_STATEMENT, SqliteStore, micros, time, values_for};
use crate::domain::usage::{BucketRange, Counters, Granularity};
use crate::storage::Error;
use crate::storage::usage::{
    ALL_CLIENTS, CLAIM_BATCH, COUNTER_COLUMNS, ClientUsage, Dialect, SeriesQuery, TopQuery,
    UsageBatch, UsageStore, client_usage, column_value, read_counters, series_of_clients_sql,
    series_sql, table, top_clients_sql, upsert_sql,
};

const DIALECT: Dialect = Dialect {
    integer: "INTEGER",
    endpoint_param: "$4",
};

/// Rows removed per statement when pruning.
const PRUNE_BATCH: u64 = 2000;

#[async_trait::async_trait]
impl UsageStore for SqliteStore {
    async fn record_usage(&self, batch: &UsageBatch) -> Result<bool, Error> {
        let mut tx = self.write_tx().await?;
        let fresh = sqlx::query(CLAIM_BATCH)
            .bind(&batch.id)
            .bind(micros(batch.at))
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        for (granularity, rows) in &batch.tables {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let sql = upsert_sql(
                    *granularity,
                    &values_for(chunk.len(), 3 + COUNTER_COLUMNS.len()),
                );
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = query
                        .bind(&*row.client_id)
                        .bind(micros(row.bucket))
                        .bind(&*row.endpoint);
                    for n in row.counters.0 {
                        query = query.bind(column_value(n));
                    }
                }
                query.execute(&mut **tx).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn usage_series(
        &self,
        query: &SeriesQuery<'_>,
    ) -> Result<Vec<(DateTime<Utc>, Counters)>, Error> {
        let sql = series_sql(query.range.granularity, &DIALECT);
        let rows = sqlx::query(&sql)
            .bind(query.client_id)
            .bind(micros(query.range.start))
            .bind(micros(query.range.end))
            .bind(query.endpoint)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((time(row.try_get(0)?), read_counters(row, 1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    async fn usage_series_of_clients(
        &self,
        client_ids: &[&str],
        range: BucketRange,
    ) -> Result<Vec<(String, DateTime<Utc>, Counters)>, Error> {
        let sql = series_of_clients_sql(
            range.granularity,
            &DIALECT,
            "SELECT value FROM json_each($1)",
        );
        let ids = serde_json::Value::from(client_ids.to_vec()).to_string();
        let rows = sqlx::query(&sql)
            .bind(ids)
            .bind(micros(range.start))
            .bind(micros(range.end))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    time(row.try_get(1)?),
                    read_counters(row, 2)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    async fn top_clients(&self, query: &TopQuery<'_>) -> Result<Vec<ClientUsage>, Error> {
        let sql = top_clients_sql(query.range.granularity, &DIALECT);
        let rows = sqlx::query(&sql)
            .bind(ALL_CLIENTS)
            .bind(micros(query.range.start))
            .bind(micros(query.range.end))
            .bind(query.endpoint)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(client_usage)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    async fn prepare_usage(&self, _now: DateTime<Utc>) -> Result<(), Error> {
        Ok(())
    }

    async fn prune_usage(
        &self,
        cutoffs: &[(Granularity, DateTime<Utc>)],
        batches_before: DateTime<Utc>,
    ) -> Result<(), Error> {
        let targets = cutoffs
            .iter()
            .map(|(g, cutoff)| (table(*g), "bucket_start", *cutoff))
            .chain([("usage_batches", "at", batches_before)]);
        for (t, column, cutoff) in targets {
            let sql = format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE {column} < $1 LIMIT {PRUNE_BATCH})"
            );
            // Each batch commits on its own, so writers wait for one batch at most.
            while sqlx::query(&sql)
                .bind(micros(cutoff))
                .execute(&self.pool)
                .await?
                .rows_affected()
                == PRUNE_BATCH
            {
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }
}
