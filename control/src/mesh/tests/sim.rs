//! A fake underlay for mesh cores: N hosts exchanging control messages in memory, a
//! virtual clock advancing in ticks, a one-tick delivery delay, optional seeded message
//! loss, blocked host pairs (no underlay path), firewalled hosts (inbound dials fail)
//! and crashes. A dial that can succeed brings the session up on both ends at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::super::{Config, Event, Hop, Mesh, PeerId, RelayAction, RelayDrop};

/// Virtual milliseconds per step.
pub const TICK: u64 = 100;

/// Peer id number `n` (ids order like their numbers).
pub fn pid(n: u8) -> PeerId {
    let mut b = [0x5au8; 32];
    b[0] = n;
    PeerId(b)
}

/// Short timers so that scenarios run in a few hundred ticks.
pub fn test_config() -> Config {
    Config {
        max_age_ms: 10_000,
        refresh_ms: 3_000,
        digest_ms: 1_000,
        backoff_min_ms: 200,
        backoff_max_ms: 2_000,
        dial_timeout_ms: 1_000,
        inbound_grace_ms: 2_000,
        ..Config::default()
    }
}

/// One simulated host.
pub struct Node {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub core: Mesh,
    pub cfg: Config,
    pub alive: bool,
    /// Inbound dials to it fail.
    pub firewalled: bool,
    /// Restarts so far (the boot counter of its sequence numbers).
    pub boot: u64,
    /// Every event it reported, with the time.
    pub events: Vec<(u64, Event)>,
}

/// The simulated network.
pub struct Sim {
    pub now: u64,
    pub nodes: Vec<Node>,
    blocked: BTreeSet<(usize, usize)>,
    /// Sessions that are up (pairs ascending).
    pub links: BTreeSet<(usize, usize)>,
    inflight: Vec<(usize, usize, Vec<u8>)>,
    /// Every dial asked for: (time, dialler, dialled peer).
    pub dials: Vec<(u64, usize, PeerId)>,
    /// Percentage of control messages lost.
    pub loss_percent: u64,
    rng: u64,
    /// Time of the last session coming up or going down.
    pub last_link_change: u64,
}

fn key(i: usize, j: usize) -> (usize, usize) {
    (i.min(j), i.max(j))
}

