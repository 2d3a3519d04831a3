//! Auth: Mercure-style JWTs (HS256 or RS256), where a request's token comes from, and what its
//! `mercure.publish` / `mercure.subscribe` claims allow.

use std::collections::HashSet;

use actix_web::{HttpRequest, http::header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    error::HubError,
    topic::{Selector, SelectorCache},
};

/// The cookie Mercure clients send their token in.
pub const COOKIE_NAME: &str = "mercureAuthorization";
/// The query parameter for clients that can set neither a header nor a cookie.
pub const QUERY_NAME: &str = "authorization";

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
    key: DecodingKey,
    algorithm: Algorithm,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// `material` is the shared secret (HS256) or a PEM public key (RS256); `@path` reads it
    /// from a file.
    pub fn new(material: &str, algorithm: JwtAlgorithm) -> Result<Self, String> {
        let material = read_material(material)?;
        let key = match algorithm {
            JwtAlgorithm::Hs256 => DecodingKey::from_secret(&material),
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&material)
                .map_err(|err| format!("not an RSA public key in PEM form: {err}"))?,
        };
        Ok(Self {
            key,
            algorithm: algorithm.into(),
        })
    }
}

fn read_material(material: &str) -> Result<Vec<u8>, String> {
    match material.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|err| format!("cannot read {path}: {err}")),
        None => Ok(material.as_bytes().to_vec()),
    }
}

/// The signing algorithms a key may be configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(algorithm: JwtAlgorithm) -> Self {
        match algorithm {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
        }
    }
}

/// The claims the hub reads: `{"mercure": {"publish": [...], "subscribe": [...]}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub mercure: MercureClaim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MercureClaim {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
    /// Free-form data about the subscriber; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// The keys for both roles; `None` where that role has no key configured.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub publisher: Option<JwtKey>,
    pub subscriber: Option<JwtKey>,
}

impl Keys {
    pub fn for_role(&self, role: Role) -> Option<&JwtKey> {
        match role {
            Role::Publisher => self.publisher.as_ref(),
            Role::Subscriber => self.subscriber.as_ref(),
        }
    }
}

/// The token a request carries: the `Authorization: Bearer` header, else the
/// `mercureAuthorization` cookie, else the `authorization` query parameter.
pub fn token_from(req: &HttpRequest) -> Result<Option<String>, HubError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| malformed("the Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| malformed("the Authorization header (expected `Bearer <token>`)"))?;
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(cookie) = req.cookie(COOKIE_NAME) {
        return Ok(Some(cookie.value().to_owned()));
    }
    Ok(form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == QUERY_NAME)
        .map(|(_, v)| v.into_owned()))
}

fn malformed(what: &str) -> HubError {
    HubError::Unauthorized(format!("malformed token in {what}"))
}

/// Verifies `token` for `role`: signature, algorithm, and `exp` when present.
pub fn verify(token: &str, key: &JwtKey, role: Role) -> Result<Claims, HubError> {
    let mut validation = Validation::new(key.algorithm);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = true;
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|err| {
            let reason = match err.kind() {
                ErrorKind::ExpiredSignature => "has expired".to_owned(),
                ErrorKind::InvalidSignature => "has an invalid signature".to_owned(),
                ErrorKind::InvalidAlgorithm => format!(
                    "is not signed with {:?}, the algorithm configured for {}s",
                    key.algorithm,
                    role.name()
                ),
                ErrorKind::ImmatureSignature => "is not valid yet (nbf)".to_owned(),
                _ => format!("is not a valid JWT ({err})"),
            };
            HubError::Unauthorized(format!("the {} token {reason}", role.name()))
        })
}

/// What a verified token allows, as compiled selectors (invalid selectors in a claim are
/// ignored: they can match nothing).
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub selectors: Vec<Selector>,
}

impl Grant {
    fn from_claim(claim: Option<&[String]>, cache: &SelectorCache) -> Self {
        Self {
            selectors: claim
                .unwrap_or_default()
                .iter()
                .filter_map(|s| cache.get(s).ok())
                .collect(),
        }
    }

    pub fn allows(&self, topic: &str) -> bool {
        self.selectors.iter().any(|s| s.matches(topic))
    }
}

/// Checks the publisher token of `req`. `Ok(None)` when no publisher key is configured and
/// `required` is false (open publishing); otherwise a token must be present and valid.
pub fn publisher_grant(
    req: &HttpRequest,
    keys: &Keys,
    cache: &SelectorCache,
    required: bool,
) -> Result<Option<Grant>, HubError> {
    let Some(key) = keys.for_role(Role::Publisher) else {
        return if required {
            Err(HubError::Unauthorized(
                "publishing here needs a JWT, and the hub has no publisher key configured"
                    .to_owned(),
            ))
        } else {
            Ok(None)
        };
    };
    let token = token_from(req)?.ok_or_else(|| {
        HubError::Unauthorized(
            "publishing needs a publisher JWT (Authorization: Bearer)".to_owned(),
        )
    })?;
    let claims = verify(&token, key, Role::Publisher)?;
    let Some(publish) = claims.mercure.publish.as_deref() else {
        return Err(HubError::Forbidden(
            "the token has no mercure.publish claim".to_owned(),
        ));
    };
    Ok(Some(Grant::from_claim(Some(publish), cache)))
}

