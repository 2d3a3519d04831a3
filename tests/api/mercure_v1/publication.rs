//! Publication: reserved and malformed fields, field limits, generated and given ids.

use super::*;

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
