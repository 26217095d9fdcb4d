//! Configuration: flags and environment variables (clap, so `relay serve --help` is the
//! reference), validated once at startup into plain values handed down to each part.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use crate::domain::access_token::{MAX_TTL_SECONDS, MIN_TTL_SECONDS, TokenSettings};

/// Where the data lives; shared by every command.
#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// Database URL: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://relay.db",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,
    /// Largest number of pooled database connections.
    #[arg(
        long,
        env = "RELAY_DB_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub db_max_connections: u32,
}

impl fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("database_url", &redact_password(&self.database_url))
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin bearer token (at least 32 characters). Unset or empty: admin clients only, and
    /// on a database without one, `serve` creates client `admin` and prints its key once.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seconds a verified key stays in the verification cache.
    #[arg(long, env = "RELAY_CACHE_TTL", default_value_t = 30)]
    pub cache_ttl: u64,
    /// Largest number of keys in the verification cache.
    #[arg(long, env = "RELAY_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: usize,
    /// Comma-separated proxy addresses whose X-Forwarded-For is believed.
    #[arg(long, env = "RELAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// Lifetime of access tokens in seconds (60..=86400).
    #[arg(long, env = "RELAY_TOKEN_TTL", default_value_t = 900)]
    pub token_ttl: u32,
    /// `iss` of access tokens: the service's public URL, the same on every node
    /// [default: http://<listen address>].
    #[arg(long, env = "RELAY_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` of access tokens.
    #[arg(long, env = "RELAY_AUDIENCE", default_value = "egregore-relay")]
    pub audience: String,
}

/// What `serve` runs with, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_token: Option<SecretString>,
    pub cache_ttl: Duration,
    pub cache_capacity: usize,
    pub trusted_proxies: Vec<IpAddr>,
    pub tokens: TokenSettings,
}

pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl ServeArgs {
    /// Validates the settings; the error is a sentence saying what to set.
    pub fn into_config(self) -> Result<ServeConfig, String> {
        let admin_token = match self.admin_token.filter(|t| !t.is_empty()) {
            Some(t) if t.chars().count() < MIN_ADMIN_TOKEN_CHARS => {
                return Err(format!(
                    "RELAY_ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN_CHARS} characters; \
                     set a longer one (for example 48 random characters) or unset it"
                ));
            }
            other => other.map(SecretString::from),
        };
        if self.cache_capacity == 0 {
            return Err("RELAY_CACHE_CAPACITY must be at least 1".into());
        }
        if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&self.token_ttl) {
            return Err(format!(
                "RELAY_TOKEN_TTL must be {MIN_TTL_SECONDS}..={MAX_TTL_SECONDS} seconds"
            ));
        }
        let issuer = self
            .issuer
            .unwrap_or_else(|| format!("http://{}", self.listen));
        if issuer.trim().is_empty() || self.audience.trim().is_empty() {
            return Err("RELAY_ISSUER and RELAY_AUDIENCE must not be empty".into());
        }
        Ok(ServeConfig {
            listen: self.listen,
            admin_token,
            cache_ttl: Duration::from_secs(self.cache_ttl),
            cache_capacity: self.cache_capacity,
            trusted_proxies: self.trusted_proxies,
            tokens: TokenSettings {
                issuer,
                audience: self.audience,
                ttl_seconds: self.token_ttl,
            },
        })
    }
}

impl ServeConfig {
    /// Settings for tests and embedding: defaults, with the given admin token.
    pub fn with_admin_token(token: &str) -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: Some(SecretString::from(token.to_string())),
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 100_000,
            trusted_proxies: Vec::new(),
            tokens: TokenSettings {
                issuer: "http://127.0.0.1".into(),
                audience: "egregore-relay".into(),
                ttl_seconds: 900,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn short_admin_token_is_refused_and_empty_counts_as_unset() {
        let args = Cli::parse_from(["x", "--admin-token", "short"]).serve;
        assert!(
            args.into_config()
                .unwrap_err()
                .contains("RELAY_ADMIN_TOKEN")
        );
        let args = Cli::parse_from(["x", "--admin-token", ""]).serve;
        assert!(args.into_config().unwrap().admin_token.is_none());
    }

    #[test]
    fn token_settings_are_validated_and_default_from_the_listen_address() {
        let config = Cli::parse_from(["x", "--listen", "127.0.0.1:9"])
            .serve
            .into_config()
            .unwrap();
        assert_eq!(config.tokens.issuer, "http://127.0.0.1:9");
        assert_eq!(config.tokens.audience, "egregore-relay");
        assert_eq!(config.tokens.ttl_seconds, 900);
        for ttl in ["59", "86401"] {
            let args = Cli::parse_from(["x", "--token-ttl", ttl]).serve;
            assert!(args.into_config().unwrap_err().contains("RELAY_TOKEN_TTL"));
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_password("sqlite://relay.db"), "sqlite://relay.db");
    }
}
