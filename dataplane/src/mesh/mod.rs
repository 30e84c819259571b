//! The encrypted host-to-host mesh, without I/O: Noise handshakes, transport keys, replay
//! windows, rekey/keepalive/retry timers and handshake flood protection (WireGuard's
//! shape, built on `snow`).
//!
//! Owns: the cryptographic session state of every remote host and the formats of the
//! messages hosts exchange over the underlay. It does not own sockets, endpoint
//! addresses, peer tables or clocks: every input (bytes, source address, time) is passed
//! in, every output is written into a caller buffer and described by the return value.
//! Nothing here reads a clock, spawns a thread or makes a syscall, except that key and
//! index generation ask the OS for random bytes (once per handshake). Sealing and opening
//! transport messages never allocate; handshakes may. No function panics on any input.
//!
//! # Time
//! Every `now` is a [`std::time::Instant`] the caller read (once per batch is enough).
//! Timers are data: [`Peer::next_timeout`] says when [`Peer::poll`] has work. Tests drive
//! a fake clock by adding durations to one `Instant`. The one other time input is
//! [`MeshConfig::wall_clock`], a single reading of the system clock taken by the caller
//! at start, from which initiation timestamps are derived.
//!
//! # Protocol
//! * Handshake: Noise `IK` (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) when admission is by
//!   public key, `Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s` when the mesh has a password
//!   ([`psk_from_password`]). `psk1` rather than WireGuard's `psk2`: with `psk2` the
//!   PSK is first used in the *response*, so a responder cannot tell a wrong password and
//!   would do the full handshake (4 DH) and answer; with `psk1` the initiation's payload
//!   tag depends on the PSK, so the responder refuses a wrong password silently, counts
//!   it, and creates no state. Everything after message 1 is protected by the PSK in
//!   both variants, and neither gives a passive observer a password oracle. The prologue
//!   `vswitchd-mesh-v1` separates this protocol from any other use of the same keys.
//! * Admission ([`Responder`]): the initiator's static key (learnt from message 1) must
//!   be in [`MeshConfig::allowed`], or the mesh must have a PSK and
//!   [`MeshConfig::allow_any_with_psk`] set. Refusals are counted by [`Refused`] reason
//!   and produce no reply.
//! * Messages ([`wire`]): 1 initiation, 2 response, 3 cookie (reserved, dropped),
//!   4 transport. Random per-session indices (carrying the [`PeerSlot`]) find the
//!   session without trial decryption. Transport data is ChaCha20-Poly1305 under the
//!   Noise `Split()` keys, nonce = 32 zero bits ‖ 64-bit little-endian counter (Noise's
//!   own nonce format), with the 16-byte header as associated data.
//! * Transport cipher: the split keys are taken from snow (`dangerously_get_raw_split`)
//!   and used with `ring`'s ChaCha20-Poly1305 (`aead.rs`; ~3.5x faster than
//!   RustCrypto's at 1400 bytes here) rather than through snow's
//!   `StatelessTransportState`, because (a) the send and receive directions must live in
//!   different objects (a [`PeerSender`] per worker, the receive side in the [`Peer`]),
//!   which snow's transport state does not allow; (b) sealing and opening work in place
//!   in the packet buffer (snow copies between two buffers and allows at most 65535
//!   bytes); (c) the header is bound as associated data; (d) no `dyn` call per packet.
//! * Replay: an RFC 6479 sliding window of 8192 bits per receiving session (8128
//!   counters behind the newest are accepted once, older ones are dropped).
//! * Initiation replay: the initiation carries an encrypted TAI64N timestamp taken from
//!   [`MeshConfig::wall_clock`]; a [`Peer`] answers only initiations newer than the last
//!   one it accepted from its remote (WireGuard's rule), so a recorded initiation cannot
//!   be replayed to make a host answer, create sessions or evict live ones.
//! * Rekey: the initiator of the current session starts a new handshake once it is
//!   [`MeshConfig::rekey_after`] old (on sending), or three quarters of the way from
//!   `rekey_after` to `reject_after` when it only receives (165 s with the defaults, as
//!   WireGuard's `REJECT - KEEPALIVE - REKEY_TIMEOUT`); either side after
//!   [`MeshConfig::rekey_after_messages`] sent. A new session becomes the sending one at
//!   once on the initiator and at its first received message on the responder; every
//!   session keeps receiving until it is one of the oldest of [`MAX_SESSIONS`] or
//!   expires, so packets in flight across a rekey are not lost, even when both ends
//!   rekey at the same moment and their initiations cross. Sessions older than
//!   [`MeshConfig::reject_after`] neither send nor receive.
//! * Handshake retry every [`MeshConfig::handshake_retry`] plus up to 333 ms of jitter,
//!   give up after [`MeshConfig::handshake_giveup`].
//! * Keepalive: with [`MeshConfig::keepalive`] set, a peer sends an empty transport
//!   message when it has sent nothing for that long, and (re)connects on its own: this is
//!   what a host that can only dial out uses to keep its firewall's state open.
//! * Flood protection ([`limit`]): initiations pass cheap checks (length, type, MAC1 with
//!   our public key) before a per-source token bucket (IPv4 address, IPv6 /64) and a
//!   global one; only then is any DH done. Under load initiations are **dropped**, not
//!   answered with a cookie (type 3 is reserved for WireGuard's cookie scheme, which
//!   would also stop spoofed sources from using up the global budget).
//! * Payloads: the first plaintext byte is a [`PayloadKind`] (0 Ethernet frame,
//!   1 mesh control), so the mesh's own link-state messages travel encrypted too.
//!
//! # Threads
//! A [`Peer`] is owned by one worker (the one the kernel hands this peer's 4-tuple to
//! with `SO_REUSEPORT`): it receives, runs timers and handshakes (`&mut self`, no lock).
//! Any number of workers send through their own [`PeerSender`] ([`Peer::sender`]): a
//! sender holds an `Arc` of the current send key and uses one `AtomicU64::fetch_add` per
//! packet for the counter (plus two relaxed updates on the same cache line: bytes and
//! time of the last send). It notices a new session by one atomic load per packet and
//! takes a mutex only when the session changed (once per rekey). Senders reorder
//! counters among themselves; the receiver's 8128-message window absorbs that. When a
//! sender finds no usable session or a rekey due, it raises a flag that makes the owner's
//! [`Peer::next_timeout`] due at once: the owner should look at `next_timeout` of its
//! peers on every loop iteration (one atomic load and a few comparisons) and call
//! [`Peer::poll`] when due. Messages for a peer that arrive on another worker (the
//! peer's port changed) must be passed to the owner (a bounded channel), as must
//! payloads a non-owner could not send (`NoSession`), or be dropped. The [`Responder`]
//! is per worker too: its per-source limits are exact because one source lands on one
//! worker; give each worker `global_rate / workers`.
//!
//! # Dispatch
//! [`wire::route`] reads 8 bytes: initiations go to the worker's [`Responder`]; responses
//! and transport messages go to the peer in the [`PeerSlot`] named by the receiver index.
//! [`Responder::handle_initiation`] returns an [`Initiation`] naming the initiator's
//! public key; the caller passes it to that key's existing peer
//! ([`Peer::accept_initiation`]) or makes a new one ([`Peer::from_initiation`]).
//! Update a peer's endpoint address only from authenticated transport messages
//! ([`Decapsulated::Data`], [`Decapsulated::Keepalive`]): handshake messages can be
//! replayed.

