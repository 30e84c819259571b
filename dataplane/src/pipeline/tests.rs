//! Bridge behaviour driven with byte arrays: learn, flood, unicast, move, full table,
//! isolation between networks, gateway answers, drops by reason, buffer accounting.

use super::*;
use crate::bridge::fdb::Fdb;
use crate::tables::{GatewayV4, NetId, NetworkEntry, PortEntry, Tables};
use crate::wire::MacAddr;
use std::sync::Arc;

/// Records (port, frame) for every emitted packet and releases it.
#[derive(Default)]
struct Rec {
    out: Vec<(PortId, Vec<u8>)>,
}

impl Output for Rec {
    fn emit(&mut self, pool: &mut BufPool, port: PortId, id: PktId) {
        self.out.push((port, pool.frame(id).to_vec()));
        pool.release(id);
    }
}

fn mac(last: u8) -> MacAddr {
    MacAddr([2, 0x42, 10, 10, 0, last])
}

const GW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

fn world(fdb_cap: u32) -> Tables {
    let mut t = Tables::default();
    let nets: [(NetId, &[PortId]); 2] = [(1, &[1, 2, 3]), (2, &[4, 5])];
    for (nid, ports) in nets {
        for &p in ports {
            t.set_port(PortEntry { id: p, net: nid, name: format!("p{p}"), offload: true, tunnel: false, tunnel_l3: false, dhcp: false });
        }
        t.set_network(NetworkEntry {
            id: nid,
            name: format!("n{nid}"),
            fdb: Arc::new(Fdb::new(fdb_cap)),
            ports: ports.to_vec(),
            gateway: Some(GatewayV4 { ip: [10, 10, nid as u8, 1].into(), prefix_len: 24, mac: GW_MAC }),
            mtu: 1500,
            internal: false,
            icc: true,
            gateway6: None,
        });
    }
    t
}

fn frame(dst: MacAddr, src: MacAddr, ethertype: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f
}

struct Harness {
    t: Tables,
    pool: BufPool,
    stats: WorkerStats,
}

impl Harness {
    fn new(fdb_cap: u32) -> Harness {
        let stats = WorkerStats::new();
        for p in 1..=5 {
            stats.reset_port(p);
        }
        Harness { t: world(fdb_cap), pool: BufPool::new(256).unwrap(), stats }
    }

    fn send(&mut self, in_port: PortId, frames: &[Vec<u8>]) -> Vec<(PortId, Vec<u8>)> {
        let mut b = Batch::new();
        for f in frames {
            b.push(self.pool.alloc_from(f, VnetHdr::default(), in_port).unwrap());
        }
        let mut rec = Rec::default();
        let cx = Ctx { tables: &self.t, now: 100, now_ms: 100_000, stats: &self.stats };
        process(&cx, &mut crate::pipeline::RouterState::default(), &mut self.pool, in_port, &b, &mut rec);
        assert_eq!(self.pool.available(), 256, "every buffer returned");
        rec.out
    }

    fn ports_of(out: &[(PortId, Vec<u8>)]) -> Vec<PortId> {
        let mut v: Vec<_> = out.iter().map(|o| o.0).collect();
        v.sort();
        v
    }
}

#[test]
fn unknown_unicast_floods_then_learned_unicast() {
    let mut h = Harness::new(1024);
    let out = h.send(1, &[frame(mac(3), mac(2), 0x0800, 60)]);
    assert_eq!(Harness::ports_of(&out), vec![2, 3], "flood to all but ingress");
    // mac(2) is learned on port 1: a reply from port 3 goes only to port 1.
    let out = h.send(3, &[frame(mac(2), mac(3), 0x0800, 60)]);
    assert_eq!(Harness::ports_of(&out), vec![1]);
    // Now both are known.
    let out = h.send(1, &[frame(mac(3), mac(2), 0x0800, 60)]);
    assert_eq!(Harness::ports_of(&out), vec![3]);
    assert_eq!(h.stats.events(Event::FdbInsert), 2);
    assert_eq!(h.stats.port_totals(1).rx_packets, 2);
}

#[test]
fn broadcast_and_multicast_flood_never_back_to_ingress() {
    let mut h = Harness::new(1024);
    let out = h.send(2, &[frame(MacAddr::BROADCAST, mac(2), 0x0800, 60), frame("01:00:5e:00:00:01".parse().unwrap(), mac(2), 0x0800, 60)]);
    assert_eq!(Harness::ports_of(&out), vec![1, 1, 3, 3]);
}

