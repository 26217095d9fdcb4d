//! Every error row of the contract: the status, the problem+json body, and that nothing in the
//! database changed.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, pointers};

/// Sends `body` as JSON to `path` with the admin token; asserts a 400 naming `pointer` and
/// an unchanged database.
async fn assert_rejected(app: &TestApp, method: Method, path: &str, body: Value, pointer: &str) {
    let before = app.snapshot().await;
    let r = app.admin(method, path).json(&body).send().await.unwrap();
    let problem = assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert!(
        pointers(&problem).iter().any(|p| p == pointer) || pointer.is_empty(),
        "{body} → {problem}"
    );
    assert_eq!(app.snapshot().await, before, "{body} changed the database");
}

#[tokio::test]
async fn create_refuses_every_invalid_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({}), ""),
        (json!({"name": ""}), "/name"),
        (json!({"name": "   "}), "/name"),
        (json!({"name": "x".repeat(256)}), "/name"),
        (json!({"name": "tab\there"}), "/name"),
        (json!({"name": 5}), "/name"),
        (json!({"name": "n", "scopes": ["Chat"]}), "/scopes"),
        (json!({"name": "n", "scopes": ["chat", "chat"]}), "/scopes"),
        (
            json!({"name": "n", "scopes": (0..33).map(|i| format!("s{i}")).collect::<Vec<_>>()}),
            "/scopes",
        ),
        (json!({"name": "n", "scopes": "chat"}), "/scopes"),
        (json!({"name": "n", "rate_limit": 0}), "/rate_limit"),
        (json!({"name": "n", "rate_limit": 1_000_001}), "/rate_limit"),
        (json!({"name": "n", "rate_limit": 1.5}), "/rate_limit"),
        (json!({"name": "n", "rate_limit": "100"}), "/rate_limit"),
        (
            json!({"name": "n", "expires_at": "2001-01-01T00:00:00Z"}),
            "/expires_at",
        ),
        (
            json!({"name": "n", "expires_at": "2099-01-01T00:00:00"}),
            "/expires_at",
        ),
        (
            json!({"name": "n", "expires_at": "tomorrow"}),
            "/expires_at",
        ),
        (json!({"name": "n", "metadata": [1]}), "/metadata"),
        (
            json!({"name": "n", "metadata": {"k": "x".repeat(4096)}}),
            "/metadata",
        ),
        (json!({"name": "n", "enabled": false}), ""),
        (json!({"name": "n", "colour": "red"}), ""),
    ];
    for (body, pointer) in cases {
        assert_rejected(&app, Method::POST, "/admin/clients", body, pointer).await;
    }
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = TestApp::spawn().await;
    for body in ["{", "{\"name\": \"x\"} trailing", "", "null", "[]"] {
        let r = app
            .admin(Method::POST, "/admin/clients")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(app.snapshot().await, "[]\n[]");
}

#[tokio::test]
async fn patch_refuses_invalid_changes_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (client, _) = app.create_named("target").await;
    let path = format!("/admin/clients/{}", client["client_id"].as_str().unwrap());
    let cases = [
        (json!({}), ""),
        (json!({"name": null}), "/name"),
        (json!({"enabled": "yes"}), "/enabled"),
        (json!({"rate_limit": -1}), "/rate_limit"),
        (json!({"scopes": ["a", "a"]}), "/scopes"),
        (json!({"expires_at": "2000-01-01T00:00:00Z"}), "/expires_at"),
        (json!({"metadata": "x"}), "/metadata"),
        (json!({"key_prefix": "eg_x"}), ""),
    ];
    for (body, pointer) in cases {
        assert_rejected(&app, Method::PATCH, &path, body, pointer).await;
    }
}

#[tokio::test]
async fn regenerate_refuses_a_bad_grace_period() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("target").await;
    let path = format!(
        "/admin/clients/{}/regenerate",
        client["client_id"].as_str().unwrap()
    );
    for (body, pointer) in [
        (
            json!({"grace_period_seconds": 604_801}),
            "/grace_period_seconds",
        ),
        (json!({"grace_period_seconds": -1}), "/grace_period_seconds"),
        (json!({"grace": 5}), ""),
    ] {
        assert_rejected(&app, Method::POST, &path, body, pointer).await;
    }
    assert_eq!(app.verify(&key).await["valid"], true);
}

#[tokio::test]
async fn verify_refuses_bad_bodies() {
    let app = TestApp::spawn().await;
    for (body, pointer) in [
        (json!({}), ""),
        (json!({"key": 5}), "/key"),
        (json!({"key": "k", "x": 1}), ""),
    ] {
        assert_rejected(&app, Method::POST, "/v1/keys/verify", body, pointer).await;
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "n", "metadata": {"k": "x".repeat(70 * 1024)}});
    let r = app
        .admin(Method::POST, "/admin/clients")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(app.snapshot().await, "[]\n[]");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = TestApp::spawn().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .admin(Method::POST, "/admin/clients")
            .body("{\"name\":\"n\"}");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        assert_problem(
            request.send().await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    }
    assert_eq!(app.snapshot().await, "[]\n[]");
}

