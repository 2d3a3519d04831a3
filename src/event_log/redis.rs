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
//! - `PREFIX:ids`, a hash from publisher ids to entry ids, and `PREFIX:idq`, a list of those
//!   ids in log order: an id stays taken while its entry is retained, checked in the script so
//!   that two nodes racing one id give one success and one conflict.
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

use std::{
    collections::VecDeque,
    sync::{
        Arc, LazyLock, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use actix::Recipient;
use redis::{
    AsyncConnectionConfig, Client, Script, Value,
    aio::MultiplexedConnection,
    streams::{StreamId, StreamRangeReply, StreamReadReply},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendError, Appending, EventLog, Locating, Placed, Position, Readiness, Retention, StoreError,
    TailEntry, Tailed,
};
use crate::{
    event::{Event, EventDraft, Kind, Limits, Publication},
    metrics::{Metrics, RefusedReason},
};

/// What `/readyz` says while the tail cannot reach Redis.
const UNREACHABLE: &str =
    "the event log (Redis) is unreachable; publishes are refused until it is back";
/// At most one log line per this long about refused entries (with the count and the last one).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// While Redis refuses writes, a probe write this often tells when it accepts them again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe's key lives (it is only there to be written).
const PROBE_TTL_MS: u64 = 1000;

/// How long `XREAD` blocks before the tail checks the log's epoch and reads again.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read at once; also what the broadcaster applies in one message.
const READ_COUNT: usize = 1024;
/// An append or look-up that takes longer is answered as failed (Redis away or overloaded).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The tail's reconnect backoff: doubling from the first, jittered, capped at the last.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Appends events; see the module documentation for the layout. KEYS: log, meta, ids, idq.
/// ARGV: max length, an epoch for an empty log, then per event its publisher id (or empty),
/// `u` if that id must not be taken or `r` if it may repeat (it then keeps naming its earliest
/// entry), and its JSON. Returns per event its entry id, or an empty string if its id is taken.
const APPEND: &str = r"
local function before(a, b)
  local am, as = string.match(a, '^(%d+)%-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)%-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local last = redis.call('HGET', KEYS[2], 'last') or ''
local out = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local taken = id ~= '' and redis.call('HEXISTS', KEYS[3], id) == 1
  if taken and ARGV[i + 1] ~= 'r' then
    out[#out + 1] = ''
  else
    last = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'e', epoch, 'p', last, 'i', id, 'd', ARGV[i + 2])
    if id ~= '' and not taken then
      redis.call('HSET', KEYS[3], id, last)
      redis.call('RPUSH', KEYS[4], id)
    end
    out[#out + 1] = last
  end
end
redis.call('HSET', KEYS[2], 'last', last)
if redis.call('LLEN', KEYS[4]) > 0 then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local oldest = first and first[1] or last
  while true do
    local id = redis.call('LINDEX', KEYS[4], 0)
    if not id then break end
    local entry = redis.call('HGET', KEYS[3], id)
    if entry and not before(entry, oldest) then break end
    redis.call('LPOP', KEYS[4])
    if entry then redis.call('HDEL', KEYS[3], id) end
  end
end
return out
";

/// Finds the entry of an event id: a publisher id through `ids`, or an entry id that the
/// stream holds. KEYS: log, ids. ARGV: the id. Returns the entry id, or nil.
const LOCATE: &str = r"
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if entry then return entry end
if string.match(ARGV[1], '^%d+%-%d+$') then
  local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1)
  if #found > 0 then return ARGV[1] end
end
return false
";

static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND));
static LOCATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LOCATE));

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
}

/// The handle the broadcaster holds. The Redis work runs on a thread of its own (a tokio
/// runtime with the append, look-up and tail tasks); dropping the handle ends it.
#[derive(Debug)]
pub struct RedisLog {
    jobs: mpsc::UnboundedSender<Job>,
    ready: Readiness,
}

/// What the tasks share.
#[derive(Clone)]
struct Shared {
    client: Client,
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
}

