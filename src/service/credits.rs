//! Spending usage credits without a database write per request. Each node leases blocks of
//! a client's credits from its balance in the database (one atomic statement that can never
//! take more than the row holds) and spends from the lease in memory; what it does not use
//! goes back once the client has been idle for a few seconds, when the balance runs out (so
//! another node's request can have it), and at shutdown. Hence, on any number of nodes:
//! - no more requests are admitted than there were credits: every credit spent was taken
//!   from the balance first, by exactly one node;
//! - a node that crashes strands what it held (at most one lease per client, see
//!   `lease_size`): those credits are neither spent nor returned, and the next refill or an
//!   admin's set of the balance makes it whole again;
//! - a refill happens once per period: the first node to lease in a new period moves the
//!   balance's period on (one conditional statement), and leases end with the period the
//!   database says their credits belong to;
//! - a take and the lease it fills run in a task of their own, so a request given up midway
//!   loses no credits.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

use crate::domain::Error;
use crate::domain::client::Client;
use crate::domain::policy::Credits;
use crate::storage::Store;

/// The most credits one lease takes: a crash strands at most this many per client.
const MAX_LEASE: i64 = 1000;
/// How many times a take retries when other nodes' takes keep emptying the balance it saw.
const TAKE_ATTEMPTS: usize = 3;
/// A lease idle this long goes back to the balance, so that within 10 s of the last request
/// the balance shows every credit not used (the background sweep runs every 500 ms).
pub const IDLE_GIVE_BACK: Duration = Duration::seconds(5);

/// What spending credits came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// The client has no credits: unlimited.
    Unlimited,
    /// Spent; `remaining` is what this node sees left (its lease and the balance it last
    /// read; other nodes' leases are not seen).
    Spent { remaining: i64 },
    /// Not enough left. `retry_after_seconds`: until the next refill, if there is one.
    Exceeded { retry_after_seconds: Option<u64> },
}

/// One client's credits held by this node.
#[derive(Default)]
struct Lease {
    /// The balance's generation the held credits were taken from.
    generation: i64,
    /// Credits taken from the balance and not spent.
    held: i64,
    /// The balance after this node's last take, or `None` before its first.
    left_in_store: Option<i64>,
    /// The end of the refill period the held credits belong to: void after it.
    valid_until: Option<DateTime<Utc>>,
    last_spent: Option<DateTime<Utc>>,
}

type Entry = Arc<tokio::sync::Mutex<Lease>>;

pub struct CreditLeases {
    store: Arc<dyn Store>,
    /// By client row id; sharded so that clients' requests do not meet on one lock.
    shards: Box<[Mutex<foldhash::HashMap<i64, Entry>>]>,
}

/// How many credits to lease when `balance` is left: an eighth, so that a few nodes share
/// what is left, down to one at a time near the end (nothing is stranded in a lease then).
fn lease_size(balance: i64) -> i64 {
    (balance / 8).clamp(1, MAX_LEASE)
}

impl CreditLeases {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let shards = (0..64).map(|_| Mutex::default()).collect();
        CreditLeases { store, shards }
    }

    fn shard(&self, row_id: i64) -> &Mutex<foldhash::HashMap<i64, Entry>> {
        let n = usize::try_from(row_id.rem_euclid(64)).unwrap_or(0);
        &self.shards[n % self.shards.len()]
    }

    fn entry(&self, row_id: i64) -> Entry {
        let mut map = self.shard(row_id).lock().unwrap_or_else(|e| e.into_inner());
        map.entry(row_id).or_default().clone()
    }

    /// Spends `cost` of `client`'s credits (0 spends none but still reports what is left).
    pub async fn spend(
        &self,
        client: &Client,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Result<Spend, Error> {
        let Some(credits) = client.credits else {
            return Ok(Spend::Unlimited);
        };
        let mut lease: LeaseGuard = self.entry(client.row_id).lock_owned().await;
        // An admin set the balance since, or the refill period ended: what is held is void.
        if lease.generation < client.credits_generation {
            *lease = Lease {
                generation: client.credits_generation,
                ..Lease::default()
            };
        }
        if lease.valid_until.is_some_and(|end| now >= end) {
            lease.held = 0;
        }
        // A lease that has never read the balance (new, or forgotten while idle) reads it
        // first, even for a verification that costs nothing: it reports what is left.
        if lease.held < cost || lease.left_in_store.is_none() {
            // Credits taken from the database must reach the lease even if the request is
            // dropped meanwhile: the lease (locked) and the store go to a task of their own.
            let store = self.store.clone();
            let row_id = client.row_id;
            let refill = tokio::spawn(async move {
                let settled =
                    refill_lease(store.as_ref(), &mut lease, row_id, credits, cost, now).await?;
                Ok::<_, Error>((settled, lease))
            });
            let (settled, refilled) = refill.await.map_err(Error::internal)??;
            if let Some(spend) = settled {
                return Ok(spend);
            }
            lease = refilled;
        }
        Ok(take_from(lease, cost, credits, now))
    }

    /// Credits of `client`'s current balance this node holds unspent (for showing the
    /// balance); 0 while a request is using the lease.
    pub fn held_for(&self, client: &Client) -> i64 {
        let map = self
            .shard(client.row_id)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&client.row_id)
            .and_then(|entry| entry.try_lock().ok().map(|l| (l.generation, l.held)))
            .filter(|(generation, _)| *generation == client.credits_generation)
            .map_or(0, |(_, held)| held)
    }

    /// Gives back what leases idle for `idle` hold (`None`: every lease, waiting for any in
    /// use: at shutdown), and forgets leases that hold nothing and nobody is using. A give
    /// back that fails is kept for the next sweep; the first error is returned.
    pub async fn give_back(&self, now: DateTime<Utc>, idle: Option<Duration>) -> Result<(), Error> {
        let mut first_error = None;
        for shard in &self.shards {
            let entries: Vec<(i64, Entry)> = shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(row, entry)| (*row, entry.clone()))
                .collect();
            for (row_id, entry) in entries {
                let mut lease = match idle {
                    None => entry.lock().await,
                    Some(_) => match entry.try_lock() {
                        Ok(lease) => lease,
                        Err(_) => continue,
                    },
                };
                let idle_now = match (idle, lease.last_spent) {
                    (Some(idle), Some(last)) => now - last >= idle,
                    _ => true,
                };
                if lease.held == 0 || !idle_now {
                    continue;
                }
                if lease.valid_until.is_some_and(|end| now >= end) {
                    lease.held = 0; // of a period that has ended: void, not given back
                    continue;
                }
                let held = lease.held;
                match self
                    .store
                    .give_back_credits(row_id, lease.generation, held)
                    .await
                {
                    Ok(()) => {
                        lease.held = 0;
                        lease.left_in_store = lease.left_in_store.map(|left| left + held);
                    }
                    Err(e) => {
                        first_error.get_or_insert(Error::from(e));
                    }
                }
            }
            // An entry only this map holds, holding nothing, is forgotten; one a request
            // has a copy of is kept, so no credits are ever taken into a forgotten lease.
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, entry| {
                    Arc::strong_count(entry) > 1 || entry.try_lock().map_or(true, |l| l.held > 0)
                });
        }
        first_error.map_or(Ok(()), Err)
    }
}

