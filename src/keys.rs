//! Verification keys: the signing algorithms, a configured key, and the trusted issuers of
//! Mercure 1.0 access tokens (`--issuers FILE`), each with its keys (a shared secret, a PEM
//! public key, or a JWK Set fetched by URL or read from a file and kept fresh) and the
//! algorithms it may sign with.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, jwk::Jwk};
use serde::Deserialize;

use crate::metrics::{JwksRefresh, Metrics};

/// The two roles a token can be checked for; each may have its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Publisher => "publisher",
            Self::Subscriber => "subscriber",
        }
    }
}

/// A verification key and the one algorithm it accepts.
#[derive(Clone)]
pub struct JwtKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithm: Algorithm,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// `material` is the shared secret (HS*) or a PEM public key (RS*, PS*, ES*, EdDSA); `@path`
    /// reads it from a file. A PEM key given with an HMAC algorithm is refused: it would make
    /// the public key a shared secret anyone could sign with.
    pub fn new(material: &str, algorithm: JwtAlgorithm) -> Result<Self, String> {
        let material = read_material(material)?;
        let pem = |kind: &str, parsed: jsonwebtoken::errors::Result<DecodingKey>| {
            parsed.map_err(|err| format!("not {kind} public key in PEM form ({algorithm}): {err}"))
        };
        let key = match Algorithm::from(algorithm).family() {
            AlgorithmFamily::Hmac => {
                if material.windows(10).any(|w| w == b"-----BEGIN") {
                    return Err(format!(
                        "a PEM key cannot be used with {algorithm}, an HMAC algorithm (its \
                         public key would become a shared secret): give the algorithm of the \
                         key pair (RS256, ES256, EdDSA, ...)"
                    ));
                }
                DecodingKey::from_secret(&material)
            }
            AlgorithmFamily::Rsa => pem("an RSA", DecodingKey::from_rsa_pem(&material))?,
            AlgorithmFamily::Ec => pem("an EC", DecodingKey::from_ec_pem(&material))?,
            AlgorithmFamily::Ed => pem("an Ed25519", DecodingKey::from_ed_pem(&material))?,
        };
        Ok(Self {
            key,
            algorithm: algorithm.into(),
        })
    }
}

pub(crate) fn read_material(material: &str) -> Result<Vec<u8>, String> {
    match material.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|err| format!("cannot read {path}: {err}")),
        None => Ok(material.as_bytes().to_vec()),
    }
}

/// The signing algorithms a key may be configured for (`none` is not one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    HS256,
    #[value(name = "HS384")]
    HS384,
    #[value(name = "HS512")]
    HS512,
    #[value(name = "RS256")]
    RS256,
    #[value(name = "RS384")]
    RS384,
    #[value(name = "RS512")]
    RS512,
    #[value(name = "PS256")]
    PS256,
    #[value(name = "ES256")]
    ES256,
    #[value(name = "ES384")]
    ES384,
    #[value(name = "EdDSA")]
    EdDSA,
}

impl JwtAlgorithm {
    /// Every algorithm, in the order `--help` lists them.
    pub const ALL: [Self; 10] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The algorithm a JWS header names, if it is one of these.
    pub fn from_jws(algorithm: Algorithm) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| Algorithm::from(*a) == algorithm)
    }
}

