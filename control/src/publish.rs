//! Published ports: Docker's `-p [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]`
//! parsed into one-to-one mappings, with ephemeral host ports picked from a range and
//! conflicts refused. Pure functions; the controller holds the state lock.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port: `host_ip:host_port/proto` → the endpoint's `container_port`.
/// `host_ip` None means every address the switch owns (the uplink address and, through
/// the userland proxy, 127.0.0.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: Proto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl fmt::Display for PortMapping {
    /// Like `docker port`: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} -> {}:{}", self.container_port, self.proto, self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), self.host_port)
    }
}

/// A parsed `-p` value before host ports are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishSpec {
    pub proto: Proto,
    pub host_ip: Option<Ipv4Addr>,
    /// Host port range; None: ephemeral ports.
    pub host_ports: Option<(u16, u16)>,
    pub container_ports: (u16, u16),
}

fn port_range(s: &str, what: &str, spec: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("-p {spec:?}: {what} {p:?} is not a port (1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(format!("-p {spec:?}: {what} range {a}-{b} is backwards"));
            }
            Ok((a, b))
        }
        None => {
            let p = one(s)?;
            Ok((p, p))
        }
    }
}

impl FromStr for PublishSpec {
    type Err = String;
    fn from_str(spec: &str) -> Result<PublishSpec, String> {
        let (body, proto) = match spec.rsplit_once('/') {
            Some((b, "tcp")) => (b, Proto::Tcp),
            Some((b, "udp")) => (b, Proto::Udp),
            Some((_, p)) => return Err(format!("-p {spec:?}: protocol {p:?} is not tcp or udp")),
            None => (spec, Proto::Tcp),
        };
        // Docker's IPv6 form: [ADDR]:HOST_PORT:CONTAINER_PORT.
        if let Some(rest) = body.strip_prefix('[') {
            let addr = rest.split_once(']').map_or(rest, |(a, _)| a);
            return Err(match addr.parse::<std::net::Ipv6Addr>() {
                Ok(_) => format!("-p {spec:?}: IPv6 host addresses are not published (the uplink and NAT are IPv4); give an IPv4 address or none"),
                Err(_) => format!("-p {spec:?}: {addr:?} is not an IPv6 address"),
            });
        }
        let parts: Vec<&str> = body.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| format!("-p {spec:?}: {ip:?} is not an IPv4 address"))?;
                (Some(ip), if h.is_empty() { None } else { Some(*h) }, *c)
            }
            _ => return Err(format!("-p {spec:?}: want [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]")),
        };
        let container_ports = port_range(container, "container port", spec)?;
        let host_ports = match host {
            None => None,
            Some(h) => {
                let r = port_range(h, "host port", spec)?;
                let (hn, cn) = (r.1 - r.0, container_ports.1 - container_ports.0);
                // A host range for one container port means "any free port of the range".
                if hn != cn && cn != 0 {
                    return Err(format!("-p {spec:?}: host and container port ranges differ in length"));
                }
                Some(r)
            }
        };
        let host_ip = host_ip.filter(|ip| !ip.is_unspecified());
        Ok(PublishSpec { proto, host_ip, host_ports, container_ports })
    }
}

/// Whether two host addresses (None = all) overlap.
fn ip_overlap(a: Option<Ipv4Addr>, b: Option<Ipv4Addr>) -> bool {
    a.is_none() || b.is_none() || a == b
}

