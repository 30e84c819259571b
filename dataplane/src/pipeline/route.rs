//! The router stage: IPv4 frames addressed to a gateway's MAC, and everything that
//! arrives on the uplink. What Docker's bridge driver does with iptables, done here:
//!
//! 1. addresses the switch owns (gateways, uplink): ICMP echo is answered; published
//!    ports (DNAT) and replies of masqueraded flows go on through NAT; the rest is
//!    dropped and counted;
//! 2. route lookup (on the DNAT target for published ports) and policy: networks are
//!    isolated from each other, `--internal` networks have no way out, nothing enters
//!    from the uplink unless connection tracking or a published port lets it;
//! 3. TTL and MTU checks on the untranslated packet (so the ICMP errors quote what the
//!    sender sent), then TTL decrement (incremental checksum);
//! 4. connection tracking and NAT (masquerade to the uplink address, DNAT, hairpin);
//! 5. neighbour resolution (known endpoints from the tables, else the shared ARP
//!    cache; misses wait in the worker's pending queue while ARP runs);
//! 6. MAC rewrite and output: into the egress network through its MAC table, or out of
//!    the uplink.
//!
//! Per packet: no allocation, no syscall, no lock shared with control.

use std::net::Ipv4Addr;

use crate::buf::{BufPool, PktId, PortId, HEADROOM};
use crate::nat::{self, PolicyInput, Reason, Verdict, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use crate::router::fib::{Egress, NextHop};
use crate::router::icmp::{self, IcmpError, RateLimiter};
use crate::router::neigh::{self, Claim, LearnFrom, Lookup, PendingQueue, Resolution, UPLINK_EGRESS};
use crate::stats::{DropReason, Event};
use crate::tables::{NetId, NetworkEntry, RouterTables, Tables, UplinkEntry};
use crate::vnet::VnetHdr;
use crate::wire::eth::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::MacAddr;

use super::{Ctx, Output};

/// Per-worker router state (never shared).
pub struct RouterState {
    /// Packets waiting for ARP.
    pub pending: PendingQueue,
    /// ICMP errors per second.
    pub icmp: RateLimiter,
    last_claim_ms: u64,
    /// The start of the packet being routed as its sender sent it (IPv4 header and
    /// the 8 bytes after it: ports, ICMP id), kept for packets routed only after
    /// translation that may turn out too big: what "fragmentation needed" quotes so the
    /// sender can match it.
    sent_head: [u8; 68],
}

impl Default for RouterState {
    fn default() -> RouterState {
        RouterState { pending: PendingQueue::default(), icmp: RateLimiter::default(), last_claim_ms: 0, sent_head: [0; 68] }
    }
}

impl RouterState {
    /// Keeps the start of the packet `f` (see `sent_head`); returns its length.
    #[cold]
    #[inline(never)]
    fn save_head(&mut self, f: &[u8], ip: &Ip) -> usize {
        let n = (ip.ihl + 8).min(ip.total).min(self.sent_head.len());
        self.sent_head[..n].copy_from_slice(&f[ip.l3..ip.l3 + n]);
        n
    }

    /// Milliseconds until the worker must call `poll_pending` again (ARP retransmits,
    /// expiry), if anything is pending.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.pending.is_empty() {
            None
        } else {
            Some(100)
        }
    }
}

/// Where a routed packet came in.
#[derive(Clone, Copy)]
pub enum Ingress<'a> {
    Net(&'a NetworkEntry),
    Uplink(&'a UplinkEntry),
}

impl Ingress<'_> {
    /// The switch's address and MAC on that side (source of ICMP errors and replies).
    fn ours(&self) -> Option<(Ipv4Addr, MacAddr)> {
        match self {
            Ingress::Net(n) => n.gateway.map(|g| (g.ip, g.mac)),
            Ingress::Uplink(u) => Some((u.ip, u.mac)),
        }
    }
}

/// Fields of an IPv4 header the router needs (offsets are from the frame start).
#[derive(Clone, Copy)]
struct Ip {
    l3: usize,
    ihl: usize,
    total: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    df: bool,
    first_frag: bool,
}