impl std::fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(algorithm: JwtAlgorithm) -> Self {
        match algorithm {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::HS384 => Algorithm::HS384,
            JwtAlgorithm::HS512 => Algorithm::HS512,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::RS384 => Algorithm::RS384,
            JwtAlgorithm::RS512 => Algorithm::RS512,
            JwtAlgorithm::PS256 => Algorithm::PS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
            JwtAlgorithm::ES384 => Algorithm::ES384,
            JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// The largest JWK Set read, from a URL or a file: a provider's set is a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long a JWK Set fetch may take before it counts as failed.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Algorithms an issuer with a key pair or a JWK Set may use unless its entry lists them:
/// the asymmetric ones (an HMAC secret in a JWK Set would be a secret published).
const ASYMMETRIC: [JwtAlgorithm; 7] = [
    JwtAlgorithm::RS256,
    JwtAlgorithm::RS384,
    JwtAlgorithm::RS512,
    JwtAlgorithm::PS256,
    JwtAlgorithm::ES256,
    JwtAlgorithm::ES384,
    JwtAlgorithm::EdDSA,
];

/// One `[[issuer]]` of the file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerEntry {
    iss: String,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    pem: Option<String>,
    #[serde(default)]
    alg: Option<JwtAlgorithm>,
    #[serde(default)]
    jwks: Option<String>,
    #[serde(default)]
    publisher: Option<KeyEntry>,
    #[serde(default)]
    subscriber: Option<KeyEntry>,
}

/// A role's key, as written: exactly one of `secret`, `pem` (with `alg`), `jwks`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    pem: Option<String>,
    #[serde(default)]
    alg: Option<JwtAlgorithm>,
    #[serde(default)]
    jwks: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuersFile {
    #[serde(default)]
    issuer: Vec<IssuerEntry>,
}

/// How often JWK Sets are fetched again, and at most how often a token naming an unknown key
/// may make the hub fetch one.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    pub every: Duration,
    pub at_most_every: Duration,
}

/// A trusted issuer: its `iss`, the algorithms its tokens may use, and each role's key.
#[derive(Debug)]
pub struct Issuer {
    pub iss: String,
    pub algorithms: Vec<JwtAlgorithm>,
    publisher: Option<KeySource>,
    subscriber: Option<KeySource>,
}

/// Where a role's verification keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    Static(JwtKey),
    Set(Arc<JwkSetCache>),
}

impl Issuer {
    /// The key that verifies a token of this issuer signed with `algorithm` under `kid`,
    /// fetching the issuer's JWK Set again first when `kid` is unknown (at most once per
    /// `at_most_every`). The error completes "the token ...".
    pub async fn key_for(
        &self,
        role: Role,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<DecodingKey, String> {
        let named = JwtAlgorithm::from_jws(algorithm)
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| {
                format!(
                    "is signed with {algorithm:?}, which the issuer `{}` may not use (it may use {})",
                    self.iss,
                    names(&self.algorithms)
                )
            })?;
        let source = match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        };
        match source {
            None => Err(format!(
                "is from the issuer `{}`, which the hub does not trust for {}s",
                self.iss,
                role.name()
            )),
            Some(KeySource::Static(key)) if key.algorithm == algorithm => Ok(key.key.clone()),
            Some(KeySource::Static(key)) => Err(format!(
                "is signed with {named}, but the issuer `{}`'s {} key is for {:?}",
                self.iss,
                role.name(),
                key.algorithm
            )),
            Some(KeySource::Set(set)) => set.key_for(algorithm, kid).await,
        }
    }

    /// Whether tokens of this issuer are taken for `role`.
    pub fn trusts(&self, role: Role) -> bool {
        match role {
            Role::Publisher => self.publisher.is_some(),
            Role::Subscriber => self.subscriber.is_some(),
        }
    }

    /// The JWK Sets of this issuer (one per role, or one shared), for the background refresh.
    fn sets(&self) -> impl Iterator<Item = &Arc<JwkSetCache>> {
        let publisher = match &self.publisher {
            Some(KeySource::Set(set)) => Some(set),
            _ => None,
        };
        let subscriber = match &self.subscriber {
            Some(KeySource::Set(set)) if !publisher.is_some_and(|p| Arc::ptr_eq(p, set)) => {
                Some(set)
            }
            _ => None,
        };
        publisher.into_iter().chain(subscriber)
    }
}

fn names(algorithms: &[JwtAlgorithm]) -> String {
    algorithms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `--issuers`: a TOML file of `[[issuer]]` tables. A mistake in it stops start-up with a
/// line naming the issuer; `file://` JWK Sets are read now, URLs are fetched once the hub runs.
pub fn load(path: &str, refresh: Refresh, metrics: &Arc<Metrics>) -> Result<Vec<Issuer>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read {path}: {err}"))?;
    let file: IssuersFile = toml::from_str(&text)
        .map_err(|err| format!("{path} is not a valid issuers file: {err}"))?;
    let mut issuers: Vec<Issuer> = Vec::new();
    for entry in file.issuer {
        let iss = entry.iss.clone();
        if issuers.iter().any(|issuer| issuer.iss == iss) {
            return Err(format!("{path}: the issuer `{iss}` is listed twice"));
        }
        let issuer = build(entry, refresh, metrics)
            .map_err(|why| format!("{path}: issuer `{iss}`: {why}"))?;
        issuers.push(issuer);
    }
    Ok(issuers)
}

