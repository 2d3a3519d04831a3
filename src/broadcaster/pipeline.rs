//! The one pipeline from publish to subscribers, on every event log: publications go to the
//! log in batches, one batch in flight at a time (group commit: what is published meanwhile
//! goes in the next), and are answered once this node has applied their events, which come
//! back through the log's tail in log order. A resuming subscriber whose id the log holds but
//! this node has not applied yet waits for it; a log that lost events ends the streams so
//! subscribers resume and learn of it.

use std::{collections::BTreeMap, sync::Arc};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot::{self, error::TryRecvError};

use super::{Broadcaster, Published, Subscribe, Subscribed, Subscription};
use crate::{
    error::HubError,
    event::EventDraft,
    event_log::{AppendError, Appended, Placed, Position, TailEntry, Tailed},
    metrics,
};

/// The `retry:` a stream ends with when the log lost events: reconnections are spread over
/// this range (milliseconds) so the nodes are not hit by every subscriber at once.
const LOST_RETRY_MS: std::ops::RangeInclusive<u64> = 1_000..=5_000;

type Answer = oneshot::Sender<Result<Arc<str>, HubError>>;

/// A publisher waiting for its event to be applied, with the event's id.
#[derive(Debug)]
struct Waiter {
    id: Arc<str>,
    done: Answer,
}

/// A subscriber waiting for this node to apply the event it resumes from.
#[derive(Debug)]
struct Parked {
    serial: u64,
    position: Position,
    msg: Subscribe,
    done: oneshot::Sender<Result<Subscription, HubError>>,
}

/// What is in flight between the broadcaster and its log.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    /// Publications not yet sent to the log (their publishers' own ids and answers), and
    /// whether a batch is being appended: one at a time.
    staged: Vec<(EventDraft, Answer)>,
    appending: bool,
    /// Appended and not yet applied, by position.
    awaiting: BTreeMap<Position, Waiter>,
    /// Appended before the log lost events: answered when their event is applied, or once the
    /// tail has caught up without finding it (the log acknowledged them, so they count as
    /// published; subscribers learn of the loss through `reset`).
    uncertain: BTreeMap<Position, Waiter>,
    /// The position of the last event applied.
    applied: Option<Position>,
    /// Whether the log's snapshot was applied: until then the history is empty, and a
    /// look-up may not be answerable yet (no connection), so no resume id can be said unknown.
    snapshot_applied: bool,
    parked: Vec<Parked>,
    next_serial: u64,
}

impl Pipeline {
    /// Whether the log's snapshot was applied (see `snapshot_applied`).
    pub(super) fn has_read_the_log(&self) -> bool {
        self.snapshot_applied
    }

    fn has_applied(&self, position: Position) -> bool {
        self.applied.is_some_and(|applied| applied >= position)
    }
}

impl Broadcaster {
    /// Queues a publication for the log; the answer comes once its event is applied.
    pub(super) fn publish(&mut self, draft: EventDraft, ctx: &mut Context<Self>) -> Published {
        let (done, answer) = oneshot::channel();
        self.pipeline.staged.push((draft, done));
        self.append_staged(ctx);
        answer
    }

    /// Sends the staged publications to the log as one batch, unless one is on its way.
    fn append_staged(&mut self, ctx: &mut Context<Self>) {
        let pipeline = &mut self.pipeline;
        if pipeline.appending || pipeline.staged.is_empty() {
            return;
        }
        let (drafts, answers): (Vec<_>, Vec<_>) = std::mem::take(&mut pipeline.staged)
            .into_iter()
            .map(|(draft, done)| {
                let id = draft.id.clone();
                (draft, (id, done))
            })
            .unzip();
        pipeline.appending = true;
        let mut appending = self.log.append(drafts);
        // A log that commits at once (memory) has answered already.
        match appending.try_recv() {
            Ok(result) => self.appended(result, answers, ctx),
            Err(TryRecvError::Closed) => self.appended(Err(stopped()), answers, ctx),
            Err(TryRecvError::Empty) => {
                ctx.spawn(
                    fut::wrap_future(appending).map(move |result, this: &mut Self, ctx| {
                        this.appended(result.unwrap_or_else(|_| Err(stopped())), answers, ctx);
                    }),
                );
            }
        }
    }

