//! The cluster store: overlay network definitions, cluster-wide IPAM, endpoint and host
//! registrations in etcd. No consensus of our own: etcd transactions make allocations
//! unique, leases make a dead host's registrations disappear.
//!
//! Keys (under `/vswitchd/`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `store-id` | a random id, made by the first host (tells a store that lost its data) | none |
//! | `networks/NAME` | the network (JSON) | none |
//! | `vni/ID` | network name (makes VNIs unique) | none |
//! | `hosts/ADDR` | host info (JSON) | the host's |
//! | `ipam/NET/IP` | endpoint id (IPv4 and IPv6 addresses alike) | none: held while the host is down |
//! | `macs/NET/MAC` | endpoint id | none: held while the host is down |
//! | `subnets/NET/A.B.C.D-24` | host address (routed overlays) | none: held while the host is down |
//! | `endpoints/NET/ID` | endpoint (JSON: MAC, addresses, host) | the owning host's |
//!
//! A host keeps its lease alive from a background thread; if the lease is lost (etcd
//! unreachable for longer than its TTL) the controller registers again with a new one.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::etcd::{Compare, Etcd, KeptLease, Op, Txn};
use crate::model::{Endpoint, Network};

#[cfg(test)]
mod tests;

pub const PREFIX: &str = "/vswitchd/";
/// Seconds a host's registrations outlive its last keep-alive.
pub const LEASE_TTL: i64 = 10;

/// An endpoint as other hosts see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub id: String,
    pub network: String,
    pub sandbox: String,
    #[serde(with = "crate::model::mac_serde")]
    pub mac: dataplane::wire::MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    /// Underlay address of the host it lives on.
    pub host: Ipv4Addr,
    /// `--alias` names: they resolve on every host of the network, like Docker's
    /// network aliases on an overlay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A host as registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub advertise: Ipv4Addr,
    pub version: String,
    /// The daemon's identity (from its state directory), the same under any address.
    #[serde(default)]
    pub id: String,
    /// The UDP port its VXLAN socket listens on (`vswitchd --vxlan-port`): other hosts
    /// send this host's VXLAN traffic there.
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
}

fn default_vxlan_port() -> u16 {
    crate::controller::VXLAN_PORT
}

/// What a watch event means to the controller.
#[derive(Clone, Debug)]
pub enum Change {
    Network(Network),
    NetworkGone(String),
    /// A host registered (or registered again), with its VXLAN port.
    Host(Ipv4Addr, u16),
    HostGone(Ipv4Addr),
    Endpoint(RemoteEndpoint),
    EndpointGone { network: String, id: String },
    /// A host's subnet of a routed overlay network.
    Subnet { network: String, subnet: crate::model::Ipv4Cidr, host: Ipv4Addr },
    SubnetGone { network: String, subnet: crate::model::Ipv4Cidr },
    /// Everything is to be reloaded (watch resynchronised).
    Reload,
}

/// This host's connection to the cluster store.
pub struct Cluster {
    pub etcd: Etcd,
    pub host: Ipv4Addr,
    /// This daemon's identity ([`HostInfo::id`]).
    pub host_id: String,
    /// This daemon's VXLAN port ([`HostInfo::vxlan_port`]).
    pub vxlan_port: u16,
    lease: std::sync::Mutex<Option<KeptLease>>,
    lost: Arc<AtomicBool>,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("cluster store: {e}")
}

impl Cluster {
    /// Connects to etcd (`etcd://HOST:PORT` or `http://HOST:PORT`, comma-separated) and
    /// registers this host.
    pub fn connect(url: &str, host: Ipv4Addr, host_id: String, vxlan_port: u16) -> Result<Cluster, String> {
        let urls: Vec<String> = url
            .split(',')
            .map(|u| u.trim().replace("etcd://", "http://"))
            .map(|u| if u.starts_with("http://") { u } else { format!("http://{u}") })
            .collect();
        let refs: Vec<&str> = urls.iter().map(|s| s.as_str()).collect();
        let etcd = Etcd::connect(&refs).map_err(err)?;
        let c = Cluster { etcd, host, host_id, vxlan_port, lease: std::sync::Mutex::new(None), lost: Arc::new(AtomicBool::new(false)) };
        c.register()?;
        Ok(c)
    }

