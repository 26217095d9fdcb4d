//! Charts as inline SVG, drawn on the server from usage series: an outcome-stacked bar chart
//! with a legend and a table of the same numbers, and a sparkline. Colours come from CSS
//! classes (`o-allowed`, …); every chart has a text alternative.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use crate::domain::usage::{Counters, Granularity, Outcome};
use crate::service::usage::Series;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
/// Room for the axis labels under the bars.
const AXIS: f64 = 18.0;

fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allowed => "allowed",
        Outcome::RateLimited => "rate limited",
        Outcome::UsageExceeded => "usage exceeded",
        Outcome::Forbidden => "forbidden",
        Outcome::Disabled => "disabled",
        Outcome::Expired => "expired",
        Outcome::UpstreamError => "upstream error",
        Outcome::Invalid => "invalid",
    }
}

fn bucket_label(start: DateTime<Utc>, granularity: Granularity) -> String {
    match granularity {
        Granularity::Minute | Granularity::Hour => start.format("%Y-%m-%d %H:%M").to_string(),
        Granularity::Day => start.format("%Y-%m-%d").to_string(),
    }
}

/// What one bucket holds, in words.
fn describe(counters: &Counters) -> String {
    let parts: Vec<String> = Outcome::ALL
        .into_iter()
        .filter(|o| counters.get(*o) > 0)
        .map(|o| format!("{} {}", counters.get(o), label(o)))
        .collect();
    if parts.is_empty() {
        "no uses".into()
    } else {
        parts.join(", ")
    }
}

/// Bars of every bucket, each stacked by outcome, scaled to the busiest bucket.
pub fn stacked_bars(series: &Series, title: &str) -> Markup {
    let granularity = series.range.granularity;
    let peak = series
        .buckets
        .iter()
        .map(|(_, c)| c.total())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = series.buckets.len().max(1) as f64;
    let slot = WIDTH / n;
    let bar = (slot * 0.8).max(0.5);
    let plot = HEIGHT - AXIS;
    let first = series
        .buckets
        .first()
        .map(|(s, _)| bucket_label(*s, granularity));
    let last = series
        .buckets
        .last()
        .map(|(s, _)| bucket_label(*s, granularity));
    let summary = format!(
        "{title}: {} uses in {} {} buckets, at most {peak} in one",
        series.totals.total(),
        series.buckets.len(),
        granularity.as_str()
    );
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(summary) {
                title { (summary) }
                line.grid x1="0" y1=(plot) x2=(WIDTH) y2=(plot) {}
                text.axis x="2" y="11" { (peak) }
                @for (i, (start, counters)) in series.buckets.iter().enumerate() {
                    g {
                        title { (bucket_label(*start, granularity)) ": " (describe(counters)) }
                        @for (outcome, y, h) in stack(counters, peak, plot) {
                            rect class=(format!("o-{}", outcome.as_str()))
                                x=(format!("{:.2}", i as f64 * slot + (slot - bar) / 2.0))
                                y=(format!("{y:.2}")) width=(format!("{bar:.2}"))
                                height=(format!("{h:.2}")) {}
                        }
                    }
                }
                @if let Some(first) = &first {
                    text.axis x="0" y=(HEIGHT - 4.0) { (first) }
                }
                @if let Some(last) = &last {
                    text.axis x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" { (last) }
                }
            }
            figcaption {
                ul.legend {
                    @for outcome in Outcome::ALL {
                        li {
                            span class=(format!("swatch o-{}", outcome.as_str())) {}
                            (label(outcome)) " " (series.totals.get(outcome))
                        }
                    }
                }
                details {
                    summary { "The numbers as a table" }
                    div.table-wrap {
                        table {
                            thead { tr {
                                th { "bucket (UTC)" }
                                @for outcome in Outcome::ALL { th.num { (label(outcome)) } }
                            } }
                            tbody {
                                @for (start, counters) in &series.buckets {
                                    tr {
                                        td { (bucket_label(*start, granularity)) }
                                        @for outcome in Outcome::ALL { td.num { (counters.get(outcome)) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The non-empty segments of one bar, bottom up: `(outcome, y, height)`.
fn stack(counters: &Counters, peak: u64, plot: f64) -> Vec<(Outcome, f64, f64)> {
    let mut bottom = plot;
    Outcome::ALL
        .into_iter()
        .filter(|o| counters.get(*o) > 0)
        .map(|o| {
            let h = counters.get(o) as f64 / peak as f64 * (plot - 14.0);
            bottom -= h;
            (o, bottom, h)
        })
        .collect()
}

/// A small line of total uses per bucket.
pub fn sparkline(series: &Series) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let totals: Vec<u64> = series.buckets.iter().map(|(_, c)| c.total()).collect();
    let peak = totals.iter().copied().max().unwrap_or(0);
    let step = W / (totals.len().saturating_sub(1).max(1)) as f64;
    let points: Vec<String> = totals
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let y = H - 2.0 - (*t as f64 / peak.max(1) as f64) * (H - 4.0);
            format!("{:.1},{y:.1}", i as f64 * step)
        })
        .collect();
    let text = format!(
        "{} uses in the last {} hours, at most {peak} in one hour",
        series.totals.total(),
        totals.len()
    );
    html! {
        svg.spark viewBox=(format!("0 0 {W} {H}")) width="120" height="28" role="img" aria-label=(text) {
            title { (text) }
            line.base x1="0" y1=(H - 2.0) x2=(W) y2=(H - 2.0) {}
            polyline points=(points.join(" ")) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::usage::BucketRange;

    fn series() -> Series {
        let now: DateTime<Utc> = "2026-12-01T10:30:00Z".parse().unwrap();
        let range = BucketRange::covering(None, None, Some(Granularity::Hour), now).unwrap();
        let mut busy = Counters::of(Outcome::Allowed);
        busy.add(Outcome::RateLimited, 3);
        let buckets: Vec<_> = range
            .starts()
            .enumerate()
            .map(|(i, s)| (s, if i == 3 { busy } else { Counters::default() }))
            .collect();
        Series {
            range,
            buckets,
            totals: busy,
        }
    }

    #[test]
    fn bars_stack_by_outcome_and_say_what_they_show() {
        let svg = stacked_bars(&series(), "Uses").into_string();
        assert!(svg.contains("Uses: 4 uses in 25 hour buckets, at most 4 in one"));
        assert!(svg.contains("2026-11-30 13:00: 1 allowed, 3 rate limited"));
        assert_eq!(svg.matches("class=\"o-allowed\"").count(), 1);
        assert_eq!(svg.matches("class=\"o-rate_limited\"").count(), 1);
        assert_eq!(
            svg.matches("<tr>").count(),
            26,
            "a header and a row per bucket"
        );
    }

    #[test]
    fn a_sparkline_has_a_point_per_bucket_and_a_title() {
        let svg = sparkline(&series()).into_string();
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 25);
        assert!(svg.contains("4 uses in the last 25 hours, at most 4 in one hour"));
    }
}
