//! `/stats`: the broadcaster's counters and gauges, and on request the selectors with the most
//! subscribers, read from the topic index without a pass over the subscribers.

use std::collections::BTreeMap;

use actix::prelude::*;
use serde::Serialize;

use super::{Broadcaster, index::TopicIndex};

/// Ask for the counters and gauges, and with `selectors: Some(n)` the subscribers of the `n`
/// selectors with the most of them. The counts alone cost the actor nothing per subscriber.
#[derive(Debug, Default, Message)]
#[rtype(result = "Stats")]
pub struct GetStats {
    pub selectors: Option<usize>,
}

/// Longest selector text in `/stats`, in bytes: longer ones are cut (on a character boundary)
/// and end in `…`; selectors that share the cut prefix are counted together.
pub const STATS_SELECTOR_BYTES: usize = 200;

/// `selector` as `/stats` shows it: at most [`STATS_SELECTOR_BYTES`] of it, then `…` if cut.
fn stats_text(selector: &str) -> String {
    if selector.len() <= STATS_SELECTOR_BYTES {
        return selector.to_owned();
    }
    let mut end = STATS_SELECTOR_BYTES;
    while !selector.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &selector[..end])
}

/// A snapshot of the broadcaster, served as JSON on `/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub subscribers: usize,
    /// Subscribers per selector (`*` for those without one), for the selectors with the most
    /// subscribers; only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers_by_selector: Option<BTreeMap<String, usize>>,
    /// Selectors in use that `subscribers_by_selector` leaves out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selectors_omitted: Option<usize>,
    pub subscribers_connected_total: u64,
    pub subscribers_disconnected_total: u64,
    pub subscribers_dropped_slow_total: u64,
    pub events_published_total: u64,
    pub events_delivered_total: u64,
    pub history_len: usize,
    pub history_bytes: usize,
    pub history_oldest_id: Option<String>,
    pub history_newest_id: Option<String>,
}

impl Broadcaster {
    /// The counts, and with `selectors` the top of the per-selector breakdown. That is read
    /// from the topic index (one entry per distinct selector, each knowing its subscribers), so
    /// it costs one pass over the distinct selectors and a heap of `selectors` entries, and
    /// copies only the selector texts it returns.
    pub(super) fn stats(&self, selectors: Option<usize>) -> Stats {
        let (by_selector, omitted) = match selectors {
            Some(limit) => {
                let (top, omitted) = top_selectors(&self.index, limit);
                (Some(top), Some(omitted))
            }
            None => (None, None),
        };
        Stats {
            subscribers: self.subscribers.len(),
            subscribers_by_selector: by_selector,
            selectors_omitted: omitted,
            subscribers_connected_total: self.metrics.subscribers_connected.get(),
            subscribers_disconnected_total: self.metrics.subscribers_disconnected.get(),
            subscribers_dropped_slow_total: self.metrics.subscribers_dropped_slow.get(),
            events_published_total: self.metrics.events_published.get(),
            events_delivered_total: self.metrics.events_delivered.get(),
            history_len: self.history.len(),
            history_bytes: self.history.size_bytes(),
            history_oldest_id: self.history.oldest_id().map(|id| id.to_string()),
            history_newest_id: self.history.newest_id().map(|id| id.to_string()),
        }
    }
}

/// The `limit` selectors with the most subscribers (ties: the smaller text first), their
/// texts cut to [`STATS_SELECTOR_BYTES`], and how many selectors were left out. `*`
/// counts subscribers without a selector too, as they receive the same events.
fn top_selectors(index: &TopicIndex, limit: usize) -> (BTreeMap<String, usize>, usize) {
    use std::{cmp::Reverse, collections::BinaryHeap};

    let any = (!index.any.is_empty()).then_some(("*", index.any.len()));
    let exact = index.exact.iter().map(|(s, set)| (s.as_str(), set.len()));
    let templates = index
        .patterns
        .iter()
        .map(|(s, set)| (s.as_str(), set.len()));
    // A min-heap of the best `limit` so far: its top is the first to give way.
    let mut best = BinaryHeap::with_capacity(limit.saturating_add(1).min(1024));
    let mut distinct = 0;
    for (selector, count) in any.into_iter().chain(exact).chain(templates) {
        distinct += 1;
        best.push(Reverse((count, Reverse(selector))));
        if best.len() > limit {
            best.pop();
        }
    }
    let mut top = BTreeMap::new();
    for Reverse((count, Reverse(selector))) in best {
        *top.entry(stats_text(selector)).or_insert(0) += count;
    }
    (top, distinct - limit.min(distinct))
}

impl Handler<GetStats> for Broadcaster {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, msg: GetStats, _: &mut Self::Context) -> Self::Result {
        self.fan_out_pending();
        MessageResult(self.stats(msg.selectors))
    }
}
