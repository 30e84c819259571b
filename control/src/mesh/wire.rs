//! Wire formats of the mesh core. Stateless: types, `encode`, and `decode` that checks
//! every bound before anything else looks at the value.
//!
//! - Control messages ([`Message`]) are JSON objects tagged by `"type"`; the session
//!   layer carries them encrypted between direct neighbours. [`Message::decode`] rejects
//!   input longer than [`MAX_MESSAGE_BYTES`] unparsed, then anything malformed or over
//!   the bounds ([`MAX_PEERS`] entries or links, [`MAX_ADDRS`] addresses), and never
//!   panics. Unknown fields are ignored (a newer peer may add some).
//! - Relayed data starts with a fixed 17-byte [`RelayHeader`] (origin and destination by
//!   [`ShortId`], hop limit); the payload after it is opaque here.
//!
//! Example probe: `{"type":"probe"}`. Example update (ids shortened):
//! `{"type":"update","adverts":[{"age_ms":120,"state":{"origin":"3f…","seq":4294967301,
//! "addrs":["192.0.2.1:6784"],"links":["7a…","c0…"],"can_accept_inbound":true}}]}`

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{PeerId, MAX_ADDRS, MAX_MESSAGE_BYTES, MAX_PEERS};

/// One peer's view of itself, originated by that peer and flooded unchanged: where it
/// can be dialled and which peers it has a working direct session with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// The peer this describes (and the only one that may originate it).
    pub origin: PeerId,
    /// Grows with every origination by `origin`, across restarts (a boot counter in the
    /// high bits, see [`super::Mesh::new`]); a higher number replaces a lower one.
    pub seq: u64,
    /// Underlay addresses the origin can be dialled at.
    pub addrs: Vec<SocketAddr>,
    /// The origin's direct, working sessions, strictly ascending, without the origin.
    pub links: Vec<PeerId>,
    /// False when unsolicited inbound UDP cannot reach the origin: never dial it.
    pub can_accept_inbound: bool,
}

impl LinkState {
    /// Checks the bounds and the canonical form (`links` strictly ascending, no link to
    /// the origin itself).
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.addrs.len() > MAX_ADDRS {
            return Err(DecodeError::TooManyAddrs);
        }
        if self.links.len() > MAX_PEERS {
            return Err(DecodeError::TooManyPeers);
        }
        if !self.links.windows(2).all(|w| w[0] < w[1]) {
            return Err(DecodeError::NotCanonical);
        }
        if self.links.binary_search(&self.origin).is_ok() {
            return Err(DecodeError::SelfLink);
        }
        Ok(())
    }

    /// True when the origin lists `peer` as a direct link.
    pub fn has_link(&self, peer: &PeerId) -> bool {
        self.links.binary_search(peer).is_ok()
    }
}

/// A [`LinkState`] in flight, with how long ago its origin made it (as the sender
/// reckons, so that a copy handed on keeps ageing and dies everywhere at about the
/// same time instead of being revived by a late neighbour).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// Milliseconds since origination; receivers drop it at `max_age_ms`.
    pub age_ms: u64,
    /// The link state.
    pub state: LinkState,
}

/// A control message between direct neighbours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Newer link states to flood on.
    Update {
        /// The link states.
        adverts: Vec<Advert>,
    },
    /// The sender's whole database (possibly split over several messages), sent when a
    /// session comes up. Handled like an update.
    Sync {
        /// The link states.
        adverts: Vec<Advert>,
    },
    /// Every (origin, seq) the sender holds, strictly ascending by origin; the receiver
    /// answers with an update of what is missing or older there.
    Digest {
        /// (origin, seq) pairs.
        have: Vec<(PeerId, u64)>,
    },
    /// Asks for an answer over the direct session: the sender has sent data there and
    /// heard nothing back (see [`super::liveness`]). Answered with a [`Message::ProbeReply`].
    Probe,
    /// The answer to a [`Message::Probe`]. Any message proves the path; this one only
    /// exists to be one.
    ProbeReply,
}

impl Message {
    /// The JSON encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Cannot fail: no maps with non-string keys, no non-finite floats.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and validates untrusted bytes. Never panics; allocation is bounded by
    /// [`MAX_MESSAGE_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        let msg: Message = serde_json::from_slice(bytes).map_err(|_| DecodeError::Malformed)?;
        match &msg {
            Message::Update { adverts } | Message::Sync { adverts } => {
                if adverts.len() > MAX_PEERS {
                    return Err(DecodeError::TooManyPeers);
                }
                for a in adverts {
                    a.state.validate()?;
                }
            }
            Message::Digest { have } => {
                if have.len() > MAX_PEERS {
                    return Err(DecodeError::TooManyPeers);
                }
                if !have.windows(2).all(|w| w[0].0 < w[1].0) {
                    return Err(DecodeError::NotCanonical);
                }
            }
            Message::Probe | Message::ProbeReply => {}
        }
        Ok(msg)
    }
}

