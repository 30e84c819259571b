//! Translation tests: masquerade, published ports, hairpin, ICMP echo and errors,
//! fragments, checksum offload states. Frames are built and checked with etherparse.

use std::net::Ipv4Addr;

use super::tests_util::*;
use super::*;
use crate::offload::{complete_checksum, csum, verify_checksums};
use crate::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};

const MASQ: Action = Action::Snat { to: UPLINK };

fn fwd_info(v: Verdict) -> (bool, Dir, ConnRef, CtState) {
    match v {
        Verdict::Forward { changed, dir, conn, ct } => (changed, dir, conn, ct),
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
    }
}

#[test]
fn snat_tcp_roundtrip() {
    let t = table(64);
    let (s, v, _) = fwd(&t, tcp(H1, 40000, REMOTE, 80, SYN, b""), MASQ, 100);
    assert_eq!(s, seen(UPLINK, 40000, REMOTE, 80), "source masqueraded, port preserved");
    let (changed, dir, conn, ct) = fwd_info(v);
    assert!(changed);
    assert_eq!((dir, ct), (Dir::Orig, CtState::New));

    let (s, v, _) = fwd(&t, tcp(REMOTE, 80, UPLINK, 40000, SYN | ACK, b""), Action::Deny, 100);
    assert_eq!(s, seen(REMOTE, 80, H1, 40000), "reply de-masqueraded");
    let (_, dir, conn2, ct) = fwd_info(v);
    assert_eq!((dir, conn2, ct), (Dir::Reply, conn, CtState::Established));

    let (s, _, _) = fwd(&t, tcp(H1, 40000, REMOTE, 80, ACK, b"GET / HTTP/1.0\r\n\r\n"), Action::Deny, 101);
    assert_eq!(s, seen(UPLINK, 40000, REMOTE, 80));
    let info = t.get(conn, 101).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
    assert_eq!(info.state, ConnState::Tcp(TcpState::Established));
    assert!(info.snat && !info.dnat);
    assert_eq!(info.orig, Tuple::new(IPPROTO_TCP, H1, 40000, REMOTE, 80));
    assert_eq!(info.reply, Tuple::new(IPPROTO_TCP, REMOTE, 80, UPLINK, 40000));
    assert_eq!(info.expires_in, 432_000);
    let mut listed = Vec::new(); // alloc-ok: test code (cfg(test)), never on a packet path
    assert_eq!(t.dump(101, |c| listed.push(c)), 1);
    assert_eq!(listed, vec![info]); // alloc-ok: test code (cfg(test)), never on a packet path
}

#[test]
fn eim_and_port_preservation() {
    let t = table(64);
    // H1:5000 keeps its port towards every destination.
    for (i, r) in [REMOTE, REMOTE2, ROUTER].into_iter().enumerate() {
        let (s, _, _) = fwd(&t, udp(H1, 5000, r, 53 + i as u16, b"q"), MASQ, 0);
        assert_eq!((s.src, s.sport), (UPLINK, 5000));
    }
    // H2:5000 cannot have 5000: it gets another port, and keeps that one everywhere.
    let (s, _, _) = fwd(&t, udp(H2, 5000, REMOTE, 53, b"q"), MASQ, 0);
    let p2 = s.sport;
    assert_ne!(p2, 5000);
    assert!((1024..=65535).contains(&p2));
    let (s, _, _) = fwd(&t, udp(H2, 5000, REMOTE2, 99, b"q"), MASQ, 1);
    assert_eq!(s.sport, p2, "endpoint-independent mapping");
    // Replies reach the right hosts.
    let (s, _, _) = fwd(&t, udp(REMOTE2, 99, UPLINK, p2, b"a"), Action::Deny, 2);
    assert_eq!(s, seen(REMOTE2, 99, H2, 5000));
    let (s, _, _) = fwd(&t, udp(REMOTE2, 54, UPLINK, 5000, b"a"), Action::Deny, 2);
    assert_eq!(s, seen(REMOTE2, 54, H1, 5000));
    // Unsolicited packets to the mapped port from elsewhere are not let in (the
    // caller's policy denies new inbound flows): address-dependent filtering.
    assert_eq!(run(&t, &mut udp(REMOTE, 1, UPLINK, 5000, b"x"), Action::Deny, 2), Verdict::Drop(Reason::Denied));
    // When all of H1's connections are gone, 5000 is free again for H3.
    assert_eq!(t.sweep(100, 1000), 3, "unreplied flows: 30 s");
    assert_eq!(t.sweep(200, 1000), 2, "replied flows: 120 s");
    assert_eq!(t.counters().ports_held, 0);
    let (s, _, _) = fwd(&t, udp(H3, 5000, REMOTE, 53, b"q"), MASQ, 200);
    assert_eq!(s.sport, 5000);
}

