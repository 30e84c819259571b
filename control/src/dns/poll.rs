//! Small `libc` wrappers the event loop needs: epoll, an eventfd to wake it, a random
//! source for query ids, and a non-blocking TCP connect.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readable (and peer hang-up, so a half-closed stream is seen).
pub(crate) const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// Writable.
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;

/// What an epoll token stands for (its top byte); the rest is a never-reused counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The eventfd.
    Wake = 1,
    /// A sandbox's UDP socket (127.0.0.11:53 in its namespace).
    SandboxUdp = 2,
    /// A sandbox's TCP listener.
    SandboxTcp = 3,
    /// An accepted TCP client connection.
    Client = 4,
    /// A socket of the upstream UDP pool.
    UpstreamUdp = 5,
    /// A TCP connection to an upstream server.
    UpstreamTcp = 6,
}

/// Hands out epoll tokens.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    next: u64,
}

impl Tokens {
    /// A new token of this kind.
    pub(crate) fn next(&mut self, kind: Kind) -> u64 {
        self.next += 1;
        (kind as u64) << 56 | (self.next & ((1 << 56) - 1))
    }
}

/// The kind of a token.
pub(crate) fn kind_of(token: u64) -> Option<Kind> {
    Some(match token >> 56 {
        1 => Kind::Wake,
        2 => Kind::SandboxUdp,
        3 => Kind::SandboxTcp,
        4 => Kind::Client,
        5 => Kind::UpstreamUdp,
        6 => Kind::UpstreamTcp,
        _ => return None,
    })
}

/// An epoll instance (level-triggered use only).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the fd is owned right away.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll fd and event pointer.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd` with `token` for `events`.
    pub(crate) fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Changes the events of a registered `fd`.
    pub(crate) fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Deregisters `fd` (errors ignored: closing the fd deregisters it anyway).
    pub(crate) fn delete(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits for events; `None` waits forever. EINTR counts as no event.
    pub(crate) fn wait(&self, events: &mut [libc::epoll_event], timeout: Option<Duration>) -> io::Result<usize> {
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_millis().saturating_add(u128::from(d.subsec_nanos() % 1_000_000 != 0)).min(60_000) as i32,
        };
        // SAFETY: the buffer is valid for events.len() entries.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

/// An eventfd used to wake the loop when a command is queued.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A non-blocking eventfd.
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; the fd is owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Makes the fd readable.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }

    /// Resets it.
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64.
        unsafe { libc::read(self.fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }

    /// The raw fd (for epoll).
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Random numbers from `getrandom(2)`, fetched in blocks.
#[derive(Debug)]
pub(crate) struct Rng {
    buf: [u8; 256],
    pos: usize,
    fallback: u64,
}

impl Rng {
    /// A new source.
    pub(crate) fn new() -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Rng { buf: [0; 256], pos: 256, fallback: t | 1 }
    }

    /// A random u16.
    pub(crate) fn u16(&mut self) -> u16 {
        if self.pos + 2 > self.buf.len() {
            // SAFETY: getrandom writes at most buf.len() bytes into buf.
            let n = unsafe { libc::getrandom(self.buf.as_mut_ptr() as *mut libc::c_void, self.buf.len(), 0) };
            if n != self.buf.len() as isize {
                // Never expected on Linux >= 3.17; keep going with xorshift rather than fail.
                for b in self.buf.iter_mut() {
                    self.fallback ^= self.fallback << 13;
                    self.fallback ^= self.fallback >> 7;
                    self.fallback ^= self.fallback << 17;
                    *b = self.fallback as u8;
                }
            }
            self.pos = 0;
        }
        let v = u16::from_ne_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        v
    }
}

/// Starts a non-blocking TCP connect to `addr` in the calling thread's namespace; the
/// stream becomes writable when the connect finished (check `take_error`).
pub(crate) fn nb_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_storage is a valid value; we fill the family's fields.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: ss holds a valid sockaddr of `len` bytes.
    let rc = unsafe { libc::connect(owned.as_raw_fd(), &ss as *const _ as *const libc::sockaddr, len as libc::socklen_t) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from(owned))
}
