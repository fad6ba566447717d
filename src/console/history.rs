//! A small in-process history of the delivery metrics for the console's charts: every
//! [`SAMPLE_EVERY`] the Prometheus registry's totals (deliveries, latency histogram) are
//! read into a ring buffer holding the last hour. Reading the rendered exposition costs
//! one render per interval, never anything per delivery.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

/// How often the totals are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How far back the charts look.
pub(crate) const SPAN_SECS: i64 = 3600;
/// Samples kept: the span plus one (the first one only serves as a baseline).
const CAPACITY: usize = (SPAN_SECS as usize) / 10 + 1;

/// Cumulative totals at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Totals {
    /// Unix time, seconds.
    pub(crate) at: i64,
    /// `herald_deliveries_total{outcome="delivered"}` over every protocol.
    pub(crate) delivered: f64,
    /// `herald_delivery_latency_seconds` (publish to delivery) over every protocol.
    pub(crate) latency_sum: f64,
    pub(crate) latency_count: f64,
    /// Cumulative bucket counts by upper bound (`le`), as Prometheus renders them.
    pub(crate) buckets: Vec<(f64, f64)>,
}

impl Totals {
    /// Reads the totals out of a Prometheus text exposition.
    pub(crate) fn parse(at: i64, text: &str) -> Self {
        let mut t = Self {
            at,
            ..Self::default()
        };
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("herald_deliver")) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "herald_deliveries_total" if labels.contains(r#"outcome="delivered""#) => {
                    t.delivered += value;
                }
                "herald_delivery_latency_seconds_sum" => t.latency_sum += value,
                "herald_delivery_latency_seconds_count" => t.latency_count += value,
                "herald_delivery_latency_seconds_bucket" => {
                    if let Some(le) = label(labels, "le").and_then(parse_le) {
                        // Keyed by the bound's bits: the bounds are positive, so their bit
                        // patterns sort as the numbers do.
                        buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += value;
                    }
                }
                _ => {}
            }
        }
        t.buckets = buckets.into_values().collect();
        t
    }
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// One interval of the charts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    /// End of the interval, Unix seconds.
    pub(crate) at: i64,
    pub(crate) deliveries_per_sec: f64,
    /// Mean and 95th percentile publish→delivery latency of the interval, milliseconds
    /// (none when nothing was delivered in it).
    pub(crate) latency_mean_ms: Option<f64>,
    pub(crate) latency_p95_ms: Option<f64>,
}

/// What happened between two samples. Counters only grow in a process; a negative
/// difference (never expected) counts as zero.
pub(crate) fn between(a: &Totals, b: &Totals) -> Point {
    let secs = (b.at - a.at).max(1) as f64;
    let count = (b.latency_count - a.latency_count).max(0.0);
    let (mean, p95) = if count > 0.0 {
        let mean = (b.latency_sum - a.latency_sum).max(0.0) / count * 1e3;
        (Some(mean), quantile(a, b, 0.95, count).map(|s| s * 1e3))
    } else {
        (None, None)
    };
    Point {
        at: b.at,
        deliveries_per_sec: (b.delivered - a.delivered).max(0.0) / secs,
        latency_mean_ms: mean,
        latency_p95_ms: p95,
    }
}

/// The upper bound of the first bucket holding quantile `q` of the interval's `count`
/// observations (the finest answer a histogram gives); the largest finite bound when the
/// quantile lies beyond it.
fn quantile(a: &Totals, b: &Totals, q: f64, count: f64) -> Option<f64> {
    let before = |le: f64| {
        a.buckets
            .iter()
            .find(|(l, _)| *l == le)
            .map_or(0.0, |(_, c)| *c)
    };
    let mut last_finite = None;
    for &(le, c) in &b.buckets {
        if le.is_finite() {
            last_finite = Some(le);
        }
        if (c - before(le)).max(0.0) >= q * count {
            return if le.is_finite() {
                Some(le)
            } else {
                last_finite
            };
        }
    }
    last_finite
}

