//! The `file:` backend: the retained events in a redb file, committed by one writer thread in
//! group commits (each batch is one fsync'd transaction), trimmed by the history's own rule.
//!
//! Layout, version 1: table `events` maps a sequence number (u64, log order) to one event as
//! JSON (`id`, `topics`, `private`, and its wire `frame`); table `meta` holds `version`,
//! `next_seq` and `last_generated_id`. redb owns the format, crash safety and locking.

use std::{
    borrow::Cow,
    collections::{HashSet, VecDeque},
    fs::File,
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, mpsc},
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition, TableHandle,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use actix::Recipient;

use super::{
    AppendError, Appending, EventLog, Locating, Placed, Position, Readiness, Retention, StoreError,
    TailEntry, Tailed, Window,
    local::{Ids, LocalTail},
};
use crate::{
    event::{Event, EventDraft, Kind},
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

/// Events to commit in one transaction, with the id state to store alongside.
#[derive(Debug)]
struct Batch {
    events: Vec<Arc<Event>>,
    /// The highest id generated so far, kept so that ids only grow across restarts, even when
    /// the clock steps back.
    last_generated_id: u64,
}

/// What the file held when it was opened: the retained events, oldest first, and the id state.
#[derive(Debug, Default)]
struct Recovered {
    events: Vec<Arc<Event>>,
    last_generated_id: u64,
}

/// Why a batch was not committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct CommitError(String);

/// What the writer thread is asked to do.
#[derive(Debug)]
enum Job {
    /// Commit these events (placed by the handle), then hand them to the tail and answer.
    Commit {
        entries: Vec<TailEntry>,
        placed: Vec<Option<Placed>>,
        last_generated_id: u64,
        done: oneshot::Sender<super::Appended>,
    },
    /// Start the tail.
    Tail(Recipient<Tailed>),
}

/// The handle the broadcaster holds. Dropping it lets the writer finish what it was given,
/// close the file cleanly and exit; the drop waits for that.
#[derive(Debug)]
pub struct FileLog {
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
    ready: Readiness,
    /// Given out on the broadcaster's thread as publications arrive; the writer thread marks
    /// them committed or releases them.
    ids: Arc<Mutex<Ids>>,
    /// What the file held when opened: the tail's snapshot, sent from the broadcaster's thread
    /// as it starts, so that it is the first thing the broadcaster handles.
    recovered: Vec<TailEntry>,
}

impl FileLog {
    /// Opens (or creates) the store at `path` and reads back what it holds (handed over when
    /// the tail starts). Refuses, leaving the file as it was, one that is not a store of this
    /// version, is corrupt, or is open in another hub.
    pub fn open(
        path: &Path,
        retention: Retention,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let (mut writer, recovered) = Writer::open(path, retention.window(), metrics)?;
        let entries: Vec<TailEntry> = recovered
            .events
            .into_iter()
            .enumerate()
            .map(|(n, event)| TailEntry {
                position: Position {
                    major: 0,
                    minor: n as u64,
                },
                event,
            })
            .collect();
        log::info!(
            "event log opened store=file:{} events={}",
            path.display(),
            entries.len()
        );
        let ids = Arc::new(Mutex::new(Ids::new(
            retention,
            &entries,
            recovered.last_generated_id,
        )));
        writer.ids = Some(ids.clone());
        let ready = writer.ready.clone();
        let (jobs, queue) = mpsc::channel();
        let writer = thread::Builder::new()
            .name("sse-hub-store".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|err| StoreError::Unreadable {
                path: shown(path),
                detail: format!("cannot start its writer thread: {err}"),
            })?;
        Ok(Self {
            jobs: Some(jobs),
            writer: Some(writer),
            ready,
            ids,
            recovered: entries,
        })
    }

    fn ids(&self) -> MutexGuard<'_, Ids> {
        lock(&self.ids)
    }
}

