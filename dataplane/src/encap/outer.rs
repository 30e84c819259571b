//! The outer IPv4/UDP headers every encapsulation shares: writing them (policy from
//! [`Vtep`]), validating them on receive, the inner-flow hash that picks the UDP source
//! port, and the inner TOS lookup.
//!
//! Owns nothing; no allocation; never panics (every index is bounds-checked or follows a
//! length check in the same function).

use std::net::Ipv4Addr;

use smoltcp::wire::{IpProtocol, Ipv4Packet};

use super::{gre, rd16, rd32, vxlan, DecapError, EncapError, Encapped, Peer, Tos, Tunnel, Vtep};
use super::{IPV4_HDR_LEN, UDP_HDR_LEN};
use crate::offload::csum;

pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_GRE: u8 = 47;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Offset of the L3 header and the EtherType after up to two VLAN tags (0x8100, 0x88a8,
/// 0x9100), or `None` if the frame is shorter than its Ethernet header and tags (or has
/// more than two tags).
pub(crate) fn l3_of(frame: &[u8]) -> Option<(usize, u16)> {
    if frame.len() < 14 {
        return None;
    }
    let mut et = rd16(frame, 12);
    let mut off = 14;
    for _ in 0..2 {
        if !matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            break;
        }
        if frame.len() < off + 4 {
            return None;
        }
        et = rd16(frame, off + 2);
        off += 4;
    }
    if matches!(et, 0x8100 | 0x88a8 | 0x9100) {
        return None;
    }
    Some((off, et))
}

/// Length of the IPv4/IPv6 packet at the start of `pkt` as its header says, checked
/// against `pkt.len()`. Errors: `InnerNotIp` for another version, `InnerTruncated` when
/// shorter than the header or the claimed length, or an impossible IPv4 IHL/length.
pub(crate) fn ip_packet_len(pkt: &[u8]) -> Result<usize, EncapError> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            if pkt.len() < 20 {
                return Err(EncapError::InnerTruncated);
            }
            let ihl = ((pkt[0] & 0x0f) as usize) * 4;
            let tot = rd16(pkt, 2) as usize;
            if ihl < 20 || tot < ihl || tot > pkt.len() {
                return Err(EncapError::InnerTruncated);
            }
            Ok(tot)
        }
        Some(6) => {
            let tot = 40 + rd16(pkt, 4) as usize;
            if pkt.len() < tot {
                return Err(EncapError::InnerTruncated);
            }
            Ok(tot)
        }
        _ => Err(EncapError::InnerNotIp),
    }
}

/// A small multiply-xor-rotate mixer with a murmur3 finalizer: fast, no tables, good
/// enough spread for port selection (not a cryptographic hash).
struct Mix(u64);

impl Mix {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }

    #[inline]
    fn finish(self) -> u32 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^= k >> 33;
        (k >> 32) as u32
    }
}

#[inline]
fn rd64(b: &[u8], off: usize) -> u64 {
    (rd32(b, off) as u64) << 32 | rd32(b, off + 4) as u64
}

/// Feeds the L3 addresses, protocol and (for unfragmented TCP/UDP/SCTP/UDP-Lite) the
/// ports of the IP packet at the start of `pkt` into `m`. Short input adds what it has.
fn mix_ip(m: &mut Mix, pkt: &[u8]) {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let ihl = ((pkt[0] & 0x0f) as usize) * 4;
            let proto = pkt[9];
            m.add(rd64(pkt, 12));
            m.add(proto as u64 | 4 << 8);
            let frag = rd16(pkt, 6) & 0x3fff != 0;
            if !frag && ihl >= 20 && has_ports(proto) && pkt.len() >= ihl + 4 {
                m.add(rd32(pkt, ihl) as u64);
            }
        }
        Some(6) if pkt.len() >= 40 => {
            for i in 0..4 {
                m.add(rd64(pkt, 8 + 8 * i));
            }
            let nh = pkt[6];
            m.add(nh as u64 | 6 << 8);
            if has_ports(nh) && pkt.len() >= 44 {
                m.add(rd32(pkt, 40) as u64);
            }
        }
        _ => {}
    }
}

