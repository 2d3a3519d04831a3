//! Topics and selectors on `/stream`: exact topics, `*`, URI templates, delivery at most once.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::json;

use crate::helpers::{
    SETTLE_TIMEOUT, SseStream, TestApp, assert_json_error, query, spawn_app, spawn_app_with,
};

/// Subscribes with one `?topic=` per selector.
async fn subscribe_to(app: &TestApp, selectors: &[&str]) -> SseStream {
    let pairs: Vec<(&str, &str)> = selectors.iter().map(|s| ("topic", *s)).collect();
    app.subscribe(&format!("/stream?{}", query(&pairs))).await
}

/// Publishes `body` to every topic in `topics` at once; returns the id.
async fn publish_to(app: &TestApp, topics: &[&str], body: &str) -> String {
    let pairs: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    app.publish(&query(&pairs), body).await
}

/// Reads the next `want.len()` events and asserts their (id, data), in order.
async fn assert_next_events(stream: &mut SseStream, want: &[(String, String)], who: &str) {
    let mut seen = Vec::with_capacity(want.len());
    for _ in want {
        let event = stream.next_event().await;
        seen.push((
            event.id.expect("every event has an id"),
            event.data.expect("every event has data"),
        ));
    }
    assert_eq!(seen, want, "events seen by {who}");
}

/// An exact selector receives only its own topic, `*` and a selector-less subscriber receive
/// every topic; the marker each reads next proves nothing else slipped in.
#[actix_web::test]
async fn exact_selector_receives_only_its_topic_and_star_receives_all() {
    let app = spawn_app().await;
    let mut exact = subscribe_to(&app, &["a"]).await;
    let mut star = subscribe_to(&app, &["*"]).await;
    let mut everything = app.subscribe("/stream").await;

    let mut all = Vec::new();
    for topic in ["b", "a", "c", "A", "a/", "a"] {
        let data = format!("to {topic}");
        all.push((topic, publish_to(&app, &[topic], &data).await, data));
    }
    let marker = publish_to(&app, &["a"], "marker").await;

    let mut want_all: Vec<(String, String)> = all
        .iter()
        .map(|(_, id, data)| (id.clone(), data.clone()))
        .collect();
    want_all.push((marker.clone(), "marker".to_owned()));
    let want_exact: Vec<(String, String)> = all
        .iter()
        .filter(|(topic, _, _)| *topic == "a")
        .map(|(_, id, data)| (id.clone(), data.clone()))
        .chain([(marker.clone(), "marker".to_owned())])
        .collect();
    assert_eq!(want_exact.len(), 3);
    assert_next_events(&mut exact, &want_exact, "selector `a`").await;
    assert_next_events(&mut star, &want_all, "selector `*`").await;
    assert_next_events(&mut everything, &want_all, "no selector").await;
}

/// URI template selectors (`{id}`, `{+path}`, `{?q,page}`, two `{var}`s) receive exactly the
/// topics their template matches, as Mercure matches them; the others never arrive.
#[actix_web::test]
async fn uri_template_selectors_receive_matching_topics_only() {
    let app = spawn_app().await;
    let templates = [
        "https://example.com/books/{id}",
        "https://example.com{+path}",
        "https://example.com/search{?q,page}",
        "https://example.com/users/{user}/books/{id}",
    ];
    let mut subscribers = Vec::new();
    for template in templates {
        subscribers.push(subscribe_to(&app, &[template]).await);
    }
    // Topic, then whether each template above matches it.
    let cases: &[(&str, [bool; 4])] = &[
        ("https://example.com/books/1", [true, true, false, false]),
        (
            "https://example.com/books/a%20b",
            [true, true, false, false],
        ),
        (
            "https://example.com/books/1/reviews",
            [false, true, false, false],
        ),
        (
            "https://example.com/search?q=rust&page=2",
            [false, true, true, false],
        ),
        ("https://example.com/search", [false, true, true, false]),
        (
            "https://example.com/search?q=a/b",
            [false, true, false, false],
        ),
        (
            "https://example.com/users/kevin/books/42",
            [false, true, false, true],
        ),
        (
            "https://example.com/users/kevin/x/books/42",
            [false, true, false, false],
        ),
        ("https://example.com", [false, true, false, false]),
        ("https://example.org/books/1", [false, false, false, false]),
        ("urn:example:books:1", [false, false, false, false]),
        // The template text itself, as in Mercure; `{` is outside `{+path}`'s characters.
        (
            "https://example.com/books/{id}",
            [true, false, false, false],
        ),
    ];

    let mut published = Vec::new();
    for (n, (topic, _)) in cases.iter().enumerate() {
        published.push(publish_to(&app, &[topic], &format!("case {n}")).await);
    }
    // One event on one topic per template: each subscriber's next event after the cases.
    let marker = publish_to(
        &app,
        &[
            "https://example.com/books/marker",
            "https://example.com/search?q=marker",
            "https://example.com/users/marker/books/marker",
        ],
        "marker",
    )
    .await;

    for (t, (template, subscriber)) in templates.iter().zip(&mut subscribers).enumerate() {
        let want: Vec<(String, String)> = cases
            .iter()
            .enumerate()
            .filter(|(_, (_, matches))| matches[t])
            .map(|(n, _)| (published[n].clone(), format!("case {n}")))
            .chain([(marker.clone(), "marker".to_owned())])
            .collect();
        assert_next_events(subscriber, &want, template).await;
    }
}

