//! Auth: Mercure JWTs, where a request's token comes from, and what it allows: a 0.x token
//! through its `mercure` claim, a 1.0 access token (`typ: at+jwt`, RFC 9068: `iss`, `aud`,
//! `exp` required) through its `authorization_details`. This module holds the keys and modes
//! and turns a request into a [`Grant`]; its rooms:
//!
//! - [`sources`]: where a request carries its token (header, cookies, query).
//! - [`claims`]: Mercure 0.x tokens: their claims, verification and time claims.
//! - [`access_token`]: Mercure 1.0 access tokens and their authorization details.
//! - [`signing`]: signing tokens, and the claims the `token` command puts in them.

mod access_token;
mod claims;
mod signing;
mod sources;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use actix_web::HttpRequest;

pub use self::{
    access_token::{
        AccessToken, DETAIL_TYPE, Detail, MAX_DETAILS, is_access_token, verify_access_token,
    },
    claims::{Claims, MercureClaim, Verified, valid_until, verify},
    signing::{AccessTokenClaims, AccessTokenRequest, sign, sign_access_token},
    sources::{
        ACCESS_TOKEN_COOKIE, COOKIE_NAME, QUERY_NAME, TokenSources, bearer_token, token_from,
    },
};
pub use crate::keys::{JwtAlgorithm, JwtKey, Role};
use crate::{
    error::HubError,
    keys::Issuer,
    topic::{Selector, SelectorCache, SelectorError},
};

/// Selectors one token may carry (0.x `mercure.publish` and `mercure.subscribe` together, or
/// every matcher of a 1.0 token's Mercure details): a user's own topics and a few shared lists
/// fit, and a publish checked against them all stays within about 64 one-pass matches.
pub const DEFAULT_MAX_TOKEN_SELECTORS: usize = 64;

/// The keys for both roles (`None` where that role has no key configured), the clock skew
/// allowed on their tokens' time claims, and what a Mercure 1.0 access token must name.
#[derive(Debug, Clone)]
pub struct Keys {
    pub publisher: Option<JwtKey>,
    pub subscriber: Option<JwtKey>,
    /// Added to `exp` and taken from `nbf` (`--jwt-leeway`): see [`valid_until`].
    pub leeway: Duration,
    /// The issuer the keys belong to (`--jwt-issuer`): an access token's `iss` must be it.
    /// `None`: no access token is accepted.
    pub issuer: Option<String>,
    /// The hub's resource identifier (`--jwt-audience`), which an access token's `aud` names.
    pub audience: String,
    /// Topic matchers per authorization detail, and bytes per matcher (`--max-topics`,
    /// `--max-topic-bytes`).
    pub max_matchers: usize,
    pub max_matcher_bytes: usize,
    /// Selectors one token may carry in all (`--max-token-selectors`): each is compiled and
    /// checked on every publish or kept by every stream the token opens.
    pub max_selectors: usize,
    /// Whether the Mercure route takes 0.x tokens (`--mercure-mode`).
    pub mode: Mode,
    /// Further issuers of access tokens, each with its own keys (`--issuers`).
    pub issuers: Vec<Arc<Issuer>>,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            publisher: None,
            subscriber: None,
            leeway: Duration::ZERO,
            issuer: None,
            audience: crate::url_pattern::DEFAULT_HUB_URL.to_owned(),
            max_matchers: crate::event::DEFAULT_MAX_TOPICS,
            max_matcher_bytes: crate::event::DEFAULT_MAX_TOPIC_BYTES,
            max_selectors: DEFAULT_MAX_TOKEN_SELECTORS,
            mode: Mode::Modern,
            issuers: Vec::new(),
        }
    }
}

impl Keys {
    pub fn for_role(&self, role: Role) -> Option<&JwtKey> {
        match role {
            Role::Publisher => self.publisher.as_ref(),
            Role::Subscriber => self.subscriber.as_ref(),
        }
    }

    /// Whether any token can verify for `role`: a key from the flags, or an issuer trusted for
    /// it.
    pub fn verifies(&self, role: Role) -> bool {
        self.for_role(role).is_some() || self.issuers.iter().any(|issuer| issuer.trusts(role))
    }

    /// Whether any token can verify, for either role: the hub is a protected resource.
    pub fn verifies_any(&self) -> bool {
        self.verifies(Role::Publisher) || self.verifies(Role::Subscriber)
    }

