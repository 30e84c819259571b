//! Tests of `gro::TcpCoalescer`: segment → coalesce round trips against the original
//! super-frame, and every refusal rule.

use super::tests::*;
use super::tests_gso::{segment_all, super_frame};
use super::*;
use crate::vnet::{VnetHdr, GSO_ECN};

/// Coalesces `segs` into a fresh 64 KiB buffer; returns how many were taken, the frame
/// and its header.
fn coalesce(segs: &[Vec<u8>]) -> (usize, Vec<u8>, VnetHdr) {
    let mut buf = vec![0u8; gro::DEFAULT_MAX_LEN];
    let mut c = TcpCoalescer::start(&segs[0]).expect("first segment starts a train");
    buf[..segs[0].len()].copy_from_slice(&segs[0]);
    let mut taken = 1;
    for s in &segs[1..] {
        if !c.try_append(&mut buf, s) {
            break;
        }
        taken += 1;
    }
    assert_eq!(c.segments(), taken);
    let (n, vh) = c.finish(&mut buf).unwrap();
    assert_eq!(n, c.len());
    buf.truncate(n);
    (taken, buf, vh)
}

/// The same with the super-frame in a `Vec` grown by `try_extend`; must give exactly
/// what `coalesce` gives.
fn coalesce_vec(segs: &[Vec<u8>]) -> (usize, Vec<u8>, VnetHdr) {
    let mut c = TcpCoalescer::start_unverified(&segs[0]).expect("first segment starts a train");
    let mut buf = segs[0][..c.len()].to_vec();
    let mut taken = 1;
    for s in &segs[1..] {
        if !c.try_extend(&mut buf, s) {
            break;
        }
        taken += 1;
    }
    let mut wrong = buf.clone();
    wrong.push(0);
    assert!(!c.try_extend(&mut wrong, &segs[0]), "a Vec longer than the frame is refused");
    let (n, vh) = c.finish(&mut buf).unwrap();
    assert_eq!(n, buf.len());
    (taken, buf, vh)
}

fn segs_of(s: &Spec, mss: u16) -> (Built, VnetHdr, Vec<Vec<u8>>) {
    let (b, vh) = super_frame(s, mss);
    let segs = segment_all(&b.frame, &vh, SegCsum::Full).into_iter().map(|x| x.0).collect();
    (b, vh, segs)
}

fn tcp_shapes() -> Vec<Spec> {
    shapes().into_iter().filter(|s| !s.udp).collect()
}

/// Segment, coalesce, compare with the original super-frame, and re-segment.
fn roundtrip(s: &Spec, mss: u16) {
    let (b, svh, segs) = segs_of(s, mss);
    if segs.len() == 1 && s.flags & TCP_PSH != 0 {
        assert!(TcpCoalescer::start(&segs[0]).is_none(), "PSH first segment starts nothing");
        return;
    }
    let (taken, frame, vh) = coalesce(&segs);
    assert_eq!(taken, segs.len(), "all segments taken ({s:?})");
    assert_eq!(coalesce_vec(&segs), (taken, frame.clone(), vh), "try_extend gives what try_append gives");
    if segs.len() == 1 {
        assert_eq!(vh, VnetHdr::default());
        assert_eq!(frame, segs[0]);
        return;
    }
    assert!(frame == b.frame, "coalesced frame equals the original super-frame");
    assert_eq!(vh, svh);
    assert_eq!(vh.gso_type & GSO_ECN != 0, s.flags & TCP_CWR != 0);
    let again: Vec<Vec<u8>> = segment_all(&frame, &vh, SegCsum::Full).into_iter().map(|x| x.0).collect();
    assert!(again == segs, "re-segmenting gives the same segments");
    let mut done = frame.clone();
    complete_checksum(&mut done, &vh).unwrap();
    assert_eq!(verify_checksums(&done), Ok(true));
    oracle(&done);
}

#[test]
fn roundtrip_shapes_and_sizes() {
    let mut rng = Rng(20);
    for s in tcp_shapes() {
        for (n, mss) in
            [(2 * 1448, 1448u16), (2 * 1448 + 1, 1448), (10_000, 536), (30_000, 8948), (500, 100), (100, 1448)]
        {
            for flags in [TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK | TCP_CWR, TCP_ACK | TCP_ECE | TCP_PSH] {
                let s = Spec { payload: rng.bytes(n), flags, ..s.clone() };
                roundtrip(&s, mss);
            }
        }
    }
}

