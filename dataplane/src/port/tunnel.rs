//! Tunnel ports: the underlay side of overlay networks.
//!
//! - `TunnelRx` (one per worker and encapsulation): receives tunnel packets addressed to
//!   this host — VXLAN/UDP datagrams on a UDP socket shared by the workers with
//!   SO_REUSEPORT (the kernel keeps each flow on one worker), GRE packets on a raw
//!   IPPROTO_GRE socket (one worker: raw sockets each get every packet) — decapsulates
//!   them in place (zero copy: the inner frame stays where it landed) and tags each
//!   frame with the remote host and the tunnel id. The worker then finds the peer port
//!   of that (host, network) in the tables (`demux`).
//! - `TunnelPeer` (one per worker, remote host and network): the port the bridge sends
//!   to for a remote host. It writes the outer headers into the buffer's headroom
//!   (`encap::encap`: outer source port from the inner flow's hash) and sends whole
//!   outer IPv4 packets through the worker's raw socket (IPPROTO_RAW), one `sendmmsg`
//!   per batch. It declares no offloads, so the egress stage has already segmented GSO
//!   frames and completed partial checksums in software.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::{Port, PortCaps, PortError, RxCount, TxCount};
use crate::buf::{Batch, BufPool, PktId, PortId, BATCH_MAX, BUF_SIZE, HEADROOM};
use crate::encap::{self, Peer, Tunnel, Vtep};
use crate::vnet::VnetHdr;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setopt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v is a valid c_int.
    cvt(unsafe { libc::setsockopt(fd, level, name, &v as *const _ as *const libc::c_void, 4) }).map(|_| ())
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

/// Opens one worker's raw transmit socket: whole IPv4 packets, routed by the kernel.
pub fn raw_tx_socket() -> io::Result<Arc<OwnedFd>> {
    // SAFETY: plain syscall; owned below.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if setopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20).is_err() {
        let _ = setopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20);
    }
    Ok(Arc::new(fd))
}

/// What a `TunnelRx` receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxKind {
    /// VXLAN datagrams (UDP socket: the payload starts at the VXLAN header).
    Vxlan,
    /// GRE packets (raw socket: the payload starts at the outer IPv4 header).
    Gre,
    /// IP-in-UDP datagrams (UDP socket: the payload is the inner IP packet).
    Udp,
}

/// One worker's receive side of an encapsulation.
pub struct TunnelRx {
    fd: OwnedFd,
    kind: RxKind,
    vtep: Vtep,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in]>,
    ids: [PktId; BATCH_MAX],
}

// The raw pointers in the scratch arrays are rebuilt on every call.
unsafe impl Send for TunnelRx {}

impl TunnelRx {
    fn new(fd: OwnedFd, kind: RxKind, vtep: Vtep) -> TunnelRx {
        // SAFETY: zeroed mmsghdr/sockaddr_in are valid placeholders.
        let hdrs = (0..BATCH_MAX).map(|_| unsafe { zeroed::<libc::mmsghdr>() }).collect();
        let iovs = (0..BATCH_MAX).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect();
        let names = (0..BATCH_MAX).map(|_| unsafe { zeroed::<libc::sockaddr_in>() }).collect();
        TunnelRx { fd, kind, vtep, hdrs, iovs, names, ids: [0; BATCH_MAX] }
    }

    /// A VXLAN receive socket on `local:port`, shared with the other workers
    /// (SO_REUSEPORT).
    pub fn vxlan(local: Ipv4Addr, port: u16) -> io::Result<TunnelRx> {
        // SAFETY: plain syscall; owned below.
        let raw = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setopt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        if setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20).is_err() {
            let _ = setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 20);
        }
        let sa = sockaddr(local, port);
        // SAFETY: valid sockaddr_in.
        cvt(unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_in>() as u32) })?;
        let mut v = Vtep::vxlan(local);
        v.port = port;
        Ok(TunnelRx::new(fd, RxKind::Vxlan, v))
    }

    /// An IP-in-UDP receive socket on `local:port` (SO_REUSEPORT, like VXLAN).
    pub fn udp(local: Ipv4Addr, port: u16) -> io::Result<TunnelRx> {
        let mut r = TunnelRx::vxlan(local, port)?;
        r.kind = RxKind::Udp;
        r.vtep = Vtep::udp(local);
        r.vtep.port = port;
        Ok(r)
    }

    /// A GRE receive socket (raw, IP protocol 47) for packets to `local`.
    pub fn gre(local: Ipv4Addr) -> io::Result<TunnelRx> {
        // SAFETY: plain syscall; owned below.
        let raw = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 47) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20).is_err() {
            let _ = setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 20);
        }
        Ok(TunnelRx::new(fd, RxKind::Gre, Vtep::gre(local)))
    }
}

