//! Tunnel receive: arbitrary outer datagrams (or well-formed outer IPv4/UDP/GRE headers
//! with fuzzed fields around a fuzzed inner frame) through every decapsulation entry
//! point (`decap` per kind, `decap_frame` with a fuzzed virtio header, the socket
//! payload decoders), then what `TunnelRx::rx_gro` does with a UDP GRO batch: split at
//! the segment size, decapsulate each datagram, coalesce TCP segments into a buffer.
//!
//! Oracles besides "no panic": the inner range lies inside the input; a returned inner
//! `csum_start` lies inside the inner frame; `prepend_eth` of a UDP tunnel's inner packet
//! stays in bounds.
#![no_main]

use dataplane::buf::BUF_SIZE;
use dataplane::encap::{self, EncapKind, Vtep};
use dataplane::offload::{csum, TcpCoalescer};
use dataplane::wire::MacAddr;
use libfuzzer_sys::fuzz_target;
use vswitchd_fuzz::{addr::*, build_frame, outer_ipv4, Cursor};

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let sel = c.u8();
    let kind = match sel % 4 {
        0 => EncapKind::Vxlan,
        1 => EncapKind::Udp,
        2 => EncapKind::Gre { key: true, csum: false },
        _ => EncapKind::Gre { key: false, csum: true },
    };
    let mut vtep = match kind {
        EncapKind::Vxlan => Vtep::vxlan(LOCAL_HOST),
        EncapKind::Udp => Vtep::udp(LOCAL_HOST),
        EncapKind::Gre { .. } => Vtep::gre(LOCAL_HOST),
    };
    vtep.verify_csum = sel & 0x10 != 0;
    if sel & 0x20 != 0 {
        gro_batch(kind, &mut c);
        return;
    }
    let pkt = if sel & 0x40 != 0 { c.rest().to_vec() } else { outer_packet(kind, &vtep, &mut c) };
    if let Ok(d) = encap::decap(&vtep, kind, &pkt) {
        assert!(d.inner_range().end <= pkt.len());
        if kind == EncapKind::Udp {
            // Give it an Ethernet header in a buffer with headroom, as the receive side does.
            let mut buf = vec![0u8; 64 + pkt.len()];
            buf[64..].copy_from_slice(&pkt);
            if let Ok((s, l)) = encap::prepend_eth(&mut buf, 64 + d.inner_off, d.inner_len, GW_MAC, MacAddr::ZERO) {
                assert!(s + l <= buf.len());
            }
        }
    }
    // As an AF_PACKET port with vnet headers sees it: an Ethernet header in front.
    let vh = c.vnet();
    let mut frame = Vec::with_capacity(pkt.len() + 14);
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
    frame.extend_from_slice(&pkt);
    if let Ok((d, ivh)) = encap::decap_frame(&vtep, kind, &frame, &vh) {
        assert!(d.inner_range().end <= frame.len());
        if ivh.needs_csum() {
            assert!((ivh.csum_start as usize) < d.inner_len);
        }
    }
    // Socket payloads (what a UDP socket hands over: past the outer UDP header).
    let _ = encap::vxlan::decap_payload(&pkt);
    let _ = encap::udp::decap_payload(&pkt);
    let _ = encap::gre::parse_header(&pkt, true);
});

