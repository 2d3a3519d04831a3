//! Malformed requests: each gets a clear 4xx with a JSON error, and disturbs nobody.

use actix_web::http::StatusCode;

use crate::helpers::{assert_json_error, spawn_app_with};

/// Oversized body → 413, bad event type (a line break, or `mercure`, the hub's own) → 400, invalid UTF-8 → 400, unknown route → 404,
/// wrong method → 405; after each, a subscriber still receives the next event.
#[actix_web::test]
async fn bad_input_is_refused_and_disturbs_nobody() {
    let app = spawn_app_with(|s| s.body_limit_bytes = 1024).await;
    let mut subscriber = app.subscribe("/stream").await;

    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "POST",
            "/publish",
            vec![b'x'; 1025],
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the limit of 1024 bytes",
        ),
        (
            "POST",
            "/publish?event=a%0Ab",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "event type must not contain CR, LF or NUL",
        ),
        (
            "POST",
            "/publish?event=mercure",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "must not be `mercure`",
        ),
        (
            "POST",
            "/publish?event=a%0Db",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "event type",
        ),
        (
            "POST",
            "/publish?event=a%00b",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "event type",
        ),
        (
            "POST",
            "/publish",
            vec![0xff, 0xfe, b'a'],
            StatusCode::BAD_REQUEST,
            "not valid UTF-8",
        ),
        (
            "POST",
            "/publish?retry=soon",
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            "retry",
        ),
        (
            "GET",
            "/no/such/route",
            Vec::new(),
            StatusCode::NOT_FOUND,
            "no route for GET /no/such/route",
        ),
        (
            "DELETE",
            "/left",
            Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "DELETE is not allowed on /left",
        ),
        (
            "GET",
            "/publish",
            Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET is not allowed on /publish",
        ),
    ];
    // Only the markers below are published: every case is refused.
    let markers = cases.len();
    for (n, (method, path, body, status, needle)) in cases.into_iter().enumerate() {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut response = app
            .client
            .request(method, app.url(path))
            .send_body(body)
            .await
            .expect("answered");
        let text = String::from_utf8(response.body().await.expect("body").to_vec()).expect("utf-8");
        assert_json_error(response.status(), &text, status, needle);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .expect("content type"),
            "application/json"
        );

        let marker = format!("after case {n}");
        let id = app.publish("", &marker).await;
        let event = subscriber.next_event().await;
        assert_eq!(event.data.as_deref(), Some(marker.as_str()));
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
    assert_eq!(app.stats().await["events_published_total"], markers);
}

/// `/publish` holds topics, id and type to the value rule the Mercure route has always held
/// them to: a control character (a bell, a tab, DEL) or a format character (a zero-width space,
/// a right-to-left override) is refused with 400 naming the field and the character, nothing is
/// published, and the subscriber receives exactly the accepted events, in order. (Before the
/// publication rules were one type, `/publish` published these.)
#[actix_web::test]
async fn publish_refuses_control_and_format_characters() {
    let app = spawn_app_with(|_| {}).await;
    let mut subscriber = app.subscribe("/stream?topic=*").await;

    let cases = [
        (
            "/publish?topic=a%07b",
            "topics",
            "the topic `a\u{7}b` contains the control character U+0007",
        ),
        (
            "/publish?topic=x&topic=a%E2%80%8Bb",
            "topics",
            "format character U+200B",
        ),
        (
            "/publish?id=a%09b",
            "id",
            "the id contains the control character U+0009",
        ),
        ("/publish?id=a%7Fb", "id", "control character U+007F"),
        (
            "/publish?event=a%E2%80%AEb",
            "event type",
            "the type contains the format character U+202E",
        ),
    ];
    for (n, (path, field, needle)) in cases.into_iter().enumerate() {
        let mut response = app
            .client
            .post(app.url(path))
            .send_body("refused")
            .await
            .expect("answered");
        let text = String::from_utf8(response.body().await.expect("body").to_vec()).expect("utf-8");
        assert_json_error(response.status(), &text, StatusCode::BAD_REQUEST, needle);
        assert!(text.contains(&format!("invalid {field}")), "{path}: {text}");

        let marker = format!("after case {n}");
        let id = app.publish("", &marker).await;
        let event = subscriber.next_event().await;
        assert_eq!(event.data.as_deref(), Some(marker.as_str()), "{path}");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
    // Letters of any script are not control characters.
    let accepted = app
        .client
        .post(app.url("/publish?topic=caf%C3%A9&id=%C3%BCn%C3%AF&event=n%C3%A9"))
        .send_body("accepted")
        .await
        .expect("answered");
    assert_eq!(accepted.status(), StatusCode::OK);
    let event = subscriber.next_event().await;
    assert_eq!(event.data.as_deref(), Some("accepted"));
    assert_eq!(event.id.as_deref(), Some("ünï"));
    assert_eq!(app.stats().await["events_published_total"], 6);
}
