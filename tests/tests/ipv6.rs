//! Dual stack: IPv6 subnets beside IPv4, addresses from IPAM, the gateway answering
//! neighbour discovery and echo, sandboxes talking over IPv6 (with offloads: TCP GSO
//! over IPv6), isolation, AAAA names.

use vswitchd_e2e::*;

fn world(test: &str, tools: &[&str]) -> Option<World> {
    let mut w = World::new(test, tools)?;
    let host = w.netns("host");
    w.start_daemon(&host, &["--workers", "2"]);
    Some(w)
}

#[test]
fn dual_stack_network() {
    let Some(w) = world("ipv6", &["ping", "iperf3", "dig"]) else { return };
    let (c1, c2, c3) = (w.name("c1"), w.name("c2"), w.name("c3"));
    w.ctl_ok(0, &["network", "create", "dual", "--ipv6", "--subnet", "10.80.0.0/24", "--subnet", "fd00:80::/64"]);
    w.ctl_ok(0, &["network", "create", "other", "--ipv6", "--subnet", "10.81.0.0/24", "--subnet", "fd00:81::/64"]);
    for s in [&c1, &c2, &c3] {
        w.ctl_ok(0, &["sandbox", "create", s]);
    }
    let out = w.ctl_ok(0, &["connect", "dual", &c1]);
    assert!(out.contains("fd00:80::2/64"), "{out}");
    w.ctl_ok(0, &["connect", "dual", &c2, "--ip6", "fd00:80::99"]);
    w.ctl_ok(0, &["connect", "other", &c3]);
    let insp = w.ctl_json(0, &["network", "inspect", "dual"]);
    assert_eq!(insp[0]["subnet6"], "fd00:80::/64");
    assert_eq!(insp[0]["gateway6"], "fd00:80::1");
    let a = String::from_utf8_lossy(&in_ns(&c1, "ip -6 -o addr show dev eth0").stdout).into_owned();
    assert!(a.contains("fd00:80::2/64"), "{a}");
    let r = String::from_utf8_lossy(&in_ns(&c1, "ip -6 route show default").stdout).into_owned();
    assert!(r.contains("via fd00:80::1"), "{r}");
    // Sandbox to sandbox (neighbour discovery through the bridge) and to the gateway
    // (the dataplane answers neighbour solicitations and echo, global and link-local).
    assert!(ping(&c1, "fd00:80::99"), "v6 sandbox to sandbox{}", w.log_tail(0));
    assert!(ping(&c2, "fd00:80::2"));
    assert!(ping(&c1, "fd00:80::1"), "v6 gateway answers{}", w.log_tail(0));
    let ll = String::from_utf8_lossy(&in_ns(&c1, "ip -6 neigh show fd00:80::1").stdout).into_owned();
    assert!(ll.contains("router"), "the gateway is known as a router: {ll}");
    let gwmac = insp[0]["gateway_mac"].as_str().unwrap().to_string();
    let b: Vec<u8> = gwmac.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    let ll_addr = format!("fe80::{:x}:{:x}ff:fe{:02x}:{:x}", ((b[0] ^ 2) as u16) << 8 | b[1] as u16, b[2], b[3], (b[4] as u16) << 8 | b[5] as u16);
    assert!(ping(&c1, &format!("{ll_addr}%eth0")), "link-local gateway {ll_addr}");
    // IPv4 keeps working beside it.
    assert!(ping(&c1, "10.80.0.3"));
    // Isolation holds for IPv6 too: another network is not reachable.
    assert!(no_ping(&c1, "fd00:81::2"));
    assert!(no_ping(&c3, "fd00:80::2"));
    // TCP over IPv6 with the sandboxes' offloads (TSO frames, partial checksums).
    let g = iperf3(&c1, &c2, "fd00:80::99", 2, "", &w.dir);
    assert!(g > 0.05, "iperf3 over IPv6: {g} Gbit/s");
    // AAAA names from the embedded DNS.
    let aaaa = String::from_utf8_lossy(&in_ns(&c1, &format!("dig +short +time=2 +tries=1 @127.0.0.11 AAAA {c2}")).stdout).into_owned();
    assert_eq!(aaaa.trim(), "fd00:80::99");
    // Bad IPv6 input.
    assert!(w.ctl_err(0, &["network", "create", "x", "--subnet", "fd00:99::/64"]).contains("--ipv6"));
    assert!(w.ctl_err(0, &["network", "create", "x", "--ipv6", "--subnet", "fd00:80:0:0:1::/80"]).contains("overlaps"));
    assert!(w.ctl_err(0, &["connect", "other", &c1, "--ip6", "fd00:80::5"]).contains("not in the subnet"));
    // Disconnected from its first network, a sandbox's default routes move to its next
    // one: the IPv6 one too (not only what router advertisements give).
    w.ctl_ok(0, &["connect", "other", &c1]);
    w.ctl_ok(0, &["disconnect", "dual", &c1]);
    let r4 = String::from_utf8_lossy(&in_ns(&c1, "ip route show default").stdout).into_owned();
    assert!(r4.contains("via 10.81.0.1"), "{r4}");
    let r6 = String::from_utf8_lossy(&in_ns(&c1, "ip -6 route show default").stdout).into_owned();
    assert!(r6.contains("via fd00:81::1"), "IPv6 default route moved: {r6}");
    assert!(ping(&c1, "fd00:81::2"), "v6 on the next network");
}