/// Why bytes are not a valid message or header. Permanent for those bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Longer than [`MAX_MESSAGE_BYTES`] (the length).
    TooLong(usize),
    /// Shorter than a [`RelayHeader`].
    Truncated,
    /// Not JSON of a known message type.
    Malformed,
    /// More than [`MAX_PEERS`] entries or links.
    TooManyPeers,
    /// More than [`MAX_ADDRS`] addresses.
    TooManyAddrs,
    /// Links or digest entries not strictly ascending.
    NotCanonical,
    /// A link state listing its own origin as a link.
    SelfLink,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLong(n) => write!(f, "{n} bytes is longer than {MAX_MESSAGE_BYTES}"),
            DecodeError::Truncated => write!(f, "shorter than a relay header"),
            DecodeError::Malformed => write!(f, "malformed"),
            DecodeError::TooManyPeers => write!(f, "more than {MAX_PEERS} peers"),
            DecodeError::TooManyAddrs => write!(f, "more than {MAX_ADDRS} addresses"),
            DecodeError::NotCanonical => write!(f, "peers not strictly ascending"),
            DecodeError::SelfLink => write!(f, "link state lists its own origin"),
        }
    }
}

impl std::error::Error for DecodeError {}

mod field {
    use std::ops::Range;
    pub const SRC: Range<usize> = 0..8;
    pub const DST: Range<usize> = 8..16;
    pub const TTL: usize = 16;
}

/// A peer as named in relay headers: the first 8 bytes of its public key. Every byte of
/// header is a byte less for the sandboxes' frames (the network MTU), and 64 bits tell
/// the members of a mesh apart (a collision between two members' keys is refused, see
/// `Mesh::resolve`; making one on purpose means finding a key with a given 64-bit
/// prefix).
pub type ShortId = [u8; 8];

/// A relay header as read from the wire, before its ids are resolved to peers
/// (`Mesh::resolve`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireRelayHeader {
    pub src: ShortId,
    pub dst: ShortId,
    pub ttl: u8,
}

/// The header in front of data sent through the mesh: origin (8 bytes: [`ShortId`]),
/// destination (8 bytes), hop limit (1 byte); 17 bytes, no padding, no version. Relays
/// read it, lower `ttl` and pass the rest on untouched. In memory the ids are whole keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayHeader {
    /// The peer that sent the payload (its session with `dst` encrypted it).
    pub src: PeerId,
    /// The peer the payload is for.
    pub dst: PeerId,
    /// Links the message may still cross; a relay drops it instead of forwarding when
    /// this is 1 or less, so it crosses at most the originator's [`super::Config::ttl`]
    /// links.
    pub ttl: u8,
}

impl RelayHeader {
    /// Encoded length.
    pub const LEN: usize = 17;

    /// Parses the header at the front of `buf`; returns it (ids unresolved) and the
    /// payload after it.
    pub fn parse(buf: &[u8]) -> Result<(WireRelayHeader, &[u8]), DecodeError> {
        if buf.len() < Self::LEN {
            return Err(DecodeError::Truncated);
        }
        let mut src = [0u8; 8];
        let mut dst = [0u8; 8];
        src.copy_from_slice(&buf[field::SRC]);
        dst.copy_from_slice(&buf[field::DST]);
        Ok((WireRelayHeader { src, dst, ttl: buf[field::TTL] }, &buf[Self::LEN..]))
    }

    /// The header as it is on the wire.
    pub fn to_wire(&self) -> WireRelayHeader {
        WireRelayHeader { src: self.src.short_id(), dst: self.dst.short_id(), ttl: self.ttl }
    }

    /// Writes the header into the first [`RelayHeader::LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), DecodeError> {
        if buf.len() < Self::LEN {
            return Err(DecodeError::Truncated);
        }
        buf[field::SRC].copy_from_slice(&self.src.short_id());
        buf[field::DST].copy_from_slice(&self.dst.short_id());
        buf[field::TTL] = self.ttl;
        Ok(())
    }

    /// The encoded header.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[field::SRC].copy_from_slice(&self.src.short_id());
        b[field::DST].copy_from_slice(&self.dst.short_id());
        b[field::TTL] = self.ttl;
        b
    }

    /// Rewrites only the hop limit of an encoded header in place (what a relay does).
    pub fn set_ttl(buf: &mut [u8], ttl: u8) -> Result<(), DecodeError> {
        match buf.get_mut(field::TTL) {
            Some(b) => {
                *b = ttl;
                Ok(())
            }
            None => Err(DecodeError::Truncated),
        }
    }
}
