//! Redis Sentinel (issue 23): hubs on `redis+sentinel://` find the primary through the
//! sentinels and follow a failover, against real processes: a primary, two replicas and three
//! sentinels each test starts on loopback, and hubs of the built binary.

use std::{
    cell::RefCell,
    collections::HashMap,
    process::{Child, Command, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;

use crate::{
    cluster::{Node, RECOVERY_TIMEOUT, SERIAL, assert_ready, eventually, wait_for_readyz},
    helpers::{
        EVENT_TIMEOUT, Persistence, RedisServer, Resp, SseStream, client, find_on_path, free_port,
        query, redis_command,
    },
};

/// The name the sentinels monitor.
const MASTER: &str = "m";
/// `down-after-milliseconds`: how long the primary may be silent before a sentinel thinks it
/// down. A failover then takes about this, an election (a second or two) and a node's
/// reconnection (its backoff is at most 5 s).
const DOWN_AFTER_MS: u64 = 1000;
/// What the tests allow from `kill -9` of the primary to the first publish answered `200` on
/// the new one: well above the 2–8 s it takes (printed by each test).
const RESUME_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A `redis-sentinel` child process on a free port, with its own directory (its config file,
/// which Sentinel rewrites, and its log). Killed on drop.
struct Sentinel {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Sentinel {
    fn start(primary: u16) -> Self {
        let binary = find_on_path("redis-sentinel").unwrap_or_else(|| {
            panic!(
                "redis-sentinel is not installed (expected on PATH, from the Debian package \
                 redis-sentinel, which scripts/test installs)"
            )
        });
        let port = free_port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 2\n",
                dir = dir.path().display()
            ),
        )
        .expect("the sentinel's config is written");
        let child = Command::new(binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel starts");
        Self { port, dir, child }
    }

    fn command(&self, args: &[&str]) -> Option<Resp> {
        redis_command(self.port, args).ok()
    }

    /// `SENTINEL MASTER m` as a map, once the sentinel answers it.
    fn master(&self) -> Option<HashMap<String, String>> {
        let Some(Resp::Array(Some(fields))) = self.command(&["SENTINEL", "MASTER", MASTER]) else {
            return None;
        };
        let text = |resp: &Resp| match resp {
            Resp::Bulk(Some(text)) => text.clone(),
            other => format!("{other:?}"),
        };
        Some(
            fields
                .chunks(2)
                .filter(|pair| pair.len() == 2)
                .map(|pair| (text(&pair[0]), text(&pair[1])))
                .collect(),
        )
    }

    /// The primary's port as this sentinel names it.
    fn primary(&self) -> Option<u16> {
        match self.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])? {
            Resp::Array(Some(address)) => match address.get(1) {
                Some(Resp::Bulk(Some(port))) => port.parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sentinel :{} log (last lines):\n{}",
                self.port,
                self.log_tail(15)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary, two replicas and three sentinels (quorum 2) watching them, all ready: the
/// replicas in sync, and every sentinel knowing both replicas and the other two sentinels.
struct SentinelGroup {
    // Declared first: the sentinels go before the servers they watch.
    sentinels: Vec<Sentinel>,
    servers: Vec<RedisServer>,
}

impl SentinelGroup {
    async fn start() -> Self {
        let primary = RedisServer::start(Persistence::Off);
        let replicas: Vec<RedisServer> = (0..2)
            .map(|_| RedisServer::start_replica_of(&primary))
            .collect();
        let mut servers = vec![primary];
        servers.extend(replicas);
        eventually("both replicas in sync", RECOVERY_TIMEOUT, async || {
            (servers[0].replicas() == 2).then_some(())
        })
        .await;
        let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(servers[0].port)).collect();
        for sentinel in &sentinels {
            eventually(
                "every sentinel knows both replicas and the other two sentinels",
                Duration::from_secs(20),
                async || {
                    let master = sentinel.master()?;
                    (master.get("num-slaves").map(String::as_str) == Some("2")
                        && master.get("num-other-sentinels").map(String::as_str) == Some("2"))
                    .then_some(())
                },
            )
            .await;
        }
        Self { sentinels, servers }
    }

    /// The `--store` URL naming the three sentinels.
    fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", sentinels.join(","))
    }

    fn primary_port(&self) -> u16 {
        self.sentinels[0]
            .primary()
            .expect("the sentinel names a primary")
    }

    fn server(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|server| server.port == port)
            .unwrap_or_else(|| panic!("no server on port {port}"))
    }

    /// Waits until every replica has everything the primary has (the same replication
    /// offset); returns the replicas' ports.
    async fn replicated(&self, what: &str) -> Vec<u16> {
        let primary = self.primary_port();
        let offset = |port: u16| match redis_command(port, &["INFO", "replication"]) {
            Ok(Resp::Bulk(Some(info))) => info
                .lines()
                .find_map(|line| line.strip_prefix("master_repl_offset:"))
                .and_then(|offset| offset.trim().parse::<u64>().ok()),
            _ => None,
        };
        let replicas: Vec<u16> = self
            .servers
            .iter()
            .map(|s| s.port)
            .filter(|p| *p != primary)
            .collect();
        eventually(what, RECOVERY_TIMEOUT, async || {
            let on_primary = offset(primary)?;
            replicas
                .iter()
                .all(|port| offset(*port) == Some(on_primary))
                .then(|| replicas.clone())
        })
        .await
    }

    /// Waits until every sentinel names a primary other than `old`; returns its port.
    async fn new_primary(&self, old: u16) -> u16 {
        eventually(
            "the sentinels promote a replica",
            RESUME_DEADLINE,
            async || {
                let named: Vec<Option<u16>> =
                    self.sentinels.iter().map(Sentinel::primary).collect();
                match named.first().copied().flatten() {
                    Some(port) if port != old && named.iter().all(|p| *p == Some(port)) => {
                        Some(port)
                    }
                    _ => None,
                }
            },
        )
        .await
    }
}

/// What a subscriber saw: an event's id, or a `reset`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Event(String),
    Reset,
}

/// Follows `url` as a browser's `EventSource` does (reconnecting with its last id whenever the
/// stream ends) into `seen`, until the event with id `last`.
async fn follow(url: String, last: &'static str, seen: Rc<RefCell<Vec<Seen>>>) {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(120);
    // From the first event of the log: the subscriber misses nothing published before it was
    // registered, however long connecting takes on a loaded machine.
    let mut last_id = String::from("earliest");
    loop {
        assert!(Instant::now() < deadline, "`{last}` within 120 s: {seen:?}");
        let request = client
            .get(url.as_str())
            .insert_header(("last-event-id", last_id.as_str()));
        let response = match request.send().await {
            Ok(response) if response.status() == StatusCode::OK => response,
            _ => {
                actix_web::rt::time::sleep(POLL).await;
                continue;
            }
        };
        let mut stream = SseStream::new(response);
        loop {
            match stream.next_frame_or_end(EVENT_TIMEOUT).await {
                Some(Some(frame)) => {
                    if frame.event.as_deref() == Some("reset") {
                        seen.borrow_mut().push(Seen::Reset);
                    } else if let Some(id) = frame.id {
                        let done = id == last;
                        seen.borrow_mut().push(Seen::Event(id.clone()));
                        last_id = id;
                        if done {
                            return;
                        }
                    }
                }
                Some(None) => break,
                None => panic!("no frame and no end within {EVENT_TIMEOUT:?}"),
            }
        }
    }
}

/// Asserts that `seen` has no silent gap against `acknowledged` (the ids answered `200`, in
/// publish order): between two resets, the acknowledged ids it received come in publish order,
/// and an acknowledged id it never received is allowed only when it was told `reset`.
fn assert_no_silent_gap(seen: &[Seen], acknowledged: &[String], what: &str) {
    let order: HashMap<&str, usize> = acknowledged
        .iter()
        .enumerate()
        .map(|(at, id)| (id.as_str(), at))
        .collect();
    let mut previous: Option<usize> = None;
    for item in seen {
        match item {
            Seen::Reset => previous = None,
            Seen::Event(id) => {
                // An id answered 503 may appear or not: it is in no order.
                let Some(&at) = order.get(id.as_str()) else {
                    continue;
                };
                if let Some(before) = previous {
                    assert!(
                        before < at,
                        "{what}: {id} after {}: {seen:?}",
                        acknowledged[before]
                    );
                    let skipped: Vec<&String> = acknowledged[before + 1..at]
                        .iter()
                        .filter(|skipped| !seen.contains(&Seen::Event((*skipped).clone())))
                        .collect();
                    assert!(
                        skipped.is_empty() || seen.contains(&Seen::Reset),
                        "{what}: acknowledged {skipped:?} never received, and no reset: {seen:?}"
                    );
                }
                previous = Some(at);
            }
        }
    }
}

/// A publisher that publishes `e0000`, `e0001`, ... on the nodes in turn, every 20 ms, until
/// told to end; then publishes `end` until it is answered `200`. Records the ids answered
/// `200` and when each was.
struct Publisher {
    acknowledged: Rc<RefCell<Vec<(String, Instant)>>>,
    refused: Rc<RefCell<usize>>,
    end: Rc<std::cell::Cell<bool>>,
    task: actix_web::rt::task::JoinHandle<()>,
}

impl Publisher {
    fn start(urls: Vec<String>) -> Self {
        let acknowledged = Rc::new(RefCell::new(Vec::new()));
        let refused = Rc::new(RefCell::new(0));
        let end = Rc::new(std::cell::Cell::new(false));
        let task = actix_web::rt::spawn({
            let (acknowledged, refused, end) = (acknowledged.clone(), refused.clone(), end.clone());
            async move {
                let client = client();
                let deadline = Instant::now() + Duration::from_secs(120);
                for n in 0.. {
                    assert!(Instant::now() < deadline, "the publisher ends within 120 s");
                    let ending = end.get();
                    let id = if ending {
                        "end".to_owned()
                    } else {
                        format!("e{n:04}")
                    };
                    let url = format!("{}&id={id}", urls[n % urls.len()]);
                    let status = client
                        .post(url.as_str())
                        .send_body(format!("event {n}"))
                        .await
                        .map(|response| response.status());
                    match status {
                        Ok(StatusCode::OK) => {
                            acknowledged.borrow_mut().push((id, Instant::now()));
                            if ending {
                                return;
                            }
                        }
                        Ok(StatusCode::SERVICE_UNAVAILABLE) | Err(_) => *refused.borrow_mut() += 1,
                        Ok(other) => panic!("publish {id}: {other}"),
                    }
                    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            acknowledged,
            refused,
            end,
            task,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.borrow().len()
    }

    /// How long after `since` the first publish was answered `200`, once one was.
    fn resumed_after(&self, since: Instant) -> Option<Duration> {
        self.acknowledged
            .borrow()
            .iter()
            .find(|(_, at)| *at > since)
            .map(|(_, at)| *at - since)
    }

    /// Publishes `end` and returns the acknowledged ids, in order.
    async fn finish(self) -> (Vec<String>, usize) {
        self.end.set(true);
        self.task.await.expect("the publisher finished");
        let acknowledged = self
            .acknowledged
            .borrow()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        (acknowledged, *self.refused.borrow())
    }
}

/// Two hubs on `group` with `args`, ready.
async fn nodes(group: &SentinelGroup, prefix: &str, args: &[&str]) -> Vec<Node> {
    let url = group.url();
    let nodes: Vec<Node> = ["A", "B"]
        .into_iter()
        .map(|name| Node::start_on(name, &url, &["--redis-prefix", prefix], args))
        .collect();
    for node in &nodes {
        let ready = wait_for_readyz(node, StatusCode::OK, RECOVERY_TIMEOUT).await;
        assert_ready(&ready, &format!("{} on the sentinels", node.name));
    }
    nodes
}

/// One subscriber per node on topic `fo`, following from the first event until `end`
/// ([`follow`]): what each has seen so far, and their tasks.
async fn follow_each(
    nodes: &[Node],
) -> (
    Vec<Rc<RefCell<Vec<Seen>>>>,
    Vec<actix_web::rt::task::JoinHandle<()>>,
) {
    let seen: Vec<Rc<RefCell<Vec<Seen>>>> = nodes.iter().map(|_| Rc::default()).collect();
    let followers = nodes
        .iter()
        .zip(&seen)
        .map(|(node, seen)| {
            let url = node.url(&format!("/stream?{}", query(&[("topic", "fo")])));
            actix_web::rt::spawn(follow(url, "end", seen.clone()))
        })
        .collect();
    (seen, followers)
}

/// With `--redis-replicas 1`, `kill -9` of the primary loses nothing that was acknowledged:
/// publishes are refused (`503`) until the sentinels promote a replica, then go on there, and
/// every subscriber on both nodes ends with every acknowledged event, in order.
#[actix_web::test]
async fn a_sentinel_failover_loses_nothing_acknowledged_with_replicas() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start().await;
    let prefix = format!("sse-hub-test-{}-fo1", std::process::id());
    let nodes = nodes(
        &group,
        &prefix,
        &["--redis-replicas", "1", "--redis-replica-timeout", "500ms"],
    )
    .await;
    let (seen, followers) = follow_each(&nodes).await;
    let publisher = Publisher::start(
        nodes
            .iter()
            .map(|node| node.url("/publish?topic=fo"))
            .collect(),
    );
    eventually(
        "30 publishes before the failover",
        RECOVERY_TIMEOUT,
        async || (publisher.count() >= 30).then_some(()),
    )
    .await;

    // Act
    let old = group.primary_port();
    let killed = Instant::now();
    group.server(old).kill();
    let new = group.new_primary(old).await;
    let before = publisher.count();
    eventually(
        "30 publishes on the new primary",
        RESUME_DEADLINE * 2,
        async || (publisher.count() >= before + 30).then_some(()),
    )
    .await;
    let resumed = publisher.resumed_after(killed).expect("publishes resumed");
    let (acknowledged, refused) = publisher.finish().await;
    for follower in followers {
        follower.await.expect("the subscriber finished");
    }

    // Assert
    eprintln!(
        "sentinel failover with --redis-replicas 1: primary :{old} -> :{new}, publishes resumed \
         {resumed:?} after kill -9, {} acknowledged, {refused} refused",
        acknowledged.len()
    );
    assert!(
        resumed < RESUME_DEADLINE,
        "publishes resume within {RESUME_DEADLINE:?}: {resumed:?}"
    );
    for (node, seen) in nodes.iter().zip(&seen) {
        let seen = seen.borrow();
        let what = format!("the subscriber on {}", node.name);
        for id in &acknowledged {
            assert!(
                seen.contains(&Seen::Event(id.clone())),
                "{what}: acknowledged {id} received: {seen:?}"
            );
        }
        assert_no_silent_gap(&seen, &acknowledged, &what);
    }
}

/// Without `--redis-replicas`, a promoted replica may lack acknowledged entries: here it does
/// for certain (both replicas were cut off while five events were published). The nodes notice
/// (the log's newest entry is older than the last they applied): every subscriber is told
/// `reset`, then gets the events published on the new primary. Never a silent gap.
#[actix_web::test]
async fn a_promoted_replica_that_lacks_entries_resets_subscribers() {
    let _serial = SERIAL.lock().await;
    let mut group = SentinelGroup::start().await;
    let prefix = format!("sse-hub-test-{}-fo2", std::process::id());
    let nodes = nodes(&group, &prefix, &[]).await;
    let (seen, followers) = follow_each(&nodes).await;
    let publish = async |node: &Node, id: &str| -> StatusCode {
        node.post(&format!("/publish?topic=fo&id={id}"), id)
            .await
            .status
    };
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let id = format!("kept{n}");
        assert_eq!(publish(&nodes[n % 2], &id).await, StatusCode::OK, "{id}");
        acknowledged.push(id);
    }
    let old = group.primary_port();
    let kept = group.replicated("both replicas have the first five").await;
    // Cut both replicas off (they keep their data, and point at a port nothing listens on),
    // publish five more, and let every subscriber receive them.
    let nowhere = free_port().to_string();
    for port in &kept {
        let reply = redis_command(*port, &["REPLICAOF", "127.0.0.1", &nowhere]).expect("REPLICAOF");
        assert_eq!(reply, Resp::Simple("OK".to_owned()), "REPLICAOF on :{port}");
    }
    for n in 0..5 {
        let id = format!("lost{n}");
        assert_eq!(publish(&nodes[n % 2], &id).await, StatusCode::OK, "{id}");
        acknowledged.push(id);
    }
    eventually(
        "every subscriber received lost4",
        EVENT_TIMEOUT,
        async || {
            seen.iter()
                .all(|seen| seen.borrow().contains(&Seen::Event("lost4".to_owned())))
                .then_some(())
        },
    )
    .await;

    // Act: kill -9 the primary; the replicas point at it again, as if nothing happened.
    let killed = Instant::now();
    group.server(old).kill();
    let old_port = old.to_string();
    for port in &kept {
        let reply =
            redis_command(*port, &["REPLICAOF", "127.0.0.1", &old_port]).expect("REPLICAOF");
        assert_eq!(reply, Resp::Simple("OK".to_owned()), "REPLICAOF on :{port}");
    }
    let new = group.new_primary(old).await;
    let mut resumed = None;
    let after = (0..5).map(|n| format!("after{n}"));
    for (n, id) in after.chain(["end".to_owned()]).enumerate() {
        loop {
            assert!(
                killed.elapsed() < RESUME_DEADLINE * 2,
                "{id} published after the failover"
            );
            if publish(&nodes[n % 2], &id).await == StatusCode::OK {
                resumed.get_or_insert(killed.elapsed());
                break;
            }
            actix_web::rt::time::sleep(POLL).await;
        }
        acknowledged.push(id);
    }
    for follower in followers {
        follower.await.expect("the subscriber finished");
    }

    // Assert
    let resumed = resumed.expect("publishes resumed");
    eprintln!(
        "sentinel failover without replication: :{old} -> :{new}, publishes resumed {resumed:?} after kill -9"
    );
    assert!(
        resumed < RESUME_DEADLINE,
        "publishes resume within {RESUME_DEADLINE:?}: {resumed:?}"
    );
    let log = redis_command(new, &["XRANGE", &format!("{prefix}:log"), "-", "+"]);
    assert!(
        !format!("{log:?}").contains("lost0"),
        "the promoted replica lacks the five cut-off events: {log:?}"
    );
    for (node, seen) in nodes.iter().zip(&seen) {
        let seen = seen.borrow();
        let what = format!("the subscriber on {}", node.name);
        let reset = seen
            .iter()
            .position(|item| *item == Seen::Reset)
            .unwrap_or_else(|| panic!("{what} is told `reset`: {seen:?}"));
        let lost4 = seen
            .iter()
            .position(|item| *item == Seen::Event("lost4".into()));
        let after0 = seen
            .iter()
            .position(|item| *item == Seen::Event("after0".into()));
        assert!(
            lost4 < Some(reset) && Some(reset) < after0,
            "{what}: lost4, then reset, then after0: {seen:?}"
        );
        let tail: Vec<&Seen> = seen[after0.unwrap_or_default()..].iter().collect();
        let expected: Vec<Seen> = ["after0", "after1", "after2", "after3", "after4", "end"]
            .iter()
            .map(|id| Seen::Event((*id).to_owned()))
            .collect();
        assert_eq!(
            tail,
            expected.iter().collect::<Vec<_>>(),
            "{what}: the events after the failover"
        );
        assert_no_silent_gap(&seen, &acknowledged, &what);
    }
}

/// A primary demoted to a replica (`READONLY` to writes) while a node is connected to it: the
/// node does not keep writing there. It asks the sentinels again and publishes go on, on the
/// primary they name; the demoted server refuses at most a few writes.
#[actix_web::test]
async fn a_node_leaves_a_demoted_primary_for_the_one_sentinel_names() {
    let _serial = SERIAL.lock().await;
    let group = SentinelGroup::start().await;
    let prefix = format!("sse-hub-test-{}-fo3", std::process::id());
    let nodes = nodes(&group, &prefix, &[]).await;
    let node = &nodes[0];
    assert_eq!(
        node.post("/publish?topic=fo&id=before", "x").await.status,
        StatusCode::OK
    );
    let old = group.primary_port();
    group.replicated("the replicas have `before`").await;

    // Act: the sentinels fail over; the old primary becomes a replica of the new one at once,
    // keeping the node's connections (Sentinel would close them, later).
    let reply = group.sentinels[0]
        .command(&["SENTINEL", "FAILOVER", MASTER])
        .expect("SENTINEL FAILOVER");
    assert_eq!(reply, Resp::Simple("OK".to_owned()), "SENTINEL FAILOVER");
    let new = group.new_primary(old).await;
    let reply =
        redis_command(old, &["REPLICAOF", "127.0.0.1", &new.to_string()]).expect("REPLICAOF");
    assert_eq!(
        reply,
        Resp::Simple("OK".to_owned()),
        "the old primary demoted"
    );
    let demoted = Instant::now();
    let mut refused = 0;
    for n in 0..20 {
        let id = format!("after{n}");
        loop {
            assert!(
                demoted.elapsed() < RESUME_DEADLINE,
                "{id} published after the demotion"
            );
            match node
                .post(&format!("/publish?topic=fo&id={id}"), "x")
                .await
                .status
            {
                StatusCode::OK => break,
                StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                other => panic!("publish {id}: {other}"),
            }
            actix_web::rt::time::sleep(POLL).await;
        }
    }

    // Assert
    let readonly = match redis_command(old, &["INFO", "errorstats"]) {
        Ok(Resp::Bulk(Some(info))) => info
            .lines()
            .find_map(|line| line.strip_prefix("errorstat_READONLY:count="))
            .and_then(|count| count.trim().parse::<u64>().ok())
            .unwrap_or(0),
        other => panic!("INFO errorstats: {other:?}"),
    };
    eprintln!(
        "demoted primary :{old} (new :{new}): {refused} publishes refused, {readonly} writes \
         answered READONLY there"
    );
    assert!(
        readonly <= 3,
        "the node left the demoted primary: {readonly} READONLY answers"
    );
    let length = redis_command(new, &["XLEN", &format!("{prefix}:log")]).expect("XLEN");
    assert_eq!(
        length,
        Resp::Integer(21),
        "every event is on the new primary"
    );
    // The node says where the primary is now.
    node.hub.log.wait_for(&format!("primary=127.0.0.1:{new}"));
}
