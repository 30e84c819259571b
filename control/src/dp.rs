//! Control's handle on the dataplane: starts the workers, hands them port handles,
//! compiles the desired state into `Tables` snapshots, and reads counters and MAC
//! tables back. Never touches a packet.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;

use dataplane::bridge::fdb::Fdb;
use dataplane::buf::PortId;
use dataplane::port::afpacket::{self, AfPacket, AfPacketOpts};
use dataplane::port::steer;
use dataplane::port::tap::{TapOpts, TapQueue};
use dataplane::port::Port;
use dataplane::stats::{PortTotals, StatsSnapshot};
use dataplane::encap::{Peer, Tunnel, Vtep};
use dataplane::nat::{ConnTable, DnatRule, DnatTable, NatConfig};
use dataplane::port::meshlink;
use dataplane::port::tunnel;
use dataplane::router::fib::{Egress, FibBuilder, NextHop};
use dataplane::router::neigh::NeighCache;
use dataplane::tables::{GatewayV4, LocalAddr, NetworkEntry, PortEntry, RouterTables, Tables, TablesHandle, UplinkEntry};
use dataplane::worker::{WorkerConfig, WorkerHandle};

use crate::model::State;

/// An endpoint on another host, as the dataplane needs it.
#[derive(Clone, Copy, Debug)]
pub struct RemoteMac {
    /// Underlay address of its host.
    pub host: std::net::Ipv4Addr,
    pub ip: std::net::Ipv4Addr,
    pub ip6: Option<std::net::Ipv6Addr>,
}

/// How the dataplane runs.
#[derive(Clone, Debug)]
pub struct DpConfig {
    pub workers: usize,
    pub rx_batch: usize,
    pub pool_buffers: u32,
    /// Pin worker i to CPU `pin[i % len]`.
    pub pin: Vec<usize>,
    pub busy_poll: bool,
    /// Workers keep polling this long after work before sleeping (`--poll-spin-us`).
    pub poll_spin_us: u32,
    pub afpacket: AfPacketOpts,
    pub tap: TapOpts,
    /// Most connections tracked at once (`--conntrack-max`).
    pub conntrack_max: u32,
    /// Steer the frames sandboxes send into TAPs away from workers that are behind
    /// (an eBPF program per TAP, `dataplane::port::steer`).
    pub tap_steering: bool,
}

impl Default for DpConfig {
    fn default() -> Self {
        DpConfig {
            workers: 1,
            rx_batch: 32,
            pool_buffers: 1024,
            pin: Vec::new(),
            busy_poll: false,
            poll_spin_us: 0,
            afpacket: AfPacketOpts::default(),
            tap: TapOpts::default(),
            conntrack_max: 262_144,
            tap_steering: true,
        }
    }
}

/// The running dataplane.
pub struct Dp {
    pub cfg: DpConfig,
    tables: Arc<TablesHandle>,
    workers: Vec<WorkerHandle>,
    /// MAC tables by network number, carried across snapshots.
    fdbs: HashMap<u16, Arc<Fdb>>,
    /// Ports whose handles the workers hold.
    attached: BTreeSet<PortId>,
    /// Ports that accept offloaded frames.
    offload: HashMap<PortId, bool>,
    uplink: Option<dataplane::tables::UplinkEntry>,
    conntrack: Arc<ConnTable>,
    neigh: Arc<NeighCache>,
    overlay: Option<Underlay>,
    /// Tunnel peer ports: id → (network number, remote host and tunnel).
    peers: std::collections::BTreeMap<PortId, (u16, Peer)>,
    /// Endpoints on other hosts: (network number, MAC) → where and what they are.
    remote_macs: HashMap<(u16, dataplane::wire::MacAddr), RemoteMac>,
    /// Routed overlay: other hosts' subnets (network number, prefix, length, host).
    remote_subnets: Vec<(u16, std::net::Ipv4Addr, u8, std::net::Ipv4Addr)>,
    /// The workers' end of the link to the mesh agent.
    mesh: Option<meshlink::WorkerSide>,
    /// Mesh peer ports: id → (network number, agent's peer number, network id, name).
    mesh_peers: std::collections::BTreeMap<PortId, (u16, u32, u32, String)>,
}

/// The host's side of the underlay: its address and the workers' raw sockets.
struct Underlay {
    advertise: std::net::Ipv4Addr,
    mtu: u16,
    raw_tx: Vec<Arc<std::os::fd::OwnedFd>>,
    udp_tx: Vec<Arc<tunnel::UdpTx>>,
}

