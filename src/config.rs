//! Settings: every knob of the hub as a CLI flag with an `SSE_HUB_*` environment twin, and
//! the documented defaults as named constants.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::{
    auth::{JwtAlgorithm, JwtKey, Keys, Mode, Role},
    keys,
    metrics::Metrics,
    tls::acme::{self, AcmeContact, AcmeDomain},
    url_pattern::HubUrl,
};

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Below the idle timeout of every common proxy (nginx 60 s, ALB 60 s, Cloudflare 100 s).
pub const DEFAULT_HEARTBEAT: &str = "15s";
/// Events a subscriber may have queued before it counts as too slow and is dropped.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 1024;
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
pub const DEFAULT_CORS_ORIGIN: &str = "*";
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "1s";
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 100_000;
pub const DEFAULT_TOPIC: &str = "default";
pub const DEFAULT_HISTORY_SIZE: usize = 10_000;
pub const DEFAULT_HISTORY_BYTES: usize = 16 * 1024 * 1024;
/// Subscription events (`--subscriptions`) kept for replay, apart from the application events:
/// minutes of ordinary joins and leaves for a presence watcher that reconnects, in well under
/// a megabyte (an event is a few hundred bytes), while a reconnect storm churns through them
/// without touching the application history. Older state comes from the subscription API.
pub const DEFAULT_SUBSCRIPTION_HISTORY: usize = 1_000;
pub use crate::auth::DEFAULT_MAX_TOKEN_SELECTORS;
pub use crate::event::{DEFAULT_MAX_TOPIC_BYTES, DEFAULT_MAX_TOPICS};
pub use crate::topic::{
    DEFAULT_COMPILE_THREADS, DEFAULT_MAX_SELECTOR_BYTES, DEFAULT_MAX_TEMPLATE_BYTES,
};
/// A sixteenth of `--max-selector-bytes`: one source address can never fill the global budget
/// (sixteen would be needed, and an IPv6 /64 counts as one), while it still holds ~80 distinct
/// URL patterns or far more URI templates, and the largest single request (`--max-topics`
/// selectors of `--max-template-bytes`, 2 MiB) always fits for a client that holds nothing.
pub const DEFAULT_MAX_SELECTOR_BYTES_PER_CLIENT: usize = DEFAULT_MAX_SELECTOR_BYTES / 16;
/// A tenth of `--max-subscribers`: ten addresses would be needed to fill the hub, while a NAT
/// or a test harness on one address keeps thousands of streams (the load tester spreads its
/// 20,000 over 253 addresses, ~80 each).
pub const DEFAULT_MAX_SUBSCRIBERS_PER_CLIENT: usize = DEFAULT_MAX_SUBSCRIBERS / 10;
/// Long enough for a slow mobile link, short enough that a peer that stopped reading or
/// vanished without a FIN does not hold its connection for the kernel's ~15 minutes.
pub const DEFAULT_WRITE_TIMEOUT: &str = "60s";
/// History in memory: today's speed, nothing kept across a restart.
pub const DEFAULT_STORE: &str = "memory";
/// The keys of a `redis://` store: `sse-hub:log`, `sse-hub:meta`, `sse-hub:ids`.
pub const DEFAULT_REDIS_PREFIX: &str = "sse-hub";
/// A replica on a local network acknowledges in about a millisecond; a second rides out a
/// replica's brief stall without making every publisher wait long when one is gone.
pub const DEFAULT_REDIS_REPLICA_TIMEOUT: &str = "1s";
/// `--presence-ttl`.
pub const DEFAULT_PRESENCE_TTL: &str = "15s";
/// A node's tail is usually milliseconds behind the log; a few seconds cover a node catching
/// up after a stall without holding a resuming subscriber long when the id never comes.
pub const DEFAULT_RESUME_WAIT: &str = "3s";
/// The shortest `--presence-ttl`: a heartbeat every third of a second. Shorter, a node whose
/// heartbeat waits on a busy Redis for a moment is taken for dead and its subscriptions end.
pub const MIN_PRESENCE_TTL: Duration = Duration::from_secs(1);
/// A renewed certificate is served within seconds (certbot and most tools replace the files;
/// SIGHUP loads them at once), at the cost of two `stat` calls per check.
pub const DEFAULT_TLS_RELOAD_INTERVAL: &str = "10s";
/// Let's Encrypt's production CA: browsers trust what it issues. Its staging directory,
/// for trying a setup without its rate limits, is
/// `https://acme-staging-v02.api.letsencrypt.org/directory`.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// actix-http's defaults, kept: only publishers send much to the hub.
pub const DEFAULT_HTTP2_STREAM_WINDOW: u32 = 1024 * 1024;
pub const DEFAULT_HTTP2_CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// actix-web's default: idle keep-alive connections are cheap to reopen; an HTTP/2 connection
/// carrying streams is pinged this often, which also keeps NAT and proxy mappings alive.
pub const DEFAULT_KEEP_ALIVE: &str = "5s";
/// Clock skew tolerated between the token issuer and the hub, on `nbf` and `exp` alike: NTP
/// keeps servers well within it, and it lets a token live at most this much past its `exp`.
pub const DEFAULT_JWT_LEEWAY: &str = "5s";
/// Selectors listed in `/stats` (those with the most subscribers): enough to see what is hot,
/// small enough that the answer stays within ~30 KB and its sort within the actor cheap.
pub const DEFAULT_STATS_SELECTORS: usize = 100;
/// Identity providers rotate keys over days; five minutes bounds how long a retired key
/// stays trusted.
pub const DEFAULT_JWKS_REFRESH: &str = "5m";
/// A new key is picked up on its first token; a flood of unknown `kid`s costs one fetch per
/// this.
pub const DEFAULT_JWKS_MIN_REFRESH: &str = "30s";
/// Mercure 1.0 only: safe for a new hub (README, "Mercure modes").
pub const DEFAULT_MERCURE_MODE: &str = "modern";
pub use crate::url_pattern::DEFAULT_HUB_URL;

