//! Integration tests: the real hub on an ephemeral port, spoken to over HTTP.

mod acme;
mod allocator;
mod bad_input;
mod browser;
mod browser_http2;
mod client_limits;
mod cluster;
mod durable;
mod first_run;
mod hardening;
mod helpers;
mod http_layer;
mod issuers;
mod mercure;
mod mercure_safety;
mod mercure_v1;
mod ops;
mod properties;
mod quickstart;
mod redis_boundary;
mod replay;
mod shutdown;
mod slow_subscriber;
mod store_faults;
mod tls;
mod topics;
