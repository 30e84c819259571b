//! [`process`]: one packet through connection tracking and NAT.
//!
//! Owns no state: it glues the connection table (state, mappings), the translation
//! functions (bytes) and the caller's policy (what a new flow gets).

use super::alloc::{class_of, Claim};
use super::conntrack::{ConnTable, Event, Insert, Snap};
use super::frag::{FragKey, FragXlate};
use super::state::{meta, tcp_new, tcp_step, TcpState, TcpStep};
use super::translate::{icmp_csum_ok, l4_min_len, parse_ipv4, parse_quoted, rewrite, rewrite_addrs, rewrite_icmp_error, tuple_at, Ip4};
use super::{icmp_counterpart, icmp_is_error, icmp_is_request, Action, CtState, Dir, Reason, Tuple, Verdict};
use super::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// How often a packet retries when its connection changed under it (another worker
/// created it first, or it was removed while being used).
const RETRIES: usize = 4;
/// Ports tried when the allocator's port clashes with a connection it did not make.
const CLASH_RETRIES: usize = 4;

/// Tracks and translates, in place, the IPv4 packet whose header starts at
/// `frame[l3..]` (whatever framing surrounds it is left untouched).
///
/// - `csum_partial`: the frame is CHECKSUM_PARTIAL (virtio-net `NEEDS_CSUM`, GSO
///   super-frames): its L4 checksum field holds the pseudo-header sum. Address changes
///   update it as such; port changes leave it to the device. The caller must make sure
///   `csum_start` points at this packet's L4 header. ICMP errors must arrive complete
///   (they are dropped as [`Reason::Unsupported`] otherwise).
/// - `policy`: called once for the first packet of a flow (never for packets of a
///   tracked connection, ICMP errors or fragments) to decide its [`Action`]. It may be
///   called again if the flow is created by another worker at the same moment.
/// - `now`: current second of a monotonic clock shared by all callers.
///
/// Returns [`Verdict::Forward`] (with the connection, the direction and whether bytes
/// changed) or [`Verdict::Drop`] with a reason for the caller to count. The frame is
/// only modified when the verdict is `Forward { changed: true, .. }`. No allocation,
/// no system call, no clock read, no panic for any input.
pub fn process(
    table: &ConnTable,
    frame: &mut [u8],
    l3: usize,
    csum_partial: bool,
    mut policy: impl FnMut(&Tuple) -> Action,
    now: u32,
) -> Verdict {
    let ip = match parse_ipv4(frame, l3) {
        Ok(ip) => ip,
        Err(r) => return Verdict::Drop(r),
    };
    if ip.frag_off != 0 {
        return later_fragment(table, frame, &ip, now);
    }
    if ip.l4_len() < l4_min_len(ip.proto) {
        return Verdict::Drop(Reason::Truncated);
    }
    let t = tuple_at(frame, ip.proto, ip.src, ip.dst, ip.l4);
    let mut tcp_flags = 0;
    match ip.proto {
        IPPROTO_TCP => {
            let doff = (frame.get(ip.l4 + 12).copied().unwrap_or(0) >> 4) as usize * 4;
            if doff < 20 || doff > ip.l4_len() {
                return Verdict::Drop(Reason::Malformed);
            }
            tcp_flags = frame.get(ip.l4 + 13).copied().unwrap_or(0);
        }
        IPPROTO_ICMP => {
            let ty = t.dport as u8;
            if icmp_is_error(ty) {
                return icmp_error(table, frame, &ip, csum_partial, now);
            }
            if icmp_counterpart(ty).is_none() {
                return Verdict::Drop(Reason::Unsupported);
            }
        }
        _ => {}
    }
    let (s, dir, ct) = match track(table, &t, tcp_flags, &mut policy, now) {
        Ok(x) => x,
        Err(r) => return Verdict::Drop(r),
    };
    // A packet of direction `dir` becomes the inverse of the other direction's tuple.
    let target = s.tuple(dir.other()).inverse();
    let changed = rewrite(frame, &ip, true, &t, &target, csum_partial);
    if ip.mf {
        let key = FragKey { src: ip.src, dst: ip.dst, id: ip.id, proto: ip.proto };
        let x = FragXlate { src: target.src.into(), dst: target.dst.into(), conn: s.cref(), dir };
        if table.frags.record(key, x, now) {
            table.count_event(Event::FragEvicted);
        }
    }
    Verdict::Forward { changed, dir, conn: s.cref(), ct }
}

