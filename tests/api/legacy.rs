//! Adopting the original Python service's PostgreSQL database: its table as it created it,
//! rows with real bcrypt hashes (cost 12) of keys made as it made them, then the relay on top.
//! PostgreSQL only: the original ran nowhere else.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::{TestApp, TestDb, assert_problem, random_hex};

/// The original's `init_db`, statement for statement (`../shared/legacy/api_keys.py`).
const LEGACY_DDL: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS api_clients (
        id SERIAL PRIMARY KEY,
        client_id VARCHAR(64) UNIQUE NOT NULL,
        api_key_hash VARCHAR(128) NOT NULL,
        name VARCHAR(255),
        scopes TEXT[] DEFAULT ARRAY['chat', 'history'],
        rate_limit INT DEFAULT 100,
        enabled BOOLEAN DEFAULT TRUE,
        expires_at TIMESTAMPTZ,
        created_at TIMESTAMPTZ DEFAULT NOW(),
        last_used_at TIMESTAMPTZ
    )",
    "CREATE INDEX IF NOT EXISTS idx_api_clients_client_id ON api_clients(client_id)",
    "CREATE INDEX IF NOT EXISTS idx_api_clients_enabled ON api_clients(enabled)",
];

/// A client as the original created it, plus what the test needs to know about it.
struct LegacyClient {
    client_id: String,
    key: String,
}

