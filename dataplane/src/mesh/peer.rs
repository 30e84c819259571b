//! One remote host: its sessions, its handshake in progress, its timers and counters.
//!
//! Owns: a small set of sessions (up to [`MAX_SESSIONS`]) of which one, `current`, is the
//! one every sender uses; all of them receive. Keeping more than WireGuard's
//! previous/current/next matters when both ends start a handshake at the same moment
//! (both hit `rekey_after_messages` together): each end then sends on the session it
//! initiated and receives on the one the other initiated, and the next rekey must not
//! drop the one the other end still sends on. The newest sessions are kept; the oldest
//! (never `current`) is forgotten when a new one needs room. Also owns at most one
//! handshake we initiated, and the last initiation timestamp accepted from the remote.
//! A [`Peer`] lives on one worker; [`PeerSender`] clones let other workers send (see the
//! module docs of `mesh` for the threading design).
//!
//! Sessions change only on the owner: a response to our initiation makes its session
//! `current` at once; a session we answered is *confirmed* by the first transport message
//! on it, and becomes `current` if it is newer than `current`. Timers run only in
//! [`Peer::poll`]; [`Peer::next_timeout`] says when.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::aead::random_u32;
use super::handshake::{self, Timestamp};
use super::identity::Identity;
use super::responder::Initiation;
use super::sender::{PeerSender, Shared};
use super::session::{SendLimits, Session};
use super::wire::{
    self, Mac1Key, PeerSlot, Route, INITIATION_LEN, MIN_CONTROL_BUF, RESPONSE_LEN, TRANSPORT_HEADER_LEN, TYPE_RESPONSE,
};
use super::{DropReason, MeshConfig, MeshError, PayloadKind, WallClock, COUNTER_LIMIT};

/// Sessions a peer keeps at most (two handshake rounds with crossing initiations).
pub const MAX_SESSIONS: usize = 4;

/// Largest jitter added to a handshake retry (WireGuard's `REKEY_TIMEOUT_JITTER_MAX`).
const MAX_JITTER: Duration = Duration::from_millis(333);

/// What [`Peer::encapsulate`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encapsulated {
    /// `out[..len]` is the encrypted transport message: send it.
    Data {
        /// Message length.
        len: usize,
    },
    /// There was no session: `out[..len]` is a handshake initiation to send instead. The
    /// payload was not sent; queue it (bounded) or drop it.
    Handshake {
        /// Message length.
        len: usize,
    },
    /// There is no session and a handshake is under way: nothing to send. The payload was
    /// not sent; queue it (bounded) or drop it, and send the queue once
    /// [`Peer::is_up`] (after `HandshakeComplete` on the initiator, after the first
    /// authenticated message on the responder).
    Pending,
}

/// What [`Peer::decapsulate`] produced. Every variant means the message was authentic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decapsulated {
    /// A payload of `kind` at `buf[offset..offset + len]` (the buffer decrypted into).
    Data {
        /// What the payload is.
        kind: PayloadKind,
        /// Where it starts in the buffer (17 = after header and kind byte).
        offset: usize,
        /// Its length.
        len: usize,
    },
    /// An empty message (keepalive or handshake confirmation): nothing to deliver.
    Keepalive,
    /// Our handshake completed: `buf[..reply_len]` is the confirmation to send to the peer
    /// now. Queued payloads can be sent after it.
    HandshakeComplete {
        /// Length of the confirmation message.
        reply_len: usize,
    },
}

