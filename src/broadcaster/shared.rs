//! The broadcaster's side of a log shared with other nodes (Redis): publishes go to the log in
//! batches and are answered once this node has read them back; entries read from the log are
//! applied in log order; a lost log ends the streams so subscribers resume and learn of it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::{Broadcaster, Subscribe, Subscription};
use crate::{
    error::HubError,
    event::EventDraft,
    event_log::redis::{AppendError, Appended, EntryId, RedisLog, TailEntry, Tailed},
    metrics,
};

/// How long a subscriber resuming from an id another node published waits for this node to
/// read it. The tail is usually milliseconds behind; past this it is told `reset`.
const RESUME_WAIT: Duration = Duration::from_secs(3);

/// The `retry:` a stream ends with when the log lost events: reconnections are spread over
/// this range (milliseconds) so the nodes are not hit by every subscriber at once.
const LOST_RETRY_MS: std::ops::RangeInclusive<u64> = 1_000..=5_000;

type Answer = oneshot::Sender<Result<Arc<str>, HubError>>;

/// A publisher waiting for its entry to be read back, with its event's id.
#[derive(Debug)]
struct Waiter {
    id: Arc<str>,
    done: Answer,
}

/// A subscriber waiting for this node to read the entry it resumes from.
#[derive(Debug)]
struct Parked {
    serial: u64,
    entry: EntryId,
    msg: Subscribe,
    done: oneshot::Sender<Result<Subscription, HubError>>,
}

/// The shared log and what is in flight on it.
#[derive(Debug)]
pub(super) struct SharedLog {
    pub(super) log: RedisLog,
    /// Publishes not yet sent to Redis (their publishers' ids and answers), and the batch Redis
    /// is appending: one batch in flight, as with the file store.
    staged: Vec<(EventDraft, Answer)>,
    appending: bool,
    /// Appended and not yet read back, by entry.
    awaiting: BTreeMap<EntryId, Waiter>,
    /// Appended before the log lost entries: answered when their entry is read back, or once
    /// the tail has caught up without finding it (Redis acknowledged them, so they count as
    /// published; subscribers learn of the loss through `reset`).
    uncertain: BTreeMap<EntryId, Waiter>,
    /// The last entry applied.
    applied: Option<EntryId>,
    parked: Vec<Parked>,
    next_serial: u64,
}

impl SharedLog {
    pub(super) fn new(log: RedisLog) -> Self {
        Self {
            log,
            staged: Vec::new(),
            appending: false,
            awaiting: BTreeMap::new(),
            uncertain: BTreeMap::new(),
            applied: None,
            parked: Vec::new(),
            next_serial: 0,
        }
    }

    fn has_applied(&self, entry: EntryId) -> bool {
        self.applied.is_some_and(|applied| applied >= entry)
    }
}

impl Broadcaster {
    fn shared(&mut self) -> &mut SharedLog {
        self.shared
            .as_mut()
            .expect("only called on a broadcaster with a shared log")
    }

