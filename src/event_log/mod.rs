//! The event log: one role, as Mercure's `Transport` or centrifuge's `Broker` are, that every
//! store plays. The broadcaster holds one [`EventLog`] and runs one pipeline on it, whatever
//! the backend: publications go in with [`append`](EventLog::append), and committed events come
//! back, in log order, through the [`tail`](EventLog::tail); only then does an event reach the
//! history and the subscribers, and only then is its publisher answered.
//!
//! What a backend promises:
//! - **Order.** Appends are committed in the order they were made, and the tail hands the
//!   broadcaster every committed event once, in that order, each with its [`Position`] (which
//!   only grows, until the tail says [`Tailed::Lost`]).
//! - **Ids.** The log gives each publication its id: the publisher's own if it is free (or may
//!   repeat), else a generated one that no client has seen; a taken id is answered `None` and
//!   nothing is appended for it.
//! - **Retention.** It retains at least what the broadcaster's history does ([`Retention`]),
//!   and says what it held when the tail starts ([`Tailed::Snapshot`]).
//! - **Never waiting.** Every call comes from inside the broadcaster: work that waits (disk,
//!   network) runs elsewhere and answers through the returned channel.
//! - **Honesty.** A failed append is an [`AppendError`]; a log that cannot take appends says
//!   why in its [`Readiness`]; a log that lost committed events says [`Tailed::Lost`].
//!
//! The backends, one file each; a new one is a new file plus one line in [`open`]:
//! - `memory` ([`memory`]): commits at once; the history is the whole log.
//! - `file:PATH` ([`file`]): a redb file; a batch counts as committed once it is fsync'd.
//! - `redis://…` ([`redis`]): a Redis stream shared by every node. Redis orders the events and
//!   gives them their ids; each node tails the stream and applies what it reads.

pub mod file;
mod history;
mod local;
pub mod memory;
pub mod redis;

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use actix::{Message, Recipient};
use tokio::sync::oneshot;

pub use self::history::{Admission, History, Reader, Replay, ReplayFrom, Window};
use crate::{
    config::Store,
    error::HubError,
    event::{Event, EventDraft, Limits},
    metrics::Metrics,
    subscriptions::ActiveSubscription,
};

/// Where an event is in the log; positions only grow (a Redis stream entry id, or a local
/// log's sequence number). Positions of a log that was replaced ([`Tailed::Lost`]) do not
/// compare with the new one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub major: u64,
    pub minor: u64,
}

impl Position {
    /// The position right after this one.
    pub fn next(self) -> Self {
        Self {
            major: self.major,
            minor: self.minor.saturating_add(1),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.major, self.minor)
    }
}

/// How many events the log and the history retain: application events within `events` and
/// `bytes`, and hub-made subscription events within `subscription_events` (and `bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub events: usize,
    pub bytes: usize,
    pub subscription_events: usize,
}

impl Retention {
    /// An empty history with these bounds.
    pub fn history(&self) -> History {
        History::new(self.events, self.bytes, self.subscription_events)
    }

    /// The rule application events are trimmed by.
    pub fn window(&self) -> Window {
        Window::new(self.events, self.bytes)
    }
}

/// A publication the log took: where it is, and the id it was given.
#[derive(Debug, Clone)]
pub struct Placed {
    pub position: Position,
    pub id: Arc<str>,
}

/// How an append went, per publication in order: where it was placed, or `None` if its
/// publisher's id was taken (nothing was appended for it).
pub type Appended = Result<Vec<Option<Placed>>, AppendError>;

/// The answer to an [`EventLog::append`].
pub type Appending = oneshot::Receiver<Appended>;

/// The answer to an [`EventLog::locate`].
pub type Locating = oneshot::Receiver<Option<Position>>;

/// Why an append has nothing to give; nothing in it was published.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The log could not be asked, or did not answer in time (Redis away or overloaded).
    #[error("{0}")]
    Unavailable(String),
    /// The log answered that it refuses writes; the message says why (for the publisher and
    /// `/readyz`).
    #[error("{0}")]
    Refusing(&'static str),
    /// The store could not commit the batch (a disk error): refused until it recovers.
    #[error("{0}")]
    NotStored(String),
    /// The log ran the append but its answer cannot be read: what was appended cannot be told.
    #[error("{0}")]
    Unreadable(String),
    /// Appended, but fewer replicas than asked for acknowledged it in time (Redis `WAIT`): the
    /// events may be lost in a failover, and may still be delivered.
    #[error("{acknowledged} of {wanted} replicas acknowledged the append within {timeout:?}")]
    NotReplicated {
        wanted: usize,
        acknowledged: usize,
        timeout: std::time::Duration,
    },
}

