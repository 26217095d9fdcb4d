//! Prometheus metrics: HTTP requests and latency by route and status, verification outcomes,
//! verification-cache hits and misses. One registry per `AppState`, no global recorder.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

type LatencyFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: LatencyFamily,
    verify_outcomes: Family<OutcomeLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
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
        Metrics {
            registry,
            http_requests,
            http_latency,
            verify_outcomes,
            cache_hits,
            cache_misses,
        }
    }
}

impl Metrics {
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
