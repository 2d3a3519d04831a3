//! Matching received events to publishes: a bit per (subscriber, sequence number) tells new from
//! duplicate, the publisher's acknowledged prefix carried in each event tells in-order from
//! reordered, and a latency histogram travels between processes as (value, count) pairs.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency or connect time recorded: an hour, in µs. Larger values are clamped.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// Most bitmap memory one process may use for accounting.
pub const MAX_BITMAP_BYTES: u64 = 1 << 30;

/// A histogram of µs values with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("bounds are valid constants")
}

/// Records `value_us`, clamped into the histogram's range.
pub fn record_clamped(hist: &mut Histogram<u64>, value_us: u64) {
    hist.saturating_record(value_us.clamp(1, HISTOGRAM_MAX_US));
}

/// A histogram in a form that crosses process boundaries: each recorded bucket once.
pub fn to_pairs(hist: &Histogram<u64>) -> Vec<(u64, u64)> {
    hist.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds `pairs` (from `to_pairs`) into `hist`.
pub fn merge_pairs(hist: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        // Values came from a histogram with the same bounds, so they fit.
        let _ = hist.record_n(value.clamp(1, HISTOGRAM_MAX_US), count);
    }
}

/// Event counters, summed across subscribers and processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Distinct (subscriber, seq) pairs received: the delivered events.
    pub unique: u64,
    /// Events received again by a subscriber that already had them.
    pub duplicates: u64,
    /// Events that arrived after an event whose publish began only once they had been
    /// acknowledged: a real order violation. Publishes in flight together have no order, so
    /// arrivals among them are never counted.
    pub reordered: u64,
    /// Data lines that were not ours, or carried a sequence number never published.
    pub foreign: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.foreign += other.foreign;
    }
}

/// Folds one process's per-event slowest deliveries into `into` (by maximum).
pub fn merge_event_max(into: &mut Vec<u64>, other: &[u64]) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (slowest, &value) in into.iter_mut().zip(other) {
        *slowest = (*slowest).max(value);
    }
}

/// The time until each of the first `events` events reached every subscriber, as a histogram
/// over events; events that reached none (a slowest delivery of 0) are left out.
pub fn completion(event_max_us: &[u64], events: usize) -> Histogram<u64> {
    let mut hist = new_histogram();
    for &slowest in event_max_us.iter().take(events).filter(|&&v| v > 0) {
        record_clamped(&mut hist, slowest);
    }
    hist
}

/// Per-subscriber accounting for one process, in flat arrays indexed by subscriber.
#[derive(Debug)]
pub struct Tally {
    events: u64,
    words_per_subscriber: usize,
    seen: Vec<u64>,
    /// Per subscriber, the highest `ack` among events received: every seq below it was
    /// acknowledged before some received event was sent, so it must have arrived already.
    max_ack: Vec<u32>,
    /// Distinct events received per subscriber.
    got: Vec<u32>,
    pub counts: Counts,
    pub latency: Histogram<u64>,
    /// Per event (by sequence number), the longest publish → receive time among this
    /// process's subscribers: merged by maximum, the time until it reached every subscriber.
    pub event_max_us: Vec<u64>,
    /// Wall clock (µs) of the first and the latest new event, for the delivery rate.
    pub first_us: u64,
    pub last_us: u64,
}

impl Tally {
    /// Accounting for `subscribers` subscribers of `events` events (sequence numbers 0..events).
    pub fn new(subscribers: usize, events: u64) -> anyhow::Result<Self> {
        let events = events.min(u64::from(u32::MAX));
        let words_per_subscriber = usize::try_from(events.div_ceil(64))?;
        let bytes = (words_per_subscriber as u64) * 8 * subscribers as u64;
        if bytes > MAX_BITMAP_BYTES {
            anyhow::bail!(
                "{subscribers} subscribers x {events} events need {bytes} bytes of accounting; use fewer or more processes"
            );
        }
        Ok(Self {
            events,
            words_per_subscriber,
            seen: vec![0; words_per_subscriber * subscribers],
            max_ack: vec![0; subscribers],
            got: vec![0; subscribers],
            counts: Counts::default(),
            latency: new_histogram(),
            event_max_us: vec![0; usize::try_from(events)?],
            first_us: 0,
            last_us: 0,
        })
    }

