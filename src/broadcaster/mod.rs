//! The Broadcaster actor: the registry of subscribers and their topic index, the history (its
//! cache of the event log), fan-out, and the heartbeat that keeps streams alive and prunes
//! closed ones.
//!
//! Every publish takes one path, whatever the event log ([`pipeline`]): it goes to the log,
//! which gives it its id and commits it, and comes back through the log's tail; applying it
//! records it in the history and queues it for fan-out; only then is its publisher answered.
//!
//! Fan-out runs in rounds: the events applied while the actor was busy are fanned out together
//! when its mailbox is empty, so each subscriber is woken once per round, not once per event,
//! and the frames of a round leave in one write. Every other message first fans out what is
//! pending, so nothing observes an event in the history that subscribers have not been sent.

mod index;
mod pipeline;
mod stats;

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use bytes::Bytes;
use slab::Slab;
use tokio::sync::oneshot;

pub use self::stats::{GetStats, STATS_SELECTOR_BYTES, Stats};
use crate::{
    config::Settings,
    error::HubError,
    event::{self, Event, EventDraft},
    event_log::{EventLog, History, OthersPresent, Presence, Reader, ReplayFrom, Retention},
    metrics::{self, Metrics},
    queue::{self, PushError},
    subscriptions::{ActiveSubscriber, ActiveSubscription, Filter},
    topic::{ParsedTopic, Selector},
};
use index::TopicIndex;

/// What the broadcaster needs from the settings.
#[derive(Debug, Clone)]
pub struct BroadcasterConfig {
    pub heartbeat: Duration,
    pub subscriber_buffer: usize,
    pub max_subscribers: usize,
    /// What the history retains (the log retains at least as much).
    pub retention: Retention,
    /// How long a subscriber resuming from an id the log holds, and this node has not applied
    /// yet, waits for it (`--resume-wait`).
    pub resume_wait: Duration,
}

impl From<&Settings> for BroadcasterConfig {
    fn from(settings: &Settings) -> Self {
        Self {
            heartbeat: settings.heartbeat,
            subscriber_buffer: settings.subscriber_buffer,
            max_subscribers: settings.max_subscribers,
            resume_wait: settings.resume_wait,
            retention: Retention {
                events: settings.history_size,
                bytes: settings.history_bytes,
                // Only subscription events need the room (a Redis stream's length, say).
                subscription_events: if settings.subscriptions {
                    settings.subscription_history
                } else {
                    0
                },
            },
        }
    }
}

/// Register a subscriber. Replay and registration happen in this one handler call, so no
/// publish can fall between the replayed events and the live ones.
#[derive(Debug, Message)]
#[rtype(result = "Result<Subscribed, HubError>")]
pub struct Subscribe {
    /// Empty: every public event.
    pub selectors: Vec<Selector>,
    /// Selectors whose private events this subscriber may receive.
    pub private_selectors: Vec<Selector>,
    /// The `Last-Event-ID` to resume after, or `earliest`.
    pub last_event_id: Option<String>,
    /// With active subscriptions, who this subscriber is and what it subscribes to: announced
    /// when it joins and when it leaves.
    pub active: Option<Box<ActiveSubscriber>>,
}

/// The answer to a [`Subscribe`]: registered now, or (resuming from an id the log holds and this
/// node has not applied yet) once it has, or after a short wait.
#[derive(Debug)]
pub enum Subscribed {
    Now(Subscription),
    Later(oneshot::Receiver<Result<Subscription, HubError>>),
}

/// A registered subscriber's end: the bytes to send first, then its channel.
#[derive(Debug)]
pub struct Subscription {
    /// The opening comment, then a `reset` event if the resume point was lost, then the replay.
    /// Replayed frames are the history's own (shared, not copied), so a replay costs a pointer
    /// per event, however large the history.
    pub opening: Vec<Bytes>,
    pub receiver: queue::Receiver,
    /// The id of the event before the first one this subscriber is sent (Mercure's resume
    /// header): the resume id when the history holds it, the newest id when there was no resume
    /// id; `None` for "earliest" (nothing before, or the resume id is not held).
    pub preceding_id: Option<Arc<str>>,
}

/// Publish an event; replies with where its id will come from: once the log has committed it
/// and this node has applied it, its id; or why it was refused.
#[derive(Debug, Message)]
#[rtype(result = "Published")]
pub struct Publish(pub EventDraft);

/// The answer to a [`Publish`].
pub type Published = oneshot::Receiver<Result<Arc<str>, HubError>>;

/// A subscriber's stream ended (its connection closed): prune it now, not at the next
/// heartbeat, so it stops being counted and its selectors are released.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Left {
    key: usize,
}

/// End every stream and refuse new subscribers: the first step of a graceful shutdown.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Most events fanned out in one round: past this, a publish fans the round out at once, so a
/// flood of publishes cannot grow a round without bound.
const MAX_ROUND: usize = 256;

/// Fan out the pending round; sent by the broadcaster to itself, so it runs once the mailbox
/// is empty.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct FanOut;

/// An event's topics, each parsed as a URL at most once (by the first URL pattern to ask).
fn parsed(event: &Event) -> Vec<ParsedTopic<'_>> {
    event.topics.iter().map(|t| ParsedTopic::new(t)).collect()
}

/// Name of the event that tells a resuming subscriber its `Last-Event-ID` is not in the history.
pub const RESET_EVENT: &str = "reset";

#[derive(Debug)]
struct Subscriber {
    sender: queue::Sender,
    selectors: Vec<Selector>,
    private_selectors: Vec<Selector>,
    /// The last publish this subscriber was sent, so overlapping selectors deliver once.
    stamp: u64,
    active: Option<Box<ActiveSubscriber>>,
}

