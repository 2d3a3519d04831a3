//! The `memory` backend: commits at once and keeps nothing but the ids it retains; the
//! broadcaster's history is the whole log, and it is gone with the process.

use actix::Recipient;
use tokio::sync::oneshot;

use super::{
    Appending, EventLog, Locating, Readiness, Retention, Tailed,
    local::{Ids, LocalTail},
};
use crate::event::EventDraft;

#[derive(Debug)]
pub struct MemoryLog {
    ids: Ids,
    tail: LocalTail,
    ready: Readiness,
}

impl MemoryLog {
    pub fn new(retention: Retention) -> Self {
        Self {
            ids: Ids::new(retention, &[], 0),
            tail: LocalTail::default(),
            ready: Readiness::ready(),
        }
    }
}

impl EventLog for MemoryLog {
    fn append(&mut self, publications: Vec<EventDraft>) -> Appending {
        let (placed, entries) = self.ids.place(publications);
        self.ids.committed(&entries);
        self.tail.deliver(entries);
        let (done, appending) = oneshot::channel();
        let _ = done.send(Ok(placed));
        appending
    }

    fn locate(&self, id: &str) -> Locating {
        let (done, located) = oneshot::channel();
        let _ = done.send(self.ids.locate(id));
        located
    }

    fn tail(&mut self, sink: Recipient<Tailed>) {
        self.tail.start(sink, Vec::new());
    }

    fn readiness(&self) -> Readiness {
        self.ready.clone()
    }
}
