//! VXLAN (RFC 7348): outer IPv4 + UDP (destination port 4789) + this 8-byte header +
//! the inner Ethernet frame.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Sent: I set, every reserved bit 0. Received: I must be set; reserved bits are ignored
//! (RFC 7348 §5: "Reserved fields ... MUST be ignored on receipt"), so VXLAN-GBP/GPE
//! bits pass unseen. Owns no state; never panics.

use super::outer::{self, IPPROTO_UDP};
use super::{rd32, DecapError, Decapped, Tunnel, Vni, Vtep, ETH_HDR_LEN};

/// IANA-assigned VXLAN UDP port.
pub const PORT: u16 = 4789;
/// Length of the VXLAN header.
pub const HDR_LEN: usize = 8;
/// The I flag (valid VNI) in the first byte.
pub const FLAG_I: u8 = 0x08;

/// Writes the 8-byte VXLAN header for `vni` at the start of `h` (which must hold 8 bytes;
/// a shorter slice is left untouched).
pub fn write_header(h: &mut [u8], vni: Vni) {
    if let Some(h) = h.get_mut(..HDR_LEN) {
        let v = vni.get().to_be_bytes();
        h.copy_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
    }
}

/// Parses a VXLAN header at the start of `payload` (a UDP payload, e.g. what a UDP
/// socket bound to 4789 returns): returns the VNI and the inner frame's `(offset, len)`
/// in `payload`. Errors: [`DecapError::Truncated`] below 8 bytes, [`DecapError::VxlanFlags`]
/// without the I flag, [`DecapError::InnerTruncated`] when less than an Ethernet header
/// follows. Never panics.
pub fn parse_header(payload: &[u8]) -> Result<(Vni, usize, usize), DecapError> {
    if payload.len() < HDR_LEN {
        return Err(DecapError::Truncated);
    }
    if payload[0] & FLAG_I == 0 {
        return Err(DecapError::VxlanFlags);
    }
    let inner_len = payload.len() - HDR_LEN;
    if inner_len < ETH_HDR_LEN {
        return Err(DecapError::InnerTruncated);
    }
    let vni = Vni::new(rd32(payload, 4) >> 8).ok_or(DecapError::VxlanFlags)?;
    Ok((vni, HDR_LEN, inner_len))
}

/// Decapsulates a UDP socket payload (VXLAN header + inner frame). The outer fields of
/// the result are unspecified/0 (the caller knows the sender from `recvfrom`).
pub fn decap_payload(payload: &[u8]) -> Result<Decapped, DecapError> {
    let (vni, off, len) = parse_header(payload)?;
    Ok(Decapped::payload_only(Tunnel::Vxlan(vni), off, len))
}

/// Decapsulates an outer IPv4 packet (`pkt` starts at the IPv4 header; bytes past its
/// total length are ignored): validates IPv4 (see [`Vtep::verify_csum`],
/// [`Vtep::local_ip`]), UDP (destination [`Vtep::port`], length, checksum if non-zero)
/// and the VXLAN header. The inner frame is `pkt[d.inner_range()]`. Never panics.
pub fn decap(vtep: &Vtep, pkt: &[u8]) -> Result<Decapped, DecapError> {
    decap_with(vtep, pkt, vtep.verify_csum)
}

/// [`decap`] with the UDP checksum check decided by the caller (`verify_l4`).
pub(crate) fn decap_with(vtep: &Vtep, pkt: &[u8], verify_l4: bool) -> Result<Decapped, DecapError> {
    let ip = outer::parse_ipv4(vtep, pkt, IPPROTO_UDP)?;
    let (sport, p, end) = outer::parse_udp(vtep, pkt, &ip, verify_l4)?;
    let payload = pkt.get(p..end).ok_or(DecapError::Truncated)?;
    let (vni, off, len) = parse_header(payload)?;
    Ok(Decapped {
        tunnel: Tunnel::Vxlan(vni),
        inner_off: p + off,
        inner_len: len,
        outer_src: ip.src,
        outer_dst: ip.dst,
        src_port: sport,
        outer_tos: ip.tos,
    })
}