impl Subscriber {
    /// Whether its token lets it receive `event` (of `topics`, parsed once for the event).
    fn may_receive(&self, event: &Event, topics: &[ParsedTopic<'_>]) -> bool {
        !event.private
            || topics
                .iter()
                .any(|t| self.private_selectors.iter().any(|s| s.matches_parsed(t)))
    }

    /// The one rule for "this event is for this subscriber"; the index finds the same set.
    fn wants(&self, event: &Event) -> bool {
        let selected = self.selectors.is_empty()
            || event
                .topics
                .iter()
                .any(|t| self.selectors.iter().any(|s| s.matches(t)));
        // Public events need no grant: their topics are not parsed for one.
        selected && (!event.private || self.may_receive(event, &parsed(event)))
    }
}

/// The actor. One per process, started before the HTTP server; every worker shares its `Addr`.
#[derive(Debug)]
pub struct Broadcaster {
    config: BroadcasterConfig,
    subscribers: Slab<Subscriber>,
    index: TopicIndex,
    history: History,
    /// Where events are committed; the history caches what it retains.
    log: Box<dyn EventLog>,
    /// What is on its way into the log and back.
    pipeline: pipeline::Pipeline,
    metrics: Arc<Metrics>,
    /// Increments per publish; compared with `Subscriber::stamp`.
    stamp: u64,
    keep_alive: Bytes,
    connected: Bytes,
    shutting_down: bool,
    /// Events published, recorded in the history, and not yet fanned out.
    pending: Vec<Arc<Event>>,
    /// Subscribers whose queue this round made non-empty: each is woken once, at its end.
    /// Reused by every round, like `removals`, so fan-out allocates nothing in the steady state.
    woken: Vec<usize>,
    /// Subscribers a push found closed or full, removed once the current event is out.
    removals: Removals,
    /// The subscriptions of subscribers that left; the next [`Announce`] publishes their end.
    departed: Vec<ActiveSubscription>,
    /// Subscriptions whose end is published and not yet applied (or refused), and who waits
    /// until there are none (a shutdown).
    ending: usize,
    settled: Vec<oneshot::Sender<()>>,
    /// This actor's address, for the [`Announce`] a removal sends itself.
    me: Option<Addr<Self>>,
}

/// Subscribers to remove after a fan-out or heartbeat pass.
#[derive(Debug, Default)]
struct Removals {
    closed: Vec<usize>,
    slow: Vec<usize>,
}

impl Removals {
    fn note(&mut self, key: usize, error: PushError) {
        match error {
            PushError::Closed => self.closed.push(key),
            PushError::Full => self.slow.push(key),
        }
    }
}

impl Broadcaster {
    /// A broadcaster on `log`; its history is what the log's tail hands over first.
    pub fn new(config: BroadcasterConfig, metrics: Arc<Metrics>, log: Box<dyn EventLog>) -> Self {
        Self {
            history: config.retention.history(),
            config,
            subscribers: Slab::new(),
            index: TopicIndex::default(),
            log,
            pipeline: pipeline::Pipeline::default(),
            metrics,
            stamp: 0,
            keep_alive: event::comment("keep-alive"),
            connected: event::comment("connected"),
            shutting_down: false,
            pending: Vec::new(),
            woken: Vec::new(),
            removals: Removals::default(),
            departed: Vec::new(),
            ending: 0,
            settled: Vec::new(),
            me: None,
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(subscriber) = self.subscribers.try_remove(key) {
            self.index.remove(key, &subscriber.selectors);
            if let Some(active) = subscriber.active {
                // Announced from a message of its own: removals happen where no context is.
                if self.departed.is_empty()
                    && let Some(me) = &self.me
                {
                    me.do_send(Announce);
                }
                self.departed.extend(active.subscriptions);
            }
            self.metrics.subscribers_disconnected.inc();
            metrics::set_gauge(&self.metrics.subscribers, self.subscribers.len());
            log::debug!("subscriber left key={key}");
        }
    }

    /// Dropping the sender ends the stream once the subscriber has written what is queued;
    /// it then reconnects with its last id and replays the rest from the history.
    fn drop_slow(&mut self, key: usize) {
        self.metrics.subscribers_dropped_slow.inc();
        log::warn!(
            "subscriber dropped as too slow key={key} buffer={}",
            self.config.subscriber_buffer
        );
        self.remove(key);
    }

    fn settle(&mut self) {
        let mut removals = std::mem::take(&mut self.removals);
        removals.closed.drain(..).for_each(|key| self.remove(key));
        removals.slow.drain(..).for_each(|key| self.drop_slow(key));
        self.removals = removals;
    }

    /// Fans out every pending event, in publish order, then wakes each subscriber that got
    /// something, once.
    fn fan_out_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        for event in pending.drain(..) {
            self.fan_out(&event);
        }
        self.pending = pending;
        let mut woken = std::mem::take(&mut self.woken);
        for key in woken.drain(..) {
            // A subscriber removed during the round was woken by its sender's drop.
            if let Some(subscriber) = self.subscribers.get(key) {
                subscriber.sender.wake();
            }
        }
        self.woken = woken;
    }

    /// Queues one event to every subscriber that wants it, without waking them (the round
    /// does), and removes those found closed or too slow before the next event, so no one
    /// receives a later event after missing an earlier one.
    fn fan_out(&mut self, event: &Event) {
        self.stamp += 1;
        let stamp = self.stamp;
        let mut delivered = 0;
        // The index and the registry are separate fields: walk the candidates as the index
        // yields them, without collecting them first.
        let (subscribers, woken, removals) =
            (&mut self.subscribers, &mut self.woken, &mut self.removals);
        let topics = parsed(event);
        self.index.for_each_candidate(&topics, |key| {
            let Some(subscriber) = subscribers.get_mut(key) else {
                return;
            };
            if subscriber.stamp == stamp || !subscriber.may_receive(event, &topics) {
                return;
            }
            subscriber.stamp = stamp;
            match subscriber.sender.push_quietly(event.frame.clone()) {
                Ok(was_empty) => {
                    delivered += 1;
                    if was_empty {
                        woken.push(key);
                    }
                }
                Err(error) => removals.note(key, error),
            }
        });
        self.metrics.events_delivered.inc_by(delivered);
        self.settle();
    }

