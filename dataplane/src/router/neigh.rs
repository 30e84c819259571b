//! The ARP neighbour cache: (egress, IPv4 address) → MAC, shared by every worker
//! (`Arc<NeighCache>`), plus the per-worker queue of packets waiting for resolution
//! ([`PendingQueue`]) and the ARP frame builders and parser.
//!
//! Owns: neighbour entries and their states. It sends nothing: operations return what
//! the caller must do (send a request, release or drop queued packets). Time is
//! passed in (`now_ms`, milliseconds on one monotonic clock shared by all threads);
//! nothing here reads a clock, allocates (except `new` and the dump `entries`), makes
//! a syscall or panics on any input.
//!
//! # States (modelled on Linux, simplified)
//!
//! - **Incomplete**: a request was sent ([`NeighCache::claim_request`] created the
//!   entry), no answer yet. Packets wait in the caller's [`PendingQueue`].
//! - **Reachable**: confirmed by a reply at `since`; used as is for `reachable_ms`.
//! - **Stale**: older than `reachable_ms`, or learned from a request without
//!   confirmation. Still used ([`Lookup::HitStale`]); a (unicast) refresh request is
//!   due, which `claim_request` rate limits.
//! - **Failed**: `retries` requests (each `retrans_ms` apart) went unanswered. Lookups
//!   say `Failed` (drop, ICMP host unreachable) for `failed_hold_ms`; after that the
//!   entry counts as absent and the next packet starts a new resolution.
//!
//! Reachable→Stale and Incomplete/Stale→Failed happen by the passage of time and are
//! computed on read; only events (a learn, a request sent) write. An Incomplete entry
//! whose due retries nobody claimed for `retries × retrans_ms` (no packet waits for
//! it any more) counts as absent, so it can neither pin a slot nor block a restart. Entries not used by a
//! lookup for `unused_ms` are removed by [`NeighCache::age_out`] (a housekeeping sweep).
//!
//! # Concurrency
//!
//! An entry (key, MAC, state, probe count, two timestamps) does not fit one atomic
//! word, so each bucket of 7 entries carries a **seqlock**: a version counter that a
//! writer makes odd before changing the bucket and even again after. Readers never
//! write shared state and never wait on a lock: they read the version, the entry and
//! the version again, and retry if it changed or was odd (at most `READ_RETRIES`
//! times; a lookup that keeps colliding with a writer reports `Miss`, which the caller
//! treats like any miss: queue and claim). Every field is an atomic read and written
//! with relaxed ordering between an acquire/release fence pair (Boehm, "Can seqlocks
//! get along with programming language memory models?", 2012), so there is no data
//! race in the Rust sense and no torn read is ever accepted.
//!
//! Writers (workers learning or claiming; sweeps) are serialised per bucket by a
//! **spinlock in the bucket**, so two workers never both decide to send the same
//! request. A writer holds it for a few loads and stores, never across another lock
//! (eviction in another bucket happens before taking its own), so there is no
//! deadlock. Workers spin at most `SPIN_LIMIT` times, then give up (`Busy` / `Wait`);
//! the sweeps (`age_out`, `flush_egress`, possibly run by control) only *try* the lock
//! and skip busy buckets, reporting them. Control's dumps (`entries`, `get`, `state`)
//! are readers. Lookups also store a per-entry "last used" time (in a separate array,
//! written at most once a second per entry, outside the seqlock: a lost or misplaced
//! update only shifts aging by a second).
//!
//! # Capacity
//!
//! At most `capacity` entries. A new entry when full evicts the least recently used
//! Stale or Failed entry among a sample of `EVICT_SAMPLE` buckets (the whole table for
//! small tables; a rotating window otherwise, so the cost per insert is bounded even
//! under a flood of new destinations), else it is refused and the caller counts it.
//! The table has about 2× `capacity` slots; an entry whose bucket is full evicts the
//! bucket's least recently used Stale/Failed entry or is refused.

use std::net::Ipv4Addr;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

