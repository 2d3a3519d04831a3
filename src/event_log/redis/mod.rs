//! The `redis://` backend: one Redis stream that every node shares. Publishes append to it
//! through a Lua script; every node tails it and hands the broadcaster what it read, in stream
//! order, noticing when entries were lost on the way.
//!
//! Layout, under the key prefix (`--redis-prefix`, `sse-hub` by default):
//! - `PREFIX:log`, a stream of every event (all topics), trimmed with `XADD … MAXLEN ~
//!   <history-size>`. Entry fields: `e` the log's epoch, `p` the id of the entry before it
//!   (empty for the first), `i` the publisher's own id (empty: the SSE id is the entry id),
//!   `d` the event as JSON (topics, data, type, retry, private).
//! - `PREFIX:meta`, a hash: `epoch` (a random tag made by the first append to an empty log)
//!   and `last` (the newest entry id).
//! - `PREFIX:ids`, a hash from publisher ids to the entry of their earliest retained copy, and
//!   `PREFIX:idq`, a list of every copy (`<entry> <id>`) in log order: an id stays taken while
//!   any copy of it is retained, checked in the script so that two nodes racing one id give
//!   one success and one conflict. A Mercure id may repeat: `PREFIX:idn` links each copy's
//!   entry to the next copy's and `PREFIX:idl` names the latest, so when the trim lets the
//!   earliest copy go, `ids` moves on to the next one (a resume from that id on any node
//!   starts after it, as on one node; `/publish` still answers `409`).
//!
//! Two connections per node. The tail has its own, as `XREAD BLOCK` would stall every other
//! command on a shared one, with a response timeout above the block time, and its own reconnect
//! loop (jittered backoff, 100 ms to 5 s); it is what decides whether the log is reachable.
//! Appends and look-ups share a multiplexed connection, made again after each of the tail's
//! reconnections or a failed command. While the tail cannot reach Redis they are refused at
//! once, without a round trip; a command that fails is answered with an error and never
//! retried, so a publish is never applied twice. (redis-rs' `ConnectionManager` was tried: it
//! gives up reconnecting after its retries and then fails the first publish after Redis is
//! back, seconds after the tail is reading again.)
//!
//! Loss detection: the tail knows the epoch and the last entry it applied. An entry with
//! another epoch or another predecessor, or a log whose epoch changed or vanished while idle,
//! means entries this node never read are gone (Redis flushed or restarted empty, or this node
//! fell behind the trim). It then says so ([`Tailed::Lost`]) and reads the log again from its
//! oldest entry.
//!
//! What the tail reads is untrusted input, parsed once here ([`decode`]) with the publication
//! rule set a publish gets ([`Publication::parse`]). An entry without the hub's `e` and `p`
//! fields is foreign: skipped, and no part of the log's order. An entry with them whose event
//! breaks the rules takes its place in the order but is not delivered. Either is counted
//! (`sse_hub_log_entries_refused_total{reason}`) and logged at most once per
//! [`REFUSAL_LOG_INTERVAL`]; neither is a reason to say the log lost entries.
//!
//! Reachable (the tail reads) and accepting writes are two facts. A write Redis refuses (`OOM`
//! under `maxmemory` with `noeviction`, `READONLY` on a replica, ...) makes the node unready
//! with that reason; a cheap probe write every [`PROBE_INTERVAL`], or any append that
//! succeeds, makes it ready again. Publishes are never short-circuited for it: each still asks
//! Redis.
//!
//! Its rooms: [`tail`] (following the stream, loss detection, decoding what it reads) and
//! [`scripts`] (the Lua scripts, in `append.lua` and `locate.lua`).

mod endpoint;
mod presence;
mod scripts;
mod tail;

pub use endpoint::SENTINEL_SCHEME;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use actix::Recipient;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendError, Appending, EventLog, Locating, OthersPresent, Placed, Position, Presence,
    Readiness, Retention, StoreError, Tailed,
};
use crate::{
    event::{EventDraft, Limits},
    metrics::Metrics,
    subscriptions::ActiveSubscription,
};

/// What `/readyz` says while the tail cannot reach Redis.
const UNREACHABLE: &str =
    "the event log (Redis) is unreachable; publishes are refused until it is back";
