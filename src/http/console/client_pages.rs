//! A client's pages: the list, the new-client form and its create, the client's page with its
//! edit, disable/enable, regenerate and delete. A key appears only in the page answering the
//! create or regenerate POST.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use maud::Markup;
use serde::Deserialize;

use super::forms::{ClientForm, merge_errors, parse_form};
use super::pages::{
    CsrfForm, EXPIRING, PAGE, client_id, csrf_refusal, failure, html, last_day, some_text, who,
};
use super::views::{self, Badge, ClientFields, ClientFilters, ClientRow, Detail};
use super::{Admin, charts};
use crate::domain::client::{Client, ClientChanges, ClientDraft, ClientId, ClientStatus};
use crate::domain::usage::{BucketRange, Granularity, Outcome};
use crate::domain::{self, Error, FieldError};
use crate::http::state::AppState;
use crate::service::admin::{AuditRequest, ListRequest};
use crate::service::console::Session;
use crate::service::usage::Series;

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
        credits: parsed.credits,
        allowed_networks: Some(parsed.allowed_networks),
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

/// What a refused form sent, shown again with the messages beside its fields: the edit form's
/// fields, or the grace period of a regeneration.
#[derive(Default)]
struct Refused {
    fields: Option<ClientFields>,
    grace: Option<String>,
    errors: Vec<FieldError>,
}

async fn detail_page(
    state: &AppState,
    session: &Session,
    id: &ClientId,
    range: &str,
    refused: Refused,
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
    let fields = refused.fields.unwrap_or_else(|| ClientFields::of(&client));
    let title = format!("Uses of {}, last {range}", client.name);
    let page = Detail {
        client: &client,
        badges: badges(&client, Some(&day), now),
        chart: charts::stacked_bars(&series, &title),
        range,
        fields,
        grace: refused.grace.as_deref().unwrap_or("0"),
        errors: &refused.errors,
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
    match detail_page(&state, &session, &id, range, Refused::default(), message).await {
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
    // Only what the form changes is sent: a field left as shown is no change, so an adopted
    // row that today's rules would refuse, or a past expiry, can stay as it is, and the
    // credits are not set (voiding every node's lease) unless they were edited.
    let shown = ClientFields::of(&current);
    let edited = form.fields();
    let changed = |a: &str, b: &str| a.trim() != b.trim();
    // The balance moves with every request: the credits count as edited when they differ
    // from what the form first showed, not from the balance now.
    let credits_edited = edited.credits_text() != form.credits_shown;
    let changes = ClientChanges {
        name: changed(&edited.name, &shown.name).then(|| form.name.clone()),
        scopes: (parsed.scopes != current.scopes).then_some(parsed.scopes),
        rate_limit: parsed.rate_limit.filter(|r| *r != current.rate_limit),
        enabled: None,
        expires_at: changed(&edited.expires_at, &shown.expires_at).then_some(parsed.expires_at),
        metadata: changed(&edited.metadata, &shown.metadata)
            .then(|| parsed.metadata.unwrap_or_else(|| serde_json::json!({}))),
        credits: credits_edited.then_some(parsed.credits),
        allowed_networks: (parsed.allowed_networks != current.network_texts())
            .then_some(parsed.allowed_networks),
    };
    let nothing_changed = parsed.errors.is_empty() && changes == ClientChanges::default();
    if nothing_changed {
        return Redirect::to(&format!("/console/clients/{}?updated=saved", id.as_str()))
            .into_response();
    }
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
                let refused = Refused {
                    fields: Some(form.fields()),
                    errors,
                    ..Refused::default()
                };
                refused_page(&state, &session, &id, refused).await
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
    let id = match client_id(&id) {
        Ok(id) => id,
        Err(e) => return failure(e, Some(&session)),
    };
    let result = match grace {
        Ok(grace) => {
            state
                .admin
                .regenerate(&session.actor, &id, grace, domain::now())
                .await
        }
        Err(e) => Err(e),
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
        Err(Error::Invalid(errors)) => {
            let refused = Refused {
                grace: Some(form.grace_period_seconds.clone()),
                errors,
                ..Refused::default()
            };
            refused_page(&state, &session, &id, refused).await
        }
        Err(e) => failure(e, Some(&session)),
    }
}

/// The client's page again, 400, with what was refused beside its fields.
async fn refused_page(
    state: &AppState,
    session: &Session,
    id: &ClientId,
    refused: Refused,
) -> Response {
    match detail_page(state, session, id, "24h", refused, None).await {
        Ok(page) => html(StatusCode::BAD_REQUEST, page),
        Err(e) => failure(e, Some(session)),
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
