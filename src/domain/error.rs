//! What a caller of the domain can act on. The HTTP layer maps each variant to a status in
//! one place (`http::error`).

use serde::Serialize;

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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("not found")]
    NotFound,
    #[error("missing or invalid credential")]
    Unauthenticated,
    #[error("the credential lacks scope {0}")]
    Forbidden(String),
    #[error("rate limited; retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// The work this request needs is over its bound for now (legacy-key bcrypt checks).
    #[error("busy; retry after {retry_after_seconds} s")]
    Busy { retry_after_seconds: u64 },
    #[error("storage failed")]
    Storage(#[from] crate::storage::Error),
    #[error("the operating system's random number generator failed")]
    Randomness(#[from] getrandom::Error),
}

impl Error {
    pub fn invalid(pointer: &str, detail: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldError::new(pointer, detail)])
    }
}