    fn heartbeat(&mut self) {
        self.fan_out_pending();
        for (key, subscriber) in &self.subscribers {
            if let Err(error) = subscriber.sender.push_keep_alive(self.keep_alive.clone()) {
                self.removals.note(key, error);
            }
        }
        self.settle();
    }

    /// A committed event, read back from the log, enters the history and the next fan-out
    /// round.
    fn apply(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        self.metrics.events_published.inc();
        self.history.append(event.clone());
        metrics::set_gauge(&self.metrics.history_events, self.history.len());
        metrics::set_gauge(&self.metrics.history_bytes, self.history.size_bytes());
        if self.pending.is_empty() {
            ctx.notify(FanOut);
        }
        self.pending.push(event);
        if self.pending.len() >= MAX_ROUND {
            self.fan_out_pending();
        }
    }
}

impl Actor for Broadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        log::debug!("broadcaster started heartbeat={:?}", self.config.heartbeat);
        self.me = Some(ctx.address());
        self.log.tail(ctx.address().recipient());
        ctx.run_interval(self.config.heartbeat, |this, _| this.heartbeat());
    }
}

impl Handler<Subscribe> for Broadcaster {
    type Result = Result<Subscribed, HubError>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        if let Some(id) = msg.last_event_id.as_deref()
            && (!self.pipeline.has_read_the_log()
                || (id != "earliest" && !self.history.contains(id)))
        {
            // Perhaps committed a moment ago and not applied yet (published through another
            // node, or not read back from the store yet at start-up): find out before
            // answering `reset`, or replaying from an empty history.
            return self.locate_then_register(msg, ctx);
        }
        self.register(msg, ctx).map(Subscribed::Now)
    }
}

impl Broadcaster {
    /// Replays what the subscriber missed and registers it, in one step.
    fn register(
        &mut self,
        msg: Subscribe,
        ctx: &mut Context<Self>,
    ) -> Result<Subscription, HubError> {
        // The history already holds the pending events: fan them out first, or a resuming
        // subscriber would get them twice (replayed, then live).
        self.fan_out_pending();
        if self.shutting_down {
            return Err(HubError::ShuttingDown);
        }
        if self.subscribers.len() >= self.config.max_subscribers {
            return Err(HubError::SubscriberLimit {
                limit: self.config.max_subscribers,
            });
        }
        let key = self.subscribers.vacant_key();
        let (sender, mut receiver) = queue::queue(self.config.subscriber_buffer);
        let broadcaster = ctx.address();
        receiver.on_close(move || broadcaster.do_send(Left { key }));
        let subscriber = Subscriber {
            sender,
            selectors: msg.selectors,
            private_selectors: msg.private_selectors,
            stamp: self.stamp,
            active: msg.active,
        };

        let mut opening = vec![self.connected.clone()];
        let mut preceding_id = self.history.newest_id();
        if let Some(last_event_id) = msg.last_event_id.as_deref() {
            let from = if last_event_id == "earliest" {
                ReplayFrom::Earliest
            } else {
                ReplayFrom::After(last_event_id)
            };
            // Subscription events are private: only a subscriber authorised for private
            // events can miss one the history let go.
            let reader = if subscriber.private_selectors.is_empty() {
                Reader::Public
            } else {
                Reader::Private
            };
            let replay = self.history.replay(from, reader);
            preceding_id = match from {
                ReplayFrom::After(id) if replay.found => Some(id.into()),
                _ => None,
            };
            let mut sent = replay.events.iter().filter(|e| subscriber.wants(e));
            let first = sent.next();
            if !replay.found {
                // The oldest event this subscriber is sent, never the history's oldest: that
                // one may be of a topic it did not ask for, or private.
                let data = serde_json::json!({
                    "lastEventId": last_event_id,
                    "oldestId": first.map(|event| &*event.id),
                })
                .to_string();
                opening.push(reset_frame(&data));
            }
            for event in first.into_iter().chain(sent) {
                opening.push(event.frame.clone());
            }
        }

        self.index.insert(key, &subscriber.selectors);
        if let Some(active) = &subscriber.active {
            self.log
                .share_presence(Presence::Joined(&active.subscriptions));
        }
        let joined: Vec<EventDraft> = subscriber
            .active
            .iter()
            .flat_map(|active| active.events(true))
            .collect();
        self.subscribers.insert(subscriber);
        for draft in joined {
            self.announce(draft, ctx);
        }
        self.metrics.subscribers_connected.inc();
        metrics::set_gauge(&self.metrics.subscribers, self.subscribers.len());
        log::debug!("subscriber joined key={key}");

        Ok(Subscription {
            opening,
            receiver,
            preceding_id,
        })
    }
}

impl Handler<Left> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Left, _: &mut Self::Context) {
        // The key may have been pruned and given to a new subscriber since: only a subscriber
        // whose stream is gone is removed.
        if self
            .subscribers
            .get(msg.key)
            .is_some_and(|subscriber| subscriber.sender.is_closed())
        {
            self.remove(msg.key);
        }
    }
}

impl Broadcaster {
    /// Ends every stream, after what was published before and `last()`'s frame for each, if
    /// any; returns how many there were.
    fn end_streams(&mut self, last: impl Fn() -> Option<Bytes>) -> usize {
        self.fan_out_pending();
        for (_, subscriber) in &self.subscribers {
            if let Some(frame) = last()
                && subscriber.sender.push_quietly(frame).is_ok()
            {
                subscriber.sender.wake();
            }
        }
        let count = self.subscribers.len();
        // Dropping every sender ends every stream once its queue is written.
        self.subscribers.clear();
        self.metrics.subscribers_disconnected.inc_by(count as u64);
        metrics::set_gauge(&self.metrics.subscribers, 0);
        self.index = TopicIndex::default();
        count
    }
}