/// While Redis refuses writes, a probe write this often tells when it accepts them again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe's key lives (it is only there to be written).
const PROBE_TTL_MS: u64 = 1000;
/// At most one log line per this long about appends that were not replicated as asked.
const NOT_REPLICATED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// An append or look-up that takes longer is answered as failed (Redis away or overloaded).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A stream entry id, `<milliseconds>-<sequence>`, as the position it names (ordered as Redis
/// orders them).
pub fn parse_entry_id(text: &str) -> Option<Position> {
    let (ms, seq) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some(Position {
        major: ms.parse().ok()?,
        minor: seq.parse().ok()?,
    })
}

/// An event as stored in an entry's `d` field.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "t")]
    topics: Vec<String>,
    #[serde(rename = "d")]
    data: String,
    #[serde(rename = "y", default, skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    retry_ms: Option<u64>,
    #[serde(rename = "v", default, skip_serializing_if = "std::ops::Not::not")]
    private: bool,
}

#[derive(Debug)]
enum Job {
    Append {
        drafts: Vec<EventDraft>,
        done: oneshot::Sender<super::Appended>,
    },
    Locate {
        id: String,
        done: oneshot::Sender<Option<Position>>,
    },
    Tail(Recipient<Tailed>),
    /// The other nodes' subscriptions (presence).
    Present(oneshot::Sender<Result<Vec<ActiveSubscription>, String>>),
}

/// The handle the broadcaster holds. The Redis work runs on a thread of its own (a tokio
/// runtime with the append, look-up and tail tasks); dropping the handle ends it.
#[derive(Debug)]
pub struct RedisLog {
    jobs: mpsc::UnboundedSender<Job>,
    ready: Readiness,
    /// This node's subscription changes, to its presence task; `None` without active
    /// subscriptions (`--subscriptions` off).
    presence: Option<mpsc::UnboundedSender<presence::Change>>,
}

/// What the tasks share.
#[derive(Clone)]
struct Shared {
    /// Where Redis is: one address, or the primary Sentinel names.
    endpoint: Arc<endpoint::Endpoint>,
    keys: Keys,
    max_len: usize,
    ready: Readiness,
    /// The rule set entries read back are held to.
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Whether Redis is reachable and whether it takes writes: `/readyz` is both.
    health: Arc<Mutex<Health>>,
    /// Bumped by the tail on each (re)connection: the command connection is made again then.
    connections: Arc<AtomicU64>,
    /// `--redis-replicas` and `--redis-replica-timeout`.
    replicas: usize,
    replica_timeout: Duration,
    /// When an append that was not replicated was last logged, and how many since.
    not_replicated_log: Arc<Mutex<(Option<Instant>, u64)>>,
    /// This node's id in presence (random per process), and `--presence-ttl`.
    node: String,
    presence_ttl: Duration,
}

#[derive(Debug, Clone)]
struct Keys {
    log: String,
    meta: String,
    ids: String,
    idq: String,
    idn: String,
    idl: String,
    /// Written by the probe while Redis refuses writes.
    probe: String,
    /// Presence: the live nodes, and the prefix of each one's hash of subscriptions.
    nodes: String,
    presence: String,
}

/// The two facts `/readyz` adds up; only the Redis thread changes them.
#[derive(Debug, Default)]
struct Health {
    /// The tail reads the log.
    reachable: bool,
    /// Why Redis refuses writes, while it does.
    refusing: Option<&'static str>,
    /// A probe is running.
    probing: bool,
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells `/readyz` what the two facts add up to.
    fn show_health(&self, health: &Health) {
        match (health.reachable, health.refusing) {
            (false, _) => {
                self.ready.set_unready(UNREACHABLE);
            }
            (true, Some(reason)) => {
                self.ready.set_unready(reason);
            }
            (true, None) => {
                self.ready.set_ready();
            }
        }
    }

    fn set_reachable(&self, reachable: bool) -> bool {
        let mut health = self.health();
        let changed = health.reachable != reachable;
        health.reachable = reachable;
        self.show_health(&health);
        changed
    }

    /// Redis refused a write for `reason`: unready, and a probe watches for its end.
    fn refusing(&self, reason: &'static str) {
        let mut health = self.health();
        if health.refusing.is_none() {
            log::error!("Redis refuses writes; publishes are refused reason={reason}");
        }
        health.refusing = Some(reason);
        self.show_health(&health);
        if !health.probing {
            health.probing = true;
            tokio::spawn(probe(self.clone()));
        }
    }

