//! The relay routes: at the gate, authenticate (API key or access token) and admit (the
//! route's scope, one request from the client's rate limit); then forward the request to the
//! upstream, streaming the bodies both ways. Unmatched paths fall through to a 404.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::Uri;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::{ApiError, UpstreamError, rate_limit_headers};
use super::extract::{ClientAddr, credential};
use super::state::AppState;
use crate::config::UpstreamTimeouts;
use crate::domain::route::{Route, RouteTable, UnsafePath, canonical_path};
use crate::domain::{self, address};
use crate::service::auth::{Accepts, Caller};

/// The configured routes and the pooled client that forwards to them.
pub struct Relay {
    routes: RouteTable,
    client: HttpClient<HttpConnector, Body>,
    response_timeout: Duration,
    request_ids: RequestIds,
}

/// Names the relay route that served a response, for the request metrics.
#[derive(Clone)]
pub struct RelayRoute(pub String);

impl Relay {
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

/// The fallback handler: a relay route if one matches, else 404. Routes are matched on the
/// canonical path (see `domain::route::canonical_path`), and that is what is forwarded; a
/// path without a safe canonical form is a 400.
pub async fn relay_or_not_found(State(state): State<AppState>, req: Request) -> Response {
    let routes = &state.relay.routes;
    if routes.is_empty() {
        return ApiError::not_found("no such route").into_response();
    }
    let path = match canonical_path(req.uri().path()) {
        Ok(path) => path.into_owned(),
        Err(UnsafePath(reason)) => {
            return ApiError::bad_request(reason, Vec::new()).into_response();
        }
    };
    let Some(route) = routes.find(&path) else {
        return ApiError::not_found("no such route").into_response();
    };
    let route = route.clone();
    let label = RelayRoute(route.prefix.clone());
    let mut response = relay(&state, &route, &path, req)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    response
}

async fn relay(
    state: &AppState,
    route: &Route,
    path: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let Ok(ClientAddr(addr)) = ClientAddr::from_request_parts(&mut parts, state).await;
    let now = domain::now();
    let gate = &state.gate;
    let caller = gate
        .authenticate(credential(&parts.headers), Accepts::KeyOrToken, addr, now)
        .await?;
    let decision = match gate.admit(&caller, Some(&route.scope), now).await {
        Ok(decision) => decision,
        Err(e) => {
            if matches!(e, domain::Error::OverLimit(_)) {
                state.metrics.observe_relay_rate_limited(&route.prefix);
            }
            return Err(e.into());
        }
    };
    let Caller::Client { client, scopes } = caller else {
        return Err(domain::Error::Unauthenticated.into());
    };

    let request_id = request_id(&parts.headers, &state.relay.request_ids);
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| address::canonical(c.0.ip()));
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    let peer_trusted = peer.is_some_and(|p| state.trusted_proxies.contains(p));
    strip_spoofable(&mut headers, peer_trusted);
    forwarded_for(&mut headers, peer, peer_trusted);
    insert(&mut headers, X_RELAY_CLIENT_ID, client.client_id.as_str());
    insert(&mut headers, X_RELAY_SCOPES, &scopes.join(" "));
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
    let timeout = route.timeout.unwrap_or(state.relay.response_timeout);
    let result = tokio::time::timeout(timeout, state.relay.client.request(upstream_request)).await;
    let upstream_response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            let kind = if e.is_connect() {
                "unreachable"
            } else {
                "failed"
            };
            state.metrics.observe_upstream_error(&route.prefix, kind);
            tracing::warn!(route = %route.prefix, error = %e, "upstream request failed");
            return Err(UpstreamError::Failed.into());
        }
        Err(_) => {
            state
                .metrics
                .observe_upstream_error(&route.prefix, "timeout");
            return Err(UpstreamError::Timeout.into());
        }
    };
    state
        .metrics
        .observe_upstream(&route.prefix, started.elapsed().as_secs_f64());

    let (mut parts, body) = upstream_response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.extend(rate_limit_headers(&decision));
    insert(&mut parts.headers, X_REQUEST_ID, &request_id);
    Ok(Response::from_parts(parts, Body::new(body)))
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