impl Port for TunnelRx {
    fn rx_batch(&mut self, pool: &mut BufPool, _in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError> {
        let n = max.min(BATCH_MAX).min(BATCH_MAX - out.len()).min(pool.available());
        if n == 0 {
            return Ok(RxCount::default());
        }
        for i in 0..n {
            let id = pool.alloc().expect("checked available");
            self.ids[i] = id;
            // SAFETY: HEADROOM < BUF_SIZE.
            self.iovs[i] = libc::iovec { iov_base: unsafe { pool.base_ptr(id).add(HEADROOM) } as *mut libc::c_void, iov_len: BUF_SIZE - HEADROOM };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs[..n] point at valid buffers and names.
        let r = unsafe { libc::recvmmsg(self.fd.as_raw_fd(), self.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            for &id in &self.ids[..n] {
                pool.release(id);
            }
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(RxCount::default()),
                _ => Err(PortError::from_io(e)),
            };
        }
        let got = r as usize;
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
            let data = &pool.raw(id)[HEADROOM..HEADROOM + len];
            let d = match self.kind {
                RxKind::Vxlan => encap::vxlan::decap_payload(data),
                RxKind::Gre => encap::gre::decap(&self.vtep, data),
                RxKind::Udp => encap::udp::decap_payload(data),
            };
            let Ok(d) = d else {
                c.truncated += 1;
                pool.release(id);
                continue;
            };
            let src = match self.kind {
                RxKind::Vxlan | RxKind::Udp => u32::from_be(self.names[i].sin_addr.s_addr),
                RxKind::Gre => u32::from(d.outer_src),
            };
            let m = pool.meta_mut(id);
            m.off = (HEADROOM + d.inner_off) as u32;
            m.len = d.inner_len as u32;
            m.vnet = VnetHdr::default();
            m.in_port = 0;
            m.tun_src = src;
            m.tun_id = d.tunnel.id();
            out.push(id);
            c.received += 1;
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
        Some(self.fd.as_raw_fd())
    }

    fn kind(&self) -> &'static str {
        "tunnel-rx"
    }

    fn demux(&self) -> bool {
        true
    }
}

/// A worker's handle on one remote host of one overlay network (see the module docs).
pub struct TunnelPeer {
    fd: Arc<OwnedFd>,
    peer: Peer,
    vtep: Vtep,
    dst: libc::sockaddr_in,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
}

// The raw pointers in the scratch arrays are rebuilt on every call.
unsafe impl Send for TunnelPeer {}

impl TunnelPeer {
    /// `fd`: the worker's raw socket; `vtep`: the local end (address, port, policy).
    pub fn new(fd: Arc<OwnedFd>, peer: Peer, mut vtep: Vtep) -> TunnelPeer {
        vtep.hash_seed = u32::from(peer.remote) ^ 0x9e37_79b9;
        // SAFETY: zeroed mmsghdr is a valid placeholder.
        let hdrs = (0..BATCH_MAX).map(|_| unsafe { zeroed::<libc::mmsghdr>() }).collect();
        let iovs = (0..BATCH_MAX).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect();
        TunnelPeer { fd, dst: sockaddr(peer.remote, 0), peer, vtep, hdrs, iovs }
    }

    pub fn peer(&self) -> Peer {
        self.peer
    }
}

impl Port for TunnelPeer {
    fn rx_batch(&mut self, _pool: &mut BufPool, _in_port: PortId, _out: &mut Batch, _max: usize) -> Result<RxCount, PortError> {
        Ok(RxCount::default())
    }

    fn tx_batch(&mut self, pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        let mut c = TxCount::default();
        let mut start = 0;
        while start < pkts.len() {
            let chunk = &pkts[start..(start + BATCH_MAX).min(pkts.len())];
            let mut n = 0;
            for &id in chunk {
                let m = *pool.meta(id);
                match encap::encap(&mut self.vtep, &self.peer, pool.raw_mut(id), m.off as usize, m.len as usize, &m.vnet) {
                    Ok(e) => {
                        // SAFETY: e.off..e.end() lies inside the buffer (encap checked it).
                        self.iovs[n] = libc::iovec { iov_base: unsafe { pool.base_ptr(id).add(e.off) } as *mut libc::c_void, iov_len: e.len };
                        let h = &mut self.hdrs[n];
                        h.msg_hdr.msg_name = &mut self.dst as *mut _ as *mut libc::c_void;
                        h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                        h.msg_hdr.msg_iov = &mut self.iovs[n];
                        h.msg_hdr.msg_iovlen = 1;
                        h.msg_hdr.msg_control = std::ptr::null_mut();
                        h.msg_hdr.msg_controllen = 0;
                        h.msg_hdr.msg_flags = 0;
                        c.bytes += m.len as u64;
                        n += 1;
                    }
                    Err(_) => c.errors += 1,
                }
            }
            let mut done = 0;
            while done < n {
                // SAFETY: hdrs[done..n] are valid.
                let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), self.hdrs.as_mut_ptr().add(done), (n - done) as u32, libc::MSG_DONTWAIT) };
                if r > 0 {
                    c.sent += r as usize;
                    done += r as usize;
                    continue;
                }
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => return Ok(c),
                    _ => {
                        c.errors += 1;
                        done += 1;
                    }
                }
            }
            start += chunk.len();
        }
        Ok(c)
    }

    fn caps(&self) -> PortCaps {
        PortCaps { vnet: false }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn kind(&self) -> &'static str {
        match self.peer.tunnel {
            Tunnel::Vxlan(_) => "vxlan",
            Tunnel::Gre(_) => "gre",
            Tunnel::Udp => "udp",
        }
    }
}

/// A port that does nothing (stands in for workers that do not own a receive socket).
pub struct NullPort;

impl Port for NullPort {
    fn rx_batch(&mut self, _pool: &mut BufPool, _in_port: PortId, _out: &mut Batch, _max: usize) -> Result<RxCount, PortError> {
        Ok(RxCount::default())
    }
    fn tx_batch(&mut self, _pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError> {
        Ok(TxCount { sent: 0, errors: pkts.len(), bytes: 0 })
    }
    fn caps(&self) -> PortCaps {
        PortCaps { vnet: false }
    }
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
    fn kind(&self) -> &'static str {
        "null"
    }
}
