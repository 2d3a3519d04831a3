//! sse-load against a small TLS event-stream server made here (rustls offering h2 and/or
//! http/1.1 in ALPN, on a certificate signed by a CA that `openssl` makes for the test): every
//! published event reaches every subscriber over HTTP/1.1+TLS and over HTTP/2.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::mpsc,
};
use tokio_rustls::TlsAcceptor;

/// Where published events go: one channel per open subscriber.
#[derive(Debug, Default)]
struct Hub {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
}

impl Hub {
    fn subscribe(&self) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().unwrap().push(tx);
        rx
    }

    fn publish(&self, body: &[u8]) {
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(body);
        event.extend_from_slice(b"\n\n");
        let event = Bytes::from(event);
        self.subscribers
            .lock()
            .unwrap()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// A scratch directory with `ca.pem`, `server.pem` (localhost, 127.0.0.1) and `server.key`.
struct Certs(PathBuf);

impl Certs {
    fn make(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sse-load-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for args in [
            [
                &["req", "-x509"][..],
                &ec,
                &["-subj", "/CN=test CA"],
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
            [
                &["req"][..],
                &ec,
                &["-subj", "/CN=localhost"],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        ] {
            let out = std::process::Command::new("openssl")
                .args(&args)
                .current_dir(&dir)
                .output()
                .expect("this test needs the openssl CLI (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the server on 127.0.0.1:0 offering `alpn`; returns its address.
async fn serve(certs: &Certs, alpn: &[&[u8]]) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.path("server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = Arc::new(Hub::default());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, hub) = (acceptor.clone(), hub.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                    serve_h2(tls, hub).await;
                } else {
                    serve_http1(tls, hub).await;
                }
            });
        }
    });
    addr
}

/// HTTP/2: every request is a subscription.
async fn serve_h2(tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>, hub: Arc<Hub>) {
    let Ok(mut conn) = h2::server::handshake(tls).await else {
        return;
    };
    while let Some(Ok((_request, mut respond))) = conn.accept().await {
        let response = http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(())
            .unwrap();
        let Ok(mut send) = respond.send_response(response, false) else {
            continue;
        };
        let mut events = hub.subscribe();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if send.send_data(event, false).is_err() {
                    return;
                }
            }
        });
    }
}

/// HTTP/1.1: a GET subscribes (close-delimited body), a POST publishes its body (keep-alive).
async fn serve_http1(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    hub: Arc<Hub>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        if head.starts_with("get ") {
            let mut events = hub.subscribe();
            let ok =
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            if tls.write_all(ok).await.is_err() {
                return;
            }
            while let Some(event) = events.recv().await {
                if tls.write_all(&event).await.is_err() {
                    return;
                }
            }
            return;
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        hub.publish(&buf[end..end + length]);
        buf.drain(..end + length);
        if tls
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Runs sse-load with `args` (and the CA and --json) and returns its report.
async fn sse_load(ca: &Path, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args(args)
        .arg("--ca-file")
        .arg(ca)
        .args([
            "--json",
            "-q",
            "--settle",
            "200ms",
            "--hold",
            "200ms",
            "--timeout",
            "60s",
            // The tests assert exact delivery counts: on a busy machine the default 10 s drain
            // can end before the last events arrive. Draining stops as soon as all have.
            "--drain-timeout",
            "50s",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "sse-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Over HTTP/1.1+TLS, each subscriber on its own connection gets every event published over TLS.
#[tokio::test]
async fn http1_over_tls_delivers_every_event() {
    let certs = Certs::make("h1");
    let addr = serve(&certs, &[b"h2", b"http/1.1"]).await;
    let url = format!("https://localhost:{}/stream", addr.port());
    let publish = format!("https://localhost:{}/publish", addr.port());
    let report = sse_load(
        &certs.path("ca.pem"),
        &[
            &url,
            "-n",
            "20",
            "-P",
            "30",
            "-k",
            "2",
            "--publish-url",
            &publish,
        ],
    )
    .await;
    assert_eq!(report["protocol"], "http/1.1+tls", "{report}");
    assert_eq!(report["connections"], 20);
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["delivered"], 600, "{report}");
    assert_eq!(report["lost"], 0);
}

/// With --http2, the subscribers are streams spread over --connections connections, and every
/// event reaches every stream.
#[tokio::test]
async fn http2_streams_share_connections_and_get_every_event() {
    let certs = Certs::make("h2");
    let addr = serve(&certs, &[b"h2", b"http/1.1"]).await;
    let url = format!("https://localhost:{}/stream", addr.port());
    let publish = format!("https://localhost:{}/publish", addr.port());
    let report = sse_load(
        &certs.path("ca.pem"),
        &[
            &url,
            "-n",
            "50",
            "-P",
            "30",
            "--http2",
            "--connections",
            "3",
            "--publish-url",
            &publish,
        ],
    )
    .await;
    assert_eq!(report["protocol"], "h2", "{report}");
    assert_eq!(report["connections"], 3);
    assert_eq!(report["connected"], 50, "{report}");
    assert_eq!(report["delivered"], 1500, "{report}");
    assert_eq!(report["lost"], 0);
}

/// --http2 against a server that offers only http/1.1 fails every subscriber with a message
/// saying it was the h2 negotiation.
#[tokio::test]
async fn http2_without_h2_in_alpn_fails_clearly() {
    let certs = Certs::make("noh2");
    let addr = serve(&certs, &[b"http/1.1"]).await;
    let url = format!("https://localhost:{}/stream", addr.port());
    let report = sse_load(&certs.path("ca.pem"), &[&url, "-n", "4", "--http2"]).await;
    assert_eq!(report["connected"], 0, "{report}");
    assert_eq!(report["connect_failed"], 4);
    let error = report["connect_error"].as_str().unwrap_or_default();
    assert!(error.contains("h2"), "{error}");
}

/// A certificate not signed by the --ca-file CA is refused.
#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let (certs, other) = (Certs::make("trust"), Certs::make("other"));
    let addr = serve(&certs, &[b"http/1.1"]).await;
    let url = format!("https://localhost:{}/stream", addr.port());
    let report = sse_load(&other.path("ca.pem"), &[&url, "-n", "2"]).await;
    assert_eq!(report["connected"], 0, "{report}");
    let error = report["connect_error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate"), "{error}");
}
