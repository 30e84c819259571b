//! AF_PACKET ports: the host end of a veth, or any existing interface (`port add`).
//!
//! Each worker owns one socket per port; the sockets of a port form a PACKET_FANOUT
//! group (hash mode: a flow lands on the same worker, no reordering; with the rollover
//! flag, frames for a worker whose ring is nearly full go to another one instead of
//! being dropped, so an overloaded worker — one sharing its CPU with a busy process —
//! spills over rather than losing frames). Sockets
//! carry virtio-net headers (PACKET_VNET_HDR) so 64 KiB GSO frames and partial
//! checksums pass through untouched; they ignore their own outgoing frames
//! (PACKET_IGNORE_OUTGOING); transmit with one `sendmmsg` per batch; put the
//! interface in promiscuous mode (a real NIC filters unicast otherwise; a veth does not
//! care); and have large socket buffers, since a few 64 KiB frames fill the default ones.
//!
//! Receiving goes through a TPACKET_V2 ring by default: the kernel copies each frame
//! into a shared slot in the softirq that delivers it and frees the skb there, and the
//! worker reads slots without a system call. Frames larger than a slot (GSO
//! super-frames; with the default 256-byte slots, anything over 180 bytes) stay whole in
//! the socket queue (PACKET_COPY_THRESH); their slot says so and the worker reads a run
//! of them with one `recvmmsg`, in ring order. Measured on one core: 64-byte
//! frames 315–322 kpps through the ring against 207–216 with `recvmmsg` alone (TCP
//! unchanged); `rx_ring: 0` (`vswitchd --rx-ring 0`) keeps the `recvmmsg` path.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Port, PortCaps, PortError, RxCount, TxCount};
use crate::buf::{Batch, BufPool, PktId, PortId, BATCH_MAX, BUF_SIZE, HEADROOM};
use crate::vnet::{VnetHdr, VNET_HDR_LEN};

const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_COPY_THRESH: libc::c_int = 7;
const PACKET_ROLLOVER_STATS: libc::c_int = 21;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 2;
/// Default size of one ring slot with virtio-net headers: frames of up to 180 bytes
/// (the kernel puts 76 bytes of `tpacket2_hdr`, `sockaddr_ll` and virtio-net header
/// before the frame) — ACKs, ARP, pings, small datagrams. Bulk TCP arrives as GSO
/// super-frames, which fit no slot; larger frames wait whole in the socket queue
/// (PACKET_COPY_THRESH), the slot says so (TP_STATUS_COPY) and runs of them are read
/// with one `recvmmsg`. 1024 slots are 256 KiB per port and worker instead of the 2 MiB
/// of 2 KiB slots, and the smaller ring stays in cache: 64-byte frames 769–807 kpps
/// against 671–695 with 2 KiB slots (`run.sh bench/vswitchd.sh`, alternated).
pub const DEFAULT_RX_SLOT: usize = 256;
/// Default slot without virtio-net headers, where every frame is at most MTU-sized: a
/// 1514-byte frame fits, so bulk traffic is copied into the ring by the sender's CPU
/// instead of being freed by the worker after `recvmmsg` (no-offload TCP 2.51–2.64
/// against 2.37–2.48 Gbit/s with 256-byte slots).
pub const DEFAULT_RX_SLOT_NO_VNET: usize = 2048;
/// Slot sizes a ring may have: a power of two that divides a 4 KiB block and holds the
/// headers before a minimum frame.
pub const RX_SLOT_SIZES: [usize; 5] = [256, 512, 1024, 2048, 4096];
const ETH_P_ALL: u16 = 0x0003;

/// Fanout by flow hash: one flow, one worker.
pub const FANOUT_HASH: u16 = 0;
const FANOUT_FLAG_UNIQUEID: u16 = 0x2000;
/// A frame whose worker's ring is nearly full goes to another worker instead of being
/// dropped: a flow stays on its worker unless that worker is overloaded.
const FANOUT_FLAG_ROLLOVER: u16 = 0x1000;
/// The group ignores frames the host itself sends on the interface (Linux 6.9+; the
/// sockets' own PACKET_IGNORE_OUTGOING does not apply once they are in a group).
const FANOUT_FLAG_IGNORE_OUTGOING: u16 = 0x4000;

