//! Automatic certificates (ACME, RFC 8555) for the `--tls-acme` domains: an account and an order
//! with the CA, the tls-alpn-01 challenge answered on the hub's own TLS port, the account key and
//! certificate cached in `--acme-cache`, and renewal once two thirds of a certificate's lifetime
//! have passed. The protocol is rustls-acme's; this module parses the settings and drives it.

use std::{
    fs::{self, File},
    io::{self, Read as _},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures_util::StreamExt as _;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, crypto::ring::sign::any_ecdsa_type,
    server::ResolvesServerCert,
};
use rustls_acme::{
    AccountCache, AcmeConfig, AcmeState, CertCache, EventError, EventOk, caches::DirCache,
};
use rustls_pki_types::{
    CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _,
};

use super::{TlsError, provider};
use crate::metrics::{AcmeEvent, Metrics};

/// The ALPN protocol of a tls-alpn-01 validation (RFC 8737): offered by the listener next to
/// `h2` and `http/1.1`, and answered with the challenge certificate while an order is pending.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Largest `--acme-ca-file` read: a bundle of a few hundred certificates.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// A name the hub asks a certificate for: a DNS name in lower case, neither an IP address nor
/// a wildcard (tls-alpn-01 validates neither; they need other challenges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDomain(String);

impl AcmeDomain {
    pub fn parse(value: &str) -> Result<Self, String> {
        let name = value.trim().to_ascii_lowercase();
        if name.starts_with("*.") {
            return Err(format!(
                "`{value}`: a wildcard name needs the dns-01 challenge; the hub answers tls-alpn-01 \
                 only, so name each host"
            ));
        }
        if name.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "`{value}`: an IP address, not a DNS name (ACME CAs issue for names)"
            ));
        }
        if name.ends_with('.') || DnsName::try_from(name.as_str()).is_err() {
            return Err(format!("`{value}` is not a DNS name"));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ACME account contact: `mailto:ADDRESS`, the one scheme Let's Encrypt accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeContact(String);

impl AcmeContact {
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        match value.strip_prefix("mailto:") {
            Some(address)
                if address.contains('@')
                    && !address.starts_with('@')
                    && !address.ends_with('@')
                    && !address.contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                Ok(Self(value.to_owned()))
            }
            _ => Err(format!(
                "`{value}`: expected `mailto:ADDRESS`, e.g. `mailto:ops@example.com`"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ACME directory: an `https://` URL.
pub fn parse_directory(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|err| format!("`{value}`: {err}"))?;
    if url.scheme() != "https" {
        return Err(format!("`{value}`: an ACME directory is an https:// URL"));
    }
    Ok(url.into())
}

/// Why ACME could not start. Each names the setting to fix; once started, failures are logged
/// and retried, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("--acme-cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("--tls-acme needs --acme-cache: without it every restart orders a new certificate")]
    NoCache,
    #[error("--acme-ca-file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What `--tls-acme` and the `--acme-*` settings ask for.
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    pub domains: Vec<AcmeDomain>,
    pub cache: PathBuf,
    pub directory: String,
    pub contact: Vec<AcmeContact>,
    pub ca_file: Option<PathBuf>,
}

/// The certificate that ACME keeps current: checked settings and a state machine that has
/// not run yet.
#[derive(Debug)]
pub struct Acme {
    state: AcmeState<io::Error, io::Error>,
    domains: String,
    metrics: Arc<Metrics>,
}

impl Acme {
    /// Checks the cache directory and the extra CA. Nothing is asked of the CA before
    /// [`Acme::start`].
    pub fn new(options: AcmeOptions, metrics: Arc<Metrics>) -> Result<Self, AcmeError> {
        prepare_cache(&options.cache)?;
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &options.ca_file {
            add_ca_file(&mut roots, path)?;
        }
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Config(err.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // One identifier per name: a CA may refuse an order that repeats one.
        let mut domains: Vec<&str> = Vec::with_capacity(options.domains.len());
        for domain in &options.domains {
            if !domains.contains(&domain.as_str()) {
                domains.push(domain.as_str());
            }
        }
        let state = AcmeConfig::new_with_client_config(&domains, Arc::new(client))
            .directory(&options.directory)
            .contact(options.contact.iter().map(AcmeContact::as_str))
            .cache(CheckedCache {
                files: DirCache::new(options.cache.clone()),
                metrics: Arc::clone(&metrics),
            })
            .state();
        log::info!(
            "ACME domains={} directory={} cache={}",
            domains.join(","),
            options.directory,
            options.cache.display()
        );
        Ok(Self {
            domains: domains.join(","),
            state,
            metrics,
        })
    }

    /// The listener's configuration ([`super::server_config`]): the certificate ACME keeps
    /// current on each handshake, and `acme-tls/1` offered besides `h2` and `http/1.1` so the
    /// CA's validation reaches the challenge certificate.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let resolver: Arc<dyn ResolvesServerCert> = self.state.resolver();
        let mut config = super::server_config(resolver)?;
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        Ok(config)
    }

    /// Loads the cached certificate or orders one, and keeps it renewed for the life of the
    /// process, on a thread of its own (`sse-hub-acme`): key generation, signing and the cache's
    /// file I/O never run on the broadcaster's thread. Until a certificate is there, TLS
    /// handshakes fail: a fresh hub serves within seconds of the CA's validation.
    pub fn start(self) -> Result<(), AcmeError> {
        let Self {
            state,
            domains,
            metrics,
        } = self;
        std::thread::Builder::new()
            .name("sse-hub-acme".to_owned())
            .spawn(move || async_io::block_on(drive(state, domains, metrics)))
            .map_err(|err| TlsError::Config(format!("cannot start the ACME thread: {err}")))?;
        Ok(())
    }
}

/// Runs the ACME state machine for the life of the process: it loads the cache, orders when
/// there is no valid certificate, sleeps until renewal, and retries a failed order after 1 s,
/// 2 s, 4 s … up to 2^16 s (rustls-acme's backoff). Each failure is logged once as it happens,
/// so the log rate is bounded by that backoff; the certificate served so far stays.
async fn drive(mut state: AcmeState<io::Error, io::Error>, domains: String, metrics: Arc<Metrics>) {
    while let Some(event) = state.next().await {
        let (kind, outcome) = match event {
            Ok(EventOk::DeployedCachedCert) => {
                log::info!("ACME certificate loaded from the cache domains={domains}");
                (AcmeEvent::CACHED_CERTIFICATE, None)
            }
            Ok(EventOk::DeployedNewCert) => {
                log::info!("ACME certificate issued and served domains={domains}");
                (AcmeEvent::NEW_CERTIFICATE, None)
            }
            Ok(EventOk::CertCacheStore | EventOk::AccountCacheStore) => {
                log::debug!("ACME cache written domains={domains}");
                continue;
            }
            Err(err) => {
                let kind = match &err {
                    EventError::Order(_) | EventError::NewCertParse(_) => AcmeEvent::ORDER_FAILED,
                    EventError::CachedCertParse(_) => AcmeEvent::CACHED_CERTIFICATE_REFUSED,
                    EventError::CertCacheLoad(_)
                    | EventError::AccountCacheLoad(_)
                    | EventError::CertCacheStore(_)
                    | EventError::AccountCacheStore(_) => AcmeEvent::CACHE_FAILED,
                };
                (kind, Some(err))
            }
        };
        metrics.acme_events.get_or_create(&kind).inc();
        if let Some(err) = outcome {
            let next = if kind == AcmeEvent::ORDER_FAILED {
                "; ordered again after a backoff, the certificate served so far stays"
            } else if kind == AcmeEvent::CACHED_CERTIFICATE_REFUSED {
                "; a new certificate is ordered"
            } else {
                ""
            };
            log::warn!("ACME {} domains={domains} error={err}{next}", kind.event);
        }
    }
}

/// `--acme-cache`: rustls-acme's directory cache, with the account key parsed at this boundary.
/// A key that does not parse (a torn write, an edited file) is refused, counted and logged, and
/// a new account key replaces it; used as it is, it would fail every order, forever. (A cached
/// certificate that does not parse is refused by rustls-acme, which orders a new one.)
struct CheckedCache {
    files: DirCache<PathBuf>,
    metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl CertCache for CheckedCache {
    type EC = io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        self.files.load_cert(domains, directory_url).await
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), io::Error> {
        self.files.store_cert(domains, directory_url, cert).await
    }
}

#[async_trait::async_trait]
impl AccountCache for CheckedCache {
    type EA = io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        let key = self.files.load_account(contact, directory_url).await?;
        match key {
            Some(der) if !is_account_key(&der) => {
                self.metrics
                    .acme_events
                    .get_or_create(&AcmeEvent::ACCOUNT_KEY_REFUSED)
                    .inc();
                log::warn!(
                    "ACME account key in the cache is not a PKCS#8 ECDSA key ({} bytes): a new \
                     account key replaces it",
                    der.len()
                );
                Ok(None)
            }
            key => Ok(key),
        }
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), io::Error> {
        self.files
            .store_account(contact, directory_url, account)
            .await
    }
}

/// Whether `der` is what rustls-acme stores as an account key: an ECDSA key in PKCS#8.
fn is_account_key(der: &[u8]) -> bool {
    any_ecdsa_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))).is_ok()
}

