//! Membership and routing scenarios on the simulated network.

use super::super::{Event, RelayAction, RelayDrop};
use super::sim::{pid, test_config, Sim, TICK};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// A–B–C where A and C have no underlay path; A and C know only B.
fn line() -> Sim {
    let mut sim = Sim::with_n(3);
    sim.block(A, C);
    sim.configure(A, B);
    sim.configure(C, B);
    let t = sim.run_until(50, |s| s.links.len() == 2 && s.converged());
    assert!(t.is_some(), "A–B–C converges: {:?}", sim.mismatches());
    sim
}

#[test]
fn a_and_c_route_through_b() {
    let mut sim = line();
    sim.run(5);
    let (a, b, c) = (&sim.nodes[A], &sim.nodes[B], &sim.nodes[C]);
    assert_eq!(a.core.next_hop(&c.id), Some(b.id));
    assert_eq!(c.core.next_hop(&a.id), Some(b.id));
    assert_eq!(a.core.route(&c.id).map(|h| h.hops), Some(2));
    let table = a.core.route_table();
    assert_eq!(table.len(), 2);
    assert!(table[0].is_direct() && table[0].dst == b.id);
    assert!(!table[1].is_direct() && table[1].next_hop == b.id);

    // A learned C's address from B and tries to dial it (the underlay drops it).
    assert!(sim.dials.iter().any(|(_, i, p)| *i == A && *p == c.id));
    let peers = a.core.peers();
    let pc = peers.iter().find(|p| p.id == c.id).expect("A knows C");
    assert_eq!(pc.addrs, vec![c.addr]);
    assert_eq!(pc.link, None);
    assert!(!pc.configured);

    // Events in order: B appears and is direct, then C appears relayed via B.
    let evs: Vec<Event> = a.events.iter().map(|(_, e)| e.clone()).collect();
    let appeared_c = evs.iter().position(|e| *e == Event::PeerAppeared(c.id, vec![c.addr])).expect("C appeared");
    let route_c = evs.iter().position(|e| *e == Event::RouteChanged(c.id, Some(b.id))).expect("C via B");
    assert!(appeared_c < route_c);
    assert_eq!(evs[0], Event::PeerAppeared(b.id, vec![b.addr]));
    assert_eq!(evs[1], Event::RouteChanged(b.id, Some(b.id)));

    // A message from A to C is relayed by B and delivered at C.
    let (first, hdr) = a.core.header_to(&c.id).expect("route");
    assert_eq!((first, hdr.src, hdr.dst, hdr.ttl), (b.id, a.id, c.id, 16));
    let RelayAction::Forward { next_hop, header } = b.core.relay(&hdr) else { panic!("B forwards") };
    assert_eq!((next_hop, header.ttl), (c.id, 15));
    assert_eq!(c.core.relay(&header), RelayAction::Deliver);
    assert_eq!(sim.walk(A, C), (None, 2));
}

#[test]
fn joiner_knowing_one_member_learns_everyone_and_dials_them() {
    // D has the smallest id, so it dials first and the others find the session up.
    let ids = [pid(2), pid(3), pid(4), pid(1)];
    let mut sim = Sim::new(&ids, test_config());
    let d = 3;
    sim.nodes[d].alive = false;
    sim.block(A, C);
    sim.configure(A, B);
    sim.configure(C, B);
    sim.run_until(50, |s| s.links.len() == 2 && s.converged()).expect("A–B–C");

    sim.revive(d, true);
    sim.configure(d, B);
    let t = sim.run_until(30, |s| s.links.len() == 5 && s.converged());
    assert!(t.is_some(), "D links with everyone: {:?} {:?}", sim.links, sim.mismatches());

    let dn = &sim.nodes[d];
    assert_eq!(dn.core.link_states().len(), 4, "D holds every link state");
    for i in [A, B, C] {
        let id = sim.nodes[i].id;
        assert!(dn.core.is_linked(&id));
        assert_eq!(dn.core.next_hop(&id), Some(id));
        assert!(dn.events.iter().any(|(_, e)| *e == Event::PeerAppeared(id, vec![sim.nodes[i].addr])));
    }
    assert!(sim.dials.iter().any(|(_, i, p)| *i == d && *p == sim.nodes[A].id), "D dialled A");
    assert!(sim.dials.iter().any(|(_, i, p)| *i == d && *p == sim.nodes[C].id), "D dialled C");
    assert!(!sim.dials.iter().any(|(_, i, p)| *i != d && *p == dn.id), "nobody else dialled D");
    // A and C still have no path of their own; both relayed routes are 2 hops and the
    // tie goes to the smaller id (A's id 2, B's 3, D's 1: via D).
    let (a, c) = (&sim.nodes[A], &sim.nodes[C]);
    assert_eq!(a.core.route(&c.id).map(|h| (h.next_hop, h.hops)), Some((dn.id, 2)));
}

