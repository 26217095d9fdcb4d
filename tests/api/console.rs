//! The console at the HTML level: redirects without a session, sign-in and its cookie, the
//! security headers, CSRF and `Origin` refusals that change nothing, escaping, the key shown
//! once, every page and action, and sessions that end with their admin client.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestApp, test_config};

/// A browser without JavaScript: no redirects followed, one cookie kept by hand.
pub struct Visitor<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: Option<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers[LOCATION].to_str().unwrap()
    }

    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        self.hidden("csrf")
    }

    /// The value of the hidden field `name`.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self.body.find(&marker).expect("a form with that field");
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl<'a> Visitor<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Visitor {
            app,
            http,
            cookie: None,
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(set) = headers.get(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        Page {
            status,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.app.base));
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self
            .http
            .post(format!("{}{path}", self.app.base))
            .header("origin", &self.app.base)
            .form(form);
        self.send(request).await
    }

    /// Opens the sign-in form and sends it with `credential`.
    pub async fn try_sign_in(&mut self, credential: &str) -> Page {
        let form = self.get("/console/login").await;
        let token = form.hidden("login_csrf");
        let fields = [("credential", credential), ("login_csrf", token.as_str())];
        self.post("/console/login", &fields).await
    }

    pub async fn sign_in(&mut self, credential: &str) -> Page {
        let page = self.try_sign_in(credential).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        page
    }

    /// The CSRF token of this session (from the overview's sign-out form).
    pub async fn csrf(&mut self) -> String {
        self.get("/console").await.csrf()
    }
}

fn client_id_in(body: &str) -> String {
    let at = body.find("client_").unwrap();
    body[at..at + 23].to_string()
}

