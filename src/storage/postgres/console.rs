//! Console sessions and client counts on PostgreSQL.

use chrono::{DateTime, Utc};

use super::PostgresStore;
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
    DateTime<Utc>,
    DateTime<Utc>,
);

#[async_trait::async_trait]
impl ConsoleStore for PostgresStore {
    async fn insert_session(&self, s: &StoredSession) -> Result<(), Error> {
        sqlx::query(INSERT_SESSION)
            .bind(&s.token_hash)
            .bind(&s.actor)
            .bind(&s.client_id)
            .bind(&s.key_id)
            .bind(&s.csrf)
            .bind(s.created_at)
            .bind(s.expires_at)
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
            created_at: r.5,
            expires_at: r.6,
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
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn status_counts(
        &self,
        now: DateTime<Utc>,
        soon: DateTime<Utc>,
    ) -> Result<StatusCounts, Error> {
        // The original's columns allow NULL: a NULL `enabled` reads as disabled, as elsewhere.
        let (enabled, disabled, expired, expiring): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
             COUNT(*) FILTER (WHERE enabled IS TRUE AND (expires_at IS NULL OR expires_at > $1)), \
             COUNT(*) FILTER (WHERE enabled IS NOT TRUE), \
             COUNT(*) FILTER (WHERE enabled IS TRUE AND expires_at <= $1), \
             COUNT(*) FILTER (WHERE enabled IS TRUE AND expires_at > $1 AND expires_at <= $2) \
             FROM api_clients",
        )
        .bind(now)
        .bind(soon)
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
