//! The console's handlers: each reads the form or query, calls the same services as the admin
//! API (acting as the signed-in admin), and answers a page or a 303 to one. A key appears only
//! in the page answering the create or regenerate POST.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use maud::Markup;
use serde::Deserialize;

use super::views::{self, Badge, ClientFields, ClientFilters, ClientRow, Detail, Overview, Who};
use super::{Admin, COOKIE, charts};
use crate::domain::client::{Client, ClientChanges, ClientDraft, ClientId, ClientStatus};
use crate::domain::usage::{BucketRange, Granularity, Outcome};
use crate::domain::{self, Error, FieldError};
use crate::http::ApiError;
use crate::http::extract::ClientAddr;
use crate::http::state::AppState;
use crate::service::admin::{AuditRequest, ListRequest};
use crate::service::console::{SESSION_LIFETIME, Session};
use crate::service::usage::Series;

const PAGE: i64 = 50;
const EXPIRING: Duration = Duration::days(7);

fn who(session: &Session) -> Who<'_> {
    Who {
        name: session.actor.name(),
        csrf: &session.csrf,
    }
}

fn html(status: StatusCode, page: Markup) -> Response {
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
fn csrf_refusal(session: &Session, presented: &str) -> Option<Response> {
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

pub async fn not_found(admin: Option<Admin>) -> Response {
    let session = admin.map(|Admin(s)| s);
    let who = session.as_ref().map(who);
    html(
        StatusCode::NOT_FOUND,
        views::error_page("Not found", "There is no such console page.", who.as_ref()),
    )
}

pub async fn login_form(admin: Option<Admin>) -> Response {
    if admin.is_some() {
        return Redirect::to("/console").into_response();
    }
    html(StatusCode::OK, views::login(None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    credential: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginForm { credential: <redacted> }")
    }
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Form(form): Form<LoginForm>,
) -> Response {
    let now = domain::now();
    match state
        .console
        .sign_in(form.credential.trim(), addr, now)
        .await
    {
        Ok(session) => {
            let secure = if state.console_cookie_secure {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}{secure}",
                session.token,
                SESSION_LIFETIME.num_seconds()
            );
            let mut response = Redirect::to("/console").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(Error::Unauthenticated) => html(
            StatusCode::UNAUTHORIZED,
            views::login(Some(
                "That is not an admin token or the key of a client holding scope admin.",
            )),
        ),
        Err(Error::RateLimited {
            retry_after_seconds,
        }) => html(
            StatusCode::TOO_MANY_REQUESTS,
            views::login(Some(&format!(
                "Too many failed sign-ins from this address: try again in {retry_after_seconds} s."
            ))),
        ),
        Err(e) => failure(e, None),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
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
fn last_day(now: DateTime<Utc>) -> BucketRange {
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
fn badges(client: &Client, last_day: Option<&Series>, now: DateTime<Utc>) -> Vec<Badge> {
    let mut out = Vec::new();
    match client.status(now) {
        ClientStatus::Disabled => out.push(Badge {
            text: "disabled".into(),
            class: "status-disabled",
        }),
        ClientStatus::Expired => out.push(Badge {
            text: "expired".into(),
            class: "status-expired",
        }),
        ClientStatus::Active => {
            out.push(Badge {
                text: "enabled".into(),
                class: "status-enabled",
            });
            if let Some(at) = client.expires_at.filter(|at| *at - now <= EXPIRING) {
                let hours = (at - now).num_hours();
                let text = if hours < 48 {
                    format!("expires in {hours} h")
                } else {
                    format!("expires in {} days", hours / 24)
                };
                out.push(Badge {
                    text,
                    class: "status-expiring",
                });
            }
        }
    }
    if let Some(series) = last_day {
        let day = series.buckets.iter().rev().take(24);
        let (limited, total) = day.fold((0u64, 0u64), |(l, t), (_, c)| {
            (l + c.get(Outcome::RateLimited), t + c.total())
        });
        if total > 0 && limited * 10 > total {
            out.push(Badge {
                text: format!("rate-limited {}%", limited * 100 / total),
                class: "status-rate-limited",
            });
        }
    }
    out
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    q: String,
    scope: String,
    include_disabled: Option<String>,
    cursor: Option<String>,
    deleted: Option<String>,
}

fn some_text(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

pub async fn clients(
    State(state): State<AppState>,
    Admin(session): Admin,
    Query(query): Query<ListQuery>,
) -> Response {
    let now = domain::now();
    let include_disabled = query.include_disabled.as_deref() == Some("true");
    let request = ListRequest {
        include_disabled,
        name_contains: some_text(&query.q),
        scope: some_text(&query.scope),
        cursor: query.cursor.clone().filter(|c| !c.is_empty()),
        limit: Some(PAGE),
    };
    let page = match state.admin.list(request).await {
        Ok(page) => page,
        Err(e) => return failure(e, Some(&session)),
    };
    // The last 36 hours, the current one included.
    let end = Granularity::Hour.floor(now) + Duration::hours(1);
    let range = BucketRange {
        start: end - Duration::hours(36),
        end,
        granularity: Granularity::Hour,
    };
    let ids: Vec<ClientId> = page.items.iter().map(|c| c.client_id.clone()).collect();
    let series = match state.usage.series_of_clients(&ids, range).await {
        Ok(series) => series,
        Err(e) => return failure(e, Some(&session)),
    };
    let rows: Vec<ClientRow<'_>> = page
        .items
        .iter()
        .zip(&series)
        .map(|(client, series)| ClientRow {
            client,
            badges: badges(client, Some(series), now),
            sparkline: charts::sparkline(series),
        })
        .collect();
    let filters = ClientFilters {
        q: &query.q,
        scope: &query.scope,
        include_disabled,
    };
    let message = query.deleted.as_ref().map(|_| "The client was deleted.");
    let page = views::clients(&rows, &filters, page.next_cursor, message, &who(&session));
    html(StatusCode::OK, page)
}

pub async fn new_client(Admin(session): Admin) -> Response {
    let fields = ClientFields {
        scopes: "chat, history".into(),
        rate_limit: "100".into(),
        metadata: "{}".into(),
        ..ClientFields::default()
    };
    html(
        StatusCode::OK,
        views::new_client(&fields, &[], &who(&session)),
    )
}

#[derive(Deserialize)]
pub struct ClientForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    metadata: String,
}

impl ClientForm {
    fn fields(&self) -> ClientFields {
        ClientFields {
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            rate_limit: self.rate_limit.clone(),
            expires_at: self.expires_at.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// The form's fields as the API would receive them; text that is not even of the right type
/// is reported like the API's own validation, beside its field.
struct Parsed {
    scopes: Vec<String>,
    rate_limit: Option<i64>,
    expires_at: Option<String>,
    metadata: Option<serde_json::Value>,
    errors: Vec<FieldError>,
}

fn parse_form(form: &ClientForm) -> Parsed {
    let mut errors = Vec::new();
    let scopes = form
        .scopes
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let rate_limit = match form.rate_limit.trim() {
        "" => None,
        text => text.parse::<i64>().map_or_else(
            |_| {
                errors.push(FieldError::new("/rate_limit", "must be a whole number"));
                None
            },
            Some,
        ),
    };
    // A `datetime-local` value has no offset: the form says it is UTC.
    let expires_at = some_text(&form.expires_at).map(|t| {
        let bare = t.len() == 16 && t.as_bytes().get(10) == Some(&b'T');
        if bare { format!("{t}:00Z") } else { t }
    });
    let metadata = match form.metadata.trim() {
        "" => None,
        text => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => Some(value),
            Err(_) => {
                errors.push(FieldError::new(
                    "/metadata",
                    "must be a JSON object, such as {\"team\": \"web\"}",
                ));
                None
            }
        },
    };
    Parsed {
        scopes,
        rate_limit,
        expires_at,
        metadata,
        errors,
    }
}

/// Validation problems of the form and of the service together, without repeating a field.
fn merge_errors(mut parsed: Vec<FieldError>, service: Error) -> Result<Vec<FieldError>, Error> {
    match service {
        Error::Invalid(more) => {
            for e in more {
                let field = e
                    .pointer
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                if !parsed
                    .iter()
                    .any(|p| p.pointer.trim_start_matches('/').starts_with(&field))
                {
                    parsed.push(e);
                }
            }
            Ok(parsed)
        }
        other => Err(other),
    }
}

pub async fn create_client(
    State(state): State<AppState>,
    Admin(session): Admin,
    Form(form): Form<ClientForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form.csrf) {
        return refused;
    }
    let parsed = parse_form(&form);
    let draft = ClientDraft {
        name: form.name.clone(),
        scopes: Some(parsed.scopes),
        rate_limit: parsed.rate_limit,
        expires_at: parsed.expires_at,
        metadata: parsed.metadata,
    };
    let result = if parsed.errors.is_empty() {
        state
            .admin
            .create(&session.actor, draft, domain::now())
            .await
    } else {
        // Still validated, so every field's problem is shown at once; nothing is written.
        match crate::domain::client::NewClient::validate(draft, domain::now()) {
            Ok(_) => Err(Error::Invalid(Vec::new())),
            Err(e) => Err(e),
        }
    };
    match result {
        Ok((client, key)) => {
            let page =
                views::key_shown(&client, key.expose(), "Client created", "", &who(&session));
            html(StatusCode::OK, page)
        }
        Err(e) => match merge_errors(parsed.errors, e) {
            Ok(errors) => html(
                StatusCode::BAD_REQUEST,
                views::new_client(&form.fields(), &errors, &who(&session)),
            ),
            Err(e) => failure(e, Some(&session)),
        },
    }
}

fn client_id(id: &str) -> Result<ClientId, Error> {
    crate::domain::storable_text("client_id", id)?;
    ClientId::parse(id)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DetailQuery {
    range: Option<String>,
    updated: Option<String>,
}

fn usage_range(range: &str, now: DateTime<Utc>) -> BucketRange {
    let span = match range {
        "1h" => Duration::hours(1),
        "7d" => Duration::days(7),
        "30d" => Duration::days(30),
        _ => Duration::hours(24),
    };
    BucketRange::covering(Some(now - span), None, None, now).unwrap_or_else(|_| last_day(now))
}

async fn detail_page(
    state: &AppState,
    session: &Session,
    id: &ClientId,
    range: &str,
    form: Option<(ClientFields, Vec<FieldError>)>,
    message: Option<&str>,
) -> Result<Markup, Error> {
    let now = domain::now();
    let client = state.admin.get(id).await?;
    let range = if views::RANGES.contains(&range) {
        range
    } else {
        "24h"
    };
    let series = state
        .usage
        .series_of(Some(id), None, usage_range(range, now))
        .await?;
    let day = state.usage.series_of(Some(id), None, last_day(now)).await?;
    let events = state
        .admin
        .audit(AuditRequest {
            client_id: Some(id.as_str().to_string()),
            limit: Some(20),
            ..AuditRequest::default()
        })
        .await?;
    let (fields, errors) = form.unwrap_or_else(|| (ClientFields::of(&client), Vec::new()));
    let title = format!("Uses of {}, last {range}", client.name);
    let page = Detail {
        client: &client,
        badges: badges(&client, Some(&day), now),
        chart: charts::stacked_bars(&series, &title),
        range,
        fields,
        errors: &errors,
        events: &events.items,
        message,
    };
    Ok(views::client_detail(page, &who(session)))
}

pub async fn client_detail(
    State(state): State<AppState>,
    Admin(session): Admin,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    let id = match client_id(&id) {
        Ok(id) => id,
        Err(e) => return failure(e, Some(&session)),
    };
    let range = query.range.as_deref().unwrap_or("24h");
    let message = query.updated.as_deref().and_then(|u| match u {
        "saved" => Some("Saved."),
        "disabled" => Some("The client is disabled: its key and tokens are refused."),
        "enabled" => Some("The client is enabled."),
        _ => None,
    });
    match detail_page(&state, &session, &id, range, None, message).await {
        Ok(page) => html(StatusCode::OK, page),
        Err(e) => failure(e, Some(&session)),
    }
}

pub async fn update_client(
    State(state): State<AppState>,
    Admin(session): Admin,
    Path(id): Path<String>,
    Form(form): Form<ClientForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form.csrf) {
        return refused;
    }
    let id = match client_id(&id) {
        Ok(id) => id,
        Err(e) => return failure(e, Some(&session)),
    };
    let current = match state.admin.get(&id).await {
        Ok(client) => client,
        Err(e) => return failure(e, Some(&session)),
    };
    let parsed = parse_form(&form);
    // An expiry left as it was is no change (a past one would fail "must be in the future").
    let unchanged_expiry = form.expires_at.trim() == ClientFields::of(&current).expires_at;
    let changes = ClientChanges {
        name: Some(form.name.clone()),
        scopes: Some(parsed.scopes),
        rate_limit: parsed.rate_limit,
        enabled: None,
        expires_at: (!unchanged_expiry).then_some(parsed.expires_at),
        metadata: Some(parsed.metadata.unwrap_or_else(|| serde_json::json!({}))),
    };
    let result = if parsed.errors.is_empty() {
        state
            .admin
            .update(&session.actor, &id, changes, domain::now())
            .await
            .map(|_| ())
    } else {
        match crate::domain::client::ClientUpdate::validate(changes, domain::now()) {
            Ok(_) => Err(Error::Invalid(Vec::new())),
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => {
            Redirect::to(&format!("/console/clients/{}?updated=saved", id.as_str())).into_response()
        }
        Err(e) => match merge_errors(parsed.errors, e) {
            Ok(errors) => {
                let form = Some((form.fields(), errors));
                match detail_page(&state, &session, &id, "24h", form, None).await {
                    Ok(page) => html(StatusCode::BAD_REQUEST, page),
                    Err(e) => failure(e, Some(&session)),
                }
            }
            Err(e) => failure(e, Some(&session)),
        },
    }
}

async fn set_enabled(
    state: AppState,
    session: Session,
    id: String,
    csrf: &str,
    enabled: bool,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, csrf) {
        return refused;
    }
    let result = match client_id(&id) {
        Ok(id) => {
            state
                .admin
                .set_enabled(&session.actor, &id, enabled, domain::now())
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(client) => {
            let what = if enabled { "enabled" } else { "disabled" };
            Redirect::to(&format!(
                "/console/clients/{}?updated={what}",
                client.client_id.as_str()
            ))
            .into_response()
        }
        Err(e) => failure(e, Some(&session)),
    }
}

pub async fn disable(
    State(state): State<AppState>,
    Admin(session): Admin,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_enabled(state, session, id, &form.csrf, false).await
}

pub async fn enable(
    State(state): State<AppState>,
    Admin(session): Admin,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_enabled(state, session, id, &form.csrf, true).await
}

#[derive(Deserialize)]
pub struct RegenerateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grace_period_seconds: String,
}

pub async fn regenerate(
    State(state): State<AppState>,
    Admin(session): Admin,
    Path(id): Path<String>,
    Form(form): Form<RegenerateForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form.csrf) {
        return refused;
    }
    let grace = match form.grace_period_seconds.trim() {
        "" => Ok(0),
        text => text.parse::<i64>().map_err(|_| {
            Error::invalid(
                "grace_period_seconds",
                "must be a whole number of seconds, 0 to 604800",
            )
        }),
    };
    let result = match (client_id(&id), grace) {
        (Ok(id), Ok(grace)) => {
            state
                .admin
                .regenerate(&session.actor, &id, grace, domain::now())
                .await
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match result {
        Ok((client, key)) => {
            let note = match client.previous_key.as_ref() {
                Some(previous) => format!(
                    "The old key keeps working until {}.",
                    views::time(Some(previous.expires_at))
                ),
                None => "The old key and every token issued with it stopped working now.".into(),
            };
            let page = views::key_shown(
                &client,
                key.expose(),
                "Key regenerated",
                &note,
                &who(&session),
            );
            html(StatusCode::OK, page)
        }
        Err(e) => failure(e, Some(&session)),
    }
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    Admin(session): Admin,
    Path(id): Path<String>,
) -> Response {
    let result = match client_id(&id) {
        Ok(id) => state.admin.get(&id).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(client) => html(
            StatusCode::OK,
            views::confirm_delete(&client, &who(&session)),
        ),
        Err(e) => failure(e, Some(&session)),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Admin(session): Admin,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&session, &form.csrf) {
        return refused;
    }
    let result = match client_id(&id) {
        Ok(id) => state.admin.delete(&session.actor, &id, domain::now()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/console/clients?deleted=1").into_response(),
        Err(e) => failure(e, Some(&session)),
    }
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
