//! The per-batch forwarding pipeline: a pure function of (tables, packet bytes,
//! ingress port) → actions, with no sockets, no allocation and no locks, so it is unit
//! tested with byte arrays and benchmarked with criterion.
//!
//! A batch received on one port goes through three passes (VPP style):
//! 1. prefetch the MAC-table buckets of every frame's source and destination;
//! 2. decide `next[i]` for every frame: learn the source, then gateway / flood /
//!    unicast / drop;
//! 3. act: hand each frame to the `Output` (the worker's tx queues) once per egress
//!    port, with a reference per copy for floods.

use crate::bridge::fdb::Learn;
use crate::buf::{Batch, BufPool, PktId, PortId, BATCH_MAX};
use crate::router::dhcp;
use crate::router::local::{self, Local};
use crate::router::local6::{self, GatewayV6, Local6};
use crate::stats::{bump, DropReason, Event, WorkerStats};
use crate::tables::{NetworkEntry, Tables};
use crate::vnet::VnetHdr;
use crate::wire::eth::{self, ETHERTYPE_ARP};
use crate::wire::MacAddr;

/// Where a frame goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Out of one port.
    Tx(PortId),
    /// To every other port of the ingress network.
    Flood,
    /// To the gateway (the switch itself).
    Local,
    /// Both: a broadcast the gateway may answer (ARP) and that is flooded.
    FloodLocal,
    /// A DHCP request from a port the gateway serves by DHCP: answered, never flooded
    /// (the switch is that port's DHCP server, as OVN's native DHCP).
    Dhcp,
    /// An ARP request or IPv6 neighbour solicitation for an endpoint on another host:
    /// answered with its MAC, never flooded over the tunnels.
    NeighProxy(MacAddr),
    Drop(DropReason),
}

/// Receives the frames the pipeline forwards. The implementation owns one reference
/// of `id` per call and must transmit or release it.
pub trait Output {
    fn emit(&mut self, pool: &mut BufPool, port: PortId, id: PktId);
}

/// What the pipeline reads besides the packets.
pub struct Ctx<'a> {
    pub tables: &'a Tables,
    /// Current second (monotonic), for MAC aging and connection tracking.
    pub now: u32,
    /// Current millisecond (same clock), for ARP timers and ICMP rate limits.
    pub now_ms: u64,
    pub stats: &'a WorkerStats,
}

/// Forwards a batch received on `in_port`. Every packet of the batch is consumed
/// (emitted or released); the batch itself is left for the caller to clear.
pub fn process<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, in_port: PortId, batch: &Batch, out: &mut O) {
    let ids = batch.as_slice();
    if let Some(up) = cx.tables.uplink.filter(|u| u.port == in_port) {
        let mut bytes = 0;
        for &id in ids {
            bytes += pool.meta(id).len as u64;
        }
        if let Some(c) = cx.stats.port(in_port) {
            bump(&c.rx_packets, ids.len() as u64);
            bump(&c.rx_bytes, bytes);
        }
        for &id in ids {
            route::from_uplink(cx, rs, pool, id, &up, out);
        }
        return;
    }
    if let Some((pe, net)) = cx.tables.port_network(in_port) {
        if pe.tunnel_l3 {
            if let Some(c) = cx.stats.port(in_port) {
                bump(&c.rx_packets, ids.len() as u64);
                bump(&c.rx_bytes, ids.iter().map(|&id| pool.meta(id).len as u64).sum());
            }
            for &id in ids {
                route::from_l3_tunnel(cx, rs, pool, id, net, out);
            }
            return;
        }
    }
    let Some((_, net)) = cx.tables.port_network(in_port) else {
        cx.stats.count_drop(DropReason::PortUnknown, ids.len() as u64);
        for &id in ids {
            pool.release(id);
        }
        return;
    };

    // Pass 1: prefetch table buckets; count rx.
    let mut bytes = 0u64;
    for &id in ids {
        let f = pool.frame(id);
        bytes += f.len() as u64;
        if f.len() >= eth::HDR_LEN {
            net.fdb.prefetch(eth::dst(f));
            net.fdb.prefetch(eth::src(f));
        }
    }
    if let Some(c) = cx.stats.port(in_port) {
        bump(&c.rx_packets, ids.len() as u64);
        bump(&c.rx_bytes, bytes);
    }

    // Pass 2: decide.
    let mut next = [Next::Drop(DropReason::Truncated); BATCH_MAX];
    for (i, &id) in ids.iter().enumerate() {
        next[i] = decide(cx, net, in_port, pool.frame(id));
    }

    // Pass 3: act.
    let mut dropped = 0;
    for (i, &id) in ids.iter().enumerate() {
        match next[i] {
            Next::Tx(p) => out.emit(pool, p, id),
            Next::Flood => flood(cx, pool, net, in_port, id, out),
            Next::Local => local_unicast(cx, rs, pool, net, in_port, id, out),
            Next::FloodLocal => {
                local_broadcast(cx, pool, net, in_port, id, out);
                flood(cx, pool, net, in_port, id, out);
            }
            Next::Dhcp => dhcp_reply(cx, pool, net, in_port, id, out),
            Next::NeighProxy(mac) => neigh_proxy(cx, pool, in_port, id, mac, out),
            Next::Drop(r) => {
                cx.stats.count_drop(r, 1);
                pool.release(id);
                dropped += 1;
            }
        }
    }
    // Also on the port they came from, so `stats --port` shows who sends bad frames.
    if dropped > 0 {
        if let Some(c) = cx.stats.port(in_port) {
            bump(&c.rx_dropped, dropped);
        }
    }
}

