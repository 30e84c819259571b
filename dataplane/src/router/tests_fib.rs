//! Tests of `fib`: fixed cases, then random tables against a naive linear LPM.

use super::*;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn via(gw: &str, net: u16) -> NextHop {
    NextHop::Via { gateway: ip(gw), egress: Egress::Network(net) }
}

#[test]
fn longest_prefix_wins_across_levels() {
    let fib = FibBuilder::new()
        .add([0, 0, 0, 0], 0, NextHop::Via { gateway: ip("192.0.2.1"), egress: Egress::Uplink })
        .unwrap()
        .add([10, 0, 0, 0], 8, NextHop::Unreachable)
        .unwrap()
        .add([10, 1, 0, 0], 16, NextHop::Connected { net: 1 })
        .unwrap()
        .add([10, 1, 16, 0], 20, NextHop::Connected { net: 2 })
        .unwrap()
        .add([10, 1, 17, 0], 24, NextHop::Connected { net: 3 })
        .unwrap()
        .add([10, 1, 17, 128], 25, via("10.1.17.1", 3))
        .unwrap()
        .add([10, 1, 17, 200], 32, NextHop::Local)
        .unwrap()
        .add([10, 2, 3, 4], 32, NextHop::Blackhole)
        .unwrap()
        .build();
    let l = |s: &str| fib.lookup(ip(s));
    assert_eq!(l("8.8.8.8"), Some((NextHop::Via { gateway: ip("192.0.2.1"), egress: Egress::Uplink }, 0)));
    assert_eq!(l("10.9.9.9"), Some((NextHop::Unreachable, 8)));
    assert_eq!(l("10.1.0.5"), Some((NextHop::Connected { net: 1 }, 16)));
    assert_eq!(l("10.1.31.255"), Some((NextHop::Connected { net: 2 }, 20)));
    assert_eq!(l("10.1.32.0"), Some((NextHop::Connected { net: 1 }, 16)));
    assert_eq!(l("10.1.17.5"), Some((NextHop::Connected { net: 3 }, 24)));
    assert_eq!(l("10.1.17.129"), Some((via("10.1.17.1", 3), 25)));
    assert_eq!(l("10.1.17.200"), Some((NextHop::Local, 32)));
    assert_eq!(l("10.1.17.201"), Some((via("10.1.17.1", 3), 25)));
    // A /32 in a /16 that only the /8 covers: its l2 and l3 chunks inherit the /8.
    assert_eq!(l("10.2.3.4"), Some((NextHop::Blackhole, 32)));
    assert_eq!(l("10.2.3.5"), Some((NextHop::Unreachable, 8)));
    assert_eq!(l("10.2.4.4"), Some((NextHop::Unreachable, 8)));
    assert_eq!(fib.len(), 8);
    assert_eq!(fib.routes()[0].len, 0);
}

#[test]
fn empty_and_default_route() {
    let fib = Fib::default();
    assert!(fib.is_empty());
    assert_eq!(fib.lookup(ip("1.2.3.4")), None);
    let fib = FibBuilder::new().add([0; 4], 0, NextHop::Blackhole).unwrap().build();
    for a in [0u32, 1, 0x7fff_ffff, u32::MAX] {
        assert_eq!(fib.lookup_u32(a), Some((NextHop::Blackhole, 0)));
    }
    let fib = FibBuilder::new().add([255; 4], 32, NextHop::Local).unwrap().build();
    assert_eq!(fib.lookup_u32(u32::MAX), Some((NextHop::Local, 32)));
    assert_eq!(fib.lookup_u32(u32::MAX - 1), None);
}

#[test]
fn duplicates_replace_and_remove() {
    let mut b = FibBuilder::new();
    b.add([10, 0, 0, 0], 24, NextHop::Blackhole).unwrap();
    b.add([10, 0, 0, 0], 24, NextHop::Connected { net: 4 }).unwrap();
    b.add([10, 0, 0, 0], 25, NextHop::Local).unwrap();
    assert_eq!(b.len(), 2);
    let fib = b.build();
    assert_eq!(fib.lookup(ip("10.0.0.200")), Some((NextHop::Connected { net: 4 }, 24)));
    assert_eq!(fib.lookup(ip("10.0.0.1")), Some((NextHop::Local, 25)));
    let mut b = fib.to_builder();
    assert_eq!(b.remove([10, 0, 0, 0], 25), Some(NextHop::Local));
    assert_eq!(b.remove([10, 0, 0, 0], 25), None);
    let fib = b.build();
    assert_eq!(fib.lookup(ip("10.0.0.1")), Some((NextHop::Connected { net: 4 }, 24)));
}

#[test]
fn invalid_routes_are_refused() {
    let mut b = FibBuilder::new();
    assert_eq!(b.add([10, 0, 0, 1], 24, NextHop::Local).unwrap_err(), FibError::HostBitsSet { prefix: [10, 0, 0, 1], len: 24 });
    assert_eq!(b.add([1, 0, 0, 0], 0, NextHop::Local).unwrap_err(), FibError::HostBitsSet { prefix: [1, 0, 0, 0], len: 0 });
    assert_eq!(b.add([10, 0, 0, 0], 33, NextHop::Local).unwrap_err(), FibError::BadLength(33));
    assert!(FibError::HostBitsSet { prefix: [10, 0, 0, 1], len: 24 }.to_string().contains("10.0.0.0/24"));
    assert!(b.is_empty());
}

