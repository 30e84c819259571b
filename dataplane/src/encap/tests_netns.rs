//! Interoperability with the Linux kernel's `vxlan` and `gretap` devices.
//!
//! Each test makes two network namespaces (`vsenc-{pid}-{n}`, deleted by a drop guard
//! even on failure) joined by a veth pair (10.99.0.1 ↔ 10.99.0.2). Namespace A gets a
//! kernel tunnel device (192.168.42.1/24 on it, remote 10.99.0.2); namespace B gets no
//! tunnel at all: this code plays the remote VTEP there through an AF_PACKET socket on
//! its veth (plus, for VXLAN, a plain UDP socket bound to 4789). The kernel pings
//! 192.168.42.2; we decapsulate its ARP requests and echo requests, answer them and
//! encapsulate the answers with our code, alternating zero and computed outer checksums
//! (the kernel drops bad ones). Then we send an ARP request of our own and wait for the
//! kernel's encapsulated reply. No traffic leaves the namespaces; the root namespace's
//! network configuration is never touched.
//!
//! Needs root and `ip`/`ping`: skipped with a message otherwise, unless `VSWITCHD_E2E=1`,
//! which turns a skip into a failure.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::offload::csum;
use crate::offload::{complete_checksum, verify_checksums};
use crate::vnet::{VnetHdr, VNET_HDR_LEN};

const UNDER_A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const UNDER_B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const VEA_MAC: [u8; 6] = [2, 0, 0, 0xaa, 0, 1];
const VEB_MAC: [u8; 6] = [2, 0, 0, 0xbb, 0, 1];
const KERNEL_MAC: [u8; 6] = [2, 0, 0, 0, 0x42, 1];
const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0x42, 2];
const KERNEL_IP: [u8; 4] = [192, 168, 42, 1];
const OUR_IP: [u8; 4] = [192, 168, 42, 2];

const PACKET_VNET_HDR: libc::c_int = 15;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn forced() -> bool {
    std::env::var("VSWITCHD_E2E").is_ok_and(|v| v == "1")
}

/// Whether to run; prints why not.
pub(crate) fn should_run(name: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !forced() {
        eprintln!("{name}: skipped: needs root for network namespaces (VSWITCHD_E2E=1 forces it)");
        return false;
    }
    true
}

/// Skips (prints) or, under `VSWITCHD_E2E=1`, fails.
pub(crate) fn skip(name: &str, why: &str) {
    assert!(!forced(), "{name}: {why}");
    eprintln!("{name}: skipped: {why}");
}

pub(crate) fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Two namespaces, deleted on drop.
struct Namespaces {
    a: String,
    b: String,
}

impl Namespaces {
    fn new() -> Result<Namespaces, String> {
        let n = NEXT.fetch_add(2, Ordering::Relaxed);
        let pid = std::process::id();
        let a = format!("vsenc-{pid}-{n}");
        let b = format!("vsenc-{pid}-{}", n + 1);
        run(&["netns", "add", &a])?;
        let ns = Namespaces { a, b };
        run(&["netns", "add", &ns.b])?;
        Ok(ns)
    }

    /// The veth underlay between the two namespaces, addressed and up.
    fn underlay(&self) -> Result<(), String> {
        let (a, b) = (self.a.as_str(), self.b.as_str());
        run(&["-n", a, "link", "add", "vea", "type", "veth", "peer", "name", "veb", "netns", b])?;
        run(&["-n", a, "link", "set", "vea", "address", &mac_str(VEA_MAC)])?;
        run(&["-n", b, "link", "set", "veb", "address", &mac_str(VEB_MAC)])?;
        run(&["-n", a, "addr", "add", "10.99.0.1/24", "dev", "vea"])?;
        run(&["-n", b, "addr", "add", "10.99.0.2/24", "dev", "veb"])?;
        for (ns, dev) in [(a, "vea"), (b, "veb"), (a, "lo"), (b, "lo")] {
            run(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// Addresses the kernel tunnel device `dev` in A and brings it up.
    fn tunnel_up(&self, dev: &str) -> Result<(), String> {
        let a = self.a.as_str();
        run(&["-n", a, "link", "set", dev, "address", &mac_str(KERNEL_MAC)])?;
        run(&["-n", a, "addr", "add", "192.168.42.1/24", "dev", dev])?;
        run(&["-n", a, "link", "set", dev, "up"])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = run(&["netns", "del", ns]);
        }
    }
}

/// A child process killed (by its own pid) if still running on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn mac_str(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets it creates stay there.
pub(crate) fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        // SAFETY: a valid namespace fd; only this thread changes namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
}

/// An AF_PACKET socket bound to `dev` in the calling thread's namespace, 100 ms timeout.
fn packet_socket(dev: &str) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket calls on memory we own; the fd is wrapped at once.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto as i32);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let name = std::ffi::CString::new(dev).map_err(io::Error::other)?;
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        if libc::bind(fd.as_raw_fd(), &sll as *const _ as *const libc::sockaddr, sl) != 0 {
            return Err(io::Error::last_os_error());
        }
        // Virtio-net headers, as the dataplane's AF_PACKET port uses them: the kernel's
        // CHECKSUM_PARTIAL state comes with every frame.
        let one: libc::c_int = 1;
        let il = std::mem::size_of::<libc::c_int>() as u32;
        if libc::setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, &one as *const _ as *const _, il) != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        let tl = std::mem::size_of::<libc::timeval>() as u32;
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const _, tl);
        Ok(fd)
    }
}

