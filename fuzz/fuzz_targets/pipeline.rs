//! The whole per-worker path: `pipeline::process` over a realistic world (a network with
//! gateway, IPv6 and a DHCP port, a second network, an uplink with masquerade and
//! published ports, a VXLAN, a GRE and an IP-in-UDP tunnel port), fed batches of frames
//! whose bytes and virtio-net header come from the fuzzer, on every kind of ingress
//! port. Egress mirrors the worker's `TxSide`: software GSO/checksum for ports without
//! vnet headers, and the tunnel ports' encapsulation (segmenting UDP encap for GSO).
//! Tunnel ingress goes through decapsulation, demux and the worker's GRO pass first.
//!
//! Checked besides "no panic": every buffer comes back to the pool.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::Arc;

use dataplane::bridge::fdb::Fdb;
use dataplane::buf::{Batch, BufPool, PktId, PortId, BUF_SIZE, HEADROOM};
use dataplane::encap::{self, Peer, Tunnel, Vni, Vtep};
use dataplane::nat::{ConnTable, DnatRule, DnatTable, NatConfig};
use dataplane::pipeline::{self, egress, Ctx, Output, RouterState};
use dataplane::router::dhcp::DhcpLease;
use dataplane::router::fib::{Egress, FibBuilder, NextHop};
use dataplane::router::local6::{link_local, GatewayV6};
use dataplane::router::neigh::NeighCache;
use dataplane::stats::WorkerStats;
use dataplane::tables::{GatewayV4, LocalAddr, NetworkEntry, PortEntry, RouterTables, Tables, UplinkEntry};
use dataplane::vnet::VnetHdr;
use libfuzzer_sys::fuzz_target;
use vswitchd_fuzz::{addr::*, build_frame, outer_ipv4, Cursor};

const POOL: u32 = 512;
const VNI: u32 = 42;
const GRE_KEY: u32 = 7;

fn world() -> Tables {
    let mut t = Tables::default();
    // (id, net, offload, tunnel, tunnel_l3)
    let ports: [(PortId, u16, bool, bool, bool); 7] = [(1, 1, true, false, false), (2, 1, false, false, false), (3, 1, true, true, false), (6, 1, false, true, false), (4, 2, false, false, false), (5, 2, true, true, true), (9, 0, false, false, false)];
    for (id, net, offload, tunnel, tunnel_l3) in ports {
        t.set_port(PortEntry { id, net, name: format!("p{id}"), offload, tunnel, tunnel_l3, dhcp: false });
    }
    let g6 = GatewayV6 { ip: "2001:db8::1".parse().unwrap(), prefix_len: 64, ll: link_local(GW_MAC), mac: GW_MAC, mtu: 1500 };
    t.set_network(NetworkEntry {
        id: 1,
        name: "n1".into(),
        fdb: Arc::new(Fdb::new(32)),
        ports: vec![1, 2, 3, 6],
        gateway: Some(GatewayV4 { ip: GW1, prefix_len: 24, mac: GW_MAC }),
        gateway6: Some(g6),
        mtu: 1500,
        internal: false,
        icc: true,
    });
    t.set_network(NetworkEntry {
        id: 2,
        name: "n2".into(),
        fdb: Arc::new(Fdb::new(8)),
        ports: vec![4, 5],
        gateway: Some(GatewayV4 { ip: GW2, prefix_len: 24, mac: GW_MAC }),
        gateway6: None,
        mtu: 1400,
        internal: false,
        icc: false,
    });
    t.set_dhcp(1, DhcpLease { ip: DHCP_IP, dns: [GW1, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED], dns_len: 1, lease_secs: 3600, router: true, mtu: 1500 });
    t.uplink = Some(UplinkEntry { port: 9, ip: UP_IP, prefix_len: 24, mac: UP_MAC, gateway: Some(UP_GW), mtu: 1500 });
    let peer = u32::from(PEER_HOST);
    t.tunnels.insert((peer, VNI), 3);
    t.tunnels.insert((peer, GRE_KEY), 6);
    t.tunnels.insert((peer, 0), 5);
    t.remote_macs.insert((1, sb_mac(0)), 3);
    // ARP requests for 10.0.0.50 and solicitations for fd00::50 from local ports of
    // network 1 are answered for that endpoint.
    t.remote_arp.insert((1, u32::from(Ipv4Addr::new(10, 0, 0, 50))), sb_mac(0));
    t.remote_nd.insert((1, u128::from(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x50))), sb_mac(0));
    let mut fib = FibBuilder::new();
    fib.add([10, 0, 0, 0], 24, NextHop::Connected { net: 1 }).unwrap();
    fib.add([10, 0, 1, 0], 24, NextHop::Connected { net: 2 }).unwrap();
    fib.add([198, 51, 100, 0], 24, NextHop::Via { gateway: Ipv4Addr::UNSPECIFIED, egress: Egress::Uplink }).unwrap();
    fib.add([0, 0, 0, 0], 0, NextHop::Via { gateway: UP_GW, egress: Egress::Uplink }).unwrap();
    let mut hosts = dataplane::fxhash::FastMap::default();
    hosts.insert((1, SB1), sb_mac(2));
    hosts.insert((1, SB2), sb_mac(3));
    hosts.insert((1, DHCP_IP), sb_mac(5));
    hosts.insert((2, SB3), sb_mac(4));
    let mut local = dataplane::fxhash::FastMap::default();
    local.insert(GW1, LocalAddr::Gateway(1));
    local.insert(GW2, LocalAddr::Gateway(2));
    local.insert(UP_IP, LocalAddr::Uplink);
    let dnat = DnatTable::new(vec![DnatRule::single(6, None, 8080, SB1, 80), DnatRule::single(17, None, 5353, SB2, 53), DnatRule::single(6, Some(UP_IP), 2222, SB3, 22)]).unwrap();
    t.router = Some(Arc::new(RouterTables {
        fib: fib.build(),
        dnat,
        hosts,
        local,
        conntrack: Arc::new(ConnTable::new(NatConfig { max_conns: 64, frag_table: 8, ..NatConfig::default() })),
        neigh: Arc::new(NeighCache::default()),
        overlay_routes: vec![(Ipv4Addr::new(10, 0, 2, 0), 24, 2, 5)],
        min_mtu: 1400,
    }));
    t
}