#[test]
fn direct_path_is_preferred_at_once() {
    let mut sim = line();
    let (a_id, c_id) = (sim.nodes[A].id, sim.nodes[C].id);
    sim.unblock(A, C);
    let before = sim.now;
    sim.run_until(40, |s| s.links.contains(&(A, C))).expect("A and C dial each other within the backoff");
    // The very tick the session came up, both ends route directly.
    assert_eq!(sim.nodes[A].core.next_hop(&c_id), Some(c_id));
    assert_eq!(sim.nodes[C].core.next_hop(&a_id), Some(a_id));
    assert!(sim.events_since(A, before).contains(&super::super::Event::RouteChanged(c_id, Some(c_id))));
    sim.run(5);
    assert!(sim.converged());
    assert_eq!(sim.nodes[B].core.route(&a_id).map(|h| h.hops), Some(1));
}

#[test]
fn middle_dies_peers_go_after_max_age_and_come_back() {
    let mut sim = line();
    let cfg = test_config();
    let (a_id, b_id, c_id) = (sim.nodes[A].id, sim.nodes[B].id, sim.nodes[C].id);
    sim.run(20);
    let t0 = sim.now;
    sim.kill(B);
    // Routes are withdrawn at once, before any message moves.
    assert_eq!(sim.nodes[A].core.next_hop(&c_id), None);
    assert_eq!(sim.nodes[C].core.next_hop(&a_id), None);
    let evs = sim.events_since(A, t0);
    assert!(evs.contains(&Event::RouteChanged(b_id, None)) && evs.contains(&Event::RouteChanged(c_id, None)));
    assert!(!evs.iter().any(|e| matches!(e, Event::PeerGone(_))));

    let gone = |s: &Sim, who| s.nodes[A].events.iter().find(|(_, e)| *e == Event::PeerGone(who)).map(|(t, _)| *t);
    sim.run_until(200, |s| gone(s, b_id).is_some() && gone(s, c_id).is_some()).expect("PeerGone");
    for who in [b_id, c_id] {
        let t = gone(&sim, who).unwrap();
        // The last refresh was at most refresh_ms before the crash; ages do not count
        // the one tick per hop a message spends in flight.
        assert!(
            t >= t0 + cfg.max_age_ms - cfg.refresh_ms - TICK && t <= t0 + cfg.max_age_ms + 3 * TICK,
            "gone at {t}, died at {t0}"
        );
    }
    assert!(sim.nodes[A].core.link_state(&c_id).is_none());
    // B stays configured (and is still dialled); C is forgotten.
    let peers = sim.nodes[A].core.peers();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].configured && peers[0].id == b_id);

    let back = sim.now;
    sim.revive(B, true);
    sim.run_until(60, |s| s.links.len() == 2 && s.converged()).expect("routes come back");
    assert_eq!(sim.nodes[A].core.next_hop(&c_id), Some(b_id));
    assert_eq!(sim.nodes[C].core.next_hop(&a_id), Some(b_id));
    let evs = sim.events_since(A, back);
    assert!(evs.contains(&Event::PeerAppeared(b_id, vec![sim.nodes[B].addr])));
    assert!(evs.contains(&Event::PeerAppeared(c_id, vec![sim.nodes[C].addr])));
    assert!(evs.contains(&Event::RouteChanged(c_id, Some(b_id))));
}

#[test]
fn restart_without_boot_counter_jumps_past_old_seq() {
    let mut sim = line();
    sim.run(50);
    let b_id = sim.nodes[B].id;
    let old = sim.nodes[A].core.link_state(&b_id).unwrap().seq;
    assert!(old > (1 << 32) + 3, "B re-originated a few times");
    sim.kill(B);
    sim.revive(B, false);
    assert!(sim.nodes[B].core.own_state().unwrap().seq < old);
    sim.run_until(60, |s| s.links.len() == 2 && s.converged()).expect("converges");
    sim.run_until(10, |s| s.nodes[A].core.link_state(&b_id) == s.nodes[B].core.own_state())
        .expect("A holds B's newest");
    assert!(sim.nodes[B].core.stats().seq_bumps >= 1);
    assert!(sim.nodes[A].core.link_state(&b_id).unwrap().seq > old);
    assert_eq!(sim.walk(A, C), (None, 2));
}

