//! Handshakes in both admission modes, refusals and their counters, flood limits.

use super::*;

/// An initiation from `from` (a fresh peer object) to `to_public`.
fn initiation(from: &Host, to_public: [u8; 32], now: Instant) -> Vec<u8> {
    let mut p = Peer::new(&from.id, to_public, &from.cfg, slot(9), now);
    let mut m = buf();
    let n = p.initiate(&mut m, now).unwrap().unwrap();
    m[..n].to_vec()
}

#[test]
fn listed_key_accepted_and_transport_works() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(MeshConfig::default(), t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    send(&mut pa, &mut pb, PayloadKind::Ethernet, b"hello", t0);
    send(&mut pb, &mut pa, PayloadKind::Control, b"link state", t0);
    assert_eq!(b.resp.stats().accepted, 1);
    // es + ss to read, ee + se to answer.
    assert_eq!(b.resp.stats().dh_ops, 4);
    let s = pa.stats();
    assert_eq!((s.sessions_established, s.rekeys, s.initiations_sent), (1, 0, 1));
    assert_eq!(s.last_handshake, Some(t0));
    assert_eq!(pb.stats().responses_sent, 1);
}

#[test]
fn unlisted_key_refused_and_counted_without_reply() {
    let t0 = Instant::now();
    let (_a, mut b) = pair(MeshConfig::default(), t0);
    let c = Host::new(3, MeshConfig::default(), t0);
    let m = initiation(&c, b.id.public(), t0);
    assert_eq!(b.resp.handle_initiation(c.ip, &m, t0).unwrap_err(), Refused::NotAllowed);
    assert_eq!(b.resp.stats().refused(Refused::NotAllowed), 1);
    assert_eq!(b.resp.stats().accepted, 0);
    // Admission changes at run time.
    b.resp.set_allowed(&[c.id.public()]);
    assert!(b.resp.handle_initiation(c.ip, &m, t0).is_ok());
}

