//! Wire formats. Stateless views over byte buffers; nothing here allocates or panics on
//! untrusted input once lengths are checked. Ethernet addressing is ours (`MacAddr`,
//! `eth`); IPv4/ARP/ICMP/TCP/UDP views come from `smoltcp::wire`, re-exported as
//! `wire::smol` so there is one parser on the hot path.

pub mod eth;

pub use smoltcp::wire as smol;

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    #[inline]
    pub fn from_slice(b: &[u8]) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        MacAddr(m)
    }

    /// The 48 bits as an integer (first octet most significant).
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Group bit set: broadcast or multicast.
    #[inline]
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    #[inline]
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    #[inline]
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// A unicast address usable as a station address (not group, not zero).
    #[inline]
    pub fn is_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// Docker's convention: 02:42 followed by the IPv4 address.
    pub fn from_ipv4_docker(ip: std::net::Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacParseError(pub String);

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid MAC address {:?} (want six hex octets like 02:42:0a:00:00:02)", self.0)
    }
}

impl std::error::Error for MacParseError {}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        let err = || MacParseError(s.to_string());
        let parts: Vec<&str> = if s.contains(':') { s.split(':').collect() } else { s.split('-').collect() };
        if parts.len() != 6 {
            return Err(err());
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            m[i] = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text_and_bits() {
        let m: MacAddr = "02:42:0a:0A:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:0a:0a:00:02");
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!(m.is_unicast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_multicast());
        assert!("02:42:0a:00:02".parse::<MacAddr>().is_err());
        assert!("02:42:0a:00:02:zz".parse::<MacAddr>().is_err());
        assert!("02:42:0a:00:02:123".parse::<MacAddr>().is_err());
        assert_eq!(MacAddr::from_ipv4_docker("10.10.0.2".parse().unwrap()).to_string(), "02:42:0a:0a:00:02");
    }
}
