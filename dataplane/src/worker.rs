//! The per-core worker: one thread, one epoll loop over the ports (port queues) it owns.
//!
//! Each turn: pick up a newer table snapshot if control published one (one atomic
//! load), wait for readiness, take one batch from every ready port and run it through
//! the pipeline, then flush every port's tx queue (one `sendmmsg` per port where the
//! kernel allows it). Port changes arrive as commands on a bounded channel with an
//! eventfd wake-up and are acknowledged, so control knows when a descriptor is in use
//! or closed. No config parsing, no per-packet logging, no locks shared with control.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::buf::{Batch, BufPool, PktId, PortId, BATCH_MAX};
use crate::clock;
use crate::pipeline::egress;
use crate::pipeline::{self, Ctx, Output, RouterState};
use crate::poll::{Epoll, Event as PollEvent, EventFd};
use crate::port::{Port, PortError};
use crate::stats::{bump, DropReason, WorkerStats};
use crate::tables::{Tables, TablesHandle, TablesView};

const WAKER_TOKEN: u64 = u64::MAX;
/// Frames queued per port before a flush is forced mid-turn.
const TXQ_CAP: usize = BATCH_MAX;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub index: usize,
    /// Frames taken from a port per turn.
    pub rx_batch: usize,
    /// Buffers in the worker's pool.
    pub pool_buffers: u32,
    /// Pin the thread to this CPU.
    pub cpu: Option<usize>,
    /// Spin instead of sleeping in epoll (costs a whole core; off by default).
    pub busy_poll: bool,
    /// Keep polling this many microseconds after a turn that found work before sleeping
    /// (0: sleep at once).
    pub poll_spin_us: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig { index: 0, rx_batch: 32, pool_buffers: 1024, cpu: None, busy_poll: false, poll_spin_us: 0 }
    }
}

/// Messages from control to a worker.
pub enum Command {
    /// Start polling `port` as port `id`.
    AddPort { id: PortId, port: Box<dyn Port>, done: Sender<io::Result<()>> },
    /// Stop polling port `id` and close this worker's handle on it.
    RemovePort { id: PortId, done: Sender<()> },
    /// Leave the loop.
    Stop,
}

/// Control's handle on a running worker.
pub struct WorkerHandle {
    pub index: usize,
    cmd: Sender<Command>,
    waker: Arc<EventFd>,
    stats: Arc<WorkerStats>,
    thread: Option<JoinHandle<()>>,
}

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

impl WorkerHandle {
    /// Starts a worker thread that forwards with the tables published on `tables`.
    pub fn spawn(cfg: WorkerConfig, tables: Arc<TablesHandle>) -> io::Result<WorkerHandle> {
        let (tx, rx) = bounded(1024);
        let waker = Arc::new(EventFd::new()?);
        let stats = Arc::new(WorkerStats::new());
        let epoll = Epoll::new()?;
        epoll.add(waker.raw_fd(), WAKER_TOKEN)?;
        let pool = BufPool::new(cfg.pool_buffers)?;
        let index = cfg.index;
        let mut w = Worker {
            view: TablesView::new(tables),
            pool,
            epoll,
            waker: waker.clone(),
            cmd: rx,
            stats: stats.clone(),
            ports: Vec::new(),
            dirty: Vec::with_capacity(1024),
            events: vec![PollEvent { events: 0, u64: 0 }; 256],
            batch: Batch::new(),
            last_sec: 0,
            router: RouterState::default(),
            cfg,
        };
        let thread = std::thread::Builder::new().name(format!("vsw-worker-{index}")).spawn(move || w.run())?;
        Ok(WorkerHandle { index, cmd: tx, waker, stats, thread: Some(thread) })
    }

    fn send(&self, c: Command) -> io::Result<()> {
        self.cmd.send(c).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "worker has stopped"))?;
        self.waker.wake();
        Ok(())
    }

    /// Hands `port` to the worker as port `id`; returns once it is being polled.
    pub fn add_port(&self, id: PortId, port: Box<dyn Port>) -> io::Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Command::AddPort { id, port, done: tx })?;
        rx.recv_timeout(ACK_TIMEOUT).map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "worker did not answer"))?
    }

    /// Takes port `id` away from the worker; returns once its handle is closed.
    pub fn remove_port(&self, id: PortId) -> io::Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Command::RemovePort { id, done: tx })?;
        rx.recv_timeout(ACK_TIMEOUT).map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "worker did not answer"))
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Stops the worker and waits for its thread.
    pub fn stop(mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.cmd.send(Command::Stop);
            self.waker.wake();
            let _ = t.join();
        }
    }
}

