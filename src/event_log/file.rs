//! The `file:` backend: the retained events in a redb file, committed by one writer thread in
//! group commits (each batch is one fsync'd transaction), trimmed by the history's own rule.
//!
//! Layout, version 1: table `events` maps a sequence number (u64, log order) to one event as
//! JSON (`id`, `topics`, `private`, and its wire `frame`); table `meta` holds `version`,
//! `next_seq` and `last_generated_id`. redb owns the format, crash safety and locking.

use std::{
    borrow::Cow,
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread,
};

use bytes::Bytes;
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition, TableHandle,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{Batch, Commit, CommitError, EventLog, Recovered, StoreError};
use crate::{
    broadcaster::Window,
    event::{Event, Kind},
    metrics::Metrics,
};

/// The layout this hub reads and writes.
pub const VERSION: u64 = 1;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// redb's page cache. The writer only touches the ends of the log, so a small cache holds what
/// it needs; the default (1 GiB) would let a long-running hub keep the whole file resident.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// One event as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    topics: Vec<String>,
    private: bool,
    /// The wire frame as first encoded, so a replay after a restart is byte for byte the same.
    #[serde(borrow)]
    frame: Cow<'a, str>,
}

impl Stored<'_> {
    fn encode(event: &Event) -> Vec<u8> {
        let stored = Stored {
            id: Cow::Borrowed(&event.id),
            topics: event.topics.clone(),
            private: event.private,
            // Frames are encoded from UTF-8 fields only.
            frame: Cow::Borrowed(std::str::from_utf8(&event.frame).unwrap_or_default()),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        let stored: Stored<'_> = serde_json::from_slice(bytes)?;
        Ok(Event {
            id: stored.id.as_ref().into(),
            topics: stored.topics,
            private: stored.private,
            kind: Kind::of_frame(stored.frame.as_bytes()),
            frame: Bytes::copy_from_slice(stored.frame.as_bytes()),
        })
    }
}

/// A batch handed to the writer thread, and where to say how it went.
#[derive(Debug)]
struct Job {
    batch: Batch,
    done: oneshot::Sender<Result<(), CommitError>>,
}

/// The handle the broadcaster holds. Dropping it lets the writer finish what it was given,
/// close the file cleanly and exit; the drop waits for that.
#[derive(Debug)]
pub struct FileLog {
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl FileLog {
    /// Opens (or creates) the store at `path` and reads back what it holds. Refuses, leaving
    /// the file as it was, one that is not a store of this version, is corrupt, or is open in
    /// another hub.
    pub fn open(
        path: &Path,
        window: Window,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Recovered), StoreError> {
        let (writer, recovered) = Writer::open(path, window, metrics)?;
        let (jobs, queue) = mpsc::channel();
        let writer = thread::Builder::new()
            .name("sse-hub-store".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|err| StoreError::Unreadable {
                path: shown(path),
                detail: format!("cannot start its writer thread: {err}"),
            })?;
        Ok((
            Self {
                jobs: Some(jobs),
                writer: Some(writer),
            },
            recovered,
        ))
    }
}

impl EventLog for FileLog {
    fn is_durable(&self) -> bool {
        true
    }

    fn append(&mut self, batch: Batch) -> Commit {
        let (done, commit) = oneshot::channel();
        let job = Job { batch, done };
        if let Some(jobs) = &self.jobs
            && let Err(mpsc::SendError(job)) = jobs.send(job)
        {
            // The writer is gone (it only ends when this handle drops, or if it panicked).
            let _ = job.done.send(Err(CommitError(
                "the store's writer has stopped".to_owned(),
            )));
        }
        commit
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            log::error!("the store's writer thread panicked");
        }
    }
}

