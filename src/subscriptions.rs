//! Active subscriptions (Mercure): what a subscriber on the hub route is subscribed to, the
//! private `mercure` events announcing a subscription's start and end, and the documents of the
//! subscription API.

use std::sync::Arc;

use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{event::EventDraft, topic::MatcherType, url_pattern::NOT_UNRESERVED};

/// The SSE type of the hub's own events; publishers may not use it.
pub use crate::event::SUBSCRIPTION_EVENT_TYPE as EVENT_TYPE;

/// Everything but RFC 3986's unreserved characters is encoded, so a matcher or subscriber id
/// is one path segment, encoded once (RFC 6570 simple expansion).
fn segment(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// `{hub path}/subscriptions`, the collection of every subscription.
pub fn collection_path(hub_path: &str) -> String {
    format!("{hub_path}/subscriptions")
}

/// `{hub path}/subscriptions/{match_type}/{match}`, the subscriptions of one matcher.
pub fn matcher_path(hub_path: &str, match_type: &str, matcher: &str) -> String {
    format!(
        "{}/{match_type}/{}",
        collection_path(hub_path),
        segment(matcher)
    )
}

/// One subscription: a matcher of one subscriber, and the payload its token attaches.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveSubscription {
    /// `{hub path}/subscriptions/{match_type}/{match}/{subscriber}`: its events' topic and
    /// its document's `id`.
    pub topic: String,
    pub match_type: MatcherType,
    pub matcher: String,
    pub subscriber: Arc<str>,
    pub payload: Option<Value>,
    /// In compat mode, `{hub path}/subscriptions/{topic}/{subscriber}`: the topic of its
    /// Mercure 0.x events and the `id` of its 0.x document.
    pub legacy_topic: Option<String>,
}

impl ActiveSubscription {
    /// The subscription document (the API's, and its events' data).
    pub fn document(&self, active: bool) -> Value {
        let mut document = json!({
            "id": self.topic,
            "type": "subscription",
            "match_type": self.match_type.name(),
            "match": self.matcher,
            "subscriber": &*self.subscriber,
            "active": active,
        });
        if let (Some(payload), Some(fields)) = (&self.payload, document.as_object_mut()) {
            fields.insert("payload".to_owned(), payload.clone());
        }
        document
    }

    /// Its Mercure 0.x document (JSON-LD), in compat mode: `@context`, `id` (the 0.x event
    /// topic), `type: Subscription`, `topic` (the selector), `subscriber`, `active`, `payload`.
    pub fn legacy_document(&self, active: bool) -> Option<Value> {
        let id = self.legacy_topic.as_ref()?;
        let mut document = json!({
            "@context": LEGACY_CONTEXT,
            "id": id,
            "type": "Subscription",
            "topic": self.matcher,
            "subscriber": &*self.subscriber,
            "active": active,
        });
        if let (Some(payload), Some(fields)) = (&self.payload, document.as_object_mut()) {
            fields.insert("payload".to_owned(), payload.clone());
        }
        Some(document)
    }

    /// The private updates that announce this subscription's start (`active`) or end: the
    /// 1.0 one, and in compat mode the 0.x one, so watchers of either protocol see every
    /// subscriber.
    pub fn events(&self, active: bool) -> impl Iterator<Item = EventDraft> + '_ {
        let current = (self.topic.clone(), self.document(active));
        let legacy = self.legacy_topic.clone().zip(self.legacy_document(active));
        std::iter::once(current)
            .chain(legacy)
            .map(|(topic, document)| EventDraft {
                topics: vec![topic],
                data: document.to_string(),
                id: Some(new_event_id()),
                event_type: Some(EVENT_TYPE.to_owned()),
                retry_ms: None,
                private: true,
                repeatable_id: true,
            })
    }
}

/// The most a subscription in its shared form (presence, read back from Redis) may take.
pub const SHARED_MAX_BYTES: usize = 64 * 1024;

/// A subscription in the form nodes share it (presence across nodes): short field names, the
/// match type by name.
#[derive(Debug, Serialize, Deserialize)]
struct Shared {
    #[serde(rename = "t")]
    topic: String,
    #[serde(rename = "m")]
    match_type: String,
    #[serde(rename = "x")]
    matcher: String,
    #[serde(rename = "s")]
    subscriber: String,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    legacy_topic: Option<String>,
}

impl ActiveSubscription {
    /// Its shared form: what other nodes list, and announce the end of if this node dies.
    pub fn to_shared(&self) -> String {
        let shared = Shared {
            topic: self.topic.clone(),
            match_type: self.match_type.name().to_owned(),
            matcher: self.matcher.clone(),
            subscriber: self.subscriber.to_string(),
            payload: self.payload.clone(),
            legacy_topic: self.legacy_topic.clone(),
        };
        // A struct of strings and JSON values always serialises.
        serde_json::to_string(&shared).unwrap_or_default()
    }

