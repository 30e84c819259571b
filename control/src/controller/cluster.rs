//! The controller's side of the cluster store: joining, applying changes seen by the
//! watch (networks created elsewhere, hosts coming and going, endpoints of other hosts),
//! cluster-wide address allocation, and publishing this host's endpoints.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tracing::{info, warn};

use super::Controller;
use crate::cluster::{Change, Cluster, RemoteEndpoint};
use crate::model::{Driver, Endpoint, Network};

impl Controller {
    /// Connects to the cluster store and brings this host in line with it.
    pub fn join_cluster(&mut self, url: &str) -> Result<(Arc<Cluster>, i64), String> {
        let host = self.dp.advertise().ok_or("--cluster needs --advertise IP (and the underlay up)")?;
        let host_id = self.store.host_id().map_err(|e| format!("host id in the state directory: {e}"))?;
        let c = Arc::new(Cluster::connect(url, host, host_id, self.opts.vxlan_port)?);
        self.cluster = Some(c.clone());
        let rev = match self.cluster_sync() {
            Ok(r) => r,
            Err(e) => {
                // Not joined: the caller may try again later.
                self.cluster = None;
                return Err(e);
            }
        };
        info!(store = url, host = %host, "joined the cluster");
        Ok((c, rev))
    }

    /// Loads everything from the store: networks, hosts, remote endpoints; publishes
    /// this host's endpoints. Returns the revision to watch from.
    pub fn cluster_sync(&mut self) -> Result<i64, String> {
        let Some(c) = self.cluster.clone() else { return Ok(0) };
        let store_id = c.store_id()?;
        if self.state.cluster.as_ref().is_some_and(|m| m.store_id != store_id) {
            self.redefine_networks(&c);
        }
        let (hosts, eps, nets, rev) = c.snapshot()?;
        // Cluster networks removed while this host was away.
        let stale: Vec<String> = self.state.networks.values().filter(|l| l.driver == Driver::Overlay && !nets.iter().any(|n| n.name == l.name)).map(|l| l.name.clone()).collect();
        for name in stale {
            self.drop_cluster_network(&name);
        }
        for n in nets {
            self.apply_network(n);
        }
        let me = c.host;
        // Routed overlays: keep (or lease again) this host's subnets; learn the others'.
        let mine: Vec<Network> = self.state.networks.values().filter(|n| n.range.is_some()).cloned().collect();
        for n in mine {
            let held = n.subnet;
            match self.lease_host_subnet(n.clone(), Some(held)) {
                Ok(l) if l.subnet != held => warn!(network = %n.name, held = %held, now = %l.subnet, "lost the subnet this host held; sandboxes keep their addresses"),
                Ok(_) => {}
                Err(e) => warn!(network = %n.name, error = %e, "subnet lease"),
            }
        }
        self.remote_subnets = c.subnets()?.into_iter().filter(|(_, _, h)| *h != me).map(|(n, s, h)| ((n, s), h)).collect();
        let hosts: std::collections::BTreeMap<Ipv4Addr, u16> = hosts.into_iter().filter(|(h, _)| *h != me).collect();
        // Tunnels to hosts gone meanwhile, or to a VXLAN port a host no longer uses.
        let changed: Vec<Ipv4Addr> = self.cluster_hosts.iter().filter(|(h, p)| hosts.get(h) != Some(p)).map(|(h, _)| *h).collect();
        for h in changed {
            self.detach_tunnels_to(h, hosts.contains_key(&h));
        }
        self.cluster_hosts = hosts;
        self.remote_eps = eps.into_iter().filter(|e| e.host != me).map(|e| ((e.network.clone(), e.id.clone()), e)).collect();
        let nets: Vec<Network> = self.state.networks.values().cloned().collect();
        for n in &nets {
            self.attach_peers(n);
        }
        self.republish_local();
        self.refresh_remote();
        let mark = crate::model::ClusterMark { url: self.opts.cluster.clone().unwrap_or_default(), store_id };
        if self.state.cluster.as_ref() != Some(&mark) {
            let mut new = self.state.clone();
            new.cluster = Some(mark);
            if let Err(e) = self.commit(new) {
                warn!(error = %e, "saving the cluster store's identity");
            }
        }
        Ok(rev)
    }

