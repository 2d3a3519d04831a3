//! Many nodes on one Redis (issue 11), against real processes: hubs of the built binary, a
//! `redis-server` each test starts and kills, and nginx in front of them as the load balancer.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use actix_web::http::{StatusCode, header::HeaderMap};
use awc::Client;
use futures_util::future::join;
use serde_json::Value;

use crate::helpers::{
    ChildHub, EVENT_TIMEOUT, FRAME_TIMEOUT, Frame, Persistence, RedisServer, Resp, SseStream,
    client, find_on_path, free_port, query, send_signal,
};

impl Node {
    /// Publishes a Mercure update form with a publisher token for every topic.
    async fn post_update(&self, fields: &[(&str, &str)]) -> Reply {
        let response = self
            .client
            .post(self.url("/.well-known/mercure"))
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .insert_header((
                "authorization",
                format!("Bearer {}", crate::mercure::token(&["*"], &[])),
            ))
            .send_body(query(fields))
            .await;
        read_reply(response, &format!("Mercure publish on {}", self.name)).await
    }

    /// Opens a Mercure stream for `query` with a 0.x token allowed every private update.
    /// `POST path` with a publisher token allowed every topic (for hubs with a key).
    async fn post_authorized(&self, path: &str, body: &str) -> Reply {
        let response = self
            .client
            .post(self.url(path))
            .insert_header((
                "authorization",
                format!("Bearer {}", crate::mercure::token(&["*"], &[])),
            ))
            .send_body(body.to_owned())
            .await;
        read_reply(response, &format!("POST {path} on {}", self.name)).await
    }

    pub(crate) async fn subscribe_mercure(
        &self,
        query: &str,
        last_event_id: Option<&str>,
    ) -> SseStream {
        let token = crate::mercure::token(&[], &["*"]);
        let mut request = self
            .client
            .get(self.url(&format!("/.well-known/mercure?{query}")))
            .insert_header(("authorization", format!("Bearer {token}")));
        if let Some(id) = last_event_id {
            request = request.insert_header(("last-event-id", id));
        }
        let response = request.send().await.expect("the hub answers");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "Mercure subscribe on {}",
            self.name
        );
        SseStream::opened(response).await
    }
}

/// Tests here start several processes each and some time their steps against a heartbeat:
/// they run one at a time, so that on a small machine they do not starve one another.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a node may take to notice Redis going away or coming back (its reconnect backoff
/// tops out at 5 s, jittered), or to end its streams after losing its place in the log.
pub(crate) const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a resume waits for a node to apply the id it resumes from (`--resume-wait`).
const RESUME_WAIT: Duration = Duration::from_secs(30);
/// How long an unwanted event is waited for before concluding it does not come.
pub(crate) const QUIET: Duration = Duration::from_millis(500);
/// Between two probes of a condition polled with a deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One hub process on the shared Redis.
pub(crate) struct Node {
    pub(crate) name: &'static str,
    pub(crate) hub: ChildHub,
    client: Client,
    /// What it was started with, for a restart.
    store: String,
    args: Vec<String>,
}

/// An HTTP reply, read whole.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    /// Asserts a JSON error reply with `status` and a non-empty `error` message.
    pub(crate) fn assert_json_error(&self, status: StatusCode, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        let json: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("{what}: the body is JSON: {:?}", self.body));
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: an `error` message: {json}"
        );
    }
}

impl Node {
    /// Starts a hub on `redis` with `prefix` and `args`, and waits until it listens.
    fn start(name: &'static str, redis: &RedisServer, prefix: &str, args: &[&str]) -> Self {
        Self::start_on(name, &redis.url(), &["--redis-prefix", prefix], args)
    }

    /// Starts a hub on `--store store` with `store_args` and `args`. A resume waits up to
    /// [`RESUME_WAIT`] for the node to apply its id, not the default 3 s: the tests assert no
    /// `reset` where a node is behind, and on a loaded machine catching up can take longer.
    pub(crate) fn start_on(
        name: &'static str,
        store: &str,
        store_args: &[&str],
        args: &[&str],
    ) -> Self {
        let resume_wait = format!("{}s", RESUME_WAIT.as_secs());
        let mut args = args.to_vec();
        args.extend_from_slice(&["--resume-wait", &resume_wait]);
        args.extend_from_slice(store_args);
        // A port below the ephemeral range: a restart binds it again, and nothing else can
        // have been given it meanwhile (a port from `bind(0)` could go to any connection).
        let bind = format!("127.0.0.1:{}", free_port());
        let command = crate::child::hub_command_on(&bind, store, &args);
        let hub = ChildHub::spawn(command);
        Self {
            name,
            hub,
            client: client(),
            store: store.to_owned(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        }
    }

    /// A deploy's restart: SIGTERM, a clean exit (awaited without blocking the test's other
    /// tasks), and the hub started again on the same address and settings, until ready.
    async fn restart(&mut self) {
        self.hub.signal("TERM");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self
                .hub
                .child
                .try_wait()
                .expect("the hub can be waited for")
            {
                break status;
            }
            assert!(
                started.elapsed() < RECOVERY_TIMEOUT,
                "{} still runs {RECOVERY_TIMEOUT:?} after SIGTERM",
                self.name
            );
            actix_web::rt::time::sleep(POLL_INTERVAL).await;
        };
        assert!(
            status.success(),
            "{} exits cleanly on SIGTERM: {status}",
            self.name
        );
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let command = crate::child::hub_command_on(&self.hub.addr.to_string(), &self.store, &args);
        self.hub = ChildHub::spawn_logged(command, self.hub.log.clone());
        let ready = wait_for_readyz(self, StatusCode::OK, RECOVERY_TIMEOUT).await;
        assert_ready(&ready, &format!("{} after its restart", self.name));
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.hub.addr)
    }

    fn pid(&self) -> u32 {
        self.hub.child.id()
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        let response = self.client.get(self.url(path)).send().await;
        read_reply(response, &format!("GET {path} on {}", self.name)).await
    }

    pub(crate) async fn post(&self, path: &str, body: &str) -> Reply {
        let response = self
            .client
            .post(self.url(path))
            .send_body(body.to_owned())
            .await;
        read_reply(response, &format!("POST {path} on {}", self.name)).await
    }

    /// Publishes `data` on `topic` and returns the id, asserting a 200 and an entry id.
    pub(crate) async fn publish(&self, topic: &str, data: &str) -> String {
        let reply = self
            .post(&format!("/publish?{}", query(&[("topic", topic)])), data)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "publish on {}: {}",
            self.name,
            reply.body
        );
        entry_id(&reply.body);
        reply.body
    }

    /// Opens `GET /stream?topic=…` (resuming after `last_event_id` if given) and reads its
    /// opening comment, so the subscriber is registered when this returns.
    pub(crate) async fn subscribe(&self, topic: &str, last_event_id: Option<&str>) -> SseStream {
        open_stream(
            &self.client,
            &self.url(&format!("/stream?{}", query(&[("topic", topic)]))),
            last_event_id,
        )
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "hub {} (pid {}) log, last lines:\n{}",
                self.name,
                self.pid(),
                self.hub.log.tail(40)
            );
        }
    }
}

