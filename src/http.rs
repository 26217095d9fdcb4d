//! The HTTP edge (axum only): routes, extractors, error shapes, request metrics. No SQL,
//! hashing or business rules here: each handler extracts, makes one call to `service` and
//! shapes the answer.

mod admin;
mod console;
mod error;
mod extract;
mod forward;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzzing;
mod openapi;
mod ops;
mod relay;
pub mod state;
mod token;
mod usage;
mod verify;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use admin::{ClientListResponse, ClientResponse, ClientWithKeyResponse, CreditsView};
pub use error::ApiError;
pub use forward::Relay;
pub use state::{AppState, Shared};
pub use usage::{UsageResponse, csv as usage_csv};

use crate::metrics::HttpLabels;

/// Bodies of the service's own endpoints are capped at 64 KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ops::routes())
        .merge(openapi::routes())
        .merge(admin::routes())
        .merge(usage::routes())
        .merge(console::routes(&state))
        .merge(verify::routes())
        .merge(token::routes())
        .fallback(relay::relay_or_not_found)
        .layer(middleware::map_response(problem_for_bare_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

/// axum answers a known path with a wrong method by a bare 405 (with `Allow`); give it, and
/// any other bodiless error, the problem+json body every error carries.
async fn problem_for_bare_errors(response: Response) -> Response {
    // An upstream's own answer passes through untouched.
    if response.extensions().get::<relay::RelayRoute>().is_some() {
        return response;
    }
    error::fill_bare_error(response, |status| {
        ApiError::of_status(status).into_response()
    })
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| state.metrics.route_label(p.as_str()));
    let method = method_label(req.method());
    let response = next.run(req).await;
    // Relay routes are served by the fallback: they name themselves on the response.
    let route = matched
        .or_else(|| {
            response
                .extensions()
                .get::<relay::RelayRoute>()
                .map(|r| state.metrics.route_label(&r.0))
        })
        .unwrap_or("unmatched");
    let labels = HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    state
        .metrics
        .observe_http(labels, started.elapsed().as_secs_f64());
    response
}

/// Standard methods by name; anything else is one label, so clients cannot grow the series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
