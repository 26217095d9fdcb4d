//! Credit balances as stored: the part of each client's credits not leased out to a node.
//! Every change is one atomic statement on the client's row, so any number of nodes take
//! and give back without coordination, and no statement can take more than the row holds.

use chrono::{DateTime, Utc};

use super::Error;

/// What one take got: `taken` credits (possibly 0), the balance `left` behind, and the
/// generation they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditTake {
    pub taken: i64,
    pub left: i64,
    pub generation: i64,
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
    WHERE id = $1 AND credits_remaining >= $2 RETURNING credits_remaining, credits_generation";
pub(super) const BALANCE: &str = "SELECT credits_remaining, credits_generation FROM api_clients \
    WHERE id = $1 AND credits_remaining IS NOT NULL";
/// Only into the generation the credits were taken from: after an admin set the balance or
/// a refill filled it, what a node held is void, not added to the new balance.
pub(super) const GIVE_BACK: &str = "UPDATE api_clients \
    SET credits_remaining = credits_remaining + $3 \
    WHERE id = $1 AND credits_generation = $2 AND credits_remaining IS NOT NULL";

/// How many times a take retries when other takes keep emptying the balance it saw.
const TAKE_ATTEMPTS: usize = 3;

#[async_trait::async_trait]
pub trait CreditStore: Send + Sync {
    /// Refills client `row_id` for the period starting at `period`, unless done already.
    async fn refill_credits(&self, row_id: i64, period: DateTime<Utc>) -> Result<(), Error>;
    /// Takes exactly `n` credits if the balance holds them: `(left, generation)`.
    async fn take_exact_credits(&self, row_id: i64, n: i64) -> Result<Option<(i64, i64)>, Error>;
    /// `(balance, generation)`; `None` when there is no such client or it has no credits.
    async fn credit_balance(&self, row_id: i64) -> Result<Option<(i64, i64)>, Error>;
    /// Adds `n` unused credits back to the balance, if it is still of `generation`.
    async fn give_back_credits(&self, row_id: i64, generation: i64, n: i64) -> Result<(), Error>;

    /// Takes `want` credits from client `row_id`, or what is left when that is less, after
    /// refilling it when `period` (the refill period now) has begun. `None` when the client
    /// is gone or has no credits (any more).
    async fn take_credits(
        &self,
        row_id: i64,
        want: i64,
        period: Option<DateTime<Utc>>,
    ) -> Result<Option<CreditTake>, Error> {
        if let Some(period) = period {
            self.refill_credits(row_id, period).await?;
        }
        let mut want = want;
        for _ in 0..TAKE_ATTEMPTS {
            if let Some((left, generation)) = self.take_exact_credits(row_id, want).await? {
                return Ok(Some(CreditTake {
                    taken: want,
                    left,
                    generation,
                }));
            }
            let Some((balance, generation)) = self.credit_balance(row_id).await? else {
                return Ok(None);
            };
            if balance == 0 {
                return Ok(Some(CreditTake {
                    taken: 0,
                    left: 0,
                    generation,
                }));
            }
            want = want.min(balance);
        }
        // Other takes emptied the balance each time: this one gets nothing now.
        Ok(self
            .credit_balance(row_id)
            .await?
            .map(|(left, generation)| CreditTake {
                taken: 0,
                left,
                generation,
            }))
    }
}
