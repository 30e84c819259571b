//! Transport sessions: the two ChaCha20-Poly1305 keys a handshake produced, the send
//! counter, and the receive replay window.
//!
//! Owns: sealing and opening transport messages in place. A [`SendSession`] is shared
//! (`Arc`) by every worker that sends to the peer; its only mutable state is a cache line
//! of atomics. A [`RecvSession`] is owned by the peer's owner. Neither allocates, reads a
//! clock or panics on any input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::aead::Key;
use super::wire::{self, field, TAG_LEN, TRANSPORT_HEADER_LEN, TYPE_TRANSPORT};
use super::{DropReason, MeshError};

/// Hard limit on counters (WireGuard's `REJECT_AFTER_MESSAGES`, 2^64 - 2^13 - 1): no
/// message is sent or accepted with a counter at or above it, so the window arithmetic
/// and the nonce never wrap.
pub const COUNTER_LIMIT: u64 = u64::MAX - (1 << 13);

const WORD_BITS: u64 = 64;
const WINDOW_WORDS: usize = 128;
/// How far behind the newest counter a message may be and still be accepted (once):
/// 8192 bits minus one word, as in WireGuard (RFC 6479 with a 64-bit word ring).
pub const REPLAY_WINDOW: u64 = (WINDOW_WORDS as u64 - 1) * WORD_BITS;

/// An RFC 6479 sliding replay window. `check` before decrypting (cheap reject), `update`
/// after the tag verified (only authenticated counters move the window).
#[derive(Clone)]
pub struct ReplayWindow {
    /// Greatest counter seen plus one (0: nothing seen yet).
    top: u64,
    bits: [u64; WINDOW_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> ReplayWindow {
        ReplayWindow { top: 0, bits: [0; WINDOW_WORDS] }
    }
}

impl ReplayWindow {
    /// Whether `counter` may be accepted: new, or inside the window and not yet seen.
    pub fn check(&self, counter: u64) -> Result<(), DropReason> {
        if counter >= COUNTER_LIMIT {
            return Err(DropReason::CounterExhausted);
        }
        let n = counter + 1;
        if n > self.top {
            return Ok(());
        }
        if n + REPLAY_WINDOW < self.top {
            return Err(DropReason::TooOld);
        }
        let word = ((n / WORD_BITS) as usize) % WINDOW_WORDS;
        if self.bits[word] & (1 << (n % WORD_BITS)) != 0 {
            return Err(DropReason::Replay);
        }
        Ok(())
    }

    /// Marks `counter` as received (call only after `check` passed and the message
    /// authenticated).
    pub fn update(&mut self, counter: u64) {
        if counter >= COUNTER_LIMIT {
            return;
        }
        let n = counter + 1;
        if n > self.top {
            let cur = self.top / WORD_BITS;
            let new = n / WORD_BITS;
            let clear = (new - cur).min(WINDOW_WORDS as u64);
            for i in 1..=clear {
                self.bits[((cur + i) % WINDOW_WORDS as u64) as usize] = 0;
            }
            self.top = n;
        }
        let word = ((n / WORD_BITS) as usize) % WINDOW_WORDS;
        self.bits[word] |= 1 << (n % WORD_BITS);
    }
}

/// Limits copied into each send session so a sender needs nothing else.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendLimits {
    pub rekey_after: Duration,
    pub rekey_after_messages: u64,
    pub reject_after: Duration,
    pub reject_after_messages: u64,
}

/// The counters every sender writes: one cache line, apart from the read-only key.
#[repr(align(64))]
#[derive(Default)]
struct Hot {
    counter: AtomicU64,
    tx_bytes: AtomicU64,
    /// Milliseconds since the peer's epoch of the last send, plus one (0: never).
    last_tx_ms: AtomicU64,
}

/// The sending direction of a session, shared by all senders of one peer.
pub(crate) struct SendSession {
    hot: Hot,
    cipher: Key,
    remote_index: u32,
    created: Instant,
    initiator: bool,
    epoch: Instant,
    limits: SendLimits,
}

