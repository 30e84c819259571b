//! The sending side of a peer, shareable between workers.
//!
//! Owns: the published current send session of one peer (behind a mutex taken only when
//! it changes) with a generation counter, and the flag by which a sender asks the owning
//! [`Peer`](super::Peer) for a handshake. A [`PeerSender`] per worker caches the session
//! and checks the generation with one atomic load per packet.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::session::SendSession;
use super::wire::{MAX_PAYLOAD, TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};
use super::{MeshError, PayloadKind};

/// State shared between a peer and its senders.
pub(crate) struct Shared {
    pub epoch: Instant,
    /// Bumped (inside the lock) whenever the current session changes.
    gen: AtomicU64,
    current: Mutex<Option<Arc<SendSession>>>,
    /// A sender wants a handshake (no usable session, or a rekey is due).
    want_handshake: AtomicBool,
}

impl Shared {
    pub fn new(epoch: Instant) -> Shared {
        Shared { epoch, gen: AtomicU64::new(0), current: Mutex::new(None), want_handshake: AtomicBool::new(false) }
    }

    /// Makes `s` the session every sender uses from its next packet on.
    pub fn publish(&self, s: Option<Arc<SendSession>>) {
        let mut g = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *g = s;
        self.gen.fetch_add(1, Ordering::Release);
    }

    pub fn request_handshake(&self) {
        // Read first: once the flag is up, senders do not write the shared line again.
        if !self.want_handshake.load(Ordering::Relaxed) {
            self.want_handshake.store(true, Ordering::Relaxed);
        }
    }

    pub fn handshake_requested(&self) -> bool {
        self.want_handshake.load(Ordering::Relaxed)
    }

    /// Reads and clears the request.
    pub fn take_request(&self) -> bool {
        self.want_handshake.swap(false, Ordering::Relaxed)
    }

    pub fn clear_request(&self) {
        self.want_handshake.store(false, Ordering::Relaxed);
    }
}

/// A sending handle for one peer, one per worker (`Clone` it, or call
/// [`Peer::sender`](super::Peer::sender)). Sealing costs one atomic load (did the session
/// change?) and one `fetch_add` (the counter) plus two relaxed stores on the same cache
/// line; the mutex inside is taken only after a session change. Never allocates.
#[derive(Clone)]
pub struct PeerSender {
    shared: Arc<Shared>,
    gen: u64,
    cached: Option<Arc<SendSession>>,
}

impl PeerSender {
    pub(crate) fn new(shared: Arc<Shared>) -> PeerSender {
        PeerSender { shared, gen: u64::MAX, cached: None }
    }

    fn refresh(&mut self) {
        if self.shared.gen.load(Ordering::Acquire) != self.gen {
            let g = self.shared.current.lock().unwrap_or_else(PoisonError::into_inner);
            self.cached = g.clone();
            self.gen = self.shared.gen.load(Ordering::Acquire);
        }
    }

    /// Whether a session is published (it may still turn out too old to use).
    pub fn has_session(&mut self) -> bool {
        self.refresh();
        self.cached.is_some()
    }

    fn seal(&mut self, buf: &mut [u8], start: usize, body_len: usize, now: Instant) -> Result<usize, MeshError> {
        self.refresh();
        let Some(s) = &self.cached else {
            self.shared.request_handshake();
            return Err(MeshError::NoSession);
        };
        match s.seal(buf, start, body_len, now) {
            Ok(sealed) => {
                if sealed.rekey_due {
                    self.shared.request_handshake();
                }
                Ok(sealed.len)
            }
            Err(MeshError::NoSession) => {
                self.shared.request_handshake();
                Err(MeshError::NoSession)
            }
            Err(e) => Err(e),
        }
    }

    /// Encrypts `payload` of `kind` into `out`; returns the message length
    /// (`payload.len() + 33`). `NoSession` has asked the owner for a handshake.
    pub fn encapsulate(
        &mut self,
        kind: PayloadKind,
        payload: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Result<usize, MeshError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(MeshError::PayloadTooLarge);
        }
        let need = payload.len() + TRANSPORT_OVERHEAD;
        let Some(msg) = out.get_mut(..need) else { return Err(MeshError::BufferTooSmall { need }) };
        if !self.has_session() {
            self.shared.request_handshake();
            return Err(MeshError::NoSession);
        }
        msg[TRANSPORT_HEADER_LEN] = kind.into();
        msg[TRANSPORT_HEADER_LEN + 1..need - TAG_LEN].copy_from_slice(payload);
        self.seal(msg, 0, payload.len() + 1, now)
    }

    /// Encrypts `buf[payload]` in place: needs 17 bytes of headroom before the payload
    /// (header and kind byte are written there) and 16 bytes after it (the tag). Returns
    /// where the message is in `buf`. Without the room (or with a reversed range) the
    /// result is `BufferTooSmall`.
    pub fn encapsulate_in_place(
        &mut self,
        kind: PayloadKind,
        buf: &mut [u8],
        payload: Range<usize>,
        now: Instant,
    ) -> Result<Range<usize>, MeshError> {
        let len = payload.end.saturating_sub(payload.start);
        if len > MAX_PAYLOAD {
            return Err(MeshError::PayloadTooLarge);
        }
        let need = payload.end.saturating_add(TAG_LEN);
        let start = payload.start.checked_sub(TRANSPORT_HEADER_LEN + 1);
        let (Some(start), true, true) = (start, payload.start <= payload.end, need <= buf.len()) else {
            return Err(MeshError::BufferTooSmall { need: need.max(len + TRANSPORT_OVERHEAD) });
        };
        buf[payload.start - 1] = kind.into();
        let n = self.seal(buf, start, len + 1, now)?;
        Ok(start..start + n)
    }

    /// Writes an empty transport message (keepalive / confirmation) into `out`.
    pub(crate) fn keepalive(&mut self, out: &mut [u8], now: Instant) -> Result<usize, MeshError> {
        self.seal(out, 0, 0, now)
    }
}
