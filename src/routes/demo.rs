//! The quick-start triggers of the original Go program: `/send`, `/left`, `/right` each
//! publish a fixed message to the default topic, on GET or POST.

use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, publish::published};
use crate::{broadcaster::Publish, error::HubError, event::EventDraft};

/// Route and the data it publishes, byte for byte as the original program sent them.
pub const TRIGGERS: [(&str, &str); 3] = [
    ("/send", "you can put json in here as the data"),
    ("/left", "left"),
    ("/right", "right"),
];

/// Publishes the route's fixed message; answers 200 `text/plain` with the event id.
pub async fn trigger(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HubError> {
    let (_, data) = TRIGGERS
        .iter()
        .find(|(path, _)| *path == req.path())
        .ok_or(HubError::Internal)?;
    let draft = EventDraft {
        topics: vec![state.settings.default_topic.clone()],
        data: (*data).to_owned(),
        ..EventDraft::default()
    };
    let id = state.broadcaster.send(Publish(draft)).await??;
    Ok(published(&id))
}
