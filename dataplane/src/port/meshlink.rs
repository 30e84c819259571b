//! Ports between the workers and the mesh agent (the thread that owns the encrypted
//! sessions to other hosts). A frame bridged to a remote mesh peer goes to that peer's
//! `MeshPeerPort`, which hands a copy to the agent (bounded channel, eventfd wake-up;
//! full → dropped and counted by the caller as tx_full). Frames the agent decrypted
//! come back through the workers' `MeshRxPort`s (one queue per worker; the agent picks
//! the queue by the inner flow's hash, as RSS picks a receive queue, so every frame of
//! a flow is forwarded by the same worker in order, and different flows spread over the
//! workers), tagged with the origin peer and the network id, and are demultiplexed to
//! the peer ports like tunnel traffic.
//!
//! Frame buffers circulate: the agent and the receiving port hand emptied `Vec`s back on
//! a bounded spare queue, and senders take from it, so in steady state no frame
//! allocates (a sender allocates only when the spare queue is empty, i.e. while the
//! number of buffers in flight grows towards the queue depths).
//!
//! Sending is done by the workers themselves when they can: the agent publishes, per
//! remote peer, the route to it (the next hop's `mesh::PeerSender`, its address, the
//! relay header and the agent's socket); a `MeshPeerPort` with a route segments a frame,
//! seals the segments back to back in a per-thread buffer and sends them with one
//! `UDP_SEGMENT` `sendmsg` on the agent's socket, so encryption is spread over the
//! workers and the frame skips the hop to the agent. Without a route, or without a
//! session (a handshake is needed), the frame goes to the agent as above, which
//! handshakes, queues and sends. Receiving and decrypting stay in the agent.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::mesh::{wire as mwire, MeshError, PayloadKind, PeerSender};
use crate::offload::{SegCsum, Segmenter};

use super::{Port, PortCaps, PortError, RxCount, TxCount};
use crate::buf::{Batch, BufPool, PktId, PortId};
use crate::encap::flow_hash_eth;
use crate::poll::EventFd;
use crate::vnet::VnetHdr;

/// One frame between the workers and the agent.
pub struct MeshFrame {
    /// The remote peer (the agent's number for it).
    pub peer: u32,
    /// The network id (VNI).
    pub vni: u32,
    pub frame: Vec<u8>,
    /// Offload state: a TCP super-frame (GSO) or a partial checksum travels as is; the
    /// agent segments on the way out and coalesces on the way in.
    pub vnet: VnetHdr,
}

/// Tag in `PktMeta::tun_src` of frames from the mesh (255.0.0.0/8 is never a tunnel
/// endpoint's address): the demultiplexing key is `(MESH_SRC_TAG | peer, vni)`.
pub const MESH_SRC_TAG: u32 = 0xff00_0000;

/// The key under which `Tables::tunnels` names the port of `peer` on network `vni`.
pub fn demux_key(peer: u32, vni: u32) -> (u32, u32) {
    (MESH_SRC_TAG | (peer & 0x00ff_ffff), vni)
}

/// How the workers send to one remote peer without the agent.
pub struct TxRoute {
    /// Sender of the session with the next hop (the peer itself, or a relay).
    pub sender: PeerSender,
    /// The next hop's underlay address.
    pub dst: std::net::SocketAddrV4,
    /// The relay header that goes in front of the network id (origin, destination).
    pub hdr: Vec<u8>,
    /// The agent's UDP socket (sent on from several threads; the agent outlives all).
    pub fd: RawFd,
}

/// Routes by the agent's peer number; replaced whole when one changes.
pub type TxRoutes = Arc<ArcSwap<Vec<Option<Arc<TxRoute>>>>>;

/// The agent's ends of the link.
pub struct AgentSide {
    pub from_workers: Receiver<MeshFrame>,
    pub wake: Arc<EventFd>,
    /// Per worker: the queue of its `MeshRxPort` and the eventfd that wakes it.
    to_workers: Vec<(Sender<MeshFrame>, Arc<EventFd>)>,
    /// Routes the agent publishes for the workers' direct sends.
    pub routes: TxRoutes,
    spare: Spare,
}

