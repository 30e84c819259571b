//! Tests of `gso::Segmenter`: every segment is compared byte for byte with a frame built
//! independently for that segment's expected fields, and checked with etherparse.

use super::tests::*;
use super::*;
use crate::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4};

/// A kernel-style super-frame for `s`: complete IPv4 header checksum, L4 checksum field
/// holding the pseudo-header sum, and the matching GSO header.
pub(super) fn super_frame(s: &Spec, mss: u16) -> (Built, VnetHdr) {
    let mut b = build(s);
    let mut vh = make_partial(&mut b, s.ipv6, s.udp);
    vh.gso_type = match (s.udp, s.ipv6) {
        (true, _) => GSO_UDP_L4,
        (false, false) => GSO_TCPV4,
        (false, true) => GSO_TCPV6,
    };
    if !s.udp && s.flags & TCP_CWR != 0 {
        vh.gso_type |= GSO_ECN;
    }
    vh.gso_size = mss;
    (b, vh)
}

pub(super) fn segment_all(frame: &[u8], vh: &VnetHdr, mode: SegCsum) -> Vec<(Vec<u8>, VnetHdr)> {
    let mut sg = Segmenter::new(frame, vh, mode).expect("segmenter accepts frame");
    let max = sg.max_segment_len();
    let count = sg.segment_count();
    let mut segs = Vec::new();
    let mut buf = vec![0u8; max];
    while let Some(r) = sg.next_into(&mut buf) {
        let (n, svh) = r.unwrap();
        segs.push((buf[..n].to_vec(), svh));
    }
    assert_eq!(segs.len(), count);
    assert_eq!(sg.remaining(), 0);
    assert!(sg.next_into(&mut buf).is_none());
    segs
}

/// The frame segment `i` must equal: the spec with that chunk of payload and the
/// per-segment fields the kernel rewrites.
fn expected_segment(s: &Spec, mss: usize, i: usize, count: usize) -> Vec<u8> {
    let off = i * mss;
    let end = (off + mss).min(s.payload.len());
    let last = i + 1 == count;
    let mut e = s.clone();
    e.payload = s.payload[off.min(end)..end].to_vec();
    e.ip_id = s.ip_id.wrapping_add(i as u16);
    e.seq = s.seq.wrapping_add(off as u32);
    if !last {
        e.flags &= !(TCP_FIN | TCP_PSH);
    }
    if i > 0 {
        e.flags &= !TCP_CWR;
    }
    build(&e).frame
}

/// Segments `s` in both modes and checks everything.
fn check(s: &Spec, mss: u16) {
    let (b, vh) = super_frame(s, mss);
    let mss_us = mss as usize;
    let n = s.payload.len();
    let count = n.div_ceil(mss_us).max(1);
    let full = segment_all(&b.frame, &vh, SegCsum::Full);
    assert_eq!(full.len(), count, "n={n} mss={mss}");
    let mut concat = Vec::new();
    for (i, (seg, svh)) in full.iter().enumerate() {
        assert_eq!(*svh, VnetHdr::default());
        let exp = expected_segment(s, mss_us, i, count);
        assert_eq!(seg.len(), exp.len(), "seg {i} len");
        assert!(seg == &exp, "seg {i} of {count} differs (n={n} mss={mss} {s:?})");
        assert_eq!(verify_checksums(seg), Ok(true));
        let p = oracle(seg);
        let payload = p.payload.slice();
        assert!(payload.len() == mss_us || (i + 1 == count && payload.len() <= mss_us));
        match &p.net {
            Some(etherparse::NetHeaders::Ipv4(ip, _)) => {
                assert_eq!(ip.total_len as usize, seg.len() - b.l3);
                assert_eq!(ip.identification, s.ip_id.wrapping_add(i as u16));
            }
            Some(etherparse::NetHeaders::Ipv6(ip, _)) => {
                assert_eq!(ip.payload_length as usize, seg.len() - b.l3 - 40)
            }
            _ => panic!(),
        }
        match &p.transport {
            Some(etherparse::TransportHeader::Tcp(t)) => {
                assert_eq!(t.sequence_number, s.seq.wrapping_add((i * mss_us) as u32));
                let last = i + 1 == count;
                assert_eq!(t.fin, last && s.flags & TCP_FIN != 0);
                assert_eq!(t.psh, last && s.flags & TCP_PSH != 0);
                assert_eq!(t.cwr, i == 0 && s.flags & TCP_CWR != 0);
                assert_eq!(t.ece, s.flags & TCP_ECE != 0);
            }
            Some(etherparse::TransportHeader::Udp(u)) => {
                assert_eq!(u.length as usize, seg.len() - b.l4)
            }
            _ => panic!(),
        }
        concat.extend_from_slice(payload);
    }
    assert!(concat == s.payload, "payload reassembles");
    // Partial mode: completing each segment's checksum gives the Full-mode segment.
    let part = segment_all(&b.frame, &vh, SegCsum::Partial);
    assert_eq!(part.len(), count);
    for ((pseg, pvh), (fseg, _)) in part.iter().zip(&full) {
        assert_eq!(pvh.flags, F_NEEDS_CSUM);
        assert_eq!(pvh.gso_type, GSO_NONE);
        assert_eq!(pvh.csum_start as usize, b.l4);
        assert_eq!(pvh.csum_offset, if s.udp { 6 } else { 16 });
        assert_eq!(pvh.hdr_len as usize, b.hdr_len);
        let mut c = pseg.clone();
        complete_checksum(&mut c, pvh).unwrap();
        assert!(&c == fseg);
    }
}

