//! Mercure 1.0 on `/.well-known/mercure`, beside 0.x on the same route: `match` parameters,
//! `at+jwt` access tokens with `authorization_details`, publication rules, generated ids,
//! resume headers, active subscriptions and CORS (issue 13, /work/mercure1-interface.md).
//!
//! This file holds what every section shares (tokens, requests, assertions, subscription
//! documents); each section of the spec has its file beside it.

mod authorization;
mod coexistence;
mod cors;
mod matchers;
mod private_updates;
mod publication;
mod resume;
mod subscriptions;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::http::{StatusCode, header::HeaderMap};
use awc::ClientResponse;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use sse_hub::{
    auth::Mode,
    config::{DEFAULT_HUB_URL, Settings},
};

use crate::{
    helpers::{SseStream, TestApp, assert_json_error, query, spawn_app_with},
    mercure::{KEY, token as v0_token},
};

/// The hub's path: the default `--hub-url`'s, and the root of its reserved namespace.
pub(crate) const HUB: &str = "/.well-known/mercure";
/// The `iss` the hub is configured to trust (`--jwt-issuer`).
pub(crate) const ISSUER: &str = "https://issuer.example";
/// The `type` of a Mercure authorization detail.
const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// A topic no test treats specially.
pub(crate) const TOPIC: &str = "https://example.com/a";
/// How long the subscription API may take to forget a subscriber that left: milliseconds
/// on a quiet machine, the hub noticing the closed connection on a loaded one.
const POLL_DEADLINE: Duration = Duration::from_secs(30);

// ----------------------------------------------------------------------------- tokens

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after the epoch")
}

/// Every claim RFC 9068 requires (issued now, valid for an hour, for the default audience,
/// which is the default hub URL), with `details` as `authorization_details`.
pub(crate) fn v1_claims(details: Value) -> Value {
    static JTI: AtomicU64 = AtomicU64::new(0);
    let now = unix_now().as_secs();
    json!({
        "iss": ISSUER,
        "aud": DEFAULT_HUB_URL,
        "sub": "urn:example:user:1",
        "client_id": "https://client.example",
        "iat": now,
        "exp": now + 3600,
        "jti": format!("urn:example:jti:{}", JTI.fetch_add(1, Ordering::Relaxed)),
        "authorization_details": details,
    })
}

/// A JWS header with `typ` (`at+jwt` marks a Mercure 1.0 token).
pub(crate) fn header(alg: Algorithm, typ: &str) -> Header {
    Header {
        typ: Some(typ.to_owned()),
        ..Header::new(alg)
    }
}

/// Signs `claims` with [`KEY`] under `header`.
pub(crate) fn sign(header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(KEY.as_bytes()))
        .expect("an HMAC key signs any claims")
}

/// A valid Mercure 1.0 access token (`typ: at+jwt`, HS256 with [`KEY`]) granting `details`.
pub(crate) fn v1_token(details: Value) -> String {
    sign(&header(Algorithm::HS256, "at+jwt"), &v1_claims(details))
}

/// Like [`v1_token`], with the claims in `changes` set, or removed where their value is `null`.
fn v1_token_changed(details: Value, changes: Value) -> String {
    let mut claims = v1_claims(details);
    let claims_object = claims.as_object_mut().expect("claims are an object");
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            claims_object.remove(name);
        } else {
            claims_object.insert(name.clone(), value.clone());
        }
    }
    sign(&header(Algorithm::HS256, "at+jwt"), &claims)
}

/// `{"alg": "none", "typ": "at+jwt"}`, valid claims, and an empty signature (jsonwebtoken
/// refuses to make one).
fn v1_token_unsigned(details: Value) -> String {
    format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"at+jwt"}"#),
        base64url(v1_claims(details).to_string().as_bytes())
    )
}

