//! The rules of the service: key format, client validation, scopes, regeneration grace,
//! rate-limit arithmetic and audit records. Pure code: no I/O, no SQL, no HTTP, and the clock
//! is always an argument (`now`) so tests never sleep.

pub mod access_token;
pub mod api_key;
pub mod audit;
pub mod client;
pub mod error;
pub mod rate_limit;
pub mod route;
pub mod scope;
pub mod signing_key;

pub use error::{Error, FieldError};

/// The current time, truncated to the microsecond precision every store keeps, so a value
/// read back compares equal to the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    truncate_to_micros(chrono::Utc::now())
}

pub fn truncate_to_micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
