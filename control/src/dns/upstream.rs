//! Forwarding to upstream servers, and the default upstream list.
//!
//! Every socket here lives in the daemon's namespace (the event-loop thread's), where the
//! uplink and the host's routes are; the sandbox needs no route to the upstream at all.
//!
//! * UDP: a small pool of unconnected sockets on random ports per address family, opened
//!   once. Each attempt picks a random pool socket and a fresh random id (unique on that
//!   socket); an answer is accepted only if it arrives on that socket with that id, from
//!   the server asked, with QR set and the same question. Id and port together give about
//!   19 bits against off-path spoofing, with a fixed number of file descriptors.
//! * TCP: one connection per attempt, used when the client asked over TCP, or when a UDP
//!   answer came back truncated (TC): the same server is then asked again over TCP, and the
//!   remaining servers too if need be. The query keeps the client's id.
//! * Servers are tried in order, each for [`crate::dns::DnsConfig::upstream_timeout`]; a
//!   send or connect error moves on at once, and so does an ICMP error for a UDP query
//!   (port or host unreachable: the UDP sockets set `IP_RECVERR`/`IPV6_RECVERR` and read
//!   the error queue, which returns the query that caused it and the server it went to). When none answered: SERVFAIL. Answers are
//!   passed back as they come (NXDOMAIN, SERVFAIL, REFUSED included), only the id restored;
//!   an answer larger than the UDP client can take is replaced by its truncated form (TC),
//!   so the client retries over TCP.
//! * At most `max_inflight` queries are in flight; a new one evicts the oldest, which gets
//!   SERVFAIL.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::poll::{nb_connect, Epoll, Kind, Rng, Tokens, IN, OUT};
use super::resolve::servfail;
use super::wire::{self, flag, Question};
use super::Counters;

/// Where the answer to a query goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientRef {
    /// A datagram to `peer` from the sandbox UDP socket with token `sock`.
    Udp {
        /// Token of the sandbox's UDP socket.
        sock: u64,
        /// The client's address.
        peer: SocketAddr,
    },
    /// A message on the client TCP connection with token `conn`.
    Tcp {
        /// Token of the connection.
        conn: u64,
    },
}

/// A finished query: the bytes to send to the client.
#[derive(Debug)]
pub(crate) struct Done {
    /// The destination.
    pub client: ClientRef,
    /// The response (client's id).
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
enum Attempt {
    None,
    Udp { sock: usize, id: u16, server: SocketAddr },
    Tcp { token: u64 },
}

/// The asking sandbox's namespace: where a query is sent from when the daemon's own
/// namespace has no route to the upstream (the uplink belongs to the dataplane, so with
/// `--uplink` the daemon's kernel may have no way out; the sandbox's default route goes
/// through the gateway and the masquerade, as Docker's forwarder in the container does).
#[derive(Clone)]
pub(crate) struct Via {
    pub name: Arc<str>,
    pub ns: Arc<crate::netns::Netns>,
    /// The sandbox named its own servers (`--dns`): a loopback one is the sandbox's
    /// loopback, not the daemon's.
    pub own_loopback: bool,
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Via({})", self.name)
    }
}

/// Runs `f` with the calling thread in namespace `ns`, then returns it to `home`.
fn in_ns<T>(ns: &crate::netns::Netns, home: &crate::netns::Netns, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: setns on this thread with valid namespace descriptors.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let r = f();
    // SAFETY: as above.
    while unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        tracing::error!(error = %io::Error::last_os_error(), "dns: cannot return to the daemon's namespace; retrying");
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

/// Asks the kernel to queue ICMP errors for the datagrams `s` sent (`IP_RECVERR`), so an
/// upstream that refuses is known at once instead of after the timeout.
fn set_recverr(s: &UdpSocket, v4: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, opt) = if v4 { (libc::IPPROTO_IP, libc::IP_RECVERR) } else { (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) };
    // SAFETY: setsockopt with a valid fd and a c_int option value of the right size.
    let r = unsafe { libc::setsockopt(s.as_raw_fd(), level, opt, &one as *const _ as *const libc::c_void, std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One entry of a socket's error queue: the start of the datagram that caused it (our
/// query: its id is in the first two bytes) and where it was sent. `None` when the queue
/// is empty.
fn recv_error(s: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut ctrl = [0u8; 256];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = ctrl.len();
    // SAFETY: recvmsg on a valid fd with the buffers above.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let addr = match name.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family checked).
            let a = unsafe { &*(&name as *const _ as *const libc::sockaddr_in) };
            SocketAddr::new(IpAddr::V4(u32::from_be(a.sin_addr.s_addr).into()), u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family checked).
            let a = unsafe { &*(&name as *const _ as *const libc::sockaddr_in6) };
            SocketAddr::new(IpAddr::V6(a.sin6_addr.s6_addr.into()), u16::from_be(a.sin6_port))
        }
        _ => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
    };
    Some((n as usize, addr))
}

/// True for the errors a send or connect gets at once when no route leads to the server.
fn unroutable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH))
}

