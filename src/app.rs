//! Application wiring: builds the services and the background tasks, and `serve`, which runs
//! the HTTP service on a bound listener until a shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::ClientCache;
use crate::cache::change_feed::ChangeFeed;
use crate::config::ServeConfig;
use crate::domain::signing_key::SeedSeal;
use crate::http::{AppState, Relay, Shared};
use crate::limiter::{FailedAuthLimiter, LocalRateLimiter, RateLimiter, RedisRateLimiter};
use crate::metrics::Metrics;
use crate::service::admin::ClientAdmin;
use crate::service::auth::{Gate, GateParts};
use crate::service::console::ConsoleSessions;
use crate::service::credits::{CreditLeases, IDLE_GIVE_BACK};
use crate::service::health::Health;
use crate::service::keyring::{KeyRing, SigningKeys};
use crate::service::last_used::LastUse;
use crate::service::legacy_key::LegacyKeys;
use crate::service::meter::{Meter, MeterMetrics};
use crate::service::token::TokenService;
use crate::service::usage::UsageReports;
use crate::storage::Store;

const CHANGE_POLL: Duration = Duration::from_millis(500);
const SWEEP: Duration = Duration::from_secs(60);
const CHANGE_RETENTION: chrono::Duration = chrono::Duration::hours(1);
/// Usage batch ids are kept this long: far longer than any flush is retried.
const USAGE_BATCH_RETENTION: chrono::Duration = chrono::Duration::days(2);

