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
    gro: bool,
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
        TunnelRx { fd, kind, gro: false, vtep, hdrs, iovs, names, ids: [0; BATCH_MAX] }
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
        let mut r = TunnelRx::new(fd, RxKind::Vxlan, v);
        r.enable_gro();
        Ok(r)
    }

    /// Asks the kernel to hand over UDP GSO batches whole (`UDP_GRO`): one receive per
    /// super-frame the sender segmented with `UDP_SEGMENT`.
    fn enable_gro(&mut self) {
        self.gro = setopt(self.fd.as_raw_fd(), libc::SOL_UDP, 104 /* UDP_GRO */, 1).is_ok();
    }

    /// One `UDP_GRO` receive: splits the batch into its datagrams, decapsulates each in
    /// place and coalesces consecutive TCP segments of one flow straight into new
    /// super-frame buffers (one copy per segment), other frames into their own buffers.
    fn rx_gro(&mut self, pool: &mut BufPool, out: &mut Batch) -> Result<RxCount, PortError> {
        use crate::offload::TcpCoalescer;
        let mut c = RxCount::default();
        if out.len() + 48 > BATCH_MAX || pool.available() < 50 {
            return Ok(c);
        }
        let Some(b) = pool.alloc() else { return Ok(c) };
        // SAFETY: buffer `b` is ours alone until released; the slice ends inside it.
        let area = unsafe { std::slice::from_raw_parts_mut(pool.base_ptr(b).add(HEADROOM), BUF_SIZE - HEADROOM) };
        let (len, name, seg) = match recv_gro(self.fd.as_raw_fd(), area) {
            Ok(x) => x,
            Err(e) => {
                pool.release(b);
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(c),
                    _ => Err(PortError::from_io(e)),
                };
            }
        };
        let src = u32::from_be(name.sin_addr.s_addr);
        let base = HEADROOM;
        let mut cur: Option<(PktId, TcpCoalescer)> = None;
        let mut pos = 0;
        let finish = |pool: &mut BufPool, head: PktId, co: &TcpCoalescer, out: &mut Batch| {
            let off = pool.meta(head).off as usize;
            if let Ok((l, vh)) = co.finish(&mut pool.raw_mut(head)[off..]) {
                let m = pool.meta_mut(head);
                m.len = l as u32;
                m.vnet = vh;
            }
            out.push(head);
        };
        while pos < len {
            let end = (pos + seg).min(len);
            // SAFETY: the datagram lies inside buffer `b`, which no other code touches now.
            let data = unsafe { std::slice::from_raw_parts(pool.base_ptr(b).add(base + pos), end - pos) };
            pos = end;
            let d = match self.kind {
                RxKind::Vxlan => encap::vxlan::decap_payload(data),
                RxKind::Udp => encap::udp::decap_payload(data),
                RxKind::Gre => encap::gre::decap(&self.vtep, data),
            };
            let Ok(d) = d else {
                c.truncated += 1;
                continue;
            };
            let inner = &data[d.inner_range()];
            if let Some((head, co)) = cur.as_mut() {
                let off = pool.meta(*head).off as usize;
                if co.try_append(&mut pool.raw_mut(*head)[off..], inner) {
                    continue;
                }
                let (head, co) = cur.take().expect("checked");
                finish(pool, head, &co, out);
                c.received += 1;
            }
            if out.is_full() {
                break;
            }
            let Some(p) = pool.alloc() else { break };
            pool.raw_mut(p)[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
            let m = pool.meta_mut(p);
            m.len = inner.len() as u32;
            m.vnet = VnetHdr::default();
            m.in_port = 0;
            m.tun_src = src;
            m.tun_id = d.tunnel.id();
            let co = if self.kind == RxKind::Vxlan { TcpCoalescer::start(inner) } else { None };
            match co {
                Some(co) => cur = Some((p, co)),
                None => {
                    out.push(p);
                    c.received += 1;
                }
            }
        }
        if let Some((head, co)) = cur.take() {
            finish(pool, head, &co, out);
            c.received += 1;
        }
        pool.release(b);
        Ok(c)
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
        if self.gro {
            return self.rx_gro(pool, out);
        }
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

/// One worker's UDP transmit sockets for VXLAN and IP-in-UDP: bound to the underlay
/// address on different ephemeral ports; a flow always uses the socket its hash picks,
/// so it keeps one outer source port (ECMP/RSS spread) and the kernel can segment
/// (`UDP_SEGMENT`: one send per 64 KB super-frame).
pub struct UdpTx {
    socks: Vec<OwnedFd>,
}

impl UdpTx {
    pub fn open(local: Ipv4Addr, n: usize) -> io::Result<Arc<UdpTx>> {
        let mut socks = Vec::new();
        for _ in 0..n.max(1) {
            // SAFETY: plain syscall; owned below.
            let raw = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if setopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20).is_err() {
                let _ = setopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20);
            }
            let sa = sockaddr(local, 0);
            // SAFETY: valid sockaddr_in.
            cvt(unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_in>() as u32) })?;
            socks.push(fd);
        }
        Ok(Arc::new(UdpTx { socks }))
    }

    fn pick(&self, src_port: u16) -> RawFd {
        self.socks[src_port as usize % self.socks.len()].as_raw_fd()
    }
}