#[derive(Debug)]
struct Pending {
    via: Option<Via>,
    client: ClientRef,
    query: Vec<u8>,
    question: Question,
    max_udp: usize,
    upstreams: Arc<[SocketAddr]>,
    next: usize,
    tcp: bool,
    attempt: Attempt,
    seq: u32,
}

#[derive(Debug)]
struct UpTcp {
    stream: TcpStream,
    pending: u64,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    connected: bool,
}

/// Upstream UDP sockets per address family.
const POOL_SIZE: usize = 8;
/// Datagrams read from one socket per wake-up.
const READ_BATCH: usize = 64;

/// The forwarding half of the event loop: owns the upstream sockets and the in-flight
/// queries. All methods run on the event-loop thread.
#[derive(Debug)]
pub(crate) struct Forwarder {
    timeout: Duration,
    max_inflight: usize,
    pending: HashMap<u64, Pending>,
    order: VecDeque<u64>,
    timers: VecDeque<(Instant, u64, u32)>,
    /// The daemon-namespace sockets (IPv4 first, then IPv6), then sockets opened in
    /// sandboxes (`via`), which are removed with their sandbox (slot left empty).
    pool: Vec<Option<(UdpSocket, u64)>>,
    n4: usize,
    n_home: usize,
    /// (sandbox, IPv4?) → its socket in `pool`.
    via_socks: HashMap<(Arc<str>, bool), usize>,
    /// The daemon's namespace, where the loop thread returns after opening a socket in
    /// a sandbox.
    home: crate::netns::Netns,
    by_id: HashMap<(usize, u16), u64>,
    tcp: HashMap<u64, UpTcp>,
    next_id: u64,
    rng: Rng,
    stats: Arc<Counters>,
}

impl Forwarder {
    /// Opens the UDP pool in the calling thread's namespace and registers it. IPv6 sockets
    /// are skipped when the namespace has no IPv6 (IPv6 upstreams then fail over at once).
    pub(crate) fn new(ep: &Epoll, tokens: &mut Tokens, timeout: Duration, max_inflight: usize, stats: Arc<Counters>) -> io::Result<Forwarder> {
        let mut pool = Vec::new();
        for _ in 0..POOL_SIZE {
            pool.push(UdpSocket::bind("0.0.0.0:0")?);
        }
        let n4 = pool.len();
        for _ in 0..POOL_SIZE {
            match UdpSocket::bind("[::]:0") {
                Ok(s) => pool.push(s),
                Err(e) => {
                    tracing::debug!(error = %e, "dns: no IPv6 upstream sockets");
                    break;
                }
            }
        }
        let mut socks = Vec::with_capacity(pool.len());
        for (i, s) in pool.into_iter().enumerate() {
            s.set_nonblocking(true)?;
            set_recverr(&s, i < n4)?;
            let token = tokens.next(Kind::UpstreamUdp);
            ep.add(s.as_raw_fd(), token, IN)?;
            socks.push(Some((s, token)));
        }
        let n_home = socks.len();
        Ok(Forwarder {
            timeout,
            max_inflight: max_inflight.max(1),
            pending: HashMap::new(),
            order: VecDeque::new(),
            timers: VecDeque::new(),
            pool: socks,
            n4,
            n_home,
            via_socks: HashMap::new(),
            home: crate::netns::Netns::current()?,
            by_id: HashMap::new(),
            tcp: HashMap::new(),
            next_id: 0,
            rng: Rng::new(),
            stats,
        })
    }

    /// Queries in flight.
    pub(crate) fn inflight(&self) -> usize {
        self.pending.len()
    }

