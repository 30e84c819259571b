//! The mesh agent: one thread that owns this host's mesh UDP socket, its encrypted
//! sessions to other hosts (`dataplane::mesh`: Noise IK / IKpsk1, ChaCha20-Poly1305,
//! replay window, rekeying, keepalives, handshake limits) and the mesh topology
//! (`crate::mesh`: link state, discovery, shortest-path relays).
//!
//! - Frames of encrypted networks are sealed and sent by the workers themselves along
//!   the routes this agent publishes (`meshlink::TxRoute`: the next hop's sender,
//!   address and relay header); frames without a usable route or session come to the
//!   agent through the workers' `MeshPeerPort`s. Either way each goes, inside the session
//!   to the next hop, with a relay header naming origin and destination. A relay decrypts, re-encrypts for its own next hop (every hop is an
//!   authenticated session; nothing crosses the underlay in clear).
//! - The topology's own messages travel as encrypted control payloads.
//! - Joining by address only: a small hello exchange reveals the member's public key
//!   (public keys are not secret). Admission is decided by the Noise handshake: a peer
//!   must be listed by key or prove the password; anyone else is refused and counted.
//! - A direct link is down after `dead_after` without any message (idle peers), or
//!   within seconds once data sent on it goes unanswered and so do probes
//!   (`crate::mesh::liveness`, fed from the sessions' transmit counters on the timer:
//!   nothing on the workers' path); routes then take relays, and `mesh peers` says so.
//! - Reachable and lost peers are reported to the controller, which adds and removes
//!   the workers' ports.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use dataplane::mesh::{wire, Decapsulated, Encapsulated, Identity, MeshConfig, PayloadKind, Peer, PeerSlot, Responder};
use dataplane::poll::{Epoll, EventFd};
use dataplane::offload::{SegCsum, Segmenter, TcpCoalescer};
use dataplane::port::meshlink::{stage_segment, AgentSide, MeshFrame, SealBatch, TxRoute, SEAL_BUF_LEN, SEAL_HEAD};
use dataplane::port::tunnel::{enable_udp_gro, from_sockaddr, recv_gro};
use dataplane::vnet::VnetHdr;
use serde_json::{json, Value};
use tracing::{debug, info};

use crate::mesh::{
    Config as TopoConfig, Event, Liveness, LivenessAction, LivenessConfig, Mesh, PathState, PeerId, RelayAction, RelayHeader,
};

use dataplane::mesh::hello::{self, HelloError, HelloKey, HELLO_REQ, HELLO_RESP};
const QUEUE: usize = 64;
const TOKEN_SOCK: u64 = 1;
const TOKEN_WORKERS: u64 = 2;
const TOKEN_CMD: u64 = 3;

/// How the agent runs.
pub struct MeshOpts {
    /// Underlay address and port of this host's mesh socket.
    pub listen: SocketAddr,
    pub identity: Identity,
    pub cfg: MeshConfig,
    /// Members to join (`--mesh-peer`), by address.
    pub join: Vec<SocketAddr>,
    /// This host can receive unsolicited inbound UDP (false behind a firewall that only
    /// lets replies in: others then never dial it; it dials out and keeps alive).
    pub can_accept_inbound: bool,
}

/// Requests from the controller.
pub enum Cmd {
    Peers(Sender<Value>),
    Connect(SocketAddr),
    /// Stop asking a member that has not answered; says whether it was waiting.
    Forget(SocketAddr, Sender<bool>),
}

/// What the agent tells the controller.
#[derive(Clone, Debug)]
pub enum MeshEvent {
    /// A peer is reachable (directly or through relays): `index` is its number on the
    /// links to the workers.
    PeerUp { index: u32, key: [u8; 32] },
    PeerDown { index: u32, key: [u8; 32] },
}

/// The controller's handle on the running agent.
pub struct MeshHandle {
    cmd: Sender<Cmd>,
    wake: Arc<EventFd>,
    pub events: Receiver<MeshEvent>,
    pub public: [u8; 32],
}

impl MeshHandle {
    fn send(&self, c: Cmd) {
        let _ = self.cmd.send(c);
        self.wake.wake();
    }

    /// The peer list for `vswitchctl mesh peers`.
    pub fn peers(&self) -> Value {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Cmd::Peers(tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(Value::Null)
    }

    /// Joins the member at `addr`.
    pub fn connect(&self, addr: SocketAddr) {
        self.send(Cmd::Connect(addr));
    }

    /// Stops asking the member at `addr` (`mesh connect` or `--mesh-peer`) while it has
    /// not answered; false if it was not waiting (unknown, or joined already).
    pub fn forget(&self, addr: SocketAddr) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Cmd::Forget(addr, tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
    }
}

struct PeerState {
    key: [u8; 32],
    session: Option<Peer>,
    addr: Option<SocketAddr>,
    /// Payloads waiting for a handshake (bounded).
    queue: VecDeque<(PayloadKind, Vec<u8>)>,
    /// Reported to the controller as reachable.
    reachable: bool,
    /// Last authenticated message from it.
    last_rx: Option<Instant>,
    /// Whether the direct path carries our data (data sent, nothing back: probed, then
    /// declared down so that routes take a relay).
    live: Liveness,
    /// Control messages the agent sealed for it (not data: they do not arm `live`).
    ctl_sent: u64,
    /// The direct link was up at the last timer tick.
    was_linked: bool,
    /// The sequence number of its link state last looked at while linked: a newer one
    /// that does not list us means it has no direct link to us any more.
    seen_seq: Option<u64>,
}

impl PeerState {
    fn new(key: [u8; 32]) -> PeerState {
        PeerState {
            key,
            session: None,
            addr: None,
            queue: VecDeque::new(),
            reachable: false,
            last_rx: None,
            live: Liveness::new(LivenessConfig::default(), 0),
            ctl_sent: 0,
            was_linked: false,
            seen_seq: None,
        }
    }

