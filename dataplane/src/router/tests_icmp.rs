//! Tests of `icmp`, with etherparse as the independent oracle.

use super::*;
use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
use etherparse::{Icmpv4Type, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, Ipv4Slice, SlicedPacket, TransportSlice};

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn fill(&mut self, b: &mut [u8]) {
        for v in b {
            *v = self.next() as u8;
        }
    }
}

fn full_checksum_ok(h: &[u8]) -> bool {
    csum::checksum(h) == 0
}

/// Sets the header checksum of `h` (IHL from byte 0) by full recomputation.
fn fix_checksum(h: &mut [u8]) {
    let hl = (h[0] & 0xf) as usize * 4;
    h[10] = 0;
    h[11] = 0;
    let c = csum::checksum(&h[..hl]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn dec_ttl_matches_full_recompute_for_every_ttl() {
    let mut rng = XorShift(0x1234_5678);
    for _ in 0..400 {
        let ihl = 5 + (rng.next() % 11) as usize;
        let mut h = vec![0u8; ihl * 4];
        rng.fill(&mut h);
        h[0] = 0x40 | ihl as u8;
        for ttl in 0..=255u8 {
            h[8] = ttl;
            fix_checksum(&mut h);
            let before = h.clone();
            match dec_ttl(&mut h) {
                Ok(()) => {
                    assert!(ttl >= 2);
                    assert_eq!(h[8], ttl - 1);
                    let mut expect = h.clone();
                    fix_checksum(&mut expect);
                    assert_eq!(h, expect, "ttl {ttl}");
                    assert!(full_checksum_ok(&h));
                }
                Err(e) => {
                    assert!(ttl <= 1);
                    assert_eq!(e, TtlError::Expired);
                    assert_eq!(h, before, "expired header left untouched");
                }
            }
        }
    }
}

/// RFC 1141's shortcut gives 0xffff where a recomputation gives 0x0000; RFC 1624 eqn. 3
/// must give 0x0000. Find headers whose decremented checksum is exactly 0 (and ones
/// whose original checksum is 0) by trying every ID value.
#[test]
fn dec_ttl_checksum_zero_corner_cases() {
    let mut rng = XorShift(77);
    let (mut after_zero, mut before_zero) = (0, 0);
    for _ in 0..4 {
        let mut h = [0u8; 20];
        rng.fill(&mut h);
        h[0] = 0x45;
        h[8] = 2 + (rng.next() % 250) as u8;
        for id in 0..=u16::MAX {
            h[4..6].copy_from_slice(&id.to_be_bytes());
            fix_checksum(&mut h);
            let orig_c = u16::from_be_bytes([h[10], h[11]]);
            let mut d = h;
            dec_ttl(&mut d).unwrap();
            let mut expect = d;
            fix_checksum(&mut expect);
            let c = u16::from_be_bytes([d[10], d[11]]);
            if c == 0 || orig_c == 0 {
                assert_eq!(d, expect, "id {id}");
                after_zero += (c == 0) as u32;
                before_zero += (orig_c == 0) as u32;
            }
            // 0xffff never results from a recomputation over non-zero data.
            assert_ne!(c, 0xffff);
        }
    }
    assert!(after_zero >= 4 && before_zero >= 4, "{after_zero} {before_zero}");
}

#[test]
fn dec_ttl_on_etherparse_packets() {
    for ttl in [2u8, 3, 64, 128, 255] {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 1, 2], ttl).udp(1000, 53).write(&mut f, &[7; 33]).unwrap();
        dec_ttl(&mut f).unwrap();
        let ip = Ipv4Slice::from_slice(&f).unwrap();
        let h = ip.header().to_header();
        assert_eq!(h.time_to_live, ttl - 1);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }
    assert_eq!(dec_ttl(&mut [0x45; 19]), Err(TtlError::Malformed));
    assert_eq!(dec_ttl(&mut []), Err(TtlError::Malformed));
}