#[test]
fn port_range_exhaustion_refuses_and_counts() {
    let t = ConnTable::new(NatConfig { max_conns: 64, port_range: (2000, 2003), ..NatConfig::default() });
    let mut ports = Vec::new(); // alloc-ok: test code (cfg(test)), never on a packet path
    for i in 0..5u8 {
        let h = Ipv4Addr::new(172, 17, 1, i + 1);
        let (s, _, _) = fwd(&t, tcp(h, 7000, REMOTE, 443, SYN, b""), MASQ, 0);
        ports.push(s.sport);
    }
    ports.sort();
    assert_eq!(ports, vec![2000, 2001, 2002, 2003, 7000], "preserved once, then the range"); // alloc-ok: test code (cfg(test)), never on a packet path
    let mut f = tcp(Ipv4Addr::new(172, 17, 1, 9), 7000, REMOTE, 443, SYN, b"");
    let before = f.clone();
    assert_eq!(run(&t, &mut f, MASQ, 0), Verdict::Drop(Reason::PortsExhausted));
    assert_eq!(f, before, "a dropped packet is not modified");
    assert_eq!(t.counters().ports_exhausted, 1);
    assert_eq!(t.len(), 5);
    // Existing mappings keep working, and the same endpoint to another destination
    // reuses its port (no new port needed).
    let (s, _, _) = fwd(&t, tcp(Ipv4Addr::new(172, 17, 1, 1), 7000, REMOTE2, 443, SYN, b""), MASQ, 1);
    assert_eq!(s.src, UPLINK);
    // ICMP identifiers are not limited by the port range.
    let (s, _, _) = fwd(&t, echo(H1, REMOTE, 7, true), MASQ, 1);
    assert_eq!(s.sport, 7);
}

fn published() -> DnatTable {
    DnatTable::new(vec![ // alloc-ok: test code (cfg(test)), never on a packet path
        DnatRule::single(IPPROTO_TCP, None, 8080, H1, 80),
        DnatRule { proto: IPPROTO_UDP, host_ip: Some(UPLINK), host_port: 5300, host_port_end: 5310, to_ip: H1, to_port: 53 },
    ])
    .unwrap() // alloc-ok: test code (cfg(test)), never on a packet path
}

#[test]
fn dnat_published_port_roundtrip() {
    let t = table(64);
    let d = published();
    let from_outside = PolicyInput { to_host: true, masquerade: None, hairpin_snat: None, routed: false };
    let policy = |tu: &Tuple| nat_action(&d, tu, &from_outside);
    let mut f = tcp(REMOTE, 5555, UPLINK, 8080, SYN, b"");
    let v = process(&t, &mut f, L3, false, policy, 10);
    assert_eq!(check(&f), seen(REMOTE, 5555, H1, 80));
    let (_, _, conn, ct) = fwd_info(v);
    assert_eq!(ct, CtState::New);
    let (s, _, _) = fwd(&t, tcp(H1, 80, REMOTE, 5555, SYN | ACK, b""), Action::Deny, 10);
    assert_eq!(s, seen(UPLINK, 8080, REMOTE, 5555));
    let info = t.get(conn, 10).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
    assert!(info.dnat && !info.snat);
    assert_eq!(info.state, ConnState::Tcp(TcpState::SynRecv));
    // A range maps one to one.
    let mut f = udp(REMOTE, 4444, UPLINK, 5307, b"q");
    process(&t, &mut f, L3, false, policy, 10);
    assert_eq!(check(&f), seen(REMOTE, 4444, H1, 60));
    // Not published: denied.
    let mut f = tcp(REMOTE, 5555, UPLINK, 9999, SYN, b"");
    assert_eq!(process(&t, &mut f, L3, false, policy, 10), Verdict::Drop(Reason::Denied));
}