#[test]
fn mac_moves_at_once() {
    let mut h = Harness::new(1024);
    h.send(1, &[frame(MacAddr::BROADCAST, mac(2), 0x0800, 60)]);
    h.send(2, &[frame(MacAddr::BROADCAST, mac(2), 0x0800, 60)]);
    let out = h.send(3, &[frame(mac(2), mac(3), 0x0800, 60)]);
    assert_eq!(Harness::ports_of(&out), vec![2]);
    assert_eq!(h.stats.events(Event::FdbMove), 1);
}

#[test]
fn same_segment_dropped() {
    let mut h = Harness::new(1024);
    h.send(1, &[frame(MacAddr::BROADCAST, mac(2), 0x0800, 60), frame(MacAddr::BROADCAST, mac(3), 0x0800, 60)]);
    let out = h.send(1, &[frame(mac(3), mac(2), 0x0800, 60)]);
    assert!(out.is_empty());
    assert_eq!(h.stats.drops(DropReason::SameSegment), 1);
}

#[test]
fn full_table_refuses_learning_but_still_forwards() {
    let mut h = Harness::new(4);
    let frames: Vec<_> = (10..30).map(|i| frame(MacAddr::BROADCAST, mac(i), 0x0800, 60)).collect();
    let out = h.send(1, &frames);
    assert_eq!(out.len(), 40, "every frame flooded to 2 ports");
    assert_eq!(h.t.network(1).unwrap().fdb.len(), 4);
    assert_eq!(h.stats.events(Event::FdbFull), 16);
}

#[test]
fn networks_never_leak() {
    let mut h = Harness::new(1024);
    // mac(9) lives on network 2 (port 4). A frame to it from network 1 must not reach port 4.
    h.send(4, &[frame(MacAddr::BROADCAST, mac(9), 0x0800, 60)]);
    let out = h.send(1, &[frame(mac(9), mac(2), 0x0800, 60), frame(MacAddr::BROADCAST, mac(2), 0x0800, 60)]);
    assert!(out.iter().all(|(p, _)| [2, 3].contains(p)), "{out:?}");
    let out = h.send(5, &[frame(MacAddr::BROADCAST, mac(8), 0x0800, 60)]);
    assert_eq!(Harness::ports_of(&out), vec![4]);
}

#[test]
fn stale_fdb_entry_for_port_of_other_network_floods() {
    let mut h = Harness::new(1024);
    // Simulate a stale entry pointing at a port that moved networks.
    h.t.network(1).unwrap().fdb.learn(mac(7), 4, 100);
    let out = h.send(1, &[frame(mac(7), mac(2), 0x0800, 60)]);
    assert_eq!(Harness::ports_of(&out), vec![2, 3]);
}

#[test]
fn bad_frames_dropped_by_reason() {
    let mut h = Harness::new(1024);
    let out = h.send(1, &[vec![0u8; 10], frame(mac(3), MacAddr::BROADCAST, 0x0800, 60), frame(mac(3), MacAddr::ZERO, 0x0800, 60)]);
    assert!(out.is_empty());
    assert_eq!(h.stats.drops(DropReason::Truncated), 1);
    assert_eq!(h.stats.drops(DropReason::BadSrcMac), 2);
    // A port spoofing the gateway's MAC: dropped, not learnt.
    let out = h.send(1, &[frame(MacAddr::BROADCAST, GW_MAC, 0x0800, 60)]);
    assert!(out.is_empty());
    assert_eq!(h.stats.drops(DropReason::BadSrcMac), 3);
    assert!(h.t.network(1).unwrap().fdb.lookup(GW_MAC).is_none(), "the gateway's MAC is never learnt on a port");
    assert_eq!(h.stats.port_totals(1).rx_dropped, 4, "the drops are the port's too");
    let out = h.send(9, &[frame(mac(3), mac(2), 0x0800, 60)]);
    assert!(out.is_empty());
    assert_eq!(h.stats.drops(DropReason::PortUnknown), 1);
}

#[test]
fn gateway_answers_arp_and_floods_request() {
    let mut h = Harness::new(1024);
    let mut f = frame(MacAddr::BROADCAST, mac(2), 0x0806, 60);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac(2).0);
    f[28..32].copy_from_slice(&[10, 10, 1, 2]);
    f[38..42].copy_from_slice(&[10, 10, 1, 1]);
    let out = h.send(1, &[f]);
    assert_eq!(Harness::ports_of(&out), vec![1, 2, 3]);
    let reply = &out.iter().find(|o| o.0 == 1).unwrap().1;
    assert_eq!(&reply[0..6], &mac(2).0);
    assert_eq!(&reply[6..12], &GW_MAC.0);
    assert_eq!(&reply[20..22], &[0, 2]);
    assert_eq!(&reply[28..32], &[10, 10, 1, 1]);
    assert_eq!(h.stats.events(Event::ArpReply), 1);
}

