//! Transport: round trips, in-place operation, tampering, replay window, senders on
//! several threads, and the seal/open speed (ignored test).

use super::*;

fn up() -> (Instant, Peer, Peer) {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(MeshConfig::default(), t0);
    let (pa, pb) = connect(&mut a, &mut b, t0);
    (t0, pa, pb)
}

fn seal(p: &mut Peer, payload: &[u8], now: Instant) -> Vec<u8> {
    let mut m = buf();
    let Ok(Encapsulated::Data { len }) = p.encapsulate(PayloadKind::Ethernet, payload, &mut m, now) else {
        panic!("no session")
    };
    m[..len].to_vec()
}

fn open(p: &mut Peer, msg: &[u8], now: Instant) -> Result<Decapsulated, MeshError> {
    p.decapsulate(msg, &mut buf(), now)
}

#[test]
fn round_trip_ethernet_and_max_size() {
    let (t0, mut pa, mut pb) = up();
    let mut rng = Rng(1);
    for len in [0usize, 1, 60, 1514, 9000, 64_000, MAX_PAYLOAD] {
        let mut p = vec![0u8; len];
        rng.fill(&mut p);
        send(&mut pa, &mut pb, PayloadKind::Ethernet, &p, t0);
        send(&mut pb, &mut pa, PayloadKind::Control, &p, t0);
    }
    send(&mut pa, &mut pb, PayloadKind::Unknown(9), b"future", t0);
    let mut m = buf();
    let too_big = vec![0u8; MAX_PAYLOAD + 1];
    assert_eq!(pa.encapsulate(PayloadKind::Ethernet, &too_big, &mut m, t0), Err(MeshError::PayloadTooLarge));
    assert_eq!(
        pa.encapsulate(PayloadKind::Ethernet, &[0; 100], &mut m[..132], t0),
        Err(MeshError::BufferTooSmall { need: 133 })
    );
    let s = pa.stats();
    assert_eq!(s.tx_packets, 8 + 1, "payloads and the handshake confirmation");
    assert_eq!(s.rx_packets, 7);
    assert_eq!(pb.stats().rx_bytes, s.tx_bytes);
}

