//! Mercure 1.0 on `/.well-known/mercure`, beside 0.x on the same route: `match` parameters,
//! `at+jwt` access tokens with `authorization_details`, publication rules, generated ids,
//! resume headers, active subscriptions and CORS (issue 13, /work/mercure1-interface.md).

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
/// How long the subscription API may take to forget a subscriber that left.
const POLL_DEADLINE: Duration = Duration::from_secs(5);

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

// ---------------------------------------------------------------- 0.x and 1.0 together

/// A 0.x subscriber (`topic=`) and a 1.0 subscriber (`match=`) on one hub receive the same
/// public update: the same id and the same data.
#[actix_web::test]
async fn v0_and_v1_subscribers_receive_the_same_public_update() {
    // Arrange
    let app = v1_compat_app().await;
    let topic = "https://example.com/books/1";
    let mut v0 = app.subscribe(&hub_path(&[("topic", topic)])).await;
    let mut v1 = subscribe(&app, &[("match", topic)], None).await;

    // Act
    let id = publish(&app, &v1_publisher(), &[("topic", topic), ("data", "both")]).await;

    // Assert
    assert_next_event(&mut v0, &id, "both", "0.x subscriber").await;
    assert_next_event(&mut v1, &id, "both", "1.0 subscriber").await;
}

/// A 0.x token (`mercure.publish`) and a 1.0 token (`authorization_details`) both publish on
/// one hub, and a subscriber receives both updates in order.
#[actix_web::test]
async fn v0_and_v1_tokens_both_publish() {
    // Arrange
    let app = v1_compat_app().await;
    let mut subscriber = subscribe(&app, &[("match", TOPIC)], None).await;

    // Act
    let from_v0 = publish(
        &app,
        &v0_token(&["*"], &[]),
        &[("topic", TOPIC), ("data", "0.x")],
    )
    .await;
    let from_v1 = publish(&app, &v1_publisher(), &[("topic", TOPIC), ("data", "1.0")]).await;

    // Assert
    assert_next_event(&mut subscriber, &from_v0, "0.x", "0.x token").await;
    assert_next_event(&mut subscriber, &from_v1, "1.0", "1.0 token").await;
}

// ----------------------------------------------------------------------------- matchers

/// `match_urlpattern=https://example.com/books/:id` receives `.../books/1` but not
/// `.../books/1/x`: `:id` is one path segment.
#[actix_web::test]
async fn urlpattern_matcher_matches_one_segment_not_deeper_paths() {
    // Arrange
    let app = v1_app().await;
    let mut subscriber = subscribe(
        &app,
        &[("match_urlpattern", "https://example.com/books/:id")],
        None,
    )
    .await;
    let publisher = v1_publisher();

    // Act
    publish(
        &app,
        &publisher,
        &[
            ("topic", "https://example.com/books/1/x"),
            ("data", "deeper"),
        ],
    )
    .await;
    let book = publish(
        &app,
        &publisher,
        &[("topic", "https://example.com/books/1"), ("data", "book")],
    )
    .await;

    // Assert: events keep their order, so the second arriving first proves the first was not sent.
    assert_next_event(&mut subscriber, &book, "book", "books/1").await;
}

/// `match=` compares bytes: the template text `https://example.com/books/{id}` is a literal
/// topic, not expanded; `match_exact=` is the same matcher spelled out.
#[actix_web::test]
async fn exact_matcher_takes_a_template_text_literally() {
    // Arrange
    let app = v1_app().await;
    let template = "https://example.com/books/{id}";
    let mut bare = subscribe(&app, &[("match", template)], None).await;
    let mut explicit = subscribe(&app, &[("match_exact", template)], None).await;
    let publisher = v1_publisher();

    // Act
    publish(
        &app,
        &publisher,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "expanded"),
        ],
    )
    .await;
    let literal = publish(
        &app,
        &publisher,
        &[("topic", template), ("data", "literal")],
    )
    .await;

    // Assert
    assert_next_event(&mut bare, &literal, "literal", "match=").await;
    assert_next_event(&mut explicit, &literal, "literal", "match_exact=").await;
}

/// `match=*` receives every public update, whatever its topic: absolute, a URN, relative.
#[actix_web::test]
async fn star_matcher_receives_every_public_update() {
    // Arrange
    let app = v1_app().await;
    let mut subscriber = subscribe(&app, &[("match", "*")], None).await;
    let publisher = v1_publisher();
    let topics = ["https://example.com/x", "urn:example:y", "relative/z"];

    // Act
    let mut ids = Vec::new();
    for topic in topics {
        ids.push(publish(&app, &publisher, &[("topic", topic), ("data", topic)]).await);
    }

    // Assert
    for (id, topic) in ids.iter().zip(topics) {
        assert_next_event(&mut subscriber, id, topic, topic).await;
    }
}

/// Refused with 400 and a JSON error: parameter names in the reserved `match` namespace that
/// name no supported matcher (named in the error, even beside a valid `match`), matcher values
/// with control or format characters, an invalid URL pattern, `topic` mixed with `match`, and
/// no matcher at all.
#[actix_web::test]
async fn malformed_subscribe_requests_are_refused() {
    // Arrange
    let app = v1_app().await;
    let valid = ("match", TOPIC);
    let cases: [(&str, String, &str); 13] = [
        (
            "unknown matcher type",
            hub_path(&[valid, ("matchfoo", "x")]),
            "matchfoo",
        ),
        (
            "reserved name in upper case",
            hub_path(&[valid, ("MATCH", "x")]),
            "MATCH",
        ),
        (
            "unsupported matcher type",
            hub_path(&[valid, ("match_regex", "x")]),
            "match_regex",
        ),
        (
            "C0 control U+0007",
            hub_path(&[("match", "https://example.com/\u{7}")]),
            "",
        ),
        (
            "C1 control U+0085",
            hub_path(&[("match", "https://example.com/\u{85}")]),
            "",
        ),
        (
            "U+007F",
            hub_path(&[("match", "https://example.com/\u{7F}")]),
            "",
        ),
        (
            "format character U+200B",
            hub_path(&[("match", "https://example.com/\u{200B}")]),
            "",
        ),
        (
            "format character U+FEFF",
            hub_path(&[("match_exact", "\u{FEFF}https://example.com/")]),
            "",
        ),
        (
            "format character U+00AD in a URL pattern",
            hub_path(&[("match_urlpattern", "https://example.com/\u{AD}:id")]),
            "",
        ),
        (
            "invalid URL pattern",
            hub_path(&[("match_urlpattern", "https://e.com/(")]),
            "",
        ),
        (
            "topic and match mixed",
            hub_path(&[("topic", "a"), ("match", "b")]),
            "",
        ),
        ("no matcher", HUB.to_owned(), ""),
        (
            "no matcher, only a resume id",
            hub_path(&[("last_event_id", "earliest")]),
            "",
        ),
    ];

    for (case, path, needle) in cases {
        // Act
        let reply = get(&app, &path, &[]).await;

        // Assert
        assert_refused(&reply, StatusCode::BAD_REQUEST, needle, case);
    }
}