type LeaseGuard = tokio::sync::OwnedMutexGuard<Lease>;

/// Spends `cost` from a lease known to hold it.
fn take_from(mut lease: LeaseGuard, cost: i64, credits: Credits, now: DateTime<Utc>) -> Spend {
    lease.held -= cost;
    lease.last_spent = Some(now);
    Spend::Spent {
        remaining: lease.held + lease.left_in_store.unwrap_or(credits.remaining),
    }
}

/// Takes credits from the balance into `lease` until it holds `cost`, refilling the balance
/// first when a new period has begun. `Some` when that settles the request: the client has no
/// credits any more (unlimited), or too few are left (then what the lease held goes back, for
/// another node's request). `None`: the lease now holds `cost`.
async fn refill_lease(
    store: &dyn Store,
    lease: &mut Lease,
    row_id: i64,
    credits: Credits,
    cost: i64,
    now: DateTime<Utc>,
) -> Result<Option<Spend>, Error> {
    if let Some(period) = credits.period(now) {
        store.refill_credits(row_id, period).await?;
    }
    let seen = lease.left_in_store.unwrap_or(credits.remaining);
    let mut want = (cost - lease.held).max(lease_size(seen));
    let mut balance = None;
    for _ in 0..TAKE_ATTEMPTS {
        if let Some(after) = store.take_exact_credits(row_id, want).await? {
            if after.generation != lease.generation {
                lease.held = 0;
                lease.generation = after.generation;
            }
            lease.held += want;
            balance = Some(after);
            break;
        }
        // Too few for `want`: an eighth of what is left, or what the request needs.
        let Some(now_left) = store.credit_balance(row_id).await? else {
            return Ok(Some(Spend::Unlimited)); // the credits were removed, or the client
        };
        balance = Some(now_left);
        if now_left.generation != lease.generation {
            lease.held = 0;
            lease.generation = now_left.generation;
        }
        let need = cost - lease.held;
        want = need.max(lease_size(now_left.left)).min(now_left.left);
        if want < need || want == 0 {
            break;
        }
    }
    if let Some(after) = balance {
        lease.left_in_store = Some(after.left);
        // The period the balance belongs to, by the database: the node that refilled it may
        // have a clock a little ahead of this one.
        let period = after
            .period
            .unwrap_or_else(|| credits.period(now).unwrap_or(now));
        lease.valid_until = credits.refill.map(|r| r.interval.next_start(period));
    }
    if lease.held >= cost {
        return Ok(None);
    }
    if lease.held > 0 {
        store
            .give_back_credits(row_id, lease.generation, lease.held)
            .await?;
        let held = std::mem::take(&mut lease.held);
        lease.left_in_store = lease.left_in_store.map(|left| left + held);
    }
    Ok(Some(Spend::Exceeded {
        retry_after_seconds: credits.seconds_to_refill(now),
    }))
}

#[cfg(test)]
mod tests {
    use super::lease_size;

    #[test]
    fn leases_shrink_to_one_credit_as_the_balance_runs_out() {
        assert_eq!(lease_size(1_000_000), 1000);
        assert_eq!(lease_size(50), 6);
        assert_eq!(lease_size(15), 1);
        assert_eq!(lease_size(0), 1);
    }
}