#[test]
fn roundtrip_random() {
    let mut rng = Rng(21);
    let shapes = tcp_shapes();
    for _ in 0..80 {
        let s = &shapes[rng.range(0, shapes.len() - 1)];
        let n = rng.range(1, 65000);
        let s = Spec {
            payload: rng.bytes(n),
            seq: rng.next() as u32,
            ip_id: rng.next() as u16,
            df: rng.one_in(2),
            flags: if rng.one_in(2) { TCP_ACK } else { TCP_ACK | TCP_PSH },
            ..s.clone()
        };
        roundtrip(&s, [536u16, 1448, 8948][rng.range(0, 2)]);
    }
}

#[test]
fn fin_segment_is_not_appended() {
    let s = Spec { payload: vec![4; 5000], flags: TCP_ACK | TCP_FIN | TCP_PSH, ..Spec::default() };
    let (_, _, segs) = segs_of(&s, 1000);
    assert_eq!(segs.len(), 5);
    let (taken, frame, vh) = coalesce(&segs);
    assert_eq!(taken, 4);
    assert_eq!(vh.gso_size, 1000);
    let again: Vec<Vec<u8>> = segment_all(&frame, &vh, SegCsum::Full).into_iter().map(|x| x.0).collect();
    assert!(again[..] == segs[..4]);
    // A FIN or SYN/RST/URG/PSH first segment does not start a train.
    for f in [TCP_FIN, TCP_SYN, TCP_RST, TCP_URG, TCP_PSH] {
        let b = build(&Spec { payload: vec![1; 10], flags: TCP_ACK | f, ..Spec::default() });
        assert!(TcpCoalescer::start(&b.frame).is_none(), "flag {f:#x}");
    }
}

struct Flow {
    segs: Vec<Vec<u8>>,
    base: Spec,
    mss: usize,
}

fn flow(s: Spec) -> Flow {
    let base = Spec { payload: (0..5000u32).map(|i| (i * 7) as u8).collect(), ..s };
    let (_, _, segs) = segs_of(&base, 1000);
    Flow { segs, base, mss: 1000 }
}

impl Flow {
    /// Segment `i` (`len` payload bytes from offset i*mss of the stream), built from
    /// `f(spec)`.
    fn seg(&self, i: usize, len: usize, f: impl Fn(&mut Spec)) -> Vec<u8> {
        let mut s = self.base.clone();
        let off = i * self.mss;
        s.payload = (0..len).map(|k| self.base.payload.get(off + k).copied().unwrap_or(0xab)).collect();
        s.seq = self.base.seq.wrapping_add((i * self.mss) as u32);
        s.ip_id = self.base.ip_id.wrapping_add(i as u16);
        f(&mut s);
        build(&s).frame
    }
    fn start(&self) -> (TcpCoalescer, Vec<u8>) {
        let mut buf = vec![0u8; 65535];
        buf[..self.segs[0].len()].copy_from_slice(&self.segs[0]);
        (TcpCoalescer::start(&self.segs[0]).unwrap(), buf)
    }
    /// `seg` is refused right after the first segment, and nothing changed.
    fn refused(&self, seg: &[u8], what: &str) {
        let (mut c, mut buf) = self.start();
        let before = buf.clone();
        assert!(!c.try_append(&mut buf, seg), "{what} must be refused");
        assert!(buf == before);
        assert_eq!((c.len(), c.segments()), (self.segs[0].len(), 1));
        // While the right one is still accepted.
        assert!(c.try_append(&mut buf, &self.segs[1]), "{what}: good segment still taken");
    }
}

