//! The forwarding database of one network: learned MAC address → port.
//!
//! Shared by every worker (an `Arc<Fdb>` in the network's table entry) without locks:
//! each entry is one `AtomicU64` packing the MAC (48 bits) and the port (16 bits), so a
//! reader always sees a consistent pair; inserts claim an empty slot with a CAS, moves
//! replace the word with a CAS. A per-slot "last seen" second is written at most once a
//! second per MAC (the only write on the hit path), so hot entries do not bounce cache
//! lines between workers.
//!
//! Bounded: at most `capacity` entries. A learn beyond that (or into two full buckets)
//! is refused and reported to the caller, which counts it; the frame is still forwarded
//! (flooded). Buckets hold 8 slots (one cache line) and each MAC has two candidate buckets (two-choice
//! hashing) over 2× `capacity` slots, so buckets overflow long before the table is full
//! only under a deliberate collision attack, which the per-table random seed defeats.
//! The bucket array is allocated zeroed (lazily backed by the kernel), so a big table
//! that holds a few MACs costs a few pages.
//!
//! Aging and port flushes are sweeps (`age_out`, `flush_port`) done off the packet
//! path by a housekeeping thread; they remove entries with a CAS and never block a
//! worker.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::buf::PortId;
use crate::wire::MacAddr;

const SLOTS: usize = 8;

/// One cache line of entries. Last-seen seconds live in a parallel array (`Fdb::seen`),
/// so a lookup reads exactly one line per candidate bucket.
#[repr(C, align(64))]
struct Bucket {
    entries: [AtomicU64; SLOTS],
}

/// Result of a learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port (maybe refreshed).
    Known,
    /// New entry.
    Inserted,
    /// The MAC moved from another port to this one.
    Moved { from: PortId },
    /// Table (or both candidate buckets) full: not learned.
    Refused,
}

/// One entry as listed by `entries()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub port: PortId,
    /// Second (on the caller's clock) the MAC was last seen.
    pub seen: u32,
}

/// A bounded MAC table shared by the workers of one network. See the module docs.
pub struct Fdb {
    buckets: Box<[Bucket]>,
    seen: Box<[AtomicU32]>,
    mask: usize,
    seed: u64,
    capacity: u32,
    count: AtomicU32,
    /// Serialises inserts of new MACs (rare) between workers so a MAC never lands in
    /// two slots. Lookups, refreshes, moves and control's sweeps never take it.
    insert_lock: InsertLock,
}

#[repr(align(64))]
#[derive(Default)]
struct InsertLock(std::sync::atomic::AtomicBool);

impl InsertLock {
    #[inline]
    fn lock(&self) -> InsertGuard<'_> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed as R};
        while self.0.compare_exchange_weak(false, true, Acquire, R).is_err() {
            std::hint::spin_loop();
        }
        InsertGuard(self)
    }
}

struct InsertGuard<'a>(&'a InsertLock);

impl Drop for InsertGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.store(false, std::sync::atomic::Ordering::Release);
    }
}

#[inline]
fn pack(mac: u64, port: PortId) -> u64 {
    (mac << 16) | port as u64
}

#[inline]
fn unpack(e: u64) -> (u64, PortId) {
    (e >> 16, (e & 0xffff) as PortId)
}

