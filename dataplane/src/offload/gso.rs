//! Software GSO: cutting TSO (`GSO_TCPV4`/`GSO_TCPV6`) and USO (`GSO_UDP_L4`) super-frames
//! into wire-size frames for ports that cannot take them.
//!
//! Behaviour mirrors the kernel's `inet_gso_segment`/`ipv6_gso_segment` +
//! `tcp_gso_segment`/`__udp_gso_segment`:
//! - every segment carries a copy of all headers (Ethernet + VLAN tags, IP with options
//!   or extension headers, TCP with options / UDP) followed by up to `gso_size` payload
//!   bytes; the last segment may be shorter;
//! - IPv4: total length and header checksum recomputed; the identification field is the
//!   super-frame's id plus the segment index (wrapping), for every segment, DF or not —
//!   virtio headers cannot carry `SKB_GSO_TCP_FIXEDID`, so the kernel increments too
//!   (USO is not UFO, so its datagrams are numbered the same way);
//! - IPv6: payload length rewritten; flow label, extension headers copied;
//! - TCP: sequence number = super-frame seq + payload offset; FIN and PSH only on the last
//!   segment, CWR only on the first (the kernel clears CWR on all later segments whether or
//!   not `GSO_ECN` is set); options (timestamps included) copied unchanged;
//! - UDP: each segment is its own datagram with its own length and checksum;
//! - the input's L4 checksum field and IPv4 header checksum are ignored: every checksum is
//!   computed from scratch, so a wrong partial sum in the super-frame cannot leak.
//!
//! Bytes after the IP datagram (Ethernet padding) are dropped. A super-frame whose payload
//! fits in one segment yields exactly one segment (a zero-payload one yields the headers).

use super::{csum, fix_ipv4_csum, parse_headers, pseudo_sum, put16, put32, Headers, OffloadError, Unsupported};
use super::{IPPROTO_TCP, IPPROTO_UDP, TCP_CSUM_OFFSET, UDP_CSUM_OFFSET};
use crate::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// How the segmenter leaves the L4 checksum of each segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegCsum {
    /// Compute every checksum completely; segments come with a plain (default) header.
    /// For ports without any offload.
    Full,
    /// Leave the L4 checksum field holding the folded pseudo-header sum and return a
    /// `NEEDS_CSUM` header per segment (csum_start = L4 offset). For ports that take
    /// checksum offload but not TSO/USO. The IPv4 header checksum is always complete.
    Partial,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Not a GSO frame: one segment, the frame itself.
    Pass,
    Tcp,
    Udp,
}

/// Cuts one GSO super-frame into segments, one per [`Segmenter::next_into`] call, into
/// buffers the caller provides.
///
/// Owns: a borrow of the super-frame and a cursor; no allocation, no I/O. It never
/// modifies the super-frame. A frame whose header has `GSO_NONE` is passed through as a
/// single segment (with its checksum completed in [`SegCsum::Full`] mode), so callers may
/// hand it any frame. Never panics on any input: malformed frames are refused by
/// [`Segmenter::new`].
#[derive(Clone, Debug)]
pub struct Segmenter<'a> {
    frame: &'a [u8],
    vh: VnetHdr,
    mode: SegCsum,
    kind: Kind,
    h: Headers,
    mss: usize,
    /// Payload bytes already emitted.
    off: usize,
    index: usize,
    count: usize,
    ip_id: u16,
    seq: u32,
}

impl<'a> Segmenter<'a> {
    /// Prepares to segment `frame` (Ethernet onwards, without the virtio header) as `vh`
    /// describes.
    ///
    /// Errors: `gso_size` 0 with a GSO type → [`OffloadError::BadGsoSize`]; `GSO_UDP`
    /// (UFO) → `Unsupported(Ufo)`; unknown type → `Unsupported(GsoType)`; a type that does
    /// not match the frame (TCPV4 on IPv6, TCP type on UDP, …) →
    /// [`OffloadError::GsoMismatch`]; IP fragments → `Unsupported(Fragment)`; and every
    /// error of [`super::parse_headers`]. The advisory `vh.hdr_len` is ignored.
    /// Never panics.
    pub fn new(frame: &'a [u8], vh: &VnetHdr, mode: SegCsum) -> Result<Self, OffloadError> {
        let kind = match vh.gso_kind() {
            GSO_NONE => Kind::Pass,
            GSO_TCPV4 | GSO_TCPV6 => Kind::Tcp,
            GSO_UDP_L4 => Kind::Udp,
            GSO_UDP => return Err(OffloadError::Unsupported(Unsupported::Ufo)),
            _ => return Err(OffloadError::Unsupported(Unsupported::GsoType)),
        };
        let empty =
            Headers { l3_off: 0, ipv6: false, l4_off: 0, l4_proto: 0, l4_hdr_len: 0, ip_end: 0, fragment: false };
        let mut s =
            Segmenter { frame, vh: *vh, mode, kind, h: empty, mss: 0, off: 0, index: 0, count: 1, ip_id: 0, seq: 0 };
        if kind == Kind::Pass {
            return Ok(s);
        }
        if vh.gso_size == 0 {
            return Err(OffloadError::BadGsoSize);
        }
        let h = parse_headers(frame)?;
        if h.fragment {
            return Err(OffloadError::Unsupported(Unsupported::Fragment));
        }
        let matches = match vh.gso_kind() {
            GSO_TCPV4 => !h.ipv6 && h.l4_proto == IPPROTO_TCP,
            GSO_TCPV6 => h.ipv6 && h.l4_proto == IPPROTO_TCP,
            _ => h.l4_proto == IPPROTO_UDP,
        };
        if !matches {
            return Err(OffloadError::GsoMismatch);
        }
        if h.hdr_len() > u16::MAX as usize {
            return Err(OffloadError::BadHeader);
        }
        s.h = h;
        s.mss = vh.gso_size as usize;
        let payload = h.payload_len();
        s.count = payload.div_ceil(s.mss).max(1);
        s.ip_id = if h.ipv6 { 0 } else { super::be16(frame, h.l3_off + 4) };
        s.seq = super::be32(frame, h.l4_off + 4);
        Ok(s)
    }

