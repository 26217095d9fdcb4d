//! The integration tests: real HTTP over real sockets against the service on a fresh database
//! per test. SQLite by default; PostgreSQL when `TEST_DATABASE_URL` is set (`.ci/run` runs the
//! suite both ways).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod addresses;
mod admin;
mod binary;
mod browser;
mod concurrency;
mod connections;
mod console;
mod errors;
mod faults;
mod legacy;
mod nodes;
mod ops;
mod policies;
mod relay;
mod relay_hygiene;
mod storage;
mod support;
mod token;
mod upstream;
mod usage;
mod verify;
