//! Graceful shutdown of the real binary: streams end and the process exits promptly.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const SUBSCRIBERS: usize = 500;

/// Reads until the opening comment of a stream has arrived.
fn open_stream(addr: SocketAddr) -> TcpStream {
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
    stream
}

/// With 500 open subscribers, the server binary ends every stream and exits within 2 s of
/// SIGTERM (actix alone would wait 30 s for responses that never end).
#[test]
fn server_with_500_subscribers_exits_within_2s_of_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-hub"))
        .args(["--bind", "127.0.0.1:0", "--workers", "2"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr: SocketAddr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once("listening addr=http://")
                .map(|(_, addr)| addr.trim().parse().expect("an address"))
        })
        .expect("the bound address is logged at info");
    // Keep draining the log so the server never blocks on a full pipe.
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let mut streams: Vec<TcpStream> = (0..SUBSCRIBERS).map(|_| open_stream(addr)).collect();

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = signalled.elapsed();
    eprintln!("exited {exit} {took:?} after SIGTERM with {SUBSCRIBERS} subscribers");
    assert!(exit.success(), "clean exit, got {exit}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // Every stream was ended by the server (EOF), not cut by the test.
    for stream in &mut streams {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("the stream ends");
    }
    let log = log.join().expect("log thread");
    assert!(
        log.iter().any(|l| l.contains("SIGTERM received")),
        "the shutdown is logged: {log:?}"
    );
}