/// Port numbers of the tunnel receive sockets.
pub const TUNNEL_RX_VXLAN: PortId = u16::MAX - 1;
pub const TUNNEL_RX_GRE: PortId = u16::MAX - 2;
pub const TUNNEL_RX_UDP: PortId = u16::MAX - 3;
/// Port number of the mesh agent's decrypted frames.
pub const MESH_RX: PortId = u16::MAX - 4;
/// Port numbers from here up are reserved for the daemon's own sockets.
pub const FIRST_RESERVED: PortId = u16::MAX - 15;

impl Dp {
    pub fn start(cfg: DpConfig) -> io::Result<Dp> {
        let tables = Arc::new(TablesHandle::new());
        let conntrack = Arc::new(ConnTable::new(NatConfig { max_conns: cfg.conntrack_max.max(1), ..NatConfig::default() }));
        let neigh = Arc::new(NeighCache::default());
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let wc = WorkerConfig {
                index: i,
                rx_batch: cfg.rx_batch,
                pool_buffers: cfg.pool_buffers,
                cpu: if cfg.pin.is_empty() { None } else { Some(cfg.pin[i % cfg.pin.len()]) },
                busy_poll: cfg.busy_poll,
                poll_spin_us: cfg.poll_spin_us,
            };
            workers.push(WorkerHandle::spawn(wc, tables.clone())?);
        }
        Ok(Dp { cfg, tables, workers, fdbs: HashMap::new(), attached: BTreeSet::new(), offload: HashMap::new(), uplink: None, conntrack, neigh, overlay: None, peers: std::collections::BTreeMap::new(), remote_macs: HashMap::new(), remote_subnets: Vec::new(), mesh: None, mesh_peers: std::collections::BTreeMap::new() })
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Hands one handle per worker to the workers as port `id`. On failure, nothing
    /// stays attached.
    fn attach(&mut self, id: PortId, handles: Vec<Box<dyn Port>>) -> io::Result<()> {
        self.detach(id);
        if handles.len() != self.workers.len() {
            return Err(io::Error::other(format!("{} handles for {} workers", handles.len(), self.workers.len())));
        }
        let vnet = handles.iter().all(|h| h.caps().vnet);
        for (w, h) in self.workers.iter().zip(handles) {
            if let Err(e) = w.add_port(id, h) {
                for w in &self.workers {
                    let _ = w.remove_port(id);
                }
                return Err(e);
            }
        }
        self.attached.insert(id);
        self.offload.insert(id, vnet);
        Ok(())
    }

    /// Opens the underlay: one raw transmit socket per worker, VXLAN receive sockets on
    /// `advertise:vxlan_port` (one per worker, SO_REUSEPORT) and a GRE receive socket.
    pub fn start_underlay(&mut self, advertise: std::net::Ipv4Addr, vxlan_port: u16, mtu: u32) -> io::Result<()> {
        let n = self.workers.len();
        let raw_tx = (0..n).map(|_| tunnel::raw_tx_socket()).collect::<io::Result<Vec<_>>>()?;
        let udp_tx = (0..n).map(|_| tunnel::UdpTx::open(advertise, 8)).collect::<io::Result<Vec<_>>>()?;
        let rx: Vec<Box<dyn Port>> = (0..n)
            .map(|_| tunnel::TunnelRx::vxlan(advertise, vxlan_port).map(|r| Box::new(r) as Box<dyn Port>))
            .collect::<io::Result<_>>()
            .map_err(|e| io::Error::new(e.kind(), format!("VXLAN socket on {advertise}:{vxlan_port}: {e}")))?;
        self.attach(TUNNEL_RX_VXLAN, rx)?;
        let mut gre: Vec<Box<dyn Port>> = vec![Box::new(tunnel::TunnelRx::gre(advertise)?)];
        gre.extend((1..n).map(|_| Box::new(tunnel::NullPort) as Box<dyn Port>));
        self.attach(TUNNEL_RX_GRE, gre)?;
        let udp: Vec<Box<dyn Port>> = (0..n)
            .map(|_| tunnel::TunnelRx::udp(advertise, dataplane::encap::udp::PORT).map(|r| Box::new(r) as Box<dyn Port>))
            .collect::<io::Result<_>>()?;
        self.attach(TUNNEL_RX_UDP, udp)?;
        self.overlay = Some(Underlay { advertise, mtu: mtu.min(65535) as u16, raw_tx, udp_tx });
        Ok(())
    }

