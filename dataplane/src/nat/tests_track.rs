//! Tracking tests with a fake clock: TCP states and timeouts, UDP/ICMP timeouts,
//! invalid packets, a full table, flush epochs and the sweeper.

use std::net::Ipv4Addr;

use super::tests_util::*;
use super::*;

const MASQ: Action = Action::Snat { to: UPLINK };

fn conn_of(v: Verdict) -> (ConnRef, CtState) {
    match v {
        Verdict::Forward { conn, ct, .. } => (conn, ct),
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
    }
}

fn tcp_state(t: &ConnTable, c: ConnRef, now: u32) -> Option<TcpState> {
    t.get(c, now).map(|i| match i.state {
        ConnState::Tcp(s) => s,
        s => panic!("not tcp: {s:?}"),
    })
}

#[test]
fn tcp_lifecycle_and_timeouts() {
    let t = table(64);
    let out = |flags, now| run(&t, &mut tcp(H1, 1234, REMOTE, 80, flags, b""), MASQ, now);
    let back = |flags, now| run(&t, &mut tcp(REMOTE, 80, UPLINK, 1234, flags, b""), Action::Deny, now);

    let (c, ct) = conn_of(out(SYN, 0));
    assert_eq!(ct, CtState::New);
    assert_eq!(tcp_state(&t, c, 0), Some(TcpState::SynSent));
    // SYN_SENT lives 120 s; a retransmitted SYN refreshes it.
    assert_eq!(conn_of(out(SYN, 100)).0, c);
    assert_eq!(tcp_state(&t, c, 220), Some(TcpState::SynSent));
    assert_eq!(tcp_state(&t, c, 221), None);
    // Expired: the next SYN makes a new connection.
    let (c, ct) = conn_of(out(SYN, 221));
    assert_eq!(ct, CtState::New);
    conn_of(back(SYN | ACK, 222));
    assert_eq!(tcp_state(&t, c, 222), Some(TcpState::SynRecv));
    assert_eq!(tcp_state(&t, c, 282), Some(TcpState::SynRecv));
    conn_of(out(ACK, 230));
    assert_eq!(tcp_state(&t, c, 230), Some(TcpState::Established));
    assert_eq!(t.get(c, 230).unwrap().expires_in, 432_000);
    assert_eq!(tcp_state(&t, c, 230 + 432_000), Some(TcpState::Established));
    assert_eq!(tcp_state(&t, c, 231 + 432_000), None);
    // Orderly close: FIN, ACK, FIN, ACK → TIME_WAIT (120 s).
    conn_of(out(FIN | ACK, 300));
    assert_eq!(tcp_state(&t, c, 300), Some(TcpState::FinWait));
    conn_of(back(ACK, 301));
    assert_eq!(tcp_state(&t, c, 301), Some(TcpState::CloseWait));
    assert_eq!(t.get(c, 301).unwrap().expires_in, 60);
    conn_of(back(FIN | ACK, 302));
    assert_eq!(tcp_state(&t, c, 302), Some(TcpState::LastAck));
    assert_eq!(t.get(c, 302).unwrap().expires_in, 30);
    conn_of(out(ACK, 303));
    assert_eq!(tcp_state(&t, c, 303), Some(TcpState::TimeWait));
    assert_eq!(tcp_state(&t, c, 423), Some(TcpState::TimeWait));
    // A new SYN on the TIME_WAIT tuple reopens it (same mapping, same port).
    let (c2, _) = conn_of(out(SYN, 400));
    assert_eq!(c2, c);
    assert_eq!(tcp_state(&t, c, 400), Some(TcpState::SynSent));
    let mut f = tcp(REMOTE, 80, UPLINK, 1234, SYN | ACK, b"");
    conn_of(run(&t, &mut f, Action::Deny, 401));
    assert_eq!(check(&f), seen(REMOTE, 80, H1, 1234));
    // RST closes: 10 s.
    conn_of(back(RST, 402));
    assert_eq!(tcp_state(&t, c, 412), Some(TcpState::Close));
    assert_eq!(tcp_state(&t, c, 413), None);
}