/// A UDP packet with `payload` bytes, optional IP options, fragment fields.
fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: usize, options: &[u8], frag: (bool, u16)) -> Vec<u8> {
    let mut h = Ipv4Header::new((8 + payload) as u16, 9, IpNumber::UDP, src, dst).unwrap();
    h.options = Ipv4Options::try_from(options).unwrap();
    h.total_len = (h.header_len() + 8 + payload) as u16;
    h.more_fragments = frag.0;
    h.fragment_offset = IpFragOffset::try_new(frag.1).unwrap();
    h.dont_fragment = false;
    h.dscp = etherparse::Ipv4Dscp::try_new(0x2e).unwrap();
    let mut v = Vec::new();
    h.write(&mut v).unwrap();
    v.extend_from_slice(&1234u16.to_be_bytes());
    v.extend_from_slice(&53u16.to_be_bytes());
    v.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend((0..payload).map(|i| i as u8));
    v
}

fn icmp_packet(src: [u8; 4], dst: [u8; 4], t: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4(src, dst, 64).icmpv4(t).write(&mut v, payload).unwrap();
    v
}

/// Parses an error with etherparse, checks both checksums and the quote; returns the type.
fn check_error(out: &[u8], orig: &[u8], src: [u8; 4]) -> Icmpv4Type {
    assert!(out.len() <= MAX_ERROR_LEN);
    let p = SlicedPacket::from_ip(out).unwrap();
    let ip = match p.net.unwrap() {
        etherparse::NetSlice::Ipv4(ip) => ip,
        _ => panic!("not ipv4"),
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(h.total_len as usize, out.len());
    assert_eq!(h.source, src);
    assert_eq!(h.destination, [orig[12], orig[13], orig[14], orig[15]]);
    assert_eq!(h.protocol, IpNumber::ICMP);
    assert!(h.dont_fragment);
    assert_eq!(h.dscp.value() >> 3, 6, "precedence 6");
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else { panic!("not icmp") };
    assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
    let q = icmp.payload();
    let tl = u16::from_be_bytes([orig[2], orig[3]]) as usize;
    assert_eq!(q.len(), tl.min(MAX_ERROR_LEN - ERROR_HDRS_LEN));
    assert_eq!(q, &orig[..q.len()]);
    icmp.icmp_type()
}

#[test]
fn errors_are_valid_and_quote_as_much_as_fits() {
    let me = Ipv4Addr::new(10, 0, 0, 1);
    let mut out = [0u8; 2048];
    for payload in [0usize, 1, 7, 8, 100, 520, 521, 600, 1472] {
        for opts in [&[][..], &[1, 1, 1, 0][..]] {
            let orig = udp_packet([10, 0, 0, 2], [8, 8, 8, 8], payload, opts, (false, 0));
            let cases = [
                (IcmpError::TimeExceeded, Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)),
                (IcmpError::NetUnreachable, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Network)),
                (IcmpError::HostUnreachable, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host)),
                (IcmpError::ProtocolUnreachable, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Protocol)),
                (IcmpError::PortUnreachable, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)),
                (IcmpError::AdminProhibited, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FilterProhibited)),
                (
                    IcmpError::FragNeeded { mtu: 1400 },
                    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 }),
                ),
            ];
            for (kind, expect) in cases {
                let n = build_error(kind, &orig, me, 64, &mut out).unwrap();
                assert_eq!(n, (ERROR_HDRS_LEN + orig.len()).min(MAX_ERROR_LEN));
                assert_eq!(check_error(&out[..n], &orig, me.octets()), expect);
                assert_eq!(out[8], 64);
            }
        }
    }
}

#[test]
fn frag_needed_mtu_field_and_tos() {
    let orig = udp_packet([192, 168, 1, 5], [1, 1, 1, 1], 1472, &[], (false, 0));
    let mut out = [0u8; 600];
    let n = build_error(IcmpError::FragNeeded { mtu: 0x05dc }, &orig, Ipv4Addr::new(192, 168, 1, 1), 255, &mut out).unwrap();
    assert_eq!(n, 576);
    assert_eq!((out[20], out[21]), (3, 4));
    assert_eq!(&out[24..28], &[0, 0, 0x05, 0xdc]);
    // DSCP 0x2e = TOS 0xb8: RFC 1349 bits (0x18) kept, precedence 6.
    assert_eq!(out[1], 0xc0 | (0xb8 & 0x1e));
}

