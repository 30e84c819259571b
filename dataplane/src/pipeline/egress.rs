//! Egress towards a port that cannot take offloaded frames (no virtio-net header):
//! GSO super-frames are cut into wire-size frames and partial checksums completed in
//! software, into buffers of the worker's pool.

use crate::buf::{BufPool, PktId};
use crate::stats::{DropReason, WorkerStats};

/// Emits `id` (a GSO frame or one with a partial checksum) through `send` as frames
/// that need no offload. Consumes one reference of `id`.
pub fn emit_without_offload(pool: &mut BufPool, id: PktId, stats: &WorkerStats, _send: impl FnMut(&mut BufPool, PktId)) {
    // Filled in with the offload module (software checksum and segmentation).
    stats.count_drop(DropReason::OffloadFailed, 1);
    pool.release(id);
}
