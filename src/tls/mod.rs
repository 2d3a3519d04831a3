//! TLS on the listener: the certificate the hub serves and the rustls configuration that
//! offers HTTP/2 and HTTP/1.1 by ALPN. Certificates come from files ([`files`]), reloaded
//! without a restart.

pub mod files;

use std::{io, path::PathBuf, sync::Arc};

use rustls::{
    ServerConfig,
    crypto::{CryptoProvider, ring},
    server::ResolvesServerCert,
};

pub use files::CertificateFiles;

/// Why a certificate could not be loaded. At start-up each is a one-line error naming the
/// file; on a reload it is logged and the certificate already served is kept.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("--tls-key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("--tls-key {key} does not match --tls-cert {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    pub(crate) fn certificate(path: &std::path::Path, reason: impl ToString) -> Self {
        Self::Certificate {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn key(path: &std::path::Path, reason: impl ToString) -> Self {
        Self::Key {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(err: TlsError) -> Self {
        io::Error::other(err.to_string())
    }
}

/// The cryptography every TLS connection of the hub uses: rustls's `ring` provider (pure Rust
/// and assembly, no OpenSSL, no C build tools), the one the Redis client already builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The listener's TLS configuration: TLS 1.3 and 1.2 with rustls's safe defaults, no client
/// certificates, the certificate from `certificates` at every handshake (so a reload reaches
/// new connections while open ones keep theirs). actix adds the ALPN protocols: `h2` first,
/// then `http/1.1`.
pub fn server_config(certificates: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    Ok(config)
}
