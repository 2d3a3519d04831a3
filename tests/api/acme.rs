//! Automatic certificates: the hub obtains its certificate from a real ACME CA (pebble, with
//! real tls-alpn-01 validation on loopback), then serves it from its cache after a restart
//! without the CA.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};

use crate::helpers::{HUB, find_on_path, free_port};

/// The name the hub asks a certificate for; pebble-challtestsrv answers 127.0.0.1 for it.
const DOMAIN: &str = "hub.acme.test";
/// How long pebble and the hub may take to start, and an order to complete (pebble validates
/// from three "perspectives", each a TLS handshake with the hub).
const DEADLINE: Duration = Duration::from_secs(60);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting only the certificates in `pem`, speaking HTTP/1.1.
fn client_trusting(pem: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(certificate.expect("PEM certificate"))
            .expect("a CA certificate");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// `GET path` over TLS to 127.0.0.1:`port` as `name`: the response and the server's chain.
fn https_get(
    config: &Arc<ClientConfig>,
    port: u16,
    name: ServerName<'static>,
    path: &str,
) -> Result<(String, Vec<CertificateDer<'static>>), String> {
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|err| err.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|err| err.to_string())?;
    let connection =
        ClientConnection::new(Arc::clone(config), name).map_err(|err| err.to_string())?;
    let mut tls = StreamOwned::new(connection, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|err| format!("handshake or write: {err}"))?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A peer that closes without close_notify: what it sent is still the whole response.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(err) => return Err(format!("read: {err}")),
    }
    let chain = tls
        .conn
        .peer_certificates()
        .ok_or("no peer certificates")?
        .to_vec();
    Ok((String::from_utf8_lossy(&response).into_owned(), chain))
}

/// The ALPN protocol the hub picks for a client offering `h2` and `http/1.1`, as [`DOMAIN`].
fn negotiated_protocol(port: u16, roots_pem: &[u8]) -> Option<Vec<u8>> {
    let mut config = Arc::unwrap_or_clone(client_trusting(roots_pem));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("the hub listens");
    let mut connection = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(DOMAIN).expect("a DNS name"),
    )
    .expect("a client connection");
    while connection.is_handshaking() {
        connection
            .complete_io(&mut tcp)
            .expect("the handshake completes");
    }
    connection.alpn_protocol().map(<[u8]>::to_vec)
}

/// Makes sure `pebble` and `pebble-challtestsrv` (Debian's `pebble` package) are installed:
/// installs the package when they are missing, or fails naming it.
fn ensure_pebble() {
    let present =
        || find_on_path("pebble").is_some() && find_on_path("pebble-challtestsrv").is_some();
    if present() {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "pebble"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    assert!(
        present(),
        "these tests need pebble and pebble-challtestsrv (Debian package `pebble`): \
         `apt-get install -y pebble` did not provide them"
    );
}

/// Waits until something listens on 127.0.0.1:`port`, or panics with `what` and `log()`.
fn wait_listening(port: u16, what: &str, log: impl Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what} did not listen on port {port} within {DEADLINE:?}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// pebble (an ACME CA) and pebble-challtestsrv (its DNS, answering 127.0.0.1 for every name)
/// on free loopback ports, validating challenges against `validation_port`. Its HTTPS
/// certificate comes from a CA made here (Debian ships none), written to `ca_file`.
struct Pebble {
    dir: tempfile::TempDir,
    listen_port: u16,
    management_port: u16,
    dns_port: u16,
    dns_management_port: u16,
    children: Vec<Child>,
}

impl Pebble {
    fn start(validation_port: u16) -> Self {
        ensure_pebble();
        let dir = tempfile::tempdir().expect("pebble's directory");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sse-hub test CA for pebble");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("pebble's key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("pebble's names")
            .signed_by(&key, &ca)
            .expect("pebble's certificate");
        let write = |name: &str, contents: String| {
            std::fs::write(dir.path().join(name), contents).expect("write pebble's files");
        };
        write("ca.pem", ca.pem());
        write("cert.pem", cert.pem());
        write("key.pem", key.serialize_pem());

        let (listen_port, management_port, dns_port, dns_management_port) =
            (free_port(), free_port(), free_port(), free_port());
        write(
            "pebble.json",
            serde_json::json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{listen_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": validation_port,
                "tlsPort": validation_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }})
            .to_string(),
        );
        let mut pebble = Self {
            dir,
            listen_port,
            management_port,
            dns_port,
            dns_management_port,
            children: Vec::new(),
        };
        pebble.spawn();
        pebble
    }

    /// Starts pebble and its DNS on the ports and files chosen by [`Pebble::start`]. Each
    /// start makes a new root.
    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .expect("a log file for pebble")
        };
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
            .args([
                "-management",
                &format!("127.0.0.1:{}", self.dns_management_port),
            ])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args([
                "-dnsserver",
                &format!("127.0.0.1:{}", self.dns_port),
                "-strict=false",
            ])
            // No random 0-15 s sleep before each validation (the validation itself is real).
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Pebble refuses 5% of nonces by default to exercise retries; rustls-acme retries
            // a failed order only after its backoff, which would make this test slow at random.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble starts");
        self.children = vec![dns, pebble];
        for port in [
            self.dns_management_port,
            self.listen_port,
            self.management_port,
        ] {
            wait_listening(port, "pebble", || self.log_tail());
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen_port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root of the certificates pebble issues (made anew at each start), as PEM.
    fn root(&self) -> Vec<u8> {
        let pem = std::fs::read(self.ca_file()).expect("the test CA");
        let (response, _) = https_get(
            &client_trusting(&pem),
            self.management_port,
            ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()),
            "/roots/0",
        )
        .expect("pebble's management port answers");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.as_bytes().to_vec()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pebble log (last lines):\n{}", self.log_tail());
        }
        self.stop();
    }
}

