//! Test harness: spawns the real hub on `127.0.0.1:0` through `startup::Application`, and an
//! SSE reader that parses frames chunk by chunk with a timeout.

use std::{
    io::BufReader,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;
use awc::{Client, ClientResponse, Connector};
use bytes::BytesMut;
use futures_util::StreamExt as _;
use serde_json::Value;
use sse_hub::{
    config::Settings,
    startup::{Application, Stopper},
};

pub use crate::child::{
    ChildHub, HUB, HubLog, free_port, hub_command, open_raw_stream, send_signal,
};

/// How long any single expected frame may take before a test fails.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an expected event may take, keep-alives arriving meanwhile or not (longer than a
/// cluster test's recovery from a Redis restart).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the hub's counts may take to settle after a connection opens or closes (it notices
/// a closed one, prunes it and frees what it held): milliseconds on a quiet machine.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A running hub and a client for it. Dropping it stops the hub.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    stopper: Stopper,
}

/// Settings for tests: an ephemeral port, a 50 ms heartbeat, two workers.
pub fn test_settings() -> Settings {
    Settings {
        bind: "127.0.0.1:0".parse().expect("literal address"),
        heartbeat: Duration::from_millis(50),
        workers: 2,
        ..Settings::default()
    }
}

/// Starts the hub with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the hub with test settings adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut settings = test_settings();
    adjust(&mut settings);
    let app = Application::build(settings).expect("the hub binds an ephemeral port");
    let addr = app.addr();
    let stopper = app.stopper();
    actix_web::rt::spawn(app.run());
    TestApp {
        addr,
        client: client(),
        stopper,
    }
}

/// An HTTP client without a connection limit, for hundreds of concurrent streams.
pub fn client() -> Client {
    Client::builder()
        .connector(Connector::new().limit(0))
        .timeout(Duration::from_secs(30))
        .finish()
}

impl TestApp {
    /// Stops the hub the way a signal does (streams ended, then the server).
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Opens a stream on `path` and waits for its opening comment, so the subscriber is
    /// registered when this returns.
    pub async fn subscribe(&self, path: &str) -> SseStream {
        self.subscribe_with(path, &[]).await
    }

    pub async fn subscribe_with(&self, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut req = self.client.get(self.url(path));
        for header in headers {
            req = req.insert_header(*header);
        }
        let response = req.send().await.expect("the stream request is answered");
        assert_eq!(response.status(), StatusCode::OK, "subscribe to {path}");
        SseStream::opened(response).await
    }

    /// Publishes `body` with `POST /publish?{query}` and returns the event id.
    pub async fn publish(&self, query: &str, body: &str) -> String {
        let (status, text) = self.post(&format!("/publish?{query}"), body).await;
        assert_eq!(status, StatusCode::OK, "publish failed: {text}");
        text
    }

