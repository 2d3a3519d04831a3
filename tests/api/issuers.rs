//! Several issuers (`--issuers`), each with its own keys: JWK Sets served over loopback by the
//! test, rotated, down, flooded with unknown key ids; `file://` sets; the algorithm allowlist.

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::http::StatusCode;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_json_error, spawn_app_with},
    mercure_v1::{TOPIC, assert_challenge, post_update},
};

/// The issuer whose keys the test's JWK Set endpoint serves.
const IDP: &str = "https://idp.example/realms/app";
/// An issuer with a shared secret.
const BACKEND: &str = "https://backend.example";
const BACKEND_SECRET: &str = "backend-secret-of-at-least-32-bytes!!";

// ------------------------------------------------------------------------------- keys

/// A key pair made for the test: its private key to sign with and its public JWK.
struct TestKey {
    kid: String,
    algorithm: Algorithm,
    private_pem: String,
    jwk: Value,
}

impl TestKey {
    fn es256(kid: &str) -> Self {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
        // The uncompressed point: 0x04, then x and y.
        let point = pair.public_key_raw();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            private_pem: pair.serialize_pem(),
            jwk,
        }
    }

    fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
        });
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::EdDSA,
            private_pem: pair.serialize_pem(),
            jwk,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.private_pem.as_bytes()),
            _ => EncodingKey::from_ed_pem(self.private_pem.as_bytes()),
        }
        .expect("the PEM of a generated key")
    }

    /// An access token of `iss` that may publish everywhere, signed with this key.
    fn token(&self, iss: &str) -> String {
        self.token_as(iss, &self.kid)
    }

    /// As [`token`](Self::token), its header naming `kid`.
    fn token_as(&self, iss: &str, kid: &str) -> String {
        let header = Header {
            typ: Some("at+jwt".to_owned()),
            kid: Some(kid.to_owned()),
            ..Header::new(self.algorithm)
        };
        jsonwebtoken::encode(&header, &claims(iss), &self.encoding_key()).expect("signs")
    }
}

/// Access token claims of `iss` for the default audience, granting `publish` on everything.
fn claims(iss: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    json!({
        "iss": iss, "aud": sse_hub::config::DEFAULT_HUB_URL, "sub": "u", "iat": now,
        "exp": now + 600,
        "authorization_details": [{
            "type": "https://mercure.rocks/authorization-detail",
            "actions": ["publish"], "topics": [{ "match": "*" }],
        }],
    })
}