/// Counters of one peer. `rx_*` count authenticated transport messages, `tx_*` sealed
/// ones (both as whole messages on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// When the last session was established (either role).
    pub last_handshake: Option<Instant>,
    /// Bytes received in authenticated transport messages.
    pub rx_bytes: u64,
    /// Authenticated transport messages received (keepalives included).
    pub rx_packets: u64,
    /// Bytes of transport messages sealed, by all senders.
    pub tx_bytes: u64,
    /// Transport messages sealed, by all senders (keepalives included).
    pub tx_packets: u64,
    /// Dropped received messages, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
    /// Sessions that became current (first handshake and rekeys).
    pub sessions_established: u64,
    /// Sessions that replaced a current session.
    pub rekeys: u64,
    /// Handshake initiations sent (first tries and retries).
    pub initiations_sent: u64,
    /// Of those, retries after no answer.
    pub handshake_retries: u64,
    /// Handshakes abandoned after `handshake_giveup`.
    pub handshake_giveups: u64,
    /// Handshake responses sent.
    pub responses_sent: u64,
    /// Keepalives sent by the keepalive timer.
    pub keepalives_sent: u64,
    /// Empty transport messages received.
    pub keepalives_received: u64,
    /// X25519 DH operations of handshakes this peer initiated.
    pub dh_ops: u64,
}

