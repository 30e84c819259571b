//! How control publishes forwarding state to the workers: an immutable `Tables`
//! snapshot behind an `ArcSwap`, with a generation number. A worker checks the
//! generation once per loop (one relaxed load of a line nobody writes while traffic
//! flows) and takes the new `Arc` only when it changed. Old snapshots are freed when
//! the last worker lets go of them. This is the only synchronisation the workers see
//! besides their command channel.
//!
//! Learned state (the MAC tables) is not part of the snapshot's value: each network
//! entry holds an `Arc<Fdb>` that control carries over from one snapshot to the next.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::fxhash::FastMap;

use crate::bridge::fdb::Fdb;
use crate::buf::PortId;
use crate::nat::{ConnTable, DnatTable};
use crate::router::fib::Fib;
use crate::router::neigh::NeighCache;
use crate::wire::MacAddr;

/// Identifies a network (bridge domain) in the tables.
pub type NetId = u16;

/// What the dataplane needs to know about a port.
#[derive(Clone, Debug)]
pub struct PortEntry {
    pub id: PortId,
    pub net: NetId,
    /// Interface name (for logs and dumps only).
    pub name: String,
    /// Frames may leave with a virtio-net header (GSO and partial checksums pass
    /// through). When false, the worker segments and completes checksums in software.
    pub offload: bool,
    /// A tunnel to another host: frames from a tunnel are never flooded to another
    /// tunnel (split horizon over the full mesh of hosts).
    pub tunnel: bool,
    /// An IP-in-UDP tunnel (routed overlay): frames arrive without Ethernet header and
    /// are routed to a local endpoint.
    pub tunnel_l3: bool,
    /// The gateway serves this port by DHCP (`port add --dhcp`; the lease is in
    /// `Tables::dhcp`, out of this entry, which the forwarding path reads for every
    /// frame and is kept small); false: DHCP requests from it are switched like any frame.
    pub dhcp: bool,
}

/// The gateway address the switch owns on a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayV4 {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: MacAddr,
}

/// The interface towards the outside world. Its address is owned by the dataplane
/// (the kernel has none on it): the router answers ARP and ping for it, masquerades
/// sandbox traffic behind it and receives published ports on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkEntry {
    pub port: PortId,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// The interface's own MAC.
    pub mac: MacAddr,
    /// Next hop for everything outside the uplink's subnet.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// Whether `b` is in the subnet `a`/`len`.
#[inline]
pub fn same_subnet(a: Ipv4Addr, len: u8, b: Ipv4Addr) -> bool {
    let m = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32)) };
    u32::from(a) & m == u32::from(b) & m
}

/// An address the switch owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalAddr {
    /// The gateway address of a network.
    Gateway(NetId),
    /// The uplink's address.
    Uplink,
}

/// What the router forwards with. Learned state (connections, neighbours) lives in the
/// shared tables behind the `Arc`s, carried across snapshots by control.
pub struct RouterTables {
    pub fib: Fib,
    /// Published ports (host address/port → sandbox address/port).
    pub dnat: DnatTable,
    /// Known endpoints: (network, address) → MAC, so no ARP is needed for sandboxes.
    pub hosts: FastMap<(NetId, Ipv4Addr), MacAddr>,
    /// Every address the switch owns.
    pub local: FastMap<Ipv4Addr, LocalAddr>,
    pub conntrack: Arc<ConnTable>,
    pub neigh: Arc<NeighCache>,
    /// Routed overlay (IP-in-UDP): other hosts' subnets → (network, tunnel port).
    pub overlay_routes: Vec<(Ipv4Addr, u8, NetId, PortId)>,
    /// The smallest MTU of the networks and the uplink: a packet no larger fits every
    /// egress (the router keeps the sender's header of larger ones it routes only after
    /// translation, for the ICMP error it may need).
    pub min_mtu: u32,
}

/// One network (L2 segment).
#[derive(Clone)]
pub struct NetworkEntry {
    pub id: NetId,
    pub name: String,
    /// Learned MACs; shared by every worker and carried across snapshots.
    pub fdb: Arc<Fdb>,
    /// Every port of the network (the flood list).
    pub ports: Vec<PortId>,
    pub gateway: Option<GatewayV4>,
    /// The gateway's IPv6 identity on a dual-stack network.
    pub gateway6: Option<crate::router::local6::GatewayV6>,
    pub mtu: u32,
    /// No route to the uplink (`--internal`).
    pub internal: bool,
    /// Ports may talk to each other (`--icc`); when false, only to the gateway.
    pub icc: bool,
}

