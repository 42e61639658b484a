//! Zeroing without `memset`. On the BPF target LLVM turns a zeroed array or
//! a struct literal of mostly zeros into a call to a byte-at-a-time `memset`
//! subprogram: a call and a loop per packet. Volatile word stores stay
//! word stores.

use core::{mem::MaybeUninit, ptr::write_volatile};

/// Zero the `T` behind `dst` in place and hand it out initialised (built in
/// place: a big struct built and then copied would not fit the 512-byte
/// stack). `T` must be valid all-zero (plain integers), 8-aligned and a
/// whole number of words; checked at compile time.
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

/// Zero an initialised `*dst` in place (same rules as `zero_init`).
#[inline(always)]
pub fn zero<T: Copy>(dst: &mut T) {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and `zero_init` leaves a
    // valid `T` behind.
    zero_init(unsafe { &mut *(dst as *mut T as *mut MaybeUninit<T>) });
}
