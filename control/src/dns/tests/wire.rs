//! Codec tests: byte-exact known messages, round trips, hostile input.

use super::*;

/// `dig @127.0.0.11 Web.Example. A` as captured on the wire (dig 9.18: RD and AD set,
/// EDNS0 with 1232 bytes and a client cookie).
const DIG_QUERY: &str = "b27d0120000100000000000103576562074578616d706c65000001000100002904d000000000000c000a0008b0e7c11a5523e799";
/// `dig +noedns -x 10.1.0.2` as captured.
const DIG_PTR: &str = "88480120000100000000000001320130013102313007696e2d61646472046172706100000c0001";

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn name(s: &str) -> Name {
    Name::from_dotted(s).unwrap()
}

#[test]
fn dig_query_parses_and_round_trips() {
    let b = hex(DIG_QUERY);
    let m = parse_query(&b).unwrap();
    assert_eq!(m.header.id, 0xb27d);
    assert!(m.header.has(flag::RD) && m.header.has(flag::AD) && !m.header.has(flag::QR));
    assert_eq!(m.header.opcode(), 0);
    assert_eq!(m.questions.len(), 1);
    let q = &m.questions[0];
    assert_eq!(q.name.to_dotted(), "Web.Example.");
    assert_eq!(q.name.key().as_deref(), Some("web.example"));
    assert_eq!((q.qtype, q.qclass), (rrtype::A, CLASS_IN));
    let e = m.edns.as_ref().unwrap();
    assert_eq!((e.udp_size, e.version, e.ext_rcode, e.flags), (1232, 0, 0, 0));
    assert_eq!(e.options, hex("000a0008b0e7c11a5523e799"));
    assert_eq!(e.max_udp(), 1232);
    assert!(m.additional.is_empty());
    assert_eq!(m.encode(), b);

    let p = hex(DIG_PTR);
    let m = parse_query(&p).unwrap();
    assert_eq!(m.questions[0].name.key().as_deref(), Some("2.0.1.10.in-addr.arpa"));
    assert_eq!(m.questions[0].qtype, rrtype::PTR);
    assert!(m.edns.is_none());
    assert_eq!(m.encode(), p);
}

#[test]
fn local_answer_bytes() {
    let q = parse_query(&hex(DIG_QUERY)).unwrap();
    let mut r = Message::response_to(&q);
    r.header.set(flag::AA, true);
    r.answers.push(Record::a(q.questions[0].name.clone(), 600, "10.1.0.2".parse().unwrap()));
    r.edns = Some(Edns { udp_size: EDNS_UDP_SIZE, ..Default::default() });
    let expect = hex(concat!(
        "b27d85800001000100000001",
        "03576562074578616d706c650000010001",
        "c00c000100010000025800040a010002",
        "00002904d0000000000000", // OPT: root, type 41, size 1232, no flags, no options
    ));
    assert_eq!(r.encode(), expect);
    let back = Message::parse(&expect).unwrap();
    assert_eq!(back.answers[0].name.to_dotted(), "Web.Example.");
    assert_eq!(back.answers[0].ipv4(), Some("10.1.0.2".parse().unwrap()));
    assert_eq!(back.answers[0].ttl, 600);
    assert!(back.header.has(flag::AA) && back.header.has(flag::RA) && back.header.has(flag::RD));
    assert!(!back.header.has(flag::AD));
    assert_eq!(back.rcode(), 0);
}

#[test]
fn compressed_names_are_followed() {
    // Response for www.example.com: CNAME (owner -> question, target "web" + pointer to
    // "example.com" inside the question), then an A record owned by the CNAME target
    // (pointer to the pointer-ending rdata name).
    let mut b = hex("12348180000100020000000003777777076578616d706c6503636f6d0000010001");
    // answer 1 at offset 33: c00c CNAME IN ttl 60, rdlen 6: 03 'web' c010
    b.extend(hex("c00c00050001 0000003c 0006 03776562 c010".replace(' ', "").as_str()));
    // answer 2: name = pointer to the CNAME rdata at offset 33+12 = 45; A 192.0.2.1
    b.extend(hex("c02d00010001 0000003c 0004 c0000201".replace(' ', "").as_str()));
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.answers[0].name.to_dotted(), "www.example.com.");
    assert_eq!(m.answers[0].target().unwrap().to_dotted(), "web.example.com.");
    assert_eq!(m.answers[1].name.to_dotted(), "web.example.com.");
    assert_eq!(m.answers[1].ipv4(), Some("192.0.2.1".parse().unwrap()));
    // Re-encoding the decompressed message gives a message that reads the same.
    let again = Message::parse(&m.encode()).unwrap();
    assert_eq!(again.answers, m.answers);
    assert_eq!(again.questions, m.questions);
}

