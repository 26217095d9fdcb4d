//! The admin API: client CRUD, disable/enable, key regeneration, hard delete, audit log.
//! Handlers extract, call one `ClientAdmin` operation and shape the response.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::{AdminScope, ApiJson, ApiQuery, Authorized, OptionalJson};
use super::state::AppState;
use crate::domain;
use crate::domain::audit::AuditEvent;
use crate::domain::client::{Client, ClientChanges, ClientDraft, ClientId};
use crate::domain::policy::{Credits, CreditsDraft, RefillDraft};
use crate::service::admin::{AuditRequest, ListRequest};

type Admin = Authorized<AdminScope>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/clients", post(create_client).get(list_clients))
        .route(
            "/admin/clients/{client_id}",
            get(get_client).patch(update_client).delete(delete_client),
        )
        .route("/admin/clients/{client_id}/disable", post(disable_client))
        .route("/admin/clients/{client_id}/enable", post(enable_client))
        .route(
            "/admin/clients/{client_id}/regenerate",
            post(regenerate_key),
        )
        .route("/admin/audit", get(list_audit))
}

/// A client as the API shows it. Never holds a secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientResponse {
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub rate_limit: i64,
    pub enabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// `eg_` + the key id: recognises the key without revealing it; null for an adopted
    /// client until its legacy key is replaced.
    pub key_prefix: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// May lag real use by a few seconds.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Usage credits; null: unlimited.
    pub credits: Option<CreditsView>,
    /// CIDRs the client may call from; empty: anywhere.
    pub allowed_networks: Vec<String>,
}

/// A client's credits as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreditsView {
    /// Credits left; exact once no request has arrived for 10 s (before, nodes may hold some).
    pub remaining: i64,
    pub refill: Option<RefillView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefillView {
    /// What `remaining` is set to at the start of each period.
    pub amount: i64,
    /// `day` or `month` (UTC).
    pub interval: String,
}

impl From<Credits> for CreditsView {
    fn from(c: Credits) -> Self {
        CreditsView {
            remaining: c.remaining,
            refill: c.refill.map(|r| RefillView {
                amount: r.amount,
                interval: r.interval.as_str().to_string(),
            }),
        }
    }
}

/// Credits as asked for: `remaining` 0..=10^12, an optional `refill`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsRequest {
    remaining: i64,
    #[serde(default)]
    refill: Option<RefillRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillRequest {
    /// 1..=10^12.
    amount: i64,
    /// `day` or `month`.
    interval: String,
}

impl From<CreditsRequest> for CreditsDraft {
    fn from(c: CreditsRequest) -> Self {
        CreditsDraft {
            remaining: c.remaining,
            refill: c.refill.map(|r| RefillDraft {
                amount: r.amount,
                interval: r.interval,
            }),
        }
    }
}

impl From<Client> for ClientResponse {
    fn from(c: Client) -> Self {
        ClientResponse {
            key_prefix: c.key_prefix(),
            credits: c.credits.map(CreditsView::from),
            allowed_networks: c.network_texts(),
            client_id: c.client_id.to_string(),
            name: c.name,
            scopes: c.scopes,
            rate_limit: c.rate_limit,
            enabled: c.enabled,
            expires_at: c.expires_at,
            metadata: c.metadata,
            created_at: c.created_at,
            updated_at: c.updated_at,
            last_used_at: c.last_used_at,
        }
    }
}

/// A client with its API key, shown this once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ClientWithKeyResponse {
    pub client: ClientResponse,
    pub api_key: String,
}

impl std::fmt::Debug for ClientWithKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientWithKeyResponse")
            .field("client", &self.client)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientRequest {
    name: String,
    scopes: Option<Vec<String>>,
    rate_limit: Option<i64>,
    /// RFC 3339 with a UTC offset, in the future.
    expires_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Usage credits (default null: unlimited).
    credits: Option<CreditsRequest>,
    /// Up to 32 CIDRs or addresses the client may call from (default: anywhere).
    allowed_networks: Option<Vec<String>>,
}

impl From<CreateClientRequest> for ClientDraft {
    fn from(req: CreateClientRequest) -> Self {
        ClientDraft {
            name: req.name,
            scopes: req.scopes,
            rate_limit: req.rate_limit,
            expires_at: req.expires_at,
            metadata: req.metadata,
            credits: req.credits.map(CreditsDraft::from),
            allowed_networks: req.allowed_networks,
        }
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Any of the fields; `"expires_at": null` clears the expiry and `"credits": null` the
/// credits; other fields may not be null (`"allowed_networks": []` allows anywhere).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClientRequest {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    scopes: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    rate_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<bool>)]
    enabled: Option<Option<bool>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<CreditsRequest>)]
    credits: Option<Option<CreditsRequest>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    allowed_networks: Option<Option<Vec<String>>>,
}

