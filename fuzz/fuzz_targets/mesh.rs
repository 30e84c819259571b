//! What arrives on the mesh UDP port, through the code that reads it: hellos
//! (`hello::read`, plain and sealed), `wire::route`, handshake initiations
//! (`Responder::handle_initiation`), responses and transport messages
//! (`Peer::decapsulate[_in_place]`) from arbitrary bytes, from mutations of real messages,
//! and authentic transport messages carrying fuzzed plaintext (sealed by a real peer):
//! their payloads go where `meshd` sends them (relay header parse/resolve/relay, the
//! delivery coalescer, the topology's control-message handler).
//!
//! A fresh pair of hosts with an established session per input (deterministic keys).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use control::mesh::{Config as TopoConfig, Mesh, PeerId, RelayAction, RelayHeader};
use dataplane::mesh::hello::{self, HelloKey};
use dataplane::mesh::{route, Decapsulated, Encapsulated, Identity, MeshConfig, PayloadKind, Peer, PeerSlot, Responder, Route};
use dataplane::offload::TcpCoalescer;
use libfuzzer_sys::fuzz_target;
use vswitchd_fuzz::Cursor;

const BUF: usize = 70_000;

struct Host {
    id: Identity,
    cfg: MeshConfig,
    resp: Responder,
}

fn host(n: u8, other: [u8; 32], psk: Option<[u8; 32]>, now: Instant) -> Host {
    let id = Identity::from_bytes([n; 32]);
    let cfg = MeshConfig { allowed: vec![other], psk, ..MeshConfig::default() };
    let resp = Responder::new(&id, &cfg, now);
    Host { id, cfg, resp }
}

/// Two hosts with an established session, and the handshake messages that made it.
struct World {
    b: Host,
    pa: Peer,
    pb: Peer,
    init_msg: Vec<u8>,
    resp_msg: Vec<u8>,
    confirm: Vec<u8>,
    now: Instant,
}

fn world(psk: Option<[u8; 32]>, t0: Instant) -> World {
    let pub_a = Identity::from_bytes([1; 32]).public();
    let pub_b = Identity::from_bytes([2; 32]).public();
    let a = host(1, pub_b, psk, t0);
    let mut b = host(2, pub_a, psk, t0);
    let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut m = vec![0u8; BUF];
    let mut r = vec![0u8; BUF];
    let mut pa = Peer::new(&a.id, pub_b, &a.cfg, PeerSlot::new(1).unwrap(), t0);
    let n = pa.initiate(&mut m, t0).unwrap().unwrap();
    let init_msg = m[..n].to_vec();
    let init = b.resp.handle_initiation(src, &init_msg, t0).unwrap();
    let (mut pb, rn) = Peer::from_initiation(&b.id, init, &b.cfg, PeerSlot::new(2).unwrap(), &mut r, t0).unwrap();
    let resp_msg = r[..rn].to_vec();
    let Ok(Decapsulated::HandshakeComplete { reply_len }) = pa.decapsulate(&resp_msg, &mut m, t0) else { panic!("handshake") };
    let confirm = m[..reply_len].to_vec();
    assert_eq!(pb.decapsulate(&confirm, &mut r, t0).unwrap(), Decapsulated::Keepalive);
    World { b, pa, pb, init_msg, resp_msg, confirm, now: t0 }
}

thread_local! {
    // The session pair is kept across inputs (a handshake per input would make this
    // target 100x slower); it is rebuilt when it goes down.
    static WORLDS: std::cell::RefCell<[Option<World>; 2]> = const { std::cell::RefCell::new([None, None]) };
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let psk = (flags & 1 != 0).then_some([7u8; 32]);
    WORLDS.with(|w| {
        let mut w = w.borrow_mut();
        let slot = &mut w[(flags & 1) as usize];
        let up = slot.as_ref().is_some_and(|x| x.pa.is_up(x.now) && x.pb.is_up(x.now));
        if !up {
            let t = slot.as_ref().map_or_else(Instant::now, |x| x.now);
            *slot = Some(world(psk, t));
        }
        run(slot.as_mut().unwrap(), psk, &mut c);
    });
});