/// Seed of the hash that picks a worker for a decrypted frame (any constant: it only
/// has to be the same for every frame of a flow).
const RX_HASH_SEED: u32 = 0x6d65_7368;

impl AgentSide {
    /// Queues a decrypted frame to the worker its flow hashes to, waking that worker when
    /// the frame found its queue empty. Gives the frame back when that queue is full.
    pub fn to_worker(&self, f: MeshFrame) -> Result<(), MeshFrame> {
        let n = self.to_workers.len();
        let i = if n > 1 { flow_hash_eth(&f.frame, RX_HASH_SEED) as usize % n } else { 0 };
        let Some((tx, ready)) = self.to_workers.get(i) else { return Err(f) };
        match tx.try_send(f) {
            Ok(()) => {
                // See `link`: only a push into an empty queue wakes.
                if tx.len() == 1 {
                    ready.wake();
                }
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }

    /// A buffer for a frame to the workers (recycled when one is spare).
    pub fn buffer(&self) -> Vec<u8> {
        self.spare.take()
    }

    /// Returns an emptied frame buffer for reuse.
    pub fn recycle(&self, v: Vec<u8>) {
        self.spare.give(v)
    }
}

/// The shared queue of emptied frame buffers.
#[derive(Clone)]
struct Spare {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Spare {
    fn take(&self) -> Vec<u8> {
        let mut v = self.rx.try_recv().unwrap_or_default();
        v.clear();
        v
    }

    fn give(&self, v: Vec<u8>) {
        // Oversized leftovers (a 64 KiB burst) are let go rather than kept forever.
        if v.capacity() <= 65_536 + 1024 {
            let _ = self.tx.try_send(v);
        }
    }
}

/// The workers' ends: what control hands to `MeshPeerPort`s and the `MeshRxPort`.
#[derive(Clone)]
pub struct WorkerSide {
    to_agent: Sender<MeshFrame>,
    wake_agent: Arc<EventFd>,
    /// Per worker: its queue of decrypted frames and its eventfd.
    from_agent: Vec<(Receiver<MeshFrame>, Arc<EventFd>)>,
    routes: TxRoutes,
    spare: Spare,
}

/// Makes a connected pair for `workers` workers: a queue of `depth` frames from the
/// workers to the agent, and one of `depth / workers` (at least 256) from the agent to
/// each worker, so the frames in flight towards the workers stay bounded by about
/// `depth` whatever the number of workers.
///
/// Wake-ups: a producer wakes the consumer only when its push leaves exactly one item in
/// the queue (it was empty); a consumer reads until the queue is empty or wakes itself
/// again, so an item behind another is always seen. One system call per burst instead of
/// one per frame.
pub fn link(depth: usize, workers: usize) -> std::io::Result<(AgentSide, WorkerSide)> {
    let workers = workers.max(1);
    let (ta, fa) = crossbeam_channel::bounded(depth);
    let wake = Arc::new(EventFd::new()?);
    let (mut to_workers, mut from_agent) = (Vec::with_capacity(workers), Vec::with_capacity(workers));
    for _ in 0..workers {
        let (tw, fw) = crossbeam_channel::bounded((depth / workers).max(256));
        let ready = Arc::new(EventFd::new()?);
        to_workers.push((tw, ready.clone()));
        from_agent.push((fw, ready));
    }
    let (st, sr) = crossbeam_channel::bounded(depth * 2);
    let spare = Spare { tx: st, rx: sr };
    let routes: TxRoutes = Arc::new(ArcSwap::from_pointee(Vec::new()));
    Ok((
        AgentSide { from_workers: fa, wake: wake.clone(), to_workers, routes: routes.clone(), spare: spare.clone() },
        WorkerSide { to_agent: ta, wake_agent: wake, from_agent, routes, spare },
    ))
}

impl WorkerSide {
    /// The port frames for `peer` on network `vni` are sent to.
    pub fn peer_port(&self, peer: u32, vni: u32) -> MeshPeerPort {
        MeshPeerPort {
            peer,
            vni,
            to: self.to_agent.clone(),
            wake: self.wake_agent.clone(),
            spare: self.spare.clone(),
            routes: self.routes.clone(),
            route: None,
        }
    }

    /// Number of workers (receive queues).
    pub fn workers(&self) -> usize {
        self.from_agent.len()
    }

    /// The port worker `i`'s decrypted frames arrive on (`None` past the last worker).
    pub fn rx_port(&self, i: usize) -> Option<MeshRxPort> {
        let (from, ready) = self.from_agent.get(i)?;
        Some(MeshRxPort { from: from.clone(), ready: ready.clone(), spare: self.spare.clone() })
    }
}

/// A worker's handle on one remote mesh peer of one encrypted network.
pub struct MeshPeerPort {
    peer: u32,
    vni: u32,
    to: Sender<MeshFrame>,
    wake: Arc<EventFd>,
    spare: Spare,
    routes: TxRoutes,
    /// The route in use and this port's own sender for it.
    route: Option<(Arc<TxRoute>, PeerSender)>,
}

/// Most datagrams in one `UDP_SEGMENT` send (the kernel's `UDP_MAX_SEGMENTS`).
pub const GSO_MAX_SEGS: usize = 64;
/// Most bytes in one `UDP_SEGMENT` send (an IPv4 UDP payload).
pub const GSO_MAX_BYTES: usize = 65_000;
/// Room in front of a payload sealed in place: transport header and kind byte.
pub const SEAL_HEAD: usize = mwire::TRANSPORT_HEADER_LEN + 1;
/// A seal buffer: a full batch, one frame staged behind it before the batch is found
/// full (at most a 64 KiB frame with its headers), margin.
pub const SEAL_BUF_LEN: usize = GSO_MAX_BYTES + 2 * 65_536 + 512;

thread_local! {
    /// Each worker's buffer for sealed batches.
    static SEAL_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SEAL_BUF_LEN]);
}

/// Sealed messages of one size (the last may be shorter) back to back at the start of a
/// seal buffer, sent with one `sendmsg` (`UDP_SEGMENT`). Used by the workers' direct
/// sends and by the agent.
#[derive(Default)]
pub struct SealBatch {
    /// Bytes in the batch (where the next message is staged).
    pub len: usize,
    pub count: usize,
    stride: usize,
    /// The last message was shorter than `stride`: nothing more may follow.
    closed: bool,
}

impl SealBatch {
    /// A message of `want` bytes cannot join the batch as it is.
    pub fn is_full_for(&self, want: usize) -> bool {
        self.count > 0
            && (self.closed || want > self.stride || self.count >= GSO_MAX_SEGS || self.len + want > GSO_MAX_BYTES)
    }

