//! ARP frames for the neighbour cache: builders for requests (broadcast and unicast
//! probes) and replies, and a parser. Stateless; no allocation; never panics: builders
//! return `None` when `out` is too short, the parser `None` for anything that is not
//! Ethernet/IPv4 ARP.

use std::net::Ipv4Addr;

use super::LearnFrom;
use crate::wire::eth::{self, ETHERTYPE_ARP};
use crate::wire::smol::{ArpHardware, ArpOperation, ArpPacket, EthernetProtocol};
use crate::wire::MacAddr;

/// Length of every ARP frame built here: Ethernet + 28 bytes of ARP, padded to the
/// 60-byte Ethernet minimum (without FCS).
pub const ARP_FRAME_LEN: usize = 60;

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// 1: who has `tpa`?
    Request,
    /// 2: `spa` is at `sha`.
    Reply,
    /// Anything else (RARP, InARP, …): data, not an error.
    Other(u16),
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// The operation.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// Gratuitous ARP (an announcement: sender and target address equal).
    pub fn is_gratuitous(&self) -> bool {
        self.spa == self.tpa
    }

    /// How this packet, received on a network where the switch owns `our_ip`, may
    /// update the cache about its sender (`spa` → `sha`), or `None` when it must not:
    /// a sender MAC that is not unicast, an RFC 5227 probe (sender 0.0.0.0), or a
    /// packet claiming our own address (a conflict to report, not to learn).
    pub fn learn_from(&self, our_ip: Ipv4Addr) -> Option<LearnFrom> {
        if !self.sha.is_unicast() || self.spa.is_unspecified() || self.spa == our_ip {
            return None;
        }
        Some(match self.op {
            _ if self.is_gratuitous() => LearnFrom::Unsolicited,
            ArpOp::Reply if self.tpa == our_ip => LearnFrom::Reply,
            ArpOp::Request if self.tpa == our_ip => LearnFrom::Request,
            _ => LearnFrom::Unsolicited,
        })
    }
}

/// Parses an ARP frame (Ethernet header first, up to two VLAN tags skipped). `None`
/// for anything but Ethernet/IPv4 ARP of sufficient length. Never panics.
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let (off, et) = eth::l3(frame)?;
    if et != ETHERTYPE_ARP {
        return None;
    }
    let p = ArpPacket::new_checked(frame.get(off..)?).ok()?;
    if p.hardware_type() != ArpHardware::Ethernet || p.protocol_type() != EthernetProtocol::Ipv4 || p.hardware_len() != 6 || p.protocol_len() != 4 {
        return None;
    }
    let op = match p.operation() {
        ArpOperation::Request => ArpOp::Request,
        ArpOperation::Reply => ArpOp::Reply,
        ArpOperation::Unknown(v) => ArpOp::Other(v),
    };
    let ip = |b: &[u8]| -> Option<Ipv4Addr> { Some(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)) };
    Some(Arp {
        op,
        sha: MacAddr::from_slice(p.source_hardware_addr()),
        spa: ip(p.source_protocol_addr())?,
        tha: MacAddr::from_slice(p.target_hardware_addr()),
        tpa: ip(p.target_protocol_addr())?,
    })
}

fn write_arp(out: &mut [u8], eth_dst: MacAddr, op: ArpOperation, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> Option<usize> {
    let f = out.get_mut(..ARP_FRAME_LEN)?;
    f.fill(0);
    eth::set_dst(f, eth_dst);
    eth::set_src(f, sha);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let mut p = ArpPacket::new_unchecked(&mut f[eth::HDR_LEN..eth::HDR_LEN + 28]);
    p.set_hardware_type(ArpHardware::Ethernet);
    p.set_protocol_type(EthernetProtocol::Ipv4);
    p.set_hardware_len(6);
    p.set_protocol_len(4);
    p.set_operation(op);
    p.set_source_hardware_addr(&sha.0);
    p.set_source_protocol_addr(&spa.octets());
    p.set_target_hardware_addr(&tha.0);
    p.set_target_protocol_addr(&tpa.octets());
    Some(ARP_FRAME_LEN)
}

/// Writes a broadcast "who has `target_ip`? tell `src_ip`" request into `out`
/// (at least [`ARP_FRAME_LEN`] bytes). Returns the frame length. Never panics.
pub fn arp_request(out: &mut [u8], src_mac: MacAddr, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Option<usize> {
    write_arp(out, MacAddr::BROADCAST, ArpOperation::Request, src_mac, src_ip, MacAddr::ZERO, target_ip)
}

/// Like [`arp_request`], sent to the MAC we believe `target_ip` has (refreshing a
/// Stale entry, `Claim::Unicast`). Never panics.
pub fn arp_probe(out: &mut [u8], dst_mac: MacAddr, src_mac: MacAddr, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Option<usize> {
    write_arp(out, dst_mac, ArpOperation::Request, src_mac, src_ip, MacAddr::ZERO, target_ip)
}

/// Writes "`src_ip` is at `src_mac`" addressed to `dst_mac`/`dst_ip` into `out`
/// (at least [`ARP_FRAME_LEN`] bytes). Returns the frame length. Never panics.
pub fn arp_reply(out: &mut [u8], src_mac: MacAddr, src_ip: Ipv4Addr, dst_mac: MacAddr, dst_ip: Ipv4Addr) -> Option<usize> {
    write_arp(out, dst_mac, ArpOperation::Reply, src_mac, src_ip, dst_mac, dst_ip)
}
