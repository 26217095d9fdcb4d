//! Questions about usage, for the admin API, the console and the CLI: a series of buckets
//! (zero-filled, aligned to UTC) for one client or all, and the clients that used the service
//! most. Requests arrive as text and are validated here, every problem reported at once.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::client::ClientId;
use crate::domain::usage::{self, BucketRange, Counters, Granularity};
use crate::domain::{Error, FieldError};
use crate::storage::Store;
use crate::storage::usage::{ALL_CLIENTS, ClientUsage, SeriesQuery, TopQuery};

/// `GET /admin/usage`, as given.
#[derive(Debug, Clone, Default)]
pub struct SeriesRequest {
    pub client_id: Option<String>,
    pub endpoint: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub granularity: Option<String>,
}

/// `GET /admin/usage/clients`, as given.
#[derive(Debug, Clone, Default)]
pub struct TopRequest {
    pub endpoint: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub range: BucketRange,
    /// Every bucket of the range, ascending.
    pub buckets: Vec<(DateTime<Utc>, Counters)>,
    pub totals: Counters,
}

#[derive(Debug, Clone)]
pub struct TopClients {
    pub range: BucketRange,
    pub clients: Vec<ClientUsage>,
}

pub const DEFAULT_TOP: u32 = 10;
pub const MAX_TOP: u32 = 100;

pub struct UsageReports {
    store: Arc<dyn Store>,
}

/// Collects validation problems so one answer names them all.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn check<T>(&mut self, result: Result<T, Error>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Error::Invalid(errors)) => {
                self.0.extend(errors);
                None
            }
            Err(_) => None,
        }
    }

    fn done(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self.0))
        }
    }
}

fn timestamp(problems: &mut Problems, name: &str, text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| problems.check(usage::parse_timestamp(name, t)))
}

impl UsageReports {
    pub fn new(store: Arc<dyn Store>) -> Self {
        UsageReports { store }
    }

    pub async fn series(
        &self,
        request: SeriesRequest,
        now: DateTime<Utc>,
    ) -> Result<Series, Error> {
        let mut problems = Problems::default();
        let from = timestamp(&mut problems, "from", request.from.as_deref());
        let to = timestamp(&mut problems, "to", request.to.as_deref());
        let granularity =
            request.granularity.as_deref().and_then(|g| {
                problems.check(Granularity::parse(g).ok_or_else(|| {
                    Error::invalid("granularity", "must be `minute`, `hour` or `day`")
                }))
            });
        let endpoint = request
            .endpoint
            .as_deref()
            .and_then(|e| problems.check(usage::parse_endpoint(e)));
        let client_id = request
            .client_id
            .as_deref()
            .and_then(|id| problems.check(client_id(id)));
        let range = if problems.0.is_empty() {
            problems.check(BucketRange::covering(from, to, granularity, now))
        } else {
            None
        };
        problems.done()?;
        let Some(range) = range else {
            return Err(Error::invalid("from", "is not a valid range"));
        };
        if let Some(id) = &client_id {
            if self.store.client(id).await?.is_none() {
                return Err(Error::NotFound);
            }
        }
        self.series_of(client_id.as_ref(), endpoint.as_deref(), range)
            .await
    }

    /// The series of a client (or every use, for `None`) over whole buckets, already valid.
    pub async fn series_of(
        &self,
        client_id: Option<&ClientId>,
        endpoint: Option<&str>,
        range: BucketRange,
    ) -> Result<Series, Error> {
        let query = SeriesQuery {
            client_id: client_id.map_or(ALL_CLIENTS, ClientId::as_str),
            endpoint,
            range,
        };
        let stored = self.store.usage_series(&query).await?;
        Ok(zero_filled(range, stored))
    }

