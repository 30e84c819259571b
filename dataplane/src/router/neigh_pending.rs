//! Packets waiting for a neighbour to be resolved: one fixed-capacity queue per worker
//! (not shared, no atomics). It holds packet handles only; the caller owns the buffers
//! and must transmit or release every handle the queue gives back.
//!
//! Nothing here allocates after `new`, reads a clock or panics. Order is kept: packets
//! to one neighbour are released in the order they were queued.

use std::net::Ipv4Addr;

use super::{Claim, Lookup, NeighCache};
use crate::buf::PktId;
use crate::wire::MacAddr;

/// Default number of packets one worker holds for resolution.
pub const PENDING_CAPACITY: usize = 256;
/// Default number of packets held for one neighbour (Linux's `unres_qlen` idea).
pub const PENDING_PER_NEIGHBOUR: usize = 64;
/// Default time a packet waits before it is dropped.
pub const PENDING_TIMEOUT_MS: u64 = 3_000;

/// A queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Where the neighbour is (`NetId` or `UPLINK_EGRESS`).
    pub egress: u16,
    /// The address being resolved (the next hop, not necessarily the destination).
    pub ip: Ipv4Addr,
    /// The packet (owned by the caller's pool).
    pub pkt: PktId,
    /// When it was queued.
    pub since_ms: u64,
}

/// Why a packet was not queued (drop it and count it; retrying does not help).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFull {
    /// The worker's queue is full.
    Queue,
    /// This neighbour already has its share of the queue.
    Neighbour,
}

/// What became of a queued packet's neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Known now: rewrite the destination MAC and send.
    Resolved(MacAddr),
    /// Resolution failed: drop, answer ICMP host unreachable (rate limited).
    Failed,
}

/// The per-worker queue of packets waiting for ARP (see the module docs).
pub struct PendingQueue {
    items: Box<[Waiting]>,
    len: usize,
    per_neighbour: usize,
    timeout_ms: u64,
}

impl Default for PendingQueue {
    /// [`PENDING_CAPACITY`] packets, [`PENDING_PER_NEIGHBOUR`] per neighbour, waiting
    /// at most [`PENDING_TIMEOUT_MS`].
    fn default() -> PendingQueue {
        PendingQueue::new(PENDING_CAPACITY, PENDING_PER_NEIGHBOUR, PENDING_TIMEOUT_MS)
    }
}