#[test]
fn padding_is_ignored_and_buffer_limits() {
    let me = Ipv4Addr::new(10, 0, 0, 1);
    let mut orig = udp_packet([10, 0, 0, 2], [10, 0, 9, 9], 4, &[], (false, 0));
    let real = orig.len();
    orig.extend_from_slice(&[0xee; 18]); // Ethernet padding
    let mut out = [0u8; 100];
    let n = build_error(IcmpError::HostUnreachable, &orig, me, 64, &mut out).unwrap();
    assert_eq!(n, ERROR_HDRS_LEN + real);
    check_error(&out[..n], &orig, me.octets());

    let big = udp_packet([10, 0, 0, 2], [10, 0, 9, 9], 1000, &[], (false, 0));
    // Room for exactly the minimum quote (header + 8).
    let mut small = [0u8; ERROR_HDRS_LEN + 28];
    let n = build_error(IcmpError::HostUnreachable, &big, me, 64, &mut small).unwrap();
    assert_eq!(n, small.len());
    assert_eq!(&small[28..], &big[..28]);
    let mut smaller = [0u8; ERROR_HDRS_LEN + 27];
    assert_eq!(build_error(IcmpError::HostUnreachable, &big, me, 64, &mut smaller), Err(BuildError::BufferTooSmall));
    assert_eq!(build_error(IcmpError::HostUnreachable, &big, me, 64, &mut [0u8; 10]), Err(BuildError::BufferTooSmall));
    // Between the minimum and 576: quote what fits.
    let mut mid = [0u8; 300];
    let n = build_error(IcmpError::HostUnreachable, &big, me, 64, &mut mid).unwrap();
    assert_eq!(n, 300);
    assert_eq!(&mid[28..300], &big[..272]);
}

#[test]
fn never_answer_cases() {
    let ok = |src: [u8; 4], dst: [u8; 4]| may_send_error(&udp_packet(src, dst, 10, &[], (false, 0)));
    assert!(ok([10, 0, 0, 2], [8, 8, 8, 8]));
    assert!(!ok([10, 0, 0, 2], [255, 255, 255, 255]), "limited broadcast");
    assert!(!ok([10, 0, 0, 2], [224, 0, 0, 251]), "multicast");
    assert!(!ok([10, 0, 0, 2], [239, 1, 2, 3]), "multicast");
    assert!(!ok([0, 0, 0, 0], [10, 0, 0, 1]), "unspecified source");
    assert!(!ok([255, 255, 255, 255], [10, 0, 0, 1]), "broadcast source");
    assert!(!ok([224, 0, 0, 1], [10, 0, 0, 1]), "multicast source");
    assert!(!ok([127, 0, 0, 1], [10, 0, 0, 1]), "loopback source");
    assert!(!ok([240, 0, 0, 1], [10, 0, 0, 1]), "class E source");
    // Fragments: the first may be answered, later ones never.
    assert!(may_send_error(&udp_packet([10, 0, 0, 2], [8, 8, 8, 8], 10, &[], (true, 0))));
    assert!(!may_send_error(&udp_packet([10, 0, 0, 2], [8, 8, 8, 8], 10, &[], (true, 100))));
    assert!(!may_send_error(&udp_packet([10, 0, 0, 2], [8, 8, 8, 8], 10, &[], (false, 100))));
    // ICMP: queries yes, errors no.
    let s = [10, 0, 0, 2];
    let d = [8, 8, 8, 8];
    let echo = icmp_packet(s, d, Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 2 }), &[0; 8]);
    assert!(may_send_error(&echo));
    let unreach = icmp_packet(s, d, Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port), &[0; 28]);
    assert!(!may_send_error(&unreach));
    let te = icmp_packet(s, d, Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit), &[0; 28]);
    assert!(!may_send_error(&te));
    let mut odd = echo.clone();
    odd[20] = 42; // unknown type: treated as an error
    assert!(!may_send_error(&odd));
    odd[20] = 5; // redirect
    assert!(!may_send_error(&odd));
    // ICMP with no payload at all: cannot tell, do not answer.
    let mut empty = Vec::new();
    let mut h = Ipv4Header::new(0, 64, IpNumber::ICMP, s, d).unwrap();
    h.header_checksum = h.calc_header_checksum();
    h.write(&mut empty).unwrap();
    assert!(!may_send_error(&empty));
    let mut out = [0u8; 600];
    assert_eq!(build_error(IcmpError::TimeExceeded, &unreach, Ipv4Addr::new(10, 0, 0, 1), 64, &mut out), Err(BuildError::NotAllowed));
}

