//! Operations surfaces: `/metrics` counts what the streams actually carried, and `/stats`
//! shows subscriber selectors only to whom may see them, and only so many.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_json_error, query, spawn_app_with},
    mercure::{KEY, token},
};

/// `GET /stats`, with `token` as a bearer token if given: the status and the body.
async fn stats_as(app: &TestApp, token: Option<&str>) -> (StatusCode, String) {
    let mut request = app.client.get(app.url("/stats"));
    if let Some(token) = token {
        request = request.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut response = request.send().await.expect("answered");
    let body = response.body().limit(1 << 24).await.expect("a body");
    (
        response.status(),
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

/// The value of an unlabelled sample `name` in a Prometheus exposition.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// Three subscribers, five events: the delivered, byte and chunk counters agree with the
/// frames the streams carried, byte for byte.
#[actix_web::test]
async fn metrics_count_what_streams_wrote() {
    // No keep-alive comments during the test: they would be counted too.
    let app = spawn_app_with(|s| s.heartbeat = Duration::from_secs(3600)).await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(app.subscribe("/stream").await);
    }
    let mut event_bytes = 0;
    for i in 0..5 {
        let data = format!("event {i}");
        let id = app.publish("", &data).await;
        event_bytes += format!("id: {id}\ndata: {data}\n\n").len();
    }
    for subscriber in &mut subscribers {
        for i in 0..5 {
            let event = subscriber.next_event().await;
            assert_eq!(event.data.as_deref(), Some(format!("event {i}").as_str()));
        }
    }

    let (status, text) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sample(&text, "sse_hub_events_published_total"), 5);
    assert_eq!(sample(&text, "sse_hub_events_delivered_total"), 3 * 5);
    let opening = ": connected\n\n".len();
    assert_eq!(
        sample(&text, "sse_hub_bytes_written_total"),
        (3 * (opening + event_bytes)) as u64
    );
    // Per subscriber: its opening, then the five events in one to five chunks.
    let chunks = sample(&text, "sse_hub_stream_chunks_total");
    assert!((3 * 2..=3 * 6).contains(&chunks), "chunks: {chunks}");
}

/// On a hub with keys, `/stats` gives anonymous readers the counts but no selector (private
/// topic names stay hidden); a publisher token allowed to publish to `*` sees the breakdown, a
/// narrower one or a subscriber token gets 403, a bad one 401.
#[actix_web::test]
async fn stats_show_selectors_only_to_a_publisher_of_everything() {
    let app = spawn_app_with(|s| s.jwt_key = Some(KEY.to_owned())).await;
    let secret = "https://example.com/users/7/inbox";
    let _subscriber = app
        .subscribe(&format!("/stream?{}", query(&[("topic", secret)])))
        .await;

    let (status, body) = stats_as(&app, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.contains(secret),
        "anonymous /stats names a topic: {body}"
    );
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["subscribers"], 1);
    assert!(stats.get("subscribers_by_selector").is_none(), "{stats}");

    let (status, body) = stats_as(&app, Some(&token(&["*"], &[]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["subscribers_by_selector"], json!({ secret: 1 }));
    assert_eq!(stats["selectors_omitted"], 0);

    for narrow in [token(&["https://example.com/{x}"], &[]), token(&[], &["*"])] {
        let (status, body) = stats_as(&app, Some(&narrow)).await;
        assert_json_error(status, &body, StatusCode::FORBIDDEN, "publish to `*`");
    }
    let (status, body) = stats_as(&app, Some("not.a.jwt")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// The breakdown lists only the `--stats-selectors` selectors with the most subscribers, counts
/// the ones left out, and cuts long selector texts, so its size does not grow with them.
#[actix_web::test]
async fn stats_breakdown_is_bounded() {
    let app = spawn_app_with(|s| s.stats_selectors = 2).await;
    let long = |c: char| c.to_string().repeat(1000);
    let mut streams = Vec::new();
    for selector in [
        "hot".to_owned(),
        "hot".to_owned(),
        long('a'),
        long('b'),
        long('c'),
    ] {
        let path = format!("/stream?{}", query(&[("topic", &selector)]));
        streams.push(app.subscribe(&path).await);
    }

    let (status, body) = stats_as(&app, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.len() < 2_000, "{} bytes: {body}", body.len());
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["subscribers"], 5);
    // "hot" has the most subscribers; among the ties the smaller text wins.
    let cut = format!(
        "{}…",
        "a".repeat(sse_hub::broadcaster::STATS_SELECTOR_BYTES)
    );
    assert_eq!(
        stats["subscribers_by_selector"],
        json!({ "hot": 2, cut: 1 })
    );
    assert_eq!(stats["selectors_omitted"], 2);
}
