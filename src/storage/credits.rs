//! Credit balances as stored: the part of each client's credits not leased out to a node.
//! Every change is one atomic statement on the client's row, so any number of nodes take
//! and give back without coordination, and no statement can take more than the row holds.
//! How much to take, and when, is the credit service's (`service::credits`).

use chrono::{DateTime, Utc};

use super::Error;

/// A client's balance as stored after a statement: what is `left`, its generation, and the
/// refill period it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub left: i64,
    pub generation: i64,
    pub period: Option<DateTime<Utc>>,
}

// The statements both backends run as they are (each binds its own timestamp type).
/// A refill for the period starting at `$2`, unless the balance belongs to it already: of
/// every node that tries, the first moves the period on and the rest change nothing.
pub(super) const REFILL: &str = "UPDATE api_clients SET credits_remaining = credits_refill_amount, \
    credits_period = $2, credits_generation = credits_generation + 1 \
    WHERE id = $1 AND credits_remaining IS NOT NULL AND credits_refill_amount IS NOT NULL \
      AND (credits_period IS NULL OR credits_period < $2)";
pub(super) const TAKE_EXACT: &str = "UPDATE api_clients \
    SET credits_remaining = credits_remaining - $2 \
    WHERE id = $1 AND credits_remaining >= $2 \
    RETURNING credits_remaining, credits_generation, credits_period";
pub(super) const BALANCE: &str = "SELECT credits_remaining, credits_generation, credits_period \
    FROM api_clients WHERE id = $1 AND credits_remaining IS NOT NULL";
/// Only into the generation the credits were taken from: after an admin set the balance or
/// a refill filled it, what a node held is void, not added to the new balance.
pub(super) const GIVE_BACK: &str = "UPDATE api_clients \
    SET credits_remaining = credits_remaining + $3 \
    WHERE id = $1 AND credits_generation = $2 AND credits_remaining IS NOT NULL";

#[async_trait::async_trait]
pub trait CreditStore: Send + Sync {
    /// Refills client `row_id` for the period starting at `period`, unless done already.
    async fn refill_credits(&self, row_id: i64, period: DateTime<Utc>) -> Result<(), Error>;
    /// Takes exactly `n` credits if the balance holds them; the balance after.
    async fn take_exact_credits(&self, row_id: i64, n: i64) -> Result<Option<Balance>, Error>;
    /// The balance; `None` when there is no such client or it has no credits.
    async fn credit_balance(&self, row_id: i64) -> Result<Option<Balance>, Error>;
    /// Adds `n` unused credits back to the balance, if it is still of `generation`.
    async fn give_back_credits(&self, row_id: i64, generation: i64, n: i64) -> Result<(), Error>;
}