    /// The series of each of `clients` over the same buckets (all endpoints), in one query.
    pub async fn series_of_clients(
        &self,
        clients: &[ClientId],
        range: BucketRange,
    ) -> Result<Vec<Series>, Error> {
        let ids: Vec<&str> = clients.iter().map(ClientId::as_str).collect();
        let rows = self.store.usage_series_of_clients(&ids, range).await?;
        let mut by_client: std::collections::HashMap<String, Vec<(DateTime<Utc>, Counters)>> =
            std::collections::HashMap::new();
        for (client, bucket, counters) in rows {
            by_client
                .entry(client)
                .or_default()
                .push((bucket, counters));
        }
        Ok(ids
            .iter()
            .map(|id| zero_filled(range, by_client.remove(*id).unwrap_or_default()))
            .collect())
    }

    /// The `limit` clients with the most uses over whole buckets, already valid.
    pub async fn top_of(&self, range: BucketRange, limit: u32) -> Result<Vec<ClientUsage>, Error> {
        let query = TopQuery {
            endpoint: None,
            range,
            limit,
        };
        Ok(self.store.top_clients(&query).await?)
    }

    pub async fn top_clients(
        &self,
        request: TopRequest,
        now: DateTime<Utc>,
    ) -> Result<TopClients, Error> {
        let mut problems = Problems::default();
        let from = timestamp(&mut problems, "from", request.from.as_deref());
        let to = timestamp(&mut problems, "to", request.to.as_deref());
        let endpoint = request
            .endpoint
            .as_deref()
            .and_then(|e| problems.check(usage::parse_endpoint(e)));
        let limit = match request.limit {
            None => DEFAULT_TOP,
            Some(n) => problems
                .check(
                    u32::try_from(n)
                        .ok()
                        .filter(|n| (1..=MAX_TOP).contains(n))
                        .ok_or_else(|| Error::invalid("limit", format!("must be 1..={MAX_TOP}"))),
                )
                .unwrap_or(DEFAULT_TOP),
        };
        // The buckets a series of the same range would show, so the two agree.
        let range = if problems.0.is_empty() {
            problems.check(BucketRange::covering(from, to, None, now))
        } else {
            None
        };
        problems.done()?;
        let Some(range) = range else {
            return Err(Error::invalid("from", "is not a valid range"));
        };
        let query = TopQuery {
            endpoint: endpoint.as_deref(),
            range,
            limit,
        };
        let clients = self.store.top_clients(&query).await?;
        Ok(TopClients { range, clients })
    }
}

fn client_id(id: &str) -> Result<ClientId, Error> {
    crate::domain::storable_text("client_id", id)?;
    ClientId::parse(id).map_err(|_| {
        Error::invalid(
            "client_id",
            "the client id must not contain control characters",
        )
    })
}

/// Every bucket of `range`, with the stored counts where there are some.
fn zero_filled(range: BucketRange, stored: Vec<(DateTime<Utc>, Counters)>) -> Series {
    let mut stored = stored.into_iter().peekable();
    let mut totals = Counters::default();
    let buckets = range
        .starts()
        .map(|start| {
            let mut counters = Counters::default();
            while let Some((_, c)) = stored.next_if(|(at, _)| *at <= start) {
                counters.merge(&c);
            }
            totals.merge(&counters);
            (start, counters)
        })
        .collect();
    Series {
        range,
        buckets,
        totals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::usage::Outcome;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_bucket_is_present_and_the_totals_add_up() {
        let range = BucketRange::covering(
            Some(at("2026-12-01T10:00:00Z")),
            Some(at("2026-12-01T10:05:00Z")),
            Some(Granularity::Minute),
            at("2026-12-02T00:00:00Z"),
        )
        .unwrap();
        let stored = vec![
            (at("2026-12-01T10:01:00Z"), Counters::of(Outcome::Allowed)),
            (at("2026-12-01T10:04:00Z"), Counters::of(Outcome::Invalid)),
        ];
        let series = zero_filled(range, stored);
        let allowed: Vec<u64> = series.buckets.iter().map(|(_, c)| c.total()).collect();
        assert_eq!(allowed, vec![0, 1, 0, 0, 1]);
        assert_eq!(series.buckets[0].0, at("2026-12-01T10:00:00Z"));
        assert_eq!(series.totals.get(Outcome::Allowed), 1);
        assert_eq!(series.totals.get(Outcome::Invalid), 1);
    }
}