    /// Reads a subscription in its shared form, as another node wrote it (untrusted: it comes
    /// back from Redis). Refused, saying why: over [`SHARED_MAX_BYTES`], not that JSON shape,
    /// an unknown match type, or a topic that is not one of the subscription API's.
    pub fn from_shared(text: &str) -> Result<Self, String> {
        if text.len() > SHARED_MAX_BYTES {
            return Err(format!("{} bytes, over {SHARED_MAX_BYTES}", text.len()));
        }
        let shared: Shared =
            serde_json::from_str(text).map_err(|err| format!("not a subscription: {err}"))?;
        let match_type = match shared.match_type.as_str() {
            "uritemplate" => MatcherType::UriTemplate,
            name => MatcherType::from_name(name)
                .ok_or_else(|| format!("unknown match type `{name}`"))?,
        };
        if !shared.topic.contains("/subscriptions/") || shared.subscriber.is_empty() {
            return Err(format!(
                "`{}` is not a subscription topic, or the subscriber is empty",
                shared.topic
            ));
        }
        Ok(Self {
            topic: shared.topic,
            match_type,
            matcher: shared.matcher,
            subscriber: shared.subscriber.into(),
            payload: shared.payload,
            legacy_topic: shared.legacy_topic,
        })
    }
}

/// The JSON-LD `@context` of Mercure 0.x subscription documents.
pub const LEGACY_CONTEXT: &str = "https://mercure.rocks/";

/// A subscriber on the hub route, as active subscriptions see it: a hub-made id, unique per
/// connection (never from the client), and one subscription per matcher.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveSubscriber {
    pub id: Arc<str>,
    pub subscriptions: Vec<ActiveSubscription>,
}

impl ActiveSubscriber {
    /// The updates announcing the start (`active`) or the end of each of its subscriptions.
    pub fn events(&self, active: bool) -> impl Iterator<Item = EventDraft> + '_ {
        self.subscriptions
            .iter()
            .flat_map(move |s| s.events(active))
    }

    /// A new subscriber with a random `urn:uuid:` id, subscribed with each `(match_type,
    /// matcher, payload)`; `legacy` (compat mode) gives each subscription its 0.x topic too.
    pub fn new(
        hub_path: &str,
        matchers: Vec<(MatcherType, String, Option<Value>)>,
        legacy: bool,
    ) -> Self {
        let id: Arc<str> = format!("urn:uuid:{}", uuid::Uuid::new_v4()).into();
        let subscriptions = matchers
            .into_iter()
            .map(|(match_type, matcher, payload)| ActiveSubscription {
                topic: format!(
                    "{}/{}",
                    matcher_path(hub_path, match_type.name(), &matcher),
                    segment(&id)
                ),
                legacy_topic: legacy.then(|| {
                    format!(
                        "{}/{}/{}",
                        collection_path(hub_path),
                        segment(&matcher),
                        segment(&id)
                    )
                }),
                match_type,
                matcher,
                subscriber: id.clone(),
                payload,
            })
            .collect();
        Self { id, subscriptions }
    }
}

/// A hub-made event id: `urn:uuid:` and a time-ordered UUIDv7, an IRI as Mercure asks.
pub fn new_event_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::now_v7())
}

/// Which subscriptions an API request asks for: its path below `{hub path}/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    Matcher {
        match_type: String,
        matcher: String,
    },
    One {
        match_type: String,
        matcher: String,
        subscriber: String,
    },
    /// Mercure 0.x, `/subscriptions/{topic}`: the subscriptions of one selector text.
    Topic {
        topic: String,
    },
    /// Mercure 0.x, `/subscriptions/{topic}/{subscriber}`.
    TopicOne {
        topic: String,
        subscriber: String,
    },
}

impl Filter {
    pub fn selects(&self, subscription: &ActiveSubscription) -> bool {
        match self {
            Self::All => true,
            Self::Matcher {
                match_type,
                matcher,
            } => subscription.match_type.name() == match_type && &subscription.matcher == matcher,
            Self::One {
                match_type,
                matcher,
                subscriber,
            } => {
                subscription.match_type.name() == match_type
                    && &subscription.matcher == matcher
                    && &*subscription.subscriber == subscriber
            }
            Self::Topic { topic } => &subscription.matcher == topic,
            Self::TopicOne { topic, subscriber } => {
                &subscription.matcher == topic && &*subscription.subscriber == subscriber
            }
        }
    }
}

/// A Mercure 0.x collection document (JSON-LD), with its `lastEventID` cursor.
pub fn legacy_collection(id: &str, subscriptions: Vec<Value>, last_event_id: &str) -> Value {
    json!({
        "@context": LEGACY_CONTEXT,
        "id": id,
        "type": "Subscriptions",
        "lastEventID": last_event_id,
        "subscriptions": subscriptions,
    })
}

