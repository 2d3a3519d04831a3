//! Subscribing: `GET /stream` (and, through [`open`], the Mercure subscribe route): selectors
//! from `?topic=`, the resume point from `Last-Event-ID`, private events from the token.

use std::time::{Duration, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use tokio::time::Instant;

use super::{AppState, check_topics, query_pairs, query_value, query_values};
use crate::{
    auth,
    broadcaster::Subscribe,
    error::HubError,
    event,
    sse::{self, SubscriberBody},
};

/// Opens a subscriber's stream. The opening comment is written at once, so `onopen` fires
/// before any publish; replayed events follow it, then live ones.
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    open(&req, &state, false).await
}

/// Opens a stream for `req`. With `topic_required`, at least one `topic` selector must be
/// given (the Mercure protocol's rule); without one, `/stream` follows every public event.
pub async fn open(
    req: &HttpRequest,
    state: &AppState,
    topic_required: bool,
) -> Result<HttpResponse, HubError> {
    let auth::Grant {
        selectors: private_selectors,
        valid_until,
    } = auth::subscriber_grant(req, &state.keys, &state.selectors, state.settings.anonymous)?;
    let pairs = query_pairs(req)?;
    let mut selectors = query_values(&pairs, "topic");
    // A selector given twice is one selector (one index entry, one line in /stats).
    let mut seen = std::collections::HashSet::new();
    selectors.retain(|s| seen.insert(*s));
    if topic_required && selectors.is_empty() {
        return Err(HubError::Invalid {
            what: "subscription",
            reason: "at least one `topic` selector is required".to_owned(),
        });
    }
    check_topics(&selectors, &state.settings, "topic selectors")?;
    let mut compiled = Vec::with_capacity(selectors.len());
    for text in selectors {
        let selector = match state.selectors.cached(text) {
            Some(selector) => selector,
            // Compiling a template can take milliseconds of CPU: not on the worker's event
            // loop, whose other connections would wait meanwhile.
            None => {
                let (cache, text) = (state.selectors.clone(), text.to_owned());
                web::block(move || cache.get(&text))
                    .await
                    .map_err(|_| HubError::Internal)?
            }
        };
        compiled.push(selector?);
    }
    let selectors = compiled;
    let last_event_id = last_event_id(req, &pairs)?;

    let subscription = state
        .subscribe(Subscribe {
            selectors,
            private_selectors,
            last_event_id,
        })
        .await?;

    // The token's end as an instant on the runtime's clock; one too far off to represent is
    // never reached.
    let deadline = valid_until.and_then(|until| {
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Instant::now().checked_add(left)
    });
    let newest = subscription.newest_id.as_deref().unwrap_or("earliest");
    Ok(sse::response()
        .insert_header(("last-event-id", newest))
        // A stream that ends (shutdown, too slow) closes its connection, so shutdown need not
        // wait for idle keep-alive connections, and the browser reconnects on a fresh one.
        .force_close()
        .body(SubscriberBody::new(
            subscription.opening,
            subscription.receiver,
            state.metrics.clone(),
            deadline,
        )))
}

/// The resume point: the `Last-Event-ID` header, else the `lastEventID` or `last_event_id`
/// query parameter. Malformed values are refused rather than ignored.
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
    if let Some(id) = &value {
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
