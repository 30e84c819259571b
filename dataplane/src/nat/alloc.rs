//! External port (and ICMP identifier) allocation for source NAT.
//!
//! Owns: which internal endpoint holds which external port of which external address,
//! and how many connections use each such mapping. Knows nothing about packets or
//! connections; the connection table calls [`PortAlloc::acquire`] when it creates a
//! translated connection and [`PortAlloc::release`] when it removes one.
//!
//! Model: an external address gets an *address space* (one of a fixed number of slots,
//! claimed when the address is first used and reusable once it holds no port). A space
//! has, per protocol class (TCP, UDP, ICMP), 65536 owner words and 65536 reference
//! counts. A port is owned by exactly one internal endpoint (proto, ip, port) at a
//! time; it is taken with a compare-and-swap of its owner word from 0, so two
//! allocations can never hand out the same port, whatever else races.
//!
//! Endpoint-independent mapping (RFC 4787 REQ-1): a forward index (internal endpoint →
//! its port) lets every new connection of an endpoint reuse its port while any of its
//! connections lives; the reference count says how many do. Port preservation (REQ-3):
//! a new mapping first tries the internal port itself, then probes the configured range
//! from a pseudo-random start: every port of a small range, else at most [`MAX_PROBES`]
//! ports in runs of 8 scattered over the range (so a nearly full large range may refuse
//! before it is completely full; the caller counts the refusal).
//!
//! Locking: everything about one internal endpoint (lookup in the forward index, claim,
//! reference counts, release) runs under one of [`STRIPES`] spinlocks chosen by hashing
//! the endpoint. Only workers (creating connections) and the housekeeping thread
//! (removing them) take these locks; never the control plane. Claiming a new address
//! space takes one more lock (first packet to a new external address only).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use super::sync::{mix64, random_seed, zeroed_slice, MapSlice, Padded, SpinLock};
use super::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Lock stripes for internal endpoints.
const STRIPES: usize = 256;
/// Most ports probed for one new mapping.
pub(crate) const MAX_PROBES: u32 = 1024;
/// Protocol classes with their own port numbers: TCP, UDP, ICMP identifiers.
const CLASSES: usize = 3;
const PORTS: usize = 65536;

/// Owner word: OWNED | internal ip << 16 | internal port.
const OWNED: u64 = 1 << 48;
/// Space key word: address << 32 | USED | users (ports held plus transient pins).
const USED: u64 = 1 << 31;
const USERS: u64 = USED - 1;
/// Forward-index word: tag << 32 | space << 24 | VALID | class << 16 | port.
const VALID: u64 = 1 << 20;

/// The allocator class of an IP protocol (TCP, UDP, ICMP), if it has ports.
#[inline]
pub(crate) fn class_of(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(0),
        IPPROTO_UDP => Some(1),
        IPPROTO_ICMP => Some(2),
        _ => None,
    }
}

/// A port held in the allocator: which address space, which port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub space: u8,
    pub port: u16,
}

#[derive(Default)]
struct Space {
    key: AtomicU64,
    cursor: AtomicU32,
}

#[repr(C, align(64))]
struct FwdBucket {
    w: [AtomicU64; 8],
}

// SAFETY: only atomics.
unsafe impl super::sync::Zeroable for FwdBucket {}

/// The port allocator of one connection table. See the module docs.
pub(crate) struct PortAlloc {
    spaces: Box<[Padded<Space>]>,
    owner: MapSlice<AtomicU64>,
    refs: MapSlice<AtomicU32>,
    fwd: MapSlice<FwdBucket>,
    fwd_mask: usize,
    locks: Box<[Padded<SpinLock>]>,
    space_lock: SpinLock,
    range: (u16, u16),
    /// Ports in `range`, and a probe stride coprime with it.
    range_len: u32,
    range_step: u32,
    /// Probe stride over the 65536 ICMP identifiers.
    icmp_step: u32,
    seed: u64,
}

/// A stride near the golden section of `n` that is coprime with `n`, so stepping by it
/// visits every residue.
fn stride(n: u32) -> u32 {
    fn gcd(mut a: u32, mut b: u32) -> u32 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let mut s = ((n as u64 * 0x9e37_79b9) >> 32) as u32 | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s
}