/// The ring buffer; cloning shares it.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<VecDeque<Totals>>>);

impl History {
    fn push(&self, t: Totals) {
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(t);
    }

    /// Samples `metrics` until `shutdown`: one sample right away (the baseline), then one
    /// every [`SAMPLE_EVERY`].
    pub async fn sample(self, metrics: PrometheusHandle, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let text = metrics.render();
            self.push(Totals::parse(chrono::Utc::now().timestamp(), &text));
        }
    }

    /// The points of the last hour, oldest first.
    pub(crate) fn points(&self) -> Vec<Point> {
        let ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .zip(ring.iter().skip(1))
            .map(|(a, b)| between(a, b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = r#"# TYPE herald_deliveries_total counter
herald_deliveries_total{protocol="webhook",outcome="delivered"} 10
herald_deliveries_total{protocol="webhook",outcome="retry"} 7
herald_deliveries_total{protocol="email",outcome="delivered"} 5
herald_delivery_latency_seconds_bucket{protocol="webhook",le="0.01"} 5
herald_delivery_latency_seconds_bucket{protocol="webhook",le="0.1"} 10
herald_delivery_latency_seconds_bucket{protocol="webhook",le="+Inf"} 10
herald_delivery_latency_seconds_sum{protocol="webhook"} 0.2
herald_delivery_latency_seconds_count{protocol="webhook"} 10
herald_deliveries_totally_else 99
"#;

    const T1: &str = r#"herald_deliveries_total{protocol="webhook",outcome="delivered"} 110
herald_deliveries_total{protocol="email",outcome="delivered"} 5
herald_delivery_latency_seconds_bucket{protocol="webhook",le="0.01"} 55
herald_delivery_latency_seconds_bucket{protocol="webhook",le="0.1"} 100
herald_delivery_latency_seconds_bucket{protocol="webhook",le="+Inf"} 110
herald_delivery_latency_seconds_sum{protocol="webhook"} 5.2
herald_delivery_latency_seconds_count{protocol="webhook"} 110
"#;

    #[test]
    fn totals_add_up_delivered_outcomes_and_the_latency_histogram_over_protocols() {
        let t = Totals::parse(100, T0);
        assert_eq!(t.delivered, 15.0, "retries are not deliveries");
        assert_eq!((t.latency_sum, t.latency_count), (0.2, 10.0));
        assert_eq!(
            t.buckets,
            vec![(0.01, 5.0), (0.1, 10.0), (f64::INFINITY, 10.0)]
        );
    }

    #[test]
    fn an_interval_gives_the_rate_mean_and_p95_of_what_happened_in_it() {
        let p = between(&Totals::parse(100, T0), &Totals::parse(110, T1));
        assert_eq!(p.at, 110);
        assert_eq!(p.deliveries_per_sec, 10.0);
        assert_eq!(p.latency_mean_ms, Some(50.0));
        // 100 new observations: 50 ≤ 10 ms, 90 ≤ 100 ms, 100 beyond: p95 lies past the
        // last finite bound, which is the finest answer.
        assert_eq!(p.latency_p95_ms, Some(100.0));
        let quiet = between(&Totals::parse(110, T1), &Totals::parse(120, T1));
        assert_eq!(quiet.deliveries_per_sec, 0.0);
        assert_eq!(quiet.latency_mean_ms, None);
    }

    #[test]
    fn the_ring_keeps_one_hour_and_yields_intervals_oldest_first() {
        let h = History::default();
        for i in 0..(CAPACITY as i64 + 5) {
            h.push(Totals {
                at: i * 10,
                delivered: (i * 20) as f64,
                ..Totals::default()
            });
        }
        let points = h.points();
        assert_eq!(points.len(), CAPACITY - 1);
        assert_eq!(points[0].at, 60);
        assert!(points.iter().all(|p| p.deliveries_per_sec == 2.0));
    }
}
