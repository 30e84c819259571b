//! Shared fixtures for the criterion benches (frames, tables).

use std::net::Ipv4Addr;
use std::sync::Arc;

use dataplane::bridge::fdb::Fdb;
use dataplane::buf::PortId;
use dataplane::tables::{GatewayV4, LocalAddr, NetworkEntry, PortEntry, RouterTables, Tables, UplinkEntry};
use dataplane::wire::MacAddr;

/// A deterministic pseudo-random unicast MAC.
pub fn mac(i: u64) -> MacAddr {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    x ^= x >> 31;
    MacAddr::from_u64((x & 0xfeff_ffff_ffff) | 0x0200_0000_0000)
}

/// One network with `ports` ports and a MAC table of `fdb_cap` entries.
pub fn tables(ports: PortId, fdb_cap: u32) -> Tables {
    let mut t = Tables::default();
    let ids: Vec<PortId> = (1..=ports).collect();
    for &p in &ids {
        t.set_port(PortEntry { id: p, net: 1, name: format!("p{p}"), offload: true, tunnel: false, tunnel_l3: false, dhcp: false });
    }
    t.set_network(NetworkEntry {
        id: 1,
        name: "bench".into(),
        fdb: Arc::new(Fdb::new(fdb_cap)),
        ports: ids,
        gateway: Some(GatewayV4 { ip: [10, 0, 0, 1].into(), prefix_len: 24, mac: MacAddr([2, 0, 0, 0, 0, 1]) }),
        mtu: 1500,
        internal: false,
        icc: true,
            gateway6: None,
    });
    t
}

/// A 64-byte (60 without FCS) Ethernet/IPv4/UDP frame from `src` to `dst`.
pub fn udp64(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    f[34..36].copy_from_slice(&1234u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// A routed world: network 1 (10.0.0.0/24, gateway 10.0.0.1 with MAC 02:00:00:00:00:01)
/// with the sandbox port 1 (`sb_ip`, `sb_mac`), an uplink on port 9 (`up_ip`/24,
/// gateway 198.51.100.1), masquerade for the network and UDP 8080 on the uplink
/// published to the sandbox's port 80.
pub fn routed_tables(up_mac: MacAddr, up_ip: Ipv4Addr, sb_mac: MacAddr, sb_ip: Ipv4Addr) -> Tables {
    use dataplane::nat::{ConnTable, DnatRule, DnatTable, NatConfig};
    use dataplane::router::fib::{Egress, FibBuilder, NextHop};
    use dataplane::router::neigh::NeighCache;
    let mut t = tables(1, 1024);
    t.set_port(PortEntry { id: 9, net: 0, name: "uplink".into(), offload: true, tunnel: false, tunnel_l3: false, dhcp: false });
    t.uplink = Some(UplinkEntry { port: 9, ip: up_ip, prefix_len: 24, mac: up_mac, gateway: Some(Ipv4Addr::new(198, 51, 100, 1)), mtu: 1500 });
    let mut fib = FibBuilder::new();
    fib.add([10, 0, 0, 0], 24, NextHop::Connected { net: 1 }).expect("route");
    fib.add([198, 51, 100, 0], 24, NextHop::Via { gateway: Ipv4Addr::UNSPECIFIED, egress: Egress::Uplink }).expect("route");
    fib.add([0, 0, 0, 0], 0, NextHop::Via { gateway: Ipv4Addr::new(198, 51, 100, 1), egress: Egress::Uplink }).expect("route");
    let mut hosts = dataplane::fxhash::FastMap::default();
    hosts.insert((1, sb_ip), sb_mac);
    let mut local = dataplane::fxhash::FastMap::default();
    local.insert(Ipv4Addr::new(10, 0, 0, 1), LocalAddr::Gateway(1));
    local.insert(up_ip, LocalAddr::Uplink);
    let dnat = DnatTable::new(vec![DnatRule::single(17, None, 8080, sb_ip, 80)]).expect("dnat");
    t.router = Some(Arc::new(RouterTables {
        fib: fib.build(),
        dnat,
        hosts,
        local,
        conntrack: Arc::new(ConnTable::new(NatConfig::default())),
        neigh: Arc::new(NeighCache::default()),
        overlay_routes: Vec::new(),
        min_mtu: 1500,
    }));
    t
}

/// A 60-byte Ethernet/IPv4/UDP frame with a correct IPv4 header checksum and a
/// correct UDP checksum.
pub fn udp_frame(dst: MacAddr, src: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = udp64(dst, src);
    f[26..30].copy_from_slice(&sip.octets());
    f[30..34].copy_from_slice(&dip.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    let ip_sum = csum(&f[14..34], 0);
    f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    // UDP over the pseudo-header, header and payload.
    let mut ph = Vec::with_capacity(12);
    ph.extend_from_slice(&f[26..34]);
    ph.extend_from_slice(&[0, 17]);
    ph.extend_from_slice(&f[38..40]);
    let pre = sum(&ph);
    let u = csum(&f[34..60], pre);
    f[40..42].copy_from_slice(&(if u == 0 { 0xffff } else { u }).to_be_bytes());
    f
}

fn sum(b: &[u8]) -> u32 {
    b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn csum(b: &[u8], init: u32) -> u16 {
    let mut s = init + sum(b);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
