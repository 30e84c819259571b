//! Queue steering for multi-queue TAP ports: a small eBPF program the kernel runs for
//! every frame a sandbox sends into one of our TAPs (`TUNSETSTEERINGEBPF`), choosing
//! the queue, and so the worker, that reads it.
//!
//! Without it tun picks the queue by flow hash alone, so a flow whose queue belongs to a
//! worker sharing its CPU with the sender (a busy sandbox, a traffic generator) gets
//! what the sender leaves of that CPU, and its frames are dropped at the queue while
//! another worker idles. The program hashes the flow symmetrically (IPv4/IPv6
//! addresses and TCP/UDP ports, otherwise the MACs) to a queue; if more than
//! `ROLLOVER_BACKLOG` frames wait on that queue and fewer on the next one, the frame
//! takes the next queue. This is what `PACKET_FANOUT_FLAG_ROLLOVER` does for AF_PACKET
//! ports: a flow stays on one worker unless that worker falls behind, and then
//! reordering beats dropping.
//!
//! The backlog is measured on the producer's side, because a worker preempted by the
//! sender cannot report anything: the program counts the frames it sends to each queue,
//! the queue's reader counts what it reads (one store per batch, into its own cache
//! line, no system call) and, when a read finds the queue empty, sets its count to the
//! program's (which also forgets frames tun dropped). Both counters live in a BPF array
//! map mapped into the daemon's memory, one map and program per TAP.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::tap::TapQueue;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// `_IOR('T', 224, int)`.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
/// Bytes per queue in the map: the program's counts (sent, rolled over) in the first
/// cache line, the reader's in the second.
const SLOT: usize = 128;
const _: () = assert!(SLOT.is_power_of_two(), "the program shifts by log2(SLOT)");
const RECEIVED: usize = 64;
/// Frames the program sent to the next queue because this one was behind.
const ROLLED: usize = 8;
/// Frames waiting on a queue beyond which new frames may take the next queue (tun
/// queues hold 500 frames by default, 1000 for endpoint TAPs).
pub const ROLLOVER_BACKLOG: i32 = 128;
/// tun's limit on queues per device.
pub const MAX_QUEUES: usize = 256;

/// One eBPF instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: attr is a valid bpf_attr prefix of the size passed; the kernel zero-fills
    // the rest.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as libc::c_uint) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const DW: u8 = 0x18;
const ABS: u8 = 0x20;
const IND: u8 = 0x40;
const MEM: u8 = 0x60;
const ATOMIC: u8 = 0xc0;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const MUL: u8 = 0x20;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const MOD: u8 = 0x90;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JNE: u8 = 0x50;
const JLT: u8 = 0xa0;
const JSGE: u8 = 0x70;
const JSLE: u8 = 0xd0;
const SUB: u8 = 0x10;
const EXIT: u8 = 0x90;

