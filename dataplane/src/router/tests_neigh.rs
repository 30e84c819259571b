//! Tests of `neigh`: states and timers on a fake clock, capacity, concurrency (claim
//! exclusivity, seqlock reads), the pending queue, ARP frames, and random input.

use super::*;
use crate::buf::PktId;
use std::sync::{Arc, Barrier};

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

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn mac(i: u64) -> MacAddr {
    MacAddr::from_u64(0x0242_0000_0000 | i)
}

fn cache(capacity: u32) -> NeighCache {
    NeighCache::new(NeighConfig { capacity, ..NeighConfig::default() })
}

const NET: u16 = 7;

#[test]
fn resolution_retries_then_fails_then_restarts() {
    let c = cache(64);
    let t = 1_000_000;
    assert_eq!(c.lookup(NET, ip(2), t), Lookup::Miss);
    assert_eq!(c.state(NET, ip(2), t), None);
    assert_eq!(c.claim_request(NET, ip(2), t), Claim::Broadcast);
    assert_eq!(c.claim_request(NET, ip(2), t), Claim::Wait);
    assert_eq!(c.lookup(NET, ip(2), t), Lookup::Incomplete);
    assert_eq!(c.claim_request(NET, ip(2), t + 999), Claim::Wait);
    assert_eq!(c.claim_request(NET, ip(2), t + 1000), Claim::Broadcast);
    assert_eq!(c.claim_request(NET, ip(2), t + 1500), Claim::Wait);
    assert_eq!(c.claim_request(NET, ip(2), t + 2000), Claim::Broadcast);
    assert_eq!(c.get(NET, ip(2), t + 2000).unwrap().probes, 3);
    // Three requests sent: the fourth slot is "failed".
    assert_eq!(c.claim_request(NET, ip(2), t + 2999), Claim::Wait);
    assert_eq!(c.state(NET, ip(2), t + 2999), Some(NeighState::Incomplete));
    assert_eq!(c.state(NET, ip(2), t + 3000), Some(NeighState::Failed));
    assert_eq!(c.lookup(NET, ip(2), t + 3000), Lookup::Failed);
    assert_eq!(c.claim_request(NET, ip(2), t + 3001), Claim::Failed);
    assert_eq!(c.get(NET, ip(2), t + 3001).unwrap().since_ms, t + 3000);
    // Held for failed_hold_ms (3 s), then forgotten: the next packet starts over.
    assert_eq!(c.lookup(NET, ip(2), t + 5999), Lookup::Failed);
    assert_eq!(c.lookup(NET, ip(2), t + 6000), Lookup::Miss);
    assert_eq!(c.claim_request(NET, ip(2), t + 6000), Claim::Broadcast);
    assert_eq!(c.lookup(NET, ip(2), t + 6000), Lookup::Incomplete);
    assert_eq!(c.len(), 1);
}

#[test]
fn reply_resolves_then_goes_stale_and_refreshes_by_unicast() {
    let c = cache(64);
    let t = 50_000;
    assert_eq!(c.claim_request(NET, ip(3), t), Claim::Broadcast);
    assert_eq!(c.learn(NET, ip(3), mac(3), t + 5, LearnFrom::Reply), LearnResult::Resolved);
    assert_eq!(c.lookup(NET, ip(3), t + 5), Lookup::Hit(mac(3)));
    assert_eq!(c.claim_request(NET, ip(3), t + 10), Claim::Wait);
    assert_eq!(c.lookup(NET, ip(3), t + 5 + 29_999), Lookup::Hit(mac(3)));
    let stale = t + 5 + 30_000;
    assert_eq!(c.lookup(NET, ip(3), stale), Lookup::HitStale(mac(3)));
    assert_eq!(c.claim_request(NET, ip(3), stale), Claim::Unicast(mac(3)));
    assert_eq!(c.claim_request(NET, ip(3), stale + 1), Claim::Wait);
    assert_eq!(c.lookup(NET, ip(3), stale + 1), Lookup::HitStale(mac(3)));
    assert_eq!(c.learn(NET, ip(3), mac(3), stale + 2, LearnFrom::Reply), LearnResult::Refreshed);
    assert_eq!(c.lookup(NET, ip(3), stale + 2), Lookup::Hit(mac(3)));
    let e = c.get(NET, ip(3), stale + 2).unwrap();
    assert_eq!((e.state, e.probes, e.since_ms, e.mac), (NeighState::Reachable, 0, stale + 2, Some(mac(3))));
}