/// Serves until `shutdown` resolves, then lets in-flight requests finish (for at most the
/// shutdown grace period), stops the background tasks and writes what is held in memory
/// (`last_used_at`, usage counts).
pub async fn serve(
    config: &ServeConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cache = ClientCache::new(config.cache_capacity, config.cache_ttl);
    let last_used = LastUse::default();
    let metrics = Arc::new(Metrics::default());
    let meter = Arc::new(Meter::new(
        config.usage.enabled,
        config.routes.routes().iter().map(|r| r.prefix.clone()),
        config.usage.capacity,
        MeterMetrics {
            dropped: metrics.usage_dropped.clone(),
            flush_failures: metrics.usage_flush_failures.clone(),
        },
    )?);
    store.prepare_usage(crate::domain::now()).await?;
    let limiter: Arc<dyn RateLimiter> = match &config.redis {
        Some(redis) => Arc::new(RedisRateLimiter::start(
            redis.url.expose_secret(),
            &redis.prefix,
            metrics.limiter_fallbacks.clone(),
        )?),
        None => Arc::new(LocalRateLimiter::default()),
    };
    let failed_auth = Arc::new(FailedAuthLimiter::default());
    let feed = ChangeFeed::start(store.clone(), cache.clone()).await?;
    let token_lifetime = chrono::Duration::seconds(i64::from(config.tokens.ttl_seconds))
        + chrono::Duration::seconds(crate::domain::access_token::LEEWAY_SECONDS);
    let keyring = Arc::new(KeyRing::new(token_lifetime));
    let seal = config
        .signing_key_secret
        .as_ref()
        .map(|secret| SeedSeal::from_secret(secret.expose_secret()));
    let signing_keys = Arc::new(SigningKeys::new(store.clone(), seal));
    signing_keys
        .load_into(&keyring, crate::domain::now())
        .await?;
    let legacy = LegacyKeys::new(
        store.clone(),
        config.legacy_bcrypt_concurrency,
        metrics.legacy_bcrypt_checks.clone(),
        metrics.legacy_checks_queued.clone(),
    );
    let credits = Arc::new(CreditLeases::new(store.clone()));
    let gate = Arc::new(Gate::new(GateParts {
        store: store.clone(),
        cache: cache.clone(),
        last_used: last_used.clone(),
        meter: meter.clone(),
        metrics: metrics.clone(),
        admin_token: config.admin_token.clone(),
        legacy,
        failed_auth: failed_auth.clone(),
        limiter: limiter.clone(),
        credits: credits.clone(),
        keyring: keyring.clone(),
        tokens: config.tokens.clone(),
    }));
    let state = AppState::new(Shared {
        admin: Arc::new(
            ClientAdmin::new(store.clone(), Some(cache.clone()))
                .with_credit_leases(credits.clone()),
        ),
        usage: Arc::new(UsageReports::new(store.clone())),
        console: Arc::new(ConsoleSessions::new(store.clone(), gate.clone())),
        signing_keys: signing_keys.clone(),
        console_cookie_secure: config.tokens.issuer.starts_with("https://"),
        tokens: Arc::new(TokenService::new(
            gate.clone(),
            keyring.clone(),
            config.tokens.clone(),
        )),
        gate,
        health: Health::new(store.clone(), limiter.clone()),
        relay: Relay::new(config.routes.clone(), config.upstream_timeouts),
        metrics,
        trusted_proxies: config.trusted_proxies.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let background = Background {
        store: store.clone(),
        signing_keys,
        keyring,
        cache,
        last_used: last_used.clone(),
        meter: meter.clone(),
        credits: credits.clone(),
        flush_interval: config.usage.flush_interval,
        limiter,
        failed_auth,
    };
    let background = tokio::spawn(background.run(feed, stopped));

    let app = crate::http::router(state);
    tracing::info!(address = %listener.local_addr()?, "listening");
    crate::server::run(listener, app, config.connections, shutdown).await;

    let _ = stop.send(true);
    if let Err(e) = background.await {
        tracing::error!(error = %e, "background task failed");
    }
    if let Err(e) = last_used.flush(store.as_ref(), None).await {
        tracing::error!(error = %e, "could not record last use at shutdown");
    }
    if let Err(e) = meter.flush(store.as_ref(), crate::domain::now()).await {
        tracing::error!(error = %e, "could not write the usage counts at shutdown; they are lost");
    }
    if let Err(e) = credits.give_back(crate::domain::now(), None).await {
        tracing::error!(error = %e, "could not give back leased credits at shutdown; they stay spent until the next refill");
    }
    Ok(())
}

/// Periodic work: follow the change log and the signing keys (both every 500 ms, so a change
/// anywhere is in force here within a second) and give back idle credit leases, write uses (`last_used_at` and usage counts),
/// sweep limiter and cache state, keep usage storage ready and within its retention.
struct Background {
    store: Arc<dyn Store>,
    signing_keys: Arc<SigningKeys>,
    keyring: Arc<KeyRing>,
    cache: ClientCache,
    last_used: LastUse,
    meter: Arc<Meter>,
    credits: Arc<CreditLeases>,
    flush_interval: Duration,
    limiter: Arc<dyn RateLimiter>,
    failed_auth: Arc<FailedAuthLimiter>,
}

impl Background {
    /// Storage for the coming buckets, and retention for the old ones.
    async fn maintain_usage(&self, now: chrono::DateTime<chrono::Utc>) {
        if let Err(e) = self.store.prepare_usage(now).await {
            tracing::warn!(error = %e, "could not prepare usage storage");
        }
        let cutoffs = crate::domain::usage::retention_cutoffs(now);
        if let Err(e) = self
            .store
            .prune_usage(&cutoffs, now - USAGE_BATCH_RETENTION)
            .await
        {
            tracing::warn!(error = %e, "could not prune old usage counts");
        }
    }

    /// Three loops side by side, so a long write (a flush after a burst from many clients)
    /// never holds back following the change log, whose promise is a second.
    async fn run(self, feed: ChangeFeed, stopped: watch::Receiver<bool>) {
        tokio::join!(
            self.follow(feed, stopped.clone()),
            self.write_uses(stopped.clone()),
            self.sweep(stopped),
        );
    }

    async fn follow(&self, mut feed: ChangeFeed, mut stopped: watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(CHANGE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = poll.tick() => {}
            }
            if let Err(e) = feed.poll().await {
                tracing::warn!(error = %e, "could not read the change log");
            }
            let now = crate::domain::now();
            if let Err(e) = self.signing_keys.load_into(&self.keyring, now).await {
                tracing::warn!(error = %e, "could not reload the signing keys");
            }
            if let Err(e) = self.credits.give_back(now, Some(IDLE_GIVE_BACK)).await {
                tracing::warn!(error = %e, "could not give back idle credit leases; kept for the next try");
            }
        }
    }

    /// Usage counts first, then last uses in what is left of the interval: when the database
    /// cannot keep up with both, last uses lag and no count is lost.
    async fn write_uses(&self, mut stopped: watch::Receiver<bool>) {
        // The first flush waits a whole interval: an immediate first tick, delayed by a busy
        // start, could write the first uses at an arbitrary moment instead of on the schedule.
        let first_flush = tokio::time::Instant::now() + self.flush_interval;
        let mut flush = tokio::time::interval_at(first_flush, self.flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = flush.tick() => {}
            }
            let until = std::time::Instant::now() + self.flush_interval;
            if let Err(e) = self
                .meter
                .flush(self.store.as_ref(), crate::domain::now())
                .await
            {
                tracing::warn!(error = %e, "could not write the usage counts; kept for the next flush");
            }
            if let Err(e) = self.last_used.flush(self.store.as_ref(), Some(until)).await {
                tracing::warn!(error = %e, "could not record last use");
            }
        }
    }

    async fn sweep(&self, mut stopped: watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = sweep.tick() => {}
            }
            let now = crate::domain::now();
            self.limiter.sweep(now);
            self.failed_auth.sweep(now);
            self.cache.prune();
            if let Err(e) = self.store.prune_changes(now - CHANGE_RETENTION).await {
                tracing::warn!(error = %e, "could not prune the change log");
            }
            self.maintain_usage(now).await;
            if let Err(e) = self.store.prune_sessions(now).await {
                tracing::warn!(error = %e, "could not prune ended console sessions");
            }
        }
    }
}