/// The `reset` control event. It has no `id:` on purpose: an id would move the browser's
/// resume point past events it never received.
fn reset_frame(data: &str) -> Bytes {
    let mut frame = format!("event: {RESET_EVENT}\n");
    frame.push_str("data: ");
    frame.push_str(data);
    frame.push_str("\n\n");
    Bytes::from(frame)
}

impl Handler<Publish> for Broadcaster {
    type Result = MessageResult<Publish>;

    fn handle(&mut self, Publish(draft): Publish, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.publish(draft, ctx))
    }
}

/// Publish the subscription events of the subscribers that left.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Announce;

impl Handler<Announce> for Broadcaster {
    type Result = ();

    fn handle(&mut self, _: Announce, ctx: &mut Self::Context) {
        let departed = std::mem::take(&mut self.departed);
        self.announce_ends(departed, true, ctx);
    }
}

impl Broadcaster {
    /// Publishes a hub-made event (active subscriptions), as a publisher's would be; nobody
    /// waits for its answer.
    fn announce(&mut self, draft: EventDraft, ctx: &mut Context<Self>) {
        // Refusals are logged where they happen (a log that refuses writes says so).
        drop(self.publish(draft, ctx));
    }

    /// Publishes the end of each of `subscriptions`; once applied, the other nodes are told
    /// that this node's (`own`) are gone (presence). Not before: a node killed meanwhile has
    /// them announced by a surviving node rather than by nobody. One that the log refuses is
    /// lost as any publish would be, and leaves presence all the same, except during a
    /// shutdown: it stays there for a surviving node to announce once this node's presence
    /// expires. A shutdown waits for every end in flight.
    pub(super) fn announce_ends(
        &mut self,
        subscriptions: Vec<ActiveSubscription>,
        own: bool,
        ctx: &mut Context<Self>,
    ) {
        if subscriptions.is_empty() {
            return;
        }
        let answers: Vec<Vec<Published>> = subscriptions
            .iter()
            .map(|subscription| {
                let drafts: Vec<EventDraft> = subscription.events(false).collect();
                drafts
                    .into_iter()
                    .map(|draft| self.publish(draft, ctx))
                    .collect()
            })
            .collect();
        self.ending += subscriptions.len();
        let applied = futures_util::future::join_all(answers.into_iter().map(|answers| async {
            let answers = futures_util::future::join_all(answers).await;
            answers.iter().all(|answer| matches!(answer, Ok(Ok(_))))
        }));
        ctx.spawn(
            fut::wrap_future(applied).map(move |applied: Vec<bool>, this: &mut Self, _| {
                this.ending -= subscriptions.len();
                if own {
                    let (gone, kept): (Vec<_>, Vec<_>) = subscriptions
                        .into_iter()
                        .zip(applied)
                        .partition(|(_, applied)| *applied || !this.shutting_down);
                    let gone: Vec<ActiveSubscription> = gone.into_iter().map(|(s, _)| s).collect();
                    this.log.share_presence(Presence::Left(&gone));
                    if !kept.is_empty() {
                        log::warn!(
                            "subscription events not applied at shutdown; their end is left to \
                             the other nodes subscriptions={}",
                            kept.len()
                        );
                    }
                }
                if this.ending == 0 {
                    for done in this.settled.drain(..) {
                        let _ = done.send(());
                    }
                }
            }),
        );
    }
}

/// The active subscriptions `filter` selects (Mercure's subscription API), on this node, and a
/// way to the other nodes' ([`SubscriptionList::others`]).
#[derive(Debug, Message)]
#[rtype(result = "SubscriptionList")]
pub struct ListSubscriptions(pub Filter);

/// The subscription documents a [`ListSubscriptions`] found, and the newest event id then (the
/// API's reconciliation cursor).
#[derive(Debug)]
pub struct SubscriptionList {
    pub subscriptions: Vec<ActiveSubscription>,
    pub newest_id: Option<Arc<str>>,
    /// Those of the other nodes sharing the log, when there are any (filtered by the caller).
    pub others: Option<OthersPresent>,
}

impl Handler<ListSubscriptions> for Broadcaster {
    type Result = MessageResult<ListSubscriptions>;

    fn handle(
        &mut self,
        ListSubscriptions(filter): ListSubscriptions,
        _: &mut Self::Context,
    ) -> Self::Result {
        self.fan_out_pending();
        let subscriptions = self
            .subscribers
            .iter()
            .filter_map(|(_, subscriber)| subscriber.active.as_deref())
            .flat_map(|active| &active.subscriptions)
            .filter(|subscription| filter.selects(subscription))
            .cloned()
            .collect();
        MessageResult(SubscriptionList {
            subscriptions,
            newest_id: self.history.newest_id(),
            others: self.log.others_present(),
        })
    }
}

impl Handler<FanOut> for Broadcaster {
    type Result = ();

    fn handle(&mut self, _: FanOut, _: &mut Self::Context) {
        self.fan_out_pending();
    }
}

/// How long a shutdown waits for the log to take the subscription events that say every
/// subscription ended, and then for the node's presence to be withdrawn, before it ends the
/// streams all the same. Past it, what was not announced is left to the other nodes (presence).
const SHUTDOWN_ANNOUNCE_WAIT: Duration = Duration::from_secs(3);

