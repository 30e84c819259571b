//! Software offloads: what a NIC or the kernel would otherwise do for frames that carry
//! a `virtio_net_hdr` ([`crate::vnet::VnetHdr`]).
//!
//! - [`csum`]: Internet checksum arithmetic (RFC 1071/1624).
//! - [`complete_checksum`]: finishes a `NEEDS_CSUM` (CHECKSUM_PARTIAL) frame in place.
//! - [`verify_checksums`]: checks the IPv4 header and TCP/UDP/ICMP checksums of a frame.
//! - [`gso`]: cuts TCP (TSO) and UDP_L4 (USO) super-frames into wire-size segments.
//! - [`gro`]: coalesces in-order TCP segments of one flow back into a super-frame.
//! - [`parse_headers`]: the small L2/L3/L4 locator the above share.
//!
//! Contract for everything in this module: it owns no state beyond its arguments,
//! never allocates, never panics on any input (malformed frames give an
//! [`OffloadError`]), and writes only into buffers the caller passes. Frame offsets
//! (`csum_start`, [`Headers`] fields) are measured from the first byte of the Ethernet
//! header; the virtio header itself is never part of `frame`. The advisory `hdr_len`
//! of a [`VnetHdr`] is never trusted: header lengths come from parsing.
//!
//! Supported framing: Ethernet II with up to two 802.1Q/802.1ad tags (0x8100, 0x88a8,
//! 0x9100), then IPv4 (with options) or IPv6 (with hop-by-hop, destination-options,
//! and routing headers whose Segments Left is 0; fragment headers are recognised), then
//! TCP or UDP. Anything else is reported as [`OffloadError::Unsupported`].

pub mod csum;
pub mod gro;
pub mod gso;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gro;
#[cfg(test)]
mod tests_gso;

pub use gro::TcpCoalescer;
pub use gso::{SegCsum, Segmenter};

use crate::vnet::VnetHdr;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// Offset of the checksum field within a TCP header (a `csum_offset`).
pub const TCP_CSUM_OFFSET: u16 = 16;
/// Offset of the checksum field within a UDP header (a `csum_offset`).
pub const UDP_CSUM_OFFSET: u16 = 6;

/// What a frame used that this module does not handle (see [`OffloadError::Unsupported`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// The (innermost) EtherType is neither IPv4 nor IPv6.
    EtherType,
    /// More than two VLAN tags.
    VlanDepth,
    /// An IPv6 extension header other than hop-by-hop / routing (Segments Left 0) /
    /// destination options / fragment, or too many of them.
    Ipv6ExtHeader,
    /// The packet is an IP fragment, so its L4 header/payload is not all there.
    Fragment,
    /// The L4 protocol is not the one the operation needs (TCP or UDP).
    L4Proto,
    /// A `gso_type` this module does not know.
    GsoType,
    /// UFO (`GSO_UDP`, IP fragmentation of UDP), obsolete and not implemented.
    Ufo,
}

impl Unsupported {
    /// A short static description, for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsupported::EtherType => "unsupported ethertype",
            Unsupported::VlanDepth => "more than two vlan tags",
            Unsupported::Ipv6ExtHeader => "unsupported ipv6 extension header",
            Unsupported::Fragment => "ip fragment",
            Unsupported::L4Proto => "unsupported l4 protocol",
            Unsupported::GsoType => "unknown gso type",
            Unsupported::Ufo => "ufo (gso udp) not supported",
        }
    }
}

/// Why an offload operation refused a frame. Cheap to copy; use [`OffloadError::as_str`]
/// for counters/logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// The frame ends before a header (or the length an IP header claims) does.
    Truncated,
    /// A header field is impossible: wrong IP version, IHL < 5, TCP data offset < 5,
    /// IPv4 total length below the header length, UDP length not matching IP.
    BadHeader,
    /// The frame uses something this module does not implement.
    Unsupported(Unsupported),
    /// `csum_start`/`csum_offset` point outside the frame.
    BadCsumOffset,
    /// A GSO type with `gso_size` 0.
    BadGsoSize,
    /// The `gso_type` does not match the frame (e.g. `GSO_TCPV4` on an IPv6 or UDP frame).
    GsoMismatch,
    /// The caller's output buffer is shorter than the result.
    BufferTooSmall,
}

