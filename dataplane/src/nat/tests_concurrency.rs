//! Multi-threaded tests of the shared connection table: racing creators, the two
//! directions of flows on different threads, churn with a sweeper and a control
//! thread that dumps and flushes. Checks: no lost or duplicated connection, no port
//! given to two endpoints, no leaked slot or port.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use std::sync::{Arc, Barrier};

use super::tests_util::*;
use super::*;

const MASQ: Action = Action::Snat { to: UPLINK };

fn host(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0000 | (i & 0xffff)) // 172.16.x.y
}

/// Checks the table at rest: one live connection per original tuple, masquerade
/// ports unique per (address, protocol), reply tuples unique. Returns the count.
fn audit(t: &ConnTable, now: u32) -> usize {
    let mut origs = HashSet::new();
    let mut replies = HashSet::new();
    let mut ports: HashMap<(Ipv4Addr, u8, u16), (Ipv4Addr, u16)> = HashMap::new();
    let n = t.dump(now, |c| {
        assert!(origs.insert(c.orig), "duplicate connection {}", c.orig);
        assert!(replies.insert(c.reply), "duplicate reply tuple {}", c.reply);
        if c.snat {
            let key = (c.reply.dst, c.reply.proto, c.reply.dport);
            let me = (c.orig.src, c.orig.sport);
            let prev = ports.insert(key, me);
            assert!(prev.is_none() || prev == Some(me), "port {key:?} held by {prev:?} and {me:?}");
        }
    });
    assert_eq!(origs.len(), n);
    n
}

#[test]
fn racing_creators_agree_on_one_connection() {
    const THREADS: usize = 4;
    const FLOWS: u32 = 600;
    let t = Arc::new(table(4096));
    let bar = Arc::new(Barrier::new(THREADS));
    let hs: Vec<_> = (0..THREADS)
        .map(|th| {
            let (t, bar) = (t.clone(), bar.clone());
            std::thread::spawn(move || {
                bar.wait();
                let mut refs = Vec::new();
                for k in 0..FLOWS {
                    // Threads walk the flows in different orders, so they collide often.
                    let i = if th % 2 == 0 { k } else { FLOWS - 1 - k };
                    // Every host uses source port 4000: one keeps it, the rest are remapped.
                    let mut f = udp(host(i), 4000, REMOTE, 53, b"q");
                    match run(&t, &mut f, MASQ, 0) {
                        Verdict::Forward { conn, .. } => refs.push((i, conn, check(&f).sport)),
                        v => panic!("flow {i}: {v:?}"),
                    }
                }
                refs
            })
        })
        .collect();
    let mut by_flow: HashMap<u32, (ConnRef, u16)> = HashMap::new();
    for h in hs {
        for (i, c, port) in h.join().unwrap() {
            let prev = by_flow.insert(i, (c, port));
            assert!(prev.is_none() || prev == Some((c, port)), "flow {i}: two connections {prev:?} vs {c:?}");
        }
    }
    assert_eq!(by_flow.len(), FLOWS as usize);
    assert_eq!(t.len(), FLOWS);
    assert_eq!(audit(&t, 0), FLOWS as usize);
    assert_eq!(t.counters().created, FLOWS as u64);
    assert_eq!(t.counters().ports_held, FLOWS as u64);
}

#[test]
fn both_directions_on_different_threads() {
    const FLOWS: u16 = 2000;
    let t = Arc::new(table(8192));
    let stop = Arc::new(AtomicBool::new(false));
    // Outbound: each flow's first packet creates it; later ones keep it alive.
    let out = {
        let t = t.clone();
        std::thread::spawn(move || {
            for round in 0..3 {
                for p in 0..FLOWS {
                    let mut f = tcp(H1, 10_000 + p, REMOTE, 443, if round == 0 { SYN } else { ACK }, b"");
                    match run(&t, &mut f, MASQ, 0) {
                        Verdict::Forward { dir: Dir::Orig, .. } => assert_eq!(check(&f), seen(UPLINK, 10_000 + p, REMOTE, 443)),
                        // An ACK before the SYN-ACK was seen is invalid (as in Linux).
                        Verdict::Drop(Reason::Invalid) if round > 0 => {}
                        v => panic!("{v:?}"),
                    }
                }
            }
        })
    };
    // Inbound replies on another thread, as soon as each flow exists.
    let back = {
        let t = t.clone();
        std::thread::spawn(move || {
            for p in 0..FLOWS {
                loop {
                    let mut f = tcp(REMOTE, 443, UPLINK, 10_000 + p, SYN | ACK, b"");
                    match run(&t, &mut f, Action::Deny, 0) {
                        Verdict::Forward { dir, ct, .. } => {
                            assert_eq!((dir, ct), (Dir::Reply, CtState::Established));
                            assert_eq!(check(&f), seen(REMOTE, 443, H1, 10_000 + p));
                            break;
                        }
                        // Not created yet: a SYN-ACK cannot start a flow.
                        Verdict::Drop(Reason::Invalid) => std::hint::spin_loop(),
                        v => panic!("{v:?}"),
                    }
                }
            }
        })
    };
    // A sweeper that finds nothing to remove, and a control thread reading.
    let sweeper = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                assert_eq!(t.sweep(0, 256), 0);
                t.dump(0, |_| {});
            }
        })
    };
    out.join().unwrap();
    back.join().unwrap();
    stop.store(true, Relaxed);
    sweeper.join().unwrap();
    assert_eq!(audit(&t, 0), FLOWS as usize);
    // The outbound ACKs after the SYN-ACK moved every flow on (SYN_RECV → ESTABLISHED);
    // all saw the reply.
    t.dump(0, |c| assert!(matches!(c.state, ConnState::Tcp(TcpState::SynRecv | TcpState::Established | TcpState::SynSent))));
}