/// Receives one incoming frame (outgoing copies skipped) into `buf`, virtio-net header
/// first; returns the total length, `None` on timeout.
fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: buf and sll are valid for the lengths given.
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        let n = libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut _,
            buf.len(),
            0,
            &mut sll as *mut _ as *mut libc::sockaddr,
            &mut sl,
        );
        if n <= VNET_HDR_LEN as isize || sll.sll_pkttype == libc::PACKET_OUTGOING {
            return None;
        }
        Some(n as usize)
    }
}

/// Sends `frame`, which starts with room for a (zero) virtio-net header.
fn send_frame(fd: &OwnedFd, frame: &mut [u8]) {
    VnetHdr::default().write(frame);
    // SAFETY: frame is valid for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr() as *const _, frame.len(), 0) };
    assert_eq!(n, frame.len() as isize, "AF_PACKET send: {}", io::Error::last_os_error());
}

/// Is `inner` a TCP SYN to our fake host? Returns the TCP header offset.
fn tcp_syn(inner: &[u8]) -> Option<usize> {
    if inner.len() < 54 || inner[12..14] != [8, 0] || inner[23] != 6 || inner[30..34] != OUR_IP {
        return None;
    }
    let t = 14 + (inner[14] & 15) as usize * 4;
    (inner.len() >= t + 20 && inner[t + 13] & 0x02 != 0).then_some(t)
}

