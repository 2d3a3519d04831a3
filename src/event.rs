//! Events: the fields a publisher gives, their validation, and the one wire encoder
//! (WHATWG `text/event-stream`) that turns an event into the bytes every subscriber shares.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    error::HubError,
    url_pattern::{HubUrl, check_value},
};

/// Longest accepted event id or event type, in bytes (also the `Last-Event-ID` limit).
pub const MAX_ID_BYTES: usize = 1024;

/// Topics one event (or one request's selectors) may name, by default (`--max-topics`).
pub const DEFAULT_MAX_TOPICS: usize = 32;
/// Longest topic or selector, in bytes, by default (`--max-topic-bytes`).
pub const DEFAULT_MAX_TOPIC_BYTES: usize = 1024;

/// What a publisher asks to publish, before the broadcaster gives it an id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventDraft {
    /// Topics the event is published to (at least one).
    pub topics: Vec<String>,
    /// The `data` payload; may contain line breaks.
    pub data: String,
    /// A publisher-chosen id; `None` lets the broadcaster generate one.
    pub id: Option<String>,
    /// Whether `id` may already be in the history. Mercure publishers may reuse ids (a resume
    /// from one then starts after its earliest occurrence); `POST /publish` refuses a taken id
    /// with 409, so that a retried publish is not published twice.
    pub repeatable_id: bool,
    /// The SSE `event:` type; `None` means the default `message`.
    pub event_type: Option<String>,
    /// The SSE `retry:` reconnection time, in milliseconds.
    pub retry_ms: Option<u64>,
    /// Private events reach only subscribers authorised for one of their topics.
    pub private: bool,
}

/// The SSE type of the hub's own subscription events (Mercure's `mercure`); publishers may not
/// use it, so it tells them apart.
pub const SUBSCRIPTION_EVENT_TYPE: &str = "mercure";

/// Whose event it is: the history bounds each kind on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Published by a publisher.
    Application,
    /// Made by the hub when a subscription starts or ends (type [`SUBSCRIPTION_EVENT_TYPE`]).
    Subscription,
}

impl Kind {
    /// The kind of an event of this type.
    pub fn of_type(event_type: Option<&str>) -> Self {
        match event_type {
            Some(SUBSCRIPTION_EVENT_TYPE) => Self::Subscription,
            _ => Self::Application,
        }
    }

    /// The kind of an encoded frame: its `event:` line, if any, follows the `id:` line.
    pub fn of_frame(frame: &[u8]) -> Self {
        let second_line = frame
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |at| &frame[at + 1..]);
        let event_type = second_line
            .strip_prefix(b"event: ")
            .and_then(|rest| rest.strip_prefix(SUBSCRIPTION_EVENT_TYPE.as_bytes()));
        if event_type.is_some_and(|rest| rest.starts_with(b"\n")) {
            Self::Subscription
        } else {
            Self::Application
        }
    }
}

/// A published event: its id, routing facts, and its frame encoded once for all subscribers.
#[derive(Debug)]
pub struct Event {
    pub id: Arc<str>,
    pub topics: Vec<String>,
    pub private: bool,
    pub kind: Kind,
    /// The complete wire frame, blank line included; cloning it is a refcount bump.
    pub frame: Bytes,
}

impl Event {
    /// Encodes `draft` under `id`. The draft must have passed the rule set
    /// ([`Publication::parse`]), or be the hub's own.
    pub fn new(id: Arc<str>, draft: EventDraft) -> Self {
        let frame = encode(
            &id,
            draft.event_type.as_deref(),
            draft.retry_ms,
            &draft.data,
        );
        Self {
            id,
            topics: draft.topics,
            private: draft.private,
            kind: Kind::of_type(draft.event_type.as_deref()),
            frame,
        }
    }

    /// Bytes this event holds in memory (frame, id and topics), for history accounting.
    pub fn size_bytes(&self) -> usize {
        self.frame.len() + self.id.len() + self.topics.iter().map(String::len).sum::<usize>()
    }
}

