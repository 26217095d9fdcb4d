//! Seeds a relay database with N clients by bulk insert (not through the API), for the
//! scaling benchmark, and prints one of their keys; with `KEYS_FILE` set, writes every key
//! there, one per line (for traffic from all of them). Used by `bench/run.sh` and
//! `bench/live_clients.sh`.
//!
//! cargo run --release --example seed_clients -- sqlite:///tmp/relay.db 1000000

use std::io::Write;
use std::time::Instant;

use egregore_relay::domain::api_key;
use egregore_relay::domain::client::ClientId;
use sqlx::QueryBuilder;

const BATCH: usize = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "sqlite://relay.db".into());
    let count: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);
    // Creates the schema the server expects.
    drop(egregore_relay::storage::open(&url, 1).await?);
    let started = Instant::now();
    let now = egregore_relay::domain::now();
    let mut sample = String::new();
    let mut keys_file = match std::env::var_os("KEYS_FILE") {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let postgres = url.starts_with("postgres");
    let sqlite = sqlx::SqlitePool::connect(&url)
        .await
        .ok()
        .filter(|_| !postgres);
    let pg = if postgres {
        Some(sqlx::PgPool::connect(&url).await?)
    } else {
        None
    };
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let mut rows: Vec<(String, String, String)> = Vec::with_capacity(n);
        for _ in 0..n {
            let key = api_key::generate()?;
            if sample.is_empty() {
                sample = key.plain.expose().to_string();
            }
            if let Some(file) = &mut keys_file {
                writeln!(file, "{}", key.plain.expose())?;
            }
            let id = ClientId::generate()?.to_string();
            rows.push((id, key.hash.to_hex(), key.key_id.as_str().to_string()));
        }
        if let Some(pool) = &sqlite {
            let mut q = QueryBuilder::new(
                "INSERT INTO api_clients (client_id, api_key_hash, name, scopes, rate_limit, enabled, \
                 created_at, updated_at, metadata, key_id) ",
            );
            q.push_values(&rows, |mut b, (id, hash, key_id)| {
                b.push_bind(id)
                    .push_bind(hash)
                    .push_bind("seeded")
                    .push_bind(r#"["chat","history"]"#)
                    .push_bind(1_000_000_i64)
                    .push_bind(true)
                    .push_bind(now.timestamp_micros())
                    .push_bind(now.timestamp_micros())
                    .push_bind("{}")
                    .push_bind(key_id);
            });
            q.build().execute(pool).await?;
        } else if let Some(pool) = &pg {
            let mut q = QueryBuilder::new(
                "INSERT INTO api_clients (client_id, api_key_hash, name, scopes, rate_limit, enabled, \
                 created_at, updated_at, metadata, key_id) ",
            );
            q.push_values(&rows, |mut b, (id, hash, key_id)| {
                b.push_bind(id)
                    .push_bind(hash)
                    .push_bind("seeded")
                    .push_bind(vec!["chat".to_string(), "history".to_string()])
                    .push_bind(1_000_000_i32)
                    .push_bind(true)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(sqlx::types::Json(serde_json::json!({})))
                    .push_bind(key_id);
            });
            q.build().execute(pool).await?;
        }
        done += n;
    }
    if let Some(file) = &mut keys_file {
        file.flush()?;
    }
    eprintln!(
        "seeded {count} clients in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{sample}");
    Ok(())
}
