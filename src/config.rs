//! Configuration: flags and environment variables (clap, so `relay serve --help` is the
//! reference), validated once at startup into plain values handed down to each part.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::access_token::{MAX_TTL_SECONDS, MIN_TTL_SECONDS, TokenSettings};
use crate::domain::address::{self, TrustedProxies};
use crate::domain::route::{Route, RouteTable};
use crate::domain::scope::Scope;
use crate::server::ConnectionLimits;

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
    /// Largest number of pooled database connections (on PostgreSQL, as many again are
    /// opened for the lookups of cache misses).
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
    /// Set it in the environment: a flag's value is visible to every user in the process list.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretArg>,
    /// Secret (at least 32 characters) that seals the token-signing keys in the database; every
    /// node and the CLI need the same one. Unset: the keys are stored in plain text, and
    /// reading the database is enough to sign tokens. Set it in the environment, not as a flag.
    #[arg(long, env = "RELAY_SIGNING_KEY_SECRET", hide_env_values = true)]
    pub signing_key_secret: Option<SecretArg>,
    /// Seconds a verified key stays in the verification cache.
    #[arg(long, env = "RELAY_CACHE_TTL", default_value_t = 30)]
    pub cache_ttl: u64,
    /// Largest number of keys in the verification cache.
    #[arg(long, env = "RELAY_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: usize,
    /// Comma-separated proxies whose X-Forwarded-For is believed: addresses or CIDR networks
    /// (10.0.0.0/8, 2001:db8::/32).
    #[arg(long, env = "RELAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
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
    /// Upstream of the default relay routes /v1/chat (scope chat) and /v1/history (scope
    /// history), e.g. http://127.0.0.1:9000. Unset: no default routes.
    #[arg(long, env = "RELAY_UPSTREAM")]
    pub upstream: Option<String>,
    /// TOML file with more relay routes: [[routes]] prefix, upstream, scope, timeout_seconds.
    #[arg(long, env = "RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seconds allowed to connect to an upstream (then 502).
    #[arg(long, env = "RELAY_UPSTREAM_CONNECT_TIMEOUT", default_value_t = 5)]
    pub upstream_connect_timeout: u64,
    /// Seconds allowed for an upstream's response head (then 504); a streaming body is never
    /// cut by it.
    #[arg(long, env = "RELAY_UPSTREAM_TIMEOUT", default_value_t = 30)]
    pub upstream_timeout: u64,
    /// Redis for rate limits shared by every node, e.g. redis://127.0.0.1:6379. Unset: limits
    /// are kept in this process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretArg>,
    /// Prefix of the Redis keys this service writes.
    #[arg(long, env = "RELAY_REDIS_PREFIX", default_value = "relay:")]
    pub redis_prefix: String,
    /// Threads that may run bcrypt for keys adopted from the original service.
    #[arg(long, env = "RELAY_LEGACY_BCRYPT_CONCURRENCY", default_value_t = 1)]
    pub legacy_bcrypt_concurrency: usize,
    /// Connections served at once; more wait in the listen queue.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds requests in flight may take to finish on SIGTERM/SIGINT; relay streams still
    /// open then are cut.
    #[arg(long, env = "RELAY_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Count every use per client and minute for usage analytics (`/admin/usage`).
    #[arg(long, env = "RELAY_USAGE_ANALYTICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub usage_analytics: bool,
    /// Seconds between writes of the usage counts (1..=10; counts reach `/admin/usage` within
    /// twice this).
    #[arg(long, env = "RELAY_USAGE_FLUSH_SECONDS", default_value_t = 5)]
    pub usage_flush_seconds: u64,
}

/// Usage analytics settings.
#[derive(Debug, Clone, Copy)]
pub struct UsageSettings {
    pub enabled: bool,
    /// Time between writes of the counts (and of `last_used_at`).
    pub flush_interval: Duration,
    /// Most counters held in memory between writes.
    pub capacity: usize,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            enabled: true,
            flush_interval: Duration::from_secs(5),
            capacity: crate::service::meter::DEFAULT_CAPACITY,
        }
    }
}

/// The route file (`RELAY_CONFIG`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(default)]
    routes: Vec<RouteEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    prefix: String,
    upstream: String,
    scope: String,
    timeout_seconds: Option<u64>,
}

/// How long the relay waits on an upstream.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Until the response head.
    pub response: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretString,
    pub prefix: String,
}