/// The limits of the one publication rule set (from `Settings`): what every publish and every
/// entry read back from a shared log is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Topics per event (`--max-topics`).
    pub max_topics: usize,
    /// Bytes per topic (`--max-topic-bytes`).
    pub max_topic_bytes: usize,
    /// Bytes of `data` (`--body-limit-bytes`: a publish's body bounds its data).
    pub max_data_bytes: usize,
}

impl Limits {
    /// The limits of the hub's own subscription events, read back from a shared log: their
    /// topic percent-encodes a matcher of up to `max_topic_bytes` (at most three bytes for one)
    /// and a subscriber id under the hub's path, so it may be longer than a publisher's.
    fn for_subscription_events(self) -> Self {
        Self {
            max_topic_bytes: self.max_topic_bytes.saturating_mul(3).saturating_add(1024),
            ..self
        }
    }
}

/// Which rule of the publication rule set an event breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("more than {limit} topics")]
    TooManyTopics { limit: usize },
    #[error("an empty topic")]
    EmptyTopic,
    #[error("a topic longer than {limit} bytes")]
    TopicTooLong { limit: usize },
    /// `field` is `id` or `event type`.
    #[error("{field} is longer than 1024 bytes")]
    FieldTooLong { field: &'static str },
    #[error("{field} must not contain CR, LF or NUL")]
    LineBreak { field: &'static str },
    #[error("id must not be empty")]
    EmptyId,
    #[error("id must not be `earliest`, which means \"the whole history\" on resume")]
    Earliest,
    #[error("data larger than {limit} bytes")]
    DataTooLarge { limit: usize },
    #[error("the event type `mercure` is reserved for the hub's own subscription events")]
    ReservedType,
    /// A control or format character in a topic, the id or the type; `reason` names which and
    /// where.
    #[error("{reason}")]
    Character { field: &'static str, reason: String },
    /// A value Mercure reserves for the hub: the topic `*`, a topic in the hub's namespace, an
    /// id starting with `#` ([`Publication::parse_mercure`]).
    #[error("{0}")]
    Reserved(String),
}

impl Refusal {
    /// A short stable name for the metric of refused log entries: `topics`, `id`, `type` or
    /// `too_large`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooManyTopics { .. } | Self::EmptyTopic | Self::TopicTooLong { .. } => "topics",
            Self::FieldTooLong { field } | Self::LineBreak { field } if *field == EVENT_TYPE => {
                "type"
            }
            Self::FieldTooLong { .. } | Self::LineBreak { .. } | Self::EmptyId | Self::Earliest => {
                "id"
            }
            Self::DataTooLarge { .. } => "too_large",
            Self::ReservedType => "type",
            Self::Character { field: "topic", .. } | Self::Reserved(_) => "topics",
            Self::Character { field, .. } if *field == EVENT_TYPE => "type",
            Self::Character { .. } => "id",
        }
    }

    /// The error a request gets for this refusal, `what` naming its topics (`topics`, `topic
    /// selectors`): the statuses and messages of the quick-start routes.
    pub fn into_error(self, what: &'static str) -> HubError {
        match self {
            Self::TooManyTopics { limit } => HubError::TooMany { what, limit },
            Self::EmptyTopic => HubError::Invalid {
                what,
                reason: "empty topic".to_owned(),
            },
            Self::TopicTooLong { limit } => HubError::Invalid {
                what,
                reason: format!("longer than {limit} bytes"),
            },
            Self::FieldTooLong { field } => HubError::InvalidField {
                field,
                reason: "is longer than 1024 bytes",
            },
            Self::LineBreak { field } => HubError::InvalidField {
                field,
                reason: "must not contain CR, LF or NUL",
            },
            Self::EmptyId => HubError::InvalidField {
                field: "id",
                reason: "must not be empty",
            },
            Self::Earliest => HubError::InvalidField {
                field: "id",
                reason: "must not be `earliest`, which means \"the whole history\" on resume",
            },
            Self::DataTooLarge { limit } => HubError::BodyTooLarge { limit },
            Self::ReservedType => HubError::InvalidField {
                field: EVENT_TYPE,
                reason: "must not be `mercure`, which is reserved for the hub's own subscription events",
            },
            Self::Character { field, reason } => HubError::Invalid {
                what: if field == "topic" { what } else { field },
                reason,
            },
            Self::Reserved(reason) => HubError::Invalid { what, reason },
        }
    }
}