/// sse-hub: a Server-Sent Events hub. Without a command, it runs the server.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Asks the hub at `--bind` for /healthz; exits 0 when healthy (the image's HEALTHCHECK).
    Healthcheck,
    /// Prints a JWT signed with the configured publisher key, e.g. `token --publish '*'`.
    Token(TokenArgs),
}

/// What the `token` command puts in the token.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Selectors the bearer may publish to (`mercure.publish`); repeatable.
    #[arg(long = "publish", value_name = "SELECTOR")]
    pub publish: Vec<String>,
    /// Selectors whose private events the bearer may receive (`mercure.subscribe`); repeatable.
    #[arg(long = "subscribe", value_name = "SELECTOR")]
    pub subscribe: Vec<String>,
    /// Lifetime of the token (`1h`, `30d`); without it the token does not expire.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
    /// RS256 private key (PEM, or `@path`); needed when the publisher key is RS256.
    #[arg(long)]
    pub private_key: Option<String>,
    /// Make a Mercure 1.0 access token (`typ: at+jwt`): `iss` from `--jwt-issuer`, `aud` from
    /// `--jwt-audience`, the selectors as `authorization_details`, `exp` required (default 1h).
    #[arg(long)]
    pub access_token: bool,
    /// With `--access-token`: the matcher type of every selector given.
    #[arg(long, value_parser = ["exact", "urlpattern"], default_value = "exact")]
    pub match_type: String,
    /// With `--access-token`: the `sub` (and `client_id`) claim.
    #[arg(long, default_value = "sse-hub-token")]
    pub subject: String,
    /// With `--access-token`: a JSON object attached as the `subscribe` detail's payload.
    #[arg(long, value_parser = parse_payload)]
    pub payload: Option<serde_json::Value>,
}

fn parse_payload(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("must be a JSON object".to_owned()),
        Err(err) => Err(format!("not JSON: {err}")),
    }
}

