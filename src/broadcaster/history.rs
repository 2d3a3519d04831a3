//! History: the broadcaster's cache of the retained events, which subscribers replay from after
//! a reconnect, and the retention rule ([`Window`]) that the durable event log applies too.

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

/// The retention rule: at most `max_events` events and `max_bytes` bytes, oldest out first.
/// The history and the file store each run one over the same sequence of events, so they trim
/// the same events, deterministically, without telling each other.
#[derive(Debug, Clone)]
pub struct Window {
    sizes: VecDeque<usize>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

/// What [`Window::push`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// How many of the oldest events leave the window.
    pub evicted: usize,
    /// Whether the new event is retained. An event that cannot be (larger than the whole byte
    /// budget, or `max_events` is 0) evicts everything before it too: a replay from an older id
    /// would otherwise skip it silently.
    pub kept: bool,
}

impl Window {
    /// The most events it retains.
    pub fn max_events(&self) -> usize {
        self.max_events
    }

    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            sizes: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    /// Admits an event of `size` bytes.
    pub fn push(&mut self, size: usize) -> Admission {
        let mut evicted = 0;
        if self.max_events == 0 || size > self.max_bytes {
            evicted = self.sizes.len();
            self.sizes.clear();
            self.bytes = 0;
            return Admission {
                evicted,
                kept: false,
            };
        }
        while self.sizes.len() >= self.max_events || self.bytes + size > self.max_bytes {
            if let Some(old) = self.sizes.pop_front() {
                self.bytes -= old;
                evicted += 1;
            }
        }
        self.sizes.push_back(size);
        self.bytes += size;
        Admission {
            evicted,
            kept: true,
        }
    }

    /// Forgets every event, keeping the bounds.
    pub fn clear(&mut self) {
        self.sizes.clear();
        self.bytes = 0;
    }

    /// Bytes held by the retained events.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

/// The retained events, bounded by a [`Window`], with an id index for O(1) lookup. Calls
/// happen inside the actor and never wait.
#[derive(Debug)]
pub struct History {
    events: VecDeque<Arc<Event>>,
    /// id → where it first occurs among the retained events; the front event has sequence
    /// `front_seq`.
    index: HashMap<Arc<str>, Occurrences>,
    front_seq: u64,
    window: Window,
}

/// The retained events with one id: a Mercure publisher may reuse an id, and a resume from it
/// starts after its earliest occurrence.
#[derive(Debug, Clone, Copy)]
struct Occurrences {
    /// Sequence number of the earliest.
    first: u64,
    count: u32,
}

impl History {
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            index: HashMap::new(),
            front_seq: 0,
            window: Window::new(max_events, max_bytes),
        }
    }

    fn pop_front(&mut self) {
        let Some(old) = self.events.pop_front() else {
            return;
        };
        if let Some(occurrences) = self.index.get_mut(&old.id) {
            occurrences.count -= 1;
            if occurrences.count == 0 {
                self.index.remove(&old.id);
            } else if let Some(at) = self.events.iter().position(|e| e.id == old.id) {
                // A repeated id (rare): its index moves to the next occurrence.
                occurrences.first = self.front_seq + 1 + at as u64;
            }
        }
        self.front_seq += 1;
    }

    /// Appends an event, trimming the oldest ones to stay within the bounds.
    pub fn append(&mut self, event: Arc<Event>) {
        let admission = self.window.push(event.size_bytes());
        for _ in 0..admission.evicted {
            self.pop_front();
        }
        if !admission.kept {
            // The gap it leaves moves the sequence on, as a retained event would.
            self.front_seq += 1;
            return;
        }
        let seq = self.front_seq + self.events.len() as u64;
        self.index
            .entry(event.id.clone())
            .and_modify(|occurrences| occurrences.count += 1)
            .or_insert(Occurrences {
                first: seq,
                count: 1,
            });
        self.events.push_back(event);
    }

    /// Whether an event with this id is retained.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The retained events after `from`, in publish order.
    pub fn replay(&self, from: ReplayFrom<'_>) -> Replay {
        let (skip, found) = match from {
            ReplayFrom::Earliest => (0, true),
            ReplayFrom::After(id) => match self.index.get(id) {
                Some(occurrences) => ((occurrences.first - self.front_seq + 1) as usize, true),
                None => (0, false),
            },
        };
        Replay {
            events: self.events.iter().skip(skip).cloned().collect(),
            found,
        }
    }

    pub fn oldest_id(&self) -> Option<Arc<str>> {
        self.events.front().map(|e| e.id.clone())
    }

    pub fn newest_id(&self) -> Option<Arc<str>> {
        self.events.back().map(|e| e.id.clone())
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes held by the retained events.
    pub fn size_bytes(&self) -> usize {
        self.window.size_bytes()
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
        let mut history = History::new(10, 1 << 20);
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
        let mut history = History::new(3, 1 << 20);
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
        let mut history = History::new(1000, one * 5);
        for n in 0..50 {
            history.append(event(&format!("x{}", n % 10), &"y".repeat(100)));
            assert!(history.size_bytes() <= one * 5);
        }
        assert_eq!(history.len(), 5);
    }

    /// An id published twice resumes after its earliest occurrence, later same-id events
    /// included, and still does once that occurrence is trimmed.
    #[test]
    fn a_repeated_id_resumes_after_its_earliest_occurrence() {
        let mut history = History::new(4, 1 << 20);
        for id in ["a", "dup", "b", "dup"] {
            history.append(event(id, "x"));
        }
        let replay = history.replay(ReplayFrom::After("dup"));
        assert!(replay.found);
        assert_eq!(ids(&replay), ["b", "dup"]);
        history.append(event("c", "x"));
        history.append(event("d", "x"));
        assert_eq!(
            ids(&history.replay(ReplayFrom::Earliest)),
            ["b", "dup", "c", "d"]
        );
        assert_eq!(ids(&history.replay(ReplayFrom::After("dup"))), ["c", "d"]);
        history.append(event("e", "x"));
        history.append(event("f", "x"));
        assert!(!history.contains("dup"));
        // Three occurrences: trimming the first two leaves the third as the resume point.
        for id in ["dup", "g", "dup", "h", "dup", "i"] {
            history.append(event(id, "x"));
        }
        assert_eq!(
            ids(&history.replay(ReplayFrom::After("dup"))),
            ["h", "dup", "i"]
        );
        history.append(event("j", "x"));
        assert_eq!(ids(&history.replay(ReplayFrom::After("dup"))), ["i", "j"]);
    }

    /// An event larger than the whole byte budget empties the history, so nobody replays
    /// across the gap it leaves.
    #[test]
    fn oversized_event_clears_history() {
        let mut history = History::new(10, 200);
        history.append(event("a", "x"));
        history.append(event("b", &"y".repeat(500)));
        assert!(history.is_empty());
        assert!(!history.replay(ReplayFrom::After("a")).found);
    }
}
