//! A global allocator that keeps absurd allocations from killing the
//! process.
//!
//! The protocol crate sizes a decoded array by the count read from the
//! wire before reading any element, so a 14-byte request announcing two
//! billion topics asks for a 150 GB vector. The system allocator refuses,
//! and Rust aborts the whole server on a failed allocation. This allocator
//! serves allocations of 1 GiB and more from anonymous mappings made with
//! `MAP_NORESERVE`: address space is handed out but no memory is committed
//! until touched. The decoder then fails at the first element that is not
//! there, the vector is dropped and the mapping returned, having touched a
//! page or two. Everything smaller goes to the system allocator unchanged.
//!
//! Install it in a binary with
//! `#[global_allocator] static ALLOC: GuardedAlloc = GuardedAlloc;`.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are served by lazy mappings.
const HUGE: usize = 1 << 30;
/// Mappings are page aligned; larger alignments go to the system allocator.
const PAGE: usize = 4096;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedAlloc;

fn is_huge(size: usize, align: usize) -> bool {
    cfg!(unix) && size >= HUGE && align <= PAGE
}

#[cfg(unix)]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no
    // preconditions; failure is reported as MAP_FAILED and mapped to null.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

#[cfg(unix)]
fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr` and `size` are exactly those of a mapping made by `map`
    // (the caller passes the layout it was allocated with).
    unsafe {
        libc::munmap(ptr.cast(), size);
    }
}

#[cfg(not(unix))]
fn map(_size: usize) -> *mut u8 {
    std::ptr::null_mut()
}

#[cfg(not(unix))]
fn unmap(_ptr: *mut u8, _size: usize) {}

// SAFETY: every block is either from `System` (small, or over-aligned) or a
// fresh mapping (huge), decided by the layout alone, so `dealloc` and
// `realloc` always return a block to where it came from. Anonymous
// mappings are zero-filled, which `alloc_zeroed` relies on.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            return map(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            return map(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout.size(), layout.align()) {
            unmap(ptr, layout.size());
            return;
        }
        // SAFETY: the block came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_huge, new_huge) = (
            is_huge(layout.size(), layout.align()),
            is_huge(new_size, layout.align()),
        );
        if !old_huge && !new_huge {
            // SAFETY: the block came from `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` is non-zero and, rounded to the alignment,
        // does not overflow: the caller guarantees both for `realloc`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the sizes and
            // distinct; the old one is freed only after the copy.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_blocks_are_lazy_mappings_and_small_ones_are_not() {
        assert!(is_huge(HUGE, 8) == cfg!(unix));
        assert!(!is_huge(HUGE - 1, 8));
        assert!(!is_huge(HUGE, 2 * PAGE));
        let a = GuardedAlloc;
        let layout = Layout::from_size_align(200 << 30, 8).expect("layout");
        // SAFETY: a non-zero layout; the block is written within bounds and
        // freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "200 GiB of address space, not of memory");
            p.write(7);
            let q = a.realloc(p, layout, 4096);
            assert_eq!(q.read(), 7);
            a.dealloc(q, Layout::from_size_align(4096, 8).expect("layout"));
        }
    }
}