    /// When [`Forwarder::expire`] should run next.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.front().map(|t| t.0)
    }

    /// Starts forwarding `query` (the client's bytes) to `upstreams`; over TCP from the start
    /// if `tcp`. Finished queries (including evicted ones) are pushed to `done`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &mut self,
        ep: &Epoll,
        tokens: &mut Tokens,
        now: Instant,
        query: Vec<u8>,
        question: Question,
        max_udp: usize,
        tcp: bool,
        client: ClientRef,
        upstreams: Arc<[SocketAddr]>,
        via: Option<Via>,
        done: &mut Vec<Done>,
    ) {
        while self.pending.len() >= self.max_inflight {
            let Some(old) = self.order.pop_front() else { break };
            if self.pending.contains_key(&old) {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                self.fail(ep, old, done);
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        let p = Pending { via, client, query, question, max_udp, upstreams, next: 0, tcp, attempt: Attempt::None, seq: 0 };
        self.pending.insert(id, p);
        while self.order.front().is_some_and(|f| !self.pending.contains_key(f)) {
            self.order.pop_front();
        }
        if self.order.len() > 4 * self.max_inflight {
            let pending = &self.pending;
            self.order.retain(|i| pending.contains_key(i));
        }
        self.order.push_back(id);
        self.attempt(ep, tokens, now, id, done);
    }

    /// Drops the current attempt of `id` and starts the next one, or fails the query.
    fn attempt(&mut self, ep: &Epoll, tokens: &mut Tokens, now: Instant, id: u64, done: &mut Vec<Done>) {
        let Some(p) = self.pending.get_mut(&id) else { return };
        let old = std::mem::replace(&mut p.attempt, Attempt::None);
        self.drop_attempt(ep, old);
        loop {
            let Some(p) = self.pending.get_mut(&id) else { return };
            let Some(&server) = p.upstreams.get(p.next) else { break };
            p.next += 1;
            let started = if p.tcp { self.start_tcp(ep, tokens, id, server) } else { self.start_udp(ep, tokens, id, server) };
            match started {
                Ok(a) => {
                    let Some(p) = self.pending.get_mut(&id) else { return };
                    p.attempt = a;
                    p.seq += 1;
                    self.timers.push_back((now + self.timeout, id, p.seq));
                    return;
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%server, error = %e, "dns: upstream send failed");
                }
            }
        }
        self.fail(ep, id, done);
    }

    fn start_udp(&mut self, ep: &Epoll, tokens: &mut Tokens, id: u64, server: SocketAddr) -> io::Result<Attempt> {
        let range = if server.is_ipv4() { 0..self.n4 } else { self.n4..self.n_home };
        if range.is_empty() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no socket for this address family"));
        }
        let sock = range.start + self.rng.u16() as usize % range.len();
        if server.ip().is_loopback() {
            if let Some(via) = self.pending.get(&id).and_then(|p| p.via.clone()).filter(|v| v.own_loopback) {
                let sock = self.via_sock(ep, tokens, &via, server.is_ipv4())?;
                return self.send_udp(sock, id, server);
            }
        }
        match self.send_udp(sock, id, server) {
            Err(e) if unroutable(&e) => {
                // No route from the daemon's namespace: from the asking sandbox's.
                let Some(via) = self.pending.get(&id).and_then(|p| p.via.clone()) else { return Err(e) };
                let sock = self.via_sock(ep, tokens, &via, server.is_ipv4())?;
                self.send_udp(sock, id, server)
            }
            r => r,
        }
    }

    fn send_udp(&mut self, sock: usize, id: u64, server: SocketAddr) -> io::Result<Attempt> {
        let qid = (0..16).map(|_| self.rng.u16()).find(|q| !self.by_id.contains_key(&(sock, *q)));
        let qid = qid.ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "no free query id"))?;
        let p = &self.pending[&id];
        let mut pkt = p.query.clone();
        pkt[..2].copy_from_slice(&qid.to_be_bytes());
        let s = self.pool.get(sock).and_then(|s| s.as_ref()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.0.send_to(&pkt, server)?;
        self.by_id.insert((sock, qid), id);
        Ok(Attempt::Udp { sock, id: qid, server })
    }

    /// The UDP socket opened in sandbox `via` for one address family (made on first use).
    fn via_sock(&mut self, ep: &Epoll, tokens: &mut Tokens, via: &Via, v4: bool) -> io::Result<usize> {
        if let Some(&i) = self.via_socks.get(&(via.name.clone(), v4)) {
            return Ok(i);
        }
        let s = in_ns(&via.ns, &self.home, || UdpSocket::bind(if v4 { "0.0.0.0:0" } else { "[::]:0" }))?;
        s.set_nonblocking(true)?;
        set_recverr(&s, v4)?;
        let token = tokens.next(Kind::UpstreamUdp);
        ep.add(s.as_raw_fd(), token, IN)?;
        let i = match self.pool.iter().skip(self.n_home).position(|x| x.is_none()) {
            Some(k) => self.n_home + k,
            None => {
                self.pool.push(None);
                self.pool.len() - 1
            }
        };
        self.pool[i] = Some((s, token));
        self.via_socks.insert((via.name.clone(), v4), i);
        tracing::debug!(sandbox = %via.name, "dns: forwarding from the sandbox's namespace (no route from the daemon's)");
        Ok(i)
    }

    /// Closes the sockets opened in sandbox `name` (it is going away).
    pub(crate) fn forget_sandbox(&mut self, ep: &Epoll, name: &str) {
        for v4 in [true, false] {
            if let Some(i) = self.via_socks.remove(&(Arc::from(name), v4)) {
                if let Some((s, _)) = self.pool[i].take() {
                    ep.delete(s.as_raw_fd());
                }
                self.by_id.retain(|(sock, _), _| *sock != i);
            }
        }
    }

    fn start_tcp(&mut self, ep: &Epoll, tokens: &mut Tokens, id: u64, server: SocketAddr) -> io::Result<Attempt> {
        let own_lo = self.pending.get(&id).and_then(|p| p.via.clone()).filter(|v| v.own_loopback && server.ip().is_loopback());
        let stream = match own_lo {
            Some(via) => in_ns(&via.ns, &self.home, || nb_connect(server)),
            None => nb_connect(server),
        };
        let stream = match stream {
            Err(e) if unroutable(&e) => match self.pending.get(&id).and_then(|p| p.via.clone()) {
                Some(via) => in_ns(&via.ns, &self.home, || nb_connect(server))?,
                None => return Err(e),
            },
            r => r?,
        };
        let token = tokens.next(Kind::UpstreamTcp);
        ep.add(stream.as_raw_fd(), token, OUT)?;
        let q = &self.pending[&id].query;
        let mut out = Vec::with_capacity(q.len() + 2);
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(q);
        self.tcp.insert(token, UpTcp { stream, pending: id, out, written: 0, inbuf: Vec::new(), connected: false });
        Ok(Attempt::Tcp { token })
    }

    fn drop_attempt(&mut self, ep: &Epoll, a: Attempt) {
        match a {
            Attempt::None => {}
            Attempt::Udp { sock, id, .. } => {
                self.by_id.remove(&(sock, id));
            }
            Attempt::Tcp { token } => {
                if let Some(c) = self.tcp.remove(&token) {
                    ep.delete(c.stream.as_raw_fd());
                }
            }
        }
    }

    /// Ends `id` with SERVFAIL.
    fn fail(&mut self, ep: &Epoll, id: u64, done: &mut Vec<Done>) {
        if let Some(p) = self.pending.remove(&id) {
            self.drop_attempt(ep, p.attempt);
            done.push(Done { client: p.client, bytes: servfail(&p.query) });
        }
    }

    /// Ends `id` with the upstream's answer `msg`.
    fn finish(&mut self, ep: &Epoll, id: u64, mut msg: Vec<u8>, done: &mut Vec<Done>) {
        let Some(p) = self.pending.remove(&id) else { return };
        self.drop_attempt(ep, p.attempt);
        msg[..2].copy_from_slice(&p.query[..2]);
        if matches!(p.client, ClientRef::Udp { .. }) && msg.len() > p.max_udp {
            match wire::truncated(&msg) {
                Some(t) => msg = t,
                None => {
                    done.push(Done { client: p.client, bytes: servfail(&p.query) });
                    return;
                }
            }
        }
        done.push(Done { client: p.client, bytes: msg });
    }

    /// Handles an event on one of the forwarder's tokens.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_event(&mut self, ep: &Epoll, tokens: &mut Tokens, now: Instant, token: u64, events: u32, buf: &mut [u8], done: &mut Vec<Done>) {
        if let Some(idx) = self.pool.iter().position(|x| x.as_ref().is_some_and(|(_, t)| *t == token)) {
            // ICMP errors first (an upstream that refuses or cannot be reached): the
            // query they name moves on to the next server now. Draining the queue also
            // clears the socket's pending error, which would otherwise fail every read.
            let errors = if events & libc::EPOLLERR as u32 != 0 { READ_BATCH } else { 0 };
            for _ in 0..errors {
                let Some((sock, _)) = self.pool[idx].as_ref() else { break };
                let Some((n, to)) = recv_error(sock, buf) else { break };
                self.on_udp_error(ep, tokens, now, idx, &buf[..n], to, done);
            }
            for _ in 0..READ_BATCH {
                let Some((sock, _)) = self.pool[idx].as_ref() else { break };
                match sock.recv_from(buf) {
                    Ok((n, src)) => self.on_udp_answer(ep, tokens, now, idx, &buf[..n], src, done),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "dns: upstream recv");
                        break;
                    }
                }
            }
            return;
        }
        let Some(c) = self.tcp.get_mut(&token) else { return };
        let id = c.pending;
        match tcp_progress(ep, token, c, events, buf) {
            Ok(None) => {}
            Ok(Some(msg)) => {
                let ok = self.pending.get(&id).is_some_and(|p| msg[..2] == p.query[..2] && answers(&msg, &p.question));
                if ok {
                    self.finish(ep, id, msg, done);
                } else {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.attempt(ep, tokens, now, id, done);
                }
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "dns: upstream tcp");
                self.attempt(ep, tokens, now, id, done);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_udp_answer(&mut self, ep: &Epoll, tokens: &mut Tokens, now: Instant, sock: usize, msg: &[u8], src: SocketAddr, done: &mut Vec<Done>) {
        let Some(qid) = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return };
        let Some(&id) = self.by_id.get(&(sock, qid)) else {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(p) = self.pending.get_mut(&id) else { return };
        let from_server = matches!(p.attempt, Attempt::Udp { server, .. } if same_addr(server, src));
        if !from_server || !answers(msg, &p.question) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if msg[2] & (flag::TC >> 8) as u8 != 0 {
            // Truncated: ask the same server again over TCP.
            p.tcp = true;
            p.next -= 1;
            self.attempt(ep, tokens, now, id, done);
            return;
        }
        self.finish(ep, id, msg.to_vec(), done);
    }

    /// An ICMP error for the query `sent` (its bytes as they went out) to `to`: if it is
    /// a live attempt, that server is given up and the next one asked at once.
    #[allow(clippy::too_many_arguments)]
    fn on_udp_error(&mut self, ep: &Epoll, tokens: &mut Tokens, now: Instant, sock: usize, sent: &[u8], to: SocketAddr, done: &mut Vec<Done>) {
        let Some(qid) = sent.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return };
        let Some(&id) = self.by_id.get(&(sock, qid)) else { return };
        let live = self.pending.get(&id).is_some_and(|p| matches!(p.attempt, Attempt::Udp { server, .. } if same_addr(server, to)));
        if live {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(server = %to, "dns: upstream unreachable (ICMP error); next server");
            self.attempt(ep, tokens, now, id, done);
        }
    }

    /// Moves to the next server for every attempt whose time is up.
    pub(crate) fn expire(&mut self, ep: &Epoll, tokens: &mut Tokens, now: Instant, done: &mut Vec<Done>) {
        while let Some(&(t, id, seq)) = self.timers.front() {
            if t > now {
                break;
            }
            self.timers.pop_front();
            if self.pending.get(&id).is_some_and(|p| p.seq == seq) {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.attempt(ep, tokens, now, id, done);
            }
        }
    }
}

