//! The Mercure protocol's hub route, `/.well-known/mercure`: subscribe with GET, publish with a
//! form POST, both authorised by Mercure JWTs (0.x and 1.0 side by side), and the active
//! subscriptions API below it.

use actix_web::{HttpRequest, HttpResponse, http::header, web};

use super::{
    AppState, decode_form,
    publish::{authorize_topics, parse_retry, published, timed},
    read_body, stream,
};
use crate::{
    auth,
    broadcaster::ListSubscriptions,
    error::HubError,
    event::{self, EventDraft, Publication, Refusal},
    subscriptions::{self, Filter},
    url_pattern::HubUrl,
};

/// The hub's path, as clients discover it.
pub const PATH: &str = "/.well-known/mercure";

/// What RFC 9728 puts before a protected resource's path to name its metadata document.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The URL of the hub's protected resource metadata (RFC 9728 section 3.1): the well-known
/// prefix inserted between the hub URL's origin and its path.
pub fn metadata_url(hub: &HubUrl) -> String {
    let origin = super::csrf::origin_of(hub.as_str()).unwrap_or_default();
    format!("{origin}{METADATA_PREFIX}{}", hub.path())
}

/// `GET /.well-known/oauth-protected-resource/.well-known/mercure`: the hub's OAuth 2.0
/// protected resource metadata (RFC 9728), served when the hub verifies tokens: the resource
/// identifier tokens' `aud` names, the issuers it trusts, how tokens may be presented.
pub async fn metadata(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    if !state.keys.verifies_any() {
        return Err(HubError::NotFound {
            method: req.method().to_string(),
            path: req.path().to_owned(),
        });
    }
    let mut document = serde_json::json!({
        "resource": state.keys.audience,
        // The cookie is not an RFC 6750 method: `mercure_cookie` names it instead.
        "bearer_methods_supported": ["header"],
        "authorization_details_types_supported": [auth::DETAIL_TYPE],
        "mercure_cookie": auth::ACCESS_TOKEN_COOKIE,
    });
    let issuers = state.keys.issuer_names();
    if !issuers.is_empty() {
        document["authorization_servers"] = serde_json::json!(issuers);
    }
    if state.settings.subscriptions {
        document["mercure_subscriptions"] = serde_json::Value::Bool(true);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .json(document))
}

/// `GET /.well-known/mercure?match=<matcher>` (1.0) or `?topic=<selector>` (0.x): at least
/// one; replay and private events as on `/stream`.
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    stream::open(&req, &state, stream::Route::Mercure).await
}

/// `POST /.well-known/mercure` with form fields `topic` (1+), `data`, `id`, `type`, `retry`,
/// `private`. Answers 200 `text/plain` with the event id.
pub async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    timed(&state, publish_form(req, payload, &state)).await
}

async fn publish_form(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, HubError> {
    state.check_origin(&req, super::csrf::Action::Publish)?;
    let grant =
        auth::publisher_grant(&req, &state.keys, &state.selectors, auth::Surface::Mercure).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(HubError::Invalid {
            what: "request",
            reason: format!(
                "expected Content-Type application/x-www-form-urlencoded, got `{content_type}`"
            ),
        });
    }
    let body = read_body(payload, state.settings.body_limit_bytes).await?;
    let form = Form::parse(&body)?;
    if form.topics.is_empty() {
        return Err(HubError::Invalid {
            what: "update",
            reason: "at least one `topic` field is required".to_owned(),
        });
    }
    let draft = EventDraft {
        topics: form.topics,
        data: form.data,
        // Mercure ids are IRIs: the hub makes a time-ordered `urn:uuid:` one.
        id: Some(form.id.unwrap_or_else(subscriptions::new_event_id)),
        event_type: form.event_type,
        // An empty `retry` is no retry, as the reference hub reads it.
        retry_ms: form
            .retry
            .as_deref()
            .filter(|retry| !retry.is_empty())
            .map(parse_retry)
            .transpose()?,
        private: form.private,
        // Mercure accepts a repeated id; a resume from it starts after its first occurrence.
        repeatable_id: true,
    };
    let publication = Publication::parse_mercure(draft, &state.limits, state.selectors.hub())
        .map_err(over_limit)?;
    authorize_topics(&grant, &publication.draft().topics)?;
    let id = state.publish(publication).await?;
    Ok(published(&id))
}

