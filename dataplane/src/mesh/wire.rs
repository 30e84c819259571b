//! Mesh message formats: fixed layouts, cheap checks, MAC1, and the dispatch helper.
//!
//! Owns: the byte layout of the four message types, the constants that size buffers, and
//! the checks that cost nothing (length, type, reserved bytes) plus MAC1 (one BLAKE2s),
//! which a receiver runs before any Diffie-Hellman. It does not own keys, sessions or
//! clocks. No function here allocates or panics on any input.
//!
//! All integers are little-endian (as in WireGuard). The first byte is the type; bytes
//! 1..4 are reserved and must be zero.
//!
//! ```text
//! initiation (type 1, 132 bytes)
//!   0 type | 1..4 reserved | 4..8 sender index | 8..116 Noise IK message 1 | 116..132 mac1
//!   Noise message 1 = e (32) | encrypted s (32 + 16) | encrypted timestamp (12 + 16)
//!   timestamp = TAI64N (8 bytes seconds + 2^62, 4 bytes nanoseconds, big-endian)
//! response (type 2, 76 bytes)
//!   0 type | 1..4 reserved | 4..8 sender index | 8..12 receiver index
//!   | 12..60 Noise IK message 2 = e (32) | encrypted empty payload (16) | 60..76 mac1
//! cookie reply (type 3): reserved; never sent by this implementation, dropped on receipt
//! transport data (type 4, 32 + n bytes)
//!   0 type | 1..4 reserved | 4..8 receiver index | 8..16 counter
//!   | 16..16+n ChaCha20-Poly1305(plaintext) | 16 byte tag
//!   plaintext = empty (keepalive) or payload kind (1 byte) | payload
//! ```
//!
//! MAC1 is keyed BLAKE2s-128 over every byte before the mac1 field, with key
//! `BLAKE2s-256(LABEL_MAC1 || receiver's static public key)`: a receiver drops messages
//! from anyone who does not know its public key without doing any DH. It is deliberately
//! not keyed with the mesh PSK: a value a passive observer can check against password
//! guesses would turn the password into an offline dictionary target.

use std::ops::Range;

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};

use super::DropReason;

type Field = Range<usize>;

/// Byte ranges shared by all message types.
pub mod field {
    use super::Field;
    /// Message type.
    pub const TYPE: usize = 0;
    /// Reserved bytes, zero on the wire.
    pub const RESERVED: Field = 1..4;
    /// Initiation and response: the sender's index. Transport: the receiver's index.
    pub const INDEX: Field = 4..8;
    /// Response: the receiver's (initiator's) index.
    pub const RESP_RECEIVER: Field = 8..12;
    /// Transport: the 64-bit counter (explicit nonce).
    pub const COUNTER: Field = 8..16;
}

/// Handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Cookie / busy reply (reserved, not implemented).
pub const TYPE_COOKIE: u8 = 3;
/// Transport data.
pub const TYPE_TRANSPORT: u8 = 4;

/// Length of a mac1 field.
pub const MAC_LEN: usize = 16;
/// Length of an AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of the initiation's timestamp (TAI64N).
pub const TIMESTAMP_LEN: usize = 12;
/// Length of a Noise message 1 (e, encrypted s, encrypted timestamp).
pub const NOISE_INIT_LEN: usize = 32 + 32 + TAG_LEN + TIMESTAMP_LEN + TAG_LEN;
/// Length of a Noise message 2 with an empty payload (e, payload tag).
pub const NOISE_RESP_LEN: usize = 32 + TAG_LEN;
/// Length of a handshake initiation.
pub const INITIATION_LEN: usize = 8 + NOISE_INIT_LEN + MAC_LEN;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = 12 + NOISE_RESP_LEN + MAC_LEN;
/// Length of the transport header (type, reserved, receiver index, counter).
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Length of an empty transport message (keepalive / confirmation).
pub const KEEPALIVE_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Bytes a payload costs on the wire: header, kind byte, tag (33).
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + 1 + TAG_LEN;
/// Largest message this module makes or accepts: the largest UDP payload over IPv4.
pub const MAX_MESSAGE_LEN: usize = 65507;
/// Largest payload one transport message carries (65474 bytes). A 64 KiB GSO
/// super-frame must be segmented first: it would not fit one UDP datagram anyway.
pub const MAX_PAYLOAD: usize = MAX_MESSAGE_LEN - TRANSPORT_OVERHEAD;
/// A buffer of this size holds any handshake message or keepalive (`poll`'s output).
pub const MIN_CONTROL_BUF: usize = INITIATION_LEN;

