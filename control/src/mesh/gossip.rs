//! [`Mesh`]: one host's membership and routing state machine. It floods link states
//! reliably (sequence numbers, ages, digests), decides whom to dial, computes routes and
//! reports changes. It owns no socket, no session and no clock; see the module docs of
//! [`super`] for how the caller drives it.
//!
//! Flooding: a newer link state received from neighbour N is stored and queued for every
//! other neighbour; an older one makes us queue ours back to N. When a session comes
//! up both ends queue a full sync. Every `digest_ms` each neighbour gets a digest and
//! answers with what it shows to be missing, which repairs lost messages. Queues are per
//! neighbour sets of origins, so they are bounded and always send the newest copy.
//!
//! Dialling: every known peer without a session is dialled with exponential backoff
//! (with seeded jitter), rotating over its addresses, except peers whose link state says
//! they cannot accept inbound traffic: those dial us (and may be dialled back at the
//! address they came from for `inbound_grace_ms` after their session dropped). When
//! both ends could dial, the one with the larger id waits `backoff_min_ms` first so
//! that usually only one handshake starts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use super::topology::{Hop, Install, Topology};
use super::wire::{Advert, LinkState, Message, RelayHeader, ShortId, WireRelayHeader};
use super::{Config, Event, MeshError, PeerId, PeerInfo, Route, MAX_ADDRS, MAX_EVENTS, MAX_PEERS};

/// Counters of one [`Mesh`] (one writer: the mesh).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Link states stored (new origin or newer seq).
    pub adverts_accepted: u64,
    /// Link states ignored as not newer.
    pub adverts_stale: u64,
    /// Link states ignored as older than `max_age_ms`.
    pub adverts_too_old: u64,
    /// New origins refused because the database was full.
    pub adverts_refused_full: u64,
    /// Control messages that did not decode.
    pub decode_errors: u64,
    /// Times a copy of our own link state newer than ours came back (a restart without
    /// a higher boot counter) and we jumped past it.
    pub seq_bumps: u64,
    /// Events dropped because the caller did not poll them.
    pub events_dropped: u64,
}

/// What to do with a message carrying a [`RelayHeader`] (see [`Mesh::relay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayAction {
    /// It is for this host.
    Deliver,
    /// Send it to the direct neighbour `next_hop` with this header (ttl lowered).
    Forward {
        /// The direct neighbour.
        next_hop: PeerId,
        /// The header to write in place of the received one.
        header: RelayHeader,
    },
    /// Drop it.
    Drop(RelayDrop),
}

/// Why a relayed message is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RelayDrop {
    /// The hop limit is used up (a loop during convergence, or a very long path).
    TtlExpired,
    /// No route to the destination.
    NoRoute,
    /// Our own message came back to us (a loop).
    Looped,
}

/// A direct session that is up.
#[derive(Clone, Copy, Debug)]
struct Link {
    addr: SocketAddr,
    inbound: bool,
}

/// Dial bookkeeping of one peer.
#[derive(Clone, Debug, Default)]
struct DialState {
    /// Addresses given by [`Mesh::add_peer`]; non-empty means configured.
    configured: Vec<SocketAddr>,
    /// Address its last session came from.
    observed: Option<SocketAddr>,
    /// Dials since the last session (picks the address and the backoff).
    attempts: u32,
    /// Not before this instant.
    next_at: u64,
    /// When we last asked to dial it (tells outbound from inbound sessions).
    dialing_since: Option<u64>,
    /// A peer that cannot accept inbound dialled us: its address and until when we may
    /// dial it back there.
    pinhole: Option<(SocketAddr, u64)>,
}

/// What is queued for one neighbour.
#[derive(Clone, Debug, Default)]
struct Pending {
    sync: bool,
    digest: bool,
    /// A [`Message::Probe`] (the direct path is suspect, see [`super::liveness`]).
    probe: bool,
    /// A [`Message::ProbeReply`] (the neighbour probed us).
    probe_reply: bool,
    origins: BTreeSet<PeerId>,
}

