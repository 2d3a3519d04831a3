//! The retained window of the log: the events a subscriber replays from after a reconnect,
//! kept by the broadcaster (its cache of the log) and by the local logs (for their ids), and
//! the retention rule ([`Window`]) the file store trims with too.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::event::{Event, Kind};

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

/// The retained events: two lanes, each bounded by its own [`Window`] and evicting only its own
/// kind, so a storm of subscription events (hub-made, one per subscriber joining or leaving)
/// cannot push application events out. Each retained event carries its stamp (the order it
/// was applied in), and a replay merges the lanes by stamp: replay equals live delivery. Calls
/// happen inside the actor and never wait.
#[derive(Debug)]
pub struct History {
    application: Lane,
    subscription: Lane,
    /// The stamp the next appended event gets; stamps start at 1.
    next_stamp: u64,
}

/// Who a replay is for. Subscription events are always private, so only a subscriber
/// authorised for private events can miss one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Receives public events only: lost subscription events do not concern it.
    Public,
    /// May receive private events, subscription events among them.
    Private,
}

/// One kind of event, bounded by its window, with an id index for O(1) lookup.
#[derive(Debug)]
struct Lane {
    events: VecDeque<Retained>,
    /// id → where it first occurs among the retained events; the front event has sequence
    /// `front_seq`.
    index: HashMap<Arc<str>, Occurrences>,
    front_seq: u64,
    window: Window,
    /// The stamp of the newest event this lane let go (evicted, or too large to keep); 0 while
    /// none was. A replay after an older stamp would miss it.
    dropped_through: u64,
}

#[derive(Debug)]
struct Retained {
    stamp: u64,
    event: Arc<Event>,
}

/// The retained events with one id: a Mercure publisher may reuse an id, and a resume from it
/// starts after its earliest occurrence.
#[derive(Debug, Clone, Copy)]
struct Occurrences {
    /// Sequence number of the earliest.
    first: u64,
    count: u32,
}

impl Lane {
    fn new(window: Window) -> Self {
        Self {
            events: VecDeque::new(),
            index: HashMap::new(),
            front_seq: 0,
            window,
            dropped_through: 0,
        }
    }

    fn pop_front(&mut self) {
        let Some(old) = self.events.pop_front() else {
            return;
        };
        self.dropped_through = old.stamp;
        let id = &old.event.id;
        if let Some(occurrences) = self.index.get_mut(id) {
            occurrences.count -= 1;
            if occurrences.count == 0 {
                self.index.remove(id);
            } else if let Some(at) = self.events.iter().position(|r| r.event.id == *id) {
                // A repeated id (rare): its index moves to the next occurrence.
                occurrences.first = self.front_seq + 1 + at as u64;
            }
        }
        self.front_seq += 1;
    }

    fn append(&mut self, stamp: u64, event: Arc<Event>) {
        let admission = self.window.push(event.size_bytes());
        for _ in 0..admission.evicted {
            self.pop_front();
        }
        if !admission.kept {
            // The gap it leaves moves the sequence on, as a retained event would.
            self.front_seq += 1;
            self.dropped_through = stamp;
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
        self.events.push_back(Retained { stamp, event });
    }

    /// The stamp of the earliest retained event with this id.
    fn first_stamp(&self, id: &str) -> Option<u64> {
        let occurrences = self.index.get(id)?;
        let at = (occurrences.first - self.front_seq) as usize;
        self.events.get(at).map(|r| r.stamp)
    }

    /// The retained events applied after `stamp`, oldest first.
    fn after(&self, stamp: u64) -> std::collections::vec_deque::Iter<'_, Retained> {
        let at = self.events.partition_point(|r| r.stamp <= stamp);
        self.events.range(at..)
    }
}

impl History {
    /// A history of at most `max_events` application events and `subscription_events`
    /// subscription events (`--subscription-history`), each kind within `max_bytes`.
    pub fn new(max_events: usize, max_bytes: usize, subscription_events: usize) -> Self {
        Self {
            application: Lane::new(Window::new(max_events, max_bytes)),
            subscription: Lane::new(Window::new(subscription_events, max_bytes)),
            next_stamp: 1,
        }
    }

