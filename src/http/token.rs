//! OAuth 2.0 endpoints: the client-credentials token exchange (RFC 6749 §4.4), introspection
//! (RFC 7662), the JWKS (RFC 7517) and the server metadata (RFC 8414). Errors here use the
//! OAuth error object, never problem+json.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::error::{OAuthError, OAuthErrorBody, fill_bare_error, rate_limit_headers};
use super::extract::{ClientAddr, authorize};
use super::state::AppState;
use crate::domain;
use crate::domain::scope::{self, Scope};
use crate::service::auth::Credential;
use crate::service::token::{ClientCredentials, Introspection};

pub fn routes() -> Router<AppState> {
    let oauth = Router::new()
        .route("/v1/token", post(exchange_token))
        .route("/v1/introspect", post(introspect))
        .layer(middleware::map_response(oauth_for_bare_errors));
    Router::new()
        .merge(oauth)
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(server_metadata),
        )
}

/// A 405 (with `Allow`) or other bodiless error from these routes, in the OAuth shape.
async fn oauth_for_bare_errors(response: Response) -> Response {
    fill_bare_error(response, |status| {
        OAuthError::from_status(status).into_response()
    })
}

/// The request parameters: a form (`application/x-www-form-urlencoded`) or a JSON object of
/// strings. A parameter sent twice is `invalid_request` (RFC 6749 §3.2).
pub struct OAuthParams(HashMap<String, String>);

impl OAuthParams {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl OAuthParams {
    /// Parses a body of media type `content_type` (lowercase, without parameters).
    pub(crate) fn parse(content_type: &str, body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = match content_type {
            "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(body)
                .map_err(|_| OAuthError::invalid_request("the form could not be parsed"))?,
            "application/json" => {
                let object: serde_json::Map<String, Value> = serde_json::from_slice(body)
                    .map_err(|_| OAuthError::invalid_request("the body must be a JSON object"))?;
                object
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k, s)),
                        _ => Err(OAuthError::invalid_request(format!(
                            "{} must be a string",
                            parameter_name(&k)
                        ))),
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(OAuthError::unsupported_media_type()),
        };
        let mut params = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if params.contains_key(&name) {
                return Err(OAuthError::invalid_request(format!(
                    "{} is sent more than once",
                    parameter_name(&name)
                )));
            }
            params.insert(name, value);
        }
        Ok(OAuthParams(params))
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthParams {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| OAuthError::from_status(e.status()))?;
        OAuthParams::parse(&content_type, &body)
    }
}

/// A parameter's name for an error message: ours by name, anything else (perhaps a secret
/// pasted in the wrong place) only as "a parameter".
fn parameter_name(name: &str) -> &str {
    const KNOWN: [&str; 6] = [
        "grant_type",
        "scope",
        "client_id",
        "client_secret",
        "token",
        "token_type_hint",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == name)
        .unwrap_or("a parameter")
}

/// How the client authenticated at the token endpoint.
pub(crate) enum ClientAuth {
    /// RFC 6749 §2.3.1 HTTP Basic: form-urlencoded id and secret.
    Basic { client_id: String, secret: String },
    /// `Authorization: Bearer` or `X-API-Key`.
    Header(String),
    /// Form fields `client_id` + `client_secret`.
    Form { client_id: String, secret: String },
    /// An `Authorization` header of another scheme, or Basic that does not decode: refused
    /// at the gate like any credential naming no one (counted, charged to the address).
    Malformed,
}

impl ClientAuth {
    fn challenge(&self) -> &'static str {
        match self {
            ClientAuth::Header(_) => "Bearer",
            ClientAuth::Basic { .. } | ClientAuth::Form { .. } | ClientAuth::Malformed => "Basic",
        }
    }

    /// The key as the gate takes it, with the client id it must belong to.
    fn credentials(&self) -> ClientCredentials<'_> {
        match self {
            ClientAuth::Basic { client_id, secret } | ClientAuth::Form { client_id, secret } => {
                ClientCredentials {
                    credential: Credential::ApiKey(secret),
                    client_id: Some(client_id),
                }
            }
            ClientAuth::Header(key) => ClientCredentials {
                credential: Credential::ApiKey(key),
                client_id: None,
            },
            ClientAuth::Malformed => ClientCredentials {
                credential: Credential::Malformed,
                client_id: None,
            },
        }
    }

    /// Reads the one authentication method used. `Authorization` wins over `X-API-Key`, as
    /// everywhere; a header credential together with `client_secret` is two methods.
    pub(crate) fn from_request(
        headers: &HeaderMap,
        params: &OAuthParams,
    ) -> Result<Self, OAuthError> {
        let header_auth = match headers.get(header::AUTHORIZATION) {
            Some(value) => Some(parse_authorization(value).unwrap_or(ClientAuth::Malformed)),
            None => headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(|v| ClientAuth::Header(v.trim().to_string())),
        };
        let form_secret = params.get("client_secret");
        match (header_auth, form_secret) {
            (Some(_), Some(_)) => Err(OAuthError::invalid_request(
                "use one client authentication method",
            )),
            (Some(auth), None) => Ok(auth),
            (None, Some(secret)) => Ok(ClientAuth::Form {
                client_id: params.get("client_id").unwrap_or_default().to_string(),
                secret: secret.to_string(),
            }),
            (None, None) => Err(OAuthError::invalid_client("Basic")),
        }
    }
}