/// A TCP RST+ACK refusing the SYN `inner` (TCP header at `t`).
fn refuse(inner: &[u8], t: usize) -> Vec<u8> {
    let mut r = inner[6..12].to_vec();
    r.extend_from_slice(&OUR_MAC);
    r.extend_from_slice(&[8, 0, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    r.extend_from_slice(&OUR_IP);
    r.extend_from_slice(&inner[26..30]);
    let c = csum::checksum(&r[14..34]);
    r[24..26].copy_from_slice(&c.to_be_bytes());
    let ack = u32::from_be_bytes([inner[t + 4], inner[t + 5], inner[t + 6], inner[t + 7]]).wrapping_add(1);
    r.extend_from_slice(&inner[t + 2..t + 4]);
    r.extend_from_slice(&inner[t..t + 2]);
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&ack.to_be_bytes());
    r.extend_from_slice(&[0x50, 0x14, 0, 0, 0, 0, 0, 0]);
    let mut dst = [0u8; 4];
    dst.copy_from_slice(&inner[26..30]);
    let ps = csum::pseudo_v4(OUR_IP, dst, 6, 20);
    let c = !csum::fold(csum::sum16(&r[34..], ps));
    r[50..52].copy_from_slice(&c.to_be_bytes());
    r
}

/// The answer our fake host 192.168.42.2 gives to an inner frame, if any: an ARP reply
/// to "who has .2", an echo reply to an echo request, a RST to a SYN.
fn answer(inner: &[u8]) -> Option<Vec<u8>> {
    if let Some(t) = tcp_syn(inner) {
        return Some(refuse(inner, t));
    }
    if inner.len() >= 42 && inner[12..14] == [8, 6] && inner[21] == 1 && inner[38..42] == OUR_IP {
        let mut r = inner[..42].to_vec();
        r[0..6].copy_from_slice(&inner[6..12]);
        r[6..12].copy_from_slice(&OUR_MAC);
        r[21] = 2;
        r[22..28].copy_from_slice(&OUR_MAC);
        r[28..32].copy_from_slice(&OUR_IP);
        r[32..42].copy_from_slice(&inner[22..32]);
        return Some(r);
    }
    if inner.len() >= 42 && inner[12..14] == [8, 0] && inner[23] == 1 && inner[30..34] == OUR_IP {
        let ihl = (inner[14] & 15) as usize * 4;
        let end = 14 + u16::from_be_bytes([inner[16], inner[17]]) as usize;
        if inner[14 + ihl] != 8 || end > inner.len() {
            return None;
        }
        let mut r = inner[..end].to_vec();
        r[0..6].copy_from_slice(&inner[6..12]);
        r[6..12].copy_from_slice(&OUR_MAC);
        r[26..30].copy_from_slice(&inner[30..34]);
        r[30..34].copy_from_slice(&inner[26..30]);
        r[24..26].fill(0);
        let c = csum::checksum(&r[14..14 + ihl]);
        r[24..26].copy_from_slice(&c.to_be_bytes());
        let l4 = 14 + ihl;
        r[l4] = 0;
        r[l4 + 2..l4 + 4].fill(0);
        let c = csum::checksum(&r[l4..]);
        r[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        return Some(r);
    }
    None
}

/// Our remote VTEP in namespace B.
struct Remote {
    fd: OwnedFd,
    vtep: Vtep,
    peer: Peer,
    sent: usize,
}

impl Remote {
    /// Encapsulates `inner` with our code (alternating outer checksums), adds the outer
    /// Ethernet header and sends it to the kernel.
    fn send(&mut self, inner: &[u8]) {
        let mut b = vec![0u8; 256 + inner.len()];
        b[256..].copy_from_slice(inner);
        self.vtep.tx_csum = self.sent % 2 == 1;
        let e = encap(&mut self.vtep, &self.peer, &mut b, 256, inner.len(), &VnetHdr::default()).unwrap();
        let (off, len) = prepend_eth(&mut b, e.off, e.len, MacAddr(VEA_MAC), MacAddr(VEB_MAC)).unwrap();
        send_frame(&self.fd, &mut b[off - VNET_HDR_LEN..off + len]);
        self.sent += 1;
    }

    /// Receives and decapsulates the kernel's tunnel packets for `wait` with
    /// [`decap_frame`], answering pings; calls `seen` with every decapsulated outer
    /// frame (Ethernet onwards), the result and the inner frame's virtio header; stops
    /// early when `done` says so.
    fn serve(
        &mut self,
        wait: Duration,
        mut seen: impl FnMut(&Decapped, &[u8], &VnetHdr),
        mut done: impl FnMut() -> bool,
    ) {
        let kind = self.vtep.kind_of(self.peer.tunnel);
        let mut buf = vec![0u8; 65536 + VNET_HDR_LEN];
        let start = Instant::now();
        while start.elapsed() < wait && !done() {
            let Some(n) = recv_frame(&self.fd, &mut buf) else { continue };
            let vh = VnetHdr::read(&buf).unwrap_or_default();
            let frame = &buf[VNET_HDR_LEN..n];
            let Ok((d, ivh)) = decap_frame(&self.vtep, kind, frame, &vh) else { continue };
            seen(&d, frame, &ivh);
            if let Some(reply) = answer(&frame[d.inner_range()]) {
                self.send(&reply);
            }
        }
    }
}

/// The shared scenario: kernel pings us through its tunnel device, then we ARP it.
fn ping_and_arp(name: &str, ns: &Namespaces, peer: Peer, vtep: Vtep) {
    let fd = in_netns(&ns.b, || packet_socket("veb")).expect("AF_PACKET socket in namespace B");
    let mut remote = Remote { fd, vtep, peer, sent: 0 };
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.a, "ping", "-c", "4", "-i", "0.2", "-W", "3", "192.168.42.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ping");
    let mut child = ChildGuard(child);
    let mut decapped = 0;
    let mut outer_info = String::new();
    let mut status = None;
    remote.serve(
        Duration::from_secs(15),
        |d, frame, _| {
            let pkt = &frame[14..];
            assert_eq!(d.tunnel, peer.tunnel);
            assert_eq!((d.outer_src, d.outer_dst), (UNDER_A, UNDER_B));
            if decapped == 0 {
                outer_info = format!(
                    "kernel outer: tos {:#x} df {} ttl {} udp sport {} udp csum {:#06x}",
                    pkt[1],
                    pkt[6] & 0x40 != 0,
                    pkt[8],
                    d.src_port,
                    if pkt[9] == 17 { u16::from_be_bytes([pkt[26], pkt[27]]) } else { 0 }
                );
            }
            decapped += 1;
        },
        || {
            status = child.0.try_wait().ok().flatten();
            status.is_some()
        },
    );
    let out = child.0.wait_with_output_ref();
    // Every echo reply counts: they alternate zero and computed outer checksums.
    assert!(
        status.is_some_and(|s| s.success()) && out.contains(" 0% packet loss"),
        "{name}: kernel ping through the tunnel failed ({status:?}); {decapped} packets decapsulated, {} sent\n{out}",
        remote.sent
    );
    // Our own ARP request, encapsulated by us, answered by the kernel.
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&OUR_MAC);
    req.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&OUR_MAC);
    req.extend_from_slice(&OUR_IP);
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&KERNEL_IP);
    let got_reply = std::cell::Cell::new(false);
    for _ in 0..3 {
        remote.send(&req);
        remote.serve(
            Duration::from_secs(1),
            |d, frame, _| {
                let inner = &frame[d.inner_range()];
                if inner.len() >= 42 && inner[12..14] == [8, 6] && inner[21] == 2 && inner[22..28] == KERNEL_MAC {
                    got_reply.set(true);
                }
            },
            || got_reply.get(),
        );
        if got_reply.get() {
            break;
        }
    }
    assert!(got_reply.get(), "{name}: no ARP reply from the kernel to our encapsulated request");
    let syn = tcp_through_tunnel(name, ns, &mut remote);
    eprintln!("{name}: ok: {decapped} kernel packets decapsulated, {} of ours sent; {outer_info}; {syn}", remote.sent);
}

