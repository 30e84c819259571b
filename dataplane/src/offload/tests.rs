//! Shared test helpers (frame builder, RNG, etherparse oracle) and the tests of
//! `complete_checksum`, `verify_checksums` and `parse_headers`.

use super::*;
use crate::vnet::{VnetHdr, F_NEEDS_CSUM};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

/// xorshift64: deterministic test randomness without extra crates.
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
    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next().checked_rem(n) == Some(0)
    }
    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Iterations for the fuzz loops: `default`, or `OFFLOAD_FUZZ_ITERS` from the environment
/// for longer local runs.
pub(super) fn fuzz_iters(default: usize) -> usize {
    std::env::var("OFFLOAD_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The textbook checksum, independent of `csum`.
pub(super) fn naive_sum(data: &[u8], init: u64) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += ((c[0] as u64) << 8) | c.get(1).copied().unwrap_or(0) as u64;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

pub(super) const TCP_FIN: u8 = 0x01;
pub(super) const TCP_SYN: u8 = 0x02;
pub(super) const TCP_RST: u8 = 0x04;
pub(super) const TCP_PSH: u8 = 0x08;
pub(super) const TCP_ACK: u8 = 0x10;
pub(super) const TCP_URG: u8 = 0x20;
pub(super) const TCP_ECE: u8 = 0x40;
pub(super) const TCP_CWR: u8 = 0x80;

/// What a test frame looks like. Built by hand (so IPv4 options, IPv6 extension headers
/// and odd flags are easy) with checksums from `naive_sum`; etherparse checks the result.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub vlans: Vec<u16>,
    pub ipv6: bool,
    /// IPv4 options (length a multiple of 4).
    pub ip_opts: Vec<u8>,
    /// IPv6: hop-by-hop, routing (segments left 0) and destination-options headers.
    pub v6_ext: bool,
    pub udp: bool,
    pub flags: u8,
    /// TCP options (length a multiple of 4).
    pub tcp_opts: Vec<u8>,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub ip_id: u16,
    pub df: bool,
    pub ttl: u8,
    pub tos: u8,
    pub sport: u16,
    pub payload: Vec<u8>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            vlans: vec![],
            ipv6: false,
            ip_opts: vec![],
            v6_ext: false,
            udp: false,
            flags: TCP_ACK,
            tcp_opts: vec![],
            seq: 0x1000_0000,
            ack: 0x2000_0000,
            window: 502,
            ip_id: 0x4242,
            df: true,
            ttl: 64,
            tos: 0,
            sport: 40000,
            payload: vec![],
        }
    }
}

/// A built frame and where its headers are.
pub(super) struct Built {
    pub frame: Vec<u8>,
    pub l3: usize,
    pub l4: usize,
    pub hdr_len: usize,
}

