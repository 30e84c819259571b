//! ICMPv4 errors and TTL handling for forwarded packets.
//!
//! Owns: TTL decrement with an incremental header checksum ([`dec_ttl`]), the rules
//! for when an error may be sent ([`may_send_error`], RFC 1122 3.2.2 / RFC 1812
//! 4.3.2.7), building an error that quotes the offending packet ([`build_error`],
//! RFC 792 / RFC 1191 / RFC 1812 4.3.2.3), an Ethernet header writer, and a per-worker
//! token bucket ([`RateLimiter`], RFC 1812 4.3.2.8).
//!
//! Pure functions over byte slices: no allocation, no clock reads (time is passed in),
//! no panics on any input; malformed input gives an error. Nothing here decides which
//! address the error comes from or which port it leaves by: that is the caller's.
//!
//! Offloads: a frame received with a virtio-net header may carry `NEEDS_CSUM`, i.e.
//! its TCP/UDP checksum field holds only the pseudo-header partial sum (see
//! `crate::vnet` and `crate::offload::complete_checksum`). When such a packet is quoted
//! in an error, nothing needs fixing: the quote is opaque data covered by the ICMP
//! checksum computed here, and receivers use the quoted headers to find the socket,
//! never to verify the quoted transport checksum. The error frame itself is complete:
//! send it with a default (no-offload) virtio-net header. For a GSO super-frame, the
//! quote shows the super-frame's IP header (its total length is the super-frame's);
//! callers deciding "fragmentation needed" for GSO frames compare the segment size
//! (`gso_size` + headers), not the frame length, with the MTU.

use std::net::Ipv4Addr;

use crate::offload::{csum, IPPROTO_TCP};
use crate::wire::MacAddr;

/// Largest ICMP error datagram (IP header included) we send (RFC 1812 4.3.2.3).
pub const MAX_ERROR_LEN: usize = 576;
/// Bytes of our own headers in an error: IPv4 (20, no options) + ICMP (8).
pub const ERROR_HDRS_LEN: usize = 28;
/// Length of an Ethernet II header written by [`eth_header`].
pub const ETH_HDR_LEN: usize = 14;

const IPPROTO_ICMP: u8 = 1;
/// RFC 1812 4.3.2.5: errors carry precedence 6 (internetwork control).
const TOS_PREC_INTERNETCONTROL: u8 = 0xc0;
/// RFC 1349 TOS bits kept from the original (Linux: `IPTOS_TOS_MASK`).
const TOS_MASK: u8 = 0x1e;

/// Why [`dec_ttl`] did not forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlError {
    /// TTL was 0 or 1: drop and answer `IcmpError::TimeExceeded` (if allowed).
    Expired,
    /// Fewer than 20 bytes: not an IPv4 header.
    Malformed,
}

/// Decrements the TTL of the IPv4 header at the start of `hdr` and patches the header
/// checksum incrementally (RFC 1624 eqn. 3, which gives what a full recomputation
/// gives, unlike RFC 1141's `+0x100` shortcut that can produce 0xffff where the
/// recomputation gives 0x0000).
///
/// Leaves `hdr` untouched and returns `Expired` when the TTL is 0 or 1 (RFC 1812 5.3.1:
/// a router never forwards a packet whose TTL would become 0). Does not verify the
/// existing checksum: a wrong checksum stays exactly as wrong. Never panics.
#[inline]
pub fn dec_ttl(hdr: &mut [u8]) -> Result<(), TtlError> {
    if hdr.len() < 20 {
        return Err(TtlError::Malformed);
    }
    let ttl = hdr[8];
    if ttl <= 1 {
        return Err(TtlError::Expired);
    }
    let proto = hdr[9] as u16;
    let old = (ttl as u16) << 8 | proto;
    let new = old - 0x100;
    let c = csum::update16(u16::from_be_bytes([hdr[10], hdr[11]]), old, new);
    hdr[8] = ttl - 1;
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// The ICMP errors a router sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// Time Exceeded, TTL exceeded in transit (type 11 code 0).
    TimeExceeded,
    /// Destination Unreachable, net unreachable (type 3 code 0): no route.
    NetUnreachable,
    /// Destination Unreachable, host unreachable (type 3 code 1): ARP failed.
    HostUnreachable,
    /// Destination Unreachable, protocol unreachable (type 3 code 2).
    ProtocolUnreachable,
    /// Destination Unreachable, port unreachable (type 3 code 3).
    PortUnreachable,
    /// Destination Unreachable, fragmentation needed and DF set (type 3 code 4), with
    /// the next-hop MTU (RFC 1191).
    FragNeeded {
        /// MTU of the next hop, in bytes.
        mtu: u16,
    },
    /// Destination Unreachable, communication administratively prohibited (type 3
    /// code 13, RFC 1812 5.2.7.1): dropped by policy.
    AdminProhibited,
}