#[inline]
fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE)
}

/// Hash of an Ethernet frame's flow: both MAC addresses, and when the frame is IPv4/IPv6
/// (behind up to two VLAN tags) the IP addresses, protocol and, for unfragmented
/// TCP/UDP/SCTP, the ports. Deterministic for a given `seed`: every packet of a flow, and
/// every segment of a GSO super-frame, gets the same value. Never panics.
pub fn flow_hash_eth(frame: &[u8], seed: u32) -> u32 {
    let mut m = Mix(seed as u64 ^ 0x243f_6a88_85a3_08d3);
    if frame.len() >= 12 {
        m.add(rd64(frame, 0));
        m.add(rd32(frame, 8) as u64);
    }
    if let Some((l3, et)) = l3_of(frame) {
        if matches!(et, 0x0800 | 0x86dd) {
            mix_ip(&mut m, frame.get(l3..).unwrap_or(&[]));
        }
    }
    m.finish()
}

/// Hash of an IP packet's flow (addresses, protocol, ports as in [`flow_hash_eth`],
/// without L2): what IP-in-UDP uses, as its L2 header is not carried. Never panics.
pub fn flow_hash_ip(pkt: &[u8], seed: u32) -> u32 {
    let mut m = Mix(seed as u64 ^ 0x243f_6a88_85a3_08d3);
    mix_ip(&mut m, pkt);
    m.finish()
}

/// TOS / traffic-class byte of the IP packet at the start of `pkt`, `None` if not IP.
pub fn inner_tos_ip(pkt: &[u8]) -> Option<u8> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => Some(pkt[1]),
        Some(6) if pkt.len() >= 40 => Some((pkt[0] << 4) | (pkt[1] >> 4)),
        _ => None,
    }
}

/// TOS / traffic-class byte of an Ethernet frame's IPv4/IPv6 packet (behind up to two
/// VLAN tags), `None` if the frame is not IP.
pub fn inner_tos_eth(frame: &[u8]) -> Option<u8> {
    let (l3, et) = l3_of(frame)?;
    let pkt = frame.get(l3..)?;
    match (et, pkt.first().map(|b| b >> 4)) {
        (0x0800, Some(4)) | (0x86dd, Some(6)) => inner_tos_ip(pkt),
        _ => None,
    }
}

/// Outer TOS from the policy and the inner TOS (RFC 6040 normal mode for ECN).
#[inline]
pub(crate) fn outer_tos(policy: Tos, inner: Option<u8>) -> u8 {
    let inner = inner.unwrap_or(0);
    let ecn = match inner & 3 {
        3 => 2, // CE is not copied out: ECT(0)
        e => e,
    };
    let dscp = match policy {
        Tos::Inherit => inner & 0xfc,
        Tos::Fixed(v) => v & 0xfc,
    };
    dscp | ecn
}