use crate::wire::MacAddr;

#[path = "neigh_arp.rs"]
mod arp;
#[path = "neigh_pending.rs"]
mod pending;

pub use arp::{arp_probe, arp_reply, arp_request, parse_arp, Arp, ArpOp, ARP_FRAME_LEN};
pub use pending::{PendingQueue, QueueFull, Resolution, Waiting, PENDING_CAPACITY, PENDING_PER_NEIGHBOUR, PENDING_TIMEOUT_MS};

/// The egress id of the uplink (network ids are below it).
pub const UPLINK_EGRESS: u16 = u16::MAX;

const SLOTS: usize = 7;
/// How many times a writer spins for a bucket lock before giving up.
const SPIN_LIMIT: u32 = 1024;
/// How many times a reader retries a bucket that a writer keeps changing.
const READ_RETRIES: u32 = 1024;
/// Buckets examined to find an eviction victim when the table is full.
const EVICT_SAMPLE: usize = 128;
/// A lookup refreshes an entry's "last used" time at most this often.
const USED_GRANULARITY_MS: u64 = 1000;

const ST_INCOMPLETE: u64 = 1;
const ST_REACHABLE: u64 = 2;
const ST_STALE: u64 = 3;
const ST_FAILED: u64 = 4;

/// Timers and size of a [`NeighCache`]. `Default` is modelled on Linux's ARP defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighConfig {
    /// Most entries (at least 1). Default 4096.
    pub capacity: u32,
    /// How long a confirmation keeps an entry Reachable. Default 30 s.
    pub reachable_ms: u64,
    /// Interval between requests for one entry. Default 1 s.
    pub retrans_ms: u64,
    /// Requests sent before an entry is Failed (at least 1). Default 3.
    pub retries: u8,
    /// How long a Failed entry answers `Failed` before it is forgotten. Default 3 s.
    pub failed_hold_ms: u64,
    /// Entries not used for this long are removed by `age_out`. Default 300 s.
    pub unused_ms: u64,
}

impl Default for NeighConfig {
    fn default() -> NeighConfig {
        NeighConfig { capacity: 4096, reachable_ms: 30_000, retrans_ms: 1_000, retries: 3, failed_hold_ms: 3_000, unused_ms: 300_000 }
    }
}

/// A neighbour's state (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighState {
    /// A request was sent; no answer yet.
    Incomplete,
    /// Confirmed less than `reachable_ms` ago.
    Reachable,
    /// Known MAC, not confirmed recently: used, refreshed on use.
    Stale,
    /// Requests went unanswered (held for `failed_hold_ms`).
    Failed,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Reachable: send to this MAC.
    Hit(MacAddr),
    /// Stale: send to this MAC, and call `claim_request` (a refresh is due).
    HitStale(MacAddr),
    /// Resolution under way: queue the packet and call `claim_request`.
    Incomplete,
    /// Resolution failed recently: drop, answer ICMP host unreachable.
    Failed,
    /// Unknown: queue the packet and call `claim_request`.
    Miss,
}

/// Where an ARP packet that teaches us a mapping came from (see [`Arp::learn_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnFrom {
    /// A reply addressed to us: the neighbour is confirmed Reachable. Updates an
    /// existing entry only (unsolicited replies create nothing).
    Reply,
    /// A request for our address: creates or updates the entry (Stale, as Linux does).
    Request,
    /// Gratuitous or overheard ARP: updates an existing entry only (Stale).
    Unsolicited,
}

/// What a learn did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnResult {
    /// A new entry (from a request).
    Created,
    /// An Incomplete or Failed entry now has a MAC: queued packets can go.
    Resolved,
    /// Same MAC as before (confirmed if it was a reply).
    Refreshed,
    /// The MAC changed (the address moved, or someone lies): worth counting.
    Changed {
        /// The MAC the entry had.
        old: MacAddr,
    },
    /// Nothing to update and this kind of packet does not create entries.
    Ignored,
    /// Not a unicast MAC or not a unicast host address: nothing done.
    Invalid,
    /// The table (or the entry's bucket) is full of entries that may not be evicted.
    Refused,
    /// Lock contention beyond the spin limit (a writer was preempted): not learned;
    /// the next ARP packet will do.
    Busy,
}

