//! Mercure 0.x tokens: the claims the hub reads (`mercure.publish`, `mercure.subscribe`,
//! `mercure.payload`, and the time claims), their verification, and until when they are valid.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    error::HubError,
    keys::{JwtKey, Role},
};

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
pub(super) mod numeric_date {
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

/// A token that passed [`verify`]: its claims, and when it stops being valid.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    /// `exp` plus the leeway; `None` when the token has no `exp`.
    pub valid_until: Option<SystemTime>,
}

/// Why a token did not decode, after "the publisher token ..." (both token kinds).
pub(super) fn why_not_decoded(
    err: &jsonwebtoken::errors::Error,
    algorithm: Algorithm,
    role: Role,
) -> String {
    match err.kind() {
        ErrorKind::InvalidSignature => "has an invalid signature".to_owned(),
        ErrorKind::InvalidAlgorithm => format!(
            "is not signed with {algorithm:?}, the algorithm configured for {}s",
            role.name()
        ),
        _ => format!("is not a valid JWT ({err})"),
    }
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
        .map_err(|err| refused(why_not_decoded(&err, key.algorithm, role)))?;
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
