//! In-memory pipeline benches (no syscalls): bridging a batch of 64-byte frames, routing
//! with masquerade (sandbox → outside) and with a published port (outside → sandbox) on
//! established connections, MAC lookups at 1K/64K/1M entries, and software segmentation
//! of a 64 KiB TSO frame.
//! Run: cargo bench -p vswitchd-bench

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::buf::{Batch, BufPool, PktId, PortId};
use dataplane::pipeline::{process, Ctx, Output};
use dataplane::stats::WorkerStats;
use dataplane::vnet::VnetHdr;
use dataplane::wire::MacAddr;
use vswitchd_bench::{mac, routed_tables, tables, udp64, udp_frame};

/// Counts what the pipeline emits and gives the reference back.
struct Sink(u64);
impl Output for Sink {
    #[inline]
    fn emit(&mut self, pool: &mut BufPool, port: PortId, id: PktId) {
        self.0 += port as u64;
        pool.release(id);
    }
}

fn bridge(c: &mut Criterion) {
    let mut g = c.benchmark_group("bridge");
    for batch in [32usize, 64] {
        // 4 ports; 64 stations learned on ports 2-4; frames from port 1 to them.
        let t = tables(4, 65536);
        let net = t.network(1).unwrap();
        for i in 0..64u64 {
            net.fdb.learn(mac(i), 2 + (i % 3) as PortId, 0);
        }
        let stats = WorkerStats::new();
        for p in 1..=4 {
            stats.reset_port(p);
        }
        let mut pool = BufPool::new(256).unwrap();
        let mut b = Batch::new();
        for i in 0..batch as u64 {
            let id = pool.alloc_from(&udp64(mac(i % 64), mac(1000 + i % 8)), VnetHdr::default(), 1).unwrap();
            b.push(id);
        }
        let mut sink = Sink(0);
        let mut rs = dataplane::pipeline::RouterState::default();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new("unicast_64B", batch), |bn| {
            bn.iter(|| {
                for &id in b.as_slice() {
                    pool.add_ref(id, 1);
                }
                let cx = Ctx { tables: &t, now: 1, now_ms: 1000, stats: &stats };
                process(&cx, &mut rs, &mut pool, 1, &b, &mut sink);
            })
        });
        black_box(sink.0);
    }
    g.finish();
}