impl PortAlloc {
    /// An allocator for `spaces` external addresses (1..=255), sized for `max_maps`
    /// simultaneous mappings, choosing ports from `range` (inclusive).
    pub(crate) fn new(spaces: u32, max_maps: u32, range: (u16, u16)) -> PortAlloc {
        let spaces = spaces.clamp(1, 255) as usize;
        let range = if range.0 <= range.1 { range } else { (range.1, range.0) };
        let buckets = ((max_maps as usize * 2).div_ceil(8)).max(2).next_power_of_two();
        PortAlloc {
            spaces: (0..spaces).map(|_| Padded::default()).collect(),
            owner: zeroed_slice(spaces * CLASSES * PORTS),
            refs: zeroed_slice(spaces * CLASSES * PORTS),
            fwd: zeroed_slice(buckets),
            fwd_mask: buckets - 1,
            locks: (0..STRIPES).map(|_| Padded::default()).collect(),
            space_lock: SpinLock::default(),
            range,
            range_len: range.1 as u32 - range.0 as u32 + 1,
            range_step: stride(range.1 as u32 - range.0 as u32 + 1),
            icmp_step: stride(65536),
            seed: random_seed(),
        }
    }

    #[inline]
    fn hash(&self, ext: u32, class: usize, ip: u32, port: u16) -> u64 {
        mix64(((ext as u64) << 32 | ip as u64) ^ self.seed) ^ mix64(((class as u64) << 16 | port as u64) ^ self.seed.rotate_left(17))
    }

    #[inline]
    fn slot(space: u8, class: usize, port: u16) -> usize {
        (space as usize * CLASSES + class) * PORTS + port as usize
    }

    /// Takes a port of external address `ext` for the internal endpoint
    /// (`class`, `ip`, `port`): the endpoint's existing port when it has one, else
    /// `port` itself when free, else a free port of the range (ICMP: of 0..=65535).
    /// With `fresh`, skips the first two and takes another port (used when the usual
    /// port clashes with a connection that did not come from the allocator).
    /// `None` when no port (or no address space) is free.
    pub(crate) fn acquire(&self, ext: u32, class: usize, ip: u32, port: u16, fresh: bool) -> Option<Claim> {
        let h = self.hash(ext, class, ip, port);
        let me = OWNED | (ip as u64) << 16 | port as u64;
        let _g = self.locks[h as usize & (STRIPES - 1)].lock();
        let s = self.pin(ext)?;
        let known = self.fwd_find(h, s, class, me);
        if !fresh {
            if let Some(p) = known {
                self.refs[Self::slot(s, class, p)].fetch_add(1, Relaxed);
                self.unpin(s);
                return Some(Claim { space: s, port: p });
            }
            if self.try_claim(s, class, port, me) {
                self.fwd_insert(h, s, class, port);
                return Some(Claim { space: s, port });
            }
        }
        let (lo, n, step) = if class == 2 { (0, 65536, self.icmp_step) } else { (self.range.0 as u32, self.range_len, self.range_step) };
        let turn = self.spaces[s as usize].cursor.fetch_add(1, Relaxed);
        let start = (mix64(h ^ turn as u64) % n as u64) as u32;
        let claim = |p: u32| {
            let p = (lo + p) as u16;
            self.try_claim(s, class, p, me).then(|| {
                if known.is_none() {
                    self.fwd_insert(h, s, class, p);
                }
                Claim { space: s, port: p }
            })
        };
        if n <= MAX_PROBES {
            // Small range: every port, from a random start.
            for i in 0..n {
                if let Some(c) = claim((start + i) % n) {
                    return Some(c);
                }
            }
        } else {
            // Large range: runs of 8 ports (one cache line of owners) at pseudo-random
            // places (a stride coprime with the range), so taken ports do not form one
            // long cluster that every probe has to walk.
            for k in 0..MAX_PROBES / 8 {
                let base = (start as u64 + k as u64 * step as u64) % n as u64;
                for j in 0..8 {
                    if let Some(c) = claim(((base + j) % n as u64) as u32) {
                        return Some(c);
                    }
                }
            }
        }
        self.unpin(s);
        None
    }

    /// Gives back one use of `claim` by the internal endpoint (`class`, `ip`, `port`);
    /// the port is free again when its last use is released.
    pub(crate) fn release(&self, claim: Claim, class: usize, ip: u32, port: u16) {
        let Some(space) = self.spaces.get(claim.space as usize) else { return };
        let ext = (space.key.load(Acquire) >> 32) as u32;
        let h = self.hash(ext, class, ip, port);
        let me = OWNED | (ip as u64) << 16 | port as u64;
        let _g = self.locks[h as usize & (STRIPES - 1)].lock();
        let i = Self::slot(claim.space, class, claim.port);
        if self.owner[i].load(Relaxed) != me {
            debug_assert!(false, "release of a port not held");
            return;
        }
        if self.refs[i].fetch_sub(1, Relaxed) == 1 {
            self.fwd_remove(h, claim.space, class, claim.port);
            self.owner[i].store(0, Release);
            self.unpin(claim.space);
        }
    }