    /// Takes the tunnel ports to cluster host `h` away (and the MACs learnt behind them):
    /// it left, or (`again`) registered with another VXLAN port and gets new ones. A
    /// host that is also a `--peer` keeps its tunnels when it leaves.
    fn detach_tunnels_to(&mut self, h: Ipv4Addr, again: bool) {
        if !again && self.opts.peers.iter().any(|(p, _)| *p == h) {
            return;
        }
        let gone: Vec<(String, Ipv4Addr)> = self.peer_ports.keys().filter(|(_, p)| *p == h).cloned().collect();
        for k in gone {
            if let Some(id) = self.peer_ports.remove(&k) {
                let net = self.state.networks.get(&k.0).map(|n| n.net_id);
                self.dp.detach_peer(id);
                if let Some(net) = net {
                    self.dp.flush_port(net, id);
                }
            }
        }
    }

    /// The cluster store is not the one this host synchronised with last (it lost its
    /// data — etcd restarted on an empty data directory — or is another cluster):
    /// defines this host's overlay networks there again, with their ids, VNIs and
    /// subnets, so that they are not taken for networks removed while this host was
    /// away, and other hosts get them back. Endpoints, address claims and per-host
    /// subnets follow in the sync as after any lost lease. A name another host has
    /// defined again first (same id: the same network) is left as it is; one defined
    /// anew with another id wins, as a network re-created while this host was away.
    fn redefine_networks(&mut self, c: &Cluster) {
        let nets: Vec<Network> = self.state.networks.values().filter(|n| n.driver == Driver::Overlay && !self.cluster_stale.contains(&n.name)).cloned().collect();
        warn!(networks = nets.len(), "the cluster store is not the one this host last synchronised with (it lost its data, or is another cluster): defining this host's overlay networks there again");
        for n in nets {
            match c.create_network(&cluster_definition(&n)) {
                Ok(Ok(())) => info!(network = %n.name, "overlay network defined again in the cluster store"),
                Ok(Err(e)) => info!(network = %n.name, reason = %e, "overlay network not defined again"),
                Err(e) => warn!(network = %n.name, error = %e, "defining an overlay network again"),
            }
        }
    }

    /// Applies one change seen by the watch.
    pub fn apply(&mut self, ch: Change) {
        let me = self.cluster.as_ref().map(|c| c.host);
        match ch {
            Change::Network(n) => {
                self.apply_network(n);
            }
            Change::NetworkGone(name) => {
                self.drop_cluster_network(&name);
            }
            Change::Host(h, vxlan_port) if Some(h) != me => {
                let changed = match self.cluster_hosts.insert(h, vxlan_port) {
                    None => {
                        info!(host = %h, vxlan_port, "host joined");
                        true
                    }
                    Some(old) if old != vxlan_port => {
                        info!(host = %h, old, vxlan_port, "host registered again with another VXLAN port");
                        self.detach_tunnels_to(h, true);
                        true
                    }
                    Some(_) => false,
                };
                if changed {
                    let nets: Vec<Network> = self.state.networks.values().cloned().collect();
                    for n in &nets {
                        self.attach_peers(n);
                    }
                    self.refresh_remote();
                }
            }
            Change::HostGone(h) if Some(h) != me => {
                if self.cluster_hosts.remove(&h).is_some() {
                    info!(host = %h, "host left (lease expired or shut down): withdrawing its endpoints");
                    self.remote_eps.retain(|_, e| e.host != h);
                    self.detach_tunnels_to(h, false);
                    self.refresh_remote();
                }
            }
            Change::Endpoint(e) if Some(e.host) != me => {
                self.remote_eps.insert((e.network.clone(), e.id.clone()), e);
                self.refresh_remote();
            }
            Change::EndpointGone { network, id } => {
                if self.remote_eps.remove(&(network, id)).is_some() {
                    self.refresh_remote();
                }
            }
            Change::Subnet { network, subnet, host } if Some(host) != me => {
                self.remote_subnets.insert((network, subnet), host);
                self.refresh_remote();
            }
            Change::SubnetGone { network, subnet } => {
                if self.remote_subnets.remove(&(network, subnet)).is_some() {
                    self.refresh_remote();
                }
            }
            Change::Reload => {
                if let Err(e) = self.cluster_sync() {
                    warn!(error = %e, "cluster resync");
                }
            }
            _ => {}
        }
    }

