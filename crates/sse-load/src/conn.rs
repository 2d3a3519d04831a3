//! Connections to a target: plain TCP, or TLS (rustls on the ring provider) trusting only the
//! certificates of `--ca-file`, offering ALPN `http/1.1` or, for `--http2`, `h2`.

use std::{
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use anyhow::{Context as _, bail};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::target::{Scheme, Target};

/// The application protocol a TLS connection offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
}

impl Alpn {
    fn id(self) -> &'static [u8] {
        match self {
            Self::Http1 => b"http/1.1",
            Self::H2 => b"h2",
        }
    }
}

/// Opens connections to one target; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    addr: SocketAddr,
    /// Some for `https://` targets.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Connector {
    /// A connector for `target`; an `https://` target needs `ca_file`, the PEM certificates
    /// (a CA, or the server's self-signed certificate) its certificate must chain to.
    pub fn new(target: &Target, ca_file: Option<&Path>, alpn: Alpn) -> anyhow::Result<Self> {
        let tls = match target.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let Some(ca_file) = ca_file else {
                    bail!(
                        "https:// targets need --ca-file, the PEM certificate (CA or self-signed) the server's certificate chains to"
                    );
                };
                let config = client_config(&load_roots(ca_file)?, alpn)?;
                let name = ServerName::try_from(target.host.clone())
                    .with_context(|| format!("{}: not a TLS server name", target.host))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self {
            addr: target.addr,
            tls,
        })
    }

    /// Connects (from `source` when given), with TCP_NODELAY, and completes the TLS handshake.
    pub async fn connect(&self, source: Option<SocketAddr>) -> anyhow::Result<Stream> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = source {
            socket
                .bind(source)
                .with_context(|| format!("bind {source}"))?;
        }
        let tcp = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

/// Every certificate in the PEM file `path`; none is an error.
pub fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("read --ca-file {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("{}: bad PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: unusable certificate", path.display()))?;
    }
    if roots.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(roots)
}

/// TLS 1.2 and 1.3 on ring, trusting `roots` only, offering `alpn`.
fn client_config(roots: &RootCertStore, alpn: Alpn) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.id().to_vec()];
    Ok(config)
}

/// A connection: plain or TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The protocol the server picked in ALPN; None on plain TCP or when it picked none.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing --ca-file for an https:// target, or a file without certificates, is refused
    /// with a message naming the option.
    #[test]
    fn https_needs_a_ca_file_with_certificates() {
        let target = Target::parse("https://127.0.0.1:1/").unwrap();
        let err = Connector::new(&target, None, Alpn::Http1).unwrap_err();
        assert!(format!("{err:#}").contains("--ca-file"), "{err:#}");
        let empty = std::env::temp_dir().join(format!("sse-load-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Connector::new(&target, Some(&empty), Alpn::H2).unwrap_err();
        let _ = std::fs::remove_file(&empty);
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
        let plain = Target::parse("http://127.0.0.1:1/").unwrap();
        assert!(Connector::new(&plain, None, Alpn::Http1).is_ok());
    }

    /// The client offers exactly the one protocol asked for.
    #[test]
    fn alpn_offers_the_chosen_protocol() {
        let roots = RootCertStore::empty();
        let h2 = client_config(&roots, Alpn::H2).unwrap();
        assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
        let h1 = client_config(&roots, Alpn::Http1).unwrap();
        assert_eq!(h1.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
