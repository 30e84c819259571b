//! Packets addressed to the switch itself on a network: the gateway answers ARP for
//! its address and ICMP echo requests. Replies are written in place when the caller
//! owns the buffer alone, or into a new buffer when the request is also flooded.
//!
//! Pure functions over byte slices: no sockets, no allocation, no panics on any input.

use crate::tables::GatewayV4;
use crate::wire::eth::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::smol::{
    ArpHardware, ArpOperation, ArpPacket, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet,
};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

/// What to do with a frame addressed to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// An ARP request for the gateway address: answer with `arp_reply`.
    ArpRequest,
    /// An ICMP echo request to the gateway address: answer with `echo_reply_in_place`.
    EchoRequest,
    /// Not for the gateway (e.g. a broadcast ARP for someone else): nothing to do.
    NotForUs,
    /// Addressed to the gateway but not something it answers (routing comes later).
    Unhandled,
    /// Malformed.
    Malformed,
}

/// The ARP packet in `frame` when it is ARP for IPv4 over Ethernet (the only kind
/// answered here).
fn ethernet_ipv4_arp(frame: &[u8]) -> Option<ArpPacket<&[u8]>> {
    let arp = ArpPacket::new_checked(frame.get(eth::HDR_LEN..)?).ok()?;
    let ok = arp.hardware_type() == ArpHardware::Ethernet
        && arp.protocol_type() == EthernetProtocol::Ipv4
        && arp.hardware_len() == 6
        && arp.protocol_len() == 4;
    ok.then_some(arp)
}

/// Decides what a frame means to the gateway `gw`. Frames with VLAN tags are not for us.
pub fn classify(frame: &[u8], gw: &GatewayV4) -> Local {
    if frame.len() < eth::HDR_LEN {
        return Local::Malformed;
    }
    match eth::ethertype(frame) {
        ETHERTYPE_ARP => {
            let Some(arp) = ethernet_ipv4_arp(frame) else { return Local::Malformed };
            if arp.operation() == ArpOperation::Request && arp.target_protocol_addr() == gw.ip.octets() {
                Local::ArpRequest
            } else {
                Local::NotForUs
            }
        }
        ETHERTYPE_IPV4 => {
            let Ok(ip) = Ipv4Packet::new_checked(&frame[eth::HDR_LEN..]) else { return Local::Malformed };
            if ip.dst_addr() != gw.ip {
                return Local::Unhandled;
            }
            if ip.next_header() != IpProtocol::Icmp || ip.more_frags() || ip.frag_offset() != 0 {
                return Local::Unhandled;
            }
            let payload = &frame[eth::HDR_LEN + ip.header_len() as usize..eth::HDR_LEN + ip.total_len() as usize];
            match Icmpv4Packet::new_checked(payload) {
                Ok(icmp) if icmp.msg_type() == Icmpv4Message::EchoRequest => Local::EchoRequest,
                Ok(_) => Local::Unhandled,
                Err(_) => Local::Malformed,
            }
        }
        _ => Local::Unhandled,
    }
}

/// Length of an ARP reply frame (Ethernet + ARP for IPv4, padded to the 60-byte minimum).
pub const ARP_REPLY_LEN: usize = 60;

/// Writes the reply to the ARP request `req` into `out` (at least `ARP_REPLY_LEN`
/// bytes). `req` must have been classified `ArpRequest`. Returns the reply length.
pub fn arp_reply(req: &[u8], gw: &GatewayV4, out: &mut [u8]) -> Option<usize> {
    write_arp_reply(req, Some(gw.ip.octets()), gw.mac, out)
}

/// Writes the reply to the ARP request `req` on behalf of the owner of the address it
/// asks for, at `mac` (an endpoint of another host: proxy ARP). `req` must have been
/// accepted by [`arp_request_target`]. Returns the reply length.
pub fn arp_reply_for(req: &[u8], mac: MacAddr, out: &mut [u8]) -> Option<usize> {
    write_arp_reply(req, None, mac, out)
}

/// The reply to `req` from `ip` (the address asked for when `None`) at `mac`.
fn write_arp_reply(req: &[u8], ip: Option<[u8; 4]>, mac: MacAddr, out: &mut [u8]) -> Option<usize> {
    if out.len() < ARP_REPLY_LEN {
        return None;
    }
    let arp = ArpPacket::new_checked(req.get(eth::HDR_LEN..)?).ok()?;
    let (sha, spa) = (MacAddr::from_slice(arp.source_hardware_addr()), copy4(arp.source_protocol_addr())?);
    let ip = match ip {
        Some(ip) => ip,
        None => copy4(arp.target_protocol_addr())?,
    };
    out[..ARP_REPLY_LEN].fill(0);
    eth::set_dst(out, sha);
    eth::set_src(out, mac);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let mut r = ArpPacket::new_unchecked(&mut out[eth::HDR_LEN..eth::HDR_LEN + 28]);
    r.set_hardware_type(ArpHardware::Ethernet);
    r.set_protocol_type(EthernetProtocol::Ipv4);
    r.set_hardware_len(6);
    r.set_protocol_len(4);
    r.set_operation(ArpOperation::Reply);
    r.set_source_hardware_addr(&mac.0);
    r.set_source_protocol_addr(&ip);
    r.set_target_hardware_addr(&sha.0);
    r.set_target_protocol_addr(&spa);
    Some(ARP_REPLY_LEN)
}

