//! Prometheus metrics: HTTP requests and latency by route and status, verification outcomes,
//! verification-cache hits and misses. One registry per `AppState`, no global recorder.

use std::collections::HashSet;
use std::sync::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: &'static str,
    kind: &'static str,
}

type LatencyFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;
type RouteLatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: LatencyFamily,
    verify_outcomes: Family<OutcomeLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    /// Rate-limit decisions taken per node because Redis could not be reached.
    pub limiter_fallbacks: Counter,
    /// bcrypt comparisons made for keys of the original service.
    pub legacy_bcrypt_checks: Counter,
    /// Checks of keys of the original service queued or running now.
    pub legacy_checks_queued: Gauge,
    /// Uses not counted for usage analytics because the counters in memory were full.
    pub usage_dropped: Counter,
    /// Usage flushes that failed (their counts are kept and written later).
    pub usage_flush_failures: Counter,
    upstream_latency: RouteLatencyFamily,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    relay_rate_limited: Family<RouteLabels, Counter>,
    routes: RwLock<HashSet<&'static str>>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3 s: the service's own endpoints answer in microseconds when warm.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 3.0, 11,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("relay");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency = LatencyFamily::new_with_constructor(latency_histogram);
        let verify_outcomes = Family::<OutcomeLabels, Counter>::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to produce the response head",
            http_latency.clone(),
        );
        registry.register(
            "key_verifications",
            "API key verifications by outcome",
            verify_outcomes.clone(),
        );
        registry.register(
            "key_cache_hits",
            "Verification cache hits",
            cache_hits.clone(),
        );
        registry.register(
            "key_cache_misses",
            "Verification cache misses",
            cache_misses.clone(),
        );
        let limiter_fallbacks = Counter::default();
        registry.register(
            "rate_limiter_fallbacks",
            "Rate-limit decisions taken per node because Redis was unreachable",
            limiter_fallbacks.clone(),
        );
        let legacy_bcrypt_checks = Counter::default();
        registry.register(
            "legacy_bcrypt_checks",
            "bcrypt comparisons made for keys adopted from the original service",
            legacy_bcrypt_checks.clone(),
        );
        let legacy_checks_queued = Gauge::default();
        registry.register(
            "legacy_key_checks_queued",
            "Checks of keys adopted from the original service queued or running",
            legacy_checks_queued.clone(),
        );
        let usage_dropped = Counter::default();
        registry.register(
            "usage_counts_dropped",
            "Uses not counted for usage analytics because the counters in memory were full",
            usage_dropped.clone(),
        );
        let usage_flush_failures = Counter::default();
        registry.register(
            "usage_flush_failures",
            "Usage flushes that failed; their counts are kept and written by a later flush",
            usage_flush_failures.clone(),
        );
        let upstream_latency = RouteLatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_response_seconds",
            "Time for the upstream's response head, by relay route",
            upstream_latency.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Relay requests the upstream did not answer (unreachable, timeout, failed)",
            upstream_errors.clone(),
        );
        let relay_rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "relay_rate_limited",
            "Relay requests refused by the client's rate limit",
            relay_rate_limited.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_latency,
            verify_outcomes,
            cache_hits,
            cache_misses,
            limiter_fallbacks,
            legacy_bcrypt_checks,
            legacy_checks_queued,
            usage_dropped,
            usage_flush_failures,
            upstream_latency,
            upstream_errors,
            relay_rate_limited,
            routes: RwLock::new(HashSet::new()),
        }
    }
}

impl Metrics {
    /// A route label that lives as long as the process, without an allocation per request:
    /// the set of routes is fixed (the router's paths and the configured relay prefixes), so
    /// each is leaked once.
    pub fn route_label(&self, route: &str) -> &'static str {
        if let Some(known) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
        {
            return known;
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        match routes.get(route) {
            Some(known) => known,
            None => {
                let leaked: &'static str = Box::leak(route.to_string().into_boxed_str());
                routes.insert(leaked);
                leaked
            }
        }
    }

    pub fn observe_http(&self, labels: HttpLabels, seconds: f64) {
        self.http_latency.get_or_create(&labels).observe(seconds);
        self.http_requests.get_or_create(&labels).inc();
    }

    /// `outcome` is `valid` or a verification code in lower case.
    pub fn observe_verification(&self, outcome: &'static str) {
        self.verify_outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn observe_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc()
        } else {
            self.cache_misses.inc()
        };
    }

    pub fn observe_upstream(&self, route: &str, seconds: f64) {
        let labels = RouteLabels {
            route: self.route_label(route),
        };
        self.upstream_latency
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// `kind` is `unreachable`, `timeout` or `failed`.
    pub fn observe_upstream_error(&self, route: &str, kind: &'static str) {
        let labels = UpstreamErrorLabels {
            route: self.route_label(route),
            kind,
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    pub fn observe_relay_rate_limited(&self, route: &str) {
        let labels = RouteLabels {
            route: self.route_label(route),
        };
        self.relay_rate_limited.get_or_create(&labels).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