#[test]
fn psk_mode_right_psk_any_key_when_allowed() {
    let t0 = Instant::now();
    let psk = psk_from_password("weave-password");
    let cfg = MeshConfig { psk: Some(psk), allow_any_with_psk: true, ..MeshConfig::default() };
    let mut b = Host::new(2, cfg.clone(), t0);
    // `a` is in nobody's list: the password admits it.
    let mut a = Host::new(1, cfg.clone(), t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    send(&mut pa, &mut pb, PayloadKind::Ethernet, &[0xab; 1514], t0);
    send(&mut pb, &mut pa, PayloadKind::Ethernet, &[0xcd; 60], t0);

    // Without allow_any_with_psk, the key must still be listed.
    let mut strict = Host::new(4, MeshConfig { allow_any_with_psk: false, ..cfg.clone() }, t0);
    let m = initiation(&a, strict.id.public(), t0);
    assert_eq!(strict.resp.handle_initiation(a.ip, &m, t0).unwrap_err(), Refused::NotAllowed);
    strict.resp.set_allowed(&[a.id.public()]);
    assert!(strict.resp.handle_initiation(a.ip, &m, t0).is_ok());
}

#[test]
fn wrong_psk_refused_silently() {
    let t0 = Instant::now();
    let any =
        |pw: &str| MeshConfig { psk: Some(psk_from_password(pw)), allow_any_with_psk: true, ..MeshConfig::default() };
    let mut b = Host::new(2, any("right"), t0);
    let a = Host::new(1, any("wrong"), t0);
    let m = initiation(&a, b.id.public(), t0);
    assert_eq!(b.resp.handle_initiation(a.ip, &m, t0).unwrap_err(), Refused::WrongPsk);
    // Even a listed key needs the right PSK.
    b.resp.set_allowed(&[a.id.public()]);
    assert_eq!(b.resp.handle_initiation(a.ip, &m, t0).unwrap_err(), Refused::WrongPsk);
    // A host without a PSK cannot talk to a PSK mesh, nor the other way round.
    let plain = Host::new(3, MeshConfig::default(), t0);
    let m = initiation(&plain, b.id.public(), t0);
    assert_eq!(b.resp.handle_initiation(plain.ip, &m, t0).unwrap_err(), Refused::DecryptFailed);
    let mut plain_b = Host::new(5, cfg_allowing(&[a.id.public()]), t0);
    let m = initiation(&a, plain_b.id.public(), t0);
    assert_eq!(plain_b.resp.handle_initiation(a.ip, &m, t0).unwrap_err(), Refused::DecryptFailed);
    let s = b.resp.stats();
    assert_eq!((s.refused(Refused::WrongPsk), s.refused(Refused::DecryptFailed), s.accepted), (2, 1, 0));
}

#[test]
fn initiation_for_another_key_fails_mac1_without_dh() {
    let t0 = Instant::now();
    let (a, mut b) = pair(MeshConfig::default(), t0);
    let m = initiation(&a, [42; 32], t0);
    assert_eq!(b.resp.handle_initiation(a.ip, &m, t0).unwrap_err(), Refused::BadMac);
    assert_eq!(b.resp.handle_initiation(a.ip, &m[..100], t0).unwrap_err(), Refused::Malformed);
    assert_eq!(b.resp.stats().dh_ops, 0);
}

#[test]
fn forged_or_mismatched_responses_dropped() {
    let t0 = Instant::now();
    let (a, mut b) = pair(MeshConfig::default(), t0);
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), t0);
    let (mut m, mut r, mut o) = (buf(), buf(), buf());
    let n = pa.initiate(&mut m, t0).unwrap().unwrap();
    // A second call while one is pending sends nothing.
    assert_eq!(pa.initiate(&mut o, t0).unwrap(), None);
    let init = b.resp.handle_initiation(a.ip, &m[..n], t0).unwrap();
    let (_pb, rn) = Peer::from_initiation(&b.id, init, &b.cfg, slot(2), &mut r, t0).unwrap();
    let good = r[..rn].to_vec();
    // Tampered Noise bytes (with mac1 recomputed by an attacker who knows a's key).
    let mut bad = good.clone();
    bad[20] ^= 1;
    wire::Mac1Key::new(&a.id.public()).seal(&mut bad);
    assert_eq!(pa.decapsulate(&bad, &mut o, t0), Err(MeshError::Drop(DropReason::HandshakeFailed)));
    // Tampered without fixing mac1.
    let mut bad = good.clone();
    bad[20] ^= 1;
    assert_eq!(pa.decapsulate(&bad, &mut o, t0), Err(MeshError::Drop(DropReason::BadMac)));
    // Wrong receiver index.
    let mut bad = good.clone();
    bad[8] ^= 1;
    assert_eq!(pa.decapsulate(&bad, &mut o, t0), Err(MeshError::Drop(DropReason::UnknownIndex)));
    // The real response still completes the handshake.
    assert!(matches!(pa.decapsulate(&good, &mut o, t0), Ok(Decapsulated::HandshakeComplete { .. })));
    // A replayed response finds no pending handshake.
    assert_eq!(pa.decapsulate(&good, &mut o, t0), Err(MeshError::Drop(DropReason::UnknownIndex)));
    // An initiation given to a peer is not for it.
    assert_eq!(pa.decapsulate(&m[..n], &mut o, t0), Err(MeshError::Drop(DropReason::Unexpected)));
    let s = pa.stats();
    assert_eq!(s.dropped(DropReason::HandshakeFailed), 1);
    assert_eq!(s.dropped(DropReason::UnknownIndex), 2);
}

#[test]
fn accept_initiation_checks_peer_and_rekeys_existing() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(MeshConfig::default(), t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    let c = Host::new(3, cfg_allowing(&[b.id.public()]), t0);
    b.resp.set_allowed(&[a.id.public(), c.id.public()]);
    let m = initiation(&c, b.id.public(), t0);
    let init = b.resp.handle_initiation(c.ip, &m, t0).unwrap();
    assert_eq!(pb.accept_initiation(init, &mut buf(), t0), Err(MeshError::WrongPeer));
    // A new handshake from a (a rekey), answered by the existing peer object.
    let t1 = t0 + ms(1000);
    let (mut m, mut r) = (buf(), buf());
    let n = pa.initiate(&mut m, t1).unwrap().unwrap();
    let init = b.resp.handle_initiation(a.ip, &m[..n], t1).unwrap();
    let rn = pb.accept_initiation(init, &mut r, t1).unwrap();
    // Until confirmed, b keeps sending on the old session, which a still receives.
    send(&mut pb, &mut pa, PayloadKind::Ethernet, b"old", t1);
    let Ok(Decapsulated::HandshakeComplete { reply_len }) = pa.decapsulate(&r[..rn], &mut m, t1) else {
        panic!("no completion")
    };
    // a already sends on the new session; b receives it (and that confirms it).
    send(&mut pa, &mut pb, PayloadKind::Ethernet, b"new", t1);
    let c = m[..reply_len].to_vec();
    assert_eq!(pb.decapsulate(&c, &mut r, t1), Ok(Decapsulated::Keepalive));
    assert_eq!(pa.stats().rekeys, 1);
    assert_eq!(pb.stats().rekeys, 1);
    send(&mut pa, &mut pb, PayloadKind::Ethernet, b"after", t1);
    send(&mut pb, &mut pa, PayloadKind::Ethernet, b"after", t1);
}

