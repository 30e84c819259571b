//! Encapsulating GSO super-frames: the inner frame is cut into wire-size frames by
//! [`Segmenter`] (every inner checksum computed in full — the remote end cannot complete
//! a partial one) and each piece is encapsulated as it is written, into buffers the
//! caller provides. Two output shapes:
//!
//! - one outer IPv4 packet per call ([`EncapSegments::next_into`]), for `sendmmsg` on a
//!   raw socket (`buf[e.ip_range()]`), on a UDP socket (`buf[e.payload_range()]`), or for
//!   AF_PACKET after [`super::prepend_eth`];
//! - a `UDP_SEGMENT` batch ([`EncapSegments::next_batch`], VXLAN and UDP only): the UDP
//!   payloads of up to [`UDP_GSO_MAX_SEGS`] datagrams back to back, every one exactly
//!   `seg_size` bytes except the last, for one `sendmsg` with the `UDP_SEGMENT` control
//!   message; the kernel builds the outer IPv4/UDP headers (and the UDP checksum, unless
//!   the socket has `SO_NO_CHECK`) and the source port is the socket's.
//!
//! Sizes: every outer packet is at most the `mtu` given to [`EncapSegments::new`]. TCP
//! segments are made smaller than the sender's MSS when the encapsulation would not fit
//! (legal for TCP); UDP GSO datagrams and non-GSO frames cannot be resized, so those that
//! do not fit are refused with [`EncapError::ExceedsMtu`] (the caller may answer with
//! ICMP "fragmentation needed").
//!
//! Owns: borrows of the super-frame and the [`Vtep`] (for the IPv4 id counter) and a
//! cursor. No allocation, no I/O; never panics on any input.

use super::outer::{self, inner_tos_eth, ip_packet_len};
use super::{flow_hash_eth, flow_hash_ip, udp, vxlan, EncapError, EncapKind, Encapped, Peer, Tunnel, Vtep};
use crate::offload::{parse_headers, OffloadError, SegCsum, Segmenter};
use crate::vnet::{VnetHdr, GSO_UDP_L4};

/// Most datagrams one `UDP_SEGMENT` send may carry (the kernel's `UDP_MAX_SEGMENTS` was
/// 64 until Linux 6.9 and is 128 since; 64 works everywhere).
pub const UDP_GSO_MAX_SEGS: usize = 64;
/// Most UDP payload bytes one `UDP_SEGMENT` send may carry: 65535 - 20 (IPv4) - 8 (UDP).
pub const UDP_GSO_MAX_PAYLOAD: usize = 65507;

/// Largest inner L2 header (Ethernet + two VLAN tags) the UDP kind drops.
const MAX_L2: usize = 22;

/// One `UDP_SEGMENT` batch written by [`EncapSegments::next_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpGsoBatch {
    /// Offset of the first datagram's payload in the buffer.
    pub off: usize,
    /// Total bytes to send: `dst[off..off + len]`.
    pub len: usize,
    /// The `UDP_SEGMENT` value: every datagram but the last is exactly this long (with
    /// one datagram, its length).
    pub seg_size: u16,
    /// Number of datagrams in the batch.
    pub segs: usize,
    /// The flow's hashed source port, for callers that keep one socket per port range.
    pub src_port: u16,
}

impl UdpGsoBatch {
    /// The bytes to send.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.off..self.off + self.len
    }
}

/// Segments and encapsulates one inner frame (GSO or not) for one peer; see the module
/// docs. Create with [`EncapSegments::new`], then call [`EncapSegments::next_into`] or
/// [`EncapSegments::next_batch`] until `None` (the two may be mixed).
pub struct EncapSegments<'a> {
    vtep: &'a mut Vtep,
    peer: Peer,
    seg: Segmenter<'a>,
    outer_len: usize,
    /// Inner L2 bytes dropped from every segment (UDP kind), else 0.
    l2: usize,
    sport: u16,
    tos: Option<u8>,
}

