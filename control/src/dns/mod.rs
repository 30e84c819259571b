//! The embedded DNS server: Docker's service discovery for sandboxes.
//!
//! Every sandbox resolves through `nameserver 127.0.0.11` (its `/etc/netns/NAME/resolv.conf`,
//! see [`files`]). The daemon answers there, over UDP and TCP, the names of the sandboxes
//! and aliases on the networks the asking sandbox is on (A, AAAA, PTR; TTL 600 like Docker),
//! and forwards everything else to the sandbox's upstream servers.
//!
//! # How queries reach us: sockets in the sandbox, one loop in the daemon
//!
//! Docker redirects 127.0.0.11:53 to its resolver's random ports with iptables rules inside
//! each container. We need no firewall rules at all: for each sandbox the daemon opens one
//! UDP socket and one TCP listener bound to 127.0.0.11:53 from a short-lived thread that
//! entered the sandbox's namespace ([`crate::netns::Netns::run_in`]). A socket belongs for its
//! whole life to the namespace it was created in, so these stay in the sandbox while one
//! event-loop thread in the daemon serves all of them with epoll. No address has to be
//! added: 127.0.0.11 lies inside the 127.0.0.0/8 that Linux routes locally on `lo` (the
//! `local` route of `lo`'s 127.0.0.1/8), so binding it works as soon as `lo` is up, which
//! [`DnsServer::add_sandbox`] makes sure of (the end-to-end tests check this).
//!
//! Because each socket belongs to one sandbox, the loop knows which sandbox asked from the
//! socket a query arrived on (no source-address guessing), and names are scoped per asking
//! sandbox: a name that exists only on networks the asker is not on is not answered
//! locally — it is forwarded like any other name and normally ends NXDOMAIN upstream.
//!
//! Upstream sockets are opened by the loop thread in the daemon's namespace, where the
//! host's routes are; the sandbox needs no route to its upstream servers. That also means
//! loopback nameservers of the host's resolv.conf (systemd-resolved's 127.0.0.53) work as
//! upstreams, unlike in Docker, whose forwarder runs in the container; see
//! [`host_upstreams`]. When the daemon's namespace has no route to an upstream (the send
//! or connect fails at once with ENETUNREACH/EHOSTUNREACH — typically with `--uplink`,
//! whose address belongs to the dataplane, not to the kernel), the query is sent from a
//! socket opened in the asking sandbox's namespace instead (the loop thread enters it for
//! the moment of the socket call), so it leaves through the sandbox's gateway and the
//! masquerade, as Docker's does; one UDP socket per sandbox and family, made on first
//! use and closed with the sandbox. A loopback server the sandbox named itself
//! (`--dns 127.0.0.1`: a cache inside it) is asked there too.
//!
//! # Pieces
//!
//! * [`wire`]: the message codec (hand-written; no DNS crate, no async runtime).
//! * [`names`]: the name table, set by the controller ([`DnsServer::set_names`] /
//!   [`DnsServer::update_names`]).
//! * `resolve`: what to do with one query (answer, refuse, forward); pure and fuzzed.
//! * [`upstream`]: forwarding (UDP with id rewriting, TCP, timeouts, failover) and the
//!   default upstream list.
//! * `server`: the event loop and the [`DnsServer`] handle.
//! * [`files`]: the sandbox's resolv.conf, hosts and hostname under `/etc/netns/NAME/`.
//!
//! # What the controller calls when
//!
//! * daemon start: [`DnsServer::start`]; then, for every existing sandbox,
//!   [`files::write_sandbox_files`] and [`DnsServer::add_sandbox`], and
//!   [`DnsServer::set_names`] with a table built from the state.
//! * sandbox created: write its files, `add_sandbox(name, &ns, upstreams)` (its `--dns`
//!   servers, else [`host_upstreams`]).
//! * endpoint connected / disconnected: [`DnsServer::update_names`] with
//!   [`NameTable::set_endpoint`] / [`NameTable::remove_endpoint`], and rewrite the sandbox's
//!   files (its hosts file lists its own addresses).
//! * sandbox removed: [`DnsServer::remove_sandbox`] (before deleting the namespace),
//!   `update_names(|t| t.remove_sandbox(name))`, [`files::remove_sandbox_files`].
//! * network removed: `update_names(|t| t.remove_network(name))`.
//! * `vswitchctl` stats: [`DnsServer::stats`].

pub mod files;
pub mod names;
mod poll;
mod resolve;

/// Fuzzing hooks (`fuzz/`): the server's decision on one query, without sockets.
#[doc(hidden)]
pub mod fuzzing {
    use super::names::NameTable;
    use super::resolve::{self, Action};

