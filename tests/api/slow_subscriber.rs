//! A subscriber that stops reading is dropped once its buffer fills, and nobody waits on it.

use std::{
    io::Write as _,
    net::TcpStream,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};

use crate::helpers::{SETTLE_TIMEOUT, spawn_app_with};

const EVENTS: usize = 1000;
const READERS: usize = 100;

/// Opens `GET /stream` on a socket with a tiny receive buffer, and never reads from it.
fn stalled_subscriber(addr: std::net::SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .set_recv_buffer_size(2048)
        .expect("small receive buffer");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("write request");
    stream
}

/// While a raw TCP subscriber never reads, 100 others receive every one of 1000 events in
/// order, the stalled one is dropped (counted), and no publish waits on it.
#[actix_web::test]
async fn slow_subscriber_is_dropped_without_delaying_others() {
    let app = spawn_app_with(|s| s.subscriber_buffer = 32).await;
    let _stalled = stalled_subscriber(app.addr);
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut stream = app.subscribe("/stream").await;
        readers.push(actix_web::rt::spawn(async move {
            let mut seen = Vec::with_capacity(EVENTS);
            while seen.len() < EVENTS {
                let event = stream.next_event().await;
                let data = event.data.expect("data");
                seen.push((event.id.expect("id"), data[..5].to_owned()));
            }
            seen
        }));
    }
    app.wait_for_stats(SETTLE_TIMEOUT, |s| s["subscribers"] == READERS + 1)
        .await;

    // 1000 events of 6 KiB: more than the kernel's largest send buffer (4 MiB here) plus
    // actix's write buffer can absorb, so the stalled subscriber's channel must fill.
    let padding = "x".repeat(6144);
    let mut ids = Vec::with_capacity(EVENTS);
    let mut slowest = Duration::ZERO;
    for n in 0..EVENTS {
        let started = Instant::now();
        ids.push(app.publish("", &format!("{n:05} {padding}")).await);
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest of {EVENTS} publishes took {slowest:?}");

    for reader in readers {
        let seen = reader.await.expect("reader finished");
        let want: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| (id.clone(), format!("{n:05}")))
            .collect();
        assert_eq!(seen, want, "every event, once, in order");
    }
    let stats = app.stats().await;
    assert_eq!(stats["subscribers_dropped_slow_total"], 1, "{stats}");
    let delivered = stats["events_delivered_total"].as_u64().expect("a count") as usize;
    assert!(
        (READERS * EVENTS..READERS * EVENTS + EVENTS).contains(&delivered),
        "the stalled subscriber got only part of the events before it was dropped: {stats}"
    );
    // A blocking send would hang on the stalled subscriber forever; a generous bound
    // catches that without timing anything that matters for performance (a loaded machine
    // stalls a publish for seconds now and then).
    assert!(
        slowest < Duration::from_secs(20),
        "a publish waited {slowest:?}"
    );
}

/// Once dropped, a subscriber that still does not read has its connection closed by the
/// kernel after the write timeout (TCP_USER_TIMEOUT), instead of holding it forever by
/// acknowledging zero-window probes.
#[actix_web::test]
async fn stalled_subscriber_connection_is_closed_after_the_write_timeout() {
    let app = spawn_app_with(|s| {
        s.subscriber_buffer = 8;
        s.body_limit_bytes = 1 << 20;
        s.write_timeout = Duration::from_secs(1);
    })
    .await;
    let stalled = stalled_subscriber(app.addr);
    app.wait_for_stats(SETTLE_TIMEOUT, |s| s["subscribers"] == 1)
        .await;

    // More than the kernel buffers and actix's write buffer can hold (about 4.1 MiB here), until
    // the subscriber is dropped as slow; or until it is gone already: on a starved machine the
    // publishes can be slow enough for the write timeout to close the connection first.
    let big = "x".repeat(64 * 1024);
    let mut published = 0;
    loop {
        let stats = app.stats().await;
        if stats["subscribers_dropped_slow_total"] != 0 || stats["subscribers"] == 0 {
            break;
        }
        assert!(
            published < 512,
            "the stalled subscriber was never dropped: {stats}"
        );
        app.publish("", &big).await;
        published += 1;
    }

    // The kernel aborts without a reset, so the test looks at the server's side of the
    // connection in the kernel's socket table.
    let client_port = stalled.local_addr().expect("local address").port();
    let started = Instant::now();
    while server_side_is_open(app.addr.port(), client_port) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stalled connection is still open"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "dropped after {published} events of 64 KiB; connection closed {:?} later",
        started.elapsed()
    );
}

/// Whether /proc/net/tcp lists the server end (local `server_port`, remote `client_port`).
fn server_side_is_open(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("Linux's /proc/net/tcp");
    let local = format!(":{server_port:04X} ");
    let remote = format!(":{client_port:04X} ");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(l), Some(r)) = (fields.next(), fields.next()) else {
            return false;
        };
        format!("{l} ").ends_with(&local) && format!("{r} ").ends_with(&remote)
    })
}
