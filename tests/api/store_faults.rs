//! The file store under faults from outside the hub: a full disk (a small tmpfs the test
//! mounts), which it recovers from by itself, and a store file truncated, replaced or deleted
//! under the running hub, which it refuses to write to again.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;
use serde_json::Value;

use crate::helpers::{ChildHub, HubLog, SseStream, client, hub_command, send_signal};

/// How long the store may take to notice the disk takes writes again (a reopen attempt every
/// 500 ms; seconds on a loaded disk).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// A tmpfs of a given size mounted on a temporary directory; unmounted on drop, also when the
/// test panics.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) runs");
        assert!(
            output.status.success(),
            "this test needs root to mount a tmpfs (mount -t tmpfs): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the hub may still hold the file while it is being killed.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A hub child process on `file:store`, its log kept.
fn start_hub(store: &Path, log: &HubLog) -> ChildHub {
    ChildHub::spawn_logged(
        hub_command(&format!("file:{}", store.display()), &[]),
        log.clone(),
    )
}

fn url(hub: &ChildHub, path: &str) -> String {
    format!("http://{}{path}", hub.addr)
}

/// Publishes `id` to topic `t`: the status, the `Retry-After` header and the body.
async fn publish(hub: &ChildHub, id: &str) -> (StatusCode, Option<String>, String) {
    let mut response = client()
        .post(url(hub, &format!("/publish?topic=t&id={id}")))
        .send_body(format!("event {id}"))
        .await
        .expect("publish answered");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.body().await.expect("a body");
    (
        response.status(),
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn get(hub: &ChildHub, path: &str) -> (StatusCode, String) {
    let mut response = client().get(url(hub, path)).send().await.expect("answered");
    let body = response.body().await.expect("a body");
    (
        response.status(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Asserts a 503 JSON error with `Retry-After`.
fn assert_refused(answer: &(StatusCode, Option<String>, String), what: &str) {
    let (status, retry_after, body) = answer;
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert!(retry_after.is_some(), "{what}: a 503 carries Retry-After");
    let json: Value = serde_json::from_str(body).expect("error bodies are JSON");
    assert!(json["error"].is_string(), "{what}: {body}");
}

/// `/readyz` answers 503 naming each of `needles`.
async fn assert_not_ready(hub: &ChildHub, needles: &[&str]) {
    let (status, body) = get(hub, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "/readyz: {body}");
    let json: Value = serde_json::from_str(&body).expect("JSON");
    let reason = json["error"].as_str().expect("an error string");
    for needle in needles {
        assert!(
            reason.contains(needle),
            "/readyz {reason:?} names {needle:?}"
        );
    }
}

/// A stream of every public event, its opening comment read.
async fn subscribe(hub: &ChildHub, last_event_id: Option<&str>) -> SseStream {
    let mut request = client().get(url(hub, "/stream"));
    if let Some(id) = last_event_id {
        request = request.insert_header(("last-event-id", id));
    }
    let response = request.send().await.expect("the stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    SseStream::opened(response).await
}

/// The next `n` events' ids.
async fn next_ids(stream: &mut SseStream, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let event = stream.next_event().await;
        ids.push(event.id.expect("events have ids"));
    }
    ids
}

/// Fills the file system under `dir` with a filler file until it refuses a write (ENOSPC).
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("the filler is created");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        if let Err(err) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(
                err.raw_os_error(),
                Some(28),
                "the filler stops at ENOSPC: {err}"
            );
            break;
        }
    }
    // Whatever fits in a smaller write, too.
    while file.write_all(&[0; 512]).is_ok() {}
    path
}

/// Stops the hub with SIGTERM and waits for it to exit.
fn stop(mut hub: ChildHub) {
    send_signal(hub.child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while hub.child.try_wait().expect("waitable").is_none() {
        assert!(Instant::now() < deadline, "the hub stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A full disk makes publishes 503 (with `Retry-After`) and `/readyz` 503 naming it while
/// `/healthz` stays 200 and open streams keep their keep-alives; once space returns the store
/// writes again by itself, and after a restart the file holds every event answered 200, in
/// order, and none answered 503.
#[actix_web::test]
async fn the_store_recovers_from_a_full_disk_without_losing_or_inventing_events() {
    // Arrange: a hub on a 4 MiB tmpfs, a subscriber, a few events.
    let tmpfs = Tmpfs::mount(4 * 1024 * 1024);
    let store = tmpfs.path().join("history.redb");
    let log = HubLog::default();
    let hub = start_hub(&store, &log);
    let mut live = subscribe(&hub, None).await;
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let id = format!("before-{n}");
        let (status, _, body) = publish(&hub, &id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        acknowledged.push(id);
    }
    assert_eq!(next_ids(&mut live, 5).await, acknowledged);

    // Act: fill the disk. redb may still reuse pages it freed, so publish until one fails.
    let filler = fill(tmpfs.path());
    let mut refused = Vec::new();
    for n in 0..2000 {
        let id = format!("full-{n}");
        let answer = publish(&hub, &id).await;
        if answer.0 == StatusCode::OK {
            acknowledged.push(id);
        } else {
            assert_refused(&answer, "a publish on a full disk");
            refused.push(id);
            break;
        }
    }
    assert_eq!(refused.len(), 1, "a publish fails once the disk is full");
    let during = acknowledged.len() - 5;
    if during > 0 {
        assert_eq!(next_ids(&mut live, during).await, acknowledged[5..]);
    }

    // Assert: refused at once while full, not ready, healthy, streams open.
    for n in 0..3 {
        let id = format!("refused-{n}");
        let answer = publish(&hub, &id).await;
        assert_refused(&answer, "a publish while the disk stays full");
        refused.push(id);
    }
    assert_not_ready(
        &hub,
        &[&store.display().to_string(), "No space left on device"],
    )
    .await;
    let (status, body) = get(&hub, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "/healthz: {body}");
    // Past a reopen attempt (every 500 ms): still not ready while the disk is full.
    std::thread::sleep(Duration::from_millis(1200));
    assert_not_ready(&hub, &["No space left on device"]).await;
    let keep_alive = live
        .next_frame_within(Duration::from_secs(5))
        .await
        .expect("a frame within 5 s")
        .expect("the stream stays open");
    assert!(
        keep_alive.comment.is_some(),
        "keep-alives only: {keep_alive:?}"
    );

    // Act: space returns.
    std::fs::remove_file(&filler).expect("the filler is removed");
    let freed = Instant::now();
    let deadline = freed + RECOVERY_TIMEOUT;
    loop {
        let (status, body) = get(&hub, "/readyz").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz is back to 200 within {RECOVERY_TIMEOUT:?}: {body}; log:\n{}",
            log.tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "full disk: {during} publishes acknowledged after the disk filled, ready {:?} after \
         space returned",
        freed.elapsed()
    );
    let mut after = Vec::new();
    for n in 0..3 {
        let id = format!("after-{n}");
        let (status, _, body) = publish(&hub, &id).await;
        assert_eq!(status, StatusCode::OK, "a publish after recovery: {body}");
        after.push(id.clone());
        acknowledged.push(id);
    }
    assert_eq!(
        next_ids(&mut live, 3).await,
        after,
        "the subscriber from before gets what is published after recovery"
    );
    let failures = get(&hub, "/metrics").await.1;
    assert!(
        failures.contains("sse_hub_store_commit_failures_total "),
        "the failures are counted"
    );

    // Logged when it started and when it ended, not once per refused publish (every line up to
    // the last request's is read).
    let lines = log.wait_for("\"GET /metrics HTTP/1.1\" 200");
    for (line, times) in [("store commit failed", 1), ("store writes again", 1)] {
        let found = lines.lines().filter(|l| l.contains(line)).count();
        assert_eq!(found, times, "{line:?} logged {times} time(s):\n{lines}");
    }

    // Assert: a restart on the same file replays exactly what was acknowledged.
    drop(live);
    stop(hub);
    let hub = start_hub(&store, &log);
    let mut replay = subscribe(&hub, Some("earliest")).await;
    let replayed = next_ids(&mut replay, acknowledged.len()).await;
    assert_eq!(replayed, acknowledged, "every event answered 200, in order");
    replay
        .assert_no_event_within(Duration::from_millis(300))
        .await;
    for id in &refused {
        assert!(
            !replayed.contains(id),
            "{id} was answered 503 and is not stored"
        );
    }
}

/// How a test changes the store file under the running hub, and what the hub calls it.
#[derive(Debug, Clone, Copy)]
enum Change {
    TruncatedToHalf,
    TruncatedToZero,
    Replaced,
    Deleted,
}

impl Change {
    fn apply(self, store: &Path) {
        match self {
            Self::TruncatedToHalf | Self::TruncatedToZero => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(store)
                    .expect("the store opens for writing");
                let len = file.metadata().expect("metadata").len();
                let to = if matches!(self, Self::TruncatedToHalf) {
                    len / 2
                } else {
                    0
                };
                file.set_len(to).expect("truncated");
            }
            Self::Replaced => {
                let other = store.with_extension("other");
                std::fs::copy(store, &other).expect("a copy");
                std::fs::rename(&other, store).expect("renamed over the store");
            }
            Self::Deleted => std::fs::remove_file(store).expect("deleted"),
        }
    }

    /// What `/readyz` and the log say.
    fn named(self) -> &'static str {
        match self {
            Self::TruncatedToHalf | Self::TruncatedToZero => "truncated from",
            Self::Replaced => "replaced",
            Self::Deleted => "deleted",
        }
    }
}

/// A store file truncated (to half, to zero), replaced or deleted under the running hub is
/// noticed at the next commit: publishes 503, `/readyz` 503 naming the file and the change, one
/// log line saying so; events published before are still delivered.
#[actix_web::test]
async fn a_store_file_changed_under_the_hub_is_refused_at_the_next_commit() {
    for change in [
        Change::TruncatedToHalf,
        Change::TruncatedToZero,
        Change::Replaced,
        Change::Deleted,
    ] {
        // Arrange
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = dir.path().join("history.redb");
        let log = HubLog::default();
        let hub = start_hub(&store, &log);
        let mut live = subscribe(&hub, None).await;
        let mut published = Vec::new();
        for n in 0..3 {
            let id = format!("e{n}");
            let (status, _, body) = publish(&hub, &id).await;
            assert_eq!(status, StatusCode::OK, "{change:?}: {body}");
            published.push(id);
        }

        // Act
        change.apply(&store);
        let answer = publish(&hub, "after").await;

        // Assert
        assert_refused(
            &answer,
            &format!("{change:?}: the publish after the change"),
        );
        assert_refused(
            &publish(&hub, "again").await,
            &format!("{change:?}: no recovery from a changed file"),
        );
        assert_not_ready(&hub, &[&store.display().to_string(), change.named()]).await;
        // Every line up to the last request's is read.
        let lines = log.wait_for("\"GET /readyz HTTP/1.1\" 503");
        let told: Vec<&str> = lines
            .lines()
            .filter(|line| line.contains("store file changed under the running hub"))
            .collect();
        assert_eq!(told.len(), 1, "{change:?}: one log line:\n{lines}");
        assert!(
            told[0].contains(&store.display().to_string()) && told[0].contains(change.named()),
            "{change:?}: the line names the file and the change: {}",
            told[0]
        );
        assert_eq!(next_ids(&mut live, 3).await, published, "{change:?}");
        let mut replay = subscribe(&hub, Some("earliest")).await;
        assert_eq!(
            next_ids(&mut replay, 3).await,
            published,
            "{change:?}: the history still replays what was published before"
        );
        replay
            .assert_no_event_within(Duration::from_millis(200))
            .await;
    }
}
