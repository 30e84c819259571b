//! The steering program against a real multi-queue TAP (needs root; skipped with a
//! message otherwise, a failure under `VSWITCHD_E2E=1`): one flow stays on one queue
//! until more than `ROLLOVER_BACKLOG` of its frames wait there unread, then takes the
//! next queue, and comes back once its queue was read empty; when both queues are
//! behind the frames go where fewer wait; many flows spread; the hash is symmetric and
//! covers IPv6 and non-IP frames.

use std::time::{Duration, Instant};

use super::*;
use crate::encap::tests_netns::{in_netns, run, should_run, skip};
use crate::port::afpacket::tests_afpacket::send_all;
use crate::buf::{Batch, BufPool};
use crate::port::tap::{TapOpts, TapQueue};
use crate::port::Port;

/// A namespace without IPv6 (no MLD/RS frames from the TAP), deleted on drop.
struct Ns(String);

impl Ns {
    fn new() -> Result<Ns, String> {
        let name = format!("vssteer-{}", std::process::id());
        run(&["netns", "add", &name])?;
        let ns = Ns(name);
        for k in ["all", "default"] {
            run(&["netns", "exec", &ns.0, "sysctl", "-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")])?;
        }
        Ok(ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run(&["netns", "del", &self.0]);
    }
}

/// An Ethernet frame of an IPv4 UDP packet.
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// An Ethernet frame of an IPv6 UDP packet.
fn udp6(sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 70];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    f[14] = 0x60;
    f[18..20].copy_from_slice(&16u16.to_be_bytes());
    f[20] = 17;
    f[21] = 64;
    f[22..38].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f[38..54].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f[54..56].copy_from_slice(&sport.to_be_bytes());
    f[56..58].copy_from_slice(&dport.to_be_bytes());
    f
}

/// A frame of an experimental EtherType.
fn other() -> Vec<u8> {
    let mut f = udp4([0; 4], [0; 4], 0, 0);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

/// Sends `frames` into the TAP `dev` (from the kernel's side, as a sandbox would).
fn send(ns: &str, dev: &'static str, frames: Vec<Vec<u8>>) -> std::io::Result<()> {
    in_netns(ns, move || send_all(dev, &frames))
}

/// Frames read from each queue by the port's own receive path (which keeps the
/// backlog counts), until `want` in all or a second passed, each queue read empty.
fn count(qs: &mut [TapQueue], pool: &mut BufPool, want: usize) -> Vec<usize> {
    let mut got = vec![0; qs.len()];
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        for (i, q) in qs.iter_mut().enumerate() {
            loop {
                let mut b = Batch::new();
                let c = q.rx_batch(pool, 1, &mut b, 32).expect("rx");
                b.release_all(pool);
                got[i] += c.received;
                if c.received == 0 {
                    break;
                }
            }
        }
        if got.iter().sum::<usize>() >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn steering_moves_a_flow_off_a_queue_that_is_behind() {
    let name = "steering_moves_a_flow_off_a_queue_that_is_behind";
    if !should_run(name) {
        return;
    }
    let ns = match Ns::new() {
        Ok(ns) => ns,
        Err(e) => return skip(name, &e),
    };
    let mut qs = in_netns(&ns.0, || TapQueue::open_queues("vst0", 2, &TapOpts { vnet: false, multi_queue: true })).expect("TAP");
    run(&["-n", &ns.0, "link", "set", "vst0", "up"]).expect("up");
    attach(&mut qs).expect("steering program loads and attaches");
    let mut pool = BufPool::new(256).expect("pool");
    let flow = |n| vec![udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 2000); n];

    // One flow, read as it comes: one queue takes all of it.
    send(&ns.0, "vst0", flow(20)).expect("send");
    let c = count(&mut qs, &mut pool, 20);
    assert!(c == [20, 0] || c == [0, 20], "one flow on one queue: {c:?}");
    let q = if c[0] == 20 { 0 } else { 1 };
    // Its reverse direction hashes the same.
    send(&ns.0, "vst0", vec![udp4([10, 0, 0, 2], [10, 0, 0, 1], 2000, 1000); 5]).expect("send");
    assert_eq!(count(&mut qs, &mut pool, 5)[q], 5, "symmetric hash");
    assert_eq!(qs[q].backlog().expect("counted").waiting(), 0, "read empty: nothing waits");

    // Nobody reads: the first ROLLOVER_BACKLOG + 1 frames stay, the rest roll over.
    send(&ns.0, "vst0", flow(10)).expect("send");
    assert_eq!(qs[q].backlog().expect("counted").waiting(), 10, "the program counts what it sends");
    send(&ns.0, "vst0", flow(190)).expect("send");
    let keep = ROLLOVER_BACKLOG as usize + 1;
    let c = count(&mut qs, &mut pool, 200);
    assert_eq!((c[q], c[1 - q]), (keep, 200 - keep), "rolled over once {ROLLOVER_BACKLOG} frames waited: {c:?}");
    assert_eq!((qs[q].steered_away(), qs[1 - q].steered_away()), (200 - keep as u64, 0), "rollovers counted on the queue left");
    // Read empty: the flow is back on its own queue.
    send(&ns.0, "vst0", flow(20)).expect("send");
    assert_eq!(count(&mut qs, &mut pool, 20)[q], 20, "back on its own queue");
    assert_eq!(qs[q].steered_away(), 0, "no rollover while read");
    // Both queues behind: frames go where fewer wait.
    send(&ns.0, "vst0", flow(400)).expect("send");
    let c = count(&mut qs, &mut pool, 400);
    assert!(c[0] + c[1] == 400 && c[0].abs_diff(c[1]) <= 2, "both behind: balanced {c:?}");

    // Many flows spread over both queues.
    let many: Vec<Vec<u8>> = (0..64).map(|i| udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000 + i, 2000)).collect();
    send(&ns.0, "vst0", many).expect("send");
    let c = count(&mut qs, &mut pool, 64);
    assert!(c[0] > 0 && c[1] > 0 && c[0] + c[1] == 64, "64 flows spread: {c:?}");
    // IPv6 and non-IP flows are hashed too, each consistently.
    for (what, f) in [("ipv6", udp6(1000, 2000)), ("other", other())] {
        send(&ns.0, "vst0", vec![f; 10]).expect("send");
        let c = count(&mut qs, &mut pool, 10);
        assert!(c == [10, 0] || c == [0, 10], "{what} on one queue: {c:?}");
    }
    let v6: Vec<Vec<u8>> = (0..64).map(|i| udp6(1000 + i, 2000)).collect();
    send(&ns.0, "vst0", v6).expect("send");
    let c = count(&mut qs, &mut pool, 64);
    assert!(c[0] > 0 && c[1] > 0, "64 IPv6 flows spread: {c:?}");

    // Closing the queues takes the program off the (persistent) TAP: queues opened
    // again without steering see the kernel's own choice, no rollover.
    qs[0].set_persist(true).expect("persist");
    drop(qs);
    let mut qs = in_netns(&ns.0, || TapQueue::open_queues("vst0", 2, &TapOpts { vnet: false, multi_queue: true })).expect("reopen");
    run(&["-n", &ns.0, "link", "set", "vst0", "up"]).expect("up");
    send(&ns.0, "vst0", flow(200)).expect("send");
    let c = count(&mut qs, &mut pool, 200);
    assert!(c == [200, 0] || c == [0, 200], "no program after the queues closed: {c:?}");
    qs[0].set_persist(false).expect("not persistent");
}
