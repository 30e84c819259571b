//! Small synchronisation and memory helpers shared by the NAT tables: a worker-only
//! spinlock, a cache-line padded cell, and zero-initialised mapped arrays of atomics.
//!
//! Owns no packet logic. Nothing here is ever taken by the control plane.

use std::sync::atomic::{AtomicBool, Ordering};

/// A test-and-test-and-set spinlock for the short critical sections of workers and
/// the housekeeping thread (creating or removing a connection, a fragment record, a
/// port mapping). The control plane never takes one.
///
/// After many failed spins (the holder was descheduled, which cannot happen on a
/// dedicated core) it yields the CPU so oversubscribed test machines still progress.
/// Not padded: wrap it in [`Padded`] where locks sit next to each other.
#[derive(Default)]
pub(crate) struct SpinLock(AtomicBool);

impl SpinLock {
    /// Spins until the lock is taken; the guard releases it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_> {
        let mut spins = 0u32;
        loop {
            if self.0.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return SpinGuard(self);
            }
            while self.0.load(Ordering::Relaxed) {
                spins = spins.wrapping_add(1);
                if spins & 4095 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// Holds a [`SpinLock`] until dropped.
pub(crate) struct SpinGuard<'a>(&'a SpinLock);

impl Drop for SpinGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::Release);
    }
}

/// A value alone on its cache line (keeps hot shared words from false sharing).
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Marker for types whose all-zero bit pattern is a valid value (plain atomics and
/// structs made only of them).
///
/// # Safety
/// Implement only for types for which `core::mem::zeroed()` is a valid value.
pub(crate) unsafe trait Zeroable: Sized {}

unsafe impl Zeroable for std::sync::atomic::AtomicU32 {}
unsafe impl Zeroable for std::sync::atomic::AtomicU64 {}

/// Arrays of this many bytes or more ask for transparent huge pages: a lookup in a big
/// table then costs one cache miss instead of a cache miss plus a page-table walk.
const HUGE_MIN: usize = 4 << 20;

/// A zeroed array of `T` in its own anonymous mapping: pages are backed by the kernel
/// as they are first written, so a big table that holds little costs little.
pub(crate) struct MapSlice<T> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is owned exclusively; sharing it is sharing `[T]`.
unsafe impl<T: Sync> Sync for MapSlice<T> {}
unsafe impl<T: Send> Send for MapSlice<T> {}

impl<T> std::ops::Deref for MapSlice<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: ptr/len describe the live mapping, which holds `len` valid values.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for MapSlice<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `zeroed_slice` mapped; T needs no drop
        // (Zeroable types are plain atomics).
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.bytes) };
    }
}

/// `len` (at least 1) zeroed `T` in a fresh mapping (see [`MapSlice`]); tables of
/// 4 MiB and more use transparent huge pages. Aborts like the global allocator when
/// the kernel refuses the memory.
pub(crate) fn zeroed_slice<T: Zeroable>(len: usize) -> MapSlice<T> {
    let len = len.max(1);
    let layout = std::alloc::Layout::array::<T>(len).expect("table size overflows");
    assert!(layout.size() > 0 && layout.align() <= 4096, "unsupported table element");
    let bytes = layout.size();
    // SAFETY: a private anonymous mapping, checked for failure; zero pages are valid
    // `T` (Zeroable) and page alignment satisfies T's alignment.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(layout);
        }
        if bytes >= HUGE_MIN {
            libc::madvise(p, bytes, libc::MADV_HUGEPAGE);
        }
        let ptr = std::ptr::NonNull::new(p as *mut T).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        MapSlice { ptr, len, bytes }
    }
}

/// A per-table random seed for the hash functions (defeats deliberate collisions).
/// Read once at construction.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6e61_745f_7365_6564);
    h.finish()
}

/// A 64-bit mixer (the murmur3/splitmix finaliser).
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}
