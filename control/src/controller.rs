//! The controller: owns the desired state, validates requests, realises them in the
//! kernel (namespaces, links) and the dataplane (port handles, tables), and persists
//! every accepted change before acknowledging it. A refused request leaves state,
//! kernel and dataplane as they were.
//!
//! One controller per daemon, used under one mutex by the API threads; the workers
//! never see it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use dataplane::wire::MacAddr;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::api::{Connect, NetworkCreate, Request};
use crate::dp::Dp;
use crate::endpoint;
use crate::ipam;
use crate::model::{self, AttachedPort, Endpoint, EndpointKind, Ipv4Cidr, Network, PortKind, Sandbox, State};
use crate::netlink::{LinkChange, Netlink};
use crate::netns::{self, Netns};
use crate::store::FileStore;

pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_MAC_TABLE_SIZE: u32 = 65536;
pub const DEFAULT_MAC_AGING: u32 = 300;
/// Prefix of the switch-side veth names and of TAP names before they move.
pub const VETH_PREFIX: &str = "vsw";
pub const TAP_PREFIX: &str = "vst";

type R<T> = Result<T, String>;

fn encap_kind(e: crate::model::Encap) -> dataplane::encap::EncapKind {
    match e {
        crate::model::Encap::Vxlan => dataplane::encap::EncapKind::Vxlan,
        crate::model::Encap::Gre => dataplane::encap::EncapKind::Gre { key: true, csum: false },
        crate::model::Encap::Udp => dataplane::encap::EncapKind::Udp,
        // Not a tunnel encapsulation; MTU arithmetic uses `MESH_OVERHEAD`.
        crate::model::Encap::Mesh => dataplane::encap::EncapKind::Vxlan,
    }
}

/// Bytes an overlay network's encapsulation adds to each frame on the underlay.
fn overlay_overhead(e: crate::model::Encap) -> u32 {
    match e {
        crate::model::Encap::Mesh => MESH_OVERHEAD,
        e => dataplane::encap::overhead(encap_kind(e)) as u32,
    }
}

/// Bytes the mesh adds in front of an inner IP packet: outer IPv4 + UDP (28), session
/// header, kind and tag (33), relay header (65), network id (4), Ethernet (14).
pub const MESH_OVERHEAD: u32 = 28 + dataplane::mesh::wire::TRANSPORT_OVERHEAD as u32 + crate::mesh::RelayHeader::LEN as u32 + 4 + 14;

/// Descriptors kept free when the userland proxy opens listeners.
const PROXY_FD_RESERVE: usize = 256;

/// Default UDP port of the mesh (Weave's).
pub const MESH_PORT: u16 = 6783;

const NO_MESH: &str = "this vswitchd is not in a mesh (start it with --mesh-password, --mesh-peer, --mesh-allow or --mesh)";

/// `IP[:PORT]` of a mesh member (port 6783 when absent).
pub fn parse_mesh_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let a = match s.parse::<std::net::SocketAddr>() {
        Ok(a) => a,
        Err(_) => std::net::SocketAddr::new(s.parse::<std::net::IpAddr>().map_err(|_| "not IP or IP:PORT".to_string())?, MESH_PORT),
    };
    let std::net::IpAddr::V4(ip) = a.ip() else {
        return Err("the mesh runs over IPv4; give an IPv4 address".to_string());
    };
    check_unicast(ip)?;
    if a.port() == 0 {
        return Err("port 0 is not a port a member listens on".to_string());
    }
    Ok(a)
}

/// An address another host can have: not unspecified, loopback, broadcast or multicast.
pub fn check_unicast(ip: Ipv4Addr) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_broadcast() || ip.is_multicast() || ip.octets()[0] >= 240 {
        return Err(format!("{ip} is not the unicast address of another host"));
    }
    Ok(())
}

/// What a connect claimed in the cluster store, to give back if it fails later.
#[derive(Default)]
struct Claims {
    /// The endpoint they were claimed for.
    id: String,
    ips: Vec<std::net::IpAddr>,
    macs: Vec<MacAddr>,
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Host-level settings of the controller (daemon options, not persisted state).
#[derive(Clone, Debug)]
pub struct CtlOpts {
    /// Host ports handed out for `-p CONTAINER_PORT` without a host port.
    pub ephemeral_ports: (u16, u16),
    /// Relay published ports from 127.0.0.1 of the daemon's namespace.
    pub userland_proxy: bool,
    /// The interface towards the outside world, if any.
    pub uplink: Option<UplinkCfg>,
    /// This host's underlay address (tunnels to other hosts start here).
    pub advertise: Option<Ipv4Addr>,
    /// Other hosts (without a cluster store), with their VXLAN port: every overlay
    /// network is carried to each.
    pub peers: Vec<(Ipv4Addr, u16)>,
    /// UDP port of VXLAN.
    pub vxlan_port: u16,
    /// The cluster store (`etcd://HOST:PORT`).
    pub cluster: Option<String>,
    /// `--leave-cluster`: remove the overlay networks of the store this host was in
    /// (and their endpoints and ports) from this host.
    pub leave_cluster: bool,
}

/// `vswitchd --uplink IFACE --uplink-addr IP/PREFIX [--uplink-gateway IP]`: an
/// interface of the daemon's namespace whose address the dataplane owns (the kernel
/// holds no address on it).
#[derive(Clone, Debug)]
pub struct UplinkCfg {
    pub ifname: String,
    pub addr: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
}

/// Port number reserved for the uplink.
pub const UPLINK_PORT: u16 = u16::MAX;

/// The IANA VXLAN port, `vswitchd --vxlan-port`'s default.
pub const VXLAN_PORT: u16 = 4789;

impl Default for CtlOpts {
    fn default() -> Self {
        CtlOpts { ephemeral_ports: (49153, 60999), userland_proxy: true, uplink: None, advertise: None, peers: vec![], vxlan_port: VXLAN_PORT, cluster: None, leave_cluster: false }
    }
}

pub struct Controller {
    pub state: State,
    store: FileStore,
    pub dp: Dp,
    nl: Netlink,
    pub opts: CtlOpts,
    proxy: crate::proxy::Proxy,
    dns: Option<crate::dns::DnsServer>,
    /// Tunnel peer ports (not persisted: derived from networks and peers at start):
    /// (network, remote host) → port number.
    peer_ports: std::collections::BTreeMap<(String, Ipv4Addr), u16>,
    cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
    /// Other hosts registered in the cluster store, with their VXLAN ports.
    cluster_hosts: std::collections::BTreeMap<Ipv4Addr, u16>,
    /// Endpoints of other hosts: (network, endpoint id) → endpoint.
    remote_eps: std::collections::BTreeMap<(String, String), crate::cluster::RemoteEndpoint>,
    /// Routed overlay: other hosts' subnets, (network, subnet) → host.
    remote_subnets: std::collections::BTreeMap<(String, Ipv4Cidr), Ipv4Addr>,
    /// The mesh agent, when this host is in an encrypted mesh.
    mesh: Option<std::sync::Arc<crate::meshd::MeshHandle>>,
    /// The ifindex each attached system port's socket is bound to (to notice an
    /// interface deleted and made again under the same name).
    port_ifindex: std::collections::HashMap<String, u32>,
    /// Switch-made TAP ports gone from this namespace and looked for in the others
    /// once (not found: not searched again every second).
    tap_searched: BTreeSet<String>,
    /// Endpoints whose interface was deleted behind the daemon's back and could not be
    /// made again yet (warned once; retried every second).
    heal_failed: BTreeSet<u16>,
    /// Likewise for sandbox namespaces deleted behind the daemon's back.
    heal_failed_ns: BTreeSet<String>,
    /// Cluster networks removed from the store while this host still had endpoints on
    /// them: dropped here when the last one leaves.
    cluster_stale: BTreeSet<String>,
    /// Addresses of endpoints that went away, whose connections the housekeeping
    /// thread removes from the NAT table ([`Controller::take_gone_addrs`]).
    gone_addrs: Vec<Ipv4Addr>,
    /// Reachable mesh peers: the agent's number → public key.
    mesh_up: std::collections::BTreeMap<u32, [u8; 32]>,
    /// Mesh peer ports: (network, peer number) → port number.
    mesh_ports: std::collections::BTreeMap<(String, u32), u16>,
}

mod cluster;

impl Controller {
    pub fn new(store: FileStore, dp: Dp, state: State) -> std::io::Result<Controller> {
        Ok(Controller { state, store, dp, nl: Netlink::open()?, opts: CtlOpts::default(), proxy: crate::proxy::Proxy::new(), dns: None, peer_ports: Default::default(), cluster: None, cluster_hosts: Default::default(), remote_eps: Default::default(), remote_subnets: Default::default(), port_ifindex: Default::default(), tap_searched: BTreeSet::new(), heal_failed: BTreeSet::new(), heal_failed_ns: BTreeSet::new(), cluster_stale: BTreeSet::new(), gone_addrs: Vec::new(), mesh: None, mesh_up: Default::default(), mesh_ports: Default::default() })
    }

    /// Persists `new` and makes it the current state.
    fn commit(&mut self, new: State) -> R<()> {
        self.store.save(&new).map_err(|e| format!("saving state in {}: {e}", self.store.dir().display()))?;
        self.state = new;
        Ok(())
    }

    /// Notes in the state directory that the named namespace `name` is being made or
    /// removed (`FileStore::mark_netns`; `reconcile` finishes the job after a kill).
    fn note_netns(&self, name: &str, ino: Option<u64>) -> R<()> {
        self.store.mark_netns(name, ino).map_err(|e| format!("state directory {}: {e}", self.store.dir().display()))
    }

    /// Handles one API request.
    pub fn handle(&mut self, req: Request) -> R<Value> {
        match req {
            Request::Ping => Ok(json!({"version": env!("CARGO_PKG_VERSION"), "workers": self.dp.worker_count(), "pid": std::process::id(), "state_dir": self.store.dir().display().to_string()})),
            Request::NetworkCreate(p) => self.network_create(p),
            Request::NetworkLs => Ok(self.network_ls()),
            Request::NetworkInspect { name } => {
                let n = self.state.networks.get(&name).ok_or_else(|| format!("network {name} not found"))?;
                Ok(json!([self.network_json(n)]))
            }
            Request::NetworkRm { name, force } => self.network_rm(&name, force),
            Request::NetworkPrune => self.network_prune(),
            Request::SandboxCreate(c) => self.sandbox_create(c),
            Request::SandboxRm { name } => self.sandbox_rm(&name),
            Request::SandboxLs => Ok(self.sandbox_ls()),
            Request::Connect(c) => self.connect(c),
            Request::Disconnect { network, sandbox } => self.disconnect(&network, &sandbox),
            Request::PortAdd(p) => self.port_add(p),
            Request::PortRm { network, ifname } => self.port_rm(&network, &ifname),
            Request::PortLs => Ok(self.port_ls()),
            Request::FdbShow { network } => self.fdb_show(&network),
            Request::PortMappings { sandbox } => self.port_mappings(&sandbox),
            Request::ConntrackLs => Ok(self.conntrack_ls()),
            Request::ConntrackFlush => {
                let epoch = self.dp.conntrack().flush();
                info!(epoch, "connection table flushed");
                Ok(json!({"flushed": true}))
            }
            Request::Stats { port } => self.stats(port.as_deref()),
            Request::MeshId => {
                let m = self.mesh.as_ref().ok_or(NO_MESH)?;
                Ok(json!({"key": dataplane::mesh::key_to_base64(&m.public)}))
            }
            Request::MeshPeers => Ok(self.mesh.as_ref().ok_or(NO_MESH)?.peers()),
            Request::MeshConnect { addr } => {
                let m = self.mesh.clone().ok_or(NO_MESH)?;
                let a = parse_mesh_addr(&addr).map_err(|e| format!("address {addr:?}: {e}"))?;
                if let std::net::IpAddr::V4(ip) = a.ip() {
                    self.check_mesh_member(ip).map_err(|e| format!("address {addr:?}: {e}"))?;
                }
                m.connect(a);
                info!(member = %a, "joining mesh member");
                Ok(json!({"connecting": a.to_string()}))
            }
            Request::MeshForget { addr } => {
                let m = self.mesh.clone().ok_or(NO_MESH)?;
                let a = parse_mesh_addr(&addr).map_err(|e| format!("address {addr:?}: {e}"))?;
                if !m.forget(a) {
                    return Err(format!("address {addr:?}: no member waiting for an answer there (`mesh peers` lists them; a member that answered is a peer)"));
                }
                info!(member = %a, "no longer asking mesh member");
                Ok(json!({"forgotten": a.to_string()}))
            }
        }
    }

    // ---- networks -------------------------------------------------------------------