fn flag_variants(rng: &mut Rng) -> u8 {
    let mut f = TCP_ACK;
    for bit in [TCP_FIN, TCP_PSH, TCP_CWR, TCP_ECE] {
        if rng.one_in(3) {
            f |= bit;
        }
    }
    f
}

#[test]
fn segment_fixed_cases() {
    let mut rng = Rng(10);
    for s in shapes() {
        for (n, mss) in [
            (0usize, 1448u16),
            (1, 1448),
            (1448, 1448),
            (1449, 1448),
            (4000, 536),
            (3 * 1448, 1448),
            (20000, 8948),
            (10, 1),
            (100, 7),
        ] {
            let s = Spec { payload: rng.bytes(n), flags: flag_variants(&mut rng), ..s.clone() };
            check(&s, mss);
        }
    }
}

#[test]
fn segment_random_large() {
    let mut rng = Rng(11);
    let shapes = shapes();
    for _ in 0..120 {
        let s = &shapes[rng.range(0, shapes.len() - 1)];
        let n = rng.range(1, 65000);
        let mss = [536u16, 1448, 8948, 1460, 1220][rng.range(0, 4)];
        let s = Spec {
            payload: rng.bytes(n),
            flags: flag_variants(&mut rng),
            seq: rng.next() as u32, // exercises wrap-around
            ip_id: rng.next() as u16,
            df: rng.one_in(2),
            ..s.clone()
        };
        check(&s, mss);
    }
}

#[test]
fn single_segment_is_the_plain_frame() {
    for s in shapes() {
        let s = Spec { payload: vec![7; 100], flags: TCP_ACK | TCP_PSH | TCP_FIN, ..s };
        let (b, vh) = super_frame(&s, 1448);
        let segs = segment_all(&b.frame, &vh, SegCsum::Full);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].0, build(&s).frame);
    }
}

#[test]
fn ethernet_padding_is_dropped() {
    let s = Spec { payload: vec![3; 3000], ..Spec::default() };
    let (mut b, vh) = super_frame(&s, 1000);
    let clean = segment_all(&b.frame, &vh, SegCsum::Full);
    b.frame.extend_from_slice(&[0; 7]);
    assert_eq!(segment_all(&b.frame, &vh, SegCsum::Full), clean);
}

