//! IP-in-UDP, the shape of Flannel's `udp` backend: outer IPv4 + UDP (destination port
//! 8285) + the inner IP packet, no inner Ethernet header and no tunnel header. For routed
//! overlays where each host owns a subnet: the sender routes by inner destination to the
//! host that owns it, the receiver routes the inner packet onward.
//!
//! Encapsulation takes an IP packet ([`encap_ip`]) — or, through [`super::encap`], an
//! Ethernet frame whose L2 header is dropped in place. Decapsulation returns the inner IP
//! packet; [`super::prepend_eth`] rebuilds an Ethernet header in front of it (into the
//! bytes the outer headers occupied) when the packet is to be bridged. Inner IPv4 and
//! IPv6 are both accepted. Owns no state; never panics.

use std::net::Ipv4Addr;

use super::outer::{self, ip_packet_len, l3_of, IPPROTO_UDP};
use super::{DecapError, Decapped, EncapError, Encapped, Peer, Tunnel, Vtep};

/// Flannel's default UDP port.
pub const PORT: u16 = 8285;

/// Finds the IP packet inside an Ethernet frame (behind up to two VLAN tags): its offset
/// and its length from the IP header (Ethernet padding excluded). Errors:
/// [`EncapError::InnerNotIp`] for other EtherTypes or a version that does not match,
/// [`EncapError::InnerTruncated`].
pub fn locate_ip(frame: &[u8]) -> Result<(usize, usize), EncapError> {
    let (l3, et) = l3_of(frame).ok_or(EncapError::InnerTruncated)?;
    let want = match et {
        0x0800 => 4,
        0x86dd => 6,
        _ => return Err(EncapError::InnerNotIp),
    };
    let pkt = frame.get(l3..).unwrap_or(&[]);
    match pkt.first() {
        Some(b) if b >> 4 == want => Ok((l3, ip_packet_len(pkt)?)),
        Some(_) => Err(EncapError::InnerNotIp),
        None => Err(EncapError::InnerTruncated),
    }
}

/// Encapsulates the IP packet at `buf[off..off + len]` (complete checksums; bytes past
/// its IP length are dropped) to `remote`, writing outer IPv4 + UDP into `buf[off - 28..
/// off]`. The source port hashes the inner addresses and ports. Never panics.
pub fn encap_ip(
    vtep: &mut Vtep,
    remote: Ipv4Addr,
    buf: &mut [u8],
    off: usize,
    len: usize,
) -> Result<Encapped, EncapError> {
    let end = off.checked_add(len).ok_or(EncapError::OutOfBounds)?;
    let pkt = buf.get(off..end).ok_or(EncapError::OutOfBounds)?;
    let ip_len = ip_packet_len(pkt)?;
    let sport = vtep.src_port_for(outer::flow_hash_ip(pkt, vtep.hash_seed));
    let tos = outer::inner_tos_ip(pkt);
    outer::write(vtep, &Peer { remote, tunnel: Tunnel::Udp }, buf, off, ip_len, sport, tos)
}

/// Checks a UDP payload is an IP packet: returns its length (trailing bytes dropped).
fn inner_ip(payload: &[u8]) -> Result<usize, DecapError> {
    ip_packet_len(payload).map_err(|e| match e {
        EncapError::InnerNotIp => DecapError::InnerNotIp,
        _ => DecapError::InnerTruncated,
    })
}

/// Decapsulates a UDP socket payload: checks it is an IPv4/IPv6 packet and returns its
/// range (offset 0). The outer fields of the result are unspecified/0.
pub fn decap_payload(payload: &[u8]) -> Result<Decapped, DecapError> {
    let len = inner_ip(payload)?;
    Ok(Decapped::payload_only(Tunnel::Udp, 0, len))
}

/// Decapsulates an outer IPv4 packet (`pkt` starts at the IPv4 header): validates IPv4
/// and UDP as for VXLAN (port [`Vtep::port`]), then the inner IP header and length.
/// The inner IP packet is `pkt[d.inner_range()]`. Never panics.
pub fn decap(vtep: &Vtep, pkt: &[u8]) -> Result<Decapped, DecapError> {
    decap_with(vtep, pkt, vtep.verify_csum)
}

/// [`decap`] with the UDP checksum check decided by the caller (`verify_l4`).
pub(crate) fn decap_with(vtep: &Vtep, pkt: &[u8], verify_l4: bool) -> Result<Decapped, DecapError> {
    let ip = outer::parse_ipv4(vtep, pkt, IPPROTO_UDP)?;
    let (sport, p, end) = outer::parse_udp(vtep, pkt, &ip, verify_l4)?;
    let len = inner_ip(pkt.get(p..end).ok_or(DecapError::Truncated)?)?;
    Ok(Decapped {
        tunnel: Tunnel::Udp,
        inner_off: p,
        inner_len: len,
        outer_src: ip.src,
        outer_dst: ip.dst,
        src_port: sport,
        outer_tos: ip.tos,
    })
}