#[test]
fn firewalled_peers_are_never_dialled_but_dial_out() {
    // A, B, C accept inbound; F and G do not. Everyone knows only A.
    let mut sim = Sim::with_n(5);
    let (f, g) = (3, 4);
    sim.firewall(f);
    sim.firewall(g);
    for i in [B, C, f, g] {
        sim.configure(i, A);
    }
    let t = sim.run_until(60, |s| s.links.len() == 9 && s.converged());
    assert!(t.is_some(), "links {:?} mismatches {:?}", sim.links, sim.mismatches());
    sim.run(50);
    assert_eq!(sim.links.len(), 9, "every pair but F–G");
    assert!(!sim.links.contains(&(f, g)));
    let (f_id, g_id) = (sim.nodes[f].id, sim.nodes[g].id);
    assert!(!sim.dials.iter().any(|(_, _, p)| *p == f_id || *p == g_id), "nobody dials a firewalled peer");
    assert!(sim.dials.iter().any(|(_, i, _)| *i == f), "F dials out");
    for i in [A, B, C] {
        assert_eq!(sim.nodes[i].core.next_hop(&f_id), Some(f_id));
    }
    // F and G reach each other through the smallest open peer.
    assert_eq!(sim.nodes[f].core.route(&g_id).map(|h| (h.next_hop, h.hops)), Some((sim.nodes[A].id, 2)));
    assert_eq!(sim.nodes[A].core.link_state(&f_id).map(|s| s.can_accept_inbound), Some(false));
    assert_eq!(sim.walk(f, g), (None, 2));
}

#[test]
fn firewalled_peer_is_redialled_only_through_a_fresh_pinhole() {
    let mut sim = Sim::with_n(4);
    let f = 3;
    sim.firewall(f);
    for i in [B, C, f] {
        sim.configure(i, A);
    }
    sim.run_until(60, |s| s.links.len() == 6 && s.converged()).expect("converges");
    let f_id = sim.nodes[f].id;
    let cut_at = sim.now;
    sim.cut(A, f);
    // A may dial F back at the address F came from while the pinhole is fresh…
    sim.run((test_config().inbound_grace_ms + 1_000) / TICK);
    let dials_to_f: Vec<u64> = sim.dials.iter().filter(|(_, i, p)| *i == A && *p == f_id).map(|(t, _, _)| *t).collect();
    assert!(!dials_to_f.is_empty() && dials_to_f.iter().all(|t| *t <= cut_at + test_config().inbound_grace_ms));
    // …and never after, while B and C (whose sessions stayed up) never dial it at all.
    let n = dials_to_f.len();
    sim.run(100);
    assert_eq!(sim.dials.iter().filter(|(_, i, p)| *i == A && *p == f_id).count(), n);
    assert!(!sim.dials.iter().any(|(_, i, p)| *i != A && *p == f_id));
    assert_eq!(sim.nodes[A].core.next_hop(&f_id), Some(sim.nodes[B].id));
    // When F's path comes back, F dials A again.
    sim.unblock(A, f);
    sim.run_until(40, |s| s.links.contains(&(A, f))).expect("F redials A");
}

#[test]
fn ttl_bounds_a_loop_during_convergence() {
    let mut sim = ring(6);
    // 0 → 3: two 3-hop paths, the tie goes to 1 (smaller id than 5); 1 → 3 via 2.
    assert_eq!(sim.walk(0, 3), (None, 3));
    assert_eq!(sim.nodes[0].core.next_hop(&sim.nodes[3].id), Some(sim.nodes[1].id));
    // 2–3 fails: 2 reroutes at once via 1, but 1 has not heard yet and still sends to 2.
    sim.cut(2, 3);
    assert_eq!(sim.nodes[2].core.next_hop(&sim.nodes[3].id), Some(sim.nodes[1].id));
    assert_eq!(sim.nodes[1].core.next_hop(&sim.nodes[3].id), Some(sim.nodes[2].id));
    let (outcome, crossed) = sim.walk(0, 3);
    assert_eq!(outcome, Some(RelayDrop::TtlExpired));
    assert_eq!(crossed, u32::from(test_config().ttl), "a loop ends after ttl links");
    // Once the news has spread, the message goes the other way round.
    sim.run_until(10, |s| s.converged()).expect("converges");
    assert_eq!(sim.walk(0, 3), (None, 3));
    assert_eq!(sim.nodes[0].core.next_hop(&sim.nodes[3].id), Some(sim.nodes[5].id));
}

/// A ring of `n` hosts (underlay paths only between ring neighbours), converged.
pub fn ring(n: usize) -> Sim {
    let mut sim = Sim::with_n(n);
    for i in 0..n {
        for j in i + 1..n {
            if j != i + 1 && !(i == 0 && j == n - 1) {
                sim.block(i, j);
            }
        }
        sim.configure(i, (i + 1) % n);
        sim.configure(i, (i + n - 1) % n);
    }
    let t = sim.run_until(100, |s| s.links.len() == n && s.converged());
    assert!(t.is_some(), "ring converges: {:?}", sim.mismatches());
    sim
}
