//! The `relay` binary itself: first start, the `clients` commands, logs, signals.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, TestDb};

pub fn relay() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.env_remove("RELAY_ADMIN_TOKEN")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `relay clients … --json` against `db`; returns the parsed output.
fn clients(db: &TestDb, args: &[&str]) -> Value {
    let out = relay()
        .env("DATABASE_URL", &db.url)
        .arg("clients")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A `relay serve` process with its stdout and stderr captured to files.
pub struct Server {
    child: Child,
    pub base: String,
    pub stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(db: &TestDb, envs: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let child = relay()
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("RELAY_LISTEN", "127.0.0.1:0")
            .env("RELAY_LOG_FORMAT", "json")
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            if let Some(addr) = log.lines().find_map(listening_address) {
                break format!("http://{addr}");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Server {
            child,
            base,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `KILL`, …) without waiting.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit, at most `limit`; returns its status.
    pub fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns (stdout, stderr).
    pub fn terminate(mut self) -> (String, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
        (
            std::fs::read_to_string(&self.stdout).unwrap(),
            std::fs::read_to_string(&self.stderr).unwrap(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn listening_address(line: &str) -> Option<String> {
    let entry: Value = serde_json::from_str(line).ok()?;
    (entry["fields"]["message"] == "listening")
        .then(|| entry["fields"]["address"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_the_admin_key_once_and_no_log_line_holds_any_key() {
    let db = TestDb::new().await;
    let envs = [("RUST_LOG", "debug")];
    let server = Server::start(&db, &envs);
    let http = reqwest::Client::new();
    let stdout = std::fs::read_to_string(&server.stdout).unwrap();
    let admin_key = stdout.lines().last().unwrap().trim().to_string();
    assert!(
        admin_key.starts_with("eg_") && admin_key.len() == 51,
        "{stdout}"
    );
    let mut keys = vec![admin_key.clone()];

    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", server.base))
            .bearer_auth(&admin_key)
            .json(&body)
            .send()
    };
    // Issue keys, use them, regenerate, and send them where they do not belong.
    let created: Value = post("/admin/clients", json!({"name": "one"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["client"]["client_id"].as_str().unwrap().to_string();
    keys.push(created["api_key"].as_str().unwrap().to_string());
    post("/v1/keys/verify", json!({"key": keys[1]}))
        .await
        .unwrap();
    let regenerated: Value = post(
        &format!("/admin/clients/{id}/regenerate"),
        json!({"grace_period_seconds": 60}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    keys.push(regenerated["api_key"].as_str().unwrap().to_string());
    post(
        "/admin/clients",
        json!({"name": keys[2], "rate_limit": keys[1]}),
    )
    .await
    .unwrap();
    post("/v1/keys/verify", json!({"key": [keys[2]]}))
        .await
        .unwrap();
    let r = http
        .get(format!("{}/admin/clients", server.base))
        .bearer_auth(&keys[2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .get(format!("{}/admin/clients", server.base))
        .bearer_auth(&keys[1][..50])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(format!("{}/nowhere?key={}", server.base, keys[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let (stdout, stderr) = server.terminate();
    assert_eq!(
        stdout.matches(&admin_key).count(),
        1,
        "the admin key is printed once"
    );
    assert!(
        stderr.lines().count() > 3,
        "the run logged something:\n{stderr}"
    );
    for key in &keys {
        // The secret part (after the public 13-character prefix) must appear nowhere.
        assert!(!stderr.contains(&key[13..]), "a key reached the log");
    }
    // SIGTERM flushed the last use before exiting.
    let store = db.open().await;
    let client = store
        .client(&egregore_relay::domain::client::ClientId::new(&id))
        .await
        .unwrap()
        .unwrap();
    assert!(client.last_used_at.is_some());
}

#[tokio::test]
async fn a_second_start_creates_no_second_admin() {
    let db = TestDb::new().await;
    let (first, _) = Server::start(&db, &[]).terminate();
    assert!(first.contains("eg_"));
    let (second, _) = Server::start(&db, &[]).terminate();
    assert!(!second.contains("eg_"), "{second}");
}

#[tokio::test]
async fn no_admin_is_created_when_an_admin_token_is_set() {
    let db = TestDb::new().await;
    let (stdout, _) =
        Server::start(&db, &[("RELAY_ADMIN_TOKEN", crate::support::ADMIN_TOKEN)]).terminate();
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        clients(&db, &["list", "--include-disabled"])["clients"],
        json!([])
    );
}

#[test]
fn a_short_admin_token_stops_the_server_with_a_sentence() {
    let out = relay()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RELAY_ADMIN_TOKEN", "too-short")
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RELAY_ADMIN_TOKEN") && stderr.contains("32"),
        "{stderr}"
    );
    assert!(!stderr.contains("too-short"));
}

#[test]
fn serve_help_documents_every_setting_with_its_variable_and_default() {
    let out = relay().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "DATABASE_URL",
        "sqlite://relay.db",
        "RELAY_LISTEN",
        "127.0.0.1:8080",
        "RELAY_ADMIN_TOKEN",
        "RELAY_LOG_FORMAT",
        "RELAY_CACHE_TTL",
        "RELAY_CACHE_CAPACITY",
        "RELAY_TRUSTED_PROXIES",
        "RELAY_DB_MAX_CONNECTIONS",
        "RELAY_TOKEN_TTL",
        "RELAY_ISSUER",
        "RELAY_AUDIENCE",
        "RELAY_UPSTREAM",
        "RELAY_CONFIG",
        "RELAY_UPSTREAM_CONNECT_TIMEOUT",
        "RELAY_UPSTREAM_TIMEOUT",
        "REDIS_URL",
        "RELAY_REDIS_PREFIX",
        "RELAY_LEGACY_BCRYPT_CONCURRENCY",
        "RELAY_MAX_CONNECTIONS",
        "RELAY_SHUTDOWN_GRACE",
        "RELAY_SIGNING_KEY_SECRET",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    // Secrets belong in the environment, where the process list does not show them.
    let admin_token = help
        .split("--admin-token")
        .nth(1)
        .and_then(|h| h.split("\n      --").next())
        .unwrap();
    assert!(admin_token.contains("environment"), "{admin_token}");
}

#[tokio::test]
async fn the_clients_commands_manage_clients_like_the_api() {
    let db = TestDb::new().await;
    let created = clients(
        &db,
        &[
            "create",
            "--name",
            "cli app",
            "--scopes",
            "chat,keys:verify",
            "--rate-limit",
            "7",
            "--metadata",
            "{\"a\":1}",
        ],
    );
    let id = created["client"]["client_id"].as_str().unwrap().to_string();
    assert_eq!(created["client"]["scopes"], json!(["chat", "keys:verify"]));
    assert_eq!(created["client"]["rate_limit"], 7);
    assert!(created["api_key"].as_str().unwrap().starts_with("eg_"));

    assert_eq!(clients(&db, &["show", &id])["name"], "cli app");
    let updated = clients(
        &db,
        &[
            "update",
            &id,
            "--expires-at",
            "2099-01-01T00:00:00Z",
            "--name",
            "renamed",
        ],
    );
    assert_eq!(updated["name"], "renamed");
    assert_eq!(
        clients(&db, &["update", &id, "--no-expiry"])["expires_at"],
        Value::Null
    );
    assert_eq!(clients(&db, &["disable", &id])["enabled"], false);
    assert_eq!(clients(&db, &["list"])["clients"], json!([]));
    assert_eq!(
        clients(&db, &["list", "--include-disabled", "--q", "RENAMED"])["clients"][0]["client_id"],
        id
    );
    assert_eq!(clients(&db, &["enable", &id])["enabled"], true);
    let regenerated = clients(&db, &["regenerate", &id, "--grace", "30"]);
    assert_ne!(regenerated["api_key"], created["api_key"]);

    // Without --yes and without a terminal, delete refuses.
    let out = relay()
        .env("DATABASE_URL", &db.url)
        .args(["clients", "delete", &id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(clients(&db, &["show", &id])["client_id"], id);
    clients(&db, &["delete", &id, "--yes"]);
    let out = relay()
        .env("DATABASE_URL", &db.url)
        .args(["clients", "show", &id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such client"));

    let store = db.open().await;
    let audit = store
        .list_audit(&egregore_relay::storage::AuditQuery {
            client_id: Some(id),
            before_id: None,
            limit: 20,
        })
        .await
        .unwrap();
    // create, update twice, disable, enable, regenerate, delete
    assert_eq!(audit.len(), 7);
    assert!(audit.iter().all(|e| e.actor == "cli"));
}

#[test]
fn invalid_cli_input_is_explained_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let out = relay()
        .env("DATABASE_URL", &url)
        .args(["clients", "create", "--name", "x", "--rate-limit", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate_limit"));
    let out = relay()
        .env("DATABASE_URL", &url)
        .args(["clients", "list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["clients"], json!([]));
}

#[tokio::test]
async fn the_clients_commands_set_and_clear_policies() {
    let db = TestDb::new().await;
    let created = clients(
        &db,
        &[
            "create",
            "--name",
            "metered",
            "--credits",
            "40",
            "--refill-amount",
            "100",
            "--refill-interval",
            "day",
            "--allowed-networks",
            "10.0.0.0/8,2001:db8::/32",
        ],
    );
    let client = &created["client"];
    assert_eq!(
        client["credits"],
        json!({"remaining": 40, "refill": {"amount": 100, "interval": "day"}})
    );
    assert_eq!(
        client["allowed_networks"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    let id = client["client_id"].as_str().unwrap();
    let updated = clients(&db, &["update", id, "--credits", "7"]);
    assert_eq!(updated["credits"], json!({"remaining": 7, "refill": null}));
    let cleared = clients(&db, &["update", id, "--no-credits", "--no-networks"]);
    assert_eq!(cleared["credits"], Value::Null);
    assert_eq!(cleared["allowed_networks"], json!([]));
    // A refill needs its interval, and a bad network is refused with its field named.
    for args in [
        vec!["update", id, "--credits", "5", "--refill-amount", "9"],
        vec!["update", id, "--allowed-networks", "10.0.0.1/8"],
    ] {
        let out = relay()
            .env("DATABASE_URL", &db.url)
            .arg("clients")
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
    }
    let human = relay()
        .env("DATABASE_URL", &db.url)
        .args(["clients", "update", id, "--credits", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains("credits       3"), "{text}");
    assert!(text.contains("networks      anywhere"), "{text}");
}

#[test]
fn the_human_list_is_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let ok = relay()
        .env("DATABASE_URL", &url)
        .args(["clients", "create", "--name", "tabled"])
        .output()
        .unwrap();
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(text.contains("API key (shown only this once)"));
    let out = relay()
        .env("DATABASE_URL", &url)
        .args(["clients", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("CLIENT_ID"));
    assert!(lines.next().unwrap().contains("tabled"));
}

#[tokio::test]
async fn stored_text_is_printed_without_terminal_escapes() {
    let db = TestDb::new().await;
    let created = clients(&db, &["create", "--name", "adopted"]);
    let id = created["client"]["client_id"].as_str().unwrap().to_string();
    // A row written by something else than the relay (an adopted database, a manual fix).
    let hostile = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}nimda";
    db.execute(&format!(
        "UPDATE api_clients SET name = '{hostile}' WHERE client_id = '{id}'"
    ))
    .await;
    for args in [
        vec!["clients", "list"],
        vec!["clients", "show", id.as_str()],
    ] {
        let out = relay()
            .env("DATABASE_URL", &db.url)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(
            text.contains("\\u{1b}") && text.contains("nimda"),
            "{text:?}"
        );
    }
    // The JSON output is the API's: the name as stored, escaped by JSON itself.
    assert_eq!(clients(&db, &["show", &id])["name"], hostile);
}

#[tokio::test]
async fn names_with_bidirectional_controls_are_refused() {
    let app = TestApp::spawn().await;
    for name in ["admin\u{202e}", "\u{2066}x", "a\u{2028}b", "\u{200f}"] {
        let r = app
            .admin(reqwest::Method::POST, "/admin/clients")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        let problem = crate::support::assert_problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(crate::support::pointers(&problem), ["/name"], "{name:?}");
    }
    // Emoji sequences use joiners, which stay allowed.
    let (client, _) = app.create_named("family \u{1f468}\u{200d}\u{1f469}").await;
    assert_eq!(client["name"], "family \u{1f468}\u{200d}\u{1f469}");
}

#[test]
fn migrate_applies_the_schema_and_can_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    for _ in 0..2 {
        let out = relay()
            .env("DATABASE_URL", &url)
            .arg("migrate")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_with_the_cli_reaches_a_running_server_within_two_seconds() {
    let app = TestApp::spawn().await;
    let (client, key) = app.create_named("watched").await;
    assert_eq!(app.verify(&key).await["valid"], true); // cached now
    let id = client["client_id"].as_str().unwrap();
    clients(&app.db, &["disable", id]);
    let changed = Instant::now();
    let answer = crate::verify::verify_until(&app, &key, "DISABLED").await;
    assert_eq!(answer["code"], "DISABLED");
    assert!(changed.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_benchmark_harness_still_parses() {
    // Its Rust parts (examples/, benches/) are compiled by `cargo test` and clippy.
    let root = env!("CARGO_MANIFEST_DIR");
    for script in ["run.sh", "compare.sh"] {
        let sh = Command::new("bash")
            .args(["-n", &format!("{root}/bench/{script}")])
            .status()
            .unwrap();
        assert!(sh.success(), "bench/{script} does not parse");
    }
    let py = Command::new("python3")
        .args([
            "-c",
            &format!("import ast; ast.parse(open('{root}/bench/plot.py').read())"),
        ])
        .status()
        .unwrap();
    assert!(py.success());
}

/// Runs `relay usage ARGS` against `db`; returns (success, stdout, stderr).
fn usage(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = relay()
        .env("DATABASE_URL", &db.url)
        .arg("usage")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_the_usage_counts_and_relay_usage_prints_them() {
    let db = TestDb::new().await;
    let token = crate::support::ADMIN_TOKEN;
    // Flushes are 10 s apart: only the shutdown writes these counts in time.
    let server = Server::start(
        &db,
        &[
            ("RELAY_ADMIN_TOKEN", token),
            ("RELAY_USAGE_FLUSH_SECONDS", "10"),
        ],
    );
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/admin/clients", server.base))
        .bearer_auth(token)
        .json(&json!({"name": "counted"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["client"]["client_id"].as_str().unwrap().to_string();
    let key = created["api_key"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let r = http
            .post(format!("{}/v1/keys/verify", server.base))
            .bearer_auth(token)
            .json(&json!({ "key": key }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    server.terminate();

    let (ok, json_out, stderr) = usage(&db, &["--client", &id, "--json"]);
    assert!(ok, "{stderr}");
    let body: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(body["totals"]["allowed"], 3);
    assert_eq!(body["granularity"], "hour");
    let (ok, csv, _) = usage(&db, &["--client", &id, "--csv", "--granularity", "day"]);
    assert!(ok);
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("start,allowed,rate_limited")
    );
    let days: u64 = lines
        .map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(days, 3);
    let (ok, table, _) = usage(&db, &["--client", &id]);
    assert!(ok);
    assert!(table.lines().next().unwrap().starts_with("START"));
    let total = table.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert_eq!(total.split_whitespace().nth(1), Some("3"));
    let (ok, _, stderr) = usage(&db, &["--granularity", "week"]);
    assert!(!ok);
    assert!(stderr.contains("granularity"), "{stderr}");
}
