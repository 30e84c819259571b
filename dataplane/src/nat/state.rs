//! Per-connection protocol state: the TCP state machine (after Linux
//! `nf_conntrack_proto_tcp`, without window tracking), timeouts, and the packed
//! `meta` word a connection slot keeps its mutable state in.
//!
//! Owns: pure functions only. The connection table stores the result in one atomic
//! word and changes it with a compare-and-swap, so both directions of a flow can be
//! handled by different workers without a lock.

use super::{Dir, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// TCP connection states, as Linux conntrack names them (`conntrack -L` shows these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// Not a TCP state a tracked connection is in (placeholder).
    None = 0,
    /// SYN seen in the original direction.
    SynSent = 1,
    /// SYN-ACK seen in the reply direction.
    SynRecv = 2,
    /// Handshake completed (or a mid-stream ACK picked up).
    Established = 3,
    /// A FIN was seen.
    FinWait = 4,
    /// The FIN was acknowledged, the other side has not closed yet.
    CloseWait = 5,
    /// FIN seen from both sides, waiting for the last ACK.
    LastAck = 6,
    /// Closed in order; the tuple may be reopened by a new SYN.
    TimeWait = 7,
    /// Reset (RST) or closed; the tuple may be reopened by a new SYN.
    Close = 8,
    /// Simultaneous open: SYN seen in both directions.
    SynSent2 = 9,
}

impl TcpState {
    const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    /// The state stored as `v` (unknown values read as `None`).
    #[inline]
    pub(crate) fn from_u8(v: u8) -> TcpState {
        TcpState::ALL.get(v as usize).copied().unwrap_or(TcpState::None)
    }

    /// The name Linux uses (`ESTABLISHED`, `TIME_WAIT`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }
}

/// Idle timeouts in seconds: a connection is dropped when more than this many seconds
/// passed since its last packet. Defaults are Linux's (`nf_conntrack_*_timeout_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT and SYN_SENT2 (120).
    pub tcp_syn_sent: u32,
    /// TCP SYN_RECV (60).
    pub tcp_syn_recv: u32,
    /// TCP ESTABLISHED (432000, five days).
    pub tcp_established: u32,
    /// TCP FIN_WAIT (120).
    pub tcp_fin_wait: u32,
    /// TCP CLOSE_WAIT (60).
    pub tcp_close_wait: u32,
    /// TCP LAST_ACK (30).
    pub tcp_last_ack: u32,
    /// TCP TIME_WAIT (120).
    pub tcp_time_wait: u32,
    /// TCP CLOSE, after a RST (10).
    pub tcp_close: u32,
    /// UDP before a reply was seen.
    pub udp: u32,
    /// UDP once packets were seen in both directions.
    pub udp_stream: u32,
    /// ICMP queries (echo and friends).
    pub icmp: u32,
    /// Any other IP protocol (address-only tracking).
    pub generic: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

impl Timeouts {
    /// Timeout of a connection whose packed state is `meta`.
    #[inline]
    pub(crate) fn of(&self, meta: u64) -> u32 {
        match meta::proto(meta) {
            IPPROTO_TCP => match TcpState::from_u8(meta::state(meta)) {
                TcpState::SynSent | TcpState::SynSent2 => self.tcp_syn_sent,
                TcpState::SynRecv => self.tcp_syn_recv,
                TcpState::Established => self.tcp_established,
                TcpState::FinWait => self.tcp_fin_wait,
                TcpState::CloseWait => self.tcp_close_wait,
                TcpState::LastAck => self.tcp_last_ack,
                TcpState::TimeWait => self.tcp_time_wait,
                TcpState::Close | TcpState::None => self.tcp_close,
            },
            IPPROTO_UDP if meta & meta::SEEN_REPLY != 0 => self.udp_stream,
            IPPROTO_UDP => self.udp,
            IPPROTO_ICMP => self.icmp,
            _ => self.generic,
        }
    }
}

/// What a connection is doing, as shown by `conntrack ls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// TCP, with its state.
    Tcp(TcpState),
    /// UDP.
    Udp {
        /// Packets seen in both directions (the longer timeout applies).
        replied: bool,
    },
    /// An ICMP query (echo, timestamp, …).
    Icmp {
        /// The reply was seen.
        replied: bool,
    },
    /// Another IP protocol, tracked by addresses only.
    Other {
        /// Packets seen in both directions.
        replied: bool,
    },
}