/// An HS256 access token of `iss` signed with `secret`.
fn hs256_token(iss: &str, secret: &str, algorithm: Algorithm) -> String {
    let header = Header {
        typ: Some("at+jwt".to_owned()),
        ..Header::new(algorithm)
    };
    jsonwebtoken::encode(
        &header,
        &claims(iss),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signs")
}

// ------------------------------------------------------------------ the JWK Set server

/// What the test's JWK Set endpoint answers, and how often it was asked.
struct Provider {
    keys: Mutex<Vec<Value>>,
    up: Mutex<bool>,
    hits: AtomicUsize,
    url: String,
}

impl Provider {
    /// Serves `GET /jwks` on a loopback port from a thread, one connection at a time.
    fn start(keys: &[&TestKey]) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}/jwks", listener.local_addr().expect("bound"));
        let provider = Arc::new(Self {
            keys: Mutex::new(keys.iter().map(|key| key.jwk.clone()).collect()),
            up: Mutex::new(true),
            hits: AtomicUsize::new(0),
            url,
        });
        let serving = provider.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                serving.hits.fetch_add(1, Ordering::SeqCst);
                let up = *serving.up.lock().expect("not poisoned");
                let body =
                    json!({ "keys": *serving.keys.lock().expect("not poisoned") }).to_string();
                let answer = if up {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        provider
    }

    fn serve(&self, keys: &[&TestKey]) {
        *self.keys.lock().expect("not poisoned") = keys.iter().map(|key| key.jwk.clone()).collect();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits until the hub has read the set at least `n` times.
    async fn wait_for_hits(&self, n: usize) {
        let start = Instant::now();
        while self.hits() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the hub read the set {} times, not {n}",
                self.hits()
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A hub trusting the issuers of `toml` (written to a scratch file), refreshing sets every
/// `every` and on demand at most every `at_most_every`.
async fn hub(toml: &str, every: Duration, at_most_every: Duration) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("issuers.toml");
    std::fs::write(&path, toml).expect("written");
    let path = path.to_str().expect("UTF-8").to_owned();
    let app = spawn_app_with(move |s| {
        s.issuers = Some(path);
        s.jwks_refresh = every;
        s.jwks_min_refresh = at_most_every;
    })
    .await;
    (app, dir)
}

fn jwks_issuer(iss: &str, url: &str) -> String {
    format!("[[issuer]]\niss = \"{iss}\"\njwks = \"{url}\"\n")
}

async fn status_of(app: &TestApp, token: &str) -> (StatusCode, String) {
    let reply = post_update(app, Some(token), &[("topic", TOPIC), ("data", "d")]).await;
    (reply.status, reply.body)
}

// ------------------------------------------------------------------------------ tests

/// Tokens signed with a key of the issuer's JWK Set verify (ES256 and EdDSA); when the provider
/// rotates (adds a key, retires the old one), a token with the new `kid` is accepted at once
/// (the set is read again on demand) and one with the retired key is refused from then on.
#[actix_web::test]
async fn jwks_keys_verify_and_rotate() {
    // Arrange
    let old = TestKey::es256("old");
    let new = TestKey::ed25519("new");
    let provider = Provider::start(&[&old]);
    let (app, _dir) = hub(
        &jwks_issuer(IDP, &provider.url),
        Duration::from_secs(3600),
        Duration::ZERO,
    )
    .await;
    provider.wait_for_hits(1).await;

    // Act
    let before = status_of(&app, &old.token(IDP)).await;
    provider.serve(&[&new]);
    let rotated = status_of(&app, &new.token(IDP)).await;
    let retired = post_update(&app, Some(&old.token(IDP)), &[("topic", TOPIC)]).await;

    // Assert
    assert_eq!(before.0, StatusCode::OK, "ES256 from the set: {}", before.1);
    assert_eq!(rotated.0, StatusCode::OK, "EdDSA, new kid: {}", rotated.1);
    assert_challenge(
        &retired,
        StatusCode::UNAUTHORIZED,
        Some("invalid_token"),
        "retired key",
    );
    assert_json_error(
        retired.status,
        &retired.body,
        StatusCode::UNAUTHORIZED,
        "`old`",
    );
}

/// A flood of tokens naming unknown keys makes the hub read the set at most once per
/// `--jwks-min-refresh`: every one is refused, and the provider is asked once more in all.
#[actix_web::test]
async fn unknown_kid_flood_reads_the_set_at_most_once_per_cool_down() {
    // Arrange
    let key = TestKey::es256("k");
    let provider = Provider::start(&[&key]);
    let (app, _dir) = hub(
        &jwks_issuer(IDP, &provider.url),
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    )
    .await;
    provider.wait_for_hits(1).await;
    let before = provider.hits();

    // Act
    let mut refused = 0;
    for n in 0..30 {
        let (status, _) = status_of(&app, &key.token_as(IDP, &format!("bogus-{n}"))).await;
        refused += usize::from(status == StatusCode::UNAUTHORIZED);
    }
    let still_good = status_of(&app, &key.token(IDP)).await;

    // Assert
    assert_eq!(refused, 30);
    assert!(
        provider.hits() - before <= 1,
        "{} reads for 30 unknown kids",
        provider.hits() - before
    );
    assert_eq!(still_good.0, StatusCode::OK, "{}", still_good.1);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("sse_hub_jwks_refreshes_total{result=\"throttled\"}"),
        "{metrics}"
    );
}

/// While the provider is down the hub keeps verifying with the keys it holds, and counts the
/// failed reads.
#[actix_web::test]
async fn provider_down_keeps_the_cached_keys() {
    // Arrange
    let key = TestKey::es256("k");
    let provider = Provider::start(&[&key]);
    let (app, _dir) = hub(
        &jwks_issuer(IDP, &provider.url),
        Duration::from_millis(50),
        Duration::ZERO,
    )
    .await;
    provider.wait_for_hits(1).await;
    // The hub holds the key (the first read was answered, not only counted).
    let before = status_of(&app, &key.token(IDP)).await;
    assert_eq!(before.0, StatusCode::OK, "{}", before.1);

    // Act
    *provider.up.lock().expect("not poisoned") = false;
    let hits = provider.hits();
    provider.wait_for_hits(hits + 3).await;
    let during = status_of(&app, &key.token(IDP)).await;

    // Assert
    assert_eq!(during.0, StatusCode::OK, "{}", during.1);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("sse_hub_jwks_refreshes_total{result=\"failed\"}"),
        "{metrics}"
    );
}

