//! SQLite: the zero-set-up default. One file in WAL mode; timestamps are Unix microseconds,
//! scopes and metadata JSON text. Writes take the write lock up front (`BEGIN IMMEDIATE`) so a
//! read-then-write transaction never fails on a lock upgrade.

mod console;
mod credits;
mod usage;

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlitePool, Transaction};

use super::{
    AuditQuery, ClientParts, ClientQuery, DeletionAudit, Edit, Error, KeyColumns, PolicyColumns,
    Store,
};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::audit::{AuditEvent, NewAuditEvent};
use crate::domain::client::{Client, ClientId};
use crate::domain::signing_key::StoredSigningKey;

/// Whether an enabled client holds scope `admin`: `scopes` is a JSON array.
const ADMIN_EXISTS: &str = "SELECT 1 FROM api_clients WHERE enabled AND EXISTS \
    (SELECT 1 FROM json_each(api_clients.scopes) WHERE value = 'admin') LIMIT 1";

const CLIENT_COLUMNS: &str = "id, client_id, api_key_hash, name, scopes, rate_limit, enabled, \
    expires_at, created_at, updated_at, last_used_at, metadata, key_id, prev_key_id, \
    prev_key_hash, prev_key_expires_at, token_generation, credits_remaining, \
    credits_refill_amount, credits_refill_interval, credits_period, credits_generation, \
    allowed_networks";

pub struct SqliteStore {
    pool: SqlitePool,
    /// This process's writers queue here, in arrival order, before taking SQLite's one write
    /// lock: its busy handler is not fair, so a flush writing part after part could otherwise
    /// keep an admin's write waiting for seconds.
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction, with its turn in the writers' queue (given back when it ends).
struct WriteTx {
    tx: Transaction<'static, sqlx::Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTx {
    type Target = Transaction<'static, sqlx::Sqlite>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl SqliteStore {
    /// The one client matching `condition` on its one parameter `$1`.
    async fn fetch_client(&self, condition: &str, value: &str) -> Result<Option<Client>, Error> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM api_clients WHERE {condition}");
        let row: Option<ClientRow> = sqlx::query_as(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(ClientRow::into_client))
    }

    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // Reads go through one memory map of the file, shared by every connection (and
            // given back by the OS under pressure), rather than a private page cache in each:
            // lists and counts over a hundred thousand clients stay in memory, once.
            .pragma("mmap_size", "4294967296");
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            pool,
            writer: Arc::default(),
        })
    }

    async fn write_tx(&self) -> Result<WriteTx, Error> {
        let turn = self.writer.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _turn: turn })
    }
}

/// Rows written per statement by batch writes (usage counts, last uses): each statement is a
/// round trip to the connection's thread, and a flush may carry a row for each of a million
/// clients. At most 11 parameters a row, far below SQLite's limit of 32 766.
const ROWS_PER_STATEMENT: usize = 500;

