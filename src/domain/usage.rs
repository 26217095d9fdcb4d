//! Usage analytics: what a use of a credential is counted as (`Outcome`), the counters kept
//! per bucket, the bucket sizes (`Granularity`), how a requested range becomes buckets, and how
//! long each size is kept.

use chrono::{DateTime, Duration, Utc};

use super::Error;

/// How a use of a credential ended, as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    RateLimited,
    UsageExceeded,
    Forbidden,
    Disabled,
    Expired,
    UpstreamError,
    /// The credential names no client (counted under no client).
    Invalid,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Allowed,
        Outcome::RateLimited,
        Outcome::UsageExceeded,
        Outcome::Forbidden,
        Outcome::Disabled,
        Outcome::Expired,
        Outcome::UpstreamError,
        Outcome::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::RateLimited => "rate_limited",
            Outcome::UsageExceeded => "usage_exceeded",
            Outcome::Forbidden => "forbidden",
            Outcome::Disabled => "disabled",
            Outcome::Expired => "expired",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Invalid => "invalid",
        }
    }
}

/// Uses by outcome, in the order of `Outcome::ALL` (the order of the API's fields and the
/// CSV columns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; 8]);

impl Counters {
    pub fn of(outcome: Outcome) -> Self {
        let mut c = Counters::default();
        c.add(outcome, 1);
        c
    }

    pub fn add(&mut self, outcome: Outcome, n: u64) {
        let slot = &mut self.0[outcome as usize];
        *slot = slot.saturating_add(n);
    }

    pub fn merge(&mut self, other: &Counters) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = mine.saturating_add(theirs);
        }
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// The size of a bucket. Buckets are aligned to UTC (Unix time is), so a day starts at 00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Granularity::ALL.into_iter().find(|g| g.as_str() == text)
    }

    /// The start of the bucket holding `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let s = self.seconds();
        DateTime::from_timestamp(t.timestamp().div_euclid(s) * s, 0).unwrap_or(t)
    }

    /// How long buckets of this size are kept at least (the contract's retention).
    pub fn retention(self) -> Duration {
        match self {
            Granularity::Minute => Duration::hours(48),
            Granularity::Hour => Duration::days(90),
            Granularity::Day => Duration::days(3 * 366),
        }
    }

    /// The granularity chosen when none is asked for: minutes up to 2 h, hours up to 7 days.
    fn for_span(span: Duration) -> Self {
        if span <= Duration::hours(2) {
            Granularity::Minute
        } else if span <= Duration::days(7) {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }
}

/// The most buckets one answer holds.
pub const MAX_BUCKETS: i64 = 1440;
/// The default range ends now and spans this long.
pub const DEFAULT_SPAN: Duration = Duration::hours(24);

/// A range of whole buckets: `[start, end)`, both aligned to `granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub granularity: Granularity,
}

impl BucketRange {
    /// The buckets covering `[from, to)`: `from` defaults to 24 h before `to`, `to` to now,
    /// and the granularity to what suits the span. The first bucket is the one holding `from`,
    /// the last the one holding the instant before `to`.
    pub fn covering(
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        granularity: Option<Granularity>,
        now: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let to = to.unwrap_or(now);
        let from = match from {
            Some(from) => from,
            None => to
                .checked_sub_signed(DEFAULT_SPAN)
                .ok_or_else(|| Error::invalid("to", "is too early"))?,
        };
        if from >= to {
            return Err(Error::invalid("from", "must be before `to`"));
        }
        let granularity = granularity.unwrap_or_else(|| Granularity::for_span(to - from));
        let start = granularity.floor(from);
        let last = granularity.floor(to - Duration::microseconds(1));
        let end = last
            .checked_add_signed(Duration::seconds(granularity.seconds()))
            .ok_or_else(|| Error::invalid("to", "is too late"))?;
        let range = BucketRange {
            start,
            end,
            granularity,
        };
        let buckets = range.len();
        if buckets > MAX_BUCKETS {
            return Err(Error::invalid(
                "granularity",
                format!(
                    "the range holds {buckets} {} buckets, more than {MAX_BUCKETS}; \
                     choose a shorter range or a coarser granularity",
                    granularity.as_str()
                ),
            ));
        }
        Ok(range)
    }

    pub fn len(&self) -> i64 {
        (self.end - self.start).num_seconds() / self.granularity.seconds()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The start of every bucket, ascending.
    pub fn starts(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let step = Duration::seconds(self.granularity.seconds());
        (0..self.len() as i32).map(move |i| self.start + step * i)
    }
}

/// An `endpoint` filter: `verify`, `token`, or a relay route's prefix.
pub fn parse_endpoint(text: &str) -> Result<String, Error> {
    let valid = matches!(text, "verify" | "token")
        || (text.starts_with('/') && text.len() <= 255 && !text.chars().any(char::is_control));
    if valid {
        Ok(text.to_string())
    } else {
        Err(Error::invalid(
            "endpoint",
            "must be `verify`, `token` or a relay route's prefix such as `/v1/chat`",
        ))
    }
}

/// Parses an RFC 3339 timestamp with its UTC offset. A `+` left unescaped in a query string
/// arrives as a space; it is read as the `+` it was.
pub fn parse_timestamp(pointer: &str, text: &str) -> Result<DateTime<Utc>, Error> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|e| match text.rsplit_once(' ') {
            Some((head, offset)) if offset.len() == 5 => {
                DateTime::parse_from_rfc3339(&format!("{head}+{offset}"))
            }
            _ => Err(e),
        })
        .map_err(|_| {
            Error::invalid(
                pointer,
                "must be an RFC 3339 timestamp with a UTC offset, such as 2026-12-01T00:00:00Z",
            )
        })?;
    Ok(super::truncate_to_micros(parsed.with_timezone(&Utc)))
}

