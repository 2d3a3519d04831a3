//! A subscriber process: opens its share of the subscribers on one current-thread runtime, reads
//! their streams, and talks to the coordinator over stdin/stdout in lines (`progress`,
//! `connected`, `result` out; `published` in).

use std::{
    cell::{Cell, RefCell},
    io::Write as _,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpSocket, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::LocalSet,
};

use crate::{
    http::{self, BodyDecoder},
    sse::{Data, LineScanner},
    tally::{self, Counts, Tally},
    target::Target,
};

/// How long one subscriber may take from connect to response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the drain is checked; progress lines go out every fifth check.
const TICK: Duration = Duration::from_millis(20);

/// The hidden `worker` subcommand's arguments, set by the coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub url: String,
    /// Subscribers this process opens.
    #[arg(long)]
    pub count: usize,
    /// Index of this process's first subscriber overall (spreads source addresses).
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Events that will be published (sequence numbers 0..events).
    #[arg(long)]
    pub events: u64,
    #[arg(long)]
    pub connect_concurrency: usize,
    #[arg(long)]
    pub read_buffer: usize,
    /// The process ends by itself after this long, whatever happens.
    #[arg(long)]
    pub timeout_ms: u64,
    #[arg(long = "header")]
    pub headers: Vec<String>,
}

/// Sent once every subscriber has connected or failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub connected: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// From the first connect to the last response head.
    pub elapsed_us: u64,
    /// Per-subscriber connect times (connect to response head), as histogram pairs.
    pub connect_us: Vec<(u64, u64)>,
}

/// Sent at the end: what this process's subscribers received.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub connect: ConnectReport,
    /// Subscribers whose stream ended before the run did.
    pub closed: u64,
    pub expected_per_subscriber: u64,
    pub counts: Counts,
    /// Events published but never received, summed over connected subscribers.
    pub lost: u64,
    pub latency_us: Vec<(u64, u64)>,
    pub first_us: u64,
    pub last_us: u64,
    pub drain_timed_out: bool,
    pub timed_out: bool,
    /// This process's own CPU time, µs: the load generator must not be the bottleneck.
    pub cpu_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Open,
    Failed,
    Closed,
}

/// What the subscriber tasks of this process share (one thread: `Rc` and `RefCell`, no locks).
#[derive(Debug)]
struct Shared {
    tally: RefCell<Tally>,
    status: RefCell<Vec<Status>>,
    connect_us: RefCell<hdrhistogram::Histogram<u64>>,
    first_error: RefCell<Option<String>>,
    connected: Cell<u64>,
    failed: Cell<u64>,
    closed: Cell<u64>,
    last_connect: Cell<Option<Instant>>,
}

/// Runs a subscriber process to its end.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, work(args))
}

async fn work(args: WorkerArgs) -> anyhow::Result<()> {
    let target = Rc::new(Target::parse(&args.url)?);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(args.timeout_ms);
    let shared = Rc::new(Shared {
        tally: RefCell::new(Tally::new(args.count, args.events)?),
        status: RefCell::new(vec![Status::Pending; args.count]),
        connect_us: RefCell::new(tally::new_histogram()),
        first_error: RefCell::new(None),
        connected: Cell::new(0),
        failed: Cell::new(0),
        closed: Cell::new(0),
        last_connect: Cell::new(None),
    });
    let request: Rc<[u8]> = subscribe_request(&target, &args.headers).into();

    let semaphore = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    {
        let (shared, target) = (shared.clone(), target.clone());
        let (count, first, read_buffer) = (args.count, args.first_index, args.read_buffer);
        tokio::task::spawn_local(async move {
            for index in 0..count {
                let Ok(permit) = semaphore.clone().acquire_owned().await else {
                    return;
                };
                tokio::task::spawn_local(subscribe(
                    shared.clone(),
                    target.clone(),
                    request.clone(),
                    index,
                    first + index,
                    read_buffer.max(512),
                    permit,
                ));
            }
        });
    }

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u64;
    let mut connect_report: Option<ConnectReport> = None;
    let mut drain: Option<(u64, Instant)> = None;
    let mut report = WorkerReport::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                ticks += 1;
                let pending = args.count as u64 - shared.connected.get() - shared.failed.get();
                if connect_report.is_none() && pending == 0 {
                    let connect = connect_summary(&shared, started);
                    emit("connected", &serde_json::to_string(&connect)?)?;
                    connect_report = Some(connect);
                }
                if ticks.is_multiple_of(5) {
                    let unique = shared.tally.borrow().counts.unique;
                    emit(
                        "progress",
                        &format!("{} {} {unique}", shared.connected.get(), shared.closed.get()),
                    )?;
                }
                if let Some((expected, drain_deadline)) = drain {
                    if all_received(&shared, expected) {
                        break;
                    }
                    if Instant::now() >= drain_deadline {
                        report.drain_timed_out = true;
                        break;
                    }
                }
            }
            line = stdin.next_line(), if drain.is_none() => {
                match line {
                    Ok(Some(line)) => {
                        let (expected, drain_ms) = parse_published(&line)?;
                        report.expected_per_subscriber = expected;
                        drain = Some((expected, Instant::now() + Duration::from_millis(drain_ms)));
                    }
                    // The coordinator is gone: nobody will read a result.
                    _ => return Ok(()),
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                report.timed_out = true;
                break;
            }
        }
    }

    report.connect = connect_report.unwrap_or_else(|| connect_summary(&shared, started));
    report.closed = shared.closed.get();
    let tally = shared.tally.borrow();
    let status = shared.status.borrow();
    report.lost = status
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Status::Open | Status::Closed))
        .map(|(i, _)| report.expected_per_subscriber.saturating_sub(tally.got(i)))
        .sum();
    report.counts = tally.counts;
    report.latency_us = tally::to_pairs(&tally.latency);
    report.first_us = tally.first_us;
    report.last_us = tally.last_us;
    report.cpu_us = crate::procstat::own_cpu_us();
    emit("result", &serde_json::to_string(&report)?)?;
    Ok(())
}

