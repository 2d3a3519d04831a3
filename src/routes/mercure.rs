//! The Mercure protocol's hub route, `/.well-known/mercure`: subscribe with GET, publish with a
//! form POST, both authorised by Mercure JWTs.

use actix_web::{HttpRequest, HttpResponse, http::header, web};

use super::{
    AppState, check_topics, decode_form,
    publish::{authorize_topics, parse_retry, published, timed},
    read_body, stream,
};
use crate::{
    auth,
    error::HubError,
    event::{self, EventDraft},
};

/// The hub's path, as clients discover it.
pub const PATH: &str = "/.well-known/mercure";

/// `GET /.well-known/mercure?topic=<selector>`: at least one selector; replay and private
/// events as on `/stream`.
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    stream::open(&req, &state, true).await
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
    let grant = auth::publisher_grant(&req, &state.keys, &state.selectors, true)?
        .ok_or(HubError::Internal)?;
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
    let topics: Vec<&str> = form.topics.iter().map(String::as_str).collect();
    if topics.is_empty() {
        return Err(HubError::Invalid {
            what: "update",
            reason: "at least one `topic` field is required".to_owned(),
        });
    }
    check_topics(&topics, &state.settings, "topics")?;
    authorize_topics(&grant, &topics)?;
    let draft = EventDraft {
        topics: form.topics,
        data: form.data,
        id: form.id,
        event_type: form.event_type,
        retry_ms: form.retry.as_deref().map(parse_retry).transpose()?,
        private: form.private,
    };
    event::validate_draft(&draft)?;
    let id = state.publish(draft).await?;
    Ok(published(&id))
}

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
