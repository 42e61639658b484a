//! Byte searches in the message buffer, eight bytes a step (SWAR): one
//! branch per word for the verifier, not one per byte.

use crate::scratch::{LINE_WORDS, Msg, WORD_MASK};

/// Where a search for a byte ended.
pub enum Found {
    At(usize),
    /// Not before the end of the message.
    End,
    /// Not within `LINE_WORDS` words: a long line.
    Long(usize),
}

/// The first '\n' at or after `from` (< `len`). As `find_byte`, but the
/// sentinel after the message (see `run_on`) stops the search, so a word
/// costs a load, the SWAR test and the loop branch.
#[inline(always)]
pub fn find_newline(msg: &Msg, from: usize, len: usize) -> Found {
    const PATTERN: u64 = ONES * b'\n' as u64;
    let first = (from >> 3) & WORD_MASK;
    let mut x = (msg.w[first] ^ PATTERN) | ((1u64 << ((from & 7) * 8)) - 1);
    for j in 0..LINE_WORDS {
        if j > 0 {
            // first + j < MSG_MAX / 8 + LINE_WORDS = MSG_WORDS: no mask.
            x = msg.w[first + j] ^ PATTERN;
        }
        let z = zero_bytes(x);
        if z != 0 {
            let at = (first + j) * 8 + first_flagged(z);
            return if at < len { Found::At(at) } else { Found::End };
        }
    }
    Found::Long((first + LINE_WORDS) * 8)
}

pub const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The SWAR zero-byte test: 0x80 in the byte of every zero byte of `x`
/// (and possibly above the lowest one, never below it).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// 0x80 in every byte of `x` that is not zero, exactly (no borrow from a
/// lower byte, unlike `zero_bytes`).
#[inline(always)]
pub fn nonzero_bytes(x: u64) -> u64 {
    (((x & !HIGH).wrapping_add(!HIGH)) | x) & HIGH
}

/// Index (0-7) of the lowest byte flagged 0x80 in a SWAR zero-byte test
/// `z` (`zero_bytes`): `z & -z` is 0x80 << 8k for that byte k, and a multiply turns it
/// into k + 1 in the top byte (no loop, so no branch per byte).
#[inline(always)]
pub fn first_flagged(z: u64) -> usize {
    let low = z.isolate_lowest_one() >> 7;
    ((low.wrapping_mul(0x0102_0304_0506_0708) >> 56) as usize - 1) & 7
}

/// The first `byte` in `msg[from..to]`, eight bytes a step: aligned word
/// loads, a SWAR zero-byte test on `word ^ byte×8`, and the lowest flagged
/// byte (always a true match) turned into its index by a multiply, not a
/// loop, so the verifier sees one branch per word instead of one per byte.
#[inline(always)]
pub fn find_byte(msg: &Msg, from: usize, to: usize, byte: u8) -> Found {
    let pattern = ONES * byte as u64;
    let first = from >> 3;
    // Bytes of the first word before `from` must not match: make them
    // non-zero after the xor.
    let before = (1u64 << ((from & 7) * 8)) - 1;
    for j in 0..LINE_WORDS {
        let wi = first + j;
        if wi * 8 >= to {
            return Found::End;
        }
        let mut x = msg.w[wi & WORD_MASK] ^ pattern;
        if j == 0 {
            x |= before;
        }
        let z = zero_bytes(x);
        if z != 0 {
            let at = wi * 8 + first_flagged(z);
            return if at < to { Found::At(at) } else { Found::End };
        }
    }
    Found::Long((first + LINE_WORDS) * 8)
}