mod aead;
mod handshake;
pub mod hello;
mod identity;
pub mod limit;
mod peer;
mod responder;
mod sender;
mod session;
pub mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use identity::{key_from_base64, key_to_base64, psk_from_password, Identity};
pub use limit::HandshakeLimits;
pub use peer::{Decapsulated, Encapsulated, Peer, PeerStats, MAX_SESSIONS};
pub use responder::{Initiation, Refused, Responder, ResponderStats};
pub use sender::PeerSender;
pub use session::{ReplayWindow, COUNTER_LIMIT, REPLAY_WINDOW};
pub use wire::{route, PeerSlot, Route, MAX_PAYLOAD, MIN_CONTROL_BUF, TRANSPORT_OVERHEAD};

/// What a transport payload is (its first plaintext byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// An Ethernet frame of the overlay.
    Ethernet,
    /// A mesh control message (link state, peer lists): the mesh's own traffic.
    Control,
    /// Any other value: authenticated, but not understood by this version.
    Unknown(u8),
}

impl From<u8> for PayloadKind {
    fn from(b: u8) -> PayloadKind {
        match b {
            0 => PayloadKind::Ethernet,
            1 => PayloadKind::Control,
            x => PayloadKind::Unknown(x),
        }
    }
}

impl From<PayloadKind> for u8 {
    fn from(k: PayloadKind) -> u8 {
        match k {
            PayloadKind::Ethernet => 0,
            PayloadKind::Control => 1,
            PayloadKind::Unknown(x) => x,
        }
    }
}

