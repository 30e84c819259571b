//! Connection tracking and NAT for IPv4: the sans-IO core of Docker-style masquerade,
//! published ports and hairpinning, in the spirit of Linux `nf_conntrack` + `nf_nat`.
//!
//! # What it does
//!
//! [`process`] takes one IPv4 packet (inside any framing; the caller gives the offset
//! of the IP header), finds or creates its connection in a shared [`ConnTable`],
//! advances the protocol state, translates the packet in place, and returns a
//! [`Verdict`]. Which translation a *new* flow gets is the caller's decision, passed
//! in as a policy closure returning an [`Action`] (see [`nat_action`] for the usual
//! Docker rules). Nothing here knows networks, ports or routes.
//!
//! - **Masquerade** ([`Action::Snat`]): the source becomes the given address; the source
//!   port (ICMP: the echo identifier) comes from a port allocator with
//!   endpoint-independent mapping (RFC 4787 REQ-1: one internal (proto, ip, port) gets
//!   one external port for every destination while any of its connections lives) and
//!   port preservation when free (REQ-3), else a port from [`NatConfig::port_range`].
//!   External ports are owned exclusively, so allocations never collide.
//! - **Published ports** ([`Action::Dnat`], [`DnatTable`]) and **hairpin**
//!   ([`Action::DnatSnat`]: DNAT plus SNAT to an address the caller picks, so the
//!   reply comes back through the switch).
//! - **Tracking**: TCP with Linux's state machine and default timeouts (no window
//!   checks, like `nf_conntrack_tcp_be_liberal`; mid-stream pickup of an ACK like
//!   `nf_conntrack_tcp_loose=1`); UDP (30 s, 120 s once replied); ICMP queries (30 s;
//!   echo, timestamp, information, address mask); other IP protocols by address
//!   (600 s). Invalid packets (a TCP flow starting with SYN-ACK/FIN/RST, impossible
//!   flags, a TCP packet the state table calls invalid such as an ACK in SYN_SENT, an
//!   ICMP reply without a request, …) get [`Verdict::Drop`]`(`[`Reason::Invalid`]`)`
//!   and change nothing. Packets Linux ignores (a SYN on an established connection)
//!   pass without changing the state or the timeout. A SYN on a TIME_WAIT or CLOSE
//!   connection reopens it in place (same mapping).
//! - **Filtering** is the caller's: a packet that matches no connection is a new flow
//!   and goes to the policy, so an unsolicited packet to a masqueraded port is whatever
//!   the policy says for new inbound flows ([`nat_action`] denies it: address- and
//!   port-dependent filtering, like Linux).
//! - **ICMP errors** (unreachable, time exceeded, parameter problem, redirect, source
//!   quench) quoting a tracked packet are *related*: the outer addresses and the quoted
//!   header (addresses, ports or identifier, inner IP checksum, inner L4 checksum when
//!   quoted) are translated back, and the ICMP checksum is recomputed.
//! - **Fragments**: the first fragment is translated by its connection and leaves a
//!   record (source, destination, protocol, IP id) → new addresses in a small bounded
//!   table (30 s); later fragments get the same address rewrite. A later fragment that
//!   arrives before its first one is dropped ([`Reason::FragmentNoState`]).
//! - **Checksums** are updated incrementally (RFC 1624): IPv4 header, TCP, UDP (a zero
//!   UDP checksum stays zero), ICMP. With `csum_partial` (a virtio-net `NEEDS_CSUM`
//!   frame, also every GSO super-frame) the L4 checksum field holds the pseudo-header
//!   sum, not complemented: address changes update it as such, port changes leave it
//!   alone (the device sums the ports later). GSO frames are otherwise translated like
//!   any other frame (headers only).
//!
//! # Concurrency
//!
//! One [`ConnTable`] is shared by every worker (`Arc<ConnTable>`); the two directions of
//! a flow may be handled by different workers at the same time.
//!
//! - **Connection slots**: a fixed array allocated at construction. A slot holds the
//!   two tuples (written once, when the connection is made), a `meta` word (protocol
//!   state, flags, generation), the flush epoch it was made in, and the last-seen
//!   second. Each slot has its own sequence counter (a seqlock): creation and deletion
//!   make it odd while they write; readers retry when it is odd or changed.
//! - **Index**: a hash table from tuple to (slot, direction), two entries per
//!   connection. Buckets are one cache line of 8 words; a tuple hashes to a *shard*
//!   (a contiguous group of buckets) and to two candidate buckets inside it.
//! - **Lookups** (every packet) are lock-free: read the bucket words, read the slot
//!   under its seqlock, compare the tuple. A reader that races with a change may miss;
//!   a miss goes to the creation path, which re-checks under the shard lock, so a
//!   transient miss never creates a duplicate.
//! - **Per-packet writes** are rare: the last-seen second only when it changed; the
//!   `meta` word only when the state or a flag changes, with a compare-and-swap (so
//!   workers never lock for state transitions, and the generation in the word makes a
//!   CAS on a recycled slot fail).
//! - **Creation and deletion** take the spinlocks of the (at most two) shards of the
//!   connection's tuples, in shard order. These locks are taken by workers and by the
//!   housekeeping thread ([`ConnTable::sweep`]) only, for a few hundred nanoseconds,
//!   never by the control plane. Free slots are a lock-free stack (tagged head).
//! - **Control** reads with [`ConnTable::dump`] (seqlock read side, skips a slot it
//!   cannot read consistently after some retries; never blocks a worker) and flushes
//!   with [`ConnTable::flush`]: one atomic increment of the flush epoch. Connections of
//!   an older epoch count as absent everywhere and are reclaimed lazily, by the next
//!   packet of their flow (which creates a fresh connection under the current policy),
//!   by [`ConnTable::sweep`], or when the table is full.
//! - **Expiry**: nothing runs on timers. A connection idle for longer than its timeout
//!   counts as absent; [`ConnTable::sweep`]`(now, budget)` removes expired and flushed
//!   connections, `budget` slots per call, from a housekeeping thread.
//! - **Port allocator**: per external address and protocol, an array of owner words;
//!   a port is taken with a compare-and-swap (so two allocations can never get the
//!   same port), with a reference count per port and an endpoint-independent-mapping
//!   index guarded by striped spinlocks (workers and housekeeping only).
//! - **Fragment table**: small buckets with a spinlock each (workers only).
//!
//! Bounded everywhere: a full table refuses new connections ([`Reason::TableFull`])
//! while existing ones keep working; an exhausted port range refuses
//! ([`Reason::PortsExhausted`]); a full fragment table evicts its oldest record. The
//! caller counts drops per [`Reason`]; the table also keeps counters of its slow-path
//! events ([`ConnTable::counters`]).
//!
//! # Using it
//!
//! Workers call [`process`] for every IPv4 packet that crosses the NAT boundary (the
//! caller decides which: typically every routed packet), passing the offset of the IP
//! header, whether the frame is CHECKSUM_PARTIAL, the policy for new flows, and the
//! current second; they count [`Verdict::Drop`] reasons in their own counters. One
//! housekeeping thread calls [`ConnTable::sweep`] regularly. Control builds
//! [`DnatTable`]s, lists connections with [`ConnTable::dump`] and flushes.
//!
//! # Limits
//!
//! IPv4 only. No TCP window tracking, no sequence-number adjustment, no ALGs (FTP, …).
//! A UDP length field is not checked against the IP length (GSO super-frames differ).
//! Later fragments that arrive before their first fragment are dropped, not queued.
//! An ICMP error is translated only when it arrives whole (not fragmented, not
//! CHECKSUM_PARTIAL).
//!
//! # Hot-path contract
//!
//! [`process`] never allocates, never makes a system call (the spinlocks only yield
//! after thousands of spins, which needs a descheduled lock holder), never reads a
//! clock (`now` is passed in, in seconds of any monotonic clock shared by all callers),
//! and never panics on any input: malformed packets return [`Verdict::Drop`].