/// A timestamps option (NOP NOP TS) with the given TSval.
pub(super) fn ts_opt(tsval: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    o
}

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];
const SRC6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub(super) fn build(s: &Spec) -> Built {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for (i, vid) in s.vlans.iter().enumerate() {
        let tpid: u16 = if s.vlans.len() == 2 && i == 0 { 0x88a8 } else { 0x8100 };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&(if s.ipv6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
    let l3 = f.len();
    let proto = if s.udp { 17u8 } else { 6 };
    let l4_hdr = if s.udp { 8 } else { 20 + s.tcp_opts.len() };
    let l4_len = l4_hdr + s.payload.len();
    if s.ipv6 {
        let ext_len = if s.v6_ext { 8 + 8 + 16 } else { 0 };
        f.extend_from_slice(&(0x6000_0000u32 | ((s.tos as u32) << 20) | 0x12345).to_be_bytes());
        f.extend_from_slice(&((ext_len + l4_len) as u16).to_be_bytes());
        f.push(if s.v6_ext { 0 } else { proto });
        f.push(s.ttl);
        f.extend_from_slice(&SRC6);
        f.extend_from_slice(&DST6);
        if s.v6_ext {
            f.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // HBH, PadN
            f.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // routing type 0, segleft 0
            f.extend_from_slice(&[proto, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            // dstopt
        }
    } else {
        let ihl = 20 + s.ip_opts.len();
        f.push(0x40 | (ihl / 4) as u8);
        f.push(s.tos);
        f.extend_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&s.ip_id.to_be_bytes());
        f.extend_from_slice(&(if s.df { 0x4000u16 } else { 0 }).to_be_bytes());
        f.push(s.ttl);
        f.push(proto);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&SRC4);
        f.extend_from_slice(&DST4);
        f.extend_from_slice(&s.ip_opts);
        let c = !naive_sum(&f[l3..], 0);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let l4 = f.len();
    f.extend_from_slice(&s.sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    if s.udp {
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    } else {
        f.extend_from_slice(&s.seq.to_be_bytes());
        f.extend_from_slice(&s.ack.to_be_bytes());
        f.push(((l4_hdr / 4) as u8) << 4);
        f.push(s.flags);
        f.extend_from_slice(&s.window.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&s.tcp_opts);
    }
    let hdr_len = f.len();
    f.extend_from_slice(&s.payload);
    let ps = pseudo_naive(&f, l3, s.ipv6, proto, l4_len);
    let mut c = !naive_sum(&f[l4..], ps as u64);
    if s.udp && c == 0 {
        c = 0xffff;
    }
    let field = l4 + if s.udp { 6 } else { 16 };
    f[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Built { frame: f, l3, l4, hdr_len }
}

fn pseudo_naive(f: &[u8], l3: usize, ipv6: bool, proto: u8, l4_len: usize) -> u16 {
    let mut ph = Vec::new();
    if ipv6 {
        ph.extend_from_slice(&f[l3 + 8..l3 + 40]);
        ph.extend_from_slice(&(l4_len as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        ph.extend_from_slice(&f[l3 + 12..l3 + 20]);
        ph.extend_from_slice(&[0, proto]);
        ph.extend_from_slice(&(l4_len as u16).to_be_bytes());
    }
    naive_sum(&ph, 0)
}

/// Turns a fully checksummed frame into CHECKSUM_PARTIAL form the way the kernel does:
/// the L4 checksum field holds the folded (non-complemented) pseudo-header sum.
/// Returns the matching `NEEDS_CSUM` header.
pub(super) fn make_partial(b: &mut Built, ipv6: bool, udp: bool) -> VnetHdr {
    let proto = if udp { 17 } else { 6 };
    let l4_len = b.frame.len() - b.l4;
    let ps = pseudo_naive(&b.frame, b.l3, ipv6, proto, l4_len);
    let off = if udp { 6 } else { 16 };
    b.frame[b.l4 + off..b.l4 + off + 2].copy_from_slice(&ps.to_be_bytes());
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: 0,
        hdr_len: b.hdr_len as u16,
        gso_size: 0,
        csum_start: b.l4 as u16,
        csum_offset: off as u16,
    }
}

/// Independent check with etherparse: parses, and every checksum (IPv4 header, TCP/UDP)
/// equals etherparse's recomputation. Returns the parsed headers for further checks.
pub(super) fn oracle(frame: &[u8]) -> PacketHeaders<'_> {
    let p = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses frame");
    let payload = p.payload.slice();
    match (&p.net, &p.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), t) => {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ipv4 header checksum");
            match t {
                Some(TransportHeader::Tcp(t)) => {
                    assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, payload).unwrap(), "tcp checksum")
                }
                Some(TransportHeader::Udp(u)) => {
                    assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).unwrap(), "udp checksum")
                }
                _ => panic!("no transport"),
            }
        }
        (Some(NetHeaders::Ipv6(ip, _)), t) => match t {
            Some(TransportHeader::Tcp(t)) => {
                assert_eq!(t.checksum, t.calc_checksum_ipv6(ip, payload).unwrap(), "tcp6 checksum")
            }
            Some(TransportHeader::Udp(u)) => {
                assert_eq!(u.checksum, u.calc_checksum_ipv6(ip, payload).unwrap(), "udp6 checksum")
            }
            _ => panic!("no transport"),
        },
        _ => panic!("no ip"),
    }
    p
}