async fn read_reply(
    response: Result<awc::ClientResponse, awc::error::SendRequestError>,
    what: &str,
) -> Reply {
    let mut response = response.unwrap_or_else(|err| panic!("{what}: no answer: {err}"));
    let body = response
        .body()
        .limit(1 << 24)
        .await
        .unwrap_or_else(|err| panic!("{what}: body: {err}"));
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Opens a stream at `url` and reads its opening comment.
async fn open_stream(client: &Client, url: &str, last_event_id: Option<&str>) -> SseStream {
    let mut request = client.get(url);
    if let Some(id) = last_event_id {
        request = request.insert_header(("last-event-id", id));
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    SseStream::opened(response).await
}

/// A Redis server and hubs on it, under one key prefix of their own.
pub(crate) struct Cluster {
    // Declared first, so the hubs are dropped (killed) before their Redis.
    pub(crate) nodes: Vec<Node>,
    pub(crate) redis: RedisServer,
    pub(crate) prefix: String,
}

impl Cluster {
    /// Starts redis-server, then one hub per name in `names`, each with `args`, and waits
    /// until every hub is ready: a hub listens before it has reached Redis, and answers
    /// `/readyz` 503 until it has.
    pub(crate) async fn start(
        test: &str,
        persistence: Persistence,
        names: &[&'static str],
        args: &[&str],
    ) -> Self {
        let redis = RedisServer::start(persistence);
        let prefix = format!("sse-hub-test-{}-{test}", std::process::id());
        let nodes: Vec<Node> = names
            .iter()
            .map(|name| Node::start(name, &redis, &prefix, args))
            .collect();
        for node in &nodes {
            let ready = wait_for_readyz(node, StatusCode::OK, RECOVERY_TIMEOUT).await;
            assert_ready(&ready, "/readyz once started");
        }
        Self {
            nodes,
            redis,
            prefix,
        }
    }

    pub(crate) fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// The key of the shared event stream.
    pub(crate) fn log_key(&self) -> String {
        format!("{}:log", self.prefix)
    }
}

/// A generated id split into its parts, asserting it looks like a Redis stream entry id
/// (`<milliseconds>-<sequence>`): the order of ids is the order of these pairs.
fn entry_id(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .filter(|_| id.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        .unwrap_or_else(|| panic!("{id:?} is not a stream entry id (`\\d+-\\d+`)"))
}

/// Asserts `ids` are entry ids in strictly increasing order.
fn assert_increasing(ids: &[String], what: &str) {
    assert!(
        ids.windows(2).all(|w| entry_id(&w[0]) < entry_id(&w[1])),
        "{what}: ids strictly increase: {ids:?}"
    );
}

/// `(id, data)` of each event, asserting none is a control event (`reset`).
pub(crate) fn id_and_data(events: &[Frame]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|frame| {
            assert_eq!(frame.event, None, "a plain event: {frame:?}");
            (
                frame.id.clone().expect("every event has an id"),
                frame.data.clone().unwrap_or_default(),
            )
        })
        .collect()
}

pub(crate) async fn next_events(stream: &mut SseStream, n: usize) -> Vec<Frame> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(stream.next_event().await);
    }
    events
}

/// Reads a stream to its end, which must come within `deadline`: the frames it carried, the
/// keep-alive comments left out.
async fn frames_until_end(stream: &mut SseStream, deadline: Duration, what: &str) -> Vec<Frame> {
    let until = Instant::now() + deadline;
    let mut frames = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match stream.next_frame_within(left).await {
            None => panic!("{what}: the stream did not end within {deadline:?}; got {frames:?}"),
            Some(None) => return frames,
            Some(Some(frame)) if frame.comment.is_some() => {}
            Some(Some(frame)) => frames.push(frame),
        }
    }
}

/// Asserts that `stream` ends with a `retry: <ms>` frame within `deadline`, and returns the
/// events that came before it.
async fn assert_ends_with_retry(
    stream: &mut SseStream,
    deadline: Duration,
    what: &str,
) -> Vec<Frame> {
    let mut frames = frames_until_end(stream, deadline, what).await;
    let last = frames
        .pop()
        .unwrap_or_else(|| panic!("{what}: a `retry:` frame before the end, got nothing"));
    assert!(
        last.retry
            .as_deref()
            .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit())),
        "{what}: the last frame sets `retry: <ms>`: {last:?} (before it: {frames:?})"
    );
    assert!(
        last.id.is_none() && last.data.is_none(),
        "{what}: the retry frame carries no event: {last:?}"
    );
    frames
}

/// Asserts that `stream` gets `beats` keep-alive comments and nothing else: open, idle.
pub(crate) async fn assert_keeps_alive(stream: &mut SseStream, beats: usize, what: &str) {
    let until = Instant::now() + FRAME_TIMEOUT;
    let mut seen = 0;
    while seen < beats {
        let left = until.saturating_duration_since(Instant::now());
        match stream.next_frame_within(left).await {
            None => panic!("{what}: {seen} of {beats} keep-alives within {FRAME_TIMEOUT:?}"),
            Some(None) => panic!("{what}: the stream ended"),
            Some(Some(frame)) => {
                assert_eq!(
                    frame.comment.as_deref(),
                    Some("keep-alive"),
                    "{what}: only keep-alives: {frame:?}"
                );
                seen += 1;
            }
        }
    }
}

/// Asserts `frame` is the `reset` event for a resume from `last_event_id`; returns its
/// `oldestId`.
fn assert_reset(frame: &Frame, last_event_id: &str) -> Value {
    assert_eq!(frame.event.as_deref(), Some("reset"), "a reset: {frame:?}");
    assert_eq!(frame.id, None, "a reset has no id: {frame:?}");
    let data: Value = serde_json::from_str(frame.data.as_deref().unwrap_or_default())
        .expect("reset data is JSON");
    assert_eq!(data["lastEventId"], last_event_id, "{data}");
    data["oldestId"].clone()
}

/// Polls `probe` until it yields a value, failing with `what` after `deadline`.
pub(crate) async fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `GET /readyz` on `node` until it answers `status`; returns that reply.
pub(crate) async fn wait_for_readyz(node: &Node, status: StatusCode, deadline: Duration) -> Reply {
    let what = format!("/readyz {status} on {}", node.name);
    eventually(&what, deadline, async || {
        let reply = node.get("/readyz").await;
        (reply.status == status).then_some(reply)
    })
    .await
}

pub(crate) fn assert_ready(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
    let json: Value = serde_json::from_str(&reply.body).expect("/readyz answers JSON");
    assert_eq!(json, serde_json::json!({"status": "ready"}), "{what}");
}

/// An event published on one node reaches subscribers on every node exactly once, in publish
/// order, with its data; generated ids are the stream's entry ids.
#[actix_web::test]
async fn an_event_published_on_one_node_reaches_every_node_once_in_order() {
    let _serial = SERIAL.lock().await;
    // Arrange: three nodes, a subscriber on each.
    let cluster = Cluster::start("fanout", Persistence::Off, &["A", "B", "C"], &[]).await;
    let mut streams = Vec::new();
    for node in &cluster.nodes {
        streams.push((node.name, node.subscribe("news", None).await));
    }

    // Act: C publishes ten events.
    let mut sent = Vec::new();
    for n in 0..10 {
        let data = format!("news {n}");
        sent.push((cluster.node(2).publish("news", &data).await, data));
    }

    // Assert
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    assert_increasing(&ids, "acknowledged ids");
    for (name, stream) in &mut streams {
        let got = id_and_data(&next_events(stream, sent.len()).await);
        assert_eq!(got, sent, "subscriber on {name}: every event, in order");
        stream.assert_no_event_within(QUIET).await;
    }
}

