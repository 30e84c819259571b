//! The connection table: fixed connection slots, a two-entries-per-connection hash
//! index, the flush epoch, and the sweeper. See the concurrency section of the module
//! docs in `nat/mod.rs` for the scheme; this file implements it.
//!
//! Owns: every connection's tuples, state and timestamps, plus the port allocator and
//! fragment table that belong to the same flows. Knows nothing of packet bytes.
//!
//! Index layout: `buckets` cache lines of 8 words, split into `shards` contiguous
//! groups with a spinlock each. A word is `tag << 32 | dir << 31 | (slot + 1)`, 0 when
//! empty; the tag is 32 hash bits, so a lookup reads a slot only when the tag matches.
//! A tuple's two candidate buckets are in its shard, so every index change a
//! connection needs is covered by the locks of its two shards. Sized for at most 50%
//! load; an insert fills the first bucket with room, else moves one resident to its
//! other bucket (one cuckoo step, copy before overwrite).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

use super::alloc::{class_of, Claim, PortAlloc};
use super::frag::FragTable;
use super::state::{meta, ConnState, Timeouts};
use super::sync::{mix64, random_seed, zeroed_slice, MapSlice, Padded, SpinGuard, SpinLock, Zeroable};
use super::{ConnRef, Dir, NatConfig, Tuple, IPPROTO_ICMP};

/// Slots examined by an insert that finds no free slot, hoping to reclaim an expired
/// or flushed connection.
const RECLAIM_BUDGET: usize = 16;
/// Seqlock read attempts before a reader gives up on a slot.
const READ_RETRIES: u32 = 64;

/// One connection. Tuples are written once (creation, seqlock held odd); `meta` and
/// `seen` change with single atomic operations while the connection lives.
#[repr(C, align(64))]
struct Slot {
    seq: AtomicU32,
    /// Free-list link (slot + 1, 0 = end).
    next: AtomicU32,
    meta: AtomicU64,
    /// src << 32 | dst, original direction.
    o_addr: AtomicU64,
    /// src << 32 | dst, reply direction.
    r_addr: AtomicU64,
    /// sport << 16 | dport.
    o_port: AtomicU32,
    r_port: AtomicU32,
    epoch: AtomicU32,
    seen: AtomicU32,
    born: AtomicU32,
}

// SAFETY: only atomics.
unsafe impl Zeroable for Slot {}

#[repr(C, align(64))]
struct Bucket {
    w: [AtomicU64; 8],
}

// SAFETY: only atomics.
unsafe impl Zeroable for Bucket {}

/// A consistent copy of one connection slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snap {
    pub idx: u32,
    pub meta: u64,
    pub orig: Tuple,
    pub reply: Tuple,
    pub epoch: u32,
    pub seen: u32,
    pub born: u32,
}

impl Snap {
    /// The tuple of packets travelling in `d`.
    #[inline]
    pub fn tuple(&self, d: Dir) -> &Tuple {
        match d {
            Dir::Orig => &self.orig,
            Dir::Reply => &self.reply,
        }
    }

    #[inline]
    pub fn cref(&self) -> ConnRef {
        ConnRef { idx: self.idx, gen: meta::gen(self.meta) }
    }
}

/// Where a tuple lives in the index.
#[derive(Clone, Copy)]
struct Pos {
    shard: usize,
    b1: usize,
    b2: usize,
    tag: u32,
}

/// What [`ConnTable::insert`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Insert {
    Created(Snap),
    /// The original tuple is already tracked (another worker was faster): look it up.
    Exists,
    /// The reply tuple belongs to another live connection.
    Clash,
    /// No free slot (or no room in the index buckets).
    Full,
}

