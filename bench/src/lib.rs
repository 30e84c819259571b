//! Shared fixtures for the criterion benches (frames, tables).

use std::sync::Arc;

use dataplane::bridge::fdb::Fdb;
use dataplane::buf::PortId;
use dataplane::tables::{GatewayV4, NetworkEntry, PortEntry, Tables};
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
        t.set_port(PortEntry { id: p, net: 1, name: format!("p{p}"), offload: true, tunnel: false, tunnel_l3: false });
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