#[test]
fn stale_entry_fails_after_unanswered_probes() {
    let c = cache(64);
    assert_eq!(c.learn(NET, ip(4), mac(4), 0, LearnFrom::Request), LearnResult::Created);
    assert_eq!(c.lookup(NET, ip(4), 10), Lookup::HitStale(mac(4)));
    for k in 0..3u64 {
        assert_eq!(c.claim_request(NET, ip(4), 10 + k * 1000), Claim::Unicast(mac(4)));
        assert_eq!(c.lookup(NET, ip(4), 10 + k * 1000 + 999), Lookup::HitStale(mac(4)));
    }
    assert_eq!(c.lookup(NET, ip(4), 3010), Lookup::Failed);
    assert_eq!(c.claim_request(NET, ip(4), 3010), Claim::Failed);
    // A late answer still resolves it.
    assert_eq!(c.learn(NET, ip(4), mac(4), 3020, LearnFrom::Reply), LearnResult::Resolved);
    assert_eq!(c.lookup(NET, ip(4), 3020), Lookup::Hit(mac(4)));
}

#[test]
fn learn_kinds() {
    let c = cache(64);
    // Unsolicited replies and gratuitous ARP create nothing.
    assert_eq!(c.learn(NET, ip(5), mac(5), 0, LearnFrom::Reply), LearnResult::Ignored);
    assert_eq!(c.learn(NET, ip(5), mac(5), 0, LearnFrom::Unsolicited), LearnResult::Ignored);
    assert!(c.is_empty());
    // A request for us creates a Stale entry.
    assert_eq!(c.learn(NET, ip(5), mac(5), 0, LearnFrom::Request), LearnResult::Created);
    assert_eq!(c.state(NET, ip(5), 0), Some(NeighState::Stale));
    assert_eq!(c.learn(NET, ip(5), mac(5), 1, LearnFrom::Reply), LearnResult::Refreshed);
    assert_eq!(c.state(NET, ip(5), 1), Some(NeighState::Reachable));
    // Same MAC from a request: state kept (Linux does the same).
    assert_eq!(c.learn(NET, ip(5), mac(5), 2, LearnFrom::Request), LearnResult::Refreshed);
    assert_eq!(c.state(NET, ip(5), 2), Some(NeighState::Reachable));
    // Gratuitous ARP with a new MAC: updates, Stale.
    assert_eq!(c.learn(NET, ip(5), mac(55), 3, LearnFrom::Unsolicited), LearnResult::Changed { old: mac(5) });
    assert_eq!(c.lookup(NET, ip(5), 3), Lookup::HitStale(mac(55)));
    // Incomplete entries are resolved by any kind.
    assert_eq!(c.claim_request(NET, ip(6), 4), Claim::Broadcast);
    assert_eq!(c.learn(NET, ip(6), mac(6), 5, LearnFrom::Unsolicited), LearnResult::Resolved);
    assert_eq!(c.lookup(NET, ip(6), 5), Lookup::HitStale(mac(6)));
    // Invalid input.
    for m in [MacAddr::ZERO, MacAddr::BROADCAST, "01:00:5e:00:00:01".parse().unwrap()] {
        assert_eq!(c.learn(NET, ip(9), m, 0, LearnFrom::Request), LearnResult::Invalid);
    }
    for a in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::new(0, 1, 2, 3)] {
        assert_eq!(c.learn(NET, a, mac(1), 0, LearnFrom::Request), LearnResult::Invalid);
        assert_eq!(c.claim_request(NET, a, 0), Claim::Refused);
    }
    // Egresses are separate namespaces.
    assert_eq!(c.lookup(NET + 1, ip(5), 3), Lookup::Miss);
    assert_eq!(c.learn(UPLINK_EGRESS, ip(5), mac(77), 3, LearnFrom::Request), LearnResult::Created);
    assert_eq!(c.lookup(UPLINK_EGRESS, ip(5), 3), Lookup::HitStale(mac(77)));
    assert_eq!(c.lookup(NET, ip(5), 3), Lookup::HitStale(mac(55)));
    assert_eq!(c.len(), 3);
}

