//! Connection limits: a request head must arrive in time, idle keep-alive connections close,
//! at most so many connections are served at once, and shutdown drains for a bounded time.
//! None of it cuts a relay stream. Each test shortens the limits so it runs in a second or two.

use std::time::{Duration, Instant};

use egregore_relay::config::ServeConfig;
use egregore_relay::domain::route::{Route, RouteTable};
use egregore_relay::server::ConnectionLimits;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::relay::relay_config;
use crate::support::{TestApp, read_rest};
use crate::upstream;

const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
const IDLE_TIMEOUT: Duration = Duration::from_millis(1000);

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: HEADER_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        max_connections: 100,
        shutdown_grace: Duration::from_secs(5),
    }
}

fn config_with(limits: ConnectionLimits) -> ServeConfig {
    let mut config = crate::support::test_config();
    config.connections = limits;
    config
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; panics if it has not within `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut seen))
        .await
        .expect("the server kept the connection open")
        .ok();
    seen
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n";

/// Opens the upstream's event stream through the relay; returns it after its first event.
async fn open_event_stream(app: &TestApp, name: &str) -> reqwest::Response {
    let (_, key) = app.create_named(name).await;
    let mut r = app
        .request(Method::GET, "/v1/chat/sse")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(&r.chunk().await.unwrap().unwrap()[..], b"data: first\n\n");
    r
}

#[tokio::test]
async fn a_request_head_that_does_not_arrive_in_time_closes_the_connection() {
    let app = TestApp::spawn_with(config_with(limits())).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50));
    assert!(!String::from_utf8_lossy(&seen).contains("200 OK"));
    // The server is fine for everyone else.
    let r = app.request(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(config_with(limits())).await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTHZ).await.unwrap();
    let mut answer = [0u8; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    // Idle is not a slow head: the connection lives past the header timeout...
    tokio::time::sleep(HEADER_TIMEOUT + Duration::from_millis(100)).await;
    stream.write_all(HEALTHZ).await.unwrap();
    let n = stream.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    // ...and is closed once it has been idle for the idle timeout.
    let idle_from = Instant::now();
    read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(idle_from.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(50));
    assert!(answered.elapsed() >= IDLE_TIMEOUT);
}

#[tokio::test]
async fn a_relay_stream_outlives_the_header_and_idle_timeouts() {
    let upstream = upstream::start().await;
    let mut config = relay_config(&upstream.base, "http://127.0.0.1:9");
    config.connections = limits();
    let app = TestApp::spawn_with(config).await;
    let mut r = open_event_stream(&app, "stream").await;
    // The stream stays quiet for longer than both timeouts together.
    tokio::time::sleep(HEADER_TIMEOUT + IDLE_TIMEOUT + Duration::from_millis(200)).await;
    upstream.signals.send_last_event.notify_one();
    assert_eq!(read_rest(&mut r).await, b"data: last\n\n");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn_with(config_with(ConnectionLimits {
        max_connections: 2,
        ..limits()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream.write_all(HEALTHZ).await.unwrap();
        let mut answer = [0u8; 512];
        assert!(stream.read(&mut answer).await.unwrap() > 0);
        held.push(stream);
    }
    // The third connection is queued by the kernel, not served.
    let mut third = connect(&app).await;
    third.write_all(HEALTHZ).await.unwrap();
    let mut answer = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(200), third.read(&mut answer)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond the cap"
    );
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut answer))
        .await
        .expect("the queued connection was never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_refuses_new_connections() {
    let upstream = upstream::start().await;
    let mut config = config_with(limits());
    // `/slow` reaches the upstream's slow endpoint without the 1 s timeout of `relay_config`.
    config.routes = RouteTable::new(vec![Route {
        prefix: "/slow".into(),
        upstream: format!("{}/v1/chat", upstream.base),
        scope: "chat".parse().unwrap(),
        timeout: None,
    }])
    .unwrap();
    let mut app = TestApp::spawn_with(config).await;
    let (_, key) = app.create_named("slow").await;
    // The upstream takes 3 s; the grace period is 5 s.
    let slow = app
        .request(Method::GET, "/slow")
        .header("x-api-key", &key)
        .send();
    let slow = tokio::spawn(slow);
    // An unfinished head must not hold the shutdown up either.
    let mut stalled = connect(&app).await;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let address = app.base.trim_start_matches("http://").to_string();
    let stopping = Instant::now();
    let stop = async {
        app.stop().await;
        stopping.elapsed()
    };
    let refused = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        TcpStream::connect(&address).await.is_err()
    };
    let (stopped_after, refused) = tokio::join!(stop, refused);
    assert!(refused, "a new connection was accepted during shutdown");
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "late");
    assert!(stopped_after < Duration::from_secs(5), "{stopped_after:?}");
}

#[tokio::test]
async fn shutdown_cuts_what_is_still_open_when_the_grace_period_ends() {
    let upstream = upstream::start().await;
    let mut config = relay_config(&upstream.base, "http://127.0.0.1:9");
    config.connections = ConnectionLimits {
        shutdown_grace: Duration::from_millis(500),
        ..limits()
    };
    let mut app = TestApp::spawn_with(config).await;
    let mut r = open_event_stream(&app, "endless").await;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("shutdown waited for a stream that never ends");
    assert!(stopping.elapsed() >= Duration::from_millis(450));
    // The stream was cut, not finished.
    let rest = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .unwrap();
    assert!(!matches!(rest, Ok(Some(ref c)) if &c[..] == b"data: last\n\n"));
}
