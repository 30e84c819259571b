//! The event loop and the public [`DnsServer`] handle.
//!
//! One thread ("vswitchd-dns") runs an epoll loop over: every sandbox's UDP socket and TCP
//! listener (bound to 127.0.0.11:53 inside the sandbox's namespace), the accepted TCP
//! client connections, the upstream sockets (in the daemon's namespace) and an eventfd
//! through which the [`DnsServer`] methods hand it commands. Which sandbox asked is known
//! from the socket a query arrived on. Nothing in the loop blocks: every socket is
//! non-blocking, every wait has a deadline, and every buffer and table is bounded.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::cmp::Reverse;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::names::NameTable;
use super::poll::{kind_of, Epoll, EventFd, Kind, Tokens, IN, OUT};
use super::resolve::{handle_query, Action};
use super::upstream::{ClientRef, Done, Forwarder};
use super::wire::{self, rcode};
use super::{Counters, DnsConfig, DnsStats};
use crate::netlink::Netlink;
use crate::netns::Netns;

/// Queries a TCP client may have in flight before we stop reading from it.
const MAX_OUTSTANDING: usize = 16;
/// Unsent answers buffered for one TCP client before it is dropped as too slow.
const MAX_TCP_OUT: usize = 1 << 20;
/// How long a [`DnsServer`] method waits for the loop to acknowledge a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

enum Cmd {
    Add { name: String, ns: Netns, own: bool, udp: UdpSocket, tcp: TcpListener, upstreams: Vec<SocketAddr>, reply: Sender<io::Result<()>> },
    Remove { name: String, reply: Sender<bool> },
    SetUpstreams { name: String, upstreams: Vec<SocketAddr>, reply: Sender<bool> },
    Stop,
}

