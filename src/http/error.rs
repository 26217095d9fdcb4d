//! Errors at the edge: problem+json (RFC 9457) for every endpoint, the OAuth 2.0 error object
//! for `/v1/token` and `/v1/introspect`. Status codes are chosen here and nowhere else;
//! internal detail is logged once and never sent.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::rate_limit::Decision;
use crate::domain::{self, FieldError};

const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    problem_type: &'static str,
    errors: Vec<FieldError>,
    retry_after: Option<u64>,
    /// The client's allowance, for the RateLimit headers of a 429.
    rate_limit: Option<Decision>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    problem_type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    /// Field-level validation messages, each with a JSON Pointer into the request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    errors: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            problem_type: "about:blank",
            errors: Vec::new(),
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        ApiError {
            errors,
            ..ApiError::new(StatusCode::BAD_REQUEST, detail)
        }
    }

    pub fn rate_limited(retry_after_seconds: u64, detail: &str) -> Self {
        ApiError {
            problem_type: QUOTA_EXCEEDED,
            retry_after: Some(retry_after_seconds),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    pub fn not_found(detail: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn payload_too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than 64 KiB",
        )
    }

    pub fn unsupported_media_type() -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/json",
        )
    }

    /// A bodiless error (axum's 404 or 405) as a problem.
    pub fn of_status(status: StatusCode) -> Self {
        ApiError::new(status, status.canonical_reason().unwrap_or("error"))
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn field_errors(&self) -> &[FieldError] {
        &self.errors
    }
}

/// Why the relay could not answer with the upstream's response.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamError {
    /// Not reachable, or the request failed on the way.
    Failed,
    /// No response head within the route's timeout.
    Timeout,
    /// The request target cannot be written as an upstream URI.
    BadTarget,
}

impl UpstreamError {
    /// The upstream failed the request (502/504), rather than the request being unfit.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(self, UpstreamError::Failed | UpstreamError::Timeout)
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Failed => {
                ApiError::new(StatusCode::BAD_GATEWAY, "the upstream could not be reached")
            }
            UpstreamError::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream did not answer in time",
            ),
            UpstreamError::BadTarget => {
                ApiError::bad_request("the request target cannot be forwarded", Vec::new())
            }
        }
    }
}

/// The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-10) for a decision.
pub fn rate_limit_headers(d: &Decision) -> [(HeaderName, HeaderValue); 2] {
    let policy = format!("\"default\";q={};w=60", d.limit);
    let state = format!("\"default\";r={};t={}", d.remaining, d.reset_seconds);
    [
        (
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        ),
        (
            HeaderName::from_static("ratelimit"),
            HeaderValue::from_str(&state).unwrap_or(HeaderValue::from_static("")),
        ),
    ]
}

/// Gives a bodiless error response the body (and headers) of `error_for(status)`, keeping its
/// own headers (`Allow` on a 405); any other response is returned as it is.
pub fn fill_bare_error(
    response: Response,
    error_for: impl FnOnce(StatusCode) -> Response,
) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (error_parts, body) = error_for(status).into_parts();
    for (name, value) in &error_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

impl From<domain::Error> for ApiError {
    fn from(e: domain::Error) -> Self {
        use domain::Error as E;
        match e {
            E::Invalid(errors) => {
                let detail = match errors.as_slice() {
                    [one] if one.pointer.is_empty() => one.detail.clone(),
                    _ => "the request has invalid fields".to_string(),
                };
                let errors = errors
                    .into_iter()
                    .filter(|e| !e.pointer.is_empty())
                    .collect();
                ApiError::bad_request(detail, errors)
            }
            E::NotFound => ApiError::new(StatusCode::NOT_FOUND, "no such client"),
            E::Unauthenticated => {
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid credential")
            }
            E::Forbidden(scope) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the credential does not hold the scope {scope:?}"),
            ),
            E::RateLimited {
                retry_after_seconds,
            } => ApiError::rate_limited(retry_after_seconds, "too many failed authentications"),
            E::OverLimit(decision) => ApiError {
                rate_limit: Some(decision),
                ..ApiError::rate_limited(decision.retry_after_seconds, "rate limit exceeded")
            },
            E::InvalidScope => {
                ApiError::bad_request("the client does not hold every scope requested", Vec::new())
            }
            E::AddressRefused => ApiError::new(
                StatusCode::FORBIDDEN,
                "the client may not call from this address",
            ),
            E::UsageExceeded {
                retry_after_seconds,
            } => ApiError {
                problem_type: QUOTA_EXCEEDED,
                retry_after: retry_after_seconds,
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "the client's usage credits are spent",
                )
            },
            E::Busy {
                retry_after_seconds,
            } => ApiError {
                retry_after: Some(retry_after_seconds),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the key cannot be checked now; try again later",
                )
            },
            E::Unavailable(source) => {
                tracing::error!(error = %source, "database unavailable");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the database is unavailable",
                    )
                }
            }
            E::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            problem_type: self.problem_type,
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(decision) = &self.rate_limit {
            headers.extend(rate_limit_headers(decision));
        }
        response
    }
}

