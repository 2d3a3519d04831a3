//! Ten `EventSource`s on one page in headless Chromium: over HTTPS (HTTP/2) every one receives
//! an event, over plain HTTP/1.1 Chromium's six connections per origin leave the rest waiting.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;
use awc::Connector;
use base64::Engine as _;
use fantoccini::Client;
use rcgen::PublicKeyData as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{
    browser::{Chromedriver, WAIT, wait_connected},
    helpers::{TestApp, spawn_app, spawn_app_with},
};

/// The `EventSource`s the page opens: more than Chromium's six HTTP/1.1 connections per origin.
const SOURCES: usize = 10;
/// Chromium's limit of HTTP/1.1 connections to one origin.
const CONNECTIONS_PER_ORIGIN: usize = 6;
const TOPIC: &str = "ten-sources";

/// Runs in the page: opens `count` `EventSource`s on `/stream?topic=...` and counts, per source,
/// the `open` and `message` events it sees, in `window.tenSources`.
const OPEN_SOURCES_SCRIPT: &str = r#"
const [count, topic] = arguments;
const state = { opened: [], received: [], sources: [] };
for (let i = 0; i < count; i++) {
  const source = new EventSource("/stream?topic=" + encodeURIComponent(topic));
  state.opened.push(0);
  state.received.push(0);
  source.onopen = () => { state.opened[i] += 1; };
  source.onmessage = () => { state.received[i] += 1; };
  state.sources.push(source);
}
window.tenSources = state;
"#;

/// Runs in the page: what the sources have seen, the demo page's own log, and the protocol the
/// page itself was loaded over.
const READ_STATE_SCRIPT: &str = r##"
const state = window.tenSources;
const navigation = performance.getEntriesByType("navigation")[0];
return {
  readyState: state.sources.map((s) => s.readyState),
  opened: state.opened,
  received: state.received,
  logged: [...document.querySelectorAll("#log li.entry .data")].map((e) => e.textContent),
  protocol: navigation ? navigation.nextHopProtocol : null,
};
"##;

/// What the page reports about its sources.
#[derive(Debug)]
struct PageState {
    /// Per source: 0 connecting, 1 open, 2 closed.
    ready_states: Vec<u64>,
    opened: Vec<u64>,
    received: Vec<u64>,
    /// The data of the events the demo page's own stream logged.
    logged: Vec<String>,
    /// `nextHopProtocol` of the page's navigation: `h2` or `http/1.1`.
    protocol: String,
}