impl Handler<Shutdown> for Broadcaster {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        // Every subscription ends now: say so, as for any leave (those of subscribers that left
        // a moment ago too, rather than in an `Announce` that may come too late), and end the
        // streams once the log has applied those events (or after the wait), so subscribers
        // receive them. Taken, so a subscriber that leaves meanwhile is not announced twice.
        let mut ending = std::mem::take(&mut self.departed);
        for (_, subscriber) in &mut self.subscribers {
            if let Some(active) = subscriber.active.take() {
                ending.extend(active.subscriptions);
            }
        }
        self.announce_ends(ending, true, ctx);
        let settled = (self.ending > 0).then(|| {
            let (done, settled) = oneshot::channel();
            self.settled.push(done);
            settled
        });
        let deadline = tokio::time::Instant::now() + SHUTDOWN_ANNOUNCE_WAIT;
        let announced = async move {
            if let Some(settled) = settled
                && tokio::time::timeout_at(deadline, settled).await.is_err()
            {
                log::warn!(
                    "subscription events not applied within {SHUTDOWN_ANNOUNCE_WAIT:?}; streams \
                     end without them, and the other nodes announce them"
                );
            }
        };
        let withdrawn = fut::wrap_future(announced).then(|(), this: &mut Self, _| {
            // What is left in it is for the other nodes to announce once it expires.
            let withdrawn = this.log.withdraw_presence();
            fut::wrap_future(async move {
                if let Some(withdrawn) = withdrawn
                    && tokio::time::timeout(SHUTDOWN_ANNOUNCE_WAIT, withdrawn)
                        .await
                        .is_err()
                {
                    log::warn!(
                        "presence not withdrawn within {SHUTDOWN_ANNOUNCE_WAIT:?}; it expires"
                    );
                }
            })
        });
        Box::pin(withdrawn.map(|(), this: &mut Self, _| {
            let count = this.end_streams(|| None);
            log::info!("broadcaster shut down, streams ended subscribers={count}");
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Mutex,
        task::{Context, Poll},
    };

    use futures_util::task::noop_waker;

    use super::*;
    use crate::event_log::{
        AppendError, Appended, Appending, Locating, Placed, Position, Readiness, TailEntry, Tailed,
        memory::MemoryLog,
    };

    fn config() -> BroadcasterConfig {
        BroadcasterConfig {
            heartbeat: Duration::from_secs(3600),
            subscriber_buffer: 16,
            max_subscribers: 16,
            resume_wait: Duration::from_secs(3),
            retention: Retention {
                events: 16,
                bytes: 1 << 20,
                subscription_events: 16,
            },
        }
    }

    fn draft(id: &str) -> EventDraft {
        EventDraft {
            topics: vec!["t".to_owned()],
            id: Some(id.to_owned()),
            data: id.to_owned(),
            ..EventDraft::default()
        }
    }

    fn subscribe(last_event_id: Option<&str>) -> Subscribe {
        Subscribe {
            selectors: Vec::new(),
            private_selectors: Vec::new(),
            last_event_id: last_event_id.map(str::to_owned),
            active: None,
        }
    }

    /// The subscription, registered at once or once the event it resumes from is applied.
    async fn subscribed(addr: &Addr<Broadcaster>, msg: Subscribe) -> Subscription {
        match addr
            .send(msg)
            .await
            .expect("actor alive")
            .expect("subscribed")
        {
            Subscribed::Now(subscription) => subscription,
            Subscribed::Later(answer) => answer.await.expect("answered").expect("subscribed"),
        }
    }

    fn drain(receiver: &mut queue::Receiver) -> Vec<u8> {
        let waker = noop_waker();
        match receiver.poll_drain(&mut Context::from_waker(&waker), 1 << 20) {
            Poll::Ready(Some(chunk)) => chunk.to_vec(),
            other => panic!("expected queued frames, got {other:?}"),
        }
    }

    /// Publishes answered but not yet fanned out are in the history already: a subscriber
    /// resuming in the middle of that round gets them once, replayed, and not again live.
    #[actix::test]
    async fn a_resume_during_a_round_gets_each_event_once() {
        let log = MemoryLog::new(config().retention);
        let broadcaster = Broadcaster::new(config(), Metrics::new(), Box::new(log)).start();
        // Queued back to back, so the actor takes all four in one pass over its mailbox.
        let published: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|id| broadcaster.send(Publish(draft(id))))
            .collect();
        let subscription = subscribed(&broadcaster, subscribe(Some("a")));
        for reply in published {
            let answer = reply.await.expect("actor alive");
            answer.await.expect("answered").expect("published");
        }
        let mut subscription = subscription.await;
        let opening: Vec<u8> = subscription.opening.concat();
        assert_eq!(
            String::from_utf8_lossy(&opening),
            ": connected\n\nid: b\ndata: b\n\nid: c\ndata: c\n\n"
        );

        let answer = broadcaster
            .send(Publish(draft("d")))
            .await
            .expect("actor alive");
        answer.await.expect("answered").expect("published");
        // GetStats fans out what is pending before it answers.
        broadcaster
            .send(GetStats::default())
            .await
            .expect("actor alive");
        assert_eq!(
            String::from_utf8_lossy(&drain(&mut subscription.receiver)),
            "id: d\ndata: d\n\n",
            "live delivery starts after the replay, without repeating it"
        );
    }

    /// A batch held by the test: its events, where they were placed, and its answer.
    type HeldBatch = (
        Vec<TailEntry>,
        Vec<Option<Placed>>,
        oneshot::Sender<Appended>,
    );

    #[derive(Debug, Default)]
    struct Held {
        batches: Vec<HeldBatch>,
        sink: Option<Recipient<Tailed>>,
        next: u64,
        /// What the broadcaster told of presence, in order: `joined TOPIC`, `left TOPIC`,
        /// `withdrawn`.
        presence: Vec<String>,
        /// The snapshot is sent by the test ([`HeldLog::send_snapshot`]), not when the tail
        /// starts: a node that has not read its log yet.
        snapshot_held: bool,
    }

    /// A durable log whose commits the test completes by hand.
    #[derive(Debug, Default, Clone)]
    struct HeldLog(Arc<Mutex<Held>>);

    impl HeldLog {
        fn held(&self) -> std::sync::MutexGuard<'_, Held> {
            self.0.lock().expect("not poisoned")
        }

        /// Hands the tail its snapshot: `ids`, at positions 1, 2…
        fn send_snapshot(&self, ids: &[&str]) {
            let entries = (1..)
                .zip(ids)
                .map(|(major, id)| TailEntry {
                    position: Position { major, minor: 0 },
                    event: Arc::new(Event::new((*id).into(), draft(id))),
                })
                .collect();
            let held = self.held();
            let sink = held.sink.as_ref().expect("the tail started");
            sink.do_send(Tailed::Snapshot(entries));
        }

        /// Completes the oldest batch with `result`: committed, it is handed to the tail.
        fn complete_oldest(&self, result: Result<(), AppendError>) {
            let mut held = self.held();
            let (entries, placed, done) = held.batches.remove(0);
            match result {
                Ok(()) => {
                    let sink = held.sink.as_ref().expect("the tail started");
                    sink.do_send(Tailed::Entries {
                        entries,
                        caught_up: true,
                    });
                    done.send(Ok(placed)).expect("the broadcaster waits");
                }
                Err(err) => done.send(Err(err)).expect("the broadcaster waits"),
            }
        }

        /// The topics of each batch in flight.
        fn waiting_topics(&self) -> Vec<Vec<String>> {
            self.held()
                .batches
                .iter()
                .map(|(entries, _, _)| {
                    entries
                        .iter()
                        .flat_map(|e| e.event.topics.iter().map(|t| t.to_string()))
                        .collect()
                })
                .collect()
        }

        fn waiting(&self) -> Vec<Vec<String>> {
            self.held()
                .batches
                .iter()
                .map(|(entries, _, _)| entries.iter().map(|e| e.event.id.to_string()).collect())
                .collect()
        }
    }

