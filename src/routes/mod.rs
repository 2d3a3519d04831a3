//! The route table: every HTTP surface of the hub, and the request parsing they share.

mod csrf;
mod demo;
mod mercure;
mod ops;
mod publish;
mod stream;

use std::sync::Arc;

use actix::{Addr, Handler, MailboxError, Message};
use actix_cors::Cors;
use actix_web::{
    HttpRequest, HttpResponse,
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::DefaultHeaders,
    web,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;

use crate::{
    auth::Keys,
    broadcaster::{Broadcaster, Publish, Subscribe, Subscribed, Subscription},
    client::Clients,
    config::Settings,
    error::HubError,
    event::{Limits, Publication},
    event_log::Readiness,
    metrics::Metrics,
    reply,
    topic::SelectorCache,
    url_pattern::HubUrl,
};

pub use mercure::PATH as MERCURE_PATH;

/// What every handler shares: the one broadcaster, the settings, the JWT keys and the metrics.
#[derive(Debug, Clone)]
pub struct AppState {
    pub broadcaster: Addr<Broadcaster>,
    pub settings: Arc<Settings>,
    pub keys: Arc<Keys>,
    pub metrics: Arc<Metrics>,
    /// Compiled selectors shared across subscribers (and claims).
    pub selectors: Arc<SelectorCache>,
    /// What each client (source address) holds, against the per-client limits.
    pub clients: Clients,
    /// Whether the event log takes publishes (`/readyz`).
    pub ready: Readiness,
    /// The limits of the one publication rule set, from the settings.
    pub limits: Limits,
}

impl AppState {
    /// Sends `msg` to the broadcaster and awaits its reply, woken on this worker's own thread
    /// so it goes ahead of the subscriber writes queued here (see [`crate::reply`]).
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Broadcaster: Handler<M>,
    {
        reply::on_worker(std::pin::pin!(self.broadcaster.send(msg))).await
    }

    /// Publishes `publication` and returns its id once the event is in the log (committed,
    /// for a durable one) and applied: a publisher that resumes from this id finds it.
    pub async fn publish(&self, publication: Publication) -> Result<Arc<str>, HubError> {
        let answer = self.ask(Publish(publication.into_draft())).await?;
        // The sender only drops unanswered if the broadcaster itself is gone.
        reply::on_worker(answer).await?
    }

    /// Refuses a cookie-authenticated request from a foreign origin (see [`csrf::check`]).
    fn check_origin(&self, req: &HttpRequest, action: csrf::Action) -> Result<(), HubError> {
        csrf::check(
            req,
            action,
            &self.settings.cors_allowed_origins,
            self.selectors.hub(),
        )
    }

    /// Registers a subscriber: replays what it missed and hands over its channel.
    pub async fn subscribe(&self, msg: Subscribe) -> Result<Subscription, HubError> {
        match self.ask(msg).await?? {
            Subscribed::Now(subscription) => Ok(subscription),
            Subscribed::Later(answer) => reply::on_worker(answer).await?,
        }
    }
}

/// The one route table, used by `startup::build` and so by main and the tests alike.
///
/// The Mercure route has its own CORS policy (listed origins, with credentials); every other
/// route is the quick-start API, open to any origin (`--cors-origin`) and advertising the
/// Mercure hub with a `Link: </.well-known/mercure>; rel="mercure"` header.
pub fn configure(settings: &Settings) -> impl Fn(&mut web::ServiceConfig) + Clone + use<> {
    let cors_origin = settings.cors_origin.clone();
    let allowed_origins = settings.cors_allowed_origins.clone();
    // Validated at start-up; a URL that does not parse here only loses the challenges' pointer.
    let hub = HubUrl::parse(&settings.hub_url).ok();
    let metadata_url: Option<Arc<str>> = hub.as_ref().map(|hub| mercure::metadata_url(hub).into());
    let metadata_paths: Vec<String> = std::iter::once(mercure::PATH)
        .chain(hub.as_ref().map(HubUrl::path))
        .map(|path| format!("{}{path}", mercure::METADATA_PREFIX))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    move |cfg: &mut web::ServiceConfig| {
        let challenges = ChallengeMetadata(metadata_url.clone());
        cfg.service(
            web::resource(mercure::PATH)
                .wrap(mercure_cors(&allowed_origins))
                .wrap(security_headers())
                .wrap_fn(challenges.clone().wrap())
                .get(mercure::subscribe)
                .post(mercure::publish)
                .default_service(web::to(method_not_allowed)),
        );
        cfg.service(
            web::resource([
                format!("{}/subscriptions", mercure::PATH),
                format!("{}/subscriptions/{{rest:.*}}", mercure::PATH),
            ])
            .wrap(mercure_cors(&allowed_origins))
            .wrap(security_headers())
            .wrap_fn(challenges.wrap())
            .get(mercure::subscriptions)
            .default_service(web::to(method_not_allowed)),
        );
        cfg.service(
            web::resource(metadata_paths.clone())
                // Clients read it cross-origin to discover the hub's identity (RFC 9728).
                .wrap(DefaultHeaders::new().add((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")))
                .wrap(security_headers())
                .get(mercure::metadata)
                .default_service(web::to(method_not_allowed)),
        );
        cfg.service(
            web::scope("")
                .wrap(
                    DefaultHeaders::new()
                        .add((header::ACCESS_CONTROL_ALLOW_ORIGIN, cors_origin.clone()))
                        .add((header::LINK, MERCURE_LINK)),
                )
                .configure(quick_start)
                .default_service(web::to(not_found)),
        );
    }
}

/// Headers the Mercure routes send whatever they answer (as the reference hub does): no
/// content sniffing, no framing, nothing loaded on the strength of a hub response.
/// (`X-XSS-Protection` is not sent: browsers removed the filter it switched on.)
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
}

/// Adds `resource_metadata="<url>"` (RFC 9728 section 5.1) to the `WWW-Authenticate: Bearer`
/// challenges of the Mercure routes, when the hub serves that document (it verifies tokens).
#[derive(Clone)]
struct ChallengeMetadata(Option<Arc<str>>);

impl ChallengeMetadata {
    #[allow(clippy::type_complexity)]
    fn wrap<S, B>(
        self,
    ) -> impl Fn(
        ServiceRequest,
        &S,
    ) -> futures_util::future::LocalBoxFuture<
        'static,
        Result<ServiceResponse<B>, actix_web::Error>,
    > + Clone
    + 'static
    where
        S: actix_web::dev::Service<
                ServiceRequest,
                Response = ServiceResponse<B>,
                Error = actix_web::Error,
            >,
        S::Future: 'static,
        B: 'static,
    {
        move |req: ServiceRequest, service: &S| {
            let url = self.0.clone().filter(|_| {
                req.app_data::<web::Data<AppState>>()
                    .is_some_and(|state| state.keys.verifies_any())
            });
            let answer = service.call(req);
            Box::pin(async move {
                let mut response = answer.await?;
                if let Some(url) = url {
                    add_resource_metadata(response.headers_mut(), &url);
                }
                Ok(response)
            })
        }
    }
}

/// `Bearer` becomes `Bearer resource_metadata="url"`, `Bearer error="x"` becomes
/// `Bearer error="x", resource_metadata="url"`; other headers are left alone.
fn add_resource_metadata(headers: &mut header::HeaderMap, url: &str) {
    let Some(challenge) = headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
    else {
        return;
    };
    let Some(params) = challenge.strip_prefix("Bearer") else {
        return;
    };
    let pointer = format!("resource_metadata=\"{url}\"");
    let value = if params.trim().is_empty() {
        format!("Bearer {pointer}")
    } else {
        format!("Bearer {}, {pointer}", params.trim())
    };
    if let Ok(value) = header::HeaderValue::from_str(&value) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
}

/// Advertises the Mercure hub on the quick-start routes (Mercure discovery).
const MERCURE_LINK: &str = "</.well-known/mercure>; rel=\"mercure\"";

fn quick_start(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .get(demo::page)
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/favicon.ico")
            .get(demo::favicon)
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/stream")
            .get(stream::subscribe)
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/publish")
            .post(publish::publish)
            .default_service(web::to(method_not_allowed)),
    );
    for (path, _) in demo::TRIGGERS {
        cfg.service(
            web::resource(path)
                .get(demo::trigger)
                .post(demo::trigger)
                .default_service(web::to(method_not_allowed)),
        );
    }
    cfg.service(
        web::resource("/stats")
            .get(ops::stats)
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .get(ops::metrics)
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .get(ops::health)
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .get(ops::ready)
            .default_service(web::to(method_not_allowed)),
    );
}

/// Cross-origin access to the Mercure route: only the listed origins, with credentials (the
/// cookie); `*` lets any origin in without credentials, as the CORS protocol itself requires
/// (a credentialed route never reflects an arbitrary origin). Other origins get no CORS
/// headers, so browsers refuse them; same-origin requests are unaffected.
fn mercure_cors(allowed_origins: &[String]) -> Cors {
    let exposed = [
        header::HeaderName::from_static("last-event-id"),
        header::HeaderName::from_static("mercure-last-event-id"),
        header::LINK,
    ];
    let cors = Cors::default()
        .allowed_methods(["GET", "POST"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CACHE_CONTROL,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers(exposed)
        .block_on_origin_mismatch(false)
        .max_age(3600);
    if allowed_origins.iter().any(|origin| origin == "*") {
        return cors.allow_any_origin().send_wildcard();
    }
    let mut cors = cors.supports_credentials();
    for origin in allowed_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// The app-wide fallback: unknown routes get a JSON 404.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, HubError> {
    Err(HubError::NotFound {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, HubError> {
    Err(HubError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

/// The query string's pairs, repeated keys kept (`?topic=a&topic=b`).
fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, HubError> {
    decode_form(req.query_string().as_bytes(), "query")
}

/// Decodes `application/x-www-form-urlencoded` pairs (a query string or a form body) as
/// `form_urlencoded::parse` does, except that a key or value that is not UTF-8 once
/// percent-decoded is refused instead of being passed on with U+FFFD in it.
fn decode_form(input: &[u8], what: &'static str) -> Result<Vec<(String, String)>, HubError> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            let key = decode_component(key).ok_or_else(|| HubError::Invalid {
                what,
                reason: "a key is not valid UTF-8 once percent-decoded".to_owned(),
            })?;
            let value = decode_component(value).ok_or_else(|| HubError::Invalid {
                what,
                reason: format!("the value of `{key}` is not valid UTF-8 once percent-decoded"),
            })?;
            Ok((key, value))
        })
        .collect()
}

/// One form component: `+` is a space, then `%XX` escapes are decoded; `None` if the result
/// is not UTF-8.
fn decode_component(component: &[u8]) -> Option<String> {
    let spaced: Vec<u8> = component
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    String::from_utf8(percent_encoding::percent_decode(&spaced).collect()).ok()
}

/// Every value of `key` in the query string.
fn query_values<'a>(pairs: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The single value of `key`; a repeated one is an error, as its meaning would be ambiguous.
fn query_value<'a>(
    pairs: &'a [(String, String)],
    key: &'static str,
) -> Result<Option<&'a str>, HubError> {
    match query_values(pairs, key).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(HubError::Invalid {
            what: "query",
            reason: format!("`{key}` given more than once"),
        }),
    }
}

/// Checks the count and length limits on the topics or selectors of one request: the rule
/// set's ([`crate::event::check_topics`]), `what` naming them in the error.
fn check_topics(topics: &[&str], limits: &Limits, what: &'static str) -> Result<(), HubError> {
    crate::event::check_topics(topics.iter().copied(), limits)
        .map_err(|refusal| refusal.into_error(what))
}

/// Reads a request body, refusing it with 413 as soon as it passes `limit`.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, HubError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| HubError::Invalid {
            what: "body",
            reason: err.to_string(),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(HubError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