#[test]
fn aging_and_flush() {
    let c = cache(64);
    c.learn(NET, ip(1), mac(1), 0, LearnFrom::Request);
    c.learn(NET, ip(2), mac(2), 0, LearnFrom::Request);
    c.learn(NET + 1, ip(3), mac(3), 0, LearnFrom::Request);
    for t in [0, 1000, 2000] {
        assert_eq!(c.claim_request(NET, ip(4), t), Claim::Broadcast); // fails at 3 s, forgotten at 6 s
    }
    assert_eq!(c.claim_request(NET, ip(5), 0), Claim::Broadcast); // never retried: abandoned at 3 s
    assert_eq!(c.age_out(2_999), Sweep { removed: 0, busy: 0 });
    assert_eq!(c.lookup(NET, ip(4), 3_000), Lookup::Failed);
    assert_eq!(c.lookup(NET, ip(5), 3_000), Lookup::Miss);
    assert_eq!(c.age_out(3_000), Sweep { removed: 1, busy: 0 });
    assert_eq!(c.age_out(5_999), Sweep { removed: 0, busy: 0 });
    assert_eq!(c.age_out(6_000), Sweep { removed: 1, busy: 0 });
    // ip(1) used at 200 s; ip(2) never used since creation at 0.
    assert_eq!(c.lookup(NET, ip(1), 200_000), Lookup::HitStale(mac(1)));
    assert_eq!(c.age_out(300_000).removed, 0);
    assert_eq!(c.age_out(300_001).removed, 2, "ip(2) and ip(3) unused for more than 300 s");
    assert_eq!(c.lookup(NET, ip(2), 300_001), Lookup::Miss);
    assert_eq!(c.lookup(NET, ip(1), 300_001), Lookup::HitStale(mac(1)));
    // Lookups refresh "used" at most once a second, and only forward in time.
    assert_eq!(c.get(NET, ip(1), 300_001).unwrap().used_ms, 300_001);
    c.lookup(NET, ip(1), 300_500);
    assert_eq!(c.get(NET, ip(1), 300_500).unwrap().used_ms, 300_001);
    c.learn(NET + 1, ip(9), mac(9), 0, LearnFrom::Request);
    assert_eq!(c.flush_egress(NET).removed, 1);
    assert_eq!(c.len(), 1);
    assert_eq!(c.entries(0).len(), 1);
    assert_eq!(c.flush().removed, 1);
    assert!(c.is_empty() && c.entries(0).is_empty());
}

#[test]
fn full_table_evicts_least_recently_used_stale_else_refuses() {
    // Capacity 3: one bucket, so the eviction sample is the whole table.
    let c = cache(3);
    for i in 1..=3 {
        assert_eq!(c.claim_request(NET, ip(i), 0), Claim::Broadcast);
        c.learn(NET, ip(i), mac(i as u64), 1, LearnFrom::Reply);
    }
    assert_eq!(c.len(), 3);
    // All Reachable: nothing to evict.
    assert_eq!(c.claim_request(NET, ip(10), 2), Claim::Refused);
    assert_eq!(c.learn(NET, ip(10), mac(10), 2, LearnFrom::Request), LearnResult::Refused);
    // Stale after 30 s; ip(1) and ip(3) used later than ip(2).
    let t = 40_000;
    c.lookup(NET, ip(1), t);
    c.lookup(NET, ip(3), t + 1000);
    c.lookup(NET, ip(2), t - 5000);
    assert_eq!(c.claim_request(NET, ip(10), t + 2000), Claim::Broadcast);
    assert_eq!(c.lookup(NET, ip(2), t + 2000), Lookup::Miss, "least recently used went");
    assert_eq!(c.len(), 3);
    // Incomplete entries are never evicted: with ip(1), ip(3) stale, ip(1) goes next.
    assert_eq!(c.learn(NET, ip(11), mac(11), t + 3000, LearnFrom::Request), LearnResult::Created);
    assert_eq!(c.lookup(NET, ip(1), t + 3000), Lookup::Miss);
    assert_eq!(c.lookup(NET, ip(10), t + 3000), Lookup::Incomplete);
    assert_eq!(c.len(), 3);
}

