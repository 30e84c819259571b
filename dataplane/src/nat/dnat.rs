//! Published ports (`-p [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END]/PROTO`) and the
//! helper that turns them and the caller's routing facts into an [`Action`].
//!
//! Owns: an immutable rule set, built by control and published to workers (e.g. inside
//! the table snapshot); lookups never allocate. Consulted only for new flows.

use std::net::Ipv4Addr;

use super::{Action, Tuple, IPPROTO_TCP, IPPROTO_UDP};

/// One published port range: `host_port..=host_port_end` on `host_ip` (or every host
/// address) maps one-to-one onto `to_port..` of the sandbox address `to_ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnatRule {
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// The host address the rule listens on; `None` (or 0.0.0.0) for all of them.
    pub host_ip: Option<Ipv4Addr>,
    /// First host port of the range.
    pub host_port: u16,
    /// Last host port of the range (equal to `host_port` for a single port).
    pub host_port_end: u16,
    /// The sandbox address.
    pub to_ip: Ipv4Addr,
    /// Sandbox port for `host_port`; the range continues from here.
    pub to_port: u16,
}

impl DnatRule {
    /// A single-port rule.
    pub fn single(proto: u8, host_ip: Option<Ipv4Addr>, host_port: u16, to_ip: Ipv4Addr, to_port: u16) -> DnatRule {
        DnatRule { proto, host_ip, host_port, host_port_end: host_port, to_ip, to_port }
    }

    /// The listening address as a sort key: 0 for "every address".
    fn ip_key(&self) -> u32 {
        self.host_ip.map_or(0, u32::from)
    }
}

/// Why [`DnatTable::new`] refused a rule set (retrying the same rules does not help).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnatError {
    /// The protocol is neither TCP nor UDP.
    Proto(DnatRule),
    /// `host_port_end < host_port`, or the sandbox range would pass port 65535.
    Range(DnatRule),
    /// Two rules claim the same protocol, address and port.
    Overlap(DnatRule, DnatRule),
}

impl std::fmt::Display for DnatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnatError::Proto(r) => write!(f, "published port: protocol {} is not tcp or udp", r.proto),
            DnatError::Range(r) => write!(f, "published port: bad range {}-{} -> {}", r.host_port, r.host_port_end, r.to_port),
            DnatError::Overlap(a, b) => write!(f, "published ports overlap: {}-{} and {}-{}", a.host_port, a.host_port_end, b.host_port, b.host_port_end),
        }
    }
}

impl std::error::Error for DnatError {}

/// The published ports of one host, immutable once built. Lookup is O(log n): rules
/// are sorted by (protocol, listening address, first port) and do not overlap within
/// one (protocol, address); a rule for a specific address wins over one for every
/// address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnatTable {
    rules: Vec<DnatRule>,
}

impl DnatTable {
    /// Validates and indexes `rules` (control plane; allocates).
    pub fn new(mut rules: Vec<DnatRule>) -> Result<DnatTable, DnatError> {
        for r in &rules {
            if r.proto != IPPROTO_TCP && r.proto != IPPROTO_UDP {
                return Err(DnatError::Proto(*r));
            }
            if r.host_port_end < r.host_port || r.to_port as u32 + (r.host_port_end - r.host_port) as u32 > 65535 {
                return Err(DnatError::Range(*r));
            }
        }
        rules.sort_by_key(|r| (r.proto, r.ip_key(), r.host_port));
        for w in rules.windows(2) {
            if (w[0].proto, w[0].ip_key()) == (w[1].proto, w[1].ip_key()) && w[1].host_port <= w[0].host_port_end {
                return Err(DnatError::Overlap(w[0], w[1]));
            }
        }
        Ok(DnatTable { rules })
    }

    /// The rules, sorted.
    pub fn rules(&self) -> &[DnatRule] {
        &self.rules
    }

    /// Where a new flow of `proto` to `dst`:`port` goes, if it hits a published port.
    /// The caller checks first that `dst` is one of the host's own addresses.
    pub fn lookup(&self, proto: u8, dst: Ipv4Addr, port: u16) -> Option<(Ipv4Addr, u16)> {
        let ip = u32::from(dst);
        let specific = if ip != 0 { self.find(proto, ip, port) } else { None };
        specific.or_else(|| self.find(proto, 0, port))
    }

    fn find(&self, proto: u8, ip: u32, port: u16) -> Option<(Ipv4Addr, u16)> {
        let key = (proto, ip, port);
        let i = self.rules.partition_point(|r| (r.proto, r.ip_key(), r.host_port) <= key);
        let r = self.rules.get(i.checked_sub(1)?)?;
        if r.proto != proto || r.ip_key() != ip || port > r.host_port_end {
            return None;
        }
        Some((r.to_ip, r.to_port + (port - r.host_port)))
    }
}

/// What the caller's routing knows about a new flow, for [`nat_action`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyInput {
    /// The destination is one of the host's own addresses (the uplink address or a
    /// gateway address): published ports apply.
    pub to_host: bool,
    /// The flow leaves through the uplink from a network that masquerades: its source
    /// becomes this address (the uplink's).
    pub masquerade: Option<Ipv4Addr>,
    /// The flow comes from a sandbox: if it hits a published port, its source also
    /// becomes this address (hairpin), so the reply comes back through the switch even
    /// when the target sandbox could reach the source directly.
    pub hairpin_snat: Option<Ipv4Addr>,
    /// The packet has a way on as it is (a sandbox's flow to a foreign address, routed
    /// before translation). Without it a new flow to a foreign address is denied: from
    /// the uplink only published ports and replies get in, and a flow that would be
    /// dropped after translation must not take a connection-table entry (stray packets
    /// from the outside segment filled the table, refusing every new flow).
    pub routed: bool,
}

/// The Docker-bridge decision for a new flow `t`:
/// - to a host address and a published port: [`Action::Dnat`], or [`Action::DnatSnat`]
///   with `hairpin_snat` when the flow comes from a sandbox;
/// - to a host address without a published port: [`Action::Deny`] (local services are
///   answered before NAT; tracking such a flow would only create a connection that
///   clashes with a masqueraded flow's reply later);
/// - to a foreign address without a route (`routed` false: from the uplink):
///   [`Action::Deny`];
/// - otherwise [`Action::Snat`] with `masquerade` when set, else [`Action::None`].
pub fn nat_action(dnat: &DnatTable, t: &Tuple, input: &PolicyInput) -> Action {
    if input.to_host {
        return match dnat.lookup(t.proto, t.dst, t.dport) {
            Some((to, port)) => match input.hairpin_snat {
                Some(snat) => Action::DnatSnat { to, port, snat },
                None => Action::Dnat { to, port },
            },
            None => Action::Deny,
        };
    }
    if !input.routed {
        return Action::Deny;
    }
    match input.masquerade {
        Some(to) => Action::Snat { to },
        None => Action::None,
    }
}
