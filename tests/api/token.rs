//! The token exchange, the JWKS, introspection, and every way a token is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_compact::{AlgorithmExt, UntrustedToken, alg::Ed25519, jwk::JsonWebKey};
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestApp};

/// Exchanges `key` for a token with `X-API-Key`; returns the response.
async fn exchange(app: &TestApp, key: &str, form: &[(&str, &str)]) -> reqwest::Response {
    app.request(Method::POST, "/v1/token")
        .header("x-api-key", key)
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn token_for(app: &TestApp, key: &str) -> String {
    let r = exchange(app, key, &[("grant_type", "client_credentials")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Introspects `token` with the admin token.
async fn introspect(app: &TestApp, token: &str) -> Value {
    let r = app
        .admin(Method::POST, "/v1/introspect")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

/// Asserts the OAuth error shape; returns the body.
async fn assert_oauth_error(r: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    body
}

#[derive(serde::Deserialize)]
struct RelayClaims {
    iss: String,
    sub: String,
    client_id: String,
    aud: String,
    jti: String,
    scope: String,
}

/// Validates `token` against the published JWKS with jwt-compact, a library the service
/// does not use.
async fn validate_with_jwks(app: &TestApp, token: &str) -> (String, RelayClaims, i64, i64) {
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    let untrusted = UntrustedToken::new(token).unwrap();
    let kid = untrusted.header().key_id.clone().unwrap();
    let jwk_json = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone();
    assert_eq!(
        (jwk_json["kty"].as_str(), jwk_json["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let jwk: JsonWebKey<'_> = serde_json::from_value(jwk_json).unwrap();
    let key = ed25519_dalek::VerifyingKey::try_from(&jwk).unwrap();
    let checked = Ed25519
        .validator::<RelayClaims>(&key)
        .validate(&untrusted)
        .unwrap();
    let claims = checked.claims();
    claims
        .validate_expiration(&jwt_compact::TimeOptions::default())
        .unwrap();
    let exp = claims.expiration.unwrap().timestamp();
    let iat = claims.issued_at.unwrap().timestamp();
    let header_typ = untrusted.header().token_type.clone().unwrap();
    assert_eq!(header_typ, "at+jwt");
    let custom = &claims.custom;
    (
        kid,
        RelayClaims {
            iss: custom.iss.clone(),
            sub: custom.sub.clone(),
            client_id: custom.client_id.clone(),
            aud: custom.aud.clone(),
            jti: custom.jti.clone(),
            scope: custom.scope.clone(),
        },
        iat,
        exp,
    )
}

fn oauth_client(
    app: &TestApp,
    id: &str,
    key: &str,
    auth: AuthType,
) -> oauth2::basic::BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
> {
    BasicClient::new(ClientId::new(id.into()))
        .set_client_secret(ClientSecret::new(key.into()))
        .set_token_uri(TokenUrl::new(format!("{}/v1/token", app.base)).unwrap())
        .set_auth_type(auth)
}

#[tokio::test]
async fn an_oauth2_client_gets_a_token_with_client_secret_basic() {
    let app = TestApp::spawn().await;
    let (client, key) = app
        .create_client(json!({"name": "oauth", "scopes": ["chat", "history"]}))
        .await;
    let id = client["client_id"].as_str().unwrap();
    let http = reqwest::Client::new();
    let token = oauth_client(&app, id, &key, AuthType::BasicAuth)
        .exchange_client_credentials()
        .add_scope(Scope::new("chat".into()))
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(token.token_type(), &oauth2::basic::BasicTokenType::Bearer);
    assert_eq!(token.expires_in().unwrap().as_secs(), 900);
    assert_eq!(token.scopes().unwrap(), &vec![Scope::new("chat".into())]);

    let (kid, claims, iat, exp) = validate_with_jwks(&app, token.access_token().secret()).await;
    let metadata: Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(claims.iss, metadata["issuer"]);
    assert_eq!(claims.iss, app.base);
    assert_eq!((claims.sub.as_str(), claims.client_id.as_str()), (id, id));
    assert_eq!(claims.aud, "egregore-relay");
    assert_eq!(claims.scope, "chat");
    assert_eq!(exp - iat, 900);
    assert_eq!(claims.jti.len(), 32);
    assert!(!kid.is_empty());
}

#[tokio::test]
async fn an_oauth2_client_gets_a_token_with_client_secret_post() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("post").await;
    let id = client["client_id"].as_str().unwrap();
    let token = oauth_client(&app, id, &key, AuthType::RequestBody)
        .exchange_client_credentials()
        .request_async(&reqwest::Client::new())
        .await
        .unwrap();
    let (_, claims, _, _) = validate_with_jwks(&app, token.access_token().secret()).await;
    assert_eq!(claims.scope, "chat history");
}

#[tokio::test]
async fn bearer_and_json_bodies_are_accepted_and_responses_are_not_stored() {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .create_client(json!({"name": "b", "rate_limit": 50}))
        .await;
    let r = app
        .request(Method::POST, "/v1/token")
        .bearer_auth(&key)
        .json(&json!({"grant_type": "client_credentials", "scope": "history"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=50;w=60");
    assert!(
        r.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"default\";r=49;t=")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "history");
    assert_eq!(body["expires_in"], 900);
}

#[tokio::test]
async fn malformed_exchanges_are_invalid_request() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("m").await;
    let id = client["client_id"].as_str().unwrap();
    let r = exchange(&app, &key, &[]).await;
    assert_oauth_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = exchange(&app, &key, &[("grant_type", "password")]).await;
    assert_oauth_error(r, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;
    let r = exchange(
        &app,
        &key,
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_oauth_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Two authentication methods at once.
    let r = exchange(
        &app,
        &key,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", &key),
        ],
    )
    .await;
    assert_oauth_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = exchange(
        &app,
        &key,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "chat admin"),
        ],
    )
    .await;
    assert_oauth_error(r, StatusCode::BAD_REQUEST, "invalid_scope").await;
    let r = app
        .request(Method::POST, "/v1/token")
        .header("x-api-key", &key)
        .body("grant_type=client_credentials")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_oauth_error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request").await;
    let big = "x".repeat(70 * 1024);
    let r = exchange(
        &app,
        &key,
        &[("grant_type", "client_credentials"), ("pad", &big)],
    )
    .await;
    assert_oauth_error(r, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request").await;
    let r = app.request(Method::GET, "/v1/token").send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_oauth_error(r, StatusCode::METHOD_NOT_ALLOWED, "invalid_request").await;
}

#[tokio::test]
async fn bad_client_credentials_are_invalid_client_with_the_scheme_tried() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("c").await;
    let (other, _) = app.create_named("other").await;
    let id = client["client_id"].as_str().unwrap();
    let basic = |user: &str, pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    let form = [("grant_type", "client_credentials")];
    let cases: Vec<(Option<String>, &str)> = vec![
        (Some(basic(id, "eg_wrong")), "Basic"),
        (
            Some(basic(other["client_id"].as_str().unwrap(), &key)),
            "Basic",
        ),
        (Some("Bearer eg_wrong".into()), "Bearer"),
        (None, "Basic"),
    ];
    for (authorization, scheme) in cases {
        let mut request = app.request(Method::POST, "/v1/token").form(&form);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let r = request.send().await.unwrap();
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with(scheme)
        );
        assert_oauth_error(r, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    // A disabled client cannot exchange its key.
    app.admin(Method::POST, &format!("/admin/clients/{id}/disable"))
        .send()
        .await
        .unwrap();
    let r = exchange(&app, &key, &form).await;
    assert_oauth_error(r, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn exchanges_count_against_the_client_rate_limit() {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .create_client(json!({"name": "r", "rate_limit": 2}))
        .await;
    for _ in 0..2 {
        token_for(&app, &key).await;
    }
    let r = exchange(&app, &key, &[("grant_type", "client_credentials")]).await;
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(r.headers()["ratelimit"], "\"default\";r=0;t=60");
    assert_oauth_error(r, StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable").await;
    // Verification shares the same allowance.
    assert_eq!(app.verify(&key).await["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn repeated_failed_exchanges_from_one_address_are_refused() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("f").await;
    for _ in 0..30 {
        let r = exchange(&app, "eg_guess", &[("grant_type", "client_credentials")]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = exchange(&app, "eg_guess", &[("grant_type", "client_credentials")]).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_oauth_error(r, StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable").await;
    // A valid key from the same (perhaps shared) address is still served.
    let r = exchange(&app, &key, &[("grant_type", "client_credentials")]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn introspection_describes_tokens_and_keys_to_authorized_callers() {
    let app = TestApp::spawn().await;
    let (client, key) = app
        .create_client(json!({"name": "i", "scopes": ["chat", "history"], "expires_at": "2099-01-01T00:00:00Z"}))
        .await;
    let id = client["client_id"].as_str().unwrap();
    let token = token_for(&app, &key).await;
    let active = introspect(&app, &token).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], id);
    assert_eq!(active["sub"], id);
    assert_eq!(active["scope"], "chat history");
    assert_eq!(active["token_type"], "Bearer");
    assert!(active["exp"].as_i64().unwrap() > active["iat"].as_i64().unwrap());

    let as_key = introspect(&app, &key).await;
    assert_eq!(as_key["token_type"], "api_key");
    assert_eq!(as_key["client_id"], id);
    assert_eq!(as_key["exp"], 4_070_908_800_i64);

    for junk in ["nonsense", "eg_nope", "a.b.c"] {
        assert_eq!(introspect(&app, junk).await, json!({"active": false}));
    }

    // JSON bodies too, and a caller holding keys:verify.
    let (_, checker) = app
        .create_client(json!({"name": "checker", "scopes": ["keys:verify"]}))
        .await;
    let r = app
        .request(Method::POST, "/v1/introspect")
        .bearer_auth(&checker)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
}

#[tokio::test]
async fn introspection_refuses_unauthorized_callers_in_the_oauth_shape() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("plain").await;
    let r = app
        .request(Method::POST, "/v1/introspect")
        .form(&[("token", &key)])
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    assert_oauth_error(r, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let r = app
        .request(Method::POST, "/v1/introspect")
        .bearer_auth(&key)
        .form(&[("token", &key)])
        .send()
        .await
        .unwrap();
    assert_oauth_error(r, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let r = app
        .admin(Method::POST, "/v1/introspect")
        .form(&[("nottoken", "x")])
        .send()
        .await
        .unwrap();
    assert_oauth_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn disabling_makes_tokens_inactive_at_once_and_enabling_does_not_revive_them() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("d").await;
    let path = format!("/admin/clients/{}", client["client_id"].as_str().unwrap());
    let token = token_for(&app, &key).await;
    assert_eq!(introspect(&app, &token).await["active"], true);
    app.admin(Method::POST, &format!("{path}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(introspect(&app, &token).await, json!({"active": false}));
    app.admin(Method::POST, &format!("{path}/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(introspect(&app, &token).await, json!({"active": false}));
    assert_eq!(
        introspect(&app, &token_for(&app, &key).await).await["active"],
        true
    );
}

#[tokio::test]
async fn regeneration_without_grace_ends_tokens_and_with_grace_keeps_them() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("g").await;
    let path = format!(
        "/admin/clients/{}/regenerate",
        client["client_id"].as_str().unwrap()
    );
    let early = token_for(&app, &key).await;
    let r = app
        .admin(Method::POST, &path)
        .json(&json!({"grace_period_seconds": 600}))
        .send()
        .await
        .unwrap();
    let second: Value = r.json().await.unwrap();
    assert_eq!(
        introspect(&app, &early).await["active"],
        true,
        "grace keeps earlier tokens"
    );
    let during_grace = token_for(&app, &key).await;
    assert_eq!(introspect(&app, &during_grace).await["active"], true);
    app.admin(Method::POST, &path).send().await.unwrap();
    assert_eq!(introspect(&app, &early).await, json!({"active": false}));
    assert_eq!(
        introspect(&app, &during_grace).await,
        json!({"active": false})
    );
    let r = exchange(
        &app,
        second["api_key"].as_str().unwrap(),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deleting_the_client_ends_its_tokens() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("gone").await;
    let token = token_for(&app, &key).await;
    app.admin(
        Method::DELETE,
        &format!("/admin/clients/{}", client["client_id"].as_str().unwrap()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(introspect(&app, &token).await, json!({"active": false}));
}

#[tokio::test]
async fn narrowed_scopes_shrink_with_the_client() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("s").await;
    let token = token_for(&app, &key).await;
    let path = format!("/admin/clients/{}", client["client_id"].as_str().unwrap());
    app.admin(Method::PATCH, &path)
        .json(&json!({"scopes": ["history"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(introspect(&app, &token).await["scope"], "history");
}

/// Signs `claims` with the service's current private key, read from its database, under
/// `header`; for building tokens the service would never issue.
async fn forge(app: &TestApp, header: jsonwebtoken::Header, claims: &Value) -> String {
    let keys = app.store.signing_keys().await.unwrap();
    let current = keys.iter().find(|k| k.retired_at.is_none()).unwrap();
    let current = current.open(None).unwrap();
    let der = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        ed25519_dalek::SigningKey::from_bytes(current.seed())
            .to_pkcs8_der()
            .unwrap()
    };
    let mut header = header;
    header.kid = header.kid.or(Some(current.kid.clone()));
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap()
}

fn eddsa_header() -> jsonwebtoken::Header {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.typ = Some("at+jwt".into());
    h
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("target").await;
    let genuine = token_for(&app, &key).await;
    let claims: Value = {
        let payload = genuine.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    assert_eq!(
        introspect(&app, &forge(&app, eddsa_header(), &claims).await).await["active"],
        true,
        "the forge works"
    );
    let now = chrono::Utc::now().timestamp();
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let kid = jsonwebtoken::decode_header(&genuine).unwrap().kid.unwrap();
    let mut bad: Vec<(&str, String)> = Vec::new();

    // alg "none", unsigned.
    let none_header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string());
    let body = genuine.split('.').nth(1).unwrap();
    bad.push(("alg none", format!("{none_header}.{body}.")));
    // HS256 keyed with the published public key.
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    let x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(kid.clone());
    bad.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(&x)).unwrap(),
    ));
    // Unknown kid, signed by a key the service never had.
    let stranger = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let seed: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .to_pkcs8_der()
            .unwrap()
    };
    let mut unknown = eddsa_header();
    unknown.kid = Some("not-a-known-kid".into());
    bad.push((
        "unknown kid",
        jsonwebtoken::encode(
            &unknown,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(stranger.as_bytes()),
        )
        .unwrap(),
    ));
    let mut known_kid_wrong_key = eddsa_header();
    known_kid_wrong_key.kid = Some(kid.clone());
    bad.push((
        "bad signature",
        jsonwebtoken::encode(
            &known_kid_wrong_key,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(stranger.as_bytes()),
        )
        .unwrap(),
    ));
    // A genuine signature over altered claims.
    let altered = URL_SAFE_NO_PAD.encode(with("scope", json!("chat history admin")).to_string());
    let parts: Vec<&str> = genuine.split('.').collect();
    bad.push((
        "tampered claims",
        format!("{}.{altered}.{}", parts[0], parts[2]),
    ));
    // Correctly signed, wrong claims.
    bad.push((
        "wrong iss",
        forge(
            &app,
            eddsa_header(),
            &with("iss", json!("https://evil.example")),
        )
        .await,
    ));
    bad.push((
        "wrong aud",
        forge(&app, eddsa_header(), &with("aud", json!("someone-else"))).await,
    ));
    bad.push((
        "expired",
        forge(&app, eddsa_header(), &with("exp", json!(now - 2))).await,
    ));
    bad.push((
        "not yet valid",
        forge(&app, eddsa_header(), &with("nbf", json!(now + 30))).await,
    ));
    bad.push((
        "issued in the future",
        forge(&app, eddsa_header(), &with("iat", json!(now + 30))).await,
    ));
    bad.push((
        "a lifetime beyond the TTL",
        forge(&app, eddsa_header(), &with("exp", json!(now + 10 * 86_400))).await,
    ));
    bad.push((
        "old generation",
        forge(&app, eddsa_header(), &with("gen", json!(-1))).await,
    ));
    let mut plain_jwt = eddsa_header();
    plain_jwt.typ = Some("JWT".into());
    bad.push(("typ JWT", forge(&app, plain_jwt, &claims).await));

    for (case, token) in bad {
        assert_eq!(
            introspect(&app, &token).await,
            json!({"active": false}),
            "{case} was accepted"
        );
    }
    // The one second of leeway is covered with a fixed clock in domain::access_token.
    let _ = client;
}

/// Rotates the signing key as `relay signing-keys rotate` does (no seal).
async fn rotate(app: &TestApp) -> egregore_relay::domain::signing_key::SigningKey {
    egregore_relay::service::keyring::SigningKeys::new(app.store.clone(), None)
        .rotate(
            &egregore_relay::domain::audit::Actor::Cli,
            egregore_relay::domain::now(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn rotation_publishes_the_new_key_and_keeps_old_tokens_valid() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("rot").await;
    let old_token = token_for(&app, &key).await;
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();
    let new = rotate(&app).await;
    // Within a second the server signs with the new key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let new_token = loop {
        let t = token_for(&app, &key).await;
        if jsonwebtoken::decode_header(&t).unwrap().kid.as_deref() == Some(new.kid.as_str()) {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still signing with the old key after 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new.kid.as_str(), old_kid.as_str()]);
    assert_eq!(introspect(&app, &old_token).await["active"], true);
    assert_eq!(introspect(&app, &new_token).await["active"], true);
    validate_with_jwks(&app, &old_token).await;
    validate_with_jwks(&app, &new_token).await;

    let audit: Value = app.admin_get("/admin/audit").await;
    assert_eq!(audit["events"][0]["action"], "signing_key.rotated");
    assert_eq!(audit["events"][0]["changes"]["kid"], new.kid);
    assert_eq!(audit["events"][0]["client_id"], Value::Null);
    let _ = ADMIN_TOKEN;
}

#[tokio::test]
async fn server_metadata_points_at_every_endpoint() {
    let app = TestApp::spawn().await;
    let m: Value = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(m["issuer"], app.base);
    assert_eq!(m["token_endpoint"], format!("{}/v1/token", app.base));
    assert_eq!(m["jwks_uri"], format!("{}/.well-known/jwks.json", app.base));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{}/v1/introspect", app.base)
    );
    assert_eq!(m["grant_types_supported"], json!(["client_credentials"]));
    assert!(
        m["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("chat"))
    );
}

#[tokio::test]
async fn a_signing_key_deleted_from_the_database_ends_its_tokens_at_once() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_named("compromised").await;
    let token = token_for(&app, &key).await;
    // Accepted once, so its signature check is remembered.
    assert_eq!(introspect(&app, &token).await["active"], true);
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    // The operator's answer to a leaked key: a new one, and the old one gone for good.
    rotate(&app).await;
    app.db
        .execute(&format!("DELETE FROM signing_keys WHERE kid = '{kid}'"))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while introspect(&app, &token).await["active"] == true {
        assert!(
            std::time::Instant::now() < deadline,
            "a token of a deleted key was still accepted after 2 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(introspect(&app, &token).await, json!({"active": false}));
}

const SEAL_SECRET: &str = "seal-secret-for-tests-0123456789abcdef";

fn sealing_config(secret: Option<&str>) -> egregore_relay::config::ServeConfig {
    let mut config = crate::support::test_config();
    // One issuer for every server of a test, so their tokens are each other's.
    config.tokens.issuer = "https://relay.test".into();
    config.signing_key_secret = secret.map(|s| secrecy::SecretString::from(s.to_string()));
    config
}

/// Starts a server on `db` and expects it to refuse to start; returns its error.
async fn refused_start(db: &crate::support::TestDb, secret: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = sealing_config(secret);
    let served = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        egregore_relay::app::serve(&config, db.open().await, listener, std::future::pending()),
    )
    .await
    .expect("the server started");
    format!("{:#}", served.unwrap_err())
}

#[tokio::test]
async fn with_a_secret_the_signing_keys_are_sealed_in_the_database() {
    let mut app = TestApp::spawn_with(sealing_config(Some(SEAL_SECRET))).await;
    let (_, key) = app.create_named("sealed").await;
    let token = token_for(&app, &key).await;
    assert_eq!(introspect(&app, &token).await["active"], true);
    let stored = app.store.signing_keys().await.unwrap();
    assert!(!stored.is_empty() && stored.iter().all(|k| k.is_sealed()));
    let seal = egregore_relay::domain::signing_key::SeedSeal::from_secret(SEAL_SECRET);
    let current = stored[0].open(Some(&seal)).unwrap();
    assert!(
        !stored[0]
            .stored_seed()
            .windows(32)
            .any(|w| w == current.seed().as_slice()),
        "the seed is in the database in plain text"
    );
    app.stop().await;
    // A node without the secret, or with another one, cannot sign and refuses to start.
    let db = crate::support::TestDb::shared(&app.db.url);
    let error = refused_start(&db, None).await;
    assert!(error.contains("RELAY_SIGNING_KEY_SECRET"), "{error}");
    let error = refused_start(&db, Some("another-secret-0123456789abcdef-0123456789")).await;
    assert!(error.contains("another secret"), "{error}");
}

#[tokio::test]
async fn keys_stored_in_plain_text_are_sealed_once_a_secret_is_set() {
    let mut app = TestApp::spawn_with(sealing_config(None)).await;
    let (_, key) = app.create_named("before the secret").await;
    let token = token_for(&app, &key).await;
    assert!(
        app.store
            .signing_keys()
            .await
            .unwrap()
            .iter()
            .all(|k| !k.is_sealed())
    );
    app.stop().await;
    let sealed = TestApp::spawn_on(
        crate::support::TestDb::shared(&app.db.url),
        sealing_config(Some(SEAL_SECRET)),
    )
    .await;
    // Tokens issued before keep working, and new ones are signed with the same key.
    assert_eq!(introspect(&sealed, &token).await["active"], true);
    assert!(
        sealed
            .store
            .signing_keys()
            .await
            .unwrap()
            .iter()
            .all(|k| k.is_sealed())
    );
    let again = token_for(&sealed, &key).await;
    assert_eq!(
        jsonwebtoken::decode_header(&again).unwrap().kid,
        jsonwebtoken::decode_header(&token).unwrap().kid
    );
}
