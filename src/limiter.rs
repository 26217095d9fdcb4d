//! Rate-limit state: per-client GCRA buckets, and the per-address limit on failed
//! authentications. The arithmetic lives in `domain::rate_limit`; this module only keeps the
//! state. The client limiter is a trait so a shared (Redis) one can replace the in-process one.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::domain::address::failure_key;
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
    /// Whether the shared state (if any) answers; for readiness.
    async fn ready(&self) -> bool {
        true
    }
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

/// Buckets in Redis, shared by every node using it: one atomic server-side script per
/// decision (no read-modify-write race), timed by the Redis server's clock so nodes with
/// slightly different clocks agree. While Redis cannot be reached, decisions fall back to this
/// process's buckets, with a warning and the `relay_rate_limiter_fallbacks_total` metric:
/// never unlimited, never an error.
pub struct RedisRateLimiter {
    inner: Arc<RedisInner>,
}

struct RedisInner {
    client: redis::Client,
    connection: RwLock<Option<ConnectionManager>>,
    prefix: String,
    script: redis::Script,
    fallback: LocalRateLimiter,
    fallbacks: Counter,
    last_warning: Mutex<Option<Instant>>,
    /// After a failure Redis is left alone this long, so an outage costs requests nothing.
    down_until: Mutex<Option<Instant>>,
}

/// GCRA in Lua, the same arithmetic as `domain::rate_limit` in microseconds. Returns
/// `{allowed, remaining, microseconds until full, microseconds until a retry may pass}`.
const GCRA_SCRIPT: &str = r"
local limit = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = math.floor(60000000 / limit)
local capacity = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now <= capacity then
  redis.call('SET', KEYS[1], nxt, 'PX', math.floor((nxt - now) / 1000) + 1000)
  return {1, math.floor((capacity - (nxt - now)) / interval), nxt - now, 0}
end
return {0, 0, tat - now, nxt - capacity - now}
";

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl RedisRateLimiter {
    /// Starts connecting in the background; until connected, limits are per node.
    pub fn start(url: &str, prefix: &str, fallbacks: Counter) -> Result<Self, redis::RedisError> {
        let inner = Arc::new(RedisInner {
            client: redis::Client::open(url)?,
            connection: RwLock::new(None),
            prefix: format!("{prefix}rl:"),
            script: redis::Script::new(GCRA_SCRIPT),
            fallback: LocalRateLimiter::default(),
            fallbacks,
            last_warning: Mutex::new(None),
            down_until: Mutex::new(None),
        });
        tokio::spawn(connect_until_connected(Arc::downgrade(&inner)));
        Ok(RedisRateLimiter { inner })
    }
}

/// Tries to connect every second until it succeeds; after that the connection manager
/// reconnects by itself.
async fn connect_until_connected(inner: Weak<RedisInner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(100);
        match ConnectionManager::new_with_config(inner.client.clone(), config).await {
            Ok(connection) => {
                *inner.connection.write().unwrap_or_else(|e| e.into_inner()) = Some(connection);
                tracing::info!("connected to Redis: rate limits are shared");
                return;
            }
            Err(e) => inner.warn(&e),
        }
        drop(inner);
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

impl RedisInner {
    fn connection(&self) -> Option<ConnectionManager> {
        self.connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn warn(&self, error: &redis::RedisError) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(error = %error, "Redis unreachable: rate limits are per node until it answers");
        }
    }

    fn is_down(&self) -> bool {
        let down_until = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down_until.is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + RETRY_AFTER_FAILURE);
    }

    /// One decision in Redis, bounded by `REDIS_TIMEOUT`.
    async fn decide_in_time(
        &self,
        client: &ClientId,
        limit: u32,
    ) -> Result<Decision, redis::RedisError> {
        match tokio::time::timeout(REDIS_TIMEOUT, self.decide(client, limit)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))),
        }
    }

    async fn decide(&self, client: &ClientId, limit: u32) -> Result<Decision, redis::RedisError> {
        let mut connection = self
            .connection()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::IoError, "not connected")))?;
        let key = format!("{}{}", self.prefix, client.as_str());
        let reply: Vec<i64> = self
            .script
            .key(key)
            .arg(limit.max(1))
            .invoke_async(&mut connection)
            .await?;
        let micros = |i: usize| reply.get(i).copied().unwrap_or(0).max(0);
        let whole_seconds = |us: i64| u64::try_from((us + 999_999) / 1_000_000).unwrap_or(0);
        let allowed = micros(0) == 1;
        Ok(Decision {
            allowed,
            limit: limit.max(1),
            remaining: u32::try_from(micros(1)).unwrap_or(0),
            reset_seconds: whole_seconds(micros(2)),
            retry_after_seconds: if allowed {
                0
            } else {
                whole_seconds(micros(3)).max(1)
            },
        })
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(&self, client: &ClientId, limit: u32, now: DateTime<Utc>) -> Decision {
        if !self.inner.is_down() {
            let mut result = self.inner.decide_in_time(client, limit).await;
            // A connection that broke since its last use reconnects on the next command: try
            // once more before falling back. Not after a timeout: a Redis too slow to answer
            // would make the request wait twice.
            if result
                .as_ref()
                .is_err_and(|e| !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped()))
            {
                result = self.inner.decide_in_time(client, limit).await;
            }
            match result {
                Ok(decision) => return decision,
                Err(e) => {
                    self.inner.warn(&e);
                    self.inner.mark_down();
                }
            }
        }
        self.inner.fallbacks.inc();
        self.inner.fallback.acquire(client, limit, now).await
    }

    fn sweep(&self, now: DateTime<Utc>) {
        self.inner.fallback.sweep(now);
    }

    async fn ready(&self) -> bool {
        let Some(mut connection) = self.inner.connection() else {
            return false;
        };
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        matches!(tokio::time::timeout(REDIS_TIMEOUT, ping).await, Ok(Ok(_)))
    }
}

