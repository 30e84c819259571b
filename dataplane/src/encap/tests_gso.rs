//! GSO inner frames through `EncapSegments`: per-packet and `UDP_SEGMENT` layouts, MTU
//! limits, and encap → decap → GRO coalescing back to the original payload.

use std::net::Ipv4Addr;

use super::tests_util::*;
use super::*;
use crate::offload::TcpCoalescer;
use crate::vnet::{VnetHdr, GSO_TCPV4};

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fn vtep_for(t: Tunnel, local: Ipv4Addr) -> Vtep {
    match t {
        Tunnel::Vxlan(_) => Vtep::vxlan(local),
        Tunnel::Gre(_) => Vtep::gre(local),
        Tunnel::Udp => Vtep::udp(local),
    }
}

/// Encapsulates every segment of `frame` one packet per call; returns the outer packets.
fn per_packet(t: Tunnel, frame: &[u8], vh: &VnetHdr, mtu: u16) -> Result<Vec<Vec<u8>>, EncapError> {
    let mut v = vtep_for(t, LOCAL);
    let mut s = EncapSegments::new(&mut v, Peer { remote: REMOTE, tunnel: t }, frame, vh, mtu)?;
    let count = s.segment_count();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 + s.max_packet_len()];
    while let Some(r) = s.next_into(&mut buf, 64) {
        let e = r?;
        assert_eq!(e.off, 64);
        assert!(e.len <= s.max_packet_len());
        out.push(buf[e.ip_range()].to_vec());
    }
    assert_eq!(out.len(), count);
    assert_eq!(v.next_id as usize, count, "one IPv4 id per packet");
    Ok(out)
}

/// Decapsulates outer packets and returns the inner Ethernet frames (for the UDP kind,
/// with an Ethernet header rebuilt in front).
fn inner_frames(t: Tunnel, pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let v = vtep_for(t, REMOTE);
    pkts.iter()
        .map(|p| {
            let d = decap(&v, v.kind_of(t), p).unwrap();
            assert_eq!(d.tunnel, t);
            if t == Tunnel::Udp {
                let mut b = p.clone();
                let (off, len) = prepend_eth(&mut b, d.inner_off, d.inner_len, MacAddr(MAC_B), MacAddr(MAC_A)).unwrap();
                b[off..off + len].to_vec()
            } else {
                p[d.inner_range()].to_vec()
            }
        })
        .collect()
}

#[test]
fn tso_64k_each_packet_fits_mtu_with_valid_inner_checksums() {
    let tunnels = [Tunnel::Vxlan(vni(42)), Tunnel::Gre(Some(42)), Tunnel::Gre(None), Tunnel::Udp];
    for t in tunnels {
        for (v6, vlan) in [(false, None), (false, Some(10)), (true, None)] {
            let (f, vh, payload) = gso_tcp(v6, vlan, 64_000, 1448);
            let pkts = per_packet(t, &f, &vh, 1500).unwrap();
            let sport = u16::from_be_bytes([pkts[0][20], pkts[0][21]]);
            let mut got = Vec::new();
            for (i, p) in pkts.iter().enumerate() {
                assert!(p.len() <= 1500, "{t:?} packet {i} is {} bytes", p.len());
                let (ip, rest) = outer_ipv4(p);
                if !matches!(t, Tunnel::Gre(_)) {
                    let (u, _) = outer_udp(&ip, rest);
                    assert_eq!(u.source_port, sport, "one flow, one source port");
                }
                if i + 1 < pkts.len() {
                    // Every packet but the last is as large as the MTU allows (the MSS was
                    // clamped to fit).
                    assert_eq!(p.len(), 1500, "{t:?} v6 {v6} vlan {vlan:?}: packet {i}");
                }
            }
            for fr in inner_frames(t, &pkts) {
                got.extend_from_slice(&inner_ok(&fr));
            }
            assert_eq!(got, payload, "{t:?} v6 {v6} vlan {vlan:?}");
        }
    }
}

#[test]
fn small_mss_is_kept_and_segments_count() {
    let (f, vh, _) = gso_tcp(false, None, 10_000, 1000);
    let pkts = per_packet(Tunnel::Vxlan(vni(1)), &f, &vh, 1500).unwrap();
    assert_eq!(pkts.len(), 10);
    assert!(pkts.iter().all(|p| p.len() == 36 + 54 + 1000));
}

