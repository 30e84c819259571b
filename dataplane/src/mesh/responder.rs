//! The node's answering side: takes handshake initiations from any source, checks them
//! from cheapest to dearest, and admits the initiator.
//!
//! Owns: this node's admission policy (allowed keys, PSK), the handshake rate limiter and
//! the refusal counters. It does not own peers: an accepted initiation is handed back as
//! an [`Initiation`] for the caller to give to the right [`Peer`](super::Peer).
//!
//! Order of checks — each step runs only if all before it passed:
//! 1. length, type, reserved bytes (free);
//! 2. MAC1 keyed with our public key (one BLAKE2s: drops scanners and garbage);
//! 3. per-source and global token buckets (O(1));
//! 4. Noise message 1: 2 DH (`es`, `ss`), decryption of the initiator's static key and,
//!    with a PSK, of the PSK-bound payload tag;
//! 5. admission of the initiator's static key.
//!
//! Refused initiations get no reply. Replays of a valid initiation pass here (the
//! responder keeps no per-peer state); the [`Peer`](super::Peer) refuses them by their
//! timestamp.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use snow::HandshakeState;

use super::handshake;
use super::identity::Identity;
use super::limit::{Limited, RateLimiter};
use super::wire::{self, field, Mac1Key, INITIATION_LEN, TYPE_INITIATION};
use super::MeshConfig;

/// Why an initiation was refused. Counted in [`ResponderStats::refused`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Refused {
    /// Wrong length, type or reserved bytes.
    Malformed,
    /// MAC1 did not verify: the sender does not know our public key.
    BadMac,
    /// The source's token bucket was empty (no DH done).
    RateLimitedSource,
    /// The global token bucket was empty (no DH done).
    RateLimitedGlobal,
    /// Noise message 1 did not decrypt: not meant for our key, tampered, or the other
    /// side uses the other mode (PSK vs none).
    DecryptFailed,
    /// The initiator's static key decrypted but the PSK-bound tag did not: wrong password.
    WrongPsk,
    /// The initiator's static key is not admitted.
    NotAllowed,
    /// The Noise library failed to set up a handshake (a bug or no OS randomness).
    Internal,
}

impl Refused {
    /// Number of reasons.
    pub const COUNT: usize = 8;
    /// All reasons, in counter-array order.
    pub const ALL: [Refused; Refused::COUNT] = [
        Refused::Malformed,
        Refused::BadMac,
        Refused::RateLimitedSource,
        Refused::RateLimitedGlobal,
        Refused::DecryptFailed,
        Refused::WrongPsk,
        Refused::NotAllowed,
        Refused::Internal,
    ];
}

/// Counters of a [`Responder`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Initiations accepted (handed back as [`Initiation`]).
    pub accepted: u64,
    /// Refusals, indexed by `Refused as usize`.
    pub refused: [u64; Refused::COUNT],
    /// X25519 DH operations done by handshakes this responder started (reading
    /// initiations and writing the responses to them).
    pub dh_ops: u64,
}

impl ResponderStats {
    /// Refusals for one reason.
    pub fn refused(&self, r: Refused) -> u64 {
        self.refused[r as usize]
    }
}

/// An initiation that passed every check: the initiator's key and a half-done handshake.
/// Give it to [`Peer::accept_initiation`](super::Peer::accept_initiation) or
/// [`Peer::from_initiation`](super::Peer::from_initiation), which write the response.
pub struct Initiation {
    pub(crate) hs: Box<HandshakeState>,
    pub(crate) remote_public: [u8; 32],
    pub(crate) remote_index: u32,
    pub(crate) timestamp: handshake::Timestamp,
}

impl Initiation {
    /// The initiator's static public key (authenticated by the Noise handshake).
    pub fn remote_public(&self) -> &[u8; 32] {
        &self.remote_public
    }
}

impl fmt::Debug for Initiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiation")
            .field("remote_public", &super::key_to_base64(&self.remote_public))
            .field("remote_index", &self.remote_index)
            .finish()
    }
}

/// Answers initiations for one worker: admission, flood limits, refusal counters.
pub struct Responder {
    local: Identity,
    mac_to_us: Mac1Key,
    psk: Option<[u8; 32]>,
    allowed: HashSet<[u8; 32]>,
    allow_any_with_psk: bool,
    limiter: RateLimiter,
    stats: ResponderStats,
    dh_ops: Arc<AtomicU64>,
}

impl Responder {
    /// A responder for `local` with `cfg`'s admission policy and limits.
    pub fn new(local: &Identity, cfg: &MeshConfig, now: Instant) -> Responder {
        Responder {
            local: local.clone(),
            mac_to_us: Mac1Key::new(&local.public()),
            psk: cfg.psk,
            allowed: cfg.allowed.iter().copied().collect(),
            allow_any_with_psk: cfg.allow_any_with_psk,
            limiter: RateLimiter::new(&cfg.limits, now),
            stats: ResponderStats::default(),
            dh_ops: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Replaces the admitted keys (control learnt of hosts joining or leaving). Existing
    /// sessions are not touched: the caller removes peers it no longer wants.
    pub fn set_allowed(&mut self, allowed: &[[u8; 32]]) {
        self.allowed = allowed.iter().copied().collect();
    }

    /// Whether `key` would be admitted (ignoring the PSK check, done by Noise).
    pub fn admits(&self, key: &[u8; 32]) -> bool {
        self.allowed.contains(key) || (self.psk.is_some() && self.allow_any_with_psk)
    }

    /// Counters so far.
    pub fn stats(&self) -> ResponderStats {
        ResponderStats { dh_ops: self.dh_ops.load(Ordering::Relaxed), ..self.stats }
    }

    /// Checks an initiation received from `src` (see the module docs for the order of
    /// checks). `Ok` carries the admitted initiator; `Err` is counted and needs no reply.
    pub fn handle_initiation(&mut self, src: IpAddr, msg: &[u8], now: Instant) -> Result<Initiation, Refused> {
        let r = self.check(src, msg, now);
        match &r {
            Ok(_) => self.stats.accepted += 1,
            Err(e) => self.stats.refused[*e as usize] += 1,
        }
        r
    }

    fn check(&mut self, src: IpAddr, msg: &[u8], now: Instant) -> Result<Initiation, Refused> {
        wire::check_handshake(msg, TYPE_INITIATION, INITIATION_LEN).map_err(|_| Refused::Malformed)?;
        if !self.mac_to_us.verify(msg) {
            return Err(Refused::BadMac);
        }
        self.limiter.allow(src, now).map_err(|l| match l {
            Limited::Source => Refused::RateLimitedSource,
            Limited::Global => Refused::RateLimitedGlobal,
        })?;
        let mut hs =
            handshake::responder(&self.local, self.psk.as_ref(), &self.dh_ops).map_err(|_| Refused::Internal)?;
        let timestamp = match handshake::read_initiation(&mut hs, msg) {
            Ok(ts) => ts,
            Err(_) => {
                // snow sets the remote static key once `s` decrypted, before the
                // PSK-bound payload tag is checked: a key here means the PSK was wrong.
                let got_static = hs.get_remote_static().is_some();
                return Err(if self.psk.is_some() && got_static { Refused::WrongPsk } else { Refused::DecryptFailed });
            }
        };
        let remote_public: [u8; 32] =
            hs.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(Refused::Internal)?;
        if !self.admits(&remote_public) {
            return Err(Refused::NotAllowed);
        }
        Ok(Initiation { hs: Box::new(hs), remote_public, remote_index: wire::read_u32(msg, field::INDEX), timestamp })
    }
}