/// Default receive ring: 1024 slots ([`default_rx_slot`] bytes each: 256 KiB of kernel
/// memory per port and worker with virtio-net headers, 2 MiB without).
pub const DEFAULT_RX_RING: usize = 1024;

/// How to open an AF_PACKET port socket.
#[derive(Clone, Copy, Debug)]
pub struct AfPacketOpts {
    /// Carry virtio-net headers (GSO, partial checksums).
    pub vnet: bool,
    /// Socket buffer sizes (forced, beyond rmem_max/wmem_max).
    pub rcvbuf: usize,
    pub sndbuf: usize,
    /// Bypass the qdisc layer on transmit.
    pub qdisc_bypass: bool,
    /// Put the interface in promiscuous mode while the socket is open.
    pub promisc: bool,
    /// Receive through a TPACKET_V2 ring of this many slots (0: `recvmmsg`).
    pub rx_ring: usize,
    /// Bytes per ring slot (one of [`RX_SLOT_SIZES`]; [`default_rx_slot`]); frames
    /// that do not fit wait whole in the socket queue.
    pub rx_slot: usize,
}

impl Default for AfPacketOpts {
    fn default() -> Self {
        AfPacketOpts {
            vnet: true,
            rcvbuf: 16 << 20,
            sndbuf: 4 << 20,
            qdisc_bypass: false,
            promisc: true,
            rx_ring: DEFAULT_RX_RING,
            rx_slot: DEFAULT_RX_SLOT,
        }
    }
}

/// The ring slot size for ports with (`vnet`) or without virtio-net headers.
pub fn default_rx_slot(vnet: bool) -> usize {
    if vnet {
        DEFAULT_RX_SLOT
    } else {
        DEFAULT_RX_SLOT_NO_VNET
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a T of the given size.
    let r = unsafe { libc::setsockopt(fd, level, name, val as *const T as *const libc::c_void, size_of::<T>() as libc::socklen_t) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads a socket option into a `T` (plain data the kernel fills).
fn getsockopt<T: Default>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    let mut val = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: val is a T of len bytes, written by the kernel.
    let r = unsafe { libc::getsockopt(fd, level, name, &mut val as *mut T as *mut libc::c_void, &mut len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(val)
    }
}

/// Looks up an interface index by name in the calling thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i as i32)
    }
}

/// A TPACKET_V2 receive ring mapped from the socket.
struct RxRing {
    base: *mut u8,
    slots: usize,
    /// Bytes per slot.
    frame: usize,
    /// The slot to look at next (a `Cell` so that reading and handing back a slot does
    /// not hold the socket borrowed while a COPY slot's frame is read from it).
    next: std::cell::Cell<usize>,
}

impl RxRing {
    fn map(fd: RawFd, slots: usize, frame: usize) -> io::Result<RxRing> {
        if !RX_SLOT_SIZES.contains(&frame) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("ring slot size {frame}: not one of {RX_SLOT_SIZES:?}")));
        }
        setsockopt(fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V2)?;
        let per_block = 4096 / frame;
        let blocks = slots.div_ceil(per_block);
        let slots = blocks * per_block;
        // struct tpacket_req { block_size, block_nr, frame_size, frame_nr }
        let req: [u32; 4] = [4096, blocks as u32, frame as u32, slots as u32];
        setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req)?;
        setsockopt(fd, SOL_PACKET, PACKET_COPY_THRESH, &1i32)?;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), slots * frame, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RxRing { base: p as *mut u8, slots, frame, next: std::cell::Cell::new(0) })
    }

    /// The status word of slot `i` (the kernel writes it; so do we, to hand it back).
    fn status(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: i < slots; each slot starts with the u32 tp_status, 4-aligned.
        unsafe { &*(self.base.add(i * self.frame) as *const std::sync::atomic::AtomicU32) }
    }

    /// The next slot and its status, if the kernel has filled it for us.
    fn ready(&self) -> Option<(usize, u32)> {
        let i = self.next.get();
        let st = self.status(i).load(std::sync::atomic::Ordering::Acquire);
        (st & TP_STATUS_USER != 0).then_some((i, st))
    }

    /// Counts the slots from the next one on (at most `max`, at most the whole ring)
    /// that the kernel has filled and marked TP_STATUS_COPY: a run of large frames
    /// waiting in the socket queue in the same order.
    fn copy_run_len(&self, max: usize) -> usize {
        let mut n = 0;
        while n < max.min(self.slots) {
            let i = (self.next.get() + n) % self.slots;
            let st = self.status(i).load(std::sync::atomic::Ordering::Acquire);
            if st & TP_STATUS_USER == 0 || st & TP_STATUS_COPY == 0 {
                break;
            }
            n += 1;
        }
        n
    }

    /// Hands the next `n` slots back to the kernel and moves past them.
    fn release_n(&self, n: usize) {
        for _ in 0..n {
            self.release(self.next.get());
        }
    }

    /// Hands slot `i` (the one [`ready`] gave) back to the kernel and moves on.
    fn release(&self, i: usize) {
        self.status(i).store(TP_STATUS_KERNEL, std::sync::atomic::Ordering::Release);
        self.next.set((i + 1) % self.slots);
    }

    /// Slot `i` as bytes (valid while its status is ours).
    fn slot(&self, i: usize) -> &[u8] {
        // SAFETY: the slot lies inside the mapping; the kernel does not write it until
        // we give it back.
        unsafe { std::slice::from_raw_parts(self.base.add(i * self.frame), self.frame) }
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what map() mapped.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.slots * self.frame) };
    }
}

