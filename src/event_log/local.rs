//! What the local logs (memory, file) share: the ids they give out and retain, and the tail
//! that hands their committed events to the broadcaster.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use actix::Recipient;

use super::{History, Placed, Position, Retention, TailEntry, Tailed};
use crate::event::{Event, EventDraft};

/// Event ids: decimal numbers that only grow, seeded from the wall clock in microseconds and
/// from the highest id a durable log recorded, so a restarted hub never hands out an id a client
/// saw before the restart. (On the memory log only the clock can tell: a clock that went back,
/// or a previous run faster than one event per microsecond on average, could repeat one.)
#[derive(Debug)]
pub(super) struct IdGenerator {
    last: u64,
}

impl IdGenerator {
    /// Starts above `last`, the highest id a previous run generated.
    pub(super) fn new(last: u64) -> Self {
        Self { last }
    }

    pub(super) fn next(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last = now.max(self.last + 1);
        self.last
    }

    /// The highest id generated so far.
    pub(super) fn last(&self) -> u64 {
        self.last
    }
}

/// The ids a local log has given out: those of the events it retains (trimmed by the rule the
/// broadcaster's history follows, so an id is free again exactly when the history lets it go)
/// and those of a batch being committed.
#[derive(Debug)]
pub(super) struct Ids {
    generator: IdGenerator,
    retained: History,
    in_flight: HashSet<Arc<str>>,
    next_position: u64,
    /// The position of the newest committed event.
    newest: Option<Position>,
}

impl Ids {
    /// The ids of `recovered` (oldest first), generating above `last_generated_id`.
    pub(super) fn new(
        retention: Retention,
        recovered: &[TailEntry],
        last_generated_id: u64,
    ) -> Self {
        let mut retained = retention.history();
        for entry in recovered {
            retained.append(entry.event.clone());
        }
        let newest = recovered.last().map(|entry| entry.position);
        Self {
            generator: IdGenerator::new(last_generated_id),
            retained,
            in_flight: HashSet::new(),
            next_position: newest.map_or(0, |p| p.minor + 1),
            newest,
        }
    }

    fn is_taken(&self, id: &str) -> bool {
        self.retained.contains(id) || self.in_flight.contains(id)
    }

    fn generate(&mut self) -> Arc<str> {
        loop {
            let id: Arc<str> = self.generator.next().to_string().into();
            // A publisher may have chosen this very number as its own id.
            if !self.is_taken(&id) {
                return id;
            }
        }
    }

    /// Gives each publication its id and position, in order (`None`: its id is taken), and
    /// makes its event; the ids stay taken until [`committed`](Self::committed) or
    /// [`released`](Self::released).
    pub(super) fn place(
        &mut self,
        drafts: Vec<EventDraft>,
    ) -> (Vec<Option<Placed>>, Vec<TailEntry>) {
        let mut placed = Vec::with_capacity(drafts.len());
        let mut entries = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let id: Arc<str> = match &draft.id {
                Some(id) if !draft.repeatable_id && self.is_taken(id) => {
                    placed.push(None);
                    continue;
                }
                Some(id) => id.as_str().into(),
                None => self.generate(),
            };
            let position = Position {
                major: 0,
                minor: self.next_position,
            };
            self.next_position += 1;
            self.in_flight.insert(id.clone());
            placed.push(Some(Placed {
                position,
                id: id.clone(),
            }));
            entries.push(TailEntry {
                position,
                event: Arc::new(Event::new(id, draft)),
            });
        }
        (placed, entries)
    }

    /// `entries` are committed: their ids are retained, as the history will retain them.
    pub(super) fn committed(&mut self, entries: &[TailEntry]) {
        for entry in entries {
            self.in_flight.remove(&entry.event.id);
            self.retained.append(entry.event.clone());
            self.newest = Some(entry.position);
        }
    }

    /// `entries` were not committed: their ids are free again.
    pub(super) fn released(&mut self, entries: &[TailEntry]) {
        for entry in entries {
            self.in_flight.remove(&entry.event.id);
        }
    }

    /// Where an event with `id` is: a local log does not keep each event's position, so it
    /// answers with the newest committed one, which the broadcaster has applied once it has
    /// applied that event.
    pub(super) fn locate(&self, id: &str) -> Option<Position> {
        self.retained.contains(id).then_some(self.newest).flatten()
    }

    /// The highest id generated so far (a durable log stores it with each batch).
    pub(super) fn last_generated(&self) -> u64 {
        self.generator.last()
    }
}