/// One worker's state of a port.
struct WorkerPort {
    port: Box<dyn Port>,
    txq: Vec<PktId>,
    queued: bool,
    vnet: bool,
    fd: Option<i32>,
}

struct Worker {
    cfg: WorkerConfig,
    view: TablesView,
    pool: BufPool,
    epoll: Epoll,
    waker: Arc<EventFd>,
    cmd: Receiver<Command>,
    stats: Arc<WorkerStats>,
    ports: Vec<Option<WorkerPort>>,
    dirty: Vec<PortId>,
    events: Vec<PollEvent>,
    batch: Batch,
    last_sec: u32,
    router: RouterState,
}

/// The pipeline's view of the worker's tx side.
struct TxSide<'a> {
    ports: &'a mut Vec<Option<WorkerPort>>,
    dirty: &'a mut Vec<PortId>,
    stats: &'a WorkerStats,
}

impl Output for TxSide<'_> {
    #[inline]
    fn emit(&mut self, pool: &mut BufPool, port: PortId, id: PktId) {
        let Some(Some(wp)) = self.ports.get_mut(port as usize) else {
            self.stats.count_drop(DropReason::PortDown, 1);
            pool.release(id);
            return;
        };
        if !wp.vnet {
            let v = pool.meta(id).vnet;
            if v.is_gso() || v.needs_csum() {
                egress::emit_without_offload(pool, id, self.stats, |pool, seg| queue(wp, self.dirty, port, pool, seg, self.stats));
                return;
            }
        }
        queue(wp, self.dirty, port, pool, id, self.stats);
    }
}

#[inline]
fn queue(wp: &mut WorkerPort, dirty: &mut Vec<PortId>, port: PortId, pool: &mut BufPool, id: PktId, stats: &WorkerStats) {
    if !wp.queued {
        wp.queued = true;
        dirty.push(port);
    }
    wp.txq.push(id);
    if wp.txq.len() >= TXQ_CAP {
        flush_port(wp, port, pool, stats);
    }
}

fn flush_port(wp: &mut WorkerPort, port: PortId, pool: &mut BufPool, stats: &WorkerStats) {
    if wp.txq.is_empty() {
        return;
    }
    let n = wp.txq.len();
    let c = stats.port(port);
    match wp.port.tx_batch(pool, &wp.txq) {
        Ok(r) => {
            if let Some(c) = c {
                bump(&c.tx_packets, r.sent as u64);
                bump(&c.tx_bytes, r.bytes);
                bump(&c.tx_dropped, (n - r.sent) as u64);
            }
            if r.errors > 0 {
                stats.count_drop(DropReason::TxError, r.errors as u64);
            }
            let unsent = n - r.sent - r.errors;
            if unsent > 0 {
                stats.count_drop(DropReason::TxFull, unsent as u64);
            }
        }
        Err(e) => {
            let reason = if matches!(e, PortError::Gone(_)) { DropReason::PortDown } else { DropReason::TxError };
            stats.count_drop(reason, n as u64);
            if let Some(c) = c {
                bump(&c.tx_dropped, n as u64);
            }
        }
    }
    for id in wp.txq.drain(..) {
        pool.release(id);
    }
}

