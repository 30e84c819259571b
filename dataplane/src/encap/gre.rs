//! Ethernet over GRE (RFC 2784, key and sequence number from RFC 2890): outer IPv4 with
//! protocol 47, this header, then the inner Ethernet frame (protocol type 0x6558,
//! Transparent Ethernet Bridging — what Linux calls `gretap`).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (optional)      |       Reserved1 (Optional)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (optional)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (Optional)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Sent: K and the key when the peer has one, C and the checksum when [`Vtep::tx_csum`],
//! never S (sequence numbers need per-peer state and reordering logic; not done).
//! Received: version must be 0; bits 1 (routing, RFC 1701), 4 (strict source route) and
//! 5 must be 0 (RFC 2784 §2.3 "MUST discard" for bits 1–5 except K and S, which RFC 2890
//! defines); bits 6–12 are ignored; C, K and S fields are skipped, the checksum verified
//! when [`Vtep::verify_csum`], the sequence number ignored. Owns no state; never panics.

use super::outer::{self, IPPROTO_GRE};
use super::{rd16, rd32, DecapError, Decapped, Tunnel, Vtep, ETH_HDR_LEN};
use crate::offload::csum;

/// Length of the mandatory part of the header (flags/version and protocol type).
pub const BASE_LEN: usize = 4;
/// Protocol type: Transparent Ethernet Bridging.
pub const PROTO_TEB: u16 = 0x6558;
/// C: checksum and reserved1 present.
pub const FLAG_C: u16 = 0x8000;
/// R: routing present (RFC 1701; discarded).
pub const FLAG_R: u16 = 0x4000;
/// K: key present.
pub const FLAG_K: u16 = 0x2000;
/// S: sequence number present.
pub const FLAG_S: u16 = 0x1000;
/// Strict source route (RFC 1701; discarded).
pub const FLAG_SSR: u16 = 0x0800;
/// Bit 5, the top recursion-control bit (RFC 2784 requires it 0).
const FLAG_BIT5: u16 = 0x0400;
/// Version field mask.
pub const VERSION_MASK: u16 = 0x0007;

/// Length of the header as sent with these options.
pub const fn header_len(key: bool, csum: bool) -> usize {
    BASE_LEN + if key { 4 } else { 0 } + if csum { 4 } else { 0 }
}

/// Writes a GRE header (0x6558, optional checksum field zeroed, optional key) at the
/// start of `h`, which must be exactly [`header_len`] long or longer (a shorter slice is
/// left untouched). The checksum itself is filled by [`fill_csum`] once the payload is in
/// place.
pub fn write_header(h: &mut [u8], key: Option<u32>, csum: bool) {
    let len = header_len(key.is_some(), csum);
    let Some(h) = h.get_mut(..len) else {
        return;
    };
    let mut flags = 0u16;
    if csum {
        flags |= FLAG_C;
    }
    if key.is_some() {
        flags |= FLAG_K;
    }
    h[0..2].copy_from_slice(&flags.to_be_bytes());
    h[2..4].copy_from_slice(&PROTO_TEB.to_be_bytes());
    let mut at = BASE_LEN;
    if csum {
        h[at..at + 4].fill(0);
        at += 4;
    }
    if let Some(k) = key {
        h[at..at + 4].copy_from_slice(&k.to_be_bytes());
    }
}

/// Fills the checksum field of the GRE packet `gre` (header with C set and the whole
/// payload): the Internet checksum of the GRE header and payload, field taken as 0.
pub fn fill_csum(gre: &mut [u8]) {
    if gre.len() < BASE_LEN + 4 || rd16(gre, 0) & FLAG_C == 0 {
        return;
    }
    gre[4] = 0;
    gre[5] = 0;
    let c = csum::checksum(gre).to_be_bytes();
    gre[4] = c[0];
    gre[5] = c[1];
}

/// Parses the GRE header at the start of `gre` (the GRE header and payload up to the end
/// of the outer IP packet): returns the key (if K), and the inner frame's offset and
/// length within `gre`. `verify` checks a present checksum. Never panics.
pub fn parse_header(gre: &[u8], verify: bool) -> Result<(Option<u32>, usize, usize), DecapError> {
    if gre.len() < BASE_LEN {
        return Err(DecapError::Truncated);
    }
    let flags = rd16(gre, 0);
    if flags & VERSION_MASK != 0 {
        return Err(DecapError::GreVersion);
    }
    if flags & (FLAG_R | FLAG_SSR | FLAG_BIT5) != 0 {
        return Err(DecapError::GreFlags);
    }
    if rd16(gre, 2) != PROTO_TEB {
        return Err(DecapError::GreProtocol);
    }
    let (c, k, s) = (flags & FLAG_C != 0, flags & FLAG_K != 0, flags & FLAG_S != 0);
    let hl = BASE_LEN + 4 * (c as usize + k as usize + s as usize);
    if gre.len() < hl {
        return Err(DecapError::Truncated);
    }
    if c && verify && csum::checksum(gre) != 0 {
        return Err(DecapError::GreChecksum);
    }
    let key = k.then(|| rd32(gre, BASE_LEN + 4 * c as usize));
    let inner_len = gre.len() - hl;
    if inner_len < ETH_HDR_LEN {
        return Err(DecapError::InnerTruncated);
    }
    Ok((key, hl, inner_len))
}

/// Decapsulates an outer IPv4 packet carrying GRE (`pkt` starts at the IPv4 header, as
/// an `IPPROTO_GRE` raw socket or AF_PACKET after the Ethernet header delivers it; bytes
/// past the IPv4 total length are ignored). Returns `Tunnel::Gre(key)` and the inner
/// frame's range in `pkt`. Never panics.
pub fn decap(vtep: &Vtep, pkt: &[u8]) -> Result<Decapped, DecapError> {
    decap_with(vtep, pkt, vtep.verify_csum)
}

/// [`decap`] with the GRE checksum check decided by the caller (`verify_l4`).
pub(crate) fn decap_with(vtep: &Vtep, pkt: &[u8], verify_l4: bool) -> Result<Decapped, DecapError> {
    let ip = outer::parse_ipv4(vtep, pkt, IPPROTO_GRE)?;
    let gre = pkt.get(ip.l4..ip.end).ok_or(DecapError::Truncated)?;
    let (key, off, len) = parse_header(gre, verify_l4)?;
    Ok(Decapped {
        tunnel: Tunnel::Gre(key),
        inner_off: ip.l4 + off,
        inner_len: len,
        outer_src: ip.src,
        outer_dst: ip.dst,
        src_port: 0,
        outer_tos: ip.tos,
    })
}