/// The server's settings.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "SSE_HUB_BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "SSE_HUB_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Heartbeat period: a keep-alive comment to every subscriber, and closed ones pruned.
    #[arg(long, env = "SSE_HUB_HEARTBEAT", default_value = DEFAULT_HEARTBEAT, value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    /// Events queued per subscriber before it is dropped as too slow (it reconnects and replays).
    #[arg(long, env = "SSE_HUB_SUBSCRIBER_BUFFER", default_value_t = DEFAULT_SUBSCRIBER_BUFFER, value_parser = positive)]
    pub subscriber_buffer: usize,

    /// Largest accepted publish body, in bytes (larger → 413).
    #[arg(long, env = "SSE_HUB_BODY_LIMIT_BYTES", default_value_t = DEFAULT_BODY_LIMIT_BYTES)]
    pub body_limit_bytes: usize,

    /// `Access-Control-Allow-Origin` sent on the quick-start routes.
    #[arg(long, env = "SSE_HUB_CORS_ORIGIN", default_value = DEFAULT_CORS_ORIGIN)]
    pub cors_origin: String,

    /// Connections whose written data stays unacknowledged this long are closed by the kernel
    /// (TCP_USER_TIMEOUT): subscribers that stopped reading or vanished (0 = the OS default).
    #[arg(long, env = "SSE_HUB_WRITE_TIMEOUT", default_value = DEFAULT_WRITE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// How long shutdown waits for streams to drain before closing them anyway.
    #[arg(long, env = "SSE_HUB_SHUTDOWN_TIMEOUT", default_value = DEFAULT_SHUTDOWN_TIMEOUT, value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Subscribers held at once; further subscribe requests get 503.
    #[arg(long, env = "SSE_HUB_MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Subscribers one client (a source address; an IPv6 /64) may hold at once; further
    /// subscribe requests from it get 429.
    #[arg(long, env = "SSE_HUB_MAX_SUBSCRIBERS_PER_CLIENT", default_value_t = DEFAULT_MAX_SUBSCRIBERS_PER_CLIENT)]
    pub max_subscribers_per_client: usize,

    /// Proxies whose `X-Forwarded-For` names the client (comma separated addresses or CIDR
    /// blocks): from them, the rightmost address in the header that is not itself trusted is
    /// the client. Default: none, every client is its peer address.
    #[arg(long, env = "SSE_HUB_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Network>,

    /// Topic of events published without one (the /send, /left, /right triggers among them).
    #[arg(long, env = "SSE_HUB_DEFAULT_TOPIC", default_value = DEFAULT_TOPIC)]
    pub default_topic: String,

    /// Events kept in the history for replay (0 disables replay).
    #[arg(long, env = "SSE_HUB_HISTORY_SIZE", default_value_t = DEFAULT_HISTORY_SIZE)]
    pub history_size: usize,

    /// Bytes the history may hold; the oldest events are trimmed first.
    #[arg(long, env = "SSE_HUB_HISTORY_BYTES", default_value_t = DEFAULT_HISTORY_BYTES)]
    pub history_bytes: usize,

    /// Subscription events (`--subscriptions`) kept for replay, bounded apart from the
    /// application events so that subscribers joining and leaving never push those out.
    #[arg(long, env = "SSE_HUB_SUBSCRIPTION_HISTORY", default_value_t = DEFAULT_SUBSCRIPTION_HISTORY)]
    pub subscription_history: usize,

    /// Topics per publish and selectors per subscribe.
    #[arg(long, env = "SSE_HUB_MAX_TOPICS", default_value_t = DEFAULT_MAX_TOPICS)]
    pub max_topics: usize,

    /// Longest topic or selector, in bytes.
    #[arg(long, env = "SSE_HUB_MAX_TOPIC_BYTES", default_value_t = DEFAULT_MAX_TOPIC_BYTES)]
    pub max_topic_bytes: usize,

    /// Selectors one token may carry: a 0.x token's `mercure.publish` and `mercure.subscribe`
    /// lists together, or a 1.0 token's matchers in all its Mercure details; a token with more
    /// is refused as invalid (401).
    #[arg(long, env = "SSE_HUB_MAX_TOKEN_SELECTORS", default_value_t = DEFAULT_MAX_TOKEN_SELECTORS)]
    pub max_token_selectors: usize,

    /// Threads that compile subscribers' new URI templates and URL patterns; more subscribes
    /// wait for one in turn.
    #[arg(long, env = "SSE_HUB_COMPILE_THREADS", default_value_t = DEFAULT_COMPILE_THREADS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub compile_threads: usize,

    /// Memory one URI template's compiled matcher may keep, in bytes; a template that needs
    /// more is refused with 400 as too complex to match in one pass.
    #[arg(long, env = "SSE_HUB_MAX_TEMPLATE_BYTES", default_value_t = DEFAULT_MAX_TEMPLATE_BYTES)]
    pub max_template_bytes: usize,

    /// Memory all compiled URI templates in use may keep together, in bytes (a template is
    /// shared by its subscribers and released with the last one); past it, a subscribe with a
    /// new template gets 503.
    #[arg(long, env = "SSE_HUB_MAX_SELECTOR_BYTES", default_value_t = DEFAULT_MAX_SELECTOR_BYTES)]
    pub max_selector_bytes: usize,

    /// Memory the distinct URI templates and URL patterns one client's subscribers use may keep
    /// together, in bytes (each counted once per client); past it, that client's subscribe
    /// with a new one gets 429. A compile sets `--max-template-bytes` aside meanwhile.
    #[arg(long, env = "SSE_HUB_MAX_SELECTOR_BYTES_PER_CLIENT", default_value_t = DEFAULT_MAX_SELECTOR_BYTES_PER_CLIENT)]
    pub max_selector_bytes_per_client: usize,

    /// JWT key for both roles: an HMAC secret (HS256/384/512), or a public key in PEM for
    /// RS*, PS256, ES256/384 or EdDSA (`@path` reads a file). Setting a publisher key makes
    /// POST /publish require a publisher token.
    #[arg(long, env = "SSE_HUB_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,

    /// Algorithm of `--jwt-key`: the only one its tokens may use (a PEM key with an HMAC
    /// algorithm is refused).
    #[arg(long, env = "SSE_HUB_JWT_ALG", value_enum, default_value = "HS256")]
    pub jwt_alg: JwtAlgorithm,

    /// Publisher key, overriding `--jwt-key` for publishers.
    #[arg(long, env = "SSE_HUB_PUBLISHER_JWT_KEY", hide_env_values = true)]
    pub publisher_jwt_key: Option<String>,

    /// Algorithm of `--publisher-jwt-key` (default: `--jwt-alg`).
    #[arg(long, env = "SSE_HUB_PUBLISHER_JWT_ALG", value_enum)]
    pub publisher_jwt_alg: Option<JwtAlgorithm>,

    /// Subscriber key, overriding `--jwt-key` for subscribers.
    #[arg(long, env = "SSE_HUB_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,

    /// Algorithm of `--subscriber-jwt-key` (default: `--jwt-alg`).
    #[arg(long, env = "SSE_HUB_SUBSCRIBER_JWT_ALG", value_enum)]
    pub subscriber_jwt_alg: Option<JwtAlgorithm>,

    /// Clock skew allowed on tokens' `nbf` and `exp`: a token is accepted from `nbf - leeway`
    /// until `exp + leeway`, and a subscriber's stream ends at `exp + leeway`.
    #[arg(long, env = "SSE_HUB_JWT_LEEWAY", default_value = DEFAULT_JWT_LEEWAY, value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// Let subscribers without a token receive public events (`false`: a token is required).
    #[arg(long, env = "SSE_HUB_ANONYMOUS", default_value_t = true, action = ArgAction::Set)]
    pub anonymous: bool,

    /// The hub's public URL (Mercure 1.0): relative URL patterns and topics resolve against
    /// it, its path and what lies below are reserved for the hub's own topics, and it is the
    /// default `--jwt-audience`.
    #[arg(long, env = "SSE_HUB_HUB_URL", default_value = DEFAULT_HUB_URL)]
    pub hub_url: String,

    /// The `iss` of Mercure 1.0 access tokens (`typ: at+jwt`) signed with the configured keys;
    /// without it every such token is refused.
    #[arg(long, env = "SSE_HUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// More issuers of Mercure 1.0 access tokens, each with its own keys: a TOML file of
    /// `[[issuer]]` tables (`iss`, and `secret`, `pem` with `alg`, or `jwks` as an https:// URL
    /// or file://PATH; optionally per role, and an `algorithms` allowlist). See README.
    #[arg(long, env = "SSE_HUB_ISSUERS")]
    pub issuers: Option<String>,

    /// How often the issuers' JWK Sets are fetched again in the background.
    #[arg(long, env = "SSE_HUB_JWKS_REFRESH", default_value = DEFAULT_JWKS_REFRESH, value_parser = humantime::parse_duration)]
    pub jwks_refresh: Duration,

    /// At most how often a token naming a key its issuer's set lacks makes the hub fetch the
    /// set again (a flood of unknown `kid`s cannot make it hammer the provider).
    #[arg(long, env = "SSE_HUB_JWKS_MIN_REFRESH", default_value = DEFAULT_JWKS_MIN_REFRESH, value_parser = humantime::parse_duration)]
    pub jwks_min_refresh: Duration,

    /// The hub's resource identifier, which a Mercure 1.0 token's `aud` must contain
    /// (default: `--hub-url`).
    #[arg(long, env = "SSE_HUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Which Mercure clients the Mercure route serves: `modern` (Mercure 1.0 only: access
    /// tokens, `match*` parameters) or `compat` (0.x and 1.0 side by side: also 0.x tokens,
    /// `topic=` with URI templates, `?authorization=`, the 0.x subscription API).
    #[arg(long, env = "SSE_HUB_MERCURE_MODE", value_enum, default_value = DEFAULT_MERCURE_MODE)]
    pub mercure_mode: Mode,

    /// Active subscriptions (Mercure): publish a private `mercure` event when a subscription
    /// starts or ends, and serve the subscription API under the hub's URL.
    #[arg(long, env = "SSE_HUB_SUBSCRIPTIONS", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub subscriptions: bool,

    /// Origins allowed to call the Mercure routes cross-origin (comma separated). Listed
    /// origins get credentials (the cookie); `*` lets any origin in without credentials.
    /// Default: same origin only.
    #[arg(long, env = "SSE_HUB_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Serve the quick-start triggers /send, /left and /right (`false` turns them off).
    #[arg(long, env = "SSE_HUB_TRIGGERS", default_value_t = true, action = ArgAction::Set)]
    pub triggers: bool,

    /// Selectors listed in `/stats`' per-selector breakdown, those with the most subscribers
    /// first; the rest are counted in `selectors_omitted`.
    #[arg(long, env = "SSE_HUB_STATS_SELECTORS", default_value_t = DEFAULT_STATS_SELECTORS)]
    pub stats_selectors: usize,

    /// Where the history lives: `memory` (lost on restart), `file:PATH` (an embedded store
    /// on disk; a publish is answered once its event is fsync'd, and a restart keeps history
    /// and ids), or `redis://HOST:PORT[/DB]` (also `rediss://`, `redis+unix:///PATH`, and
    /// `redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]` for the primary Redis
    /// Sentinel names, followed through failovers): one Redis stream shared by every node, so
    /// each delivers every event and replays any id.
    #[arg(long, env = "SSE_HUB_STORE", default_value = DEFAULT_STORE)]
    pub store: Store,

    /// With a `redis://` store: the prefix of its keys (`PREFIX:log`, `PREFIX:meta`,
    /// `PREFIX:ids`). Nodes with the same Redis and prefix share one log.
    #[arg(long, env = "SSE_HUB_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// With a `rediss://` store: a PEM file of the CA certificates that Redis's certificate is
    /// checked against, instead of the system's trust store (a Redis with its own CA).
    #[arg(long, env = "SSE_HUB_REDIS_CA_FILE", value_name = "PATH")]
    pub redis_ca_file: Option<PathBuf>,

    /// With a Redis store: answer a publish `200` only once this many replicas have its entry
    /// (Redis `WAIT`), so that a failover loses nothing acknowledged; `503` when fewer do within
    /// `--redis-replica-timeout` (the event may still be delivered). 0: as soon as the primary
    /// has it.
    #[arg(long, env = "SSE_HUB_REDIS_REPLICAS", default_value_t = 0)]
    pub redis_replicas: usize,

    /// How long a publish waits for `--redis-replicas` replicas.
    #[arg(long, env = "SSE_HUB_REDIS_REPLICA_TIMEOUT", default_value = DEFAULT_REDIS_REPLICA_TIMEOUT, value_parser = humantime::parse_duration)]
    pub redis_replica_timeout: Duration,

    /// With a Redis store and `--subscriptions`: how long a node's subscriptions stay listed
    /// by the other nodes without its heartbeat (every third of this). A node that died drops
    /// out of every list within this, and a surviving node announces the end of each of its
    /// subscriptions within a third more.
    #[arg(long, env = "SSE_HUB_PRESENCE_TTL", default_value = DEFAULT_PRESENCE_TTL, value_parser = presence_ttl)]
    pub presence_ttl: Duration,

    /// With a Redis store: how long a subscriber resuming from an id this node has not
    /// applied yet (another node published it a moment ago) waits for the node to apply it;
    /// past this it is told `reset`.
    #[arg(long, env = "SSE_HUB_RESUME_WAIT", default_value = DEFAULT_RESUME_WAIT, value_parser = humantime::parse_duration)]
    pub resume_wait: Duration,

    /// Serve TLS (HTTP/2 and HTTP/1.1, as the client's ALPN picks) with this PEM certificate
    /// chain, leaf first; needs `--tls-key`. Without it the hub speaks plain HTTP/1.1.
    #[arg(
        long,
        env = "SSE_HUB_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SSE_HUB_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// How often `--tls-cert` and `--tls-key` are checked for a change, which is loaded without
    /// a restart (0 = only on SIGHUP, which always reloads them).
    #[arg(long, env = "SSE_HUB_TLS_RELOAD_INTERVAL", default_value = DEFAULT_TLS_RELOAD_INTERVAL, value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    /// Serve TLS with a certificate obtained and renewed automatically from an ACME CA for
    /// this domain (repeatable; comma separated in the environment). The CA validates by
    /// tls-alpn-01 on the hub's own TLS port, so the domain must reach this listener on port
    /// 443. Needs `--acme-cache`; excludes `--tls-cert`.
    #[arg(
        long,
        env = "SSE_HUB_TLS_ACME",
        value_name = "DOMAIN",
        value_delimiter = ',',
        value_parser = AcmeDomain::parse,
        conflicts_with_all = ["tls_cert", "tls_key"],
        requires = "acme_cache"
    )]
    pub tls_acme: Vec<AcmeDomain>,

    /// With `--tls-acme`: the directory keeping the ACME account key and the certificates
    /// (created 0700), so a restart serves the cached certificate instead of ordering again.
    #[arg(long, env = "SSE_HUB_ACME_CACHE", value_name = "DIR")]
    pub acme_cache: Option<PathBuf>,

    /// With `--tls-acme`: the ACME CA's directory URL (https).
    #[arg(long, env = "SSE_HUB_ACME_DIRECTORY", value_name = "URL", default_value = DEFAULT_ACME_DIRECTORY, value_parser = acme::parse_directory)]
    pub acme_directory: String,

    /// With `--tls-acme`: the ACME account's contact, `mailto:ADDRESS`, where the CA writes
    /// about problems with the certificates (repeatable; comma separated in the environment).
    #[arg(long, env = "SSE_HUB_ACME_CONTACT", value_name = "MAILTO", value_delimiter = ',', value_parser = AcmeContact::parse)]
    pub acme_contact: Vec<AcmeContact>,

    /// With `--tls-acme`: a PEM file of CA certificates trusted for the ACME directory's
    /// HTTPS, besides the built-in web roots (a private or test CA, such as pebble's).
    #[arg(long, env = "SSE_HUB_ACME_CA_FILE", value_name = "PATH")]
    pub acme_ca_file: Option<PathBuf>,

    /// HTTP/2: bytes a client may send on one stream before the hub acknowledges them (the
    /// receive window; what subscribers receive is paced by their own windows).
    #[arg(long, env = "SSE_HUB_HTTP2_STREAM_WINDOW", default_value_t = DEFAULT_HTTP2_STREAM_WINDOW)]
    pub http2_stream_window: u32,

    /// HTTP/2: bytes a client may send on all streams of one connection before the hub
    /// acknowledges them.
    #[arg(long, env = "SSE_HUB_HTTP2_CONNECTION_WINDOW", default_value_t = DEFAULT_HTTP2_CONNECTION_WINDOW)]
    pub http2_connection_window: u32,

    /// Idle HTTP/1.1 connections are closed after this long; HTTP/2 connections are pinged
    /// this often and closed when a ping goes unanswered as long (0 = neither).
    #[arg(long, env = "SSE_HUB_KEEP_ALIVE", default_value = DEFAULT_KEEP_ALIVE, value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
}

