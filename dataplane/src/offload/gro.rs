//! GRO-like TCP coalescing: merges a train of in-order, wire-size TCP segments of one
//! flow into a single super-frame that a TAP/AF_PACKET port can take with a GSO virtio
//! header (the reverse of [`super::gso`]).
//!
//! Merge rules follow the kernel's `inet_gro_receive`/`ipv6_gro_receive` +
//! `tcp_gro_receive` (classic RFC 3168 variant):
//! - L2 bytes (MACs, VLAN tags, EtherType) identical;
//! - IPv4: identical version/IHL/TOS, flags (DF) and fragment offset, TTL, protocol,
//!   addresses and options (options allowed if byte-identical — the kernel refuses IPv4
//!   options outright; segmenting copies them to every segment, so this round-trips);
//!   no fragments; the identification must increment by one per segment, or, for DF
//!   packets, may stay fixed (decided at the second segment, like the kernel's
//!   `is_atomic`);
//! - IPv6: identical version/traffic class/flow label, next header, hop limit, addresses
//!   and extension-header bytes;
//! - TCP: identical ports, ack number, data offset, window and option bytes (so the
//!   timestamps option must be *equal*, as in the kernel — no "latest value" merging);
//!   flags equal to the first segment's apart from PSH; CWR allowed on the first segment
//!   only; a segment carrying FIN is never appended (the kernel would merge it as last; we
//!   leave it to be forwarded on its own); seq = previous seq + previous payload length;
//! - sizes: the first segment's payload length is `gso_size`; appended segments carry
//!   1..=gso_size bytes; a shorter segment, or one with PSH, is the last that is taken;
//! - checksums: [`TcpCoalescer::start`] verifies the IPv4 header and TCP checksums of
//!   every segment (as the kernel's `skb_gro_checksum_validate`) so that a corrupt segment
//!   is never laundered into a valid-looking super-frame;
//!   [`TcpCoalescer::start_unverified`] skips that for callers that already know (for
//!   example frames with `F_DATA_VALID`).

use super::{be16, be32, TCP_CSUM_OFFSET};
use super::{csum, fix_ipv4_csum, parse_headers, pseudo_sum, put16, Headers, OffloadError, IPPROTO_TCP};
use crate::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;

/// Default upper bound of a coalesced frame, Ethernet header included: 65535 bytes, so
/// that the result fits a 64 KiB buffer and every IP length field stays valid.
pub const DEFAULT_MAX_LEN: usize = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdMode {
    /// Only one segment so far.
    Unknown,
    Incrementing,
    /// DF set and every segment carries the first one's id.
    Fixed,
}

/// Coalesces in-order TCP segments of one flow into one super-frame held in a caller
/// buffer.
///
/// Owns: the flow's state (header layout, next sequence number, `gso_size`, current length,
/// segment count). It does not own or keep the buffer: the caller keeps the super-frame in
/// a buffer `buf` whose first `len()` bytes are the first segment as passed to
/// [`TcpCoalescer::start`] (its Ethernet padding, if any, is not part of the super-frame)
/// and passes the same buffer to every call. The flow key is not copied: the first
/// segment's headers in `buf[..hdr_len()]` *are* the key, so the caller must not change
/// them before `finish`. `buf` needs room for the result (up to the max length, 65535 by
/// default); a shorter `buf` just refuses appends that would not fit. No allocation; never
/// panics on any input — mismatching or malformed segments are simply not appended.
///
/// API note: unlike a `(buf, len: &mut usize, seg)` shape, the coalescer is the single
/// owner of the super-frame length ([`TcpCoalescer::len`]), which also lets it drop the
/// first segment's Ethernet padding; `finish` returns the final length.
///
/// Usage: `start(first)` → `try_append(buf, seg)` while it returns `true` → `finish(buf)`
/// gives the final length and virtio header. A refused segment is the caller's to
/// forward (or to start the next coalescer with).
#[derive(Clone, Debug)]
pub struct TcpCoalescer {
    h: Headers,
    len: usize,
    max_len: usize,
    gso_size: usize,
    next_seq: u32,
    segs: u32,
    ip_id: u16,
    id_mode: IdMode,
    psh: bool,
    closed: bool,
    verify: bool,
}

