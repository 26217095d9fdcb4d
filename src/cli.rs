//! The `relay` command line: `serve`, `clients …`, `migrate`. The `clients` commands call the
//! same operations as the admin API, against the configured database, acting as `cli`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::admin::{ClientAdmin, ListRequest};
use crate::cache::KeyCache;
use crate::config::{DatabaseArgs, LogFormat, ServeArgs};
use crate::domain::audit::Actor;
use crate::domain::client::{Client, ClientChanges, ClientDraft, ClientId};
use crate::domain::signing_key::SeedSeal;
use crate::domain::{self, api_key::PlainKey};
use crate::http::{ClientListResponse, ClientResponse, ClientWithKeyResponse};
use crate::storage::{self, Store};

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
    /// Apply the database migrations and exit.
    Migrate,
}

#[derive(Subcommand, Debug)]
pub enum SigningKeysCommand {
    /// Make a new signing key current; the previous one keeps verifying until its tokens expire.
    Rotate,
    /// List the signing keys, newest first.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// Create a client and print its API key once.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated scopes (default chat,history).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        rate_limit: Option<i64>,
        /// RFC 3339 timestamp with offset.
        #[arg(long)]
        expires_at: Option<String>,
        /// A JSON object.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// List clients, newest first.
    List {
        #[arg(long)]
        include_disabled: bool,
        /// Case-insensitive substring of the name.
        #[arg(long)]
        q: Option<String>,
        #[arg(long)]
        scope: Option<String>,
    },
    /// Show one client.
    Show { client_id: String },
    /// Change a client's settings.
    Update {
        client_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        rate_limit: Option<i64>,
        #[arg(long, conflicts_with = "no_expiry")]
        expires_at: Option<String>,
        /// Remove the expiry.
        #[arg(long)]
        no_expiry: bool,
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Disable a client (its keys stop working).
    Disable { client_id: String },
    /// Enable a client again.
    Enable { client_id: String },
    /// Issue a new key; the old one stops now or after --grace seconds.
    Regenerate {
        client_id: String,
        #[arg(long, default_value_t = 0)]
        grace: i64,
    },
    /// Delete a client for good.
    Delete {
        client_id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
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
            clients(store, command, json).await
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
            signing_keys(store.as_ref(), seal.as_ref(), command, json).await
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
        let admin = ClientAdmin::new(store.clone(), KeyCache::new(1, Duration::ZERO));
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

fn parse_metadata(text: Option<String>) -> anyhow::Result<Option<Value>> {
    text.map(|t| serde_json::from_str(&t).context("--metadata must be JSON"))
        .transpose()
}

async fn clients(store: Arc<dyn Store>, command: ClientsCommand, json: bool) -> anyhow::Result<()> {
    let admin = ClientAdmin::new(store, KeyCache::new(1, Duration::ZERO));
    let actor = Actor::Cli;
    let now = domain::now();
    let id = |text: &str| ClientId::parse(text).map_err(explain);
    match command {
        ClientsCommand::Create {
            name,
            scopes,
            rate_limit,
            expires_at,
            metadata,
        } => {
            let draft = ClientDraft {
                name,
                scopes,
                rate_limit,
                expires_at,
                metadata: parse_metadata(metadata)?,
            };
            let (client, key) = admin.create(&actor, draft, now).await.map_err(explain)?;
            print_with_key(client, &key, json)
        }
        ClientsCommand::List {
            include_disabled,
            q,
            scope,
        } => {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let request = ListRequest {
                    include_disabled,
                    name_contains: q.clone(),
                    scope: scope.clone(),
                    cursor,
                    limit: Some(i64::from(crate::admin::MAX_PAGE)),
                };
                let page = admin.list(request).await.map_err(explain)?;
                all.extend(page.items.into_iter().map(ClientResponse::from));
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
            if json {
                print_json(&ClientListResponse {
                    clients: all,
                    next_cursor: None,
                })
            } else {
                print_table(&all);
                Ok(())
            }
        }
        ClientsCommand::Show { client_id } => {
            print_client(admin.get(&id(&client_id)?).await.map_err(explain)?, json)
        }
        ClientsCommand::Update {
            client_id,
            name,
            scopes,
            rate_limit,
            expires_at,
            no_expiry,
            metadata,
        } => {
            let changes = ClientChanges {
                name,
                scopes,
                rate_limit,
                enabled: None,
                expires_at: if no_expiry {
                    Some(None)
                } else {
                    expires_at.map(Some)
                },
                metadata: parse_metadata(metadata)?,
            };
            let client = admin
                .update(&actor, &id(&client_id)?, changes, now)
                .await
                .map_err(explain)?;
            print_client(client, json)
        }
        ClientsCommand::Disable { client_id } => {
            let client = admin
                .set_enabled(&actor, &id(&client_id)?, false, now)
                .await
                .map_err(explain)?;
            print_client(client, json)
        }
        ClientsCommand::Enable { client_id } => {
            let client = admin
                .set_enabled(&actor, &id(&client_id)?, true, now)
                .await
                .map_err(explain)?;
            print_client(client, json)
        }
        ClientsCommand::Regenerate { client_id, grace } => {
            let (client, key) = admin
                .regenerate(&actor, &id(&client_id)?, grace, now)
                .await
                .map_err(explain)?;
            print_with_key(client, &key, json)
        }
        ClientsCommand::Delete { client_id, yes } => {
            if !yes && !confirm(&format!("Delete client {client_id} for good?"))? {
                bail!("not deleted (pass --yes to delete without asking)");
            }
            admin
                .delete(&actor, &id(&client_id)?, now)
                .await
                .map_err(explain)?;
            if json {
                print_json(&serde_json::json!({"deleted": client_id}))
            } else {
                println!("deleted {client_id}");
                Ok(())
            }
        }
    }
}

async fn signing_keys(
    store: &dyn Store,
    seal: Option<&SeedSeal>,
    command: SigningKeysCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        SigningKeysCommand::Rotate => {
            let sealed = store.signing_keys().await?.iter().any(|k| k.is_sealed());
            if sealed && seal.is_none() {
                bail!(
                    "the signing keys are sealed: set RELAY_SIGNING_KEY_SECRET to the servers' secret"
                );
            }
            let key = crate::token::rotate_signing_key(store, seal, &Actor::Cli, domain::now())
                .await
                .map_err(explain)?;
            if json {
                print_json(&serde_json::json!({"kid": key.kid, "created_at": key.created_at}))
            } else {
                println!(
                    "rotated: {} signs new tokens; servers pick it up within a second",
                    key.kid
                );
                Ok(())
            }
        }
        SigningKeysCommand::List => {
            let keys = store.signing_keys().await?;
            let rows: Vec<Value> = keys
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kid": k.kid,
                        "created_at": k.created_at,
                        "retired_at": k.retired_at,
                        "current": k.retired_at.is_none(),
                        "sealed": k.is_sealed(),
                    })
                })
                .collect();
            if json {
                return print_json(&serde_json::json!({ "keys": rows }));
            }
            println!(
                "{:<44}  {:<8}  {:<6}  {:<32}  RETIRED_AT",
                "KID", "STATUS", "SEALED", "CREATED_AT"
            );
            for k in &keys {
                let status = if k.retired_at.is_none() {
                    "current"
                } else {
                    "retired"
                };
                let retired = k.retired_at.map_or("-".to_string(), |t| t.to_rfc3339());
                let sealed = if k.is_sealed() { "yes" } else { "no" };
                println!(
                    "{:<44}  {:<8}  {:<6}  {:<32}  {}",
                    k.kid,
                    status,
                    sealed,
                    k.created_at.to_rfc3339(),
                    retired
                );
            }
            Ok(())
        }
    }
}

