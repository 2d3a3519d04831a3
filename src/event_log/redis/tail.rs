//! The tail: follows the Redis stream for the life of the node and hands the broadcaster what
//! it reads, in stream order; notices when entries were lost on the way (another epoch, another
//! predecessor); decodes each entry once, holding it to the publication rules.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use actix::Recipient;
use redis::{
    Value,
    aio::MultiplexedConnection,
    streams::{StreamId, StreamRangeReply, StreamReadReply},
};

use super::{COMMAND_TIMEOUT, Shared, Stored, parse_entry_id};
use crate::{
    event::{Event, EventDraft, Kind, Limits, Publication},
    event_log::{TailEntry, Tailed},
    metrics::{Metrics, RefusedReason},
};

/// How long `XREAD` blocks before the tail checks the log's epoch and reads again.
const BLOCK: Duration = Duration::from_secs(1);
/// Through Sentinel, how often the tail checks that the server it reads is still the primary
/// (a demoted primary still answers reads).
const ROLE_CHECK: Duration = Duration::from_secs(1);
/// Entries read at once; also what the broadcaster applies in one message.
const READ_COUNT: usize = 1024;
/// The tail's reconnect backoff: doubling from the first, jittered, capped at the last.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At most one log line per this long about refused entries (with the count and the last one).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where the tail is in the log, and what it expects next.
#[derive(Debug, Default)]
struct TailState {
    /// `None`: nothing read yet; the first connection reads the retained window.
    cursor: Option<String>,
    /// The epoch of the entries applied, once known.
    epoch: Option<String>,
    /// The last hub entry read: the next one's predecessor.
    last: Option<String>,
    /// The entry that made the tail say the log lost entries, until another is read: met
    /// again on the re-read, it is refused instead, so one forged entry cannot make the
    /// tail re-read the log forever.
    lost_at: Option<String>,
    /// The last [`RECENT_ENTRIES`] hub entries read, oldest first. An entry whose predecessor
    /// is among them, though not the last, follows entries that the append script did not
    /// write (each of its entries names the one the script wrote before): those got in
    /// between, and nothing was lost.
    recent: VecDeque<String>,
}

/// Hub entries a [`TailState`] remembers, to tell entries written in between from lost ones.
const RECENT_ENTRIES: usize = 64;

/// Why the tail stopped following the log.
enum Stop {
    /// The broadcaster is gone: the tail ends.
    Gone,
    /// Redis failed; reconnect after a pause.
    Failed(redis::RedisError),
}

impl From<redis::RedisError> for Stop {
    fn from(err: redis::RedisError) -> Self {
        Self::Failed(err)
    }
}