#[derive(Debug, Clone)]
struct Keys {
    log: String,
    meta: String,
    ids: String,
    idq: String,
    /// Written by the probe while Redis refuses writes.
    probe: String,
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
            connection = connect(&shared.client, COMMAND_TIMEOUT).await.ok();
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

impl RedisLog {
    /// Checks the URL and starts the Redis thread. Does not wait for Redis: a node starts
    /// unready and becomes ready once its tail has read the log.
    /// Entries read back are held to `limits`; those refused are counted in `metrics`.
    pub fn open(
        url: &str,
        prefix: &str,
        retention: Retention,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let unusable = |detail: String| StoreError::Unreadable {
            path: crate::config::Store::Redis(url.to_owned()).to_string(),
            detail,
        };
        let client = Client::open(url).map_err(|err| unusable(err.to_string()))?;
        let ready = Readiness::unready("the event log (Redis) has not been read yet");
        let shared = Shared {
            client,
            keys: Keys {
                log: format!("{prefix}:log"),
                meta: format!("{prefix}:meta"),
                ids: format!("{prefix}:ids"),
                idq: format!("{prefix}:idq"),
                probe: format!("{prefix}:probe"),
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
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| unusable(format!("cannot start its runtime: {err}")))?;
        let (jobs, queue) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name("sse-hub-redis".to_owned())
            .spawn(move || runtime.block_on(serve(shared, queue)))
            .map_err(|err| unusable(format!("cannot start its thread: {err}")))?;
        log::info!("event log shared store=redis prefix={prefix}");
        Ok(Self { jobs, ready })
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
}

/// The Redis thread: takes jobs until the handle is dropped.
async fn serve(shared: Shared, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut commands = Commands::default();
    while let Some(job) = jobs.recv().await {
        let (job, connection) = match job {
            Job::Tail(sink) => {
                tokio::spawn(tail(shared.clone(), sink));
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
                    let _ = done.send(appended(reply, &drafts, &broken, &shared));
                });
            }
            Job::Locate { id, done } => {
                let Some(mut connection) = connection else {
                    let _ = done.send(None);
                    continue;
                };
                let mut invocation = LOCATE_SCRIPT.prepare_invoke();
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
                    let found = match reply {
                        Ok(Ok(entry)) => entry.as_deref().and_then(parse_entry_id),
                        Ok(Err(err)) => {
                            log::warn!("Redis look-up failed error={err}");
                            broken.store(true, Ordering::Relaxed);
                            None
                        }
                        Err(_) => {
                            broken.store(true, Ordering::Relaxed);
                            None
                        }
                    };
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
            match connect(&shared.client, COMMAND_TIMEOUT).await {
                Ok(connection) => self.connection = Some((connection, generation)),
                Err(err) => log::warn!("cannot connect to Redis for publishes error={err}"),
            }
        }
        self.connection
            .as_ref()
            .map(|(connection, _)| connection.clone())
    }
}

async fn connect(
    client: &Client,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

fn append_invocation(shared: &Shared, drafts: &[EventDraft]) -> redis::ScriptInvocation<'static> {
    let mut invocation = APPEND_SCRIPT.prepare_invoke();
    invocation
        .key(&shared.keys.log)
        .key(&shared.keys.meta)
        .key(&shared.keys.ids)
        .key(&shared.keys.idq)
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
                // The connection is fine; Redis said no.
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

/// A fresh random epoch for a log that has none yet (only the first append to an empty log
/// uses it).
fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

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
async fn tail(shared: Shared, sink: Recipient<Tailed>) {
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
    let mut connection = match connect(&shared.client, BLOCK + COMMAND_TIMEOUT).await {
        Ok(connection) => connection,
        Err(err) => return Stop::Failed(err),
    };
    shared.connections.fetch_add(1, Ordering::Relaxed);
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
    loop {
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
            if let Some(reason) = position.gap(&entry.id, &order) {
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
}