/// An ARP request (broadcast) from `src` at 10.10.1.2 asking for `target`.
fn arp_request(src: MacAddr, spa: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = frame(MacAddr::BROADCAST, src, 0x0806, 60);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&src.0);
    f[28..32].copy_from_slice(&spa);
    f[38..42].copy_from_slice(&target);
    f
}

#[test]
fn arp_and_nd_for_remote_endpoints_answered_locally_not_flooded() {
    let mut h = Harness::new(1024);
    // Port 3 is a tunnel to the host of 10.10.1.77 (MAC mac(77)).
    if let Some(Some(p)) = h.t.ports.get_mut(3) {
        p.tunnel = true;
    }
    h.t.remote_macs.insert((1, mac(77)), 3);
    h.t.remote_arp.insert((1, u32::from_be_bytes([10, 10, 1, 77])), mac(77));
    let out = h.send(1, &[arp_request(mac(2), [10, 10, 1, 2], [10, 10, 1, 77])]);
    assert_eq!(Harness::ports_of(&out), vec![1], "answered, not flooded");
    let reply = &out[0].1;
    assert_eq!(&reply[0..6], &mac(2).0);
    assert_eq!(&reply[6..12], &mac(77).0);
    assert_eq!(&reply[20..22], &[0, 2]);
    assert_eq!(&reply[22..28], &mac(77).0);
    assert_eq!(&reply[28..32], &[10, 10, 1, 77]);
    assert_eq!(&reply[32..38], &mac(2).0);
    assert_eq!(&reply[38..42], &[10, 10, 1, 2]);
    assert_eq!(h.stats.events(Event::ArpProxied), 1);
    // Another address of the network: flooded as before (the gateway does not answer).
    let out = h.send(1, &[arp_request(mac(2), [10, 10, 1, 2], [10, 10, 1, 78])]);
    assert_eq!(Harness::ports_of(&out), vec![2, 3]);
    // The same address on another network: not that endpoint.
    let out = h.send(4, &[arp_request(mac(4), [10, 10, 1, 4], [10, 10, 1, 77])]);
    assert_eq!(Harness::ports_of(&out), vec![5]);
    // A gratuitous announcement of that address: flooded, not answered.
    let out = h.send(1, &[arp_request(mac(2), [10, 10, 1, 77], [10, 10, 1, 77])]);
    assert_eq!(Harness::ports_of(&out), vec![2, 3]);
    // From the tunnel (another host's sandbox asking): that host answers; we flood.
    let out = h.send(3, &[arp_request(mac(90), [10, 10, 1, 90], [10, 10, 1, 77])]);
    assert_eq!(Harness::ports_of(&out), vec![1, 2]);
    // IPv6: a neighbour solicitation for the endpoint's address is answered the same way.
    let v6: std::net::Ipv6Addr = "fd00:10::77".parse().unwrap();
    h.t.remote_nd.insert((1, u128::from(v6)), mac(77));
    let ns = crate::router::local6::solicitation(mac(2), "fd00:10::2".parse().unwrap(), v6);
    let out = h.send(1, &[ns.clone()]);
    assert_eq!(Harness::ports_of(&out), vec![1], "answered, not flooded");
    assert_eq!(&out[0].1[6..12], &mac(77).0);
    assert_eq!(out[0].1[14 + 40], 136, "a neighbour advertisement");
    assert_eq!(h.stats.events(Event::NdProxied), 1);
    let other = crate::router::local6::solicitation(mac(2), "fd00:10::2".parse().unwrap(), "fd00:10::78".parse().unwrap());
    assert_eq!(Harness::ports_of(&h.send(1, &[other])), vec![2, 3]);
    // --icc=false: ports reach the gateway only, no answers for other endpoints.
    if let Some(Some(n)) = h.t.networks.get_mut(1) {
        n.icc = false;
    }
    let out = h.send(1, &[arp_request(mac(2), [10, 10, 1, 2], [10, 10, 1, 77])]);
    assert!(out.iter().all(|o| o.1[6..12] != mac(77).0), "no proxy answer with --icc=false");
    let out = h.send(1, &[ns]);
    assert!(out.iter().all(|o| o.1[6..12] != mac(77).0), "no proxy answer with --icc=false");
    assert_eq!(h.stats.events(Event::ArpProxied), 1);
    assert_eq!(h.stats.events(Event::NdProxied), 1);
}