    /// An append was not replicated as asked: counted, and logged at most once per
    /// [`NOT_REPLICATED_LOG_INTERVAL`].
    fn not_replicated(&self, wanted: usize, acknowledged: usize) {
        self.metrics.log_appends_not_replicated.inc();
        let mut log = self
            .not_replicated_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        log.1 += 1;
        if log
            .0
            .is_none_or(|at| at.elapsed() >= NOT_REPLICATED_LOG_INTERVAL)
        {
            log::warn!(
                "publishes answered 503: fewer replicas than asked acknowledged them \
                 wanted={wanted} acknowledged={acknowledged} timeout={:?} batches={}",
                self.replica_timeout,
                log.1
            );
            *log = (Some(Instant::now()), 0);
        }
    }

    /// A write succeeded: Redis takes writes again.
    fn accepting(&self) {
        let mut health = self.health();
        if health.refusing.take().is_some() {
            log::info!("Redis accepts writes again");
            self.show_health(&health);
        }
    }
}

/// Why Redis refuses a write, if `err` says it does; `None` for every other failure.
fn refusal(err: &redis::RedisError) -> Option<&'static str> {
    match err.code()? {
        "OOM" => Some("Redis refuses writes: out of memory (maxmemory)"),
        "READONLY" => Some("Redis refuses writes: read-only replica"),
        "MISCONF" => Some("Redis refuses writes: it cannot save to disk (MISCONF)"),
        "NOREPLICAS" => Some("Redis refuses writes: not enough replicas (min-replicas-to-write)"),
        _ => None,
    }
}

/// While Redis refuses writes: a cheap write every [`PROBE_INTERVAL`] until one succeeds (or
/// an append did meanwhile).
async fn probe(shared: Shared) {
    let mut connection = None;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        if shared.health().refusing.is_none() {
            break;
        }
        if connection.is_none() {
            connection = connect(&shared, COMMAND_TIMEOUT).await.ok();
        }
        let Some(probing) = connection.as_mut() else {
            continue;
        };
        let written = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("SET")
                .arg(&shared.keys.probe)
                .arg("1")
                .arg("PX")
                .arg(PROBE_TTL_MS)
                .query_async::<()>(probing),
        )
        .await;
        match written {
            Ok(Ok(())) => {
                shared.accepting();
                break;
            }
            Ok(Err(err)) => match refusal(&err) {
                Some(reason) => {
                    let mut health = shared.health();
                    health.refusing = Some(reason);
                    shared.show_health(&health);
                }
                None => connection = None,
            },
            Err(_) => connection = None,
        }
    }
    shared.health().probing = false;
}

/// How a node reaches its Redis and names its keys (`--redis-prefix`, `--redis-ca-file`).
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    pub prefix: String,
    /// PEM certificates of the CAs a `rediss://` server's certificate is checked against,
    /// instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Replicas that must acknowledge an append (`WAIT`) before it counts as committed.
    pub replicas: usize,
    pub replica_timeout: Duration,
    /// Whether nodes share their active subscriptions (presence), and under what time to live.
    pub presence: bool,
    pub presence_ttl: Duration,
}

/// Reads `--redis-ca-file`: PEM text holding at least one certificate, each of which parses.
/// Anything else is refused at start-up, naming the file.
fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    let shown = path.display();
    let pem = std::fs::read(path).map_err(|err| format!("--redis-ca-file {shown}: {err}"))?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate
            .map_err(|err| format!("--redis-ca-file {shown}: not a PEM certificate ({err})"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "--redis-ca-file {shown}: holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
        ));
    }
    Ok(pem)
}

