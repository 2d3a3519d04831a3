//! A subscriber process: opens its share of the subscribers on one current-thread runtime, reads
//! their streams, and talks to the coordinator over stdin/stdout in lines (`progress`,
//! `connected`, `result` out; `published` in). Each subscriber is an HTTP/1.1 connection of its
//! own, or with `--http2` a stream on one of a few shared HTTP/2 connections.

use std::{
    cell::{Cell, RefCell},
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::LocalSet,
};

use crate::{
    conn::{Alpn, Connector, Stream},
    http::{self, BodyDecoder},
    sse::{Data, LineScanner},
    tally::{self, Counts, Tally},
    target::Target,
};

/// How long one subscriber may take from connect to response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the drain is checked; progress lines go out every fifth check.
const TICK: Duration = Duration::from_millis(20);
/// HTTP/2 receive window of each stream: 1 MiB, so that a burst to one subscriber never waits
/// for a WINDOW_UPDATE (capacity is released as soon as each DATA frame is accounted).
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
/// HTTP/2 receive window of each connection: 16 MiB (Chromium uses 15 MiB), so that bursts to
/// many streams at once are not throttled by the connection window either.
const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

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
    /// PEM certificates to trust for https:// URLs.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// HTTP/2: this many subscriber streams per connection (absent: HTTP/1.1, one connection
    /// per subscriber).
    #[arg(long)]
    pub streams_per_connection: Option<usize>,
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
    /// Per event, the slowest delivery to this process's subscribers (µs).
    #[serde(default)]
    pub event_max_us: Vec<u64>,
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
    let alpn = if args.streams_per_connection.is_some() {
        Alpn::H2
    } else {
        Alpn::Http1
    };
    let connector = Rc::new(Connector::new(&target, args.ca_file.as_deref(), alpn)?);
    let semaphore = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    if let Some(per) = args.streams_per_connection {
        let request = Rc::new(H2Request::parse(&target, &args.headers)?);
        let first_connection = args.first_index / per.max(1);
        for (c, streams) in h2_spread(args.count, per).into_iter().enumerate() {
            tokio::task::spawn_local(h2_connection(
                shared.clone(),
                connector.clone(),
                request.clone(),
                streams,
                target.source_addr(first_connection + c),
                semaphore.clone(),
            ));
        }
    } else {
        let request: Rc<[u8]> = subscribe_request(&target, &args.headers).into();
        let (shared, target) = (shared.clone(), target.clone());
        let (count, first, read_buffer) = (args.count, args.first_index, args.read_buffer);
        tokio::task::spawn_local(async move {
            for index in 0..count {
                let Ok(permit) = semaphore.clone().acquire_owned().await else {
                    return;
                };
                tokio::task::spawn_local(subscribe(
                    shared.clone(),
                    connector.clone(),
                    request.clone(),
                    index,
                    target.source_addr(first + index),
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
    report.event_max_us.clone_from(&tally.event_max_us);
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

impl Shared {
    fn fail(&self, index: usize, err: &anyhow::Error) {
        self.status.borrow_mut()[index] = Status::Failed;
        self.failed.set(self.failed.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| format!("{err:#}"));
    }

    /// The response head arrived: the subscriber counts as connected from now.
    fn open(&self, index: usize, began: Instant) {
        let now = Instant::now();
        self.status.borrow_mut()[index] = Status::Open;
        self.connected.set(self.connected.get() + 1);
        self.last_connect.set(Some(now));
        tally::record_clamped(
            &mut self.connect_us.borrow_mut(),
            now.duration_since(began).as_micros() as u64,
        );
    }

    fn close(&self, index: usize) {
        self.status.borrow_mut()[index] = Status::Closed;
        self.closed.set(self.closed.get() + 1);
    }

    /// Accounts the event-stream bytes `body` of subscriber `index`, received now.
    fn receive(&self, index: usize, scanner: &mut LineScanner, body: &[u8]) {
        let now_us = crate::now_us();
        let mut tally = self.tally.borrow_mut();
        scanner.feed(body, &mut |data| match data {
            Data::Stamped { seq, ts_us, ack } => tally.record(index, seq, ts_us, ack, now_us),
            Data::Foreign => tally.counts.foreign += 1,
        });
    }
}

/// One HTTP/1.1 subscriber: connect, read the head, then account every event until the stream
/// ends.
async fn subscribe(
    shared: Rc<Shared>,
    connector: Rc<Connector>,
    request: Rc<[u8]>,
    index: usize,
    source: Option<SocketAddr>,
    read_buffer: usize,
    permit: OwnedSemaphorePermit,
) {
    let began = Instant::now();
    let mut buf = vec![0u8; read_buffer];
    let opened = tokio::time::timeout(
        CONNECT_TIMEOUT,
        open(&connector, source, &request, &mut buf),
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
        Err(err) => return shared.fail(index, &err),
    };
    shared.open(index, began);

    let mut decoder = BodyDecoder::new(head.framing);
    let mut scanner = LineScanner::default();
    let mut consume = |bytes: &[u8]| -> anyhow::Result<()> {
        decoder.feed(bytes, |body| shared.receive(index, &mut scanner, body))
    };
    let mut result = consume(&buf[body_start..filled]);
    while result.is_ok() {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => result = consume(&buf[..n]),
            Err(err) => result = Err(err.into()),
        }
    }
    shared.close(index);
}

/// Connects from `source`, sends the request and reads up to the end of the response head.
/// Returns the stream, the head, and where the body starts in `buf[..filled]`.
async fn open(
    connector: &Connector,
    source: Option<SocketAddr>,
    request: &[u8],
    buf: &mut [u8],
) -> anyhow::Result<(Stream, http::Head, usize, usize)> {
    let mut stream = connector.connect(source).await?;
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

/// The subscribe request over HTTP/2: the same GET and headers, as an `http::Request`.
#[derive(Debug)]
struct H2Request {
    uri: ::http::Uri,
    headers: ::http::HeaderMap,
}

impl H2Request {
    /// Parses the target and the extra `Name: value` headers once; what h2 would refuse is
    /// refused here.
    fn parse(target: &Target, headers: &[String]) -> anyhow::Result<Self> {
        let uri: ::http::Uri = format!("https://{}{}", target.host_header, target.path)
            .parse()
            .context("the URL is not a valid HTTP/2 request target")?;
        let mut map = ::http::HeaderMap::new();
        map.insert(
            ::http::header::ACCEPT,
            ::http::HeaderValue::from_static("text/event-stream"),
        );
        map.insert(
            ::http::header::CACHE_CONTROL,
            ::http::HeaderValue::from_static("no-cache"),
        );
        for header in headers {
            let Some((name, value)) = header.split_once(':') else {
                bail!("{header:?}: expected \"Name: value\"");
            };
            let name = ::http::HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("{header:?}: bad header name"))?;
            let value = ::http::HeaderValue::from_str(value.trim())
                .with_context(|| format!("{header:?}: bad header value"))?;
            map.append(name, value);
        }
        Ok(Self { uri, headers: map })
    }

    fn build(&self) -> ::http::Request<()> {
        let mut request = ::http::Request::new(());
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// The local indexes of the streams each HTTP/2 connection of this process carries:
/// `streams_per_connection` each, the last one the rest.
fn h2_spread(count: usize, streams_per_connection: usize) -> Vec<std::ops::Range<usize>> {
    let per = streams_per_connection.max(1);
    (0..count.div_ceil(per))
        .map(|c| c * per..((c + 1) * per).min(count))
        .collect()
}

/// One HTTP/2 connection: TLS with ALPN h2, then one subscribe stream per index in `streams`.
/// If the connection cannot be made, each of its streams fails with that error.
async fn h2_connection(
    shared: Rc<Shared>,
    connector: Rc<Connector>,
    request: Rc<H2Request>,
    streams: std::ops::Range<usize>,
    source: Option<SocketAddr>,
    semaphore: Arc<Semaphore>,
) {
    let Ok(permit) = semaphore.clone().acquire_owned().await else {
        return;
    };
    let handshake = tokio::time::timeout(CONNECT_TIMEOUT, h2_handshake(&connector, source))
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "no HTTP/2 handshake within {CONNECT_TIMEOUT:?}"
            ))
        });
    drop(permit);
    let send = match handshake {
        Ok(send) => send,
        Err(err) => {
            for index in streams {
                shared.fail(index, &err);
            }
            return;
        }
    };
    for index in streams {
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            return;
        };
        tokio::task::spawn_local(h2_subscribe(
            shared.clone(),
            send.clone(),
            request.clone(),
            index,
            permit,
        ));
    }
}

/// Connects, checks that the server picked h2, and starts the connection's driver task.
async fn h2_handshake(
    connector: &Connector,
    source: Option<SocketAddr>,
) -> anyhow::Result<h2::client::SendRequest<bytes::Bytes>> {
    // A server offering only http/1.1 usually ends the handshake with NoApplicationProtocol.
    let stream = connector
        .connect(source)
        .await
        .context("--http2 (TLS with ALPN h2)")?;
    if stream.alpn() != Some(b"h2".as_slice()) {
        bail!(
            "--http2: the server did not pick h2 in ALPN (it picked {}); it must offer h2 over TLS",
            stream
                .alpn()
                .map_or("none".to_owned(), |p| String::from_utf8_lossy(p)
                    .into_owned())
        );
    }
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake::<_, bytes::Bytes>(stream)
        .await
        .context("HTTP/2 handshake")?;
    // A connection error ends every stream on it; the streams see and count that.
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// One HTTP/2 subscriber: a stream on a shared connection, accounted like an HTTP/1.1 one;
/// flow-control capacity is given back as soon as a DATA frame is accounted.
async fn h2_subscribe(
    shared: Rc<Shared>,
    send: h2::client::SendRequest<bytes::Bytes>,
    request: Rc<H2Request>,
    index: usize,
    permit: OwnedSemaphorePermit,
) {
    let began = Instant::now();
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut send = send.ready().await.context("HTTP/2 connection")?;
        let (response, _) = send
            .send_request(request.build(), true)
            .context("HTTP/2 request")?;
        let response = response.await.context("HTTP/2 response")?;
        if response.status() != ::http::StatusCode::OK {
            bail!("status {}", response.status().as_u16());
        }
        Ok(response.into_body())
    })
    .await
    .unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "no response head within {CONNECT_TIMEOUT:?} (a server allowing fewer concurrent \
             streams than --connections gives each connection waits here)"
        ))
    });
    drop(permit);
    let mut body = match opened {
        Ok(body) => body,
        Err(err) => return shared.fail(index, &err),
    };
    shared.open(index, began);
    let mut scanner = LineScanner::default();
    while let Some(Ok(chunk)) = body.data().await {
        shared.receive(index, &mut scanner, &chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    shared.close(index);
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
