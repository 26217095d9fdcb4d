//! Extractors: JSON bodies and query strings whose rejections come out as our 400/413/415
//! problems, the caller's address, and credentials checked against a required scope.

use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::state::AppState;
use crate::domain::audit::Actor;
use crate::domain::scope::Scope;
use crate::domain::{self, FieldError};
use crate::service::auth::{Accepts, Credential};

/// A JSON body: `application/json` (or `+json`) required, unknown fields refused by the DTO.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be left out entirely, in which case `T::default()` is used.
pub struct OptionalJson<T>(pub T);

/// A query string parsed into `T`.
pub struct ApiQuery<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::bad_request("the body could not be read", Vec::new())
            }
        })
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The common case pays for no path tracking; a failure is parsed again to say where.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request("the body is not valid JSON", Vec::new());
        }
        let message = inner.to_string();
        let mut segments: Vec<String> = e.path().iter().map(pointer_segment).collect();
        if names_what_was_not_expected(&message) {
            // The path ends in the unexpected name (which may hold anything, dots included):
            // point at its parent.
            segments.pop();
        }
        let pointer: String = segments.iter().map(|s| format!("/{s}")).collect();
        let message = safe_message(&message);
        ApiError::bad_request(
            "the body does not match the expected shape",
            vec![FieldError::new(pointer, message)],
        )
    })?;
    de.end()
        .map_err(|_| ApiError::bad_request("the body is not valid JSON", Vec::new()))?;
    Ok(value)
}

/// One step of a JSON Pointer (RFC 6901: `~` and `/` escaped).
fn pointer_segment(segment: &serde_path_to_error::Segment) -> String {
    use serde_path_to_error::Segment;
    let name = match segment {
        Segment::Seq { index } => return index.to_string(),
        Segment::Map { key } => key.as_str(),
        Segment::Enum { variant } => variant.as_str(),
        Segment::Unknown => "?",
    };
    name.replace('~', "~0").replace('/', "~1")
}

/// serde quotes the offending value (`invalid type: string "…"`, `invalid value: integer
/// `-1``), which may be a key sent in the wrong field: keep the message, drop the value and
/// the position.
fn without_quoted_values(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let message = match (message.find('"'), message.rfind('"')) {
        (Some(first), Some(last)) if first < last => {
            format!("{}{}", message[..first].trim_end(), &message[last + 1..])
        }
        _ => message.to_string(),
    };
    let about_a_value =
        message.starts_with("invalid type: ") || message.starts_with("invalid value: ");
    let value = message
        .find(" `")
        .and_then(|start| Some((start, start + 2 + message[start + 2..].find('`')?)));
    match value {
        Some((start, end)) if about_a_value => {
            format!("{}{}", &message[..start], &message[end + 1..])
        }
        _ => message,
    }
}

/// Whether serde's message is about a name the request made up (`unknown field `eg_…``).
fn names_what_was_not_expected(message: &str) -> bool {
    message.starts_with("unknown field `") || message.starts_with("unknown variant `")
}

/// serde's message with nothing the client sent in it: no quoted value, and no unknown field
/// or variant name (a key pasted as a field name would come back otherwise). The names it
/// expected are ours and stay.
fn safe_message(message: &str) -> String {
    if names_what_was_not_expected(message) {
        // The name may hold anything, backticks and quotes included: keep only what serde
        // says after it (the names it expected, ours), found from the end.
        let what = message.split(" `").next().unwrap_or("unknown field");
        let expected = message
            .rfind(", expected ")
            .or_else(|| message.rfind(", there are no "))
            .map_or("", |at| &message[at..]);
        let expected = expected.split(" at line ").next().unwrap_or(expected);
        return format!("{what}{expected}");
    }
    without_quoted_values(message)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(ApiError::unsupported_media_type());
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                // `name: message`, where an unknown name is the client's and is left out.
                let detail = match detail.split_once(": ") {
                    Some((_, message)) if names_what_was_not_expected(message) => {
                        safe_message(message).replacen("field", "parameter", 1)
                    }
                    Some((name, message)) => format!("{name}: {}", safe_message(message)),
                    None => safe_message(detail),
                };
                ApiError::bad_request(format!("invalid query: {detail}"), Vec::new())
            })
    }
}