impl RedisLog {
    /// Checks the URL and starts the Redis thread. Does not wait for Redis: a node starts
    /// unready and becomes ready once its tail has read the log.
    /// Entries read back are held to `limits`; those refused are counted in `metrics`.
    pub fn open(
        url: &str,
        options: &RedisOptions,
        retention: Retention,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let unusable = |detail: String| StoreError::Unreadable {
            path: crate::config::Store::Redis(url.to_owned()).to_string(),
            detail,
        };
        let prefix = options.prefix.as_str();
        let ca = options
            .ca_file
            .as_deref()
            .map(read_ca_file)
            .transpose()
            .map_err(&unusable)?;
        let endpoint = endpoint::Endpoint::parse(url, ca).map_err(&unusable)?;
        let ready = Readiness::unready("the event log (Redis) has not been read yet");
        let shared = Shared {
            endpoint: Arc::new(endpoint),
            keys: Keys {
                log: format!("{prefix}:log"),
                meta: format!("{prefix}:meta"),
                ids: format!("{prefix}:ids"),
                idq: format!("{prefix}:idq"),
                idn: format!("{prefix}:idn"),
                idl: format!("{prefix}:idl"),
                probe: format!("{prefix}:probe"),
                nodes: format!("{prefix}:nodes"),
                presence: format!("{prefix}:presence:"),
            },
            // Subscription events are in the stream too: other nodes' subscribers receive them.
            max_len: retention
                .events
                .saturating_add(retention.subscription_events)
                .max(1),
            ready: ready.clone(),
            limits,
            metrics,
            health: Arc::new(Mutex::new(Health::default())),
            connections: Arc::new(AtomicU64::new(0)),
            replicas: options.replicas,
            replica_timeout: options.replica_timeout,
            not_replicated_log: Arc::new(Mutex::new((None, 0))),
            node: format!("{:016x}", fastrand::u64(..)),
            presence_ttl: options.presence_ttl,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| unusable(format!("cannot start its runtime: {err}")))?;
        let (jobs, queue) = mpsc::unbounded_channel();
        let (presence, changes) = match options.presence {
            true => {
                let (presence, changes) = mpsc::unbounded_channel();
                (Some(presence), Some(changes))
            }
            false => (None, None),
        };
        let node = shared.node.clone();
        thread::Builder::new()
            .name("sse-hub-redis".to_owned())
            .spawn(move || runtime.block_on(serve(shared, queue, changes)))
            .map_err(|err| unusable(format!("cannot start its thread: {err}")))?;
        log::info!("event log shared store=redis prefix={prefix} node={node}");
        Ok(Self {
            jobs,
            ready,
            presence,
        })
    }
}

impl EventLog for RedisLog {
    /// Sends `publications` to Redis in order; resolves once Redis has them (or refused them).
    fn append(&mut self, publications: Vec<EventDraft>) -> Appending {
        let (done, appended) = oneshot::channel();
        if let Err(mpsc::error::SendError(Job::Append { done, .. })) = self.jobs.send(Job::Append {
            drafts: publications,
            done,
        }) {
            let _ = done.send(Err(AppendError::Unavailable(
                "the Redis client has stopped".to_owned(),
            )));
        }
        appended
    }

    /// Where `id` is in the log, if Redis knows it. `None` as well when Redis cannot be asked.
    fn locate(&self, id: &str) -> Locating {
        let (done, located) = oneshot::channel();
        let _ = self.jobs.send(Job::Locate {
            id: id.to_owned(),
            done,
        });
        located
    }

    /// Starts the tail, which hands what it reads to `sink` until `sink` is gone.
    fn tail(&mut self, sink: Recipient<Tailed>) {
        let _ = self.jobs.send(Job::Tail(sink));
    }