// ------------------------------------------------------------------------ token checks

/// A 1.0 token failing any check is refused with 401 `error="invalid_token"`, on publish and
/// on subscribe: issuer wrong or missing, audience wrong, `exp` missing or past, `nbf` ahead,
/// another algorithm or `none`, another key, and a malformed Mercure authorization detail
/// even beside a valid one (no partial acceptance). The same token without the defect publishes.
#[actix_web::test]
async fn invalid_v1_tokens_are_refused_with_invalid_token() {
    // Arrange
    let app = v1_app().await;
    let now = unix_now().as_secs();
    let changed = |changes: Value| v1_token_changed(publish_everything(), changes);
    // The valid detail first: a hub acting on it alone would accept the token.
    let beside_valid =
        |bad: Value| v1_token(json!([grant(&["publish"], json!([{ "match": "*" }])), bad]));
    let detail = |fields: Value| {
        let mut detail = json!({ "type": DETAIL_TYPE });
        for (name, value) in fields.as_object().expect("fields are an object") {
            detail[name] = value.clone();
        }
        detail
    };
    let any = || json!([{ "match": "https://example.com/a" }]);
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong iss",
            changed(json!({ "iss": "https://other.example" })),
        ),
        ("no iss", changed(json!({ "iss": null }))),
        (
            "wrong aud",
            changed(json!({ "aud": "https://other.example/.well-known/mercure" })),
        ),
        (
            "aud array without the hub",
            changed(json!({ "aud": ["https://other.example/.well-known/mercure"] })),
        ),
        ("no exp", changed(json!({ "exp": null }))),
        ("expired", changed(json!({ "exp": now - 60 }))),
        ("nbf ahead", changed(json!({ "nbf": now + 60 }))),
        (
            "alg HS512",
            sign(
                &header(Algorithm::HS512, "at+jwt"),
                &v1_claims(publish_everything()),
            ),
        ),
        ("alg none", v1_token_unsigned(publish_everything())),
        (
            "another key",
            jsonwebtoken::encode(
                &header(Algorithm::HS256, "at+jwt"),
                &v1_claims(publish_everything()),
                &EncodingKey::from_secret(b"another key"),
            )
            .expect("signs"),
        ),
        (
            "unknown match_type",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": [{ "match": "https://example.com/a", "match_type": "regex" }],
            }))),
        ),
        (
            "topic matcher not an object",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": ["https://example.com/a"],
            }))),
        ),
        (
            "topic matcher without match",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": [{ "match_type": "exact" }],
            }))),
        ),
        (
            "no actions",
            beside_valid(detail(json!({ "topics": any() }))),
        ),
        (
            "empty actions",
            beside_valid(detail(json!({ "actions": [], "topics": any() }))),
        ),
        (
            "non-string action",
            beside_valid(detail(json!({ "actions": [1], "topics": any() }))),
        ),
        (
            "no topics",
            beside_valid(detail(json!({ "actions": ["publish"] }))),
        ),
        (
            "empty topics",
            beside_valid(detail(json!({ "actions": ["publish"], "topics": [] }))),
        ),
        (
            "invalid URL pattern in a detail",
            beside_valid(detail(json!({
                "actions": ["publish"],
                "topics": [{ "match": "https://e.com/(", "match_type": "urlpattern" }],
            }))),
        ),
        (
            "payload not an object",
            beside_valid(detail(json!({
                "actions": ["subscribe"],
                "topics": any(),
                "payload": "not an object",
            }))),
        ),
        (
            "authorization_details not an array",
            v1_token(grant(&["publish"], json!([{ "match": "*" }]))),
        ),
    ];
    let control = post_update(&app, Some(&v1_publisher()), &[("topic", TOPIC)]).await;
    assert_eq!(control.status, StatusCode::OK, "control: {}", control.body);

    for (case, token) in &cases {
        // Act
        let published = post_update(&app, Some(token), &[("topic", TOPIC), ("data", case)]).await;
        let subscribed = get(
            &app,
            &hub_path(&[("match", "*")]),
            &[("authorization", &bearer(token))],
        )
        .await;

        // Assert
        let status = StatusCode::UNAUTHORIZED;
        assert_challenge(
            &published,
            status,
            Some("invalid_token"),
            &format!("publish, {case}"),
        );
        assert_challenge(
            &subscribed,
            status,
            Some("invalid_token"),
            &format!("subscribe, {case}"),
        );
    }
}

/// Well-formed variations of a 1.0 token publish: `aud` as an array containing the hub's
/// audience, `typ` spelled `application/AT+JWT`, and an unknown action beside `publish` with a
/// detail of another type (both ignored).
#[actix_web::test]
async fn valid_v1_token_variants_are_accepted() {
    // Arrange
    let app = v1_app().await;
    let cases = [
        (
            "aud array containing the hub",
            v1_token_changed(
                publish_everything(),
                json!({ "aud": ["https://other.example", DEFAULT_HUB_URL] }),
            ),
        ),
        (
            "typ application/AT+JWT",
            sign(
                &header(Algorithm::HS256, "application/AT+JWT"),
                &v1_claims(publish_everything()),
            ),
        ),
        (
            "unknown action and a foreign detail",
            v1_token(json!([
                { "type": "https://other.example/detail", "anything": [1, 2] },
                grant(&["publish", "archive"], json!([{ "match": "*", "match_type": "exact" }])),
            ])),
        ),
    ];

    for (case, token) in cases {
        // Act
        let reply = post_update(&app, Some(&token), &[("topic", TOPIC), ("data", case)]).await;

        // Assert
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.body);
        assert!(!reply.body.is_empty(), "{case}: the id");
    }
}

/// A token whose `typ` is `JWT` is a 0.x token even with 1.0 claims: without a `mercure` claim
/// it grants nothing, so its publish is refused 403 `insufficient_scope` and not delivered.
#[actix_web::test]
async fn jwt_typ_token_without_mercure_claim_grants_nothing() {
    // Arrange
    let app = v1_compat_app().await;
    let mut subscriber = subscribe(&app, &[("match", "*")], None).await;
    let token = sign(
        &header(Algorithm::HS256, "JWT"),
        &v1_claims(publish_everything()),
    );

    // Act
    let reply = post_update(&app, Some(&token), &[("topic", TOPIC), ("data", "refused")]).await;

    // Assert
    assert_challenge(
        &reply,
        StatusCode::FORBIDDEN,
        Some("insufficient_scope"),
        "typ JWT",
    );
    let marker = publish(
        &app,
        &v1_publisher(),
        &[("topic", TOPIC), ("data", "after")],
    )
    .await;
    assert_next_event(
        &mut subscriber,
        &marker,
        "after",
        "the refused update is not sent",
    )
    .await;
}

