//! What a caller of the services can act on. The HTTP layer maps each variant to a status in
//! one place (`http::error`); storage turns its own errors into these (`Unavailable`,
//! `Internal`), so nothing above it knows SQL.

use serde::Serialize;

use super::rate_limit::Decision;
use super::scope::Scope;

/// One field-level validation message; `pointer` is a JSON Pointer (RFC 6901) into the body
/// or the query parameter's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// Something that went wrong inside the service: logged, never shown.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("not found")]
    NotFound,
    #[error("missing or invalid credential")]
    Unauthenticated,
    #[error("the credential lacks scope {0}")]
    Forbidden(Scope),
    /// The caller's address has failed authentication too often.
    #[error("too many failed authentications; retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// The client's own rate limit is spent.
    #[error("rate limit exceeded")]
    OverLimit(Decision),
    /// The client may not call from the caller's address (its `allowed_networks`).
    #[error("the client may not call from this address")]
    AddressRefused,
    /// The client's credits are spent; the next refill is this many seconds away, if any.
    #[error("usage credits exhausted")]
    UsageExceeded { retry_after_seconds: Option<u64> },
    /// A token was asked for a scope the client does not hold.
    #[error("the client does not hold every scope requested")]
    InvalidScope,
    /// The work this request needs is over its bound for now (legacy-key bcrypt checks).
    #[error("busy; retry after {retry_after_seconds} s")]
    Busy { retry_after_seconds: u64 },
    /// A store the request needs does not answer.
    #[error("a store is unavailable")]
    Unavailable(#[source] Source),
    #[error("internal error")]
    Internal(#[source] Source),
}

impl Error {
    pub fn invalid(pointer: &str, detail: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldError::new(pointer, detail)])
    }

    pub fn internal(source: impl Into<Source>) -> Self {
        Error::Internal(source.into())
    }
}

impl From<getrandom::Error> for Error {
    fn from(e: getrandom::Error) -> Self {
        Error::internal(e)
    }
}
