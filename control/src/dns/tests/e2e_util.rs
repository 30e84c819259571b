//! Helpers of the end-to-end tests: namespaces, a raw DNS client inside a sandbox, and the
//! `ip netns exec` / `dig` oracles.

use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::wire::{flag, Edns, Message, Name, Record};
use crate::netns::{self, Netns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named namespace `vsdns-PID-N`, deleted on drop (even when the test fails).
pub(crate) struct Ns {
    pub name: String,
    pub ns: Netns,
}

impl Ns {
    pub(crate) fn new() -> Ns {
        let name = format!("vsdns-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let ns = netns::create_named(&name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        Ns { name, ns }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Err(e) = netns::delete_named(&self.name) {
            eprintln!("cleanup: delete netns {}: {e}", self.name);
        }
    }
}

/// Removes a sandbox's /etc/netns files on drop, and /etc/netns itself if it did not
/// exist before and is empty now.
pub(crate) struct FilesGuard {
    name: String,
    had_dir: bool,
}

impl FilesGuard {
    pub(crate) fn new(name: &str) -> FilesGuard {
        FilesGuard { name: name.to_string(), had_dir: std::path::Path::new(super::files::NETNS_ETC_DIR).exists() }
    }
}

impl Drop for FilesGuard {
    fn drop(&mut self) {
        let _ = super::files::remove_sandbox_files(&self.name);
        if !self.had_dir {
            let _ = std::fs::remove_dir(super::files::NETNS_ETC_DIR);
        }
    }
}

/// A query message.
pub(crate) fn query_bytes(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query(id, Name::from_dotted(name).unwrap(), qtype, true);
    m.edns = edns.map(|udp_size| Edns { udp_size, ..Default::default() });
    m.encode()
}

/// One length-prefixed DNS message from a stream; None on EOF or error.
pub(crate) fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).ok()?;
    Some(msg)
}

/// Writes one length-prefixed message.
pub(crate) fn write_frame(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let mut b = (msg.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(msg);
    s.write_all(&b)
}

/// A TCP connection to 127.0.0.11:53 made inside the sandbox.
pub(crate) fn connect_in(ns: &Ns) -> TcpStream {
    let s = ns.ns.run_in(|| TcpStream::connect("127.0.0.11:53")).unwrap().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A response, summarised.
#[derive(Debug)]
pub(crate) struct Answer {
    pub rcode: u16,
    pub aa: bool,
    pub tc: bool,
    pub edns: bool,
    /// A/AAAA addresses, PTR targets.
    pub answers: Vec<String>,
    pub ttls: Vec<u32>,
}

fn summarise(m: &Message) -> Answer {
    let text = |r: &Record| {
        r.ipv4()
            .map(|i| i.to_string())
            .or_else(|| r.ipv6().map(|i| i.to_string()))
            .or_else(|| r.target().map(|n| n.to_dotted()))
            .unwrap_or_else(|| format!("type {}", r.rtype))
    };
    Answer {
        rcode: m.rcode(),
        aa: m.header.has(flag::AA),
        tc: m.header.has(flag::TC),
        edns: m.edns.is_some(),
        answers: m.answers.iter().map(text).collect(),
        ttls: m.answers.iter().map(|r| r.ttl).collect(),
    }
}

/// A UDP client socket inside a sandbox, connected to 127.0.0.11:53.
pub(crate) struct Client {
    sock: UdpSocket,
    ns: Netns,
    next: std::cell::Cell<u16>,
}

impl Client {
    pub(crate) fn new(ns: &Ns) -> Client {
        let sock = ns
            .ns
            .run_in(|| {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.connect("127.0.0.11:53")?;
                Ok::<_, io::Error>(s)
            })
            .unwrap()
            .unwrap();
        Client { sock, ns: ns.ns.try_clone().unwrap(), next: std::cell::Cell::new(0x100) }
    }

    fn id(&self) -> u16 {
        let id = self.next.get().wrapping_add(1);
        self.next.set(id);
        id
    }

    /// Plain UDP query (no EDNS).
    pub(crate) fn ask(&self, name: &str, qtype: u16) -> Answer {
        self.exchange(&query_bytes(self.id(), name, qtype, None))
    }

    /// UDP query with EDNS and this UDP size.
    pub(crate) fn ask_edns(&self, name: &str, qtype: u16, size: u16) -> Answer {
        self.exchange(&query_bytes(self.id(), name, qtype, Some(size)))
    }

    /// Query over a new TCP connection.
    pub(crate) fn ask_tcp(&self, name: &str, qtype: u16) -> Answer {
        let id = self.id();
        let mut s = self.ns.run_in(|| TcpStream::connect("127.0.0.11:53")).unwrap().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write_frame(&mut s, &query_bytes(id, name, qtype, None)).unwrap();
        let m = Message::parse(&read_frame(&mut s).expect("TCP answer")).unwrap();
        assert_eq!(m.header.id, id);
        summarise(&m)
    }

    fn exchange(&self, q: &[u8]) -> Answer {
        let id = u16::from_be_bytes([q[0], q[1]]);
        self.send_raw(q);
        loop {
            let (m, _) = self.recv_raw(Duration::from_secs(5)).expect("UDP answer");
            if m.header.id == id {
                return summarise(&m);
            }
        }
    }

    /// Sends bytes as they are.
    pub(crate) fn send_raw(&self, b: &[u8]) {
        self.sock.send(b).unwrap();
    }

    /// The next datagram, parsed, and when it came.
    pub(crate) fn recv_raw(&self, timeout: Duration) -> io::Result<(Message, Instant)> {
        self.sock.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 65536];
        let n = self.sock.recv(&mut buf)?;
        let at = Instant::now();
        Message::parse(&buf[..n]).map(|m| (m, at)).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// `ip netns exec NAME args...`, stdout (panics if it cannot run).
pub(crate) fn netns_exec(name: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", name]).args(args).output().expect("run ip netns exec");
    if !out.stderr.is_empty() || !out.status.success() {
        eprintln!("ip netns exec {name} {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True if `dig` is installed; otherwise prints why the test is skipped (and panics under
/// VSWITCHD_E2E=1, where every end-to-end test must run).
pub(crate) fn have_dig() -> bool {
    if Command::new("dig").arg("-v").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("VSWITCHD_E2E").as_deref() == Ok("1") {
        panic!("VSWITCHD_E2E=1 but dig is missing (apt-get install dnsutils)");
    }
    eprintln!("skipping: dig not installed (apt-get install dnsutils)");
    false
}

/// What dig printed.
#[derive(Debug)]
pub(crate) struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    /// Last field of each answer line.
    pub answers: Vec<String>,
    pub raw: String,
}

/// `dig @127.0.0.11 args...` run inside the sandbox.
pub(crate) fn dig(sandbox: &str, args: &[&str]) -> Dig {
    let mut all = vec!["dig", "@127.0.0.11", "+time=3", "+tries=1"];
    all.extend_from_slice(args);
    let raw = netns_exec(sandbox, &all);
    let status = raw.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("").to_string();
    let flags = raw
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .map(|l| l.split(';').next().unwrap_or("").split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mut answers = Vec::new();
    let mut in_answer = false;
    for l in raw.lines() {
        if l.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
        } else if l.trim().is_empty() || l.starts_with(";;") {
            in_answer = false;
        } else if in_answer {
            answers.push(l.split_whitespace().last().unwrap_or("").to_string());
        }
    }
    Dig { status, flags, answers, raw }
}