/// Why a received message was dropped. Every drop is counted in [`PeerStats::drops`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Wrong length, unknown type or non-zero reserved bytes (no crypto was done).
    Malformed,
    /// The receiver index names no session or handshake of this peer (no crypto done).
    UnknownIndex,
    /// MAC1 of a handshake message did not verify (no DH was done).
    BadMac,
    /// The AEAD tag of a transport message did not verify.
    DecryptFailed,
    /// The counter was already received on this session, or (handshakes) the
    /// initiation's timestamp is not newer than the last one accepted from this peer.
    Replay,
    /// The counter is older than the replay window.
    TooOld,
    /// The session is older than `reject_after`.
    Expired,
    /// The counter is at or beyond the hard limit ([`COUNTER_LIMIT`]).
    CounterExhausted,
    /// A message this side does not take here (initiation given to a peer, cookie reply).
    Unexpected,
    /// A handshake response failed Noise processing (wrong keys, wrong PSK, tampering).
    HandshakeFailed,
}

impl DropReason {
    /// Number of reasons (size of counter arrays).
    pub const COUNT: usize = 10;
    /// All reasons, in counter-array order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Malformed,
        DropReason::UnknownIndex,
        DropReason::BadMac,
        DropReason::DecryptFailed,
        DropReason::Replay,
        DropReason::TooOld,
        DropReason::Expired,
        DropReason::CounterExhausted,
        DropReason::Unexpected,
        DropReason::HandshakeFailed,
    ];
}

/// Errors of the mesh API. Each says whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshError {
    /// A received message was dropped (and counted) for this reason. The same bytes
    /// will never be accepted.
    Drop(DropReason),
    /// The output buffer is smaller than `need` bytes. Retry with a larger buffer.
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
    },
    /// The payload is larger than [`MAX_PAYLOAD`]. Never succeeds.
    PayloadTooLarge,
    /// No usable session to send on (none yet, expired or exhausted). The owning [`Peer`]
    /// has been asked to start a handshake; retry once it completes.
    NoSession,
    /// The OS random generator failed. Retrying may help.
    Rng,
    /// A key in text form is not base64 of 32 bytes.
    BadKey,
    /// The [`Initiation`] came from another public key than this peer's.
    WrongPeer,
    /// The Noise library refused an operation that cannot fail with valid state (a bug
    /// or a broken configuration). Retrying will not help.
    Crypto,
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshError::Drop(r) => write!(f, "message dropped: {r:?}"),
            MeshError::BufferTooSmall { need } => write!(f, "buffer too small: need {need} bytes"),
            MeshError::PayloadTooLarge => write!(f, "payload larger than {MAX_PAYLOAD} bytes"),
            MeshError::NoSession => f.write_str("no session to send on (handshake requested)"),
            MeshError::Rng => f.write_str("OS random generator failed"),
            MeshError::BadKey => f.write_str("not a base64 32-byte key"),
            MeshError::WrongPeer => f.write_str("initiation is from another peer"),
            MeshError::Crypto => f.write_str("noise operation failed"),
        }
    }
}

impl std::error::Error for MeshError {}

