//! The embedded DNS server as a sandbox drives it: queries (raw, or built with fuzzed
//! header bits, names — compression pointers included —, types, classes, EDNS) through
//! the server's decision (`handle_query`: parse, answer from the name table, refuse or
//! forward) over UDP and TCP limits; and upstream answers through what the forwarder
//! does with them (`peek_question` matching, `truncated`, SERVFAIL).
//!
//! Oracles besides "no panic": a reply fits the client's limit (512 bytes, the EDNS
//! size, 65535 over TCP), parses with our own parser and carries the query's id.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use control::dns::fuzzing::{handle_query, servfail};
use control::dns::names::{DnsEndpoint, NameTable};
use control::dns::wire::{self, Message};
use libfuzzer_sys::fuzz_target;
use vswitchd_fuzz::Cursor;

fn names() -> NameTable {
    let mut t = NameTable::new();
    for (net, sb, alias, last) in [("n1", "web", "www", 2u8), ("n1", "db", "database", 3), ("n2", "web", "api", 4), ("n2", "cache", "r", 5)] {
        t.set_endpoint(
            net,
            DnsEndpoint {
                sandbox: sb.into(),
                aliases: vec![alias.into(), format!("{alias}.{net}")],
                ipv4: Some(Ipv4Addr::new(10, 0, 0, last)),
                ipv6: (last % 2 == 0).then(|| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last as u16)),
            },
        );
    }
    t
}

const LABELS: [&[u8]; 10] = [b"web", b"db", b"www", b"database", b"n1", b"in-addr", b"arpa", b"10", b"2", b"ip6"];

fn name(c: &mut Cursor<'_>, out: &mut Vec<u8>) {
    let n = c.u8() % 7;
    for _ in 0..n {
        let s = c.u8();
        match s % 8 {
            0 => {
                // Arbitrary label (length from the fuzzer, may lie).
                let l = c.u8();
                out.push(l);
                out.extend_from_slice(c.take((l & 0x3f) as usize));
            }
            1 => {
                // A compression pointer somewhere.
                out.push(0xc0 | (c.u8() & 0x3f));
                out.push(c.u8());
                return;
            }
            _ => {
                let l = LABELS[s as usize % LABELS.len()];
                out.push(l.len() as u8);
                out.extend_from_slice(l);
            }
        }
    }
    out.push(0);
}

fn query(c: &mut Cursor<'_>) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&c.u16().to_be_bytes()); // id
    let flags = c.u16() & if c.bool() { 0xffff } else { 0x0130 }; // mostly RD/AD/CD
    q.extend_from_slice(&flags.to_be_bytes());
    let qd = if c.u8() % 8 == 0 { c.u8() as u16 % 3 } else { 1 };
    let an = if c.u8() % 8 == 0 { c.u8() as u16 % 3 } else { 0 };
    let edns = c.bool();
    q.extend_from_slice(&qd.to_be_bytes());
    q.extend_from_slice(&an.to_be_bytes());
    q.extend_from_slice(&[0, 0]);
    q.extend_from_slice(&(edns as u16).to_be_bytes());
    for _ in 0..qd.max(1) {
        name(c, &mut q);
        let qtype = [1u16, 28, 12, 255, 15, 16, c.u16()][c.u8() as usize % 7];
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&(if c.u8() % 8 == 0 { c.u16() } else { 1 }).to_be_bytes());
    }
    for _ in 0..an {
        name(c, &mut q);
        q.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9]);
    }
    if edns {
        q.push(0); // root
        q.extend_from_slice(&41u16.to_be_bytes());
        q.extend_from_slice(&[512u16, 1232, 4096, 65535, 0, c.u16()][c.u8() as usize % 6].to_be_bytes());
        q.push(0); // extended rcode
        q.push(if c.u8() % 8 == 0 { c.u8() } else { 0 }); // version
        q.extend_from_slice(&c.u16().to_be_bytes()); // flags
        let on = c.u8() as usize % 16;
        let opt = c.take(on).to_vec();
        let rdlen = if c.u8() % 8 == 0 { c.u16() } else { opt.len() as u16 };
        q.extend_from_slice(&rdlen.to_be_bytes());
        q.extend_from_slice(&opt);
    }
    if c.u8() % 8 == 0 {
        let cut = c.u16() as usize % (q.len() + 1);
        q.truncate(cut);
    }
    q
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let sel = c.u8();
    let msg = if sel % 4 == 0 { c.rest().to_vec() } else { query(&mut c) };
    let t = names();
    for (asker, tcp) in [("web", false), ("cache", true), ("nobody", false)] {
        let Some(r) = handle_query(&msg, asker, &t, 600, tcp) else { continue };
        let Ok(bytes) = r else { continue };
        // Reply limits: 512 without EDNS, the EDNS size (at least 512), 65535 over TCP.
        let limit = if tcp { wire::MAX_MESSAGE } else { edns_limit(&msg) };
        assert!(bytes.len() <= limit, "reply of {} bytes over the client's limit {limit}", bytes.len());
        assert!(bytes.len() >= 12 && bytes[..2] == msg[..2], "reply carries the query id");
        if let Err(e) = Message::parse(&bytes) {
            panic!("our own reply does not parse: {e:?}");
        }
    }
    // As an upstream answer to a forwarded query.
    if let Ok((h, q)) = wire::peek_question(&msg) {
        let _ = (h.has(wire::flag::QR), q.map(|q| q.matches(&q)));
        if let Some(tr) = wire::truncated(&msg) {
            assert!(tr.len() <= 12 + 4 + 256, "truncated answer of {} bytes", tr.len());
        }
    }
    let _ = Message::parse(&msg).map(|m| m.encode_limited(512));
    if msg.len() >= 12 {
        let _ = servfail(&msg);
    }
});

/// The UDP size the query allows (what `handle_query` uses), from its EDNS record.
fn edns_limit(msg: &[u8]) -> usize {
    match Message::parse(msg) {
        Ok(m) => m.edns.as_ref().map_or(wire::MAX_UDP_PLAIN, |e| e.max_udp()),
        Err(_) => wire::MAX_UDP_PLAIN,
    }
}