    /// Data messages sealed for it on the direct path so far, by the workers and the
    /// agent: the session's transmit counter (which the workers already keep) less
    /// keepalives and the agent's control messages. Only compared for change.
    fn data_sent(&self) -> u64 {
        let Some(s) = self.session.as_ref().map(|p| p.stats()) else { return 0 };
        s.tx_packets.wrapping_sub(s.keepalives_sent).wrapping_sub(self.ctl_sent)
    }
}

/// A member asked for by address (`--mesh-peer`, `mesh connect`) that has not answered
/// our hello yet.
struct Join {
    addr: SocketAddr,
    last: Option<Instant>,
    /// Hellos sent so far.
    sent: u32,
    /// The "no answer" warning was logged.
    warned: bool,
}

impl Join {
    fn new(addr: SocketAddr) -> Join {
        Join { addr, last: None, sent: 0, warned: false }
    }

    /// Every second for the first 10 hellos, then every 5 s, from the 60th every 30 s.
    fn interval(&self) -> Duration {
        Duration::from_secs(match self.sent {
            0..10 => 1,
            10..60 => 5,
            _ => 30,
        })
    }
}

/// Hellos without an answer after which the joining host says so in its log.
const JOIN_WARN_AFTER: u32 = 5;

struct Agent {
    sock: UdpSocket,
    identity: Identity,
    /// This host's public key.
    me: [u8; 32],
    /// The key hellos are sealed with (the mesh has a password).
    hello_key: Option<HelloKey>,
    /// Plain hellos are answered: no password, or hosts listed by key.
    accept_plain_hello: bool,
    cfg: MeshConfig,
    responder: Responder,
    topo: Mesh,
    peers: Vec<Option<PeerState>>,
    by_key: HashMap<[u8; 32], u32>,
    joins: Vec<Join>,
    link: AgentSide,
    cmd: Receiver<Cmd>,
    events: Sender<MeshEvent>,
    epoch: Instant,
    /// A direct link without an authenticated message for this long is down.
    dead_after: Duration,
    /// Received datagrams.
    rx: Vec<u8>,
    /// Payloads being assembled (relay header, network id, frame).
    scratch: Vec<u8>,
    /// Sealed messages.
    tx: Vec<u8>,
    /// Sealed data messages to one neighbour, sent together with `UDP_SEGMENT`.
    batch: TxBatch,
    /// A super-frame being coalesced from decrypted TCP segments for the workers.
    pending: Option<Delivery>,
    /// What the workers' routes were built from (next hop, address, relay header per
    /// peer): republished when it changes.
    route_sig: Vec<Option<(u32, std::net::SocketAddrV4, [u8; RelayHeader::LEN])>>,
    stats: AgentStats,
}

/// Sealed messages to one neighbour (see `meshlink::SealBatch`) and their buffer.
struct TxBatch {
    buf: Vec<u8>,
    st: SealBatch,
    dst: Option<SocketAddrV4>,
}

impl TxBatch {
    /// Counts the message of `len` bytes just sealed at the end of the batch.
    fn push(&mut self, addr: SocketAddrV4, len: usize) {
        self.st.push(len);
        self.dst = Some(addr);
    }

