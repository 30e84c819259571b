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

struct Listener {
    stop: Arc<AtomicBool>,
    local: SocketAddr,
    proto: Proto,
}

impl Listener {
    fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept/recv loop so it sees the flag.
        match self.proto {
            Proto::Tcp => {
                let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(200));
            }
            Proto::Udp => {
                if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
                    let _ = s.send_to(b"", self.local);
                }
            }
        }
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

    /// Starts relaying `m` (if it is reachable on loopback) to `t`. Idempotent.
    pub fn add(&mut self, m: &PortMapping, t: &Target) -> io::Result<()> {
        if let Some(ip) = m.host_ip {
            if !ip.is_loopback() && !ip.is_unspecified() {
                return Ok(()); // only reachable at that address, not on loopback
            }
        }
        if self.listeners.contains_key(&(m.proto, m.host_port)) {
            return Ok(());
        }
        let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, m.host_port));
        let stop = Arc::new(AtomicBool::new(false));
        match m.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(local)?;
                let (t, stop2) = (t.clone(), stop.clone());
                std::thread::Builder::new().name(format!("vsw-proxy-tcp-{}", m.host_port)).spawn(move || tcp_accept(l, t, stop2))?;
            }
            Proto::Udp => {
                let s = UdpSocket::bind(local)?;
                let (t, stop2) = (t.clone(), stop.clone());
                std::thread::Builder::new().name(format!("vsw-proxy-udp-{}", m.host_port)).spawn(move || udp_relay(s, t, stop2))?;
            }
        }
        self.listeners.insert((m.proto, m.host_port), Listener { stop, local, proto: m.proto });
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

/// Opens a socket inside the sandbox's namespace (the socket stays there).
fn in_sandbox<T: Send>(sandbox: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = Netns::open_named(sandbox)?;
    ns.run_in(f)?
}

fn tcp_accept(l: TcpListener, t: Target, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in l.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
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

fn udp_relay(s: UdpSocket, t: Target, stop: Arc<AtomicBool>) {
    let s = Arc::new(s);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf) else { continue };
        if stop.load(Ordering::SeqCst) {
            return;
        }
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
