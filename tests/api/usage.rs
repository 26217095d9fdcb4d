//! Usage analytics end to end: every use counted once by client, endpoint and outcome, on one
//! node and across three sharing a database; zero-filled UTC buckets, CSV, top clients,
//! validation, retention, a flush that fails while the database is away, the shutdown flush.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use egregore_relay::config::ServeConfig;
use egregore_relay::domain::client::{Client, ClientDraft, ClientId, NewClient};
use egregore_relay::domain::usage::{Counters, Granularity, Outcome, retention_cutoffs};
use egregore_relay::service::meter::{Endpoint, Meter, MeterMetrics};
use egregore_relay::storage::usage::{SeriesQuery, UsageBatch, UsageRow};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::relay::relay_config;
use crate::support::{TestApp, TestDb, assert_problem, pointers, random_hex};
use crate::upstream;

const OUTCOMES: [&str; 8] = [
    "allowed",
    "rate_limited",
    "usage_exceeded",
    "forbidden",
    "disabled",
    "expired",
    "upstream_error",
    "invalid",
];

/// Relay settings that write counts every 100 ms, so tests wait little.
async fn config(upstream: &str) -> ServeConfig {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", dead.local_addr().unwrap());
    let mut config = relay_config(upstream, &dead);
    config.usage.flush_interval = Duration::from_millis(100);
    config
}

