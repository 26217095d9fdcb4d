//! Credit balances on PostgreSQL: each statement locks the one row it changes.

use chrono::{DateTime, Utc};

use super::PostgresStore;
use crate::storage::Error;
use crate::storage::credits::{BALANCE, Balance, CreditStore, GIVE_BACK, REFILL, TAKE_EXACT};

type BalanceRow = (i64, i64, Option<DateTime<Utc>>);

fn balance((left, generation, period): BalanceRow) -> Balance {
    Balance {
        left,
        generation,
        period,
    }
}

#[async_trait::async_trait]
impl CreditStore for PostgresStore {
    async fn refill_credits(&self, row_id: i64, period: DateTime<Utc>) -> Result<(), Error> {
        sqlx::query(REFILL)
            .bind(row_id)
            .bind(period)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_exact_credits(&self, row_id: i64, n: i64) -> Result<Option<Balance>, Error> {
        let row: Option<BalanceRow> = sqlx::query_as(TAKE_EXACT)
            .bind(row_id)
            .bind(n)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(balance))
    }

    async fn credit_balance(&self, row_id: i64) -> Result<Option<Balance>, Error> {
        let row: Option<BalanceRow> = sqlx::query_as(BALANCE)
            .bind(row_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(balance))
    }

    async fn give_back_credits(&self, row_id: i64, generation: i64, n: i64) -> Result<(), Error> {
        sqlx::query(GIVE_BACK)
            .bind(row_id)
            .bind(generation)
            .bind(n)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
