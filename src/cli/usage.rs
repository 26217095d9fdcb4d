//! `relay usage`: the usage series of `GET /admin/usage`, from the database, as a table,
//! JSON or CSV. Counts still in a running server's memory arrive within its flush interval.

use clap::Args;

use super::{explain, print_json};
use crate::domain;
use crate::domain::usage::Outcome;
use crate::http::{UsageResponse, usage_csv};
use crate::service::usage::{Series, SeriesRequest, UsageReports};

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// One client's uses (default: every use, those naming no client included).
    #[arg(long)]
    client: Option<String>,
    /// `verify`, `token` or a relay route's prefix (default: every endpoint).
    #[arg(long)]
    endpoint: Option<String>,
    /// Start, RFC 3339 with an offset (default: 24 h before --to).
    #[arg(long)]
    from: Option<String>,
    /// End, RFC 3339 with an offset (default: now).
    #[arg(long)]
    to: Option<String>,
    /// minute, hour or day (default: chosen from the range).
    #[arg(long)]
    granularity: Option<String>,
    /// Print the HTTP API's JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV, as the HTTP API answers `Accept: text/csv`.
    #[arg(long)]
    csv: bool,
}

pub async fn run(reports: UsageReports, args: UsageArgs) -> anyhow::Result<()> {
    let request = SeriesRequest {
        client_id: args.client,
        endpoint: args.endpoint,
        from: args.from,
        to: args.to,
        granularity: args.granularity,
    };
    let series = reports
        .series(request, domain::now())
        .await
        .map_err(explain)?;
    if args.json {
        print_json(&UsageResponse::from(series))
    } else if args.csv {
        print!("{}", usage_csv(&series));
        Ok(())
    } else {
        print!("{}", table(&series));
        Ok(())
    }
}

/// Buckets as aligned columns, then their totals.
fn table(series: &Series) -> String {
    let mut out = format!("{:<20}", "START");
    for outcome in Outcome::ALL {
        out.push_str(&format!(" {:>14}", outcome.as_str().to_uppercase()));
    }
    out.push('\n');
    let rows = series
        .buckets
        .iter()
        .map(|(start, c)| (start.format("%Y-%m-%dT%H:%M:%SZ").to_string(), c))
        .chain([("TOTAL".to_string(), &series.totals)]);
    for (label, counters) in rows {
        out.push_str(&format!("{label:<20}"));
        for outcome in Outcome::ALL {
            out.push_str(&format!(" {:>14}", counters.get(outcome)));
        }
        out.push('\n');
    }
    out
}