fn run(w: &mut World, psk: Option<[u8; 32]>, c: &mut Cursor<'_>) {
    let World { b, pa, pb, init_msg, resp_msg, confirm, now } = w;
    let (init_msg, resp_msg, confirm) = (&init_msg[..], &resp_msg[..], &confirm[..]);
    let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let pub_a = Identity::from_bytes([1; 32]).public();
    let mut m = vec![0u8; BUF];
    let mut r = vec![0u8; BUF];
    let hello_key = psk.and_then(|p| HelloKey::from_psk(&p));
    let me = PeerId(b.id.public());
    let them = PeerId(pub_a);
    let mut topo = Mesh::new(me, vec![SocketAddr::from(([192, 0, 2, 2], 6784))], TopoConfig::default(), 1 << 32, 1, 0).unwrap();
    let _ = topo.link_up(them, SocketAddr::from(([192, 0, 2, 1], 6784)), 0);
    let mut ops = 0;
    let mut delivery: Option<(Vec<u8>, TcpCoalescer)> = None;
    while !c.is_empty() && ops < 32 {
        ops += 1;
        match c.u8() % 8 {
            0 => {
                // Raw bytes into every reader of the port.
                let msg = c.chunk().to_vec();
                raw(&msg, &mut b.resp, pb, hello_key.as_ref(), src, *now);
            }
            1 => {
                // A real message of each kind, mutated.
                let base: Vec<u8> = match c.u8() % 4 {
                    0 => init_msg.to_vec(),
                    1 => resp_msg.to_vec(),
                    2 => confirm.to_vec(),
                    _ => match pa.encapsulate(PayloadKind::Ethernet, c.chunk(), &mut m, *now) {
                        Ok(Encapsulated::Data { len }) | Ok(Encapsulated::Handshake { len }) => m[..len].to_vec(),
                        _ => continue,
                    },
                };
                let mut msg = base;
                for _ in 0..1 + c.u8() % 4 {
                    let at = c.u16() as usize;
                    let l = msg.len().max(1);
                    if let Some(x) = msg.get_mut(at % l) {
                        *x ^= c.u8() | 1;
                    }
                }
                match c.u8() % 4 {
                    0 => msg.truncate(c.u16() as usize),
                    1 => msg.extend_from_slice(c.take(40)),
                    _ => {}
                }
                raw(&msg, &mut b.resp, pb, hello_key.as_ref(), src, *now);
            }
            2 | 3 | 4 => {
                // Authentic: fuzzed plaintext sealed by the real peer.
                let kind = PayloadKind::from(c.u8() % 3);
                let payload = c.chunk().to_vec();
                let Ok(Encapsulated::Data { len }) = pa.encapsulate(kind, &payload, &mut m, *now) else { continue };
                let mut msg = m[..len].to_vec();
                assert!(matches!(route(&msg), Route::Peer { .. }));
                match pb.decapsulate_in_place(&mut msg, *now) {
                    Ok(Decapsulated::Data { kind, offset, len }) => {
                        let p = &msg[offset..offset + len];
                        assert_eq!(p, &payload[..], "authentic payload comes out as sealed");
                        match kind {
                            PayloadKind::Control => {
                                let _ = topo.handle_message(&them, p, 0);
                                while topo.poll_transmit(0).is_some() {}
                                while topo.poll_event().is_some() {}
                            }
                            PayloadKind::Ethernet => on_ethernet(&topo, &me, &them, p, &mut delivery),
                            PayloadKind::Unknown(_) => {}
                        }
                    }
                    Ok(_) => {}
                    // Replay/expiry after time moved: fine.
                    Err(_) => {}
                }
            }
            5 => {
                // Hellos, well-formed around fuzzed keys.
                let mut out = [0u8; hello::SEALED_LEN];
                let mut public = [0u8; 32];
                public.copy_from_slice(&{
                    let mut k = [0u8; 32];
                    let t = c.take(32);
                    k[..t.len()].copy_from_slice(t);
                    k
                });
                let kind = if c.bool() { hello::HELLO_REQ } else { hello::HELLO_RESP };
                if let Some(len) = hello::write(kind, &public, hello_key.as_ref(), &mut out) {
                    let h = hello::read(&out[..len], hello_key.as_ref(), c.bool());
                    if let Ok(h) = h {
                        assert_eq!(h.public, public);
                    }
                }
            }
            6 => {
                *now += Duration::from_millis(c.u16() as u64);
                let _ = pa.poll(&mut m, *now);
                let _ = pb.poll(&mut r, *now);
                let _ = pb.next_timeout();
            }
            _ => {
                // Initiations with a fuzzed source address (flood limits).
                let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, c.u8()));
                let _ = b.resp.handle_initiation(ip, init_msg, *now);
            }
        }
    }
    flush(&mut delivery);
}

