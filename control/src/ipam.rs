//! Address management for one host: picks free subnets for new networks and free
//! addresses for endpoints. Pure functions over the desired state; the caller holds
//! the state lock, so two requests never get the same address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::model::{Ipv4Cidr, Network};

/// Where `network create` without `--subnet` takes a subnet from (Docker's default
/// pools): 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s.
pub fn default_pool() -> impl Iterator<Item = Ipv4Cidr> {
    let a = (17u8..=31).map(|b| Ipv4Cidr { addr: Ipv4Addr::new(172, b, 0, 0), prefix_len: 16 });
    let b = (0u8..16).map(|i| Ipv4Cidr { addr: Ipv4Addr::new(192, 168, i * 16, 0), prefix_len: 20 });
    a.chain(b)
}

/// The first default-pool subnet that overlaps none of `existing`.
pub fn pick_subnet(existing: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    default_pool().find(|c| existing.iter().all(|e| !e.overlaps(c)))
}

/// Addresses IPAM never hands out on `net`: the network and broadcast addresses and
/// the gateway.
pub fn is_reserved(net: &Network, ip: Ipv4Addr) -> bool {
    ip == net.subnet.network() || ip == net.subnet.broadcast() || ip == net.gateway
}

/// The lowest free address of the network's `--ip-range` (or subnet).
pub fn allocate(net: &Network, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, String> {
    let range = net.ip_range.unwrap_or(net.subnet).trunc();
    let start = u32::from(range.network());
    let end = u32::from(range.broadcast());
    (start..=end)
        .map(Ipv4Addr::from)
        .find(|ip| net.subnet.contains(*ip) && !is_reserved(net, *ip) && !used.contains(ip))
        .ok_or_else(|| format!("network {}: no free address left in {range}", net.name))
}

/// The address for `--ip` if given (`requested`, checked), else the lowest free one.
pub fn choose(net: &Network, requested: Option<&str>, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, String> {
    match requested {
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| format!("--ip {s:?}: not an IPv4 address"))?;
            check_requested(net, ip, used)?;
            Ok(ip)
        }
        None => allocate(net, used),
    }
}