#[tokio::test]
async fn missing_or_invalid_credentials_are_a_401_with_a_challenge() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("some client").await;
    let before = app.snapshot().await;
    let forged = format!(
        "{}{}",
        &key[..50],
        if key.ends_with('A') { 'B' } else { 'A' }
    );
    let attempts: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![(
            "authorization",
            "Bearer wrong-token-of-sufficient-length-000000".into(),
        )],
        vec![("authorization", format!("Bearer {forged}"))],
        vec![("authorization", format!("Basic {key}"))],
        vec![("authorization", "Bearer".into())],
        vec![("x-api-key", "eg_short".into())],
        // Authorization alone counts when both are sent: no fallback to a valid X-API-Key.
        vec![
            ("authorization", "Bearer nope".into()),
            ("x-api-key", crate::support::ADMIN_TOKEN.into()),
        ],
    ];
    for headers in attempts {
        let mut request = app
            .request(Method::POST, "/admin/clients")
            .json(&json!({"name": "x"}));
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{headers:?}");
        assert_problem(r, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn a_valid_key_without_the_scope_is_a_403() {
    let app = TestApp::spawn().await;
    let (_, chat_key) = app
        .create_client(json!({"name": "chatty", "scopes": ["chat"]}))
        .await;
    let before = app.snapshot().await;
    let r = app
        .request(Method::POST, "/admin/clients")
        .bearer_auth(&chat_key)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .request(Method::POST, "/v1/keys/verify")
        .header("x-api-key", &chat_key)
        .json(&json!({"key": chat_key}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn a_disabled_or_expired_admin_client_is_not_an_admin() {
    let app = TestApp::spawn().await;
    let (admin, key) = app
        .create_client(json!({"name": "ops", "scopes": ["admin"]}))
        .await;
    let id = admin["client_id"].as_str().unwrap();
    app.admin(Method::POST, &format!("/admin/clients/{id}/disable"))
        .send()
        .await
        .unwrap();
    let r = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn unknown_clients_are_a_404_on_every_endpoint() {
    let app = TestApp::spawn().await;
    let id = "client_0123456789abcdef";
    let cases = [
        (Method::GET, format!("/admin/clients/{id}"), None),
        (
            Method::PATCH,
            format!("/admin/clients/{id}"),
            Some(json!({"name": "x"})),
        ),
        (Method::POST, format!("/admin/clients/{id}/disable"), None),
        (Method::POST, format!("/admin/clients/{id}/enable"), None),
        (
            Method::POST,
            format!("/admin/clients/{id}/regenerate"),
            None,
        ),
        (Method::DELETE, format!("/admin/clients/{id}"), None),
        (Method::GET, "/admin/clients/not-even-an-id".into(), None),
    ];
    for (method, path, body) in cases {
        let mut request = app.admin(method, &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert_problem(request.send().await.unwrap(), StatusCode::NOT_FOUND).await;
    }
    assert_eq!(app.snapshot().await, "[]\n[]");
}

#[tokio::test]
async fn unknown_routes_are_a_404_and_wrong_methods_a_405_with_allow() {
    let app = TestApp::spawn().await;
    let r = app.request(Method::GET, "/nowhere").send().await.unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = app
        .admin(Method::PUT, "/admin/clients")
        .send()
        .await
        .unwrap();
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
    let r = app
        .request(Method::GET, "/v1/keys/verify")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn bad_list_parameters_are_a_400() {
    let app = TestApp::spawn().await;
    for query in [
        "limit=0",
        "limit=501",
        "limit=ten",
        "cursor=garbage",
        "cursor=1.2.3",
        "include_disabled=yes",
        "scope=Not%20A%20Scope",
        "unknown=1",
    ] {
        let r = app
            .admin(Method::GET, &format!("/admin/clients?{query}"))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::BAD_REQUEST).await;
    }
    for query in ["limit=0", "limit=501", "cursor=x"] {
        let r = app
            .admin(Method::GET, &format!("/admin/audit?{query}"))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn repeated_failed_authentications_from_one_address_are_a_429() {
    let app = TestApp::spawn().await;
    for _ in 0..30 {
        let r = app
            .request(Method::GET, "/admin/clients")
            .bearer_auth("eg_guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Guesses cannot continue: another wrong credential is refused until the window passes.
    let r = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth("eg_guess")
        .send()
        .await
        .unwrap();
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let problem = assert_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    // The right credential still works from that address: an address may be shared by many
    // callers (NAT, a proxy), and one of them guessing must not lock the others out.
    let r = app
        .admin(Method::GET, "/admin/clients")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, key) = app.create_named("shared address").await;
    assert_eq!(app.verify(&key).await["valid"], true);
}

/// A key that looks real, pasted where a name or a value belongs.
const PASTED_KEY: &str = "eg_Zq3LmN8pRtW2xVb7KjH4sDf9GhJk1LmN2bVc5XzA0q9W3e";

#[tokio::test]
async fn a_key_pasted_in_the_wrong_place_never_comes_back_in_an_error() {
    let app = TestApp::spawn().await;
    let (client, _) = app.create_named("target").await;
    let id = client["client_id"].as_str().unwrap();
    let k = PASTED_KEY;
    let json_cases = [
        (
            Method::POST,
            "/admin/clients".to_string(),
            json!({"name": "x", k: 1}),
        ),
        (
            Method::POST,
            "/admin/clients".to_string(),
            json!({"name": "x", "scopes": ["chat", k]}),
        ),
        (
            Method::POST,
            "/admin/clients".to_string(),
            json!({"name": "x", "scopes": [k.to_lowercase(), k.to_lowercase()]}),
        ),
        (
            Method::PATCH,
            format!("/admin/clients/{id}"),
            json!({k: true}),
        ),
        (
            Method::POST,
            format!("/admin/clients/{id}/regenerate"),
            json!({k: 60}),
        ),
        (
            Method::POST,
            "/v1/keys/verify".to_string(),
            json!({"key": "eg_x", k: 1}),
        ),
    ];
    for (method, path, body) in json_cases {
        let r = app.admin(method, &path).json(&body).send().await.unwrap();
        let text = r.text().await.unwrap();
        assert!(
            !text.contains(k) && !text.contains(&k.to_lowercase()),
            "{path} {body}: {text}"
        );
    }
    for path in [
        format!("/admin/clients?{k}=1"),
        format!("/admin/audit?{k}=1"),
        format!("/admin/clients?limit={k}"),
    ] {
        let r = app.admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = r.text().await.unwrap();
        assert!(!text.contains(k), "{path}: {text}");
    }
    let (_, key) = app.create_named("oauth").await;
    let token_cases: Vec<reqwest::RequestBuilder> = vec![
        app.request(Method::POST, "/v1/token").json(&json!({k: 1})),
        app.request(Method::POST, "/v1/token")
            .form(&[(k, "a"), (k, "b")]),
        app.request(Method::POST, "/v1/token")
            .header("x-api-key", &key)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", &k.to_lowercase()),
            ]),
    ];
    for request in token_cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = r.text().await.unwrap();
        assert!(
            !text.contains(k) && !text.contains(&k.to_lowercase()),
            "{text}"
        );
    }
}

#[tokio::test]
async fn nul_characters_are_refused_everywhere_text_enters_on_both_backends() {
    let app = TestApp::spawn().await;
    let (client, _) = app.create_named("nul target").await;
    let id = client["client_id"].as_str().unwrap();
    let bodies = [
        json!({"name": "n", "metadata": {"k": "a\u{0}b"}}),
        json!({"name": "n", "metadata": {"a\u{0}": 1}}),
        json!({"name": "n", "metadata": {"deep": [{"x": ["\u{0}"]}]}}),
        json!({"name": "\u{0}"}),
    ];
    for body in &bodies {
        assert_rejected(&app, Method::POST, "/admin/clients", body.clone(), "").await;
    }
    assert_rejected(
        &app,
        Method::PATCH,
        &format!("/admin/clients/{id}"),
        json!({"metadata": {"k": "\u{0}"}}),
        "/metadata",
    )
    .await;
    let before = app.snapshot().await;
    let requests = [
        (Method::GET, "/admin/clients?q=a%00b".to_string()),
        (Method::GET, "/admin/audit?client_id=%00".to_string()),
        (Method::GET, "/admin/clients/client_%00".to_string()),
        (Method::PATCH, "/admin/clients/%00".to_string()),
        (Method::DELETE, "/admin/clients/%00".to_string()),
        (Method::POST, "/admin/clients/%00/disable".to_string()),
        (Method::POST, "/admin/clients/%00/enable".to_string()),
        (Method::POST, "/admin/clients/%00/regenerate".to_string()),
    ];
    for (method, path) in requests {
        let r = app
            .admin(method.clone(), &path)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_problem(r, status).await;
    }
    let r = app
        .admin(Method::POST, "/v1/keys/verify")
        .json(&json!({"key": "eg_\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
    assert_eq!(app.snapshot().await, before);
}