#[test]
fn dnat_table_rules() {
    let d = published();
    assert_eq!(d.lookup(IPPROTO_TCP, UPLINK, 8080), Some((H1, 80)));
    assert_eq!(d.lookup(IPPROTO_TCP, GW, 8080), Some((H1, 80)), "any-address rule");
    assert_eq!(d.lookup(IPPROTO_UDP, UPLINK, 5310), Some((H1, 63)));
    assert_eq!(d.lookup(IPPROTO_UDP, UPLINK, 5311), None);
    assert_eq!(d.lookup(IPPROTO_UDP, GW, 5300), None, "address-specific rule");
    assert_eq!(d.lookup(IPPROTO_UDP, UPLINK, 8080), None);
    // A specific address wins over "any".
    let d = DnatTable::new(vec![DnatRule::single(IPPROTO_TCP, None, 80, H1, 80), DnatRule::single(IPPROTO_TCP, Some(UPLINK), 80, H2, 8000)]).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
    assert_eq!(d.lookup(IPPROTO_TCP, UPLINK, 80), Some((H2, 8000)));
    assert_eq!(d.lookup(IPPROTO_TCP, GW, 80), Some((H1, 80)));
    let a = DnatRule { proto: IPPROTO_TCP, host_ip: None, host_port: 100, host_port_end: 200, to_ip: H1, to_port: 100 };
    let b = DnatRule::single(IPPROTO_TCP, None, 150, H2, 1);
    assert_eq!(DnatTable::new(vec![a, b]), Err(DnatError::Overlap(a, b)));
    let bad = DnatRule { host_port_end: 99, ..a };
    assert_eq!(DnatTable::new(vec![bad]), Err(DnatError::Range(bad)));
    let bad = DnatRule { to_port: 65500, ..a };
    assert_eq!(DnatTable::new(vec![bad]), Err(DnatError::Range(bad)));
    let icmp = DnatRule { proto: IPPROTO_ICMP, ..a };
    assert_eq!(DnatTable::new(vec![icmp]), Err(DnatError::Proto(icmp)));
}

#[test]
fn hairpin_gets_dnat_and_snat() {
    let t = table(64);
    let d = published();
    let from_sandbox = PolicyInput { to_host: true, masquerade: Some(UPLINK), hairpin_snat: Some(GW), routed: false };
    let mut f = tcp(H2, 33333, UPLINK, 8080, SYN, b"");
    let v = process(&t, &mut f, L3, false, |tu| nat_action(&d, tu, &from_sandbox), 5);
    let out = check(&f);
    assert_eq!((out.src, out.dst, out.dport), (GW, H1, 80));
    let (_, _, conn, _) = fwd_info(v);
    let info = t.get(conn, 5).unwrap();
    assert!(info.snat && info.dnat);
    // The reply comes back to the gateway and is turned back into UPLINK:8080 → H2.
    let (s, _, _) = fwd(&t, tcp(H1, 80, GW, out.sport, SYN | ACK, b""), Action::Deny, 5);
    assert_eq!(s, seen(UPLINK, 8080, H2, 33333));
    // Masquerade of other traffic is unaffected.
    let outside = PolicyInput { to_host: false, routed: true, ..from_sandbox };
    let mut f = tcp(H2, 33334, REMOTE, 80, SYN, b"");
    process(&t, &mut f, L3, false, |tu| nat_action(&d, tu, &outside), 5);
    assert_eq!(check(&f), seen(UPLINK, 33334, REMOTE, 80));
}