#[test]
fn hostile_names() {
    let hdr = "000000000001000000000000";
    // Pointer to itself.
    let b = hex(&format!("{hdr}c00c00010001"));
    assert_eq!(Message::parse(&b).unwrap_err(), WireError::BadPointer);
    // Forward pointer.
    let b = hex(&format!("{hdr}c00e0001000100"));
    assert_eq!(Message::parse(&b).unwrap_err(), WireError::BadPointer);
    // Extended label types.
    let b = hex(&format!("{hdr}4100000100"));
    assert_eq!(Message::parse(&b).unwrap_err(), WireError::BadLabel);
    // Truncated inside a label, inside the type.
    assert_eq!(Message::parse(&hex(&format!("{hdr}0561"))).unwrap_err(), WireError::Truncated);
    assert_eq!(Message::parse(&hex(&format!("{hdr}000001"))).unwrap_err(), WireError::Truncated);
    // A name of 4 * 63-byte labels is too long (256 bytes with the root).
    let mut b = hex(hdr);
    for _ in 0..4 {
        b.push(63);
        b.extend([b'a'; 63]);
    }
    b.extend([0, 0, 1, 0, 1]);
    assert_eq!(Message::parse(&b).unwrap_err(), WireError::NameTooLong);
    // Chained backward pointers that build a long name are caught the same way.
    let mut b = vec![0u8; 12];
    let mut starts = vec![12usize];
    b.push(63);
    b.extend([b'a'; 63]);
    b.push(0);
    for _ in 0..3 {
        let prev = *starts.last().unwrap();
        starts.push(b.len());
        b.push(63);
        b.extend([b'b'; 63]);
        b.extend([0xc0 | (prev >> 8) as u8, prev as u8]);
    }
    assert_eq!(Name::parse(&b, starts[2]).unwrap().0.wire().len(), 193);
    assert_eq!(Name::parse(&b, starts[2]).unwrap().1, starts[3]);
    assert_eq!(Name::parse(&b, starts[3]).unwrap_err(), WireError::NameTooLong);
}

#[test]
fn names_from_text() {
    assert_eq!(name("a.B.").wire(), b"\x01a\x01B\x00");
    assert_eq!(name("a.B").wire(), b"\x01a\x01B\x00");
    assert!(name(".").is_root());
    assert_eq!(name(".").to_dotted(), ".");
    assert_eq!(name(".").key().as_deref(), Some(""));
    assert_eq!(Name::from_dotted("a..b").unwrap_err(), WireError::BadLabel);
    assert_eq!(Name::from_dotted(&"x".repeat(64)).unwrap_err(), WireError::BadLabel);
    assert!(Name::from_dotted(&"x".repeat(63)).is_ok());
    let long = vec!["y".repeat(63); 4].join(".");
    assert_eq!(Name::from_dotted(&long).unwrap_err(), WireError::NameTooLong);
    assert!(name("WeB.x").eq_ignore_case(&name("web.X")));
    assert!(name("WeB.x") != name("web.X"));
    // Odd bytes: escaped for display, no lookup key.
    let (n, _) = Name::parse(b"\x03a.b\x02\xff \x00", 0).unwrap();
    assert_eq!(n.to_dotted(), "a\\.b.\\255\\032.");
    assert_eq!(n.key(), None);
    assert_eq!(n.labels().count(), 2);
}

#[test]
fn query_errors() {
    let ok = hex(DIG_PTR);
    // Too short, or a response: dropped.
    assert_eq!(parse_query(&ok[..11]).unwrap_err(), QueryError::Drop);
    let mut resp = ok.clone();
    resp[2] |= 0x80;
    assert_eq!(parse_query(&resp).unwrap_err(), QueryError::Drop);
    // Other opcodes: NOTIMP with the question.
    let mut notify = ok.clone();
    notify[2] |= 4 << 3;
    match parse_query(&notify).unwrap_err() {
        QueryError::Reply { rcode, question, header } => {
            assert_eq!(rcode, rcode::NOTIMP);
            assert!(question.is_some());
            let r = error_response(&header, question.as_ref(), rcode);
            let m = Message::parse(&r).unwrap();
            assert_eq!((m.header.id, m.header.rcode(), m.header.opcode()), (0x8848, rcode::NOTIMP, 4));
            assert!(m.header.has(flag::QR) && m.header.has(flag::RD));
            assert_eq!(m.questions.len(), 1);
        }
        e => panic!("{e:?}"),
    }
    // No question, two questions, a broken question: FORMERR.
    for (qd, cut) in [(0u8, ok.len()), (2, ok.len()), (1, ok.len() - 3)] {
        let mut b = ok[..cut].to_vec();
        b[5] = qd;
        match parse_query(&b).unwrap_err() {
            QueryError::Reply { rcode, .. } => assert_eq!(rcode, rcode::FORMERR),
            e => panic!("{e:?}"),
        }
    }
    // Two OPT records: FORMERR.
    let mut b = hex(DIG_QUERY);
    b[11] = 2;
    b.extend(hex("00002904d0000000000000"));
    assert!(matches!(parse_query(&b), Err(QueryError::Reply { rcode: 1, .. })));
}