impl ConnState {
    /// The state as `conntrack -L` spells it (`ESTABLISHED`, `TIME_WAIT`, …), and
    /// `REPLIED` / `UNREPLIED` for the protocols without states.
    pub fn name(&self) -> &'static str {
        match self {
            ConnState::Tcp(t) => t.as_str(),
            ConnState::Udp { replied } | ConnState::Icmp { replied } | ConnState::Other { replied } => {
                if *replied {
                    "REPLIED"
                } else {
                    "UNREPLIED"
                }
            }
        }
    }

    pub(crate) fn from_meta(m: u64) -> ConnState {
        let replied = m & meta::SEEN_REPLY != 0;
        match meta::proto(m) {
            IPPROTO_TCP => ConnState::Tcp(TcpState::from_u8(meta::state(m))),
            IPPROTO_UDP => ConnState::Udp { replied },
            IPPROTO_ICMP => ConnState::Icmp { replied },
            _ => ConnState::Other { replied },
        }
    }
}

/// Layout of a connection slot's `meta` word (one `AtomicU64`):
///
/// | bits   | field |
/// |--------|-------|
/// | 0..8   | TCP state |
/// | 8..16  | flags: LIVE, SEEN_REPLY, SNAT, DNAT, PORT (a port/id is held in the allocator) |
/// | 16..24 | IP protocol |
/// | 24..32 | allocator address-space index (with PORT) |
/// | 32..64 | generation: bumped when the slot is freed, so a stale reference never matches |
pub(crate) mod meta {
    pub const LIVE: u64 = 1 << 8;
    pub const SEEN_REPLY: u64 = 1 << 9;
    pub const SNAT: u64 = 1 << 10;
    pub const DNAT: u64 = 1 << 11;
    pub const PORT: u64 = 1 << 12;

    #[inline]
    pub fn state(m: u64) -> u8 {
        m as u8
    }
    #[inline]
    pub fn with_state(m: u64, s: u8) -> u64 {
        (m & !0xff) | s as u64
    }
    #[inline]
    pub fn proto(m: u64) -> u8 {
        (m >> 16) as u8
    }
    #[inline]
    pub fn space(m: u64) -> u8 {
        (m >> 24) as u8
    }
    #[inline]
    pub fn gen(m: u64) -> u32 {
        (m >> 32) as u32
    }
    /// A live meta word for a new connection (generation `gen`).
    #[inline]
    pub fn new(gen: u32, proto: u8, state: u8, flags: u64, space: u8) -> u64 {
        ((gen as u64) << 32) | ((space as u64) << 24) | ((proto as u64) << 16) | flags | LIVE | state as u64
    }
}

/// TCP flag bits.
pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const ACK: u8 = 0x10;
const URG: u8 = 0x20;

/// Outcome of a TCP packet for its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TcpStep {
    /// Move to (or stay in) this state and refresh the timeout.
    To(TcpState),
    /// Let the packet pass without changing the state or the timeout.
    Ignore,
    /// Not acceptable in this state: the packet is dropped.
    Invalid,
    /// A SYN on a closed (TIME_WAIT/CLOSE) tuple: the connection starts over in
    /// SYN_SENT with the reply flag cleared (Linux deletes and recreates it).
    Reopen,
}

/// Flag classes of the transition table (Linux `get_conntrack_index`).
#[derive(Clone, Copy)]
enum Class {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

/// The flag combinations Linux accepts (`tcp_valid_flags`), ignoring PSH, ECE and CWR.
#[inline]
fn valid_flags(flags: u8) -> bool {
    const A: [u8; 9] = [SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG];
    A.contains(&(flags & (FIN | SYN | RST | ACK | URG)))
}

#[inline]
fn class(flags: u8) -> Class {
    if flags & RST != 0 {
        Class::Rst
    } else if flags & SYN != 0 {
        if flags & ACK != 0 {
            Class::SynAck
        } else {
            Class::Syn
        }
    } else if flags & FIN != 0 {
        Class::Fin
    } else if flags & ACK != 0 {
        Class::Ack
    } else {
        Class::None
    }
}

// Table entries: a state number, IV (invalid) or IG (ignore).
const NO: u8 = 0;
const SS: u8 = 1;
const SR: u8 = 2;
const ES: u8 = 3;
const FW: u8 = 4;
const CW: u8 = 5;
const LA: u8 = 6;
const TW: u8 = 7;
const CL: u8 = 8;
const S2: u8 = 9;
const IV: u8 = 0xff;
const IG: u8 = 0xfe;

/// `TRANSITIONS[dir][class][old state]`, following Linux's `tcp_conntracks` (columns
/// NO SS SR ES FW CW LA TW CL S2).
const TRANSITIONS: [[[u8; 10]; 6]; 2] = [
    [
        /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* synack */ [IV, IV, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV; 10],
    ],
    [
        /* syn    */ [IV, S2, IV, IV, IV, IV, IV, IV, IV, S2],
        /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV; 10],
    ],
];

