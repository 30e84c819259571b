//! Counters. Each worker owns one `WorkerStats` and is its only writer: updates are a
//! relaxed load + store of the worker's own cache lines (no locked instructions, no
//! cache line shared with another writer). Control reads them at any time with relaxed
//! loads and sums over workers (`StatsSnapshot`).
//!
//! Per-port counters live in chunks of 256 ports allocated when a port is added (never
//! on the packet path); a port id's counters are zeroed when the id is (re)assigned.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use crate::buf::PortId;

macro_rules! named_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// Stable snake_case name used in `vswitchctl stats` and JSON.
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
    };
}

named_enum! {
    /// Why a packet was dropped. Every drop is counted under exactly one reason.
    pub enum DropReason {
        /// Shorter than its headers claim.
        Truncated => "truncated",
        /// Source MAC is multicast or all-zero.
        BadSrcMac => "bad_src_mac",
        /// Destination learned on the port the frame came from.
        SameSegment => "same_segment",
        /// The ingress port is not (or no longer) in the tables.
        PortUnknown => "port_unknown",
        /// The egress port is not open on this worker (being added or removed).
        PortDown => "port_down",
        /// No free packet buffer.
        NoBuffer => "no_buffer",
        /// The kernel refused the frame on transmit (queue full).
        TxFull => "tx_full",
        /// Transmit failed for another reason.
        TxError => "tx_error",
        /// Addressed to the gateway but nothing there handles it (no routing yet).
        NoRoute => "no_route",
        /// Malformed or unsupported packet addressed to the gateway.
        BadLocal => "bad_local",
        /// Could not segment or checksum for a port without offloads.
        OffloadFailed => "offload_failed",
        /// Larger than the receive buffer.
        Oversize => "oversize",
        /// Dropped by isolation policy (between networks, --internal, --icc=false, or
        /// unsolicited from the uplink).
        Isolated => "isolated",
        /// TTL ran out (an ICMP time exceeded was sent, rate permitting).
        TtlExceeded => "ttl_exceeded",
        /// Larger than the egress MTU with DF set (fragmentation needed was sent), or
        /// without DF and impossible to fragment.
        TooBig => "too_big",
        /// The connection table is full: new flow refused.
        ConntrackFull => "conntrack_full",
        /// No NAT port left for a new flow.
        NatExhausted => "nat_exhausted",
        /// Refused by connection tracking (invalid state, unrelated ICMP error, …).
        ConntrackInvalid => "conntrack_invalid",
        /// A non-first fragment without its first fragment.
        FragmentNoState => "fragment_no_state",
        /// Waiting for ARP: queue full.
        NeighborPending => "neighbor_pending",
        /// ARP resolution failed.
        NeighborFailed => "neighbor_failed",
        /// Not IPv4/ARP where only those are routed (IPv6 routing comes later).
        NotIpv4 => "not_ipv4",
        /// A DHCP message the gateway does not answer (RELEASE, DECLINE, a REQUEST
        /// for another server) from a port it serves by DHCP.
        DhcpIgnored => "dhcp_ignored",
        /// Addressed to the switch but no local service answers it.
        LocalUnhandled => "local_unhandled",
        /// A tunnel packet from a host or for a network this host does not know.
        TunnelUnknown => "tunnel_unknown",
    }
}

named_enum! {
    /// Things worth counting that are not drops.
    pub enum Event {
        FdbInsert => "fdb_insert",
        FdbMove => "fdb_move",
        /// A MAC could not be learned because the table was full (frame still forwarded).
        FdbFull => "fdb_full",
        Flood => "flood",
        ArpReply => "arp_reply",
        /// ARP requests from local ports answered for endpoints on other hosts.
        ArpProxied => "arp_proxied",
        /// Neighbour solicitations from local ports answered for endpoints on other hosts.
        NdProxied => "nd_proxied",
        IcmpEchoReply => "icmp_echo_reply",
        /// Software segmentation of a GSO frame for a port without offloads.
        SwGso => "sw_gso",
        /// Software checksum completion for a port without offloads.
        SwCsum => "sw_csum",
        /// Tunnel segments merged into a super-frame (GRO).
        Coalesced => "coalesced",
        Routed => "routed",
        NatNew => "nat_new",
        ArpRequestSent => "arp_request_sent",
        NeighLearned => "neigh_learned",
        IcmpErrorSent => "icmp_error_sent",
        IcmpErrorLimited => "icmp_error_rate_limited",
        RxBatches => "rx_batches",
        /// Frames the kernel gave to another worker because theirs was behind (fanout
        /// rollover on AF_PACKET ports, the steering program on TAPs), counted by the
        /// worker whose they were.
        Rollover => "rollover",
        Wakeups => "wakeups",
        /// Routed packets larger than the egress MTU without DF, sent as fragments.
        Fragmented => "fragmented",
        /// DHCP answers of the gateway to ports with `--dhcp`.
        DhcpOffer => "dhcp_offer",
        DhcpAck => "dhcp_ack",
        DhcpNak => "dhcp_nak",
    }
}