    pub async fn post(&self, path: &str, body: &str) -> (StatusCode, String) {
        let mut response = self
            .client
            .post(self.url(path))
            .send_body(body.to_owned())
            .await
            .expect("the publish request is answered");
        let body = response.body().limit(1 << 24).await.expect("a body");
        (
            response.status(),
            String::from_utf8(body.to_vec()).expect("utf-8 body"),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let mut response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("the request is answered");
        let body = response.body().limit(1 << 24).await.expect("a body");
        (
            response.status(),
            String::from_utf8(body.to_vec()).expect("utf-8 body"),
        )
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.get("/stats").await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str(&body).expect("stats are JSON")
    }

    /// Polls `/stats` until `check` holds, failing after `deadline`.
    pub async fn wait_for_stats(
        &self,
        deadline: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let stats = self.stats().await;
            if check(&stats) {
                return stats;
            }
            assert!(
                start.elapsed() < deadline,
                "condition not reached within {deadline:?}; stats: {stats}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let stopper = self.stopper.clone();
        actix_web::rt::spawn(async move { stopper.stop().await });
    }
}

/// Asserts a JSON error reply: the status, and an `error` message containing `needle`.
pub fn assert_json_error(status: StatusCode, body: &str, expected: StatusCode, needle: &str) {
    assert_eq!(status, expected, "body: {body}");
    let json: Value = serde_json::from_str(body).expect("error bodies are JSON");
    let message = json["error"].as_str().expect("an `error` string");
    assert!(
        message.contains(needle),
        "error {message:?} should mention {needle:?}"
    );
}

/// One parsed SSE frame: an event, or a comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comment: Option<String>,
    /// The frame's bytes as they came, blank line included.
    pub raw: String,
}

/// Parses one frame (without its terminating blank line) the way the WHATWG parser does.
pub fn parse_frame(raw: &str) -> Frame {
    let mut frame = Frame {
        raw: format!("{raw}\n\n"),
        ..Frame::default()
    };
    for line in raw.split('\n') {
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "" => frame.comment = Some(value.to_owned()),
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "retry" => frame.retry = Some(value.to_owned()),
            "data" => match &mut frame.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => frame.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    frame
}

/// An open SSE response read chunk by chunk.
pub struct SseStream {
    response: ClientResponse,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no blank line, so big frames are scanned once.
    scanned: usize,
    /// The id of the last event read, as a browser would keep it for reconnecting.
    pub last_event_id: Option<String>,
}

impl SseStream {
    pub fn new(response: ClientResponse) -> Self {
        Self {
            response,
            buffer: BytesMut::new(),
            scanned: 0,
            last_event_id: None,
        }
    }

    /// The stream of a `200` response, its opening comment read.
    pub async fn opened(response: ClientResponse) -> Self {
        let mut stream = Self::new(response);
        let opening = stream.next_frame().await.expect("an opening frame");
        assert!(
            opening.comment.is_some(),
            "the stream opens with a comment, got {opening:?}"
        );
        stream
    }

    pub fn headers(&self) -> &actix_web::http::header::HeaderMap {
        self.response.headers()
    }

    /// The next frame (event or comment), or `None` when the stream ends. Fails the test if
    /// nothing arrives within [`FRAME_TIMEOUT`].
    pub async fn next_frame(&mut self) -> Option<Frame> {
        self.next_frame_within(FRAME_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no frame within {FRAME_TIMEOUT:?}"))
    }

    /// Like [`Self::next_frame`], but `None` on timeout and `Some(None)` at the end.
    pub async fn next_frame_within(&mut self, timeout: Duration) -> Option<Option<Frame>> {
        self.read_frame(timeout)
            .await
            .map(|read| read.unwrap_or_else(|err| panic!("stream broke: {err}")))
    }

    /// Like [`Self::next_frame_within`], but a broken connection (the hub was killed) counts
    /// as the end of the stream.
    pub async fn next_frame_or_end(&mut self, timeout: Duration) -> Option<Option<Frame>> {
        self.read_frame(timeout)
            .await
            .map(Result::unwrap_or_default)
    }

    /// `None` on timeout; else the next frame, `Ok(None)` at the end, or the error that broke
    /// the stream.
    async fn read_frame(
        &mut self,
        timeout: Duration,
    ) -> Option<Result<Option<Frame>, awc::error::PayloadError>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(Ok(Some(frame)));
            }
            match tokio::time::timeout_at(deadline, self.response.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Ok(None)),
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Some(Err(err))) => return Some(Err(err)),
            }
        }
    }

    /// The first complete frame in the buffer, if there is one.
    fn take_frame(&mut self) -> Option<Frame> {
        let from = self.scanned.saturating_sub(1);
        let Some(end) = find_blank_line(&self.buffer[from..]).map(|at| at + from) else {
            self.scanned = self.buffer.len();
            return None;
        };
        self.scanned = 0;
        let raw = self.buffer.split_to(end + 2);
        let frame = parse_frame(std::str::from_utf8(&raw[..end]).expect("frames are UTF-8"));
        if frame.id.is_some() {
            self.last_event_id.clone_from(&frame.id);
        }
        Some(frame)
    }

    /// The next event, skipping comments (keep-alives). Fails the test if none arrives within
    /// [`EVENT_TIMEOUT`], however many keep-alives come meanwhile.
    pub async fn next_event(&mut self) -> Frame {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame_within(left).await {
                None => panic!("no event within {EVENT_TIMEOUT:?} (keep-alives only, if anything)"),
                Some(None) => panic!("the stream ended before an event"),
                Some(Some(frame)) if frame.comment.is_none() => return frame,
                Some(Some(_)) => {}
            }
        }
    }

    /// Reads events until the one with id `last`, which must come within the event timeout;
    /// returns them all, `last` included.
    pub async fn events_until(&mut self, last: &str) -> Vec<Frame> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await;
            let done = event.id.as_deref() == Some(last);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Asserts that no event (only comments, if anything) arrives within `wait`.
    pub async fn assert_no_event_within(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_frame_within(left).await {
                None => return,
                Some(Some(frame)) if frame.comment.is_some() => continue,
                Some(other) => panic!("expected no event, got {other:?}"),
            }
        }
    }
}