    fn network_create(&mut self, p: NetworkCreate) -> R<Value> {
        model::validate_name("network", &p.name)?;
        if self.state.networks.contains_key(&p.name) {
            return Err(format!("network {} already exists", p.name));
        }
        // Names are DNS names too (NAME.NETWORK), and DNS ignores case.
        if let Some(o) = self.state.networks.keys().find(|o| o.eq_ignore_ascii_case(&p.name)) {
            return Err(format!("network name {:?}: differs from network {o} only in case (names are DNS names)", p.name));
        }
        let existing: Vec<(String, Ipv4Cidr)> = self.state.networks.values().map(|n| (n.name.clone(), n.subnet)).collect();
        let subnet = match &p.subnet {
            Some(s) => {
                let c: Ipv4Cidr = s.parse().map_err(|e| format!("subnet {s:?}: {e}"))?;
                if !c.is_network_address() {
                    return Err(format!("subnet {s:?}: has host bits set; did you mean {}?", c.trunc()));
                }
                if c.prefix_len > 30 {
                    return Err(format!("subnet {s:?}: too small, the prefix must be /30 or shorter"));
                }
                if let Some(why) = model::special_ipv4(&c) {
                    return Err(format!("subnet {c}: overlaps {why}"));
                }
                if let Some((n, o)) = existing.iter().find(|(_, o)| o.overlaps(&c)) {
                    return Err(format!("subnet {c} overlaps the subnet {o} of network {n}"));
                }
                if let Some((what, o)) = self.host_subnets().into_iter().find(|(_, o)| o.overlaps(&c)) {
                    return Err(format!("subnet {c} overlaps {o}, the subnet of {what}"));
                }
                c
            }
            None => {
                // Docker likewise: a range or gateway only means something in a subnet
                // the user chose (not in one the default pool will pick).
                if let Some(r) = &p.ip_range {
                    return Err(format!("ip-range {r}: give the subnet it lies in too (--subnet)"));
                }
                if let Some(g) = &p.gateway {
                    return Err(format!("gateway {g}: give its subnet too (--subnet)"));
                }
                self.pool_subnet(Vec::new())?
            }
        };
        let gateway = match &p.gateway {
            Some(g) => {
                let ip: Ipv4Addr = g.parse().map_err(|_| format!("gateway {g:?}: not an IPv4 address"))?;
                if !subnet.contains(ip) || ip == subnet.network() || ip == subnet.broadcast() {
                    return Err(format!("gateway {ip}: not a host address of the subnet {subnet}"));
                }
                ip
            }
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
        };
        let ip_range = match &p.ip_range {
            Some(r) => {
                let c: Ipv4Cidr = r.parse().map_err(|e| format!("ip-range {r:?}: {e}"))?;
                if !c.is_network_address() {
                    return Err(format!("ip-range {r:?}: has host bits set; did you mean {}?", c.trunc()));
                }
                if !subnet.contains_cidr(&c) {
                    return Err(format!("ip-range {c}: not inside the subnet {subnet}"));
                }
                // At least one address an endpoint can get: not the subnet's network or
                // broadcast address, not the gateway.
                let size = 1u64 << (32 - c.prefix_len.min(32) as u32);
                let reserved = [subnet.network(), subnet.broadcast(), gateway].into_iter().filter(|a| c.contains(*a)).count() as u64;
                if size <= reserved {
                    return Err(format!("ip-range {c}: holds no address for endpoints (only the subnet's network, broadcast or gateway address)"));
                }
                Some(c)
            }
            None => None,
        };
        let driver: crate::model::Driver = match &p.driver {
            Some(d) => d.parse().map_err(|e| format!("driver: {e}"))?,
            None => crate::model::Driver::Bridge,
        };
        let (encap, vni) = match driver {
            crate::model::Driver::Bridge => {
                if p.encap.is_some() || p.vni.is_some() {
                    return Err("--encap/--vni: only for --driver overlay".to_string());
                }
                (None, None)
            }
            crate::model::Driver::Overlay => {
                self.check_joined()?;
                let mesh = p.encap.as_deref() == Some("mesh");
                if mesh && self.mesh.is_none() {
                    return Err(format!("--encrypted: {NO_MESH}"));
                }
                if !mesh && self.dp.advertise().is_none() {
                    return Err("--driver overlay: this vswitchd has no underlay (start it with --advertise IP and --peer IP or --cluster)".to_string());
                }
                let e: crate::model::Encap = match &p.encap {
                    Some(e) => e.parse().map_err(|e| format!("encap: {e}"))?,
                    None => crate::model::Encap::Vxlan,
                };
                if e == crate::model::Encap::Udp {
                    if self.cluster.is_none() {
                        return Err("--encap udp: per-host subnets need a cluster store (vswitchd --cluster)".to_string());
                    }
                    if subnet.prefix_len > 22 {
                        return Err(format!("subnet {subnet}: a routed overlay needs room for per-host /24s (/22 or larger)"));
                    }
                    if self.state.networks.values().any(|n| n.encap == Some(crate::model::Encap::Udp)) {
                        return Err("--encap udp: only one routed overlay network per cluster (IP-in-UDP carries no network id)".to_string());
                    }
                }
                let vni = p.vni.unwrap_or_else(|| model::default_vni(&p.name));
                if e == crate::model::Encap::Vxlan && !(1..=0x00ff_ffff).contains(&vni) {
                    return Err(format!("vni {vni}: a VXLAN VNI is 1 to 16777215"));
                }
                // One id space for every overlay network, whatever its encapsulation (as
                // in cluster mode): received frames are demultiplexed by (sender, id), so
                // a GRE and a VXLAN network with the same id would receive each other's
                // frames.
                if let Some(o) = self.state.networks.values().find(|n| n.vni == Some(vni)) {
                    let how = o.encap.map(|x| x.to_string()).unwrap_or_default();
                    return Err(format!("vni {vni}: already used by network {} ({how})", o.name));
                }
                (Some(e), Some(vni))
            }
        };
        let default_mtu = match encap {
            Some(e) => self.underlay_mtu().saturating_sub(overlay_overhead(e)),
            None => DEFAULT_MTU,
        };
        let mtu = p.mtu.unwrap_or(default_mtu);
        if !(68..=65535).contains(&mtu) {
            return Err(format!("mtu {mtu}: must be between 68 and 65535"));
        }
        if let Some(e) = encap.filter(|_| mtu > default_mtu) {
            // Frames that do not fit the underlay once encapsulated would be lost
            // silently between hosts.
            return Err(format!("mtu {mtu}: more than the underlay carries for {e} ({default_mtu}: this host's underlay MTU less the encapsulation)"));
        }
        let mac_table_size = p.mac_table_size.unwrap_or(DEFAULT_MAC_TABLE_SIZE);
        if !(1..=(1 << 24)).contains(&mac_table_size) {
            return Err(format!("mac-table-size {mac_table_size}: must be between 1 and 16777216"));
        }
        let mac_aging = p.mac_aging.unwrap_or(DEFAULT_MAC_AGING);
        if !(1..=1_000_000).contains(&mac_aging) {
            return Err(format!("mac-aging {mac_aging}: must be between 1 and 1000000 seconds"));
        }
        let (subnet6, gateway6) = match (&p.subnet6, p.ipv6) {
            (Some(s6), true) => {
                let c: crate::model::Ipv6Cidr = s6.parse().map_err(|e| format!("subnet {s6:?}: {e}"))?;
                if !c.is_network_address() {
                    return Err(format!("subnet {s6:?}: has host bits set; did you mean {}/{}?", c.network(), c.prefix_len));
                }
                if let Some(why) = model::special_ipv6(&c) {
                    return Err(format!("subnet {c}: overlaps {why}"));
                }
                if c.prefix_len > 126 {
                    return Err(format!("subnet {c}: too small, the prefix must be /126 or shorter"));
                }
                if let Some(o) = self.state.networks.values().find(|n| n.subnet6.is_some_and(|o| o.overlaps(&c))) {
                    return Err(format!("subnet {c} overlaps the IPv6 subnet of network {}", o.name));
                }
                if let Some((ifname, o)) = self.local_subnets6().into_iter().find(|(_, o)| o.overlaps(&c)) {
                    return Err(format!("subnet {c} overlaps {o}, the subnet of interface {ifname}"));
                }
                let gw: std::net::Ipv6Addr = match &p.gateway6 {
                    Some(g) => {
                        let ip: std::net::Ipv6Addr = g.parse().map_err(|_| format!("gateway {g:?}: not an IPv6 address"))?;
                        if !c.contains(ip) || ip == c.network() {
                            return Err(format!("gateway {ip}: not a host address of the subnet {c}"));
                        }
                        ip
                    }
                    None => (u128::from(c.network()) + 1).into(),
                };
                (Some(c), Some(gw))
            }
            (Some(s6), false) => return Err(format!("subnet {s6}: an IPv6 subnet needs --ipv6")),
            (None, true) => return Err("--ipv6: give an IPv6 subnet too (--subnet fd00:…/64)".to_string()),
            (None, false) => {
                if let Some(g) = &p.gateway6 {
                    return Err(format!("gateway {g}: an IPv6 gateway needs --ipv6 and an IPv6 subnet"));
                }
                (None, None)
            }
        };
        if subnet6.is_some() && mtu < 1280 {
            return Err(format!("mtu {mtu}: IPv6 (--ipv6) needs an MTU of at least 1280"));
        }
        let ip_range6 = match &p.ip_range6 {
            Some(r) => {
                let c: crate::model::Ipv6Cidr = r.parse().map_err(|e| format!("ip-range {r:?}: {e}"))?;
                if !c.is_network_address() {
                    return Err(format!("ip-range {r:?}: has host bits set; did you mean {}/{}?", c.network(), c.prefix_len));
                }
                let Some(s6) = subnet6 else { return Err(format!("ip-range {c}: an IPv6 range needs an IPv6 subnet (--ipv6 --subnet …)")) };
                if c.prefix_len < s6.prefix_len || !s6.contains(c.network()) {
                    return Err(format!("ip-range {c}: not inside the subnet {s6}"));
                }
                Some(c)
            }
            None => None,
        };
        let used: BTreeSet<u16> = self.state.networks.values().map(|n| n.net_id).collect();
        let net_id = (1..=u16::MAX).find(|i| !used.contains(i)).ok_or("too many networks")?;
        let id = model::random_id();
        let idb = u64::from_str_radix(&id[..8], 16).unwrap_or(0).to_be_bytes();
        let net = Network {
            name: p.name.clone(),
            id,
            net_id,
            subnet,
            gateway,
            // Overlay networks: the same gateway MAC on every host (from the VNI).
            gateway_mac: match vni {
                Some(v) => MacAddr([0x02, 0x4f, (v >> 16) as u8, (v >> 8) as u8, v as u8, 0x01]),
                None => MacAddr([0x02, 0x00, idb[4], idb[5], idb[6], idb[7]]),
            },
            ip_range,
            mtu,
            mac_table_size,
            mac_aging,
            created: model::now_unix(),
            internal: p.internal,
            icc: p.icc.unwrap_or(true),
            subnet6,
            gateway6,
            ip_range6,
            driver,
            encap,
            vni,
            range: None,
        };
        let mut net = net;
        if let (Some(c), crate::model::Driver::Overlay) = (self.cluster.clone(), net.driver) {
            let mut tries = 0;
            loop {
                match c.create_network(&net)? {
                    Ok(()) => break,
                    // A subnet picked from the pool lost a race with another host's
                    // definition: take the next free one, as a sequential create would.
                    Err(e) if p.subnet.is_none() && p.ip_range.is_none() && p.gateway.is_none() && e.contains("overlaps") && tries < 8 => {
                        tries += 1;
                        let s = self.pool_subnet(c.networks()?.into_iter().map(|n| n.range.unwrap_or(n.subnet)).collect())?;
                        net.subnet = s;
                        net.gateway = Ipv4Addr::from(u32::from(s.network()) + 1);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let net = match self.lease_host_subnet(net.clone(), None) {
            Ok(n) => n,
            Err(e) => {
                if let Some(c) = &self.cluster {
                    let _ = c.delete_network(&net, true);
                }
                return Err(e);
            }
        };
        let mut new = self.state.clone();
        new.networks.insert(p.name.clone(), net.clone());
        self.commit(new)?;
        self.dp.forget_network(net_id);
        self.attach_peers(&net);
        self.dp.publish(&self.state);
        info!(network = %net.name, subnet = %net.subnet, gateway = %net.gateway, "network created");
        Ok(self.network_json(&net))
    }

    fn network_json(&self, n: &Network) -> Value {
        let eps: Vec<Value> = self.state.endpoints_of_network(&n.name).map(|e| self.endpoint_json(e, n)).collect();
        let ports: Vec<Value> = self
            .state
            .ports_of_network(&n.name)
            .map(|p| json!({"interface": p.ifname, "type": p.kind, "port_id": p.port_id, "attached": self.dp.is_attached(p.port_id), "dhcp": p.dhcp.as_ref().map(|d| crate::dp::dhcp_json(d, self.state.networks.get(&p.network)))}))
            .collect();
        json!({
            "name": n.name,
            "id": n.id,
            "driver": n.driver,
            "encap": n.encap,
            "vni": n.vni,
            "peers": self
                .peer_ports
                .iter()
                .filter(|((net, _), _)| net == &n.name)
                .map(|((_, ip), id)| json!({"host": ip.to_string(), "port_id": id}))
                .chain(self.mesh_ports.iter().filter(|((net, _), _)| net == &n.name).map(|((_, peer), id)| {
                    json!({"mesh_peer": self.mesh_up.get(peer).map(dataplane::mesh::key_to_base64), "port_id": id})
                }))
                .collect::<Vec<_>>(),
            "created": n.created,
            "subnet": n.subnet.to_string(),
            "range": n.range.map(|r| r.to_string()),
            "host_subnets": self.routed_shares(n),
            "gateway": n.gateway.to_string(),
            "gateway_mac": n.gateway_mac.to_string(),
            "ip_range": n.ip_range.map(|r| r.to_string()),
            "ipv6": n.subnet6.is_some(),
            "subnet6": n.subnet6.map(|c| c.to_string()),
            "gateway6": n.gateway6.map(|g| g.to_string()),
            "ip_range6": n.ip_range6.map(|r| r.to_string()),
            "options": {"mtu": n.mtu, "mac_table_size": n.mac_table_size, "mac_aging": n.mac_aging, "internal": n.internal, "icc": n.icc},
            "endpoints": eps,
            "remote_endpoints": self
                .remote_eps
                .values()
                .filter(|e| e.network == n.name)
                .map(|e| json!({"sandbox": e.sandbox, "host": e.host.to_string(), "ipv4_address": e.ip.to_string(), "mac_address": e.mac.to_string()}))
                .collect::<Vec<_>>(),
            "ports": ports,
        })
    }

    /// A routed overlay's /24 per host, this host's first (empty for other networks).
    fn routed_shares(&self, n: &Network) -> Vec<Value> {
        if n.range.is_none() {
            return Vec::new();
        }
        let here = self.dp.advertise().map(|a| a.to_string()).unwrap_or_default();
        std::iter::once(json!({"host": here, "subnet": n.subnet.to_string()}))
            .chain(self.remote_subnets.iter().filter(|((net, _), _)| net == &n.name).map(|((_, s), h)| json!({"host": h.to_string(), "subnet": s.to_string()})))
            .collect()
    }

    fn endpoint_json(&self, e: &Endpoint, n: &Network) -> Value {
        json!({
            "sandbox": e.sandbox,
            "endpoint_id": e.id,
            "interface": e.ifname,
            "host_interface": e.host_ifname,
            "kind": e.kind,
            "mac_address": e.mac.to_string(),
            "ipv4_address": format!("{}/{}", e.ip, n.subnet.prefix_len),
            "ipv6_address": e.ip6.and_then(|a| n.subnet6.map(|c| format!("{a}/{}", c.prefix_len))),
            "gateway": n.gateway.to_string(),
            "default_route": e.default_route,
            "port_id": e.port_id,
            "attached": self.dp.is_attached(e.port_id),
            "aliases": e.aliases,
            "published": e.published.iter().map(|m| json!({"proto": m.proto, "host_ip": m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string(), "host_port": m.host_port, "container_port": m.container_port})).collect::<Vec<_>>(),
        })
    }

    fn network_ls(&self) -> Value {
        Value::Array(
            self.state
                .networks
                .values()
                .map(|n| {
                    json!({
                        "name": n.name, "id": n.id, "driver": n.driver, "subnet": n.subnet.to_string(),
                        "range": n.range.map(|r| r.to_string()),
                        "gateway": n.gateway.to_string(),
                        "ipv6": n.subnet6.is_some(),
                        "subnet6": n.subnet6.map(|c| c.to_string()),
                        "gateway6": n.gateway6.map(|g| g.to_string()),
                        "internal": n.internal,
                        "endpoints": self.state.endpoints_of_network(&n.name).count(),
                        "ports": self.state.ports_of_network(&n.name).count(),
                    })
                })
                .collect(),
        )
    }

    fn network_rm(&mut self, name: &str, force: bool) -> R<Value> {
        let n = self.state.networks.get(name).ok_or_else(|| format!("network {name} not found"))?.clone();
        let eps: Vec<&str> = self.state.endpoints_of_network(name).map(|e| e.sandbox.as_str()).collect();
        if !eps.is_empty() {
            return Err(format!("network {name} has active endpoints ({}); disconnect them first", eps.join(", ")));
        }
        let ports: Vec<&str> = self.state.ports_of_network(name).map(|p| p.ifname.as_str()).collect();
        if !ports.is_empty() {
            return Err(format!("network {name} has attached ports ({}); remove them first", ports.join(", ")));
        }
        if let (Some(c), crate::model::Driver::Overlay) = (&self.cluster, n.driver) {
            c.delete_network(&n, force)??;
        }
        let mut new = self.state.clone();
        new.networks.remove(name);
        self.commit(new)?;
        self.detach_peers(name);
        self.dp.publish(&self.state);
        self.dp.forget_network(n.net_id);
        if let Some(d) = &self.dns {
            d.update_names(|t| t.remove_network(name));
        }
        info!(network = name, "network removed");
        Ok(json!({"removed": name}))
    }

    fn network_prune(&mut self) -> R<Value> {
        let idle: Vec<String> = self
            .state
            .networks
            .keys()
            .filter(|n| self.state.endpoints_of_network(n).next().is_none() && self.state.ports_of_network(n).next().is_none())
            .cloned()
            .collect();
        if idle.is_empty() {
            return Ok(json!({"removed": []}));
        }
        // One `network rm` each: tunnel and mesh ports, the cluster store's copy and the
        // DNS names go with the network.
        let mut removed = Vec::new();
        for n in idle {
            match self.network_rm(&n, false) {
                Ok(_) => removed.push(n),
                Err(e) => warn!(network = %n, error = %e, "network not pruned"),
            }
        }
        info!(networks = ?removed, "networks pruned");
        Ok(json!({"removed": removed}))
    }

    // ---- sandboxes ------------------------------------------------------------------

    fn sandbox_create(&mut self, c: crate::api::SandboxCreate) -> R<Value> {
        let name = c.name.as_str();
        model::validate_name("sandbox", name)?;
        if let Some(h) = &c.hostname {
            if h.is_empty() || h.len() > 63 || !h.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.') || h.starts_with('-') {
                return Err(format!("--hostname {h:?}: want 1-63 letters, digits, '-' or '.'"));
            }
        }
        let dns: Vec<std::net::IpAddr> =
            c.dns.iter().map(|d| d.parse().map_err(|_| format!("--dns {d:?}: not an IP address"))).collect::<Result<_, _>>()?;
        // A server is one host: not unspecified, broadcast or multicast (a loopback one
        // is the sandbox's own resolver, and fine).
        if let Some(d) = dns.iter().find(|d| d.is_unspecified() || d.is_multicast() || matches!(d, std::net::IpAddr::V4(v) if v.is_broadcast())) {
            return Err(format!("--dns {d}: not the address of a name server"));
        }
        if dns.iter().any(|d| d == &std::net::IpAddr::V4(crate::dns::DNS_ADDR)) {
            return Err("--dns 127.0.0.11: that is the embedded DNS itself (it forwards to --dns)".to_string());
        }
        let probe = crate::dns::files::SandboxFiles {
            hostname: c.hostname.clone().unwrap_or_else(|| "x".into()),
            search: c.dns_search.clone(),
            options: c.dns_option.clone(),
            ..Default::default()
        };
        probe.validate()?;
        if self.state.sandboxes.contains_key(name) {
            return Err(format!("sandbox {name} already exists"));
        }
        if let Some(o) = self.state.sandboxes.keys().find(|o| o.eq_ignore_ascii_case(name)) {
            return Err(format!("sandbox name {name:?}: differs from sandbox {o} only in case (names are DNS names)"));
        }
        if netns::exists(name) {
            return Err(format!("a network namespace named {name} already exists (not created by vswitchd)"));
        }
        // Noted first: killed between making the namespace and saving the state, the
        // daemon removes the namespace at its next start (`reconcile`).
        self.note_netns(name, None)?;
        if let Err(e) = netns::create_named(name) {
            self.store.unmark_netns(name);
            return Err(format!("creating namespace {name}: {e}"));
        }
        // Now it can say which namespace: one made under the name by someone else
        // after a kill is not taken for ours.
        let _ = self.store.mark_netns(name, netns::inode(name));
        let sb = Sandbox {
            name: name.to_string(),
            id: model::random_id(),
            created: model::now_unix(),
            hostname: c.hostname.clone(),
            dns,
            dns_search: c.dns_search.clone(),
            dns_options: c.dns_option.clone(),
        };
        let mut new = self.state.clone();
        new.sandboxes.insert(name.to_string(), sb.clone());
        if let Err(e) = self.commit(new) {
            let _ = netns::delete_named(name);
            self.store.unmark_netns(name);
            return Err(e);
        }
        self.store.unmark_netns(name);
        if let Err(e) = self.dns_add_sandbox(name) {
            warn!(sandbox = name, error = %e, "embedded DNS");
        }
        info!(sandbox = name, "sandbox created");
        Ok(json!({"name": sb.name, "id": sb.id, "path": netns::named_path(name)}))
    }

    fn sandbox_rm(&mut self, name: &str) -> R<Value> {
        if !self.state.sandboxes.contains_key(name) {
            return Err(format!("sandbox {name} not found"));
        }
        // Noted first (before anything changes): killed between saving the removal and
        // deleting the namespace, the daemon removes it at its next start.
        self.note_netns(name, netns::inode(name))?;
        let nets: Vec<String> = self.state.endpoints_of_sandbox(name).map(|e| e.network.clone()).collect();
        let saved = (|| {
            for n in &nets {
                self.disconnect(n, name)?;
            }
            let mut new = self.state.clone();
            new.sandboxes.remove(name);
            self.commit(new)
        })();
        if let Err(e) = saved {
            self.store.unmark_netns(name);
            return Err(e);
        }
        if let Some(d) = &self.dns {
            // Before the namespace goes: the DNS sockets would keep it alive.
            let _ = d.remove_sandbox(name);
            d.update_names(|t| t.remove_sandbox(name));
        }
        let _ = crate::dns::files::remove_sandbox_files(name);
        match netns::delete_named(name) {
            // Kept noted when it failed: the next start tries again.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => warn!(sandbox = name, error = %e, "deleting namespace"),
            _ => self.store.unmark_netns(name),
        }
        info!(sandbox = name, "sandbox removed");
        Ok(json!({"removed": name, "disconnected": nets}))
    }

    fn sandbox_ls(&self) -> Value {
        Value::Array(
            self.state
                .sandboxes
                .values()
                .map(|s| {
                    let eps: Vec<Value> = self
                        .state
                        .endpoints_of_sandbox(&s.name)
                        .map(|e| json!({"network": e.network, "interface": e.ifname, "ipv4_address": e.ip.to_string(), "ipv6_address": e.ip6.map(|a| a.to_string()), "mac_address": e.mac.to_string()}))
                        .collect();
                    json!({"name": s.name, "id": s.id, "created": s.created, "path": netns::named_path(&s.name), "endpoints": eps})
                })
                .collect(),
        )
    }

    // ---- endpoints ------------------------------------------------------------------

    fn free_port_id(&self) -> R<u16> {
        let used: BTreeSet<u16> = self.state.used_port_ids().chain(self.peer_ports.values().copied()).chain(self.mesh_ports.values().copied()).collect();
        (1..crate::dp::FIRST_RESERVED).find(|i| !used.contains(i)).ok_or_else(|| "too many ports".to_string())
    }

    fn connect(&mut self, c: Connect) -> R<Value> {
        let network = c.network.clone();
        let mut claimed = Claims::default();
        let r = self.connect_claiming(c, &mut claimed);
        if r.is_err() {
            self.cluster_release(&network, &claimed);
        }
        r
    }

    /// `connect`, noting in `claimed` the addresses it claimed in the cluster store (to
    /// be given back if it fails after claiming them).
    fn connect_claiming(&mut self, c: Connect, claimed: &mut Claims) -> R<Value> {
        let net = self.state.networks.get(&c.network).ok_or_else(|| format!("network {} not found", c.network))?.clone();
        if net.driver == crate::model::Driver::Overlay {
            self.check_joined()?;
            self.check_not_stale(&net.name)?;
        }
        if net.encap == Some(crate::model::Encap::Mesh) && self.mesh.is_none() {
            // Learnt from the cluster store: its frames could not leave this host.
            return Err(format!("network {} is encrypted and {NO_MESH}", net.name));
        }
        if !self.state.sandboxes.contains_key(&c.sandbox) {
            return Err(format!("sandbox {} not found", c.sandbox));
        }
        if self.state.endpoint(&c.network, &c.sandbox).is_some() {
            return Err(format!("sandbox {} is already connected to network {}", c.sandbox, c.network));
        }
        let kind: EndpointKind = match &c.kind {
            Some(k) => k.parse().map_err(|e| format!("port-kind: {e}"))?,
            None => EndpointKind::Veth,
        };
        let used_ips: BTreeSet<Ipv4Addr> = self.state.used_ipv4(&net.name);
        let ep_id = model::random_id();
        claimed.id = ep_id.clone();
        let ip = ipam::choose(&net, c.ip.as_deref(), &used_ips)?;
        // Overlay networks in a cluster: the address is claimed in the store (unique
        // across hosts), never taken from a local counter.
        let ip = match self.cluster_ip(&net, c.ip.as_ref().map(|_| ip), &ep_id)? {
            Some(ip) => {
                claimed.ips.push(ip.into());
                ip
            }
            None => ip,
        };
        let mac = match &c.mac {
            Some(s) => {
                let m: MacAddr = s.parse().map_err(|e| format!("--mac: {e}"))?;
                if !m.is_unicast() {
                    return Err(format!("--mac {m}: must be a unicast address"));
                }
                m
            }
            None => MacAddr::from_ipv4_docker(ip),
        };
        // Taken here or on another host (in a cluster also by an endpoint of a host
        // that is down: MACs are claimed in the store like addresses). In a cluster the
        // check claims a free MAC for this endpoint as it goes (the claim is recorded in
        // `claimed` below and given back if the connect fails).
        let taken = |me: &Controller, m: MacAddr| -> Result<bool, String> {
            Ok(m == net.gateway_mac
                || me.state.endpoints_of_network(&net.name).any(|e| e.mac == m)
                || me.remote_mac_owner(&net.name, m).is_some()
                || me.cluster_mac(&net, m, &ep_id)? == Some(false))
        };
        let mac = if c.mac.is_none() && taken(self, mac)? {
            // Someone chose the MAC this address derives to with --mac: take a random
            // locally administered one (02:43:…, outside the 02:42:IPv4 derivations)
            // rather than refusing every automatic connect on the network.
            // Candidates from the endpoint's random id, 32 bits at a time.
            let mut found = None;
            for chunk in ep_id.as_bytes().chunks_exact(8) {
                let Some(v) = std::str::from_utf8(chunk).ok().and_then(|h| u32::from_str_radix(h, 16).ok()) else { continue };
                let [a, b, c3, d] = v.to_be_bytes();
                let m = MacAddr([0x02, 0x43, a, b, c3, d]);
                if !taken(self, m)? {
                    found = Some(m);
                    break;
                }
            }
            found.ok_or_else(|| format!("network {}: no free MAC address", net.name))?
        } else {
            mac
        };

        if mac == net.gateway_mac || self.state.endpoints_of_network(&net.name).any(|e| e.mac == mac) {
            return Err(format!("--mac {mac}: already in use on network {}", net.name));
        }
        if let Some(o) = self.remote_mac_owner(&net.name, mac) {
            return Err(format!("--mac {mac}: already in use on network {} by sandbox {} on host {}", net.name, o.sandbox, o.host));
        }
        match self.cluster_mac(&net, mac, &ep_id)? {
            Some(true) => claimed.macs.push(mac),
            Some(false) => {
                let holder = self.cluster.as_ref().map(|c| c.mac_holder(&net.name, mac)).transpose()?.unwrap_or_default();
                return Err(format!("--mac {mac}: already in use on network {} ({holder})", net.name));
            }
            None => {}
        }
        let specs: Vec<crate::publish::PublishSpec> = c.publish.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        if net.internal && !specs.is_empty() {
            return Err(format!("-p: network {} is internal, ports cannot be published from it", net.name));
        }
        // Published ports are served on the uplink address (by the dataplane) and on
        // 127.0.0.1 (by the userland proxy): any other host address would never match.
        let uplink_ip = self.opts.uplink.as_ref().map(|u| u.addr.addr);
        for (text, sp) in c.publish.iter().zip(&specs) {
            if let Some(ip) = sp.host_ip {
                if ip != Ipv4Addr::LOCALHOST && Some(ip) != uplink_ip {
                    let serves = match uplink_ip {
                        Some(u) => format!("0.0.0.0, the uplink address {u} or 127.0.0.1"),
                        None => "0.0.0.0 or 127.0.0.1 (no --uplink)".to_string(),
                    };
                    return Err(format!("-p {text}: {ip} is not an address ports are published on ({serves})"));
                }
            }
        }
        let taken: Vec<(crate::publish::PortMapping, String)> = self
            .state
            .endpoints
            .values()
            .flat_map(|e| e.published.iter().map(move |m| (*m, format!("sandbox {}", e.sandbox))))
            .collect();
        let published = crate::publish::allocate(&specs, &taken, self.opts.ephemeral_ports)?;
        for (i, a) in c.aliases.iter().enumerate() {
            model::validate_name("alias", a)?;
            if a.parse::<std::net::IpAddr>().is_ok() {
                return Err(format!("alias name {a:?}: an address is not a name"));
            }
            if c.aliases[..i].iter().any(|b| b.eq_ignore_ascii_case(a)) {
                return Err(format!("alias name {a:?}: given twice (names are not case-sensitive)"));
            }
            // NAME.NETWORK is a sandbox's own name on the network: an alias must not take it.
            if a.to_ascii_lowercase().ends_with(&format!(".{}", net.name.to_ascii_lowercase())) {
                return Err(format!("alias name {a:?}: names ending in .{} are the sandboxes' own names on that network", net.name));
            }
        }
        let ip6 = match (&c.ip6, net.subnet6) {
            (Some(s6), _) => {
                let ip: std::net::Ipv6Addr = s6.parse().map_err(|_| format!("--ip6 {s6:?}: not an IPv6 address"))?;
                let used6: BTreeSet<std::net::Ipv6Addr> = self.state.endpoints_of_network(&net.name).filter_map(|e| e.ip6).collect();
                ipam::check_requested6(&net, ip, &used6)?;
                Some(ip)
            }
            (None, Some(_)) => {
                let used6: BTreeSet<std::net::Ipv6Addr> = self.state.endpoints_of_network(&net.name).filter_map(|e| e.ip6).collect();
                Some(ipam::allocate6(&net, &used6)?)
            }
            (None, None) => None,
        };
        // Cluster overlay networks: IPv6 addresses are claimed in the store like IPv4.
        let ip6 = match ip6 {
            Some(local) => match self.cluster_ip6(&net, c.ip6.as_ref().map(|_| local), &ep_id)? {
                Some(x) => {
                    claimed.ips.push(x.into());
                    Some(x)
                }
                None => Some(local),
            },
            None => None,
        };
        let taken: BTreeSet<String> = self.state.endpoints_of_sandbox(&c.sandbox).map(|e| e.ifname.clone()).collect();
        let ifname = (0..).map(|i| format!("eth{i}")).find(|n| !taken.contains(n)).unwrap_or_default();
        let id = ep_id;
        let host_ifname = match kind {
            EndpointKind::Veth => format!("{VETH_PREFIX}{}", &id[..10]),
            EndpointKind::Tap => format!("{TAP_PREFIX}{}", &id[..10]),
        };
        // The default route comes from the first network with a way out, as Docker's:
        // never from an --internal one, and a sandbox whose default still points at an
        // internal network (state saved before this rule) gets it from this one.
        let holder = self.state.endpoints_of_sandbox(&c.sandbox).find(|e| e.default_route).map(|e| {
            let internal = self.state.networks.get(&e.network).is_some_and(|n| n.internal);
            (e.id.clone(), internal)
        });
        let default_route = !net.internal && holder.as_ref().is_none_or(|(_, internal)| *internal);
        let ep = Endpoint {
            id,
            network: net.name.clone(),
            sandbox: c.sandbox.clone(),
            ifname,
            host_ifname,
            kind,
            mac,
            ip,
            port_id: self.free_port_id()?,
            default_route,
            published,
            aliases: c.aliases.clone(),
            ip6,
        };
        if !netns::exists(&c.sandbox) {
            self.restore_namespace(&c.sandbox)?;
        }
        let sb = Netns::open_named(&c.sandbox).map_err(|e| format!("sandbox {}: namespace not usable: {e}", c.sandbox))?;
        self.realise_endpoint(&sb, &ep, &net, true)?;
        let undo = |me: &mut Controller| {
            me.proxy_remove(&ep);
            me.dp.detach(ep.port_id);
            endpoint::delete(&mut me.nl, Some(&sb), &ep);
        };
        if let Err(e) = self.proxy_add(&ep) {
            undo(self);
            return Err(e);
        }
        let mut new = self.state.clone();
        if default_route {
            if let Some(h) = holder.and_then(|(id, _)| new.endpoints.get_mut(&id)) {
                h.default_route = false;
            }
        }
        new.endpoints.insert(ep.id.clone(), ep.clone());
        if let Err(e) = self.commit(new) {
            undo(self);
            return Err(e);
        }
        self.dp.publish(&self.state);
        self.dns_sync(&ep.sandbox);
        self.cluster_publish(&ep);
        info!(network = %net.name, sandbox = %ep.sandbox, ip = %ep.ip, kind = %ep.kind, "connected");
        Ok(self.endpoint_json(&ep, &net))
    }

    /// A sandbox's namespace deleted behind our back (`ip netns del`): made again with
    /// its endpoints and its DNS, as a restart would.
    fn restore_namespace(&mut self, name: &str) -> R<()> {
        netns::create_named(name).map_err(|e| format!("sandbox {name}: namespace was deleted and cannot be recreated: {e}"))?;
        warn!(sandbox = %name, "sandbox namespace was deleted behind the switch; made again");
        let eps: Vec<Endpoint> = self.state.endpoints_of_sandbox(name).cloned().collect();
        if let Ok(sbns) = Netns::open_named(name) {
            for o in eps {
                let Some(onet) = self.state.networks.get(&o.network).cloned() else { continue };
                self.dp.detach(o.port_id);
                if let Some(n) = self.state.networks.get(&o.network) {
                    self.dp.flush_port(n.net_id, o.port_id);
                }
                if let Err(e) = self.realise_endpoint(&sbns, &o, &onet, false) {
                    warn!(sandbox = %name, network = %o.network, error = %e, "endpoint not restored");
                }
            }
        }
        if let Err(e) = self.dns_add_sandbox(name) {
            warn!(sandbox = %name, error = %e, "embedded DNS");
        }
        Ok(())
    }

    /// Creates (or, with `fresh == false`, reattaches to) the kernel objects of an
    /// endpoint and hands its port to the workers. On error nothing is left behind
    /// when `fresh`.
    fn realise_endpoint(&mut self, sb: &Netns, ep: &Endpoint, net: &Network, fresh: bool) -> R<()> {
        if fresh {
            // An interface of that name the user made in the sandbox: refuse before
            // anything is created (a failure half-way used to delete it as ours).
            let theirs = Netlink::open_in(sb).and_then(|mut nl| nl.link_by_name(&ep.ifname)).ok().flatten();
            if theirs.is_some() {
                return Err(format!(
                    "connecting {} to {}: the sandbox already has an interface {} that vswitchd did not make; remove it first",
                    ep.sandbox, ep.network, ep.ifname
                ));
            }
        }
        let workers = self.dp.worker_count();
        let tap_opts = self.dp.cfg.tap;
        let r: std::io::Result<()> = (|| match ep.kind {
            EndpointKind::Veth => {
                let exists = !fresh && self.nl.link_by_name(&ep.host_ifname)?.is_some();
                if exists {
                    endpoint::configure_switch_side(&mut self.nl, &ep.host_ifname, Some(net.mtu))?;
                    if let Err(e) = endpoint::configure_sandbox_side(sb, ep, net) {
                        // The sandbox end is gone or foreign: start over.
                        warn!(sandbox = %ep.sandbox, error = %e, "recreating veth endpoint");
                        endpoint::delete(&mut self.nl, Some(sb), ep);
                        endpoint::create_veth(&mut self.nl, sb, ep, net)?;
                    }
                } else {
                    endpoint::create_veth(&mut self.nl, sb, ep, net)?;
                }
                self.dp.attach_system(ep.port_id, &ep.host_ifname)
            }
            EndpointKind::Tap => {
                let reopened = if fresh { None } else { endpoint::reopen_tap(sb, &ep.ifname, workers, &tap_opts)? };
                let qs = match reopened {
                    Some(qs) => {
                        endpoint::configure_sandbox_side(sb, ep, net)?;
                        qs
                    }
                    None => endpoint::create_tap(&mut self.nl, sb, ep, net, workers, &tap_opts)?,
                };
                self.dp.attach_tap(ep.port_id, qs)
            }
        })();
        if let Err(e) = r {
            self.dp.detach(ep.port_id);
            if fresh {
                endpoint::delete(&mut self.nl, Some(sb), ep);
            }
            return Err(format!("connecting {} to {}: {e}", ep.sandbox, ep.network));
        }
        Ok(())
    }

    fn disconnect(&mut self, network: &str, sandbox: &str) -> R<Value> {
        if !self.state.networks.contains_key(network) {
            return Err(format!("network {network} not found"));
        }
        if !self.state.sandboxes.contains_key(sandbox) {
            return Err(format!("sandbox {sandbox} not found"));
        }
        let ep = self
            .state
            .endpoint(network, sandbox)
            .ok_or_else(|| format!("sandbox {sandbox} is not connected to network {network}"))?
            .clone();
        let net = self.state.networks[network].clone();
        if net.driver == crate::model::Driver::Overlay {
            // Its address claims live in the store: releasing them needs it.
            self.check_joined()?;
        }
        let mut new = self.state.clone();
        new.endpoints.remove(&ep.id);
        // The default route moves to the sandbox's next endpoint on a network with a way
        // out (not --internal), as Docker does.
        let heir = if ep.default_route {
            let nets = &new.networks;
            let h = new
                .endpoints
                .values_mut()
                .filter(|e| e.sandbox == sandbox && nets.get(&e.network).is_some_and(|n| !n.internal))
                .min_by(|a, b| a.ifname.cmp(&b.ifname));
            h.map(|h| {
                h.default_route = true;
                h.clone()
            })
        } else {
            None
        };
        self.cluster_withdraw(&ep)?;
        self.commit(new)?;
        self.dp.publish(&self.state);
        self.proxy_remove(&ep);
        self.dp.detach(ep.port_id);
        self.dp.flush_port(net.net_id, ep.port_id);
        self.gone_addrs.push(ep.ip);
        let sb = Netns::open_named(sandbox).ok();
        endpoint::delete(&mut self.nl, sb.as_ref(), &ep);
        if let (Some(h), Some(sb)) = (heir, sb.as_ref()) {
            let hnet = &self.state.networks[&h.network];
            let r = Netlink::open_in(sb).and_then(|mut nl| {
                let l = nl.link_by_name(&h.ifname)?.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
                endpoint::set_default_routes(&mut nl, hnet, l.index)
            });
            if let Err(e) = r {
                warn!(sandbox, error = %e, "moving the default route");
            }
        }
        self.dns_sync(sandbox);
        info!(network, sandbox, "disconnected");
        self.drop_stale_network(network);
        Ok(json!({"network": network, "sandbox": sandbox, "released_ip": ep.ip.to_string()}))
    }

    /// Starts the embedded DNS server (127.0.0.11 in every sandbox) and registers every
    /// sandbox and name of the state. Called once at start-up, after `reconcile`.
    pub fn start_dns(&mut self) {
        match crate::dns::DnsServer::start(crate::dns::DnsConfig::default()) {
            Ok(d) => self.dns = Some(d),
            Err(e) => {
                warn!(error = %e, "embedded DNS not started");
                return;
            }
        }
        let names: Vec<String> = self.state.sandboxes.keys().cloned().collect();
        for n in &names {
            if let Err(e) = self.dns_add_sandbox(n) {
                warn!(sandbox = %n, error = %e, "embedded DNS");
            }
        }
        if let Some(d) = &self.dns {
            d.set_names(self.name_table());
        }
    }

    fn name_table(&self) -> crate::dns::NameTable {
        let mut t = crate::dns::NameTable::default();
        for e in self.state.endpoints.values() {
            t.set_endpoint(
                &e.network,
                crate::dns::DnsEndpoint { sandbox: e.sandbox.clone(), aliases: e.aliases.clone(), ipv4: Some(e.ip), ipv6: e.ip6 },
            );
        }
        for e in self.remote_endpoints() {
            t.set_endpoint(&e.network, crate::dns::DnsEndpoint { sandbox: e.sandbox.clone(), aliases: e.aliases.clone(), ipv4: Some(e.ip), ipv6: e.ip6 });
        }
        t
    }

    /// The sandbox's upstream servers: `--dns`, else the host's; none for a sandbox
    /// whose networks are all `--internal` (as Docker, which does not forward their
    /// queries: they have no way out, and each lookup would wait for the timeout).
    fn upstreams(&self, sb: &Sandbox) -> Vec<std::net::SocketAddr> {
        let mut nets = self.state.endpoints_of_sandbox(&sb.name).map(|e| self.state.networks.get(&e.network).is_some_and(|n| n.internal)).peekable();
        if nets.peek().is_some() && nets.all(|internal| internal) {
            return Vec::new();
        }
        if sb.dns.is_empty() {
            crate::dns::host_upstreams()
        } else {
            sb.dns.iter().map(|ip| std::net::SocketAddr::new(*ip, 53)).collect()
        }
    }

    fn dns_add_sandbox(&mut self, name: &str) -> std::io::Result<()> {
        self.write_sandbox_files(name)?;
        let Some(sb) = self.state.sandboxes.get(name) else { return Ok(()) };
        let up = self.upstreams(sb);
        if let Some(d) = &self.dns {
            d.add_sandbox_with(name, &Netns::open_named(name)?, up, !sb.dns.is_empty())?;
        }
        Ok(())
    }

    /// /etc/netns/NAME/{resolv.conf,hosts,hostname}: `ip netns exec NAME` sees them.
    fn write_sandbox_files(&self, name: &str) -> std::io::Result<()> {
        let Some(sb) = self.state.sandboxes.get(name) else { return Ok(()) };
        let hostname = sb.hostname();
        let hosts = self
            .state
            .endpoints_of_sandbox(name)
            .flat_map(|e| {
                let v4 = crate::dns::files::HostEntry::own(std::net::IpAddr::V4(e.ip), &hostname, name, &e.aliases);
                let v6 = e.ip6.map(|a| crate::dns::files::HostEntry::own(std::net::IpAddr::V6(a), &hostname, name, &e.aliases));
                std::iter::once(v4).chain(v6)
            })
            .collect();
        let f = crate::dns::files::SandboxFiles {
            hostname,
            search: sb.dns_search.clone(),
            options: sb.dns_options.clone(),
            hosts,
            extra_hosts: vec![],
        };
        crate::dns::files::write_sandbox_files(name, &f)
    }

    /// After an endpoint of `sandbox` changed: names, upstreams (an internal-only
    /// sandbox forwards nothing) and the sandbox's hosts file.
    fn dns_sync(&mut self, sandbox: &str) {
        if let Some(d) = &self.dns {
            d.set_names(self.name_table());
            if let Some(sb) = self.state.sandboxes.get(sandbox) {
                let up = self.upstreams(sb);
                if d.sandboxes().get(sandbox).is_some_and(|cur| *cur != up) {
                    if let Err(e) = d.set_upstreams(sandbox, up) {
                        warn!(sandbox, error = %e, "embedded DNS upstreams");
                    }
                }
            }
        }
        if let Err(e) = self.write_sandbox_files(sandbox) {
            warn!(sandbox, error = %e, "writing /etc/netns files");
        }
    }

    /// Starts the userland proxy for the endpoint's published ports.
    fn proxy_add(&mut self, ep: &Endpoint) -> R<()> {
        if !self.opts.userland_proxy {
            return Ok(());
        }
        let t = |m: &crate::publish::PortMapping| crate::proxy::Target { sandbox: ep.sandbox.clone(), ip: ep.ip, port: m.container_port };
        // One descriptor per listener, and the daemon must keep some for its own work
        // (saving state, netlink, DNS, connections being relayed): refuse up front
        // rather than fail half-way.
        let needed = ep.published.iter().filter(|m| self.proxy.wants(m)).count();
        if let Some((free, limit)) = crate::proxy::free_descriptors() {
            if needed > 0 && needed + PROXY_FD_RESERVE > free {
                return Err(format!(
                    "-p: the userland proxy needs {needed} descriptors for these ports but only {} of vswitchd's {limit} are free; publish fewer ports, raise vswitchd's open-file limit, or run it with --userland-proxy=false",
                    free.saturating_sub(PROXY_FD_RESERVE)
                ));
            }
        }
        for (i, m) in ep.published.iter().enumerate() {
            if let Err(e) = self.proxy.add(m, &t(m)) {
                for m in &ep.published[..i] {
                    self.proxy.remove(m);
                }
                return Err(format!("-p {}:{}/{}: cannot listen on 127.0.0.1:{}/{}: {e}", m.host_port, m.container_port, m.proto, m.host_port, m.proto));
            }
        }
        Ok(())
    }

    fn proxy_remove(&mut self, ep: &Endpoint) {
        for m in &ep.published {
            self.proxy.remove(m);
        }
    }

    // ---- attached ports -------------------------------------------------------------

    fn port_add(&mut self, req: crate::api::PortAdd) -> R<Value> {
        let (network, ifname, kind) = (req.network.as_str(), req.ifname.as_str(), req.kind.as_deref());
        model::validate_ifname(ifname)?;
        let net = self.state.networks.get(network).ok_or_else(|| format!("network {network} not found"))?.clone();
        self.check_not_stale(network)?;
        let kind: PortKind = match kind {
            Some(k) => k.parse().map_err(|e| format!("--type: {e}"))?,
            None => PortKind::System,
        };
        if let Some(p) = self.state.ports.get(ifname) {
            return Err(format!("interface {ifname} is already a port of network {}", p.network));
        }
        if self.state.endpoints.values().any(|e| e.host_ifname == ifname) {
            return Err(format!("interface {ifname} belongs to an endpoint"));
        }
        if self.opts.uplink.as_ref().is_some_and(|u| u.ifname == ifname) {
            return Err(format!("interface {ifname} is the uplink (--uplink): bridging it would put the network on the outside segment"));
        }
        if kind == PortKind::System {
            if let Some(l) = self.nl.link_by_name(ifname).map_err(e2s)? {
                if let Some(why) = self.unfit_for_port(&l) {
                    return Err(why);
                }
            }
        }
        let dhcp = self.port_dhcp(&req, &net)?;
        let p = AttachedPort { network: network.to_string(), ifname: ifname.to_string(), kind, port_id: self.free_port_id()?, dhcp, netns: None };
        self.realise_port(&p, &net, true)?;
        let mut new = self.state.clone();
        new.ports.insert(ifname.to_string(), p.clone());
        if let Err(e) = self.commit(new) {
            self.dp.detach(p.port_id);
            return Err(e);
        }
        self.dp.publish(&self.state);
        info!(network, ifname, kind = %kind, dhcp = ?p.dhcp.as_ref().map(|d| d.ip), "port added");
        Ok(json!({"network": network, "interface": ifname, "type": kind, "port_id": p.port_id, "dhcp": p.dhcp.as_ref().map(|d| crate::dp::dhcp_json(d, self.state.networks.get(&p.network)))}))
    }

    /// The DHCP binding `port add` asked for (`--dhcp [--ip IP] [--dns IP]…`): the
    /// address is taken from the network's IPAM like a `connect`'s.
    fn port_dhcp(&self, req: &crate::api::PortAdd, net: &Network) -> R<Option<model::PortDhcp>> {
        if !req.dhcp {
            if req.ip.is_some() {
                return Err("--ip: only with --dhcp (the address the gateway hands out to the port)".into());
            }
            if !req.dns.is_empty() {
                return Err("--dns: only with --dhcp (the servers the gateway hands out to the port)".into());
            }
            return Ok(None);
        }
        // On an overlay network of a cluster, addresses are claimed in the store for
        // endpoints (routed overlays excepted: each host has its own /24).
        if self.opts.cluster.is_some() && net.driver == crate::model::Driver::Overlay && net.range.is_none() {
            return Err(format!(
                "--dhcp: network {} is an overlay network of the cluster, where addresses are claimed in the cluster store for sandboxes only; connect a sandbox instead, or use a local or routed network",
                net.name
            ));
        }
        let ip = ipam::choose(net, req.ip.as_deref(), &self.state.used_ipv4(&net.name))?;
        if req.dns.len() > dataplane::router::dhcp::DNS_MAX {
            return Err(format!("--dns: at most {} servers are handed out by DHCP, {} given", dataplane::router::dhcp::DNS_MAX, req.dns.len()));
        }
        let dns = req
            .dns
            .iter()
            .map(|d| d.parse::<Ipv4Addr>().map_err(|_| format!("--dns {d:?}: not an IPv4 address")))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(d) = dns.iter().find(|d| d.is_unspecified() || d.is_broadcast() || d.is_multicast() || d.is_loopback()) {
            return Err(format!("--dns {d}: not the address of a server the machine behind the port can reach"));
        }
        Ok(Some(model::PortDhcp { ip, dns }))
    }

    fn realise_port(&mut self, p: &AttachedPort, net: &Network, fresh: bool) -> R<()> {
        // Whether this call made the TAP: only then may a failure delete it.
        let mut made = false;
        let r: std::io::Result<()> = (|| match p.kind {
            PortKind::System => {
                let l = self
                    .nl
                    .link_by_name(&p.ifname)?
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("interface {} not found", p.ifname)))?;
                self.nl.set_up(l.index, true)?;
                self.dp.attach_system(p.port_id, &p.ifname)?;
                self.port_ifindex.insert(p.ifname.clone(), l.index);
                Ok(())
            }
            PortKind::Tap => {
                // Moved into another namespace by hand (noticed by `check_ports`): at a
                // restart it is reopened there, not made again here.
                if let Some(ns) = p.netns.as_deref().filter(|_| !fresh).and_then(|n| Netns::open_named(n).ok()) {
                    if let Some(qs) = endpoint::reopen_tap(&ns, &p.ifname, self.dp.worker_count(), &self.dp.cfg.tap)? {
                        return self.dp.attach_tap(p.port_id, qs);
                    }
                }
                match self.nl.link_by_name(&p.ifname)? {
                    // `--type tap` makes a new TAP; an interface of that name (a VM's
                    // TAP, anything else) is someone's, attached as a system port.
                    Some(_) if fresh => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("interface {} exists: --type tap makes a new TAP; attach an existing one (a VM's TAP too) without --type tap", p.ifname),
                        ))
                    }
                    Some(l) if l.kind.as_deref() != Some("tun") => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("interface {} exists and is not a TAP", p.ifname),
                        ))
                    }
                    Some(_) => {}
                    None => made = true,
                }
                let qs = dataplane::port::tap::TapQueue::open_queues(&p.ifname, self.dp.worker_count(), &self.dp.cfg.tap)?;
                qs[0].set_persist(true)?;
                if let Some(l) = self.nl.link_by_name(&p.ifname)? {
                    if made {
                        let _ = self.nl.modify_link(l.index, &LinkChange { alias: Some(endpoint::PORT_TAP_ALIAS), ..Default::default() });
                    }
                    let _ = self.nl.set_mtu(l.index, net.mtu);
                    self.nl.set_up(l.index, true)?;
                    self.port_ifindex.insert(p.ifname.clone(), l.index);
                }
                self.dp.attach_tap(p.port_id, qs)
            }
        })();
        r.map_err(|e| {
            self.dp.detach(p.port_id);
            if made {
                if let Ok(Some(l)) = self.nl.link_by_name(&p.ifname) {
                    let _ = self.nl.delete_link(l.index);
                }
            }
            format!("port {}: {e}", p.ifname)
        })
    }

    fn port_rm(&mut self, network: &str, ifname: &str) -> R<Value> {
        let p = self.state.ports.get(ifname).ok_or_else(|| format!("interface {ifname} is not a port"))?.clone();
        if p.network != network {
            return Err(format!("interface {ifname} is a port of network {}, not {network}", p.network));
        }
        let net_id = self.state.networks.get(network).map(|n| n.net_id);
        let mut new = self.state.clone();
        new.ports.remove(ifname);
        self.commit(new)?;
        self.dp.publish(&self.state);
        self.dp.detach(p.port_id);
        if let Some(id) = net_id {
            self.dp.flush_port(id, p.port_id);
        }
        if p.kind == PortKind::Tap {
            if let Ok(Some(l)) = self.nl.link_by_name(ifname) {
                let _ = self.nl.delete_link(l.index);
            } else if let Some(ns) = p.netns.as_deref().and_then(|n| Netns::open_named(n).ok()) {
                endpoint::delete_in_sandbox(&ns, ifname);
            }
        }
        self.tap_searched.remove(ifname);
        info!(network, ifname, "port removed");
        self.drop_stale_network(network);
        Ok(json!({"removed": ifname}))
    }

    /// Ports with their link's carrier (a TAP has none while no VM holds it open; null
    /// when the interface is not in the daemon's namespace).
    fn port_ls(&mut self) -> Value {
        let ports: Vec<crate::model::AttachedPort> = self.state.ports.values().cloned().collect();
        Value::Array(
            ports
                .iter()
                .map(|p| {
                    let carrier = self.nl.link_by_name(&p.ifname).ok().flatten().map(|l| l.oper_up);
                    json!({"network": p.network, "interface": p.ifname, "type": p.kind, "port_id": p.port_id, "attached": self.dp.is_attached(p.port_id), "carrier": carrier, "netns": p.netns, "dhcp": p.dhcp.as_ref().map(|d| crate::dp::dhcp_json(d, self.state.networks.get(&p.network)))})
                })
                .collect(),
        )
    }

    // ---- dumps ------------------------------------------------------------------------

    fn conntrack_ls(&self) -> Value {
        let now = dataplane::clock::now_secs();
        let mut v = Vec::new();
        self.dp.conntrack().dump(now, |c| {
            v.push(json!({
                "proto": match c.orig.proto { 6 => "tcp".to_string(), 17 => "udp".to_string(), 1 => "icmp".to_string(), p => p.to_string() },
                "orig": c.orig.to_string(),
                "reply": c.reply.to_string(),
                "state": c.state.name(),
                "snat": c.snat,
                "dnat": c.dnat,
                "age": now.saturating_sub(c.created),
                "expires_in": c.expires_in,
            }));
        });
        Value::Array(v)
    }

    fn port_mappings(&self, sandbox: &str) -> R<Value> {
        if !self.state.sandboxes.contains_key(sandbox) {
            return Err(format!("sandbox {sandbox} not found"));
        }
        let mut v: Vec<(crate::publish::PortMapping, String)> = self
            .state
            .endpoints_of_sandbox(sandbox)
            .flat_map(|e| e.published.iter().map(move |m| (*m, e.network.clone())))
            .collect();
        // By container port first, as `docker port` lists them.
        v.sort_by_key(|(m, net)| (m.container_port, m.proto, m.host_ip, m.host_port, net.clone()));
        Ok(Value::Array(
            v.into_iter()
                .map(|(m, net)| {
                    json!({"proto": m.proto, "container_port": m.container_port, "host_ip": m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string(), "host_port": m.host_port, "network": net, "text": m.to_string()})
                })
                .collect(),
        ))
    }

    /// Every port: (id, display name, network, kind).
    fn all_ports(&self) -> Vec<(u16, String, String, String)> {
        let mut v: Vec<_> = self
            .state
            .endpoints
            .values()
            .map(|e| (e.port_id, format!("{}/{}", e.sandbox, e.ifname), e.network.clone(), format!("{}-endpoint", e.kind)))
            .chain(self.state.ports.values().map(|p| (p.port_id, p.ifname.clone(), p.network.clone(), p.kind.to_string())))
            // Tunnels to other hosts, named after the remote end (like the `dst` of a
            // kernel VXLAN fdb entry), and the uplink.
            .chain(self.peer_ports.iter().map(|((net, host), id)| {
                let kind = self.state.networks.get(net).and_then(|n| n.encap).map_or_else(|| "tunnel".to_string(), |e| e.to_string());
                (*id, format!("{kind}:{host}"), net.clone(), "tunnel".to_string())
            }))
            .chain(self.mesh_ports.iter().map(|((net, peer), id)| {
                let who = self.mesh_up.get(peer).map_or_else(|| format!("peer{peer}"), |k| dataplane::mesh::key_to_base64(k).chars().take(8).collect());
                (*id, format!("mesh:{who}"), net.clone(), "tunnel".to_string())
            }))
            .chain(self.opts.uplink.as_ref().map(|u| (UPLINK_PORT, format!("uplink:{}", u.ifname), String::new(), "uplink".to_string())))
            .collect();
        v.sort();
        v
    }

    fn fdb_show(&self, network: &str) -> R<Value> {
        let net = self.state.networks.get(network).ok_or_else(|| format!("network {network} not found"))?;
        let names = self.all_ports();
        let now = dataplane::clock::now_secs();
        let mut rows: Vec<(u16, String, u32)> = match self.dp.fdb(net.net_id) {
            Some(f) => f.entries().into_iter().map(|e| (e.port, e.mac.to_string(), now.saturating_sub(e.seen))).collect(),
            None => vec![],
        };
        rows.sort();
        Ok(Value::Array(
            rows.into_iter()
                .map(|(port, mac, age)| {
                    let name = names.iter().find(|n| n.0 == port).map(|n| n.1.clone()).unwrap_or_else(|| format!("#{port}"));
                    json!({"port": name, "port_id": port, "mac": mac, "age": age})
                })
                .collect(),
        ))
    }

    fn stats(&self, port: Option<&str>) -> R<Value> {
        let all = self.all_ports();
        let host_names: Vec<(u16, String)> = self
            .state
            .endpoints
            .values()
            .map(|e| (e.port_id, e.host_ifname.clone()))
            .collect();
        let selected: Vec<_> = match port {
            None => all.clone(),
            Some(q) => {
                let v: Vec<_> = all
                    .iter()
                    .filter(|p| {
                        p.1 == q
                            || host_names.iter().any(|h| h.0 == p.0 && h.1 == q)
                            || p.0.to_string() == q
                            || (p.0 == UPLINK_PORT && p.1.strip_prefix("uplink:") == Some(q))
                    })
                    .cloned()
                    .collect();
                if v.is_empty() {
                    return Err(format!("--port: port {q:?} not found"));
                }
                v
            }
        };
        let ports: Vec<Value> = selected
            .iter()
            .map(|(id, name, net, kind)| {
                let t = self.dp.port_totals(*id);
                json!({
                    "port": name, "port_id": id, "network": net, "type": kind, "attached": self.dp.is_attached(*id),
                    "rx_packets": t.rx_packets, "rx_bytes": t.rx_bytes, "tx_packets": t.tx_packets, "tx_bytes": t.tx_bytes,
                    "tx_dropped": t.tx_dropped, "rx_dropped": t.rx_dropped,
                })
            })
            .collect();
        let snap = self.dp.snapshot();
        let drops: serde_json::Map<String, Value> = snap.drops.iter().map(|(r, n)| (r.as_str().to_string(), json!(n))).collect();
        let events: serde_json::Map<String, Value> = snap.events.iter().map(|(r, n)| (r.as_str().to_string(), json!(n))).collect();
        let ids: Vec<u16> = all.iter().map(|p| p.0).collect();
        Ok(json!({"workers": self.dp.worker_count(), "worker_rx_packets": self.dp.worker_rx(&ids), "ports": ports, "drops": drops, "events": events}))
    }

    // ---- start-up -----------------------------------------------------------------------

    /// Brings kernel objects and the dataplane in line with the saved state after a
    /// start: recreates missing sandboxes and endpoints, reattaches to the ones that
    /// survived, removes orphaned switch-side links, and publishes the tables.
    pub fn reconcile(&mut self) {
        let known: BTreeSet<String> = self
            .state
            .endpoints
            .values()
            .map(|e| e.host_ifname.clone())
            .chain(self.state.ports.keys().cloned())
            .collect();
        if let Ok(links) = self.nl.links() {
            for l in links {
                let ours = (l.name.starts_with(VETH_PREFIX) || l.name.starts_with(TAP_PREFIX)) && l.name.len() == 13;
                let our_port_tap = endpoint::is_marked_tap(&l, endpoint::PORT_TAP_ALIAS);
                if (ours || our_port_tap) && !known.contains(&l.name) {
                    info!(link = %l.name, "removing orphaned link");
                    let _ = self.nl.delete_link(l.index);
                }
            }
        }
        // TAPs of endpoints live in their sandboxes: one the state does not know (the
        // daemon was killed between making it and saving, or between saving a
        // disconnect and deleting it) is removed; it would hold an address and the name.
        for name in self.state.sandboxes.keys() {
            let Ok(sb) = Netns::open_named(name) else { continue };
            let Ok(mut nl) = Netlink::open_in(&sb) else { continue };
            let mine: BTreeSet<&str> = self.state.endpoints_of_sandbox(name).map(|e| e.ifname.as_str()).collect();
            for l in nl.links().unwrap_or_default() {
                if endpoint::is_marked_tap(&l, endpoint::ENDPOINT_TAP_ALIAS) && !mine.contains(l.name.as_str()) {
                    info!(sandbox = %name, link = %l.name, "removing orphaned TAP");
                    let _ = nl.delete_link(l.index);
                }
            }
        }
        // A namespace noted as being made or removed that the state does not hold: the
        // daemon was killed before it saved a `sandbox create`, or after it saved a
        // `sandbox rm`. Ours, so it goes (it would block the name) — unless the note has
        // an inode and the namespace of that name now is another one.
        for (name, ino) in self.store.pending_netns() {
            let noted = ino.is_none() || netns::inode(&name) == ino;
            if !self.state.sandboxes.contains_key(&name) && netns::exists(&name) && noted {
                let _ = crate::dns::files::remove_sandbox_files(&name);
                match netns::delete_named(&name) {
                    Ok(()) => info!(sandbox = %name, "removed the namespace of an interrupted sandbox create or rm"),
                    Err(e) => {
                        warn!(sandbox = %name, error = %e, "cannot remove the namespace of an interrupted sandbox create or rm");
                        continue;
                    }
                }
            }
            self.store.unmark_netns(&name);
        }
        let sandboxes: Vec<String> = self.state.sandboxes.keys().cloned().collect();
        for name in &sandboxes {
            if !netns::exists(name) {
                match netns::create_named(name) {
                    Ok(_) => info!(sandbox = %name, "recreated missing namespace"),
                    Err(e) => warn!(sandbox = %name, error = %e, "cannot recreate namespace"),
                }
            }
        }
        let eps: Vec<Endpoint> = self.state.endpoints.values().cloned().collect();
        let total = eps.len();
        for (i, ep) in eps.iter().enumerate() {
            let Some(net) = self.state.networks.get(&ep.network).cloned() else { continue };
            let sb = match Netns::open_named(&ep.sandbox) {
                Ok(sb) => sb,
                Err(e) => {
                    warn!(sandbox = %ep.sandbox, error = %e, "sandbox namespace unavailable");
                    continue;
                }
            };
            if let Err(e) = self.realise_endpoint(&sb, ep, &net, false) {
                warn!(error = %e, "endpoint not restored");
            }
            // At a restart each port on its own: one host port taken meanwhile must not
            // cost the endpoint's other ports their proxy.
            if self.opts.userland_proxy {
                for m in &ep.published {
                    let t = crate::proxy::Target { sandbox: ep.sandbox.clone(), ip: ep.ip, port: m.container_port };
                    if let Err(e) = self.proxy.add(m, &t) {
                        warn!(sandbox = %ep.sandbox, port = %m, error = %e, "userland proxy for this port not restored (127.0.0.1:{}/{} in use?)", m.host_port, m.proto);
                    }
                }
            }
            if total >= 20 && (i + 1) % 20 == 0 {
                info!("restored {}/{} endpoints", i + 1, total);
            }
        }
        let ports: Vec<AttachedPort> = self.state.ports.values().cloned().collect();
        for p in &ports {
            let Some(net) = self.state.networks.get(&p.network).cloned() else { continue };
            if let Err(e) = self.realise_port(p, &net, false) {
                warn!(error = %e, "port not attached");
            }
        }
        if let Some(a) = self.opts.advertise {
            let mtu = self.underlay_mtu_of(a);
            match self.dp.start_underlay(a, self.opts.vxlan_port, mtu) {
                Ok(()) => {
                    info!(advertise = %a, peers = ?self.opts.peers, "underlay up");
                    let nets: Vec<Network> = self.state.networks.values().cloned().collect();
                    for n in &nets {
                        self.attach_peers(n);
                    }
                }
                Err(e) => warn!(advertise = %a, error = %e, "underlay not started; overlay networks are down"),
            }
        }
        if let Some(u) = self.opts.uplink.clone() {
            if let Err(e) = self.attach_uplink(&u) {
                warn!(uplink = %u.ifname, error = %e, "uplink not attached");
            }
        }
        self.dp.publish(&self.state);
        info!(
            networks = self.state.networks.len(),
            sandboxes = self.state.sandboxes.len(),
            endpoints = total,
            ports = ports.len(),
            "state restored"
        );
    }

    /// Tunnel ports of an overlay network to every peer host.
    fn attach_peers(&mut self, n: &Network) {
        let (Some(e), Some(vni)) = (n.encap, n.vni) else { return };
        if self.cluster_stale.contains(&n.name) {
            return; // cut off from other hosts (see drop_cluster_network)
        }
        if e == crate::model::Encap::Mesh {
            let up: Vec<(u32, [u8; 32])> = self.mesh_up.iter().map(|(i, k)| (*i, *k)).collect();
            for (peer, key) in up {
                self.attach_mesh_port(n, vni, peer, &key);
            }
            return;
        }
        let tunnel = match e {
            crate::model::Encap::Vxlan => match dataplane::encap::Vni::new(vni) {
                Some(v) => dataplane::encap::Tunnel::Vxlan(v),
                None => return,
            },
            crate::model::Encap::Gre => dataplane::encap::Tunnel::Gre(Some(vni)),
            crate::model::Encap::Udp => dataplane::encap::Tunnel::Udp,
            crate::model::Encap::Mesh => return,
        };
        // `--peer IP[:PORT]` hosts use the port given (else this host's); cluster hosts
        // publish theirs.
        let peers: std::collections::BTreeMap<Ipv4Addr, u16> = self.opts.peers.iter().copied().chain(self.cluster_hosts.iter().map(|(h, p)| (*h, *p))).collect();
        for (peer, udp_port) in peers {
            if self.peer_ports.contains_key(&(n.name.clone(), peer)) {
                continue;
            }
            let Ok(id) = self.free_port_id() else { return };
            match self.dp.attach_peer(id, n.net_id, dataplane::encap::Peer { remote: peer, tunnel }, udp_port) {
                Ok(()) => {
                    self.peer_ports.insert((n.name.clone(), peer), id);
                }
                Err(e) => warn!(network = %n.name, peer = %peer, error = %e, "tunnel port"),
            }
        }
    }

    /// The port of mesh peer `peer` on encrypted network `n`.
    fn attach_mesh_port(&mut self, n: &Network, vni: u32, peer: u32, key: &[u8; 32]) {
        if self.mesh_ports.contains_key(&(n.name.clone(), peer)) {
            return;
        }
        let Ok(id) = self.free_port_id() else { return };
        let b64 = dataplane::mesh::key_to_base64(key);
        let name = format!("mesh-{}", b64.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect::<String>());
        match self.dp.attach_mesh_peer(id, n.net_id, peer, vni, name) {
            Ok(()) => {
                self.mesh_ports.insert((n.name.clone(), peer), id);
            }
            Err(e) => warn!(network = %n.name, peer = %b64, error = %e, "mesh port"),
        }
    }

    /// Connects the mesh agent (at start, before `reconcile`).
    pub fn set_mesh(&mut self, m: std::sync::Arc<crate::meshd::MeshHandle>) {
        self.mesh = Some(m);
    }

    /// A mesh peer became reachable or was lost: its ports on every encrypted network
    /// come and go with it.
    pub fn mesh_event(&mut self, ev: crate::meshd::MeshEvent) {
        match ev {
            crate::meshd::MeshEvent::PeerUp { index, key } => {
                self.mesh_up.insert(index, key);
                let nets: Vec<Network> = self.state.networks.values().filter(|n| n.encap == Some(crate::model::Encap::Mesh) && !self.cluster_stale.contains(&n.name)).cloned().collect();
                for n in &nets {
                    if let Some(vni) = n.vni {
                        self.attach_mesh_port(n, vni, index, &key);
                    }
                }
            }
            crate::meshd::MeshEvent::PeerDown { index, .. } => {
                self.mesh_up.remove(&index);
                let gone: Vec<((String, u32), u16)> = self.mesh_ports.iter().filter(|((_, p), _)| *p == index).map(|(k, v)| (k.clone(), *v)).collect();
                for (k, id) in gone {
                    self.mesh_ports.remove(&k);
                    self.dp.detach_mesh_peer(id);
                    if let Some(n) = self.state.networks.get(&k.0) {
                        self.dp.flush_port(n.net_id, id);
                    }
                }
            }
        }
        self.dp.publish(&self.state);
    }

    /// Takes network `network`'s tunnel and mesh ports away (and, if the network is
    /// still there, the MACs learnt behind them).
    fn detach_peers(&mut self, network: &str) {
        let net = self.state.networks.get(network).map(|n| n.net_id);
        let mesh: Vec<((String, u32), u16)> = self.mesh_ports.iter().filter(|((n, _), _)| n == network).map(|(k, v)| (k.clone(), *v)).collect();
        for (k, id) in mesh {
            self.dp.detach_mesh_peer(id);
            self.mesh_ports.remove(&k);
            if let Some(net) = net {
                self.dp.flush_port(net, id);
            }
        }
        let ids: Vec<((String, Ipv4Addr), u16)> =
            self.peer_ports.iter().filter(|((n, _), _)| n == network).map(|(k, v)| (k.clone(), *v)).collect();
        for (k, id) in ids {
            self.dp.detach_peer(id);
            self.peer_ports.remove(&k);
            if let Some(net) = net {
                self.dp.flush_port(net, id);
            }
        }
    }

    /// MTU of the interface holding the underlay address (1500 if unknown).
    fn underlay_mtu(&mut self) -> u32 {
        let Some(a) = self.dp.advertise() else { return 1500 };
        self.underlay_mtu_of(a)
    }

    fn underlay_mtu_of(&mut self, a: Ipv4Addr) -> u32 {
        self.link_with_address(a).map_or(1500, |l| l.mtu)
    }

    /// The first default-pool subnet free of this host's networks, its own subnets
    /// ([`Controller::host_subnets`]) and `more`.
    fn pool_subnet(&mut self, more: Vec<Ipv4Cidr>) -> R<Ipv4Cidr> {
        let mut taken: Vec<Ipv4Cidr> = self.state.networks.values().map(|n| n.range.unwrap_or(n.subnet)).collect();
        taken.extend(self.host_subnets().into_iter().map(|x| x.1));
        taken.extend(more);
        ipam::pick_subnet(&taken).ok_or_else(|| "no free subnet left in the default pools; give one with --subnet".to_string())
    }

    /// IPv4 subnets of this host that a network must not overlap (the sandboxes would
    /// shadow them): the uplink's (its address belongs to the dataplane, not to the
    /// kernel) and those of the addresses on the namespace's own interfaces (the
    /// underlay among them), loopback excepted.
    fn host_subnets(&mut self) -> Vec<(String, Ipv4Cidr)> {
        let mut out = Vec::new();
        if let Some(u) = &self.opts.uplink {
            out.push((format!("the uplink {} (--uplink)", u.ifname), u.addr.trunc()));
        }
        for (name, a, len) in self.local_addrs() {
            if let Ok(c) = Ipv4Cidr::new(a, len) {
                out.push((format!("interface {name}"), c.trunc()));
            }
        }
        out
    }

    /// Every address on the namespace's interfaces: (interface, address, prefix length).
    fn iface_addrs(&mut self) -> Vec<(String, std::net::IpAddr, u8)> {
        let mut out = Vec::new();
        let Ok(links) = self.nl.links() else { return out };
        for l in links {
            if let Ok(addrs) = self.nl.addresses(l.index) {
                out.extend(addrs.into_iter().map(|(ip, len)| (l.name.clone(), ip, len)));
            }
        }
        out
    }

    /// The IPv6 prefixes of the global addresses on the namespace's interfaces.
    fn local_subnets6(&mut self) -> Vec<(String, crate::model::Ipv6Cidr)> {
        self.iface_addrs()
            .into_iter()
            .filter_map(|(name, ip, len)| match ip {
                std::net::IpAddr::V6(a) => Some((name, crate::model::Ipv6Cidr { addr: a, prefix_len: len.min(128) })),
                _ => None,
            })
            .filter(|(_, c)| crate::model::special_ipv6(c).is_none())
            .map(|(name, c)| (name, crate::model::Ipv6Cidr { addr: c.network(), prefix_len: c.prefix_len }))
            .collect()
    }

    /// The IPv4 addresses on the namespace's interfaces, loopback excepted:
    /// (interface, address, prefix length).
    fn local_addrs(&mut self) -> Vec<(String, Ipv4Addr, u8)> {
        self.iface_addrs()
            .into_iter()
            .filter_map(|(name, ip, len)| match ip {
                std::net::IpAddr::V4(a) if !a.is_loopback() => Some((name, a, len)),
                _ => None,
            })
            .collect()
    }

    /// Whether `ip` can be another mesh member as seen from this host: not one of this
    /// host's own addresses, nor the broadcast or network address of one of its subnets
    /// (a directed broadcast would carry every hello to the whole segment).
    pub fn check_mesh_member(&mut self, ip: Ipv4Addr) -> Result<(), String> {
        if Some(ip) == self.opts.advertise {
            return Err(format!("{ip} is an address of this host"));
        }
        for (ifname, a, len) in self.local_addrs() {
            if a == ip {
                return Err(format!("{ip} is an address of this host"));
            }
            if len < 31 {
                let net = crate::model::Ipv4Cidr { addr: a, prefix_len: len };
                if ip == net.broadcast() || ip == net.network() {
                    let what = if ip == net.network() { "network" } else { "broadcast" };
                    return Err(format!("{ip} is the {what} address of {}/{len} on interface {ifname}, not a host", net.network()));
                }
            }
        }
        Ok(())
    }

    /// Checks the daemon's host options against the namespace before anything starts:
    /// the uplink must exist and be an Ethernet interface, the --advertise address must
    /// be one of this host's (either missing used to leave the daemon running with no
    /// way out or with every overlay network down, saying so only in its log).
    pub fn check_host_options(&mut self) -> Result<(), String> {
        if let Some(u) = self.opts.uplink.clone() {
            if let Some(n) = self.state.networks.values().find(|n| n.subnet.overlaps(&u.addr.trunc())) {
                return Err(format!("--uplink-addr {}: its subnet overlaps the subnet {} of network {}", u.addr, n.subnet, n.name));
            }
            let l = self.nl.link_by_name(&u.ifname).map_err(e2s)?.ok_or_else(|| format!("--uplink {}: no such interface in this namespace", u.ifname))?;
            if l.mac.is_none_or(|m| m == [0; 6]) {
                return Err(format!("--uplink {}: not an Ethernet interface", u.ifname));
            }
            // The same interface as a bridge port would put the outside straight into
            // the network, past NAT and isolation (both sockets get its frames).
            if let Some(p) = self.state.ports.get(&u.ifname) {
                return Err(format!("--uplink {}: is a port of network {} (`port rm {} {}` first)", u.ifname, p.network, p.network, u.ifname));
            }
            if let Some(e) = self.state.endpoints.values().find(|e| e.host_ifname == u.ifname) {
                return Err(format!("--uplink {}: is the switch end of sandbox {}'s endpoint on network {}", u.ifname, e.sandbox, e.network));
            }
            if let Some(a) = self.opts.advertise {
                if self.link_with_address(a).is_some_and(|x| x.index == l.index) {
                    return Err(format!("--uplink {}: carries the underlay address {a} (--advertise); the uplink's address belongs to the switch", u.ifname));
                }
            }
        }
        if let Some(a) = self.opts.advertise {
            if self.link_with_address(a).is_none() {
                return Err(format!("--advertise {a}: no interface in this namespace has that address"));
            }
        }
        Ok(())
    }

    /// The interface holding address `a` in the daemon's namespace.
    fn link_with_address(&mut self, a: Ipv4Addr) -> Option<crate::netlink::LinkInfo> {
        let links = self.nl.links().ok()?;
        links.into_iter().find(|l| self.nl.addresses(l.index).is_ok_and(|addrs| addrs.iter().any(|(ip, _)| *ip == std::net::IpAddr::V4(a))))
    }

    /// Why interface `ifname` cannot become a bridge port, if it cannot: the loopback
    /// (frames sent to it come straight back in: every MAC would move to it), a link
    /// without Ethernet addresses (AF_PACKET would hand us IP packets as frames), the
    /// underlay (the network would be bridged onto the tunnels' own wire), or a member
    /// of a kernel bridge or bond. (The uplink is refused by the caller for every kind.)
    fn unfit_for_port(&mut self, l: &crate::netlink::LinkInfo) -> Option<String> {
        let name = &l.name;
        if l.mac.is_none_or(|m| m == [0; 6]) {
            return Some(format!("interface {name} is not an Ethernet interface (loopback or layer-3 link)"));
        }
        if matches!(l.kind.as_deref(), Some("bridge") | Some("openvswitch")) {
            return Some(format!("interface {name} is a switch itself (a kernel or OVS bridge): add its member interfaces, or the ports it would carry, instead"));
        }
        if let Some(a) = self.opts.advertise {
            if self.link_with_address(a).is_some_and(|u| u.index == l.index) {
                return Some(format!("interface {name} carries the underlay address {a} (--advertise): the tunnels run over it"));
            }
        }
        if let Some(m) = l.master {
            let master = self.nl.links().ok().and_then(|ls| ls.into_iter().find(|x| x.index == m)).map_or_else(|| format!("ifindex {m}"), |x| x.name);
            return Some(format!("interface {name} is already enslaved to {master}"));
        }
        // A macvlan, ipvlan or VLAN stacked on the uplink or the underlay puts the network
        // on that wire just the same (a veth's IFLA_LINK is its peer, maybe elsewhere).
        if let (Some(parent), None) = (l.link, l.link_netnsid) {
            if parent != l.index && l.kind.as_deref() != Some("veth") {
                let uplink = self.opts.uplink.as_ref().and_then(|u| self.nl.link_by_name(&u.ifname).ok().flatten()).map(|u| u.index);
                let underlay = self.opts.advertise.and_then(|a| self.link_with_address(a)).map(|u| u.index);
                if Some(parent) == uplink || Some(parent) == underlay {
                    let what = if Some(parent) == uplink { "the uplink" } else { "the underlay interface" };
                    return Some(format!("interface {name} is stacked on {what}: bridging it would put the network on that segment"));
                }
            }
        }
        None
    }

    /// Attaches the uplink interface: up, no kernel ARP (the dataplane answers for the
    /// uplink address), no IPv6 link-local, read with AF_PACKET like any port.
    fn attach_uplink(&mut self, u: &UplinkCfg) -> R<()> {
        let l = self
            .nl
            .link_by_name(&u.ifname)
            .map_err(e2s)?
            .ok_or_else(|| format!("--uplink {}: interface not found", u.ifname))?;
        let mac = l.mac.ok_or_else(|| format!("--uplink {}: has no Ethernet address", u.ifname))?;
        endpoint::configure_switch_side(&mut self.nl, &u.ifname, None).map_err(e2s)?;
        self.dp.attach_system(UPLINK_PORT, &u.ifname).map_err(e2s)?;
        self.port_ifindex.insert(u.ifname.clone(), l.index);
        self.dp.set_uplink(Some(dataplane::tables::UplinkEntry {
            port: UPLINK_PORT,
            ip: u.addr.addr,
            prefix_len: u.addr.prefix_len,
            mac: MacAddr(mac),
            gateway: u.gateway,
            mtu: l.mtu,
        }));
        info!(uplink = %u.ifname, addr = %u.addr, gateway = ?u.gateway, "uplink attached");
        Ok(())
    }

    /// Notices a switch-made TAP port moved into another named namespace by hand (as a
    /// VM manager does) and records the namespace, so a restart reopens the TAP there
    /// instead of making a new one here; moved back, the record goes. The TAP is known
    /// by name, kind and interface index (a move keeps the index unless it is taken).
    fn follow_moved_tap(&mut self, p: &AttachedPort) {
        if !self.dp.is_attached(p.port_id) || self.dp.port_totals(p.port_id).gone > 0 {
            return;
        }
        let here = self.nl.link_by_name(&p.ifname).ok().flatten();
        if here.is_some() {
            self.tap_searched.remove(&p.ifname);
        }
        let found = match (&here, &p.netns) {
            (Some(l), Some(_)) if l.kind.as_deref() == Some("tun") => None,
            (Some(_), _) | (None, Some(_)) => return,
            (None, None) => {
                let Some(&idx) = self.port_ifindex.get(&p.ifname) else { return };
                if !self.tap_searched.insert(p.ifname.clone()) {
                    return;
                }
                let hit = netns::list_named().unwrap_or_default().into_iter().find(|n| {
                    Netns::open_named(n).ok().and_then(|ns| endpoint::tap_in(&ns, &p.ifname)).is_some_and(|l| l.index == idx)
                });
                match hit {
                    Some(n) => Some(n),
                    None => return,
                }
            }
        };
        let mut new = self.state.clone();
        if let Some(q) = new.ports.get_mut(&p.ifname) {
            q.netns = found.clone();
        }
        if self.commit(new).is_ok() {
            self.tap_searched.remove(&p.ifname);
            match found {
                Some(n) => info!(interface = %p.ifname, netns = %n, "TAP port moved to another namespace; reopened there at a restart"),
                None => info!(interface = %p.ifname, "TAP port back in the daemon's namespace"),
            }
        }
    }

    /// The shared connection and neighbour tables, for the housekeeping sweeps.
    pub fn router_tables(&self) -> (std::sync::Arc<dataplane::nat::ConnTable>, std::sync::Arc<dataplane::router::neigh::NeighCache>) {
        (self.dp.conntrack().clone(), self.dp.neigh().clone())
    }

    /// Follows the interfaces of system ports (housekeeping, every second): one that
    /// disappeared is detached (and shown as down), one that appears again under the
    /// port's name — a VM restarted with the same TAP name, a veth made again — is
    /// attached again, as OVS does with its ports.
    pub fn check_ports(&mut self) {
        let ports: Vec<AttachedPort> = self.state.ports.values().filter(|p| p.kind == PortKind::System).cloned().collect();
        let mut changed = false;
        for p in ports {
            let Ok(link) = self.nl.link_by_name(&p.ifname) else { continue };
            let attached = self.dp.is_attached(p.port_id);
            let Some(net) = self.state.networks.get(&p.network).cloned() else { continue };
            match link {
                None if attached => {
                    self.dp.detach(p.port_id);
                    self.dp.flush_port(net.net_id, p.port_id);
                    self.port_ifindex.remove(&p.ifname);
                    warn!(interface = %p.ifname, network = %p.network, "port's interface is gone; it is attached again when it comes back");
                    changed = true;
                }
                Some(l) if !attached || self.port_ifindex.get(&p.ifname) != Some(&l.index) => {
                    if attached {
                        self.dp.detach(p.port_id);
                        self.dp.flush_port(net.net_id, p.port_id);
                    }
                    // What comes back under the name must pass `port add`'s checks.
                    if let Some(why) = self.unfit_for_port(&l) {
                        if self.port_ifindex.remove(&p.ifname).is_some() || attached {
                            warn!(interface = %p.ifname, network = %p.network, reason = %why, "port's interface came back unfit; not attached");
                        }
                        changed = true;
                        continue;
                    }
                    match self.realise_port(&p, &net, false) {
                        Ok(()) => info!(interface = %p.ifname, network = %p.network, "port's interface is back; attached again"),
                        Err(e) => tracing::debug!(interface = %p.ifname, error = %e, "port not attached yet"),
                    }
                    changed = true;
                }
                _ => {}
            }
        }
        // The uplink likewise: deleted and made again (a NIC driver reloaded, a veth
        // re-created), it is attached again.
        if let Some(u) = self.opts.uplink.clone() {
            if let Ok(link) = self.nl.link_by_name(&u.ifname) {
                let attached = self.dp.is_attached(UPLINK_PORT);
                match link {
                    None if attached => {
                        self.dp.detach(UPLINK_PORT);
                        self.port_ifindex.remove(&u.ifname);
                        warn!(uplink = %u.ifname, "the uplink interface is gone; it is attached again when it comes back");
                        changed = true;
                    }
                    Some(l) if !attached || self.port_ifindex.get(&u.ifname) != Some(&l.index) => {
                        if attached {
                            self.dp.detach(UPLINK_PORT);
                        }
                        // Neighbours learnt on the old link may have new MACs now.
                        let _ = self.dp.neigh().flush_egress(dataplane::router::neigh::UPLINK_EGRESS);
                        if let Err(e) = self.attach_uplink(&u) {
                            tracing::debug!(uplink = %u.ifname, error = %e, "uplink not attached yet");
                        }
                        changed = true;
                    }
                    // Its MTU changed (`ip link set … mtu`): the router's MTU checks and
                    // fragmentation follow (they used the value read at start).
                    Some(l) => {
                        if let Some(mut e) = self.dp.uplink().filter(|e| e.mtu != l.mtu) {
                            info!(uplink = %u.ifname, from = e.mtu, to = l.mtu, "uplink MTU changed");
                            e.mtu = l.mtu;
                            self.dp.set_uplink(Some(e));
                            changed = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        // A switch-made TAP port deleted (its VM's manager removed it): shown down, as
        // OVS shows a port whose interface failed; a restart or `port rm` + `port add`
        // makes it again.
        let taps: Vec<AttachedPort> = self.state.ports.values().filter(|p| p.kind == PortKind::Tap).cloned().collect();
        for p in &taps {
            self.follow_moved_tap(p);
        }
        for p in taps {
            if self.dp.is_attached(p.port_id) && self.dp.port_totals(p.port_id).gone > 0 {
                self.dp.detach(p.port_id);
                if let Some(net) = self.state.networks.get(&p.network) {
                    self.dp.flush_port(net.net_id, p.port_id);
                }
                warn!(interface = %p.ifname, network = %p.network, "TAP port was deleted; shown down until a restart or `port rm` and `port add` make it again");
                changed = true;
            }
        }
        changed |= self.heal_endpoints();
        if changed {
            self.dp.publish(&self.state);
        }
    }

    /// Endpoints whose interface was deleted behind the daemon's back (`ip link del eth0`
    /// inside the sandbox): a worker found the TAP or packet socket gone, or the veth's
    /// switch end is missing. Their interface is made again, with its address, MAC and
    /// routes, as a restart would; true if any was. A sandbox whose namespace is gone
    /// gets it made again with all its endpoints and its DNS.
    fn heal_endpoints(&mut self) -> bool {
        let links: Option<BTreeSet<String>> = self.nl.links().ok().map(|ls| ls.into_iter().map(|l| l.name).collect());
        let Some(links) = links else { return false };
        let live: BTreeSet<u16> = self.state.endpoints.values().map(|e| e.port_id).collect();
        self.heal_failed.retain(|p| live.contains(p));
        let sandboxes = &self.state.sandboxes;
        self.heal_failed_ns.retain(|s| sandboxes.contains_key(s));
        let broken: Vec<Endpoint> = self
            .state
            .endpoints
            .values()
            .filter(|ep| {
                let attached = self.dp.is_attached(ep.port_id);
                let gone = attached && self.dp.port_totals(ep.port_id).gone > 0;
                let missing = ep.kind == EndpointKind::Veth && !links.contains(&ep.host_ifname);
                gone || missing || (!attached && self.heal_failed.contains(&ep.port_id))
            })
            .cloned()
            .collect();
        let mut changed = false;
        // A deleted namespace may live on, held by our DNS sockets, with its endpoints
        // working in it, but no one can enter it: made again under its name.
        let gone: Vec<String> = self.state.sandboxes.keys().filter(|s| !netns::exists(s)).cloned().collect();
        for name in &gone {
            changed = true;
            if let Err(e) = self.restore_namespace(name) {
                if self.heal_failed_ns.insert(name.clone()) {
                    warn!(sandbox = %name, error = %e, "retrying every second");
                }
            } else {
                self.heal_failed_ns.remove(name);
            }
        }
        for ep in broken {
            let Some(net) = self.state.networks.get(&ep.network).cloned() else { continue };
            if gone.contains(&ep.sandbox) {
                continue;
            }
            let Ok(sb) = Netns::open_named(&ep.sandbox) else { continue };
            self.dp.detach(ep.port_id);
            self.dp.flush_port(net.net_id, ep.port_id);
            changed = true;
            match self.realise_endpoint(&sb, &ep, &net, false) {
                Ok(()) => {
                    self.heal_failed.remove(&ep.port_id);
                    warn!(sandbox = %ep.sandbox, network = %ep.network, interface = %ep.ifname, "endpoint's interface was deleted behind the switch; made again");
                }
                Err(e) => {
                    if self.heal_failed.insert(ep.port_id) {
                        warn!(sandbox = %ep.sandbox, network = %ep.network, error = %e, "endpoint's interface was deleted behind the switch and cannot be made again yet; retrying");
                    }
                }
            }
        }
        changed
    }

    /// Addresses of endpoints removed since the last call: their connections are to be
    /// forgotten (a client that keeps its source port would otherwise stay translated
    /// to an address nobody has, past a new owner of the published port).
    pub fn take_gone_addrs(&mut self) -> Vec<Ipv4Addr> {
        std::mem::take(&mut self.gone_addrs)
    }

    /// (MAC table, aging seconds) of every network, for the aging sweep.
    pub fn aging_work(&self) -> Vec<(std::sync::Arc<dataplane::bridge::fdb::Fdb>, u32)> {
        self.state.networks.values().filter_map(|n| self.dp.fdb(n.net_id).map(|f| (f, n.mac_aging))).collect()
    }
}