/// The oldest bucket start of each size still kept at `now`: older buckets may be removed.
pub fn retention_cutoffs(now: DateTime<Utc>) -> [(Granularity, DateTime<Utc>); 3] {
    Granularity::ALL.map(|g| (g, now - g.retention()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_timestamp("t", text).unwrap()
    }

    #[test]
    fn buckets_are_aligned_to_utc_and_cover_the_range() {
        let now = at("2026-12-01T10:30:15Z");
        let r =
            BucketRange::covering(Some(at("2026-12-01T11:05:30+02:00")), None, None, now).unwrap();
        assert_eq!(r.granularity, Granularity::Minute);
        assert_eq!(r.start, at("2026-12-01T09:05:00Z"));
        assert_eq!(r.end, at("2026-12-01T10:31:00Z"));
        assert_eq!(r.len(), 86);
        let starts: Vec<_> = r.starts().collect();
        assert_eq!(starts.len(), 86);
        assert!(starts.windows(2).all(|w| (w[1] - w[0]).num_seconds() == 60));

        let day = BucketRange::covering(
            Some(at("2026-11-01T23:00:00-05:00")),
            Some(at("2026-11-20T00:00:00Z")),
            None,
            now,
        )
        .unwrap();
        assert_eq!(day.granularity, Granularity::Day);
        assert_eq!(day.start, at("2026-11-02T00:00:00Z"));
        assert_eq!(
            day.end,
            at("2026-11-20T00:00:00Z"),
            "an aligned end adds no bucket"
        );
    }

    #[test]
    fn the_default_range_is_the_last_24_hours_by_hour() {
        let now = at("2026-12-01T10:30:15Z");
        let r = BucketRange::covering(None, None, None, now).unwrap();
        assert_eq!(r.granularity, Granularity::Hour);
        assert_eq!(r.start, at("2026-11-30T10:00:00Z"));
        assert_eq!(r.end, at("2026-12-01T11:00:00Z"));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let now = at("2026-12-01T10:30:15Z");
        let t = at("2026-12-01T00:00:00Z");
        assert!(BucketRange::covering(Some(t), Some(t), None, now).is_err());
        assert!(BucketRange::covering(Some(now), Some(t), None, now).is_err());
        let month_ago = now - Duration::days(30);
        let minutes = BucketRange::covering(Some(month_ago), None, Some(Granularity::Minute), now);
        assert!(matches!(minutes, Err(Error::Invalid(e)) if e[0].pointer == "granularity"));
        assert_eq!(
            BucketRange::covering(Some(month_ago), None, Some(Granularity::Hour), now)
                .unwrap()
                .len(),
            721
        );
        let midnight = at("2026-12-01T00:00:00Z");
        let aligned_day = BucketRange::covering(
            Some(midnight - Duration::hours(24)),
            Some(midnight),
            Some(Granularity::Minute),
            now,
        );
        assert_eq!(aligned_day.unwrap().len(), MAX_BUCKETS);
        let unaligned_day = BucketRange::covering(
            Some(now - Duration::hours(24)),
            None,
            Some(Granularity::Minute),
            now,
        );
        assert!(
            unaligned_day.is_err(),
            "1441 buckets: the partial one is one too many"
        );
    }

    #[test]
    fn timestamps_need_an_offset_and_a_lost_plus_is_restored() {
        assert!(parse_timestamp("from", "2026-12-01T00:00:00").is_err());
        assert!(parse_timestamp("from", "yesterday").is_err());
        assert_eq!(
            parse_timestamp("from", "2026-12-01T02:00:00 02:00").unwrap(),
            at("2026-12-01T00:00:00Z")
        );
    }

    #[test]
    fn counters_add_by_outcome() {
        let mut c = Counters::of(Outcome::Invalid);
        c.add(Outcome::Allowed, 2);
        c.merge(&Counters::of(Outcome::Allowed));
        assert_eq!(c.get(Outcome::Allowed), 3);
        assert_eq!(c.get(Outcome::Invalid), 1);
        assert_eq!(c.total(), 4);
        assert_eq!(Outcome::ALL.map(|o| o as usize), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn endpoints_are_verify_token_or_a_prefix() {
        assert!(parse_endpoint("verify").is_ok());
        assert!(parse_endpoint("/v1/chat").is_ok());
        assert!(parse_endpoint("chat").is_err());
        assert!(parse_endpoint("/a\nb").is_err());
    }
}