    impl EventLog for HeldLog {
        fn append(&mut self, publications: Vec<EventDraft>) -> Appending {
            let (done, appending) = oneshot::channel();
            let mut held = self.held();
            let mut entries = Vec::new();
            let mut placed = Vec::new();
            for draft in publications {
                held.next += 1;
                let position = Position {
                    major: 0,
                    minor: held.next,
                };
                let id: Arc<str> = draft.id.clone().unwrap_or_default().into();
                placed.push(Some(Placed {
                    position,
                    id: id.clone(),
                }));
                entries.push(TailEntry {
                    position,
                    event: Arc::new(Event::new(id, draft)),
                });
            }
            held.batches.push((entries, placed, done));
            appending
        }

        fn locate(&self, _: &str) -> Locating {
            let (done, located) = oneshot::channel();
            let _ = done.send(None);
            located
        }

        fn tail(&mut self, sink: Recipient<Tailed>) {
            let mut held = self.held();
            if !held.snapshot_held {
                sink.do_send(Tailed::Snapshot(Vec::new()));
            }
            held.sink = Some(sink);
        }

        fn readiness(&self) -> Readiness {
            Readiness::ready()
        }

        fn share_presence(&mut self, change: Presence<'_>) {
            let (what, subscriptions) = match change {
                Presence::Joined(subscriptions) => ("joined", subscriptions),
                Presence::Left(subscriptions) => ("left", subscriptions),
            };
            let mut held = self.held();
            for subscription in subscriptions {
                held.presence.push(format!("{what} {}", subscription.topic));
            }
        }

        fn withdraw_presence(&mut self) -> Option<oneshot::Receiver<()>> {
            self.held().presence.push("withdrawn".to_owned());
            let (done, withdrawn) = oneshot::channel();
            let _ = done.send(());
            Some(withdrawn)
        }
    }

    /// A round trip through the mailbox: every message sent before it has been handled.
    async fn sync(broadcaster: &Addr<Broadcaster>) {
        broadcaster
            .send(GetStats::default())
            .await
            .expect("actor alive");
    }

    /// A node that has not read its log yet (no snapshot; a look-up answers "not held", as
    /// the Redis log does before it has a connection) does not tell a resuming subscriber
    /// `reset`: the resume waits for the snapshot, then replays from the history.
    #[actix::test]
    async fn a_resume_before_the_log_is_read_waits_for_the_snapshot() {
        // Arrange
        let log = HeldLog::default();
        log.held().snapshot_held = true;
        let broadcaster = Broadcaster::new(config(), Metrics::new(), Box::new(log.clone())).start();
        sync(&broadcaster).await;

        // Act
        let answer = broadcaster
            .send(subscribe(Some("b")))
            .await
            .expect("actor alive")
            .expect("subscribed");
        let Subscribed::Later(answer) = answer else {
            panic!("answered before the log was read");
        };
        log.send_snapshot(&["a", "b", "c"]);
        let subscription = answer.await.expect("answered").expect("subscribed");

        // Assert
        assert_eq!(
            String::from_utf8_lossy(&subscription.opening.concat()),
            ": connected\n\nid: c\ndata: c\n\n",
            "no reset: the event after the resume id, from the snapshot"
        );
    }

    /// A broadcaster on a held log with two subscribers, one active subscription each (to
    /// `matchers`), their `join` events committed: each one's subscription and topic.
    async fn two_active_subscribers(
        matchers: [&str; 2],
    ) -> (HeldLog, Addr<Broadcaster>, [(Subscription, String); 2]) {
        let log = HeldLog::default();
        let broadcaster = Broadcaster::new(config(), Metrics::new(), Box::new(log.clone())).start();
        let (msg, first_topic) = active(matchers[0]);
        let first = subscribed(&broadcaster, msg).await;
        let (msg, second_topic) = active(matchers[1]);
        let second = subscribed(&broadcaster, msg).await;
        while !log.waiting().is_empty() {
            log.complete_oldest(Ok(()));
            sync(&broadcaster).await;
        }
        (
            log,
            broadcaster,
            [(first, first_topic), (second, second_topic)],
        )
    }