/// `create_client` of the original: `client_` + token_hex(8), key `eg_` + token_hex(20),
/// bcrypt with the default cost (12).
async fn legacy_create(
    conn: &mut sqlx::PgConnection,
    name: &str,
    scopes: &[&str],
    rate_limit: i32,
    expires_at: Option<&str>,
) -> LegacyClient {
    let client_id = format!("client_{}", random_hex(8));
    let key = format!("eg_{}", random_hex(20));
    let hash = bcrypt::hash(&key, 12).unwrap();
    assert!(hash.starts_with("$2b$12$"));
    sqlx::query(
        "INSERT INTO api_clients (client_id, api_key_hash, name, scopes, rate_limit, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6::timestamptz)",
    )
    .bind(&client_id)
    .bind(&hash)
    .bind(name)
    .bind(scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .bind(rate_limit)
    .bind(expires_at)
    .execute(&mut *conn)
    .await
    .unwrap();
    LegacyClient { client_id, key }
}

struct LegacyDb {
    db: TestDb,
    active: LegacyClient,
    admin: LegacyClient,
    disabled: LegacyClient,
    expired: LegacyClient,
    /// Every row as JSON, as the original left it.
    rows: Vec<Value>,
}

async fn legacy_db() -> Option<LegacyDb> {
    let db = TestDb::new().await;
    if !db.url.starts_with("postgres") {
        eprintln!(
            "TEST_DATABASE_URL is unset: adoption concerns PostgreSQL, this test checks nothing"
        );
        return None;
    }
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for statement in LEGACY_DDL {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    let active = legacy_create(&mut conn, "Chat frontend", &["history", "chat"], 120, None).await;
    let admin = legacy_create(
        &mut conn,
        "Ops",
        &["admin"],
        50,
        Some("2099-03-04T05:06:07.123456Z"),
    )
    .await;
    let disabled = legacy_create(&mut conn, "Retired", &["chat"], 10, None).await;
    let expired = legacy_create(
        &mut conn,
        "Trial",
        &["chat"],
        10,
        Some("2020-01-01T00:00:00Z"),
    )
    .await;
    // `disable_client` and a use of the admin key, as the original recorded them.
    sqlx::query("UPDATE api_clients SET enabled = FALSE WHERE client_id = $1")
        .bind(&disabled.client_id)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE api_clients SET last_used_at = '2025-06-07 08:09:10.654321+00' WHERE client_id = $1")
        .bind(&admin.client_id)
        .execute(&mut conn)
        .await
        .unwrap();
    let rows = dump(&mut conn).await;
    conn.close().await.unwrap();
    Some(LegacyDb {
        db,
        active,
        admin,
        disabled,
        expired,
        rows,
    })
}

/// The original columns of every row, as JSON with microsecond timestamps.
async fn dump(conn: &mut sqlx::PgConnection) -> Vec<Value> {
    let rows: Vec<(sqlx::types::Json<Value>,)> = sqlx::query_as(
        "SELECT json_build_object('client_id', client_id, 'name', name, 'scopes', scopes,
                'rate_limit', rate_limit, 'enabled', enabled,
                'expires_at', to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                'last_used_at', to_char(last_used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))
         FROM api_clients ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    rows.into_iter().map(|(v,)| v.0).collect()
}

/// `2025-06-07T08:09:10.654321Z` and the API's RFC 3339 name the same instant.
fn same_instant(stored: &Value, shown: &Value) -> bool {
    match (stored.as_str(), shown.as_str()) {
        (Some(a), Some(b)) => {
            chrono::DateTime::parse_from_rfc3339(a).unwrap()
                == chrono::DateTime::parse_from_rfc3339(b).unwrap()
        }
        (None, None) => true,
        _ => false,
    }
}

async fn bcrypt_checks(app: &TestApp) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix("relay_legacy_bcrypt_checks_total "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_database_keeps_every_client_and_key() {
    let Some(legacy) = legacy_db().await else {
        return;
    };
    let app = TestApp::spawn_on(legacy.db, crate::support::test_config()).await;

    // Every field survived, and every client shows up in the admin API.
    let listed: Value = app.admin_get("/admin/clients?include_disabled=true").await;
    let shown = listed["clients"].as_array().unwrap();
    assert_eq!(shown.len(), legacy.rows.len());
    for row in &legacy.rows {
        let c = shown
            .iter()
            .find(|c| c["client_id"] == row["client_id"])
            .unwrap();
        assert_eq!(c["name"], row["name"]);
        let mut scopes: Vec<Value> = row["scopes"].as_array().unwrap().clone();
        scopes.sort_by_key(|s| s.as_str().unwrap().to_string());
        assert_eq!(c["scopes"], Value::Array(scopes));
        assert_eq!(c["rate_limit"], row["rate_limit"]);
        assert_eq!(c["enabled"], row["enabled"]);
        assert_eq!(
            c["key_prefix"],
            Value::Null,
            "an adopted key has no prefix until replaced"
        );
        for field in ["expires_at", "created_at", "last_used_at"] {
            assert!(
                same_instant(&row[field], &c[field]),
                "{field}: {} vs {}",
                row[field],
                c[field]
            );
        }
    }

    // Active keys verify; disabled and expired ones report why; unknown ones are not found.
    let v = app.verify(&legacy.active.key).await;
    assert_eq!(
        (v["valid"].as_bool(), v["client_id"].as_str()),
        (Some(true), Some(legacy.active.client_id.as_str()))
    );
    assert_eq!(v["rate_limit"], 120);
    assert_eq!(app.verify(&legacy.disabled.key).await["code"], "DISABLED");
    assert_eq!(app.verify(&legacy.expired.key).await["code"], "EXPIRED");
    assert_eq!(
        app.verify(&format!("eg_{}", random_hex(20))).await["code"],
        "NOT_FOUND"
    );

    // The second verification of a legacy key does no bcrypt work, on this node or another.
    let before = bcrypt_checks(&app).await;
    assert_eq!(app.verify(&legacy.active.key).await["valid"], true);
    assert_eq!(bcrypt_checks(&app).await, before);
    let other_node = TestApp::spawn_sharing(&app, crate::support::test_config()).await;
    assert_eq!(other_node.verify(&legacy.active.key).await["valid"], true);
    assert_eq!(bcrypt_checks(&other_node).await, 0.0);

    // The legacy admin key is an admin credential; legacy keys get tokens.
    let r = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth(&legacy.admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .request(Method::POST, "/v1/token")
        .header("x-api-key", &legacy.active.key)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerating_an_adopted_key_issues_a_new_format_key() {
    let Some(legacy) = legacy_db().await else {
        return;
    };
    let app = TestApp::spawn_on(legacy.db, crate::support::test_config()).await;
    assert_eq!(app.verify(&legacy.active.key).await["valid"], true);
    let path = format!("/admin/clients/{}/regenerate", legacy.active.client_id);
    let r: Value = app
        .admin(Method::POST, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_key = r["api_key"].as_str().unwrap();
    assert_eq!(new_key.len(), 51);
    assert_eq!(r["client"]["key_prefix"], new_key[..13]);
    assert_eq!(app.verify(new_key).await["valid"], true);
    assert_eq!(app.verify(&legacy.active.key).await["code"], "NOT_FOUND");
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT api_key_hash FROM api_clients WHERE client_id = $1")
            .bind(&legacy.active.client_id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!hash.starts_with("$2"), "the bcrypt hash is gone");
}

#[tokio::test]
async fn adoption_is_one_transaction_and_runs_once() {
    let Some(legacy) = legacy_db().await else {
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&legacy.db.url).await.unwrap();
    // Make the adoption fail midway: a table of that name already exists.
    sqlx::query("CREATE TABLE audit_events (x INT)")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(
        egregore_relay::storage::open(&legacy.db.url, 2)
            .await
            .is_err()
    );
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'api_clients'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(columns, 10, "the original schema is intact");
    assert_eq!(dump(&mut conn).await, legacy.rows);

    sqlx::query("DROP TABLE audit_events")
        .execute(&mut conn)
        .await
        .unwrap();
    legacy.db.open().await;
    let after_first = dump(&mut conn).await;
    assert_eq!(
        after_first, legacy.rows,
        "adoption changed no original value"
    );
    let first_schema = schema(&mut conn).await;
    legacy.db.open().await;
    assert_eq!(
        schema(&mut conn).await,
        first_schema,
        "a second migration is a no-op"
    );
    assert_eq!(dump(&mut conn).await, after_first);
}

/// Every column of the public schema, as one string.
async fn schema(conn: &mut sqlx::PgConnection) -> String {
    sqlx::query_scalar(
        "SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ','
                           ORDER BY table_name, column_name)
         FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_legacy_keys_leaves_valid_keys_served() {
    let Some(legacy) = legacy_db().await else {
        return;
    };
    let app = TestApp::spawn_on(legacy.db, crate::support::test_config()).await;
    let (_, valid) = app
        .create_client(json!({"name": "steady", "rate_limit": 1000}))
        .await;
    assert_eq!(app.verify(&valid).await["valid"], true);

    let flood: Vec<_> = (0..200)
        .map(|_| {
            let (base, http) = (app.base.clone(), app.http.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/v1/keys/verify"))
                    .bearer_auth(crate::support::ADMIN_TOKEN)
                    .json(&json!({"key": format!("eg_{}", random_hex(20))}))
                    .send()
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(app.verify(&valid).await["valid"], true);
    }
    let elapsed = started.elapsed();
    // While the flood waits for bcrypt, valid keys are answered from the cache at once:
    // 100 verifications in far less time than one bcrypt scan of four rows (about 1 s).
    assert!(
        elapsed < Duration::from_secs(5),
        "valid keys waited {elapsed:?}"
    );
    for f in &flood {
        f.abort();
    }
    // The legacy admin key still works afterwards.
    let r = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth(&legacy.admin.key)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let _ = assert_problem;
}
