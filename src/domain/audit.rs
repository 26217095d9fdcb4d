//! Audit events: who changed which client, how. Written in the same transaction as the change
//! and never holding a secret (key prefixes only).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::client::ClientId;

/// Who acted: the admin token, an admin client, or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    AdminToken,
    Client(ClientId),
    Cli,
}

impl Actor {
    pub fn name(&self) -> &str {
        match self {
            Actor::AdminToken => "admin-token",
            Actor::Client(id) => id.as_str(),
            Actor::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Disabled,
    Enabled,
    KeyRegenerated,
    Deleted,
    SigningKeyRotated,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "client.created",
            Action::Updated => "client.updated",
            Action::Disabled => "client.disabled",
            Action::Enabled => "client.enabled",
            Action::KeyRegenerated => "client.key_regenerated",
            Action::Deleted => "client.deleted",
            Action::SigningKeyRotated => "signing_key.rotated",
        }
    }
}

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: &'static str,
    pub client_id: Option<ClientId>,
    pub changes: Value,
}

impl NewAuditEvent {
    pub fn new(
        at: DateTime<Utc>,
        actor: &Actor,
        action: Action,
        client_id: &ClientId,
        changes: Value,
    ) -> Self {
        NewAuditEvent {
            at,
            actor: actor.name().to_string(),
            action: action.as_str(),
            client_id: Some(client_id.clone()),
            changes,
        }
    }
}

impl NewAuditEvent {
    /// A rotation of the token-signing key: no client, the new key's id in `changes`.
    pub fn signing_key_rotated(at: DateTime<Utc>, actor: &Actor, kid: &str) -> Self {
        NewAuditEvent {
            at,
            actor: actor.name().to_string(),
            action: Action::SigningKeyRotated.as_str(),
            client_id: None,
            changes: serde_json::json!({ "kid": kid }),
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub client_id: Option<String>,
    pub changes: Value,
}
