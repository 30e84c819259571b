//! Packet bytes: locating the IPv4 header and the fields NAT rewrites, and rewriting
//! them with incremental checksum updates (RFC 1624).
//!
//! Owns no state. Every function here checks bounds before touching the frame
//! (accessors from `offload` are total), never allocates and never panics.
//!
//! Checksum rules:
//! - IPv4 header checksum: incremental update for each changed address.
//! - TCP/UDP: an address change is a pseudo-header change, a port change a header
//!   change; both update the checksum incrementally. A zero UDP checksum (none) stays
//!   zero; an updated UDP checksum that comes out as 0 is sent as 0xffff.
//! - With `partial` (CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum,
//!   not complemented, and the device adds the L4 bytes later): an address change
//!   updates the field with non-complemented arithmetic; a port (or ICMP identifier)
//!   change leaves it alone.
//! - ICMP has no pseudo-header: only identifier changes touch its checksum.

use super::{icmp_counterpart, Reason, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use crate::offload::csum;
use crate::offload::{be16, be32, put16, put32};
use std::net::Ipv4Addr;

/// Where the parts of an IPv4 packet are; all offsets into the frame, all in bounds
/// (`l3 + 20 <= l4 <= end <= frame.len()`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ip4 {
    pub l3: usize,
    /// First byte after the IP header (options included).
    pub l4: usize,
    /// End of the datagram as the total-length field says (Ethernet padding excluded).
    pub end: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub id: u16,
    /// Fragment offset in 8-byte units.
    pub frag_off: u16,
    /// More-fragments flag.
    pub mf: bool,
}

impl Ip4 {
    /// Bytes from the L4 header to the end of the datagram.
    #[inline]
    pub fn l4_len(&self) -> usize {
        self.end - self.l4
    }
}

/// Finds the IPv4 header at `frame[l3..]` and checks its lengths.
pub(crate) fn parse_ipv4(frame: &[u8], l3: usize) -> Result<Ip4, Reason> {
    let hdr = frame.get(l3..).filter(|h| h.len() >= 20).ok_or(Reason::Truncated)?;
    if hdr[0] >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    let ihl = (hdr[0] & 0x0f) as usize * 4;
    let tot = be16(hdr, 2) as usize;
    if ihl < 20 || tot < ihl {
        return Err(Reason::Malformed);
    }
    if tot > hdr.len() {
        return Err(Reason::Truncated);
    }
    let frag = be16(hdr, 6);
    Ok(Ip4 {
        l3,
        l4: l3 + ihl,
        end: l3 + tot,
        proto: hdr[9],
        src: be32(hdr, 12),
        dst: be32(hdr, 16),
        id: be16(hdr, 4),
        frag_off: frag & 0x1fff,
        mf: frag & 0x2000 != 0,
    })
}

/// The L4 header bytes a packet of `proto` needs for tracking (ports, flags, checksum,
/// ICMP type and identifier).
#[inline]
pub(crate) fn l4_min_len(proto: u8) -> usize {
    match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP | IPPROTO_ICMP => 8,
        _ => 0,
    }
}

/// The flow tuple of a packet whose L4 header is present (`l4_min_len` checked):
/// ports for TCP/UDP, (identifier, type) for ICMP, zeros otherwise.
#[inline]
pub(crate) fn tuple_at(frame: &[u8], proto: u8, src: u32, dst: u32, l4: usize) -> Tuple {
    let (sport, dport) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => (be16(frame, l4), be16(frame, l4 + 2)),
        IPPROTO_ICMP => (be16(frame, l4 + 4), frame.get(l4).copied().unwrap_or(0) as u16),
        _ => (0, 0),
    };
    Tuple { proto, src: Ipv4Addr::from(src), sport, dst: Ipv4Addr::from(dst), dport }
}

/// The L4 checksum field of a packet and how it is computed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum L4Csum {
    /// Not present (later fragment, quoted header too short, other protocol).
    None,
    /// TCP: pseudo-header, always present.
    Tcp(usize),
    /// UDP: pseudo-header, zero means none.
    Udp(usize),
    /// ICMP: no pseudo-header.
    Icmp(usize),
}

impl L4Csum {
    /// The checksum field of a `proto` header at `l4` whose datagram (or quote) ends at `end`.
    fn locate(proto: u8, l4: usize, end: usize) -> L4Csum {
        let has = |off: usize| l4 + off + 2 <= end;
        match proto {
            IPPROTO_TCP if has(16) => L4Csum::Tcp(l4 + 16),
            IPPROTO_UDP if has(6) => L4Csum::Udp(l4 + 6),
            IPPROTO_ICMP if has(2) => L4Csum::Icmp(l4 + 2),
            _ => L4Csum::None,
        }
    }

