//! Operations surfaces: `/metrics` counts what the streams actually carried.

use std::time::Duration;

use actix_web::http::StatusCode;

use crate::helpers::spawn_app_with;

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