fn parse_ip(f: &[u8], l3: usize) -> Option<Ip> {
    let h = f.get(l3..l3 + 20)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((h[0] & 0xf) as usize) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if ihl < 20 || total < ihl || l3 + total > f.len() {
        return None;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    Some(Ip {
        l3,
        ihl,
        total,
        proto: h[9],
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        df: frag & 0x4000 != 0,
        first_frag: frag & 0x1fff == 0,
    })
}

/// Destination port (TCP/UDP) of a first fragment, for the DNAT lookup.
fn dport(f: &[u8], ip: &Ip) -> Option<u16> {
    if !ip.first_frag || !(ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) {
        return None;
    }
    let o = ip.l3 + ip.ihl;
    f.get(o + 2..o + 4).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// The tunnel port towards the host whose subnet of routed overlay network `net` holds
/// `addr`.
fn overlay_route(rt: &RouterTables, net: NetId, addr: Ipv4Addr) -> Option<PortId> {
    rt.overlay_routes.iter().find(|(p, l, n, _)| *n == net && crate::tables::same_subnet(*p, *l, addr)).map(|r| r.3)
}

fn is_echo_request(f: &[u8], ip: &Ip) -> bool {
    ip.proto == IPPROTO_ICMP && ip.first_frag && f.get(ip.l3 + ip.ihl) == Some(&8)
}

fn discard(cx: &Ctx<'_>, pool: &mut BufPool, id: PktId, r: DropReason) {
    cx.stats.count_drop(r, 1);
    pool.release(id);
}

/// An IPv4 (or ARP) frame addressed to the gateway MAC of `net` that the gateway's
/// own answers (ARP for it, echo to it) did not consume.
pub fn from_network<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, id: PktId, net: &NetworkEntry, in_port: PortId, out: &mut O) {
    let f = pool.frame(id);
    match eth::l3(f) {
        Some((_, ETHERTYPE_ARP)) => {
            learn_arp(cx, net.id, f, net.gateway.map(|g| g.ip));
            pool.release(id);
        }
        Some((l3, ETHERTYPE_IPV4)) => forward(cx, rs, pool, id, l3, Ingress::Net(net), in_port, out),
        _ => discard(cx, pool, id, DropReason::NotIpv4),
    }
}

/// Learns neighbours from ARP frames seen on a network (replies to the gateway,
/// requests for it).
pub fn learn_arp(cx: &Ctx<'_>, egress: u16, f: &[u8], our_ip: Option<Ipv4Addr>) {
    let (Some(rt), Some(our)) = (cx.tables.router.as_deref(), our_ip) else { return };
    if let Some(a) = neigh::parse_arp(f) {
        if let Some(how) = a.learn_from(our) {
            if a.tpa == our || how == LearnFrom::Unsolicited {
                let r = rt.neigh.learn(egress, a.spa, a.sha, cx.now_ms, how);
                if matches!(r, neigh::LearnResult::Created | neigh::LearnResult::Resolved | neigh::LearnResult::Changed { .. }) {
                    cx.stats.event(Event::NeighLearned, 1);
                }
            }
        }
    }
}

/// A frame received on the uplink.
pub fn from_uplink<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, id: PktId, up: &UplinkEntry, out: &mut O) {
    let f = pool.frame(id);
    if f.len() < eth::HDR_LEN {
        return discard(cx, pool, id, DropReason::Truncated);
    }
    let dst = eth::dst(f);
    if dst != up.mac && !dst.is_broadcast() {
        // The uplink is not a bridge port: frames for other stations are not ours.
        return discard(cx, pool, id, DropReason::NoRoute);
    }
    match eth::l3(f) {
        Some((_, ETHERTYPE_ARP)) => {
            let Some(a) = neigh::parse_arp(f) else { return discard(cx, pool, id, DropReason::BadLocal) };
            learn_arp(cx, UPLINK_EGRESS, f, Some(up.ip));
            if a.op == neigh::ArpOp::Request && a.tpa == up.ip {
                // Answer in place.
                let off = pool.meta(id).off as usize;
                let buf = &mut pool.raw_mut(id)[off..off + neigh::ARP_FRAME_LEN];
                match neigh::arp_reply(buf, up.mac, up.ip, a.sha, a.spa) {
                    Some(n) => {
                        let m = pool.meta_mut(id);
                        m.len = n as u32;
                        m.vnet = VnetHdr::default();
                        cx.stats.event(Event::ArpReply, 1);
                        out.emit(pool, up.port, id);
                    }
                    None => discard(cx, pool, id, DropReason::BadLocal),
                }
            } else {
                pool.release(id);
            }
        }
        Some((l3, ETHERTYPE_IPV4)) if dst == up.mac => forward(cx, rs, pool, id, l3, Ingress::Uplink(up), up.port, out),
        Some((_, ETHERTYPE_IPV4)) => discard(cx, pool, id, DropReason::NoRoute),
        _ => discard(cx, pool, id, DropReason::NotIpv4),
    }
}

