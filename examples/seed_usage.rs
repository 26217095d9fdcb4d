//! Seeds hourly usage counts for the usage-query benchmark, through the store's own flush path
//! (partitions made as a server makes them): `CLIENTS` other clients each active in 30 random
//! hours of the last `DAYS` days, and `CLIENT` active in every hour of them on three endpoints.
//! Used by `bench/run.sh`.
//!
//! cargo run --release --example seed_usage -- postgres://…/db client_0123456789abcdef 100000 30

use std::time::Instant;

use chrono::Duration;
use egregore_relay::domain::usage::{Counters, Granularity, Outcome};
use egregore_relay::storage::usage::{UsageBatch, UsageRow};

/// Rows per flush written.
const BATCH: usize = 100_000;
const HOURS_ACTIVE: i64 = 30;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "sqlite://relay.db".into());
    let client: std::sync::Arc<str> = args
        .next()
        .unwrap_or_else(|| "client_0000000000000000".into())
        .into();
    let others: u32 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let days: i64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(30);
    let store = egregore_relay::storage::open(&url, 2).await?;
    let started = Instant::now();
    let now = Granularity::Hour.floor(egregore_relay::domain::now());
    let hours = days * 24;
    let counters = |n: u64| {
        let mut c = Counters::default();
        c.add(Outcome::Allowed, n);
        c.add(Outcome::RateLimited, n / 10);
        c
    };
    let mut rows = Vec::new();
    for hour in 0..hours {
        for endpoint in ["/v1/chat", "/v1/history", "verify"] {
            rows.push(UsageRow {
                client_id: client.clone(),
                bucket: now - Duration::hours(hour),
                endpoint: endpoint.into(),
                counters: counters(100 + hour as u64),
            });
        }
    }
    // A cheap, repeatable spread of each client's active hours (no RNG dependency).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..others {
        let id: std::sync::Arc<str> = format!("client_{i:016x}").into();
        let mut taken = std::collections::BTreeSet::new();
        while taken.len() < HOURS_ACTIVE.min(hours) as usize {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            taken.insert(((state >> 33) % hours as u64) as i64);
        }
        for hour in taken.into_iter().rev() {
            rows.push(UsageRow {
                client_id: id.clone(),
                bucket: now - Duration::hours(hour),
                endpoint: "/v1/chat".into(),
                counters: counters(1 + (state & 7)),
            });
        }
    }
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    let total = rows.len();
    for (n, chunk) in rows.chunks(BATCH).enumerate() {
        let batch = UsageBatch {
            id: format!("seed-{}-{n}", egregore_relay::domain::random_hex(4)?),
            at: egregore_relay::domain::now(),
            tables: vec![(Granularity::Hour, chunk.to_vec())],
        };
        store.record_usage(&batch).await?;
    }
    eprintln!(
        "seeded {total} hourly rows ({others} clients + {client}) in {:.1?}",
        started.elapsed()
    );
    Ok(())
}