impl OffloadError {
    /// A short static description, for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OffloadError::Truncated => "truncated frame",
            OffloadError::BadHeader => "malformed header",
            OffloadError::Unsupported(u) => u.as_str(),
            OffloadError::BadCsumOffset => "csum_start/csum_offset out of range",
            OffloadError::BadGsoSize => "gso_size 0",
            OffloadError::GsoMismatch => "gso_type does not match frame",
            OffloadError::BufferTooSmall => "output buffer too small",
        }
    }
}

impl core::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for OffloadError {}

/// Where the headers of a frame are, as found by [`parse_headers`]. All offsets are from
/// the start of the Ethernet header and are within the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Offset of the IP header (14, 18 or 22).
    pub l3_off: usize,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Offset of the L4 header (after IPv4 options / IPv6 extension headers).
    pub l4_off: usize,
    /// IP protocol / final next-header value.
    pub l4_proto: u8,
    /// TCP: data offset × 4; UDP: 8; 0 for other protocols and for fragments.
    pub l4_hdr_len: usize,
    /// End of the IP datagram as its length field says (≤ frame length; bytes after it
    /// are Ethernet padding and are ignored by every operation here).
    pub ip_end: usize,
    /// IPv4 MF/offset set, or an IPv6 fragment header present. L4 is then not parsed.
    pub fragment: bool,
}

impl Headers {
    /// Length of all headers, Ethernet through L4 (`l4_off + l4_hdr_len`).
    #[inline]
    pub fn hdr_len(&self) -> usize {
        self.l4_off + self.l4_hdr_len
    }

    /// Bytes after the L4 header up to the end of the IP datagram.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.ip_end.saturating_sub(self.hdr_len())
    }
}

