//! The merged result of a run: one JSON object for scripts and a short human summary.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency at the usual percentiles, in ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(hist.value_at_quantile(0.5)),
            p90: ms(hist.value_at_quantile(0.9)),
            p99: ms(hist.value_at_quantile(0.99)),
            p999: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    }
}

/// (percentile, ms) points from 0 to 99.99 spaced evenly in "nines", plus the maximum.
pub fn curve(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = (0..=40)
        .map(|k| {
            let quantile = 1.0 - 10f64.powf(-f64::from(k) / 10.0);
            (
                quantile * 100.0,
                hist.value_at_quantile(quantile) as f64 / 1000.0,
            )
        })
        .collect();
    points.push((100.0, hist.max() as f64 / 1000.0));
    points
}

/// The server's memory and CPU, when its pids were given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    pub pids: Vec<u32>,
    pub rss_before_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_after_kib: u64,
    pub pss_before_kib: u64,
    pub pss_connected_kib: u64,
    /// (RSS once all subscribers are connected − RSS before) / subscribers connected.
    pub rss_per_subscriber_bytes: f64,
    pub pss_per_subscriber_bytes: f64,
    /// utime + stime over the publish phase (first publish to last delivery), seconds.
    pub cpu_s: f64,
    pub cpu_us_per_event: f64,
    /// write(2)/writev(2) calls over the publish phase per delivered event (1 = no coalescing).
    /// Blind to send(2)/sendmsg(2): 0 for servers on Rust's std/mio sockets.
    pub writes_per_event: f64,
}

/// What the subscribers of one URL (a node of a cluster) received.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeFigures {
    pub url: String,
    pub subscribers: u64,
    pub connected: u64,
    pub connect_failed: u64,
    pub closed_early: u64,
    /// Events published × this node's subscribers connected.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Delivered events / (this node's last delivery − first publish).
    pub delivered_per_s: f64,
    pub latency_ms: Percentiles,
}

