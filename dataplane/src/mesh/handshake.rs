//! Noise handshake plumbing over `snow`: protocol names, a resolver that counts DH
//! operations (and refuses all-zero DH results), and writing/reading the two handshake
//! messages with their headers and MAC1.
//!
//! Owns nothing long-lived: every function works on a `snow::HandshakeState` the caller
//! keeps. Handshakes allocate (snow boxes its primitives); transport never comes here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};

use super::identity::Identity;
use super::wire::{
    self, field, Mac1Key, INITIATION_LEN, NOISE_INIT_LEN, NOISE_RESP_LEN, RESPONSE_LEN, TIMESTAMP_LEN, TYPE_INITIATION,
    TYPE_RESPONSE,
};
use super::MeshError;

/// Noise protocol without a PSK.
pub(crate) const PROTOCOL_IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Noise protocol with the mesh PSK (see the module docs for why `psk1`).
pub(crate) const PROTOCOL_IK_PSK: &str = "Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s";
/// Position of the PSK token in `IKpsk1`.
const PSK_LOCATION: u8 = 1;
/// Mixed into every handshake hash: other protocols using the same keys cannot be confused
/// with this one.
pub(crate) const PROLOGUE: &[u8] = b"vswitchd-mesh-v1";

/// snow's pure-Rust default resolver, with DH operations counted into `ops`.
struct CountingResolver {
    inner: DefaultResolver,
    ops: Arc<AtomicU64>,
}

impl CryptoResolver for CountingResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.inner.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        let inner = self.inner.resolve_dh(choice)?;
        Some(Box::new(CountingDh { inner, ops: self.ops.clone() }))
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.inner.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.inner.resolve_cipher(choice)
    }
}

struct CountingDh {
    inner: Box<dyn Dh>,
    ops: Arc<AtomicU64>,
}

impl Dh for CountingDh {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn pub_len(&self) -> usize {
        self.inner.pub_len()
    }
    fn priv_len(&self) -> usize {
        self.inner.priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        self.inner.set(privkey);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.inner.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        self.inner.pubkey()
    }
    fn privkey(&self) -> &[u8] {
        self.inner.privkey()
    }
    fn dh_len(&self) -> usize {
        self.inner.dh_len()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        // snow asserts on short keys; the lengths come from fixed-size messages, but
        // refuse here rather than rely on that.
        if pubkey.len() < 32 || out.len() < 32 {
            return Err(snow::Error::Dh);
        }
        self.inner.dh(pubkey, out)?;
        // A low-order point gives an all-zero shared secret (RFC 7748 §6.1): refuse it,
        // as WireGuard does, so a peer cannot force a known DH result.
        if out[..32].iter().fold(0u8, |a, b| a | b) == 0 {
            return Err(snow::Error::Dh);
        }
        Ok(())
    }
}

fn builder<'a>(
    psk: Option<&'a [u8; 32]>,
    secret: &'a [u8; 32],
    dh_ops: &Arc<AtomicU64>,
) -> Result<Builder<'a>, MeshError> {
    let name = if psk.is_some() { PROTOCOL_IK_PSK } else { PROTOCOL_IK };
    let params: NoiseParams = name.parse().map_err(|_| MeshError::Crypto)?;
    let resolver = CountingResolver { inner: DefaultResolver, ops: dh_ops.clone() };
    let mut b = Builder::with_resolver(params, Box::new(resolver))
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(secret))
        .map_err(|_| MeshError::Crypto)?;
    if let Some(psk) = psk {
        b = b.psk(PSK_LOCATION, psk).map_err(|_| MeshError::Crypto)?;
    }
    Ok(b)
}

/// A handshake state for initiating to `remote`.
pub(crate) fn initiator(
    local: &Identity,
    remote: &[u8; 32],
    psk: Option<&[u8; 32]>,
    dh_ops: &Arc<AtomicU64>,
) -> Result<HandshakeState, MeshError> {
    let secret = local.to_bytes();
    let r = builder(psk, &secret, dh_ops)
        .and_then(|b| b.remote_public_key(remote).map_err(|_| MeshError::Crypto))
        .and_then(|b| b.build_initiator().map_err(map_build));
    drop_secret(secret);
    r
}

/// A handshake state for answering initiations.
pub(crate) fn responder(
    local: &Identity,
    psk: Option<&[u8; 32]>,
    dh_ops: &Arc<AtomicU64>,
) -> Result<HandshakeState, MeshError> {
    let secret = local.to_bytes();
    let r = builder(psk, &secret, dh_ops).and_then(|b| b.build_responder().map_err(map_build));
    drop_secret(secret);
    r
}