/// Asks on a terminal; refuses when stdin is not one.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
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

fn print_client(client: Client, json: bool) -> anyhow::Result<()> {
    let client = ClientResponse::from(client);
    if json {
        return print_json(&client);
    }
    let show =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_string(), |t| t.to_rfc3339());
    println!("client_id     {}", printable(&client.client_id));
    println!("name          {}", printable(&client.name));
    println!("scopes        {}", printable(&client.scopes.join(",")));
    println!("rate_limit    {}/min", client.rate_limit);
    println!("enabled       {}", client.enabled);
    println!("expires_at    {}", show(client.expires_at));
    println!(
        "key_prefix    {}",
        client.key_prefix.as_deref().unwrap_or("-")
    );
    println!(
        "metadata      {}",
        printable(&Value::Object(client.metadata).to_string())
    );
    println!("created_at    {}", client.created_at.to_rfc3339());
    println!("updated_at    {}", client.updated_at.to_rfc3339());
    println!("last_used_at  {}", show(client.last_used_at));
    Ok(())
}

fn print_with_key(client: Client, key: &PlainKey, json: bool) -> anyhow::Result<()> {
    if json {
        let body = ClientWithKeyResponse {
            client: client.into(),
            api_key: key.expose().into(),
        };
        return print_json(&body);
    }
    print_client(client, false)?;
    println!("\nAPI key (shown only this once):\n{}", key.expose());
    Ok(())
}

fn print_table(clients: &[ClientResponse]) {
    let rows: Vec<[String; 6]> = clients
        .iter()
        .map(|c| {
            [
                printable(&c.client_id).into_owned(),
                printable(&c.name).into_owned(),
                printable(&c.scopes.join(",")).into_owned(),
                c.rate_limit.to_string(),
                if c.enabled { "yes".into() } else { "no".into() },
                c.key_prefix.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "CLIENT_ID",
        "NAME",
        "SCOPES",
        "RATE/MIN",
        "ENABLED",
        "KEY_PREFIX",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
