//! Offloads on frames whose virtio-net header a sandbox controls: software GSO
//! (`Segmenter`, both checksum modes, short output buffers), checksum completion and
//! verification, header parsing, the segmenting encapsulation (`EncapSegments`), and the
//! GRO-style TCP coalescer fed a first segment plus followers (exact continuations
//! with fuzzed changes, or arbitrary frames).
//!
//! Oracles besides "no panic": a segment never exceeds the buffer it was written to; a
//! super-frame the coalescer finished is accepted by the segmenter again, into as many
//! segments as were merged.
#![no_main]

use dataplane::encap::{EncapSegments, Peer, Tunnel, Vni, Vtep};
use dataplane::offload::{complete_checksum, parse_headers, verify_checksums, SegCsum, Segmenter, TcpCoalescer};
use dataplane::vnet::VnetHdr;
use libfuzzer_sys::fuzz_target;
use vswitchd_fuzz::{addr::*, build_frame, Cursor};

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let mode = c.u8();
    let vh = c.vnet();
    let mut frame = Vec::new();
    build_frame(&mut c, &mut frame);
    match mode % 4 {
        0 | 1 => gso(&frame, &vh, &mut c),
        2 => encap_segments(&frame, &vh, &mut c),
        _ => gro(&frame, &mut c),
    }
    // Checksum completion and verification on anything.
    let _ = parse_headers(&frame);
    let mut f = frame.clone();
    if complete_checksum(&mut f, &vh).is_ok() && vh.needs_csum() && vh.csum_offset != 0 {
        // A completed checksum leaves the rest of the frame alone.
        let cs = vh.csum_start as usize + vh.csum_offset as usize;
        assert_eq!(f[..cs], frame[..cs]);
    }
    let _ = verify_checksums(&f);
});

fn gso(frame: &[u8], vh: &VnetHdr, c: &mut Cursor<'_>) {
    let mode = if c.bool() { SegCsum::Full } else { SegCsum::Partial };
    let Ok(mut s) = Segmenter::new(frame, vh, mode) else { return };
    let count = s.segment_count();
    assert!(count >= 1);
    let max = s.max_segment_len();
    let mut dst = vec![0u8; max + 16];
    let mut n = 0;
    // Sometimes offer too small a buffer first: must not advance or panic.
    if c.bool() {
        let short = c.u16() as usize % (max + 1);
        if let Some(Ok((len, _))) = s.next_into(&mut dst[..short]) {
            assert!(len <= short);
            n += 1;
        }
    }
    while let Some(r) = s.next_into(&mut dst) {
        match r {
            Ok((len, out)) => {
                assert!(len <= max, "segment {len} longer than max_segment_len {max}");
                assert!(!out.is_gso());
                if mode == SegCsum::Full && vh.is_gso() {
                    let _ = verify_checksums(&dst[..len]);
                }
                n += 1;
            }
            Err(_) => break,
        }
        assert!(n <= count, "more segments than announced");
    }
}

fn encap_segments(frame: &[u8], vh: &VnetHdr, c: &mut Cursor<'_>) {
    let tunnel = match c.u8() % 3 {
        0 => Tunnel::Vxlan(Vni::new(42).unwrap()),
        1 => Tunnel::Gre(if c.bool() { Some(7) } else { None }),
        _ => Tunnel::Udp,
    };
    let mut vtep = match tunnel {
        Tunnel::Vxlan(_) => Vtep::vxlan(LOCAL_HOST),
        Tunnel::Gre(_) => Vtep::gre(LOCAL_HOST),
        Tunnel::Udp => Vtep::udp(LOCAL_HOST),
    };
    vtep.tx_csum = c.bool();
    let mtu = match c.u8() % 4 {
        0 => 1500,
        1 => 9000,
        2 => 576,
        _ => c.u16(),
    };
    let peer = Peer { remote: PEER_HOST, tunnel };
    let batch = c.bool();
    let Ok(mut es) = EncapSegments::new(&mut vtep, peer, frame, vh, mtu) else { return };
    let mut buf = vec![0u8; dataplane::buf::BUF_SIZE];
    let max = es.max_packet_len();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 70_000, "encap segmentation does not end");
        if batch {
            match es.next_batch(&mut buf) {
                None => break,
                Some(Ok(b)) => assert!(b.off + b.len <= buf.len()),
                Some(Err(_)) => break,
            }
        } else {
            match es.next_into(&mut buf, 256) {
                None => break,
                Some(Ok(e)) => {
                    assert!(e.end() <= buf.len());
                    assert!(e.len <= max, "outer packet longer than max_packet_len");
                    assert!(e.len <= mtu as usize, "outer packet {} > mtu {mtu}", e.len);
                }
                Some(Err(_)) => break,
            }
        }
    }
}

fn gro(first: &[u8], c: &mut Cursor<'_>) {
    let verify = c.bool();
    let co = if verify { TcpCoalescer::start(first) } else { TcpCoalescer::start_unverified(first) };
    let Some(mut co) = co else { return };
    if c.bool() {
        co = co.with_max_len(c.u16() as usize);
    }
    let mut buf = vec![0u8; dataplane::buf::BUF_SIZE];
    buf[..first.len()].copy_from_slice(first);
    let mut seg = Vec::new();
    let n = c.u8() % 12;
    for _ in 0..n {
        let prev = std::mem::take(&mut seg);
        let base = if prev.is_empty() { first } else { &prev[..] };
        if c.u8() % 3 == 0 && vswitchd_fuzz::follow_up(c, base, &mut seg) {
            // An exact continuation of the flow.
        } else if c.bool() {
            build_frame(c, &mut seg);
        } else {
            // The next segment of the same flow, with a few fuzzed bytes.
            seg.clear();
            seg.extend_from_slice(first);
            let edits = c.u8() % 4;
            for _ in 0..edits {
                let at = c.u16() as usize;
                if let Some(b) = seg.get_mut(at % first.len().max(1)) {
                    *b = c.u8();
                }
            }
            let extra = c.u8() as usize;
            seg.extend(std::iter::repeat(0x5a).take(extra));
        }
        let _ = co.try_append(&mut buf, &seg);
    }
    let segs = co.segments();
    let Ok((len, vh)) = co.finish(&mut buf) else { return };
    assert!(len <= buf.len());
    // What GRO produced, GSO must be able to take apart again.
    let out = &buf[..len];
    match Segmenter::new(out, &vh, SegCsum::Full) {
        Ok(s) => {
            if vh.is_gso() {
                assert_eq!(s.segment_count(), segs, "re-segmenting a coalesced frame gives another count");
            }
        }
        Err(e) => panic!("segmenter refuses what the coalescer built: {e:?} ({segs} segments, {vh:?})"),
    }
}
