//! Test helpers: frames built with etherparse, an etherparse-based checksum oracle, a
//! deterministic RNG, and shorthands for running packets through `process`.

use std::net::Ipv4Addr;

use etherparse::{IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

use super::{process, Action, ConnTable, NatConfig, Verdict};
use crate::offload::csum;

pub(super) const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
pub(super) const H1: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
pub(super) const H2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
pub(super) const H3: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 4);
pub(super) const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub(super) const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub(super) const REMOTE2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);
pub(super) const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

pub(super) const FIN: u8 = 0x01;
pub(super) const SYN: u8 = 0x02;
pub(super) const RST: u8 = 0x04;
pub(super) const ACK: u8 = 0x10;

/// Offset of the IP header in every test frame (plain Ethernet).
pub(super) const L3: usize = 14;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

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

/// A small table for tests.
pub(super) fn table(max_conns: u32) -> ConnTable {
    ConnTable::new(NatConfig { max_conns, ..NatConfig::default() })
}

/// A TCP segment with the given flags (SYN/FIN/RST/ACK bits) and payload.
pub(super) fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src.octets(), dst.octets(), 64).tcp(sport, dport, 1000, 65535);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & ACK != 0 {
        b = b.ack(5000);
    }
    let mut v = Vec::new(); // alloc-ok: test code (cfg(test)), never on a packet path
    b.write(&mut v, payload).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
    v
}

/// A UDP datagram.
pub(super) fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new(); // alloc-ok: test code (cfg(test)), never on a packet path
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
    v
}

/// An ICMP echo request (or reply).
pub(super) fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src.octets(), dst.octets(), 64);
    let b = if request { b.icmpv4_echo_request(id, 1) } else { b.icmpv4_echo_reply(id, 1) };
    let mut v = Vec::new(); // alloc-ok: test code (cfg(test)), never on a packet path
    b.write(&mut v, b"ping-payload").unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
    v
}

/// An ICMP error of `ty`/`code` from `src` to `dst` quoting `quoted` (IP packet bytes).
pub(super) fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new(); // alloc-ok: test helper
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_raw(ty, code, [0; 4])
        .write(&mut v, quoted)
        .unwrap(); // alloc-ok: test helper
    v
}

/// The IP packet inside a test frame.
pub(super) fn ip_of(frame: &[u8]) -> &[u8] {
    &frame[L3..]
}

/// What a test looks at in a frame, parsed by etherparse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// Parses `frame` with etherparse and checks every checksum in it (IPv4 header; TCP,
/// UDP unless zero, ICMP). Returns addresses and ports (ICMP echo: identifier as both).
pub(super) fn check(frame: &[u8]) -> Seen {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame"); // alloc-ok: test helper
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("not ipv4") };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ipv4 header checksum");
    let payload = h.payload.slice();
    let src = Ipv4Addr::from(ip.source);
    let dst = Ipv4Addr::from(ip.destination);
    match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, payload).unwrap(), "tcp checksum"); // alloc-ok: test helper
            Seen { src, sport: t.source_port, dst, dport: t.destination_port }
        }
        Some(TransportHeader::Udp(u)) => {
            if u.checksum != 0 {
                assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).unwrap(), "udp checksum"); // alloc-ok: test helper
            }
            Seen { src, sport: u.source_port, dst, dport: u.destination_port }
        }
        Some(TransportHeader::Icmpv4(i)) => {
            assert_eq!(i.checksum, i.icmp_type.calc_checksum(payload), "icmp checksum");
            let b = i.to_bytes();
            let id = u16::from_be_bytes([b[4], b[5]]);
            Seen { src, sport: id, dst, dport: id }
        }
        _ => Seen { src, sport: 0, dst, dport: 0 },
    }
}

