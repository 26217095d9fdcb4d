//! Faults with real processes, on SQLite and PostgreSQL: a node killed (SIGKILL) in the middle
//! of a burst of admin writes loses no acknowledged write and leaves no half-written client;
//! a node stopped (SIGTERM) under load finishes every request in flight, refuses new
//! connections and writes what it counted before it exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egregore_relay::domain::client::ClientId;
use egregore_relay::domain::usage::Outcome;
use egregore_relay::service::usage::{SeriesRequest, UsageReports};
use egregore_relay::storage::ClientQuery;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::Server;
use crate::support::{ADMIN_TOKEN, TestDb, create_on};
use crate::upstream;

/// What the writers were told: each client created, and the rate limits it was given (the
/// last acknowledged, then any sent later whose answer never came).
#[derive(Default)]
struct Acknowledged {
    created: Vec<String>,
    rate_limits: HashMap<String, (i64, Vec<i64>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_a_burst_of_admin_writes_loses_no_acknowledged_write() {
    let db = TestDb::new().await;
    let envs = [("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)];
    let server = Server::start(&db, &envs);
    let base = server.base.clone();
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let stop = Instant::now() + Duration::from_millis(600);
    let writers = (0..8).map(|writer| {
        let (base, acked) = (base.clone(), acked.clone());
        async move {
            let http = reqwest::Client::new();
            for i in 0.. {
                if Instant::now() > stop {
                    break;
                }
                let created = http
                    .post(format!("{base}/admin/clients"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"name": format!("burst-{writer}-{i}"), "rate_limit": 1}))
                    .send()
                    .await;
                let Ok(created) = created else { break };
                if created.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(body) = created.json::<Value>().await else {
                    break;
                };
                let id = body["client"]["client_id"].as_str().unwrap().to_string();
                acked.lock().unwrap().created.push(id.clone());
                acked
                    .lock()
                    .unwrap()
                    .rate_limits
                    .insert(id.clone(), (1, Vec::new()));
                for limit in 2..5 {
                    let patched = http
                        .patch(format!("{base}/admin/clients/{id}"))
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&json!({"rate_limit": limit}))
                        .send()
                        .await;
                    let mut acked = acked.lock().unwrap();
                    let entry = acked.rate_limits.get_mut(&id).unwrap();
                    match patched {
                        Ok(r) if r.status() == StatusCode::OK => *entry = (limit, Vec::new()),
                        _ => {
                            entry.1.push(limit);
                            return;
                        }
                    }
                }
            }
        }
    });
    let burst = tokio::spawn(join_all(writers));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("KILL");
    burst.await.unwrap();
    let acked = Arc::try_unwrap(acked).ok().unwrap().into_inner().unwrap();
    assert!(
        acked.created.len() > 8,
        "the burst was under way when killed"
    );
    eprintln!("{} clients created before the kill", acked.created.len());

    // Restarted on the same database: every acknowledged write is there with its audit row.
    let server = Server::start(&db, &envs);
    let store = db.open().await;
    let all = ClientQuery {
        include_disabled: true,
        name_contains: None,
        scope: None,
        after: None,
        limit: 100_000,
    };
    let clients = store.list_clients(&all).await.unwrap();
    let audit = store
        .list_audit(&egregore_relay::storage::AuditQuery {
            client_id: None,
            before_id: None,
            limit: 100_000,
        })
        .await
        .unwrap();
    for id in &acked.created {
        let client = store.client(&ClientId::new(id)).await.unwrap();
        let client = client.unwrap_or_else(|| panic!("acknowledged client {id} is gone"));
        let (last_acked, unanswered) = &acked.rate_limits[id];
        assert!(
            client.rate_limit == *last_acked || unanswered.contains(&client.rate_limit),
            "{id}: rate limit {} after acknowledging {last_acked}",
            client.rate_limit
        );
    }
    // No half-written client: each one complete, with the audit rows of what it went through.
    for client in &clients {
        assert!(client.name.starts_with("burst-") && client.key.is_some());
        let events: Vec<&str> = audit
            .iter()
            .filter(|e| e.client_id.as_deref() == Some(client.client_id.as_str()))
            .map(|e| e.action.as_str())
            .collect();
        assert!(events.contains(&"client.created"), "{:?}", client.client_id);
        let updates = events.iter().filter(|a| **a == "client.updated").count();
        assert_eq!(
            updates as i64,
            client.rate_limit - 1,
            "one audit row per change written"
        );
    }
    let answered: Value = reqwest::Client::new()
        .get(format!(
            "{}/admin/clients?include_disabled=true&limit=500",
            server.base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !answered["clients"].as_array().unwrap().is_empty(),
        "the node serves again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_every_request_in_flight_then_exits() {
    let upstream = upstream::start().await;
    let db = TestDb::new().await;
    let envs = [
        ("RELAY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("RELAY_UPSTREAM", upstream.base.as_str()),
        ("RELAY_USAGE_FLUSH_SECONDS", "10"),
    ];
    let server = Server::start(&db, &envs);
    let http = reqwest::Client::new();
    let (id, key) = create_on(
        &server.base,
        json!({"name": "in-flight", "rate_limit": 1000}),
    )
    .await;
    // Each request waits 3 s for the upstream's answer.
    let in_flight = 16;
    let requests = (0..in_flight).map(|_| {
        http.get(format!("{}/v1/chat/slow", server.base))
            .bearer_auth(&key)
            .send()
    });
    let requests = tokio::spawn(join_all(requests));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let stopped_at = Instant::now();
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "a new connection is refused once stopping"
    );
    let finished = requests.await.unwrap();
    let mut completed = 0;
    for response in finished {
        let response = response.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(response.text().await.unwrap(), "late");
        completed += 1;
    }
    assert_eq!(completed, in_flight);
    let status = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "exit within the drain"
    );
    // What it held in memory was written on the way out.
    let store = db.open().await;
    let request = SeriesRequest {
        client_id: Some(id.clone()),
        ..Default::default()
    };
    let series = UsageReports::new(store.clone())
        .series(request, egregore_relay::domain::now())
        .await
        .unwrap();
    assert_eq!(series.totals.get(Outcome::Allowed), in_flight as u64);
    let client = store.client(&ClientId::new(&id)).await.unwrap().unwrap();
    assert!(
        client.last_used_at.is_some(),
        "last_used_at written at shutdown"
    );
}

/// An upstream that fails in the ways a network does, by the path's last segment: `reset`
/// resets the connection before any header, `cut` starts an event stream and disconnects in
/// the middle of it, `drip` sends its 5-byte body a byte every 10 ms.
async fn faulty_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                if path.ends_with("/reset") {
                    let _ = socket.set_zero_linger();
                } else if path.ends_with("/cut") {
                    let stream = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                                  transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n";
                    let _ = socket.write_all(stream.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    for byte in b"drips" {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        let _ = socket.write_all(&[*byte]).await;
                    }
                }
            });
        }
    });
    base
}

