//! `POST /v1/keys/verify`: is this key valid, whose is it, and may it make a request now?
//! A valid verification counts one request against the key's owner (never the caller).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, Authorized, ClientAddr, VerifyScope};
use crate::app::AppState;
use crate::domain;
use crate::verifier::KeyCheck;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/keys/verify", post(verify_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    key: String,
}

/// `{"valid": true, ...}` with the owner's settings, or `{"valid": false, "code"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyResponse {
    Valid(ValidKey),
    Invalid(InvalidKey),
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidKey {
    /// Always true.
    pub valid: bool,
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub rate_limit: i64,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub ratelimit: RateLimitState,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RateLimitState {
    pub limit: u32,
    /// Requests that could be made right after this one.
    pub remaining: u32,
    /// Seconds until the allowance is full again.
    pub reset_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvalidKey {
    /// Always false.
    pub valid: bool,
    /// One of `NOT_FOUND`, `DISABLED`, `EXPIRED`, `RATE_LIMITED`.
    pub code: String,
}

#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn verify_key(
    State(state): State<AppState>,
    _: Authorized<VerifyScope>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let now = domain::now();
    let check = state.verifier.check_key(&req.key, addr, now).await?;
    let invalid = |code: &'static str| {
        state.metrics.observe_verification(code);
        Json(VerifyResponse::Invalid(InvalidKey {
            valid: false,
            code: code.to_string(),
        }))
    };
    let client = match check {
        KeyCheck::Valid(client) => client,
        other => return Ok(invalid(other.code())),
    };
    let decision = state
        .limiter
        .acquire(&client.client_id, client.effective_rate_limit(), now)
        .await;
    if !decision.allowed {
        return Ok(invalid("RATE_LIMITED"));
    }
    state.metrics.observe_verification("VALID");
    state.verifier.record_use(&client, now);
    Ok(Json(VerifyResponse::Valid(ValidKey {
        valid: true,
        client_id: client.client_id.to_string(),
        name: client.name.clone(),
        scopes: client.scopes.clone(),
        rate_limit: client.rate_limit,
        expires_at: client.expires_at,
        metadata: client.metadata.clone(),
        ratelimit: RateLimitState {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_seconds: decision.reset_seconds,
        },
    })))
}
