//! The HTTP layer under the routes, spoken to byte by byte: HTTP/1.0 streams, the errors actix-http
//! answers before any route runs, the memory a connection keeps after a burst, and the house rule
//! that the project's scripts and notes name no package registry's host.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream as StdTcpStream},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::helpers::{ChildHub, FRAME_TIMEOUT, HUB, open_raw_stream, spawn_app};

/// A response read from a raw socket: the head (status line and headers) and the body bytes
/// that followed it.
#[derive(Debug)]
struct RawResponse {
    status_line: String,
    /// Header lines, lower-cased.
    headers: Vec<String>,
    body: Vec<u8>,
}

impl RawResponse {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&bytes[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?.to_owned();
        Some(Self {
            status_line,
            headers: lines.map(str::to_ascii_lowercase).collect(),
            body: bytes[end + 4..].to_vec(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then_some(value.trim())
        })
    }

    /// The body as the `error` message of a JSON error reply, checking its content type.
    fn json_error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let json: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("the body is not JSON ({err}): {self:?}"));
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` string: {json}"))
            .to_owned()
    }
}

/// Sends `request` on a new connection and reads until the hub closes it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request).await.expect("write the request");
    let mut received = Vec::new();
    actix_web::rt::time::timeout(FRAME_TIMEOUT, socket.read_to_end(&mut received))
        .await
        .expect("the hub closes the connection after an error")
        .expect("read the response");
    RawResponse::parse(&received).unwrap_or_else(|| {
        panic!(
            "no response head in {:?}",
            String::from_utf8_lossy(&received)
        )
    })
}

/// Reads from `socket` into `received` until `done` holds for what has arrived.
async fn read_until(socket: &mut TcpStream, received: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    actix_web::rt::time::timeout(FRAME_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while !done(received) {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "the connection closed early after {:?}",
                String::from_utf8_lossy(received)
            );
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not received within {FRAME_TIMEOUT:?}; got {:?}",
            String::from_utf8_lossy(received)
        )
    });
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An HTTP/1.0 subscriber (with or without `Connection: keep-alive`) gets its stream without
/// `Transfer-Encoding: chunked`, which HTTP/1.0 does not have: the events come as they are, and
/// the body ends when the hub closes the connection.
#[actix_web::test]
async fn http10_subscriber_gets_an_unchunked_stream_ended_by_the_connection_close() {
    for connection in ["", "Connection: keep-alive\r\n"] {
        // Arrange
        let app = spawn_app().await;
        let mut socket = TcpStream::connect(app.addr).await.expect("connect");
        let request = format!("GET /stream HTTP/1.0\r\nHost: test\r\n{connection}\r\n");
        socket
            .write_all(request.as_bytes())
            .await
            .expect("write the request");
        let mut received = Vec::new();
        read_until(&mut socket, &mut received, |bytes| {
            RawResponse::parse(bytes).is_some_and(|response| contains(&response.body, b"\n\n"))
        })
        .await;

        // Act
        app.publish("", "hello").await;
        read_until(&mut socket, &mut received, |bytes| {
            contains(bytes, b"data: hello\n\n")
        })
        .await;
        drop(app);
        let mut rest = Vec::new();
        actix_web::rt::time::timeout(FRAME_TIMEOUT, socket.read_to_end(&mut rest))
            .await
            .expect("the hub closes the connection when it stops")
            .expect("read to the end");
        received.extend_from_slice(&rest);

        // Assert
        let response = RawResponse::parse(&received).expect("a response head");
        assert_eq!(response.status_line, "HTTP/1.0 200 OK", "{request:?}");
        assert_eq!(response.header("transfer-encoding"), None, "{response:?}");
        assert_eq!(response.header("content-length"), None, "{response:?}");
        assert_ne!(
            response.header("connection"),
            Some("keep-alive"),
            "an HTTP/1.0 stream cannot be kept alive: {response:?}"
        );
        let body = String::from_utf8_lossy(&response.body);
        assert!(
            body.starts_with(':'),
            "the body starts with the opening comment, not a chunk size: {body:?}"
        );
        assert!(
            !body.contains("\r\n"),
            "no chunk framing (sizes, CRLFs, a last chunk) in the body: {body:?}"
        );
        assert!(body.contains("data: hello\n\n"), "{body:?}");
    }
}

/// HTTP/1.1 subscribers are unchanged: their stream is chunked.
#[actix_web::test]
async fn http11_subscriber_still_gets_a_chunked_stream() {
    let app = spawn_app().await;
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    socket
        .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write the request");

    let mut received = Vec::new();
    read_until(&mut socket, &mut received, |bytes| {
        RawResponse::parse(bytes).is_some_and(|response| contains(&response.body, b"\n\n\r\n"))
    })
    .await;

    let response = RawResponse::parse(&received).expect("a response head");
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    assert_eq!(
        response.header("transfer-encoding"),
        Some("chunked"),
        "{response:?}"
    );
    assert!(
        response.body.starts_with(b"D\r\n: connected\n\n\r\n"),
        "the opening comment is one chunk: {response:?}"
    );
}

/// A request head larger than actix-http's limits (128 KiB, or more than 96 header fields) is
/// refused with 431 as before, now with a JSON `{"error": "..."}` body naming the problem.
#[actix_web::test]
async fn oversized_request_head_gets_a_json_431() {
    let app = spawn_app().await;
    // Exactly the 128 KiB limit of a head that never ends: the hub reads all of it, so it
    // closes the connection without unread bytes (which would make it a reset).
    let mut long_head = b"GET /stream HTTP/1.1\r\nHost: test\r\nX-Long: ".to_vec();
    long_head.resize(128 * 1024, b'a');
    let mut many_fields = String::from("GET /stream HTTP/1.1\r\nHost: test\r\n");
    for n in 0..100 {
        many_fields.push_str(&format!("X-Field-{n}: {n}\r\n"));
    }
    many_fields.push_str("\r\n");

    for request in [long_head, many_fields.into_bytes()] {
        let response = exchange(app.addr, &request).await;

        assert_eq!(
            response.status_line, "HTTP/1.1 431 Request Header Fields Too Large",
            "{response:?}"
        );
        let message = response.json_error();
        assert!(
            message.contains("request head too large"),
            "error {message:?}"
        );
    }
}

/// Requests actix-http cannot parse (a malformed request line, an unknown HTTP version, a
/// control character in the target, contradictory framing headers) are refused with 400 as
/// before, now with a JSON `{"error": "..."}` body naming the problem.
#[actix_web::test]
async fn malformed_request_gets_a_json_400() {
    let app = spawn_app().await;
    let cases: [(&[u8], &str); 4] = [
        (
            b"GET /stream HTTP/9.9\r\nHost: test\r\n\r\n",
            "HTTP version",
        ),
        (
            b"GET /stream HTTP/1.1 extra\r\nHost: test\r\n\r\n",
            "request line",
        ),
        (
            b"GET /str\x01eam HTTP/1.1\r\nHost: test\r\n\r\n",
            "request line",
        ),
        (
            b"POST /publish HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
            "framing",
        ),
    ];

    for (request, needle) in cases {
        let response = exchange(app.addr, request).await;

        let request = String::from_utf8_lossy(request);
        assert_eq!(
            response.status_line, "HTTP/1.1 400 Bad Request",
            "{request:?}: {response:?}"
        );
        let message = response.json_error();
        assert!(
            message.contains(needle),
            "{request:?}: error {message:?} should mention {needle:?}"
        );
    }
}

/// Subscribers of the burst test; each is a raw socket of the test process.
const BURST_SUBSCRIBERS: usize = 100;
/// Events in the burst.
const BURST_EVENTS: usize = 4;
/// Bytes of data per event: about what one write of a burst of small events carries, once the
/// queued events are joined into one chunk (up to 64 KiB, `MAX_CHUNK_BYTES` in src/sse.rs).
const BURST_EVENT_BYTES: usize = 60 * 1024;
/// Bytes of memory the hub may keep per subscriber after the burst, above what it held when
/// they were idle. Before connections released their write buffers, about 64 KiB stayed.
const KEPT_BYTES_PER_SUBSCRIBER: u64 = 16 * 1024;

impl ChildHub {
    /// Starts the hub with `args`, its allocator returning freed memory at once.
    fn with_args(args: &[&str]) -> Self {
        let mut command = Command::new(HUB);
        command
            .args(["--bind", "127.0.0.1:0", "--workers", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            // Freed memory goes back to the system at once, so RSS shows what is still held.
            .env("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0");
        Self::spawn(command)
    }

    /// Resident memory of the hub process, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status is readable (Linux)");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line");
        kib * 1024
    }

    fn publish(&self, body: &str) {
        let mut socket = StdTcpStream::connect(self.addr).expect("connect to publish");
        socket
            .set_read_timeout(Some(FRAME_TIMEOUT))
            .expect("read timeout");
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        socket
            .write_all(request.as_bytes())
            .expect("write the publish");
        let mut response = Vec::new();
        socket.read_to_end(&mut response).expect("read the reply");
        assert!(
            response.starts_with(b"HTTP/1.1 200 "),
            "publish: {}",
            String::from_utf8_lossy(&response)
        );
    }
}

/// Counts the events (frames with a `data:` line) in a stream read piece by piece.
#[derive(Default)]
struct EventCounter {
    events: usize,
    /// The end of the previous piece, which may hold the start of a marker.
    tail: Vec<u8>,
}

impl EventCounter {
    const MARKER: &[u8] = b"\ndata: ";

    fn feed(&mut self, piece: &[u8]) {
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(piece);
        self.events += joined
            .windows(Self::MARKER.len())
            .filter(|w| *w == Self::MARKER)
            .count();
        let keep = joined.len().min(Self::MARKER.len() - 1);
        self.tail = joined[joined.len() - keep..].to_vec();
    }
}

/// After a burst of large writes (each as large as a burst of small events joined into one
/// chunk), the hub gives the connections' write buffers back: what it holds per subscriber once
/// they have read the burst stays within a few KiB of what it held while they were idle.
#[test]
fn memory_after_a_burst_goes_back_to_the_idle_level() {
    // Arrange: a hub that keeps one event of history, and subscribers that read all the time.
    let hub = ChildHub::with_args(&["--history-size", "1"]);
    let readers: Vec<_> = (0..BURST_SUBSCRIBERS)
        .map(|_| {
            // Registered and written to: the head and the opening comment were read.
            let (mut socket, opening) = open_raw_stream(hub.addr);
            assert!(opening.starts_with(b"HTTP/1.1 200 OK"));
            std::thread::spawn(move || {
                let mut counter = EventCounter::default();
                let mut buf = vec![0u8; 64 * 1024];
                while counter.events < BURST_EVENTS {
                    let n = socket.read(&mut buf).expect("read the burst");
                    assert!(n > 0, "the stream ended during the burst");
                    counter.feed(&buf[..n]);
                }
                socket
            })
        })
        .collect();
    // Every connection has written its response head and opening comment; let it settle.
    std::thread::sleep(Duration::from_millis(300));
    let idle = hub.rss_bytes();

    // Act
    let data = "x".repeat(BURST_EVENT_BYTES);
    for _ in 0..BURST_EVENTS {
        hub.publish(&data);
    }
    // Kept open until the end: a closed subscriber frees everything anyway.
    let subscribers: Vec<StdTcpStream> = readers
        .into_iter()
        .map(|reader| reader.join().expect("a reader thread"))
        .collect();

    // Assert: polled, since the last writes may still be finishing.
    let limit = idle + KEPT_BYTES_PER_SUBSCRIBER * BURST_SUBSCRIBERS as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = hub.rss_bytes();
    while after > limit && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = hub.rss_bytes();
    }
    let per_subscriber = after.saturating_sub(idle) / BURST_SUBSCRIBERS as u64;
    assert!(
        after <= limit,
        "the hub keeps {per_subscriber} bytes per subscriber after the burst (idle {idle} B, \
         after {after} B); at most {KEPT_BYTES_PER_SUBSCRIBER} allowed"
    );
    drop(subscribers);
}

/// The project's scripts and notes name no package registry's host: check-vendor gets the
/// published crate through cargo, and the smoke test leaves debootstrap its default mirror.
#[test]
fn scripts_and_vendor_notes_name_no_registry_host() {
    // A host name: dot-separated labels ending in a top-level domain registries use. A fully
    // qualified container image name (`host/library/debian:...`, which the smoke test gives the
    // base image it makes itself, never pulled) is a name, not a place anything is fetched from.
    let host =
        regex::Regex::new(r"(?i)\b[a-z0-9-]+(\.[a-z0-9-]+)*\.(io|org|com|net)\b(/library/)?")
            .expect("a valid regex");
    for path in [
        "scripts/check-vendor",
        "vendor/README.md",
        "docker/smoke-test",
    ] {
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|err| panic!("read {path}: {err}"));
        let hosts: Vec<&str> = host
            .find_iter(&text)
            .map(|m| m.as_str())
            .filter(|name| !name.ends_with("/library/"))
            .collect();
        assert!(hosts.is_empty(), "{path} names hosts: {hosts:?}");
    }
}