impl Fdb {
    /// A table that holds at most `capacity` MACs (at least 1).
    pub fn new(capacity: u32) -> Fdb {
        let capacity = capacity.max(1);
        let want_buckets = ((capacity as usize * 2).div_ceil(SLOTS)).max(2).next_power_of_two();
        // SAFETY: both types are plain atomics of integers; all-zero is a valid empty value.
        let buckets = unsafe { zeroed_slice::<Bucket>(want_buckets) };
        let seen = unsafe { zeroed_slice::<AtomicU32>(want_buckets * SLOTS) };
        Fdb { buckets, seen, mask: want_buckets - 1, seed: random_seed(), capacity, count: AtomicU32::new(0), insert_lock: InsertLock::default() }
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Current number of entries.
    pub fn len(&self) -> u32 {
        self.count.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn hash(&self, mac: u64) -> (usize, usize) {
        let h = (mac ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let h = h ^ (h >> 29);
        let h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let b1 = (h >> 32) as usize & self.mask;
        let mut b2 = (h as u32 as usize) & self.mask;
        if b2 == b1 {
            b2 = (b1 + 1) & self.mask;
        }
        (b1, b2)
    }

    /// Hints the CPU to fetch the buckets of `mac` (used by batch lookups).
    #[inline]
    pub fn prefetch(&self, mac: MacAddr) {
        let (b1, b2) = self.hash(mac.to_u64());
        prefetch(&self.buckets[b1]);
        prefetch(&self.buckets[b2]);
    }

    /// (slot index, entry word) of `mac`.
    #[inline]
    fn find(&self, mac: u64) -> Option<(usize, u64)> {
        let (b1, b2) = self.hash(mac);
        for b in [b1, b2] {
            let bucket = &self.buckets[b];
            for s in 0..SLOTS {
                let e = bucket.entries[s].load(Relaxed);
                if e != 0 && unpack(e).0 == mac {
                    return Some((b * SLOTS + s, e));
                }
            }
        }
        None
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        &self.buckets[i / SLOTS].entries[i % SLOTS]
    }

    /// The port `mac` was learned on.
    #[inline]
    pub fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        self.find(mac.to_u64()).map(|(_, e)| unpack(e).1)
    }

    /// Looks up a batch of MACs: prefetches every candidate bucket first, then
    /// reads them, so cache misses of a large table overlap instead of adding up.
    #[inline]
    pub fn lookup_batch(&self, macs: &[MacAddr], out: &mut [Option<PortId>]) {
        for m in macs {
            self.prefetch(*m);
        }
        for (m, o) in macs.iter().zip(out.iter_mut()) {
            *o = self.lookup(*m);
        }
    }

    /// Learns that `mac` is reachable through `port` at second `now`. The caller has
    /// already refused multicast and all-zero source addresses.
    #[inline]
    pub fn learn(&self, mac: MacAddr, port: PortId, now: u32) -> Learn {
        let m = mac.to_u64();
        let new = pack(m, port);
        loop {
            if let Some((i, e)) = self.find(m) {
                let old_port = unpack(e).1;
                if old_port == port {
                    if self.seen[i].load(Relaxed) != now {
                        self.seen[i].store(now, Relaxed);
                    }
                    return Learn::Known;
                }
                self.seen[i].store(now, Relaxed);
                match self.slot(i).compare_exchange(e, new, Relaxed, Relaxed) {
                    Ok(_) => return Learn::Moved { from: old_port },
                    Err(_) => continue, // raced with another writer: look again
                }
            }
            if let Some(r) = self.insert(m, new, now) {
                return r;
            }
            // Inserted by another worker meanwhile: go through the hit path again.
        }
    }

    fn free_slots(&self, b: usize) -> usize {
        self.buckets[b].entries.iter().filter(|e| e.load(Relaxed) == 0).count()
    }

    fn insert(&self, mac: u64, new: u64, now: u32) -> Option<Learn> {
        let _guard = self.insert_lock.lock();
        if self.find(mac).is_some() {
            return None;
        }
        if self.count.fetch_add(1, Relaxed) >= self.capacity {
            self.count.fetch_sub(1, Relaxed);
            return Some(Learn::Refused);
        }
        // Power of two choices: the emptier bucket first.
        let (b1, b2) = self.hash(mac);
        let order = if self.free_slots(b2) > self.free_slots(b1) { [b2, b1] } else { [b1, b2] };
        for b in order {
            let bucket = &self.buckets[b];
            for s in 0..SLOTS {
                let cur = bucket.entries[s].load(Relaxed);
                if cur != 0 {
                    if unpack(cur).0 == mac {
                        // Another worker inserted the same MAC first.
                        self.count.fetch_sub(1, Relaxed);
                        return None;
                    }
                    continue;
                }
                self.seen[b * SLOTS + s].store(now, Relaxed);
                match bucket.entries[s].compare_exchange(0, new, Relaxed, Relaxed) {
                    Ok(_) => return Some(Learn::Inserted),
                    Err(cur) if unpack(cur).0 == mac => {
                        self.count.fetch_sub(1, Relaxed);
                        return None;
                    }
                    Err(_) => {}
                }
            }
        }
        self.count.fetch_sub(1, Relaxed);
        Some(Learn::Refused)
    }

    /// Removes `mac` (if present). Returns whether it was there.
    pub fn remove(&self, mac: MacAddr) -> bool {
        let m = mac.to_u64();
        while let Some((i, e)) = self.find(m) {
            if self.slot(i).compare_exchange(e, 0, Relaxed, Relaxed).is_ok() {
                self.count.fetch_sub(1, Relaxed);
                return true;
            }
        }
        false
    }

    /// Removes every entry for which `pred(port, seen)` holds; returns how many.
    pub fn retain_not(&self, mut pred: impl FnMut(PortId, u32) -> bool) -> usize {
        let mut removed = 0;
        for i in 0..self.seen.len() {
            let slot = self.slot(i);
            let e = slot.load(Relaxed);
            if e == 0 {
                continue;
            }
            if pred(unpack(e).1, self.seen[i].load(Relaxed)) && slot.compare_exchange(e, 0, Relaxed, Relaxed).is_ok() {
                self.count.fetch_sub(1, Relaxed);
                removed += 1;
            }
        }
        removed
    }

    /// Removes entries not seen for more than `aging` seconds at second `now`.
    pub fn age_out(&self, now: u32, aging: u32) -> usize {
        self.retain_not(|_, seen| now.saturating_sub(seen) > aging)
    }

    /// Removes every entry pointing at `port` (the port left the network).
    pub fn flush_port(&self, port: PortId) -> usize {
        self.retain_not(|p, _| p == port)
    }

    /// Removes everything.
    pub fn flush(&self) -> usize {
        self.retain_not(|_, _| true)
    }

    /// Every entry (control path: allocates).
    pub fn entries(&self) -> Vec<FdbEntry> {
        let mut out = Vec::with_capacity(self.len() as usize);
        for i in 0..self.seen.len() {
            let e = self.slot(i).load(Relaxed);
            if e != 0 {
                let (mac, port) = unpack(e);
                out.push(FdbEntry { mac: MacAddr::from_u64(mac), port, seen: self.seen[i].load(Relaxed) });
            }
        }
        out
    }
}

/// A boxed slice of `n` zeroed `T`s. Large ones come straight from mmap and are backed
/// by the kernel page by page as they are written.
///
/// # Safety
/// All-zero bytes must be a valid `T`.
unsafe fn zeroed_slice<T>(n: usize) -> Box<[T]> {
    let layout = std::alloc::Layout::array::<T>(n).expect("fdb layout");
    let p = std::alloc::alloc_zeroed(layout) as *mut T;
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n))
}