#[test]
fn tcp_invalid_packets_and_pickup() {
    let t = table(64);
    for flags in [SYN | ACK, FIN | ACK, RST, RST | ACK, 0, SYN | FIN, FIN] {
        let v = run(&t, &mut tcp(H1, 2000, REMOTE, 80, flags, b""), MASQ, 0);
        assert_eq!(v, Verdict::Drop(Reason::Invalid), "first packet flags {flags:#x}");
    }
    assert!(t.is_empty());
    // Mid-stream pickup (tcp_loose): an ACK starts an ESTABLISHED connection.
    let (c, ct) = conn_of(run(&t, &mut tcp(H1, 2000, REMOTE, 80, ACK, b"data"), MASQ, 0));
    assert_eq!(ct, CtState::New);
    assert_eq!(tcp_state(&t, c, 0), Some(TcpState::Established));
    // A SYN-ACK from the inside on an established flow is ignored (passes, no change);
    // a packet without flags is invalid.
    conn_of(run(&t, &mut tcp(H1, 2000, REMOTE, 80, SYN | ACK, b""), MASQ, 1));
    assert_eq!(run(&t, &mut tcp(H1, 2000, REMOTE, 80, 0, b""), MASQ, 1), Verdict::Drop(Reason::Invalid));
    assert_eq!(tcp_state(&t, c, 1), Some(TcpState::Established));
    // A SYN in SYN_SENT from the other side: simultaneous open.
    let (c, _) = conn_of(run(&t, &mut tcp(H1, 3000, REMOTE, 81, SYN, b""), MASQ, 1));
    conn_of(run(&t, &mut tcp(REMOTE, 81, UPLINK, 3000, SYN, b""), Action::Deny, 1));
    assert_eq!(tcp_state(&t, c, 1), Some(TcpState::SynSent2));
}

#[test]
fn udp_and_icmp_timeouts() {
    let t = table(64);
    let (c, _) = conn_of(run(&t, &mut udp(H1, 53, REMOTE, 53, b"q"), MASQ, 0));
    assert_eq!(t.get(c, 30).unwrap().state, ConnState::Udp { replied: false });
    assert!(t.get(c, 31).is_none(), "unreplied UDP: 30 s");
    let (c, ct) = conn_of(run(&t, &mut udp(H1, 53, REMOTE, 53, b"q"), MASQ, 40));
    assert_eq!(ct, CtState::New);
    conn_of(run(&t, &mut udp(REMOTE, 53, UPLINK, 53, b"a"), Action::Deny, 45));
    assert_eq!(t.get(c, 165).unwrap().state, ConnState::Udp { replied: true });
    assert!(t.get(c, 166).is_none(), "replied UDP: 120 s after the last packet");
    // A reply after expiry is not let in (the policy denies new inbound flows).
    assert_eq!(run(&t, &mut udp(REMOTE, 53, UPLINK, 53, b"a"), Action::Deny, 200), Verdict::Drop(Reason::Denied));

    let (c, _) = conn_of(run(&t, &mut echo(H1, REMOTE, 5, true), MASQ, 0));
    conn_of(run(&t, &mut echo(REMOTE, UPLINK, 5, false), Action::Deny, 10));
    assert_eq!(t.get(c, 40).unwrap().state, ConnState::Icmp { replied: true });
    assert!(t.get(c, 41).is_none(), "ICMP: 30 s");
}

#[test]
fn full_table_refuses_new_flows_existing_keep_working() {
    let t = table(8);
    let mut conns = Vec::new();
    for i in 0..8u16 {
        conns.push(conn_of(run(&t, &mut udp(H1, 100 + i, REMOTE, 53, b"q"), MASQ, 0)).0);
    }
    assert_eq!(t.len(), 8);
    assert_eq!(t.capacity(), 8);
    for i in 0..3u16 {
        let mut f = udp(H2, 100 + i, REMOTE, 53, b"q");
        assert_eq!(run(&t, &mut f, MASQ, 1), Verdict::Drop(Reason::TableFull));
    }
    assert_eq!(t.counters().table_full, 3);
    assert_eq!(t.counters().ports_held, 8, "refused flows hold no port");
    for i in 0..8u16 {
        let (c, ct) = conn_of(run(&t, &mut udp(REMOTE, 53, UPLINK, 100 + i, b"a"), Action::Deny, 2));
        assert_eq!((c, ct), (conns[i as usize], CtState::Established));
    }
    // Once some expire, new flows fit again (an insert reclaims expired slots itself).
    for i in 0..4u16 {
        conn_of(run(&t, &mut udp(H1, 100 + i, REMOTE, 53, b"q"), MASQ, 100));
    }
    for i in 0..4u16 {
        conn_of(run(&t, &mut udp(H2, 100 + i, REMOTE, 53, b"q"), MASQ, 123));
    }
    assert_eq!(t.len(), 8);
}

