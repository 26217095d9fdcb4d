//! Console sessions and client counts on SQLite.

use chrono::{DateTime, Utc};

use super::{SqliteStore, micros, time};
use crate::storage::Error;
use crate::storage::console::{
    ConsoleStore, DELETE_CLIENT_SESSIONS, DELETE_SESSION, INSERT_SESSION, PRUNE_SESSIONS,
    SELECT_SESSION, StatusCounts, StoredSession,
};

type SessionRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
);

#[async_trait::async_trait]
impl ConsoleStore for SqliteStore {
    async fn insert_session(&self, s: &StoredSession) -> Result<(), Error> {
        sqlx::query(INSERT_SESSION)
            .bind(&s.token_hash)
            .bind(&s.actor)
            .bind(&s.client_id)
            .bind(&s.key_id)
            .bind(&s.csrf)
            .bind(micros(s.created_at))
            .bind(micros(s.expires_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<StoredSession>, Error> {
        let row: Option<SessionRow> = sqlx::query_as(SELECT_SESSION)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| StoredSession {
            token_hash: r.0,
            actor: r.1,
            client_id: r.2,
            key_id: r.3,
            csrf: r.4,
            created_at: time(r.5),
            expires_at: time(r.6),
        }))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), Error> {
        sqlx::query(DELETE_SESSION)
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_client_sessions(&self, client_id: &str) -> Result<(), Error> {
        sqlx::query(DELETE_CLIENT_SESSIONS)
            .bind(client_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_sessions(&self, now: DateTime<Utc>) -> Result<(), Error> {
        sqlx::query(PRUNE_SESSIONS)
            .bind(micros(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn status_counts(
        &self,
        now: DateTime<Utc>,
        soon: DateTime<Utc>,
    ) -> Result<StatusCounts, Error> {
        let (enabled, disabled, expired, expiring): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
             COALESCE(SUM(enabled AND (expires_at IS NULL OR expires_at > $1)), 0), \
             COALESCE(SUM(NOT enabled), 0), \
             COALESCE(SUM(enabled AND expires_at <= $1), 0), \
             COALESCE(SUM(enabled AND expires_at > $1 AND expires_at <= $2), 0) \
             FROM api_clients",
        )
        .bind(micros(now))
        .bind(micros(soon))
        .fetch_one(&self.pool)
        .await?;
        Ok(StatusCounts {
            enabled,
            disabled,
            expired,
            expiring,
        })
    }
}
