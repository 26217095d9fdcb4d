//! What the HTTP edge and the command line share: the operations, with no axum and no SQL.
//! `auth` is the one credential gate (who is calling, what may they do); `admin` manages
//! clients; `token` exchanges keys for access tokens and introspects them; `keyring` holds the
//! token-signing keys; `legacy_key` finds keys adopted from the original service; `last_used`
//! batches `last_used_at`; `credits` spends usage credits from leases of the balance; `meter` counts every use for usage analytics and `usage` answers
//! questions about them; `console` keeps the web console's sessions.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod console;
pub mod credits;
pub(crate) mod health;
pub mod keyring;
pub mod last_used;
pub(crate) mod legacy_key;
pub mod meter;
pub(crate) mod token;
pub mod usage;
