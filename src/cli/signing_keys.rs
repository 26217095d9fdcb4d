//! `relay signing-keys …`: rotate and list the keys that sign access tokens, through the same
//! service the servers load them with.

use clap::Subcommand;
use serde_json::Value;

use super::{explain, print_json};
use crate::domain;
use crate::domain::audit::Actor;
use crate::service::keyring::SigningKeys;

#[derive(Subcommand, Debug)]
pub enum SigningKeysCommand {
    /// Make a new signing key current; the previous one keeps verifying until its tokens expire.
    Rotate,
    /// List the signing keys, newest first.
    List,
}

pub async fn run(keys: SigningKeys, command: SigningKeysCommand, json: bool) -> anyhow::Result<()> {
    match command {
        SigningKeysCommand::Rotate => {
            let key = keys
                .rotate(&Actor::Cli, domain::now())
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
            let keys = keys.list().await.map_err(explain)?;
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
