//! `POST /v1/keys/verify`: is this key valid, whose is it, and may it make a request now?
//! A valid verification counts one request against the key's owner (never the caller).

use std::net::IpAddr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, Authorized, VerifyScope};
use super::state::AppState;
use crate::domain;
use crate::domain::policy::MAX_COST;
use crate::service::auth::{self, Verification};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/keys/verify", post(verify_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    key: String,
    /// The address the key was presented from, checked against the owner's
    /// `allowed_networks` (an owner with networks is `FORBIDDEN` without it).
    ip: Option<String>,
    /// Credits this use costs, 0..=1000 (default 1).
    cost: Option<i64>,
}

impl VerifyRequest {
    /// What the gate checks besides the key, validated.
    pub(crate) fn checks(&self) -> Result<auth::VerifyRequest, domain::Error> {
        let ip = self
            .ip
            .as_deref()
            .map(|ip| {
                ip.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| domain::Error::invalid("/ip", "must be an IPv4 or IPv6 address"))
            })
            .transpose()?;
        let cost = self.cost.unwrap_or(1);
        if !(0..=MAX_COST).contains(&cost) {
            return Err(domain::Error::invalid(
                "/cost",
                format!("must be 0..={MAX_COST}"),
            ));
        }
        Ok(auth::VerifyRequest { ip, cost })
    }
}

/// `{"valid": true, ...}` with the owner's settings, or `{"valid": false, "code"}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyResponse<'a> {
    Valid(ValidKey<'a>),
    Invalid(InvalidKey),
}

/// Borrowed from the cached client: the answer is written without copying it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidKey<'a> {
    /// Always true.
    pub valid: bool,
    pub client_id: &'a str,
    pub name: &'a str,
    pub scopes: &'a [String],
    pub rate_limit: i64,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub metadata: &'a Map<String, Value>,
    pub ratelimit: RateLimitState,
    /// Present when the client has credits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsLeft>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsLeft {
    /// Credits left after this use, as the answering node sees them.
    pub remaining: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitState {
    pub limit: u32,
    /// Requests that could be made right after this one.
    pub remaining: u32,
    /// Seconds until the allowance is full again.
    pub reset_seconds: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidKey {
    /// Always false.
    pub valid: bool,
    /// One of `NOT_FOUND`, `DISABLED`, `EXPIRED`, `FORBIDDEN`, `RATE_LIMITED`,
    /// `USAGE_EXCEEDED`.
    pub code: &'static str,
}

#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn verify_key(
    State(state): State<AppState>,
    caller: Authorized<VerifyScope>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let checks = req.checks()?;
    let verification = state
        .gate
        .verify(&req.key, checks, caller.addr, domain::now())
        .await?;
    let (client, decision, credits_left) = match verification {
        Verification::Valid {
            client,
            decision,
            credits_left,
        } => (client, decision, credits_left),
        Verification::Invalid(code) => {
            let invalid = InvalidKey { valid: false, code };
            return Ok(Json(VerifyResponse::Invalid(invalid)).into_response());
        }
    };
    Ok(Json(VerifyResponse::Valid(ValidKey {
        valid: true,
        client_id: client.client_id.as_str(),
        name: &client.name,
        scopes: &client.scopes,
        rate_limit: client.rate_limit,
        expires_at: client.expires_at,
        metadata: &client.metadata,
        ratelimit: RateLimitState {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_seconds: decision.reset_seconds,
        },
        credits: credits_left.map(|remaining| CreditsLeft { remaining }),
    }))
    .into_response())
}
