//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that TAP devices with
//! `IFF_VNET_HDR` and AF_PACKET sockets with `PACKET_VNET_HDR` put in front of every
//! frame. It carries the offload state of a frame: a checksum still to be completed
//! (`NEEDS_CSUM` with `csum_start`/`csum_offset`) and GSO super-frames (`gso_type`,
//! `gso_size`). The dataplane keeps it as packet metadata and hands it to the egress
//! port unchanged when that port accepts it; ports that do not get software checksums
//! and segmentation (see `offload`).
//!
//! Fields are little-endian (virtio 1.0 / the kernel's native order on every host we run).

/// Size of the header on the wire in front of the frame.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum must be completed from `csum_start`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified by the sender's side.
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3; // UFO, obsolete; never produced by current kernels
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit in `gso_type`: TCP segments carry ECN (CWR only on the first segment).
pub const GSO_ECN: u8 = 0x80;

/// Parsed `virtio_net_hdr`. `Default` is "a plain frame": no checksum work, no GSO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of all headers up to and including L4 (advisory; the kernel recomputes it).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Offset of the L4 header from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from the first 10 bytes of `b`. Returns `None` if `b` is shorter.
    #[inline]
    pub fn read(b: &[u8]) -> Option<VnetHdr> {
        if b.len() < VNET_HDR_LEN {
            return None;
        }
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        })
    }

    /// Writes the header into the first 10 bytes of `b` (which must be long enough).
    #[inline]
    pub fn write(&self, b: &mut [u8]) {
        let b = &mut b[..VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// GSO kind without the ECN flag.
    #[inline]
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    /// True when the frame is a GSO super-frame that must be segmented before a port
    /// that cannot take it.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_kind() != GSO_NONE
    }

    /// True when an L4 checksum still has to be completed.
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4 | GSO_ECN, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        let mut b = [0u8; 10];
        h.write(&mut b);
        assert_eq!(VnetHdr::read(&b), Some(h));
        assert_eq!(h.gso_kind(), GSO_TCPV4);
        assert!(h.is_gso() && h.needs_csum());
        assert_eq!(VnetHdr::read(&b[..9]), None);
    }
}