/// One worker's AF_PACKET socket on an interface.
pub struct AfPacket {
    fd: OwnedFd,
    ring: Option<RxRing>,
    vnet: bool,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    ids: [PktId; BATCH_MAX],
    /// Rollovers away from this socket already reported (`steered_away`).
    rolled_seen: u64,
}

// The raw pointers in the scratch arrays point into this struct's own boxes or into
// the pool buffers of the call in progress; they are rebuilt on every call.
unsafe impl Send for AfPacket {}

impl AfPacket {
    /// Opens a socket bound to `ifindex` (in the calling thread's namespace).
    pub fn open(ifindex: i32, opts: &AfPacketOpts) -> io::Result<AfPacket> {
        // Protocol 0 at creation: receive nothing until bound to the interface.
        // SAFETY: plain syscall; the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if opts.vnet {
            setsockopt(raw, SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
        }
        // Best effort: kernels before 4.20 lack it (then our own frames come back and
        // are learned on the same port, which is harmless but wasteful).
        let _ = setsockopt(raw, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32);
        if opts.qdisc_bypass {
            setsockopt(raw, SOL_PACKET, PACKET_QDISC_BYPASS, &1i32)?;
        }
        let ring = if opts.rx_ring > 0 { Some(RxRing::map(raw, opts.rx_ring, opts.rx_slot)?) } else { None };
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &(opts.rcvbuf as i32)).is_err() {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &(opts.rcvbuf as i32))?;
        }
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &(opts.sndbuf as i32)).is_err() {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &(opts.sndbuf as i32))?;
        }
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll.
        let r = unsafe { libc::bind(raw, &sll as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_ll>() as u32) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if opts.promisc {
            // SAFETY: packet_mreq is plain data.
            let mut mr: libc::packet_mreq = unsafe { zeroed() };
            mr.mr_ifindex = ifindex;
            mr.mr_type = PACKET_MR_PROMISC;
            setsockopt(raw, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr)?;
        }
        // SAFETY: zeroed mmsghdr/iovec are valid placeholders, rebuilt per call.
        let hdrs = (0..BATCH_MAX).map(|_| unsafe { zeroed::<libc::mmsghdr>() }).collect();
        let iovs = (0..BATCH_MAX).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect();
        Ok(AfPacket { fd, ring, vnet: opts.vnet, hdrs, iovs, ids: [0; BATCH_MAX], rolled_seen: 0 })
    }

    /// Opens one socket per worker on `ifindex`, joined in one fanout group when there
    /// is more than one. Call in the namespace of the interface.
    pub fn open_group(ifindex: i32, n: usize, opts: &AfPacketOpts) -> io::Result<Vec<AfPacket>> {
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            socks.push(AfPacket::open(ifindex, opts)?);
        }
        if n > 1 {
            // The first socket gets a fresh group id from the kernel; the others join it.
            // Without FANOUT_FLAG_IGNORE_OUTGOING, what the host's own stack sends on the
            // interface (IPv6 router solicitations, MLD, its traffic on a NIC with an
            // address) would be switched into the network. Kernels before 6.9 refuse
            // the flag; there they still are.
            let first = socks[0].fd.as_raw_fd();
            let mut flags = FANOUT_HASH | FANOUT_FLAG_ROLLOVER | FANOUT_FLAG_IGNORE_OUTGOING;
            let new_group = |flags: u16| setsockopt(first, SOL_PACKET, PACKET_FANOUT, &(((flags | FANOUT_FLAG_UNIQUEID) as u32) << 16));
            if new_group(flags).is_err() {
                flags &= !FANOUT_FLAG_IGNORE_OUTGOING;
                new_group(flags)?;
            }
            let got: u32 = getsockopt(first, SOL_PACKET, PACKET_FANOUT)?;
            let id = got & 0xffff;
            for s in &socks[1..] {
                let v: u32 = id | ((flags as u32) << 16);
                setsockopt(s.fd.as_raw_fd(), SOL_PACKET, PACKET_FANOUT, &v)?;
            }
        }
        Ok(socks)
    }

    fn hdr_off(&self) -> usize {
        if self.vnet {
            HEADROOM - VNET_HDR_LEN
        } else {
            HEADROOM
        }
    }
}