/// What `accept` found: header length and payload length of the segment, the IPv4 id
/// mode with it, and whether it carries PSH.
#[derive(Clone, Copy, Debug)]
struct Accepted {
    hl: usize,
    plen: usize,
    id_mode: IdMode,
    psh: bool,
}

/// TCP segment checks shared by `start` and `try_append`: TCP, not a fragment, payload.
fn tcp_layout(seg: &[u8]) -> Option<Headers> {
    let h = parse_headers(seg).ok()?;
    if h.l4_proto != IPPROTO_TCP || h.fragment || h.l4_hdr_len < 20 || h.payload_len() == 0 {
        return None;
    }
    Some(h)
}

/// IPv4 header and TCP checksums of `seg` are correct.
fn csums_ok(seg: &[u8], h: &Headers) -> bool {
    if !h.ipv6 && !matches!(seg.get(h.l3_off..h.l4_off), Some(b) if csum::checksum(b) == 0) {
        return false;
    }
    match seg.get(h.l4_off..h.ip_end) {
        Some(l4) => csum::fold(csum::sum16(l4, pseudo_sum(seg, h, l4.len()))) == 0xffff,
        None => false,
    }
}

/// `a[r] == b[r]`, false when either is out of range.
#[inline]
fn same(a: &[u8], b: &[u8], from: usize, to: usize) -> bool {
    match (a.get(from..to), b.get(from..to)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

impl TcpCoalescer {
    /// Starts a super-frame with `first` (an Ethernet frame), verifying its checksums.
    ///
    /// Returns `None` when `first` cannot start one: not TCP over IPv4/IPv6, a fragment,
    /// malformed, no payload, any of SYN/FIN/RST/URG/PSH set (PSH ends a train at once, so
    /// there is nothing to merge), or a bad IPv4-header/TCP checksum. Never panics.
    pub fn start(first: &[u8]) -> Option<TcpCoalescer> {
        Self::start_with(first, true)
    }

    /// Like [`TcpCoalescer::start`] but never verifies checksums, of `first` or of
    /// appended segments: for frames whose checksums the caller has validated already.
    pub fn start_unverified(first: &[u8]) -> Option<TcpCoalescer> {
        Self::start_with(first, false)
    }

    fn start_with(first: &[u8], verify: bool) -> Option<TcpCoalescer> {
        let h = tcp_layout(first)?;
        let flags = *first.get(h.l4_off + 13)?;
        if flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG | TCP_PSH) != 0 {
            return None;
        }
        if verify && !csums_ok(first, &h) {
            return None;
        }
        if h.ip_end > DEFAULT_MAX_LEN {
            return None;
        }
        let plen = h.payload_len();
        Some(TcpCoalescer {
            h,
            len: h.ip_end,
            max_len: DEFAULT_MAX_LEN,
            gso_size: plen,
            next_seq: be32(first, h.l4_off + 4).wrapping_add(plen as u32),
            segs: 1,
            ip_id: if h.ipv6 { 0 } else { be16(first, h.l3_off + 4) },
            id_mode: IdMode::Unknown,
            psh: false,
            closed: false,
            verify,
        })
    }

    /// Sets the largest super-frame (Ethernet header included) this coalescer builds.
    /// Clamped to what the IP length field can express (IPv4: `l3_off + 65535`; IPv6:
    /// `l3_off + 40 + 65535`) and to at least the current length.
    pub fn with_max_len(mut self, max: usize) -> Self {
        let ip_limit = self.h.l3_off + if self.h.ipv6 { 40 + 65535 } else { 65535 };
        self.max_len = max.min(ip_limit).max(self.len);
        self
    }

    /// Current length of the super-frame in `buf`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a coalescer holds at least its first segment. (For clippy's sake.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Segments merged so far (≥ 1).
    pub fn segments(&self) -> usize {
        self.segs as usize
    }

    /// Payload bytes per segment: the first segment's payload length.
    pub fn gso_size(&self) -> usize {
        self.gso_size
    }

    /// Headers length (Ethernet through TCP options) of every segment of the flow.
    pub fn hdr_len(&self) -> usize {
        self.h.hdr_len()
    }

    /// True when no further segment can be appended (a short or PSH segment was taken).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Tries to append `seg` (an Ethernet frame): if it continues the flow under the rules
    /// in the module docs, copies its payload to `buf[len()..]`, advances `len()` and
    /// returns `true`. Otherwise returns `false` and changes nothing (neither `buf` nor
    /// the coalescer). Also `false` when `buf` (or the max length) has no room for the
    /// payload, or `buf` is shorter than `len()`. Never panics.
    pub fn try_append(&mut self, buf: &mut [u8], seg: &[u8]) -> bool {
        if buf.len() < self.len {
            return false;
        }
        let Some(a) = self.accept(buf, seg, buf.len()) else {
            return false;
        };
        let (Some(src), Some(dst)) = (seg.get(a.hl..a.hl + a.plen), buf.get_mut(self.len..self.len + a.plen)) else {
            return false;
        };
        dst.copy_from_slice(src);
        self.commit(a);
        true
    }

    /// Like [`TcpCoalescer::try_append`] for a super-frame kept in a `Vec` whose length
    /// is exactly `len()`: the payload is appended with `extend_from_slice`, so the
    /// buffer needs no zero-filled room ahead (reserve the max length once to avoid
    /// reallocations). `false` and nothing changed when `buf.len() != len()`.
    pub fn try_extend(&mut self, buf: &mut Vec<u8>, seg: &[u8]) -> bool {
        if buf.len() != self.len {
            return false;
        }
        let Some(a) = self.accept(buf, seg, usize::MAX) else {
            return false;
        };
        let Some(src) = seg.get(a.hl..a.hl + a.plen) else {
            return false;
        };
        buf.extend_from_slice(src);
        self.commit(a);
        true
    }

    fn commit(&mut self, a: Accepted) {
        self.len += a.plen;
        self.next_seq = self.next_seq.wrapping_add(a.plen as u32);
        self.segs += 1;
        self.id_mode = a.id_mode;
        if a.psh {
            self.psh = true;
            self.closed = true;
        }
        if a.plen < self.gso_size {
            self.closed = true;
        }
    }

    /// Whether `seg` continues the flow held in `buf[..len()]` with room up to `room`
    /// bytes; what to commit if so. Reads only.
    fn accept(&self, buf: &[u8], seg: &[u8], room: usize) -> Option<Accepted> {
        if self.closed {
            return None;
        }
        let s = tcp_layout(seg)?;
        let h = self.h;
        if s.l3_off != h.l3_off || s.ipv6 != h.ipv6 || s.l4_off != h.l4_off || s.l4_hdr_len != h.l4_hdr_len {
            return None;
        }
        let plen = s.payload_len();
        if plen > self.gso_size || self.len + plen > self.max_len.min(room) {
            return None;
        }
        let (l3, l4, hl) = (h.l3_off, h.l4_off, h.hdr_len());
        let b: &[u8] = buf;
        // L2 and the invariant L3 fields.
        if !same(b, seg, 0, l3) {
            return None;
        }
        let mut id_mode = self.id_mode;
        if h.ipv6 {
            if !(same(b, seg, l3, l3 + 4) && same(b, seg, l3 + 6, l4)) {
                return None;
            }
        } else {
            if !(same(b, seg, l3, l3 + 2) && same(b, seg, l3 + 6, l3 + 10) && same(b, seg, l3 + 12, l4)) {
                return None;
            }
            let id = be16(seg, l3 + 4);
            let df = be16(seg, l3 + 6) & 0x4000 != 0;
            let incr = id == self.ip_id.wrapping_add(self.segs as u16);
            let fixed = df && id == self.ip_id;
            id_mode = match (self.id_mode, incr, fixed) {
                (IdMode::Unknown | IdMode::Incrementing, true, _) => IdMode::Incrementing,
                (IdMode::Unknown | IdMode::Fixed, _, true) => IdMode::Fixed,
                _ => return None,
            };
        }
        // TCP: ports, seq, ack, data offset, flags, window, options.
        let f0 = b.get(l4 + 13).copied().unwrap_or(0);
        let f = seg.get(l4 + 13).copied().unwrap_or(0xff);
        if !(same(b, seg, l4, l4 + 4)
            && be32(seg, l4 + 4) == self.next_seq
            && same(b, seg, l4 + 8, l4 + 13)
            && same(b, seg, l4 + 14, l4 + 16)
            && same(b, seg, l4 + 20, hl))
        {
            return None;
        }
        if f & (TCP_CWR | TCP_FIN) != 0 || (f ^ f0) & !(TCP_PSH | TCP_CWR) != 0 {
            return None;
        }
        if self.verify && !csums_ok(seg, &s) {
            return None;
        }
        Some(Accepted { hl, plen, id_mode, psh: f & TCP_PSH != 0 })
    }

    /// Fixes up the headers of the super-frame in `buf[..len()]` and returns its length and
    /// virtio header.
    ///
    /// More than one segment: IPv4 total length and header checksum (the id stays the first
    /// segment's) or IPv6 payload length rewritten, PSH set if the last merged segment had
    /// it, the TCP checksum field set to the folded pseudo-header sum; the header is
    /// `NEEDS_CSUM` (csum_start = TCP offset, csum_offset 16) with `GSO_TCPV4`/`GSO_TCPV6`,
    /// `| GSO_ECN` when CWR is set, `gso_size` and `hdr_len` filled in.
    ///
    /// One segment: `buf` is left as received (its checksums are the original, complete
    /// ones) and the header is `VnetHdr::default()` (a plain frame).
    ///
    /// Idempotent. Error: [`OffloadError::BufferTooSmall`] if `buf` is shorter than
    /// `len()` (nothing written). Never panics.
    pub fn finish(&self, buf: &mut [u8]) -> Result<(usize, VnetHdr), OffloadError> {
        if buf.len() < self.len {
            return Err(OffloadError::BufferTooSmall);
        }
        if self.segs == 1 {
            return Ok((self.len, VnetHdr::default()));
        }
        let h = self.h;
        let (l3, l4) = (h.l3_off, h.l4_off);
        if h.ipv6 {
            put16(buf, l3 + 4, (self.len - l3 - 40) as u16);
        } else {
            put16(buf, l3 + 2, (self.len - l3) as u16);
            fix_ipv4_csum(buf, l3, l4 - l3);
        }
        let mut ecn = 0;
        if let Some(f) = buf.get_mut(l4 + 13) {
            if self.psh {
                *f |= TCP_PSH;
            }
            if *f & TCP_CWR != 0 {
                ecn = GSO_ECN;
            }
        }
        let l4_len = self.len - l4;
        let mut fh = h;
        fh.ip_end = self.len;
        let ps = pseudo_sum(buf, &fh, l4_len);
        put16(buf, l4 + TCP_CSUM_OFFSET as usize, csum::fold(ps));
        let vh = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if h.ipv6 { GSO_TCPV6 } else { GSO_TCPV4 } | ecn,
            hdr_len: h.hdr_len() as u16,
            gso_size: self.gso_size as u16,
            csum_start: l4 as u16,
            csum_offset: TCP_CSUM_OFFSET,
        };
        Ok((self.len, vh))
    }
}