/// Checks the subscriber token of `req`, if any: its `mercure.subscribe` claim says which
/// private events it may receive. Without a token the subscriber is anonymous (refused when
/// `anonymous` is false).
pub fn subscriber_grant(
    req: &HttpRequest,
    keys: &Keys,
    cache: &SelectorCache,
    anonymous: bool,
) -> Result<Grant, HubError> {
    let token = token_from(req)?;
    match (token, keys.for_role(Role::Subscriber)) {
        (None, _) if anonymous => Ok(Grant::default()),
        (None, _) => Err(HubError::Unauthorized(
            "subscribing needs a subscriber JWT".to_owned(),
        )),
        (Some(_), None) => Err(HubError::Unauthorized(
            "a token was given, but the hub has no subscriber key configured".to_owned(),
        )),
        (Some(token), Some(key)) => {
            let claims = verify(&token, key, Role::Subscriber)?;
            Ok(Grant::from_claim(
                claims.mercure.subscribe.as_deref(),
                cache,
            ))
        }
    }
}

/// Signs a token with an HS256 secret or an RS256 private key (PEM; `@path` reads a file), for
/// the `token` command.
pub fn sign(claims: &Claims, material: &str, algorithm: JwtAlgorithm) -> Result<String, String> {
    let material = read_material(material)?;
    let key = match algorithm {
        JwtAlgorithm::Hs256 => EncodingKey::from_secret(&material),
        JwtAlgorithm::Rs256 => EncodingKey::from_rsa_pem(&material)
            .map_err(|err| format!("not an RSA private key in PEM form: {err}"))?,
    };
    jsonwebtoken::encode(&Header::new(algorithm.into()), claims, &key)
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";

    fn hs_key() -> JwtKey {
        JwtKey::new(SECRET, JwtAlgorithm::Hs256).expect("a key")
    }

    fn token(publish: &[&str], exp: Option<u64>) -> String {
        let claims = Claims {
            mercure: MercureClaim {
                publish: Some(publish.iter().map(|s| (*s).to_owned()).collect()),
                subscribe: Some(vec!["*".to_owned()]),
                payload: None,
            },
            exp,
        };
        sign(&claims, SECRET, JwtAlgorithm::Hs256).expect("signs")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs()
    }

    /// A token signed with the key verifies, and its claims come through.
    #[test]
    fn signed_token_verifies() {
        let claims = verify(&token(&["a"], None), &hs_key(), Role::Publisher).expect("valid");
        assert_eq!(claims.mercure.publish, Some(vec!["a".to_owned()]));
    }

    /// Expired tokens, wrong signatures, `alg: none` and garbage are refused with a reason.
    #[test]
    fn bad_tokens_are_refused() {
        let expired = token(&["*"], Some(now() - 10));
        let err = verify(&expired, &hs_key(), Role::Publisher).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");

        let other = JwtKey::new("another secret", JwtAlgorithm::Hs256).expect("key");
        let err = verify(&token(&["*"], None), &other, Role::Publisher).expect_err("bad sig");
        assert!(err.to_string().contains("invalid signature"), "{err}");

        // {"alg":"none","typ":"JWT"} . {"mercure":{"publish":["*"]}} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.";
        assert!(verify(none, &hs_key(), Role::Publisher).is_err());
        assert!(verify("not.a.jwt", &hs_key(), Role::Publisher).is_err());

        let future = token(&["*"], Some(now() + 3600));
        assert!(verify(&future, &hs_key(), Role::Publisher).is_ok());
    }

    /// The header wins over the cookie, the cookie over the query parameter.
    #[test]
    fn token_sources_in_order() {
        let req = TestRequest::default()
            .uri("/?authorization=q")
            .insert_header(("authorization", "Bearer h"))
            .cookie(actix_web::cookie::Cookie::new(COOKIE_NAME, "c"))
            .to_http_request();
        assert_eq!(token_from(&req).expect("ok").as_deref(), Some("h"));
        let req = TestRequest::default()
            .uri("/?authorization=q")
            .cookie(actix_web::cookie::Cookie::new(COOKIE_NAME, "c"))
            .to_http_request();
        assert_eq!(token_from(&req).expect("ok").as_deref(), Some("c"));
        let req = TestRequest::default()
            .uri("/?authorization=q")
            .to_http_request();
        assert_eq!(token_from(&req).expect("ok").as_deref(), Some("q"));
        let req = TestRequest::default().to_http_request();
        assert_eq!(token_from(&req).expect("ok"), None);
    }

    /// A grant matches topics through its selectors, templates included.
    #[test]
    fn grant_matches_selectors() {
        let cache = SelectorCache::new(crate::topic::SelectorLimits::default());
        let grant = Grant::from_claim(
            Some(&[
                "https://example.com/books/{id}".to_owned(),
                "chat".to_owned(),
            ]),
            &cache,
        );
        assert!(grant.allows("https://example.com/books/1"));
        assert!(grant.allows("chat"));
        assert!(!grant.allows("other"));
        assert!(Grant::from_claim(Some(&["*".to_owned()]), &cache).allows("anything"));
        assert!(!Grant::default().allows("anything"));
    }
}