    /// Counts the message of `len` bytes just sealed at the end of the batch.
    pub fn push(&mut self, len: usize) {
        if self.count == 0 {
            self.stride = len;
        }
        self.closed = len < self.stride;
        self.count += 1;
        self.len += len;
    }

    /// Sends `buf[..len]` to `dst` (`UDP_SEGMENT` when more than one message) and
    /// empties the batch, whatever the outcome.
    pub fn send(&mut self, fd: RawFd, buf: &[u8], dst: std::net::SocketAddrV4) -> std::io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let seg = if self.count > 1 { Some(self.stride as u16) } else { None };
        let r = crate::port::tunnel::send_udp(fd, &buf[..self.len], &crate::port::tunnel::sockaddr_v4(dst), seg);
        *self = SealBatch::default();
        r
    }
}

/// Writes the relay header `hdr`, the network id and the next segment of `seg` at
/// `buf[off + SEAL_HEAD..]`, ready to be sealed in place; returns the payload length
/// (`None` when the frame has no more segments).
pub fn stage_segment(
    buf: &mut [u8],
    off: usize,
    hdr: &[u8],
    vni: u32,
    seg: &mut Segmenter<'_>,
) -> Option<Result<usize, crate::offload::OffloadError>> {
    let body = off + SEAL_HEAD;
    let pre = hdr.len() + 4;
    buf[body..body + hdr.len()].copy_from_slice(hdr);
    buf[body + hdr.len()..body + pre].copy_from_slice(&vni.to_be_bytes());
    Some(seg.next_into(&mut buf[body + pre..])?.map(|(n, _)| pre + n))
}