/// The OAuth 2.0 error object (RFC 6749 §5.2), for `/v1/token` and `/v1/introspect`.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// The `WWW-Authenticate` scheme of a 401: the one the client tried.
    challenge: &'static str,
    retry_after: Option<u64>,
    rate_limit: Option<Decision>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    error: &'static str,
    error_description: String,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            challenge: "Bearer",
            retry_after: None,
            rate_limit: None,
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The scheme a 401 challenges with: the one the client tried (`Basic` or `Bearer`).
    pub fn challenging(self, challenge: &'static str) -> Self {
        OAuthError { challenge, ..self }
    }

    pub fn unsupported_media_type() -> Self {
        OAuthError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "send application/x-www-form-urlencoded or application/json",
        )
    }

    pub fn unsupported_grant_type() -> Self {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        )
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// Failed client authentication; `challenge` is `Basic` or `Bearer`.
    pub fn invalid_client(challenge: &'static str) -> Self {
        OAuthError {
            challenge,
            ..OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
    }

    pub fn too_many_requests(retry_after_seconds: u64, description: &str) -> Self {
        OAuthError {
            retry_after: Some(retry_after_seconds),
            ..OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                description,
            )
        }
    }

    /// Any other failure an OAuth endpoint reports with this status.
    pub fn from_status(status: StatusCode) -> Self {
        let description = status.canonical_reason().unwrap_or("error");
        match status {
            StatusCode::UNAUTHORIZED => OAuthError::invalid_client("Bearer"),
            s if s.is_server_error() => OAuthError::new(s, "server_error", description),
            s => OAuthError::new(s, "invalid_request", description),
        }
    }
}

impl From<domain::Error> for OAuthError {
    fn from(e: domain::Error) -> Self {
        match e {
            domain::Error::Unauthenticated => OAuthError::invalid_client("Bearer"),
            domain::Error::Forbidden(scope) => OAuthError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the credential does not hold the scope {scope:?}"),
            ),
            domain::Error::RateLimited {
                retry_after_seconds,
            } => OAuthError::too_many_requests(
                retry_after_seconds,
                "too many failed authentications",
            ),
            domain::Error::OverLimit(decision) => OAuthError {
                rate_limit: Some(decision),
                ..OAuthError::too_many_requests(decision.retry_after_seconds, "rate limit exceeded")
            },
            domain::Error::InvalidScope => OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "the client does not hold every scope requested",
            ),
            domain::Error::AddressRefused => OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "the client may not call from this address",
            ),
            domain::Error::UsageExceeded {
                retry_after_seconds,
            } => OAuthError {
                retry_after: retry_after_seconds,
                ..OAuthError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "temporarily_unavailable",
                    "the client's usage credits are spent",
                )
            },
            domain::Error::Busy {
                retry_after_seconds,
            } => OAuthError {
                retry_after: Some(retry_after_seconds),
                ..OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the key cannot be checked now; try again later",
                )
            },
            domain::Error::Invalid(_) => OAuthError::invalid_request("invalid request"),
            domain::Error::NotFound => OAuthError::invalid_request("not found"),
            other => {
                let problem = ApiError::from(other);
                OAuthError::new(
                    problem.status(),
                    "server_error",
                    "the server could not answer",
                )
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody {
            error: self.error,
            error_description: self.description,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.challenge == "Basic" {
                HeaderValue::from_static("Basic realm=\"egregore-relay\"")
            } else {
                HeaderValue::from_static("Bearer")
            };
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(decision) = &self.rate_limit {
            headers.extend(rate_limit_headers(decision));
        }
        response
    }
}
