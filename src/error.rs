//! The request error enum and its mapping to status codes and `{"error": "..."}` bodies.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};

use crate::topic::SelectorError;

/// `Retry-After` of a 429 for a per-client limit, in seconds.
pub const CLIENT_LIMIT_RETRY_AFTER_SECS: &str = "5";

/// Everything a request can be refused for. The message is written for the user who sent it;
/// internal details go to the log only.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{field} {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("the request body is not valid UTF-8")]
    InvalidUtf8,
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// A Mercure update over a limit on its fields (413, as Mercure asks).
    #[error("the update is over a limit: {0}")]
    UpdateTooLarge(String),
    #[error("an event with id `{0}` is already in the history")]
    DuplicateId(String),
    #[error("too many {what}: at most {limit} per request")]
    TooMany { what: &'static str, limit: usize },
    #[error("the hub is at its limit of {limit} subscribers")]
    SubscriberLimit { limit: usize },
    #[error("the hub's memory for URI templates ({limit} bytes) is full; try again later")]
    SelectorLimit { limit: usize },
    /// The subscriber's client (its source address) is at one of its own limits (429): the
    /// hub's global limits stay 503.
    #[error("{0}")]
    ClientLimit(#[from] ClientLimitError),
    /// No token where one is needed (401, a bare `Bearer` challenge).
    #[error("{0}")]
    TokenMissing(String),
    /// A token that did not verify (401, `invalid_token`).
    #[error("{0}")]
    Unauthorized(String),
    /// The `Authorization` header is not `Bearer <token>` (400, `invalid_request`).
    #[error("{0}")]
    TokenMalformed(String),
    /// A token from the cookie on a request from a foreign origin (400, `invalid_request`):
    /// cross-site request forgery.
    #[error("{0}")]
    CrossOrigin(String),
    /// A valid token that does not allow this (403, `insufficient_scope`).
    #[error("{0}")]
    Forbidden(String),
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("the event could not be stored, so it was not published; try again")]
    NotStored,
    #[error("the event log (Redis) is unreachable, so the event was not published; try again")]
    LogUnavailable,
    /// Redis is reachable but refuses writes (out of memory, a read-only replica, ...): the
    /// message says which, so the event was not published.
    #[error("{0}, so the event was not published; try again")]
    LogRefusing(String),
    /// Redis appended the event but fewer replicas than `--redis-replicas` acknowledged it in
    /// time: it may not survive a failover, and it may still be delivered.
    #[error(
        "the event was appended, but only {acknowledged} of the {wanted} replicas asked for \
         (--redis-replicas) acknowledged it within {timeout_ms} ms, so it may not survive a \
         failover; it may still be delivered: retry with the same id (a 409 then says it \
         landed)"
    )]
    NotReplicated {
        wanted: usize,
        acknowledged: usize,
        timeout_ms: u128,
    },
    /// The subscriptions of the other nodes (presence, in Redis) could not be read: a list
    /// without them would be wrong.
    #[error("the subscriptions of the other nodes cannot be read ({0}); try again")]
    PresenceUnavailable(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("internal error")]
    Internal,
}

impl HubError {
    /// A short stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } | Self::Invalid { .. } => "invalid",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::BodyTooLarge { .. } | Self::UpdateTooLarge(_) => "too_large",
            Self::DuplicateId(_) => "duplicate_id",
            Self::TooMany { .. } => "too_many_topics",
            Self::SubscriberLimit { .. } => "subscriber_limit",
            Self::SelectorLimit { .. } => "selector_limit",
            Self::ClientLimit(_) => "client_limit",
            Self::TokenMissing(_) | Self::Unauthorized(_) => "unauthorized",
            Self::TokenMalformed(_) => "invalid",
            Self::CrossOrigin(_) => "cross_origin",
            Self::Forbidden(_) => "forbidden",
            Self::ShuttingDown => "shutting_down",
            Self::NotStored => "not_stored",
            Self::LogUnavailable => "log_unavailable",
            Self::LogRefusing(_) => "log_refusing",
            Self::NotReplicated { .. } => "not_replicated",
            Self::PresenceUnavailable(_) => "presence_unavailable",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Internal => "internal",
        }
    }
}

