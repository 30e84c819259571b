//! The userland proxy (like `docker-proxy`): makes a published port reachable from the
//! daemon's own namespace on 127.0.0.1, where no packet of the dataplane can reach
//! (the switch's addresses live in the dataplane, not in the kernel). For every
//! published port it listens on 127.0.0.1:HOST_PORT and relays each connection (TCP)
//! or each client's datagrams (UDP) to the endpoint. The upstream socket is created
//! inside the sandbox's network namespace and connects to the endpoint's own address,
//! so the relay needs no route into the sandbox network.
//!
//! One thread per listener, two per TCP connection, one per UDP client flow; bounded
//! (at most `MAX_CONNS` relayed connections or flows per listener). Turned off with
//! `vswitchd --userland-proxy=false`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, warn};

use crate::netns::Netns;
use crate::publish::{PortMapping, Proto};

const MAX_CONNS: usize = 1024;
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Where a published port goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub sandbox: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The listening socket, shared with its thread.
enum Sock {
    Tcp(Arc<TcpListener>),
    Udp(Arc<UdpSocket>),
}

struct Listener {
    stop: Arc<AtomicBool>,
    sock: Sock,
}

impl Listener {
    fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept/recv loop so it sees the flag: shutdown() of a listening TCP
        // socket makes a blocked accept() fail, of a UDP socket makes recv() return.
        // (Connecting to the listener to wake it needed a new descriptor, which is just
        // what is missing when a connect fails with EMFILE: its listeners stayed open.)
        let fd = match &self.sock {
            Sock::Tcp(l) => l.as_raw_fd(),
            Sock::Udp(s) => s.as_raw_fd(),
        };
        // SAFETY: shutdown on a socket this listener owns (kept open by the Arc).
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// All proxy listeners of the daemon, keyed by (proto, host port).
#[derive(Default)]
pub struct Proxy {
    listeners: HashMap<(Proto, u16), Listener>,
}

impl Proxy {
    pub fn new() -> Proxy {
        Proxy::default()
    }

    /// Whether `add(m)` would open a listener: `m` is reachable on loopback and not
    /// relayed yet.
    pub fn wants(&self, m: &PortMapping) -> bool {
        let on_loopback = m.host_ip.is_none_or(|ip| ip.is_loopback() || ip.is_unspecified());
        on_loopback && !self.listeners.contains_key(&(m.proto, m.host_port))
    }

    /// Starts relaying `m` (if it is reachable on loopback) to `t`. Idempotent.
    pub fn add(&mut self, m: &PortMapping, t: &Target) -> io::Result<()> {
        if !self.wants(m) {
            return Ok(());
        }
        let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, m.host_port));
        let stop = Arc::new(AtomicBool::new(false));
        let sock = match m.proto {
            Proto::Tcp => {
                let l = Arc::new(TcpListener::bind(local)?);
                let (l2, t, stop2) = (l.clone(), t.clone(), stop.clone());
                std::thread::Builder::new().name(format!("vsw-proxy-tcp-{}", m.host_port)).spawn(move || tcp_accept(l2, t, stop2))?;
                Sock::Tcp(l)
            }
            Proto::Udp => {
                let s = Arc::new(UdpSocket::bind(local)?);
                let (s2, t, stop2) = (s.clone(), t.clone(), stop.clone());
                std::thread::Builder::new().name(format!("vsw-proxy-udp-{}", m.host_port)).spawn(move || udp_relay(s2, t, stop2))?;
                Sock::Udp(s)
            }
        };
        self.listeners.insert((m.proto, m.host_port), Listener { stop, sock });
        Ok(())
    }

    /// Stops relaying `m` (connections in flight finish on their own).
    pub fn remove(&mut self, m: &PortMapping) {
        if let Some(l) = self.listeners.remove(&(m.proto, m.host_port)) {
            l.close();
        }
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.close();
        }
    }
}

/// Descriptors this process may still open: (free, soft limit), from `RLIMIT_NOFILE` and
/// the entries of /proc/self/fd.
pub fn free_descriptors() -> Option<(usize, usize)> {
    // SAFETY: getrlimit writes into a local struct.
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let limit = usize::try_from(r.rlim_cur).unwrap_or(usize::MAX);
    Some((limit.saturating_sub(open), limit))
}

/// Raises this process's soft open-file limit to its hard limit (every published TCP
/// port holds a listener; systemd's default soft limit is 1024). Returns the new limit.
pub fn raise_descriptor_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on local structs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return None;
            }
        }
    }
    Some(r.rlim_cur)
}

/// Opens a socket inside the sandbox's namespace (the socket stays there).
fn in_sandbox<T: Send>(sandbox: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = Netns::open_named(sandbox)?;
    ns.run_in(f)?
}

fn tcp_accept(l: Arc<TcpListener>, t: Target, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in l.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let client = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: the connection stays queued, so accept
                // would fail again at once; wait instead of spinning.
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)) {
                    warn!(port = t.port, error = %e, "userland proxy: cannot accept");
                    std::thread::sleep(Duration::from_millis(200));
                }
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNS {
            warn!(port = t.port, "userland proxy: too many connections, refusing one");
            continue;
        }
        let (t, active) = (t.clone(), active.clone());
        active.fetch_add(1, Ordering::SeqCst);
        let _ = std::thread::Builder::new().name("vsw-proxy-conn".into()).spawn(move || {
            let dst = SocketAddr::V4(SocketAddrV4::new(t.ip, t.port));
            match in_sandbox(&t.sandbox, move || TcpStream::connect_timeout(&dst, Duration::from_secs(5))) {
                Ok(up) => splice(client, up),
                Err(e) => debug!(error = %e, "userland proxy: connect to {dst} in {}", t.sandbox),
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Copies both ways until both sides are done.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    let h = std::thread::spawn(move || copy_half(a2, b2));
    copy_half(b, a);
    let _ = h.join();
}

fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn udp_relay(s: Arc<UdpSocket>, t: Target, stop: Arc<AtomicBool>) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; 65536];
    loop {
        let r = s.recv_from(&mut buf);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((n, from)) = r else { continue };
        let up = {
            let mut f = flows.lock().unwrap_or_else(|p| p.into_inner());
            match f.get(&from) {
                Some(u) => u.clone(),
                None => {
                    if f.len() >= MAX_CONNS {
                        continue;
                    }
                    let dst = SocketAddr::V4(SocketAddrV4::new(t.ip, t.port));
                    let u = match in_sandbox(&t.sandbox, move || {
                        let u = UdpSocket::bind("0.0.0.0:0")?;
                        u.connect(dst)?;
                        Ok(u)
                    }) {
                        Ok(u) => Arc::new(u),
                        Err(e) => {
                            debug!(error = %e, "userland proxy: udp upstream in {}", t.sandbox);
                            continue;
                        }
                    };
                    let _ = u.set_read_timeout(Some(UDP_IDLE));
                    f.insert(from, u.clone());
                    // Replies back to this client until the flow is idle.
                    let (u2, s2, flows2) = (u.clone(), s.clone(), flows.clone());
                    std::thread::spawn(move || {
                        let mut b = vec![0u8; 65536];
                        while let Ok(n) = u2.recv(&mut b) {
                            let _ = s2.send_to(&b[..n], from);
                        }
                        flows2.lock().unwrap_or_else(|p| p.into_inner()).remove(&from);
                    });
                    u
                }
            }
        };
        let _ = up.send(&buf[..n]);
    }
}
