//! Client policies end to end: usage credits (set, shown, audited, spent exactly by racing
//! requests on one node and on three, refilled once per period, verify's `cost`, never
//! over-spent when a node is killed) and allowed networks (IPv4, IPv6, IPv4-mapped, behind a
//! trusted proxy, with a forged `X-Forwarded-For`, and verify's `ip`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use egregore_relay::domain::address::{TrustedProxies, parse_network};
use egregore_relay::domain::client::{Client, ClientId};
use egregore_relay::service::credits::{CreditLeases, Spend};
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::binary::Server;
use crate::relay::relay_config;
use crate::support::{
    ADMIN_TOKEN, TestApp, TestDb, assert_problem, create_on, pointers, test_config,
};
use crate::upstream;

const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

fn id(client: &Value) -> String {
    client["client_id"].as_str().unwrap().to_string()
}

/// The client as the database holds it.
async fn stored(app: &TestApp, client: &Value) -> Client {
    let id = ClientId::new(&id(client));
    app.store.client(&id).await.unwrap().unwrap()
}

async fn relay_app() -> (TestApp, upstream::Upstream) {
    let upstream = upstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", dead.local_addr().unwrap());
    let mut config = relay_config(&upstream.base, &dead);
    config.usage.flush_interval = Duration::from_millis(100);
    (TestApp::spawn_with(config).await, upstream)
}

