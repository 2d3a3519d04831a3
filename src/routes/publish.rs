//! `POST /publish`: the raw request body becomes one event's `data`.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, query_pairs, query_value, query_values, read_body};
use crate::{
    auth::{self, Grant},
    error::HubError,
    event::{EventDraft, Publication},
};

/// Publishes the body to `?topic=` (repeatable; the default topic when absent), with optional
/// `?event=` type, `?id=`, `?retry=` (milliseconds) and `?private`. Answers 200 `text/plain` with the id.
pub async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    timed(&state, publish_body(req, payload, &state)).await
}

/// Records a publish's outcome in the metrics: its duration, or its error kind.
pub async fn timed(
    state: &AppState,
    publish: impl Future<Output = Result<HttpResponse, HubError>>,
) -> Result<HttpResponse, HubError> {
    let started = Instant::now();
    let result = publish.await;
    match &result {
        Ok(_) => state
            .metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64()),
        Err(err) => state.metrics.count_publish_error(err.kind()),
    }
    result
}

async fn publish_body(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, HubError> {
    let settings = &state.settings;
    state.check_origin(&req, super::csrf::Action::Publish)?;
    let grant = auth::hub_publisher_grant(&req, &state.keys, &state.selectors).await?;
    if let Some(length) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && length > settings.body_limit_bytes
    {
        return Err(HubError::BodyTooLarge {
            limit: settings.body_limit_bytes,
        });
    }
    let pairs = query_pairs(&req)?;
    let mut topics = query_values(&pairs, "topic");
    if topics.is_empty() {
        topics.push(&settings.default_topic);
    }
    let retry_ms = query_value(&pairs, "retry")?.map(parse_retry).transpose()?;
    let draft = EventDraft {
        topics: topics.into_iter().map(str::to_owned).collect(),
        event_type: query_value(&pairs, "event")?.map(str::to_owned),
        id: query_value(&pairs, "id")?.map(str::to_owned),
        retry_ms,
        private: parse_private(query_value(&pairs, "private")?)?,
        data: String::new(),
        repeatable_id: false,
    };
    // The rule set before the body is read, so a bad query is refused without reading it.
    let limits = &state.limits;
    let publication = Publication::parse(draft, limits)?;
    if let Some(grant) = &grant {
        authorize_topics(grant, &publication.draft().topics)?;
    }
    let body = read_body(payload, settings.body_limit_bytes).await?;
    let data = String::from_utf8(body.into()).map_err(|_| HubError::InvalidUtf8)?;
    let id = state.publish(publication.with_data(data, limits)?).await?;
    Ok(published(&id))
}

/// Every topic must be allowed by the publisher's token (its `mercure.publish` claim, or its
/// `publish` authorization details).
pub fn authorize_topics(grant: &Grant, topics: &[String]) -> Result<(), HubError> {
    match topics.iter().find(|topic| !grant.allows(topic)) {
        Some(topic) => Err(HubError::Forbidden(format!(
            "the token does not allow publishing to topic `{topic}`"
        ))),
        None => Ok(()),
    }
}

/// Reads the `private` query parameter: present (empty, `1`, `true`, `on`) makes the event
/// private, as Mercure's `private` field does; `0`, `false` and `off` say public; anything else
/// is refused rather than guessed.
fn parse_private(value: Option<&str>) -> Result<bool, HubError> {
    match value {
        None | Some("0" | "false" | "off") => Ok(false),
        Some("" | "1" | "true" | "on") => Ok(true),
        Some(_) => Err(HubError::InvalidField {
            field: "private",
            reason: "must be empty, 1, true or on (private), or 0, false or off (public)",
        }),
    }
}

/// Reads a `retry` value: digits only, milliseconds.
pub fn parse_retry(retry: &str) -> Result<u64, HubError> {
    retry
        .parse::<u64>()
        .ok()
        .filter(|_| retry.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(HubError::InvalidField {
            field: "retry",
            reason: "must be a number of milliseconds",
        })
}

/// The reply to every successful publish: 200 `text/plain` whose body is the event id.
pub fn published(id: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(id.to_owned())
}