impl IcmpError {
    /// ICMP (type, code).
    pub fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::TimeExceeded => (11, 0),
            IcmpError::NetUnreachable => (3, 0),
            IcmpError::HostUnreachable => (3, 1),
            IcmpError::ProtocolUnreachable => (3, 2),
            IcmpError::PortUnreachable => (3, 3),
            IcmpError::FragNeeded { .. } => (3, 4),
            IcmpError::AdminProhibited => (3, 13),
        }
    }
}

/// Why no error was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The rules forbid answering this packet (see [`may_send_error`]). Not a fault.
    NotAllowed,
    /// The original is not a well-formed IPv4 packet (too short, wrong version, header
    /// or total length inconsistent with the bytes given).
    Malformed,
    /// `out` cannot hold the headers plus the minimum quote (IP header + 8 bytes).
    BufferTooSmall,
}

/// The original packet's header facts the rules need.
struct Orig {
    hdr_len: usize,
    total_len: usize,
    tos: u8,
    src: [u8; 4],
}

/// Checks `orig` is a well-formed IPv4 packet that may be answered with an error.
fn check(orig: &[u8]) -> Result<Orig, BuildError> {
    if orig.len() < 20 || orig[0] >> 4 != 4 {
        return Err(BuildError::Malformed);
    }
    let hdr_len = (orig[0] & 0x0f) as usize * 4;
    let total_len = u16::from_be_bytes([orig[2], orig[3]]) as usize;
    if hdr_len < 20 || total_len < hdr_len || total_len > orig.len() {
        return Err(BuildError::Malformed);
    }
    let frag_off = u16::from_be_bytes([orig[6], orig[7]]) & 0x1fff;
    let src = [orig[12], orig[13], orig[14], orig[15]];
    let dst = [orig[16], orig[17], orig[18], orig[19]];
    // Never answer: non-first fragments; packets to broadcast/multicast (224/4, and
    // 240/4 which holds 255.255.255.255); packets from an address that is not one
    // host: 0/8 ("this network"), 127/8, 224/4, 240/4 (RFC 1122 3.2.2, RFC 1812 4.3.2.7).
    if frag_off != 0 || dst[0] >= 224 || src[0] == 0 || src[0] == 127 || src[0] >= 224 {
        return Err(BuildError::NotAllowed);
    }
    if orig[9] == IPPROTO_ICMP {
        // Never answer an ICMP error; answer only known queries (unknown types are
        // treated as errors, like Linux does).
        let Some(&t) = orig[hdr_len..total_len].first() else { return Err(BuildError::NotAllowed) };
        if !matches!(t, 0 | 8 | 9 | 10 | 13 | 14 | 15 | 16 | 17 | 18) {
            return Err(BuildError::NotAllowed);
        }
    }
    Ok(Orig { hdr_len, total_len, tos: orig[1], src })
}

/// True when an ICMP error about `orig` (an IPv4 packet starting at its header; bytes
/// past its total length, such as Ethernet padding, are ignored) may be sent: it is
/// well-formed, not a non-first fragment, not addressed to a broadcast or multicast
/// address, not from 0/8, 127/8, multicast or class E sources, and not itself an ICMP
/// error. The caller must also refuse packets it received as link-layer broadcast or
/// multicast, and packets to a subnet's directed broadcast address (this function does
/// not know the subnets). Never panics.
#[inline]
pub fn may_send_error(orig: &[u8]) -> bool {
    check(orig).is_ok()
}