/// The tail of a local log: committed events go to the broadcaster as they are committed.
#[derive(Debug, Default)]
pub(super) struct LocalTail {
    sink: Option<Recipient<Tailed>>,
}

impl LocalTail {
    /// Starts the tail with `recovered`, what the log held when opened, as its snapshot. Called
    /// by the broadcaster as it starts, so the snapshot is the first message it handles.
    pub(super) fn start(&mut self, sink: Recipient<Tailed>, recovered: Vec<TailEntry>) {
        sink.do_send(Tailed::Snapshot(recovered));
        self.follow(sink);
    }

    /// Hands committed events to `sink` from now on (its snapshot was sent).
    pub(super) fn follow(&mut self, sink: Recipient<Tailed>) {
        self.sink = Some(sink);
    }

    /// Hands over newly committed events. Before the tail starts there is nobody to hand them
    /// to: the broadcaster starts it before it appends anything.
    pub(super) fn deliver(&self, entries: Vec<TailEntry>) {
        match &self.sink {
            Some(sink) => sink.do_send(Tailed::Entries {
                entries,
                caught_up: true,
            }),
            None => log::error!(
                "committed events dropped: the log's tail was not started events={}",
                entries.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(id: Option<&str>, repeatable: bool) -> EventDraft {
        EventDraft {
            topics: vec!["t".to_owned()],
            id: id.map(str::to_owned),
            repeatable_id: repeatable,
            data: "x".to_owned(),
            ..EventDraft::default()
        }
    }

    fn retention(events: usize) -> Retention {
        Retention {
            events,
            bytes: 1 << 20,
            subscription_events: 4,
        }
    }

    /// A taken id is refused while in flight and while retained, unless it may repeat; once
    /// the window lets it go, or its batch failed, it is free again.
    #[test]
    fn ids_are_taken_while_in_flight_or_retained() {
        let mut ids = Ids::new(retention(2), &[], 0);
        let (placed, entries) = ids.place(vec![draft(Some("a"), false), draft(Some("a"), false)]);
        assert!(placed[0].is_some() && placed[1].is_none(), "{placed:?}");
        let (again, _) = ids.place(vec![draft(Some("a"), false), draft(Some("a"), true)]);
        assert!(again[0].is_none() && again[1].is_some(), "{again:?}");
        ids.committed(&entries);
        assert_eq!(ids.locate("a"), Some(entries[0].position));

        let (failed_placed, failed) = ids.place(vec![draft(Some("b"), false)]);
        assert!(failed_placed[0].is_some());
        ids.released(&failed);
        let (b, b_entries) = ids.place(vec![draft(Some("b"), false)]);
        assert!(b[0].is_some(), "a failed batch's id is free again");
        ids.committed(&b_entries);
        let (_, c) = ids.place(vec![draft(Some("c"), false)]);
        ids.committed(&c);
        assert!(ids.locate("a").is_none(), "trimmed out of a window of 2");
        let (a, _) = ids.place(vec![draft(Some("a"), false)]);
        assert!(a[0].is_some(), "a trimmed id is free again");
    }

    /// Generated ids grow past what a previous run generated, positions grow, and a publisher
    /// id equal to a generated one is refused.
    #[test]
    fn generated_ids_and_positions_grow() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after epoch")
            .as_micros() as u64;
        let stored = now + 3_600_000_000; // an hour ahead of the clock
        let mut ids = Ids::new(retention(10), &[], stored);
        let (placed, entries) = ids.place(vec![draft(None, false), draft(None, false)]);
        let placed: Vec<Placed> = placed.into_iter().flatten().collect();
        assert_eq!(&*placed[0].id, (stored + 1).to_string());
        assert_eq!(&*placed[1].id, (stored + 2).to_string());
        assert!(placed[0].position < placed[1].position);
        assert_eq!(ids.last_generated(), stored + 2);
        ids.committed(&entries);
        let (taken, _) = ids.place(vec![draft(Some(&(stored + 1).to_string()), false)]);
        assert!(taken[0].is_none());
    }

    /// Generated ids only grow, and start at least at the current time in microseconds.
    #[test]
    fn ids_grow_and_follow_the_clock() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after epoch")
            .as_micros() as u64;
        let mut ids = IdGenerator::new(0);
        let first = ids.next();
        assert!(first >= before);
        let mut last = first;
        for _ in 0..10_000 {
            let next = ids.next();
            assert!(next > last);
            last = next;
        }
    }
}
