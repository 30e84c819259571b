//! End-to-end tests (root): real namespaces, a fake upstream server, real clients.
//!
//! World: sandboxes `sb1` and `sb2` (only `lo`), a "host" namespace standing in for the
//! daemon's (the upstream sockets live there: `DnsConfig::upstream_netns`), and an "ext"
//! namespace with a fake upstream DNS server at 198.51.100.2:53, joined to "host" by a veth.
//! The sandboxes have no route to the upstream at all, so every forwarded answer proves
//! the forwarding happened from the daemon's side. Nothing is sent outside these
//! namespaces; the root namespace's network configuration is never touched.
//!
//! Names: network `front`: sb1 (aliases `web`, `Alpha-Alias`; 10.1.0.2, fd00:1::2) and a
//! table-only endpoint `beta` (alias `web`; 10.1.0.3); network `back`: sb2 (alias `db`;
//! 10.2.0.2) and `beta` (10.2.0.3).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::names::DnsEndpoint;
use super::wire::{flag, rcode, rrtype, Edns, Message, Record};
use super::*;
use crate::netlink::{Netlink, VethSpec};
use crate::netns::tests::privileged;

use super::e2e_util::*;

/// The fake upstream's address (in "ext").
const UP: &str = "198.51.100.2:53";
/// Nobody listens there: the upstream's kernel answers with ICMP port unreachable.
const DEAD: &str = "198.51.100.2:54";
/// A socket that never answers listens there (see [`silent`]).
const SILENT: &str = "198.51.100.2:55";

/// A UDP socket at [`SILENT`] in "ext" that reads nothing: queries to it time out.
fn silent(w: &World) -> UdpSocket {
    let addr: SocketAddr = SILENT.parse().unwrap();
    w.ext.ns.run_in(|| UdpSocket::bind(addr).unwrap()).unwrap()
}

/// What the fake upstream saw: (lowercase name, "udp"/"tcp").
type Seen = Arc<Mutex<Vec<(String, &'static str)>>>;

/// A tiny authoritative-looking server in "ext":
/// `ext.example` A 203.0.113.7; `big.example`: TC over UDP, A 203.0.113.99 over TCP;
/// `huge.example`: TC over UDP, 100 A records over TCP; `refused.example`: REFUSED;
/// `fail.example`: SERVFAIL; `slow.example`: never answers; anything else: NXDOMAIN.
struct FakeUpstream {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    seen: Seen,
}

fn fake_answer(q: &Message, tcp: bool) -> Option<Vec<u8>> {
    let question = q.questions.first()?;
    let key = question.name.key()?;
    let mut r = Message::response_to(q);
    r.edns = q.edns.as_ref().map(|_| Edns { udp_size: 1232, ..Default::default() });
    let a = |ip: [u8; 4]| Record::a(question.name.clone(), 30, ip.into());
    let is_a = question.qtype == rrtype::A;
    match (key.as_str(), tcp) {
        ("ext.example" | "big.example" | "huge.example", _) if !is_a => {}
        ("slow.example", _) => return None,
        ("ext.example", _) => r.answers.push(a([203, 0, 113, 7])),
        ("big.example" | "huge.example", false) => r.header.set(flag::TC, true),
        ("big.example", true) => r.answers.push(a([203, 0, 113, 99])),
        ("huge.example", true) => r.answers.extend((0..100).map(|i| a([203, 0, 113, i]))),
        ("refused.example", _) => r.set_rcode(rcode::REFUSED as u16),
        ("fail.example", _) => r.set_rcode(rcode::SERVFAIL as u16),
        _ => r.set_rcode(rcode::NXDOMAIN as u16),
    }
    Some(r.encode())
}

impl FakeUpstream {
    fn start(ext: &Ns) -> FakeUpstream {
        let addr: SocketAddr = UP.parse().unwrap();
        let (udp, tcp) = ext.ns.run_in(|| (UdpSocket::bind(addr).unwrap(), TcpListener::bind(addr).unwrap())).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::default();
        let (s1, seen1) = (stop.clone(), seen.clone());
        let t1 = std::thread::spawn(move || {
            udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 4096];
            while !s1.load(Ordering::Relaxed) {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else { continue };
                let Ok(q) = Message::parse(&buf[..n]) else { continue };
                if let Some(k) = q.questions.first().and_then(|q| q.name.key()) {
                    seen1.lock().unwrap().push((k, "udp"));
                }
                if let Some(r) = fake_answer(&q, false) {
                    let _ = udp.send_to(&r, peer);
                }
            }
        });
        let (s2, seen2) = (stop.clone(), seen.clone());
        let t2 = std::thread::spawn(move || {
            tcp.set_nonblocking(true).unwrap();
            while !s2.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                while let Some(msg) = read_frame(&mut c) {
                    let Ok(q) = Message::parse(&msg) else { break };
                    if let Some(k) = q.questions.first().and_then(|q| q.name.key()) {
                        seen2.lock().unwrap().push((k, "tcp"));
                    }
                    if let Some(r) = fake_answer(&q, true) {
                        let _ = write_frame(&mut c, &r);
                    }
                }
            }
        });
        FakeUpstream { stop, threads: vec![t1, t2], seen }
    }

    fn saw(&self, name: &str, transport: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|(n, t)| n == name && *t == transport)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Everything one test needs; fields drop in order (server first, namespaces last).