/// A hub without `--jwt-issuer` refuses every `at+jwt` token with 401 `invalid_token`, on
/// publish and subscribe; 0.x tokens keep working there (in compat mode).
#[actix_web::test]
async fn hub_without_issuer_refuses_every_v1_token() {
    // Arrange
    let app = spawn_app_with(|s| {
        s.jwt_key = Some(KEY.to_owned());
        s.mercure_mode = Mode::Compat;
    })
    .await;
    let cases = [
        ("typ at+jwt", v1_publisher()),
        (
            "typ application/at+jwt",
            sign(
                &header(Algorithm::HS256, "application/at+jwt"),
                &v1_claims(publish_everything()),
            ),
        ),
    ];

    for (case, token) in cases {
        // Act
        let published = post_update(&app, Some(&token), &[("topic", TOPIC)]).await;
        let subscribed = get(
            &app,
            &hub_path(&[("match", "*")]),
            &[("authorization", &bearer(&token))],
        )
        .await;

        // Assert
        let status = StatusCode::UNAUTHORIZED;
        assert_challenge(
            &published,
            status,
            Some("invalid_token"),
            &format!("publish, {case}"),
        );
        assert_challenge(
            &subscribed,
            status,
            Some("invalid_token"),
            &format!("subscribe, {case}"),
        );
    }
    publish(&app, &v0_token(&["*"], &[]), &[("topic", TOPIC)]).await;
}

/// Publishing without a token is 401 with a bare `WWW-Authenticate: Bearer` challenge: no
/// error code, since no token was presented.
#[actix_web::test]
async fn publish_without_token_is_challenged_without_error_code() {
    // Arrange
    let app = v1_app().await;

    // Act
    let reply = post_update(&app, None, &[("topic", TOPIC)]).await;

    // Assert
    assert_challenge(&reply, StatusCode::UNAUTHORIZED, None, "no token");
}

/// An `Authorization` header that is not `Bearer <token>` is 400 with
/// `error="invalid_request"`, on publish and on subscribe.
#[actix_web::test]
async fn malformed_authorization_header_is_an_invalid_request() {
    // Arrange
    let app = v1_app().await;
    let basic = [("authorization", "Basic dXNlcjpwYXNz")];

    // Act
    let mut request = app
        .client
        .post(app.url(HUB))
        .insert_header(("content-type", "application/x-www-form-urlencoded"));
    for header in basic {
        request = request.insert_header(header);
    }
    let published = Reply::read(
        request
            .send_body(query(&[("topic", TOPIC)]))
            .await
            .expect("answered"),
    )
    .await;
    let subscribed = get(&app, &hub_path(&[("match", "*")]), &basic).await;

    // Assert
    let status = StatusCode::BAD_REQUEST;
    assert_challenge(&published, status, Some("invalid_request"), "publish");
    assert_challenge(&subscribed, status, Some("invalid_request"), "subscribe");
}

/// A token granting `publish` only on the URL pattern `https://example.com/a/:x` publishes to
/// `https://example.com/a/1`, but `https://example.com/b` is refused 403 `insufficient_scope`
/// and not delivered; a `subscribe`-only grant on `*` does not publish either.
#[actix_web::test]
async fn publish_outside_the_granted_topics_is_forbidden_and_not_delivered() {
    // Arrange
    let app = v1_app().await;
    let mut subscriber = subscribe(&app, &[("match", "*")], None).await;
    let narrow = v1_token(json!([grant(
        &["publish"],
        json!([{ "match": "https://example.com/a/:x", "match_type": "urlpattern" }])
    )]));
    let subscribe_only = v1_subscriber(json!([{ "match": "*" }]));

    // Act
    let outside = post_update(
        &app,
        Some(&narrow),
        &[("topic", "https://example.com/b"), ("data", "refused")],
    )
    .await;
    let not_publish = post_update(
        &app,
        Some(&subscribe_only),
        &[("topic", "https://example.com/a/1"), ("data", "refused")],
    )
    .await;
    let inside = publish(
        &app,
        &narrow,
        &[("topic", "https://example.com/a/1"), ("data", "allowed")],
    )
    .await;

    // Assert
    let forbidden = StatusCode::FORBIDDEN;
    let scope = Some("insufficient_scope");
    assert_challenge(&outside, forbidden, scope, "topic outside the pattern");
    assert_challenge(&not_publish, forbidden, scope, "subscribe-only grant");
    assert_next_event(&mut subscriber, &inside, "allowed", "only the allowed one").await;
}

/// An update needs `publish` on every one of its topics: a token granting one of two is
/// refused 403 `insufficient_scope` whichever comes first, and the update reaches nobody.
#[actix_web::test]
async fn publish_needs_a_grant_for_every_topic() {
    // Arrange
    let app = v1_app().await;
    let mut subscriber = subscribe(&app, &[("match", TOPIC)], None).await;
    let one_topic = v1_token(json!([grant(&["publish"], json!([{ "match": TOPIC }]))]));
    let other = "https://example.com/not-granted";

    for (case, topics) in [
        ("granted topic first", [TOPIC, other]),
        ("granted topic second", [other, TOPIC]),
    ] {
        // Act
        let reply = post_update(
            &app,
            Some(&one_topic),
            &[("topic", topics[0]), ("topic", topics[1]), ("data", case)],
        )
        .await;

        // Assert
        assert_challenge(
            &reply,
            StatusCode::FORBIDDEN,
            Some("insufficient_scope"),
            case,
        );
    }
    let allowed = publish(&app, &one_topic, &[("topic", TOPIC), ("data", "granted")]).await;
    assert_next_event(
        &mut subscriber,
        &allowed,
        "granted",
        "refused ones not sent",
    )
    .await;
}

// ----------------------------------------------------------------------- private updates

const CANONICAL: &str = "https://example.com/books/1";
const ALTERNATE: &str = "https://example.com/users/42/books/1";