/// Bearer or Basic; `None` for any other form.
fn parse_authorization(value: &HeaderValue) -> Option<ClientAuth> {
    let value = value.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(ClientAuth::Header(rest.to_string()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some(ClientAuth::Basic {
        client_id: form_decode(id)?,
        secret: form_decode(secret)?,
    })
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn form_decode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_in: i64,
    scope: String,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the form; the handler reads `OAuthParams`
pub struct TokenRequest {
    /// `client_credentials`.
    grant_type: String,
    /// Space-separated subset of the client's scopes (default: all of them).
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[utoipa::path(post, path = "/v1/token", tag = "oauth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse), (status = 400, body = OAuthErrorBody),
              (status = 401, body = OAuthErrorBody), (status = 429, body = OAuthErrorBody)))]
pub async fn exchange_token(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    params: OAuthParams,
) -> Result<Response, OAuthError> {
    match params.get("grant_type") {
        None => return Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => return Err(OAuthError::unsupported_grant_type()),
    }
    let auth = ClientAuth::from_request(&headers, &params)?;
    let issued = state
        .tokens
        .exchange(auth.credentials(), params.get("scope"), addr, domain::now())
        .await
        .map_err(|e| OAuthError::from(e).challenging(auth.challenge()))?;
    let decision = issued.decision;
    let body = TokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        scope: issued.scope,
    };
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.extend(rate_limit_headers(&decision));
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the form; the handler reads `OAuthParams`
pub struct IntrospectionRequest {
    /// An access token or an API key.
    token: String,
    token_type_hint: Option<String>,
}

/// `{"active": false}`, or the token's details when it is active.
#[derive(Serialize, ToSchema)]
pub struct IntrospectionResponse {
    active: bool,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    details: serde_json::Map<String, Value>,
}

#[utoipa::path(post, path = "/v1/introspect", tag = "oauth",
    request_body(content = IntrospectionRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = IntrospectionResponse), (status = 400, body = OAuthErrorBody),
              (status = 401, body = OAuthErrorBody), (status = 403, body = OAuthErrorBody)),
    security(("bearer" = [])))]
pub async fn introspect(
    State(state): State<AppState>,
    IntrospectionCaller(addr): IntrospectionCaller,
    params: OAuthParams,
) -> Result<Response, OAuthError> {
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let found = state.tokens.introspect(token, addr, domain::now()).await?;
    let details = match found {
        Some(Introspection::ApiKey {
            client_id,
            scope,
            exp,
        }) => {
            let mut details = json!({
                "client_id": client_id,
                "sub": client_id,
                "scope": scope,
                "token_type": "api_key",
            });
            if let Some(exp) = exp {
                details["exp"] = json!(exp);
            }
            Some(details)
        }
        Some(Introspection::AccessToken { claims, scope }) => Some(json!({
            "client_id": claims.client_id,
            "sub": claims.sub,
            "scope": scope,
            "exp": claims.exp,
            "iat": claims.iat,
            "iss": claims.iss,
            "aud": claims.aud,
            "jti": claims.jti,
            "token_type": "Bearer",
        })),
        None => None,
    };
    let body = match details {
        Some(Value::Object(details)) => IntrospectionResponse {
            active: true,
            details,
        },
        _ => IntrospectionResponse {
            active: false,
            details: serde_json::Map::new(),
        },
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// An introspection caller (the admin credential or a client holding `keys:verify`) and its
/// address, with failures answered in the OAuth shape.
pub struct IntrospectionCaller(IpAddr);

impl FromRequestParts<AppState> for IntrospectionCaller {
    type Rejection = OAuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (_, addr) = authorize(parts, state, &Scope::KEYS_VERIFY).await?;
        Ok(IntrospectionCaller(addr))
    }
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth",
    responses((status = 200, description = "The public signing keys (RFC 7517)", content_type = "application/json")))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.tokens.jwks()),
    )
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "Authorization server metadata (RFC 8414)", content_type = "application/json")))]
pub async fn server_metadata(State(state): State<AppState>) -> Json<Value> {
    let issuer = state
        .tokens
        .settings()
        .issuer
        .trim_end_matches('/')
        .to_string();
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/v1/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/v1/introspect"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
        "scopes_supported": [scope::ADMIN, "chat", "history", scope::KEYS_VERIFY],
    }))
}