fn build(entry: IssuerEntry, refresh: Refresh, metrics: &Arc<Metrics>) -> Result<Issuer, String> {
    if entry.iss.is_empty() {
        return Err("`iss` must not be empty".to_owned());
    }
    let both = KeyEntry {
        secret: entry.secret,
        pem: entry.pem,
        alg: entry.alg,
        jwks: entry.jwks,
    };
    let has_both = both.secret.is_some() || both.pem.is_some() || both.jwks.is_some();
    if has_both && (entry.publisher.is_some() || entry.subscriber.is_some()) {
        return Err(
            "give the key either for both roles (`secret`, `pem` or `jwks` at the top) or per \
             role (`publisher`, `subscriber`), not both"
                .to_owned(),
        );
    }
    let (publisher, subscriber) = if has_both {
        let source = key_source(&both, &entry.iss, refresh, metrics)?;
        (Some(source.clone()), Some(source))
    } else {
        (
            entry
                .publisher
                .as_ref()
                .map(|key| key_source(key, &entry.iss, refresh, metrics))
                .transpose()?,
            entry
                .subscriber
                .as_ref()
                .map(|key| key_source(key, &entry.iss, refresh, metrics))
                .transpose()?,
        )
    };
    if publisher.is_none() && subscriber.is_none() {
        return Err("no key: give `secret`, `pem` with `alg`, or `jwks`".to_owned());
    }
    let algorithms = match entry.algorithms {
        Some(names) => names
            .iter()
            .map(|name| parse_algorithm(name))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            // A static key has its one algorithm; a JWK Set may use any asymmetric one.
            let mut algorithms = Vec::new();
            for source in publisher.iter().chain(subscriber.iter()) {
                match source {
                    KeySource::Static(key) => {
                        algorithms.extend(JwtAlgorithm::from_jws(key.algorithm));
                    }
                    KeySource::Set(_) => algorithms.extend(ASYMMETRIC),
                }
            }
            let mut unique = Vec::with_capacity(algorithms.len());
            for algorithm in algorithms {
                if !unique.contains(&algorithm) {
                    unique.push(algorithm);
                }
            }
            unique
        }
    };
    if algorithms.is_empty() {
        return Err("`algorithms` is empty: no token could be accepted".to_owned());
    }
    Ok(Issuer {
        iss: entry.iss,
        algorithms,
        publisher,
        subscriber,
    })
}

fn parse_algorithm(name: &str) -> Result<JwtAlgorithm, String> {
    JwtAlgorithm::ALL
        .into_iter()
        .find(|alg| alg.to_string() == name)
        .ok_or_else(|| {
            format!(
                "unknown algorithm `{name}` (known: {}; `none` never)",
                names(&JwtAlgorithm::ALL)
            )
        })
}

fn key_source(
    key: &KeyEntry,
    iss: &str,
    refresh: Refresh,
    metrics: &Arc<Metrics>,
) -> Result<KeySource, String> {
    match (&key.secret, &key.pem, &key.jwks) {
        (Some(secret), None, None) => {
            let alg = key.alg.unwrap_or(JwtAlgorithm::HS256);
            if Algorithm::from(alg).family() != jsonwebtoken::AlgorithmFamily::Hmac {
                return Err(format!(
                    "a `secret` needs an HMAC algorithm (HS256, HS384, HS512), not {alg}"
                ));
            }
            JwtKey::new(secret, alg).map(KeySource::Static)
        }
        (None, Some(pem), None) => {
            let alg = key
                .alg
                .ok_or("a `pem` key needs its `alg` (RS256, PS256, ES256, EdDSA, ...)")?;
            JwtKey::new(pem, alg).map(KeySource::Static)
        }
        (None, None, Some(jwks)) => {
            if key.alg.is_some() {
                return Err(
                    "`alg` goes with `secret` or `pem`; a JWK Set's keys name theirs, \
                            and `algorithms` bounds them"
                        .to_owned(),
                );
            }
            let set = JwkSetCache::new(jwks, iss, refresh.at_most_every, metrics.clone())?;
            Ok(KeySource::Set(Arc::new(set)))
        }
        _ => Err("give exactly one of `secret`, `pem` (with `alg`) or `jwks`".to_owned()),
    }
}

