//! Readiness: whether the stores the service needs answer.

use std::sync::Arc;

use crate::limiter::RateLimiter;
use crate::storage::Store;

pub struct Health {
    store: Arc<dyn Store>,
    limiter: Arc<dyn RateLimiter>,
}

impl Health {
    pub fn new(store: Arc<dyn Store>, limiter: Arc<dyn RateLimiter>) -> Self {
        Health { store, limiter }
    }

    /// `Err` names what does not answer: the database, or Redis when it is configured.
    pub async fn check(&self) -> Result<(), &'static str> {
        if let Err(e) = self.store.ping().await {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            return Err("database unavailable");
        }
        if !self.limiter.ready().await {
            return Err("redis unavailable");
        }
        Ok(())
    }
}