    /// The issuers access tokens may come from: `--jwt-issuer` and the `--issuers` file's.
    pub fn issuer_names(&self) -> Vec<&str> {
        self.issuer
            .as_deref()
            .into_iter()
            .chain(self.issuers.iter().map(|issuer| issuer.iss.as_str()))
            .collect()
    }

    /// The key that verifies a 0.x token for `role`: the flags' (`--jwt-key`, ...). A 0.x
    /// token names no issuer, so no `--issuers` key is tried on it.
    fn legacy_key(&self, role: Role) -> Result<&JwtKey, HubError> {
        self.for_role(role).ok_or_else(|| {
            HubError::Unauthorized(format!(
                "the {} token is a Mercure 0.x token, and the hub has no {} key for those \
                 (--jwt-key); `--issuers` keys verify only access tokens",
                role.name(),
                role.name()
            ))
        })
    }

    /// Refuses a 0.x token (one without `typ: at+jwt`) where modern mode takes only access
    /// tokens.
    fn check_legacy_allowed(&self, surface: Surface, role: Role) -> Result<(), HubError> {
        if surface == Surface::Mercure && self.mode == Mode::Modern {
            return Err(HubError::Unauthorized(format!(
                "the {} token is a Mercure 0.x token (no `typ: at+jwt` header); the hub's \
                 Mercure route is in modern mode and takes only Mercure 1.0 access tokens \
                 (`--mercure-mode compat` also takes 0.x tokens)",
                role.name()
            )));
        }
        Ok(())
    }
}

/// Which Mercure clients the Mercure route serves (`--mercure-mode`). The hub's own `/stream` and
/// `/publish` routes take both token kinds in either mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Mercure 1.0 only: access tokens (`typ: at+jwt`), `match*` parameters, 1.0 shapes.
    Modern,
    /// Mercure 0.x and 1.0 side by side: also 0.x tokens, `topic=` selectors with URI
    /// templates, the `authorization` query parameter and the 0.x subscription API.
    Compat,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Modern => "modern",
            Self::Compat => "compat",
        }
    }
}

/// Which route a token is checked for: the kinds of token it takes, and whether publishing
/// there needs a token at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// sse-hub's own `/stream` and `/publish`: both token kinds; open publishing without a
    /// publisher key.
    Hub,
    /// `/.well-known/mercure`: a publisher token always; 0.x tokens only in compat mode.
    Mercure,
}

/// Why a token with more than `--max-token-selectors` selectors is refused.
pub(super) fn too_many_selectors(keys: &Keys) -> String {
    format!(
        "carries more than {} selectors (--max-token-selectors)",
        keys.max_selectors
    )
}

/// Refuses a 0.x token whose `mercure.publish` and `mercure.subscribe` lists together hold
/// more than `--max-token-selectors` selectors, before any of them is compiled.
fn check_selector_count(verified: &Verified, role: Role, keys: &Keys) -> Result<(), HubError> {
    let mercure = &verified.claims.mercure;
    let count = mercure.publish.as_ref().map_or(0, Vec::len)
        + mercure.subscribe.as_ref().map_or(0, Vec::len);
    if count > keys.max_selectors {
        return Err(HubError::Unauthorized(format!(
            "the {} token {}",
            role.name(),
            too_many_selectors(keys)
        )));
    }
    Ok(())
}

/// What a verified token allows, as compiled selectors (in a 0.x claim, invalid or too complex
/// selectors are ignored: they can match nothing), and until when.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub selectors: Vec<Selector>,
    /// When the token stops being valid (`exp` plus the leeway); `None` for a token without
    /// `exp` and for anonymous subscribers. A subscriber's stream ends then.
    pub valid_until: Option<SystemTime>,
    /// The subscribe grants in the token's order, each with its payload (a 0.x token: `*` with
    /// `mercure.payload`): what active subscriptions report about the subscriber.
    pub payloads: Vec<(Vec<Selector>, Option<serde_json::Value>)>,
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
            payloads: Vec::new(),
        })
    }

    /// The grant of an access token's details that carry `action`.
    fn from_details(token: AccessToken, action: fn(&Detail) -> bool) -> Self {
        let details: Vec<Detail> = token.details.into_iter().filter(action).collect();
        Self {
            selectors: details.iter().flat_map(|d| d.topics.clone()).collect(),
            valid_until: token.valid_until,
            payloads: details.into_iter().map(|d| (d.topics, d.payload)).collect(),
        }
    }

    pub fn allows(&self, topic: &str) -> bool {
        self.selectors.iter().any(|s| s.matches(topic))
    }

    /// The payload of the first subscribe grant matching `matcher` (a subscription's own
    /// matcher text, read as a topic), if it has one.
    pub fn payload_for(&self, matcher: &str) -> Option<&serde_json::Value> {
        self.payloads
            .iter()
            .find(|(selectors, _)| selectors.iter().any(|s| s.matches(matcher)))
            .and_then(|(_, payload)| payload.as_ref())
    }
}

