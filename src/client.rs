//! What one client may hold: each subscriber's client (its source address, or the address a
//! trusted proxy forwarded for), and per client the subscribers and selector bytes it holds,
//! bounded so that no client can drain the hub's global budgets for everyone.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use crate::{config::Network, error::ClientLimitError, metrics::Metrics, topic::Selector};

/// Who a subscriber is, for the per-client limits: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64, so counting its addresses one by one would let it have
/// 2^64 budgets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net(u64),
    /// A peer without an IP address (a Unix socket): one client for all of them.
    Unknown,
}

impl ClientId {
    /// The client an address belongs to (IPv4-mapped IPv6 addresses are their IPv4 one).
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => v4.fmt(f),
            Self::V6Net(net) => {
                let ip = Ipv6Addr::from_bits(u128::from(*net) << 64);
                write!(f, "{ip}/64")
            }
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The client a request comes from: its peer, or, while the peer (and each hop before it) is
/// a trusted proxy, the rightmost `X-Forwarded-For` address that is not trusted itself.
/// `forwarded` are the header's values in the order they came. An entry that is not an
/// address ends the walk at the last hop known (the header left of it is the client's own
/// writing, which nobody vouches for).
pub fn client_of<'a>(
    peer: Option<IpAddr>,
    forwarded: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[Network],
) -> ClientId {
    let Some(mut hop) = peer else {
        return ClientId::Unknown;
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(hop) {
        return ClientId::of(hop);
    }
    for value in forwarded.rev() {
        for entry in value.rsplit(',') {
            let Some(ip) = forwarded_ip(entry) else {
                return ClientId::of(hop);
            };
            hop = ip;
            if !is_trusted(hop) {
                return ClientId::of(hop);
            }
        }
    }
    ClientId::of(hop)
}

/// One `X-Forwarded-For` entry: an address, also as `1.2.3.4:port` or `[v6]:port`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// Per-client limits, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Subscribers one client may hold at once.
    pub subscribers: usize,
    /// Bytes of compiled selectors (URI templates, URL patterns) one client's subscribers may
    /// hold together, each distinct selector counted once.
    pub selector_bytes: usize,
}

/// What one client holds now.
#[derive(Debug, Default)]
struct Account {
    subscribers: usize,
    /// Bytes of the distinct selectors its subscribers hold.
    selector_bytes: usize,
    /// Bytes set aside for selectors being compiled for its requests (each the most one
    /// selector may take), so concurrent requests cannot overrun the limit meanwhile.
    reserved_bytes: usize,
    /// Each costly selector it holds, and how many of its subscribers hold it.
    selectors: HashMap<Selector, usize>,
}

impl Account {
    fn is_empty(&self) -> bool {
        self.subscribers == 0 && self.selector_bytes == 0 && self.reserved_bytes == 0
    }
}

#[derive(Debug)]
struct Shared {
    accounts: Mutex<HashMap<ClientId, Account>>,
    limits: ClientLimits,
    trusted: Vec<Network>,
    metrics: Arc<Metrics>,
}

/// Every client's account. A selector is charged once per client, not once per subscriber:
/// that is what the client makes the hub keep (subscribers sharing a text share one compiled
/// selector), and it lets many subscribers behind one address (tabs, a NAT) follow the same
/// template without each paying for it again.
#[derive(Debug, Clone)]
pub struct Clients {
    shared: Arc<Shared>,
}

impl Clients {
    pub fn new(limits: ClientLimits, trusted: Vec<Network>, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                accounts: Mutex::new(HashMap::new()),
                limits,
                trusted,
                metrics,
            }),
        }
    }

    /// The client of a request with this peer and these `X-Forwarded-For` values.
    pub fn identify<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded: impl DoubleEndedIterator<Item = &'a str>,
    ) -> ClientId {
        client_of(peer, forwarded, &self.shared.trusted)
    }

    /// Takes a subscriber slot of `client`, given back when the hold drops.
    pub fn admit(&self, client: ClientId) -> Result<ClientHold, ClientLimitError> {
        let mut accounts = self.shared.lock();
        let account = accounts.entry(client).or_default();
        if account.subscribers >= self.shared.limits.subscribers {
            let refused = ClientLimitError::Subscribers {
                limit: self.shared.limits.subscribers,
            };
            if account.is_empty() {
                accounts.remove(&client);
            }
            drop(accounts);
            return Err(self.shared.refuse(client, refused));
        }
        account.subscribers += 1;
        Ok(ClientHold {
            shared: self.shared.clone(),
            client,
            selectors: Vec::new(),
            reserved_bytes: 0,
        })
    }

    /// Bytes `client` holds now (its selectors and reservations).
    pub fn selector_bytes(&self, client: ClientId) -> usize {
        self.shared
            .lock()
            .get(&client)
            .map_or(0, |a| a.selector_bytes + a.reserved_bytes)
    }

    /// Clients holding anything now.
    pub fn len(&self) -> usize {
        self.shared.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Account>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refuse(&self, client: ClientId, refused: ClientLimitError) -> ClientLimitError {
        self.metrics.count_client_limit_refusal(refused.name());
        log::debug!("subscribe refused client={client} limit={}", refused.name());
        refused
    }
}

