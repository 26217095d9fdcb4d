//! Operational endpoints: health, readiness, metrics, the OpenAPI document.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestApp;

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let r = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    }
}

#[tokio::test]
async fn metrics_count_requests_outcomes_and_cache_use() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("m").await;
    for _ in 0..3 {
        app.verify(&key).await;
    }
    app.verify("eg_nope").await;
    let text = app.metrics().await;
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(
        line("relay_http_requests_total{route=\"/v1/keys/verify\",method=\"POST\",status=\"200\"}"),
        4.0
    );
    assert_eq!(
        line("relay_key_verifications_total{outcome=\"VALID\"}"),
        3.0
    );
    assert_eq!(
        line("relay_key_verifications_total{outcome=\"NOT_FOUND\"}"),
        1.0
    );
    // The admin token is not a key and "eg_nope" is refused before the cache: three lookups.
    // The first misses; the change log may invalidate the new client once more (it follows
    // this process's own writes too), so at least one of the others hits.
    let (hits, misses) = (
        line("relay_key_cache_hits_total"),
        line("relay_key_cache_misses_total"),
    );
    assert_eq!(hits + misses, 3.0);
    assert!(hits >= 1.0 && misses >= 1.0);
    assert!(text.contains("relay_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/admin/clients", "post"),
        ("/admin/clients", "get"),
        ("/admin/clients/{client_id}", "get"),
        ("/admin/clients/{client_id}", "patch"),
        ("/admin/clients/{client_id}", "delete"),
        ("/admin/clients/{client_id}/disable", "post"),
        ("/admin/clients/{client_id}/enable", "post"),
        ("/admin/clients/{client_id}/regenerate", "post"),
        ("/admin/audit", "get"),
        ("/admin/usage", "get"),
        ("/admin/usage/clients", "get"),
        ("/v1/keys/verify", "post"),
        ("/v1/token", "post"),
        ("/v1/introspect", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/oauth-authorization-server", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, expected.len());
    let create = &doc["components"]["schemas"]["CreateClientRequest"];
    assert_eq!(create["required"], json!(["name"]));
}

#[tokio::test]
async fn shutdown_lets_the_last_use_reach_the_database() {
    let mut app = TestApp::spawn().await;
    let (client, key) = app.create_named("flush").await;
    app.verify(&key).await;
    app.stop().await;
    let id = egregore_relay::domain::client::ClientId::new(client["client_id"].as_str().unwrap());
    let stored = app.store.client(&id).await.unwrap().unwrap();
    assert!(stored.last_used_at.is_some());
}