/// The writer thread's state: the database and a mirror of which sequence numbers it retains.
struct Writer {
    path: PathBuf,
    db: Database,
    window: Window,
    /// Sequence numbers of the retained events, oldest first, in step with `window`.
    retained: VecDeque<u64>,
    next_seq: u64,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn open(
        path: &Path,
        window: Window,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Recovered), StoreError> {
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            // A file damaged outside redb is reported as corrupt instead of being trusted.
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|err| open_error(path, err))?;
        let mut writer = Self {
            path: path.to_owned(),
            db,
            window,
            retained: VecDeque::new(),
            next_seq: 0,
            metrics,
        };
        let recovered = writer.recover()?;
        Ok((writer, recovered))
    }

    /// Reads the meta data and every event, checks the version, and applies the retention rule
    /// (the bounds may have shrunk since the last run; what falls out is deleted now).
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let path = shown(&self.path);
        let corrupt = |err: &dyn std::fmt::Display| StoreError::Corrupt {
            path: path.clone(),
            detail: err.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| corrupt(&e))?;
        let mut names = Vec::new();
        for table in txn.list_tables().map_err(|e| corrupt(&e))? {
            names.push(table.name().to_owned());
        }
        if names.is_empty() {
            drop(txn);
            self.initialise()?;
            return Ok(Recovered::default());
        }
        if !names.iter().any(|n| n == "meta") {
            return Err(StoreError::NotAStore {
                path,
                detail: format!("a redb file without sse-hub's tables (it has {names:?})"),
            });
        }
        let meta = txn.open_table(META).map_err(|e| corrupt(&e))?;
        let read_meta = |key: &str| -> Result<Option<u64>, StoreError> {
            Ok(meta.get(key).map_err(|e| corrupt(&e))?.map(|v| v.value()))
        };
        match read_meta("version")? {
            Some(VERSION) => {}
            Some(found) => {
                return Err(StoreError::UnknownVersion {
                    path,
                    found,
                    supported: VERSION,
                });
            }
            None => {
                return Err(StoreError::NotAStore {
                    path,
                    detail: "its `meta` table has no version".to_owned(),
                });
            }
        }
        self.next_seq = read_meta("next_seq")?.unwrap_or(0);
        let last_generated_id = read_meta("last_generated_id")?.unwrap_or(0);
        let mut events = Vec::new();
        let mut seqs = Vec::new();
        let table = txn.open_table(EVENTS).map_err(|e| corrupt(&e))?;
        for entry in table.iter().map_err(|e| corrupt(&e))? {
            let (seq, value) = entry.map_err(|e| corrupt(&e))?;
            let event = Stored::decode(value.value()).map_err(|err| StoreError::Corrupt {
                path: path.clone(),
                detail: format!("event {} does not decode: {err}", seq.value()),
            })?;
            seqs.push(seq.value());
            events.push(Arc::new(event));
        }
        drop((table, meta, txn));

        let mut kept = VecDeque::with_capacity(events.len());
        let mut evicted = Vec::new();
        for (seq, event) in seqs.into_iter().zip(events) {
            let before = evicted.len();
            let retained = self.admit(seq, event.size_bytes(), &mut evicted);
            for _ in before..evicted.len() {
                kept.pop_front();
            }
            if retained {
                kept.push_back(event);
            } else {
                evicted.push(seq);
            }
        }
        if !evicted.is_empty() {
            self.delete(&evicted)
                .map_err(|err| StoreError::Unreadable {
                    path: path.clone(),
                    detail: format!("cannot trim it to the history bounds: {err}"),
                })?;
            log::info!(
                "store trimmed to the history bounds path={path} removed={}",
                evicted.len()
            );
        }
        Ok(Recovered {
            events: kept.into(),
            last_generated_id,
        })
    }

    /// Runs the event `seq` of `size` bytes through the window: the sequence numbers it pushes
    /// out go to `evicted`, oldest first; returns whether `seq` itself is retained.
    fn admit(&mut self, seq: u64, size: usize, evicted: &mut Vec<u64>) -> bool {
        let admission = self.window.push(size);
        for _ in 0..admission.evicted {
            evicted.extend(self.retained.pop_front());
        }
        if admission.kept {
            self.retained.push_back(seq);
        }
        admission.kept
    }

    /// Writes the tables of a new store.
    fn initialise(&mut self) -> Result<(), StoreError> {
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert("version", VERSION)?;
                meta.insert("next_seq", 0)?;
                meta.insert("last_generated_id", 0)?;
                txn.open_table(EVENTS)?;
            }
            txn.commit()?;
            Ok(())
        })();
        result.map_err(|err| StoreError::Unreadable {
            path: shown(&self.path),
            detail: err.to_string(),
        })?;
        log::info!("store created path={}", self.path.display());
        Ok(())
    }

    fn delete(&self, seqs: &[u64]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(EVENTS)?;
            for seq in seqs {
                table.remove(seq)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Commits jobs one transaction each, until the handle drops.
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            let started = std::time::Instant::now();
            let result = self.commit(&job.batch);
            if result.is_ok() {
                self.metrics.store_commits.inc();
                self.metrics
                    .store_commit_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            let result = result.map_err(|err| {
                log::error!(
                    "store commit failed path={} events={} error={err}",
                    self.path.display(),
                    job.batch.events.len()
                );
                // The mirror may have moved past what the file holds: read it back.
                if let Err(err) = self.reload() {
                    log::error!(
                        "store reload failed path={} error={err}",
                        self.path.display()
                    );
                }
                CommitError("the event could not be stored".to_owned())
            });
            let _ = job.done.send(result);
        }
        log::debug!("store writer stopped path={}", self.path.display());
    }

    /// One durable transaction: the batch's events, what they push out of the window, and the
    /// counters. redb's default durability makes `commit` return after fsync.
    fn commit(&mut self, batch: &Batch) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(EVENTS)?;
            let mut evicted = Vec::new();
            // Subscription events are not stored: their subscribers are gone after a restart,
            // and the file's window then stays the history's application lane.
            for event in batch.events.iter().filter(|e| e.kind == Kind::Application) {
                let seq = self.next_seq;
                self.next_seq += 1;
                if self.admit(seq, event.size_bytes(), &mut evicted) {
                    table.insert(seq, Stored::encode(event).as_slice())?;
                }
                // An event evicted by a later one of the same batch was inserted above.
                for old in evicted.drain(..) {
                    table.remove(old)?;
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert("next_seq", self.next_seq)?;
            meta.insert("last_generated_id", batch.last_generated_id)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Rebuilds the retained mirror from the file after a failed commit.
    fn reload(&mut self) -> Result<(), redb::Error> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        self.next_seq = meta.get("next_seq")?.map_or(0, |v| v.value());
        let table = txn.open_table(EVENTS)?;
        self.window.clear();
        self.retained.clear();
        for entry in table.iter()? {
            let (seq, value) = entry?;
            let size = Stored::decode(value.value())
                .map(|event| event.size_bytes())
                .unwrap_or_default();
            self.window.push(size);
            self.retained.push_back(seq.value());
        }
        Ok(())
    }
}

/// A path as error messages show it.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Names what went wrong when redb could not open the file.
fn open_error(path: &Path, err: DatabaseError) -> StoreError {
    let path = shown(path);
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::AlreadyOpen { path }
        }
        DatabaseError::UpgradeRequired(version) => StoreError::NotAStore {
            path,
            detail: format!("a redb file of an older format ({version})"),
        },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => {
            StoreError::Corrupt { path, detail }
        }
        DatabaseError::Storage(StorageError::Io(err))
            if err.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::NotAStore {
                path,
                detail: err.to_string(),
            }
        }
        DatabaseError::Storage(StorageError::Io(err)) => StoreError::Unreadable {
            path,
            detail: err.to_string(),
        },
        other => StoreError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventDraft;

    fn event(id: &str, data: &str) -> Arc<Event> {
        Arc::new(Event::new(
            id.into(),
            EventDraft {
                topics: vec!["t".into(), "https://example.com/{x}".into()],
                data: data.into(),
                private: id.ends_with('p'),
                ..EventDraft::default()
            },
        ))
    }

    fn append(log: &mut FileLog, events: &[Arc<Event>], last_generated_id: u64) {
        let commit = log.append(Batch {
            events: events.to_vec(),
            last_generated_id,
        });
        commit
            .blocking_recv()
            .expect("the writer answers")
            .expect("committed");
    }

    fn ids(recovered: &Recovered) -> Vec<&str> {
        recovered.events.iter().map(|e| &*e.id).collect()
    }

    /// What was committed comes back after a reopen, byte for byte, with the id state.
    #[test]
    fn committed_events_come_back_after_reopen() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut log, recovered) =
            FileLog::open(&path, Window::new(100, 1 << 20), Metrics::new()).expect("opens");
        assert!(recovered.events.is_empty());
        let written = [event("a", "one\ntwo"), event("bp", "three")];
        append(&mut log, &written[..1], 41);
        append(&mut log, &written[1..], 42);
        drop(log);

        let (_log, recovered) =
            FileLog::open(&path, Window::new(100, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["a", "bp"]);
        assert_eq!(recovered.last_generated_id, 42);
        for (read, written) in recovered.events.iter().zip(&written) {
            assert_eq!(read.frame, written.frame);
            assert_eq!(read.topics, written.topics);
            assert_eq!(read.private, written.private);
        }
    }

    /// The file keeps exactly what the history's window keeps, by count and by bytes, and a
    /// reopen with smaller bounds trims it further.
    #[test]
    fn the_file_is_trimmed_like_the_history() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let size = event("e00", &"x".repeat(100)).size_bytes();
        let (mut log, _) =
            FileLog::open(&path, Window::new(10, size * 5), Metrics::new()).expect("opens");
        for n in 0..30 {
            append(&mut log, &[event(&format!("e{n:02}"), &"x".repeat(100))], n);
        }
        drop(log);
        let (log, recovered) =
            FileLog::open(&path, Window::new(10, size * 5), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["e25", "e26", "e27", "e28", "e29"]);
        drop(log);
        let (log, recovered) =
            FileLog::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["e28", "e29"]);
        drop(log);
        let (_log, recovered) =
            FileLog::open(&path, Window::new(10, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["e28", "e29"], "the trim was written");
    }

    /// An event too large for the byte budget empties the file, as it empties the history.
    #[test]
    fn an_oversized_event_empties_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut log, _) =
            FileLog::open(&path, Window::new(10, 300), Metrics::new()).expect("opens");
        append(
            &mut log,
            &[event("a", "x"), event("b", &"y".repeat(500))],
            0,
        );
        append(&mut log, &[event("c", "z")], 0);
        drop(log);
        let (_log, recovered) =
            FileLog::open(&path, Window::new(10, 300), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["c"]);
    }

    /// Subscription events are committed with their batch but not written: after a reopen
    /// only the application events come back, and they alone count against the window.
    #[test]
    fn subscription_events_are_not_stored() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut log, _) =
            FileLog::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("opens");
        let announcement = |id: &str| {
            Arc::new(Event::new(
                id.into(),
                EventDraft {
                    topics: vec!["/.well-known/mercure/subscriptions/exact/t/s".into()],
                    data: "{}".into(),
                    event_type: Some("mercure".into()),
                    private: true,
                    ..EventDraft::default()
                },
            ))
        };
        append(
            &mut log,
            &[event("a", "x"), announcement("s1"), announcement("s2")],
            0,
        );
        append(&mut log, &[announcement("s3"), event("b", "x")], 0);
        drop(log);
        let (_log, recovered) =
            FileLog::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["a", "b"]);
    }

    /// A redb file that some other program made is not taken for a store.
    #[test]
    fn a_foreign_redb_file_is_not_a_store() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("other.redb");
        {
            let db = Database::create(&path).expect("creates");
            let txn = db.begin_write().expect("writes");
            txn.open_table(TableDefinition::<u64, u64>::new("theirs"))
                .expect("a table");
            txn.commit().expect("commits");
        }
        let err = FileLog::open(&path, Window::new(10, 1000), Metrics::new()).expect_err("refused");
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    }
}