#![warn(missing_docs)]

mod alloc;
mod conntrack;
mod dnat;
mod frag;
mod process;
mod state;
mod sync;
mod translate;

#[cfg(test)]
mod tests_alloc;
#[cfg(test)]
mod tests_concurrency;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_nat;
#[cfg(test)]
mod tests_track;
#[cfg(test)]
mod tests_util;

use std::net::Ipv4Addr;

pub use conntrack::{ConnInfo, ConnTable, NatCounters};
pub use dnat::{nat_action, DnatError, DnatRule, DnatTable, PolicyInput};
pub use process::process;
pub use state::{ConnState, TcpState, Timeouts};

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// One direction of a flow, as seen on the wire.
///
/// For TCP and UDP, `sport`/`dport` are the ports. For ICMP queries, `sport` is the
/// identifier and `dport` the ICMP type (8 for an echo request, 0 for its reply, …), so
/// a request and a reply between the same hosts with the same identifier are
/// different tuples. For other protocols both are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port; ICMP: the query identifier.
    pub sport: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port; ICMP: the message type.
    pub dport: u16,
}

impl Tuple {
    /// A tuple from its parts.
    pub fn new(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
        Tuple { proto, src, sport, dst, dport }
    }

    /// The tuple of a packet going the other way: addresses swapped; ports swapped
    /// (ICMP: same identifier, request type ↔ reply type).
    #[inline]
    pub fn inverse(&self) -> Tuple {
        if self.proto == IPPROTO_ICMP {
            let ty = icmp_counterpart(self.dport as u8).unwrap_or(self.dport as u8);
            Tuple { proto: self.proto, src: self.dst, sport: self.sport, dst: self.src, dport: ty as u16 }
        } else {
            Tuple { proto: self.proto, src: self.dst, sport: self.dport, dst: self.src, dport: self.sport }
        }
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.proto {
            IPPROTO_TCP | IPPROTO_UDP => write!(
                f,
                "{} {}:{} -> {}:{}",
                if self.proto == IPPROTO_TCP { "tcp" } else { "udp" },
                self.src,
                self.sport,
                self.dst,
                self.dport
            ),
            IPPROTO_ICMP => write!(f, "icmp {} -> {} type {} id {}", self.src, self.dst, self.dport, self.sport),
            p => write!(f, "proto {} {} -> {}", p, self.src, self.dst),
        }
    }
}

