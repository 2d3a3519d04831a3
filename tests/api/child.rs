//! The one harness for hubs in child processes (their memory, crashes and stores are their
//! own): the command line the tests run the binary with, spawning and waiting until it
//! listens, signals, and the log it writes.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU16, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

/// The hub binary, built by cargo for these tests.
pub const HUB: &str = env!("CARGO_BIN_EXE_sse-hub");
/// How long a starting hub may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a line the hub wrote may take to reach [`HubLog`] (a loaded machine included).
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The hub binary on `--store store` with `args`, as the child-process tests run it: port 0,
/// two workers, a 200 ms heartbeat, its log at info, and no `SSE_HUB_*` store settings
/// inherited from the environment.
pub fn hub_command(store: &str, args: &[&str]) -> Command {
    hub_command_on("127.0.0.1:0", store, args)
}

/// [`hub_command`] bound to `bind` (a hub restarted on the address it had).
pub fn hub_command_on(bind: &str, store: &str, args: &[&str]) -> Command {
    let mut command = Command::new(HUB);
    command
        .args(["--bind", bind, "--workers", "2", "--heartbeat", "200ms"])
        .args(["--store", store])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("SSE_HUB_STORE")
        .env_remove("SSE_HUB_REDIS_PREFIX")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A hub binary in a child process (its memory, its crash and its store are its own), on the
/// address it logged. Killed on drop.
pub struct ChildHub {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line of its log (stderr), as it comes.
    pub log: HubLog,
}

impl ChildHub {
    /// Spawns `command` (the hub binary and its arguments, binding port 0) with its log piped,
    /// and waits until it listens.
    pub fn spawn(command: Command) -> Self {
        Self::spawn_logged(command, HubLog::default())
    }
}

impl Drop for ChildHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a child hub wrote to stderr, kept so a failing test can show them.
#[derive(Clone, Default)]
pub struct HubLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl HubLog {
    /// The last `n` lines, one per line.
    pub fn tail(&self, n: usize) -> String {
        let lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The whole log once a line holding `needle` has been read. The log is read from the hub's
    /// pipe by a thread, so a line the hub wrote a moment ago may not be here yet: anything
    /// that counts or looks for lines waits for its own line, or for a later one (the access
    /// line of the test's last request), first. Panics after [`LOG_TIMEOUT`] with the log.
    pub fn wait_for(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let lines = self.tail(usize::MAX);
            if lines.contains(needle) {
                return lines;
            }
            assert!(
                started.elapsed() < LOG_TIMEOUT,
                "no {needle:?} in the hub's log within {LOG_TIMEOUT:?}:\n{}",
                self.tail(40)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
    }
}

impl ChildHub {
    /// Like [`ChildHub::spawn`], but every line of the hub's log is also kept in `log`. The
    /// log is read until the listening line, then drained so the hub never blocks on a full
    /// pipe.
    pub fn spawn_logged(mut command: Command, log: HubLog) -> Self {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("the hub binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr_tx, addr_rx) = mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, url)) = line.split_once("listening addr=")
                    && let Some((_, addr)) = url.split_once("://")
                {
                    let _ = addr_tx.send(addr.trim().to_owned());
                }
                kept.push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr.parse().expect("the logged address parses"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("the hub is reaped");
                panic!(
                    "the hub did not listen within {START_TIMEOUT:?} (exit: {status}); its log:\n{}",
                    log.tail(40)
                );
            }
        };
        Self { child, addr, log }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`…) to the hub.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// SIGKILL: no shutdown, no flush, no clean close of a store. Reaped before this returns.
    pub fn kill9(&mut self) {
        self.child.kill().expect("the hub can be killed");
        self.child.wait().expect("the hub is reaped");
    }

    /// Waits (at most `deadline`) for the hub to exit, and returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the hub can be waited for") {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "the hub still runs {deadline:?} later; its log:\n{}",
                self.log.tail(40)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Opens `GET /stream` on a plain socket to the hub at `addr` and reads until its opening
/// comment, so the subscriber is registered; returns the socket (reads time out after 10 s)
/// and what was read: the response head and the opening comment.
pub fn open_raw_stream(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(": connected") {
        let n = stream.read(&mut buf).expect("read opening");
        assert!(n > 0, "closed before the opening comment");
        seen.extend_from_slice(&buf[..n]);
    }
    (stream, seen)
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`…) to process `pid` with kill(1): the tests do not
/// depend on libc.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// A free TCP port on 127.0.0.1, for a child that cannot bind port 0 and report it (Redis, a
/// sentinel, nginx, a hub restarted on its port). It is taken below the kernel's ephemeral
/// range and never twice by this process: between this check and the child's bind, often
/// seconds on a loaded machine, an outgoing connection or another test's `bind(0)` could
/// otherwise be given the same port.
pub fn free_port() -> u16 {
    /// Where the ports handed out start.
    const LOW: u16 = 10_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    assert!(
        high > LOW + 1_000,
        "the ephemeral port range starts at {high}: no room below it for the tests' ports"
    );
    let span = high - LOW;
    // Another test binary running at the same time starts elsewhere.
    let start = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + start.wrapping_add(offset) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {high}");
}
