//! Tests of the per-query decision, from query bytes to response bytes.

use super::*;
use crate::dns::names::DnsEndpoint;
use crate::dns::wire::tests::{hex, Prng};

fn table() -> NameTable {
    let mut t = NameTable::new();
    let ep = |sb: &str, aliases: &[&str], v4: &str, v6: Option<&str>| DnsEndpoint {
        sandbox: sb.into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ipv4: Some(v4.parse().unwrap()),
        ipv6: v6.map(|s| s.parse().unwrap()),
    };
    t.set_endpoint("front", ep("alpha", &["web"], "10.1.0.2", Some("fd00:1::2")));
    t.set_endpoint("front", ep("beta", &["web"], "10.1.0.3", None));
    t.set_endpoint("back", ep("gamma", &["db"], "10.2.0.2", None));
    for i in 0..40u8 {
        t.set_endpoint("front", ep(&format!("m{i:02}"), &["many"], &format!("10.1.1.{i}"), None));
    }
    t
}

fn query(name: &str, qtype: u16, edns: Option<Edns>) -> Vec<u8> {
    let mut m = Message::query(0x4242, Name::from_dotted(name).unwrap(), qtype, true);
    m.edns = edns;
    m.encode()
}

/// The parsed reply and whether it was local; panics on Forward/Drop.
fn reply(a: Action) -> (Message, bool) {
    match a {
        Action::Reply { bytes, rcode, local } => {
            let m = Message::parse(&bytes).unwrap();
            assert_eq!(m.rcode(), rcode);
            assert_eq!(m.header.id, 0x4242);
            assert!(m.header.has(flag::QR) && m.header.has(flag::RA) && m.header.has(flag::RD));
            (m, local)
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(asker: &str, name: &str, qtype: u16) -> Action {
    handle_query(&query(name, qtype, None), asker, &table(), 600, false)
}

fn local(asker: &str, name: &str, qtype: u16) -> Message {
    let (m, local) = reply(ask(asker, name, qtype));
    assert!(local);
    assert!(m.header.has(flag::AA));
    assert_eq!(m.rcode(), 0);
    assert_eq!(m.questions[0].name.to_dotted().trim_end_matches('.'), name.trim_end_matches('.'), "question echoed as asked");
    m
}

fn is_forward(a: &Action) -> bool {
    matches!(a, Action::Forward { .. })
}

#[test]
fn answers_local_names() {
    let m = local("alpha", "BeTa.", rrtype::A);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ipv4(), Some("10.1.0.3".parse().unwrap()));
    assert_eq!(m.answers[0].ttl, 600);
    assert_eq!(m.answers[0].name.to_dotted(), "BeTa.");
    let m = local("alpha", "alpha.FRONT", rrtype::AAAA);
    assert_eq!(m.answers[0].ipv6(), Some("fd00:1::2".parse().unwrap()));
    // Local name without an address of that type, or another type: NODATA.
    for (name, t) in [("beta", rrtype::AAAA), ("alpha", rrtype::MX), ("web", rrtype::TXT)] {
        let m = local("alpha", name, t);
        assert!(m.answers.is_empty(), "{name}");
    }
    let m = local("alpha", "alpha", rrtype::ANY);
    assert_eq!(m.answers.iter().map(|r| r.rtype).collect::<Vec<_>>(), [rrtype::A, rrtype::AAAA]);
    // Shared alias: both, rotating between queries of the same table.
    let t = table();
    let ips = |t: &NameTable| -> Vec<_> {
        let (m, _) = reply(handle_query(&query("web", rrtype::A, None), "alpha", t, 600, false));
        m.answers.iter().map(|r| r.ipv4().unwrap().to_string()).collect()
    };
    assert_eq!(ips(&t), ["10.1.0.2", "10.1.0.3"]);
    assert_eq!(ips(&t), ["10.1.0.3", "10.1.0.2"]);
}

#[test]
fn reverse_names() {
    let m = local("alpha", "3.0.1.10.in-addr.arpa", rrtype::PTR);
    assert_eq!(m.answers[0].target().unwrap().to_dotted(), "beta.front.");
    let rev6 = crate::dns::names::reverse_name("fd00:1::2".parse().unwrap());
    let m = local("alpha", &rev6, rrtype::PTR);
    assert_eq!(m.answers[0].target().unwrap().to_dotted(), "alpha.front.");
    // A known address asked with another type: NODATA.
    assert!(local("alpha", "3.0.1.10.in-addr.arpa", rrtype::A).answers.is_empty());
    // Addresses of other networks and unknown ones go upstream.
    assert!(is_forward(&ask("alpha", "2.0.2.10.in-addr.arpa", rrtype::PTR)));
    assert!(is_forward(&ask("alpha", "9.9.9.10.in-addr.arpa", rrtype::PTR)));
    assert!(is_forward(&ask("alpha", "0.10.in-addr.arpa", rrtype::PTR)));
}

#[test]
fn everything_else_is_forwarded() {
    for (asker, name) in [("alpha", "gamma"), ("alpha", "db"), ("alpha", "db.back"), ("alpha", "example.com"), ("gamma", "web"), ("nobody", "alpha"), ("alpha", ".")] {
        match ask(asker, name, rrtype::A) {
            Action::Forward { question, max_udp } => {
                assert_eq!(question.name.key().unwrap(), name.trim_end_matches('.'));
                assert_eq!(max_udp, 512);
            }
            a => panic!("{asker} {name}: {a:?}"),
        }
    }
    // Class CH (version.bind and friends) is never local.
    let mut m = Message::query(1, Name::from_dotted("alpha").unwrap(), rrtype::TXT, true);
    m.questions[0].qclass = 3;
    assert!(is_forward(&handle_query(&m.encode(), "alpha", &table(), 600, false)));
    // The client's EDNS size is what the forwarder must respect.
    let e = Some(Edns { udp_size: 4000, ..Default::default() });
    match handle_query(&query("example.com", rrtype::A, e), "alpha", &table(), 600, false) {
        Action::Forward { max_udp, .. } => assert_eq!(max_udp, 4000),
        a => panic!("{a:?}"),
    }
}

#[test]
fn edns_and_sizes() {
    let e = Edns { udp_size: 4096, flags: Edns::DO, options: hex("000a0008b0e7c11a5523e799"), ..Default::default() };
    let (m, _) = reply(handle_query(&query("alpha", rrtype::A, Some(e.clone())), "alpha", &table(), 600, false));
    let o = m.edns.unwrap();
    assert_eq!((o.udp_size, o.flags, o.version), (EDNS_UDP_SIZE, Edns::DO, 0));
    assert!(o.options.is_empty());
    // EDNS version 1: BADVERS, with our OPT.
    let bad = Edns { version: 1, ..e };
    let (m, local) = reply(handle_query(&query("alpha", rrtype::A, Some(bad)), "alpha", &table(), 600, false));
    assert!(!local);
    assert_eq!(m.rcode(), rcode::BADVERS);
    assert!(m.answers.is_empty());
    // 40 endpoints share "many": 512 bytes without EDNS hold (512 - 12 - 10) / 16 = 30 ...
    let (m, _) = reply(ask("alpha", "many", rrtype::A));
    assert!(m.header.has(flag::TC));
    assert_eq!(m.answers.len(), 30);
    // ... all of them over TCP, or with a large enough EDNS size.
    let (m, _) = reply(handle_query(&query("many", rrtype::A, None), "alpha", &table(), 600, true));
    assert!(!m.header.has(flag::TC));
    assert_eq!(m.answers.len(), 40);
    let big = Edns { udp_size: 1232, ..Default::default() };
    let (m, _) = reply(handle_query(&query("many", rrtype::A, Some(big)), "alpha", &table(), 600, false));
    assert!(!m.header.has(flag::TC));
    assert_eq!(m.answers.len(), 40);
}

#[test]
fn malformed_queries() {
    let t = table();
    let good = query("alpha", rrtype::A, None);
    assert_eq!(handle_query(&good[..5], "alpha", &t, 600, false), Action::Drop);
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert_eq!(handle_query(&resp, "alpha", &t, 600, false), Action::Drop);
    let (m, local) = reply(handle_query(&good[..good.len() - 1], "alpha", &t, 600, false));
    assert!(!local);
    assert_eq!(m.rcode(), rcode::FORMERR as u16);

    let s = servfail(&query("example.com", rrtype::A, Some(Edns { udp_size: 1232, ..Default::default() })));
    let m = Message::parse(&s).unwrap();
    assert_eq!((m.header.id, m.rcode()), (0x4242, rcode::SERVFAIL as u16));
    assert_eq!(m.questions[0].name.to_dotted(), "example.com.");
    assert!(m.edns.is_some());
    let m = Message::parse(&servfail(&good[..12])).unwrap();
    assert_eq!((m.header.id, m.rcode()), (0x4242, rcode::SERVFAIL as u16));
}

#[test]
fn fuzz_handle_query() {
    let t = table();
    let seeds = [query("web", rrtype::A, None), query("3.0.1.10.in-addr.arpa", rrtype::PTR, Some(Edns::default())), query("many.front", rrtype::ANY, None)];
    let mut rng = Prng(42);
    for i in 0..50_000 {
        let mut b = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.below(3) {
            match rng.below(3) {
                0 if !b.is_empty() => {
                    let at = rng.below(b.len());
                    b[at] = rng.next() as u8;
                }
                1 => b.truncate(rng.below(b.len() + 1)),
                _ => {
                    let at = rng.below(b.len() + 1);
                    b.insert(at, rng.next() as u8);
                }
            }
        }
        match handle_query(&b, "alpha", &t, 600, i % 2 == 0) {
            Action::Reply { bytes, .. } => {
                assert!(bytes.len() <= if i % 2 == 0 { wire::MAX_MESSAGE } else { 4096 });
                Message::parse(&bytes).expect("our replies parse");
            }
            Action::Forward { .. } | Action::Drop => {}
        }
        let _ = servfail(&b);
    }
}
