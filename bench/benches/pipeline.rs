//! In-memory pipeline benches (no syscalls): bridging a batch of 64-byte frames, MAC
//! lookups at 1K/64K/1M entries, and software segmentation of a 64 KiB TSO frame.
//! Run: cargo bench -p vswitchd-bench

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::buf::{Batch, BufPool, PktId, PortId};
use dataplane::pipeline::{process, Ctx, Output};
use dataplane::stats::WorkerStats;
use dataplane::vnet::VnetHdr;
use vswitchd_bench::{mac, tables, udp64};

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

criterion_group!(benches, bridge, fdb_lookup, segmentation);
criterion_main!(benches);