/// An immutable snapshot of everything the workers forward with.
#[derive(Clone, Default)]
pub struct Tables {
    pub generation: u64,
    /// Indexed by `PortId`; slot 0 is always empty.
    pub ports: Vec<Option<PortEntry>>,
    /// Indexed by `NetId`.
    pub networks: Vec<Option<NetworkEntry>>,
    pub uplink: Option<UplinkEntry>,
    /// Routing, NAT and neighbours; `None` means bridging only.
    pub router: Option<Arc<RouterTables>>,
    /// Tunnel peer ports by (remote host address as u32, tunnel id).
    pub tunnels: FastMap<(u32, u32), PortId>,
    /// Endpoints known to live on other hosts (from the cluster store): (network, MAC)
    /// → the tunnel port of their host. Consulted when the MAC table has no entry, so
    /// known endpoints are reached without flooding.
    pub remote_macs: FastMap<(NetId, MacAddr), PortId>,
    /// The IPv4 addresses of those endpoints: (network, address as u32) → MAC. A local
    /// port's ARP request for one is answered here instead of being flooded to every
    /// host (what Docker's overlay does with proxy ARP on its VXLAN device).
    pub remote_arp: FastMap<(NetId, u32), MacAddr>,
    /// Their IPv6 addresses, for neighbour solicitations likewise.
    pub remote_nd: FastMap<(NetId, u128), MacAddr>,
    /// DHCP bindings of the ports marked `dhcp`.
    pub dhcp: FastMap<PortId, crate::router::dhcp::DhcpLease>,
}

impl Tables {
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortEntry> {
        self.ports.get(id as usize).and_then(|p| p.as_ref())
    }

    #[inline]
    pub fn network(&self, id: NetId) -> Option<&NetworkEntry> {
        self.networks.get(id as usize).and_then(|n| n.as_ref())
    }

    /// The network a port belongs to.
    #[inline]
    pub fn port_network(&self, id: PortId) -> Option<(&PortEntry, &NetworkEntry)> {
        let p = self.port(id)?;
        Some((p, self.network(p.net)?))
    }

    /// Adds or replaces a port entry (builder helper for control and tests).
    pub fn set_port(&mut self, p: PortEntry) {
        let i = p.id as usize;
        if self.ports.len() <= i {
            self.ports.resize(i + 1, None);
        }
        self.ports[i] = Some(p);
    }

    /// Gives port `id` (already set) a DHCP binding.
    pub fn set_dhcp(&mut self, id: PortId, lease: crate::router::dhcp::DhcpLease) {
        if let Some(Some(p)) = self.ports.get_mut(id as usize) {
            p.dhcp = true;
            self.dhcp.insert(id, lease);
        }
    }

    /// Adds or replaces a network entry.
    pub fn set_network(&mut self, n: NetworkEntry) {
        let i = n.id as usize;
        if self.networks.len() <= i {
            self.networks.resize(i + 1, None);
        }
        self.networks[i] = Some(n);
    }
}

/// The publication point shared by control (writer) and workers (readers).
pub struct TablesHandle {
    current: ArcSwap<Tables>,
    generation: AtomicU64,
}

impl Default for TablesHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl TablesHandle {
    pub fn new() -> TablesHandle {
        TablesHandle { current: ArcSwap::from_pointee(Tables::default()), generation: AtomicU64::new(0) }
    }

    /// Publishes `t` (its generation is set to the next number). Control only.
    pub fn publish(&self, mut t: Tables) -> u64 {
        let g = self.generation.load(Ordering::Relaxed) + 1;
        t.generation = g;
        self.current.store(Arc::new(t));
        self.generation.store(g, Ordering::Release);
        g
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Tables> {
        self.current.load_full()
    }

    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A worker's cached view: refreshed only when the generation moved.
pub struct TablesView {
    handle: Arc<TablesHandle>,
    tables: Arc<Tables>,
}

impl TablesView {
    pub fn new(handle: Arc<TablesHandle>) -> TablesView {
        let tables = handle.load();
        TablesView { handle, tables }
    }

    /// Picks up a newer snapshot if there is one; returns true if it changed.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        if self.handle.generation() != self.tables.generation {
            self.tables = self.handle.load();
            return true;
        }
        false
    }

    #[inline]
    pub fn get(&self) -> &Tables {
        &self.tables
    }
}
