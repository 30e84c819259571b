//! TAP ports: `/dev/net/tun` in TAP mode without packet information, with virtio-net
//! headers and checksum/TSO/USO offloads announced to the kernel (TUNSETOFFLOAD), so
//! the sandbox behind the TAP sends 64 KiB TCP super-frames with partial checksums and
//! accepts them back. Created multi-queue: each worker opens its own queue of the same
//! device; the kernel spreads the sandbox's flows over the queues by flow hash, or, with
//! the steering program of `steer` attached (the daemon's default), by flow hash with
//! rollover to the next queue while a flow's own queue is behind.
//!
//! The TAP device is created in the daemon's namespace and may then be moved into a
//! sandbox and renamed; the queue descriptors keep working wherever the device lives.
//! A persistent TAP survives the daemon; reattaching to it means opening it by name
//! from inside the namespace where it now lives (see `open_queue`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Port, PortCaps, PortError, RxCount, TxCount};
use crate::buf::{Batch, BufPool, PktId, PortId, BUF_SIZE, HEADROOM};
use super::steer::QueueBacklog;
use crate::vnet::{VnetHdr, VNET_HDR_LEN};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// How to open a TAP queue.
#[derive(Clone, Copy, Debug)]
pub struct TapOpts {
    /// Virtio-net headers and offloads (the default). Without them the kernel hands us
    /// plain, fully checksummed, MTU-sized frames.
    pub vnet: bool,
    pub multi_queue: bool,
}

impl Default for TapOpts {
    fn default() -> Self {
        TapOpts { vnet: true, multi_queue: true }
    }
}

/// One queue of a TAP device (one worker's handle).
pub struct TapQueue {
    fd: OwnedFd,
    vnet: bool,
    name: String,
    /// This queue's count for the steering program, if one is attached.
    backlog: Option<QueueBacklog>,
}

