//! The console's handlers other than a client's (those are in `client_pages`): sign-in and
//! sign-out, the overview, the audit log, the signing keys, and what every handler shares. Each
//! reads the form or query, calls the same services as the admin API (acting as the signed-in
//! admin), and answers a page or a 303 to one.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use maud::Markup;
use serde::Deserialize;

use super::views::{self, Overview, Who};
use super::{Admin, COOKIE, LOGIN_COOKIE, charts, cookie};
use crate::domain::client::ClientId;
use crate::domain::usage::{BucketRange, Granularity};
use crate::domain::{self, Error};
use crate::http::ApiError;
use crate::http::extract::ClientAddr;
use crate::http::state::AppState;
use crate::service::admin::AuditRequest;
use crate::service::console::{SESSION_LIFETIME, Session};
use subtle::ConstantTimeEq;

pub(super) const PAGE: i64 = 50;
pub(super) const EXPIRING: Duration = Duration::days(7);

pub(super) fn who(session: &Session) -> Who<'_> {
    Who {
        name: session.actor.name(),
        csrf: &session.csrf,
    }
}

pub(super) fn html(status: StatusCode, page: Markup) -> Response {
    (status, axum::response::Html(page.into_string())).into_response()
}

/// A service error as a page: its status and its sentence, as the API would answer.
pub fn failure(e: Error, session: Option<&Session>) -> Response {
    let invalid = match &e {
        Error::Invalid(errors) => Some(
            errors
                .iter()
                .map(|e| e.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    };
    let api = ApiError::from(e);
    let message = invalid.unwrap_or_else(|| api.detail().to_string());
    let title = api.status().canonical_reason().unwrap_or("Error");
    let who = session.map(who);
    html(
        api.status(),
        views::error_page(title, &message, who.as_ref()),
    )
}

/// The refusal of a POST whose CSRF token is not the session's.
pub(super) fn csrf_refusal(session: &Session, presented: &str) -> Option<Response> {
    if session.accepts_csrf(presented) {
        None
    } else {
        let page = views::error_page(
            "Refused",
            "This form is stale or was not sent from this console: reload the page and try again.",
            Some(&who(session)),
        );
        Some(html(StatusCode::FORBIDDEN, page))
    }
}

/// Unknown console paths: a 404 page for the signed-in, the sign-in for anyone else.
pub async fn not_found(Admin(session): Admin) -> Response {
    html(
        StatusCode::NOT_FOUND,
        views::error_page(
            "Not found",
            "There is no such console page.",
            Some(&who(&session)),
        ),
    )
}

/// The sign-in form with a fresh token, also set as a `SameSite=Strict` cookie: a form posted
/// from another site carries neither (double submit), so it cannot spend this address's
/// failed-sign-in budget.
pub async fn login_form(State(state): State<AppState>, admin: Option<Admin>) -> Response {
    if admin.is_some() {
        return Redirect::to("/console").into_response();
    }
    let Ok(token) = crate::domain::random_hex(16) else {
        return failure(Error::internal("no randomness"), None);
    };
    let mut response = html(StatusCode::OK, views::login(None, &token));
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/console/login; Max-Age=3600{}",
        secure_attribute(&state)
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `; Secure` when the service's public URL is https, so cookies never travel in the clear.
fn secure_attribute(state: &AppState) -> &'static str {
    if state.console_cookie_secure {
        "; Secure"
    } else {
        ""
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    credential: String,
    #[serde(default)]
    login_csrf: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginForm { credential: <redacted> }")
    }
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let now = domain::now();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let matches: bool = expected.as_bytes().ct_eq(form.login_csrf.as_bytes()).into();
    if expected.is_empty() || !matches {
        let page = views::error_page(
            "Refused",
            "This sign-in form is stale or was not sent from this console: open the sign-in page again.",
            None,
        );
        return html(StatusCode::FORBIDDEN, page);
    }
    let token = expected;
    match state
        .console
        .sign_in(form.credential.trim(), addr, now)
        .await
    {
        Ok(session) => {
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}{}",
                session.token,
                SESSION_LIFETIME.num_seconds(),
                secure_attribute(&state)
            );
            let mut response = Redirect::to("/console").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(Error::Unauthenticated) => html(
            StatusCode::UNAUTHORIZED,
            views::login(
                Some("That is not an admin token or the key of a client holding scope admin."),
                token,
            ),
        ),
        Err(Error::RateLimited {
            retry_after_seconds,
        }) => html(
            StatusCode::TOO_MANY_REQUESTS,
            views::login(
                Some(&format!(
                    "Too many failed sign-ins from this address: try again in {retry_after_seconds} s."
                )),
                token,
            ),
        ),
        Err(e) => failure(e, None),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    Admin(session): Admin,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form.csrf) {
        return refused;
    }
    if let Err(e) = state.console.sign_out(&session).await {
        return failure(e, Some(&session));
    }
    let mut response = Redirect::to("/console/login").into_response();
    let gone = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&gone) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The last 24 hours by hour, ending with the current hour.
pub(super) fn last_day(now: DateTime<Utc>) -> BucketRange {
    let end = Granularity::Hour.floor(now) + Duration::hours(1);
    BucketRange {
        start: end - Duration::hours(24),
        end,
        granularity: Granularity::Hour,
    }
}

pub async fn overview(State(state): State<AppState>, Admin(session): Admin) -> Response {
    let now = domain::now();
    let result = async {
        let counts = state.admin.status_counts(now, now + EXPIRING).await?;
        let series = state.usage.series_of(None, None, last_day(now)).await?;
        let top = state.usage.top_of(last_day(now), 10).await?;
        let events = state
            .admin
            .audit(AuditRequest {
                limit: Some(10),
                ..AuditRequest::default()
            })
            .await?;
        Ok::<_, Error>((counts, series, top, events.items))
    }
    .await;
    match result {
        Ok((counts, series, top, events)) => {
            let page = Overview {
                counts,
                chart: charts::stacked_bars(&series, "Uses in the last 24 hours"),
                top: &top,
                events: &events,
            };
            html(StatusCode::OK, views::overview(page, &who(&session)))
        }
        Err(e) => failure(e, Some(&session)),
    }
}

/// Text and colour for a client's state; `last_day` (hourly) tells how often it was refused
/// by its rate limit.
pub(super) fn some_text(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

pub(super) fn client_id(id: &str) -> Result<ClientId, Error> {
    crate::domain::storable_text("client_id", id)?;
    ClientId::parse(id)
}

pub async fn audit(
    State(state): State<AppState>,
    Admin(session): Admin,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let client = query
        .get("client_id")
        .map(|c| c.trim().to_string())
        .unwrap_or_default();
    let request = AuditRequest {
        client_id: some_text(&client),
        cursor: query.get("cursor").cloned().filter(|c| !c.is_empty()),
        limit: Some(PAGE),
    };
    match state.admin.audit(request).await {
        Ok(page) => html(
            StatusCode::OK,
            views::audit(&page.items, &client, page.next_cursor, &who(&session)),
        ),
        Err(e) => failure(e, Some(&session)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct KeysQuery {
    rotated: Option<String>,
}

pub async fn signing_keys(
    State(state): State<AppState>,
    Admin(session): Admin,
    Query(query): Query<KeysQuery>,
) -> Response {
    let rotated = query.rotated.is_some();
    let message = rotated.then_some("A new key signs tokens now, on every node within a second.");
    match state.signing_keys.list().await {
        Ok(keys) => html(
            StatusCode::OK,
            views::signing_keys(&keys, message, &who(&session)),
        ),
        Err(e) => failure(e, Some(&session)),
    }
}

pub async fn rotate_signing_key(
    State(state): State<AppState>,
    Admin(session): Admin,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form.csrf) {
        return refused;
    }
    match state
        .signing_keys
        .rotate(&session.actor, domain::now())
        .await
    {
        Ok(_) => Redirect::to("/console/signing-keys?rotated=1").into_response(),
        Err(e) => failure(e, Some(&session)),
    }
}
