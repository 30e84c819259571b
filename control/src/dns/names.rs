//! The name table: which names each sandbox can resolve locally.
//!
//! For every network, the endpoints on it: (sandbox name, aliases, IPv4, optional IPv6).
//! A sandbox S resolves, from the networks S itself is on and only those:
//!
//! * `N`: a sandbox name or alias on any of S's networks. Networks are tried in name order
//!   and the first one that knows `N` answers (as Docker does when a container is on
//!   several networks); all endpoints of that network sharing `N` are returned.
//! * `N.NETWORK`: the same, restricted to that network (tried when plain `N` is unknown).
//! * reverse names (`in-addr.arpa`, `ip6.arpa`) of the addresses of those endpoints, which
//!   map to `SANDBOX.NETWORK` (Docker answers `CONTAINER.NETWORK` on user-defined networks;
//!   the network suffix tells which interface the address belongs to).
//!
//! Keys are lowercase without a trailing dot (see [`crate::dns::wire::Name::key`]), so
//! lookups are case-insensitive. Several endpoints sharing a name come back in rotating
//! order: each lookup of that name starts one further (a per-name atomic counter, so the
//! table is read through a shared `Arc` without locks).
//!
//! The table is a plain value, changed with [`NameTable::set_endpoint`] and friends; each
//! change re-indexes only the network concerned. The server reads a snapshot of it
//! (see [`crate::dns::DnsServer::update_names`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One sandbox's endpoint on one network, as the DNS server sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// The sandbox's name (also a DNS name on the network).
    pub sandbox: String,
    /// More names of this endpoint on this network (Docker's `--network-alias`).
    pub aliases: Vec<String>,
    /// IPv4 address on the network.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address on the network.
    pub ipv6: Option<Ipv6Addr>,
}

/// Addresses of a name, in the order to answer them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addrs {
    /// For A queries.
    pub v4: Vec<Ipv4Addr>,
    /// For AAAA queries.
    pub v6: Vec<Ipv6Addr>,
}

#[derive(Debug, Default)]
struct Entry {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    next: AtomicUsize,
}

impl Clone for Entry {
    fn clone(&self) -> Entry {
        Entry { v4: self.v4.clone(), v6: self.v6.clone(), next: AtomicUsize::new(self.next.load(Ordering::Relaxed)) }
    }
}

impl Entry {
    fn rotated(&self) -> Addrs {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let mut a = Addrs { v4: self.v4.clone(), v6: self.v6.clone() };
        if !a.v4.is_empty() {
            let n = k % a.v4.len();
            a.v4.rotate_left(n);
        }
        if !a.v6.is_empty() {
            let n = k % a.v6.len();
            a.v6.rotate_left(n);
        }
        a
    }
}

#[derive(Clone, Debug, Default)]
struct Net {
    /// Lowercase network name.
    key: String,
    /// By sandbox name.
    endpoints: BTreeMap<String, DnsEndpoint>,
    /// Lowercase name → addresses.
    names: HashMap<String, Entry>,
    /// Lowercase sandbox name → that sandbox's addresses alone: what `NAME.NETWORK`
    /// answers when NAME is a sandbox (an alias equal to a sandbox's name must not make
    /// the sandbox's own qualified name ambiguous).
    own: HashMap<String, Entry>,
    /// Address → sandbox name (the first in name order if shared).
    ptr: HashMap<IpAddr, String>,
}

impl Net {
    fn reindex(&mut self) {
        self.names.clear();
        self.own.clear();
        self.ptr.clear();
        for ep in self.endpoints.values() {
            if let Some(k) = key_of(&ep.sandbox) {
                let e = self.own.entry(k).or_default();
                e.v4.extend(ep.ipv4);
                e.v6.extend(ep.ipv6);
            }
            let mut keys: Vec<String> = std::iter::once(&ep.sandbox).chain(&ep.aliases).filter_map(|n| key_of(n)).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let e = self.names.entry(k).or_default();
                if let Some(ip) = ep.ipv4.filter(|ip| !e.v4.contains(ip)) {
                    e.v4.push(ip);
                }
                if let Some(ip) = ep.ipv6.filter(|ip| !e.v6.contains(ip)) {
                    e.v6.push(ip);
                }
            }
            for ip in ep.ipv4.map(IpAddr::V4).into_iter().chain(ep.ipv6.map(IpAddr::V6)) {
                self.ptr.entry(ip).or_insert_with(|| ep.sandbox.clone());
            }
        }
    }
}

/// The lookup key of a configured name: lowercase, no trailing dot; `None` if empty.
fn key_of(name: &str) -> Option<String> {
    let k = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!k.is_empty()).then_some(k)
}

/// Names per network and which sandbox sees which networks. Cheap to clone (copied on
/// write by the server); reads never lock.
#[derive(Clone, Debug, Default)]
pub struct NameTable {
    /// By network name.
    nets: BTreeMap<String, Net>,
    /// Sandbox name → its networks, in name order.
    by_sandbox: HashMap<String, Vec<String>>,
}

impl NameTable {
    /// An empty table.
    pub fn new() -> NameTable {
        NameTable::default()
    }

