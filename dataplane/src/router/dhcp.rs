//! The gateway's DHCP server for ports with an address reserved by control (a VM's TAP
//! or someone else's veth added with `port add --dhcp`): one binding per port, so the
//! answer depends only on the port a request came in on, never on state the request
//! could create. RFC 2131's server side for that case: DISCOVER → OFFER, REQUEST → ACK
//! (or NAK for another address), INFORM → ACK without a lease; RELEASE and DECLINE
//! change nothing (the binding is control's) and get no reply.
//!
//! Pure functions over byte slices: no sockets, no allocation, no panics on any input.

use std::net::Ipv4Addr;

use crate::tables::GatewayV4;
use crate::wire::eth::{self, ETHERTYPE_IPV4};
use crate::wire::smol::{IpProtocol, Ipv4Packet, UdpPacket};
use crate::wire::MacAddr;

/// DNS servers a lease can carry.
pub const DNS_MAX: usize = 3;

/// What control reserved for the machine behind one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpLease {
    /// The address it gets.
    pub ip: Ipv4Addr,
    /// DNS servers handed out (the first `dns_len`).
    pub dns: [Ipv4Addr; DNS_MAX],
    pub dns_len: u8,
    /// Lease time in seconds (renewal at half, rebinding at 7/8).
    pub lease_secs: u32,
    /// Offer the gateway as the default router (not on `--internal` networks).
    pub router: bool,
    /// The network's MTU (option 26).
    pub mtu: u16,
}

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// A reply frame's length: Ethernet + IPv4 + UDP + a 300-byte BOOTP message (the
/// minimum size, which every reply fits).
pub const REPLY_LEN: usize = eth::HDR_LEN + 20 + 8 + BOOTP_LEN;
/// How much of a request the server reads: a whole 1500-byte IP packet with its Ethernet
/// header (clients send at most 576 bytes unless they advertise a larger maximum, and a
/// request is never fragmented).
pub const REQUEST_MAX: usize = eth::HDR_LEN + 1500;

const BOOTP_LEN: usize = 300;
const OPTIONS_OFF: usize = 240;
const COOKIE: [u8; 4] = [99, 130, 83, 99];

// Message types (option 53).
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

/// What the server answered (for counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Offer,
    Ack,
    Nak,
}

/// Why a DHCP request got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoReply {
    /// Not a well-formed BOOTP request with a DHCP message type.
    Malformed,
    /// Well-formed, and nothing to say: a REQUEST for another server, RELEASE, DECLINE,
    /// a message type a server does not take.
    Ignored,
}

/// Whether an Ethernet frame is a UDP datagram from the DHCP client port to the server
/// port (no VLAN tag: ports are untagged). Cheap: a few byte compares.
#[inline]
pub fn is_request(f: &[u8]) -> bool {
    // Ethernet(14) + IPv4 without options(20) + UDP ports.
    f.len() >= eth::HDR_LEN + 28
        && eth::ethertype(f) == ETHERTYPE_IPV4
        && f[eth::HDR_LEN + 9] == 17
        && f[eth::HDR_LEN] >> 4 == 4
        && {
            let u = eth::HDR_LEN + usize::from(f[eth::HDR_LEN] & 0x0f) * 4;
            f.len() >= u + 4 && f[u..u + 4] == [0, CLIENT_PORT as u8, 0, SERVER_PORT as u8]
        }
}

/// The fields of a request the reply needs.
struct Request {
    msg: u8,
    xid: [u8; 4],
    flags: [u8; 2],
    ciaddr: Ipv4Addr,
    chaddr: [u8; 16],
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
}

fn parse(frame: &[u8]) -> Option<Request> {
    let ip = Ipv4Packet::new_checked(frame.get(eth::HDR_LEN..)?).ok()?;
    if ip.next_header() != IpProtocol::Udp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let l4 = eth::HDR_LEN + usize::from(ip.header_len());
    let end = eth::HDR_LEN + usize::from(ip.total_len());
    let udp = UdpPacket::new_checked(frame.get(l4..end)?).ok()?;
    let b = udp.payload();
    // op BOOTREQUEST, htype Ethernet, hlen 6, the magic cookie.
    if b.len() < OPTIONS_OFF || b[0] != 1 || b[1] != 1 || b[2] != 6 || b[236..240] != COOKIE {
        return None;
    }
    let addr = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
    let mut r = Request {
        msg: 0,
        xid: [b[4], b[5], b[6], b[7]],
        flags: [b[10], b[11]],
        ciaddr: addr(12),
        chaddr: [0; 16],
        requested: None,
        server_id: None,
    };
    r.chaddr.copy_from_slice(&b[28..44]);
    let mut i = OPTIONS_OFF;
    while i < b.len() {
        let code = b[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*b.get(i + 1)?);
        let v = b.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (53, 1) => r.msg = v[0],
            (50, 4) => r.requested = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            (54, 4) => r.server_id = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            _ => {}
        }
        i += 2 + len;
    }
    (r.msg != 0).then_some(r)
}