#[test]
fn refusals_ipv4() {
    let fl = flow(Spec { tcp_opts: ts_opt(100), ..Spec::default() });
    assert!(fl.seg(1, 1000, |_| {}) == fl.segs[1], "helper builds the real next segment");
    fl.refused(&fl.segs[2], "out of order");
    fl.refused(&fl.segs[0], "duplicate");
    fl.refused(&fl.seg(1, 1000, |s| s.sport = 1), "other flow (port)");
    fl.refused(&fl.seg(1, 1000, |s| s.ttl = 63), "ttl");
    fl.refused(&fl.seg(1, 1000, |s| s.tos = 4), "tos");
    fl.refused(&fl.seg(1, 1000, |s| s.window = 7), "window");
    fl.refused(&fl.seg(1, 1000, |s| s.ack += 1), "ack");
    fl.refused(&fl.seg(1, 1000, |s| s.tcp_opts = ts_opt(101)), "timestamp");
    fl.refused(&fl.seg(1, 1000, |s| s.tcp_opts = vec![]), "options length");
    fl.refused(&fl.seg(1, 1000, |s| s.ip_opts = vec![1, 1, 1, 1]), "ip options length");
    fl.refused(&fl.seg(1, 1000, |s| s.df = false), "df");
    fl.refused(&fl.seg(1, 1000, |s| s.ip_id += 5), "ip id");
    fl.refused(&fl.seg(1, 1000, |s| s.vlans = vec![5]), "vlan");
    fl.refused(&fl.seg(1, 1001, |_| {}), "larger than gso_size");
    fl.refused(&fl.seg(1, 0, |_| {}), "no payload");
    for f in [TCP_FIN, TCP_SYN, TCP_RST, TCP_URG, TCP_CWR, TCP_ECE] {
        fl.refused(&fl.seg(1, 1000, |s| s.flags |= f), "flag");
    }
    fl.refused(&fl.seg(1, 1000, |s| s.flags = TCP_PSH), "no ack");
    fl.refused(&fl.seg(1, 1000, |s| s.udp = true), "udp");
    fl.refused(&fl.seg(1, 1000, |s| s.ipv6 = true), "ipv6");
    let mut bad = fl.segs[1].clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    fl.refused(&bad, "bad tcp checksum");
    let mut bad = fl.segs[1].clone();
    bad[14 + 10] ^= 1; // IPv4 header checksum
    fl.refused(&bad, "bad ip checksum");
    let mut frag = fl.segs[1].clone();
    frag[14 + 6] |= 0x20;
    fl.refused(&frag, "fragment");
    fl.refused(&fl.segs[1][..fl.segs[1].len() - 1], "truncated");
    // Unverified mode takes the bad checksum.
    let mut buf = vec![0u8; 65535];
    buf[..fl.segs[0].len()].copy_from_slice(&fl.segs[0]);
    let mut c = TcpCoalescer::start_unverified(&fl.segs[0]).unwrap();
    let mut bad = fl.segs[1].clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(c.try_append(&mut buf, &bad));
}

#[test]
fn refusals_ipv6() {
    let fl = flow(Spec { ipv6: true, v6_ext: true, vlans: vec![3, 4], ..Spec::default() });
    fl.refused(&fl.segs[2], "out of order");
    fl.refused(&fl.seg(1, 1000, |s| s.ttl = 1), "hop limit");
    fl.refused(&fl.seg(1, 1000, |s| s.tos = 1), "traffic class");
    fl.refused(&fl.seg(1, 1000, |s| s.v6_ext = false), "ext headers");
    fl.refused(&fl.seg(1, 1000, |s| s.vlans = vec![3, 5]), "inner vlan");
    let mut other = fl.segs[1].clone();
    other[22 + 3] ^= 1; // flow label (not covered by any checksum)
    fl.refused(&other, "flow label");
    let mut other = fl.segs[1].clone();
    other[0] ^= 1; // destination MAC
    fl.refused(&other, "mac");
}

#[test]
fn smaller_segment_ends_the_train() {
    let fl = flow(Spec::default());
    let (mut c, mut buf) = fl.start();
    assert!(c.try_append(&mut buf, &fl.seg(1, 500, |_| {})));
    assert!(c.is_closed());
    assert!(!c.try_append(&mut buf, &fl.seg(1, 500, |s| s.seq += 500)));
    // PSH also ends it, and is carried to the result.
    let (mut c, mut buf) = fl.start();
    assert!(c.try_append(&mut buf, &fl.seg(1, 1000, |s| s.flags |= TCP_PSH)));
    assert!(c.is_closed());
    assert!(!c.try_append(&mut buf, &fl.segs[2]));
    let (n, vh) = c.finish(&mut buf).unwrap();
    assert_eq!(n, fl.segs[0].len() + 1000);
    assert_eq!(buf[14 + 20 + 13] & TCP_PSH, TCP_PSH);
    assert_eq!(vh.gso_size, 1000);
}

#[test]
fn ip_id_modes() {
    // DF with a fixed id coalesces (is_atomic), and then must stay fixed.
    let fl = flow(Spec { df: true, ..Spec::default() });
    let (mut c, mut buf) = fl.start();
    let id0 = fl.base.ip_id;
    assert!(c.try_append(&mut buf, &fl.seg(1, 1000, |s| s.ip_id = id0)));
    assert!(!c.try_append(&mut buf, &fl.seg(2, 1000, |_| {})));
    assert!(c.try_append(&mut buf, &fl.seg(2, 1000, |s| s.ip_id = id0)));
    // Without DF the id must increment.
    let fl = flow(Spec { df: false, ..Spec::default() });
    let id0 = fl.base.ip_id;
    fl.refused(&fl.seg(1, 1000, |s| s.ip_id = id0), "fixed id without DF");
    // Incrementing ids across the 16-bit wrap.
    let fl = flow(Spec { df: false, ip_id: 0xfffe, ..Spec::default() });
    let (_, frame, vh) = coalesce(&fl.segs);
    assert_eq!(vh.gso_size, 1000);
    assert_eq!(frame.len(), fl.segs[0].len() + 4000);
}

