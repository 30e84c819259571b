//! Shared pieces of the fuzz targets: a cursor over the fuzzer's bytes and a frame
//! builder that wraps fuzzed payloads in well-formed (checksummed) Ethernet/IPv4/IPv6,
//! TCP/UDP/ICMP headers, so the deep paths (NAT, GSO, GRO, DHCP) are reached without
//! the fuzzer having to discover checksums.

use dataplane::offload::csum;
use dataplane::vnet::VnetHdr;

/// Reads the fuzzer's bytes front to back; past the end everything is zero.
pub struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b }
    }
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.b.split_first() {
            Some((&x, rest)) => {
                self.b = rest;
                x
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.b.len());
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        a
    }
    /// A length-prefixed (u16) chunk.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.b;
        self.b = &[];
        r
    }
    /// A virtio-net header straight from the fuzzer, biased towards values the kernel
    /// produces so that the offload paths are entered often.
    pub fn vnet(&mut self) -> VnetHdr {
        let sel = self.u8();
        let mut h = VnetHdr::read(self.take(10)).unwrap_or_default();
        match sel % 4 {
            // As given.
            0 => {}
            // Plain frame.
            1 => h = VnetHdr::default(),
            // Kernel-like: small types, plausible sizes.
            _ => {
                h.gso_type = [0, 1, 3, 4, 5, 0x81, 0x84, h.gso_type][(h.gso_type % 8) as usize];
                h.flags &= 3;
                h.gso_size %= 9000;
                h.csum_start %= 200;
                h.csum_offset = [6, 16, 2, h.csum_offset % 64][(h.csum_offset % 4) as usize];
                h.hdr_len %= 300;
            }
        }
        h
    }
}

/// Fixed addresses the targets' worlds are built from.
pub mod addr {
    use dataplane::wire::MacAddr;
    use std::net::Ipv4Addr;
    pub const GW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    pub const UP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);
    pub const ROUTER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
    pub const GW1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    pub const GW2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
    pub const SB1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    pub const SB2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    pub const SB3: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
    pub const DHCP_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
    pub const REMOTE_SB: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 7);
    pub const UP_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    pub const UP_GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
    pub const PEER_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
    pub const LOCAL_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    pub fn sb_mac(i: u8) -> MacAddr {
        MacAddr([2, 0x42, 10, 0, 0, i])
    }
    /// Interesting IPv4 addresses, picked by a fuzzer byte.
    pub fn v4(sel: u8) -> Ipv4Addr {
        let all = [GW1, GW2, SB1, SB2, SB3, DHCP_IP, REMOTE_SB, UP_IP, UP_GW, OUTSIDE, Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 255), Ipv4Addr::new(8, 0, 0, 1)];
        all[sel as usize % all.len()]
    }
    /// Interesting MACs, picked by a fuzzer byte.
    pub fn mac(sel: u8) -> MacAddr {
        match sel % 9 {
            0 => GW_MAC,
            1 => MacAddr::BROADCAST,
            2 => UP_MAC,
            3 => ROUTER_MAC,
            4 => MacAddr([0x33, 0x33, 0, 0, 0, 1]),
            5 => MacAddr([0x33, 0x33, 0xff, 0, 0, 1]),
            _ => sb_mac(sel % 6),
        }
    }
}

/// L4 protocol choices of [`build_frame`].
const PROTOS: [u8; 6] = [6, 17, 1, 6, 17, 58];

/// An outer IPv4 header (no options) from `src` to `dst` with a correct header
/// checksum; `ver_ihl`, `total` and `frag` as given, so callers can make them lie.
pub fn outer_ipv4(ver_ihl: u8, total: u16, frag: u16, proto: u8, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = ver_ihl;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let s = csum::checksum(&ip);
    ip[10..12].copy_from_slice(&s.to_be_bytes());
    ip
}