    /// An address (pseudo-header) word changed from `old` to `new`.
    fn address(self, frame: &mut [u8], old: u32, new: u32, partial: bool) {
        match self {
            L4Csum::Tcp(off) => fix(frame, off, partial, false, |c| csum::update32(c, old, new)),
            L4Csum::Udp(off) => fix(frame, off, partial, true, |c| csum::update32(c, old, new)),
            L4Csum::Icmp(_) | L4Csum::None => {}
        }
    }

    /// A 16-bit header word (port, identifier) changed from `old` to `new`.
    fn header(self, frame: &mut [u8], old: u16, new: u16, partial: bool) {
        if partial {
            return; // the device sums the header itself
        }
        match self {
            L4Csum::Tcp(off) | L4Csum::Icmp(off) => fix(frame, off, false, false, |c| csum::update16(c, old, new)),
            L4Csum::Udp(off) => fix(frame, off, false, true, |c| csum::update16(c, old, new)),
            L4Csum::None => {}
        }
    }
}

/// Applies `update` (a complemented-checksum update) to the checksum field at `off`.
/// `partial`: the field is a non-complemented pseudo-header sum, updated as
/// `!update(!field)`. `udp`: zero means "no checksum" and a computed zero is sent as 0xffff.
#[inline]
fn fix(frame: &mut [u8], off: usize, partial: bool, udp: bool, update: impl Fn(u16) -> u16) {
    let c = be16(frame, off);
    let n = if partial {
        !update(!c)
    } else if udp && c == 0 {
        return;
    } else {
        let n = update(c);
        if udp && n == 0 {
            0xffff
        } else {
            n
        }
    };
    put16(frame, off, n);
}

/// Rewrites an IPv4 address field at `off` (in the header at `l3`), fixing the header
/// checksum and `l4` (the checksum over a pseudo-header containing it).
#[inline]
fn set_addr(frame: &mut [u8], l3: usize, off: usize, old: u32, new: u32, l4: L4Csum, partial: bool) {
    put32(frame, off, new);
    let c = csum::update32(be16(frame, l3 + 10), old, new);
    put16(frame, l3 + 10, c);
    l4.address(frame, old, new, partial);
}

/// Rewrites a 16-bit L4 field (port, identifier) at `off`, fixing `l4`.
#[inline]
fn set_port(frame: &mut [u8], off: usize, old: u16, new: u16, l4: L4Csum, partial: bool) {
    put16(frame, off, new);
    l4.header(frame, old, new, partial);
}

