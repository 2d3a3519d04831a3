//! `sse-load`, the load tester: opens N subscribers to any SSE server on loopback, publishes P
//! stamped events, and reports delivery rate, latency, loss, and the server's memory and CPU.
//! This file holds the command line and the coordinator; subscribers run in worker processes.

mod chart;
mod conn;
mod http;
mod procstat;
mod publisher;
mod report;
mod sse;
mod subscriber;
mod tally;
mod target;

use std::{
    path::PathBuf,
    process::{ExitCode, Stdio},
    rc::Rc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, ChildStdin},
    sync::mpsc,
    task::LocalSet,
};

use crate::{
    conn::{Alpn, Connector},
    procstat::Server,
    publisher::{DEFAULT_TEMPLATE, Plan, Template},
    report::{NodeFigures, Percentiles, Report, ServerFigures},
    subscriber::{ConnectReport, WorkerArgs, WorkerReport},
    tally::Counts,
    target::{Scheme, Target},
};

/// Extra time a worker process gets past the coordinator's deadline before ending by itself.
const WORKER_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "sse-load",
    version,
    about = "Load-test an SSE server on loopback: N subscribers, P stamped events, exact loss and latency",
    long_about = "Load-test an SSE server on loopback.\n\n\
        Opens N subscribers to URL (spread over 127.0.0.2-254 source addresses, and over several \
        processes when N exceeds the open-file limit; with several URLs, the nodes of a cluster, \
        split evenly over them with loss and latency reported per node), publishes P events to --publish-url with a \
        sequence number and send time in each payload, and matches every received event to its \
        publish: loss, duplicates, reordering and publish→receive latency are exact. Given the \
        server's pid(s), also reports its RSS per subscriber and CPU time per delivered event.\n\n\
        With -P 0 (the default) it only connects, holds the subscribers for --hold and measures \
        memory. Only loopback targets (127.0.0.0/8, ::1) are accepted.\n\n\
        Examples:\n  \
        sse-load http://127.0.0.1:8080/stream -n 10000 -P 1000 --publish-url http://127.0.0.1:8080/publish --server-pid $hub   (hub=$! after starting it)\n  \
        sse-load http://127.0.0.1:8090/sub/bench -n 10000 -P 100 --rate 5 --publish-url http://127.0.0.1:8090/pub/bench --server-pid $(cat nginx.pid) --server-children --json\n  \
        sse-load http://127.0.0.1:8081/stream http://127.0.0.1:8082/stream -n 10000 -P 1000 --publish-url http://127.0.0.1:8081/publish",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Draw one latency chart (SVG) from reports saved with --json.
    Chart(ChartArgs),
    /// A subscriber process started by the coordinator (internal).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
struct ChartArgs {
    /// Where to write the SVG.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "publish → receive latency")]
    title: String,
    /// LABEL=FILE pairs: each FILE holds a report line printed by --json.
    #[arg(required = true)]
    reports: Vec<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// SSE stream to subscribe to, e.g. http://127.0.0.1:8080/stream (loopback only). Several
    /// URLs (the nodes of a cluster) share the subscribers evenly; each is reported on its own.
    #[arg(required = true, num_args = 1..)]
    urls: Vec<String>,
    /// Subscribers to open.
    #[arg(short = 'n', long, default_value_t = 100)]
    subscribers: u64,
    /// Events to publish; 0 = idle mode (connect, hold, measure memory).
    #[arg(short = 'P', long, default_value_t = 0)]
    events: u64,
    /// Where to publish, e.g. http://127.0.0.1:8080/publish (loopback only).
    #[arg(long)]
    publish_url: Option<String>,
    /// HTTP method for publishing.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Payload template: {seq} and {ts} become the sequence number and the send time (µs since
    /// the epoch), {ack} how many leading events were answered when this one was sent (reorder
    /// detection), {pad} as many 'x' as reach --size. Receivers find "seq":N, "ts":N, "ack":N.
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    body: String,
    /// Payload size in bytes, reached by padding {pad}.
    #[arg(short = 's', long, default_value_t = 64)]
    size: usize,
    /// Extra header on publish requests, "Name: value" (repeatable).
    #[arg(long = "publish-header")]
    publish_headers: Vec<String>,
    /// Extra header on subscribe requests, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Publish requests in flight (one keep-alive connection each).
    #[arg(short = 'k', long, default_value_t = 16)]
    in_flight: usize,
    /// Publish at this many events per second instead of as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Connection attempts in progress at once, per process.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Subscriber processes; by default as many as the open-file limit requires. At least one per
    /// URL, and a multiple of the URL count (each process subscribes to one URL).
    #[arg(long)]
    processes: Option<usize>,
    /// Read buffer per subscriber, bytes.
    #[arg(long, default_value_t = 8192)]
    read_buffer: usize,
    /// Pause after all subscribers connect, before measuring memory and publishing.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Idle mode: how long to hold the subscribers before measuring memory.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// After the last publish, how long to wait for every subscriber to get every event.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Deadline for the whole run; everything stops by then.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Server process to measure (memory, CPU); repeatable.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Also measure the descendants of --server-pid (nginx workers under the master).
    #[arg(long)]
    server_children: bool,
    /// Print exactly one line of JSON on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write an SVG latency chart here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// A name for this run in the report and chart.
    #[arg(long, default_value = "")]
    label: String,
    /// No progress bars and no summary on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// PEM file of the certificate(s) to trust for https:// URLs: the CA, or the server's own
    /// self-signed certificate. Nothing else is trusted.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Subscribe over HTTP/2 (TLS with ALPN h2; https:// only): the N subscribers are streams
    /// spread evenly over --connections connections, as a browser with many tabs does.
    /// Publishing stays HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// With --http2: connections the streams are spread over; default one per 100 streams. The
    /// server must allow N / connections concurrent streams per connection.
    #[arg(long, requires = "http2")]
    connections: Option<u64>,
}

