//! Internet (ones-complement) checksum helpers, RFC 1071 / RFC 1624.
//!
//! Owns: the arithmetic only. Nothing here parses packets or knows where a checksum
//! field lives; callers slice the bytes. Every function is total: it never panics,
//! never allocates, and accepts any length (including odd lengths and empty input).
//!
//! Conventions: a *sum* (`u32`) is an unfolded ones-complement accumulator in
//! network byte order (the value of the 16-bit big-endian words added up, with
//! end-around carry applied lazily). [`fold`] reduces it to 16 bits; a *checksum*
//! is the complement of the folded sum, as stored in IP/TCP/UDP headers
//! (host-order `u16`; write it with `to_be_bytes`).

/// Reduces a 128-bit accumulator to 32 bits with end-around carry, keeping the value
/// congruent modulo 0xffff (every 2^16k ≡ 1).
#[inline]
fn reduce128(acc: u128) -> u32 {
    // 2^64 ≡ 1 (mod 0xffff): add the halves, then fold the 64-bit value.
    let lo = acc as u64;
    let hi = (acc >> 64) as u64;
    let (s, c) = lo.overflowing_add(hi);
    let s = s.wrapping_add(c as u64); // cannot overflow again: if c, s <= 2^64 - 2
    let s32 = (s & 0xffff_ffff) + (s >> 32); // <= 2^33 - 2
    let s32 = (s32 & 0xffff_ffff) + (s32 >> 32); // <= 2^32 - 1 after this
    s32 as u32
}

/// Ones-complement sum of `data` viewed as big-endian 16-bit words (an odd final
/// byte is padded with a zero low byte), added to `initial`.
///
/// The result is an unfolded accumulator: pass it as `initial` to continue a sum
/// over a following buffer (only valid if the previous buffer had even length), or to
/// [`fold`]. The bulk is processed 8 bytes at a time into a 128-bit accumulator
/// (the sum is byte-order independent, RFC 1071 §2(B), so words are loaded in native
/// order and the result swapped once).
///
/// Never panics, for any input.
#[inline]
pub fn sum16(data: &[u8], initial: u32) -> u32 {
    let mut acc: u128 = 0;
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        // Four independent loads per iteration; the u128 adds never overflow for any
        // slice that fits in memory (2^64 additions of < 2^64).
        let mut w = [0u64; 4];
        for (i, wi) in w.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[i * 8..i * 8 + 8]);
            *wi = u64::from_ne_bytes(b);
        }
        acc += w[0] as u128 + w[1] as u128 + w[2] as u128 + w[3] as u128;
    }
    let rest = chunks.remainder();
    let mut chunks8 = rest.chunks_exact(8);
    for c in &mut chunks8 {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        acc += u64::from_ne_bytes(b) as u128;
    }
    // Fold the native-order bulk to 16 bits, then convert to network order.
    let bulk = fold(reduce128(acc));
    let bulk = u16::from_be(bulk) as u64;

    let tail = chunks8.remainder();
    let mut t: u64 = bulk + initial as u64;
    let mut pairs = tail.chunks_exact(2);
    for p in &mut pairs {
        t += u16::from_be_bytes([p[0], p[1]]) as u64;
    }
    if let [last] = pairs.remainder() {
        t += (*last as u64) << 8;
    }
    // t < 2^32 + 2^19: one end-around fold makes it fit.
    let t = (t & 0xffff_ffff) + (t >> 32);
    ((t & 0xffff_ffff) + (t >> 32)) as u32
}

/// Folds an accumulator to 16 bits with end-around carry (not complemented).
///
/// A non-zero input never folds to 0 (it folds to 0xffff instead), which is what
/// makes `!fold(x)` a valid transmitted checksum. Never panics.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Adds two accumulators with end-around carry (ones-complement addition, unfolded).
/// Never panics.
#[inline]
pub fn add(a: u32, b: u32) -> u32 {
    let (s, c) = a.overflowing_add(b);
    s.wrapping_add(c as u32)
}

/// The Internet checksum of `data`: `!fold(sum16(data, 0))`. To verify a header that
/// contains its own checksum field, check that this returns 0. Never panics.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(data, 0))
}

/// IPv4 pseudo-header sum (RFC 793 / RFC 768): source, destination, protocol and
/// the L4 length (header plus payload). Unfolded; never panics.
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let w = |b: [u8; 4]| u16::from_be_bytes([b[0], b[1]]) as u32 + u16::from_be_bytes([b[2], b[3]]) as u32;
    w(src) + w(dst) + proto as u32 + l4_len as u32
}

/// IPv6 pseudo-header sum (RFC 8200 §8.1): source, destination, 32-bit upper-layer
/// length and next header. Unfolded; never panics.
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: u32) -> u32 {
    let mut s = sum16(src, 0);
    s = sum16(dst, s);
    add(add(s, (l4_len >> 16) + (l4_len & 0xffff)), proto as u32)
}

/// RFC 1624 (eqn. 3) incremental update: the new checksum after one 16-bit word
/// covered by `csum` changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
///
/// Gives exactly the value a full recomputation gives (for data that is not all
/// zeroes). Never panics.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = (!csum) as u32 + (!old) as u32 + new as u32;
    !fold(s)
}

