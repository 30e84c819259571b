use std::net::Ipv4Addr;

use super::*;
use crate::wire::smol::{IpAddress, Ipv4Packet, UdpPacket};

pub(crate) const CLIENT: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fn gw() -> GatewayV4 {
    GatewayV4 { ip: Ipv4Addr::new(10, 70, 0, 1), prefix_len: 24, mac: MacAddr([2, 0x42, 10, 70, 0, 1]) }
}

fn lease() -> DhcpLease {
    DhcpLease {
        ip: Ipv4Addr::new(10, 70, 0, 50),
        dns: [Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED],
        dns_len: 1,
        lease_secs: 3600,
        router: true,
        mtu: 1500,
    }
}

/// A client's request frame: `opts` are raw options (the end mark is added).
pub(crate) fn request(ciaddr: Ipv4Addr, broadcast: bool, opts: &[u8]) -> Vec<u8> {
    let mut bootp = vec![0u8; 240];
    bootp[0] = 1;
    bootp[1] = 1;
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    if broadcast {
        bootp[10] = 0x80;
    }
    bootp[12..16].copy_from_slice(&ciaddr.octets());
    bootp[28..34].copy_from_slice(&CLIENT);
    bootp[236..240].copy_from_slice(&COOKIE);
    bootp.extend_from_slice(opts);
    bootp.push(255);
    bootp.resize(300, 0);
    let src = if ciaddr.is_unspecified() { Ipv4Addr::UNSPECIFIED } else { ciaddr };
    let dst = if ciaddr.is_unspecified() { Ipv4Addr::BROADCAST } else { gw().ip };
    let mut f = vec![0u8; 14 + 20 + 8 + bootp.len()];
    f[0..6].copy_from_slice(&if ciaddr.is_unspecified() { [0xff; 6] } else { gw().mac.0 });
    f[6..12].copy_from_slice(&CLIENT);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + bootp.len()) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    f[34..36].copy_from_slice(&68u16.to_be_bytes());
    f[36..38].copy_from_slice(&67u16.to_be_bytes());
    f[38..40].copy_from_slice(&(8 + bootp.len() as u16).to_be_bytes());
    f[42..].copy_from_slice(&bootp);
    f
}

/// The reply's options as (code, value) pairs.
fn options(reply: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let b = &reply[42..];
    let mut v = Vec::new();
    let mut i = 240;
    while b[i] != 255 {
        let len = b[i + 1] as usize;
        v.push((b[i], b[i + 2..i + 2 + len].to_vec()));
        i += 2 + len;
    }
    v
}

fn opt(reply: &[u8], code: u8) -> Option<Vec<u8>> {
    options(reply).into_iter().find(|(c, _)| *c == code).map(|(_, v)| v)
}

fn answer(req: &[u8]) -> Result<(Vec<u8>, Answer), NoReply> {
    let mut out = [0u8; REPLY_LEN + 10];
    let (len, a) = reply(req, &gw(), &lease(), &mut out)?;
    Ok((out[..len].to_vec(), a))
}