/// What sealing told the sender besides the length.
pub(crate) struct Sealed {
    pub len: usize,
    pub rekey_due: bool,
}

impl SendSession {
    /// Seals `buf[start + 16 .. start + 16 + body_len]` in place: writes the header in
    /// front of it and the tag after it. Returns the message length (`body_len + 32`).
    /// Fails with `NoSession` when the session is too old or its counter exhausted.
    pub fn seal(&self, buf: &mut [u8], start: usize, body_len: usize, now: Instant) -> Result<Sealed, MeshError> {
        let len = body_len + TRANSPORT_HEADER_LEN + TAG_LEN;
        let Some(msg) = start.checked_add(len).and_then(|end| buf.get_mut(start..end)) else {
            return Err(MeshError::BufferTooSmall { need: start.saturating_add(len) });
        };
        let age = now.saturating_duration_since(self.created);
        if age >= self.limits.reject_after {
            return Err(MeshError::NoSession);
        }
        let counter = self.hot.counter.fetch_add(1, Ordering::Relaxed);
        if counter >= self.limits.reject_after_messages || counter >= COUNTER_LIMIT {
            return Err(MeshError::NoSession);
        }
        wire::write_type(msg, TYPE_TRANSPORT);
        msg[field::INDEX].copy_from_slice(&self.remote_index.to_le_bytes());
        msg[field::COUNTER].copy_from_slice(&counter.to_le_bytes());
        let (hdr, rest) = msg.split_at_mut(TRANSPORT_HEADER_LEN);
        let (body, tag_out) = rest.split_at_mut(body_len);
        let tag = self.cipher.seal(counter, hdr, body).ok_or(MeshError::PayloadTooLarge)?;
        tag_out.copy_from_slice(&tag);
        self.hot.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.hot.last_tx_ms.store(ms.saturating_add(1), Ordering::Relaxed);
        let rekey_due =
            counter + 1 >= self.limits.rekey_after_messages || (self.initiator && age >= self.limits.rekey_after);
        Ok(Sealed { len, rekey_due })
    }

    /// Messages sealed so far (counters handed out, capped at the limit).
    pub fn tx_packets(&self) -> u64 {
        self.hot.counter.load(Ordering::Relaxed).min(self.limits.reject_after_messages)
    }

    /// Bytes sealed so far (whole messages).
    pub fn tx_bytes(&self) -> u64 {
        self.hot.tx_bytes.load(Ordering::Relaxed)
    }

    /// When this session last sent, if ever.
    pub fn last_tx(&self) -> Option<Instant> {
        match self.hot.last_tx_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => self.epoch.checked_add(Duration::from_millis(ms - 1)),
        }
    }
}

/// The receiving direction of a session: key and replay window, owned by the peer.
pub(crate) struct RecvSession {
    cipher: Key,
    window: ReplayWindow,
}

