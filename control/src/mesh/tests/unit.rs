//! One core or one database at a time: the rules the scenarios rely on.

use std::net::SocketAddr;

use super::super::topology::{Install, Topology};
use super::super::{
    Advert, Config, Event, LinkState, Mesh, MeshError, Message, PeerId, RelayAction, RelayDrop, RelayHeader,
    MAX_MESSAGE_BYTES,
};
use super::sim::{pid, test_config};

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 6784))
}

fn ls(origin: u8, seq: u64, links: &[u8]) -> LinkState {
    LinkState {
        origin: pid(origin),
        seq,
        addrs: vec![addr(origin)],
        links: links.iter().map(|n| pid(*n)).collect(),
        can_accept_inbound: true,
    }
}

fn update(states: Vec<LinkState>, age_ms: u64) -> Vec<u8> {
    Message::Update { adverts: states.into_iter().map(|state| Advert { age_ms, state }).collect() }.encode()
}

fn core(me: u8) -> Mesh {
    Mesh::new(pid(me), vec![addr(me)], test_config(), 1 << 32, 7, 0).unwrap()
}

fn drain_events(m: &mut Mesh) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

#[test]
fn routes_need_both_ends_to_report_a_link() {
    let mut t = Topology::new(pid(1), 16);
    // 1–2 live; 2 lists 3, 3 lists 2 and 4, 4 does not list 3 (one-sided claim).
    assert_eq!(t.install(ls(2, 1, &[1, 3]), 100), Install::New);
    assert_eq!(t.install(ls(3, 1, &[2, 4]), 100), Install::New);
    assert_eq!(t.install(ls(4, 1, &[]), 100), Install::New);
    let r = t.routes(&[pid(2)]);
    assert_eq!(r.get(&pid(3)).map(|h| (h.next_hop, h.hops)), Some((pid(2), 2)));
    assert!(!r.contains_key(&pid(4)));
    assert_eq!(t.install(ls(4, 2, &[3]), 100), Install::Newer);
    assert_eq!(t.routes(&[pid(2)]).get(&pid(4)).map(|h| h.hops), Some(3));
    assert_eq!(t.install(ls(4, 2, &[3]), 100), Install::Same);
    assert_eq!(t.install(ls(4, 1, &[]), 100), Install::Older);
}

#[test]
fn equal_paths_take_the_smallest_first_hop() {
    let mut t = Topology::new(pid(1), 16);
    // 1 has live links to 3 and 2; both reach 9, and 9 lists both.
    t.install(ls(2, 1, &[1, 9]), 100);
    t.install(ls(3, 1, &[1, 9]), 100);
    t.install(ls(9, 1, &[2, 3]), 100);
    assert_eq!(t.routes(&[pid(2), pid(3)])[&pid(9)].next_hop, pid(2));
    assert_eq!(t.routes(&[pid(3)])[&pid(9)].next_hop, pid(3));
    // A direct link beats any relayed path.
    assert_eq!(t.routes(&[pid(2), pid(3), pid(9)])[&pid(9)].hops, 1);
}

#[test]
fn database_is_bounded_and_ages_carry_over() {
    let mut t = Topology::new(pid(1), 3);
    t.set_own(ls(1, 1, &[]));
    assert_eq!(t.install(ls(2, 1, &[]), 1_000), Install::New);
    assert_eq!(t.install(ls(3, 1, &[]), 2_000), Install::New);
    assert_eq!(t.install(ls(4, 1, &[]), 2_000), Install::Full);
    assert_eq!(t.install(ls(3, 2, &[]), 5_000), Install::Newer, "known origins still update");
    // Expiring at 1000 with max age 10000: at 400 it is 9400 old.
    assert_eq!(t.advert(&pid(2), 400, 10_000).map(|a| a.age_ms), Some(9_400));
    assert_eq!(t.advert(&pid(1), 400, 10_000).map(|a| a.age_ms), Some(0));
    assert_eq!(t.next_expiry(), Some(1_000));
    assert_eq!(t.expire(999), vec![]);
    assert_eq!(t.expire(1_000), vec![pid(2)]);
    assert!(t.advert(&pid(2), 400, 10_000).is_none());
    assert_eq!(t.len(), 2);
}

