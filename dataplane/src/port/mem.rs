//! An in-memory port for tests: frames go in and out through channels, and an eventfd
//! makes the port pollable like a real one, so the whole worker loop runs without
//! privileges. Allocates per frame; never used for real traffic.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::{Port, PortCaps, PortError, RxCount, TxCount};
use crate::buf::{Batch, BufPool, PktId, PortId};
use crate::poll::EventFd;
use crate::vnet::VnetHdr;

/// A frame with its offload header.
pub type MemFrame = (Vec<u8>, VnetHdr);

/// The dataplane side of an in-memory port.
pub struct MemPort {
    rx: Receiver<MemFrame>,
    tx: Sender<MemFrame>,
    ready: Arc<EventFd>,
    vnet: bool,
}

/// The test's side: inject frames, read what the dataplane sent.
#[derive(Clone)]
pub struct MemPeer {
    inject: Sender<MemFrame>,
    out: Receiver<MemFrame>,
    ready: Arc<EventFd>,
}

/// Makes a connected port and peer. `vnet`: whether the port takes offloaded frames.
pub fn mem_pair(vnet: bool) -> (MemPort, MemPeer) {
    let (itx, irx) = unbounded();
    let (otx, orx) = unbounded();
    let ready = Arc::new(EventFd::new().expect("eventfd"));
    (MemPort { rx: irx, tx: otx, ready: ready.clone(), vnet }, MemPeer { inject: itx, out: orx, ready })
}

impl MemPeer {
    pub fn send(&self, frame: &[u8]) {
        self.send_vnet(frame, VnetHdr::default());
    }

    pub fn send_vnet(&self, frame: &[u8], vnet: VnetHdr) {
        let _ = self.inject.send((frame.to_vec(), vnet));
        self.ready.wake();
    }

    /// Next frame the dataplane sent on this port, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<MemFrame> {
        self.out.recv_timeout(timeout).ok()
    }

    /// Everything sent so far, without waiting.
    pub fn drain(&self) -> Vec<MemFrame> {
        self.out.try_iter().collect()
    }
}

impl Port for MemPort {
    fn rx_batch(&mut self, pool: &mut BufPool, in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError> {
        self.ready.drain();
        let mut c = RxCount::default();
        while c.received < max && !out.is_full() {
            let Ok((f, v)) = self.rx.try_recv() else { break };
            match pool.alloc_from(&f, v, in_port) {
                Some(id) => {
                    out.push(id);
                    c.received += 1;
                }
                None => {
                    c.oversize += 1;
                }
            }
        }
        if !self.rx.is_empty() {
            self.ready.wake();
        }
        Ok(c)
    }

    fn tx_batch(&mut self, pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        let mut c = TxCount::default();
        for &id in pkts {
            let _ = self.tx.send((pool.frame(id).to_vec(), pool.meta(id).vnet));
            c.sent += 1;
            c.bytes += pool.meta(id).len as u64;
        }
        Ok(c)
    }

    fn caps(&self) -> PortCaps {
        PortCaps { vnet: self.vnet }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.ready.raw_fd())
    }

    fn kind(&self) -> &'static str {
        "mem"
    }
}

/// Convenience for tests that wait on a condition.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    f()
}