/// Writes an IPv4 datagram carrying the ICMP error `kind` about `orig` into `out`:
/// IPv4 header (no options, TOS precedence 6 plus the original's TOS bits, DF set,
/// ID 0, the given `ttl`, from `src_ip` to the original's source), ICMP header (with
/// the next-hop MTU for `FragNeeded`), then as much of the original datagram (from its
/// IP header on) as keeps the whole error within [`MAX_ERROR_LEN`] and within `out`.
/// Checksums are complete. Returns the datagram length.
///
/// `src_ip` should be the switch's address on the network the packet came from
/// (RFC 1812 4.3.2.4). Errors: `NotAllowed` when [`may_send_error`] says no,
/// `Malformed`, or `BufferTooSmall` when `out` cannot hold 28 bytes plus the original's
/// header and 8 bytes of its payload (RFC 792's minimum). Never panics; writes only
/// within the returned length.
pub fn build_error(kind: IcmpError, orig: &[u8], src_ip: Ipv4Addr, ttl: u8, out: &mut [u8]) -> Result<usize, BuildError> {
    let o = check(orig)?;
    let min_quote = o.total_len.min(o.hdr_len + 8);
    let room = out.len().checked_sub(ERROR_HDRS_LEN).ok_or(BuildError::BufferTooSmall)?;
    if room < min_quote {
        return Err(BuildError::BufferTooSmall);
    }
    let quote = o.total_len.min(MAX_ERROR_LEN - ERROR_HDRS_LEN).min(room);
    let len = ERROR_HDRS_LEN + quote;
    let out = &mut out[..len];

    let ip = &mut out[..20];
    ip[0] = 0x45;
    ip[1] = TOS_PREC_INTERNETCONTROL | (o.tos & TOS_MASK);
    ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip[4..6].fill(0); // ID 0 with DF set: an atomic datagram (RFC 6864)
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = ttl;
    ip[9] = IPPROTO_ICMP;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&o.src);
    let c = csum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let (t, code) = kind.type_code();
    let icmp = &mut out[20..];
    icmp[0] = t;
    icmp[1] = code;
    icmp[2..8].fill(0);
    if let IcmpError::FragNeeded { mtu } = kind {
        icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    }
    icmp[8..].copy_from_slice(&orig[..quote]);
    let c = csum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(len)
}

/// Writes an Ethernet II header (`dst`, `src`, `ethertype`) into the first 14 bytes of
/// `out`; returns 14, or `None` (nothing written) when `out` is shorter. Never panics.
#[inline]
pub fn eth_header(out: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) -> Option<usize> {
    let h = out.get_mut(..ETH_HDR_LEN)?;
    h[0..6].copy_from_slice(&dst.0);
    h[6..12].copy_from_slice(&src.0);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Some(ETH_HDR_LEN)
}

/// [`build_error`] behind an Ethernet header (EtherType IPv4): a complete frame for
/// the port the original came in on. Returns the frame length (no padding is needed:
/// an error is at least 14 + 28 + 28 = 70 bytes). Never panics.
pub fn build_error_frame(
    kind: IcmpError,
    orig: &[u8],
    src_ip: Ipv4Addr,
    ttl: u8,
    dst_mac: MacAddr,
    src_mac: MacAddr,
    out: &mut [u8],
) -> Result<usize, BuildError> {
    let body = out.get_mut(ETH_HDR_LEN..).ok_or(BuildError::BufferTooSmall)?;
    let n = build_error(kind, orig, src_ip, ttl, body)?;
    eth_header(out, dst_mac, src_mac, 0x0800).ok_or(BuildError::BufferTooSmall)?;
    Ok(ETH_HDR_LEN + n)
}

/// Length of the frame [`build_reset_frame`] writes: Ethernet, IPv4, TCP, no options.
pub const RESET_FRAME_LEN: usize = ETH_HDR_LEN + 20 + 20;

