//! The newcomer's surfaces: the demo page at `/` (and its icon), and the quick-start triggers of the original
//! Go program (`/send`, `/left`, `/right` each publish a fixed message to the default topic).

use actix_web::{HttpRequest, HttpResponse, web};

use super::{
    AppState,
    publish::{published, timed},
};
use crate::{
    error::HubError,
    event::{EventDraft, Publication},
};

/// Route and the data it publishes, byte for byte as the original program sent them.
pub const TRIGGERS: [(&str, &str); 3] = [
    ("/send", "you can put json in here as the data"),
    ("/left", "left"),
    ("/right", "right"),
];

/// The demo page, built into the binary.
const PAGE: &str = include_str!("demo.html");

/// The demo page's icon (16×16), which browsers also ask for on their own.
const FAVICON: &[u8] = include_bytes!("favicon.ico");

/// `GET /favicon.ico`: the icon, cacheable for a day.
pub async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/x-icon")
        .insert_header(("cache-control", "public, max-age=86400"))
        .body(FAVICON)
}

/// `GET /`: connection state, a live event log, the trigger buttons, a publish form and a
/// topic filter (`/?topic=a&topic=b` preselects one).
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

/// Publishes the route's fixed message; answers 200 `text/plain` with the event id.
pub async fn trigger(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    timed(&state, trigger_body(req, &state)).await
}

async fn trigger_body(req: HttpRequest, state: &AppState) -> Result<HttpResponse, HubError> {
    if !state.settings.triggers {
        return Err(HubError::Forbidden(format!(
            "the quick-start trigger {} is turned off (--triggers=false)",
            req.path()
        )));
    }
    let (_, data) = TRIGGERS
        .iter()
        .find(|(path, _)| *path == req.path())
        .ok_or(HubError::Internal)?;
    let draft = EventDraft {
        topics: vec![state.settings.default_topic.clone()],
        data: (*data).to_owned(),
        ..EventDraft::default()
    };
    let id = state
        .publish(Publication::parse(draft, &state.limits)?)
        .await?;
    Ok(published(&id))
}