    /// Number of segments this super-frame yields in total (≥ 1).
    pub fn segment_count(&self) -> usize {
        self.count
    }

    /// Length of the longest segment: a `dst` of this size fits every segment.
    pub fn max_segment_len(&self) -> usize {
        match self.kind {
            Kind::Pass => self.frame.len(),
            _ => self.h.hdr_len() + self.mss.min(self.h.payload_len()),
        }
    }

    /// Segments not yet written.
    pub fn remaining(&self) -> usize {
        self.count - self.index
    }

    /// Writes the next segment into `dst[..len]` and returns `len` and the virtio header
    /// that goes with that segment (no GSO; `NEEDS_CSUM` with `csum_start`/`csum_offset` in
    /// [`SegCsum::Partial`] mode, a default header in [`SegCsum::Full`] mode). Returns
    /// `None` once all segments are written.
    ///
    /// If `dst` is shorter than the segment, returns `Some(Err(BufferTooSmall))` and does
    /// not advance (retry with a bigger buffer). A pass-through frame whose
    /// `csum_start`/`csum_offset` are out of range gives `Some(Err(BadCsumOffset))` in
    /// Full mode. Never panics; bytes of `dst` past `len` are left untouched.
    pub fn next_into(&mut self, dst: &mut [u8]) -> Option<Result<(usize, VnetHdr), OffloadError>> {
        if self.index >= self.count {
            return None;
        }
        Some(self.write_next(dst))
    }

    fn write_next(&mut self, dst: &mut [u8]) -> Result<(usize, VnetHdr), OffloadError> {
        if self.kind == Kind::Pass {
            let n = self.frame.len();
            let out = dst.get_mut(..n).ok_or(OffloadError::BufferTooSmall)?;
            out.copy_from_slice(self.frame);
            let vh = match self.mode {
                SegCsum::Partial => self.vh,
                SegCsum::Full => {
                    super::complete_checksum(out, &self.vh)?;
                    VnetHdr::default()
                }
            };
            self.index += 1;
            return Ok((n, vh));
        }
        let h = self.h;
        let hdr_len = h.hdr_len();
        let plen = self.mss.min(h.payload_len().saturating_sub(self.off));
        let seg_len = hdr_len + plen;
        let src_payload =
            self.frame.get(hdr_len + self.off..hdr_len + self.off + plen).ok_or(OffloadError::Truncated)?;
        let (src_hdr, out) = match (self.frame.get(..hdr_len), dst.get_mut(..seg_len)) {
            (Some(a), Some(b)) => (a, b),
            (None, _) => return Err(OffloadError::Truncated),
            (_, None) => return Err(OffloadError::BufferTooSmall),
        };
        let (oh, op) = out.split_at_mut(hdr_len);
        oh.copy_from_slice(src_hdr);
        op.copy_from_slice(src_payload);

        let l3 = h.l3_off;
        let l4 = h.l4_off;
        let last = self.index + 1 == self.count;
        if h.ipv6 {
            put16(out, l3 + 4, (seg_len - l3 - 40) as u16);
        } else {
            put16(out, l3 + 2, (seg_len - l3) as u16);
            put16(out, l3 + 4, self.ip_id.wrapping_add(self.index as u16));
            fix_ipv4_csum(out, l3, l4 - l3);
        }
        let l4_len = seg_len - l4;
        let csum_offset = match self.kind {
            Kind::Tcp => {
                put32(out, l4 + 4, self.seq.wrapping_add(self.off as u32));
                if let Some(f) = out.get_mut(l4 + 13) {
                    if !last {
                        *f &= !(TCP_FIN | TCP_PSH);
                    }
                    if self.index > 0 {
                        *f &= !TCP_CWR;
                    }
                }
                TCP_CSUM_OFFSET
            }
            _ => {
                put16(out, l4 + 4, l4_len as u16);
                UDP_CSUM_OFFSET
            }
        };
        let field = l4 + csum_offset as usize;
        let ps = pseudo_sum(out, &h, l4_len);
        let vh = match self.mode {
            SegCsum::Partial => {
                put16(out, field, csum::fold(ps));
                VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type: GSO_NONE,
                    hdr_len: hdr_len as u16,
                    gso_size: 0,
                    csum_start: l4 as u16,
                    csum_offset,
                }
            }
            SegCsum::Full => {
                put16(out, field, 0);
                let mut c = out.get(l4..).map_or(0, |b| !csum::fold(csum::sum16(b, ps)));
                if c == 0 && self.kind == Kind::Udp {
                    c = 0xffff;
                }
                put16(out, field, c);
                VnetHdr::default()
            }
        };
        self.off += plen;
        self.index += 1;
        Ok((seg_len, vh))
    }
}