    /// (Re)registers this host with a fresh lease.
    pub fn register(&self) -> Result<i64, String> {
        let lost = self.lost.clone();
        let kept = crate::etcd::KeptLease::grant(&self.etcd, LEASE_TTL, move || lost.store(true, Ordering::SeqCst)).map_err(err)?;
        let id = kept.id();
        let info = HostInfo { advertise: self.host, version: env!("CARGO_PKG_VERSION").into(), id: self.host_id.clone(), vxlan_port: self.vxlan_port };
        self.etcd.put(format!("{PREFIX}hosts/{}", self.host), serde_json::to_vec(&info).unwrap_or_default(), Some(id)).map_err(err)?;
        self.lost.store(false, Ordering::SeqCst);
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(kept);
        Ok(id)
    }

    /// True once the lease was lost (the controller then registers again).
    pub fn lease_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn lease_id(&self) -> Option<i64> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|l| l.id())
    }

    /// The store's identity: a random id the first host to find none writes. A host that
    /// remembers another id finds a store that lost its data (or another cluster).
    pub fn store_id(&self) -> Result<String, String> {
        let k = format!("{PREFIX}store-id");
        for _ in 0..4 {
            if let Some(kv) = self.etcd.get(&k).map_err(err)? {
                return Ok(String::from_utf8_lossy(&kv.value).into_owned());
            }
            let id = crate::model::random_id();
            if self.etcd.create(&k, &id, None).map_err(err)? {
                return Ok(id);
            }
        }
        Err(err("store-id: could not be read or written"))
    }

    /// Every overlay network defined in the cluster.
    pub fn networks(&self) -> Result<Vec<Network>, String> {
        let (kvs, _) = self.etcd.get_prefix(format!("{PREFIX}networks/")).map_err(err)?;
        Ok(kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
    }

    /// Defines a network cluster-wide; an error if the name or the VNI is taken or the
    /// subnet overlaps another cluster network's. Every definition also rewrites the
    /// `netdefs` key, and the transaction requires it unchanged since the subnets were
    /// checked: two hosts defining overlapping networks at the same moment cannot both
    /// succeed (the loser checks again and is refused).
    pub fn create_network(&self, n: &Network) -> Result<Result<(), String>, String> {
        let nk = network_key(&n.name);
        let vk = format!("{PREFIX}vni/{}", n.vni.unwrap_or(0));
        let gk = format!("{PREFIX}netdefs");
        for _ in 0..16 {
            let guard = self.etcd.get(&gk).map_err(err)?.map_or(0, |kv| kv.mod_revision);
            if let Some(o) = self.networks()?.into_iter().find(|o| o.name != n.name && o.range.unwrap_or(o.subnet).overlaps(&n.subnet)) {
                return Ok(Err(format!("subnet {} overlaps the subnet {} of network {} (cluster)", n.subnet, o.range.unwrap_or(o.subnet), o.name)));
            }
            let unchanged = if guard == 0 { Compare::absent(gk.as_bytes()) } else { Compare::mod_revision_is(gk.as_bytes(), guard) };
            let t = Txn::new()
                .when(Compare::absent(nk.as_bytes()))
                .when(Compare::absent(vk.as_bytes()))
                .when(unchanged)
                .and_then(Op::put(nk.as_bytes(), serde_json::to_vec(n).unwrap_or_default(), None))
                .and_then(Op::put(vk.as_bytes(), n.name.as_bytes(), None))
                .and_then(Op::put(gk.as_bytes(), n.name.as_bytes(), None));
            if self.etcd.txn(&t).map_err(err)?.succeeded {
                return Ok(Ok(()));
            }
            if self.etcd.get(&nk).map_err(err)?.is_some() {
                return Ok(Err(format!("network {} already exists in the cluster", n.name)));
            }
            if self.etcd.get(&vk).map_err(err)?.is_some() {
                return Ok(Err(format!("vni {}: already used in the cluster", n.vni.unwrap_or(0))));
            }
            // Another network was defined meanwhile: check the subnets again.
        }
        Err("network definitions: too much contention in the cluster store; try again".to_string())
    }

    /// Removes a network definition (refused while any host has endpoints on it, and
    /// without `force` while any address is claimed on it). The checks and the deletes
    /// are one transaction that requires no endpoint (and without `force` no address
    /// claim) under the network; claims and endpoint records in turn require the
    /// network's definition ([`Cluster::claim`], [`Cluster::put_endpoint`]). So a
    /// `connect` on another host and this removal cannot both succeed: whichever lands
    /// second is refused.
    pub fn delete_network(&self, n: &Network, force: bool) -> Result<Result<(), String>, String> {
        let eps_prefix = format!("{PREFIX}endpoints/{}/", n.name);
        let ipam_prefix = format!("{PREFIX}ipam/{}/", n.name);
        for _ in 0..16 {
            let (eps, _) = self.etcd.count_prefix(&eps_prefix).map_err(err)?;
            if eps > 0 {
                let what = if eps == 1 { "endpoint" } else { "endpoints" };
                return Ok(Err(format!("network {} has {eps} {what} in the cluster; disconnect them first", n.name)));
            }
            // Endpoints of hosts that are down hold their addresses (not their records).
            let held: Vec<std::net::IpAddr> = self.used_ips(&n.name)?;
            if !held.is_empty() && !force {
                return Ok(Err(held_addresses(&n.name, &held)));
            }
            let mut t = Txn::new().when(Compare::none_with_prefix(&eps_prefix));
            if !force {
                t = t.when(Compare::none_with_prefix(&ipam_prefix));
            }
            let t = t
                .and_then(Op::DeletePrefix(ipam_prefix.clone().into_bytes()))
                .and_then(Op::DeletePrefix(format!("{PREFIX}macs/{}/", n.name).into_bytes()))
                .and_then(Op::delete(network_key(&n.name)))
                .and_then(Op::delete(format!("{PREFIX}vni/{}", n.vni.unwrap_or(0))))
                .and_then(Op::DeletePrefix(format!("{PREFIX}subnets/{}/", n.name).into_bytes()));
            if self.etcd.txn(&t).map_err(err)?.succeeded {
                return Ok(Ok(()));
            }
            // An endpoint was connected (or an address claimed) meanwhile: check again.
        }
        Err(format!("network {}: too much contention in the cluster store; try again", n.name))
    }

    /// Addresses of one family taken on a network, cluster-wide (`A` is `Ipv4Addr` or
    /// `Ipv6Addr`: the claims of the other family do not parse as it).
    pub fn used_ips<A: std::str::FromStr>(&self, network: &str) -> Result<Vec<A>, String> {
        let p = format!("{PREFIX}ipam/{network}/");
        let (kvs, _) = self.etcd.get_prefix(&p).map_err(err)?;
        Ok(kvs.iter().filter_map(|kv| std::str::from_utf8(&kv.key).ok()?.strip_prefix(&p)?.parse().ok()).collect())
    }

    /// Claims key `k` of `network` for endpoint `id`: true if it was free, or already
    /// this endpoint's (a restart re-claims what it holds). No lease: a claim stays while
    /// its host is down (only the endpoint record goes with the lease), so nobody else
    /// is handed it meanwhile. A new claim requires the network's definition in the same
    /// transaction: an error if the network was removed from the cluster.
    fn claim(&self, network: &str, k: &str, id: &str) -> Result<bool, String> {
        let t = Txn::new()
            .when(Compare::absent(k))
            .when(Compare::exists(network_key(network)))
            .and_then(Op::put(k, id, None))
            .or_else(Op::get(k));
        let r = self.etcd.txn(&t).map_err(err)?;
        if r.succeeded {
            return Ok(true);
        }
        match r.first_get().first() {
            Some(kv) => Ok(kv.value == id.as_bytes()),
            None => Err(network_removed(network)),
        }
    }

    /// Claims `ip` (IPv4 or IPv6) on `network` for endpoint `id` (see [`Cluster::claim`]).
    pub fn claim_ip(&self, network: &str, ip: std::net::IpAddr, id: &str) -> Result<bool, String> {
        self.claim(network, &format!("{PREFIX}ipam/{network}/{ip}"), id)
    }

    /// Claims `mac` on `network` for endpoint `id` (see [`Cluster::claim`]).
    pub fn claim_mac(&self, network: &str, mac: dataplane::wire::MacAddr, id: &str) -> Result<bool, String> {
        self.claim(network, &format!("{PREFIX}macs/{network}/{mac}"), id)
    }

    /// Who holds claim `k` of `network`, for a refusal: the sandbox and host of its
    /// published endpoint, or an endpoint of a host that is down (claims outlive their
    /// host's lease).
    fn holder(&self, network: &str, k: &str) -> Result<String, String> {
        let Some(claim) = self.etcd.get(k).map_err(err)? else { return Ok("no endpoint any more; try again".into()) };
        let id = String::from_utf8_lossy(&claim.value).into_owned();
        let ep = self.etcd.get(format!("{PREFIX}endpoints/{network}/{id}")).map_err(err)?;
        Ok(match ep.and_then(|kv| serde_json::from_slice::<RemoteEndpoint>(&kv.value).ok()) {
            Some(e) => format!("by sandbox {} on host {}", e.sandbox, e.host),
            None => format!("held by an endpoint of a host that is down: endpoint id {}", id.get(..12).unwrap_or(&id)),
        })
    }

    /// [`Cluster::holder`] of address `ip` on `network`.
    pub fn ip_holder(&self, network: &str, ip: std::net::IpAddr) -> Result<String, String> {
        self.holder(network, &format!("{PREFIX}ipam/{network}/{ip}"))
    }

    /// [`Cluster::holder`] of `mac` on `network`.
    pub fn mac_holder(&self, network: &str, mac: dataplane::wire::MacAddr) -> Result<String, String> {
        self.holder(network, &format!("{PREFIX}macs/{network}/{mac}"))
    }

    /// Gives claim `k` back if it is still endpoint `id`'s (one transaction): a claim
    /// that went to another endpoint meanwhile (given out while this host was away)
    /// is left alone; deleting it handed a live address out twice.
    fn release(&self, k: &str, id: &str) -> Result<(), String> {
        let t = Txn::new().when(Compare::value_is(k, id)).and_then(Op::delete(k));
        self.etcd.txn(&t).map(|_| ()).map_err(err)
    }

    pub fn release_mac(&self, network: &str, mac: dataplane::wire::MacAddr, id: &str) -> Result<(), String> {
        self.release(&format!("{PREFIX}macs/{network}/{mac}"), id)
    }

    pub fn release_ip(&self, network: &str, ip: std::net::IpAddr, id: &str) -> Result<(), String> {
        self.release(&format!("{PREFIX}ipam/{network}/{ip}"), id)
    }

    /// Publishes a local endpoint under this host's lease, after making sure its
    /// addresses are still claimed for it (claimed again if free). An address claimed by
    /// another endpoint meanwhile is a conflict: the endpoint is not published
    /// (`Ok(Err(why))`); `Err` is the store's failure.
    pub fn put_endpoint(&self, ep: &Endpoint) -> Result<Result<(), String>, String> {
        let r = RemoteEndpoint {
            id: ep.id.clone(),
            network: ep.network.clone(),
            sandbox: ep.sandbox.clone(),
            mac: ep.mac,
            ip: ep.ip,
            ip6: ep.ip6,
            host: self.host,
            aliases: ep.aliases.clone(),
        };
        let lease = self.lease_id();
        for ip in std::iter::once(std::net::IpAddr::V4(ep.ip)).chain(ep.ip6.map(std::net::IpAddr::V6)) {
            if !self.claim_ip(&ep.network, ip, &ep.id)? {
                return Ok(Err(format!("address {ip} is now claimed by another endpoint of network {} (it was given out while this host was away or this host ran without the cluster store); not published and detached — disconnect and connect {} again for a new address", ep.network, ep.sandbox)));
            }
        }
        if !self.claim_mac(&ep.network, ep.mac, &ep.id)? {
            return Ok(Err(format!("MAC {} is now claimed by another endpoint of network {} (given out while this host was away or this host ran without the cluster store); not published and detached — disconnect and connect {} again", ep.mac, ep.network, ep.sandbox)));
        }
        let k = format!("{PREFIX}endpoints/{}/{}", ep.network, ep.id);
        let t = Txn::new()
            .when(Compare::exists(network_key(&ep.network)))
            .and_then(Op::put(k, serde_json::to_vec(&r).unwrap_or_default(), lease));
        match self.etcd.txn(&t).map_err(err)?.succeeded {
            true => Ok(Ok(())),
            false => Ok(Err(format!("{}; endpoint of {} not published", network_removed(&ep.network), ep.sandbox))),
        }
    }

    pub fn delete_endpoint(&self, ep: &Endpoint) -> Result<(), String> {
        self.etcd.delete(format!("{PREFIX}endpoints/{}/{}", ep.network, ep.id)).map_err(err)?;
        if let Some(ip6) = ep.ip6 {
            self.release_ip(&ep.network, ip6.into(), &ep.id)?;
        }
        self.release_mac(&ep.network, ep.mac, &ep.id)?;
        self.release_ip(&ep.network, ep.ip.into(), &ep.id)
    }

    /// Leases a /24 of `range` for this host on routed overlay network `network`,
    /// preferring `prefer` (what it held before a restart).
    pub fn lease_subnet(&self, network: &str, range: crate::model::Ipv4Cidr, prefer: Option<crate::model::Ipv4Cidr>) -> Result<crate::model::Ipv4Cidr, String> {
        let key = |c: &crate::model::Ipv4Cidr| format!("{PREFIX}subnets/{network}/{}-{}", c.network(), c.prefix_len);
        let mine = self.host.to_string();
        let base = u32::from(range.network());
        let count = 1u32 << (24 - range.prefix_len.min(24)) as u32;
        let candidates = prefer.into_iter().chain((0..count).map(|i| crate::model::Ipv4Cidr { addr: Ipv4Addr::from(base + (i << 8)), prefix_len: 24 }));
        // No lease: a host's /24 stays its own while it is down (its sandboxes keep
        // their addresses), and across a lost lease.
        for (i, c) in candidates.enumerate() {
            let k = key(&c);
            match self.etcd.get(&k).map_err(err)? {
                Some(kv) if kv.value == mine.as_bytes() => return Ok(c),
                Some(kv) => {
                    // The subnet this host's sandboxes use, held under another address:
                    // this host came back with a new --advertise. Take it over if that
                    // address is not a live host, or is this very daemon's registration
                    // under its old address (same identity, not yet expired).
                    let owner = String::from_utf8_lossy(&kv.value).into_owned();
                    let owner_host = self.etcd.get(format!("{PREFIX}hosts/{owner}")).map_err(err)?;
                    let ours = |kv: &crate::etcd::KeyValue| serde_json::from_slice::<HostInfo>(&kv.value).is_ok_and(|h| !h.id.is_empty() && h.id == self.host_id);
                    if i == 0 && prefer.is_some() && owner_host.as_ref().is_none_or(ours) {
                        let t = Txn::new().when(Compare::value_is(&k, &kv.value)).and_then(Op::put(&k, &mine, None));
                        if self.etcd.txn(&t).map_err(err)?.succeeded {
                            tracing::info!(network, subnet = %c, previous = %owner, "took over this host's subnet from its previous address");
                            return Ok(c);
                        }
                    }
                }
                None => {
                    if self.etcd.create(&k, &mine, None).map_err(err)? {
                        return Ok(c);
                    }
                }
            }
        }
        Err(format!("network {network}: no free /24 left in {range}"))
    }

    /// The current hosts and endpoints (for a full reload) and the revision to watch from.
    pub fn snapshot(&self) -> Result<(Vec<(Ipv4Addr, u16)>, Vec<RemoteEndpoint>, Vec<Network>, i64), String> {
        let (kvs, rev) = self.etcd.get_prefix(PREFIX).map_err(err)?;
        let mut hosts = Vec::new();
        let mut eps = Vec::new();
        let mut nets = Vec::new();
        for kv in &kvs {
            match parse_key(&kv.key) {
                Some(Key::Host(ip)) => hosts.push((ip, host_vxlan_port(&kv.value))),
                Some(Key::Endpoint) => {
                    if let Ok(e) = serde_json::from_slice::<RemoteEndpoint>(&kv.value) {
                        eps.push(e);
                    }
                }
                Some(Key::Network(_)) => {
                    if let Ok(n) = serde_json::from_slice::<Network>(&kv.value) {
                        nets.push(n);
                    }
                }
                _ => {}
            }
        }
        Ok((hosts, eps, nets, rev))
    }

    /// Every leased subnet: (network, subnet, host).
    pub fn subnets(&self) -> Result<Vec<(String, crate::model::Ipv4Cidr, Ipv4Addr)>, String> {
        let (kvs, _) = self.etcd.get_prefix(format!("{PREFIX}subnets/")).map_err(err)?;
        Ok(kvs.iter().filter_map(|kv| {
            let (n, c) = subnet_key(&kv.key)?;
            Some((n, c, std::str::from_utf8(&kv.value).ok()?.parse().ok()?))
        }).collect())
    }

    /// Watches the cluster from `rev` (exclusive) and calls `f` for every change, until
    /// `stop` is set. Reconnects on its own.
    pub fn watch(&self, rev: i64, stop: &AtomicBool, mut f: impl FnMut(Change)) -> Result<(), String> {
        self.etcd
            .watch_prefix(PREFIX, rev + 1, stop, |ev| {
                use crate::etcd::WatchEvent;
                match ev {
                    WatchEvent::Put(kv) => match parse_key(&kv.key) {
                        Some(Key::Host(ip)) => f(Change::Host(ip, host_vxlan_port(&kv.value))),
                        Some(Key::Endpoint) => {
                            if let Ok(e) = serde_json::from_slice::<RemoteEndpoint>(&kv.value) {
                                f(Change::Endpoint(e));
                            }
                        }
                        Some(Key::Network(_)) => {
                            if let Ok(n) = serde_json::from_slice::<Network>(&kv.value) {
                                f(Change::Network(n));
                            }
                        }
                        _ => {
                            if let Some((network, subnet)) = subnet_key(&kv.key) {
                                if let Some(host) = std::str::from_utf8(&kv.value).ok().and_then(|v| v.parse().ok()) {
                                    f(Change::Subnet { network, subnet, host });
                                }
                            }
                        }
                    },
                    WatchEvent::Delete { key, .. } => match parse_key(&key) {
                        Some(Key::Host(ip)) => f(Change::HostGone(ip)),
                        Some(Key::Network(n)) => f(Change::NetworkGone(n)),
                        _ => {
                            if let Some((net, id)) = endpoint_key(&key) {
                                f(Change::EndpointGone { network: net, id });
                            } else if let Some((network, subnet)) = subnet_key(&key) {
                                f(Change::SubnetGone { network, subnet });
                            }
                        }
                    },
                    WatchEvent::Resync { .. } => f(Change::Reload),
                }
                !stop.load(Ordering::SeqCst)
            })
            .map_err(err)
    }
}

