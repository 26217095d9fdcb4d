//! Storage: SQL, rows and migrations, behind one `Store` interface with a SQLite and a
//! PostgreSQL implementation. It returns domain types and enforces no business rule: what to
//! write is decided by the caller (see the `edit` closure of `update_client`).

pub mod console;
pub mod credits;
mod postgres;
mod sqlite;
pub mod usage;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::domain::address;
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::audit::{AuditEvent, NewAuditEvent};
use crate::domain::client::{Client, ClientId, PreviousKey, StoredKey};
use crate::domain::policy::{Credits, Refill, RefillInterval};
use crate::domain::signing_key::StoredSigningKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unique constraint {0} violated")]
    Conflict(String),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Other(#[source] sqlx::Error),
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL scheme (use sqlite:// or postgres://)")]
    UnsupportedUrl,
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                Error::Conflict(db.constraint().unwrap_or("unknown").to_string())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Error::Unavailable(e)
            }
            sqlx::Error::Database(ref db) if db.code().is_some_and(|c| means_unavailable(&c)) => {
                Error::Unavailable(e)
            }
            other => Error::Other(other),
        }
    }
}

/// Database error codes that say the database cannot serve now, not that the request was
/// wrong. PostgreSQL: connection exceptions (08), operator intervention such as a shutdown
/// (57P), insufficient resources (53), and 55000, which a database closed to connections
/// answers (the relay uses nothing else that raises it). SQLite: busy or locked (5, 6, and
/// their extended codes) once the busy timeout has passed.
fn means_unavailable(code: &str) -> bool {
    // A SQLSTATE has five characters; SQLite's (extended) result codes are below 10 000.
    if code.len() == 5 {
        return code.starts_with("08")
            || code.starts_with("57P")
            || code.starts_with("53")
            || code == "55000";
    }
    code.parse::<i32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
}

/// What a service can act on: an unreachable database is `Unavailable` (503), anything else
/// `Internal` (500, the detail logged). Unique violations are not input errors here: the
/// identifiers that could collide are generated.
impl From<Error> for crate::domain::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable(source) => crate::domain::Error::Unavailable(Box::new(source)),
            other => crate::domain::Error::internal(other),
        }
    }
}

/// Where a page of clients starts: strictly after this `(created_at, row id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCursor {
    pub created_at: DateTime<Utc>,
    pub row_id: i64,
}