/// `published <expected per subscriber> <drain ms>`.
fn parse_published(line: &str) -> anyhow::Result<(u64, u64)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("published"), Some(expected), Some(drain_ms)) => {
            Ok((expected.parse()?, drain_ms.parse()?))
        }
        _ => bail!("unexpected line from the coordinator: {line:?}"),
    }
}

/// Every open subscriber has every expected event (closed ones will get no more).
fn all_received(shared: &Shared, expected: u64) -> bool {
    let tally = shared.tally.borrow();
    shared
        .status
        .borrow()
        .iter()
        .enumerate()
        .all(|(i, s)| *s != Status::Open || tally.got(i) >= expected)
}

fn connect_summary(shared: &Shared, started: Instant) -> ConnectReport {
    ConnectReport {
        connected: shared.connected.get(),
        failed: shared.failed.get(),
        first_error: shared.first_error.borrow().clone(),
        elapsed_us: shared
            .last_connect
            .get()
            .map_or(0, |t| t.duration_since(started).as_micros() as u64),
        connect_us: tally::to_pairs(&shared.connect_us.borrow()),
    }
}

/// One protocol line to the coordinator, flushed at once.
fn emit(kind: &str, body: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{kind} {body}")?;
    out.flush()?;
    Ok(())
}

fn subscribe_request(target: &Target, headers: &[String]) -> Vec<u8> {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        target.path, target.host_header
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// One subscriber: connect, read the head, then account every event until the stream ends.
async fn subscribe(
    shared: Rc<Shared>,
    target: Rc<Target>,
    request: Rc<[u8]>,
    index: usize,
    global_index: usize,
    read_buffer: usize,
    permit: OwnedSemaphorePermit,
) {
    let began = Instant::now();
    let mut buf = vec![0u8; read_buffer];
    let opened = tokio::time::timeout(
        CONNECT_TIMEOUT,
        open(&target, &request, global_index, &mut buf),
    )
    .await
    .unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "no response head within {CONNECT_TIMEOUT:?}"
        ))
    });
    drop(permit);
    let (mut stream, head, body_start, filled) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            shared.status.borrow_mut()[index] = Status::Failed;
            shared.failed.set(shared.failed.get() + 1);
            shared
                .first_error
                .borrow_mut()
                .get_or_insert_with(|| format!("{err:#}"));
            return;
        }
    };
    let now = Instant::now();
    shared.status.borrow_mut()[index] = Status::Open;
    shared.connected.set(shared.connected.get() + 1);
    shared.last_connect.set(Some(now));
    tally::record_clamped(
        &mut shared.connect_us.borrow_mut(),
        now.duration_since(began).as_micros() as u64,
    );

    let mut decoder = BodyDecoder::new(head.framing);
    let mut scanner = LineScanner::default();
    let mut consume = |bytes: &[u8]| -> anyhow::Result<()> {
        let now_us = crate::now_us();
        let mut tally = shared.tally.borrow_mut();
        decoder.feed(bytes, |body| {
            scanner.feed(body, &mut |data| match data {
                Data::Stamped { seq, ts_us, ack } => tally.record(index, seq, ts_us, ack, now_us),
                Data::Foreign => tally.counts.foreign += 1,
            });
        })
    };
    let mut result = consume(&buf[body_start..filled]);
    while result.is_ok() {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => result = consume(&buf[..n]),
            Err(err) => result = Err(err.into()),
        }
    }
    shared.status.borrow_mut()[index] = Status::Closed;
    shared.closed.set(shared.closed.get() + 1);
}

/// Connects from this subscriber's source address, sends the request and reads up to the end of
/// the response head. Returns the stream, the head, and where the body starts in `buf[..filled]`.
async fn open(
    target: &Target,
    request: &[u8],
    global_index: usize,
    buf: &mut [u8],
) -> anyhow::Result<(TcpStream, http::Head, usize, usize)> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = target.source_addr(global_index) {
        socket
            .bind(source)
            .with_context(|| format!("bind {source}"))?;
    }
    let mut stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            bail!(
                "response head larger than the read buffer ({} bytes)",
                buf.len()
            );
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        filled += n;
        if let Some((head, used)) = http::parse_head(&buf[..filled])? {
            if head.status != 200 {
                bail!("status {}", head.status);
            }
            return Ok((stream, head, used, filled));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coordinator's `published` line is read, anything else is refused.
    #[test]
    fn published_lines_parse() {
        assert_eq!(
            parse_published("published 1000 5000").unwrap(),
            (1000, 5000)
        );
        assert!(parse_published("publish 1 2").is_err());
        assert!(parse_published("published x 2").is_err());
    }

    /// The subscribe request asks for an event stream and carries extra headers.
    #[test]
    fn subscribe_request_is_well_formed() {
        let target = Target::parse("http://127.0.0.1:8090/sub/bench").unwrap();
        let request = subscribe_request(&target, &["X-A: 1".to_owned()]);
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET /sub/bench HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nX-A: 1\r\n\r\n"
        );
    }
}