/// With --http2 and no --connections: one connection per this many streams (below the 128
/// concurrent streams nginx allows by default).
const STREAMS_PER_CONNECTION: u64 = 100;

/// Streams each HTTP/2 connection carries so that `n` streams use `connections` of them (one per
/// `STREAMS_PER_CONNECTION` by default); at least one.
fn streams_per_connection(n: u64, connections: Option<u64>) -> anyhow::Result<u64> {
    let connections = match connections {
        Some(0) => bail!("--connections must be at least 1"),
        Some(c) => c,
        None => n.div_ceil(STREAMS_PER_CONNECTION),
    };
    Ok(n.div_ceil(connections.max(1)).max(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Worker(args)) => subscriber::run(args),
        Some(Command::Chart(args)) => draw_chart(&args),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sse-load: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Wall-clock µs since the epoch: publisher and subscribers share the machine's clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = LocalSet::new().block_on(&runtime, coordinate(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        if !args.quiet {
            eprint!("{}", report.summary());
        }
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &args.chart {
        let label = if args.label.is_empty() {
            args.urls.join(" ")
        } else {
            args.label.clone()
        };
        chart::draw(
            path,
            "publish → receive latency",
            &[chart::Series {
                label,
                points: report.latency_curve.clone(),
            }],
        )?;
    }
    Ok(())
}

fn draw_chart(args: &ChartArgs) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for pair in &args.reports {
        let (label, file) = pair
            .split_once('=')
            .with_context(|| format!("{pair}: expected LABEL=FILE"))?;
        let text = std::fs::read_to_string(file).with_context(|| format!("read {file}"))?;
        let report: Report = text
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line).ok())
            .with_context(|| format!("{file} holds no report line"))?;
        series.push(chart::Series {
            label: label.to_owned(),
            points: report.latency_curve,
        });
    }
    chart::draw(&args.out, &args.title, &series)
}

/// The soft open-file limit of this process, from /proc/self/limits (None if unreadable).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Subscribers one process may hold: the open-file limit less a margin for everything else.
fn per_process_capacity(limit: u64) -> u64 {
    let margin = (limit / 20).max(64);
    limit.saturating_sub(margin).max(1)
}

/// Splits `n` subscribers over `processes`: (first index, count) each, sizes differing by ≤ 1.
fn split(n: u64, processes: usize) -> Vec<(u64, u64)> {
    let processes = processes.max(1) as u64;
    let mut first = 0;
    (0..processes)
        .map(|i| {
            let count = n / processes + u64::from(i < n % processes);
            let share = (first, count);
            first += count;
            share
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// One worker process's share: which URL it subscribes to, its first subscriber's index overall
/// (source addresses continue across processes) and how many subscribers it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Share {
    node: usize,
    first: u64,
    count: u64,
}

/// Splits `n` subscribers evenly over `nodes` URLs, then each URL's part over `per_node`
/// processes.
fn shares(n: u64, nodes: usize, per_node: usize) -> Vec<Share> {
    split_all(n, nodes)
        .into_iter()
        .enumerate()
        .flat_map(|(node, (first, count))| {
            split(count, per_node).into_iter().map(move |(f, c)| Share {
                node,
                first: first + f,
                count: c,
            })
        })
        .collect()
}

/// Like `split`, but keeps the parts that get no subscriber (a node is reported even then).
fn split_all(n: u64, parts: usize) -> Vec<(u64, u64)> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|i| {
            let before = i * (n / parts) + i.min(n % parts);
            (before, n / parts + u64::from(i < n % parts))
        })
        .collect()
}