#[test]
fn full_bucket_evicts_in_bucket_else_refuses() {
    let c = cache(64);
    // Eight addresses that hash to one bucket (7 slots).
    let mut same = Vec::new();
    let mut a = 0u32;
    let want = c.bucket_of(key(NET, Ipv4Addr::from(0x0a00_0000)));
    while same.len() < 8 {
        let addr = Ipv4Addr::from(0x0a00_0000 + a);
        if c.bucket_of(key(NET, addr)) == want {
            same.push(addr);
        }
        a += 1;
    }
    for &x in &same[..7] {
        assert_eq!(c.claim_request(NET, x, 0), Claim::Broadcast);
    }
    assert_eq!(c.claim_request(NET, same[7], 0), Claim::Refused, "bucket full of Incomplete entries");
    assert_eq!(c.len(), 7);
    for (i, &x) in same[..7].iter().enumerate() {
        c.learn(NET, x, mac(i as u64 + 1), 0, LearnFrom::Reply);
        c.lookup(NET, x, 31_000 + i as u64 * 1000);
    }
    assert_eq!(c.learn(NET, same[7], mac(99), 40_000, LearnFrom::Request), LearnResult::Created);
    assert_eq!(c.lookup(NET, same[0], 40_000), Lookup::Miss, "the bucket's least recently used went");
    assert_eq!(c.len(), 7);
}

#[test]
fn claim_is_exclusive_across_threads() {
    const THREADS: usize = 8;
    let c = Arc::new(cache(4096));
    let barrier = Arc::new(Barrier::new(THREADS));
    let hs: Vec<_> = (0..THREADS)
        .map(|_| {
            let (c, barrier) = (c.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut sends = vec![0u32; 256];
                for k in 0..256u32 {
                    barrier.wait();
                    let a = Ipv4Addr::from(0x0a01_0000 + k);
                    // Every thread walks the same clock; they interleave arbitrarily.
                    for now in (0..5000u64).step_by(7) {
                        if c.claim_request(NET, a, now).must_send() {
                            sends[k as usize] += 1;
                        }
                    }
                }
                sends
            })
        })
        .collect();
    let mut total = vec![0u32; 256];
    for h in hs {
        for (t, s) in total.iter_mut().zip(h.join().unwrap()) {
            *t += s;
        }
    }
    assert!(total.iter().all(|&s| s == 3), "exactly `retries` requests per neighbour: {total:?}");
    assert_eq!(c.len(), 256);
    for k in 0..256u32 {
        assert_eq!(c.state(NET, Ipv4Addr::from(0x0a01_0000 + k), 4000), Some(NeighState::Failed));
    }
}

