//! egregore-relay: API keys, verification and administration in front of the Egregore chat
//! backend.
//!
//! A tour: `domain` holds the rules (key format, client validation, rate-limit arithmetic)
//! and does no I/O; `storage` keeps clients in SQLite or PostgreSQL behind one `Store` trait;
//! `verifier` turns a presented key into a client through the `cache`; `admin` is the set of
//! client operations shared by the HTTP admin API and the command line; `limiter` keeps
//! rate-limit state; `http` is the axum edge; `server` accepts connections and bounds them;
//! `app` wires it all and serves; `cli` and
//! `config` are the command line.

pub mod admin;
pub mod app;
pub mod cache;
pub mod change_feed;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod keyring;
pub mod legacy;
pub mod limiter;
pub mod metrics;
pub mod server;
pub mod storage;
pub mod token;
pub mod usage;
pub mod verifier;