struct World {
    dns: DnsServer,
    up: FakeUpstream,
    sb1: Ns,
    sb2: Ns,
    #[allow(dead_code)]
    host: Ns,
    #[allow(dead_code)]
    ext: Ns,
}

fn world(cfg: DnsConfig) -> World {
    let (sb1, sb2, host, ext) = (Ns::new(), Ns::new(), Ns::new(), Ns::new());
    let mut nl = Netlink::open_in(&host.ns).unwrap();
    nl.create_veth(&VethSpec { name: "up0", peer_name: "up1", peer_ns: Some(&ext.ns), ..Default::default() }).unwrap();
    let l = nl.link_by_name("up0").unwrap().unwrap();
    nl.add_address(l.index, "198.51.100.1".parse().unwrap(), 24).unwrap();
    nl.set_up(l.index, true).unwrap();
    let mut nle = Netlink::open_in(&ext.ns).unwrap();
    let l = nle.link_by_name("up1").unwrap().unwrap();
    nle.add_address(l.index, "198.51.100.2".parse().unwrap(), 24).unwrap();
    nle.set_up(l.index, true).unwrap();
    let up = FakeUpstream::start(&ext);

    let dns = DnsServer::start(DnsConfig { upstream_netns: Some(host.ns.try_clone().unwrap()), ..cfg }).unwrap();
    let ep = |sb: &str, aliases: &[&str], v4: &str, v6: Option<&str>| DnsEndpoint {
        sandbox: sb.into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ipv4: Some(v4.parse().unwrap()),
        ipv6: v6.map(|s| s.parse().unwrap()),
    };
    let mut t = NameTable::new();
    t.set_endpoint("front", ep(&sb1.name, &["web", "Alpha-Alias"], "10.1.0.2", Some("fd00:1::2")));
    t.set_endpoint("front", ep("beta", &["web"], "10.1.0.3", None));
    t.set_endpoint("back", ep(&sb2.name, &["db"], "10.2.0.2", None));
    t.set_endpoint("back", ep("beta", &[], "10.2.0.3", None));
    dns.set_names(t);
    let ups = vec![UP.parse().unwrap()];
    dns.add_sandbox(&sb1.name, &sb1.ns, ups.clone()).unwrap();
    dns.add_sandbox(&sb2.name, &sb2.ns, ups).unwrap();
    World { dns, up, sb1, sb2, host, ext }
}

#[test]
fn server_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<DnsServer>();
    check::<NameTable>();
}

