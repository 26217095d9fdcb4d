//! The console in a real browser: Debian's Chromium, headless, driven over WebDriver by
//! ChromeDriver, through every flow a person clicks (sign-in, create with the key shown once
//! and its copy button and credits, an edit refused beside its field, the usage chart of traffic sent
//! here, regenerate, disable, delete, sign-out, a session ended by disabling its admin).
//! Without ChromeDriver it says so and checks nothing; under `CI` that is a failure.
//! `UPDATE_SCREENSHOTS=1` writes the screenshots to `docs/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestApp, test_config};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    _shots_dir: Option<tempfile::TempDir>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn browser() -> Option<Browser> {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
        );
        eprintln!(
            "browser tests skipped: no {CHROMEDRIVER} (apt-get install -y chromium chromium-driver)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(capabilities.clone());
        match builder.connect(&url).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(Instant::now() < deadline, "ChromeDriver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (shots, shots_dir) = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        (dir, None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        (dir.path().to_path_buf(), Some(dir))
    };
    Some(Browser {
        client,
        driver,
        _profile: profile,
        shots,
        _shots_dir: shots_dir,
    })
}

impl Browser {
    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The element `css` names, waiting (10 s at most) for the page a click opened.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        std::fs::write(self.shots.join(name), png).unwrap();
    }

    async fn sign_in(&self, base: &str, credential: &str) {
        self.goto(&format!("{base}/console")).await;
        assert_eq!(self.path().await, "/console/login");
        self.fill("#credential", credential).await;
        self.click("form[action='/console/login'] button").await;
        self.wait_for_path("/console").await;
    }

    /// Waits for the navigation a click started to land on `path`.
    async fn wait_for_path(&self, path: &str) {
        self.wait_for_path_where(|p| p == path, path).await;
    }

    async fn wait_for_path_where(&self, arrived: impl Fn(&str) -> bool, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !arrived(&self.path().await) {
            assert!(
                Instant::now() < deadline,
                "still at {} instead of {path}:\n{}",
                self.path().await,
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn traffic(app: &TestApp, key: &str) {
    for _ in 0..6 {
        app.verify(key).await;
    }
    for bad in ["eg_not-a-key", "eg_still-not-a-key"] {
        app.verify(bad).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_does_every_admin_task_in_a_real_browser() {
    let Some(b) = browser().await else {
        return;
    };
    let mut config = test_config();
    config.usage.flush_interval = Duration::from_millis(100);
    let app = TestApp::spawn_with(config).await;
    let base = app.base.clone();
    for (name, scopes) in [
        ("chat frontend", json!(["chat", "history"])),
        ("nightly batch", json!(["history"])),
        ("search indexer", json!(["chat"])),
    ] {
        let (_, key) = app
            .create_client(json!({"name": name, "scopes": scopes}))
            .await;
        traffic(&app, &key).await;
    }

    b.sign_in(&base, ADMIN_TOKEN).await;

    // Create: the key is on the answering page only, with a working copy button.
    b.goto(&format!("{base}/console/clients/new")).await;
    b.fill("#name", "browser app").await;
    b.fill("#scopes", "chat").await;
    b.fill("#rate_limit", "3").await;
    b.fill("#credits", "500").await;
    b.screenshot("console-new-client.png").await;
    b.click("form[action='/console/clients'] button[type=submit]")
        .await;
    let key = b.text("#new-key").await;
    assert!(key.starts_with("eg_") && key.len() == 51, "{key}");
    let copy = b
        .client
        .find(Locator::Css("button[data-copy]"))
        .await
        .unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "the script shows the copy button"
    );
    copy.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while copy.text().await.unwrap() == "Copy" {
        assert!(Instant::now() < deadline, "the copy button did nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.screenshot("console-key-shown-once.png").await;
    b.click("main p a").await;
    let client_page = b.path().await;
    assert!(
        client_page.starts_with("/console/clients/client_"),
        "{client_page}"
    );
    assert!(
        !b.source().await.contains(&key[13..]),
        "the key is not on the client's page"
    );

    // An edit refused beside its field, with the API's message; nothing saved.
    b.fill("#rate_limit", "0").await;
    b.click(&format!("form[action='{client_page}'] button[type=submit]"))
        .await;
    let error = b.text("#rate_limit-error").await;
    assert!(error.contains("must be 1..=1000000"), "{error}");
    b.screenshot("console-validation-error.png").await;

    // Traffic of this key (3 allowed, then its rate limit) shows in its chart.
    for _ in 0..5 {
        app.verify(&key).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        b.goto(&format!("{base}{client_page}?range=1h")).await;
        let legend = b.text("ul.legend").await;
        if legend.contains("allowed 3") && legend.contains("rate limited 2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chart never showed the traffic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(b.count("svg rect.o-allowed").await > 0);
    let legend = b.text("ul.legend").await;
    assert!(
        legend.contains("allowed 3") && legend.contains("rate limited 2"),
        "{legend}"
    );
    assert!(b.text("h1").await.contains("rate-limited 40%"));
    assert!(
        b.text("dl.facts").await.contains("497 left"),
        "three verifications spent three of its 500 credits"
    );
    b.screenshot("console-client-detail.png").await;

    // Regenerate: a new key, shown once; the old one stops.
    b.click(&format!("form[action='{client_page}/regenerate'] button"))
        .await;
    let new_key = b.text("#new-key").await;
    assert_ne!(new_key, key);
    assert_eq!(app.verify(&key).await["code"], "NOT_FOUND");

    // Disable, then delete with confirmation.
    b.goto(&format!("{base}{client_page}")).await;
    b.click(&format!("form[action='{client_page}/disable'] button"))
        .await;
    b.find("h1 .status-disabled").await;
    assert_eq!(app.verify(&new_key).await["code"], "DISABLED");
    b.click(&format!("a[href='{client_page}/delete']")).await;
    b.click("button.danger").await;
    b.wait_for_path("/console/clients?deleted=1").await;
    assert_eq!(app.verify(&new_key).await["code"], "NOT_FOUND");

    // The pages a newcomer sees first, at desktop and phone width.
    b.goto(&format!("{base}/console/clients")).await;
    assert_eq!(b.count("svg.spark").await, 3);
    b.screenshot("console-clients.png").await;
    b.goto(&format!("{base}/console")).await;
    assert!(b.count("figure.chart rect").await > 0);
    b.screenshot("console-overview.png").await;
    b.client.set_window_size(390, 844).await.unwrap();
    b.screenshot("console-overview-phone.png").await;
    b.client.set_window_size(1280, 900).await.unwrap();

    // Sign out.
    b.click("form[action='/console/logout'] button").await;
    b.wait_for_path("/console/login").await;
    b.goto(&format!("{base}/console")).await;
    assert_eq!(b.path().await, "/console/login");

    // A session of an admin client ends once the client is disabled.
    let (admin, admin_key) = app
        .create_client(json!({"name": "ops", "scopes": ["admin"]}))
        .await;
    b.sign_in(&base, &admin_key).await;
    b.goto(&format!("{base}/console/audit")).await;
    assert_eq!(b.path().await, "/console/audit");
    let id = admin["client_id"].as_str().unwrap();
    let r = app
        .admin(Method::POST, &format!("/admin/clients/{id}/disable"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.goto(&format!("{base}/console/audit")).await;
    assert_eq!(b.path().await, "/console/login");
    b.screenshot("console-sign-in.png").await;

    b.client.clone().close().await.unwrap();
}
