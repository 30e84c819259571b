//! Synchronous rtnetlink (NETLINK_ROUTE) client for links, addresses and routes.
//!
//! Hand-rolled on `libc`: messages (nlmsghdr, ifinfomsg/ifaddrmsg/rtmsg, 4-byte aligned
//! rtattrs, nested attributes) are built byte by byte; every request is sent alone and
//! answered before the call returns (ack or NLMSG_DONE, matched by sequence number).
//!
//! A netlink socket acts in the network namespace of the thread that created it, for its
//! whole life: [`Netlink::open_in`] creates it on a helper thread that entered the target
//! namespace, after which every call on it acts in that namespace, from any thread.
//!
//! Errors: kernel error codes become an [`io::Error`] whose `kind()` follows the errno
//! (EEXIST → AlreadyExists, ENOENT/ENODEV/ESRCH → NotFound, ...) and whose message names the
//! operation (and the kernel's extended-ack text when there is one). The errno itself stays
//! reachable with [`errno`] (plain `raw_os_error()` is `None` on these wrapped errors).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::netns::Netns;

// ---- netlink / rtnetlink constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h) ----

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
// Flags on NLMSG_ERROR messages.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_TXQLEN: u16 = 13;
const IFLA_IFALIAS: u16 = 20;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

const IFF_UP: u32 = 0x1;
const IFF_RUNNING: u32 = 0x40;
const IFF_NOARP: u32 = 0x80;
const IF_OPER_UP: u8 = 6;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_HOST: u8 = 254;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;
const RTM_F_CLONED: u32 = 0x200;

/// `ioctl(SIOCGSKNS)`: a netns fd for the namespace a socket belongs to.
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// Receive buffer; grown on demand when the kernel sends a bigger datagram.
const RECV_BUF: usize = 64 * 1024;
/// A reply that does not come within this time is reported as TimedOut.
const RECV_TIMEOUT_SECS: libc::time_t = 30;
/// How often a dump interrupted by concurrent changes (NLM_F_DUMP_INTR) is retried.
const DUMP_RETRIES: usize = 5;

// ---------------------------------------------------------------------------------------------
// Errors

/// An errno from the kernel (or a syscall) plus what was being done. Carried inside an
/// [`io::Error`]; use [`errno`] to get the code back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsError {
    /// Positive errno value (e.g. `libc::EEXIST`).
    pub errno: i32,
    /// What failed, e.g. `netlink RTM_NEWLINK veth a0/b0`.
    pub context: String,
    /// The kernel's extended-ack message, if it sent one.
    pub kernel_msg: Option<String>,
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.context,
            io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(m) = &self.kernel_msg {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

impl std::error::Error for OsError {}

/// The errno behind an error from this module or [`crate::netns`]: `raw_os_error()` if set,
/// otherwise the code of a wrapped [`OsError`].
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<OsError>().map(|o| o.errno))
}

/// The [`io::ErrorKind`] used for an errno: std's mapping, except that ENODEV (no such link)
/// and ESRCH (no such route) are NotFound.
pub fn kind_for_errno(code: i32) -> io::ErrorKind {
    match code {
        libc::ENODEV | libc::ESRCH => io::ErrorKind::NotFound,
        _ => io::Error::from_raw_os_error(code).kind(),
    }
}

/// An `io::Error` for `code` with context; `errno()` returns `code`.
pub fn os_error(code: i32, context: String) -> io::Error {
    io::Error::new(
        kind_for_errno(code),
        OsError {
            errno: code,
            context,
            kernel_msg: None,
        },
    )
}

fn kernel_error(code: i32, context: &str, kernel_msg: Option<String>) -> io::Error {
    io::Error::new(
        kind_for_errno(code),
        OsError {
            errno: code,
            context: context.to_string(),
            kernel_msg,
        },
    )
}

fn last_error(context: &str) -> io::Error {
    match io::Error::last_os_error().raw_os_error() {
        Some(code) => os_error(code, context.to_string()),
        None => io::Error::other(context.to_string()),
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply: {what}"),
    )
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Checks an interface name as the kernel's `dev_valid_name` does: 1..=15 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("interface name {name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || *c == '\0')
    {
        return Err(format!("interface name {name:?} contains {c:?}"));
    }
    Ok(())
}

fn check_ifname(name: &str) -> io::Result<()> {
    validate_ifname(name).map_err(invalid)
}

// ---------------------------------------------------------------------------------------------
// Public data types

/// One network interface as reported by RTM_NEWLINK (a plain value; owns nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// ifindex in the socket's namespace.
    pub index: u32,
    pub name: String,
    /// IFLA_ADDRESS when it is 6 bytes (Ethernet-like links; `lo` reports all zeros).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// IFF_UP (administratively up).
    pub up: bool,
    /// IFF_RUNNING or IFLA_OPERSTATE == IF_OPER_UP.
    pub oper_up: bool,
    /// IFLA_INFO_KIND: "veth", "tun", "bridge", ... (None for e.g. `lo` or physical NICs).
    pub kind: Option<String>,
    /// IFLA_MASTER: ifindex of the bridge/bond this link is enslaved to.
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the namespace given by `link_netnsid`
    /// when that is set, otherwise in this one).
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer's namespace id as seen from this namespace.
    pub link_netnsid: Option<i32>,
    /// Raw `ifi_flags` (IFF_*).
    pub flags: u32,
    /// IFLA_TXQLEN (0 if not reported).
    pub txqlen: u32,
    /// IFLA_IFALIAS (`ip link set NAME alias TEXT`), if set.
    pub alias: Option<String>,
}

impl LinkInfo {
    /// IFF_NOARP set?
    pub fn noarp(&self) -> bool {
        self.flags & IFF_NOARP != 0
    }
}

/// Parameters of [`Netlink::create_veth`]; borrowed, owns nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct VethSpec<'a> {
    /// Name of the end created in the socket's namespace.
    pub name: &'a str,
    /// Name of the peer end.
    pub peer_name: &'a str,
    /// Namespace the peer is created in directly (IFLA_NET_NS_FD in the peer's ifinfo);
    /// `None`: the socket's namespace.
    pub peer_ns: Option<&'a Netns>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// MAC of the end in the socket's namespace.
    pub mac: Option<[u8; 6]>,
    /// MAC of the peer end.
    pub peer_mac: Option<[u8; 6]>,
}

/// Several link settings applied with [`Netlink::modify_link`]; `None`/`false` leaves a
/// setting alone. Borrowed, owns nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkChange<'a> {
    /// Move the link into this namespace (IFLA_NET_NS_FD). The kernel moves first and applies
    /// every other setting in the new namespace (so `name` renames it there).
    pub netns: Option<&'a Netns>,
    pub name: Option<&'a str>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub txqlen: Option<u32>,
    /// IFLA_IFALIAS: a free-text label the link keeps when it moves between namespaces.
    pub alias: Option<&'a str>,
    pub up: Option<bool>,
    pub noarp: Option<bool>,
    /// IPv6 address generation mode NONE (no link-local). Sent as a separate message before
    /// the others, because the kernel applies IFLA_AF_SPEC after the flags and bringing the
    /// link up first could already create a link-local address.
    pub addr_gen_mode_none: bool,
}

