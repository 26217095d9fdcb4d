//! Usage analytics for admins: `GET /admin/usage` (a series of buckets, as JSON or, with
//! `Accept: text/csv`, CSV) and `GET /admin/usage/clients` (the clients that used the most).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::{AdminScope, ApiQuery, Authorized};
use super::state::AppState;
use crate::domain;
use crate::domain::usage::{Counters, Outcome};
use crate::service::usage::{Series, SeriesRequest, TopClients, TopRequest};

type Admin = Authorized<AdminScope>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/usage", get(usage_series))
        .route("/admin/usage/clients", get(top_clients))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// One client's uses (absent: every use, those naming no client included).
    client_id: Option<String>,
    /// `verify`, `token` or a relay route's prefix (absent: every endpoint).
    endpoint: Option<String>,
    /// RFC 3339 with an offset (default: 24 h before `to`).
    from: Option<String>,
    /// RFC 3339 with an offset (default: now).
    to: Option<String>,
    /// `minute`, `hour` or `day` (default: minutes up to 2 h, hours up to 7 days, else days).
    granularity: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopClientsParams {
    endpoint: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// 1..=100 (default 10).
    limit: Option<i64>,
}

/// Uses by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageCounters {
    pub allowed: u64,
    pub rate_limited: u64,
    pub usage_exceeded: u64,
    pub forbidden: u64,
    pub disabled: u64,
    pub expired: u64,
    pub upstream_error: u64,
    /// Credentials naming no client (0 for one client's series).
    pub invalid: u64,
}

impl From<Counters> for UsageCounters {
    fn from(c: Counters) -> Self {
        UsageCounters {
            allowed: c.get(Outcome::Allowed),
            rate_limited: c.get(Outcome::RateLimited),
            usage_exceeded: c.get(Outcome::UsageExceeded),
            forbidden: c.get(Outcome::Forbidden),
            disabled: c.get(Outcome::Disabled),
            expired: c.get(Outcome::Expired),
            upstream_error: c.get(Outcome::UpstreamError),
            invalid: c.get(Outcome::Invalid),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageBucket {
    pub start: DateTime<Utc>,
    #[serde(flatten)]
    pub counters: UsageCounters,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    /// The start of the first bucket.
    pub from: DateTime<Utc>,
    /// The end of the last bucket.
    pub to: DateTime<Utc>,
    pub granularity: String,
    /// Every bucket of the range, ascending, zeros included.
    pub buckets: Vec<UsageBucket>,
    pub totals: UsageCounters,
}

impl From<Series> for UsageResponse {
    fn from(series: Series) -> Self {
        UsageResponse {
            from: series.range.start,
            to: series.range.end,
            granularity: series.range.granularity.as_str().to_string(),
            buckets: series
                .buckets
                .into_iter()
                .map(|(start, counters)| UsageBucket {
                    start,
                    counters: counters.into(),
                })
                .collect(),
            totals: series.totals.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientUsageResponse {
    pub client_id: String,
    /// Null once the client has been deleted.
    pub name: Option<String>,
    pub total: u64,
    #[serde(flatten)]
    pub counters: UsageCounters,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopClientsResponse {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: String,
    /// Most uses first.
    pub clients: Vec<ClientUsageResponse>,
}

impl From<TopClients> for TopClientsResponse {
    fn from(top: TopClients) -> Self {
        TopClientsResponse {
            from: top.range.start,
            to: top.range.end,
            granularity: top.range.granularity.as_str().to_string(),
            clients: top
                .clients
                .into_iter()
                .map(|c| ClientUsageResponse {
                    client_id: c.client_id,
                    name: c.name,
                    total: c.counters.total(),
                    counters: c.counters.into(),
                })
                .collect(),
        }
    }
}

/// Whether the caller asked for CSV.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
        })
}

/// The series as CSV: a header row, then one row per bucket (RFC 4180 line ends). No field
/// can hold a comma or a quote, so none is quoted.
pub fn csv(series: &Series) -> String {
    let mut out = String::from("start");
    for outcome in Outcome::ALL {
        out.push(',');
        out.push_str(outcome.as_str());
    }
    out.push_str("\r\n");
    for (start, counters) in &series.buckets {
        out.push_str(&start.to_rfc3339_opts(SecondsFormat::Secs, true));
        for outcome in Outcome::ALL {
            out.push(',');
            out.push_str(&counters.get(outcome).to_string());
        }
        out.push_str("\r\n");
    }
    out
}

#[utoipa::path(get, path = "/admin/usage", tag = "usage", params(UsageParams),
    responses((status = 200, description = "The buckets; with `Accept: text/csv`, the same as CSV",
               content((UsageResponse = "application/json"), (String = "text/csv"))),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn usage_series(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Response, ApiError> {
    let request = SeriesRequest {
        client_id: params.client_id,
        endpoint: params.endpoint,
        from: params.from,
        to: params.to,
        granularity: params.granularity,
    };
    let series = state.usage.series(request, domain::now()).await?;
    if wants_csv(&headers) {
        let content_type = HeaderValue::from_static("text/csv; charset=utf-8; header=present");
        return Ok(([(header::CONTENT_TYPE, content_type)], csv(&series)).into_response());
    }
    Ok(Json(UsageResponse::from(series)).into_response())
}

#[utoipa::path(get, path = "/admin/usage/clients", tag = "usage", params(TopClientsParams),
    responses((status = 200, body = TopClientsResponse), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn top_clients(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(params): ApiQuery<TopClientsParams>,
) -> Result<Json<TopClientsResponse>, ApiError> {
    let request = TopRequest {
        endpoint: params.endpoint,
        from: params.from,
        to: params.to,
        limit: params.limit,
    };
    let top = state.usage.top_clients(request, domain::now()).await?;
    Ok(Json(top.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_asked_for_among_other_types() {
        let mut headers = HeaderMap::new();
        assert!(!wants_csv(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, Text/CSV;q=0.9"),
        );
        assert!(wants_csv(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/csvx"));
        assert!(!wants_csv(&headers));
    }
}
