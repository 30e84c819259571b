//! Realises endpoints in the kernel: the veth pair or TAP device that gives a sandbox
//! its interface on a network, the interface's MAC, MTU, address and default route
//! inside the sandbox, and the switch-side settings. Everything is idempotent, so the
//! same calls recreate what is missing after a restart.
//!
//! The switch side of a veth lives in the daemon's namespace with no address, no IPv6
//! link-local (address generation off) and IFF_NOARP, so the daemon namespace's own IP
//! stack never answers for the sandboxes; the dataplane reads it with AF_PACKET.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use dataplane::port::tap::{TapOpts, TapQueue};

use crate::model::{Endpoint, EndpointKind, Network};
use crate::netlink::{LinkChange, Netlink, VethSpec};
use crate::netns::Netns;

fn ctx(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn ignore_exists(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

/// Brings up the switch side of an endpoint or attached interface in the daemon's
/// namespace.
pub fn configure_switch_side(nl: &mut Netlink, ifname: &str, mtu: Option<u32>) -> io::Result<()> {
    let link = nl.link_by_name(ifname)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("interface {ifname} not found")))?;
    nl.modify_link(link.index, &LinkChange { mtu, up: Some(true), noarp: Some(true), addr_gen_mode_none: true, ..Default::default() })
        .map_err(|e| ctx(e, format!("configuring {ifname}")))
}

/// Configures the sandbox side: MAC, MTU, up, address, and the default route via the
/// gateway when `default_route`.
pub fn configure_sandbox_side(sb: &Netns, ep: &Endpoint, net: &Network) -> io::Result<()> {
    let mut nl = Netlink::open_in(sb)?;
    let link = nl
        .link_by_name(&ep.ifname)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found in sandbox {}", ep.ifname, ep.sandbox)))?;
    if net.subnet6.is_none() {
        // As Docker does for IPv4-only networks: no IPv6 on the interface, so the
        // sandbox sends no router solicitations, MLD reports or DAD probes into a
        // network that has no IPv6 (they would also keep its MAC alive in the FDB).
        disable_ipv6(sb, &ep.ifname).map_err(|e| ctx(e, format!("disabling IPv6 on {} in {}", ep.ifname, ep.sandbox)))?;
    }
    let mac_change = if link.mac != Some(ep.mac.0) { Some(ep.mac.0) } else { None };
    if mac_change.is_some() && link.up {
        nl.set_up(link.index, false)?;
    }
    nl.modify_link(link.index, &LinkChange { mtu: Some(net.mtu), mac: mac_change, up: Some(true), ..Default::default() })
        .map_err(|e| ctx(e, format!("configuring {} in sandbox {}", ep.ifname, ep.sandbox)))?;
    ignore_exists(nl.add_address(link.index, IpAddr::V4(ep.ip), net.subnet.prefix_len))
        .map_err(|e| ctx(e, format!("address {}/{} on {} in {}", ep.ip, net.subnet.prefix_len, ep.ifname, ep.sandbox)))?;
    if let (Some(a), Some(c)) = (ep.ip6, net.subnet6) {
        // No duplicate address detection: IPAM already guarantees uniqueness, and the
        // address is usable at once.
        ignore_exists(nl.add_address_flags(link.index, IpAddr::V6(a), c.prefix_len, true))
            .map_err(|e| ctx(e, format!("address {a}/{} on {} in {}", c.prefix_len, ep.ifname, ep.sandbox)))?;
    }
    if ep.default_route {
        set_default_routes(&mut nl, net, link.index).map_err(|e| ctx(e, format!("default route in {}", ep.sandbox)))?;
    }
    Ok(())
}

