//! The file store against the real binary: `kill -9` at random moments loses no acknowledged
//! event, and a store the hub cannot trust stops it at start with one line, the file untouched.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{ChildHub, Frame, SseStream, client, query};

/// How long a refusing hub may take to exit.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A hub running as a child process on a store file, on an ephemeral port.
impl ChildHub {
    /// Starts the hub on `file:store` with `args`, and waits until it listens.
    fn on_store(store: &Path, args: &[&str]) -> Self {
        Self::spawn(hub_command(store, args))
    }

    async fn stats(&self) -> Value {
        let mut response = client()
            .get(self.url("/stats"))
            .send()
            .await
            .expect("/stats answers");
        assert_eq!(response.status(), StatusCode::OK);
        response
            .json()
            .limit(1 << 24)
            .await
            .expect("stats are JSON")
    }

    /// Opens a stream resuming after `last_event_id` (or `earliest`).
    async fn resume(&self, last_event_id: &str) -> SseStream {
        let response = client()
            .get(self.url("/stream"))
            .insert_header(("last-event-id", last_event_id))
            .send()
            .await
            .expect("the stream request is answered");
        assert_eq!(response.status(), StatusCode::OK);
        SseStream::new(response)
    }

    /// The events a resume after `last_event_id` replays: read until `newest`, the newest id
    /// the hub holds, or nothing when the resume point is the newest id.
    async fn replay(&self, last_event_id: &str, newest: Option<&str>) -> Vec<Frame> {
        let mut stream = self.resume(last_event_id).await;
        let Some(newest) = newest.filter(|newest| *newest != last_event_id) else {
            stream
                .assert_no_event_within(Duration::from_millis(100))
                .await;
            return Vec::new();
        };
        stream.events_until(newest).await
    }
}

fn hub_command(store: &Path, args: &[&str]) -> Command {
    crate::helpers::hub_command(&format!("file:{}", store.display()), args)
}

