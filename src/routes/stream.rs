//! Subscribing: `GET /stream` (and, through [`open`], the Mercure subscribe route): selectors
//! from `?topic=` (or Mercure 1.0's `?match=`), the resume point from `Last-Event-ID`, private
//! events from the token.

use std::time::{Duration, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use tokio::time::Instant;

use super::{AppState, check_topics, query_pairs, query_value};
use crate::{
    auth,
    broadcaster::Subscribe,
    error::HubError,
    event,
    sse::{self, SubscriberBody},
    subscriptions::ActiveSubscriber,
    topic::MatcherType,
    url_pattern,
};

/// Opens a subscriber's stream. The opening comment is written at once, so `onopen` fires
/// before any publish; replayed events follow it, then live ones.
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    open(&req, &state, Route::Stream).await
}

/// Which route a subscriber came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/stream`: `topic` selectors, none meaning every public event.
    Stream,
    /// The Mercure hub: at least one selector, `topic` (0.x) or `match*` (1.0).
    Mercure,
}

/// The Mercure protocol version a subscribe request speaks, told by its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// `topic=` selectors (and `/stream`).
    Legacy,
    /// `match=`, `match_exact=`, `match_urlpattern=` matchers.
    Current,
}

/// The selectors of a subscribe request, as written: their type and text.
struct Requested<'a> {
    version: Version,
    selectors: Vec<(MatcherType, &'a str)>,
}

fn requested_selectors(
    pairs: &[(String, String)],
    route: Route,
) -> Result<Requested<'_>, HubError> {
    let mut topics = Vec::new();
    let mut matchers = Vec::new();
    for (key, value) in pairs {
        if key == "topic" {
            let kind = if value.contains('{') {
                MatcherType::UriTemplate
            } else {
                MatcherType::Exact
            };
            topics.push((kind, value.as_str()));
            continue;
        }
        // Mercure 1.0 reserves every parameter name starting with `match`, in any case.
        if route == Route::Stream
            || !key
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case("match"))
        {
            continue;
        }
        let kind = match key.as_str() {
            "match" | "match_exact" => MatcherType::Exact,
            "match_urlpattern" => MatcherType::UrlPattern,
            _ => {
                return Err(HubError::Invalid {
                    what: "subscription",
                    reason: format!(
                        "unknown matcher parameter `{key}` (the hub knows `match`, `match_exact` \
                         and `match_urlpattern`; names starting with `match` are reserved)"
                    ),
                });
            }
        };
        url_pattern::check_value(value).map_err(|why| HubError::Invalid {
            what: "subscription",
            reason: format!("the value of `{key}` {why}"),
        })?;
        // An empty exact matcher is accepted, as the reference hub does: it names the empty
        // topic, which no publish can have. An empty URL pattern is no pattern.
        if value.is_empty() && kind == MatcherType::UrlPattern {
            return Err(HubError::Invalid {
                what: "subscription",
                reason: format!("the value of `{key}` must not be empty"),
            });
        }
        matchers.push((kind, value.as_str()));
    }
    let (version, mut selectors) = match (topics.is_empty(), matchers.is_empty()) {
        (_, true) => (Version::Legacy, topics),
        (true, false) => (Version::Current, matchers),
        (false, false) => {
            return Err(HubError::Invalid {
                what: "subscription",
                reason: "give either `topic` selectors (Mercure 0.x) or `match` matchers \
                         (Mercure 1.0), not both"
                    .to_owned(),
            });
        }
    };
    // A selector given twice is one selector (one index entry, one line in /stats).
    let mut seen = std::collections::HashSet::new();
    selectors.retain(|s| seen.insert(*s));
    Ok(Requested { version, selectors })
}