/// The hub binary on 127.0.0.1:`port` with ACME settings, its log kept.
struct AcmeHub {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

/// The hub binary with ACME settings, listening on 127.0.0.1:`port`.
fn acme_command(port: u16, directory: &str, ca_file: &Path, cache: &Path) -> Command {
    let mut command = Command::new(HUB);
    command
        .args(["--bind", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .args(["--tls-acme", DOMAIN, "--acme-directory", directory])
        .arg("--acme-ca-file")
        .arg(ca_file)
        .arg("--acme-cache")
        .arg(cache)
        .args(["--acme-contact", "mailto:ops@acme.test"])
        .env("RUST_LOG", "info")
        .env_remove("SSE_HUB_STORE")
        .env_remove("SSE_HUB_TLS_ACME")
        .env_remove("SSE_HUB_TLS_CERT")
        .env_remove("SSE_HUB_TLS_KEY");
    command
}

impl AcmeHub {
    fn spawn(port: u16, directory: &str, ca_file: &Path, cache: &Path) -> Self {
        let mut child = acme_command(port, directory, ca_file, cache)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the hub binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(line);
            }
        });
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .join("\n")
    }

    /// Polls `GET /metrics` over a verified handshake until the counter of ACME `event` is at
    /// least 1 (the certificate is served a moment before the event is counted); returns the
    /// metrics and the certificate chain served.
    fn metrics_once_counted(
        &mut self,
        port: u16,
        roots: &Arc<ClientConfig>,
        event: &str,
    ) -> (String, Vec<CertificateDer<'static>>) {
        let start = Instant::now();
        loop {
            let (metrics, served) = self.get_verified(port, roots, "/metrics");
            if acme_events(&metrics, event) >= 1 {
                return (metrics, served);
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no ACME {event} counted within {DEADLINE:?}: {metrics}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `GET path` as [`DOMAIN`], trusting only `roots`, until the handshake verifies.
    fn get_verified(
        &mut self,
        port: u16,
        roots: &Arc<ClientConfig>,
        path: &str,
    ) -> (String, Vec<CertificateDer<'static>>) {
        let start = Instant::now();
        let name = ServerName::try_from(DOMAIN).expect("a DNS name");
        loop {
            let last = match https_get(roots, port, name.clone(), path) {
                Ok(answer) => return answer,
                Err(err) => err,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the hub exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no certificate verified against pebble's root within {DEADLINE:?} (last: \
                 {last}); hub log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for AcmeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hub obtains a certificate for its domain from pebble (tls-alpn-01 validated on its own
/// TLS port) and serves it; restarted with the same cache while pebble is gone, it serves the
/// same certificate at once.
#[test]
fn certificate_from_pebble_is_served_and_survives_a_restart_without_the_ca() {
    // Arrange: pebble validates against the port the hub will listen on.
    let port = free_port();
    let mut pebble = Pebble::start(port);
    let root = pebble.root();
    let trusting_pebble = client_trusting(&root);
    let cache = tempfile::tempdir().expect("cache directory");
    let cache_dir = cache.path().join("acme");

    // Act: a hub with an empty cache orders its certificate.
    let mut hub = AcmeHub::spawn(port, &pebble.directory(), &pebble.ca_file(), &cache_dir);
    let (response, issued) = hub.get_verified(port, &trusting_pebble, "/healthz");
    wait_for_cached_certificate(&cache_dir);

    // Assert: the chain verifies against pebble's root for DOMAIN, and the hub answers over it.
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(issued.len() >= 2, "leaf and pebble's intermediate");
    let files = std::fs::read_dir(&cache_dir)
        .expect("the cache exists")
        .count();
    assert!(
        files >= 2,
        "account key and certificate cached ({files} files)"
    );
    wait_for_log(&mut hub, "ACME certificate issued");

    // Browsers still get HTTP/2: `acme-tls/1` is offered besides `h2` and `http/1.1`.
    assert_eq!(
        negotiated_protocol(port, &root).as_deref(),
        Some(&b"h2"[..])
    );
    drop(hub);

    // Act: pebble is gone; the hub restarts on the same cache.
    pebble.stop();
    let mut hub = AcmeHub::spawn(port, &pebble.directory(), &pebble.ca_file(), &cache_dir);
    let (metrics, served) = hub.metrics_once_counted(port, &trusting_pebble, "cached_certificate");

    // Assert: the same certificate, from the cache, and no order attempted.
    assert_eq!(served[0], issued[0], "the cached certificate is served");
    assert!(
        metrics.contains("sse_hub_acme_events_total{event=\"cached_certificate\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("event=\"order_failed\""),
        "no order was attempted: {metrics}"
    );
    wait_for_log(&mut hub, "ACME certificate loaded from the cache");

    // The `healthcheck` command, given the same settings, asks over TLS.
    let check = acme_command(port, &pebble.directory(), &pebble.ca_file(), &cache_dir)
        .arg("healthcheck")
        .output()
        .expect("the healthcheck runs");
    assert!(
        check.status.success(),
        "healthcheck: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Polls the cache directory until it holds a complete certificate file: rustls-acme serves a
/// new certificate before it writes it to the cache.
fn wait_for_cached_certificate(dir: &Path) {
    let start = Instant::now();
    loop {
        let complete = std::fs::read_dir(dir).into_iter().flatten().any(|entry| {
            entry.is_ok_and(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("cached_cert_")
                    && std::fs::read_to_string(entry.path())
                        .is_ok_and(|pem| pem.trim_end().ends_with("-----END CERTIFICATE-----"))
            })
        });
        if complete {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no complete certificate in {} within {DEADLINE:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the hub's log until it holds `needle`, or panics.
fn wait_for_log(hub: &mut AcmeHub, needle: &str) {
    let start = Instant::now();
    while !hub.log().contains(needle) {
        if let Ok(Some(status)) = hub.child.try_wait() {
            panic!("the hub exited ({status}); its log:\n{}", hub.log());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no `{needle}` in the hub's log within {DEADLINE:?}:\n{}",
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counter `sse_hub_acme_events_total{event="..."}` in a `/metrics` response (0 if absent).
fn acme_events(metrics: &str, event: &str) -> u64 {
    let prefix = format!("sse_hub_acme_events_total{{event=\"{event}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0, |value| value.trim().parse().expect("a counter"))
}

/// A CA that is down when the hub starts is asked again after the backoff: the hub stays up,
/// logs and counts the failure, and serves a certificate once the CA answers.
#[test]
fn order_is_retried_until_the_ca_answers() {
    // Arrange: pebble's ports and files exist, pebble itself is down.
    let port = free_port();
    let mut pebble = Pebble::start(port);
    pebble.stop();
    let cache = tempfile::tempdir().expect("cache directory");

    // Act: the hub's first order fails; then the CA comes up.
    let mut hub = AcmeHub::spawn(port, &pebble.directory(), &pebble.ca_file(), cache.path());
    wait_for_log(&mut hub, "ACME order_failed");
    pebble.spawn();
    let trusting_pebble = client_trusting(&pebble.root());
    let (metrics, _) = hub.metrics_once_counted(port, &trusting_pebble, "new_certificate");

    // Assert
    assert!(acme_events(&metrics, "order_failed") >= 1, "{metrics}");
    assert_eq!(acme_events(&metrics, "new_certificate"), 1, "{metrics}");
}

/// A cached certificate and account key that do not parse (torn writes) are refused and
/// counted; a new account key is made and a new certificate ordered.
#[test]
fn corrupt_cache_is_replaced_by_a_new_account_and_order() {
    // Arrange: a certificate issued and cached, then its cache file overwritten.
    let port = free_port();
    let pebble = Pebble::start(port);
    let trusting_pebble = client_trusting(&pebble.root());
    let cache = tempfile::tempdir().expect("cache directory");
    let mut hub = AcmeHub::spawn(port, &pebble.directory(), &pebble.ca_file(), cache.path());
    let (_, first) = hub.get_verified(port, &trusting_pebble, "/healthz");
    wait_for_cached_certificate(cache.path());
    drop(hub);
    let mut corrupted = Vec::new();
    for entry in std::fs::read_dir(cache.path()).expect("the cache") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if name.starts_with("cached_cert_") || name.starts_with("cached_account_") {
            let bytes = std::fs::read(&path).expect("read");
            std::fs::write(&path, &bytes[..bytes.len() / 3]).expect("write");
            corrupted.push(name);
        }
    }
    assert_eq!(
        corrupted.len(),
        2,
        "a certificate and an account key: {corrupted:?}"
    );

    // Act
    let mut hub = AcmeHub::spawn(port, &pebble.directory(), &pebble.ca_file(), cache.path());
    let (metrics, second) = hub.metrics_once_counted(port, &trusting_pebble, "new_certificate");

    // Assert
    assert_ne!(second[0], first[0], "a new certificate");
    assert_eq!(
        acme_events(&metrics, "cached_certificate_refused"),
        1,
        "{metrics}"
    );
    assert_eq!(acme_events(&metrics, "account_key_refused"), 1, "{metrics}");
    assert_eq!(acme_events(&metrics, "new_certificate"), 1, "{metrics}");
}
