//! History: the bounded, ordered log of recent events that subscribers replay from after a
//! reconnect, behind a small interface so a shared backend (Redis Streams) can replace it.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::event::Event;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom<'a> {
    /// Every retained event (`Last-Event-ID: earliest`).
    Earliest,
    /// The events after this id.
    After(&'a str),
}

/// The events a replay yields, oldest first.
#[derive(Debug)]
pub struct Replay {
    pub events: Vec<Arc<Event>>,
    /// False when the requested id is not (or no longer) held: `events` is then the whole
    /// history, and the subscriber must be told it may have missed some.
    pub found: bool,
}

/// The interface the broadcaster needs from a history store. Calls happen inside the actor,
/// so implementations must answer without waiting.
pub trait History: Send + std::fmt::Debug {
    /// Appends an event, trimming the oldest ones to stay within the bounds.
    fn append(&mut self, event: Arc<Event>);
    /// Whether an event with this id is retained.
    fn contains(&self, id: &str) -> bool;
    /// The retained events after `from`, in publish order.
    fn replay(&self, from: ReplayFrom<'_>) -> Replay;
    fn oldest_id(&self) -> Option<Arc<str>>;
    fn newest_id(&self) -> Option<Arc<str>>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held by the retained events.
    fn size_bytes(&self) -> usize;
}

/// An in-memory ring bounded by event count and by bytes, with an id index for O(1) lookup.
#[derive(Debug)]
pub struct MemoryHistory {
    events: VecDeque<Arc<Event>>,
    /// id → sequence number; the front event has sequence `front_seq`.
    index: HashMap<Arc<str>, u64>,
    front_seq: u64,
    size_bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl MemoryHistory {
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            index: HashMap::new(),
            front_seq: 0,
            size_bytes: 0,
            max_events,
            max_bytes,
        }
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.index.remove(&old.id);
            self.size_bytes -= old.size_bytes();
            self.front_seq += 1;
        }
    }
}

impl History for MemoryHistory {
    fn append(&mut self, event: Arc<Event>) {
        let size = event.size_bytes();
        if self.max_events == 0 || size > self.max_bytes {
            // Cannot be retained at all: the whole history before it is now stale too, since
            // a replay from an older id would skip this event.
            while !self.events.is_empty() {
                self.pop_front();
            }
            self.front_seq += 1;
            return;
        }
        while self.events.len() >= self.max_events || self.size_bytes + size > self.max_bytes {
            self.pop_front();
        }
        let seq = self.front_seq + self.events.len() as u64;
        self.index.insert(event.id.clone(), seq);
        self.size_bytes += size;
        self.events.push_back(event);
    }

    fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    fn replay(&self, from: ReplayFrom<'_>) -> Replay {
        let (skip, found) = match from {
            ReplayFrom::Earliest => (0, true),
            ReplayFrom::After(id) => match self.index.get(id) {
                Some(seq) => ((seq - self.front_seq + 1) as usize, true),
                None => (0, false),
            },
        };
        Replay {
            events: self.events.iter().skip(skip).cloned().collect(),
            found,
        }
    }

    fn oldest_id(&self) -> Option<Arc<str>> {
        self.events.front().map(|e| e.id.clone())
    }

    fn newest_id(&self) -> Option<Arc<str>> {
        self.events.back().map(|e| e.id.clone())
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn size_bytes(&self) -> usize {
        self.size_bytes
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
                topics: vec!["t".into()],
                data: data.into(),
                ..EventDraft::default()
            },
        ))
    }

    fn ids(replay: &Replay) -> Vec<&str> {
        replay.events.iter().map(|e| &*e.id).collect()
    }

    /// Replay after an id yields exactly the later events, in order.
    #[test]
    fn replay_after_id_yields_later_events() {
        let mut history = MemoryHistory::new(10, 1 << 20);
        for id in ["a", "b", "c", "d"] {
            history.append(event(id, "x"));
        }
        let replay = history.replay(ReplayFrom::After("b"));
        assert!(replay.found);
        assert_eq!(ids(&replay), ["c", "d"]);
        assert_eq!(
            ids(&history.replay(ReplayFrom::Earliest)),
            ["a", "b", "c", "d"]
        );
        assert!(history.replay(ReplayFrom::After("d")).events.is_empty());
    }

    /// The count bound trims the oldest events; a trimmed id is reported as not found.
    #[test]
    fn count_bound_trims_oldest() {
        let mut history = MemoryHistory::new(3, 1 << 20);
        for id in ["a", "b", "c", "d", "e"] {
            history.append(event(id, "x"));
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.oldest_id().as_deref(), Some("c"));
        assert_eq!(history.newest_id().as_deref(), Some("e"));
        let replay = history.replay(ReplayFrom::After("a"));
        assert!(!replay.found);
        assert_eq!(ids(&replay), ["c", "d", "e"]);
        assert!(!history.contains("b"));
        assert_eq!(ids(&history.replay(ReplayFrom::After("c"))), ["d", "e"]);
    }

    /// The byte bound holds after every append.
    #[test]
    fn byte_bound_holds() {
        let one = event("x0", &"y".repeat(100)).size_bytes();
        let mut history = MemoryHistory::new(1000, one * 5);
        for n in 0..50 {
            history.append(event(&format!("x{}", n % 10), &"y".repeat(100)));
            assert!(history.size_bytes() <= one * 5);
        }
        assert_eq!(history.len(), 5);
    }

    /// An event larger than the whole byte budget empties the history, so nobody replays
    /// across the gap it leaves.
    #[test]
    fn oversized_event_clears_history() {
        let mut history = MemoryHistory::new(10, 200);
        history.append(event("a", "x"));
        history.append(event("b", &"y".repeat(500)));
        assert!(history.is_empty());
        assert!(!history.replay(ReplayFrom::After("a")).found);
    }
}
