//! Behaviour under concurrent requests: pagination during inserts, exact rate limits.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_neither_repeats_nor_skips_during_concurrent_inserts() {
    let app = TestApp::spawn().await;
    let mut existing = HashSet::new();
    for i in 0..40 {
        let (c, _) = app.create_named(&format!("before-{i}")).await;
        existing.insert(c["client_id"].as_str().unwrap().to_string());
    }
    let inserter = {
        let (base, http) = (app.base.clone(), app.http.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                let r = http
                    .post(format!("{base}/admin/clients"))
                    .bearer_auth(crate::support::ADMIN_TOKEN)
                    .json(&json!({"name": format!("during-{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/clients?limit=3&cursor={c}"),
            None => "/admin/clients?limit=3".to_string(),
        };
        let page: Value = app.admin_get(&path).await;
        for c in page["clients"].as_array().unwrap() {
            seen.push(c["client_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.into()),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    inserter.await.unwrap();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a client was listed twice");
    assert!(
        existing.is_subset(&unique),
        "a client that existed before was skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_verifications_of_a_limit_20_key_admit_exactly_20() {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .create_client(json!({"name": "burst", "rate_limit": 20}))
        .await;
    let requests = (0..50).map(|_| {
        let (base, http, key) = (app.base.clone(), app.http.clone(), key.clone());
        tokio::spawn(async move {
            let v: Value = http
                .post(format!("{base}/v1/keys/verify"))
                .bearer_auth(crate::support::ADMIN_TOKEN)
                .json(&json!({"key": key}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        })
    });
    let mut valid = 0;
    let mut limited = 0;
    for r in requests.collect::<Vec<_>>() {
        let v = r.await.unwrap();
        if v["valid"] == true {
            valid += 1;
        } else {
            assert_eq!(v["code"], "RATE_LIMITED");
            limited += 1;
        }
    }
    assert_eq!((valid, limited), (20, 30));
}