/// Follows the log for the life of the node, reconnecting with jittered backoff.
pub(super) async fn run(shared: Shared, sink: Recipient<Tailed>) {
    let mut position = TailState::default();
    let mut refusals = Refusals::new(shared.metrics.clone());
    let mut delay = BACKOFF_MIN;
    // A node that cannot reach Redis from the start says why once, too.
    let mut first_failure = true;
    loop {
        match follow(&shared, &sink, &mut position, &mut refusals, &mut delay).await {
            Stop::Gone => return,
            Stop::Failed(err) => {
                if shared.set_reachable(false) | std::mem::take(&mut first_failure) {
                    log::error!("the Redis log is unreachable; publishes are refused error={err}");
                }
                // Full jitter: anywhere up to the current step, at least the minimum.
                let pause = BACKOFF_MIN.max(delay.mul_f64(fastrand::f64()));
                tokio::time::sleep(pause).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One connection's worth of tailing: connect, read the retained window the first time, then
/// read and hand over entries until something fails.
async fn follow(
    shared: &Shared,
    sink: &Recipient<Tailed>,
    position: &mut TailState,
    refusals: &mut Refusals,
    delay: &mut Duration,
) -> Stop {
    let (mut connection, address) = match shared
        .endpoint
        .connect(COMMAND_TIMEOUT, BLOCK + COMMAND_TIMEOUT)
        .await
    {
        Ok(connected) => connected,
        Err(err) => return Stop::Failed(err),
    };
    shared.connections.fetch_add(1, Ordering::Relaxed);
    match rewound(shared, &mut connection, position).await {
        Ok(None) => {}
        Ok(Some(reason)) => {
            if lost(sink, position, None, reason).await.is_err() {
                return Stop::Gone;
            }
        }
        Err(err) => return Stop::Failed(err),
    }
    if position.cursor.is_none() {
        match snapshot(shared, &mut connection, position, refusals).await {
            Ok(entries) => {
                if sink.send(Tailed::Snapshot(entries)).await.is_err() {
                    return Stop::Gone;
                }
            }
            Err(err) => return err,
        }
    }
    if shared.set_reachable(true) {
        log::info!(
            "the Redis log is reachable; reading after {}",
            position.cursor.as_deref().unwrap_or("0-0")
        );
    }
    *delay = BACKOFF_MIN;
    let mut role_checked = Instant::now();
    loop {
        if shared.endpoint.follows_failover() && role_checked.elapsed() >= ROLE_CHECK {
            role_checked = Instant::now();
            match redis::cmd("ROLE")
                .query_async::<redis::Role>(&mut connection)
                .await
            {
                Ok(redis::Role::Primary { .. }) => {}
                Ok(_) => {
                    return Stop::Failed(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the server is no longer the primary; asking the sentinels again",
                    )));
                }
                Err(err) => return Stop::Failed(err),
            }
            // A primary that Sentinel replaced while it was cut off still says it is one.
            if shared.endpoint.moved_from(&address, COMMAND_TIMEOUT).await {
                return Stop::Failed(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "the sentinels name another primary; connecting to it",
                )));
            }
        }
        let reply: Option<StreamReadReply> = match redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&shared.keys.log)
            .arg(position.cursor.as_deref().unwrap_or("0-0"))
            .query_async(&mut connection)
            .await
        {
            Ok(reply) => reply,
            Err(err) => return Stop::Failed(err),
        };
        let read: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect();
        if read.is_empty() {
            // Idle: a log flushed or replaced meanwhile shows in its epoch.
            let epoch: Option<String> = match redis::cmd("HGET")
                .arg(&shared.keys.meta)
                .arg("epoch")
                .query_async(&mut connection)
                .await
            {
                Ok(epoch) => epoch,
                Err(err) => return Stop::Failed(err),
            };
            if let Some(known) = &position.epoch
                && epoch.as_ref() != Some(known)
            {
                let reason = format!(
                    "the log's epoch changed from {known} to {} (Redis flushed or restarted empty)",
                    epoch.as_deref().unwrap_or("none")
                );
                if lost(sink, position, None, reason).await.is_err() {
                    return Stop::Gone;
                }
            }
            continue;
        }
        let caught_up = read.len() < READ_COUNT;
        let mut entries = Vec::with_capacity(read.len());
        for entry in read {
            let Some(order) = Order::of(&entry) else {
                // Not a hub's entry: no part of the log's order.
                position.cursor = Some(entry.id.clone());
                refusals.refuse(&entry.id, "foreign", "no `e` and `p` fields");
                continue;
            };
            let gap = match position.gap(&entry.id, &order) {
                Some(reason) => Some(reason),
                None => match position.gone_between(shared, &mut connection, &order).await {
                    Ok(gone) => gone,
                    Err(err) => return Stop::Failed(err),
                },
            };
            if let Some(reason) = gap {
                let forged = match position.forged_epoch(shared, &mut connection, &order).await {
                    Ok(forged) => forged,
                    Err(err) => return Stop::Failed(err),
                };
                if forged || position.lost_at.as_deref() == Some(entry.id.as_str()) {
                    // An epoch the log does not have, or the same entry again right after the
                    // re-read it caused: it is the entry that is wrong, not the log.
                    position.cursor = Some(entry.id.clone());
                    refusals.refuse(&entry.id, "order", &reason);
                    continue;
                }
                let before = std::mem::take(&mut entries);
                if !before.is_empty()
                    && sink
                        .send(Tailed::Entries {
                            entries: before,
                            caught_up: false,
                        })
                        .await
                        .is_err()
                {
                    return Stop::Gone;
                }
                if lost(sink, position, Some(entry.id.clone()), reason)
                    .await
                    .is_err()
                {
                    return Stop::Gone;
                }
                // Read again from the log's oldest entry.
                break;
            }
            position.advance(&entry.id, order);
            match decode(&entry, &shared.limits) {
                Ok(decoded) => entries.push(decoded),
                Err((reason, detail)) => refusals.refuse(&entry.id, reason, &detail),
            }
        }
        if (!entries.is_empty() || caught_up)
            && sink
                .send(Tailed::Entries { entries, caught_up })
                .await
                .is_err()
        {
            return Stop::Gone;
        }
    }
}