/// A kernel TCP SYN through the tunnel (its checksum left to offload), refused by our
/// RST. Checks the inner checksum state `decap_frame` reports and, once completed, the
/// outer checksum too. Returns a description of what was seen.
fn tcp_through_tunnel(name: &str, ns: &Namespaces, remote: &mut Remote) -> String {
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.a, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/192.168.42.2/7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bash");
    let mut child = ChildGuard(child);
    let mut strict = remote.vtep.clone();
    strict.verify_csum = true;
    let kind = strict.kind_of(remote.peer.tunnel);
    let mut seen_syn = String::new();
    remote.serve(
        Duration::from_secs(8),
        |d, frame, ivh| {
            if !seen_syn.is_empty() || tcp_syn(&frame[d.inner_range()]).is_none() {
                return;
            }
            let mut f = frame.to_vec();
            complete_checksum(&mut f[d.inner_range()], ivh).expect("inner checksum completes");
            assert_eq!(verify_checksums(&f[d.inner_range()]), Ok(true), "{name}: inner SYN checksums");
            // With the inner checksum in place the outer one (if any) must verify.
            let outer_ok = decap(&strict, kind, &f[14..]).is_ok();
            assert!(outer_ok, "{name}: outer checksum wrong after completing the inner one");
            seen_syn = format!("kernel SYN: inner NEEDS_CSUM {} (csum_start {})", ivh.needs_csum(), ivh.csum_start);
        },
        || matches!(child.0.try_wait(), Ok(Some(_))),
    );
    let out = child.0.wait_with_output_ref();
    assert!(!seen_syn.is_empty(), "{name}: no TCP SYN seen through the tunnel");
    assert!(out.contains("refused"), "{name}: our encapsulated RST did not reach bash: {out}");
    seen_syn
}

/// Collects a finished child's output for failure messages.
trait OutputRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl OutputRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        if let Ok(None) = self.try_wait() {
            let _ = self.kill();
        }
        let _ = self.wait();
        let mut s = String::new();
        if let Some(o) = self.stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

