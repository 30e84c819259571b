//! The encrypted mesh's topology and membership core: who is in the mesh, how this host
//! reaches every other one (over a direct session, or relayed through peers), and whom
//! to dial next. Weave Net's model: a host joins by naming one member, learns every
//! other member from it, and dials them; a host it cannot reach directly is reached
//! through a peer that can.
//!
//! Sans-IO and deterministic (the quinn-proto shape): no sockets, no threads, no clock
//! reads, no randomness but a seeded generator. Time is `u64` milliseconds on any
//! monotonic clock the caller likes, passed into every call that needs it.
//!
//! # Pieces
//!
//! - [`wire`]: the control messages ([`Message`]: link-state updates, full syncs,
//!   digests) as bounded JSON, and the fixed 17-byte [`RelayHeader`].
//! - [`topology`]: the link-state database and the shortest-path computation.
//! - [`gossip`]: [`Mesh`], the state machine the daemon drives: reliable flooding with
//!   sequence numbers and ages, anti-entropy digests, dial scheduling with backoff,
//!   routes and events.
//! - [`liveness`]: [`Liveness`], one direct path's detector: data sent and nothing
//!   back is probed ([`Mesh::probe`]), and declared down ([`Mesh::link_down`]) when the
//!   probes go unanswered, so that routes move to relays in seconds.
//!
//! # Driving a [`Mesh`] (what the lead's I/O loop does)
//!
//! Inputs (`handle_*` and mutators): [`Mesh::add_peer`] for configured members,
//! [`Mesh::link_up`] / [`Mesh::link_down`] when an encrypted session to a peer comes up
//! or dies, [`Mesh::handle_message`] for a control message received over a session,
//! [`Mesh::handle_timeout`] when [`Mesh::poll_timeout`] is reached, [`Mesh::probe`] when
//! a neighbour's [`Liveness`] asks for a probe. After any input,
//! drain the outputs: [`Mesh::poll_transmit`] (control messages for direct
//! neighbours), [`Mesh::wants_dial`] (sessions to start), [`Mesh::poll_event`]
//! (membership and route changes). Data travelling through the mesh carries a
//! [`RelayHeader`]; [`Mesh::relay`] says whether to deliver, forward or drop it.
//!
//! # Trust
//!
//! Link states are not signed: a member can lie about its neighbours. Only hosts that
//! hold a session (an authenticated, trusted key) ever talk to the core, so this is the
//! trust model of OSPF inside one area, and of Weave Net.

pub mod gossip;
pub mod liveness;
pub mod topology;
pub mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use gossip::{Mesh, MeshStats, RelayAction, RelayDrop};
pub use liveness::{Action as LivenessAction, Liveness, LivenessConfig, PathState};
pub use topology::Hop;
pub use wire::{Advert, DecodeError, LinkState, Message, RelayHeader, ShortId, WireRelayHeader};

/// Hard bound on the number of peers (link-state origins, this host included) a mesh
/// holds, and on the number of links one link state may list.
pub const MAX_PEERS: usize = 512;
/// Hard bound on the underlay addresses one peer may advertise.
pub const MAX_ADDRS: usize = 16;
/// Hard bound on the size of one encoded control message; [`Message::decode`] rejects
/// anything longer before parsing it.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bound on the events queued for the caller; older ones are dropped (and counted in
/// [`MeshStats::events_dropped`]) when the caller does not poll.
pub const MAX_EVENTS: usize = 4096;

/// A mesh peer: its 32-byte static public key (the Noise/X25519 key its sessions are
/// authenticated with). Displayed and serialised as 64 lowercase hex digits; `Debug`
/// shows the first 8 digits only. Owns no state; ordering is by bytes and is the
/// deterministic tie-breaker everywhere in the mesh.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// How relay headers name this peer: the key's first 8 bytes.
    pub fn short_id(&self) -> ShortId {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.0[..8]);
        s
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = String::with_capacity(8);
        for b in &self.0[..4] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl From<[u8; 32]> for PeerId {
    fn from(b: [u8; 32]) -> PeerId {
        PeerId(b)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

/// Why a string is not a [`PeerId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParsePeerIdError {
    /// Not exactly 64 characters.
    Length(usize),
    /// A character that is not a hex digit.
    NotHex,
}

impl fmt::Display for ParsePeerIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParsePeerIdError::Length(n) => write!(f, "peer id has {n} characters, want 64 hex digits"),
            ParsePeerIdError::NotHex => write!(f, "peer id is not hex"),
        }
    }
}

