//! Hiding values from the verifier's constant tracking.
//!
//! Where a value comes out of a branchy search (a class from 18 compares, a
//! newline index from 256), every outcome reaches the code after it as a
//! different constant, and the verifier walks that code once per constant:
//! the program then exceeds the 1M-instruction budget. Passed through a map
//! word the value is one unknown scalar and the code after it is walked once.

use crate::maps::SCRATCH;

/// Return `v` as a value the verifier cannot see through (`fallback` on the
/// impossible missing-map path, so that path is one constant too).
#[inline(always)]
pub fn launder(v: u64, fallback: u64) -> u64 {
    match SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU map value, owned by this CPU during the program.
        Some(p) => unsafe {
            core::ptr::write_volatile(p, v);
            core::ptr::read_volatile(p)
        },
        None => fallback,
    }
}

/// `v` as a value the verifier cannot see through, without a memory round
/// trip: xor-ed with `noise` (any word the verifier knows nothing of, all
/// 64 bits unknown) and xor-ed back behind a compiler barrier. The verifier
/// tracks each xor but not that the two cancel; LLVM cannot fold them
/// across the `asm!`. Where a register already holds such a word this is
/// two ALU instructions against `launder`'s lookup, store and reload.
#[inline(always)]
pub fn hide(v: u64, noise: u64) -> u64 {
    let mut x = v ^ noise;
    // SAFETY: one register move onto itself (an empty `asm!` would leave
    // two BTF line records on one instruction, which the kernel refuses).
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) x, options(pure, nomem, nostack)) };
    x ^ noise
}
