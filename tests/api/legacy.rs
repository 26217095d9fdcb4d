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
    legacy_create_with_cost(conn, name, scopes, rate_limit, expires_at, 12).await
}

async fn legacy_create_with_cost(
    conn: &mut sqlx::PgConnection,
    name: &str,
    scopes: &[&str],
    rate_limit: i32,
    expires_at: Option<&str>,
    cost: u32,
) -> LegacyClient {
    let client_id = format!("client_{}", random_hex(8));
    let key = format!("eg_{}", random_hex(20));
    let hash = bcrypt::hash(&key, cost).unwrap();
    assert!(hash.starts_with(&format!("$2b${cost:02}$")));
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

/// A fresh database holding the original's table, or `None` (said on stderr) when the suite
/// runs on SQLite.
async fn legacy_schema() -> Option<(TestDb, sqlx::PgConnection)> {
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
    Some((db, conn))
}

async fn legacy_db() -> Option<LegacyDb> {
    let (db, mut conn) = legacy_schema().await?;
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
    let before = metric(&app, BCRYPT_CHECKS).await;
    assert_eq!(app.verify(&legacy.active.key).await["valid"], true);
    assert_eq!(metric(&app, BCRYPT_CHECKS).await, before);
    let other_node = TestApp::spawn_sharing(&app, crate::support::test_config()).await;
    assert_eq!(other_node.verify(&legacy.active.key).await["valid"], true);
    assert_eq!(metric(&other_node, BCRYPT_CHECKS).await, 0.0);

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

/// The original's table with `rows` clients whose keys are hashed at bcrypt `cost` (low
/// costs keep scans short where a test needs many of them); returns the database and keys.
async fn legacy_db_of(rows: usize, cost: u32) -> Option<(TestDb, Vec<LegacyClient>)> {
    let (db, mut conn) = legacy_schema().await?;
    let mut clients = Vec::new();
    for i in 0..rows {
        let name = format!("client {i}");
        clients.push(legacy_create_with_cost(&mut conn, &name, &["chat"], 1000, None, cost).await);
    }
    conn.close().await.unwrap();
    Some((db, clients))
}

/// A client whose connections come from `ip` (any address of 127.0.0.0/8 reaches the server),
/// so a test can act as several callers, each with its own failed-authentication budget.
fn http_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

const BCRYPT_CHECKS: &str = "relay_legacy_bcrypt_checks_total";

/// The value of the metric `name` in `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
        .parse()
        .unwrap()
}

/// Waits until no legacy check is queued or running.
async fn wait_for_legacy_checks(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(app, "relay_legacy_key_checks_queued").await > 0.0 {
        assert!(Instant::now() < deadline, "legacy checks never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends, from the given addresses, one request each with an unknown legacy key, waits until
/// `queued` checks are queued or running, then gives up on every request still unanswered.
async fn abandon_legacy_requests(app: &TestApp, from: &[String], queued: f64) {
    let requests: Vec<_> = from
        .iter()
        .map(|ip| {
            let request = http_from(ip)
                .get(format!("{}/admin/clients", app.base))
                .bearer_auth(format!("eg_{}", random_hex(20)))
                .send();
            tokio::spawn(request)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(app, "relay_legacy_key_checks_queued").await < queued {
        assert!(Instant::now() < deadline, "the checks were never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for request in requests {
        request.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_legacy_checks_give_back_their_queue_places() {
    let Some((db, clients)) = legacy_db_of(3, 8).await else {
        return;
    };
    let app = TestApp::spawn_on(db, crate::support::test_config()).await;
    // More checks than the queue holds, from callers on four addresses, abandoned while queued.
    let from: Vec<String> = (0..96).map(|i| format!("127.0.1.{}", i % 4 + 1)).collect();
    abandon_legacy_requests(&app, &from, 40.0).await;
    wait_for_legacy_checks(&app).await;
    // A legacy key nobody has presented yet is still checked, not turned away.
    let r = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth(&clients[0].key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_check_still_remembers_that_its_key_matched_nothing() {
    let Some((db, _)) = legacy_db_of(3, 10).await else {
        return;
    };
    let app = TestApp::spawn_on(db, crate::support::test_config()).await;
    let key = format!("eg_{}", random_hex(20));
    let request = tokio::spawn(
        app.request(Method::GET, "/admin/clients")
            .bearer_auth(&key)
            .send(),
    );
    while metric(&app, "relay_legacy_key_checks_queued").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    request.abort();
    wait_for_legacy_checks(&app).await;
    let checks = metric(&app, BCRYPT_CHECKS).await;
    assert_eq!(checks, 3.0, "the abandoned check did not run to its end");
    // The same key again within ten minutes costs no bcrypt.
    let r = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(metric(&app, BCRYPT_CHECKS).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_waiting_is_still_charged_a_failed_authentication() {
    let Some((db, _)) = legacy_db_of(3, 12).await else {
        return;
    };
    let app = TestApp::spawn_on(db, crate::support::test_config()).await;
    abandon_legacy_requests(&app, &vec!["127.0.2.1".to_string(); 30], 30.0).await;
    // The address has spent its budget: a further failure is a 429, and it gets no more
    // bcrypt work, while a valid credential is still served.
    let caller = http_from("127.0.2.1");
    let r = caller
        .get(format!("{}/admin/clients", app.base))
        .bearer_auth("eg_guess")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    let queued = metric(&app, "relay_legacy_key_checks_queued").await;
    let r = caller
        .get(format!("{}/admin/clients", app.base))
        .bearer_auth(format!("eg_{}", random_hex(20)))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(metric(&app, "relay_legacy_key_checks_queued").await <= queued);
    let r = caller
        .get(format!("{}/admin/clients", app.base))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_key_turned_away_for_want_of_bcrypt_is_a_503_with_retry_after() {
    let Some((db, _)) = legacy_db_of(3, 12).await else {
        return;
    };
    let app = TestApp::spawn_on(db, crate::support::test_config()).await;
    // Three callers, thirty checks each: more than the queue holds, within each caller's
    // failed-authentication budget.
    let requests = (0..90).map(|i| {
        let http = http_from(&format!("127.0.3.{}", i % 3 + 1));
        let url = format!("{}/v1/keys/verify", app.base);
        async move {
            let r = http
                .post(url)
                .bearer_auth(crate::support::ADMIN_TOKEN)
                .json(&json!({"key": format!("eg_{}", random_hex(20))}))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            Some((r.status(), retry_after, r.json::<Value>().await.ok()?))
        }
    });
    let mut busy = 0;
    // A request still queued when the test stopped waiting has no answer.
    for (status, retry_after, body) in futures_util::future::join_all(requests)
        .await
        .into_iter()
        .flatten()
    {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let retry: u64 = retry_after.unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry));
            assert_eq!(body["status"], 503);
            busy += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["code"], "NOT_FOUND");
        }
    }
    // 26 at least, but for the few scans that may finish while the requests arrive.
    assert!(busy >= 16, "only {busy} of 90 were turned away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_stops_working_when_the_hash_it_was_checked_against_changes() {
    let Some((db, clients)) = legacy_db_of(2, 4).await else {
        return;
    };
    let url = db.url.clone();
    let mut app = TestApp::spawn_on(db, crate::support::test_config()).await;
    let old_key = clients[0].key.clone();
    assert_eq!(app.verify(&old_key).await["valid"], true);
    // The original service (or an operator) re-keys the client behind the relay's back.
    let new_key = format!("eg_{}", random_hex(20));
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE api_clients SET api_key_hash = $1 WHERE client_id = $2")
        .bind(bcrypt::hash(&new_key, 4).unwrap())
        .bind(&clients[0].client_id)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // A node that has not cached the old answer (a restart, or the cache TTL later).
    app.stop().await;
    let app = TestApp::spawn_on(TestDb::shared(&url), crate::support::test_config()).await;
    assert_eq!(app.verify(&old_key).await["code"], "NOT_FOUND");
    let verified = app.verify(&new_key).await;
    assert_eq!(verified["valid"], true);
    assert_eq!(verified["client_id"], clients[0].client_id.as_str());
    assert_eq!(app.verify(&old_key).await["code"], "NOT_FOUND");
    drop(app);
}

#[tokio::test]
async fn uses_of_adopted_keys_are_counted_under_their_adopted_client() {
    let Some((db, clients)) = legacy_db_of(2, 4).await else {
        return;
    };
    let mut config = crate::support::test_config();
    config.usage.flush_interval = Duration::from_millis(100);
    let mut app = TestApp::spawn_on(db, config).await;
    for _ in 0..3 {
        assert_eq!(app.verify(&clients[1].key).await["valid"], true);
    }
    app.stop().await;
    let series = egregore_relay::service::usage::UsageReports::new(app.store.clone())
        .series(
            egregore_relay::service::usage::SeriesRequest {
                client_id: Some(clients[1].client_id.clone()),
                ..Default::default()
            },
            egregore_relay::domain::now(),
        )
        .await
        .unwrap();
    let allowed = egregore_relay::domain::usage::Outcome::Allowed;
    assert_eq!(series.totals.get(allowed), 3);
    assert_eq!(series.totals.total(), 3);
}