/// Seeded SplitMix64: the only randomness (dial jitter).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One host's mesh membership and routing core. Owns the link-state database, the
/// direct-session set it is told about, dial schedules, routes, and bounded output
/// queues. Must not do I/O: every effect is something the caller polls.
#[derive(Clone, Debug)]
pub struct Mesh {
    me: PeerId,
    cfg: Config,
    addrs: Vec<SocketAddr>,
    seq: u64,
    topo: Topology,
    links: BTreeMap<PeerId, Link>,
    dial: BTreeMap<PeerId, DialState>,
    routes: BTreeMap<PeerId, Hop>,
    known: BTreeSet<PeerId>,
    /// Known peers and this host by [`ShortId`] (`None`: two keys share it).
    shorts: std::collections::HashMap<ShortId, Option<PeerId>>,
    pending: BTreeMap<PeerId, Pending>,
    ready: VecDeque<(PeerId, Vec<u8>)>,
    events: VecDeque<Event>,
    next_refresh: u64,
    next_digest: u64,
    rng: Rng,
    stats: MeshStats,
}

impl Mesh {
    /// A mesh core for host `me`, dialable at `addrs` (at most [`MAX_ADDRS`]).
    ///
    /// `seq_start` must exceed every sequence number this host used before, e.g. a
    /// persisted boot counter shifted left by 32 bits, or the wall clock in
    /// microseconds. (If it does not, the first copy of an old link state of ours that
    /// a neighbour hands back makes us jump past it: slower, but it recovers.) `seed`
    /// feeds the dial jitter. `now` starts the timers.
    pub fn new(
        me: PeerId,
        addrs: Vec<SocketAddr>,
        cfg: Config,
        seq_start: u64,
        seed: u64,
        now: u64,
    ) -> Result<Mesh, MeshError> {
        cfg.validate()?;
        if addrs.len() > MAX_ADDRS {
            return Err(MeshError::Config("more than MAX_ADDRS addresses"));
        }
        let mut m = Mesh {
            me,
            topo: Topology::new(me, cfg.max_peers),
            next_refresh: now,
            next_digest: now.saturating_add(cfg.digest_ms),
            cfg,
            addrs,
            seq: seq_start,
            links: BTreeMap::new(),
            dial: BTreeMap::new(),
            routes: BTreeMap::new(),
            known: BTreeSet::new(),
            shorts: [(me.short_id(), Some(me))].into_iter().collect(),
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            rng: Rng(seed),
            stats: MeshStats::default(),
        };
        m.originate(now);
        Ok(m)
    }

    // ---- getters -------------------------------------------------------------------