#[test]
fn kernel_vxlan_interop() {
    const NAME: &str = "kernel_vxlan_interop";
    if !should_run(NAME) {
        return;
    }
    let ns = match Namespaces::new() {
        Ok(ns) => ns,
        Err(e) => return skip(NAME, &format!("cannot create namespaces: {e}")),
    };
    ns.underlay().expect("veth underlay");
    let vx = ["-n", &ns.a, "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789"];
    let vx = [&vx[..], &["remote", "10.99.0.2", "local", "10.99.0.1", "dev", "vea"]].concat();
    if let Err(e) = run(&vx) {
        return skip(NAME, &format!("kernel vxlan unavailable: {e}"));
    }
    ns.tunnel_up("vx0").expect("vx0 up");
    // A plain UDP socket on 4789 in B: gets the same datagrams, decapsulated from the
    // socket payload (and keeps the kernel from answering port-unreachable).
    let udp = in_netns(&ns.b, || {
        let s = UdpSocket::bind("10.99.0.2:4789")?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .expect("UDP socket in namespace B");
    let peer = Peer { remote: UNDER_A, tunnel: Tunnel::Vxlan(Vni::new(42).unwrap()) };
    ping_and_arp(NAME, &ns, peer, Vtep::vxlan(UNDER_B));
    let mut buf = [0u8; 2048];
    let mut payloads = 0;
    while let Ok((n, from)) = udp.recv_from(&mut buf) {
        assert_eq!(from.ip(), UNDER_A);
        let d = vxlan::decap_payload(&buf[..n]).expect("kernel VXLAN payload decapsulates");
        assert_eq!(d.tunnel, peer.tunnel);
        payloads += 1;
    }
    assert!(payloads > 0, "the UDP socket on 4789 saw no VXLAN datagrams");
    eprintln!("{NAME}: UDP socket path: {payloads} payloads decapsulated");
}

#[test]
fn kernel_gretap_interop() {
    const NAME: &str = "kernel_gretap_interop";
    if !should_run(NAME) {
        return;
    }
    let ns = match Namespaces::new() {
        Ok(ns) => ns,
        Err(e) => return skip(NAME, &format!("cannot create namespaces: {e}")),
    };
    ns.underlay().expect("veth underlay");
    let gt = ["-n", &ns.a, "link", "add", "gt0", "type", "gretap", "local", "10.99.0.1", "remote", "10.99.0.2"];
    let gt = [&gt[..], &["key", "42", "dev", "vea"]].concat();
    if let Err(e) = run(&gt) {
        // Not forced: GRE support is a kernel module that may be absent. tcpdump's GRE
        // dissector is then the independent decoder.
        eprintln!("{NAME}: kernel gretap unavailable ({e}); checking our GRE with tcpdump instead");
        return gre_by_tcpdump(NAME, &ns);
    }
    ns.tunnel_up("gt0").expect("gt0 up");
    let peer = Peer { remote: UNDER_A, tunnel: Tunnel::Gre(Some(42)) };
    ping_and_arp(NAME, &ns, peer, Vtep::gre(UNDER_B));
}

/// Without a kernel GRE device: sends our GRE packets (with and without the checksum)
/// from B and lets tcpdump in A decode them.
fn gre_by_tcpdump(name: &str, ns: &Namespaces) {
    let dump = Command::new("ip")
        .args(["netns", "exec", &ns.a, "tcpdump", "-l", "-c", "2", "-nvvi", "vea", "ip proto 47"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(dump) = dump else {
        return skip(name, "neither kernel gretap nor tcpdump available");
    };
    let mut dump = ChildGuard(dump);
    std::thread::sleep(Duration::from_millis(1500));
    let fd = in_netns(&ns.b, || packet_socket("veb")).expect("AF_PACKET socket in namespace B");
    let peer = Peer { remote: UNDER_A, tunnel: Tunnel::Gre(Some(42)) };
    let mut remote = Remote { fd, vtep: Vtep::gre(UNDER_B), peer, sent: 0 };
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&OUR_MAC);
    req.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&OUR_MAC);
    req.extend_from_slice(&OUR_IP);
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&KERNEL_IP);
    remote.send(&req);
    remote.send(&req);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) && matches!(dump.0.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = dump.0.wait_with_output_ref();
    eprintln!("{name}: tcpdump says:\n{out}");
    assert_eq!(out.matches("GREv0").count(), 2, "{name}: tcpdump did not decode two GRE packets:\n{out}");
    assert_eq!(out.matches("key=0x2a").count(), 2, "{name}: key not seen:\n{out}");
    assert_eq!(out.matches("Request who-has 192.168.42.1 tell 192.168.42.2").count(), 2, "{name}: inner ARP:\n{out}");
    assert!(!out.contains("bad"), "{name}: tcpdump complains:\n{out}");
}