#[test]
fn icmp_echo_identifier_mapping() {
    let t = table(64);
    let (s, _, _) = fwd(&t, echo(H1, REMOTE, 77, true), MASQ, 0);
    assert_eq!(s, seen(UPLINK, 77, REMOTE, 77), "identifier preserved");
    let (s, _, _) = fwd(&t, echo(H2, REMOTE, 77, true), MASQ, 0);
    let id2 = s.sport;
    assert_ne!(id2, 77);
    let (s, _, _) = fwd(&t, echo(REMOTE, UPLINK, id2, false), Action::Deny, 1);
    assert_eq!(s, seen(REMOTE, 77, H2, 77));
    let (s, _, _) = fwd(&t, echo(REMOTE, UPLINK, 77, false), Action::Deny, 1);
    assert_eq!(s, seen(REMOTE, 77, H1, 77));
    // A reply nobody asked for is invalid; a request in the reply tuple's place is a
    // new flow of its own (the type is part of the tuple).
    assert_eq!(run(&t, &mut echo(REMOTE, UPLINK, 999, false), Action::None, 1), Verdict::Drop(Reason::Invalid));
    let (_, v, _) = fwd(&t, echo(REMOTE, H1, 77, true), Action::None, 1);
    assert_eq!(fwd_info(v).3, CtState::New);
    // Other ICMP types are not forwarded by NAT.
    let mut f = icmp_error(REMOTE, UPLINK, 9, 0, &[0; 8]);
    assert_eq!(run(&t, &mut f, MASQ, 1), Verdict::Drop(Reason::Unsupported));
}

#[test]
fn icmp_error_quoting_snat_udp_is_translated_back() {
    let t = table(64);
    // H2 takes port 5353 first, so H1's flow is remapped: the inner port must change too.
    fwd(&t, udp(H2, 5353, REMOTE2, 53, b"x"), MASQ, 0);
    let (out, _, sent) = fwd(&t, udp(H1, 5353, REMOTE, 53, b"query"), MASQ, 0);
    assert_ne!(out.sport, 5353);
    for whole in [true, false] {
        // A router on the way says "unreachable", quoting all (or 8 bytes) of what we sent.
        let ip = ip_of(&sent);
        let quote = if whole { ip } else { &ip[..28] };
        let mut err = icmp_error(ROUTER, UPLINK, 3, 1, quote);
        let v = run(&t, &mut err, Action::Deny, 1);
        let (changed, dir, _, ct) = fwd_info(v);
        assert!(changed);
        assert_eq!((dir, ct), (Dir::Reply, CtState::Related));
        let outer = check(&err);
        assert_eq!((outer.src, outer.dst), (ROUTER, H1), "outer destination translated, source kept");
        assert_eq!(check_quoted(quoted_of(&err)), seen(H1, 5353, REMOTE, 53), "quoted packet as H1 sent it");
    }
    // Unrelated errors and bad checksums are dropped.
    let stray = udp(UPLINK, 1111, REMOTE, 53, b"q");
    let mut err = icmp_error(ROUTER, UPLINK, 3, 1, ip_of(&stray));
    assert_eq!(run(&t, &mut err, Action::Deny, 1), Verdict::Drop(Reason::Unrelated));
    let mut err = icmp_error(ROUTER, UPLINK, 3, 1, ip_of(&sent));
    let n = err.len();
    err[n - 1] ^= 0xff;
    assert_eq!(run(&t, &mut err, Action::Deny, 1), Verdict::Drop(Reason::BadChecksum));
}