/// The address an ARP request in `frame` asks for: a well-formed Ethernet/IPv4 request
/// that is not a gratuitous announcement (sender address = target address, which wants
/// no answer). For answering on behalf of endpoints of other hosts (proxy ARP).
pub fn arp_request_target(frame: &[u8]) -> Option<Ipv4Addr> {
    if eth::ethertype(frame) != ETHERTYPE_ARP {
        return None;
    }
    let arp = ethernet_ipv4_arp(frame)?;
    if arp.operation() != ArpOperation::Request || arp.source_protocol_addr() == arp.target_protocol_addr() {
        return None;
    }
    Some(Ipv4Addr::from(copy4(arp.target_protocol_addr())?))
}

/// Turns the ICMP echo request in `frame` (classified `EchoRequest`) into the reply, in
/// place: addresses swapped, TTL 64, type 0, checksums recomputed. Returns the reply
/// length (the request trimmed to its IP length, which drops Ethernet padding).
pub fn echo_reply_in_place(frame: &mut [u8], gw: &GatewayV4) -> Option<usize> {
    let src_mac = eth::src(frame);
    let (hl, tl, src_ip) = {
        let ip = Ipv4Packet::new_checked(frame.get(eth::HDR_LEN..)?).ok()?;
        (ip.header_len() as usize, ip.total_len() as usize, ip.src_addr())
    };
    eth::set_dst(frame, src_mac);
    eth::set_src(frame, gw.mac);
    let end = eth::HDR_LEN + tl;
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[eth::HDR_LEN..end]);
    ip.set_dst_addr(src_ip);
    ip.set_src_addr(gw.ip);
    ip.set_hop_limit(64);
    ip.fill_checksum();
    // The request's checksum may have been left to offload; recompute it whole.
    let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[eth::HDR_LEN + hl..end]);
    icmp.set_msg_type(Icmpv4Message::EchoReply);
    icmp.fill_checksum();
    Some(end)
}

fn copy4(b: &[u8]) -> Option<[u8; 4]> {
    b.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket};

    fn gw() -> GatewayV4 {
        GatewayV4 { ip: "10.10.0.1".parse().unwrap(), prefix_len: 24, mac: "02:00:00:00:00:01".parse().unwrap() }
    }

    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0x42, 10, 10, 0, 2]);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0x42, 10, 10, 0, 2, 10, 10, 0, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.resize(60, 0);
        f
    }

    #[test]
    fn answers_arp_for_gateway_only() {
        let req = arp_request([10, 10, 0, 1]);
        assert_eq!(classify(&req, &gw()), Local::ArpRequest);
        let mut out = [0u8; 64];
        let n = arp_reply(&req, &gw(), &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(&r[0..6], &[2, 0x42, 10, 10, 0, 2]);
        assert_eq!(&r[6..12], &gw().mac.0);
        let p = ArpPacket::new_checked(&r[14..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::Reply);
        assert_eq!(p.source_protocol_addr(), &[10, 10, 0, 1]);
        assert_eq!(p.target_protocol_addr(), &[10, 10, 0, 2]);
        assert_eq!(classify(&arp_request([10, 10, 0, 3]), &gw()), Local::NotForUs);
        assert_eq!(classify(&req[..20], &gw()), Local::Malformed);
    }

    #[test]
    fn echo_reply_is_valid() {
        let b = PacketBuilder::ethernet2([2, 0x42, 10, 10, 0, 2], gw().mac.0)
            .ipv4([10, 10, 0, 2], [10, 10, 0, 1], 64)
            .icmpv4_echo_request(7, 9);
        let payload = [0xabu8; 56];
        let mut f = Vec::new();
        b.write(&mut f, &payload).unwrap();
        f.extend_from_slice(&[0; 4]); // padding is trimmed
        assert_eq!(classify(&f, &gw()), Local::EchoRequest);
        let n = echo_reply_in_place(&mut f, &gw()).unwrap();
        let p = SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let ip = match p.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip,
            _ => panic!(),
        };
        assert_eq!(ip.header().source(), [10, 10, 0, 1]);
        assert_eq!(ip.header().destination(), [10, 10, 0, 2]);
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        match p.transport.unwrap() {
            etherparse::TransportSlice::Icmpv4(icmp) => {
                assert_eq!(icmp.icmp_type(), etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 7, seq: 9 }));
                assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
            }
            _ => panic!(),
        }
    }

    #[test]
    fn other_ip_to_gateway_unhandled_and_garbage_malformed() {
        let b = PacketBuilder::ethernet2([2; 6], gw().mac.0).ipv4([10, 10, 0, 2], [8, 8, 8, 8], 64).udp(1, 2);
        let mut f = Vec::new();
        b.write(&mut f, &[1, 2, 3]).unwrap();
        assert_eq!(classify(&f, &gw()), Local::Unhandled);
        let mut g = f.clone();
        g[14] = 0x4f; // IHL beyond the packet
        assert_eq!(classify(&g, &gw()), Local::Malformed);
        for len in 0..f.len() {
            let _ = classify(&f[..len], &gw());
        }
    }
}