impl ResponseError for HubError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. } | Self::Invalid { .. } | Self::InvalidUtf8 => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTooLarge { .. } | Self::UpdateTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::DuplicateId(_) => StatusCode::CONFLICT,
            Self::TokenMissing(_) | Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::TokenMalformed(_) | Self::CrossOrigin(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooMany { .. } => StatusCode::BAD_REQUEST,
            Self::ClientLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::SubscriberLimit { .. }
            | Self::SelectorLimit { .. }
            | Self::ShuttingDown
            | Self::NotStored
            | Self::LogUnavailable
            | Self::LogRefusing(_)
            | Self::NotReplicated { .. }
            | Self::PresenceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        use actix_web::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
        // Every 503 is a passing state (a limit, the log, a shutdown): say when to try again.
        // The node reconnects to its log with backoff; a second is a fair first retry.
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((RETRY_AFTER, "1"));
        }
        // A client over its own limit waits for one of its own streams to end: retrying
        // every second would only add load.
        if self.status_code() == StatusCode::TOO_MANY_REQUESTS {
            response.insert_header((RETRY_AFTER, CLIENT_LIMIT_RETRY_AFTER_SECS));
        }
        match self {
            // RFC 6750 challenges, as Mercure asks; the JSON body says the same for people.
            Self::TokenMissing(_) => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            Self::Unauthorized(_) => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""));
            }
            Self::TokenMalformed(_) | Self::CrossOrigin(_) => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer error=\"invalid_request\""));
            }
            Self::Forbidden(_) => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer error=\"insufficient_scope\""));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}

impl From<SelectorError> for HubError {
    fn from(err: SelectorError) -> Self {
        match err {
            SelectorError::Full { limit } => Self::SelectorLimit { limit },
            other => Self::Invalid {
                what: "topic selector",
                reason: other.to_string(),
            },
        }
    }
}

/// The broadcaster did not answer: it is gone (it stopped, or panicked), which no request can
/// cause. A 500, logged here, where it is seen.
impl From<actix::MailboxError> for HubError {
    fn from(err: actix::MailboxError) -> Self {
        log::error!("broadcaster unreachable error={err}");
        Self::Internal
    }
}

/// The broadcaster dropped an answer it owed (a publish or a subscription): it is gone, as for
/// a [`actix::MailboxError`].
impl From<tokio::sync::oneshot::error::RecvError> for HubError {
    fn from(_: tokio::sync::oneshot::error::RecvError) -> Self {
        log::error!("broadcaster dropped an answer it owed: it has stopped");
        Self::Internal
    }
}

/// A per-client limit a subscribe request ran into (429).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientLimitError {
    #[error(
        "too many subscribers from one client: at most {limit} at once \
         (--max-subscribers-per-client); try again when some of them have left"
    )]
    Subscribers { limit: usize },
    #[error(
        "one client's memory for URI templates and URL patterns ({limit} bytes, \
         --max-selector-bytes-per-client) is full; try again when some of its subscribers have left"
    )]
    SelectorBytes { limit: usize },
}

impl ClientLimitError {
    /// The `limit` label of `sse_hub_client_limit_refusals_total`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Subscribers { .. } => "subscribers",
            Self::SelectorBytes { .. } => "selector_bytes",
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{ResponseError, http::StatusCode};

    use super::*;

    /// A broadcaster that is gone is the hub's own failure: 500, never a 503 that tells the
    /// client to retry as if the hub were only shutting down.
    #[test]
    fn a_broadcaster_that_is_gone_is_an_internal_error() {
        for err in [
            HubError::from(actix::MailboxError::Closed),
            HubError::from(actix::MailboxError::Timeout),
        ] {
            assert_eq!(
                err.status_code(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{err}"
            );
        }
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        drop(sender);
        let dropped = futures_util::FutureExt::now_or_never(receiver).expect("resolved at once");
        let err = HubError::from(dropped.expect_err("the sender was dropped"));
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            HubError::ShuttingDown.status_code(),
            StatusCode::SERVICE_UNAVAILABLE,
            "refusing a subscriber while shutting down stays a 503"
        );
    }
}