impl From<Refusal> for HubError {
    fn from(refusal: Refusal) -> Self {
        refusal.into_error("topics")
    }
}

/// The field name an event type's refusals carry.
const EVENT_TYPE: &str = "event type";

/// An event that passed the one publication rule set: topics within the count and length
/// limits, an id and type that cannot break the framing, no control or format characters in
/// topics, id and type, data within the body limit. Publishes on every route and entries read
/// back from a shared log are parsed into one, here and nowhere else; each route only maps a
/// [`Refusal`] to its status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication(EventDraft);

impl Publication {
    /// Checks `draft` against every rule, topics first, then id, type and data.
    pub fn parse(draft: EventDraft, limits: &Limits) -> Result<Self, Refusal> {
        if Kind::of_type(draft.event_type.as_deref()) == Kind::Subscription {
            return Err(Refusal::ReservedType);
        }
        Self::parse_any(draft, limits)
    }

    /// One of the hub's own subscription events, read back from a shared log: the same rules,
    /// with room for their hub-made topics ([`Limits::for_subscription_events`]).
    pub fn parse_subscription_event(draft: EventDraft, limits: &Limits) -> Result<Self, Refusal> {
        Self::parse_any(draft, &limits.for_subscription_events())
    }

    /// A Mercure update: the rule set, and none of the values Mercure reserves for the hub
    /// whose namespace is `hub` (they would forge the hub's own events, whatever the token).
    pub fn parse_mercure(
        draft: EventDraft,
        limits: &Limits,
        hub: &HubUrl,
    ) -> Result<Self, Refusal> {
        let publication = Self::parse(draft, limits)?;
        for topic in &publication.0.topics {
            if topic == "*" {
                return Err(Refusal::Reserved(
                    "the topic `*` is reserved for the wildcard matcher".to_owned(),
                ));
            }
            if hub.addresses_namespace(topic) {
                return Err(Refusal::Reserved(format!(
                    "the topic `{topic}` is in the hub's reserved namespace `{}`",
                    hub.path()
                )));
            }
        }
        if publication
            .0
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with('#'))
        {
            return Err(Refusal::Reserved(
                "an id must not start with `#`".to_owned(),
            ));
        }
        Ok(publication)
    }

    fn parse_any(draft: EventDraft, limits: &Limits) -> Result<Self, Refusal> {
        check_topics(draft.topics.iter().map(String::as_str), limits)?;
        for topic in &draft.topics {
            check_characters(topic, "topic", || format!("the topic `{topic}`"))?;
        }
        if let Some(id) = &draft.id {
            check_id(id, "id")?;
            if id == "earliest" {
                // A browser holding this id would resume with `earliest` and replay everything.
                return Err(Refusal::Earliest);
            }
            check_characters(id, "id", || "the id".to_owned())?;
        }
        if let Some(event_type) = &draft.event_type {
            check_field(event_type, EVENT_TYPE)?;
            check_characters(event_type, EVENT_TYPE, || "the type".to_owned())?;
        }
        check_data(&draft.data, limits)?;
        Ok(Self(draft))
    }

    /// The same publication with `data` (a body read after the other fields were checked).
    pub fn with_data(self, data: String, limits: &Limits) -> Result<Self, Refusal> {
        check_data(&data, limits)?;
        Ok(Self(EventDraft { data, ..self.0 }))
    }

    pub fn draft(&self) -> &EventDraft {
        &self.0
    }

    pub fn into_draft(self) -> EventDraft {
        self.0
    }
}