/// GCRA theoretical arrival times, one per key, behind one lock held for a few nanoseconds
/// (never across an await), which is what makes concurrent decisions exact.
struct Buckets<K> {
    tats: Mutex<foldhash::HashMap<K, i64>>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            tats: Mutex::new(HashMap::default()),
        }
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn acquire(&self, key: &K, limit: u32, now: i64) -> Decision {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        // One lookup for a key seen before; the key is cloned only for a new bucket.
        if let Some(stored) = tats.get_mut(key) {
            let (decision, tat) = rate_limit::decide(limit, Some(*stored), now);
            if decision.allowed {
                *stored = tat;
            }
            return decision;
        }
        let (decision, tat) = rate_limit::decide(limit, None, now);
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
/// Addresses are counted by `domain::address::failure_key` (IPv6 by /64), and at most
/// `MAX_TRACKED` of them at once: past that, new addresses share one overflow window, so a
/// flood from many addresses can neither grow the map nor escape the limit.
#[derive(Default)]
pub struct FailedAuthLimiter {
    windows: Mutex<HashMap<IpAddr, Window>>,
    /// When the map was last found full (nanoseconds): pruning then is a scan of the whole
    /// map, so it runs at most once a second, and so does the warning.
    last_full: std::sync::atomic::AtomicI64,
}

#[derive(Clone, Copy)]
struct Window {
    started: i64,
    failures: u32,
}

pub const FAILURES_PER_MINUTE: u32 = 30;
const WINDOW_NANOS: i64 = 60_000_000_000;
const MAX_TRACKED: usize = 100_000;
/// Where failures of addresses beyond `MAX_TRACKED` are counted together.
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

impl FailedAuthLimiter {
    /// Seconds the address must wait before it may try again, or `None` if it may try now.
    pub fn blocked_for(&self, addr: IpAddr, now: DateTime<Utc>) -> Option<u64> {
        let now = nanos(now);
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let key = failure_key(addr);
        let w = windows.get(&key).or_else(|| {
            (windows.len() >= MAX_TRACKED)
                .then(|| windows.get(&OVERFLOW))
                .flatten()
        })?;
        let ends = w.started + WINDOW_NANOS;
        (w.failures >= FAILURES_PER_MINUTE && ends > now)
            .then(|| u64::try_from((ends - now + 999_999_999) / 1_000_000_000).unwrap_or(60))
    }

    pub fn record_failure(&self, addr: IpAddr, now: DateTime<Utc>) {
        let now = nanos(now);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = failure_key(addr);
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            let last_full = self.last_full.load(Ordering::Relaxed);
            if now - last_full >= 1_000_000_000 {
                self.last_full.store(now, Ordering::Relaxed);
                windows.retain(|_, w| w.started + WINDOW_NANOS > now);
                if windows.len() >= MAX_TRACKED {
                    tracing::warn!(
                        tracked = windows.len(),
                        "failed authentications from too many addresses: new ones share one limit"
                    );
                }
            }
            if windows.len() >= MAX_TRACKED {
                key = OVERFLOW;
            }
        }
        let w = windows.entry(key).or_insert(Window {
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

    /// Takes back one failure charged in advance (see `Verifier`'s legacy path) once the
    /// credential turned out valid.
    pub fn refund(&self, addr: IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = windows.get_mut(&failure_key(addr)) {
            w.failures = w.failures.saturating_sub(1);
        }
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

    #[test]
    fn one_ipv6_64_shares_one_budget() {
        let limiter = FailedAuthLimiter::default();
        let t0 = crate::domain::now();
        for i in 0..30u16 {
            let addr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, 0, 0, 1));
            limiter.record_failure(addr, t0);
        }
        assert!(
            limiter
                .blocked_for("2001:db8:0:1::99".parse().unwrap(), t0)
                .is_some()
        );
        assert!(
            limiter
                .blocked_for("2001:db8:0:2::1".parse().unwrap(), t0)
                .is_none()
        );
    }

    #[test]
    fn a_flood_from_many_addresses_stays_bounded_and_limited() {
        let limiter = FailedAuthLimiter::default();
        let t0 = crate::domain::now();
        for i in 0..u32::try_from(MAX_TRACKED).unwrap() {
            limiter.record_failure(IpAddr::V4(std::net::Ipv4Addr::from(i)), t0);
        }
        // Every address beyond the bound is charged to one window, which fills up at once.
        for i in 0..FAILURES_PER_MINUTE {
            limiter.record_failure(IpAddr::V4(std::net::Ipv4Addr::from(0xf000_0000 + i)), t0);
        }
        let windows = limiter.windows.lock().unwrap().len();
        assert_eq!(windows, MAX_TRACKED + 1);
        let newcomer = IpAddr::V4(std::net::Ipv4Addr::new(250, 0, 0, 1));
        assert!(limiter.blocked_for(newcomer, t0).is_some());
        // Once their windows have passed, room is made again.
        let later = t0 + Duration::seconds(61);
        limiter.record_failure(newcomer, later);
        assert!(limiter.windows.lock().unwrap().len() <= 2);
    }
}
