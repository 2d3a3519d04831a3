//! The event log: where published events are committed, in order. On a local log (memory,
//! file) the broadcaster numbers the events and applies each committed batch; the backend owns
//! storage. On the shared Redis log, Redis orders and numbers them and every node applies what
//! it reads back.
//!
//! - `memory`: nothing to store; the broadcaster's history is the whole log.
//! - `file:PATH` ([`file`]): a redb file; a batch counts as published once it is fsync'd.
//! - `redis://…` ([`redis`]): a Redis stream shared by every node. Redis orders the events and
//!   gives them their ids; each node tails the stream and applies what it reads.

pub mod file;
pub mod redis;

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::oneshot;

use crate::{
    broadcaster::Window,
    config::Store,
    event::{Event, Limits},
    metrics::Metrics,
};

/// Events the broadcaster numbered and wants committed, in their log order.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Arc<Event>>,
    /// The highest id the broadcaster has generated so far, kept so that ids only grow across
    /// restarts, even when the clock steps back.
    pub last_generated_id: u64,
}

/// What a log held when it was opened: the retained events, oldest first, and the id state.
#[derive(Debug, Default)]
pub struct Recovered {
    pub events: Vec<Arc<Event>>,
    pub last_generated_id: u64,
}

/// Why a batch was not committed. The events in it were not published.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CommitError(pub String);

/// The answer to an append: when the batch is committed.
pub type Commit = oneshot::Receiver<Result<(), CommitError>>;

/// A backend of the event log. Called from inside the broadcaster, so it never waits: work
/// that does (disk, network) runs elsewhere and reports through the returned [`Commit`].
pub trait EventLog: Send + fmt::Debug {
    /// Whether appends must be committed before their events count as published. `false`
    /// (memory) lets the broadcaster skip batching altogether.
    fn is_durable(&self) -> bool;

    /// Commits `batch` after everything appended before it, trimming the log with the same
    /// [`Window`] rule the history applies.
    fn append(&mut self, batch: Batch) -> Commit;

    /// Whether appends can succeed now, and why not (`/readyz`). The memory log always can.
    fn readiness(&self) -> Readiness {
        Readiness::ready()
    }
}

/// The `memory` backend: the broadcaster's history is all there is.
#[derive(Debug, Default)]
pub struct MemoryLog;

impl EventLog for MemoryLog {
    fn is_durable(&self) -> bool {
        false
    }

    fn append(&mut self, _batch: Batch) -> Commit {
        let (done, commit) = oneshot::channel();
        let _ = done.send(Ok(()));
        commit
    }
}

/// Why a store cannot be opened. The hub refuses to start with this one line, rather than run
/// with a history that might be wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store `{path}`: not an sse-hub store ({detail})")]
    NotAStore { path: String, detail: String },
    #[error("store `{path}`: unknown store version {found} (this hub reads version {supported})")]
    UnknownVersion {
        path: String,
        found: u64,
        supported: u64,
    },
    #[error("store `{path}`: already opened by another running hub")]
    AlreadyOpen { path: String },
    #[error("store `{path}`: the file is corrupt ({detail})")]
    Corrupt { path: String, detail: String },
    #[error("store `{path}`: cannot be read or written ({detail})")]
    Unreadable { path: String, detail: String },
}

/// Whether the event log can take publishes: `/readyz`, and why not when it cannot. Set by
/// whoever finds out (a Redis tail that lost its connection, a store whose commits fail); read
/// on every `/readyz` and on the publish path.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Debug)]
struct ReadinessState {
    ready: AtomicBool,
    /// What `/readyz` says while not ready.
    reason: Mutex<Arc<str>>,
}

impl Readiness {
    /// Ready from the start.
    pub fn ready() -> Self {
        Self::with(true, "")
    }

    /// Not ready until [`set_ready`](Self::set_ready), for `reason`.
    pub fn unready(reason: &str) -> Self {
        Self::with(false, reason)
    }

    fn with(ready: bool, reason: &str) -> Self {
        Self(Arc::new(ReadinessState {
            ready: AtomicBool::new(ready),
            reason: Mutex::new(reason.into()),
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }

    /// Why publishes are refused now (meaningful while not ready).
    pub fn reason(&self) -> Arc<str> {
        self.lock().clone()
    }

    /// Ready again; whether that is a change.
    pub fn set_ready(&self) -> bool {
        !self.0.ready.swap(true, Ordering::Relaxed)
    }

    /// Not ready, for `reason`; whether that is a change (the reason is updated either way).
    pub fn set_unready(&self, reason: &str) -> bool {
        *self.lock() = reason.into();
        self.0.ready.swap(false, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<str>> {
        self.0
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An opened event log: one this process orders (with what it held), or one shared with other
/// nodes, which orders events itself.
#[derive(Debug)]
pub enum Opened {
    Local(Box<dyn EventLog>, Recovered),
    Shared(redis::RedisLog),
}

impl Opened {
    pub fn readiness(&self) -> Readiness {
        match self {
            Self::Local(log, _) => log.readiness(),
            Self::Shared(log) => log.readiness(),
        }
    }
}

/// Opens the backend `store` names, with the history's retention rule, and what it holds.
/// `redis_prefix` names the keys of a Redis store, whose stream carries the subscription
/// events too (other nodes' subscribers receive them): it keeps the history's events plus
/// `subscription_history`. `limits` are the publication rules entries read back from it are
/// held to.
pub fn open(
    store: &Store,
    window: Window,
    subscription_history: usize,
    redis_prefix: &str,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> Result<Opened, StoreError> {
    match store {
        Store::Memory => Ok(Opened::Local(Box::new(MemoryLog), Recovered::default())),
        Store::File(path) => {
            let (log, recovered) = file::FileLog::open(path, window, metrics)?;
            Ok(Opened::Local(Box::new(log), recovered))
        }
        Store::Redis(url) => Ok(Opened::Shared(redis::RedisLog::open(
            url,
            redis_prefix,
            window.max_events().saturating_add(subscription_history),
            limits,
            metrics,
        )?)),
    }
}
