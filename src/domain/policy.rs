//! Client policies: usage credits (a balance, refilled at the start of every UTC day or
//! month) and the networks a client may call from. What is stored, how it is validated, and
//! the calendar arithmetic of refills; how credits are spent across nodes is the credit
//! service's (`service::credits`).

use std::net::IpAddr;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use ipnet::IpNet;
use serde::Serialize;

use super::address;

/// The largest balance and refill amount: a trillion.
pub const MAX_CREDITS: i64 = 1_000_000_000_000;
/// The most networks a client may be given.
pub const MAX_NETWORKS: usize = 32;
/// The most credits one verification may cost.
pub const MAX_COST: i64 = 1000;

/// When credits are refilled: at the start of every UTC day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    Day,
    Month,
}

impl RefillInterval {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "day" => Some(RefillInterval::Day),
            "month" => Some(RefillInterval::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefillInterval::Day => "day",
            RefillInterval::Month => "month",
        }
    }

    /// The start of the period `now` lies in.
    pub fn period_start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let today = now.date_naive();
        let first = match self {
            RefillInterval::Day => today,
            RefillInterval::Month => today.with_day(1).unwrap_or(today),
        };
        midnight(first)
    }

    /// The start of the period after the one `now` lies in: the next refill.
    pub fn next_start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.period_start(now).date_naive();
        let next = match self {
            RefillInterval::Day => start.checked_add_days(Days::new(1)),
            RefillInterval::Month => start.checked_add_months(Months::new(1)),
        };
        next.map_or(DateTime::<Utc>::MAX_UTC, midnight)
    }
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Refill {
    /// What the balance is set to at the start of each period, 1..=10^12.
    pub amount: i64,
    pub interval: RefillInterval,
}

/// A client's credits: the balance the database holds, and its refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Credits {
    /// Credits left, 0..=10^12.
    pub remaining: i64,
    pub refill: Option<Refill>,
}

impl Credits {
    /// The refill period a balance set at `now` belongs to (`None` without a refill).
    pub fn period(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.refill.map(|r| r.interval.period_start(now))
    }

    /// Whole seconds until the next refill (at least 1), if there is one.
    pub fn seconds_to_refill(&self, now: DateTime<Utc>) -> Option<u64> {
        let next = self.refill?.interval.next_start(now);
        let ms = u64::try_from((next - now).num_milliseconds().max(1)).ok()?;
        Some(ms.div_ceil(1000))
    }
}

/// Credits as an admin asks for them, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditsDraft {
    pub remaining: i64,
    pub refill: Option<RefillDraft>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefillDraft {
    pub amount: i64,
    /// `day` or `month`.
    pub interval: String,
}

/// Validates credits; each problem at its JSON Pointer below `/credits`.
pub fn parse_credits(draft: CreditsDraft) -> Result<Credits, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let in_range = |n: i64, low: i64| (low..=MAX_CREDITS).contains(&n);
    if !in_range(draft.remaining, 0) {
        problems.push((
            "/credits/remaining".into(),
            format!("must be 0..={MAX_CREDITS}"),
        ));
    }
    let refill = draft.refill.and_then(|r| {
        if !in_range(r.amount, 1) {
            problems.push((
                "/credits/refill/amount".into(),
                format!("must be 1..={MAX_CREDITS}"),
            ));
        }
        let interval = RefillInterval::parse(&r.interval);
        if interval.is_none() {
            problems.push((
                "/credits/refill/interval".into(),
                "must be \"day\" or \"month\"".into(),
            ));
        }
        interval.map(|interval| Refill {
            amount: r.amount,
            interval,
        })
    });
    if problems.is_empty() {
        Ok(Credits {
            remaining: draft.remaining,
            refill,
        })
    } else {
        Err(problems)
    }
}

/// Validates a list of networks: CIDRs or bare addresses, at most 32, normalised, in the
/// order given with repeats dropped.
pub fn parse_networks(items: &[String]) -> Result<Vec<IpNet>, String> {
    if items.len() > MAX_NETWORKS {
        return Err(format!("must hold at most {MAX_NETWORKS} networks"));
    }
    let mut networks: Vec<IpNet> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let network = address::parse_network(item).map_err(|e| format!("item {i} {e}"))?;
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    Ok(networks)
}

/// Whether a client with `networks` may call from `ip` (`None`: the address is not known).
/// An empty list allows every address.
pub fn address_allowed(networks: &[IpNet], ip: Option<IpAddr>) -> bool {
    networks.is_empty() || ip.is_some_and(|ip| address::in_networks(networks, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn periods_start_at_utc_midnight_of_the_day_or_the_first_of_the_month() {
        let t = at("2026-12-31T23:59:59Z");
        assert_eq!(
            RefillInterval::Day.period_start(t),
            at("2026-12-31T00:00:00Z")
        );
        assert_eq!(
            RefillInterval::Day.next_start(t),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            RefillInterval::Month.period_start(t),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            RefillInterval::Month.next_start(at("2027-01-31T12:00:00+02:00")),
            at("2027-02-01T00:00:00Z")
        );
    }

    #[test]
    fn seconds_to_refill_round_up_and_are_absent_without_a_refill() {
        let refill = Some(Refill {
            amount: 5,
            interval: RefillInterval::Day,
        });
        let credits = Credits {
            remaining: 0,
            refill,
        };
        assert_eq!(
            credits.seconds_to_refill(at("2026-12-04T23:59:58.500Z")),
            Some(2)
        );
        let none = Credits {
            remaining: 0,
            refill: None,
        };
        assert_eq!(none.seconds_to_refill(at("2026-12-04T23:59:58Z")), None);
    }

    #[test]
    fn credits_are_validated_field_by_field() {
        let draft = |remaining, amount, interval: &str| CreditsDraft {
            remaining,
            refill: Some(RefillDraft {
                amount,
                interval: interval.into(),
            }),
        };
        assert!(parse_credits(draft(0, 1, "month")).is_ok());
        let pointers: Vec<String> = parse_credits(draft(-1, 0, "week"))
            .unwrap_err()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            pointers,
            [
                "/credits/remaining",
                "/credits/refill/amount",
                "/credits/refill/interval"
            ]
        );
        assert!(parse_credits(draft(MAX_CREDITS + 1, 1, "day")).is_err());
    }

    #[test]
    fn networks_are_normalised_bounded_and_checked() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = parse_networks(&items(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])).unwrap();
        let shown: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert!(parse_networks(&items(&["10.0.0.1/8"])).is_err());
        assert!(parse_networks(&items(&["example.com"])).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("10.0.{i}.0/24")).collect();
        assert!(parse_networks(&many).is_err());
    }

    #[test]
    fn addresses_are_allowed_inside_the_networks_or_anywhere_without_any() {
        let nets =
            parse_networks(&["10.0.0.0/8".to_string(), "2001:db8::/32".to_string()]).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(address_allowed(&nets, ip("10.1.2.3")));
        assert!(address_allowed(&nets, ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(address_allowed(&nets, ip("2001:db8::1")));
        assert!(!address_allowed(&nets, ip("192.0.2.1")));
        assert!(
            !address_allowed(&nets, None),
            "an unknown address is outside"
        );
        assert!(address_allowed(&[], None));
    }
}