/// A variety of frame shapes used across the tests.
pub(super) fn shapes() -> Vec<Spec> {
    let mut v = Vec::new();
    for ipv6 in [false, true] {
        for udp in [false, true] {
            for vlans in [vec![], vec![100], vec![10, 20]] {
                let base = Spec { ipv6, udp, vlans: vlans.clone(), ..Spec::default() };
                v.push(base.clone());
                if ipv6 {
                    v.push(Spec { v6_ext: true, ..base.clone() });
                } else {
                    v.push(Spec { ip_opts: vec![1, 1, 1, 0, 0x94, 4, 0, 0], ..base.clone() });
                }
                if !udp {
                    v.push(Spec { tcp_opts: ts_opt(7), ..base });
                }
            }
        }
    }
    v
}

#[test]
fn builder_frames_pass_oracle_and_verify() {
    let mut rng = Rng(1);
    for s in shapes() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let s = Spec { payload: rng.bytes(n), ..s.clone() };
            let b = build(&s);
            oracle(&b.frame);
            assert_eq!(verify_checksums(&b.frame), Ok(true), "{s:?}");
            let h = parse_headers(&b.frame).unwrap();
            assert_eq!((h.l3_off, h.l4_off, h.hdr_len()), (b.l3, b.l4, b.hdr_len));
            assert_eq!(h.ip_end, b.frame.len());
            assert_eq!(h.payload_len(), n);
            assert!(!h.fragment);
        }
    }
}

#[test]
fn complete_checksum_etherparse_built() {
    let mut rng = Rng(2);
    for n in [0usize, 1, 7, 8, 9, 100, 1459, 8000] {
        let payload = rng.bytes(n);
        let mut frames = Vec::new();
        let b = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]).ipv4(SRC4, DST4, 64);
        let mut f = Vec::new();
        b.tcp(1, 2, 3, 4).ack(5).write(&mut f, &payload).unwrap();
        frames.push((f, 34usize, false, false));
        let b = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]).ipv4(SRC4, DST4, 64);
        let mut f = Vec::new();
        b.udp(1, 2).write(&mut f, &payload).unwrap();
        frames.push((f, 34, false, true));
        let b = PacketBuilder::ethernet2([1; 6], [2; 6]).single_vlan(7.try_into().unwrap()).ipv6(SRC6, DST6, 9);
        let mut f = Vec::new();
        b.tcp(1, 2, 3, 4).write(&mut f, &payload).unwrap();
        frames.push((f, 58, true, false));
        let b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv6(SRC6, DST6, 9);
        let mut f = Vec::new();
        b.udp(5, 6).write(&mut f, &payload).unwrap();
        frames.push((f, 54, true, true));
        for (orig, l4, ipv6, udp) in frames {
            oracle(&orig);
            let mut bl = Built { frame: orig.clone(), l3: if l4 == 58 { 18 } else { 14 }, l4, hdr_len: 0 };
            let vh = make_partial(&mut bl, ipv6, udp);
            assert_ne!(bl.frame, orig, "partial form differs");
            complete_checksum(&mut bl.frame, &vh).unwrap();
            assert_eq!(bl.frame, orig, "n={n} ipv6={ipv6} udp={udp}");
            assert_eq!(verify_checksums(&bl.frame), Ok(true));
        }
    }
}

#[test]
fn complete_checksum_all_shapes_random_sizes() {
    let mut rng = Rng(3);
    for s in shapes() {
        for _ in 0..20 {
            let n = rng.range(0, 3000);
            let s = Spec { payload: rng.bytes(n), ..s.clone() };
            let b0 = build(&s);
            let mut b = build(&s);
            let vh = make_partial(&mut b, s.ipv6, s.udp);
            complete_checksum(&mut b.frame, &vh).unwrap();
            assert_eq!(b.frame, b0.frame);
            oracle(&b.frame);
            // Ethernet padding after the datagram is not summed.
            let mut p = build(&s);
            let vh = make_partial(&mut p, s.ipv6, s.udp);
            p.frame.extend_from_slice(&[0xde, 0xad, 0xbe]);
            complete_checksum(&mut p.frame, &vh).unwrap();
            assert_eq!(&p.frame[..b0.frame.len()], &b0.frame[..]);
            assert_eq!(verify_checksums(&p.frame), Ok(true));
        }
    }
}