/// One connection as listed by [`ConnTable::dump`] (`conntrack ls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Reference for [`ConnTable::get`].
    pub conn: ConnRef,
    /// Tuple of the packets of the original direction, as they arrive.
    pub orig: Tuple,
    /// Tuple of the reply packets, as they arrive (after NAT this shows the
    /// translated addresses and ports).
    pub reply: Tuple,
    /// Protocol state.
    pub state: ConnState,
    /// Source translated in the original direction.
    pub snat: bool,
    /// Destination translated in the original direction.
    pub dnat: bool,
    /// Second the connection was made.
    pub created: u32,
    /// Second of its last packet (to within a second).
    pub last_seen: u32,
    /// Seconds until it expires if idle.
    pub expires_in: u32,
}

/// Counters of the table's slow-path events (each is also a [`super::Reason`] or a
/// creation the caller sees; these are for `vswitchctl` without per-worker sums).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Connections created.
    pub created: u64,
    /// Connections removed (expired, flushed, replaced).
    pub removed: u64,
    /// New flows refused because the table was full.
    pub table_full: u64,
    /// New flows refused because no port was free.
    pub ports_exhausted: u64,
    /// New flows refused because their reply tuple was taken.
    pub clashes: u64,
    /// Fragment records evicted before expiry to make room.
    pub frag_evictions: u64,
    /// External ports (and ICMP identifiers) currently held by masquerade mappings.
    pub ports_held: u64,
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    removed: AtomicU64,
    table_full: AtomicU64,
    ports_exhausted: AtomicU64,
    clashes: AtomicU64,
    frag_evictions: AtomicU64,
}

/// Slow-path events the packet code reports to the table's counters.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    PortsExhausted,
    FragEvicted,
}

/// The connection-tracking table shared by all workers (`Arc<ConnTable>`): tracked
/// connections, their NAT mappings (port allocator) and the fragment records.
///
/// Workers call [`super::process`]; a housekeeping thread calls [`ConnTable::sweep`];
/// the control plane calls [`ConnTable::dump`], [`ConnTable::flush`] and the getters,
/// none of which blocks a worker or takes a worker lock. Everything is allocated in
/// [`ConnTable::new`]; nothing grows afterwards.
pub struct ConnTable {
    slots: MapSlice<Slot>,
    index: MapSlice<Bucket>,
    locks: Box<[Padded<SpinLock>]>,
    shard_bits: u32,
    bps_bits: u32,
    seed: (u64, u64),
    cap: u32,
    epoch: Padded<AtomicU32>,
    fresh: Padded<AtomicU32>,
    free: Padded<AtomicU64>,
    count: Padded<AtomicU32>,
    cursor: Padded<AtomicU32>,
    ctr: Padded<Counters>,
    pub(crate) alloc: PortAlloc,
    pub(crate) frags: FragTable,
    pub(crate) timeouts: Timeouts,
}

#[inline]
fn word(tag: u32, dir: Dir, idx: u32) -> u64 {
    (tag as u64) << 32 | (dir as u64) << 31 | (idx as u64 + 1)
}

#[inline]
fn decode(w: u64) -> (u32, Dir) {
    let idx = ((w & 0x7fff_ffff) as u32).wrapping_sub(1);
    (idx, if w & (1 << 31) != 0 { Dir::Reply } else { Dir::Orig })
}

#[inline]
fn pack_addr(t: &Tuple) -> u64 {
    (u32::from(t.src) as u64) << 32 | u32::from(t.dst) as u64
}

#[inline]
fn pack_port(t: &Tuple) -> u32 {
    (t.sport as u32) << 16 | t.dport as u32
}

#[inline]
fn unpack(proto: u8, addr: u64, port: u32) -> Tuple {
    Tuple::new(proto, ((addr >> 32) as u32).into(), (port >> 16) as u16, (addr as u32).into(), port as u16)
}