fn find_blank_line(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n")
}

/// A query string (without `?`) with each value percent-encoded, keys repeated as given:
/// topics and templates carry `/`, `{`, `+` and `#`, which must not reach the hub raw.
pub fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Whether a throwaway Redis keeps its data across a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// An append-only file fsynced on every write: a SIGKILL loses nothing acknowledged.
    Durable,
    /// Nothing on disk: a restart comes back empty.
    Off,
}

/// How long redis-server may take to answer PING after a start (loading its data included).
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on a free 127.0.0.1 port, with its own directory (its data
/// and its log). Killed on drop; [`RedisServer::restart`] brings it back on the same port and
/// directory.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
    child: Option<Child>,
    /// Whether `port` is a TLS port (`redis.crt`, `redis.key` and `ca.crt` in `dir`).
    tls: bool,
    /// The port of the primary this server replicates, if it is a replica.
    replica_of: Option<u16>,
}

impl RedisServer {
    /// Starts redis-server and waits until it answers. Fails the test, naming the package,
    /// when redis-server is not installed.
    pub fn start(persistence: Persistence) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            persistence,
            child: None,
            tls: false,
            replica_of: None,
        };
        server.spawn();
        server
    }

    /// Starts a replica of `primary` (no persistence) and waits until it answers; the
    /// primary counts it once its sync is done ([`RedisServer::replicas`]).
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            persistence: Persistence::Off,
            child: None,
            tls: false,
            replica_of: Some(primary.port),
        };
        server.spawn();
        server
    }

    /// One entry per stream node, so `XADD … MAXLEN ~` trims exactly (a test of the trim
    /// needs to know what is left).
    pub fn trim_exactly(&self) {
        assert_eq!(
            self.command(&["CONFIG", "SET", "stream-node-max-entries", "1"]),
            Resp::Simple("OK".to_owned())
        );
    }

    /// The replicas of this server that are in sync (`state=online` in `INFO replication`):
    /// those a `WAIT` can count.
    pub fn replicas(&self) -> usize {
        match self.command(&["INFO", "replication"]) {
            Resp::Bulk(Some(info)) => info
                .lines()
                .filter(|line| line.starts_with("slave") && line.contains("state=online"))
                .count(),
            other => panic!("INFO replication: {other:?}"),
        }
    }

    /// Starts redis-server with only a TLS port, serving `cert` and `key` (PEM), and waits
    /// until it is ready. Clients are not asked for certificates.
    pub fn start_tls(cert: &str, key: &str, ca: &str) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            persistence: Persistence::Off,
            child: None,
            tls: true,
            replica_of: None,
        };
        for (name, pem) in [("redis.crt", cert), ("redis.key", key), ("ca.crt", ca)] {
            std::fs::write(server.dir.path().join(name), pem).expect("the TLS files are written");
        }
        server.spawn();
        server
    }

    /// The `--store` value for a hub on this server.
    pub fn url(&self) -> String {
        if self.tls {
            return format!("rediss://127.0.0.1:{}", self.port);
        }
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no last write. Reaped before this returns, so the port is free.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("redis-server can be killed");
            child.wait().expect("redis-server is reaped");
        }
    }

    /// Starts it again on the same port and directory (with its data, if [`Persistence::Durable`]),
    /// and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one command and returns the reply (an error reply is a [`Resp::Error`], not a
    /// failure). Fails the test if the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Resp {
        self.try_command(args)
            .unwrap_or_else(|err| panic!("redis {args:?}: {err}; log:\n{}", self.log_tail(20)))
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<Resp> {
        redis_command(self.port, args)
    }

    fn spawn(&mut self) {
        let binary = find_on_path("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server is not installed (expected on PATH, e.g. /usr/bin/redis-server \
                 from the Debian package redis-server, which scripts/test installs)"
            )
        });
        let dir = self.dir.path();
        let mut command = Command::new(binary);
        if self.tls {
            command
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(dir.join("redis.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("redis.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.arg("--port").arg(self.port.to_string());
        }
        if let Some(primary) = self.replica_of {
            command
                .args(["--replicaof", "127.0.0.1"])
                .arg(primary.to_string());
        }
        command
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(["--save", ""]);
        match self.persistence {
            Persistence::Durable => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
            Persistence::Off => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        self.wait_until_ready();
    }

    /// Polls PING until PONG: refused while it binds, `-LOADING` while it reads its data.
    fn wait_until_ready(&mut self) {
        let start = Instant::now();
        loop {
            // Over TLS this plain client cannot PING: the server says when it is ready.
            let ready = if self.tls {
                self.log_tail(50).contains("Ready to accept connections")
            } else {
                matches!(self.try_command(&["PING"]), Ok(Resp::Simple(pong)) if pong == "PONG")
            };
            if ready {
                return;
            }
            let child = self.child.as_mut().expect("a running server");
            if let Some(status) = child.try_wait().expect("redis-server can be waited for") {
                panic!(
                    "redis-server exited at start ({status}); log:\n{}",
                    self.log_tail(20)
                );
            }
            assert!(
                start.elapsed() < REDIS_START_TIMEOUT,
                "redis-server did not answer PING within {REDIS_START_TIMEOUT:?}; log:\n{}",
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("redis-server log (last lines):\n{}", self.log_tail(20));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one command to the Redis (or sentinel) on 127.0.0.1:`port` and reads the reply.
pub fn redis_command(port: u16, args: &[&str]) -> std::io::Result<Resp> {
    use std::io::Write as _;
    let socket = std::net::TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(FRAME_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    (&socket).write_all(&request)?;
    Resp::read(&mut BufReader::new(socket))
}

/// The first `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A Redis reply (RESP2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    fn read(reader: &mut impl std::io::BufRead) -> std::io::Result<Self> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line
            .split_at_checked(1)
            .ok_or_else(|| invalid(line.to_owned()))?;
        let number = || -> std::io::Result<i64> {
            rest.parse()
                .map_err(|_| invalid(format!("not a number: {line}")))
        };
        Ok(match kind {
            "+" => Self::Simple(rest.to_owned()),
            "-" => Self::Error(rest.to_owned()),
            ":" => Self::Integer(number()?),
            "$" => match usize::try_from(number()?) {
                Err(_) => Self::Bulk(None),
                Ok(len) => {
                    let mut bytes = vec![0; len + 2];
                    reader.read_exact(&mut bytes)?;
                    bytes.truncate(len);
                    Self::Bulk(Some(String::from_utf8_lossy(&bytes).into_owned()))
                }
            },
            "*" => match usize::try_from(number()?) {
                Err(_) => Self::Array(None),
                Ok(len) => Self::Array(Some(
                    (0..len)
                        .map(|_| Self::read(reader))
                        .collect::<std::io::Result<_>>()?,
                )),
            },
            _ => return Err(invalid(format!("unknown reply: {line}"))),
        })
    }
}