/// Opens a stream for `req`.
pub async fn open(
    req: &HttpRequest,
    state: &AppState,
    route: Route,
) -> Result<HttpResponse, HubError> {
    let pairs = query_pairs(req)?;
    let Requested {
        version,
        selectors: requested,
    } = requested_selectors(&pairs, route)?;
    let surface = match route {
        Route::Stream => auth::Surface::Hub,
        Route::Mercure => auth::Surface::Mercure,
    };
    if surface == auth::Surface::Mercure
        && version == Version::Legacy
        && state.keys.mode == auth::Mode::Modern
        && !requested.is_empty()
    {
        return Err(HubError::Invalid {
            what: "subscription",
            reason: "`topic` selectors are Mercure 0.x; the hub's Mercure route is in modern \
                     mode and takes `match`, `match_exact` or `match_urlpattern` \
                     (`--mercure-mode compat` also takes `topic`)"
                .to_owned(),
        });
    }
    state.check_origin(req, super::csrf::Action::Read)?;
    let sources = match version {
        Version::Legacy => auth::TokenSources::WithQuery,
        Version::Current => auth::TokenSources::HeaderAndCookie,
    };
    let grant = auth::subscriber_grant(
        req,
        &state.keys,
        &state.selectors,
        state.settings.anonymous,
        sources,
        surface,
    )
    .await?;
    if route == Route::Mercure && requested.is_empty() {
        return Err(HubError::Invalid {
            what: "subscription",
            reason: "at least one `topic` (Mercure 0.x) or `match` (1.0) selector is required"
                .to_owned(),
        });
    }
    let texts: Vec<&str> = requested
        .iter()
        .map(|(_, text)| *text)
        .filter(|text| version == Version::Legacy || !text.is_empty())
        .collect();
    check_topics(&texts, &state.limits, "topic selectors")?;
    // The client's share: a subscriber slot now, each costly selector as it is compiled; the
    // stream's body holds it, so all of it comes back when the stream ends.
    let client = state.clients.identify(
        req.peer_addr().map(|peer| peer.ip()),
        req.headers()
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok()),
    );
    let mut hold = state.clients.admit(client)?;
    let mut selectors = Vec::with_capacity(requested.len());
    for &(kind, text) in &requested {
        // A 0.x selector's kind says whether it is a URI template (see requested_selectors).
        let selector = match state.selectors.cached_typed(kind, text) {
            Some(selector) => selector,
            // Compiling a template or a URL pattern can take milliseconds of CPU: not on the
            // worker's event loop, whose other connections would wait meanwhile, but on the
            // hub's few compile threads (`--compile-threads`). Its most possible cost is set
            // aside from the client's budget first, so that concurrent requests of one client
            // cannot take more of the global budget than it may hold.
            None => {
                hold.reserve(state.settings.max_template_bytes)?;
                state
                    .selectors
                    .compile(kind, text)
                    .await
                    .map_err(|_| HubError::Internal)?
            }
        }?;
        hold.charge(&selector)?;
        selectors.push(selector);
    }
    let last_event_id = last_event_id(req, &pairs)?;
    if route == Route::Stream && last_event_id.as_deref() == Some("") {
        return Err(HubError::InvalidField {
            field: "Last-Event-ID",
            reason: "must not be empty",
        });
    }
    // On the Mercure route an empty cursor is no cursor (as the reference hub reads it):
    // nothing is replayed, but the client asked, so a 1.0 one is told where its stream starts.
    let resumes = last_event_id.is_some();
    let last_event_id = last_event_id.filter(|id| !id.is_empty());
    let active = (route == Route::Mercure && state.settings.subscriptions).then(|| {
        // Each as the client asked for it (`match_urlpattern=*` is a `urlpattern`
        // subscription, though it compiles to the wildcard).
        let matchers = requested
            .iter()
            .map(|&(kind, text)| {
                let payload = grant.payload_for(text).cloned();
                (kind, text.to_owned(), payload)
            })
            .collect();
        Box::new(ActiveSubscriber::new(
            state.selectors.hub().path(),
            matchers,
            state.keys.mode == auth::Mode::Compat,
        ))
    });

    let subscription = state
        .subscribe(Subscribe {
            selectors,
            private_selectors: grant.selectors,
            last_event_id,
            active,
        })
        .await?;

    // The token's end as an instant on the runtime's clock; one too far off to represent is
    // never reached.
    let deadline = grant.valid_until.and_then(|until| {
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Instant::now().checked_add(left)
    });
    // The id before the first event this subscriber is sent: 0.x names it always, 1.0 when
    // the subscriber asked to resume.
    let preceding = subscription.preceding_id.as_deref().unwrap_or("earliest");
    let mut response = sse::response();
    match version {
        Version::Legacy => {
            response.insert_header(("last-event-id", preceding));
        }
        Version::Current if resumes => {
            response.insert_header(("mercure-last-event-id", preceding));
        }
        Version::Current => {}
    }
    Ok(response
        // A stream that ends (shutdown, too slow) closes its connection, so shutdown need not
        // wait for idle keep-alive connections, and the browser reconnects on a fresh one.
        .force_close()
        .body(
            SubscriberBody::new(
                subscription.opening,
                subscription.receiver,
                state.metrics.clone(),
                deadline,
            )
            .holding(hold),
        ))
}

/// The resume point: the `Last-Event-ID` header, else the `lastEventID` or `last_event_id`
/// query parameter. Malformed values are refused rather than ignored; an empty one is
/// returned as it is (the caller reads it as no cursor).
fn last_event_id(
    req: &HttpRequest,
    pairs: &[(String, String)],
) -> Result<Option<String>, HubError> {
    let value = match req.headers().get("last-event-id") {
        Some(header) => Some(
            header
                .to_str()
                .map_err(|_| HubError::InvalidField {
                    field: "Last-Event-ID",
                    reason: "must be visible ASCII",
                })?
                .to_owned(),
        ),
        None => match query_value(pairs, "lastEventID")? {
            Some(v) => Some(v.to_owned()),
            None => query_value(pairs, "last_event_id")?.map(str::to_owned),
        },
    };
    if let Some(id) = value.as_deref().filter(|id| !id.is_empty()) {
        event::validate_id(id, "Last-Event-ID")?;
        if id.chars().any(char::is_control) {
            return Err(HubError::InvalidField {
                field: "Last-Event-ID",
                reason: "must not contain control characters",
            });
        }
    }
    Ok(value)
}