#[tokio::test]
async fn pages_without_a_session_send_the_visitor_to_sign_in() {
    let app = TestApp::spawn().await;
    let mut v = Visitor::new(&app);
    for path in [
        "/console",
        "/console/clients",
        "/console/clients/new",
        "/console/clients/client_0000000000000000",
        "/console/audit",
        "/console/signing-keys",
        "/console/no-such-page",
    ] {
        let page = v.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location(), "/console/login", "{path}");
    }
    let page = v.post("/console/clients", &[("name", "x")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let form = v.get("/console/login").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("<label for=\"credential\">"));
    v.cookie = Some("relay_console=forged".into());
    assert_eq!(v.get("/console").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn behind_an_https_public_url_every_console_cookie_is_secure() {
    let mut config = test_config();
    config.tokens.issuer = "https://relay.example".into();
    let app = TestApp::spawn_with(config).await;
    let mut v = Visitor::new(&app);
    let form = v.get("/console/login").await;
    let login_cookie = form.headers[SET_COOKIE].to_str().unwrap().to_string();
    assert!(login_cookie.ends_with("; Secure"), "{login_cookie}");
    let page = v.sign_in(ADMIN_TOKEN).await;
    let session_cookie = page.headers[SET_COOKIE].to_str().unwrap();
    assert!(session_cookie.ends_with("; Secure"), "{session_cookie}");
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_a_wrong_credential_counts_as_a_failure() {
    let app = TestApp::spawn().await;
    let (_, plain_key) = app.create_named("not an admin").await;
    let mut v = Visitor::new(&app);
    for wrong in ["nope", plain_key.as_str()] {
        let page = v.try_sign_in(wrong).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(
            page.body.contains("role=\"alert\""),
            "the form again, with a message"
        );
        assert!(page.headers.get(SET_COOKIE).is_none());
    }
    let page = v.sign_in(ADMIN_TOKEN).await;
    assert_eq!(page.location(), "/console");
    let cookie = page.headers[SET_COOKIE].to_str().unwrap();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "the issuer is http here");
    let overview = v.get("/console").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.body.contains("Signed in as"));
    // Only the token's SHA-256 is stored.
    let token = v
        .cookie
        .clone()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!app.snapshot().await.contains(&token));

    // A sign-in posted without the form's token (from another site, say) is refused before
    // any credential is looked at, and costs the address nothing.
    let mut stranger = Visitor::new(&app);
    for _ in 0..40 {
        let page = stranger
            .post(
                "/console/login",
                &[("credential", "nope"), ("login_csrf", "guess")],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
    }

    // The sign-in failures count toward the failed-authentication limit of the address.
    let mut fresh = Visitor::new(&app);
    for _ in 0..28 {
        let page = fresh.try_sign_in("nope").await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "the refused posts cost nothing"
        );
    }
    let limited = fresh.try_sign_in("nope").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let api = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth("still-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn console_responses_carry_the_security_headers() {
    let app = TestApp::spawn().await;
    let mut v = Visitor::new(&app);
    let login = v.get("/console/login").await;
    v.sign_in(ADMIN_TOKEN).await;
    let overview = v.get("/console").await;
    let refused = v.post("/console/clients", &[("name", "x")]).await;
    for page in [&login, &overview, &refused] {
        let h = &page.headers;
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
    }
    assert!(
        overview.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // The page's own assets, and nothing from another origin.
    let css_at = overview.body.find("/console/assets/console.").unwrap();
    let css = &overview.body[css_at..];
    let css = &css[..css.find('"').unwrap()];
    let asset = v.get(css).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert!(
        asset.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(!overview.body.contains("http://") && !overview.body.contains("https://"));
}

#[tokio::test]
async fn forms_without_the_csrf_token_or_from_another_site_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (client, _) = app.create_named("victim").await;
    let id = client["client_id"].as_str().unwrap();
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let csrf = v.csrf().await;
    let before = app.snapshot().await;
    let disable = format!("/console/clients/{id}/disable");
    let attempts = [
        v.post("/console/clients", &[("name", "made")]).await,
        v.post(&disable, &[("csrf", "wrong")]).await,
        v.post(&format!("/console/clients/{id}/delete"), &[]).await,
        v.post("/console/signing-keys/rotate", &[("csrf", "")])
            .await,
    ];
    for page in attempts {
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    }
    let http = v.http.clone();
    let cross = v
        .send(
            http.post(format!("{}{disable}", app.base))
                .header("origin", "https://evil.example")
                .form(&[("csrf", csrf.as_str())]),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, before, "nothing changed");
    // The same request from this site, with the token, works.
    let ok = v.post(&disable, &[("csrf", &csrf)]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn hostile_names_are_escaped_everywhere_they_are_shown() {
    let app = TestApp::spawn().await;
    let hostile = "<script>alert(\"x\")</script>' onmouseover='x";
    let (client, _) = app
        .create_client(json!({"name": hostile, "metadata": {"note": "</textarea><b>bold</b>"}}))
        .await;
    let id = client["client_id"].as_str().unwrap();
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    for path in [
        "/console/clients".to_string(),
        format!("/console/clients/{id}"),
        format!("/console/clients/{id}/delete"),
        "/console/audit".to_string(),
        "/console".to_string(),
        format!("/console/clients?q={}", "%3Cscript%3E"),
    ] {
        let page = v.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains("<script>alert"), "{path}");
        assert!(!page.body.contains("<b>bold</b>"), "{path}");
    }
    let detail = v.get(&format!("/console/clients/{id}")).await;
    assert!(
        detail
            .body
            .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;")
    );
    // In the edit form the name is an attribute value: its quotes cannot end it.
    assert!(
        detail.body.contains(
            "value=\"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;' onmouseover='x\""
        )
    );
}

#[tokio::test]
async fn a_new_client_key_appears_once_on_the_page_answering_the_create() {
    let app = TestApp::spawn().await;
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let form = v.get("/console/clients/new").await;
    assert_eq!(form.status, StatusCode::OK);
    for label in ["name", "scopes", "rate_limit", "expires_at", "metadata"] {
        assert!(
            form.body.contains(&format!("<label for=\"{label}\">")),
            "{label}"
        );
    }
    let csrf = form.csrf();
    let created = v
        .post(
            "/console/clients",
            &[
                ("csrf", &csrf),
                ("name", "console app"),
                ("scopes", "chat, history"),
                ("rate_limit", "42"),
                ("expires_at", ""),
                ("metadata", "{\"team\": \"web\"}"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let at = created.body.find("id=\"new-key\">").unwrap() + 13;
    let key = &created.body[at..at + 51];
    assert!(key.starts_with("eg_"));
    assert!(created.body.contains("data-copy=\"new-key\""));
    assert_eq!(app.verify(key).await["valid"], true);
    let id = client_id_in(&created.body[created.body.find("/console/clients/client_").unwrap()..]);
    let stored = app.admin_get(&format!("/admin/clients/{id}")).await;
    assert_eq!(stored["rate_limit"], 42);
    assert_eq!(stored["metadata"], json!({"team": "web"}));
    assert_eq!(stored["scopes"], json!(["chat", "history"]));
    for path in [
        format!("/console/clients/{id}"),
        "/console/clients".to_string(),
        "/console".to_string(),
        "/console/audit".to_string(),
    ] {
        assert!(
            !v.get(&path).await.body.contains(&key[13..]),
            "{path} shows the key"
        );
    }
    let audit = app.admin_get(&format!("/admin/audit?client_id={id}")).await;
    assert_eq!(audit["events"][0]["actor"], "admin-token");
}

#[tokio::test]
async fn bad_fields_are_shown_beside_the_field_with_the_api_message_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (client, _) = app.create_named("edited").await;
    let id = client["client_id"].as_str().unwrap();
    let api = app
        .admin(Method::PATCH, &format!("/admin/clients/{id}"))
        .json(&json!({"rate_limit": 0}))
        .send()
        .await
        .unwrap();
    let api: serde_json::Value = api.json().await.unwrap();
    let message = api["errors"][0]["detail"].as_str().unwrap().to_string();
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let csrf = v.csrf().await;
    let before = app.snapshot().await;
    let page = v
        .post(
            &format!("/console/clients/{id}"),
            &[
                ("csrf", &csrf),
                ("name", "edited"),
                ("scopes", "chat"),
                ("rate_limit", "0"),
                ("expires_at", ""),
                ("metadata", "[1]"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body
            .contains(&format!("id=\"rate_limit-error\" role=\"alert\">{message}")),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"metadata-error\""));
    assert!(page.body.contains("aria-invalid=\"true\""));
    assert_eq!(app.snapshot().await, before);
    let new = v
        .post(
            "/console/clients",
            &[("csrf", &csrf), ("name", " "), ("rate_limit", "ten")],
        )
        .await;
    assert_eq!(new.status, StatusCode::BAD_REQUEST);
    assert!(new.body.contains("id=\"name-error\""));
    assert!(
        new.body
            .contains("id=\"rate_limit-error\" role=\"alert\">must be a whole number")
    );
    assert_eq!(app.snapshot().await, before);

    let saved = v
        .post(
            &format!("/console/clients/{id}"),
            &[
                ("csrf", &csrf),
                ("name", "renamed"),
                ("scopes", "chat"),
                ("rate_limit", "7"),
                ("expires_at", "2099-01-01T00:00"),
                ("metadata", "{}"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let stored = app.admin_get(&format!("/admin/clients/{id}")).await;
    assert_eq!(
        (stored["name"].as_str(), stored["rate_limit"].as_i64()),
        (Some("renamed"), Some(7))
    );
    assert_eq!(stored["expires_at"], "2099-01-01T00:00:00Z");
}

#[tokio::test]
async fn the_client_page_edits_credits_and_networks_and_the_list_shows_credits_left() {
    let app = TestApp::spawn().await;
    let (client, _) = app
        .create_client(json!({"name": "policed", "metadata": {"team": "web"}}))
        .await;
    let id = client["client_id"].as_str().unwrap().to_string();
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let csrf = v.csrf().await;
    let path = format!("/console/clients/{id}");
    let form = |credits: &'static str, refill: &'static str, networks: &'static str| {
        vec![
            ("name", "policed"),
            ("scopes", "chat, history"),
            ("rate_limit", "100"),
            ("expires_at", ""),
            ("metadata", "{\"team\":\"web\"}"),
            ("credits", credits),
            ("refill_amount", refill),
            ("refill_interval", "day"),
            ("allowed_networks", networks),
        ]
    };
    // Bad values are shown beside their fields and change nothing.
    let mut bad = form("-3", "0", "10.0.0.1/8");
    bad.push(("csrf", &csrf));
    let refused = v.post(&path, &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    for field in [
        "credits-error",
        "refill_amount-error",
        "allowed_networks-error",
    ] {
        assert!(refused.body.contains(field), "{field}");
    }
    let stored = app.admin_get(&format!("/admin/clients/{id}")).await;
    assert_eq!(stored["credits"], Value::Null);

    let mut good = form("250", "1000", "203.0.113.0/24, 2001:db8::/32");
    good.push(("csrf", &csrf));
    let saved = v.post(&path, &good).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let stored = app.admin_get(&format!("/admin/clients/{id}")).await;
    assert_eq!(
        stored["credits"],
        json!({"remaining": 250, "refill": {"amount": 1000, "interval": "day"}})
    );
    assert_eq!(
        stored["allowed_networks"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
    let page = v.get(&path).await;
    assert!(page.body.contains("250 left, set to 1000 every day"));
    assert!(page.body.contains("203.0.113.0/24, 2001:db8::/32"));
    let list = v.get("/console/clients").await;
    assert!(list.body.contains(">250<"), "the list shows credits left");

    // Saving the form as shown sets nothing, however the balance moved since the page was
    // shown (the balance is not reset, nothing is audited).
    let shown = page.hidden("credits_shown");
    assert_eq!(shown, "250|1000|day");
    app.admin(Method::PATCH, &format!("/admin/clients/{id}"))
        .json(
            &json!({"credits": {"remaining": 240, "refill": {"amount": 1000, "interval": "day"}}}),
        )
        .send()
        .await
        .unwrap();
    let audited = app.admin_get(&format!("/admin/audit?client_id={id}")).await["events"]
        .as_array()
        .unwrap()
        .len();
    let mut as_shown = good.clone();
    as_shown.push(("credits_shown", &shown));
    let unchanged = v.post(&path, &as_shown).await;
    assert_eq!(unchanged.status, StatusCode::SEE_OTHER);
    let after = app.admin_get(&format!("/admin/audit?client_id={id}")).await["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, audited);
    let stored = app.admin_get(&format!("/admin/clients/{id}")).await;
    assert_eq!(
        stored["credits"]["remaining"], 240,
        "the balance was not set back"
    );

    // Emptied, the credits are unlimited and the networks anywhere.
    let mut cleared = form("", "", "");
    cleared[6].1 = "";
    cleared.push(("csrf", &csrf));
    assert_eq!(v.post(&path, &cleared).await.status, StatusCode::SEE_OTHER);
    let stored = app.admin_get(&format!("/admin/clients/{id}")).await;
    assert_eq!(stored["credits"], Value::Null);
    assert_eq!(stored["allowed_networks"], json!([]));
}

#[tokio::test]
async fn every_page_renders_and_every_action_does_what_it_says() {
    let app = TestApp::spawn().await;
    let (client, old_key) = app.create_named("acted on").await;
    let id = client["client_id"].as_str().unwrap().to_string();
    app.verify(&old_key).await;
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let csrf = v.csrf().await;
    for path in [
        "/console".to_string(),
        "/console/clients".to_string(),
        "/console/clients?include_disabled=true&q=acted&scope=chat".to_string(),
        "/console/clients/new".to_string(),
        format!("/console/clients/{id}"),
        format!("/console/clients/{id}?range=1h"),
        format!("/console/clients/{id}?range=30d"),
        format!("/console/clients/{id}/delete"),
        "/console/audit".to_string(),
        format!("/console/audit?client_id={id}"),
        "/console/signing-keys".to_string(),
    ] {
        let page = v.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.starts_with("<!DOCTYPE html>"), "{path}");
    }
    assert_eq!(
        v.get("/console/clients/client_0000000000000000")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        v.get("/console/nothing-here").await.status,
        StatusCode::NOT_FOUND
    );

    let base = format!("/console/clients/{id}");
    let disabled = v.post(&format!("{base}/disable"), &[("csrf", &csrf)]).await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER);
    assert_eq!(app.verify(&old_key).await["code"], "DISABLED");
    let enabled = v.post(&format!("{base}/enable"), &[("csrf", &csrf)]).await;
    assert_eq!(enabled.status, StatusCode::SEE_OTHER);
    let regenerated = v
        .post(
            &format!("{base}/regenerate"),
            &[("csrf", &csrf), ("grace_period_seconds", "0")],
        )
        .await;
    assert_eq!(regenerated.status, StatusCode::OK);
    let at = regenerated.body.find("id=\"new-key\">").unwrap() + 13;
    let new_key = regenerated.body[at..at + 51].to_string();
    assert_eq!(app.verify(&old_key).await["code"], "NOT_FOUND");
    assert_eq!(app.verify(&new_key).await["valid"], true);
    let rotated = v
        .post("/console/signing-keys/rotate", &[("csrf", &csrf)])
        .await;
    assert_eq!(rotated.status, StatusCode::SEE_OTHER);
    let deleted = v.post(&format!("{base}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(deleted.location(), "/console/clients?deleted=1");
    assert_eq!(app.verify(&new_key).await["code"], "NOT_FOUND");
    let audit = app.admin_get(&format!("/admin/audit?client_id={id}")).await;
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
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
            "client.created"
        ]
    );
    assert!(
        audit["events"].as_array().unwrap()[..4]
            .iter()
            .all(|e| e["actor"] == "admin-token")
    );

    let signed_out = v.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert_eq!(v.get("/console").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn regeneration_keeps_the_old_key_for_its_grace_and_refuses_bad_graces_beside_the_field() {
    let app = TestApp::spawn().await;
    let (client, old_key) = app.create_named("rotating").await;
    let id = client["client_id"].as_str().unwrap().to_string();
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let csrf = v.csrf().await;
    let path = format!("/console/clients/{id}/regenerate");
    for bad in ["soon", "604801", "-5"] {
        let refused = v
            .post(&path, &[("csrf", &csrf), ("grace_period_seconds", bad)])
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            refused.body.contains("id=\"grace_period_seconds-error\""),
            "{bad}"
        );
        assert!(refused.body.contains(&format!("value=\"{bad}\"")), "{bad}");
        assert_eq!(app.verify(&old_key).await["valid"], true, "nothing changed");
    }
    let regenerated = v
        .post(&path, &[("csrf", &csrf), ("grace_period_seconds", "3600")])
        .await;
    assert_eq!(regenerated.status, StatusCode::OK);
    assert!(regenerated.body.contains("The old key keeps working until"));
    let at = regenerated.body.find("id=\"new-key\">").unwrap() + 13;
    let new_key = regenerated.body[at..at + 51].to_string();
    assert_eq!(app.verify(&new_key).await["valid"], true);
    assert_eq!(
        app.verify(&old_key).await["valid"],
        true,
        "within its grace"
    );
    for page in [
        format!("/console/clients/{id}"),
        "/console/clients".into(),
        "/console".into(),
    ] {
        let body = v.get(&page).await.body;
        assert!(!body.contains(&new_key[13..]), "the new key is on {page}");
    }
}

#[tokio::test]
async fn a_session_ends_when_its_admin_client_is_disabled_or_regenerated() {
    let app = TestApp::spawn().await;
    for end in ["disable", "regenerate", "scope"] {
        let (admin, key) = app
            .create_client(json!({"name": format!("ops {end}"), "scopes": ["admin"]}))
            .await;
        let id = admin["client_id"].as_str().unwrap();
        let mut v = Visitor::new(&app);
        v.sign_in(&key).await;
        let stolen = v.cookie.clone();
        assert_eq!(v.get("/console").await.status, StatusCode::OK);
        let r = match end {
            "disable" => {
                app.admin(Method::POST, &format!("/admin/clients/{id}/disable"))
                    .send()
                    .await
            }
            "regenerate" => {
                app.admin(Method::POST, &format!("/admin/clients/{id}/regenerate"))
                    .send()
                    .await
            }
            _ => {
                app.admin(Method::PATCH, &format!("/admin/clients/{id}"))
                    .json(&json!({"scopes": ["chat"]}))
                    .send()
                    .await
            }
        };
        assert!(r.unwrap().status().is_success());
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            v.cookie = stolen.clone();
            if v.get("/console").await.status == StatusCode::SEE_OTHER {
                break;
            }
            assert!(Instant::now() < deadline, "{end}: the session outlived 1 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Giving the right back does not bring the session back.
        let restore = match end {
            "disable" => Some(app.admin(Method::POST, &format!("/admin/clients/{id}/enable"))),
            "scope" => Some(
                app.admin(Method::PATCH, &format!("/admin/clients/{id}"))
                    .json(&json!({"scopes": ["admin"]})),
            ),
            _ => None,
        };
        if let Some(restore) = restore {
            assert!(restore.send().await.unwrap().status().is_success());
            v.cookie = stolen.clone();
            assert_eq!(
                v.get("/console").await.status,
                StatusCode::SEE_OTHER,
                "{end}: revived"
            );
        }
    }
}

#[tokio::test]
async fn a_session_lives_twelve_hours_at_most_and_is_stored_only_as_a_hash() {
    let app = TestApp::spawn().await;
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let token = v
        .cookie
        .clone()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_string();
    let hash = egregore_relay::domain::api_key::KeyHash::of(&token).to_hex();
    let stored = app.store.session(&hash).await.unwrap().unwrap();
    assert_eq!(
        stored.expires_at - stored.created_at,
        chrono::Duration::hours(12)
    );
    assert_eq!(stored.actor, "admin-token");
    assert!(
        app.store.session(&token).await.unwrap().is_none(),
        "the token itself is no key"
    );
    // Twelve hours later (the row's clock moved, not the test's).
    app.db
        .execute("UPDATE console_sessions SET expires_at = created_at")
        .await;
    let page = v.get("/console").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/console/login");
    assert!(
        app.store.session(&hash).await.unwrap().is_none(),
        "an ended session is forgotten"
    );
}

#[tokio::test]
async fn console_changes_are_audited_as_the_signed_in_admin_client() {
    let app = TestApp::spawn().await;
    let (admin, key) = app
        .create_client(json!({"name": "ops", "scopes": ["admin"]}))
        .await;
    let mut v = Visitor::new(&app);
    v.sign_in(&key).await;
    let csrf = v.csrf().await;
    let created = v
        .post(
            "/console/clients",
            &[("csrf", &csrf), ("name", "made by ops"), ("scopes", "chat")],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let audit = app.admin_get("/admin/audit?limit=1").await;
    assert_eq!(audit["events"][0]["action"], "client.created");
    assert_eq!(audit["events"][0]["actor"], admin["client_id"]);
    // Another node sees the same session: it is in the shared database.
    let second = TestApp::spawn_sharing(&app, crate::support::test_config()).await;
    let mut elsewhere = Visitor::new(&second);
    elsewhere.cookie = v.cookie.clone();
    assert_eq!(elsewhere.get("/console").await.status, StatusCode::OK);
    let out = v.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        elsewhere.get("/console").await.status,
        StatusCode::SEE_OTHER,
        "signed out everywhere"
    );
}

#[tokio::test]
async fn an_admin_token_session_ends_once_a_server_runs_with_another_token() {
    let app = TestApp::spawn().await;
    let mut v = Visitor::new(&app);
    v.sign_in(ADMIN_TOKEN).await;
    let other_token = egregore_relay::config::ServeConfig::with_admin_token(
        "another-admin-token-0123456789abcdef-0123456789",
    );
    let rotated = TestApp::spawn_sharing(&app, other_token).await;
    let mut elsewhere = Visitor::new(&rotated);
    elsewhere.cookie = v.cookie.clone();
    assert_eq!(
        elsewhere.get("/console").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        v.get("/console").await.status,
        StatusCode::SEE_OTHER,
        "a session refused once is forgotten everywhere"
    );
}