/// Builds an Ethernet frame from the cursor: either raw bytes, or (most of the time) a
/// well-formed IPv4/IPv6 + TCP/UDP/ICMP packet with fuzzed fields and payload, correct
/// checksums, optionally a VLAN tag, ARP. Writes into `out`, returns the length.
pub fn build_frame(c: &mut Cursor<'_>, out: &mut Vec<u8>) {
    out.clear();
    let kind = c.u8();
    if kind % 8 == 0 {
        out.extend_from_slice(c.chunk());
        return;
    }
    let dst = addr::mac(c.u8());
    let src = addr::mac(c.u8());
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&src.0);
    if kind & 0x80 != 0 {
        out.extend_from_slice(&[0x81, 0x00, 0, c.u8()]);
    }
    if kind % 8 == 1 {
        // ARP.
        out.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1 + (c.u8() & 1)]);
        out.extend_from_slice(&src.0);
        out.extend_from_slice(&addr::v4(c.u8()).octets());
        out.extend_from_slice(&addr::mac(c.u8()).0);
        out.extend_from_slice(&addr::v4(c.u8()).octets());
        let n = c_len(c, 24);
        out.extend_from_slice(c.take(n));
        return;
    }
    let proto = PROTOS[c.u8() as usize % PROTOS.len()];
    let sport = port(c);
    let dport = port(c);
    let flags = c.u8();
    let payload = c.chunk();
    let mut l4 = Vec::with_capacity(payload.len() + 20);
    match proto {
        6 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&c.u32().to_be_bytes());
            l4.extend_from_slice(&c.u32().to_be_bytes());
            let opts = (c.u8() % 3) as usize * 4;
            l4.push(((20 + opts) / 4 << 4) as u8);
            l4.push(flags);
            l4.extend_from_slice(&c.u16().to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]);
            for _ in 0..opts {
                l4.push(c.u8() % 3);
            }
        }
        17 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        _ => {
            // ICMP / ICMPv6: type, code from the fuzzer (echo and errors are likely).
            let t = [8, 0, 3, 11, 12, 5, 128, 129, 133, 135, 136, flags][c.u8() as usize % 12];
            l4.extend_from_slice(&[t, c.u8() % 5, 0, 0]);
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
        }
    }
    l4.extend_from_slice(payload);
    let v6 = proto == 58 || kind % 8 == 7;
    if v6 {
        out.extend_from_slice(&[0x86, 0xdd]);
        let nh = if proto == 1 { 58 } else { proto };
        let mut h = [0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        h[6] = nh;
        h[7] = [255, 64, 1, 0][c.u8() as usize % 4];
        // fe80::/ or the network's 2001:db8::/64 (sources/destinations from a byte).
        for (o, sel) in [(8, c.u8()), (24, c.u8())] {
            let a: [u8; 16] = match sel % 4 {
                0 => [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, sel],
                1 => [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                2 => [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1],
                _ => [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, sel],
            };
            h[o..o + 16].copy_from_slice(&a);
        }
        let src: [u8; 16] = h[8..24].try_into().unwrap();
        let dstip: [u8; 16] = h[24..40].try_into().unwrap();
        let ps = csum::pseudo_v6(&src, &dstip, nh, l4.len() as u32);
        fill_l4_csum(&mut l4, nh, ps, flags);
        out.extend_from_slice(&h);
        out.extend_from_slice(&l4);
        return;
    }
    out.extend_from_slice(&[0x08, 0x00]);
    let src_ip = addr::v4(c.u8());
    let dst_ip = addr::v4(c.u8());
    let ttl = [64, 1, 0, 2, 255][c.u8() as usize % 5];
    let frag = match c.u8() % 6 {
        0 => 0x2000u16,                       // MF
        1 => 0x2000 | (c.u16() & 0x1fff),     // middle fragment
        2 => c.u16() & 0x1fff,                // last fragment
        3 => 0x4000,                          // DF
        _ => 0,
    };
    let ihl_opts = if c.u8() % 8 == 0 { 4 } else { 0 };
    let mut ip = vec![0u8; 20 + ihl_opts];
    ip[0] = 0x45 + (ihl_opts / 4) as u8;
    ip[1] = c.u8();
    let total = (20 + ihl_opts + l4.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&c.u16().to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = ttl;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let s = csum::checksum(&ip);
    ip[10..12].copy_from_slice(&s.to_be_bytes());
    if proto == 1 {
        let s = csum::checksum(&l4);
        l4[2..4].copy_from_slice(&s.to_be_bytes());
    } else {
        let ps = csum::pseudo_v4(src_ip.octets(), dst_ip.octets(), proto, l4.len() as u16);
        fill_l4_csum(&mut l4, proto, ps, flags);
    }
    out.extend_from_slice(&ip);
    out.extend_from_slice(&l4);
    // Sometimes cut or padded: lengths that disagree with the headers.
    match c.u8() % 16 {
        0 => {
            let n = c.u8() as usize % out.len().max(1);
            out.truncate(out.len() - n);
        }
        1 => out.extend_from_slice(&[0; 7]),
        _ => {}
    }
}

/// A DHCP request (BOOTP body with fuzzed options) from the DHCP port's machine,
/// broadcast, UDP 68 → 67; a few header fields sometimes lie.
pub fn dhcp_frame(c: &mut Cursor<'_>, f: &mut Vec<u8>) {
    let mut bootp = vec![0u8; 240];
    bootp[0] = if c.u8() % 8 == 0 { c.u8() } else { 1 };
    bootp[1] = 1;
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&c.u32().to_be_bytes());
    bootp[10] = c.u8() & 0x80;
    bootp[12..16].copy_from_slice(&addr::v4(c.u8()).octets());
    bootp[28..34].copy_from_slice(&addr::sb_mac(5).0);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    let n = c.u8() % 8;
    for _ in 0..n {
        match c.u8() % 6 {
            0 => bootp.extend_from_slice(&[53, 1, c.u8() % 10]),
            1 => {
                bootp.extend_from_slice(&[50, 4]);
                bootp.extend_from_slice(&addr::v4(c.u8()).octets());
            }
            2 => {
                bootp.extend_from_slice(&[54, 4]);
                bootp.extend_from_slice(&addr::v4(c.u8()).octets());
            }
            3 => bootp.push(0),
            4 => bootp.push(255),
            _ => {
                let code = c.u8();
                let len = c.u8();
                bootp.push(code);
                bootp.push(len);
                bootp.extend_from_slice(c.take(len as usize % 40));
            }
        }
    }
    if c.bool() {
        bootp.resize(300.max(bootp.len()), 0);
    }
    f.clear();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&addr::sb_mac(5).0);
    f.extend_from_slice(&[0x08, 0x00]);
    let ulen = (8 + bootp.len()) as u16;
    let total = 20 + ulen;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(if c.u8() % 8 == 0 { c.u16() } else { total }).to_be_bytes());
    ip[6..8].copy_from_slice(&(if c.u8() % 8 == 0 { c.u16() } else { 0 }).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].copy_from_slice(&[255; 4]);
    let s = dataplane::offload::csum::checksum(&ip);
    ip[10..12].copy_from_slice(&s.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0, 68, 0, 67]);
    f.extend_from_slice(&(if c.u8() % 8 == 0 { c.u16() } else { ulen }).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&bootp);
}