/// Sets `net.ipv6.conf.IFNAME.disable_ipv6 = 1` inside the sandbox (a sysctl under
/// /proc/sys/net belongs to the namespace of the thread that opens it). A kernel without
/// IPv6 has nothing to disable.
fn disable_ipv6(sb: &Netns, ifname: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match sb.run_in(move || std::fs::write(&path, "1"))? {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Points the sandbox's default route at `gw` through `oif`.
pub fn set_default_route(nl: &mut Netlink, gw: Ipv4Addr, oif: u32) -> io::Result<()> {
    nl.replace_route(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, Some(IpAddr::V4(gw)), Some(oif))
}

/// The sandbox's default routes through `net`'s gateways on interface `oif`: IPv4, and
/// IPv6 when the network has an IPv6 gateway (a static route, as Docker sets; the
/// gateway's router advertisements add a link-local one beside it).
pub fn set_default_routes(nl: &mut Netlink, net: &Network, oif: u32) -> io::Result<()> {
    set_default_route(nl, net.gateway, oif)?;
    if let Some(g6) = net.gateway6 {
        nl.replace_route(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0, Some(IpAddr::V6(g6)), Some(oif))?;
    }
    Ok(())
}

/// Creates the veth pair of a veth endpoint: the switch end in the daemon's namespace,
/// the sandbox end directly inside the sandbox under its final name.
pub fn create_veth(nl: &mut Netlink, sb: &Netns, ep: &Endpoint, net: &Network) -> io::Result<()> {
    nl.create_veth(&VethSpec {
        name: &ep.host_ifname,
        peer_name: &ep.ifname,
        peer_ns: Some(sb),
        mtu: Some(net.mtu),
        mac: None,
        peer_mac: Some(ep.mac.0),
    })
    .map_err(|e| ctx(e, format!("creating veth {} <-> {}:{}", ep.host_ifname, ep.sandbox, ep.ifname)))?;
    configure_switch_side(nl, &ep.host_ifname, Some(net.mtu))?;
    configure_sandbox_side(sb, ep, net)
}

/// Creates the TAP of a TAP endpoint with one queue per worker, makes it persistent
/// (it survives a daemon restart), moves it into the sandbox under its final name and
/// configures it. Returns the queues for the workers.
pub fn create_tap(nl: &mut Netlink, sb: &Netns, ep: &Endpoint, net: &Network, queues: usize, opts: &TapOpts) -> io::Result<Vec<TapQueue>> {
    let qs = TapQueue::open_queues(&ep.host_ifname, queues, opts).map_err(|e| ctx(e, format!("creating TAP {}", ep.host_ifname)))?;
    let undo = |nl: &mut Netlink| {
        if let Ok(Some(l)) = nl.link_by_name(&ep.host_ifname) {
            let _ = nl.delete_link(l.index);
        }
    };
    if let Err(e) = qs[0].set_persist(true) {
        return Err(ctx(e, format!("TAP {} persist", ep.host_ifname)));
    }
    let r = (|| {
        let link = nl
            .link_by_name(&ep.host_ifname)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("TAP {} vanished", ep.host_ifname)))?;
        nl.modify_link(
            link.index,
            &LinkChange { mtu: Some(net.mtu), mac: Some(ep.mac.0), txqlen: Some(1000), alias: Some(ENDPOINT_TAP_ALIAS), ..Default::default() },
        )?;
        nl.modify_link(link.index, &LinkChange { netns: Some(sb), name: Some(&ep.ifname), ..Default::default() })
            .map_err(|e| ctx(e, format!("moving TAP {} into {} as {}", ep.host_ifname, ep.sandbox, ep.ifname)))
    })();
    if let Err(e) = r {
        undo(nl);
        // Moved, but the rename failed: it is in the sandbox under its own name.
        delete_in_sandbox(sb, &ep.host_ifname);
        return Err(e);
    }
    if let Err(e) = configure_sandbox_side(sb, ep, net) {
        delete_in_sandbox(sb, &ep.ifname);
        return Err(e);
    }
    Ok(qs)
}

/// The alias (IFLA_IFALIAS) of the TAPs the switch makes for endpoints: it goes with the
/// TAP into the sandbox, so a TAP left there by a daemon killed between making it and
/// saving the state (or between saving a disconnect and deleting it) is recognised as
/// the switch's own at the next start, and removed.
pub const ENDPOINT_TAP_ALIAS: &str = "vswitchd endpoint";
/// The alias of the TAPs the switch makes for `port add --type tap`.
pub const PORT_TAP_ALIAS: &str = "vswitchd port";

/// `l` is a TAP the switch made and marked with `alias`.
pub fn is_marked_tap(l: &crate::netlink::LinkInfo, alias: &str) -> bool {
    l.kind.as_deref() == Some("tun") && l.alias.as_deref() == Some(alias)
}

/// The TAP (tun) link `name` in namespace `ns`, if there is one.
pub fn tap_in(ns: &Netns, name: &str) -> Option<crate::netlink::LinkInfo> {
    Netlink::open_in(ns).and_then(|mut nl| nl.link_by_name(name)).ok().flatten().filter(|l| l.kind.as_deref() == Some("tun"))
}

/// Reattaches to the persistent TAP `name` that already lives in namespace `sb` (an
/// endpoint's in its sandbox, a TAP port moved by hand; after a daemon restart). `None`
/// if it is not there (or is not a TAP).
pub fn reopen_tap(sb: &Netns, name: &str, queues: usize, opts: &TapOpts) -> io::Result<Option<Vec<TapQueue>>> {
    let mut nl = Netlink::open_in(sb)?;
    match nl.link_by_name(name)? {
        Some(l) if l.kind.as_deref() == Some("tun") => {}
        _ => return Ok(None),
    }
    let name = name.to_string();
    let opts = *opts;
    let qs = sb.run_in(move || TapQueue::open_queues(&name, queues, &opts))??;
    Ok(Some(qs))
}

/// Deletes interface `ifname` inside a sandbox, ignoring its absence.
pub fn delete_in_sandbox(sb: &Netns, ifname: &str) {
    if let Ok(mut nl) = Netlink::open_in(sb) {
        if let Ok(Some(l)) = nl.link_by_name(ifname) {
            let _ = nl.delete_link(l.index);
        }
    }
}

/// Removes the kernel objects of an endpoint: the veth pair (deleting the switch end
/// takes the sandbox end with it), or the TAP inside the sandbox.
pub fn delete(nl: &mut Netlink, sb: Option<&Netns>, ep: &Endpoint) {
    match ep.kind {
        EndpointKind::Veth => {
            if let Ok(Some(l)) = nl.link_by_name(&ep.host_ifname) {
                let _ = nl.delete_link(l.index);
            }
        }
        EndpointKind::Tap => {
            if let Some(sb) = sb {
                delete_in_sandbox(sb, &ep.ifname);
            }
            // Not yet moved (failed half-way): it is still here under its own name.
            if let Ok(Some(l)) = nl.link_by_name(&ep.host_ifname) {
                let _ = nl.delete_link(l.index);
            }
        }
    }
}
