//! Ports between the workers and the mesh agent (the thread that owns the encrypted
//! sessions to other hosts). A frame bridged to a remote mesh peer goes to that peer's
//! `MeshPeerPort`, which hands a copy to the agent (bounded channel, eventfd wake-up;
//! full → dropped and counted by the caller as tx_full). Frames the agent decrypted
//! come back through one `MeshRxPort` (read by one worker), tagged with the origin
//! peer and the network id, and are demultiplexed to the peer ports like tunnel
//! traffic.
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
    pub to_workers: Sender<MeshFrame>,
    pub workers_ready: Arc<EventFd>,
    /// Routes the agent publishes for the workers' direct sends.
    pub routes: TxRoutes,
    spare: Spare,
}

impl AgentSide {
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
    from_agent: Receiver<MeshFrame>,
    ready: Arc<EventFd>,
    routes: TxRoutes,
    spare: Spare,
}

/// Makes a connected pair (queues of `depth` frames each way).
///
/// Wake-ups: a producer wakes the consumer only when its push leaves exactly one item in
/// the queue (it was empty); a consumer reads until the queue is empty or wakes itself
/// again, so an item behind another is always seen. One system call per burst instead of
/// one per frame.
pub fn link(depth: usize) -> std::io::Result<(AgentSide, WorkerSide)> {
    let (ta, fa) = crossbeam_channel::bounded(depth);
    let (tw, fw) = crossbeam_channel::bounded(depth);
    let wake = Arc::new(EventFd::new()?);
    let ready = Arc::new(EventFd::new()?);
    let (st, sr) = crossbeam_channel::bounded(depth * 2);
    let spare = Spare { tx: st, rx: sr };
    let routes: TxRoutes = Arc::new(ArcSwap::from_pointee(Vec::new()));
    Ok((
        AgentSide { from_workers: fa, wake: wake.clone(), to_workers: tw, workers_ready: ready.clone(), routes: routes.clone(), spare: spare.clone() },
        WorkerSide { to_agent: ta, wake_agent: wake, from_agent: fw, ready, routes, spare },
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

    /// The port decrypted frames arrive on.
    pub fn rx_port(&self) -> MeshRxPort {
        MeshRxPort { from: self.from_agent.clone(), ready: self.ready.clone(), spare: self.spare.clone() }
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

/// Decrypted frames from the agent (one worker reads them).
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
