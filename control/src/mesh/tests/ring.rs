//! A ring of six hosts with random link failures: routes must equal a BFS oracle's
//! within a bounded number of ticks after the last session change.

use std::collections::BTreeSet;

use super::scenarios::ring;
use super::sim::{Sim, TICK};

const N: usize = 6;

/// Ring links `(i, i+1 mod N)` as ascending pairs.
fn ring_links() -> Vec<(usize, usize)> {
    (0..N).map(|i| (i.min((i + 1) % N), i.max((i + 1) % N))).collect()
}

/// Cuts the chosen ring links and restores the others; returns the links that should
/// come up.
fn perturb(sim: &mut Sim, down_percent: u64) -> BTreeSet<(usize, usize)> {
    let mut want = BTreeSet::new();
    for (i, j) in ring_links() {
        if sim.rand() % 100 < down_percent {
            sim.cut(i, j);
        } else {
            sim.unblock(i, j);
            want.insert((i, j));
        }
    }
    want
}

/// Runs until the sessions are `want` and routes equal the oracle; returns the ticks
/// from the last session change to convergence.
fn settle(sim: &mut Sim, want: &BTreeSet<(usize, usize)>) -> u64 {
    let t = sim.run_until(300, |s| s.links == *want && s.converged());
    assert!(t.is_some(), "no convergence: links {:?} want {:?} mismatches {:?}", sim.links, want, sim.mismatches());
    (sim.now - sim.last_link_change) / TICK
}

#[test]
fn ring_with_random_failures_converges_to_shortest_paths() {
    let mut sim = ring(N);
    let mut worst = 0;
    for round in 0..30 {
        let want = perturb(&mut sim, 35);
        let lag = settle(&mut sim, &want);
        worst = worst.max(lag);
        // The longest path left is 5 hops (one cut), one tick per hop, plus a tick for
        // the link change itself.
        assert!(lag <= 7, "round {round}: converged {lag} ticks after the last change");
        // Converged routes stay put, and forwarding follows them without loops.
        sim.run(3);
        assert!(sim.converged(), "round {round}: {:?}", sim.mismatches());
        for i in 0..N {
            for j in (0..N).filter(|j| *j != i) {
                let (outcome, crossed) = sim.walk(i, j);
                match sim.oracle(i, j) {
                    Some(h) => assert_eq!((outcome, crossed), (None, h.hops), "round {round}: {i} → {j}"),
                    None => assert_eq!(outcome, Some(super::super::RelayDrop::NoRoute)),
                }
            }
        }
    }
    assert!(worst > 0);
}

#[test]
fn lossy_ring_converges_through_digests() {
    let mut sim = ring(N);
    sim.loss_percent = 30;
    for round in 0..8 {
        let want = perturb(&mut sim, 30);
        let t = sim.run_until(600, |s| s.links == want && s.converged());
        assert!(t.is_some(), "round {round}: {:?}", sim.mismatches());
    }
    // Lost floods are repaired by digests well before anything ages out.
    let mut stable = 0;
    for _ in 0..200 {
        sim.step();
        if sim.converged() {
            stable += 1;
        }
    }
    assert!(stable >= 190, "routes flap under loss: converged {stable}/200 ticks");
}

#[test]
fn isolated_host_is_unreachable_until_it_returns() {
    let mut sim = ring(N);
    sim.cut(2, 3);
    sim.cut(3, 4);
    assert_eq!(sim.nodes[3].core.route_table(), vec![]);
    sim.run_until(10, |s| s.converged()).expect("converges");
    let id3 = sim.nodes[3].id;
    for i in [0, 1, 2, 4, 5] {
        assert_eq!(sim.nodes[i].core.next_hop(&id3), None);
    }
    sim.unblock(3, 4);
    let want: BTreeSet<(usize, usize)> = ring_links().into_iter().filter(|l| *l != (2, 3)).collect();
    settle(&mut sim, &want);
    assert_eq!(sim.nodes[0].core.route(&id3).map(|h| (h.next_hop, h.hops)), Some((sim.nodes[5].id, 3)));
}