#[test]
fn received_age_decides_expiry_and_peer_gone() {
    let mut m = core(1);
    m.link_up(pid(2), addr(2), 0).unwrap();
    let max = test_config().max_age_ms;
    m.handle_message(&pid(2), &update(vec![ls(2, 1, &[1, 3]), ls(3, 1, &[2])], max - 500), 1_000).unwrap();
    assert_eq!(m.next_hop(&pid(3)), Some(pid(2)));
    drain_events(&mut m);
    m.handle_timeout(1_499);
    assert!(m.link_state(&pid(3)).is_some());
    m.handle_timeout(1_500);
    assert!(m.link_state(&pid(3)).is_none());
    assert_eq!(drain_events(&mut m), vec![Event::RouteChanged(pid(3), None), Event::PeerGone(pid(3))]);
    // Peer 2 stays known: its session is up.
    assert_eq!(m.next_hop(&pid(2)), Some(pid(2)));
    // Adverts already too old are not stored.
    m.handle_message(&pid(2), &update(vec![ls(3, 2, &[2])], max), 2_000).unwrap();
    assert!(m.link_state(&pid(3)).is_none());
    assert_eq!(m.stats().adverts_too_old, 1);
}

#[test]
fn garbage_and_strangers_change_nothing() {
    let mut m = core(1);
    m.link_up(pid(2), addr(2), 0).unwrap();
    let before = m.link_states();
    assert!(matches!(m.handle_message(&pid(2), b"\x00\xffnot json", 10), Err(MeshError::Decode(_))));
    assert_eq!(m.handle_message(&pid(3), &update(vec![ls(3, 1, &[])], 0), 10), Err(MeshError::NotNeighbour(pid(3))));
    assert_eq!(m.link_states(), before);
    assert_eq!(m.stats().decode_errors, 1);
    assert_eq!(m.link_up(pid(1), addr(1), 0), Err(MeshError::Myself));
    assert_eq!(m.add_peer(pid(1), addr(1), 0), Err(MeshError::Myself));
}

#[test]
fn config_is_checked() {
    let bad = [
        Config { refresh_ms: 6_000, max_age_ms: 10_000, ..test_config() },
        Config { backoff_max_ms: 10, ..test_config() },
        Config { ttl: 0, ..test_config() },
        Config { max_peers: 10_000, ..test_config() },
        Config { max_message_bytes: MAX_MESSAGE_BYTES + 1, ..test_config() },
    ];
    for c in bad {
        assert!(matches!(Mesh::new(pid(1), vec![], c, 0, 0, 0), Err(MeshError::Config(_))));
    }
    assert!(Config::default().validate().is_ok());
}

#[test]
fn dials_back_off_rotate_addresses_and_stop_while_linked() {
    let mut m = core(1);
    m.add_peer(pid(2), addr(2), 0).unwrap();
    m.add_peer(pid(2), addr(22), 0).unwrap();
    let (mut times, mut addrs) = (Vec::new(), Vec::new());
    for now in (0..20_000).step_by(50) {
        for (p, a) in m.wants_dial(now) {
            assert_eq!(p, pid(2));
            times.push(now);
            addrs.push(a);
        }
    }
    assert_eq!(times[0], 0);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let cfg = test_config();
    assert!(gaps.iter().all(|g| *g >= cfg.backoff_min_ms && *g <= cfg.backoff_max_ms * 5 / 4 + 50), "{gaps:?}");
    assert!(gaps.windows(2).take(3).all(|w| w[1] > w[0]), "backoff grows: {gaps:?}");
    assert!(addrs.iter().step_by(2).all(|a| *a == addr(2)) && addrs.iter().skip(1).step_by(2).all(|a| *a == addr(22)));
    // A session stops the dials; losing it starts them again soon.
    m.link_up(pid(2), addr(2), 20_000).unwrap();
    assert!((20_000..40_000).step_by(100).all(|t| m.wants_dial(t).is_empty()));
    m.link_down(&pid(2), 40_000);
    let next = (40_000..50_000).step_by(10).find(|t| !m.wants_dial(*t).is_empty()).unwrap();
    assert!(next - 40_000 <= cfg.backoff_min_ms * 5 / 4 + 10);
}

