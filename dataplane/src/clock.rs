//! The dataplane's coarse clock: whole seconds of CLOCK_MONOTONIC_COARSE. The same
//! base for every thread, so MAC-table "last seen" values written by one worker are
//! comparable by another and by control's aging sweep.

/// Seconds since boot (monotonic, coarse: one vDSO read, no syscall).
#[inline]
pub fn now_secs() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}

/// Milliseconds since boot (monotonic, coarse).
#[inline]
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
