//! The Mercure route where it meets browsers and other sites: modern and compat modes, the
//! cookie CSRF check, protected resource metadata (RFC 9728), security headers, and the
//! cursor and field details the reference hub accepts.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::{Value, json};
use sse_hub::auth::Mode;

use crate::{
    helpers::{TestApp, assert_json_error, query, spawn_app_with},
    mercure::token as v0_token,
    mercure_v1::{
        HUB, ISSUER, Reply, TOPIC, assert_challenge, bearer, get, hub_path, post_update, publish,
        subscribe, v1_app, v1_app_with, v1_publisher, v1_subscriber,
    },
};

/// The origin the hub's CORS list allows in these tests.
const APP_ORIGIN: &str = "https://app.example";
/// The cookie Mercure 1.0 recommends.
const COOKIE: &str = "__Secure-mercure_access_token";
/// Where RFC 9728 puts the default hub URL's metadata.
const METADATA: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";

/// Posts an update form with `headers` (a cookie, an origin...) and no Authorization header
/// unless one is among them.
async fn post_with(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> Reply {
    let mut request = app
        .client
        .post(app.url(path))
        .insert_header(("content-type", "application/x-www-form-urlencoded"));
    for header in headers {
        request = request.insert_header(*header);
    }
    let response = request.send_body(query(fields)).await.expect("answered");
    Reply::read(response).await
}

// ------------------------------------------------------------------------------ modes

/// In modern mode (the default) the Mercure route refuses 0.x tokens (401 `invalid_token`
/// naming `--mercure-mode compat`) and `topic=` selectors (400), while the hub's own
/// `/publish` and `/stream` keep taking the 0.x token; in compat mode the Mercure route takes
/// them too.
#[actix_web::test]
async fn modern_mode_refuses_mercure_0x_clients_on_the_mercure_route_only() {
    // Arrange
    let modern = v1_app().await;
    let compat = v1_app_with(|s| s.mercure_mode = Mode::Compat).await;
    let v0 = v0_token(&["*"], &["*"]);
    assert_eq!(
        sse_hub::config::Settings::default().mercure_mode,
        Mode::Modern
    );

    // Act
    let published = post_update(&modern, Some(&v0), &[("topic", TOPIC), ("data", "x")]).await;
    let by_topic = get(&modern, &hub_path(&[("topic", TOPIC)]), &[]).await;
    let v0_subscriber = get(
        &modern,
        &hub_path(&[("match", TOPIC)]),
        &[("authorization", &bearer(&v0))],
    )
    .await;
    let mut stream = modern.subscribe("/stream?topic=t").await;
    let (own_status, own_body) = {
        let response = modern
            .client
            .post(modern.url("/publish?topic=t"))
            .insert_header(("authorization", bearer(&v0)))
            .send_body("own route")
            .await
            .expect("answered");
        let reply = Reply::read(response).await;
        (reply.status, reply.body)
    };

    // Assert
    assert_challenge(
        &published,
        StatusCode::UNAUTHORIZED,
        Some("invalid_token"),
        "0.x publish",
    );
    assert_json_error(
        published.status,
        &published.body,
        StatusCode::UNAUTHORIZED,
        "--mercure-mode compat",
    );
    assert_json_error(
        by_topic.status,
        &by_topic.body,
        StatusCode::BAD_REQUEST,
        "--mercure-mode compat",
    );
    assert_challenge(
        &v0_subscriber,
        StatusCode::UNAUTHORIZED,
        Some("invalid_token"),
        "0.x subscribe",
    );
    assert_eq!(
        own_status,
        StatusCode::OK,
        "/publish with a 0.x token: {own_body}"
    );
    assert_eq!(stream.next_event().await.data.as_deref(), Some("own route"));
    let mut v0_stream = compat.subscribe(&hub_path(&[("topic", TOPIC)])).await;
    publish(&compat, &v0, &[("topic", TOPIC), ("data", "compat")]).await;
    assert_eq!(v0_stream.next_event().await.data.as_deref(), Some("compat"));
}

// ------------------------------------------------------------------------------- CSRF

/// A hub whose CORS list names [`APP_ORIGIN`].
async fn csrf_app() -> TestApp {
    v1_app_with(|s| s.cors_allowed_origins = vec![APP_ORIGIN.to_owned()]).await
}

/// A publish whose token came from the cookie is refused (400 `invalid_request`, nothing
/// published) when its `Origin` is foreign, or when it has neither `Origin` nor `Referer`;
/// it is taken from the listed origin (by `Origin` or by `Referer`) and from the hub's own.
/// The same token in the Authorization header is taken from any origin.
#[actix_web::test]
async fn cookie_publishes_are_taken_only_from_allowed_origins() {
    // Arrange
    let app = csrf_app().await;
    let token = v1_publisher();
    let cookie = format!("{COOKIE}={token}");
    let own_origin = app.url("");
    let own_origin = own_origin.trim_end_matches('/');
    let mut subscriber = subscribe(&app, &[("match", TOPIC)], None).await;
    let refused = [
        (
            "foreign Origin",
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "https://evil.example"),
            ],
        ),
        ("no Origin nor Referer", vec![("cookie", cookie.as_str())]),
        (
            "foreign Referer",
            vec![
                ("cookie", cookie.as_str()),
                ("referer", "https://evil.example/page"),
            ],
        ),
        (
            "null Origin",
            vec![("cookie", cookie.as_str()), ("origin", "null")],
        ),
    ];
    let bearer_header = bearer(&token);
    let accepted = [
        (
            "listed Origin",
            vec![("cookie", cookie.as_str()), ("origin", APP_ORIGIN)],
        ),
        (
            "listed Referer",
            vec![
                ("cookie", cookie.as_str()),
                ("referer", "https://app.example/page?x=1"),
            ],
        ),
        (
            "own Origin",
            vec![("cookie", cookie.as_str()), ("origin", own_origin)],
        ),
        (
            "header token, foreign Origin",
            vec![
                ("authorization", bearer_header.as_str()),
                ("origin", "https://evil.example"),
            ],
        ),
    ];

    // Act
    let mut refusals = Vec::new();
    for (case, headers) in &refused {
        let reply = post_with(&app, HUB, headers, &[("topic", TOPIC), ("data", case)]).await;
        refusals.push((*case, reply));
    }
    let mut ids = Vec::new();
    for (case, headers) in &accepted {
        let reply = post_with(&app, HUB, headers, &[("topic", TOPIC), ("data", case)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.body);
        ids.push((*case, reply.body));
    }

    // Assert
    for (case, reply) in &refusals {
        assert_challenge(
            reply,
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
            case,
        );
        assert_json_error(reply.status, &reply.body, StatusCode::BAD_REQUEST, "cookie");
    }
    // Exactly the accepted publishes arrive, in order: none of the refused ones slipped in.
    for (case, id) in ids {
        let event = subscriber.next_event().await;
        assert_eq!(
            (event.id.as_deref(), event.data.as_deref()),
            (Some(id.as_str()), Some(case))
        );
    }
    subscriber
        .assert_no_event_within(Duration::from_millis(300))
        .await;
}