/// Runs the hub on `store`, expecting it to refuse to start: its exit code and its stderr.
fn refused_start(store: &Path) -> (Option<i32>, String) {
    let mut child = hub_command(store, &[])
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hub binary starts");
    let deadline = Instant::now() + START_TIMEOUT;
    while child
        .try_wait()
        .expect("the hub can be waited for")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the hub started on a store it must refuse: {}",
                store.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("the hub's output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts a refused start: a non-zero exit, one line on stderr naming the file and `problem`.
fn assert_refused(store: &Path, problem: &str) {
    let (code, stderr) = refused_start(store);
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit code {code:?}; stderr: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.contains(&store.display().to_string()) && stderr.contains(problem),
        "the line names the file and `{problem}`: {stderr:?}"
    );
}

fn numeric(id: &str) -> u64 {
    id.parse().expect("generated ids are numbers")
}

/// Ids of `frames`, asserting none is a `reset` and each has an id.
fn ids_of(frames: &[Frame], what: &str) -> Vec<String> {
    frames
        .iter()
        .map(|frame| {
            assert_eq!(
                frame.event, None,
                "{what}: no reset or other event: {frame:?}"
            );
            frame.id.clone().expect("every event has an id")
        })
        .collect()
}

fn assert_increasing(ids: &[String], what: &str) {
    assert!(
        ids.windows(2).all(|w| numeric(&w[0]) < numeric(&w[1])),
        "{what}: ids strictly increase (no duplicate, no reordering): {ids:?}"
    );
}

/// A small deterministic PRNG (xorshift64), seeded per run from the clock and printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Publishers race a `kill -9` at a random moment, 24 times on one store. After each restart:
/// a subscriber resuming from the last id it saw live gets every event acknowledged after it,
/// none twice, in order, without `reset`; and `earliest` yields exactly the retained window
/// (the newest `HISTORY` events of everything committed so far).
#[actix_web::test]
async fn acknowledged_events_survive_kill_9_at_random_moments() {
    const KILLS: usize = 24;
    const HISTORY: usize = 300;
    const PUBLISHERS: usize = 4;
    // Fewer than HISTORY per life, so each restart's `earliest` overlaps the previous one and
    // the test knows the whole committed log.
    const MAX_ACKS_PER_LIFE: u64 = 160;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("history.redb");
    let history = HISTORY.to_string();
    let args = ["--history-size", history.as_str()];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after epoch")
        .as_nanos() as u64
        | 1;
    eprintln!("kill -9 test: seed {seed}");
    let mut rng = Rng(seed);

    let mut committed: Vec<String> = Vec::new();
    let mut acknowledged: Vec<String> = Vec::new();
    // What each acknowledged publish sent, by id.
    let mut bodies: std::collections::HashMap<String, String> = Default::default();
    let mut last_seen: Option<String> = None;
    let mut replayed_total = 0;
    for life in 0..=KILLS {
        let started = Instant::now();
        let mut hub = ChildHub::on_store(&store, &args);
        let stats = hub.stats().await;
        let restart = started.elapsed();
        let newest = stats["history_newest_id"].as_str().map(str::to_owned);

        // A subscriber resuming from the last id it saw live before the kill.
        if let Some(last) = &last_seen {
            let frames = hub.replay(last, newest.as_deref()).await;
            let replay = ids_of(&frames, "resume");
            assert_increasing(&replay, "resume");
            for (id, frame) in replay.iter().zip(&frames) {
                if let Some(body) = bodies.get(id) {
                    assert_eq!(
                        frame.data.as_ref(),
                        Some(body),
                        "event {id} replays its data"
                    );
                }
            }
            assert!(replay.iter().all(|id| numeric(id) > numeric(last)));
            let missing: Vec<&String> = acknowledged
                .iter()
                .filter(|id| numeric(id) > numeric(last) && !replay.contains(id))
                .collect();
            assert!(
                missing.is_empty(),
                "life {life}: acknowledged after {last} but not replayed: {missing:?}"
            );
            replayed_total += replay.len();
        }

        // `earliest`: the retained window, which extends what the test knew was committed.
        let window = ids_of(&hub.replay("earliest", newest.as_deref()).await, "earliest");
        assert_increasing(&window, "earliest");
        if let (Some(first), Some(known)) = (window.first(), committed.last()) {
            assert!(
                numeric(first) <= numeric(known),
                "life {life}: the window {first}.. overlaps the log known so far (..{known})"
            );
        }
        let new_ids = window.iter().filter(|id| {
            committed
                .last()
                .is_none_or(|known| numeric(id) > numeric(known))
        });
        committed.extend(new_ids.cloned().collect::<Vec<_>>());
        let expected_window = &committed[committed.len().saturating_sub(HISTORY)..];
        assert_eq!(
            window, expected_window,
            "life {life}: `earliest` is exactly the newest {HISTORY} committed events"
        );
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !committed.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "life {life}: acknowledged, then lost: {lost:?}"
        );
        if life == KILLS {
            eprintln!(
                "kill -9 test: {KILLS} kills; {} acknowledged, {} committed, {replayed_total} \
                 replayed on resume; last restart served /stats {restart:?} after spawn",
                acknowledged.len(),
                committed.len(),
            );
            break;
        }

        // A live subscriber, publishers racing the kill.
        let mut live = match &newest {
            Some(newest) => hub.resume(newest).await,
            None => hub.resume("earliest").await,
        };
        let acks = Rc::new(RefCell::new(Vec::new()));
        let target = 1 + rng.below(MAX_ACKS_PER_LIFE) as usize;
        let publishers = (0..PUBLISHERS).map(|p| {
            let acks = Rc::clone(&acks);
            let url = hub.url(&format!("/publish?{}", query(&[("topic", "durable")])));
            async move {
                let client = client();
                for n in 0.. {
                    if acks.borrow().len() >= MAX_ACKS_PER_LIFE as usize {
                        return;
                    }
                    let data = format!("{p}/{n}");
                    let Ok(mut response) = client.post(&url).send_body(data.clone()).await else {
                        return; // killed
                    };
                    let Ok(body) = response.body().await else {
                        return;
                    };
                    if response.status() == StatusCode::OK {
                        let id = String::from_utf8(body.to_vec()).expect("utf-8 id");
                        acks.borrow_mut().push((id, data));
                    }
                }
            }
        });
        let publishing = actix_web::rt::spawn(join_all(publishers));
        let deadline = Instant::now() + Duration::from_secs(30);
        while acks.borrow().len() < target {
            assert!(
                Instant::now() < deadline,
                "life {life}: {target} acks within 30 s"
            );
            actix_web::rt::time::sleep(Duration::from_micros(200)).await;
        }
        hub.kill9();
        publishing.await.expect("the publishers end with the hub");
        // What the live subscriber got before the kill. The next life resumes from one of
        // those ids, picked at random, as if it had been cut off there.
        let mut seen = Vec::new();
        while let Some(Some(frame)) = live.next_frame_or_end(Duration::from_secs(5)).await {
            assert_eq!(frame.event, None, "no reset on a live stream: {frame:?}");
            seen.extend(frame.id);
        }
        if !seen.is_empty() {
            last_seen = Some(seen[rng.below(seen.len() as u64) as usize].clone());
        }
        for (id, data) in acks.borrow().iter() {
            acknowledged.push(id.clone());
            bodies.insert(id.clone(), data.clone());
        }
    }
    assert!(
        acknowledged.len() >= KILLS,
        "publishes were acknowledged between kills: {}",
        acknowledged.len()
    );
}