impl<'a> EncapSegments<'a> {
    /// Prepares to encapsulate `frame` (an Ethernet frame, `vh` its virtio header) for
    /// `peer`, each outer IPv4 packet at most `mtu` bytes.
    ///
    /// Errors: [`EncapError::Offload`] for frames the segmenter refuses (bad GSO type or
    /// size, malformed headers); [`EncapError::ExceedsMtu`] (see the module docs);
    /// [`EncapError::InnerNotIp`]/[`EncapError::InnerTruncated`] for UDP encapsulation of a
    /// frame that is not IP. Never panics.
    pub fn new(
        vtep: &'a mut Vtep,
        peer: Peer,
        frame: &'a [u8],
        vh: &VnetHdr,
        mtu: u16,
    ) -> Result<EncapSegments<'a>, EncapError> {
        if frame.len() < super::ETH_HDR_LEN {
            return Err(EncapError::InnerTruncated);
        }
        let kind = vtep.kind_of(peer.tunnel);
        let outer_len = kind.outer_hdr_len();
        let (l2, ip_len) = match kind {
            EncapKind::Udp => udp::locate_ip(frame)?,
            _ => (0, 0),
        };
        let mtu = mtu as usize;
        let mut vh2 = *vh;
        if vh.is_gso() {
            let h = parse_headers(frame)?;
            let fixed = (outer_len + h.hdr_len()).saturating_sub(l2);
            let room = mtu.saturating_sub(fixed);
            if room == 0 {
                return Err(EncapError::ExceedsMtu);
            }
            if vh.gso_size as usize > room {
                if vh.gso_kind() == GSO_UDP_L4 {
                    return Err(EncapError::ExceedsMtu);
                }
                vh2.gso_size = room.min(u16::MAX as usize) as u16;
            }
        } else {
            let inner = if kind == EncapKind::Udp { ip_len } else { frame.len() };
            if outer_len + inner > mtu {
                return Err(EncapError::ExceedsMtu);
            }
        }
        let seg = Segmenter::new(frame, &vh2, SegCsum::Full)?;
        let hash = match kind {
            EncapKind::Udp => flow_hash_ip(frame.get(l2..).unwrap_or(&[]), vtep.hash_seed),
            _ => flow_hash_eth(frame, vtep.hash_seed),
        };
        let sport = vtep.src_port_for(hash);
        let tos = inner_tos_eth(frame);
        Ok(EncapSegments { vtep, peer, seg, outer_len, l2, sport, tos })
    }

    /// Outer packets (or datagrams) this frame yields in total.
    pub fn segment_count(&self) -> usize {
        self.seg.segment_count()
    }

    /// Outer packets not yet written.
    pub fn remaining(&self) -> usize {
        self.seg.remaining()
    }

    /// Length of the longest outer IPv4 packet: `next_into` needs `dst.len() >= start +
    /// max_packet_len()`.
    pub fn max_packet_len(&self) -> usize {
        self.outer_len + self.seg.max_segment_len() - self.l2
    }

    /// The outer UDP source port every packet of this frame gets (0 for GRE).
    pub fn src_port(&self) -> u16 {
        match self.peer.tunnel {
            Tunnel::Gre(_) => 0,
            _ => self.sport,
        }
    }

    /// Writes the next outer IPv4 packet starting at `dst[start]` and returns where it is
    /// (offsets in `dst`), or `None` when all are written. `dst` too short gives
    /// `Some(Err(BufferTooSmall))` without advancing. Takes one IPv4 id per packet.
    pub fn next_into(&mut self, dst: &mut [u8], start: usize) -> Option<Result<Encapped, EncapError>> {
        if self.seg.remaining() == 0 {
            return None;
        }
        Some(self.write_one(dst, start))
    }

    fn write_one(&mut self, dst: &mut [u8], start: usize) -> Result<Encapped, EncapError> {
        let seg_at = start.checked_add(self.outer_len - self.l2).ok_or(EncapError::BufferTooSmall)?;
        let out = dst.get_mut(seg_at..).ok_or(EncapError::BufferTooSmall)?;
        let n = self.next_segment(out)?;
        let (ioff, ilen) = self.inner_of(dst, seg_at, n)?;
        outer::write(self.vtep, &self.peer, dst, ioff, ilen, self.sport, self.tos)
    }

    /// Runs the segmenter into `out`; maps its errors.
    fn next_segment(&mut self, out: &mut [u8]) -> Result<usize, EncapError> {
        match self.seg.next_into(out) {
            Some(Ok((n, _))) => Ok(n),
            Some(Err(OffloadError::BufferTooSmall)) => Err(EncapError::BufferTooSmall),
            Some(Err(e)) => Err(EncapError::Offload(e)),
            None => Err(EncapError::BufferTooSmall),
        }
    }

    /// The inner payload of a segment written at `dst[seg_at..seg_at + n]`: the frame, or
    /// for the UDP kind the IP packet after the L2 header.
    fn inner_of(&self, dst: &[u8], seg_at: usize, n: usize) -> Result<(usize, usize), EncapError> {
        if self.peer.tunnel != Tunnel::Udp {
            return Ok((seg_at, n));
        }
        let ip = seg_at + self.l2;
        let pkt = dst.get(ip..seg_at + n).ok_or(EncapError::InnerTruncated)?;
        Ok((ip, ip_packet_len(pkt)?))
    }

    /// Writes the next `UDP_SEGMENT` batch into `dst` (see the module docs): as many
    /// datagrams as fit `dst`, [`UDP_GSO_MAX_SEGS`] and [`UDP_GSO_MAX_PAYLOAD`]. Returns
    /// `None` when everything is written; `Some(Err(NotUdp))` for GRE;
    /// `Some(Err(BufferTooSmall))` when not even one datagram fits (nothing advanced).
    /// Outer IPv4 ids are not used (the kernel numbers the packets).
    pub fn next_batch(&mut self, dst: &mut [u8]) -> Option<Result<UdpGsoBatch, EncapError>> {
        if self.seg.remaining() == 0 {
            return None;
        }
        Some(self.write_batch(dst))
    }

    fn write_batch(&mut self, dst: &mut [u8]) -> Result<UdpGsoBatch, EncapError> {
        let th = match self.peer.tunnel {
            Tunnel::Vxlan(_) => vxlan::HDR_LEN,
            Tunnel::Udp => 0,
            Tunnel::Gre(_) => return Err(EncapError::NotUdp),
        };
        let l2 = self.l2;
        let stride = th + self.seg.max_segment_len() - l2;
        let base = l2;
        let mut pos = base;
        let mut segs = 0usize;
        let mut seg_size = stride;
        while segs < UDP_GSO_MAX_SEGS && self.seg.remaining() > 0 {
            if segs > 0 && pos - base + stride > UDP_GSO_MAX_PAYLOAD {
                break;
            }
            // The segment's L2 header (UDP kind) lands on the previous datagram's tail:
            // keep those bytes and put them back afterwards.
            let seg_at = pos + th - l2;
            let mut saved = [0u8; MAX_L2];
            if let (Some(s), Some(d)) = (saved.get_mut(..l2), dst.get(seg_at..pos)) {
                s.copy_from_slice(d);
            }
            let n = match dst.get_mut(seg_at..).ok_or(EncapError::BufferTooSmall).and_then(|o| self.next_segment(o)) {
                Ok(n) => n,
                Err(EncapError::BufferTooSmall) if segs > 0 => break,
                Err(e) => return Err(e),
            };
            let (_, ilen) = self.inner_of(dst, seg_at, n)?;
            if let (Some(s), Some(d)) = (saved.get(..l2), dst.get_mut(seg_at..pos)) {
                d.copy_from_slice(s);
            }
            if let (Tunnel::Vxlan(vni), Some(h)) = (self.peer.tunnel, dst.get_mut(pos..pos + th)) {
                vxlan::write_header(h, vni);
            }
            let dlen = th + ilen;
            if segs == 0 && self.seg.remaining() == 0 {
                seg_size = dlen;
            }
            pos += dlen;
            segs += 1;
            if dlen != stride {
                break; // only the last datagram may be short
            }
        }
        Ok(UdpGsoBatch {
            off: base,
            len: pos - base,
            seg_size: seg_size.min(u16::MAX as usize) as u16,
            segs,
            src_port: self.sport,
        })
    }
}