    /// A subscriber with one active subscription (`matcher`), and that subscription's topic.
    fn active(matcher: &str) -> (Subscribe, String) {
        let active = ActiveSubscriber::new(
            "/.well-known/mercure",
            vec![(crate::topic::MatcherType::Exact, matcher.to_owned(), None)],
            false,
        );
        let topic = active.subscriptions[0].topic.clone();
        let msg = Subscribe {
            active: Some(Box::new(active)),
            ..subscribe(None)
        };
        (msg, topic)
    }

    /// Shuts down a broadcaster on a held log while one subscriber has just left (its `Left`
    /// comes before the shutdown, its announcement after) and another is still there. Checks
    /// that the shutdown waits for both ends and answers only then; the end of the one still
    /// there is completed with `last`. Returns what presence was told, and the two topics.
    async fn shut_down_after_a_leave(last: Result<(), AppendError>) -> (Vec<String>, [String; 2]) {
        let (log, broadcaster, [(leaving, left), (_staying, ended)]) =
            two_active_subscribers(["left-just-before", "ended-by-the-shutdown"]).await;

        drop(leaving);
        let mut shutdown = std::pin::pin!(broadcaster.send(Shutdown));
        sync(&broadcaster).await;
        assert_eq!(
            log.waiting_topics(),
            [[left.clone()]],
            "the end of the subscriber that left just before is published by the shutdown"
        );
        assert!(futures_util::poll!(&mut shutdown).is_pending());
        log.complete_oldest(Ok(()));
        sync(&broadcaster).await;
        assert_eq!(log.waiting_topics(), [[ended.clone()]]);
        assert!(
            futures_util::poll!(&mut shutdown).is_pending(),
            "the shutdown waits for every end to be applied"
        );
        log.complete_oldest(last);
        shutdown.await.expect("actor alive");
        let presence = log.held().presence.clone();
        (presence, [left, ended])
    }

    /// A subscriber that leaves stays in presence until the end of its subscription is
    /// applied (a node killed meanwhile has it announced by another), and leaves it then, or
    /// when the log refused that event (lost as any publish would be, not listed for ever).
    #[actix::test]
    async fn presence_is_told_of_a_leave_once_its_end_is_applied() {
        let (log, broadcaster, [(first, applied), (second, refused)]) =
            two_active_subscribers(["applied", "refused"]).await;

        // Act: leaves, their ends committed, then refused.
        drop(first);
        sync(&broadcaster).await;
        sync(&broadcaster).await;
        assert_eq!(log.waiting_topics(), [[applied.clone()]]);
        let joined = [format!("joined {applied}"), format!("joined {refused}")];
        assert_eq!(
            log.held().presence,
            joined,
            "not gone before its end is applied"
        );
        log.complete_oldest(Ok(()));
        sync(&broadcaster).await;
        drop(second);
        sync(&broadcaster).await;
        sync(&broadcaster).await;
        assert_eq!(log.waiting_topics(), [[refused.clone()]]);
        log.complete_oldest(Err(AppendError::Unavailable("Redis is away".to_owned())));
        sync(&broadcaster).await;

        // Assert
        assert_eq!(
            log.held().presence,
            [
                joined[0].clone(),
                joined[1].clone(),
                format!("left {applied}"),
                format!("left {refused}"),
            ]
        );
    }

    /// Every end applied: presence is told of each, then withdrawn (nothing left in it).
    #[actix::test]
    async fn a_shutdown_announces_every_end_then_withdraws_presence() {
        let (presence, [left, ended]) = shut_down_after_a_leave(Ok(())).await;
        assert_eq!(
            presence,
            [
                format!("joined {left}"),
                format!("joined {ended}"),
                format!("left {left}"),
                format!("left {ended}"),
                "withdrawn".to_owned(),
            ]
        );
    }

    /// An end the log did not take stays in presence when it is withdrawn: the other nodes
    /// announce it once the node's presence expires, rather than nobody.
    #[actix::test]
    async fn an_end_not_applied_at_shutdown_stays_in_presence() {
        let failed = Err(AppendError::Unavailable("Redis is away".to_owned()));
        let (presence, [left, ended]) = shut_down_after_a_leave(failed).await;
        assert_eq!(
            presence,
            [
                format!("joined {left}"),
                format!("joined {ended}"),
                format!("left {left}"),
                "withdrawn".to_owned(),
            ]
        );
    }

    /// One batch is appended at a time and what is published meanwhile goes in the next one
    /// (group commit); nothing reaches subscribers or the history before its batch is
    /// committed; a failed batch is answered with an error and never delivered.
    #[actix::test]
    async fn publishes_are_delivered_once_committed_in_group_commits() {
        let log = HeldLog::default();
        let broadcaster = Broadcaster::new(config(), Metrics::new(), Box::new(log.clone())).start();
        let mut subscription = subscribed(&broadcaster, subscribe(None)).await;
        let published: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|id| broadcaster.send(Publish(draft(id))))
            .collect();
        let mut commits = Vec::new();
        for reply in published {
            commits.push(reply.await.expect("actor alive"));
        }
        assert_eq!(
            log.waiting(),
            [["a"]],
            "one batch in flight; b and c wait for it"
        );
        broadcaster
            .send(GetStats::default())
            .await
            .expect("actor alive");
        let waker = noop_waker();
        assert!(
            subscription
                .receiver
                .poll_drain(&mut Context::from_waker(&waker), 1 << 20)
                .is_pending(),
            "nothing is delivered before it is committed"
        );