/// A subscriber whose selectors overlap (`a` and `*`; `a` and `b` for an event on both; two
/// templates matching one topic; `a` twice) receives each event exactly once.
#[actix_web::test]
async fn overlapping_selectors_deliver_each_event_once() {
    let app = spawn_app().await;
    let mut a_and_star = subscribe_to(&app, &["a", "*"]).await;
    let mut a_and_b = subscribe_to(&app, &["a", "b"]).await;
    let mut a_twice = subscribe_to(&app, &["a", "a"]).await;
    let mut templates = subscribe_to(
        &app,
        &[
            "https://example.com/books/{id}",
            "https://example.com{+path}",
        ],
    )
    .await;

    let both = publish_to(&app, &["a", "b"], "a and b").await;
    let only_a = publish_to(&app, &["a"], "a").await;
    let a_repeated = publish_to(&app, &["a", "a"], "a repeated").await;
    let book = publish_to(
        &app,
        &["https://example.com/books/1", "https://example.com/books/2"],
        "book",
    )
    .await;
    let marker = publish_to(&app, &["a", "https://example.com/books/m"], "marker").await;

    let event = |id: &String, data: &str| (id.clone(), data.to_owned());
    let for_a = [
        event(&both, "a and b"),
        event(&only_a, "a"),
        event(&a_repeated, "a repeated"),
    ];
    let mut want = for_a.to_vec();
    want.extend([event(&book, "book"), event(&marker, "marker")]);
    assert_next_events(&mut a_and_star, &want, "`a` and `*`").await;
    let mut want = for_a.to_vec();
    want.push(event(&marker, "marker"));
    assert_next_events(&mut a_and_b, &want, "`a` and `b`").await;
    assert_next_events(&mut a_twice, &want, "`a` twice").await;
    let want = [event(&book, "book"), event(&marker, "marker")];
    assert_next_events(&mut templates, &want, "two templates").await;
    // Nothing follows the marker: not even a second copy of it.
    a_and_star
        .assert_no_event_within(Duration::from_millis(100))
        .await;
    // Four subscribers: 5 + 4 + 4 + 2 deliveries, none doubled.
    let stats = app.stats().await;
    assert_eq!(stats["events_delivered_total"], 15, "{stats}");
}

/// `/stats` counts subscribers per selector (`*` for selector-less ones) and follows a
/// subscriber that leaves.
#[actix_web::test]
async fn stats_count_subscribers_by_selector() {
    let app = spawn_app().await;
    let template = "https://example.com/books/{id}";
    let _plain = app.subscribe("/stream").await;
    let _star = subscribe_to(&app, &["*"]).await;
    // A selector given twice is one selector.
    let _a_and_b = subscribe_to(&app, &["a", "b", "a"]).await;
    let leaving = subscribe_to(&app, &["a", template]).await;

    let stats = app.stats().await;
    assert_eq!(stats["subscribers"], 4);
    assert_eq!(
        stats["subscribers_by_selector"],
        json!({ "*": 2, "a": 2, "b": 1, template: 1 })
    );

    drop(leaving);
    let stats = app
        .wait_for_stats(SETTLE_TIMEOUT, |s| s["subscribers"] == 3)
        .await;
    assert_eq!(
        stats["subscribers_by_selector"],
        json!({ "*": 2, "a": 1, "b": 1 })
    );
}

