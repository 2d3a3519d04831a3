//! TLS on the listener: HTTP/1.1 and HTTP/2 (ALPN) streams, certificate reload with streams
//! open across it, SIGHUP, bad files at start-up, the healthcheck over TLS.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::http::{StatusCode, Version};
use awc::{Client, Connector};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};

use crate::helpers::{
    ChildHub, EVENT_TIMEOUT, HUB, HubLog, SseStream, hub_command, send_signal, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(15);

/// A throwaway certificate authority, and the certificates it signs for `localhost` and
/// `127.0.0.1`.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
pub(crate) struct Leaf {
    pub cert: String,
    pub key: String,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("sse-hub test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    pub(crate) fn leaf(&self) -> Leaf {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// The CA's own certificate, as PEM (what a client is told to trust).
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A client that trusts this CA only, offering HTTP/2 and HTTP/1.1 (`http2`) or HTTP/1.1
    /// only.
    pub(crate) fn client(&self, http2: bool) -> Client {
        let mut roots = RootCertStore::empty();
        roots.add(self.root()).expect("the CA is a valid root");
        let mut config = ClientConfig::builder_with_provider(sse_hub::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // ALPN as a browser offers it (awc takes a custom config's protocols as they are).
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Client::builder()
            .connector(Connector::new().rustls_0_23(Arc::new(config)).limit(0))
            .timeout(Duration::from_secs(30))
            .finish()
    }
}

impl Leaf {
    /// Writes the pair as `cert.pem` and `key.pem` in `dir`, each replaced in one rename (as
    /// certbot and most renewal tools do), and returns their paths.
    pub(crate) fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        (
            replace(dir, "cert.pem", &self.cert),
            replace(dir, "key.pem", &self.key),
        )
    }
}

fn replace(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let scratch = dir.join(format!(".{name}.new"));
    std::fs::write(&scratch, contents).expect("write");
    std::fs::rename(&scratch, &path).expect("rename");
    path
}

fn https(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

/// A stream opened by `client`, its opening comment read; asserts the HTTP version used.
async fn subscribe(client: &Client, url: &str, version: Version) -> SseStream {
    let response = client
        .get(url)
        .send()
        .await
        .expect("the stream is answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), version, "negotiated HTTP version");
    SseStream::opened(response).await
}

async fn publish(client: &Client, port: u16, data: &str) {
    let mut response = client
        .post(https(port, "/publish?topic=t"))
        .send_body(data.to_owned())
        .await
        .expect("the publish is answered");
    let body = response.body().await.expect("a body");
    assert_eq!(response.status(), StatusCode::OK, "publish: {body:?}");
}

/// Whether a new connection trusting only `ca` completes a request (its certificate is the
/// one `ca` signed).
async fn served_by(ca: &TestCa, port: u16) -> bool {
    matches!(
        ca.client(true).get(https(port, "/healthz")).send().await,
        Ok(response) if response.status() == StatusCode::OK
    )
}

async fn wait_served_by(ca: &TestCa, port: u16, what: &str) {
    let started = Instant::now();
    while !served_by(ca, port).await {
        assert!(started.elapsed() < WAIT, "{what} within {WAIT:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A hub serving TLS with a certificate of its own CA (the returned directory holds the files).
async fn spawn_tls_app() -> (TestCa, crate::helpers::TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("a");
    let (cert, key) = ca.leaf().write(dir.path());
    let app = spawn_app_with(|s| {
        s.tls_cert = Some(cert);
        s.tls_key = Some(key);
    })
    .await;
    (ca, app, dir)
}

/// Over TLS, one listener serves a stream over HTTP/2 to a client offering `h2` and over
/// HTTP/1.1 to one offering only `http/1.1`; both receive a publish, byte for byte the same.
#[actix_web::test]
async fn streams_over_http2_and_http11_on_one_tls_listener() {
    let (ca, app, _dir) = spawn_tls_app().await;
    let port = app.addr.port();
    let h2 = ca.client(true);
    let h1 = ca.client(false);
    let mut over_h2 = subscribe(&h2, &https(port, "/stream?topic=t"), Version::HTTP_2).await;
    let mut over_h1 = subscribe(&h1, &https(port, "/stream?topic=t"), Version::HTTP_11).await;
    assert_eq!(
        over_h2.headers().get("content-type"),
        over_h1.headers().get("content-type")
    );
    // A publish over HTTP/2 too.
    publish(&h2, port, "over TLS").await;
    let (a, b) = (over_h2.next_event().await, over_h1.next_event().await);
    assert_eq!(a.data.as_deref(), Some("over TLS"));
    assert_eq!(a, b);

    // Plain HTTP on the TLS port is refused (no response), the hub keeps serving.
    let plain = crate::helpers::client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP on the TLS listener: {plain:?}");
    publish(&h1, port, "after").await;
    assert_eq!(over_h2.next_event().await.data.as_deref(), Some("after"));
}

/// An HTTP/2 stream ends cleanly (END_STREAM, not a reset) when the hub shuts down, so a
/// browser reconnects.
#[actix_web::test]
async fn http2_streams_end_cleanly_on_shutdown() {
    let (ca, app, _dir) = spawn_tls_app().await;
    let mut stream = subscribe(
        &ca.client(true),
        &https(app.addr.port(), "/stream?topic=t"),
        Version::HTTP_2,
    )
    .await;
    let stopper = app.stopper();
    actix_web::rt::spawn(async move { stopper.stop().await });
    loop {
        // `next_frame_within` fails the test on a broken stream (a reset).
        match stream.next_frame_within(EVENT_TIMEOUT).await {
            Some(Some(_keepalive)) => continue,
            Some(None) => break,
            None => panic!("the stream did not end within {EVENT_TIMEOUT:?}"),
        }
    }
}

/// A certificate renewed on disk is served to new connections without a restart, while a
/// stream opened before keeps receiving; a bad new file is refused and counted, and the
/// certificate served stays.
#[actix_web::test]
async fn a_renewed_certificate_is_served_and_open_streams_stay() {
    let dir = tempfile::tempdir().expect("dir");
    let (old_ca, new_ca) = (TestCa::new("old"), TestCa::new("new"));
    let (cert, key) = old_ca.leaf().write(dir.path());
    let app = spawn_app_with(|s| {
        s.tls_cert = Some(cert);
        s.tls_key = Some(key);
        s.tls_reload_interval = Duration::from_millis(50);
    })
    .await;
    let port = app.addr.port();
    let old_client = old_ca.client(true);
    let mut stream = subscribe(
        &old_client,
        &https(port, "/stream?topic=t"),
        Version::HTTP_2,
    )
    .await;
    assert!(!served_by(&new_ca, port).await, "not yet renewed");

    new_ca.leaf().write(dir.path());
    wait_served_by(&new_ca, port, "the renewed certificate is served").await;
    assert!(!served_by(&old_ca, port).await, "the old one is not");
    // The stream opened before the renewal is still there, on its old connection.
    publish(&old_client, port, "after renewal").await;
    assert_eq!(
        stream.next_event().await.data.as_deref(),
        Some("after renewal")
    );

    // A truncated certificate: refused, counted, the renewed certificate still served.
    let cert = new_ca.leaf().cert;
    replace(dir.path(), "cert.pem", &cert[..cert.len() / 2]);
    let new_client = new_ca.client(true);
    let started = Instant::now();
    loop {
        let mut response = new_client
            .get(https(port, "/metrics"))
            .send()
            .await
            .expect("metrics");
        let body = String::from_utf8_lossy(&response.body().await.expect("body")).into_owned();
        if body.contains("sse_hub_tls_reload_failures_total 1") {
            assert!(body.contains("sse_hub_tls_reloads_total 1"), "{body}");
            break;
        }
        assert!(started.elapsed() < WAIT, "the bad file is counted: {body}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served_by(&new_ca, port).await,
        "the renewed certificate stays"
    );
    publish(&new_client, port, "still here").await;
    assert_eq!(
        stream.next_event().await.data.as_deref(),
        Some("still here")
    );
}

/// SIGHUP reloads the certificate at once (here with the file check off), and the
/// `healthcheck` command speaks TLS to a TLS hub.
#[actix_web::test]
async fn sighup_reloads_the_certificate_and_healthcheck_speaks_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let (old_ca, new_ca) = (TestCa::new("old"), TestCa::new("new"));
    let (cert, key) = old_ca.leaf().write(dir.path());
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let log = HubLog::default();
    let hub = ChildHub::spawn_logged(
        hub_command(
            "memory",
            &[
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--tls-reload-interval",
                "0",
            ],
        ),
        log.clone(),
    );
    let port = hub.addr.port();
    wait_served_by(&old_ca, port, "the hub serves its certificate").await;

    let healthcheck = Command::new(HUB)
        .arg("healthcheck")
        .env("SSE_HUB_BIND", hub.addr.to_string())
        .env("SSE_HUB_TLS_CERT", cert)
        .env("SSE_HUB_TLS_KEY", key)
        .output()
        .expect("healthcheck runs");
    assert!(
        healthcheck.status.success(),
        "healthcheck over TLS: {}",
        String::from_utf8_lossy(&healthcheck.stderr)
    );

    new_ca.leaf().write(dir.path());
    // No file check: nothing changes until the signal.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(served_by(&old_ca, port).await, "{}", log.tail(20));
    send_signal(hub.child.id(), "HUP");
    wait_served_by(&new_ca, port, "SIGHUP loads the new certificate").await;
    log.wait_for("certificate reloaded");
}

/// A missing, malformed or mismatched certificate or key is a one-line start-up error naming
/// the file, and the hub exits non-zero without listening.
#[test]
fn a_bad_certificate_is_a_one_line_startup_error() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("a");
    let (cert, key) = ca.leaf().write(dir.path());
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, ca.leaf().key).expect("write");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let cases: [(&Path, &Path, &str, &Path); 4] = [
        (&missing, &key, "--tls-cert", &missing),
        (&garbage, &key, "--tls-cert", &garbage),
        (&cert, &garbage, "--tls-key", &garbage),
        (&cert, &other_key, "does not match", &other_key),
    ];
    for (cert, key, needle, named) in cases {
        let output = hub_command(
            "memory",
            &[
                "--tls-cert",
                cert.to_str().expect("utf-8"),
                "--tls-key",
                key.to_str().expect("utf-8"),
            ],
        )
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("the hub runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "started with {cert:?} {key:?}");
        let error: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("sse-hub: "))
            .collect();
        assert_eq!(error.len(), 1, "one error line: {stderr}");
        assert!(error[0].contains(needle), "{needle} in {stderr}");
        assert!(
            error[0].contains(named.to_str().expect("utf-8")),
            "names {named:?}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}