/// Bridge decision for one frame (learns its source as a side effect).
#[inline]
fn decide(cx: &Ctx<'_>, net: &NetworkEntry, in_port: PortId, f: &[u8]) -> Next {
    if f.len() < eth::HDR_LEN {
        return Next::Drop(DropReason::Truncated);
    }
    let src = eth::src(f);
    // From another host's tunnel: plain L2. That host's own gateway (same address, same
    // MAC on every host) has answered its sandboxes; we must not answer them too.
    let from_tunnel = cx.tables.port(in_port).is_some_and(|p| p.tunnel);
    // A port claiming the gateway's MAC is spoofing it (a Linux bridge drops frames
    // from its own address too): never learnt.
    if !src.is_unicast() || (!from_tunnel && net.gateway.is_some_and(|g| g.mac == src)) {
        return Next::Drop(DropReason::BadSrcMac);
    }
    match net.fdb.learn(src, in_port, cx.now) {
        Learn::Known => {}
        Learn::Inserted => cx.stats.event(Event::FdbInsert, 1),
        Learn::Moved { .. } => cx.stats.event(Event::FdbMove, 1),
        Learn::Refused => cx.stats.event(Event::FdbFull, 1),
    }
    let dst = eth::dst(f);
    if from_tunnel {
        if net.gateway.is_some_and(|g| g.mac == dst) {
            return Next::Drop(DropReason::SameSegment);
        }
        if dst.is_multicast() {
            return Next::Flood;
        }
    } else {
        if dst.is_multicast() && net.icc && !(cx.tables.remote_arp.is_empty() && cx.tables.remote_nd.is_empty()) {
            if let Some(mac) = remote_neighbour(cx, net, f) {
                return Next::NeighProxy(mac);
            }
        }
        if let Some(gw) = &net.gateway {
            // DHCP from a port with an address reserved for it: to the gateway (RENEWING,
            // INFORM) or broadcast (DISCOVER, REQUEST, REBINDING).
            if dst == gw.mac {
                return if dhcp_request(cx, in_port, f) { Next::Dhcp } else { Next::Local };
            }
            if dst.is_broadcast() {
                if eth::ethertype(f) == ETHERTYPE_ARP {
                    return Next::FloodLocal;
                }
                if dhcp_request(cx, in_port, f) {
                    return Next::Dhcp;
                }
            }
        }
    }
    // IPv6 neighbour and router solicitations are multicast: flooded, and answered by
    // the gateway when they are for it.
    if !from_tunnel && dst.is_multicast() && net.gateway6.is_some() && eth::l3(f).is_some_and(|(_, et)| et == eth::ETHERTYPE_IPV6) {
        return Next::FloodLocal;
    }
    if dst.is_multicast() {
        return Next::Flood;
    }
    let tunnel = |p: PortId| cx.tables.port(p).is_some_and(|e| e.tunnel);
    match net.fdb.lookup(dst) {
        Some(p) if p == in_port => Next::Drop(DropReason::SameSegment),
        // Split horizon for known unicast too: a host behind another tunnel got the
        // frame from its sender directly.
        Some(p) if from_tunnel && tunnel(p) => Next::Drop(DropReason::SameSegment),
        // --icc=false: ports reach the gateway only.
        Some(_) if !net.icc => Next::Drop(DropReason::Isolated),
        Some(p) if cx.tables.port(p).is_some_and(|pe| pe.net == net.id) => Next::Tx(p),
        _ if !net.icc => Next::Drop(DropReason::Isolated),
        _ => match cx.tables.remote_macs.get(&(net.id, dst)) {
            Some(&p) if p != in_port && !(from_tunnel && tunnel(p)) => Next::Tx(p),
            Some(_) if from_tunnel => Next::Drop(DropReason::SameSegment),
            _ => Next::Flood,
        },
    }
}

