//! Where a node finds its Redis: one address (`redis://`, `rediss://`, `redis+unix://`), or the
//! primary that Redis Sentinel names (`redis+sentinel://`), asked anew on every connection so
//! that a node follows a failover.
//!
//! The Sentinel form (redis-rs reads none, so it is ours; the same shape as the ones Celery and
//! several Redis clients use):
//!
//! ```text
//! redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]
//! ```
//!
//! `HOST:PORT` are the sentinels (26379 when no port is given), `MASTER` the name they monitor
//! (`sentinel monitor MASTER ...`), `DB` the database on the primary. The credentials are the
//! primary's, not the sentinels'. Sentinel finds the primary; redis-rs then checks with `ROLE`
//! that it is one before a connection is made to it.

use std::{sync::Mutex, time::Duration};

use percent_encoding::percent_decode_str;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, RedisConnectionInfo, TlsCertificates,
    aio::MultiplexedConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};

/// The scheme of the Sentinel form.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// A sentinel's port when the URL names none.
const SENTINEL_PORT: u16 = 26379;

/// A Redis to connect to.
pub(super) enum Endpoint {
    /// One server, at a fixed address.
    Direct(Client),
    /// The primary the sentinels name, found again on each connection.
    Sentinel {
        master: String,
        sentinels: tokio::sync::Mutex<SentinelClient>,
        /// The primary's address last found, to log a change once.
        primary: Mutex<Option<String>>,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(_) => f.write_str("Endpoint::Direct"),
            Self::Sentinel { master, .. } => write!(f, "Endpoint::Sentinel({master})"),
        }
    }
}

impl Endpoint {
    /// Reads `url` (checked once, here). `ca` is `--redis-ca-file`'s PEM, for `rediss://`.
    pub fn parse(url: &str, ca: Option<Vec<u8>>) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) else {
            let client = match ca {
                None => Client::open(url),
                Some(pem) => Client::build_with_tls(
                    url,
                    TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                ),
            };
            return client.map(Self::Direct).map_err(|err| err.to_string());
        };
        if ca.is_some() {
            return Err(
                "--redis-ca-file is for `rediss://`; TLS to Sentinel is not supported".to_owned(),
            );
        }
        let sentinel = SentinelUrl::parse(rest)?;
        let mut redis = RedisConnectionInfo::default().set_db(sentinel.db);
        if let Some(user) = sentinel.user {
            redis = redis.set_username(user);
        }
        if let Some(password) = sentinel.password {
            redis = redis.set_password(password);
        }
        let addresses: Vec<ConnectionAddr> = sentinel
            .sentinels
            .into_iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host, port))
            .collect();
        let client = SentinelClient::build(
            addresses,
            sentinel.master.clone(),
            Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(redis)),
            SentinelServerType::Master,
        )
        .map_err(|err| err.to_string())?;
        Ok(Self::Sentinel {
            master: sentinel.master,
            sentinels: tokio::sync::Mutex::new(client),
            primary: Mutex::new(None),
        })
    }

    /// Whether the primary can move (Sentinel): a node then checks that the server it reads
    /// is still the primary, and connects again when it is not.
    pub fn follows_failover(&self) -> bool {
        matches!(self, Self::Sentinel { .. })
    }

    /// The primary's client: the one address, or the server the sentinels name now (asked
    /// within `timeout`; a primary they see as down, or that does not say `ROLE` master, is
    /// none).
    async fn primary(&self, timeout: Duration) -> redis::RedisResult<Client> {
        let (master, sentinels, primary) = match self {
            Self::Direct(client) => return Ok(client.clone()),
            Self::Sentinel {
                master,
                sentinels,
                primary,
            } => (master, sentinels, primary),
        };
        let client = tokio::time::timeout(timeout, async {
            sentinels.lock().await.async_get_client().await
        })
        .await
        .map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "the sentinels did not name a primary in time",
            ))
        })??;
        let address = client.get_connection_info().addr().to_string();
        let mut known = primary.lock().unwrap_or_else(|p| p.into_inner());
        if known.as_deref() != Some(address.as_str()) {
            log::info!("Redis Sentinel names the primary master={master} primary={address}");
            *known = Some(address);
        }
        Ok(client)
    }

    /// A connection to the primary and its address, or why there is none.
    pub async fn connect(
        &self,
        timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<(MultiplexedConnection, String)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(response_timeout));
        let client = self.primary(timeout).await?;
        let address = client.get_connection_info().addr().to_string();
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((connection, address))
    }

    /// Through Sentinel, whether the sentinels name another primary than `address` now.
    /// `false` when they cannot be asked: a node does not leave a server it reads for that.
    pub async fn moved_from(&self, address: &str, timeout: Duration) -> bool {
        if !self.follows_failover() {
            return false;
        }
        match self.primary(timeout).await {
            Ok(client) => client.get_connection_info().addr().to_string() != address,
            Err(_) => false,
        }
    }
}