/// Starts the background refresh of every JWK Set fetched by URL: once now, then every
/// `every`. Runs on the current actix system's arbiter.
pub fn start_refresh(issuers: &[Arc<Issuer>], every: Duration) {
    for issuer in issuers {
        for set in issuer.sets() {
            if matches!(set.location, Location::File(_)) {
                continue;
            }
            let set = set.clone();
            actix_web::rt::spawn(async move {
                loop {
                    set.refresh().await;
                    actix_web::rt::time::sleep(every).await;
                }
            });
        }
    }
}

/// Where a JWK Set is read from.
#[derive(Debug)]
enum Location {
    Url(String),
    File(String),
}

/// One usable key of a set.
#[derive(Clone)]
struct SetKey {
    kid: Option<String>,
    /// The `alg` the key names, if it names one: then no other algorithm may use it.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// A JWK Set, as last read: looked up on every token of its issuer, read again in the
/// background, and on demand (rate-limited) when a token names a key it does not hold. A
/// failed read keeps the keys held.
pub struct JwkSetCache {
    location: Location,
    iss: String,
    keys: RwLock<Arc<Vec<SetKey>>>,
    /// When a read on demand last started: at most one per `at_most_every`.
    last_on_demand: Mutex<Option<Instant>>,
    at_most_every: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for JwkSetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwkSetCache")
            .field("location", &self.location)
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

impl JwkSetCache {
    /// `jwks` is an `https://` URL (`http://` only to a loopback address) or `file://PATH`; a
    /// file is read now, and must hold at least one usable key.
    fn new(
        jwks: &str,
        iss: &str,
        at_most_every: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let location = if let Some(path) = jwks.strip_prefix("file://") {
            Location::File(path.to_owned())
        } else if jwks.starts_with("https://") || is_loopback_http(jwks) {
            Location::Url(jwks.to_owned())
        } else {
            return Err(format!(
                "`jwks = \"{jwks}\"`: use an https:// URL (http:// only to a loopback address: \
                 keys fetched in the clear could be swapped) or file://PATH"
            ));
        };
        let cache = Self {
            location,
            iss: iss.to_owned(),
            keys: RwLock::new(Arc::new(Vec::new())),
            last_on_demand: Mutex::new(None),
            at_most_every,
            metrics,
        };
        if let Location::File(path) = &cache.location {
            let bytes = read_capped(path)?;
            let keys = cache.parse(&bytes)?;
            if keys.is_empty() {
                return Err(format!("{path} holds no usable key"));
            }
            cache.store(keys);
        }
        Ok(cache)
    }

    /// The key for `algorithm` and `kid` (a token without `kid`: the set's one key that fits
    /// the algorithm), reading the set again first if none fits and the rate limit allows.
    async fn key_for(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<DecodingKey, String> {
        if let Some(key) = self.find(algorithm, kid)? {
            return Ok(key);
        }
        if self.may_read_on_demand() {
            self.refresh().await;
            if let Some(key) = self.find(algorithm, kid)? {
                return Ok(key);
            }
        } else {
            self.count(JwksRefresh::THROTTLED);
        }
        Err(match kid {
            Some(kid) => format!(
                "names the key `{kid}`, which the issuer `{}`'s key set does not hold",
                self.iss
            ),
            None => format!(
                "has no `kid`, and the issuer `{}`'s key set has no single {algorithm:?} key",
                self.iss
            ),
        })
    }

    fn find(&self, algorithm: Algorithm, kid: Option<&str>) -> Result<Option<DecodingKey>, String> {
        let keys = self
            .keys
            .read()
            .map_err(|_| "the key set is unavailable".to_owned())?
            .clone();
        let fits = |key: &&SetKey| {
            key.key.family() == algorithm.family() && key.algorithm.is_none_or(|a| a == algorithm)
        };
        let found: Vec<&SetKey> = match kid {
            Some(kid) => keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid))
                .filter(fits)
                .collect(),
            None => keys.iter().filter(fits).collect(),
        };
        Ok(match found.as_slice() {
            [one] => Some(one.key.clone()),
            _ => None,
        })
    }

