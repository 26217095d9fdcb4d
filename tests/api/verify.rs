//! `POST /v1/keys/verify`: codes, their order, the rate limit it reports and consumes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem};

#[tokio::test]
async fn a_valid_key_reports_its_client_and_allowance() {
    let app = TestApp::spawn().await;
    let (client, key) = app
        .create_client(json!({"name": "v", "rate_limit": 10, "metadata": {"tier": "gold"}}))
        .await;
    let v = app.verify(&key).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["client_id"], client["client_id"]);
    assert_eq!(v["name"], "v");
    assert_eq!(v["scopes"], json!(["chat", "history"]));
    assert_eq!(v["rate_limit"], 10);
    assert_eq!(v["expires_at"], Value::Null);
    assert_eq!(v["metadata"], json!({"tier": "gold"}));
    assert_eq!(
        v["ratelimit"],
        json!({"limit": 10, "remaining": 9, "reset_seconds": 6})
    );
}

#[tokio::test]
async fn malformed_and_unknown_keys_are_not_found() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("v").await;
    let mut bad_checksum = key.clone().into_bytes();
    bad_checksum[50] = if bad_checksum[50] == b'0' { b'1' } else { b'0' };
    let unknown = {
        // Same shape and a valid checksum, but never issued: take another app's key.
        let other = TestApp::spawn().await;
        other.create_named("elsewhere").await.1
    };
    for candidate in [
        String::new(),
        "eg_".into(),
        "not a key".into(),
        format!("eg_{}", "0".repeat(40)),
        String::from_utf8(bad_checksum).unwrap(),
        unknown,
    ] {
        assert_eq!(
            app.verify(&candidate).await,
            json!({"valid": false, "code": "NOT_FOUND"})
        );
    }
}

#[tokio::test]
async fn codes_come_in_the_documented_order() {
    let app = TestApp::spawn().await;
    let (client, key) = app
        .create_client(json!({"name": "order", "rate_limit": 1}))
        .await;
    let path = format!("/admin/clients/{}", client["client_id"].as_str().unwrap());
    assert_eq!(app.verify(&key).await["valid"], true);
    assert_eq!(app.verify(&key).await["code"], "RATE_LIMITED");

    // Expire it: EXPIRED wins over RATE_LIMITED. The expiry must be in the future when set,
    // so write a past one straight into the store, as time passing would.
    let id = egregore_relay::domain::client::ClientId::new(client["client_id"].as_str().unwrap());
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    expire_now(&app, &id, past).await;
    assert_eq!(verify_until(&app, &key, "EXPIRED").await["code"], "EXPIRED");

    // DISABLED wins over EXPIRED.
    app.admin(Method::POST, &format!("{path}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(app.verify(&key).await["code"], "DISABLED");
}

/// Sets `expires_at` to a past instant directly in the store, through the same change log
/// every write uses (the running server learns of it from there).
async fn expire_now(
    app: &TestApp,
    id: &egregore_relay::domain::client::ClientId,
    at: chrono::DateTime<chrono::Utc>,
) {
    use egregore_relay::domain::audit::{Action, Actor, NewAuditEvent};
    let edit = |old: &egregore_relay::domain::client::Client| {
        let mut new = old.clone();
        new.expires_at = Some(at);
        (
            new,
            NewAuditEvent::new(at, &Actor::Cli, Action::Updated, id, json!({})),
        )
    };
    app.store.update_client(id, &edit).await.unwrap().unwrap();
}

/// Verifies `key` until it answers `code`, for at most two seconds; returns the last answer.
pub async fn verify_until(app: &TestApp, key: &str, code: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let v = app.verify(key).await;
        if v["code"] == code || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn verification_charges_the_key_owner_never_the_caller() {
    let app = TestApp::spawn().await;
    let (_, caller) = app
        .create_client(json!({"name": "checker", "scopes": ["keys:verify"], "rate_limit": 1}))
        .await;
    let (_, key) = app
        .create_client(json!({"name": "target", "rate_limit": 5}))
        .await;
    for remaining in (0..5).rev() {
        let r = app
            .request(Method::POST, "/v1/keys/verify")
            .bearer_auth(&caller)
            .json(&json!({"key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "the caller (limit 1) is not charged"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["ratelimit"]["remaining"], remaining);
    }
    assert_eq!(app.verify(&key).await["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn a_verify_caller_needs_keys_verify_or_admin() {
    let app = TestApp::spawn().await;
    let (_, plain) = app.create_named("plain").await;
    let r = app
        .request(Method::POST, "/v1/keys/verify")
        .bearer_auth(&plain)
        .json(&json!({"key": plain}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn last_used_at_is_recorded_within_ten_seconds() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("used").await;
    let path = format!("/admin/clients/{}", client["client_id"].as_str().unwrap());
    assert_eq!(app.verify(&key).await["valid"], true);
    let mut recorded = Value::Null;
    for _ in 0..50 {
        let c: Value = app.admin_get(&path).await;
        recorded = c["last_used_at"].clone();
        if !recorded.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        recorded.is_string(),
        "last_used_at was not recorded within 10 s"
    );
}
