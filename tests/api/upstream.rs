//! A real upstream for the relay tests: echo, server-sent events, a slow endpoint, an upload
//! counter and bare statuses, on its own port. Like most web servers it decodes and resolves
//! the paths it is sent, and it records the resolved path of every request it echoes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

/// Signals between a test and the upstream.
#[derive(Default)]
pub struct Signals {
    /// The test tells the SSE endpoint to send its last event.
    pub send_last_event: Notify,
    /// The upload endpoint tells the test its first chunk arrived.
    pub first_chunk_arrived: Notify,
    /// The resolved path of every request echoed, in order.
    pub resolved_paths: Mutex<Vec<String>>,
}

pub struct Upstream {
    pub base: String,
    pub signals: Arc<Signals>,
}

pub async fn start() -> Upstream {
    let signals = Arc::new(Signals::default());
    let sse_signals = signals.clone();
    let upload_signals = signals.clone();
    let signals_for_echo = signals.clone();
    let app = Router::new()
        .route("/v1/chat/sse", get(move || sse(sse_signals.clone())))
        .route(
            "/v1/chat/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/v1/chat/upload",
            post(move |req: Request| upload(upload_signals.clone(), req)),
        )
        .route(
            "/v1/chat/status/{code}",
            any(|Path(code): Path<u16>| async move {
                StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT)
            }),
        )
        .fallback(move |req: Request| echo(signals_for_echo.clone(), req));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream { base, signals }
}

/// The path as a server that decodes percent-escapes, treats `\` as `/` and resolves dot and
/// empty segments (nginx, static file servers, most frameworks) would serve it.
pub fn resolve(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Answers 201 with what it received, and a header of its own.
async fn echo(signals: Arc<Signals>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let resolved = resolve(&path);
    signals
        .resolved_paths
        .lock()
        .unwrap()
        .push(resolved.clone());
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = header_map(req.headers());
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let reply = json!({
        "method": method,
        "path": path,
        "resolved_path": resolved,
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    (StatusCode::CREATED, [("x-upstream", "yes")], Json(reply)).into_response()
}

fn header_map(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        map.insert(name.to_string(), json!(value.to_str().unwrap_or("")));
    }
    Value::Object(map)
}

/// One event now, the last only when the test says so.
async fn sse(signals: Arc<Signals>) -> Response {
    let stream = futures_util::stream::unfold(0, move |step| {
        let signals = signals.clone();
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>("data: first\n\n".to_string()), 1)),
                1 => {
                    signals.send_last_event.notified().await;
                    Some((Ok("data: last\n\n".to_string()), 2))
                }
                _ => None,
            }
        }
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Counts the bytes of an upload, telling the test when the first chunk arrives.
async fn upload(signals: Arc<Signals>, req: Request) -> String {
    let mut stream = req.into_body().into_data_stream();
    let mut total = 0usize;
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
        if first {
            first = false;
            signals.first_chunk_arrived.notify_one();
        }
    }
    total.to_string()
}