/// Routes one IPv4 packet (see the module docs for the order of the steps).
#[allow(clippy::too_many_arguments)]
fn forward<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, id: PktId, l3: usize, ing: Ingress<'_>, in_port: PortId, out: &mut O) {
    let t: &Tables = cx.tables;
    let Some(rt) = t.router.as_deref() else { return discard(cx, pool, id, DropReason::NoRoute) };
    let Some(ip) = parse_ip(pool.frame(id), l3) else { return discard(cx, pool, id, DropReason::Truncated) };

    // 1. Addressed to the switch: echo is answered here; published ports, replies of
    //    masqueraded and hairpinned flows go on through connection tracking (which
    //    refuses anything else: nothing listens on the switch's addresses).
    let local = rt.local.get(&ip.dst).copied();
    let mut dnat_target = None;
    if local.is_some() {
        // Published ports on every address of the switch, the gateways included (as
        // Docker's on docker0's address); rules bound to one address match only it.
        if let Some(p) = dport(pool.frame(id), &ip) {
            dnat_target = rt.dnat.lookup(ip.proto, ip.dst, p);
        }
        if dnat_target.is_none() && is_echo_request(pool.frame(id), &ip) {
            return echo_reply(cx, pool, id, &ip, in_port, out);
        }
    }

    // Routed overlay: another host's subnet of this network goes through its tunnel.
    if let Ingress::Net(net) = ing {
        if local.is_none() {
            if let Some(port) = overlay_route(rt, net.id, ip.dst) {
                if pool.frame(id)[l3 + 8] <= 1 {
                    return reject(cx, rs, pool, id, &ip, ing, in_port, DropReason::TtlExceeded, Some(IcmpError::TimeExceeded), out);
                }
                if icmp::dec_ttl(&mut pool.frame_mut(id)[l3..l3 + ip.ihl]).is_err() {
                    return discard(cx, pool, id, DropReason::Truncated);
                }
                cx.stats.event(Event::Routed, 1);
                return out.emit(pool, port, id);
            }
        }
    }

    // 2. Route and policy on what we know before translation: traffic from a network
    //    to a foreign address (or to a published port) is routed now; traffic to our
    //    own addresses and from the uplink is routed after translation.
    let routed_before = match ing {
        Ingress::Net(net) if local.is_none() || dnat_target.is_some() => {
            let dst = dnat_target.map(|(a, _)| a).unwrap_or(ip.dst);
            // Published ports may be reached across networks (as Docker's proxy allows).
            match route(cx, rt, dst, if dnat_target.is_some() { None } else { Some(net) }) {
                Ok(e) => Some(e),
                Err((r, icmp_kind)) => return reject(cx, rs, pool, id, &ip, ing, in_port, r, icmp_kind, out),
            }
        }
        _ => None,
    };

    // 3. TTL and MTU on the packet as the sender sent it.
    if pool.frame(id)[l3 + 8] <= 1 {
        return reject(cx, rs, pool, id, &ip, ing, in_port, DropReason::TtlExceeded, Some(IcmpError::TimeExceeded), out);
    }
    // Too big without DF: fragmented after translation (NAT needs the whole packet).
    let mut split_mtu = None;
    if let Some(e) = routed_before {
        let mtu = egress_mtu(t, e);
        match mtu_fit(pool, id, &ip, mtu) {
            MtuFit::Fits => {}
            MtuFit::Split => split_mtu = Some(mtu),
            MtuFit::Refuse => {
                return reject(cx, rs, pool, id, &ip, ing, in_port, DropReason::TooBig, Some(IcmpError::FragNeeded { mtu: mtu as u16 }), out);
            }
        }
    }
    // Routed only after translation and larger than some egress: the sender's header
    // (and the first 8 bytes after it, which hold the ports) as it sent them, for a
    // "fragmentation needed" it can match to its socket.
    let head_len = if routed_before.is_none() && ip.total as u32 > rt.min_mtu { rs.save_head(pool.frame(id), &ip) } else { 0 };

    // 4. Connection tracking and NAT.
    let masq = match (ing, routed_before) {
        (Ingress::Net(_), Some(Egress::Uplink)) => t.uplink.map(|u| u.ip),
        _ => None,
    };
    let hairpin = match (ing, dnat_target) {
        (Ingress::Net(_), Some((to, _))) => match rt.fib.lookup(to) {
            Some((NextHop::Connected { net }, _)) => t.network(net).and_then(|n| n.gateway).map(|g| g.ip),
            _ => None,
        },
        _ => None,
    };
    let input = PolicyInput { to_host: local.is_some(), masquerade: masq, hairpin_snat: hairpin, routed: routed_before.is_some() };
    let (frame, meta) = pool.frame_and_meta_mut(id);
    let partial = meta.vnet.needs_csum() || meta.vnet.is_gso();
    if icmp::dec_ttl(&mut frame[l3..l3 + ip.ihl]).is_err() {
        return discard(cx, pool, id, DropReason::Truncated);
    }
    let v = nat::process(&rt.conntrack, frame, l3, partial, |tu| nat::nat_action(&rt.dnat, tu, &input), cx.now);
    match v {
        Verdict::Forward { ct, .. } => {
            if ct == nat::CtState::New && (masq.is_some() || dnat_target.is_some()) {
                cx.stats.event(Event::NatNew, 1);
            }
        }
        Verdict::Drop(r) => {
            let reason = match r {
                Reason::TableFull => DropReason::ConntrackFull,
                Reason::PortsExhausted => DropReason::NatExhausted,
                Reason::FragmentNoState => DropReason::FragmentNoState,
                Reason::Truncated | Reason::Malformed => DropReason::Truncated,
                Reason::Denied => {
                    if local.is_some() {
                        // Nothing listens on the switch's addresses: refuse as a host
                        // would (RST, port unreachable) instead of letting the client
                        // wait for its timeout.
                        refuse_local(cx, rs, pool, id, &ip, ing, in_port, out);
                        DropReason::LocalUnhandled
                    } else {
                        DropReason::Isolated
                    }
                }
                _ => DropReason::ConntrackInvalid,
            };
            return discard(cx, pool, id, reason);
        }
    }
    let Some(ip2) = parse_ip(pool.frame(id), l3) else { return discard(cx, pool, id, DropReason::Truncated) };

    // Packets routed only now (from the uplink, or to our addresses): they must have
    // been translated (replies of masqueraded or hairpinned flows, published ports,
    // ICMP errors about those), towards a network that may be reached.
    let egress = match routed_before {
        Some(e) if ip2.dst == ip.dst || dnat_target.is_some() => e,
        _ => {
            if ip2.dst == ip.dst {
                return discard(cx, pool, id, if local.is_some() { DropReason::LocalUnhandled } else { DropReason::Isolated });
            }
            match route(cx, rt, ip2.dst, None) {
                Ok(Egress::Network(n)) if t.network(n).is_some_and(|n| !n.internal) => Egress::Network(n),
                Ok(Egress::Uplink) if !matches!(ing, Ingress::Uplink(_)) => Egress::Uplink,
                _ => return discard(cx, pool, id, DropReason::Isolated),
            }
        }
    };

    if head_len > 0 {
        match late_mtu_check(cx, rs, pool, id, &ip, &ip2, head_len, egress, ing, in_port, out) {
            Some(Ok(mtu)) => split_mtu = Some(mtu),
            Some(Err(())) => return,
            None => {}
        }
    }

    // 5./6. Neighbour, MAC rewrite, output.
    cx.stats.event(Event::Routed, 1);
    match split_mtu {
        Some(mtu) => send_fragments(cx, rs, pool, id, l3, mtu, ip2.dst, egress, out),
        None => send_routed(cx, rs, pool, id, ip2.dst, egress, out),
    }
}

