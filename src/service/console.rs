//! Console sessions: sign-in through the credential gate (an admin credential; a wrong one is a
//! failed authentication of the caller's address), a random token in the cookie and only its
//! SHA-256 in the database, so every node shares sessions and a stolen database holds none. A
//! session lives at most 12 h and ends as soon as its admin client is disabled, deleted,
//! regenerated or loses scope `admin` (the client is read through the cache, which every
//! change reaches within a second), or, for the admin token, once the server runs with another
//! token or none.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use subtle::ConstantTimeEq;

use super::auth::{Caller, Gate};
use crate::domain::Error;
use crate::domain::api_key::KeyHash;
use crate::domain::audit::Actor;
use crate::domain::client::{ClientId, ClientStatus};
use crate::domain::scope;
use crate::storage::Store;
use crate::storage::console::StoredSession;

/// The longest a session lives.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);

/// A session just opened: the token goes into the cookie and is never stored.
pub struct NewSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A session in force: who acts through it, and the token its forms must carry.
#[derive(Clone)]
pub struct Session {
    pub actor: Actor,
    pub csrf: String,
    token_hash: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("actor", &self.actor.name())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's (compared in constant time).
    pub fn accepts_csrf(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

pub struct ConsoleSessions {
    store: Arc<dyn Store>,
    gate: Arc<Gate>,
}

impl ConsoleSessions {
    pub fn new(store: Arc<dyn Store>, gate: Arc<Gate>) -> Self {
        ConsoleSessions { store, gate }
    }

    /// Signs in with `credential` (the admin token or an admin client's key) from `peer`.
    /// Anything else is `Unauthenticated` and counts as a failed authentication.
    pub async fn sign_in(
        &self,
        credential: &str,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<NewSession, Error> {
        let caller = self.gate.sign_in_admin(credential, peer, now).await?;
        let (client_id, key_id) = match &caller {
            Caller::AdminToken => (None, self.gate.admin_token_fingerprint()),
            Caller::Client { client, .. } => (
                Some(client.client_id.as_str().to_string()),
                client.key.map(|k| k.key_id.as_str().to_string()),
            ),
        };
        let token = crate::domain::random_hex(32)?;
        let expires_at = now + SESSION_LIFETIME;
        let session = StoredSession {
            token_hash: KeyHash::of(&token).to_hex(),
            actor: caller.actor().name().to_string(),
            client_id,
            key_id,
            csrf: crate::domain::random_hex(16)?,
            created_at: now,
            expires_at,
        };
        self.store.insert_session(&session).await?;
        Ok(NewSession { token, expires_at })
    }

    /// The session `token` opens now, if it is still in force.
    pub async fn check(&self, token: &str, now: DateTime<Utc>) -> Result<Option<Session>, Error> {
        let token_hash = KeyHash::of(token).to_hex();
        let Some(stored) = self.store.session(&token_hash).await? else {
            return Ok(None);
        };
        if stored.expires_at <= now {
            self.store.delete_session(&token_hash).await?;
            return Ok(None);
        }
        let actor = match &stored.client_id {
            None if stored.key_id.is_some()
                && stored.key_id == self.gate.admin_token_fingerprint() =>
            {
                Some(Actor::AdminToken)
            }
            None => None,
            Some(id) => {
                let id = ClientId::new(id);
                let client = self.gate.current_client(&id).await?;
                let still_admin = client.is_some_and(|client| {
                    let key_id = client.key.map(|k| k.key_id.as_str().to_string());
                    client.status(now) == ClientStatus::Active
                        && client.has_scope(scope::ADMIN)
                        && key_id == stored.key_id
                });
                still_admin.then_some(Actor::Client(id))
            }
        };
        // A session that lost its right is forgotten, so it cannot come back (a client
        // enabled again, an old admin token configured again).
        let Some(actor) = actor else {
            self.store.delete_session(&token_hash).await?;
            return Ok(None);
        };
        Ok(Some(Session {
            actor,
            csrf: stored.csrf,
            token_hash,
        }))
    }

    pub async fn sign_out(&self, session: &Session) -> Result<(), Error> {
        self.store.delete_session(&session.token_hash).await?;
        Ok(())
    }
}
