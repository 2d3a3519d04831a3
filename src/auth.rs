//! Auth: Mercure-style JWTs (HS256 or RS256), where a request's token comes from, when it is
//! valid (`nbf`, `exp`), and what its `mercure.publish` / `mercure.subscribe` claims allow.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{HttpRequest, http::header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    error::HubError,
    topic::{Selector, SelectorCache, SelectorError},
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

/// The claims the hub reads: `{"mercure": {"publish": [...], "subscribe": [...]}}`, and the
/// time claims `exp` and `nbf` (seconds since the epoch; a fractional NumericDate, as
/// lcobucci/jwt writes it, is accepted and rounded towards the shorter validity).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub mercure: MercureClaim,
    /// Expiry: refused after it (plus the leeway), and a subscriber's stream ends then.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date::floor"
    )]
    pub exp: Option<u64>,
    /// Not before: refused until it (minus the leeway).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date::ceil"
    )]
    pub nbf: Option<u64>,
}

/// RFC 7519 NumericDate: a JSON number of seconds, possibly fractional.
mod numeric_date {
    use serde::{Deserialize, Deserializer, de::Error};

    fn seconds<'de, D: Deserializer<'de>>(
        deserializer: D,
        round: fn(f64) -> f64,
    ) -> Result<Option<u64>, D::Error> {
        let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
            return Ok(None);
        };
        if let Some(whole) = number.as_u64() {
            return Ok(Some(whole));
        }
        match number.as_f64().map(round) {
            // `as` saturates: a date past u64::MAX seconds is as good as never.
            Some(secs) if secs >= 0.0 => Ok(Some(secs as u64)),
            _ => Err(D::Error::custom(format!(
                "{number} is not a date in seconds since the epoch"
            ))),
        }
    }

    /// For `exp`: a fraction ends the token's validity at the whole second before.
    pub fn floor<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        seconds(deserializer, f64::floor)
    }

    /// For `nbf`: a fraction starts the token's validity at the whole second after.
    pub fn ceil<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        seconds(deserializer, f64::ceil)
    }
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

/// The keys for both roles (`None` where that role has no key configured), and the clock skew
/// allowed on their tokens' time claims.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub publisher: Option<JwtKey>,
    pub subscriber: Option<JwtKey>,
    /// Added to `exp` and taken from `nbf` (`--jwt-leeway`): see [`valid_until`].
    pub leeway: Duration,
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
    if let Some(token) = bearer_token(req)? {
        return Ok(Some(token));
    }
    if let Some(cookie) = req.cookie(COOKIE_NAME) {
        return Ok(Some(cookie.value().to_owned()));
    }
    Ok(form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == QUERY_NAME)
        .map(|(_, v)| v.into_owned()))
}

/// The token of the `Authorization: Bearer` header only.
pub fn bearer_token(req: &HttpRequest) -> Result<Option<String>, HubError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| malformed("the Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| malformed("the Authorization header (expected `Bearer <token>`)"))?;
    Ok(Some(token.trim().to_owned()))
}

fn malformed(what: &str) -> HubError {
    HubError::Unauthorized(format!("malformed token in {what}"))
}

/// A token that passed [`verify`]: its claims, and when it stops being valid.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    /// `exp` plus the leeway; `None` when the token has no `exp`.
    pub valid_until: Option<SystemTime>,
}

/// Verifies `token` for `role`: signature, algorithm, and the time claims `nbf` and `exp` when
/// present, each with `leeway` for clock skew (see [`valid_until`]).
pub fn verify(
    token: &str,
    key: &JwtKey,
    role: Role,
    leeway: Duration,
) -> Result<Verified, HubError> {
    let refused =
        |reason: String| HubError::Unauthorized(format!("the {} token {reason}", role.name()));
    let mut validation = Validation::new(key.algorithm);
    validation.required_spec_claims = HashSet::new();
    // The time claims are checked below, by the same rule that ends a subscriber's stream, so
    // a token accepted here can never have a stream that is already over.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|err| {
            refused(match err.kind() {
                ErrorKind::InvalidSignature => "has an invalid signature".to_owned(),
                ErrorKind::InvalidAlgorithm => format!(
                    "is not signed with {:?}, the algorithm configured for {}s",
                    key.algorithm,
                    role.name()
                ),
                _ => format!("is not a valid JWT ({err})"),
            })
        })?;
    let valid_until =
        valid_until(&claims, SystemTime::now(), leeway).map_err(|why| refused(why.to_owned()))?;
    Ok(Verified {
        claims,
        valid_until,
    })
}

