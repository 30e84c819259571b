//! Rekeying under continuous traffic on a simulated network (fake clock, FIFO links with
//! latency): every payload handed to the mesh arrives exactly once, across every rekey.

use std::collections::VecDeque;

use super::*;

/// One end of the simulation: a host with its only peer.
struct End {
    host: Host,
    peer: Option<Peer>,
    slot: PeerSlot,
    /// Sequence numbers handed to the mesh (sent) and delivered by it (received).
    next_seq: u64,
    received: Vec<u64>,
    /// Payloads the mesh could not send yet (Pending / Handshake).
    queue: VecDeque<u64>,
    queued_after_up: u64,
}

struct Sim {
    ends: [End; 2],
    /// In flight towards end i: (arrival time, bytes).
    links: [VecDeque<(Instant, Vec<u8>)>; 2],
    latency: Duration,
}

impl Sim {
    fn new(cfg: MeshConfig, t0: Instant, latency: Duration) -> Sim {
        let (a, b) = pair(cfg, t0);
        let end = |host, slot| End {
            host,
            peer: None,
            slot,
            next_seq: 0,
            received: Vec::new(),
            queue: VecDeque::new(),
            queued_after_up: 0,
        };
        Sim { ends: [end(a, slot(10)), end(b, slot(20))], links: [VecDeque::new(), VecDeque::new()], latency }
    }

    fn transmit(&mut self, from: usize, msg: &[u8], now: Instant) {
        self.links[1 - from].push_back((now + self.latency, msg.to_vec()));
    }