/// The MTU check of a packet routed only after translation (`ip` as it came, `ip2` as
/// translated; the start of what its sender sent is in `rs`): `None` when it fits,
/// `Some(Ok(mtu))` when it is to be fragmented, `Some(Err(()))` when it was refused
/// (DF set: "fragmentation needed" quoting what the sender sent). Out of line: only
/// packets larger than some network's MTU get here.
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
fn late_mtu_check<O: Output>(
    cx: &Ctx<'_>,
    rs: &mut RouterState,
    pool: &mut BufPool,
    id: PktId,
    ip: &Ip,
    ip2: &Ip,
    head_len: usize,
    egress: Egress,
    ing: Ingress<'_>,
    in_port: PortId,
    out: &mut O,
) -> Option<Result<u32, ()>> {
    let mtu = egress_mtu(cx.tables, egress);
    match mtu_fit(pool, id, ip2, mtu) {
        MtuFit::Fits => None,
        MtuFit::Split => Some(Ok(mtu)),
        MtuFit::Refuse => {
            let l3 = ip.l3;
            pool.frame_mut(id)[l3..l3 + head_len].copy_from_slice(&rs.sent_head[..head_len]);
            reject(cx, rs, pool, id, ip, ing, in_port, DropReason::TooBig, Some(IcmpError::FragNeeded { mtu: mtu as u16 }), out);
            Some(Err(()))
        }
    }
}

/// What an egress MTU means for a routed packet.
enum MtuFit {
    /// It fits (or is a GSO frame without DF, left to segmentation).
    Fits,
    /// Too big without DF: fragmented.
    Split,
    /// Too big with DF: refused with "fragmentation needed".
    Refuse,
}

#[inline]
fn mtu_fit(pool: &BufPool, id: PktId, ip: &Ip, mtu: u32) -> MtuFit {
    if !too_big(pool, id, ip, mtu) {
        MtuFit::Fits
    } else if ip.df {
        MtuFit::Refuse
    } else if pool.meta(id).vnet.is_gso() {
        MtuFit::Fits
    } else {
        MtuFit::Split
    }
}