impl PageState {
    async fn read(browser: &Client) -> Self {
        let value = browser
            .execute(READ_STATE_SCRIPT, vec![])
            .await
            .expect("the page reports its sources");
        let numbers = |key: &str| -> Vec<u64> {
            value[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is an array: {value}"))
                .iter()
                .map(|n| n.as_u64().expect("a count"))
                .collect()
        };
        Self {
            ready_states: numbers("readyState"),
            opened: numbers("opened"),
            received: numbers("received"),
            logged: value["logged"]
                .as_array()
                .expect("logged is an array")
                .iter()
                .map(|s| s.as_str().expect("text").to_owned())
                .collect(),
            protocol: value["protocol"].as_str().unwrap_or_default().to_owned(),
        }
    }

    fn open(&self) -> usize {
        self.opened.iter().filter(|&&n| n > 0).count()
    }

    fn receiving(&self) -> usize {
        self.received.iter().filter(|&&n| n > 0).count()
    }
}

/// Polls the page until `done` holds, failing after `deadline` with the last state.
async fn wait_for_page(
    browser: &Client,
    deadline: Duration,
    what: &str,
    done: impl Fn(&PageState) -> bool,
) -> PageState {
    let started = Instant::now();
    loop {
        let state = PageState::read(browser).await;
        if done(&state) {
            return state;
        }
        assert!(
            started.elapsed() < deadline,
            "{what} not within {deadline:?}; the page: {state:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A throwaway certificate for `localhost` and 127.0.0.1 in a scratch directory, and the pin
/// that makes Chromium trust it and nothing else.
struct TestCertificate {
    dir: tempfile::TempDir,
    der: Vec<u8>,
    /// base64(SHA-256(SubjectPublicKeyInfo DER)), for `--ignore-certificate-errors-spki-list`.
    spki_pin: String,
}

impl TestCertificate {
    fn generate() -> Self {
        let certified =
            rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("rcgen makes a certificate");
        let dir = tempfile::tempdir().expect("a scratch directory");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("write cert");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .expect("write key");
        let spki = certified.signing_key.subject_public_key_info();
        Self {
            dir,
            der: certified.cert.der().to_vec(),
            spki_pin: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&spki)),
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// An HTTPS client (HTTP/2 or HTTP/1.1) that trusts this certificate only.
    fn client(&self) -> awc::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.der.clone()))
            .expect("the test certificate is a usable trust anchor");
        let config = rustls::ClientConfig::builder_with_provider(sse_hub::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        awc::Client::builder()
            .connector(Connector::new().rustls_0_23(Arc::new(config)))
            .timeout(Duration::from_secs(30))
            .finish()
    }
}

/// How the test reaches the hub it started: the page's origin and a client for the test's own
/// requests (publish, `/stats`).
struct Hub {
    /// Held so the hub runs as long as the test: dropping it stops the hub.
    _app: TestApp,
    origin: String,
    /// The origin the test's client uses (an address: the test's resolver may try `::1` first).
    direct: String,
    client: awc::Client,
}

impl Hub {
    async fn plain() -> Self {
        let app = spawn_app().await;
        let port = app.addr.port();
        Self {
            origin: format!("http://localhost:{port}"),
            direct: format!("http://127.0.0.1:{port}"),
            client: crate::helpers::client(),
            _app: app,
        }
    }

    async fn tls(certificate: &TestCertificate) -> Self {
        let app = spawn_app_with(|s| {
            s.tls_cert = Some(certificate.cert_path());
            s.tls_key = Some(certificate.key_path());
        })
        .await;
        let port = app.addr.port();
        Self {
            origin: format!("https://localhost:{port}"),
            direct: format!("https://127.0.0.1:{port}"),
            client: certificate.client(),
            _app: app,
        }
    }

    async fn publish(&self, data: &str) {
        let mut response = self
            .client
            .post(format!("{}/publish?topic={TOPIC}", self.direct))
            .send_body(data.to_owned())
            .await
            .expect("the publish is answered");
        let body = response.body().await.expect("a body");
        assert_eq!(response.status(), StatusCode::OK, "publish: {body:?}");
    }

    async fn subscribers(&self) -> u64 {
        let mut response = self
            .client
            .get(format!("{}/stats", self.direct))
            .send()
            .await
            .expect("/stats is answered");
        let stats: Value = response.json().await.expect("stats are JSON");
        stats["subscribers"].as_u64().expect("a subscriber count")
    }

    /// Polls `/stats` until the hub holds `expected` subscribers.
    async fn wait_for_subscribers(&self, expected: u64) {
        let started = Instant::now();
        loop {
            let now = self.subscribers().await;
            if now == expected {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "the hub has {now} subscribers, not {expected}, after {WAIT:?}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Loads the demo page from `hub` (its own stream connects) and opens the ten sources.
async fn open_page(hub: &Hub, browser: &Client) {
    browser
        .goto(&format!("{}/", hub.origin))
        .await
        .expect("the page loads");
    wait_connected(browser).await;
    browser
        .execute(
            OPEN_SOURCES_SCRIPT,
            vec![serde_json::json!(SOURCES), serde_json::json!(TOPIC)],
        )
        .await
        .expect("the page opens its sources");
}

/// Over HTTPS, Chromium speaks HTTP/2 to the hub and one page's ten `EventSource`s (and the
/// demo page's own stream) all open on the one connection; one published event reaches all ten
/// within a second.
#[actix_web::test]
async fn ten_event_sources_on_one_page_all_receive_over_http2() {
    let certificate = TestCertificate::generate();
    let hub = Hub::tls(&certificate).await;
    let driver = Chromedriver::start();
    let browser = driver
        .browser_with(&[format!(
            "--ignore-certificate-errors-spki-list={}",
            certificate.spki_pin
        )])
        .await;

    open_page(&hub, &browser).await;
    let opened = wait_for_page(&browser, WAIT, "all sources open", |p| p.open() == SOURCES).await;
    assert_eq!(opened.protocol, "h2", "the page came over HTTP/2");
    hub.wait_for_subscribers(SOURCES as u64 + 1).await;

    let published = Instant::now();
    hub.publish("to all ten").await;
    // Issue 21 asks for every source to have it within a second: the time is measured and
    // printed; the wait itself only bounds a hang, as a timed assertion would fail on a loaded
    // CI machine whatever the hub does.
    let seen = wait_for_page(&browser, WAIT, "the event at every source", |p| {
        p.receiving() == SOURCES && p.logged.iter().any(|d| d == "to all ten")
    })
    .await;
    eprintln!(
        "over HTTP/2, {SOURCES} EventSources and the demo page's stream had the event {:?} \
         after the publish was sent",
        published.elapsed()
    );
    assert_eq!(seen.received, [1; SOURCES], "each source got it once");
    assert_eq!(seen.ready_states, [1; SOURCES], "every source is open");
    browser.close().await.expect("close the session");
}

/// The same page over plain HTTP/1.1 shows the limit HTTP/2 removes: Chromium opens six
/// connections to the origin, one for the demo page's own stream and five for `EventSource`s;
/// only those six streams get the event, the other five sources stay connecting.
#[actix_web::test]
async fn over_http1_only_six_streams_per_origin_receive() {
    let hub = Hub::plain().await;
    let driver = Chromedriver::start();
    let browser = driver.browser().await;

    open_page(&hub, &browser).await;
    let expected_sources = CONNECTIONS_PER_ORIGIN - 1;
    let opened = wait_for_page(&browser, WAIT, "five sources open", |p| {
        p.open() == expected_sources
    })
    .await;
    assert_eq!(opened.protocol, "http/1.1", "the page came over HTTP/1.1");
    hub.wait_for_subscribers(CONNECTIONS_PER_ORIGIN as u64)
        .await;

    hub.publish("to the first six").await;
    let seen = wait_for_page(&browser, WAIT, "the event at the open sources", |p| {
        p.receiving() == expected_sources && p.logged.iter().any(|d| d == "to the first six")
    })
    .await;
    // The hub never had more than six streams from this page, so the waiting five cannot have
    // the event: checked once, not timed.
    assert_eq!(hub.subscribers().await, CONNECTIONS_PER_ORIGIN as u64);
    assert_eq!(seen.open(), expected_sources, "{seen:?}");
    assert_eq!(
        seen.ready_states.iter().filter(|&&s| s == 0).count(),
        SOURCES - expected_sources,
        "the other sources are still connecting: {seen:?}"
    );
    browser.close().await.expect("close the session");
}
