//! Zeroing without `memset`. On the BPF target LLVM turns a zeroed array or
//! a struct literal of mostly zeros into a call to a byte-at-a-time `memset`
//! subprogram: a call and a loop per packet. Volatile word stores stay
//! word stores.

use core::{mem::MaybeUninit, ptr::write_volatile};

/// A `T` of all-zero words. `T` must be valid all-zero (plain integers),
/// 8-aligned and a whole number of words; checked at compile time.
#[inline(always)]
pub fn zeroed<T: Copy>() -> T {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let mut v = MaybeUninit::<T>::uninit();
    let w = v.as_mut_ptr() as *mut u64;
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: within `v`, 8-aligned.
        unsafe { write_volatile(w.add(i), 0) };
    }
    // SAFETY: every byte written; the caller's `T` is valid all-zero.
    unsafe { v.assume_init() }
}

/// Zero `*dst` in place, a word at a time (same rules as `zeroed`).
#[inline(always)]
pub fn zero<T: Copy>(dst: &mut T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let w = dst as *mut T as *mut u64;
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: within `*dst`, 8-aligned.
        unsafe { write_volatile(w.add(i), 0) };
    }
}

/// Zero the `T` behind `dst` in place and hand it out initialised: for
/// structs too big to build and then copy on the 512-byte stack.
#[inline(always)]
pub fn zero_init<T: Copy>(dst: &mut MaybeUninit<T>) -> &mut T {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let w = dst.as_mut_ptr() as *mut u64;
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: within `*dst`, 8-aligned.
        unsafe { write_volatile(w.add(i), 0) };
    }
    // SAFETY: every byte written; `T` is valid all-zero.
    unsafe { dst.assume_init_mut() }
}
