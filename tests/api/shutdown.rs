//! Graceful shutdown of the real binary: streams end and the process exits promptly.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::child::{ChildHub, hub_command};

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

/// With 500 open subscribers, the server binary ends every stream and exits promptly on
/// SIGTERM (actix alone would wait 30 s for responses that never end). The time is printed (35 ms
/// on a quiet machine, README); the bound only tells the hub's shutdown from actix's wait, as a
/// tighter one would fail on a loaded machine whatever the hub does.
#[test]
fn server_with_500_subscribers_exits_promptly_on_sigterm() {
    let mut hub = ChildHub::spawn(hub_command("memory", &[]));
    let mut streams: Vec<TcpStream> = (0..SUBSCRIBERS).map(|_| open_stream(hub.addr)).collect();

    let signalled = Instant::now();
    hub.signal("TERM");
    let exit = hub.wait_exit(Duration::from_secs(20));
    let took = signalled.elapsed();
    eprintln!("exited {exit} {took:?} after SIGTERM with {SUBSCRIBERS} subscribers");
    assert!(exit.success(), "clean exit, got {exit}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Every stream was ended by the server (EOF), not cut by the test.
    for stream in &mut streams {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("the stream ends");
    }
    hub.log.wait_for("SIGTERM received");
}