impl Worker {
    fn run(&mut self) {
        if let Some(cpu) = self.cfg.cpu {
            pin_to_cpu(cpu);
        }
        let spin = Duration::from_micros(self.cfg.poll_spin_us as u64);
        let mut spin_until: Option<std::time::Instant> = None;
        loop {
            // Wake at least once a second for housekeeping (kernel drop counters), and
            // sooner while packets wait for ARP.
            let spinning = spin_until.is_some_and(|t| std::time::Instant::now() < t);
            let timeout = if self.cfg.busy_poll || spinning {
                0
            } else {
                self.router.next_deadline_ms().map(|ms| ms as i32).unwrap_or(1000)
            };
            let n = match self.epoll.wait(&mut self.events, timeout) {
                Ok(n) => n,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(1));
                    0
                }
            };
            if n > 0 && !spin.is_zero() {
                spin_until = Some(std::time::Instant::now() + spin);
            }
            // After the wait: a snapshot published while we slept is used at once.
            self.view.refresh();
            let now = clock::now_secs();
            let now_ms = clock::now_ms();
            if now != self.last_sec {
                self.last_sec = now;
                self.poll_kernel_counters();
            }
            for i in 0..n {
                let token = self.events[i].u64;
                if token == WAKER_TOKEN {
                    self.waker.drain();
                    if !self.handle_commands() {
                        self.shutdown();
                        return;
                    }
                    // Port additions may come with a newer snapshot.
                    self.view.refresh();
                    continue;
                }
                self.rx_port(token as PortId, now, now_ms);
            }
            if !self.router.pending.is_empty() {
                let cx = Ctx { tables: self.view.get(), now, now_ms, stats: &self.stats };
                let mut out = TxSide { ports: &mut self.ports, dirty: &mut self.dirty, stats: &self.stats };
                pipeline::route::poll_pending(&cx, &mut self.router, &mut self.pool, &mut out);
            }
            self.flush_all();
        }
    }

    fn rx_port(&mut self, id: PortId, now: u32, now_ms: u64) {
        let Some(Some(wp)) = self.ports.get_mut(id as usize) else { return };
        self.batch.clear();
        match wp.port.rx_batch(&mut self.pool, id, &mut self.batch, self.cfg.rx_batch) {
            Ok(c) => {
                if c.oversize > 0 {
                    self.stats.count_drop(DropReason::Oversize, c.oversize as u64);
                }
                if c.truncated > 0 {
                    self.stats.count_drop(DropReason::Truncated, c.truncated as u64);
                }
                if c.lost > 0 {
                    if let Some(p) = self.stats.port(id) {
                        bump(&p.rx_dropped, c.lost as u64);
                    }
                }
            }
            Err(PortError::Gone(_)) => {
                // Interface or TAP gone: stop polling it; control notices (the `gone`
                // counter) and re-creates or cleans up.
                if let Some(fd) = wp.fd.take() {
                    let _ = self.epoll.delete(fd);
                    if let Some(c) = self.stats.port(id) {
                        bump(&c.gone, 1);
                    }
                }
            }
            Err(PortError::Other(_)) => {
                if let Some(c) = self.stats.port(id) {
                    bump(&c.rx_dropped, 1);
                }
            }
        }
        if self.batch.is_empty() {
            return;
        }
        self.stats.event(crate::stats::Event::RxBatches, 1);
        let demux = wp.port.demux();
        let tables: &Tables = self.view.get();
        let cx = Ctx { tables, now, now_ms, stats: &self.stats };
        let mut out = TxSide { ports: &mut self.ports, dirty: &mut self.dirty, stats: &self.stats };
        if !demux {
            pipeline::process(&cx, &mut self.router, &mut self.pool, id, &self.batch, &mut out);
            self.batch.clear();
            return;
        }
        // A tunnel's receive socket: each frame belongs to the peer port of its (remote
        // host, network); runs of the same port go through the pipeline together.
        let mut sub = Batch::new();
        let mut cur: PortId = 0;
        for &pkt in self.batch.as_slice() {
            let m = *self.pool.meta(pkt);
            let Some(&p) = tables.tunnels.get(&(m.tun_src, m.tun_id)) else {
                self.stats.count_drop(DropReason::TunnelUnknown, 1);
                self.pool.release(pkt);
                continue;
            };
            self.pool.meta_mut(pkt).in_port = p;
            if p != cur && !sub.is_empty() {
                tunnel_gro(tables, cur, &mut self.pool, &mut sub, &self.stats);
                pipeline::process(&cx, &mut self.router, &mut self.pool, cur, &sub, &mut out);
                sub.clear();
            }
            cur = p;
            sub.push(pkt);
        }
        if !sub.is_empty() {
            tunnel_gro(tables, cur, &mut self.pool, &mut sub, &self.stats);
            pipeline::process(&cx, &mut self.router, &mut self.pool, cur, &sub, &mut out);
        }
        self.batch.clear();
    }

    /// Adds the kernel's drop counts of every port to its rx_dropped counter, and its
    /// rollover counts to the `rollover` event.
    fn poll_kernel_counters(&mut self) {
        for (id, wp) in self.ports.iter_mut().enumerate() {
            if let Some(wp) = wp {
                let r = wp.port.steered_away();
                if r > 0 {
                    self.stats.event(crate::stats::Event::Rollover, r);
                }
                let n = wp.port.kernel_drops();
                if n > 0 {
                    if let Some(c) = self.stats.port(id as PortId) {
                        bump(&c.rx_dropped, n);
                    }
                }
            }
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.dirty.len() {
            let p = self.dirty[i];
            if let Some(Some(wp)) = self.ports.get_mut(p as usize) {
                wp.queued = false;
                flush_port(wp, p, &mut self.pool, &self.stats);
            }
        }
        self.dirty.clear();
    }

    /// Returns false when asked to stop.
    fn handle_commands(&mut self) -> bool {
        while let Ok(c) = self.cmd.try_recv() {
            match c {
                Command::AddPort { id, port, done } => {
                    let _ = done.send(self.add_port(id, port));
                }
                Command::RemovePort { id, done } => {
                    self.remove_port(id);
                    let _ = done.send(());
                }
                Command::Stop => return false,
            }
        }
        true
    }

    fn add_port(&mut self, id: PortId, port: Box<dyn Port>) -> io::Result<()> {
        if id == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "port id 0 is reserved"));
        }
        self.remove_port(id);
        let fd = port.raw_fd();
        if let Some(fd) = fd {
            self.epoll.add(fd, id as u64)?;
        }
        if self.ports.len() <= id as usize {
            self.ports.resize_with(id as usize + 1, || None);
        }
        self.stats.reset_port(id);
        let vnet = port.caps().vnet;
        self.ports[id as usize] = Some(WorkerPort { port, txq: Vec::with_capacity(TXQ_CAP), queued: false, vnet, fd });
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) {
        let Some(slot) = self.ports.get_mut(id as usize) else { return };
        if let Some(mut wp) = slot.take() {
            if let Some(fd) = wp.fd {
                let _ = self.epoll.delete(fd);
            }
            for pid in wp.txq.drain(..) {
                self.pool.release(pid);
            }
        }
    }

    fn shutdown(&mut self) {
        let pool = &mut self.pool;
        self.router.pending.drain(|w| pool.release(w.pkt));
        self.flush_all();
        let ids: Vec<PortId> = (0..self.ports.len() as PortId).collect();
        for id in ids {
            self.remove_port(id);
        }
    }
}