    /// A message of `want` bytes to `addr` cannot join the batch as it is.
    fn must_flush(&self, addr: SocketAddrV4, want: usize) -> bool {
        self.st.count > 0 && (self.dst != Some(addr) || self.st.is_full_for(want))
    }
}

/// Keeps a payload for after the handshake (bounded; counted when full).
fn enqueue(queue: &mut VecDeque<(PayloadKind, Vec<u8>)>, kind: PayloadKind, payload: &[u8], stats: &mut AgentStats) {
    if queue.len() < QUEUE {
        queue.push_back((kind, payload.to_vec()));
    } else {
        stats.queue_full += 1;
    }
}

/// Decrypted TCP segments of one flow merged into one frame for the workers.
struct Delivery {
    peer: u32,
    vni: u32,
    frame: Vec<u8>,
    co: TcpCoalescer,
}

#[derive(Default)]
struct AgentStats {
    /// Datagrams for no known session, malformed hellos.
    unknown_dropped: u64,
    /// Hellos refused: sealed with another password, or plain where only sealed ones
    /// are taken (a mesh with a password and no listed keys).
    hellos_refused: u64,
    /// Frames with no route to their destination, TTL expired or looped.
    relay_dropped: u64,
    /// Frames relayed for other hosts.
    relayed: u64,
    /// Frames delivered to the workers.
    delivered: u64,
    /// Frames the workers' queue had no room for.
    to_workers_full: u64,
    /// Frames from the workers sent into sessions by the agent (workers with a route
    /// send on their own; those count in the sessions' bytes and the ports' stats).
    sent: u64,
    /// Payloads dropped because a handshake queue was full.
    queue_full: u64,
    /// Frames from the workers that could not be segmented (malformed offload state).
    bad_frames: u64,
    /// Sends the socket refused (buffer full, no route).
    send_errors: u64,
}

/// Starts the agent thread.
pub fn start(opts: MeshOpts, link: AgentSide) -> std::io::Result<MeshHandle> {
    let sock = UdpSocket::bind(opts.listen).map_err(|e| std::io::Error::new(e.kind(), format!("mesh socket on {}: {e}", opts.listen)))?;
    sock.set_nonblocking(true)?;
    // Batches in, batches out: UDP_GRO on receive, deep socket buffers (per socket;
    // SO_*BUFFORCE needs CAP_NET_ADMIN, the plain options are capped by sysctls).
    let fd = sock.as_raw_fd();
    let _ = enable_udp_gro(fd);
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        let v: libc::c_int = 8 << 20;
        // SAFETY: setsockopt with a valid int option value.
        let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, &v as *const _ as *const libc::c_void, 4) };
        if r != 0 {
            // SAFETY: as above.
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, &v as *const _ as *const libc::c_void, 4) };
        }
    }
    let now = Instant::now();
    let public = opts.identity.public();
    let me = PeerId(public);
    let tc = TopoConfig { can_accept_inbound: opts.can_accept_inbound, ..TopoConfig::default() };
    let boot = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1);
    let seed = boot ^ u64::from_le_bytes([public[0], public[1], public[2], public[3], public[4], public[5], public[6], public[7]]);
    let addrs = if opts.listen.ip().is_unspecified() { vec![] } else { vec![opts.listen] };
    let topo = Mesh::new(me, addrs, tc, boot, seed, 0).map_err(|e| std::io::Error::other(format!("mesh topology: {e:?}")))?;
    let keepalive = opts.cfg.keepalive.unwrap_or(Duration::from_secs(10));
    let (ctx, crx) = crossbeam_channel::unbounded();
    let (etx, erx) = crossbeam_channel::unbounded();
    let wake = Arc::new(EventFd::new()?);
    let mut a = Agent {
        sock,
        responder: Responder::new(&opts.identity, &opts.cfg, now),
        identity: opts.identity,
        me: public,
        hello_key: opts.cfg.psk.as_ref().and_then(HelloKey::from_psk),
        accept_plain_hello: opts.cfg.psk.is_none() || !opts.cfg.allowed.is_empty(),
        cfg: opts.cfg,
        topo,
        peers: Vec::new(),
        by_key: HashMap::new(),
        joins: opts.join.iter().map(|a| Join::new(*a)).collect(),
        link,
        cmd: crx,
        events: etx,
        epoch: now,
        dead_after: keepalive * 3 + Duration::from_secs(2),
        rx: vec![0u8; 65536],
        scratch: Vec::with_capacity(65536),
        tx: vec![0u8; 65536 + 256],
        batch: TxBatch { buf: vec![0u8; SEAL_BUF_LEN], st: SealBatch::default(), dst: None },
        pending: None,
        route_sig: Vec::new(),
        stats: AgentStats::default(),
    };
    let w = wake.clone();
    std::thread::Builder::new().name("vsw-mesh".into()).spawn(move || a.run(w))?;
    Ok(MeshHandle { cmd: ctx, wake, events: erx, public })
}

impl Agent {
    fn now_ms(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_millis() as u64
    }

    fn run(&mut self, wake: Arc<EventFd>) {
        let Ok(ep) = Epoll::new() else { return };
        let _ = ep.add(self.sock.as_raw_fd(), TOKEN_SOCK);
        let _ = ep.add(self.link.wake.raw_fd(), TOKEN_WORKERS);
        let _ = ep.add(wake.raw_fd(), TOKEN_CMD);
        let mut evs = vec![dataplane::poll::Event { events: 0, u64: 0 }; 8];
        let mut next_timers = Instant::now();
        loop {
            let now = Instant::now();
            let mut timeout = self.next_deadline(now).unwrap_or(Duration::from_millis(100)).min(Duration::from_millis(100));
            if !self.link.from_workers.is_empty() {
                // Frames left over from bounded turns: no wake-up will come for them.
                timeout = Duration::ZERO;
            }
            let n = ep.wait(&mut evs, timeout.as_millis() as i32).unwrap_or(0);
            for e in &evs[..n] {
                match e.u64 {
                    TOKEN_CMD => wake.drain(),
                    TOKEN_WORKERS => self.link.wake.drain(),
                    _ => {}
                }
            }
            let now = Instant::now();
            while let Ok(c) = self.cmd.try_recv() {
                match c {
                    Cmd::Peers(tx) => {
                        let _ = tx.send(self.peers_json(now));
                    }
                    Cmd::Connect(addr) => {
                        if !self.joins.iter().any(|j| j.addr == addr) {
                            self.joins.push(Join::new(addr));
                        }
                    }
                    Cmd::Forget(addr, tx) => {
                        let before = self.joins.len();
                        self.joins.retain(|j| j.addr != addr);
                        let _ = tx.send(self.joins.len() < before);
                    }
                }
            }
            // Bounded turns so that neither direction starves the other.
            for _ in 0..64 {
                let a = self.recv_some(now, 64);
                let b = self.take_from_workers(now, 64);
                self.flush_batch();
                if a + b == 0 {
                    break;
                }
            }
            if now >= next_timers || self.next_deadline(now).is_some_and(|d| d.is_zero()) {
                self.timers(now);
                self.flush_batch();
                next_timers = now + Duration::from_millis(50);
            }
        }
    }

    fn next_deadline(&self, now: Instant) -> Option<Duration> {
        let mut d: Option<Duration> = None;
        for st in self.peers.iter().flatten() {
            if let Some(t) = st.session.as_ref().and_then(|p| p.next_timeout()) {
                let x = t.saturating_duration_since(now);
                d = Some(d.map_or(x, |d| d.min(x)));
            }
        }
        d
    }

    fn slot_of(&mut self, key: [u8; 32]) -> Option<u32> {
        if let Some(s) = self.by_key.get(&key) {
            return Some(*s);
        }
        if key == self.identity.public() {
            return None;
        }
        let s = self.peers.iter().position(|p| p.is_none()).unwrap_or(self.peers.len());
        PeerSlot::new(s as u32)?;
        if s == self.peers.len() {
            self.peers.push(None);
        }
        self.peers[s] = Some(PeerState::new(key));
        self.by_key.insert(key, s as u32);
        Some(s as u32)
    }