#[derive(Debug, Clone)]
pub struct ClientQuery {
    pub include_disabled: bool,
    pub name_contains: Option<String>,
    pub scope: Option<String>,
    pub after: Option<ClientCursor>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub client_id: Option<String>,
    /// Events with an id below this one.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Computes the new state of a client and the audit event for it, inside the transaction.
pub type Edit<'a> = &'a (dyn Fn(&Client) -> (Client, NewAuditEvent) + Send + Sync);

/// Computes the audit event of a deletion from the client being deleted.
pub type DeletionAudit<'a> = &'a (dyn Fn(&Client) -> NewAuditEvent + Send + Sync);

#[async_trait::async_trait]
pub trait Store:
    usage::UsageStore + console::ConsoleStore + credits::CreditStore + Send + Sync
{
    /// Applies the embedded migrations (idempotent).
    async fn migrate(&self) -> Result<(), Error>;
    async fn ping(&self) -> Result<(), Error>;
    /// Inserts a client and its audit event in one transaction; returns it with its row id.
    async fn insert_client(&self, client: &Client, audit: &NewAuditEvent) -> Result<Client, Error>;
    /// Inserts `client` (an admin) unless an enabled client holding `admin` exists, checked
    /// and written under a lock so nodes starting together create one; `None` if one existed.
    async fn insert_first_admin(
        &self,
        client: &Client,
        audit: &NewAuditEvent,
    ) -> Result<Option<Client>, Error>;
    async fn client(&self, id: &ClientId) -> Result<Option<Client>, Error>;
    /// The client whose current or previous key has this id.
    async fn client_by_key_id(&self, key_id: &KeyId) -> Result<Option<Client>, Error>;
    async fn list_clients(&self, query: &ClientQuery) -> Result<Vec<Client>, Error>;
    /// Locks the client, writes what `edit` returns and its audit event, in one transaction.
    /// `None` when there is no such client.
    async fn update_client(&self, id: &ClientId, edit: Edit<'_>) -> Result<Option<Client>, Error>;
    /// Deletes the client and writes its audit event, in one transaction.
    async fn delete_client(
        &self,
        id: &ClientId,
        audit: DeletionAudit<'_>,
    ) -> Result<Option<Client>, Error>;
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, Error>;
    /// Moves each client's `last_used_at` forward to the given time (never backwards).
    async fn record_last_used(&self, uses: &[(ClientId, DateTime<Utc>)]) -> Result<(), Error>;
    /// Whether an enabled client holds the scope `admin`.
    async fn has_admin_client(&self) -> Result<bool, Error>;
    /// Clients changed after change number `seq`, as `(seq, client_id)`, oldest first; every
    /// write above records one, so other processes can drop what they cached.
    async fn changes_after(&self, seq: i64) -> Result<Vec<(i64, ClientId)>, Error>;
    /// The newest change number (0 when none).
    async fn latest_change(&self) -> Result<i64, Error>;
    /// Forgets change records older than `before`.
    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<(), Error>;

    /// The client whose adopted key has this SHA-256 (set by `upgrade_legacy_key`), while the
    /// row still holds the bcrypt hash the digest was checked against.
    async fn client_by_legacy_digest(&self, digest: &KeyHash) -> Result<Option<Client>, Error>;
    /// `(client_id, bcrypt hash)` of every adopted key whose hash has no digest bound to it.
    async fn legacy_candidates(&self) -> Result<Vec<(ClientId, String)>, Error>;
    /// Records the SHA-256 of an adopted key that just matched the bcrypt hash `matched_hash`,
    /// bound to that hash, and returns the client; nothing is written (`None`) if the row
    /// holds another hash by now.
    async fn upgrade_legacy_key(
        &self,
        id: &ClientId,
        digest: &KeyHash,
        matched_hash: &str,
    ) -> Result<Option<Client>, Error>;

    /// Every stored token-signing key, newest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, Error>;
    /// Stores `key` as the current signing key unless there is one already (checked and written
    /// under a lock, so nodes starting together create one key); returns whether it did.
    async fn insert_first_signing_key(&self, key: &StoredSigningKey) -> Result<bool, Error>;
    /// Replaces the stored seed of key `key.kid` (to seal one stored in plain text).
    async fn reseal_signing_key(&self, key: &StoredSigningKey) -> Result<(), Error>;
    /// In one transaction: retires the current key, stores `key` as current, forgets keys
    /// retired before `forget_retired_before`, and writes `audit`.
    async fn rotate_signing_key(
        &self,
        key: &StoredSigningKey,
        forget_retired_before: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> Result<(), Error>;
}

/// How long a pooled connection may sit idle before it is pinged on its way out of the pool.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// The pools' check before handing out a connection: a ping only after it sat idle a while.
/// sqlx pings on every acquire by default, and again on every release; a connection in
/// steady use has just answered that release ping, so pinging it again would only add a
/// round trip to each query (on PostgreSQL, one cache miss cost three instead of two).
/// A connection that died since answers its next query with an error: a 503 to that one
/// request, and the release ping then drops it.
fn ping_if_idle<C: sqlx::Connection>(
    connection: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if meta.idle_for >= IDLE_BEFORE_PING {
            connection.ping().await?;
        }
        Ok(true)
    })
}

/// Opens the database named by `url` (`sqlite:` or `postgres:`) and applies the migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, Error> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(sqlite::SqliteStore::connect(url, max_connections).await?)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Arc::new(postgres::PostgresStore::connect(url, max_connections).await?)
    } else {
        return Err(Error::UnsupportedUrl);
    };
    store.migrate().await?;
    Ok(store)
}

/// A client row after each backend has turned its column types into Rust ones.
struct ClientParts {
    row_id: i64,
    client_id: String,
    api_key_hash: String,
    name: String,
    scopes: Vec<String>,
    rate_limit: i64,
    enabled: bool,
    expires_at: Option<DateTime<Utc>>,
    metadata: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    key_id: Option<String>,
    prev_key_id: Option<String>,
    prev_key_hash: Option<String>,
    prev_key_expires_at: Option<DateTime<Utc>>,
    token_generation: i64,
    policy: PolicyColumns,
}