/// The address a request comes from: the peer, or, when the peer is a trusted proxy, the
/// nearest untrusted address in `X-Forwarded-For`.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(ClientAddr(state.trusted_proxies.caller(peer, forwarded)))
    }
}

/// The credential of a request: `Authorization: Bearer` wins over `X-API-Key`; an
/// `Authorization` header of any other form is an invalid credential, with no fallback.
pub fn credential(headers: &HeaderMap) -> Option<Credential<'_>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bearer = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty());
        return Some(bearer.map_or(Credential::Malformed, Credential::Bearer));
    }
    headers
        .get("x-api-key")?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Credential::ApiKey)
}

/// The scope an endpoint needs; `admin` passes everywhere.
pub trait RequiredScope {
    const SCOPE: Scope;
}

pub struct AdminScope;
impl RequiredScope for AdminScope {
    const SCOPE: Scope = Scope::ADMIN;
}

pub struct VerifyScope;
impl RequiredScope for VerifyScope {
    const SCOPE: Scope = Scope::KEYS_VERIFY;
}

/// A caller whose credential (the admin token or an API key) holds scope `S`, checked at the
/// gate (failed attempts count against the caller's address), and that address.
pub struct Authorized<S> {
    pub actor: Actor,
    pub addr: IpAddr,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (actor, addr) = authorize(parts, state, &S::SCOPE).await?;
        Ok(Authorized {
            actor,
            addr,
            scope: PhantomData,
        })
    }
}

/// Checks the request's credential for `scope` at the gate; returns who acts, and from where.
pub async fn authorize(
    parts: &mut Parts,
    state: &AppState,
    scope: &Scope,
) -> Result<(Actor, IpAddr), domain::Error> {
    let Ok(ClientAddr(addr)) = ClientAddr::from_request_parts(parts, state).await;
    let now = domain::now();
    let caller = state
        .gate
        .authenticate(
            credential(&parts.headers),
            Accepts::AdminTokenOrKey,
            addr,
            now,
        )
        .await?;
    Ok((state.gate.authorize(&caller, scope, addr, now)?, addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn shown(headers: &HeaderMap) -> Option<String> {
        credential(headers).map(|c| match c {
            Credential::ApiKey(k) => format!("key {k}"),
            Credential::Bearer(b) => format!("bearer {b}"),
            Credential::Malformed => "malformed".to_string(),
        })
    }

    #[test]
    fn authorization_wins_over_x_api_key_without_fallback() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(shown(&headers(&[("x-api-key", "k")])), some("key k"));
        assert_eq!(
            shown(&headers(&[
                ("authorization", "Bearer a"),
                ("x-api-key", "k")
            ])),
            some("bearer a")
        );
        assert_eq!(
            shown(&headers(&[
                ("authorization", "Basic a"),
                ("x-api-key", "k")
            ])),
            some("malformed")
        );
        assert_eq!(
            shown(&headers(&[("authorization", "bearer a")])),
            some("bearer a")
        );
        assert_eq!(
            shown(&headers(&[("authorization", "Bearer ")])),
            some("malformed")
        );
        assert_eq!(shown(&headers(&[])), None);
    }

    #[test]
    fn error_messages_drop_the_values_sent() {
        let m = without_quoted_values(
            "invalid type: string \"eg_secret\", expected i64 at line 1 column 9",
        );
        assert_eq!(m, "invalid type: string, expected i64");
        assert_eq!(
            without_quoted_values(
                "invalid type: integer `-3513928312616060652`, expected a sequence"
            ),
            "invalid type: integer, expected a sequence"
        );
        assert_eq!(
            without_quoted_values("invalid value: integer `-1`, expected u32"),
            "invalid value: integer, expected u32"
        );
        assert_eq!(
            without_quoted_values("missing field `name`"),
            "missing field `name`"
        );
    }

    #[test]
    fn unknown_names_are_not_echoed() {
        assert_eq!(
            safe_message("unknown field `eg_secret`, expected one of `name`, `scopes`"),
            "unknown field, expected one of `name`, `scopes`"
        );
        assert_eq!(
            safe_message("unknown variant `eg_secret`, expected `day` or `month`"),
            "unknown variant, expected `day` or `month`"
        );
        assert_eq!(safe_message("missing field `name`"), "missing field `name`");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(is_json(&headers(&[(
            "content-type",
            "application/merge-patch+json"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&HeaderMap::new()));
    }
}