    /// Claims the one read on demand allowed per `at_most_every`.
    fn may_read_on_demand(&self) -> bool {
        let Ok(mut last) = self.last_on_demand.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.at_most_every) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Reads the set again; a failure keeps the keys held, and is counted and logged.
    pub async fn refresh(&self) {
        let read = match &self.location {
            Location::File(path) => read_capped(path),
            Location::Url(url) => fetch(url).await,
        };
        match read.and_then(|bytes| self.parse(&bytes)) {
            Ok(keys) if keys.is_empty() => {
                self.count(JwksRefresh::FAILED);
                log::warn!(
                    "jwks refresh failed issuer={} why=no usable key (the keys held are kept)",
                    self.iss
                );
            }
            Ok(keys) => {
                self.count(JwksRefresh::OK);
                log::debug!("jwks refreshed issuer={} keys={}", self.iss, keys.len());
                self.store(keys);
            }
            Err(why) => {
                self.count(JwksRefresh::FAILED);
                log::warn!(
                    "jwks refresh failed issuer={} why={why} (the keys held are kept)",
                    self.iss
                );
            }
        }
    }

    fn store(&self, keys: Vec<SetKey>) {
        if let Ok(mut held) = self.keys.write() {
            *held = Arc::new(keys);
        }
    }

    fn count(&self, result: JwksRefresh) {
        self.metrics.jwks_refreshes.get_or_create(&result).inc();
    }

    /// The usable keys of a JWK Set document. A key that does not parse, is for encryption
    /// (`use: enc`), names `alg: none` or an unknown algorithm, or is an HMAC secret, is
    /// skipped and counted: one bad key never costs the others.
    fn parse(&self, bytes: &[u8]) -> Result<Vec<SetKey>, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(bytes)
            .map_err(|err| format!("not a JWK Set (a JSON object with `keys`): {err}"))?;
        let mut keys = Vec::with_capacity(document.keys.len());
        for value in document.keys {
            match set_key(value) {
                Ok(key) => keys.push(key),
                Err(why) => {
                    self.metrics.jwks_keys_refused.inc();
                    log::warn!("jwks key skipped issuer={} why={why}", self.iss);
                }
            }
        }
        Ok(keys)
    }
}

fn set_key(value: serde_json::Value) -> Result<SetKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|err| format!("not a JWK: {err}"))?;
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return Err("an encryption key (use: enc)".to_owned());
    }
    let algorithm = jwk
        .common
        .key_algorithm
        .map(|alg| {
            // Its names are the JWS ones (`RS256`, `EdDSA`); key-management ones do not parse.
            format!("{alg:?}")
                .parse::<Algorithm>()
                .map_err(|_| format!("unsupported alg {alg:?}"))
        })
        .transpose()?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|err| format!("unusable key: {err}"))?;
    if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
        return Err("a shared secret (kty: oct) has no place in a published set".to_owned());
    }
    Ok(SetKey {
        kid: jwk.common.key_id,
        algorithm,
        key,
    })
}

fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_capped(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|err| format!("cannot read {path}: {err}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {path}: {err}"))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("{path} is larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(bytes)
}

