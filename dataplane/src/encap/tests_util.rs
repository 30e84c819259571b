//! Test helpers: inner frames built with etherparse, buffers with headroom, an
//! etherparse-based oracle for outer and inner headers, and a deterministic RNG.

use std::net::Ipv4Addr;

use etherparse::{IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, UdpHeader, VlanId};

use crate::offload::csum;
use crate::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

pub(super) const HEADROOM: usize = 256;
pub(super) const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub(super) const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub(super) const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
pub(super) const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
pub(super) const IP_A: [u8; 4] = [10, 1, 0, 2];
pub(super) const IP_B: [u8; 4] = [10, 1, 1, 3];

/// xorshift64: deterministic randomness without extra crates.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Payload bytes with a recognisable pattern.
pub(super) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn eth(vlan: Option<u16>) -> etherparse::PacketBuilderStep<etherparse::VlanHeader> {
    // Without a VLAN, etherparse's ethernet2 step is a different type; callers branch.
    PacketBuilder::ethernet2(MAC_A, MAC_B).single_vlan(VlanId::try_new(vlan.unwrap_or(0)).unwrap())
}

/// A TCP/IPv4 frame (optionally with one 802.1Q tag), complete checksums.
pub(super) fn tcp4(vlan: Option<u16>, sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match vlan {
        Some(_) => eth(vlan).ipv4(IP_A, IP_B, 64).tcp(sport, dport, seq, 65535).ack(77).write(&mut v, payload),
        None => PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP_A, IP_B, 64)
            .tcp(sport, dport, seq, 65535)
            .ack(77)
            .write(&mut v, payload),
    }
    .unwrap();
    v
}

/// A UDP/IPv4 frame (optionally VLAN-tagged), complete checksums.
pub(super) fn udp4(vlan: Option<u16>, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match vlan {
        Some(_) => eth(vlan).ipv4(IP_A, IP_B, 64).udp(sport, dport).write(&mut v, payload),
        None => PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(IP_A, IP_B, 64).udp(sport, dport).write(&mut v, payload),
    }
    .unwrap();
    v
}

/// A TCP/IPv6 frame, complete checksums.
pub(super) fn tcp6(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let a = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let b = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(a, b, 64)
        .tcp(sport, dport, seq, 65535)
        .ack(1)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// An ARP request (who has `tip`, tell `sip`) from `smac`, broadcast.
pub(super) fn arp_request(smac: [u8; 6], sip: [u8; 4], tip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tip);
    f
}

/// Sets the inner IPv4 TOS of a plain (untagged) IPv4 frame and fixes the checksum.
pub(super) fn set_tos4(frame: &mut [u8], tos: u8) {
    frame[15] = tos;
    frame[24] = 0;
    frame[25] = 0;
    let c = csum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// `frame` placed at `HEADROOM` in a buffer with 64 spare bytes at the end.
pub(super) fn in_buf(frame: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADROOM + frame.len() + 64];
    b[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    b
}

/// Turns a complete TCP/UDP frame (IP at `l3`) into a CHECKSUM_PARTIAL one: the L4
/// checksum field holds the folded pseudo-header sum, as the kernel leaves it.
pub(super) fn make_partial(frame: &mut [u8], l3: usize) -> VnetHdr {
    let v6 = frame[l3] >> 4 == 6;
    let (l4, proto, l4_len) = if v6 {
        (l3 + 40, frame[l3 + 6], u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize)
    } else {
        let ihl = (frame[l3] & 15) as usize * 4;
        let tot = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
        (l3 + ihl, frame[l3 + 9], tot - ihl)
    };
    let ps = if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&frame[l3 + 8..l3 + 24]);
        d.copy_from_slice(&frame[l3 + 24..l3 + 40]);
        csum::pseudo_v6(&s, &d, proto, l4_len as u32)
    } else {
        let mut s = [0u8; 4];
        let mut d = [0u8; 4];
        s.copy_from_slice(&frame[l3 + 12..l3 + 16]);
        d.copy_from_slice(&frame[l3 + 16..l3 + 20]);
        csum::pseudo_v4(s, d, proto, l4_len as u16)
    };
    let off = if proto == 6 { 16 } else { 6 };
    frame[l4 + off..l4 + off + 2].copy_from_slice(&csum::fold(ps).to_be_bytes());
    VnetHdr { flags: F_NEEDS_CSUM, csum_start: l4 as u16, csum_offset: off as u16, ..VnetHdr::default() }
}

/// A TSO super-frame of `len` payload bytes (TCP/IPv4 or IPv6, optional VLAN tag),
/// `NEEDS_CSUM`, `gso_size = mss`. Returns the frame, its header and the payload.
pub(super) fn gso_tcp(v6: bool, vlan: Option<u16>, len: usize, mss: u16) -> (Vec<u8>, VnetHdr, Vec<u8>) {
    let payload = pattern(len);
    let mut f = if v6 { tcp6(40000, 5201, 1_000_000, &payload) } else { tcp4(vlan, 40000, 5201, 1_000_000, &payload) };
    let l3 = if vlan.is_some() && !v6 { 18 } else { 14 };
    let mut vh = make_partial(&mut f, l3);
    vh.gso_type = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
    vh.gso_size = mss;
    vh.hdr_len = vh.csum_start + 20;
    (f, vh, payload)
}

/// A USO super-frame (UDP/IPv4) of `len` payload bytes, `gso_size = seg`.
pub(super) fn gso_udp(len: usize, seg: u16) -> (Vec<u8>, VnetHdr) {
    let mut f = udp4(None, 5000, 6000, &pattern(len));
    let mut vh = make_partial(&mut f, 14);
    vh.gso_type = GSO_UDP_L4;
    vh.gso_size = seg;
    vh.hdr_len = 42;
    (f, vh)
}

/// Parses an outer IPv4 packet with etherparse and checks its header checksum; returns
/// the header and what follows it.
#[track_caller]
pub(super) fn outer_ipv4(pkt: &[u8]) -> (Ipv4Header, &[u8]) {
    let (ip, rest) = Ipv4Header::from_slice(pkt).expect("etherparse parses outer ipv4");
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "outer ipv4 checksum");
    assert_eq!(ip.total_len as usize, pkt.len(), "outer total length");
    (ip, rest)
}

/// Parses the outer UDP header after `ip`; checks length and (when non-zero) checksum.
#[track_caller]
pub(super) fn outer_udp<'a>(ip: &Ipv4Header, rest: &'a [u8]) -> (UdpHeader, &'a [u8]) {
    assert_eq!(ip.protocol, IpNumber::UDP);
    let (u, payload) = UdpHeader::from_slice(rest).expect("etherparse parses outer udp");
    assert_eq!(u.length as usize, rest.len(), "udp length");
    if u.checksum != 0 {
        assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).unwrap(), "outer udp checksum");
    }
    (u, payload)
}

/// Checks every checksum of an inner Ethernet frame with etherparse (IPv4 header,
/// TCP, UDP); returns the transport payload.
#[track_caller]
pub(super) fn inner_ok(frame: &[u8]) -> Vec<u8> {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses inner frame");
    let payload = h.payload.slice();
    match (&h.net, &h.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), t) => {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "inner ipv4 checksum");
            match t {
                Some(TransportHeader::Tcp(t)) => {
                    assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, payload).unwrap(), "inner tcp checksum")
                }
                Some(TransportHeader::Udp(u)) => {
                    assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).unwrap(), "inner udp checksum")
                }
                _ => {}
            }
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Tcp(t))) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv6(ip, payload).unwrap(), "inner tcp6 checksum")
        }
        _ => {}
    }
    payload.to_vec()
}
