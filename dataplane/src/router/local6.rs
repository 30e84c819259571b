//! What the gateway answers itself on IPv6: neighbour solicitations for its addresses
//! (the global one and the link-local one derived from its MAC), ICMPv6 echo requests
//! to them, and router solicitations (with a router advertisement carrying the
//! network's prefix, so sandboxes also learn the default route by RA).
//!
//! Pure functions over byte slices: no allocation, no panics on any input.

use std::net::Ipv6Addr;

use crate::offload::csum;
use crate::wire::eth::{self, ETHERTYPE_IPV6};
use crate::wire::MacAddr;

const IPV6_HDR: usize = 40;
const NH_ICMPV6: u8 = 58;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;

/// The gateway's IPv6 identity on one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayV6 {
    pub ip: Ipv6Addr,
    pub prefix_len: u8,
    /// fe80::/64 address derived from the gateway MAC (modified EUI-64).
    pub ll: Ipv6Addr,
    pub mac: MacAddr,
    pub mtu: u32,
}

/// The link-local address of a MAC (RFC 4291 modified EUI-64).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

/// What an IPv6 frame means to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local6 {
    /// A neighbour solicitation for one of our addresses.
    NeighborSolicit { target: Ipv6Addr },
    /// An echo request to one of our addresses.
    EchoRequest,
    /// A router solicitation.
    RouterSolicit,
    /// Nothing the gateway answers.
    NotForUs,
    Malformed,
}

struct V6<'a> {
    l3: usize,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    payload: &'a [u8],
}

fn parse(frame: &[u8]) -> Option<V6<'_>> {
    let (l3, et) = eth::l3(frame)?;
    if et != ETHERTYPE_IPV6 {
        return None;
    }
    let h = frame.get(l3..l3 + IPV6_HDR)?;
    if h[0] >> 4 != 6 || h[6] != NH_ICMPV6 {
        return None; // extension headers in front of ICMPv6 are not for us
    }
    let plen = u16::from_be_bytes([h[4], h[5]]) as usize;
    let payload = frame.get(l3 + IPV6_HDR..l3 + IPV6_HDR + plen)?;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&h[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&h[24..40]).ok()?);
    Some(V6 { l3, src, dst, hop: h[7], payload })
}

fn icmp6_sum(src: &Ipv6Addr, dst: &Ipv6Addr, body: &[u8]) -> u16 {
    let p = csum::pseudo_v6(&src.octets(), &dst.octets(), NH_ICMPV6, body.len() as u32);
    !csum::fold(csum::sum16(body, p))
}

/// Classifies `frame` for gateway `gw` (checksums of ICMPv6 verified).
pub fn classify(frame: &[u8], gw: &GatewayV6) -> Local6 {
    let Some(v) = parse(frame) else { return Local6::NotForUs };
    if v.payload.len() < 4 {
        return Local6::Malformed;
    }
    if icmp6_sum(&v.src, &v.dst, v.payload) != 0 {
        return Local6::Malformed;
    }
    let ours = |a: Ipv6Addr| a == gw.ip || a == gw.ll;
    match v.payload[0] {
        ND_NEIGHBOR_SOLICIT if v.hop == 255 && v.payload.len() >= 24 => match ns_target(&v) {
            Some(target) if ours(target) => Local6::NeighborSolicit { target },
            Some(_) => Local6::NotForUs,
            None => Local6::Malformed,
        },
        ICMP6_ECHO_REQUEST if ours(v.dst) && v.payload.len() >= 8 => Local6::EchoRequest,
        ND_ROUTER_SOLICIT if v.hop == 255 => Local6::RouterSolicit,
        _ => Local6::NotForUs,
    }
}

/// Writes Ethernet + IPv6 headers for an ICMPv6 message of `body_len` bytes.
fn write_headers(out: &mut [u8], dst_mac: MacAddr, src_mac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, hop: u8, body_len: usize) {
    eth::set_dst(out, dst_mac);
    eth::set_src(out, src_mac);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let h = &mut out[14..14 + IPV6_HDR];
    h[0] = 0x60;
    h[1..4].fill(0);
    h[4..6].copy_from_slice(&(body_len as u16).to_be_bytes());
    h[6] = NH_ICMPV6;
    h[7] = hop;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}

