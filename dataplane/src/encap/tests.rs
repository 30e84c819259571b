//! Byte-level tests of VXLAN, GRE and UDP encapsulation with etherparse as the oracle.

use std::net::Ipv4Addr;

use etherparse::IpNumber;

use super::tests_util::*;
use super::*;
use crate::offload::csum;
use crate::vnet::{VnetHdr, GSO_TCPV4};

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fn peer(t: Tunnel) -> Peer {
    Peer { remote: REMOTE, tunnel: t }
}

/// The sender's endpoint for a tunnel kind.
fn tx_vtep(t: Tunnel) -> Vtep {
    match t {
        Tunnel::Vxlan(_) => Vtep::vxlan(LOCAL),
        Tunnel::Gre(_) => Vtep::gre(LOCAL),
        Tunnel::Udp => Vtep::udp(LOCAL),
    }
}

/// The receiver's endpoint for a tunnel kind.
fn rx_vtep(t: Tunnel) -> Vtep {
    match t {
        Tunnel::Vxlan(_) => Vtep::vxlan(REMOTE),
        Tunnel::Gre(_) => Vtep::gre(REMOTE),
        Tunnel::Udp => Vtep::udp(REMOTE),
    }
}

/// Encapsulates `frame` with `vtep` and returns the outer IPv4 packet's bytes.
fn encap_vec(vtep: &mut Vtep, t: Tunnel, frame: &[u8]) -> Vec<u8> {
    let mut b = in_buf(frame);
    let e = encap(vtep, &peer(t), &mut b, HEADROOM, frame.len(), &VnetHdr::default()).unwrap();
    b[e.ip_range()].to_vec()
}

fn decap_of(t: Tunnel, pkt: &[u8]) -> Result<Decapped, DecapError> {
    let v = rx_vtep(t);
    decap(&v, v.kind_of(t), pkt)
}

