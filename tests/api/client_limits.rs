//! Per-client limits: one source address (or one address a trusted proxy forwards for) cannot
//! drain the hub's subscriber or selector budgets for everyone else.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use actix_web::http::{StatusCode, header::RETRY_AFTER};
use awc::{Client, ClientResponse, Connector};

use crate::helpers::{TestApp, assert_json_error, query, spawn_app_with};

/// How long a released budget may take to come back (the hub notices closed streams at its
/// next heartbeat write).
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// A client whose connections come from `source` (an address of 127.0.0.0/8).
fn client_from(source: &str) -> Client {
    let source: IpAddr = source.parse().expect("a literal address");
    Client::builder()
        .connector(Connector::new().limit(0).local_address(source))
        .timeout(Duration::from_secs(30))
        .finish()
}

/// A stream request's answer; an OK one keeps its stream open while it lives.
struct Opened {
    status: StatusCode,
    response: ClientResponse,
}

async fn open(app: &TestApp, client: &Client, path: &str, headers: &[(&str, &str)]) -> Opened {
    let mut request = client.get(app.url(path));
    for header in headers {
        request = request.insert_header(*header);
    }
    let response = request.send().await.unwrap_or_else(|err| {
        panic!("{path} is answered (is 127.0.0.2 routable here? Linux routes 127/8): {err}")
    });
    Opened {
        status: response.status(),
        response,
    }
}

/// The error body of a refused request.
async fn error_body(opened: &mut Opened) -> String {
    let body = opened.response.body().await.expect("an error body");
    String::from_utf8_lossy(&body).into_owned()
}

/// A subscribe path with one URL pattern of its own.
fn pattern_path(n: usize) -> String {
    format!(
        "/.well-known/mercure?{}",
        query(&[("match_urlpattern", &format!("https://example.com/p{n}/:id"))])
    )
}

/// `sse_hub_client_limit_refusals_total{limit="…"}`, 0 when absent.
async fn refusals(app: &TestApp, limit: &str) -> u64 {
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let prefix = format!("sse_hub_client_limit_refusals_total{{limit=\"{limit}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("a number"))
}

/// Opens `path` from `client` until it is accepted or the deadline passes.
async fn open_when_accepted(app: &TestApp, client: &Client, path: &str) -> Opened {
    let start = Instant::now();
    loop {
        let opened = open(app, client, path, &[]).await;
        if opened.status == StatusCode::OK {
            return opened;
        }
        assert!(
            start.elapsed() < RELEASE_DEADLINE,
            "{path} still refused {} after the client's streams ended",
            opened.status
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Anonymous subscribers with distinct URL patterns from one address are refused 429 once
/// that address's selector budget is full, while another address still gets a new pattern;
/// the budget comes back when the first address's streams end.
#[actix_web::test]
async fn pattern_subscribers_over_the_client_budget_are_refused_while_other_addresses_are_not() {
    // Arrange: room for about ten URL patterns per client (each a few KB, and the most one
    // may cost, --max-template-bytes, set aside while it compiles), the global budget at its
    // default (64 MiB, far from full).
    let app = spawn_app_with(|s| s.max_selector_bytes_per_client = 100_000).await;
    let first = client_from("127.0.0.1");
    let other = client_from("127.0.0.2");

    // Act: distinct patterns from one address until one is refused.
    let mut held = Vec::new();
    let mut refused = None;
    for n in 0..100 {
        let opened = open(&app, &first, &pattern_path(n), &[]).await;
        if opened.status == StatusCode::OK {
            held.push(opened);
        } else {
            refused = Some(opened);
            break;
        }
    }

    // Assert
    let mut refused = refused.expect("one address cannot hold 100 distinct URL patterns");
    assert!(
        !held.is_empty(),
        "the first patterns fit the client's budget"
    );
    assert_eq!(
        refused
            .response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.as_bytes()),
        Some(&b"5"[..]),
        "429 says when to retry"
    );
    let body = error_body(&mut refused).await;
    assert_json_error(
        refused.status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "--max-selector-bytes-per-client",
    );
    assert_eq!(refusals(&app, "selector_bytes").await, 1);
    let from_other = open(&app, &other, &pattern_path(1000), &[]).await;
    assert_eq!(
        from_other.status,
        StatusCode::OK,
        "another address still gets a new pattern"
    );

    // Act: the first address's streams end.
    drop(held);

    // Assert: its budget came back.
    let _again = open_when_accepted(&app, &first, &pattern_path(2000)).await;
}

/// One address holds at most `--max-subscribers-per-client` subscribers (429 past it), other
/// addresses are unaffected, and a slot comes back when one of its streams ends.
#[actix_web::test]
async fn subscribers_over_the_client_limit_are_refused_while_other_addresses_are_not() {
    // Arrange
    let app = spawn_app_with(|s| s.max_subscribers_per_client = 3).await;
    let first = client_from("127.0.0.1");
    let other = client_from("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..3 {
        let opened = open(&app, &first, "/stream", &[]).await;
        assert_eq!(opened.status, StatusCode::OK);
        held.push(opened);
    }

    // Act
    let mut refused = open(&app, &first, "/stream", &[]).await;
    let from_other = open(&app, &other, "/stream", &[]).await;

    // Assert
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let body = error_body(&mut refused).await;
    assert_json_error(
        refused.status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "--max-subscribers-per-client",
    );
    assert!(refused.response.headers().contains_key(RETRY_AFTER));
    assert_eq!(refusals(&app, "subscribers").await, 1);
    assert_eq!(
        from_other.status,
        StatusCode::OK,
        "another address is unaffected"
    );

    // Act: one of the first address's streams ends.
    held.pop();

    // Assert
    let _again = open_when_accepted(&app, &first, "/stream").await;
}

/// `X-Forwarded-For` names the client only when the peer is a trusted proxy: from an
/// untrusted peer a spoofed header changes nothing, from the proxy each forwarded address is
/// a client of its own.
#[actix_web::test]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    // Arrange: one subscriber per client; 127.0.0.2 is the proxy.
    let app = spawn_app_with(|s| {
        s.max_subscribers_per_client = 1;
        s.trusted_proxies = vec!["127.0.0.2".parse().expect("an address")];
    })
    .await;
    let untrusted = client_from("127.0.0.1");
    let proxy = client_from("127.0.0.2");
    let xff = |ip| [("x-forwarded-for", ip)];

    // Act + Assert: the untrusted peer is one client whatever its header says.
    let _a = open(&app, &untrusted, "/stream", &xff("198.51.100.1")).await;
    assert_eq!(_a.status, StatusCode::OK);
    let spoofed = open(&app, &untrusted, "/stream", &xff("198.51.100.2")).await;
    assert_eq!(
        spoofed.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a spoofed X-Forwarded-For from an untrusted peer makes no new client"
    );

    // Act + Assert: through the proxy, the forwarded address is the client.
    let _b = open(&app, &proxy, "/stream", &xff("198.51.100.1")).await;
    assert_eq!(_b.status, StatusCode::OK);
    let same = open(&app, &proxy, "/stream", &xff("203.0.113.9, 198.51.100.1")).await;
    assert_eq!(
        same.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the rightmost untrusted address is the client, whatever is left of it"
    );
    let _c = open(&app, &proxy, "/stream", &xff("198.51.100.2")).await;
    assert_eq!(_c.status, StatusCode::OK, "another forwarded client");
}
