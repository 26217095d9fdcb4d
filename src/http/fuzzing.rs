//! The edge's parsers of attacker input, as the fuzz targets and property tests drive them
//! (`crate::fuzzing`): token requests (form, JSON, Basic and Bearer credentials) and the
//! admin and verification JSON bodies, each with its validation.

use axum::http::{HeaderMap, HeaderValue, header};

use super::admin::{CreateClientRequest, RegenerateRequest, UpdateClientRequest};
use super::error::{ApiError, OAuthError};
use super::extract::parse_json;
use super::token::{ClientAuth, OAuthParams};
use super::verify::VerifyRequest;
use crate::domain;
use crate::domain::client::{ClientUpdate, NewClient, parse_grace_seconds};

/// What refusing a request says: its status and text, to check that it says nothing it was
/// sent.
pub struct Refusal {
    pub status: u16,
    pub text: String,
}

impl From<OAuthError> for Refusal {
    fn from(e: OAuthError) -> Self {
        Refusal {
            status: e.status().as_u16(),
            text: e.description().to_string(),
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal {
            status: e.status().as_u16(),
            text: format!("{} {:?}", e.detail(), e.field_errors()),
        }
    }
}

impl From<domain::Error> for Refusal {
    fn from(e: domain::Error) -> Self {
        Refusal::from(ApiError::from(e))
    }
}

/// Reads a token request as `POST /v1/token` does: its parameters (a body of `content_type`)
/// and the one client authentication (`authorization` header, or the form's secret).
pub fn token_request(
    content_type: &str,
    authorization: Option<&[u8]>,
    body: &[u8],
) -> Result<(), Refusal> {
    let params = OAuthParams::parse(content_type, body)?;
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    ClientAuth::from_request(&headers, &params)?;
    Ok(())
}

/// Which admin or verification body to read.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    Create,
    Update,
    Regenerate,
    Verify,
}

/// Reads and validates a JSON body as its endpoint does, up to the point of writing.
pub fn admin_body(kind: Body, bytes: &[u8]) -> Result<(), Refusal> {
    let now = domain::now();
    match kind {
        Body::Create => {
            let request: CreateClientRequest = parse_json(bytes)?;
            NewClient::validate(request.into(), now)?;
        }
        Body::Update => {
            let request: UpdateClientRequest = parse_json(bytes)?;
            ClientUpdate::validate(request.into_changes()?, now)?;
        }
        Body::Regenerate => {
            let request: RegenerateRequest = parse_json(bytes)?;
            parse_grace_seconds(request.grace_period_seconds.unwrap_or(0))?;
        }
        Body::Verify => {
            let request: VerifyRequest = parse_json(bytes)?;
            request.checks()?;
        }
    }
    Ok(())
}