/// The totals of `GET /admin/usage?query`, as `{outcome: n}` with the zeros left out.
async fn totals(app: &TestApp, query: &str) -> Value {
    let r = app
        .admin(Method::GET, &format!("/admin/usage?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    let body: Value = r.json().await.unwrap();
    nonzero(&body["totals"])
}

fn nonzero(counters: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for outcome in OUTCOMES {
        let n = counters[outcome].as_u64().unwrap();
        if n > 0 {
            out.insert(outcome.into(), n.into());
        }
    }
    Value::Object(out)
}

/// Waits (up to 10 s, the contract's bound) until `query`'s totals are `expected`.
async fn wait_for_totals(app: &TestApp, query: &str, expected: Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = totals(app, query).await;
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: expected {expected}, saw {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_with(app: &TestApp, path: &str, credential: &str) -> StatusCode {
    app.request(Method::GET, path)
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
        .status()
}

async fn exchange(app: &TestApp, key: &str, scope: Option<&str>) -> reqwest::Response {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    app.request(Method::POST, "/v1/token")
        .header("x-api-key", key)
        .form(&form)
        .send()
        .await
        .unwrap()
}

fn id(client: &Value) -> String {
    client["client_id"].as_str().unwrap().to_string()
}

/// A key of the right shape and checksum that names no client.
fn unknown_key() -> String {
    let key = egregore_relay::domain::api_key::generate().unwrap();
    key.plain.expose().to_string()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test]
async fn a_mixed_workload_is_counted_exactly_by_client_endpoint_and_outcome() {
    let upstream = upstream::start().await;
    let app = TestApp::spawn_with(config(&upstream.base).await).await;
    let (a, key_a) = app
        .create_client(json!({"name": "alpha", "scopes": ["chat"], "rate_limit": 1000}))
        .await;
    let (b, key_b) = app
        .create_client(json!({"name": "bravo", "rate_limit": 2}))
        .await;
    let (c, key_c) = app.create_named("charlie").await;
    let (d, key_d) = app.create_named("delta").await;
    // Expired behind the API's back (it refuses a past expiry), before anything cached delta.
    let past = if app.db.url.starts_with("postgres") {
        "'2001-01-01T00:00:00Z'"
    } else {
        "1000000"
    };
    app.db
        .execute(&format!(
            "UPDATE api_clients SET expires_at = {past} WHERE client_id = '{}'",
            id(&d)
        ))
        .await;
    app.admin(Method::POST, &format!("/admin/clients/{}/disable", id(&c)))
        .send()
        .await
        .unwrap();

    // alpha: forwarded (whatever the upstream answers), a scope it lacks, a dead upstream,
    // a token issued and one refused for its scope, verifications, a request with the token.
    for _ in 0..4 {
        assert!(get_with(&app, "/v1/chat/x", &key_a).await.is_success());
    }
    for _ in 0..2 {
        assert_eq!(
            get_with(&app, "/v1/history/x", &key_a).await,
            StatusCode::FORBIDDEN
        );
    }
    for _ in 0..3 {
        assert_eq!(
            get_with(&app, "/v1/dead/x", &key_a).await,
            StatusCode::BAD_GATEWAY
        );
    }
    let token = exchange(&app, &key_a, None).await;
    assert_eq!(token.status(), StatusCode::OK);
    let token = token.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        exchange(&app, &key_a, Some("history")).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert!(get_with(&app, "/v1/chat/x", &token).await.is_success());
    for _ in 0..2 {
        assert_eq!(app.verify(&key_a).await["valid"], true);
    }
    // bravo: two verifications within its limit of 2, then two refused.
    for expected in [true, true, false, false] {
        assert_eq!(app.verify(&key_b).await["valid"], expected);
    }
    // charlie (disabled) at verify, relay and token; delta (expired) at verify and relay.
    assert_eq!(app.verify(&key_c).await["code"], "DISABLED");
    for _ in 0..2 {
        assert_eq!(
            get_with(&app, "/v1/chat/x", &key_c).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        exchange(&app, &key_c, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.verify(&key_d).await["code"], "EXPIRED");
    assert_eq!(
        get_with(&app, "/v1/history/x", &key_d).await,
        StatusCode::UNAUTHORIZED
    );
    // Credentials naming nobody: unknown keys, a malformed one, a forged token.
    for _ in 0..3 {
        assert_eq!(
            get_with(&app, "/v1/chat/x", &unknown_key()).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get_with(&app, "/v1/chat/x", "eyJhbGciOi.forged.token").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.verify(&unknown_key()).await["code"], "NOT_FOUND");
    assert_eq!(app.verify("eg_short").await["code"], "NOT_FOUND");
    assert_eq!(
        exchange(&app, &unknown_key(), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // No credential at all is no use of one; admin calls are not counted.
    assert_eq!(
        app.request(Method::GET, "/v1/chat/x")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let (a, b, c, d) = (id(&a), id(&b), id(&c), id(&d));
    wait_for_totals(
        &app,
        "",
        json!({"allowed": 10, "rate_limited": 2, "forbidden": 3,
        "disabled": 4, "expired": 2, "upstream_error": 3, "invalid": 7}),
    )
    .await;
    wait_for_totals(
        &app,
        &format!("client_id={a}"),
        json!({"allowed": 8, "forbidden": 3, "upstream_error": 3}),
    )
    .await;
    for (endpoint, expected) in [
        ("/v1/chat", json!({"allowed": 5})),
        ("/v1/history", json!({"forbidden": 2})),
        ("/v1/dead", json!({"upstream_error": 3})),
        ("token", json!({"allowed": 1, "forbidden": 1})),
        ("verify", json!({"allowed": 2})),
    ] {
        let query = format!("client_id={a}&endpoint={}", urlencode(endpoint));
        assert_eq!(totals(&app, &query).await, expected, "{endpoint}");
    }
    assert_eq!(
        totals(&app, &format!("client_id={b}")).await,
        json!({"allowed": 2, "rate_limited": 2})
    );
    assert_eq!(
        totals(&app, &format!("client_id={c}")).await,
        json!({"disabled": 4})
    );
    assert_eq!(
        totals(&app, &format!("client_id={d}")).await,
        json!({"expired": 2})
    );
    assert_eq!(
        totals(&app, "endpoint=%2Fv1%2Fchat").await,
        json!({"allowed": 5, "disabled": 2, "invalid": 4})
    );

    let top = app.admin_get("/admin/usage/clients").await;
    let ranked: Vec<(String, u64)> = top["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["client_id"].as_str().unwrap().to_string(),
                c["total"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut tied = [(b.clone(), 4), (c.clone(), 4)];
    tied.sort();
    let expected = [vec![(a.clone(), 14)], tied.to_vec(), vec![(d.clone(), 2)]].concat();
    assert_eq!(ranked, expected);
    assert_eq!(top["clients"][0]["name"], "alpha");
    assert_eq!(top["clients"][0]["forbidden"], 3);
    let top_one = app
        .admin_get("/admin/usage/clients?limit=1&endpoint=verify")
        .await;
    assert_eq!(top_one["clients"].as_array().unwrap().len(), 1);
    assert_eq!(top_one["clients"][0]["client_id"], b.as_str());

    // Prometheus stays free of per-client series.
    let metrics = app.metrics().await;
    for client in [&a, &b, &c, &d] {
        assert!(!metrics.contains(client.as_str()), "{client} in /metrics");
    }
}

#[tokio::test]
async fn malformed_credentials_and_keys_under_another_clients_id_count_as_invalid() {
    let upstream = upstream::start().await;
    let app = TestApp::spawn_with(config(&upstream.base).await).await;
    let (owner, _) = app.create_named("owner").await;
    let (off, key_off) = app.create_named("switched-off").await;
    app.admin(
        Method::POST,
        &format!("/admin/clients/{}/disable", id(&off)),
    )
    .send()
    .await
    .unwrap();
    // At a relay route: an Authorization header of another scheme.
    let digest = app
        .request(Method::GET, "/v1/chat/x")
        .header("authorization", "Digest username=x")
        .send()
        .await
        .unwrap();
    assert_problem(digest, StatusCode::UNAUTHORIZED).await;
    // At the token endpoint: Basic that does not decode, and a disabled client's key sent
    // under another client's id (a wrong secret for that client, not a use of its own).
    let form = [("grant_type", "client_credentials")];
    let garbled = app
        .request(Method::POST, "/v1/token")
        .header("authorization", "Basic %%%")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), StatusCode::UNAUTHORIZED);
    let borrowed = app
        .request(Method::POST, "/v1/token")
        .basic_auth(id(&owner), Some(&key_off))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(borrowed.status(), StatusCode::UNAUTHORIZED);
    wait_for_totals(&app, "", json!({"invalid": 3})).await;
    assert_eq!(totals(&app, "endpoint=token").await, json!({"invalid": 2}));
    assert_eq!(
        totals(&app, &format!("client_id={}", id(&off))).await,
        json!({})
    );
}

fn urlencode(text: &str) -> String {
    text.replace('/', "%2F")
}

#[tokio::test]
async fn buckets_are_aligned_to_utc_zero_filled_and_the_same_as_csv() {
    let upstream = upstream::start().await;
    let app = TestApp::spawn_with(config(&upstream.base).await).await;
    let (client, key) = app.create_named("buckets").await;
    for _ in 0..3 {
        app.verify(&key).await;
    }
    let client = id(&client);
    wait_for_totals(&app, &format!("client_id={client}"), json!({"allowed": 3})).await;

    // Ten minutes back, written with a +02:00 offset (its `+` escaped, as a client should).
    let now = Utc::now();
    let from = (now - chrono::Duration::minutes(10))
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Secs, false);
    let query = format!("client_id={client}&from={}", from.replace('+', "%2B"));
    let body = app.admin_get(&format!("/admin/usage?{query}")).await;
    assert_eq!(body["granularity"], "minute");
    let buckets = body["buckets"].as_array().unwrap();
    assert!((10..=12).contains(&buckets.len()), "{}", buckets.len());
    let starts: Vec<DateTime<Utc>> = buckets
        .iter()
        .map(|b| b["start"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(starts.iter().all(|s| s.timestamp() % 60 == 0), "{starts:?}");
    assert!(starts.windows(2).all(|w| (w[1] - w[0]).num_seconds() == 60));
    assert_eq!(
        body["from"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        starts[0]
    );
    let allowed: u64 = buckets.iter().map(|b| b["allowed"].as_u64().unwrap()).sum();
    assert_eq!(allowed, 3);
    let empty = buckets.iter().filter(|b| nonzero(b) == json!({})).count();
    assert!(
        empty >= buckets.len() - 2,
        "every other bucket is present with zeros"
    );

    let csv = app
        .admin(Method::GET, &format!("/admin/usage?{query}"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("start,{}", OUTCOMES.join(","))
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), buckets.len());
    for (row, bucket) in rows.iter().zip(buckets) {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(
            fields[0].parse::<DateTime<Utc>>().unwrap(),
            bucket["start"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        for (field, outcome) in fields[1..].iter().zip(OUTCOMES) {
            assert_eq!(
                field.parse::<u64>().unwrap(),
                bucket[outcome].as_u64().unwrap()
            );
        }
    }

    // The hour and day series hold the same uses, in one bucket each.
    for granularity in ["hour", "day"] {
        let body = app
            .admin_get(&format!(
                "/admin/usage?client_id={client}&granularity={granularity}&from={}",
                rfc3339(now - chrono::Duration::hours(1)).replace('+', "%2B")
            ))
            .await;
        let nonempty: Vec<Value> = body["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(nonzero)
            .filter(|c| c != &json!({}))
            .collect();
        assert_eq!(
            nonempty
                .iter()
                .map(|c| c["allowed"].as_u64().unwrap())
                .sum::<u64>(),
            3
        );
    }
}

#[tokio::test]
async fn bad_usage_queries_are_400s_naming_the_parameter_and_unknown_clients_404() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("not-admin").await;
    for (query, pointer) in [
        ("from=yesterday", "from"),
        ("to=2026-12-01T00:00:00", "to"),
        ("granularity=week", "granularity"),
        (
            "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&granularity=minute",
            "granularity",
        ),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("endpoint=chat", "endpoint"),
    ] {
        let r = app
            .admin(Method::GET, &format!("/admin/usage?{query}"))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(pointers(&problem), vec![pointer.to_string()], "{query}");
    }
    let r = app
        .admin(Method::GET, "/admin/usage?from=x&granularity=y")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        pointers(&problem),
        vec!["from".to_string(), "granularity".to_string()]
    );
    for query in ["bucket=minute", "limit=5"] {
        let r = app
            .admin(Method::GET, &format!("/admin/usage?{query}"))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::BAD_REQUEST).await;
    }
    for query in ["limit=0", "limit=101", "limit=ten", "from=nope"] {
        let r = app
            .admin(Method::GET, &format!("/admin/usage/clients?{query}"))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::BAD_REQUEST).await;
    }
    let r = app
        .admin(
            Method::GET,
            "/admin/usage?client_id=client_0000000000000000",
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let r = app
        .admin(Method::GET, "/admin/usage?client_id=a%00b")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::BAD_REQUEST).await;
    // Admins only.
    let r = app
        .request(Method::GET, "/admin/usage")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    let r = app
        .request(Method::GET, "/admin/usage/clients")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let ok = app
        .admin_get(&format!("/admin/usage?client_id={}", id(&client)))
        .await;
    assert_eq!(ok["granularity"], "hour");
    assert_eq!(
        ok["buckets"].as_array().unwrap().len(),
        25,
        "24 h by hour, the current one partial"
    );
}

#[tokio::test]
async fn three_nodes_on_one_database_count_every_use_once() {
    let upstream = upstream::start().await;
    let first = TestApp::spawn_with(config(&upstream.base).await).await;
    let second = TestApp::spawn_sharing(&first, config(&upstream.base).await).await;
    let third = TestApp::spawn_sharing(&first, config(&upstream.base).await).await;
    let mut clients = Vec::new();
    for i in 0..12 {
        let (client, key) = first
            .create_client(json!({"name": format!("n{i}"), "rate_limit": 10_000}))
            .await;
        clients.push((id(&client), key));
    }
    let nodes = [&first, &second, &third];
    let work = nodes.iter().map(|node| {
        let clients = &clients;
        async move {
            for round in 0..10 {
                let requests = clients.iter().map(|(_, key)| async move {
                    let path = if round % 2 == 0 {
                        "/v1/chat/x"
                    } else {
                        "/v1/history/x"
                    };
                    assert!(get_with(node, path, key).await.is_success());
                });
                futures_util::future::join_all(requests).await;
                assert_eq!(
                    get_with(node, "/v1/chat/x", &unknown_key()).await,
                    StatusCode::UNAUTHORIZED
                );
            }
        }
    });
    futures_util::future::join_all(work).await;
    // 3 nodes × 10 rounds × 12 clients, and 3 × 10 unknown keys.
    for node in nodes {
        wait_for_totals(node, "", json!({"allowed": 360, "invalid": 30})).await;
    }
    for (client, _) in &clients {
        assert_eq!(
            totals(&third, &format!("client_id={client}")).await,
            json!({"allowed": 30})
        );
        let chat = format!("client_id={client}&endpoint=%2Fv1%2Fchat");
        assert_eq!(totals(&second, &chat).await, json!({"allowed": 15}));
    }
}

/// Minute, hour and day rows for one client at `bucket`, one allowed use each.
fn batch_at(client: &str, times: &[(Granularity, DateTime<Utc>)]) -> UsageBatch {
    let row = |bucket| UsageRow {
        client_id: client.into(),
        bucket,
        endpoint: "verify".into(),
        counters: Counters::of(Outcome::Allowed),
    };
    let mut tables: Vec<(Granularity, Vec<UsageRow>)> =
        Granularity::ALL.iter().map(|g| (*g, Vec::new())).collect();
    for (granularity, at) in times {
        let rows = &mut tables.iter_mut().find(|(g, _)| g == granularity).unwrap().1;
        rows.push(row(granularity.floor(*at)));
        rows.sort_by_key(|r| r.bucket);
    }
    UsageBatch {
        id: random_hex(8),
        at: Utc::now(),
        tables,
    }
}

#[tokio::test]
async fn retention_forgets_old_buckets_by_the_clock_it_is_given_and_keeps_the_rest() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let now: DateTime<Utc> = "2026-06-15T12:00:00Z".parse().unwrap();
    let days = chrono::Duration::days;
    let old = [
        (Granularity::Minute, now - days(4)),
        (Granularity::Hour, now - days(130)),
        (Granularity::Day, now - days(4 * 366)),
    ];
    let kept = [
        (Granularity::Minute, now - chrono::Duration::hours(1)),
        (Granularity::Hour, now - days(80)),
        (Granularity::Day, now - days(2 * 366)),
    ];
    let batch = batch_at("client_retained", &[old, kept].concat());
    assert!(store.record_usage(&batch).await.unwrap());
    assert!(
        !store.record_usage(&batch).await.unwrap(),
        "a batch id counts once"
    );
    store.prepare_usage(now).await.unwrap();
    store
        .prune_usage(&retention_cutoffs(now), now - days(2))
        .await
        .unwrap();
    for ((granularity, gone), (_, still)) in old.into_iter().zip(kept) {
        let range = egregore_relay::domain::usage::BucketRange {
            start: granularity.floor(gone),
            end: now,
            granularity,
        };
        let query = SeriesQuery {
            client_id: "client_retained",
            endpoint: None,
            range,
        };
        let rows = store.usage_series(&query).await.unwrap();
        let starts: Vec<DateTime<Utc>> = rows.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![granularity.floor(still)], "{granularity:?}");
        assert_eq!(rows[0].1.get(Outcome::Allowed), 1, "counted once");
    }
    // The retry guard forgets batch ids after their own retention.
    store
        .prune_usage(&retention_cutoffs(now), Utc::now() + days(1))
        .await
        .unwrap();
    assert!(store.record_usage(&batch).await.unwrap());
}

#[tokio::test]
async fn a_batch_from_more_clients_than_one_statement_holds_is_written_whole() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let at: DateTime<Utc> = "2026-06-15T12:00:30Z".parse().unwrap();
    let minute = Granularity::Minute.floor(at);
    // Each client its own count, so a row bound to the wrong client would show.
    let ids: Vec<String> = (0..1201).map(|i| format!("client_many_{i:05}")).collect();
    let rows = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut counters = Counters::default();
            counters.add(Outcome::Allowed, i as u64 + 1);
            counters.add(Outcome::Invalid, 2);
            UsageRow {
                client_id: id.as_str().into(),
                bucket: minute,
                endpoint: "verify".into(),
                counters,
            }
        })
        .collect();
    let batch = UsageBatch {
        id: random_hex(8),
        at: Utc::now(),
        tables: vec![(Granularity::Minute, rows)],
    };
    assert!(store.record_usage(&batch).await.unwrap());
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let range = egregore_relay::domain::usage::BucketRange {
        start: minute,
        end: minute + chrono::Duration::minutes(1),
        granularity: Granularity::Minute,
    };
    let mut read = store.usage_series_of_clients(&names, range).await.unwrap();
    read.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(read.len(), ids.len());
    for (i, (client, bucket, counters)) in read.iter().enumerate() {
        assert_eq!((client, *bucket), (&ids[i], minute));
        assert_eq!(counters.get(Outcome::Allowed), i as u64 + 1, "{client}");
        assert_eq!(counters.get(Outcome::Invalid), 2, "{client}");
    }
}

#[tokio::test]
async fn a_flush_larger_than_one_write_counts_every_client_once() {
    let db = TestDb::new().await;
    let store = db.open().await;
    let meter = Meter::new(true, [], 10_000, MeterMetrics::default()).unwrap();
    let at: DateTime<Utc> = Utc::now();
    // 2 100 clients give 6 303 rows (minute, hour and day, and all clients'): two writes.
    let clients: Vec<Client> = (0..2100)
        .map(|i| {
            let now = Utc::now();
            let draft = ClientDraft {
                name: format!("m{i}"),
                ..ClientDraft::default()
            };
            let key = egregore_relay::domain::api_key::generate().unwrap();
            let mut client = NewClient::validate(draft, now).unwrap().into_client(
                ClientId::generate().unwrap(),
                &key,
                now,
            );
            client.row_id = i + 1;
            client
        })
        .collect();
    // Each client its own count, so a count written to the wrong client would show.
    for (i, client) in clients.iter().enumerate() {
        for _ in 0..=i % 3 {
            meter.count(Some(client), Endpoint::Verify, Outcome::Allowed, at);
        }
    }
    meter.flush(store.as_ref(), at).await.unwrap();
    assert_eq!(
        db.scalar("SELECT count(*) FROM usage_batches").await,
        2,
        "written in two transactions, each under its own batch id"
    );
    let ids: Vec<&str> = clients.iter().map(|c| c.client_id.as_str()).collect();
    for granularity in Granularity::ALL {
        let start = granularity.floor(at);
        let range = egregore_relay::domain::usage::BucketRange {
            start,
            end: start + chrono::Duration::seconds(granularity.seconds()),
            granularity,
        };
        let read = store.usage_series_of_clients(&ids, range).await.unwrap();
        assert_eq!(read.len(), clients.len(), "{granularity:?}");
        for (client, _, counters) in read {
            let i = ids.iter().position(|id| *id == client).unwrap();
            assert_eq!(
                counters.get(Outcome::Allowed),
                (i % 3 + 1) as u64,
                "{client}"
            );
        }
        let everyone = SeriesQuery {
            client_id: "*",
            endpoint: None,
            range,
        };
        let all = store.usage_series(&everyone).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.get(Outcome::Allowed), 4200, "{granularity:?}");
    }
}

/// Makes the database refuse the relay's connections (PostgreSQL) or its writes (SQLite)
/// until the returned guard is released.
enum Outage {
    Postgres { server: String, name: String },
    Sqlite(sqlx::SqliteConnection),
}

impl Outage {
    async fn start(db: &TestDb) -> Outage {
        use sqlx::Connection;
        if db.url.starts_with("postgres") {
            let server = std::env::var("TEST_DATABASE_URL").unwrap();
            let name = db.url.rsplit('/').next().unwrap().to_string();
            let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
            sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&name)
            .execute(&mut conn)
            .await
            .unwrap();
            Outage::Postgres { server, name }
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            Outage::Sqlite(conn)
        }
    }

    async fn end(self) {
        use sqlx::Connection;
        match self {
            Outage::Postgres { server, name } => {
                let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
                sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            Outage::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test]
async fn counts_taken_while_the_database_is_away_arrive_once_it_is_back() {
    let upstream = upstream::start().await;
    let app = TestApp::spawn_with(config(&upstream.base).await).await;
    let (client, key) = app.create_named("outage").await;
    let client = id(&client);
    // The change log names the new client once (within a second); the key cached after that
    // stays cached through the outage.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.verify(&key).await;
    wait_for_totals(&app, &format!("client_id={client}"), json!({"allowed": 1})).await;

    let outage = Outage::start(&app.db).await;
    // The key is cached and the caller is the admin token: served without the database.
    for _ in 0..5 {
        assert_eq!(app.verify(&key).await["valid"], true);
    }
    // What needs the database is told it is unavailable (503), not that it failed (500).
    let needs_db = if app.db.url.starts_with("postgres") {
        app.admin(Method::GET, "/admin/clients")
    } else {
        app.admin(Method::POST, "/admin/clients")
            .json(&json!({"name": "blocked"}))
    };
    assert_problem(
        needs_db.send().await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&app.metrics().await, "relay_usage_flush_failures_total") == 0 {
        assert!(
            Instant::now() < deadline,
            "no flush failed during the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outage.end().await;
    wait_for_totals(&app, &format!("client_id={client}"), json!({"allowed": 6})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        totals(&app, &format!("client_id={client}")).await,
        json!({"allowed": 6}),
        "nothing counted twice"
    );
}

#[tokio::test]
async fn a_graceful_shutdown_writes_the_counts_held_in_memory() {
    let mut config =
        egregore_relay::config::ServeConfig::with_admin_token(crate::support::ADMIN_TOKEN);
    config.usage.flush_interval = Duration::from_secs(3600);
    let mut app = TestApp::spawn_with(config).await;
    let (client, key) = app.create_named("last-words").await;
    for _ in 0..4 {
        app.verify(&key).await;
    }
    assert_eq!(
        totals(&app, &format!("client_id={}", id(&client))).await,
        json!({}),
        "nothing written before"
    );
    app.stop().await;
    let reports = egregore_relay::service::usage::UsageReports::new(app.store.clone());
    let request = egregore_relay::service::usage::SeriesRequest {
        client_id: Some(id(&client)),
        ..Default::default()
    };
    let series = reports
        .series(request, egregore_relay::domain::now())
        .await
        .unwrap();
    assert_eq!(series.totals.get(Outcome::Allowed), 4);
    assert_eq!(series.totals.total(), 4);
}