/// Creates the cache directory (0700: it holds the account key and certificate keys) when it
/// is missing, and checks that the hub can write there: an unwritable cache would order a new
/// certificate at every restart, which the CA's rate limits soon refuse.
fn prepare_cache(dir: &Path) -> Result<(), AcmeError> {
    let error = |reason: String| AcmeError::Cache {
        path: dir.to_owned(),
        reason,
    };
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|err| error(format!("cannot create it: {err}")))?;
    }
    let meta = fs::metadata(dir).map_err(|err| error(err.to_string()))?;
    if !meta.is_dir() {
        return Err(error("not a directory".to_owned()));
    }
    #[cfg(unix)]
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
        log::warn!(
            "ACME cache readable by others (it holds private keys): chmod 700 {}",
            dir.display()
        );
    }
    let probe = dir.join(".sse-hub-write-check");
    fs::write(&probe, b"")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|err| error(format!("not writable: {err}")))
}

/// Adds the CA certificates of a PEM file to `roots`.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), AcmeError> {
    let error = |reason: String| AcmeError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let mut pem = Vec::new();
    File::open(path)
        .and_then(|file| file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem))
        .map_err(|err| error(err.to_string()))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(error(format!(
            "larger than {MAX_CA_FILE_BYTES} bytes: not a PEM CA bundle"
        )));
    }
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| error(format!("not PEM: {err}")))?;
    if certificates.is_empty() {
        return Err(error("no CERTIFICATE section found".to_owned()));
    }
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|err| error(format!("not a CA certificate: {err}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Domains are DNS names, lower-cased; IP addresses, wildcards and junk are refused with
    /// a reason.
    #[test]
    fn domains_are_dns_names() {
        assert_eq!(
            AcmeDomain::parse("Hub.Example.com").map(|d| d.as_str().to_owned()),
            Ok("hub.example.com".to_owned())
        );
        assert!(AcmeDomain::parse("localhost").is_ok());
        let wildcard = AcmeDomain::parse("*.example.com").expect_err("wildcard");
        assert!(wildcard.contains("dns-01"), "{wildcard}");
        let ip = AcmeDomain::parse("127.0.0.1").expect_err("ip");
        assert!(ip.contains("IP address"), "{ip}");
        for junk in [
            "",
            "exa mple.com",
            "example.com.",
            "a..b",
            "https://example.com",
        ] {
            assert!(AcmeDomain::parse(junk).is_err(), "{junk:?} accepted");
        }
    }

    /// A contact is `mailto:` and an address; anything else is refused.
    #[test]
    fn contacts_are_mailto_addresses() {
        assert!(AcmeContact::parse("mailto:ops@example.com").is_ok());
        for bad in [
            "ops@example.com",
            "mailto:",
            "mailto:ops",
            "tel:+123",
            "mailto:a b@c",
        ] {
            assert!(AcmeContact::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// The directory must be https.
    #[test]
    fn directory_is_https() {
        assert!(parse_directory("https://127.0.0.1:14000/dir").is_ok());
        assert!(parse_directory("http://127.0.0.1:14000/dir").is_err());
        assert!(parse_directory("not a url").is_err());
    }

    /// A missing cache directory is created private; a file where it should be is refused.
    #[test]
    fn cache_directory_is_created_private() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = dir.path().join("a/b");
        prepare_cache(&cache).expect("created");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&cache).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let file = dir.path().join("file");
        fs::write(&file, b"x").expect("write");
        let err = prepare_cache(&file).expect_err("a file");
        assert!(err.to_string().starts_with("--acme-cache "), "{err}");
    }

    /// The account key check takes what rustls-acme generates and refuses anything else.
    #[test]
    fn account_keys_are_pkcs8_ecdsa() {
        let key = rcgen::KeyPair::generate().expect("a P-256 key");
        assert!(is_account_key(&key.serialize_der()));
        assert!(!is_account_key(b""));
        assert!(!is_account_key(&key.serialize_der()[..40]));
    }

    /// A CA file that is missing or holds no certificate is refused, naming the file.
    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let mut roots = RootCertStore::empty();
        let missing = dir.path().join("missing.pem");
        let err = add_ca_file(&mut roots, &missing).expect_err("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello\n").expect("write");
        let err = add_ca_file(&mut roots, &junk).expect_err("junk");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");

        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = dir.path().join("ca.pem");
        fs::write(&ca, params.self_signed(&key).expect("cert").pem()).expect("write");
        add_ca_file(&mut roots, &ca).expect("a CA");
        assert_eq!(roots.len(), 1);
    }
}