/// What `claim_request` decided. Exactly one caller gets a "send" per request slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Send a broadcast request now (new or Incomplete entry).
    Broadcast,
    /// Send a request to this MAC now (refreshing a Stale entry, RFC 1122 2.3.2.1).
    Unicast(MacAddr),
    /// Nothing to send now (a request is outstanding, the entry is Reachable, or
    /// another writer holds the bucket).
    Wait,
    /// The neighbour did not answer: drop, answer ICMP host unreachable.
    Failed,
    /// No room for a new entry: drop the packet (count it).
    Refused,
}

impl Claim {
    /// True when the caller must send a request now.
    pub fn must_send(self) -> bool {
        matches!(self, Claim::Broadcast | Claim::Unicast(_))
    }
}

/// One entry as listed by [`NeighCache::entries`] and [`NeighCache::get`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    /// The network id (`NetId`) or `UPLINK_EGRESS`.
    pub egress: u16,
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// `None` while Incomplete (and for Failed entries that never resolved).
    pub mac: Option<MacAddr>,
    /// The state at the time given to the call.
    pub state: NeighState,
    /// When the stored state was last written (confirmed, learned, created, failed).
    pub since_ms: u64,
    /// When the last request was sent (0 if never).
    pub probe_ms: u64,
    /// Requests sent since the last confirmation.
    pub probes: u8,
    /// When a lookup last used the entry (to the second).
    pub used_ms: u64,
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Entries removed.
    pub removed: usize,
    /// Buckets skipped because a worker was writing them (run the sweep again later).
    pub busy: usize,
}

/// One consistent read of a slot.
#[derive(Clone, Copy, Debug, Default)]
struct Snap {
    val: u64,
    since: u64,
    probe_at: u64,
}

impl Snap {
    fn new(mac: MacAddr, state: u64, probes: u8, since: u64, probe_at: u64) -> Snap {
        Snap { val: mac.to_u64() | state << 48 | (probes as u64) << 56, since, probe_at }
    }
    fn mac(&self) -> MacAddr {
        MacAddr::from_u64(self.val & 0xffff_ffff_ffff)
    }
    fn state(&self) -> u64 {
        (self.val >> 48) & 0xff
    }
    fn probes(&self) -> u8 {
        (self.val >> 56) as u8
    }
}

/// The state an entry is in at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eff {
    Incomplete,
    Reachable,
    Stale,
    Failed { at: u64 },
    /// Failed longer than the hold time, or garbage: counts as absent.
    Gone,
}

/// Seven entries and their seqlock: four cache lines (keys with the version and lock
/// on the first, so a lookup miss reads one line).
#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    seq: AtomicU32,
    lock: AtomicU32,
    /// 0 = empty, else `key()`.
    keys: [AtomicU64; SLOTS],
    vals: [AtomicU64; SLOTS + 1],
    since: [AtomicU64; SLOTS + 1],
    probe_at: [AtomicU64; SLOTS + 1],
}

/// A held bucket lock (dropping it unlocks).
struct Guard<'a>(&'a Bucket);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.lock.store(0, Release);
    }
}

impl Guard<'_> {
    fn find(&self, k: u64) -> Option<usize> {
        (0..SLOTS).find(|&i| self.0.keys[i].load(Relaxed) == k)
    }
    fn snap(&self, i: usize) -> Snap {
        let b = self.0;
        Snap { val: b.vals[i].load(Relaxed), since: b.since[i].load(Relaxed), probe_at: b.probe_at[i].load(Relaxed) }
    }
    /// Writes slot `i` (key 0 = remove) inside the seqlock.
    fn put(&self, i: usize, k: u64, s: Snap) {
        let b = self.0;
        let v = b.seq.load(Relaxed);
        b.seq.store(v.wrapping_add(1), Relaxed);
        fence(Release);
        b.keys[i].store(k, Relaxed);
        b.vals[i].store(s.val, Relaxed);
        b.since[i].store(s.since, Relaxed);
        b.probe_at[i].store(s.probe_at, Relaxed);
        b.seq.store(v.wrapping_add(2), Release);
    }
}

