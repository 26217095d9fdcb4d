//! Micro-benchmarks of the per-request work: key parse and checksum, the lookup digest, token
//! signing and verification, a rate-limit decision. `cargo bench --bench hot_path`.

use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use egregore_relay::domain::access_token::Claims;
use egregore_relay::domain::api_key::{self, KeyHash};
use egregore_relay::domain::client::{ClientDraft, ClientId, NewClient};
use egregore_relay::domain::rate_limit;
use egregore_relay::domain::signing_key::SigningKey;
use egregore_relay::domain::usage::Outcome;
use egregore_relay::limiter::{LocalRateLimiter, RateLimiter};
use egregore_relay::service::keyring::KeyRing;
use egregore_relay::service::meter::{Endpoint, Meter, MeterMetrics};

fn claims() -> Claims {
    let now = Utc::now().timestamp();
    Claims {
        iss: "http://127.0.0.1:8080".into(),
        sub: "client_0123456789abcdef".into(),
        client_id: "client_0123456789abcdef".into(),
        aud: "egregore-relay".into(),
        iat: now,
        exp: now + 900,
        nbf: None,
        jti: "0123456789abcdef0123456789abcdef".into(),
        scope: "chat history".into(),
        generation: 0,
    }
}

fn hot_path(c: &mut Criterion) {
    let key = api_key::generate().unwrap_or_else(|e| panic!("{e}"));
    let text = key.plain.expose().to_string();
    c.bench_function("key parse + checksum + digest", |b| {
        b.iter(|| api_key::parse(black_box(&text)))
    });
    c.bench_function("SHA-256 lookup digest", |b| {
        b.iter(|| KeyHash::of(black_box(&text)))
    });

    let ring = KeyRing::new(Duration::seconds(900));
    let now = Utc::now();
    ring.load(
        &[SigningKey::generate(now).unwrap_or_else(|e| panic!("{e}"))],
        now,
    );
    let claims = claims();
    c.bench_function("token sign", |b| b.iter(|| ring.sign(black_box(&claims))));
    let token = ring.sign(&claims).unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("token verify (signature)", |b| {
        b.iter(|| ring.check_signature(black_box(&token)))
    });

    c.bench_function("rate-limit decision (GCRA arithmetic)", |b| {
        b.iter(|| rate_limit::decide(black_box(100), black_box(Some(1_000)), black_box(2_000)))
    });
    let limiter = LocalRateLimiter::default();
    let client = ClientId::new("client_0123456789abcdef");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("rate-limit decision (in-process limiter)", |b| {
        b.iter(|| runtime.block_on(limiter.acquire(&client, 1_000_000, now)))
    });

    // What usage analytics adds to a request: one count into this thread's shard.
    let meter = Meter::new(
        true,
        ["/v1/chat".to_string()],
        1_000_000,
        MeterMetrics::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let draft = ClientDraft {
        name: "bench".into(),
        ..ClientDraft::default()
    };
    let owner = NewClient::validate(draft, now)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_client(client.clone(), &key, now);
    c.bench_function("usage count (meter, one client)", |b| {
        b.iter(|| {
            meter.count(
                Some(black_box(&owner)),
                Endpoint::Route("/v1/chat"),
                Outcome::Allowed,
                now,
            )
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
