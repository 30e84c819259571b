//! Handshake flood protection: token buckets per source address and one global bucket.
//!
//! Owns: a fixed table of buckets made once (no growth, no eviction: a flood from
//! millions of spoofed sources costs the same memory as none). A source is an IPv4
//! address or an IPv6 /64; it is hashed with a per-process random key (std's SipHash
//! `RandomState`) into the table, so an attacker cannot aim at a victim's bucket; two
//! sources that share a bucket share its rate, which only ever limits more. `allow` is
//! O(1), does no DH and never allocates.
//!
//! Under load the responder drops initiations silently (no cookie reply): a legitimate
//! initiator retries after `handshake_retry`. What this does not stop: an attacker
//! spoofing many sources can use up the *global* budget and delay legitimate
//! handshakes (established sessions are unaffected); WireGuard's cookie reply (message
//! type 3, proof of the source address) is the cure and is not implemented.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

/// Limits on handshake initiations a responder processes (defaults as WireGuard's
/// per-source limit; the global limit is ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Initiations per second from one source (IPv4 address, IPv6 /64); 0 refuses all.
    pub per_source_rate: u32,
    /// Initiations one source may send at once before the rate applies.
    pub per_source_burst: u32,
    /// Initiations per second from everyone (per `Responder`); 0 refuses all.
    pub global_rate: u32,
    /// Global burst.
    pub global_burst: u32,
    /// Buckets in the per-source table (rounded up to a power of two, 16 ..= 2^20).
    pub source_buckets: usize,
}

impl Default for HandshakeLimits {
    fn default() -> HandshakeLimits {
        HandshakeLimits {
            per_source_rate: 20,
            per_source_burst: 5,
            global_rate: 500,
            global_burst: 100,
            source_buckets: 4096,
        }
    }
}

/// Which bucket was empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// The source's own bucket.
    Source,
    /// The global bucket.
    Global,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Credit in nanoseconds.
    tokens: u64,
    /// When credit was last added, nanoseconds since the limiter's epoch.
    last: u64,
}

/// Cost and capacity of one kind of bucket, in nanoseconds of credit.
#[derive(Clone, Copy, Debug)]
struct Rate {
    cost: u64,
    max: u64,
}

impl Rate {
    fn new(per_sec: u32, burst: u32) -> Option<Rate> {
        if per_sec == 0 {
            return None;
        }
        let cost = 1_000_000_000 / u64::from(per_sec);
        Some(Rate { cost, max: cost.saturating_mul(u64::from(burst.max(1))) })
    }

    /// Refills `b` up to `t`, then reports whether one token is there (without taking it).
    fn refill(&self, b: &mut Bucket, t: u64) -> bool {
        let elapsed = t.saturating_sub(b.last);
        b.tokens = b.tokens.saturating_add(elapsed).min(self.max);
        b.last = b.last.max(t);
        b.tokens >= self.cost
    }
}

/// Token buckets for handshake initiations. One per `Responder` (per worker).
pub struct RateLimiter {
    epoch: Instant,
    hasher: RandomState,
    mask: usize,
    buckets: Vec<Bucket>,
    global: Bucket,
    source_rate: Option<Rate>,
    global_rate: Option<Rate>,
}

impl RateLimiter {
    /// A limiter with every bucket full at `now`.
    pub fn new(limits: &HandshakeLimits, now: Instant) -> RateLimiter {
        let n = limits.source_buckets.clamp(16, 1 << 20).next_power_of_two();
        let source_rate = Rate::new(limits.per_source_rate, limits.per_source_burst);
        let global_rate = Rate::new(limits.global_rate, limits.global_burst);
        let full = |r: Option<Rate>| Bucket { tokens: r.map_or(0, |r| r.max), last: 0 };
        RateLimiter {
            epoch: now,
            hasher: RandomState::new(),
            mask: n - 1,
            buckets: vec![full(source_rate); n],
            global: full(global_rate),
            source_rate,
            global_rate,
        }
    }

    /// Takes one token from `src`'s bucket and one from the global bucket, or neither.
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> Result<(), Limited> {
        let t = now.saturating_duration_since(self.epoch).as_nanos().min(u128::from(u64::MAX)) as u64;
        let key: u64 = match src {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            // An IPv6 host usually owns a whole /64: limit the /64.
            IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
        };
        let tag = u8::from(matches!(src, IpAddr::V6(_)));
        let i = (self.hasher.hash_one((tag, key)) as usize) & self.mask;
        let (Some(sr), Some(gr)) = (self.source_rate, self.global_rate) else {
            return Err(if self.source_rate.is_none() { Limited::Source } else { Limited::Global });
        };
        let Some(b) = self.buckets.get_mut(i) else { return Err(Limited::Source) };
        if !sr.refill(b, t) {
            return Err(Limited::Source);
        }
        if !gr.refill(&mut self.global, t) {
            return Err(Limited::Global);
        }
        b.tokens -= sr.cost;
        self.global.tokens -= gr.cost;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let lim = HandshakeLimits { per_source_rate: 10, per_source_burst: 3, ..Default::default() };
        let mut l = RateLimiter::new(&lim, t0);
        for _ in 0..3 {
            assert_eq!(l.allow(ip(1), t0), Ok(()));
        }
        assert_eq!(l.allow(ip(1), t0), Err(Limited::Source));
        // Another source is not affected (unless it hashes to the same bucket; with 4096
        // buckets and a random key that is very unlikely, so try a few).
        assert!((2..10).any(|n| l.allow(ip(n), t0).is_ok()));
        // 100 ms later one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.allow(ip(1), t1), Ok(()));
        assert_eq!(l.allow(ip(1), t1), Err(Limited::Source));
        // Time going backwards gives no credit and does not panic.
        assert_eq!(l.allow(ip(1), t0), Err(Limited::Source));
    }

    #[test]
    fn global_limit_and_zero_rates() {
        let t0 = Instant::now();
        let lim = HandshakeLimits { global_rate: 5, global_burst: 5, ..Default::default() };
        let mut l = RateLimiter::new(&lim, t0);
        let ok = (0..50).filter(|&n| l.allow(ip(n), t0).is_ok()).count();
        assert_eq!(ok, 5);
        let mut z = RateLimiter::new(&HandshakeLimits { per_source_rate: 0, ..lim }, t0);
        assert_eq!(z.allow(ip(1), t0), Err(Limited::Source));
        let mut z = RateLimiter::new(&HandshakeLimits { global_rate: 0, ..lim }, t0);
        assert_eq!(z.allow(ip(1), t0), Err(Limited::Global));
    }

    #[test]
    fn ipv6_limited_per_64() {
        let t0 = Instant::now();
        let lim = HandshakeLimits { per_source_rate: 1, per_source_burst: 1, ..Default::default() };
        let mut l = RateLimiter::new(&lim, t0);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert_eq!(l.allow(a, t0), Ok(()));
        assert_eq!(l.allow(b, t0), Err(Limited::Source));
    }
}