/// GETs a JWK Set: the web PKI roots for `https://`, a timeout, a size cap.
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = awc::Client::builder()
        .timeout(JWKS_TIMEOUT)
        .connector(awc::Connector::new().rustls_0_23(Arc::new(tls)))
        .finish();
    let mut response = client
        .get(url)
        .insert_header(("accept", "application/jwk-set+json, application/json"))
        .send()
        .await
        .map_err(|err| format!("GET {url}: {err}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let body = response
        .body()
        .limit(MAX_JWKS_BYTES)
        .await
        .map_err(|err| format!("GET {url}: {err}"))?;
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh() -> Refresh {
        Refresh {
            every: Duration::from_secs(300),
            at_most_every: Duration::from_secs(30),
        }
    }

    fn load_text(text: &str) -> Result<Vec<Issuer>, String> {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let path = dir.path().join("issuers.toml");
        std::fs::write(&path, text).expect("written");
        load(path.to_str().expect("UTF-8"), refresh(), &Metrics::new())
    }

    /// A secret issuer gets HS256; a JWK Set issuer the asymmetric algorithms; per-role keys
    /// leave the other role untrusted.
    #[test]
    fn issuers_file_parses() {
        let issuers = load_text(
            r#"
            [[issuer]]
            iss = "https://a.example"
            secret = "s3cret"

            [[issuer]]
            iss = "https://b.example"
            jwks = "https://b.example/jwks.json"

            [[issuer]]
            iss = "https://c.example"
            algorithms = ["HS512"]
            publisher = { secret = "p", alg = "HS512" }
            "#,
        )
        .expect("parses");
        assert_eq!(issuers.len(), 3);
        assert_eq!(issuers[0].algorithms, [JwtAlgorithm::HS256]);
        assert_eq!(issuers[1].algorithms, ASYMMETRIC);
        assert!(issuers[2].publisher.is_some() && issuers[2].subscriber.is_none());
    }

    /// Mistakes name what is wrong: `none`, a PEM key with HMAC, a plain-HTTP remote set, two
    /// key kinds, a repeated issuer, an unknown field.
    #[test]
    fn issuers_file_mistakes_are_named() {
        let cases = [
            (
                r#"[[issuer]]
iss = "a"
secret = "s"
algorithms = ["none"]"#,
                "unknown algorithm `none`",
            ),
            (
                r#"[[issuer]]
iss = "a"
pem = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"
alg = "HS256""#,
                "HMAC algorithm",
            ),
            (
                r#"[[issuer]]
iss = "a"
jwks = "http://idp.example/jwks""#,
                "https://",
            ),
            (
                r#"[[issuer]]
iss = "a"
secret = "s"
jwks = "https://x/j""#,
                "exactly one",
            ),
            (
                r#"[[issuer]]
iss = "a"
secret = "s"
[[issuer]]
iss = "a"
secret = "t""#,
                "listed twice",
            ),
            (
                r#"[[issuer]]
iss = "a"
secrett = "s""#,
                "unknown field",
            ),
        ];
        for (text, needle) in cases {
            let err = load_text(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    /// `http://` is allowed to loopback hosts only.
    #[test]
    fn plain_http_only_to_loopback() {
        assert!(is_loopback_http("http://127.0.0.1:8080/jwks"));
        assert!(is_loopback_http("http://localhost/jwks"));
        assert!(is_loopback_http("http://[::1]:9/j"));
        assert!(!is_loopback_http("http://idp.example/jwks"));
        assert!(!is_loopback_http("http://127.0.0.1.evil.example/jwks"));
        assert!(!is_loopback_http("https://127.0.0.1/jwks"));
    }

    /// A set's bad keys are skipped, its good ones kept.
    #[test]
    fn one_bad_key_does_not_cost_the_others() {
        let cache = JwkSetCache {
            location: Location::Url("https://x/j".to_owned()),
            iss: "https://x".to_owned(),
            keys: RwLock::new(Arc::new(Vec::new())),
            last_on_demand: Mutex::new(None),
            at_most_every: Duration::from_secs(30),
            metrics: Metrics::new(),
        };
        let document = serde_json::json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "kid": "good",
              "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
            { "kty": "oct", "kid": "secret", "k": "c2VjcmV0" },
            { "kty": "nonsense" },
            { "kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc",
              "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
        ]});
        let keys = cache.parse(document.to_string().as_bytes()).expect("a set");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("good"));
        assert_eq!(cache.metrics.jwks_keys_refused.get(), 3);
    }
}