#[test]
fn churn_with_sweeper_and_control() {
    const WORKERS: u32 = 3;
    const FLOWS: u32 = 150; // per round and worker; flows overlap between workers
    let rounds: u32 = std::env::var("NAT_STRESS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    // Short timeouts, so connections die and are replaced while others use them.
    let timeouts = Timeouts { udp: 2, udp_stream: 3, ..Timeouts::default() };
    let cfg = NatConfig { max_conns: 300, port_range: (20_000, 20_399), timeouts, ..NatConfig::default() };
    let t = Arc::new(ConnTable::new(cfg));
    let clock = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (t, clock) = (t.clone(), clock.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(w as u64 * 7919 + 1);
                let mut drops: HashMap<Reason, u32> = HashMap::new();
                for _ in 0..rounds {
                    for _ in 0..FLOWS {
                        let i = rng.below(FLOWS as u64 * 2) as u32; // shared flow space
                        let now = clock.load(Relaxed);
                        let h = host(i % 97);
                        let sport = 5000 + (i / 97) as u16;
                        let mut f = udp(h, sport, REMOTE, 53, b"q");
                        match run(&t, &mut f, MASQ, now) {
                            Verdict::Forward { .. } => {
                                let s = check(&f);
                                assert_eq!(s.src, UPLINK);
                                // The reply (from this worker) goes back to the sender.
                                let mut r = udp(REMOTE, 53, UPLINK, s.sport, b"a");
                                match run(&t, &mut r, Action::Deny, now) {
                                    Verdict::Forward { .. } => {
                                        // Normally back to the sender; if the flow was flushed
                                        // and its port reused meanwhile, to the port's new holder.
                                        let b = check(&r);
                                        assert!(b == seen(REMOTE, 53, h, sport) || (b.dst.octets()[..2] == [172, 16] && (5000..5004).contains(&b.dport)), "{b:?}");
                                    }
                                    // Flushed or expired between the two packets.
                                    Verdict::Drop(Reason::Denied) => {}
                                    v => panic!("reply: {v:?}"),
                                }
                            }
                            Verdict::Drop(r @ (Reason::TableFull | Reason::PortsExhausted)) => *drops.entry(r).or_default() += 1,
                            v => panic!("{v:?}"),
                        }
                    }
                }
                drops
            })
        })
        .collect();
    let sweeper = {
        let (t, clock, stop) = (t.clone(), clock.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut removed = 0;
            let mut pass = 0u32;
            while !stop.load(Relaxed) {
                pass += 1;
                if pass & 7 == 0 {
                    clock.fetch_add(1, Relaxed); // one "second" every few passes
                }
                removed += t.sweep(clock.load(Relaxed), 64);
                std::thread::yield_now();
            }
            removed
        })
    };
    let control = {
        let (t, clock, stop) = (t.clone(), clock.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut flushes = 0;
            let mut pass = 0u32;
            while !stop.load(Relaxed) {
                pass += 1;
                let n = t.dump(clock.load(Relaxed), |c| assert_eq!(c.orig.proto, IPPROTO_UDP));
                assert!(n <= 300);
                if n > 200 || pass & 63 == 0 {
                    t.flush();
                    flushes += 1;
                }
                std::thread::yield_now();
            }
            flushes
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Relaxed);
    sweeper.join().unwrap();
    control.join().unwrap();
    let now = clock.load(Relaxed);
    audit(&t, now);
    assert!(t.len() <= 300);
    assert!(t.counters().removed > 0);
    // Everything ends: after the timeout, sweeping leaves no slot and no port behind.
    while t.sweep(now + 1000, 1000) > 0 {}
    assert!(t.is_empty(), "leaked slots: {}", t.len());
    let c = t.counters();
    assert_eq!(c.ports_held, 0, "leaked ports");
    assert_eq!(c.created, c.removed, "{c:?}");
}

#[test]
fn index_fills_to_capacity() {
    // Random tuples fill every slot: the index (two buckets per tuple, one cuckoo
    // step) never refuses before the table is full.
    for cap in [64u32, 5000, 40_000] {
        let t = table(cap);
        let mut rng = Rng(cap as u64 * 31 + 7);
        let mut made = 0;
        while made < cap {
            let src = Ipv4Addr::from(0x0a00_0000 | rng.below(1 << 24) as u32);
            let dst = Ipv4Addr::from(0xc633_6400 | rng.below(256) as u32);
            match run(&t, &mut udp(src, rng.next() as u16, dst, 53, b""), Action::None, 0) {
                Verdict::Forward { ct: CtState::New, .. } => made += 1,
                Verdict::Forward { .. } => {}
                v => panic!("refused at {made} of {cap}: {v:?}"),
            }
        }
        assert_eq!(t.len(), cap);
        assert_eq!(run(&t, &mut udp(H1, 1, REMOTE, 2, b""), Action::None, 0), Verdict::Drop(Reason::TableFull));
        assert_eq!(audit(&t, 0), cap as usize);
    }
}
