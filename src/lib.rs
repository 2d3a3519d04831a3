//! sse-hub: a Server-Sent Events hub on actix.
//!
//! - [`auth`]: Mercure JWTs and what they grant: token sources, 0.x claims, 1.0 access tokens
//!   and their authorization details, signing (the `token` command), modern and compat modes.
//! - [`keys`]: signing algorithms, configured keys, trusted issuers (`--issuers`) and their
//!   JWK Sets.
//! - [`config`]: settings, as flags with `SSE_HUB_*` environment twins, and their defaults.
//! - [`client`]: what one client (a source address) may hold: subscribers and selector bytes.
//! - [`startup`]: builds the broadcaster and the HTTP server; main and the tests share it.
//! - [`tls`]: TLS on the listener (HTTP/2 and HTTP/1.1 by ALPN): certificates from files,
//!   reloaded without a restart, or from an ACME CA (`--tls-acme`), renewed automatically.
//! - [`broadcaster`]: the actor: subscribers, topic index, history, fan-out, heartbeat; the one
//!   pipeline from publish through the event log to subscribers; `/stats`.
//! - [`event`]: event fields, their validation, and the one wire encoder.
//! - [`event_log`]: the event log, one role (append, locate, tail, readiness) that every store
//!   plays: memory, a file that survives restarts, or a Redis stream shared by several nodes;
//!   and the retained window (history) with its retention rule.
//! - [`topic`]: topic selectors: exact, `*`, RFC 6570 URI templates (0.x) compiled to DFAs, URL
//!   patterns (1.0), and the cache that shares them.
//! - [`url_pattern`]: Mercure 1.0's URL Pattern matchers, the hub's URL and its reserved
//!   namespace, and the value rule for matchers, topics and ids.
//! - [`subscriptions`]: active subscriptions: their events and the subscription API's documents.
//! - [`queue`]: a subscriber's bounded frame queue, drained in one go.
//! - [`reply`]: broadcaster replies woken on the worker's own thread, ahead of subscriber writes.
//! - [`sse`]: a subscriber's response: headers, and the body draining its channel.
//! - [`routes`]: the HTTP surfaces: stream, publish, quick-start triggers, stats, health.
//! - [`error`]: the request error enum and its JSON responses.
//! - [`metrics`]: counters and gauges, rendered for Prometheus on /metrics.
//! - [`healthcheck`]: the `healthcheck` command, a /healthz probe without curl.

pub mod auth;
pub mod broadcaster;
pub mod client;
pub mod config;
pub mod error;
pub mod event;
pub mod event_log;
pub mod healthcheck;
pub mod keys;
pub mod metrics;
pub mod queue;
pub mod reply;
pub mod routes;
pub mod sse;
pub mod startup;
pub mod subscriptions;
pub mod tls;
pub mod topic;
pub mod url_pattern;