/// What `serve` runs with, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_token: Option<SecretString>,
    pub signing_key_secret: Option<SecretString>,
    pub cache_ttl: Duration,
    pub cache_capacity: usize,
    pub trusted_proxies: TrustedProxies,
    pub tokens: TokenSettings,
    pub routes: RouteTable,
    pub upstream_timeouts: UpstreamTimeouts,
    pub redis: Option<RedisConfig>,
    pub legacy_bcrypt_concurrency: usize,
    pub connections: ConnectionLimits,
    pub usage: UsageSettings,
}

/// Shortest `RELAY_ADMIN_TOKEN` or `RELAY_SIGNING_KEY_SECRET` accepted.
pub const MIN_SECRET_CHARS: usize = 32;

impl ServeArgs {
    /// Validates the settings; the error is a sentence saying what to set.
    pub fn into_config(self) -> Result<ServeConfig, String> {
        let admin_token = parse_secret("RELAY_ADMIN_TOKEN", self.admin_token)?;
        let signing_key_secret = parse_signing_key_secret(self.signing_key_secret)?;
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
        let mut routes = match &self.upstream {
            Some(upstream) => RouteTable::defaults(upstream)?,
            None => Vec::new(),
        };
        if let Some(path) = &self.config {
            routes.extend(read_route_file(path)?);
        }
        let routes = RouteTable::new(routes)?;
        if self.upstream_connect_timeout == 0 || self.upstream_timeout == 0 {
            return Err(
                "RELAY_UPSTREAM_CONNECT_TIMEOUT and RELAY_UPSTREAM_TIMEOUT must be at least 1"
                    .into(),
            );
        }
        let redis = self
            .redis_url
            .map(|u| u.0)
            .filter(|u| !u.is_empty())
            .map(|url| RedisConfig {
                url: SecretString::from(url),
                prefix: self.redis_prefix.clone(),
            });
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                address::parse_network(t).map_err(|e| format!("RELAY_TRUSTED_PROXIES: {t:?} {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.legacy_bcrypt_concurrency == 0 {
            return Err("RELAY_LEGACY_BCRYPT_CONCURRENCY must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("RELAY_MAX_CONNECTIONS must be at least 1".into());
        }
        if !(1..=10).contains(&self.usage_flush_seconds) {
            return Err("RELAY_USAGE_FLUSH_SECONDS must be 1..=10".into());
        }
        Ok(ServeConfig {
            connections: ConnectionLimits {
                max_connections: self.max_connections,
                shutdown_grace: Duration::from_secs(self.shutdown_grace),
                ..ConnectionLimits::default()
            },
            legacy_bcrypt_concurrency: self.legacy_bcrypt_concurrency,
            usage: UsageSettings {
                enabled: self.usage_analytics,
                flush_interval: Duration::from_secs(self.usage_flush_seconds),
                ..UsageSettings::default()
            },
            routes,
            upstream_timeouts: UpstreamTimeouts {
                connect: Duration::from_secs(self.upstream_connect_timeout),
                response: Duration::from_secs(self.upstream_timeout),
            },
            redis,
            listen: self.listen,
            admin_token,
            signing_key_secret,
            cache_ttl: Duration::from_secs(self.cache_ttl),
            cache_capacity: self.cache_capacity,
            trusted_proxies: TrustedProxies::new(trusted_proxies),
            tokens: TokenSettings {
                issuer,
                audience: self.audience,
                ttl_seconds: self.token_ttl,
            },
        })
    }
}

/// `RELAY_SIGNING_KEY_SECRET`: empty counts as unset, short is refused.
pub fn parse_signing_key_secret(secret: Option<SecretArg>) -> Result<Option<SecretString>, String> {
    parse_secret("RELAY_SIGNING_KEY_SECRET", secret)
}

/// A secret setting `variable`: empty counts as unset; fewer than `MIN_SECRET_CHARS`
/// characters is refused with a sentence saying what to set.
fn parse_secret(variable: &str, secret: Option<SecretArg>) -> Result<Option<SecretString>, String> {
    match secret.map(|s| s.0).filter(|s| !s.is_empty()) {
        Some(s) if s.chars().count() < MIN_SECRET_CHARS => Err(format!(
            "{variable} is shorter than {MIN_SECRET_CHARS} characters; set a longer one \
             (for example 48 random characters) or unset it"
        )),
        other => Ok(other.map(SecretString::from)),
    }
}

/// A secret given on the command line or in the environment: `Debug` shows a placeholder (a
/// URL's password alone, for a URL).
#[derive(Clone)]
pub struct SecretArg(String);

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretArg(s.to_string()))
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains("://") {
            f.write_str(&redact_password(&self.0))
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl ServeConfig {
    /// Settings for tests and embedding: defaults, with the given admin token.
    pub fn with_admin_token(token: &str) -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: Some(SecretString::from(token.to_string())),
            signing_key_secret: None,
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 100_000,
            trusted_proxies: TrustedProxies::default(),
            tokens: TokenSettings {
                issuer: "http://127.0.0.1".into(),
                audience: "egregore-relay".into(),
                ttl_seconds: 900,
            },
            routes: RouteTable::default(),
            upstream_timeouts: UpstreamTimeouts {
                connect: Duration::from_secs(5),
                response: Duration::from_secs(30),
            },
            redis: None,
            legacy_bcrypt_concurrency: 1,
            connections: ConnectionLimits::default(),
            usage: UsageSettings::default(),
        }
    }
}