/// Sends packet `id` (larger than `mtu`, DF clear) as fragments, each routed like a
/// packet of its own (RFC 1812 5.2.6); a partial checksum is completed first, since
/// no fragment holds the whole datagram.
#[allow(clippy::too_many_arguments)]
#[cold]
fn send_fragments<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, id: PktId, l3: usize, mtu: u32, dst: Ipv4Addr, egress: Egress, out: &mut O) {
    let vh = pool.meta(id).vnet;
    if vh.needs_csum() {
        if crate::offload::complete_checksum(pool.frame_mut(id), &vh).is_err() {
            return discard(cx, pool, id, DropReason::OffloadFailed);
        }
        pool.meta_mut(id).vnet = VnetHdr::default();
    }
    let plan = match crate::router::frag::plan(pool.frame(id), l3, mtu as usize) {
        Ok(p) => p,
        Err(_) => return discard(cx, pool, id, DropReason::TooBig),
    };
    let (off, len) = (pool.meta(id).off as usize, pool.meta(id).len as usize);
    for k in 0..plan.count {
        let Some(e) = pool.alloc() else { return discard(cx, pool, id, DropReason::NoBuffer) };
        // SAFETY: `id` is held until the end of this function and `e` is another
        // buffer, so the original is neither freed nor written while it is read.
        let orig = unsafe { std::slice::from_raw_parts(pool.base_ptr(id).add(off), len) };
        let buf = &mut pool.raw_mut(e)[HEADROOM..HEADROOM + plan.max_frame_len()];
        match crate::router::frag::write(orig, &plan, k, buf) {
            Ok(n) => {
                pool.meta_mut(e).len = n as u32;
                send_routed(cx, rs, pool, e, dst, egress, out);
            }
            Err(_) => {
                pool.release(e);
                return discard(cx, pool, id, DropReason::TooBig);
            }
        }
    }
    cx.stats.event(Event::Fragmented, 1);
    pool.release(id);
}

/// Route lookup plus the Docker isolation rules for traffic from network `from`.
fn route(cx: &Ctx<'_>, rt: &RouterTables, dst: Ipv4Addr, from: Option<&NetworkEntry>) -> Result<Egress, (DropReason, Option<IcmpError>)> {
    match rt.fib.lookup(dst) {
        Some((NextHop::Connected { net }, _)) => {
            if let Some(f) = from {
                if f.id != net {
                    return Err((DropReason::Isolated, Some(IcmpError::AdminProhibited)));
                }
            }
            Ok(Egress::Network(net))
        }
        Some((NextHop::Via { egress: Egress::Uplink, .. }, _)) => {
            if from.is_some_and(|f| f.internal) || cx.tables.uplink.is_none() {
                return Err((DropReason::Isolated, Some(IcmpError::NetUnreachable)));
            }
            Ok(Egress::Uplink)
        }
        Some((NextHop::Via { egress: Egress::Network(n), .. }, _)) => Ok(Egress::Network(n)),
        Some((NextHop::Blackhole, _)) => Err((DropReason::NoRoute, None)),
        Some((NextHop::Local, _)) => Err((DropReason::LocalUnhandled, None)),
        _ => Err((DropReason::NoRoute, Some(IcmpError::NetUnreachable))),
    }
}

fn egress_mtu(t: &Tables, e: Egress) -> u32 {
    match e {
        Egress::Uplink => t.uplink.map(|u| u.mtu).unwrap_or(1500),
        Egress::Network(n) => t.network(n).map(|n| n.mtu).unwrap_or(1500),
    }
}

/// Whether the packet (or each segment of a GSO frame) exceeds `mtu`.
fn too_big(pool: &BufPool, id: PktId, ip: &Ip, mtu: u32) -> bool {
    let m = pool.meta(id);
    if m.vnet.is_gso() {
        let f = pool.frame(id);
        let l4 = ip.l3 + ip.ihl;
        let l4h = if ip.proto == IPPROTO_TCP { f.get(l4 + 12).map(|b| ((b >> 4) as usize) * 4).unwrap_or(20) } else { 8 };
        (ip.ihl + l4h + m.vnet.gso_size as usize) as u32 > mtu
    } else {
        ip.total as u32 > mtu
    }
}

/// Drops a packet the router refuses, answering with an ICMP error when one applies.
#[allow(clippy::too_many_arguments)]
fn reject<O: Output>(
    cx: &Ctx<'_>,
    rs: &mut RouterState,
    pool: &mut BufPool,
    id: PktId,
    ip: &Ip,
    ing: Ingress<'_>,
    in_port: PortId,
    r: DropReason,
    kind: Option<IcmpError>,
    out: &mut O,
) {
    if let Some(k) = kind {
        send_icmp_error(cx, rs, pool, id, ip, ing, in_port, k, out);
    }
    discard(cx, pool, id, r);
}