#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; any address is allowed.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const T as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn random_seed() -> u64 {
    let mut s = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into s.
    let n = unsafe { libc::getrandom(&mut s as *mut u64 as *mut libc::c_void, 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        s = t as u64 ^ (&s as *const u64 as u64);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u64) -> MacAddr {
        MacAddr::from_u64(0x0200_0000_0000 | i)
    }

    #[test]
    fn learn_lookup_move() {
        let f = Fdb::new(16);
        assert_eq!(f.lookup(mac(1)), None);
        assert_eq!(f.learn(mac(1), 3, 10), Learn::Inserted);
        assert_eq!(f.learn(mac(1), 3, 11), Learn::Known);
        assert_eq!(f.lookup(mac(1)), Some(3));
        assert_eq!(f.learn(mac(1), 5, 12), Learn::Moved { from: 3 });
        assert_eq!(f.lookup(mac(1)), Some(5));
        assert_eq!(f.len(), 1);
        let e = f.entries();
        assert_eq!(e, vec![FdbEntry { mac: mac(1), port: 5, seen: 12 }]);
    }

    #[test]
    fn bounded_refuses_when_full() {
        let f = Fdb::new(100);
        let mut inserted = 0;
        for i in 0..1000 {
            match f.learn(mac(i), 1, 0) {
                Learn::Inserted => inserted += 1,
                Learn::Refused => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(inserted, 100);
        assert_eq!(f.len(), 100);
        // Known entries still resolve and move.
        let known = f.entries()[0].mac;
        assert_eq!(f.learn(known, 2, 1), Learn::Moved { from: 1 });
        // After a removal there is room for one more.
        assert!(f.remove(known));
        assert_eq!(f.learn(mac(5000), 1, 1), Learn::Inserted);
    }

    #[test]
    fn fills_to_capacity_with_random_macs() {
        // Two-choice buckets over 2x slots: a full table of random MACs never overflows a bucket.
        for cap in [1000u32, 65536] {
            let f = Fdb::new(cap);
            let mut x = 0x1234_5678_9abc_def0u64;
            let mut n = 0;
            while n < cap {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let m = MacAddr::from_u64(x & 0xfeff_ffff_ffff); // unicast
                match f.learn(m, 1, 0) {
                    Learn::Inserted => n += 1,
                    Learn::Known => {}
                    r => panic!("refused at {n} of {cap}: {r:?}"),
                }
            }
            assert_eq!(f.len(), cap);
        }
    }

    #[test]
    fn aging_and_flush() {
        let f = Fdb::new(64);
        f.learn(mac(1), 1, 100);
        f.learn(mac(2), 2, 250);
        f.learn(mac(3), 2, 390);
        assert_eq!(f.age_out(400, 300), 0); // mac1 seen 300 s ago: 300 is not > 300
        assert_eq!(f.age_out(401, 300), 1);
        assert_eq!(f.lookup(mac(1)), None);
        assert_eq!(f.flush_port(2), 2);
        assert!(f.is_empty());
    }

    #[test]
    fn concurrent_learners_agree() {
        use std::sync::Arc;
        let f = Arc::new(Fdb::new(4096));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        f.learn(mac(i), 1 + (t % 2) as PortId, 0);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(f.len(), 2000);
        let mut macs: Vec<_> = f.entries().iter().map(|e| e.mac.to_u64()).collect();
        macs.sort();
        macs.dedup();
        assert_eq!(macs.len(), 2000, "no duplicate entries");
    }
}
