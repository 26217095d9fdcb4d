//! egregore-relay: API keys, access tokens, verification and administration in front of the
//! Egregore chat backend.
//!
//! A tour, from the top floor down (each layer imports only those below it):
//! - `cli` is the `relay` command line and `config` its settings, validated once;
//! - `app` builds the services and background tasks and serves them with `server`, which
//!   accepts connections and bounds them;
//! - `http` is the axum edge: routes, extractors, the one place status codes are chosen, and
//!   the relay that forwards to the upstream;
//! - `service` holds what `http` and `cli` share: the credential gate (`service::auth`),
//!   client administration, token exchange, signing keys, adopted legacy keys, use batching,
//!   usage counting, credits spent from leases of each client's balance, console sessions;
//! - `cache` keeps clients in memory and follows the change log; `limiter` keeps rate-limit
//!   state; `metrics` counts for `/metrics`; `per_thread` is per-request state without a
//!   shared lock;
//! - `storage` is SQL only, SQLite and PostgreSQL behind one `Store` trait;
//! - `domain` holds the rules (keys, clients, scopes, tokens, addresses, client policies,
//!   rate-limit arithmetic) and does no I/O.

pub mod app;
pub(crate) mod cache;
pub mod cli;
pub mod config;
pub mod domain;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub(crate) mod http;
pub mod limiter;
pub(crate) mod metrics;
pub(crate) mod per_thread;
pub mod server;
pub mod service;
pub mod storage;
