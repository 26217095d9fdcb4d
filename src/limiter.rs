//! Rate-limit state: per-client GCRA buckets, and the per-address limit on failed
//! authentications. The arithmetic lives in `domain::rate_limit`; this module only keeps the
//! state. The client limiter is a trait so a shared (Redis) one can replace the in-process one.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::client::ClientId;
use crate::domain::rate_limit::{self, Decision};

fn nanos(now: DateTime<Utc>) -> i64 {
    now.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Counts requests against each client's per-minute limit.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request if the client's bucket has room; exact under concurrency.
    async fn acquire(&self, client: &ClientId, limit: u32, now: DateTime<Utc>) -> Decision;
    /// Drops state that no longer matters (full buckets).
    fn sweep(&self, now: DateTime<Utc>);
}

/// Buckets in this process's memory: exact for one node.
#[derive(Default)]
pub struct LocalRateLimiter {
    buckets: Buckets<ClientId>,
}

#[async_trait::async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn acquire(&self, client: &ClientId, limit: u32, now: DateTime<Utc>) -> Decision {
        self.buckets.acquire(client, limit, nanos(now))
    }

    fn sweep(&self, now: DateTime<Utc>) {
        self.buckets.sweep(nanos(now));
    }
}

/// GCRA theoretical arrival times, one per key, behind one lock held for a few nanoseconds
/// (never across an await), which is what makes concurrent decisions exact.
struct Buckets<K> {
    tats: Mutex<HashMap<K, i64>>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            tats: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn acquire(&self, key: &K, limit: u32, now: i64) -> Decision {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let (decision, tat) = rate_limit::decide(limit, tats.get(key).copied(), now);
        if decision.allowed {
            tats.insert(key.clone(), tat);
        }
        decision
    }

    /// A bucket whose TAT has passed is full: the same as no entry.
    fn sweep(&self, now: i64) {
        self.tats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, tat| *tat > now);
    }
}

/// At most `FAILURES_PER_MINUTE` failed authentications per remote address per minute; past
/// that the address is refused (429) until its window ends, so keys cannot be guessed at speed.
#[derive(Default)]
pub struct FailedAuthLimiter {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    started: i64,
    failures: u32,
}

pub const FAILURES_PER_MINUTE: u32 = 30;
const WINDOW_NANOS: i64 = 60_000_000_000;

impl FailedAuthLimiter {
    /// Seconds the address must wait before it may try again, or `None` if it may try now.
    pub fn blocked_for(&self, addr: IpAddr, now: DateTime<Utc>) -> Option<u64> {
        let now = nanos(now);
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.get(&addr)?;
        let ends = w.started + WINDOW_NANOS;
        (w.failures >= FAILURES_PER_MINUTE && ends > now)
            .then(|| u64::try_from((ends - now + 999_999_999) / 1_000_000_000).unwrap_or(60))
    }

    pub fn record_failure(&self, addr: IpAddr, now: DateTime<Utc>) {
        let now = nanos(now);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(addr).or_insert(Window {
            started: now,
            failures: 0,
        });
        if w.started + WINDOW_NANOS <= now {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures += 1;
    }

    pub fn sweep(&self, now: DateTime<Utc>) {
        let now = nanos(now);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|_, w| w.started + WINDOW_NANOS > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_admit_exactly_the_limit() {
        let limiter = Arc::new(LocalRateLimiter::default());
        let client = ClientId::new("client_0000000000000001");
        let now = crate::domain::now();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (limiter, client) = (limiter.clone(), client.clone());
                tokio::spawn(async move { limiter.acquire(&client, 20, now).await.allowed })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 20);
    }

    #[test]
    fn an_address_is_blocked_after_thirty_failures_until_the_window_ends() {
        let limiter = FailedAuthLimiter::default();
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = crate::domain::now();
        for _ in 0..29 {
            limiter.record_failure(addr, t0);
        }
        assert_eq!(limiter.blocked_for(addr, t0), None);
        limiter.record_failure(addr, t0);
        assert_eq!(
            limiter.blocked_for(addr, t0 + Duration::seconds(10)),
            Some(50)
        );
        assert_eq!(limiter.blocked_for("192.0.2.2".parse().unwrap(), t0), None);
        assert_eq!(limiter.blocked_for(addr, t0 + Duration::seconds(60)), None);
    }
}