/// The reply type of an ICMP query type and the other way round (echo 8/0, timestamp
/// 13/14, information 15/16, address mask 17/18).
#[inline]
pub(crate) fn icmp_counterpart(ty: u8) -> Option<u8> {
    match ty {
        8 => Some(0),
        0 => Some(8),
        13 | 15 | 17 => Some(ty + 1),
        14 | 16 | 18 => Some(ty - 1),
        _ => None,
    }
}

/// True for ICMP query types that open a flow (echo, timestamp, information, mask request).
#[inline]
pub(crate) fn icmp_is_request(ty: u8) -> bool {
    matches!(ty, 8 | 13 | 15 | 17)
}

/// True for ICMP error types, which quote the packet they are about.
#[inline]
pub(crate) fn icmp_is_error(ty: u8) -> bool {
    matches!(ty, 3 | 4 | 5 | 11 | 12)
}

/// Direction of a packet relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dir {
    /// The direction of the packet that created the connection.
    Orig = 0,
    /// The other direction.
    Reply = 1,
}

impl Dir {
    /// The other direction.
    #[inline]
    pub fn other(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// A reference to one connection: its slot and the slot's generation, so a reference
/// kept after the connection ended never finds a later connection in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

/// What to do with a new flow. Decided by the caller's policy for the first packet of
/// a flow only; later packets follow the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Track without translating.
    None,
    /// Refuse the flow: [`Reason::Denied`], no connection is made.
    Deny,
    /// Masquerade: source address becomes `to`; source port (ICMP identifier) from the
    /// allocator (endpoint-independent, preserved when free). Other protocols: address only.
    Snat {
        /// The external (uplink) address.
        to: Ipv4Addr,
    },
    /// Published port: destination becomes `to`:`port` (the port applies to TCP and
    /// UDP only; other protocols get the address only).
    Dnat {
        /// The sandbox address.
        to: Ipv4Addr,
        /// The sandbox port.
        port: u16,
    },
    /// Hairpin: [`Action::Dnat`] plus [`Action::Snat`] to `snat`.
    DnatSnat {
        /// The sandbox address.
        to: Ipv4Addr,
        /// The sandbox port.
        port: u16,
        /// The address the source becomes (the gateway or uplink address).
        snat: Ipv4Addr,
    },
}

/// How the packet relates to the connection table (like Linux's ctstate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    /// This packet created the connection.
    New,
    /// A packet of an existing connection.
    Established,
    /// An ICMP error about a packet of an existing connection.
    Related,
    /// A non-first fragment, translated like the first fragment of its datagram.
    Fragment,
}