/// GRO for a run of frames a tunnel's receive socket got for tunnel port `port`. An
/// IP-in-UDP port's frames are IP packets without Ethernet header: never coalesced (read
/// as Ethernet, some would look like TCP segments and be merged and rewritten).
fn tunnel_gro(tables: &Tables, port: PortId, pool: &mut BufPool, batch: &mut Batch, stats: &WorkerStats) {
    if tables.port(port).is_some_and(|p| p.tunnel_l3) {
        return;
    }
    coalesce_tcp(pool, batch, stats)
}

/// Fuzzing hook (`fuzz/`): the worker's GRO pass over a demultiplexed tunnel batch for
/// tunnel port `port`.
#[doc(hidden)]
pub fn fuzz_tunnel_gro(tables: &Tables, port: PortId, pool: &mut BufPool, batch: &mut Batch, stats: &WorkerStats) {
    tunnel_gro(tables, port, pool, batch, stats)
}

/// GRO for frames decapsulated from a tunnel: consecutive TCP segments of one flow in
/// `batch` are merged into one super-frame (in the first segment's buffer, with a GSO
/// virtio-net header), so the sandbox's stack and our transmit see a few large frames
/// instead of dozens of wire-size ones. Other frames pass unchanged, in order.
fn coalesce_tcp(pool: &mut BufPool, batch: &mut Batch, stats: &WorkerStats) {
    use crate::offload::TcpCoalescer;
    if batch.len() < 2 {
        return;
    }
    let mut out = Batch::new();
    let mut cur: Option<(PktId, TcpCoalescer)> = None;
    let finish = |pool: &mut BufPool, head: PktId, co: &TcpCoalescer, out: &mut Batch| {
        let off = pool.meta(head).off as usize;
        // On error nothing was merged into it that we could not describe.
        if let Ok((len, vh)) = co.finish(&mut pool.raw_mut(head)[off..]) {
            let m = pool.meta_mut(head);
            m.len = len as u32;
            m.vnet = vh;
        }
        out.push(head);
    };
    for &pkt in batch.as_slice() {
        if let Some((head, co)) = cur.as_mut() {
            let off = pool.meta(*head).off as usize;
            let m = *pool.meta(pkt);
            // SAFETY: `pkt` and `head` are different buffers of the pool, both held.
            let seg = unsafe { std::slice::from_raw_parts(pool.base_ptr(pkt).add(m.off as usize), m.len as usize) };
            if co.try_append(&mut pool.raw_mut(*head)[off..], seg) {
                pool.release(pkt);
                stats.event(crate::stats::Event::Coalesced, 1);
                continue;
            }
            let (head, co) = cur.take().expect("checked");
            finish(pool, head, &co, &mut out);
        }
        match TcpCoalescer::start(pool.frame(pkt)) {
            Some(co) => cur = Some((pkt, co)),
            None => {
                out.push(pkt);
            }
        }
    }
    if let Some((head, co)) = cur.take() {
        finish(pool, head, &co, &mut out);
    }
    *batch = out;
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests;