/// Routed 64-byte UDP frames on established connections, 32 flows per batch:
/// `masquerade` (in on the sandbox port, out on the uplink behind its address) and
/// `published` (in on the uplink to a published port, out to the sandbox). The frames
/// are rewritten in place, so every iteration first restores them from the originals
/// (a 60-byte copy per frame, included in the time; `restore_only` measures it alone).
fn route(c: &mut Criterion) {
    use dataplane::router::neigh::{LearnFrom, NeighCache, UPLINK_EGRESS};
    use std::net::Ipv4Addr;
    let mut g = c.benchmark_group("route");
    const B: usize = 32;
    let gw_mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let up_mac = MacAddr([2, 0, 0, 0, 0, 9]);
    let sb_mac = MacAddr([2, 0, 0, 0, 0, 2]);
    let up_ip = Ipv4Addr::new(198, 51, 100, 2);
    let sb_ip = Ipv4Addr::new(10, 0, 0, 2);
    let t = routed_tables(up_mac, up_ip, sb_mac, sb_ip);
    // The uplink gateway's MAC, confirmed (Reachable) as after an answered ARP request.
    let neigh: &NeighCache = &t.router.as_ref().unwrap().neigh;
    neigh.learn(UPLINK_EGRESS, Ipv4Addr::new(198, 51, 100, 1), mac(77), 0, LearnFrom::Request);
    neigh.learn(UPLINK_EGRESS, Ipv4Addr::new(198, 51, 100, 1), mac(77), 900, LearnFrom::Reply);
    let stats = WorkerStats::new();
    for p in [1, 9] {
        stats.reset_port(p);
    }
    let out_frames: Vec<Vec<u8>> =
        (0..B as u16).map(|i| udp_frame(gw_mac, sb_mac, sb_ip, Ipv4Addr::new(203, 0, 113, 9), 40_000 + i, 53)).collect();
    let in_frames: Vec<Vec<u8>> =
        (0..B as u16).map(|i| udp_frame(up_mac, mac(77), Ipv4Addr::new(203, 0, 113, 9), up_ip, 50_000 + i, 8080)).collect();
    for (name, frames, in_port) in [("masquerade_64B", &out_frames, 1 as PortId), ("published_64B", &in_frames, 9)] {
        let mut pool = BufPool::new(256).unwrap();
        let mut b = Batch::new();
        for f in frames.iter() {
            b.push(pool.alloc_from(f, VnetHdr::default(), in_port).unwrap());
        }
        let mut sink = Sink(0);
        let mut rs = dataplane::pipeline::RouterState::default();
        let restore = |pool: &mut BufPool, b: &Batch| {
            for (&id, f) in b.as_slice().iter().zip(frames.iter()) {
                pool.add_ref(id, 1);
                pool.frame_mut(id).copy_from_slice(f);
            }
        };
        // Warm up: the first pass creates the connections.
        restore(&mut pool, &b);
        process(&Ctx { tables: &t, now: 1, now_ms: 1000, stats: &stats }, &mut rs, &mut pool, in_port, &b, &mut sink);
        let before = sink.0;
        // Passes measured (none when a filter on the command line skips this bench).
        let mut passes = 0u64;
        g.throughput(Throughput::Elements(B as u64));
        g.bench_function(BenchmarkId::new(name, B), |bn| {
            bn.iter(|| {
                passes += 1;
                restore(&mut pool, &b);
                let cx = Ctx { tables: &t, now: 1, now_ms: 1000, stats: &stats };
                process(&cx, &mut rs, &mut pool, in_port, &b, &mut sink);
            })
        });
        // Every frame went out (to the uplink, port 9, or the sandbox, port 1).
        let want = if in_port == 1 { 9 } else { 1 };
        assert_eq!(sink.0 - before, passes * want * B as u64, "{name}: frames were dropped");
        if in_port == 1 {
            g.bench_function(BenchmarkId::new("restore_only", B), |bn| {
                bn.iter(|| {
                    restore(&mut pool, &b);
                    for &id in b.as_slice() {
                        pool.release(id);
                    }
                })
            });
        }
    }
    g.finish();
}

fn fdb_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb_lookup");
    const B: usize = 32;
    for n in [1_000u64, 65_536, 1_000_000] {
        let f = dataplane::bridge::fdb::Fdb::new(n as u32);
        for i in 0..n {
            f.learn(mac(i), 1 + (i % 100) as PortId, 0);
        }
        // Random known MACs, in batches as the pipeline sees them.
        // 4096 keys (+B so a batch never wraps); indices masked, no division in the loop.
        let keys: Vec<_> = (0..4096 + B as u64).map(|i| mac((i.wrapping_mul(2_654_435_761)) % n)).collect();
        let mut out = [None; B];
        let mut k = 0usize;
        g.throughput(Throughput::Elements(B as u64));
        g.bench_function(BenchmarkId::new("batch32", n), |bn| {
            bn.iter(|| {
                let s = &keys[k..k + B];
                k = (k + B) & 4095;
                f.lookup_batch(s, &mut out);
                black_box(&out);
            })
        });
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("single", n), |bn| {
            bn.iter(|| {
                let m = keys[k];
                k = (k + 1) & 4095;
                black_box(f.lookup(m))
            })
        });
    }
    g.finish();
}

fn segmentation(c: &mut Criterion) {
    use dataplane::offload::{SegCsum, Segmenter};
    use dataplane::vnet::{F_NEEDS_CSUM, GSO_TCPV4};
    let payload = vec![0xabu8; 65000];
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 65535)
        .write(&mut f, &payload)
        .unwrap();
    let vh = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 54, gso_size: 1448, csum_start: 34, csum_offset: 16 };
    let mut dst = vec![0u8; 2048];
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("segment_64k_tcp_full_csum", |bn| {
        bn.iter(|| {
            let mut s = Segmenter::new(&f, &vh, SegCsum::Full).unwrap();
            while let Some(r) = s.next_into(&mut dst) {
                black_box(r.unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bridge, route, fdb_lookup, segmentation);
criterion_main!(benches);