/// Why a direct send did not happen: the frame goes to the agent instead.
enum Direct {
    Sent,
    /// No session (a handshake was requested) or no room: let the agent do it.
    Agent,
    /// The frame cannot be sent at all (malformed offload state, socket error).
    Dropped,
}

impl MeshPeerPort {
    /// The current route, refreshed when the agent published a new one.
    fn current_route(&mut self) -> Option<&mut (Arc<TxRoute>, PeerSender)> {
        let table = self.routes.load();
        let now = table.get(self.peer as usize).and_then(|r| r.as_ref());
        match (now, &self.route) {
            (None, _) => self.route = None,
            (Some(r), Some((have, _))) if Arc::ptr_eq(r, have) => {}
            (Some(r), _) => self.route = Some((r.clone(), r.sender.clone())),
        }
        self.route.as_mut()
    }

    /// Segments and seals one frame into the open batch `st` in `b`, sending the batch
    /// whenever the next message cannot join it (the caller sends the rest with
    /// [`flush`]). Frames of one `tx_batch` call share batches, so small frames cost one
    /// system call per 64, not one each.
    fn send_direct(&mut self, b: &mut [u8], st: &mut SealBatch, frame: &[u8], vh: &VnetHdr, now: Instant) -> Direct {
        let vni = self.vni;
        let Some((route, sender)) = self.route.as_mut() else { return Direct::Agent };
        let Ok(mut seg) = Segmenter::new(frame, vh, SegCsum::Full) else { return Direct::Dropped };
        let mut first = true;
        loop {
            let mut off = st.len;
            let body_len = match stage_segment(b, off, &route.hdr, vni, &mut seg) {
                None => return Direct::Sent,
                Some(Ok(n)) => n,
                Some(Err(_)) => return Direct::Dropped,
            };
            if st.is_full_for(body_len + mwire::TRANSPORT_OVERHEAD) {
                if st.send(route.fd, b, route.dst).is_err() {
                    return Direct::Dropped;
                }
                b.copy_within(off + SEAL_HEAD..off + SEAL_HEAD + body_len, SEAL_HEAD);
                off = 0;
            }
            let payload = off + SEAL_HEAD..off + SEAL_HEAD + body_len;
            match sender.encapsulate_in_place(PayloadKind::Ethernet, b, payload, now) {
                Ok(m) => st.push(m.len()),
                // Not one segment sealed: the agent takes the whole frame (and
                // handshakes). Segments already sealed go out; TCP repairs the rest.
                Err(MeshError::NoSession) if first => return Direct::Agent,
                Err(_) => return Direct::Dropped,
            }
            first = false;
        }
    }
}

impl Port for MeshPeerPort {
    fn rx_batch(&mut self, _pool: &mut BufPool, _in_port: PortId, _out: &mut Batch, _max: usize) -> Result<RxCount, PortError> {
        Ok(RxCount::default())
    }

    fn tx_batch(&mut self, pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        let mut c = TxCount::default();
        let mut wake = false;
        let now = Instant::now();
        let direct = self.current_route().is_some_and(|(_, sender)| sender.has_session());
        let mut rest = pkts;
        if direct {
            SEAL_BUF.with(|b| {
                let mut b = b.borrow_mut();
                let mut st = SealBatch::default();
                let mut done = 0;
                for &id in pkts {
                    let m = *pool.meta(id);
                    match self.send_direct(&mut b, &mut st, pool.frame(id), &m.vnet, now) {
                        Direct::Sent => {
                            c.sent += 1;
                            c.bytes += m.len as u64;
                        }
                        Direct::Dropped => c.errors += 1,
                        Direct::Agent => break,
                    }
                    done += 1;
                }
                if let Some((route, _)) = self.route.as_ref() {
                    if st.send(route.fd, &b, route.dst).is_err() {
                        c.errors += 1;
                    }
                }
                rest = &pkts[done..];
            });
        }
        for &id in rest {
            if self.to.is_full() {
                break;
            }
            let mut frame = self.spare.take();
            frame.extend_from_slice(pool.frame(id));
            match self.to.try_send(MeshFrame { peer: self.peer, vni: self.vni, frame, vnet: pool.meta(id).vnet }) {
                Ok(()) => {
                    c.sent += 1;
                    c.bytes += pool.meta(id).len as u64;
                    // Only the frame that finds the queue empty wakes the agent: with
                    // anything ahead of it, the agent is awake or has a wake-up pending,
                    // and it drains the queue before it sleeps.
                    wake |= self.to.len() == 1;
                }
                Err(TrySendError::Full(f)) => {
                    self.spare.give(f.frame);
                    break;
                }
                Err(TrySendError::Disconnected(f)) => {
                    self.spare.give(f.frame);
                    c.errors += 1;
                }
            }
        }
        if wake {
            self.wake.wake();
        }
        Ok(c)
    }