#[test]
fn local_names_are_scoped_per_sandbox() {
    if !privileged() {
        return;
    }
    let w = world(DnsConfig::default());
    let c1 = Client::new(&w.sb1);
    let c2 = Client::new(&w.sb2);
    // Own name, alias, any case, trailing dot, NAME.NETWORK.
    for name in [w.sb1.name.as_str(), "alpha-alias", "ALPHA-ALIAS.front."] {
        let r = c1.ask(name, rrtype::A);
        assert_eq!((r.rcode, r.aa), (0, true), "{name}");
        assert_eq!(r.answers, ["10.1.0.2"], "{name}");
        assert_eq!(r.ttls, [600]);
    }
    assert_eq!(c1.ask(&w.sb1.name, rrtype::AAAA).answers, ["fd00:1::2"]);
    // Shared alias: both endpoints, rotating.
    let a = c1.ask("web", rrtype::A).answers;
    let b = c1.ask("Web.Front", rrtype::A).answers;
    assert_eq!(a.len(), 2);
    assert_eq!(b, [a[1].clone(), a[0].clone()]);
    // beta resolves to its address on the asker's network.
    assert_eq!(c1.ask("beta", rrtype::A).answers, ["10.1.0.3"]);
    assert_eq!(c2.ask("beta", rrtype::A).answers, ["10.2.0.3"]);
    assert_eq!(c2.ask("db", rrtype::A).answers, ["10.2.0.2"]);
    // PTR.
    assert_eq!(c1.ask("3.0.1.10.in-addr.arpa", rrtype::PTR).answers, ["beta.front."]);
    assert_eq!(c2.ask("2.0.2.10.in-addr.arpa", rrtype::PTR).answers, [format!("{}.back.", w.sb2.name)]);
    // Isolation: names of a network sb1 is not on are not local: forwarded, NXDOMAIN.
    for name in ["db", w.sb2.name.as_str(), "beta.back"] {
        let r = c1.ask(name, rrtype::A);
        assert_eq!((r.rcode, r.aa), (rcode::NXDOMAIN as u16, false), "{name}");
        assert!(r.answers.is_empty());
        assert!(w.up.saw(&name.to_ascii_lowercase(), "udp"), "{name} did not go upstream");
    }
    assert_eq!(c2.ask("web", rrtype::A).rcode, rcode::NXDOMAIN as u16);
    assert!(!w.up.saw("alpha-alias", "udp") && !w.up.saw("beta", "udp"), "local names leaked upstream");
    // Same over TCP.
    let r = c1.ask_tcp("web.front", rrtype::A);
    assert_eq!(r.answers.len(), 2);
    assert_eq!(c1.ask_tcp("db", rrtype::A).rcode, rcode::NXDOMAIN as u16);
    // Names change as soon as the table does.
    w.dns.update_names(|t| {
        t.remove_endpoint("front", "beta");
    });
    assert_eq!(c1.ask("web", rrtype::A).answers, ["10.1.0.2"]);
    let s = w.dns.stats();
    assert!(s.local >= 10 && s.forwarded >= 4 && s.nxdomain >= 4 && s.tcp_queries >= 2, "{s:?}");
    assert_eq!(s.sandboxes, 2);
}

