//! The storage suite: the `Store` contract, run on whichever backend the run selects (SQLite,
//! or PostgreSQL with `TEST_DATABASE_URL`).

use chrono::Duration;
use egregore_relay::domain::api_key;
use egregore_relay::domain::audit::{Action, Actor, NewAuditEvent};
use egregore_relay::domain::client::{self, Client, ClientDraft, ClientId, NewClient};
use egregore_relay::domain::now;
use egregore_relay::service::last_used::LastUse;
use egregore_relay::storage::{AuditQuery, ClientCursor, ClientQuery, Store};
use serde_json::json;

use crate::support::TestDb;

fn draft(name: &str, scopes: &[&str]) -> ClientDraft {
    ClientDraft {
        name: name.into(),
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        metadata: Some(json!({"k": [1, "two"]})),
        expires_at: Some("2099-06-01T12:00:00.123456Z".into()),
        ..Default::default()
    }
}

async fn insert(store: &dyn Store, name: &str, scopes: &[&str]) -> (Client, api_key::NewKey) {
    let key = api_key::generate().unwrap();
    let now = now();
    let client = NewClient::validate(draft(name, scopes), now)
        .unwrap()
        .into_client(ClientId::generate().unwrap(), &key, now);
    let audit = NewAuditEvent::new(
        now,
        &Actor::Cli,
        Action::Created,
        &client.client_id,
        json!({}),
    );
    (store.insert_client(&client, &audit).await.unwrap(), key)
}

fn query() -> ClientQuery {
    ClientQuery {
        include_disabled: true,
        name_contains: None,
        scope: None,
        after: None,
        limit: 100,
    }
}

#[tokio::test]
async fn a_client_reads_back_exactly_as_written() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let (written, key) = insert(store.as_ref(), "exact", &["b", "a"]).await;
    let read = store.client(&written.client_id).await.unwrap().unwrap();
    assert_eq!(format!("{read:?}"), format!("{written:?}"));
    let by_key = store.client_by_key_id(&key.key_id).await.unwrap().unwrap();
    assert_eq!(by_key.client_id, written.client_id);
    assert_eq!(read.expires_at.unwrap().timestamp_subsec_micros(), 123_456);
}

#[tokio::test]
async fn unknown_ids_read_as_none() {
    let db = TestDb::new().await;
    let store = db.open().await;
    assert!(
        store
            .client(&ClientId::new("client_0000000000000000"))
            .await
            .unwrap()
            .is_none()
    );
    let key = api_key::generate().unwrap();
    assert!(store.client_by_key_id(&key.key_id).await.unwrap().is_none());
}

