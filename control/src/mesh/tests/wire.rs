//! Wire formats: round trips, bounds, and decoding of garbage without panics.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use super::super::{
    Advert, DecodeError, LinkState, Message, PeerId, RelayHeader, WireRelayHeader, MAX_ADDRS, MAX_MESSAGE_BYTES, MAX_PEERS,
};
use super::sim::pid;

fn state(origin: u8, links: &[u8]) -> LinkState {
    LinkState {
        origin: pid(origin),
        seq: 7,
        addrs: vec!["192.0.2.1:6784".parse().unwrap()],
        links: links.iter().map(|n| pid(*n)).collect(),
        can_accept_inbound: true,
    }
}

fn samples() -> Vec<Message> {
    vec![
        Message::Update { adverts: vec![Advert { age_ms: 5, state: state(1, &[2, 3]) }] },
        Message::Sync {
            adverts: vec![Advert { age_ms: 0, state: state(2, &[]) }, Advert { age_ms: 9, state: state(3, &[1]) }],
        },
        Message::Digest { have: vec![(pid(1), 3), (pid(2), u64::MAX)] },
        Message::Update { adverts: vec![] },
        Message::Probe,
        Message::ProbeReply,
    ]
}

/// xorshift64*, seeded.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn messages_round_trip() {
    for m in samples() {
        assert_eq!(Message::decode(&m.encode()), Ok(m));
    }
    let text = String::from_utf8(samples()[0].encode()).unwrap();
    assert!(text.starts_with(r#"{"type":"update","adverts":[{"age_ms":5,"state":{"origin":"015a5a"#), "{text}");
    assert_eq!(Message::Probe.encode(), br#"{"type":"probe"}"#);
    assert_eq!(Message::decode(br#"{"type":"probe_reply","later":1}"#), Ok(Message::ProbeReply));
}

#[test]
fn decode_rejects_random_bytes_without_panicking() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = (rng.next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(Message::decode(&bytes).is_err());
        let _ = RelayHeader::parse(&bytes);
    }
    // JSON-looking noise.
    let alphabet: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "type",
        "update",
        "sync",
        "digest",
        "adverts",
        "have",
        "0",
        "18446744073709551616",
        "-1",
        "null",
        "state",
        "origin",
        "\"5a5a\"",
        " ",
    ];
    for _ in 0..20_000 {
        let n = rng.next() % 40;
        let s: String = (0..n).map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize]).collect();
        let _ = Message::decode(s.as_bytes());
    }
}

#[test]
fn decode_survives_mutations_of_valid_messages() {
    let mut rng = Rng(42);
    for m in samples() {
        let good = m.encode();
        for _ in 0..5_000 {
            let mut b = good.clone();
            match rng.next() % 4 {
                0 => {
                    let i = (rng.next() as usize) % b.len();
                    b[i] = rng.next() as u8;
                }
                1 => b.truncate((rng.next() as usize) % b.len()),
                2 => {
                    let i = (rng.next() as usize) % b.len();
                    b.insert(i, b"{}[],\":0a"[(rng.next() % 9) as usize]);
                }
                _ => {
                    let i = (rng.next() as usize) % b.len();
                    b.remove(i);
                }
            }
            if let Ok(Message::Update { adverts } | Message::Sync { adverts }) = Message::decode(&b) {
                assert!(adverts.iter().all(|a| a.state.validate().is_ok()));
            }
        }
    }
}

#[test]
fn decode_enforces_bounds() {
    let enc = |s: LinkState| Message::Update { adverts: vec![Advert { age_ms: 0, state: s }] }.encode();
    let mut too_many = state(0xff, &[]);
    too_many.links = (0..=MAX_PEERS as u16)
        .map(|i| {
            PeerId([
                (i >> 8) as u8,
                i as u8,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
                1,
            ])
        })
        .collect();
    assert_eq!(Message::decode(&enc(too_many)), Err(DecodeError::TooManyPeers));
    let mut addrs = state(1, &[]);
    addrs.addrs = vec!["192.0.2.1:1".parse().unwrap(); MAX_ADDRS + 1];
    assert_eq!(Message::decode(&enc(addrs)), Err(DecodeError::TooManyAddrs));
    assert_eq!(Message::decode(&enc(state(1, &[3, 2]))), Err(DecodeError::NotCanonical));
    assert_eq!(Message::decode(&enc(state(1, &[2, 2]))), Err(DecodeError::NotCanonical));
    assert_eq!(Message::decode(&enc(state(2, &[1, 2]))), Err(DecodeError::SelfLink));
    let digest = Message::Digest { have: vec![(pid(2), 1), (pid(1), 1)] }.encode();
    assert_eq!(Message::decode(&digest), Err(DecodeError::NotCanonical));
    let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
    assert_eq!(Message::decode(&big), Err(DecodeError::TooLong(MAX_MESSAGE_BYTES + 1)));
    let bad_id = br#"{"type":"digest","have":[["5a5a",1]]}"#;
    assert_eq!(Message::decode(bad_id), Err(DecodeError::Malformed));
    let unknown = br#"{"type":"gossip","have":[]}"#;
    assert_eq!(Message::decode(unknown), Err(DecodeError::Malformed));
    // Unknown fields are tolerated (a newer peer).
    let extra = br#"{"type":"digest","have":[],"flags":3}"#;
    assert_eq!(Message::decode(extra), Ok(Message::Digest { have: vec![] }));
}