#[test]
fn malformed_originals() {
    let good = udp_packet([10, 0, 0, 2], [8, 8, 8, 8], 10, &[], (false, 0));
    let mut out = [0u8; 600];
    let me = Ipv4Addr::new(10, 0, 0, 1);
    let mut cases = Vec::new();
    cases.push(good[..19].to_vec());
    cases.push(good[..good.len() - 1].to_vec()); // total length beyond the bytes
    let mut v6 = good.clone();
    v6[0] = 0x65;
    cases.push(v6);
    let mut ihl4 = good.clone();
    ihl4[0] = 0x44;
    cases.push(ihl4);
    let mut short_total = good.clone();
    short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
    cases.push(short_total);
    for c in cases {
        assert!(!may_send_error(&c));
        assert_eq!(build_error(IcmpError::TimeExceeded, &c, me, 64, &mut out), Err(BuildError::Malformed));
    }
}

#[test]
fn error_frame_with_ethernet_header() {
    let orig = udp_packet([10, 0, 0, 2], [8, 8, 8, 8], 100, &[], (false, 0));
    let dst: MacAddr = "02:42:0a:00:00:02".parse().unwrap();
    let src: MacAddr = "02:00:00:00:00:01".parse().unwrap();
    let mut out = [0u8; 1024];
    let n = build_error_frame(IcmpError::TimeExceeded, &orig, Ipv4Addr::new(10, 0, 0, 1), 64, dst, src, &mut out).unwrap();
    assert_eq!(n, 14 + 28 + orig.len());
    let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
    let Some(etherparse::LinkSlice::Ethernet2(e)) = p.link else { panic!() };
    assert_eq!(e.destination(), dst.0);
    assert_eq!(e.source(), src.0);
    check_error(&out[14..n], &orig, [10, 0, 0, 1]);
    assert_eq!(eth_header(&mut [0u8; 13], dst, src, 0x0800), None);
    assert_eq!(build_error_frame(IcmpError::TimeExceeded, &orig, Ipv4Addr::new(10, 0, 0, 1), 64, dst, src, &mut [0u8; 13]), Err(BuildError::BufferTooSmall));
}

