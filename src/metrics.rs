//! Metrics: the hub's counters and gauges, shared by the broadcaster and the routes, and
//! rendered in the Prometheus text format on `/metrics`.

use std::sync::{Arc, atomic::AtomicU64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The `kind` label of a publish error (`invalid`, `too_large`, `duplicate_id`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorKind {
    pub kind: &'static str,
}

/// The `reason` label of a log entry refused at the boundary: `foreign` (not written by a hub),
/// `entry_id`, `not_utf8`, `not_json` (not an event, or the wrong shape), `topics`, `id`,
/// `type`, `too_large` (data over the body limit), `order` (an entry that claims a place the
/// log's order cannot have: an epoch the log does not have, or a second loss at one entry).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedReason {
    pub reason: &'static str,
}

/// The `limit` label of a per-client refusal (`subscribers`, `selector_bytes`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

/// The `result` label of a JWK Set read: `ok`, `failed`, or `throttled` (not read: a read on
/// demand happened less than `--jwks-min-refresh` ago).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksRefresh {
    pub result: &'static str,
}

impl JwksRefresh {
    pub const OK: Self = Self { result: "ok" };
    pub const FAILED: Self = Self { result: "failed" };
    pub const THROTTLED: Self = Self {
        result: "throttled",
    };
}

/// The `event` label of what ACME did (`--tls-acme`): a certificate served from the cache or
/// newly issued, an order that failed (retried after a backoff), a cache that could not be
/// read or written, a cached certificate or account key that did not parse (a new one is
/// ordered, or made).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeEvent {
    pub event: &'static str,
}

impl AcmeEvent {
    pub const CACHED_CERTIFICATE: Self = Self {
        event: "cached_certificate",
    };
    pub const NEW_CERTIFICATE: Self = Self {
        event: "new_certificate",
    };
    pub const ORDER_FAILED: Self = Self {
        event: "order_failed",
    };
    pub const CACHE_FAILED: Self = Self {
        event: "cache_failed",
    };
    pub const CACHED_CERTIFICATE_REFUSED: Self = Self {
        event: "cached_certificate_refused",
    };
    pub const ACCOUNT_KEY_REFUSED: Self = Self {
        event: "account_key_refused",
    };
}

