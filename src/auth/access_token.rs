//! Mercure 1.0 access tokens (RFC 9068 as Mercure profiles it): the issuer's key, the claims,
//! and the Mercure authorization details (RFC 9396) with their topic matchers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{
    Claims, Keys,
    claims::{numeric_date, valid_until, why_not_decoded},
    too_many_selectors,
};
use crate::{
    error::HubError,
    keys::Role,
    topic::{MatcherType, Selector, SelectorCache, SelectorError},
    url_pattern::check_value,
};

/// The `type` of a Mercure authorization detail (RFC 9396).
pub const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// Mercure authorization details one token may carry; more make it invalid.
pub const MAX_DETAILS: usize = 32;

/// Whether `token` is a Mercure 1.0 access token: its header's `typ` is `at+jwt` (or
/// `application/at+jwt`, case-insensitive, RFC 9068). Other tokens are read as Mercure 0.x ones.
pub fn is_access_token(token: &str, role: Role) -> Result<bool, HubError> {
    let header = jsonwebtoken::decode_header(token).map_err(|err| {
        HubError::Unauthorized(format!(
            "the {} token is not a valid JWT ({err})",
            role.name()
        ))
    })?;
    Ok(header.typ.is_some_and(|typ| {
        let typ = typ.to_ascii_lowercase();
        typ == "at+jwt" || typ == "application/at+jwt"
    }))
}

/// The claims of a Mercure 1.0 access token the hub reads; `iss` and `aud` are checked by
/// the decoder.
#[derive(Debug, Deserialize)]
struct AccessClaims {
    #[serde(default, deserialize_with = "numeric_date::floor")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date::ceil")]
    nbf: Option<u64>,
    #[serde(default)]
    authorization_details: Option<serde_json::Value>,
}

/// One Mercure authorization detail of a verified access token.
#[derive(Debug, Clone)]
pub struct Detail {
    pub publish: bool,
    pub subscribe: bool,
    pub topics: Vec<Selector>,
    pub payload: Option<serde_json::Value>,
}

/// A verified Mercure 1.0 access token: its Mercure authorization details, and when it stops
/// being valid.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub details: Vec<Detail>,
    pub valid_until: Option<SystemTime>,
}

/// Verifies a Mercure 1.0 access token (RFC 9068 as Mercure profiles it): the role's key and
/// algorithm only, `iss` equal to the configured issuer, `aud` naming the hub, `exp` present,
/// `nbf` and `exp` with the leeway, and every Mercure authorization detail well formed (one
/// that is not makes the whole token invalid). Every failure is `invalid_token`.
pub async fn verify_access_token(
    token: &str,
    role: Role,
    keys: &Keys,
    cache: &SelectorCache,
) -> Result<AccessToken, HubError> {
    let refused =
        |reason: String| HubError::Unauthorized(format!("the {} token {reason}", role.name()));
    let (key, algorithm, issuer) = access_token_key(token, role, keys).await.map_err(refused)?;
    let issuer = issuer.as_str();
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims = ["exp", "iss", "aud"].map(str::to_owned).into();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[&keys.audience]);
    let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|err| {
            refused(match err.kind() {
                ErrorKind::InvalidIssuer => format!("is not issued by `{issuer}` (iss)"),
                ErrorKind::InvalidAudience => {
                    format!(
                        "is not meant for this hub: its aud lacks `{}`",
                        keys.audience
                    )
                }
                ErrorKind::MissingRequiredClaim(claim) => format!("has no `{claim}` claim"),
                _ => why_not_decoded(&err, algorithm, role),
            })
        })?;
    let times = Claims {
        exp: claims.exp,
        nbf: claims.nbf,
        ..Claims::default()
    };
    valid_until(&times, SystemTime::now(), keys.leeway).map_err(|why| refused(why.to_owned()))?;
    // Accepted within the leeway for clock skew, but a stream ends at `exp` itself: Mercure 1.0
    // asks that the connection close no later than that.
    let valid_until = claims
        .exp
        .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)));
    let details = parse_details(claims.authorization_details.as_ref(), keys, cache).map_err(
        |err| match err {
            DetailError::Invalid(why) => {
                refused(format!("has invalid authorization_details: {why}"))
            }
            // The token is fine; the hub cannot hold its patterns now.
            DetailError::Full { limit } => HubError::SelectorLimit { limit },
        },
    )?;
    Ok(AccessToken {
        details,
        valid_until,
    })
}