/// Bits of a session index that name the peer slot (the rest are random per session).
pub const SLOT_BITS: u32 = 20;
/// Random bits of a session index.
pub const INDEX_RANDOM_BITS: u32 = 32 - SLOT_BITS;
/// Number of peer slots: at most this many peers per node.
pub const MAX_PEERS: u32 = 1 << SLOT_BITS;

const LABEL_MAC1: &[u8] = b"vswitchd-mesh-mac1----";

/// Which peer a session index belongs to. The caller assigns each `Peer` a slot and keeps
/// a slot-indexed table (`Vec<Option<…>>`); every session index the peer makes carries
/// the slot in its top 20 bits and 12 random bits below, so dispatch is an array lookup
/// with no hashing and no registration step when sessions change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerSlot(u32);

impl PeerSlot {
    /// A slot, or `None` if `n >= MAX_PEERS`.
    pub const fn new(n: u32) -> Option<PeerSlot> {
        if n < MAX_PEERS {
            Some(PeerSlot(n))
        } else {
            None
        }
    }

    /// The slot number (`< MAX_PEERS`).
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The slot a session index belongs to.
    pub const fn of_index(index: u32) -> PeerSlot {
        PeerSlot(index >> INDEX_RANDOM_BITS)
    }

    /// A session index in this slot with the given random low bits.
    pub(crate) const fn index(self, random: u32) -> u32 {
        (self.0 << INDEX_RANDOM_BITS) | (random & ((1 << INDEX_RANDOM_BITS) - 1))
    }
}

/// What a received message is, decided from its first 8 bytes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A handshake initiation: hand it to the node's `Responder`.
    Initiation,
    /// A response or transport message for the peer in `slot`: hand it to that `Peer`.
    Peer {
        /// The slot named by the receiver index.
        slot: PeerSlot,
        /// The receiver index itself.
        index: u32,
    },
    /// Not worth looking at: drop and count.
    Drop(DropReason),
}

/// Routes a received message without touching anything but its header. Never panics.
pub fn route(msg: &[u8]) -> Route {
    if msg.len() < 8 || msg.len() > MAX_MESSAGE_LEN || msg[field::RESERVED] != [0, 0, 0] {
        return Route::Drop(DropReason::Malformed);
    }
    let (off, ok) = match msg[field::TYPE] {
        TYPE_INITIATION => return Route::Initiation,
        TYPE_RESPONSE => (field::RESP_RECEIVER, msg.len() == RESPONSE_LEN),
        TYPE_TRANSPORT => (field::INDEX, msg.len() >= KEEPALIVE_LEN),
        TYPE_COOKIE => return Route::Drop(DropReason::Unexpected),
        _ => return Route::Drop(DropReason::Malformed),
    };
    if !ok {
        return Route::Drop(DropReason::Malformed);
    }
    let index = read_u32(msg, off);
    Route::Peer { slot: PeerSlot::of_index(index), index }
}

/// Reads a little-endian u32 at `r` (which must lie inside `b`; callers check lengths).
#[inline]
pub(crate) fn read_u32(b: &[u8], r: Field) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(r) {
        if s.len() == 4 {
            a.copy_from_slice(s);
        }
    }
    u32::from_le_bytes(a)
}

/// Reads a little-endian u64 at `r` (which must lie inside `b`; callers check lengths).
#[inline]
pub(crate) fn read_u64(b: &[u8], r: Field) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(r) {
        if s.len() == 8 {
            a.copy_from_slice(s);
        }
    }
    u64::from_le_bytes(a)
}

/// Writes the common 4-byte prefix (type + zero reserved bytes). `b.len() >= 4`.
#[inline]
pub(crate) fn write_type(b: &mut [u8], ty: u8) {
    b[0] = ty;
    b[field::RESERVED].fill(0);
}

/// Checks the common prefix and exact length of a handshake message.
pub(crate) fn check_handshake(msg: &[u8], ty: u8, len: usize) -> Result<(), DropReason> {
    if msg.len() != len || msg[0] != ty || msg[field::RESERVED] != [0, 0, 0] {
        return Err(DropReason::Malformed);
    }
    Ok(())
}