impl PendingQueue {
    /// A queue of `capacity` packets (at least 1), at most `per_neighbour` per
    /// neighbour, each waiting at most `timeout_ms`. Allocates once, here.
    pub fn new(capacity: usize, per_neighbour: usize, timeout_ms: u64) -> PendingQueue {
        let w = Waiting { egress: 0, ip: Ipv4Addr::UNSPECIFIED, pkt: 0, since_ms: 0 };
        PendingQueue { items: vec![w; capacity.max(1)].into_boxed_slice(), len: 0, per_neighbour: per_neighbour.max(1), timeout_ms }
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most packets the queue holds.
    pub fn capacity(&self) -> usize {
        self.items.len()
    }

    /// Queues `pkt` until `ip` on `egress` resolves. On error the caller still owns
    /// `pkt` (drop and count it).
    pub fn push(&mut self, egress: u16, ip: Ipv4Addr, pkt: PktId, now_ms: u64) -> Result<(), QueueFull> {
        if self.len == self.items.len() {
            return Err(QueueFull::Queue);
        }
        let same = self.items[..self.len].iter().filter(|w| w.egress == egress && w.ip == ip).count();
        if same >= self.per_neighbour {
            return Err(QueueFull::Neighbour);
        }
        self.items[self.len] = Waiting { egress, ip, pkt, since_ms: now_ms };
        self.len += 1;
        Ok(())
    }

    /// Keeps the items for which `keep` is true, in order.
    fn retain(&mut self, mut keep: impl FnMut(&Waiting) -> bool) -> usize {
        let mut w = 0;
        for r in 0..self.len {
            let it = self.items[r];
            if keep(&it) {
                self.items[w] = it;
                w += 1;
            }
        }
        let taken = self.len - w;
        self.len = w;
        taken
    }

    /// Gives back (through `f`) every packet whose neighbour is now known (any MAC,
    /// Reachable or Stale) or has failed, in queue order; the rest stay. Returns how
    /// many were given back. One cache lookup per run of packets to one neighbour.
    pub fn take_ready(&mut self, cache: &NeighCache, now_ms: u64, mut f: impl FnMut(Waiting, Resolution)) -> usize {
        let mut last: Option<(u16, Ipv4Addr, Option<Resolution>)> = None;
        self.retain(|w| {
            let r = match last {
                Some((e, ip, r)) if e == w.egress && ip == w.ip => r,
                _ => {
                    let r = match cache.lookup(w.egress, w.ip, now_ms) {
                        Lookup::Hit(m) | Lookup::HitStale(m) => Some(Resolution::Resolved(m)),
                        Lookup::Failed => Some(Resolution::Failed),
                        Lookup::Incomplete | Lookup::Miss => None,
                    };
                    last = Some((w.egress, w.ip, r));
                    r
                }
            };
            match r {
                Some(r) => {
                    f(*w, r);
                    false
                }
                None => true,
            }
        })
    }

    /// Gives back (through `f`) every packet queued more than the timeout ago. The
    /// flag is true for the first packet of each neighbour in this call (answer that
    /// one with ICMP host unreachable; the rest are dropped silently). Returns how
    /// many were given back.
    pub fn take_expired(&mut self, now_ms: u64, mut f: impl FnMut(Waiting, bool)) -> usize {
        const SEEN: usize = 16;
        let mut seen = [(0u16, Ipv4Addr::UNSPECIFIED); SEEN];
        let mut n_seen = 0;
        let timeout = self.timeout_ms;
        self.retain(|w| {
            if now_ms.saturating_sub(w.since_ms) <= timeout {
                return true;
            }
            let key = (w.egress, w.ip);
            // Beyond SEEN distinct neighbours, later ones count as first (the ICMP
            // rate limiter bounds what that costs).
            let first = !seen[..n_seen].contains(&key);
            if first && n_seen < SEEN {
                seen[n_seen] = key;
                n_seen += 1;
            }
            f(*w, first);
            false
        })
    }

    /// Calls `claim_request` once for each neighbour with queued packets (consecutive
    /// duplicates skipped) and reports what it said, so requests are retransmitted
    /// even when no new packet arrives. Call it about every `retrans_ms / 10` while
    /// the queue is not empty; send a request for every claim that `must_send()`.
    pub fn claim_requests(&self, cache: &NeighCache, now_ms: u64, mut f: impl FnMut(u16, Ipv4Addr, Claim)) {
        let mut last: Option<(u16, Ipv4Addr)> = None;
        for w in &self.items[..self.len] {
            if last == Some((w.egress, w.ip)) {
                continue;
            }
            last = Some((w.egress, w.ip));
            f(w.egress, w.ip, cache.claim_request(w.egress, w.ip, now_ms));
        }
    }

    /// The earliest time a queued packet expires, if any (to schedule the next
    /// `take_expired`).
    pub fn next_expiry(&self) -> Option<u64> {
        self.items[..self.len].iter().map(|w| w.since_ms.saturating_add(self.timeout_ms).saturating_add(1)).min()
    }

    /// Gives back every packet of `egress` (the network went away).
    pub fn drain_egress(&mut self, egress: u16, mut f: impl FnMut(Waiting)) -> usize {
        self.retain(|w| {
            if w.egress == egress {
                f(*w);
                false
            } else {
                true
            }
        })
    }

    /// Gives back every packet (shutdown).
    pub fn drain(&mut self, mut f: impl FnMut(Waiting)) -> usize {
        self.retain(|w| {
            f(*w);
            false
        })
    }
}
