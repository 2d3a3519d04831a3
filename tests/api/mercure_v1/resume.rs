//! Ids and resuming: repeated ids, and the `Last-Event-ID` answer headers of both protocols.

use super::*;

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