#[tokio::test]
async fn update_writes_the_edit_and_its_audit_event_together() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let (c, old_key) = insert(store.as_ref(), "u", &["chat"]).await;
    let new_key = api_key::generate().unwrap();
    let at = now();
    let edit = |old: &Client| {
        let (new, changes) = client::regenerate(old, &new_key, 60, at);
        (
            new,
            NewAuditEvent::new(
                at,
                &Actor::AdminToken,
                Action::KeyRegenerated,
                &c.client_id,
                changes,
            ),
        )
    };
    let updated = store
        .update_client(&c.client_id, &edit)
        .await
        .unwrap()
        .unwrap();
    let read = store.client(&c.client_id).await.unwrap().unwrap();
    assert_eq!(format!("{read:?}"), format!("{updated:?}"));
    // Both the new and the previous key find the client by index.
    assert!(
        store
            .client_by_key_id(&new_key.key_id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .client_by_key_id(&old_key.key_id)
            .await
            .unwrap()
            .is_some()
    );
    let events = store
        .list_audit(&AuditQuery {
            client_id: Some(c.client_id.to_string()),
            before_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(events[0].action, "client.key_regenerated");
    assert_eq!(events[0].actor, "admin-token");
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn delete_removes_the_client_but_keeps_its_audit_rows() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let (c, key) = insert(store.as_ref(), "d", &[]).await;
    let at = now();
    let audit = |old: &Client| {
        NewAuditEvent::new(at, &Actor::Cli, Action::Deleted, &old.client_id, json!({}))
    };
    assert!(
        store
            .delete_client(&c.client_id, &audit)
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.client(&c.client_id).await.unwrap().is_none());
    assert!(store.client_by_key_id(&key.key_id).await.unwrap().is_none());
    assert!(
        store
            .delete_client(&c.client_id, &audit)
            .await
            .unwrap()
            .is_none()
    );
    let events = store
        .list_audit(&AuditQuery {
            client_id: Some(c.client_id.to_string()),
            before_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn listing_filters_orders_and_pages() {
    let db = TestDb::new().await;
    let store = db.open().await;
    insert(store.as_ref(), "Apple", &["chat"]).await;
    let (b, _) = insert(store.as_ref(), "banana", &["history"]).await;
    let (c, _) = insert(store.as_ref(), "pineAPPLE", &["chat", "history"]).await;
    let names = |v: Vec<Client>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_clients(&query()).await.unwrap()),
        ["pineAPPLE", "banana", "Apple"]
    );
    let q = ClientQuery {
        name_contains: Some("apple".into()),
        ..query()
    };
    assert_eq!(
        names(store.list_clients(&q).await.unwrap()),
        ["pineAPPLE", "Apple"]
    );
    let q = ClientQuery {
        scope: Some("history".into()),
        ..query()
    };
    assert_eq!(
        names(store.list_clients(&q).await.unwrap()),
        ["pineAPPLE", "banana"]
    );
    let q = ClientQuery {
        name_contains: Some("%".into()),
        ..query()
    };
    assert!(
        store.list_clients(&q).await.unwrap().is_empty(),
        "no wildcard meaning"
    );
    let after = ClientCursor {
        created_at: c.created_at,
        row_id: c.row_id,
    };
    let q = ClientQuery {
        after: Some(after),
        limit: 1,
        ..query()
    };
    assert_eq!(names(store.list_clients(&q).await.unwrap()), ["banana"]);

    let at = now();
    let edit = |old: &Client| {
        let mut new = old.clone();
        new.enabled = false;
        (
            new,
            NewAuditEvent::new(at, &Actor::Cli, Action::Disabled, &b.client_id, json!({})),
        )
    };
    store.update_client(&b.client_id, &edit).await.unwrap();
    let q = ClientQuery {
        include_disabled: false,
        ..query()
    };
    assert_eq!(
        names(store.list_clients(&q).await.unwrap()),
        ["pineAPPLE", "Apple"]
    );
}

#[tokio::test]
async fn last_used_never_moves_backwards() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let (c, _) = insert(store.as_ref(), "lu", &[]).await;
    let later = now();
    let earlier = later - Duration::seconds(30);
    store
        .record_last_used(&[(c.client_id.clone(), later)])
        .await
        .unwrap();
    store
        .record_last_used(&[(c.client_id.clone(), earlier)])
        .await
        .unwrap();
    let read = store.client(&c.client_id).await.unwrap().unwrap();
    assert_eq!(read.last_used_at, Some(later));
}

#[tokio::test]
async fn last_uses_are_written_a_part_at_a_time_and_a_flush_out_of_time_resumes_where_it_stopped() {
    let db = TestDb::new().await;
    let store = db.open().await;
    // More than one transaction's worth (2 000 clients), so more than one statement's (500).
    let mut clients = Vec::new();
    for i in 0..2001 {
        clients.push(insert(store.as_ref(), &format!("lu{i}"), &[]).await.0);
    }
    // Each client its own time, so a time written to the wrong client would show.
    let base = now() - Duration::hours(1);
    let at = |i: usize| base + Duration::seconds(i as i64);
    let last_use = LastUse::default();
    for (i, c) in clients.iter().enumerate() {
        last_use.record(&c.client_id, at(i));
    }
    last_use.record(&ClientId::new("client_gone"), base);
    let written = || async {
        let mut written = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let read = store.client(&c.client_id).await.unwrap().unwrap();
            if let Some(t) = read.last_used_at {
                assert_eq!(t, at(i), "{}", c.name);
                written.push(c.client_id.clone());
            }
        }
        written
    };
    // Out of time from the start: one part is written, in id order, the rest kept.
    let past = Some(std::time::Instant::now());
    last_use.flush(store.as_ref(), past).await.unwrap();
    let mut ids: Vec<ClientId> = clients.iter().map(|c| c.client_id.clone()).collect();
    ids.sort();
    let first_part = written().await;
    assert_eq!(first_part.len(), 2000);
    assert!(!first_part.contains(&ids[2000]), "the highest id waits");
    // The next flush starts where that one stopped, so the one left waits no longer.
    last_use.flush(store.as_ref(), past).await.unwrap();
    assert_eq!(written().await.len(), 2001);
}

#[tokio::test]
async fn admin_presence_counts_only_enabled_admin_clients() {
    let db = TestDb::new().await;
    let store = db.open().await;
    assert!(!store.has_admin_client().await.unwrap());
    insert(store.as_ref(), "user", &["chat"]).await;
    assert!(!store.has_admin_client().await.unwrap());
    let (admin, _) = insert(store.as_ref(), "admin", &["admin"]).await;
    assert!(store.has_admin_client().await.unwrap());
    let at = now();
    let edit = |old: &Client| {
        let mut new = old.clone();
        new.enabled = false;
        (
            new,
            NewAuditEvent::new(
                at,
                &Actor::Cli,
                Action::Disabled,
                &admin.client_id,
                json!({}),
            ),
        )
    };
    store.update_client(&admin.client_id, &edit).await.unwrap();
    assert!(!store.has_admin_client().await.unwrap());
}

#[tokio::test]
async fn every_write_is_in_the_change_log() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let start = store.latest_change().await.unwrap();
    let (c, _) = insert(store.as_ref(), "changes", &[]).await;
    let at = now();
    let edit = |old: &Client| {
        (
            old.clone(),
            NewAuditEvent::new(at, &Actor::Cli, Action::Updated, &c.client_id, json!({})),
        )
    };
    store.update_client(&c.client_id, &edit).await.unwrap();
    let changes = store.changes_after(start).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|(_, id)| *id == c.client_id));
    assert!(changes[0].0 < changes[1].0);
    assert_eq!(store.latest_change().await.unwrap(), changes[1].0);
    store
        .prune_changes(at + Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.changes_after(start).await.unwrap().is_empty());
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let (c, _) = insert(store.as_ref(), "kept", &[]).await;
    store.migrate().await.unwrap();
    let again = db.open().await;
    assert!(again.client(&c.client_id).await.unwrap().is_some());
}

#[tokio::test]
async fn timestamps_keep_microseconds() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let (c, _) = insert(store.as_ref(), "micro", &[]).await;
    let read = store.client(&c.client_id).await.unwrap().unwrap();
    assert_eq!(read.created_at, c.created_at);
    assert_eq!(read.created_at.timestamp_subsec_nanos() % 1000, 0);
}