/// Checks an address asked for with `--ip`.
pub fn check_requested(net: &Network, ip: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Result<(), String> {
    if !net.subnet.contains(ip) {
        return Err(format!("--ip {ip}: not in the subnet {} of network {}", net.subnet.trunc(), net.name));
    }
    if ip == net.gateway {
        return Err(format!("--ip {ip}: is the gateway of network {}", net.name));
    }
    if ip == net.subnet.network() || ip == net.subnet.broadcast() {
        return Err(format!("--ip {ip}: is the network or broadcast address of {}", net.subnet.trunc()));
    }
    if used.contains(&ip) {
        return Err(format!("--ip {ip}: already in use on network {}", net.name));
    }
    Ok(())
}

/// The lowest free IPv6 address of the network's IPv6 subnet (skipping the
/// subnet-router anycast address and the gateway). Looks at the first 65,536.
pub fn allocate6(net: &Network, used: &BTreeSet<std::net::Ipv6Addr>) -> Result<std::net::Ipv6Addr, String> {
    let Some(sub) = net.subnet6 else { return Err(format!("network {} has no IPv6 subnet", net.name)) };
    // From the --ip-range sub-range if there is one (the subnet-router address, the
    // range's first when it starts the subnet, is skipped either way).
    let from = net.ip_range6.unwrap_or(sub);
    let base = u128::from(from.network());
    let size = if from.prefix_len >= 128 { 1 } else { 1u128 << (128 - from.prefix_len as u32).min(127) };
    (0..size.min(65536))
        .filter(|i| base + i != u128::from(sub.network()))
        .map(|i| std::net::Ipv6Addr::from(base + i))
        .find(|ip| Some(*ip) != net.gateway6 && !used.contains(ip))
        .ok_or_else(|| format!("network {}: no free IPv6 address left in {from}", net.name))
}

/// Checks an address asked for with `--ip6`.
pub fn check_requested6(net: &Network, ip: std::net::Ipv6Addr, used: &BTreeSet<std::net::Ipv6Addr>) -> Result<(), String> {
    let Some(sub) = net.subnet6 else { return Err(format!("--ip6 {ip}: network {} has no IPv6 subnet (create it with --ipv6)", net.name)) };
    if !sub.contains(ip) {
        return Err(format!("--ip6 {ip}: not in the subnet {} of network {}", sub, net.name));
    }
    if Some(ip) == net.gateway6 || ip == sub.network() {
        return Err(format!("--ip6 {ip}: is the gateway or subnet-router address of {}", net.name));
    }
    if used.contains(&ip) {
        return Err(format!("--ip6 {ip}: already in use on network {}", net.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(subnet: &str, gw: &str, range: Option<&str>) -> Network {
        Network {
            name: "n".into(),
            id: String::new(),
            net_id: 1,
            subnet: subnet.parse().unwrap(),
            gateway: gw.parse().unwrap(),
            gateway_mac: Default::default(),
            ip_range: range.map(|r| r.parse().unwrap()),
            mtu: 1500,
            mac_table_size: 1,
            mac_aging: 1,
            created: 0,
            internal: false,
            icc: true,
            subnet6: None,
            gateway6: None,
            ip_range6: None,
            driver: crate::model::Driver::Bridge,
            encap: None,
            vni: None,
            range: None,
        }
    }

    #[test]
    fn allocates_lowest_free_skipping_reserved() {
        let n = net("10.0.0.0/29", "10.0.0.1", None);
        let mut used = BTreeSet::new();
        let mut got = vec![];
        while let Ok(ip) = allocate(&n, &used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert!(allocate(&n, &used).unwrap_err().contains("no free address"));
        used.remove(&"10.0.0.4".parse().unwrap());
        assert_eq!(allocate(&n, &used).unwrap().to_string(), "10.0.0.4", "freed address reused");
    }

    #[test]
    fn honours_ip_range_and_gateway_inside_it() {
        let n = net("10.0.0.0/24", "10.0.0.129", Some("10.0.0.128/30"));
        let mut used = BTreeSet::new();
        let a = allocate(&n, &used).unwrap();
        used.insert(a);
        let b = allocate(&n, &used).unwrap();
        used.insert(b);
        assert_eq!((a.to_string(), b.to_string()), ("10.0.0.128".into(), "10.0.0.130".into()));
        let c = allocate(&n, &used).unwrap();
        assert_eq!(c.to_string(), "10.0.0.131");
    }

    #[test]
    fn ipv6_from_the_subnet_or_its_range() {
        let mut n = net("10.0.0.0/24", "10.0.0.1", None);
        n.subnet6 = Some("fd00:1::/64".parse().unwrap());
        n.gateway6 = Some("fd00:1::1".parse().unwrap());
        let used = BTreeSet::new();
        assert_eq!(allocate6(&n, &used).unwrap().to_string(), "fd00:1::2", "skips the subnet-router and gateway addresses");
        n.ip_range6 = Some("fd00:1::8000/113".parse().unwrap());
        let a = allocate6(&n, &used).unwrap();
        assert_eq!(a.to_string(), "fd00:1::8000", "from the range");
        let used: BTreeSet<_> = [a].into();
        assert_eq!(allocate6(&n, &used).unwrap().to_string(), "fd00:1::8001");
    }

    #[test]
    fn requested_addresses_checked() {
        let n = net("10.0.0.0/24", "10.0.0.1", None);
        let used: BTreeSet<Ipv4Addr> = ["10.0.0.5".parse().unwrap()].into();
        assert!(check_requested(&n, "10.0.0.9".parse().unwrap(), &used).is_ok());
        assert!(check_requested(&n, "10.0.1.9".parse().unwrap(), &used).unwrap_err().contains("not in the subnet"));
        assert!(check_requested(&n, "10.0.0.5".parse().unwrap(), &used).unwrap_err().contains("in use"));
        assert!(check_requested(&n, "10.0.0.1".parse().unwrap(), &used).unwrap_err().contains("gateway"));
        assert!(check_requested(&n, "10.0.0.255".parse().unwrap(), &used).unwrap_err().contains("broadcast"));
    }

    #[test]
    fn default_subnets_avoid_existing() {
        let first = pick_subnet(&[]).unwrap();
        assert_eq!(first.to_string(), "172.17.0.0/16");
        let second = pick_subnet(&[first, "172.18.5.0/24".parse().unwrap()]).unwrap();
        assert_eq!(second.to_string(), "172.19.0.0/16");
    }
}