#[test]
fn discover_gets_an_offer_of_the_ports_address() {
    let req = request(Ipv4Addr::UNSPECIFIED, false, &[53, 1, DISCOVER, 50, 4, 10, 70, 0, 99]);
    assert!(is_request(&req));
    let (r, a) = answer(&req).unwrap();
    assert_eq!(a, Answer::Offer);
    assert_eq!(r.len(), REPLY_LEN);
    // Unicast to the client's MAC and the offered address (no broadcast flag).
    assert_eq!(&r[0..6], &CLIENT);
    assert_eq!(&r[6..12], &gw().mac.0);
    let ip = Ipv4Packet::new_checked(&r[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (gw().ip, Ipv4Addr::new(10, 70, 0, 50)));
    let udp = UdpPacket::new_checked(&r[34..]).unwrap();
    assert!(udp.verify_checksum(&IpAddress::from(gw().ip), &IpAddress::from(Ipv4Addr::new(10, 70, 0, 50))));
    assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
    let b = &r[42..];
    assert_eq!((b[0], &b[4..8], &b[16..20], &b[28..34]), (2, &[0xde, 0xad, 0xbe, 0xef][..], &[10, 70, 0, 50][..], &CLIENT[..]));
    assert_eq!(opt(&r, 53), Some(vec![OFFER]));
    assert_eq!(opt(&r, 54), Some(vec![10, 70, 0, 1]));
    assert_eq!(opt(&r, 51), Some(3600u32.to_be_bytes().to_vec()));
    assert_eq!(opt(&r, 58), Some(1800u32.to_be_bytes().to_vec()));
    assert_eq!(opt(&r, 59), Some(3150u32.to_be_bytes().to_vec()));
    assert_eq!(opt(&r, 1), Some(vec![255, 255, 255, 0]));
    assert_eq!(opt(&r, 3), Some(vec![10, 70, 0, 1]));
    assert_eq!(opt(&r, 6), Some(vec![192, 0, 2, 53]));
    assert_eq!(opt(&r, 26), Some(1500u16.to_be_bytes().to_vec()));
}

#[test]
fn request_for_the_address_is_acked_and_for_another_naked() {
    // SELECTING: server id ours, requested = the binding.
    let req = request(Ipv4Addr::UNSPECIFIED, true, &[53, 1, REQUEST, 54, 4, 10, 70, 0, 1, 50, 4, 10, 70, 0, 50]);
    let (r, a) = answer(&req).unwrap();
    assert_eq!(a, Answer::Ack);
    // The broadcast flag: to everyone.
    assert_eq!(&r[0..6], &[0xff; 6]);
    assert_eq!(&r[30..34], &[255, 255, 255, 255]);
    assert_eq!(opt(&r, 53), Some(vec![ACK]));
    // INIT-REBOOT for an address the port does not have: NAK, broadcast, no lease.
    let req = request(Ipv4Addr::UNSPECIFIED, false, &[53, 1, REQUEST, 50, 4, 10, 70, 0, 77]);
    let (r, a) = answer(&req).unwrap();
    assert_eq!(a, Answer::Nak);
    assert_eq!((&r[0..6], &r[42 + 16..42 + 20]), (&[0xff; 6][..], &[0, 0, 0, 0][..]));
    assert_eq!((opt(&r, 53), opt(&r, 51), opt(&r, 3)), (Some(vec![NAK]), None, None));
    // RENEWING: unicast from the bound address, no requested-address option.
    let req = request(Ipv4Addr::new(10, 70, 0, 50), false, &[53, 1, REQUEST]);
    let (r, a) = answer(&req).unwrap();
    assert_eq!(a, Answer::Ack);
    assert_eq!((&r[0..6], &r[30..34]), (&CLIENT[..], &[10, 70, 0, 50][..]));
    // ... from another address: NAK, with ciaddr 0 (RFC 2131 table 3).
    let req = request(Ipv4Addr::new(10, 70, 0, 51), false, &[53, 1, REQUEST]);
    let (r, a) = answer(&req).unwrap();
    assert_eq!(a, Answer::Nak);
    assert_eq!(&r[42 + 12..42 + 16], &[0, 0, 0, 0]);
}

#[test]
fn other_servers_choices_release_and_decline_get_no_reply() {
    let other = request(Ipv4Addr::UNSPECIFIED, false, &[53, 1, REQUEST, 54, 4, 10, 70, 0, 2, 50, 4, 10, 70, 0, 50]);
    assert_eq!(answer(&other).unwrap_err(), NoReply::Ignored);
    for m in [RELEASE, DECLINE, OFFER, 42] {
        assert_eq!(answer(&request(Ipv4Addr::new(10, 70, 0, 50), false, &[53, 1, m])).unwrap_err(), NoReply::Ignored, "type {m}");
    }
}

#[test]
fn inform_is_acked_without_a_lease() {
    let req = request(Ipv4Addr::new(10, 70, 0, 50), false, &[53, 1, INFORM]);
    let (r, a) = answer(&req).unwrap();
    assert_eq!(a, Answer::Ack);
    assert_eq!((&r[42 + 16..42 + 20], opt(&r, 51), opt(&r, 3)), (&[0, 0, 0, 0][..], None, Some(vec![10, 70, 0, 1])));
}

#[test]
fn internal_network_gets_no_router_and_dns_list_is_bounded() {
    let mut l = lease();
    l.router = false;
    l.dns_len = 200; // more than the array holds: capped at three
    let req = request(Ipv4Addr::UNSPECIFIED, false, &[53, 1, DISCOVER]);
    let mut out = [0u8; REPLY_LEN];
    let (len, _) = reply(&req, &gw(), &l, &mut out).unwrap();
    assert_eq!(opt(&out[..len], 3), None);
    assert_eq!(opt(&out[..len], 6).map(|v| v.len()), Some(12));
}

#[test]
fn malformed_requests_never_panic() {
    let good = request(Ipv4Addr::UNSPECIFIED, false, &[53, 1, DISCOVER, 12, 3, b'v', b'm', b'1']);
    let mut out = [0u8; REPLY_LEN];
    // Every truncation, and every single-byte corruption of the headers and options.
    for n in 0..good.len() {
        let _ = reply(&good[..n], &gw(), &lease(), &mut out);
        let _ = is_request(&good[..n]);
    }
    for i in 0..good.len().min(300) {
        for v in [0u8, 1, 0x45, 0xff] {
            let mut f = good.clone();
            f[i] = v;
            let _ = reply(&f, &gw(), &lease(), &mut out);
        }
    }
    // An option whose length runs past the end; no message type; not BOOTREQUEST.
    let runs_over = request(Ipv4Addr::UNSPECIFIED, false, &[53, 1, DISCOVER, 12, 250]);
    let mut f = runs_over.clone();
    f.truncate(14 + 20 + 8 + 250);
    assert_eq!(reply(&f, &gw(), &lease(), &mut out).unwrap_err(), NoReply::Malformed);
    assert_eq!(reply(&request(Ipv4Addr::UNSPECIFIED, false, &[]), &gw(), &lease(), &mut out).unwrap_err(), NoReply::Malformed);
    let mut op2 = good.clone();
    op2[42] = 2;
    assert_eq!(reply(&op2, &gw(), &lease(), &mut out).unwrap_err(), NoReply::Malformed);
    // Too small an output buffer.
    let mut small = [0u8; REPLY_LEN - 1];
    assert_eq!(reply(&good, &gw(), &lease(), &mut small).unwrap_err(), NoReply::Ignored);
    // Not DHCP: other UDP ports, TCP.
    let mut f = good.clone();
    f[37] = 53;
    assert!(!is_request(&f));
    let mut f = good;
    f[23] = 6;
    assert!(!is_request(&f));
}