/// Mercure refuses an update over a limit on its fields with 413 (the quick-start `/publish`
/// says 400); the other rules keep their 400, the reserved values and characters naming the
/// update.
fn over_limit(refusal: Refusal) -> HubError {
    match refusal {
        Refusal::TooManyTopics { limit } => {
            HubError::UpdateTooLarge(format!("more than {limit} topics"))
        }
        Refusal::TopicTooLong { limit } => {
            HubError::UpdateTooLarge(format!("a topic is longer than {limit} bytes"))
        }
        Refusal::FieldTooLong { field } => HubError::UpdateTooLarge(format!(
            "the {} is longer than {} bytes",
            if field == "id" { "id" } else { "type" },
            event::MAX_ID_BYTES
        )),
        Refusal::Character { reason, .. } | Refusal::Reserved(reason) => HubError::Invalid {
            what: "update",
            reason,
        },
        other => other.into(),
    }
}

/// `GET /.well-known/mercure/subscriptions[/{match_type}/{match}[/{subscriber}]]`: the active
/// subscriptions (of every node sharing a Redis log, else of this node), for a token allowed to
/// subscribe to that path.
pub async fn subscriptions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let not_found = || HubError::NotFound {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    };
    if !state.settings.subscriptions {
        return Err(not_found());
    }
    let hub = state.selectors.hub();
    // The path as the hub's URL names it (its topics' form), whatever prefix a proxy removed.
    let rest = req.path().strip_prefix(PATH).ok_or_else(not_found)?;
    let topic = format!("{}{rest}", hub.path());
    // Dot segments and backslashes would make the path the grant was checked against (a URL
    // pattern normalises them) differ from the one read here.
    let segments: Option<Vec<String>> = rest
        .strip_prefix("/subscriptions")
        .unwrap_or_default()
        .split('/')
        .skip(1)
        .map(|segment| {
            if matches!(segment, "." | ".." | "") || segment.contains('\\') {
                return None;
            }
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect();
    let compat = state.keys.mode == auth::Mode::Compat;
    let known = |name: &str| KNOWN_MATCH_TYPES.contains(&name);
    let filter = match segments.ok_or_else(not_found)?.as_slice() {
        [] => Filter::All,
        // Mercure 0.x (compat mode): `/subscriptions/{topic}[/{subscriber}]`.
        [topic] if compat => Filter::Topic {
            topic: topic.clone(),
        },
        [topic, subscriber] if compat && !known(topic) => Filter::TopicOne {
            topic: topic.clone(),
            subscriber: subscriber.clone(),
        },
        [match_type, matcher] => Filter::Matcher {
            match_type: match_type.clone(),
            matcher: matcher.clone(),
        },
        [match_type, matcher, subscriber] => Filter::One {
            match_type: match_type.clone(),
            matcher: matcher.clone(),
            subscriber: subscriber.clone(),
        },
        _ => return Err(not_found()),
    };
    if let Filter::Matcher { match_type, .. } | Filter::One { match_type, .. } = &filter
        && !known(match_type)
    {
        return Err(HubError::Invalid {
            what: "subscription path",
            reason: format!(
                "unknown matcher type `{match_type}` (the hub knows {})",
                KNOWN_MATCH_TYPES.join(", ")
            ),
        });
    }
    state.check_origin(&req, super::csrf::Action::Read)?;
    let grant = auth::subscriber_grant(
        &req,
        &state.keys,
        &state.selectors,
        false,
        auth::TokenSources::HeaderAndCookie,
        auth::Surface::Mercure,
    )
    .await?;
    // The 0.x shape for a 0.x path, or for the collection asked with a 0.x token.
    let legacy = matches!(filter, Filter::Topic { .. } | Filter::TopicOne { .. })
        || (compat
            && filter == Filter::All
            && auth::token_from(&req, auth::TokenSources::HeaderAndCookie)?
                .map(|token| auth::is_access_token(&token, auth::Role::Subscriber))
                .transpose()?
                == Some(false));
    if !grant.allows(&topic) {
        return Err(HubError::Forbidden(format!(
            "the token does not allow subscribing to `{topic}`"
        )));
    }
    let one = matches!(filter, Filter::One { .. } | Filter::TopicOne { .. });
    let found = state.ask(ListSubscriptions(filter.clone())).await?;
    let cursor = found.newest_id.as_deref().unwrap_or("earliest");
    let mut subscriptions = found.subscriptions;
    // With nodes sharing a Redis log, every node's (presence): one list on any node, in one
    // order.
    if let Some(others) = found.others {
        let others = others
            .await
            .map_err(|_| HubError::PresenceUnavailable("the Redis client has stopped".into()))?
            .map_err(HubError::PresenceUnavailable)?;
        subscriptions.extend(others.into_iter().filter(|s| filter.selects(s)));
        subscriptions.sort_by(|a, b| a.topic.cmp(&b.topic));
    }
    let documents: Vec<serde_json::Value> = subscriptions
        .iter()
        .filter_map(|subscription| {
            if legacy {
                subscription.legacy_document(true)
            } else {
                Some(subscription.document(true))
            }
        })
        .collect();
    let document = match (one, legacy) {
        (true, _) => documents.into_iter().next().ok_or_else(not_found)?,
        (false, true) => subscriptions::legacy_collection(&topic, documents, cursor),
        (false, false) => subscriptions::collection(&topic, documents),
    };
    // A strong validator of this answer: the document and the cursor, hashed.
    let body = serde_json::to_vec(&document).map_err(|_| HubError::Internal)?;
    let etag = {
        use std::hash::Hasher;
        // `new()` has fixed keys: a document's tag is the same on every call and every node
        // running this build.
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(&body);
        hasher.write(cursor.as_bytes());
        format!("\"{:016x}{:08x}\"", hasher.finish(), body.len())
    };
    let link = format!(
        "<{}>; rel=\"mercure\"; last-event-id=\"{}\"; type=\"mercure\"; \
         content-type=\"application/json\"",
        hub.as_str(),
        cursor.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == etag || tag == "*")
        });
    let mut response = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::LINK, link))
        .insert_header((header::CACHE_CONTROL, "must-revalidate"))
        .insert_header((header::ETAG, etag));
    if matches {
        return Ok(response.finish());
    }
    // Mercure 0.x asks for JSON-LD's type, 1.0 for plain JSON.
    let content_type = if legacy {
        "application/ld+json"
    } else {
        "application/json"
    };
    Ok(response.content_type(content_type).body(body))
}