fn finish_icmp(out: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, body_len: usize) -> usize {
    let body = &mut out[14 + IPV6_HDR..14 + IPV6_HDR + body_len];
    body[2] = 0;
    body[3] = 0;
    let c = icmp6_sum(&src, &dst, body);
    body[2..4].copy_from_slice(&c.to_be_bytes());
    14 + IPV6_HDR + body_len
}

/// Length of a neighbour advertisement frame.
pub const NA_LEN: usize = 14 + IPV6_HDR + 32;

/// Writes the neighbour advertisement answering the solicitation `req` (classified
/// `NeighborSolicit`) into `out` (≥ `NA_LEN` bytes). Returns its length.
pub fn neighbor_advert(req: &[u8], target: Ipv6Addr, gw: &GatewayV6, out: &mut [u8]) -> Option<usize> {
    advert(req, target, gw.mac, true, out)
}

/// The neighbour advertisement a host would send for the address the solicitation
/// `req` asks for, at `mac` (the Router flag clear): for endpoints on other hosts. `req`
/// must have been accepted by [`solicit_target`].
pub fn neighbor_advert_for(req: &[u8], mac: MacAddr, out: &mut [u8]) -> Option<usize> {
    let target = ns_target(&parse(req)?)?;
    advert(req, target, mac, false, out)
}

/// The target of a well-formed neighbour solicitation in `frame` (hop limit 255,
/// ICMPv6 checksum verified).
pub fn solicit_target(frame: &[u8]) -> Option<Ipv6Addr> {
    let v = parse(frame)?;
    if v.payload.first() != Some(&ND_NEIGHBOR_SOLICIT) || v.hop != 255 || icmp6_sum(&v.src, &v.dst, v.payload) != 0 {
        return None;
    }
    ns_target(&v)
}

/// The target address field of the solicitation `v`.
fn ns_target(v: &V6<'_>) -> Option<Ipv6Addr> {
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(v.payload.get(8..24)?).ok()?))
}

fn advert(req: &[u8], target: Ipv6Addr, mac: MacAddr, router: bool, out: &mut [u8]) -> Option<usize> {
    let v = parse(req)?;
    if out.len() < NA_LEN {
        return None;
    }
    let src_mac = eth::src(req);
    // Unspecified source (DAD): answer to all-nodes.
    let (dst, dst_mac, solicited) = if v.src.is_unspecified() {
        (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), MacAddr([0x33, 0x33, 0, 0, 0, 1]), false)
    } else {
        (v.src, src_mac, true)
    };
    write_headers(out, dst_mac, mac, target, dst, 255, 32);
    let b = &mut out[14 + IPV6_HDR..14 + IPV6_HDR + 32];
    b.fill(0);
    b[0] = ND_NEIGHBOR_ADVERT;
    // Router (for the gateway), solicited, override.
    b[4] = if router { 0x80 } else { 0 } | if solicited { 0x40 } else { 0 } | 0x20;
    b[8..24].copy_from_slice(&target.octets());
    b[24] = 2; // target link-layer address option
    b[25] = 1;
    b[26..32].copy_from_slice(&mac.0);
    Some(finish_icmp(out, target, dst, 32))
}

/// Turns the echo request in `frame` into its reply in place; returns the new length.
pub fn echo_reply_in_place(frame: &mut [u8]) -> Option<usize> {
    let (l3, src, dst, plen) = {
        let v = parse(frame)?;
        (v.l3, v.src, v.dst, v.payload.len())
    };
    let (dm, sm) = (eth::dst(frame), eth::src(frame));
    eth::set_dst(frame, sm);
    eth::set_src(frame, dm);
    let h = frame.get_mut(l3..l3 + IPV6_HDR)?;
    h[7] = 64;
    h[8..24].copy_from_slice(&dst.octets());
    h[24..40].copy_from_slice(&src.octets());
    let body = frame.get_mut(l3 + IPV6_HDR..l3 + IPV6_HDR + plen)?;
    body[0] = ICMP6_ECHO_REPLY;
    body[2] = 0;
    body[3] = 0;
    let c = icmp6_sum(&dst, &src, body);
    body[2..4].copy_from_slice(&c.to_be_bytes());
    Some(l3 + IPV6_HDR + plen)
}

