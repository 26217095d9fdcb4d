//! Rate-limit arithmetic: GCRA, the token bucket written as one timestamp per client.
//!
//! A bucket of capacity `limit` refills continuously at `limit` per 60 s. Its whole state is
//! the theoretical arrival time (TAT): the instant at which the bucket will be full again.
//! Kept as integer nanoseconds; the Redis limiter (`limiter::RedisRateLimiter`) runs the same
//! arithmetic in Lua, in microseconds.

const WINDOW_NANOS: i64 = 60_000_000_000;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The outcome of one request against a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests that could be made right after this one.
    pub remaining: u32,
    /// Whole seconds until the bucket is full again.
    pub reset_seconds: u64,
    /// Whole seconds until a request would be admitted (0 when allowed).
    pub retry_after_seconds: u64,
}

/// Decides one request at `now` (nanoseconds) for a bucket whose TAT is `tat` (`None` for a
/// full bucket); returns the decision and the TAT to store.
pub fn decide(limit: u32, tat: Option<i64>, now: i64) -> (Decision, i64) {
    let limit = limit.max(1);
    let interval = WINDOW_NANOS / i64::from(limit);
    let capacity = interval * i64::from(limit);
    let tat = tat.unwrap_or(now).max(now);
    let next = tat + interval;
    if next - now <= capacity {
        let decision = Decision {
            allowed: true,
            limit,
            remaining: remaining(capacity - (next - now), interval),
            reset_seconds: ceil_seconds(next - now),
            retry_after_seconds: 0,
        };
        (decision, next)
    } else {
        let decision = Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_seconds: ceil_seconds(tat - now),
            retry_after_seconds: ceil_seconds(next - capacity - now).max(1),
        };
        (decision, tat)
    }
}

fn remaining(room: i64, interval: i64) -> u32 {
    u32::try_from(room.max(0) / interval).unwrap_or(u32::MAX)
}

fn ceil_seconds(nanos: i64) -> u64 {
    u64::try_from((nanos.max(0) + NANOS_PER_SECOND - 1) / NANOS_PER_SECOND).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NANOS_PER_SECOND;

    fn run(limit: u32, n: usize, now: i64, tat: &mut Option<i64>) -> Vec<Decision> {
        (0..n)
            .map(|_| {
                let (d, t) = decide(limit, *tat, now);
                *tat = Some(t);
                d
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_admits_exactly_its_capacity_at_once() {
        let mut tat = None;
        let d = run(20, 21, 1000 * S, &mut tat);
        assert!(d[..20].iter().all(|d| d.allowed));
        assert!(!d[20].allowed);
        assert_eq!(d[0].remaining, 19);
        assert_eq!(d[19].remaining, 0);
        assert_eq!(d[0].reset_seconds, 3);
        assert_eq!(d[19].reset_seconds, 60);
    }

    #[test]
    fn the_bucket_refills_continuously() {
        let mut tat = None;
        run(60, 60, 0, &mut tat);
        let (refused, _) = decide(60, tat, 0);
        assert_eq!(refused.retry_after_seconds, 1);
        let (d, _) = decide(60, tat, S);
        assert!(d.allowed, "one token back after one second at 60/min");
        assert_eq!(d.remaining, 0);
        let (d, _) = decide(60, tat, 30 * S);
        assert_eq!(d.remaining, 29);
    }

    #[test]
    fn retry_after_is_when_the_next_token_arrives() {
        let mut tat = None;
        run(1, 1, 0, &mut tat);
        let (d, t) = decide(1, tat, 10 * S);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_seconds, 50);
        assert_eq!(Some(t), tat, "a refused request consumes nothing");
    }
}