/// The grant of the publisher of `req` on `surface`: a token is required (from the header, the
/// cookie or, on the hub's own routes, the query), and must verify with a publisher key or an
/// issuer's; its `mercure.publish` claim (0.x) or `publish` details (1.0) say where it may
/// publish.
pub async fn publisher_grant(
    req: &HttpRequest,
    keys: &Keys,
    cache: &SelectorCache,
    surface: Surface,
) -> Result<Grant, HubError> {
    if !keys.verifies(Role::Publisher) {
        return Err(HubError::TokenMissing(
            "publishing here needs a JWT, and the hub has no publisher key configured".to_owned(),
        ));
    }
    let token = token_from(req, TokenSources::WithQuery)?.ok_or_else(|| {
        HubError::TokenMissing(
            "publishing needs a publisher JWT (Authorization: Bearer)".to_owned(),
        )
    })?;
    if is_access_token(&token, Role::Publisher)? {
        let token = verify_access_token(&token, Role::Publisher, keys, cache).await?;
        return Ok(Grant::from_details(token, |d| d.publish));
    }
    keys.check_legacy_allowed(surface, Role::Publisher)?;
    let key = keys.legacy_key(Role::Publisher)?;
    let verified = verify(&token, key, Role::Publisher, keys.leeway)?;
    check_selector_count(&verified, Role::Publisher, keys)?;
    let Some(publish) = verified.claims.mercure.publish.as_deref() else {
        return Err(HubError::Forbidden(
            "the token has no mercure.publish claim".to_owned(),
        ));
    };
    Grant::from_claim(Some(publish), verified.valid_until, cache)
}

/// The publisher of the quick-start `/publish`: anyone (`None`) while the hub verifies no
/// publisher token, else as [`publisher_grant`] requires.
pub async fn hub_publisher_grant(
    req: &HttpRequest,
    keys: &Keys,
    cache: &SelectorCache,
) -> Result<Option<Grant>, HubError> {
    if !keys.verifies(Role::Publisher) {
        return Ok(None);
    }
    publisher_grant(req, keys, cache, Surface::Hub)
        .await
        .map(Some)
}

/// Checks the subscriber token of `req`, if any: its `mercure.subscribe` claim (0.x) or its
/// `subscribe` details (1.0) say which private events it may receive. Without a token the
/// subscriber is anonymous (refused when `anonymous` is false).
pub async fn subscriber_grant(
    req: &HttpRequest,
    keys: &Keys,
    cache: &SelectorCache,
    anonymous: bool,
    sources: TokenSources,
    surface: Surface,
) -> Result<Grant, HubError> {
    let Some(token) = token_from(req, sources)? else {
        return if anonymous {
            Ok(Grant::default())
        } else {
            Err(HubError::TokenMissing(
                "subscribing needs a subscriber JWT".to_owned(),
            ))
        };
    };
    if !keys.verifies(Role::Subscriber) {
        return Err(HubError::Unauthorized(
            "a token was given, but the hub has no subscriber key configured".to_owned(),
        ));
    }
    if is_access_token(&token, Role::Subscriber)? {
        let token = verify_access_token(&token, Role::Subscriber, keys, cache).await?;
        return Ok(Grant::from_details(token, |d| d.subscribe));
    }
    keys.check_legacy_allowed(surface, Role::Subscriber)?;
    let key = keys.legacy_key(Role::Subscriber)?;
    let verified = verify(&token, key, Role::Subscriber, keys.leeway)?;
    check_selector_count(&verified, Role::Subscriber, keys)?;
    let mut grant = Grant::from_claim(
        verified.claims.mercure.subscribe.as_deref(),
        verified.valid_until,
        cache,
    )?;
    grant.payloads = vec![(vec![Selector::Any], verified.claims.mercure.payload)];
    Ok(grant)
}