/// A protocol line from a worker process.
#[derive(Debug)]
enum FromWorker {
    Progress {
        connected: u64,
        closed: u64,
        unique: u64,
    },
    Connected(ConnectReport),
    Result(Box<WorkerReport>),
    Exited,
}

fn parse_worker_line(line: &str) -> anyhow::Result<FromWorker> {
    let (kind, body) = line.split_once(' ').unwrap_or((line, ""));
    Ok(match kind {
        "progress" => {
            let mut n = body.split_whitespace().map(str::parse::<u64>);
            let mut next = || n.next().and_then(Result::ok).unwrap_or(0);
            FromWorker::Progress {
                connected: next(),
                closed: next(),
                unique: next(),
            }
        }
        "connected" => FromWorker::Connected(serde_json::from_str(body)?),
        "result" => FromWorker::Result(Box::new(serde_json::from_str(body)?)),
        _ => bail!("unexpected line from a worker: {line:?}"),
    })
}

/// What the coordinator knows of one worker process.
#[derive(Debug, Default)]
struct WorkerState {
    /// Index of the URL it subscribes to, and how many subscribers it opens.
    node: usize,
    subscribers: u64,
    connected: u64,
    closed: u64,
    unique: u64,
    connect: Option<ConnectReport>,
    result: Option<WorkerReport>,
    exited: bool,
}

/// The progress display: bars on stderr, hidden with --quiet or when stderr is no terminal.
struct Bars {
    connect: ProgressBar,
    publish: ProgressBar,
    deliver: ProgressBar,
}

impl Bars {
    fn new(quiet: bool, subscribers: u64, events: u64) -> Self {
        let multi = MultiProgress::with_draw_target(if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(5)
        });
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{bar:40.cyan/blue}] {human_pos}/{human_len} {per_sec:>14} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        let bar = |prefix: &'static str, len: u64| {
            let bar = multi.add(ProgressBar::new(len));
            bar.set_style(style.clone());
            bar.set_prefix(prefix);
            bar
        };
        Self {
            connect: bar("connected", subscribers),
            publish: bar("published", events),
            deliver: bar("delivered", events.saturating_mul(subscribers)),
        }
    }

    fn update(&self, workers: &[WorkerState]) {
        self.connect
            .set_position(workers.iter().map(|w| w.connected).sum());
        let closed: u64 = workers.iter().map(|w| w.closed).sum();
        if closed > 0 {
            self.connect.set_message(format!("{closed} closed"));
        }
        self.deliver
            .set_position(workers.iter().map(|w| w.unique).sum());
    }

    fn finish(&self) {
        self.connect.abandon();
        self.publish.abandon();
        self.deliver.abandon();
    }
}

struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    states: Vec<WorkerState>,
    lines: mpsc::UnboundedReceiver<(usize, FromWorker)>,
}

impl Workers {
    /// Applies one message; false once every worker has exited.
    fn apply(&mut self, (w, msg): (usize, FromWorker)) {
        let state = &mut self.states[w];
        match msg {
            FromWorker::Progress {
                connected,
                closed,
                unique,
            } => {
                state.connected = connected;
                state.closed = closed;
                state.unique = unique;
            }
            FromWorker::Connected(report) => {
                state.connected = report.connected;
                state.connect = Some(report);
            }
            FromWorker::Result(report) => {
                state.unique = report.counts.unique;
                state.result = Some(*report);
            }
            FromWorker::Exited => state.exited = true,
        }
    }

    /// Waits for messages until `done` holds for every worker (or it exited), or `until`.
    async fn wait_all(
        &mut self,
        until: Instant,
        bars: &Bars,
        done: impl Fn(&WorkerState) -> bool,
    ) -> bool {
        loop {
            if self.states.iter().all(|s| s.exited || done(s)) {
                return true;
            }
            match tokio::time::timeout_at(until.into(), self.lines.recv()).await {
                Ok(Some(msg)) => self.apply(msg),
                Ok(None) | Err(_) => return false,
            }
            bars.update(&self.states);
        }
    }