#[test]
fn truncation_keeps_question_and_opt() {
    let q = Message::query(7, name("many.example"), rrtype::A, true);
    let mut r = Message::response_to(&q);
    for i in 0..100u8 {
        r.answers.push(Record::a(name("many.example"), 600, [10, 0, 0, i].into()));
    }
    r.edns = Some(Edns { udp_size: 1232, ..Default::default() });
    let full = r.encode();
    assert_eq!(Message::parse(&full).unwrap().answers.len(), 100);
    assert!(!Header::parse(&full).unwrap().has(flag::TC));
    let small = r.encode_limited(512);
    assert!(small.len() <= 512, "{}", small.len());
    let m = Message::parse(&small).unwrap();
    assert!(m.header.has(flag::TC));
    assert!(m.edns.is_some());
    assert_eq!(m.questions, q.questions);
    // 12 + 18 (question) + 11 (OPT) + n * 16 <= 512
    assert_eq!(m.answers.len(), 29);
    let t = truncated(&full).unwrap();
    let m = Message::parse(&t).unwrap();
    assert!(m.header.has(flag::TC) && m.answers.is_empty() && m.questions == q.questions);
    assert_eq!(truncated(&full[..5]), None);
}

#[test]
fn extended_rcode() {
    let q = parse_query(&hex(DIG_QUERY)).unwrap();
    let mut r = Message::response_to(&q);
    r.edns = Some(Edns { udp_size: 1232, ..Default::default() });
    r.set_rcode(rcode::BADVERS);
    let m = Message::parse(&r.encode()).unwrap();
    assert_eq!(m.rcode(), rcode::BADVERS);
    assert_eq!(m.header.rcode(), 0);
    assert_eq!(m.edns.unwrap().ext_rcode, 1);
}

/// xorshift64*, deterministic so failures reproduce.
pub(crate) struct Prng(pub u64);

impl Prng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random and mutated inputs: every entry point returns, none panics.
#[test]
fn fuzz_never_panics() {
    let mut rng = Prng(0x9e37_79b9_7f4a_7c15);
    let seeds = [hex(DIG_QUERY), hex(DIG_PTR), {
        let q = parse_query(&hex(DIG_QUERY)).unwrap();
        let mut r = Message::response_to(&q);
        r.answers.push(Record::ptr(name("x.y"), 1, &name("target.example")));
        r.answers.push(Record::aaaa(name("Web.Example"), 1, "fd00::1".parse().unwrap()));
        r.encode()
    }];
    let mut parsed = 0;
    for i in 0..200_000 {
        let buf: Vec<u8> = if i % 2 == 0 {
            let len = rng.below(80);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut b = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                match rng.below(4) {
                    0 if !b.is_empty() => {
                        let at = rng.below(b.len());
                        b[at] = rng.next() as u8;
                    }
                    1 if !b.is_empty() => {
                        let at = rng.below(b.len());
                        b[at] ^= 1 << rng.below(8);
                    }
                    2 => b.truncate(rng.below(b.len() + 1)),
                    _ => {
                        let at = rng.below(b.len() + 1);
                        b.insert(at, [0xc0, 0x0c, 0x00, 0x3f, 0xff][rng.below(5)]);
                    }
                }
            }
            b
        };
        if let Ok(m) = Message::parse(&buf) {
            parsed += 1;
            // What we read, we can write and read again.
            let again = Message::parse(&m.encode()).expect("re-encoded message parses");
            assert_eq!(again.questions, m.questions);
            let _ = m.encode_limited(rng.below(600));
        }
        let _ = parse_query(&buf);
        let _ = peek_question(&buf);
        let _ = truncated(&buf);
        let _ = Name::parse(&buf, rng.below(buf.len() + 2));
    }
    assert!(parsed > 1000, "only {parsed} inputs parsed: the mutations are too destructive to be useful");
}