/// A tiny assembler: instructions plus forward jumps to labels, resolved by `finish`.
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn new_label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(Insn { code, regs: dst | (src << 4), off, imm });
    }
    fn alu64_k(&mut self, op: u8, dst: u8, imm: i32) {
        self.raw(ALU64 | op | K, dst, 0, 0, imm);
    }
    fn alu64_x(&mut self, op: u8, dst: u8, src: u8) {
        self.raw(ALU64 | op | X, dst, src, 0, 0);
    }
    fn alu32_k(&mut self, op: u8, dst: u8, imm: i32) {
        self.raw(ALU | op | K, dst, 0, 0, imm);
    }
    fn alu32_x(&mut self, op: u8, dst: u8, src: u8) {
        self.raw(ALU | op | X, dst, src, 0, 0);
    }
    /// r0 = packet bytes at `off` (network order, as a host integer); ends the program
    /// with 0 if the packet is shorter. Needs r6 = context; clobbers r1-r5.
    fn ld_abs(&mut self, size: u8, off: i32) {
        self.raw(LD | size | ABS, 0, 0, 0, off);
    }
    /// r0 = packet bytes at `src + off`.
    fn ld_ind(&mut self, size: u8, src: u8, off: i32) {
        self.raw(LD | size | IND, 0, src, 0, off);
    }
    /// dst = address of the map's value (`BPF_PSEUDO_MAP_VALUE`, two instructions).
    fn ld_map_value(&mut self, dst: u8, map_fd: RawFd) {
        self.raw(LD | DW, dst, BPF_PSEUDO_MAP_VALUE, 0, map_fd);
        self.raw(0, 0, 0, 0, 0);
    }
    /// r1 = address of the slot of the queue in register `q` (clobbers r2).
    fn slot_addr(&mut self, q: u8, map_fd: RawFd) {
        self.ld_map_value(1, map_fd);
        self.alu64_x(MOV, 2, q);
        self.alu64_k(LSH, 2, SLOT.trailing_zeros() as i32);
        self.alu64_x(ADD, 1, 2);
    }
    /// dst = frames waiting in the slot at r1 (sent - received, signed: the reader may be
    /// ahead of a count it has not seen yet); clobbers `tmp`.
    fn waiting(&mut self, dst: u8, tmp: u8) {
        self.ldx_dw(dst, 1, 0);
        self.ldx_dw(tmp, 1, RECEIVED as i16);
        self.alu64_x(SUB, dst, tmp);
    }
    /// `lock *(u64 *)(r1 + off) += 1` (clobbers r2).
    fn count(&mut self, off: usize) {
        self.alu64_k(MOV, 2, 1);
        self.atomic_add_dw(1, 2, off as i16);
    }
    fn ldx_dw(&mut self, dst: u8, src: u8, off: i16) {
        self.raw(LDX | MEM | DW, dst, src, off, 0);
    }
    /// `lock *(u64 *)(dst + off) += src`
    fn atomic_add_dw(&mut self, dst: u8, src: u8, off: i16) {
        self.raw(STX | ATOMIC | DW, dst, src, off, 0);
    }
    fn jmp_x(&mut self, op: u8, dst: u8, src: u8, to: usize) {
        self.fixups.push((self.code.len(), to));
        self.raw(JMP | op | X, dst, src, 0, 0);
    }
    fn jmp_k(&mut self, op: u8, dst: u8, imm: i32, to: usize) {
        self.fixups.push((self.code.len(), to));
        self.raw(JMP | op | K, dst, 0, 0, imm);
    }
    fn ja(&mut self, to: usize) {
        self.fixups.push((self.code.len(), to));
        self.raw(JMP | JA, 0, 0, 0, 0);
    }
    fn exit(&mut self) {
        self.raw(JMP | EXIT, 0, 0, 0, 0);
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, l) in &self.fixups {
            let target = self.labels[l].expect("label bound");
            self.code[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.code
    }
}