#[test]
fn flush_epoch_forgets_everything_at_once() {
    let t = table(64);
    let mut policy_calls = 0;
    let mut send = |t: &ConnTable, f: &mut Vec<u8>, now| {
        process(t, f, L3, false, |_| {
            policy_calls += 1;
            MASQ
        }, now)
    };
    for i in 0..10u16 {
        conn_of(send(&t, &mut udp(H1, 1000 + i, REMOTE, 53, b"q"), 0));
    }
    let (c0, _) = conn_of(send(&t, &mut udp(H1, 1000, REMOTE, 53, b"q"), 1));
    assert_eq!(t.dump(1, |_| {}), 10);
    let e = t.epoch();
    assert_eq!(t.flush(), e + 1);
    assert_eq!(t.dump(1, |_| {}), 0, "flushed connections are gone for control");
    assert!(t.get(c0, 1).is_none());
    assert_eq!(t.len(), 10, "slots are reclaimed lazily");
    // Replies of flushed connections are new (denied) flows now.
    assert_eq!(run(&t, &mut udp(REMOTE, 53, UPLINK, 1001, b"a"), Action::Deny, 2), Verdict::Drop(Reason::Denied));
    // The next packet of a flow asks the policy again and makes a new connection,
    // with the same external port (the old mapping is handed over).
    let (c1, ct) = conn_of(send(&t, &mut udp(H1, 1000, REMOTE, 53, b"q"), 2));
    assert_eq!(ct, CtState::New);
    assert_ne!(c1, c0);
    let mut f = udp(REMOTE, 53, UPLINK, 1000, b"a");
    conn_of(run(&t, &mut f, Action::Deny, 2));
    assert_eq!(check(&f), seen(REMOTE, 53, H1, 1000));
    assert_eq!(t.len(), 10);
    assert_eq!(t.sweep(2, 1000), 9, "the sweeper reclaims the rest");
    assert_eq!(t.len(), 1);
    assert_eq!(t.counters().ports_held, 1);
    assert_eq!(policy_calls, 11);
}

#[test]
fn sweep_removes_only_expired_and_releases_ports() {
    let t = table(1000);
    for i in 0..300u16 {
        let now = (i / 100) as u32 * 20; // three generations: 0, 20, 40
        conn_of(run(&t, &mut udp(H1, 3000 + i, REMOTE, 53, b"q"), MASQ, now));
    }
    assert_eq!(t.counters().ports_held, 300);
    assert_eq!(t.sweep(30, 10_000), 0, "nothing idle for more than 30 s at 30");
    let mut removed = 0;
    for _ in 0..10 {
        removed += t.sweep(55, 37); // budgeted calls resume where they stopped
    }
    assert_eq!(removed, 200, "idle 55 s and 35 s: expired; idle 15 s: kept");
    assert_eq!(t.len(), 100);
    assert_eq!(t.sweep(1000, 300), 100);
    assert!(t.is_empty());
    assert_eq!(t.counters().ports_held, 0);
    let c = t.counters();
    assert_eq!((c.created, c.removed), (300, 300));
}

#[test]
fn flow_to_itself_is_invalid_and_deny_is_counted_by_reason() {
    let t = table(8);
    let a = Ipv4Addr::new(10, 0, 0, 1);
    assert_eq!(run(&t, &mut udp(a, 7, a, 7, b"x"), Action::None, 0), Verdict::Drop(Reason::Invalid));
    assert_eq!(run(&t, &mut udp(a, 7, a, 8, b"x"), Action::Deny, 0), Verdict::Drop(Reason::Denied));
    assert!(t.is_empty());
    // Tracking without translation changes nothing.
    let mut f = udp(H1, 1, H2, 2, b"x");
    let before = f.clone();
    let v = run(&t, &mut f, Action::None, 0);
    assert!(matches!(v, Verdict::Forward { changed: false, .. }));
    assert_eq!(f, before);
}

#[test]
fn connections_of_a_gone_address_are_removed_and_others_kept() {
    let t = table(64);
    let (c1, _) = conn_of(run(&t, &mut udp(H1, 5000, REMOTE, 53, b"q"), MASQ, 0));
    let (c2, _) = conn_of(run(&t, &mut udp(H2, 5000, REMOTE, 53, b"q"), MASQ, 0));
    assert_eq!(t.remove_involving(&[]), 0);
    assert_eq!(t.remove_involving(&[H1]), 1);
    assert!(t.get(c1, 1).is_none(), "H1's flow is gone");
    assert!(t.get(c2, 1).is_some(), "H2's flow stays");
    assert_eq!(t.len(), 1);
    // The same flow from H1 again is a new connection (and gets its port back).
    let (_, ct) = conn_of(run(&t, &mut udp(H1, 5000, REMOTE, 53, b"q"), MASQ, 2));
    assert_eq!(ct, CtState::New);
}