fn lock(ids: &Mutex<Ids>) -> MutexGuard<'_, Ids> {
    ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EventLog for FileLog {
    fn append(&mut self, publications: Vec<EventDraft>) -> Appending {
        let (done, appending) = oneshot::channel();
        let (placed, entries, last_generated_id) = {
            let mut ids = self.ids();
            let (placed, entries) = ids.place(publications);
            (placed, entries, ids.last_generated())
        };
        let job = Job::Commit {
            entries,
            placed,
            last_generated_id,
            done,
        };
        if let Some(jobs) = &self.jobs
            && let Err(mpsc::SendError(job)) = jobs.send(job)
            && let Job::Commit { entries, done, .. } = job
        {
            // The writer is gone (it only ends when this handle drops, or if it panicked).
            self.ids().released(&entries);
            let _ = done.send(Err(AppendError::NotStored(
                "the store's writer has stopped".to_owned(),
            )));
        }
        appending
    }

    fn locate(&self, id: &str) -> Locating {
        let (done, located) = oneshot::channel();
        let _ = done.send(self.ids().locate(id));
        located
    }

    fn tail(&mut self, sink: Recipient<Tailed>) {
        sink.do_send(Tailed::Snapshot(std::mem::take(&mut self.recovered)));
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Tail(sink));
        }
    }

    fn readiness(&self) -> Readiness {
        self.ready.clone()
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

/// How often a store whose commits failed tries to reopen its file. Meanwhile publishes are
/// refused at once (`503` with `Retry-After: 1`), so a retry every half second brings it back
/// within a publisher's first or second retry, for the cost of a 64 KiB probe write.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// How often, at most, a store that stays broken says so in the log (the first failure and the
/// recovery are always logged).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the probe writes next to the store before the store is reopened: a disk that takes
/// this much again (and fsyncs it) can take a small commit. Without the probe, reopening
/// succeeds on a full disk (it only reads), and the next publish would fail again.
const PROBE_BYTES: usize = 64 * 1024;

/// The file the store wrote last, as the writer last left it: its identity and length. redb
/// changes the length only inside a commit (it grows the file, and shrinks free space at its
/// end when committing), so between two commits a different length, another inode or a missing
/// path means someone else changed the file.
#[derive(Debug)]
struct Identity {
    /// Kept open so `fstat` sees the file the store wrote even when the path no longer names it.
    file: File,
    dev: u64,
    ino: u64,
    len: u64,
}

impl Identity {
    fn of(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            file,
        })
    }

    /// What happened to the file since the last commit, if anything: `deleted`, `replaced by
    /// another file`, or `truncated from X to Y bytes`. With `length`, the length is compared
    /// too (not after a failed commit: redb may have grown the file and left it so).
    fn changed(&self, path: &Path, length: bool) -> Option<String> {
        match std::fs::metadata(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Some("deleted".to_owned());
            }
            // Not ours to judge (a permission change, say): the commit will tell.
            Err(_) => return None,
            Ok(meta) if (meta.dev(), meta.ino()) != (self.dev, self.ino) => {
                return Some("replaced by another file".to_owned());
            }
            Ok(_) => {}
        }
        let len = self.file.metadata().ok()?.len();
        if !length || len == self.len {
            None
        } else if len < self.len {
            Some(format!("truncated from {} to {len} bytes", self.len))
        } else {
            Some(format!(
                "grown from {} to {len} bytes by another writer",
                self.len
            ))
        }
    }
}

/// Whether the writer can commit.
#[derive(Debug)]
enum Health {
    Writing,
    /// A commit failed: the database is closed, and reopened on a timer until the disk takes
    /// writes again. Publishes meanwhile are refused at once.
    Failing {
        error: String,
        next_attempt: Instant,
        /// Batches refused since the last log line, and when that was.
        refused: u64,
        logged: Instant,
    },
    /// The file was changed under the hub (truncated, replaced, deleted): what it holds can no
    /// longer be trusted, so nothing is written to it again until a restart checks it.
    Changed(String),
}

/// The writer thread's state: the database and a mirror of the events it retains.
struct Writer {
    path: PathBuf,
    /// `None` while failing: redb answers `PreviousIo` after an I/O error until reopened.
    db: Option<Database>,
    window: Window,
    /// The retained events (sequence number and event), oldest first, in step with `window`
    /// and with the broadcaster's history: only committed batches move it.
    retained: VecDeque<(u64, Arc<Event>)>,
    next_seq: u64,
    identity: Option<Identity>,
    health: Health,
    ready: Readiness,
    metrics: Arc<Metrics>,
    /// The handle's ids, told which batches were committed; `None` in unit tests of the writer.
    ids: Option<Arc<Mutex<Ids>>>,
    tail: LocalTail,
}