#[test]
fn in_place_with_headroom() {
    let (t0, pa, mut pb) = up();
    let mut tx = pa.sender();
    let mut b = vec![0u8; 2048];
    let frame = 256..256 + 1514;
    b[frame.clone()].fill(0x5a);
    let msg = tx.encapsulate_in_place(PayloadKind::Ethernet, &mut b, frame.clone(), t0).unwrap();
    assert_eq!(msg, 256 - 17..256 + 1514 + 16);
    let mut wire_msg = b[msg].to_vec();
    let Decapsulated::Data { kind, offset, len } = pb.decapsulate_in_place(&mut wire_msg, t0).unwrap() else {
        panic!()
    };
    assert_eq!((kind, offset, len), (PayloadKind::Ethernet, 17, 1514));
    assert!(wire_msg[offset..offset + len].iter().all(|&x| x == 0x5a));
    // Not enough headroom, not enough tailroom, reversed range.
    assert!(matches!(
        tx.encapsulate_in_place(PayloadKind::Ethernet, &mut b, 16..100, t0),
        Err(MeshError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        tx.encapsulate_in_place(PayloadKind::Ethernet, &mut b, 100..2040, t0),
        Err(MeshError::BufferTooSmall { .. })
    ));
    #[allow(clippy::reversed_empty_ranges)]
    let rev = 200..100;
    assert!(matches!(
        tx.encapsulate_in_place(PayloadKind::Ethernet, &mut b, rev, t0),
        Err(MeshError::BufferTooSmall { .. })
    ));
}

#[test]
fn every_tampered_byte_rejected() {
    let (t0, mut pa, mut pb) = up();
    let m = seal(&mut pa, &[0x11; 100], t0);
    for i in 0..m.len() {
        for bit in [0x01u8, 0x80] {
            let mut x = m.clone();
            x[i] ^= bit;
            let e = open(&mut pb, &x, t0).unwrap_err();
            let MeshError::Drop(r) = e else { panic!("{e:?}") };
            let expect: &[DropReason] = match i {
                0..=3 => &[DropReason::Malformed],
                4..=7 => &[DropReason::UnknownIndex],
                // Counter 1 -> 0 is the confirmation's counter: a replay, caught before
                // decryption.
                8..=15 => &[DropReason::DecryptFailed, DropReason::Replay],
                _ => &[DropReason::DecryptFailed],
            };
            assert!(expect.contains(&r), "byte {i} bit {bit:#x}: {r:?}");
        }
    }
    // Truncated and extended messages fail too.
    assert!(open(&mut pb, &m[..m.len() - 1], t0).is_err());
    let mut longer = m.clone();
    longer.push(0);
    assert!(open(&mut pb, &longer, t0).is_err());
    // Failures did not move the window: the original is still accepted, once.
    assert!(matches!(open(&mut pb, &m, t0), Ok(Decapsulated::Data { .. })));
    assert_eq!(open(&mut pb, &m, t0), Err(MeshError::Drop(DropReason::Replay)));
    assert!(pb.stats().dropped(DropReason::DecryptFailed) > 100);
}

#[test]
fn replay_window_counts_and_allows_reordering() {
    let (t0, mut pa, mut pb) = up();
    let msgs: Vec<Vec<u8>> = (0..9000u32).map(|i| seal(&mut pa, &i.to_le_bytes(), t0)).collect();
    // The last 200 in reverse order: all accepted.
    for m in msgs[8800..].iter().rev() {
        assert!(matches!(open(&mut pb, m, t0), Ok(Decapsulated::Data { .. })));
    }
    // Replays of them: dropped.
    for m in &msgs[8800..8810] {
        assert_eq!(open(&mut pb, m, t0), Err(MeshError::Drop(DropReason::Replay)));
    }
    // Reordered within the window (counter 8999 - 8128 = 871 is the oldest allowed).
    assert!(open(&mut pb, &msgs[871], t0).is_ok());
    assert!(open(&mut pb, &msgs[5000], t0).is_ok());
    // Too old.
    for m in &msgs[..5] {
        assert_eq!(open(&mut pb, m, t0), Err(MeshError::Drop(DropReason::TooOld)));
    }
    assert_eq!(open(&mut pb, &msgs[870], t0), Err(MeshError::Drop(DropReason::TooOld)));
    let s = pb.stats();
    assert_eq!((s.dropped(DropReason::Replay), s.dropped(DropReason::TooOld)), (10, 6));
    assert_eq!(s.rx_packets, 202 + 1); // + the confirmation keepalive
}

#[test]
fn senders_on_several_threads() {
    let (t0, pa, mut pb) = up();
    let per_thread = 1000u32;
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let mut tx = pa.sender();
            std::thread::spawn(move || {
                let mut out = vec![0u8; 256];
                (0..per_thread)
                    .map(|i| {
                        let p = (t * per_thread + i).to_le_bytes();
                        let n = tx.encapsulate(PayloadKind::Ethernet, &p, &mut out, t0).unwrap();
                        out[..n].to_vec()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let per: Vec<Vec<Vec<u8>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut seen = vec![false; (4 * per_thread) as usize];
    // Deliver round-robin across threads: reordered, but within the window.
    for i in 0..per_thread as usize {
        for msgs in &per {
            let mut m = msgs[i].clone();
            let Ok(Decapsulated::Data { offset, len: 4, .. }) = pb.decapsulate_in_place(&mut m, t0) else {
                panic!("dropped")
            };
            let v = u32::from_le_bytes(m[offset..offset + 4].try_into().unwrap()) as usize;
            assert!(!seen[v]);
            seen[v] = true;
        }
    }
    assert!(seen.iter().all(|&s| s));
    assert_eq!(pa.stats().tx_packets, 4 * u64::from(per_thread) + 1);
}

#[test]
fn sanity_counters_agree_over_many_messages() {
    let (t0, mut pa, mut pb) = up();
    let mut total = 0u64;
    for i in 0..10_000u32 {
        let p = vec![i as u8; (i % 1500) as usize];
        total += send(&mut pa, &mut pb, PayloadKind::Ethernet, &p, t0).len() as u64;
    }
    let (sa, sb) = (pa.stats(), pb.stats());
    assert_eq!(sa.tx_bytes, total + wire::KEEPALIVE_LEN as u64);
    assert_eq!(sb.rx_bytes, sa.tx_bytes);
    assert_eq!(sb.rx_packets, sa.tx_packets);
    assert_eq!(sb.drops, [0; DropReason::COUNT]);
}

#[test]
fn sanity_ciphertexts_differ_per_direction_and_counter() {
    let (t0, mut pa, mut pb) = up();
    let p = [0u8; 64];
    let a1 = seal(&mut pa, &p, t0);
    let a2 = seal(&mut pa, &p, t0);
    let b1 = seal(&mut pb, &p, t0);
    assert_ne!(a1[16..], a2[16..]);
    assert_ne!(a1[16..], b1[16..]);
    assert!(a1[17..17 + 64].iter().any(|&x| x != 0), "payload is not in the clear");
    // A message of one direction is not accepted by its sender.
    assert!(open(&mut pa, &a1, t0).is_err());
}

/// Seal/open speed (one core). Run in release:
/// `cargo test --release -- --ignored --nocapture seal_open_speed`
#[test]
#[ignore]
fn seal_open_speed() {
    let (t0, pa, mut pb) = up();
    let mut tx = pa.sender();
    for size in [64usize, 1400, 8192, 65_000] {
        let n = (100_000_000 / size).min(300_000);
        let mut msgs: Vec<Vec<u8>> = vec![vec![0x3c; size + wire::TRANSPORT_OVERHEAD]; n];
        let start = Instant::now();
        for m in &mut msgs {
            tx.encapsulate_in_place(PayloadKind::Ethernet, m, 17..17 + size, t0).unwrap();
        }
        let seal = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for m in &mut msgs {
            assert!(pb.decapsulate_in_place(m, t0).is_ok());
        }
        let open = start.elapsed().as_secs_f64();
        let gb = (n * size) as f64 / 1e9;
        println!(
            "{size:>6} B: seal {:.2} GB/s ({:.0} ns/msg), open {:.2} GB/s ({:.0} ns/msg)",
            gb / seal,
            seal * 1e9 / n as f64,
            gb / open,
            open * 1e9 / n as f64
        );
    }
}