/// Every metric of the hub. Updates are atomic adds; the broadcaster adds once per publish,
/// never once per subscriber.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub subscribers: Gauge,
    pub subscribers_connected: Counter,
    pub subscribers_disconnected: Counter,
    pub subscribers_dropped_slow: Counter,
    pub events_published: Counter,
    pub events_delivered: Counter,
    pub bytes_written: Counter<u64, AtomicU64>,
    pub stream_chunks: Counter,
    pub publish_errors: Family<ErrorKind, Counter>,
    pub publish_duration: Histogram,
    pub history_events: Gauge,
    pub history_bytes: Gauge,
    /// Set from the selector cache when `/metrics` is rendered.
    pub selector_bytes: Gauge,
    pub store_commits: Counter,
    pub store_commit_duration: Histogram,
    /// Batches the file store failed to commit or refused (disk full, I/O error, the file
    /// changed under the hub): their publishes were answered 503.
    pub store_commit_failures: Counter,
    /// Times a shared (Redis) log was found to have lost entries this node had not applied.
    pub log_losses: Counter,
    /// Batches Redis appended that fewer replicas than `--redis-replicas` acknowledged in time:
    /// their publishes were answered 503.
    pub log_appends_not_replicated: Counter,
    /// Entries read from a shared log that were refused at the boundary (never delivered).
    pub log_entries_refused: Family<RefusedReason, Counter>,
    /// 1 while the event log can take publishes (`/readyz`), set when `/metrics` is rendered.
    pub log_ready: Gauge,
    /// Subscribe requests refused for a per-client limit, by limit.
    pub client_limit_refusals: Family<LimitLabel, Counter>,
    /// Certificates loaded again from `--tls-cert`/`--tls-key` (a change on disk or SIGHUP).
    pub tls_reloads: Counter,
    /// Reloads refused (a missing, malformed or mismatched file): the old certificate stayed.
    pub tls_reload_failures: Counter,
    /// What ACME did, by event (`--tls-acme`).
    pub acme_events: Family<AcmeEvent, Counter>,
    /// Reads of issuers' JWK Sets, by result (`--issuers`).
    pub jwks_refreshes: Family<JwksRefresh, Counter>,
    /// Keys of a JWK Set skipped (malformed, for encryption, a secret, an unknown algorithm).
    pub jwks_keys_refused: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("sse_hub");
        let metrics = Self {
            subscribers: Gauge::default(),
            subscribers_connected: Counter::default(),
            subscribers_disconnected: Counter::default(),
            subscribers_dropped_slow: Counter::default(),
            events_published: Counter::default(),
            events_delivered: Counter::default(),
            bytes_written: Counter::default(),
            stream_chunks: Counter::default(),
            publish_errors: Family::default(),
            // 50 µs .. ~0.8 s: a publish is one actor round trip.
            publish_duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            history_events: Gauge::default(),
            history_bytes: Gauge::default(),
            selector_bytes: Gauge::default(),
            store_commits: Counter::default(),
            // 100 µs .. ~1.6 s: one transaction, fsync included.
            store_commit_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 15)),
            store_commit_failures: Counter::default(),
            log_losses: Counter::default(),
            log_appends_not_replicated: Counter::default(),
            log_entries_refused: Family::default(),
            log_ready: Gauge::default(),
            client_limit_refusals: Family::default(),
            tls_reloads: Counter::default(),
            tls_reload_failures: Counter::default(),
            acme_events: Family::default(),
            jwks_refreshes: Family::default(),
            jwks_keys_refused: Counter::default(),
            // Filled below, once every metric exists to be registered.
            registry: Registry::default(),
        };
        registry.register(
            "subscribers",
            "Subscribers connected now",
            metrics.subscribers.clone(),
        );
        registry.register(
            "subscribers_connected",
            "Subscribers that connected",
            metrics.subscribers_connected.clone(),
        );
        registry.register(
            "subscribers_disconnected",
            "Subscribers that left (closed, pruned, dropped or shut down)",
            metrics.subscribers_disconnected.clone(),
        );
        registry.register(
            "subscribers_dropped_slow",
            "Subscribers whose stream was ended because their buffer was full",
            metrics.subscribers_dropped_slow.clone(),
        );
        registry.register(
            "events_published",
            "Events accepted for publishing",
            metrics.events_published.clone(),
        );
        registry.register(
            "events_delivered",
            "Events queued to subscribers (one per event per subscriber)",
            metrics.events_delivered.clone(),
        );
        registry.register(
            "bytes_written",
            "Bytes of event streams handed to the HTTP layer",
            metrics.bytes_written.clone(),
        );
        registry.register(
            "stream_chunks",
            "Chunks of event streams handed to the HTTP layer; a socket write carries one or more \
             (events_delivered / stream_chunks = events per chunk)",
            metrics.stream_chunks.clone(),
        );
        registry.register(
            "publish_errors",
            "Publish requests refused, by kind",
            metrics.publish_errors.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time to accept a publish request (streams are not timed: they never end)",
            metrics.publish_duration.clone(),
        );
        registry.register(
            "selector_bytes",
            "Bytes the compiled URI templates in use keep (bounded by --max-selector-bytes)",
            metrics.selector_bytes.clone(),
        );
        registry.register(
            "store_commits",
            "Transactions the file store committed (events_published / store_commits = events \
             per group commit)",
            metrics.store_commits.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Time the file store took to commit one batch, fsync included",
            metrics.store_commit_duration.clone(),
        );
        registry.register(
            "store_commit_failures",
            "Batches the file store failed to commit or refused (disk full, I/O error, its file \
             changed under the hub); their publishes were answered 503 and not published",
            metrics.store_commit_failures.clone(),
        );
        registry.register(
            "log_losses",
            "Times the shared Redis log had lost entries this node had not applied (flushed, \
             restarted empty, or trimmed past this node): its streams were ended and resuming \
             subscribers told `reset`",
            metrics.log_losses.clone(),
        );
        registry.register(
            "log_appends_not_replicated",
            "Batches Redis appended that fewer replicas than --redis-replicas acknowledged \
             within --redis-replica-timeout; their publishes were answered 503 (the events may \
             still be delivered)",
            metrics.log_appends_not_replicated.clone(),
        );
        registry.register(
            "log_entries_refused",
            "Entries read from the shared Redis log that were skipped, never delivered: not written \
             by a hub, or breaking the publication rules, by reason",
            metrics.log_entries_refused.clone(),
        );
        registry.register(
            "log_ready",
            "1 while the event log takes publishes (/readyz), 0 while a Redis log is unreachable",
            metrics.log_ready.clone(),
        );
        registry.register(
            "client_limit_refusals",
            "Subscribe requests refused 429 because their client (source address) was at a \
             per-client limit: `subscribers` (--max-subscribers-per-client) or `selector_bytes` \
             (--max-selector-bytes-per-client)",
            metrics.client_limit_refusals.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificates loaded again from --tls-cert and --tls-key (changed on disk, or SIGHUP)",
            metrics.tls_reloads.clone(),
        );
        registry.register(
            "jwks_refreshes",
            "Reads of issuers' JWK Sets (--issuers), by result: ok, failed (the keys held are \
             kept), throttled (a token named an unknown key within --jwks-min-refresh of the \
             last read on demand)",
            metrics.jwks_refreshes.clone(),
        );
        registry.register(
            "jwks_keys_refused",
            "Keys of a JWK Set skipped: malformed, for encryption, a shared secret, or an \
             unknown algorithm",
            metrics.jwks_keys_refused.clone(),
        );
        registry.register(
            "acme_events",
            "What ACME (--tls-acme) did: cached_certificate, new_certificate, order_failed \
             (retried after a backoff), cache_failed, cached_certificate_refused, \
             account_key_refused",
            metrics.acme_events.clone(),
        );
        registry.register(
            "tls_reload_failures",
            "Certificate reloads refused (a missing, malformed or mismatched file); the \
             certificate served before stayed",
            metrics.tls_reload_failures.clone(),
        );
        registry.register(
            "history_events",
            "Events held in the history",
            metrics.history_events.clone(),
        );
        registry.register(
            "history_bytes",
            "Bytes held in the history",
            metrics.history_bytes.clone(),
        );
        Arc::new(Self {
            registry,
            ..metrics
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// One chunk of `bytes` handed to the HTTP layer by a subscriber's stream.
    pub fn add_stream_chunk(&self, bytes: usize) {
        self.stream_chunks.inc();
        self.bytes_written.inc_by(bytes as u64);
    }

    pub fn count_client_limit_refusal(&self, limit: &'static str) {
        self.client_limit_refusals
            .get_or_create(&LimitLabel { limit })
            .inc();
    }

    pub fn count_publish_error(&self, kind: &'static str) {
        self.publish_errors.get_or_create(&ErrorKind { kind }).inc();
    }
}

/// Sets a gauge from a count.
pub fn set_gauge(gauge: &Gauge, value: usize) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented metric is in the exposition, with the `sse_hub_` prefix and the
    /// `_total` suffix on counters.
    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::new();
        metrics.events_published.inc();
        metrics.count_publish_error("too_large");
        metrics.publish_duration.observe(0.001);
        metrics.count_client_limit_refusal("subscribers");
        let text = metrics.render();
        for name in [
            "sse_hub_subscribers ",
            "sse_hub_subscribers_connected_total ",
            "sse_hub_subscribers_disconnected_total ",
            "sse_hub_subscribers_dropped_slow_total ",
            "sse_hub_events_published_total 1",
            "sse_hub_events_delivered_total ",
            "sse_hub_bytes_written_total ",
            "sse_hub_stream_chunks_total ",
            "sse_hub_publish_errors_total{kind=\"too_large\"} 1",
            "sse_hub_publish_duration_seconds_bucket",
            "sse_hub_history_events ",
            "sse_hub_history_bytes ",
            "sse_hub_client_limit_refusals_total{limit=\"subscribers\"} 1",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