/// One subscriber's share of its client's account: its slot, the selectors it was charged
/// for, and any bytes set aside for a compile under way. Its stream's body holds it, so
/// everything is given back when the stream ends.
#[derive(Debug)]
pub struct ClientHold {
    shared: Arc<Shared>,
    client: ClientId,
    selectors: Vec<Selector>,
    reserved_bytes: usize,
}

impl ClientHold {
    /// Sets `bytes` aside before compiling a selector this client does not hold yet, refused
    /// when the client's selectors and reservations would then exceed its limit.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), ClientLimitError> {
        let limit = self.shared.limits.selector_bytes;
        let mut accounts = self.shared.lock();
        let account = accounts.entry(self.client).or_default();
        if account.selector_bytes + account.reserved_bytes + bytes > limit {
            drop(accounts);
            return Err(self
                .shared
                .refuse(self.client, ClientLimitError::SelectorBytes { limit }));
        }
        account.reserved_bytes += bytes;
        self.reserved_bytes += bytes;
        Ok(())
    }

    /// Charges `selector` to the client, once per client: a selector another of its
    /// subscribers holds costs nothing more. Gives back this hold's reservation first.
    pub fn charge(&mut self, selector: &Selector) -> Result<(), ClientLimitError> {
        let limit = self.shared.limits.selector_bytes;
        let bytes = selector.bytes();
        let mut accounts = self.shared.lock();
        let account = accounts.entry(self.client).or_default();
        account.reserved_bytes -= self.reserved_bytes;
        self.reserved_bytes = 0;
        if bytes == 0 {
            return Ok(());
        }
        if let Some(holders) = account.selectors.get_mut(selector) {
            *holders += 1;
        } else {
            if account.selector_bytes + bytes > limit {
                drop(accounts);
                return Err(self
                    .shared
                    .refuse(self.client, ClientLimitError::SelectorBytes { limit }));
            }
            account.selector_bytes += bytes;
            account.selectors.insert(selector.clone(), 1);
        }
        self.selectors.push(selector.clone());
        Ok(())
    }
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        let mut accounts = self.shared.lock();
        let Some(account) = accounts.get_mut(&self.client) else {
            return;
        };
        account.subscribers = account.subscribers.saturating_sub(1);
        account.reserved_bytes = account.reserved_bytes.saturating_sub(self.reserved_bytes);
        for selector in self.selectors.drain(..) {
            if let Some(holders) = account.selectors.get_mut(&selector) {
                *holders -= 1;
                if *holders == 0 {
                    account.selectors.remove(&selector);
                    account.selector_bytes =
                        account.selector_bytes.saturating_sub(selector.bytes());
                }
            }
        }
        if account.is_empty() {
            accounts.remove(&self.client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{SelectorCache, SelectorLimits};

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn nets(list: &[&str]) -> Vec<Network> {
        list.iter().map(|n| n.parse().expect("a network")).collect()
    }

    fn clients(subscribers: usize, selector_bytes: usize) -> Clients {
        Clients::new(
            ClientLimits {
                subscribers,
                selector_bytes,
            },
            Vec::new(),
            Metrics::new(),
        )
    }

    /// IPv6 addresses of one /64 are one client; IPv4-mapped ones are their IPv4 address.
    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        assert_eq!(
            ClientId::of(ip("2001:db8:1:2::1")),
            ClientId::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            ClientId::of(ip("2001:db8:1:2::1")),
            ClientId::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientId::of(ip("::ffff:10.0.0.1")),
            ClientId::V4(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            ClientId::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    /// X-Forwarded-For counts only from a trusted peer, and then its rightmost address that
    /// is not trusted is the client; a spoofed left part is never reached.
    #[test]
    fn forwarded_for_is_honoured_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let spoofed = ["6.6.6.6"];
        // An untrusted peer: its header changes nothing.
        assert_eq!(
            client_of(Some(ip("1.2.3.4")), spoofed.into_iter(), &trusted),
            ClientId::of(ip("1.2.3.4"))
        );
        // A trusted proxy: the address it appended.
        assert_eq!(
            client_of(
                Some(ip("10.0.0.5")),
                ["6.6.6.6, 5.5.5.5"].into_iter(),
                &trusted
            ),
            ClientId::of(ip("5.5.5.5"))
        );
        // Two trusted hops, the header split over two lines.
        assert_eq!(
            client_of(
                Some(ip("10.0.0.5")),
                ["6.6.6.6, 5.5.5.5", "10.0.0.9"].into_iter(),
                &trusted
            ),
            ClientId::of(ip("5.5.5.5"))
        );
        // Garbage where an address should be: the last hop known.
        assert_eq!(
            client_of(Some(ip("10.0.0.5")), ["junk"].into_iter(), &trusted),
            ClientId::of(ip("10.0.0.5"))
        );
        // No header from a trusted proxy: the proxy.
        assert_eq!(
            client_of(Some(ip("10.0.0.5")), std::iter::empty(), &trusted),
            ClientId::of(ip("10.0.0.5"))
        );
        assert_eq!(
            client_of(None, std::iter::empty(), &trusted),
            ClientId::Unknown
        );
    }

    /// A client's subscriber slots are bounded, given back on drop, and other clients are
    /// unaffected.
    #[test]
    fn subscriber_slots_are_per_client() {
        let clients = clients(2, 1 << 20);
        let a = ClientId::of(ip("127.0.0.1"));
        let b = ClientId::of(ip("127.0.0.2"));
        let first = clients.admit(a).expect("first");
        let _second = clients.admit(a).expect("second");
        assert_eq!(
            clients.admit(a).map(|_| ()),
            Err(ClientLimitError::Subscribers { limit: 2 })
        );
        let _other = clients.admit(b).expect("another client");
        drop(first);
        let _third = clients.admit(a).expect("a slot came back");
    }

    /// A selector is charged once per client however many of its subscribers hold it; a new
    /// one over the limit is refused; everything comes back when the holds drop.
    #[test]
    fn selector_bytes_are_charged_once_per_client() {
        let cache = SelectorCache::new(SelectorLimits::default());
        let one = cache.get("https://x/{a}").expect("valid");
        let two = cache.get("https://x/{b}").expect("valid");
        let clients = clients(100, one.bytes() + two.bytes() / 2);
        let a = ClientId::of(ip("127.0.0.1"));
        let mut holds = Vec::new();
        for _ in 0..10 {
            let mut hold = clients.admit(a).expect("slot");
            hold.charge(&one).expect("shared selector costs once");
            holds.push(hold);
        }
        assert_eq!(clients.selector_bytes(a), one.bytes());
        let mut hold = clients.admit(a).expect("slot");
        assert!(matches!(
            hold.charge(&two),
            Err(ClientLimitError::SelectorBytes { .. })
        ));
        hold.charge(&Selector::Exact("free".into()))
            .expect("exact topics cost nothing");
        drop(hold);
        holds.truncate(1);
        assert_eq!(clients.selector_bytes(a), one.bytes());
        drop(holds);
        assert_eq!(clients.selector_bytes(a), 0);
        assert!(clients.is_empty(), "an empty account is removed");
    }

    /// A reservation counts against the limit until the charge replaces it, so concurrent
    /// compiles cannot overrun it, and a hold dropped mid-compile gives it back.
    #[test]
    fn reservations_count_until_charged() {
        let clients = clients(100, 100);
        let a = ClientId::of(ip("127.0.0.1"));
        let mut first = clients.admit(a).expect("slot");
        first.reserve(60).expect("fits");
        let mut second = clients.admit(a).expect("slot");
        assert!(
            second.reserve(60).is_err(),
            "the first one's reservation counts"
        );
        first
            .charge(&Selector::Any)
            .expect("a free selector settles the reservation");
        second.reserve(60).expect("fits again");
        drop(second);
        assert_eq!(clients.selector_bytes(a), 0);
    }
}
