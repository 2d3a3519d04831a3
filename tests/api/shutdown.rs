//! Graceful shutdown of the real binary: streams end and the process exits promptly.

use std::{
    io::Read as _,
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::child::{ChildHub, hub_command, open_raw_stream};

const SUBSCRIBERS: usize = 500;

/// With 500 open subscribers, the server binary ends every stream and exits promptly on
/// SIGTERM (actix alone would wait 30 s for responses that never end). The time is printed (35 ms
/// on a quiet machine, README); the bound only tells the hub's shutdown from actix's wait, as a
/// tighter one would fail on a loaded machine whatever the hub does.
#[test]
fn server_with_500_subscribers_exits_promptly_on_sigterm() {
    let mut hub = ChildHub::spawn(hub_command("memory", &[]));
    let mut streams: Vec<TcpStream> = (0..SUBSCRIBERS)
        .map(|_| open_raw_stream(hub.addr).0)
        .collect();

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