/// Turns on `UDP_GRO` on a UDP socket: a receive then returns a whole batch of
/// same-sized datagrams the sender segmented with `UDP_SEGMENT` (see [`recv_gro`]).
pub fn enable_udp_gro(fd: RawFd) -> io::Result<()> {
    setopt(fd, libc::SOL_UDP, 104 /* UDP_GRO */, 1)
}

/// One receive on a UDP socket, `UDP_GRO` aware: returns the bytes read, the source and
/// the size of each datagram in the batch (the last may be shorter; the whole length
/// when the kernel handed over a single datagram).
pub fn recv_gro(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, libc::sockaddr_in, usize)> {
    // SAFETY: sockaddr_in is plain data.
    let mut name: libc::sockaddr_in = unsafe { zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; all pointers are valid for the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: msg is valid.
    let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = r as usize;
    let mut seg = len;
    // SAFETY: walking the control messages the kernel wrote into cbuf.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&msg);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_UDP && (*cm).cmsg_type == 104 {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(cm) as *const u16);
                if v > 0 {
                    seg = v as usize;
                }
            }
            cm = libc::CMSG_NXTHDR(&msg, cm);
        }
    }
    Ok((len, name, seg.max(1)))
}

/// A `sockaddr_in` for `ip:port`.
pub fn sockaddr_v4(a: std::net::SocketAddrV4) -> libc::sockaddr_in {
    sockaddr(*a.ip(), a.port())
}

/// The address in a `sockaddr_in`.
pub fn from_sockaddr(s: &libc::sockaddr_in) -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)), u16::from_be(s.sin_port))
}

/// Sends `payload` to `dst` on `fd`, as `UDP_SEGMENT` datagrams of `seg` bytes when
/// `seg` is given.
pub fn send_udp(fd: RawFd, payload: &[u8], dst: &libc::sockaddr_in, seg: Option<u16>) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    // cmsghdr (16 bytes) + u16, aligned to 8.
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; pointers valid for the duration of the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = dst as *const _ as *mut libc::c_void;
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(seg) = seg {
        // SAFETY: cbuf is large and aligned enough for one cmsg carrying a u16.
        unsafe {
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = 103; // UDP_SEGMENT
            (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
        }
    }
    // SAFETY: msg is valid.
    if unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A worker's handle on one remote host of one overlay network (see the module docs).
pub struct TunnelPeer {
    fd: Arc<OwnedFd>,
    udp: Option<Arc<UdpTx>>,
    mtu: u16,
    scratch: Box<[u8]>,
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
        TunnelPeer { fd, udp: None, mtu: 1500, scratch: Box::new([]), dst: sockaddr(peer.remote, 0), peer, vtep, hdrs, iovs }
    }

    /// Sends through UDP sockets (VXLAN, IP-in-UDP): accepts GSO frames and sends them
    /// as `UDP_SEGMENT` batches that fit `mtu` on the underlay.
    pub fn with_udp(mut self, udp: Arc<UdpTx>, mtu: u16) -> TunnelPeer {
        if !matches!(self.peer.tunnel, Tunnel::Gre(_)) {
            self.dst = sockaddr(self.peer.remote, self.vtep.port);
            self.udp = Some(udp);
            self.mtu = mtu;
            self.scratch = vec![0u8; BUF_SIZE].into_boxed_slice();
        }
        self
    }

    /// The UDP path: one super-frame or frame per call.
    fn tx_udp(&mut self, pool: &mut BufPool, id: PktId, c: &mut TxCount) -> Result<(), ()> {
        let Some(udp) = self.udp.clone() else { return Err(()) };
        let m = *pool.meta(id);
        if m.vnet.is_gso() {
            let frame = pool.frame(id);
            let mut es = match encap::EncapSegments::new(&mut self.vtep, self.peer, frame, &m.vnet, self.mtu) {
                Ok(es) => es,
                Err(_) => {
                    c.errors += 1;
                    return Ok(());
                }
            };
            while let Some(r) = es.next_batch(&mut self.scratch) {
                let Ok(b) = r else {
                    c.errors += 1;
                    return Ok(());
                };
                let seg = if b.segs > 1 { Some(b.seg_size) } else { None };
                match send_udp(udp.pick(b.src_port), &self.scratch[b.off..b.off + b.len], &self.dst, seg) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) || e.raw_os_error() == Some(libc::ENOBUFS) => return Err(()),
                    Err(_) => {
                        c.errors += 1;
                        return Ok(());
                    }
                }
            }
        } else {
            // Into scratch: completing a partial checksum must not touch a buffer other
            // ports may still send as it is.
            let len = m.len as usize;
            self.scratch[HEADROOM..HEADROOM + len].copy_from_slice(pool.frame(id));
            let e = match encap::encap(&mut self.vtep, &self.peer, &mut self.scratch, HEADROOM, len, &m.vnet) {
                Ok(e) => e,
                Err(_) => {
                    c.errors += 1;
                    return Ok(());
                }
            };
            match send_udp(udp.pick(e.src_port), &self.scratch[e.payload_range()], &self.dst, None) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) || e.raw_os_error() == Some(libc::ENOBUFS) => return Err(()),
                Err(_) => {
                    c.errors += 1;
                    return Ok(());
                }
            }
        }
        c.sent += 1;
        c.bytes += m.len as u64;
        Ok(())
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
        if self.udp.is_some() {
            for &id in pkts {
                if self.tx_udp(pool, id, &mut c).is_err() {
                    break; // socket full: the rest is the caller's
                }
            }
            return Ok(c);
        }
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
        PortCaps { vnet: self.udp.is_some() }
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
