//! Egress towards a port that cannot take offloaded frames (no virtio-net header):
//! GSO super-frames are cut into wire-size frames and partial checksums completed in
//! software, into buffers of the worker's pool. No heap allocation; a frame that
//! cannot be handled is dropped and counted.

use crate::buf::{BufPool, PktId, HEADROOM};
use crate::offload::{complete_checksum, SegCsum, Segmenter};
use crate::stats::{DropReason, Event, WorkerStats};
use crate::vnet::VnetHdr;

/// Emits `id` (a GSO frame or one with a partial checksum) through `send` as frames
/// that need no offload. Consumes one reference of `id`.
pub fn emit_without_offload(pool: &mut BufPool, id: PktId, stats: &WorkerStats, mut send: impl FnMut(&mut BufPool, PktId)) {
    let m = *pool.meta(id);
    if m.vnet.is_gso() {
        // SAFETY: we hold a reference to `id`, so its buffer is neither freed nor
        // handed out while we read it; every segment goes to a different buffer.
        let frame = unsafe { std::slice::from_raw_parts(pool.base_ptr(id).add(m.off as usize), m.len as usize) };
        let mut seg = match Segmenter::new(frame, &m.vnet, SegCsum::Full) {
            Ok(s) => s,
            Err(_) => {
                stats.count_drop(DropReason::OffloadFailed, 1);
                pool.release(id);
                return;
            }
        };
        stats.event(Event::SwGso, 1);
        loop {
            let Some(out) = pool.alloc() else {
                stats.count_drop(DropReason::NoBuffer, seg.remaining() as u64);
                break;
            };
            match seg.next_into(&mut pool.raw_mut(out)[HEADROOM..]) {
                None => {
                    pool.release(out);
                    break;
                }
                Some(Ok((len, vh))) => {
                    let om = pool.meta_mut(out);
                    om.len = len as u32;
                    om.vnet = vh;
                    om.in_port = m.in_port;
                    send(pool, out);
                }
                Some(Err(_)) => {
                    pool.release(out);
                    stats.count_drop(DropReason::OffloadFailed, 1);
                    break;
                }
            }
        }
        pool.release(id);
        return;
    }
    if m.vnet.needs_csum() {
        // Other ports may send the same buffer with its partial checksum: work on a copy.
        let id = if pool.refs(id) > 1 {
            let c = pool.clone_pkt(id);
            pool.release(id);
            match c {
                Some(c) => c,
                None => {
                    stats.count_drop(DropReason::NoBuffer, 1);
                    return;
                }
            }
        } else {
            id
        };
        let v = m.vnet;
        if complete_checksum(pool.frame_mut(id), &v).is_err() {
            stats.count_drop(DropReason::OffloadFailed, 1);
            pool.release(id);
            return;
        }
        stats.event(Event::SwCsum, 1);
        pool.meta_mut(id).vnet = VnetHdr::default();
        send(pool, id);
        return;
    }
    send(pool, id);
}