#[test]
fn wrong_partial_sum_in_super_frame_is_ignored() {
    let s = Spec { payload: vec![5; 5000], ..Spec::default() };
    let (mut b, vh) = super_frame(&s, 1448);
    let good = segment_all(&b.frame, &vh, SegCsum::Full);
    b.frame[b.l4 + 16] ^= 0x55;
    b.frame[b.l3 + 10] ^= 0x33; // and the IPv4 header checksum
    assert_eq!(segment_all(&b.frame, &vh, SegCsum::Full), good);
}

#[test]
fn buffer_too_small_does_not_advance() {
    let s = Spec { payload: vec![1; 3000], ..Spec::default() };
    let (b, vh) = super_frame(&s, 1448);
    let mut sg = Segmenter::new(&b.frame, &vh, SegCsum::Full).unwrap();
    let max = sg.max_segment_len();
    assert_eq!(max, b.hdr_len + 1448);
    let mut small = vec![0u8; max - 1];
    assert_eq!(sg.next_into(&mut small), Some(Err(OffloadError::BufferTooSmall)));
    assert_eq!(sg.remaining(), 3);
    let mut buf = vec![0u8; max];
    let (n, _) = sg.next_into(&mut buf).unwrap().unwrap();
    assert_eq!(n, max);
    assert_eq!(&buf[..n], &expected_segment(&s, 1448, 0, 3)[..]);
    // The last segment is short and fits the small buffer.
    sg.next_into(&mut buf).unwrap().unwrap();
    let (n, _) = sg.next_into(&mut small).unwrap().unwrap();
    assert_eq!(n, b.hdr_len + 3000 - 2 * 1448);
}

#[test]
fn pass_through_non_gso() {
    let s = Spec { payload: vec![9; 700], ..Spec::default() };
    let plain = build(&s).frame;
    let mut b = build(&s);
    let vh = make_partial(&mut b, false, false);
    let segs = segment_all(&b.frame, &vh, SegCsum::Full);
    assert_eq!(segs, vec![(plain, VnetHdr::default())]);
    let segs = segment_all(&b.frame, &vh, SegCsum::Partial);
    assert_eq!(segs, vec![(b.frame.clone(), vh)]);
    // Bad offsets in a pass-through frame surface from next_into in Full mode.
    let bad = VnetHdr { csum_start: 5000, ..vh };
    let mut sg = Segmenter::new(&b.frame, &bad, SegCsum::Full).unwrap();
    let mut buf = vec![0u8; sg.max_segment_len()];
    assert_eq!(sg.next_into(&mut buf), Some(Err(OffloadError::BadCsumOffset)));
}

