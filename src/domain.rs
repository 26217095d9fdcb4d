//! The rules of the service: key format, client validation, scopes, regeneration grace,
//! rate-limit arithmetic and audit records. Pure code: no I/O, no SQL, no HTTP, and the clock
//! is always an argument (`now`) so tests never sleep.

pub mod access_token;
pub mod address;
pub mod api_key;
pub mod audit;
pub mod client;
pub mod error;
pub mod policy;
pub mod rate_limit;
pub mod route;
pub mod scope;
pub mod signing_key;
pub mod usage;

pub use error::{Error, FieldError};

/// The current time, truncated to the microsecond precision every store keeps, so a value
/// read back compares equal to the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    truncate_to_micros(chrono::Utc::now())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// `len` random bytes from the operating system's CSPRNG, in hex.
pub fn random_hex(len: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// Refuses text PostgreSQL cannot store or compare (its `text` and `jsonb` hold no U+0000);
/// applied on every backend, so both answer a request alike.
pub fn storable_text(pointer: &str, text: &str) -> Result<(), Error> {
    if text.contains('\0') {
        return Err(Error::invalid(
            pointer,
            "must not contain the NUL character (U+0000)",
        ));
    }
    Ok(())
}

pub fn truncate_to_micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
