//! Where a request carries its token: the `Authorization: Bearer` header, Mercure's cookies,
//! or (Mercure 0.x only) the `authorization` query parameter.

use actix_web::{HttpRequest, http::header};

use crate::error::HubError;

/// The cookie Mercure 0.x clients send their token in.
pub const COOKIE_NAME: &str = "mercureAuthorization";
/// The cookie name Mercure 1.0 recommends.
pub const ACCESS_TOKEN_COOKIE: &str = "__Secure-mercure_access_token";
/// The query parameter for clients that can set neither a header nor a cookie.
pub const QUERY_NAME: &str = "authorization";

/// Where a request may carry its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSources {
    /// The header, the cookies, and the `authorization` query parameter (Mercure 0.x).
    WithQuery,
    /// The header and the cookies: Mercure 1.0 (RFC 9700) keeps tokens out of URLs.
    HeaderAndCookie,
}

/// The token a request carries: the `Authorization: Bearer` header, else the
/// `mercureAuthorization` or `__Secure-mercure_access_token` cookie, else (0.x requests) the
/// `authorization` query parameter.
pub fn token_from(req: &HttpRequest, sources: TokenSources) -> Result<Option<String>, HubError> {
    if let Some(token) = bearer_token(req)? {
        return Ok(Some(token));
    }
    if let Some(cookie) = req
        .cookie(COOKIE_NAME)
        .or_else(|| req.cookie(ACCESS_TOKEN_COOKIE))
    {
        return Ok(Some(cookie.value().to_owned()));
    }
    if sources == TokenSources::HeaderAndCookie {
        return Ok(None);
    }
    Ok(form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == QUERY_NAME)
        .map(|(_, v)| v.into_owned()))
}

/// The token of the `Authorization: Bearer` header only (the scheme is case-insensitive).
pub fn bearer_token(req: &HttpRequest) -> Result<Option<String>, HubError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| malformed("the Authorization header"))?;
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| malformed("the Authorization header (expected `Bearer <token>`)"))?;
    Ok(Some(token.to_owned()))
}

fn malformed(what: &str) -> HubError {
    HubError::TokenMalformed(format!("malformed token in {what}"))
}