    /// The log took the batch (or did not): refused publications are answered now, the others
    /// once this node has applied their events.
    fn appended(
        &mut self,
        result: Appended,
        answers: Vec<(Option<String>, Answer)>,
        ctx: &mut Context<Self>,
    ) {
        let pipeline = &mut self.pipeline;
        pipeline.appending = false;
        match result {
            Err(err) => {
                match &err {
                    // Said by the log when it starts refusing or failing, at a bounded rate,
                    // not per batch.
                    AppendError::Refusing(_)
                    | AppendError::NotStored(_)
                    | AppendError::NotReplicated { .. } => log::debug!(
                        "publish refused: the event log refuses writes events={} error={err}",
                        answers.len()
                    ),
                    AppendError::Unavailable(_) | AppendError::Unreadable(_) => log::error!(
                        "publish failed: the event log did not append events={} error={err}",
                        answers.len()
                    ),
                }
                for (_, done) in answers {
                    let _ = done.send(Err(HubError::from(&err)));
                }
            }
            Ok(placed) => {
                for ((own_id, done), placed) in answers.into_iter().zip(placed) {
                    let Some(Placed { position, id }) = placed else {
                        let _ = done.send(Err(HubError::DuplicateId(own_id.unwrap_or_default())));
                        continue;
                    };
                    if pipeline.has_applied(position) {
                        let _ = done.send(Ok(id));
                    } else {
                        pipeline.awaiting.insert(position, Waiter { id, done });
                    }
                }
            }
        }
        self.append_staged(ctx);
    }

    /// Applies events the tail read, in order, then answers whoever waited for them.
    fn apply_entries(&mut self, entries: Vec<TailEntry>, ctx: &mut Context<Self>) {
        for TailEntry { position, event } in entries {
            self.apply(event, ctx);
            self.pipeline.applied = Some(position);
            // Positions of a log that was replaced do not compare with the new one's: only
            // the very position answers its publisher.
            if let Some(Waiter { id, done }) = self.pipeline.uncertain.remove(&position) {
                let _ = done.send(Ok(id));
            }
        }
        self.answer_applied(ctx);
    }

    /// Answers the publishers and registers the subscribers whose events are applied now.
    fn answer_applied(&mut self, ctx: &mut Context<Self>) {
        let pipeline = &mut self.pipeline;
        let Some(applied) = pipeline.applied else {
            return;
        };
        let later = pipeline.awaiting.split_off(&applied.next());
        for (_, Waiter { id, done }) in std::mem::replace(&mut pipeline.awaiting, later) {
            let _ = done.send(Ok(id));
        }
        if pipeline.parked.is_empty() {
            return;
        }
        self.register_parked(|parked| parked.position <= applied, ctx);
    }