/// IP version selector for [`Netlink::routes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    fn af(self) -> u8 {
        match self {
            IpFamily::V4 => libc::AF_INET as u8,
            IpFamily::V6 => libc::AF_INET6 as u8,
        }
    }

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    fn max_prefix(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

/// One unicast route of the main table (a plain value). Multipath routes are reported
/// without gateway/oif.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination network (0.0.0.0 / :: for the default route).
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// RTA_PRIORITY (metric).
    pub priority: Option<u32>,
    /// rtm_protocol (RTPROT_*: 2 kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    /// rtm_scope (0 universe, 253 link, ...).
    pub scope: u8,
}

// ---------------------------------------------------------------------------------------------
// Message building

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One request being built: header, family header, attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg { buf }
    }

    fn ty(&self) -> u16 {
        u16::from_ne_bytes([self.buf[4], self.buf[5]])
    }

    fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.buf[6], self.buf[7]])
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len());
        self.buf.resize(n, 0);
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    fn ifinfomsg(&mut self, family: u8, index: u32, flags: u32, change: u32) {
        self.push(&ifinfomsg_bytes(family, index, flags, change));
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// NUL-terminated string attribute (as iproute2 sends names).
    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    fn attr_ip(&mut self, ty: u16, ip: &IpAddr) {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    fn nest_start(&mut self, ty: u16) -> usize {
        let pos = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        pos
    }

    fn nest_end(&mut self, pos: usize) {
        let len = (self.buf.len() - pos) as u16;
        self.buf[pos..pos + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(&mut self, seq: u32, pid: u32) -> io::Result<&[u8]> {
        let len = u32::try_from(self.buf.len())
            .map_err(|_| invalid("netlink message too long".into()))?;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf[12..16].copy_from_slice(&pid.to_ne_bytes());
        Ok(&self.buf)
    }
}

fn ifinfomsg_bytes(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = family;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn ifaddrmsg_bytes(family: u8, prefix_len: u8, flags: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = family;
    b[1] = prefix_len;
    b[2] = flags;
    b[3] = scope;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

fn rtmsg_bytes(family: u8, dst_len: u8, table: u8, protocol: u8, scope: u8, ty: u8) -> [u8; 12] {
    [
        family, dst_len, 0, 0, table, protocol, scope, ty, 0, 0, 0, 0,
    ]
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn rd_u16(b: &[u8], at: usize) -> io::Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .ok_or_else(|| malformed("short u16"))
}

fn rd_u32(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| malformed("short u32"))
}

/// Splits a buffer of rtattrs into (type without NLA_F_* bits, payload).
fn parse_attrs(mut b: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = rd_u16(b, 0)? as usize;
        let ty = rd_u16(b, 2)? & 0x3fff;
        if len < 4 || len > b.len() {
            return Err(malformed("attribute length"));
        }
        out.push((ty, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

fn attr_u32(data: &[u8], what: &str) -> io::Result<u32> {
    if data.len() != 4 {
        return Err(malformed(what));
    }
    rd_u32(data, 0)
}

fn attr_string(data: &[u8]) -> String {
    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn attr_ip(family: u8, data: &[u8], what: &str) -> io::Result<IpAddr> {
    if family == libc::AF_INET as u8 {
        let o: [u8; 4] = data.try_into().map_err(|_| malformed(what))?;
        Ok(IpAddr::V4(Ipv4Addr::from(o)))
    } else if family == libc::AF_INET6 as u8 {
        let o: [u8; 16] = data.try_into().map_err(|_| malformed(what))?;
        Ok(IpAddr::V6(Ipv6Addr::from(o)))
    } else {
        Err(malformed("address family"))
    }
}

fn parse_link(payload: &[u8]) -> io::Result<LinkInfo> {
    if payload.len() < 16 {
        return Err(malformed("short ifinfomsg"));
    }
    let index = rd_u32(payload, 4)?;
    let flags = rd_u32(payload, 8)?;
    let mut info = LinkInfo {
        index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: flags & IFF_UP != 0,
        oper_up: flags & IFF_RUNNING != 0,
        kind: None,
        master: None,
        link: None,
        link_netnsid: None,
        flags,
        txqlen: 0,
        alias: None,
    };
    let mut have_name = false;
    for (ty, data) in parse_attrs(&payload[16..])? {
        match ty {
            IFLA_IFNAME => {
                info.name = attr_string(data);
                have_name = true;
            }
            IFLA_ADDRESS => info.mac = <[u8; 6]>::try_from(data).ok(),
            IFLA_MTU => info.mtu = attr_u32(data, "IFLA_MTU")?,
            IFLA_TXQLEN => info.txqlen = attr_u32(data, "IFLA_TXQLEN")?,
            IFLA_IFALIAS => info.alias = Some(attr_string(data)).filter(|a| !a.is_empty()),
            IFLA_MASTER => info.master = Some(attr_u32(data, "IFLA_MASTER")?),
            IFLA_LINK => info.link = Some(attr_u32(data, "IFLA_LINK")?),
            IFLA_LINK_NETNSID => {
                info.link_netnsid = Some(attr_u32(data, "IFLA_LINK_NETNSID")? as i32)
            }
            IFLA_OPERSTATE => {
                let st = *data.first().ok_or_else(|| malformed("IFLA_OPERSTATE"))?;
                if st == IF_OPER_UP {
                    info.oper_up = true;
                }
            }
            IFLA_LINKINFO => {
                for (t, d) in parse_attrs(data)? {
                    if t == IFLA_INFO_KIND {
                        info.kind = Some(attr_string(d));
                    }
                }
            }
            _ => {}
        }
    }
    if !have_name {
        return Err(malformed("link without IFLA_IFNAME"));
    }
    Ok(info)
}

/// (ifindex, address, prefix) of an RTM_NEWADDR message.
fn parse_addr(payload: &[u8]) -> io::Result<(u32, IpAddr, u8)> {
    if payload.len() < 8 {
        return Err(malformed("short ifaddrmsg"));
    }
    let family = payload[0];
    let prefix = payload[1];
    let index = rd_u32(payload, 4)?;
    let mut local = None;
    let mut address = None;
    for (ty, data) in parse_attrs(&payload[8..])? {
        match ty {
            IFA_LOCAL => local = Some(attr_ip(family, data, "IFA_LOCAL")?),
            IFA_ADDRESS => address = Some(attr_ip(family, data, "IFA_ADDRESS")?),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address when present (it differs from IFA_ADDRESS
    // only on point-to-point links); v6 usually reports IFA_ADDRESS alone.
    let addr = local
        .or(address)
        .ok_or_else(|| malformed("address without IFA_LOCAL/IFA_ADDRESS"))?;
    Ok((index, addr, prefix))
}

/// A main-table unicast route, or None for anything else.
fn parse_route(payload: &[u8]) -> io::Result<Option<RouteInfo>> {
    if payload.len() < 12 {
        return Err(malformed("short rtmsg"));
    }
    let family = payload[0];
    let dst_len = payload[1];
    let mut table = payload[4] as u32;
    let protocol = payload[5];
    let scope = payload[6];
    let ty = payload[7];
    let flags = rd_u32(payload, 8)?;
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut priority = None;
    for (t, data) in parse_attrs(&payload[12..])? {
        match t {
            RTA_DST => dst = Some(attr_ip(family, data, "RTA_DST")?),
            RTA_GATEWAY => gateway = Some(attr_ip(family, data, "RTA_GATEWAY")?),
            RTA_OIF => oif = Some(attr_u32(data, "RTA_OIF")?),
            RTA_PRIORITY => priority = Some(attr_u32(data, "RTA_PRIORITY")?),
            RTA_TABLE => table = attr_u32(data, "RTA_TABLE")?,
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN as u32 || ty != RTN_UNICAST || flags & RTM_F_CLONED != 0 {
        return Ok(None);
    }
    let dst = match dst {
        Some(d) => d,
        None if family == libc::AF_INET as u8 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None if family == libc::AF_INET6 as u8 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None => return Ok(None),
    };
    Ok(Some(RouteInfo {
        dst,
        prefix_len: dst_len,
        gateway,
        oif,
        priority,
        protocol,
        scope,
    }))
}

/// The extended-ack message text of an NLMSG_ERROR payload, if any.
fn ext_ack_msg(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let inner_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        align4(rd_u32(payload, 4).ok()? as usize)
    };
    let tlvs = payload.get(4 + inner_len..)?;
    parse_attrs(tlvs)
        .ok()?
        .into_iter()
        .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
        .map(|(_, d)| attr_string(d))
        .filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// The socket

/// A NETLINK_ROUTE socket bound to one network namespace (the one it was created in).
///
/// Owns the socket fd and a sequence counter. Every method sends one request and waits for
/// its answer, so it needs `&mut self`: one thread at a time per `Netlink` (it is `Send`;
/// open one per thread for parallelism). It subscribes to no multicast group and never
/// changes any thread's namespace.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    pid: u32,
    buf: Vec<u8>,
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(last_error("netlink socket"));
        }
        // SAFETY: raw is a fresh, valid fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            // Best effort: older kernels lack them and we cope without.
            // SAFETY: setsockopt with a valid int option value.
            unsafe {
                libc::setsockopt(
                    raw,
                    SOL_NETLINK,
                    opt,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid timeval.
        if unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        } != 0
        {
            return Err(last_error("netlink SO_RCVTIMEO"));
        }
        // SAFETY: zeroed sockaddr_nl is valid; bind with port id 0 lets the kernel choose.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let salen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: sa is a valid sockaddr_nl of length salen.
        if unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, salen) } != 0 {
            return Err(last_error("netlink bind"));
        }
        let mut len = salen;
        // SAFETY: getsockname writes at most len bytes into sa.
        if unsafe { libc::getsockname(raw, &mut sa as *mut _ as *mut libc::sockaddr, &mut len) }
            != 0
        {
            return Err(last_error("netlink getsockname"));
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(1);
        Ok(Netlink {
            fd,
            seq,
            pid: sa.nl_pid,
            buf: vec![0; RECV_BUF],
        })
    }

    /// A socket in namespace `ns`, created on a helper thread that entered it. Every call on
    /// the returned socket acts in `ns`, whichever thread makes it.
    pub fn open_in(ns: &Netns) -> io::Result<Netlink> {
        ns.run_in(Netlink::open)?
    }

    /// The namespace this socket acts in (SIOCGSKNS).
    pub fn netns(&self) -> io::Result<Netns> {
        // SAFETY: ioctl returning a new fd (or -1).
        let raw = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCGSKNS as _) };
        if raw < 0 {
            return Err(last_error("ioctl SIOCGSKNS"));
        }
        // SAFETY: raw is a new fd owned by us.
        Ok(Netns::from(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    fn send(&mut self, msg: &mut Msg) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq, self.pid)?;
        // SAFETY: zeroed sockaddr_nl addresses the kernel (port id 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: sending an initialised buffer to a valid address.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr() as *const libc::c_void,
                    bytes.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                if n as usize != bytes.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "netlink short send",
                    ));
                }
                return Ok(seq);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Receives one datagram from the kernel into self.buf; returns its length.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // Peek with MSG_TRUNC to learn the datagram's real size, grow, then read it.
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "netlink reply timed out",
                        ))
                    }
                    _ => return Err(err),
                }
            }
            if n as usize > self.buf.len() {
                self.buf.resize(n as usize, 0);
            }
            // SAFETY: zeroed sockaddr_nl; recvfrom writes the sender's address.
            let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut salen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: buf is valid for buf.len() bytes, sa for salen bytes.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    0,
                    &mut sa as *mut _ as *mut libc::sockaddr,
                    &mut salen,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if sa.nl_pid != 0 {
                continue; // not from the kernel
            }
            return Ok(n as usize);
        }
    }

    /// Sends `msg` and processes replies until its ack / NLMSG_DONE. `on_msg` sees every
    /// other message of this request (type, payload after nlmsghdr). An error from `on_msg`
    /// is returned after the reply has been read to its end, so the socket stays in sync.
    /// Returns whether the kernel flagged the dump as interrupted (NLM_F_DUMP_INTR).
    fn transact(
        &mut self,
        mut msg: Msg,
        what: &str,
        mut on_msg: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<bool> {
        let req_type = msg.ty();
        // NLM_F_DUMP shares its bits with NLM_F_REPLACE|NLM_F_EXCL: it means dump only on RTM_GET*.
        let is_dump = msg.flags() & NLM_F_DUMP == NLM_F_DUMP && req_type % 4 == 2;
        let seq = self.send(&mut msg).map_err(|e| wrap(e, what))?;
        let mut first_err: Option<io::Error> = None;
        let mut interrupted = false;
        loop {
            let n = self.recv().map_err(|e| wrap(e, what))?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let b = &self.buf[off..n];
                let len = rd_u32(b, 0)? as usize;
                let ty = rd_u16(b, 4)?;
                let flags = rd_u16(b, 6)?;
                let mseq = rd_u32(b, 8)?;
                if len < NLMSG_HDRLEN || len > b.len() {
                    return Err(malformed("nlmsg_len"));
                }
                off += align4(len).min(b.len());
                if mseq != seq {
                    continue; // stale reply to an earlier request
                }
                let payload = &b[NLMSG_HDRLEN..len];
                if flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let code = rd_u32(payload, 0)? as i32;
                        if code == 0 {
                            if !is_dump {
                                return first_err.map_or(Ok(interrupted), Err);
                            }
                            continue;
                        }
                        let err = kernel_error(-code, what, ext_ack_msg(flags, payload));
                        return Err(err);
                    }
                    NLMSG_DONE => {
                        // A dump can end with an error code in NLMSG_DONE.
                        if payload.len() >= 4 {
                            let code = rd_u32(payload, 0)? as i32;
                            if code < 0 {
                                return Err(kernel_error(-code, what, ext_ack_msg(flags, payload)));
                            }
                        }
                        return first_err.map_or(Ok(interrupted), Err);
                    }
                    NLMSG_OVERRUN => return Err(malformed("NLMSG_OVERRUN")),
                    _ => {
                        if first_err.is_none() {
                            if let Err(e) = on_msg(ty, payload) {
                                first_err = Some(wrap(e, what));
                            }
                        }
                        if flags & NLM_F_MULTI == 0 && !is_dump && msg.flags() & NLM_F_ACK == 0 {
                            return first_err.map_or(Ok(interrupted), Err);
                        }
                    }
                }
            }
        }
    }

    /// A request that expects only an ack.
    fn request(&mut self, msg: Msg, what: &str) -> io::Result<()> {
        self.transact(msg, what, |_, _| Ok(())).map(|_| ())
    }

    /// A dump, retried while the kernel reports it interrupted by concurrent changes.
    fn dump<T>(
        &mut self,
        build: impl Fn() -> Msg,
        what: &str,
        mut parse: impl FnMut(&[u8]) -> io::Result<Option<T>>,
        expect_type: u16,
    ) -> io::Result<Vec<T>> {
        let mut attempt = 0;
        loop {
            let mut out = Vec::new();
            let interrupted = self.transact(build(), what, |ty, payload| {
                if ty == expect_type {
                    if let Some(v) = parse(payload)? {
                        out.push(v);
                    }
                }
                Ok(())
            })?;
            attempt += 1;
            if !interrupted || attempt >= DUMP_RETRIES {
                return Ok(out);
            }
        }
    }

    // ---- links ----

    fn get_link(&mut self, msg: Msg, what: &str) -> io::Result<Option<LinkInfo>> {
        let mut found = None;
        match self.transact(msg, what, |ty, payload| {
            if ty == RTM_NEWLINK && found.is_none() {
                found = Some(parse_link(payload)?);
            }
            Ok(())
        }) {
            Ok(_) => Ok(found),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`, or `Ok(None)` if there is none (ENODEV). InvalidInput for a
    /// name the kernel could never accept.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        check_ifname(name)?;
        let mut msg = Msg::new(RTM_GETLINK, NLM_F_ACK);
        msg.ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0);
        msg.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        msg.attr_str(IFLA_IFNAME, name);
        self.get_link(msg, &format!("netlink RTM_GETLINK {name}"))
    }

    /// The link with ifindex `index`, or `Ok(None)` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<LinkInfo>> {
        if index == 0 || index > i32::MAX as u32 {
            return Ok(None);
        }
        let mut msg = Msg::new(RTM_GETLINK, NLM_F_ACK);
        msg.ifinfomsg(libc::AF_UNSPEC as u8, index, 0, 0);
        msg.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        self.get_link(msg, &format!("netlink RTM_GETLINK index {index}"))
    }

    /// All links of the namespace (a dump), in kernel order (by ifindex).
    pub fn links(&mut self) -> io::Result<Vec<LinkInfo>> {
        self.dump(
            || {
                let mut msg = Msg::new(RTM_GETLINK, NLM_F_DUMP);
                msg.ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0);
                msg.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
                msg
            },
            "netlink RTM_GETLINK dump",
            |p| parse_link(p).map(Some),
            RTM_NEWLINK,
        )
    }

    /// Creates a veth pair: `spec.name` in this namespace, `spec.peer_name` directly in
    /// `spec.peer_ns` (or here). Both ends are left down. AlreadyExists if a name is taken
    /// (in either namespace).
    pub fn create_veth(&mut self, spec: &VethSpec) -> io::Result<()> {
        check_ifname(spec.name)?;
        check_ifname(spec.peer_name)?;
        let mut msg = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        msg.ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0);
        msg.attr_str(IFLA_IFNAME, spec.name);
        if let Some(mtu) = spec.mtu {
            msg.attr_u32(IFLA_MTU, mtu);
        }
        if let Some(mac) = spec.mac {
            msg.attr(IFLA_ADDRESS, &mac);
        }
        let linkinfo = msg.nest_start(IFLA_LINKINFO);
        msg.attr(IFLA_INFO_KIND, b"veth");
        let data = msg.nest_start(IFLA_INFO_DATA);
        let peer = msg.nest_start(VETH_INFO_PEER);
        msg.push(&ifinfomsg_bytes(libc::AF_UNSPEC as u8, 0, 0, 0));
        msg.attr_str(IFLA_IFNAME, spec.peer_name);
        if let Some(ns) = spec.peer_ns {
            msg.attr_u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32);
        }
        if let Some(mtu) = spec.mtu {
            msg.attr_u32(IFLA_MTU, mtu);
        }
        if let Some(mac) = spec.peer_mac {
            msg.attr(IFLA_ADDRESS, &mac);
        }
        msg.nest_end(peer);
        msg.nest_end(data);
        msg.nest_end(linkinfo);
        self.request(
            msg,
            &format!(
                "netlink RTM_NEWLINK veth {} peer {}",
                spec.name, spec.peer_name
            ),
        )
    }

    /// Deletes a link (for a veth, both ends go). NotFound (ENODEV) if there is none.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = Msg::new(RTM_DELLINK, NLM_F_ACK);
        msg.ifinfomsg(libc::AF_UNSPEC as u8, index, 0, 0);
        self.request(msg, &format!("netlink RTM_DELLINK index {index}"))
    }

    /// Applies several settings to a link; see [`LinkChange`]. NotFound (ENODEV) if there is
    /// no such link. Not atomic when `addr_gen_mode_none` is combined with other settings.
    pub fn modify_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()> {
        if let Some(name) = change.name {
            check_ifname(name)?;
        }
        if change.addr_gen_mode_none {
            let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK);
            msg.ifinfomsg(libc::AF_UNSPEC as u8, index, 0, 0);
            let spec = msg.nest_start(IFLA_AF_SPEC);
            let inet6 = msg.nest_start(libc::AF_INET6 as u16);
            msg.attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]);
            msg.nest_end(inet6);
            msg.nest_end(spec);
            match self.request(msg, &format!("netlink RTM_SETLINK index {index} addrgenmode none")) {
                // No IPv6 on this link at all (an MTU below 1280 turns it off): nothing
                // to keep from autoconfiguring.
                Err(e) if errno(&e) == Some(libc::EAFNOSUPPORT) => {}
                r => r?,
            }
        }
        let (mut flags, mut mask) = (0u32, 0u32);
        if let Some(up) = change.up {
            mask |= IFF_UP;
            if up {
                flags |= IFF_UP;
            }
        }
        if let Some(noarp) = change.noarp {
            mask |= IFF_NOARP;
            if noarp {
                flags |= IFF_NOARP;
            }
        }
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK);
        msg.ifinfomsg(libc::AF_UNSPEC as u8, index, flags, mask);
        let mut what = format!("netlink RTM_SETLINK index {index}");
        let mut any = mask != 0;
        if let Some(ns) = change.netns {
            msg.attr_u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32);
            what.push_str(" netns");
            any = true;
        }
        if let Some(name) = change.name {
            msg.attr_str(IFLA_IFNAME, name);
            what.push_str(&format!(" name {name}"));
            any = true;
        }
        if let Some(mtu) = change.mtu {
            msg.attr_u32(IFLA_MTU, mtu);
            what.push_str(&format!(" mtu {mtu}"));
            any = true;
        }
        if let Some(mac) = change.mac {
            msg.attr(IFLA_ADDRESS, &mac);
            what.push_str(&format!(" address {}", fmt_mac(&mac)));
            any = true;
        }
        if let Some(q) = change.txqlen {
            msg.attr_u32(IFLA_TXQLEN, q);
            what.push_str(&format!(" txqueuelen {q}"));
            any = true;
        }
        if let Some(a) = change.alias {
            msg.attr_str(IFLA_IFALIAS, a);
            what.push_str(&format!(" alias {a:?}"));
            any = true;
        }
        if let Some(up) = change.up {
            what.push_str(if up { " up" } else { " down" });
        }
        if let Some(noarp) = change.noarp {
            what.push_str(if noarp { " arp off" } else { " arp on" });
        }
        if any || !change.addr_gen_mode_none {
            self.request(msg, &what)?;
        }
        Ok(())
    }

    /// Sets IFF_UP (ip link set up/down).
    pub fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                up: Some(up),
                ..Default::default()
            },
        )
    }

    /// Sets the MTU (IFLA_MTU); EINVAL outside the device's min/max.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                mtu: Some(mtu),
                ..Default::default()
            },
        )
    }

    /// Sets the MAC (IFLA_ADDRESS); EADDRNOTAVAIL for a multicast/zero address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                mac: Some(mac),
                ..Default::default()
            },
        )
    }

    /// Renames a link. Kernels before 6.x refuse with EBUSY while it is up (6.18 allows it);
    /// AlreadyExists if the name is taken.
    pub fn set_name(&mut self, index: u32, name: &str) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                name: Some(name),
                ..Default::default()
            },
        )
    }

    /// Moves a link into `ns` (IFLA_NET_NS_FD). Its ifindex there stays the same unless it is
    /// taken. A link that is up is brought down by the move.
    pub fn set_netns(&mut self, index: u32, ns: &Netns) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                netns: Some(ns),
                ..Default::default()
            },
        )
    }

    /// Sets or clears IFF_NOARP.
    pub fn set_noarp(&mut self, index: u32, noarp: bool) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                noarp: Some(noarp),
                ..Default::default()
            },
        )
    }

    /// IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE = NONE } }: the kernel creates no
    /// IPv6 link-local address on this link. Call it before bringing the link up (a
    /// link-local address made earlier stays). Fails (EAFNOSUPPORT) where IPv6 is disabled.
    pub fn set_addr_gen_mode_none(&mut self, index: u32) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                addr_gen_mode_none: true,
                ..Default::default()
            },
        )
    }

    /// Sets the transmit queue length (IFLA_TXQLEN).
    pub fn set_txqueuelen(&mut self, index: u32, qlen: u32) -> io::Result<()> {
        self.modify_link(
            index,
            &LinkChange {
                txqlen: Some(qlen),
                ..Default::default()
            },
        )
    }

    // ---- addresses ----

    fn addr_msg(
        ty: u16,
        flags: u16,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
        nodad: bool,
    ) -> io::Result<Msg> {
        let fam = IpFamily::of(&addr);
        if prefix_len > fam.max_prefix() {
            return Err(invalid(format!(
                "prefix length {prefix_len} too long for {addr}"
            )));
        }
        let scope = match addr {
            IpAddr::V4(a) if a.is_loopback() => RT_SCOPE_HOST,
            _ => RT_SCOPE_UNIVERSE,
        };
        let ifa_flags: u32 = if nodad && fam == IpFamily::V6 {
            IFA_F_NODAD
        } else {
            0
        };
        let mut msg = Msg::new(ty, flags);
        msg.push(&ifaddrmsg_bytes(
            fam.af(),
            prefix_len,
            ifa_flags as u8,
            scope,
            index,
        ));
        if fam == IpFamily::V4 {
            msg.attr_ip(IFA_LOCAL, &addr);
        }
        msg.attr_ip(IFA_ADDRESS, &addr);
        if ifa_flags != 0 {
            msg.attr_u32(IFA_FLAGS, ifa_flags);
        }
        Ok(msg)
    }

    /// Adds `addr/prefix_len` to a link (IPv4: IFA_LOCAL+IFA_ADDRESS, IPv6: IFA_ADDRESS).
    /// AlreadyExists (EEXIST) if it is already there; NotFound (ENODEV) for no such link.
    /// IPv6 addresses go through duplicate address detection; see [`Self::add_address_flags`].
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        self.add_address_flags(index, addr, prefix_len, false)
    }

    /// [`Self::add_address`] with IFA_F_NODAD when `nodad` (IPv6 only: the address is usable
    /// at once instead of "tentative" during DAD; ignored for IPv4).
    pub fn add_address_flags(
        &mut self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
        nodad: bool,
    ) -> io::Result<()> {
        let msg = Self::addr_msg(
            RTM_NEWADDR,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            index,
            addr,
            prefix_len,
            nodad,
        )?;
        self.request(
            msg,
            &format!("netlink RTM_NEWADDR {addr}/{prefix_len} index {index}"),
        )
    }

    /// Removes `addr/prefix_len` from a link. NotFound if it is not there (the errno stays
    /// EADDRNOTAVAIL) or there is no such link (ENODEV).
    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        let msg = Self::addr_msg(RTM_DELADDR, NLM_F_ACK, index, addr, prefix_len, false)?;
        self.request(
            msg,
            &format!("netlink RTM_DELADDR {addr}/{prefix_len} index {index}"),
        )
        .map_err(|e| {
            let o = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<OsError>())
                .filter(|o| o.errno == libc::EADDRNOTAVAIL)
                .cloned();
            match o {
                Some(o) => io::Error::new(io::ErrorKind::NotFound, o),
                None => e,
            }
        })
    }

    /// Addresses (IPv4 and IPv6) on link `index`, in kernel order. Empty for an unknown link.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        self.dump(
            || {
                let mut msg = Msg::new(RTM_GETADDR, NLM_F_DUMP);
                msg.push(&ifaddrmsg_bytes(libc::AF_UNSPEC as u8, 0, 0, 0, 0));
                msg
            },
            "netlink RTM_GETADDR dump",
            |p| {
                let (i, a, l) = parse_addr(p)?;
                Ok((i == index).then_some((a, l)))
            },
            RTM_NEWADDR,
        )
    }

    // ---- routes ----

    fn route_msg(
        ty: u16,
        flags: u16,
        dst: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> io::Result<Msg> {
        let fam = IpFamily::of(&dst);
        if prefix_len > fam.max_prefix() {
            return Err(invalid(format!(
                "prefix length {prefix_len} too long for {dst}"
            )));
        }
        if let Some(gw) = gateway {
            if IpFamily::of(&gw) != fam {
                return Err(invalid(format!(
                    "gateway {gw} is not of the family of {dst}"
                )));
            }
        }
        let (proto, scope, rtype) = if ty == RTM_DELROUTE {
            (0, RT_SCOPE_NOWHERE, 0)
        } else if gateway.is_none() && oif.is_some() {
            (RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST)
        } else {
            (RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST)
        };
        let mut msg = Msg::new(ty, flags);
        msg.push(&rtmsg_bytes(
            fam.af(),
            prefix_len,
            RT_TABLE_MAIN,
            proto,
            scope,
            rtype,
        ));
        if prefix_len > 0 {
            msg.attr_ip(RTA_DST, &dst);
        }
        if let Some(gw) = gateway {
            msg.attr_ip(RTA_GATEWAY, &gw);
        }
        if let Some(oif) = oif {
            msg.attr_u32(RTA_OIF, oif);
        }
        Ok(msg)
    }

    /// Adds or replaces (NLM_F_CREATE|NLM_F_REPLACE) the main-table route to `dst/prefix_len`
    /// (`0.0.0.0`/`::` with prefix 0 for the default route) via `gateway` and/or out of `oif`.
    /// A gateway must be reachable (e.g. in a connected subnet), else ENETUNREACH.
    pub fn replace_route(
        &mut self,
        dst: IpAddr,
        prefix_len: u8,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> io::Result<()> {
        let msg = Self::route_msg(
            RTM_NEWROUTE,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            dst,
            prefix_len,
            gateway,
            oif,
        )?;
        let mut what = format!("netlink RTM_NEWROUTE {dst}/{prefix_len}");
        if let Some(gw) = gateway {
            what.push_str(&format!(" via {gw}"));
        }
        if let Some(oif) = oif {
            what.push_str(&format!(" oif {oif}"));
        }
        self.request(msg, &what)
    }

    /// Deletes the main-table route to `dst/prefix_len` (the first match, whatever its
    /// gateway). NotFound if there is none (errno ESRCH for IPv4, ENOENT for IPv6).
    pub fn del_route(&mut self, dst: IpAddr, prefix_len: u8) -> io::Result<()> {
        let msg = Self::route_msg(RTM_DELROUTE, NLM_F_ACK, dst, prefix_len, None, None)?;
        self.request(msg, &format!("netlink RTM_DELROUTE {dst}/{prefix_len}"))
    }

    /// Unicast routes of the main table for one family (no cached clones).
    pub fn routes(&mut self, family: IpFamily) -> io::Result<Vec<RouteInfo>> {
        self.dump(
            || {
                let mut msg = Msg::new(RTM_GETROUTE, NLM_F_DUMP);
                msg.push(&rtmsg_bytes(family.af(), 0, 0, 0, 0, 0));
                msg
            },
            "netlink RTM_GETROUTE dump",
            parse_route,
            RTM_NEWROUTE,
        )
    }
}

/// Adds the operation to a socket-level error, keeping its errno.
fn wrap(e: io::Error, what: &str) -> io::Error {
    if e.get_ref().is_some_and(|i| i.is::<OsError>()) {
        return e;
    }
    match e.raw_os_error() {
        Some(code) => os_error(code, what.to_string()),
        None => io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::tests::{privileged, TestNs};
    use std::process::Command;
    use std::time::{Duration, Instant};

    const MAC_A: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
    const MAC_B: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x02];

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A socket in `t`, checked not to be in the root (test process's) namespace.
    fn nl_in(t: &TestNs) -> Netlink {
        let nl = Netlink::open_in(&t.ns).unwrap();
        let root = Netns::current().unwrap();
        let sock_ns = nl.netns().unwrap();
        assert!(sock_ns.same_as(&t.ns).unwrap(), "socket not in test netns");
        assert!(!sock_ns.same_as(&root).unwrap(), "socket in root netns");
        nl
    }

    fn link(nl: &mut Netlink, name: &str) -> LinkInfo {
        nl.link_by_name(name)
            .unwrap()
            .unwrap_or_else(|| panic!("no link {name}"))
    }

    fn assert_not_found(e: io::Error, code: i32) {
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(errno(&e), Some(code), "{e}");
    }

    #[test]
    fn netlink_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Netlink>();
        is_send::<Netns>();
    }

    #[test]
    fn build_nested_attrs() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK);
        m.ifinfomsg(0, 7, 0, 0);
        m.attr_str(IFLA_IFNAME, "ab"); // 4 + 3 -> padded to 8
        let outer = m.nest_start(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"veth");
        let inner = m.nest_start(IFLA_INFO_DATA);
        m.attr_u32(1, 5);
        m.nest_end(inner);
        m.nest_end(outer);
        let b = m.finish(42, 9).unwrap().to_vec();
        assert_eq!(b.len(), 16 + 16 + 8 + 4 + 8 + 4 + 8);
        assert_eq!(rd_u32(&b, 0).unwrap() as usize, b.len());
        assert_eq!(rd_u16(&b, 4).unwrap(), RTM_NEWLINK);
        assert_eq!(rd_u16(&b, 6).unwrap(), NLM_F_ACK | NLM_F_REQUEST);
        assert_eq!(rd_u32(&b, 8).unwrap(), 42);
        let attrs = parse_attrs(&b[32..]).unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (IFLA_IFNAME, &b"ab\0"[..]));
        assert_eq!(attrs[1].0, IFLA_LINKINFO);
        let li = parse_attrs(attrs[1].1).unwrap();
        assert_eq!(li[0], (IFLA_INFO_KIND, &b"veth"[..]));
        let data = parse_attrs(li[1].1).unwrap();
        assert_eq!(data, vec![(1, &5u32.to_ne_bytes()[..])]);
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse_attrs(&[8, 0, 1, 0, 1, 2]).is_err()); // length past the end
        assert!(parse_attrs(&[2, 0, 1, 0]).is_err()); // length below header
        assert!(parse_link(&[0; 8]).is_err());
        let mut link = ifinfomsg_bytes(0, 1, 0, 0).to_vec();
        assert!(parse_link(&link).is_err()); // no name
        link.extend_from_slice(&[8, 0, IFLA_IFNAME as u8, 0, b'l', b'o', 0, 0]);
        link.extend_from_slice(&[6, 0, IFLA_MTU as u8, 0, 1, 2, 0, 0]); // 2-byte MTU
        assert!(parse_link(&link).is_err());
        let addr = ifaddrmsg_bytes(libc::AF_INET as u8, 24, 0, 0, 1);
        assert!(parse_addr(&addr).is_err()); // no address attribute
        let mut a = addr.to_vec();
        a.extend_from_slice(&[7, 0, IFA_LOCAL as u8, 0, 1, 2, 3, 0]); // 3-byte IPv4
        assert!(parse_addr(&a).is_err());
        assert!(parse_route(&[0; 4]).is_err());
    }

    #[test]
    fn errno_survives_context() {
        let e = os_error(libc::ENODEV, "netlink x".into());
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(errno(&e), Some(libc::ENODEV));
        assert!(e.to_string().starts_with("netlink x: "), "{e}");
        let e = os_error(libc::EEXIST, "y".into());
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            errno(&io::Error::from_raw_os_error(libc::EPERM)),
            Some(libc::EPERM)
        );
        assert_eq!(errno(&io::Error::other("z")), None);
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("0123456789abcdef").is_err());
        assert!(validate_ifname("a:b").is_err());
        assert!(validate_ifname("a b").is_err());
    }

    #[test]
    fn veth_peer_in_other_namespace() {
        if !privileged() {
            return;
        }
        let a = TestNs::new();
        let b = TestNs::new();
        let mut nla = nl_in(&a);
        let mut nlb = nl_in(&b);
        nla.create_veth(&VethSpec {
            name: "va0",
            peer_name: "vb0",
            peer_ns: Some(&b.ns),
            mtu: Some(1400),
            mac: Some(MAC_A),
            peer_mac: Some(MAC_B),
        })
        .unwrap();
        let la = link(&mut nla, "va0");
        assert_eq!(la.kind.as_deref(), Some("veth"));
        assert_eq!(la.mtu, 1400);
        assert_eq!(la.mac, Some(MAC_A));
        assert!(!la.up);
        assert!(la.link_netnsid.is_some(), "{la:?}");
        assert!(nla.link_by_name("vb0").unwrap().is_none());
        let lb = link(&mut nlb, "vb0");
        assert_eq!(lb.kind.as_deref(), Some("veth"));
        assert_eq!(lb.mtu, 1400);
        assert_eq!(lb.mac, Some(MAC_B));
        assert!(lb.link_netnsid.is_some());
        assert_eq!(la.link, Some(lb.index), "IFLA_LINK is the peer's index");
        assert_eq!(lb.link, Some(la.index));
        assert!(nlb.link_by_name("va0").unwrap().is_none());
        assert_eq!(nla.link_by_index(la.index).unwrap().as_ref(), Some(&la));

        // Same names again: EEXIST.
        let e = nla
            .create_veth(&VethSpec {
                name: "va0",
                peer_name: "vb9",
                peer_ns: Some(&b.ns),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(errno(&e), Some(libc::EEXIST));
        // Peer name taken in the peer namespace: also EEXIST, and nothing is left behind.
        let e = nla
            .create_veth(&VethSpec {
                name: "va1",
                peer_name: "vb0",
                peer_ns: Some(&b.ns),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(nla.link_by_name("va1").unwrap().is_none());

        // Deleting one end removes the other, across namespaces.
        nla.delete_link(la.index).unwrap();
        assert!(nla.link_by_name("va0").unwrap().is_none());
        assert!(nlb.link_by_name("vb0").unwrap().is_none());
    }

    #[test]
    fn link_settings_read_back() {
        if !privileged() {
            return;
        }
        let a = TestNs::new();
        let b = TestNs::new();
        let mut nla = nl_in(&a);
        let mut nlb = nl_in(&b);
        nla.create_veth(&VethSpec {
            name: "x0",
            peer_name: "x1",
            ..Default::default()
        })
        .unwrap();
        let x0 = link(&mut nla, "x0");
        let x1 = link(&mut nla, "x1");
        assert_eq!(x0.link_netnsid, None);
        assert_eq!(x0.link, Some(x1.index));
        let i = x0.index;

        nla.set_mtu(i, 1280).unwrap();
        nla.set_mac(i, MAC_A).unwrap();
        nla.set_txqueuelen(i, 77).unwrap();
        nla.set_noarp(i, true).unwrap();
        let l = link(&mut nla, "x0");
        assert_eq!(
            (l.mtu, l.mac, l.txqlen, l.noarp()),
            (1280, Some(MAC_A), 77, true)
        );
        nla.set_noarp(i, false).unwrap();
        assert!(!link(&mut nla, "x0").noarp());

        nla.set_name(i, "y0").unwrap();
        assert!(nla.link_by_name("x0").unwrap().is_none());
        let l = link(&mut nla, "y0");
        assert_eq!(l.index, i);

        nla.set_up(i, true).unwrap();
        nla.set_up(x1.index, true).unwrap();
        let l = link(&mut nla, "y0");
        assert!(l.up);
        assert!(l.oper_up || wait_oper_up(&mut nla, "y0"), "{l:?}");
        // Renaming a link that is up: older kernels refuse (EBUSY), newer ones (6.18 here)
        // allow it.
        match nla.set_name(i, "z0") {
            Ok(()) => {
                assert!(link(&mut nla, "z0").up);
                nla.set_name(i, "y0").unwrap();
            }
            Err(e) => assert_eq!(errno(&e), Some(libc::EBUSY), "{e}"),
        }
        nla.set_up(i, false).unwrap();
        assert!(!link(&mut nla, "y0").up);

        // Move to B: gone here, there (still down).
        nla.set_netns(i, &b.ns).unwrap();
        assert!(nla.link_by_name("y0").unwrap().is_none());
        let moved = link(&mut nlb, "y0");
        assert_eq!(moved.mac, Some(MAC_A));
        assert!(moved.link_netnsid.is_some());

        // Move, rename, set MTU and bring up in one message: the kernel moves first and applies
        // the rest in the target namespace.
        let x1_up = link(&mut nla, "x1");
        assert!(x1_up.up);
        nla.modify_link(
            x1_up.index,
            &LinkChange {
                netns: Some(&b.ns),
                name: Some("w1"),
                mtu: Some(1300),
                up: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(nla.link_by_name("x1").unwrap().is_none());
        assert!(nla.link_by_name("w1").unwrap().is_none());
        let w1 = link(&mut nlb, "w1");
        assert_eq!(w1.mtu, 1300);
        assert!(w1.up, "{w1:?}");
        assert_eq!(w1.link_netnsid, None, "both ends now in B");

        let names: Vec<String> = nlb.links().unwrap().into_iter().map(|l| l.name).collect();
        assert!(
            names.contains(&"lo".to_string())
                && names.contains(&"w1".to_string())
                && names.contains(&"y0".to_string()),
            "{names:?}"
        );
        let names_a: Vec<String> = nla.links().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names_a, vec!["lo".to_string()]);
    }

    fn wait_oper_up(nl: &mut Netlink, name: &str) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if link(nl, name).oper_up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn has_link_local(nl: &mut Netlink, index: u32) -> bool {
        nl.addresses(index).unwrap().iter().any(|(a, _)| match a {
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            _ => false,
        })
    }

    #[test]
    fn addr_gen_mode_none_prevents_link_local() {
        if !privileged() {
            return;
        }
        let a = TestNs::new();
        let mut nl = nl_in(&a);
        nl.create_veth(&VethSpec {
            name: "g0",
            peer_name: "g1",
            ..Default::default()
        })
        .unwrap();
        let g0 = link(&mut nl, "g0").index;
        let g1 = link(&mut nl, "g1").index;
        nl.set_addr_gen_mode_none(g0).unwrap();
        nl.set_up(g0, true).unwrap();
        nl.set_up(g1, true).unwrap();
        // Control: g1 (default mode) gets a link-local address once the carrier is up.
        let t = Instant::now();
        while !has_link_local(&mut nl, g1) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "control link never got fe80::"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(link(&mut nl, "g0").oper_up);
        assert!(
            !has_link_local(&mut nl, g0),
            "{:?}",
            nl.addresses(g0).unwrap()
        );
        assert!(nl.addresses(g0).unwrap().is_empty());
    }

    #[test]
    fn addresses_v4_v6() {
        if !privileged() {
            return;
        }
        let a = TestNs::new();
        let mut nl = nl_in(&a);
        nl.create_veth(&VethSpec {
            name: "ad0",
            peer_name: "ad1",
            ..Default::default()
        })
        .unwrap();
        let i = link(&mut nl, "ad0").index;
        nl.set_addr_gen_mode_none(i).unwrap();
        let a4 = v4("198.51.100.10");
        let a6: IpAddr = "2001:db8::10".parse().unwrap();
        nl.add_address(i, a4, 24).unwrap();
        let e = nl.add_address(i, a4, 24).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(errno(&e), Some(libc::EEXIST));
        nl.add_address_flags(i, a6, 64, true).unwrap();
        let e = nl.add_address_flags(i, a6, 64, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        let addrs = nl.addresses(i).unwrap();
        assert!(
            addrs.contains(&(a4, 24)) && addrs.contains(&(a6, 64)),
            "{addrs:?}"
        );
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        // lo's addresses are not reported for ad0.
        let lo = link(&mut nl, "lo").index;
        assert!(nl.addresses(lo).unwrap().contains(&(v4("127.0.0.1"), 8)));

        nl.del_address(i, a4, 24).unwrap();
        nl.del_address(i, a6, 64).unwrap();
        assert!(nl.addresses(i).unwrap().is_empty());
        assert_not_found(nl.del_address(i, a4, 24).unwrap_err(), libc::EADDRNOTAVAIL);
        assert_not_found(nl.del_address(i, a6, 64).unwrap_err(), libc::EADDRNOTAVAIL);
        assert_eq!(
            nl.add_address(i, a4, 33).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn default_routes_v4_v6() {
        if !privileged() {
            return;
        }
        let a = TestNs::new();
        let mut nl = nl_in(&a);
        nl.create_veth(&VethSpec {
            name: "r0",
            peer_name: "r1",
            ..Default::default()
        })
        .unwrap();
        let i = link(&mut nl, "r0").index;
        let p = link(&mut nl, "r1").index;
        nl.set_up(i, true).unwrap();
        nl.set_up(p, true).unwrap();
        nl.add_address(i, v4("198.51.100.1"), 24).unwrap();
        nl.add_address_flags(i, "2001:db8::1".parse().unwrap(), 64, true)
            .unwrap();

        let any4 = v4("0.0.0.0");
        let any6: IpAddr = "::".parse().unwrap();
        // Gateway outside every connected subnet: unreachable.
        let e = nl
            .replace_route(any4, 0, Some(v4("203.0.113.1")), None)
            .unwrap_err();
        assert_eq!(errno(&e), Some(libc::ENETUNREACH), "{e}");

        nl.replace_route(any4, 0, Some(v4("198.51.100.254")), None)
            .unwrap();
        nl.replace_route(any4, 0, Some(v4("198.51.100.253")), Some(i))
            .unwrap();
        let defaults: Vec<RouteInfo> = nl
            .routes(IpFamily::V4)
            .unwrap()
            .into_iter()
            .filter(|r| r.prefix_len == 0)
            .collect();
        assert_eq!(
            defaults.len(),
            1,
            "replace must not add a second route: {defaults:?}"
        );
        assert_eq!(defaults[0].dst, any4);
        assert_eq!(defaults[0].gateway, Some(v4("198.51.100.253")));
        assert_eq!(defaults[0].oif, Some(i));
        // The connected route is reported too.
        let routes = nl.routes(IpFamily::V4).unwrap();
        assert!(
            routes.iter().any(|r| r.dst == v4("198.51.100.0")
                && r.prefix_len == 24
                && r.gateway.is_none()
                && r.oif == Some(i)),
            "{routes:?}"
        );

        let gw6: IpAddr = "2001:db8::fe".parse().unwrap();
        nl.replace_route(any6, 0, Some(gw6), None).unwrap();
        nl.replace_route(any6, 0, Some(gw6), None).unwrap();
        let d6: Vec<RouteInfo> = nl
            .routes(IpFamily::V6)
            .unwrap()
            .into_iter()
            .filter(|r| r.prefix_len == 0)
            .collect();
        assert_eq!(d6.len(), 1, "{d6:?}");
        assert_eq!(
            (d6[0].dst, d6[0].gateway, d6[0].oif),
            (any6, Some(gw6), Some(i))
        );
        assert!(nl
            .routes(IpFamily::V6)
            .unwrap()
            .iter()
            .all(|r| IpFamily::of(&r.dst) == IpFamily::V6));

        // A route without gateway, out of an interface.
        nl.replace_route(v4("203.0.113.0"), 24, None, Some(i))
            .unwrap();
        let r = nl
            .routes(IpFamily::V4)
            .unwrap()
            .into_iter()
            .find(|r| r.dst == v4("203.0.113.0"))
            .unwrap();
        assert_eq!(
            (r.prefix_len, r.gateway, r.oif, r.scope),
            (24, None, Some(i), RT_SCOPE_LINK)
        );
        nl.del_route(v4("203.0.113.0"), 24).unwrap();

        nl.del_route(any4, 0).unwrap();
        nl.del_route(any6, 0).unwrap();
        assert!(nl
            .routes(IpFamily::V4)
            .unwrap()
            .iter()
            .all(|r| r.prefix_len != 0));
        assert!(nl
            .routes(IpFamily::V6)
            .unwrap()
            .iter()
            .all(|r| r.prefix_len != 0));
        // IPv4 answers ESRCH, IPv6 ENOENT: both are NotFound.
        assert_not_found(nl.del_route(any4, 0).unwrap_err(), libc::ESRCH);
        assert_not_found(nl.del_route(any6, 0).unwrap_err(), libc::ENOENT);
        let e = nl.replace_route(any4, 0, Some(gw6), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn unknown_links() {
        if !privileged() {
            return;
        }
        let a = TestNs::new();
        let mut nl = nl_in(&a);
        assert_eq!(nl.link_by_name("nope0").unwrap(), None);
        assert_eq!(nl.link_by_index(999_999).unwrap(), None);
        assert_eq!(nl.link_by_index(0).unwrap(), None);
        assert_not_found(nl.delete_link(999_999).unwrap_err(), libc::ENODEV);
        assert_not_found(nl.set_mtu(999_999, 1500).unwrap_err(), libc::ENODEV);
        assert_not_found(nl.set_up(999_999, true).unwrap_err(), libc::ENODEV);
        assert_not_found(nl.set_netns(999_999, &a.ns).unwrap_err(), libc::ENODEV);
        assert_not_found(
            nl.add_address(999_999, v4("198.51.100.1"), 24).unwrap_err(),
            libc::ENODEV,
        );
        assert!(nl.addresses(999_999).unwrap().is_empty());
        let e = nl.link_by_name("name-too-long-x0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        // The socket is still in sync after errors.
        assert!(nl.link_by_name("lo").unwrap().is_some());
    }

    #[test]
    fn concurrent_sockets() {
        if !privileged() {
            return;
        }
        let a = TestNs::new();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let ns = &a.ns;
                s.spawn(move || {
                    let mut nl = Netlink::open_in(ns).unwrap();
                    for round in 0..5u32 {
                        let (n0, n1) = (format!("c{t}a{round}"), format!("c{t}b{round}"));
                        nl.create_veth(&VethSpec {
                            name: &n0,
                            peer_name: &n1,
                            mtu: Some(1300 + t),
                            ..Default::default()
                        })
                        .unwrap();
                        let l = nl.link_by_name(&n0).unwrap().unwrap();
                        assert_eq!(l.mtu, 1300 + t);
                        assert!(nl.links().unwrap().iter().any(|x| x.name == n1));
                        nl.delete_link(l.index).unwrap();
                        assert!(nl.link_by_name(&n1).unwrap().is_none());
                    }
                });
            }
        });
        // One socket handed between threads.
        let mut nl = nl_in(&a);
        let nl2 = std::thread::spawn(move || {
            assert!(nl.link_by_name("lo").unwrap().is_some());
            nl
        })
        .join()
        .unwrap();
        drop(nl2);
    }

    fn ensure_ping() -> bool {
        if Command::new("ping").arg("-V").output().is_ok() {
            return true;
        }
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-q", "iputils-ping"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok && Command::new("ping").arg("-V").output().is_ok()
    }

    fn ping(ns: &str, args: &[&str]) -> bool {
        (0..3).any(|_| {
            Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-c1", "-W1"])
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    #[test]
    fn ping_across_veth() {
        if !privileged() {
            return;
        }
        if !ensure_ping() {
            if std::env::var("VSWITCHD_E2E").as_deref() == Ok("1") {
                panic!("ping not available");
            }
            eprintln!("skipping: ping not available");
            return;
        }
        let a = TestNs::new();
        let b = TestNs::new();
        let mut nla = nl_in(&a);
        let mut nlb = nl_in(&b);
        nla.create_veth(&VethSpec {
            name: "pa",
            peer_name: "pb",
            peer_ns: Some(&b.ns),
            mac: Some(MAC_A),
            peer_mac: Some(MAC_B),
            ..Default::default()
        })
        .unwrap();
        let pa = link(&mut nla, "pa").index;
        let pb = link(&mut nlb, "pb").index;
        nla.add_address(pa, v4("198.51.100.1"), 24).unwrap();
        nlb.add_address(pb, v4("198.51.100.2"), 24).unwrap();
        nla.add_address_flags(pa, "2001:db8::1".parse().unwrap(), 64, true)
            .unwrap();
        nlb.add_address_flags(pb, "2001:db8::2".parse().unwrap(), 64, true)
            .unwrap();
        nla.set_up(pa, true).unwrap();
        nlb.set_up(pb, true).unwrap();
        assert!(wait_oper_up(&mut nla, "pa"));
        assert!(ping(&a.name, &["198.51.100.2"]), "IPv4 ping A -> B failed");
        assert!(ping(&b.name, &["2001:db8::1"]), "IPv6 ping B -> A failed");
    }
}
