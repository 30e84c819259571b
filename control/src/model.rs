//! Typed desired state: networks, sandboxes, endpoints and attached ports, as
//! persisted in the state directory. Values are typed (`Ipv4Cidr`, `MacAddr`, names
//! checked on the way in); nothing here touches the kernel or the dataplane.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use dataplane::wire::MacAddr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 prefix, e.g. 10.10.0.0/24. The address may have host bits set (an
/// interface address with its prefix); `network()` clears them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Cidr, String> {
        if prefix_len > 32 {
            return Err(format!("prefix length {prefix_len} is more than 32"));
        }
        Ok(Ipv4Cidr { addr, prefix_len })
    }

    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The prefix with host bits cleared.
    pub fn trunc(&self) -> Ipv4Cidr {
        Ipv4Cidr { addr: self.network(), prefix_len: self.prefix_len }
    }

    pub fn is_network_address(&self) -> bool {
        self.addr == self.network()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// `other` lies entirely inside this prefix.
    pub fn contains_cidr(&self, other: &Ipv4Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.network())
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// Number of addresses.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix_len as u32)
    }
}

/// What special-purpose range `c` overlaps, if any: ranges that cannot be a network's
/// subnet ("this network", loopback, link-local, multicast, reserved and broadcast).
pub fn special_ipv4(c: &Ipv4Cidr) -> Option<&'static str> {
    const SPECIAL: [(Ipv4Addr, u8, &str); 5] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8, "0.0.0.0/8 (\"this network\")"),
        (Ipv4Addr::new(127, 0, 0, 0), 8, "127.0.0.0/8 (loopback)"),
        (Ipv4Addr::new(169, 254, 0, 0), 16, "169.254.0.0/16 (link-local)"),
        (Ipv4Addr::new(224, 0, 0, 0), 4, "224.0.0.0/4 (multicast)"),
        (Ipv4Addr::new(240, 0, 0, 0), 4, "240.0.0.0/4 (reserved and broadcast)"),
    ];
    SPECIAL.iter().find(|(a, l, _)| Ipv4Cidr { addr: *a, prefix_len: *l }.overlaps(c)).map(|x| x.2)
}

/// The IPv6 counterpart of [`special_ipv4`]: unspecified/loopback, IPv4-mapped,
/// link-local (every link has its own) and multicast.
pub fn special_ipv6(c: &Ipv6Cidr) -> Option<&'static str> {
    const SPECIAL: [(std::net::Ipv6Addr, u8, &str); 4] = [
        (std::net::Ipv6Addr::UNSPECIFIED, 127, "::/127 (unspecified and loopback)"),
        (std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96, "::ffff:0:0/96 (IPv4-mapped)"),
        (std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "fe80::/10 (link-local)"),
        (std::net::Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "ff00::/8 (multicast)"),
    ];
    SPECIAL.iter().find(|(a, l, _)| Ipv6Cidr { addr: *a, prefix_len: *l }.overlaps(c)).map(|x| x.2)
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Ipv4Cidr, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| "missing /PREFIX (want e.g. 10.10.0.0/24)".to_string())?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix_len: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix length"))?;
        Ipv4Cidr::new(addr, prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv6 prefix, e.g. fd00:10::/64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Cidr {
    pub addr: std::net::Ipv6Addr,
    pub prefix_len: u8,
}

impl Ipv6Cidr {
    pub fn mask(&self) -> u128 {
        if self.prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix_len as u32)
        }
    }
    pub fn network(&self) -> std::net::Ipv6Addr {
        (u128::from(self.addr) & self.mask()).into()
    }
    pub fn is_network_address(&self) -> bool {
        self.addr == self.network()
    }
    pub fn contains(&self, ip: std::net::Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.network())
    }
    pub fn overlaps(&self, o: &Ipv6Cidr) -> bool {
        self.contains(o.network()) || o.contains(self.network())
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Ipv6Cidr, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| "missing /PREFIX (want e.g. fd00:10::/64)".to_string())?;
        let addr: std::net::Ipv6Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv6 address"))?;
        let prefix_len: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix length"))?;
        if prefix_len > 128 {
            return Err(format!("prefix length {prefix_len} is more than 128"));
        }
        Ok(Ipv6Cidr { addr, prefix_len })
    }
}