/// The parts of a `redis+sentinel://` URL.
#[derive(Debug, PartialEq, Eq)]
struct SentinelUrl {
    user: Option<String>,
    password: Option<String>,
    sentinels: Vec<(String, u16)>,
    master: String,
    db: i64,
}

impl SentinelUrl {
    /// Reads what follows the scheme.
    fn parse(rest: &str) -> Result<Self, String> {
        const FORM: &str =
            "expected redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]";
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| format!("the credentials are not UTF-8 once decoded ({FORM})"))
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("no master name ({FORM})"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, authority),
        };
        let (user, password) = match credentials.map(|c| c.split_once(':')) {
            None => (None, None),
            Some(None) => return Err(format!("credentials without `:PASSWORD` ({FORM})")),
            Some(Some((user, password))) => (
                Some(decode(user)?).filter(|user| !user.is_empty()),
                Some(decode(password)?),
            ),
        };
        let sentinels = hosts
            .split(',')
            .map(|host| {
                let (name, port) = match host.rsplit_once(':') {
                    Some((name, port)) => (
                        name,
                        port.parse::<u16>()
                            .ok()
                            .filter(|port| *port != 0)
                            .ok_or_else(|| format!("`{host}`: not a port ({FORM})"))?,
                    ),
                    None => (host, SENTINEL_PORT),
                };
                if name.is_empty() {
                    return Err(format!("a sentinel without a host ({FORM})"));
                }
                Ok((name.to_owned(), port))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut segments = path.split('/');
        let master = segments.next().unwrap_or_default();
        if master.is_empty() {
            return Err(format!("no master name ({FORM})"));
        }
        let db = match segments.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| format!("`{db}`: not a database number ({FORM})"))?,
        };
        if segments.next().is_some() {
            return Err(format!("`{path}`: too many path segments ({FORM})"));
        }
        Ok(Self {
            user,
            password,
            sentinels,
            master: decode(master)?,
            db,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentinel_form_names_sentinels_master_db_and_credentials() {
        let url = SentinelUrl::parse("app:s%40cret@10.0.0.1,10.0.0.2:26380/mymaster/2")
            .expect("a sentinel URL");
        assert_eq!(
            url,
            SentinelUrl {
                user: Some("app".into()),
                password: Some("s@cret".into()),
                sentinels: vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26380)],
                master: "mymaster".into(),
                db: 2,
            }
        );
        let bare = SentinelUrl::parse("s1:5000/m").expect("a sentinel URL");
        assert_eq!(bare.sentinels, vec![("s1".into(), 5000)]);
        assert_eq!(
            (bare.master.as_str(), bare.db, bare.password),
            ("m", 0, None)
        );
        assert_eq!(
            SentinelUrl::parse(":pw@s1/m")
                .expect("a password alone")
                .password,
            Some("pw".into())
        );
    }

    #[test]
    fn a_malformed_sentinel_url_is_refused_naming_the_form() {
        for bad in [
            "s1:26379",
            "s1:26379/",
            "s1:port/m",
            "s1:0/m",
            ",s2/m",
            "s1/m/x",
            "s1/m/1/2",
            "user@s1/m",
        ] {
            let err = SentinelUrl::parse(bad).expect_err(bad);
            assert!(err.contains("redis+sentinel://"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_sentinel_url_with_a_ca_file_is_refused() {
        let err = Endpoint::parse("redis+sentinel://s1/m", Some(Vec::new())).expect_err("refused");
        assert!(err.contains("--redis-ca-file"), "{err}");
    }
}