impl Writer {
    fn open(
        path: &Path,
        window: Window,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Recovered), StoreError> {
        let db = open_database(path).map_err(|err| open_error(path, err))?;
        let mut writer = Self {
            path: path.to_owned(),
            db: Some(db),
            window,
            retained: VecDeque::new(),
            next_seq: 0,
            identity: None,
            health: Health::Writing,
            ready: Readiness::ready(),
            metrics,
            ids: None,
            tail: LocalTail::default(),
        };
        let recovered = writer.recover()?;
        writer.identity = Some(Identity::of(path).map_err(|err| StoreError::Unreadable {
            path: shown(path),
            detail: err.to_string(),
        })?);
        Ok((writer, recovered))
    }

    fn db(&self) -> Result<&Database, redb::Error> {
        self.db.as_ref().ok_or(redb::Error::PreviousIo)
    }

    /// Reads the meta data and every event, checks the version, and applies the retention rule
    /// (the bounds may have shrunk since the last run; what falls out is deleted now).
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        let path = shown(&self.path);
        let Some(Layout {
            next_seq,
            last_generated_id,
            events,
        }) = self.read_layout()?
        else {
            self.initialise()?;
            return Ok(Recovered::default());
        };
        self.next_seq = next_seq;
        let mut evicted = Vec::new();
        for (seq, event) in events {
            self.admit(seq, event, &mut evicted);
        }
        if !evicted.is_empty() {
            let seqs: Vec<u64> = evicted.iter().map(|(seq, _)| *seq).collect();
            self.delete(&seqs).map_err(|err| StoreError::Unreadable {
                path: path.clone(),
                detail: format!("cannot trim it to the history bounds: {err}"),
            })?;
            log::info!(
                "store trimmed to the history bounds path={path} removed={}",
                seqs.len()
            );
        }
        Ok(Recovered {
            events: self.retained.iter().map(|(_, e)| e.clone()).collect(),
            last_generated_id,
        })
    }

    /// What the file holds, after checking it is a store of this version; `None` for a file
    /// without tables (a new one).
    fn read_layout(&self) -> Result<Option<Layout>, StoreError> {
        let path = shown(&self.path);
        let corrupt = |err: &dyn std::fmt::Display| StoreError::Corrupt {
            path: path.clone(),
            detail: err.to_string(),
        };
        let db = self.db().map_err(|e| corrupt(&e))?;
        let txn = db.begin_read().map_err(|e| corrupt(&e))?;
        let mut names = Vec::new();
        for table in txn.list_tables().map_err(|e| corrupt(&e))? {
            names.push(table.name().to_owned());
        }
        if names.is_empty() {
            return Ok(None);
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
        let next_seq = read_meta("next_seq")?.unwrap_or(0);
        let last_generated_id = read_meta("last_generated_id")?.unwrap_or(0);
        let mut events = Vec::new();
        let table = txn.open_table(EVENTS).map_err(|e| corrupt(&e))?;
        for entry in table.iter().map_err(|e| corrupt(&e))? {
            let (seq, value) = entry.map_err(|e| corrupt(&e))?;
            let event = Stored::decode(value.value()).map_err(|err| StoreError::Corrupt {
                path: path.clone(),
                detail: format!("event {} does not decode: {err}", seq.value()),
            })?;
            events.push((seq.value(), Arc::new(event)));
        }
        Ok(Some(Layout {
            next_seq,
            last_generated_id,
            events,
        }))
    }

    /// Runs the event `seq` through the window: the retained events it pushes out go to
    /// `evicted`, oldest first; returns whether `seq` itself is retained.
    fn admit(&mut self, seq: u64, event: Arc<Event>, evicted: &mut Vec<(u64, Arc<Event>)>) -> bool {
        let admission = self.window.push(event.size_bytes());
        for _ in 0..admission.evicted {
            evicted.extend(self.retained.pop_front());
        }
        if admission.kept {
            self.retained.push_back((seq, event));
        } else {
            evicted.push((seq, event));
        }
        admission.kept
    }

    /// Writes the tables of a new store.
    fn initialise(&mut self) -> Result<(), StoreError> {
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.db()?.begin_write()?;
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
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(EVENTS)?;
            for seq in seqs {
                table.remove(seq)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Commits jobs one transaction each, until the handle drops. While failing, it wakes on a
    /// timer to try the disk again.
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let job = match &self.health {
                Health::Failing { next_attempt, .. } => {
                    let wait = next_attempt.saturating_duration_since(Instant::now());
                    match jobs.recv_timeout(wait) {
                        Ok(job) => Some(job),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                Health::Writing | Health::Changed(_) => match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvError) => break,
                },
            };
            if let Health::Failing { next_attempt, .. } = &self.health
                && Instant::now() >= *next_attempt
            {
                self.try_reopen();
            }
            match job {
                Some(Job::Commit {
                    entries,
                    placed,
                    last_generated_id,
                    done,
                }) => {
                    let batch = Batch {
                        events: entries.iter().map(|e| e.event.clone()).collect(),
                        last_generated_id,
                    };
                    match self.handle(&batch) {
                        Ok(()) => {
                            if let Some(ids) = &self.ids {
                                lock(ids).committed(&entries);
                            }
                            self.tail.deliver(entries);
                            let _ = done.send(Ok(placed));
                        }
                        Err(err) => {
                            if let Some(ids) = &self.ids {
                                lock(ids).released(&entries);
                            }
                            let _ = done.send(Err(AppendError::NotStored(err.0)));
                        }
                    }
                }
                Some(Job::Tail(sink)) => self.tail.follow(sink),
                None => {}
            }
        }
        log::debug!("store writer stopped path={}", self.path.display());
    }

    /// Commits one batch, or says why it cannot.
    fn handle(&mut self, batch: &Batch) -> Result<(), CommitError> {
        let refused = || CommitError("the event could not be stored".to_owned());
        match &mut self.health {
            Health::Writing => {}
            Health::Failing { refused: count, .. } => {
                *count += 1;
                self.metrics.store_commit_failures.inc();
                self.log_still_failing();
                return Err(refused());
            }
            Health::Changed(what) => {
                self.metrics.store_commit_failures.inc();
                return Err(CommitError(format!("the store file was {what}")));
            }
        }
        if let Some(what) = self
            .identity
            .as_ref()
            .and_then(|identity| identity.changed(&self.path, true))
        {
            self.metrics.store_commit_failures.inc();
            self.changed(what);
            return Err(refused());
        }
        let started = Instant::now();
        match self.commit(batch) {
            Ok(()) => {
                self.metrics.store_commits.inc();
                self.metrics
                    .store_commit_duration
                    .observe(started.elapsed().as_secs_f64());
                self.remember_length();
                Ok(())
            }
            Err(err) => {
                self.metrics.store_commit_failures.inc();
                let error = io_reason(&err);
                log::error!(
                    "store commit failed path={} events={} error=\"{error}\": publishes are \
                     refused while the store reopens the file every {RETRY_INTERVAL:?}",
                    self.path.display(),
                    batch.events.len()
                );
                self.fail(error);
                Err(refused())
            }
        }
    }

    /// The file was changed under the hub: say so once, and write to it no more.
    fn changed(&mut self, what: String) {
        self.db = None;
        let path = self.path.display();
        log::error!(
            "store file changed under the running hub path={path} change=\"{what}\": \
             publishes are refused until the hub is restarted, which checks the file"
        );
        self.ready.set_unready(&format!(
            "the file store {path} was {what} under the running hub; restart the hub"
        ));
        self.health = Health::Changed(what);
    }

    /// Closes the database after a failed commit and refuses publishes until
    /// [`try_reopen`](Self::try_reopen) succeeds.
    fn fail(&mut self, error: String) {
        // Dropping it releases the file lock, so it can be opened again.
        self.db = None;
        self.ready.set_unready(&format!(
            "the file store cannot write {}: {error}",
            self.path.display()
        ));
        let now = Instant::now();
        self.health = Health::Failing {
            error,
            next_attempt: now + RETRY_INTERVAL,
            refused: 0,
            logged: now,
        };
    }

    /// Logs that the store still fails, at most once per [`LOG_INTERVAL`].
    fn log_still_failing(&mut self) {
        if let Health::Failing {
            error,
            refused,
            logged,
            ..
        } = &mut self.health
            && logged.elapsed() >= LOG_INTERVAL
        {
            log::error!(
                "store still cannot write path={} error=\"{error}\" refused={refused}",
                self.path.display()
            );
            *refused = 0;
            *logged = Instant::now();
        }
    }

    /// One attempt to write again: the disk takes a probe write, the path still names the file
    /// the store wrote, and redb reopens it (checking its integrity); then the file is brought
    /// in line with the retained mirror, in case the failed commit reached the disk after all.
    fn try_reopen(&mut self) {
        // Replaced or deleted while failing: not the file the history came from.
        if let Some(what) = self
            .identity
            .as_ref()
            .and_then(|identity| identity.changed(&self.path, false))
        {
            self.changed(what);
            return;
        }
        let attempt = (|| -> Result<(), String> {
            probe(&self.path).map_err(|err| format!("{err} (probe write)"))?;
            self.db = Some(open_database(&self.path).map_err(|err| err.to_string())?);
            self.reconcile().map_err(|err| err.to_string())?;
            Ok(())
        })();
        match attempt {
            Ok(()) => {
                let refused = match &self.health {
                    Health::Failing { refused, .. } => *refused,
                    _ => 0,
                };
                self.health = Health::Writing;
                self.remember_length();
                self.ready.set_ready();
                log::info!(
                    "store writes again path={} refused={refused}",
                    self.path.display()
                );
            }
            Err(reason) => {
                self.db = None;
                if let Health::Failing {
                    error,
                    next_attempt,
                    ..
                } = &mut self.health
                {
                    *error = reason;
                    *next_attempt = Instant::now() + RETRY_INTERVAL;
                    self.ready.set_unready(&format!(
                        "the file store cannot write {}: {error}",
                        self.path.display()
                    ));
                }
                self.log_still_failing();
            }
        }
    }

    /// Makes the reopened file hold exactly the retained mirror (what the history holds):
    /// removes what a failed commit wrote after all, restores what it evicted.
    fn reconcile(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let layout = self
            .read_layout()?
            .ok_or("the reopened file has no tables")?;
        let held: HashSet<u64> = layout.events.iter().map(|(seq, _)| *seq).collect();
        let ours: HashSet<u64> = self.retained.iter().map(|(seq, _)| *seq).collect();
        self.next_seq = self.next_seq.max(layout.next_seq);
        if held == ours {
            return Ok(());
        }
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(EVENTS)?;
            for seq in held.difference(&ours) {
                table.remove(seq)?;
            }
            for (seq, event) in self.retained.iter().filter(|(seq, _)| !held.contains(seq)) {
                table.insert(seq, Stored::encode(event).as_slice())?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert("next_seq", self.next_seq)?;
        }
        txn.commit()?;
        log::warn!(
            "store file brought back in line with the history path={} removed={} restored={}",
            self.path.display(),
            held.difference(&ours).count(),
            ours.difference(&held).count()
        );
        Ok(())
    }

    fn remember_length(&mut self) {
        let identity = self.identity.as_mut();
        if let Some(identity) = identity
            && let Ok(meta) = identity.file.metadata()
        {
            identity.len = meta.len();
        }
    }

    /// One durable transaction: the batch's events, what they push out of the window, and the
    /// counters. redb's default durability makes `commit` return after fsync. If it fails, the
    /// mirror is put back as it was: the batch was not published.
    fn commit(&mut self, batch: &Batch) -> Result<(), redb::Error> {
        let first_seq = self.next_seq;
        let mut evicted = Vec::new();
        let result = self.write(batch, &mut evicted);
        if result.is_err() {
            while self
                .retained
                .back()
                .is_some_and(|(seq, _)| *seq >= first_seq)
            {
                self.retained.pop_back();
            }
            for entry in evicted.into_iter().rev() {
                if entry.0 < first_seq {
                    self.retained.push_front(entry);
                }
            }
            self.next_seq = first_seq;
            self.window.clear();
            for (_, event) in &self.retained {
                self.window.push(event.size_bytes());
            }
        }
        result
    }

    fn write(
        &mut self,
        batch: &Batch,
        evicted: &mut Vec<(u64, Arc<Event>)>,
    ) -> Result<(), redb::Error> {
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(EVENTS)?;
            // Subscription events are not stored: their subscribers are gone after a restart,
            // and the file's window then stays the history's application lane.
            for event in batch.events.iter().filter(|e| e.kind == Kind::Application) {
                let seq = self.next_seq;
                self.next_seq += 1;
                let from = evicted.len();
                if self.admit(seq, event.clone(), evicted) {
                    table.insert(seq, Stored::encode(event).as_slice())?;
                }
                // An event evicted by a later one of the same batch was inserted above; one
                // not admitted was never inserted, and removing it is a no-op.
                for (old, _) in &evicted[from..] {
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
}

/// What a store file holds.
struct Layout {
    next_seq: u64,
    last_generated_id: u64,
    events: Vec<(u64, Arc<Event>)>,
}

fn open_database(path: &Path) -> Result<Database, DatabaseError> {
    Builder::new()
        .set_cache_size(CACHE_BYTES)
        // A file damaged outside redb is reported as corrupt instead of being trusted.
        .set_check_integrity_on_open(true)
        .create(path)
}

/// Writes and fsyncs [`PROBE_BYTES`] next to the store, then removes them.
fn probe(path: &Path) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".probe");
    let probe = path.with_file_name(name);
    let result = (|| {
        let mut file = File::create(&probe)?;
        file.write_all(&[0; PROBE_BYTES])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    match result {
        // A directory the hub may not create files in says nothing about the disk.
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

/// The I/O error under a redb error, as the operator knows it ("No space left on device").
fn io_reason(err: &redb::Error) -> String {
    match err {
        redb::Error::Io(io) => io.to_string(),
        other => other.to_string(),
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

    fn append(log: &mut Writer, events: &[Arc<Event>], last_generated_id: u64) {
        log.handle(&Batch {
            events: events.to_vec(),
            last_generated_id,
        })
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
            Writer::open(&path, Window::new(100, 1 << 20), Metrics::new()).expect("opens");
        assert!(recovered.events.is_empty());
        let written = [event("a", "one\ntwo"), event("bp", "three")];
        append(&mut log, &written[..1], 41);
        append(&mut log, &written[1..], 42);
        drop(log);

        let (_log, recovered) =
            Writer::open(&path, Window::new(100, 1 << 20), Metrics::new()).expect("reopens");
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
            Writer::open(&path, Window::new(10, size * 5), Metrics::new()).expect("opens");
        for n in 0..30 {
            append(&mut log, &[event(&format!("e{n:02}"), &"x".repeat(100))], n);
        }
        drop(log);
        let (log, recovered) =
            Writer::open(&path, Window::new(10, size * 5), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["e25", "e26", "e27", "e28", "e29"]);
        drop(log);
        let (log, recovered) =
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["e28", "e29"]);
        drop(log);
        let (_log, recovered) =
            Writer::open(&path, Window::new(10, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["e28", "e29"], "the trim was written");
    }

    /// An event too large for the byte budget empties the file, as it empties the history.
    #[test]
    fn an_oversized_event_empties_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut log, _) =
            Writer::open(&path, Window::new(10, 300), Metrics::new()).expect("opens");
        append(
            &mut log,
            &[event("a", "x"), event("b", &"y".repeat(500))],
            0,
        );
        append(&mut log, &[event("c", "z")], 0);
        drop(log);
        let (_log, recovered) =
            Writer::open(&path, Window::new(10, 300), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["c"]);
    }

    fn batch(events: &[Arc<Event>]) -> Batch {
        Batch {
            events: events.to_vec(),
            last_generated_id: 0,
        }
    }

    fn retained_ids(writer: &Writer) -> Vec<String> {
        writer
            .retained
            .iter()
            .map(|(_, e)| e.id.to_string())
            .collect()
    }

    /// A failed commit (redb refusing writes until reopened) leaves the mirror as it was, makes
    /// the store not ready, refuses the next batch at once, and a reopen brings it back.
    #[test]
    fn a_failed_commit_is_rolled_back_and_the_store_reopens() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut writer, _) =
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("opens");
        writer
            .handle(&batch(&[event("a", "x"), event("b", "x")]))
            .expect("committed");
        // As after an I/O error: every operation fails until the database is reopened.
        writer.db = None;

        let failed = writer.handle(&batch(&[event("c", "x")]));

        assert!(failed.is_err());
        assert_eq!(
            retained_ids(&writer),
            ["a", "b"],
            "the mirror is rolled back"
        );
        assert!(!writer.ready.is_ready());
        assert!(writer.ready.reason().contains(&*path.display().to_string()));
        assert!(
            writer.handle(&batch(&[event("d", "x")])).is_err(),
            "refused at once"
        );
        writer.try_reopen();
        assert!(writer.ready.is_ready(), "{}", writer.ready.reason());
        writer
            .handle(&batch(&[event("e", "x")]))
            .expect("committed again");
        assert_eq!(retained_ids(&writer), ["b", "e"]);
        assert_eq!(writer.metrics.store_commit_failures.get(), 2);
        drop(writer);
        let (_log, recovered) =
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["b", "e"]);
    }

    /// A commit that reached the disk although it reported failure is undone on reopen: the
    /// file holds what the history holds, the events that commit evicted included.
    #[test]
    fn a_reopen_brings_the_file_in_line_with_the_history() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut writer, _) =
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("opens");
        writer
            .handle(&batch(&[event("a", "x"), event("b", "x")]))
            .expect("committed");
        let before = (
            writer.retained.clone(),
            writer.next_seq,
            writer.window.clone(),
        );
        writer
            .handle(&batch(&[event("c", "x")]))
            .expect("committed");
        // As if that commit had been reported failed: the mirror went back, the file kept it.
        (writer.retained, writer.next_seq, writer.window) = before;
        writer.fail("simulated".to_owned());

        writer.try_reopen();

        assert!(writer.ready.is_ready(), "{}", writer.ready.reason());
        writer
            .handle(&batch(&[event("d", "x")]))
            .expect("committed");
        drop(writer);
        let (_log, recovered) =
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("reopens");
        assert_eq!(ids(&recovered), ["b", "d"]);
    }

    /// A store file deleted while the store was failing is not recreated by the reopen: the
    /// store stays refused, saying the file was deleted.
    #[test]
    fn a_file_deleted_while_failing_is_not_reopened() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut writer, _) =
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("opens");
        writer
            .handle(&batch(&[event("a", "x")]))
            .expect("committed");
        writer.db = None;
        assert!(writer.handle(&batch(&[event("b", "x")])).is_err());
        std::fs::remove_file(&path).expect("deleted");

        writer.try_reopen();

        assert!(
            matches!(writer.health, Health::Changed(_)),
            "{:?}",
            writer.health
        );
        assert!(
            writer.ready.reason().contains("deleted"),
            "{}",
            writer.ready.reason()
        );
        assert!(!path.exists(), "not recreated");
    }

    /// A store file truncated under the running store is refused at the next commit, for good,
    /// and readiness says what happened to which file.
    #[test]
    fn a_truncated_file_is_refused_at_the_next_commit() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut log, _) =
            Writer::open(&path, Window::new(10, 1 << 20), Metrics::new()).expect("opens");
        append(&mut log, &[event("a", "x")], 0);
        let len = std::fs::metadata(&path).expect("metadata").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("opens")
            .set_len(len / 2)
            .expect("truncated");

        assert!(log.handle(&batch(&[event("b", "x")])).is_err());
        let ready = log.ready.clone();
        assert!(!ready.is_ready());
        let reason = ready.reason();
        assert!(
            reason.contains(&format!("truncated from {len} to {} bytes", len / 2))
                && reason.contains(&*path.display().to_string()),
            "{reason}"
        );
        assert!(log.handle(&batch(&[event("c", "x")])).is_err(), "for good");
    }

    /// Subscription events are committed with their batch but not written: after a reopen
    /// only the application events come back, and they alone count against the window.
    #[test]
    fn subscription_events_are_not_stored() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.redb");
        let (mut log, _) =
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("opens");
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
            Writer::open(&path, Window::new(2, 1 << 20), Metrics::new()).expect("reopens");
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
        let Err(err) = Writer::open(&path, Window::new(10, 1000), Metrics::new()) else {
            panic!("a foreign file opened as a store");
        };
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    }
}