/// Why the log cannot be the one this node applied, on a reconnection: its newest entry is
/// older than the last one applied here (or it has none), so entries this node applied are
/// gone. A failover to a replica that lacked them does that (Redis replicates asynchronously;
/// `--redis-replicas` makes a publish wait for it). `None` if the log goes on from here, as far
/// as this tells; the predecessor check covers the rest.
async fn rewound(
    shared: &Shared,
    connection: &mut MultiplexedConnection,
    position: &TailState,
) -> redis::RedisResult<Option<String>> {
    let Some(last) = position.last.as_deref() else {
        return Ok(None);
    };
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&shared.keys.log)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await?;
    let newest = newest.ids.first().map(|entry| entry.id.as_str());
    if newest.and_then(parse_entry_id) >= parse_entry_id(last) {
        return Ok(None);
    }
    Ok(Some(format!(
        "the log's newest entry is {}, older than {last}, the last one applied here (a failover \
         to a replica that lacked entries, or Redis restarted with older data)",
        newest.unwrap_or("none")
    )))
}

/// Tells the broadcaster entries were lost and starts over from the log's oldest entry.
async fn lost(
    sink: &Recipient<Tailed>,
    position: &mut TailState,
    at: Option<String>,
    reason: String,
) -> Result<(), actix::MailboxError> {
    log::error!("the Redis log lost entries this node had not applied: {reason}");
    *position = TailState {
        cursor: Some("0-0".to_owned()),
        epoch: None,
        last: None,
        lost_at: at,
        recent: VecDeque::new(),
    };
    sink.send(Tailed::Lost { reason }).await
}

/// An entry's place in the log's order: the hub's `e` (epoch) and `p` (predecessor) fields.
#[derive(Debug)]
struct Order {
    epoch: String,
    predecessor: String,
}

impl Order {
    /// `None` for an entry that has not both fields as text: not a hub's entry.
    fn of(entry: &StreamId) -> Option<Self> {
        Some(Self {
            epoch: text(entry, "e")?.ok()?,
            predecessor: text(entry, "p")?.ok()?,
        })
    }
}

impl TailState {
    /// Why the entry `id` at `order` cannot follow what was applied, if it cannot.
    fn gap(&self, id: &str, order: &Order) -> Option<String> {
        let Order { epoch, predecessor } = order;
        if let Some(known) = &self.epoch
            && known != epoch
        {
            return Some(format!(
                "entry {id} has epoch {epoch}, the log had {known} (Redis flushed or restarted empty)"
            ));
        }
        if let Some(last) = &self.last
            && last != predecessor
            && !self.recent.contains(predecessor)
        {
            return Some(format!(
                "entry {id} follows {predecessor}, the last entry applied here is {last} (this node fell behind the trim, or Redis lost entries)"
            ));
        }
        None
    }