/// Writes the outer headers of `peer`'s encapsulation in front of the inner payload at
/// `buf[ioff..ioff + ilen]` (an Ethernet frame for VXLAN/GRE, an IP packet for UDP, with
/// complete checksums), taking the IPv4 id from `vtep`.
pub(crate) fn write(
    vtep: &mut Vtep,
    peer: &Peer,
    buf: &mut [u8],
    ioff: usize,
    ilen: usize,
    sport: u16,
    inner_tos: Option<u8>,
) -> Result<Encapped, EncapError> {
    let hl = vtep.kind_of(peer.tunnel).outer_hdr_len();
    let start = ioff.checked_sub(hl).ok_or(EncapError::NoHeadroom)?;
    let end = ioff.checked_add(ilen).ok_or(EncapError::OutOfBounds)?;
    if end > buf.len() {
        return Err(EncapError::OutOfBounds);
    }
    let total = hl + ilen;
    if total > u16::MAX as usize {
        return Err(EncapError::TooLong);
    }
    let tos = outer_tos(vtep.tos, inner_tos);
    let id = vtep.take_id();
    let proto = if matches!(peer.tunnel, Tunnel::Gre(_)) { IPPROTO_GRE } else { IPPROTO_UDP };
    let pkt = &mut buf[start..end];
    write_ipv4(pkt, vtep, peer.remote, proto, total as u16, tos, id);
    let l4 = IPV4_HDR_LEN;
    match peer.tunnel {
        Tunnel::Gre(key) => {
            gre::write_header(&mut pkt[l4..hl], key, vtep.tx_csum);
            if vtep.tx_csum {
                gre::fill_csum(&mut pkt[l4..]);
            }
            Ok(Encapped { off: start, len: total, payload_off: start + l4, src_port: 0 })
        }
        Tunnel::Vxlan(_) | Tunnel::Udp => {
            write_udp(&mut pkt[l4..l4 + UDP_HDR_LEN], sport, vtep.port, (total - l4) as u16);
            if let Tunnel::Vxlan(vni) = peer.tunnel {
                vxlan::write_header(&mut pkt[l4 + UDP_HDR_LEN..hl], vni);
            }
            if vtep.tx_csum {
                fill_udp_csum(pkt, vtep.local_ip, peer.remote);
            }
            Ok(Encapped { off: start, len: total, payload_off: start + l4 + UDP_HDR_LEN, src_port: sport })
        }
    }
}

/// Writes a 20-byte IPv4 header (no options) at the start of `pkt`, checksum included.
fn write_ipv4(pkt: &mut [u8], vtep: &Vtep, dst: Ipv4Addr, proto: u8, total: u16, tos: u8, id: u16) {
    let Some(h) = pkt.get_mut(..IPV4_HDR_LEN) else {
        return;
    };
    let t = total.to_be_bytes();
    let i = id.to_be_bytes();
    let s = vtep.local_ip.octets();
    let d = dst.octets();
    let frag = if vtep.df { 0x40 } else { 0 };
    h.copy_from_slice(&[
        0x45, tos, t[0], t[1], i[0], i[1], frag, 0, vtep.ttl, proto, 0, 0, s[0], s[1], s[2], s[3], d[0], d[1], d[2],
        d[3],
    ]);
    let c = hdr_csum(h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
}

/// Internet checksum of an IPv4 header: the general [`csum::checksum`] with a fast path
/// for the option-less 20 bytes (ten words summed straight, no loop set-up).
#[inline]
fn hdr_csum(h: &[u8]) -> u16 {
    match h {
        &[a0, a1, b0, b1, c0, c1, d0, d1, e0, e1, f0, f1, g0, g1, h0, h1, i0, i1, j0, j1] => {
            let w = |x: u8, y: u8| u16::from_be_bytes([x, y]) as u32;
            let s = w(a0, a1) + w(b0, b1) + w(c0, c1) + w(d0, d1) + w(e0, e1);
            let s = s + w(f0, f1) + w(g0, g1) + w(h0, h1) + w(i0, i1) + w(j0, j1);
            !csum::fold(s)
        }
        _ => csum::checksum(h),
    }
}

/// Writes an 8-byte UDP header with a zero checksum.
fn write_udp(h: &mut [u8], sport: u16, dport: u16, len: u16) {
    if let Some(h) = h.get_mut(..UDP_HDR_LEN) {
        let (s, d, l) = (sport.to_be_bytes(), dport.to_be_bytes(), len.to_be_bytes());
        h.copy_from_slice(&[s[0], s[1], d[0], d[1], l[0], l[1], 0, 0]);
    }
}

/// Computes the UDP checksum of the IPv4 packet `pkt` (header 20 bytes, UDP after it,
/// checksum field currently 0). A computed 0 is sent as 0xffff (RFC 768).
fn fill_udp_csum(pkt: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Some(udp) = pkt.get_mut(IPV4_HDR_LEN..) else {
        return;
    };
    let ps = csum::pseudo_v4(src.octets(), dst.octets(), IPPROTO_UDP, udp.len() as u16);
    let mut c = !csum::fold(csum::sum16(udp, ps));
    if c == 0 {
        c = 0xffff;
    }
    if let Some(f) = udp.get_mut(6..8) {
        f.copy_from_slice(&c.to_be_bytes());
    }
}

/// A validated outer IPv4 header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OuterIp {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    /// Offset of the L4 header (after options).
    pub l4: usize,
    /// End of the IP packet (its total length; trailing bytes are ignored).
    pub end: usize,
}

