//! The admin console at `/console`: server-rendered pages (`views`, `charts`) over the same
//! services as the admin API (`pages`), its own stylesheet and script (`assets`). Here: the
//! routes, the session cookie, and the guards every console request passes (the response
//! headers of the contract; on every POST the `Origin` check and the session's CSRF token).

mod assets;
mod charts;
mod client_pages;
mod forms;
mod pages;
mod views;

use axum::Router;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::state::AppState;
use crate::domain;
use crate::service::console::Session;

pub const COOKIE: &str = "relay_console";
/// The sign-in form's own CSRF cookie (there is no session yet to hold a token).
pub const LOGIN_COOKIE: &str = "relay_console_login";

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route(
            "/console/clients",
            get(client_pages::clients).post(client_pages::create_client),
        )
        .route("/console/clients/new", get(client_pages::new_client))
        .route(
            "/console/clients/{client_id}",
            get(client_pages::client_detail).post(client_pages::update_client),
        )
        .route(
            "/console/clients/{client_id}/disable",
            post(client_pages::disable),
        )
        .route(
            "/console/clients/{client_id}/enable",
            post(client_pages::enable),
        )
        .route(
            "/console/clients/{client_id}/regenerate",
            post(client_pages::regenerate),
        )
        .route(
            "/console/clients/{client_id}/delete",
            get(client_pages::confirm_delete).post(client_pages::delete),
        )
        .route("/console/audit", get(pages::audit))
        .route("/console/signing-keys", get(pages::signing_keys))
        .route(
            "/console/signing-keys/rotate",
            post(pages::rotate_signing_key),
        )
        .route("/console/assets/{name}", get(assets::serve_asset))
        .route("/console/{*rest}", get(pages::not_found))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
}

/// What a browser may do with a console page: our own files only, no framing, no caching
/// (pages hold client data), no referrer. A POST from another origin is refused before
/// anything runs.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let public = public_origin(&state.tokens.settings().issuer);
    let cross_site = req.method() == Method::POST && !same_origin(req.headers(), public);
    let mut response = if cross_site {
        let page = views::error_page("Refused", "This form was sent from another site.", None);
        (
            StatusCode::FORBIDDEN,
            axum::response::Html(page.into_string()),
        )
            .into_response()
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `scheme://host[:port]` of the service's public URL (`RELAY_ISSUER`).
fn public_origin(issuer: &str) -> &str {
    let after_scheme = issuer.find("://").map_or(0, |i| i + 3);
    let end = issuer[after_scheme..]
        .find('/')
        .map_or(issuer.len(), |i| after_scheme + i);
    &issuer[..end]
}

/// A request from this site, as far as the browser says: `Sec-Fetch-Site` (when sent) is
/// `same-origin` or `none`, and `Origin` (when it names one) is the service's public URL or
/// the host the request was sent to (a proxy may rewrite `Host`, so the public URL counts).
/// Browsers send `Origin: null` on form posts from a page with `Referrer-Policy:
/// no-referrer`, so `null` proves nothing either way: the CSRF token decides.
fn same_origin(headers: &HeaderMap, public: &str) -> bool {
    let value = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = value(header::HeaderName::from_static("sec-fetch-site"));
    if fetch_site.is_some_and(|site| site != "same-origin" && site != "none") {
        return false;
    }
    match value(header::ORIGIN) {
        None | Some("null") => true,
        Some(origin) if origin.eq_ignore_ascii_case(public) => true,
        Some(origin) => {
            let host = value(header::HOST).unwrap_or("");
            origin.split_once("://").is_some_and(|(_, authority)| {
                !host.is_empty() && authority.eq_ignore_ascii_case(host)
            })
        }
    }
}

/// The session token a request carries in its cookie.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
}

/// The value of cookie `name`, if the request carries a non-empty one.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
        .filter(|t| !t.is_empty())
}

/// A signed-in admin; without a session in force, the request is sent to the sign-in page.
pub struct Admin(pub Session);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/console/login").into_response();
        let Some(token) = session_token(&parts.headers) else {
            return Err(to_login());
        };
        match state.console.check(token, domain::now()).await {
            Ok(Some(session)) => Ok(Admin(session)),
            Ok(None) => Err(to_login()),
            Err(e) => Err(pages::failure(e, None)),
        }
    }
}

impl OptionalFromRequestParts<AppState> for Admin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Admin as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_name_this_host_or_the_public_url() {
        let public = public_origin("https://relay.example.com/base");
        assert_eq!(public, "https://relay.example.com");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("10.0.0.5:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://relay.example.com"),
        );
        assert!(same_origin(&h, public), "behind a proxy that rewrote Host");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://relay.example.com.evil"),
        );
        assert!(!same_origin(&h, public));
        let public = "http://127.0.0.1:8080";
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, public), "no Origin: the CSRF token decides");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, public));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h, public));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(
            same_origin(&h, public),
            "an opaque origin: the CSRF token decides"
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h, public));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(
            !same_origin(&h, public),
            "another origin of the same site is another site here"
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h, public));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; relay_console=abc; b=2"),
        );
        assert_eq!(session_token(&h), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("relay_consolex=abc"),
        );
        assert_eq!(session_token(&h), None);
    }
}
