//! The mesh's control side: gossip/topology messages (`Message::decode`, then
//! `Mesh::handle_message` from a linked neighbour, with answers and events polled) and
//! relay headers (`RelayHeader::parse`, `Mesh::resolve`, `Mesh::relay`). Inputs are raw
//! bytes or JSON built from a structured message with fuzzed fields (plus byte edits),
//! so the validation and the link-state database are reached.
//!
//! Oracles besides "no panic": what decodes re-encodes to something that decodes to the
//! same message; the database stays within `max_peers`.
#![no_main]

use std::net::SocketAddr;

use control::mesh::{Advert, Config, LinkState, Mesh, Message, PeerId, RelayHeader};
use libfuzzer_sys::fuzz_target;
use vswitchd_fuzz::Cursor;

fn peer(c: &mut Cursor<'_>) -> PeerId {
    // A few distinct keys (so links and origins collide), sometimes an arbitrary one.
    let s = c.u8();
    let mut k = [0u8; 32];
    if s & 0x80 != 0 {
        let t = c.take(32);
        k[..t.len()].copy_from_slice(t);
    } else {
        k[0] = s % 8;
        k[31] = s % 3;
    }
    PeerId(k)
}

fn message(c: &mut Cursor<'_>) -> Message {
    match c.u8() % 5 {
        0 | 1 => {
            let n = c.u8() % 6;
            let adverts = (0..n)
                .map(|_| {
                    let origin = peer(c);
                    let mut links: Vec<PeerId> = (0..c.u8() % 5).map(|_| peer(c)).collect();
                    if c.bool() {
                        links.sort();
                        links.dedup();
                    }
                    let addrs = (0..c.u8() % 3).map(|_| SocketAddr::from(([192, 0, 2, c.u8()], c.u16()))).collect();
                    Advert { age_ms: c.u32() as u64 * if c.bool() { 1 } else { 1 << 20 }, state: LinkState { origin, seq: c.u32() as u64 | (c.u8() as u64) << 32, addrs, links, can_accept_inbound: c.bool() } }
                })
                .collect();
            if c.bool() {
                Message::Update { adverts }
            } else {
                Message::Sync { adverts }
            }
        }
        2 => {
            let mut have: Vec<(PeerId, u64)> = (0..c.u8() % 6).map(|_| (peer(c), c.u32() as u64)).collect();
            if c.bool() {
                have.sort_by_key(|h| h.0);
                have.dedup_by_key(|h| h.0);
            }
            Message::Digest { have }
        }
        3 => Message::Probe,
        _ => Message::ProbeReply,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let me = PeerId([1; 32]);
    let them = PeerId([2; 32]);
    let cfg = Config { max_peers: 8, ..Config::default() };
    let max_peers = cfg.max_peers;
    let mut m = Mesh::new(me, vec![SocketAddr::from(([192, 0, 2, 1], 6784))], cfg, 1 << 32, 7, 0).unwrap();
    let _ = m.link_up(them, SocketAddr::from(([192, 0, 2, 2], 6784)), 0);
    let _ = m.link_up(PeerId([3; 32]), SocketAddr::from(([192, 0, 2, 3], 6784)), 0);
    let mut now = 0u64;
    let mut ops = 0;
    while !c.is_empty() && ops < 16 {
        ops += 1;
        let op = c.u8();
        let bytes: Vec<u8> = match op % 6 {
            0 => c.chunk().to_vec(),
            1 | 2 => {
                let mut b = message(&mut c).encode();
                for _ in 0..c.u8() % 3 {
                    let at = c.u16() as usize % b.len().max(1);
                    if let Some(x) = b.get_mut(at) {
                        *x = c.u8();
                    }
                }
                b
            }
            3 => {
                // Relay header + payload.
                let b = c.chunk();
                if let Ok((wh, rest)) = RelayHeader::parse(b) {
                    assert_eq!(rest.len() + RelayHeader::LEN, b.len());
                    if let Some(h) = m.resolve(&wh) {
                        let _ = m.relay(&h);
                    }
                }
                let mut b = b.to_vec();
                let _ = RelayHeader::set_ttl(&mut b, 0);
                continue;
            }
            4 => {
                now += c.u16() as u64 * 100;
                m.handle_timeout(now);
                let _ = m.wants_dial(now);
                continue;
            }
            _ => {
                let p = peer(&mut c);
                if c.bool() {
                    let _ = m.link_up(p, SocketAddr::from(([192, 0, 2, 9], 6784)), now);
                } else {
                    m.link_down(&p, now);
                }
                continue;
            }
        };
        if let Ok(msg) = Message::decode(&bytes) {
            let again = Message::decode(&msg.encode()).expect("re-encoded message decodes");
            assert_eq!(again, msg);
        }
        let from = if op & 0x80 != 0 { PeerId([3; 32]) } else { them };
        let _ = m.handle_message(&from, &bytes, now);
        while m.poll_transmit(now).is_some() {}
        while m.poll_event().is_some() {}
        assert!(m.link_states().len() <= max_peers, "link-state database over max_peers");
        let _ = m.route_table();
    }
});