    async fn tell_all(&mut self, line: &str) {
        for stdin in self.stdins.iter_mut().flatten() {
            // A worker that died already is noticed when its result is missing.
            let _ = stdin.write_all(line.as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }
}

fn spawn_workers(args: &RunArgs, timeout: Duration) -> anyhow::Result<Workers> {
    let limit = open_file_limit().unwrap_or(1024);
    let capacity = per_process_capacity(limit);
    let nodes = args.urls.len().max(1);
    // A subscriber holds a file of its own over HTTP/1.1; over HTTP/2, its connection does.
    let per_connection = if args.http2 {
        Some(streams_per_connection(args.subscribers, args.connections)?)
    } else {
        None
    };
    let files = |subscribers: u64| subscribers.div_ceil(per_connection.unwrap_or(1));
    let per_node = args.processes.map_or_else(
        || {
            files(args.subscribers.div_ceil(nodes as u64))
                .div_ceil(capacity)
                .max(1) as usize
        },
        |p| p.div_ceil(nodes).max(1),
    );
    let shares = shares(args.subscribers, nodes, per_node);
    if let Some(biggest) = shares.iter().map(|s| s.count).max()
        && files(biggest) > capacity
    {
        bail!(
            "{biggest} subscribers in one process exceed its open-file limit ({limit}, margin included: {capacity}); use more --processes"
        );
    }
    let exe = std::env::current_exe().context("locate the sse-load executable")?;
    let (tx, lines) = mpsc::unbounded_channel();
    let mut workers = Workers {
        children: Vec::new(),
        stdins: Vec::new(),
        states: Vec::new(),
        lines,
    };
    for (w, share) in shares.into_iter().enumerate() {
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("worker")
            .args(["--url", &args.urls[share.node]])
            .args(["--count", &share.count.to_string()])
            .args(["--first-index", &share.first.to_string()])
            .args(["--events", &args.events.to_string()])
            .args([
                "--connect-concurrency",
                &args.connect_concurrency.to_string(),
            ])
            .args(["--read-buffer", &args.read_buffer.to_string()])
            .args(["--timeout-ms", &timeout.as_millis().to_string()]);
        for header in &args.headers {
            command.args(["--header", header]);
        }
        if let Some(ca_file) = &args.ca_file {
            command.arg("--ca-file").arg(ca_file);
        }
        if let Some(per) = per_connection {
            command.args(["--streams-per-connection", &per.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start a worker process")?;
        workers.stdins.push(child.stdin.take());
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = tx.clone();
        tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match parse_worker_line(&line) {
                    Ok(msg) => {
                        let _ = tx.send((w, msg));
                    }
                    Err(err) => eprintln!("sse-load: worker {w}: {err:#}"),
                }
            }
            let _ = tx.send((w, FromWorker::Exited));
        });
        workers.children.push(child);
        workers.states.push(WorkerState {
            node: share.node,
            subscribers: share.count,
            ..WorkerState::default()
        });
    }
    Ok(workers)
}

/// Runs the whole measurement and merges what the workers saw.
async fn coordinate(args: &RunArgs) -> anyhow::Result<Report> {
    if args.urls.is_empty() {
        bail!("a stream URL is required");
    }
    for url in &args.urls {
        let target = Target::parse(url)?;
        if args.http2 && target.scheme != Scheme::Https {
            bail!("--http2 needs https:// URLs (h2 is negotiated in TLS ALPN): {url}");
        }
        let alpn = if args.http2 { Alpn::H2 } else { Alpn::Http1 };
        // Refuses a bad --ca-file here, once, rather than in every worker.
        Connector::new(&target, args.ca_file.as_deref(), alpn)?;
    }
    let plan = if args.events > 0 {
        let publish_url = args
            .publish_url
            .as_deref()
            .context("--publish-url is needed when -P is above 0")?;
        if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            bail!("--rate must be a positive number");
        }
        let target = Target::parse(publish_url)?;
        Some(Plan {
            connector: Connector::new(&target, args.ca_file.as_deref(), Alpn::Http1)?,
            target,
            method: args.method.clone(),
            headers: args.publish_headers.clone(),
            template: Template::parse(&args.body, args.size)?,
            events: args.events,
            in_flight: args.in_flight,
            rate: args.rate,
            deadline: Instant::now() + args.timeout,
        })
    } else {
        None
    };
    let started = Instant::now();
    let deadline = started + args.timeout;
    let server = (!args.server_pids.is_empty())
        .then(|| Server::new(args.server_pids.clone(), args.server_children));
    let before = server.as_ref().map(Server::sample);

    let mut workers = spawn_workers(args, args.timeout + WORKER_GRACE)?;
    let bars = Bars::new(args.quiet, args.subscribers, args.events);
    let mut report = Report {
        label: args.label.clone(),
        url: args.urls.join(" "),
        processes: workers.children.len(),
        subscribers: args.subscribers,
        protocol: if args.http2 {
            "h2".to_owned()
        } else if args.urls.iter().any(|u| u.starts_with("https://")) {
            "http/1.1+tls".to_owned()
        } else {
            "http/1.1".to_owned()
        },
        connections: if args.http2 {
            args.subscribers
                .div_ceil(streams_per_connection(args.subscribers, args.connections)?)
        } else {
            args.subscribers
        },
        ..Report::default()
    };

    // Connect.
    let all_connected = workers
        .wait_all(deadline, &bars, |s| s.connect.is_some())
        .await;
    report.timed_out |= !all_connected;
    let settle = if args.events == 0 {
        args.hold
    } else {
        args.settle
    };
    let settle_until = (Instant::now() + settle).min(deadline);
    // Keep reading progress while settling: a stream the server closes shows up here.
    workers.wait_all(settle_until, &bars, |_| false).await;
    let connected_sample = server.as_ref().map(Server::sample);

    // Publish.
    let connected_total: u64 = workers
        .states
        .iter()
        .filter_map(|s| s.connect.as_ref())
        .map(|c| c.connected)
        .sum();
    let mut cpu_before = None;
    let publish_start_us = now_us();
    let mut expected_per_subscriber = 0;
    if let Some(plan) = plan.filter(|_| connected_total > 0 && !report.timed_out) {
        cpu_before = server.as_ref().map(Server::sample);
        let progress = Rc::new(publisher::Progress::default());
        let mut publishing = tokio::task::spawn_local(publisher::publish(plan, progress.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let outcome = loop {
            tokio::select! {
                outcome = &mut publishing => break outcome?,
                msg = workers.lines.recv() => if let Some(msg) = msg { workers.apply(msg) },
                _ = tick.tick() => {
                    bars.publish.set_position(progress.done.get());
                    bars.update(&workers.states);
                }
            }
        };
        bars.publish.set_position(progress.done.get());
        report.published = outcome.attempted - outcome.failed;
        report.publish_failed = outcome.failed;
        report.publish_error = outcome.first_error;
        report.publish_s = outcome.elapsed.as_secs_f64();
        if let Some(round_trip) = outcome.round_trip {
            let percentiles = Percentiles::of(&round_trip);
            report.publish_round_trip_p50_ms = percentiles.p50;
            report.publish_round_trip_p99_ms = percentiles.p99;
        }
        expected_per_subscriber = report.published;
    }

    // Drain: workers report once every subscriber has every event, or the drain timeout passes.
    let drain_ms = args
        .drain_timeout
        .min(deadline.saturating_duration_since(Instant::now()))
        .as_millis();
    workers
        .tell_all(&format!("published {expected_per_subscriber} {drain_ms}\n"))
        .await;
    let results_by =
        (Instant::now() + args.drain_timeout + Duration::from_secs(5)).min(deadline + WORKER_GRACE);
    if !workers
        .wait_all(results_by, &bars, |s| s.result.is_some())
        .await
    {
        report.timed_out = true;
    }
    let after = server.as_ref().map(Server::sample);
    bars.update(&workers.states);
    bars.finish();
    for child in &mut workers.children {
        let _ = child.start_kill();
    }

    report.load_cpu_s = procstat::own_cpu_us() as f64 / 1e6;
    report.wall_s = started.elapsed().as_secs_f64();
    let states: Vec<&WorkerState> = workers.states.iter().collect();
    merge(
        &mut report,
        &states,
        expected_per_subscriber,
        publish_start_us,
    );
    report.nodes = args
        .urls
        .iter()
        .enumerate()
        .map(|(node, url)| {
            let states: Vec<&WorkerState> =
                states.iter().copied().filter(|s| s.node == node).collect();
            let mut part = Report::default();
            merge(
                &mut part,
                &states,
                expected_per_subscriber,
                publish_start_us,
            );
            NodeFigures::of(url, states.iter().map(|s| s.subscribers).sum(), &part)
        })
        .collect();
    if let (Some(server), Some(before), Some(connected), Some(after)) =
        (&server, before, connected_sample, after)
    {
        let per_subscriber =
            |a: u64, b: u64| (a as f64 - b as f64) * 1024.0 / (report.connected.max(1) as f64);
        let cpu_us = cpu_before.map_or(0, |c| after.cpu_us.saturating_sub(c.cpu_us));
        let writes =
            cpu_before.map_or(0, |c| after.write_syscalls.saturating_sub(c.write_syscalls));
        let per_event = |total: u64| {
            if report.delivered > 0 {
                total as f64 / report.delivered as f64
            } else {
                0.0
            }
        };
        report.server = Some(ServerFigures {
            pids: server.pids(),
            rss_before_kib: before.rss_kib,
            rss_connected_kib: connected.rss_kib,
            rss_after_kib: after.rss_kib,
            pss_before_kib: before.pss_kib,
            pss_connected_kib: connected.pss_kib,
            rss_per_subscriber_bytes: per_subscriber(connected.rss_kib, before.rss_kib),
            pss_per_subscriber_bytes: per_subscriber(connected.pss_kib, before.pss_kib),
            cpu_s: cpu_us as f64 / 1e6,
            cpu_us_per_event: per_event(cpu_us),
            writes_per_event: per_event(writes),
        });
    }
    Ok(report)
}

/// Folds the reports of `states` (every worker, or one node's) into `report`.
fn merge(report: &mut Report, states: &[&WorkerState], per_subscriber: u64, publish_start_us: u64) {
    let mut latency = tally::new_histogram();
    let mut event_max_us = Vec::new();
    let mut connect_us = tally::new_histogram();
    let mut counts = Counts::default();
    let mut last_us = 0;
    for state in states {
        let connect = state
            .result
            .as_ref()
            .map(|r| &r.connect)
            .or(state.connect.as_ref());
        if let Some(c) = connect {
            report.connected += c.connected;
            report.connect_failed += c.failed;
            report.connect_s = report.connect_s.max(c.elapsed_us as f64 / 1e6);
            if report.connect_error.is_none() {
                report.connect_error.clone_from(&c.first_error);
            }
            tally::merge_pairs(&mut connect_us, &c.connect_us);
        }
        let Some(r) = &state.result else {
            report.timed_out = true;
            continue;
        };
        counts.add(&r.counts);
        report.lost += r.lost;
        report.closed_early += r.closed;
        report.drain_timed_out |= r.drain_timed_out;
        report.timed_out |= r.timed_out;
        last_us = last_us.max(r.last_us);
        report.load_cpu_s += r.cpu_us as f64 / 1e6;
        tally::merge_pairs(&mut latency, &r.latency_us);
        tally::merge_event_max(&mut event_max_us, &r.event_max_us);
    }
    report.expected = per_subscriber * report.connected;
    report.delivered = counts.unique;
    report.duplicates = counts.duplicates;
    report.reordered = counts.reordered;
    report.foreign = counts.foreign;
    // A worker that never reported lost everything it should have received.
    report.lost = report
        .lost
        .max(report.expected.saturating_sub(counts.unique));
    if last_us > publish_start_us && counts.unique > 0 {
        report.delivery_s = (last_us - publish_start_us) as f64 / 1e6;
        report.delivered_per_s = counts.unique as f64 / report.delivery_s;
    }
    report.connect_p99_ms = Percentiles::of(&connect_us).p99;
    report.latency_ms = Percentiles::of(&latency);
    report.latency_curve = report::curve(&latency);
    report.complete_ms = Percentiles::of(&tally::completion(
        &event_max_us,
        usize::try_from(report.published).unwrap_or(usize::MAX),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribers split evenly over processes, with consecutive index ranges.
    #[test]
    fn subscribers_split_evenly() {
        assert_eq!(split(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(split(1, 4), vec![(0, 1)]);
        assert_eq!(split(19_500, 2), vec![(0, 9_750), (9_750, 9_750)]);
    }

    /// Several URLs share the subscribers evenly, each part over its own processes, with
    /// source indexes continuing across them; a URL left without subscribers gets no process.
    #[test]
    fn subscribers_split_over_nodes_then_processes() {
        let share = |node, first, count| Share { node, first, count };
        assert_eq!(
            shares(10, 2, 2),
            vec![
                share(0, 0, 3),
                share(0, 3, 2),
                share(1, 5, 3),
                share(1, 8, 2)
            ]
        );
        assert_eq!(shares(5, 1, 1), vec![share(0, 0, 5)]);
        assert_eq!(shares(1, 2, 1), vec![share(0, 0, 1)]);
        assert_eq!(split_all(1, 2), vec![(0, 1), (1, 0)]);
    }

    /// One URL or several parse; the subcommands still do.
    #[test]
    fn command_line_takes_several_urls() {
        let cli = Cli::try_parse_from(["sse-load", "http://127.0.0.1:1/a", "http://127.0.0.1:2/b"])
            .unwrap();
        assert_eq!(cli.run.urls.len(), 2);
        let cli = Cli::try_parse_from(["sse-load", "chart", "--out", "x.svg", "a=b"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Chart(_))));
        assert!(Cli::try_parse_from(["sse-load"]).is_err());
    }

    /// Loss and delivery are counted per node as well as in total.
    #[test]
    fn merge_reports_each_node() {
        let worker = |node, connected, unique, lost| WorkerState {
            node,
            subscribers: connected,
            result: Some(WorkerReport {
                connect: ConnectReport {
                    connected,
                    ..ConnectReport::default()
                },
                counts: Counts {
                    unique,
                    ..Counts::default()
                },
                lost,
                last_us: 2_000_000,
                ..WorkerReport::default()
            }),
            ..WorkerState::default()
        };
        let states = [worker(0, 2, 20, 0), worker(1, 3, 27, 3)];
        let all: Vec<&WorkerState> = states.iter().collect();
        let mut total = Report::default();
        merge(&mut total, &all, 10, 1_000_000);
        assert_eq!((total.expected, total.delivered, total.lost), (50, 47, 3));
        assert!((total.delivered_per_s - 47.0).abs() < 1e-9);
        let mut second = Report::default();
        merge(&mut second, &all[1..], 10, 1_000_000);
        let node = NodeFigures::of("u", 3, &second);
        assert_eq!((node.expected, node.delivered, node.lost), (30, 27, 3));
    }

    /// Below the open-file limit one process suffices; 19,500 at a 20,000 limit needs two.
    #[test]
    fn capacity_keeps_a_margin() {
        let capacity = per_process_capacity(20_000);
        assert!((10_000..19_500).contains(&capacity));
        assert!(open_file_limit().is_some());
    }

    /// HTTP/2 options: one connection per 100 streams by default, --connections spreads the
    /// streams evenly, and --connections needs --http2.
    #[test]
    fn http2_options_spread_streams_over_connections() {
        assert_eq!(streams_per_connection(10_000, None).unwrap(), 100);
        assert_eq!(streams_per_connection(10_000, Some(100)).unwrap(), 100);
        assert_eq!(streams_per_connection(1_000, Some(3)).unwrap(), 334);
        assert_eq!(streams_per_connection(50, None).unwrap(), 50);
        assert_eq!(streams_per_connection(5, Some(10)).unwrap(), 1);
        assert!(streams_per_connection(5, Some(0)).is_err());
        let url = "https://127.0.0.1:1/stream";
        let cli = Cli::try_parse_from([
            "sse-load",
            url,
            "--http2",
            "--connections",
            "7",
            "--ca-file",
            "ca.pem",
        ])
        .unwrap();
        assert!(cli.run.http2);
        assert_eq!(cli.run.connections, Some(7));
        assert_eq!(cli.run.ca_file, Some(PathBuf::from("ca.pem")));
        assert!(Cli::try_parse_from(["sse-load", url, "--connections", "7"]).is_err());
    }

    /// Worker lines parse into their messages.
    #[test]
    fn worker_lines_parse() {
        assert!(matches!(
            parse_worker_line("progress 5 1 40").unwrap(),
            FromWorker::Progress {
                connected: 5,
                closed: 1,
                unique: 40
            }
        ));
        let connected = serde_json::to_string(&ConnectReport::default()).unwrap();
        assert!(matches!(
            parse_worker_line(&format!("connected {connected}")).unwrap(),
            FromWorker::Connected(_)
        ));
        assert!(parse_worker_line("hello").is_err());
    }
}
