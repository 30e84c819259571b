//! Port allocator tests: endpoint-independent mapping, preservation, fresh ports,
//! address-space reuse, and exclusive ownership under concurrency.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Barrier};

use super::alloc::{PortAlloc, MAX_PROBES};
use super::tests_util::*;
use super::{Action, ConnTable, NatConfig, Reason, Verdict};

const TCP: usize = 0;
const ICMP: usize = 2;
const A: u32 = 0xc000_020a; // 192.0.2.10
const B: u32 = 0xc000_020b;
const C: u32 = 0xc000_020c;

#[test]
fn mapping_is_endpoint_independent_and_preserved() {
    let a = PortAlloc::new(4, 1000, (2000, 2999));
    let c1 = a.acquire(A, TCP, 1, 5000, false).unwrap();
    assert_eq!(c1.port, 5000, "preserved although outside the range");
    let c2 = a.acquire(A, TCP, 1, 5000, false).unwrap();
    assert_eq!(c2, c1, "same endpoint, same port");
    assert_eq!(a.holder(A, TCP, 5000), Some((1, 5000, 2)));
    let other = a.acquire(A, TCP, 2, 5000, false).unwrap();
    assert!((2000..=2999).contains(&other.port));
    assert_eq!(a.acquire(A, TCP, 2, 5000, false).unwrap(), other);
    // Another address or protocol is another space.
    assert_eq!(a.acquire(B, TCP, 2, 5000, false).unwrap().port, 5000);
    assert_eq!(a.acquire(A, ICMP, 2, 5000, false).unwrap().port, 5000);
    // Fresh: a different port for the same endpoint, without losing its mapping.
    let f = a.acquire(A, TCP, 1, 5000, true).unwrap();
    assert_ne!(f.port, 5000);
    assert_eq!(a.acquire(A, TCP, 1, 5000, false).unwrap().port, 5000);
    a.release(f, TCP, 1, 5000);
    assert_eq!(a.holder(A, TCP, f.port), None);
    for _ in 0..3 {
        a.release(c1, TCP, 1, 5000);
    }
    assert_eq!(a.holder(A, TCP, 5000), None, "free after the last release");
    let c3 = a.acquire(A, TCP, 3, 5000, false).unwrap();
    assert_eq!(c3.port, 5000, "now someone else's");
}

#[test]
fn address_spaces_are_bounded_and_reused() {
    let a = PortAlloc::new(2, 100, (2000, 2010));
    let ca = a.acquire(A, TCP, 1, 1, false).unwrap();
    let cb = a.acquire(B, TCP, 1, 1, false).unwrap();
    assert_eq!(a.acquire(C, TCP, 1, 1, false), None, "two addresses in use");
    a.release(ca, TCP, 1, 1);
    let cc = a.acquire(C, TCP, 1, 1, false).unwrap();
    assert_eq!(cc.space, ca.space, "an empty space is reused");
    assert_eq!(a.ports_held(), 2);
    a.release(cb, TCP, 1, 1);
    a.release(cc, TCP, 1, 1);
    assert_eq!(a.ports_held(), 0);
    // Through process: no space left is "ports exhausted".
    let t = ConnTable::new(NatConfig { max_conns: 16, snat_addrs: 1, ..NatConfig::default() });
    fwd(&t, udp(H1, 1, REMOTE, 2, b""), Action::Snat { to: UPLINK }, 0);
    let v = run(&t, &mut udp(H2, 1, REMOTE, 2, b""), Action::Snat { to: GW }, 0);
    assert_eq!(v, Verdict::Drop(Reason::PortsExhausted));
}

#[test]
fn probing_is_bounded() {
    // A full range of which only the last ports are free: probing stops after
    // MAX_PROBES ports, so the refusal costs a bounded amount of work.
    let a = PortAlloc::new(1, 100_000, (1024, 9215));
    let mut held = 0u32;
    let mut refused = 0u32;
    for ip in 1..=12_000u32 {
        match a.acquire(A, TCP, ip, 80, false) {
            Some(_) => held += 1,
            None => refused += 1,
        }
    }
    assert!(held >= 8_000, "held {held} of 8193");
    assert_eq!(held + refused, 12_000);
    assert!(held <= 8_193);
    const { assert!(MAX_PROBES < 8_192, "the range is larger than one probe run") };
}

#[test]
fn concurrent_allocations_never_collide() {
    const THREADS: u32 = 4;
    const ROUNDS: u32 = 20_000;
    let a = Arc::new(PortAlloc::new(2, 1000, (3000, 3063)));
    // owner[port] = endpoint id + 1 while an endpoint holds it.
    let owner: Arc<Vec<AtomicU32>> = Arc::new((0..65536).map(|_| AtomicU32::new(0)).collect());
    let bar = Arc::new(Barrier::new(THREADS as usize));
    let hs: Vec<_> = (0..THREADS)
        .map(|th| {
            let (a, owner, bar) = (a.clone(), owner.clone(), bar.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + th as u64);
                let mut mine: Vec<(u32, super::alloc::Claim)> = Vec::new();
                let mut got = 0;
                bar.wait();
                for _ in 0..ROUNDS {
                    if mine.len() < 24 && rng.below(3) != 0 {
                        // Distinct endpoints (ip = ep), all asking for ports 3000-3002
                        // first, so preservation races across threads too.
                        let ep = (th + 1) << 16 | rng.below(40_000) as u32;
                        if mine.iter().any(|m| m.0 == ep) {
                            continue;
                        }
                        if let Some(c) = a.acquire(A, TCP, ep, 3000 + (ep as u16 % 3), false) {
                            let prev = owner[c.port as usize].swap(ep + 1, Relaxed);
                            assert_eq!(prev, 0, "port {} given twice", c.port);
                            mine.push((ep, c));
                            got += 1;
                        }
                    } else if let Some(i) = (!mine.is_empty()).then(|| rng.below(mine.len() as u64) as usize) {
                        let (ep, c) = mine.swap_remove(i);
                        assert_eq!(owner[c.port as usize].swap(0, Relaxed), ep + 1);
                        a.release(c, TCP, ep, 3000 + (ep as u16 % 3));
                    }
                }
                for (ep, c) in mine {
                    owner[c.port as usize].store(0, Relaxed);
                    a.release(c, TCP, ep, 3000 + (ep as u16 % 3));
                }
                got
            })
        })
        .collect();
    let total: u32 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 1000, "allocations made: {total}");
    assert_eq!(a.ports_held(), 0);
}
