//! Timers with a fake clock: keepalive, handshake retry and give-up, expiry, handshakes
//! requested by senders on other workers.

use super::*;

/// Polls until nothing is due at `now`; returns the messages.
fn poll_all(p: &mut Peer, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = buf();
    for _ in 0..10 {
        match p.poll(&mut b, now).unwrap() {
            Some(n) => out.push(b[..n].to_vec()),
            None => {
                assert!(p.next_timeout().is_none_or(|t| t > now), "timer stuck at {now:?}");
                return out;
            }
        }
    }
    panic!("poll keeps producing messages")
}

#[test]
fn keepalive_when_idle_only() {
    let t0 = Instant::now();
    let cfg = MeshConfig { keepalive: Some(Duration::from_secs(10)), ..MeshConfig::default() };
    let (mut a, mut b) = pair(cfg, t0);
    b.cfg.keepalive = None;
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    assert!(poll_all(&mut pa, t0 + ms(5000)).is_empty());
    send(&mut pa, &mut pb, PayloadKind::Ethernet, b"data", t0 + ms(5000));
    // Data at 5 s moves the keepalive to 15 s.
    assert_eq!(pa.next_timeout(), Some(t0 + ms(15_000)));
    assert!(poll_all(&mut pa, t0 + ms(14_999)).is_empty());
    let k = poll_all(&mut pa, t0 + ms(15_000));
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].len(), wire::KEEPALIVE_LEN);
    assert_eq!(pb.decapsulate(&k[0], &mut buf(), t0 + ms(15_000)), Ok(Decapsulated::Keepalive));
    assert_eq!(pa.next_timeout(), Some(t0 + ms(25_000)));
    // Data sent through another worker's sender counts as activity too.
    let mut tx = pa.sender();
    tx.encapsulate(PayloadKind::Ethernet, b"x", &mut buf(), t0 + ms(20_000)).unwrap();
    assert!(poll_all(&mut pa, t0 + ms(25_000)).is_empty());
    assert_eq!(poll_all(&mut pa, t0 + ms(30_000)).len(), 1);
    assert_eq!(pa.stats().keepalives_sent, 2);
    assert_eq!(pb.stats().keepalives_received, 2); // confirmation + one keepalive
                                                   // The passive side sends none.
    assert!(poll_all(&mut pb, t0 + ms(60_000)).is_empty());
}

#[test]
fn dial_out_peer_connects_and_stays_up_by_itself() {
    let t0 = Instant::now();
    let cfg = MeshConfig {
        keepalive: Some(Duration::from_secs(10)),
        rekey_after: Duration::from_secs(30),
        reject_after: Duration::from_secs(45),
        ..MeshConfig::default()
    };
    let (a, mut b) = pair(cfg, t0);
    b.cfg.keepalive = None;
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), t0);
    assert!(pa.next_timeout().unwrap() <= t0);
    let mut pb: Option<Peer> = None;
    let (mut r, mut o) = (buf(), buf());
    // 200 s, polled once a second; b never sends anything but handshake responses.
    for s in 0..200u64 {
        let now = t0 + Duration::from_secs(s);
        for m in poll_all(&mut pa, now) {
            match route(&m) {
                Route::Initiation => {
                    let init = b.resp.handle_initiation(a.ip, &m, now).unwrap();
                    let rn = match pb.as_mut() {
                        Some(p) => p.accept_initiation(init, &mut r, now).unwrap(),
                        None => {
                            let (p, rn) = Peer::from_initiation(&b.id, init, &b.cfg, slot(2), &mut r, now).unwrap();
                            pb = Some(p);
                            rn
                        }
                    };
                    let Ok(Decapsulated::HandshakeComplete { reply_len }) = pa.decapsulate(&r[..rn], &mut o, now)
                    else {
                        panic!("handshake failed")
                    };
                    let c = o[..reply_len].to_vec();
                    pb.as_mut().unwrap().decapsulate(&c, &mut r, now).unwrap();
                }
                _ => {
                    pb.as_mut().unwrap().decapsulate(&m, &mut r, now).unwrap();
                }
            }
        }
        assert!(s < 1 || pa.is_up(now), "down at {s} s");
        assert!(s < 1 || pb.as_ref().unwrap().is_up(now), "b down at {s} s");
    }
    let (sa, sb) = (pa.stats(), pb.unwrap().stats());
    // Rekeyed every 30 s (a is always the initiator: keepalives trigger it).
    assert!(sa.rekeys >= 5, "{sa:?}");
    assert!(sa.keepalives_sent >= 10, "{sa:?}");
    assert_eq!(sb.drops, [0; DropReason::COUNT]);
}