impl AfPacket {
    /// Takes up to `max` frames from the ring: small ones are copied out of their slot,
    /// a slot marked TP_STATUS_COPY stands for a large frame waiting whole in the socket
    /// queue (a run of such slots is read with one `recvmmsg`, in ring order).
    fn recv_ring(&mut self, pool: &mut BufPool, in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError> {
        let hoff = self.hdr_off();
        let vlen = if self.vnet { VNET_HDR_LEN } else { 0 };
        let mut c = RxCount::default();
        let mut taken = 0;
        while taken < max && !out.is_full() && pool.available() > 0 {
            let Some((i, st)) = self.ring.as_ref().and_then(RxRing::ready) else { break };
            if st & TP_STATUS_COPY != 0 {
                // As many as recv_socket will read. Each slot of the run has its frame
                // in the queue (the kernel queues it before it publishes the slot), so
                // the slots go back only as their frames are read: they stay paired.
                let room = (max - taken).min(BATCH_MAX - out.len()).min(pool.available());
                let n = self.ring.as_ref().map_or(0, |r| r.copy_run_len(room));
                if n == 0 {
                    break; // not reached: the slot in hand is one, and room is at least 1
                }
                let mut read = 0;
                // Twice: a pending socket error (ENETDOWN) fails the first read once.
                for _ in 0..2 {
                    if read < n {
                        let got = self.recv_socket(pool, in_port, out, n - read)?;
                        read += got.received + got.oversize + got.truncated;
                        c.received += got.received;
                        c.oversize += got.oversize;
                        c.truncated += got.truncated;
                    }
                }
                if read < n {
                    // Frames missing from the queue (not expected): their slots go back
                    // rather than stall the ring, and count as lost.
                    c.lost += n - read;
                }
                if let Some(r) = self.ring.as_ref() {
                    r.release_n(n);
                }
                taken += n;
                continue;
            }
            taken += 1;
            let Some(ring) = self.ring.as_ref() else { break };
            let slot = ring.slot(i);
            let len = u32::from_ne_bytes([slot[4], slot[5], slot[6], slot[7]]) as usize;
            let snap = u32::from_ne_bytes([slot[8], slot[9], slot[10], slot[11]]) as usize;
            let mac = u16::from_ne_bytes([slot[12], slot[13]]) as usize;
            if snap < len {
                // Larger than a slot while the socket's queue was full: the kernel kept
                // only what fits the slot.
                c.lost += 1;
            } else if mac < vlen || mac + snap > ring.frame || hoff + vlen + snap > BUF_SIZE {
                c.oversize += 1;
            } else if let Some(id) = pool.alloc() {
                pool.raw_mut(id)[hoff..hoff + vlen + snap].copy_from_slice(&slot[mac - vlen..mac + snap]);
                let vnet = if self.vnet { VnetHdr::read(&slot[mac - vlen..mac]).unwrap_or_default() } else { VnetHdr::default() };
                received(pool, id, in_port, snap, vnet, out, &mut c);
            }
            ring.release(i);
        }
        if taken == 0 && max > 0 {
            // Woken with an empty ring: the socket has an error pending (the interface
            // went down: ENETDOWN), which keeps a level-triggered epoll reporting it
            // until it is cleared. Reading SO_ERROR clears it; reading a frame would
            // too, but could take a queued frame whose slot the kernel has not yet
            // published, out of its turn.
            let mut err: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt with a valid int and its length.
            unsafe { libc::getsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut libc::c_int as *mut libc::c_void, &mut len) };
        }
        Ok(c)
    }

