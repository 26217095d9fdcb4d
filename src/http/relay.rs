//! The relay routes: find the route by the canonical path, authenticate (API key or access
//! token) and admit (the route's scope, one request from the client's rate limit) at the
//! gate, then forward to the upstream (`forward`); the admission counts the use as allowed,
//! or as an upstream error when the upstream fails it. Unmatched paths fall through to a 404.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, rate_limit_headers};
use super::extract::{ClientAddr, credential};
use super::forward::Forwarded;
use super::state::AppState;
use crate::domain::route::{Route, UnsafePath, canonical_path};
use crate::domain::{self, address};
use crate::service::auth::{Accepts, Caller};
use crate::service::meter::Endpoint;

/// Names the relay route that served a response, for the request metrics.
#[derive(Clone)]
pub struct RelayRoute(pub String);

/// The fallback handler: a relay route if one matches, else 404. Routes are matched on the
/// canonical path (see `domain::route::canonical_path`), and that is what is forwarded; a
/// path without a safe canonical form is a 400.
pub async fn relay_or_not_found(State(state): State<AppState>, req: Request) -> Response {
    let routes = state.relay.routes();
    if routes.is_empty() {
        return ApiError::not_found("no such route").into_response();
    }
    // A clone of the URI shares its bytes: the common, already canonical path is borrowed.
    let uri = req.uri().clone();
    let path = match canonical_path(uri.path()) {
        Ok(path) => path,
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
    let accepts = Accepts::KeyOrToken {
        route: &route.prefix,
    };
    let caller = gate
        .authenticate(credential(&parts.headers), accepts, addr, now)
        .await?;
    let Caller::Client { client, scopes } = &caller else {
        return Err(domain::Error::Unauthenticated.into());
    };
    let endpoint = Endpoint::Route(&route.prefix);
    let admitted = gate.admit(&caller, endpoint, Some(&route.scope), addr, now);
    let mut admission = match admitted.await {
        Ok(admission) => admission,
        Err(e) => {
            if matches!(e, domain::Error::OverLimit(_)) {
                state.metrics.observe_relay_rate_limited(&route.prefix);
            }
            return Err(e.into());
        }
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| address::canonical(c.0.ip()));
    let who = Forwarded {
        client_id: client.client_id.as_str(),
        scopes,
        peer,
        peer_trusted: peer.is_some_and(|p| state.trusted_proxies.contains(p)),
    };
    let req = Request::from_parts(parts, body);
    let forwarded = state
        .relay
        .forward(route, path, req, who, &state.metrics)
        .await;
    let mut response = match forwarded {
        Ok(response) => response,
        Err(e) => {
            if e.is_upstream_failure() {
                admission.upstream_failed();
            }
            return Err(e.into());
        }
    };
    response
        .headers_mut()
        .extend(rate_limit_headers(&admission.decision));
    Ok(response)
}
