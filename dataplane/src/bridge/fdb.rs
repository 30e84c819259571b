//! The forwarding database of one network: learned MAC address → port.
//!
//! Shared by every worker (an `Arc<Fdb>` in the network's table entry) without locks:
//! each entry is one `AtomicU64` packing the MAC (48 bits) and the port (16 bits), so a
//! reader always sees a consistent pair; inserts claim an empty slot with a CAS, moves
//! replace the word with a CAS. A per-slot "last seen" second is written at most once a
//! second per MAC (the only write on the hit path), so hot entries do not bounce cache
//! lines between workers.
//!
//! Bounded: at most `capacity` entries. A learn beyond that is refused and reported
//! to the caller, which counts it; the frame is still forwarded (flooded). Buckets
//! hold 8 slots (one cache line); each MAC has a primary and a secondary bucket over
//! 2x `capacity` slots. Inserts fill the primary bucket first (so most lookups read
//! one line), then the secondary, then move one resident to its other bucket (one
//! cuckoo step), so the table fills to capacity with random MACs; a per-table random
//! hash seed defeats deliberate collisions. The arrays are allocated zeroed (backed by
//! the kernel page by page), so a big table that holds a few MACs costs a few pages;
//! tables of 8 MiB and more use transparent huge pages.
//!
//! Aging and port flushes are sweeps (`age_step`, `flush_port`) done off the packet
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
    buckets: MapSlice<Bucket>,
    seen: MapSlice<AtomicU32>,
    mask: usize,
    /// log2 of the bucket count.
    bits: u32,
    seed: u64,
    capacity: u32,
    count: AtomicU32,
    /// Where the next [`Fdb::age_step`] starts (control's sweep only).
    sweep_at: std::sync::atomic::AtomicUsize,
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
        let buckets = unsafe { MapSlice::<Bucket>::zeroed(want_buckets) };
        let seen = unsafe { MapSlice::<AtomicU32>::zeroed(want_buckets * SLOTS) };
        Fdb { buckets, seen, mask: want_buckets - 1, bits: want_buckets.trailing_zeros(), seed: random_seed(), capacity, count: AtomicU32::new(0), sweep_at: Default::default(), insert_lock: InsertLock::default() }
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

    /// The two candidate buckets of a MAC: both from the high bits of one multiply
    /// (the well-mixed ones), the second never equal to the first.
    #[inline]
    fn hash(&self, mac: u64) -> (usize, usize) {
        let h = (mac ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let b1 = (h >> (64 - self.bits)) as usize;
        let b2 = (h >> (64 - 2 * self.bits)) as usize & self.mask;
        (b1, if b2 == b1 { b1 ^ 1 } else { b2 })
    }

    /// Hints the CPU to fetch the primary bucket of `mac` (used by batch lookups;
    /// nearly every entry lives in its primary bucket).
    #[inline]
    pub fn prefetch(&self, mac: MacAddr) {
        let (b1, _) = self.hash(mac.to_u64());
        prefetch(&self.buckets[b1]);
    }

    /// (slot index, entry word) of `mac`.
    #[inline]
    fn find(&self, mac: u64) -> Option<(usize, u64)> {
        let (b1, b2) = self.hash(mac);
        self.find_in(mac, b1, b2)
    }

    #[inline]
    fn find_in(&self, mac: u64, b1: usize, b2: usize) -> Option<(usize, u64)> {
        if mac == 0 {
            return None; // never stored; also keeps empty slots from matching
        }
        if let Some((s, e)) = scan(&self.buckets[b1], mac) {
            return Some((b1 * SLOTS + s, e));
        }
        scan(&self.buckets[b2], mac).map(|(s, e)| (b2 * SLOTS + s, e))
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

    /// Looks up a batch of MACs: hashes and prefetches every primary bucket first,
    /// then reads them, so the cache misses of a large table overlap instead of adding up.
    #[inline]
    pub fn lookup_batch(&self, macs: &[MacAddr], out: &mut [Option<PortId>]) {
        const CHUNK: usize = 64;
        for (macs, out) in macs.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            let mut keys = [(0u64, 0usize, 0usize); CHUNK];
            for (k, m) in keys.iter_mut().zip(macs) {
                let v = m.to_u64();
                let (b1, b2) = self.hash(v);
                prefetch(&self.buckets[b1]);
                *k = (v, b1, b2);
            }
            for (o, &(v, b1, b2)) in out.iter_mut().zip(keys.iter()) {
                *o = self.find_in(v, b1, b2).map(|(_, e)| unpack(e).1);
            }
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

    fn insert(&self, mac: u64, new: u64, now: u32) -> Option<Learn> {
        let _guard = self.insert_lock.lock();
        if self.find(mac).is_some() {
            return None;
        }
        if self.count.fetch_add(1, Relaxed) >= self.capacity {
            self.count.fetch_sub(1, Relaxed);
            return Some(Learn::Refused);
        }
        // First fit: the primary bucket, then the secondary one, so most entries sit in
        // their primary bucket and most lookups read one cache line.
        let (b1, b2) = self.hash(mac);
        for b in [b1, b2] {
            if self.claim_free(b, new, now).is_some() {
                return Some(Learn::Inserted);
            }
        }
        // Both full: move one resident of either bucket to its other candidate bucket
        // (one cuckoo step) and take its slot. A reader may find the moved entry in
        // both places for a moment, never in neither.
        for b in [b1, b2] {
            for s in 0..SLOTS {
                let e = self.buckets[b].entries[s].load(Relaxed);
                if e == 0 {
                    continue;
                }
                let (o1, o2) = self.hash(unpack(e).0);
                let alt = if o1 == b { o2 } else { o1 };
                let seen = self.seen[b * SLOTS + s].load(Relaxed);
                if self.claim_free(alt, e, seen).is_none() {
                    continue;
                }
                self.seen[b * SLOTS + s].store(now, Relaxed);
                if self.buckets[b].entries[s].compare_exchange(e, new, Relaxed, Relaxed).is_ok() {
                    return Some(Learn::Inserted);
                }
                // The resident changed under us (moved by its owner): undo the copy.
                self.remove_exact(alt, e);
            }
        }
        self.count.fetch_sub(1, Relaxed);
        Some(Learn::Refused)
    }

    /// Puts `entry` into a free slot of bucket `b`; returns the slot index.
    fn claim_free(&self, b: usize, entry: u64, seen: u32) -> Option<usize> {
        let bucket = &self.buckets[b];
        for s in 0..SLOTS {
            if bucket.entries[s].load(Relaxed) != 0 {
                continue;
            }
            self.seen[b * SLOTS + s].store(seen, Relaxed);
            if bucket.entries[s].compare_exchange(0, entry, Relaxed, Relaxed).is_ok() {
                return Some(s);
            }
        }
        None
    }

    fn remove_exact(&self, b: usize, entry: u64) {
        for s in 0..SLOTS {
            let _ = self.buckets[b].entries[s].compare_exchange(entry, 0, Relaxed, Relaxed);
        }
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
    pub fn retain_not(&self, pred: impl FnMut(PortId, u32) -> bool) -> usize {
        self.retain_not_in(0..self.seen.len(), pred)
    }

    /// [`retain_not`] over the slots in `range` only.
    fn retain_not_in(&self, range: std::ops::Range<usize>, mut pred: impl FnMut(PortId, u32) -> bool) -> usize {
        // An empty table is not scanned: aging runs every second over every network's
        // table, and a large idle one (16M slots) cost 3% of a CPU per network.
        if self.is_empty() {
            return 0;
        }
        let mut removed = 0;
        for i in range {
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

    /// One step of the periodic aging sweep, called once a second: scans the next slice
    /// of the table, sized so that a whole pass takes at most half the aging time (and
    /// at least 64K slots a step), and removes what has not been seen for more than
    /// `aging` seconds. An entry goes at most `aging` / 2 seconds late (two seconds at
    /// the default table size), and a 16M-entry table costs a 150th of a pass a second
    /// with the default 300 s instead of a whole pass (round I F9). Returns how many
    /// were removed.
    pub fn age_step(&self, now: u32, aging: u32) -> usize {
        let slots = self.seen.len();
        let passes = (aging / 2).max(1) as usize;
        let budget = slots.div_ceil(passes).max(1 << 16).min(slots);
        let start = self.sweep_at.load(Relaxed) % slots;
        let end = (start + budget).min(slots);
        self.sweep_at.store(if end == slots { 0 } else { end }, Relaxed);
        self.retain_not_in(start..end, |_, seen| now.saturating_sub(seen) > aging)
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

/// A zeroed array in its own anonymous mapping: pages are backed by the kernel as they
/// are written, and arrays of 8 MiB and more ask for transparent huge pages (a lookup
/// in a big table then costs one cache miss, not a cache miss plus a page walk).
struct MapSlice<T> {
    ptr: *mut T,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is owned; T is Sync/Send (atomics).
unsafe impl<T: Sync> Sync for MapSlice<T> {}
unsafe impl<T: Send> Send for MapSlice<T> {}

const HUGE_MIN: usize = 8 << 20;

impl<T> MapSlice<T> {
    /// # Safety
    /// All-zero bytes must be a valid `T`.
    unsafe fn zeroed(len: usize) -> MapSlice<T> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(std::alloc::Layout::array::<T>(len).expect("layout"));
        }
        if bytes >= HUGE_MIN {
            libc::madvise(p, bytes, libc::MADV_HUGEPAGE);
        }
        MapSlice { ptr: p as *mut T, len, bytes }
    }
}

impl<T> std::ops::Deref for MapSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: ptr/len describe the live mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T> Drop for MapSlice<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping what `zeroed` mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.bytes) };
    }
}

/// Finds `mac` in one bucket: (slot, entry word).
#[inline(always)]
fn scan(bucket: &Bucket, mac: u64) -> Option<(usize, u64)> {
    for s in 0..SLOTS {
        let e = bucket.entries[s].load(Relaxed);
        if (e >> 16) == mac {
            return Some((s, e));
        }
    }
    None
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
    fn most_entries_sit_in_their_primary_bucket() {
        let f = Fdb::new(100_000);
        for i in 0..100_000u64 {
            assert_eq!(f.learn(MacAddr::from_u64(0x0200_0000_0000 | (i * 7919)), 1, 0), Learn::Inserted);
        }
        let primary = f
            .entries()
            .iter()
            .filter(|e| {
                let (b1, _) = f.hash(e.mac.to_u64());
                f.buckets[b1].entries.iter().any(|x| unpack(x.load(Relaxed)).0 == e.mac.to_u64())
            })
            .count();
        assert!(primary > 95_000, "{primary} of 100000 in the primary bucket");
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
        // Emptied, it is skipped; learning again is aged again.
        assert_eq!(f.age_out(10_000, 300), 0);
        f.learn(mac(4), 1, 500);
        assert_eq!(f.len(), 1);
        assert_eq!(f.age_out(801, 300), 1);
        assert!(f.is_empty());
    }

    #[test]
    fn aging_in_steps_covers_the_table_within_half_the_aging_time() {
        // 4M entries: 8M slots; aging 8 s: a pass in 4 steps of 2M slots.
        let f = Fdb::new(1 << 22);
        let slots = f.seen.len();
        assert_eq!(slots, 1 << 23);
        let macs: Vec<MacAddr> = (0..20_000u64).map(|i| mac(i * 7919 + 1)).collect();
        for m in &macs {
            assert_eq!(f.learn(*m, 1, 100), Learn::Inserted);
        }
        assert_eq!(f.age_step(108, 8), 0, "nothing older than 8 s");
        let mut removed = 0;
        let mut steps = 0;
        while removed < macs.len() {
            removed += f.age_step(109, 8);
            steps += 1;
            assert!(steps <= 4, "a whole pass in aging / 2 steps: {removed} removed after {steps}");
        }
        assert_eq!(steps, 4, "a quarter of the table per step, not all of it");
        assert!(f.is_empty());
        // The minimum step: a small table is swept whole each time.
        let g = Fdb::new(64);
        g.learn(mac(1), 1, 10);
        assert_eq!(g.age_step(1_000, 300), 1);
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
