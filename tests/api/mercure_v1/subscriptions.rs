//! Active subscriptions: their events and the subscription API.

use super::*;

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
