//! No panic on any input: random bytes and mutated real messages into every entry point.

use super::*;

/// Random lengths around the interesting sizes, random bytes, plausible headers.
fn random_message(rng: &mut Rng, real_index: u32) -> Vec<u8> {
    let len = match rng.below(6) {
        0 => rng.below(40) as usize,
        1 => wire::INITIATION_LEN,
        2 => wire::RESPONSE_LEN,
        3 => wire::KEEPALIVE_LEN + rng.below(64) as usize,
        4 => rng.below(wire::MAX_MESSAGE_LEN as u64 + 100) as usize,
        _ => rng.below(2000) as usize,
    };
    let mut m = vec![0u8; len];
    rng.fill(&mut m);
    if len >= 8 && rng.below(2) == 0 {
        m[0] = 1 + rng.below(4) as u8;
        m[1..4].fill(0);
        if rng.below(2) == 0 {
            let off = if m[0] == 2 && len >= 12 { 8 } else { 4 };
            m[off..off + 4].copy_from_slice(&real_index.to_le_bytes());
        }
    }
    m
}

#[test]
fn decapsulate_never_panics() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(MeshConfig::default(), t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    let mut m = buf();
    let Ok(Encapsulated::Data { len }) = pa.encapsulate(PayloadKind::Ethernet, &[9; 200], &mut m, t0) else { panic!() };
    let real = m[..len].to_vec();
    let index = wire::read_u32(&real, wire::field::INDEX);
    let mut rng = Rng(0x5eed);
    let mut out = buf();
    let mut small = [0u8; 40];
    for i in 0..30_000u32 {
        let now = t0 + ms(u64::from(i % 500));
        let msg = if i % 3 == 0 {
            // Mutate a real message: a few flipped bytes, maybe truncated or extended.
            let mut x = real.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(x.len() as u64) as usize;
                x[at] ^= 1 << rng.below(8);
            }
            match rng.below(4) {
                0 => x.truncate(rng.below(x.len() as u64) as usize),
                1 => x.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
                _ => {}
            }
            x
        } else {
            random_message(&mut rng, index)
        };
        let r = pb.decapsulate(&msg, &mut out, now);
        // (Two flips of the same bit give the real message back: that one may pass.)
        assert!(r.is_err() || msg == real, "accepted garbage: {msg:?}");
        let _ = pb.decapsulate(&msg, &mut small, now);
        let mut inplace = msg.clone();
        let _ = pa.decapsulate_in_place(&mut inplace, now);
        let _ = b.resp.handle_initiation(ip((i % 250) as u8), &msg, now);
        let _ = route(&msg);
    }
    // Still working afterwards.
    let r = pb.decapsulate(&real, &mut out, t0 + ms(600));
    assert!(matches!(r, Ok(Decapsulated::Data { .. }) | Err(MeshError::Drop(DropReason::Replay))));
    send(&mut pb, &mut pa, PayloadKind::Control, b"alive", t0 + ms(600));
    assert_eq!(b.resp.stats().accepted, 1, "only the real handshake");
}

#[test]
fn extreme_times_and_configs_never_panic() {
    let t0 = Instant::now();
    let cfg = MeshConfig {
        rekey_after: Duration::MAX,
        reject_after: Duration::MAX,
        keepalive: Some(Duration::MAX),
        handshake_retry: Duration::ZERO,
        handshake_giveup: Duration::MAX,
        rekey_after_messages: 0,
        reject_after_messages: u64::MAX,
        ..MeshConfig::default()
    };
    assert!(cfg.validate().is_err());
    let (mut a, mut b) = pair(cfg, t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    let mut m = buf();
    // Time before the peer's creation, and far in the future.
    let past = t0.checked_sub(Duration::from_secs(1000)).unwrap_or(t0);
    for now in [past, t0, t0 + Duration::from_secs(1 << 40)] {
        let _ = pa.encapsulate(PayloadKind::Ethernet, b"x", &mut m, now);
        let _ = pa.poll(&mut m, now);
        let _ = pa.next_timeout();
        let _ = pb.poll(&mut m, now);
        let _ = pb.stats();
    }
    assert!(MeshConfig::default().validate().is_ok());
}