    /// Removes this host's copy of cluster network `name` (gone from the store, or
    /// replaced there by another network of the same name), unless sandboxes or ports
    /// here still use it: then it stays, and says so. True if removed.
    pub(super) fn drop_cluster_network(&mut self, name: &str) -> bool {
        if !self.state.networks.get(name).is_some_and(|n| n.driver == Driver::Overlay) {
            return false;
        }
        let local = self.state.endpoints_of_network(name).count() + self.state.ports_of_network(name).count();
        if local > 0 {
            if self.cluster_stale.insert(name.to_string()) {
                // Cut off from the other hosts: they no longer carry it, and a network
                // made again under the same name (and the same name-derived VNI) is
                // another one, whose endpoints these must not meet.
                warn!(network = %name, local, "overlay network removed from the cluster (or made again there as another network) while this host still has endpoints on it: kept here, cut off from other hosts, until they are disconnected");
                self.detach_peers(name);
                self.refresh_remote();
            }
            return false;
        }
        self.cluster_stale.remove(name);
        let mut new = self.state.clone();
        let gone = new.networks.remove(name);
        if self.commit(new).is_err() {
            return false;
        }
        self.detach_peers(name);
        if let Some(n) = gone {
            self.dp.forget_network(n.net_id);
        }
        self.dp.publish(&self.state);
        info!(network = %name, "overlay network removed by the cluster");
        true
    }

