//! The IPv4 forwarding information base: an immutable longest-prefix-match table that
//! control builds ([`FibBuilder`]) and publishes inside the tables snapshot; workers
//! only read it ([`Fib::lookup`]).
//!
//! Owns: the routes and the lookup structure. It does not resolve next hops to MAC
//! addresses (that is `neigh`), knows nothing of ports, and is never modified after
//! `build`: a change means building a new `Fib` and publishing a new snapshot.
//!
//! # Structure: DIR-16-8-8
//!
//! A three-level multibit trie with prefix expansion (Gupta et al., "Routing lookups
//! in hardware at memory access speeds", with a 16-8-8 split instead of 24-8):
//!
//! - `l1`: 65,536 entries indexed by the top 16 bits of the address (256 KiB);
//! - `l2`: chunks of 256 entries indexed by bits 15..8, one per /16 that holds a
//!   route longer than /16;
//! - `l3`: chunks of 256 entries indexed by bits 7..0, one per /24 that holds a route
//!   longer than /24.
//!
//! Each entry is a `u32`: 0 for "no route", `CHUNK | i` for "look in chunk `i` of the
//! next level", otherwise a route index + 1. A lookup is at most three dependent loads
//! plus one read of the route, whatever the number of routes or of distinct prefix
//! lengths, with no hashing and no branches that depend on the table's contents beyond
//! "is this a chunk". The alternative (one hash map per prefix length, probed longest
//! first through a bitmap of lengths present) costs one hash and one probe per length
//! present, up to 33, and its worst case grows with the routes control installs; the
//! trie's cost does not.
//!
//! Memory: 256 KiB + 1 KiB per /16 that holds a longer route + 1 KiB per /24 that
//! holds a longer route. A host with a few hundred routes uses well under 1 MiB; the
//! pathological worst case (`MAX_ROUTES` host routes in distinct /16s) is 128 MiB,
//! reported by [`Fib::memory_bytes`] so control can refuse it.
//!
//! Build: routes are applied shortest first, so every chunk is created after all
//! shorter routes covering it were written and inherits their value; a longer route
//! then overwrites its own range only. Building is control-path work (allocates).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Largest number of routes a `Fib` holds; `FibBuilder::add` refuses more.
pub const MAX_ROUTES: usize = 65536;

const L1_LEN: usize = 1 << 16;
const CHUNK: u32 = 1 << 31;
const CHUNK_LEN: usize = 256;

/// Where packets to a network reached through a gateway leave the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Egress {
    /// A network (bridge domain) the switch is attached to, by `NetId`.
    Network(u16),
    /// The uplink towards the outside world.
    Uplink,
}

/// What a route says to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// The destination is on an attached network (by `NetId`): resolve the destination
    /// address itself with ARP on that network.
    Connected {
        /// The network id (`NetId`).
        net: u16,
    },
    /// Forward to `gateway` (resolved with ARP on `egress`).
    Via {
        /// The next router's address; must be on `egress`'s subnet.
        gateway: Ipv4Addr,
        /// Where the gateway is.
        egress: Egress,
    },
    /// Addressed to the switch itself (gateway addresses): local delivery.
    Local,
    /// Drop silently.
    Blackhole,
    /// Drop and answer ICMP destination unreachable (network unreachable).
    Unreachable,
}

/// One route as installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Network address (host bits zero).
    pub prefix: [u8; 4],
    /// Prefix length, 0..=32.
    pub len: u8,
    /// What to do with packets it matches.
    pub next_hop: NextHop,
}

/// Why a route was not accepted. None of these is helped by retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FibError {
    /// Prefix length above 32.
    BadLength(u8),
    /// The prefix has bits set beyond its length (e.g. 10.0.0.1/24): say 10.0.0.0/24.
    HostBitsSet {
        /// The prefix as given.
        prefix: [u8; 4],
        /// Its length.
        len: u8,
    },
    /// `MAX_ROUTES` routes are already present.
    TooManyRoutes,
}

impl fmt::Display for FibError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FibError::BadLength(l) => write!(f, "prefix length {l} is above 32"),
            FibError::HostBitsSet { prefix, len } => {
                write!(f, "{}/{len} has host bits set (the network is {}/{len})", Ipv4Addr::from(*prefix), Ipv4Addr::from(u32::from_be_bytes(*prefix) & mask(*len)))
            }
            FibError::TooManyRoutes => write!(f, "route table full ({MAX_ROUTES} routes)"),
        }
    }
}

impl std::error::Error for FibError {}

#[inline]
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32) as u32)
    }
}

/// Collects routes (control path; allocates) and builds a [`Fib`]. Adding a prefix
/// that is already present replaces its next hop.
#[derive(Clone, Debug, Default)]
pub struct FibBuilder {
    /// Keyed by (length, network) so iteration is the build order: shortest first.
    routes: BTreeMap<(u8, u32), NextHop>,
}

impl FibBuilder {
    /// An empty builder.
    pub fn new() -> FibBuilder {
        FibBuilder::default()
    }

    /// Adds (or replaces) `prefix/len → nh`. Errors: a length above 32, host bits set,
    /// or a new prefix beyond `MAX_ROUTES`. Returns `self` for chaining.
    pub fn add(&mut self, prefix: [u8; 4], len: u8, nh: NextHop) -> Result<&mut FibBuilder, FibError> {
        if len > 32 {
            return Err(FibError::BadLength(len));
        }
        let p = u32::from_be_bytes(prefix);
        if p & !mask(len) != 0 {
            return Err(FibError::HostBitsSet { prefix, len });
        }
        if self.routes.len() >= MAX_ROUTES && !self.routes.contains_key(&(len, p)) {
            return Err(FibError::TooManyRoutes);
        }
        self.routes.insert((len, p), nh);
        Ok(self)
    }

