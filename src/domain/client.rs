//! Clients: who may call the relay, with which scopes, at what rate, until when, and the
//! rule for re-keying them. What an admin may ask for, and how it is validated, is in
//! `draft`.

mod draft;

pub use draft::{
    ClientChanges, ClientDraft, ClientUpdate, DEFAULT_RATE_LIMIT, MAX_GRACE_SECONDS, NewClient,
    parse_expiry, parse_grace_seconds, reorders_or_breaks_text,
};

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::Error;
use super::api_key::{KeyHash, KeyId, NewKey, PresentedKey};
use super::policy::{self, Credits};

/// Requests per minute a client may be given: the limiter clamps adopted rows to it.
pub const MAX_RATE_LIMIT: i64 = 1_000_000;

/// `client_` + 16 lowercase hex, the shape the original service used. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn generate() -> Result<Self, getrandom::Error> {
        Ok(ClientId(format!("client_{}", super::random_hex(8)?).into()))
    }

    /// Wraps an id read from storage; it is looked up, never trusted.
    pub fn new(id: &str) -> Self {
        ClientId(id.into())
    }

    /// An id from a request (a path, a filter): any text a stored id could be, which is then
    /// looked up. Control characters (NUL among them) can be in none.
    pub fn parse(id: &str) -> Result<Self, Error> {
        if id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "",
                "the client id must not contain control characters",
            ));
        }
        Ok(ClientId::new(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, shared rather than copied.
    pub fn shared_str(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key the store holds for a client: its public id and the hash of the whole key.
#[derive(Debug, Clone, Copy)]
pub struct StoredKey {
    pub key_id: KeyId,
    pub hash: KeyHash,
}

/// The key replaced by a regeneration with a grace period, valid until `expires_at`.
#[derive(Debug, Clone, Copy)]
pub struct PreviousKey {
    pub key: StoredKey,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Client {
    /// Internal row id: the tie-breaker of list order, never shown.
    pub row_id: i64,
    pub client_id: ClientId,
    pub name: String,
    /// Sorted. Adopted rows are kept as stored even where today's rules would refuse them.
    pub scopes: Vec<String>,
    /// Requests per minute.
    pub rate_limit: i64,
    pub enabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `None` for an adopted client whose legacy key has not been replaced yet.
    pub key: Option<StoredKey>,
    /// Boxed: rare, and a cached client is smaller without it inline (a million are cached).
    pub previous_key: Option<Box<PreviousKey>>,
    /// Moves on when the client is disabled or its key is regenerated without grace; access
    /// tokens carry the generation they were issued in and die when it moves.
    pub token_generation: i64,
    /// Usage credits; `None`: unlimited. `remaining` is the balance the database held when
    /// read, without what nodes hold leased (see `service::credits`).
    pub credits: Option<Credits>,
    /// The refill period the balance belongs to; a refill moves it on.
    pub credits_period: Option<DateTime<Utc>>,
    /// Moves on whenever the balance is set, by an admin or by a refill: credits leased
    /// under an older generation are void.
    pub credits_generation: i64,
    /// Where the client may call from; empty: anywhere.
    pub allowed_networks: Vec<IpNet>,
}

/// Whether a client may authenticate now, in the order verification reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStatus {
    Active,
    Disabled,
    Expired,
}

impl Client {
    pub fn status(&self, now: DateTime<Utc>) -> ClientStatus {
        if !self.enabled {
            ClientStatus::Disabled
        } else if self.expires_at.is_some_and(|at| at <= now) {
            ClientStatus::Expired
        } else {
            ClientStatus::Active
        }
    }

    /// True when `presented` is this client's current key, or its previous key while the
    /// grace period lasts.
    pub fn accepts_key(&self, presented: &PresentedKey, now: DateTime<Utc>) -> bool {
        let is = |k: &StoredKey| k.key_id == presented.key_id && k.hash.matches(&presented.hash);
        self.key.as_ref().is_some_and(is)
            || self
                .previous_key
                .as_ref()
                .is_some_and(|p| p.expires_at > now && is(&p.key))
    }

    /// Whether a refill of the credits is due at `now` that no node has made yet (nodes make
    /// it when they next lease; until then the stored balance is the last period's).
    pub fn refill_due(&self, now: DateTime<Utc>) -> bool {
        self.credits
            .and_then(|c| c.period(now))
            .is_some_and(|period| self.credits_period.is_none_or(|p| p < period))
    }

    /// Whether the client may call from `ip` (`None`: an address not known).
    pub fn allows_address(&self, ip: Option<IpAddr>) -> bool {
        policy::address_allowed(&self.allowed_networks, ip)
    }

    pub fn network_texts(&self) -> Vec<String> {
        self.allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn key_prefix(&self) -> Option<String> {
        self.key.map(|k| k.key_id.key_prefix())
    }

    /// Requests per minute for the limiter; adopted rows may hold values today's rules refuse.
    pub fn effective_rate_limit(&self) -> u32 {
        u32::try_from(self.rate_limit.clamp(1, MAX_RATE_LIMIT)).unwrap_or(1)
    }

    /// The settings recorded in the audit log at creation and deletion.
    pub fn settings(&self) -> Value {
        json!({
            "name": self.name,
            "scopes": self.scopes,
            "rate_limit": self.rate_limit,
            "enabled": self.enabled,
            "expires_at": self.expires_at,
            "metadata": self.metadata,
            "credits": self.credits,
            "allowed_networks": self.network_texts(),
        })
    }
}

/// Gives `client` the new key. With a grace period the current key stays valid until it ends;
/// without one it stops now. Any earlier old key ends now either way: at most one old key.
pub fn regenerate(
    client: &Client,
    key: &NewKey,
    grace_seconds: u32,
    now: DateTime<Utc>,
) -> (Client, Value) {
    let mut new = client.clone();
    new.previous_key = match (client.key, grace_seconds) {
        (Some(old), 1..) => Some(Box::new(PreviousKey {
            key: old,
            expires_at: now + Duration::seconds(i64::from(grace_seconds)),
        })),
        _ => None,
    };
    new.key = Some(StoredKey {
        key_id: key.key_id,
        hash: key.hash,
    });
    new.updated_at = now;
    // Without grace the old key ends now, and with it every token obtained so far.
    if grace_seconds == 0 {
        new.token_generation += 1;
    }
    let changes = json!({
        "key_prefix": {"from": client.key_prefix(), "to": new.key_prefix()},
        "grace_period_seconds": grace_seconds,
    });
    (new, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::api_key;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn draft(name: &str) -> ClientDraft {
        ClientDraft {
            name: name.into(),
            ..Default::default()
        }
    }

    fn client() -> (Client, NewKey) {
        let key = api_key::generate().unwrap();
        let c = NewClient::validate(draft("app"), now())
            .unwrap()
            .into_client(ClientId::generate().unwrap(), &key, now());
        (c, key)
    }

    fn pointers(err: Error) -> Vec<String> {
        match err {
            Error::Invalid(list) => list.into_iter().map(|e| e.pointer).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_when_fields_are_omitted() {
        let c = NewClient::validate(draft("  app  "), now()).unwrap();
        assert_eq!(c.name, "app");
        assert_eq!(c.scopes, vec!["chat", "history"]);
        assert_eq!(c.rate_limit, 100);
        assert!(c.expires_at.is_none() && c.metadata.is_empty());
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let d = ClientDraft {
            name: " ".into(),
            scopes: Some(vec!["Bad".into()]),
            rate_limit: Some(0),
            expires_at: Some("2020-01-01T00:00:00Z".into()),
            metadata: Some(json!([1])),
            credits: None,
            allowed_networks: Some(vec!["10.0.0.1/8".into()]),
        };
        let got = pointers(NewClient::validate(d, now()).unwrap_err());
        assert_eq!(
            got,
            [
                "/name",
                "/scopes",
                "/rate_limit",
                "/expires_at",
                "/metadata",
                "/allowed_networks"
            ]
        );
    }

    #[test]
    fn name_counts_characters_not_bytes_and_refuses_control_characters() {
        assert!(NewClient::validate(draft(&"é".repeat(255)), now()).is_ok());
        assert!(NewClient::validate(draft(&"é".repeat(256)), now()).is_err());
        assert!(NewClient::validate(draft("a\u{7}b"), now()).is_err());
    }

    #[test]
    fn expiry_needs_an_offset_and_a_future_time() {
        assert!(parse_expiry("2027-01-01T00:00:00", now()).is_err());
        assert!(parse_expiry("2026-01-01T00:00:00Z", now()).is_err());
        let at = parse_expiry("2027-01-01T02:00:00+02:00", now()).unwrap();
        assert_eq!(at.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }

    #[test]
    fn empty_update_is_refused() {
        assert!(ClientUpdate::validate(ClientChanges::default(), now()).is_err());
    }

    #[test]
    fn update_records_only_real_changes() {
        let (c, _) = client();
        let changes = ClientChanges {
            name: Some("app".into()),
            rate_limit: Some(5),
            expires_at: Some(None),
            ..Default::default()
        };
        let later = now() + Duration::seconds(1);
        let (new, diff) = ClientUpdate::validate(changes, now())
            .unwrap()
            .apply(&c, later);
        assert_eq!(new.rate_limit, 5);
        assert_eq!(diff, json!({"rate_limit": {"from": 100, "to": 5}}));
        assert_eq!(new.updated_at, later);
    }

    #[test]
    fn status_reports_disabled_before_expired() {
        let (mut c, _) = client();
        assert_eq!(c.status(now()), ClientStatus::Active);
        c.expires_at = Some(now());
        assert_eq!(c.status(now()), ClientStatus::Expired);
        c.enabled = false;
        assert_eq!(c.status(now()), ClientStatus::Disabled);
    }

    #[test]
    fn regeneration_without_grace_ends_the_old_key_now() {
        let (c, old) = client();
        let new_key = api_key::generate().unwrap();
        let (c, _) = regenerate(&c, &new_key, 0, now());
        let presented = |k: &NewKey| api_key::parse(k.plain.expose()).unwrap();
        assert!(c.accepts_key(&presented(&new_key), now()));
        assert!(!c.accepts_key(&presented(&old), now()));
    }

    #[test]
    fn grace_period_keeps_one_old_key_until_it_ends() {
        let (c, first) = client();
        let second = api_key::generate().unwrap();
        let third = api_key::generate().unwrap();
        let presented = |k: &NewKey| api_key::parse(k.plain.expose()).unwrap();
        let (c, _) = regenerate(&c, &second, 60, now());
        assert!(c.accepts_key(&presented(&first), now() + Duration::seconds(59)));
        assert!(!c.accepts_key(&presented(&first), now() + Duration::seconds(60)));
        let (c, _) = regenerate(&c, &third, 60, now());
        assert!(
            !c.accepts_key(&presented(&first), now()),
            "the earlier old key ends at once"
        );
        assert!(c.accepts_key(&presented(&second), now()));
        assert!(c.accepts_key(&presented(&third), now()));
    }

    #[test]
    fn disabling_and_regenerating_without_grace_move_the_token_generation() {
        let (c, _) = client();
        let (disabled, _) = ClientUpdate::enabled(false).apply(&c, now());
        assert_eq!(disabled.token_generation, 1);
        let (enabled, _) = ClientUpdate::enabled(true).apply(&disabled, now());
        assert_eq!(
            enabled.token_generation, 1,
            "enabling does not revive old tokens"
        );
        let key = api_key::generate().unwrap();
        assert_eq!(regenerate(&c, &key, 60, now()).0.token_generation, 0);
        assert_eq!(regenerate(&c, &key, 0, now()).0.token_generation, 1);
    }

    #[test]
    fn grace_is_bounded() {
        assert!(parse_grace_seconds(604_800).is_ok());
        assert!(parse_grace_seconds(604_801).is_err());
        assert!(parse_grace_seconds(-1).is_err());
    }
}