#[test]
fn flood_from_one_source_limited_before_any_dh() {
    let t0 = Instant::now();
    let limits = HandshakeLimits { per_source_rate: 10, per_source_burst: 10, ..HandshakeLimits::default() };
    let cfg = MeshConfig { psk: Some([7; 32]), allow_any_with_psk: true, limits, ..MeshConfig::default() };
    let mut b = Host::new(2, cfg.clone(), t0);
    let attacker = Host::new(1, cfg.clone(), t0);
    // 50 valid initiations (fresh ephemeral keys each) from one address at once.
    let msgs: Vec<Vec<u8>> = (0..50).map(|_| initiation(&attacker, b.id.public(), t0)).collect();
    let ok = msgs.iter().filter(|m| b.resp.handle_initiation(attacker.ip, m, t0).is_ok()).count();
    assert_eq!(ok, 10);
    let s = b.resp.stats();
    assert_eq!(s.refused(Refused::RateLimitedSource), 40);
    assert_eq!(s.dh_ops, 10 * 2, "only admitted initiations cost DH (es, ss)");
    // Garbage and wrong-MAC initiations cost nothing and use no tokens.
    let mut rng = Rng(7);
    for _ in 0..1000 {
        let mut g = msgs[0].clone();
        rng.fill(&mut g[8..]);
        assert_eq!(b.resp.handle_initiation(ip(77), &g, t0).unwrap_err(), Refused::BadMac);
    }
    assert_eq!(b.resp.stats().dh_ops, 20);
    // Another source still gets through at once; the flooder after its refill.
    assert!(b.resp.handle_initiation(ip(78), &msgs[0], t0).is_ok());
    assert_eq!(b.resp.handle_initiation(attacker.ip, &msgs[1], t0 + ms(50)).unwrap_err(), Refused::RateLimitedSource);
    assert!(b.resp.handle_initiation(attacker.ip, &msgs[1], t0 + ms(100)).is_ok());
}

#[test]
fn global_limit_caps_many_sources() {
    let t0 = Instant::now();
    let limits = HandshakeLimits { global_rate: 20, global_burst: 20, ..HandshakeLimits::default() };
    let cfg = MeshConfig { psk: Some([7; 32]), allow_any_with_psk: true, limits, ..MeshConfig::default() };
    let mut b = Host::new(2, cfg.clone(), t0);
    let a = Host::new(1, cfg, t0);
    let m = initiation(&a, b.id.public(), t0);
    let ok = (0..100u8).filter(|&n| b.resp.handle_initiation(ip(n), &m, t0).is_ok()).count();
    assert_eq!(ok, 20);
    let s = b.resp.stats();
    assert_eq!(s.refused(Refused::RateLimitedGlobal), 80);
    assert_eq!(s.dh_ops, 40);
}

#[test]
fn replayed_initiation_refused_by_timestamp() {
    let t0 = Instant::now();
    let (a, mut b) = pair(MeshConfig::default(), t0);
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), t0);
    let (mut m, mut r) = (buf(), buf());
    let n = pa.initiate(&mut m, t0).unwrap().unwrap();
    let recorded = m[..n].to_vec();
    let init = b.resp.handle_initiation(a.ip, &recorded, t0).unwrap();
    let (mut pb, _) = Peer::from_initiation(&b.id, init, &b.cfg, slot(2), &mut r, t0).unwrap();
    // The recorded initiation, replayed later: the responder (stateless) lets it through,
    // the peer refuses it without answering and without touching its sessions.
    let t1 = t0 + ms(7000);
    let init = b.resp.handle_initiation(a.ip, &recorded, t1).unwrap();
    assert_eq!(pb.accept_initiation(init, &mut r, t1), Err(MeshError::Drop(DropReason::Replay)));
    assert_eq!(pb.stats().dropped(DropReason::Replay), 1);
    assert_eq!(pb.stats().responses_sent, 1);
    // a's retry carries a newer timestamp and is answered.
    let n = pa.poll(&mut m, t1).unwrap().unwrap();
    let init = b.resp.handle_initiation(a.ip, &m[..n], t1).unwrap();
    assert!(pb.accept_initiation(init, &mut r, t1).is_ok());
}