/// Result of [`process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the packet (translated in place when `changed`).
    Forward {
        /// The packet bytes were rewritten (addresses, ports, checksums).
        changed: bool,
        /// Direction of the packet in its connection.
        dir: Dir,
        /// The connection.
        conn: ConnRef,
        /// How the packet relates to the connection.
        ct: CtState,
    },
    /// Drop the packet; the caller counts the reason.
    Drop(Reason),
}

/// Why [`process`] refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// The frame ends before a header (or before the length the IP header claims).
    Truncated,
    /// Not IPv4, or an impossible header field.
    Malformed,
    /// New flow refused: the connection table is full.
    TableFull,
    /// New flow refused: no free port/identifier (or no free external-address slot).
    PortsExhausted,
    /// New flow refused: its reply tuple is already used by another connection.
    Clash,
    /// A packet the connection state does not accept (TCP flags, ICMP reply without
    /// request, a flow to itself).
    Invalid,
    /// The policy returned [`Action::Deny`].
    Denied,
    /// A non-first fragment with no record of its first fragment.
    FragmentNoState,
    /// An ICMP error that quotes no tracked packet.
    Unrelated,
    /// An ICMP error with a wrong checksum.
    BadChecksum,
    /// Something not handled: an ICMP type that is neither query nor error, an ICMP
    /// error with `csum_partial` or split into fragments.
    Unsupported,
}

impl Reason {
    /// Every reason, for counter arrays indexed by `reason as usize`.
    pub const ALL: [Reason; 11] = [
        Reason::Truncated,
        Reason::Malformed,
        Reason::TableFull,
        Reason::PortsExhausted,
        Reason::Clash,
        Reason::Invalid,
        Reason::Denied,
        Reason::FragmentNoState,
        Reason::Unrelated,
        Reason::BadChecksum,
        Reason::Unsupported,
    ];

    /// A short static description, for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Truncated => "truncated",
            Reason::Malformed => "malformed ipv4",
            Reason::TableFull => "conntrack table full",
            Reason::PortsExhausted => "nat ports exhausted",
            Reason::Clash => "nat tuple clash",
            Reason::Invalid => "invalid for conntrack state",
            Reason::Denied => "denied by policy",
            Reason::FragmentNoState => "fragment without first fragment",
            Reason::Unrelated => "icmp error for no connection",
            Reason::BadChecksum => "bad icmp checksum",
            Reason::Unsupported => "unsupported",
        }
    }
}

/// Sizes and limits of a [`ConnTable`], fixed at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Most connections tracked at once (at least 1, at most 2^30).
    pub max_conns: u32,
    /// Inclusive range masquerade picks external ports from when the source port is
    /// taken. Swapped if given backwards. ICMP identifiers always use 0..=65535.
    pub port_range: (u16, u16),
    /// Records of first fragments kept for the later fragments (at least 4).
    pub frag_table: u32,
    /// Distinct SNAT addresses (uplink and hairpin addresses) in use at once (1..=255).
    pub snat_addrs: u32,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

impl Default for NatConfig {
    fn default() -> NatConfig {
        NatConfig { max_conns: 262_144, port_range: (1024, 65535), frag_table: 1024, snat_addrs: 16, timeouts: Timeouts::default() }
    }
}