    fn caps(&self) -> PortCaps {
        PortCaps { vnet: true }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn kind(&self) -> &'static str {
        "mesh"
    }
}

/// Decrypted frames from the agent for one worker.
pub struct MeshRxPort {
    from: Receiver<MeshFrame>,
    ready: Arc<EventFd>,
    spare: Spare,
}

impl Port for MeshRxPort {
    fn rx_batch(&mut self, pool: &mut BufPool, _in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError> {
        self.ready.drain();
        let mut c = RxCount::default();
        while c.received < max && !out.is_full() {
            let Ok(f) = self.from.try_recv() else { break };
            match pool.alloc_from(&f.frame, f.vnet, 0) {
                Some(id) => {
                    let m = pool.meta_mut(id);
                    (m.tun_src, m.tun_id) = demux_key(f.peer, f.vni);
                    out.push(id);
                    c.received += 1;
                }
                None => c.oversize += 1,
            }
            self.spare.give(f.frame);
        }
        if !self.from.is_empty() {
            self.ready.wake();
        }
        Ok(c)
    }

    fn tx_batch(&mut self, _pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        Ok(TxCount { sent: 0, errors: pkts.len(), bytes: 0 })
    }

    fn caps(&self) -> PortCaps {
        PortCaps { vnet: false }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.ready.raw_fd())
    }

    fn kind(&self) -> &'static str {
        "mesh-rx"
    }

    fn demux(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/UDP frame from port `sport`.
    fn frame(sport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&9u16.to_be_bytes());
        f
    }

    fn mf(sport: u16) -> MeshFrame {
        MeshFrame { peer: 1, vni: 42, frame: frame(sport), vnet: VnetHdr::default() }
    }

    /// Which worker's queue holds a frame after `to_worker`.
    fn queue_of(a: &AgentSide, w: &WorkerSide, sport: u16) -> usize {
        assert!(a.to_worker(mf(sport)).is_ok());
        let i = (0..w.workers()).find(|&i| w.from_agent[i].0.try_recv().is_ok()).expect("queued somewhere");
        assert!((0..w.workers()).all(|j| w.from_agent[j].0.is_empty()));
        i
    }

    #[test]
    fn decrypted_frames_spread_by_flow_and_stay_with_their_worker() {
        let (a, w) = link(1024, 2).unwrap();
        assert_eq!(w.workers(), 2);
        assert!(w.rx_port(1).is_some() && w.rx_port(2).is_none());
        // Every frame of a flow goes to the same worker (no reordering within a flow).
        for sport in 1000..1100 {
            let q = queue_of(&a, &w, sport);
            assert!((0..5).all(|_| queue_of(&a, &w, sport) == q));
        }
        // Different flows use both workers.
        let used: std::collections::HashSet<usize> = (1000..1100).map(|s| queue_of(&a, &w, s)).collect();
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn a_full_worker_queue_gives_the_frame_back() {
        let (a, w) = link(256, 1).unwrap();
        for _ in 0..256 {
            assert!(a.to_worker(mf(7)).is_ok());
        }
        let back = a.to_worker(mf(7)).err().expect("queue full");
        assert_eq!(back.frame, frame(7));
        assert_eq!(w.from_agent[0].0.len(), 256);
    }
}
