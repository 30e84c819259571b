//! A fast, non-cryptographic hasher for the small fixed tables the workers look up per
//! packet (addresses the switch owns, known endpoints, tunnel ports): one multiply per
//! word instead of SipHash's rounds. The tables' keys are set by control, never by
//! packets, so hash flooding (which needs attacker-chosen *inserted* keys) does not
//! apply; lookups with arbitrary keys only cost a probe.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// `HashMap` with [`FxHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The multiply-and-add hash of rustc's `FxHasher` (odd constant; the final rotation
/// moves the well-mixed high bits to where hashbrown takes its bucket index).
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher {
    hash: u64,
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = self.hash.wrapping_add(w).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some((c, rest)) = bytes.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*c));
            bytes = rest;
        }
        if let Some((c, rest)) = bytes.split_first_chunk::<4>() {
            self.add(u32::from_le_bytes(*c) as u64);
            bytes = rest;
        }
        if let Some((c, rest)) = bytes.split_first_chunk::<2>() {
            self.add(u16::from_le_bytes(*c) as u64);
            bytes = rest;
        }
        if let Some(&b) = bytes.first() {
            self.add(b as u64);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn map_works_and_spreads() {
        let mut m: FastMap<(u16, Ipv4Addr), u32> = FastMap::default();
        for i in 0..10_000u32 {
            m.insert(((i % 7) as u16, Ipv4Addr::from(0x0a00_0000 + i)), i);
        }
        for i in 0..10_000u32 {
            assert_eq!(m.get(&((i % 7) as u16, Ipv4Addr::from(0x0a00_0000 + i))), Some(&i));
        }
        assert_eq!(m.get(&(0, Ipv4Addr::new(1, 2, 3, 4))), None);
        // Consecutive addresses: all full hashes differ, and they spread over the low
        // bits hashbrown takes its bucket index from (no pile-up on a few buckets).
        let (mut low, mut full) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for i in 0..256u32 {
            let mut h = FxHasher::default();
            std::hash::Hash::hash(&Ipv4Addr::from(0x0a00_0000 + i), &mut h);
            low.insert(h.finish() & 0xff);
            full.insert(h.finish());
        }
        assert_eq!(full.len(), 256);
        assert!(low.len() >= 64, "{} distinct low bytes", low.len());
    }

    #[test]
    fn odd_lengths_differ() {
        let h = |b: &[u8]| {
            let mut x = FxHasher::default();
            x.write(b);
            x.finish()
        };
        assert_ne!(h(&[1, 2, 3, 4, 5, 6]), h(&[1, 2, 3, 4, 5, 7]));
        assert_ne!(h(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), h(&[1, 2, 3, 4, 5, 6, 7, 8, 10]));
    }
}