/// Turns specs into mappings, picking ephemeral host ports from `ephemeral` and
/// refusing ports already taken by `taken` (or by earlier specs of the same request).
/// `owner` names who holds a taken port, for the error message.
pub fn allocate(
    specs: &[PublishSpec],
    taken: &[(PortMapping, String)],
    ephemeral: (u16, u16),
) -> Result<Vec<PortMapping>, String> {
    let mut out: Vec<PortMapping> = Vec::new();
    let conflict = |out: &[PortMapping], proto: Proto, ip: Option<Ipv4Addr>, port: u16| -> Option<String> {
        if let Some((_, who)) = taken.iter().find(|(m, _)| m.proto == proto && m.host_port == port && ip_overlap(m.host_ip, ip)) {
            return Some(who.clone());
        }
        if out.iter().any(|m| m.proto == proto && m.host_port == port && ip_overlap(m.host_ip, ip)) {
            return Some("this request".to_string());
        }
        None
    };
    for s in specs {
        let count = s.container_ports.1 - s.container_ports.0;
        match s.host_ports {
            Some((a, b)) if b - a == count => {
                for i in 0..=count {
                    let hp = a + i;
                    if let Some(who) = conflict(&out, s.proto, s.host_ip, hp) {
                        return Err(format!("port {hp}/{} is already published by {who}", s.proto));
                    }
                    out.push(PortMapping { proto: s.proto, host_ip: s.host_ip, host_port: hp, container_port: s.container_ports.0 + i });
                }
            }
            Some((a, b)) => {
                // One container port, any free host port of the range.
                let hp = (a..=b)
                    .find(|p| conflict(&out, s.proto, s.host_ip, *p).is_none())
                    .ok_or_else(|| format!("no free host port in {a}-{b}/{}", s.proto))?;
                out.push(PortMapping { proto: s.proto, host_ip: s.host_ip, host_port: hp, container_port: s.container_ports.0 });
            }
            None => {
                for i in 0..=count {
                    let hp = (ephemeral.0..=ephemeral.1)
                        .find(|p| conflict(&out, s.proto, s.host_ip, *p).is_none())
                        .ok_or_else(|| format!("no free ephemeral port left in {}-{}", ephemeral.0, ephemeral.1))?;
                    out.push(PortMapping { proto: s.proto, host_ip: s.host_ip, host_port: hp, container_port: s.container_ports.0 + i });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PublishSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_docker_forms() {
        assert_eq!(p("80"), PublishSpec { proto: Proto::Tcp, host_ip: None, host_ports: None, container_ports: (80, 80) });
        assert_eq!(p("8080:80").host_ports, Some((8080, 8080)));
        assert_eq!(p("8080:80/udp").proto, Proto::Udp);
        assert_eq!(p("127.0.0.1:8080:80").host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p("127.0.0.1::80").host_ports, None);
        assert_eq!(p("0.0.0.0:8080:80").host_ip, None);
        assert_eq!(p("8000-8002:80-82").container_ports, (80, 82));
        assert_eq!(p("8000-8010:80").host_ports, Some((8000, 8010)));
        for bad in ["", "0", "70000", "80/sctp", "a:80", "1.2.3:80:80", "8000-8001:80-83", "82-80", "1:2:3:4"] {
            assert!(bad.parse::<PublishSpec>().is_err(), "{bad:?} accepted");
        }
        assert!("80/sctp".parse::<PublishSpec>().unwrap_err().contains("protocol"));
        let e = "[::]:8080:80".parse::<PublishSpec>().unwrap_err();
        assert!(e.contains("IPv6 host addresses are not published"), "{e}");
        let e = "[::1]::80/udp".parse::<PublishSpec>().unwrap_err();
        assert!(e.contains("IPv6 host addresses are not published"), "{e}");
        assert!("[zz]:80:80".parse::<PublishSpec>().unwrap_err().contains("\"zz\" is not an IPv6 address"));
    }

    #[test]
    fn allocates_and_refuses_conflicts() {
        let taken = vec![(PortMapping { proto: Proto::Tcp, host_ip: None, host_port: 8080, container_port: 80 }, "sandbox c1".to_string())];
        let e = allocate(&[p("8080:80")], &taken, (49153, 49160)).unwrap_err();
        assert!(e.contains("8080/tcp is already published by sandbox c1"), "{e}");
        // Same port, other protocol is fine.
        assert!(allocate(&[p("8080:80/udp")], &taken, (49153, 49160)).is_ok());
        // Ranges map one to one.
        let m = allocate(&[p("9000-9001:90-91")], &taken, (49153, 49160)).unwrap();
        assert_eq!(m.iter().map(|m| (m.host_port, m.container_port)).collect::<Vec<_>>(), vec![(9000, 90), (9001, 91)]);
        // Ephemeral ports skip taken ones, also within one request.
        let t2 = vec![(PortMapping { proto: Proto::Tcp, host_ip: None, host_port: 49153, container_port: 1 }, "x".to_string())];
        let m = allocate(&[p("80"), p("81")], &t2, (49153, 49160)).unwrap();
        assert_eq!(m.iter().map(|m| m.host_port).collect::<Vec<_>>(), vec![49154, 49155]);
        // A host range for one container port takes the first free one.
        let m = allocate(&[p("8080-8082:80")], &taken, (49153, 49160)).unwrap();
        assert_eq!(m[0].host_port, 8081);
        // Exhaustion.
        assert!(allocate(&[p("80-90")], &[], (49153, 49155)).unwrap_err().contains("no free ephemeral"));
        // Duplicates inside one request.
        assert!(allocate(&[p("7000:70"), p("7000:71")], &[], (1, 2)).is_err());
        assert_eq!(m[0].to_string(), "80/tcp -> 0.0.0.0:8081");
    }
}