    /// This host.
    pub fn id(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> MeshStats {
        self.stats
    }

    /// This host's current link state.
    pub fn own_state(&self) -> Option<&LinkState> {
        self.topo.state(&self.me)
    }

    /// The stored link state of `origin`.
    pub fn link_state(&self, origin: &PeerId) -> Option<&LinkState> {
        self.topo.state(origin)
    }

    /// The whole database, ascending by origin (this host included).
    pub fn link_states(&self) -> Vec<LinkState> {
        self.topo.states().cloned().collect()
    }

    /// True while a direct session with `peer` is up.
    pub fn is_linked(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Peers with a direct session, ascending.
    pub fn neighbours(&self) -> Vec<PeerId> {
        self.links.keys().copied().collect()
    }

    /// The direct neighbour to send traffic for `dst` to: `dst` itself while a session
    /// with it is up, else the first hop of the shortest path (ties: smallest id).
    pub fn next_hop(&self, dst: &PeerId) -> Option<PeerId> {
        self.routes.get(dst).map(|h| h.next_hop)
    }

    /// Next hop and path length towards `dst`.
    pub fn route(&self, dst: &PeerId) -> Option<Hop> {
        self.routes.get(dst).copied()
    }

    /// Every reachable peer, ascending by id.
    pub fn route_table(&self) -> Vec<Route> {
        self.routes.iter().map(|(d, h)| Route { dst: *d, next_hop: h.next_hop, hops: h.hops }).collect()
    }

    /// Every known or configured peer, ascending by id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let ids: BTreeSet<PeerId> =
            self.known.iter().chain(self.dial.keys()).copied().filter(|p| *p != self.me).collect();
        ids.into_iter()
            .map(|id| {
                let st = self.topo.state(&id);
                PeerInfo {
                    id,
                    addrs: self.addrs_of(&id),
                    can_accept_inbound: st.map(|s| s.can_accept_inbound),
                    seq: st.map(|s| s.seq),
                    link: self.links.get(&id).map(|l| l.addr),
                    route: self.routes.get(&id).copied(),
                    configured: self.dial.get(&id).is_some_and(|d| !d.configured.is_empty()),
                }
            })
            .collect()
    }

    /// What to do with a message carrying `hdr` that arrived over a session: deliver
    /// it here, forward it (with `ttl` lowered by one) or drop it.
    pub fn relay(&self, hdr: &RelayHeader) -> RelayAction {
        if hdr.dst == self.me {
            return RelayAction::Deliver;
        }
        if hdr.src == self.me {
            return RelayAction::Drop(RelayDrop::Looped);
        }
        if hdr.ttl <= 1 {
            return RelayAction::Drop(RelayDrop::TtlExpired);
        }
        match self.next_hop(&hdr.dst) {
            Some(next_hop) => RelayAction::Forward { next_hop, header: RelayHeader { ttl: hdr.ttl - 1, ..*hdr } },
            None => RelayAction::Drop(RelayDrop::NoRoute),
        }
    }

    /// The peers a header read from the wire names (`None` when either id is not this
    /// host or a known peer, or is shared by two known keys).
    pub fn resolve(&self, h: &WireRelayHeader) -> Option<RelayHeader> {
        let src = (*self.shorts.get(&h.src)?)?;
        let dst = (*self.shorts.get(&h.dst)?)?;
        Some(RelayHeader { src, dst, ttl: h.ttl })
    }

    /// The header and first hop for a message this host sends to `dst` (`None` when
    /// unreachable). When the first hop is `dst` the header may be left out.
    pub fn header_to(&self, dst: &PeerId) -> Option<(PeerId, RelayHeader)> {
        let n = self.next_hop(dst)?;
        Some((n, RelayHeader { src: self.me, dst: *dst, ttl: self.cfg.ttl }))
    }

    /// The next instant [`Mesh::handle_timeout`] or [`Mesh::wants_dial`] has work.
    /// Queued transmits and events are not timers: poll them after every input.
    pub fn poll_timeout(&self) -> Option<u64> {
        let dial = self
            .dial
            .iter()
            .filter(|(p, d)| !self.links.contains_key(p) && !self.candidates(p, d, None).is_empty())
            .map(|(_, d)| d.next_at)
            .min();
        [Some(self.next_refresh), Some(self.next_digest), self.topo.next_expiry(), dial].into_iter().flatten().min()
    }

    // ---- inputs and mutators -------------------------------------------------------

    /// Configures a member to dial at `addr` (several calls add addresses). Configured
    /// peers are dialled until a session is up, again after it drops, and never
    /// forgotten. Unless the peer's link state says it cannot accept inbound traffic.
    pub fn add_peer(&mut self, peer: PeerId, addr: SocketAddr, now: u64) -> Result<(), MeshError> {
        if peer == self.me {
            return Err(MeshError::Myself);
        }
        let d = self.dial.entry(peer).or_insert_with(|| DialState { next_at: now, ..DialState::default() });
        // Named by the operator (again): dial now, whatever the backoff had reached.
        d.next_at = d.next_at.min(now);
        d.attempts = 0;
        if !d.configured.contains(&addr) && d.configured.len() < MAX_ADDRS {
            d.configured.push(addr);
        }
        Ok(())
    }

    /// Stops dialling a configured peer for its configuration's sake (it is still
    /// dialled while its link state is held, like any learned peer).
    pub fn remove_peer(&mut self, peer: &PeerId) {
        if let Some(d) = self.dial.get_mut(peer) {
            d.configured.clear();
        }
        self.forget_if_unknown(peer);
    }

    /// Changes the addresses this host advertises (at most [`MAX_ADDRS`]).
    pub fn set_addrs(&mut self, addrs: Vec<SocketAddr>, now: u64) -> Result<(), MeshError> {
        if addrs.len() > MAX_ADDRS {
            return Err(MeshError::Config("more than MAX_ADDRS addresses"));
        }
        if addrs != self.addrs {
            self.addrs = addrs;
            self.originate(now);
        }
        Ok(())
    }

    /// A direct encrypted session with `peer` is up, at underlay address `addr`. It
    /// counts as ours (outbound) when we asked to dial `peer` within
    /// `dial_timeout_ms`, else as the peer's (inbound). A second call for a live session
    /// (a re-handshake, a roamed address) updates the address and syncs again.
    pub fn link_up(&mut self, peer: PeerId, addr: SocketAddr, now: u64) -> Result<(), MeshError> {
        if peer == self.me {
            return Err(MeshError::Myself);
        }
        if !self.links.contains_key(&peer) && self.links.len() >= MAX_PEERS {
            return Err(MeshError::TooManyLinks);
        }
        let timeout = self.cfg.dial_timeout_ms;
        let d = self.dial.entry(peer).or_default();
        let outbound = d.dialing_since.is_some_and(|t| now.saturating_sub(t) <= timeout);
        d.dialing_since = None;
        d.attempts = 0;
        d.observed = Some(addr);
        d.pinhole = None;
        let inbound = match self.links.get(&peer) {
            Some(old) => old.inbound && !outbound,
            None => !outbound,
        };
        let was_up = self.links.insert(peer, Link { addr, inbound }).is_some();
        self.pending.entry(peer).or_default().sync = true;
        if !was_up {
            self.originate(now);
            self.after_change();
        }
        Ok(())
    }

    /// The direct session with `peer` is gone (closed, timed out, or never answered
    /// keepalives). Routes through it are withdrawn at once.
    pub fn link_down(&mut self, peer: &PeerId, now: u64) {
        let Some(link) = self.links.remove(peer) else { return };
        self.pending.remove(peer);
        self.ready.retain(|(p, _)| p != peer);
        let wait = self.cfg.backoff_min_ms + self.jitter(self.cfg.backoff_min_ms);
        let grace = self.cfg.inbound_grace_ms;
        if let Some(d) = self.dial.get_mut(peer) {
            d.attempts = 0;
            d.next_at = now.saturating_add(wait);
            if link.inbound {
                d.pinhole = Some((link.addr, now.saturating_add(grace)));
            }
        }
        self.originate(now);
        self.after_change();
    }

    /// A control message from direct neighbour `from`. Garbage is refused without any
    /// change; a valid message may store link states, queue answers and change routes.
    pub fn handle_message(&mut self, from: &PeerId, bytes: &[u8], now: u64) -> Result<(), MeshError> {
        if !self.links.contains_key(from) {
            return Err(MeshError::NotNeighbour(*from));
        }
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.decode_errors += 1;
                return Err(MeshError::Decode(e));
            }
        };
        match msg {
            Message::Update { adverts } | Message::Sync { adverts } => {
                let mut changed = false;
                for ad in adverts {
                    changed |= self.accept(from, ad, now);
                }
                if changed {
                    self.after_change();
                }
            }
            Message::Digest { have } => self.handle_digest(from, &have, now),
            Message::Probe => self.pending.entry(*from).or_default().probe_reply = true,
            // Its arrival was the point (the caller saw a message from `from`).
            Message::ProbeReply => {}
        }
        Ok(())
    }

    /// Queues a [`Message::Probe`] for the direct neighbour `peer`, which answers it
    /// with a [`Message::ProbeReply`]: the caller's path detector wants to hear from it
    /// (see [`super::liveness`]). False (nothing queued) when `peer` is not linked.
    pub fn probe(&mut self, peer: &PeerId) -> bool {
        if !self.links.contains_key(peer) {
            return false;
        }
        self.pending.entry(*peer).or_default().probe = true;
        true
    }

    /// Runs the timers due at `now`: re-originates our link state, schedules digests,
    /// drops aged-out link states (their peers leave the routes; `PeerGone` follows).
    pub fn handle_timeout(&mut self, now: u64) {
        if now >= self.next_refresh {
            self.originate(now);
        }
        if now >= self.next_digest {
            for n in self.links.keys() {
                self.pending.entry(*n).or_default().digest = true;
            }
            self.next_digest = now.saturating_add(self.cfg.digest_ms);
        }
        let gone = self.topo.expire(now);
        if !gone.is_empty() {
            self.after_change();
        }
    }

    // ---- outputs -------------------------------------------------------------------

    /// The next control message to send: (direct neighbour, encoded [`Message`]).
    /// `now` ages the link states it carries.
    pub fn poll_transmit(&mut self, now: u64) -> Option<(PeerId, Vec<u8>)> {
        if self.ready.is_empty() && !self.pending.is_empty() {
            self.build(now);
        }
        self.ready.pop_front()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Sessions to start now: (peer, address to dial). Each returned peer is not offered
    /// again before its backoff has passed; a session coming up resets the backoff.
    pub fn wants_dial(&mut self, now: u64) -> Vec<(PeerId, SocketAddr)> {
        let due: Vec<(PeerId, Vec<SocketAddr>)> = self
            .dial
            .iter()
            .filter(|(p, d)| !self.links.contains_key(p) && d.next_at <= now)
            .map(|(p, d)| (*p, self.candidates(p, d, Some(now))))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for (peer, cands) in due {
            let (min, max) = (self.cfg.backoff_min_ms, self.cfg.backoff_max_ms);
            let attempts = self.dial.get(&peer).map_or(0, |d| d.attempts);
            let backoff = min.saturating_mul(1u64 << attempts.min(20)).min(max);
            let wait = backoff + self.jitter(backoff);
            if let Some(d) = self.dial.get_mut(&peer) {
                out.push((peer, cands[d.attempts as usize % cands.len()]));
                d.attempts = d.attempts.saturating_add(1);
                d.dialing_since = Some(now);
                d.next_at = now.saturating_add(wait);
            }
        }
        out
    }

    // ---- internals -----------------------------------------------------------------

    /// A random extra delay in `0..=base/4`.
    fn jitter(&mut self, base: u64) -> u64 {
        self.rng.next() % (base / 4 + 1)
    }

    /// Makes a new link state for this host and queues it for every neighbour.
    fn originate(&mut self, now: u64) {
        self.seq = self.seq.saturating_add(1);
        let state = LinkState {
            origin: self.me,
            seq: self.seq,
            addrs: self.addrs.clone(),
            links: self.links.keys().copied().collect(),
            can_accept_inbound: self.cfg.can_accept_inbound,
        };
        self.topo.set_own(state);
        for n in self.links.keys() {
            self.pending.entry(*n).or_default().origins.insert(self.me);
        }
        self.next_refresh = now.saturating_add(self.cfg.refresh_ms);
    }

    /// Handles one received advert; true when the database changed.
    fn accept(&mut self, from: &PeerId, ad: Advert, now: u64) -> bool {
        if ad.age_ms >= self.cfg.max_age_ms {
            self.stats.adverts_too_old += 1;
            return false;
        }
        let origin = ad.state.origin;
        if origin == self.me {
            // Newer than ours, or a different state under our current number: a copy
            // from before a restart. Jump past it.
            let collides = ad.state.seq == self.seq && self.topo.state(&self.me) != Some(&ad.state);
            if ad.state.seq > self.seq || collides {
                self.seq = ad.state.seq;
                self.stats.seq_bumps += 1;
                self.originate(now);
            } else if ad.state.seq < self.seq {
                self.pending.entry(*from).or_default().origins.insert(self.me);
            }
            return false;
        }
        let expires_at = now.saturating_add(self.cfg.max_age_ms - ad.age_ms);
        match self.topo.install(ad.state, expires_at) {
            Install::New | Install::Newer => {
                self.stats.adverts_accepted += 1;
                for n in self.links.keys().filter(|n| *n != from) {
                    self.pending.entry(*n).or_default().origins.insert(origin);
                }
                if !self.dial.contains_key(&origin) {
                    let delay =
                        if self.cfg.can_accept_inbound && origin < self.me { self.cfg.backoff_min_ms } else { 0 };
                    self.dial.insert(origin, DialState { next_at: now.saturating_add(delay), ..DialState::default() });
                }
                true
            }
            Install::Older => {
                self.stats.adverts_stale += 1;
                self.pending.entry(*from).or_default().origins.insert(origin);
                false
            }
            Install::Same => {
                self.stats.adverts_stale += 1;
                false
            }
            Install::Full => {
                self.stats.adverts_refused_full += 1;
                false
            }
        }
    }

    /// Queues for `from` whatever its digest shows it lacks or holds older.
    fn handle_digest(&mut self, from: &PeerId, have: &[(PeerId, u64)], now: u64) {
        let theirs: BTreeMap<PeerId, u64> = have.iter().copied().collect();
        if let Some(&seq) = theirs.get(&self.me).filter(|s| **s > self.seq) {
            self.seq = seq;
            self.stats.seq_bumps += 1;
            self.originate(now);
        }
        let missing: Vec<PeerId> = self
            .topo
            .digest()
            .into_iter()
            .filter(|(o, seq)| theirs.get(o).is_none_or(|s| s < seq))
            .map(|(o, _)| o)
            .collect();
        if !missing.is_empty() {
            self.pending.entry(*from).or_default().origins.extend(missing);
        }
    }

    /// Recomputes routes and known peers, queueing events for what changed.
    fn after_change(&mut self) {
        let my_links: Vec<PeerId> = self.links.keys().copied().collect();
        let routes = self.topo.routes(&my_links);
        let known: BTreeSet<PeerId> =
            self.topo.origins().chain(my_links.iter()).copied().filter(|p| *p != self.me).collect();
        let appeared: Vec<PeerId> = known.difference(&self.known).copied().collect();
        for p in appeared {
            let ev = Event::PeerAppeared(p, self.addrs_of(&p));
            self.push_event(ev);
        }
        let dsts: BTreeSet<PeerId> = routes.keys().chain(self.routes.keys()).copied().collect();
        for d in dsts {
            let (old, new) = (self.routes.get(&d).map(|h| h.next_hop), routes.get(&d).map(|h| h.next_hop));
            if old != new {
                self.push_event(Event::RouteChanged(d, new));
            }
        }
        let gone: Vec<PeerId> = self.known.difference(&known).copied().collect();
        self.routes = routes;
        self.known = known;
        self.shorts.clear();
        for p in self.known.iter().chain(std::iter::once(&self.me)) {
            let e = self.shorts.entry(p.short_id()).or_insert(Some(*p));
            if *e != Some(*p) {
                *e = None;
            }
        }
        for p in gone {
            self.push_event(Event::PeerGone(p));
            self.forget_if_unknown(&p);
        }
    }

    /// Drops the dial state of a peer that is neither known, linked nor configured.
    fn forget_if_unknown(&mut self, peer: &PeerId) {
        let keep = self.known.contains(peer)
            || self.links.contains_key(peer)
            || self.dial.get(peer).is_some_and(|d| !d.configured.is_empty());
        if !keep {
            self.dial.remove(peer);
        }
    }

    fn push_event(&mut self, ev: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    /// Addresses of a peer: advertised ones, else configured and observed ones.
    fn addrs_of(&self, peer: &PeerId) -> Vec<SocketAddr> {
        if let Some(s) = self.topo.state(peer) {
            if !s.addrs.is_empty() {
                return s.addrs.clone();
            }
        }
        let mut v = Vec::new();
        if let Some(d) = self.dial.get(peer) {
            v.extend(d.configured.iter().copied());
            v.extend(d.observed.filter(|a| !v.contains(a)));
        }
        if v.is_empty() {
            v.extend(self.links.get(peer).map(|l| l.addr));
        }
        v
    }

    /// Where `peer` may be dialled at `now` (`None`: ignore pinhole expiry): nowhere if
    /// its link state says it cannot accept inbound, unless it dialled us recently.
    fn candidates(&self, peer: &PeerId, d: &DialState, now: Option<u64>) -> Vec<SocketAddr> {
        match self.topo.state(peer) {
            Some(s) if !s.can_accept_inbound => match d.pinhole {
                Some((addr, until)) if now.is_none_or(|t| t <= until) => vec![addr],
                _ => Vec::new(),
            },
            st => {
                let mut v: Vec<SocketAddr> = d.configured.clone();
                for a in st.map(|s| s.addrs.as_slice()).unwrap_or(&[]).iter().chain(d.observed.iter()) {
                    if !v.contains(a) {
                        v.push(*a);
                    }
                }
                v
            }
        }
    }

    /// Turns the pending sets into encoded messages in `ready`.
    fn build(&mut self, now: u64) {
        let pending = std::mem::take(&mut self.pending);
        for (n, p) in pending {
            if !self.links.contains_key(&n) {
                continue;
            }
            // Small and time-sensitive: ahead of the link states.
            if p.probe {
                self.ready.push_back((n, Message::Probe.encode()));
            }
            if p.probe_reply {
                self.ready.push_back((n, Message::ProbeReply.encode()));
            }
            if p.sync || !p.origins.is_empty() {
                let origins: Vec<PeerId> =
                    if p.sync { self.topo.origins().copied().collect() } else { p.origins.into_iter().collect() };
                let adverts: Vec<Advert> =
                    origins.iter().filter_map(|o| self.topo.advert(o, now, self.cfg.max_age_ms)).collect();
                for bytes in self.chunk(adverts, p.sync) {
                    self.ready.push_back((n, bytes));
                }
            }
            if p.digest {
                self.ready.push_back((n, Message::Digest { have: self.topo.digest() }.encode()));
            }
        }
    }

    /// Encodes adverts as messages of about `max_message_bytes` at most.
    fn chunk(&self, adverts: Vec<Advert>, sync: bool) -> Vec<Vec<u8>> {
        let wrap =
            |adverts: Vec<Advert>| if sync { Message::Sync { adverts } } else { Message::Update { adverts } }.encode();
        let limit = self.cfg.max_message_bytes.saturating_sub(64);
        let mut out = Vec::new();
        let mut cur: Vec<Advert> = Vec::new();
        let mut size = 0;
        for ad in adverts {
            let len = serde_json::to_vec(&ad).map_or(0, |b| b.len()) + 1;
            if !cur.is_empty() && size + len > limit {
                out.push(wrap(std::mem::take(&mut cur)));
                size = 0;
            }
            size += len;
            cur.push(ad);
        }
        if !cur.is_empty() {
            out.push(wrap(cur));
        }
        out
    }
}
