//! The `relay` command line: `serve`, `clients …` (in `clients`), `signing-keys …` (in
//! `signing_keys`), `usage` (in `usage`), `migrate`. The commands call the same services as the HTTP API, against
//! the configured database, acting as `cli`.

mod clients;
mod signing_keys;
mod usage;

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::config::{DatabaseArgs, LogFormat, ServeArgs};
use crate::domain;
use crate::domain::signing_key::SeedSeal;
use crate::service::admin::ClientAdmin;
use crate::service::keyring::SigningKeys;
use crate::service::usage::UsageReports;
use crate::storage::{self, Store};
use clients::ClientsCommand;
use signing_keys::SigningKeysCommand;

#[derive(Parser, Debug)]
#[command(
    name = "relay",
    version,
    about = "API keys and tokens in front of the Egregore backend"
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        env = "RELAY_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Manage clients directly in the database.
    Clients {
        /// Print the same JSON as the HTTP API instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Manage the keys that sign access tokens.
    SigningKeys {
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// The secret the servers seal signing keys with (see `serve --help`). Set it in the
        /// environment, not as a flag.
        #[arg(
            long,
            env = "RELAY_SIGNING_KEY_SECRET",
            hide_env_values = true,
            global = true
        )]
        signing_key_secret: Option<crate::config::SecretArg>,
        #[command(subcommand)]
        command: SigningKeysCommand,
    },
    /// Print usage counts (the series of `GET /admin/usage`) as a table, JSON or CSV.
    Usage(usage::UsageArgs),
    /// Apply the database migrations and exit.
    Migrate,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&cli.database, args).await,
        Command::Migrate => {
            open_store(&cli.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Clients { json, command } => {
            let store = open_store(&cli.database).await?;
            clients::run(store, command, json).await
        }
        Command::SigningKeys {
            json,
            signing_key_secret,
            command,
        } => {
            let seal = crate::config::parse_signing_key_secret(signing_key_secret)
                .map_err(anyhow::Error::msg)?
                .map(|secret| SeedSeal::from_secret(secret.expose_secret()));
            let store = open_store(&cli.database).await?;
            signing_keys::run(SigningKeys::new(store, seal), command, json).await
        }
        Command::Usage(args) => {
            let store = open_store(&cli.database).await?;
            usage::run(UsageReports::new(store), args).await
        }
    }
}

async fn open_store(db: &DatabaseArgs) -> anyhow::Result<Arc<dyn Store>> {
    storage::open(&db.database_url, db.db_max_connections)
        .await
        .with_context(|| {
            format!(
                "could not open the database {} (check DATABASE_URL)",
                crate::config::redact_password(&db.database_url)
            )
        })
}

async fn serve(db: &DatabaseArgs, args: ServeArgs) -> anyhow::Result<()> {
    let config = match args.into_config() {
        Ok(config) => config,
        Err(message) => bail!(message),
    };
    let store = open_store(db).await?;
    if config.admin_token.is_none() {
        let admin = ClientAdmin::new(store.clone(), None);
        if let Some((client, key)) = admin.bootstrap_admin(domain::now()).await? {
            // Printed to stdout, never to the log: this is the only time the key is shown.
            println!(
                "Created admin client {} with scope admin. Its API key, shown only this once:\n{}",
                client.client_id,
                key.expose()
            );
        }
    }
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("could not listen on {} (check RELAY_LISTEN)", config.listen))?;
    crate::app::serve(&config, store, listener, shutdown).await
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed now, before the server
/// announces itself, so a signal sent right after start is never lost.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("could not handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("could not handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}

/// Turns a domain error into a sentence for the terminal.
fn explain(e: domain::Error) -> anyhow::Error {
    match e {
        domain::Error::Invalid(errors) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.pointer.trim_start_matches('/'), e.detail))
                .collect();
            anyhow::anyhow!("invalid input: {}", lines.join("; "))
        }
        domain::Error::NotFound => anyhow::anyhow!("no such client"),
        domain::Error::Unavailable(_) => anyhow::anyhow!("the database is unavailable"),
        other => anyhow::Error::new(other),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Stored text as it is safe to print on a terminal: control characters (escape sequences of
/// an adopted row, say) and bidirectional controls are shown as `\u{…}` escapes.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || domain::client::reorders_or_breaks_text(c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
