//! Packet buffers: a per-worker pool of fixed-size buffers, handles, and batches.
//!
//! Every buffer is `BUF_SIZE` bytes: `HEADROOM` bytes in front of the frame (room for
//! a virtio-net header and for outer headers added by encapsulation) and room for the
//! largest GSO super-frame a kernel hands us (64 KiB plus link headers). The memory is
//! one anonymous mapping made when the pool is created; pages a frame never touches are
//! never faulted in, so a 64-byte frame costs one page, not 64 KiB.
//!
//! A `BufPool` is owned by exactly one worker (it is `Send`, not `Sync`). Packets are
//! named by `PktId` (an index), so batches and tx queues move 4-byte handles, never
//! bytes. A buffer queued on several ports (flooding) carries a reference count; it
//! returns to the free list when the last user releases it. Nothing here allocates
//! after `BufPool::new`.

use crate::vnet::VnetHdr;

/// Bytes reserved in front of a received frame: virtio-net header + encapsulation.
pub const HEADROOM: usize = 256;
/// Largest frame (without virtio-net header) a buffer holds: a 64 KiB GSO frame plus
/// Ethernet and two VLAN tags.
pub const MAX_FRAME: usize = 65535 + 14 + 8;
/// Size of each buffer in the pool (a multiple of 64 bytes).
pub const BUF_SIZE: usize = (HEADROOM + MAX_FRAME + 63) & !63;
/// Largest number of packets in one batch.
pub const BATCH_MAX: usize = 64;

/// Index of a packet buffer in its worker's pool.
pub type PktId = u32;

/// Identifies a port in the tables. 0 is never a valid port.
pub type PortId = u16;

/// Per-packet metadata kept beside the buffer (structure of arrays in the pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct PktMeta {
    /// Offset of the first byte of the Ethernet frame inside the buffer.
    pub off: u32,
    /// Length of the frame in bytes.
    pub len: u32,
    /// Offload state (checksum still to complete, GSO) as received.
    pub vnet: VnetHdr,
    /// Port the frame came in on (0 for frames the dataplane made itself).
    pub in_port: PortId,
    /// For frames decapsulated from a tunnel: the remote host's underlay address (as
    /// a big-endian u32) and the tunnel id (VNI / GRE key), so the worker can find the
    /// peer port. Zero otherwise.
    pub tun_src: u32,
    pub tun_id: u32,
}

/// A pool of packet buffers owned by one worker.
pub struct BufPool {
    mem: *mut u8,
    map_len: usize,
    count: u32,
    free: Vec<PktId>,
    refcnt: Vec<u16>,
    meta: Vec<PktMeta>,
}

// The pool owns its mapping exclusively; it may move to the worker thread that uses it.
unsafe impl Send for BufPool {}

impl BufPool {
    /// Maps `count` buffers. Fails only if the kernel refuses the mapping.
    pub fn new(count: u32) -> std::io::Result<BufPool> {
        assert!(count > 0, "empty pool");
        let map_len = BUF_SIZE * count as usize;
        // SAFETY: anonymous private mapping, checked for MAP_FAILED.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // Free list as a stack: low ids are handed out first and stay warm in cache.
        let free = (0..count).rev().collect();
        Ok(BufPool {
            mem: mem as *mut u8,
            map_len,
            count,
            free,
            refcnt: vec![0; count as usize],
            meta: vec![PktMeta::default(); count as usize],
        })
    }

    /// Number of buffers in the pool.
    pub fn capacity(&self) -> u32 {
        self.count
    }

    /// Number of buffers currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a free buffer (reference count 1, frame empty at `HEADROOM`), or `None`
    /// when the pool is exhausted (the caller drops and counts).
    #[inline]
    pub fn alloc(&mut self) -> Option<PktId> {
        let id = self.free.pop()?;
        self.refcnt[id as usize] = 1;
        self.meta[id as usize] = PktMeta { off: HEADROOM as u32, ..PktMeta::default() };
        Some(id)
    }

    /// Adds `n` references (the buffer is queued on `n` more ports).
    #[inline]
    pub fn add_ref(&mut self, id: PktId, n: u16) {
        let r = &mut self.refcnt[id as usize];
        *r = r.saturating_add(n);
    }

    /// Current reference count.
    #[inline]
    pub fn refs(&self, id: PktId) -> u16 {
        self.refcnt[id as usize]
    }

    /// Drops one reference; the buffer is free again when none is left.
    #[inline]
    pub fn release(&mut self, id: PktId) {
        let r = &mut self.refcnt[id as usize];
        debug_assert!(*r > 0, "double free of packet {id}");
        if *r <= 1 {
            *r = 0;
            self.free.push(id);
        } else {
            *r -= 1;
        }
    }

    #[inline]
    pub fn meta(&self, id: PktId) -> &PktMeta {
        &self.meta[id as usize]
    }

    #[inline]
    pub fn meta_mut(&mut self, id: PktId) -> &mut PktMeta {
        &mut self.meta[id as usize]
    }

    /// Start of buffer `id`'s memory.
    #[inline]
    pub fn base_ptr(&self, id: PktId) -> *mut u8 {
        debug_assert!(id < self.count);
        // SAFETY: id < count, so the offset is inside the mapping.
        unsafe { self.mem.add(id as usize * BUF_SIZE) }
    }