    /// The underlay address, if the underlay is up.
    pub fn advertise(&self) -> Option<std::net::Ipv4Addr> {
        self.overlay.as_ref().map(|u| u.advertise)
    }

    /// Adds port `id`: the tunnel to `peer` for network `net_id`; VXLAN is sent to the
    /// peer's `vxlan_port` (ignored by the other encapsulations).
    pub fn attach_peer(&mut self, id: PortId, net_id: u16, peer: Peer, vxlan_port: u16) -> io::Result<()> {
        let Some(u) = &self.overlay else { return Err(io::Error::other("no underlay (vswitchd --advertise)")) };
        let handles: Vec<Box<dyn Port>> = u
            .raw_tx
            .iter()
            .zip(&u.udp_tx)
            .map(|(fd, udp)| {
                let mut vtep = match peer.tunnel {
                    Tunnel::Vxlan(_) => Vtep::vxlan(u.advertise),
                    Tunnel::Gre(_) => Vtep::gre(u.advertise),
                    Tunnel::Udp => Vtep::udp(u.advertise),
                };
                if matches!(peer.tunnel, Tunnel::Vxlan(_)) {
                    vtep.port = vxlan_port;
                }
                Box::new(tunnel::TunnelPeer::new(fd.clone(), peer, vtep).with_udp(udp.clone(), u.mtu)) as Box<dyn Port>
            })
            .collect();
        self.attach(id, handles)?;
        self.peers.insert(id, (net_id, peer));
        Ok(())
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Connects the workers to the mesh agent: each worker reads its own queue of
    /// decrypted frames (the agent spreads flows over them).
    pub fn attach_mesh(&mut self, ws: meshlink::WorkerSide) -> io::Result<()> {
        let h = (0..self.workers.len())
            .map(|i| ws.rx_port(i).map(|p| Box::new(p) as Box<dyn Port>).ok_or_else(|| io::Error::other("mesh link has fewer queues than workers")))
            .collect::<io::Result<Vec<_>>>()?;
        self.attach(MESH_RX, h)?;
        self.mesh = Some(ws);
        Ok(())
    }

    /// Adds port `id`: remote mesh peer `peer` (the agent's number) on network `net_id`
    /// (network id `vni` on the wire).
    pub fn attach_mesh_peer(&mut self, id: PortId, net_id: u16, peer: u32, vni: u32, name: String) -> io::Result<()> {
        let Some(ws) = &self.mesh else { return Err(io::Error::other("no mesh (vswitchd --mesh-password or --mesh-peer)")) };
        let handles: Vec<Box<dyn Port>> = (0..self.workers.len()).map(|_| Box::new(ws.peer_port(peer, vni)) as Box<dyn Port>).collect();
        self.attach(id, handles)?;
        // Super-frames go to the agent whole: it segments them into sealed datagrams.
        self.offload.insert(id, true);
        self.mesh_peers.insert(id, (net_id, peer, vni, name));
        Ok(())
    }

    /// Removes a mesh peer port.
    pub fn detach_mesh_peer(&mut self, id: PortId) {
        self.mesh_peers.remove(&id);
        self.detach(id);
    }

    /// Replaces the routed-overlay subnets of other hosts.
    pub fn set_remote_subnets(&mut self, v: Vec<(u16, std::net::Ipv4Addr, u8, std::net::Ipv4Addr)>) {
        self.remote_subnets = v;
    }

    /// Replaces the set of endpoints known on other hosts.
    pub fn set_remote_macs(&mut self, m: HashMap<(u16, dataplane::wire::MacAddr), RemoteMac>) {
        self.remote_macs = m;
    }

    /// Ports of the tunnels to `host` (all networks).
    pub fn peer_ports_of(&self, host: std::net::Ipv4Addr) -> Vec<(PortId, u16)> {
        self.peers.iter().filter(|(_, (_, p))| p.remote == host).map(|(id, (n, _))| (*id, *n)).collect()
    }

    /// Removes a tunnel peer port.
    pub fn detach_peer(&mut self, id: PortId) {
        self.peers.remove(&id);
        self.detach(id);
    }

    /// Attaches an existing interface of the daemon's namespace with AF_PACKET sockets
    /// (one per worker, one fanout group).
    pub fn attach_system(&mut self, id: PortId, ifname: &str) -> io::Result<()> {
        let idx = afpacket::ifindex(ifname).map_err(|e| io::Error::new(e.kind(), format!("interface {ifname}: {e}")))?;
        let socks = AfPacket::open_group(idx, self.workers.len(), &self.cfg.afpacket)
            .map_err(|e| io::Error::new(e.kind(), format!("AF_PACKET socket on {ifname}: {e}")))?;
        self.attach(id, socks.into_iter().map(|s| Box::new(s) as Box<dyn Port>).collect())
    }

    /// Attaches the queues of a TAP (one per worker).
    pub fn attach_tap(&mut self, id: PortId, mut queues: Vec<TapQueue>) -> io::Result<()> {
        if self.cfg.tap_steering && queues.len() > 1 {
            if let Err(e) = steer::attach(&mut queues) {
                tracing::warn!(port = id, error = %e, "TAP steering not attached; the kernel picks queues by flow hash");
            }
        }
        self.attach(id, queues.into_iter().map(|q| Box::new(q) as Box<dyn Port>).collect())
    }

    /// Takes port `id` away from every worker (closing their handles). Publish tables
    /// without the port first, so nobody forwards to it meanwhile.
    pub fn detach(&mut self, id: PortId) {
        if self.attached.remove(&id) {
            for w in &self.workers {
                let _ = w.remove_port(id);
            }
        }
        self.offload.remove(&id);
    }

    /// Sets the uplink (published with the next `publish`).
    pub fn set_uplink(&mut self, u: Option<dataplane::tables::UplinkEntry>) {
        self.uplink = u;
    }

    pub fn uplink(&self) -> Option<dataplane::tables::UplinkEntry> {
        self.uplink
    }

    pub fn is_attached(&self, id: PortId) -> bool {
        self.attached.contains(&id)
    }

    /// Compiles `state` into tables and publishes them. Only attached ports are
    /// included. MAC tables are kept for networks that still exist (entries of a port
    /// that left are removed by `flush_port`; until then they count as misses).
    pub fn publish(&mut self, state: &State) {
        let mut t = Tables::default();
        let mut members: HashMap<u16, Vec<(PortId, String)>> = HashMap::new();
        let mut add_port = |t: &mut Tables, net: u16, id: PortId, name: String, offload: bool| {
            t.set_port(PortEntry { id, net, name: name.clone(), offload, tunnel: false, tunnel_l3: false, dhcp: false });
            members.entry(net).or_default().push((id, name));
        };
        for ep in state.endpoints.values() {
            let Some(net) = state.networks.get(&ep.network) else { continue };
            if self.attached.contains(&ep.port_id) {
                let off = self.offload.get(&ep.port_id).copied().unwrap_or(true);
                add_port(&mut t, net.net_id, ep.port_id, ep.host_ifname.clone(), off);
            }
        }
        let mut tunnels = dataplane::fxhash::FastMap::default();
        for (&id, &(net, peer)) in &self.peers {
            if self.attached.contains(&id) {
                let kind = match peer.tunnel {
                    Tunnel::Vxlan(_) => "vxlan",
                    Tunnel::Gre(_) => "gre",
                    Tunnel::Udp => "udp",
                };
                let off = self.offload.get(&id).copied().unwrap_or(false);
                add_port(&mut t, net, id, format!("{kind}-{}", peer.remote), off);
                if matches!(peer.tunnel, Tunnel::Udp) {
                    if let Some(Some(p)) = t.ports.get_mut(id as usize) {
                        p.tunnel_l3 = true;
                    }
                }
                tunnels.insert((u32::from(peer.remote), peer.tunnel.id()), id);
            }
        }
        for (&id, (net, peer, vni, name)) in &self.mesh_peers {
            if self.attached.contains(&id) {
                add_port(&mut t, *net, id, name.clone(), true);
                tunnels.insert(meshlink::demux_key(*peer, *vni), id);
            }
        }
        for p in state.ports.values() {
            let Some(net) = state.networks.get(&p.network) else { continue };
            if self.attached.contains(&p.port_id) {
                let off = self.offload.get(&p.port_id).copied().unwrap_or(true);
                add_port(&mut t, net.net_id, p.port_id, p.ifname.clone(), off);
                if let Some(d) = &p.dhcp {
                    t.set_dhcp(p.port_id, dhcp_lease(d, net));
                }
            }
        }
        let mut live = BTreeSet::new();
        for net in state.networks.values() {
            live.insert(net.net_id);
            let fdb = self.fdbs.entry(net.net_id).or_insert_with(|| Arc::new(Fdb::new(net.mac_table_size))).clone();
            let mut ports: Vec<PortId> = members.get(&net.net_id).map(|v| v.iter().map(|x| x.0).collect()).unwrap_or_default();
            ports.sort_unstable();
            t.set_network(NetworkEntry {
                id: net.net_id,
                name: net.name.clone(),
                fdb,
                ports,
                gateway: Some(GatewayV4 { ip: net.gateway, prefix_len: net.subnet.prefix_len, mac: net.gateway_mac }),
                mtu: net.mtu,
                internal: net.internal,
                icc: net.icc,
                gateway6: match (net.subnet6, net.gateway6) {
                    (Some(c), Some(g)) => Some(dataplane::router::local6::GatewayV6 {
                        ip: g,
                        prefix_len: c.prefix_len,
                        ll: dataplane::router::local6::link_local(net.gateway_mac),
                        mac: net.gateway_mac,
                        mtu: net.mtu,
                    }),
                    _ => None,
                },
            });
        }
        self.fdbs.retain(|id, _| live.contains(id));
        t.uplink = self.uplink.filter(|u| self.attached.contains(&u.port));
        t.tunnels = tunnels;
        // Known remote endpoints: to the tunnel port of their host on that network; ARP
        // requests for their addresses answered here while that tunnel is up.
        for (&(net, mac), r) in &self.remote_macs {
            if let Some((&id, _)) = self.peers.iter().find(|(id, (n, p))| *n == net && p.remote == r.host && self.attached.contains(id)) {
                t.remote_macs.insert((net, mac), id);
                if !r.ip.is_unspecified() {
                    t.remote_arp.insert((net, u32::from(r.ip)), mac);
                }
                if let Some(ip6) = r.ip6 {
                    t.remote_nd.insert((net, u128::from(ip6)), mac);
                }
            }
        }
        for id in self.peers.keys().chain(self.mesh_peers.keys()) {
            if let Some(Some(p)) = t.ports.get_mut(*id as usize) {
                p.tunnel = true;
            }
        }
        t.router = Some(Arc::new(self.router_tables(state, t.uplink)));
        self.tables.publish(t);
    }

    /// Routes, published ports, known endpoints and own addresses for the router.
    fn router_tables(&self, state: &State, uplink: Option<UplinkEntry>) -> RouterTables {
        let mut fib = FibBuilder::new();
        let mut local = dataplane::fxhash::FastMap::default();
        let mut hosts = dataplane::fxhash::FastMap::default();
        for n in state.networks.values() {
            let _ = fib.add(n.subnet.network().octets(), n.subnet.prefix_len, NextHop::Connected { net: n.net_id });
            local.insert(n.gateway, LocalAddr::Gateway(n.net_id));
        }
        let mut rules = Vec::new();
        for e in state.endpoints.values() {
            let Some(n) = state.networks.get(&e.network) else { continue };
            hosts.insert((n.net_id, e.ip), e.mac);
            for m in &e.published {
                // Published on every address, or on the uplink's: reachable in the
                // dataplane. Loopback-only ones are the userland proxy's.
                let host_ip = match m.host_ip {
                    None => None,
                    Some(ip) if uplink.is_some_and(|u| u.ip == ip) => Some(ip),
                    Some(_) => continue,
                };
                rules.push(DnatRule::single(m.proto.number(), host_ip, m.host_port, e.ip, m.container_port));
            }
        }
        if let Some(u) = uplink {
            local.insert(u.ip, LocalAddr::Uplink);
            let net = u32::from(u.ip) & (if u.prefix_len == 0 { 0 } else { u32::MAX << (32 - u.prefix_len) });
            let direct = NextHop::Via { gateway: std::net::Ipv4Addr::UNSPECIFIED, egress: Egress::Uplink };
            let _ = fib.add(std::net::Ipv4Addr::from(net).octets(), u.prefix_len, direct);
            let gw = u.gateway.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            let _ = fib.add([0, 0, 0, 0], 0, NextHop::Via { gateway: gw, egress: Egress::Uplink });
        }
        let dnat = DnatTable::new(rules).unwrap_or_else(|e| {
            tracing::warn!(error = ?e, "published ports conflict; none are active");
            DnatTable::default()
        });
        let overlay_routes = self
            .remote_subnets
            .iter()
            .filter_map(|&(net, pfx, len, host)| {
                let (&id, _) = self.peers.iter().find(|(id, (n, p))| *n == net && p.remote == host && self.attached.contains(id))?;
                Some((pfx, len, net, id))
            })
            .collect();
        let min_mtu = state.networks.values().map(|n| n.mtu).chain(uplink.map(|u| u.mtu)).min().unwrap_or(u32::MAX);
        RouterTables { fib: fib.build(), dnat, hosts, local, conntrack: self.conntrack.clone(), neigh: self.neigh.clone(), overlay_routes, min_mtu }
    }

    pub fn conntrack(&self) -> &Arc<ConnTable> {
        &self.conntrack
    }

    pub fn neigh(&self) -> &Arc<NeighCache> {
        &self.neigh
    }

    /// Replaces the MAC table of a network (size changed) — used when a network is
    /// recreated with the same number.
    pub fn forget_network(&mut self, net_id: u16) {
        self.fdbs.remove(&net_id);
    }

    /// Forgets every MAC learned on `port` in network `net_id` (after it left).
    pub fn flush_port(&self, net_id: u16, port: PortId) -> usize {
        self.fdbs.get(&net_id).map(|f| f.flush_port(port)).unwrap_or(0)
    }

    pub fn fdb(&self, net_id: u16) -> Option<Arc<Fdb>> {
        self.fdbs.get(&net_id).cloned()
    }

    /// All MAC tables with their aging time, for the housekeeping sweep.
    pub fn fdbs(&self) -> Vec<(u16, Arc<Fdb>)> {
        self.fdbs.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    pub fn port_totals(&self, id: PortId) -> PortTotals {
        let mut t = PortTotals::default();
        for w in &self.workers {
            t.add(&w.stats().port_totals(id));
        }
        t
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot::sum(self.workers.iter().map(|w| w.stats().as_ref()))
    }

    /// Per-worker totals of received packets over all ports (to show the spread).
    pub fn worker_rx(&self, ports: &[PortId]) -> Vec<u64> {
        self.workers.iter().map(|w| ports.iter().map(|p| w.stats().port_totals(*p).rx_packets).sum()).collect()
    }

    /// Stops every worker.
    pub fn stop(&mut self) {
        for w in self.workers.drain(..) {
            w.stop();
        }
    }
}

/// Lease time handed out to `--dhcp` ports: renewal every half hour, so a changed
/// binding (the port removed and added again with another address) reaches the machine
/// soon; the address never changes while the port exists.
pub const DHCP_LEASE_SECS: u32 = 3600;

/// The DNS servers a `--dhcp` port gets: its `--dns`, else the host's IPv4 name servers
/// that are reachable from a network (loopback ones, such as systemd-resolved's stub,
/// are left out: on the machine behind the port they would be its own), read once.
/// On an `--internal` network nothing is handed out without `--dns` (the host's
/// servers are out of reach from there).
pub fn dhcp_dns(d: &crate::model::PortDhcp, net: &crate::model::Network) -> Vec<std::net::Ipv4Addr> {
    static HOST: std::sync::OnceLock<Vec<std::net::Ipv4Addr>> = std::sync::OnceLock::new();
    if !d.dns.is_empty() {
        return d.dns.clone();
    }
    if net.internal {
        return Vec::new();
    }
    HOST.get_or_init(|| {
        let mut v: Vec<std::net::Ipv4Addr> = crate::dns::upstream::host_upstreams()
            .iter()
            .filter_map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
                _ => None,
            })
            .collect();
        v.truncate(dataplane::router::dhcp::DNS_MAX);
        v
    })
    .clone()
}

/// What the gateway hands out to a `--dhcp` port of `net`.
pub fn dhcp_lease(d: &crate::model::PortDhcp, net: &crate::model::Network) -> dataplane::router::dhcp::DhcpLease {
    let mut dns = [std::net::Ipv4Addr::UNSPECIFIED; dataplane::router::dhcp::DNS_MAX];
    let servers = dhcp_dns(d, net);
    for (slot, a) in dns.iter_mut().zip(&servers) {
        *slot = *a;
    }
    dataplane::router::dhcp::DhcpLease {
        ip: d.ip,
        dns,
        dns_len: servers.len().min(dns.len()) as u8,
        lease_secs: DHCP_LEASE_SECS,
        router: !net.internal,
        mtu: u16::try_from(net.mtu).unwrap_or(u16::MAX),
    }
}

/// A port's DHCP binding for listings: the address, and the DNS servers handed out.
pub fn dhcp_json(d: &crate::model::PortDhcp, net: Option<&crate::model::Network>) -> serde_json::Value {
    let dns = match net {
        Some(n) => dhcp_dns(d, n),
        None => d.dns.clone(),
    };
    serde_json::json!({"ip": d.ip, "dns": dns})
}