    /// Accounts one stamped event received by `subscriber` at `now_us`; `ack` is the number of
    /// leading sequence numbers the publisher had seen acknowledged when it sent this one.
    pub fn record(&mut self, subscriber: usize, seq: u64, ts_us: u64, ack: u64, now_us: u64) {
        if seq >= self.events {
            self.counts.foreign += 1;
            return;
        }
        let bit = seq as usize;
        let word = &mut self.seen[subscriber * self.words_per_subscriber + bit / 64];
        let mask = 1u64 << (bit % 64);
        if *word & mask != 0 {
            self.counts.duplicates += 1;
            return;
        }
        *word |= mask;
        let max_ack = &mut self.max_ack[subscriber];
        if seq < u64::from(*max_ack) {
            self.counts.reordered += 1;
        }
        *max_ack = (*max_ack).max(ack.min(self.events) as u32);
        self.got[subscriber] += 1;
        self.counts.unique += 1;
        if self.first_us == 0 {
            self.first_us = now_us;
        }
        self.last_us = now_us;
        let latency = now_us.saturating_sub(ts_us);
        record_clamped(&mut self.latency, latency);
        let slowest = &mut self.event_max_us[bit];
        *slowest = (*slowest).max(latency);
    }

    /// Distinct events `subscriber` has received.
    pub fn got(&self, subscriber: usize) -> u64 {
        u64::from(self.got[subscriber])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In-order, duplicate, reordered, missing and foreign events are each counted once; events
    /// published concurrently may arrive in any order.
    #[test]
    fn every_kind_of_arrival_is_counted() {
        let mut tally = Tally::new(2, 100).unwrap();
        // (seq, ack): 3 was sent once 0..=2 were acknowledged, so 2 arriving after it is late;
        // 1 and 0 were in flight together.
        for (seq, ack) in [(1, 0), (0, 0), (3, 3), (2, 1), (2, 1), (150, 3)] {
            tally.record(0, seq, 10, ack, 1010);
        }
        tally.record(1, 99, 10, 0, 20);
        assert_eq!(
            tally.counts,
            Counts {
                unique: 5,
                duplicates: 1,
                reordered: 1,
                foreign: 1,
            }
        );
        assert_eq!((tally.got(0), tally.got(1)), (4, 1));
        assert_eq!(tally.latency.max(), tally.latency.highest_equivalent(1000));
        // Event 99 reached subscriber 1 after 10 µs; event 3, subscriber 0 after 1000.
        assert_eq!((tally.event_max_us[99], tally.event_max_us[3]), (10, 1000));
    }

    /// The time until an event reached every subscriber is the slowest of its deliveries,
    /// across processes too; an event some subscriber never got has none.
    #[test]
    fn completion_is_the_slowest_delivery_of_each_event() {
        let (mut a, mut b) = (Tally::new(2, 3).unwrap(), Tally::new(1, 3).unwrap());
        for (subscriber, seq, now) in [(0, 0, 110), (1, 0, 150), (0, 1, 120), (1, 1, 105)] {
            a.record(subscriber, seq, 100, 0, now);
        }
        b.record(0, 0, 100, 0, 130);
        b.record(0, 1, 100, 0, 400);
        let mut merged = vec![0; 3];
        merge_event_max(&mut merged, &a.event_max_us);
        merge_event_max(&mut merged, &b.event_max_us);
        assert_eq!(merged, [50, 300, 0]);
        let complete = completion(&merged, 3);
        assert_eq!(
            (complete.len(), complete.max()),
            (2, complete.highest_equivalent(300))
        );
    }

    /// A histogram sent as pairs merges into the same percentiles.
    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut a = new_histogram();
        for v in 1..10_000 {
            record_clamped(&mut a, v * 7);
        }
        let mut merged = new_histogram();
        merge_pairs(&mut merged, &to_pairs(&a));
        merge_pairs(&mut merged, &to_pairs(&a));
        assert_eq!(merged.len(), 2 * a.len());
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(merged.value_at_quantile(q), a.value_at_quantile(q));
        }
    }

    /// Accounting that would not fit in memory is refused up front.
    #[test]
    fn oversized_accounting_is_refused() {
        assert!(Tally::new(1_000_000, 1_000_000).is_err());
    }
}