fn drop_secret(mut s: [u8; 32]) {
    s.fill(0);
    std::hint::black_box(&s);
}

fn map_build(e: snow::Error) -> MeshError {
    match e {
        snow::Error::Rng => MeshError::Rng,
        _ => MeshError::Crypto,
    }
}

/// A TAI64N timestamp: big-endian seconds + 2^62, then big-endian nanoseconds. Byte-wise
/// comparison orders timestamps.
pub(crate) type Timestamp = [u8; TIMESTAMP_LEN];

/// Encodes nanoseconds since the UNIX epoch as TAI64N.
pub(crate) fn tai64n(unix_ns: u128) -> Timestamp {
    let secs = (unix_ns / 1_000_000_000).min(u128::from(u64::MAX >> 2)) as u64;
    let nanos = (unix_ns % 1_000_000_000) as u32;
    let mut t = [0u8; TIMESTAMP_LEN];
    t[..8].copy_from_slice(&(secs + (1 << 62)).to_be_bytes());
    t[8..].copy_from_slice(&nanos.to_be_bytes());
    t
}

/// Writes an initiation (header, Noise message 1 carrying `ts`, MAC1 for `to`) into `out`.
pub(crate) fn write_initiation(
    hs: &mut HandshakeState,
    sender_index: u32,
    ts: &Timestamp,
    to: &Mac1Key,
    out: &mut [u8],
) -> Result<usize, MeshError> {
    let msg = out.get_mut(..INITIATION_LEN).ok_or(MeshError::BufferTooSmall { need: INITIATION_LEN })?;
    wire::write_type(msg, TYPE_INITIATION);
    msg[field::INDEX].copy_from_slice(&sender_index.to_le_bytes());
    let n = hs.write_message(ts, &mut msg[8..8 + NOISE_INIT_LEN]).map_err(map_build)?;
    if n != NOISE_INIT_LEN {
        return Err(MeshError::Crypto);
    }
    to.seal(msg);
    Ok(INITIATION_LEN)
}

/// Writes a response (header, Noise message 2, MAC1 for `to`) into `out`.
pub(crate) fn write_response(
    hs: &mut HandshakeState,
    sender_index: u32,
    receiver_index: u32,
    to: &Mac1Key,
    out: &mut [u8],
) -> Result<usize, MeshError> {
    let msg = out.get_mut(..RESPONSE_LEN).ok_or(MeshError::BufferTooSmall { need: RESPONSE_LEN })?;
    wire::write_type(msg, TYPE_RESPONSE);
    msg[field::INDEX].copy_from_slice(&sender_index.to_le_bytes());
    msg[field::RESP_RECEIVER].copy_from_slice(&receiver_index.to_le_bytes());
    let n = hs.write_message(&[], &mut msg[12..12 + NOISE_RESP_LEN]).map_err(map_build)?;
    if n != NOISE_RESP_LEN {
        return Err(MeshError::Crypto);
    }
    to.seal(msg);
    Ok(RESPONSE_LEN)
}

/// Reads the Noise part of an initiation (length, type and MAC1 already checked);
/// returns its timestamp.
pub(crate) fn read_initiation(hs: &mut HandshakeState, msg: &[u8]) -> Result<Timestamp, snow::Error> {
    let noise = msg.get(8..8 + NOISE_INIT_LEN).ok_or(snow::Error::Input)?;
    let mut ts = [0u8; TIMESTAMP_LEN];
    match hs.read_message(noise, &mut ts)? {
        TIMESTAMP_LEN => Ok(ts),
        _ => Err(snow::Error::Input),
    }
}

/// Reads the Noise part of a response (length, type and MAC1 already checked).
pub(crate) fn read_response(hs: &mut HandshakeState, msg: &[u8]) -> Result<(), snow::Error> {
    let noise = msg.get(12..12 + NOISE_RESP_LEN).ok_or(snow::Error::Input)?;
    hs.read_message(noise, &mut []).map(|_| ())
}

/// The transport keys of a finished handshake: (initiator → responder, responder →
/// initiator).
pub(crate) fn split(hs: &mut HandshakeState) -> Result<([u8; 32], [u8; 32]), MeshError> {
    if !hs.is_handshake_finished() {
        return Err(MeshError::Crypto);
    }
    Ok(hs.dangerously_get_raw_split())
}
