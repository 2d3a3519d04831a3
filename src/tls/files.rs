//! A certificate chain and private key read from PEM files: checked at start-up (a missing,
//! unreadable or mismatched pair is an error naming the file), reloaded when the files change
//! or on SIGHUP; a bad new pair is logged and counted, and the certificate served is kept.

use std::{
    fmt,
    fs::{self, File},
    io::Read as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use super::{TlsError, provider};

/// Largest certificate or key file read: a chain of a few certificates is a few KiB; a file
/// beyond this is not a certificate, and is refused before it is read into memory.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// What a reload compares to decide whether the files changed: each file's modification time
/// and length.
type Stamp = [(Option<SystemTime>, u64); 2];

/// The certificate served on every TLS handshake, from `--tls-cert` and `--tls-key`.
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    loaded: RwLock<Stamp>,
}

impl fmt::Debug for CertificateFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What [`CertificateFiles::reload_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were when last loaded.
    Unchanged,
    /// A new certificate is served from the next handshake on.
    Loaded,
}

impl CertificateFiles {
    /// Reads and checks both files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let certified = read_pair(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(certified)),
            loaded: RwLock::new(stamp),
        })
    }

    /// Reads both files again and serves them from the next handshake on. On an error the
    /// certificate served so far stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamp(&self.cert, &self.key);
        let certified = read_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(())
    }

    /// [`reload`](Self::reload) when either file's modification time or length differs from
    /// the last load (or the last failed attempt: a bad file is reported once, not at every
    /// check, until it changes again).
    pub fn reload_if_changed(&self) -> Result<Reload, TlsError> {
        let stamp = stamp(&self.cert, &self.key);
        {
            let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            if *loaded == stamp {
                return Ok(Reload::Unchanged);
            }
            *loaded = stamp;
        }
        self.reload().map(|()| Reload::Loaded)
    }

    /// The certificate chain served now (the leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .clone()
    }

    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |path: &Path| match fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    };
    [one(cert), one(key)]
}

/// Reads a file of at most [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|err| err.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "larger than {MAX_PEM_BYTES} bytes: not a PEM certificate or key"
        ));
    }
    Ok(bytes)
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let pem = read_bounded(cert_path).map_err(|err| TlsError::certificate(cert_path, err))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::certificate(cert_path, format!("not PEM: {err}")))?;
    if chain.is_empty() {
        return Err(TlsError::certificate(
            cert_path,
            "no CERTIFICATE section found",
        ));
    }
    let pem = read_bounded(key_path).map_err(|err| TlsError::key(key_path, err))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        TlsError::key(
            key_path,
            format!("no PKCS#8, PKCS#1 or SEC1 private key found ({err})"),
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: "the key is not the certificate's".to_owned(),
        },
        rustls::Error::General(reason) => TlsError::key(key_path, reason),
        other => TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).expect("write");
        path
    }

    /// A matching pair loads; its chain is the certificate written.
    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = pair("localhost");
        let files = CertificateFiles::load(
            &write(dir.path(), "cert.pem", &cert),
            &write(dir.path(), "key.pem", &key),
        )
        .expect("loads");
        assert_eq!(files.chain().len(), 1);
    }

    /// Each bad file is refused with an error naming it and saying what is wrong.
    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = pair("localhost");
        let (_, other_key) = pair("other");
        let cert_path = write(dir.path(), "cert.pem", &cert);
        let key_path = write(dir.path(), "key.pem", &key);
        let missing = dir.path().join("missing.pem");
        let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
        let other = write(dir.path(), "other-key.pem", &other_key);

        let err = CertificateFiles::load(&missing, &key_path).expect_err("missing cert");
        assert!(err.to_string().starts_with("--tls-cert "), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = CertificateFiles::load(&garbage, &key_path).expect_err("garbage cert");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");

        let err = CertificateFiles::load(&cert_path, &garbage).expect_err("garbage key");
        assert!(err.to_string().starts_with("--tls-key "), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        let err = CertificateFiles::load(&cert_path, &other).expect_err("mismatch");
        assert!(err.to_string().contains("does not match"), "{err}");

        // A key where the certificate belongs.
        let err = CertificateFiles::load(&key_path, &key_path).expect_err("swapped");
        assert!(err.to_string().starts_with("--tls-cert "), "{err}");
    }

    /// A changed pair is served after `reload_if_changed`; a bad change keeps the old one and
    /// is reported once.
    #[test]
    fn reload_keeps_the_old_certificate_on_a_bad_change() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = pair("localhost");
        let cert_path = write(dir.path(), "cert.pem", &cert);
        let key_path = write(dir.path(), "key.pem", &key);
        let files = CertificateFiles::load(&cert_path, &key_path).expect("loads");
        let first = files.chain();
        assert_eq!(files.reload_if_changed().expect("same"), Reload::Unchanged);

        // A half-written certificate (a different length): refused, the old one kept.
        write(dir.path(), "cert.pem", &cert[..cert.len() / 2]);
        assert!(files.reload_if_changed().is_err());
        assert_eq!(files.chain(), first);
        assert_eq!(
            files.reload_if_changed().expect("reported once"),
            Reload::Unchanged
        );

        let (cert2, key2) = pair("localhost");
        write(dir.path(), "cert.pem", &cert2);
        write(dir.path(), "key.pem", &key2);
        assert_eq!(files.reload_if_changed().expect("new pair"), Reload::Loaded);
        assert_ne!(files.chain(), first);
    }
}