/// The steering program for `queues` queues, counting in the map `map_fd`.
fn program(queues: u32, map_fd: RawFd) -> Vec<Insn> {
    let n = queues.max(1) as i32;
    let mut a = Asm::default();
    let (ipv4, ipv6, ports4, ports6, ports, mix, commit, ret0, have) =
        (a.new_label(), a.new_label(), a.new_label(), a.new_label(), a.new_label(), a.new_label(), a.new_label(), a.new_label(), a.new_label());
    // r6 = context (for the packet loads); r7 = hash, then queue; r8 = L4 protocol.
    a.alu64_x(MOV, 6, 1);
    a.ld_abs(H, 12);
    a.jmp_k(JEQ, 0, 0x0800, ipv4);
    a.jmp_k(JEQ, 0, 0x86dd, ipv6);
    // Anything else: both MAC addresses.
    a.ld_abs(W, 0);
    a.alu64_x(MOV, 7, 0);
    for (size, off) in [(H, 4), (W, 6), (H, 10)] {
        a.ld_abs(size, off);
        a.alu64_x(XOR, 7, 0);
    }
    a.ja(mix);
    // IPv4: addresses, protocol, and the ports of an unfragmented TCP/UDP packet.
    a.bind(ipv4);
    a.ld_abs(W, 26);
    a.alu64_x(MOV, 7, 0);
    a.ld_abs(W, 30);
    a.alu64_x(XOR, 7, 0);
    a.ld_abs(B, 23);
    a.alu64_x(MOV, 8, 0);
    a.alu64_x(XOR, 7, 0);
    a.ld_abs(H, 20);
    a.alu64_k(AND, 0, 0x3fff);
    a.jmp_k(JNE, 0, 0, mix);
    a.jmp_k(JEQ, 8, 6, ports4);
    a.jmp_k(JEQ, 8, 17, ports4);
    a.ja(mix);
    a.bind(ports4);
    a.ld_abs(B, 14);
    a.alu64_k(AND, 0, 0x0f);
    a.alu64_k(LSH, 0, 2);
    a.alu64_x(MOV, 9, 0);
    a.ld_ind(W, 9, 14);
    a.ja(ports);
    // IPv6: addresses, next header, ports right after the fixed header.
    a.bind(ipv6);
    a.ld_abs(W, 22);
    a.alu64_x(MOV, 7, 0);
    for off in [26, 30, 34, 38, 42, 46, 50] {
        a.ld_abs(W, off);
        a.alu64_x(XOR, 7, 0);
    }
    a.ld_abs(B, 20);
    a.alu64_x(MOV, 8, 0);
    a.alu64_x(XOR, 7, 0);
    a.jmp_k(JEQ, 8, 6, ports6);
    a.jmp_k(JEQ, 8, 17, ports6);
    a.ja(mix);
    a.bind(ports6);
    a.ld_abs(W, 54);
    // r0 = source port << 16 | destination port: fold symmetrically into the hash.
    a.bind(ports);
    a.alu64_x(MOV, 1, 0);
    a.alu64_k(RSH, 1, 16);
    a.alu64_k(AND, 0, 0xffff);
    a.alu64_x(XOR, 0, 1);
    a.alu64_x(XOR, 7, 0);
    // q = mix(hash) % n
    a.bind(mix);
    a.alu32_k(MUL, 7, 0x9e37_79b1_u32 as i32);
    a.alu32_x(MOV, 1, 7);
    a.alu32_k(RSH, 1, 16);
    a.alu32_x(XOR, 7, 1);
    a.alu32_k(MOD, 7, n);
    a.jmp_k(JGT, 7, n - 1, ret0);
    // r3 = frames waiting on queue q.
    a.slot_addr(7, map_fd);
    a.waiting(3, 4);
    a.jmp_k(JSLE, 3, ROLLOVER_BACKLOG, commit);
    // Behind: the next queue if fewer frames wait there.
    a.alu64_x(MOV, 8, 7);
    a.alu64_k(ADD, 8, 1);
    a.jmp_k(JLT, 8, n, have);
    a.alu64_k(MOV, 8, 0);
    a.bind(have);
    a.slot_addr(8, map_fd);
    a.waiting(4, 5);
    a.jmp_x(JSGE, 4, 3, commit);
    // Count the rollover on queue q, then take q2.
    a.slot_addr(7, map_fd);
    a.count(ROLLED);
    a.alu64_x(MOV, 7, 8);
    // Count the frame on the chosen queue and return it.
    a.bind(commit);
    a.slot_addr(7, map_fd);
    a.count(0);
    a.alu64_x(MOV, 0, 7);
    a.exit();
    a.bind(ret0);
    a.alu64_k(MOV, 0, 0);
    a.exit();
    a.finish()
}

/// A TAP's counters, mapped from its BPF map (which lives as long as the program
/// attached to the device, or this mapping).
struct Counters {
    map: OwnedFd,
    mem: *mut libc::c_void,
    len: usize,
    queues: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Counters {}
unsafe impl Sync for Counters {}

impl Drop for Counters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `attach`; no reference into it outlives self.
        unsafe { libc::munmap(self.mem, self.len) };
    }
}

impl Counters {
    fn at(&self, q: usize, off: usize) -> &AtomicU64 {
        assert!(q < self.queues);
        // SAFETY: inside the mapping (q < queues, SLOT * queues <= len), 8-aligned.
        unsafe { &*(self.mem.cast::<u8>().add(q * SLOT + off) as *const AtomicU64) }
    }
}