    /// Tries to send everything queued at end `i`, in order.
    fn flush(&mut self, i: usize, now: Instant, counting: bool) {
        let mut m = buf();
        while let Some(&seq) = self.ends[i].queue.front() {
            let e = &mut self.ends[i];
            let Some(p) = e.peer.as_mut() else { return };
            let payload = seq.to_le_bytes();
            match p.encapsulate(PayloadKind::Ethernet, &payload, &mut m, now).unwrap() {
                Encapsulated::Data { len } => {
                    e.queue.pop_front();
                    self.transmit(i, &m[..len], now);
                }
                Encapsulated::Handshake { len } => {
                    if counting {
                        e.queued_after_up += 1;
                    }
                    self.transmit(i, &m[..len], now);
                    return;
                }
                Encapsulated::Pending => {
                    if counting {
                        e.queued_after_up += 1;
                    }
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, i: usize, msg: &mut [u8], now: Instant) {
        let mut out = buf();
        let e = &mut self.ends[i];
        match route(msg) {
            Route::Initiation => {
                let src = self.ends[1 - i].host.ip;
                let e = &mut self.ends[i];
                let init = e.host.resp.handle_initiation(src, msg, now).expect("admitted");
                let n = match e.peer.as_mut() {
                    Some(p) => p.accept_initiation(init, &mut out, now).unwrap(),
                    None => {
                        let (p, n) =
                            Peer::from_initiation(&e.host.id, init, &e.host.cfg, e.slot, &mut out, now).unwrap();
                        e.peer = Some(p);
                        n
                    }
                };
                self.transmit(i, &out[..n], now);
            }
            Route::Peer { slot, .. } => {
                assert_eq!(slot, e.slot);
                let p = e.peer.as_mut().expect("peer exists");
                match p.decapsulate_in_place(msg, now) {
                    Ok(Decapsulated::Data { offset, len, .. }) => {
                        e.received.push(u64::from_le_bytes(msg[offset..offset + len].try_into().unwrap()));
                    }
                    Ok(Decapsulated::Keepalive) => {}
                    Ok(Decapsulated::HandshakeComplete { reply_len }) => {
                        let c = msg[..reply_len].to_vec();
                        self.transmit(i, &c, now);
                    }
                    Err(err) => panic!("end {i} dropped a message: {err:?}"),
                }
            }
            Route::Drop(r) => panic!("bad message {r:?}"),
        }
    }

    /// One tick: deliver what arrived, run timers, send one payload each way.
    fn step(&mut self, now: Instant, send: bool, counting: bool) {
        for i in 0..2 {
            while self.links[i].front().is_some_and(|(t, _)| *t <= now) {
                let (_, mut m) = self.links[i].pop_front().unwrap();
                self.deliver(i, &mut m, now);
            }
        }
        let mut b = buf();
        for i in 0..2 {
            while let Some(p) = self.ends[i].peer.as_mut() {
                if p.next_timeout().is_none_or(|t| t > now) {
                    break;
                }
                match p.poll(&mut b, now).unwrap() {
                    Some(n) => {
                        let m = b[..n].to_vec();
                        self.transmit(i, &m, now);
                    }
                    None => {
                        // A deadline that stays due after poll had nothing to do would
                        // make the caller spin.
                        assert!(p.next_timeout().is_none_or(|t| t > now), "timer stuck");
                        break;
                    }
                }
            }
            if send {
                let seq = self.ends[i].next_seq;
                self.ends[i].next_seq += 1;
                self.ends[i].queue.push_back(seq);
            }
            self.flush(i, now, counting);
        }
    }

    /// Runs with traffic from both ends for `secs`, then drains; checks exactly-once.
    fn run(&mut self, t0: Instant, secs: u64) -> Instant {
        let tick = ms(1);
        let mut now = t0;
        // Bring the session up (a initiates), then count from a clean start.
        let a = &self.ends[0];
        self.ends[0].peer = Some(Peer::new(&a.host.id, self.ends[1].host.id.public(), &a.host.cfg, a.slot, t0));
        while !(self.ends[0].peer.as_ref().unwrap().is_up(now)
            && self.ends[1].peer.as_ref().is_some_and(|p| p.is_up(now)))
        {
            self.step(now, now == t0, false);
            now += tick;
        }
        let end = now + Duration::from_secs(secs);
        while now < end {
            self.step(now, true, true);
            now += tick;
        }
        for _ in 0..1000 {
            self.step(now, false, true);
            now += tick;
        }
        for i in 0..2 {
            let sent = self.ends[i].next_seq;
            let mut got = self.ends[1 - i].received.clone();
            assert_eq!(got.len() as u64, sent, "end {i}: sent {sent}, received {}", got.len());
            got.sort_unstable();
            got.dedup();
            assert_eq!(got.len() as u64, sent, "duplicates");
            assert_eq!(self.ends[i].queued_after_up, 0, "end {i} could not send at some point");
        }
        now
    }

    fn stats(&self, i: usize) -> PeerStats {
        self.ends[i].peer.as_ref().unwrap().stats()
    }
}

#[test]
fn rekey_by_time_without_loss() {
    let t0 = Instant::now();
    let cfg = MeshConfig {
        rekey_after: Duration::from_secs(2),
        reject_after: Duration::from_secs(6),
        ..MeshConfig::default()
    };
    let mut sim = Sim::new(cfg, t0, ms(20));
    sim.run(t0, 11);
    let (a, b) = (sim.stats(0), sim.stats(1));
    assert!(a.rekeys >= 5, "{a:?}");
    assert!(b.rekeys >= 5, "{b:?}");
    assert_eq!(a.drops, [0; DropReason::COUNT]);
    assert_eq!(b.drops, [0; DropReason::COUNT]);
    // Only the initiator rekeys by time: no handshake races.
    assert_eq!(b.initiations_sent, 0);
}

#[test]
fn rekey_by_message_count_without_loss() {
    let t0 = Instant::now();
    let cfg = MeshConfig { rekey_after_messages: 1000, ..MeshConfig::default() };
    let mut sim = Sim::new(cfg, t0, ms(20));
    sim.run(t0, 10);
    let (a, b) = (sim.stats(0), sim.stats(1));
    // 10 000 messages each way, a rekey about every 1000. Both ends reach the limit at
    // the same tick, so their initiations cross: the races must cost nothing.
    println!("a: {a:?}\nb: {b:?}");
    assert!(a.initiations_sent >= 8 && b.initiations_sent >= 8, "crossing handshakes");
    assert!(a.rekeys >= 8, "{a:?}");
    assert!(b.rekeys >= 8, "{b:?}");
    assert_eq!(a.drops, [0; DropReason::COUNT]);
    assert_eq!(b.drops, [0; DropReason::COUNT]);
}

#[test]
fn rekey_on_a_long_fat_link() {
    // Latency larger than the time between rekeys' triggers and their completion.
    let t0 = Instant::now();
    let cfg = MeshConfig {
        rekey_after: Duration::from_secs(1),
        reject_after: Duration::from_secs(4),
        rekey_after_messages: 700,
        ..MeshConfig::default()
    };
    let mut sim = Sim::new(cfg, t0, ms(150));
    sim.run(t0, 8);
    assert!(sim.stats(0).rekeys >= 5);
}