#[test]
fn encap_decap_coalesce_restores_the_super_frame() {
    for t in [Tunnel::Vxlan(vni(7)), Tunnel::Gre(Some(7)), Tunnel::Udp] {
        let (f, vh, payload) = gso_tcp(false, None, 65_000, 1448);
        let pkts = per_packet(t, &f, &vh, 1500).unwrap();
        let frames = inner_frames(t, &pkts);
        let mut buf = vec![0u8; 70_000];
        buf[..frames[0].len()].copy_from_slice(&frames[0]);
        let mut c = TcpCoalescer::start(&frames[0]).expect("first segment starts a coalescer");
        for fr in &frames[1..] {
            assert!(c.try_append(&mut buf, fr), "{t:?}: segment refused");
        }
        let (len, out_vh) = c.finish(&mut buf).unwrap();
        assert_eq!(c.segments(), pkts.len());
        assert_eq!(out_vh.gso_kind(), GSO_TCPV4);
        let hl = c.hdr_len();
        assert_eq!(&buf[hl..len], &payload[..], "{t:?}");
        assert_eq!(out_vh.gso_size as usize, frames[0].len() - hl);
    }
}

#[test]
fn udp_gso_datagrams_keep_their_size_or_are_refused() {
    let (f, vh) = gso_udp(20_000, 1200);
    let pkts = per_packet(Tunnel::Vxlan(vni(1)), &f, &vh, 1500).unwrap();
    assert_eq!(pkts.len(), 17);
    for fr in inner_frames(Tunnel::Vxlan(vni(1)), &pkts) {
        assert!(inner_ok(&fr).len() <= 1200);
    }
    let (f, vh) = gso_udp(20_000, 1440);
    assert_eq!(per_packet(Tunnel::Vxlan(vni(1)), &f, &vh, 1500).err(), Some(EncapError::ExceedsMtu));
}

#[test]
fn non_gso_frames_checked_against_mtu_and_completed() {
    let mut f = udp4(None, 1, 2, &pattern(1450));
    let vh = make_partial(&mut f, 14);
    let t = Tunnel::Vxlan(vni(1));
    assert_eq!(per_packet(t, &f, &vh, 1500).err(), Some(EncapError::ExceedsMtu));
    let pkts = per_packet(t, &f, &vh, 1600).unwrap();
    assert_eq!(pkts.len(), 1);
    inner_ok(&inner_frames(t, &pkts)[0]);
    // Headers alone above the MTU.
    let (g, gvh, _) = gso_tcp(false, None, 5000, 1000);
    assert_eq!(per_packet(t, &g, &gvh, 90).err(), Some(EncapError::ExceedsMtu));
    // IP-in-UDP of non-IP is refused up front.
    let arp = arp_request(MAC_A, IP_A, IP_B);
    assert_eq!(per_packet(Tunnel::Udp, &arp, &VnetHdr::default(), 1500).err(), Some(EncapError::InnerNotIp));
}

#[test]
fn buffer_too_small_does_not_advance() {
    let (f, vh, _) = gso_tcp(false, None, 3000, 1000);
    let mut v = Vtep::vxlan(LOCAL);
    let mut s =
        EncapSegments::new(&mut v, Peer { remote: REMOTE, tunnel: Tunnel::Vxlan(vni(1)) }, &f, &vh, 1500).unwrap();
    let mut small = vec![0u8; 500];
    assert_eq!(s.next_into(&mut small, 0), Some(Err(EncapError::BufferTooSmall)));
    assert_eq!(s.next_into(&mut small, 10_000), Some(Err(EncapError::BufferTooSmall)));
    assert_eq!(s.next_batch(&mut small), Some(Err(EncapError::BufferTooSmall)));
    assert_eq!(s.remaining(), 3);
    let mut big = vec![0u8; 2000];
    assert!(matches!(s.next_into(&mut big, 0), Some(Ok(_))));
    assert_eq!(s.remaining(), 2);
}

/// Splits a `UDP_SEGMENT` batch into datagram payloads the way the kernel does.
fn split(buf: &[u8], b: &UdpGsoBatch) -> Vec<Vec<u8>> {
    buf[b.range()].chunks(b.seg_size as usize).map(<[u8]>::to_vec).collect()
}

