//! PostgreSQL: the production backend, shared by every node. The clients table is the original
//! service's `api_clients`, extended (see `migrations/postgres`); its legacy columns are
//! nullable, so reads coalesce them to the original defaults.

mod console;
mod credits;
mod lanes;
mod usage;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};

use super::{
    AuditQuery, ClientParts, ClientQuery, DeletionAudit, Edit, Error, KeyColumns, PolicyColumns,
    Store,
};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::audit::{AuditEvent, NewAuditEvent};
use crate::domain::client::{Client, ClientId};
use crate::domain::signing_key::StoredSigningKey;

/// Whether an enabled client holds scope `admin`: `scopes` is a text array.
const ADMIN_EXISTS: &str =
    "SELECT 1 FROM api_clients WHERE enabled IS TRUE AND 'admin' = ANY(scopes) LIMIT 1";

const CLIENT_COLUMNS: &str = "id, client_id, api_key_hash, COALESCE(name, '') AS name, \
    COALESCE(scopes, '{}') AS scopes, COALESCE(rate_limit, 100) AS rate_limit, \
    COALESCE(enabled, FALSE) AS enabled, expires_at, COALESCE(created_at, updated_at) AS created_at, \
    updated_at, last_used_at, metadata, key_id, prev_key_id, prev_key_hash, prev_key_expires_at, \
    token_generation, credits_remaining, credits_refill_amount, credits_refill_interval, \
    credits_period, credits_generation, allowed_networks";

pub struct PostgresStore {
    pool: PgPool,
    /// For the one-row reads of a cache miss: one round trip each.
    lookups: lanes::Lanes,
    /// Usage partitions known to exist (see `usage`), so a flush issues no DDL check.
    partitions: Mutex<HashSet<String>>,
}