/// A subscriber cut off on A resumes on B from the last id it saw: together its two streams
/// carry every event published meanwhile (round-robin on all nodes), none twice, in order.
#[actix_web::test]
async fn a_subscriber_resumes_on_another_node_without_gap_or_duplicate() {
    const TOTAL: usize = 120;
    const BEFORE_CUT: usize = 20;
    let _serial = SERIAL.lock().await;
    // Arrange: a publisher on all three nodes in turn, one event every few milliseconds.
    let cluster =
        std::rc::Rc::new(Cluster::start("resume", Persistence::Off, &["A", "B", "C"], &[]).await);
    let mut on_a = cluster.node(0).subscribe("feed", None).await;
    let acked = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let publisher = actix_web::rt::spawn({
        let (cluster, acked) = (cluster.clone(), acked.clone());
        async move {
            for n in 0..TOTAL {
                let data = format!("feed {n}");
                let id = cluster.node(n % 3).publish("feed", &data).await;
                acked.borrow_mut().push((id, data));
                // Paced, so that publishes are still going on while the subscriber switches.
                actix_web::rt::time::sleep(Duration::from_millis(3)).await;
            }
        }
    });

    // Act: read some events on A, drop the connection, resume on B.
    let mut seen = id_and_data(&next_events(&mut on_a, BEFORE_CUT).await);
    drop(on_a);
    let acked_at_cut = acked.borrow().len();
    let last = seen.last().expect("events were read").0.clone();
    let mut on_b = cluster.node(1).subscribe("feed", Some(&last)).await;
    publisher.await.expect("the publisher finishes");
    let sent = acked.borrow().clone();
    let newest = sent.last().expect("events were published").0.clone();
    seen.extend(id_and_data(&on_b.events_until(&newest).await));

    // Assert
    assert!(
        acked_at_cut < TOTAL,
        "publishes went on while the subscriber moved ({acked_at_cut} of {TOTAL} before)"
    );
    assert_eq!(seen.len(), sent.len(), "as many events as published");
    assert_eq!(
        seen, sent,
        "every event once, in order, across the two nodes"
    );
    on_b.assert_no_event_within(QUIET).await;
}

/// Right after a publish on A acknowledges, a resume on B from that id is not a `reset`, and
/// the next event arrives: B never answers before it has applied what A acknowledged. (On an
/// idle machine B has nearly always read the entry by then; the test after this one puts B
/// behind on purpose.)
#[actix_web::test]
async fn a_resume_on_another_node_right_after_a_publish_finds_its_id() {
    const ROUNDS: usize = 50;
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start("read-your-write", Persistence::Off, &["A", "B", "C"], &[]).await;
    let (a, b, c) = (cluster.node(0), cluster.node(1), cluster.node(2));
    for round in 0..ROUNDS {
        // Act
        let id = a.publish("race", &format!("probe {round}")).await;
        let mut on_b = b.subscribe("race", Some(&id)).await;
        let next_data = format!("next {round}");
        let next = c.publish("race", &next_data).await;

        // Assert: the first event after the opening is the next one, not a reset.
        let event = on_b.next_event().await;
        assert_eq!(
            (
                event.event.as_deref(),
                event.id.as_deref(),
                event.data.as_deref()
            ),
            (None, Some(next.as_str()), Some(next_data.as_str())),
            "round {round}: resuming on B from {id} (published on A), then {next} on C"
        );
    }
}

/// A node far behind the log (stopped while thousands of events were published) that is
/// asked to resume from the newest id as soon as it wakes waits until it has read that id:
/// no `reset`, and the next event arrives.
#[actix_web::test]
async fn a_resume_on_a_node_that_is_behind_waits_for_its_id() {
    /// More than one read of the tail (1,024 entries), so B is behind for several round trips.
    const BACKLOG: usize = 2_400;
    const PUBLISHERS: usize = 40;
    let _serial = SERIAL.lock().await;
    // Arrange: B stopped while A publishes the backlog, then the probe.
    let cluster = std::rc::Rc::new(
        Cluster::start(
            "behind",
            Persistence::Off,
            &["A", "B"],
            &["--history-size", "5000"],
        )
        .await,
    );
    let (a, b) = (cluster.node(0), cluster.node(1));
    send_signal(b.pid(), "STOP");
    let publishers = (0..PUBLISHERS).map(|p| async move {
        for n in 0..BACKLOG / PUBLISHERS {
            a.publish("backlog", &format!("{p}/{n}")).await;
        }
    });
    futures_util::future::join_all(publishers).await;
    let probe = a.publish("t", "probe").await;

    // Act: the resume reaches B before it wakes, so B reads it while still behind.
    let resume = actix_web::rt::spawn({
        let (cluster, probe) = (cluster.clone(), probe.clone());
        async move { cluster.node(1).subscribe("t", Some(&probe)).await }
    });
    // Nothing observable says the request is in B's socket queue: give the client a moment.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    send_signal(b.pid(), "CONT");
    let mut on_b = resume.await.expect("the resume is answered");
    let next = a.publish("t", "next").await;

    // Assert
    let event = on_b.next_event().await;
    assert_eq!(
        (
            event.event.as_deref(),
            event.id.as_deref(),
            event.data.as_deref()
        ),
        (None, Some(next.as_str()), Some("next")),
        "resuming on B from {probe} while B was {BACKLOG} events behind"
    );
}

