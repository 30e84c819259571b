//! The whole worker loop with in-memory ports: forwarding, table updates without a
//! restart, port removal, several workers sharing one MAC table.

use super::*;
use crate::bridge::fdb::Fdb;
use crate::port::mem::{mem_pair, wait_until, MemPeer};
use crate::stats::StatsSnapshot;
use crate::tables::{NetworkEntry, PortEntry, Tables};
use crate::wire::MacAddr;

const T: Duration = Duration::from_secs(2);

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x08;
    f
}

fn tables(fdb: &Arc<Fdb>, ports: &[PortId]) -> Tables {
    let mut t = Tables::default();
    for &p in ports {
        t.set_port(PortEntry { id: p, net: 1, name: format!("p{p}"), offload: true, tunnel: false, tunnel_l3: false, dhcp: false });
    }
    t.set_network(NetworkEntry { id: 1, name: "n".into(), fdb: fdb.clone(), ports: ports.to_vec(), gateway: None, mtu: 1500, internal: false, icc: true, gateway6: None });
    t
}

fn setup(n: usize) -> (Arc<TablesHandle>, WorkerHandle, Vec<MemPeer>, Arc<Fdb>) {
    setup_with(n, WorkerConfig { pool_buffers: 256, ..Default::default() })
}

fn setup_with(n: usize, cfg: WorkerConfig) -> (Arc<TablesHandle>, WorkerHandle, Vec<MemPeer>, Arc<Fdb>) {
    let th = Arc::new(TablesHandle::new());
    let w = WorkerHandle::spawn(cfg, th.clone()).unwrap();
    let fdb = Arc::new(Fdb::new(1024));
    let mut peers = Vec::new();
    let ids: Vec<PortId> = (1..=n as PortId).collect();
    for &id in &ids {
        let (p, peer) = mem_pair(true);
        w.add_port(id, Box::new(p)).unwrap();
        peers.push(peer);
    }
    th.publish(tables(&fdb, &ids));
    (th, w, peers, fdb)
}

#[test]
fn forwards_floods_and_learns() {
    let (_th, w, peers, fdb) = setup(3);
    let a = [2, 0, 0, 0, 0, 0xa];
    let b = [2, 0, 0, 0, 0, 0xb];
    peers[0].send(&frame(b, a));
    assert_eq!(peers[1].recv(T).unwrap().0, frame(b, a));
    assert_eq!(peers[2].recv(T).unwrap().0, frame(b, a));
    peers[1].send(&frame(a, b));
    assert_eq!(peers[0].recv(T).unwrap().0, frame(a, b));
    assert!(peers[2].recv(Duration::from_millis(100)).is_none(), "learned: no flood");
    assert_eq!(fdb.lookup(MacAddr(a)), Some(1));
    assert_eq!(fdb.lookup(MacAddr(b)), Some(2));
    let s = w.stats();
    assert!(wait_until(T, || s.port_totals(1).tx_packets == 1));
    assert_eq!(s.port_totals(1).rx_packets, 1);
    assert_eq!(s.port_totals(2).tx_packets, 1);
    w.stop();
}