    /// A network defined in the cluster: create it here if this host does not have it.
    fn apply_network(&mut self, n: Network) {
        if let Some(l) = self.state.networks.get(&n.name) {
            if l.id == n.id {
                return;
            }
            // A cluster network this host kept from before (removed and made again in
            // the cluster while it was away) gives way to the current one; a local
            // bridge network of the same name does not.
            if !self.drop_cluster_network(&n.name) {
                if !self.cluster_stale.contains(&n.name) {
                    warn!(network = %n.name, "a local network has the name of a cluster network; keeping the local one");
                }
                return;
            }
        }
        if let Some(o) = self.state.networks.values().find(|o| o.subnet.overlaps(&n.range.unwrap_or(n.subnet))) {
            warn!(network = %n.name, subnet = %n.subnet, local = %o.name, "a cluster network overlaps the subnet of a network of this host; not set up here");
            return;
        }
        let used: std::collections::BTreeSet<u16> = self.state.networks.values().map(|x| x.net_id).collect();
        let Some(net_id) = (1..=u16::MAX).find(|i| !used.contains(i)) else { return };
        let mut net = n;
        net.net_id = net_id;
        let mut net = match self.lease_host_subnet(net, None) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "routed overlay from the cluster not set up");
                return;
            }
        };
        // The MTU follows this host's underlay.
        if let Some(e) = net.encap {
            let fits = self.underlay_mtu().saturating_sub(super::overlay_overhead(e));
            if net.mtu > fits {
                warn!(network = %net.name, mtu = net.mtu, here = fits, "this host's underlay carries less than the network's MTU: its endpoints here get the smaller MTU (TCP adapts; larger datagrams from other hosts are lost)");
                net.mtu = fits;
            }
        }
        let mut new = self.state.clone();
        new.networks.insert(net.name.clone(), net.clone());
        if self.commit(new).is_ok() {
            self.dp.forget_network(net_id);
            self.attach_peers(&net);
            self.dp.publish(&self.state);
            info!(network = %net.name, vni = ?net.vni, "overlay network from the cluster");
        }
    }

    /// Remote endpoints into the dataplane (known MACs) and the DNS.
    fn refresh_remote(&mut self) {
        let mut m = HashMap::new();
        for e in self.remote_eps.values() {
            if let Some(n) = self.live_cluster_network(&e.network) {
                m.insert((n.net_id, e.mac), crate::dp::RemoteMac { host: e.host, ip: e.ip, ip6: e.ip6 });
            }
        }
        self.dp.set_remote_macs(m);
        let subnets = self
            .remote_subnets
            .iter()
            .filter_map(|((net, c), host)| self.live_cluster_network(net).map(|n| (n.net_id, c.network(), c.prefix_len, *host)))
            .collect();
        self.dp.set_remote_subnets(subnets);
        self.dp.publish(&self.state);
        if let Some(d) = &self.dns {
            d.set_names(self.name_table());
        }
    }

    /// Publishes every local endpoint of an overlay network (after joining, or after the
    /// lease was lost and renewed). One whose address or MAC another endpoint holds now
    /// is detached: it would answer for the other one's address and take its MAC over
    /// on every host.
    pub fn republish_local(&mut self) {
        let Some(c) = &self.cluster else { return };
        let mut conflicted = Vec::new();
        for e in self.state.endpoints.values() {
            let Some(n) = self.live_cluster_network(&e.network) else { continue };
            if n.encap == Some(crate::model::Encap::Mesh) && self.mesh.is_none() {
                // Started without its mesh options: its frames could not leave.
                warn!(sandbox = %e.sandbox, network = %e.network, "endpoint on an encrypted network, but this vswitchd is not in a mesh: not published (start it with its mesh options)");
                continue;
            }
            if n.driver == Driver::Overlay {
                match c.put_endpoint(e) {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => {
                        warn!(sandbox = %e.sandbox, error = %why, "publishing endpoint");
                        conflicted.push((e.port_id, n.net_id));
                    }
                    Err(err) => warn!(sandbox = %e.sandbox, error = %err, "publishing endpoint"),
                }
            }
        }
        for (port, net) in &conflicted {
            self.dp.detach(*port);
            self.dp.flush_port(*net, *port);
        }
        if !conflicted.is_empty() {
            self.dp.publish(&self.state);
        }
    }

    /// A routed overlay network (`--encap udp`, cluster definition with the whole range
    /// as `subnet`): leases this host's /24 and makes it the local subnet (gateway: its
    /// first address), keeping the range. Other networks come back unchanged.
    pub(super) fn lease_host_subnet(&self, mut n: Network, prefer: Option<crate::model::Ipv4Cidr>) -> Result<Network, String> {
        if n.encap != Some(crate::model::Encap::Udp) {
            return Ok(n);
        }
        let Some(c) = &self.cluster else { return Err("--encap udp needs the cluster store".into()) };
        let range = n.range.unwrap_or(n.subnet);
        let s = c.lease_subnet(&n.name, range, prefer)?;
        n.range = Some(range);
        n.subnet = s;
        n.gateway = Ipv4Addr::from(u32::from(s.network()) + 1);
        n.ip_range = None;
        info!(network = %n.name, subnet = %s, "leased this host's subnet");
        Ok(n)
    }

    /// Refuses a change to overlay networks while the daemon runs with `--cluster` but
    /// has not joined the store yet (it was unreachable at start): made locally, the
    /// change would bypass the cluster-wide checks and allocations.
    pub(super) fn check_joined(&self) -> Result<(), String> {
        match (&self.opts.cluster, &self.cluster) {
            (Some(url), None) => Err(format!("cluster store: {url} not joined yet (unreachable since the daemon started; retrying)")),
            _ => Ok(()),
        }
    }

    /// Refuses to start without `--cluster` when this host's state holds overlay
    /// networks of a cluster store: changed locally, their address and MAC claims
    /// would leak or be handed out twice. `--leave-cluster` is the way out (see
    /// [`Self::leave_cluster`]). A mark left without overlay networks is dropped.
    pub fn check_cluster_membership(&mut self) -> Result<(), String> {
        let Some(m) = self.state.cluster.clone() else { return Ok(()) };
        if self.opts.cluster.is_some() || self.opts.leave_cluster {
            return Ok(());
        }
        let nets = self.overlay_network_names();
        if nets.is_empty() {
            let mut new = self.state.clone();
            new.cluster = None;
            return self.commit(new);
        }
        Err(format!(
            "--cluster: the state directory holds overlay networks of the cluster store {url} ({}); changed without the store, their addresses could be handed out twice — start with --cluster {url} (the host forwards on its saved state while the store is unreachable), or with --leave-cluster to remove them and their endpoints from this host",
            nets.join(", "),
            url = m.url
        ))
    }

    /// `--leave-cluster`: removes the overlay networks of the cluster store this host
    /// was in, with their endpoints and ports, from this host only. The store is not
    /// asked: the addresses they had stay claimed there until the networks are removed
    /// in the cluster (`network rm --force`).
    pub fn leave_cluster(&mut self) {
        let Some(m) = self.state.cluster.clone() else {
            info!("--leave-cluster: this host is in no cluster store");
            return;
        };
        let nets = self.overlay_network_names();
        let mut new = self.state.clone();
        new.cluster = None;
        if let Err(e) = self.commit(new) {
            warn!(error = %e, "--leave-cluster: saving the state");
            return;
        }
        for name in &nets {
            let sandboxes: Vec<String> = self.state.endpoints_of_network(name).map(|e| e.sandbox.clone()).collect();
            for sb in sandboxes {
                if let Err(e) = self.disconnect(name, &sb) {
                    warn!(network = %name, sandbox = %sb, error = %e, "--leave-cluster: disconnecting");
                }
            }
            let ports: Vec<String> = self.state.ports_of_network(name).map(|p| p.ifname.clone()).collect();
            for p in ports {
                if let Err(e) = self.port_rm(name, &p) {
                    warn!(network = %name, port = %p, error = %e, "--leave-cluster: removing a port");
                }
            }
            if let Err(e) = self.network_rm(name, true) {
                warn!(network = %name, error = %e, "--leave-cluster: removing the network");
            }
        }
        warn!(store = %m.url, networks = ?nets, "left the cluster store: its overlay networks are removed from this host; the addresses their endpoints had stay claimed in the store until the networks are removed there (network rm --force)");
    }

    /// Names of this host's overlay networks.
    fn overlay_network_names(&self) -> Vec<String> {
        self.state.networks.values().filter(|n| n.driver == Driver::Overlay).map(|n| n.name.clone()).collect()
    }

    /// Network `name`, unless it is a cluster network kept here after the cluster
    /// removed or replaced it (its endpoints are not published, it meets no remote one).
    fn live_cluster_network(&self, name: &str) -> Option<&Network> {
        self.state.networks.get(name).filter(|_| !self.cluster_stale.contains(name))
    }

    /// Refuses new endpoints and ports on a network kept only for the endpoints it had
    /// when the cluster removed or replaced it.
    pub(super) fn check_not_stale(&self, name: &str) -> Result<(), String> {
        if self.cluster_stale.contains(name) {
            return Err(format!("network {name}: removed from the cluster (or made again there as another network) while this host was away; kept here only for the endpoints it still has — disconnect them, then use the cluster's network"));
        }
        Ok(())
    }

    /// After the last local endpoint or port of a stale cluster network left: drops it
    /// and sets up the cluster's current network of that name, if there is one.
    pub(super) fn drop_stale_network(&mut self, name: &str) {
        if !self.cluster_stale.contains(name) || !self.drop_cluster_network(name) {
            return;
        }
        let Some(c) = self.cluster.clone() else { return };
        match c.networks() {
            Ok(nets) => {
                if let Some(n) = nets.into_iter().find(|n| n.name == name) {
                    self.apply_network(n);
                }
            }
            Err(e) => warn!(network = %name, error = %e, "reading the cluster's network (it follows at the next resync)"),
        }
    }

    /// Remote endpoints, for the DNS name table.
    pub(super) fn remote_endpoints(&self) -> impl Iterator<Item = &RemoteEndpoint> {
        self.remote_eps.values()
    }

    /// An address on overlay network `net` that is free cluster-wide, claimed for
    /// endpoint `id` (`requested` must be free, or is refused).
    pub(super) fn cluster_ip(&self, net: &Network, requested: Option<Ipv4Addr>, id: &str) -> Result<Option<Ipv4Addr>, String> {
        let Some(c) = &self.cluster else { return Ok(None) };
        // Routed overlays: the host's own subnet already makes addresses unique.
        if net.driver != Driver::Overlay || net.range.is_some() {
            return Ok(None);
        }
        let local = self.state.used_ipv4(&net.name).into_iter();
        claim_free(c, net, requested, local, |used| crate::ipam::allocate(net, used), "--ip", id).map(Some)
    }

    /// The IPv6 counterpart of [`Self::cluster_ip`]: an address of the network's IPv6
    /// subnet free cluster-wide, claimed for endpoint `id`; None when the network is
    /// not a cluster overlay network (the local choice stands).
    pub(super) fn cluster_ip6(&self, net: &Network, requested: Option<std::net::Ipv6Addr>, id: &str) -> Result<Option<std::net::Ipv6Addr>, String> {
        let Some(c) = &self.cluster else { return Ok(None) };
        if net.driver != Driver::Overlay || net.subnet6.is_none() {
            return Ok(None);
        }
        let local = self.state.endpoints_of_network(&net.name).filter_map(|e| e.ip6);
        claim_free(c, net, requested, local, |used| crate::ipam::allocate6(net, used), "--ip6", id).map(Some)
    }

    /// Gives back addresses claimed for a connect that failed afterwards.
    pub(super) fn cluster_release(&self, network: &str, claims: &super::Claims) {
        if let Some(c) = &self.cluster {
            for ip in &claims.ips {
                if let Err(e) = c.release_ip(network, *ip, &claims.id) {
                    warn!(network, %ip, error = %e, "releasing a claimed address");
                }
            }
            for mac in &claims.macs {
                if let Err(e) = c.release_mac(network, *mac, &claims.id) {
                    warn!(network, %mac, error = %e, "releasing a claimed MAC");
                }
            }
        }
    }

    /// Claims `mac` for endpoint `id` when `net` is a cluster overlay network: None if
    /// it is not one, else whether the MAC was free (or already this endpoint's).
    pub(super) fn cluster_mac(&self, net: &Network, mac: dataplane::wire::MacAddr, id: &str) -> Result<Option<bool>, String> {
        match &self.cluster {
            Some(c) if net.driver == Driver::Overlay => c.claim_mac(&net.name, mac, id).map(Some),
            _ => Ok(None),
        }
    }

    /// A MAC address used by an endpoint of network `net` on another host, if `mac` is.
    pub(super) fn remote_mac_owner(&self, net: &str, mac: dataplane::wire::MacAddr) -> Option<&RemoteEndpoint> {
        self.remote_eps.values().find(|e| e.network == net && e.mac == mac)
    }

    pub(super) fn cluster_publish(&self, ep: &Endpoint) {
        if let Some(c) = &self.cluster {
            if self.live_cluster_network(&ep.network).is_some_and(|n| n.driver == Driver::Overlay) {
                match c.put_endpoint(ep) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) | Err(e) => warn!(sandbox = %ep.sandbox, error = %e, "publishing endpoint"),
                }
            }
        }
    }

    /// Withdraws a local endpoint and gives its addresses back. Fails (and the caller
    /// keeps the endpoint) when the store cannot be reached: the claims would leak.
    pub(super) fn cluster_withdraw(&self, ep: &Endpoint) -> Result<(), String> {
        if let Some(c) = &self.cluster {
            if self.state.networks.get(&ep.network).is_some_and(|n| n.driver == Driver::Overlay) {
                c.delete_endpoint(ep).map_err(|e| format!("cluster store: {e}; the endpoint stays until its addresses can be given back"))?;
            }
        }
        Ok(())
    }
}

