//! The admin API's successful paths: create, list, get, update, disable/enable, regenerate,
//! delete, audit.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem};

#[tokio::test]
async fn create_returns_the_client_and_a_key_shown_once() {
    let app = TestApp::spawn().await;
    let (client, key) = app
        .create_client(json!({
            "name": "  Chat app  ",
            "scopes": ["history", "chat", "keys:verify"],
            "rate_limit": 42,
            "expires_at": "2099-01-01T00:00:00+01:00",
            "metadata": {"team": "search"}
        }))
        .await;
    assert_eq!(client["name"], "Chat app");
    assert_eq!(client["scopes"], json!(["chat", "history", "keys:verify"]));
    assert_eq!(client["rate_limit"], 42);
    assert_eq!(client["enabled"], true);
    assert_eq!(client["expires_at"], "2098-12-31T23:00:00Z");
    assert_eq!(client["metadata"], json!({"team": "search"}));
    assert_eq!(client["last_used_at"], Value::Null);
    let id = client["client_id"].as_str().unwrap();
    assert!(id.starts_with("client_") && id.len() == 23);
    assert!(
        id[7..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(key.len(), 51);
    assert_eq!(client["key_prefix"], key[..13]);

    let shown = app
        .admin(Method::GET, &format!("/admin/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    let text = shown.text().await.unwrap();
    assert!(!text.contains(&key), "the key is never shown again");
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored, client);
}

#[tokio::test]
async fn create_applies_the_defaults() {
    let app = TestApp::spawn().await;
    let (client, _) = app.create_named("defaults").await;
    assert_eq!(client["scopes"], json!(["chat", "history"]));
    assert_eq!(client["rate_limit"], 100);
    assert_eq!(client["expires_at"], Value::Null);
    assert_eq!(client["metadata"], json!({}));
}

#[tokio::test]
async fn the_key_is_stored_only_as_a_hash() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("hashed").await;
    let dump = app.snapshot().await;
    assert!(
        !dump.contains(&key[13..]),
        "the secret part of the key is not in the database"
    );
}

async fn list(app: &TestApp, query: &str) -> Value {
    let response = app
        .admin(Method::GET, &format!("/admin/clients{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn names(page: &Value) -> Vec<String> {
    page["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().into())
        .collect()
}

#[tokio::test]
async fn list_is_newest_first_and_filters() {
    let app = TestApp::spawn().await;
    app.create_client(json!({"name": "Alpha one", "scopes": ["chat"]}))
        .await;
    app.create_client(json!({"name": "beta", "scopes": ["history"]}))
        .await;
    let (gamma, _) = app
        .create_client(json!({"name": "ALPHA two", "scopes": ["chat"]}))
        .await;
    let id = gamma["client_id"].as_str().unwrap();
    app.admin(Method::POST, &format!("/admin/clients/{id}/disable"))
        .send()
        .await
        .unwrap();

    assert_eq!(names(&list(&app, "").await), ["beta", "Alpha one"]);
    assert_eq!(
        names(&list(&app, "?include_disabled=true").await),
        ["ALPHA two", "beta", "Alpha one"]
    );
    assert_eq!(
        names(&list(&app, "?include_disabled=true&q=alpha").await),
        ["ALPHA two", "Alpha one"]
    );
    assert_eq!(names(&list(&app, "?scope=history").await), ["beta"]);
    assert_eq!(list(&app, "").await["next_cursor"], Value::Null);
}

#[tokio::test]
async fn pages_follow_each_other_without_repeats() {
    let app = TestApp::spawn().await;
    for i in 0..7 {
        app.create_named(&format!("c{i}")).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=3&cursor={c}"),
            None => "?limit=3".into(),
        };
        let page = list(&app, &query).await;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["c6", "c5", "c4", "c3", "c2", "c1", "c0"]);
}

#[tokio::test]
async fn patch_changes_only_the_given_fields_and_can_clear_the_expiry() {
    let app = TestApp::spawn().await;
    let (client, _) = app
        .create_client(
            json!({"name": "p", "expires_at": "2099-01-01T00:00:00Z", "metadata": {"a": 1}}),
        )
        .await;
    let id = client["client_id"].as_str().unwrap();
    let response = app
        .admin(Method::PATCH, &format!("/admin/clients/{id}"))
        .json(&json!({"rate_limit": 7, "expires_at": null, "metadata": {"b": 2}, "scopes": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["rate_limit"], 7);
    assert_eq!(updated["expires_at"], Value::Null);
    assert_eq!(
        updated["metadata"],
        json!({"b": 2}),
        "metadata is replaced whole"
    );
    assert_eq!(updated["scopes"], json!(["x"]));
    assert_eq!(updated["name"], "p");
    assert_ne!(updated["updated_at"], client["updated_at"]);
}

#[tokio::test]
async fn disable_and_enable_switch_the_key_off_and_on() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("toggle").await;
    let id = client["client_id"].as_str().unwrap();
    assert_eq!(app.verify(&key).await["valid"], true);

    let r = app
        .admin(Method::POST, &format!("/admin/clients/{id}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["enabled"], false);
    assert_eq!(app.verify(&key).await["code"], "DISABLED");

    let r = app
        .admin(Method::POST, &format!("/admin/clients/{id}/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["enabled"], true);
    assert_eq!(app.verify(&key).await["valid"], true);
}

#[tokio::test]
async fn regenerate_without_grace_stops_the_old_key_at_once() {
    let app = TestApp::spawn().await;
    let (client, old) = app.create_named("rekey").await;
    let id = client["client_id"].as_str().unwrap();
    assert_eq!(app.verify(&old).await["valid"], true); // warm the cache
    let r = app
        .admin(Method::POST, &format!("/admin/clients/{id}/regenerate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let new = body["api_key"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(body["client"]["key_prefix"], new[..13]);
    assert_eq!(app.verify(&old).await["code"], "NOT_FOUND");
    assert_eq!(app.verify(new).await["valid"], true);
}

#[tokio::test]
async fn regenerate_with_grace_keeps_the_old_key_for_a_while() {
    let app = TestApp::spawn().await;
    let (client, old) = app.create_named("grace").await;
    let id = client["client_id"].as_str().unwrap();
    let r = app
        .admin(Method::POST, &format!("/admin/clients/{id}/regenerate"))
        .json(&json!({"grace_period_seconds": 3600}))
        .send()
        .await
        .unwrap();
    let second = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.verify(&old).await["valid"], true);
    assert_eq!(app.verify(&second).await["valid"], true);

    // A second regeneration during the grace period ends the first key at once.
    let r = app
        .admin(Method::POST, &format!("/admin/clients/{id}/regenerate"))
        .json(&json!({"grace_period_seconds": 3600}))
        .send()
        .await
        .unwrap();
    let third = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.verify(&old).await["code"], "NOT_FOUND");
    assert_eq!(app.verify(&second).await["valid"], true);
    assert_eq!(app.verify(&third).await["valid"], true);
}

#[tokio::test]
async fn delete_removes_the_client_and_its_key_for_good() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("doomed").await;
    let id = client["client_id"].as_str().unwrap();
    assert_eq!(app.verify(&key).await["valid"], true);
    let r = app
        .admin(Method::DELETE, &format!("/admin/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.verify(&key).await["code"], "NOT_FOUND");
    let r = app
        .admin(Method::GET, &format!("/admin/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = app
        .admin(Method::DELETE, &format!("/admin/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn an_admin_client_key_works_as_admin_credential_and_is_named_in_the_audit() {
    let app = TestApp::spawn().await;
    let (admin, admin_key) = app
        .create_client(json!({"name": "ops", "scopes": ["admin"]}))
        .await;
    let r = app
        .request(Method::POST, "/admin/clients")
        .header("x-api-key", &admin_key)
        .json(&json!({"name": "made by ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let made: Value = r.json().await.unwrap();
    let id = made["client"]["client_id"].as_str().unwrap();
    let audit: Value = app.admin_get(&format!("/admin/audit?client_id={id}")).await;
    assert_eq!(audit["events"][0]["actor"], admin["client_id"]);
}

#[tokio::test]
async fn the_audit_log_records_every_change_newest_first_without_secrets() {
    let app = TestApp::spawn().await;
    let (client, key) = app
        .create_client(json!({"name": "audited", "rate_limit": 5}))
        .await;
    let id = client["client_id"].as_str().unwrap();
    let path = format!("/admin/clients/{id}");
    app.admin(Method::PATCH, &path)
        .json(&json!({"rate_limit": 6}))
        .send()
        .await
        .unwrap();
    app.admin(Method::POST, &format!("{path}/disable"))
        .send()
        .await
        .unwrap();
    app.admin(Method::POST, &format!("{path}/enable"))
        .send()
        .await
        .unwrap();
    let r = app
        .admin(Method::POST, &format!("{path}/regenerate"))
        .send()
        .await
        .unwrap();
    let new_key = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    app.admin(Method::DELETE, &path).send().await.unwrap();

    let r = app
        .admin(Method::GET, &format!("/admin/audit?client_id={id}"))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(&key) && !text.contains(&new_key[13..]));
    let audit: Value = serde_json::from_str(&text).unwrap();
    let events = audit["events"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "client.deleted",
            "client.key_regenerated",
            "client.enabled",
            "client.disabled",
            "client.updated",
            "client.created"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e["actor"] == "admin-token" && e["client_id"] == id)
    );
    assert_eq!(
        events[4]["changes"],
        json!({"rate_limit": {"from": 5, "to": 6}})
    );
    assert_eq!(events[5]["changes"]["name"], "audited");
    assert_eq!(
        events[3]["changes"],
        json!({"enabled": {"from": true, "to": false}})
    );

    // Audit pages follow each other too.
    let r = app
        .admin(Method::GET, &format!("/admin/audit?client_id={id}&limit=4"))
        .send()
        .await
        .unwrap();
    let first: Value = r.json().await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let r = app
        .admin(
            Method::GET,
            &format!("/admin/audit?client_id={id}&limit=4&cursor={cursor}"),
        )
        .send()
        .await
        .unwrap();
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["events"].as_array().unwrap().len(), 2);
    assert_eq!(second["next_cursor"], Value::Null);
}