#[test]
fn bounded_at_max_routes() {
    let mut b = FibBuilder::new();
    for i in 0..MAX_ROUTES as u32 {
        b.add((0x0a00_0000 | i << 8).to_be_bytes(), 24, NextHop::Connected { net: (i & 0xff) as u16 }).unwrap();
    }
    assert_eq!(b.add([11, 0, 0, 0], 8, NextHop::Local).unwrap_err(), FibError::TooManyRoutes);
    // Replacing an existing prefix is still allowed when full.
    b.add([10, 0, 0, 0], 24, NextHop::Blackhole).unwrap();
    let fib = b.build();
    assert_eq!(fib.len(), MAX_ROUTES);
    assert_eq!(fib.lookup(ip("10.0.0.9")), Some((NextHop::Blackhole, 24)));
    assert_eq!(fib.lookup(ip("10.255.255.9")), Some((NextHop::Connected { net: 255 }, 24)));
    assert_eq!(fib.lookup(ip("11.0.0.0")), None);
    // 256 /16s with /24s: 256 l2 chunks, no l3.
    assert_eq!(fib.memory_bytes(), (65536 + 256 * 256) * 4 + MAX_ROUTES * std::mem::size_of::<Route>());
}

fn naive(routes: &[(u32, u8, NextHop)], a: u32) -> Option<(NextHop, u8)> {
    let mut best: Option<(NextHop, u8)> = None;
    for &(p, len, nh) in routes {
        if a & mask(len) == p && best.map_or(true, |(_, l)| len >= l) {
            best = Some((nh, len));
        }
    }
    best
}

/// Random tables (clustered so prefixes nest, with every length 0..=32 present) against
/// a linear scan, 100k lookups per table (10k for the largest), biased towards addresses near the routes.
#[test]
fn random_tables_match_linear_scan() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..4 {
        // 100k lookups per table; fewer for the largest (the oracle is linear).
        let (n, lookups) = [(50, 100_000u32), (300, 100_000), (2000, 100_000), (10_000, 10_000)][round];
        let mut b = FibBuilder::new();
        let mut bases = Vec::new();
        for _ in 0..16 {
            bases.push(rng.next() as u32);
        }
        let mut count = 0u32;
        while b.len() < n {
            let len = (rng.next() % 33) as u8;
            // Mostly near one of a few bases, so that prefixes nest across levels.
            let a = if rng.next() % 4 == 0 { rng.next() as u32 } else { bases[(rng.next() % 16) as usize] ^ (rng.next() as u32 >> (rng.next() % 32)) };
            let p = a & mask(len);
            count += 1;
            let nh = match count % 5 {
                0 => NextHop::Connected { net: count as u16 },
                1 => NextHop::Via { gateway: Ipv4Addr::from(count), egress: Egress::Uplink },
                2 => NextHop::Local,
                3 => NextHop::Blackhole,
                _ => NextHop::Unreachable,
            };
            b.add(p.to_be_bytes(), len, nh).unwrap();
        }
        let fib = b.build();
        let flat: Vec<(u32, u8, NextHop)> = fib.routes().iter().map(|r| (u32::from_be_bytes(r.prefix), r.len, r.next_hop)).collect();
        assert_eq!(flat.len(), n);
        for i in 0..lookups {
            let a = match i % 3 {
                0 => rng.next() as u32,
                1 => flat[(rng.next() % n as u64) as usize].0 ^ (rng.next() as u32 & 0xff),
                _ => bases[(rng.next() % 16) as usize] ^ (rng.next() as u32 >> (rng.next() % 32)),
            };
            assert_eq!(fib.lookup_u32(a), naive(&flat, a), "round {round} address {}", Ipv4Addr::from(a));
        }
    }
}

/// Rough speed check (run with `--release -- --ignored --nocapture`); criterion benches
/// live in `bench`.
#[test]
#[ignore]
fn lookup_speed() {
    let mut rng = XorShift(99);
    let mut b = FibBuilder::new();
    while b.len() < 500 {
        let len = [8u8, 16, 20, 24, 24, 24, 28, 32][(rng.next() % 8) as usize];
        let p = (0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff)) & mask(len);
        b.add(p.to_be_bytes(), len, NextHop::Connected { net: len as u16 }).unwrap();
    }
    let fib = b.build();
    let addrs: Vec<u32> = (0..4096).map(|_| 0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff)).collect();
    let t = std::time::Instant::now();
    let mut hits = 0u64;
    for _ in 0..1000 {
        for &a in &addrs {
            if let Some((_, l)) = fib.lookup_u32(std::hint::black_box(a)) {
                hits += l as u64;
            }
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / (1000.0 * addrs.len() as f64);
    println!("{ns:.2} ns/lookup ({hits}), {} bytes", fib.memory_bytes());
}