    /// Whether the tail is reading the log and Redis takes writes (the `/readyz` answer).
    fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Hands the change to the presence task (on the broadcaster's thread: serialising only).
    fn share_presence(&mut self, change: Presence<'_>) {
        let Some(presence) = &self.presence else {
            return;
        };
        let send = |change| {
            let _ = presence.send(change);
        };
        match change {
            Presence::Joined(subscriptions) => {
                for subscription in subscriptions {
                    send(presence::Change::Set {
                        topic: subscription.topic.clone(),
                        shared: subscription.to_shared(),
                    });
                }
            }
            Presence::Left(subscriptions) => {
                for subscription in subscriptions {
                    send(presence::Change::Remove(subscription.topic.clone()));
                }
            }
        }
    }

    fn withdraw_presence(&mut self) -> Option<oneshot::Receiver<()>> {
        let presence = self.presence.take()?;
        let (done, withdrawn) = oneshot::channel();
        // A stopped presence task drops `done`: the answer comes at once.
        let _ = presence.send(presence::Change::Withdraw(done));
        Some(withdrawn)
    }

    fn others_present(&self) -> Option<OthersPresent> {
        self.presence.as_ref()?;
        let (done, present) = oneshot::channel();
        if let Err(mpsc::error::SendError(Job::Present(done))) = self.jobs.send(Job::Present(done))
        {
            let _ = done.send(Err("the Redis client has stopped".to_owned()));
        }
        Some(present)
    }
}

/// The Redis thread: takes jobs until the handle is dropped.
async fn serve(
    shared: Shared,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut presence: Option<mpsc::UnboundedReceiver<presence::Change>>,
) {
    let mut commands = Commands::default();
    while let Some(job) = jobs.recv().await {
        let (job, connection) = match job {
            Job::Tail(sink) => {
                if let Some(changes) = presence.take() {
                    tokio::spawn(presence::run(shared.clone(), changes, sink.clone()));
                }
                tokio::spawn(tail::run(shared.clone(), sink));
                continue;
            }
            job => (job, commands.connection(&shared).await),
        };
        let broken = commands.broken.clone();
        match job {
            Job::Append { drafts, done } => {
                let Some(mut connection) = connection else {
                    let _ = done.send(Err(AppendError::Unavailable(
                        "Redis is unreachable".to_owned(),
                    )));
                    continue;
                };
                let invocation = append_invocation(&shared, &drafts);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let reply = tokio::time::timeout(
                        COMMAND_TIMEOUT,
                        invocation.invoke_async::<Vec<String>>(&mut connection),
                    )
                    .await;
                    let mut result = appended(reply, &drafts, &broken, &shared);
                    // Only appends wait: a batch of taken ids wrote no event.
                    let wrote = result
                        .as_ref()
                        .is_ok_and(|placed| placed.iter().any(Option::is_some));
                    if wrote
                        && shared.replicas > 0
                        && let Err(err) = replicated(&shared, &mut connection).await
                    {
                        result = Err(err);
                    }
                    let _ = done.send(result);
                });
            }
            Job::Locate { id, done } => {
                let Some(mut connection) = connection else {
                    let _ = done.send(None);
                    continue;
                };
                let mut invocation = scripts::LOCATE.prepare_invoke();
                invocation
                    .key(&shared.keys.log)
                    .key(&shared.keys.ids)
                    .arg(id);
                tokio::spawn(async move {
                    let reply = tokio::time::timeout(
                        COMMAND_TIMEOUT,
                        invocation.invoke_async::<Option<String>>(&mut connection),
                    )
                    .await;
                    // A failed look-up reads as "not held": the subscriber is told `reset`.
                    let found = match reply {
                        Ok(Ok(entry)) => entry.as_deref().and_then(parse_entry_id),
                        Ok(Err(err)) => {
                            log::warn!("Redis look-up failed error={err}");
                            broken.store(true, Ordering::Relaxed);
                            None
                        }
                        Err(_) => {
                            log::warn!("Redis look-up timed out after {COMMAND_TIMEOUT:?}");
                            broken.store(true, Ordering::Relaxed);
                            None
                        }
                    };
                    let _ = done.send(found);
                });
            }
            Job::Present(done) => {
                let Some(mut connection) = connection else {
                    let _ = done.send(Err("Redis is unreachable".to_owned()));
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let found = presence::list(&shared, &mut connection).await;
                    if found.is_err() {
                        broken.store(true, Ordering::Relaxed);
                    }
                    let _ = done.send(found);
                });
            }
            Job::Tail(_) => {}
        }
    }
}

/// The connection appends and look-ups share.
#[derive(Default)]
struct Commands {
    connection: Option<(MultiplexedConnection, u64)>,
    /// Set by a command that failed: the next one connects again.
    broken: Arc<AtomicBool>,
}

impl Commands {
    /// A connection to use now, made if needed; `None` while the tail cannot reach Redis, or
    /// if connecting failed. (Not while Redis refuses writes: each append still asks it.)
    async fn connection(&mut self, shared: &Shared) -> Option<MultiplexedConnection> {
        if !shared.health().reachable {
            return None;
        }
        let generation = shared.connections.load(Ordering::Relaxed);
        let stale = self.broken.swap(false, Ordering::Relaxed)
            || self
                .connection
                .as_ref()
                .is_none_or(|(_, made)| *made != generation);
        if stale {
            self.connection = None;
            // Room for a WAIT of --redis-replica-timeout on top of the command itself.
            match connect(shared, COMMAND_TIMEOUT + shared.replica_timeout).await {
                Ok(connection) => self.connection = Some((connection, generation)),
                Err(err) => log::warn!("cannot connect to Redis for publishes error={err}"),
            }
        }
        self.connection
            .as_ref()
            .map(|(connection, _)| connection.clone())
    }
}

/// A connection to the primary, whose answers may take up to `response_timeout`.
async fn connect(
    shared: &Shared,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let (connection, _) = shared
        .endpoint
        .connect(COMMAND_TIMEOUT, response_timeout)
        .await?;
    Ok(connection)
}