/// The event log's backend, as `--store` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The history in the broadcaster's memory only.
    Memory,
    /// An embedded store in this file (created when missing).
    File(PathBuf),
    /// A Redis server (its URL, as the `redis` crate reads it), shared with other nodes.
    Redis(String),
}

impl FromStr for Store {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value == "memory" {
            return Ok(Self::Memory);
        }
        if [
            "redis://",
            "rediss://",
            "redis+unix://",
            "unix://",
            "redis+sentinel://",
        ]
        .iter()
        .any(|scheme| value.starts_with(scheme))
        {
            return Ok(Self::Redis(value.to_owned()));
        }
        match value.strip_prefix("file:") {
            Some("") => {
                Err("`file:` needs a path, e.g. `file:/var/lib/sse-hub/history.redb`".to_owned())
            }
            Some(path) => Ok(Self::File(PathBuf::from(path))),
            None => Err(format!(
                "`{value}` is not a store: expected `memory`, `file:PATH` or `redis://HOST:PORT`"
            )),
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            // Without the credentials: the store is logged at start-up.
            Self::Redis(url) => match (url.split_once("://"), url.rsplit_once('@')) {
                (Some((scheme, _)), Some((_, host))) => write!(f, "{scheme}://…@{host}"),
                _ => f.write_str(url),
            },
        }
    }
}