/// The next TCP segment of the flow of `prev` (IPv4, no VLAN): sequence number advanced
/// by the payload, IP id + 1, checksums recomputed; payload bytes from the cursor
/// (sometimes a different length). `false` if `prev` is not such a segment.
pub fn follow_up(c: &mut Cursor<'_>, prev: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if prev.len() < 54 || prev[12..14] != [0x08, 0x00] || prev[14] >> 4 != 4 || prev[23] != 6 {
        return false;
    }
    let ihl = (prev[14] & 0x0f) as usize * 4;
    let l4 = 14 + ihl;
    let Some(&doff) = prev.get(l4 + 12) else { return false };
    let hl = l4 + (doff >> 4) as usize * 4;
    if hl > prev.len() || ihl < 20 || doff >> 4 < 5 {
        return false;
    }
    let plen = prev.len() - hl;
    let seq = u32::from_be_bytes([prev[l4 + 4], prev[l4 + 5], prev[l4 + 6], prev[l4 + 7]]).wrapping_add(plen as u32);
    out.extend_from_slice(&prev[..hl]);
    let n = if c.u8() % 4 == 0 { c.u16() as usize % 2000 } else { plen };
    let fill = c.u8();
    out.extend(std::iter::repeat(fill).take(n));
    out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    let id = u16::from_be_bytes([out[18], out[19]]).wrapping_add(1);
    out[18..20].copy_from_slice(&id.to_be_bytes());
    let total = (out.len() - 14) as u16;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out[24..26].copy_from_slice(&[0, 0]);
    let s = csum::checksum(&out[14..l4]);
    out[24..26].copy_from_slice(&s.to_be_bytes());
    out[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let src: [u8; 4] = out[26..30].try_into().unwrap();
    let dst: [u8; 4] = out[30..34].try_into().unwrap();
    let ps = csum::pseudo_v4(src, dst, 6, (out.len() - l4) as u16);
    let s = !csum::fold(csum::sum16(&out[l4..], ps));
    out[l4 + 16..l4 + 18].copy_from_slice(&s.to_be_bytes());
    true
}

fn c_len(c: &mut Cursor<'_>, max: u8) -> usize {
    (c.u8() % (max + 1)) as usize
}

fn port(c: &mut Cursor<'_>) -> u16 {
    match c.u8() % 8 {
        0 => 80,
        1 => 8080,
        2 => 53,
        3 => 67,
        4 => 68,
        5 => 4789,
        6 => 5353,
        _ => c.u16(),
    }
}

/// Fills the TCP/UDP/ICMPv6 checksum of `l4` given the pseudo-header sum `pseudo`.
/// Sometimes (a flag bit) leaves the pseudo-header sum only, as a CHECKSUM_PARTIAL
/// frame from a TAP has it.
fn fill_l4_csum(l4: &mut [u8], proto: u8, pseudo: u32, flags: u8) {
    let at = match proto {
        6 => 16,
        17 => 6,
        58 => 2,
        _ => return,
    };
    if l4.len() < at + 2 {
        return;
    }
    let v = if flags & 0x40 != 0 && proto != 58 { csum::fold(pseudo) } else { !csum::fold(csum::sum16(l4, pseudo)) };
    let v = if v == 0 && proto == 17 { 0xffff } else { v };
    l4[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
