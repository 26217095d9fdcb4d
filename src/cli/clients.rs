//! `relay clients …`: the admin API's client operations against the configured database,
//! acting as `cli`, with a table or the API's JSON as output.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{explain, print_json, printable};
use crate::domain;
use crate::domain::api_key::PlainKey;
use crate::domain::audit::Actor;
use crate::domain::client::{Client, ClientChanges, ClientDraft, ClientId};
use crate::domain::policy::{CreditsDraft, RefillDraft};
use crate::http::{ClientListResponse, ClientResponse, ClientWithKeyResponse, CreditsView};
use crate::service::admin::{ClientAdmin, ListRequest, MAX_PAGE};
use crate::storage::Store;

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
        #[command(flatten)]
        credits: CreditArgs,
        /// Comma-separated CIDRs or addresses the client may call from (default: anywhere).
        #[arg(long, value_delimiter = ',')]
        allowed_networks: Option<Vec<String>>,
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
        #[command(flatten)]
        credits: CreditArgs,
        /// Remove the credits (unlimited use).
        #[arg(long, conflicts_with = "credits")]
        no_credits: bool,
        #[arg(long, value_delimiter = ',', conflicts_with = "no_networks")]
        allowed_networks: Option<Vec<String>>,
        /// Allow calls from anywhere.
        #[arg(long)]
        no_networks: bool,
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

/// Usage credits: a balance, and optionally a refill at the start of every UTC day or month.
#[derive(Args, Debug)]
pub struct CreditArgs {
    /// Usage credits: each request uses one (default: unlimited).
    #[arg(long)]
    credits: Option<i64>,
    /// Set the credits to this at the start of every refill interval.
    #[arg(long, requires_all = ["credits", "refill_interval"])]
    refill_amount: Option<i64>,
    /// day or month (UTC).
    #[arg(long, requires = "refill_amount")]
    refill_interval: Option<String>,
}

impl CreditArgs {
    fn draft(self) -> Option<CreditsDraft> {
        let refill = self
            .refill_amount
            .zip(self.refill_interval)
            .map(|(amount, interval)| RefillDraft { amount, interval });
        self.credits
            .map(|remaining| CreditsDraft { remaining, refill })
    }
}

fn parse_metadata(text: Option<String>) -> anyhow::Result<Option<Value>> {
    text.map(|t| serde_json::from_str(&t).context("--metadata must be JSON"))
        .transpose()
}

pub async fn run(store: Arc<dyn Store>, command: ClientsCommand, json: bool) -> anyhow::Result<()> {
    // No cache here: running servers learn of these changes from the change log.
    let admin = ClientAdmin::new(store, None);
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
            credits,
            allowed_networks,
        } => {
            let draft = ClientDraft {
                name,
                scopes,
                rate_limit,
                expires_at,
                metadata: parse_metadata(metadata)?,
                credits: credits.draft(),
                allowed_networks,
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
                    limit: Some(i64::from(MAX_PAGE)),
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
            credits,
            no_credits,
            allowed_networks,
            no_networks,
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
                credits: if no_credits {
                    Some(None)
                } else {
                    credits.draft().map(Some)
                },
                allowed_networks: if no_networks {
                    Some(Vec::new())
                } else {
                    allowed_networks
                },
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
    println!("credits       {}", credits_text(client.credits.as_ref()));
    let networks = client.allowed_networks.join(",");
    println!(
        "networks      {}",
        if networks.is_empty() {
            "anywhere"
        } else {
            &networks
        }
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

/// `unlimited`, or what is left and the refill: `40 (refill 100/day)`.
fn credits_text(credits: Option<&CreditsView>) -> String {
    match credits {
        None => "unlimited".into(),
        Some(c) => match &c.refill {
            None => c.remaining.to_string(),
            Some(r) => format!("{} (refill {}/{})", c.remaining, r.amount, r.interval),
        },
    }
}

fn print_table(clients: &[ClientResponse]) {
    let rows: Vec<[String; 7]> = clients
        .iter()
        .map(|c| {
            [
                printable(&c.client_id).into_owned(),
                printable(&c.name).into_owned(),
                printable(&c.scopes.join(",")).into_owned(),
                c.rate_limit.to_string(),
                if c.enabled { "yes".into() } else { "no".into() },
                c.key_prefix.clone().unwrap_or_else(|| "-".into()),
                c.credits
                    .as_ref()
                    .map_or_else(|| "-".into(), |c| c.remaining.to_string()),
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
        "CREDITS",
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