impl Settings {
    /// Whether the listener speaks TLS: certificate files, or certificates obtained by ACME.
    pub fn serves_tls(&self) -> bool {
        self.tls_cert.is_some() || !self.tls_acme.is_empty()
    }

    /// The verification keys for both roles, from the key settings, and the `--issuers`
    /// file's issuers (their JWK Sets' reads counted in `metrics`).
    pub fn keys(&self, hub: &HubUrl, metrics: &Arc<Metrics>) -> Result<Keys, String> {
        let issuers = match &self.issuers {
            Some(path) => keys::load(
                path,
                keys::Refresh {
                    every: self.jwks_refresh,
                    at_most_every: self.jwks_min_refresh,
                },
                metrics,
            )?
            .into_iter()
            .map(Arc::new)
            .collect(),
            None => Vec::new(),
        };
        let key = |role: Role| {
            self.key_material(role)
                .map(|(material, alg)| {
                    JwtKey::new(material, alg).map_err(|err| format!("{} key: {err}", role.name()))
                })
                .transpose()
        };
        Ok(Keys {
            publisher: key(Role::Publisher)?,
            subscriber: key(Role::Subscriber)?,
            leeway: self.jwt_leeway,
            issuer: self.jwt_issuer.clone(),
            audience: self.audience(hub),
            max_matchers: self.max_topics,
            max_matcher_bytes: self.max_topic_bytes,
            max_selectors: self.max_token_selectors,
            mode: self.mercure_mode,
            issuers,
        })
    }