    /// Appends an event to its lane, trimming that lane's oldest events to stay within its
    /// bounds.
    pub fn append(&mut self, event: Arc<Event>) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        match event.kind {
            Kind::Application => self.application.append(stamp, event),
            Kind::Subscription => self.subscription.append(stamp, event),
        }
    }

    /// Whether an event with this id is retained.
    pub fn contains(&self, id: &str) -> bool {
        self.application.index.contains_key(id) || self.subscription.index.contains_key(id)
    }

    /// The retained events after `from`, in the order they were applied. A resume is complete
    /// (`found`) when the id is held and neither lane has let go of an event after it that
    /// `reader` could receive; otherwise `events` is the whole history.
    pub fn replay(&self, from: ReplayFrom<'_>, reader: Reader) -> Replay {
        let after = match from {
            ReplayFrom::Earliest => Some(0),
            ReplayFrom::After(id) => {
                let held = match (
                    self.application.first_stamp(id),
                    self.subscription.first_stamp(id),
                ) {
                    (Some(a), Some(s)) => Some(a.min(s)),
                    (a, s) => a.or(s),
                };
                held.filter(|&stamp| self.is_complete_after(stamp, reader))
            }
        };
        Replay {
            events: self.merged_after(after.unwrap_or(0)),
            found: after.is_some(),
        }
    }

    /// Whether every event after `stamp` that `reader` could receive is still retained.
    fn is_complete_after(&self, stamp: u64, reader: Reader) -> bool {
        self.application.dropped_through < stamp
            && (reader == Reader::Public || self.subscription.dropped_through < stamp)
    }

    /// Both lanes' events after `stamp`, merged in stamp order.
    fn merged_after(&self, stamp: u64) -> Vec<Arc<Event>> {
        let mut application = self.application.after(stamp).peekable();
        let mut subscription = self.subscription.after(stamp).peekable();
        let mut events = Vec::with_capacity(application.len() + subscription.len());
        loop {
            let application_first = match (application.peek(), subscription.peek()) {
                (Some(a), Some(s)) => a.stamp < s.stamp,
                (a, s) => a.is_some() || s.is_none(),
            };
            let next = if application_first {
                application.next()
            } else {
                subscription.next()
            };
            let Some(next) = next else { break };
            events.push(next.event.clone());
        }
        events
    }

    /// The oldest id a resume is complete from, for every reader: the oldest application
    /// event, or an older subscription event when no application event after it was let go.
    pub fn oldest_id(&self) -> Option<Arc<str>> {
        let application = self.application.events.front();
        let subscription = self
            .subscription
            .events
            .front()
            .filter(|r| self.application.dropped_through < r.stamp);
        match (application, subscription) {
            (Some(a), Some(s)) if s.stamp < a.stamp => Some(s),
            (Some(a), _) => Some(a),
            (None, s) => s,
        }
        .map(|r| r.event.id.clone())
    }

    /// The id of the event applied last.
    pub fn newest_id(&self) -> Option<Arc<str>> {
        match (
            self.application.events.back(),
            self.subscription.events.back(),
        ) {
            (Some(a), Some(s)) if s.stamp > a.stamp => Some(s),
            (Some(a), _) => Some(a),
            (None, s) => s,
        }
        .map(|r| r.event.id.clone())
    }

    pub fn len(&self) -> usize {
        self.application.events.len() + self.subscription.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the retained events.
    pub fn size_bytes(&self) -> usize {
        self.application.window.size_bytes() + self.subscription.window.size_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscription events the tests' histories retain.
    const DEFAULT_SUBSCRIPTION_HISTORY: usize = 1_000;
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

    /// A subscription event, as the hub makes them (type `mercure`, private).
    fn announcement(id: &str) -> Arc<Event> {
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
    }

    fn ids(replay: &Replay) -> Vec<&str> {
        replay.events.iter().map(|e| &*e.id).collect()
    }

    /// Replay after an id yields exactly the later events, in order.
    #[test]
    fn replay_after_id_yields_later_events() {
        let mut history = History::new(10, 1 << 20, DEFAULT_SUBSCRIPTION_HISTORY);
        for id in ["a", "b", "c", "d"] {
            history.append(event(id, "x"));
        }
        let replay = history.replay(ReplayFrom::After("b"), Reader::Private);
        assert!(replay.found);
        assert_eq!(ids(&replay), ["c", "d"]);
        assert_eq!(
            ids(&history.replay(ReplayFrom::Earliest, Reader::Private)),
            ["a", "b", "c", "d"]
        );
        assert!(
            history
                .replay(ReplayFrom::After("d"), Reader::Private)
                .events
                .is_empty()
        );
    }

    /// The count bound trims the oldest events; a trimmed id is reported as not found.
    #[test]
    fn count_bound_trims_oldest() {
        let mut history = History::new(3, 1 << 20, DEFAULT_SUBSCRIPTION_HISTORY);
        for id in ["a", "b", "c", "d", "e"] {
            history.append(event(id, "x"));
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.oldest_id().as_deref(), Some("c"));
        assert_eq!(history.newest_id().as_deref(), Some("e"));
        let replay = history.replay(ReplayFrom::After("a"), Reader::Private);
        assert!(!replay.found);
        assert_eq!(ids(&replay), ["c", "d", "e"]);
        assert!(!history.contains("b"));
        assert_eq!(
            ids(&history.replay(ReplayFrom::After("c"), Reader::Private)),
            ["d", "e"]
        );
    }

    /// The byte bound holds after every append.
    #[test]
    fn byte_bound_holds() {
        let one = event("x0", &"y".repeat(100)).size_bytes();
        let mut history = History::new(1000, one * 5, DEFAULT_SUBSCRIPTION_HISTORY);
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
        let mut history = History::new(4, 1 << 20, DEFAULT_SUBSCRIPTION_HISTORY);
        for id in ["a", "dup", "b", "dup"] {
            history.append(event(id, "x"));
        }
        let replay = history.replay(ReplayFrom::After("dup"), Reader::Private);
        assert!(replay.found);
        assert_eq!(ids(&replay), ["b", "dup"]);
        history.append(event("c", "x"));
        history.append(event("d", "x"));
        assert_eq!(
            ids(&history.replay(ReplayFrom::Earliest, Reader::Private)),
            ["b", "dup", "c", "d"]
        );
        assert_eq!(
            ids(&history.replay(ReplayFrom::After("dup"), Reader::Private)),
            ["c", "d"]
        );
        history.append(event("e", "x"));
        history.append(event("f", "x"));
        assert!(!history.contains("dup"));
        // Three occurrences: trimming the first two leaves the third as the resume point.
        for id in ["dup", "g", "dup", "h", "dup", "i"] {
            history.append(event(id, "x"));
        }
        assert_eq!(
            ids(&history.replay(ReplayFrom::After("dup"), Reader::Private)),
            ["h", "dup", "i"]
        );
        history.append(event("j", "x"));
        assert_eq!(
            ids(&history.replay(ReplayFrom::After("dup"), Reader::Private)),
            ["i", "j"]
        );
    }

    /// An event larger than the whole byte budget empties the history, so nobody replays
    /// across the gap it leaves.
    #[test]
    fn oversized_event_clears_history() {
        let mut history = History::new(10, 200, DEFAULT_SUBSCRIPTION_HISTORY);
        history.append(event("a", "x"));
        history.append(event("b", &"y".repeat(500)));
        assert!(history.is_empty());
        assert!(
            !history
                .replay(ReplayFrom::After("a"), Reader::Private)
                .found
        );
    }

    /// Subscription events beyond their own bound evict only subscription events: an
    /// application event published before a storm of them is still resumed from, by public
    /// and private readers alike, and the replay is in publish order.
    #[test]
    fn subscription_events_do_not_push_application_events_out() {
        let mut history = History::new(4, 1 << 20, 3);
        history.append(event("a", "x"));
        for n in 0..50 {
            history.append(announcement(&format!("s{n}")));
        }
        history.append(event("b", "x"));

        assert_eq!(
            ids(&history.replay(ReplayFrom::Earliest, Reader::Public)),
            ["a", "s47", "s48", "s49", "b"]
        );
        let public = history.replay(ReplayFrom::After("a"), Reader::Public);
        assert!(public.found);
        assert_eq!(ids(&public), ["s47", "s48", "s49", "b"]);
        assert_eq!(history.oldest_id().as_deref(), Some("a"));
        assert_eq!(history.newest_id().as_deref(), Some("b"));
        assert_eq!(history.len(), 5);
    }

    /// Replay merges the lanes in the order events were appended, from any retained id of
    /// either kind.
    #[test]
    fn replay_merges_lanes_in_publish_order() {
        let mut history = History::new(10, 1 << 20, 10);
        let order = ["a", "s1", "s2", "b", "s3", "c", "d", "s4"];
        for id in order {
            history.append(if id.starts_with('s') {
                announcement(id)
            } else {
                event(id, "x")
            });
        }
        for (at, id) in order.iter().enumerate() {
            let replay = history.replay(ReplayFrom::After(id), Reader::Private);
            assert!(replay.found, "{id}");
            assert_eq!(ids(&replay), order[at + 1..], "after {id}");
        }
        assert_eq!(
            ids(&history.replay(ReplayFrom::Earliest, Reader::Private)),
            order
        );
        assert_eq!(history.newest_id().as_deref(), Some("s4"));
    }

    /// A resume is complete only when nothing its reader could receive was let go after it:
    /// subscription events lost after the id concern private readers only; application
    /// events lost after a subscription event's id concern everyone.
    #[test]
    fn a_resume_across_a_lane_gap_is_incomplete_for_whoever_could_miss_something() {
        let mut history = History::new(3, 1 << 20, 2);
        for id in ["a", "s1", "s2", "s3"] {
            history.append(if id.starts_with('s') {
                announcement(id)
            } else {
                event(id, "x")
            });
        }
        // s1 was let go after a.
        assert!(history.replay(ReplayFrom::After("a"), Reader::Public).found);
        let private = history.replay(ReplayFrom::After("a"), Reader::Private);
        assert!(!private.found);
        assert_eq!(ids(&private), ["a", "s2", "s3"], "the whole history");
        // A watcher resuming within the subscription bound gets what followed.
        let watcher = history.replay(ReplayFrom::After("s2"), Reader::Private);
        assert!(watcher.found);
        assert_eq!(ids(&watcher), ["s3"]);

        for id in ["b", "c", "d", "e"] {
            history.append(event(id, "x"));
        }
        // b was let go after s2 and s3: no one resumes from them completely any more.
        assert!(
            !history
                .replay(ReplayFrom::After("s3"), Reader::Public)
                .found
        );
        assert_eq!(history.oldest_id().as_deref(), Some("c"));
        assert!(history.replay(ReplayFrom::After("c"), Reader::Public).found);
    }
}

/// Replay and live delivery must agree: whatever a replay after an id yields is what was
/// appended after it, in that order, with nothing its reader could receive left out.
#[cfg(test)]
mod replay_properties {
    use proptest::prelude::*;

    use super::*;
    use crate::event::EventDraft;

    fn event(n: usize, subscription: bool) -> Arc<Event> {
        Arc::new(Event::new(
            format!("e{n}").into(),
            EventDraft {
                topics: vec!["t".into()],
                data: "x".repeat(n % 7),
                event_type: subscription.then(|| "mercure".to_owned()),
                private: subscription,
                ..EventDraft::default()
            },
        ))
    }

    proptest! {
        /// On random sequences of application and subscription events and random bounds: a
        /// complete private replay after any id is exactly what followed it; a complete public
        /// one holds exactly the application events that followed, and only later events, in
        /// order; `earliest` yields the retained events in append order.
        #[test]
        fn a_complete_replay_is_what_followed_the_id(
            kinds in prop::collection::vec(any::<bool>(), 0..60),
            size in 0usize..12,
            subscription_size in 0usize..12,
            bytes in 60usize..2000,
        ) {
            let mut history = History::new(size, bytes, subscription_size);
            let appended: Vec<Arc<Event>> = kinds
                .iter()
                .enumerate()
                .map(|(n, &subscription)| event(n, subscription))
                .collect();
            appended.iter().for_each(|e| history.append(e.clone()));
            let position = |id: &str| appended.iter().position(|e| &*e.id == id).expect("appended");

            let earliest: Vec<usize> = history
                .replay(ReplayFrom::Earliest, Reader::Private)
                .events
                .iter()
                .map(|e| position(&e.id))
                .collect();
            prop_assert!(earliest.windows(2).all(|w| w[0] < w[1]), "{:?}", earliest);

            for (at, resumed) in appended.iter().enumerate() {
                let private = history.replay(ReplayFrom::After(&resumed.id), Reader::Private);
                if private.found {
                    let expected: Vec<&str> = appended[at + 1..].iter().map(|e| &*e.id).collect();
                    let got: Vec<&str> = private.events.iter().map(|e| &*e.id).collect();
                    prop_assert_eq!(got, expected);
                }
                let public = history.replay(ReplayFrom::After(&resumed.id), Reader::Public);
                if public.found {
                    let later: Vec<usize> = public.events.iter().map(|e| position(&e.id)).collect();
                    prop_assert!(later.iter().all(|&p| p > at));
                    prop_assert!(later.windows(2).all(|w| w[0] < w[1]));
                    let application = |events: &mut dyn Iterator<Item = &Arc<Event>>| -> Vec<Arc<str>> {
                        events.filter(|e| e.kind == Kind::Application).map(|e| e.id.clone()).collect()
                    };
                    prop_assert_eq!(
                        application(&mut public.events.iter()),
                        application(&mut appended[at + 1..].iter())
                    );
                }
                prop_assert!(!private.found || public.found, "private complete implies public");
            }
            if let Some(oldest) = history.oldest_id() {
                prop_assert!(history.replay(ReplayFrom::After(&oldest), Reader::Public).found);
            }
        }
    }
}