    /// Registers the parked subscribers `ready` says can be answered now.
    fn register_parked(&mut self, ready: impl Fn(&Parked) -> bool, ctx: &mut Context<Self>) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pipeline.parked)
            .into_iter()
            .partition(ready);
        self.pipeline.parked = waiting;
        for parked in ready {
            let _ = parked.done.send(self.register(parked.msg, ctx));
        }
    }

    /// The log lost events this node never applied: the history no longer matches it, so it
    /// is emptied, and every stream ends with a jittered `retry:`; subscribers reconnect with
    /// their last id and are told `reset`.
    fn lost(&mut self, reason: &str, ctx: &mut Context<Self>) {
        self.metrics.log_losses.inc();
        let count = self.end_streams(|| {
            let retry = fastrand::u64(LOST_RETRY_MS);
            Some(Bytes::from(format!("retry: {retry}\n\n")))
        });
        log::warn!("streams ended, the event log lost events subscribers={count} reason={reason}");
        self.replace_history(Vec::new());
        let pipeline = &mut self.pipeline;
        pipeline.applied = None;
        let awaiting = std::mem::take(&mut pipeline.awaiting);
        pipeline.uncertain.extend(awaiting);
        // Those resuming now find nothing to wait for.
        for parked in std::mem::take(&mut self.pipeline.parked) {
            let _ = parked.done.send(self.register(parked.msg, ctx));
        }
    }

    /// Replaces the history with `entries` (oldest first), without fanning them out.
    fn replace_history(&mut self, entries: Vec<TailEntry>) {
        self.history = self.config.retention.history();
        for TailEntry { event, .. } in entries {
            self.history.append(event);
        }
        metrics::set_gauge(&self.metrics.history_events, self.history.len());
        metrics::set_gauge(&self.metrics.history_bytes, self.history.size_bytes());
    }

    /// The tail has read everything there was: publishers appended before a loss whose events
    /// were not found are answered with their id all the same. The log acknowledged the
    /// append, so the event was published and then lost with the log; a publisher told to
    /// retry would publish it twice if it was not lost after all. Subscribers learn of the
    /// loss through `reset`.
    fn caught_up(&mut self) {
        if self.pipeline.uncertain.is_empty() {
            return;
        }
        for (position, Waiter { id, done }) in std::mem::take(&mut self.pipeline.uncertain) {
            log::warn!("answered a publish whose event the log lost position={position} id={id}");
            let _ = done.send(Ok(id));
        }
    }

    /// Registers `msg`, which resumes from an id the history does not hold, or from anywhere
    /// before this node read the log: once this node has read the log and applied the id, if
    /// the log holds it, or after `--resume-wait`; at once otherwise.
    pub(super) fn locate_then_register(
        &mut self,
        msg: Subscribe,
        ctx: &mut Context<Self>,
    ) -> Result<Subscribed, HubError> {
        if !self.pipeline.snapshot_applied {
            // A node that has not read the log yet (it is starting): wait for its snapshot,
            // then answer from the history. Parked at the log's first position, it is
            // registered as soon as the snapshot is applied.
            let (done, answer) = oneshot::channel();
            self.park(Position::default(), msg, done, ctx);
            return Ok(Subscribed::Later(answer));
        }
        let id = msg.last_event_id.as_deref().unwrap_or_default();
        let mut located = self.log.locate(id);
        // A local log knows at once.
        let found = match located.try_recv() {
            Ok(found) => found,
            Err(TryRecvError::Closed) => None,
            Err(TryRecvError::Empty) => {
                let (done, answer) = oneshot::channel();
                ctx.spawn(
                    fut::wrap_future(located).map(move |found, this: &mut Self, ctx| {
                        match found.ok().flatten() {
                            Some(position) if !this.pipeline.has_applied(position) => {
                                this.park(position, msg, done, ctx);
                            }
                            _ => {
                                let _ = done.send(this.register(msg, ctx));
                            }
                        }
                    }),
                );
                return Ok(Subscribed::Later(answer));
            }
        };
        match found {
            Some(position) if !self.pipeline.has_applied(position) => {
                let (done, answer) = oneshot::channel();
                self.park(position, msg, done, ctx);
                Ok(Subscribed::Later(answer))
            }
            _ => self.register(msg, ctx).map(Subscribed::Now),
        }
    }

    fn park(
        &mut self,
        position: Position,
        msg: Subscribe,
        done: oneshot::Sender<Result<Subscription, HubError>>,
        ctx: &mut Context<Self>,
    ) {
        let pipeline = &mut self.pipeline;
        let serial = pipeline.next_serial;
        pipeline.next_serial += 1;
        pipeline.parked.push(Parked {
            serial,
            position,
            msg,
            done,
        });
        let wait = self.config.resume_wait;
        ctx.run_later(wait, move |this, ctx| {
            let parked = &mut this.pipeline.parked;
            if let Some(at) = parked.iter().position(|p| p.serial == serial) {
                let parked = parked.swap_remove(at);
                log::warn!(
                    "resuming subscriber waited {wait:?} for position {} in vain",
                    parked.position
                );
                let _ = parked.done.send(this.register(parked.msg, ctx));
            }
        });
    }
}

/// The answer to an append whose log is gone (its thread ended).
fn stopped() -> AppendError {
    AppendError::Unavailable("the event log has stopped".to_owned())
}

impl Handler<Tailed> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Tailed, ctx: &mut Self::Context) {
        match msg {
            Tailed::Snapshot(entries) => {
                // What the log held before this node read it: history, not news.
                self.fan_out_pending();
                let last = entries.last().map(|e| e.position);
                self.replace_history(entries);
                self.pipeline.applied = last;
                self.pipeline.snapshot_applied = true;
                self.answer_applied(ctx);
                if last.is_none() {
                    // An empty log: what waited for the snapshot is answered from the
                    // (empty) history.
                    self.register_parked(|_| true, ctx);
                }
            }
            Tailed::Entries { entries, caught_up } => {
                self.apply_entries(entries, ctx);
                if caught_up {
                    self.caught_up();
                }
            }
            Tailed::Lost { reason } => self.lost(&reason, ctx),
            Tailed::Abandoned(subscriptions) => {
                log::info!(
                    "announcing the end of a dead node's subscriptions subscriptions={}",
                    subscriptions.len()
                );
                self.announce_ends(subscriptions, false, ctx);
            }
        }
    }
}