/// The worker's tx side, minus the sockets.
struct Tx {
    scratch: Vec<u8>,
    vx: Vtep,
    udp: Vtep,
    gre: Vtep,
}

impl Tx {
    fn vnet_port(port: PortId) -> bool {
        matches!(port, 1 | 3 | 5)
    }

    /// What a port's `tx_batch` does with one frame.
    fn sink(&mut self, pool: &mut BufPool, port: PortId, id: PktId) {
        let m = *pool.meta(id);
        assert!(m.off as usize + m.len as usize <= BUF_SIZE, "frame inside its buffer");
        match port {
            3 | 5 => {
                let (vtep, peer) = if port == 3 {
                    (&mut self.vx, Peer { remote: PEER_HOST, tunnel: Tunnel::Vxlan(Vni::new(VNI).unwrap()) })
                } else {
                    (&mut self.udp, Peer { remote: PEER_HOST, tunnel: Tunnel::Udp })
                };
                if m.vnet.is_gso() {
                    if let Ok(mut es) = encap::EncapSegments::new(vtep, peer, pool.frame(id), &m.vnet, 1500) {
                        while let Some(r) = es.next_batch(&mut self.scratch) {
                            let Ok(b) = r else { break };
                            assert!(b.off + b.len <= self.scratch.len());
                        }
                    }
                } else {
                    let len = m.len as usize;
                    self.scratch[HEADROOM..HEADROOM + len].copy_from_slice(pool.frame(id));
                    if let Ok(e) = encap::encap(vtep, &peer, &mut self.scratch, HEADROOM, len, &m.vnet) {
                        assert!(e.end() <= self.scratch.len());
                    }
                }
            }
            6 => {
                assert!(!m.vnet.is_gso() && !m.vnet.needs_csum(), "offload reached a port without vnet headers");
                let peer = Peer { remote: PEER_HOST, tunnel: Tunnel::Gre(Some(GRE_KEY)) };
                let _ = encap::encap(&mut self.gre, &peer, pool.raw_mut(id), m.off as usize, m.len as usize, &m.vnet);
            }
            p if !Self::vnet_port(p) => {
                assert!(!m.vnet.is_gso() && !m.vnet.needs_csum(), "offload reached a port without vnet headers");
            }
            _ => {}
        }
        pool.release(id);
    }
}

