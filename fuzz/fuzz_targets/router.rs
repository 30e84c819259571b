//! The gateway's packet-facing pieces, one call each, on fuzzed frames: the DHCP server
//! (`dhcp::is_request` / `dhcp::reply`, with BOOTP/DHCP bodies built from fuzzed
//! options), IPv4 fragmentation (`frag::plan` / `frag::write` with fuzzed MTU and
//! options), ICMP error and TCP reset generation, TTL decrement, the local answers
//! (ARP, echo, IPv6 ND/RS/echo), ARP parsing and NAT/conntrack (`nat::process`, with
//! fragments) over a sequence of packets.
//!
//! Oracles besides "no panic": replies are written within the returned length (and
//! that length fits the buffer); fragments fit the planned size and the MTU.
#![no_main]

use std::net::Ipv4Addr;

use dataplane::nat::{self, Action, ConnTable, NatConfig};
use dataplane::router::dhcp::{self, DhcpLease};
use dataplane::router::icmp::{self, IcmpError};
use dataplane::router::local6::{self, link_local, GatewayV6, Local6};
use dataplane::router::{frag, local, neigh};
use dataplane::tables::GatewayV4;
use libfuzzer_sys::fuzz_target;
use vswitchd_fuzz::{addr::*, build_frame, Cursor};

fn gw() -> GatewayV4 {
    GatewayV4 { ip: GW1, prefix_len: 24, mac: GW_MAC }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let sel = c.u8();
    let mut f = Vec::new();
    if sel % 5 == 0 {
        vswitchd_fuzz::dhcp_frame(&mut c, &mut f);
    } else {
        build_frame(&mut c, &mut f);
    }
    let mut out = vec![0u8; 2048];

    // DHCP, as dhcp_reply in the pipeline does it: at most REQUEST_MAX bytes copied.
    let _ = dhcp::is_request(&f);
    let lease = DhcpLease { ip: DHCP_IP, dns: [GW1, Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::UNSPECIFIED], dns_len: c.u8() % 4, lease_secs: c.u32(), router: c.bool(), mtu: c.u16() };
    let req = &f[..f.len().min(dhcp::REQUEST_MAX)];
    let rl = c.u16() as usize % (dhcp::REPLY_LEN + 64);
    if let Ok((len, _)) = dhcp::reply(req, &gw(), &lease, &mut out[..rl]) {
        assert!(len <= rl);
    }

    // Local answers, as the pipeline calls them: only for what `classify` said (their
    // documented precondition).
    match local::classify(&f, &gw()) {
        local::Local::EchoRequest => {
            let mut g = f.clone();
            if let Some(len) = local::echo_reply_in_place(&mut g, &gw()) {
                assert!(len <= g.len());
            }
        }
        local::Local::ArpRequest => {
            if let Some(len) = local::arp_reply(&f[..f.len().min(64)], &gw(), &mut out[..local::ARP_REPLY_LEN]) {
                assert!(len <= local::ARP_REPLY_LEN);
            }
        }
        _ => {}
    }
    let g6 = GatewayV6 { ip: "2001:db8::1".parse().unwrap(), prefix_len: 64, ll: link_local(GW_MAC), mac: GW_MAC, mtu: c.u16() as u32 };
    match local6::classify(&f, &g6) {
        Local6::NeighborSolicit { target } => {
            let _ = local6::neighbor_advert(&f[..f.len().min(128)], target, &g6, &mut out[..local6::NA_LEN]);
        }
        Local6::RouterSolicit => {
            let _ = local6::router_advert(Some(&f[..f.len().min(128)]), &g6, &mut out[..local6::RA_LEN]);
        }
        Local6::EchoRequest => {
            let mut g = f.clone();
            if let Some(len) = local6::echo_reply_in_place(&mut g) {
                assert!(len <= g.len());
            }
        }
        _ => {}
    }
    let _ = local6::router_advert(None, &g6, &mut out[..local6::RA_LEN]);
    let _ = neigh::parse_arp(&f);

    // ICMP errors and resets about the packet (from the IP header on).
    let ip = f.get(14..).unwrap_or(&[]);
    let kind = [IcmpError::TimeExceeded, IcmpError::NetUnreachable, IcmpError::HostUnreachable, IcmpError::ProtocolUnreachable, IcmpError::PortUnreachable, IcmpError::FragNeeded { mtu: c.u16() }, IcmpError::AdminProhibited][c.u8() as usize % 7];
    let _ = icmp::may_send_error(ip);
    let ol = c.u16() as usize % 700;
    if let Ok(n) = icmp::build_error_frame(kind, ip, GW1, 64, sb_mac(2), GW_MAC, &mut out[..ol]) {
        assert!(n <= ol);
        assert!(n <= 14 + icmp::MAX_ERROR_LEN);
    }
    if icmp::may_reset(ip) {
        if let Some(n) = icmp::build_reset_frame(ip, sb_mac(2), GW_MAC, &mut out[..ol]) {
            assert!(n <= ol);
        }
    }
    let mut h = ip.to_vec();
    let _ = icmp::dec_ttl(&mut h);

    // Fragmentation at a fuzzed MTU.
    let mtu = match c.u8() % 4 {
        0 => 1500,
        1 => 576,
        2 => 68,
        _ => c.u16() as usize,
    };
    if let Ok(p) = frag::plan(&f, 14, mtu) {
        let max = p.max_frame_len();
        let mut fo = vec![0u8; max + 8];
        for k in 0..p.count.min(64) {
            match frag::write(&f, &p, k, &mut fo) {
                Ok(n) => {
                    assert!(n <= max, "fragment {k} of {n} bytes over max_frame_len {max}");
                    assert!(n - 14 <= mtu.max(p.ihl + 8), "fragment over the mtu");
                }
                Err(_) => break,
            }
        }
    }

    // NAT/conntrack over a few packets (this one and more).
    let t = ConnTable::new(NatConfig { max_conns: 16, frag_table: 4, ..NatConfig::default() });
    let mut now = 1;
    let mut g = f.clone();
    for i in 0..6 {
        let a = match c.u8() % 5 {
            0 => Action::None,
            1 => Action::Deny,
            2 => Action::Snat { to: UP_IP },
            3 => Action::Dnat { to: SB1, port: 80 },
            _ => Action::DnatSnat { to: SB1, port: 80, snat: GW1 },
        };
        let partial = c.bool();
        let _ = nat::process(&t, &mut g, 14, partial, |_| a, now);
        now += c.u8() as u32;
        if i % 2 == 1 {
            t.sweep(now, 8);
        }
        if c.is_empty() {
            break;
        }
        build_frame(&mut c, &mut g);
    }
});