#[test]
fn relay_decisions() {
    let mut m = core(2);
    m.link_up(pid(1), addr(1), 0).unwrap();
    m.link_up(pid(3), addr(3), 0).unwrap();
    let h = |src, dst, ttl| RelayHeader { src: pid(src), dst: pid(dst), ttl };
    assert_eq!(m.relay(&h(1, 2, 0)), RelayAction::Deliver);
    assert_eq!(m.relay(&h(1, 3, 5)), RelayAction::Forward { next_hop: pid(3), header: h(1, 3, 4) });
    assert_eq!(m.relay(&h(1, 3, 1)), RelayAction::Drop(RelayDrop::TtlExpired));
    assert_eq!(m.relay(&h(1, 9, 5)), RelayAction::Drop(RelayDrop::NoRoute));
    assert_eq!(m.relay(&h(2, 3, 5)), RelayAction::Drop(RelayDrop::Looped));
    assert_eq!(m.header_to(&pid(3)), Some((pid(3), h(2, 3, 16))));
    assert_eq!(m.header_to(&pid(9)), None);
    // On the wire the ids are 8-byte key prefixes; known peers and this host resolve.
    assert_eq!(m.resolve(&h(1, 3, 5).to_wire()), Some(h(1, 3, 5)));
    assert_eq!(m.resolve(&h(3, 2, 5).to_wire()), Some(h(3, 2, 5)));
    assert_eq!(m.resolve(&h(1, 9, 5).to_wire()), None, "unknown destination");
    assert_eq!(m.resolve(&h(9, 2, 5).to_wire()), None, "unknown origin");
}

#[test]
fn colliding_short_ids_resolve_to_nothing() {
    let mut m = core(2);
    let mut twin = pid(1).0;
    twin[31] ^= 1; // same first 8 bytes as pid(1)
    m.link_up(pid(1), addr(1), 0).unwrap();
    let h = RelayHeader { src: pid(1), dst: pid(2), ttl: 5 };
    assert_eq!(m.resolve(&h.to_wire()), Some(h));
    m.link_up(PeerId(twin), addr(4), 0).unwrap();
    assert_eq!(m.resolve(&h.to_wire()), None, "ambiguous origin is refused");
}