#[test]
fn complete_checksum_udp_zero_becomes_ffff() {
    // Exactly one value of the last payload word makes the UDP checksum compute to 0.
    let mut found = false;
    for w in 0..=0xffffu16 {
        let mut payload = vec![1, 2, 3, 4];
        payload.extend_from_slice(&w.to_be_bytes());
        let s = Spec { udp: true, payload, ..Spec::default() };
        let mut b = build(&s);
        let field = b.l4 + 6;
        if b.frame[field..field + 2] != [0xff, 0xff] {
            continue;
        }
        let vh = make_partial(&mut b, false, true);
        complete_checksum(&mut b.frame, &vh).unwrap();
        assert_eq!(&b.frame[field..field + 2], &[0xff, 0xff]);
        assert_eq!(verify_checksums(&b.frame), Ok(true));
        oracle(&b.frame);
        found = true;
        break;
    }
    assert!(found);
}

#[test]
fn complete_checksum_bounds() {
    let s = Spec { payload: vec![1, 2, 3], ..Spec::default() };
    let mut b = build(&s);
    let len = b.frame.len() as u16;
    let orig = b.frame.clone();
    let bad = [(len, 0), (len - 1, 0), (len - 2, 1), (0, len - 1), (u16::MAX, u16::MAX), (b.l4 as u16, 1000)];
    for (start, off) in bad {
        let vh = VnetHdr { flags: F_NEEDS_CSUM, csum_start: start, csum_offset: off, ..VnetHdr::default() };
        assert_eq!(complete_checksum(&mut b.frame, &vh), Err(OffloadError::BadCsumOffset), "{start} {off}");
        assert_eq!(b.frame, orig);
    }
    // Exactly at the end is fine.
    let vh = VnetHdr { flags: F_NEEDS_CSUM, csum_start: len - 2, csum_offset: 0, ..VnetHdr::default() };
    assert_eq!(complete_checksum(&mut b.frame, &vh), Ok(()));
    // Empty and tiny frames.
    for n in 0..4 {
        let mut f = vec![0u8; n];
        let vh = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 0, csum_offset: 0, ..VnetHdr::default() };
        assert_eq!(complete_checksum(&mut f, &vh).is_ok(), n >= 2);
    }
    // Without NEEDS_CSUM nothing happens, whatever the offsets.
    let mut f = orig.clone();
    let vh = VnetHdr { csum_start: 9999, ..VnetHdr::default() };
    assert_eq!(complete_checksum(&mut f, &vh), Ok(()));
    assert_eq!(f, orig);
}

#[test]
fn verify_detects_corruption() {
    let mut rng = Rng(5);
    for s in shapes() {
        let s = Spec { payload: rng.bytes(300), ..s.clone() };
        let b = build(&s);
        for _ in 0..50 {
            let mut f = b.frame.clone();
            // Bytes under some checksum: all of IPv4; for IPv6 the addresses (pseudo-header)
            // and L4 (the fixed header's other fields and extension headers are uncovered).
            let pos = match (s.ipv6, rng.next() % 2) {
                (false, _) => rng.range(b.l3, f.len() - 1),
                (true, 0) => rng.range(b.l3 + 8, b.l3 + 39),
                (true, _) => rng.range(b.l4, f.len() - 1),
            };
            let bit = 1u8 << rng.range(0, 7);
            f[pos] ^= bit;
            // A flipped bit breaks some checksum unless it made the frame unparsable.
            if let Ok(ok) = verify_checksums(&f) {
                assert!(!ok, "flip at {pos} not detected in {s:?}");
            }
        }
    }
    // IPv6 UDP with checksum 0 is invalid; IPv4 UDP with 0 is "no checksum".
    for ipv6 in [false, true] {
        let mut b = build(&Spec { ipv6, udp: true, payload: vec![9; 10], ..Spec::default() });
        b.frame[b.l4 + 6] = 0;
        b.frame[b.l4 + 7] = 0;
        assert_eq!(verify_checksums(&b.frame), Ok(!ipv6));
    }
}