    /// What the server does with query `msg` from sandbox `asker`: `Some(Ok(reply))` to
    /// send, `Some(Err(max_udp))` to forward upstream, `None` to drop.
    pub fn handle_query(msg: &[u8], asker: &str, names: &NameTable, ttl: u32, tcp: bool) -> Option<Result<Vec<u8>, usize>> {
        match resolve::handle_query(msg, asker, names, ttl, tcp) {
            Action::Reply { bytes, .. } => Some(Ok(bytes)),
            Action::Forward { max_udp, .. } => Some(Err(max_udp)),
            Action::Drop => None,
        }
    }

    /// The SERVFAIL the server sends for `query` when forwarding fails.
    pub fn servfail(query: &[u8]) -> Vec<u8> {
        resolve::servfail(query)
    }
}
mod server;
pub mod upstream;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::netns::Netns;

pub use files::{remove_sandbox_files, write_sandbox_files, HostEntry, SandboxFiles};
pub use names::{DnsEndpoint, NameTable};
pub use server::DnsServer;
pub use upstream::{host_upstreams, parse_resolv_conf, ResolvConf};

/// The address sandboxes send their queries to (Docker's embedded DNS address).
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// The port of [`DNS_ADDR`].
pub const DNS_PORT: u16 = 53;
/// TTL of local answers (Docker uses 600 s).
pub const LOCAL_TTL: u32 = 600;

/// Settings of [`DnsServer::start`].
#[derive(Debug)]
pub struct DnsConfig {
    /// Address bound in every sandbox (default 127.0.0.11:53).
    pub listen: SocketAddr,
    /// Namespace of the upstream sockets; `None`: the namespace of the thread calling
    /// [`DnsServer::start`] (the daemon's).
    pub upstream_netns: Option<Netns>,
    /// How long to wait for one upstream server before trying the next (default 2 s).
    pub upstream_timeout: Duration,
    /// Forwarded queries in flight at most; the oldest is answered SERVFAIL to make room
    /// (default 1024).
    pub max_inflight: usize,
    /// Client TCP connections at most, over all sandboxes (default 256).
    pub max_tcp_clients: usize,
    /// A client TCP connection with nothing in flight is closed after this long idle
    /// (default 10 s).
    pub tcp_idle_timeout: Duration,
    /// TTL of local answers (default [`LOCAL_TTL`]).
    pub ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            listen: SocketAddr::new(IpAddr::V4(DNS_ADDR), DNS_PORT),
            upstream_netns: None,
            upstream_timeout: Duration::from_secs(2),
            max_inflight: 1024,
            max_tcp_clients: 256,
            tcp_idle_timeout: Duration::from_secs(10),
            ttl: LOCAL_TTL,
        }
    }
}

/// Counters of the DNS server (since start), for `vswitchctl`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsStats {
    /// Queries received (UDP and TCP).
    pub queries: u64,
    /// Of which over UDP.
    pub udp_queries: u64,
    /// Of which over TCP.
    pub tcp_queries: u64,
    /// Answered from the name table.
    pub local: u64,
    /// Forwarded upstream.
    pub forwarded: u64,
    /// NXDOMAIN answers sent (passed on from upstream).
    pub nxdomain: u64,
    /// SERVFAIL answers sent (ours or passed on).
    pub servfail: u64,
    /// Queries dropped or answered FORMERR/NOTIMP/BADVERS.
    pub malformed: u64,
    /// Upstream attempts that timed out.
    pub timeouts: u64,
    /// Forwarded queries evicted (SERVFAIL) to respect the in-flight cap.
    pub evicted: u64,
    /// Socket errors, refused TCP clients and unmatched upstream answers.
    pub errors: u64,
    /// Forwarded queries in flight now.
    pub inflight: u64,
    /// Client TCP connections now.
    pub tcp_clients: u64,
    /// Sandboxes served now.
    pub sandboxes: u64,
}

/// The live counters behind [`DnsStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) queries: AtomicU64,
    pub(crate) udp_queries: AtomicU64,
    pub(crate) tcp_queries: AtomicU64,
    pub(crate) local: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) nxdomain: AtomicU64,
    pub(crate) servfail: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) inflight: AtomicU64,
    pub(crate) tcp_clients: AtomicU64,
    pub(crate) sandboxes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DnsStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DnsStats {
            queries: l(&self.queries),
            udp_queries: l(&self.udp_queries),
            tcp_queries: l(&self.tcp_queries),
            local: l(&self.local),
            forwarded: l(&self.forwarded),
            nxdomain: l(&self.nxdomain),
            servfail: l(&self.servfail),
            malformed: l(&self.malformed),
            timeouts: l(&self.timeouts),
            evicted: l(&self.evicted),
            errors: l(&self.errors),
            inflight: l(&self.inflight),
            tcp_clients: l(&self.tcp_clients),
            sandboxes: l(&self.sandboxes),
        }
    }
}

#[cfg(test)]
#[path = "tests/e2e.rs"]
mod e2e;

#[cfg(test)]
#[path = "tests/e2e_util.rs"]
mod e2e_util;
