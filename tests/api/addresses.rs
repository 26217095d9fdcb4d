//! Whom failed authentications are charged to: the caller behind a trusted proxy (networks
//! in `RELAY_TRUSTED_PROXIES`, matched also when a dual-stack listener reports the proxy as an
//! IPv4-mapped address), and IPv6 callers by their /64.

use egregore_relay::domain::address::{TrustedProxies, parse_network};
use reqwest::{Method, StatusCode};

use crate::support::{TestApp, TestDb, assert_problem, test_config};

/// The service on a dual-stack listener (`[::]`), reached over IPv4, so the proxy in front of
/// it (this test, on 127.0.0.1) appears as `::ffff:127.0.0.1`; the proxies trusted are given
/// as an IPv4 network.
async fn behind_a_proxy() -> TestApp {
    let mut config = test_config();
    config.trusted_proxies = TrustedProxies::new(vec![parse_network("127.0.0.0/8").unwrap()]);
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    TestApp::spawn_listening(TestDb::new().await, config, listener).await
}

/// A failed authentication by `caller`, through the proxy (or by the proxy itself).
async fn fail_as(app: &TestApp, caller: Option<&str>) -> reqwest::Response {
    let mut request = app
        .request(Method::GET, "/admin/clients")
        .bearer_auth("eg_guess");
    if let Some(caller) = caller {
        request = request.header("x-forwarded-for", format!("203.0.113.250, {caller}"));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_caller_has_a_budget_of_its_own() {
    let app = behind_a_proxy().await;
    for _ in 0..30 {
        assert_eq!(
            fail_as(&app, Some("198.51.100.7")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_problem(
        fail_as(&app, Some("198.51.100.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    // Another caller behind the same proxy, and the proxy itself, are not held back.
    assert_problem(
        fail_as(&app, Some("198.51.100.8")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_problem(fail_as(&app, None).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn ipv6_callers_are_charged_by_their_64() {
    let app = behind_a_proxy().await;
    for i in 0..30 {
        let caller = format!("2001:db8:1:2:{i:x}::1");
        assert_eq!(
            fail_as(&app, Some(&caller)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_problem(
        fail_as(&app, Some("2001:db8:1:2:ffff::9")).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    assert_problem(
        fail_as(&app, Some("2001:db8:1:3::1")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}