impl UpdateClientRequest {
    pub(crate) fn into_changes(self) -> Result<ClientChanges, domain::Error> {
        fn required<T>(field: &str, v: Option<Option<T>>) -> Result<Option<T>, domain::Error> {
            match v {
                Some(None) => Err(domain::Error::invalid(
                    &format!("/{field}"),
                    "may not be null",
                )),
                other => Ok(other.flatten()),
            }
        }
        Ok(ClientChanges {
            name: required("name", self.name)?,
            scopes: required("scopes", self.scopes)?,
            rate_limit: required("rate_limit", self.rate_limit)?,
            enabled: required("enabled", self.enabled)?,
            expires_at: self.expires_at,
            metadata: required("metadata", self.metadata)?,
            credits: self.credits.map(|c| c.map(CreditsDraft::from)),
            allowed_networks: required("allowed_networks", self.allowed_networks)?,
        })
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    /// How long the old key keeps working, 0..=604800 (default 0: it stops now).
    pub(crate) grace_period_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListClientsParams {
    /// Include disabled clients (default false).
    include_disabled: Option<bool>,
    /// Page size, 1..=500 (default 100).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Case-insensitive substring of the name.
    q: Option<String>,
    /// Only clients holding this scope.
    scope: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientListResponse {
    pub clients: Vec<ClientResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    client_id: Option<String>,
    /// Page size, 1..=500 (default 100).
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEventResponse {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub client_id: Option<String>,
    #[schema(value_type = Object)]
    pub changes: Value,
}

impl From<AuditEvent> for AuditEventResponse {
    fn from(e: AuditEvent) -> Self {
        AuditEventResponse {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            client_id: e.client_id,
            changes: e.changes,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditListResponse {
    pub events: Vec<AuditEventResponse>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/admin/clients", tag = "admin", request_body = CreateClientRequest,
    responses((status = 201, body = ClientWithKeyResponse), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn create_client(
    State(state): State<AppState>,
    caller: Admin,
    ApiJson(req): ApiJson<CreateClientRequest>,
) -> Result<(StatusCode, Json<ClientWithKeyResponse>), ApiError> {
    let (client, key) = state
        .admin
        .create(&caller.actor, req.into(), domain::now())
        .await?;
    let body = ClientWithKeyResponse {
        client: client.into(),
        api_key: key.expose().to_string(),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/admin/clients", tag = "admin", params(ListClientsParams),
    responses((status = 200, body = ClientListResponse), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_clients(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(params): ApiQuery<ListClientsParams>,
) -> Result<Json<ClientListResponse>, ApiError> {
    let request = ListRequest {
        include_disabled: params.include_disabled.unwrap_or(false),
        name_contains: params.q,
        scope: params.scope,
        cursor: params.cursor,
        limit: params.limit,
    };
    let page = state.admin.list(request).await?;
    Ok(Json(ClientListResponse {
        clients: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/admin/clients/{client_id}", tag = "admin",
    params(("client_id" = String, Path)),
    responses((status = 200, body = ClientResponse), (status = 404, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_client(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<ClientResponse>, ApiError> {
    Ok(Json(state.admin.get(&ClientId::parse(&id)?).await?.into()))
}

#[utoipa::path(patch, path = "/admin/clients/{client_id}", tag = "admin",
    params(("client_id" = String, Path)), request_body = UpdateClientRequest,
    responses((status = 200, body = ClientResponse), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn update_client(
    State(state): State<AppState>,
    caller: Admin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateClientRequest>,
) -> Result<Json<ClientResponse>, ApiError> {
    let changes = req.into_changes()?;
    let client = state
        .admin
        .update(
            &caller.actor,
            &ClientId::parse(&id)?,
            changes,
            domain::now(),
        )
        .await?;
    Ok(Json(client.into()))
}

#[utoipa::path(post, path = "/admin/clients/{client_id}/disable", tag = "admin",
    params(("client_id" = String, Path)),
    responses((status = 200, body = ClientResponse), (status = 404, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn disable_client(
    State(state): State<AppState>,
    caller: Admin,
    Path(id): Path<String>,
) -> Result<Json<ClientResponse>, ApiError> {
    let client = state
        .admin
        .set_enabled(&caller.actor, &ClientId::parse(&id)?, false, domain::now())
        .await?;
    Ok(Json(client.into()))
}

#[utoipa::path(post, path = "/admin/clients/{client_id}/enable", tag = "admin",
    params(("client_id" = String, Path)),
    responses((status = 200, body = ClientResponse), (status = 404, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn enable_client(
    State(state): State<AppState>,
    caller: Admin,
    Path(id): Path<String>,
) -> Result<Json<ClientResponse>, ApiError> {
    let client = state
        .admin
        .set_enabled(&caller.actor, &ClientId::parse(&id)?, true, domain::now())
        .await?;
    Ok(Json(client.into()))
}

#[utoipa::path(post, path = "/admin/clients/{client_id}/regenerate", tag = "admin",
    params(("client_id" = String, Path)), request_body(content = Option<RegenerateRequest>),
    responses((status = 200, body = ClientWithKeyResponse), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn regenerate_key(
    State(state): State<AppState>,
    caller: Admin,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RegenerateRequest>,
) -> Result<Json<ClientWithKeyResponse>, ApiError> {
    let grace = req.grace_period_seconds.unwrap_or(0);
    let (client, key) = state
        .admin
        .regenerate(&caller.actor, &ClientId::parse(&id)?, grace, domain::now())
        .await?;
    Ok(Json(ClientWithKeyResponse {
        client: client.into(),
        api_key: key.expose().to_string(),
    }))
}

#[utoipa::path(delete, path = "/admin/clients/{client_id}", tag = "admin",
    params(("client_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete_client(
    State(state): State<AppState>,
    caller: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .admin
        .delete(&caller.actor, &ClientId::parse(&id)?, domain::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", params(AuditParams),
    responses((status = 200, body = AuditListResponse), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_audit(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditListResponse>, ApiError> {
    let request = AuditRequest {
        client_id: params.client_id,
        cursor: params.cursor,
        limit: params.limit,
    };
    let page = state.admin.audit(request).await?;
    Ok(Json(AuditListResponse {
        events: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}