/// Open descriptors and resident memory (KiB) of a process.
fn descriptors_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (fds, rss)
}

/// One request to a failing upstream path; what the client saw.
async fn through(http: &reqwest::Client, base: &str, key: &str, fault: &str) -> Result<(), String> {
    let response = http
        .get(format!("{base}/v1/chat/{fault}"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await;
    match fault {
        "reset" if status == StatusCode::BAD_GATEWAY => Ok(()),
        // The stream ends early: the first event arrives, then the body breaks off.
        "cut" if status == StatusCode::OK && body.is_err() => Ok(()),
        "drip" if status == StatusCode::OK && body.as_deref().ok() == Some(&b"drips"[..]) => Ok(()),
        _ => Err(format!("{fault}: {status}, {body:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_end_cleanly_and_leak_no_descriptor_or_memory() {
    let upstream = faulty_upstream().await;
    let db = TestDb::new().await;
    let envs = [
        ("RELAY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("RELAY_UPSTREAM", upstream.as_str()),
    ];
    let server = Server::start(&db, &envs);
    let http = reqwest::Client::new();
    let (_, key) = create_on(
        &server.base,
        json!({"name": "unlucky", "rate_limit": 1_000_000}),
    )
    .await;
    let faults = ["reset", "cut", "drip"];
    // Each round with a client of its own, dropped at its end: the connections it kept alive
    // close, so what stays open on the server is what it leaked.
    let round = |count: usize| {
        let (http, base, key) = (reqwest::Client::new(), server.base.clone(), key.clone());
        async move {
            for batch in 0..count / 20 {
                let requests =
                    (0..20).map(|i| through(&http, &base, &key, faults[(batch + i) % 3]));
                for outcome in join_all(requests).await {
                    outcome.unwrap();
                }
            }
        }
    };
    round(200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_before, rss_before) = descriptors_and_rss(server.pid());
    round(1000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_after, rss_after) = descriptors_and_rss(server.pid());
    eprintln!(
        "1000 faulty requests: descriptors {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        fds_after <= fds_before + 4,
        "descriptors {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS {rss_before} -> {rss_after} KiB"
    );
    // And the connection slots came back: the service answers at once.
    let health = http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// A credential's life as the admin node changed it: each change sent at one moment and
/// acknowledged at another, after which the credential is valid or not.
struct Timeline {
    changes: Vec<(Instant, Instant, bool)>,
}

impl Timeline {
    /// What a request in flight from `sent` to `answered` must have met: `Some(valid)`, or
    /// `None` while a change was under way or within `bound` of its acknowledgement.
    fn expected(&self, sent: Instant, answered: Instant, bound: Duration) -> Option<bool> {
        let mut valid = true;
        for (change_sent, change_acked, valid_after) in &self.changes {
            if answered < *change_sent {
                break;
            }
            if sent <= *change_acked + bound {
                return None;
            }
            valid = *valid_after;
        }
        Some(valid)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_through_one_node_is_in_force_on_another_under_load() {
    let upstream = upstream::start().await;
    let db = TestDb::new().await;
    // Changes reach other processes within 1 s on PostgreSQL, 2 s on SQLite (the contract).
    let bound = if db.url.starts_with("postgres") {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    };
    let envs = [
        ("RELAY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("RELAY_UPSTREAM", upstream.base.as_str()),
    ];
    let (serving, admin) = (Server::start(&db, &envs), Server::start(&db, &envs));
    let http = reqwest::Client::new();
    let admin_call = |method: reqwest::Method, path: String, body: Value| {
        let http = http.clone();
        let url = format!("{}{path}", admin.base);
        async move {
            let sent = Instant::now();
            let r = http
                .request(method, url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (sent, Instant::now(), body)
        }
    };
    // Four clients churned, two left alone.
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for name in [
        "toggled",
        "regenerated",
        "rescoped",
        "deleted",
        "steady-1",
        "steady-2",
    ] {
        let (_, _, body) = admin_call(
            reqwest::Method::POST,
            "/admin/clients".into(),
            json!({"name": name, "rate_limit": 1_000_000}),
        )
        .await;
        ids.push(body["client"]["client_id"].as_str().unwrap().to_string());
        keys.push(body["api_key"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(bound).await;

    // Load through the serving node for 7 s, every credential in turn, four at a time.
    let started = Instant::now();
    let load = (0..4).map(|worker| {
        let (http, base, keys) = (http.clone(), serving.base.clone(), keys.clone());
        async move {
            let mut seen = Vec::new();
            let mut i = worker;
            while started.elapsed() < Duration::from_secs(7) {
                let which = i % keys.len();
                let sent = Instant::now();
                let status = http
                    .get(format!("{base}/v1/chat/echo"))
                    .bearer_auth(&keys[which])
                    .send()
                    .await
                    .unwrap()
                    .status();
                seen.push((which, sent, Instant::now(), status));
                i += 1;
            }
            seen
        }
    });
    let load = tokio::spawn(join_all(load));
    let path = |i: usize, action: &str| format!("/admin/clients/{}{action}", ids[i]);
    let mut timelines: Vec<Timeline> = (0..6).map(|_| Timeline { changes: vec![] }).collect();
    let post = reqwest::Method::POST;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, a, _) = admin_call(post.clone(), path(0, "/disable"), json!({})).await;
    timelines[0].changes.push((s, a, false));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, a, _) = admin_call(post.clone(), path(1, "/regenerate"), json!({})).await;
    timelines[1].changes.push((s, a, false));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, a, _) = admin_call(post.clone(), path(0, "/enable"), json!({})).await;
    timelines[0].changes.push((s, a, true));
    let (s, a, _) = admin_call(
        reqwest::Method::PATCH,
        path(2, ""),
        json!({"scopes": ["history"]}),
    )
    .await;
    timelines[2].changes.push((s, a, false));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, a, _) = admin_call(reqwest::Method::DELETE, path(3, ""), json!({})).await;
    timelines[3].changes.push((s, a, false));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (s, a, _) = admin_call(post.clone(), path(0, "/disable"), json!({})).await;
    timelines[0].changes.push((s, a, false));

    let seen: Vec<_> = load.await.unwrap().into_iter().flatten().collect();
    assert!(seen.len() > 200, "{} requests", seen.len());
    let mut checked = 0;
    for (which, sent, answered, status) in &seen {
        let Some(valid) = timelines[*which].expected(*sent, *answered, bound) else {
            continue;
        };
        checked += 1;
        if valid {
            assert!(status.is_success(), "credential {which} refused: {status}");
        } else {
            // 429: this address has failed too often (with the revoked credentials) and its
            // failures are turned away; valid credentials are still served from it.
            let refused = [
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::TOO_MANY_REQUESTS,
            ];
            assert!(
                refused.contains(status),
                "credential {which} got {status} more than {bound:?} after its revocation"
            );
        }
    }
    eprintln!(
        "churn: {} requests, {checked} with a settled answer",
        seen.len()
    );
    assert!(
        checked * 2 > seen.len(),
        "most requests met a settled state"
    );
}