#[test]
fn icmp_errors_for_tcp_echo_and_dnat() {
    let t = table(64);
    fwd(&t, tcp(H2, 40000, REMOTE2, 1, SYN, b""), MASQ, 0);
    let (_, _, sent) = fwd(&t, tcp(H1, 40000, REMOTE, 443, SYN, b"hello"), MASQ, 0);
    // Fragmentation needed, quoting the whole TCP segment: inner TCP checksum verified.
    let mut err = icmp_error(ROUTER, UPLINK, 3, 4, ip_of(&sent));
    fwd_info(run(&t, &mut err, Action::Deny, 0));
    assert_eq!(check(&err).dst, H1);
    assert_eq!(check_quoted(quoted_of(&err)), seen(H1, 40000, REMOTE, 443));
    // Time exceeded quoting an echo request.
    fwd(&t, echo(H2, REMOTE, 9, true), MASQ, 0);
    let (_, _, ping) = fwd(&t, echo(H1, REMOTE, 9, true), MASQ, 0);
    let mut err = icmp_error(ROUTER, UPLINK, 11, 0, ip_of(&ping));
    fwd_info(run(&t, &mut err, Action::Deny, 0));
    assert_eq!(check(&err).dst, H1);
    let q = check_quoted(quoted_of(&err));
    assert_eq!((q.src, q.sport, q.dst), (H1, 9, REMOTE));
    let inner_icmp = &quoted_of(&err)[20..];
    assert_eq!(csum::checksum(inner_icmp), 0, "inner echo checksum");
    // Error from the inside about a reply packet (original direction of the flow):
    // the remote must see it from the uplink, quoting what it sent to the uplink.
    let (out, _, _) = fwd(&t, tcp(H1, 40001, REMOTE, 443, ACK, b""), MASQ, 0); // picked up mid-stream
    let (_, _, delivered) = fwd(&t, tcp(REMOTE, 443, UPLINK, out.sport, ACK, b"data"), Action::Deny, 0);
    let mut err = icmp_error(H1, REMOTE, 3, 3, ip_of(&delivered));
    let (_, dir, _, _) = fwd_info(run(&t, &mut err, Action::Deny, 0));
    assert_eq!(dir, Dir::Orig);
    let outer = check(&err);
    assert_eq!((outer.src, outer.dst), (UPLINK, REMOTE));
    assert_eq!(check_quoted(quoted_of(&err)), seen(REMOTE, 443, UPLINK, out.sport));
    // The sandbox behind a published port says "port unreachable" to the remote
    // client (reply direction of the DNAT flow): it must come from the published
    // address and quote the published port.
    let d = published();
    let pol = PolicyInput { to_host: true, ..PolicyInput::default() };
    let mut f = udp(REMOTE, 4444, UPLINK, 5300, b"q");
    process(&t, &mut f, L3, false, |tu| nat_action(&d, tu, &pol), 0);
    let mut err = icmp_error(H1, REMOTE, 3, 3, ip_of(&f));
    let (_, dir, _, _) = fwd_info(run(&t, &mut err, Action::Deny, 0));
    assert_eq!(dir, Dir::Reply);
    let outer = check(&err);
    assert_eq!((outer.src, outer.dst), (UPLINK, REMOTE));
    assert_eq!(check_quoted(quoted_of(&err)), seen(REMOTE, 4444, UPLINK, 5300));
}

#[test]
fn fragments_follow_the_first_one() {
    let t = table(64);
    fwd(&t, udp(H2, 6000, REMOTE2, 1, b"x"), MASQ, 0); // remap H1's port
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let whole = udp(H1, 6000, REMOTE, 9999, &payload);
    let frags = fragment(&whole, 1480, 0x1234);
    assert_eq!(frags.len(), 3);
    let mut out = Vec::new();
    for (i, mut f) in frags.into_iter().enumerate() {
        let v = run(&t, &mut f, MASQ, 1);
        let (_, dir, _, ct) = fwd_info(v);
        assert_eq!(dir, Dir::Orig);
        assert_eq!(ct, if i == 0 { CtState::New } else { CtState::Fragment });
        out.push(f);
    }
    // Reassembled, the datagram has the translated addresses, port and checksum.
    let r = reassemble(&out);
    let s = check(&r);
    assert_eq!((s.src, s.dst, s.dport), (UPLINK, REMOTE, 9999));
    assert_ne!(s.sport, 6000);
    // The reply, fragmented too, comes back whole.
    let back = udp(REMOTE, 9999, UPLINK, s.sport, &payload);
    let mut out = Vec::new();
    for mut f in fragment(&back, 1024, 7) {
        fwd_info(run(&t, &mut f, Action::Deny, 2));
        out.push(f);
    }
    assert_eq!(check(&reassemble(&out)), seen(REMOTE, 9999, H1, 6000));
    // Later fragments of a datagram whose first fragment was not seen are dropped.
    let frags = fragment(&udp(H1, 6000, REMOTE, 9999, &payload), 1480, 0x4321);
    assert_eq!(run(&t, &mut frags[1].clone(), MASQ, 3), Verdict::Drop(Reason::FragmentNoState));
    // … and records expire after 30 s.
    let mut f = fragment(&whole, 1480, 0x1234)[2].clone();
    assert_eq!(run(&t, &mut f, MASQ, 31), Verdict::Drop(Reason::FragmentNoState));
}

/// Turns the complete L4 checksum of a test frame into CHECKSUM_PARTIAL form: the
/// folded pseudo-header sum, not complemented.
fn make_partial(f: &mut [u8], csum_offset: usize) -> VnetHdr {
    let ip = ip_of(f);
    let l4_len = u16::from_be_bytes([ip[2], ip[3]]) - 20;
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    let p = csum::fold(csum::pseudo_v4(src, dst, ip[9], l4_len));
    f[L3 + 20 + csum_offset..L3 + 22 + csum_offset].copy_from_slice(&p.to_be_bytes());
    VnetHdr { flags: F_NEEDS_CSUM, csum_start: (L3 + 20) as u16, csum_offset: csum_offset as u16, ..VnetHdr::default() }
}

