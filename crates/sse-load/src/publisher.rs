//! The publisher: K keep-alive HTTP/1.1 connections (over TLS for `https://`), each sending the next stamped event as soon
//! as its previous response arrives, or on a fixed schedule when a rate is set.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    conn::{Connector, Stream},
    http::{self, BodyDecoder, Framing},
    tally,
    target::Target,
};

/// The payload template used unless `--body` says otherwise.
pub const DEFAULT_TEMPLATE: &str = r#"{"seq":{seq},"ts":{ts},"ack":{ack},"pad":"{pad}"}"#;

/// A body template split at its `{seq}`, `{ts}`, `{ack}` and `{pad}` placeholders.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Seq,
    Ts,
    Ack,
    Pad,
}

impl Template {
    /// `size` is the body length `{pad}` fills up to (bodies longer without padding stay so).
    pub fn parse(template: &str, size: usize) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(at) = rest.find('{') {
            let (part, len) = if rest[at..].starts_with("{seq}") {
                (Part::Seq, 5)
            } else if rest[at..].starts_with("{ts}") {
                (Part::Ts, 4)
            } else if rest[at..].starts_with("{ack}") {
                (Part::Ack, 5)
            } else if rest[at..].starts_with("{pad}") {
                (Part::Pad, 5)
            } else {
                parts.push(Part::Text(rest[..=at].to_owned()));
                rest = &rest[at + 1..];
                continue;
            };
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            parts.push(part);
            rest = &rest[at + len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.contains(&Part::Seq) || !parts.contains(&Part::Ts) {
            bail!(
                "the body template needs {{seq}} and {{ts}} (as \"seq\":{{seq}} and \"ts\":{{ts}})"
            );
        }
        Ok(Self { parts, size })
    }

    /// Writes the body for `seq` sent at `ts_us`, when seqs below `ack` were all answered, into
    /// `out` (cleared first).
    pub fn render(&self, seq: u64, ts_us: u64, ack: u64, out: &mut Vec<u8>) {
        out.clear();
        let (seq, ts, ack) = (seq.to_string(), ts_us.to_string(), ack.to_string());
        let unpadded: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Seq => seq.len(),
                Part::Ts => ts.len(),
                Part::Ack => ack.len(),
                Part::Pad => 0,
            })
            .sum();
        let mut pad = self.size.saturating_sub(unpadded);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Seq => out.extend_from_slice(seq.as_bytes()),
                Part::Ts => out.extend_from_slice(ts.as_bytes()),
                Part::Ack => out.extend_from_slice(ack.as_bytes()),
                Part::Pad => {
                    out.resize(out.len() + pad, b'x');
                    pad = 0;
                }
            }
        }
    }
}

/// What to publish and how fast.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    /// Opens the publishing connections (TLS with ALPN http/1.1 for `https://`).
    pub connector: Connector,
    pub method: String,
    pub headers: Vec<String>,
    pub template: Template,
    pub events: u64,
    pub in_flight: usize,
    /// Events per second; None = as fast as responses come back.
    pub rate: Option<f64>,
    pub deadline: Instant,
}

/// How the publishing went.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Sequence numbers handed out (0..attempted).
    pub attempted: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Publish request round trips, µs.
    pub round_trip: Option<hdrhistogram::Histogram<u64>>,
}

/// Counters the progress display reads while publishing runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: Cell<u64>,
}

#[derive(Debug)]
struct Run {
    plan: Plan,
    next: Cell<u64>,
    /// Seqs answered (or failed), and the length of the answered prefix: every event carries
    /// the prefix as it stood when it was sent, so receivers can tell real reordering from
    /// concurrent publishes landing in either order.
    answered: RefCell<Vec<bool>>,
    acked: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
    round_trip: RefCell<hdrhistogram::Histogram<u64>>,
    start: Instant,
    progress: Rc<Progress>,
}

