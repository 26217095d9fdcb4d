//! Client administration: the operations behind the admin API and the `relay clients`
//! commands. Each change is validated by the domain, written with its audit event in one
//! transaction, and drops the client's cached entries before it returns (other processes,
//! the CLI among them, learn of it from the change log).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::credits::CreditLeases;
use crate::cache::ClientCache;
use crate::domain::Error;
use crate::domain::api_key::{self, PlainKey};
use crate::domain::audit::{Action, Actor, AuditEvent, NewAuditEvent};
use crate::domain::client::{
    self, Client, ClientChanges, ClientDraft, ClientId, ClientUpdate, NewClient,
};
use crate::domain::scope::Scope;
use crate::storage::console::StatusCounts;
use crate::storage::{AuditQuery, ClientCursor, ClientQuery, Store};

pub const MAX_PAGE: u32 = 500;
pub const DEFAULT_PAGE: u32 = 100;

/// Filters and position of one page of the client list.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub include_disabled: bool,
    pub name_contains: Option<String>,
    pub scope: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditRequest {
    pub client_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub struct ClientAdmin {
    store: Arc<dyn Store>,
    /// The serving process's cache; the CLI has none.
    cache: Option<ClientCache>,
    /// The serving process's credit leases, counted into the balances it shows.
    credits: Option<Arc<CreditLeases>>,
}

impl ClientAdmin {
    pub fn new(store: Arc<dyn Store>, cache: Option<ClientCache>) -> Self {
        ClientAdmin {
            store,
            cache,
            credits: None,
        }
    }

    /// Shows balances with what this process holds leased (the serving process).
    pub fn with_credit_leases(self, credits: Arc<CreditLeases>) -> Self {
        ClientAdmin {
            credits: Some(credits),
            ..self
        }
    }

    /// `client` with its balance as this process sees it: the database's and its own lease,
    /// or the refill amount when a new period has begun and no node has leased in it yet.
    fn shown(&self, mut client: Client) -> Client {
        let refilled = client.refill_due(crate::domain::now());
        let held = self.credits.as_ref().map_or(0, |l| l.held_for(&client));
        if let Some(credits) = client.credits.as_mut() {
            match credits.refill {
                Some(refill) if refilled => credits.remaining = refill.amount,
                _ => credits.remaining += held,
            }
        }
        client
    }

    fn invalidate(&self, id: &ClientId) {
        if let Some(cache) = &self.cache {
            cache.invalidate(id);
        }
    }

    pub async fn create(
        &self,
        actor: &Actor,
        draft: ClientDraft,
        now: DateTime<Utc>,
    ) -> Result<(Client, PlainKey), Error> {
        let new = NewClient::validate(draft, now)?;
        let key = api_key::generate()?;
        let client = new.into_client(ClientId::generate()?, &key, now);
        let audit = NewAuditEvent::new(
            now,
            actor,
            Action::Created,
            &client.client_id,
            client.settings(),
        );
        let client = self.store.insert_client(&client, &audit).await?;
        Ok((client, key.plain))
    }

    /// On a database with no enabled client holding `admin`, creates client `admin` with that
    /// scope and returns it with its key (to be shown once); otherwise `None`.
    pub async fn bootstrap_admin(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<(Client, PlainKey)>, Error> {
        if self.store.has_admin_client().await? {
            return Ok(None);
        }
        let draft = ClientDraft {
            name: "admin".into(),
            scopes: Some(vec![crate::domain::scope::ADMIN.into()]),
            ..Default::default()
        };
        let new = NewClient::validate(draft, now)?;
        let key = api_key::generate()?;
        let client = new.into_client(ClientId::generate()?, &key, now);
        let audit = NewAuditEvent::new(
            now,
            &Actor::Cli,
            Action::Created,
            &client.client_id,
            client.settings(),
        );
        let created = self.store.insert_first_admin(&client, &audit).await?;
        Ok(created.map(|client| (client, key.plain)))
    }

    pub async fn get(&self, id: &ClientId) -> Result<Client, Error> {
        let client = self.store.client(id).await?.ok_or(Error::NotFound)?;
        Ok(self.shown(client))
    }

    pub async fn list(&self, request: ListRequest) -> Result<Page<Client>, Error> {
        let limit = page_limit(request.limit)?;
        let after = request
            .cursor
            .as_deref()
            .map(parse_client_cursor)
            .transpose()?;
        if let Some(scope) = &request.scope {
            Scope::parse(scope).map_err(|e| Error::invalid("scope", e))?;
        }
        if let Some(q) = &request.name_contains {
            crate::domain::storable_text("q", q)?;
        }
        let query = ClientQuery {
            include_disabled: request.include_disabled,
            name_contains: request.name_contains,
            scope: request.scope,
            after,
            limit: limit + 1,
        };
        let mut items = self.store.list_clients(&query).await?;
        let next_cursor = next_page(&mut items, limit)
            .map(|last| format!("{}.{}", last.created_at.timestamp_micros(), last.row_id));
        let items = items.into_iter().map(|c| self.shown(c)).collect();
        Ok(Page { items, next_cursor })
    }

    pub async fn update(
        &self,
        actor: &Actor,
        id: &ClientId,
        changes: ClientChanges,
        now: DateTime<Utc>,
    ) -> Result<Client, Error> {
        let update = ClientUpdate::validate(changes, now)?;
        self.apply(actor, id, Action::Updated, update, now).await
    }

    pub async fn set_enabled(
        &self,
        actor: &Actor,
        id: &ClientId,
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Client, Error> {
        let action = if enabled {
            Action::Enabled
        } else {
            Action::Disabled
        };
        self.apply(actor, id, action, ClientUpdate::enabled(enabled), now)
            .await
    }

    async fn apply(
        &self,
        actor: &Actor,
        id: &ClientId,
        action: Action,
        update: ClientUpdate,
        now: DateTime<Utc>,
    ) -> Result<Client, Error> {
        let edit = |old: &Client| {
            let (new, changes) = update.apply(old, now);
            (new, NewAuditEvent::new(now, actor, action, id, changes))
        };
        let client = self
            .store
            .update_client(id, &edit)
            .await?
            .ok_or(Error::NotFound)?;
        self.invalidate(id);
        if !client.enabled || !client.has_scope(crate::domain::scope::ADMIN) {
            self.end_console_sessions(id).await;
        }
        Ok(self.shown(client))
    }

    /// Ends the console sessions of a client that may no longer hold them (disabled, deleted,
    /// regenerated, without `admin`), so none comes back if it is enabled again. A session
    /// left by a failure here still ends: every console request checks its client.
    async fn end_console_sessions(&self, id: &ClientId) {
        if let Err(e) = self.store.delete_client_sessions(id.as_str()).await {
            tracing::warn!(error = %e, client_id = %id.as_str(), "could not end console sessions");
        }
    }

    pub async fn regenerate(
        &self,
        actor: &Actor,
        id: &ClientId,
        grace_seconds: i64,
        now: DateTime<Utc>,
    ) -> Result<(Client, PlainKey), Error> {
        let grace = client::parse_grace_seconds(grace_seconds)?;
        let key = api_key::generate()?;
        let edit = |old: &Client| {
            let (new, changes) = client::regenerate(old, &key, grace, now);
            (
                new,
                NewAuditEvent::new(now, actor, Action::KeyRegenerated, id, changes),
            )
        };
        let client = self
            .store
            .update_client(id, &edit)
            .await?
            .ok_or(Error::NotFound)?;
        self.invalidate(id);
        self.end_console_sessions(id).await;
        Ok((client, key.plain))
    }

    pub async fn delete(
        &self,
        actor: &Actor,
        id: &ClientId,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let audit =
            |old: &Client| NewAuditEvent::new(now, actor, Action::Deleted, id, old.settings());
        self.store
            .delete_client(id, &audit)
            .await?
            .ok_or(Error::NotFound)?;
        self.invalidate(id);
        self.end_console_sessions(id).await;
        Ok(())
    }

    /// How many clients are enabled, disabled, expired, and expiring before `soon`.
    pub async fn status_counts(
        &self,
        now: DateTime<Utc>,
        soon: DateTime<Utc>,
    ) -> Result<StatusCounts, Error> {
        Ok(self.store.status_counts(now, soon).await?)
    }

    pub async fn audit(&self, request: AuditRequest) -> Result<Page<AuditEvent>, Error> {
        let limit = page_limit(request.limit)?;
        let before_id = match request.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<i64>().map_err(|_| bad_cursor())?),
        };
        if let Some(id) = &request.client_id {
            crate::domain::storable_text("client_id", id)?;
        }
        let query = AuditQuery {
            client_id: request.client_id,
            before_id,
            limit: limit + 1,
        };
        let mut items = self.store.list_audit(&query).await?;
        let next_cursor = next_page(&mut items, limit).map(|last| last.id.to_string());
        Ok(Page { items, next_cursor })
    }
}

fn page_limit(limit: Option<i64>) -> Result<u32, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| Error::invalid("limit", format!("must be 1..={MAX_PAGE}"))),
    }
}

