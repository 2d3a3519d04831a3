//! Building and running the hub: the broadcaster first, then the HTTP server sharing it. Main
//! and the integration tests run this same code.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use actix::{Actor, Addr};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::{
    App, HttpServer,
    dev::{Server, ServerHandle},
    middleware::Logger,
    web,
};

use crate::{
    auth,
    broadcaster::{Broadcaster, BroadcasterConfig, Shutdown},
    client::{ClientLimits, Clients},
    config::Settings,
    event::Limits,
    event_log::{self, StoreError},
    metrics::Metrics,
    routes::{self, AppState},
    tls::{
        self, CertificateFiles, TlsError,
        acme::{Acme, AcmeError, AcmeOptions},
    },
    topic::{SelectorCache, SelectorLimits},
    url_pattern::HubUrl,
};

/// Why the hub did not start. Each is one line naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Keys(String),
    #[error("--hub-url: {0}")]
    HubUrl(String),
    #[error(
        "--cors-allowed-origins: `*` cannot be combined with listed origins (`*` lets every \
         origin in without credentials; listed origins get the cookie)"
    )]
    CorsWildcard,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Acme(#[from] AcmeError),
}

/// Connections a listener queues before the hub accepts them: a reconnect storm arrives at once.
const BACKLOG: i32 = 4096;

/// A listening socket on `addr`, as actix's own `bind` makes it (address reuse, a deep backlog).
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A bound, not yet running hub.
#[allow(missing_debug_implementations)] // actix's `Server` has no Debug
pub struct Application {
    addr: SocketAddr,
    scheme: &'static str,
    server: Server,
    broadcaster: Addr<Broadcaster>,
}

