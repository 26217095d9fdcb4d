//! Test fixtures: a fresh database per test, the service on an ephemeral port, and helpers.

use std::sync::Arc;

use egregore_relay::config::ServeConfig;
use egregore_relay::storage::{self, ClientQuery, Store};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef-0123456789";

/// A database of its own, removed when dropped.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        server_url: String,
        name: String,
    },
    /// Another `TestDb` owns it.
    Shared,
}

/// `len` random bytes in hex, for names that must not collide between parallel tests.
pub fn random_hex(len: usize) -> String {
    egregore_relay::domain::random_hex(len).unwrap()
}

impl TestDb {
    pub async fn new() -> TestDb {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(server_url) if !server_url.is_empty() => {
                use sqlx::Connection;
                let name = format!("relay_test_{}", random_hex(6));
                let mut conn = sqlx::PgConnection::connect(&server_url)
                    .await
                    .expect("TEST_DATABASE_URL must point at a reachable PostgreSQL server");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let base = server_url.split('?').next().unwrap();
                let (prefix, _) = base.rsplit_once('/').unwrap();
                TestDb {
                    url: format!("{prefix}/{name}"),
                    cleanup: Cleanup::Postgres { server_url, name },
                }
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("relay.db").display());
                TestDb {
                    url,
                    cleanup: Cleanup::Dir(dir),
                }
            }
        }
    }

    /// A handle on a database another `TestDb` owns (and removes).
    pub fn shared(url: &str) -> TestDb {
        TestDb {
            url: url.to_string(),
            cleanup: Cleanup::Shared,
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        storage::open(&self.url, 5).await.unwrap()
    }

    /// Runs one SQL statement on the database directly, as something other than the relay
    /// (an operator, the original service) would.
    pub async fn execute(&self, statement: &str) {
        use sqlx::Connection;
        if self.url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(statement).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query(statement).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }

    /// The one integer a query answers, read directly.
    pub async fn scalar(&self, query: &str) -> i64 {
        use sqlx::Connection;
        if self.url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(query)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(query)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { server_url, name } = &self.cleanup {
            let (server_url, name) = (server_url.clone(), name.clone());
            // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&server_url).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(&sql).execute(&mut conn).await;
                    }
                });
            })
            .join();
        }
    }
}

/// The service, serving on 127.0.0.1 on a port of its own.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The settings every test app starts from.
pub fn test_config() -> ServeConfig {
    ServeConfig::with_admin_token(ADMIN_TOKEN)
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: ServeConfig) -> TestApp {
        let db = TestDb::new().await;
        TestApp::spawn_on(db, config).await
    }

    /// A second server on the same database as `other` (which keeps the database alive).
    pub async fn spawn_sharing(other: &TestApp, config: ServeConfig) -> TestApp {
        let db = TestDb {
            url: other.db.url.clone(),
            cleanup: Cleanup::Shared,
        };
        TestApp::spawn_on(db, config).await
    }

    pub async fn spawn_on(db: TestDb, config: ServeConfig) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestApp::spawn_listening(db, config, listener).await
    }

    /// Serves on `listener`; requests go to its port on 127.0.0.1.
    pub async fn spawn_listening(
        db: TestDb,
        mut config: ServeConfig,
        listener: tokio::net::TcpListener,
    ) -> TestApp {
        let store = db.open().await;
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        // The default issuer names this server; a test that shares tokens between servers
        // sets one of its own.
        if config.tokens.issuer == test_config().tokens.issuer {
            config.tokens.issuer = base.clone();
        }
        let (tx, rx) = oneshot::channel::<()>();
        let server_store = store.clone();
        let server = tokio::spawn(async move {
            egregore_relay::app::serve(&config, server_store, listener, async {
                let _ = rx.await;
            })
            .await
        });
        TestApp {
            base,
            http: reqwest::Client::new(),
            store,
            db,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ADMIN_TOKEN)
    }

    /// Creates a client through the API; returns its JSON and its key.
    pub async fn create_client(&self, body: Value) -> (Value, String) {
        let response = self
            .admin(Method::POST, "/admin/clients")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.text().await
        );
        let body: Value = response.json().await.unwrap();
        (
            body["client"].clone(),
            body["api_key"].as_str().unwrap().to_string(),
        )
    }

    pub async fn create_named(&self, name: &str) -> (Value, String) {
        self.create_client(json!({ "name": name })).await
    }

    /// Verifies `key` with the admin token as the caller.
    pub async fn verify(&self, key: &str) -> Value {
        let response = self
            .admin(Method::POST, "/v1/keys/verify")
            .json(&json!({ "key": key }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// `GET path` without credentials; the answer as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.request(Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET path` with the admin token; the answer as JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.admin(Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.request(Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Everything an admin write could touch: every client and the audit log.
    pub async fn snapshot(&self) -> String {
        let query = ClientQuery {
            include_disabled: true,
            name_contains: None,
            scope: None,
            after: None,
            limit: 100_000,
        };
        let clients = self.store.list_clients(&query).await.unwrap();
        let audit = self
            .store
            .list_audit(&storage::AuditQuery {
                client_id: None,
                before_id: None,
                limit: 100_000,
            })
            .await
            .unwrap();
        format!("{clients:?}\n{audit:?}")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Creates a client through the admin API of the server at `base` (a `relay serve` process,
/// say); returns its id and key.
pub async fn create_on(base: &str, body: Value) -> (String, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    (
        body["client"]["client_id"].as_str().unwrap().to_string(),
        body["api_key"].as_str().unwrap().to_string(),
    )
}

/// Reads what is left of a streamed response body.
pub async fn read_rest(response: &mut Response) -> Vec<u8> {
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    rest
}

/// Asserts a problem+json error with this status; returns the body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

/// The JSON Pointers named in a 400's `errors`.
pub fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["pointer"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}