    /// Who holds `port` of `ext` for `class`: (internal ip, internal port, uses).
    #[cfg(test)]
    pub(crate) fn holder(&self, ext: u32, class: usize, port: u16) -> Option<(u32, u16, u32)> {
        let s = self.find_space(ext)?;
        let i = Self::slot(s, class, port);
        let o = self.owner[i].load(Acquire);
        (o != 0).then(|| ((o >> 16) as u32, o as u16, self.refs[i].load(Relaxed)))
    }

    /// Ports held in all spaces (each counted once, however many connections use it;
    /// an allocation in progress counts too).
    pub(crate) fn ports_held(&self) -> u64 {
        self.spaces.iter().map(|s| s.key.load(Relaxed) & USERS).sum()
    }

    #[inline]
    fn try_claim(&self, s: u8, class: usize, port: u16, me: u64) -> bool {
        let i = Self::slot(s, class, port);
        if self.owner[i].load(Relaxed) != 0 || self.owner[i].compare_exchange(0, me, Acquire, Relaxed).is_err() {
            return false;
        }
        // The pin `acquire` took becomes this port's count in the space.
        self.refs[i].store(1, Relaxed);
        true
    }

    #[cfg(test)]
    fn find_space(&self, ext: u32) -> Option<u8> {
        self.spaces.iter().position(|s| {
            let k = s.key.load(Acquire);
            k & USED != 0 && (k >> 32) as u32 == ext
        }).map(|i| i as u8)
    }

    /// Finds (or assigns) the space of `ext` and counts one more user in it.
    fn pin(&self, ext: u32) -> Option<u8> {
        if let Some(s) = self.pin_existing(ext) {
            return Some(s);
        }
        let _g = self.space_lock.lock();
        if let Some(s) = self.pin_existing(ext) {
            return Some(s);
        }
        for (i, sp) in self.spaces.iter().enumerate() {
            let k = sp.key.load(Acquire);
            if k & USERS == 0 && sp.key.compare_exchange(k, (ext as u64) << 32 | USED | 1, AcqRel, Relaxed).is_ok() {
                return Some(i as u8);
            }
        }
        None
    }

    fn pin_existing(&self, ext: u32) -> Option<u8> {
        for (i, sp) in self.spaces.iter().enumerate() {
            let mut k = sp.key.load(Acquire);
            while k & USED != 0 && (k >> 32) as u32 == ext {
                match sp.key.compare_exchange_weak(k, k + 1, AcqRel, Acquire) {
                    Ok(_) => return Some(i as u8),
                    Err(cur) => k = cur,
                }
            }
        }
        None
    }

    #[inline]
    fn unpin(&self, s: u8) {
        self.spaces[s as usize].key.fetch_sub(1, Release);
    }

    #[inline]
    fn fwd_buckets(&self, h: u64) -> (usize, usize) {
        let b1 = h as usize & self.fwd_mask;
        let b2 = (mix64(h) >> 20) as usize & self.fwd_mask;
        (b1, if b2 == b1 { b1 ^ 1 } else { b2 })
    }

    #[inline]
    fn fwd_word(h: u64, s: u8, class: usize, port: u16) -> u64 {
        (h >> 32) << 32 | (s as u64) << 24 | VALID | (class as u64) << 16 | port as u64
    }

    fn fwd_find(&self, h: u64, s: u8, class: usize, me: u64) -> Option<u16> {
        let (b1, b2) = self.fwd_buckets(h);
        let want = Self::fwd_word(h, s, class, 0) & !0xffff;
        for b in [b1, b2] {
            for w in &self.fwd[b].w {
                let v = w.load(Acquire);
                if v & !0xffff == want {
                    let p = v as u16;
                    if self.owner[Self::slot(s, class, p)].load(Relaxed) == me {
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    /// Records endpoint → port. When both buckets are full the mapping still works,
    /// only without endpoint independence for this endpoint.
    fn fwd_insert(&self, h: u64, s: u8, class: usize, port: u16) {
        let (b1, b2) = self.fwd_buckets(h);
        let w = Self::fwd_word(h, s, class, port);
        for b in [b1, b2] {
            for slot in &self.fwd[b].w {
                if slot.load(Relaxed) == 0 && slot.compare_exchange(0, w, Release, Relaxed).is_ok() {
                    return;
                }
            }
        }
    }

    fn fwd_remove(&self, h: u64, s: u8, class: usize, port: u16) {
        let (b1, b2) = self.fwd_buckets(h);
        let w = Self::fwd_word(h, s, class, port);
        for b in [b1, b2] {
            for slot in &self.fwd[b].w {
                if slot.compare_exchange(w, 0, Release, Relaxed).is_ok() {
                    return;
                }
            }
        }
    }
}