#[test]
fn csum_partial_frames_and_gso() {
    let t = table(64);
    fwd(&t, tcp(H2, 41000, REMOTE2, 1, SYN, b""), MASQ, 0);
    fwd(&t, udp(H2, 41000, REMOTE2, 1, b""), MASQ, 0);
    let big: Vec<u8> = (0..20000u32).map(|i| (i * 13 + 1) as u8).collect();
    for (proto, len) in [(IPPROTO_TCP, 10), (IPPROTO_TCP, 20000), (IPPROTO_UDP, 333)] {
        // Outgoing (address + port change) and its reply (address + port change back).
        let (mut out, off) = match proto {
            IPPROTO_TCP => (tcp(H1, 41000, REMOTE, 80, SYN, &big[..len]), 16),
            _ => (udp(H1, 41000, REMOTE, 80, &big[..len]), 6),
        };
        let mut vh = make_partial(&mut out, off);
        if len > 1500 {
            vh.gso_type = GSO_TCPV4;
            vh.gso_size = 1448;
        }
        fwd_info(process(&t, &mut out, L3, true, |_| MASQ, 0));
        complete_checksum(&mut out, &vh).unwrap();
        assert_eq!(verify_checksums(&out), Ok(true));
        let s = check(&out);
        assert_eq!((s.src, s.dst), (UPLINK, REMOTE));
        assert_ne!(s.sport, 41000);
        let mut back = match proto {
            IPPROTO_TCP => tcp(REMOTE, 80, UPLINK, s.sport, SYN | ACK, &big[..len]),
            _ => udp(REMOTE, 80, UPLINK, s.sport, &big[..len]),
        };
        let vh = make_partial(&mut back, off);
        fwd_info(process(&t, &mut back, L3, true, |_| Action::Deny, 0));
        complete_checksum(&mut back, &vh).unwrap();
        assert_eq!(check(&back), seen(REMOTE, 80, H1, 41000));
    }
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let t = table(64);
    fwd(&t, udp(H2, 999, REMOTE2, 1, b""), MASQ, 0);
    let mut f = udp(H1, 999, REMOTE, 53, b"no checksum");
    f[L3 + 26] = 0;
    f[L3 + 27] = 0;
    let s = check(&f.clone());
    assert_eq!(s.sport, 999);
    fwd_info(run(&t, &mut f, MASQ, 0));
    assert_eq!(&f[L3 + 26..L3 + 28], &[0, 0]);
    let s = check(&f);
    assert_eq!((s.src, s.dst), (UPLINK, REMOTE));
    assert_ne!(s.sport, 999);
}

#[test]
fn other_protocols_are_tracked_by_address() {
    let t = table(64);
    // GRE (47): address-only masquerade, one flow per (inside host, remote).
    let gre = |src: Ipv4Addr, dst: Ipv4Addr| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ip(etherparse::IpHeaders::Ipv4(
                etherparse::Ipv4Header::new(4, 64, etherparse::IpNumber(47), src.octets(), dst.octets()).unwrap(),
                Default::default(),
            ))
            .write(&mut v, etherparse::IpNumber(47), &[0, 0, 0x65, 0x58])
            .unwrap();
        v
    };
    let (s, _, _) = fwd(&t, gre(H1, REMOTE), MASQ, 0);
    assert_eq!((s.src, s.dst), (UPLINK, REMOTE));
    let (s, _, _) = fwd(&t, gre(REMOTE, UPLINK), Action::Deny, 0);
    assert_eq!((s.src, s.dst), (REMOTE, H1));
    // A second inside host to the same remote would share the reply tuple: refused.
    assert_eq!(run(&t, &mut gre(H2, REMOTE), MASQ, 0), Verdict::Drop(Reason::Clash));
    assert_eq!(t.counters().clashes, 1);
    let c = t.dump(0, |i| assert_eq!(i.state, ConnState::Other { replied: true }));
    assert_eq!(c, 1);
}