#[test]
fn gateway_answers_unicast_arp_and_echo() {
    let mut h = Harness::new(1024);
    let mut f = frame(GW_MAC, mac(2), 0x0806, 42); // unpadded, as a TAP may deliver it
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac(2).0);
    f[28..32].copy_from_slice(&[10, 10, 1, 2]);
    f[38..42].copy_from_slice(&[10, 10, 1, 1]);
    let out = h.send(1, &[f]);
    assert_eq!(Harness::ports_of(&out), vec![1]);
    assert_eq!(out[0].1.len(), 60);

    let b = etherparse::PacketBuilder::ethernet2(mac(2).0, GW_MAC.0).ipv4([10, 10, 1, 2], [10, 10, 1, 1], 64).icmpv4_echo_request(1, 1);
    let mut e = Vec::new();
    b.write(&mut e, &[7; 32]).unwrap();
    let out = h.send(1, &[e]);
    assert_eq!(Harness::ports_of(&out), vec![1]);
    assert_eq!(&out[0].1[26..30], &[10, 10, 1, 1]);
    // Other IP to the gateway MAC is not routed (yet): counted.
    let b = etherparse::PacketBuilder::ethernet2(mac(2).0, GW_MAC.0).ipv4([10, 10, 1, 2], [1, 1, 1, 1], 64).udp(1, 2);
    let mut u = Vec::new();
    b.write(&mut u, &[7; 32]).unwrap();
    assert!(h.send(1, &[u]).is_empty());
    assert_eq!(h.stats.drops(DropReason::NoRoute), 1);
}

#[test]
fn random_garbage_never_panics_and_returns_buffers() {
    let mut h = Harness::new(64);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..200 {
        let frames: Vec<Vec<u8>> = (0..16)
            .map(|i| {
                let len = (x as usize + i * 7) % 200;
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Bias towards gateway MAC / ARP so the local paths get exercised.
                        match x % 11 {
                            0 => 0xff,
                            1 => 0x08,
                            _ => x as u8,
                        }
                    })
                    .collect()
            })
            .collect();
        h.send(1 + (round % 5) as PortId, &frames);
    }
}

/// A port with a DHCP binding gets the gateway's answers to its DHCP requests (never
/// flooded); the same request from a port without one is switched like any broadcast.
#[test]
fn dhcp_requests_answered_for_ports_with_a_binding_only() {
    use crate::router::dhcp::tests::{request, CLIENT};
    use crate::router::dhcp::{DhcpLease, REPLY_LEN};
    use std::net::Ipv4Addr;
    let mut h = Harness::new(1024);
    let lease = DhcpLease { ip: Ipv4Addr::new(10, 10, 1, 50), dns: [Ipv4Addr::UNSPECIFIED; 3], dns_len: 0, lease_secs: 3600, router: true, mtu: 1500 };
    h.t.set_dhcp(1, lease);
    // DISCOVER (53=1), broadcast.
    let discover = request(Ipv4Addr::UNSPECIFIED, true, &[53, 1, 1]);
    let out = h.send(1, std::slice::from_ref(&discover));
    assert_eq!(Harness::ports_of(&out), vec![1], "answered on the ingress port only, not flooded");
    let r = &out[0].1;
    assert_eq!(r.len(), REPLY_LEN);
    assert_eq!(&r[6..12], &GW_MAC.0, "from the gateway");
    assert_eq!(&r[42 + 16..42 + 20], &[10, 10, 1, 50], "yiaddr is the port's address");
    assert_eq!(h.stats.events(Event::DhcpOffer), 1);
    // A renewal unicast to the gateway's MAC and address is acked.
    let to_gw = |opts: &[u8]| {
        let mut f = request(Ipv4Addr::new(10, 10, 1, 50), false, opts);
        f[0..6].copy_from_slice(&GW_MAC.0);
        f[30..34].copy_from_slice(&[10, 10, 1, 1]);
        f
    };
    let out = h.send(1, &[to_gw(&[53, 1, 3])]);
    assert_eq!(Harness::ports_of(&out), vec![1]);
    assert_eq!(&out[0].1[0..6], &CLIENT, "to the client");
    assert_eq!(h.stats.events(Event::DhcpAck), 1);
    // RELEASE: no reply, counted.
    let out = h.send(1, &[to_gw(&[53, 1, 7])]);
    assert!(out.is_empty());
    assert_eq!(h.stats.drops(DropReason::DhcpIgnored), 1);
    // A request cut short: dropped as malformed.
    let out = h.send(1, &[discover[..100].to_vec()]);
    assert!(out.is_empty());
    assert_eq!(h.stats.drops(DropReason::BadLocal), 1);
    // The same DISCOVER from a port without a binding: flooded, no answer.
    let mut other = discover.clone();
    other[6..12].copy_from_slice(&mac(9).0);
    let out = h.send(2, &[other]);
    assert_eq!(Harness::ports_of(&out), vec![1, 3]);
    assert_eq!(h.stats.events(Event::DhcpOffer), 1);
}