/// Tokens granting `subscribe` on the private update's canonical topic, and on its alternate
/// topic through a URL pattern.
fn granted_tokens() -> [(&'static str, String); 2] {
    [
        ("canonical", v1_subscriber(json!([{ "match": CANONICAL }]))),
        (
            "alternate",
            v1_subscriber(json!([{
                "match": "https://example.com/users/42/*",
                "match_type": "urlpattern",
            }])),
        ),
    ]
}

/// Tokens that must not see the private update: none, a grant on other topics, and a
/// `publish`-only grant on its canonical topic.
fn refused_tokens() -> [(&'static str, Option<String>); 3] {
    [
        ("anonymous", None),
        (
            "other topics",
            Some(v1_subscriber(json!([{
                "match": "https://example.com/orders/:id",
                "match_type": "urlpattern",
            }]))),
        ),
        (
            "publish-only",
            Some(v1_token(json!([grant(
                &["publish"],
                json!([{ "match": CANONICAL }])
            )]))),
        ),
    ]
}

/// Publishes the private update on both topics, then a public one; returns their ids.
async fn publish_private_then_public(app: &TestApp) -> (String, String) {
    let publisher = v1_publisher();
    let private = publish(
        app,
        &publisher,
        &[
            ("topic", CANONICAL),
            ("topic", ALTERNATE),
            ("data", "secret"),
            ("private", "on"),
        ],
    )
    .await;
    let public = publish(app, &publisher, &[("topic", CANONICAL), ("data", "public")]).await;
    (private, public)
}

/// Live, a private update reaches the subscribers whose token grants `subscribe` on its
/// canonical or its alternate topic, and no one else: not anonymous subscribers, not grants on
/// other topics, not a `publish`-only grant on its topic.
#[actix_web::test]
async fn private_update_reaches_only_subscribers_granted_one_of_its_topics() {
    // Arrange
    let app = v1_app().await;
    let all = [("match", "*")];
    let mut granted = Vec::new();
    for (case, token) in granted_tokens() {
        granted.push((case, subscribe(&app, &all, Some(&token)).await));
    }
    let mut refused = Vec::new();
    for (case, token) in refused_tokens() {
        refused.push((case, subscribe(&app, &all, token.as_deref()).await));
    }

    // Act
    let (private, public) = publish_private_then_public(&app).await;

    // Assert
    for (case, stream) in &mut granted {
        assert_next_event(stream, &private, "secret", case).await;
        assert_next_event(stream, &public, "public", case).await;
    }
    // Order is kept, so the public update first proves the private one was skipped.
    for (case, stream) in &mut refused {
        assert_next_event(stream, &public, "public", case).await;
    }
}

/// On replay (`last_event_id` from before it), a private update reaches exactly the same
/// subscribers as live: those granted one of its topics.
#[actix_web::test]
async fn private_update_on_replay_reaches_only_granted_subscribers() {
    // Arrange
    let app = v1_app().await;
    let start = publish(&app, &v1_publisher(), &[("topic", TOPIC)]).await;
    let (private, public) = publish_private_then_public(&app).await;
    let resume = [("match", "*"), ("last_event_id", start.as_str())];

    for (case, token) in granted_tokens() {
        // Act
        let mut stream = subscribe(&app, &resume, Some(&token)).await;

        // Assert
        assert_next_event(&mut stream, &private, "secret", case).await;
        assert_next_event(&mut stream, &public, "public", case).await;
    }
    for (case, token) in refused_tokens() {
        let mut stream = subscribe(&app, &resume, token.as_deref()).await;
        assert_next_event(&mut stream, &public, "public", case).await;
    }
}

// ------------------------------------------------------------------------- publication

/// For a 1.0 and a 0.x token both granted `*`, these are refused 400 with a JSON error and
/// never delivered: a topic `*`; a topic in the reserved namespace (the hub's path, relative,
/// on another host with `%6D` for `m`, through `..`, as an alternate topic); `type=mercure`;
/// an id starting with `#`, the id `earliest`, an id with U+200B; a control or format
/// character in a topic or type; a retry that is not all digits.
#[actix_web::test]
async fn publication_rules_refuse_reserved_and_malformed_fields() {
    // Arrange
    let app = v1_compat_app().await;
    let mut subscriber = subscribe(&app, &[("match", "*")], None).await;
    let cases: [(&str, &[(&str, &str)]); 16] = [
        ("topic *", &[("topic", "*")]),
        ("alternate topic *", &[("topic", TOPIC), ("topic", "*")]),
        ("the hub's path", &[("topic", "/.well-known/mercure")]),
        (
            "relative reserved topic",
            &[("topic", "/.well-known/mercure/subscriptions/x")],
        ),
        (
            "reserved path on another host, %6D for m",
            &[("topic", "https://other.example/.well-known/%6Dercure/x")],
        ),
        (
            "reserved path through a dot segment",
            &[("topic", "/a/../.well-known/mercure/y")],
        ),
        (
            "reserved alternate topic",
            &[
                ("topic", TOPIC),
                ("topic", "/.well-known/mercure/subscriptions/x"),
            ],
        ),
        ("type mercure", &[("topic", TOPIC), ("type", "mercure")]),
        ("id starting with #", &[("topic", TOPIC), ("id", "#1")]),
        ("id earliest", &[("topic", TOPIC), ("id", "earliest")]),
        ("id with U+200B", &[("topic", TOPIC), ("id", "a\u{200B}b")]),
        (
            "topic with U+00AD",
            &[("topic", "https://example.com/\u{AD}a")],
        ),
        ("type with U+0007", &[("topic", TOPIC), ("type", "a\u{7}b")]),
        (
            "type with U+FEFF",
            &[("topic", TOPIC), ("type", "\u{FEFF}t")],
        ),
        ("retry 1.5", &[("topic", TOPIC), ("retry", "1.5")]),
        ("retry -1", &[("topic", TOPIC), ("retry", "-1")]),
    ];

    for (kind, token) in [("1.0", v1_publisher()), ("0.x", v0_token(&["*"], &[]))] {
        for (case, fields) in cases {
            // Act
            let mut fields = fields.to_vec();
            fields.push(("data", "refused"));
            let reply = post_update(&app, Some(&token), &fields).await;

            // Assert
            let case = format!("{kind} token, {case}");
            assert_refused(&reply, StatusCode::BAD_REQUEST, "", &case);
        }
    }
    let marker = publish(
        &app,
        &v1_publisher(),
        &[("topic", TOPIC), ("data", "after")],
    )
    .await;
    assert_next_event(
        &mut subscriber,
        &marker,
        "after",
        "nothing refused was sent",
    )
    .await;
}

/// Without an `id`, the hub generates `urn:uuid:` + a version-7 UUID (its timestamp now), answers
/// 200 `text/plain; charset=utf-8` with the id as the whole body, and sends it as the event id;
/// a given id is echoed and used as is.
#[actix_web::test]
async fn generated_id_is_a_uuid_v7_urn_and_a_given_id_is_echoed() {
    // Arrange
    let app = v1_app().await;
    let mut subscriber = subscribe(&app, &[("match", TOPIC)], None).await;
    let publisher = v1_publisher();
    let given = "urn:example:given-1";

    // Act
    let first = post_update(&app, Some(&publisher), &[("topic", TOPIC), ("data", "1")]).await;
    let second = post_update(&app, Some(&publisher), &[("topic", TOPIC), ("data", "2")]).await;
    let echoed = post_update(
        &app,
        Some(&publisher),
        &[("topic", TOPIC), ("data", "3"), ("id", given)],
    )
    .await;

    // Assert
    let now_ms = unix_now().as_millis();
    for reply in [&first, &second, &echoed] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            reply
                .header("content-type")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
    for reply in [&first, &second] {
        let uuid = assert_urn_uuid(&reply.body, b'7');
        // The first 48 bits are the Unix time in milliseconds.
        let hex: String = uuid[..13].chars().filter(|c| *c != '-').collect();
        let millis = u128::from_str_radix(&hex, 16).expect("hex digits");
        assert!(
            now_ms.abs_diff(millis) < 60_000,
            "{uuid}: timestamp {millis} ms, now {now_ms} ms"
        );
    }
    assert_ne!(first.body, second.body, "generated ids are unique");
    assert_eq!(echoed.body, given);
    assert_next_event(&mut subscriber, &first.body, "1", "first").await;
    assert_next_event(&mut subscriber, &second.body, "2", "second").await;
    assert_next_event(&mut subscriber, given, "3", "given id").await;
}

// ---------------------------------------------------------------------- ids and resuming

/// On the Mercure route a repeated id is accepted (200 both times), and resuming from it starts
/// after its FIRST occurrence: the events between and the second `dup` are sent.
#[actix_web::test]
async fn resuming_from_a_repeated_id_starts_after_its_first_occurrence() {
    // Arrange
    let app = v1_app().await;
    let publisher = v1_publisher();
    let sent = [
        ("dup", "first"),
        ("mid", "between"),
        ("dup", "second"),
        ("last", "after"),
    ];
    for (id, data) in sent {
        let reply = post_update(
            &app,
            Some(&publisher),
            &[("topic", TOPIC), ("id", id), ("data", data)],
        )
        .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, id),
            "{data}"
        );
    }

    // Act
    let mut resumed = app
        .subscribe_with(&hub_path(&[("match", TOPIC)]), &[("last-event-id", "dup")])
        .await;

    // Assert
    assert_eq!(
        header_value(resumed.headers(), "mercure-last-event-id"),
        Some("dup")
    );
    for (id, data) in &sent[1..] {
        assert_next_event(&mut resumed, id, data, data).await;
    }
}