/// The MAC of the endpoint on another host that the ARP request (broadcast) or
/// neighbour solicitation (multicast) `f` asks for. Out of line: only broadcasts and
/// multicasts from local ports of a network with remote endpoints get here.
#[inline(never)]
fn remote_neighbour(cx: &Ctx<'_>, net: &NetworkEntry, f: &[u8]) -> Option<MacAddr> {
    match eth::ethertype(f) {
        ETHERTYPE_ARP if eth::dst(f).is_broadcast() => {
            let ip = local::arp_request_target(f)?;
            cx.tables.remote_arp.get(&(net.id, u32::from(ip))).copied()
        }
        eth::ETHERTYPE_IPV6 if !cx.tables.remote_nd.is_empty() => {
            let ip = local6::solicit_target(f)?;
            cx.tables.remote_nd.get(&(net.id, u128::from(ip))).copied()
        }
        _ => None,
    }
}

/// Answers an ARP request or neighbour solicitation (validated by [`remote_neighbour`],
/// so not parsed again for its target) for an endpoint on another host, in place, with
/// its MAC.
fn neigh_proxy<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, in_port: PortId, id: PktId, mac: MacAddr, out: &mut O) {
    let off = pool.meta(id).off as usize;
    let (req, n) = request_head::<128>(pool, id);
    let (reply_len, event) = if eth::ethertype(&req[..n]) == ETHERTYPE_ARP {
        (local::arp_reply_for(&req[..n], mac, &mut pool.raw_mut(id)[off..off + local::ARP_REPLY_LEN]), Event::ArpProxied)
    } else {
        (local6::neighbor_advert_for(&req[..n], mac, &mut pool.raw_mut(id)[off..off + local6::NA_LEN]), Event::NdProxied)
    };
    if reply_len.is_some() {
        cx.stats.event(event, 1);
    }
    emit_in_place_reply(cx, pool, in_port, id, reply_len, out);
}

/// Sends `id` to every port of `net` except `in_port`.
#[inline]
fn flood<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, net: &NetworkEntry, in_port: PortId, id: PktId, out: &mut O) {
    let from_tunnel = cx.tables.port(in_port).is_some_and(|p| p.tunnel);
    let skip = |p: PortId| p == in_port || (from_tunnel && cx.tables.port(p).is_some_and(|e| e.tunnel));
    let n = net.ports.iter().filter(|&&p| !skip(p)).count();
    if n == 0 {
        pool.release(id);
        return;
    }
    cx.stats.event(Event::Flood, 1);
    pool.add_ref(id, (n - 1) as u16);
    for &p in &net.ports {
        if !skip(p) {
            out.emit(pool, p, id);
        }
    }
}

