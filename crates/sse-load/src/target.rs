//! Where the load goes: `http://` and `https://host[:port]/path` URLs, resolved once and refused
//! unless every address they name is on this machine's loopback (127.0.0.0/8 or ::1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context as _, bail};

/// Plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed, resolved, loopback-only HTTP URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    /// The host as written, without brackets or port: the TLS server name (SNI and the name the
    /// certificate must carry).
    pub host: String,
    /// The `Host` header value, as written in the URL (with the port when one was given).
    pub host_header: String,
    /// The request target: path and query, `/` when the URL had none.
    pub path: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `url` and resolves its host; every resolved address must be loopback.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (scheme, authority, path) = split_url(url)?;
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = split_authority(authority, default_port)?;
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        let Some(first) = addrs.first() else {
            bail!("{host} resolves to no address");
        };
        if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
            bail!(
                "refusing {url}: {host} resolves to {}, which is not loopback (127.0.0.0/8 or ::1)",
                bad.ip()
            );
        }
        // Prefer IPv4: subscribers spread over 127.0.0.x source addresses only there.
        let addr = addrs.iter().find(|a| a.is_ipv4()).unwrap_or(first);
        Ok(Self {
            scheme,
            host: host.to_owned(),
            host_header: authority.to_owned(),
            path: path.to_owned(),
            addr: *addr,
        })
    }

    /// The source address for the `index`-th subscriber: 127.0.0.2 ..= 127.0.0.254 in turn, so
    /// each source address needs only N/253 ephemeral ports. None for an IPv6 target.
    pub fn source_addr(&self, index: usize) -> Option<SocketAddr> {
        match self.addr {
            SocketAddr::V4(_) => {
                let last = u8::try_from(2 + index % 253).unwrap_or(2);
                Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                    0,
                ))
            }
            SocketAddr::V6(_) => None,
        }
    }
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `http[s]://authority/path?query` → (scheme, authority, "/path?query").
fn split_url(url: &str) -> anyhow::Result<(Scheme, &str, &str)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        bail!("{url}: only http:// and https:// URLs are supported");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#']) {
        bail!("{url}: expected http[s]://host[:port]/path");
    }
    Ok((scheme, authority, path))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host without brackets, port or `default_port`).
fn split_authority(authority: &str, default_port: u16) -> anyhow::Result<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            bail!("{authority}: unclosed [");
        };
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("{authority}: bad port"))?,
        None => default_port,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback URLs parse into address, Host header and path.
    #[test]
    fn loopback_urls_parse() {
        let t = Target::parse("http://127.0.0.1:8080/stream?topic=a").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.path, "/stream?topic=a");
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!(t.addr, "[::1]:9".parse().unwrap());
        let t = Target::parse("http://127.0.0.5").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));
        assert!(
            Target::parse("http://localhost:1/x")
                .unwrap()
                .addr
                .ip()
                .is_loopback()
        );
    }

    /// Anything that is not loopback, or not plain http, is refused.
    #[test]
    fn non_loopback_targets_are_refused() {
        for url in [
            "http://10.0.0.1/x",
            "http://192.168.1.1:80/",
            "http://8.8.8.8/",
            "http://[2001:db8::1]/",
            "https://10.0.0.1/",
            "ftp://127.0.0.1/",
            "127.0.0.1:80/x",
            "http://user@127.0.0.1/",
        ] {
            assert!(Target::parse(url).is_err(), "{url} was accepted");
        }
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
    }

    /// `https://` URLs parse with port 443 by default and the host as the TLS server name.
    #[test]
    fn https_urls_parse_with_their_server_name() {
        let t = Target::parse("https://localhost:8443/stream").unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!((t.host.as_str(), t.addr.port()), ("localhost", 8443));
        assert_eq!(t.host_header, "localhost:8443");
        let t = Target::parse("https://127.0.0.1/x").unwrap();
        assert_eq!((t.addr.port(), t.host.as_str()), (443, "127.0.0.1"));
        let t = Target::parse("https://[::1]:9/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(
            Target::parse("http://127.0.0.1/").unwrap().scheme,
            Scheme::Http
        );
    }

    /// Source addresses cycle over 127.0.0.2 ..= 127.0.0.254.
    #[test]
    fn source_addresses_cycle_over_the_loopback_range() {
        let t = Target::parse("http://127.0.0.1:1/").unwrap();
        let ip = |i| t.source_addr(i).unwrap().ip().to_string();
        assert_eq!(ip(0), "127.0.0.2");
        assert_eq!(ip(252), "127.0.0.254");
        assert_eq!(ip(253), "127.0.0.2");
    }
}