/// Counters of one port on one worker.
#[derive(Default)]
#[repr(align(64))]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub rx_dropped: AtomicU64,
    /// Times a worker found the port's interface gone (a TAP or veth deleted behind the
    /// switch's back) and stopped polling it; control re-creates what it owns.
    pub gone: AtomicU64,
}

/// A plain copy of port counters (summed over workers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub rx_dropped: u64,
    pub gone: u64,
}

impl PortTotals {
    pub fn add(&mut self, o: &PortTotals) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_dropped += o.tx_dropped;
        self.rx_dropped += o.rx_dropped;
        self.gone += o.gone;
    }
}

const CHUNK: usize = 256;
const CHUNKS: usize = 65536 / CHUNK;

/// Single-writer increment.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// All counters of one worker. Written only by that worker.
pub struct WorkerStats {
    ports: Box<[OnceLock<Box<[PortCounters]>>]>,
    drops: [AtomicU64; DropReason::COUNT],
    events: [AtomicU64; Event::COUNT],
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerStats {
    pub fn new() -> WorkerStats {
        WorkerStats {
            ports: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Makes sure counters for `port` exist and zeroes them (port id (re)assigned).
    /// Control path only: may allocate.
    pub fn reset_port(&self, port: PortId) {
        let chunk = self.ports[port as usize / CHUNK].get_or_init(|| (0..CHUNK).map(|_| PortCounters::default()).collect());
        let c = &chunk[port as usize % CHUNK];
        for a in [&c.rx_packets, &c.rx_bytes, &c.tx_packets, &c.tx_bytes, &c.tx_dropped, &c.rx_dropped, &c.gone] {
            a.store(0, Relaxed);
        }
    }

    /// Counters of `port`, if they were set up with `reset_port`.
    #[inline]
    pub fn port(&self, port: PortId) -> Option<&PortCounters> {
        self.ports[port as usize / CHUNK].get().map(|c| &c[port as usize % CHUNK])
    }

    #[inline]
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        bump(&self.drops[reason as usize], n);
    }

    #[inline]
    pub fn event(&self, e: Event, n: u64) {
        bump(&self.events[e as usize], n);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    pub fn events(&self, e: Event) -> u64 {
        self.events[e as usize].load(Relaxed)
    }

    pub fn port_totals(&self, port: PortId) -> PortTotals {
        match self.port(port) {
            None => PortTotals::default(),
            Some(c) => PortTotals {
                rx_packets: c.rx_packets.load(Relaxed),
                rx_bytes: c.rx_bytes.load(Relaxed),
                tx_packets: c.tx_packets.load(Relaxed),
                tx_bytes: c.tx_bytes.load(Relaxed),
                tx_dropped: c.tx_dropped.load(Relaxed),
                rx_dropped: c.rx_dropped.load(Relaxed),
                gone: c.gone.load(Relaxed),
            },
        }
    }
}

/// Sum of the drop and event counters of several workers.
#[derive(Clone, Debug, Default)]
pub struct StatsSnapshot {
    pub drops: Vec<(DropReason, u64)>,
    pub events: Vec<(Event, u64)>,
}

impl StatsSnapshot {
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> StatsSnapshot {
        let mut d = [0u64; DropReason::COUNT];
        let mut e = [0u64; Event::COUNT];
        for w in workers {
            for r in DropReason::ALL {
                d[*r as usize] += w.drops(*r);
            }
            for x in Event::ALL {
                e[*x as usize] += w.events(*x);
            }
        }
        StatsSnapshot {
            drops: DropReason::ALL.iter().map(|r| (*r, d[*r as usize])).collect(),
            events: Event::ALL.iter().map(|x| (*x, e[*x as usize])).collect(),
        }
    }

    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops.iter().find(|(x, _)| *x == r).map(|x| x.1).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        let s = WorkerStats::new();
        assert!(s.port(5).is_none());
        s.reset_port(5);
        bump(&s.port(5).unwrap().rx_packets, 3);
        assert_eq!(s.port_totals(5).rx_packets, 3);
        s.reset_port(5);
        assert_eq!(s.port_totals(5).rx_packets, 0);
        s.count_drop(DropReason::Truncated, 2);
        let t = StatsSnapshot::sum([&s, &s]);
        assert_eq!(t.drop_count(DropReason::Truncated), 4);
        assert_eq!(DropReason::Truncated.as_str(), "truncated");
        s.reset_port(65535);
    }
}
