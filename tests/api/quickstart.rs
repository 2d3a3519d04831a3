//! The quick-start API of the original Go program: `/stream` and the three triggers.

use actix_web::http::StatusCode;
use futures_util::future::join_all;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::helpers::{FRAME_TIMEOUT, SETTLE_TIMEOUT, spawn_app};

/// `/stream` answers with exactly the SSE headers, and its first bytes (the opening comment)
/// arrive before anything is published, so `EventSource.onopen` fires at once.
#[actix_web::test]
async fn stream_headers_are_exact_and_first_bytes_arrive_before_any_publish() {
    let app = spawn_app().await;
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    socket
        .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("write request");

    let mut received = Vec::new();
    let head_and_first_chunk = actix_web::rt::time::timeout(FRAME_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream closed early");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some((_, body)) = text.split_once("\r\n\r\n")
                && body.contains("\n\n")
            {
                return text.into_owned();
            }
        }
    })
    .await
    .expect("headers and a first chunk arrive without any publish");

    let (head, body) = head_and_first_chunk.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for header in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "access-control-allow-origin: *",
    ] {
        assert!(
            head.contains(&format!("\r\n{header}\r\n")),
            "missing {header:?} in {head}"
        );
    }
    let encoding = head
        .lines()
        .find_map(|l| l.strip_prefix("content-encoding: "))
        .unwrap_or("identity");
    assert_eq!(encoding, "identity", "no compression");
    // Chunked framing around the first chunk: "<len>\r\n: connected\n\n\r\n".
    assert!(body.contains(": connected\n\n"), "{body:?}");
    assert_eq!(app.stats().await["events_published_total"], 0);
}

/// Each of `/send`, `/left` and `/right` (GET or POST) reaches 200 concurrent subscribers
/// exactly once each, in publish order, with the original program's data, and answers
/// 200 text/plain with the id the subscribers see.
#[actix_web::test]
async fn each_trigger_reaches_200_subscribers_exactly_once_in_order() {
    let app = spawn_app().await;
    let mut subscribers = join_all((0..200).map(|_| app.subscribe("/stream"))).await;

    let mut expected = Vec::new();
    for (path, data, method) in [
        ("/send", "you can put json in here as the data", "GET"),
        ("/left", "left", "POST"),
        ("/right", "right", "GET"),
        ("/left", "left", "GET"),
        ("/right", "right", "POST"),
    ] {
        let mut response = match method {
            "GET" => app.client.get(app.url(path)).send().await,
            _ => app.client.post(app.url(path)).send().await,
        }
        .expect("trigger answered");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .expect("a content type"),
            "text/plain; charset=utf-8"
        );
        let id = String::from_utf8(response.body().await.expect("body").to_vec()).expect("utf-8");
        assert!(!id.is_empty());
        expected.push((id, data));
    }
    // A marker after the triggers: receiving it next proves nothing was duplicated.
    let marker = app.publish("", "marker").await;

    let results = join_all(subscribers.iter_mut().map(|s| async {
        let mut seen = Vec::new();
        for _ in 0..=expected.len() {
            let event = s.next_event().await;
            seen.push((
                event.id.expect("every event has an id"),
                event.data.expect("data"),
            ));
        }
        seen
    }))
    .await;
    for seen in results {
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(id, data)| (id.clone(), (*data).to_owned()))
            .collect();
        want.push((marker.clone(), "marker".to_owned()));
        assert_eq!(seen, want);
    }
    // The exact wire frame of a trigger is `id`, then the original data line.
    let (id, _) = &expected[1];
    let stats = app.stats().await;
    assert_eq!(stats["subscribers"], 200);
    assert_eq!(stats["events_delivered_total"], 200 * 6);
    assert!(
        id.bytes().all(|b| b.is_ascii_digit()),
        "generated ids are numbers: {id}"
    );
}

/// The wire frame of `/left` is byte for byte `id: <id>\ndata: left\n\n`.
#[actix_web::test]
async fn trigger_frame_is_byte_exact() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("/stream").await;
    let (_, id) = app.get("/left").await;
    let frame = stream.next_event().await;
    assert_eq!(frame.raw, format!("id: {id}\ndata: left\n\n"));
}

/// A subscriber that disconnects is pruned (the count falls) within a heartbeat or so
/// (50 ms in tests).
#[actix_web::test]
async fn disconnected_subscriber_is_pruned_within_a_heartbeat() {
    let app = spawn_app().await;
    let keep = app.subscribe("/stream").await;
    let gone = app.subscribe("/stream").await;
    assert_eq!(app.stats().await["subscribers"], 2);

    drop(gone);
    let started = std::time::Instant::now();
    let stats = app
        .wait_for_stats(SETTLE_TIMEOUT, |s| s["subscribers"] == 1)
        .await;
    eprintln!("pruned after {:?}", started.elapsed());
    assert_eq!(stats["subscribers_disconnected_total"], 1);
    drop(keep);
}