    /// Why an entry that follows one of the recent entries, not the last, cannot follow what
    /// was applied, if it cannot: the entries read after its predecessor are foreign ones
    /// shaped like the hub's while they are still in the log, and were lost with it when they
    /// are not (a failover to a replica that lacked them: the script's last entry went back).
    async fn gone_between(
        &self,
        shared: &Shared,
        connection: &mut MultiplexedConnection,
        order: &Order,
    ) -> redis::RedisResult<Option<String>> {
        let Some(last) = self.last.as_deref() else {
            return Ok(None);
        };
        if last == order.predecessor {
            return Ok(None);
        }
        let found: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&shared.keys.log)
            .arg(last)
            .arg(last)
            .query_async(connection)
            .await?;
        if !found.ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "an entry follows {}, but {last}, applied here after it, is no longer in the log (a \
             failover to a replica that lacked entries?)",
            order.predecessor
        )))
    }

    /// Whether `order` claims an epoch that is neither the one applied nor the log's own:
    /// a log that was flushed or replaced has a new epoch in `PREFIX:meta` too, while an entry
    /// written by hand does not change it.
    async fn forged_epoch(
        &self,
        shared: &Shared,
        connection: &mut MultiplexedConnection,
        order: &Order,
    ) -> redis::RedisResult<bool> {
        let Some(known) = &self.epoch else {
            return Ok(false);
        };
        if *known == order.epoch {
            return Ok(false);
        }
        let epoch: Option<String> = redis::cmd("HGET")
            .arg(&shared.keys.meta)
            .arg("epoch")
            .query_async(connection)
            .await?;
        Ok(epoch.as_ref() == Some(known))
    }

    /// A hub entry was read: the next one follows it (whether its event is delivered or not).
    fn advance(&mut self, id: &str, order: Order) {
        self.epoch = Some(order.epoch);
        self.last = Some(id.to_owned());
        if self.recent.len() == RECENT_ENTRIES {
            self.recent.pop_front();
        }
        self.recent.push_back(id.to_owned());
        self.cursor = Some(id.to_owned());
        // Past the entry that caused the loss, the re-read is over.
        let past = |at: &String| parse_entry_id(id) > parse_entry_id(at);
        if self.lost_at.as_ref().is_some_and(past) {
            self.lost_at = None;
        }
    }
}

/// Reads the retained window and the epoch in one transaction, and sets the position after it.
async fn snapshot(
    shared: &Shared,
    connection: &mut MultiplexedConnection,
    position: &mut TailState,
    refusals: &mut Refusals,
) -> Result<Vec<TailEntry>, Stop> {
    let (newest_first, epoch): (StreamRangeReply, Option<String>) = redis::pipe()
        .atomic()
        .cmd("XREVRANGE")
        .arg(&shared.keys.log)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(shared.max_len)
        .cmd("HGET")
        .arg(&shared.keys.meta)
        .arg("epoch")
        .query_async(connection)
        .await?;
    let mut ids = newest_first.ids;
    ids.reverse();
    // The order goes on from the newest hub entry; foreign ones only move the cursor.
    let newest_hub = ids
        .iter()
        .rev()
        .find_map(|entry| Order::of(entry).map(|order| (entry.id.clone(), order)));
    *position = TailState {
        cursor: Some(
            ids.last()
                .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
        ),
        epoch: newest_hub
            .as_ref()
            .map(|(_, order)| order.epoch.clone())
            .or(epoch),
        last: newest_hub.map(|(id, _)| id),
        lost_at: None,
        recent: {
            let hub: Vec<&StreamId> = ids.iter().filter(|e| Order::of(e).is_some()).collect();
            hub[hub.len().saturating_sub(RECENT_ENTRIES)..]
                .iter()
                .map(|entry| entry.id.clone())
                .collect()
        },
    };
    let mut entries = Vec::with_capacity(ids.len());
    for entry in &ids {
        if Order::of(entry).is_none() {
            refusals.refuse(&entry.id, "foreign", "no `e` and `p` fields");
            continue;
        }
        match decode(entry, &shared.limits) {
            Ok(decoded) => entries.push(decoded),
            Err((reason, detail)) => refusals.refuse(&entry.id, reason, &detail),
        }
    }
    Ok(entries)
}

/// A field's bytes as text: `None` if absent, `Some(Err)` if not UTF-8.
fn text(entry: &StreamId, name: &str) -> Option<Result<String, ()>> {
    match entry.map.get(name)? {
        Value::BulkString(bytes) => Some(String::from_utf8(bytes.clone()).map_err(|_| ())),
        Value::SimpleString(text) => Some(Ok(text.clone())),
        _ => Some(Err(())),
    }
}

