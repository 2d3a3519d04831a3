//! Presence across nodes: each node keeps its active subscriptions in Redis, alive under a time
//! to live it renews, so that any node lists every node's, and the subscriptions of a node that
//! died end, announced once by a surviving node.
//!
//! Layout, under the key prefix: `PREFIX:nodes`, a sorted set of node ids (random per process)
//! scored by the time, in Redis's clock, until which each is alive; `PREFIX:presence:NODE`, a
//! hash from each subscription's topic to its shared form
//! ([`ActiveSubscription::to_shared`]).
//!
//! A node's presence task sends its changes as they come (batched: whatever queued while the
//! last script ran) and a heartbeat every third of the time to live, both through
//! `presence_beat.lua`, which also claims nodes past their time: `ZREM` succeeds for one
//! caller only, who gets their subscriptions and announces each one's end
//! ([`Tailed::Abandoned`]). A node that finds itself claimed (Redis was away longer than the
//! time to live) writes its subscriptions again. A node that shuts down announces its
//! subscriptions' end itself, then withdraws its presence ([`Change::Withdraw`]).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::Recipient;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};

use super::{COMMAND_TIMEOUT, Shared, connect, scripts};
use crate::{event_log::Tailed, metrics::RefusedReason, subscriptions::ActiveSubscription};

/// At most one log line per this long about refused presence entries.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A change to this node's subscriptions, on its way to Redis.
#[derive(Debug)]
pub(super) enum Change {
    Set {
        topic: String,
        shared: String,
    },
    Remove(String),
    /// The node shuts down: its presence is written one last time (removed if no subscription
    /// is left in it) and no longer kept alive; answered once Redis has it, or could not.
    Withdraw(oneshot::Sender<()>),
}

/// Keeps this node's presence in Redis for the life of the node, and hands the broadcaster
/// the subscriptions of dead nodes it claims.
pub(super) async fn run(
    shared: Shared,
    mut changes: mpsc::UnboundedReceiver<Change>,
    sink: Recipient<Tailed>,
) {
    let ttl = shared.presence_ttl;
    let mut beat = tokio::time::interval((ttl / 3).max(Duration::from_millis(10)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What Redis should hold, and what changed since it last took a change.
    let mut mirror: HashMap<String, String> = HashMap::new();
    let mut pending: Vec<Change> = Vec::new();
    // Write the hash whole: at first, and after anything that may have lost it.
    let mut rewrite = true;
    let mut connection: Option<MultiplexedConnection> = None;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(change) => pending.push(change),
                None => return,
            },
            _ = beat.tick() => {}
        }
        while let Ok(change) = changes.try_recv() {
            pending.push(change);
        }
        let withdrawn = pending
            .iter()
            .position(|change| matches!(change, Change::Withdraw(_)))
            .map(|at| pending.remove(at));
        for change in &pending {
            match change {
                Change::Set { topic, shared } => {
                    mirror.insert(topic.clone(), shared.clone());
                }
                Change::Remove(topic) => {
                    mirror.remove(topic);
                }
                Change::Withdraw(_) => {}
            }
        }
        if let Some(Change::Withdraw(done)) = withdrawn {
            withdraw(&shared, connection, &mirror, rewrite, &pending).await;
            let _ = done.send(());
            return;
        }
        if connection.is_none() {
            connection = connect(&shared, COMMAND_TIMEOUT).await.ok();
        }
        let Some(redis) = connection.as_mut() else {
            (rewrite, pending) = (true, Vec::new());
            continue;
        };
        let changes = if rewrite { None } else { Some(&pending[..]) };
        let reply = send_beat(&shared, redis, &mirror, changes, true).await;
        pending.clear();
        let (added, claimed) = match reply {
            Ok(reply) => reply,
            Err(()) => {
                (connection, rewrite) = (None, true);
                continue;
            }
        };
        if added == 1 && !std::mem::take(&mut rewrite) {
            log::warn!(
                "this node's presence had been taken for dead (Redis away longer than \
                 --presence-ttl {ttl:?}); writing its subscriptions again"
            );
            rewrite = true;
            beat.reset_immediately();
        }
        if !claimed.is_empty() {
            let subscriptions = decode(&shared, &claimed);
            if !subscriptions.is_empty()
                && sink.send(Tailed::Abandoned(subscriptions)).await.is_err()
            {
                return;
            }
        }
    }
}