#[test]
fn forwarding_udp_tcp_and_truncation() {
    if !privileged() {
        return;
    }
    let w = world(DnsConfig::default());
    // The sandbox itself cannot reach the upstream: forwarding happens on the daemon's side.
    let probe = w.sb1.ns.run_in(|| UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
    let e = probe.send_to(b"x", UP.parse::<SocketAddr>().unwrap()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");

    let c = Client::new(&w.sb1);
    let r = c.ask("ext.example", rrtype::A);
    assert_eq!((r.rcode, r.answers.clone()), (0, vec!["203.0.113.7".to_string()]));
    assert!(!r.aa);
    assert!(w.up.saw("ext.example", "udp") && !w.up.saw("ext.example", "tcp"));
    let r = c.ask_tcp("Ext.Example", rrtype::A);
    assert_eq!(r.answers, ["203.0.113.7"]);
    assert!(w.up.saw("ext.example", "tcp"));
    // Truncated over UDP upstream: retried over TCP, the answer fits the client's EDNS size.
    let r = c.ask_edns("big.example", rrtype::A, 1232);
    assert_eq!((r.rcode, r.tc, r.answers.clone()), (0, false, vec!["203.0.113.99".to_string()]));
    assert!(w.up.saw("big.example", "udp") && w.up.saw("big.example", "tcp"));
    // Too big for a plain UDP client: TC, so the client retries over TCP and gets it all.
    let r = c.ask("huge.example", rrtype::A);
    assert!(r.tc && r.answers.is_empty(), "{r:?}");
    let r = c.ask_tcp("huge.example", rrtype::A);
    assert_eq!((r.tc, r.answers.len()), (false, 100));
    // Error codes pass through as they come.
    assert_eq!(c.ask("nx.example", rrtype::A).rcode, rcode::NXDOMAIN as u16);
    assert_eq!(c.ask("refused.example", rrtype::A).rcode, rcode::REFUSED as u16);
    assert_eq!(c.ask("fail.example", rrtype::A).rcode, rcode::SERVFAIL as u16);
    assert_eq!(c.ask_tcp("nx.example", rrtype::A).rcode, rcode::NXDOMAIN as u16);
    // EDNS goes through to the upstream and back.
    let r = c.ask_edns("ext.example", rrtype::A, 1232);
    assert!(r.edns);
    let s = w.dns.stats();
    assert!(s.forwarded >= 9 && s.nxdomain >= 2 && s.servfail >= 1 && s.errors == 0, "{s:?}");
}

#[test]
fn dead_upstream_failover_and_eviction() {
    if !privileged() {
        return;
    }
    let cfg = DnsConfig { upstream_timeout: Duration::from_millis(1000), max_inflight: 4, ..Default::default() };
    let w = world(cfg);
    let _silent = silent(&w);
    let c = Client::new(&w.sb2);
    w.dns.set_upstreams(&w.sb2.name, vec![SILENT.parse().unwrap()]).unwrap();
    let t0 = Instant::now();
    assert_eq!(c.ask("ext.example", rrtype::A).rcode, rcode::SERVFAIL as u16);
    assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());
    // Next server after the timeout.
    w.dns.set_upstreams(&w.sb2.name, vec![SILENT.parse().unwrap(), UP.parse().unwrap()]).unwrap();
    let t0 = Instant::now();
    let r = c.ask("ext.example", rrtype::A);
    assert_eq!(r.answers, ["203.0.113.7"]);
    assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());
    // A server that refuses (ICMP port unreachable) is given up at once, not after the
    // timeout: alone, SERVFAIL; first of two, the second answers.
    w.dns.set_upstreams(&w.sb2.name, vec![DEAD.parse().unwrap()]).unwrap();
    let t0 = Instant::now();
    assert_eq!(c.ask("ext.example", rrtype::A).rcode, rcode::SERVFAIL as u16);
    assert!(t0.elapsed() < Duration::from_millis(700), "refused upstream given up late: {:?}", t0.elapsed());
    w.dns.set_upstreams(&w.sb2.name, vec![DEAD.parse().unwrap(), UP.parse().unwrap()]).unwrap();
    let t0 = Instant::now();
    assert_eq!(c.ask("ext.example", rrtype::A).answers, ["203.0.113.7"]);
    assert!(t0.elapsed() < Duration::from_millis(700), "{:?}", t0.elapsed());
    // No upstream at all: SERVFAIL at once.
    w.dns.set_upstreams(&w.sb2.name, vec![]).unwrap();
    let t0 = Instant::now();
    assert_eq!(c.ask("ext.example", rrtype::A).rcode, rcode::SERVFAIL as u16);
    assert!(t0.elapsed() < Duration::from_millis(700), "{:?}", t0.elapsed());
    // Local names still work without upstreams.
    assert_eq!(c.ask("db", rrtype::A).answers, ["10.2.0.2"]);
    assert!(w.dns.set_upstreams("nope", vec![]).unwrap_err().kind() == io::ErrorKind::NotFound);

    // Cap of 4 in flight: 6 queries that never get an answer; the 2 oldest are evicted.
    let c1 = Client::new(&w.sb1);
    let t0 = Instant::now();
    for id in 1..=6u16 {
        c1.send_raw(&query_bytes(id, "slow.example", rrtype::A, None));
    }
    let mut got = BTreeMap::new();
    while got.len() < 6 {
        let (m, at) = c1.recv_raw(Duration::from_secs(3)).expect("all six answered");
        got.insert(m.header.id, (m.rcode(), at.duration_since(t0)));
    }
    for id in [1, 2] {
        assert_eq!(got[&id].0, rcode::SERVFAIL as u16);
        assert!(got[&id].1 < Duration::from_millis(700), "evicted late: {:?}", got[&id].1);
    }
    for id in 3..=6 {
        assert_eq!(got[&id].0, rcode::SERVFAIL as u16);
        assert!(got[&id].1 >= Duration::from_millis(900), "timed out early: {:?}", got[&id].1);
    }
    let s = w.dns.stats();
    assert!(s.evicted == 2 && s.timeouts >= 6 && s.inflight == 0, "{s:?}");
}