    /// Removes `prefix/len`; returns its next hop if it was present.
    pub fn remove(&mut self, prefix: [u8; 4], len: u8) -> Option<NextHop> {
        self.routes.remove(&(len, u32::from_be_bytes(prefix)))
    }

    /// Number of routes collected.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no route was added.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Builds the lookup table (allocates about 256 KiB plus 1 KiB per chunk; see the
    /// module docs). The builder is left as it was, so control can keep editing it.
    pub fn build(&self) -> Fib {
        let mut l1: Box<[u32; L1_LEN]> = match vec![0u32; L1_LEN].into_boxed_slice().try_into() {
            Ok(b) => b,
            Err(_) => unreachable!("vec of L1_LEN"),
        };
        let mut l2: Vec<u32> = Vec::new();
        let mut l3: Vec<u32> = Vec::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for (&(len, p), &nh) in &self.routes {
            routes.push(Route { prefix: p.to_be_bytes(), len, next_hop: nh });
            let leaf = routes.len() as u32; // index + 1, at most MAX_ROUTES < CHUNK
            let hi = (p >> 16) as usize;
            if len <= 16 {
                let n = 1usize << (16 - len);
                l1[hi..hi + n].fill(leaf);
                continue;
            }
            let c2 = descend(&mut l1[hi], &mut l2);
            let mid = c2 * CHUNK_LEN + ((p >> 8) & 0xff) as usize;
            if len <= 24 {
                let n = 1usize << (24 - len);
                l2[mid..mid + n].fill(leaf);
                continue;
            }
            let c3 = descend(&mut l2[mid], &mut l3);
            let lo = c3 * CHUNK_LEN + (p & 0xff) as usize;
            let n = 1usize << (32 - len);
            l3[lo..lo + n].fill(leaf);
        }
        Fib { l1, l2: l2.into_boxed_slice(), l3: l3.into_boxed_slice(), routes: routes.into_boxed_slice() }
    }
}

/// Makes `slot` point to a chunk of the next level (creating one that inherits the
/// slot's current value) and returns the chunk's index.
fn descend(slot: &mut u32, level: &mut Vec<u32>) -> usize {
    if *slot & CHUNK != 0 {
        return (*slot & !CHUNK) as usize;
    }
    let c = level.len() / CHUNK_LEN;
    level.resize(level.len() + CHUNK_LEN, *slot);
    *slot = CHUNK | c as u32;
    c
}

/// An immutable IPv4 longest-prefix-match table (see the module docs). Shared by all
/// workers through the tables snapshot; `Send + Sync`, never written after `build`.
#[derive(Clone)]
pub struct Fib {
    l1: Box<[u32; L1_LEN]>,
    l2: Box<[u32]>,
    l3: Box<[u32]>,
    /// Sorted by (length, prefix); entry values are indexes into this + 1.
    routes: Box<[Route]>,
}

impl Default for Fib {
    /// A table without routes: every lookup misses.
    fn default() -> Fib {
        FibBuilder::new().build()
    }
}

impl fmt::Debug for Fib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fib")
            .field("routes", &self.routes.len())
            .field("l2_chunks", &(self.l2.len() / CHUNK_LEN))
            .field("l3_chunks", &(self.l3.len() / CHUNK_LEN))
            .finish()
    }
}

impl Fib {
    /// The route with the longest prefix containing `ip`: its next hop and prefix
    /// length. Never panics, never allocates; at most four dependent memory reads.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<(NextHop, u8)> {
        self.lookup_u32(u32::from(ip))
    }

    /// [`Fib::lookup`] for an address as a host-order integer (`u32::from_be_bytes`
    /// of the header bytes).
    #[inline]
    pub fn lookup_u32(&self, ip: u32) -> Option<(NextHop, u8)> {
        let mut e = self.l1[(ip >> 16) as usize];
        if e & CHUNK != 0 {
            // Chunk indexes are written by `build` and always in range.
            e = self.l2[((e & !CHUNK) as usize) * CHUNK_LEN + ((ip >> 8) & 0xff) as usize];
            if e & CHUNK != 0 {
                e = self.l3[((e & !CHUNK) as usize) * CHUNK_LEN + (ip & 0xff) as usize];
            }
        }
        let r = self.routes.get((e as usize).checked_sub(1)?)?;
        Some((r.next_hop, r.len))
    }

    /// Every route, sorted by (prefix length, prefix). For dumps and for rebuilding.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// A builder holding this table's routes (control edits it and builds a new `Fib`).
    pub fn to_builder(&self) -> FibBuilder {
        let mut b = FibBuilder::new();
        for r in self.routes.iter() {
            b.routes.insert((r.len, u32::from_be_bytes(r.prefix)), r.next_hop);
        }
        b
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there is no route at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Bytes of lookup structure (levels and routes), for limits and stats.
    pub fn memory_bytes(&self) -> usize {
        (L1_LEN + self.l2.len() + self.l3.len()) * 4 + std::mem::size_of_val(&*self.routes)
    }
}

#[cfg(test)]
#[path = "tests_fib.rs"]
mod tests;