/// Base64url without padding, as JWS compact serialization writes it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (i, byte)| {
            bits | (u32::from(*byte) << (16 - 8 * i))
        });
        // n bytes make n + 1 characters of 6 bits.
        for i in 0..=chunk.len() {
            let index = (bits >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// A Mercure authorization detail granting `actions` on `topics` (topic matcher objects).
pub(crate) fn grant(actions: &[&str], topics: Value) -> Value {
    json!({ "type": DETAIL_TYPE, "actions": actions, "topics": topics })
}

/// Details granting `publish` on every topic.
pub(crate) fn publish_everything() -> Value {
    json!([grant(&["publish"], json!([{ "match": "*" }]))])
}

/// A 1.0 token that may publish to every topic.
pub(crate) fn v1_publisher() -> String {
    v1_token(publish_everything())
}

/// A 1.0 token that may receive private updates on `topics` (topic matcher objects).
pub(crate) fn v1_subscriber(topics: Value) -> String {
    v1_token(json!([grant(&["subscribe"], topics)]))
}

/// A 1.0 token granting `subscribe` on `topic` with `payload` attached to the subscription.
fn v1_subscriber_with_payload(topic: &str, payload: Value) -> String {
    v1_token(json!([{
        "type": DETAIL_TYPE,
        "actions": ["subscribe"],
        "topics": [{ "match": topic }],
        "payload": payload,
    }]))
}

// ------------------------------------------------------------------- the hub, requests

/// A hub that verifies HS256 tokens with [`KEY`] and accepts 1.0 tokens from [`ISSUER`].
pub(crate) async fn v1_app() -> TestApp {
    v1_app_with(|_| {}).await
}

/// [`v1_app`] in compat mode: 0.x tokens and `topic=` beside 1.0 ones.
pub(crate) async fn v1_compat_app() -> TestApp {
    v1_app_with(|s| s.mercure_mode = Mode::Compat).await
}

pub(crate) async fn v1_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.jwt_issuer = Some(ISSUER.to_owned());
        adjust(s);
    })
    .await
}

/// An answer, read whole; an event stream's body never ends, so it is left unread (empty).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) async fn read(mut response: ClientResponse) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let is_stream = header_value(&headers, "content-type")
            .is_some_and(|value| value.starts_with("text/event-stream"));
        let body = if is_stream {
            String::new()
        } else {
            let bytes = response.body().limit(1 << 20).await.expect("a body");
            String::from_utf8(bytes.to_vec()).expect("a UTF-8 body")
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|value| value.to_str().expect("an ASCII header value"))
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The hub's path with `pairs` as its query, each value percent-encoded.
pub(crate) fn hub_path(pairs: &[(&str, &str)]) -> String {
    format!("{HUB}?{}", query(pairs))
}

pub(crate) async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = app.client.get(app.url(path));
    for header in headers {
        request = request.insert_header(*header);
    }
    Reply::read(request.send().await.expect("the GET is answered")).await
}

/// Posts an update form to the hub, with `token` as a bearer token if given.
pub(crate) async fn post_update(
    app: &TestApp,
    token: Option<&str>,
    fields: &[(&str, &str)],
) -> Reply {
    let mut request = app
        .client
        .post(app.url(HUB))
        .insert_header(("content-type", "application/x-www-form-urlencoded"));
    if let Some(token) = token {
        request = request.insert_header(("authorization", bearer(token)));
    }
    let response = request
        .send_body(query(fields))
        .await
        .expect("the publish is answered");
    Reply::read(response).await
}

/// Publishes with `token`, fails unless the hub answers 200, and returns the id it answered.
pub(crate) async fn publish(app: &TestApp, token: &str, fields: &[(&str, &str)]) -> String {
    let reply = post_update(app, Some(token), fields).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "publish {fields:?}: {}",
        reply.body
    );
    reply.body
}

/// Subscribes with `pairs` as the query and `token` as a bearer token if given; returns when
/// the subscriber is registered.
pub(crate) async fn subscribe(
    app: &TestApp,
    pairs: &[(&str, &str)],
    token: Option<&str>,
) -> SseStream {
    let path = hub_path(pairs);
    match token {
        Some(token) => {
            app.subscribe_with(&path, &[("authorization", &bearer(token))])
                .await
        }
        None => app.subscribe(&path).await,
    }
}

/// Asserts that the next event has `id` and `data`.
async fn assert_next_event(stream: &mut SseStream, id: &str, data: &str, case: &str) {
    let event = stream.next_event().await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_deref()),
        (Some(id), Some(data)),
        "{case}: {event:?}"
    );
}

// --------------------------------------------------------------------------- assertions

/// Asserts an RFC 6750 refusal: `status`, a `WWW-Authenticate: Bearer` challenge carrying
/// `error="<error>"` (or no error code at all when `error` is `None`), and a JSON error body.
pub(crate) fn assert_challenge(reply: &Reply, status: StatusCode, error: Option<&str>, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{case}: no WWW-Authenticate header"));
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "{case}: {challenge}"
    );
    match error {
        Some(code) => assert!(
            challenge.contains(&format!("error=\"{code}\"")),
            "{case}: {challenge} should carry error=\"{code}\""
        ),
        None => assert!(
            !challenge.contains("error="),
            "{case}: {challenge} should carry no error code"
        ),
    }
    assert_json_error(reply.status, &reply.body, status, "");
}