/// Subscribing with the cookie from a foreign origin is refused (400); with no `Origin` (a
/// same-origin `EventSource`) or a listed one it is taken; the hub's own `/publish` and
/// `/stream` apply the same rule to the cookie.
#[actix_web::test]
async fn cookie_subscribes_and_own_routes_check_the_origin_too() {
    // Arrange
    let app = csrf_app().await;
    let cookie = format!("{COOKIE}={}", v1_subscriber(json!([{ "match": "*" }])));
    let publisher_cookie = format!("mercureAuthorization={}", v1_publisher());
    let path = hub_path(&[("match", TOPIC)]);

    // Act
    let foreign = get(
        &app,
        &path,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    let listed = get(&app, &path, &[("cookie", &cookie), ("origin", APP_ORIGIN)]).await;
    let same_origin = get(&app, &path, &[("cookie", &cookie)]).await;
    let stream = get(
        &app,
        "/stream?topic=t",
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    let own_publish = post_with(
        &app,
        "/publish?topic=t",
        &[
            ("cookie", &publisher_cookie),
            ("origin", "https://evil.example"),
        ],
        &[],
    )
    .await;

    // Assert
    assert_challenge(
        &foreign,
        StatusCode::BAD_REQUEST,
        Some("invalid_request"),
        "foreign subscribe",
    );
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "listed origin: {}",
        listed.body
    );
    assert_eq!(
        same_origin.status,
        StatusCode::OK,
        "no Origin: {}",
        same_origin.body
    );
    assert_json_error(
        stream.status,
        &stream.body,
        StatusCode::BAD_REQUEST,
        "https://evil.example",
    );
    assert_json_error(
        own_publish.status,
        &own_publish.body,
        StatusCode::BAD_REQUEST,
        "https://evil.example",
    );
}

// ---------------------------------------------------------------- metadata and headers

/// The hub serves its protected resource metadata (RFC 9728) at the path derived from its
/// URL: its resource identifier, its issuer, how tokens are presented; every challenge of
/// the Mercure route points at it with `resource_metadata`. A hub without keys serves none.
#[actix_web::test]
async fn protected_resource_metadata_is_served_and_named_in_challenges() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let keyless = spawn_app_with(|_| {}).await;

    // Act
    let document = get(&app, METADATA, &[]).await;
    let challenged = post_update(&app, None, &[("topic", TOPIC)]).await;
    let invalid = post_update(&app, Some("not.a.token"), &[("topic", TOPIC)]).await;
    let none = get(&keyless, METADATA, &[]).await;

    // Assert
    assert_eq!(document.status, StatusCode::OK, "{}", document.body);
    let document: Value = serde_json::from_str(&document.body).expect("JSON");
    assert_eq!(document["resource"], sse_hub::config::DEFAULT_HUB_URL);
    assert_eq!(document["authorization_servers"], json!([ISSUER]));
    assert_eq!(document["bearer_methods_supported"], json!(["header"]));
    assert_eq!(
        document["authorization_details_types_supported"],
        json!(["https://mercure.rocks/authorization-detail"])
    );
    assert_eq!(document["mercure_cookie"], COOKIE);
    assert_eq!(document["mercure_subscriptions"], true);
    let pointer = format!("resource_metadata=\"https://localhost{METADATA}\"");
    for (case, reply) in [("no token", &challenged), ("invalid token", &invalid)] {
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains(&pointer), "{case}: {challenge}");
    }
    assert_eq!(
        challenged.header("www-authenticate"),
        Some(format!("Bearer {pointer}").as_str())
    );
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}