/// Redis killed under live streams: publishes get 503 with `Retry-After` and a JSON error,
/// streams stay open on keep-alives, /healthz 200 and /readyz 503. Once Redis is back with its
/// data, /readyz is 200 again, the same streams carry the new events with no reset, and a
/// subscriber resuming from before the kill gets the rest of the old events and the new ones.
#[actix_web::test]
async fn redis_down_then_back_with_its_data_loses_nothing() {
    let _serial = SERIAL.lock().await;
    // Arrange: events published and read on two nodes.
    let mut cluster = Cluster::start("outage", Persistence::Durable, &["A", "B"], &[]).await;
    let mut on_a = cluster.node(0).subscribe("t", None).await;
    let mut on_b = cluster.node(1).subscribe("t", None).await;
    let mut before = Vec::new();
    for n in 0..5 {
        let data = format!("before {n}");
        before.push((cluster.node(n % 2).publish("t", &data).await, data));
    }
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(id_and_data(&next_events(stream, 5).await), before);
    }

    // Act: kill Redis.
    cluster.redis.kill();

    // Assert: what each node does while Redis is down.
    for node in &cluster.nodes {
        let refused = eventually(
            &format!("a publish on {} refused with 503", node.name),
            RECOVERY_TIMEOUT,
            async || {
                let reply = node.post("/publish?topic=t", "during").await;
                assert_ne!(reply.status, StatusCode::OK, "a publish with Redis down");
                (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(reply)
            },
        )
        .await;
        refused.assert_json_error(StatusCode::SERVICE_UNAVAILABLE, "publish with Redis down");
        let retry_after = refused
            .headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("a Retry-After header: {:?}", refused.headers));
        assert!(
            retry_after.parse::<u64>().is_ok(),
            "Retry-After is a number of seconds: {retry_after:?}"
        );
        let not_ready =
            wait_for_readyz(node, StatusCode::SERVICE_UNAVAILABLE, RECOVERY_TIMEOUT).await;
        not_ready.assert_json_error(StatusCode::SERVICE_UNAVAILABLE, "/readyz with Redis down");
        let health = node.get("/healthz").await;
        assert_eq!(health.status, StatusCode::OK, "/healthz: {}", health.body);
    }
    assert_keeps_alive(&mut on_a, 3, "A's stream with Redis down").await;
    assert_keeps_alive(&mut on_b, 3, "B's stream with Redis down").await;

    // Act: Redis back with its data; more events.
    cluster.redis.restart();
    for node in &cluster.nodes {
        let ready = wait_for_readyz(node, StatusCode::OK, RECOVERY_TIMEOUT).await;
        assert_ready(&ready, "/readyz with Redis back");
    }
    let mut after = Vec::new();
    for n in 0..5 {
        let data = format!("after {n}");
        after.push((cluster.node(n % 2).publish("t", &data).await, data));
    }

    // Assert: the open streams go on, and a resume from before the kill finds its place.
    for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        assert_eq!(
            id_and_data(&next_events(stream, 5).await),
            after,
            "the stream on {name} carries the new events"
        );
        stream.assert_no_event_within(QUIET).await;
    }
    let mut resumed = cluster.node(1).subscribe("t", Some(&before[2].0)).await;
    let newest = &after.last().expect("events").0;
    let replayed = id_and_data(&resumed.events_until(newest).await);
    let expected: Vec<_> = before[3..].iter().chain(&after).cloned().collect();
    assert_eq!(
        replayed, expected,
        "resume from {} across the outage",
        before[2].0
    );
    let all: Vec<String> = before
        .iter()
        .chain(&after)
        .map(|(id, _)| id.clone())
        .collect();
    assert_increasing(&all, "ids across the outage");
}

/// After `FLUSHALL` and a publish, every node ends its streams with a `retry:` frame; a
/// reconnect with an id from before gets `reset`, then the new events.
#[actix_web::test]
async fn a_flushed_redis_ends_streams_and_resets_resumes() {
    let _serial = SERIAL.lock().await;
    // Arrange
    let cluster = Cluster::start("flush", Persistence::Off, &["A", "B"], &[]).await;
    let mut streams = Vec::new();
    for node in &cluster.nodes {
        streams.push(node.subscribe("t", None).await);
    }
    let mut old = Vec::new();
    for n in 0..3 {
        old.push(cluster.node(0).publish("t", &format!("old {n}")).await);
    }
    for stream in &mut streams {
        let ids: Vec<_> = id_and_data(&next_events(stream, 3).await)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, old);
    }

    // Act
    assert_eq!(
        cluster.redis.command(&["FLUSHALL"]),
        Resp::Simple("OK".to_owned())
    );
    let first_new = cluster.node(0).publish("t", "new 0").await;

    // Assert: each stream ends after a retry frame.
    for (node, stream) in cluster.nodes.iter().zip(&mut streams) {
        let what = format!("the stream on {} after FLUSHALL", node.name);
        let before_end = assert_ends_with_retry(stream, RECOVERY_TIMEOUT, &what).await;
        for frame in &before_end {
            assert!(
                frame.event.is_none() && !old.contains(frame.id.as_ref().expect("an id")),
                "{what}: nothing old again, no reset on a live stream: {before_end:?}"
            );
        }
    }
    // A reconnect with the old id, on each node: reset, then the new events.
    let mut resumed = Vec::new();
    for node in &cluster.nodes {
        let mut stream = node.subscribe("t", Some(&old[2])).await;
        let reset = stream.next_event().await;
        let oldest = assert_reset(&reset, &old[2]);
        assert!(
            oldest.is_null() || oldest == first_new.as_str(),
            "on {}: oldestId is the first new event or null: {oldest}",
            node.name
        );
        resumed.push(stream);
    }
    let second_new = cluster.node(1).publish("t", "new 1").await;
    for (node, stream) in cluster.nodes.iter().zip(&mut resumed) {
        let got = id_and_data(&stream.events_until(&second_new).await);
        assert_eq!(
            got,
            [
                (first_new.clone(), "new 0".to_owned()),
                (second_new.clone(), "new 1".to_owned())
            ],
            "on {}: after the reset, the new events",
            node.name
        );
    }
    assert_increasing(&[first_new, second_new], "new ids");
}

/// Redis restarted empty (no persistence) while nothing is published: each node notices the
/// log's epoch is gone within a few seconds, ends its streams with a `retry:` frame, and a
/// reconnect with an old id gets `reset` (nothing retained), then new events.
#[actix_web::test]
async fn redis_restarted_empty_ends_idle_streams_and_resets_resumes() {
    /// The interface promises about one block period (1 s) plus the reconnect backoff (up to
    /// 5 s); a loaded machine gets the recovery allowance.
    const DETECTION: Duration = RECOVERY_TIMEOUT;
    let _serial = SERIAL.lock().await;
    // Arrange
    let mut cluster = Cluster::start("restart-empty", Persistence::Off, &["A", "B"], &[]).await;
    let mut streams = Vec::new();
    for node in &cluster.nodes {
        streams.push(node.subscribe("t", None).await);
    }
    let mut old = Vec::new();
    for n in 0..2 {
        old.push(cluster.node(0).publish("t", &format!("old {n}")).await);
    }
    for stream in &mut streams {
        assert_eq!(next_events(stream, 2).await.len(), 2);
    }

    // Act
    cluster.redis.restart();

    // Assert: the idle streams end, with nothing else on them.
    for (node, stream) in cluster.nodes.iter().zip(&mut streams) {
        let what = format!(
            "the idle stream on {} after Redis came back empty",
            node.name
        );
        let before_end = assert_ends_with_retry(stream, DETECTION, &what).await;
        assert!(before_end.is_empty(), "{what}: no event: {before_end:?}");
    }
    let mut resumed = Vec::new();
    for node in &cluster.nodes {
        let ready = wait_for_readyz(node, StatusCode::OK, RECOVERY_TIMEOUT).await;
        assert_ready(&ready, "/readyz with Redis back empty");
        let mut stream = node.subscribe("t", Some(&old[1])).await;
        let oldest = assert_reset(&stream.next_event().await, &old[1]);
        assert!(
            oldest.is_null(),
            "on {}: nothing retained: {oldest}",
            node.name
        );
        resumed.push(stream);
    }
    let new = cluster.node(1).publish("t", "new").await;
    for (node, stream) in cluster.nodes.iter().zip(&mut resumed) {
        assert_eq!(
            id_and_data(&[stream.next_event().await]),
            [(new.clone(), "new".to_owned())],
            "on {}: after the reset, the new event",
            node.name
        );
    }
}