struct Out<'a> {
    tx: &'a mut Tx,
    stats: &'a WorkerStats,
    tables: &'a Tables,
}

impl Output for Out<'_> {
    fn emit(&mut self, pool: &mut BufPool, port: PortId, id: PktId) {
        if self.tables.port(port).is_none() {
            pool.release(id);
            return;
        }
        if !Tx::vnet_port(port) {
            let v = pool.meta(id).vnet;
            if v.is_gso() || v.needs_csum() {
                let tx = &mut *self.tx;
                egress::emit_without_offload(pool, id, self.stats, |pool, seg| tx.sink(pool, port, seg));
                return;
            }
        }
        self.tx.sink(pool, port, id);
    }
}

struct State {
    pool: BufPool,
    tx: Tx,
    frame: Vec<u8>,
    outer: Vec<u8>,
}

thread_local! {
    static STATE: std::cell::RefCell<State> = std::cell::RefCell::new(State {
        pool: BufPool::new(POOL).unwrap(),
        tx: Tx { scratch: vec![0; BUF_SIZE], vx: Vtep::vxlan(LOCAL_HOST), udp: Vtep::udp(LOCAL_HOST), gre: Vtep::gre(LOCAL_HOST) },
        frame: Vec::new(),
        outer: Vec::new(),
    });
}

const IN_PORTS: [PortId; 9] = [1, 1, 2, 4, 9, 9, 3, 5, 7];

fuzz_target!(|data: &[u8]| {
    STATE.with(|s| run(&mut s.borrow_mut(), data));
});

fn run(st: &mut State, data: &[u8]) {
    let State { pool, tx, frame, outer } = st;
    let tables = world();
    let stats = WorkerStats::new();
    for p in 1..=9 {
        stats.reset_port(p);
    }
    let mut rs = RouterState::default();
    let mut now = 100u32;
    let mut now_ms = 100_000u64;
    let mut c = Cursor::new(data);
    let mut ops = 0;
    while !c.is_empty() && ops < 24 {
        ops += 1;
        let op = c.u8();
        if op % 8 == 0 {
            now += c.u8() as u32;
            now_ms += c.u16() as u64 * 4;
        } else {
            let in_port = IN_PORTS[(op >> 3) as usize % IN_PORTS.len()];
            let n = 1 + c.u8() as usize % 8;
            let mut batch = Batch::new();
            let tunnel = matches!(in_port, 3 | 5 | 6);
            for _ in 0..n {
                let vh = c.vnet();
                match c.u8() % 8 {
                    0 => vswitchd_fuzz::dhcp_frame(&mut c, frame),
                    1 | 2 => {
                        // The next segment of the previous TCP frame (GRO, NAT state).
                        let prev = std::mem::take(frame);
                        if !vswitchd_fuzz::follow_up(&mut c, &prev, frame) {
                            build_frame(&mut c, frame);
                        }
                    }
                    _ => build_frame(&mut c, frame),
                }
                if tunnel {
                    // Through a tunnel's receive path: wrapped by the sender, taken
                    // apart by ours (which may refuse it).
                    let Some(id) = tunnel_rx(pool, &mut c, frame, outer) else { continue };
                    batch.push(id);
                    continue;
                }
                let Some(id) = pool.alloc_from(frame, vh, in_port) else { break };
                batch.push(id);
            }
            let cx = Ctx { tables: &tables, now, now_ms, stats: &stats };
            let mut out = Out { tx, stats: &stats, tables: &tables };
            if tunnel {
                // The worker's demux: runs of one tunnel port, GRO'd, then processed.
                let mut sub = Batch::new();
                let mut cur: PortId = 0;
                for &pkt in batch.as_slice() {
                    let m = *pool.meta(pkt);
                    let Some(&p) = tables.tunnels.get(&(m.tun_src, m.tun_id)) else {
                        pool.release(pkt);
                        continue;
                    };
                    pool.meta_mut(pkt).in_port = p;
                    if p != cur && !sub.is_empty() {
                        dataplane::worker::fuzz_tunnel_gro(&tables, cur, pool, &mut sub, &stats);
                        pipeline::process(&cx, &mut rs, pool, cur, &sub, &mut out);
                        sub.clear();
                    }
                    cur = p;
                    sub.push(pkt);
                }
                if !sub.is_empty() {
                    dataplane::worker::fuzz_tunnel_gro(&tables, cur, pool, &mut sub, &stats);
                    pipeline::process(&cx, &mut rs, pool, cur, &sub, &mut out);
                }
            } else {
                pipeline::process(&cx, &mut rs, pool, in_port, &batch, &mut out);
            }
        }
        let cx = Ctx { tables: &tables, now, now_ms, stats: &stats };
        let mut out = Out { tx, stats: &stats, tables: &tables };
        pipeline::route::poll_pending(&cx, &mut rs, pool, &mut out);
    }
    // Let everything pending time out, then nothing may be left.
    for _ in 0..4 {
        now += 10;
        now_ms += 10_000;
        let cx = Ctx { tables: &tables, now, now_ms, stats: &stats };
        let mut out = Out { tx, stats: &stats, tables: &tables };
        pipeline::route::poll_pending(&cx, &mut rs, pool, &mut out);
    }
    rs.pending.drain(|w| pool.release(w.pkt));
    assert_eq!(pool.available(), POOL as usize, "every buffer returned to the pool");
    if std::env::var_os("FUZZ_STATS").is_some() {
        // Which paths an input reached (run over a corpus, count the lines).
        for &r in dataplane::stats::DropReason::ALL {
            if stats.drops(r) > 0 {
                eprintln!("STAT drop {}", r.as_str());
            }
        }
        for &e in dataplane::stats::Event::ALL {
            if stats.events(e) > 0 {
                eprintln!("STAT event {}", e.as_str());
            }
        }
    }
}

