//! Signing tokens (the `token` command, and the tests): Mercure 0.x tokens and 1.0 access
//! tokens, with the claims the hub's own verification reads.

use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde::Serialize;

use super::{Claims, DETAIL_TYPE};
use crate::keys::{JwtAlgorithm, read_material};

/// Signs a token with an HS256 secret or an RS256 private key (PEM; `@path` reads a file), for
/// the `token` command.
pub fn sign(claims: &Claims, material: &str, algorithm: JwtAlgorithm) -> Result<String, String> {
    sign_with(&Header::new(algorithm.into()), claims, material, algorithm)
}

/// Signs `claims` under `header` with an HS256 secret or an RS256 private key.
fn sign_with(
    header: &Header,
    claims: &impl Serialize,
    material: &str,
    algorithm: JwtAlgorithm,
) -> Result<String, String> {
    let material = read_material(material)?;
    let pem = |kind: &str, parsed: jsonwebtoken::errors::Result<EncodingKey>| {
        parsed.map_err(|err| format!("not {kind} private key in PEM form: {err}"))
    };
    let key = match Algorithm::from(algorithm).family() {
        AlgorithmFamily::Hmac => EncodingKey::from_secret(&material),
        AlgorithmFamily::Rsa => pem("an RSA", EncodingKey::from_rsa_pem(&material))?,
        AlgorithmFamily::Ec => pem("an EC", EncodingKey::from_ec_pem(&material))?,
        AlgorithmFamily::Ed => pem("an Ed25519", EncodingKey::from_ed_pem(&material))?,
    };
    jsonwebtoken::encode(header, claims, &key).map_err(|err| err.to_string())
}

/// Signs a Mercure 1.0 access token (header `typ: at+jwt`) with `claims`, for the `token
/// --access-token` command and the tests.
pub fn sign_access_token(
    claims: &impl Serialize,
    material: &str,
    algorithm: JwtAlgorithm,
) -> Result<String, String> {
    let header = Header {
        typ: Some("at+jwt".to_owned()),
        ..Header::new(algorithm.into())
    };
    sign_with(&header, claims, material, algorithm)
}

/// What a Mercure 1.0 access token made by the `token --access-token` command grants, and to
/// whom: one `publish` detail for `publish`, one `subscribe` detail (with `payload`) for
/// `subscribe`, each matcher of `match_type`.
#[derive(Debug, Clone)]
pub struct AccessTokenRequest<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub subject: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
    pub lifetime: Duration,
    pub publish: &'a [String],
    pub subscribe: &'a [String],
    pub match_type: &'a str,
    pub payload: Option<&'a serde_json::Value>,
}

/// The claims of an access token, in the shape [`verify_access_token`] reads.
#[derive(Debug, Serialize)]
pub struct AccessTokenClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    client_id: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    authorization_details: Vec<DetailClaim<'a>>,
}

/// One Mercure authorization detail, as [`verify_access_token`] parses it.
#[derive(Debug, Serialize)]
struct DetailClaim<'a> {
    #[serde(rename = "type")]
    detail_type: &'static str,
    actions: [&'static str; 1],
    topics: Vec<MatcherClaim<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct MatcherClaim<'a> {
    #[serde(rename = "match")]
    matcher: &'a str,
    match_type: &'a str,
}

impl<'a> AccessTokenRequest<'a> {
    /// The token's claims: the ones an issuer must populate (RFC 9068), a fresh `jti`, and the
    /// Mercure authorization details.
    pub fn claims(&self) -> AccessTokenClaims<'a> {
        let detail = |action: &'static str, selectors: &'a [String], payload| DetailClaim {
            detail_type: DETAIL_TYPE,
            actions: [action],
            topics: selectors
                .iter()
                .map(|matcher| MatcherClaim {
                    matcher,
                    match_type: self.match_type,
                })
                .collect(),
            payload,
        };
        let mut details = Vec::new();
        if !self.publish.is_empty() {
            details.push(detail("publish", self.publish, None));
        }
        if !self.subscribe.is_empty() {
            details.push(detail("subscribe", self.subscribe, self.payload));
        }
        AccessTokenClaims {
            iss: self.issuer,
            aud: self.audience,
            sub: self.subject,
            client_id: self.subject,
            iat: self.now,
            exp: self.now + self.lifetime.as_secs(),
            jti: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            authorization_details: details,
        }
    }

    /// The signed token.
    pub fn sign(&self, material: &str, algorithm: JwtAlgorithm) -> Result<String, String> {
        sign_access_token(&self.claims(), material, algorithm)
    }
}