/// Answers a packet to a closed port of one of the switch's addresses (`id` is left
/// for the caller to drop): TCP gets a RST (RFC 9293 3.10.7.1), UDP an ICMP port
/// unreachable; both count against the ICMP error rate limit.
#[allow(clippy::too_many_arguments)]
fn refuse_local<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, id: PktId, ip: &Ip, ing: Ingress<'_>, in_port: PortId, out: &mut O) {
    if !ip.first_frag {
        return;
    }
    // Never to a broadcast or multicast frame, nor to a source no host can have
    // (RFC 1122 3.2.2: no ICMP errors about those; a RST is no different).
    let s = ip.src;
    if !eth::dst(pool.frame(id)).is_unicast() || s.is_multicast() || s.is_broadcast() || s.is_unspecified() || s.is_loopback() {
        return;
    }
    match ip.proto {
        IPPROTO_UDP => send_icmp_error(cx, rs, pool, id, ip, ing, in_port, IcmpError::PortUnreachable, out),
        IPPROTO_TCP => {
            let Some((_, our_mac)) = ing.ours() else { return };
            let f = pool.frame(id);
            if !icmp::may_reset(&f[ip.l3..ip.l3 + ip.total]) {
                return;
            }
            if !rs.icmp.allow(cx.now_ms) {
                cx.stats.event(Event::IcmpErrorLimited, 1);
                return;
            }
            let peer_mac = eth::src(f);
            let Some(e) = pool.alloc() else { return };
            // SAFETY: `id` is held (our caller drops it after us) and `e` is another
            // buffer, so the segment is neither freed nor written meanwhile.
            let off = pool.meta(id).off as usize + ip.l3;
            let orig = unsafe { std::slice::from_raw_parts(pool.base_ptr(id).add(off), ip.total) };
            let buf = &mut pool.raw_mut(e)[HEADROOM..HEADROOM + icmp::RESET_FRAME_LEN];
            match icmp::build_reset_frame(orig, peer_mac, our_mac, buf) {
                Some(n) => {
                    let m = pool.meta_mut(e);
                    m.len = n as u32;
                    m.vnet = VnetHdr::default();
                    cx.stats.event(Event::IcmpErrorSent, 1);
                    out.emit(pool, in_port, e);
                }
                None => pool.release(e),
            }
        }
        _ => {}
    }
}

/// Sends an ICMP error about packet `id` (left untouched) back out of `in_port`.
#[allow(clippy::too_many_arguments)]
fn send_icmp_error<O: Output>(
    cx: &Ctx<'_>,
    rs: &mut RouterState,
    pool: &mut BufPool,
    id: PktId,
    ip: &Ip,
    ing: Ingress<'_>,
    in_port: PortId,
    kind: IcmpError,
    out: &mut O,
) {
    let Some((our_ip, our_mac)) = ing.ours() else { return };
    if !icmp::may_send_error(&pool.frame(id)[ip.l3..ip.l3 + ip.total]) {
        return;
    }
    if !rs.icmp.allow(cx.now_ms) {
        cx.stats.event(Event::IcmpErrorLimited, 1);
        return;
    }
    let Some(e) = pool.alloc() else { return };
    let src_mac = eth::src(pool.frame(id));
    let off = pool.meta(id).off as usize + ip.l3;
    // SAFETY: `id` is held (not released until our caller drops it) and `e` is a
    // different buffer, so the quoted bytes are neither freed nor written meanwhile.
    let orig = unsafe { std::slice::from_raw_parts(pool.base_ptr(id).add(off), ip.total) };
    let buf = &mut pool.raw_mut(e)[HEADROOM..HEADROOM + 14 + 576 + 64];
    match icmp::build_error_frame(kind, orig, our_ip, 64, src_mac, our_mac, buf) {
        Ok(n) => {
            pool.meta_mut(e).len = n as u32;
            cx.stats.event(Event::IcmpErrorSent, 1);
            out.emit(pool, in_port, e);
        }
        Err(_) => pool.release(e),
    }
}

/// Answers an ICMP echo request to one of the switch's addresses, in place.
fn echo_reply<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, id: PktId, ip: &Ip, in_port: PortId, out: &mut O) {
    let f = pool.frame_mut(id);
    // Ethernet: back to the sender; IP: swap addresses; ICMP: type 0.
    let (dst, src) = (eth::dst(f), eth::src(f));
    eth::set_dst(f, src);
    eth::set_src(f, dst);
    let h = &mut f[ip.l3..ip.l3 + ip.ihl];
    h.copy_within(12..16, 16);
    h[12..16].copy_from_slice(&ip.dst.octets());
    h[8] = 64;
    h[10] = 0;
    h[11] = 0;
    let c = crate::offload::csum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut f[ip.l3 + ip.ihl..ip.l3 + ip.total];
    icmp[0] = 0;
    icmp[2] = 0;
    icmp[3] = 0;
    let c = crate::offload::csum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let end = ip.l3 + ip.total;
    let m = pool.meta_mut(id);
    m.len = end as u32;
    m.vnet = VnetHdr::default();
    cx.stats.event(Event::IcmpEchoReply, 1);
    out.emit(pool, in_port, id);
}

