//! The link-state database and shortest paths over it. Pure data: no timers of its own
//! (expiry instants are stored, the caller says when "now" is), no messages, no events.
//!
//! Edges: this host's live sessions (it knows them first-hand), plus every pair of
//! other peers that list *each other* (the bidirectional check of OSPF: a one-sided
//! claim, e.g. a stale link state of a dead peer, is no edge). Paths are shortest in
//! hops; among equal ones the first hop with the smallest [`PeerId`] wins, which every
//! host computes the same way, so converged hop-by-hop forwarding has no loops.

use std::collections::BTreeMap;

use serde::Serialize;

use super::wire::{Advert, LinkState};
use super::PeerId;

/// A stored link state and when it expires (local clock, ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The link state.
    pub state: LinkState,
    /// Instant at which it is dropped unless replaced; `u64::MAX` for this host's own.
    pub expires_at: u64,
}

/// What [`Topology::install`] did with a link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// First link state of that origin.
    New,
    /// Replaced an older one.
    Newer,
    /// Same sequence number as the stored one: ignored.
    Same,
    /// Older than the stored one: ignored (the sender should get ours).
    Older,
    /// The database is full: a new origin was refused.
    Full,
}

/// How a destination is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The direct neighbour to send to (the destination itself when direct).
    pub next_hop: PeerId,
    /// Links on the path (1 = direct).
    pub hops: u32,
}

/// The link-state database of one host: at most `max_peers` origins, this host's own
/// entry included. Owns no sessions and computes no events.
#[derive(Clone, Debug)]
pub struct Topology {
    me: PeerId,
    max_peers: usize,
    entries: BTreeMap<PeerId, Entry>,
}

impl Topology {
    /// An empty database for host `me`.
    pub fn new(me: PeerId, max_peers: usize) -> Topology {
        Topology { me, max_peers, entries: BTreeMap::new() }
    }

    /// The stored entry of `origin`.
    pub fn get(&self, origin: &PeerId) -> Option<&Entry> {
        self.entries.get(origin)
    }

    /// The stored link state of `origin`.
    pub fn state(&self, origin: &PeerId) -> Option<&LinkState> {
        self.entries.get(origin).map(|e| &e.state)
    }

    /// Every stored origin (this host included), ascending.
    pub fn origins(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.entries.keys()
    }

    /// Every stored link state, ascending by origin.
    pub fn states(&self) -> impl Iterator<Item = &LinkState> + '_ {
        self.entries.values().map(|e| &e.state)
    }

    /// Number of stored origins (this host included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stores this host's own link state (it never expires).
    pub fn set_own(&mut self, state: LinkState) {
        debug_assert_eq!(state.origin, self.me);
        self.entries.insert(self.me, Entry { state, expires_at: u64::MAX });
    }

    /// Stores `state` if it is newer than what is held for its origin. The caller has
    /// validated it and keeps this host's own origin out.
    pub fn install(&mut self, state: LinkState, expires_at: u64) -> Install {
        let full = self.entries.len() >= self.max_peers;
        match self.entries.get_mut(&state.origin) {
            Some(e) if state.seq > e.state.seq => {
                *e = Entry { state, expires_at };
                Install::Newer
            }
            Some(e) if state.seq == e.state.seq => Install::Same,
            Some(_) => Install::Older,
            None if full => Install::Full,
            None => {
                self.entries.insert(state.origin, Entry { state, expires_at });
                Install::New
            }
        }
    }

    /// Drops every entry expired at `now`; returns their origins.
    pub fn expire(&mut self, now: u64) -> Vec<PeerId> {
        let gone: Vec<PeerId> = self.entries.iter().filter(|(_, e)| e.expires_at <= now).map(|(p, _)| *p).collect();
        for p in &gone {
            self.entries.remove(p);
        }
        gone
    }

    /// The earliest expiry instant.
    pub fn next_expiry(&self) -> Option<u64> {
        self.entries.values().map(|e| e.expires_at).filter(|&t| t != u64::MAX).min()
    }

    /// The entry of `origin` as an advert at `now`, aged so that it expires at the
    /// receiver when it expires here; `None` if absent or already expired.
    pub fn advert(&self, origin: &PeerId, now: u64, max_age_ms: u64) -> Option<Advert> {
        let e = self.entries.get(origin)?;
        let age_ms = if e.expires_at == u64::MAX {
            0
        } else if now < e.expires_at {
            max_age_ms.saturating_sub(e.expires_at - now)
        } else {
            return None;
        };
        Some(Advert { age_ms, state: e.state.clone() })
    }

    /// (origin, seq) of every entry, ascending by origin.
    pub fn digest(&self) -> Vec<(PeerId, u64)> {
        self.entries.iter().map(|(p, e)| (*p, e.state.seq)).collect()
    }

    /// Shortest paths from this host, given its live direct sessions (`my_links`,
    /// ascending). Destinations without a path are absent.
    pub fn routes(&self, my_links: &[PeerId]) -> BTreeMap<PeerId, Hop> {
        let mut routes: BTreeMap<PeerId, Hop> = BTreeMap::new();
        let mut frontier: Vec<PeerId> = Vec::new();
        for &n in my_links {
            if n != self.me && routes.insert(n, Hop { next_hop: n, hops: 1 }).is_none() {
                frontier.push(n);
            }
        }
        let mut hops = 1;
        while !frontier.is_empty() {
            hops += 1;
            // Next layer: each node takes the smallest first hop among its predecessors.
            let mut layer: BTreeMap<PeerId, PeerId> = BTreeMap::new();
            for u in &frontier {
                let first = routes[u].next_hop;
                for v in self.neighbours(u) {
                    if v == self.me || routes.contains_key(&v) {
                        continue;
                    }
                    layer.entry(v).and_modify(|f| *f = (*f).min(first)).or_insert(first);
                }
            }
            frontier.clear();
            for (v, first) in layer {
                routes.insert(v, Hop { next_hop: first, hops });
                frontier.push(v);
            }
        }
        routes
    }

    /// Peers `u` has a bidirectional edge with, according to the stored link states
    /// (this host excluded: its edges come from its live sessions).
    fn neighbours<'a>(&'a self, u: &'a PeerId) -> impl Iterator<Item = PeerId> + 'a {
        let links: &[PeerId] = self.entries.get(u).map(|e| e.state.links.as_slice()).unwrap_or(&[]);
        links.iter().copied().filter(move |v| *v != self.me && self.entries.get(v).is_some_and(|e| e.state.has_link(u)))
    }
}