/// The TCP segment starting at the IPv4 header `orig` (a first fragment) may be
/// answered with a RST: its TCP header is there and it is not a RST itself (RFC 9293
/// 3.10.7.1). Never panics.
pub fn may_reset(orig: &[u8]) -> bool {
    let ihl = orig.first().map_or(0, |b| ((b & 0xf) as usize) * 4);
    orig.len() >= 20 && ihl >= 20 && orig.get(ihl + 13).is_some_and(|flags| flags & 0x04 == 0)
}

/// Writes the RST refusing the TCP segment `orig` (an IPv4 datagram to a closed port of
/// ours, from its IP header on) into `out`: Ethernet from `src_mac` to `dst_mac`, IPv4
/// from the segment's destination back to its source (DF, TTL 64), TCP with the ports
/// swapped and RFC 9293 3.10.7.1's numbers: with ACK set, SEQ = its ACK; else SEQ 0 and
/// ACK = its SEQ plus its length (SYN and FIN count one). Checksums are complete.
/// Returns [`RESET_FRAME_LEN`], or `None` (nothing sent) when `orig` holds no TCP
/// header or `out` is too short. Never panics.
pub fn build_reset_frame(orig: &[u8], dst_mac: MacAddr, src_mac: MacAddr, out: &mut [u8]) -> Option<usize> {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    let ihl = ((orig.first()? & 0xf) as usize) * 4;
    let total = u16::from_be_bytes([*orig.get(2)?, *orig.get(3)?]) as usize;
    let ip = orig.get(..20)?;
    let t = orig.get(ihl..ihl + 20)?;
    let out = out.get_mut(..RESET_FRAME_LEN)?;
    let flags = t[13];
    let seq_in = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let ack_in = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    let payload = total.saturating_sub(ihl + (t[12] >> 4) as usize * 4);
    let seg_len = payload as u32 + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
    let (seq, ack, rflags) = if flags & ACK != 0 { (ack_in, 0, RST) } else { (0, seq_in.wrapping_add(seg_len), RST | ACK) };
    let (src, dst): ([u8; 4], [u8; 4]) = (ip[16..20].try_into().ok()?, ip[12..16].try_into().ok()?);
    eth_header(out, dst_mac, src_mac, 0x0800)?;
    let h = &mut out[ETH_HDR_LEN..ETH_HDR_LEN + 20];
    h.copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = csum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut out[ETH_HDR_LEN + 20..];
    tcp.fill(0);
    tcp[0..2].copy_from_slice(&t[2..4]);
    tcp[2..4].copy_from_slice(&t[0..2]);
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = rflags;
    let c = !csum::fold(csum::sum16(tcp, csum::pseudo_v4(src, dst, IPPROTO_TCP, 20)));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    Some(RESET_FRAME_LEN)
}

/// A token bucket limiting the ICMP errors one worker sends (RFC 1812 4.3.2.8).
/// Owned by one worker (not shared, no atomics); time is passed in as milliseconds
/// on any monotonic clock. Starts full. Never panics.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    /// Tokens per second, i.e. thousandths of a token per millisecond.
    rate: u64,
    /// Capacity, in thousandths of a token.
    cap: u64,
    /// Current level, in thousandths of a token.
    level: u64,
    last_ms: u64,
}

impl Default for RateLimiter {
    /// 1000 errors per second, bursts of 50.
    fn default() -> RateLimiter {
        RateLimiter::new(1000, 50)
    }
}

impl RateLimiter {
    /// `per_sec` errors per second on average, at most `burst` at once. A `burst` of 0
    /// allows nothing.
    pub fn new(per_sec: u32, burst: u32) -> RateLimiter {
        let cap = burst as u64 * 1000;
        RateLimiter { rate: per_sec as u64, cap, level: cap, last_ms: 0 }
    }

    /// Takes one token if there is one: true means "send the error". A clock that
    /// goes backwards adds nothing (and does not move the reference point back).
    #[inline]
    pub fn allow(&mut self, now_ms: u64) -> bool {
        if now_ms > self.last_ms {
            let add = (now_ms - self.last_ms).saturating_mul(self.rate);
            self.level = self.level.saturating_add(add).min(self.cap);
            self.last_ms = now_ms;
        }
        if self.level >= 1000 {
            self.level -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[path = "tests_icmp.rs"]
mod tests;