/// Claims `requested` for endpoint `id` on `net` (refused, naming `flag`, if another
/// endpoint holds it), or else the first address `alloc` offers that neither `local`
/// endpoints nor any claim in the store hold; a lost race moves on to the next.
fn claim_free<A>(
    c: &Cluster,
    net: &Network,
    requested: Option<A>,
    local: impl Iterator<Item = A>,
    alloc: impl Fn(&std::collections::BTreeSet<A>) -> Result<A, String>,
    flag: &str,
    id: &str,
) -> Result<A, String>
where
    A: Copy + Ord + std::fmt::Display + std::str::FromStr + Into<std::net::IpAddr>,
{
    if let Some(ip) = requested {
        return match c.claim_ip(&net.name, ip.into(), id)? {
            true => Ok(ip),
            false => Err(format!("{flag} {ip}: already in use on network {} ({})", net.name, c.ip_holder(&net.name, ip.into())?)),
        };
    }
    let mut used: std::collections::BTreeSet<A> = c.used_ips::<A>(&net.name)?.into_iter().collect();
    used.extend(local);
    for _ in 0..64 {
        let ip = alloc(&used)?;
        if c.claim_ip(&net.name, ip.into(), id)? {
            return Ok(ip);
        }
        used.insert(ip); // taken by another host meanwhile
    }
    Err(format!("network {}: could not claim an address (contention)", net.name))
}

/// The cluster store's definition of a network as this host keeps it: a routed
/// overlay's local copy has this host's /24 as its subnet and the whole range aside.
fn cluster_definition(n: &Network) -> Network {
    let mut d = n.clone();
    if let Some(range) = d.range.take() {
        d.subnet = range;
        d.gateway = Ipv4Addr::from(u32::from(range.network()) + 1);
    }
    d
}