/// Resolves the next hop of a routed packet and sends it (or parks it for ARP).
fn send_routed<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, id: PktId, dst: Ipv4Addr, egress: Egress, out: &mut O) {
    let t = cx.tables;
    let Some(rt) = t.router.as_deref() else { return discard(cx, pool, id, DropReason::NoRoute) };
    let (eg, nh, src_mac) = match egress {
        Egress::Uplink => {
            let Some(u) = t.uplink else { return discard(cx, pool, id, DropReason::NoRoute) };
            let direct = crate::tables::same_subnet(u.ip, u.prefix_len, dst);
            let nh = if direct { dst } else { u.gateway.unwrap_or(dst) };
            (UPLINK_EGRESS, nh, u.mac)
        }
        Egress::Network(n) => {
            let Some(net) = t.network(n) else { return discard(cx, pool, id, DropReason::NoRoute) };
            let Some(g) = net.gateway else { return discard(cx, pool, id, DropReason::NoRoute) };
            (n, dst, g.mac)
        }
    };
    eth::set_src(pool.frame_mut(id), src_mac);
    let mac = if eg != UPLINK_EGRESS { rt.hosts.get(&(eg, nh)).copied() } else { None };
    let mac = match mac {
        Some(m) => Some(m),
        None => match rt.neigh.lookup(eg, nh, cx.now_ms) {
            Lookup::Hit(m) => Some(m),
            Lookup::HitStale(m) => {
                let c = rt.neigh.claim_request(eg, nh, cx.now_ms);
                if c.must_send() {
                    send_arp_request(cx, pool, eg, nh, c, out);
                }
                Some(m)
            }
            Lookup::Failed => {
                return discard(cx, pool, id, DropReason::NeighborFailed);
            }
            Lookup::Incomplete | Lookup::Miss => None,
        },
    };
    match mac {
        Some(m) => deliver(cx, pool, id, eg, m, out),
        None => {
            if rs.pending.push(eg, nh, id, cx.now_ms).is_err() {
                return discard(cx, pool, id, DropReason::NeighborPending);
            }
            let c = rt.neigh.claim_request(eg, nh, cx.now_ms);
            if c.must_send() {
                send_arp_request(cx, pool, eg, nh, c, out);
            }
        }
    }
}

/// Sets the destination MAC and hands the frame to its egress.
fn deliver<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, id: PktId, eg: NetId, mac: MacAddr, out: &mut O) {
    eth::set_dst(pool.frame_mut(id), mac);
    if eg == UPLINK_EGRESS {
        match cx.tables.uplink {
            Some(u) => out.emit(pool, u.port, id),
            None => discard(cx, pool, id, DropReason::NoRoute),
        }
        return;
    }
    let Some(net) = cx.tables.network(eg) else { return discard(cx, pool, id, DropReason::NoRoute) };
    match net.fdb.lookup(mac) {
        Some(p) if cx.tables.port(p).is_some_and(|pe| pe.net == net.id) => out.emit(pool, p, id),
        _ => {
            // Unknown station: flood in that network, like any bridge.
            let n = net.ports.len();
            if n == 0 {
                return discard(cx, pool, id, DropReason::NoRoute);
            }
            pool.add_ref(id, (n - 1) as u16);
            for &p in &net.ports {
                out.emit(pool, p, id);
            }
        }
    }
}

/// Broadcasts (or unicasts, for a stale entry) an ARP request for `ip` on `eg`.
fn send_arp_request<O: Output>(cx: &Ctx<'_>, pool: &mut BufPool, eg: NetId, ip: Ipv4Addr, c: Claim, out: &mut O) {
    let (src_mac, src_ip) = if eg == UPLINK_EGRESS {
        match cx.tables.uplink {
            Some(u) => (u.mac, u.ip),
            None => return,
        }
    } else {
        match cx.tables.network(eg).and_then(|n| n.gateway) {
            Some(g) => (g.mac, g.ip),
            None => return,
        }
    };
    let Some(a) = pool.alloc() else { return };
    let buf = &mut pool.raw_mut(a)[HEADROOM..HEADROOM + neigh::ARP_FRAME_LEN];
    let n = match c {
        Claim::Unicast(m) => neigh::arp_probe(buf, m, src_mac, src_ip, ip),
        _ => neigh::arp_request(buf, src_mac, src_ip, ip),
    };
    let Some(n) = n else {
        pool.release(a);
        return;
    };
    pool.meta_mut(a).len = n as u32;
    cx.stats.event(Event::ArpRequestSent, 1);
    match c {
        Claim::Unicast(m) => deliver(cx, pool, a, eg, m, out),
        _ => deliver(cx, pool, a, eg, MacAddr::BROADCAST, out),
    }
}