/// The first `N` bytes of frame `id` (a request the gateway answers), copied out so the
/// reply can be written over the buffer.
fn request_head<const N: usize>(pool: &BufPool, id: PktId) -> ([u8; N], usize) {
    let mut req = [0u8; N];
    let f = pool.frame(id);
    let n = f.len().min(N);
    req[..n].copy_from_slice(&f[..n]);
    (req, n)
}

/// Sends a reply written over its request (`id`) back out of `in_port`; a request the
/// gateway could not answer (`None`) is dropped and counted.
fn emit_in_place_reply<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, in_port: PortId, id: PktId, reply_len: Option<usize>, out: &mut O) {
    match reply_len {
        Some(len) => {
            let m = pool.meta_mut(id);
            m.len = len as u32;
            m.vnet = VnetHdr::default();
            m.in_port = 0;
            out.emit(pool, in_port, id);
        }
        None => {
            cx.stats.count_drop(DropReason::BadLocal, 1);
            pool.release(id);
        }
    }
}

/// A frame to the gateway's MAC: answer it in place, or hand it to the router.
fn local_unicast<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, net: &NetworkEntry, in_port: PortId, id: PktId, out: &mut O) {
    if let Some(g6) = &net.gateway6 {
        if eth::l3(pool.frame(id)).is_some_and(|(_, et)| et == eth::ETHERTYPE_IPV6) {
            return local6_unicast(cx, pool, g6, in_port, id, out);
        }
    }
    let Some(gw) = net.gateway else {
        cx.stats.count_drop(DropReason::NoRoute, 1);
        pool.release(id);
        return;
    };
    let verdict = local::classify(pool.frame(id), &gw);
    let reply_len = match verdict {
        Local::EchoRequest => {
            let r = local::echo_reply_in_place(pool.frame_mut(id), &gw);
            if r.is_some() {
                cx.stats.event(Event::IcmpEchoReply, 1);
            }
            r
        }
        Local::ArpRequest => {
            let (req, n) = request_head::<64>(pool, id);
            let off = pool.meta(id).off as usize;
            let r = local::arp_reply(&req[..n], &gw, &mut pool.raw_mut(id)[off..off + local::ARP_REPLY_LEN]);
            if r.is_some() {
                cx.stats.event(Event::ArpReply, 1);
            }
            r
        }
        Local::Malformed => None,
        Local::NotForUs | Local::Unhandled => {
            route::from_network(cx, rs, pool, id, net, in_port, out);
            return;
        }
    };
    emit_in_place_reply(cx, pool, in_port, id, reply_len, out);
}

/// Whether `f` is a DHCP request from a port the gateway serves by DHCP. Out of line:
/// only frames to the gateway and broadcasts get here, and the bridging path stays as
/// small as it was.
#[inline(never)]
fn dhcp_request(cx: &Ctx<'_>, in_port: PortId, f: &[u8]) -> bool {
    cx.tables.port(in_port).is_some_and(|p| p.dhcp) && dhcp::is_request(f)
}

/// Answers a DHCP request from `in_port` (which has a binding) in place.
#[cold]
#[inline(never)]
fn dhcp_reply<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, net: &NetworkEntry, in_port: PortId, id: PktId, out: &mut O) {
    let (Some(gw), Some(&lease)) = (net.gateway, cx.tables.dhcp.get(&in_port)) else {
        cx.stats.count_drop(DropReason::BadLocal, 1);
        pool.release(id);
        return;
    };
    let (req, n) = request_head::<{ dhcp::REQUEST_MAX }>(pool, id);
    let off = pool.meta(id).off as usize;
    match dhcp::reply(&req[..n], &gw, &lease, &mut pool.raw_mut(id)[off..off + dhcp::REPLY_LEN]) {
        Ok((len, answer)) => {
            cx.stats.event(
                match answer {
                    dhcp::Answer::Offer => Event::DhcpOffer,
                    dhcp::Answer::Ack => Event::DhcpAck,
                    dhcp::Answer::Nak => Event::DhcpNak,
                },
                1,
            );
            emit_in_place_reply(cx, pool, in_port, id, Some(len), out);
        }
        Err(dhcp::NoReply::Malformed) => emit_in_place_reply(cx, pool, in_port, id, None, out),
        Err(dhcp::NoReply::Ignored) => {
            cx.stats.count_drop(DropReason::DhcpIgnored, 1);
            pool.release(id);
        }
    }
}