#[test]
fn parse_errors() {
    let b = build(&Spec { payload: vec![1; 10], ..Spec::default() });
    for n in 0..b.hdr_len {
        assert_eq!(parse_headers(&b.frame[..n]).err(), Some(OffloadError::Truncated), "len {n}");
    }
    // IP total length beyond the frame.
    assert_eq!(parse_headers(&b.frame[..b.frame.len() - 1]).err(), Some(OffloadError::Truncated));
    let mut f = b.frame.clone();
    f[14] = 0x44; // IHL 4
    assert_eq!(parse_headers(&f).err(), Some(OffloadError::BadHeader));
    let mut f = b.frame.clone();
    f[14] = 0x55; // version 5
    assert_eq!(parse_headers(&f).err(), Some(OffloadError::BadHeader));
    let mut f = b.frame.clone();
    f[b.l4 + 12] = 0x40; // doff 4
    assert_eq!(parse_headers(&f).err(), Some(OffloadError::BadHeader));
    let mut f = b.frame.clone();
    f[12] = 0x08;
    f[13] = 0x06; // ARP
    assert_eq!(parse_headers(&f).err(), Some(OffloadError::Unsupported(Unsupported::EtherType)));
    // Three VLAN tags.
    let mut f = b.frame[..12].to_vec();
    for _ in 0..3 {
        f.extend_from_slice(&[0x81, 0, 0, 1]);
    }
    f.extend_from_slice(&b.frame[12..]);
    assert_eq!(parse_headers(&f).err(), Some(OffloadError::Unsupported(Unsupported::VlanDepth)));
    // Fragments are recognised.
    let mut f = b.frame.clone();
    f[20] |= 0x20; // MF
    let h = parse_headers(&f).unwrap();
    assert!(h.fragment);
    assert_eq!(verify_checksums(&f), Err(OffloadError::Unsupported(Unsupported::Fragment)));
    // IPv6: routing header with segments left, AH, ESP.
    let b6 = build(&Spec { ipv6: true, v6_ext: true, payload: vec![1; 10], ..Spec::default() });
    let mut f = b6.frame.clone();
    f[b6.l3 + 40 + 8 + 3] = 1;
    assert_eq!(parse_headers(&f).err(), Some(OffloadError::Unsupported(Unsupported::Ipv6ExtHeader)));
    let mut f = b6.frame.clone();
    f[b6.l3 + 6] = 51;
    assert_eq!(parse_headers(&f).err(), Some(OffloadError::Unsupported(Unsupported::Ipv6ExtHeader)));
    for e in [
        OffloadError::Truncated,
        OffloadError::BadHeader,
        OffloadError::Unsupported(Unsupported::Ufo),
        OffloadError::BadCsumOffset,
        OffloadError::BadGsoSize,
        OffloadError::GsoMismatch,
        OffloadError::BufferTooSmall,
    ] {
        assert!(!e.as_str().is_empty());
        assert_eq!(e.to_string(), e.as_str());
    }
}

#[test]
fn fuzz_complete_and_verify_no_panic() {
    let mut rng = Rng(6);
    let seeds: Vec<Vec<u8>> =
        shapes().iter().map(|s| build(&Spec { payload: rng.bytes(40), ..s.clone() }).frame).collect();
    for _ in 0..fuzz_iters(60_000) {
        let mut f = if rng.one_in(3) {
            let n = rng.range(0, 200);
            rng.bytes(n)
        } else {
            let mut f = seeds[rng.range(0, seeds.len() - 1)].clone();
            for _ in 0..rng.range(1, 4) {
                let p = rng.range(0, f.len() - 1);
                f[p] = rng.next() as u8;
            }
            let cut = rng.range(0, f.len());
            f.truncate(cut);
            f
        };
        let _ = parse_headers(&f);
        let _ = verify_checksums(&f);
        let vh = VnetHdr {
            flags: rng.next() as u8,
            gso_type: rng.next() as u8,
            hdr_len: rng.next() as u16,
            gso_size: rng.next() as u16,
            csum_start: rng.range(0, 120) as u16,
            csum_offset: rng.range(0, 40) as u16,
        };
        let _ = complete_checksum(&mut f, &vh);
    }
}