/// Publishes the plan's events over `in_flight` connections; returns when all are answered or
/// the deadline passes. Must run inside a `LocalSet`.
pub async fn publish(plan: Plan, progress: Rc<Progress>) -> Outcome {
    let connections = plan.in_flight.max(1);
    let events = usize::try_from(plan.events).unwrap_or(0);
    let run = Rc::new(Run {
        plan,
        next: Cell::new(0),
        answered: RefCell::new(vec![false; events]),
        acked: Cell::new(0),
        failed: Cell::new(0),
        first_error: RefCell::new(None),
        round_trip: RefCell::new(tally::new_histogram()),
        start: Instant::now(),
        progress,
    });
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::task::spawn_local(connection(run.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Outcome {
        attempted: run.next.get(),
        failed: run.failed.get(),
        first_error: run.first_error.borrow().clone(),
        elapsed: run.start.elapsed(),
        round_trip: Some(run.round_trip.borrow().clone()),
    }
}

/// One publishing connection: takes the next sequence number, sends, waits for the answer.
async fn connection(run: Rc<Run>) {
    let plan = &run.plan;
    let mut stream: Option<Stream> = None;
    let mut request = Vec::with_capacity(512);
    let mut body = Vec::with_capacity(plan.template.size + 64);
    let mut buf = vec![0u8; 4096];
    loop {
        let seq = run.next.get();
        if seq >= plan.events || Instant::now() >= plan.deadline {
            return;
        }
        run.next.set(seq + 1);
        if let Some(rate) = plan.rate {
            let due = run.start + Duration::from_secs_f64(seq as f64 / rate);
            if due >= plan.deadline {
                run.failed.set(run.failed.get() + 1);
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let sent = Instant::now();
        plan.template
            .render(seq, crate::now_us(), run.acked.get(), &mut body);
        build_request(plan, &body, &mut request);
        let remaining = plan.deadline.saturating_duration_since(sent);
        let answer = tokio::time::timeout(remaining, send(&mut stream, plan, &request, &mut buf))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer before the deadline")));
        match answer {
            Ok(()) => tally::record_clamped(
                &mut run.round_trip.borrow_mut(),
                sent.elapsed().as_micros() as u64,
            ),
            Err(err) => {
                stream = None;
                run.failed.set(run.failed.get() + 1);
                run.first_error
                    .borrow_mut()
                    .get_or_insert_with(|| format!("{err:#}"));
            }
        }
        run.answer(seq);
        run.progress.done.set(run.progress.done.get() + 1);
    }
}

impl Run {
    /// Marks `seq` answered and advances the answered prefix.
    fn answer(&self, seq: u64) {
        let mut answered = self.answered.borrow_mut();
        if let Some(slot) = answered.get_mut(seq as usize) {
            *slot = true;
        }
        let mut acked = self.acked.get();
        while answered.get(acked as usize).copied().unwrap_or(false) {
            acked += 1;
        }
        self.acked.set(acked);
    }
}

fn build_request(plan: &Plan, body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(plan.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(plan.target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(plan.target.host_header.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in &plan.headers {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Sends one request on the kept-alive connection (opening one if needed) and reads the whole
/// response. A non-2xx status is an error. A kept-alive connection the server closed while it
/// was idle (its keep-alive timeout: 5 s in sse-hub, 75 s in nginx) fails before any byte of
/// the response: the request is sent again, once, on a fresh connection, as HTTP clients do.
/// A fresh connection that fails so is an error.
async fn send(
    stream: &mut Option<Stream>,
    plan: &Plan,
    request: &[u8],
    buf: &mut [u8],
) -> anyhow::Result<()> {
    let reused = stream.is_some();
    match send_once(stream, plan, request, buf).await {
        Err(err) if reused && err.downcast_ref::<Unanswered>().is_some() => {
            *stream = None;
            send_once(stream, plan, request, buf).await
        }
        other => other,
    }
}

/// Marks an attempt that failed before any byte of the response arrived: on a kept-alive
/// connection, the server may have closed it while idle.
#[derive(Debug)]
struct Unanswered;

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no byte of the response arrived")
    }
}

async fn send_once(
    stream: &mut Option<Stream>,
    plan: &Plan,
    request: &[u8],
    buf: &mut [u8],
) -> anyhow::Result<()> {
    if stream.is_none() {
        *stream = Some(plan.connector.connect(None).await?);
    }
    let Some(conn) = stream.as_mut() else {
        bail!("no connection");
    };
    conn.write_all(request).await.context(Unanswered)?;
    let mut filled = 0;
    let (head, used) = loop {
        if filled == buf.len() {
            bail!("publish response head too large");
        }
        let n = match conn.read(&mut buf[filled..]).await {
            Ok(n) => n,
            Err(err) if filled == 0 => return Err(anyhow::Error::new(err).context(Unanswered)),
            Err(err) => return Err(err.into()),
        };
        if n == 0 {
            let err = anyhow::anyhow!("connection closed before the publish response");
            return Err(if filled == 0 {
                err.context(Unanswered)
            } else {
                err
            });
        }
        filled += n;
        if let Some(parsed) = http::parse_head(&buf[..filled])? {
            break parsed;
        }
    };
    let mut decoder = BodyDecoder::new(head.framing);
    decoder.feed(&buf[used..filled], |_| {})?;
    while !decoder.is_done() {
        let n = conn.read(buf).await?;
        if n == 0 {
            if head.framing == Framing::Close {
                break;
            }
            bail!("connection closed inside the publish response");
        }
        decoder.feed(&buf[..n], |_| {})?;
    }
    if head.close || head.framing == Framing::Close {
        *stream = None;
    }
    if !(200..300).contains(&head.status) {
        bail!("publish answered status {}", head.status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default template renders to exactly the requested size, stamps first.
    #[test]
    fn default_template_pads_to_size() {
        let template = Template::parse(DEFAULT_TEMPLATE, 64).unwrap();
        let mut body = Vec::new();
        template.render(123, 1_732_512_345_123_456, 120, &mut body);
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(body.len(), 64);
        assert!(
            text.starts_with(r#"{"seq":123,"ts":1732512345123456,"ack":120,"pad":"xx"#),
            "{text}"
        );
        assert_eq!(
            crate::sse::extract(&body),
            crate::sse::Data::Stamped {
                seq: 123,
                ts_us: 1_732_512_345_123_456,
                ack: 120,
            }
        );
    }

    /// A server that answers one request per connection and then closes it while idle (as a
    /// keep-alive timeout does): every publish still lands, each resent once on a fresh
    /// connection, and none is counted failed.
    #[tokio::test(flavor = "current_thread")]
    async fn a_kept_alive_connection_closed_while_idle_is_reopened() {
        use std::sync::{
            Arc,
            atomic::{AtomicU64, Ordering},
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (accepted_by_server, answered_by_server) = (accepted.clone(), answered.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                accepted_by_server.fetch_add(1, Ordering::Relaxed);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                // One whole request: the head, then its Content-Length of body.
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if tcp.write_all(answer).await.is_ok() {
                    answered_by_server.fetch_add(1, Ordering::Relaxed);
                }
                // Idle on a connection the client keeps: closed before its next request.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let target = Target::parse(&format!("http://{addr}/publish")).unwrap();
        let plan = Plan {
            connector: crate::conn::Connector::new(&target, None, crate::conn::Alpn::Http1)
                .unwrap(),
            target,
            method: "POST".into(),
            headers: Vec::new(),
            template: Template::parse(DEFAULT_TEMPLATE, 64).unwrap(),
            events: 4,
            in_flight: 1,
            rate: Some(10.0),
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let outcome = tokio::task::LocalSet::new()
            .run_until(publish(plan, Rc::new(Progress::default())))
            .await;
        assert_eq!(outcome.attempted, 4);
        assert_eq!(outcome.failed, 0, "{:?}", outcome.first_error);
        assert_eq!(answered.load(Ordering::Relaxed), 4);
        assert_eq!(accepted.load(Ordering::Relaxed), 4);
    }

    /// Other braces pass through; a template without stamps is refused.
    #[test]
    fn templates_keep_other_braces() {
        let template = Template::parse(r#"{"a":{"seq":{seq},"ts":{ts}}}"#, 0).unwrap();
        let mut body = Vec::new();
        template.render(1, 2, 0, &mut body);
        assert_eq!(body, br#"{"a":{"seq":1,"ts":2}}"#);
        assert!(Template::parse("{seq}", 10).is_err());
    }
}
