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
//! The copy and the channel hop are the price of keeping the crypto sessions in one
//! place; moving encryption into the workers (the session core supports it:
//! `mesh::PeerSender`) is the next step for speed.

use std::os::fd::RawFd;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

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

/// The agent's ends of the link.
pub struct AgentSide {
    pub from_workers: Receiver<MeshFrame>,
    pub wake: Arc<EventFd>,
    pub to_workers: Sender<MeshFrame>,
    pub workers_ready: Arc<EventFd>,
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
    Ok((
        AgentSide { from_workers: fa, wake: wake.clone(), to_workers: tw, workers_ready: ready.clone(), spare: spare.clone() },
        WorkerSide { to_agent: ta, wake_agent: wake, from_agent: fw, ready, spare },
    ))
}

impl WorkerSide {
    /// The port frames for `peer` on network `vni` are sent to.
    pub fn peer_port(&self, peer: u32, vni: u32) -> MeshPeerPort {
        MeshPeerPort { peer, vni, to: self.to_agent.clone(), wake: self.wake_agent.clone(), spare: self.spare.clone() }
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
}

impl Port for MeshPeerPort {
    fn rx_batch(&mut self, _pool: &mut BufPool, _in_port: PortId, _out: &mut Batch, _max: usize) -> Result<RxCount, PortError> {
        Ok(RxCount::default())
    }

    fn tx_batch(&mut self, pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        let mut c = TxCount::default();
        let mut wake = false;
        for &id in pkts {
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
