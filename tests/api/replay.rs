//! History and `Last-Event-ID` replay: resuming, the seam under load, the `reset` event.

use std::{rc::Rc, time::Duration};

use actix_web::http::{StatusCode, header::HeaderValue};
use futures_util::future::{join, join_all};
use serde_json::{Value, json};
use sse_hub::config::Store;

use crate::helpers::{
    Frame, SseStream, TestApp, assert_json_error, query, spawn_app, spawn_app_with,
};

const TOPICS: [&str; 3] = ["red", "green", "blue"];

/// One published event as the test remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    id: String,
    topic: &'static str,
    data: String,
}

/// Publishes `count` events to [`TOPICS`] in turn (event `n` goes to `TOPICS[n % 3]`).
async fn publish_round_robin(app: &TestApp, count: usize) -> Vec<Sent> {
    let mut sent = Vec::with_capacity(count);
    for n in 0..count {
        let topic = TOPICS[n % TOPICS.len()];
        let data = format!("event {n} on {topic}");
        let id = app.publish(&query(&[("topic", topic)]), &data).await;
        sent.push(Sent { id, topic, data });
    }
    sent
}

/// The (id, data) of the next event, which must be an ordinary one.
async fn next_id_and_data(stream: &mut SseStream) -> (String, String) {
    let event = stream.next_event().await;
    assert_eq!(event.event, None, "an ordinary event, got {event:?}");
    (
        event.id.expect("every event has an id"),
        event.data.expect("every event has data"),
    )
}

/// Reads `want.len()` events and asserts they are `want`, in order.
async fn assert_replayed(stream: &mut SseStream, want: &[&Sent]) {
    let mut seen = Vec::with_capacity(want.len());
    for _ in want {
        seen.push(next_id_and_data(stream).await);
    }
    let want: Vec<(String, String)> = want
        .iter()
        .map(|s| (s.id.clone(), s.data.clone()))
        .collect();
    assert_eq!(seen, want);
}

/// The reply to a subscribe that must be refused: status and body.
async fn refused_subscribe(
    app: &TestApp,
    path: &str,
    header: Option<HeaderValue>,
) -> (StatusCode, String) {
    let mut request = app.client.get(app.url(path));
    if let Some(value) = header {
        request = request.insert_header(("last-event-id", value));
    }
    let mut response = request.send().await.expect("answered");
    let body = response.body().await.expect("a body");
    (
        response.status(),
        String::from_utf8(body.to_vec()).expect("utf-8 body"),
    )
}

/// Subscribes to `red` and `green` on `path` (with `headers`) after 50 round-robin events,
/// and asserts the stream replays exactly the matching events after the 20th, in order, then
/// delivers the next live one.
async fn assert_resumes_after_20th(
    app: &TestApp,
    sent: &[Sent],
    path_query: &str,
    headers: &[(&str, &str)],
) {
    let mut stream = app
        .subscribe_with(
            &format!("/stream?topic=red&topic=green&{path_query}"),
            headers,
        )
        .await;
    let want: Vec<&Sent> = sent[20..].iter().filter(|s| s.topic != "blue").collect();
    assert_eq!(
        want.len(),
        20,
        "30 events after the 20th, a third of them blue"
    );
    assert_replayed(&mut stream, &want).await;

    let live_blue = app.publish("topic=blue", "live blue").await;
    let live_green = app.publish("topic=green", "live green").await;
    assert_ne!(live_blue, live_green);
    assert_eq!(
        next_id_and_data(&mut stream).await,
        (live_green, "live green".to_owned()),
        "the next live matching event follows the replay"
    );
}

/// A subscriber with two of three topics resuming with the `Last-Event-ID` header from the
/// 20th of 50 events gets exactly the matching events 21..50 in order, then live ones.
#[actix_web::test]
async fn last_event_id_header_replays_matching_events_after_it_then_live_ones() {
    let app = spawn_app().await;
    let sent = publish_round_robin(&app, 50).await;

    assert_resumes_after_20th(&app, &sent, "", &[("last-event-id", &sent[19].id)]).await;
}