/// Every answer of the Mercure route (a stream, an error, the metadata) says `nosniff`, may
/// not be framed, and loads nothing.
#[actix_web::test]
async fn mercure_answers_carry_security_headers() {
    // Arrange
    let app = v1_app().await;

    // Act
    let stream = subscribe(&app, &[("match", TOPIC)], None).await;
    let error = post_update(&app, None, &[("topic", TOPIC)]).await;
    let metadata = get(&app, METADATA, &[]).await;

    // Assert
    let stream_headers = stream.headers().clone();
    for (case, headers) in [
        ("stream", &stream_headers),
        ("error", &error.headers),
        ("metadata", &metadata.headers),
    ] {
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            value("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{case}"
        );
        assert_eq!(value("x-frame-options").as_deref(), Some("DENY"), "{case}");
        assert_eq!(
            value("content-security-policy").as_deref(),
            Some("default-src 'none'; frame-ancestors 'none'"),
            "{case}"
        );
    }
}

// ---------------------------------------------------------------------------- cursors

/// An empty `Last-Event-ID` (or `last_event_id=`) is no cursor: the stream opens (200),
/// replays nothing, names the newest event in `Mercure-Last-Event-ID`, and goes on live.
#[actix_web::test]
async fn an_empty_last_event_id_is_no_cursor() {
    // Arrange
    let app = v1_app().await;
    let publisher = v1_publisher();
    publish(&app, &publisher, &[("topic", TOPIC), ("data", "old")]).await;
    let newest = publish(&app, &publisher, &[("topic", TOPIC), ("data", "newer")]).await;

    // Act
    let path = hub_path(&[("match", TOPIC)]);
    let mut by_header = app.subscribe_with(&path, &[("last-event-id", "")]).await;
    let mut by_query = subscribe(&app, &[("match", TOPIC), ("last_event_id", "")], None).await;
    let live = publish(&app, &publisher, &[("topic", TOPIC), ("data", "live")]).await;

    // Assert
    for (case, stream) in [("header", &mut by_header), ("query", &mut by_query)] {
        let header = stream
            .headers()
            .get("mercure-last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(header.as_deref(), Some(newest.as_str()), "{case}");
        let event = stream.next_event().await;
        assert_eq!(
            event.id.as_deref(),
            Some(live.as_str()),
            "{case}: nothing replayed first"
        );
    }
}

/// A resume from an id the hub does not hold answers `Mercure-Last-Event-ID: earliest` and a
/// `reset` whose `oldestId` is the first event the subscriber is sent: never an older event
/// of a topic it did not ask for, nor a private one.
#[actix_web::test]
async fn reset_never_names_events_of_other_topics() {
    // Arrange
    let app = v1_app().await;
    let publisher = v1_publisher();
    publish(
        &app,
        &publisher,
        &[("topic", "https://example.com/other"), ("data", "other")],
    )
    .await;
    publish(
        &app,
        &publisher,
        &[("topic", TOPIC), ("data", "private"), ("private", "on")],
    )
    .await;
    let mine = publish(&app, &publisher, &[("topic", TOPIC), ("data", "mine")]).await;

    // Act
    let path = hub_path(&[("match", TOPIC)]);
    let mut stream = app
        .subscribe_with(&path, &[("last-event-id", "urn:uuid:unknown")])
        .await;

    // Assert
    let header = stream
        .headers()
        .get("mercure-last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(header.as_deref(), Some("earliest"));
    let reset = stream.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    let data: Value =
        serde_json::from_str(reset.data.as_deref().unwrap_or_default()).expect("JSON");
    assert_eq!(
        data,
        json!({ "lastEventId": "urn:uuid:unknown", "oldestId": mine })
    );
    assert_eq!(stream.next_event().await.id.as_deref(), Some(mine.as_str()));
}

// ----------------------------------------------------------------------- small fields

/// An empty `match=` is accepted (it names the empty topic, which no publish has) and an
/// empty `retry=` on a publish is no retry, as the reference hub reads them; an empty
/// `match_urlpattern=` is still refused.
#[actix_web::test]
async fn empty_match_and_empty_retry_are_accepted() {
    // Arrange
    let app = v1_app().await;

    // Act
    let empty_match = get(&app, &hub_path(&[("match", "")]), &[]).await;
    let empty_pattern = get(&app, &hub_path(&[("match_urlpattern", "")]), &[]).await;
    let mut stream = subscribe(&app, &[("match", TOPIC)], None).await;
    let published = post_update(
        &app,
        Some(&v1_publisher()),
        &[("topic", TOPIC), ("data", "d"), ("retry", "")],
    )
    .await;

    // Assert
    assert_eq!(empty_match.status, StatusCode::OK, "{}", empty_match.body);
    assert_json_error(
        empty_pattern.status,
        &empty_pattern.body,
        StatusCode::BAD_REQUEST,
        "must not be empty",
    );
    assert_eq!(published.status, StatusCode::OK, "{}", published.body);
    let event = stream.next_event().await;
    assert_eq!(
        (event.data.as_deref(), event.retry.as_deref()),
        (Some("d"), None)
    );
}

// ------------------------------------------------------------------ subscription API

/// An unknown matcher type in a subscription API path is `400` naming it (not an empty list).
#[actix_web::test]
async fn subscription_api_refuses_an_unknown_matcher_type() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let reader = bearer(&v1_subscriber(json!([{ "match": "*" }])));

    // Act
    let unknown = get(
        &app,
        &format!("{HUB}/subscriptions/regex/x"),
        &[("authorization", &reader)],
    )
    .await;
    let known = get(
        &app,
        &format!("{HUB}/subscriptions/exact/x"),
        &[("authorization", &reader)],
    )
    .await;

    // Assert
    assert_json_error(
        unknown.status,
        &unknown.body,
        StatusCode::BAD_REQUEST,
        "unknown matcher type `regex`",
    );
    assert_eq!(known.status, StatusCode::OK, "{}", known.body);
}

/// Subscription API answers carry an `ETag`; `If-None-Match` with it is `304` without a body
/// while nothing changed, and a new subscription makes a new tag (and a `200`).
#[actix_web::test]
async fn subscription_api_answers_304_while_unchanged() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let reader = bearer(&v1_subscriber(json!([{ "match": "*" }])));
    let path = format!("{HUB}/subscriptions");
    let _one = subscribe(&app, &[("match", TOPIC)], None).await;

    // Act
    let first = get(&app, &path, &[("authorization", &reader)]).await;
    let etag = first.header("etag").unwrap_or_default().to_owned();
    let again = get(
        &app,
        &path,
        &[("authorization", &reader), ("if-none-match", &etag)],
    )
    .await;
    let _two = subscribe(&app, &[("match", "https://example.com/other")], None).await;
    let changed = get(
        &app,
        &path,
        &[("authorization", &reader), ("if-none-match", &etag)],
    )
    .await;

    // Assert
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(
        etag.starts_with('"') && etag.len() > 2,
        "a strong entity tag: {etag:?}"
    );
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.body, "");
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