/// Recomputes the outer IPv4 header checksum after a test mutated the header.
fn fix_ip(pkt: &mut [u8]) {
    let ihl = (pkt[0] & 15) as usize * 4;
    pkt[10] = 0;
    pkt[11] = 0;
    let c = csum::checksum(&pkt[..ihl.min(pkt.len())]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn vxlan_layout_byte_by_byte() {
    let frame = tcp4(None, 1234, 80, 1, b"hello vxlan");
    let mut v = Vtep::vxlan(LOCAL);
    v.next_id = 0x1234;
    let mut b = in_buf(&frame);
    let e =
        encap(&mut v, &peer(Tunnel::Vxlan(vni(0x0a0b0c))), &mut b, HEADROOM, frame.len(), &VnetHdr::default()).unwrap();
    assert_eq!(e.off, HEADROOM - 36);
    assert_eq!(e.len, frame.len() + 36);
    assert_eq!(e.payload_off, HEADROOM - 8);
    let pkt = &b[e.ip_range()];
    let (ip, rest) = outer_ipv4(pkt);
    assert_eq!(ip.protocol, IpNumber::UDP);
    assert_eq!((ip.source, ip.destination), (LOCAL.octets(), REMOTE.octets()));
    assert!(ip.dont_fragment && !ip.more_fragments);
    assert_eq!(ip.time_to_live, 64);
    assert_eq!(ip.identification, 0x1234);
    assert_eq!(v.next_id, 0x1235);
    assert_eq!(pkt[0], 0x45, "no options");
    let (u, payload) = outer_udp(&ip, rest);
    assert_eq!(u.destination_port, 4789);
    assert_eq!(u.source_port, e.src_port);
    assert!(u.source_port >= 49152);
    assert_eq!(u.checksum, 0, "zero UDP checksum by default");
    // RFC 7348 §5: flags 0x08, 24 reserved bits, VNI, 8 reserved bits.
    assert_eq!(&payload[..8], &[0x08, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0]);
    assert_eq!(&payload[8..], &frame[..]);
    assert_eq!(&b[e.payload_range()], payload);
}

#[test]
fn vxlan_udp_checksum_option() {
    let frame = udp4(Some(7), 53, 5353, &pattern(301));
    let mut v = Vtep::vxlan(LOCAL);
    v.tx_csum = true;
    let t = Tunnel::Vxlan(vni(42));
    let mut pkt = encap_vec(&mut v, t, &frame);
    let (ip, rest) = outer_ipv4(&pkt);
    let (u, _) = outer_udp(&ip, rest);
    assert_ne!(u.checksum, 0, "checksum computed and verified by etherparse");
    assert_eq!(decap_of(t, &pkt).unwrap().inner_len, frame.len());
    let last = pkt.len() - 1;
    pkt[last] ^= 0x40;
    assert_eq!(decap_of(t, &pkt), Err(DecapError::UdpChecksum));
    let mut lax = rx_vtep(t);
    lax.verify_csum = false;
    assert!(vxlan::decap(&lax, &pkt).is_ok());
}

#[test]
fn gre_layout_byte_by_byte() {
    let frame = tcp4(Some(100), 1, 2, 3, b"gre payload");
    for (key, c) in [(None, false), (Some(0x0102_0304), false), (Some(7), true), (None, true)] {
        let mut v = Vtep::gre(LOCAL);
        v.tx_csum = c;
        let t = Tunnel::Gre(key);
        let mut b = in_buf(&frame);
        let e = encap(&mut v, &peer(t), &mut b, HEADROOM, frame.len(), &VnetHdr::default()).unwrap();
        let hl = 20 + gre::header_len(key.is_some(), c);
        assert_eq!(e.off, HEADROOM - hl);
        assert_eq!(e.payload_off, e.off + 20);
        assert_eq!(e.src_port, 0);
        let pkt = &b[e.ip_range()];
        let (ip, g) = outer_ipv4(pkt);
        assert_eq!(ip.protocol, IpNumber::GRE);
        let mut want = vec![(if c { 0x80 } else { 0 }) | if key.is_some() { 0x20 } else { 0 }, 0, 0x65, 0x58];
        if c {
            want.extend_from_slice(&g[4..6]);
            want.extend_from_slice(&[0, 0]);
            assert_eq!(csum::checksum(g), 0, "GRE checksum covers header and payload");
        }
        if let Some(k) = key {
            want.extend_from_slice(&k.to_be_bytes());
        }
        assert_eq!(&g[..want.len()], &want[..], "key {key:?} csum {c}");
        assert_eq!(&g[want.len()..], &frame[..]);
        let d = decap_of(t, pkt).unwrap();
        assert_eq!(d.tunnel, t);
        assert_eq!(&pkt[d.inner_range()], &frame[..]);
        assert_eq!((d.outer_src, d.outer_dst, d.src_port), (LOCAL, REMOTE, 0));
    }
}

#[test]
fn udp_layout_strips_l2() {
    for vlan in [None, Some(5)] {
        let frame = tcp4(vlan, 4000, 22, 9, b"routed");
        let l3 = if vlan.is_some() { 18 } else { 14 };
        let mut v = Vtep::udp(LOCAL);
        let mut b = in_buf(&frame);
        let e = encap(&mut v, &peer(Tunnel::Udp), &mut b, HEADROOM, frame.len(), &VnetHdr::default()).unwrap();
        assert_eq!(e.off, HEADROOM + l3 - 28, "outer headers end where the inner IP packet starts");
        let pkt = &b[e.ip_range()];
        let (ip, rest) = outer_ipv4(pkt);
        let (u, payload) = outer_udp(&ip, rest);
        assert_eq!(u.destination_port, 8285);
        assert_eq!(payload, &frame[l3..]);
        assert_eq!(e.payload_range().len(), frame.len() - l3);
    }
    // Padding after the IP packet is not sent.
    let mut frame = arp_request(MAC_A, IP_A, IP_B);
    frame.truncate(14);
    frame.extend_from_slice(&tcp4(None, 1, 2, 3, b"")[14..]);
    frame[12..14].copy_from_slice(&[0x08, 0]);
    let ip_len = frame.len() - 14;
    frame.extend_from_slice(&[0; 6]);
    let mut b = in_buf(&frame);
    let e =
        encap(&mut Vtep::udp(LOCAL), &peer(Tunnel::Udp), &mut b, HEADROOM, frame.len(), &VnetHdr::default()).unwrap();
    assert_eq!(e.len, 28 + ip_len);
    // Non-IP frames cannot go over IP-in-UDP.
    let arp = arp_request(MAC_A, IP_A, IP_B);
    let mut b = in_buf(&arp);
    let r = encap(&mut Vtep::udp(LOCAL), &peer(Tunnel::Udp), &mut b, HEADROOM, arp.len(), &VnetHdr::default());
    assert_eq!(r, Err(EncapError::InnerNotIp));
    let ip = tcp4(None, 1, 2, 3, b"x")[14..].to_vec();
    let mut b = in_buf(&ip);
    let e = udp::encap_ip(&mut Vtep::udp(LOCAL), REMOTE, &mut b, HEADROOM, ip.len()).unwrap();
    assert_eq!(&b[e.payload_range()], &ip[..]);
    assert_eq!(udp::encap_ip(&mut Vtep::udp(LOCAL), REMOTE, &mut b, HEADROOM, 0), Err(EncapError::InnerNotIp));
}

#[test]
fn round_trips_all_kinds_plain_and_vlan() {
    let tunnels =
        [Tunnel::Vxlan(vni(1)), Tunnel::Vxlan(vni(Vni::MAX)), Tunnel::Gre(None), Tunnel::Gre(Some(9)), Tunnel::Udp];
    let frames = [
        tcp4(None, 1000, 80, 5, b"plain tcp"),
        tcp4(Some(42), 1000, 80, 5, b"tagged tcp"),
        udp4(Some(4095), 7, 8, &pattern(1400)),
        tcp6(9, 10, 11, b"v6"),
        arp_request(MAC_A, IP_A, IP_B),
    ];
    for t in tunnels {
        for csum_on in [false, true] {
            for f in &frames {
                let is_arp = f[12..14] == [0x08, 0x06];
                let mut v = tx_vtep(t);
                v.tx_csum = csum_on;
                let mut b = in_buf(f);
                let r = encap(&mut v, &peer(t), &mut b, HEADROOM, f.len(), &VnetHdr::default());
                if t == Tunnel::Udp && is_arp {
                    assert_eq!(r, Err(EncapError::InnerNotIp));
                    continue;
                }
                let e = r.unwrap();
                let pkt = b[e.ip_range()].to_vec();
                let d = decap_of(t, &pkt).unwrap();
                assert_eq!(d.tunnel, t);
                assert_eq!((d.outer_src, d.outer_dst), (LOCAL, REMOTE));
                assert_eq!(d.src_port, e.src_port);
                let inner = &pkt[d.inner_range()];
                if t == Tunnel::Udp {
                    let (l3, _) = udp::locate_ip(f).unwrap();
                    assert_eq!(inner, &f[l3..]);
                    // Rebuild an Ethernet header in front of it, in the same buffer.
                    let ip_off = e.off + d.inner_off;
                    let (off, len) = prepend_eth(&mut b, ip_off, d.inner_len, MacAddr(MAC_B), MacAddr(MAC_A)).unwrap();
                    let fr = &b[off..off + len];
                    assert_eq!(&fr[..12], &[MAC_B, MAC_A].concat()[..]);
                    assert_eq!(&fr[12..14], &f[l3 - 2..l3], "ethertype from the IP version");
                    assert_eq!(&fr[14..], &f[l3..]);
                } else {
                    assert_eq!(inner, &f[..]);
                }
                // The socket-payload path gives the same inner bytes.
                let p = &pkt[e.payload_off - e.off..];
                let dp = match t {
                    Tunnel::Vxlan(_) => vxlan::decap_payload(p).unwrap(),
                    Tunnel::Udp => udp::decap_payload(p).unwrap(),
                    Tunnel::Gre(_) => continue,
                };
                assert_eq!(dp.tunnel, t);
                assert_eq!(dp.outer_src, Ipv4Addr::UNSPECIFIED);
                assert_eq!(&p[dp.inner_range()], inner);
            }
        }
    }
}

#[test]
fn tos_inherit_fixed_and_ecn() {
    let t = Tunnel::Vxlan(vni(3));
    let tos_of = |policy: Tos, inner_tos: Option<u8>| {
        let mut f = tcp4(None, 1, 2, 3, b"x");
        if let Some(x) = inner_tos {
            set_tos4(&mut f, x);
        } else {
            f = arp_request(MAC_A, IP_A, IP_B);
        }
        let mut v = Vtep::vxlan(LOCAL);
        v.tos = policy;
        encap_vec(&mut v, t, &f)[1]
    };
    assert_eq!(tos_of(Tos::Inherit, Some(0xb8)), 0xb8);
    assert_eq!(tos_of(Tos::Inherit, Some(0xb8 | 1)), 0xb9, "ECT(1) copied");
    assert_eq!(tos_of(Tos::Inherit, Some(0xb8 | 3)), 0xba, "CE becomes ECT(0)");
    assert_eq!(tos_of(Tos::Fixed(0x20), Some(0xb8 | 2)), 0x22);
    assert_eq!(tos_of(Tos::Fixed(0x23), Some(0)), 0x20, "fixed ECN bits ignored");
    assert_eq!(tos_of(Tos::Inherit, None), 0);
    // IPv6 traffic class is inherited too.
    let mut f = tcp6(1, 2, 3, b"x");
    f[14] = 0x6b;
    f[15] = 0x80; // traffic class 0xb8
    assert_eq!(encap_vec(&mut Vtep::vxlan(LOCAL), t, &f)[1], 0xb8);
    assert_eq!(inner_tos_eth(&f), Some(0xb8));
    // Outer TOS is reported on decap.
    let mut g = tcp4(None, 1, 2, 3, b"x");
    set_tos4(&mut g, 0x48);
    let pkt = encap_vec(&mut Vtep::vxlan(LOCAL), t, &g);
    assert_eq!(decap_of(t, &pkt).unwrap().outer_tos, 0x48);
}

#[test]
fn df_ttl_and_id_counter() {
    let f = tcp4(None, 1, 2, 3, b"x");
    let t = Tunnel::Gre(None);
    let mut v = Vtep::gre(LOCAL);
    v.df = false;
    v.ttl = 5;
    v.next_id = u16::MAX;
    let a = encap_vec(&mut v, t, &f);
    let b = encap_vec(&mut v, t, &f);
    let (ia, _) = outer_ipv4(&a);
    let (ib, _) = outer_ipv4(&b);
    assert!(!ia.dont_fragment);
    assert_eq!(ia.time_to_live, 5);
    assert_eq!((ia.identification, ib.identification), (u16::MAX, 0), "wrapping counter");
}

#[test]
fn source_port_stable_per_flow_and_spread() {
    let t = Tunnel::Vxlan(vni(1));
    let mut v = Vtep::vxlan(LOCAL);
    let port = |v: &mut Vtep, f: &[u8]| {
        let pkt = encap_vec(v, t, f);
        u16::from_be_bytes([pkt[20], pkt[21]])
    };
    // One flow, different payloads/sequence numbers/ids: one port.
    let p0 = port(&mut v, &tcp4(None, 1234, 80, 1, b"a"));
    for i in 0..50u32 {
        assert_eq!(port(&mut v, &tcp4(None, 1234, 80, i * 1000, &pattern(i as usize))), p0);
    }
    // The VLAN tag is not part of the flow key, the addresses and ports are.
    assert_eq!(port(&mut v, &tcp4(Some(3), 1234, 80, 1, b"a")), p0);
    assert_ne!(port(&mut v, &tcp4(None, 1235, 80, 1, b"a")), p0);
    // The same flow over IP-in-UDP hashes its IP part the same way whether given as a
    // frame or as a bare packet.
    assert_eq!(flow_hash_ip(&tcp4(None, 1, 2, 3, b"")[14..], 9), flow_hash_ip(&tcp4(Some(1), 1, 2, 7, b"z")[18..], 9));
    // Spread over 49152..=65535.
    let mut seen = std::collections::HashSet::new();
    let mut buckets = [0u32; 16];
    let n = 20_000u32;
    for i in 0..n {
        let f = tcp4(None, 1024 + (i % 60000) as u16, 80 + (i / 60000) as u16, 0, b"");
        let p = port(&mut v, &f);
        assert!(p >= SRC_PORT_MIN);
        seen.insert(p);
        buckets[((p - SRC_PORT_MIN) / 1024) as usize] += 1;
    }
    assert!(seen.len() > 11_000, "only {} distinct ports for {n} flows", seen.len());
    let mean = n / 16;
    for b in buckets {
        assert!(b > mean * 85 / 100 && b < mean * 115 / 100, "uneven buckets {buckets:?}");
    }
    // The seed changes the mapping; a one-port range pins it.
    let mut w = Vtep::vxlan(LOCAL);
    w.hash_seed = 0xdead_beef;
    assert_ne!(port(&mut w, &tcp4(None, 1234, 80, 1, b"a")), p0);
    w.src_port_min = 5000;
    w.src_port_max = 5000;
    assert_eq!(port(&mut w, &tcp4(None, 1, 2, 3, b"")), 5000);
    assert_eq!(w.src_port_for(u32::MAX), 5000);
    assert_eq!(Vtep::vxlan(LOCAL).src_port_for(u32::MAX), 65535);
    assert_eq!(Vtep::vxlan(LOCAL).src_port_for(0), 49152);
}

#[test]
fn needs_csum_completed_before_encap() {
    for t in [Tunnel::Vxlan(vni(5)), Tunnel::Gre(Some(1)), Tunnel::Udp] {
        for f in [tcp4(Some(8), 5, 6, 7, &pattern(999)), udp4(None, 5, 6, &pattern(333))] {
            let mut f = f;
            let l3 = if f[12] == 0x81 { 18 } else { 14 };
            let vh = make_partial(&mut f, l3);
            let mut b = in_buf(&f);
            let mut v = tx_vtep(t);
            let e = encap(&mut v, &peer(t), &mut b, HEADROOM, f.len(), &vh).unwrap();
            let pkt = &b[e.ip_range()];
            let d = decap_of(t, pkt).unwrap();
            if t == Tunnel::Udp {
                let mut fr = f[..l3].to_vec();
                fr.extend_from_slice(&pkt[d.inner_range()]);
                inner_ok(&fr);
            } else {
                inner_ok(&pkt[d.inner_range()]);
            }
        }
    }
}

#[test]
fn encap_refuses_gso_and_bad_bounds() {
    let f = tcp4(None, 1, 2, 3, &pattern(3000));
    let t = Tunnel::Vxlan(vni(1));
    let mut v = Vtep::vxlan(LOCAL);
    let gso = VnetHdr { gso_type: GSO_TCPV4, gso_size: 1000, ..VnetHdr::default() };
    let mut b = in_buf(&f);
    assert_eq!(encap(&mut v, &peer(t), &mut b, HEADROOM, f.len(), &gso), Err(EncapError::NeedsSegmentation));
    let d = VnetHdr::default();
    assert_eq!(encap(&mut v, &peer(t), &mut b, 35, f.len(), &d), Err(EncapError::NoHeadroom));
    assert!(encap(&mut v, &peer(t), &mut b, 36, f.len(), &d).is_ok());
    let n = b.len();
    assert_eq!(encap(&mut v, &peer(t), &mut b, HEADROOM, n, &d), Err(EncapError::OutOfBounds));
    assert_eq!(encap(&mut v, &peer(t), &mut b, usize::MAX, 2, &d), Err(EncapError::OutOfBounds));
    assert_eq!(encap(&mut v, &peer(t), &mut b, HEADROOM, 10, &d), Err(EncapError::InnerTruncated));
    let big = vec![0u8; HEADROOM + 65500];
    let mut big = big;
    assert_eq!(encap(&mut v, &peer(t), &mut big, HEADROOM, 65500, &d), Err(EncapError::TooLong));
    assert_eq!(v.next_id, 1, "only the successful call took an id");
    let bad_csum = VnetHdr { flags: crate::vnet::F_NEEDS_CSUM, csum_start: 60000, ..VnetHdr::default() };
    assert!(matches!(encap(&mut v, &peer(t), &mut b, HEADROOM, f.len(), &bad_csum), Err(EncapError::Offload(_))));
}

#[test]
fn mtu_math() {
    let gk = EncapKind::Gre { key: true, csum: false };
    let g = EncapKind::Gre { key: false, csum: false };
    assert_eq!(overhead(EncapKind::Vxlan), 50);
    assert_eq!(overhead(gk), 42);
    assert_eq!(overhead(g), 38);
    assert_eq!(overhead(EncapKind::Gre { key: true, csum: true }), 46);
    assert_eq!(overhead(EncapKind::Udp), 28);
    assert_eq!(overlay_mtu(1500, EncapKind::Vxlan), 1450);
    assert_eq!(overlay_mtu(1500, gk), 1458);
    assert_eq!(overlay_mtu(1500, g), 1462);
    assert_eq!(overlay_mtu(1500, EncapKind::Udp), 1472);
    assert_eq!(overlay_mtu(9000, EncapKind::Vxlan), 8950);
    assert_eq!(overlay_mtu(20, EncapKind::Vxlan), 0);
    let v = Vtep::gre(LOCAL);
    assert_eq!(v.kind_of(Tunnel::Gre(Some(1))), gk);
    // A frame of the overlay MTU makes an outer packet of exactly the underlay MTU.
    for (t, k) in [(Tunnel::Vxlan(vni(1)), EncapKind::Vxlan), (Tunnel::Gre(Some(1)), gk), (Tunnel::Udp, EncapKind::Udp)]
    {
        let payload = overlay_mtu(1500, k) as usize - 20 - 8;
        let f = udp4(None, 1, 2, &pattern(payload));
        assert_eq!(encap_vec(&mut tx_vtep(t), t, &f).len(), 1500, "{t:?}");
    }
}

#[test]
fn vni_and_error_tables() {
    assert_eq!(Vni::new(0x00ff_ffff).map(Vni::get), Some(0x00ff_ffff));
    assert_eq!(Vni::new(0x0100_0000), None);
    assert_eq!(DecapError::InnerNotIp.index() + 1, DecapError::COUNT);
    assert_eq!(DecapError::UdpChecksum.to_string(), "bad udp checksum");
    assert_eq!(EncapError::Offload(crate::offload::OffloadError::Truncated).as_str(), "truncated frame");
}

#[test]
fn prepend_eth_checks() {
    let ip6 = tcp6(1, 2, 3, b"x")[14..].to_vec();
    let mut b = in_buf(&ip6);
    let (off, len) = prepend_eth(&mut b, HEADROOM, ip6.len(), MacAddr(MAC_A), MacAddr(MAC_B)).unwrap();
    assert_eq!((off, len), (HEADROOM - 14, ip6.len() + 14));
    assert_eq!(&b[off + 12..off + 14], &[0x86, 0xdd]);
    let (m1, m2) = (MacAddr(MAC_A), MacAddr(MAC_B));
    assert_eq!(prepend_eth(&mut b, 13, 10, m1, m2), Err(EncapError::NoHeadroom));
    let n = b.len();
    assert_eq!(prepend_eth(&mut b, HEADROOM, n, m1, m2), Err(EncapError::OutOfBounds));
    assert_eq!(prepend_eth(&mut b, HEADROOM, 0, m1, m2), Err(EncapError::InnerNotIp));
    assert_eq!(prepend_eth(&mut b, 20, 1, m1, m2), Err(EncapError::InnerNotIp));
}

/// A valid packet of each kind for the malformed-input tests.
fn valid(t: Tunnel) -> Vec<u8> {
    encap_vec(&mut tx_vtep(t), t, &tcp4(None, 1, 2, 3, b"abcdefgh"))
}

#[test]
fn decap_malformed_outer() {
    for t in [Tunnel::Vxlan(vni(1)), Tunnel::Gre(Some(2)), Tunnel::Udp] {
        let ok = valid(t);
        assert!(decap_of(t, &ok).is_ok());
        let case = |f: &dyn Fn(&mut Vec<u8>), fix: bool, want: DecapError| {
            let mut p = ok.clone();
            f(&mut p);
            if fix {
                fix_ip(&mut p);
            }
            assert_eq!(decap_of(t, &p), Err(want), "{t:?}");
        };
        case(&|p| p.truncate(19), false, DecapError::Truncated);
        case(&|p| p[0] = 0x65, true, DecapError::NotIpv4);
        case(&|p| p[0] = 0x44, true, DecapError::BadIpHeader);
        case(&|p| p[2..4].copy_from_slice(&19u16.to_be_bytes()), true, DecapError::BadIpHeader);
        case(&|p| p[2] = 0xff, true, DecapError::Truncated);
        case(&|p| p[8] ^= 1, false, DecapError::IpChecksum);
        case(&|p| p[6] |= 0x20, true, DecapError::Fragment);
        case(&|p| p[7] = 8, true, DecapError::Fragment);
        case(&|p| p[19] = 99, true, DecapError::NotForUs);
        case(&|p| p[9] = 6, true, DecapError::WrongProtocol);
        // Trailing bytes after the IP total length are ignored.
        let mut padded = ok.clone();
        padded.extend_from_slice(&[0xee; 9]);
        assert_eq!(decap_of(t, &padded).unwrap(), decap_of(t, &ok).unwrap());
        // Every truncation is an error, never a panic or a wrong range.
        for n in 0..ok.len() {
            assert!(decap_of(t, &ok[..n]).is_err(), "{t:?} len {n}");
        }
    }
    // Any local address accepted when local_ip is unspecified.
    let t = Tunnel::Vxlan(vni(1));
    let mut p = valid(t);
    p[19] = 99;
    fix_ip(&mut p);
    assert!(vxlan::decap(&Vtep::vxlan(Ipv4Addr::UNSPECIFIED), &p).is_ok());
}

#[test]
fn decap_malformed_udp_and_vxlan() {
    for t in [Tunnel::Vxlan(vni(1)), Tunnel::Udp] {
        let ok = valid(t);
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = ok.clone();
            f(&mut p);
            decap_of(t, &p)
        };
        assert_eq!(bad(&|p| p[22..24].copy_from_slice(&[0x12, 0x34])), Err(DecapError::WrongPort));
        assert_eq!(bad(&|p| p[24..26].copy_from_slice(&7u16.to_be_bytes())), Err(DecapError::BadUdpLength));
        assert_eq!(bad(&|p| p[24..26].copy_from_slice(&0xfff0u16.to_be_bytes())), Err(DecapError::BadUdpLength));
        assert_eq!(bad(&|p| p[26] = 1), Err(DecapError::UdpChecksum));
    }
    let t = Tunnel::Vxlan(vni(1));
    let ok = valid(t);
    let mut p = ok.clone();
    p[28] = 0xf7; // every flag but I
    assert_eq!(decap_of(t, &p), Err(DecapError::VxlanFlags));
    // Reserved bits are ignored on receive (RFC 7348 §5).
    let mut p = ok.clone();
    p[28..36].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xff]);
    assert_eq!(decap_of(t, &p).unwrap().tunnel, Tunnel::Vxlan(vni(1)));
    // UDP length shorter than the IP payload: the UDP length wins.
    let mut p = ok.clone();
    let ulen = (p.len() - 20 - 1) as u16;
    p[24..26].copy_from_slice(&ulen.to_be_bytes());
    assert_eq!(decap_of(t, &p).unwrap().inner_len, p.len() - 36 - 1);
    // Less than an Ethernet header inside.
    let mut p = ok[..36 + 13].to_vec();
    p[2..4].copy_from_slice(&(49u16).to_be_bytes());
    p[24..26].copy_from_slice(&(29u16).to_be_bytes());
    fix_ip(&mut p);
    assert_eq!(decap_of(t, &p), Err(DecapError::InnerTruncated));
    assert_eq!(vxlan::decap_payload(&[0x08, 0, 0, 0, 0, 0, 1, 0]), Err(DecapError::InnerTruncated));
    assert_eq!(vxlan::decap_payload(&[0x08; 7]), Err(DecapError::Truncated));
    // IP-in-UDP payloads must be IP.
    let t = Tunnel::Udp;
    let mut p = valid(t);
    p[28] = 0x55;
    assert_eq!(decap_of(t, &p), Err(DecapError::InnerNotIp));
    p[28] = 0x45;
    p[30..32].copy_from_slice(&0x0fffu16.to_be_bytes());
    assert_eq!(decap_of(t, &p), Err(DecapError::InnerTruncated));
    assert_eq!(udp::decap_payload(&[0x60; 39]), Err(DecapError::InnerTruncated));
    assert_eq!(udp::decap_payload(&[]), Err(DecapError::InnerNotIp));
}