    /// Receives up to `max` frames from the socket queue with one `recvmmsg`.
    fn recv_socket(&mut self, pool: &mut BufPool, in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError> {
        let n = max.min(BATCH_MAX).min(BATCH_MAX - out.len()).min(pool.available());
        if n == 0 {
            return Ok(RxCount::default());
        }
        let hoff = self.hdr_off();
        for i in 0..n {
            let id = pool.alloc().expect("checked available");
            self.ids[i] = id;
            // SAFETY: hoff < BUF_SIZE, inside the buffer.
            self.iovs[i] = libc::iovec { iov_base: unsafe { pool.base_ptr(id).add(hoff) } as *mut libc::c_void, iov_len: BUF_SIZE - hoff };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs[..n] point at valid iovecs over valid buffers.
        let r = unsafe { libc::recvmmsg(self.fd.as_raw_fd(), self.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        let got = if r < 0 {
            let e = io::Error::last_os_error();
            for &id in &self.ids[..n] {
                pool.release(id);
            }
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(RxCount::default()),
                // The interface went down (sk_err), reported once: not fatal.
                Some(libc::ENETDOWN) => Ok(RxCount::default()),
                _ => Err(PortError::from_io(e)),
            };
        } else {
            r as usize
        };
        let mut c = RxCount::default();
        for i in 0..n {
            let id = self.ids[i];
            if i >= got {
                pool.release(id);
                continue;
            }
            let len = self.hdrs[i].msg_len as usize;
            if self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                c.oversize += 1;
                pool.release(id);
                continue;
            }
            let (vnet, flen) = if self.vnet {
                if len < VNET_HDR_LEN {
                    c.truncated += 1;
                    pool.release(id);
                    continue;
                }
                let v = VnetHdr::read(&pool.raw(id)[hoff..hoff + VNET_HDR_LEN]).unwrap_or_default();
                (v, len - VNET_HDR_LEN)
            } else {
                (VnetHdr::default(), len)
            };
            received(pool, id, in_port, flen, vnet, out, &mut c);
        }
        Ok(c)
    }
}

/// A frame of `len` bytes (with its offload state) now in buffer `id`: into the batch.
#[inline]
fn received(pool: &mut BufPool, id: PktId, in_port: PortId, len: usize, vnet: VnetHdr, out: &mut Batch, c: &mut RxCount) {
    let m = pool.meta_mut(id);
    m.len = len as u32;
    m.vnet = vnet;
    m.in_port = in_port;
    out.push(id);
    c.received += 1;
}

impl Port for AfPacket {
    fn rx_batch(&mut self, pool: &mut BufPool, in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError> {
        if self.ring.is_some() {
            self.recv_ring(pool, in_port, out, max.min(BATCH_MAX))
        } else {
            self.recv_socket(pool, in_port, out, max)
        }
    }

    fn tx_batch(&mut self, pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        let mut c = TxCount::default();
        let mut start = 0;
        while start < pkts.len() {
            let n = (pkts.len() - start).min(BATCH_MAX);
            for i in 0..n {
                let id = pkts[start + i];
                let m = *pool.meta(id);
                let (off, len) = if self.vnet {
                    let o = m.off as usize - VNET_HDR_LEN;
                    m.vnet.write(&mut pool.raw_mut(id)[o..o + VNET_HDR_LEN]);
                    (o, m.len as usize + VNET_HDR_LEN)
                } else {
                    (m.off as usize, m.len as usize)
                };
                // SAFETY: off + len is inside the buffer (meta invariant).
                self.iovs[i] = libc::iovec { iov_base: unsafe { pool.base_ptr(id).add(off) } as *mut libc::c_void, iov_len: len };
                let h = &mut self.hdrs[i];
                h.msg_hdr.msg_name = std::ptr::null_mut();
                h.msg_hdr.msg_namelen = 0;
                h.msg_hdr.msg_iov = &mut self.iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
            }
            let mut done = 0;
            while done < n {
                // SAFETY: hdrs[done..n] are valid.
                let r = unsafe {
                    libc::sendmmsg(self.fd.as_raw_fd(), self.hdrs.as_mut_ptr().add(done), (n - done) as u32, libc::MSG_DONTWAIT)
                };
                if r > 0 {
                    for i in done..done + r as usize {
                        c.bytes += pool.meta(pkts[start + i]).len as u64;
                    }
                    c.sent += r as usize;
                    done += r as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => return Ok(c),
                    Some(libc::EBADF) | Some(libc::ENODEV) | Some(libc::ENXIO) => return Err(PortError::Gone(e)),
                    _ => {
                        // This one frame is refused (bad header, too big, link down): skip it.
                        c.errors += 1;
                        done += 1;
                    }
                }
            }
            start += n;
        }
        Ok(c)
    }

    fn caps(&self) -> PortCaps {
        PortCaps { vnet: self.vnet }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn kind(&self) -> &'static str {
        "afpacket"
    }

    fn steered_away(&mut self) -> u64 {
        // struct tpacket_rollover_stats { tp_all, tp_huge, tp_failed }: frames the fanout
        // sent to another socket because this one's ring was nearly full (cumulative;
        // only for sockets of a group with the rollover flag).
        let Ok(st) = getsockopt::<[u64; 3]>(self.fd.as_raw_fd(), SOL_PACKET, PACKET_ROLLOVER_STATS) else { return 0 };
        let d = st[0].wrapping_sub(self.rolled_seen);
        self.rolled_seen = st[0];
        d
    }

    fn kernel_drops(&mut self) -> u64 {
        // struct tpacket_stats { tp_packets, tp_drops }; reading resets it.
        getsockopt::<[u32; 2]>(self.fd.as_raw_fd(), SOL_PACKET, PACKET_STATISTICS).map_or(0, |st| st[1] as u64)
    }
}

#[cfg(test)]
#[path = "tests_afpacket.rs"]
pub(crate) mod tests_afpacket;