/// A worker that keeps polling after work (`--poll-spin-us`) forwards frames that arrive
/// while it spins and after it went back to sleep, and stops.
#[test]
fn spinning_after_work_forwards_and_sleeps_again() {
    let (_th, w, peers, _fdb) = setup_with(2, WorkerConfig { pool_buffers: 256, poll_spin_us: 200, ..Default::default() });
    let a = [2, 0, 0, 0, 0, 0xa];
    let b = [2, 0, 0, 0, 0, 0xb];
    for i in 0..50u64 {
        peers[0].send(&frame(b, a));
        assert_eq!(peers[1].recv(T).unwrap().0, frame(b, a));
        if i % 10 == 9 {
            // Long enough for the spin to end: the next frame must wake it from epoll.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    w.stop();
}

#[test]
fn table_update_takes_effect_without_restart() {
    let (th, w, peers, fdb) = setup(3);
    // Port 3 leaves the network: floods no longer reach it.
    th.publish(tables(&fdb, &[1, 2]));
    peers[0].send(&frame([0xff; 6], [2, 0, 0, 0, 0, 1]));
    assert!(peers[1].recv(T).is_some());
    assert!(peers[2].recv(Duration::from_millis(100)).is_none());
    // Port 3 removed from the worker: frames from it are no longer read.
    w.remove_port(3).unwrap();
    peers[2].send(&frame([0xff; 6], [2, 0, 0, 0, 0, 3]));
    assert!(peers[0].recv(Duration::from_millis(100)).is_none());
    w.stop();
}

#[test]
fn emitting_to_unknown_port_counts_port_down() {
    let (th, w, peers, fdb) = setup(2);
    // Tables know port 9, the worker does not have it.
    let mut t = tables(&fdb, &[1, 2, 9]);
    t.set_port(PortEntry { id: 9, net: 1, name: "p9".into(), offload: true, tunnel: false, tunnel_l3: false, dhcp: false });
    th.publish(t);
    peers[0].send(&frame([0xff; 6], [2, 0, 0, 0, 0, 1]));
    assert!(peers[1].recv(T).is_some());
    let stats = [w.stats().as_ref()];
    assert!(wait_until(T, || StatsSnapshot::sum(stats).drop_count(DropReason::PortDown) == 1));
    w.stop();
}

#[test]
fn two_workers_share_the_mac_table() {
    let th = Arc::new(TablesHandle::new());
    let w0 = WorkerHandle::spawn(WorkerConfig { index: 0, pool_buffers: 128, ..Default::default() }, th.clone()).unwrap();
    let w1 = WorkerHandle::spawn(WorkerConfig { index: 1, pool_buffers: 128, ..Default::default() }, th.clone()).unwrap();
    let fdb = Arc::new(Fdb::new(1024));
    // Port 1 is read by worker 0, port 2 by worker 1; each worker can send on both
    // (as with per-worker AF_PACKET sockets of one fanout group).
    let (p1a, peer1) = mem_pair(true);
    let (p2b, peer2) = mem_pair(true);
    let (p1b, peer1b) = mem_pair(true);
    let (p2a, peer2a) = mem_pair(true);
    w0.add_port(1, Box::new(p1a)).unwrap();
    w0.add_port(2, Box::new(p2a)).unwrap();
    w1.add_port(2, Box::new(p2b)).unwrap();
    w1.add_port(1, Box::new(p1b)).unwrap();
    th.publish(tables(&fdb, &[1, 2]));
    let a = [2, 0, 0, 0, 0, 0xa];
    let b = [2, 0, 0, 0, 0, 0xb];
    peer1.send(&frame([0xff; 6], a)); // learned by worker 0
    assert!(peer2a.recv(T).is_some());
    peer2.send(&frame(a, b)); // worker 1 finds a in the shared table
    assert_eq!(peer1b.recv(T).unwrap().0, frame(a, b));
    w0.stop();
    w1.stop();
}


/// A GSO super-frame with a partial checksum from an offload port reaches a port
/// without offloads as MSS-sized frames with complete checksums, and reaches an
/// offload port unchanged.
#[test]
fn software_segmentation_for_ports_without_offload() {
    use crate::offload::{csum, verify_checksums};
    use crate::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
    let th = Arc::new(TablesHandle::new());
    let w = WorkerHandle::spawn(WorkerConfig { pool_buffers: 256, ..Default::default() }, th.clone()).unwrap();
    let fdb = Arc::new(Fdb::new(64));
    let (p1, peer1) = mem_pair(true);
    let (p2, peer2) = mem_pair(false);
    let (p3, peer3) = mem_pair(true);
    w.add_port(1, Box::new(p1)).unwrap();
    w.add_port(2, Box::new(p2)).unwrap();
    w.add_port(3, Box::new(p3)).unwrap();
    let mut t = tables(&fdb, &[1, 2, 3]);
    t.set_port(PortEntry { id: 2, net: 1, name: "p2".into(), offload: false, tunnel: false, tunnel_l3: false, dhcp: false });
    th.publish(t);

    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1000, 2000, 1, 65535);
    let mut f = Vec::new();
    b.write(&mut f, &payload).unwrap();
    // Turn it into what a kernel hands us: partial checksum (pseudo-header sum in the field).
    let l4_len = (f.len() - 34) as u16;
    let pseudo = csum::fold(csum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, l4_len));
    f[34 + 16..34 + 18].copy_from_slice(&pseudo.to_be_bytes());
    let vh = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 54, gso_size: 1448, csum_start: 34, csum_offset: 16 };
    peer1.send_vnet(&f, vh);

    let (same, v3) = peer3.recv(T).unwrap();
    assert_eq!(same, f, "offload port gets the super-frame untouched");
    assert_eq!(v3, vh);
    let mut got = Vec::new();
    while let Some((seg, v)) = peer2.recv(Duration::from_millis(300)) {
        assert_eq!(v, VnetHdr::default());
        assert!(seg.len() <= 14 + 20 + 20 + 1448);
        assert_eq!(verify_checksums(&seg), Ok(true));
        got.extend_from_slice(&seg[54..]);
    }
    assert_eq!(got, payload, "segments carry the whole payload in order");
    assert!(w.stats().events(crate::stats::Event::SwGso) == 1);
    drop(peer1);
    w.stop();
}

