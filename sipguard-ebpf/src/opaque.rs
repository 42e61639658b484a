//! Hiding values from the verifier's constant tracking.
//!
//! Where a value comes out of a branchy search (a class from 18 compares, a
//! newline index from 256), every outcome reaches the code after it as a
//! different constant, and the verifier walks that code once per constant:
//! the program then exceeds the 1M-instruction budget. Hidden, the value is
//! one unknown scalar and the code after it is walked once.

/// `v` as a value the verifier cannot see through: xor-ed with `noise` (any
/// word the verifier knows nothing of, all 64 bits unknown, such as an
/// 8-byte packet load) and xor-ed back behind a compiler barrier. The
/// verifier tracks each xor but not that the two cancel; LLVM cannot fold
/// them across the `asm!`. Two ALU instructions, where a round trip through
/// a per-CPU map word (what this replaced) cost a lookup, a store and a
/// reload on every packet.
#[inline(always)]
pub fn hide(v: u64, noise: u64) -> u64 {
    let mut x = v ^ noise;
    // SAFETY: one register move onto itself (an empty `asm!` would leave
    // two BTF line records on one instruction, which the kernel refuses).
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) x, options(pure, nomem, nostack)) };
    x ^ noise
}