/// Writers rewrite entries of one bucket as fast as they can, each write with a MAC
/// that encodes its timestamp; readers must never see a MAC and a timestamp from
/// different writes.
#[test]
fn seqlock_readers_never_see_torn_entries() {
    let c = Arc::new(cache(3)); // one bucket: every write bumps the readers' version
    assert_eq!(c.buckets.len(), 1);
    let keys = [ip(1), ip(2), ip(3)];
    for &k in &keys {
        c.learn(NET, k, mac(1), 1, LearnFrom::Request);
    }
    let mac_for = |t: u64| MacAddr::from_u64(0x0200_0000_0000 | (t.wrapping_mul(0x9e37_79b9) & 0xffff_ffff));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Rounds the readers have done: writers go on until the readers have run beside
    // them (on a loaded 2-core machine a reader may not be scheduled at all before
    // 300,000 writes are over), bounded by count.
    let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (c, rounds) = (c.clone(), rounds.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while i < 300_000 || (rounds.load(Relaxed) < 2_000 && i < 50_000_000) {
                    i += 1;
                    let t = 2 + i * 2 + w; // distinct per writer, never 1
                    let r = c.learn(NET, keys[(i % 3) as usize], mac_for(t), t, LearnFrom::Reply);
                    assert!(matches!(r, LearnResult::Changed { .. } | LearnResult::Refreshed | LearnResult::Busy), "{r:?}");
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (c, stop, rounds) = (c.clone(), stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                let (mut ok, mut torn, mut missing) = (0u64, 0u64, 0u64);
                while !stop.load(Relaxed) {
                    rounds.fetch_add(1, Relaxed);
                    for &k in &keys {
                        match c.get(NET, k, 0) {
                            Some(e) if e.since_ms == 1 => ok += 1,
                            Some(e) if e.mac == Some(mac_for(e.since_ms)) => ok += 1,
                            Some(_) => torn += 1,
                            None => missing += 1,
                        }
                    }
                    for e in c.entries(0) {
                        if e.since_ms != 1 && e.mac != Some(mac_for(e.since_ms)) {
                            torn += 1;
                        }
                    }
                }
                (ok, torn, missing)
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    stop.store(true, Relaxed);
    for h in readers {
        let (ok, torn, missing) = h.join().unwrap();
        assert_eq!(torn, 0);
        assert!(ok > 0, "readers made progress ({missing} busy)");
    }
}

#[test]
fn pending_queue_limits_release_and_expiry() {
    let c = cache(64);
    let mut q = PendingQueue::new(4, 3, 3000);
    assert_eq!(q.push(NET, ip(1), 10, 0), Ok(()));
    assert_eq!(q.push(NET, ip(1), 11, 1), Ok(()));
    assert_eq!(q.push(NET, ip(1), 12, 2), Ok(()));
    assert_eq!(q.push(NET, ip(1), 13, 3), Err(QueueFull::Neighbour));
    assert_eq!(q.push(NET, ip(2), 20, 4), Ok(()));
    assert_eq!(q.push(NET, ip(3), 30, 5), Err(QueueFull::Queue));
    assert_eq!(q.next_expiry(), Some(3001));
    // Retransmissions are driven from the queue, one claim per neighbour.
    let mut claims = Vec::new();
    q.claim_requests(&c, 0, |e, a, cl| claims.push((e, a, cl)));
    assert_eq!(claims, vec![(NET, ip(1), Claim::Broadcast), (NET, ip(2), Claim::Broadcast)]);
    let mut got = Vec::new();
    assert_eq!(q.take_ready(&c, 10, |w, r| got.push((w.pkt, r))), 0);
    c.learn(NET, ip(1), mac(1), 20, LearnFrom::Reply);
    assert_eq!(q.take_ready(&c, 20, |w, r| got.push((w.pkt, r))), 3);
    assert_eq!(got, vec![(10, Resolution::Resolved(mac(1))), (11, Resolution::Resolved(mac(1))), (12, Resolution::Resolved(mac(1)))]);
    assert_eq!(q.len(), 1);
    // ip(2) never answers: failed at 3 s (three requests claimed from the queue).
    q.claim_requests(&c, 1000, |_, _, cl| assert_eq!(cl, Claim::Broadcast));
    q.claim_requests(&c, 2000, |_, _, cl| assert_eq!(cl, Claim::Broadcast));
    q.claim_requests(&c, 2500, |_, _, cl| assert_eq!(cl, Claim::Wait));
    got.clear();
    assert_eq!(q.take_ready(&c, 3000, |w, r| got.push((w.pkt, r))), 1);
    assert_eq!(got, vec![(20, Resolution::Failed)]);
    assert!(q.is_empty() && q.next_expiry().is_none());
}

#[test]
fn pending_queue_expiry_marks_first_per_neighbour() {
    let mut q = PendingQueue::default();
    assert_eq!(q.capacity(), PENDING_CAPACITY);
    for (i, (a, t)) in [(1u8, 0u64), (2, 100), (1, 200), (2, 300), (1, 4000)].iter().enumerate() {
        q.push(NET, ip(*a), i as PktId, *t).unwrap();
    }
    let mut got = Vec::new();
    assert_eq!(q.take_expired(3000, |w, first| got.push((w.pkt, first))), 0);
    assert_eq!(q.take_expired(3250, |w, first| got.push((w.pkt, first))), 3);
    assert_eq!(got, vec![(0, true), (1, true), (2, false)]);
    assert_eq!(q.len(), 2);
    got.clear();
    assert_eq!(q.drain_egress(NET + 1, |w| got.push((w.pkt, false))), 0);
    assert_eq!(q.drain_egress(NET, |w| got.push((w.pkt, false))), 2);
    assert_eq!(got, vec![(3, false), (4, false)], "order kept");
    q.push(NET, ip(1), 9, 0).unwrap();
    assert_eq!(q.drain(|_| {}), 1);
    // Fill completely, one per neighbour.
    for i in 0..PENDING_CAPACITY as u32 {
        q.push(NET, Ipv4Addr::from(0x0a00_0000 + i), i, 0).unwrap();
    }
    assert_eq!(q.push(NET, ip(1), 0, 0), Err(QueueFull::Queue));
}

#[test]
fn arp_frames_byte_exact() {
    let me = "02:00:00:00:00:01".parse::<MacAddr>().unwrap();
    let mut out = [0xaau8; 64];
    let n = arp_request(&mut out, me, ip(1), ip(2)).unwrap();
    assert_eq!(n, 60);
    #[rustfmt::skip]
    let expect: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
        0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1,
        0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];
    assert_eq!(&out[..42], &expect);
    assert!(out[42..60].iter().all(|&b| b == 0), "padded with zeroes");
    assert_eq!(out[60], 0xaa, "nothing written past the frame");
    let eth = etherparse::Ethernet2HeaderSlice::from_slice(&out[..n]).unwrap();
    assert_eq!(eth.ether_type(), etherparse::EtherType::ARP);
    let a = parse_arp(&out[..n]).unwrap();
    assert_eq!(a, Arp { op: ArpOp::Request, sha: me, spa: ip(1), tha: MacAddr::ZERO, tpa: ip(2) });

    let peer = mac(2);
    let n = arp_probe(&mut out, peer, me, ip(1), ip(2)).unwrap();
    assert_eq!(&out[..6], &peer.0);
    assert_eq!(parse_arp(&out[..n]).unwrap().op, ArpOp::Request);

    let n = arp_reply(&mut out, me, ip(1), peer, ip(2)).unwrap();
    #[rustfmt::skip]
    let expect: [u8; 42] = [
        2, 0x42, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
        0, 1, 0x08, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1,
        2, 0x42, 0, 0, 0, 2, 10, 0, 0, 2,
    ];
    assert_eq!(&out[..42], &expect);
    assert_eq!(parse_arp(&out[..n]).unwrap(), Arp { op: ArpOp::Reply, sha: me, spa: ip(1), tha: peer, tpa: ip(2) });
    assert_eq!(arp_request(&mut out[..59], me, ip(1), ip(2)), None);
    assert_eq!(arp_reply(&mut [], me, ip(1), peer, ip(2)), None);
}

#[test]
fn parse_arp_checks_and_vlan() {
    let me = mac(1);
    let mut f = [0u8; 60];
    arp_request(&mut f, me, ip(1), ip(2)).unwrap();
    // 802.1Q tag inserted.
    let mut tagged = Vec::new();
    tagged.extend_from_slice(&f[..12]);
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged.extend_from_slice(&f[12..]);
    assert_eq!(parse_arp(&tagged).unwrap().tpa, ip(2));
    for (off, v) in [(15usize, 6u8), (16, 0x86), (18, 7), (19, 16)] {
        let mut g = f;
        g[off] = v;
        assert_eq!(parse_arp(&g), None, "byte {off}");
    }
    let mut other = f;
    other[21] = 3; // RARP request
    assert_eq!(parse_arp(&other).unwrap().op, ArpOp::Other(3));
    assert_eq!(parse_arp(&f[..41]), None);
    let mut ipv4 = f;
    ipv4[13] = 0x00;
    assert_eq!(parse_arp(&ipv4), None);
}

#[test]
fn learn_from_rules() {
    let me = ip(1);
    let a = |op, sha: MacAddr, spa, tpa| Arp { op, sha, spa, tha: MacAddr::ZERO, tpa };
    assert_eq!(a(ArpOp::Reply, mac(2), ip(2), me).learn_from(me), Some(LearnFrom::Reply));
    assert_eq!(a(ArpOp::Request, mac(2), ip(2), me).learn_from(me), Some(LearnFrom::Request));
    assert_eq!(a(ArpOp::Request, mac(2), ip(2), ip(3)).learn_from(me), Some(LearnFrom::Unsolicited));
    assert_eq!(a(ArpOp::Request, mac(2), ip(2), ip(2)).learn_from(me), Some(LearnFrom::Unsolicited), "gratuitous");
    assert_eq!(a(ArpOp::Reply, mac(2), ip(2), ip(2)).learn_from(me), Some(LearnFrom::Unsolicited), "gratuitous reply");
    assert_eq!(a(ArpOp::Request, mac(2), Ipv4Addr::UNSPECIFIED, me).learn_from(me), None, "RFC 5227 probe");
    assert_eq!(a(ArpOp::Request, MacAddr::BROADCAST, ip(2), me).learn_from(me), None);
    assert_eq!(a(ArpOp::Reply, mac(2), me, me).learn_from(me), None, "address conflict");
}

#[test]
fn random_input_never_panics() {
    let mut rng = XorShift(0xabcdef);
    let c = NeighCache::new(NeighConfig { capacity: 16, ..NeighConfig::default() });
    let mut q = PendingQueue::new(8, 2, 3000);
    let mut buf = [0u8; 80];
    for i in 0..200_000u64 {
        let len = (rng.next() % 80) as usize;
        for b in &mut buf[..len] {
            *b = rng.next() as u8;
        }
        if i % 3 == 0 && len >= 22 {
            buf[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, (rng.next() % 3) as u8]);
        }
        if let Some(a) = parse_arp(&buf[..len]) {
            if let Some(how) = a.learn_from(ip(1)) {
                let _ = c.learn((i % 3) as u16, a.spa, a.sha, rng.next() % 1_000_000, how);
            }
        }
        let olen = (rng.next() % 80) as usize;
        let _ = arp_request(&mut buf[..olen], mac(i), ip(1), ip(2));
        let _ = arp_reply(&mut buf[..olen], mac(i), ip(1), mac(2), ip(2));
        let egress = (rng.next() % 3) as u16;
        let a = Ipv4Addr::from(0x0a00_0000 | (rng.next() as u32 & 0x1f));
        let now = rng.next() % 1_000_000;
        match rng.next() % 6 {
            0 => {
                let _ = c.claim_request(egress, a, now);
            }
            1 => {
                let _ = c.learn(egress, a, mac(rng.next() & 0xff), now, LearnFrom::Request);
            }
            2 => {
                let _ = q.push(egress, a, i as PktId, now);
            }
            3 => {
                q.take_ready(&c, now, |_, _| {});
            }
            4 => {
                q.take_expired(now, |_, _| {});
            }
            _ => {
                let _ = c.lookup(egress, a, now);
            }
        }
        if i % 10_000 == 0 {
            c.age_out(now);
        }
        assert!(c.len() <= 16);
    }
    assert!(c.entries(0).len() <= c.len());
}

/// Rough speed check (run with `--release -- --ignored --nocapture`); criterion benches
/// live in `bench`.
#[test]
#[ignore]
fn lookup_speed() {
    let c = cache(4096);
    for i in 0..1000u32 {
        let a = Ipv4Addr::from(0x0a00_0000 + i);
        c.claim_request(NET, a, 0);
        c.learn(NET, a, mac(i as u64 + 1), 0, LearnFrom::Reply);
    }
    let t = std::time::Instant::now();
    let mut hits = 0u64;
    for r in 0..10_000u64 {
        for i in 0..1000u32 {
            if let Lookup::Hit(_) = c.lookup(NET, std::hint::black_box(Ipv4Addr::from(0x0a00_0000 + i)), 1 + r / 100) {
                hits += 1;
            }
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / 1e7;
    println!("{ns:.2} ns/lookup ({hits} hits)");
    assert_eq!(hits, 10_000_000);
}