    /// The resource identifier an access token's `aud` names: `--jwt-audience`, else the hub
    /// URL as the hub writes it (and advertises it), not as it was typed.
    pub fn audience(&self, hub: &HubUrl) -> String {
        self.jwt_audience
            .clone()
            .unwrap_or_else(|| hub.as_str().to_owned())
    }

    /// The key material and algorithm for `role`: its own key if set, else `--jwt-key`.
    pub fn key_material(&self, role: Role) -> Option<(&str, JwtAlgorithm)> {
        let (key, alg) = match role {
            Role::Publisher => (&self.publisher_jwt_key, self.publisher_jwt_alg),
            Role::Subscriber => (&self.subscriber_jwt_key, self.subscriber_jwt_alg),
        };
        match key {
            Some(key) => Some((key, alg.unwrap_or(self.jwt_alg))),
            None => self.jwt_key.as_deref().map(|key| (key, self.jwt_alg)),
        }
    }
}

fn presence_ttl(value: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(value).map_err(|err| err.to_string())?;
    if ttl < MIN_PRESENCE_TTL {
        return Err(format!("must be at least {MIN_PRESENCE_TTL:?}"));
    }
    Ok(ttl)
}

fn positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

impl Default for Settings {
    /// The documented defaults. Only the command line parser reads `SSE_HUB_*` variables, so
    /// settings built from this (the tests' among them) do not depend on the environment.
    fn default() -> Self {
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["sse-hub"])
            .expect("the defaults parse: each is a valid value of its flag");
        Cli::from_arg_matches(&matches)
            .expect("matches of Cli's own command convert back to it")
            .settings
    }
}