/// A node stopped while the log is trimmed far past its place ends its streams (after a
/// `retry:` frame) when it wakes; a reconnect from its subscriber's last id gets `reset`.
#[actix_web::test]
async fn a_node_that_fell_behind_the_trim_ends_streams_and_resets() {
    const HISTORY: usize = 10;
    const PUBLISHED_WHILE_STOPPED: usize = 300;
    let _serial = SERIAL.lock().await;
    // Arrange: a short log, trimmed exactly (one entry per stream node), and B live.
    let history = HISTORY.to_string();
    let cluster = Cluster::start(
        "trim",
        Persistence::Off,
        &["A", "B"],
        &["--history-size", &history],
    )
    .await;
    cluster.redis.trim_exactly();
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut on_b = b.subscribe("t", None).await;
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(a.publish("t", &format!("live {n}")).await);
    }
    let ids: Vec<_> = id_and_data(&next_events(&mut on_b, 3).await)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, sent);

    // Act: stop B, publish far past the trim, wake B.
    send_signal(b.pid(), "STOP");
    for n in 0..PUBLISHED_WHILE_STOPPED {
        sent.push(a.publish("t", &format!("while stopped {n}")).await);
    }
    let length = cluster.redis.command(&["XLEN", &cluster.log_key()]);
    send_signal(b.pid(), "CONT");

    // Assert: the log was trimmed; B's stream ends; a resume from its last id resets.
    assert!(
        matches!(length, Resp::Integer(n) if n > 0 && n <= 2 * HISTORY as i64),
        "{} holds about {HISTORY} entries: {length:?}",
        cluster.log_key()
    );
    let before_end =
        assert_ends_with_retry(&mut on_b, RECOVERY_TIMEOUT, "B's stream after the trim").await;
    let delivered: Vec<String> = id_and_data(&before_end)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        sent[3..].starts_with(&delivered),
        "what B delivered before ending its stream follows on without a gap: {delivered:?}"
    );
    let last = on_b
        .last_event_id
        .clone()
        .expect("B's subscriber saw events");
    let mut resumed = b.subscribe("t", Some(&last)).await;
    let reset = resumed.next_event().await;
    let oldest = assert_reset(&reset, &last);
    let next = a.publish("t", "after the trim").await;
    let replayed: Vec<String> = id_and_data(&resumed.events_until(&next).await)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    sent.push(next);
    assert!(
        sent.ends_with(&replayed),
        "after the reset: a run of the newest events, then the new one: {replayed:?}"
    );
    if let Some(oldest) = oldest.as_str() {
        assert_eq!(
            replayed.first().map(String::as_str),
            Some(oldest),
            "the replay starts at the reset's oldestId"
        );
    }
    assert!(
        replayed.len() <= HISTORY + 1,
        "B replays no more than its history: {replayed:?}"
    );
}

/// The same publisher id published on two nodes at once, round after round: exactly one
/// 200 (with the id) and one 409 (a JSON error) each time, and subscribers get it once.
#[actix_web::test]
async fn a_publisher_id_is_taken_once_across_nodes() {
    const ROUNDS: usize = 40;
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start("dup", Persistence::Off, &["A", "B"], &[]).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut stream = a.subscribe("t", None).await;
    for round in 0..ROUNDS {
        // Act
        let id = format!("dup-{round}");
        let path = format!("/publish?{}", query(&[("topic", "t"), ("id", &id)]));
        let (on_a, on_b) = join(a.post(&path, "from A"), b.post(&path, "from B")).await;

        // Assert
        let (won, lost) = match (on_a.status, on_b.status) {
            (StatusCode::OK, _) => (on_a, on_b),
            (_, StatusCode::OK) => (on_b, on_a),
            (x, y) => panic!(
                "round {round}: one publish of {id} wins, got {x} {:?} and {y} {:?}",
                on_a.body, on_b.body
            ),
        };
        assert_eq!(won.body, id, "round {round}: the winner answers the id");
        lost.assert_json_error(StatusCode::CONFLICT, &format!("round {round}: the loser"));
    }
    let ids: Vec<String> = id_and_data(&next_events(&mut stream, ROUNDS).await)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let expected: Vec<String> = (0..ROUNDS).map(|round| format!("dup-{round}")).collect();
    assert_eq!(ids, expected, "each id delivered once, in order");
    stream.assert_no_event_within(QUIET).await;
}

/// `/readyz` follows Redis: 200 while it answers, 503 (a JSON error) while it is down, 200
/// once it is back; a hub on the memory store is always ready.
#[actix_web::test]
async fn readyz_follows_redis() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start("readyz", Persistence::Off, &["A"], &[]).await;
    let node = cluster.node(0);
    // Cluster::start waited for the first 200.
    assert_ready(&node.get("/readyz").await, "/readyz with Redis up");

    cluster.redis.kill();
    let node = cluster.node(0);
    let down = wait_for_readyz(node, StatusCode::SERVICE_UNAVAILABLE, RECOVERY_TIMEOUT).await;
    down.assert_json_error(StatusCode::SERVICE_UNAVAILABLE, "/readyz with Redis down");
    assert_eq!(node.get("/healthz").await.status, StatusCode::OK);

    cluster.redis.restart();
    let node = cluster.node(0);
    let up = wait_for_readyz(node, StatusCode::OK, RECOVERY_TIMEOUT).await;
    assert_ready(&up, "/readyz with Redis back");

    let memory = Node::start_on("memory", "memory", &[], &[]);
    assert_ready(&memory.get("/readyz").await, "/readyz on the memory store");
}