impl RecvSession {
    /// Opens a transport message in place. `msg` is the whole message (header checked by
    /// the caller: type 4, at least 32 bytes). On success the plaintext is at
    /// `msg[16..16 + n]` and `n` is returned; on failure nothing changed but `msg`'s
    /// ciphertext bytes may be garbage.
    pub fn open(&mut self, msg: &mut [u8]) -> Result<usize, DropReason> {
        if msg.len() < TRANSPORT_HEADER_LEN + TAG_LEN {
            return Err(DropReason::Malformed);
        }
        let counter = wire::read_u64(msg, field::COUNTER);
        self.window.check(counter)?;
        let (hdr, rest) = msg.split_at_mut(TRANSPORT_HEADER_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(body_len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| DropReason::Malformed)?;
        if !self.cipher.open(counter, hdr, body, tag) {
            return Err(DropReason::DecryptFailed);
        }
        self.window.update(counter);
        Ok(body_len)
    }
}

/// Both directions of one established (or, on the responder, not yet confirmed) session.
pub(crate) struct Session {
    pub local_index: u32,
    pub created: Instant,
    /// Order of creation within the peer (newer sessions win).
    pub seq: u64,
    /// We initiated it (its key is in use at both ends), or it carried a message.
    pub confirmed: bool,
    pub initiator: bool,
    pub recv: RecvSession,
    pub send: Arc<SendSession>,
}

impl Session {
    /// Builds a session from Noise's raw split `(k1, k2)`: k1 encrypts initiator →
    /// responder, k2 responder → initiator. Wipes the key arrays (ring keeps its own
    /// copy in the expanded key).
    pub fn new(
        mut keys: ([u8; 32], [u8; 32]),
        initiator: bool,
        (local_index, remote_index): (u32, u32),
        seq: u64,
        (now, epoch): (Instant, Instant),
        limits: SendLimits,
    ) -> Result<Session, MeshError> {
        let (send_key, recv_key) = if initiator { (&keys.0, &keys.1) } else { (&keys.1, &keys.0) };
        let (send_key, recv_key) = (Key::new(send_key), Key::new(recv_key));
        keys.0.fill(0);
        keys.1.fill(0);
        let (Some(send_key), Some(recv_key)) = (send_key, recv_key) else { return Err(MeshError::Crypto) };
        let send =
            SendSession { hot: Hot::default(), cipher: send_key, remote_index, created: now, initiator, epoch, limits };
        let recv = RecvSession { cipher: recv_key, window: ReplayWindow::default() };
        Ok(Session { local_index, created: now, seq, confirmed: initiator, initiator, recv, send: Arc::new(send) })
    }

    /// Age at `now` (zero if `now` is before creation).
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_once_and_reorders() {
        let mut w = ReplayWindow::default();
        for c in [0u64, 2, 1, 5, 3, 4] {
            assert_eq!(w.check(c), Ok(()), "{c}");
            w.update(c);
            assert_eq!(w.check(c), Err(DropReason::Replay), "{c}");
        }
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::default();
        w.update(10_000);
        // Exactly REPLAY_WINDOW behind the newest is still inside; one more is not.
        assert_eq!(w.check(10_000 - REPLAY_WINDOW), Ok(()));
        assert_eq!(w.check(10_000 - REPLAY_WINDOW - 1), Err(DropReason::TooOld));
        w.update(10_000 - REPLAY_WINDOW);
        assert_eq!(w.check(10_000 - REPLAY_WINDOW), Err(DropReason::Replay));
        // A big jump clears the whole ring: old bits must not look like replays.
        w.update(1_000_000);
        for c in 1_000_000 - REPLAY_WINDOW..1_000_000 {
            assert_eq!(w.check(c), Ok(()), "{c}");
        }
        assert_eq!(w.check(COUNTER_LIMIT), Err(DropReason::CounterExhausted));
        assert_eq!(w.check(u64::MAX), Err(DropReason::CounterExhausted));
    }

    #[test]
    fn window_matches_naive_model() {
        // Pseudo-random walk of counters near the top; compare with a set-based model.
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::HashSet::new();
        let mut top: u64 = 0;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let back = x % (REPLAY_WINDOW + 300);
            let c = if x & 3 == 0 { top + (x >> 60) } else { top.saturating_sub(back) };
            let expect = if seen.contains(&c) {
                Err(DropReason::Replay)
            } else if c + REPLAY_WINDOW < top {
                Err(DropReason::TooOld)
            } else {
                Ok(())
            };
            let got = w.check(c);
            // A too-old counter that was also seen may be reported either way.
            if !(got == Err(DropReason::TooOld) && expect == Err(DropReason::Replay)) {
                assert_eq!(got, expect, "counter {c} top {top}");
            }
            if got.is_ok() {
                w.update(c);
                seen.insert(c);
                top = top.max(c);
            }
        }
    }
}