/// An address or a CIDR block (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`), as `--trusted-proxies`
/// lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` lies in this block (IPv4-mapped IPv6 addresses as their IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = addr
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("`{text}` is not an IP address or a CIDR block"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> std::net::IpAddr {
        text.parse().expect("an address")
    }

    /// `--trusted-proxies` entries parse as addresses or CIDR blocks, and bad ones say why.
    #[test]
    fn networks_parse_and_contain() {
        let net: Network = "10.1.0.0/16".parse().expect("valid");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        let one: Network = "127.0.0.1".parse().expect("valid");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Network = "fd00::/8".parse().expect("valid");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Network = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("example.com".parse::<Network>().is_err());
    }

    /// With no flags and no environment, every default is the documented one.
    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = Cli::try_parse_from(["sse-hub"])
            .expect("defaults parse")
            .settings;
        assert_eq!(settings.bind, DEFAULT_BIND.parse().expect("valid"));
        assert_eq!(settings.heartbeat, Duration::from_secs(15));
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(1));
        assert_eq!(settings.resume_wait, Duration::from_secs(3));
        assert_eq!(settings.subscriber_buffer, DEFAULT_SUBSCRIBER_BUFFER);
        assert_eq!(settings.cors_origin, "*");
        assert_eq!(settings.jwt_leeway, Duration::from_secs(5));
        assert_eq!(settings.stats_selectors, DEFAULT_STATS_SELECTORS);
        assert_eq!(settings.subscription_history, DEFAULT_SUBSCRIPTION_HISTORY);
        assert_eq!(
            settings.max_selector_bytes_per_client,
            DEFAULT_MAX_SELECTOR_BYTES_PER_CLIENT
        );
        assert_eq!(
            settings.max_subscribers_per_client,
            DEFAULT_MAX_SUBSCRIBERS_PER_CLIENT
        );
        assert!(settings.trusted_proxies.is_empty());
    }

    /// The per-client defaults stay below the global ones, and one request of the largest
    /// size fits in a client's selector budget.
    #[test]
    fn per_client_defaults_leave_room_for_others() {
        const {
            assert!(DEFAULT_MAX_SELECTOR_BYTES_PER_CLIENT < DEFAULT_MAX_SELECTOR_BYTES / 2);
            assert!(DEFAULT_MAX_SUBSCRIBERS_PER_CLIENT < DEFAULT_MAX_SUBSCRIBERS / 2);
            assert!(
                DEFAULT_MAX_SELECTOR_BYTES_PER_CLIENT
                    >= DEFAULT_MAX_TOPICS * DEFAULT_MAX_TEMPLATE_BYTES
            );
        }
    }

    /// `--trusted-proxies` takes a comma separated list of addresses and CIDR blocks.
    #[test]
    fn trusted_proxies_parse() {
        let settings =
            Cli::try_parse_from(["sse-hub", "--trusted-proxies", "10.0.0.0/8,::1,127.0.0.1"])
                .expect("parses")
                .settings;
        assert_eq!(settings.trusted_proxies.len(), 3);
        assert!(Cli::try_parse_from(["sse-hub", "--trusted-proxies", "nginx"]).is_err());
    }

    /// Durations take human units, so tests can run a 50 ms heartbeat.
    #[test]
    fn durations_take_units() {
        let settings =
            Cli::try_parse_from(["sse-hub", "--heartbeat", "50ms", "--bind", "0.0.0.0:0"])
                .expect("parses")
                .settings;
        assert_eq!(settings.heartbeat, Duration::from_millis(50));
        assert_eq!(settings.bind.port(), 0);
    }

    /// A zero subscriber buffer could never hold an event, so it is refused.
    #[test]
    fn zero_buffer_is_refused() {
        assert!(Cli::try_parse_from(["sse-hub", "--subscriber-buffer", "0"]).is_err());
    }

    /// A presence time to live under a second would have nodes take each other for dead.
    #[test]
    fn a_presence_ttl_under_a_second_is_refused() {
        let parsed = |ttl: &str| Cli::try_parse_from(["sse-hub", "--presence-ttl", ttl]);
        let refused = parsed("999ms").expect_err("999ms is refused");
        assert!(
            refused.to_string().contains("must be at least 1s"),
            "{refused}"
        );
        let settings = parsed("1s").expect("1s is taken").settings;
        assert_eq!(settings.presence_ttl, Duration::from_secs(1));
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;

    /// `--store` takes `memory` or `file:PATH`, and says what it expected otherwise.
    #[test]
    fn store_values_parse() {
        assert_eq!("memory".parse::<Store>(), Ok(Store::Memory));
        assert_eq!(
            "file:/tmp/h.redb".parse::<Store>(),
            Ok(Store::File("/tmp/h.redb".into()))
        );
        assert!("file:".parse::<Store>().is_err());
        assert_eq!(
            "redis://127.0.0.1:6379/2".parse::<Store>(),
            Ok(Store::Redis("redis://127.0.0.1:6379/2".into()))
        );
        assert!("rediss://h:6380".parse::<Store>().is_ok());
        assert_eq!(
            "redis+sentinel://:pw@s1,s2:26380/mymaster"
                .parse::<Store>()
                .map(|store| store.to_string()),
            Ok("redis+sentinel://…@s1,s2:26380/mymaster".to_owned())
        );
        let err = "postgres://x".parse::<Store>().expect_err("not a store");
        assert!(
            err.contains("memory") && err.contains("file:PATH") && err.contains("redis://"),
            "{err}"
        );
        // A password in the URL never reaches the logs.
        assert_eq!(
            "redis://:secret@h:6379"
                .parse::<Store>()
                .map(|s| s.to_string()),
            Ok("redis://…@h:6379".to_owned())
        );
        assert_eq!(Settings::default().store, Store::Memory);
    }

    /// `Settings::default()` ignores `SSE_HUB_*` variables: this test runs itself again as a
    /// child process with `SSE_HUB_HISTORY_SIZE=7` set, where the default must still be the
    /// documented one (the child checks, the parent asserts it passed).
    #[test]
    fn default_settings_ignore_the_environment() {
        if std::env::var_os("SSE_HUB_TEST_CHILD").is_some() {
            assert_eq!(Settings::default().history_size, DEFAULT_HISTORY_SIZE);
            assert_eq!(Settings::default().store, Store::Memory);
            // The parser, on the other hand, does read it.
            assert_eq!(Cli::parse_from(["sse-hub"]).settings.history_size, 7);
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "config::store_tests::default_settings_ignore_the_environment",
                "--nocapture",
            ])
            .env("SSE_HUB_TEST_CHILD", "1")
            .env("SSE_HUB_HISTORY_SIZE", "7")
            .env("SSE_HUB_STORE", "file:/nonexistent/x")
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child run failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    /// `healthcheck` is a command, and server flags still apply to it.
    #[test]
    fn healthcheck_command_parses_with_flags() {
        let cli = Cli::try_parse_from(["sse-hub", "--bind", "0.0.0.0:9000", "healthcheck"])
            .expect("parses");
        assert!(matches!(cli.command, Some(Command::Healthcheck)));
        assert_eq!(cli.settings.bind.port(), 9000);
    }
}