#[test]
fn restarted_initiator_accepted_with_wall_clock() {
    let t0 = Instant::now();
    let day = Duration::from_secs(86_400 * 20_000);
    let clock =
        |unix: Duration, at: Instant| MeshConfig { wall_clock: Some(WallClock { unix, at }), ..MeshConfig::default() };
    let (a, mut b) = pair(clock(day, t0), t0);
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), t0);
    let (mut m, mut r) = (buf(), buf());
    let n = pa.initiate(&mut m, t0).unwrap().unwrap();
    let init = b.resp.handle_initiation(a.ip, &m[..n], t0).unwrap();
    let (mut pb, _) = Peer::from_initiation(&b.id, init, &b.cfg, slot(2), &mut r, t0).unwrap();
    // a restarts 3 s later: a new process, a new Peer, a wall clock reading 3 s later.
    let t1 = t0 + ms(3000);
    let cfg = MeshConfig { allowed: a.cfg.allowed.clone(), ..clock(day + ms(3000), t1) };
    let mut pa2 = Peer::new(&a.id, b.id.public(), &cfg, slot(1), t1);
    let n = pa2.initiate(&mut m, t1).unwrap().unwrap();
    let init = b.resp.handle_initiation(a.ip, &m[..n], t1).unwrap();
    let rn = pb.accept_initiation(init, &mut r, t1).unwrap();
    assert!(matches!(pa2.decapsulate(&r[..rn], &mut m, t1), Ok(Decapsulated::HandshakeComplete { .. })));
    // A restart with the wall clock stepped back an hour is refused (as WireGuard).
    let t2 = t0 + ms(4000);
    let back = MeshConfig { allowed: a.cfg.allowed.clone(), ..clock(day - Duration::from_secs(3600), t2) };
    let mut pa3 = Peer::new(&a.id, b.id.public(), &back, slot(1), t2);
    let n = pa3.initiate(&mut m, t2).unwrap().unwrap();
    let init = b.resp.handle_initiation(a.ip, &m[..n], t2).unwrap();
    assert_eq!(pb.accept_initiation(init, &mut r, t2), Err(MeshError::Drop(DropReason::Replay)));
}

#[test]
fn crossing_initiations_lose_nothing() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(MeshConfig::default(), t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    let mut now = t0;
    for round in 0..4 {
        now += ms(1000);
        // Both start a handshake at the same moment; the initiations cross.
        let (mut ma, mut mb, mut r) = (buf(), buf(), buf());
        let na = pa.initiate(&mut ma, now).unwrap().unwrap();
        let nb = pb.initiate(&mut mb, now).unwrap().unwrap();
        let ia = b.resp.handle_initiation(a.ip, &ma[..na], now).unwrap();
        let ra = pb.accept_initiation(ia, &mut r, now).unwrap();
        let resp_to_a = r[..ra].to_vec();
        let ib = a.resp.handle_initiation(b.ip, &mb[..nb], now).unwrap();
        let rb = pa.accept_initiation(ib, &mut r, now).unwrap();
        let resp_to_b = r[..rb].to_vec();
        // Old-session traffic still in flight in both directions.
        let old_ab = {
            let mut m = buf();
            let Ok(Encapsulated::Data { len }) = pa.encapsulate(PayloadKind::Ethernet, b"old a", &mut m, now) else {
                panic!()
            };
            m[..len].to_vec()
        };
        let old_ba = {
            let mut m = buf();
            let Ok(Encapsulated::Data { len }) = pb.encapsulate(PayloadKind::Ethernet, b"old b", &mut m, now) else {
                panic!()
            };
            m[..len].to_vec()
        };
        let Ok(Decapsulated::HandshakeComplete { reply_len }) = pa.decapsulate(&resp_to_a, &mut r, now) else {
            panic!()
        };
        let conf_a = r[..reply_len].to_vec();
        let Ok(Decapsulated::HandshakeComplete { reply_len }) = pb.decapsulate(&resp_to_b, &mut r, now) else {
            panic!()
        };
        let conf_b = r[..reply_len].to_vec();
        // New-session traffic overtakes the confirmations and the old traffic.
        send(&mut pa, &mut pb, PayloadKind::Ethernet, b"new a", now);
        send(&mut pb, &mut pa, PayloadKind::Ethernet, b"new b", now);
        for (to_b, m) in [(true, &old_ab), (false, &old_ba), (true, &conf_a), (false, &conf_b)] {
            let to = if to_b { &mut pb } else { &mut pa };
            assert!(to.decapsulate(m, &mut r, now).is_ok(), "round {round}");
        }
        send(&mut pa, &mut pb, PayloadKind::Ethernet, b"after a", now);
        send(&mut pb, &mut pa, PayloadKind::Ethernet, b"after b", now);
    }
    assert_eq!(pa.stats().drops, [0; DropReason::COUNT]);
    assert_eq!(pb.stats().drops, [0; DropReason::COUNT]);
}