impl Bucket {
    fn try_lock(&self) -> Option<Guard<'_>> {
        self.lock.compare_exchange(0, 1, Acquire, Relaxed).ok().map(|_| Guard(self))
    }
    fn lock(&self) -> Option<Guard<'_>> {
        for _ in 0..SPIN_LIMIT {
            if self.lock.load(Relaxed) == 0 {
                if let Some(g) = self.try_lock() {
                    return Some(g);
                }
            }
            std::hint::spin_loop();
        }
        None
    }
    /// A consistent copy of every slot, or `None` if writers kept changing it.
    fn read_all(&self) -> Option<[(u64, Snap); SLOTS]> {
        for _ in 0..READ_RETRIES {
            let v = self.seq.load(Acquire);
            if v & 1 == 0 {
                let mut out = [(0u64, Snap::default()); SLOTS];
                for (i, o) in out.iter_mut().enumerate() {
                    let k = self.keys[i].load(Relaxed);
                    if k != 0 {
                        *o = (k, Snap { val: self.vals[i].load(Relaxed), since: self.since[i].load(Relaxed), probe_at: self.probe_at[i].load(Relaxed) });
                    }
                }
                fence(Acquire);
                if self.seq.load(Relaxed) == v {
                    return Some(out);
                }
            }
            std::hint::spin_loop();
        }
        None
    }
    /// A consistent read of key `k`'s slot: `Some(None)` when absent, `None` when busy.
    #[inline]
    fn read(&self, k: u64) -> Option<Option<(usize, Snap)>> {
        for _ in 0..READ_RETRIES {
            let v = self.seq.load(Acquire);
            if v & 1 == 0 {
                let mut found = None;
                for i in 0..SLOTS {
                    if self.keys[i].load(Relaxed) == k {
                        found = Some((i, Snap { val: self.vals[i].load(Relaxed), since: self.since[i].load(Relaxed), probe_at: self.probe_at[i].load(Relaxed) }));
                        break;
                    }
                }
                fence(Acquire);
                if self.seq.load(Relaxed) == v {
                    return Some(found);
                }
            }
            std::hint::spin_loop();
        }
        None
    }
}

#[inline]
fn key(egress: u16, ip: Ipv4Addr) -> u64 {
    1 << 63 | (egress as u64) << 32 | u32::from(ip) as u64
}

#[inline]
fn key_parts(k: u64) -> (u16, Ipv4Addr) {
    ((k >> 32) as u16, Ipv4Addr::from(k as u32))
}

/// A unicast host address we may resolve: not 0/8, multicast, class E or broadcast.
#[inline]
fn is_host(ip: Ipv4Addr) -> bool {
    let o = ip.octets()[0];
    o != 0 && o < 224
}

/// Why a new entry could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Full {
    Refused,
    Busy,
}

/// The shared ARP cache (see the module docs). `Send + Sync`; share it as
/// `Arc<NeighCache>`.
pub struct NeighCache {
    buckets: Box<[Bucket]>,
    /// Last lookup time per slot (`bucket * SLOTS + slot`).
    used: Box<[AtomicU64]>,
    mask: usize,
    seed: u64,
    cfg: NeighConfig,
    count: AtomicU32,
    evict_cursor: AtomicU32,
}

impl Default for NeighCache {
    fn default() -> NeighCache {
        NeighCache::new(NeighConfig::default())
    }
}