#[test]
fn worst_case_messages_fit_the_bound() {
    let max_id = |i: usize| {
        let mut b = [0xffu8; 32];
        b[0] = (i >> 8) as u8;
        b[1] = i as u8;
        PeerId(b)
    };
    let v6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff),
        65535,
        0,
        0xffff_ffff,
    ));
    let s = LinkState {
        origin: PeerId([0xfe; 32]),
        seq: u64::MAX,
        addrs: vec![v6; MAX_ADDRS],
        links: (0..MAX_PEERS).map(max_id).collect(),
        can_accept_inbound: false,
    };
    let one = Message::Update { adverts: vec![Advert { age_ms: u64::MAX, state: s }] }.encode();
    assert!(one.len() < MAX_MESSAGE_BYTES, "{}", one.len());
    assert!(Message::decode(&one).is_ok());
    let digest = Message::Digest { have: (0..MAX_PEERS).map(|i| (max_id(i), u64::MAX)).collect() }.encode();
    assert!(digest.len() < MAX_MESSAGE_BYTES, "{}", digest.len());
    assert!(Message::decode(&digest).is_ok());
}

#[test]
fn relay_header_layout() {
    let mut k1 = [1u8; 32];
    k1[8] = 0xee; // not on the wire
    let h = RelayHeader { src: PeerId(k1), dst: PeerId([2; 32]), ttl: 9 };
    let b = h.to_bytes();
    assert_eq!(b.len(), 17);
    assert_eq!(&b[..8], &[1; 8]);
    assert_eq!(&b[8..16], &[2; 8]);
    assert_eq!(b[16], 9);
    let mut pkt = b.to_vec();
    pkt.extend_from_slice(b"payload");
    let (p, rest) = RelayHeader::parse(&pkt).unwrap();
    assert_eq!((p, rest), (h.to_wire(), &b"payload"[..]));
    assert_eq!(p, WireRelayHeader { src: [1; 8], dst: [2; 8], ttl: 9 });
    RelayHeader::set_ttl(&mut pkt, 3).unwrap();
    assert_eq!(RelayHeader::parse(&pkt).unwrap().0.ttl, 3);
    assert_eq!(RelayHeader::parse(&pkt[..16]), Err(DecodeError::Truncated));
    assert_eq!(RelayHeader::parse(&[]), Err(DecodeError::Truncated));
    let mut short = [0u8; 16];
    assert_eq!(h.emit(&mut short), Err(DecodeError::Truncated));
    assert_eq!(RelayHeader::set_ttl(&mut short, 1), Err(DecodeError::Truncated));
    let mut out = [0u8; 20];
    h.emit(&mut out).unwrap();
    assert_eq!(&out[..17], &b[..]);
}

#[test]
fn peer_id_text_forms() {
    let id = PeerId([0xab; 32]);
    let s = id.to_string();
    assert_eq!(s.len(), 64);
    assert_eq!(s.parse::<PeerId>(), Ok(id));
    assert_eq!(s.to_uppercase().parse::<PeerId>(), Ok(id));
    assert_eq!(id.short(), "abababab");
    assert_eq!(format!("{id:?}"), "PeerId(abababab)");
    assert!("ab".parse::<PeerId>().is_err());
    assert!("zz".repeat(32).parse::<PeerId>().is_err());
    assert!("é".repeat(32).parse::<PeerId>().is_err());
    assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{s}\""));
    assert_eq!(serde_json::from_str::<PeerId>(&format!("\"{s}\"")).unwrap(), id);
    assert!(serde_json::from_str::<PeerId>("17").is_err());
}