#[cfg(test)]
mod acme_tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        Cli::try_parse_from(std::iter::once("sse-hub").chain(args.iter().copied()))
            .map(|cli| cli.settings)
    }

    /// `--tls-acme` takes several domains (repeated or comma separated), needs `--acme-cache`,
    /// and defaults to Let's Encrypt's production directory.
    #[test]
    fn tls_acme_takes_domains_and_needs_a_cache() {
        let settings = parse(&[
            "--tls-acme",
            "a.example.com,B.example.com",
            "--tls-acme",
            "c.example.com",
            "--acme-cache",
            "/var/lib/sse-hub/acme",
        ])
        .expect("parses");
        let domains: Vec<&str> = settings.tls_acme.iter().map(AcmeDomain::as_str).collect();
        assert_eq!(domains, ["a.example.com", "b.example.com", "c.example.com"]);
        assert_eq!(settings.acme_directory, DEFAULT_ACME_DIRECTORY);
        assert!(settings.acme_contact.is_empty() && settings.acme_ca_file.is_none());

        let err = parse(&["--tls-acme", "a.example.com"]).expect_err("no cache");
        assert!(err.to_string().contains("--acme-cache"), "{err}");
        assert!(Settings::default().tls_acme.is_empty());
    }

    /// ACME and certificate files are two ways to get one certificate: both at once is refused,
    /// as are a wildcard, a contact that is not `mailto:` and a plain-HTTP directory.
    #[test]
    fn acme_settings_refuse_what_cannot_work() {
        let acme = ["--tls-acme", "a.example.com", "--acme-cache", "/tmp/acme"];
        let with = |extra: &[&str]| parse(&[&acme[..], extra].concat());
        assert!(with(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_err());
        assert!(with(&["--acme-contact", "ops@example.com"]).is_err());
        assert!(with(&["--acme-contact", "mailto:ops@example.com"]).is_ok());
        assert!(with(&["--acme-directory", "http://127.0.0.1:14000/dir"]).is_err());
        assert!(parse(&["--tls-acme", "*.example.com", "--acme-cache", "/tmp/acme"]).is_err());
    }
}