fn raw(msg: &[u8], resp: &mut Responder, pb: &mut Peer, key: Option<&HelloKey>, src: IpAddr, now: Instant) {
    let mut out = vec![0u8; msg.len().max(64)];
    // meshd: the first byte picks hello or message.
    match msg.first() {
        Some(&hello::HELLO_REQ) | Some(&hello::HELLO_RESP) => {
            let _ = hello::read(msg, key, true);
            let _ = hello::read(msg, key, false);
        }
        _ => {}
    }
    match route(msg) {
        Route::Initiation => {
            let _ = resp.handle_initiation(src, msg, now);
        }
        Route::Peer { .. } => {
            let _ = pb.decapsulate(msg, &mut out, now);
            let mut small = [0u8; 40];
            let _ = pb.decapsulate(msg, &mut small, now);
            let mut ip = msg.to_vec();
            let _ = pb.decapsulate_in_place(&mut ip, now);
        }
        Route::Drop(_) => {}
    }
}

/// `meshd::on_ethernet` + `deliver`, minus the sockets and channels.
fn on_ethernet(topo: &Mesh, me: &PeerId, key: &PeerId, payload: &[u8], delivery: &mut Option<(Vec<u8>, TcpCoalescer)>) {
    let Ok((wh, rest)) = RelayHeader::parse(payload) else { return };
    let hdr = if wh.src == key.0[..8] && wh.dst == me.0[..8] { Some(RelayHeader { src: *key, dst: *me, ttl: wh.ttl }) } else { topo.resolve(&wh) };
    let Some(hdr) = hdr else { return };
    match topo.relay(&hdr) {
        RelayAction::Deliver => {
            if rest.len() < 4 + 14 {
                return;
            }
            let inner = &rest[4..];
            if let Some((frame, co)) = delivery.as_mut() {
                if co.try_extend(frame, inner) {
                    return;
                }
                flush(delivery);
            }
            if let Some(co) = TcpCoalescer::start_unverified(inner) {
                let frame = inner[..co.len()].to_vec();
                *delivery = Some((frame, co));
            }
        }
        RelayAction::Forward { header, .. } => {
            let _ = header.to_bytes();
        }
        RelayAction::Drop(_) => {}
    }
}

fn flush(delivery: &mut Option<(Vec<u8>, TcpCoalescer)>) {
    if let Some((mut frame, co)) = delivery.take() {
        if let Ok((len, vh)) = co.finish(&mut frame) {
            assert!(len <= frame.len());
            // The workers segment it again for ports without offloads.
            if let Err(e) = dataplane::offload::Segmenter::new(&frame[..len], &vh, dataplane::offload::SegCsum::Full) {
                panic!("segmenter refuses the mesh's coalesced frame: {e:?}");
            }
        }
    }
}