/// A client's policy columns as both backends read and write them.
struct PolicyColumns {
    credits_remaining: Option<i64>,
    credits_refill_amount: Option<i64>,
    credits_refill_interval: Option<String>,
    credits_period: Option<DateTime<Utc>>,
    credits_generation: i64,
    allowed_networks: Vec<String>,
}

impl PolicyColumns {
    fn of(client: &Client) -> Self {
        let refill = client.credits.and_then(|c| c.refill);
        PolicyColumns {
            credits_remaining: client.credits.map(|c| c.remaining),
            credits_refill_amount: refill.map(|r| r.amount),
            credits_refill_interval: refill.map(|r| r.interval.as_str().to_string()),
            credits_period: client.credits_period,
            credits_generation: client.credits_generation,
            allowed_networks: client.network_texts(),
        }
    }

    fn credits(&self) -> Option<Credits> {
        let refill = match (self.credits_refill_amount, &self.credits_refill_interval) {
            (Some(amount), Some(interval)) => {
                RefillInterval::parse(interval).map(|interval| Refill { amount, interval })
            }
            _ => None,
        };
        self.credits_remaining.map(|remaining| Credits {
            remaining: remaining.max(0),
            refill,
        })
    }

    fn networks(&self) -> Vec<IpNet> {
        self.allowed_networks
            .iter()
            .filter_map(|n| address::parse_network(n).ok())
            .collect()
    }
}

impl ClientParts {
    fn into_client(self) -> Client {
        let mut scopes = self.scopes;
        scopes.sort();
        // `api_key_hash` holds a SHA-256 (hex) when `key_id` is set; otherwise it is an
        // adopted bcrypt hash, which is not a key this service can look up by id.
        let key = self
            .key_id
            .as_deref()
            .and_then(KeyId::parse)
            .and_then(|key_id| {
                KeyHash::from_hex(&self.api_key_hash).map(|hash| StoredKey { key_id, hash })
            });
        let previous_key = match (
            self.prev_key_id,
            self.prev_key_hash,
            self.prev_key_expires_at,
        ) {
            (Some(id), Some(hash), Some(expires_at)) => KeyId::parse(&id)
                .zip(KeyHash::from_hex(&hash))
                .map(|(key_id, hash)| {
                    Box::new(PreviousKey {
                        key: StoredKey { key_id, hash },
                        expires_at,
                    })
                }),
            _ => None,
        };
        Client {
            row_id: self.row_id,
            client_id: ClientId::new(&self.client_id),
            name: self.name,
            scopes,
            rate_limit: self.rate_limit,
            enabled: self.enabled,
            expires_at: self.expires_at,
            metadata: self.metadata,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_used_at: self.last_used_at,
            key,
            previous_key,
            token_generation: self.token_generation,
            credits: self.policy.credits(),
            credits_period: self.policy.credits_period,
            credits_generation: self.policy.credits_generation,
            allowed_networks: self.policy.networks(),
        }
    }
}

/// The key columns of a client as written: current key id and hash, previous key.
struct KeyColumns {
    key_id: Option<String>,
    api_key_hash: Option<String>,
    prev_key_id: Option<String>,
    prev_key_hash: Option<String>,
    prev_key_expires_at: Option<DateTime<Utc>>,
}

impl KeyColumns {
    fn of(client: &Client) -> Self {
        let prev = client.previous_key.as_ref();
        KeyColumns {
            key_id: client.key.map(|k| k.key_id.as_str().to_string()),
            api_key_hash: client.key.map(|k| k.hash.to_hex()),
            prev_key_id: prev.map(|p| p.key.key_id.as_str().to_string()),
            prev_key_hash: prev.map(|p| p.key.hash.to_hex()),
            prev_key_expires_at: prev.map(|p| p.expires_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::means_unavailable;

    #[test]
    fn only_codes_of_an_unreachable_database_mean_unavailable() {
        for code in [
            "08006", "57P01", "57P03", "53300", "55000", "5", "517", "6", "262",
        ] {
            assert!(means_unavailable(code), "{code}");
        }
        for code in ["23505", "22P02", "42P01", "19", "2067", "1"] {
            assert!(!means_unavailable(code), "{code}");
        }
    }
}