/// Checks the IP header checksum of a quoted packet (inside an ICMP error) and, when
/// the whole quoted datagram is there, its UDP/TCP checksum. Returns addresses/ports.
pub(super) fn check_quoted(quoted: &[u8]) -> Seen {
    let (ip, rest) = Ipv4Header::from_slice(quoted).expect("quoted ipv4 header"); // alloc-ok: test helper
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "quoted ip checksum");
    let whole = ip.total_len as usize == quoted.len();
    let p16 = |o: usize| u16::from_be_bytes([rest[o], rest[o + 1]]);
    if whole && (ip.protocol == IpNumber::UDP || ip.protocol == IpNumber::TCP) {
        let s = csum::pseudo_v4(ip.source, ip.destination, ip.protocol.0, rest.len() as u16);
        let skip_zero_udp = ip.protocol == IpNumber::UDP && p16(6) == 0;
        if !skip_zero_udp {
            assert_eq!(csum::fold(csum::sum16(rest, s)), 0xffff, "quoted l4 checksum");
        }
    }
    let (sport, dport) = if ip.protocol == IpNumber::ICMP { (p16(4), p16(4)) } else { (p16(0), p16(2)) };
    Seen { src: ip.source.into(), sport, dst: ip.destination.into(), dport }
}

/// The quoted packet of an ICMP error frame.
pub(super) fn quoted_of(frame: &[u8]) -> &[u8] {
    let ihl = (frame[L3] & 0x0f) as usize * 4;
    let tot = u16::from_be_bytes([frame[L3 + 2], frame[L3 + 3]]) as usize;
    &frame[L3 + ihl + 8..L3 + tot]
}

/// Runs `frame` through `process` with a fixed action for new flows.
pub(super) fn run(t: &ConnTable, frame: &mut [u8], action: Action, now: u32) -> Verdict {
    process(t, frame, L3, false, |_| action, now)
}

/// Like [`run`] but the frame must be forwarded; returns the translated view.
#[track_caller]
pub(super) fn fwd(t: &ConnTable, mut frame: Vec<u8>, action: Action, now: u32) -> (Seen, Verdict, Vec<u8>) {
    let v = run(t, &mut frame, action, now);
    assert!(matches!(v, Verdict::Forward { .. }), "expected forward, got {v:?}");
    (check(&frame), v, frame)
}

/// Shorthand for a `Seen`.
pub(super) fn seen(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Seen {
    Seen { src, sport, dst, dport }
}

/// Splits the IP datagram of `frame` into fragments carrying at most `chunk` bytes of
/// payload each (a multiple of 8), with IP id `id`; checksums computed by etherparse.
pub(super) fn fragment(frame: &[u8], chunk: usize, id: u16) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0);
    let (ip, payload) = Ipv4Header::from_slice(ip_of(frame)).unwrap(); // alloc-ok: test helper
    let mut out = Vec::new(); // alloc-ok: test helper
    let mut off = 0;
    while off < payload.len() {
        let end = (off + chunk).min(payload.len());
        let mut h = ip.clone();
        h.identification = id;
        h.more_fragments = end < payload.len();
        h.fragment_offset = etherparse::IpFragOffset::try_new((off / 8) as u16).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
        h.set_payload_len(end - off).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
        h.header_checksum = h.calc_header_checksum();
        let mut f = frame[..L3].to_vec(); // alloc-ok: test code (cfg(test)), never on a packet path
        f.extend_from_slice(&h.to_bytes());
        f.extend_from_slice(&payload[off..end]);
        out.push(f);
        off = end;
    }
    out
}

/// Reassembles fragments (any order) back into one Ethernet frame; checks each
/// fragment's IP header checksum.
pub(super) fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(usize, &[u8], Ipv4Header)> = frags
        .iter()
        .map(|f| {
            let (h, p) = Ipv4Header::from_slice(ip_of(f)).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "fragment ip checksum");
            (h.fragment_offset.value() as usize * 8, p, h)
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut h = parts[0].2.clone();
    let mut payload = Vec::new(); // alloc-ok: test code (cfg(test)), never on a packet path
    for (off, p, _) in &parts {
        assert_eq!(*off, payload.len(), "fragments contiguous");
        payload.extend_from_slice(p);
    }
    h.more_fragments = false;
    h.fragment_offset = etherparse::IpFragOffset::ZERO;
    h.set_payload_len(payload.len()).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
    h.header_checksum = h.calc_header_checksum();
    let mut f = frags[0][..L3].to_vec(); // alloc-ok: test code (cfg(test)), never on a packet path
    f.extend_from_slice(&h.to_bytes());
    f.extend_from_slice(&payload);
    f
}
