//! Console sessions as stored (by the SHA-256 of their token), and the client counts the
//! console's overview shows.

use chrono::{DateTime, Utc};

use super::Error;

#[derive(Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 (hex) of the cookie's token.
    pub token_hash: String,
    /// `admin-token` or the admin client's id, as audit rows name it.
    pub actor: String,
    pub client_id: Option<String>,
    pub key_id: Option<String>,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("actor", &self.actor)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How many clients are in each state (an expiring client is also enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub enabled: i64,
    pub disabled: i64,
    pub expired: i64,
    /// Enabled, not expired, expiring before the `soon` asked about.
    pub expiring: i64,
}

// The statements both backends run as they are (each binds its own timestamp type).
pub(super) const INSERT_SESSION: &str = "INSERT INTO console_sessions (token_hash, actor, \
    client_id, key_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(super) const SELECT_SESSION: &str = "SELECT token_hash, actor, client_id, key_id, csrf, \
    created_at, expires_at FROM console_sessions WHERE token_hash = $1";
pub(super) const DELETE_SESSION: &str = "DELETE FROM console_sessions WHERE token_hash = $1";
pub(super) const DELETE_CLIENT_SESSIONS: &str = "DELETE FROM console_sessions WHERE client_id = $1";
pub(super) const PRUNE_SESSIONS: &str = "DELETE FROM console_sessions WHERE expires_at < $1";

#[async_trait::async_trait]
pub trait ConsoleStore: Send + Sync {
    async fn insert_session(&self, session: &StoredSession) -> Result<(), Error>;
    async fn session(&self, token_hash: &str) -> Result<Option<StoredSession>, Error>;
    async fn delete_session(&self, token_hash: &str) -> Result<(), Error>;
    /// Ends every session of the admin client `client_id`.
    async fn delete_client_sessions(&self, client_id: &str) -> Result<(), Error>;
    /// Forgets sessions that ended before `now`.
    async fn prune_sessions(&self, now: DateTime<Utc>) -> Result<(), Error>;
    /// Clients by state at `now`; `expiring` counts those whose expiry is before `soon`.
    async fn status_counts(
        &self,
        now: DateTime<Utc>,
        soon: DateTime<Utc>,
    ) -> Result<StatusCounts, Error>;
}