impl Application {
    /// Opens the event log, starts the broadcaster on it and binds the server. Must run inside
    /// an actix system.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let hub = HubUrl::parse(&settings.hub_url).map_err(StartupError::HubUrl)?;
        let metrics = Metrics::new();
        let keys = settings.keys(&hub, &metrics).map_err(StartupError::Keys)?;
        if keys.mode == auth::Mode::Modern
            && keys.issuer_names().is_empty()
            && (keys.publisher.is_some() || keys.subscriber.is_some())
        {
            log::warn!(
                "keys are configured but no issuer (--jwt-issuer, --issuers): in modern mode \
                 (--mercure-mode) the Mercure route accepts no token; 0.x clients need \
                 --mercure-mode compat"
            );
        }
        if settings.cors_allowed_origins.len() > 1
            && settings.cors_allowed_origins.iter().any(|o| o == "*")
        {
            return Err(StartupError::CorsWildcard);
        }
        // Bound before anything starts: an address in use is a one-line error, with no store
        // opened and no broadcaster to stop.
        let bind_error = |source| StartupError::Bind {
            addr: settings.bind,
            source,
        };
        let listener = listen(settings.bind).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        // Certificates next: a bad file is a start-up error before any store is opened.
        let certificates = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(CertificateFiles::load(cert, key)?)),
            _ => None,
        };
        // ACME's cache and CA file likewise; the CA is asked nothing until the server starts.
        let acme = acme_options(&settings)?
            .map(|options| Acme::new(options, metrics.clone()))
            .transpose()?;
        let limits = Limits {
            max_topics: settings.max_topics,
            max_topic_bytes: settings.max_topic_bytes,
            // A publish's body is its data.
            max_data_bytes: settings.body_limit_bytes,
        };
        let config = BroadcasterConfig::from(&settings);
        let log = event_log::open(
            &settings.store,
            config.retention,
            &event_log::redis::RedisOptions {
                prefix: settings.redis_prefix.clone(),
                ca_file: settings.redis_ca_file.clone(),
                replicas: settings.redis_replicas,
                replica_timeout: settings.redis_replica_timeout,
                presence: settings.subscriptions,
                presence_ttl: settings.presence_ttl,
            },
            limits,
            metrics.clone(),
        )?;
        let ready = log.readiness();
        // One broadcaster for every worker: started here, outside the server factory.
        let broadcaster = Broadcaster::new(config, metrics.clone(), log).start();
        // The issuers' JWK Sets: read now, then every --jwks-refresh, on this system's arbiter.
        crate::keys::start_refresh(&keys.issuers, settings.jwks_refresh);
        let tls_metrics = metrics.clone();
        let state = AppState {
            ready,
            broadcaster: broadcaster.clone(),
            settings: Arc::new(settings.clone()),
            keys: Arc::new(keys),
            limits,
            clients: Clients::new(
                ClientLimits {
                    subscribers: settings.max_subscribers_per_client,
                    selector_bytes: settings.max_selector_bytes_per_client,
                },
                settings.trusted_proxies.clone(),
                metrics.clone(),
            ),
            metrics,
            selectors: Arc::new(SelectorCache::with_hub(
                SelectorLimits {
                    template_bytes: settings.max_template_bytes,
                    total_bytes: settings.max_selector_bytes,
                    compile_threads: settings.compile_threads,
                },
                hub,
            )),
        };
        let routes = routes::configure(&settings);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                // Streams are left out of the access log: they would hold the log line's state
                // (about 400 bytes) for their whole life; the broadcaster logs joins and leaves.
                .wrap(
                    Logger::new("%a \"%r\" %s %b %T")
                        .log_target("sse_hub::access")
                        .exclude("/stream")
                        .exclude(routes::MERCURE_PATH),
                )
                // Unknown paths get their JSON 404 from the route table's catch-all scope.
                .configure(routes.clone())
        })
        // A subscriber that closes its end is noticed at once, not at the next write.
        .h1_allow_half_closed(false)
        .keep_alive(keep_alive(settings.keep_alive))
        .h2_initial_window_size(settings.http2_stream_window)
        .h2_initial_connection_window_size(settings.http2_connection_window)
        .on_connect(write_timeout(settings.write_timeout))
        // Signals are ours: streams must be ended before the server can stop gracefully.
        .disable_signals()
        .shutdown_timeout(whole_secs_rounded_up(settings.shutdown_timeout))
        .max_connections(settings.max_subscribers.saturating_add(1024));
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let (server, scheme) = match certificates {
            Some(certificates) => {
                let config = tls::server_config(certificates.clone())?;
                watch_certificates(certificates, settings.tls_reload_interval, tls_metrics);
                let server = server
                    .listen_rustls_0_23(listener, config)
                    .map_err(bind_error)?;
                (server, "https")
            }
            None => match acme {
                Some(acme) => {
                    let config = acme.server_config()?;
                    acme.start()?;
                    let server = server
                        .listen_rustls_0_23(listener, config)
                        .map_err(bind_error)?;
                    (server, "https")
                }
                None => (server.listen(listener).map_err(bind_error)?, "http"),
            },
        };
        log::info!("listening addr={scheme}://{addr}");
        Ok(Self {
            addr,
            scheme,
            server: server.run(),
            broadcaster,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https` when the listener speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    pub fn broadcaster(&self) -> Addr<Broadcaster> {
        self.broadcaster.clone()
    }

    /// A handle that stops the hub the way a signal does.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            broadcaster: self.broadcaster.clone(),
        }
    }

    /// Serves until SIGINT or SIGTERM (or a [`Stopper`]), then shuts down gracefully.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let stopper = self.stopper();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            stopper.stop().await;
        });
        self.run().await
    }

    /// Serves until a [`Stopper`] stops it; signals are left alone (tests use this).
    pub async fn run(self) -> io::Result<()> {
        self.server.await
    }
}

/// Stops a running hub: ends every stream, then stops the server, waiting at most the
/// shutdown timeout for responses still being written.
#[derive(Debug, Clone)]
pub struct Stopper {
    server: ServerHandle,
    broadcaster: Addr<Broadcaster>,
}

impl Stopper {
    pub async fn stop(&self) {
        // Without this, actix would wait the whole timeout for streams that never end.
        if let Err(err) = self.broadcaster.send(Shutdown).await {
            log::error!("broadcaster did not take the shutdown error={err}");
        }
        self.server.stop(true).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => log::info!("SIGINT received, shutting down"),
                    _ = term.recv() => log::info!("SIGTERM received, shutting down"),
                }
            }
            Err(err) => {
                log::error!("cannot listen for SIGTERM error={err}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        log::info!("interrupt received, shutting down");
    }
}

/// Sets TCP_USER_TIMEOUT on each accepted connection. A subscriber that stopped reading keeps
/// its connection open forever otherwise (it acknowledges the kernel's zero-window probes), even
/// after the broadcaster dropped it; and one that vanished without a FIN would hold it until the
/// kernel gives up retransmitting, about 15 minutes later.
fn write_timeout(
    timeout: Duration,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + 'static {
    move |connection, _| {
        if timeout.is_zero() {
            return;
        }
        let tcp = match connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            Some(tcp) => tcp,
            None => match connection.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
                Some(tls) => tls.get_ref().0,
                None => return,
            },
        };
        if let Err(err) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout)) {
            log::warn!("cannot set TCP_USER_TIMEOUT error={err}");
        }
    }
}

/// What `--tls-acme` and the `--acme-*` settings ask for, if anything.
fn acme_options(settings: &Settings) -> Result<Option<AcmeOptions>, AcmeError> {
    if settings.tls_acme.is_empty() {
        return Ok(None);
    }
    let cache = settings.acme_cache.clone().ok_or(AcmeError::NoCache)?;
    Ok(Some(AcmeOptions {
        domains: settings.tls_acme.clone(),
        cache,
        directory: settings.acme_directory.clone(),
        contact: settings.acme_contact.clone(),
        ca_file: settings.acme_ca_file.clone(),
    }))
}

/// The keep-alive setting as actix takes it: 0 turns it off.
fn keep_alive(duration: Duration) -> actix_web::http::KeepAlive {
    if duration.is_zero() {
        actix_web::http::KeepAlive::Disabled
    } else {
        actix_web::http::KeepAlive::Timeout(duration)
    }
}

/// Reloads the certificate files on SIGHUP, and when they change (checked every `interval`;
/// 0 = on SIGHUP only). A bad new file is logged and counted; the certificate served so far
/// stays, and open connections are never touched.
fn watch_certificates(
    certificates: Arc<CertificateFiles>,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    use crate::tls::files::Reload;
    actix_web::rt::spawn(async move {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(hangup) => Some(hangup),
            Err(err) => {
                log::error!(
                    "cannot listen for SIGHUP, certificates reload on change only error={err}"
                );
                None
            }
        };
        let mut tick = (!interval.is_zero()).then(|| {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            let forced = tokio::select! {
                _ = async {
                    match hangup.as_mut() {
                        Some(hangup) => { hangup.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => true,
                _ = async {
                    match tick.as_mut() {
                        Some(tick) => { tick.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => false,
            };
            let outcome = if forced {
                log::info!("SIGHUP received, reloading the certificate");
                certificates.reload().map(|()| Reload::Loaded)
            } else {
                certificates.reload_if_changed()
            };
            match outcome {
                Ok(Reload::Loaded) => {
                    metrics.tls_reloads.inc();
                    let (cert, key) = certificates.paths();
                    log::info!(
                        "certificate reloaded cert={} key={}",
                        cert.display(),
                        key.display()
                    );
                }
                Ok(Reload::Unchanged) => {}
                Err(err) => {
                    metrics.tls_reload_failures.inc();
                    log::error!("certificate not reloaded, the previous one is kept: {err}");
                }
            }
        }
    });
}

fn whole_secs_rounded_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}