impl std::error::Error for ParsePeerIdError {}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;

    /// Parses 64 hex digits (either case).
    fn from_str(s: &str) -> Result<PeerId, ParsePeerIdError> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(ParsePeerIdError::Length(s.len()));
        }
        fn nibble(c: u8) -> Result<u8, ParsePeerIdError> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(ParsePeerIdError::NotHex),
            }
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
        }
        Ok(PeerId(out))
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PeerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a peer id (64 hex digits)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PeerId, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Tunables of one [`Mesh`]. All times are milliseconds. [`Config::default`] suits a
/// real deployment; tests shrink the times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// False for a host behind a firewall or NAT that drops unsolicited inbound UDP:
    /// others never dial it, it dials them.
    pub can_accept_inbound: bool,
    /// A link state not refreshed for this long is dropped (its origin disappears).
    pub max_age_ms: u64,
    /// This host re-originates its own link state this often (must be well below
    /// `max_age_ms`, so that one or two lost floods do not age it out).
    pub refresh_ms: u64,
    /// Each direct neighbour gets a digest (origin, seq of every entry) this often and
    /// answers with whatever the digest shows to be missing or old: repairs lost floods.
    pub digest_ms: u64,
    /// First retry delay of a failed dial; doubles per attempt…
    pub backoff_min_ms: u64,
    /// …up to this.
    pub backoff_max_ms: u64,
    /// A session coming up this soon after we asked to dial the peer counts as ours
    /// (outbound); otherwise the peer dialled us (inbound).
    pub dial_timeout_ms: u64,
    /// After an inbound session from a peer that cannot accept inbound goes down, we may
    /// dial it back at the address it came from for this long (its firewall still has
    /// the pinhole); afterwards only it dials.
    pub inbound_grace_ms: u64,
    /// Hop limit put into [`RelayHeader`]s this host originates.
    pub ttl: u8,
    /// Bound on the link-state database (at most [`MAX_PEERS`]).
    pub max_peers: usize,
    /// Target size of one control message; syncs are split to stay under it (a single
    /// link state always goes out whole; at most [`MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            can_accept_inbound: true,
            max_age_ms: 60_000,
            refresh_ms: 15_000,
            digest_ms: 5_000,
            backoff_min_ms: 1_000,
            backoff_max_ms: 60_000,
            dial_timeout_ms: 10_000,
            inbound_grace_ms: 30_000,
            ttl: 16,
            max_peers: MAX_PEERS,
            max_message_bytes: 60_000,
        }
    }
}

impl Config {
    /// Checks the relations between the fields; the error names the broken one.
    pub fn validate(&self) -> Result<(), MeshError> {
        let bad = |why| Err(MeshError::Config(why));
        if self.max_age_ms == 0 || self.refresh_ms == 0 || self.digest_ms == 0 {
            return bad("max_age_ms, refresh_ms and digest_ms must be positive");
        }
        if self.refresh_ms.saturating_mul(2) > self.max_age_ms {
            return bad("refresh_ms must be at most half of max_age_ms");
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return bad("backoff_min_ms must be positive and at most backoff_max_ms");
        }
        if self.ttl == 0 {
            return bad("ttl must be positive");
        }
        if self.max_peers < 2 || self.max_peers > MAX_PEERS {
            return bad("max_peers must be between 2 and MAX_PEERS");
        }
        if self.max_message_bytes < 1024 || self.max_message_bytes > MAX_MESSAGE_BYTES {
            return bad("max_message_bytes must be between 1024 and MAX_MESSAGE_BYTES");
        }
        Ok(())
    }
}

/// What the core tells the caller, in the order it happened (see [`Mesh::poll_event`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Event {
    /// A peer became known (its link state arrived, or a session with it came up), with
    /// the underlay addresses it advertises (or the one its session came from).
    PeerAppeared(PeerId, Vec<SocketAddr>),
    /// A peer is no longer known: its link state aged out and no session with it is up.
    PeerGone(PeerId),
    /// The next hop towards a peer changed: `Some(p)` with `p` the peer itself means a
    /// direct session, another peer means relayed through it, `None` means unreachable.
    RouteChanged(PeerId, Option<PeerId>),
}

/// One reachable peer in the route table (`vswitchctl mesh peers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The destination peer.
    pub dst: PeerId,
    /// The direct neighbour to hand its traffic to (`dst` itself when direct).
    pub next_hop: PeerId,
    /// Links on the path (1 = direct).
    pub hops: u32,
}

impl Route {
    /// True when the destination is a direct neighbour.
    pub fn is_direct(&self) -> bool {
        self.dst == self.next_hop
    }
}

/// Everything the core knows about one peer, for `vswitchctl mesh peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// The peer.
    pub id: PeerId,
    /// Addresses it advertises (or, before its link state arrived, the configured and
    /// observed ones).
    pub addrs: Vec<SocketAddr>,
    /// From its link state; `None` before that arrived.
    pub can_accept_inbound: Option<bool>,
    /// Sequence number of its link state we hold.
    pub seq: Option<u64>,
    /// Underlay address of the direct session with it, if one is up.
    pub link: Option<SocketAddr>,
    /// Next hop and path length, if reachable.
    pub route: Option<Hop>,
    /// Configured with [`Mesh::add_peer`] (dialled for ever, never forgotten).
    pub configured: bool,
}

/// Why the core refused an input. None of these changes state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshError {
    /// A [`Config`] field is out of range (permanent: fix the configuration).
    Config(&'static str),
    /// A control message did not decode (permanent for that message; the sender's
    /// later floods and digests still count).
    Decode(DecodeError),
    /// A control message from a peer we have no session with (a race with
    /// [`Mesh::link_down`]; drop it).
    NotNeighbour(PeerId),
    /// The peer is this host.
    Myself,
    /// More direct sessions than [`MAX_PEERS`] (retry after some go down).
    TooManyLinks,
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshError::Config(why) => write!(f, "mesh config: {why}"),
            MeshError::Decode(e) => write!(f, "mesh message: {e}"),
            MeshError::NotNeighbour(p) => write!(f, "mesh message from {} without a session", p.short()),
            MeshError::Myself => write!(f, "mesh peer is this host"),
            MeshError::TooManyLinks => write!(f, "mesh has too many direct sessions"),
        }
    }
}

impl std::error::Error for MeshError {}