/// True if `msg` is a response (QR) to `question`: same question, or no question at all
/// with a non-zero rcode (some servers send FORMERR/NOTIMP bare).
fn answers(msg: &[u8], question: &Question) -> bool {
    match wire::peek_question(msg) {
        Ok((h, q)) if h.has(flag::QR) => match q {
            Some(q) => q.matches(question),
            None => h.rcode() != 0,
        },
        _ => false,
    }
}

fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip() == b.ip()
}

/// Drives one upstream TCP connection: finish connecting, write the query, read the
/// length-prefixed answer. `Ok(Some(answer))` once complete.
fn tcp_progress(ep: &Epoll, token: u64, c: &mut UpTcp, events: u32, buf: &mut [u8]) -> io::Result<Option<Vec<u8>>> {
    let err_hup = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    if !c.connected {
        if events & (OUT | err_hup) == 0 {
            return Ok(None);
        }
        if let Some(e) = c.stream.take_error()? {
            return Err(e);
        }
        c.connected = true;
    }
    if c.written < c.out.len() {
        match c.stream.write(&c.out[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if c.written < c.out.len() {
            return Ok(None);
        }
        ep.modify(c.stream.as_raw_fd(), token, IN)?;
    }
    loop {
        match c.stream.read(buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed before answering")),
            Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if c.inbuf.len() >= 2 {
            let need = 2 + u16::from_be_bytes([c.inbuf[0], c.inbuf[1]]) as usize;
            if c.inbuf.len() >= need {
                if need < 2 + wire::HEADER_LEN {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "short upstream answer"));
                }
                return Ok(Some(c.inbuf[2..need].to_vec()));
            }
        }
    }
    Ok(None)
}

/// Nameserver, search and options lines of a resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses in order (scoped IPv6 `fe80::1%eth0` keeps its scope).
    pub nameservers: Vec<SocketAddr>,
    /// Domains of the last `search` (or `domain`) line.
    pub search: Vec<String>,
    /// Words of the `options` lines.
    pub options: Vec<String>,
}