/// Length of a router advertisement frame.
pub const RA_LEN: usize = 14 + IPV6_HDR + 16 + 32 + 8 + 8;

/// Writes a router advertisement (from the link-local address to the soliciting host,
/// or to all nodes) with the network's prefix (on-link, not for autoconfiguration:
/// addresses come from IPAM), the MTU and our link-layer address. Returns its length.
pub fn router_advert(req: Option<&[u8]>, gw: &GatewayV6, out: &mut [u8]) -> Option<usize> {
    if out.len() < RA_LEN {
        return None;
    }
    let (dst, dst_mac) = match req.and_then(parse) {
        Some(v) if !v.src.is_unspecified() => (v.src, eth::src(req?)),
        _ => (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), MacAddr([0x33, 0x33, 0, 0, 0, 1])),
    };
    let blen = 16 + 32 + 8 + 8;
    write_headers(out, dst_mac, gw.mac, gw.ll, dst, 255, blen);
    let b = &mut out[14 + IPV6_HDR..14 + IPV6_HDR + blen];
    b.fill(0);
    b[0] = ND_ROUTER_ADVERT;
    b[4] = 64; // cur hop limit
    b[6..8].copy_from_slice(&1800u16.to_be_bytes()); // router lifetime (s)
    // Prefix information: on-link (L), no autonomous configuration.
    let p = &mut b[16..48];
    p[0] = 3;
    p[1] = 4;
    p[2] = gw.prefix_len;
    p[3] = 0x80;
    p[4..8].copy_from_slice(&86400u32.to_be_bytes());
    p[8..12].copy_from_slice(&14400u32.to_be_bytes());
    let mask = if gw.prefix_len == 0 { 0 } else { u128::MAX << (128 - gw.prefix_len.min(128) as u32) };
    p[16..32].copy_from_slice(&(u128::from(gw.ip) & mask).to_be_bytes());
    let m = &mut b[48..56];
    m[0] = 5;
    m[1] = 1;
    m[4..8].copy_from_slice(&gw.mtu.to_be_bytes());
    let s = &mut b[56..64];
    s[0] = 1;
    s[1] = 1;
    s[2..8].copy_from_slice(&gw.mac.0);
    Some(finish_icmp(out, gw.ll, dst, blen))
}