/// The quick-start `POST /publish` keeps its rules: decimal ids, and a repeated id (its own, or
/// one first published on the Mercure route) is refused 409.
#[actix_web::test]
async fn quick_start_publish_still_refuses_a_repeated_id() {
    // Arrange
    let app = v1_app().await;
    let token = v0_token(&["*"], &[]);
    let quick_publish = async |query: &str| {
        let response = app
            .client
            .post(app.url(&format!("/publish?{query}")))
            .insert_header(("authorization", bearer(&token)))
            .send_body("quick")
            .await
            .expect("the publish is answered");
        Reply::read(response).await
    };
    publish(&app, &v1_publisher(), &[("topic", TOPIC), ("id", "dup")]).await;

    // Act
    let first = quick_publish("topic=a").await;
    let repeated_own = quick_publish(&format!("topic=a&id={}", first.body)).await;
    let repeated_mercure = quick_publish("topic=a&id=dup").await;

    // Assert
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(
        !first.body.is_empty() && first.body.bytes().all(|b| b.is_ascii_digit()),
        "a decimal id: {}",
        first.body
    );
    let conflict = StatusCode::CONFLICT;
    let needle = "already in the history";
    assert_refused(&repeated_own, conflict, needle, "its own id");
    assert_refused(&repeated_mercure, conflict, needle, "a Mercure route id");
}

/// A 1.0 request with a resume id gets `Mercure-Last-Event-ID`: that id when it is in the
/// history (replay then starts after it), else `earliest` (unknown id, `earliest` itself, an
/// empty history); the `Last-Event-ID` header wins over the query, `lastEventID` is read too,
/// and without a resume id there is no such header.
#[actix_web::test]
async fn v1_resume_header_names_the_requested_id_or_earliest() {
    // Arrange
    let app = v1_app().await;
    let publisher = v1_publisher();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            publish(
                &app,
                &publisher,
                &[("topic", TOPIC), ("data", &n.to_string())],
            )
            .await,
        );
    }
    // (case, resume pairs in the query, `Last-Event-ID` header, expected response header,
    // index of the first event replayed)
    let cases = [
        (
            "known id in the query",
            vec![("last_event_id", ids[0].as_str())],
            None,
            Some(ids[0].as_str()),
            Some(1),
        ),
        (
            "known id in lastEventID",
            vec![("lastEventID", ids[1].as_str())],
            None,
            Some(ids[1].as_str()),
            Some(2),
        ),
        (
            "header over query",
            vec![("last_event_id", ids[0].as_str())],
            Some(ids[1].as_str()),
            Some(ids[1].as_str()),
            Some(2),
        ),
        (
            "unknown id",
            vec![("last_event_id", "never-published")],
            None,
            Some("earliest"),
            None,
        ),
        (
            "earliest",
            vec![],
            Some("earliest"),
            Some("earliest"),
            Some(0),
        ),
        ("no resume id", vec![], None, None, None),
    ];

    for (case, resume, header, expected, replay_from) in cases {
        // Act
        let mut pairs = vec![("match", TOPIC)];
        pairs.extend(resume);
        let headers: Vec<(&str, &str)> =
            header.map(|id| ("last-event-id", id)).into_iter().collect();
        let mut stream = app.subscribe_with(&hub_path(&pairs), &headers).await;

        // Assert
        assert_eq!(
            header_value(stream.headers(), "mercure-last-event-id"),
            expected,
            "{case}"
        );
        if let Some(next) = replay_from {
            assert_next_event(&mut stream, &ids[next], &next.to_string(), case).await;
        }
    }
    let empty = v1_app().await;
    let stream = empty
        .subscribe_with(
            &hub_path(&[("match", TOPIC), ("last_event_id", &ids[0])]),
            &[],
        )
        .await;
    assert_eq!(
        header_value(stream.headers(), "mercure-last-event-id"),
        Some("earliest"),
        "empty history"
    );
}

/// A 0.x request always gets `Last-Event-ID`: with a known resume id, that id (not the
/// newest), with an unknown one `earliest`, and without one the newest id in the history.
#[actix_web::test]
async fn v0_resume_header_names_the_requested_id_or_the_newest() {
    // Arrange
    let app = v1_compat_app().await;
    let publisher = v1_publisher();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            publish(
                &app,
                &publisher,
                &[("topic", TOPIC), ("data", &n.to_string())],
            )
            .await,
        );
    }
    let path = hub_path(&[("topic", TOPIC)]);

    // Act
    let mut from_first = app
        .subscribe_with(&path, &[("last-event-id", &ids[0])])
        .await;
    let unknown = app
        .subscribe_with(&path, &[("last-event-id", "never-published")])
        .await;
    let fresh = app.subscribe(&path).await;

    // Assert
    let last_event_id =
        |stream: &SseStream| header_value(stream.headers(), "last-event-id").map(str::to_owned);
    assert_eq!(
        last_event_id(&from_first).as_ref(),
        Some(&ids[0]),
        "known id"
    );
    assert_next_event(&mut from_first, &ids[1], "1", "replay after the known id").await;
    assert_eq!(
        last_event_id(&unknown).as_deref(),
        Some("earliest"),
        "unknown id"
    );
    assert_eq!(
        last_event_id(&fresh).as_ref(),
        Some(&ids[2]),
        "no resume id"
    );
}