/// Reads resolv.conf text (comments with `#` or `;`; unknown lines ignored), as glibc
/// does: the last `search`/`domain` line wins, `options` lines add up.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut rc = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(a) = words.next().and_then(parse_nameserver) {
                    rc.nameservers.push(a);
                }
            }
            Some("search") | Some("domain") => rc.search = words.map(str::to_string).collect(),
            Some("options") => rc.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    rc
}

fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    let (ip, scope) = match s.split_once('%') {
        Some((ip, scope)) => (ip, Some(scope)),
        None => (s, None),
    };
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(SocketAddr::new(IpAddr::V4(v4), 53)),
        IpAddr::V6(v6) => {
            let scope_id = match scope {
                None => 0,
                Some(sc) => match sc.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => {
                        let c = std::ffi::CString::new(sc).ok()?;
                        // SAFETY: if_nametoindex reads a valid C string.
                        unsafe { libc::if_nametoindex(c.as_ptr()) }
                    }
                },
            };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(v6, 53, 0, scope_id)))
        }
    }
}

/// The default upstreams: the nameservers of `/etc/resolv.conf` as the daemon sees it, in
/// order, port 53. Loopback servers (systemd-resolved's 127.0.0.53, or 127.0.0.11 when the
/// daemon itself runs in a Docker container) are kept: upstream sockets live in the
/// daemon's namespace, where those addresses are the host's resolvers, not us. Empty if the
/// file is missing or has no nameserver: forwarded queries then get SERVFAIL (no public
/// fallback, we only ask servers the host configured).
pub fn host_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf").map(|t| parse_resolv_conf(&t).nameservers).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_parsing() {
        let rc = parse_resolv_conf(
            "# comment\nnameserver 10.255.255.53\nnameserver 127.0.0.53 # stub\n; other comment\n\
             nameserver fe80::1%7\nnameserver fd00::53\nnameserver not-an-ip\nnameserver\n\
             domain first.example\nsearch corp.example example\noptions ndots:2\noptions edns0 trust-ad\nsortlist 1.2.3.4\n",
        );
        let ns: Vec<String> = rc.nameservers.iter().map(|a| a.to_string()).collect();
        assert_eq!(ns, ["10.255.255.53:53", "127.0.0.53:53", "[fe80::1%7]:53", "[fd00::53]:53"]);
        assert_eq!(rc.search, ["corp.example", "example"]);
        assert_eq!(rc.options, ["ndots:2", "edns0", "trust-ad"]);
        assert_eq!(parse_resolv_conf(""), ResolvConf::default());
        let lo = parse_resolv_conf("nameserver fe80::1%lo\n");
        assert!(matches!(lo.nameservers[0], SocketAddr::V6(a) if a.scope_id() == 1));
    }

    #[test]
    fn answer_matching() {
        use super::super::wire::{rrtype, Message, Name};
        let q = Message::query(7, Name::from_dotted("A.example").unwrap(), rrtype::A, true);
        let question = q.questions[0].clone();
        let mut r = Message::response_to(&q);
        r.questions[0].name = Name::from_dotted("a.EXAMPLE").unwrap();
        assert!(answers(&r.encode(), &question));
        // A query is not an answer; another question is not this one.
        assert!(!answers(&q.encode(), &question));
        r.questions[0].qtype = rrtype::AAAA;
        assert!(!answers(&r.encode(), &question));
        // A bare error answer is accepted, a bare NOERROR is not.
        r.questions.clear();
        assert!(!answers(&r.encode(), &question));
        r.header.set_rcode(1);
        assert!(answers(&r.encode(), &question));
        assert!(!answers(&[1, 2, 3], &question));
    }
}