/// Two IP packets from an IP-in-UDP tunnel (no Ethernet header) whose bytes also read as
/// Ethernet + IPv4 + TCP segments of one flow (source 8.0.69.0: its first two bytes are
/// the IPv4 EtherType): the tunnel's frames are IP packets and must never go through
/// the Ethernet GRO pass, which would merge them and rewrite bytes of the first.
fn l3_packet_that_reads_as_tcp(seq: u32) -> Vec<u8> {
    use crate::offload::csum;
    let payload = 100usize;
    let len = 14 + 20 + 20 + payload;
    let mut v = vec![0u8; len];
    // The tunnel's view: IPv4, total length `len`, from 8.0.69.0.
    v[0] = 0x45;
    v[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    v[8] = 64;
    v[9] = 6;
    // Bytes 12..14 (source address 8.0.x.x) are the "EtherType" 0x0800; the "IPv4
    // header" starts at 14 (source address byte 3).
    v[12] = 0x08;
    v[14] = 0x45;
    v[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    v[18..20].copy_from_slice(&7u16.to_be_bytes());
    v[20] = 0x40; // DF: the id may stay fixed
    v[22] = 64;
    v[23] = 6;
    v[26..30].copy_from_slice(&[10, 0, 9, 1]);
    v[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let s = csum::checksum(&v[14..34]);
    v[24..26].copy_from_slice(&s.to_be_bytes());
    v[34..36].copy_from_slice(&1000u16.to_be_bytes());
    v[36..38].copy_from_slice(&2000u16.to_be_bytes());
    v[38..42].copy_from_slice(&seq.to_be_bytes());
    v[46] = 5 << 4;
    v[47] = 0x10; // ACK
    v[48..50].copy_from_slice(&1000u16.to_be_bytes());
    for (i, b) in v[54..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let ps = csum::pseudo_v4([10, 0, 9, 1], [10, 0, 0, 2], 6, (len - 34) as u16);
    let s = !csum::fold(csum::sum16(&v[34..], ps));
    v[50..52].copy_from_slice(&s.to_be_bytes());
    v
}

#[test]
fn ip_in_udp_packets_are_not_coalesced_as_ethernet() {
    use crate::vnet::VnetHdr;
    let mut t = Tables::default();
    t.set_port(PortEntry { id: 5, net: 1, name: "udp".into(), offload: true, tunnel: true, tunnel_l3: true, dhcp: false });
    t.set_port(PortEntry { id: 6, net: 1, name: "vxlan".into(), offload: true, tunnel: true, tunnel_l3: false, dhcp: false });
    let stats = WorkerStats::new();
    let mut pool = BufPool::new(8).unwrap();
    let (a, b) = (l3_packet_that_reads_as_tcp(1), l3_packet_that_reads_as_tcp(101));
    // Read as Ethernet frames they are one flow's consecutive segments: a VXLAN port's
    // frames like these are merged.
    let mut batch = Batch::new();
    batch.push(pool.alloc_from(&a, VnetHdr::default(), 6).unwrap());
    batch.push(pool.alloc_from(&b, VnetHdr::default(), 6).unwrap());
    tunnel_gro(&t, 6, &mut pool, &mut batch, &stats);
    assert_eq!(batch.len(), 1, "the Ethernet view coalesces");
    batch.release_all(&mut pool);
    // From the IP-in-UDP port: left as they came.
    let mut batch = Batch::new();
    batch.push(pool.alloc_from(&a, VnetHdr::default(), 5).unwrap());
    batch.push(pool.alloc_from(&b, VnetHdr::default(), 5).unwrap());
    tunnel_gro(&t, 5, &mut pool, &mut batch, &stats);
    assert_eq!(batch.len(), 2);
    assert_eq!(pool.frame(batch.as_slice()[0]), &a[..]);
    assert_eq!(pool.frame(batch.as_slice()[1]), &b[..]);
    assert_eq!(pool.meta(batch.as_slice()[0]).vnet, VnetHdr::default());
    batch.release_all(&mut pool);
}