/// The `lastEventID` and `last_event_id` query parameters resume exactly like the header.
#[actix_web::test]
async fn last_event_id_query_parameters_replay_like_the_header() {
    for parameter in ["lastEventID", "last_event_id"] {
        let app = spawn_app().await;
        let sent = publish_round_robin(&app, 50).await;

        let resume = query(&[(parameter, &sent[19].id)]);
        assert_resumes_after_20th(&app, &sent, &resume, &[]).await;
    }
}

/// When both are given, the `Last-Event-ID` header wins over the query parameters.
#[actix_web::test]
async fn last_event_id_header_wins_over_query_parameter() {
    let app = spawn_app().await;
    let sent = publish_round_robin(&app, 50).await;

    let resume = query(&[("lastEventID", &sent[39].id), ("last_event_id", "unknown")]);
    assert_resumes_after_20th(&app, &sent, &resume, &[("last-event-id", &sent[19].id)]).await;
}

/// `earliest` replays the whole history with no `reset`; the `Last-Event-ID` response header
/// says `earliest`, as no event precedes the first one sent (Mercure's rule); a resume from a
/// held id names that id, and a subscriber that does not resume gets the newest id.
#[actix_web::test]
async fn earliest_replays_everything_and_the_header_names_the_event_before_the_first_sent() {
    let app = spawn_app().await;
    let empty = app
        .subscribe_with("/stream", &[("last-event-id", "earliest")])
        .await;
    assert_eq!(
        empty.headers().get("last-event-id").expect("the header"),
        "earliest"
    );
    drop(empty);
    let sent = publish_round_robin(&app, 12).await;

    let mut stream = app
        .subscribe_with("/stream", &[("last-event-id", "earliest")])
        .await;
    let mut blue = app
        .subscribe("/stream?topic=blue&lastEventID=earliest")
        .await;

    for s in [&stream, &blue] {
        assert_eq!(
            s.headers().get("last-event-id").expect("the header"),
            "earliest"
        );
    }
    let third = &sent[2].id;
    let resumed = app
        .subscribe_with("/stream", &[("last-event-id", third.as_str())])
        .await;
    assert_eq!(
        resumed.headers().get("last-event-id").expect("the header"),
        third.as_str()
    );
    let fresh = app.subscribe("/stream").await;
    assert_eq!(
        fresh.headers().get("last-event-id").expect("the header"),
        sent.last().expect("events").id.as_str()
    );
    assert_replayed(&mut stream, &sent.iter().collect::<Vec<_>>()).await;
    let blues: Vec<&Sent> = sent.iter().filter(|s| s.topic == "blue").collect();
    assert_replayed(&mut blue, &blues).await;
    let live = app.publish("topic=blue", "live").await;
    assert_eq!(
        next_id_and_data(&mut stream).await,
        (live.clone(), "live".to_owned())
    );
    assert_eq!(next_id_and_data(&mut blue).await, (live, "live".to_owned()));
}

/// Asserts `frame` is the `reset` event for `last_event_id` with `oldest_id`, and has no id.
fn assert_reset(frame: &Frame, last_event_id: &str, oldest_id: Option<&str>) {
    assert_eq!(frame.event.as_deref(), Some("reset"), "{frame:?}");
    assert_eq!(
        frame.id, None,
        "a reset must not move the resume point: {frame:?}"
    );
    assert!(
        !frame.raw.contains("\nid:") && !frame.raw.starts_with("id:"),
        "{frame:?}"
    );
    let data: Value =
        serde_json::from_str(frame.data.as_deref().expect("data")).expect("JSON data");
    assert_eq!(
        data,
        json!({ "lastEventId": last_event_id, "oldestId": oldest_id })
    );
}