/// Finds the connection of `t` (advancing its state) or creates it.
fn track(
    table: &ConnTable,
    t: &Tuple,
    tcp_flags: u8,
    policy: &mut impl FnMut(&Tuple) -> Action,
    now: u32,
) -> Result<(Snap, Dir, CtState), Reason> {
    for _ in 0..RETRIES {
        if let Some((s, dir)) = table.lookup(t, now) {
            match advance(table, &s, dir, tcp_flags, now) {
                Ok(s) => return Ok((s, dir, CtState::Established)),
                Err(Some(r)) => return Err(r),
                Err(None) => continue,
            }
        }
        if let Some(s) = create(table, t, tcp_flags, policy, now)? {
            return Ok((s, Dir::Orig, CtState::New));
        }
    }
    Err(Reason::Clash)
}

/// Applies one packet to a live connection's state. `Err(None)`: the connection went
/// away meanwhile (look again).
fn advance(table: &ConnTable, s: &Snap, dir: Dir, tcp_flags: u8, now: u32) -> Result<Snap, Option<Reason>> {
    let mut cur = s.meta;
    loop {
        let new = if meta::proto(cur) == IPPROTO_TCP {
            match tcp_step(dir, tcp_flags, TcpState::from_u8(meta::state(cur))) {
                TcpStep::Invalid => return Err(Some(Reason::Invalid)),
                TcpStep::Ignore => return Ok(Snap { meta: cur, ..*s }),
                TcpStep::To(st) => {
                    let m = meta::with_state(cur, st as u8);
                    if dir == Dir::Reply {
                        m | meta::SEEN_REPLY
                    } else {
                        m
                    }
                }
                TcpStep::Reopen => meta::with_state(cur, TcpState::SynSent as u8) & !meta::SEEN_REPLY,
            }
        } else if dir == Dir::Reply {
            cur | meta::SEEN_REPLY
        } else {
            cur
        };
        if new == cur {
            break;
        }
        match table.cas_meta(s.idx, cur, new) {
            Ok(()) => {
                cur = new;
                break;
            }
            Err(x) if meta::gen(x) == meta::gen(cur) && x & meta::LIVE != 0 => cur = x,
            Err(_) => return Err(None),
        }
    }
    table.touch(s, now);
    Ok(Snap { meta: cur, ..*s })
}

