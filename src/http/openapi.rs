//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types,
//! and the route that serves it.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    Json(document())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "egregore-relay", description = "API keys, verification and administration"),
    paths(
        super::ops::health,
        super::ops::readiness,
        super::ops::metrics,
        openapi,
        super::admin::create_client,
        super::admin::list_clients,
        super::admin::get_client,
        super::admin::update_client,
        super::admin::disable_client,
        super::admin::enable_client,
        super::admin::regenerate_key,
        super::admin::delete_client,
        super::admin::list_audit,
        super::usage::usage_series,
        super::usage::top_clients,
        super::verify::verify_key,
        super::token::exchange_token,
        super::token::introspect,
        super::token::jwks,
        super::token::server_metadata,
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