#[test]
fn handshake_retry_with_jitter_then_give_up() {
    let t0 = Instant::now();
    let (a, b) = pair(MeshConfig::default(), t0);
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), t0);
    let mut m = buf();
    let first = pa.initiate(&mut m, t0).unwrap().unwrap();
    let first_index = wire::read_u32(&m[..first], wire::field::INDEX);
    let due = pa.next_timeout().unwrap();
    assert!(due >= t0 + ms(5000) && due <= t0 + ms(5333), "{:?}", due - t0);
    assert!(poll_all(&mut pa, t0 + ms(4999)).is_empty());
    let mut now = due;
    let mut sent = vec![first_index];
    loop {
        let msgs = poll_all(&mut pa, now);
        if msgs.is_empty() {
            break;
        }
        assert_eq!(msgs.len(), 1);
        assert_eq!(route(&msgs[0]), Route::Initiation);
        sent.push(wire::read_u32(&msgs[0], wire::field::INDEX));
        now = pa.next_timeout().unwrap();
        assert!(now <= t0 + ms(90_000 + 5333));
    }
    // 90 s / (5 s .. 5.333 s): 17 or 18 attempts, each with a fresh index.
    assert!((17..=19).contains(&sent.len()), "{}", sent.len());
    sent.sort_unstable();
    sent.dedup();
    assert!(sent.len() >= 17);
    let s = pa.stats();
    assert_eq!(s.handshake_giveups, 1);
    assert_eq!(s.handshake_retries + 1, s.initiations_sent);
    assert!(!pa.handshake_in_progress());
    assert_eq!(pa.next_timeout(), None, "passive peer: nothing left to do");
    // The next payload starts a new attempt.
    assert!(matches!(
        pa.encapsulate(PayloadKind::Ethernet, b"x", &mut m, now + ms(1)),
        Ok(Encapsulated::Handshake { len: 132 })
    ));
    assert_eq!(pa.encapsulate(PayloadKind::Ethernet, b"y", &mut m, now + ms(2)), Ok(Encapsulated::Pending));
}

#[test]
fn sessions_expire_after_reject_after() {
    let t0 = Instant::now();
    let cfg = MeshConfig {
        rekey_after: Duration::from_secs(2),
        reject_after: Duration::from_secs(3),
        ..MeshConfig::default()
    };
    let (mut a, mut b) = pair(cfg, t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    let mut m = buf();
    let Ok(Encapsulated::Data { len }) = pb.encapsulate(PayloadKind::Ethernet, b"late", &mut m, t0 + ms(1000)) else {
        panic!()
    };
    let late = m[..len].to_vec();
    let t = t0 + ms(3000);
    assert!(!pa.is_up(t));
    assert_eq!(pa.decapsulate(&late, &mut buf(), t), Err(MeshError::Drop(DropReason::Expired)));
    // Sending needs a new handshake.
    assert!(matches!(pa.encapsulate(PayloadKind::Ethernet, b"x", &mut m, t), Ok(Encapsulated::Handshake { .. })));
    // Responder side without traffic: poll purges, a sender gets NoSession.
    assert!(poll_all(&mut pb, t).len() <= 1);
    let mut tx = pb.sender();
    assert_eq!(tx.encapsulate(PayloadKind::Ethernet, b"x", &mut m, t), Err(MeshError::NoSession));
    assert_eq!(pa.stats().dropped(DropReason::Expired), 1);
}

#[test]
fn sender_without_session_wakes_owner() {
    let t0 = Instant::now();
    let (a, b) = pair(MeshConfig::default(), t0);
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), t0);
    assert_eq!(pa.next_timeout(), None);
    let mut tx = pa.sender();
    let t1 = t0 + ms(500);
    assert_eq!(tx.encapsulate(PayloadKind::Ethernet, b"x", &mut buf(), t1), Err(MeshError::NoSession));
    assert!(pa.next_timeout().unwrap() <= t1, "owner is due now");
    let msgs = poll_all(&mut pa, t1);
    assert_eq!(msgs.len(), 1);
    assert_eq!(route(&msgs[0]), Route::Initiation);
    assert!(pa.handshake_in_progress());
    assert!(pa.next_timeout().unwrap() >= t1 + ms(5000));
}

#[test]
fn rekey_requested_by_message_count() {
    let t0 = Instant::now();
    let cfg = MeshConfig { rekey_after_messages: 100, ..MeshConfig::default() };
    let (mut a, mut b) = pair(cfg, t0);
    let (mut pa, mut pb) = connect(&mut a, &mut b, t0);
    // b (responder) sends 100 messages: then it wants a new handshake.
    for _ in 0..99 {
        send(&mut pb, &mut pa, PayloadKind::Ethernet, b"m", t0);
    }
    assert_eq!(pb.next_timeout(), Some(t0 + MeshConfig::default().reject_after));
    send(&mut pb, &mut pa, PayloadKind::Ethernet, b"m", t0);
    assert!(pb.next_timeout().unwrap() <= t0);
    let msgs = poll_all(&mut pb, t0);
    assert_eq!(msgs.len(), 1);
    assert_eq!(route(&msgs[0]), Route::Initiation);
    // The old session keeps working meanwhile.
    send(&mut pb, &mut pa, PayloadKind::Ethernet, b"m", t0);
    assert!(poll_all(&mut pb, t0).is_empty(), "one handshake at a time");
}

#[test]
fn poll_needs_room_for_an_initiation() {
    let t0 = Instant::now();
    let (a, b) = pair(MeshConfig::default(), t0);
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), t0);
    let mut small = [0u8; 131];
    assert_eq!(pa.poll(&mut small, t0), Err(MeshError::BufferTooSmall { need: 132 }));
    assert_eq!(pa.initiate(&mut small, t0), Err(MeshError::BufferTooSmall { need: 132 }));
}