// ------------------------------------------------------------------ active subscriptions

/// With active subscriptions on, a subscriber routing `match=*` with a `subscribe` grant on `*`
/// gets a `mercure` event when another connects with `match=https://example.com/x` (id = topic,
/// type, match_type, match, a `urn:uuid` v4 subscriber, active, the payload of that token's
/// matching detail), and one with `active: false` when it leaves; an anonymous subscriber
/// gets neither.
#[actix_web::test]
async fn subscription_events_announce_connect_and_disconnect() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let matcher = "https://example.com/x";
    let mut anonymous = subscribe(&app, &[("match", "*")], None).await;
    let mut watcher = subscribe(
        &app,
        &[("match", "*")],
        Some(&v1_subscriber(json!([{ "match": "*" }]))),
    )
    .await;
    let ann_token = v1_subscriber_with_payload(matcher, json!({ "name": "ann" }));
    let payload = json!({ "name": "ann" });

    // Act
    let ann = subscribe(&app, &[("match", matcher)], Some(&ann_token)).await;
    let connected = next_subscription_event(&mut watcher, matcher).await;
    drop(ann);
    let disconnected = next_subscription_event(&mut watcher, matcher).await;

    // Assert
    let subscriber = assert_subscription(&connected, "exact", matcher, true, Some(&payload));
    assert_eq!(disconnected["active"], false, "{disconnected}");
    assert_eq!(disconnected["subscriber"], subscriber.as_str());
    assert_eq!(disconnected["id"], connected["id"]);
    let marker = publish(&app, &v1_publisher(), &[("topic", TOPIC), ("data", "m")]).await;
    assert_next_event(
        &mut anonymous,
        &marker,
        "m",
        "anonymous got no mercure event",
    )
    .await;
}

/// A subscriber routing and granted by the relative URL pattern
/// `/.well-known/mercure/subscriptions/:type/:match/:sub` gets the events of a `urlpattern`
/// subscription made without a token (no payload); a token granting other topics gets none
/// though it routes the same pattern.
#[actix_web::test]
async fn subscription_events_match_a_relative_url_pattern() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let pattern = "/.well-known/mercure/subscriptions/:type/:match/:sub";
    let matcher = "https://example.com/books/:id";
    let mut watcher = subscribe(
        &app,
        &[("match_urlpattern", pattern)],
        Some(&v1_subscriber(
            json!([{ "match": pattern, "match_type": "urlpattern" }]),
        )),
    )
    .await;
    let mut not_granted = subscribe(
        &app,
        &[("match_urlpattern", pattern), ("match", TOPIC)],
        Some(&v1_subscriber(
            json!([{ "match": "https://example.com/other" }]),
        )),
    )
    .await;

    // Act
    let bob = subscribe(&app, &[("match_urlpattern", matcher)], None).await;
    let connected = next_subscription_event(&mut watcher, matcher).await;
    drop(bob);
    let disconnected = next_subscription_event(&mut watcher, matcher).await;

    // Assert
    let subscriber = assert_subscription(&connected, "urlpattern", matcher, true, None);
    assert_eq!(disconnected["active"], false, "{disconnected}");
    assert_eq!(disconnected["subscriber"], subscriber.as_str());
    let marker = publish(&app, &v1_publisher(), &[("topic", TOPIC), ("data", "m")]).await;
    assert_next_event(&mut not_granted, &marker, "m", "no grant, no mercure event").await;
}

/// The subscription API lists exactly the live subscriptions: two, then the remaining one
/// after the other subscriber leaves, each as its subscription document.
#[actix_web::test]
async fn subscriptions_api_lists_exactly_the_live_subscriptions() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let reader = v1_subscriber(json!([{ "match": "*" }]));
    let (one, two) = ("https://example.com/one", "https://example.com/two/:id");
    let payload = json!({ "name": "ann" });
    let ann_token = v1_subscriber_with_payload(one, payload.clone());
    let _ann = subscribe(&app, &[("match", one)], Some(&ann_token)).await;
    let bob = subscribe(&app, &[("match_urlpattern", two)], None).await;
    let path = format!("{HUB}/subscriptions");

    // Act
    let both = api_get(&app, &path, &reader).await;
    drop(bob);
    let start = Instant::now();
    let remaining = loop {
        let list = api_get(&app, &path, &reader).await;
        if matchers_of(&list).len() == 1 {
            break list;
        }
        assert!(
            start.elapsed() < POLL_DEADLINE,
            "bob still listed after {POLL_DEADLINE:?}: {list}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };

    // Assert
    assert_eq!(both["id"], path.as_str());
    assert_eq!(both["type"], "subscriptions");
    assert_eq!(
        matchers_of(&both),
        [
            ("exact".to_owned(), one.to_owned()),
            ("urlpattern".to_owned(), two.to_owned())
        ]
    );
    for document in both["subscriptions"].as_array().into_iter().flatten() {
        match document["match"].as_str() {
            Some(m) if m == one => {
                assert_subscription(document, "exact", one, true, Some(&payload))
            }
            _ => assert_subscription(document, "urlpattern", two, true, None),
        };
    }
    assert_eq!(remaining["type"], "subscriptions");
    assert_eq!(
        matchers_of(&remaining),
        [("exact".to_owned(), one.to_owned())]
    );
}

/// `.../subscriptions/{match_type}/{match}` lists only that matcher's subscriptions,
/// `.../{match_type}/{match}/{subscriber}` is that one subscription's document, and an unknown
/// subscriber is 404.
#[actix_web::test]
async fn subscriptions_api_filters_by_matcher_and_serves_one_subscription() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let reader = v1_subscriber(json!([{ "match": "*" }]));
    let (one, two) = ("https://example.com/one", "https://example.com/two");
    let payload = json!({ "name": "ann" });
    let ann_token = v1_subscriber_with_payload(one, payload.clone());
    let _ann = subscribe(&app, &[("match", one)], Some(&ann_token)).await;
    let _carl = subscribe(&app, &[("match", one)], None).await;
    let _bob = subscribe(&app, &[("match", two)], None).await;
    let by_matcher = format!("{HUB}/subscriptions/exact/{}", pct(one));

    // Act
    let filtered = api_get(&app, &by_matcher, &reader).await;
    let ann_document = filtered["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|document| document.get("payload") == Some(&payload))
        .unwrap_or_else(|| panic!("ann's subscription in {filtered}"))
        .clone();
    let subscriber = assert_subscription(&ann_document, "exact", one, true, Some(&payload));
    let single = api_get(
        &app,
        &subscription_topic("exact", one, &subscriber),
        &reader,
    )
    .await;
    let unknown = get(
        &app,
        &subscription_topic(
            "exact",
            one,
            "urn:uuid:00000000-0000-4000-8000-000000000000",
        ),
        &[("authorization", &bearer(&reader))],
    )
    .await;

    // Assert
    assert_eq!(filtered["id"], by_matcher.as_str());
    assert_eq!(filtered["type"], "subscriptions");
    assert_eq!(
        matchers_of(&filtered),
        [
            ("exact".to_owned(), one.to_owned()),
            ("exact".to_owned(), one.to_owned())
        ],
        "ann and carl, not bob"
    );
    assert_eq!(single, ann_document);
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}

/// The subscription API needs a token: none is 401 with a bare challenge; a token without a
/// `subscribe` grant matching the requested path (the relative form) is 403
/// `insufficient_scope`; an exact grant on that path is enough.
#[actix_web::test]
async fn subscriptions_api_needs_a_matching_subscribe_grant() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let path = format!("{HUB}/subscriptions");
    let other_topic = v1_subscriber(json!([{ "match": "https://example.com/one" }]));
    let publish_only = v1_publisher();
    let exact_path = v1_subscriber(json!([{ "match": path }]));

    // Act
    let anonymous = get(&app, &path, &[]).await;
    let other = get(&app, &path, &[("authorization", &bearer(&other_topic))]).await;
    let publisher = get(&app, &path, &[("authorization", &bearer(&publish_only))]).await;
    let granted = api_get(&app, &path, &exact_path).await;

    // Assert
    assert_challenge(&anonymous, StatusCode::UNAUTHORIZED, None, "no token");
    let scope = Some("insufficient_scope");
    assert_challenge(
        &other,
        StatusCode::FORBIDDEN,
        scope,
        "grant on another topic",
    );
    assert_challenge(
        &publisher,
        StatusCode::FORBIDDEN,
        scope,
        "publish-only grant",
    );
    assert_eq!(granted["type"], "subscriptions");
}