/// The bytes of `path`, to show a refused start left it as it was.
fn contents(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("the store file is readable")
}

/// A store with a few events in it, closed cleanly (SIGTERM).
async fn store_with_events(dir: &Path) -> PathBuf {
    let store = dir.join("history.redb");
    let mut hub = ChildHub::on_store(&store, &[]);
    for n in 0..20 {
        let response = client()
            .post(hub.url("/publish?topic=t"))
            .send_body(format!("event {n}"))
            .await
            .expect("publish answered");
        assert_eq!(response.status(), StatusCode::OK);
    }
    hub.signal("TERM");
    let exit = hub.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "a clean shutdown: {exit}");
    store
}

/// A file that is not a store at all (text) is refused, named, and left alone.
#[test]
fn a_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("notes.txt");
    std::fs::write(&store, "these are my notes, not a store\n".repeat(200)).expect("written");
    let before = contents(&store);
    assert_refused(&store, "not an sse-hub store");
    assert!(contents(&store) == before, "the file is left as it was");
}

/// A store whose pages were damaged after it was closed is refused, named, and left alone.
#[actix_web::test]
async fn a_corrupt_store_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = store_with_events(dir.path()).await;
    let mut bytes = contents(&store);
    // Damage everything after redb's header region: the B-tree pages and their checksums.
    let from = 4096.min(bytes.len());
    for byte in &mut bytes[from..] {
        *byte ^= 0x5a;
    }
    std::fs::write(&store, &bytes).expect("written");
    assert_refused(&store, "corrupt");
    assert!(contents(&store) == bytes, "the file is left as it was");
}

/// A second hub on a store another hub has open is refused; the first keeps serving.
#[actix_web::test]
async fn a_second_hub_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("history.redb");
    let first = ChildHub::on_store(&store, &[]);
    let before = contents(&store);
    assert_refused(&store, "already opened by another running hub");
    assert!(contents(&store) == before, "the file is left as it was");
    let stats = first.stats().await;
    assert_eq!(
        stats["subscribers"], 0,
        "the first hub still answers: {stats}"
    );
}

/// A store written by a newer layout is refused rather than misread.
#[actix_web::test]
async fn a_store_of_an_unknown_version_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = store_with_events(dir.path()).await;
    {
        let db = redb::Database::open(&store).expect("a redb file");
        let txn = db.begin_write().expect("a write transaction");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .expect("the meta table");
            meta.insert("version", 99).expect("written");
        }
        txn.commit().expect("committed");
    }
    assert_refused(&store, "unknown store version 99");
    // redb's integrity check may rewrite its own header, but the hub wrote nothing of its own.
    let db = redb::Database::open(&store).expect("still a redb file");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("a read transaction");
    let meta = txn
        .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .expect("the meta table");
    let version = meta.get("version").expect("readable").map(|v| v.value());
    assert_eq!(version, Some(99), "the version is left as it was");
    let events = txn
        .open_table(redb::TableDefinition::<u64, &[u8]>::new("events"))
        .expect("the events table");
    assert_eq!(
        redb::ReadableTableMetadata::len(&events).expect("counted"),
        20,
        "the events are left as they were"
    );
}

/// Restarting on a store keeps the history and ids: a publisher id is still taken (409), and
/// generated ids keep growing past the ones issued before.
#[actix_web::test]
async fn a_restart_keeps_history_ids_and_publisher_ids() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("history.redb");
    let hub = ChildHub::on_store(&store, &[]);
    let publish = |hub: &ChildHub, query: &str| {
        let url = hub.url(&format!("/publish?{query}"));
        async move {
            let mut response = client()
                .post(url)
                .send_body("x")
                .await
                .expect("publish answered");
            let body = response.body().await.expect("a body");
            (
                response.status(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };
    let (status, mine) = publish(&hub, "id=mine").await;
    assert_eq!((status, mine.as_str()), (StatusCode::OK, "mine"));
    let (_, generated) = publish(&hub, "topic=t").await;
    drop(hub); // SIGKILL

    let hub = ChildHub::on_store(&store, &[]);
    let (status, body) = publish(&hub, "id=mine").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the id is still taken: {body}"
    );
    let (status, next) = publish(&hub, "topic=t").await;
    assert_eq!(status, StatusCode::OK);
    assert!(numeric(&next) > numeric(&generated), "{next} > {generated}");
    let stats = hub.stats().await;
    assert_eq!(stats["history_len"], 3, "{stats}");
}