impl From<&AppendError> for HubError {
    fn from(err: &AppendError) -> Self {
        match err {
            AppendError::Unavailable(_) => Self::LogUnavailable,
            AppendError::Refusing(reason) => Self::LogRefusing((*reason).to_owned()),
            AppendError::NotStored(_) => Self::NotStored,
            // The log ran the append, so a retry could publish twice: not a 503 (which says
            // "try again"), but a 500; the log says what it answered.
            AppendError::Unreadable(_) => Self::Internal,
            AppendError::NotReplicated {
                wanted,
                acknowledged,
                timeout,
            } => Self::NotReplicated {
                wanted: *wanted,
                acknowledged: *acknowledged,
                timeout_ms: timeout.as_millis(),
            },
        }
    }
}

/// One committed event the tail hands over, ready to apply.
#[derive(Debug)]
pub struct TailEntry {
    pub position: Position,
    pub event: Arc<Event>,
}

/// What the tail hands the broadcaster, in log order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Tailed {
    /// The retained window as the log held it when the tail started: history, not news
    /// (nothing is fanned out), and where the tail goes on from.
    Snapshot(Vec<TailEntry>),
    /// Newly committed events, to apply in order. `caught_up`: the tail has read everything
    /// there was.
    Entries {
        entries: Vec<TailEntry>,
        caught_up: bool,
    },
    /// Committed events this node never applied are gone from the log; what follows is read
    /// from the log's oldest event.
    Lost { reason: String },
    /// The subscriptions of a node that died (presence across nodes): this node claimed them,
    /// once for all nodes, and announces their end.
    Abandoned(Vec<ActiveSubscription>),
}

/// A change to this node's active subscriptions, for the nodes that share its log.
#[derive(Debug, Clone, Copy)]
pub enum Presence<'a> {
    Joined(&'a [ActiveSubscription]),
    Left(&'a [ActiveSubscription]),
}

/// The subscriptions of the other nodes that share the log, or why they cannot be read.
pub type OthersPresent = oneshot::Receiver<Result<Vec<ActiveSubscription>, String>>;

/// A backend of the event log (see the module documentation for what it promises).
pub trait EventLog: Send + fmt::Debug {
    /// Appends `publications` after everything appended before, giving each its id; answers
    /// once they are committed (or refused). Their events come back through the tail.
    fn append(&mut self, publications: Vec<EventDraft>) -> Appending;

    /// Where the log holds an event with this id, if it does and can tell; `None` as well when
    /// the log cannot be asked.
    fn locate(&self, id: &str) -> Locating;

    /// Starts handing committed events to `sink`, a [`Tailed::Snapshot`] first, until `sink`
    /// is gone.
    fn tail(&mut self, sink: Recipient<Tailed>);

    /// Whether appends can succeed now, and why not (`/readyz`).
    fn readiness(&self) -> Readiness;

    /// Tells the nodes that share this log about this node's active subscriptions. A log of
    /// one node has no one to tell.
    fn share_presence(&mut self, _change: Presence<'_>) {}

    /// The node shuts down, having announced the end of the subscriptions it could (and told
    /// of each with [`Presence::Left`]): its presence is no longer kept alive, and removed if
    /// nothing is left in it; the other nodes announce the end of what is left once it expires.
    /// Answers once that is written (or could not be); `None` for a log of one node.
    fn withdraw_presence(&mut self) -> Option<oneshot::Receiver<()>> {
        None
    }

    /// The active subscriptions of the other nodes that share this log; `None` for a log of
    /// one node.
    fn others_present(&self) -> Option<OthersPresent> {
        None
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

/// Opens the backend `store` names, retaining what `retention` says. `redis` says how to reach
/// a Redis store and name its keys. `limits` are the publication rules events read back from a store are
/// held to.
pub fn open(
    store: &Store,
    retention: Retention,
    redis: &redis::RedisOptions,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> Result<Box<dyn EventLog>, StoreError> {
    Ok(match store {
        Store::Memory => Box::new(memory::MemoryLog::new(retention)),
        Store::File(path) => Box::new(file::FileLog::open(path, retention, metrics)?),
        Store::Redis(url) => Box::new(redis::RedisLog::open(
            url, redis, retention, limits, metrics,
        )?),
    })
}