impl NodeFigures {
    /// The figures of `report`, merged from this node's workers only.
    pub fn of(url: &str, subscribers: u64, report: &Report) -> Self {
        Self {
            url: url.to_owned(),
            subscribers,
            connected: report.connected,
            connect_failed: report.connect_failed,
            closed_early: report.closed_early,
            expected: report.expected,
            delivered: report.delivered,
            lost: report.lost,
            duplicates: report.duplicates,
            reordered: report.reordered,
            delivered_per_s: report.delivered_per_s,
            latency_ms: report.latency_ms.clone(),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub processes: usize,
    pub subscribers: u64,
    /// How subscribers connected: `http/1.1`, `http/1.1+tls` or `h2`. Reports written before it
    /// existed read as empty (they were all plain HTTP/1.1).
    #[serde(default)]
    pub protocol: String,
    /// Connections the subscribers used: one each over HTTP/1.1, fewer over h2.
    #[serde(default)]
    pub connections: u64,
    pub connected: u64,
    pub connect_failed: u64,
    pub connect_error: Option<String>,
    pub connect_s: f64,
    pub connect_p99_ms: f64,
    /// Subscribers whose stream ended before the run did.
    pub closed_early: u64,
    pub published: u64,
    pub publish_failed: u64,
    pub publish_error: Option<String>,
    pub publish_s: f64,
    /// Time from sending a publish to its answer (the server accepted, or committed, it).
    /// Reports written before it existed read as 0.
    #[serde(default)]
    pub publish_round_trip_p50_ms: f64,
    pub publish_round_trip_p99_ms: f64,
    /// Events expected in all: published events × subscribers connected.
    pub expected: u64,
    pub delivered: u64,
    /// Delivered events / (last delivery − first publish).
    pub delivered_per_s: f64,
    pub delivery_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub foreign: u64,
    pub latency_ms: Percentiles,
    pub latency_curve: Vec<(f64, f64)>,
    /// Per event, the time from its publish until it reached every subscriber (its slowest
    /// delivery), over the events. Reports written before it existed read as zeros.
    #[serde(default)]
    pub complete_ms: Percentiles,
    pub server: Option<ServerFigures>,
    /// Per subscribed URL, in the order given: one entry, or one per node of a cluster.
    /// Reports written before it existed read as empty.
    #[serde(default)]
    pub nodes: Vec<NodeFigures>,
    /// CPU time of sse-load itself (coordinator and workers), and the run's wall time.
    pub load_cpu_s: f64,
    pub wall_s: f64,
    pub drain_timed_out: bool,
    pub timed_out: bool,
}

impl Report {
    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} — {} subscribers ({} connected, {} failed) over {} process(es), {} connection(s) ({}), connected in {:.2}s (p99 {:.1} ms)\n",
            if self.label.is_empty() {
                &self.url
            } else {
                &self.label
            },
            self.subscribers,
            self.connected,
            self.connect_failed,
            self.processes,
            self.connections,
            self.protocol,
            self.connect_s,
            self.connect_p99_ms,
        );
        if let Some(err) = &self.connect_error {
            s += &format!("  first connect error: {err}\n");
        }
        if self.published > 0 {
            let l = &self.latency_ms;
            s += &format!(
                "  published {} events in {:.2}s ({} failed), delivered {}/{} in {:.2}s = {:.0} events/s\n",
                self.published,
                self.publish_s,
                self.publish_failed,
                self.delivered,
                self.expected,
                self.delivery_s,
                self.delivered_per_s,
            );
            s += &format!(
                "  lost {}, duplicates {}, reordered {}, foreign {}, streams closed early {}\n",
                self.lost, self.duplicates, self.reordered, self.foreign, self.closed_early
            );
            s += &format!(
                "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}\n",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            );
            let c = &self.complete_ms;
            s += &format!(
                "  until every subscriber had it, ms (per event): p50 {:.2}  p99 {:.2}  max {:.2}\n",
                c.p50, c.p99, c.max
            );
        }
        if self.nodes.len() > 1 {
            for node in &self.nodes {
                s += &format!(
                    "  node {}: {} subscribers ({} connected), delivered {}/{}, lost {}, duplicates {}, reordered {}, closed early {}, latency p50 {:.2} p99 {:.2} ms\n",
                    node.url,
                    node.subscribers,
                    node.connected,
                    node.delivered,
                    node.expected,
                    node.lost,
                    node.duplicates,
                    node.reordered,
                    node.closed_early,
                    node.latency_ms.p50,
                    node.latency_ms.p99,
                );
            }
        }
        if let Some(err) = &self.publish_error {
            s += &format!("  first publish error: {err}\n");
        }
        if let Some(server) = &self.server {
            s += &format!(
                "  server {:?}: RSS {} → {} KiB connected ({:.0} B/subscriber; PSS {:.0} B), {} KiB after",
                server.pids,
                server.rss_before_kib,
                server.rss_connected_kib,
                server.rss_per_subscriber_bytes,
                server.pss_per_subscriber_bytes,
                server.rss_after_kib,
            );
            if self.published > 0 {
                s += &format!(
                    "; CPU {:.2}s = {:.3} µs/event",
                    server.cpu_s, server.cpu_us_per_event
                );
            }
            s.push('\n');
        }
        s += &format!(
            "  sse-load itself: {:.2}s CPU in {:.2}s\n",
            self.load_cpu_s, self.wall_s
        );
        if self.drain_timed_out {
            s += "  drain timed out: some subscribers never got every event\n";
        }
        if self.timed_out {
            s += "  the overall --timeout passed before the run finished\n";
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally;

    /// The curve rises with the percentile and ends at the maximum.
    #[test]
    fn curve_is_monotonic_and_ends_at_max() {
        let mut hist = tally::new_histogram();
        for v in 1..=100_000 {
            tally::record_clamped(&mut hist, v);
        }
        let points = curve(&hist);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(points.last().unwrap().1, hist.max() as f64 / 1000.0);
        let p = Percentiles::of(&hist);
        assert!((p.p50 - 50.0).abs() < 0.1, "{p:?}");
    }

    /// A report survives the JSON round trip scripts rely on, on one line.
    #[test]
    fn report_json_is_one_line() {
        let report = Report {
            label: "x".into(),
            delivered: 5,
            ..Report::default()
        };
        let line = serde_json::to_string(&report).unwrap();
        assert!(!line.contains('\n'));
        let back: Report = serde_json::from_str(&line).unwrap();
        assert_eq!(back.delivered, 5);
    }
}