/// Trims the extra row fetched to learn whether another page follows; returns the last row
/// of this page when one does.
fn next_page<T>(items: &mut Vec<T>, limit: u32) -> Option<&T> {
    let limit = limit as usize;
    if items.len() > limit {
        items.truncate(limit);
        items.last()
    } else {
        None
    }
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "not a cursor this service issued")
}

/// A client cursor is `<created_at µs>.<row id>` of the last row of the previous page.
fn parse_client_cursor(text: &str) -> Result<ClientCursor, Error> {
    let (micros, row_id) = text.split_once('.').ok_or_else(bad_cursor)?;
    let micros: i64 = micros.parse().map_err(|_| bad_cursor())?;
    let row_id: i64 = row_id.parse().map_err(|_| bad_cursor())?;
    let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad_cursor)?;
    Ok(ClientCursor { created_at, row_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = parse_client_cursor("1700000000000001.42").unwrap();
        assert_eq!(c.row_id, 42);
        assert_eq!(c.created_at.timestamp_micros(), 1_700_000_000_000_001);
        for bad in [
            "",
            "x",
            "1.",
            ".1",
            "1.2.3",
            "a.1",
            "99999999999999999999.1",
        ] {
            assert!(parse_client_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_limit_is_bounded() {
        assert_eq!(page_limit(None).unwrap(), 100);
        assert_eq!(page_limit(Some(500)).unwrap(), 500);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(501)).is_err());
    }
}