/// Answers the DHCP request in `req` (a whole Ethernet frame, as much as the caller
/// copied of it) from the gateway `gw` with `lease`, writing the reply frame into `out`
/// (at least [`REPLY_LEN`] bytes). Returns the reply's length and what it says.
pub fn reply(req: &[u8], gw: &GatewayV4, lease: &DhcpLease, out: &mut [u8]) -> Result<(usize, Answer), NoReply> {
    let r = parse(req).ok_or(NoReply::Malformed)?;
    if out.len() < REPLY_LEN {
        return Err(NoReply::Ignored);
    }
    let answer = match r.msg {
        DISCOVER => Answer::Offer,
        // SELECTING: the client chose a server; only its choice of us is answered.
        REQUEST if r.server_id.is_some_and(|s| s != gw.ip) => return Err(NoReply::Ignored),
        // SELECTING and INIT-REBOOT name the address; RENEWING/REBINDING use it.
        REQUEST => match r.requested.unwrap_or(r.ciaddr) {
            a if a == lease.ip => Answer::Ack,
            _ => Answer::Nak,
        },
        INFORM => Answer::Ack,
        // The binding is control's: RELEASE and DECLINE change nothing.
        RELEASE | DECLINE => return Err(NoReply::Ignored),
        _ => return Err(NoReply::Ignored),
    };
    let inform = r.msg == INFORM;
    let client = MacAddr::from_slice(&r.chaddr);
    let broadcast_flag = r.flags[0] & 0x80 != 0;
    // RFC 2131 4.1: a NAK is broadcast; to a client with an address (RENEWING, INFORM)
    // unicast to it; else broadcast if the client asked, else unicast to the new
    // address and the client's hardware address.
    let (dst_mac, dst_ip) = if answer == Answer::Nak || (r.ciaddr.is_unspecified() && broadcast_flag) {
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    } else if !r.ciaddr.is_unspecified() {
        (eth::src(req), r.ciaddr)
    } else {
        (client, lease.ip)
    };

    let out = &mut out[..REPLY_LEN];
    out.fill(0);
    out[0..6].copy_from_slice(&dst_mac.0);
    out[6..12].copy_from_slice(&gw.mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip_off = eth::HDR_LEN;
    let udp_off = ip_off + 20;
    let b_off = udp_off + 8;
    {
        let h = &mut out[ip_off..udp_off];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((20 + 8 + BOOTP_LEN) as u16).to_be_bytes());
        h[8] = 64;
        h[9] = 17;
        h[12..16].copy_from_slice(&gw.ip.octets());
        h[16..20].copy_from_slice(&dst_ip.octets());
    }
    {
        let u = &mut out[udp_off..b_off];
        u[0..2].copy_from_slice(&SERVER_PORT.to_be_bytes());
        u[2..4].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + BOOTP_LEN) as u16).to_be_bytes());
    }
    let b = &mut out[b_off..];
    b[0] = 2; // BOOTREPLY
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&r.xid);
    b[10..12].copy_from_slice(&r.flags);
    // RFC 2131 table 3: a NAK's ciaddr is 0.
    if answer != Answer::Nak {
        b[12..16].copy_from_slice(&r.ciaddr.octets());
    }
    if answer != Answer::Nak && !inform {
        b[16..20].copy_from_slice(&lease.ip.octets());
    }
    b[28..44].copy_from_slice(&r.chaddr);
    b[236..240].copy_from_slice(&COOKIE);
    let mut o = Opts { b, at: OPTIONS_OFF };
    o.put(53, &[match answer {
        Answer::Offer => OFFER,
        Answer::Ack => ACK,
        Answer::Nak => NAK,
    }]);
    o.put(54, &gw.ip.octets());
    if answer != Answer::Nak {
        if !inform {
            let t = lease.lease_secs;
            o.put(51, &t.to_be_bytes());
            o.put(58, &(t / 2).to_be_bytes());
            o.put(59, &(t / 8 * 7).to_be_bytes());
        }
        let mask = if gw.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(gw.prefix_len.min(32))) };
        o.put(1, &mask.to_be_bytes());
        if lease.router {
            o.put(3, &gw.ip.octets());
        }
        let n = usize::from(lease.dns_len).min(DNS_MAX);
        if n > 0 {
            let mut d = [0u8; 12];
            for (i, a) in lease.dns[..n].iter().enumerate() {
                d[i * 4..i * 4 + 4].copy_from_slice(&a.octets());
            }
            o.put(6, &d[..n * 4]);
        }
        o.put(26, &lease.mtu.to_be_bytes());
    }
    o.b[o.at] = 255;

    let (src, dst) = (gw.ip, dst_ip);
    let mut udp = UdpPacket::new_unchecked(&mut out[udp_off..]);
    udp.fill_checksum(&src.into(), &dst.into());
    Ipv4Packet::new_unchecked(&mut out[ip_off..udp_off]).fill_checksum();
    Ok((REPLY_LEN, answer))
}

/// Writes options one after the other (the caller's set fits the 60 bytes after the
/// cookie with room to spare: at most 57 bytes plus the end mark).
struct Opts<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl Opts<'_> {
    fn put(&mut self, code: u8, v: &[u8]) {
        self.b[self.at] = code;
        self.b[self.at + 1] = v.len() as u8;
        self.b[self.at + 2..self.at + 2 + v.len()].copy_from_slice(v);
        self.at += 2 + v.len();
    }
}

#[cfg(test)]
#[path = "tests_dhcp.rs"]
pub(crate) mod tests;