/// Each issuer verifies with its own keys only: a token claiming the secret issuer but signed
/// with a key of the other is refused, as is an algorithm outside the issuer's allowlist, an
/// unknown issuer, and `alg: none`; a `file://` set works like a fetched one.
#[actix_web::test]
async fn issuers_keep_their_own_keys_and_algorithms() {
    // Arrange
    let idp_key = TestKey::ed25519("e");
    let dir = tempfile::tempdir().expect("a scratch directory");
    let set = dir.path().join("jwks.json");
    std::fs::write(&set, json!({ "keys": [idp_key.jwk] }).to_string()).expect("written");
    let toml = format!(
        "{}\n[[issuer]]\niss = \"{BACKEND}\"\nsecret = \"{BACKEND_SECRET}\"\n",
        jwks_issuer(IDP, &format!("file://{}", set.display()))
    );
    let (app, _issuers) = hub(&toml, Duration::from_secs(3600), Duration::from_secs(30)).await;
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#),
        URL_SAFE_NO_PAD.encode(claims(BACKEND).to_string())
    );

    // Act
    let file_set = status_of(&app, &idp_key.token(IDP)).await;
    let backend = status_of(
        &app,
        &hs256_token(BACKEND, BACKEND_SECRET, Algorithm::HS256),
    )
    .await;
    let crossed = status_of(&app, &idp_key.token(BACKEND)).await;
    let secret_for_idp = status_of(&app, &hs256_token(IDP, BACKEND_SECRET, Algorithm::HS256)).await;
    let hs512 = status_of(
        &app,
        &hs256_token(BACKEND, BACKEND_SECRET, Algorithm::HS512),
    )
    .await;
    let stranger = status_of(&app, &idp_key.token("https://stranger.example")).await;
    let unsigned = status_of(&app, &none).await;

    // Assert
    assert_eq!(file_set.0, StatusCode::OK, "{}", file_set.1);
    assert_eq!(backend.0, StatusCode::OK, "{}", backend.1);
    for (case, (status, body)) in [
        ("B's key for A", crossed),
        ("A's secret refused for the JWKS issuer", secret_for_idp),
        ("HS512 outside the allowlist", hs512.clone()),
        ("unknown issuer", stranger.clone()),
        ("alg none", unsigned),
    ] {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    }
    assert!(hs512.1.contains("HS512"), "{}", hs512.1);
    assert!(stranger.1.contains("stranger.example"), "{}", stranger.1);
}

/// Start-up refuses a PEM public key configured with an HMAC algorithm (it would become a
/// shared secret anyone could sign with), naming the key.
#[actix_web::test]
async fn a_pem_key_with_an_hmac_algorithm_is_refused_at_start_up() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    let mut settings = crate::helpers::test_settings();
    settings.jwt_key = Some(pair.public_key_pem());
    settings.jwt_alg = sse_hub::auth::JwtAlgorithm::HS256;

    let refused = sse_hub::startup::Application::build(settings)
        .err()
        .map(|err| err.to_string());

    assert!(
        refused.as_deref().is_some_and(|e| e.contains("HMAC")),
        "{refused:?}"
    );
}