    /// Adds the endpoint of `ep.sandbox` on `network`, or replaces it.
    pub fn set_endpoint(&mut self, network: &str, ep: DnsEndpoint) {
        let net = self.nets.entry(network.to_string()).or_insert_with(|| Net {
            key: network.to_ascii_lowercase(),
            ..Default::default()
        });
        let sandbox = ep.sandbox.clone();
        net.endpoints.insert(sandbox.clone(), ep);
        net.reindex();
        let list = self.by_sandbox.entry(sandbox).or_default();
        if let Err(i) = list.binary_search_by(|n| n.as_str().cmp(network)) {
            list.insert(i, network.to_string());
        }
    }

    /// Removes the endpoint of `sandbox` on `network`; false if there was none.
    pub fn remove_endpoint(&mut self, network: &str, sandbox: &str) -> bool {
        let Some(net) = self.nets.get_mut(network) else { return false };
        if net.endpoints.remove(sandbox).is_none() {
            return false;
        }
        if net.endpoints.is_empty() {
            self.nets.remove(network);
        } else {
            net.reindex();
        }
        if let Some(list) = self.by_sandbox.get_mut(sandbox) {
            list.retain(|n| n != network);
            if list.is_empty() {
                self.by_sandbox.remove(sandbox);
            }
        }
        true
    }

    /// Removes every endpoint of `sandbox`.
    pub fn remove_sandbox(&mut self, sandbox: &str) {
        for net in self.by_sandbox.get(sandbox).cloned().unwrap_or_default() {
            self.remove_endpoint(&net, sandbox);
        }
    }

    /// Removes a network and all endpoints on it.
    pub fn remove_network(&mut self, network: &str) {
        let sandboxes: Vec<String> = match self.nets.get(network) {
            Some(n) => n.endpoints.keys().cloned().collect(),
            None => return,
        };
        for sb in sandboxes {
            self.remove_endpoint(network, &sb);
        }
    }

    /// The networks `sandbox` is on, in name order.
    pub fn networks_of(&self, sandbox: &str) -> &[String] {
        self.by_sandbox.get(sandbox).map_or(&[], |v| v.as_slice())
    }

    /// The endpoints on `network`, by sandbox name.
    pub fn endpoints(&self, network: &str) -> impl Iterator<Item = &DnsEndpoint> + '_ {
        self.nets.get(network).into_iter().flat_map(|n| n.endpoints.values())
    }

    /// The number of endpoints over all networks.
    pub fn len(&self) -> usize {
        self.nets.values().map(|n| n.endpoints.len()).sum()
    }

    /// True if the table holds no endpoint.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The addresses `asker` gets for the name `key` (lowercase, no trailing dot), rotated;
    /// `None` if the name is not local for `asker`. The lists may both be empty only if the
    /// endpoints have no address.
    pub fn lookup_name(&self, asker: &str, key: &str) -> Option<Addrs> {
        let nets: Vec<&Net> = self.networks_of(asker).iter().filter_map(|n| self.nets.get(n)).collect();
        // SANDBOX.NETWORK: that sandbox alone, whatever aliases say.
        let own = nets.iter().find_map(|n| {
            let prefix = key.strip_suffix(n.key.as_str())?.strip_suffix('.')?;
            n.own.get(prefix)
        });
        if let Some(e) = own {
            return Some(e.rotated());
        }
        if let Some(e) = nets.iter().find_map(|n| n.names.get(key)) {
            return Some(e.rotated());
        }
        nets.iter().find_map(|n| {
            let prefix = key.strip_suffix(n.key.as_str())?.strip_suffix('.')?;
            n.names.get(prefix).map(Entry::rotated)
        })
    }

    /// The PTR target (`SANDBOX.NETWORK`, no trailing dot) of `ip` for `asker`, if `ip`
    /// belongs to an endpoint on one of its networks.
    pub fn lookup_addr(&self, asker: &str, ip: IpAddr) -> Option<String> {
        self.networks_of(asker).iter().filter_map(|n| self.nets.get(n)).find_map(|net| {
            let sb = net.ptr.get(&ip)?;
            Some(format!("{sb}.{}", net.key))
        })
    }
}

/// The address named by a reverse key (`4.3.2.1.in-addr.arpa`, or 32 nibbles and
/// `ip6.arpa`, lowercase, no trailing dot); `None` for anything else, including partial
/// reverse names.
pub fn parse_reverse(key: &str) -> Option<IpAddr> {
    if let Some(rest) = key.strip_suffix(".in-addr.arpa") {
        let mut o = [0u8; 4];
        let mut n = 0;
        for (i, part) in rest.split('.').enumerate() {
            if i >= 4 || part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            o[3 - i] = part.parse().ok()?;
            n += 1;
        }
        return (n == 4).then(|| IpAddr::V4(Ipv4Addr::from(o)));
    }
    let rest = key.strip_suffix(".ip6.arpa")?;
    let mut bytes = [0u8; 16];
    let mut n = 0;
    for (i, part) in rest.split('.').enumerate() {
        if i >= 32 || part.len() != 1 {
            return None;
        }
        let v = u8::from_str_radix(part, 16).ok()?;
        let idx = 31 - i;
        bytes[idx / 2] |= if idx % 2 == 0 { v << 4 } else { v };
        n += 1;
    }
    (n == 32).then(|| IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// The reverse name of an address (`d.c.b.a.in-addr.arpa` / nibbles + `ip6.arpa`), no
/// trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

#[cfg(test)]
#[path = "tests/names.rs"]
mod tests;