fn append_invocation(shared: &Shared, drafts: &[EventDraft]) -> redis::ScriptInvocation<'static> {
    let mut invocation = scripts::APPEND.prepare_invoke();
    invocation
        .key(&shared.keys.log)
        .key(&shared.keys.meta)
        .key(&shared.keys.ids)
        .key(&shared.keys.idq)
        .key(&shared.keys.idn)
        .key(&shared.keys.idl)
        .arg(shared.max_len)
        .arg(new_epoch());
    for draft in drafts {
        let stored = Stored {
            topics: draft.topics.clone(),
            data: draft.data.clone(),
            event_type: draft.event_type.clone(),
            retry_ms: draft.retry_ms,
            private: draft.private,
        };
        invocation
            .arg(draft.id.as_deref().unwrap_or(""))
            .arg(if draft.repeatable_id { "r" } else { "u" })
            .arg(serde_json::to_string(&stored).unwrap_or_default());
    }
    invocation
}

fn appended(
    reply: Result<redis::RedisResult<Vec<String>>, tokio::time::error::Elapsed>,
    drafts: &[EventDraft],
    broken: &AtomicBool,
    shared: &Shared,
) -> super::Appended {
    let expected = drafts.len();
    let ids = match reply {
        Ok(Ok(ids)) => ids,
        Ok(Err(err)) => {
            if let Some(reason) = refusal(&err) {
                // Redis said no. Connect again all the same: a primary that became a replica
                // (`READONLY`) is left for the one Sentinel names now.
                broken.store(true, Ordering::Relaxed);
                shared.refusing(reason);
                return Err(AppendError::Refusing(reason));
            }
            broken.store(true, Ordering::Relaxed);
            return Err(AppendError::Unavailable(format!(
                "the append failed: {err}"
            )));
        }
        Err(_) => {
            broken.store(true, Ordering::Relaxed);
            return Err(AppendError::Unavailable(format!(
                "Redis did not answer within {COMMAND_TIMEOUT:?}"
            )));
        }
    };
    shared.accepting();
    if ids.len() != expected {
        return Err(AppendError::Unreadable(format!(
            "Redis answered {} ids for {expected} events",
            ids.len()
        )));
    }
    // The script answers an entry id, or an empty string for a publisher id that is taken. An
    // event without a publisher id is known by its entry id.
    ids.iter()
        .zip(drafts)
        .map(|(entry, draft)| match entry.as_str() {
            "" => Ok(None),
            entry => match parse_entry_id(entry) {
                Some(position) => Ok(Some(Placed {
                    position,
                    id: draft.id.as_deref().map_or_else(|| entry.into(), Into::into),
                })),
                None => Err(AppendError::Unreadable(format!(
                    "Redis answered {entry:?} for an entry id"
                ))),
            },
        })
        .collect()
}

/// Waits until `--redis-replicas` replicas have every write made on `connection` so far (the
/// append just made among them), or `--redis-replica-timeout` has passed.
async fn replicated(
    shared: &Shared,
    connection: &mut MultiplexedConnection,
) -> Result<(), AppendError> {
    let (wanted, timeout) = (shared.replicas, shared.replica_timeout);
    let not_replicated = |acknowledged: usize| {
        shared.not_replicated(wanted, acknowledged);
        AppendError::NotReplicated {
            wanted,
            acknowledged,
            timeout,
        }
    };
    let mut command = redis::cmd("WAIT");
    command
        .arg(wanted)
        .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    let wait = command.query_async::<i64>(connection);
    match tokio::time::timeout(timeout + COMMAND_TIMEOUT, wait).await {
        Ok(Ok(acknowledged)) => {
            let acknowledged = usize::try_from(acknowledged).unwrap_or(0);
            if acknowledged >= wanted {
                Ok(())
            } else {
                Err(not_replicated(acknowledged))
            }
        }
        // The append was made: whatever became of the WAIT, the event may be delivered.
        Ok(Err(err)) => {
            log::warn!("Redis WAIT failed error={err}");
            Err(not_replicated(0))
        }
        Err(_) => Err(not_replicated(0)),
    }
}

/// A fresh random epoch for a log that has none yet (only the first append to an empty log
/// uses it).
fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_and_order_as_redis_orders_them() {
        let a = parse_entry_id("1700000000000-9").expect("entry id");
        let b = parse_entry_id("1700000000001-0").expect("entry id");
        assert!(a < b);
        assert_eq!(b.to_string(), "1700000000001-0");
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", "1.5-2", " 1-2"] {
            assert_eq!(parse_entry_id(bad), None, "{bad:?}");
        }
    }
}