impl PeerStats {
    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

/// Timer settings a peer keeps from its `MeshConfig`.
#[derive(Clone, Copy, Debug)]
struct Timers {
    limits: SendLimits,
    keepalive: Option<Duration>,
    retry: Duration,
    giveup: Duration,
}

/// A handshake we initiated and are waiting an answer for.
struct Pending {
    state: Box<snow::HandshakeState>,
    local_index: u32,
    started: Instant,
    sent: Instant,
    retry_after: Duration,
}

/// `now` is at least `d` after `t` (no overflow for any `d`).
fn reached(now: Instant, t: Instant, d: Duration) -> bool {
    now.saturating_duration_since(t) >= d
}

/// One remote host (by static public key): sessions, handshake, timers, counters.
pub struct Peer {
    local: Identity,
    remote: [u8; 32],
    slot: PeerSlot,
    psk: Option<[u8; 32]>,
    mac_to_remote: Mac1Key,
    mac_to_us: Mac1Key,
    t: Timers,
    clock: WallClock,
    shared: Arc<Shared>,
    sender: PeerSender,
    sessions: [Option<Session>; MAX_SESSIONS],
    current: Option<usize>,
    next_seq: u64,
    hs: Option<Pending>,
    want_local: bool,
    last_tx: Instant,
    last_ts_sent: u128,
    last_ts_received: Option<Timestamp>,
    stats: PeerStats,
    retired_tx: (u64, u64),
    dh_ops: Arc<AtomicU64>,
}

impl Peer {
    /// A peer for `remote_public` in `slot` (all its session indices carry the slot).
    /// With `cfg.keepalive` set it connects on its first [`poll`](Peer::poll).
    pub fn new(local: &Identity, remote_public: [u8; 32], cfg: &MeshConfig, slot: PeerSlot, now: Instant) -> Peer {
        let shared = Arc::new(Shared::new(now));
        let limits = SendLimits {
            rekey_after: cfg.rekey_after,
            rekey_after_messages: cfg.rekey_after_messages,
            reject_after: cfg.reject_after,
            reject_after_messages: cfg.reject_after_messages.min(COUNTER_LIMIT),
        };
        Peer {
            local: local.clone(),
            remote: remote_public,
            slot,
            psk: cfg.psk,
            mac_to_remote: Mac1Key::new(&remote_public),
            mac_to_us: Mac1Key::new(&local.public()),
            t: Timers { limits, keepalive: cfg.keepalive, retry: cfg.handshake_retry, giveup: cfg.handshake_giveup },
            clock: cfg.wall_clock.unwrap_or(WallClock { unix: Duration::ZERO, at: now }),
            sender: PeerSender::new(shared.clone()),
            shared,
            sessions: Default::default(),
            current: None,
            next_seq: 0,
            hs: None,
            want_local: cfg.keepalive.is_some(),
            last_tx: now,
            last_ts_sent: 0,
            last_ts_received: None,
            stats: PeerStats::default(),
            retired_tx: (0, 0),
            dh_ops: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A new peer for an admitted initiator, with the response written to `out`
    /// (at least `RESPONSE_LEN` = 76 bytes). Returns the peer and the response length.
    pub fn from_initiation(
        local: &Identity,
        init: Initiation,
        cfg: &MeshConfig,
        slot: PeerSlot,
        out: &mut [u8],
        now: Instant,
    ) -> Result<(Peer, usize), MeshError> {
        let mut p = Peer::new(local, init.remote_public, cfg, slot, now);
        let n = p.accept_initiation(init, out, now)?;
        Ok((p, n))
    }

    /// The remote host's static public key.
    pub fn remote_public(&self) -> &[u8; 32] {
        &self.remote
    }

    /// The slot this peer's session indices carry.
    pub fn slot(&self) -> PeerSlot {
        self.slot
    }

    /// A sending handle for another worker.
    pub fn sender(&self) -> PeerSender {
        PeerSender::new(self.shared.clone())
    }

    /// Whether a current session exists and is young enough to send on.
    pub fn is_up(&self, now: Instant) -> bool {
        self.current_session().is_some_and(|s| s.age(now) < self.t.limits.reject_after)
    }

    /// Whether a handshake we initiated is waiting for its response.
    pub fn handshake_in_progress(&self) -> bool {
        self.hs.is_some()
    }

    /// Starts a handshake now unless one is under way; writes the initiation to `out`
    /// (at least `MIN_CONTROL_BUF` = 132 bytes).
    pub fn initiate(&mut self, out: &mut [u8], now: Instant) -> Result<Option<usize>, MeshError> {
        if self.in_flight(now) {
            return Ok(None);
        }
        self.start_handshake(out, now).map(Some)
    }

    /// Encrypts one payload for this peer into `out` (`payload.len() + 33` bytes; at least
    /// 132 so an initiation fits when there is no session).
    pub fn encapsulate(
        &mut self,
        kind: PayloadKind,
        payload: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Result<Encapsulated, MeshError> {
        match self.sender.encapsulate(kind, payload, out, now) {
            Ok(len) => Ok(Encapsulated::Data { len }),
            Err(MeshError::NoSession) => {
                if self.in_flight(now) {
                    return Ok(Encapsulated::Pending);
                }
                let len = self.start_handshake(out, now)?;
                Ok(Encapsulated::Handshake { len })
            }
            Err(e) => Err(e),
        }
    }

    /// Encrypts `buf[payload]` in place (17 bytes of headroom before it, 16 after; see
    /// [`PeerSender::encapsulate_in_place`]) and returns where the message is. Without a
    /// session: `NoSession` and nothing written (the caller keeps the payload and calls
    /// [`Peer::initiate`]).
    pub fn encapsulate_in_place(
        &mut self,
        kind: PayloadKind,
        buf: &mut [u8],
        payload: std::ops::Range<usize>,
        now: Instant,
    ) -> Result<std::ops::Range<usize>, MeshError> {
        self.sender.encapsulate_in_place(kind, buf, payload, now)
    }

    /// Handles a response or transport message from this peer, copying it into `out`
    /// (at least `msg.len()` bytes) and decrypting there. See [`Decapsulated`].
    pub fn decapsulate(&mut self, msg: &[u8], out: &mut [u8], now: Instant) -> Result<Decapsulated, MeshError> {
        let Some(dst) = out.get_mut(..msg.len()) else {
            return Err(MeshError::BufferTooSmall { need: msg.len() });
        };
        dst.copy_from_slice(msg);
        self.decapsulate_in_place(dst, now)
    }

    /// Handles a response or transport message from this peer in place: payloads are
    /// decrypted inside `buf`, a handshake confirmation is written over it.
    pub fn decapsulate_in_place(&mut self, buf: &mut [u8], now: Instant) -> Result<Decapsulated, MeshError> {
        self.decap(buf, now).map_err(|r| self.drop(r))
    }

    fn drop(&mut self, r: DropReason) -> MeshError {
        self.stats.drops[r as usize] += 1;
        MeshError::Drop(r)
    }

    fn decap(&mut self, buf: &mut [u8], now: Instant) -> Result<Decapsulated, DropReason> {
        match wire::route(buf) {
            Route::Drop(r) => Err(r),
            Route::Initiation => Err(DropReason::Unexpected),
            Route::Peer { slot, .. } if slot != self.slot => Err(DropReason::UnknownIndex),
            Route::Peer { index, .. } if buf[0] == TYPE_RESPONSE => self.handle_response(buf, index, now),
            Route::Peer { index, .. } => self.handle_transport(buf, index, now),
        }
    }

    fn handle_response(&mut self, buf: &mut [u8], index: u32, now: Instant) -> Result<Decapsulated, DropReason> {
        let Some(p) = self.hs.as_mut().filter(|p| p.local_index == index) else {
            return Err(DropReason::UnknownIndex);
        };
        if !self.mac_to_us.verify(buf) {
            return Err(DropReason::BadMac);
        }
        // A failed read leaves the handshake in place: a forged response must not cancel
        // the real one (snow restores its state on a failed read).
        handshake::read_response(&mut p.state, buf).map_err(|_| DropReason::HandshakeFailed)?;
        let keys = handshake::split(&mut p.state).map_err(|_| DropReason::HandshakeFailed)?;
        let remote_index = wire::read_u32(buf, wire::field::INDEX);
        let s = self.new_session(keys, true, (index, remote_index), now).map_err(|_| DropReason::HandshakeFailed)?;
        self.hs = None;
        let i = self.insert(s);
        self.set_current(i, now);
        // Confirm at once so the responder can start sending on the new session.
        let reply_len = self.sender.keepalive(buf, now).unwrap_or(0);
        Ok(Decapsulated::HandshakeComplete { reply_len })
    }

    fn handle_transport(&mut self, buf: &mut [u8], index: u32, now: Instant) -> Result<Decapsulated, DropReason> {
        let i = self.find(index).ok_or(DropReason::UnknownIndex)?;
        let reject_after = self.t.limits.reject_after;
        let s = self.sessions[i].as_mut().ok_or(DropReason::UnknownIndex)?;
        if s.age(now) >= reject_after {
            return Err(DropReason::Expired);
        }
        let n = s.recv.open(buf)?;
        let (initiator, age, seq, first) = (s.initiator, s.age(now), s.seq, !s.confirmed);
        s.confirmed = true;
        if first && self.current_session().is_none_or(|c| c.seq < seq) {
            self.set_current(i, now);
        }
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += buf.len() as u64;
        // An initiator that only receives still rekeys before the session runs out
        // (WireGuard: REJECT - KEEPALIVE - REKEY_TIMEOUT; here 3/4 of the way from
        // rekey_after to reject_after).
        if self.current == Some(i) && initiator && age >= self.receive_rekey_age() && !self.in_flight(now) {
            self.want_local = true;
        }
        if n == 0 {
            self.stats.keepalives_received += 1;
            return Ok(Decapsulated::Keepalive);
        }
        let kind = PayloadKind::from(buf[TRANSPORT_HEADER_LEN]);
        Ok(Decapsulated::Data { kind, offset: TRANSPORT_HEADER_LEN + 1, len: n - 1 })
    }

    /// Answers an admitted initiation from this peer: writes the response to `out`
    /// (at least 76 bytes) and keeps the new session until the initiator uses it. Returns
    /// the response length. An initiation not newer than the last one accepted is a
    /// replay: dropped and counted (`DropReason::Replay`).
    pub fn accept_initiation(
        &mut self,
        mut init: Initiation,
        out: &mut [u8],
        now: Instant,
    ) -> Result<usize, MeshError> {
        if init.remote_public != self.remote {
            return Err(MeshError::WrongPeer);
        }
        if out.len() < RESPONSE_LEN {
            return Err(MeshError::BufferTooSmall { need: RESPONSE_LEN });
        }
        if self.last_ts_received.is_some_and(|last| init.timestamp <= last) {
            return Err(self.drop(DropReason::Replay));
        }
        let index = self.new_index()?;
        let len = handshake::write_response(&mut init.hs, index, init.remote_index, &self.mac_to_remote, out)?;
        let keys = handshake::split(&mut init.hs)?;
        let s = self.new_session(keys, false, (index, init.remote_index), now)?;
        self.insert(s);
        self.last_ts_received = Some(init.timestamp);
        self.stats.responses_sent += 1;
        self.last_tx = self.last_tx.max(now);
        Ok(len)
    }

    /// Runs due timers and returns at most one message to send, written to `out` (at
    /// least `MIN_CONTROL_BUF` = 132 bytes): a handshake retry, a new handshake (rekey,
    /// or a sender found no session), or a keepalive. Call it until it returns `None`
    /// whenever [`next_timeout`](Peer::next_timeout) has passed.
    pub fn poll(&mut self, out: &mut [u8], now: Instant) -> Result<Option<usize>, MeshError> {
        if out.len() < MIN_CONTROL_BUF {
            return Err(MeshError::BufferTooSmall { need: MIN_CONTROL_BUF });
        }
        self.expire(now);
        if let Some(p) = &self.hs {
            if reached(now, p.started, self.t.giveup) {
                self.hs = None;
                self.stats.handshake_giveups += 1;
                self.want_local = false;
                self.shared.clear_request();
            } else if reached(now, p.sent, p.retry_after) {
                self.stats.handshake_retries += 1;
                return self.start_handshake(out, now).map(Some);
            }
        }
        let want = self.shared.take_request() | std::mem::take(&mut self.want_local);
        if want && !self.in_flight(now) {
            return self.start_handshake(out, now).map(Some);
        }
        if let Some(k) = self.t.keepalive {
            if reached(now, self.last_tx_at(), k) {
                if self.current.is_some() {
                    if let Ok(len) = self.sender.keepalive(out, now) {
                        self.stats.keepalives_sent += 1;
                        return Ok(Some(len));
                    }
                }
                if !self.in_flight(now) {
                    return self.start_handshake(out, now).map(Some);
                }
                // Nothing can be sent while a handshake is under way: look again after
                // another interval (and do not report this deadline again).
                self.last_tx = now;
            }
        }
        Ok(None)
    }

    /// When [`poll`](Peer::poll) next has work (possibly in the past: due now), or `None`
    /// if nothing is scheduled.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.want_local || self.shared.handshake_requested() {
            return Some(self.shared.epoch);
        }
        let mut t: Option<Instant> = None;
        let mut add = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for s in self.sessions.iter().flatten() {
            add(s.created.checked_add(self.t.limits.reject_after));
        }
        if let Some(p) = &self.hs {
            add(p.sent.checked_add(p.retry_after));
            add(p.started.checked_add(self.t.giveup));
        } else if let Some(k) = self.t.keepalive {
            add(self.last_tx_at().checked_add(k));
        }
        t
    }

    /// Counters so far (transmit counters summed over all senders).
    pub fn stats(&self) -> PeerStats {
        let mut s = self.stats;
        let (mut bytes, mut packets) = self.retired_tx;
        for x in self.sessions.iter().flatten() {
            bytes += x.send.tx_bytes();
            packets += x.send.tx_packets();
        }
        s.tx_bytes = bytes;
        s.tx_packets = packets;
        s.dh_ops = self.dh_ops.load(Ordering::Relaxed);
        s
    }

    fn current_session(&self) -> Option<&Session> {
        self.current.and_then(|i| self.sessions.get(i)?.as_ref())
    }

    /// A handshake is under way: ours, or one we answered less than a retry ago.
    fn in_flight(&self, now: Instant) -> bool {
        self.hs.is_some()
            || self.sessions.iter().flatten().any(|s| !s.confirmed && !reached(now, s.created, self.t.retry))
    }

    fn receive_rekey_age(&self) -> Duration {
        let l = &self.t.limits;
        l.rekey_after.saturating_add(l.reject_after.saturating_sub(l.rekey_after).saturating_mul(3) / 4)
    }

    fn last_tx_at(&self) -> Instant {
        self.sessions.iter().flatten().filter_map(|s| s.send.last_tx()).fold(self.last_tx, Instant::max)
    }

    fn find(&self, index: u32) -> Option<usize> {
        self.sessions.iter().position(|s| s.as_ref().is_some_and(|s| s.local_index == index))
    }

    fn new_index(&self) -> Result<u32, MeshError> {
        let mut idx = self.slot.index(random_u32()?);
        for _ in 0..8 {
            let pending = self.hs.as_ref().is_some_and(|p| p.local_index == idx);
            if self.find(idx).is_none() && !pending {
                break;
            }
            idx = self.slot.index(random_u32()?);
        }
        Ok(idx)
    }

    fn new_session(
        &mut self,
        keys: ([u8; 32], [u8; 32]),
        initiator: bool,
        idx: (u32, u32),
        now: Instant,
    ) -> Result<Session, MeshError> {
        self.next_seq += 1;
        Session::new(keys, initiator, idx, self.next_seq, (now, self.shared.epoch), self.t.limits)
    }

    fn start_handshake(&mut self, out: &mut [u8], now: Instant) -> Result<usize, MeshError> {
        if out.len() < INITIATION_LEN {
            return Err(MeshError::BufferTooSmall { need: INITIATION_LEN });
        }
        let index = self.new_index()?;
        let mut st = handshake::initiator(&self.local, &self.remote, self.psk.as_ref(), &self.dh_ops)?;
        let ts_ns = self.clock.unix_nanos(now).max(self.last_ts_sent.saturating_add(1));
        let len = handshake::write_initiation(&mut st, index, &handshake::tai64n(ts_ns), &self.mac_to_remote, out)?;
        let max_jitter = MAX_JITTER.min(self.t.retry / 3).as_millis() as u32;
        let jitter = Duration::from_millis(u64::from(random_u32()? % (max_jitter + 1)));
        let started = self.hs.as_ref().map_or(now, |p| p.started);
        self.hs = Some(Pending {
            state: Box::new(st),
            local_index: index,
            started,
            sent: now,
            retry_after: self.t.retry.saturating_add(jitter),
        });
        self.last_ts_sent = ts_ns;
        self.stats.initiations_sent += 1;
        self.last_tx = self.last_tx.max(now);
        Ok(len)
    }

    /// Stores a session, forgetting the oldest non-current one if the set is full.
    fn insert(&mut self, s: Session) -> usize {
        let i = self.sessions.iter().position(Option::is_none).unwrap_or_else(|| {
            (0..MAX_SESSIONS)
                .filter(|&i| Some(i) != self.current)
                .min_by_key(|&i| self.sessions[i].as_ref().map_or(0, |s| s.seq))
                .unwrap_or(0)
        });
        if let Some(old) = self.sessions[i].replace(s) {
            self.retire(old);
        }
        i
    }

    fn set_current(&mut self, i: usize, now: Instant) {
        let Some(s) = self.sessions[i].as_ref() else { return };
        self.shared.publish(Some(s.send.clone()));
        if self.current.is_some() {
            self.stats.rekeys += 1;
        }
        self.current = Some(i);
        self.stats.sessions_established += 1;
        self.stats.last_handshake = Some(now);
        // Whatever asked for a handshake (a rekey, no session) is served by this one.
        self.want_local = false;
        self.shared.clear_request();
    }

    /// Forgets a session, keeping its transmit counters and last send time.
    fn retire(&mut self, s: Session) {
        self.retired_tx.0 += s.send.tx_bytes();
        self.retired_tx.1 += s.send.tx_packets();
        if let Some(t) = s.send.last_tx() {
            self.last_tx = self.last_tx.max(t);
        }
    }

    /// Drops sessions older than `reject_after`.
    fn expire(&mut self, now: Instant) {
        for i in 0..MAX_SESSIONS {
            if self.sessions[i].as_ref().is_some_and(|s| s.age(now) >= self.t.limits.reject_after) {
                if self.current == Some(i) {
                    self.shared.publish(None);
                    self.current = None;
                }
                if let Some(s) = self.sessions[i].take() {
                    self.retire(s);
                }
            }
        }
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idx: Vec<(u32, bool)> = self.sessions.iter().flatten().map(|s| (s.local_index, s.confirmed)).collect();
        f.debug_struct("Peer")
            .field("remote", &super::key_to_base64(&self.remote))
            .field("slot", &self.slot)
            .field("sessions", &idx)
            .field("current", &self.current_session().map(|s| s.local_index))
            .field("handshake", &self.hs.as_ref().map(|p| p.local_index))
            .finish()
    }
}
