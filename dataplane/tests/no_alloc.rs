//! The packet path allocates nothing: a counting global allocator watches the
//! pipeline (bridging, flooding, gateway replies) and the software offload path
//! (segmentation, checksum completion) after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dataplane::bridge::fdb::Fdb;
use dataplane::buf::{Batch, BufPool, PktId, PortId};
use dataplane::pipeline::egress::emit_without_offload;
use dataplane::pipeline::{process, Ctx, Output};
use dataplane::stats::WorkerStats;
use dataplane::tables::{GatewayV4, NetworkEntry, PortEntry, Tables};
use dataplane::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use dataplane::wire::MacAddr;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Armed on the test's own thread only: the test harness's main thread allocates now
    // and then while it waits (4 allocations in about 40% of runs), which is not the
    // packet path. Const-initialised, no destructor: reading it never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn armed() -> bool {
    ARMED.try_with(|a| a.get()).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if armed() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if armed() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Releases everything it is given, like a port that sent it; the software-offload
/// path is exercised for port 4.
struct Sink {
    stats: Arc<WorkerStats>,
    emitted: usize,
}

impl Output for Sink {
    fn emit(&mut self, pool: &mut BufPool, port: PortId, id: PktId) {
        if port == 4 {
            let stats = self.stats.clone();
            let mut n = 0;
            emit_without_offload(pool, id, &stats, |pool, seg| {
                n += 1;
                pool.release(seg)
            });
            self.emitted += n;
        } else {
            self.emitted += 1;
            pool.release(id);
        }
    }
}

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x08;
    f
}

#[test]
fn forwarding_allocates_nothing() {
    let gw = MacAddr([2, 0, 0, 0, 0, 1]);
    let mut t = Tables::default();
    for p in 1..=4 {
        t.set_port(PortEntry { id: p, net: 1, name: format!("p{p}"), offload: p != 4, tunnel: false, tunnel_l3: false, dhcp: false });
    }
    t.set_network(NetworkEntry {
        id: 1,
        name: "n".into(),
        fdb: Arc::new(Fdb::new(1024)),
        ports: vec![1, 2, 3, 4],
        gateway: Some(GatewayV4 { ip: [10, 0, 0, 1].into(), prefix_len: 24, mac: gw }),
        mtu: 1500,
        internal: false,
        icc: true,
            gateway6: None,
    });
    let stats = Arc::new(WorkerStats::new());
    for p in 1..=4 {
        stats.reset_port(p);
    }
    let mut pool = BufPool::new(512).unwrap();

    // Frames: unknown unicast (flood, incl. the no-offload port), learned unicast,
    // broadcast ARP for the gateway (reply + flood), ICMP echo to the gateway, a TCP
    // super-frame with a partial checksum flooded to the no-offload port (segmented).
    let mut arp = frame([0xff; 6], [2, 0x42, 10, 0, 0, 2]);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&[2, 0x42, 10, 0, 0, 2]);
    arp[28..32].copy_from_slice(&[10, 0, 0, 2]);
    arp[38..42].copy_from_slice(&[10, 0, 0, 1]);
    let mut echo = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0x42, 10, 0, 0, 2], gw.0)
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut echo, &[0u8; 56])
        .unwrap();
    let mut tso = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0x42, 10, 0, 0, 9], [2, 0x42, 10, 0, 0, 2])
        .ipv4([10, 0, 0, 2], [10, 0, 0, 9], 64)
        .tcp(1, 2, 3, 1000)
        .write(&mut tso, &vec![7u8; 20_000])
        .unwrap();
    let vh = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 54, gso_size: 1448, csum_start: 34, csum_offset: 16 };
    let inputs: Vec<(Vec<u8>, VnetHdr)> = vec![
        (frame([2, 0x42, 10, 0, 0, 3], [2, 0x42, 10, 0, 0, 2]), VnetHdr::default()),
        (frame([2, 0x42, 10, 0, 0, 2], [2, 0x42, 10, 0, 0, 3]), VnetHdr::default()),
        (arp, VnetHdr::default()),
        (echo, VnetHdr::default()),
        (tso, vh),
    ];

    let mut sink = Sink { stats: stats.clone(), emitted: 0 };
    let mut rs = dataplane::pipeline::RouterState::default();
    let mut batch = Batch::new();
    let mut round = |pool: &mut BufPool, sink: &mut Sink| {
        for (i, (f, v)) in inputs.iter().enumerate() {
            batch.clear();
            let in_port = if i == 1 { 3 } else { 1 };
            // Copy in the way a port's rx does (into pool buffers, no heap).
            for _ in 0..8 {
                let id = pool.alloc().unwrap();
                let off = pool.meta(id).off as usize;
                pool.raw_mut(id)[off..off + f.len()].copy_from_slice(f);
                let m = pool.meta_mut(id);
                m.len = f.len() as u32;
                m.vnet = *v;
                m.in_port = in_port;
                batch.push(id);
            }
            let cx = Ctx { tables: &t, now: 1, now_ms: 1000, stats: &stats };
            process(&cx, &mut rs, pool, in_port, &batch, sink);
        }
    };
    round(&mut pool, &mut sink); // warm-up: learns MACs
    ALLOCS.store(0, Ordering::SeqCst);
    ARMED.with(|a| a.set(true));
    for _ in 0..100 {
        round(&mut pool, &mut sink);
    }
    ARMED.with(|a| a.set(false));
    assert!(sink.emitted > 100 * 5 * 8, "traffic went through ({})", sink.emitted);
    assert_eq!(pool.available(), 512, "every buffer returned");
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "heap allocations on the packet path");
}