fn ioctl_ptr<T>(fd: RawFd, req: libc::c_ulong, arg: *mut T) -> io::Result<()> {
    // SAFETY: arg points to the structure the ioctl expects.
    if unsafe { libc::ioctl(fd, req, arg) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_val(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: value ioctl.
    if unsafe { libc::ioctl(fd, req, arg) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl TapQueue {
    /// Creates the TAP `name` (in the calling thread's namespace) if it does not exist,
    /// or attaches one more queue to it if it does. Returns the queue; its `name()` is
    /// the device name the kernel used.
    pub fn open_queue(name: &str, opts: &TapOpts) -> io::Result<TapQueue> {
        if name.is_empty() || name.len() > 15 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("TAP name {name:?} must be 1-15 bytes")));
        }
        let path = c"/dev/net/tun";
        // SAFETY: valid C string; fd owned below.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        if opts.vnet {
            req.flags |= IFF_VNET_HDR;
        }
        if opts.multi_queue {
            req.flags |= IFF_MULTI_QUEUE;
        }
        ioctl_ptr(raw, TUNSETIFF, &mut req)?;
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(16);
        let actual = String::from_utf8_lossy(&req.name[..end]).into_owned();
        if opts.vnet {
            let mut sz: libc::c_int = VNET_HDR_LEN as libc::c_int;
            ioctl_ptr(raw, TUNSETVNETHDRSZ, &mut sz)?;
            let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
            // USO needs Linux 6.2; fall back to TCP offloads only.
            if ioctl_val(raw, TUNSETOFFLOAD, (base | TUN_F_USO4 | TUN_F_USO6) as libc::c_ulong).is_err() {
                ioctl_val(raw, TUNSETOFFLOAD, base as libc::c_ulong)?;
            }
        } else {
            ioctl_val(raw, TUNSETOFFLOAD, 0)?;
        }
        Ok(TapQueue { fd, vnet: opts.vnet, name: actual, backlog: None })
    }

    /// Opens `n` queues of the TAP `name` (creating it if needed).
    pub fn open_queues(name: &str, n: usize, opts: &TapOpts) -> io::Result<Vec<TapQueue>> {
        let n = if opts.multi_queue { n.max(1) } else { 1 };
        (0..n).map(|_| TapQueue::open_queue(name, opts)).collect()
    }

    /// Makes the device outlive its descriptors (or not).
    pub fn set_persist(&self, persist: bool) -> io::Result<()> {
        ioctl_val(self.fd.as_raw_fd(), TUNSETPERSIST, persist as libc::c_ulong)
    }

    /// Counts what this queue reads for the steering program (`steer::attach`).
    pub fn set_backlog(&mut self, b: QueueBacklog) {
        self.backlog = Some(b);
    }

    /// The steering program's view of this queue, if one is attached.
    pub fn backlog(&self) -> Option<&QueueBacklog> {
        self.backlog.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn hdr_off(&self) -> usize {
        if self.vnet {
            HEADROOM - VNET_HDR_LEN
        } else {
            HEADROOM
        }
    }
}

impl Drop for TapQueue {
    fn drop(&mut self) {
        if self.backlog.as_ref().is_some_and(|b| b.queue() == 0) {
            super::steer::detach(self.fd.as_raw_fd());
        }
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Port for TapQueue {
    fn rx_batch(&mut self, pool: &mut BufPool, in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError> {
        let mut c = RxCount::default();
        let hoff = self.hdr_off();
        let mut reads = 0;
        let mut empty = false;
        while c.received < max && !out.is_full() {
            let Some(id) = pool.alloc() else { break };
            // SAFETY: reads at most BUF_SIZE - hoff bytes into the buffer.
            let r = unsafe {
                libc::read(self.fd.as_raw_fd(), pool.base_ptr(id).add(hoff) as *mut libc::c_void, BUF_SIZE - hoff)
            };
            if r < 0 {
                pool.release(id);
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => empty = true,
                    Some(libc::EINTR) => {}
                    _ => return Err(PortError::from_io(e)),
                }
                break;
            }
            reads += 1;
            let len = r as usize;
            let (vnet, flen) = if self.vnet {
                if len < VNET_HDR_LEN {
                    c.truncated += 1;
                    pool.release(id);
                    continue;
                }
                (VnetHdr::read(&pool.raw(id)[hoff..hoff + VNET_HDR_LEN]).unwrap_or_default(), len - VNET_HDR_LEN)
            } else {
                (VnetHdr::default(), len)
            };
            let m = pool.meta_mut(id);
            m.len = flen as u32;
            m.vnet = vnet;
            m.in_port = in_port;
            out.push(id);
            c.received += 1;
        }
        match &self.backlog {
            Some(b) if empty => b.drained(),
            Some(b) => b.read(reads),
            None => {}
        }
        Ok(c)
    }

    fn tx_batch(&mut self, pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        let mut c = TxCount::default();
        for &id in pkts {
            let m = *pool.meta(id);
            let (off, len) = if self.vnet {
                let o = m.off as usize - VNET_HDR_LEN;
                m.vnet.write(&mut pool.raw_mut(id)[o..o + VNET_HDR_LEN]);
                (o, m.len as usize + VNET_HDR_LEN)
            } else {
                (m.off as usize, m.len as usize)
            };
            // SAFETY: off + len is inside the buffer.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), pool.base_ptr(id).add(off) as *const libc::c_void, len) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => return Ok(c),
                    Some(libc::EBADFD) | Some(libc::EBADF) => return Err(PortError::Gone(e)),
                    // EIO: the device is down; EINVAL: header refused. Skip the frame.
                    _ => c.errors += 1,
                }
            } else {
                c.sent += 1;
                c.bytes += m.len as u64;
            }
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
        "tap"
    }

    fn steered_away(&mut self) -> u64 {
        self.backlog.as_mut().map_or(0, |b| b.take_rolled())
    }
}
