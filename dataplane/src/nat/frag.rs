//! Records of first fragments, so later fragments of a translated datagram get the
//! same address rewrite (they carry no ports to find the connection by).
//!
//! Owns: a small fixed table of (source, destination, protocol, IP id) → (new source,
//! new destination, connection, direction), each record valid for [`FRAG_TIMEOUT`]
//! seconds. Buckets of [`WAYS`] records with one spinlock each, taken by workers only
//! (fragments are rare; the lock is held for a few loads and stores). A new record
//! replaces the one with the same key, else a free or expired one, else the one that
//! expires first (an eviction, counted by the caller).
//!
//! Limitation: a record is kept until it expires, not until the last fragment, since
//! fragments may arrive in any order. If the IP id of a (source, destination,
//! protocol) wraps within 30 s, the newer first fragment replaces the record.

use std::cell::UnsafeCell;

use super::sync::{mix64, random_seed, SpinLock};
use super::{ConnRef, Dir};

/// Seconds a first-fragment record lives.
pub(crate) const FRAG_TIMEOUT: u32 = 30;
/// Records per bucket.
const WAYS: usize = 4;

/// What identifies the fragments of one datagram (RFC 791 reassembly key), as they
/// arrive (before translation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FragKey {
    pub src: u32,
    pub dst: u32,
    pub id: u16,
    pub proto: u8,
}

/// How the fragments of a datagram are translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FragXlate {
    pub src: u32,
    pub dst: u32,
    pub conn: ConnRef,
    pub dir: Dir,
}

#[derive(Clone, Copy)]
struct Entry {
    key: FragKey,
    /// 0: empty.
    expires: u32,
    x: FragXlate,
}

const EMPTY: Entry = Entry {
    key: FragKey { src: 0, dst: 0, id: 0, proto: 0 },
    expires: 0,
    x: FragXlate { src: 0, dst: 0, conn: ConnRef { idx: 0, gen: 0 }, dir: Dir::Orig },
};

struct Bucket {
    lock: SpinLock,
    entries: UnsafeCell<[Entry; WAYS]>,
}

// SAFETY: `entries` is only accessed while `lock` is held.
unsafe impl Sync for Bucket {}

/// The fragment table of one connection table. See the module docs.
pub(crate) struct FragTable {
    buckets: Box<[Bucket]>,
    mask: usize,
    seed: u64,
}

impl FragTable {
    /// A table of about `records` records (at least one bucket).
    pub(crate) fn new(records: u32) -> FragTable {
        let n = (records as usize).div_ceil(WAYS).max(1).next_power_of_two();
        FragTable {
            buckets: (0..n).map(|_| Bucket { lock: SpinLock::default(), entries: UnsafeCell::new([EMPTY; WAYS]) }).collect(),
            mask: n - 1,
            seed: random_seed(),
        }
    }

    #[inline]
    fn bucket(&self, k: &FragKey) -> &Bucket {
        let h = mix64(((k.src as u64) << 32 | k.dst as u64) ^ self.seed) ^ mix64((k.id as u64) << 8 | k.proto as u64);
        &self.buckets[h as usize & self.mask]
    }

    /// Records the translation of the datagram `key` at second `now`. Returns true if
    /// a live record of another datagram had to be evicted.
    pub(crate) fn record(&self, key: FragKey, x: FragXlate, now: u32) -> bool {
        let b = self.bucket(&key);
        let _g = b.lock.lock();
        // SAFETY: the bucket lock is held.
        let entries = unsafe { &mut *b.entries.get() };
        let expires = now.saturating_add(FRAG_TIMEOUT).max(1);
        let live = |e: &Entry| e.expires != 0 && e.expires > now;
        let pick = entries
            .iter()
            .position(|e| live(e) && e.key == key)
            .or_else(|| entries.iter().position(|e| !live(e)));
        let (i, evicted) = match pick {
            Some(i) => (i, false),
            None => {
                let mut oldest = 0;
                for (i, e) in entries.iter().enumerate() {
                    if e.expires < entries[oldest].expires {
                        oldest = i;
                    }
                }
                (oldest, true)
            }
        };
        entries[i] = Entry { key, expires, x };
        evicted
    }

    /// The translation recorded for `key`, if it has not expired at `now`.
    pub(crate) fn lookup(&self, key: &FragKey, now: u32) -> Option<FragXlate> {
        let b = self.bucket(key);
        let _g = b.lock.lock();
        // SAFETY: the bucket lock is held.
        let entries = unsafe { &*b.entries.get() };
        entries.iter().find(|e| e.expires != 0 && e.expires > now && e.key == *key).map(|e| e.x)
    }
}