/// The count and length limits on the topics (or selectors) of one event or request.
pub fn check_topics<'a>(
    topics: impl ExactSizeIterator<Item = &'a str>,
    limits: &Limits,
) -> Result<(), Refusal> {
    if topics.len() > limits.max_topics {
        return Err(Refusal::TooManyTopics {
            limit: limits.max_topics,
        });
    }
    for topic in topics {
        if topic.is_empty() {
            return Err(Refusal::EmptyTopic);
        }
        if topic.len() > limits.max_topic_bytes {
            return Err(Refusal::TopicTooLong {
                limit: limits.max_topic_bytes,
            });
        }
    }
    Ok(())
}

fn check_data(data: &str, limits: &Limits) -> Result<(), Refusal> {
    if data.len() > limits.max_data_bytes {
        return Err(Refusal::DataTooLarge {
            limit: limits.max_data_bytes,
        });
    }
    Ok(())
}

/// The value rule ([`check_value`]: no control or format characters); `named` says which
/// value it is, for the message.
fn check_characters(
    value: &str,
    field: &'static str,
    named: impl FnOnce() -> String,
) -> Result<(), Refusal> {
    check_value(value).map_err(|why| Refusal::Character {
        field,
        reason: format!("{} {why}", named()),
    })
}

/// An id (published or `Last-Event-ID`) must be a non-empty single line of at most 1 KiB.
pub fn validate_id(id: &str, what: &'static str) -> Result<(), HubError> {
    check_id(id, what).map_err(|refusal| match refusal {
        Refusal::EmptyId => HubError::InvalidField {
            field: what,
            reason: "must not be empty",
        },
        other => other.into_error(what),
    })
}

fn check_id(id: &str, what: &'static str) -> Result<(), Refusal> {
    if id.is_empty() {
        return Err(Refusal::EmptyId);
    }
    check_field(id, what)
}

fn check_field(value: &str, what: &'static str) -> Result<(), Refusal> {
    if value.len() > MAX_ID_BYTES {
        return Err(Refusal::FieldTooLong { field: what });
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err(Refusal::LineBreak { field: what });
    }
    Ok(())
}

/// Encodes one event. `data` is split on CRLF, CR and LF into one `data:` line each, so a
/// subscriber's `e.data` is the posted text with its line breaks normalised to LF.
pub fn encode(id: &str, event_type: Option<&str>, retry_ms: Option<u64>, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + data.len() + 32);
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_u8(b'\n');
    if let Some(event_type) = event_type {
        buf.put_slice(b"event: ");
        buf.put_slice(event_type.as_bytes());
        buf.put_u8(b'\n');
    }
    if let Some(retry_ms) = retry_ms {
        buf.put_slice(b"retry: ");
        buf.put_slice(retry_ms.to_string().as_bytes());
        buf.put_u8(b'\n');
    }
    for line in lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Encodes an SSE comment (`: text`), used for the opening bytes and the heartbeat.