impl NeighCache {
    /// An empty cache (allocates about 150 bytes per entry of capacity).
    pub fn new(cfg: NeighConfig) -> NeighCache {
        let cfg = NeighConfig { capacity: cfg.capacity.max(1), retries: cfg.retries.max(1), ..cfg };
        let n = (cfg.capacity as usize * 2).div_ceil(SLOTS).next_power_of_two();
        let buckets: Box<[Bucket]> = (0..n).map(|_| Bucket::default()).collect();
        let used: Box<[AtomicU64]> = (0..n * SLOTS).map(|_| AtomicU64::new(0)).collect();
        NeighCache { buckets, used, mask: n - 1, seed: random_seed(), cfg, count: AtomicU32::new(0), evict_cursor: AtomicU32::new(0) }
    }

    /// The configuration in force (capacity and retries at least 1).
    pub fn config(&self) -> &NeighConfig {
        &self.cfg
    }

    /// Entries currently held (including Failed ones not yet swept).
    pub fn len(&self) -> usize {
        self.count.load(Relaxed) as usize
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn bucket_of(&self, k: u64) -> usize {
        // splitmix64 finaliser over a per-cache random seed: addresses an outsider
        // picks do not pile up in one bucket.
        let mut x = k ^ self.seed;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((x ^ (x >> 31)) as usize) & self.mask
    }

    fn eff(&self, s: &Snap, now: u64) -> Eff {
        let c = &self.cfg;
        let st = match s.state() {
            ST_REACHABLE if now.saturating_sub(s.since) < c.reachable_ms => return Eff::Reachable,
            ST_REACHABLE | ST_STALE => Eff::Stale,
            ST_INCOMPLETE => Eff::Incomplete,
            ST_FAILED => return self.failed_at(s.since, now),
            _ => return Eff::Gone,
        };
        let idle = now.saturating_sub(s.probe_at);
        if s.probes() >= c.retries && idle >= c.retrans_ms {
            return self.failed_at(s.probe_at.saturating_add(c.retrans_ms), now);
        }
        if st == Eff::Incomplete && idle >= c.retrans_ms.saturating_mul(c.retries as u64) {
            // Abandoned: nobody claimed the due retries (no packet waits any more).
            // Forget it rather than let it hold a slot that cannot be evicted.
            return Eff::Gone;
        }
        st
    }

    fn failed_at(&self, at: u64, now: u64) -> Eff {
        if now.saturating_sub(at) < self.cfg.failed_hold_ms {
            Eff::Failed { at }
        } else {
            Eff::Gone
        }
    }

    #[inline]
    fn touch(&self, idx: usize, now: u64) {
        if let Some(u) = self.used.get(idx) {
            if now.saturating_sub(u.load(Relaxed)) >= USED_GRANULARITY_MS {
                u.store(now, Relaxed);
            }
        }
    }

    /// Looks up the MAC of `ip` on `egress` at `now_ms`. Lock-free: never waits for a
    /// writer beyond a bounded number of retries (then `Miss`). Marks the entry used.
    #[inline]
    pub fn lookup(&self, egress: u16, ip: Ipv4Addr, now_ms: u64) -> Lookup {
        let k = key(egress, ip);
        let b = self.bucket_of(k);
        let Some(Some((i, s))) = self.buckets[b].read(k) else { return Lookup::Miss };
        let r = match self.eff(&s, now_ms) {
            Eff::Reachable => Lookup::Hit(s.mac()),
            Eff::Stale => Lookup::HitStale(s.mac()),
            Eff::Incomplete => Lookup::Incomplete,
            Eff::Failed { .. } => Lookup::Failed,
            Eff::Gone => return Lookup::Miss,
        };
        self.touch(b * SLOTS + i, now_ms);
        r
    }

    /// The state of `ip` on `egress` at `now_ms` (`None`: absent or forgotten).
    /// Does not mark the entry used.
    pub fn state(&self, egress: u16, ip: Ipv4Addr, now_ms: u64) -> Option<NeighState> {
        self.get(egress, ip, now_ms).map(|e| e.state)
    }

    /// The entry of `ip` on `egress` as seen at `now_ms`, for dumps and tests.
    pub fn get(&self, egress: u16, ip: Ipv4Addr, now_ms: u64) -> Option<NeighEntry> {
        let k = key(egress, ip);
        let b = self.bucket_of(k);
        let (i, s) = self.buckets[b].read(k)??;
        self.entry(k, &s, b * SLOTS + i, now_ms)
    }

    fn entry(&self, k: u64, s: &Snap, idx: usize, now: u64) -> Option<NeighEntry> {
        let state = match self.eff(s, now) {
            Eff::Incomplete => NeighState::Incomplete,
            Eff::Reachable => NeighState::Reachable,
            Eff::Stale => NeighState::Stale,
            Eff::Failed { .. } => NeighState::Failed,
            Eff::Gone => return None,
        };
        let (egress, ip) = key_parts(k);
        let mac = Some(s.mac()).filter(|m| !m.is_zero());
        let used_ms = self.used.get(idx).map_or(0, |u| u.load(Relaxed));
        Some(NeighEntry { egress, ip, mac, state, since_ms: s.since, probe_ms: s.probe_at, probes: s.probes(), used_ms })
    }

    /// Every live entry at `now_ms` (control path: allocates). Entries being written
    /// at that instant by a worker that keeps the bucket busy may be missing.
    pub fn entries(&self, now_ms: u64) -> Vec<NeighEntry> {
        let mut out = Vec::with_capacity(self.len());
        for (b, bucket) in self.buckets.iter().enumerate() {
            let Some(slots) = bucket.read_all() else { continue };
            for (i, (k, s)) in slots.iter().enumerate() {
                if *k != 0 {
                    out.extend(self.entry(*k, s, b * SLOTS + i, now_ms));
                }
            }
        }
        out
    }

    /// Decides whether the caller must send an ARP request for `ip` on `egress` now,
    /// creating an Incomplete entry if there is none. Atomic per entry: of any number
    /// of concurrent callers, one gets `Broadcast`/`Unicast` per request slot (at most
    /// `retries` requests, `retrans_ms` apart); after the last one goes unanswered the
    /// entry becomes Failed. Call it on `Miss`, `Incomplete` and `HitStale`.
    pub fn claim_request(&self, egress: u16, ip: Ipv4Addr, now_ms: u64) -> Claim {
        if !is_host(ip) {
            return Claim::Refused;
        }
        let k = key(egress, ip);
        let b = self.bucket_of(k);
        loop {
            let Some(g) = self.buckets[b].lock() else { return Claim::Wait };
            let Some(i) = g.find(k) else {
                drop(g);
                let fresh = Snap::new(MacAddr::ZERO, ST_INCOMPLETE, 1, now_ms, now_ms);
                match self.insert(b, k, fresh, now_ms) {
                    Ok(true) => return Claim::Broadcast,
                    Ok(false) => continue, // someone else created it: decide again
                    Err(Full::Busy) => return Claim::Wait,
                    Err(Full::Refused) => return Claim::Refused,
                }
            };
            let s = g.snap(i);
            let c = &self.cfg;
            return match self.eff(&s, now_ms) {
                Eff::Reachable => Claim::Wait,
                e @ (Eff::Stale | Eff::Incomplete) => {
                    // Rate limit within a round of requests; the first one of a round
                    // (a Stale entry not probed since its last confirmation) goes at once.
                    if s.probes() >= c.retries || (s.probes() > 0 && now_ms.saturating_sub(s.probe_at) < c.retrans_ms) {
                        return Claim::Wait;
                    }
                    let (st, claim) = if e == Eff::Stale { (ST_STALE, Claim::Unicast(s.mac())) } else { (ST_INCOMPLETE, Claim::Broadcast) };
                    g.put(i, k, Snap::new(s.mac(), st, s.probes() + 1, s.since, now_ms));
                    claim
                }
                Eff::Failed { at } => {
                    if s.state() != ST_FAILED {
                        g.put(i, k, Snap::new(s.mac(), ST_FAILED, s.probes(), at, s.probe_at));
                    }
                    Claim::Failed
                }
                Eff::Gone => {
                    // Forgotten failure: start over in the same slot.
                    g.put(i, k, Snap::new(MacAddr::ZERO, ST_INCOMPLETE, 1, now_ms, now_ms));
                    self.touch_force(b * SLOTS + i, now_ms);
                    Claim::Broadcast
                }
            };
        }
    }

    /// Records that `ip` on `egress` is at `mac` (from an ARP packet; `how` says which
    /// kind, see [`Arp::learn_from`]). Replies confirm (Reachable); requests and
    /// unsolicited packets leave the entry Stale when they change it.
    pub fn learn(&self, egress: u16, ip: Ipv4Addr, mac: MacAddr, now_ms: u64, how: LearnFrom) -> LearnResult {
        if !mac.is_unicast() || !is_host(ip) {
            return LearnResult::Invalid;
        }
        let k = key(egress, ip);
        let b = self.bucket_of(k);
        loop {
            let Some(g) = self.buckets[b].lock() else { return LearnResult::Busy };
            let Some(i) = g.find(k) else {
                drop(g);
                if how != LearnFrom::Request {
                    return LearnResult::Ignored;
                }
                match self.insert(b, k, Snap::new(mac, ST_STALE, 0, now_ms, 0), now_ms) {
                    Ok(true) => return LearnResult::Created,
                    Ok(false) => continue,
                    Err(Full::Busy) => return LearnResult::Busy,
                    Err(Full::Refused) => return LearnResult::Refused,
                }
            };
            let s = g.snap(i);
            let unresolved = matches!(self.eff(&s, now_ms), Eff::Incomplete | Eff::Failed { .. } | Eff::Gone);
            let old = s.mac();
            let result = if unresolved {
                LearnResult::Resolved
            } else if old != mac {
                LearnResult::Changed { old }
            } else {
                LearnResult::Refreshed
            };
            if how == LearnFrom::Reply {
                g.put(i, k, Snap::new(mac, ST_REACHABLE, 0, now_ms, s.probe_at));
            } else if result != LearnResult::Refreshed {
                g.put(i, k, Snap::new(mac, ST_STALE, 0, now_ms, s.probe_at));
            }
            if unresolved {
                self.touch_force(b * SLOTS + i, now_ms);
            }
            return result;
        }
    }

    fn touch_force(&self, idx: usize, now: u64) {
        if let Some(u) = self.used.get(idx) {
            u.store(now, Relaxed);
        }
    }

    /// Puts a new entry for `k` into bucket `b`, making room first if the table is
    /// full. `Ok(false)`: the key appeared meanwhile (the caller decides again).
    /// Never holds two bucket locks at once.
    fn insert(&self, b: usize, k: u64, s: Snap, now: u64) -> Result<bool, Full> {
        if self.count.fetch_add(1, Relaxed) >= self.cfg.capacity && !self.evict_one(now) {
            self.count.fetch_sub(1, Relaxed);
            return Err(Full::Refused);
        }
        let unreserve = || {
            self.count.fetch_sub(1, Relaxed);
        };
        let Some(g) = self.buckets[b].lock() else {
            unreserve();
            return Err(Full::Busy);
        };
        if g.find(k).is_some() {
            unreserve();
            return Ok(false);
        }
        let slot = match g.find(0) {
            Some(i) => i,
            None => {
                // Bucket full: replace its best victim (the count does not change).
                let victim = (0..SLOTS).filter_map(|i| self.victim_rank(&g.snap(i), b * SLOTS + i, now).map(|r| (r, i))).min();
                unreserve();
                match victim {
                    Some((_, i)) => i,
                    None => return Err(Full::Refused),
                }
            }
        };
        g.put(slot, k, s);
        self.touch_force(b * SLOTS + slot, now);
        Ok(true)
    }

    /// Eviction order among evictable entries (lower goes first): forgotten failures,
    /// then by last use. `None`: not evictable (Reachable or Incomplete).
    fn victim_rank(&self, s: &Snap, idx: usize, now: u64) -> Option<(u8, u64)> {
        let used = self.used.get(idx).map_or(0, |u| u.load(Relaxed));
        match self.eff(s, now) {
            Eff::Gone => Some((0, used)),
            Eff::Stale | Eff::Failed { .. } => Some((1, used)),
            Eff::Reachable | Eff::Incomplete => None,
        }
    }

    /// Removes the best victim among a sample of buckets. True if one was removed.
    fn evict_one(&self, now: u64) -> bool {
        let n = self.buckets.len();
        let sample = n.min(EVICT_SAMPLE);
        let start = self.evict_cursor.fetch_add(sample as u32, Relaxed) as usize;
        let mut best: Option<((u8, u64), usize, u64)> = None;
        for j in 0..sample {
            let b = (start + j) & self.mask;
            let Some(slots) = self.buckets[b].read_all() else { continue };
            for (i, (k, s)) in slots.iter().enumerate() {
                if *k == 0 {
                    continue;
                }
                if let Some(r) = self.victim_rank(s, b * SLOTS + i, now) {
                    let better = match &best {
                        None => true,
                        Some((cur, _, _)) => r < *cur,
                    };
                    if better {
                        best = Some((r, b, *k));
                    }
                }
            }
        }
        let Some((_, b, k)) = best else { return false };
        let Some(g) = self.buckets[b].lock() else { return false };
        match g.find(k) {
            Some(i) if self.victim_rank(&g.snap(i), b * SLOTS + i, now).is_some() => {
                g.put(i, 0, Snap::default());
                self.count.fetch_sub(1, Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Removes every entry for which `pred(egress, snapshot, last used)` holds, trying
    /// each bucket's lock once (never waiting).
    fn sweep(&self, mut pred: impl FnMut(u16, &Snap, u64) -> bool) -> Sweep {
        let mut r = Sweep::default();
        for (b, bucket) in self.buckets.iter().enumerate() {
            let Some(slots) = bucket.read_all() else {
                r.busy += 1;
                continue;
            };
            let used = |i: usize| self.used.get(b * SLOTS + i).map_or(0, |u| u.load(Relaxed));
            if !slots.iter().enumerate().any(|(i, (k, s))| *k != 0 && pred(key_parts(*k).0, s, used(i))) {
                continue;
            }
            let Some(g) = bucket.try_lock() else {
                r.busy += 1;
                continue;
            };
            for i in 0..SLOTS {
                let k = g.0.keys[i].load(Relaxed);
                if k != 0 && pred(key_parts(k).0, &g.snap(i), used(i)) {
                    g.put(i, 0, Snap::default());
                    self.count.fetch_sub(1, Relaxed);
                    r.removed += 1;
                }
            }
        }
        r
    }

    /// Removes entries not used by a lookup for `unused_ms` and failures past their
    /// hold time. For a housekeeping thread (about once a second); never waits for a
    /// worker (busy buckets are skipped and counted).
    pub fn age_out(&self, now_ms: u64) -> Sweep {
        let unused = self.cfg.unused_ms;
        self.sweep(|_, s, used| now_ms.saturating_sub(used) > unused || self.eff(s, now_ms) == Eff::Gone)
    }

    /// Removes every entry of `egress` (a network went away, the uplink changed).
    /// Never waits for a worker; run it again while `busy` is not 0.
    pub fn flush_egress(&self, egress: u16) -> Sweep {
        self.sweep(|e, _, _| e == egress)
    }

    /// Removes everything (same contract as `flush_egress`).
    pub fn flush(&self) -> Sweep {
        self.sweep(|_, _, _| true)
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6e65_6967_6862_6f72);
    h.finish()
}

#[cfg(test)]
#[path = "tests_neigh.rs"]
mod tests;
