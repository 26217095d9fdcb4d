//! The relay routes against a real upstream: forwarding, credentials, streaming, timeouts,
//! scopes and rate limits, in process and through Redis.

use std::time::Duration;

use egregore_relay::config::{RedisConfig, ServeConfig};
use egregore_relay::domain::route::{Route, RouteTable};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestApp, TestDb, assert_problem, read_rest};
use crate::upstream;

/// Relay settings in front of `upstream`: the default routes, a slow route with a 1 s timeout,
/// a dead upstream, and a custom scope.
pub fn relay_config(upstream: &str, dead: &str) -> ServeConfig {
    let mut config = ServeConfig::with_admin_token(ADMIN_TOKEN);
    let mut routes = RouteTable::defaults(upstream).unwrap();
    routes.push(Route {
        prefix: "/v1/chat/slow".into(),
        upstream: upstream.into(),
        scope: "chat".parse().unwrap(),
        timeout: Some(Duration::from_secs(1)),
    });
    routes.push(Route {
        prefix: "/v1/dead".into(),
        upstream: dead.into(),
        scope: "chat".parse().unwrap(),
        timeout: None,
    });
    routes.push(Route {
        prefix: "/v1/search".into(),
        upstream: upstream.into(),
        scope: "search".parse().unwrap(),
        timeout: None,
    });
    config.routes = RouteTable::new(routes).unwrap();
    config
}

/// `GET path` with `key` in `X-API-Key`.
async fn get_with_key(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.request(Method::GET, path)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

/// An address nothing listens on.
async fn dead_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

async fn spawn() -> (TestApp, upstream::Upstream) {
    let upstream = upstream::start().await;
    let app = TestApp::spawn_with(relay_config(&upstream.base, &dead_upstream().await)).await;
    (app, upstream)
}

#[tokio::test]
async fn requests_reach_the_upstream_intact_and_its_answer_comes_back() {
    let (app, _upstream) = spawn().await;
    let (client, key) = app
        .create_client(json!({"name": "fwd", "rate_limit": 10}))
        .await;
    let r = app
        .request(Method::PUT, "/v1/chat/echo/x?a=1&b=two")
        .header("x-api-key", &key)
        .header("x-custom", "kept")
        .header("x-relay-client-id", "spoofed")
        .header("connection", "x-hop")
        .header("x-hop", "dropped")
        .header("x-request-id", "req-123")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-upstream"], "yes");
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=10;w=60");
    assert!(
        r.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"default\";r=9;t=")
    );
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/v1/chat/echo/x");
    assert_eq!(seen["query"], "a=1&b=two");
    assert_eq!(seen["body"], "hello upstream");
    let h = &seen["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-relay-client-id"], client["client_id"]);
    assert_eq!(h["x-relay-scopes"], "chat history");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-request-id"], "req-123");
    assert!(
        h.get("x-api-key").is_none() && h.get("authorization").is_none(),
        "{h}"
    );
    assert!(
        h.get("x-hop").is_none(),
        "headers named in Connection are hop-by-hop"
    );
}