/// IPv6 to the gateway's MAC: neighbour solicitations (unicast, for reachability)
/// and echo requests are answered; IPv6 is not routed (no IPv6 uplink), so the rest is
/// dropped and counted.
fn local6_unicast<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, g6: &GatewayV6, in_port: PortId, id: PktId, out: &mut O) {
    let reply_len = match local6::classify(pool.frame(id), g6) {
        Local6::EchoRequest => {
            let r = local6::echo_reply_in_place(pool.frame_mut(id));
            if r.is_some() {
                cx.stats.event(Event::IcmpEchoReply, 1);
            }
            r
        }
        Local6::NeighborSolicit { target } => {
            let (req, n) = request_head::<128>(pool, id);
            let off = pool.meta(id).off as usize;
            local6::neighbor_advert(&req[..n], target, g6, &mut pool.raw_mut(id)[off..off + local6::NA_LEN])
        }
        Local6::RouterSolicit => {
            let (req, n) = request_head::<128>(pool, id);
            let off = pool.meta(id).off as usize;
            local6::router_advert(Some(&req[..n]), g6, &mut pool.raw_mut(id)[off..off + local6::RA_LEN])
        }
        Local6::NotForUs | Local6::Malformed => {
            cx.stats.count_drop(DropReason::NotIpv4, 1);
            pool.release(id);
            return;
        }
    };
    emit_in_place_reply(cx, pool, in_port, id, reply_len, out);
}

/// A broadcast/multicast the gateway may answer (ARP request for its address, IPv6
/// neighbour or router solicitation): the reply goes in a new buffer; the request
/// itself is left untouched for flooding.
fn local_broadcast<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, net: &NetworkEntry, in_port: PortId, id: PktId, out: &mut O) {
    if let Some(g6) = &net.gateway6 {
        if eth::l3(pool.frame(id)).is_some_and(|(_, et)| et == eth::ETHERTYPE_IPV6) {
            let (kind, target) = match local6::classify(pool.frame(id), g6) {
                Local6::NeighborSolicit { target } => (1, Some(target)),
                Local6::RouterSolicit => (2, None),
                _ => return,
            };
            let Some(reply) = pool.alloc() else {
                cx.stats.count_drop(DropReason::NoBuffer, 1);
                return;
            };
            let (req, n) = request_head::<128>(pool, id);
            let off = pool.meta(reply).off as usize;
            let buf = &mut pool.raw_mut(reply)[off..off + local6::RA_LEN.max(local6::NA_LEN)];
            let r = match (kind, target) {
                (1, Some(t)) => local6::neighbor_advert(&req[..n], t, g6, buf),
                _ => local6::router_advert(Some(&req[..n]), g6, buf),
            };
            match r {
                Some(len) => {
                    pool.meta_mut(reply).len = len as u32;
                    out.emit(pool, in_port, reply);
                }
                None => pool.release(reply),
            }
            return;
        }
    }
    let Some(gw) = net.gateway else { return };
    if local::classify(pool.frame(id), &gw) != Local::ArpRequest {
        return;
    }
    let Some(reply) = pool.alloc() else {
        cx.stats.count_drop(DropReason::NoBuffer, 1);
        return;
    };
    let (req, n) = request_head::<64>(pool, id);
    let off = pool.meta(reply).off as usize;
    let r = local::arp_reply(&req[..n], &gw, &mut pool.raw_mut(reply)[off..off + local::ARP_REPLY_LEN]);
    match r {
        Some(len) => {
            pool.meta_mut(reply).len = len as u32;
            cx.stats.event(Event::ArpReply, 1);
            out.emit(pool, in_port, reply);
        }
        None => {
            cx.stats.count_drop(DropReason::BadLocal, 1);
            pool.release(reply);
        }
    }
}

pub mod egress;
pub mod route;

pub use route::RouterState;

#[cfg(test)]
mod tests;