/// [`update16`] for an aligned 32-bit field (an IPv4 address, a TCP sequence number),
/// both halves at once. Never panics.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let s = (!csum) as u32 + (!((old >> 16) as u16)) as u32 + (!(old as u16)) as u32 + (new >> 16) + (new & 0xffff);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn fill(&mut self, b: &mut [u8]) {
            for v in b {
                *v = self.next() as u8;
            }
        }
    }

    /// The textbook implementation, for comparison.
    fn naive(data: &[u8]) -> u16 {
        let mut s: u64 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            s += ((data[i] as u64) << 8) | data[i + 1] as u64;
            i += 2;
        }
        if i < data.len() {
            s += (data[i] as u64) << 8;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
        assert_eq!(fold(sum16(&[], 0)), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(fold(sum16(&[0xab], 0)), 0xab00);
    }

    #[test]
    fn ipv4_header_vector() {
        // A classic IPv4 header with checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z), 0xb861);
    }

    #[test]
    fn random_against_naive_all_lengths_and_alignments() {
        let mut rng = XorShift(0x9e3779b97f4a7c15);
        let mut buf = vec![0u8; 4096 + 64];
        rng.fill(&mut buf);
        for len in 0..300 {
            for align in 0..16 {
                let d = &buf[align..align + len];
                assert_eq!(fold(sum16(d, 0)), naive(d), "len {len} align {align}");
            }
        }
        for _ in 0..200 {
            let len = (rng.next() % 4096) as usize;
            let off = (rng.next() % 64) as usize;
            let d = &buf[off..off + len];
            let init = rng.next() as u32;
            let expect = {
                let mut s = naive(d) as u64 + init as u64;
                while s >> 16 != 0 {
                    s = (s & 0xffff) + (s >> 16);
                }
                s as u16
            };
            assert_eq!(fold(sum16(d, init)), expect);
        }
    }

    #[test]
    fn all_ones_does_not_overflow() {
        let d = vec![0xffu8; 200_000];
        assert_eq!(fold(sum16(&d, 0xffff_ffff)), 0xffff);
        let odd = &d[..199_999];
        let mut e = naive(odd) as u64 + u32::MAX as u64;
        while e >> 16 != 0 {
            e = (e & 0xffff) + (e >> 16);
        }
        assert_eq!(fold(sum16(odd, u32::MAX)), e as u16);
    }

    #[test]
    fn chained_sums_equal_whole() {
        let mut rng = XorShift(7);
        let mut buf = vec![0u8; 1000];
        rng.fill(&mut buf);
        for split in (0..1000).step_by(2) {
            let s = sum16(&buf[split..], sum16(&buf[..split], 0));
            assert_eq!(fold(s), fold(sum16(&buf, 0)));
        }
    }

    #[test]
    fn sum16_64k_sanity() {
        let mut rng = XorShift(0xdead_beef);
        let mut buf = vec![0u8; 65536];
        rng.fill(&mut buf);
        assert_eq!(fold(sum16(&buf, 0)), naive(&buf));
        assert_eq!(fold(sum16(&buf[1..], 0)), naive(&buf[1..]));
        assert_eq!(fold(sum16(&buf[..65535], 0)), naive(&buf[..65535]));
    }

    #[test]
    fn pseudo_headers() {
        let s = pseudo_v4([192, 168, 0, 1], [10, 0, 0, 2], 6, 40);
        let mut ph = Vec::new();
        ph.extend_from_slice(&[192, 168, 0, 1, 10, 0, 0, 2, 0, 6, 0, 40]);
        assert_eq!(fold(s), naive(&ph));
        let a = [0x20u8, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let b = [0xfeu8, 0x80, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 2];
        let s6 = pseudo_v6(&a, &b, 17, 0x1_0010);
        let mut ph6 = Vec::new();
        ph6.extend_from_slice(&a);
        ph6.extend_from_slice(&b);
        ph6.extend_from_slice(&0x1_0010u32.to_be_bytes());
        ph6.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(fold(s6), naive(&ph6));
    }

    #[test]
    fn incremental_updates_match_recompute() {
        let mut rng = XorShift(12345);
        for _ in 0..5000 {
            let len = (8 + (rng.next() % 120) as usize) & !1;
            let mut d = vec![0u8; len];
            rng.fill(&mut d);
            d[0] |= 1; // never all zero
            let c = checksum(&d);
            // 16-bit change at an even offset.
            let pos = ((rng.next() as usize) % (len / 2)) * 2;
            let old = u16::from_be_bytes([d[pos], d[pos + 1]]);
            let new = if rng.next() & 7 == 0 { 0 } else { rng.next() as u16 };
            let mut e = d.clone();
            e[pos..pos + 2].copy_from_slice(&new.to_be_bytes());
            if e.iter().all(|&b| b == 0) {
                continue;
            }
            assert_eq!(update16(c, old, new), checksum(&e));
            // 32-bit change.
            let pos = ((rng.next() as usize) % (len / 2 - 1)) * 2;
            let old = u32::from_be_bytes([d[pos], d[pos + 1], d[pos + 2], d[pos + 3]]);
            let new = rng.next() as u32;
            let mut e = d.clone();
            e[pos..pos + 4].copy_from_slice(&new.to_be_bytes());
            if e.iter().all(|&b| b == 0) {
                continue;
            }
            assert_eq!(update32(c, old, new), checksum(&e));
        }
    }
}