impl Sim {
    /// `ids.len()` hosts, all with `cfg`, none linked, none configured with another.
    pub fn new(ids: &[PeerId], cfg: Config) -> Sim {
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8 + 1), 6784));
                Node {
                    id: *id,
                    addr,
                    core: Mesh::new(*id, vec![addr], cfg.clone(), 1 << 32, i as u64, 0).expect("config"),
                    cfg: cfg.clone(),
                    alive: true,
                    firewalled: false,
                    boot: 1,
                    events: Vec::new(),
                }
            })
            .collect();
        Sim {
            now: 0,
            nodes,
            blocked: BTreeSet::new(),
            links: BTreeSet::new(),
            inflight: Vec::new(),
            dials: Vec::new(),
            loss_percent: 0,
            rng: 0x1234_5678,
            last_link_change: 0,
        }
    }

    /// `n` hosts with ids `pid(1)..=pid(n)`.
    pub fn with_n(n: usize) -> Sim {
        let ids: Vec<PeerId> = (1..=n as u8).map(pid).collect();
        Sim::new(&ids, test_config())
    }

    /// A seeded random number.
    pub fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Index of the host with `id`.
    pub fn idx(&self, id: &PeerId) -> usize {
        self.nodes.iter().position(|n| n.id == *id).expect("known id")
    }

    /// Marks host `i` firewalled, rebuilding its core (before any step).
    pub fn firewall(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.firewalled = true;
        n.cfg.can_accept_inbound = false;
        n.core = Mesh::new(n.id, vec![n.addr], n.cfg.clone(), 1 << 32, i as u64, self.now).expect("config");
    }

    /// Configures host `i` with member `j`'s id and address.
    pub fn configure(&mut self, i: usize, j: usize) {
        let (id, addr, now) = (self.nodes[j].id, self.nodes[j].addr, self.now);
        self.nodes[i].core.add_peer(id, addr, now).expect("add_peer");
    }

    /// No underlay path between `i` and `j` from now on (the session, if any, stays).
    pub fn block(&mut self, i: usize, j: usize) {
        self.blocked.insert(key(i, j));
    }

    /// An underlay path between `i` and `j` from now on.
    pub fn unblock(&mut self, i: usize, j: usize) {
        self.blocked.remove(&key(i, j));
    }

    /// Blocks the path and tears the session down on both ends.
    pub fn cut(&mut self, i: usize, j: usize) {
        self.block(i, j);
        self.drop_link(i, j);
    }

    fn drop_link(&mut self, i: usize, j: usize) {
        if self.links.remove(&key(i, j)) {
            let now = self.now;
            for (a, b) in [(i, j), (j, i)] {
                if self.nodes[a].alive {
                    let other = self.nodes[b].id;
                    self.nodes[a].core.link_down(&other, now);
                }
            }
            self.inflight.retain(|(f, t, _)| key(*f, *t) != key(i, j));
            self.last_link_change = now;
            self.collect_events();
        }
    }

    fn bring_up(&mut self, i: usize, j: usize) {
        self.links.insert(key(i, j));
        let now = self.now;
        for (a, b) in [(i, j), (j, i)] {
            let (id, addr) = (self.nodes[b].id, self.nodes[b].addr);
            self.nodes[a].core.link_up(id, addr, now).expect("link_up");
        }
        self.last_link_change = now;
    }

    /// Host `i` crashes: its peers see their sessions with it go down.
    pub fn kill(&mut self, i: usize) {
        let linked: Vec<usize> =
            self.links.iter().filter(|(a, b)| *a == i || *b == i).map(|(a, b)| a + b - i).collect();
        for j in linked {
            self.drop_link(i, j);
        }
        self.nodes[i].alive = false;
    }

    /// Host `i` starts again with an empty core; `boot_bump` false reuses the old boot
    /// counter (a host that does not persist it).
    pub fn revive(&mut self, i: usize, boot_bump: bool) {
        let n = &mut self.nodes[i];
        if boot_bump {
            n.boot += 1;
        }
        n.core = Mesh::new(n.id, vec![n.addr], n.cfg.clone(), n.boot << 32, 1000 + i as u64, self.now).expect("config");
        n.alive = true;
        n.events.clear();
    }

    fn collect_events(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            while let Some(e) = n.core.poll_event() {
                n.events.push((now, e));
            }
        }
    }

    /// One tick: deliver last tick's messages, run timers, dial, collect transmits.
    pub fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        for (f, t, bytes) in std::mem::take(&mut self.inflight) {
            if !self.links.contains(&key(f, t)) || (self.loss_percent > 0 && self.rand() % 100 < self.loss_percent) {
                continue;
            }
            let from = self.nodes[f].id;
            self.nodes[t].core.handle_message(&from, &bytes, now).expect("a valid message from a neighbour");
        }
        for n in self.nodes.iter_mut().filter(|n| n.alive) {
            n.core.handle_timeout(now);
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            for (peer, addr) in self.nodes[i].core.wants_dial(now) {
                self.dials.push((now, i, peer));
                let j = self.nodes.iter().position(|n| n.addr == addr).expect("dialled a known address");
                assert_eq!(self.nodes[j].id, peer, "address belongs to the peer dialled");
                let ok = self.nodes[j].alive && !self.nodes[j].firewalled && !self.blocked.contains(&key(i, j));
                if ok && !self.links.contains(&key(i, j)) {
                    self.bring_up(i, j);
                }
            }
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            while let Some((to, bytes)) = self.nodes[i].core.poll_transmit(now) {
                let j = self.idx(&to);
                assert!(self.links.contains(&key(i, j)), "transmit only to a direct neighbour");
                self.inflight.push((i, j, bytes));
            }
        }
        self.collect_events();
    }

    /// Runs `ticks` steps.
    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Steps until `done` holds (checked before each step too); the steps taken, or
    /// `None` after `max_ticks`.
    pub fn run_until(&mut self, max_ticks: u64, done: impl Fn(&Sim) -> bool) -> Option<u64> {
        for t in 0..=max_ticks {
            if done(self) {
                return Some(t);
            }
            self.step();
        }
        None
    }

    /// Hop counts from every host to host `dst` over live sessions (BFS).
    fn dist_to(&self, dst: usize) -> BTreeMap<usize, u32> {
        let mut dist = BTreeMap::from([(dst, 0u32)]);
        let mut q = VecDeque::from([dst]);
        while let Some(u) = q.pop_front() {
            for &(a, b) in &self.links {
                let v = if a == u {
                    b
                } else if b == u {
                    a
                } else {
                    continue;
                };
                if !dist.contains_key(&v) {
                    dist.insert(v, dist[&u] + 1);
                    q.push_back(v);
                }
            }
        }
        dist
    }

    /// The route host `i` should have to host `j`: shortest path over live sessions,
    /// first hop the smallest id among neighbours one hop closer.
    pub fn oracle(&self, i: usize, j: usize) -> Option<Hop> {
        if i == j || !self.nodes[i].alive || !self.nodes[j].alive {
            return None;
        }
        let dist = self.dist_to(j);
        let d = *dist.get(&i)?;
        let next = self
            .links
            .iter()
            .filter_map(|&(a, b)| {
                if a == i {
                    Some(b)
                } else if b == i {
                    Some(a)
                } else {
                    None
                }
            })
            .filter(|n| dist.get(n) == Some(&(d - 1)))
            .map(|n| self.nodes[n].id)
            .min()?;
        Some(Hop { next_hop: next, hops: d })
    }

    /// Every live host's routes equal the oracle's.
    pub fn converged(&self) -> bool {
        self.mismatches().is_empty()
    }

    /// (host, destination, have, want) for every route that differs from the oracle.
    pub fn mismatches(&self) -> Vec<(usize, usize, Option<Hop>, Option<Hop>)> {
        let mut out = Vec::new();
        for i in (0..self.nodes.len()).filter(|i| self.nodes[*i].alive) {
            for j in (0..self.nodes.len()).filter(|j| *j != i) {
                let (have, want) = (self.nodes[i].core.route(&self.nodes[j].id), self.oracle(i, j));
                if have != want {
                    out.push((i, j, have, want));
                }
            }
        }
        out
    }

    /// Walks a message from host `src` to host `dst` hop by hop using each host's
    /// current decisions: (outcome, links crossed). `None` outcome means delivered.
    pub fn walk(&self, src: usize, dst: usize) -> (Option<RelayDrop>, u32) {
        let Some((first, mut hdr)) = self.nodes[src].core.header_to(&self.nodes[dst].id) else {
            return (Some(RelayDrop::NoRoute), 0);
        };
        let mut at = self.idx(&first);
        let mut crossed = 1;
        loop {
            assert!(crossed <= 255, "walk must end");
            match self.nodes[at].core.relay(&hdr) {
                RelayAction::Deliver => return (None, crossed),
                RelayAction::Drop(why) => return (Some(why), crossed),
                RelayAction::Forward { next_hop, header } => {
                    assert!(self.nodes[at].core.is_linked(&next_hop), "forward only to a direct neighbour");
                    assert_eq!(header.ttl + 1, hdr.ttl);
                    hdr = header;
                    at = self.idx(&next_hop);
                    crossed += 1;
                }
            }
        }
    }

    /// Events host `i` reported since `since` (inclusive).
    pub fn events_since(&self, i: usize, since: u64) -> Vec<Event> {
        self.nodes[i].events.iter().filter(|(t, _)| *t >= since).map(|(_, e)| e.clone()).collect()
    }
}