#[test]
fn tcp_pipelining_and_garbage() {
    if !privileged() {
        return;
    }
    let w = world(DnsConfig::default());
    let mut s = connect_in(&w.sb1);
    let mut batch = Vec::new();
    for (id, name) in [(1u16, "ext.example"), (2, "web"), (3, "nx.example")] {
        let q = query_bytes(id, name, rrtype::A, None);
        batch.extend((q.len() as u16).to_be_bytes());
        batch.extend(q);
    }
    s.write_all(&batch).unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..3 {
        let m = Message::parse(&read_frame(&mut s).expect("answer")).unwrap();
        seen.insert(m.header.id, m.rcode());
    }
    assert_eq!(seen, BTreeMap::from([(1, 0), (2, 0), (3, rcode::NXDOMAIN as u16)]));
    // A half-closed connection still gets its answer, then is closed.
    write_frame(&mut s, &query_bytes(9, "ext.example", rrtype::A, None)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(Message::parse(&read_frame(&mut s).unwrap()).unwrap().header.id, 9);
    assert!(read_frame(&mut s).is_none());
    // Garbage over UDP and TCP: FORMERR or nothing, and the server keeps serving.
    let c = Client::new(&w.sb1);
    c.send_raw(&[0xde, 0xad, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f]);
    let (m, _) = c.recv_raw(Duration::from_secs(2)).unwrap();
    assert_eq!((m.header.id, m.rcode()), (0xdead, rcode::FORMERR as u16));
    c.send_raw(&[1, 2, 3]);
    let mut g = connect_in(&w.sb1);
    g.write_all(&[0, 0]).unwrap();
    assert!(read_frame(&mut g).is_none(), "zero-length message closes the connection");
    assert_eq!(c.ask("web", rrtype::A).answers.len(), 2);
    assert!(w.dns.stats().malformed >= 2);
}

/// The server closed `s`: EOF or a reset within 3 s (a timeout is not a close).
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn tcp_slots_are_shared_between_sandboxes_and_tricklers_time_out() {
    if !privileged() {
        return;
    }
    let w = world(DnsConfig { max_tcp_clients: 4, tcp_idle_timeout: Duration::from_secs(3), ..DnsConfig::default() });
    let ask = |s: &mut TcpStream, id: u16, name: &str| -> bool {
        write_frame(s, &query_bytes(id, name, rrtype::A, None)).is_ok() && read_frame(s).is_some_and(|m| Message::parse(&m).unwrap().header.id == id)
    };
    // sb1 holds every slot (each connection answered once: accepted and registered).
    let mut held: Vec<TcpStream> = (0..4u16)
        .map(|i| {
            let mut s = connect_in(&w.sb1);
            assert!(ask(&mut s, i, "web"), "connection {i} of sb1 answered");
            std::thread::sleep(Duration::from_millis(20));
            s
        })
        .collect();
    // sb2 still gets an answer over TCP: the sandbox holding the most gives up its
    // longest idle connection.
    let mut s2 = connect_in(&w.sb2);
    assert!(ask(&mut s2, 10, "db"), "sb2 answered over TCP while sb1 held every slot");
    assert!(closed(&mut held[0]), "sb1's longest idle connection closed");
    // A new connection of the sandbox holding the most replaces its own longest idle one.
    let mut extra = connect_in(&w.sb1);
    assert!(ask(&mut extra, 11, "web"), "sb1's new connection answered");
    assert!(closed(&mut held[1]), "sb1's next idle connection closed");
    assert!(ask(&mut held[2], 12, "web") && ask(&mut s2, 13, "db"), "the others still served");
    // A client that trickles a message byte by byte is idle: closed after about 3 s.
    let mut t = connect_in(&w.sb2);
    t.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let start = Instant::now();
    let mut closed = None;
    let mut byte = [0u8; 1];
    for b in [0u8, 200].into_iter().chain(std::iter::repeat(b'x')).take(30) {
        let _ = t.write_all(&[b]);
        match t.read(&mut byte) {
            Ok(0) => {
                closed = Some(start.elapsed());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
            Ok(_) => panic!("an answer to half a message"),
            Err(_) => {
                closed = Some(start.elapsed());
                break;
            }
        }
    }
    let closed = closed.expect("a trickling client is closed as idle");
    assert!(closed >= Duration::from_millis(2500) && closed < Duration::from_secs(8), "closed after {closed:?}");
}

#[test]
fn sandbox_lifecycle() {
    if !privileged() {
        return;
    }
    let w = world(DnsConfig::default());
    // The daemon's own namespace is refused.
    let host = Netns::open_named(&w.host.name).unwrap();
    assert_eq!(w.dns.add_sandbox("h", &host, vec![]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    // Adding again replaces the sockets.
    w.dns.add_sandbox(&w.sb1.name, &w.sb1.ns, vec![UP.parse().unwrap()]).unwrap();
    let c = Client::new(&w.sb1);
    assert_eq!(c.ask("web", rrtype::A).answers.len(), 2);
    assert_eq!(w.dns.sandboxes().len(), 2);
    // Removed: nothing listens any more.
    assert!(w.dns.remove_sandbox(&w.sb1.name).unwrap());
    assert!(!w.dns.remove_sandbox(&w.sb1.name).unwrap());
    c.send_raw(&query_bytes(5, "web", rrtype::A, None));
    let e = c.recv_raw(Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    let e = w.sb1.ns.run_in(|| TcpStream::connect("127.0.0.11:53")).unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(w.dns.sandboxes().len(), 1);
    // A sandbox whose lo is down: brought up, then served.
    let sb3 = Ns::new();
    let mut nl = Netlink::open_in(&sb3.ns).unwrap();
    let lo = nl.link_by_name("lo").unwrap().unwrap();
    nl.set_up(lo.index, false).unwrap();
    w.dns.add_sandbox(&sb3.name, &sb3.ns, vec![UP.parse().unwrap()]).unwrap();
    assert!(nl.link_by_name("lo").unwrap().unwrap().up);
    // No address was added for 127.0.0.11: lo's 127.0.0.1/8 covers it.
    let mut addrs: Vec<String> = nl.addresses(lo.index).unwrap().iter().map(|(a, p)| format!("{a}/{p}")).collect();
    addrs.sort();
    assert_eq!(addrs, ["127.0.0.1/8", "::1/128"]);
    assert_eq!(Client::new(&sb3).ask("ext.example", rrtype::A).answers, ["203.0.113.7"]);
    // Something else holds 127.0.0.11:53: AddrInUse.
    let sb4 = Ns::new();
    let _squatter = sb4.ns.run_in(|| UdpSocket::bind("127.0.0.11:53").unwrap()).unwrap();
    let e = w.dns.add_sandbox(&sb4.name, &sb4.ns, vec![]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    // Stopped: calls fail, sockets are closed.
    w.dns.stop();
    assert!(w.dns.add_sandbox(&sb4.name, &sb4.ns, vec![]).is_err());
    let c3 = Client::new(&sb3);
    c3.send_raw(&query_bytes(5, "ext.example", rrtype::A, None));
    assert!(c3.recv_raw(Duration::from_secs(1)).is_err());
}

#[test]
fn files_seen_through_ip_netns_exec() {
    if !privileged() {
        return;
    }
    let w = world(DnsConfig::default());
    let files = SandboxFiles {
        hostname: "alpha-host".into(),
        search: vec!["example".into()],
        options: vec!["timeout:2".into()],
        hosts: vec![HostEntry::own("10.1.0.2".parse().unwrap(), "alpha-host", &w.sb1.name, &["web".into()])],
        extra_hosts: vec![],
    };
    let _guard = FilesGuard::new(&w.sb1.name);
    write_sandbox_files(&w.sb1.name, &files).unwrap();
    assert_eq!(netns_exec(&w.sb1.name, &["cat", "/etc/resolv.conf"]), files.resolv_conf());
    assert_eq!(netns_exec(&w.sb1.name, &["cat", "/etc/hostname"]), "alpha-host\n");
    // glibc in the sandbox: the hosts file for its own names, our server for the rest.
    let h = netns_exec(&w.sb1.name, &["getent", "hosts", "alpha-host"]);
    assert!(h.starts_with("10.1.0.2 "), "{h}");
    // (`getent hosts`, not `ahosts`: getaddrinfo's AI_ADDRCONFIG finds no non-loopback
    // address in this test sandbox and would not even ask.)
    let h = netns_exec(&w.sb1.name, &["getent", "hosts", "beta"]);
    assert!(h.starts_with("10.1.0.3 "), "{h}");
    let h = netns_exec(&w.sb1.name, &["getent", "hosts", "ext"]);
    assert!(h.starts_with("203.0.113.7 "), "search domain applied: {h}");
    let h = netns_exec(&w.sb1.name, &["getent", "hosts", "db"]);
    assert!(h.is_empty(), "scoped-out name resolved: {h}");
    remove_sandbox_files(&w.sb1.name).unwrap();
    assert!(!std::path::Path::new(files::NETNS_ETC_DIR).join(&w.sb1.name).exists());
}

#[test]
fn dig_oracle() {
    if !privileged() || !have_dig() {
        return;
    }
    let w = world(DnsConfig::default());
    let n = &w.sb1.name;
    let d = dig(n, &["web", "A"]);
    assert_eq!((d.status.as_str(), d.answers.len()), ("NOERROR", 2), "{d:?}");
    assert!(d.flags.contains(&"aa".to_string()) && d.flags.contains(&"ra".to_string()), "{d:?}");
    assert!(d.raw.contains("\t600\tIN\tA\t10.1.0."), "{}", d.raw);
    assert_eq!(dig(n, &["alpha-alias.FRONT", "AAAA"]).answers, ["fd00:1::2"]);
    assert_eq!(dig(n, &["-x", "10.1.0.3"]).answers, ["beta.front."]);
    assert_eq!(dig(n, &["db"]).status, "NXDOMAIN");
    assert_eq!(dig(n, &["ext.example"]).answers, ["203.0.113.7"]);
    assert_eq!(dig(n, &["+tcp", "ext.example"]).answers, ["203.0.113.7"]);
    assert_eq!(dig(n, &["+tcp", "web.front"]).answers.len(), 2);
    assert_eq!(dig(n, &["big.example"]).answers, ["203.0.113.99"]);
    let d = dig(n, &["huge.example"]);
    assert_eq!(d.answers.len(), 100, "{d:?}");
    assert!(d.raw.contains("Truncated, retrying in TCP mode"), "{}", d.raw);
    assert_eq!(dig(n, &["nx.example"]).status, "NXDOMAIN");
    assert_eq!(dig(n, &["refused.example"]).status, "REFUSED");
    assert_eq!(dig(n, &["+noedns", "ext.example"]).answers, ["203.0.113.7"]);
    w.dns.set_upstreams(&w.sb2.name, vec![DEAD.parse().unwrap()]).unwrap();
    assert_eq!(dig(&w.sb2.name, &["ext.example"]).status, "SERVFAIL");
}

