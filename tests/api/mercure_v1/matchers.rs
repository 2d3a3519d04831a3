//! Topic matchers: `urlpattern`, `exact`, `*`, and malformed subscribe requests.

use super::*;

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
