//! The event log: where published events are committed, in order, behind one interface. The
//! broadcaster numbers the events and applies each committed batch; the backend owns storage.
//!
//! - `memory`: nothing to store; the broadcaster's history is the whole log.
//! - `file:PATH` ([`file`]): a redb file; a batch counts as published once it is fsync'd.

pub mod file;

use std::{fmt, sync::Arc};

use tokio::sync::oneshot;

use crate::{broadcaster::Window, config::Store, event::Event, metrics::Metrics};

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

/// Opens the backend `store` names, with the history's retention rule, and what it holds.
pub fn open(
    store: &Store,
    window: Window,
    metrics: Arc<Metrics>,
) -> Result<(Box<dyn EventLog>, Recovered), StoreError> {
    match store {
        Store::Memory => Ok((Box::new(MemoryLog), Recovered::default())),
        Store::File(path) => {
            let (log, recovered) = file::FileLog::open(path, window, metrics)?;
            Ok((Box::new(log), recovered))
        }
    }
}