/// Loads a steering program for the TAP whose queues (all of them, in attach order,
/// queue i read by worker i) are `queues`, attaches it to the device, and gives each
/// queue its counter.
pub fn attach(queues: &mut [TapQueue]) -> io::Result<()> {
    let n = queues.len();
    if n == 0 || n > MAX_QUEUES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{n} queues: must be 1-{MAX_QUEUES}")));
    }
    let value_size = SLOT * n;
    let mut m = MapCreateAttr { map_type: BPF_MAP_TYPE_ARRAY, key_size: 4, value_size: value_size as u32, max_entries: 1, map_flags: BPF_F_MMAPABLE };
    let map = bpf(BPF_MAP_CREATE, &mut m).map_err(|e| io::Error::new(e.kind(), format!("BPF map: {e}")))?;
    // SAFETY: page size query.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let len = value_size.div_ceil(page) * page;
    // SAFETY: maps the array's value area (an mmapable map) read-write, shared with the kernel.
    let mem = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, map.as_raw_fd(), 0) };
    if mem == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mapping the BPF map: {e}")));
    }
    let counters = Arc::new(Counters { map, mem, len, queues: n });
    let insns = program(n as u32, counters.map.as_raw_fd());
    let license = c"GPL";
    let load = |log: &mut [u8]| {
        let mut p = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: if log.is_empty() { 0 } else { 1 },
            log_size: log.len() as u32,
            log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
            kern_version: 0,
            prog_flags: 0,
            prog_name: *b"vsw_tap_steer\0\0\0",
        };
        bpf(BPF_PROG_LOAD, &mut p)
    };
    let prog = match load(&mut []) {
        Ok(p) => p,
        Err(e) => {
            // Load again with the verifier's log for the error message.
            let mut log = vec![0u8; 1 << 16];
            let _ = load(&mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            return Err(io::Error::new(e.kind(), format!("loading the TAP steering program: {e}: {}", tail.join(" | "))));
        }
    };
    let mut fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: the ioctl reads one int. The device keeps its own reference to the program.
    if unsafe { libc::ioctl(queues[0].as_raw_fd(), TUNSETSTEERINGEBPF, &mut fd as *mut libc::c_int) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for (i, q) in queues.iter_mut().enumerate() {
        q.set_backlog(QueueBacklog { counters: counters.clone(), queue: i, rolled_seen: 0 });
    }
    Ok(())
}

/// Takes the steering program off the TAP of `queue` (the kernel picks queues by its
/// own flow hash again). Done when the queue that attached it closes, so a TAP that
/// outlives the daemon does not keep steering by counts nobody updates.
pub(crate) fn detach(queue: RawFd) {
    let mut fd: libc::c_int = -1;
    // SAFETY: the ioctl reads one int; -1 detaches.
    unsafe { libc::ioctl(queue, TUNSETSTEERINGEBPF, &mut fd as *mut libc::c_int) };
}

/// A queue reader's side of the backlog count.
pub struct QueueBacklog {
    counters: Arc<Counters>,
    queue: usize,
    rolled_seen: u64,
}

impl QueueBacklog {
    /// `n` more frames read.
    #[inline]
    pub fn read(&self, n: usize) {
        let r = self.counters.at(self.queue, RECEIVED);
        r.store(r.load(Ordering::Relaxed).wrapping_add(n as u64), Ordering::Relaxed);
    }

    /// The queue was found empty: everything the program sent here is accounted for.
    #[inline]
    pub fn drained(&self) {
        let sent = self.counters.at(self.queue, 0).load(Ordering::Relaxed);
        self.counters.at(self.queue, RECEIVED).store(sent, Ordering::Relaxed);
    }

    /// The queue's index in its TAP.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Frames the program sent to the next queue instead of this one since the last call.
    pub fn take_rolled(&mut self) -> u64 {
        let now = self.counters.at(self.queue, ROLLED).load(Ordering::Relaxed);
        let d = now.wrapping_sub(self.rolled_seen);
        self.rolled_seen = now;
        d
    }

    /// Frames the program counts as waiting (for tests and diagnostics).
    pub fn waiting(&self) -> i64 {
        let sent = self.counters.at(self.queue, 0).load(Ordering::Relaxed);
        sent.wrapping_sub(self.counters.at(self.queue, RECEIVED).load(Ordering::Relaxed)) as i64
    }
}

#[cfg(test)]
#[path = "tests_steer.rs"]
mod tests_steer;

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel's verifier checks first, without root: every jump lands inside
    /// the program and not in the middle of a 64-bit load, registers exist, the map is
    /// referenced, and no path falls off the end.
    #[test]
    fn program_is_well_formed() {
        for n in [1u32, 2, 3, 8, 256] {
            let p = program(n, 42);
            assert!(p.len() < 256, "{} instructions", p.len());
            let wide: Vec<bool> = (0..p.len()).map(|i| i > 0 && p[i - 1].code == (LD | DW)).collect();
            for (i, ins) in p.iter().enumerate() {
                assert!(ins.regs & 0x0f <= 10 && ins.regs >> 4 <= 10 || wide[i], "register at {i}");
                let class = ins.code & 0x07;
                let op = ins.code & 0xf0;
                if class == JMP && op != EXIT && !wide[i] {
                    let t = i as isize + 1 + ins.off as isize;
                    assert!(t >= 0 && (t as usize) < p.len() && !wide[t as usize], "jump at {i} to {t} (n={n})");
                }
                if ins.code == (LD | DW) {
                    assert_eq!((ins.regs >> 4, ins.imm), (BPF_PSEUDO_MAP_VALUE, 42), "map value load at {i}");
                }
            }
            let last = p.last().expect("program");
            assert_eq!(last.code, JMP | EXIT, "ends with exit");
            // The divisor of the queue choice is the queue count.
            assert!(p.iter().any(|i| i.code == (ALU | MOD | K) && i.imm == n as i32), "mod {n}");
        }
    }
}