/// With active subscriptions off (the default), the API answers 404 even to a token granted
/// `*`, and a subscriber granted `*` gets no `mercure` event when another connects.
#[actix_web::test]
async fn subscriptions_feature_off_serves_no_api_and_no_events() {
    // Arrange
    let app = v1_app().await;
    let reader = v1_subscriber(json!([{ "match": "*" }]));
    let mut watcher = subscribe(&app, &[("match", "*")], Some(&reader)).await;

    // Act
    let _other = subscribe(&app, &[("match", "https://example.com/x")], None).await;
    let api = get(
        &app,
        &format!("{HUB}/subscriptions"),
        &[("authorization", &bearer(&reader))],
    )
    .await;

    // Assert
    assert_eq!(api.status, StatusCode::NOT_FOUND, "{}", api.body);
    let marker = publish(&app, &v1_publisher(), &[("topic", TOPIC), ("data", "m")]).await;
    assert_next_event(&mut watcher, &marker, "m", "no subscription event").await;
}

// ---------------------------------------------------------------------------------- CORS

/// With `cors_allowed_origins = ["https://app.example"]`, a subscribe from that origin gets it
/// reflected with `Access-Control-Allow-Credentials: true` and the Mercure headers exposed;
/// another origin gets no `Access-Control-Allow-Origin`.
#[actix_web::test]
async fn cors_reflects_listed_origins_with_credentials() {
    // Arrange
    let app =
        v1_app_with(|s| s.cors_allowed_origins = vec!["https://app.example".to_owned()]).await;
    let path = hub_path(&[("match", "*")]);

    // Act
    let listed = get(&app, &path, &[("origin", "https://app.example")]).await;
    let unlisted = get(&app, &path, &[("origin", "https://evil.example")]).await;

    // Assert
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        listed.header("access-control-allow-credentials"),
        Some("true")
    );
    let exposed = listed
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for header in ["last-event-id", "mercure-last-event-id", "link"] {
        assert!(
            exposed.split(',').any(|name| name.trim() == header),
            "{header} not in Access-Control-Expose-Headers: {exposed}"
        );
    }
    assert_eq!(unlisted.header("access-control-allow-origin"), None);
}

/// With `cors_allowed_origins = ["*"]`, any origin gets `Access-Control-Allow-Origin: *` and no
/// `Access-Control-Allow-Credentials` header: credentials never go with a wildcard.
#[actix_web::test]
async fn cors_wildcard_allows_any_origin_without_credentials() {
    // Arrange
    let app = v1_app_with(|s| s.cors_allowed_origins = vec!["*".to_owned()]).await;

    // Act
    let reply = get(
        &app,
        &hub_path(&[("match", "*")]),
        &[("origin", "https://anywhere.example")],
    )
    .await;

    // Assert
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("access-control-allow-credentials"), None);
}

/// The match type reported is the one the client asked for: `match_urlpattern=*` is a
/// `urlpattern` subscription (though it matches every topic), distinct from `match=*`.
#[actix_web::test]
async fn a_wildcard_subscription_keeps_the_match_type_it_was_asked_with() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    // Routed by the subscriptions' own pattern, so its own subscription is not about `*`.
    let mut watcher = subscribe(
        &app,
        &[(
            "match_urlpattern",
            "/.well-known/mercure/subscriptions/:type/:match/:sub",
        )],
        Some(&v1_subscriber(json!([{ "match": "*" }]))),
    )
    .await;

    // Act
    let _both = subscribe(&app, &[("match", "*"), ("match_urlpattern", "*")], None).await;
    let first = next_subscription_event(&mut watcher, "*").await;
    let second = next_subscription_event(&mut watcher, "*").await;

    // Assert
    let mut types = [
        first["match_type"].as_str().unwrap_or_default(),
        second["match_type"].as_str().unwrap_or_default(),
    ];
    types.sort_unstable();
    assert_eq!(types, ["exact", "urlpattern"]);
    assert_ne!(first["id"], second["id"], "two subscriptions, two topics");
    assert_eq!(
        first["subscriber"], second["subscriber"],
        "one connection, one id"
    );
}

/// A graceful shutdown ends every subscription, and says so: a watcher gets the `active:
/// false` event of the other subscriber before its own stream ends.
#[actix_web::test]
async fn shutdown_announces_the_end_of_every_subscription() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let matcher = "https://example.com/leaving";
    let mut watcher = subscribe(
        &app,
        &[("match", "*")],
        Some(&v1_subscriber(json!([{ "match": "*" }]))),
    )
    .await;
    let _leaving = subscribe(&app, &[("match", matcher)], None).await;
    let joined = next_subscription_event(&mut watcher, matcher).await;

    // Act
    drop(app);
    let left = next_subscription_event(&mut watcher, matcher).await;

    // Assert
    assert_eq!(joined["active"], true);
    assert_eq!(left["active"], false, "{left}");
    assert_eq!(left["id"], joined["id"]);
}

