//! The state every handler may use: one `Arc`, since axum clones the state for each request.

use std::sync::Arc;

use super::forward::Relay;
use crate::domain::address::TrustedProxies;
use crate::metrics::Metrics;
use crate::service::admin::ClientAdmin;
use crate::service::auth::Gate;
use crate::service::console::ConsoleSessions;
use crate::service::health::Health;
use crate::service::keyring::SigningKeys;
use crate::service::token::TokenService;
use crate::service::usage::UsageReports;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub gate: Arc<Gate>,
    pub admin: Arc<ClientAdmin>,
    pub usage: Arc<UsageReports>,
    pub console: Arc<ConsoleSessions>,
    pub signing_keys: Arc<SigningKeys>,
    /// Console cookies carry `Secure` when the service's public URL is https.
    pub console_cookie_secure: bool,
    pub tokens: Arc<TokenService>,
    pub health: Health,
    pub relay: Relay,
    pub metrics: Arc<Metrics>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}