impl Serialize for Ipv6Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv6Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for `MacAddr` as text.
pub mod mac_serde {
    use super::*;
    pub fn serialize<S: Serializer>(m: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Network driver (Docker's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// One host.
    #[default]
    Bridge,
    /// Spans hosts through tunnels.
    Overlay,
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bridge" => Ok(Driver::Bridge),
            "overlay" => Ok(Driver::Overlay),
            _ => Err(format!("{s:?} is not a driver (want bridge or overlay)")),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Bridge => "bridge",
            Driver::Overlay => "overlay",
        })
    }
}

/// Encapsulation of an overlay network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// RFC 7348, UDP 4789: Ethernet over UDP.
    #[default]
    Vxlan,
    /// RFC 2784/2890, IP protocol 47, Transparent Ethernet Bridging with a key.
    Gre,
    /// IP packets over UDP 8285 (Flannel's udp backend): routed, one subnet per host.
    Udp,
    /// Ethernet over the encrypted mesh (`--encrypted`): Noise sessions between hosts,
    /// relayed where two hosts cannot reach each other.
    Mesh,
}

impl FromStr for Encap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(Encap::Vxlan),
            "gre" => Ok(Encap::Gre),
            "udp" => Ok(Encap::Udp),
            "mesh" => Ok(Encap::Mesh),
            _ => Err(format!("{s:?} is not an encapsulation (want vxlan, gre, udp or mesh)")),
        }
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encap::Vxlan => "vxlan",
            Encap::Gre => "gre",
            Encap::Udp => "udp",
            Encap::Mesh => "mesh",
        })
    }
}

/// The VNI a network gets when none is given: derived from its name, so that hosts
/// without a cluster store agree on it (4096 and up, like Docker's overlay driver).
pub fn default_vni(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    4096 + h % (0x00ff_ffff - 4096)
}

/// How an endpoint's interface is realised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// A veth pair: the sandbox end is the endpoint, the host end is read with AF_PACKET.
    #[default]
    Veth,
    /// A TAP device opened by the dataplane and moved into the sandbox.
    Tap,
}

impl FromStr for EndpointKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "veth" => Ok(EndpointKind::Veth),
            "tap" => Ok(EndpointKind::Tap),
            _ => Err(format!("{s:?} is not a port kind (want veth or tap)")),
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointKind::Veth => "veth",
            EndpointKind::Tap => "tap",
        })
    }
}

/// How an interface attached with `port add` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// An existing interface, read with AF_PACKET (like `ovs-vsctl add-port`).
    #[default]
    System,
    /// A TAP device the dataplane creates and opens itself (like a VDE/OVS tap port).
    Tap,
}

impl FromStr for PortKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" | "afpacket" => Ok(PortKind::System),
            "tap" => Ok(PortKind::Tap),
            _ => Err(format!("{s:?} is not a port type (want system or tap)")),
        }
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::System => "system",
            PortKind::Tap => "tap",
        })
    }
}

/// One L2 segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// 64 hex digits, like Docker's network ids.
    pub id: String,
    /// Dataplane network number.
    pub net_id: u16,
    pub subnet: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    #[serde(with = "mac_serde")]
    pub gateway_mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Cidr>,
    pub mtu: u32,
    pub mac_table_size: u32,
    pub mac_aging: u32,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// No route to the uplink and no published ports (`--internal`).
    #[serde(default)]
    pub internal: bool,
    /// Sandboxes of this network may talk to each other (`--icc`, default true); when
    /// false they reach only the gateway.
    #[serde(default = "yes")]
    pub icc: bool,
    /// Dual stack (`--ipv6`): the IPv6 subnet and gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// IPv6 addresses are allocated from this sub-range (`--ip-range` with an IPv6 prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range6: Option<Ipv6Cidr>,
    #[serde(default)]
    pub driver: Driver,
    /// Overlay networks: the encapsulation and its id (VNI for VXLAN, key for GRE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<Encap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Routed overlay (`--encap udp`): the network's whole range; `subnet` is then this
    /// host's share of it (leased in the cluster store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Ipv4Cidr>,
}

fn yes() -> bool {
    true
}

/// A network namespace managed by vswitchd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub name: String,
    pub id: String,
    pub created: u64,
    /// `--hostname` (default: the first 12 digits of the id, as Docker does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--dns`: upstream servers for names that are not local (default: the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// `--dns-search`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--dns-option`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
}