/// The key, algorithm and issuer an access token is verified with, picked by its (not yet
/// verified) `iss`: `--jwt-issuer` with the flags' keys, else the `--issuers` entry of that
/// name, whose key set is asked for the header's `kid`. The error completes "the token ...".
async fn access_token_key(
    token: &str,
    role: Role,
    keys: &Keys,
) -> Result<(DecodingKey, Algorithm, String), String> {
    #[derive(Deserialize)]
    struct Iss {
        #[serde(default)]
        iss: Option<serde_json::Value>,
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|err| format!("is not a valid JWT ({err})"))?;
    let claimed = jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
        .map_err(|err| format!("is not a valid JWT ({err})"))?
        .iss;
    let Some(serde_json::Value::String(iss)) = claimed else {
        return Err("has no `iss` claim".to_owned());
    };
    if keys.issuer.as_deref() == Some(iss.as_str())
        && let Some(key) = keys.for_role(role)
    {
        return Ok((key.key.clone(), key.algorithm, iss));
    }
    if let Some(issuer) = keys.issuers.iter().find(|issuer| issuer.iss == iss) {
        let key = issuer
            .key_for(role, header.alg, header.kid.as_deref())
            .await?;
        return Ok((key, header.alg, iss));
    }
    let trusted = keys.issuer_names();
    Err(if trusted.is_empty() {
        "is a Mercure 1.0 access token, and the hub has no issuer configured (--jwt-issuer, \
         --issuers)"
            .to_owned()
    } else {
        format!(
            "is not issued by an issuer the hub trusts for {}s (iss `{iss}`; trusted: {})",
            role.name(),
            trusted.join(", ")
        )
    })
}

/// Why a token's authorization details cannot be used.
#[derive(Debug)]
pub(super) enum DetailError {
    /// Malformed: the token is invalid.
    Invalid(String),
    /// A URL pattern of the token does not fit in `--max-selector-bytes` now.
    Full { limit: usize },
}

impl From<String> for DetailError {
    fn from(why: String) -> Self {
        Self::Invalid(why)
    }
}

impl From<&str> for DetailError {
    fn from(why: &str) -> Self {
        Self::Invalid(why.to_owned())
    }
}

/// The Mercure authorization details of an `authorization_details` claim; details of other
/// types are skipped, unknown actions grant nothing.
pub(super) fn parse_details(
    claim: Option<&serde_json::Value>,
    keys: &Keys,
    cache: &SelectorCache,
) -> Result<Vec<Detail>, DetailError> {
    use serde_json::Value;

    let Some(claim) = claim else {
        return Ok(Vec::new());
    };
    let entries = claim.as_array().ok_or("not an array")?;
    let mut details = Vec::new();
    let mut selectors = 0;
    for (n, entry) in entries.iter().enumerate() {
        let entry = entry
            .as_object()
            .ok_or_else(|| format!("entry {n} is not an object"))?;
        if entry.get("type").and_then(Value::as_str) != Some(DETAIL_TYPE) {
            continue;
        }
        if details.len() == MAX_DETAILS {
            return Err(format!("more than {MAX_DETAILS} Mercure details").into());
        }
        let actions = entry
            .get("actions")
            .and_then(Value::as_array)
            .filter(|actions| !actions.is_empty())
            .ok_or_else(|| format!("entry {n} has no non-empty `actions` array"))?;
        let mut detail = Detail {
            publish: false,
            subscribe: false,
            topics: Vec::new(),
            payload: None,
        };
        for action in actions {
            match action.as_str() {
                Some("publish") => detail.publish = true,
                Some("subscribe") => detail.subscribe = true,
                Some(_) => {}
                None => return Err(format!("entry {n} has an action that is not a string").into()),
            }
        }
        let topics = entry
            .get("topics")
            .and_then(Value::as_array)
            .filter(|topics| !topics.is_empty())
            .ok_or_else(|| format!("entry {n} has no non-empty `topics` array"))?;
        if topics.len() > keys.max_matchers {
            return Err(format!(
                "entry {n} has more than {} topic matchers",
                keys.max_matchers
            )
            .into());
        }
        selectors += topics.len();
        if selectors > keys.max_selectors {
            return Err(too_many_selectors(keys).into());
        }
        for topic in topics {
            detail
                .topics
                .push(parse_matcher(topic, keys, cache).map_err(|err| match err {
                    DetailError::Invalid(why) => DetailError::Invalid(format!("entry {n}: {why}")),
                    full => full,
                })?);
        }
        match entry.get("payload") {
            None => {}
            Some(payload @ Value::Object(_)) => detail.payload = Some(payload.clone()),
            Some(_) => {
                return Err(format!("entry {n} has a `payload` that is not an object").into());
            }
        }
        details.push(detail);
    }
    Ok(details)
}

/// One topic matcher object: `{"match": "...", "match_type": "exact" | "urlpattern"}`.
fn parse_matcher(
    topic: &serde_json::Value,
    keys: &Keys,
    cache: &SelectorCache,
) -> Result<Selector, DetailError> {
    use serde_json::Value;

    let topic = topic
        .as_object()
        .ok_or("a topic matcher is not an object")?;
    let text = topic
        .get("match")
        .and_then(Value::as_str)
        .ok_or("a topic matcher has no `match` string")?;
    let kind = match topic.get("match_type") {
        None => MatcherType::Exact,
        Some(Value::String(name)) => MatcherType::from_name(name)
            .ok_or_else(|| format!("unsupported match_type `{name}`"))?,
        Some(_) => return Err("a `match_type` is not a string".into()),
    };
    if text.is_empty() || text.len() > keys.max_matcher_bytes {
        return Err(format!(
            "a matcher is empty or longer than {} bytes",
            keys.max_matcher_bytes
        )
        .into());
    }
    check_value(text).map_err(|why| format!("the matcher `{text}` {why}"))?;
    cache.get_typed(kind, text).map_err(|err| match err {
        SelectorError::Full { limit } => DetailError::Full { limit },
        other => DetailError::Invalid(other.to_string()),
    })
}