impl ConnTable {
    /// A table sized by `cfg` (see [`NatConfig`]). Memory is allocated zeroed, so pages
    /// of a big table that never holds many connections are never backed.
    pub fn new(cfg: NatConfig) -> ConnTable {
        let cap = cfg.max_conns.clamp(1, 1 << 30);
        // Two index entries per connection, at most half the words used.
        let buckets = (cap as usize * 4).div_ceil(8).max(4).next_power_of_two();
        let shards = (buckets / 8).clamp(2, 4096);
        let shard_bits = shards.trailing_zeros();
        ConnTable {
            slots: zeroed_slice(cap as usize),
            index: zeroed_slice(buckets),
            locks: (0..shards).map(|_| Padded::default()).collect(),
            shard_bits,
            bps_bits: (buckets / shards).trailing_zeros(),
            seed: (random_seed(), random_seed()),
            cap,
            epoch: Padded::default(),
            fresh: Padded::default(),
            free: Padded::default(),
            count: Padded::default(),
            cursor: Padded::default(),
            ctr: Padded::default(),
            alloc: PortAlloc::new(cfg.snat_addrs, cap, cfg.port_range),
            frags: FragTable::new(cfg.frag_table.max(4)),
            timeouts: cfg.timeouts,
        }
    }

    /// Most connections the table holds.
    pub fn capacity(&self) -> u32 {
        self.cap
    }

    /// Slots in use: live connections plus expired or flushed ones not reclaimed yet.
    pub fn len(&self) -> u32 {
        self.count.load(Relaxed)
    }