/// A collection document: `{"id", "type": "subscriptions", "subscriptions": [...]}`.
pub fn collection(id: &str, subscriptions: Vec<Value>) -> Value {
    json!({
        "id": id,
        "type": "subscriptions",
        "subscriptions": subscriptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_survives_its_shared_form_and_bad_ones_are_refused() {
        let subscriber = ActiveSubscriber::new(
            "/.well-known/mercure",
            vec![
                (
                    MatcherType::Exact,
                    "https://a/1".into(),
                    Some(json!({"u": 1})),
                ),
                (MatcherType::UriTemplate, "https://a/{id}".into(), None),
            ],
            true,
        );
        for subscription in &subscriber.subscriptions {
            let shared = subscription.to_shared();
            assert_eq!(
                ActiveSubscription::from_shared(&shared).as_ref(),
                Ok(subscription),
                "{shared}"
            );
        }
        let too_large = format!("{{\"t\":\"{}\"}}", "a".repeat(SHARED_MAX_BYTES));
        for bad in [
            "",
            "[]",
            "{\"t\":1}",
            r#"{"t":"/.well-known/mercure/subscriptions/exact/a/b","m":"regex","x":"a","s":"b"}"#,
            r#"{"t":"/elsewhere","m":"exact","x":"a","s":"b"}"#,
            r#"{"t":"/.well-known/mercure/subscriptions/exact/a/b","m":"exact","x":"a","s":""}"#,
            too_large.as_str(),
        ] {
            assert!(ActiveSubscription::from_shared(bad).is_err(), "{bad}");
        }
    }

    /// A subscription's topic encodes its matcher and subscriber once each, as single
    /// segments, and its document and events say what Mercure's do.
    #[test]
    fn subscription_topics_and_documents_follow_mercure() {
        let subscriber = ActiveSubscriber::new(
            "/.well-known/mercure",
            vec![(
                MatcherType::UrlPattern,
                "https://example.com/:selector".to_owned(),
                Some(json!({"foo": "bar"})),
            )],
            false,
        );
        assert!(subscriber.id.starts_with("urn:uuid:"));
        let subscription = &subscriber.subscriptions[0];
        let encoded_id = subscriber.id.replace(':', "%3A");
        assert_eq!(
            subscription.topic,
            format!(
                "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/{encoded_id}"
            )
        );
        let document = subscription.document(true);
        assert_eq!(document["id"], json!(subscription.topic));
        assert_eq!(document["type"], "subscription");
        assert_eq!(document["match_type"], "urlpattern");
        assert_eq!(document["match"], "https://example.com/:selector");
        assert_eq!(document["subscriber"], json!(&*subscriber.id));
        assert_eq!(document["active"], true);
        assert_eq!(document["payload"], json!({"foo": "bar"}));

        let event = subscription.events(false).next().expect("the 1.0 event");
        assert!(event.private && event.repeatable_id);
        assert_eq!(event.event_type.as_deref(), Some(EVENT_TYPE));
        assert_eq!(event.topics, std::slice::from_ref(&subscription.topic));
        let data: Value = serde_json::from_str(&event.data).expect("JSON");
        assert_eq!(data["active"], false);
        assert!(event.id.is_some_and(|id| id.starts_with("urn:uuid:")));
    }

    /// `%` in a matcher is encoded like any other reserved character (once).
    #[test]
    fn a_percent_in_a_matcher_is_encoded_once() {
        assert_eq!(
            matcher_path("/h", "exact", "a%2Fb c"),
            "/h/subscriptions/exact/a%252Fb%20c"
        );
    }

    /// Filters select by matcher type and text, and by subscriber.
    #[test]
    fn filters_select_by_matcher_and_subscriber() {
        let subscriber = ActiveSubscriber::new(
            "/h",
            vec![(MatcherType::Exact, "a".to_owned(), None)],
            false,
        );
        let subscription = &subscriber.subscriptions[0];
        assert!(Filter::All.selects(subscription));
        let matcher = |t: &str, m: &str| Filter::Matcher {
            match_type: t.to_owned(),
            matcher: m.to_owned(),
        };
        assert!(matcher("exact", "a").selects(subscription));
        assert!(!matcher("urlpattern", "a").selects(subscription));
        assert!(!matcher("exact", "b").selects(subscription));
        let one = |s: &str| Filter::One {
            match_type: "exact".to_owned(),
            matcher: "a".to_owned(),
            subscriber: s.to_owned(),
        };
        assert!(one(&subscriber.id).selects(subscription));
        assert!(!one("urn:uuid:other").selects(subscription));
    }
}