#[test]
fn decap_outer_ip_options_accepted() {
    let t = Tunnel::Vxlan(vni(77));
    let ok = valid(t);
    let mut p = ok[..20].to_vec();
    p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    p.extend_from_slice(&ok[20..]);
    p[0] = 0x46;
    let n = p.len() as u16;
    p[2..4].copy_from_slice(&n.to_be_bytes());
    fix_ip(&mut p);
    let d = decap_of(t, &p).unwrap();
    assert_eq!(d.inner_off, 24 + 16);
    assert_eq!(&p[d.inner_range()], &ok[36..]);
}

#[test]
fn gre_decap_optional_fields_and_errors() {
    let frame = tcp4(None, 1, 2, 3, b"inner");
    // Build C + K + S by hand: flags, proto, csum+reserved1, key, seq.
    let mut g = vec![0xb0, 0, 0x65, 0x58, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 9];
    g.extend_from_slice(&frame);
    let c = csum::checksum(&g);
    g[4..6].copy_from_slice(&c.to_be_bytes());
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0];
    p.extend_from_slice(&LOCAL.octets());
    p.extend_from_slice(&REMOTE.octets());
    p.extend_from_slice(&g);
    let n = p.len() as u16;
    p[2..4].copy_from_slice(&n.to_be_bytes());
    fix_ip(&mut p);
    let t = Tunnel::Gre(Some(0xcafe_babe));
    let d = decap_of(t, &p).unwrap();
    assert_eq!(d.tunnel, t);
    assert_eq!(d.inner_off, 20 + 16);
    assert_eq!(&p[d.inner_range()], &frame[..]);
    // Only S: sequence number skipped, no key.
    let mut s = vec![0x10, 0, 0x65, 0x58, 0, 0, 0, 1];
    s.extend_from_slice(&frame);
    assert_eq!(gre::parse_header(&s, true), Ok((None, 8, frame.len())));
    let bad = |flags: [u8; 2], proto: [u8; 2]| {
        let mut h = vec![flags[0], flags[1], proto[0], proto[1]];
        h.extend_from_slice(&frame);
        gre::parse_header(&h, true)
    };
    assert_eq!(bad([0, 1], [0x65, 0x58]), Err(DecapError::GreVersion));
    assert_eq!(bad([0x40, 0], [0x65, 0x58]), Err(DecapError::GreFlags));
    assert_eq!(bad([0x08, 0], [0x65, 0x58]), Err(DecapError::GreFlags));
    assert_eq!(bad([0, 0], [0x08, 0x00]), Err(DecapError::GreProtocol));
    assert!(bad([0x03, 0xf8], [0x65, 0x58]).is_ok(), "recursion/flag bits 6-12 ignored");
    assert_eq!(bad([0x80, 0], [0x65, 0x58]), Err(DecapError::GreChecksum));
    assert_eq!(gre::parse_header(&[0x20, 0, 0x65, 0x58, 1, 2], true), Err(DecapError::Truncated));
    assert_eq!(gre::parse_header(&[0, 0, 0x65, 0x58, 1, 2], true), Err(DecapError::InnerTruncated));
    let mut q = p.clone();
    q[40] ^= 1;
    assert_eq!(decap_of(t, &q), Err(DecapError::GreChecksum));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let kinds = [EncapKind::Vxlan, EncapKind::Gre { key: true, csum: false }, EncapKind::Udp];
    let valids: Vec<Vec<u8>> = [Tunnel::Vxlan(vni(1)), Tunnel::Gre(Some(2)), Tunnel::Udp].map(valid).to_vec();
    let mut lax = Vtep::vxlan(Ipv4Addr::UNSPECIFIED);
    lax.verify_csum = false;
    let (mut decapped, mut encapped, mut segmented) = (0, 0, 0);
    for i in 0..60_000 {
        let mut p = if i % 2 == 0 {
            let n = rng.below(200) as usize;
            rng.bytes(n)
        } else {
            let mut p = valids[i % 3].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(p.len() as u64) as usize;
                p[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                p.truncate(rng.below(p.len() as u64 + 1) as usize);
            }
            p
        };
        if i % 7 == 0 && p.len() >= 20 {
            p[0] = 0x45;
            p[9] = [17, 47][i % 2];
        }
        for k in kinds {
            for v in [&rx_vtep(Tunnel::Udp), &lax] {
                let mut v = v.clone();
                v.port = [4789, 8285][i % 2];
                if let Ok(d) = decap(&v, k, &p) {
                    assert!(d.inner_off + d.inner_len <= p.len());
                    decapped += 1;
                }
            }
        }
        let _ = vxlan::decap_payload(&p);
        let _ = udp::decap_payload(&p);
        let _ = gre::parse_header(&p, i % 2 == 0);
        let _ = flow_hash_eth(&p, 1);
        let _ = flow_hash_ip(&p, 1);
        let _ = inner_tos_eth(&p);
        // Random inner frames and virtio headers through encap.
        let vh = VnetHdr {
            flags: rng.below(2) as u8,
            gso_type: [0, 1, 3, 4, 5, 0x81, 9][rng.below(7) as usize],
            hdr_len: rng.next() as u16,
            gso_size: rng.below(3000) as u16,
            csum_start: rng.below(120) as u16,
            csum_offset: rng.below(40) as u16,
        };
        let t = [Tunnel::Vxlan(vni(1)), Tunnel::Gre(None), Tunnel::Udp][i % 3];
        let mut b = in_buf(&p);
        let mut tv = tx_vtep(t);
        let off = HEADROOM - rng.below(40) as usize * (i % 5 == 0) as usize;
        if let Ok(e) = encap(&mut tv, &peer(t), &mut b, off, p.len(), &vh) {
            assert!(e.end() <= b.len());
            encapped += 1;
        }
        if let Ok(mut s) = EncapSegments::new(&mut tv, peer(t), &p, &vh, 200 + rng.below(1400) as u16) {
            let mut out = vec![0u8; 1 + rng.below(2000) as usize];
            for _ in 0..4 {
                let r = if i % 2 == 0 {
                    s.next_into(&mut out, 14).map(|r| r.map(|e| e.end()))
                } else {
                    s.next_batch(&mut out).map(|r| r.map(|b| b.off + b.len))
                };
                match r {
                    Some(Ok(end)) => {
                        assert!(end <= out.len());
                        segmented += 1;
                    }
                    Some(Err(_)) => {}
                    None => break,
                }
            }
        }
    }
    assert!(decapped > 1000 && encapped > 1000 && segmented > 1000, "{decapped} {encapped} {segmented}");
}