#[test]
fn malformed_and_mismatched_input() {
    let s4 = Spec { payload: vec![1; 3000], ..Spec::default() };
    let (b4, vh4) = super_frame(&s4, 1000);
    let s6 = Spec { ipv6: true, ..s4.clone() };
    let (b6, vh6) = super_frame(&s6, 1000);
    let su = Spec { udp: true, ..s4.clone() };
    let (bu, vhu) = super_frame(&su, 1000);
    let e = |f: &[u8], vh: &VnetHdr| Segmenter::new(f, vh, SegCsum::Full).err();
    assert_eq!(e(&b4.frame, &VnetHdr { gso_size: 0, ..vh4 }), Some(OffloadError::BadGsoSize));
    assert_eq!(e(&b4.frame, &VnetHdr { gso_type: GSO_UDP, ..vh4 }), Some(OffloadError::Unsupported(Unsupported::Ufo)));
    assert_eq!(e(&b4.frame, &VnetHdr { gso_type: 2, ..vh4 }), Some(OffloadError::Unsupported(Unsupported::GsoType)));
    assert_eq!(e(&b4.frame, &VnetHdr { gso_type: GSO_TCPV6, ..vh4 }), Some(OffloadError::GsoMismatch));
    assert_eq!(e(&b6.frame, &VnetHdr { gso_type: GSO_TCPV4, ..vh6 }), Some(OffloadError::GsoMismatch));
    assert_eq!(e(&bu.frame, &VnetHdr { gso_type: GSO_TCPV4, ..vhu }), Some(OffloadError::GsoMismatch));
    assert_eq!(e(&b4.frame, &VnetHdr { gso_type: GSO_UDP_L4, ..vh4 }), Some(OffloadError::GsoMismatch));
    for n in 0..b4.hdr_len {
        assert_eq!(e(&b4.frame[..n], &vh4), Some(OffloadError::Truncated), "cut at {n}");
    }
    assert_eq!(e(&b4.frame[..b4.frame.len() - 1], &vh4), Some(OffloadError::Truncated));
    let mut f = b4.frame.clone();
    f[b4.l3] = 0x43; // IHL 3
    assert_eq!(e(&f, &vh4), Some(OffloadError::BadHeader));
    let mut f = b4.frame.clone();
    f[b4.l3] = 0x4f; // IHL 15: past the TCP header, still within the datagram
    assert!(e(&f, &vh4).is_some() || Segmenter::new(&f, &vh4, SegCsum::Full).is_ok());
    let mut f = b4.frame.clone();
    f[b4.l3 + 2] = 0;
    f[b4.l3 + 3] = 10; // total length < IHL
    assert_eq!(e(&f, &vh4), Some(OffloadError::BadHeader));
    let mut f = b4.frame.clone();
    f[b4.l3 + 7] = 1; // fragment offset
    assert_eq!(e(&f, &vh4), Some(OffloadError::Unsupported(Unsupported::Fragment)));
    let mut f = b4.frame.clone();
    f[b4.l4 + 12] = 0x30; // TCP data offset 3
    assert_eq!(e(&f, &vh4), Some(OffloadError::BadHeader));
    // The advisory hdr_len is ignored.
    let ok = segment_all(&b4.frame, &vh4, SegCsum::Full);
    assert_eq!(segment_all(&b4.frame, &VnetHdr { hdr_len: 3, ..vh4 }, SegCsum::Full), ok);
}

#[test]
fn fuzz_segmenter_no_panic() {
    let mut rng = Rng(12);
    let mut seeds = Vec::new();
    for s in shapes() {
        let s = Spec { payload: rng.bytes(300), flags: flag_variants(&mut rng), ..s };
        seeds.push(super_frame(&s, 100));
    }
    let mut buf = vec![0u8; 2048];
    for _ in 0..fuzz_iters(40_000) {
        let (frame, mut vh) = if rng.one_in(4) {
            let n = rng.range(0, 400);
            let vh = VnetHdr {
                flags: rng.next() as u8,
                gso_type: [0u8, 1, 3, 4, 5, 0x81, 0x85, rng.next() as u8][rng.range(0, 7)],
                hdr_len: rng.next() as u16,
                gso_size: rng.range(0, 300) as u16,
                csum_start: rng.range(0, 200) as u16,
                csum_offset: rng.range(0, 40) as u16,
            };
            (rng.bytes(n), vh)
        } else {
            let (b, vh) = &seeds[rng.range(0, seeds.len() - 1)];
            let mut f = b.frame.clone();
            for _ in 0..rng.range(0, 3) {
                let p = rng.range(0, 90.min(f.len() - 1));
                f[p] = rng.next() as u8;
            }
            let cut = rng.range(0, f.len());
            f.truncate(cut);
            (f, *vh)
        };
        if rng.one_in(4) {
            vh.gso_size = rng.range(0, 400) as u16;
        }
        let mode = if rng.one_in(2) { SegCsum::Full } else { SegCsum::Partial };
        if let Ok(mut sg) = Segmenter::new(&frame, &vh, mode) {
            let count = sg.segment_count();
            let max = sg.max_segment_len();
            assert!(max <= frame.len());
            let mut got = 0;
            for _ in 0..count + 2 {
                let len = if rng.one_in(8) { rng.range(0, max) } else { max };
                match sg.next_into(&mut buf[..len.min(2048)]) {
                    None => break,
                    Some(Ok((n, svh))) => {
                        assert!(n <= max);
                        let mut seg = buf[..n].to_vec();
                        let _ = complete_checksum(&mut seg, &svh);
                        got += 1;
                    }
                    Some(Err(_)) => {}
                }
            }
            assert!(got <= count);
        }
    }
}