/// Rewrites the packet `ip` (whose tuple is `from`) so its tuple becomes `to`:
/// addresses always; ports (ICMP: identifier) and the L4 checksum only when
/// `l4_present` (false for non-first fragments). Returns whether anything changed.
pub(crate) fn rewrite(frame: &mut [u8], ip: &Ip4, l4_present: bool, from: &Tuple, to: &Tuple, partial: bool) -> bool {
    let ck = if l4_present { L4Csum::locate(ip.proto, ip.l4, ip.end) } else { L4Csum::None };
    let mut changed = false;
    let (fs, ts) = (u32::from(from.src), u32::from(to.src));
    let (fd, td) = (u32::from(from.dst), u32::from(to.dst));
    if fs != ts {
        set_addr(frame, ip.l3, ip.l3 + 12, fs, ts, ck, partial);
        changed = true;
    }
    if fd != td {
        set_addr(frame, ip.l3, ip.l3 + 16, fd, td, ck, partial);
        changed = true;
    }
    if l4_present {
        match ip.proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                if from.sport != to.sport {
                    set_port(frame, ip.l4, from.sport, to.sport, ck, partial);
                    changed = true;
                }
                if from.dport != to.dport {
                    set_port(frame, ip.l4 + 2, from.dport, to.dport, ck, partial);
                    changed = true;
                }
            }
            IPPROTO_ICMP if from.sport != to.sport => {
                set_port(frame, ip.l4 + 4, from.sport, to.sport, ck, partial);
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

/// Rewrites only the addresses of a datagram's IP header (non-first fragments).
pub(crate) fn rewrite_addrs(frame: &mut [u8], ip: &Ip4, src: u32, dst: u32) -> bool {
    let mut changed = false;
    if ip.src != src {
        set_addr(frame, ip.l3, ip.l3 + 12, ip.src, src, L4Csum::None, false);
        changed = true;
    }
    if ip.dst != dst {
        set_addr(frame, ip.l3, ip.l3 + 16, ip.dst, dst, L4Csum::None, false);
        changed = true;
    }
    changed
}

/// The packet quoted by an ICMP error: where its headers are and its tuple (as it
/// was sent).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quoted {
    pub l3: usize,
    pub l4: usize,
    pub proto: u8,
    pub tuple: Tuple,
}

/// Parses the packet quoted by the ICMP error `ip` (whose ICMP header is at `ip.l4`).
/// It needs its IP header and 8 bytes of TCP/UDP/ICMP header; a quoted non-first
/// fragment or an ICMP message that is not a query gives [`Reason::Unrelated`].
pub(crate) fn parse_quoted(frame: &[u8], ip: &Ip4) -> Result<Quoted, Reason> {
    let q = ip.l4 + 8;
    if q + 20 > ip.end {
        return Err(Reason::Truncated);
    }
    let v = frame.get(q).copied().unwrap_or(0);
    let ihl = (v & 0x0f) as usize * 4;
    if v >> 4 != 4 || ihl < 20 {
        return Err(Reason::Malformed);
    }
    let l4 = q + ihl;
    let proto = frame.get(q + 9).copied().unwrap_or(0);
    if be16(frame, q + 6) & 0x1fff != 0 {
        return Err(Reason::Unrelated);
    }
    let need = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP => 8,
        _ => 0,
    };
    if l4 + need > ip.end {
        return Err(Reason::Truncated);
    }
    let tuple = tuple_at(frame, proto, be32(frame, q + 12), be32(frame, q + 16), l4);
    if proto == IPPROTO_ICMP && icmp_counterpart(tuple.dport as u8).is_none() {
        return Err(Reason::Unrelated);
    }
    Ok(Quoted { l3: q, l4, proto, tuple })
}

/// Translates an ICMP error: the quoted packet becomes `inner_to` (addresses, ports
/// or identifier, its IP checksum, its L4 checksum when quoted), the outer source and
/// destination become `outer_src`/`outer_dst` where given, and the ICMP checksum is
/// recomputed over the whole message. The caller has checked the ICMP checksum.
pub(crate) fn rewrite_icmp_error(
    frame: &mut [u8],
    ip: &Ip4,
    q: &Quoted,
    inner_to: &Tuple,
    outer_src: Option<u32>,
    outer_dst: Option<u32>,
) -> bool {
    let from = q.tuple;
    let ck = L4Csum::locate(q.proto, q.l4, ip.end);
    let mut changed = false;
    let (fs, ts) = (u32::from(from.src), u32::from(inner_to.src));
    let (fd, td) = (u32::from(from.dst), u32::from(inner_to.dst));
    if fs != ts {
        set_addr(frame, q.l3, q.l3 + 12, fs, ts, ck, false);
        changed = true;
    }
    if fd != td {
        set_addr(frame, q.l3, q.l3 + 16, fd, td, ck, false);
        changed = true;
    }
    match q.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            if from.sport != inner_to.sport {
                set_port(frame, q.l4, from.sport, inner_to.sport, ck, false);
                changed = true;
            }
            if from.dport != inner_to.dport {
                set_port(frame, q.l4 + 2, from.dport, inner_to.dport, ck, false);
                changed = true;
            }
        }
        IPPROTO_ICMP if from.sport != inner_to.sport => {
            set_port(frame, q.l4 + 4, from.sport, inner_to.sport, ck, false);
            changed = true;
        }
        _ => {}
    }
    if let Some(s) = outer_src.filter(|&s| s != ip.src) {
        set_addr(frame, ip.l3, ip.l3 + 12, ip.src, s, L4Csum::None, false);
        changed = true;
    }
    if let Some(d) = outer_dst.filter(|&d| d != ip.dst) {
        set_addr(frame, ip.l3, ip.l3 + 16, ip.dst, d, L4Csum::None, false);
        changed = true;
    }
    if changed {
        put16(frame, ip.l4 + 2, 0);
        let c = frame.get(ip.l4..ip.end).map(csum::checksum).unwrap_or(0);
        put16(frame, ip.l4 + 2, c);
    }
    changed
}

/// True when the ICMP message of `ip` (header and data to the end of the datagram)
/// has a correct checksum.
pub(crate) fn icmp_csum_ok(frame: &[u8], ip: &Ip4) -> bool {
    frame.get(ip.l4..ip.end).is_some_and(|m| csum::checksum(m) == 0)
}