impl PostgresStore {
    /// The one client matching `condition` on its one parameter `$1`.
    async fn fetch_client(&self, condition: &str, value: &str) -> Result<Option<Client>, Error> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM api_clients WHERE {condition}");
        let row: Option<ClientRow> = self.lookups.fetch_optional(&sql, value).await?;
        Ok(row.map(ClientRow::into_client))
    }

    /// A pool of `max_connections`, and as many lanes for lookups (opened as used).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let options = PgConnectOptions::from_str(url)?;
        let acquire_timeout = Duration::from_secs(5);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        Ok(PostgresStore {
            pool,
            lookups: lanes::Lanes::new(options, max_connections as usize, acquire_timeout),
            partitions: Mutex::default(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    id: i64,
    client_id: String,
    api_key_hash: String,
    name: String,
    scopes: Vec<String>,
    rate_limit: i32,
    enabled: bool,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    metadata: Json<Map<String, Value>>,
    key_id: Option<String>,
    prev_key_id: Option<String>,
    prev_key_hash: Option<String>,
    prev_key_expires_at: Option<DateTime<Utc>>,
    token_generation: i64,
    credits_remaining: Option<i64>,
    credits_refill_amount: Option<i64>,
    credits_refill_interval: Option<String>,
    credits_period: Option<DateTime<Utc>>,
    credits_generation: i64,
    allowed_networks: Json<Vec<String>>,
}

impl ClientRow {
    fn into_client(self) -> Client {
        ClientParts {
            row_id: self.id,
            client_id: self.client_id,
            api_key_hash: self.api_key_hash,
            name: self.name,
            scopes: self.scopes,
            rate_limit: i64::from(self.rate_limit),
            enabled: self.enabled,
            expires_at: self.expires_at,
            metadata: self.metadata.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_used_at: self.last_used_at,
            key_id: self.key_id,
            prev_key_id: self.prev_key_id,
            prev_key_hash: self.prev_key_hash,
            prev_key_expires_at: self.prev_key_expires_at,
            token_generation: self.token_generation,
            policy: PolicyColumns {
                credits_remaining: self.credits_remaining,
                credits_refill_amount: self.credits_refill_amount,
                credits_refill_interval: self.credits_refill_interval,
                credits_period: self.credits_period,
                credits_generation: self.credits_generation,
                allowed_networks: self.allowed_networks.0,
            },
        }
        .into_client()
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    client_id: Option<String>,
    changes: Json<Value>,
}

/// Stored rate limits are INT in the original table; validated values always fit.
fn rate_limit_column(rate_limit: i64) -> i32 {
    i32::try_from(rate_limit).unwrap_or(i32::MAX)
}

async fn insert_audit(
    tx: &mut Transaction<'static, Postgres>,
    event: &NewAuditEvent,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, client_id, changes) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.at)
    .bind(&event.actor)
    .bind(event.action)
    .bind(event.client_id.as_ref().map(ClientId::as_str))
    .bind(Json(&event.changes))
    .execute(&mut **tx)
    .await?;
    if let Some(client_id) = &event.client_id {
        sqlx::query("INSERT INTO client_changes (client_id, at) VALUES ($1, $2)")
            .bind(client_id.as_str())
            .bind(event.at)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn client_for_update(
    tx: &mut Transaction<'static, Postgres>,
    id: &ClientId,
) -> Result<Option<Client>, Error> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM api_clients WHERE client_id = $1 FOR UPDATE");
    let row: Option<ClientRow> = sqlx::query_as(&sql)
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(ClientRow::into_client))
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), Error> {
        // sqlx takes an advisory lock, so nodes starting together migrate once.
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_client(&self, client: &Client, audit: &NewAuditEvent) -> Result<Client, Error> {
        let mut tx = self.pool.begin().await?;
        let row_id = insert_client_row(&mut tx, client).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Client {
            row_id,
            ..client.clone()
        })
    }

    async fn insert_first_admin(
        &self,
        client: &Client,
        audit: &NewAuditEvent,
    ) -> Result<Option<Client>, Error> {
        let mut tx = self.pool.begin().await?;
        // Nodes starting together on a fresh database: one of them creates the admin.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('relay.bootstrap_admin'))")
            .execute(&mut *tx)
            .await?;
        let found: Option<i32> = sqlx::query_scalar(ADMIN_EXISTS)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_some() {
            return Ok(None);
        }
        let row_id = insert_client_row(&mut tx, client).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(Client {
            row_id,
            ..client.clone()
        }))
    }

    async fn client(&self, id: &ClientId) -> Result<Option<Client>, Error> {
        self.fetch_client("client_id = $1", id.as_str()).await
    }

    async fn client_by_key_id(&self, key_id: &KeyId) -> Result<Option<Client>, Error> {
        self.fetch_client("key_id = $1 OR prev_key_id = $1", key_id.as_str())
            .await
    }

    async fn list_clients(&self, q: &ClientQuery) -> Result<Vec<Client>, Error> {
        // ORDER BY names the table's columns: a bare `created_at` would be the COALESCE of
        // CLIENT_COLUMNS, which no index serves (every list sorted the whole table).
        let sql = format!(
            "SELECT {CLIENT_COLUMNS} FROM api_clients \
             WHERE ($1 OR enabled IS TRUE) \
               AND ($2::text IS NULL OR strpos(lower(name), lower($2)) > 0) \
               AND ($3::text IS NULL OR $3 = ANY(scopes)) \
               AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5)) \
             ORDER BY api_clients.created_at DESC, api_clients.id DESC LIMIT $6"
        );
        let rows: Vec<ClientRow> = sqlx::query_as(&sql)
            .bind(q.include_disabled)
            .bind(q.name_contains.as_deref())
            .bind(q.scope.as_deref())
            .bind(q.after.map(|c| c.created_at))
            .bind(q.after.map(|c| c.row_id))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(ClientRow::into_client).collect())
    }

    async fn update_client(&self, id: &ClientId, edit: Edit<'_>) -> Result<Option<Client>, Error> {
        let mut tx = self.pool.begin().await?;
        let Some(old) = client_for_update(&mut tx, id).await? else {
            return Ok(None);
        };
        let (new, audit) = edit(&old);
        let keys = KeyColumns::of(&new);
        let policy = PolicyColumns::of(&new);
        sqlx::query(
            "UPDATE api_clients SET name = $1, scopes = $2, rate_limit = $3, enabled = $4, \
             expires_at = $5, metadata = $6, updated_at = $7, key_id = $8, \
             api_key_hash = COALESCE($9, api_key_hash), prev_key_id = $10, prev_key_hash = $11, \
             prev_key_expires_at = $12, token_generation = $13, \
             legacy_key_digest = CASE WHEN $8::text IS NULL THEN legacy_key_digest END, \
             credits_remaining = $15, credits_refill_amount = $16, \
             credits_refill_interval = $17, credits_period = $18, credits_generation = $19, \
             allowed_networks = $20 \
             WHERE id = $14",
        )
        .bind(&new.name)
        .bind(&new.scopes)
        .bind(rate_limit_column(new.rate_limit))
        .bind(new.enabled)
        .bind(new.expires_at)
        .bind(Json(&new.metadata))
        .bind(new.updated_at)
        .bind(keys.key_id)
        .bind(keys.api_key_hash)
        .bind(keys.prev_key_id)
        .bind(keys.prev_key_hash)
        .bind(keys.prev_key_expires_at)
        .bind(new.token_generation)
        .bind(old.row_id)
        .bind(policy.credits_remaining)
        .bind(policy.credits_refill_amount)
        .bind(policy.credits_refill_interval)
        .bind(policy.credits_period)
        .bind(policy.credits_generation)
        .bind(Json(&policy.allowed_networks))
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(Some(new))
    }

    async fn delete_client(
        &self,
        id: &ClientId,
        audit: DeletionAudit<'_>,
    ) -> Result<Option<Client>, Error> {
        let mut tx = self.pool.begin().await?;
        let Some(old) = client_for_update(&mut tx, id).await? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM api_clients WHERE id = $1")
            .bind(old.row_id)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, &audit(&old)).await?;
        tx.commit().await?;
        Ok(Some(old))
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, Error> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, client_id, changes FROM audit_events \
             WHERE ($1::text IS NULL OR client_id = $1) AND ($2::bigint IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(q.client_id.as_deref())
        .bind(q.before_id)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEvent {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                client_id: r.client_id,
                changes: r.changes.0,
            })
            .collect())
    }

    async fn record_last_used(&self, uses: &[(ClientId, DateTime<Utc>)]) -> Result<(), Error> {
        if uses.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = uses.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<DateTime<Utc>> = uses.iter().map(|(_, at)| *at).collect();
        // GREATEST ignores NULL, so a first use sets the column and a late batch from another
        // node never moves it backwards.
        sqlx::query(
            "UPDATE api_clients AS c SET last_used_at = GREATEST(c.last_used_at, u.at) \
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(client_id, at) \
             WHERE c.client_id = u.client_id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn has_admin_client(&self) -> Result<bool, Error> {
        let found: Option<i32> = sqlx::query_scalar(ADMIN_EXISTS)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn changes_after(&self, seq: i64) -> Result<Vec<(i64, ClientId)>, Error> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, client_id FROM client_changes WHERE seq > $1 ORDER BY seq LIMIT 10000",
        )
        .bind(seq)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(s, id)| (s, ClientId::new(&id)))
            .collect())
    }

    async fn latest_change(&self) -> Result<i64, Error> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM client_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<(), Error> {
        sqlx::query("DELETE FROM client_changes WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn client_by_legacy_digest(&self, digest: &KeyHash) -> Result<Option<Client>, Error> {
        let condition = "legacy_key_digest = $1 AND legacy_key_digest_of = api_key_hash";
        self.fetch_client(condition, &digest.to_hex()).await
    }

    async fn legacy_candidates(&self) -> Result<Vec<(ClientId, String)>, Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT client_id, api_key_hash FROM api_clients \
             WHERE key_id IS NULL \
             AND (legacy_key_digest_of IS NULL OR legacy_key_digest_of <> api_key_hash) \
             ORDER BY enabled IS TRUE DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, hash)| (ClientId::new(&id), hash))
            .collect())
    }

    async fn upgrade_legacy_key(
        &self,
        id: &ClientId,
        digest: &KeyHash,
        matched_hash: &str,
    ) -> Result<Option<Client>, Error> {
        let mut tx = self.pool.begin().await?;
        // A digest left on another row whose hash has changed since no longer means anything.
        sqlx::query(
            "UPDATE api_clients SET legacy_key_digest = NULL, legacy_key_digest_of = NULL \
             WHERE legacy_key_digest = $1 AND client_id <> $2",
        )
        .bind(digest.to_hex())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "UPDATE api_clients SET legacy_key_digest = $1, legacy_key_digest_of = $3 \
             WHERE client_id = $2 AND key_id IS NULL AND api_key_hash = $3 \
             RETURNING {CLIENT_COLUMNS}"
        );
        let row: Option<ClientRow> = sqlx::query_as(&sql)
            .bind(digest.to_hex())
            .bind(id.as_str())
            .bind(matched_hash)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(ClientRow::into_client))
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, Error> {
        let rows: Vec<(String, Vec<u8>, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT kid, private_key, created_at, retired_at FROM signing_keys \
             ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kid, seed, created, retired)| {
                StoredSigningKey::from_row(kid, seed, created, retired)
            })
            .collect())
    }

    async fn reseal_signing_key(&self, key: &StoredSigningKey) -> Result<(), Error> {
        sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
            .bind(key.stored_seed())
            .bind(&key.kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_first_signing_key(&self, key: &StoredSigningKey) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        // Nodes starting together on a fresh database: one of them creates the key.
        sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let current: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM signing_keys WHERE retired_at IS NULL LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        if current.is_some() {
            return Ok(false);
        }
        insert_signing_key(&mut tx, key).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rotate_signing_key(
        &self,
        key: &StoredSigningKey,
        forget_retired_before: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM signing_keys WHERE retired_at < $1")
            .bind(forget_retired_before)
            .execute(&mut *tx)
            .await?;
        insert_signing_key(&mut tx, key).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_signing_key(
    tx: &mut Transaction<'static, Postgres>,
    key: &StoredSigningKey,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO signing_keys (kid, private_key, created_at) VALUES ($1, $2, $3)")
        .bind(&key.kid)
        .bind(key.stored_seed())
        .bind(key.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts a client row; returns its row id.
async fn insert_client_row(
    tx: &mut Transaction<'static, Postgres>,
    client: &Client,
) -> Result<i64, Error> {
    let keys = KeyColumns::of(client);
    let policy = PolicyColumns::of(client);
    let row_id: i64 = sqlx::query_scalar(
        "INSERT INTO api_clients (client_id, api_key_hash, name, scopes, rate_limit, enabled, \
             expires_at, created_at, updated_at, metadata, key_id, credits_remaining, \
             credits_refill_amount, credits_refill_interval, credits_period, allowed_networks) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING id",
    )
    .bind(client.client_id.as_str())
    .bind(keys.api_key_hash.unwrap_or_default())
    .bind(&client.name)
    .bind(&client.scopes)
    .bind(rate_limit_column(client.rate_limit))
    .bind(client.enabled)
    .bind(client.expires_at)
    .bind(client.created_at)
    .bind(client.updated_at)
    .bind(Json(&client.metadata))
    .bind(keys.key_id)
    .bind(policy.credits_remaining)
    .bind(policy.credits_refill_amount)
    .bind(policy.credits_refill_interval)
    .bind(policy.credits_period)
    .bind(Json(&policy.allowed_networks))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row_id)
}