/// `frame` with an outer Ethernet header in front (as AF_PACKET delivers it).
fn with_eth(pkt: &[u8], vlan: bool) -> Vec<u8> {
    let mut f = [MAC_B, MAC_A].concat();
    if vlan {
        f.extend_from_slice(&[0x81, 0, 0, 7]);
    }
    f.extend_from_slice(&[8, 0]);
    f.extend_from_slice(pkt);
    f
}

#[test]
fn decap_frame_follows_offload_state() {
    use crate::offload::{complete_checksum, verify_checksums};
    use crate::vnet::{F_DATA_VALID, F_NEEDS_CSUM};
    let t = Tunnel::Vxlan(vni(9));
    let kind = EncapKind::Vxlan;
    let rx = rx_vtep(t);
    // Outer UDP checksum left partial by the sender's stack (csum_start = outer UDP).
    let mut v = tx_vtep(t);
    v.tx_csum = true;
    let inner = tcp4(None, 1, 2, 3, b"partial outer");
    let mut pkt = encap_vec(&mut v, t, &inner);
    let ps = csum::pseudo_v4(LOCAL.octets(), REMOTE.octets(), 17, (pkt.len() - 20) as u16);
    pkt[26..28].copy_from_slice(&csum::fold(ps).to_be_bytes());
    assert_eq!(decap(&rx, kind, &pkt), Err(DecapError::UdpChecksum));
    for vlan in [false, true] {
        let l3 = if vlan { 18 } else { 14 };
        let f = with_eth(&pkt, vlan);
        let vh = VnetHdr { flags: F_NEEDS_CSUM, csum_start: (l3 + 20) as u16, csum_offset: 6, ..VnetHdr::default() };
        let (d, ivh) = decap_frame(&rx, kind, &f, &vh).unwrap();
        assert_eq!(&f[d.inner_range()], &inner[..]);
        assert_eq!(ivh, VnetHdr::default());
        let valid = VnetHdr { flags: F_DATA_VALID, ..VnetHdr::default() };
        assert!(decap_frame(&rx, kind, &f, &valid).is_ok());
        assert_eq!(decap_frame(&rx, kind, &f, &VnetHdr::default()).err(), Some(DecapError::UdpChecksum));
    }
    // Inner TCP checksum partial (local checksum offload): the inner frame inherits it.
    let mut inner = tcp4(None, 1, 2, 3, &pattern(500));
    let ivh_in = make_partial(&mut inner, 14);
    let pkt = encap_vec(&mut tx_vtep(t), t, &inner);
    let mut f = with_eth(&pkt, false);
    let vh = VnetHdr { csum_start: 14 + 36 + ivh_in.csum_start, ..ivh_in };
    let (d, ivh) = decap_frame(&rx, kind, &f, &vh).unwrap();
    assert_eq!(ivh, ivh_in);
    let r = d.inner_range();
    assert_eq!(verify_checksums(&f[r.clone()]), Ok(false));
    complete_checksum(&mut f[r.clone()], &ivh).unwrap();
    assert_eq!(verify_checksums(&f[r]), Ok(true));
    // Not IPv4 / too short.
    let mut arp = with_eth(&pkt, false);
    arp[12..14].copy_from_slice(&[8, 6]);
    assert_eq!(decap_frame(&rx, kind, &arp, &VnetHdr::default()).err(), Some(DecapError::NotIpv4));
    assert_eq!(decap_frame(&rx, kind, &arp[..13], &VnetHdr::default()).err(), Some(DecapError::Truncated));
    // The IPv4 header checksum is still checked on offloaded frames.
    let mut bad = with_eth(&pkt, false);
    bad[14 + 8] ^= 1;
    let vh = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() };
    assert_eq!(decap_frame(&rx, kind, &bad, &vh).err(), Some(DecapError::IpChecksum));
}