    /// Queues a publish for the shared log; the answer comes once it is read back.
    pub(super) fn stage_shared(
        &mut self,
        draft: EventDraft,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<Arc<str>, HubError>> {
        let (done, answer) = oneshot::channel();
        self.shared().staged.push((draft, done));
        self.append_staged(ctx);
        answer
    }

    /// Sends the staged publishes to Redis as one batch, unless one is on its way.
    fn append_staged(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared();
        if shared.appending || shared.staged.is_empty() {
            return;
        }
        let (drafts, answers): (Vec<_>, Vec<_>) = std::mem::take(&mut shared.staged)
            .into_iter()
            .map(|(draft, done)| {
                let id = draft.id.clone();
                (draft, (id, done))
            })
            .unzip();
        shared.appending = true;
        let appended = shared.log.append(drafts);
        ctx.spawn(
            fut::wrap_future(appended).map(move |result, this: &mut Self, ctx| {
                let result = result.unwrap_or_else(|_| {
                    Err(AppendError::Unavailable(
                        "the Redis client has stopped".to_owned(),
                    ))
                });
                this.appended(result, answers, ctx);
            }),
        );
    }

    /// Redis took the batch (or did not): refused publishes are answered now, the others once
    /// this node reads them back.
    fn appended(
        &mut self,
        result: Appended,
        answers: Vec<(Option<String>, Answer)>,
        ctx: &mut Context<Self>,
    ) {
        let shared = self.shared();
        shared.appending = false;
        match result {
            Err(err) => {
                if let AppendError::Refusing(_) = err {
                    // Said once by the Redis thread when it starts refusing, not per batch.
                    log::debug!(
                        "publish refused: Redis refuses writes events={}",
                        answers.len()
                    );
                } else {
                    log::error!(
                        "publish failed: Redis did not append events={} error={err}",
                        answers.len()
                    );
                }
                let refused = || match &err {
                    AppendError::Unavailable(_) => HubError::LogUnavailable,
                    AppendError::Refusing(reason) => HubError::LogRefusing((*reason).to_owned()),
                    // Redis ran the append, so a retry could publish twice: not a 503 (which
                    // says "try again"), but a 500; the log says what Redis answered.
                    AppendError::Unreadable(_) => HubError::Internal,
                };
                for (_, done) in answers {
                    let _ = done.send(Err(refused()));
                }
            }
            Ok(entries) => {
                for ((own_id, done), entry) in answers.into_iter().zip(entries) {
                    let Some(entry) = entry else {
                        let id = own_id.unwrap_or_default();
                        let _ = done.send(Err(HubError::DuplicateId(id)));
                        continue;
                    };
                    let id: Arc<str> = own_id.map_or_else(|| entry.to_string().into(), Into::into);
                    if shared.has_applied(entry) {
                        let _ = done.send(Ok(id));
                    } else {
                        shared.awaiting.insert(entry, Waiter { id, done });
                    }
                }
            }
        }
        self.append_staged(ctx);
    }

    /// Applies entries read from the log, in order, then answers whoever waited for them.
    fn apply_entries(&mut self, entries: Vec<TailEntry>, ctx: &mut Context<Self>) {
        for TailEntry { entry, event } in entries {
            self.apply(event, ctx);
            let shared = self.shared();
            shared.applied = Some(entry);
            // Entry ids of a log that was replaced do not compare with the new one's: only
            // the very entry answers its publisher.
            if let Some(Waiter { id, done }) = shared.uncertain.remove(&entry) {
                let _ = done.send(Ok(id));
            }
        }
        self.answer_read_back(ctx);
    }

    /// Answers the publishers and resumes the subscribers whose entries are applied now.
    fn answer_read_back(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared();
        let Some(applied) = shared.applied else {
            return;
        };
        let later = shared.awaiting.split_off(&EntryId {
            ms: applied.ms,
            seq: applied.seq.saturating_add(1),
        });
        for (_, Waiter { id, done }) in std::mem::replace(&mut shared.awaiting, later) {
            let _ = done.send(Ok(id));
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut shared.parked)
            .into_iter()
            .partition(|parked| parked.entry <= applied);
        shared.parked = waiting;
        for parked in ready {
            let _ = parked.done.send(self.register(parked.msg, ctx));
        }
    }

    /// The log lost entries this node never applied: the history no longer matches it, so it
    /// is emptied, and every stream ends with a jittered `retry:`; subscribers reconnect with
    /// their last id and are told `reset`.
    fn lost(&mut self, reason: &str, ctx: &mut Context<Self>) {
        self.metrics.log_losses.inc();
        let count = self.end_streams(|| {
            let retry = fastrand::u64(LOST_RETRY_MS);
            Some(Bytes::from(format!("retry: {retry}\n\n")))
        });
        log::warn!("streams ended, the shared log lost events subscribers={count} reason={reason}");
        self.replace_history(Vec::new());
        let shared = self.shared();
        shared.applied = None;
        let awaiting = std::mem::take(&mut shared.awaiting);
        shared.uncertain.extend(awaiting);
        // Those resuming now find nothing to wait for.
        for parked in std::mem::take(&mut shared.parked) {
            let _ = parked.done.send(self.register(parked.msg, ctx));
        }
    }

    /// Replaces the history with `entries` (oldest first), without fanning them out.
    fn replace_history(&mut self, entries: Vec<TailEntry>) {
        self.history = self.config.history();
        for TailEntry { event, .. } in entries {
            self.history.append(event);
        }
        metrics::set_gauge(&self.metrics.history_events, self.history.len());
        metrics::set_gauge(&self.metrics.history_bytes, self.history.size_bytes());
    }

    /// The tail has read everything there was: publishers appended before a loss whose entries
    /// were not found are answered with their id all the same. Redis acknowledged the append,
    /// so the event was published and then lost with the log; a publisher told to retry would
    /// publish it twice if it was not lost after all. Subscribers learn of the loss through
    /// `reset`.
    fn caught_up(&mut self) {
        for (entry, Waiter { id, done }) in std::mem::take(&mut self.shared().uncertain) {
            log::warn!("answered a publish whose entry the log lost entry={entry} id={id}");
            let _ = done.send(Ok(id));
        }
    }

    /// Registers `msg` once this node has read the entry it resumes from (if Redis knows it
    /// and this node has not read it yet), or after [`RESUME_WAIT`]; at once otherwise.
    pub(super) fn locate_then_register(
        &mut self,
        msg: Subscribe,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<Subscription, HubError>> {
        let (done, answer) = oneshot::channel();
        let id = msg.last_event_id.clone().unwrap_or_default();
        let located = self.shared().log.locate(id);
        ctx.spawn(
            fut::wrap_future(located).map(move |found, this: &mut Self, ctx| {
                let entry = found.ok().flatten();
                match entry {
                    Some(entry) if !this.shared().has_applied(entry) => {
                        this.park(entry, msg, done, ctx);
                    }
                    _ => {
                        let _ = done.send(this.register(msg, ctx));
                    }
                }
            }),
        );
        answer
    }

    fn park(
        &mut self,
        entry: EntryId,
        msg: Subscribe,
        done: oneshot::Sender<Result<Subscription, HubError>>,
        ctx: &mut Context<Self>,
    ) {
        let shared = self.shared();
        let serial = shared.next_serial;
        shared.next_serial += 1;
        shared.parked.push(Parked {
            serial,
            entry,
            msg,
            done,
        });
        ctx.run_later(RESUME_WAIT, move |this, ctx| {
            let shared = this.shared();
            if let Some(at) = shared.parked.iter().position(|p| p.serial == serial) {
                let parked = shared.parked.swap_remove(at);
                log::warn!(
                    "resuming subscriber waited {RESUME_WAIT:?} for entry {} in vain",
                    parked.entry
                );
                let _ = parked.done.send(this.register(parked.msg, ctx));
            }
        });
    }
}

impl Handler<Tailed> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Tailed, ctx: &mut Self::Context) {
        match msg {
            Tailed::Snapshot(entries) => {
                // What the log held before this node read it: history, not news.
                self.fan_out_pending();
                let last = entries.last().map(|e| e.entry);
                self.replace_history(entries);
                self.shared().applied = last;
                self.answer_read_back(ctx);
            }
            Tailed::Entries { entries, caught_up } => {
                self.apply_entries(entries, ctx);
                if caught_up {
                    self.caught_up();
                }
            }
            Tailed::Lost { reason } => self.lost(&reason, ctx),
        }
    }
}