        log.complete_oldest(Ok(()));
        commits
            .remove(0)
            .await
            .expect("answered")
            .expect("a is published");
        let stats = broadcaster
            .send(GetStats::default())
            .await
            .expect("actor alive");
        assert_eq!(stats.history_len, 1);
        assert_eq!(
            String::from_utf8_lossy(&drain(&mut subscription.receiver)),
            "id: a\ndata: a\n\n"
        );
        assert_eq!(log.waiting(), [["b", "c"]], "b and c go together");

        log.complete_oldest(Err(AppendError::NotStored("disk full".to_owned())));
        for commit in commits {
            let answer = commit.await.expect("answered");
            assert!(matches!(answer, Err(HubError::NotStored)), "{answer:?}");
        }
        let stats = broadcaster
            .send(GetStats::default())
            .await
            .expect("actor alive");
        assert_eq!(stats.history_len, 1, "failed events are not in the history");
        let late = subscribed(&broadcaster, subscribe(Some("earliest"))).await;
        assert_eq!(
            String::from_utf8_lossy(&late.opening.concat()),
            ": connected\n\nid: a\ndata: a\n\n",
            "a failed event is not replayed either"
        );
    }
}

/// Live delivery (the topic index, then the private check) and replay (`wants`) are two code
/// paths for one rule; on random subscribers and events they must select the same subscribers.
#[cfg(test)]
mod delivery_properties {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// URL patterns with and without literal hosts and path starts, modifiers, groups and
    /// relative ones: the prefilter must find every one that matches.
    const URL_PATTERNS: [&str; 8] = [
        "https://example.com/books/:id",
        "https://example.com/books/*",
        "https://*.example.com/x/:y",
        "/rel/:a",
        "https://example.com/books/:id?",
        "https://example.com/:any/1",
        "https://example.com/b(o+)ks/1",
        "https://example.com/books/1",
    ];

    /// Selectors over a handful of topics, so that random ones overlap often.
    fn selector() -> impl Strategy<Value = Selector> {
        static CACHE: std::sync::LazyLock<crate::topic::SelectorCache> =
            std::sync::LazyLock::new(|| {
                crate::topic::SelectorCache::new(crate::topic::SelectorLimits::default())
            });
        prop::sample::select(
            [
                "*",
                "a",
                "b",
                "urn:x/1",
                "urn:x/{id}",
                "urn:{+rest}",
                "urn:x/{id}{?q}",
                "{+all}",
                "urn:y/{a}/{b}",
                "urn:x/",
                "https://example.com/books/{id}",
            ]
            .into_iter()
            .map(|text| (text, false))
            .chain(URL_PATTERNS.into_iter().map(|text| (text, true)))
            .collect::<Vec<_>>(),
        )
        .prop_map(|(text, url_pattern)| {
            if url_pattern {
                CACHE
                    .get_typed(crate::topic::MatcherType::UrlPattern, text)
                    .expect("valid URL pattern")
            } else {
                Selector::parse(text).expect("valid selector")
            }
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a",
            "b",
            "c",
            "urn:x/1",
            "urn:x/2",
            "urn:x/1?q=3",
            "urn:y/1/2",
            "urn:y/1",
            "urn:x/{id}",
            "https://example.com/books/1",
            "https://example.com/books/",
            "https://example.com/books",
            "https://example.com/boooks/1",
            "https://a.example.com/x/2",
            "https://localhost/rel/3",
            "/rel/4",
            "https://example.com/x/1",
            "https://example.com/books/1?q",
            "https://EXAMPLE.com/books/%31",
            "not a url",
        ])
        .prop_map(str::to_owned)
    }

    fn subscriber() -> impl Strategy<Value = (Vec<Selector>, Vec<Selector>)> {
        (
            prop::collection::vec(selector(), 0..4),
            prop::collection::vec(selector(), 0..3),
        )
    }

    fn event() -> impl Strategy<Value = Event> {
        (prop::collection::vec(topic(), 1..4), any::<bool>()).prop_map(|(topics, private)| {
            Event::new(
                "1".into(),
                EventDraft {
                    topics,
                    private,
                    data: "x".to_owned(),
                    ..EventDraft::default()
                },
            )
        })
    }

    proptest! {
        /// With subscribers joining and some leaving, the index plus `may_receive` finds
        /// exactly the subscribers `wants` selects, for every event.
        #[test]
        fn live_delivery_selects_whom_replay_selects(
            subscribers in prop::collection::vec(subscriber(), 0..12),
            leaving in prop::collection::vec(any::<bool>(), 12),
            events in prop::collection::vec(event(), 1..6),
        ) {
            let mut registry = Slab::new();
            let mut index = TopicIndex::default();
            for (selectors, private_selectors) in subscribers {
                let key = registry.insert(Subscriber {
                    sender: queue::queue(1).0,
                    selectors,
                    private_selectors,
                    stamp: 0,
                    active: None,
                });
                index.insert(key, &registry[key].selectors);
            }
            for (key, leaves) in leaving.into_iter().enumerate() {
                if leaves && registry.contains(key) {
                    let gone: Subscriber = registry.remove(key);
                    index.remove(key, &gone.selectors);
                }
            }

            for event in &events {
                let mut live = BTreeSet::new();
                let topics = parsed(event);
                index.for_each_candidate(&topics, |key| {
                    if let Some(subscriber) = registry.get(key)
                        && subscriber.may_receive(event, &topics)
                    {
                        live.insert(key);
                    }
                });
                let replay: BTreeSet<usize> = registry
                    .iter()
                    .filter(|(_, subscriber)| subscriber.wants(event))
                    .map(|(key, _)| key)
                    .collect();

                prop_assert_eq!(live, replay, "event topics {:?} private {}", event.topics, event.private);
            }
        }
    }
}