/// Validates the outer IPv4 header at the start of `pkt`: version 4, IHL ≥ 5, total
/// length within `pkt` and ≥ IHL, checksum (if `vtep.verify_csum`), not a fragment,
/// destination `vtep.local_ip` (unless unspecified), protocol `proto`.
pub(crate) fn parse_ipv4(vtep: &Vtep, pkt: &[u8], proto: u8) -> Result<OuterIp, DecapError> {
    if pkt.len() < IPV4_HDR_LEN {
        return Err(DecapError::Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(pkt);
    if ip.version() != 4 {
        return Err(DecapError::NotIpv4);
    }
    let ihl = ip.header_len() as usize;
    let total = ip.total_len() as usize;
    if ihl < IPV4_HDR_LEN || total < ihl {
        return Err(DecapError::BadIpHeader);
    }
    if total > pkt.len() {
        return Err(DecapError::Truncated);
    }
    // From here on `check_len` holds, so no accessor of the view can panic.
    if vtep.verify_csum && hdr_csum(&pkt[..ihl]) != 0 {
        return Err(DecapError::IpChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(DecapError::Fragment);
    }
    let dst = ip.dst_addr();
    if !vtep.local_ip.is_unspecified() && dst != vtep.local_ip {
        return Err(DecapError::NotForUs);
    }
    if ip.next_header() != IpProtocol::from(proto) {
        return Err(DecapError::WrongProtocol);
    }
    Ok(OuterIp { src: ip.src_addr(), dst, tos: pkt[1], l4: ihl, end: total })
}

/// Validates the UDP header at `pkt[ip.l4..]`: length ≥ 8 and within the IP payload
/// (bytes after the UDP length are ignored), destination port `vtep.port`, a non-zero
/// checksum (if `verify`). Returns (source port, payload offset, payload end).
pub(crate) fn parse_udp(
    vtep: &Vtep,
    pkt: &[u8],
    ip: &OuterIp,
    verify: bool,
) -> Result<(u16, usize, usize), DecapError> {
    let l4 = ip.l4;
    if ip.end < l4 + UDP_HDR_LEN {
        return Err(DecapError::Truncated);
    }
    let ulen = rd16(pkt, l4 + 4) as usize;
    if ulen < UDP_HDR_LEN || l4 + ulen > ip.end {
        return Err(DecapError::BadUdpLength);
    }
    if rd16(pkt, l4 + 2) != vtep.port {
        return Err(DecapError::WrongPort);
    }
    if verify && rd16(pkt, l4 + 6) != 0 {
        let udp = pkt.get(l4..l4 + ulen).ok_or(DecapError::Truncated)?;
        let ps = csum::pseudo_v4(ip.src.octets(), ip.dst.octets(), IPPROTO_UDP, ulen as u16);
        if csum::fold(csum::sum16(udp, ps)) != 0xffff {
            return Err(DecapError::UdpChecksum);
        }
    }
    Ok((rd16(pkt, l4), l4 + UDP_HDR_LEN, l4 + ulen))
}