/// The state a new connection starts in for its first packet's `flags`: SYN_SENT for
/// a SYN; ESTABLISHED for a plain ACK (mid-stream pickup, Linux `tcp_loose=1`, so
/// connections survive a flush or a restart); `None` (invalid: no connection is made)
/// for anything else (SYN-ACK, FIN, RST, no flags, impossible combinations).
#[inline]
pub(crate) fn tcp_new(flags: u8) -> Option<TcpState> {
    if !valid_flags(flags) {
        return None;
    }
    match TRANSITIONS[0][class(flags) as usize][NO as usize] {
        SS => Some(TcpState::SynSent),
        ES => Some(TcpState::Established),
        _ => None,
    }
}

/// What a packet with `flags` travelling in `dir` does to a connection in `old`.
#[inline]
pub(crate) fn tcp_step(dir: Dir, flags: u8, old: TcpState) -> TcpStep {
    if !valid_flags(flags) {
        return TcpStep::Invalid;
    }
    let c = class(flags);
    let next = TRANSITIONS[dir as usize][c as usize][old as usize];
    match next {
        IV => TcpStep::Invalid,
        IG => TcpStep::Ignore,
        SS if matches!(old, TcpState::TimeWait | TcpState::Close) => TcpStep::Reopen,
        s => TcpStep::To(TcpState::from_u8(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_named_as_conntrack_l_names_them() {
        assert_eq!(ConnState::Tcp(TcpState::TimeWait).name(), "TIME_WAIT");
        assert_eq!(ConnState::Tcp(TcpState::SynSent2).name(), "SYN_SENT2");
        assert_eq!(ConnState::Udp { replied: false }.name(), "UNREPLIED");
        assert_eq!(ConnState::Icmp { replied: true }.name(), "REPLIED");
        for t in TcpState::ALL {
            assert!(ConnState::Tcp(t).name().chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
        }
    }

    #[test]
    fn handshake_and_close() {
        use TcpState::*;
        assert_eq!(tcp_new(SYN), Some(SynSent));
        assert_eq!(tcp_new(ACK), Some(Established));
        for bad in [SYN | ACK, FIN | ACK, RST, 0, SYN | FIN] {
            assert_eq!(tcp_new(bad), Option::None, "flags {bad:#x}");
        }
        assert_eq!(tcp_step(Dir::Reply, SYN | ACK, SynSent), TcpStep::To(SynRecv));
        assert_eq!(tcp_step(Dir::Orig, ACK, SynRecv), TcpStep::To(Established));
        assert_eq!(tcp_step(Dir::Orig, FIN | ACK, Established), TcpStep::To(FinWait));
        assert_eq!(tcp_step(Dir::Reply, ACK, FinWait), TcpStep::To(CloseWait));
        assert_eq!(tcp_step(Dir::Reply, FIN | ACK, CloseWait), TcpStep::To(LastAck));
        assert_eq!(tcp_step(Dir::Orig, ACK, LastAck), TcpStep::To(TimeWait));
        assert_eq!(tcp_step(Dir::Orig, SYN, TimeWait), TcpStep::Reopen);
        assert_eq!(tcp_step(Dir::Reply, RST, Established), TcpStep::To(Close));
        assert_eq!(tcp_step(Dir::Orig, SYN, Close), TcpStep::Reopen);
        assert_eq!(tcp_step(Dir::Orig, SYN | ACK, SynSent), TcpStep::Invalid);
        assert_eq!(tcp_step(Dir::Orig, SYN, Established), TcpStep::Ignore);
        assert_eq!(tcp_step(Dir::Reply, SYN, SynSent), TcpStep::To(SynSent2));
        assert_eq!(tcp_step(Dir::Reply, SYN | ACK, SynSent2), TcpStep::To(SynRecv));
        assert_eq!(tcp_step(Dir::Orig, 0, Established), TcpStep::Invalid);
    }

    #[test]
    fn timeouts_follow_state() {
        let t = Timeouts::default();
        let m = |p: u8, s: TcpState, f: u64| meta::new(0, p, s as u8, f, 0);
        assert_eq!(t.of(m(IPPROTO_TCP, TcpState::SynSent, 0)), 120);
        assert_eq!(t.of(m(IPPROTO_TCP, TcpState::Established, 0)), 432_000);
        assert_eq!(t.of(m(IPPROTO_TCP, TcpState::Close, 0)), 10);
        assert_eq!(t.of(m(IPPROTO_UDP, TcpState::None, 0)), 30);
        assert_eq!(t.of(m(IPPROTO_UDP, TcpState::None, meta::SEEN_REPLY)), 120);
        assert_eq!(t.of(m(IPPROTO_ICMP, TcpState::None, 0)), 30);
        assert_eq!(t.of(m(47, TcpState::None, 0)), 600);
    }
}