/// Too many selectors or topics, an over-long or empty topic and an invalid template get 400,
/// a publisher id already in the history 409, each with a JSON error naming the problem; no
/// subscriber is registered by them and an existing one still receives the next event.
#[actix_web::test]
async fn bad_topics_are_refused_and_disturb_nobody() {
    let app = spawn_app_with(|s| {
        s.max_topics = 3;
        s.max_topic_bytes = 64;
    })
    .await;
    let mut subscriber = subscribe_to(&app, &["a"]).await;
    let taken = app.publish("topic=a&id=taken", "first").await;
    assert_eq!(taken, "taken");
    assert_eq!(subscriber.next_event().await.id.as_deref(), Some("taken"));
    // The limits themselves are allowed.
    let long = "t".repeat(64);
    let at_limit = subscribe_to(&app, &["a", "b", &long]).await;
    drop(at_limit);
    publish_to(&app, &["x", "y", &long], "at the limit").await;
    app.wait_for_stats(SETTLE_TIMEOUT, |s| s["subscribers"] == 1)
        .await;

    let too_long = "t".repeat(65);
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "GET",
            format!(
                "/stream?{}",
                query(&[
                    ("topic", "a"),
                    ("topic", "b"),
                    ("topic", "c"),
                    ("topic", "d")
                ])
            ),
            StatusCode::BAD_REQUEST,
            "too many topic selectors: at most 3",
        ),
        (
            "POST",
            format!(
                "/publish?{}",
                query(&[
                    ("topic", "a"),
                    ("topic", "b"),
                    ("topic", "c"),
                    ("topic", "d")
                ])
            ),
            StatusCode::BAD_REQUEST,
            "too many topics: at most 3",
        ),
        (
            "GET",
            format!("/stream?{}", query(&[("topic", &too_long)])),
            StatusCode::BAD_REQUEST,
            "longer than 64 bytes",
        ),
        (
            "POST",
            format!(
                "/publish?{}",
                query(&[("topic", "a"), ("topic", &too_long)])
            ),
            StatusCode::BAD_REQUEST,
            "longer than 64 bytes",
        ),
        (
            "GET",
            "/stream?topic=a&topic=".to_owned(),
            StatusCode::BAD_REQUEST,
            "empty topic",
        ),
        (
            "POST",
            "/publish?topic=".to_owned(),
            StatusCode::BAD_REQUEST,
            "empty topic",
        ),
        (
            "GET",
            format!("/stream?{}", query(&[("topic", "https://example.com/{id")])),
            StatusCode::BAD_REQUEST,
            "invalid URI template `https://example.com/{id`: unbalanced brace at byte 20",
        ),
        (
            "GET",
            format!("/stream?{}", query(&[("topic", "urn:{a-b}")])),
            StatusCode::BAD_REQUEST,
            "invalid variable name `a-b`",
        ),
        (
            "POST",
            "/publish?topic=a&id=taken".to_owned(),
            StatusCode::CONFLICT,
            "an event with id `taken` is already in the history",
        ),
    ];
    for (n, (method, path, status, needle)) in cases.into_iter().enumerate() {
        let (got, body) = match method {
            "GET" => app.get(&path).await,
            _ => app.post(&path, "refused").await,
        };
        assert_json_error(got, &body, status, needle);

        let marker = format!("after case {n}");
        let id = publish_to(&app, &["a"], &marker).await;
        let event = subscriber.next_event().await;
        assert_eq!(event.data.as_deref(), Some(marker.as_str()), "case {n}");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
    let stats = app.stats().await;
    assert_eq!(stats["subscribers"], 1, "{stats}");
    // `taken`, the one at the limit, and one marker per case: nothing refused was published.
    assert_eq!(stats["events_published_total"], 2 + 9, "{stats}");
}