/// A tunnel datagram carrying `frame`, as our receive socket gets it (the VXLAN/GRE/IP
/// header comes partly from the fuzzer), decapsulated as `TunnelRx` does; the inner
/// frame in a pool buffer with its demux key, or `None` if decap refused it.
fn tunnel_rx(pool: &mut BufPool, c: &mut Cursor<'_>, frame: &[u8], outer: &mut Vec<u8>) -> Option<PktId> {
    outer.clear();
    let kind = c.u8();
    let d = match kind % 3 {
        0 => {
            // VXLAN: flags (I bit), reserved, VNI.
            let flags = if kind & 0x80 != 0 { c.u8() } else { 0x08 };
            let vni = if kind & 0x40 != 0 { c.u32() >> 8 } else { VNI };
            outer.extend_from_slice(&[flags, 0, 0, 0]);
            outer.extend_from_slice(&(vni << 8).to_be_bytes());
            outer.extend_from_slice(frame);
            encap::vxlan::decap_payload(outer)
        }
        1 => {
            // IP-in-UDP: the inner IP packet itself.
            outer.extend_from_slice(frame.get(14..).unwrap_or(&[]));
            encap::udp::decap_payload(outer)
        }
        _ => {
            // GRE over an outer IPv4 header to us.
            let csum = kind & 0x40 != 0;
            let glen = 4 + 4 + if csum { 4 } else { 0 };
            let total = (20 + glen + frame.len()) as u16;
            outer.extend_from_slice(&outer_ipv4(0x45, total, 0, 47, PEER_HOST, LOCAL_HOST));
            let mut g = [0u8; 12];
            encap::gre::write_header(&mut g[..glen], Some(GRE_KEY), csum);
            if kind & 0x80 != 0 {
                g[0] = c.u8();
                g[1] = c.u8();
            }
            outer.extend_from_slice(&g[..glen]);
            outer.extend_from_slice(frame);
            if csum && kind & 0x80 == 0 {
                encap::gre::fill_csum(&mut outer[20..]);
            }
            encap::gre::decap(&Vtep::gre(LOCAL_HOST), outer)
        }
    };
    let d = d.ok()?;
    let inner = &outer[d.inner_range()];
    let id = pool.alloc()?;
    pool.raw_mut(id)[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
    let m = pool.meta_mut(id);
    m.off = HEADROOM as u32;
    m.len = inner.len() as u32;
    m.vnet = VnetHdr::default();
    m.in_port = 0;
    m.tun_src = u32::from(PEER_HOST);
    m.tun_id = d.tunnel.id();
    Some(id)
}
