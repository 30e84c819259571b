//! Tests of the mesh core: handshakes and admission, transport, replay, timers, rekey on
//! a simulated network with a fake clock, flood limits, and no-panic fuzzing.

mod admission;
mod fuzz;
mod rekey;
mod timers;
mod transport;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;

/// A buffer big enough for any message.
pub(super) fn buf() -> Vec<u8> {
    vec![0u8; wire::MAX_MESSAGE_LEN + 64]
}

pub(super) fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

pub(super) fn slot(n: u32) -> PeerSlot {
    PeerSlot::new(n).unwrap()
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A config admitting `allowed`, otherwise defaults.
pub(super) fn cfg_allowing(allowed: &[[u8; 32]]) -> MeshConfig {
    MeshConfig { allowed: allowed.to_vec(), ..MeshConfig::default() }
}

/// One host of a test: identity, config, responder.
pub(super) struct Host {
    pub id: Identity,
    pub cfg: MeshConfig,
    pub resp: Responder,
    pub ip: IpAddr,
}

impl Host {
    pub fn new(n: u8, cfg: MeshConfig, now: Instant) -> Host {
        let id = Identity::from_bytes([n; 32]);
        let resp = Responder::new(&id, &cfg, now);
        Host { id, cfg, resp, ip: ip(n) }
    }
}

/// Runs a full handshake: `a` initiates to `b`. Returns (a's peer for b, b's peer for a).
pub(super) fn connect(a: &mut Host, b: &mut Host, now: Instant) -> (Peer, Peer) {
    let mut pa = Peer::new(&a.id, b.id.public(), &a.cfg, slot(1), now);
    let (mut m, mut r) = (buf(), buf());
    let n = pa.initiate(&mut m, now).unwrap().unwrap();
    assert_eq!(route(&m[..n]), Route::Initiation);
    let init = b.resp.handle_initiation(a.ip, &m[..n], now).unwrap();
    assert_eq!(init.remote_public(), &a.id.public());
    let (mut pb, rn) = Peer::from_initiation(&b.id, init, &b.cfg, slot(2), &mut r, now).unwrap();
    assert!(!pb.is_up(now), "responder waits for confirmation");
    assert!(matches!(route(&r[..rn]), Route::Peer { slot: s, .. } if s == slot(1)));
    let Decapsulated::HandshakeComplete { reply_len } = pa.decapsulate(&r[..rn], &mut m, now).unwrap() else {
        panic!("expected handshake completion")
    };
    assert!(pa.is_up(now));
    let c = m[..reply_len].to_vec();
    assert_eq!(pb.decapsulate(&c, &mut r, now).unwrap(), Decapsulated::Keepalive);
    assert!(pb.is_up(now));
    (pa, pb)
}

/// Two hosts that admit each other by key.
pub(super) fn pair(cfg: MeshConfig, now: Instant) -> (Host, Host) {
    let ida = Identity::from_bytes([1; 32]);
    let idb = Identity::from_bytes([2; 32]);
    let a = Host::new(1, MeshConfig { allowed: vec![idb.public()], ..cfg.clone() }, now);
    let b = Host::new(2, MeshConfig { allowed: vec![ida.public()], ..cfg }, now);
    (a, b)
}

/// Sends `payload` from `from` to `to`, expecting delivery. Returns the wire message.
pub(super) fn send(from: &mut Peer, to: &mut Peer, kind: PayloadKind, payload: &[u8], now: Instant) -> Vec<u8> {
    let (mut m, mut r) = (buf(), buf());
    let Encapsulated::Data { len } = from.encapsulate(kind, payload, &mut m, now).unwrap() else {
        panic!("no session")
    };
    assert_eq!(len, payload.len() + TRANSPORT_OVERHEAD);
    let d = to.decapsulate(&m[..len], &mut r, now).unwrap();
    let Decapsulated::Data { kind: k, offset, len: n } = d else { panic!("expected data, got {d:?}") };
    assert_eq!(k, kind);
    assert_eq!(&r[offset..offset + n], payload);
    m[..len].to_vec()
}

/// A small deterministic generator (xorshift64*).
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

#[test]
fn handles_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Peer>();
    send::<PeerSender>();
    send::<Responder>();
    send::<Initiation>();
    send::<Identity>();
}