pub fn comment(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 4);
    for line in lines(text) {
        buf.put_slice(b": ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Splits on CRLF, CR or LF, as the SSE parser does; an empty input is one empty line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use actix_web::body;
    use actix_web_lab::sse;
    use futures_util::stream;

    use super::*;

    fn data(text: &str) -> Bytes {
        encode("7", None, None, text)
    }

    /// Our encoder agrees byte for byte with actix-web-lab's `sse` encoder on every field both
    /// support, so switching between them can never change the wire.
    #[actix_web::test]
    async fn encoder_matches_actix_web_lab() {
        let cases = [
            ("1", None, "left"),
            ("2", Some("update"), "a\nb"),
            ("3", Some("x"), "a\r\nb\rc\n"),
            ("4", None, ""),
            ("5", None, "  indented\n\nafter blank"),
        ];
        for (id, event_type, text) in cases {
            let mut lab = sse::Data::new(text).id(id);
            if let Some(t) = event_type {
                lab = lab.event(t);
            }
            let lab_bytes =
                body::to_bytes(sse::Sse::from_stream(stream::iter([Ok::<_, Infallible>(
                    sse::Event::Data(lab),
                )])))
                .await
                .expect("lab encodes");
            assert_eq!(encode(id, event_type, None, text), lab_bytes, "{text:?}");
        }
    }

    /// A one-line event is `id`, `data`, blank line: the quick-start frame.
    #[test]
    fn single_line_event_is_id_then_data() {
        assert_eq!(data("left"), "id: 7\ndata: left\n\n");
    }

    /// LF, CRLF and CR each start a new `data:` line; blank and indented lines survive.
    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        assert_eq!(data("a\nb"), "id: 7\ndata: a\ndata: b\n\n");
        assert_eq!(data("a\r\nb"), "id: 7\ndata: a\ndata: b\n\n");
        assert_eq!(data("a\rb"), "id: 7\ndata: a\ndata: b\n\n");
        assert_eq!(data("a\n\n  b"), "id: 7\ndata: a\ndata: \ndata:   b\n\n");
        assert_eq!(data("a\n"), "id: 7\ndata: a\ndata: \n\n");
        assert_eq!(data("\r\n\r"), "id: 7\ndata: \ndata: \ndata: \n\n");
    }

    /// Empty data still produces one `data:` line, so browsers dispatch the event.
    #[test]
    fn empty_data_is_one_empty_data_line() {
        assert_eq!(data(""), "id: 7\ndata: \n\n");
    }

    /// Event type and retry come before data, in that order.
    #[test]
    fn event_type_and_retry_are_encoded() {
        assert_eq!(
            encode("id-1", Some("update"), Some(2500), "x"),
            "id: id-1\nevent: update\nretry: 2500\ndata: x\n\n"
        );
    }

    /// Only events of type `mercure` are subscription events, told from the draft and,
    /// the same, from the encoded frame.
    #[test]
    fn the_mercure_type_marks_a_subscription_event() {
        for (event_type, kind) in [
            (Some("mercure"), Kind::Subscription),
            (Some("mercurey"), Kind::Application),
            (Some("update"), Kind::Application),
            (None, Kind::Application),
        ] {
            let event = Event::new(
                "7".into(),
                EventDraft {
                    event_type: event_type.map(str::to_owned),
                    data: "event: mercure".into(),
                    ..EventDraft::default()
                },
            );
            assert_eq!(event.kind, kind, "{event_type:?}");
            assert_eq!(Kind::of_frame(&event.frame), kind, "{event_type:?}");
        }
    }

    /// Comments are `: ` lines ending with a blank line.
    #[test]
    fn comment_is_encoded() {
        assert_eq!(comment("keep-alive"), ": keep-alive\n\n");
    }

    /// Event types and ids that would break the framing are refused, and so are control and
    /// format characters in topics, id and type.
    #[test]
    fn line_breaks_and_control_characters_are_rejected() {
        let unlimited = Limits {
            max_topics: usize::MAX,
            max_topic_bytes: usize::MAX,
            max_data_bytes: usize::MAX,
        };
        let parse = |draft: EventDraft| Publication::parse(draft, &unlimited);
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let draft = EventDraft {
                event_type: Some(bad.into()),
                ..EventDraft::default()
            };
            assert!(
                matches!(parse(draft), Err(Refusal::LineBreak { .. })),
                "{bad:?}"
            );
            let draft = EventDraft {
                id: Some(bad.into()),
                ..EventDraft::default()
            };
            assert!(
                matches!(parse(draft), Err(Refusal::LineBreak { .. })),
                "{bad:?}"
            );
        }
        for bad in ["a\u{7}b", "a\tb", "a\u{200B}b"] {
            for draft in [
                EventDraft {
                    topics: vec![bad.into()],
                    ..EventDraft::default()
                },
                EventDraft {
                    id: Some(bad.into()),
                    ..EventDraft::default()
                },
                EventDraft {
                    event_type: Some(bad.into()),
                    ..EventDraft::default()
                },
            ] {
                let refused = parse(draft.clone());
                assert!(
                    matches!(refused, Err(Refusal::Character { .. })),
                    "{draft:?}: {refused:?}"
                );
            }
        }
        assert!(validate_id("", "id").is_err());
        let earliest = EventDraft {
            id: Some("earliest".into()),
            ..EventDraft::default()
        };
        assert_eq!(parse(earliest), Err(Refusal::Earliest));
        assert!(validate_id(&"x".repeat(1025), "id").is_err());
        assert!(validate_id(&"x".repeat(1024), "id").is_ok());
        assert!(parse(EventDraft::default()).is_ok());
        let unicode = EventDraft {
            topics: vec!["https://é.example/ü".into()],
            id: Some("ünï".into()),
            ..EventDraft::default()
        };
        assert!(parse(unicode).is_ok(), "letters of any script pass");
    }

    fn limits() -> Limits {
        Limits {
            max_topics: 2,
            max_topic_bytes: 8,
            max_data_bytes: 16,
        }
    }

    fn topics(topics: &[&str]) -> EventDraft {
        EventDraft {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            ..EventDraft::default()
        }
    }

    /// The one rule set refuses each broken rule with its own refusal and metric label, and
    /// takes what is within every limit.
    #[test]
    fn the_publication_rule_set_refuses_each_broken_rule() {
        let cases = [
            (
                topics(&["a", "b", "c"]),
                Refusal::TooManyTopics { limit: 2 },
                "topics",
            ),
            (topics(&[""]), Refusal::EmptyTopic, "topics"),
            (
                topics(&["123456789"]),
                Refusal::TopicTooLong { limit: 8 },
                "topics",
            ),
            (
                EventDraft {
                    id: Some("1\nevent: reset".into()),
                    ..topics(&["a"])
                },
                Refusal::LineBreak { field: "id" },
                "id",
            ),
            (
                EventDraft {
                    event_type: Some("mercure".into()),
                    ..topics(&["a"])
                },
                Refusal::ReservedType,
                "type",
            ),
            (
                EventDraft {
                    event_type: Some("a\rb".into()),
                    ..topics(&["a"])
                },
                Refusal::LineBreak {
                    field: "event type",
                },
                "type",
            ),
            (
                EventDraft {
                    event_type: Some("t".repeat(1025)),
                    ..topics(&["a"])
                },
                Refusal::FieldTooLong {
                    field: "event type",
                },
                "type",
            ),
            (
                EventDraft {
                    id: Some("earliest".into()),
                    ..topics(&["a"])
                },
                Refusal::Earliest,
                "id",
            ),
            (
                EventDraft {
                    data: "x".repeat(17),
                    ..topics(&["a"])
                },
                Refusal::DataTooLarge { limit: 16 },
                "too_large",
            ),
        ];
        for (draft, refusal, label) in cases {
            assert_eq!(Publication::parse(draft, &limits()), Err(refusal.clone()));
            assert_eq!(refusal.label(), label, "{refusal:?}");
        }
        let fine = EventDraft {
            id: Some("i".repeat(1024)),
            data: "x".repeat(16),
            ..topics(&["12345678", "b"])
        };
        assert!(Publication::parse(fine, &limits()).is_ok());
        let checked = Publication::parse(topics(&["a"]), &limits()).expect("passes");
        assert_eq!(
            checked.with_data("x".repeat(17), &limits()),
            Err(Refusal::DataTooLarge { limit: 16 })
        );
    }
}