/// The time-claim rule: a token is valid from `nbf - leeway` (inclusive) until
/// `exp + leeway` (exclusive), either bound open when its claim is absent. Returns the end of
/// validity, or why the token is not valid at `now`.
pub fn valid_until(
    claims: &Claims,
    now: SystemTime,
    leeway: Duration,
) -> Result<Option<SystemTime>, &'static str> {
    if let Some(nbf) = claims.nbf {
        // A date too far to represent is not reached.
        let valid_from = UNIX_EPOCH
            .checked_add(Duration::from_secs(nbf))
            .ok_or("is not valid yet (nbf)")?;
        if valid_from
            .checked_sub(leeway)
            .is_some_and(|from| now < from)
        {
            return Err("is not valid yet (nbf)");
        }
    }
    let Some(exp) = claims.exp else {
        return Ok(None);
    };
    // Past what a SystemTime can hold, a token never expires in practice.
    let Some(until) = UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .and_then(|exp| exp.checked_add(leeway))
    else {
        return Ok(None);
    };
    if now >= until {
        return Err("has expired");
    }
    Ok(Some(until))
}

/// What a verified token allows, as compiled selectors (invalid or too complex selectors in a
/// claim are ignored: they can match nothing), and until when.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub selectors: Vec<Selector>,
    /// When the token stops being valid (`exp` plus the leeway); `None` for a token without
    /// `exp` and for anonymous subscribers. A subscriber's stream ends then.
    pub valid_until: Option<SystemTime>,
}

impl Grant {
    fn from_claim(
        claim: Option<&[String]>,
        valid_until: Option<SystemTime>,
        cache: &SelectorCache,
    ) -> Result<Self, HubError> {
        let mut selectors = Vec::new();
        for text in claim.unwrap_or_default() {
            match cache.get(text) {
                Ok(selector) => selectors.push(selector),
                // The hub cannot honour the token's rights now: say so, rather than drop them.
                Err(SelectorError::Full { limit }) => {
                    return Err(HubError::SelectorLimit { limit });
                }
                Err(_) => {}
            }
        }
        Ok(Self {
            selectors,
            valid_until,
        })
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
    let verified = verify(&token, key, Role::Publisher, keys.leeway)?;
    let Some(publish) = verified.claims.mercure.publish.as_deref() else {
        return Err(HubError::Forbidden(
            "the token has no mercure.publish claim".to_owned(),
        ));
    };
    Grant::from_claim(Some(publish), verified.valid_until, cache).map(Some)
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
            let verified = verify(&token, key, Role::Subscriber, keys.leeway)?;
            Grant::from_claim(
                verified.claims.mercure.subscribe.as_deref(),
                verified.valid_until,
                cache,
            )
        }
    }
}