    /// The whole buffer (headroom included).
    #[inline]
    pub fn raw(&self, id: PktId) -> &[u8] {
        assert!(id < self.count);
        // SAFETY: in bounds; buffers never overlap.
        unsafe { std::slice::from_raw_parts(self.base_ptr(id), BUF_SIZE) }
    }

    /// The whole buffer, writable.
    #[inline]
    pub fn raw_mut(&mut self, id: PktId) -> &mut [u8] {
        assert!(id < self.count);
        // SAFETY: in bounds; &mut self guarantees no other slice of this pool is alive.
        unsafe { std::slice::from_raw_parts_mut(self.base_ptr(id), BUF_SIZE) }
    }

    /// The frame bytes of packet `id`.
    #[inline]
    pub fn frame(&self, id: PktId) -> &[u8] {
        let m = self.meta[id as usize];
        &self.raw(id)[m.off as usize..(m.off + m.len) as usize]
    }

    /// The frame bytes of packet `id`, writable.
    #[inline]
    pub fn frame_mut(&mut self, id: PktId) -> &mut [u8] {
        let m = self.meta[id as usize];
        &mut self.raw_mut(id)[m.off as usize..(m.off + m.len) as usize]
    }

    /// Frame and metadata together (for stages that read the metadata while writing bytes).
    #[inline]
    pub fn frame_and_meta_mut(&mut self, id: PktId) -> (&mut [u8], &mut PktMeta) {
        assert!(id < self.count);
        let m = self.meta[id as usize];
        // SAFETY: the buffer memory and the meta vector are disjoint.
        let raw = unsafe { std::slice::from_raw_parts_mut(self.base_ptr(id), BUF_SIZE) };
        (&mut raw[m.off as usize..(m.off + m.len) as usize], &mut self.meta[id as usize])
    }

    /// Copies `frame` into a new buffer (test helper and slow paths such as replies).
    pub fn alloc_from(&mut self, frame: &[u8], vnet: VnetHdr, in_port: PortId) -> Option<PktId> {
        if frame.len() > MAX_FRAME {
            return None;
        }
        let id = self.alloc()?;
        let off = HEADROOM;
        self.raw_mut(id)[off..off + frame.len()].copy_from_slice(frame);
        let m = self.meta_mut(id);
        m.len = frame.len() as u32;
        m.vnet = vnet;
        m.in_port = in_port;
        Some(id)
    }

    /// Copies packet `id` (frame and metadata) into a new buffer with refcount 1.
    pub fn clone_pkt(&mut self, id: PktId) -> Option<PktId> {
        let new = self.alloc()?;
        let m = *self.meta(id);
        let (src, dst) = (self.base_ptr(id), self.base_ptr(new));
        // SAFETY: distinct buffers of the same mapping, in bounds.
        unsafe { std::ptr::copy_nonoverlapping(src.add(m.off as usize), dst.add(m.off as usize), m.len as usize) };
        *self.meta_mut(new) = m;
        Some(new)
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length.
        unsafe { libc::munmap(self.mem as *mut libc::c_void, self.map_len) };
    }
}

/// A fixed-capacity list of packet handles (a vector of work, VPP style).
#[derive(Clone)]
pub struct Batch {
    ids: [PktId; BATCH_MAX],
    len: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch { ids: [0; BATCH_MAX], len: 0 }
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BATCH_MAX
    }
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Appends; returns false (and does nothing) when full.
    #[inline]
    pub fn push(&mut self, id: PktId) -> bool {
        if self.len == BATCH_MAX {
            return false;
        }
        self.ids[self.len] = id;
        self.len += 1;
        true
    }
    #[inline]
    pub fn as_slice(&self) -> &[PktId] {
        &self.ids[..self.len]
    }
    /// Releases every packet to `pool` and empties the batch.
    pub fn release_all(&mut self, pool: &mut BufPool) {
        for &id in &self.ids[..self.len] {
            pool.release(id);
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_refcount() {
        let mut p = BufPool::new(4).unwrap();
        let a = p.alloc_from(&[1, 2, 3], VnetHdr::default(), 7).unwrap();
        assert_eq!(p.frame(a), &[1, 2, 3]);
        assert_eq!(p.meta(a).in_port, 7);
        assert_eq!(p.available(), 3);
        p.add_ref(a, 2);
        p.release(a);
        p.release(a);
        assert_eq!(p.available(), 3);
        p.release(a);
        assert_eq!(p.available(), 4);
        let ids: Vec<_> = (0..4).map(|_| p.alloc().unwrap()).collect();
        assert!(p.alloc().is_none());
        for id in ids {
            p.release(id);
        }
        assert_eq!(p.available(), 4);
    }

    #[test]
    fn clone_copies_bytes_and_meta() {
        let mut p = BufPool::new(2).unwrap();
        let a = p.alloc_from(&[9; 100], VnetHdr { flags: 1, ..Default::default() }, 3).unwrap();
        let b = p.clone_pkt(a).unwrap();
        p.frame_mut(b)[0] = 1;
        assert_eq!(p.frame(a)[0], 9);
        assert_eq!(p.frame(b).len(), 100);
        assert_eq!(p.meta(b).vnet.flags, 1);
    }

    #[test]
    fn headroom_and_size() {
        assert!(HEADROOM >= 128 + crate::vnet::VNET_HDR_LEN);
        assert_eq!(BUF_SIZE % 64, 0);
        assert!(BUF_SIZE >= HEADROOM + MAX_FRAME);
    }
}