/// An id the history never held gets the `reset` event right after the opening comment,
/// then the whole retained history, then live events.
#[actix_web::test]
async fn unknown_last_event_id_gets_reset_then_whole_history() {
    let app = spawn_app().await;
    let mut empty = app
        .subscribe_with("/stream", &[("last-event-id", "never-published")])
        .await;
    let frame = empty.next_frame().await.expect("a frame");
    assert_reset(&frame, "never-published", None);
    drop(empty);
    let sent = publish_round_robin(&app, 6).await;

    let mut stream = app
        .subscribe_with("/stream", &[("last-event-id", "never-published")])
        .await;

    let frame = stream.next_frame().await.expect("a frame");
    assert_reset(&frame, "never-published", Some(&sent[0].id));
    assert_eq!(stream.last_event_id, None);
    assert_replayed(&mut stream, &sent.iter().collect::<Vec<_>>()).await;
    let live = app.publish("", "live").await;
    assert_eq!(
        next_id_and_data(&mut stream).await,
        (live, "live".to_owned())
    );
}

/// An id trimmed from a 5-event history gets the `reset` event first (naming the oldest
/// retained id), then the 5 retained events.
#[actix_web::test]
async fn trimmed_last_event_id_gets_reset_then_retained_events() {
    let app = spawn_app_with(|s| s.history_size = 5).await;
    let sent = publish_round_robin(&app, 10).await;

    let mut stream = app
        .subscribe_with("/stream", &[("last-event-id", &sent[1].id)])
        .await;

    let frame = stream.next_frame().await.expect("a frame");
    assert_reset(&frame, &sent[1].id, Some(&sent[5].id));
    assert_replayed(&mut stream, &sent[5..].iter().collect::<Vec<_>>()).await;
    // The oldest retained id is still a resume point: no reset, just what follows it.
    let mut from_oldest = app
        .subscribe_with("/stream", &[("last-event-id", &sent[5].id)])
        .await;
    assert_replayed(&mut from_oldest, &sent[6..].iter().collect::<Vec<_>>()).await;
}

/// The history keeps at most `history_size` events: the oldest id advances and a replay from
/// `earliest` yields exactly the newest `history_size` events.
#[actix_web::test]
async fn history_is_bounded_by_count() {
    let app = spawn_app_with(|s| s.history_size = 10).await;

    let sent = publish_round_robin(&app, 25).await;

    let stats = app.stats().await;
    assert_eq!(stats["history_len"], 10, "{stats}");
    assert_eq!(stats["history_oldest_id"], sent[15].id.as_str());
    assert_eq!(stats["history_newest_id"], sent[24].id.as_str());
    let mut stream = app.subscribe("/stream?lastEventID=earliest").await;
    assert_replayed(&mut stream, &sent[15..].iter().collect::<Vec<_>>()).await;
}

/// The history keeps at most `history_bytes` bytes: after every publish the byte count stays
/// within the bound, the oldest id advances, and `earliest` replays exactly what is held.
#[actix_web::test]
async fn history_is_bounded_by_bytes() {
    const LIMIT: usize = 2000;
    let app = spawn_app_with(|s| s.history_bytes = LIMIT).await;
    let padding = "x".repeat(200);

    let mut sent = Vec::new();
    let mut oldest_ids = Vec::new();
    for n in 0..30 {
        let data = format!("{n:02} {padding}");
        sent.push(app.publish("", &data).await);
        let stats = app.stats().await;
        let bytes = stats["history_bytes"].as_u64().expect("a number") as usize;
        assert!(bytes <= LIMIT, "after {n}: {stats}");
        assert_eq!(stats["history_newest_id"], sent[n].as_str());
        oldest_ids.push(
            stats["history_oldest_id"]
                .as_str()
                .expect("an id")
                .to_owned(),
        );
    }

    // ~250 bytes an event: fewer than ten fit, so trimming started long ago.
    let stats = app.stats().await;
    let len = stats["history_len"].as_u64().expect("a number") as usize;
    assert!((1..10).contains(&len), "{stats}");
    assert_eq!(oldest_ids[0], sent[0]);
    assert_eq!(oldest_ids[29], sent[30 - len]);
    let oldest: Vec<u64> = oldest_ids
        .iter()
        .map(|id| id.parse().expect("generated ids are numbers"))
        .collect();
    assert!(
        oldest.windows(2).all(|w| w[0] <= w[1]),
        "the oldest id never goes back: {oldest_ids:?}"
    );
    let mut stream = app.subscribe("/stream?lastEventID=earliest").await;
    for id in &sent[30 - len..] {
        assert_eq!(&next_id_and_data(&mut stream).await.0, id);
    }
    let live = app.publish("", "live").await;
    assert_eq!(next_id_and_data(&mut stream).await.0, live);
}