/// Whether `req` may see which selectors subscribers use (the per-selector breakdown of
/// `/stats`, which names private topics too). It takes what publishing to every topic takes:
/// a publisher token whose `mercure.publish` claim holds `*`, in the `Authorization: Bearer`
/// header only (a browser's `mercureAuthorization` cookie is its subscriber credential, not an
/// operator's). On a hub without any key, where anyone may publish anywhere and no subscriber
/// can be sent a private event, everyone may.
///
/// `Ok(false)` without the header; a token that does not verify is 401, one without `*` 403.
pub fn may_see_selectors(req: &HttpRequest, keys: &Keys) -> Result<bool, HubError> {
    if keys.publisher.is_none() && keys.subscriber.is_none() {
        return Ok(true);
    }
    let Some(token) = bearer_token(req)? else {
        return Ok(false);
    };
    let Some(key) = keys.for_role(Role::Publisher) else {
        return Err(HubError::Forbidden(
            "the hub has no publisher key, so no token can show subscriber selectors".to_owned(),
        ));
    };
    let verified = verify(&token, key, Role::Publisher, keys.leeway)?;
    let publish = verified.claims.mercure.publish.unwrap_or_default();
    if publish.iter().any(|selector| selector == "*") {
        Ok(true)
    } else {
        Err(HubError::Forbidden(
            "subscriber selectors are shown only to a publisher token allowed to publish to `*`"
                .to_owned(),
        ))
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
            nbf: None,
        };
        sign(&claims, SECRET, JwtAlgorithm::Hs256).expect("signs")
    }

    const LEEWAY: Duration = Duration::from_secs(5);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn times(nbf: Option<u64>, exp: Option<u64>) -> Claims {
        Claims {
            nbf,
            exp,
            ..Claims::default()
        }
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
        let verified =
            verify(&token(&["a"], None), &hs_key(), Role::Publisher, LEEWAY).expect("valid");
        assert_eq!(verified.claims.mercure.publish, Some(vec!["a".to_owned()]));
        assert_eq!(verified.valid_until, None, "no exp, no end");
    }

    /// Expired tokens, wrong signatures, `alg: none` and garbage are refused with a reason.
    #[test]
    fn bad_tokens_are_refused() {
        let expired = token(&["*"], Some(now() - 10));
        let err = verify(&expired, &hs_key(), Role::Publisher, LEEWAY).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");

        let other = JwtKey::new("another secret", JwtAlgorithm::Hs256).expect("key");
        let err =
            verify(&token(&["*"], None), &other, Role::Publisher, LEEWAY).expect_err("bad sig");
        assert!(err.to_string().contains("invalid signature"), "{err}");

        // {"alg":"none","typ":"JWT"} . {"mercure":{"publish":["*"]}} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.";
        assert!(verify(none, &hs_key(), Role::Publisher, LEEWAY).is_err());
        assert!(verify("not.a.jwt", &hs_key(), Role::Publisher, LEEWAY).is_err());

        let future = token(&["*"], Some(now() + 3600));
        let verified = verify(&future, &hs_key(), Role::Publisher, LEEWAY).expect("valid");
        assert_eq!(verified.valid_until, Some(at(now() + 3600) + LEEWAY));
    }

    /// `nbf` is enforced: a token is refused until `nbf - leeway`, accepted from then on.
    #[test]
    fn not_before_is_enforced_with_the_leeway() {
        let claims = times(Some(1_000), None);
        assert_eq!(
            valid_until(&claims, at(994), LEEWAY),
            Err("is not valid yet (nbf)")
        );
        assert_eq!(valid_until(&claims, at(995), LEEWAY), Ok(None));
        assert_eq!(valid_until(&claims, at(2_000), LEEWAY), Ok(None));
        // Without leeway, not a second early.
        assert!(valid_until(&claims, at(999), Duration::ZERO).is_err());
        // A date beyond what the clock can represent is never reached.
        assert!(valid_until(&times(Some(u64::MAX), None), at(0), LEEWAY).is_err());
    }

    /// `exp` gets the same leeway: valid until `exp + leeway` (exclusive), which is also when
    /// a subscriber's stream ends; an `exp` too far to represent never ends.
    #[test]
    fn expiry_gets_the_same_leeway() {
        let claims = times(None, Some(1_000));
        assert_eq!(valid_until(&claims, at(1_004), LEEWAY), Ok(Some(at(1_005))));
        assert_eq!(valid_until(&claims, at(1_005), LEEWAY), Err("has expired"));
        assert_eq!(
            valid_until(&claims, at(999), Duration::ZERO),
            Ok(Some(at(1_000)))
        );
        assert!(valid_until(&claims, at(1_000), Duration::ZERO).is_err());
        assert_eq!(
            valid_until(&times(None, Some(u64::MAX)), at(0), LEEWAY),
            Ok(None)
        );
        // Both claims: the window between them.
        let window = times(Some(100), Some(200));
        assert!(valid_until(&window, at(90), LEEWAY).is_err());
        assert_eq!(valid_until(&window, at(150), LEEWAY), Ok(Some(at(205))));
        assert!(valid_until(&window, at(205), LEEWAY).is_err());
    }

    /// A token whose `nbf` lies in the future is refused by `verify` with a reason, and one
    /// whose `nbf` is within the leeway is accepted.
    #[test]
    fn verify_refuses_tokens_not_valid_yet() {
        let sign_nbf = |nbf: u64| {
            let claims = Claims {
                nbf: Some(nbf),
                ..Claims::default()
            };
            sign(&claims, SECRET, JwtAlgorithm::Hs256).expect("signs")
        };
        let err = verify(&sign_nbf(now() + 60), &hs_key(), Role::Subscriber, LEEWAY)
            .expect_err("not valid yet");
        assert!(err.to_string().contains("not valid yet"), "{err}");
        assert!(verify(&sign_nbf(now() + 2), &hs_key(), Role::Subscriber, LEEWAY).is_ok());
        assert!(verify(&sign_nbf(now() - 60), &hs_key(), Role::Subscriber, LEEWAY).is_ok());
    }

    /// Fractional NumericDates (RFC 7519; lcobucci/jwt writes them) are read, rounded towards
    /// the shorter validity; negative or non-numeric dates make the token invalid.
    #[test]
    fn fractional_dates_are_read() {
        let claims: Claims =
            serde_json::from_str(r#"{"exp": 1621589724.9, "nbf": 1621589000.1}"#).expect("valid");
        assert_eq!(
            (claims.exp, claims.nbf),
            (Some(1621589724), Some(1621589001))
        );
        let claims: Claims = serde_json::from_str(r#"{"exp": 7}"#).expect("valid");
        assert_eq!((claims.exp, claims.nbf), (Some(7), None));
        assert!(serde_json::from_str::<Claims>(r#"{"exp": -1.5}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"exp": "soon"}"#).is_err());
        let claims: Claims = serde_json::from_str(r#"{"exp": null}"#).expect("valid");
        assert_eq!(claims.exp, None);
    }

    /// The `/stats` breakdown: open on a keyless hub; otherwise only for a header token that
    /// may publish to `*` (401 for a bad token, 403 for a narrower one), never from a cookie.
    #[test]
    fn selectors_are_shown_to_publishers_of_everything() {
        let bearer = |token: &str| {
            TestRequest::default()
                .insert_header(("authorization", format!("Bearer {token}")))
                .to_http_request()
        };
        let anonymous = TestRequest::default().to_http_request();
        assert_eq!(
            may_see_selectors(&anonymous, &Keys::default()).ok(),
            Some(true)
        );

        let keys = Keys {
            publisher: Some(hs_key()),
            subscriber: Some(hs_key()),
            leeway: LEEWAY,
        };
        assert_eq!(may_see_selectors(&anonymous, &keys).ok(), Some(false));
        assert_eq!(
            may_see_selectors(&bearer(&token(&["*"], None)), &keys).ok(),
            Some(true)
        );
        let cookie = TestRequest::default()
            .cookie(actix_web::cookie::Cookie::new(
                COOKIE_NAME,
                token(&["*"], None),
            ))
            .to_http_request();
        assert_eq!(may_see_selectors(&cookie, &keys).ok(), Some(false));
        let narrow = may_see_selectors(&bearer(&token(&["a", "{x}"], None)), &keys);
        assert!(matches!(narrow, Err(HubError::Forbidden(_))), "{narrow:?}");
        let expired = may_see_selectors(&bearer(&token(&["*"], Some(now() - 60))), &keys);
        assert!(
            matches!(expired, Err(HubError::Unauthorized(_))),
            "{expired:?}"
        );

        let subscriber_only = Keys {
            publisher: None,
            ..keys
        };
        assert_eq!(
            may_see_selectors(&anonymous, &subscriber_only).ok(),
            Some(false)
        );
        let no_key = may_see_selectors(&bearer(&token(&["*"], None)), &subscriber_only);
        assert!(matches!(no_key, Err(HubError::Forbidden(_))), "{no_key:?}");
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
            None,
            &cache,
        )
        .expect("room for two selectors");
        assert!(grant.allows("https://example.com/books/1"));
        assert!(grant.allows("chat"));
        assert!(!grant.allows("other"));
        assert!(
            Grant::from_claim(Some(&["*".to_owned()]), None, &cache)
                .expect("`*` costs nothing")
                .allows("anything")
        );
        assert!(!Grant::default().allows("anything"));
    }
}
