//! The receive ring against a real veth (needs root; skipped with a message otherwise,
//! a failure under `VSWITCHD_E2E=1`): frames come out complete and in order, those too
//! big for a slot (read from the socket queue) in their place among the small ones, and
//! a full ring drops and counts instead of blocking, and a worker's full ring rolls
//! over to another worker's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::*;
use crate::encap::tests_netns::{in_netns, run, should_run, skip};

/// A namespace without IPv6 with a veth pair `rt0` ↔ `rt1` (MTU 9000), deleted on drop.
struct Ns(String);

impl Ns {
    fn new() -> Result<Ns, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("vsring-{}-{n}", std::process::id());
        run(&["netns", "add", &name])?;
        let ns = Ns(name);
        let n = ns.0.as_str();
        // No IPv6: a link coming up would send MLD/RS frames into the ring under test.
        for k in ["all", "default"] {
            run(&["netns", "exec", n, "sysctl", "-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")])?;
        }
        run(&["-n", n, "link", "add", "rt0", "type", "veth", "peer", "name", "rt1"])?;
        for d in ["rt0", "rt1"] {
            run(&["-n", n, "link", "set", d, "mtu", "9000", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run(&["netns", "del", &self.0]);
    }
}

/// A frame of `len` bytes numbered `seq` (broadcast, an experimental EtherType).
fn frame(seq: u16, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seq as u8).collect();
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f[14..16].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Sends `frames` out of `dev` with a plain packet socket.
pub(crate) fn send_all(dev: &str, frames: &[Vec<u8>]) -> std::io::Result<()> {
    // SAFETY: plain socket calls on memory we own; the fd is wrapped at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex(dev)?;
    sll.sll_halen = 6;
    for f in frames {
        // SAFETY: f and sll are valid for the call.
        let r = unsafe {
            libc::sendto(fd.as_raw_fd(), f.as_ptr() as *const libc::c_void, f.len(), 0, &sll as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_ll>() as u32)
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Everything `port` has, as frames.
fn drain(port: &mut AfPacket, pool: &mut BufPool) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let mut b = Batch::new();
        let c = port.rx_batch(pool, 1, &mut b, 32).expect("rx");
        assert_eq!((c.oversize, c.truncated, c.lost), (0, 0, 0));
        if b.is_empty() {
            return got;
        }
        for &id in b.as_slice() {
            got.push(pool.frame(id).to_vec());
            pool.release(id);
        }
    }
}

#[test]
fn rx_ring_keeps_order_across_slot_and_queue_and_counts_overflow() {
    const NAME: &str = "rx_ring_keeps_order_across_slot_and_queue_and_counts_overflow";
    if !should_run(NAME) {
        return;
    }
    let ns = match Ns::new() {
        Ok(ns) => ns,
        Err(e) => return skip(NAME, &format!("cannot create the namespace: {e}")),
    };
    let name = ns.0.clone();
    let r = in_netns(&ns.0, move || {
        // With small slots too: frames over 180 bytes (256 less the kernel's 76 bytes of
        // headers) wait in the socket queue, and runs of them are read together.
        for slot in [256, 2048] {
            let opts = AfPacketOpts { rx_ring: 64, rx_slot: slot, promisc: false, ..AfPacketOpts::default() };
            let mut port = AfPacket::open(ifindex("rt1")?, &opts)?;
            assert_eq!(port.ring.as_ref().map(|r| r.frame), Some(slot));
            let mut pool = BufPool::new(256)?;
            // Small and large frames interleaved, runs of large ones (some longer than a
            // receive batch); the large ones do not fit a slot.
            let mut sizes = vec![60usize, 1514, 4000, 60, 8000, 9014, 128, 2100, 60, 180, 181, 1972, 1973, 60];
            sizes.extend(std::iter::repeat_n(1514, 40));
            sizes.push(64);
            let frames: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| frame(i as u16, n)).collect();
            send_all("rt0", &frames)?;
            let got = drain(&mut port, &mut pool);
            assert_eq!(got.len(), frames.len(), "every frame received ({slot}-byte slots)");
            for (g, f) in got.iter().zip(&frames) {
                assert_eq!(g, f, "frame {} intact and in order ({slot}-byte slots)", u16::from_be_bytes([f[14], f[15]]));
            }
        }
        // A ring smaller than a receive batch, full of queued frames: each slot is read
        // once, in order (a run never wraps onto itself).
        {
            let opts = AfPacketOpts { rx_ring: 16, rx_slot: 256, promisc: false, ..AfPacketOpts::default() };
            let mut port = AfPacket::open(ifindex("rt1")?, &opts)?;
            assert_eq!(port.ring.as_ref().map(|r| r.slots), Some(16));
            let mut pool = BufPool::new(256)?;
            let frames: Vec<Vec<u8>> = (0..16u16).map(|i| frame(100 + i, 1000)).collect();
            send_all("rt0", &frames)?;
            assert_eq!(drain(&mut port, &mut pool), frames, "16 queued frames through 16 slots");
            let again: Vec<Vec<u8>> = (0..5u16).map(|i| frame(200 + i, if i % 2 == 0 { 1000 } else { 60 })).collect();
            send_all("rt0", &again)?;
            assert_eq!(drain(&mut port, &mut pool), again);
        }
        // Large frames while the socket's queue is full: the kernel keeps only a slot's
        // worth of them, and they count as lost (the port's rx_dropped), not oversize.
        {
            let opts = AfPacketOpts { rx_ring: 16, rx_slot: 256, rcvbuf: 4096, promisc: false, ..AfPacketOpts::default() };
            let mut port = AfPacket::open(ifindex("rt1")?, &opts)?;
            let mut pool = BufPool::new(64)?;
            let frames: Vec<Vec<u8>> = (0..8u16).map(|i| frame(400 + i, 4000)).collect();
            send_all("rt0", &frames)?;
            let (mut got, mut lost) = (Vec::new(), 0);
            loop {
                let mut b = Batch::new();
                let c = port.rx_batch(&mut pool, 1, &mut b, 32).expect("rx");
                assert_eq!(c.oversize, 0);
                lost += c.lost;
                if b.is_empty() && c.lost == 0 {
                    break;
                }
                for &id in b.as_slice() {
                    got.push(pool.frame(id).to_vec());
                    pool.release(id);
                }
            }
            assert!(lost > 0 && got.len() + lost == frames.len(), "{} received, {lost} lost", got.len());
            assert_eq!(got[..], frames[..got.len()], "the ones the queue held, in order");
        }
        let opts = AfPacketOpts { rx_ring: 64, promisc: false, ..AfPacketOpts::default() };
        let mut port = AfPacket::open(ifindex("rt1")?, &opts)?;
        let mut pool = BufPool::new(256)?;
        // More frames than slots while nobody reads: the rest are dropped and counted.
        port.kernel_drops();
        let many: Vec<Vec<u8>> = (0..200).map(|i| frame(1000 + i, 60)).collect();
        send_all("rt0", &many)?;
        let got = drain(&mut port, &mut pool);
        let drops = port.kernel_drops();
        assert_eq!(got.len(), 64, "a full ring holds its slots");
        assert_eq!(drops, 200 - 64, "the others are counted as drops");
        for (g, f) in got.iter().zip(&many) {
            assert_eq!(g, f);
        }
        // The ring goes on after an overflow.
        send_all("rt0", &[frame(7, 300)])?;
        assert_eq!(drain(&mut port, &mut pool), vec![frame(7, 300)]);
        // The interface going down leaves an error on the socket that keeps epoll
        // reporting it: one read with an empty ring clears it (no busy loop).
        let pending = |fd: i32| {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, no wait.
            unsafe { libc::poll(&mut p, 1, 0) };
            p.revents & (libc::POLLERR | libc::POLLIN) != 0
        };
        run(&["-n", &name, "link", "set", "rt1", "down"]).map_err(std::io::Error::other)?;
        assert!(pending(port.fd.as_raw_fd()), "an error is pending after link down");
        assert!(drain(&mut port, &mut pool).is_empty());
        assert!(!pending(port.fd.as_raw_fd()), "nothing pending after one read");
        // The carrier comes up asynchronously (linkwatch) on both ends: a frame sent
        // before it is dropped by the kernel, not by the port, so wait for LOWER_UP on
        // both (at most 2 s each).
        let up = || -> std::io::Result<()> {
            run(&["-n", &name, "link", "set", "rt1", "up"]).map_err(std::io::Error::other)?;
            for dev in ["rt1", "rt0"] {
                for _ in 0..200 {
                    let out = std::process::Command::new("ip").args(["-n", &name, "link", "show", dev]).output()?;
                    if String::from_utf8_lossy(&out.stdout).contains("LOWER_UP") {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Ok(())
        };
        up()?;
        send_all("rt0", &[frame(8, 60)])?;
        assert_eq!(drain(&mut port, &mut pool), vec![frame(8, 60)]);
        // Queued frames waiting when the link goes down: the pending error does not
        // cost or reorder them.
        let queued: Vec<Vec<u8>> = (0..6u16).map(|i| frame(300 + i, if i == 3 { 60 } else { 4000 })).collect();
        send_all("rt0", &queued)?;
        run(&["-n", &name, "link", "set", "rt1", "down"]).map_err(std::io::Error::other)?;
        assert_eq!(drain(&mut port, &mut pool), queued, "frames queued before the link went down");
        up()?;
        send_all("rt0", &[frame(9, 60)])?;
        assert_eq!(drain(&mut port, &mut pool), vec![frame(9, 60)]);
        Ok(())
    });
    r.expect(NAME);
}

#[test]
fn a_full_worker_ring_rolls_over_to_another_worker() {
    const NAME: &str = "a_full_worker_ring_rolls_over_to_another_worker";
    if !should_run(NAME) {
        return;
    }
    let ns = match Ns::new() {
        Ok(ns) => ns,
        Err(e) => return skip(NAME, &format!("cannot create the namespace: {e}")),
    };
    let r = in_netns(&ns.0, || {
        let opts = AfPacketOpts { rx_ring: 64, promisc: false, ..AfPacketOpts::default() };
        let mut socks = AfPacket::open_group(ifindex("rt1")?, 2, &opts)?;
        let mut pool = BufPool::new(512)?;
        // One flow (same addresses: one fanout hash), more frames than one ring holds,
        // nobody reading: without rollover one ring takes 64 and the rest are dropped.
        let flow: Vec<Vec<u8>> = (0..200).map(|i| frame(2000 + i, 60)).collect();
        send_all("rt0", &flow)?;
        let per: Vec<usize> = socks.iter_mut().map(|s| drain(s, &mut pool).len()).collect();
        // The kernel rolls over while the other ring has room above its low-water mark,
        // so that one need not fill up completely.
        assert!(per.contains(&64) && per.iter().all(|&n| n > 0), "the other worker's ring took what the first could not: {per:?}");
        // The rollovers are reported by the socket whose ring was full.
        let full = per.iter().position(|&n| n == 64).expect("a full ring");
        let rolled: Vec<u64> = socks.iter_mut().map(|s| s.steered_away()).collect();
        assert!(rolled[full] > 0 && rolled[full] as usize <= per[1 - full], "rollovers counted on the full ring's socket: {rolled:?} for {per:?}");
        assert_eq!(socks[full].steered_away(), 0, "counted once");
        Ok(())
    });
    r.expect(NAME);
}