/// Creates the connection for the first packet `t` of a flow. `Ok(None)`: another
/// worker created it meanwhile.
fn create(
    table: &ConnTable,
    t: &Tuple,
    tcp_flags: u8,
    policy: &mut impl FnMut(&Tuple) -> Action,
    now: u32,
) -> Result<Option<Snap>, Reason> {
    let state = match t.proto {
        IPPROTO_TCP => tcp_new(tcp_flags).ok_or(Reason::Invalid)? as u8,
        IPPROTO_ICMP if !icmp_is_request(t.dport as u8) => return Err(Reason::Invalid),
        _ => 0,
    };
    let (dnat, snat) = match policy(t) {
        Action::Deny => return Err(Reason::Denied),
        Action::None => (None, None),
        Action::Snat { to } => (None, Some(to)),
        Action::Dnat { to, port } => (Some((to, port)), None),
        Action::DnatSnat { to, port, snat } => (Some((to, port)), Some(snat)),
    };
    // `x`: the packet as it leaves, translated.
    let mut x = *t;
    let mut flags = 0;
    if let Some((ip, port)) = dnat {
        x.dst = ip;
        if matches!(t.proto, IPPROTO_TCP | IPPROTO_UDP) {
            x.dport = port;
        }
        flags |= meta::DNAT;
    }
    let class = class_of(t.proto);
    let mut claim: Option<Claim> = None;
    let release = |c: Option<Claim>| {
        if let (Some(c), Some(class)) = (c, class) {
            table.alloc.release(c, class, u32::from(t.src), t.sport);
        }
    };
    if let Some(to) = snat {
        x.src = to;
        flags |= meta::SNAT;
        if let Some(class) = class {
            let Some(c) = table.alloc.acquire(to.into(), class, t.src.into(), t.sport, false) else {
                table.count_event(Event::PortsExhausted);
                return Err(Reason::PortsExhausted);
            };
            x.sport = c.port;
            claim = Some(c);
        }
    }
    for _ in 0..CLASH_RETRIES {
        let reply = x.inverse();
        if reply == *t {
            release(claim);
            return Err(Reason::Invalid); // a flow to itself: both directions would be one tuple
        }
        let port_flag = if claim.is_some() { meta::PORT } else { 0 };
        let m = meta::new(0, t.proto, state, flags | port_flag, claim.map_or(0, |c| c.space));
        match table.insert(t, &reply, m, now) {
            Insert::Created(s) => return Ok(Some(s)),
            Insert::Exists => {
                release(claim);
                return Ok(None);
            }
            Insert::Full => {
                release(claim);
                return Err(Reason::TableFull);
            }
            Insert::Clash => {
                release(claim.take());
                // Only a port the allocator chose can be changed.
                let (Some(to), Some(class)) = (snat, class) else { return Err(Reason::Clash) };
                let Some(c) = table.alloc.acquire(to.into(), class, t.src.into(), t.sport, true) else {
                    table.count_event(Event::PortsExhausted);
                    return Err(Reason::PortsExhausted);
                };
                x.sport = c.port;
                claim = Some(c);
            }
        }
    }
    release(claim);
    Err(Reason::Clash)
}

/// An ICMP error: translate it like the connection of the packet it quotes.
fn icmp_error(table: &ConnTable, frame: &mut [u8], ip: &Ip4, csum_partial: bool, now: u32) -> Verdict {
    if csum_partial || ip.mf {
        return Verdict::Drop(Reason::Unsupported);
    }
    if !icmp_csum_ok(frame, ip) {
        return Verdict::Drop(Reason::BadChecksum);
    }
    let q = match parse_quoted(frame, ip) {
        Ok(q) => q,
        Err(r) => return Verdict::Drop(r),
    };
    // The quoted packet went out translated in one direction; the error travels back
    // in the other direction `d`, so the quoted tuple is the inverse of a `d` tuple.
    let Some((s, d)) = table.lookup(&q.tuple.inverse(), now) else {
        return Verdict::Drop(Reason::Unrelated);
    };
    let inner_to = *s.tuple(d.other());
    let here = s.tuple(d);
    let target = s.tuple(d.other()).inverse();
    let outer_src = (here.src != target.src).then(|| u32::from(target.src));
    let outer_dst = (here.dst != target.dst).then(|| u32::from(target.dst));
    let changed = rewrite_icmp_error(frame, ip, &q, &inner_to, outer_src, outer_dst);
    Verdict::Forward { changed, dir: d, conn: s.cref(), ct: CtState::Related }
}

/// A non-first fragment: the address rewrite recorded by its first fragment.
fn later_fragment(table: &ConnTable, frame: &mut [u8], ip: &Ip4, now: u32) -> Verdict {
    let key = FragKey { src: ip.src, dst: ip.dst, id: ip.id, proto: ip.proto };
    match table.frags.lookup(&key, now) {
        Some(x) => {
            let changed = rewrite_addrs(frame, ip, x.src, x.dst);
            Verdict::Forward { changed, dir: x.dir, conn: x.conn, ct: CtState::Fragment }
        }
        None => Verdict::Drop(Reason::FragmentNoState),
    }
}
