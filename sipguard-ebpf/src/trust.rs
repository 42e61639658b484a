//! Earned trust, read: whether a source holds it (the `TRUST_HINTS` bitmap
//! first, then `TRUSTED`) and until when. `learn.rs` earns it.

use sipguard_common::source::{SrcKey, word_of};

use crate::maps::{TRUST_HINTS, TRUST_LIVE, TRUSTED};

/// Whether `src` may hold trust: false means it surely does not (its bit
/// in the live `TRUST_HINTS` bitmap is clear), without a `TRUSTED` lookup.
#[inline(always)]
pub fn maybe_trusted(src: &SrcKey) -> bool {
    let live = TRUST_LIVE.get(0).map_or(0, |l| *l & 1);
    let bit = src.trust_bit();
    match TRUST_HINTS.get_ptr(live) {
        // SAFETY: a valid map value pointer; one word of it is read.
        Some(bits) => {
            let word = unsafe { (*bits).words[word_of(bit)] };
            word & (1 << (bit & 63)) != 0
        }
        None => true,
    }
}

/// Whether `src` holds unexpired trust.
#[inline(always)]
pub fn is_trusted(src: &SrcKey, now: u64) -> bool {
    until(src) > now
}

/// When `src`'s trust lapses (0: not trusted).
#[inline(always)]
pub fn until(src: &SrcKey) -> u64 {
    match TRUSTED.get_ptr(src) {
        // SAFETY: valid map value pointer for this program run.
        Some(t) => unsafe { (*t).expires_ns },
        None => 0,
    }
}