#[test]
fn udp_segment_batch_layout() {
    for t in [Tunnel::Vxlan(vni(99)), Tunnel::Udp] {
        for vlan in [None, Some(3)] {
            let (f, vh, payload) = gso_tcp(false, vlan, 65_000, 1448);
            let mut v = vtep_for(t, LOCAL);
            let mut s = EncapSegments::new(&mut v, Peer { remote: REMOTE, tunnel: t }, &f, &vh, 1500).unwrap();
            let total = s.segment_count();
            let mut buf = vec![0u8; 70_000];
            let mut got = Vec::new();
            let mut batches = 0;
            let mut segs = 0;
            while let Some(r) = s.next_batch(&mut buf) {
                let b = r.unwrap();
                batches += 1;
                segs += b.segs;
                assert!(b.segs <= UDP_GSO_MAX_SEGS);
                assert!(b.len <= UDP_GSO_MAX_PAYLOAD);
                assert!(b.seg_size as usize + 28 <= 1500, "datagram plus outer IPv4/UDP fits the MTU");
                let dgrams = split(&buf, &b);
                assert_eq!(dgrams.len(), b.segs);
                for (i, d) in dgrams.iter().enumerate() {
                    if i + 1 < dgrams.len() {
                        assert_eq!(d.len(), b.seg_size as usize, "all but the last are seg_size");
                    } else {
                        assert!(d.len() <= b.seg_size as usize);
                    }
                    let fr = match t {
                        Tunnel::Vxlan(_) => {
                            let dp = vxlan::decap_payload(d).unwrap();
                            assert_eq!(dp.tunnel, t);
                            assert_eq!(&d[..8], &[8, 0, 0, 0, 0, 0, 99, 0]);
                            d[dp.inner_range()].to_vec()
                        }
                        _ => {
                            let dp = udp::decap_payload(d).unwrap();
                            assert_eq!(dp.inner_len, d.len());
                            let mut fr = f[..if vlan.is_some() { 18 } else { 14 }].to_vec();
                            fr.extend_from_slice(d);
                            fr
                        }
                    };
                    got.extend_from_slice(&inner_ok(&fr));
                }
            }
            assert_eq!(segs, total);
            assert_eq!(batches, 2, "65000 bytes need two 64 KiB batches");
            assert_eq!(got, payload, "{t:?} vlan {vlan:?}");
            assert_eq!(v.next_id, 0, "the kernel numbers UDP_SEGMENT packets");
        }
    }
}

#[test]
fn udp_segment_batch_limits_and_gre() {
    let (f, vh, _) = gso_tcp(false, None, 30_000, 1000);
    let t = Tunnel::Vxlan(vni(1));
    let mut v = Vtep::vxlan(LOCAL);
    let mut s = EncapSegments::new(&mut v, Peer { remote: REMOTE, tunnel: t }, &f, &vh, 1500).unwrap();
    // A buffer for 3.5 datagrams takes 3.
    let stride = 8 + 54 + 1000;
    let mut buf = vec![0u8; stride * 7 / 2];
    let b = s.next_batch(&mut buf).unwrap().unwrap();
    assert_eq!((b.segs, b.off, b.len, b.seg_size as usize), (3, 0, 3 * stride, stride));
    let mut big = vec![0u8; 70_000];
    let b = s.next_batch(&mut big).unwrap().unwrap();
    assert_eq!(b.segs, 27);
    assert_eq!(b.len, 27 * stride);
    assert!(s.next_batch(&mut big).is_none());
    // A single short datagram reports its own length.
    let one = udp4(None, 1, 2, b"tiny");
    let mut s =
        EncapSegments::new(&mut v, Peer { remote: REMOTE, tunnel: t }, &one, &VnetHdr::default(), 1500).unwrap();
    let b = s.next_batch(&mut big).unwrap().unwrap();
    assert_eq!((b.segs, b.len, b.seg_size as usize), (1, 8 + one.len(), 8 + one.len()));
    // GRE is not UDP.
    let mut g = Vtep::gre(LOCAL);
    let mut s = EncapSegments::new(&mut g, Peer { remote: REMOTE, tunnel: Tunnel::Gre(None) }, &f, &vh, 1500).unwrap();
    assert_eq!(s.next_batch(&mut big), Some(Err(EncapError::NotUdp)));
    assert_eq!(s.src_port(), 0);
    // Many tiny segments stop at UDP_GSO_MAX_SEGS per batch.
    let (f, vh, _) = gso_tcp(false, None, 10_000, 50);
    let mut s = EncapSegments::new(&mut v, Peer { remote: REMOTE, tunnel: t }, &f, &vh, 1500).unwrap();
    let b = s.next_batch(&mut big).unwrap().unwrap();
    assert_eq!(b.segs, UDP_GSO_MAX_SEGS);
}