/// A neighbour solicitation from `src` (at `src_mac`) for `target`, to its
/// solicited-node address, checksummed (for tests).
#[cfg(test)]
pub(crate) fn solicitation(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut body = vec![0u8; 32];
    body[0] = ND_NEIGHBOR_SOLICIT;
    body[8..24].copy_from_slice(&target.octets());
    body[24] = 1;
    body[25] = 1;
    body[26..32].copy_from_slice(&src_mac.0);
    let dst = solicited_node(target);
    let c = icmp6_sum(&src, &dst, &body);
    body[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14 + IPV6_HDR];
    let o = dst.octets();
    write_headers(&mut f, MacAddr([0x33, 0x33, 0xff, o[13], o[14], o[15]]), src_mac, src, dst, 255, body.len());
    f.extend_from_slice(&body);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice};

    fn gw() -> GatewayV6 {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        GatewayV6 { ip: "fd00:10::1".parse().unwrap(), prefix_len: 64, ll: link_local(mac), mac, mtu: 1500 }
    }

    const SB_MAC: [u8; 6] = [2, 0x42, 0, 0, 0, 2];
    fn sb_ip() -> Ipv6Addr {
        "fd00:10::2".parse().unwrap()
    }

    fn ns(target: Ipv6Addr) -> Vec<u8> {
        solicitation(MacAddr(SB_MAC), sb_ip(), target)
    }

    #[test]
    fn link_local_is_eui64() {
        assert_eq!(link_local(MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02])).to_string(), "fe80::42:acff:fe11:2");
        assert_eq!(solicited_node("fd00::1:2:3".parse().unwrap()).to_string(), "ff02::1:ff02:3");
    }

    /// The flags word, source and destination of the neighbour advertisement `f`
    /// (etherparse as the oracle; its checksum verified).
    fn advert_flags(f: &[u8]) -> ([u8; 4], [u8; 16], [u8; 16]) {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let (s, d) = match p.net.unwrap() {
            etherparse::NetSlice::Ipv6(ip) => (ip.header().source(), ip.header().destination()),
            _ => panic!("not IPv6"),
        };
        match p.transport.unwrap() {
            TransportSlice::Icmpv6(i) => {
                assert_eq!(i.checksum(), i.icmp_type().calc_checksum(s, d, i.payload()).unwrap());
                match i.icmp_type() {
                    Icmpv6Type::Unknown { type_u8: 136, code_u8: 0, bytes5to8 } => (bytes5to8, s, d),
                    t => panic!("not a neighbour advertisement: {t:?}"),
                }
            }
            _ => panic!("not icmpv6"),
        }
    }

    #[test]
    fn answers_for_another_host_without_the_router_flag() {
        let t: Ipv6Addr = "fd00:10::77".parse().unwrap();
        let req = ns(t);
        assert_eq!(solicit_target(&req), Some(t));
        let mut bad = req.clone();
        bad[14 + 7] = 64; // hop limit
        assert_eq!(solicit_target(&bad), None);
        let mut bad = req.clone();
        bad[14 + 40 + 20] ^= 1; // checksum no longer matches
        assert_eq!(solicit_target(&bad), None);
        let mac = MacAddr([2, 0x42, 0, 0, 0, 0x77]);
        let mut out = [0u8; 128];
        let n = neighbor_advert_for(&req, mac, &mut out).unwrap();
        // Solicited and override, not a router.
        assert_eq!(advert_flags(&out[..n]), ([0x60, 0, 0, 0], t.octets(), sb_ip().octets()));
        assert_eq!(&out[0..6], &SB_MAC);
        assert_eq!(&out[6..12], &mac.0);
        assert_eq!(&out[14 + 40 + 26..14 + 40 + 32], &mac.0, "target link-layer address option");
    }

    #[test]
    fn answers_neighbor_solicitation_for_both_addresses() {
        for t in [gw().ip, gw().ll] {
            let req = ns(t);
            assert_eq!(classify(&req, &gw()), Local6::NeighborSolicit { target: t });
            let mut out = [0u8; 128];
            let n = neighbor_advert(&req, t, &gw(), &mut out).unwrap();
            assert_eq!(advert_flags(&out[..n]).0, [0xe0, 0, 0, 0]);
            assert_eq!(&out[0..6], &SB_MAC);
        }
        assert_eq!(classify(&ns("fd00:10::9".parse().unwrap()), &gw()), Local6::NotForUs);
        let mut bad = ns(gw().ip);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(classify(&bad, &gw()), Local6::Malformed);
    }

    #[test]
    fn echo_and_router_advert() {
        let b = PacketBuilder::ethernet2(SB_MAC, gw().mac.0).ipv6(sb_ip().octets(), gw().ip.octets(), 64).icmpv6_echo_request(3, 4);
        let mut f = Vec::new();
        b.write(&mut f, &[9u8; 40]).unwrap();
        assert_eq!(classify(&f, &gw()), Local6::EchoRequest);
        let n = echo_reply_in_place(&mut f).unwrap();
        let p = SlicedPacket::from_ethernet(&f[..n]).unwrap();
        match p.transport.unwrap() {
            TransportSlice::Icmpv6(i) => {
                assert_eq!(i.icmp_type(), Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 3, seq: 4 }));
                assert_eq!(i.checksum(), i.icmp_type().calc_checksum(gw().ip.octets(), sb_ip().octets(), i.payload()).unwrap());
            }
            _ => panic!(),
        }
        let mut out = [0u8; 256];
        let n = router_advert(None, &gw(), &mut out).unwrap();
        assert_eq!(n, RA_LEN);
        let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        match p.transport.unwrap() {
            TransportSlice::Icmpv6(i) => {
                let (s, d) = match p.net.unwrap() {
                    etherparse::NetSlice::Ipv6(ip) => (ip.header().source(), ip.header().destination()),
                    _ => panic!(),
                };
                assert_eq!(i.checksum(), i.icmp_type().calc_checksum(s, d, i.payload()).unwrap());
            }
            _ => panic!(),
        }
        for len in 0..f.len() {
            let _ = classify(&f[..len], &gw());
        }
    }
}