/// `VALUES (?, ..., ?), (?, ...)`: `rows` rows of `width` parameters. Anonymous parameters
/// bind by position; numbered ones (`$12`) would cost SQLite a search of every name per
/// parameter bound.
fn values_for(rows: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    format!("VALUES {}", vec![row; rows].join(", "))
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    id: i64,
    client_id: String,
    api_key_hash: String,
    name: String,
    scopes: String,
    rate_limit: i64,
    enabled: bool,
    expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    last_used_at: Option<i64>,
    metadata: String,
    key_id: Option<String>,
    prev_key_id: Option<String>,
    prev_key_hash: Option<String>,
    prev_key_expires_at: Option<i64>,
    token_generation: i64,
    credits_remaining: Option<i64>,
    credits_refill_amount: Option<i64>,
    credits_refill_interval: Option<String>,
    credits_period: Option<i64>,
    credits_generation: i64,
    allowed_networks: String,
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl ClientRow {
    fn into_client(self) -> Client {
        ClientParts {
            row_id: self.id,
            client_id: self.client_id,
            api_key_hash: self.api_key_hash,
            name: self.name,
            scopes: serde_json::from_str(&self.scopes).unwrap_or_default(),
            rate_limit: self.rate_limit,
            enabled: self.enabled,
            expires_at: self.expires_at.map(time),
            metadata: serde_json::from_str(&self.metadata).unwrap_or_default(),
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
            last_used_at: self.last_used_at.map(time),
            key_id: self.key_id,
            prev_key_id: self.prev_key_id,
            prev_key_hash: self.prev_key_hash,
            prev_key_expires_at: self.prev_key_expires_at.map(time),
            token_generation: self.token_generation,
            policy: PolicyColumns {
                credits_remaining: self.credits_remaining,
                credits_refill_amount: self.credits_refill_amount,
                credits_refill_interval: self.credits_refill_interval,
                credits_period: self.credits_period.map(time),
                credits_generation: self.credits_generation,
                allowed_networks: serde_json::from_str(&self.allowed_networks).unwrap_or_default(),
            },
        }
        .into_client()
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    client_id: Option<String>,
    changes: String,
}

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

async fn insert_audit(
    tx: &mut Transaction<'static, sqlx::Sqlite>,
    event: &NewAuditEvent,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, client_id, changes) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(micros(event.at))
    .bind(&event.actor)
    .bind(event.action)
    .bind(event.client_id.as_ref().map(ClientId::as_str))
    .bind(json_text(&event.changes))
    .execute(&mut **tx)
    .await?;
    if let Some(client_id) = &event.client_id {
        sqlx::query("INSERT INTO client_changes (client_id, at) VALUES ($1, $2)")
            .bind(client_id.as_str())
            .bind(micros(event.at))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn client_for_update(
    tx: &mut Transaction<'static, sqlx::Sqlite>,
    id: &ClientId,
) -> Result<Option<Client>, Error> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM api_clients WHERE client_id = $1");
    let row: Option<ClientRow> = sqlx::query_as(&sql)
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(ClientRow::into_client))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), Error> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_client(&self, client: &Client, audit: &NewAuditEvent) -> Result<Client, Error> {
        let mut tx = self.write_tx().await?;
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
        let mut tx = self.write_tx().await?;
        let found: Option<i64> = sqlx::query_scalar(ADMIN_EXISTS)
            .fetch_optional(&mut **tx)
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
        let sql = format!(
            "SELECT {CLIENT_COLUMNS} FROM api_clients \
             WHERE ($1 OR enabled) \
               AND ($2 IS NULL OR instr(lower(name), lower($2)) > 0) \
               AND ($3 IS NULL OR EXISTS (SELECT 1 FROM json_each(api_clients.scopes) \
                                          WHERE value = $3)) \
               AND ($4 IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        );
        let rows: Vec<ClientRow> = sqlx::query_as(&sql)
            .bind(q.include_disabled)
            .bind(q.name_contains.as_deref())
            .bind(q.scope.as_deref())
            .bind(q.after.map(|c| micros(c.created_at)))
            .bind(q.after.map(|c| c.row_id))
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(ClientRow::into_client).collect())
    }

    async fn update_client(&self, id: &ClientId, edit: Edit<'_>) -> Result<Option<Client>, Error> {
        let mut tx = self.write_tx().await?;
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
             legacy_key_digest = CASE WHEN $14 IS NULL THEN legacy_key_digest END, \
             credits_remaining = $16, credits_refill_amount = $17, \
             credits_refill_interval = $18, credits_period = $19, credits_generation = $20, \
             allowed_networks = $21 \
             WHERE id = $15",
        )
        .bind(&new.name)
        .bind(json_text(&new.scopes))
        .bind(new.rate_limit)
        .bind(new.enabled)
        .bind(new.expires_at.map(micros))
        .bind(json_text(&new.metadata))
        .bind(micros(new.updated_at))
        .bind(keys.key_id)
        .bind(keys.api_key_hash)
        .bind(keys.prev_key_id)
        .bind(keys.prev_key_hash)
        .bind(keys.prev_key_expires_at.map(micros))
        .bind(new.token_generation)
        .bind(new.key.map(|k| k.key_id.as_str().to_string()))
        .bind(old.row_id)
        .bind(policy.credits_remaining)
        .bind(policy.credits_refill_amount)
        .bind(policy.credits_refill_interval)
        .bind(policy.credits_period.map(micros))
        .bind(policy.credits_generation)
        .bind(json_text(&policy.allowed_networks))
        .execute(&mut **tx)
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
        let mut tx = self.write_tx().await?;
        let Some(old) = client_for_update(&mut tx, id).await? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM api_clients WHERE id = $1")
            .bind(old.row_id)
            .execute(&mut **tx)
            .await?;
        insert_audit(&mut tx, &audit(&old)).await?;
        tx.commit().await?;
        Ok(Some(old))
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, Error> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, client_id, changes FROM audit_events \
             WHERE ($1 IS NULL OR client_id = $1) AND ($2 IS NULL OR id < $2) \
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
                at: time(r.at),
                actor: r.actor,
                action: r.action,
                client_id: r.client_id,
                changes: serde_json::from_str(&r.changes).unwrap_or_default(),
            })
            .collect())
    }

    async fn record_last_used(&self, uses: &[(ClientId, DateTime<Utc>)]) -> Result<(), Error> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for chunk in uses.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE api_clients SET last_used_at = \
                 max(coalesce(api_clients.last_used_at, u.column2), u.column2) \
                 FROM ({}) AS u WHERE api_clients.client_id = u.column1",
                values_for(chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for (id, at) in chunk {
                query = query.bind(id.as_str()).bind(micros(*at));
            }
            query.execute(&mut **tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn has_admin_client(&self) -> Result<bool, Error> {
        let found: Option<i64> = sqlx::query_scalar(ADMIN_EXISTS)
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
            .bind(micros(before))
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
             ORDER BY enabled DESC, id",
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
        let mut tx = self.write_tx().await?;
        // A digest left on another row whose hash has changed since no longer means anything.
        sqlx::query(
            "UPDATE api_clients SET legacy_key_digest = NULL, legacy_key_digest_of = NULL \
             WHERE legacy_key_digest = $1 AND client_id <> $2",
        )
        .bind(digest.to_hex())
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
        let sql = format!(
            "UPDATE api_clients SET legacy_key_digest = $1, legacy_key_digest_of = $2 \
             WHERE client_id = $3 AND key_id IS NULL AND api_key_hash = $4 \
             RETURNING {CLIENT_COLUMNS}"
        );
        let row: Option<ClientRow> = sqlx::query_as(&sql)
            .bind(digest.to_hex())
            .bind(matched_hash)
            .bind(id.as_str())
            .bind(matched_hash)
            .fetch_optional(&mut **tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(ClientRow::into_client))
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, Error> {
        let rows: Vec<(String, Vec<u8>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT kid, private_key, created_at, retired_at FROM signing_keys \
             ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kid, seed, created, retired)| {
                StoredSigningKey::from_row(kid, seed, time(created), retired.map(time))
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
        let mut tx = self.write_tx().await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM signing_keys WHERE retired_at IS NULL LIMIT 1")
                .fetch_optional(&mut **tx)
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
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(micros(key.created_at))
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM signing_keys WHERE retired_at < $1")
            .bind(micros(forget_retired_before))
            .execute(&mut **tx)
            .await?;
        insert_signing_key(&mut tx, key).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_signing_key(
    tx: &mut Transaction<'static, sqlx::Sqlite>,
    key: &StoredSigningKey,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO signing_keys (kid, private_key, created_at) VALUES ($1, $2, $3)")
        .bind(&key.kid)
        .bind(key.stored_seed())
        .bind(micros(key.created_at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts a client row; returns its row id.
async fn insert_client_row(
    tx: &mut Transaction<'static, sqlx::Sqlite>,
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
    .bind(json_text(&client.scopes))
    .bind(client.rate_limit)
    .bind(client.enabled)
    .bind(client.expires_at.map(micros))
    .bind(micros(client.created_at))
    .bind(micros(client.updated_at))
    .bind(json_text(&client.metadata))
    .bind(keys.key_id)
    .bind(policy.credits_remaining)
    .bind(policy.credits_refill_amount)
    .bind(policy.credits_refill_interval)
    .bind(policy.credits_period.map(micros))
    .bind(json_text(&policy.allowed_networks))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row_id)
}