#[inline]
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off.wrapping_add(2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.wrapping_add(4)) {
        Some(&[a, b1, c, d]) => u32::from_be_bytes([a, b1, c, d]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    if let Some(s) = b.get_mut(off..off.wrapping_add(2)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off.wrapping_add(4)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Skips Ethernet and VLAN tags: returns (offset of L3, EtherType).
fn parse_l2(frame: &[u8]) -> Result<(usize, u16), OffloadError> {
    if frame.len() < 14 {
        return Err(OffloadError::Truncated);
    }
    let mut et = be16(frame, 12);
    let mut off = 14;
    let mut tags = 0;
    while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
        if tags == 2 {
            return Err(OffloadError::Unsupported(Unsupported::VlanDepth));
        }
        if frame.len() < off + 4 {
            return Err(OffloadError::Truncated);
        }
        et = be16(frame, off + 2);
        off += 4;
        tags += 1;
    }
    Ok((off, et))
}

/// Finds the IP datagram: (l3_off, ipv6, ip_end). Checks only the fixed IP header.
fn parse_l3_bounds(frame: &[u8]) -> Result<(usize, bool, usize), OffloadError> {
    let (l3, et) = parse_l2(frame)?;
    match et {
        0x0800 => {
            if frame.len() < l3 + 20 {
                return Err(OffloadError::Truncated);
            }
            let tot = be16(frame, l3 + 2) as usize;
            if frame[l3] >> 4 != 4 || tot < 20 {
                return Err(OffloadError::BadHeader);
            }
            if frame.len() < l3 + tot {
                return Err(OffloadError::Truncated);
            }
            Ok((l3, false, l3 + tot))
        }
        0x86dd => {
            if frame.len() < l3 + 40 {
                return Err(OffloadError::Truncated);
            }
            if frame[l3] >> 4 != 6 {
                return Err(OffloadError::BadHeader);
            }
            let end = l3 + 40 + be16(frame, l3 + 4) as usize;
            if frame.len() < end {
                return Err(OffloadError::Truncated);
            }
            Ok((l3, true, end))
        }
        _ => Err(OffloadError::Unsupported(Unsupported::EtherType)),
    }
}

/// Locates the L2/L3/L4 headers of an Ethernet frame and validates their lengths.
///
/// Owns nothing and checks no checksum. TCP headers are checked for a data offset ≥ 5
/// that fits in the datagram, UDP for 8 bytes; other L4 protocols are located but not
/// parsed. Errors: [`OffloadError::Truncated`] when the frame is shorter than a header
/// or the IP length; [`OffloadError::BadHeader`] for impossible fields;
/// [`OffloadError::Unsupported`] for non-IP, >2 VLAN tags, or IPv6 extension headers
/// other than hop-by-hop / destination options / routing with Segments Left 0 /
/// fragment. Never panics on any input.
pub fn parse_headers(frame: &[u8]) -> Result<Headers, OffloadError> {
    let (l3, ipv6, ip_end) = parse_l3_bounds(frame)?;
    let mut fragment = false;
    let (l4_off, proto) = if !ipv6 {
        let ihl = ((frame[l3] & 0x0f) as usize) * 4;
        if ihl < 20 || l3 + ihl > ip_end {
            return Err(OffloadError::BadHeader);
        }
        fragment = be16(frame, l3 + 6) & 0x3fff != 0;
        (l3 + ihl, frame[l3 + 9])
    } else {
        let mut nh = frame[l3 + 6];
        let mut off = l3 + 40;
        let mut n = 0;
        loop {
            match nh {
                0 | 43 | 60 => {
                    if off + 8 > ip_end {
                        return Err(OffloadError::Truncated);
                    }
                    let hl = (frame[off + 1] as usize + 1) * 8;
                    if off + hl > ip_end {
                        return Err(OffloadError::Truncated);
                    }
                    // Routing header with segments left: the L4 pseudo-header uses the
                    // final destination, which is not in the fixed header.
                    if nh == 43 && frame[off + 3] != 0 {
                        return Err(OffloadError::Unsupported(Unsupported::Ipv6ExtHeader));
                    }
                    nh = frame[off];
                    off += hl;
                }
                44 => {
                    if off + 8 > ip_end {
                        return Err(OffloadError::Truncated);
                    }
                    fragment = true;
                    nh = frame[off];
                    off += 8;
                    break;
                }
                50 | 51 | 135 | 139 | 140 | 253 | 254 => {
                    return Err(OffloadError::Unsupported(Unsupported::Ipv6ExtHeader));
                }
                _ => break,
            }
            n += 1;
            if n > 8 {
                return Err(OffloadError::Unsupported(Unsupported::Ipv6ExtHeader));
            }
        }
        (off, nh)
    };
    let mut l4_hdr_len = 0;
    if !fragment {
        match proto {
            IPPROTO_TCP => {
                if l4_off + 20 > ip_end {
                    return Err(OffloadError::Truncated);
                }
                let doff = ((frame[l4_off + 12] >> 4) as usize) * 4;
                if doff < 20 {
                    return Err(OffloadError::BadHeader);
                }
                if l4_off + doff > ip_end {
                    return Err(OffloadError::Truncated);
                }
                l4_hdr_len = doff;
            }
            IPPROTO_UDP => {
                if l4_off + 8 > ip_end {
                    return Err(OffloadError::Truncated);
                }
                l4_hdr_len = 8;
            }
            _ => {}
        }
    }
    Ok(Headers { l3_off: l3, ipv6, l4_off, l4_proto: proto, l4_hdr_len, ip_end, fragment })
}

/// Pseudo-header sum for the L4 part of `frame` as located by `h`, for `l4_len` bytes.
/// `h` must come from `parse_headers(frame)` (so the address fields are in bounds).
pub(crate) fn pseudo_sum(frame: &[u8], h: &Headers, l4_len: usize) -> u32 {
    let l3 = h.l3_off;
    if h.ipv6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        if let (Some(a), Some(b)) = (frame.get(l3 + 8..l3 + 24), frame.get(l3 + 24..l3 + 40)) {
            s.copy_from_slice(a);
            d.copy_from_slice(b);
        }
        csum::pseudo_v6(&s, &d, h.l4_proto, l4_len as u32)
    } else {
        let s = be32(frame, l3 + 12).to_be_bytes();
        let d = be32(frame, l3 + 16).to_be_bytes();
        // l4_len ≤ 65535 - 20 for IPv4, so the cast is exact.
        csum::pseudo_v4(s, d, h.l4_proto, l4_len as u16)
    }
}

/// Recomputes the IPv4 header checksum of the header at `l3..l3+ihl` in place.
pub(crate) fn fix_ipv4_csum(buf: &mut [u8], l3: usize, ihl: usize) {
    put16(buf, l3 + 10, 0);
    if let Some(h) = buf.get(l3..l3 + ihl) {
        let c = csum::checksum(h);
        put16(buf, l3 + 10, c);
    }
}

/// Completes a CHECKSUM_PARTIAL frame in place (`NEEDS_CSUM`): sums `frame[csum_start..]`
/// (the checksum field holds the folded pseudo-header sum and is included as the seed),
/// and stores the complement at `csum_start + csum_offset`.
///
/// The sum runs to the end of the IP datagram when the frame parses as IPv4/IPv6 with
/// `csum_start` inside it (so Ethernet padding is excluded), else to the end of `frame`.
/// With the UDP layout (`csum_offset == 6`) a computed 0 is stored as 0xffff
/// (RFC 768; also valid for DCCP); other results are stored as computed.
///
/// Does nothing and returns `Ok` when `vh` lacks `F_NEEDS_CSUM`. Does not modify `vh`:
/// the caller clears the flag. Errors: [`OffloadError::BadCsumOffset`] when the 2-byte
/// field does not lie within the summed range (frame untouched). Never panics.
pub fn complete_checksum(frame: &mut [u8], vh: &VnetHdr) -> Result<(), OffloadError> {
    if !vh.needs_csum() {
        return Ok(());
    }
    let start = vh.csum_start as usize;
    let field = start + vh.csum_offset as usize;
    let end = match parse_l3_bounds(frame) {
        Ok((_, _, ip_end)) if start < ip_end && field + 2 <= ip_end => ip_end,
        _ => frame.len(),
    };
    if field + 2 > end {
        return Err(OffloadError::BadCsumOffset);
    }
    let mut c = csum::checksum(&frame[start..end]);
    if c == 0 && vh.csum_offset == UDP_CSUM_OFFSET {
        c = 0xffff;
    }
    put16(frame, field, c);
    Ok(())
}

/// Verifies the checksums of a plain (non-GSO, fully checksummed) frame: the IPv4
/// header checksum and, for TCP, UDP, ICMP and ICMPv6, the L4 checksum. `Ok(false)`
/// means some checksum is wrong (including a zero UDP checksum over IPv6); a zero UDP
/// checksum over IPv4 means "none" and passes. Other L4 protocols only get the IPv4
/// header checked.
///
/// Errors: those of [`parse_headers`]; a UDP length that differs from the IP payload
/// length gives [`OffloadError::BadHeader`]; fragments give
/// `Unsupported(Fragment)` (their L4 checksum spans several frames). Never panics.
pub fn verify_checksums(frame: &[u8]) -> Result<bool, OffloadError> {
    let h = parse_headers(frame)?;
    let mut ok = true;
    if !h.ipv6 {
        ok &= csum::checksum(&frame[h.l3_off..h.l4_off]) == 0;
    }
    if h.fragment {
        return Err(OffloadError::Unsupported(Unsupported::Fragment));
    }
    let l4 = &frame[h.l4_off..h.ip_end];
    match (h.l4_proto, h.ipv6) {
        (IPPROTO_TCP, _) | (IPPROTO_ICMPV6, true) => {
            ok &= csum::fold(csum::sum16(l4, pseudo_sum(frame, &h, l4.len()))) == 0xffff;
        }
        (IPPROTO_UDP, _) => {
            if be16(l4, 4) as usize != l4.len() {
                return Err(OffloadError::BadHeader);
            }
            if be16(l4, 6) == 0 {
                ok &= !h.ipv6;
            } else {
                ok &= csum::fold(csum::sum16(l4, pseudo_sum(frame, &h, l4.len()))) == 0xffff;
            }
        }
        (IPPROTO_ICMP, false) => ok &= csum::checksum(l4) == 0,
        _ => {}
    }
    Ok(ok)
}
