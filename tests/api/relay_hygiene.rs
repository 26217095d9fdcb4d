//! What reaches the upstream: only canonical paths inside the route whose scope was checked,
//! and no header a client could use to pass for someone else. Run against an upstream that
//! decodes and resolves paths, as most servers do.

use std::time::Duration;

use egregore_relay::config::ServeConfig;
use egregore_relay::domain::address::{TrustedProxies, parse_network};
use egregore_relay::domain::route::{Route, RouteTable};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestApp, assert_problem};
use crate::upstream::{self, Upstream};

fn route(prefix: &str, upstream: &str, scope: &str) -> Route {
    Route {
        prefix: prefix.into(),
        upstream: upstream.into(),
        scope: scope.parse().unwrap(),
        timeout: None,
    }
}

/// The default routes, a nested route with a scope of its own, and a route whose upstream
/// has a base path.
async fn spawn(trusted_proxies: Option<&str>) -> (TestApp, Upstream) {
    let upstream = upstream::start().await;
    let mut config = ServeConfig::with_admin_token(ADMIN_TOKEN);
    let mut routes = RouteTable::defaults(&upstream.base).unwrap();
    routes.push(route("/v1/chat/admin", &upstream.base, "ops"));
    routes.push(route(
        "/static",
        &format!("{}/base/static", upstream.base),
        "chat",
    ));
    config.routes = RouteTable::new(routes).unwrap();
    if let Some(networks) = trusted_proxies {
        config.trusted_proxies = TrustedProxies::new(vec![parse_network(networks).unwrap()]);
    }
    let app = TestApp::spawn_with(config).await;
    (app, upstream)
}

/// Sends `path` exactly as written (no client-side normalisation) with `key`.
async fn raw_get(app: &TestApp, path: &str, key: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: relay\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test]
async fn paths_that_resolve_elsewhere_upstream_never_leave_the_relay() {
    let (app, upstream) = spawn(None).await;
    let (_, key) = app
        .create_client(json!({"name": "chat only", "scopes": ["chat"]}))
        .await;
    let attacks = [
        // Into a sibling route guarded by another scope.
        "/v1/chat/../history/x",
        "/v1/chat/%2e%2e/history/x",
        "/v1/chat/%2E%2E/history/x",
        "/v1/chat/..%2fhistory/x",
        "/v1/chat/..%2Fhistory/x",
        "/v1/chat/..;/history/x",
        "/v1/chat/..\\history/x",
        "/v1/chat/%5c..%5chistory/x",
        // Around a nested route with a scope of its own.
        "/v1/chat//admin",
        "/v1/chat/./admin",
        "/v1/chat/x/../admin",
        "/v1/chat/%2e/admin",
        // Out of a route's base path upstream.
        "/static/../../secret",
        "/static/%2e%2e/%2e%2e/secret",
        // Bytes an upstream may cut the path at.
        "/v1/chat/x%00/../../history",
        "/v1/chat/%25%32%65%25%32%65/history",
    ];
    for path in attacks {
        let (status, answer) = raw_get(&app, path, &key).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer.contains("application/problem+json"),
            "{path}: {answer}"
        );
    }
    // An escape of an unreserved character is the character: the nested route's scope holds.
    let (status, answer) = raw_get(&app, "/v1/chat/%61dmin", &key).await;
    assert_eq!(status, 403, "{answer}");
    let (status, _) = raw_get(&app, "/v1/chat/%61dmin/x", &key).await;
    assert_eq!(status, 403);
    let seen = upstream.signals.resolved_paths.lock().unwrap().clone();
    assert!(seen.is_empty(), "the upstream was reached: {seen:?}");
}

#[tokio::test]
async fn the_canonical_path_is_what_is_forwarded() {
    let (app, _upstream) = spawn(None).await;
    let (_, key) = app
        .create_client(json!({"name": "chat", "scopes": ["chat", "ops"]}))
        .await;
    let cases = [
        ("/v1/chat/%61bc?q=%2e%2e", "/v1/chat/abc", "q=%2e%2e"),
        ("/v1/chat/a%20b%c3%a9/", "/v1/chat/a%20b%C3%A9/", ""),
        ("/v1/chat/%61dmin/x", "/v1/chat/admin/x", ""),
        ("/static/app.js", "/base/static/static/app.js", ""),
    ];
    for (sent, forwarded, query) in cases {
        let r = app
            .request(Method::GET, sent)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{sent}");
        let seen: Value = r.json().await.unwrap();
        assert_eq!(seen["path"], forwarded, "{sent}");
        assert_eq!(seen["resolved_path"], upstream::resolve(forwarded));
        assert_eq!(seen["query"], query, "{sent}");
    }
}

#[tokio::test]
async fn a_bad_escape_is_a_400_before_authentication_or_routing() {
    let (app, upstream) = spawn(None).await;
    let r = app
        .request(Method::GET, "/v1/chat/%zz")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert!(problem["detail"].as_str().unwrap().contains("percent"));
    assert!(upstream.signals.resolved_paths.lock().unwrap().is_empty());
}

/// Headers a client sends that say who it is or how it came: each must be dropped.
const SPOOFED: [(&str, &str); 12] = [
    ("X_Relay_Client_Id", "client_0000000000000000"),
    ("X_Relay_Scopes", "admin"),
    ("X-Relay-Tenant", "other"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("X_Real_IP", "6.6.6.6"),
    ("X_Api_Key", "eg_other"),
    ("Proxy-Connection", "keep-alive"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "8443"),
];

async fn forwarded_headers(app: &TestApp, key: &str) -> Value {
    let mut request = app
        .request(Method::GET, "/v1/chat/headers")
        .header("x-api-key", key)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-kept_custom", "kept");
    for (name, value) in SPOOFED {
        request = request.header(name, value);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["headers"].clone()
}

#[tokio::test]
async fn identity_headers_from_a_client_never_reach_the_upstream() {
    let (app, _upstream) = spawn(None).await;
    let (client, key) = app.create_named("spoofer").await;
    let h = forwarded_headers(&app, &key).await;
    for (name, _) in SPOOFED {
        assert!(
            h.get(name.to_ascii_lowercase()).is_none(),
            "{name} reached the upstream: {h}"
        );
    }
    assert_eq!(h["x-relay-client-id"], client["client_id"]);
    assert_eq!(h["x-relay-scopes"], "chat history");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    // Underscores in other names are nobody's business but the upstream's.
    assert_eq!(h["x-kept_custom"], "kept");
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_proxy_headers_but_not_underscore_spellings() {
    let (app, _upstream) = spawn(Some("127.0.0.0/8")).await;
    let (client, key) = app.create_named("behind a proxy").await;
    let h = forwarded_headers(&app, &key).await;
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(h["forwarded"], "for=6.6.6.6;proto=https");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-real-ip"], "6.6.6.6");
    for name in [
        "x_relay_client_id",
        "x_relay_scopes",
        "x_forwarded_for",
        "x_real_ip",
    ] {
        assert!(h.get(name).is_none(), "{name} reached the upstream: {h}");
    }
    assert_eq!(h["x-relay-client-id"], client["client_id"]);
    assert!(h.get("x-relay-tenant").is_none() && h.get("proxy-connection").is_none());
}
