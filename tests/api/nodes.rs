//! Several `relay serve` processes on one PostgreSQL database (and one Redis): a change made
//! through any node is in force on every node within a second; startup together is safe; a
//! node rides out a short database outage. PostgreSQL only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binary::Server;
use crate::support::{ADMIN_TOKEN, TestDb};

fn postgres_db_url() -> Option<()> {
    let set = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
    if !set {
        eprintln!(
            "TEST_DATABASE_URL is unset: several nodes share PostgreSQL, this test checks nothing"
        );
    }
    set.then_some(())
}

struct Node {
    server: Server,
    http: reqwest::Client,
}

impl Node {
    fn start(db: &TestDb, extra: &[(&str, &str)]) -> Node {
        let mut envs = vec![
            ("RELAY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RELAY_ISSUER", "http://relay.test"),
        ];
        envs.extend_from_slice(extra);
        Node {
            server: Server::start(db, &envs),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.server.base);
        let r = self
            .http
            .request(method, url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn verify(&self, key: &str) -> Value {
        self.post("/v1/keys/verify", json!({"key": key})).await
    }

    async fn introspect(&self, token: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/introspect", self.server.base))
            .bearer_auth(ADMIN_TOKEN)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn token(&self, key: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v1/token", self.server.base))
            .header("x-api-key", key)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Polls `check` every 10 ms until it holds; returns how long that took (panics after 1 s).
async fn within_a_second<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: not in force after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_node_is_in_force_on_the_others_within_a_second() {
    if postgres_db_url().is_none() {
        return;
    }
    let db = TestDb::new().await;
    let nodes = [
        Node::start(&db, &[]),
        Node::start(&db, &[]),
        Node::start(&db, &[]),
    ];
    let [a, b, c] = &nodes;
    let created = a
        .post(
            "/admin/clients",
            json!({"name": "shared", "rate_limit": 1000000}),
        )
        .await;
    let id = created["client"]["client_id"].as_str().unwrap().to_string();
    let key = created["api_key"].as_str().unwrap().to_string();
    let token = a.token(&key).await;
    for n in [b, c] {
        assert_eq!(n.verify(&key).await["valid"], true); // cached on every node now
        assert_eq!(n.introspect(&token).await["active"], true);
    }

    a.post(&format!("/admin/clients/{id}/disable"), json!({}))
        .await;
    for n in [b, c] {
        within_a_second("disable (key)", || async {
            n.verify(&key).await["code"] == "DISABLED"
        })
        .await;
        within_a_second("disable (token)", || async {
            n.introspect(&token).await["active"] == false
        })
        .await;
    }
    b.post(&format!("/admin/clients/{id}/enable"), json!({}))
        .await;
    for n in [a, c] {
        within_a_second("enable", || async { n.verify(&key).await["valid"] == true }).await;
        assert_eq!(
            n.introspect(&token).await["active"],
            false,
            "enabling revives no token"
        );
    }

    // Scope change through C.
    c.send(
        reqwest::Method::PATCH,
        &format!("/admin/clients/{id}"),
        json!({"scopes": ["history"]}),
    )
    .await;
    for n in [a, b] {
        within_a_second("scopes", || async {
            n.verify(&key).await["scopes"] == json!(["history"])
        })
        .await;
    }

    // Regeneration without grace through B: the old key and its tokens end everywhere.
    let new_token = a.token(&key).await;
    let regenerated = b
        .post(&format!("/admin/clients/{id}/regenerate"), json!({}))
        .await;
    let new_key = regenerated["api_key"].as_str().unwrap().to_string();
    for n in [a, c] {
        within_a_second("regenerate (key)", || async {
            n.verify(&key).await["code"] == "NOT_FOUND"
        })
        .await;
        within_a_second("regenerate (token)", || async {
            n.introspect(&new_token).await["active"] == false
        })
        .await;
        assert_eq!(n.verify(&new_key).await["valid"], true);
    }

    // Deletion through A.
    a.send(
        reqwest::Method::DELETE,
        &format!("/admin/clients/{id}"),
        Value::Null,
    )
    .await;
    for n in [b, c] {
        within_a_second("delete", || async {
            n.verify(&new_key).await["code"] == "NOT_FOUND"
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_delay_over_many_changes_stays_under_a_second() {
    if postgres_db_url().is_none() {
        return;
    }
    let samples: usize = std::env::var("PROPAGATION_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let db = TestDb::new().await;
    let (a, b) = (Node::start(&db, &[]), Node::start(&db, &[]));
    let created = a
        .post(
            "/admin/clients",
            json!({"name": "p", "rate_limit": 1000000}),
        )
        .await;
    let id = created["client"]["client_id"].as_str().unwrap().to_string();
    let key = created["api_key"].as_str().unwrap().to_string();
    b.verify(&key).await;
    let mut delays = Vec::new();
    for i in 0..samples {
        let name = format!("p{i}");
        a.send(
            reqwest::Method::PATCH,
            &format!("/admin/clients/{id}"),
            json!({"name": name}),
        )
        .await;
        delays.push(
            within_a_second("rename", || async {
                b.verify(&key).await["name"] == name.as_str()
            })
            .await,
        );
    }
    delays.sort();
    eprintln!(
        "propagation over {samples} changes: median {:?}, max {:?}",
        delays[samples / 2],
        delays[samples - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_and_create_one_admin_and_one_signing_key() {
    if postgres_db_url().is_none() {
        return;
    }
    let db = TestDb::new().await;
    // No admin token: each node would bootstrap an admin if it found none.
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                let db = TestDb::shared(&url);
                Server::start(&db, &[("RELAY_ISSUER", "http://relay.test")])
            })
        })
        .collect();
    let servers: Vec<Server> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    let printed: usize = servers
        .into_iter()
        .map(|s| s.terminate().0.matches("eg_").count())
        .sum();
    assert_eq!(
        printed, 1,
        "exactly one node created and printed an admin key"
    );
    let store = db.open().await;
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.retired_at.is_none()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_enforce_one_limit() {
    if postgres_db_url().is_none() {
        return;
    }
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("TEST_REDIS_URL is unset: this test checks nothing");
        return;
    };
    let prefix = format!("relay-nodes-{}:", std::process::id());
    let db = TestDb::new().await;
    let env = [
        ("REDIS_URL", redis.as_str()),
        ("RELAY_REDIS_PREFIX", prefix.as_str()),
    ];
    let nodes = [
        Node::start(&db, &env),
        Node::start(&db, &env),
        Node::start(&db, &env),
    ];
    for n in &nodes {
        let ready = within_a_second_or_five(|| async {
            n.http
                .get(format!("{}/readyz", n.server.base))
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await;
        assert!(ready, "node never connected to Redis");
    }
    let created = nodes[0]
        .post(
            "/admin/clients",
            json!({"name": "limited", "rate_limit": 9}),
        )
        .await;
    let key = created["api_key"].as_str().unwrap().to_string();
    let mut valid = 0;
    for i in 0..30 {
        valid += usize::from(nodes[i % 3].verify(&key).await["valid"] == true);
    }
    assert_eq!(valid, 9, "three nodes together admitted the limit once");
}

async fn within_a_second_or_five<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A TCP forwarder to PostgreSQL that the test can cut, as a network outage would.
struct Outage {
    port: u16,
    down: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
    /// Reads from the node's side: one per message batch the node flushes to PostgreSQL.
    writes: Arc<AtomicUsize>,
}

impl Outage {
    async fn start(target: String) -> Outage {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(tokio::sync::Notify::new());
        let writes = Arc::new(AtomicUsize::new(0));
        let (down2, cut2, writes2) = (down.clone(), cut.clone(), writes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if down2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let (target, cut, writes) = (target.clone(), cut2.clone(), writes2.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut node_side, mut to_node) = inbound.split();
                    let (mut from_db, mut db_side) = outbound.split();
                    let upward = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match node_side.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    writes.fetch_add(1, Ordering::SeqCst);
                                    if db_side.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = upward => {}
                        _ = tokio::io::copy(&mut from_db, &mut to_node) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Outage {
            port,
            down,
            cut,
            writes,
        }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

/// A node reaching `db`'s PostgreSQL through a forwarder the test can cut, with `extra`
/// settings, and a client of its own (no rate limit to speak of) with its key.
async fn node_behind_a_forwarder(db: &TestDb, extra: &[(&str, &str)]) -> (Outage, Node, String) {
    let (host_port, rest) = {
        let after_at = db.url.split_once('@').unwrap().1;
        let (hp, rest) = after_at.split_once('/').unwrap();
        (hp.to_string(), rest.to_string())
    };
    let outage = Outage::start(host_port.clone()).await;
    let url = db.url.replace(
        &format!("@{host_port}/"),
        &format!("@127.0.0.1:{}/", outage.port),
    );
    assert!(url.ends_with(&rest));
    let mut envs = vec![("DATABASE_URL", url.as_str())];
    envs.extend_from_slice(extra);
    let node = Node::start(db, &envs);
    let created = node
        .post(
            "/admin/clients",
            json!({"name": "cached", "rate_limit": 1000000}),
        )
        .await;
    let key = created["api_key"].as_str().unwrap().to_string();
    (outage, node, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_a_database_outage_and_recovers_by_itself() {
    if postgres_db_url().is_none() {
        return;
    }
    let db = TestDb::new().await;
    let (outage, node, key) =
        node_behind_a_forwarder(&db, &[("RELAY_DB_MAX_CONNECTIONS", "2")]).await;
    assert_eq!(node.verify(&key).await["valid"], true);

    outage.cut();
    for _ in 0..20 {
        // A recently verified key keeps working: no 5xx, no database round trip.
        assert_eq!(node.verify(&key).await["valid"], true);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An unknown key fails closed: never valid.
    let r = node
        .http
        .post(format!("{}/v1/keys/verify", node.server.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"key": "eg_AAAAAAAAAAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa000000"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(body["valid"] != true, "{status} {body}");

    outage.restore();
    // Back without a restart: a client created now verifies.
    let recovered = within_a_second_or_five(|| async {
        let r = node
            .http
            .post(format!("{}/admin/clients", node.server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "after"}))
            .send()
            .await
            .unwrap();
        r.status() == 201
    })
    .await;
    assert!(recovered, "the node did not recover by itself");
    // Cache misses are read again: the connections that failed in the outage were replaced.
    for _ in 0..4 {
        let fresh = node.post("/admin/clients", json!({"name": "fresh"})).await;
        let key = fresh["api_key"].as_str().unwrap();
        assert_eq!(node.verify(key).await["valid"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_miss_costs_one_round_trip_to_postgresql() {
    if postgres_db_url().is_none() {
        return;
    }
    let db = TestDb::new().await;
    let (forwarder, node, key) = node_behind_a_forwarder(
        &db,
        &[("RELAY_CACHE_TTL", "0"), ("RELAY_DB_MAX_CONNECTIONS", "2")],
    )
    .await;
    for _ in 0..4 {
        // Connections opened, the lookup prepared on each.
        assert_eq!(node.verify(&key).await["valid"], true);
    }
    let before = forwarder.writes();
    for _ in 0..100 {
        assert_eq!(node.verify(&key).await["valid"], true);
    }
    // One write per lookup, and a few from background tasks (the change log's poll); a ping
    // before or after each lookup would make it two or three.
    let writes = forwarder.writes() - before;
    assert!(
        (100..130).contains(&writes),
        "{writes} writes to PostgreSQL for 100 cache misses"
    );
}

/// One request of the mixed traffic, and what came of it.
struct Seen {
    kind: &'static str,
    sent: Instant,
    answered: Instant,
    status: u16,
    retry_after: bool,
    created: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_rides_out_database_outages_and_readyz_tells_the_truth() {
    if postgres_db_url().is_none() {
        return;
    }
    let upstream = crate::upstream::start().await;
    let db = TestDb::new().await;
    let (outage, node, key) =
        node_behind_a_forwarder(&db, &[("RELAY_UPSTREAM", upstream.base.as_str())]).await;
    assert_eq!(node.verify(&key).await["valid"], true);
    let base = node.server.base.clone();

    // Admin writes, verification, relayed requests, token exchanges and /readyz, four at a
    // time, while the database goes away twice for 1.5 s.
    let started = Instant::now();
    let traffic = (0..4).map(|worker| {
        let (http, base, key) = (node.http.clone(), base.clone(), key.clone());
        async move {
            let mut seen = Vec::new();
            let mut i = worker;
            while started.elapsed() < Duration::from_millis(7500) {
                let sent = Instant::now();
                let (kind, request) = match i % 5 {
                    0 => (
                        "create",
                        http.post(format!("{base}/admin/clients"))
                            .bearer_auth(ADMIN_TOKEN)
                            .json(&json!({"name": format!("written-{worker}-{i}")})),
                    ),
                    1 => (
                        "verify",
                        http.post(format!("{base}/v1/keys/verify"))
                            .bearer_auth(ADMIN_TOKEN)
                            .json(&json!({"key": key})),
                    ),
                    2 => (
                        "relay",
                        http.get(format!("{base}/v1/chat/echo")).bearer_auth(&key),
                    ),
                    3 => (
                        "token",
                        http.post(format!("{base}/v1/token"))
                            .header("x-api-key", &key)
                            .form(&[("grant_type", "client_credentials")]),
                    ),
                    _ => ("readyz", http.get(format!("{base}/readyz"))),
                };
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let created = body["client"]["client_id"].as_str().map(String::from);
                if kind == "verify" && status == 200 {
                    assert_eq!(body["valid"], true, "a cached key stays valid");
                }
                seen.push(Seen {
                    kind,
                    sent,
                    answered: Instant::now(),
                    status,
                    retry_after,
                    created,
                });
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    });
    let traffic = tokio::spawn(futures_util::future::join_all(traffic));
    let mut outages = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let down = Instant::now();
        outage.cut();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        outage.restore();
        outages.push((down, Instant::now()));
    }
    let seen: Vec<Seen> = traffic.await.unwrap().into_iter().flatten().collect();
    let in_outage = |s: &Seen| {
        outages
            .iter()
            .any(|(down, up)| s.answered >= *down && s.sent <= *up + Duration::from_secs(2))
    };
    let settled_down = |s: &Seen| {
        outages
            .iter()
            .any(|(down, up)| s.sent >= *down + Duration::from_millis(700) && s.answered <= *up)
    };
    let mut acknowledged = Vec::new();
    for s in &seen {
        // Cached keys keep working throughout; what needs the database is a 503 while it is
        // away, never another 5xx.
        match s.kind {
            "verify" | "relay" | "token" => {
                assert!(
                    (200..300).contains(&s.status),
                    "{} answered {}",
                    s.kind,
                    s.status
                )
            }
            _ => assert!(
                (200..300).contains(&s.status) || s.status == 503,
                "{} answered {}",
                s.kind,
                s.status
            ),
        }
        if s.status == 503 && s.kind != "readyz" {
            assert!(s.retry_after, "a 503 to {} without Retry-After", s.kind);
        }
        if s.kind == "readyz" && settled_down(s) {
            assert_eq!(
                s.status, 503,
                "/readyz said ready while the database was away"
            );
        }
        if s.kind == "readyz" && !in_outage(s) {
            assert_eq!(
                s.status, 200,
                "/readyz said unready with the database there"
            );
        }
        if !in_outage(s) && s.kind == "create" {
            assert_eq!(
                s.status, 201,
                "an admin write failed with the database there"
            );
        }
        acknowledged.extend(s.created.clone());
    }
    let refused = seen.iter().filter(|s| s.status == 503).count();
    eprintln!(
        "outages: {} requests, {refused} answered 503, {} writes acknowledged",
        seen.len(),
        acknowledged.len()
    );
    assert!(refused > 0, "the outages were felt");
    // Every acknowledged write is there, with its audit row.
    let store = db.open().await;
    for id in &acknowledged {
        let client_id = egregore_relay::domain::client::ClientId::new(id);
        assert!(
            store.client(&client_id).await.unwrap().is_some(),
            "{id} is gone"
        );
        let audit = store
            .list_audit(&egregore_relay::storage::AuditQuery {
                client_id: Some(id.clone()),
                before_id: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(audit.len(), 1, "{id}: its creation is audited");
    }
}