/// Malformed `Last-Event-ID` values (too long, control characters, line breaks, empty, not
/// visible ASCII, repeated) get 400 with a JSON error, and register no subscriber.
#[actix_web::test]
async fn malformed_last_event_id_is_refused() {
    let app = spawn_app().await;
    let longest = "x".repeat(1024);
    let too_long = "x".repeat(1025);
    let cases: Vec<(String, Option<HeaderValue>, &str)> = vec![
        (
            "/stream".to_owned(),
            Some(HeaderValue::from_str(&too_long).expect("a valid header")),
            "Last-Event-ID is longer than 1024 bytes",
        ),
        (
            format!("/stream?{}", query(&[("lastEventID", &too_long)])),
            None,
            "Last-Event-ID is longer than 1024 bytes",
        ),
        (
            "/stream?lastEventID=a%01b".to_owned(),
            None,
            "Last-Event-ID must not contain control characters",
        ),
        (
            "/stream?last_event_id=a%7Fb".to_owned(),
            None,
            "Last-Event-ID must not contain control characters",
        ),
        (
            "/stream".to_owned(),
            Some(HeaderValue::from_static("a\tb")),
            "Last-Event-ID must not contain control characters",
        ),
        (
            "/stream?lastEventID=a%0Ab".to_owned(),
            None,
            "Last-Event-ID must not contain CR, LF or NUL",
        ),
        (
            "/stream?lastEventID=".to_owned(),
            None,
            "Last-Event-ID must not be empty",
        ),
        (
            "/stream".to_owned(),
            Some(HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text is a valid header")),
            "Last-Event-ID must be visible ASCII",
        ),
        (
            "/stream?lastEventID=1&lastEventID=2".to_owned(),
            None,
            "`lastEventID` given more than once",
        ),
    ];
    for (path, header, needle) in cases {
        let (status, body) = refused_subscribe(&app, &path, header).await;
        assert_json_error(status, &body, StatusCode::BAD_REQUEST, needle);
    }
    assert_eq!(app.stats().await["subscribers"], 0);

    // 1024 bytes is still a (never published) id: the stream opens and says `reset`.
    let mut stream = app
        .subscribe_with("/stream", &[("last-event-id", &longest)])
        .await;
    let frame = stream.next_frame().await.expect("a frame");
    assert_reset(&frame, &longest, None);
}

/// A tiny deterministic PRNG (xorshift64), so "random" moments are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Any non-zero state works; spread small seeds over the bits.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

/// The ids a subscriber sees while it drops its stream after a random number of events and
/// resumes with its last id, until it has seen `total` events. Returns them and the number
/// of reconnects.
async fn resume_at_random(
    app: &TestApp,
    mut stream: SseStream,
    path: &str,
    total: usize,
    seed: u64,
) -> (Vec<String>, usize) {
    let mut rng = XorShift::new(seed);
    let mut seen: Vec<String> = Vec::with_capacity(total);
    let mut reconnects = 0;
    loop {
        let budget = 1 + rng.below(80);
        let mut read = 0;
        while read < budget {
            let Some(frame) = stream.next_frame().await else {
                break; // dropped (too slow): resume like a browser would
            };
            if frame.comment.is_some() {
                continue;
            }
            assert_eq!(
                frame.event, None,
                "no reset on a seamless resume: {frame:?}"
            );
            seen.push(frame.id.expect("every event has an id"));
            if seen.len() == total {
                return (seen, reconnects);
            }
            read += 1;
        }
        drop(stream);
        if rng.below(4) == 0 {
            // Sometimes stay away a moment, so publishes pile up in between.
            actix_web::rt::time::sleep(Duration::from_millis(rng.below(4))).await;
        }
        let last = seen.last().expect("at least one event before a reconnect");
        stream = app.subscribe_with(path, &[("last-event-id", last)]).await;
        reconnects += 1;
    }
}

/// While 4 publishers send 2000 events as fast as they can, 50 subscribers each drop their
/// stream at random moments and resume with their last id; each ends up with every event
/// exactly once, in the hub's order (seen by one subscriber that never disconnects).
#[actix_web::test]
async fn resuming_at_random_moments_under_load_loses_and_repeats_nothing() {
    resume_at_random_moments_under_load(Store::Memory).await;
}

/// The same seam on the file store, where events are applied a committed batch at a time.
#[actix_web::test]
async fn resuming_at_random_moments_on_the_file_store_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    resume_at_random_moments_under_load(Store::File(dir.path().join("history.redb"))).await;
}

