//! The upstream side of the relay: the configured routes, the pooled client, and forwarding
//! one admitted request: headers rewritten (credentials, hop-by-hop and spoofable headers out,
//! `X-Relay-*`, `X-Forwarded-For` and `X-Request-Id` in), bodies streamed both ways, the
//! response head awaited for at most the route's timeout.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::Uri;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::UpstreamError;
use crate::config::UpstreamTimeouts;
use crate::domain::route::{Route, RouteTable};
use crate::metrics::Metrics;

/// The configured routes and the pooled client that forwards to them.
pub struct Relay {
    routes: RouteTable,
    client: HttpClient<HttpConnector, Body>,
    response_timeout: Duration,
    request_ids: RequestIds,
}

/// Who a forwarded request is for, as the upstream is told.
pub struct Forwarded<'a> {
    pub client_id: &'a str,
    /// The scopes the credential grants now.
    pub scopes: &'a [String],
    /// The connection's peer, in canonical form, and whether it is a trusted proxy.
    pub peer: Option<IpAddr>,
    pub peer_trusted: bool,
}

impl Relay {
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Forwards `req` (authenticated and admitted) to `route`'s upstream at the canonical
    /// `path`, and returns the upstream's response, untouched but for hop-by-hop headers and
    /// `X-Request-Id`.
    pub async fn forward(
        &self,
        route: &Route,
        path: &str,
        req: Request,
        who: Forwarded<'_>,
        metrics: &Metrics,
    ) -> Result<Response, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        let request_id = request_id(&parts.headers, &self.request_ids);
        let mut headers = std::mem::take(&mut parts.headers);
        strip_hop_by_hop(&mut headers);
        strip_spoofable(&mut headers, who.peer_trusted);
        forwarded_for(&mut headers, who.peer, who.peer_trusted);
        insert(&mut headers, X_RELAY_CLIENT_ID, who.client_id);
        insert(&mut headers, X_RELAY_SCOPES, &who.scopes.join(" "));
        insert(&mut headers, X_REQUEST_ID, &request_id);

        let uri = match parts.uri.query() {
            Some(query) => format!("{}{path}?{query}", route.upstream),
            None => format!("{}{path}", route.upstream),
        };
        let uri: Uri = uri.parse().map_err(|_| UpstreamError::BadTarget)?;
        let mut upstream_request = axum::http::Request::from_parts(parts, body);
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = headers;

        let started = Instant::now();
        let timeout = route.timeout.unwrap_or(self.response_timeout);
        let result = tokio::time::timeout(timeout, self.client.request(upstream_request)).await;
        let upstream_response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    "unreachable"
                } else {
                    "failed"
                };
                metrics.observe_upstream_error(&route.prefix, kind);
                tracing::warn!(route = %route.prefix, error = %e, "upstream request failed");
                return Err(UpstreamError::Failed);
            }
            Err(_) => {
                metrics.observe_upstream_error(&route.prefix, "timeout");
                return Err(UpstreamError::Timeout);
            }
        };
        metrics.observe_upstream(&route.prefix, started.elapsed().as_secs_f64());

        let (mut parts, body) = upstream_response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        insert(&mut parts.headers, X_REQUEST_ID, &request_id);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    pub fn new(routes: RouteTable, timeouts: UpstreamTimeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        let client = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Relay {
            routes,
            client,
            response_timeout: timeouts.response,
            request_ids: RequestIds::new(),
        }
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_RELAY_CLIENT_ID: HeaderName = HeaderName::from_static("x-relay-client-id");
const X_RELAY_SCOPES: HeaderName = HeaderName::from_static("x-relay-scopes");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Not standard, but some clients send it and some proxies honour it as `Connection`.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&listed) {
        headers.remove(name);
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Keeps the caller's request id when it is a sane token, else makes one: a random prefix
/// drawn once per process and a counter, so no system call per request.
fn request_id(headers: &HeaderMap, ids: &RequestIds) -> String {
    let given = headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    match given {
        Some(id) => id.to_string(),
        None => ids.next(),
    }
}

struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let prefix = crate::domain::random_hex(8).unwrap_or_else(|_| "0".repeat(16));
        RequestIds {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}{:016x}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Appends the peer to `X-Forwarded-For`; what an untrusted peer claimed is dropped.
fn forwarded_for(headers: &mut HeaderMap, peer: Option<IpAddr>, peer_trusted: bool) {
    let Some(peer) = peer else { return };
    let earlier = peer_trusted
        .then(|| {
            headers
                .get(&X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .flatten();
    let value = match earlier {
        Some(chain) => format!("{chain}, {peer}"),
        None => peer.to_string(),
    };
    insert(headers, X_FORWARDED_FOR, &value);
}

/// Headers by which a proxy tells who the caller is and how it reached it.
fn is_proxy_header(name: &str) -> bool {
    name.starts_with("x-forwarded-")
        || matches!(
            name,
            "forwarded" | "x-real-ip" | "x-client-ip" | "true-client-ip"
        )
}

/// Drops the client's credentials, `Host`, every `X-Relay-*` header, and the proxy headers
/// (`Forwarded`, `X-Real-IP`, `X-Forwarded-*`) unless a trusted proxy sent them. Underscore
/// spellings of any of these (`X_Relay_Client_Id`) go whoever sent them: CGI-style stacks
/// (PHP, WSGI, Rack) fold `_` and `-` into one name, so upstream they would stand in for the
/// real header.
fn strip_spoofable(headers: &mut HeaderMap, peer_trusted: bool) {
    for name in [
        header::AUTHORIZATION,
        X_API_KEY,
        header::HOST,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
    let refused: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            if name.contains('_') {
                let folded = name.replace('_', "-");
                return folded.starts_with("x-relay-")
                    || folded.starts_with("proxy-")
                    || is_proxy_header(&folded)
                    || matches!(
                        folded.as_str(),
                        "authorization" | "x-api-key" | "host" | "x-request-id"
                    );
            }
            name.starts_with("x-relay-") || (!peer_trusted && is_proxy_header(name))
        })
        .cloned()
        .collect();
    for name in refused {
        headers.remove(name);
    }
}