#[test]
fn limits_and_buffers() {
    let fl = flow(Spec::default());
    // Max length: room for the first two segments only.
    let (c, mut buf) = fl.start();
    let mut c = c.with_max_len(fl.segs[0].len() + 1000);
    assert!(c.try_append(&mut buf, &fl.segs[1]));
    assert!(!c.try_append(&mut buf, &fl.segs[2]));
    // A short buffer refuses instead of panicking; finish reports it.
    let (mut c, buf) = fl.start();
    let mut short = buf[..fl.segs[0].len() + 999].to_vec();
    assert!(!c.try_append(&mut short, &fl.segs[1]));
    let mut tiny = vec![0u8; 10];
    assert!(!c.try_append(&mut tiny, &fl.segs[1]));
    assert_eq!(c.finish(&mut tiny), Err(OffloadError::BufferTooSmall));
    // Single segment: the frame is untouched and plain.
    let (c, mut buf) = fl.start();
    let before = buf.clone();
    assert_eq!(c.finish(&mut buf), Ok((fl.segs[0].len(), VnetHdr::default())));
    assert!(buf == before);
    // Non-starters.
    assert!(TcpCoalescer::start(&build(&Spec::default()).frame).is_none(), "no payload");
    assert!(TcpCoalescer::start(&build(&Spec { udp: true, payload: vec![1; 9], ..Spec::default() }).frame).is_none());
    assert!(TcpCoalescer::start(&[0u8; 3]).is_none());
    // Ethernet padding after a small first segment is not part of the super-frame.
    let small = Flow { segs: vec![], base: Spec::default(), mss: 4 };
    let mut first = small.seg(0, 4, |_| {});
    let real = first.len();
    first.resize(64, 0);
    let mut buf = vec![0u8; 65535];
    buf[..64].copy_from_slice(&first);
    let mut c = TcpCoalescer::start(&first).unwrap();
    assert_eq!(c.len(), real);
    let mut second = small.seg(1, 4, |_| {});
    second.resize(64, 0);
    assert!(c.try_append(&mut buf, &second));
    let (n, vh) = c.finish(&mut buf).unwrap();
    assert_eq!((n, vh.gso_size), (real + 4, 4));
    complete_checksum(&mut buf[..n], &vh).unwrap();
    assert_eq!(verify_checksums(&buf[..n]), Ok(true));
}

#[test]
fn fuzz_coalescer_results_are_valid() {
    let mut rng = Rng(22);
    let shapes = tcp_shapes();
    let mut buf = vec![0u8; 65535];
    for _ in 0..fuzz_iters(30_000) / 100 {
        let s = &shapes[rng.range(0, shapes.len() - 1)];
        let n = rng.range(100, 6000);
        let s = Spec { payload: rng.bytes(n), ..s.clone() };
        let (_, _, segs) = segs_of(&s, 512);
        buf[..segs[0].len()].copy_from_slice(&segs[0]);
        let mut c = TcpCoalescer::start(&segs[0]).unwrap();
        for _ in 0..30 {
            let mut seg = segs[rng.range(0, segs.len() - 1)].clone();
            // One changed byte at most: a single-byte change is always caught by the
            // Internet checksum (two can cancel out, which no coalescer could detect).
            if rng.one_in(2) {
                let p = rng.range(0, seg.len() - 1);
                seg[p] = rng.next() as u8;
            }
            let cut = rng.range(seg.len().saturating_sub(3), seg.len());
            seg.truncate(cut);
            let _ = c.try_append(&mut buf, &seg);
            let n = rng.range(0, 120);
            let _ = c.try_append(&mut buf, &rng.bytes(n));
        }
        let (n, vh) = c.finish(&mut buf).unwrap();
        let mut f = buf[..n].to_vec();
        complete_checksum(&mut f, &vh).unwrap();
        assert_eq!(verify_checksums(&f), Ok(true));
        // Whatever was taken is a contiguous prefix of the stream.
        let h = parse_headers(&f).unwrap();
        let got = &f[h.hdr_len()..];
        assert!(got == &s.payload[..got.len()]);
    }
}