impl Sandbox {
    pub fn hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| self.id.chars().take(12).collect())
    }
}

/// A sandbox's interface on a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network: String,
    pub sandbox: String,
    /// Name inside the sandbox (eth0, eth1, …).
    pub ifname: String,
    /// Name of the switch-side interface: the veth's host end, or the TAP's name before
    /// it moved into the sandbox.
    pub host_ifname: String,
    pub kind: EndpointKind,
    #[serde(with = "mac_serde")]
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Dataplane port number.
    pub port_id: u16,
    /// This endpoint carries the sandbox's default route.
    #[serde(default)]
    pub default_route: bool,
    /// Ports published with `-p`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<crate::publish::PortMapping>,
    /// DNS aliases on this network (`--alias`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// IPv6 address on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
}

/// An interface attached to a network with `port add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedPort {
    pub network: String,
    pub ifname: String,
    pub kind: PortKind,
    pub port_id: u16,
    /// `--dhcp`: the gateway hands this address out by DHCP to what is behind the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<PortDhcp>,
    /// A switch-made TAP moved into this named namespace by hand (a VM manager's
    /// doing), noticed while running: reopened there at a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// A port's DHCP binding: the address is reserved in the network's IPAM like an
/// endpoint's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDhcp {
    pub ip: Ipv4Addr,
    /// DNS servers handed out (`--dns`); empty: the host's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
}

/// Everything vswitchd keeps across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub networks: BTreeMap<String, Network>,
    pub sandboxes: BTreeMap<String, Sandbox>,
    /// By endpoint id.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// By interface name.
    pub ports: BTreeMap<String, AttachedPort>,
    /// The cluster store this host last synchronised with (`--cluster`): its overlay
    /// networks are that store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterMark>,
}

/// Which cluster store a host's overlay networks came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMark {
    /// The `--cluster` URL it was joined with.
    pub url: String,
    /// The store's identity (a random id kept in the store itself): another one means
    /// the store lost its data, or is another cluster.
    pub store_id: String,
}

pub const STATE_VERSION: u32 = 1;

impl State {
    pub fn endpoints_of_network<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.values().filter(move |e| e.network == net)
    }

    pub fn endpoints_of_sandbox<'a>(&'a self, sb: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.values().filter(move |e| e.sandbox == sb)
    }

    pub fn ports_of_network<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a AttachedPort> + 'a {
        self.ports.values().filter(move |p| p.network == net)
    }

    /// IPv4 addresses taken on a network: its endpoints' and its DHCP ports'.
    pub fn used_ipv4(&self, net: &str) -> std::collections::BTreeSet<Ipv4Addr> {
        self.endpoints_of_network(net).map(|e| e.ip).chain(self.ports_of_network(net).filter_map(|p| p.dhcp.as_ref().map(|d| d.ip))).collect()
    }

    pub fn endpoint(&self, net: &str, sb: &str) -> Option<&Endpoint> {
        self.endpoints.values().find(|e| e.network == net && e.sandbox == sb)
    }

    /// Every dataplane port id in use.
    pub fn used_port_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.endpoints.values().map(|e| e.port_id).chain(self.ports.values().map(|p| p.port_id))
    }
}

/// Checks a user-chosen name (network, sandbox): 1-64 of [A-Za-z0-9_.-], starting
/// with a letter or digit.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{what} name {name:?} must be 1 to 64 characters"));
    }
    let first = name.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err(format!("{what} name {name:?} must start with a letter or digit"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(format!("{what} name {name:?} contains {c:?} (allowed: letters, digits, _ . -)"));
    }
    // Names are DNS names too (NAME, NAME.NETWORK, aliases): no empty label, none longer
    // than a DNS label's 63 characters.
    if name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!("{what} name {name:?}: each dot-separated part must be 1 to 63 characters (a DNS label)"));
    }
    Ok(())
}

/// Checks a kernel interface name: 1-15 bytes, no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("interface name {name:?} must be 1 to 15 characters"));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("interface name {name:?} is not valid"));
    }
    Ok(())
}