async fn resume_at_random_moments_under_load(store: Store) {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 500;
    const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
    const RESUMERS: usize = 50;
    let app = Rc::new(
        spawn_app_with(|s| {
            s.history_size = 4 * TOTAL;
            s.store = store;
        })
        .await,
    );
    let mut steady = app.subscribe("/stream?topic=seam").await;
    let mut resumers = Vec::new();
    for n in 0..RESUMERS {
        // Half with a selector, half without: both index paths.
        let path = if n % 2 == 0 {
            "/stream?topic=seam"
        } else {
            "/stream"
        };
        let stream = app.subscribe(path).await;
        let app = Rc::clone(&app);
        resumers.push(actix_web::rt::spawn(async move {
            resume_at_random(&app, stream, path, TOTAL, n as u64 + 1).await
        }));
    }
    let started = std::time::Instant::now();

    let publishers = join_all((0..PUBLISHERS).map(|p| {
        let app = Rc::clone(&app);
        async move {
            let mut ids = Vec::with_capacity(PER_PUBLISHER);
            for n in 0..PER_PUBLISHER {
                ids.push(app.publish("topic=seam", &format!("{p}/{n}")).await);
            }
            ids
        }
    }));
    let ground_truth = async {
        let mut ids = Vec::with_capacity(TOTAL);
        while ids.len() < TOTAL {
            ids.push(steady.next_event().await.id.expect("an id"));
        }
        ids
    };
    let (published, ground_truth) = join(publishers, ground_truth).await;
    let mut results = Vec::new();
    for resumer in resumers {
        results.push(resumer.await.expect("the resumer finished"));
    }
    eprintln!("seam test: publish and resume took {:?}", started.elapsed());

    let mut all_published: Vec<&String> = published.iter().flatten().collect();
    all_published.sort();
    let mut in_hub_order: Vec<&String> = ground_truth.iter().collect();
    in_hub_order.sort();
    assert_eq!(
        in_hub_order, all_published,
        "the steady subscriber saw each event once"
    );
    let numbers: Vec<u64> = ground_truth
        .iter()
        .map(|id| id.parse().expect("generated ids are numbers"))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "generated ids increase in the hub's order"
    );
    let mut reconnects = 0;
    for (n, (seen, count)) in results.into_iter().enumerate() {
        assert_eq!(seen.len(), TOTAL, "resumer {n}");
        if let Some(at) = seen.iter().zip(&ground_truth).position(|(a, b)| a != b) {
            panic!(
                "resumer {n} diverges at event {at}: saw {:?}, the hub sent {:?}",
                &seen[at..(at + 3).min(TOTAL)],
                &ground_truth[at..(at + 3).min(TOTAL)]
            );
        }
        reconnects += count;
    }
    eprintln!("seam test: {reconnects} reconnects in all");
    assert!(
        reconnects >= RESUMERS * 10,
        "enough seams were crossed: {reconnects}"
    );
    let stats = app.stats().await;
    assert_eq!(stats["history_len"], TOTAL, "nothing was trimmed: {stats}");
}

