//! Ethernet II header accessors over a frame slice, with 802.1Q/802.1ad tags.
//! Callers check `frame.len() >= HDR_LEN` (or use `parse`) before using the
//! unchecked getters.

use super::MacAddr;

pub const HDR_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

#[inline]
pub fn dst(frame: &[u8]) -> MacAddr {
    MacAddr::from_slice(&frame[0..6])
}

#[inline]
pub fn src(frame: &[u8]) -> MacAddr {
    MacAddr::from_slice(&frame[6..12])
}

#[inline]
pub fn set_dst(frame: &mut [u8], m: MacAddr) {
    frame[0..6].copy_from_slice(&m.0);
}

#[inline]
pub fn set_src(frame: &mut [u8], m: MacAddr) {
    frame[6..12].copy_from_slice(&m.0);
}

/// The outer EtherType (may be a VLAN TPID).
#[inline]
pub fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

/// Where the L3 header starts and its EtherType, skipping up to two VLAN tags.
/// `None` if the frame is too short for its tags.
#[inline]
pub fn l3(frame: &[u8]) -> Option<(usize, u16)> {
    if frame.len() < HDR_LEN {
        return None;
    }
    let mut off = 12;
    let mut et = ethertype(frame);
    let mut tags = 0;
    while (et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ) && tags < 2 {
        off += 4;
        if frame.len() < off + 2 {
            return None;
        }
        et = u16::from_be_bytes([frame[off], frame[off + 1]]);
        tags += 1;
    }
    Some((off + 2, et))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l3_offsets() {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        assert_eq!(l3(&f), Some((14, ETHERTYPE_IPV4)));
        f[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f[16..18].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(l3(&f), Some((18, ETHERTYPE_IPV6)));
        assert_eq!(l3(&f[..15]), None);
        assert_eq!(l3(&f[..17]), None);
    }
}