/// Mesh-wide settings, the same on every host of a mesh (except `allowed`, which lists
/// the other hosts). Defaults are WireGuard's constants.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The mesh pre-shared key ([`psk_from_password`]); `Some` selects `IKpsk1`.
    pub psk: Option<[u8; 32]>,
    /// Static public keys admitted as initiators.
    pub allowed: Vec<[u8; 32]>,
    /// With a PSK: admit any static key whose holder knows the PSK (Weave's password
    /// mode). Without a PSK this flag has no effect.
    pub allow_any_with_psk: bool,
    /// The initiator of a session rekeys once it is this old (120 s).
    pub rekey_after: Duration,
    /// Either side rekeys after sending this many messages on a session (2^60).
    pub rekey_after_messages: u64,
    /// A session this old neither sends nor receives (180 s).
    pub reject_after: Duration,
    /// A session that sent this many messages sends no more (capped at [`COUNTER_LIMIT`]).
    pub reject_after_messages: u64,
    /// Send an empty message when nothing was sent for this long, and keep a session up
    /// at all times (`None`: passive, sessions come and go with traffic).
    pub keepalive: Option<Duration>,
    /// Retransmit an unanswered initiation after this long (+ up to 333 ms jitter) (5 s).
    pub handshake_retry: Duration,
    /// Stop retrying a handshake after this long (90 s).
    pub handshake_giveup: Duration,
    /// Handshake flood protection.
    pub limits: HandshakeLimits,
    /// The wall clock, for initiation timestamps (see [`WallClock`]). Daemons must set
    /// it; `None` counts from zero at each peer's creation (fine within one process:
    /// tests).
    pub wall_clock: Option<WallClock>,
}

/// The UNIX time at one `Instant`, read once by the caller when it starts
/// (`SystemTime::now().duration_since(UNIX_EPOCH)` and `Instant::now()`; this module never
/// reads a clock). Initiations carry a timestamp `unix + (now - at)`, and a peer accepts
/// from its remote only initiations newer than the last one it accepted, so a recorded
/// initiation cannot be replayed later (WireGuard's TAI64N rule). Timestamps must grow
/// across restarts of the initiator, hence a real wall clock; between restarts they
/// follow the monotonic clock, so clock steps while running do not matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// Time since the UNIX epoch at `at`.
    pub unix: Duration,
    /// The monotonic time the reading was taken.
    pub at: std::time::Instant,
}

impl WallClock {
    /// Nanoseconds since the UNIX epoch at `now`.
    pub(crate) fn unix_nanos(&self, now: std::time::Instant) -> u128 {
        let base = self.unix.as_nanos();
        if now >= self.at {
            base.saturating_add(now.saturating_duration_since(self.at).as_nanos())
        } else {
            base.saturating_sub(self.at.saturating_duration_since(now).as_nanos())
        }
    }
}

impl Default for MeshConfig {
    fn default() -> MeshConfig {
        MeshConfig {
            psk: None,
            allowed: Vec::new(),
            allow_any_with_psk: false,
            rekey_after: Duration::from_secs(120),
            rekey_after_messages: 1 << 60,
            reject_after: Duration::from_secs(180),
            reject_after_messages: COUNTER_LIMIT,
            keepalive: None,
            handshake_retry: Duration::from_secs(5),
            handshake_giveup: Duration::from_secs(90),
            limits: HandshakeLimits::default(),
            wall_clock: None,
        }
    }
}

/// A setting of [`MeshConfig`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `rekey_after` must be shorter than `reject_after`, or sessions expire first.
    RekeyAfterReject,
    /// `handshake_retry` must be at least 10 ms and shorter than `handshake_giveup`.
    Retry,
    /// `rekey_after_messages` must be non-zero and below `reject_after_messages`.
    Messages,
    /// `keepalive` must be at least 100 ms.
    Keepalive,
}

impl MeshConfig {
    /// Checks the relations between settings. Peers work (without panicking) with any
    /// values; this tells the operator about values that defeat the protocol.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rekey_after >= self.reject_after {
            return Err(ConfigError::RekeyAfterReject);
        }
        if self.handshake_retry < Duration::from_millis(10) || self.handshake_retry >= self.handshake_giveup {
            return Err(ConfigError::Retry);
        }
        if self.rekey_after_messages == 0 || self.rekey_after_messages >= self.reject_after_messages.min(COUNTER_LIMIT)
        {
            return Err(ConfigError::Messages);
        }
        if matches!(self.keepalive, Some(k) if k < Duration::from_millis(100)) {
            return Err(ConfigError::Keepalive);
        }
        Ok(())
    }
}