#[tokio::test]
async fn an_access_token_works_and_its_scopes_are_the_narrowed_ones() {
    let (app, _upstream) = spawn().await;
    let (_, key) = app.create_named("tok").await;
    let r = app
        .request(Method::POST, "/v1/token")
        .header("x-api-key", &key)
        .form(&[("grant_type", "client_credentials"), ("scope", "history")])
        .send()
        .await
        .unwrap();
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .request(Method::GET, "/v1/history/echo")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-relay-scopes"], "history");
    assert!(seen["headers"].get("authorization").is_none());
    let r = app
        .request(Method::GET, "/v1/chat/echo")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn credentials_and_scopes_are_enforced() {
    let (app, _upstream) = spawn().await;
    let (_, history_only) = app
        .create_client(json!({"name": "h", "scopes": ["history"]}))
        .await;
    let r = app
        .request(Method::GET, "/v1/chat/echo")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    let r = app
        .request(Method::GET, "/v1/chat/echo")
        .bearer_auth("eg_invalid")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    let r = app
        .request(Method::GET, "/v1/chat/echo")
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    let r = get_with_key(&app, "/v1/chat/echo", &history_only).await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let r = get_with_key(&app, "/v1/search/q", &history_only).await;
    assert_problem(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn unrouted_paths_are_a_404() {
    let (app, _upstream) = spawn().await;
    let (_, key) = app.create_named("n").await;
    for path in ["/v1/chatty", "/v2/chat", "/"] {
        let r = get_with_key(&app, path, &key).await;
        assert_problem(r, StatusCode::NOT_FOUND).await;
    }
    let plain = TestApp::spawn().await;
    let r = plain.request(Method::GET, "/v1/chat").send().await.unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn the_rate_limit_applies_with_headers_and_retry_after() {
    let (app, _upstream) = spawn().await;
    let (_, key) = app
        .create_client(json!({"name": "rl", "rate_limit": 3}))
        .await;
    for _ in 0..3 {
        let r = get_with_key(&app, "/v1/chat/echo", &key).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = get_with_key(&app, "/v1/chat/echo", &key).await;
    assert_eq!(r.headers()["retry-after"], "20");
    assert_eq!(r.headers()["ratelimit"], "\"default\";r=0;t=60");
    let problem = assert_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    // Verification and the token endpoint draw on the same allowance.
    assert_eq!(app.verify(&key).await["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let (app, upstream) = spawn().await;
    let (_, key) = app.create_named("sse").await;
    let mut r = get_with_key(&app, "/v1/chat/sse", &key).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    // Only now does the upstream send its last event.
    upstream.signals.send_last_event.notify_one();
    assert_eq!(read_rest(&mut r).await, b"data: last\n\n");
}

#[tokio::test]
async fn a_large_upload_streams_through_without_being_held() {
    let (app, upstream) = spawn().await;
    let (_, key) = app.create_named("up").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = app
        .request(Method::POST, "/v1/chat/upload")
        .header("x-api-key", &key)
        .body(body)
        .send();
    let response = tokio::spawn(request);
    let chunk = vec![b'x'; 1024 * 1024];
    tx.send(Ok(chunk.clone())).await.unwrap();
    // The upstream sees the first megabyte before the rest even exists.
    tokio::time::timeout(
        Duration::from_secs(5),
        upstream.signals.first_chunk_arrived.notified(),
    )
    .await
    .expect("the upload was buffered");
    for _ in 0..7 {
        tx.send(Ok(chunk.clone())).await.unwrap();
    }
    drop(tx);
    let r = response.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), (8 * 1024 * 1024).to_string());
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_and_a_dead_one_a_502() {
    let (app, _upstream) = spawn().await;
    let (_, key) = app.create_named("t").await;
    let r = get_with_key(&app, "/v1/chat/slow", &key).await;
    assert_problem(r, StatusCode::GATEWAY_TIMEOUT).await;
    let r = get_with_key(&app, "/v1/dead/x", &key).await;
    assert_problem(r, StatusCode::BAD_GATEWAY).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("relay_upstream_errors_total{route=\"/v1/chat/slow\",kind=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("relay_upstream_errors_total{route=\"/v1/dead\",kind=\"unreachable\"} 1")
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let (app, _upstream) = spawn().await;
    let (_, key) = app.create_named("e").await;
    for code in [404, 500, 503] {
        let r = get_with_key(&app, &format!("/v1/chat/status/{code}"), &key).await;
        assert_eq!(r.status().as_u16(), code);
        assert!(r.headers().get("content-type").is_none());
        assert_eq!(r.text().await.unwrap(), "");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "relay_http_requests_total{route=\"/v1/chat\",method=\"GET\",status=\"404\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("relay_upstream_response_seconds_count{route=\"/v1/chat\"} 3"));
}

/// Sends 50 relay requests at once for a client with limit 20; returns how many passed.
async fn burst(app: &TestApp, key: &str) -> usize {
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (base, http, key) = (app.base.clone(), app.http.clone(), key.to_string());
            tokio::spawn(async move {
                http.get(format!("{base}/v1/chat/echo"))
                    .header("x-api-key", key)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut passed = 0;
    for r in requests {
        let status = r.await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}"
        );
        passed += usize::from(status == StatusCode::CREATED);
    }
    passed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_requests_at_limit_20_admit_exactly_20() {
    let (app, _upstream) = spawn().await;
    let (_, key) = app
        .create_client(json!({"name": "burst", "rate_limit": 20}))
        .await;
    assert_eq!(burst(&app, &key).await, 20);
}

/// The Redis the tests share, or `None` (and the Redis tests say they did not run) when
/// `TEST_REDIS_URL` is unset. `.ci/run` always sets it.
fn test_redis() -> Option<String> {
    let url = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("TEST_REDIS_URL is unset: this Redis test checks nothing");
    }
    url
}

fn redis_config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_string().into(),
        prefix: prefix.to_string(),
    }
}

fn unique_prefix() -> String {
    format!("relay-test-{}:", crate::support::random_hex(6))
}

/// Waits until the service reports Redis ready (it connects in the background).
async fn wait_ready(app: &TestApp) {
    for _ in 0..100 {
        if app
            .request(Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_fifty_simultaneous_requests_at_limit_20_admit_exactly_20() {
    let Some(url) = test_redis() else { return };
    let upstream = upstream::start().await;
    let mut config = relay_config(&upstream.base, &dead_upstream().await);
    config.redis = Some(redis_config(&url, &unique_prefix()));
    let app = TestApp::spawn_with(config).await;
    wait_ready(&app).await;
    let (_, key) = app
        .create_client(json!({"name": "burst", "rate_limit": 20}))
        .await;
    assert_eq!(burst(&app, &key).await, 20);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("relay_rate_limiter_fallbacks_total 0"),
        "Redis decided every request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_redis_share_one_limit() {
    let Some(url) = test_redis() else { return };
    let upstream = upstream::start().await;
    let prefix = unique_prefix();
    let db = TestDb::new().await;
    let mut config = relay_config(&upstream.base, &dead_upstream().await);
    config.redis = Some(redis_config(&url, &prefix));
    let first = TestApp::spawn_on(db, config.clone()).await;
    let second = TestApp::spawn_sharing(&first, config).await;
    wait_ready(&first).await;
    wait_ready(&second).await;
    let (_, key) = first
        .create_client(json!({"name": "shared", "rate_limit": 10}))
        .await;
    let mut passed = 0;
    for i in 0..20 {
        let app = if i % 2 == 0 { &first } else { &second };
        let r = get_with_key(app, "/v1/chat/echo", &key).await;
        passed += usize::from(r.status() == StatusCode::CREATED);
    }
    assert_eq!(
        passed, 10,
        "two nodes together admitted the limit once, not twice"
    );
}

/// A Redis server of the test's own, so it can be stopped.
struct OwnRedis {
    child: std::process::Child,
    url: String,
}

impl OwnRedis {
    fn start() -> Option<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(OwnRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes (`STOP`) or thaws (`CONT`) the server: connections stay open, nothing answers.
    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_per_node_limits_without_errors() {
    if test_redis().is_none() {
        return;
    }
    let mut redis =
        OwnRedis::start().expect("redis-server must be installed when TEST_REDIS_URL is set");
    let upstream = upstream::start().await;
    let mut config = relay_config(&upstream.base, &dead_upstream().await);
    config.redis = Some(redis_config(&redis.url, &unique_prefix()));
    let app = TestApp::spawn_with(config).await;
    wait_ready(&app).await;
    let (_, key) = app
        .create_client(json!({"name": "outage", "rate_limit": 5}))
        .await;
    let get = || {
        app.request(Method::GET, "/v1/chat/echo")
            .header("x-api-key", &key)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), StatusCode::CREATED);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("relay_rate_limiter_fallbacks_total 0\n"),
        "{metrics}"
    );

    redis.stop();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(get().await.unwrap().status());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let passed = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(passed, 5, "the per-node limiter still limits: {statuses:?}");
    assert_eq!(
        app.request(Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("relay_rate_limiter_fallbacks_total 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_ridden_out_with_per_node_limits_and_shared_limits_resume() {
    if test_redis().is_none() {
        return;
    }
    let redis =
        OwnRedis::start().expect("redis-server must be installed when TEST_REDIS_URL is set");
    let upstream = upstream::start().await;
    let mut config = relay_config(&upstream.base, &dead_upstream().await);
    config.redis = Some(redis_config(&redis.url, &unique_prefix()));
    let first = TestApp::spawn_with(config.clone()).await;
    let second = TestApp::spawn_sharing(&first, config).await;
    wait_ready(&first).await;
    wait_ready(&second).await;
    let (_, key) = first
        .create_client(json!({"name": "frozen", "rate_limit": 5}))
        .await;

    // Frozen (SIGSTOP), Redis holds its connections and answers nothing: every request is
    // still answered, by the node's own limiter, none waiting past Redis's 500 ms timeout
    // (once: a timed-out decision is not tried again).
    redis.signal("STOP");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let started = std::time::Instant::now();
        statuses.push(get_with_key(&first, "/v1/chat/echo", &key).await.status());
        assert!(
            started.elapsed() < Duration::from_millis(950),
            "a request waited {:?}",
            started.elapsed()
        );
    }
    let passed = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(
        passed, 5,
        "the node's limiter limits meanwhile: {statuses:?}"
    );
    let ready = first.request(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Thawed: one limit for both nodes again (their own limiters would admit 6 each).
    redis.signal("CONT");
    wait_ready(&first).await;
    wait_ready(&second).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the retry pause
    let (_, shared) = first
        .create_client(json!({"name": "thawed", "rate_limit": 6}))
        .await;
    let mut passed = 0;
    for i in 0..12 {
        let app = if i % 2 == 0 { &first } else { &second };
        let r = get_with_key(app, "/v1/chat/echo", &shared).await;
        passed += usize::from(r.status() == StatusCode::CREATED);
    }
    assert_eq!(passed, 6, "the two nodes share one limit again");
}

#[tokio::test]
async fn the_service_starts_and_serves_when_redis_is_unreachable() {
    let upstream = upstream::start().await;
    let mut config = relay_config(&upstream.base, &dead_upstream().await);
    config.redis = Some(redis_config(
        &dead_upstream().await.replace("http", "redis"),
        "x:",
    ));
    let app = TestApp::spawn_with(config).await;
    let (_, key) = app
        .create_client(json!({"name": "noredis", "rate_limit": 2}))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get_with_key(&app, "/v1/chat/echo", &key).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        app.request(Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
