//! Cross-site request forgery: a request whose token came from the cookie is taken only from
//! the hub's own origin or an origin listed in `--cors-allowed-origins`, told by its `Origin`
//! header, else its `Referer` (Mercure, "Security Considerations").

use actix_web::{HttpRequest, http::header};

use crate::{auth, error::HubError, url_pattern::HubUrl};

/// The request's method, as the check treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A publish: a request with neither `Origin` nor `Referer` is refused, since a forged
    /// form post is exactly what the check is for.
    Publish,
    /// A subscribe or a subscription API read: a browser sends no `Origin` on a same-origin
    /// `GET`, and no `Referer` under `Referrer-Policy: no-referrer`, so a request with neither
    /// is let through; one naming a foreign origin is refused.
    Read,
}

/// Whether `req` authenticates with the cookie: it has no `Authorization` header (which
/// always wins) and carries one of the token cookies.
pub fn uses_cookie(req: &HttpRequest) -> bool {
    !req.headers().contains_key(header::AUTHORIZATION)
        && (req.cookie(auth::COOKIE_NAME).is_some()
            || req.cookie(auth::ACCESS_TOKEN_COOKIE).is_some())
}

/// Refuses (400, `invalid_request`) a cookie-authenticated request from an origin that is
/// neither the hub's own (as the request addressed it, or as `--hub-url` names it) nor listed
/// in `allowed` (`*` there lets origins in without credentials, so it allows no cookie).
/// Requests authenticated by the header, and anonymous ones, are not checked.
pub fn check(
    req: &HttpRequest,
    action: Action,
    allowed: &[String],
    hub: &HubUrl,
) -> Result<(), HubError> {
    if !uses_cookie(req) {
        return Ok(());
    }
    let origin = match source_origin(req)? {
        Some(origin) => origin,
        None if action == Action::Read => return Ok(()),
        None => {
            return Err(HubError::CrossOrigin(
                "the token came from the cookie, and the request has neither an `Origin` nor a \
                 `Referer` header to tell where it came from; send the token in the \
                 Authorization header instead"
                    .to_owned(),
            ));
        }
    };
    let own = {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    };
    let same = |candidate: &str| candidate.eq_ignore_ascii_case(&origin);
    if same(&own)
        || origin_of(hub.as_str()).is_some_and(same)
        || allowed.iter().any(|listed| listed != "*" && same(listed))
    {
        return Ok(());
    }
    Err(HubError::CrossOrigin(format!(
        "the token came from the cookie, and the request comes from `{origin}`, which is not \
         the hub's origin nor listed in --cors-allowed-origins"
    )))
}

/// The origin the request says it comes from: `Origin`, else the origin of `Referer`.
fn source_origin(req: &HttpRequest) -> Result<Option<String>, HubError> {
    let text = |name: header::HeaderName| -> Result<Option<&str>, HubError> {
        req.headers()
            .get(&name)
            .map(|value| {
                value.to_str().map_err(|_| HubError::InvalidField {
                    field: "Origin/Referer",
                    reason: "must be visible ASCII",
                })
            })
            .transpose()
    };
    if let Some(origin) = text(header::ORIGIN)? {
        // `null` (a sandboxed frame, a data: URL) is an origin no list can name.
        return Ok(Some(origin.to_owned()));
    }
    match text(header::REFERER)? {
        Some(referer) => origin_of(referer)
            .map(|origin| Some(origin.to_owned()))
            .ok_or_else(|| HubError::CrossOrigin(format!("the Referer `{referer}` is not a URL"))),
        None => Ok(None),
    }
}

/// `scheme://host[:port]` of an absolute URL: the text up to the path, query or fragment.
pub fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_end == 0 {
        return None;
    }
    Some(&url[..scheme.len() + 3 + authority_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An origin is the scheme and authority of a URL, nothing after it.
    #[test]
    fn origins_of_urls() {
        assert_eq!(
            origin_of("https://app.example/page?x#y"),
            Some("https://app.example")
        );
        assert_eq!(origin_of("http://h:8080"), Some("http://h:8080"));
        assert_eq!(origin_of("https://h?q"), Some("https://h"));
        assert_eq!(origin_of("not a url"), None);
        assert_eq!(origin_of("https:///path"), None);
        assert_eq!(origin_of("://h/"), None);
    }
}