/// 64 random hex digits.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    // SAFETY: getrandom writes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_basics() {
        let c: Ipv4Cidr = "10.10.0.7/24".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(10, 10, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 10, 0, 255));
        assert!(!c.is_network_address());
        assert!(c.contains("10.10.0.200".parse().unwrap()));
        assert!(!c.contains("10.10.1.1".parse().unwrap()));
        let big: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(big.overlaps(&c) && c.overlaps(&big));
        assert!(big.contains_cidr(&c.trunc()));
        assert!(!c.overlaps(&"10.10.1.0/24".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Cidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().mask(), 0);
    }

    #[test]
    fn vni_from_name_is_stable_and_in_range() {
        assert_eq!(default_vni("web"), default_vni("web"));
        assert_ne!(default_vni("web"), default_vni("db"));
        for n in ["a", "web", "a-very-long-network-name"] {
            let v = default_vni(n);
            assert!((4096..0x00ff_ffff).contains(&v));
        }
    }

    #[test]
    fn special_ranges_are_named() {
        let v4 = |s: &str| special_ipv4(&s.parse().unwrap());
        assert_eq!(v4("127.0.0.0/24"), Some("127.0.0.0/8 (loopback)"));
        assert_eq!(v4("224.0.0.0/24"), Some("224.0.0.0/4 (multicast)"));
        assert_eq!(v4("169.254.1.0/24"), Some("169.254.0.0/16 (link-local)"));
        assert!(v4("0.0.0.0/0").is_some() && v4("255.255.255.252/30").is_some() && v4("0.1.0.0/16").is_some());
        assert!(v4("10.0.0.0/8").is_none() && v4("172.17.0.0/16").is_none() && v4("223.255.255.0/24").is_none());
        let v6 = |s: &str| special_ipv6(&s.parse().unwrap());
        assert_eq!(v6("ff02::/64"), Some("ff00::/8 (multicast)"));
        assert!(v6("fe80::/64").is_some() && v6("::/126").is_some() && v6("::ffff:10.0.0.0/120").is_some());
        assert!(v6("fd00:10::/64").is_none() && v6("2001:db8::/64").is_none());
    }

    #[test]
    fn cidr6() {
        let c: Ipv6Cidr = "fd00:10::5/64".parse().unwrap();
        assert_eq!(c.network().to_string(), "fd00:10::");
        assert!(!c.is_network_address());
        assert!(c.contains("fd00:10::ffff".parse().unwrap()));
        assert!(!c.contains("fd00:11::1".parse().unwrap()));
        assert!(c.overlaps(&"fd00::/16".parse().unwrap()));
        assert!("fd00::/129".parse::<Ipv6Cidr>().is_err());
        assert!("10.0.0.0/8".parse::<Ipv6Cidr>().is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("network", "web").is_ok());
        assert!(validate_name("network", "my_net-2.x").is_ok());
        assert!(validate_name("network", "").is_err());
        assert!(validate_name("network", "-x").is_err());
        assert!(validate_name("network", "a/b").is_err());
        // DNS labels: none empty, none over 63.
        assert!(validate_name("alias", "a..b").is_err() && validate_name("alias", "a.").is_err());
        assert!(validate_name("sandbox", &"b".repeat(64)).is_err());
        assert!(validate_name("sandbox", &"b".repeat(63)).is_ok());
        assert!(validate_name("alias", &format!("{}.{}", "a".repeat(31), "b".repeat(32))).is_ok());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a_very_long_ifname").is_err());
    }

    #[test]
    fn state_roundtrip() {
        let mut s = State { version: STATE_VERSION, ..Default::default() };
        s.networks.insert(
            "web".into(),
            Network {
                name: "web".into(),
                id: random_id(),
                net_id: 1,
                subnet: "10.10.0.0/24".parse().unwrap(),
                gateway: "10.10.0.1".parse().unwrap(),
                gateway_mac: "02:00:00:00:00:01".parse().unwrap(),
                ip_range: None,
                mtu: 1500,
                mac_table_size: 65536,
                mac_aging: 300,
                created: 1,
                internal: false,
                icc: true,
                subnet6: None,
                gateway6: None,
                ip_range6: None,
                driver: Driver::Bridge,
                encap: None,
                vni: None,
                range: None,
            },
        );
        let j = serde_json::to_string(&s).unwrap();
        let back: State = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        assert_eq!(random_id().len(), 64);
    }
}