/// One heartbeat: this node's `changes` since the last one (`None`: its hash is rewritten from
/// `mirror`), and, if `claim`, the claim of dead nodes. Returns whether the node was new to the
/// set of nodes, and the subscriptions claimed; `Err` when Redis failed (logged).
async fn send_beat(
    shared: &Shared,
    redis: &mut MultiplexedConnection,
    mirror: &HashMap<String, String>,
    changes: Option<&[Change]>,
    claim: bool,
) -> Result<(i64, Vec<String>), ()> {
    let ttl_ms = u64::try_from(shared.presence_ttl.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let flag = |on: bool| if on { "1" } else { "0" };
    let mut invocation = scripts::PRESENCE_BEAT.prepare_invoke();
    invocation
        .key(&shared.keys.nodes)
        .arg(&shared.keys.presence)
        .arg(&shared.node)
        .arg(ttl_ms)
        .arg(flag(changes.is_none()))
        .arg(flag(claim));
    match changes {
        None => {
            for (topic, shared) in mirror {
                invocation.arg("s").arg(topic).arg(shared);
            }
        }
        Some(changes) => {
            for change in changes {
                match change {
                    Change::Set { topic, shared } => invocation.arg("s").arg(topic).arg(shared),
                    Change::Remove(topic) => invocation.arg("d").arg(topic),
                    Change::Withdraw(_) => &mut invocation,
                };
            }
        }
    }
    let reply = tokio::time::timeout(
        COMMAND_TIMEOUT,
        invocation.invoke_async::<(i64, Vec<String>)>(redis),
    )
    .await;
    match reply {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(err)) => {
            log::warn!("presence heartbeat failed error={err}");
            Err(())
        }
        Err(_) => {
            log::warn!(
                "presence heartbeat failed: Redis did not answer within {COMMAND_TIMEOUT:?}"
            );
            Err(())
        }
    }
}

/// The node shuts down. It announced the end of its subscriptions itself and took them out of
/// `mirror`: with none left, its presence is removed. Those left (their end could not be
/// announced) are written one last time, without claiming anyone, and stay until the node's
/// presence expires; a surviving node then announces their end.
async fn withdraw(
    shared: &Shared,
    connection: Option<MultiplexedConnection>,
    mirror: &HashMap<String, String>,
    rewrite: bool,
    pending: &[Change],
) {
    let connection = match connection {
        Some(connection) => Some(connection),
        None => connect(shared, COMMAND_TIMEOUT).await.ok(),
    };
    let Some(mut connection) = connection else {
        log::warn!(
            "cannot withdraw this node's presence: Redis is unreachable; the other nodes \
             announce its subscriptions' end once it expires"
        );
        return;
    };
    if !mirror.is_empty() {
        log::warn!(
            "leaving {} subscriptions in this node's presence for a surviving node to announce \
             their end within --presence-ttl {:?}",
            mirror.len(),
            shared.presence_ttl
        );
        let changes = if rewrite { None } else { Some(pending) };
        let _ = send_beat(shared, &mut connection, mirror, changes, false).await;
        return;
    }
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZREM")
        .arg(&shared.keys.nodes)
        .arg(&shared.node)
        .ignore()
        .cmd("DEL")
        .arg(format!("{}{}", shared.keys.presence, shared.node))
        .ignore();
    match tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut connection)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => log::warn!("cannot remove this node's presence error={err}"),
        Err(_) => log::warn!("cannot remove this node's presence: Redis did not answer"),
    }
}

/// The subscriptions of the other live nodes.
pub(super) async fn list(
    shared: &Shared,
    connection: &mut MultiplexedConnection,
) -> Result<Vec<ActiveSubscription>, String> {
    let mut invocation = scripts::PRESENCE_LIST.prepare_invoke();
    invocation
        .key(&shared.keys.nodes)
        .arg(&shared.keys.presence)
        .arg(&shared.node);
    let found = tokio::time::timeout(
        COMMAND_TIMEOUT,
        invocation.invoke_async::<Vec<String>>(connection),
    )
    .await
    .map_err(|_| format!("Redis did not answer within {COMMAND_TIMEOUT:?}"))?
    .map_err(|err| err.to_string())?;
    Ok(decode(shared, &found))
}

/// Reads subscriptions in their shared form (untrusted: they come from Redis). One that is not
/// is skipped, counted (`sse_hub_log_entries_refused_total{reason="presence"}`) and logged at
/// most once per [`REFUSAL_LOG_INTERVAL`].
fn decode(shared: &Shared, found: &[String]) -> Vec<ActiveSubscription> {
    static LOGGED: Mutex<Option<Instant>> = Mutex::new(None);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    found
        .iter()
        .filter_map(|text| match ActiveSubscription::from_shared(text) {
            Ok(subscription) => Some(subscription),
            Err(reason) => {
                shared
                    .metrics
                    .log_entries_refused
                    .get_or_create(&RefusedReason { reason: "presence" })
                    .inc();
                let count = UNLOGGED.fetch_add(1, Ordering::Relaxed) + 1;
                let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
                if logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    log::warn!("presence entries refused count={count} reason={reason}");
                    *logged = Some(Instant::now());
                    UNLOGGED.store(0, Ordering::Relaxed);
                }
                None
            }
        })
        .collect()
}