    /// True when no slot is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current flush epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Relaxed)
    }

    /// Forgets every connection at once (control plane; lock-free, O(1)): bumps the
    /// flush epoch, so connections made before count as absent. Their slots and ports
    /// are reclaimed lazily (next packet of the flow, [`ConnTable::sweep`], or a full
    /// table). Returns the new epoch.
    pub fn flush(&self) -> u32 {
        self.epoch.fetch_add(1, AcqRel).wrapping_add(1)
    }

    /// The counters of slow-path events.
    pub fn counters(&self) -> NatCounters {
        let c = &self.ctr;
        NatCounters {
            created: c.created.load(Relaxed),
            removed: c.removed.load(Relaxed),
            table_full: c.table_full.load(Relaxed),
            ports_exhausted: c.ports_exhausted.load(Relaxed),
            clashes: c.clashes.load(Relaxed),
            frag_evictions: c.frag_evictions.load(Relaxed),
            ports_held: self.alloc.ports_held(),
        }
    }

    pub(crate) fn count_event(&self, e: Event) {
        let c = match e {
            Event::PortsExhausted => &self.ctr.ports_exhausted,
            Event::FragEvicted => &self.ctr.frag_evictions,
        };
        c.fetch_add(1, Relaxed);
    }

    #[inline]
    fn pos(&self, t: &Tuple) -> Pos {
        let b = (t.sport as u64) << 32 | (t.dport as u64) << 16 | t.proto as u64;
        let h = mix64(mix64(pack_addr(t) ^ self.seed.0) ^ b ^ self.seed.1);
        let shard = (h >> (64 - self.shard_bits)) as usize;
        let tag = h as u32;
        let (b1, b2) = self.buckets_of(shard, tag);
        Pos { shard, b1, b2, tag }
    }

    #[inline]
    fn buckets_of(&self, shard: usize, tag: u32) -> (usize, usize) {
        let mask = (1usize << self.bps_bits) - 1;
        let base = shard << self.bps_bits;
        let i1 = tag as usize & mask;
        let mut i2 = ((tag as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & mask;
        if i2 == i1 {
            i2 = i1 ^ 1;
        }
        (base + i1, base + i2)
    }

    /// Hints the CPU to fetch the first bucket of `t` (for batch lookups).
    #[inline]
    pub fn prefetch(&self, t: &Tuple) {
        let p = self.pos(t);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint; the address is a valid reference anyway.
        unsafe {
            core::arch::x86_64::_mm_prefetch(&self.index[p.b1] as *const Bucket as *const i8, core::arch::x86_64::_MM_HINT_T0);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// A consistent copy of slot `idx` (seqlock read side), or `None` if it kept
    /// changing.
    #[inline]
    fn read(&self, idx: u32) -> Option<Snap> {
        let s = self.slots.get(idx as usize)?;
        for _ in 0..READ_RETRIES {
            let q = s.seq.load(Acquire);
            if q & 1 == 0 {
                let m = s.meta.load(Relaxed);
                let (oa, op, ra, rp) = (s.o_addr.load(Relaxed), s.o_port.load(Relaxed), s.r_addr.load(Relaxed), s.r_port.load(Relaxed));
                let (epoch, seen, born) = (s.epoch.load(Relaxed), s.seen.load(Relaxed), s.born.load(Relaxed));
                fence(Acquire);
                if s.seq.load(Relaxed) == q {
                    let p = meta::proto(m);
                    return Some(Snap { idx, meta: m, orig: unpack(p, oa, op), reply: unpack(p, ra, rp), epoch, seen, born });
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// True when `s` is a connection that counts: live, of the current epoch, not
    /// idle for longer than its timeout.
    #[inline]
    fn alive(&self, s: &Snap, epoch: u32, now: u32) -> bool {
        s.meta & meta::LIVE != 0 && s.epoch == epoch && now.saturating_sub(s.seen) <= self.timeouts.of(s.meta)
    }

    /// The connection holding tuple `t` (possibly expired or flushed: the caller
    /// decides) and the direction `t` is in it.
    #[inline]
    fn find(&self, t: &Tuple, p: &Pos) -> Option<(Snap, Dir)> {
        for b in [p.b1, p.b2] {
            for w in &self.index[b].w {
                let v = w.load(Acquire);
                if v == 0 || (v >> 32) as u32 != p.tag {
                    continue;
                }
                let (idx, dir) = decode(v);
                if let Some(s) = self.read(idx) {
                    if s.meta & meta::LIVE != 0 && s.tuple(dir) == t {
                        return Some((s, dir));
                    }
                }
            }
        }
        None
    }

    /// The connection `t` belongs to and its direction, if it is alive at `now`.
    /// Lock-free; may miss while the entry is being moved (the caller's creation path
    /// re-checks under the lock).
    #[inline]
    pub(crate) fn lookup(&self, t: &Tuple, now: u32) -> Option<(Snap, Dir)> {
        let p = self.pos(t);
        let (s, d) = self.find(t, &p)?;
        self.alive(&s, self.epoch.load(Acquire), now).then_some((s, d))
    }

    /// Changes the meta word of a live connection from `old` to `new` (one CAS).
    /// `Err(current)` when it changed meanwhile.
    #[inline]
    pub(crate) fn cas_meta(&self, idx: u32, old: u64, new: u64) -> Result<(), u64> {
        self.slots[idx as usize].meta.compare_exchange(old, new, AcqRel, Acquire).map(|_| ())
    }

    /// Records a packet at second `now`: a write only when the second changed, and
    /// never backwards (workers' clocks may differ by a tick; a stale snapshot may
    /// belong to a recycled slot).
    #[inline]
    pub(crate) fn touch(&self, s: &Snap, now: u32) {
        if now > s.seen {
            self.slots[s.idx as usize].seen.fetch_max(now, Relaxed);
        }
    }

    fn lock2(&self, a: usize, b: usize) -> (SpinGuard<'_>, Option<SpinGuard<'_>>) {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        let g1 = self.locks[x].lock();
        let g2 = (y != x).then(|| self.locks[y].lock());
        (g1, g2)
    }

    /// Creates the connection `orig`/`reply` with meta word `m` (generation bits 0) at
    /// second `now`. Expired or flushed connections holding either tuple are removed
    /// first.
    pub(crate) fn insert(&self, orig: &Tuple, reply: &Tuple, m: u64, now: u32) -> Insert {
        let Some(idx) = self.alloc_slot(now) else {
            self.ctr.table_full.fetch_add(1, Relaxed);
            return Insert::Full;
        };
        let po = self.pos(orig);
        let pr = self.pos(reply);
        for _ in 0..4 {
            let stale = {
                let _g = self.lock2(po.shard, pr.shard);
                let epoch = self.epoch.load(Acquire);
                let hit = self.find(orig, &po).map(|(s, _)| (s, false)).or_else(|| self.find(reply, &pr).map(|(s, _)| (s, true)));
                match hit {
                    None => return self.publish(idx, orig, reply, &po, &pr, m, epoch, now),
                    Some((s, is_reply)) if self.alive(&s, epoch, now) => {
                        self.free_slot(idx);
                        if is_reply {
                            self.ctr.clashes.fetch_add(1, Relaxed);
                            return Insert::Clash;
                        }
                        return Insert::Exists;
                    }
                    Some((s, _)) => s.cref(),
                }
            };
            self.remove_where(stale.idx, stale.gen, |s| !self.alive(s, self.epoch.load(Acquire), now));
        }
        self.free_slot(idx);
        Insert::Exists
    }

    /// Writes slot `idx` and adds its two index entries (shard locks held).
    #[allow(clippy::too_many_arguments)]
    fn publish(&self, idx: u32, orig: &Tuple, reply: &Tuple, po: &Pos, pr: &Pos, m: u64, epoch: u32, now: u32) -> Insert {
        let slot = &self.slots[idx as usize];
        let gen = meta::gen(slot.meta.load(Relaxed));
        let m = m | (gen as u64) << 32 | meta::LIVE;
        let q = slot.seq.load(Relaxed);
        slot.seq.store(q.wrapping_add(1), Relaxed);
        fence(Release);
        slot.meta.store(m, Relaxed);
        slot.o_addr.store(pack_addr(orig), Relaxed);
        slot.o_port.store(pack_port(orig), Relaxed);
        slot.r_addr.store(pack_addr(reply), Relaxed);
        slot.r_port.store(pack_port(reply), Relaxed);
        slot.epoch.store(epoch, Relaxed);
        slot.seen.store(now, Relaxed);
        slot.born.store(now, Relaxed);
        slot.seq.store(q.wrapping_add(2), Release);
        let wo = word(po.tag, Dir::Orig, idx);
        let ok = self.place(po, wo) && {
            let placed = self.place(pr, word(pr.tag, Dir::Reply, idx));
            if !placed {
                self.unplace(po, wo);
            }
            placed
        };
        if !ok {
            self.retire(idx, gen);
            self.free_slot(idx);
            self.ctr.table_full.fetch_add(1, Relaxed);
            return Insert::Full;
        }
        self.ctr.created.fetch_add(1, Relaxed);
        Insert::Created(Snap { idx, meta: m, orig: *orig, reply: *reply, epoch, seen: now, born: now })
    }

    /// Marks slot `idx` free with the next generation.
    fn retire(&self, idx: u32, gen: u32) -> u64 {
        let slot = &self.slots[idx as usize];
        let q = slot.seq.load(Relaxed);
        slot.seq.store(q.wrapping_add(1), Relaxed);
        fence(Release);
        let old = slot.meta.swap((gen.wrapping_add(1) as u64) << 32, AcqRel);
        slot.seq.store(q.wrapping_add(2), Release);
        old
    }

    /// Puts index word `w` into one of `p`'s buckets (its shard lock held).
    fn place(&self, p: &Pos, w: u64) -> bool {
        if self.claim_free(p.b1, w) || self.claim_free(p.b2, w) {
            return true;
        }
        // Both full: move one resident to its other bucket (same shard, so covered by
        // the lock we hold) and take its word. Copy first, then overwrite: a reader
        // may see it twice; one that misses it falls back to the locked path.
        for b in [p.b1, p.b2] {
            for slot in &self.index[b].w {
                let e = slot.load(Relaxed);
                if e == 0 {
                    slot.store(w, Release);
                    return true;
                }
                let (r1, r2) = self.buckets_of(p.shard, (e >> 32) as u32);
                let alt = if r1 == b { r2 } else { r1 };
                if alt != b && self.claim_free(alt, e) {
                    slot.store(w, Release);
                    return true;
                }
            }
        }
        false
    }

    fn claim_free(&self, b: usize, w: u64) -> bool {
        for slot in &self.index[b].w {
            if slot.load(Relaxed) == 0 {
                slot.store(w, Release);
                return true;
            }
        }
        false
    }

    fn unplace(&self, p: &Pos, w: u64) {
        for b in [p.b1, p.b2] {
            for slot in &self.index[b].w {
                if slot.load(Relaxed) == w {
                    slot.store(0, Release);
                }
            }
        }
    }

    /// Removes connection (`idx`, `gen`) if `pred` holds for it once its shards are
    /// locked. Releases its port. Taken by workers (replacing stale connections) and
    /// the housekeeping thread, never by control.
    pub(crate) fn remove_where(&self, idx: u32, gen: u32, pred: impl Fn(&Snap) -> bool) -> bool {
        let Some(s) = self.read(idx) else { return false };
        if s.meta & meta::LIVE == 0 || meta::gen(s.meta) != gen {
            return false;
        }
        let po = self.pos(&s.orig);
        let pr = self.pos(&s.reply);
        let old = {
            let _g = self.lock2(po.shard, pr.shard);
            let slot = &self.slots[idx as usize];
            let cur = slot.meta.load(Acquire);
            if cur & meta::LIVE == 0 || meta::gen(cur) != gen {
                return false;
            }
            if !pred(&Snap { meta: cur, seen: slot.seen.load(Relaxed), ..s }) {
                return false;
            }
            self.unplace(&po, word(po.tag, Dir::Orig, idx));
            self.unplace(&pr, word(pr.tag, Dir::Reply, idx));
            self.retire(idx, gen)
        };
        if old & meta::PORT != 0 {
            if let Some(class) = class_of(s.orig.proto) {
                let port = if s.orig.proto == IPPROTO_ICMP { s.reply.sport } else { s.reply.dport };
                self.alloc.release(Claim { space: meta::space(old), port }, class, u32::from(s.orig.src), s.orig.sport);
            }
        }
        self.free_slot(idx);
        self.ctr.removed.fetch_add(1, Relaxed);
        true
    }

    /// Removes up to `budget` slots' worth of expired (idle at `now`) and flushed
    /// connections, continuing where the previous call stopped; returns how many it
    /// removed. For the housekeeping thread (it takes the workers' shard locks for a
    /// moment per removal; the control plane must not call it). Calling it with
    /// `capacity() / 100` every 100 ms visits every slot about every 10 s.
    pub fn sweep(&self, now: u32, budget: usize) -> usize {
        let hwm = self.fresh.load(Acquire);
        if hwm == 0 {
            return 0;
        }
        let n = budget.min(hwm as usize) as u32;
        let start = self.cursor.fetch_add(n, Relaxed);
        let epoch = self.epoch.load(Acquire);
        let mut removed = 0;
        for k in 0..n {
            let idx = start.wrapping_add(k) % hwm;
            let Some(s) = self.read(idx) else { continue };
            if s.meta & meta::LIVE != 0
                && !self.alive(&s, epoch, now)
                && self.remove_where(idx, meta::gen(s.meta), |s| !self.alive(s, self.epoch.load(Acquire), now))
            {
                removed += 1;
            }
        }
        removed
    }

    /// Removes every connection with an address of `ips` on either side (an endpoint
    /// that went away: Docker flushes its flows too, or a client that keeps its source
    /// port would stay translated to the old address). Returns how many it removed. For
    /// the housekeeping thread, like [`ConnTable::sweep`] (it visits every slot).
    pub fn remove_involving(&self, ips: &[std::net::Ipv4Addr]) -> usize {
        if ips.is_empty() {
            return 0;
        }
        let involved = |s: &Snap| [s.orig.src, s.orig.dst, s.reply.src, s.reply.dst].iter().any(|a| ips.contains(a));
        let mut removed = 0;
        for idx in 0..self.fresh.load(Acquire) {
            let Some(s) = self.read(idx) else { continue };
            if s.meta & meta::LIVE != 0 && involved(&s) && self.remove_where(idx, meta::gen(s.meta), involved) {
                removed += 1;
            }
        }
        removed
    }

    fn info(&self, s: &Snap, now: u32) -> ConnInfo {
        let idle = now.saturating_sub(s.seen);
        ConnInfo {
            conn: s.cref(),
            orig: s.orig,
            reply: s.reply,
            state: ConnState::from_meta(s.meta),
            snat: s.meta & meta::SNAT != 0,
            dnat: s.meta & meta::DNAT != 0,
            created: s.born,
            last_seen: s.seen,
            expires_in: self.timeouts.of(s.meta).saturating_sub(idle),
        }
    }

    /// Calls `f` for every connection alive at `now` (control plane: never blocks a
    /// worker; a slot that changes under it too often is skipped). Returns the count.
    pub fn dump(&self, now: u32, mut f: impl FnMut(ConnInfo)) -> usize {
        let epoch = self.epoch.load(Acquire);
        let mut n = 0;
        for idx in 0..self.fresh.load(Acquire) {
            if let Some(s) = self.read(idx) {
                if self.alive(&s, epoch, now) {
                    f(self.info(&s, now));
                    n += 1;
                }
            }
        }
        n
    }

    /// The connection `c` refers to, if it is still alive at `now`.
    pub fn get(&self, c: ConnRef, now: u32) -> Option<ConnInfo> {
        let s = self.read(c.idx)?;
        (meta::gen(s.meta) == c.gen && self.alive(&s, self.epoch.load(Acquire), now)).then(|| self.info(&s, now))
    }

    /// A free slot: from the free stack, else never used, else after reclaiming a few
    /// dead connections.
    fn alloc_slot(&self, now: u32) -> Option<u32> {
        for attempt in 0..2 {
            let got = self.pop_free().or_else(|| self.fresh.fetch_update(AcqRel, Relaxed, |f| (f < self.cap).then_some(f + 1)).ok());
            if let Some(i) = got {
                self.count.fetch_add(1, Relaxed);
                return Some(i);
            }
            if attempt == 0 && self.sweep(now, RECLAIM_BUDGET) == 0 {
                break;
            }
        }
        None
    }

    fn free_slot(&self, idx: u32) {
        let mut h = self.free.load(Relaxed);
        loop {
            self.slots[idx as usize].next.store(h as u32, Relaxed);
            let new = ((h >> 32).wrapping_add(1)) << 32 | (idx as u64 + 1);
            match self.free.compare_exchange_weak(h, new, Release, Relaxed) {
                Ok(_) => break,
                Err(x) => h = x,
            }
        }
        self.count.fetch_sub(1, Relaxed);
    }

    /// Treiber stack pop; the tag in the high half of the head defeats ABA.
    fn pop_free(&self) -> Option<u32> {
        let mut h = self.free.load(Acquire);
        loop {
            let top = h as u32;
            if top == 0 {
                return None;
            }
            let next = self.slots[(top - 1) as usize].next.load(Relaxed);
            let new = ((h >> 32).wrapping_add(1)) << 32 | next as u64;
            match self.free.compare_exchange_weak(h, new, AcqRel, Acquire) {
                Ok(_) => return Some(top - 1),
                Err(x) => h = x,
            }
        }
    }
}
