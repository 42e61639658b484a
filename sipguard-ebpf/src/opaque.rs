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

/// `n`, known to the caller to be in 1..=N (N a power of two), as
/// `((n - 1) & (N - 1)) + 1`: the form in which every verifier sees the
/// range 1..=N. Helpers that copy `n` bytes refuse a length that may be 0,
/// and the verifier of Debian 12's 6.1 does not learn `n != 0` from the
/// caller's branch. In `asm!` because LLVM, knowing the range, folds the
/// three steps back into `n`.
#[inline(always)]
pub fn len_1_to<const N: u64>(n: u64) -> u64 {
    const { assert!(N.is_power_of_two() && N <= 1 << 31) };
    let mut x = n;
    // SAFETY: arithmetic on one register.
    unsafe {
        core::arch::asm!(
            "{0} += -1",
            "{0} &= {m}",
            "{0} += 1",
            inout(reg) x,
            m = const N - 1,
            options(pure, nomem, nostack)
        )
    };
    x
}