#[test]
fn big_databases_sync_in_bounded_chunks() {
    let mut m = core(1);
    let n1 = PeerId([0; 32]);
    m.link_up(n1, addr(200), 0).unwrap();
    // 300 origins, each with 120 links (a dense mesh); one advert per message.
    let id = |i: u16| {
        let mut b = [7u8; 32];
        b[0] = 9;
        b[1] = (i >> 8) as u8;
        b[2] = i as u8;
        PeerId(b)
    };
    for i in 0..300u16 {
        let links: Vec<PeerId> =
            (0..120u16).map(|k| id((i + 1 + k) % 300)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let s = LinkState { origin: id(i), seq: 1, addrs: vec![addr(1)], links, can_accept_inbound: true };
        m.handle_message(&n1, &update(vec![s], 0), 10).unwrap();
    }
    assert_eq!(m.link_states().len(), 301);
    while m.poll_transmit(10).is_some() {}
    let n2 = PeerId([1; 32]);
    m.link_up(n2, addr(201), 20).unwrap();
    let mut got = std::collections::BTreeSet::new();
    let mut chunks = 0;
    while let Some((to, bytes)) = m.poll_transmit(20) {
        if to != n2 {
            continue;
        }
        assert!(bytes.len() <= test_config().max_message_bytes, "{}", bytes.len());
        if let Message::Sync { adverts } = Message::decode(&bytes).unwrap() {
            chunks += 1;
            got.extend(adverts.into_iter().map(|a| a.state.origin));
        }
    }
    assert!(chunks > 1);
    assert_eq!(got.len(), 301, "every origin, this host included");
}

#[test]
fn own_state_lists_live_links() {
    let mut m = core(5);
    m.link_up(pid(9), addr(9), 0).unwrap();
    m.link_up(pid(2), addr(2), 0).unwrap();
    assert_eq!(m.own_state().unwrap().links, vec![pid(2), pid(9)]);
    let seq = m.own_state().unwrap().seq;
    m.link_down(&pid(9), 5);
    let s = m.own_state().unwrap();
    assert_eq!((s.links.clone(), s.seq > seq), (vec![pid(2)], true));
    // A refresh is due refresh_ms after the last origination.
    assert!(m.poll_timeout().unwrap() <= 5 + test_config().refresh_ms);
}

#[test]
fn own_state_copies_from_before_a_restart_are_jumped_past() {
    let mut m = core(1);
    m.link_up(pid(2), addr(2), 0).unwrap();
    let own = m.own_state().unwrap().clone();
    let sync = |s: LinkState| Message::Sync { adverts: vec![Advert { age_ms: 0, state: s }] }.encode();
    // An echo of our current state changes nothing.
    m.handle_message(&pid(2), &sync(own.clone()), 10).unwrap();
    assert_eq!((m.stats().seq_bumps, m.own_state().unwrap().seq), (0, own.seq));
    // The same number with other content (a restart that reused it): jump past.
    m.handle_message(&pid(2), &sync(LinkState { links: vec![], ..own.clone() }), 20).unwrap();
    assert_eq!((m.stats().seq_bumps, m.own_state().unwrap().seq), (1, own.seq + 1));
    // A digest showing a newer number of ours: jump past that too.
    let digest = Message::Digest { have: vec![(pid(1), own.seq + 10)] }.encode();
    m.handle_message(&pid(2), &digest, 30).unwrap();
    assert_eq!((m.stats().seq_bumps, m.own_state().unwrap().seq), (2, own.seq + 11));
    // An older copy is answered with ours.
    while m.poll_transmit(30).is_some() {}
    m.handle_message(&pid(2), &sync(LinkState { seq: 3, ..own }), 40).unwrap();
    let (to, bytes) = m.poll_transmit(40).unwrap();
    let Ok(Message::Update { adverts }) = Message::decode(&bytes) else { panic!("an update") };
    assert_eq!((to, adverts[0].state.seq), (pid(2), m.own_state().unwrap().seq));
}

#[test]
fn a_probe_is_answered_over_the_direct_session_only() {
    let mut m = core(1);
    // Not linked: nothing queued.
    assert!(!m.probe(&pid(2)));
    m.link_up(pid(2), addr(2), 0).unwrap();
    while m.poll_transmit(0).is_some() {}
    assert!(m.probe(&pid(2)));
    let (to, bytes) = m.poll_transmit(10).unwrap();
    assert_eq!((to, Message::decode(&bytes)), (pid(2), Ok(Message::Probe)));
    assert!(m.poll_transmit(10).is_none());
    // Probed by 2: one answer, to 2, however many probes came in meanwhile.
    m.handle_message(&pid(2), &Message::Probe.encode(), 20).unwrap();
    m.handle_message(&pid(2), &Message::Probe.encode(), 21).unwrap();
    let (to, bytes) = m.poll_transmit(22).unwrap();
    assert_eq!((to, Message::decode(&bytes)), (pid(2), Ok(Message::ProbeReply)));
    assert!(m.poll_transmit(22).is_none());
    // A reply changes nothing and asks for nothing.
    let seq = m.own_state().unwrap().seq;
    m.handle_message(&pid(2), &Message::ProbeReply.encode(), 30).unwrap();
    assert!(m.poll_transmit(30).is_none());
    assert_eq!(m.own_state().unwrap().seq, seq);
    // A probe queued for a link that goes down is not sent.
    assert!(m.probe(&pid(2)));
    m.link_down(&pid(2), 40);
    assert!(std::iter::from_fn(|| m.poll_transmit(40)).all(|(to, _)| to != pid(2)));
}