/// nginx in front of three hubs, run as a child in its own directory. Killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx as a load balancer over `upstreams` and waits until it proxies `/healthz`.
    async fn start(upstreams: &[&Node]) -> Self {
        let binary = find_on_path("nginx")
            .or_else(|| Some(Path::new("/usr/sbin/nginx").to_owned()).filter(|p| p.is_file()))
            .unwrap_or_else(|| {
                panic!(
                    "nginx is not installed (expected /usr/sbin/nginx from the Debian package \
                     nginx, which scripts/test installs)"
                )
            });
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), port, upstreams)).expect("conf written");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            // One process: a master killed on drop would leave its workers running, and
            // listening, behind it.
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Self { child, port, dir };
        let client = client();
        let url = nginx.url("/healthz");
        eventually(
            "nginx proxies /healthz",
            Duration::from_secs(10),
            async || {
                if let Some(status) = nginx.child.try_wait().expect("nginx can be waited for") {
                    panic!("nginx exited ({status}); error log:\n{}", nginx.error_log());
                }
                let response = client.get(&url).send().await.ok()?;
                (response.status() == StatusCode::OK).then_some(())
            },
        )
        .await;
        nginx
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("nginx error log:\n{}", self.error_log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped load balancer configuration, `docker/nginx-cluster.conf.template` (the one
/// Compose uses), rendered for three hubs on loopback ports. The test runs as root with a
/// private directory, so the workers run as root too (as the template's header says).
fn nginx_conf(dir: &Path, port: u16, upstreams: &[&Node]) -> String {
    let template = include_str!("../../docker/nginx-cluster.conf.template");
    let [a, b, c] = upstreams else {
        panic!("the template balances exactly three hubs");
    };
    let rendered = template
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@HUB1@", &a.hub.addr.to_string())
        .replace("@HUB2@", &b.hub.addr.to_string())
        .replace("@HUB3@", &c.hub.addr.to_string())
        .replace("@DIR@", &dir.display().to_string());
    format!("user root;\n{rendered}")
}

/// Three hubs behind nginx: a subscriber through the balancer gets, as they are published,
/// an event published through the balancer and one published directly on each hub; and a
/// resume through the balancer (whichever hub it lands on) continues after its last id.
#[actix_web::test]
async fn a_subscriber_behind_nginx_gets_events_published_anywhere() {
    let _serial = SERIAL.lock().await;
    // Arrange
    let cluster = Cluster::start("nginx", Persistence::Off, &["A", "B", "C"], &[]).await;
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let nginx = Nginx::start(&nodes).await;
    let client = client();
    let stream_url = nginx.url(&format!("/stream?{}", query(&[("topic", "lb")])));
    let mut stream = open_stream(&client, &stream_url, None).await;

    // Act and assert: each event arrives before the next is published (nothing is buffered).
    let via_nginx = read_reply(
        client
            .post(nginx.url("/publish?topic=lb"))
            .send_body("through nginx")
            .await,
        "POST /publish through nginx",
    )
    .await;
    assert_eq!(via_nginx.status, StatusCode::OK, "{}", via_nginx.body);
    let mut sent = vec![(via_nginx.body, "through nginx".to_owned())];
    let event = stream.next_event().await;
    assert_eq!(id_and_data(&[event]), sent[..1], "published through nginx");
    for node in &cluster.nodes {
        let data = format!("directly on {}", node.name);
        sent.push((node.publish("lb", &data).await, data));
        let event = stream.next_event().await;
        assert_eq!(
            id_and_data(&[event]),
            sent[sent.len() - 1..],
            "published directly on {}",
            node.name
        );
    }
    let last = stream.last_event_id.clone().expect("events were read");
    drop(stream);
    let mut resumed = open_stream(&client, &stream_url, Some(&last)).await;
    let next = cluster.node(1).publish("lb", "after the resume").await;
    let event = resumed.next_event().await;
    assert_eq!(
        (event.event, event.id),
        (None, Some(next)),
        "a resume through nginx: no reset, the next event"
    );
    let ids: Vec<String> = sent.into_iter().map(|(id, _)| id).collect();
    assert_increasing(&ids, "ids through nginx");
}

/// Follows `url` as a browser's `EventSource` does: whenever the stream ends (its hub shut
/// down), opens it again with the last id it saw, until the event with id `last` arrived;
/// returns the events (id, data) and how many times it reconnected. A `reset` fails the test:
/// nothing may be lost.
async fn follow_through_restarts(
    client: Client,
    url: String,
    last: &'static str,
) -> (Vec<(String, String)>, usize) {
    let mut events: Vec<(String, String)> = Vec::new();
    let mut reconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "`{last}` within 120 s; {} events",
            events.len()
        );
        // The first request from the log's first event: nothing published before this
        // subscriber was registered is missed, however long connecting takes.
        let last_id = events.last().map_or("earliest", |(id, _)| id.as_str());
        let request = client
            .get(url.as_str())
            .insert_header(("last-event-id", last_id));
        let response = match request.send().await {
            Ok(response) if response.status() == StatusCode::OK => response,
            // Between a hub's exit and nginx noticing it: try again shortly.
            _ => {
                actix_web::rt::time::sleep(POLL_INTERVAL).await;
                continue;
            }
        };
        let mut stream = SseStream::new(response);
        loop {
            match stream.next_frame_or_end(EVENT_TIMEOUT).await {
                Some(Some(frame)) => {
                    assert_ne!(
                        frame.event.as_deref(),
                        Some("reset"),
                        "a reset after {:?}",
                        events.last()
                    );
                    if let (Some(id), Some(data)) = (frame.id, frame.data) {
                        let done = id == last;
                        events.push((id, data));
                        if done {
                            return (events, reconnects);
                        }
                    }
                }
                Some(None) => break,
                None => panic!("no frame and no end within {EVENT_TIMEOUT:?}"),
            }
        }
        reconnects += 1;
    }
}