async fn verify_with(app: &TestApp, body: Value) -> reqwest::Response {
    app.admin(Method::POST, "/v1/keys/verify")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn verify_json(app: &TestApp, body: Value) -> Value {
    let r = verify_with(app, body).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// The client's `credits.remaining` once the balance has settled (every lease given back:
/// the contract gives 10 s of quiet for that).
async fn settled_remaining(base: &str, client_id: &str, expected: i64) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let client: Value = http
            .get(format!("{base}/admin/clients/{client_id}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seen = client["credits"]["remaining"].as_i64().unwrap();
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "remaining {seen}, expected {expected} within 10 s of the last request"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn policies_are_set_shown_normalised_and_audited() {
    let app = TestApp::spawn().await;
    let (client, _) = app
        .create_client(json!({
            "name": "metered",
            "credits": {"remaining": 500, "refill": {"amount": 1000, "interval": "month"}},
            "allowed_networks": ["203.0.113.0/24", "2001:DB8::/32", "192.0.2.7"],
        }))
        .await;
    assert_eq!(
        client["credits"],
        json!({"remaining": 500, "refill": {"amount": 1000, "interval": "month"}})
    );
    assert_eq!(
        client["allowed_networks"],
        json!(["203.0.113.0/24", "2001:db8::/32", "192.0.2.7/32"])
    );
    let (plain, _) = app.create_named("plain").await;
    assert_eq!(plain["credits"], Value::Null);
    assert_eq!(plain["allowed_networks"], json!([]));

    let path = format!("/admin/clients/{}", id(&client));
    let patched: Value = app
        .admin(Method::PATCH, &path)
        .json(&json!({"credits": {"remaining": 7}, "allowed_networks": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["credits"], json!({"remaining": 7, "refill": null}));
    assert_eq!(patched["allowed_networks"], json!([]));
    let listed = app.admin_get("/admin/clients?q=metered").await;
    assert_eq!(listed["clients"][0]["credits"]["remaining"], 7);

    let audit = app
        .admin_get(&format!("/admin/audit?client_id={}", id(&client)))
        .await;
    let changes = &audit["events"][0]["changes"];
    assert_eq!(audit["events"][0]["action"], "client.updated");
    assert_eq!(
        changes["credits"],
        json!({
            "from": {"remaining": 500, "refill": {"amount": 1000, "interval": "month"}},
            "to": {"remaining": 7, "refill": null},
        })
    );
    assert_eq!(
        changes["allowed_networks"]["from"],
        json!(["203.0.113.0/24", "2001:db8::/32", "192.0.2.7/32"])
    );
    let created = &audit["events"][1]["changes"];
    assert_eq!(created["credits"]["remaining"], 500);

    let cleared: Value = app
        .admin(Method::PATCH, &path)
        .json(&json!({"credits": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["credits"], Value::Null);
}

#[tokio::test]
async fn bad_policies_are_400s_at_their_fields_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (client, _) = app.create_named("target").await;
    let path = format!("/admin/clients/{}", id(&client));
    let before = app.snapshot().await;
    let many: Vec<String> = (0..33).map(|i| format!("10.{i}.0.0/16")).collect();
    for (body, expected) in [
        (json!({"credits": {"remaining": -1}}), "/credits/remaining"),
        (
            json!({"credits": {"remaining": 1_000_000_000_001_i64}}),
            "/credits/remaining",
        ),
        (
            json!({"credits": {"remaining": 1, "refill": {"amount": 0, "interval": "day"}}}),
            "/credits/refill/amount",
        ),
        (
            json!({"credits": {"remaining": 1, "refill": {"amount": 5, "interval": "week"}}}),
            "/credits/refill/interval",
        ),
        (
            json!({"allowed_networks": ["10.0.0.1/8"]}),
            "/allowed_networks",
        ),
        (
            json!({"allowed_networks": ["not-a-network"]}),
            "/allowed_networks",
        ),
        (json!({"allowed_networks": many}), "/allowed_networks"),
        (json!({"allowed_networks": null}), "/allowed_networks"),
    ] {
        let r = app
            .admin(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(pointers(&problem), [expected], "{body}");
    }
    // Wrong types and unknown members are 400s too, without echoing what was sent.
    for body in [
        json!({"credits": {"remaining": "lots"}}),
        json!({"credits": {"remaining": 1, "eg_secret": 1}}),
        json!({"credits": 5}),
    ] {
        let r = app
            .admin(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(r, StatusCode::BAD_REQUEST).await;
        assert!(!problem.to_string().contains("eg_secret"), "{problem}");
    }
    let r = app
        .admin(Method::POST, "/admin/clients")
        .json(&json!({"name": "x", "allowed_networks": ["300.1.1.1"]}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.snapshot().await, before, "nothing was written");
}

#[tokio::test]
async fn two_hundred_requests_racing_for_fifty_credits_admit_exactly_fifty() {
    let (app, _upstream) = relay_app().await;
    let (client, key) = app
        .create_client(json!({
            "name": "racer", "rate_limit": 1_000_000, "credits": {"remaining": 50},
        }))
        .await;
    let requests = (0..200).map(|_| {
        app.request(Method::GET, "/v1/chat/x")
            .bearer_auth(&key)
            .send()
    });
    let responses = join_all(requests).await;
    let mut admitted = 0;
    for response in responses {
        let response = response.unwrap();
        if response.status().is_success() {
            admitted += 1;
        } else {
            assert!(response.headers().get("retry-after").is_none(), "no refill");
            let problem = assert_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
            assert_eq!(problem["type"], QUOTA_EXCEEDED);
        }
    }
    assert_eq!(admitted, 50);
    settled_remaining(&app.base, &id(&client), 0).await;
    // Each refusal is counted as such.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = app
            .admin_get(&format!("/admin/usage?client_id={}", id(&client)))
            .await;
        let totals = &usage["totals"];
        if totals["allowed"] == 50 && totals["usage_exceeded"] == 150 {
            break;
        }
        assert!(Instant::now() < deadline, "{totals}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unused_credits_go_back_and_the_token_endpoint_spends_them_too() {
    let (app, _upstream) = relay_app().await;
    let (client, key) = app
        .create_client(json!({
            "name": "thrifty", "rate_limit": 1_000_000,
            "credits": {"remaining": 1000, "refill": {"amount": 1000, "interval": "day"}},
        }))
        .await;
    for _ in 0..30 {
        let r = app
            .request(Method::GET, "/v1/history/x")
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let token = app
        .request(Method::POST, "/v1/token")
        .header("x-api-key", &key)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::OK);
    // 31 used; the node's lease (an eighth of what was left) goes back once it is idle.
    settled_remaining(&app.base, &id(&client), 969).await;

    // Spent to zero: the token endpoint answers in the OAuth shape, with the time to the
    // next refill (00:00 UTC tomorrow).
    let path = format!("/admin/clients/{}", id(&client));
    app.admin(Method::PATCH, &path)
        .json(&json!({"credits": {"remaining": 0, "refill": {"amount": 1000, "interval": "day"}}}))
        .send()
        .await
        .unwrap();
    let refused = app
        .request(Method::POST, "/v1/token")
        .header("x-api-key", &key)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = Utc::now();
    let midnight = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let expected = (midnight - now).num_seconds();
    assert!(
        (retry as i64 - expected).abs() <= 2,
        "{retry} vs {expected}"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn verify_spends_its_cost_and_reports_codes_in_order() {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .create_client(json!({"name": "costly", "credits": {"remaining": 12}}))
        .await;
    let look = verify_json(&app, json!({"key": key, "cost": 0})).await;
    assert_eq!(
        look["credits"],
        json!({"remaining": 12}),
        "cost 0 spends nothing"
    );
    let first = verify_json(&app, json!({"key": key, "cost": 5})).await;
    assert_eq!(first["valid"], true);
    assert_eq!(first["credits"], json!({"remaining": 7}));
    let free = verify_json(&app, json!({"key": key, "cost": 0})).await;
    assert_eq!(free["credits"], json!({"remaining": 7}));
    let too_much = verify_json(&app, json!({"key": key, "cost": 8})).await;
    assert_eq!(too_much, json!({"valid": false, "code": "USAGE_EXCEEDED"}));
    let rest = verify_json(&app, json!({"key": key, "cost": 7})).await;
    assert_eq!(rest["credits"], json!({"remaining": 0}));
    for bad in [json!(1001), json!(-1), json!("one")] {
        let r = verify_with(&app, json!({"key": key, "cost": bad})).await;
        assert_problem(r, StatusCode::BAD_REQUEST).await;
    }
    let r = verify_with(&app, json!({"key": key, "ip": "not-an-address"})).await;
    let problem = assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(pointers(&problem), ["/ip"]);
    // Without credits there is no "credits" member.
    let (_, unmetered) = app.create_named("unmetered").await;
    let answer = verify_json(&app, json!({"key": unmetered})).await;
    assert!(answer.get("credits").is_none(), "{answer}");

    // Order: FORBIDDEN before RATE_LIMITED before USAGE_EXCEEDED; a request refused by the
    // rate limit uses no credit.
    let (client, key) = app
        .create_client(json!({
            "name": "ordered", "rate_limit": 2, "credits": {"remaining": 5},
            "allowed_networks": ["198.51.100.0/24"],
        }))
        .await;
    let from = |ip: Option<&str>| match ip {
        Some(ip) => json!({"key": key, "ip": ip}),
        None => json!({"key": key}),
    };
    assert_eq!(verify_json(&app, from(None)).await["code"], "FORBIDDEN");
    assert_eq!(
        verify_json(&app, from(Some("192.0.2.1"))).await["code"],
        "FORBIDDEN"
    );
    for _ in 0..2 {
        let ok = verify_json(&app, from(Some("198.51.100.9"))).await;
        assert_eq!(ok["valid"], true, "{ok}");
    }
    assert_eq!(
        verify_json(&app, from(Some("198.51.100.9"))).await["code"],
        "RATE_LIMITED"
    );
    assert_eq!(
        verify_json(&app, from(Some("192.0.2.1"))).await["code"],
        "FORBIDDEN",
        "networks come before the rate limit"
    );
    settled_remaining(&app.base, &id(&client), 3).await;
    let (_, broke) = app
        .create_client(json!({"name": "broke", "rate_limit": 1, "credits": {"remaining": 0}}))
        .await;
    assert_eq!(
        verify_json(&app, json!({"key": broke})).await["code"],
        "USAGE_EXCEEDED"
    );
    assert_eq!(
        verify_json(&app, json!({"key": broke})).await["code"],
        "RATE_LIMITED",
        "the rate limit comes before the credits"
    );
}

#[tokio::test]
async fn refill_happens_once_per_period_across_three_nodes() {
    let app = TestApp::spawn().await;
    let (client, _) = app
        .create_client(json!({
            "name": "daily",
            "credits": {"remaining": 3, "refill": {"amount": 10, "interval": "day"}},
        }))
        .await;
    let client = stored(&app, &client).await;
    // Three nodes' credit services, each on its own connection to the one database, with
    // a clock the test sets: the last seconds of today, then the first of tomorrow.
    let nodes: Vec<CreditLeases> = join_all((0..3).map(|_| app.db.open()))
        .await
        .into_iter()
        .map(CreditLeases::new)
        .collect();
    let today = Utc::now().date_naive();
    let at = |date: chrono::NaiveDate, h, m, s| -> DateTime<Utc> {
        date.and_hms_opt(h, m, s).unwrap().and_utc()
    };
    let tonight = at(today, 23, 59, 50);
    let tomorrow = at(today.succ_opt().unwrap(), 0, 0, 1);
    let mut spent_tonight = 0;
    for (i, node) in nodes.iter().cycle().take(6).enumerate() {
        match node.spend(&client, 1, tonight).await.unwrap() {
            Spend::Spent { .. } => spent_tonight += 1,
            Spend::Exceeded {
                retry_after_seconds,
            } => assert_eq!(retry_after_seconds, Some(10), "request {i}"),
            Spend::Unlimited => panic!("the client has credits"),
        }
    }
    assert_eq!(spent_tonight, 3);
    // Tomorrow every node leases from the refilled balance; were it refilled more than
    // once, more than 10 would be admitted.
    let mut spent_tomorrow = 0;
    for node in nodes.iter().cycle().take(30) {
        if let Spend::Spent { .. } = node.spend(&client, 1, tomorrow).await.unwrap() {
            spent_tomorrow += 1;
        }
    }
    assert_eq!(spent_tomorrow, 10);
    let stored = app.store.client(&client.client_id).await.unwrap().unwrap();
    assert_eq!(
        stored.credits_generation,
        client.credits_generation + 1,
        "one refill"
    );
    assert_eq!(
        stored.credits_period,
        Some(at(today.succ_opt().unwrap(), 0, 0, 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_given_up_midway_lose_no_credits() {
    let app = TestApp::spawn().await;
    let (client, _) = app
        .create_client(json!({"name": "impatient", "credits": {"remaining": 3_000_000}}))
        .await;
    let client = stored(&app, &client).await;
    let leases = CreditLeases::new(app.db.open().await);
    // Callers that give up after 0 to 3 ms, at every point of a lease's take from the
    // database; each spend costs enough to need a take of its own.
    let mut spent = 0;
    for i in 0..1000u64 {
        let patience = Duration::from_micros((i * 7) % 3000);
        let spend = leases.spend(&client, 2000, Utc::now());
        if let Ok(result) = tokio::time::timeout(patience, spend).await {
            assert!(matches!(result.unwrap(), Spend::Spent { .. }));
            spent += 2000;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // takes still under way finish
    leases.give_back(Utc::now(), None).await.unwrap();
    let stored = app.store.client(&client.client_id).await.unwrap().unwrap();
    assert_eq!(
        stored.credits.unwrap().remaining,
        3_000_000 - spent,
        "every credit taken and not spent went back"
    );
}

#[tokio::test]
async fn a_free_verification_reports_the_balance_after_the_lease_was_forgotten() {
    let app = TestApp::spawn().await;
    let (client, _) = app
        .create_client(json!({"name": "forgotten", "credits": {"remaining": 12}}))
        .await;
    let client = stored(&app, &client).await;
    let leases = CreditLeases::new(app.db.open().await);
    let now = Utc::now();
    assert_eq!(
        leases.spend(&client, 5, now).await.unwrap(),
        Spend::Spent { remaining: 7 }
    );
    // Idle long enough: the empty lease is forgotten. A free look still reads the balance,
    // not the 12 of the client as it was loaded.
    let later = now + chrono::Duration::seconds(60);
    leases
        .give_back(later, Some(chrono::Duration::seconds(5)))
        .await
        .unwrap();
    assert_eq!(
        leases.spend(&client, 0, later).await.unwrap(),
        Spend::Spent { remaining: 7 }
    );
}

#[tokio::test]
async fn a_refill_due_shows_before_any_node_has_made_it() {
    let app = TestApp::spawn().await;
    let (client, _) = app
        .create_client(json!({
            "name": "overnight",
            "credits": {"remaining": 4, "refill": {"amount": 90, "interval": "day"}},
        }))
        .await;
    // As if the balance was last set (and spent to 0) on an earlier day.
    let yesterday = if app.db.url.starts_with("postgres") {
        "now() - interval '1 day'".to_string()
    } else {
        format!(
            "{}",
            (Utc::now() - chrono::Duration::days(1)).timestamp_micros()
        )
    };
    app.db
        .execute(&format!(
            "UPDATE api_clients SET credits_remaining = 0, credits_period = {yesterday} \
             WHERE client_id = '{}'",
            id(&client)
        ))
        .await;
    let shown = app
        .admin_get(&format!("/admin/clients/{}", id(&client)))
        .await;
    assert_eq!(shown["credits"]["remaining"], 90);
}

/// The service on a dual-stack listener reached over IPv4 (the caller is `::ffff:127.0.0.1`),
/// behind this test as a trusted proxy when `trusted`.
async fn networked_app(trusted: bool) -> (TestApp, upstream::Upstream) {
    let upstream = upstream::start().await;
    let mut config = relay_config(&upstream.base, "http://127.0.0.1:9");
    if trusted {
        config.trusted_proxies = TrustedProxies::new(vec![parse_network("127.0.0.0/8").unwrap()]);
    }
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let app = TestApp::spawn_listening(TestDb::new().await, config, listener).await;
    (app, upstream)
}

async fn chat_from(app: &TestApp, credential: &str, forwarded_for: Option<&str>) -> StatusCode {
    let mut request = app
        .request(Method::GET, "/v1/chat/x")
        .bearer_auth(credential);
    if let Some(hop) = forwarded_for {
        request = request.header("x-forwarded-for", hop);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn networks_hold_for_keys_and_tokens_over_ipv4_mapped_addresses() {
    let (app, _upstream) = networked_app(false).await;
    let (home, home_key) = app
        .create_client(json!({"name": "home", "allowed_networks": ["127.0.0.0/8"]}))
        .await;
    let (_, away_key) = app
        .create_client(json!({"name": "away", "allowed_networks": ["10.0.0.0/8", "::1"]}))
        .await;
    // The dual-stack listener sees ::ffff:127.0.0.1, which is 127.0.0.1.
    assert!(chat_from(&app, &home_key, None).await.is_success());
    let token = app
        .request(Method::POST, "/v1/token")
        .header("x-api-key", &home_key)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::OK);
    let token = token.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(chat_from(&app, &token, None).await.is_success());
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    assert!(
        chat_from(&app, &home_key, Some("203.0.113.1"))
            .await
            .is_success()
    );

    let refused = app
        .request(Method::GET, "/v1/chat/x")
        .bearer_auth(&away_key)
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::FORBIDDEN).await;
    assert_eq!(
        chat_from(&app, &away_key, Some("10.1.2.3")).await,
        StatusCode::FORBIDDEN,
        "X-Forwarded-For is believed only from a trusted proxy"
    );
    let exchange = app
        .request(Method::POST, "/v1/token")
        .header("x-api-key", &away_key)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(exchange.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        exchange.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    // A token obtained before the networks changed is refused once they do.
    app.admin(Method::PATCH, &format!("/admin/clients/{}", id(&home)))
        .json(&json!({"allowed_networks": ["2001:db8::/32"]}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while chat_from(&app, &token, None).await != StatusCode::FORBIDDEN {
        assert!(Instant::now() < deadline, "the token still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        chat_from(&app, &home_key, None).await,
        StatusCode::FORBIDDEN
    );
    // Each refusal is counted as forbidden.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = app
            .admin_get(&format!("/admin/usage?client_id={}", id(&home)))
            .await;
        if usage["totals"]["forbidden"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", usage["totals"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_caller_is_checked() {
    let (app, _upstream) = networked_app(true).await;
    let (_, v4_key) = app
        .create_client(json!({"name": "v4", "allowed_networks": ["203.0.113.0/24"]}))
        .await;
    let (_, v6_key) = app
        .create_client(json!({"name": "v6", "allowed_networks": ["2001:db8::/32"]}))
        .await;
    let (served, forbidden) = (true, false);
    for (key, forwarded_for, expected, why) in [
        (&v4_key, Some("203.0.113.9"), served, "inside"),
        (
            &v4_key,
            Some("198.51.100.1, 203.0.113.9"),
            served,
            "the nearest untrusted hop calls",
        ),
        (
            &v4_key,
            Some("203.0.113.9, 198.51.100.1"),
            forbidden,
            "a hop it forged is not",
        ),
        (&v4_key, None, forbidden, "the proxy itself is not inside"),
        (
            &v4_key,
            Some("::ffff:203.0.113.9"),
            served,
            "IPv4-mapped is its IPv4 address",
        ),
        (&v6_key, Some("2001:db8:5::1"), served, "inside, IPv6"),
        (&v6_key, Some("2001:db9::1"), forbidden, "outside, IPv6"),
    ] {
        let status = chat_from(&app, key, forwarded_for).await;
        let refused = status == StatusCode::FORBIDDEN;
        assert!(
            status.is_success() == expected && refused != expected,
            "{why}: {status}"
        );
    }
    // Verify checks the address given in its body, in every spelling.
    for (ip, code) in [
        ("203.0.113.5", None),
        ("::ffff:203.0.113.5", None),
        ("198.51.100.1", Some("FORBIDDEN")),
    ] {
        let answer = verify_json(&app, json!({"key": v4_key, "ip": ip})).await;
        match code {
            None => assert_eq!(answer["valid"], true, "{ip}"),
            Some(code) => assert_eq!(answer["code"], code, "{ip}"),
        }
    }
    let answer = verify_json(&app, json!({"key": v6_key, "ip": "2001:db8::1"})).await;
    assert_eq!(answer["valid"], true);
}

#[tokio::test]
async fn an_admin_client_is_refused_outside_its_networks() {
    let app = TestApp::spawn_with(test_config()).await;
    let (_, admin_key) = app
        .create_client(json!({
            "name": "remote-admin", "scopes": ["admin"], "allowed_networks": ["10.0.0.0/8"],
        }))
        .await;
    let r = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
}

/// PostgreSQL only: whether `TEST_DATABASE_URL` is set (nodes share one PostgreSQL).
fn postgres() -> bool {
    let set = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
    if !set {
        eprintln!(
            "TEST_DATABASE_URL is unset: several nodes share PostgreSQL, this test checks nothing"
        );
    }
    set
}

/// `count` verifications of `key` spread over `nodes` at once; how many were valid, and how
/// many got an answer at all (a node killed meanwhile answers none).
async fn race(nodes: &[String], key: &str, count: usize) -> (usize, usize) {
    let http = reqwest::Client::new();
    let requests = (0..count).map(|i| {
        let url = format!("{}/v1/keys/verify", nodes[i % nodes.len()]);
        let http = http.clone();
        let key = key.to_string();
        async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"key": key}))
                .send()
                .await
                .ok()?;
            let body: Value = r.json().await.ok()?;
            Some(body["valid"] == true)
        }
    });
    let answers = join_all(requests).await;
    let valid = answers.iter().filter(|a| **a == Some(true)).count();
    let answered = answers.iter().filter(|a| a.is_some()).count();
    (valid, answered)
}

async fn three_nodes_race(env: &[(&str, &str)]) {
    let db = TestDb::new().await;
    let mut envs = vec![("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)];
    envs.extend_from_slice(env);
    let servers: Vec<Server> = (0..3).map(|_| Server::start(&db, &envs)).collect();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let (client, key) = create_on(
        &bases[0],
        json!({"name": "shared", "rate_limit": 1_000_000, "credits": {"remaining": 50}}),
    )
    .await;
    let (valid, answered) = race(&bases, &key, 200).await;
    assert_eq!(answered, 200);
    assert_eq!(valid, 50, "exactly the credits, across three nodes");
    for base in &bases {
        settled_remaining(base, &client, 0).await;
    }
    // Unused leases go back: 100 credits, 60 used, 40 left on every node once idle.
    let (client, key) = create_on(
        &bases[1],
        json!({"name": "partly", "rate_limit": 1_000_000, "credits": {"remaining": 100}}),
    )
    .await;
    let (valid, _) = race(&bases, &key, 60).await;
    assert_eq!(valid, 60);
    for base in &bases {
        settled_remaining(base, &client, 40).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_racing_for_fifty_credits_admit_exactly_fifty() {
    if !postgres() {
        return;
    }
    three_nodes_race(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_redis_racing_for_fifty_credits_admit_exactly_fifty() {
    if !postgres() {
        return;
    }
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI needs TEST_REDIS_URL");
        eprintln!("TEST_REDIS_URL is unset: this test checks nothing");
        return;
    };
    let prefix = format!(
        "relay-credits-{}:",
        egregore_relay::domain::random_hex(4).unwrap()
    );
    three_nodes_race(&[("REDIS_URL", &redis), ("RELAY_REDIS_PREFIX", &prefix)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_race_never_causes_over_admission() {
    if !postgres() {
        return;
    }
    let db = TestDb::new().await;
    let envs = [("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)];
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(&db, &envs)).collect();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let credits: usize = 400;
    let (client, key) = create_on(
        &bases[0],
        json!({"name": "survivor", "rate_limit": 1_000_000, "credits": {"remaining": credits}}),
    )
    .await;
    // Every node holds a lease when the third is killed.
    let (warm, _) = race(&bases, &key, 30).await;
    assert_eq!(warm, 30);
    let victim = servers.pop().unwrap();
    let racing = tokio::spawn({
        let bases = bases.clone();
        let key = key.clone();
        async move { race(&bases, &key, 900).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(victim); // SIGKILL: no give-back, no flush
    let (valid, _) = racing.await.unwrap();
    let admitted = warm + valid;
    assert!(admitted <= credits, "{admitted} admitted of {credits}");
    // Spend what is left through the survivors until nothing more is admitted: the total
    // never exceeds the credits, and what is missing is the dead node's one lease at most
    // (an eighth of what was left when it took it), stranded rather than spent twice.
    let survivors = &bases[..2];
    let mut rest = 0;
    loop {
        let (more, answered) = race(survivors, &key, 100).await;
        assert_eq!(answered, 100);
        rest += more;
        if more == 0 {
            break;
        }
    }
    let total = admitted + rest;
    eprintln!(
        "killed mid-race: {admitted} admitted during the race, {rest} after, {} stranded",
        credits - total
    );
    assert!(total <= credits, "{total} admitted of {credits}");
    assert!(
        credits - total <= credits / 8,
        "{} credits stranded: more than one lease",
        credits - total
    );
    settled_remaining(&survivors[0], &client, 0).await;
}