/// Why an entry was refused: the metric's `reason`, and a detail for the log.
type Refused = (&'static str, String);

/// The event a hub entry holds, parsed with the publication rule set and encoded for the
/// wire; or why it is refused.
fn decode(entry: &StreamId, limits: &Limits) -> Result<TailEntry, Refused> {
    let parsed = parse_entry_id(&entry.id)
        .ok_or_else(|| ("entry_id", format!("entry id {:?} is not ms-seq", entry.id)))?;
    let not_utf8 = |name: &str| ("not_utf8", format!("field `{name}` is not UTF-8"));
    let own_id = match text(entry, "i") {
        None => String::new(),
        Some(id) => id.map_err(|()| not_utf8("i"))?,
    };
    let stored = text(entry, "d")
        .ok_or_else(|| ("not_json", "no `d` field".to_owned()))?
        .map_err(|()| not_utf8("d"))?;
    let stored: Stored = serde_json::from_str(&stored).map_err(|err| {
        (
            "not_json",
            format!("field `d` is not an sse-hub event: {err}"),
        )
    })?;
    let draft = EventDraft {
        topics: stored.topics,
        data: stored.data,
        // The SSE id: the publisher's own, else the entry id.
        id: Some(if own_id.is_empty() {
            entry.id.clone()
        } else {
            own_id
        }),
        event_type: stored.event_type,
        retry_ms: stored.retry_ms,
        private: stored.private,
        repeatable_id: false,
    };
    let publication = match Kind::of_type(draft.event_type.as_deref()) {
        Kind::Application => Publication::parse(draft, limits),
        Kind::Subscription => Publication::parse_subscription_event(draft, limits),
    };
    let mut draft = publication
        .map_err(|refusal| (refusal.label(), refusal.to_string()))?
        .into_draft();
    let id = draft.id.take().unwrap_or_default();
    Ok(TailEntry {
        position: parsed,
        event: Arc::new(Event::new(id.into(), draft)),
    })
}

/// Counts refused entries and logs them at a bounded rate: the first at once, then at most one
/// line per [`REFUSAL_LOG_INTERVAL`] with how many were refused since the last line.
struct Refusals {
    metrics: Arc<Metrics>,
    logged: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            logged: None,
            unlogged: 0,
        }
    }

    fn refuse(&mut self, entry: &str, reason: &'static str, detail: &str) {
        self.metrics
            .log_entries_refused
            .get_or_create(&RefusedReason { reason })
            .inc();
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
        {
            log::warn!(
                "stream entries refused, not delivered count={} last_entry={entry} reason={reason} detail={detail}",
                self.unlogged
            );
            self.logged = Some(now);
            self.unlogged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[(&str, &[u8])]) -> StreamId {
        StreamId {
            id: id.to_owned(),
            map: fields
                .iter()
                .map(|(name, value)| ((*name).to_owned(), Value::BulkString(value.to_vec())))
                .collect(),
            ..StreamId::default()
        }
    }

    fn limits() -> Limits {
        Limits {
            max_topics: 4,
            max_topic_bytes: 64,
            max_data_bytes: 1024,
        }
    }

    /// An entry without both `e` and `p` is foreign (no place in the log's order); one with
    /// them is a hub's, whatever its payload.
    #[test]
    fn entries_without_the_hubs_order_fields_are_foreign() {
        assert!(Order::of(&entry("1-1", &[("foo", b"bar")])).is_none());
        assert!(Order::of(&entry("1-1", &[("e", b"ab")])).is_none());
        assert!(Order::of(&entry("1-1", &[("e", b"\xff"), ("p", b"")])).is_none());
        let order = Order::of(&entry("1-1", &[("e", b"ab"), ("p", b"")])).expect("a hub entry");
        assert_eq!(
            (order.epoch.as_str(), order.predecessor.as_str()),
            ("ab", "")
        );
    }

    /// A hub entry is decoded with the publication rule set: a forged line break in its id,
    /// a non-UTF-8 field, a payload that is not an event, or one over a limit is refused with
    /// its reason; a good one is encoded under its own id or its entry id.
    #[test]
    fn entries_are_decoded_with_the_publication_rule_set() {
        let good: &[u8] = br#"{"t":["t"],"d":"x"}"#;
        let reason = |fields: &[(&str, &[u8])]| {
            decode(&entry("1-1", fields), &limits())
                .err()
                .map(|(reason, _)| reason)
        };
        assert_eq!(
            reason(&[("i", b"1\nevent: reset"), ("d", good)]),
            Some("id")
        );
        assert_eq!(reason(&[("i", b"\xff"), ("d", good)]), Some("not_utf8"));
        assert_eq!(reason(&[("d", b"{")]), Some("not_json"));
        assert_eq!(reason(&[("d", br#"{"x":1}"#)]), Some("not_json"));
        assert_eq!(reason(&[]), Some("not_json"));
        let big = format!(r#"{{"t":["t"],"d":"{}"}}"#, "x".repeat(1025));
        assert_eq!(reason(&[("d", big.as_bytes())]), Some("too_large"));
        assert_eq!(
            decode(&entry("1-x", &[("d", good)]), &limits())
                .err()
                .map(|(r, _)| r),
            Some("entry_id")
        );
        let own = decode(&entry("5-0", &[("i", b"mine"), ("d", good)]), &limits()).expect("ok");
        assert_eq!(&own.event.frame[..], b"id: mine\ndata: x\n\n");
        let generated = decode(&entry("5-1", &[("i", b""), ("d", good)]), &limits()).expect("ok");
        assert_eq!(&*generated.event.id, "5-1");
    }

    /// The entry that made the tail declare a loss is refused when met again on the re-read
    /// (it is the entry that is wrong, not the log), and forgotten once the tail is past it.
    #[test]
    fn a_loss_at_one_entry_is_declared_once() {
        let mut position = TailState {
            lost_at: Some("5-0".to_owned()),
            ..TailState::default()
        };
        let order = |epoch: &str, p: &str| Order {
            epoch: epoch.to_owned(),
            predecessor: p.to_owned(),
        };
        position.advance("4-0", order("a", ""));
        assert_eq!(position.lost_at.as_deref(), Some("5-0"), "not yet past it");
        assert!(position.gap("5-0", &order("b", "4-0")).is_some());
        position.advance("6-0", order("a", "4-0"));
        assert_eq!(position.lost_at, None, "past it");
    }

    /// An entry shaped like the hub's own (the log's epoch, the last entry as predecessor)
    /// written between two of the script's entries is no gap, nor is the script's next entry,
    /// which names the one before the interloper: nothing was lost, and no re-read starts.
    #[test]
    fn an_entry_written_in_between_is_not_a_loss() {
        let mut position = TailState::default();
        let order = |p: &str| Order {
            epoch: "a".to_owned(),
            predecessor: p.to_owned(),
        };
        position.advance("1-0", order(""));
        position.advance("2-0", order("1-0"));

        assert!(
            position.gap("3-0", &order("2-0")).is_none(),
            "the forged entry"
        );
        position.advance("3-0", order("2-0"));
        assert!(
            position.gap("4-0", &order("2-0")).is_none(),
            "the script's next"
        );
        position.advance("4-0", order("2-0"));
        assert!(position.gap("5-0", &order("4-0")).is_none());
        assert!(
            position.gap("6-0", &order("0-7")).is_some(),
            "a predecessor never read is a loss"
        );
    }

    /// The two kinds of gap, each named in its reason: another epoch (Redis flushed or
    /// restarted empty), and a predecessor that is neither the last entry applied nor one of
    /// the last [`RECENT_ENTRIES`] (this node fell behind the trim, or Redis lost entries). A
    /// first entry, with nothing applied yet, follows anything.
    #[test]
    fn gaps_are_another_epoch_or_an_unknown_predecessor() {
        let order = |epoch: &str, p: &str| Order {
            epoch: epoch.to_owned(),
            predecessor: p.to_owned(),
        };
        let mut position = TailState::default();
        assert!(
            position.gap("9-0", &order("a", "8-0")).is_none(),
            "nothing applied yet: whatever comes first is where the tail starts"
        );
        position.advance("1-0", order("a", ""));
        let epoch = position
            .gap("2-0", &order("b", "1-0"))
            .expect("another epoch");
        assert!(
            epoch.contains("epoch b") && epoch.contains("had a"),
            "{epoch}"
        );
        assert!(
            position.gap("2-0", &order("a", "1-0")).is_none(),
            "the next entry"
        );

        for n in 2..=(RECENT_ENTRIES as u64 + 1) {
            let previous = format!("{}-0", n - 1);
            position.advance(&format!("{n}-0"), order("a", &previous));
        }
        let newest = RECENT_ENTRIES as u64 + 1;
        assert!(
            position
                .gap("x-0", &order("a", &format!("{}-0", newest - 1)))
                .is_none(),
            "a predecessor among the recent entries: something was written in between"
        );
        let behind = position
            .gap("x-0", &order("a", "1-0"))
            .expect("1-0 has left the recent entries");
        assert!(
            behind.contains("follows 1-0") && behind.contains(&format!("{newest}-0")),
            "{behind}"
        );
    }
}