enum Key {
    Host(Ipv4Addr),
    Network(String),
    Endpoint,
    Other,
}

/// The VXLAN port of a host registration (the default for one that names none).
fn host_vxlan_port(value: &[u8]) -> u16 {
    serde_json::from_slice::<HostInfo>(value).map_or(default_vxlan_port(), |h| h.vxlan_port)
}

fn network_key(network: &str) -> String {
    format!("{PREFIX}networks/{network}")
}

fn network_removed(network: &str) -> String {
    format!("network {network}: removed from the cluster (by another host)")
}

/// The refusal of `network rm` while addresses are claimed on the network.
fn held_addresses(network: &str, held: &[std::net::IpAddr]) -> String {
    let shown: Vec<String> = held.iter().take(5).map(|ip| ip.to_string()).collect();
    let list = match held.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    };
    let (what, verb) = if held.len() == 1 { ("address", "is") } else { ("addresses", "are") };
    format!(
        "network {network}: {} {what} ({list}) {verb} held by endpoints that are not published — their hosts are down, or they are being connected right now; start those hosts and disconnect them first, or give them up with --force",
        held.len()
    )
}

fn parse_key(k: &[u8]) -> Option<Key> {
    let s = std::str::from_utf8(k).ok()?.strip_prefix(PREFIX)?;
    let mut it = s.split('/');
    Some(match (it.next(), it.next(), it.next()) {
        (Some("hosts"), Some(ip), None) => Key::Host(ip.parse().ok()?),
        (Some("networks"), Some(n), None) => Key::Network(n.to_string()),
        (Some("endpoints"), Some(_), Some(_)) => Key::Endpoint,
        _ => Key::Other,
    })
}

fn subnet_key(k: &[u8]) -> Option<(String, crate::model::Ipv4Cidr)> {
    let s = std::str::from_utf8(k).ok()?.strip_prefix(PREFIX)?.strip_prefix("subnets/")?;
    let (n, c) = s.split_once('/')?;
    let (a, l) = c.split_once('-')?;
    Some((n.to_string(), crate::model::Ipv4Cidr { addr: a.parse().ok()?, prefix_len: l.parse().ok()? }))
}

fn endpoint_key(k: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(k).ok()?.strip_prefix(PREFIX)?.strip_prefix("endpoints/")?;
    let (n, id) = s.split_once('/')?;
    Some((n.to_string(), id.to_string()))
}

/// Keeps `c` registered: re-registers (new lease, host key) whenever the lease was
/// lost, then calls `resync` (the controller's whole sync: networks defined again if the
/// store lost them, endpoints and claims published again). Runs until `stop`.
pub fn keeper(c: Arc<Cluster>, stop: Arc<AtomicBool>, resync: impl Fn() + Send + 'static) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if c.lease_lost() && c.register().is_ok() {
                tracing::info!("cluster lease renewed after loss; synchronising again");
                resync();
            }
        }
    });
}