    fn send_to(sock: &UdpSocket, addr: SocketAddr, msg: &[u8]) {
        if let Err(e) = sock.send_to(msg, addr) {
            debug!(to = %addr, error = %e, "mesh send");
        }
    }

    /// Reads up to `max` receives (each a datagram or a `UDP_GRO` batch of them);
    /// returns how many.
    fn recv_some(&mut self, now: Instant, max: usize) -> usize {
        let mut rx = std::mem::take(&mut self.rx);
        let mut n_done = 0;
        while n_done < max {
            let (n, name, seg) = match recv_gro(self.sock.as_raw_fd(), &mut rx) {
                Ok(x) => x,
                Err(_) => break,
            };
            n_done += 1;
            let src = SocketAddr::V4(from_sockaddr(&name));
            for msg in rx[..n].chunks_mut(seg) {
                match msg[0] {
                    HELLO_REQ | HELLO_RESP => self.on_hello(src, msg, now),
                    _ => self.on_message(src, msg, now),
                }
            }
        }
        self.rx = rx;
        self.flush_delivery();
        n_done
    }

    /// Takes up to `max` frames from the workers; returns how many.
    fn take_from_workers(&mut self, now: Instant, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Ok(f) = self.link.from_workers.try_recv() else { break };
            n += 1;
            self.send_worker_frame(&f, now);
            self.link.recycle(f.frame);
        }
        n
    }

    fn mark_alive(&mut self, slot: usize, src: SocketAddr, now: Instant) {
        let now_ms = self.now_ms(now);
        let Some(Some(st)) = self.peers.get_mut(slot) else { return };
        st.addr = Some(src);
        st.last_rx = Some(now);
        st.live.on_received(now_ms);
        let key = st.key;
        let up = st.session.as_ref().is_some_and(|p| p.is_up(now));
        let queued = !st.queue.is_empty();
        if !self.topo.is_linked(&PeerId(key)) {
            let _ = self.topo.link_up(PeerId(key), src, self.now_ms(now));
        }
        if up && queued {
            self.flush_queue(slot as u32, now);
        }
    }

    /// One datagram; transport messages are decrypted in place.
    fn on_message(&mut self, src: SocketAddr, msg: &mut [u8], now: Instant) {
        match wire::route(msg) {
            wire::Route::Initiation => {
                let init = match self.responder.handle_initiation(src.ip(), msg, now) {
                    Ok(i) => i,
                    Err(r) => {
                        debug!(from = %src, reason = ?r, "mesh handshake refused");
                        return;
                    }
                };
                let key = *init.remote_public();
                let Some(slot) = self.slot_of(key) else { return };
                let Some(ps) = PeerSlot::new(slot) else { return };
                let now_ms = self.now_ms(now);
                let Some(st) = self.peers[slot as usize].as_mut() else { return };
                let r = match st.session.as_mut() {
                    Some(p) => p.accept_initiation(init, &mut self.tx, now),
                    None => match Peer::from_initiation(&self.identity, init, &self.cfg, ps, &mut self.tx, now) {
                        Ok((p, len)) => {
                            st.session = Some(p);
                            Ok(len)
                        }
                        Err(e) => Err(e),
                    },
                };
                if let Ok(len) = r {
                    // The initiation is authenticated and newer than any before
                    // (timestamp), so its source is where the peer is now.
                    st.addr = Some(src);
                    st.last_rx = Some(now);
                    st.live.on_received(now_ms);
                    Self::send_to(&self.sock, src, &self.tx[..len]);
                    let _ = self.topo.link_up(PeerId(key), src, now_ms);
                }
            }
            wire::Route::Peer { slot, .. } => {
                let s = slot.get() as usize;
                let r = match self.peers.get_mut(s) {
                    Some(Some(st)) => st.session.as_mut().map(|p| p.decapsulate_in_place(msg, now)),
                    _ => None,
                };
                match r {
                    None => self.stats.unknown_dropped += 1,
                    Some(Ok(Decapsulated::Data { kind, offset, len })) => {
                        self.mark_alive(s, src, now);
                        let key = self.peers[s].as_ref().map(|p| p.key).unwrap_or([0; 32]);
                        let payload = &msg[offset..offset + len];
                        match kind {
                            PayloadKind::Control => {
                                let t = self.now_ms(now);
                                if let Err(e) = self.topo.handle_message(&PeerId(key), payload, t) {
                                    debug!(error = ?e, "mesh control message");
                                }
                            }
                            PayloadKind::Ethernet => self.on_ethernet(s as u32, &key, payload, now),
                            PayloadKind::Unknown(_) => {}
                        }
                    }
                    Some(Ok(Decapsulated::Keepalive)) => self.mark_alive(s, src, now),
                    Some(Ok(Decapsulated::HandshakeComplete { reply_len })) => {
                        Self::send_to(&self.sock, src, &msg[..reply_len]);
                        self.mark_alive(s, src, now);
                    }
                    Some(Err(_)) => {}
                }
            }
            wire::Route::Drop(_) => self.stats.unknown_dropped += 1,
        }
    }

    /// An Ethernet payload: [relay header][vni][frame], received in the session with
    /// peer `slot` (key `key`).
    fn on_ethernet(&mut self, slot: u32, key: &[u8; 32], payload: &[u8], now: Instant) {
        let Ok((wh, rest)) = RelayHeader::parse(payload) else {
            self.stats.relay_dropped += 1;
            return;
        };
        // From the session's peer to this host (no relay): nothing to look up.
        let hdr = if wh.src == key[..8] && wh.dst == self.me[..8] {
            Some(RelayHeader { src: PeerId(*key), dst: PeerId(self.me), ttl: wh.ttl })
        } else {
            self.topo.resolve(&wh)
        };
        let Some(hdr) = hdr else {
            self.stats.relay_dropped += 1;
            return;
        };
        match self.topo.relay(&hdr) {
            RelayAction::Deliver => {
                if rest.len() < 4 + 14 {
                    self.stats.relay_dropped += 1;
                    return;
                }
                let vni = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                // Sent by the session's peer itself (no relay): its slot is known.
                let src = if hdr.src.0 == *key { Some(slot) } else { self.slot_of(hdr.src.0) };
                let Some(src) = src else { return };
                self.deliver(src, vni, &rest[4..]);
            }
            RelayAction::Forward { next_hop, header } => {
                let mut p = std::mem::take(&mut self.scratch);
                p.clear();
                p.extend_from_slice(&header.to_bytes());
                p.extend_from_slice(rest);
                self.stats.relayed += 1;
                self.send_payload(next_hop, PayloadKind::Ethernet, &p, now);
                self.scratch = p;
            }
            RelayAction::Drop(_) => self.stats.relay_dropped += 1,
        }
    }

    /// A decrypted frame for the workers: consecutive TCP segments of one flow are
    /// merged into one super-frame (like GRO), everything else goes as it is.
    fn deliver(&mut self, peer: u32, vni: u32, inner: &[u8]) {
        if let Some(d) = self.pending.as_mut() {
            if d.peer == peer && d.vni == vni && d.co.try_extend(&mut d.frame, inner) {
                return;
            }
            self.flush_delivery();
        }
        let mut frame = self.link.buffer();
        // No checksum verification: the frame has just been authenticated (Poly1305),
        // so it is exactly what the peer's switch sealed, with the complete checksums it
        // wrote (WireGuard marks decrypted packets CHECKSUM_UNNECESSARY for the same
        // reason).
        match TcpCoalescer::start_unverified(inner) {
            Some(co) => {
                frame.reserve_exact(dataplane::offload::gro::DEFAULT_MAX_LEN);
                frame.extend_from_slice(&inner[..co.len()]);
                self.pending = Some(Delivery { peer, vni, frame, co });
            }
            None => {
                frame.extend_from_slice(inner);
                self.hand_to_workers(MeshFrame { peer, vni, frame, vnet: VnetHdr::default() });
            }
        }
    }

    fn flush_delivery(&mut self) {
        let Some(mut d) = self.pending.take() else { return };
        match d.co.finish(&mut d.frame) {
            Ok((len, vnet)) => {
                d.frame.truncate(len);
                self.hand_to_workers(MeshFrame { peer: d.peer, vni: d.vni, frame: d.frame, vnet });
            }
            Err(_) => self.link.recycle(d.frame),
        }
    }

    fn hand_to_workers(&mut self, f: MeshFrame) {
        match self.link.to_worker(f) {
            Ok(()) => self.stats.delivered += 1,
            Err(f) => {
                self.stats.to_workers_full += 1;
                self.link.recycle(f.frame);
            }
        }
    }

    /// A frame from the workers for peer `f.peer`. A super-frame is cut into wire-size
    /// segments (a plain frame is one segment; a partial checksum is completed), each
    /// written straight into the send batch behind its relay header and sealed there.
    fn send_worker_frame(&mut self, f: &MeshFrame, now: Instant) {
        let Some(Some(st)) = self.peers.get(f.peer as usize) else { return };
        let dst = PeerId(st.key);
        let Some((next, hdr)) = self.topo.header_to(&dst) else {
            self.stats.relay_dropped += 1;
            return;
        };
        let Some(slot) = self.slot_of(next.0) else { return };
        self.ensure_session(slot, now);
        let Ok(mut seg) = Segmenter::new(&f.frame, &f.vnet, SegCsum::Full) else {
            self.stats.bad_frames += 1;
            return;
        };
        let hdr = hdr.to_bytes();
        loop {
            let off = self.batch.st.len;
            let Some(r) = stage_segment(&mut self.batch.buf, off, &hdr, f.vni, &mut seg) else { break };
            let Ok(body_len) = r else {
                self.stats.bad_frames += 1;
                break;
            };
            self.stats.sent += 1;
            self.seal_staged(slot, off, body_len, now);
        }
    }

    /// Seals the Ethernet payload staged in the batch buffer at `off + SEAL_HEAD` for
    /// the direct neighbour in `slot` (queued while a handshake runs).
    fn seal_staged(&mut self, slot: u32, mut off: usize, body_len: usize, now: Instant) {
        let Some(addr) = self.v4_addr(slot) else { return };
        if self.batch.must_flush(addr, body_len + wire::TRANSPORT_OVERHEAD) {
            // Send the messages before the staged one, then move it to the front.
            self.flush_batch();
            self.batch.buf.copy_within(off + SEAL_HEAD..off + SEAL_HEAD + body_len, SEAL_HEAD);
            off = 0;
        }
        let Some(Some(st)) = self.peers.get_mut(slot as usize) else { return };
        let Some(p) = st.session.as_mut() else { return };
        let payload = off + SEAL_HEAD..off + SEAL_HEAD + body_len;
        match p.encapsulate_in_place(PayloadKind::Ethernet, &mut self.batch.buf, payload.clone(), now) {
            Ok(m) => self.batch.push(addr, m.len()),
            Err(dataplane::mesh::MeshError::NoSession) => {
                enqueue(&mut st.queue, PayloadKind::Ethernet, &self.batch.buf[payload], &mut self.stats);
                if let Ok(Some(len)) = p.initiate(&mut self.tx, now) {
                    Self::send_to(&self.sock, SocketAddr::V4(addr), &self.tx[..len]);
                }
            }
            Err(e) => debug!(error = ?e, "mesh encapsulate"),
        }
    }

    /// The IPv4 address of the neighbour in `slot` (the mesh socket is IPv4; any other
    /// address counts as a send error).
    fn v4_addr(&mut self, slot: u32) -> Option<SocketAddrV4> {
        match self.peers.get(slot as usize).and_then(|p| p.as_ref()).and_then(|st| st.addr)? {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => {
                self.stats.send_errors += 1;
                None
            }
        }
    }

    /// Encrypts `payload` for the direct neighbour `to` into the send batch (queued
    /// while a handshake runs).
    fn send_payload(&mut self, to: PeerId, kind: PayloadKind, payload: &[u8], now: Instant) {
        let Some(slot) = self.slot_of(to.0) else { return };
        self.ensure_session(slot, now);
        let Some(addr) = self.v4_addr(slot) else { return };
        if self.batch.must_flush(addr, payload.len() + wire::TRANSPORT_OVERHEAD) {
            self.flush_batch();
        }
        let Some(Some(st)) = self.peers.get_mut(slot as usize) else { return };
        let Some(p) = st.session.as_mut() else { return };
        let off = self.batch.st.len;
        match p.encapsulate(kind, payload, &mut self.batch.buf[off..], now) {
            Ok(Encapsulated::Data { len }) => {
                if kind == PayloadKind::Control {
                    st.ctl_sent += 1;
                }
                self.batch.push(addr, len);
            }
            Ok(Encapsulated::Handshake { len }) => {
                Self::send_to(&self.sock, SocketAddr::V4(addr), &self.batch.buf[off..off + len]);
                enqueue(&mut st.queue, kind, payload, &mut self.stats);
            }
            Ok(Encapsulated::Pending) => enqueue(&mut st.queue, kind, payload, &mut self.stats),
            Err(e) => debug!(error = ?e, "mesh encapsulate"),
        }
    }

    /// Sends the batch: one `sendmsg`, segmented by the kernel into its datagrams.
    fn flush_batch(&mut self) {
        let b = &mut self.batch;
        let (Some(dst), count) = (b.dst, b.st.count) else { return };
        if let Err(e) = b.st.send(self.sock.as_raw_fd(), &b.buf, dst) {
            self.stats.send_errors += count as u64;
            debug!(error = %e, "mesh send");
        }
    }

    fn ensure_session(&mut self, slot: u32, now: Instant) {
        let (id, cfg) = (&self.identity, &self.cfg);
        if let (Some(Some(st)), Some(ps)) = (self.peers.get_mut(slot as usize), PeerSlot::new(slot)) {
            if st.session.is_none() {
                st.session = Some(Peer::new(id, st.key, cfg, ps, now));
            }
        }
    }

    fn flush_queue(&mut self, slot: u32, now: Instant) {
        let (key, q) = match self.peers.get_mut(slot as usize) {
            Some(Some(st)) => (st.key, std::mem::take(&mut st.queue)),
            _ => return,
        };
        for (k, p) in q {
            self.send_payload(PeerId(key), k, &p, now);
        }
    }

    fn timers(&mut self, now: Instant) {
        let now_ms = self.now_ms(now);
        // Sessions: handshake retries, rekeys, keepalives; links without news are down,
        // and so are direct paths whose data and probes go unanswered.
        let mut probes = Vec::new();
        for s in 0..self.peers.len() {
            let Some(st) = self.peers[s].as_mut() else { continue };
            let key = st.key;
            let (Some(p), Some(addr)) = (st.session.as_mut(), st.addr) else { continue };
            for _ in 0..4 {
                if p.next_timeout().is_none_or(|t| t > now) {
                    break;
                }
                match p.poll(&mut self.tx, now) {
                    Ok(Some(len)) => Self::send_to(&self.sock, addr, &self.tx[..len]),
                    _ => break,
                }
            }
            let stale = st.last_rx.is_none_or(|t| now.saturating_duration_since(t) > self.dead_after);
            if stale && self.topo.is_linked(&PeerId(key)) {
                info!(peer = %dataplane::mesh::key_to_base64(&key), "mesh link down (no message for {:?})", self.dead_after);
                self.topo.link_down(&PeerId(key), now_ms);
            }
            if self.check_path(s, now_ms) {
                probes.push(PeerId(key));
            }
        }
        for p in &probes {
            self.topo.probe(p);
        }
        // Topology: link-state floods and syncs, dials.
        self.topo.handle_timeout(now_ms);
        let mut ctl = Vec::new();
        while let Some(m) = self.topo.poll_transmit(now_ms) {
            ctl.push(m);
        }
        for (to, msg) in ctl {
            self.send_payload(to, PayloadKind::Control, &msg, now);
        }
        for (peer, addr) in self.topo.wants_dial(now_ms) {
            let Some(slot) = self.slot_of(peer.0) else { continue };
            self.ensure_session(slot, now);
            let Some(st) = self.peers[slot as usize].as_mut() else { continue };
            st.addr = Some(addr);
            if let Some(p) = st.session.as_mut() {
                if let Ok(Some(len)) = p.initiate(&mut self.tx, now) {
                    Self::send_to(&self.sock, addr, &self.tx[..len]);
                }
            }
        }
        // Joins by address: hellos until the member's key is known.
        let mut due = Vec::new();
        for j in self.joins.iter_mut() {
            if j.last.is_none_or(|t| now.duration_since(t) >= j.interval()) {
                j.last = Some(now);
                j.sent += 1;
                due.push(j.addr);
                if j.sent > JOIN_WARN_AFTER && !j.warned {
                    j.warned = true;
                    let why = if self.hello_key.is_some() { "a different --mesh-password, " } else { "" };
                    tracing::warn!(member = %j.addr, hellos = j.sent - 1, "mesh member does not answer: {why}not in a mesh, or not reachable; still trying");
                }
            }
        }
        for a in due {
            let sealed = self.hello_key.is_some();
            if let Some((m, n)) = self.hello(HELLO_REQ, sealed) {
                Self::send_to(&self.sock, a, &m[..n]);
            }
        }
        // Reachability for the controller.
        while let Some(ev) = self.topo.poll_event() {
            if let Event::PeerAppeared(id, addrs) = ev {
                if let Some(slot) = self.slot_of(id.0) {
                    if let Some(st) = self.peers[slot as usize].as_mut() {
                        if st.addr.is_none() {
                            st.addr = addrs.first().copied();
                        }
                    }
                }
            }
        }
        for s in 0..self.peers.len() {
            let Some(st) = self.peers[s].as_mut() else { continue };
            let reach = self.topo.next_hop(&PeerId(st.key)).is_some();
            if reach != st.reachable {
                st.reachable = reach;
                let ev = if reach { MeshEvent::PeerUp { index: s as u32, key: st.key } } else { MeshEvent::PeerDown { index: s as u32, key: st.key } };
                info!(peer = %dataplane::mesh::key_to_base64(&st.key), reachable = reach, "mesh peer");
                let _ = self.events.send(ev);
            }
        }
        self.forget_replaced(now);
        self.publish_routes();
    }

    /// Runs the direct-path detector of the peer in slot `s` (see `mesh::liveness`):
    /// samples its data counter, takes a newer link state of it that no longer lists
    /// this host as a reason to doubt the path, and declares the link down when the
    /// detector says so. True when the peer should be probed now.
    fn check_path(&mut self, s: usize, now_ms: u64) -> bool {
        let me = PeerId(self.me);
        let Some(st) = self.peers.get_mut(s).and_then(|p| p.as_mut()) else { return false };
        let id = PeerId(st.key);
        let sent = st.data_sent();
        let seq = self.topo.link_state(&id).map(|ls| (ls.seq, ls.has_link(&me)));
        if !self.topo.is_linked(&id) {
            st.live.reset(sent, now_ms);
            st.was_linked = false;
            return false;
        }
        if !st.was_linked {
            // Just up: whatever its link state said before is no news.
            st.was_linked = true;
            st.seen_seq = seq.map(|(n, _)| n);
        } else if let Some((n, lists_us)) = seq.filter(|(n, _)| Some(*n) != st.seen_seq) {
            st.seen_seq = Some(n);
            if !lists_us {
                debug!(peer = %dataplane::mesh::key_to_base64(&st.key), "mesh peer lists no link to this host: probing the direct path");
                st.live.doubt(now_ms);
            }
        }
        st.live.on_sample(sent, now_ms);
        match st.live.poll(now_ms) {
            Some(LivenessAction::Probe) => true,
            Some(LivenessAction::Down) => {
                let waited = st.live.config().down_after_ms;
                info!(peer = %dataplane::mesh::key_to_base64(&st.key), "mesh direct path down (data sent, no answer to it or to probes for {waited} ms): using relays");
                self.topo.link_down(&id, now_ms);
                false
            }
            None => false,
        }
    }

    /// Forgets peers whose address now belongs to another key with a live session: the
    /// host at that address was set up again with a new key (its state directory was
    /// lost), so the old key will never answer there; it was listed as unreachable for
    /// ever and still dialled. A slot is freed only once the controller was told the
    /// peer is down (not reachable).
    fn forget_replaced(&mut self, now: Instant) {
        let live: Vec<(SocketAddr, [u8; 32])> = self
            .peers
            .iter()
            .flatten()
            .filter(|st| st.session.as_ref().is_some_and(|p| p.is_up(now)))
            .filter_map(|st| Some((st.addr?, st.key)))
            .collect();
        for s in 0..self.peers.len() {
            let Some(st) = self.peers[s].as_ref() else { continue };
            if st.reachable || st.session.as_ref().is_some_and(|p| p.is_up(now)) {
                continue;
            }
            let Some(addr) = st.addr else { continue };
            let Some((_, by)) = live.iter().find(|(a, k)| *a == addr && *k != st.key) else { continue };
            let key = st.key;
            info!(peer = %dataplane::mesh::key_to_base64(&key), address = %addr, now_at = %dataplane::mesh::key_to_base64(by), "mesh peer replaced by a new key at its address; forgotten");
            self.topo.remove_peer(&PeerId(key));
            self.topo.link_down(&PeerId(key), self.now_ms(now));
            self.by_key.remove(&key);
            self.peers[s] = None;
        }
    }

    /// Publishes the workers' direct-send routes when any changed: for every reachable
    /// peer whose next hop has a session and an IPv4 address.
    fn publish_routes(&mut self) {
        let mut sig = Vec::with_capacity(self.peers.len());
        for st in &self.peers {
            let r = (|| {
                let st = st.as_ref()?;
                if !st.reachable {
                    return None;
                }
                let (next, hdr) = self.topo.header_to(&PeerId(st.key))?;
                let ns = *self.by_key.get(&next.0)?;
                let nst = self.peers.get(ns as usize)?.as_ref()?;
                nst.session.as_ref()?;
                let SocketAddr::V4(a) = nst.addr? else { return None };
                Some((ns, a, hdr.to_bytes()))
            })();
            sig.push(r);
        }
        if sig == self.route_sig {
            return;
        }
        let fd = self.sock.as_raw_fd();
        let table: Vec<Option<Arc<TxRoute>>> = sig
            .iter()
            .map(|r| {
                let (ns, dst, hdr) = r.as_ref()?;
                let sender = self.peers.get(*ns as usize)?.as_ref()?.session.as_ref()?.sender();
                Some(Arc::new(TxRoute { sender, dst: *dst, hdr: hdr.to_vec(), fd }))
            })
            .collect();
        self.link.routes.store(Arc::new(table));
        self.route_sig = sig;
    }

    /// A hello of `kind` with our public key, sealed with the mesh password's key
    /// when `sealed` (see `dataplane::mesh::hello`). A reply is as long as the request,
    /// so hellos amplify nothing.
    fn hello(&self, kind: u8, sealed: bool) -> Option<([u8; hello::SEALED_LEN], usize)> {
        let key = if sealed { Some(self.hello_key.as_ref()?) } else { None };
        let mut m = [0u8; hello::SEALED_LEN];
        let n = hello::write(kind, &self.me, key, &mut m)?;
        Some((m, n))
    }

    fn on_hello(&mut self, src: SocketAddr, msg: &[u8], now: Instant) {
        let h = match hello::read(msg, self.hello_key.as_ref(), self.accept_plain_hello) {
            Ok(h) => h,
            Err(HelloError::Malformed) => {
                self.stats.unknown_dropped += 1;
                return;
            }
            Err(e) => {
                debug!(from = %src, reason = ?e, "mesh hello refused");
                self.stats.hellos_refused += 1;
                return;
            }
        };
        let key = h.public;
        if key == self.me {
            return;
        }
        if h.kind == HELLO_REQ {
            if let Some((m, n)) = self.hello(HELLO_RESP, h.sealed) {
                Self::send_to(&self.sock, src, &m[..n]);
            }
            return;
        }
        if !self.joins.iter().any(|j| j.addr == src) {
            return;
        }
        // A member we asked: from now on it is a configured peer, dialled by the topology.
        self.joins.retain(|j| j.addr != src);
        let _ = self.topo.add_peer(PeerId(key), src, self.now_ms(now));
        if let Some(slot) = self.slot_of(key) {
            if let Some(st) = self.peers[slot as usize].as_mut() {
                st.addr = Some(src);
            }
        }
        info!(member = %src, key = %dataplane::mesh::key_to_base64(&key), "mesh member found");
    }

    fn peers_json(&self, now: Instant) -> Value {
        let routes = self.topo.route_table();
        let now_ms = self.now_ms(now);
        let mut v = Vec::new();
        for st in self.peers.iter().flatten() {
            let id = PeerId(st.key);
            // The direct path: "up" while it carries traffic, "suspect" while data sent
            // there is unanswered and probed, "down" once declared down (or never up);
            // the session counts as up only while its direct path is used.
            let linked = self.topo.is_linked(&id);
            let direct = match (linked, st.live.state(now_ms)) {
                (false, _) => "down",
                (true, PathState::Alive) => "up",
                (true, PathState::Suspect { .. }) => "suspect",
            };
            let route = routes.iter().find(|r| r.dst == id);
            let stats = st.session.as_ref().map(|p| p.stats());
            let path = match route {
                Some(r) if r.is_direct() => "direct".to_string(),
                Some(r) => format!("via {}", dataplane::mesh::key_to_base64(&r.next_hop.0)),
                None => "unreachable".to_string(),
            };
            v.push(json!({
                "key": dataplane::mesh::key_to_base64(&st.key),
                "address": st.addr.map(|a| a.to_string()),
                "path": path,
                "hops": route.map(|r| r.hops),
                "session_up": linked && st.session.as_ref().is_some_and(|p| p.is_up(now)),
                "direct": direct,
                "last_message_secs_ago": st.last_rx.map(|t| now.saturating_duration_since(t).as_secs()),
                "last_handshake_secs_ago": stats.and_then(|s| s.last_handshake).map(|t| now.saturating_duration_since(t).as_secs()),
                "rx_bytes": stats.map(|s| s.rx_bytes).unwrap_or(0),
                "tx_bytes": stats.map(|s| s.tx_bytes).unwrap_or(0),
                "rx_packets": stats.map(|s| s.rx_packets).unwrap_or(0),
                "tx_packets": stats.map(|s| s.tx_packets).unwrap_or(0),
                "sessions_established": stats.map(|s| s.sessions_established).unwrap_or(0),
                "rekeys": stats.map(|s| s.rekeys).unwrap_or(0),
                "drops": stats.map(|s| s.drops.iter().sum::<u64>()).unwrap_or(0),
                "replays_dropped": stats.map(|s| s.dropped(dataplane::mesh::DropReason::Replay)).unwrap_or(0),
            }));
        }
        let r = self.responder.stats();
        let s = &self.stats;
        json!({
            "key": dataplane::mesh::key_to_base64(&self.identity.public()),
            "listen": self.sock.local_addr().ok().map(|a| a.to_string()),
            "peers": v,
            "pending_members": self.joins.iter().map(|j| json!({"address": j.addr.to_string(), "hellos_sent": j.sent})).collect::<Vec<_>>(),
            "handshakes_accepted": r.accepted,
            "handshakes_refused": r.refused.iter().sum::<u64>(),
            "unknown_dropped": s.unknown_dropped,
            "hellos_refused": s.hellos_refused,
            "relay_dropped": s.relay_dropped,
            "relayed": s.relayed,
            "delivered": s.delivered,
            "sent": s.sent,
            "to_workers_full": s.to_workers_full,
            "queue_full": s.queue_full,
            "bad_frames": s.bad_frames,
            "send_errors": s.send_errors,
        })
    }
}
