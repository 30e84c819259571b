//! Robustness: random bytes and mutated packets never panic, and every packet that is
//! forwarded after a random translation still has correct checksums.

use std::net::Ipv4Addr;

use super::tests_util::*;
use super::*;
use crate::offload::{complete_checksum, csum, verify_checksums};
use crate::vnet::{VnetHdr, F_NEEDS_CSUM};

/// Iterations: `default`, or `NAT_FUZZ_ITERS` from the environment for longer runs.
fn iters(default: usize) -> usize {
    std::env::var("NAT_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn random_action(rng: &mut Rng) -> Action {
    let ip = |rng: &mut Rng| Ipv4Addr::from(0xc000_0200 | rng.below(4) as u32);
    match rng.below(6) {
        0 => Action::None,
        1 => Action::Deny,
        2 | 3 => Action::Snat { to: ip(rng) },
        4 => Action::Dnat { to: ip(rng), port: rng.next() as u16 },
        _ => Action::DnatSnat { to: ip(rng), port: rng.next() as u16, snat: ip(rng) },
    }
}

/// A random but well-formed packet between a few hosts.
fn random_packet(rng: &mut Rng) -> Vec<u8> {
    let addr = |rng: &mut Rng| Ipv4Addr::from(0xc000_0200 | rng.below(6) as u32);
    let port = |rng: &mut Rng| 1 + rng.below(8) as u16;
    let (s, d) = (addr(rng), addr(rng));
    let n = rng.below(40) as usize;
    let payload = rng.bytes(n);
    match rng.below(5) {
        0 => tcp(s, port(rng), d, port(rng), [SYN, ACK, SYN | ACK, FIN | ACK, RST, 0][rng.below(6) as usize], &payload),
        1 => udp(s, port(rng), d, port(rng), &payload),
        2 => echo(s, d, port(rng), rng.below(2) == 0),
        3 => {
            let inner = udp(d, port(rng), s, port(rng), &payload);
            let n = 28 + rng.below((inner.len() - L3 - 27) as u64) as usize;
            icmp_error(addr(rng), s, [3, 11, 12][rng.below(3) as usize], 0, &ip_of(&inner)[..n])
        }
        _ => {
            let big = udp(s, port(rng), d, port(rng), &rng.bytes(100));
            let frags = fragment(&big, 48, rng.next() as u16);
            frags[rng.below(frags.len() as u64) as usize].clone()
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let t = table(256);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..iters(100_000) {
        let len = rng.below(120) as usize;
        let mut f = rng.bytes(len);
        // Make some of them look like IPv4 so the deeper code runs too.
        if len > L3 + 20 && rng.below(2) == 0 {
            f[L3] = 0x45 + (rng.below(3) as u8);
            let tot = (len - L3) as u16 - rng.below(4) as u16;
            f[L3 + 2..L3 + 4].copy_from_slice(&tot.to_be_bytes());
            f[L3 + 9] = [1, 6, 17, 47][rng.below(4) as usize];
            if rng.below(2) == 0 {
                f[L3 + 6] = 0;
                f[L3 + 7] = 0;
            }
        }
        let l3 = if rng.below(8) == 0 { rng.below(len as u64 + 4) as usize } else { L3 };
        let a = random_action(&mut rng);
        let _ = process(&t, &mut f, l3, rng.below(2) == 0, |_| a, i as u32 / 1000);
        if i % 5000 == 0 {
            t.sweep(i as u32 / 1000, 64);
        }
    }
}

#[test]
fn mutated_packets_never_panic() {
    let t = table(512);
    let mut rng = Rng(0xfeed_beef);
    for i in 0..iters(50_000) {
        let mut f = random_packet(&mut rng);
        for _ in 0..1 + rng.below(4) {
            let at = L3 + rng.below((f.len() - L3) as u64) as usize;
            f[at] ^= 1 << rng.below(8);
        }
        if rng.below(4) == 0 {
            let cut = L3 + rng.below((f.len() - L3) as u64) as usize;
            f.truncate(cut);
        }
        let a = random_action(&mut rng);
        let _ = process(&t, &mut f, L3, rng.below(4) == 0, |_| a, i as u32 / 500);
    }
}

/// Every forwarded packet has correct checksums, whatever the translation, in both
/// checksum states (complete, and CHECKSUM_PARTIAL completed afterwards).
#[test]
fn forwarded_packets_always_have_valid_checksums() {
    let t = table(4096);
    let mut rng = Rng(0xabcd_ef01_2345);
    let mut forwarded = 0;
    for i in 0..iters(30_000) {
        let mut f = random_packet(&mut rng);
        let ip = ip_of(&f);
        let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
        let proto = ip[9];
        let partial = !frag && matches!(proto, IPPROTO_TCP | IPPROTO_UDP) && rng.below(2) == 0;
        let mut vh = VnetHdr::default();
        if partial {
            let off = if proto == IPPROTO_TCP { 16 } else { 6 };
            let l4_len = u16::from_be_bytes([ip[2], ip[3]]) - 20;
            let p = csum::fold(csum::pseudo_v4(ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap(), proto, l4_len)); // alloc-ok: test code (cfg(test)), never on a packet path
            f[L3 + 20 + off..L3 + 22 + off].copy_from_slice(&p.to_be_bytes());
            vh = VnetHdr { flags: F_NEEDS_CSUM, csum_start: (L3 + 20) as u16, csum_offset: off as u16, ..VnetHdr::default() };
        }
        let a = random_action(&mut rng);
        if let Verdict::Forward { .. } = process(&t, &mut f, L3, partial, |_| a, i as u32 / 100) {
            forwarded += 1;
            complete_checksum(&mut f, &vh).unwrap(); // alloc-ok: test code (cfg(test)), never on a packet path
            if frag {
                let ip = ip_of(&f);
                assert_eq!(csum::checksum(&ip[..20]), 0, "fragment header checksum");
            } else {
                assert_eq!(verify_checksums(&f), Ok(true), "packet {i}");
                check(&f);
                if proto == IPPROTO_ICMP && f[L3 + 20] != 0 && f[L3 + 20] != 8 {
                    check_quoted(quoted_of(&f));
                }
            }
        }
    }
    assert!(forwarded > 1000, "forwarded {forwarded}");
}