/// The embedded DNS server: one event-loop thread serving every sandbox.
///
/// All methods take `&self` and may be called from any thread; sandbox changes are applied
/// by the loop before the method returns. Dropping the handle stops the loop.
pub struct DnsServer {
    tx: Sender<Cmd>,
    wake: Arc<EventFd>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Counters>,
    names: Arc<Mutex<Arc<NameTable>>>,
    listen: SocketAddr,
    daemon_ns: Netns,
    sandboxes: Mutex<BTreeMap<String, Vec<SocketAddr>>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").field("listen", &self.listen).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Starts the event-loop thread. Its upstream sockets are opened in
    /// `cfg.upstream_netns`, or else in the namespace of the calling thread (the daemon's).
    /// No sandbox is served until [`DnsServer::add_sandbox`].
    pub fn start(cfg: DnsConfig) -> io::Result<DnsServer> {
        let wake = Arc::new(EventFd::new()?);
        let (tx, rx) = mpsc::channel();
        let (init_tx, init_rx) = mpsc::channel::<io::Result<Netns>>();
        let stats = Arc::new(Counters::default());
        let names = Arc::new(Mutex::new(Arc::new(NameTable::new())));
        let upstream_ns = cfg.upstream_netns.as_ref().map(Netns::try_clone).transpose()?;
        let (wake2, stats2, names2) = (wake.clone(), stats.clone(), names.clone());
        let listen = cfg.listen;
        let thread = std::thread::Builder::new().name("vswitchd-dns".into()).spawn(move || {
            if let Some(ns) = upstream_ns {
                // SAFETY: setns on a valid fd; affects only this (our own) thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let _ = init_tx.send(Err(io::Error::last_os_error()));
                    return;
                }
            }
            match Loop::new(&cfg, wake2, rx, names2, stats2).and_then(|l| Ok((l, Netns::current()?))) {
                Ok((l, ns)) => {
                    let _ = init_tx.send(Ok(ns));
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.run())).is_err() {
                        tracing::error!("dns: event loop panicked; the embedded DNS server is down");
                    }
                }
                Err(e) => {
                    let _ = init_tx.send(Err(e));
                }
            }
        })?;
        let daemon_ns = match init_rx.recv() {
            Ok(Ok(ns)) => ns,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(io::Error::new(e.kind(), format!("starting the DNS event loop: {e}")));
            }
            Err(_) => return Err(io::Error::other("the DNS event loop died while starting")),
        };
        Ok(DnsServer {
            tx,
            wake,
            thread: Mutex::new(Some(thread)),
            stats,
            names,
            listen,
            daemon_ns,
            sandboxes: Mutex::new(BTreeMap::new()),
        })
    }

    fn send(&self, cmd: Cmd) -> io::Result<()> {
        self.tx.send(cmd).map_err(|_| io::Error::other("the DNS server is stopped"))?;
        self.wake.notify();
        Ok(())
    }

    fn wait<T>(rx: Receiver<T>) -> io::Result<T> {
        rx.recv_timeout(COMMAND_TIMEOUT).map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the DNS event loop did not answer"))
    }

    /// Starts serving the sandbox `name` whose network namespace is `ns`: opens a UDP socket
    /// and a TCP listener on the listen address (127.0.0.11:53) inside `ns`, bringing `lo`
    /// up there if needed. Queries that are not local go to `upstreams` in order (see
    /// [`crate::dns::host_upstreams`] for the usual default). If `name` is served already,
    /// its old sockets are closed first (so this also re-attaches after a daemon restart).
    /// Fails with AddrInUse if something else in `ns` holds the address, and with
    /// InvalidInput for the daemon's own namespace.
    pub fn add_sandbox(&self, name: &str, ns: &Netns, upstreams: Vec<SocketAddr>) -> io::Result<()> {
        self.add_sandbox_with(name, ns, upstreams, false)
    }

    /// [`DnsServer::add_sandbox`]; with `own_servers`, the upstreams are the sandbox's
    /// own (`--dns`), so a loopback one is asked inside the sandbox.
    pub fn add_sandbox_with(&self, name: &str, ns: &Netns, upstreams: Vec<SocketAddr>, own_servers: bool) -> io::Result<()> {
        if name.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty sandbox name"));
        }
        if ns.same_as(&self.daemon_ns)? {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("sandbox {name}: the daemon's own namespace cannot be a DNS sandbox")));
        }
        self.remove_sandbox(name)?;
        let listen = self.listen;
        let (udp, tcp) = ns
            .run_in(move || open_listeners(listen))?
            .map_err(|e| io::Error::new(e.kind(), format!("sandbox {name}: binding DNS sockets on {listen}: {e}")))?;
        let (reply, rx) = mpsc::channel();
        self.send(Cmd::Add { name: name.to_string(), ns: ns.try_clone()?, own: own_servers, udp, tcp, upstreams: upstreams.clone(), reply })?;
        Self::wait(rx)??;
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), upstreams);
        Ok(())
    }

    /// Stops serving `name`: closes its sockets and TCP connections (answers still on their
    /// way are dropped). Returns false if it was not served. Call it before deleting the
    /// namespace: open sockets keep a namespace alive.
    pub fn remove_sandbox(&self, name: &str) -> io::Result<bool> {
        let (reply, rx) = mpsc::channel();
        self.send(Cmd::Remove { name: name.to_string(), reply })?;
        let removed = Self::wait(rx)?;
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        Ok(removed)
    }

    /// Replaces the upstream servers of a served sandbox (NotFound if not served).
    pub fn set_upstreams(&self, name: &str, upstreams: Vec<SocketAddr>) -> io::Result<()> {
        let (reply, rx) = mpsc::channel();
        self.send(Cmd::SetUpstreams { name: name.to_string(), upstreams: upstreams.clone(), reply })?;
        if !Self::wait(rx)? {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("sandbox {name} is not served by the DNS server")));
        }
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), upstreams);
        Ok(())
    }

    /// The served sandboxes and their upstreams.
    pub fn sandboxes(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the whole name table; queries see it as soon as this returns.
    pub fn set_names(&self, table: NameTable) {
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// Changes the name table in place (copy-on-write if the loop holds the current one);
    /// queries see the change as soon as this returns.
    pub fn update_names<R>(&self, f: impl FnOnce(&mut NameTable) -> R) -> R {
        let mut guard = self.names.lock().unwrap_or_else(|p| p.into_inner());
        f(Arc::make_mut(&mut guard))
    }

    /// The current name table.
    pub fn names(&self) -> Arc<NameTable> {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The address the server listens on in each sandbox.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Counters since the start.
    pub fn stats(&self) -> DnsStats {
        self.stats.snapshot()
    }

    /// Stops the loop and closes every socket; later calls fail. Idempotent.
    pub fn stop(&self) {
        let _ = self.send(Cmd::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs inside the sandbox's namespace: makes sure `lo` is up, binds UDP and TCP.
fn open_listeners(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if listen.ip().is_loopback() {
        let lo = Netlink::open().and_then(|mut nl| match nl.link_by_name("lo")? {
            Some(l) if !l.up => nl.set_up(l.index, true),
            _ => Ok(()),
        });
        if let Err(e) = lo {
            tracing::warn!(error = %e, "dns: could not bring lo up in a sandbox");
        }
    }
    let udp = udp_reuseaddr(listen)?;
    let tcp = TcpListener::bind(listen)?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok((udp, tcp))
}

struct Sb {
    udp: u64,
    tcp: u64,
    upstreams: Arc<[SocketAddr]>,
    via: super::upstream::Via,
}

struct Conn {
    stream: TcpStream,
    sandbox: Arc<str>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    outstanding: usize,
    deadline: Instant,
    read_closed: bool,
    interest: u32,
}

/// What became of one query.
enum Outcome {
    Reply(Vec<u8>),
    Pending,
    Nothing,
}

struct Loop {
    ep: Epoll,
    wake: Arc<EventFd>,
    rx: Receiver<Cmd>,
    names: Arc<Mutex<Arc<NameTable>>>,
    stats: Arc<Counters>,
    ttl: u32,
    max_clients: usize,
    idle: Duration,
    tokens: Tokens,
    sandboxes: HashMap<Arc<str>, Sb>,
    udp: HashMap<u64, (UdpSocket, Arc<str>)>,
    listeners: HashMap<u64, (TcpListener, Arc<str>)>,
    conns: HashMap<u64, Conn>,
    conn_timers: BinaryHeap<Reverse<(Instant, u64)>>,
    fwd: Forwarder,
    buf: Vec<u8>,
    done: Vec<Done>,
}

impl Loop {
    fn new(cfg: &DnsConfig, wake: Arc<EventFd>, rx: Receiver<Cmd>, names: Arc<Mutex<Arc<NameTable>>>, stats: Arc<Counters>) -> io::Result<Loop> {
        let ep = Epoll::new()?;
        let mut tokens = Tokens::default();
        ep.add(wake.raw(), tokens.next(Kind::Wake), IN)?;
        let fwd = Forwarder::new(&ep, &mut tokens, cfg.upstream_timeout, cfg.max_inflight, stats.clone())?;
        Ok(Loop {
            ep,
            wake,
            rx,
            names,
            stats,
            ttl: cfg.ttl,
            max_clients: cfg.max_tcp_clients,
            idle: cfg.tcp_idle_timeout,
            tokens,
            sandboxes: HashMap::new(),
            udp: HashMap::new(),
            listeners: HashMap::new(),
            conns: HashMap::new(),
            conn_timers: BinaryHeap::new(),
            fwd,
            buf: vec![0; wire::MAX_MESSAGE + 2],
            done: Vec::new(),
        })
    }

    fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let now = Instant::now();
            let next = [self.fwd.next_deadline(), self.conn_timers.peek().map(|r| r.0 .0)].into_iter().flatten().min();
            let n = match self.ep.wait(&mut events, next.map(|d| d.saturating_duration_since(now))) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "dns: epoll_wait");
                    std::thread::sleep(Duration::from_millis(10));
                    0
                }
            };
            let names = self.names.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let now = Instant::now();
            for ev in &events[..n] {
                let (token, evs) = (ev.u64, ev.events);
                match kind_of(token) {
                    Some(Kind::Wake) => {
                        self.wake.drain();
                        if !self.commands() {
                            return;
                        }
                    }
                    Some(Kind::SandboxUdp) => self.on_udp(&names, token, now),
                    Some(Kind::SandboxTcp) => self.on_accept(token, now),
                    Some(Kind::Client) => self.on_conn(&names, token, evs, now),
                    Some(Kind::UpstreamUdp | Kind::UpstreamTcp) => {
                        self.fwd.on_event(&self.ep, &mut self.tokens, now, token, evs, &mut self.buf, &mut self.done)
                    }
                    None => {}
                }
            }
            self.fwd.expire(&self.ep, &mut self.tokens, now, &mut self.done);
            self.expire_conns(now);
            // Gauges before the answers go out (a client that got its answer sees them
            // current) and after (delivering can start new work).
            self.gauges();
            self.deliver(&names, now);
            self.gauges();
        }
    }

    fn gauges(&self) {
        self.stats.inflight.store(self.fwd.inflight() as u64, Ordering::Relaxed);
        self.stats.tcp_clients.store(self.conns.len() as u64, Ordering::Relaxed);
        self.stats.sandboxes.store(self.sandboxes.len() as u64, Ordering::Relaxed);
    }

    /// Applies queued commands; false on Stop (or when the handle is gone).
    fn commands(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
                Ok(Cmd::Add { name, ns, own, udp, tcp, upstreams, reply }) => {
                    let r = self.add(name, ns, own, udp, tcp, upstreams);
                    self.gauges();
                    let _ = reply.send(r);
                }
                Ok(Cmd::Remove { name, reply }) => {
                    let r = self.remove(&name);
                    self.gauges();
                    let _ = reply.send(r);
                }
                Ok(Cmd::SetUpstreams { name, upstreams, reply }) => {
                    let found = self.sandboxes.get_mut(name.as_str()).map(|s| s.upstreams = upstreams.into()).is_some();
                    let _ = reply.send(found);
                }
            }
        }
    }

    fn add(&mut self, name: String, ns: Netns, own: bool, udp: UdpSocket, tcp: TcpListener, upstreams: Vec<SocketAddr>) -> io::Result<()> {
        self.remove(&name);
        let name: Arc<str> = name.into();
        let (ut, tt) = (self.tokens.next(Kind::SandboxUdp), self.tokens.next(Kind::SandboxTcp));
        self.ep.add(udp.as_raw_fd(), ut, IN)?;
        if let Err(e) = self.ep.add(tcp.as_raw_fd(), tt, IN) {
            self.ep.delete(udp.as_raw_fd());
            return Err(e);
        }
        self.udp.insert(ut, (udp, name.clone()));
        self.listeners.insert(tt, (tcp, name.clone()));
        let via = super::upstream::Via { name: name.clone(), ns: Arc::new(ns), own_loopback: own };
        self.sandboxes.insert(name, Sb { udp: ut, tcp: tt, upstreams: upstreams.into(), via });
        Ok(())
    }

    fn remove(&mut self, name: &str) -> bool {
        let Some(sb) = self.sandboxes.remove(name) else { return false };
        self.fwd.forget_sandbox(&self.ep, name);
        if let Some((s, _)) = self.udp.remove(&sb.udp) {
            self.ep.delete(s.as_raw_fd());
        }
        if let Some((l, _)) = self.listeners.remove(&sb.tcp) {
            self.ep.delete(l.as_raw_fd());
        }
        let conns: Vec<u64> = self.conns.iter().filter(|(_, c)| &*c.sandbox == name).map(|(t, _)| *t).collect();
        for t in conns {
            self.close(t);
        }
        true
    }

    /// Decides on one query and counts it.
    fn query(&mut self, names: &NameTable, sb: &Arc<str>, msg: &[u8], client: ClientRef, tcp: bool, now: Instant) -> Outcome {
        let st = &self.stats;
        st.queries.fetch_add(1, Ordering::Relaxed);
        match handle_query(msg, sb, names, self.ttl, tcp) {
            Action::Drop => {
                st.malformed.fetch_add(1, Ordering::Relaxed);
                Outcome::Nothing
            }
            Action::Reply { bytes, rcode, local } => {
                let counter = if local { &st.local } else { &st.malformed };
                counter.fetch_add(1, Ordering::Relaxed);
                st.count_rcode(rcode);
                Outcome::Reply(bytes)
            }
            Action::Forward { question, max_udp } => {
                st.forwarded.fetch_add(1, Ordering::Relaxed);
                let ups = self.sandboxes.get(sb).map_or_else(|| Arc::from(Vec::new()), |s| s.upstreams.clone());
                let via = self.sandboxes.get(sb).map(|s| s.via.clone());
                self.fwd.forward(&self.ep, &mut self.tokens, now, msg.to_vec(), question, max_udp, tcp, client, ups, via, &mut self.done);
                Outcome::Pending
            }
        }
    }

    fn on_udp(&mut self, names: &NameTable, token: u64, now: Instant) {
        for _ in 0..64 {
            let Some((sock, sb)) = self.udp.get(&token) else { return };
            let sb = sb.clone();
            let (n, peer) = match sock.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            self.stats.udp_queries.fetch_add(1, Ordering::Relaxed);
            let msg = self.buf[..n].to_vec();
            if let Outcome::Reply(bytes) = self.query(names, &sb, &msg, ClientRef::Udp { sock: token, peer }, false, now) {
                self.send_udp(token, peer, &bytes);
            }
        }
    }

    fn send_udp(&self, token: u64, peer: SocketAddr, bytes: &[u8]) {
        if let Some((sock, _)) = self.udp.get(&token) {
            if sock.send_to(bytes, peer).is_err() {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_accept(&mut self, token: u64, now: Instant) {
        for _ in 0..16 {
            let Some((l, sb)) = self.listeners.get(&token) else { return };
            let sb = sb.clone();
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "dns: accept");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() || (self.conns.len() >= self.max_clients && !self.make_room(&sb)) {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let t = self.tokens.next(Kind::Client);
            if self.ep.add(stream.as_raw_fd(), t, IN).is_err() {
                continue;
            }
            let deadline = now + self.idle;
            let c = Conn { stream, sandbox: sb, inbuf: Vec::new(), out: Vec::new(), outstanding: 0, deadline, read_closed: false, interest: IN };
            self.conns.insert(t, c);
            self.conn_timers.push(Reverse((deadline, t)));
        }
    }

    fn on_conn(&mut self, names: &NameTable, token: u64, events: u32, now: Instant) {
        if events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            self.close(token);
            return;
        }
        let Some(c) = self.conns.get_mut(&token) else { return };
        if events & IN != 0 && !c.read_closed {
            for _ in 0..16 {
                if c.inbuf.len() > 2 * (wire::MAX_MESSAGE + 2) {
                    break;
                }
                match c.stream.read(&mut self.buf) {
                    Ok(0) => {
                        c.read_closed = true;
                        break;
                    }
                    // Bytes alone do not renew the idle deadline (whole messages do,
                    // in `pump`): a client trickling a message cannot hold its slot.
                    Ok(n) => c.inbuf.extend_from_slice(&self.buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.close(token);
                        return;
                    }
                }
            }
        }
        self.pump(names, token, now);
    }

    /// The connection table is full: frees a slot for a new connection of sandbox `sb`
    /// by closing a connection of the sandbox that holds the most — `sb` itself when no
    /// other holds more — so one sandbox cannot keep the others from TCP: its longest
    /// idle one, or when every one has a query in flight (a slow upstream), its oldest.
    /// False only when there is nothing to close.
    fn make_room(&mut self, sb: &str) -> bool {
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        for c in self.conns.values() {
            *counts.entry(c.sandbox.clone()).or_default() += 1;
        }
        let own = counts.get(sb).copied().unwrap_or(0);
        let most = counts.values().copied().max().unwrap_or(0);
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| if own >= most { &*c.sandbox == sb } else { counts.get(&c.sandbox) == Some(&most) })
            .min_by_key(|(_, c)| (c.outstanding > 0, c.deadline))
            .map(|(t, _)| *t);
        match victim {
            Some(t) => {
                self.close(t);
                true
            }
            None => false,
        }
    }

    /// Answers complete queries buffered on a TCP connection, flushes its output, closes
    /// it when done, and updates its epoll interest.
    fn pump(&mut self, names: &NameTable, token: u64, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(&token) else { return };
            if c.outstanding >= MAX_OUTSTANDING || c.inbuf.len() < 2 {
                break;
            }
            let len = u16::from_be_bytes([c.inbuf[0], c.inbuf[1]]) as usize;
            if len == 0 {
                self.close(token);
                return;
            }
            if c.inbuf.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = c.inbuf[2..2 + len].to_vec();
            c.inbuf.drain(..2 + len);
            c.outstanding += 1;
            c.deadline = now + self.idle;
            let sb = c.sandbox.clone();
            self.stats.tcp_queries.fetch_add(1, Ordering::Relaxed);
            match self.query(names, &sb, &msg, ClientRef::Tcp { conn: token }, true, now) {
                Outcome::Pending => {}
                Outcome::Reply(bytes) => self.queue_tcp(token, &bytes),
                Outcome::Nothing => {
                    if let Some(c) = self.conns.get_mut(&token) {
                        c.outstanding -= 1;
                    }
                }
            }
        }
        let Some(c) = self.conns.get_mut(&token) else { return };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => break,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(token);
                    return;
                }
            }
        }
        if c.out.len() > MAX_TCP_OUT || (c.read_closed && c.outstanding == 0 && c.out.is_empty()) {
            self.close(token);
            return;
        }
        let mut want = 0;
        if !c.read_closed && c.outstanding < MAX_OUTSTANDING && c.inbuf.len() <= 2 * (wire::MAX_MESSAGE + 2) {
            want |= IN;
        }
        if !c.out.is_empty() {
            want |= OUT;
        }
        if want != c.interest {
            if self.ep.modify(c.stream.as_raw_fd(), token, want).is_err() {
                self.close(token);
                return;
            }
            c.interest = want;
        }
    }

    /// Queues one answer (the query it answers is no longer outstanding).
    fn queue_tcp(&mut self, token: u64, bytes: &[u8]) {
        if let Some(c) = self.conns.get_mut(&token) {
            c.outstanding = c.outstanding.saturating_sub(1);
            c.out.extend_from_slice(&(bytes.len().min(wire::MAX_MESSAGE) as u16).to_be_bytes());
            c.out.extend_from_slice(&bytes[..bytes.len().min(wire::MAX_MESSAGE)]);
        }
    }

    fn close(&mut self, token: u64) {
        if let Some(c) = self.conns.remove(&token) {
            self.ep.delete(c.stream.as_raw_fd());
        }
    }

    fn expire_conns(&mut self, now: Instant) {
        while let Some(&Reverse((t, token))) = self.conn_timers.peek() {
            if t > now {
                break;
            }
            self.conn_timers.pop();
            let Some(c) = self.conns.get_mut(&token) else { continue };
            if c.deadline > now {
                self.conn_timers.push(Reverse((c.deadline, token)));
            } else if c.outstanding > 0 {
                // Waiting for an upstream answer is not idle.
                c.deadline = now + self.idle;
                self.conn_timers.push(Reverse((c.deadline, token)));
            } else {
                self.close(token);
            }
        }
    }

    /// Sends every finished forwarded query to its client.
    fn deliver(&mut self, names: &NameTable, now: Instant) {
        while !self.done.is_empty() {
            for d in std::mem::take(&mut self.done) {
                if d.bytes.len() >= wire::HEADER_LEN {
                    self.stats.count_rcode((d.bytes[3] & 0xf) as u16);
                }
                match d.client {
                    ClientRef::Udp { sock, peer } => self.send_udp(sock, peer, &d.bytes),
                    ClientRef::Tcp { conn } => {
                        self.queue_tcp(conn, &d.bytes);
                        self.pump(names, conn, now);
                    }
                }
            }
        }
    }
}

impl Counters {
    fn count_rcode(&self, rc: u16) {
        if rc == rcode::NXDOMAIN as u16 {
            self.nxdomain.fetch_add(1, Ordering::Relaxed);
        } else if rc == rcode::SERVFAIL as u16 {
            self.servfail.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A UDP socket bound to `addr` with SO_REUSEADDR, so a DNS server of the sandbox's own
/// that also sets it (dnsmasq, CoreDNS, BIND do) can bind the wildcard address on port
/// 53 beside us. (A wildcard bind without SO_REUSEADDR still conflicts: the cost of
/// answering at 127.0.0.11:53 without firewall rules.)
fn udp_reuseaddr(addr: std::net::SocketAddr) -> io::Result<UdpSocket> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket calls on a descriptor we own; sockaddr built from `addr`.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one as *const _ as *const libc::c_void, 4);
        let r = match addr {
            std::net::SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                    sin_zero: [0; 8],
                };
                libc::bind(fd, &sin as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32)
            }
            std::net::SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as u16,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                libc::bind(fd, &sin6 as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in6>() as u32)
            }
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}