/// Whether `req` may see which selectors subscribers use (the per-selector breakdown of
/// `/stats`, which names private topics too). It takes what publishing to every topic takes:
/// a publisher token whose `mercure.publish` claim (or a `publish` detail) holds `*`, in the
/// `Authorization: Bearer`
/// header only (a browser's `mercureAuthorization` cookie is its subscriber credential, not an
/// operator's). On a hub without any key, where anyone may publish anywhere and no subscriber
/// can be sent a private event, everyone may.
///
/// `Ok(false)` without the header; a token that does not verify is 401, one without `*` 403.
pub async fn may_see_selectors(
    req: &HttpRequest,
    keys: &Keys,
    cache: &SelectorCache,
) -> Result<bool, HubError> {
    if !keys.verifies(Role::Publisher) && !keys.verifies(Role::Subscriber) {
        return Ok(true);
    }
    let Some(token) = bearer_token(req)? else {
        return Ok(false);
    };
    if !keys.verifies(Role::Publisher) {
        return Err(HubError::Forbidden(
            "the hub has no publisher key, so no token can show subscriber selectors".to_owned(),
        ));
    }
    let everything = if is_access_token(&token, Role::Publisher)? {
        let token = verify_access_token(&token, Role::Publisher, keys, cache).await?;
        Grant::from_details(token, |d| d.publish)
            .selectors
            .contains(&Selector::Any)
    } else {
        let key = keys.legacy_key(Role::Publisher)?;
        let verified = verify(&token, key, Role::Publisher, keys.leeway)?;
        let publish = verified.claims.mercure.publish.unwrap_or_default();
        publish.iter().any(|selector| selector == "*")
    };
    if everything {
        Ok(true)
    } else {
        Err(HubError::Forbidden(
            "subscriber selectors are shown only to a publisher token allowed to publish to `*`"
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use actix_web::test::TestRequest;

    use super::{
        access_token::{DetailError, parse_details},
        *,
    };

    const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";

    fn hs_key() -> JwtKey {
        JwtKey::new(SECRET, JwtAlgorithm::HS256).expect("a key")
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
        sign(&claims, SECRET, JwtAlgorithm::HS256).expect("signs")
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

        let other = JwtKey::new("another secret", JwtAlgorithm::HS256).expect("key");
        let err =
            verify(&token(&["*"], None), &other, Role::Publisher, LEEWAY).expect_err("bad sig");
        assert!(err.to_string().contains("invalid signature"), "{err}");

        // {"alg":"none","typ":"JWT"} . {"mercure":{"publish":["*"]}} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.";
        assert!(verify(none, &hs_key(), Role::Publisher, LEEWAY).is_err());
        assert!(verify("not.a.jwt", &hs_key(), Role::Publisher, LEEWAY).is_err());

        // One reading of the clock: two could straddle a second boundary and differ.
        let exp = now() + 3600;
        let future = token(&["*"], Some(exp));
        let verified = verify(&future, &hs_key(), Role::Publisher, LEEWAY).expect("valid");
        assert_eq!(verified.valid_until, Some(at(exp) + LEEWAY));
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
            sign(&claims, SECRET, JwtAlgorithm::HS256).expect("signs")
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
    #[actix_web::test]
    async fn selectors_are_shown_to_publishers_of_everything() {
        let cache = SelectorCache::new(crate::topic::SelectorLimits::default());
        let bearer = |token: &str| {
            TestRequest::default()
                .insert_header(("authorization", format!("Bearer {token}")))
                .to_http_request()
        };
        let anonymous = TestRequest::default().to_http_request();
        assert_eq!(
            may_see_selectors(&anonymous, &Keys::default(), &cache)
                .await
                .ok(),
            Some(true)
        );

        let keys = Keys {
            publisher: Some(hs_key()),
            subscriber: Some(hs_key()),
            leeway: LEEWAY,
            ..Keys::default()
        };
        assert_eq!(
            may_see_selectors(&anonymous, &keys, &cache).await.ok(),
            Some(false)
        );
        assert_eq!(
            may_see_selectors(&bearer(&token(&["*"], None)), &keys, &cache)
                .await
                .ok(),
            Some(true)
        );
        let cookie = TestRequest::default()
            .cookie(actix_web::cookie::Cookie::new(
                COOKIE_NAME,
                token(&["*"], None),
            ))
            .to_http_request();
        assert_eq!(
            may_see_selectors(&cookie, &keys, &cache).await.ok(),
            Some(false)
        );
        let access = |publish: &str| {
            let claims = serde_json::json!({
                "iss": "https://issuer.example",
                "aud": crate::url_pattern::DEFAULT_HUB_URL,
                "exp": now() + 60,
                "authorization_details": [{
                    "type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": publish}],
                }],
            });
            sign_access_token(&claims, SECRET, JwtAlgorithm::HS256).expect("signs")
        };
        let with_issuer = Keys {
            issuer: Some("https://issuer.example".to_owned()),
            ..keys.clone()
        };
        assert_eq!(
            may_see_selectors(&bearer(&access("*")), &with_issuer, &cache)
                .await
                .ok(),
            Some(true)
        );
        let narrow = may_see_selectors(&bearer(&access("a")), &with_issuer, &cache).await;
        assert!(matches!(narrow, Err(HubError::Forbidden(_))), "{narrow:?}");
        let narrow = may_see_selectors(&bearer(&token(&["a", "{x}"], None)), &keys, &cache).await;
        assert!(matches!(narrow, Err(HubError::Forbidden(_))), "{narrow:?}");
        let expired =
            may_see_selectors(&bearer(&token(&["*"], Some(now() - 60))), &keys, &cache).await;
        assert!(
            matches!(expired, Err(HubError::Unauthorized(_))),
            "{expired:?}"
        );

        let subscriber_only = Keys {
            publisher: None,
            ..keys
        };
        assert_eq!(
            may_see_selectors(&anonymous, &subscriber_only, &cache)
                .await
                .ok(),
            Some(false)
        );
        let no_key =
            may_see_selectors(&bearer(&token(&["*"], None)), &subscriber_only, &cache).await;
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
        assert_eq!(
            token_from(&req, TokenSources::WithQuery)
                .expect("ok")
                .as_deref(),
            Some("h")
        );
        let req = TestRequest::default()
            .uri("/?authorization=q")
            .cookie(actix_web::cookie::Cookie::new(COOKIE_NAME, "c"))
            .to_http_request();
        assert_eq!(
            token_from(&req, TokenSources::WithQuery)
                .expect("ok")
                .as_deref(),
            Some("c")
        );
        let req = TestRequest::default()
            .uri("/?authorization=q")
            .to_http_request();
        assert_eq!(
            token_from(&req, TokenSources::WithQuery)
                .expect("ok")
                .as_deref(),
            Some("q")
        );
        let req = TestRequest::default().to_http_request();
        assert_eq!(token_from(&req, TokenSources::WithQuery).expect("ok"), None);
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

    /// A 1.0 token's matchers count together across its Mercure details against
    /// `--max-token-selectors`: over it the details are invalid, naming the limit; at it, fine.
    #[test]
    fn access_token_matchers_are_bounded_across_details() {
        let cache = SelectorCache::new(crate::topic::SelectorLimits::default());
        let keys = Keys {
            max_selectors: 3,
            ..Keys::default()
        };
        let detail = |topics: &[&str]| {
            serde_json::json!({
                "type": DETAIL_TYPE,
                "actions": ["subscribe"],
                "topics": topics.iter().map(|t| serde_json::json!({"match": t})).collect::<Vec<_>>(),
            })
        };
        let at_the_limit = serde_json::json!([detail(&["a", "b"]), detail(&["c"])]);
        let over = serde_json::json!([detail(&["a", "b"]), detail(&["c", "d"])]);

        assert!(parse_details(Some(&at_the_limit), &keys, &cache).is_ok());
        match parse_details(Some(&over), &keys, &cache) {
            Err(DetailError::Invalid(why)) => {
                assert!(
                    why.contains("more than 3 selectors (--max-token-selectors)"),
                    "{why}"
                );
            }
            other => panic!("expected invalid details, got {other:?}"),
        }
    }
}