/// A subscriber's stream ends at its access token's `exp` itself, not `exp` plus the leeway
/// allowed for clock skew (Mercure 1.0: "no later than the token's exp").
#[actix_web::test]
async fn a_stream_ends_at_its_access_tokens_exp() {
    // Arrange
    let app = v1_app_with(|s| s.jwt_leeway = Duration::from_secs(30)).await;
    let exp = unix_now().as_secs() + 2;
    let token = v1_token_changed(
        json!([grant(&["subscribe"], json!([{ "match": "*" }]))]),
        json!({ "exp": exp }),
    );
    let mut stream = subscribe(&app, &[("match", TOPIC)], Some(&token)).await;

    // Act: read until the stream ends (keep-alives come every 50 ms meanwhile).
    let give_up = Instant::now() + Duration::from_secs(40);
    let ended = loop {
        let left = give_up.saturating_duration_since(Instant::now());
        match stream.next_frame_or_end(left).await {
            Some(Some(_)) => continue,
            Some(None) => break unix_now(),
            None => panic!("the stream did not end within 40 s"),
        }
    };

    // Assert
    assert!(
        ended <= Duration::from_secs(exp) + Duration::from_millis(900),
        "ended at {ended:?}, exp {exp} s: the 30 s leeway must not extend the stream"
    );
}

/// An update over a limit on its fields is refused with 413, as Mercure asks: more topics
/// than `--max-topics`, a topic longer than `--max-topic-bytes`, an id or type over 1 KiB;
/// the quick-start `/publish` keeps its 400 for the same topic limit.
#[actix_web::test]
async fn updates_over_a_field_limit_are_content_too_large() {
    // Arrange
    let app = v1_app_with(|s| {
        s.max_topics = 2;
        s.max_topic_bytes = 64;
    })
    .await;
    let token = v1_publisher();
    let long_topic = format!("https://example.com/{}", "a".repeat(64));
    let long_id = "i".repeat(1025);
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "three topics",
            vec![("topic", "a"), ("topic", "b"), ("topic", "c")],
        ),
        ("a long topic", vec![("topic", &long_topic)]),
        ("a long id", vec![("topic", "a"), ("id", &long_id)]),
        ("a long type", vec![("topic", "a"), ("type", &long_id)]),
    ];

    for (case, fields) in cases {
        // Act
        let reply = post_update(&app, Some(&token), &fields).await;

        // Assert
        assert_refused(&reply, StatusCode::PAYLOAD_TOO_LARGE, "over a limit", case);
    }
    let quick_start = app
        .client
        .post(app.url("/publish?topic=a&topic=b&topic=c"))
        .insert_header(("authorization", bearer(&token)))
        .send_body("x")
        .await
        .expect("answered");
    assert_eq!(quick_start.status(), StatusCode::BAD_REQUEST);
}

/// Anonymous subscribers on `match=CHURN` that connect and leave `count` times, one at a time;
/// returns once the hub has published the `2 * count` subscription events that announce it
/// (`published_before` events were published before).
async fn churn_subscribers(app: &TestApp, count: u64, published_before: u64) {
    for _ in 0..count {
        drop(subscribe(app, &[("match", "https://example.com/churn")], None).await);
    }
    let published = published_before + 2 * count;
    app.wait_for_stats(POLL_DEADLINE, |stats| {
        stats["events_published_total"].as_u64() >= Some(published)
    })
    .await;
}

/// With `--subscriptions` and a 20-event history, 60 subscription events from anonymous
/// subscribers joining and leaving leave the application event published before them in the
/// history: a subscriber resuming from it gets the next application event, not `reset`.
#[actix_web::test]
async fn subscriber_churn_keeps_application_events_in_the_history() {
    // Arrange
    let app = v1_app_with(|s| {
        s.subscriptions = true;
        s.history_size = 20;
    })
    .await;
    let publisher = v1_publisher();
    let first = publish(&app, &publisher, &[("topic", TOPIC), ("data", "first")]).await;

    // Act
    churn_subscribers(&app, 30, 1).await;
    let second = publish(&app, &publisher, &[("topic", TOPIC), ("data", "second")]).await;
    let mut resumed = subscribe(&app, &[("match", TOPIC), ("lastEventID", &first)], None).await;

    // Assert
    assert_next_event(&mut resumed, &second, "second", "resumed after the churn").await;
    let stats = app.stats().await;
    assert_eq!(stats["history_oldest_id"], first.as_str(), "{stats}");
}

/// A watcher of subscription events resuming from a subscription event's id, within
/// `--subscription-history` though far beyond `--history-size`, gets every event that
/// followed (the churn's, the watched subscriber's leave, then an application event), in
/// publish order and without `reset`.
#[actix_web::test]
async fn a_subscription_watcher_resumes_within_the_subscription_history() {
    // Arrange
    let app = v1_app_with(|s| {
        s.subscriptions = true;
        s.history_size = 20;
    })
    .await;
    let matcher = "https://example.com/watched";
    let watcher_token = v1_subscriber(json!([{ "match": "*" }]));
    let mut watcher = subscribe(&app, &[("match", "*")], Some(&watcher_token)).await;
    let watched = subscribe(&app, &[("match", matcher)], None).await;
    let joined = loop {
        let event = watcher.next_event().await;
        if event
            .data
            .as_deref()
            .is_some_and(|data| data.contains(matcher))
        {
            break event.id.expect("a subscription event has an id");
        }
    };
    drop(watcher);
    // The watcher's join and leave, the watched one's join.
    let published = 3;

    // Act
    churn_subscribers(&app, 30, published).await;
    drop(watched);
    app.wait_for_stats(POLL_DEADLINE, |stats| {
        stats["events_published_total"].as_u64() >= Some(published + 61)
    })
    .await;
    let marker = publish(&app, &v1_publisher(), &[("topic", TOPIC), ("data", "m")]).await;
    let mut resumed = subscribe(
        &app,
        &[("match", "*"), ("lastEventID", &joined)],
        Some(&watcher_token),
    )
    .await;

    // Assert
    let mut churn_events = 0;
    let mut watched_left = false;
    loop {
        let event = resumed.next_event().await;
        assert_ne!(event.event.as_deref(), Some("reset"), "{event:?}");
        if event.id.as_deref() == Some(marker.as_str()) {
            break;
        }
        let document: Value =
            serde_json::from_str(event.data.as_deref().unwrap_or_default()).expect("JSON");
        assert!(
            !watched_left,
            "events after the leave come in publish order"
        );
        if document["match"] == matcher {
            assert_eq!(document["active"], false, "{document}");
            watched_left = true;
        } else if document["match"] == "https://example.com/churn" {
            churn_events += 1;
        }
    }
    assert!(watched_left, "the watched subscriber's leave was replayed");
    assert_eq!(churn_events, 60, "every churn event was replayed");
}