/// The worker calls this every loop turn while packets wait for ARP: sends those whose
/// neighbour is known now, drops (with ICMP host unreachable) those that failed or
/// waited too long, and retransmits ARP requests.
pub fn poll_pending<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, out: &mut O) {
    if rs.pending.is_empty() {
        return;
    }
    let Some(rt) = cx.tables.router.as_deref() else {
        rs.pending.drain(|w| pool.release(w.pkt));
        return;
    };
    let RouterState { pending, last_claim_ms, .. } = rs;
    pending.take_ready(&rt.neigh, cx.now_ms, |w, r| match r {
        Resolution::Resolved(mac) => deliver(cx, pool, w.pkt, w.egress, mac, out),
        Resolution::Failed => discard(cx, pool, w.pkt, DropReason::NeighborFailed),
    });
    pending.take_expired(cx.now_ms, |w, _first| discard(cx, pool, w.pkt, DropReason::NeighborFailed));
    if cx.now_ms.saturating_sub(*last_claim_ms) >= 100 {
        *last_claim_ms = cx.now_ms;
        pending.claim_requests(&rt.neigh, cx.now_ms, |eg, ip, c| {
            if c.must_send() {
                send_arp_request(cx, pool, eg, ip, c, out);
            }
        });
    }
}

/// An IP packet from an IP-in-UDP tunnel (routed overlay) for network `net`: gets an
/// Ethernet header (from the gateway to the endpoint, whose MAC the tables know) and is
/// delivered like a routed packet. An echo request to this host's gateway is answered,
/// and a packet whose TTL runs out here gets Time Exceeded, both back through the
/// sender's host's tunnel (traceroute and ping of a remote gateway work).
pub fn from_l3_tunnel<O: Output>(cx: &Ctx<'_>, rs: &mut RouterState, pool: &mut BufPool, id: PktId, net: &NetworkEntry, out: &mut O) {
    let (Some(rt), Some(gw)) = (cx.tables.router.as_deref(), net.gateway) else {
        return discard(cx, pool, id, DropReason::NoRoute);
    };
    let m = *pool.meta(id);
    let pkt = pool.frame(id);
    let Some(ip) = parse_ip(pkt, 0) else { return discard(cx, pool, id, DropReason::Truncated) };
    let to_gateway = ip.dst == gw.ip;
    if to_gateway || pkt[8] <= 1 {
        // Answered here: the way back is the tunnel to the sender's host.
        let Some(back) = overlay_route(rt, net.id, ip.src) else { return discard(cx, pool, id, DropReason::NoRoute) };
        let Ok((start, len)) = crate::encap::prepend_eth(pool.raw_mut(id), m.off as usize, ip.total, gw.mac, gw.mac) else {
            return discard(cx, pool, id, DropReason::Truncated);
        };
        let mm = pool.meta_mut(id);
        mm.off = start as u32;
        mm.len = len as u32;
        let Some(ip) = parse_ip(pool.frame(id), 14) else { return discard(cx, pool, id, DropReason::Truncated) };
        if to_gateway {
            if is_echo_request(pool.frame(id), &ip) {
                return echo_reply(cx, pool, id, &ip, back, out);
            }
            refuse_local(cx, rs, pool, id, &ip, Ingress::Net(net), back, out);
            return discard(cx, pool, id, DropReason::LocalUnhandled);
        }
        return reject(cx, rs, pool, id, &ip, Ingress::Net(net), back, DropReason::TtlExceeded, Some(IcmpError::TimeExceeded), out);
    }
    let Some(&mac) = rt.hosts.get(&(net.id, ip.dst)) else { return discard(cx, pool, id, DropReason::NoRoute) };
    let off = m.off as usize;
    let Ok((start, len)) = crate::encap::prepend_eth(pool.raw_mut(id), off, ip.total, mac, gw.mac) else {
        return discard(cx, pool, id, DropReason::Truncated);
    };
    let mm = pool.meta_mut(id);
    mm.off = start as u32;
    mm.len = len as u32;
    if icmp::dec_ttl(&mut pool.frame_mut(id)[14..14 + ip.ihl]).is_err() {
        return discard(cx, pool, id, DropReason::Truncated);
    }
    cx.stats.event(Event::Routed, 1);
    deliver(cx, pool, id, net.id, mac, out);
}