/// The `match_type`s a subscription API path may name: 1.0's, and the 0.x URI templates'.
const KNOWN_MATCH_TYPES: [&str; 3] = ["exact", "urlpattern", "uritemplate"];

/// The fields of a Mercure update form.
#[derive(Debug, Default)]
struct Form {
    topics: Vec<String>,
    data: String,
    id: Option<String>,
    event_type: Option<String>,
    retry: Option<String>,
    private: bool,
}

impl Form {
    fn parse(body: &[u8]) -> Result<Self, HubError> {
        std::str::from_utf8(body).map_err(|_| HubError::InvalidUtf8)?;
        let mut form = Self::default();
        for (key, value) in decode_form(body, "form")? {
            match key.as_str() {
                "topic" => form.topics.push(value),
                "data" => form.data = value,
                "id" => form.id = Some(value),
                "type" => form.event_type = Some(value),
                "retry" => form.retry = Some(value),
                // Present means private, whatever its value (`on`, `true`, empty).
                "private" => form.private = true,
                _ => {}
            }
        }
        Ok(form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field is read; `data` keeps its blank lines and indentation; `private` is a flag.
    #[test]
    fn form_fields_are_read() {
        let body = b"topic=a&topic=https%3A%2F%2Fx%2F1&data=one%0A%0A++two&id=i&type=t&retry=10&private=on";
        let form = Form::parse(body).expect("parses");
        assert_eq!(form.topics, ["a", "https://x/1"]);
        assert_eq!(form.data, "one\n\n  two");
        assert_eq!(form.id.as_deref(), Some("i"));
        assert_eq!(form.event_type.as_deref(), Some("t"));
        assert_eq!(form.retry.as_deref(), Some("10"));
        assert!(form.private);
        assert!(!Form::parse(b"topic=a").expect("parses").private);
    }
}