/// A mostly well-formed outer IPv4 packet of `kind` to `vtep` around a fuzzed frame.
fn outer_packet(kind: EncapKind, vtep: &Vtep, c: &mut Cursor<'_>) -> Vec<u8> {
    let mut inner = Vec::new();
    build_frame(c, &mut inner);
    let mangle = c.u8();
    let mut l4 = Vec::new();
    match kind {
        EncapKind::Vxlan | EncapKind::Udp => {
            let dport = if mangle & 1 != 0 { c.u16() } else { vtep.port };
            l4.extend_from_slice(&c.u16().to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            let body: &[u8] = if kind == EncapKind::Udp { inner.get(14..).unwrap_or(&[]) } else { &inner };
            let vx = kind == EncapKind::Vxlan;
            let ulen = 8 + body.len() + if vx { 8 } else { 0 };
            let ulen = if mangle & 2 != 0 { c.u16() } else { ulen as u16 };
            l4.extend_from_slice(&ulen.to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            if vx {
                let flags = if mangle & 4 != 0 { c.u8() } else { 0x08 };
                l4.extend_from_slice(&[flags, 0, 0, 0]);
                l4.extend_from_slice(&(c.u32() & 0xffff_ff00).to_be_bytes());
            }
            l4.extend_from_slice(body);
            if mangle & 8 != 0 {
                let s = !csum::fold(csum::sum16(&l4, csum::pseudo_v4(PEER_HOST.octets(), vtep.local_ip.octets(), 17, l4.len() as u16)));
                l4[6..8].copy_from_slice(&s.to_be_bytes());
            }
        }
        EncapKind::Gre { key, csum: with_csum } => {
            let mut g = [0u8; 12];
            let glen = encap::gre::header_len(key, with_csum);
            encap::gre::write_header(&mut g[..glen], key.then_some(c.u32()), with_csum);
            if mangle & 1 != 0 {
                g[0] = c.u8();
                g[1] = c.u8();
            }
            l4.extend_from_slice(&g[..glen]);
            l4.extend_from_slice(&inner);
            if with_csum && mangle & 2 == 0 {
                encap::gre::fill_csum(&mut l4);
            }
        }
    }
    let ver_ihl = if mangle & 0x10 != 0 { c.u8() } else { 0x45 };
    let total = if mangle & 0x20 != 0 { c.u16() } else { (20 + l4.len()) as u16 };
    let frag = if mangle & 0x40 != 0 { c.u16() } else { 0x4000 };
    let proto = if matches!(kind, EncapKind::Gre { .. }) { 47 } else { 17 };
    let mut p = outer_ipv4(ver_ihl, total, frag, proto, PEER_HOST, vtep.local_ip).to_vec();
    p.extend_from_slice(&l4);
    p
}

/// What `TunnelRx::rx_gro` does with one UDP GRO receive (mirrored: the real one is
/// tied to its socket): datagrams of `seg` bytes, each decapsulated, TCP segments of
/// one flow coalesced into a buffer of the pool's size.
fn gro_batch(kind: EncapKind, c: &mut Cursor<'_>) {
    let mut area = Vec::new();
    let seg = 1 + c.u16() as usize % 2000;
    let n = c.u8() % 16;
    let mut inner = Vec::new();
    for _ in 0..n {
        let prev = std::mem::take(&mut inner);
        if !(c.bool() && vswitchd_fuzz::follow_up(c, &prev, &mut inner)) {
            build_frame(c, &mut inner);
        }
        let start = area.len();
        match kind {
            EncapKind::Vxlan => {
                area.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
                area.extend_from_slice(&inner);
            }
            EncapKind::Udp => area.extend_from_slice(inner.get(14..).unwrap_or(&[])),
            EncapKind::Gre { .. } => area.extend_from_slice(&inner),
        }
        // Pad or cut to the segment size (the last one may be short).
        area.resize(start + seg, 0);
    }
    area.extend_from_slice(c.rest());
    let gre_vtep = Vtep::gre(LOCAL_HOST);
    let mut head = vec![0u8; BUF_SIZE - 256];
    let mut cur: Option<TcpCoalescer> = None;
    let mut pos = 0;
    while pos < area.len() {
        let end = (pos + seg).min(area.len());
        let data = &area[pos..end];
        pos = end;
        let d = match kind {
            EncapKind::Vxlan => encap::vxlan::decap_payload(data),
            EncapKind::Udp => encap::udp::decap_payload(data),
            EncapKind::Gre { .. } => encap::gre::decap(&gre_vtep, data),
        };
        let Ok(d) = d else { continue };
        let inner = &data[d.inner_range()];
        if let Some(co) = cur.as_mut() {
            if co.try_append(&mut head, inner) {
                continue;
            }
            let co = cur.take().unwrap();
            if let Ok((l, _)) = co.finish(&mut head) {
                assert!(l <= head.len());
            }
        }
        head[..inner.len()].copy_from_slice(inner);
        cur = if kind == EncapKind::Vxlan { TcpCoalescer::start(inner) } else { None };
    }
    if let Some(co) = cur.take() {
        if let Ok((l, _)) = co.finish(&mut head) {
            assert!(l <= head.len());
        }
    }
}