/// Asserts a JSON error reply with `status` whose message contains `needle`.
pub(crate) fn assert_refused(reply: &Reply, status: StatusCode, needle: &str, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert_json_error(reply.status, &reply.body, status, needle);
}

/// Asserts that `value` is `urn:uuid:` and a lowercase RFC 9562 UUID of `version` (its
/// variant bits `10`); returns the UUID.
fn assert_urn_uuid(value: &str, version: u8) -> &str {
    let uuid = value
        .strip_prefix("urn:uuid:")
        .unwrap_or_else(|| panic!("{value:?} is not a urn:uuid"));
    assert_eq!(uuid.len(), 36, "{value}");
    for (at, c) in uuid.char_indices() {
        if [8, 13, 18, 23].contains(&at) {
            assert_eq!(c, '-', "{value}: a hyphen at {at}");
        } else {
            assert!(
                c.is_ascii_digit() || ('a'..='f').contains(&c),
                "{value}: {c:?} is not a lowercase hex digit"
            );
        }
    }
    assert_eq!(uuid.as_bytes()[14], version, "{value}: the version");
    assert!(
        b"89ab".contains(&uuid.as_bytes()[19]),
        "{value}: the variant"
    );
    uuid
}

// ---------------------------------------------------------------- subscription documents

/// Every character but the unreserved ones (RFC 3986), as subscription topics encode.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn pct(value: &str) -> String {
    utf8_percent_encode(value, NOT_UNRESERVED).to_string()
}

/// The topic (and document id) of a subscription event.
fn subscription_topic(match_type: &str, matcher: &str, subscriber: &str) -> String {
    format!(
        "{HUB}/subscriptions/{match_type}/{}/{}",
        pct(matcher),
        pct(subscriber)
    )
}

/// The next `mercure` event about a subscription whose matcher is `matcher`, as JSON; events
/// about other subscriptions (the watcher's own among them) are skipped, anything that is not
/// a `mercure` event fails the test.
async fn next_subscription_event(stream: &mut SseStream, matcher: &str) -> Value {
    loop {
        let event = stream.next_event().await;
        assert_eq!(
            event.event.as_deref(),
            Some("mercure"),
            "only subscription events expected, got {event:?}"
        );
        let document: Value = serde_json::from_str(event.data.as_deref().unwrap_or_default())
            .expect("a subscription event's data is JSON");
        if document["match"] == matcher {
            return document;
        }
    }
}

/// Asserts a subscription document: its id is its topic, and its fields are the given ones
/// (`payload` absent when `None`); returns the subscriber.
fn assert_subscription(
    document: &Value,
    match_type: &str,
    matcher: &str,
    active: bool,
    payload: Option<&Value>,
) -> String {
    let subscriber = document["subscriber"]
        .as_str()
        .unwrap_or_else(|| panic!("no subscriber in {document}"));
    assert_urn_uuid(subscriber, b'4');
    assert_eq!(
        document["id"],
        subscription_topic(match_type, matcher, subscriber),
        "{document}"
    );
    assert_eq!(document["type"], "subscription", "{document}");
    assert_eq!(document["match_type"], match_type, "{document}");
    assert_eq!(document["match"], matcher, "{document}");
    assert_eq!(document["active"], active, "{document}");
    assert_eq!(document.get("payload"), payload, "{document}");
    subscriber.to_owned()
}

/// GETs a subscription API path with `token`, asserting 200, `Content-Type: application/json`
/// and the `rel="mercure"` Link header with its `last-event-id` cursor; returns the JSON.
async fn api_get(app: &TestApp, path: &str, token: &str) -> Value {
    let reply = get(app, path, &[("authorization", &bearer(token))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {content_type}"
    );
    let link = reply.header("link").unwrap_or_default();
    for part in [
        format!("<{DEFAULT_HUB_URL}>"),
        "rel=\"mercure\"".to_owned(),
        "last-event-id=\"".to_owned(),
    ] {
        assert!(link.contains(&part), "{path}: Link {link:?} lacks {part}");
    }
    serde_json::from_str(&reply.body).expect("the API answers JSON")
}

/// The `(match_type, match)` pairs of a collection's subscriptions, sorted.
fn matchers_of(collection: &Value) -> Vec<(String, String)> {
    let mut matchers: Vec<(String, String)> = collection["subscriptions"]
        .as_array()
        .unwrap_or_else(|| panic!("no subscriptions array in {collection}"))
        .iter()
        .map(|s| {
            (
                s["match_type"].as_str().unwrap_or_default().to_owned(),
                s["match"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    matchers.sort();
    matchers
}