fn read_route_file(path: &Path) -> Result<Vec<Route>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("RELAY_CONFIG: cannot read {}: {e}", path.display()))?;
    let file: RouteFile = toml::from_str(&text).map_err(|e| {
        format!(
            "RELAY_CONFIG: {} is not a valid route file: {e}",
            path.display()
        )
    })?;
    file.routes
        .into_iter()
        .map(|r| {
            let scope = Scope::parse(&r.scope).map_err(|e| {
                format!("RELAY_CONFIG: route {}: scope {:?} {e}", r.prefix, r.scope)
            })?;
            Ok(Route {
                prefix: r.prefix,
                upstream: r.upstream,
                scope,
                timeout: r.timeout_seconds.map(Duration::from_secs),
            })
        })
        .collect()
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
    fn routes_come_from_the_upstream_and_the_route_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.toml");
        std::fs::write(
            &file,
            "[[routes]]\nprefix = \"/v1/search\"\nupstream = \"http://127.0.0.1:9100\"\nscope = \"search\"\ntimeout_seconds = 3\n",
        )
        .unwrap();
        let args = [
            "x",
            "--upstream",
            "http://127.0.0.1:9000",
            "--config",
            file.to_str().unwrap(),
        ];
        let config = Cli::parse_from(args).serve.into_config().unwrap();
        let search = config.routes.find("/v1/search/q").unwrap();
        assert_eq!(search.timeout, Some(Duration::from_secs(3)));
        assert_eq!(
            config.routes.find("/v1/chat").unwrap().upstream,
            "http://127.0.0.1:9000"
        );

        std::fs::write(
            &file,
            "[[routes]]\nprefix = \"/a\"\nupstream = \"http://h\"\nscope = \"s\"\ncolour = 1\n",
        )
        .unwrap();
        let args = ["x", "--config", file.to_str().unwrap()];
        assert!(
            Cli::parse_from(args)
                .serve
                .into_config()
                .unwrap_err()
                .contains("RELAY_CONFIG")
        );
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks() {
        let args = ["x", "--trusted-proxies", "10.0.0.0/8,192.0.2.1, ::1"];
        let config = Cli::parse_from(args).serve.into_config().unwrap();
        for ip in ["10.1.2.3", "192.0.2.1", "::1", "::ffff:10.0.0.1"] {
            assert!(config.trusted_proxies.contains(ip.parse().unwrap()), "{ip}");
        }
        assert!(
            !config
                .trusted_proxies
                .contains("192.0.2.2".parse().unwrap())
        );
        let args = ["x", "--trusted-proxies", "10.0.0.1/8"];
        let error = Cli::parse_from(args).serve.into_config().unwrap_err();
        assert!(error.contains("RELAY_TRUSTED_PROXIES"), "{error}");
    }

    #[test]
    fn debug_output_hides_every_secret() {
        let args = Cli::parse_from([
            "x",
            "--admin-token",
            "admin-token-0123456789abcdef-0123456789",
            "--signing-key-secret",
            "seal-secret-0123456789abcdef-0123456789",
            "--redis-url",
            "redis://user:redis-password@127.0.0.1:6379",
        ])
        .serve;
        let shown = format!("{args:?}");
        for secret in ["admin-token-0123", "seal-secret-0123", "redis-password"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let config = format!("{:?}", args.into_config().unwrap());
        for secret in ["admin-token-0123", "seal-secret-0123", "redis-password"] {
            assert!(!config.contains(secret), "{config}");
        }
    }

    #[test]
    fn a_short_signing_key_secret_is_refused() {
        let args = Cli::parse_from(["x", "--signing-key-secret", "short"]).serve;
        let error = args.into_config().unwrap_err();
        assert!(error.contains("RELAY_SIGNING_KEY_SECRET"), "{error}");
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