/// The key for MAC1 of messages sent *to* the holder of `public`.
#[derive(Clone)]
pub struct Mac1Key([u8; 32]);

impl Mac1Key {
    /// Derives the MAC1 key of messages addressed to `public`.
    pub fn new(public: &[u8; 32]) -> Mac1Key {
        let mut h = Blake2s256::new();
        Digest::update(&mut h, LABEL_MAC1);
        Digest::update(&mut h, public);
        Mac1Key(h.finalize().into())
    }

    fn mac(&self, data: &[u8]) -> Blake2sMac<U16> {
        let mut m = <Blake2sMac<U16> as KeyInit>::new((&self.0).into());
        Mac::update(&mut m, data);
        m
    }

    /// Writes mac1 into the last 16 bytes of `msg`, over everything before them.
    pub(crate) fn seal(&self, msg: &mut [u8]) {
        let Some(split) = msg.len().checked_sub(MAC_LEN) else { return };
        let tag = self.mac(&msg[..split]).finalize_fixed();
        msg[split..].copy_from_slice(&tag);
    }

    /// Checks mac1 (last 16 bytes of `msg`) in constant time.
    pub(crate) fn verify(&self, msg: &[u8]) -> bool {
        let Some(split) = msg.len().checked_sub(MAC_LEN) else { return false };
        self.mac(&msg[..split]).verify_slice(&msg[split..]).is_ok()
    }
}

impl std::fmt::Debug for Mac1Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mac1Key(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_layout() {
        assert_eq!(INITIATION_LEN, 132);
        assert_eq!(RESPONSE_LEN, 76);
        assert_eq!(KEEPALIVE_LEN, 32);
        assert_eq!(TRANSPORT_OVERHEAD, 33);
        assert_eq!(MAX_PAYLOAD, 65474);
    }

    #[test]
    fn slot_round_trip() {
        let s = PeerSlot::new(MAX_PEERS - 1).unwrap();
        assert!(PeerSlot::new(MAX_PEERS).is_none());
        for r in [0, 1, 0xfff, 0xffff_ffff] {
            assert_eq!(PeerSlot::of_index(s.index(r)), s);
        }
        assert_eq!(PeerSlot::new(5).unwrap().index(0x1234), (5 << 12) | 0x234);
    }

    #[test]
    fn route_cheap_checks() {
        assert_eq!(route(&[]), Route::Drop(DropReason::Malformed));
        let mut t = [0u8; KEEPALIVE_LEN];
        t[0] = TYPE_TRANSPORT;
        t[4..8].copy_from_slice(&((7u32 << 12) | 9).to_le_bytes());
        assert_eq!(route(&t), Route::Peer { slot: PeerSlot::new(7).unwrap(), index: (7 << 12) | 9 });
        assert_eq!(route(&t[..31]), Route::Drop(DropReason::Malformed));
        t[2] = 1;
        assert_eq!(route(&t), Route::Drop(DropReason::Malformed));
        t[2] = 0;
        t[0] = TYPE_COOKIE;
        assert_eq!(route(&t), Route::Drop(DropReason::Unexpected));
        t[0] = 9;
        assert_eq!(route(&t), Route::Drop(DropReason::Malformed));
        let mut r = [0u8; RESPONSE_LEN];
        r[0] = TYPE_RESPONSE;
        r[8..12].copy_from_slice(&(3u32 << 12).to_le_bytes());
        assert!(matches!(route(&r), Route::Peer { index, .. } if index == 3 << 12));
        assert_eq!(route(&r[..75]), Route::Drop(DropReason::Malformed));
        let mut i = [0u8; 8];
        i[0] = TYPE_INITIATION;
        assert_eq!(route(&i), Route::Initiation);
    }

    #[test]
    fn mac1_detects_any_change() {
        let k = Mac1Key::new(&[7; 32]);
        let mut m = [0x55u8; INITIATION_LEN];
        k.seal(&mut m);
        assert!(k.verify(&m));
        assert!(!Mac1Key::new(&[8; 32]).verify(&m));
        for i in 0..m.len() {
            let mut x = m;
            x[i] ^= 1;
            assert!(!k.verify(&x), "flip at {i} not detected");
        }
        assert!(!k.verify(&m[..10]));
    }
}