/// A subscriber that stops reading is dropped once its small buffer is full; its stream ends
/// after the queued events, and resuming with its last id yields the rest: every event
/// exactly once, in order.
#[actix_web::test]
async fn slow_subscriber_dropped_resumes_without_loss() {
    const EVENT_BYTES: usize = 64 * 1024;
    const MAX_EVENTS: usize = 1500;
    let app = spawn_app_with(|s| {
        s.subscriber_buffer = 4;
        s.body_limit_bytes = 2 * EVENT_BYTES;
        s.history_size = 2 * MAX_EVENTS;
        s.history_bytes = 2 * MAX_EVENTS * (EVENT_BYTES + 100);
    })
    .await;
    let mut stalled = app.subscribe("/stream").await;
    let padding = "x".repeat(EVENT_BYTES - 6);

    // Publish until the hub gives up on the stalled subscriber (kernel buffers on both ends
    // absorb megabytes first), then a few more that it can only get from the history.
    let mut sent = Vec::new();
    let mut after_drop = None;
    while after_drop.is_none_or(|n| sent.len() < n) {
        assert!(
            sent.len() < MAX_EVENTS,
            "not dropped after {MAX_EVENTS} events"
        );
        let data = format!("{:05} {padding}", sent.len());
        sent.push(app.publish("", &data).await);
        if after_drop.is_none()
            && sent.len() % 8 == 0
            && app.stats().await["subscribers_dropped_slow_total"] == 1
        {
            after_drop = Some(sent.len() + 5);
        }
    }
    eprintln!(
        "stalled subscriber dropped within {} events",
        sent.len() - 5
    );

    let mut seen = Vec::new();
    while let Some(frame) = stalled.next_frame().await {
        if frame.comment.is_none() {
            let data = frame.data.expect("data");
            seen.push((frame.id.expect("an id"), data[..5].to_owned()));
        }
    }
    let first_stream = seen.len();
    assert!(first_stream < sent.len(), "the dropped stream ended early");
    let last = stalled.last_event_id.clone().expect("some events arrived");
    let mut resumed = app
        .subscribe_with("/stream", &[("last-event-id", &last)])
        .await;
    while seen.len() < sent.len() {
        let (id, data) = next_id_and_data(&mut resumed).await;
        seen.push((id, data[..5].to_owned()));
    }

    let want: Vec<(String, String)> = sent
        .iter()
        .enumerate()
        .map(|(n, id)| (id.clone(), format!("{n:05}")))
        .collect();
    assert_eq!(
        seen, want,
        "every event once, in order, across the two streams"
    );
    let live = app.publish("", "live").await;
    assert_eq!(
        next_id_and_data(&mut resumed).await,
        (live, "live".to_owned())
    );
    eprintln!(
        "first stream {first_stream} events, resumed stream {}",
        sent.len() - first_stream
    );
}

/// `earliest` cannot be a publisher's id: a browser holding it would resume with `earliest`
/// and replay the whole history again.
#[actix_web::test]
async fn earliest_is_refused_as_an_event_id() {
    let app = spawn_app().await;
    let (status, body) = app.post("/publish?id=earliest", "x").await;
    assert_json_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "must not be `earliest`",
    );
    assert_eq!(app.stats().await["events_published_total"], 0);
}