/// A rolling deploy (issue 23): three nodes behind nginx (the shipped
/// `docker/nginx-cluster.conf.template`), each restarted in turn with SIGTERM once nginx routes
/// to the one before again (its `fail_timeout` is 5 s), while a publisher publishes through
/// nginx and subscribers stay connected through nginx, reconnecting with their last id as
/// browsers do. Every subscriber ends with every event, once, in order. The publisher retries
/// what was not answered `200` with the same id (a `409` says the earlier attempt landed).
#[actix_web::test]
async fn a_rolling_restart_behind_nginx_loses_nothing() {
    const SUBSCRIBERS: usize = 3;
    /// nginx's `fail_timeout` in the template, and a margin.
    const BETWEEN_RESTARTS: Duration = Duration::from_secs(6);
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start("roll", Persistence::Off, &["A", "B", "C"], &[]).await;
    let nginx = {
        let nodes: Vec<&Node> = cluster.nodes.iter().collect();
        Nginx::start(&nodes).await
    };
    let stream_url = nginx.url(&format!("/stream?{}", query(&[("topic", "roll")])));
    let followers: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| actix_web::rt::spawn(follow_through_restarts(client(), stream_url.clone(), "end")))
        .collect();
    let deployed = std::rc::Rc::new(std::cell::Cell::new(false));
    let publish_url = nginx.url("/publish?topic=roll");
    let publisher = actix_web::rt::spawn({
        let deployed = deployed.clone();
        async move {
            let client = client();
            let (mut sent, mut retries) = (Vec::new(), 0);
            let mut n = 0;
            loop {
                let done = deployed.get();
                let (id, data) = if done {
                    ("end".to_owned(), "the end".to_owned())
                } else {
                    (format!("e{n:04}"), format!("event {n}"))
                };
                let url = format!("{publish_url}&id={id}");
                loop {
                    let answer = client.post(url.as_str()).send_body(data.clone()).await;
                    match answer.map(|response| response.status()) {
                        Ok(StatusCode::OK | StatusCode::CONFLICT) => break,
                        _ => {
                            retries += 1;
                            actix_web::rt::time::sleep(POLL_INTERVAL).await;
                        }
                    }
                }
                sent.push((id, data));
                if done {
                    return (sent, retries);
                }
                n += 1;
                actix_web::rt::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });

    // Act: restart every node in turn while the publisher runs.
    for node in &mut cluster.nodes {
        actix_web::rt::time::sleep(BETWEEN_RESTARTS).await;
        node.restart().await;
    }
    actix_web::rt::time::sleep(QUIET).await;
    deployed.set(true);
    let (sent, retries) = publisher.await.expect("the publisher finished");

    // Assert
    let mut reconnected = Vec::new();
    for follower in followers {
        let (events, reconnects) = follower.await.unwrap_or_else(|err| {
            let logs: Vec<String> = cluster
                .nodes
                .iter()
                .map(|node| {
                    let log = node.hub.log.tail(usize::MAX);
                    let lines: Vec<&str> = log
                        .lines()
                        .filter(|line| !line.contains("sse_hub::access"))
                        .collect();
                    let last = &lines[lines.len().saturating_sub(60)..];
                    format!(
                        "--- {} (access lines left out):\n{}",
                        node.name,
                        last.join("\n")
                    )
                })
                .collect();
            panic!("a subscriber failed: {err}\n{}", logs.join("\n"))
        });
        assert_eq!(events, sent, "every event, once, in order");
        reconnected.push(reconnects);
    }
    eprintln!(
        "rolling restart: {} events, {retries} publish retries, reconnections {reconnected:?}",
        sent.len()
    );
    assert!(
        reconnected.iter().all(|&n| n >= 1),
        "every subscriber's node was restarted under it at least once: {reconnected:?}"
    );
}

/// On the Mercure route a publisher may reuse an id across nodes (Mercure's rule): both
/// publishes are accepted, and a resume from that id on a third node starts after its first
/// occurrence, the second one included, with the resume header naming it.
#[actix_web::test]
async fn a_repeated_mercure_id_resumes_after_its_first_occurrence_on_any_node() {
    let _serial = SERIAL.lock().await;
    let key = crate::mercure::KEY;
    let cluster = Cluster::start(
        "repeat",
        Persistence::Off,
        &["A", "B", "C"],
        &["--jwt-key", key, "--mercure-mode", "compat"],
    )
    .await;
    let (a, b, c) = (cluster.node(0), cluster.node(1), cluster.node(2));

    // Act
    let first = a
        .post_update(&[("topic", "t"), ("id", "dup"), ("data", "1")])
        .await;
    let between = b.post_update(&[("topic", "t"), ("data", "2")]).await;
    let again = b
        .post_update(&[("topic", "t"), ("id", "dup"), ("data", "3")])
        .await;

    // Assert
    for reply in [&first, &between, &again] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!((first.body.as_str(), again.body.as_str()), ("dup", "dup"));
    assert!(between.body.starts_with("urn:uuid:"), "{}", between.body);
    let mut resumed = c.subscribe_mercure("topic=t", Some("dup")).await;
    assert_eq!(
        resumed
            .headers()
            .get("last-event-id")
            .map(|v| v.to_str().ok()),
        Some(Some("dup")),
        "the header names the event before the first one sent"
    );
    let events = id_and_data(&next_events(&mut resumed, 2).await);
    assert_eq!(
        events,
        [
            (between.body.clone(), "2".to_owned()),
            ("dup".to_owned(), "3".to_owned())
        ]
    );
    resumed.assert_no_event_within(QUIET).await;
}

/// A repeated Mercure id whose first copy the trim let go, while a later copy is retained,
/// stays known: Redis's id index moves on to the retained copy (where a resume from that id
/// starts, on any node), `/publish` answers `409` for it as the memory store does, and once
/// every copy is trimmed the id is free again. (Before, the trim forgot the id with its first
/// copy: `/publish` took it, and a node behind could answer a resume from it with `reset`.)
#[actix_web::test]
async fn a_repeated_id_stays_taken_while_a_later_copy_is_retained() {
    const HISTORY: usize = 5;
    let _serial = SERIAL.lock().await;
    let history = HISTORY.to_string();
    let key = crate::mercure::KEY;
    let cluster = Cluster::start(
        "retrim",
        Persistence::Off,
        &["A", "B"],
        &[
            "--history-size",
            &history,
            "--jwt-key",
            key,
            "--mercure-mode",
            "compat",
        ],
    )
    .await;
    cluster.redis.trim_exactly();
    let (a, b) = (cluster.node(0), cluster.node(1));
    let ids_key = format!("{}:ids", cluster.prefix);
    let entry_of = |id: &str| match cluster.redis.command(&["HGET", &ids_key, id]) {
        Resp::Bulk(entry) => entry,
        other => panic!("HGET {ids_key} {id}: {other:?}"),
    };

    // Arrange: `r`, three others, `r` again (on the other node), one more: the first `r` is
    // trimmed, the second retained.
    let first = a
        .post_update(&[("topic", "t"), ("id", "r"), ("data", "first")])
        .await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "r"));
    let first_entry = entry_of("r").expect("r is indexed");
    let publish = |node: &'static str, data: String| {
        let node = if node == "A" { a } else { b };
        async move {
            let reply = node.post_authorized("/publish?topic=t", &data).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply.body
        }
    };
    for n in 0..3 {
        publish("A", format!("filler {n}")).await;
    }
    let again = b
        .post_update(&[("topic", "t"), ("id", "r"), ("data", "second")])
        .await;
    assert_eq!((again.status, again.body.as_str()), (StatusCode::OK, "r"));
    assert_eq!(
        entry_of("r"),
        Some(first_entry.clone()),
        "the earliest copy"
    );
    let after = publish("A", "after".to_owned()).await;
    let retained = cluster
        .redis
        .command(&["XRANGE", &cluster.log_key(), "-", "+"]);
    let Resp::Array(Some(entries)) = &retained else {
        panic!("XRANGE: {retained:?}");
    };
    assert_eq!(
        entries.len(),
        HISTORY,
        "trimmed to the history: {retained:?}"
    );
    let entry_ids: Vec<String> = entries
        .iter()
        .filter_map(|entry| match entry {
            Resp::Array(Some(fields)) => match fields.first() {
                Some(Resp::Bulk(Some(id))) => Some(id.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(
        !entry_ids.contains(&first_entry),
        "the first `r` was trimmed"
    );
    assert_eq!(entry_ids.last(), Some(&after));

    // Act and assert: the index names the retained copy; the id is still taken.
    let second_entry = entry_of("r").expect("r is still indexed");
    assert_eq!(
        entry_ids.get(HISTORY - 2),
        Some(&second_entry),
        "the index moved on to the second `r`"
    );
    for node in [a, b] {
        let reply = node.post_authorized("/publish?topic=t&id=r", "taken").await;
        reply.assert_json_error(StatusCode::CONFLICT, "a repeated id still retained");
    }
    let mut resumed = b.subscribe_mercure("topic=t", Some("r")).await;
    assert_eq!(
        id_and_data(&next_events(&mut resumed, 1).await),
        [(after.clone(), "after".to_owned())],
        "a resume from `r` starts after its retained copy"
    );

    // Once every copy is trimmed, the id is free again.
    for n in 0..HISTORY {
        publish("B", format!("later {n}")).await;
    }
    assert_eq!(entry_of("r"), None, "forgotten with its last copy");
    let reply = a
        .post_authorized("/publish?topic=t&id=r", "free again")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// `rediss://` (issue 23): two nodes on a Redis that serves TLS only, its certificate from a
/// test CA that `--redis-ca-file` names: an event published on one reaches a subscriber on the
/// other. A node without that file checks Redis against the system's trust store, which does
/// not know the CA: it stays unready, says why, and refuses publishes. A CA file without a
/// certificate stops the hub at start-up with one line naming it.
#[actix_web::test]
async fn nodes_share_a_log_over_tls_with_their_own_ca() {
    let _serial = SERIAL.lock().await;
    let ca = crate::tls::TestCa::new("redis");
    let leaf = ca.leaf();
    let redis = RedisServer::start_tls(&leaf.cert, &leaf.key, &ca.pem());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("the CA file is written");
    let ca_path = ca_file.to_str().expect("a UTF-8 path");
    let prefix = format!("sse-hub-test-{}-tls", std::process::id());
    let store_args = [
        "--redis-prefix",
        prefix.as_str(),
        "--redis-ca-file",
        ca_path,
    ];
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());

    // Act
    let a = Node::start_on("A", &redis.url(), &store_args, &[]);
    let b = Node::start_on("B", &redis.url(), &store_args, &[]);
    for node in [&a, &b] {
        let ready = wait_for_readyz(node, StatusCode::OK, RECOVERY_TIMEOUT).await;
        assert_ready(&ready, "/readyz over TLS");
    }
    let mut on_b = b.subscribe("t", None).await;
    let id = a.publish("t", "over TLS").await;

    // Assert
    assert_eq!(
        id_and_data(&next_events(&mut on_b, 1).await),
        [(id, "over TLS".to_owned())]
    );
    let untrusting = Node::start_on("C", &redis.url(), &["--redis-prefix", &prefix], &[]);
    let unready = wait_for_readyz(&untrusting, StatusCode::SERVICE_UNAVAILABLE, QUIET).await;
    assert!(unready.body.contains("Redis"), "{}", unready.body);
    untrusting
        .post("/publish?topic=t", "refused")
        .await
        .assert_json_error(StatusCode::SERVICE_UNAVAILABLE, "a publish on C");
    eventually(
        "C's log names the certificate",
        RECOVERY_TIMEOUT,
        async || {
            let log = untrusting.hub.log.tail(200).to_lowercase();
            (log.contains("unreachable") && log.contains("certificate")).then_some(())
        },
    )
    .await;
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").expect("written");
    let output = crate::helpers::hub_command(
        &redis.url(),
        &["--redis-ca-file", empty.to_str().expect("a UTF-8 path")],
    )
    .stderr(Stdio::piped())
    .output()
    .expect("the hub runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--redis-ca-file") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
}

/// `--redis-replicas 1` (issue 23): a publish is answered `200` once a replica has its entry
/// (Redis `WAIT`). With the replica gone, it is answered `503` naming the replicas after
/// `--redis-replica-timeout`, and the event still reaches subscribers (Redis appended it); a
/// retry with the same id then answers `409`. With the replica back, `200` again.
#[actix_web::test]
async fn publishes_wait_for_the_replicas_asked_for() {
    let _serial = SERIAL.lock().await;
    let primary = RedisServer::start(Persistence::Off);
    let mut replica = RedisServer::start_replica_of(&primary);
    eventually("the replica is in sync", RECOVERY_TIMEOUT, async || {
        (primary.replicas() == 1).then_some(())
    })
    .await;
    let prefix = format!("sse-hub-test-{}-wait", std::process::id());
    let node = Node::start_on(
        "A",
        &primary.url(),
        &["--redis-prefix", &prefix],
        // Room for an in-sync replica to answer on a loaded machine (300 ms was missed once
        // with the whole suite and a benchmark running; 2 s is a CPU-starved CI's minimum).
        &["--redis-replicas", "1", "--redis-replica-timeout", "5s"],
    );
    assert_ready(
        &wait_for_readyz(&node, StatusCode::OK, RECOVERY_TIMEOUT).await,
        "/readyz",
    );
    let mut stream = node.subscribe("t", None).await;

    // Acknowledged by the replica.
    let id = node.publish("t", "replicated").await;
    assert_eq!(
        id_and_data(&next_events(&mut stream, 1).await),
        [(id, "replicated".to_owned())]
    );

    // The replica gone: 503 after the timeout, and the event is delivered all the same.
    replica.kill();
    eventually(
        "the primary sees the replica gone",
        RECOVERY_TIMEOUT,
        async || (primary.replicas() == 0).then_some(()),
    )
    .await;
    let started = Instant::now();
    let refused = node
        .post("/publish?topic=t&id=lonely", "not replicated")
        .await;
    refused.assert_json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "a publish without its replica",
    );
    assert!(
        refused.body.contains("--redis-replicas"),
        "{}",
        refused.body
    );
    assert!(
        started.elapsed() >= Duration::from_millis(4900),
        "answered after waiting for the replica: {:?}",
        started.elapsed()
    );
    assert_eq!(
        id_and_data(&next_events(&mut stream, 1).await),
        [("lonely".to_owned(), "not replicated".to_owned())],
        "appended, so delivered"
    );
    let retried = node.post("/publish?topic=t&id=lonely", "retry").await;
    retried.assert_json_error(StatusCode::CONFLICT, "a retry of an event that landed");

    // Back: 200 again.
    replica.restart();
    eventually(
        "the replica is in sync again",
        RECOVERY_TIMEOUT,
        async || (primary.replicas() == 1).then_some(()),
    )
    .await;
    let id = node.publish("t", "replicated again").await;
    assert_eq!(
        id_and_data(&next_events(&mut stream, 1).await),
        [(id, "replicated again".to_owned())]
    );
}

/// With `--subscriptions`, a subscriber on one node allowed every private update gets the
/// subscription events of a subscriber that connects to and leaves another node.
#[actix_web::test]
async fn subscription_events_reach_every_node() {
    let _serial = SERIAL.lock().await;
    let key = crate::mercure::KEY;
    let cluster = Cluster::start(
        "subscriptions",
        Persistence::Off,
        &["A", "B"],
        &[
            "--jwt-key",
            key,
            "--subscriptions",
            "true",
            "--mercure-mode",
            "compat",
        ],
    )
    .await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut watcher = a.subscribe_mercure(&query(&[("match", "*")]), None).await;

    // Act
    let joining = open_stream(
        &b.client,
        &b.url(&format!(
            "/.well-known/mercure?{}",
            query(&[("match", "https://example.com/x")])
        )),
        None,
    )
    .await;
    // The watcher's own subscription is announced too, before or after B's (two nodes
    // append to Redis concurrently): events about other matchers are passed over, and so
    // are the 0.x copies compat mode adds (their matcher is under `topic`).
    let about_x = |frame: &Frame| {
        frame
            .data
            .as_deref()
            .is_some_and(|data| data.contains("\"match\":\"https://example.com/x\""))
    };
    let mut joined = watcher.next_event().await;
    while !about_x(&joined) {
        joined = watcher.next_event().await;
    }
    drop(joining);
    let mut left = watcher.next_event().await;
    while !about_x(&left) {
        left = watcher.next_event().await;
    }

    // Assert
    for (frame, active) in [(&joined, true), (&left, false)] {
        assert_eq!(frame.event.as_deref(), Some("mercure"));
        let data: Value = serde_json::from_str(frame.data.as_deref().expect("data")).expect("JSON");
        assert_eq!(data["type"], "subscription");
        assert_eq!(data["match_type"], "exact");
        assert_eq!(data["match"], "https://example.com/x");
        assert_eq!(data["active"], active);
        assert!(
            data["subscriber"]
                .as_str()
                .is_some_and(|s| s.starts_with("urn:uuid:"))
        );
        assert!(
            data["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("/.well-known/mercure/subscriptions/exact/"))
        );
    }
}