#[test]
fn rate_limiter_bursts_and_refills() {
    let mut r = RateLimiter::new(1000, 50);
    let sent = (0..100).filter(|_| r.allow(5)).count();
    assert_eq!(sent, 50);
    assert!(!r.allow(5));
    assert!(r.allow(6)); // 1 ms = one token at 1000/s
    assert!(!r.allow(6));
    assert!(!r.allow(3), "clock going back adds nothing");
    let sent = (0..100).filter(|_| r.allow(1_000_000)).count();
    assert_eq!(sent, 50, "refill is capped at the burst");
    let mut slow = RateLimiter::new(2, 1);
    assert!(slow.allow(0));
    assert!(!slow.allow(499));
    assert!(slow.allow(500));
    let mut none = RateLimiter::new(1000, 0);
    assert!(!none.allow(u64::MAX));
    let mut d = RateLimiter::default();
    assert!(d.allow(u64::MAX));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0xfeed);
    let mut buf = [0u8; 700];
    let mut out = [0u8; 700];
    for i in 0..200_000 {
        let len = (rng.next() % 700) as usize;
        rng.fill(&mut buf[..len]);
        if i % 2 == 0 && len >= 20 {
            // Make it look like IPv4 more often so the deeper paths run.
            buf[0] = 0x40 | (buf[0] & 0x0f);
            let tl = (rng.next() % (len as u64 + 8)) as u16;
            buf[2..4].copy_from_slice(&tl.to_be_bytes());
            if i % 4 == 0 {
                buf[6] &= 0xe0;
                buf[7] = 0;
                buf[12] = 10;
                buf[16] = 10;
            }
        }
        let _ = may_send_error(&buf[..len]);
        let olen = (rng.next() % 700) as usize;
        let r = build_error(IcmpError::FragNeeded { mtu: i as u16 }, &buf[..len], Ipv4Addr::new(1, 2, 3, 4), 64, &mut out[..olen]);
        if let Ok(n) = r {
            assert!(n <= olen && n <= MAX_ERROR_LEN);
            assert_eq!(csum::checksum(&out[..20]), 0);
            assert_eq!(csum::checksum(&out[20..n]), 0);
        }
        let _ = build_error_frame(IcmpError::TimeExceeded, &buf[..len], Ipv4Addr::new(1, 2, 3, 4), 64, MacAddr::ZERO, MacAddr::ZERO, &mut out[..olen]);
        let _ = dec_ttl(&mut buf[..len]);
        let _ = eth_header(&mut out[..olen], MacAddr::BROADCAST, MacAddr::ZERO, 0x0806);
    }
}

#[test]
fn tcp_reset_answers_a_segment_as_rfc_9293_says() {
    let (client, us) = ([192, 0, 2, 7], [198, 51, 100, 2]);
    let seg = |flags: fn(etherparse::PacketBuilderStep<etherparse::TcpHeader>) -> etherparse::PacketBuilderStep<etherparse::TcpHeader>, payload: &[u8]| {
        let b = flags(etherparse::PacketBuilder::ipv4(client, us, 64).tcp(40000, 8999, 1000, 512));
        let mut v = Vec::new(); // alloc-ok: test
        b.write(&mut v, payload).unwrap();
        v
    };
    let (peer, mine) = (MacAddr([2, 0, 0, 0, 0, 7]), MacAddr([2, 0, 0, 0, 0, 1]));
    let check = |orig: &[u8], seq: u32, ack: Option<u32>| {
        assert!(may_reset(orig));
        let mut out = [0u8; RESET_FRAME_LEN];
        assert_eq!(build_reset_frame(orig, peer, mine, &mut out), Some(RESET_FRAME_LEN));
        assert_eq!(&out[0..6], &peer.0);
        assert_eq!(&out[6..12], &mine.0);
        let p = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
        assert_eq!((ip.header().source(), ip.header().destination()), (us, client));
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let Some(TransportSlice::Tcp(t)) = p.transport else { panic!("not TCP") };
        assert_eq!((t.source_port(), t.destination_port()), (8999, 40000));
        assert!(t.rst());
        assert_eq!(t.sequence_number(), seq);
        assert_eq!(t.ack(), ack.is_some());
        if let Some(a) = ack {
            assert_eq!(t.acknowledgment_number(), a);
        }
        assert_eq!(t.calc_checksum_ipv4(us, client).unwrap(), t.checksum());
    };
    // A SYN: SEQ 0, ACK = its SEQ + 1.
    check(&seg(|b| b.syn(), b""), 0, Some(1001));
    // Data with ACK: SEQ = its ACK, no ACK.
    check(&seg(|b| b.ack(77), b"hello"), 77, None);
    // Data without ACK (and FIN): ACK = SEQ + 5 + 1.
    check(&seg(|b| b.fin(), b"hello"), 0, Some(1006));
    // A RST is never answered; nor a truncated segment.
    let rst = seg(|b| b.rst(), b"");
    assert!(!may_reset(&rst));
    assert!(!may_reset(&rst[..30]));
    assert_eq!(build_reset_frame(&rst[..30], peer, mine, &mut [0u8; RESET_FRAME_LEN]), None);
    assert_eq!(build_reset_frame(&seg(|b| b.syn(), b""), peer, mine, &mut [0u8; 40]), None);
}