/// In compat mode the subscription API and events also speak Mercure 0.x: a 0.x watcher of
/// `/.well-known/mercure/subscriptions/{topic}/{subscriber}` receives a JSON-LD `Subscription`
/// event for a new subscriber, and the API answers `application/ld+json` documents with
/// `@context` and `lastEventID` on `/subscriptions`, `/subscriptions/{topic}` and
/// `/subscriptions/{topic}/{subscriber}`.
#[actix_web::test]
async fn compat_mode_serves_the_0x_subscription_api_and_events() {
    // Arrange
    let app = v1_app_with(|s| {
        s.subscriptions = true;
        s.mercure_mode = Mode::Compat;
    })
    .await;
    let watcher_token = v0_token(&[], &["*"]);
    let bearer_header = bearer(&watcher_token);
    let template = "/.well-known/mercure/subscriptions/{topic}/{subscriber}";
    let mut watcher = app
        .subscribe_with(
            &hub_path(&[("topic", template)]),
            &[("authorization", &bearer_header)],
        )
        .await;
    let books = "https://example.com/books/1";

    // Act
    let _bob = app.subscribe(&hub_path(&[("topic", books)])).await;
    let event = loop {
        let frame = watcher.next_event().await;
        let data: Value =
            serde_json::from_str(frame.data.as_deref().unwrap_or_default()).expect("JSON");
        if data["topic"] == books {
            break (frame, data);
        }
    };
    let subscriber = event.1["subscriber"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let encode = |text: &str| {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let auth = [("authorization", bearer_header.as_str())];
    let all = get(&app, &format!("{HUB}/subscriptions"), &auth).await;
    let by_topic = get(
        &app,
        &format!("{HUB}/subscriptions/{}", encode(books)),
        &auth,
    )
    .await;
    let one = get(
        &app,
        &format!(
            "{HUB}/subscriptions/{}/{}",
            encode(books),
            encode(&subscriber)
        ),
        &auth,
    )
    .await;

    // Assert
    let (frame, data) = event;
    assert_eq!(frame.event.as_deref(), Some("mercure"));
    assert_eq!(data["@context"], "https://mercure.rocks/");
    assert_eq!(data["type"], "Subscription");
    assert_eq!(data["active"], true);
    assert_eq!(
        data["id"],
        format!(
            "/.well-known/mercure/subscriptions/{}/{}",
            encode(books),
            encode(&subscriber)
        )
        .replace("%2E", ".")
        .replace("%2D", "-")
    );
    for (case, reply) in [("all", &all), ("by topic", &by_topic), ("one", &one)] {
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("application/ld+json"),
            "{case}"
        );
    }
    let all: Value = serde_json::from_str(&all.body).expect("JSON");
    assert_eq!(all["type"], "Subscriptions");
    assert_eq!(all["@context"], "https://mercure.rocks/");
    assert!(all["lastEventID"].is_string(), "{all}");
    let by_topic: Value = serde_json::from_str(&by_topic.body).expect("JSON");
    assert_eq!(
        by_topic["subscriptions"].as_array().map(Vec::len),
        Some(1),
        "{by_topic}"
    );
    let one: Value = serde_json::from_str(&one.body).expect("JSON");
    assert_eq!(one, data);
}

/// In modern mode the 0.x paths are not served (`/subscriptions/{topic}` is 404) and a new
/// subscriber is announced once, in the 1.0 shape only.
#[actix_web::test]
async fn modern_mode_announces_subscriptions_in_the_1_0_shape_only() {
    // Arrange
    let app = v1_app_with(|s| s.subscriptions = true).await;
    let reader = v1_subscriber(json!([{ "match": "*" }]));
    let mut watcher = subscribe(&app, &[("match", "*")], Some(&reader)).await;

    // Act
    let _bob = subscribe(&app, &[("match", TOPIC)], None).await;
    let mut announced = Vec::new();
    let marker = publish(
        &app,
        &v1_publisher(),
        &[("topic", TOPIC), ("data", "marker")],
    )
    .await;
    loop {
        let frame = watcher.next_event().await;
        if frame.id.as_deref() == Some(marker.as_str()) {
            break;
        }
        announced.push(frame.data.unwrap_or_default());
    }
    let legacy_path = get(
        &app,
        &format!("{HUB}/subscriptions/x"),
        &[("authorization", &bearer(&reader))],
    )
    .await;

    // Assert
    let bob: Vec<&String> = announced
        .iter()
        .filter(|data| data.contains(TOPIC))
        .collect();
    assert_eq!(bob.len(), 1, "{announced:?}");
    assert!(!bob[0].contains("@context"), "{}", bob[0]);
    assert_eq!(legacy_path.status, StatusCode::NOT_FOUND);
}
