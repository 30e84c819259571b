//! Per-packet cost of the encrypted mesh: sealing (ChaCha20-Poly1305 + header + counter)
//! and opening (header checks, decryption, replay window) one message, for 64-byte and
//! 1400-byte payloads, on an established Noise session.
//! Run: cargo bench -p vswitchd-bench --bench mesh

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dataplane::mesh::{wire, Decapsulated, Encapsulated, Identity, MeshConfig, PayloadKind, Peer, PeerSlot, Responder};

/// Two peers with a session: `a` initiated to `b`.
fn connected() -> (Peer, Peer) {
    let now = Instant::now();
    let (ida, idb) = (Identity::from_bytes([1; 32]), Identity::from_bytes([2; 32]));
    let cfg_a = MeshConfig { allowed: vec![idb.public()], ..MeshConfig::default() };
    let cfg_b = MeshConfig { allowed: vec![ida.public()], ..MeshConfig::default() };
    let mut resp = Responder::new(&idb, &cfg_b, now);
    let slot = |n| PeerSlot::new(n).expect("slot");
    let mut pa = Peer::new(&ida, idb.public(), &cfg_a, slot(1), now);
    let (mut m, mut r) = (vec![0u8; 70_000], vec![0u8; 70_000]);
    let n = pa.initiate(&mut m, now).expect("initiate").expect("message");
    let init = resp.handle_initiation(IpAddr::V4(Ipv4Addr::LOCALHOST), &m[..n], now).expect("admitted");
    let (mut pb, rn) = Peer::from_initiation(&idb, init, &cfg_b, slot(2), &mut r, now).expect("response");
    let Ok(Decapsulated::HandshakeComplete { reply_len }) = pa.decapsulate(&r[..rn], &mut m, now) else { panic!("handshake") };
    let confirm = m[..reply_len].to_vec();
    pb.decapsulate(&confirm, &mut r, now).expect("confirmation");
    (pa, pb)
}

fn seal_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh");
    for size in [64usize, 1400] {
        let (mut pa, mut pb) = connected();
        let payload = vec![0x5au8; size];
        let mut out = vec![0u8; size + wire::TRANSPORT_OVERHEAD + 256];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| {
                let now = Instant::now();
                match pa.encapsulate(PayloadKind::Ethernet, black_box(&payload), &mut out, now) {
                    Ok(Encapsulated::Data { len }) => black_box(len),
                    other => panic!("{other:?}"),
                }
            })
        });
        // Every message opened once (a second open would be a replay): seal in the
        // untimed setup, open in the timed routine.
        g.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter_batched_ref(
                || {
                    let mut m = vec![0u8; size + wire::TRANSPORT_OVERHEAD];
                    let now = Instant::now();
                    let Ok(Encapsulated::Data { len }) = pa.encapsulate(PayloadKind::Ethernet, &payload, &mut m, now) else { panic!("seal") };
                    m.truncate(len);
                    m
                },
                |m| match pb.decapsulate_in_place(m, Instant::now()) {
                    Ok(Decapsulated::Data { len, .. }) => black_box(len),
                    other => panic!("{other:?}"),
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
