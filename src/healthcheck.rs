//! The `healthcheck` command: asks a running hub for `/healthz` over plain TCP, or over TLS when
//! the hub serves TLS, so the image's HEALTHCHECK needs no curl.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use crate::tls;

const TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// Returns `Ok(())` when the hub at `bind` answers `/healthz` with 200; `tls` when it serves
/// TLS.
pub fn check(bind: SocketAddr, tls: bool) -> io::Result<()> {
    // A hub bound to every interface is asked on loopback.
    let target = match bind {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    };
    let stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let response = if tls {
        ask(over_tls(stream)?)?
    } else {
        ask(stream)?
    };
    let status_line = response.lines().next().unwrap_or_default();
    if status_line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(io::Error::other(format!("unhealthy: {status_line}")))
    }
}

fn ask(mut stream: impl Read + Write) -> io::Result<String> {
    stream.write_all(REQUEST)?;
    stream.flush()?;
    let mut response = String::new();
    // The hub closes after the response; a TLS peer that closes without close_notify is fine.
    match stream.take(64 * 1024).read_to_string(&mut response) {
        Ok(_) => Ok(response),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof && !response.is_empty() => {
            Ok(response)
        }
        Err(err) => Err(err),
    }
}

/// A TLS client for the hub's own loopback address. The certificate names the hub's public
/// domain, not the address asked, so it is not checked: this probes liveness, and nothing
/// secret is sent. The handshake's signatures are still verified.
fn over_tls(stream: TcpStream) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let provider = tls::provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let connection = ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    Ok(StreamOwned::new(connection, stream))
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
