//! A header value's tokens, hashed (FNV-1a, lower-cased) and checked
//! against the signature set, a `STEP` of bytes per `bpf_loop` iteration;
//! the Request-URI and To tokens also feed the enumeration target hash.

use sipguard_common::signature::{FNV_OFFSET, FNV_PRIME, TIER_BAN, is_token_byte};

use crate::{
    maps::{SIG_HITS, SIG_INDEX},
    scratch::{MSG_MASK, Msg, Scan, Tokenize},
};

use super::headers::{TARGET_KINDS, URI_KINDS, kind};

/// Bytes of a value tokenized (User-Agent, From, To, Contact values and
/// Request-URIs are far shorter in practice).
const VALUE_MAX: usize = 128;
/// Value bytes per step (one `scan_line` iteration each after the first):
/// each `bpf_loop` iteration costs a call, so fewer, longer steps are
/// faster; the step is verified once.
const STEP: usize = 32;

/// Value steps at most (`VALUE_MAX / STEP`), a power of two.
pub const STEPS_MAX: u64 = (VALUE_MAX / STEP) as u64;
const _: () = assert!(STEPS_MAX.is_power_of_two());

/// Start hashing the tokens of `msg[from..to]`, a value of kind `k`, and
/// checking them against the signatures. The bytes are walked `STEP` at a
/// time by `step`, one per `scan_line` iteration, with the running state in
/// `TOKENIZE` (map memory), so the verifier checks the step once, not once
/// per byte of a value; `end_tokenize` folds the result into the scan.
#[inline(always)]
pub fn start_tokenize(t: &mut Tokenize, from: usize, to: usize, k: u64) {
    // Field by field with volatile stores: a struct literal of mostly zeros
    // becomes a call to a byte-at-a-time `memset` on this target, which
    // costs more than the tokenizing.
    // SAFETY: `t` is a per-CPU map value owned by this CPU during the run.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile as w};
        w(addr_of_mut!(t.from), from as u64);
        w(addr_of_mut!(t.to), to as u64);
        w(addr_of_mut!(t.h), FNV_OFFSET);
        w(addr_of_mut!(t.offset), FNV_OFFSET);
        // Seeded by kind: a Request-URI and a To naming the same user must
        // not cancel out when their hashes are xor-ed into the target.
        w(addr_of_mut!(t.target), FNV_OFFSET ^ k);
        w(addr_of_mut!(t.prev), 0);
        w(addr_of_mut!(t.last), FNV_OFFSET);
        w(addr_of_mut!(t.alive), 1);
        w(addr_of_mut!(t.in_target), (TARGET_KINDS >> k) & 1);
        // Shifts, not compares.
        w(
            addr_of_mut!(t.stop_space),
            (1 << kind::REQUEST_URI >> k) & 1,
        );
        w(addr_of_mut!(t.stop_uri), (URI_KINDS >> k) & 1);
        w(addr_of_mut!(t.k), k);
        w(addr_of_mut!(t.index), 0);
        w(addr_of_mut!(t.active), 1);
    }
}

/// The value ended (or its `VALUE_MAX` bytes were walked): check a token
/// running to its end, and fold the target hash and CSeq method into `s`.
#[inline(always)]
pub fn end_tokenize<const RESP: bool>(s: &mut Scan, t: &mut Tokenize) {
    t.active = 0;
    // A token running to the end of the value. The same as the byte loop's
    // end of a token (`step`), but with a branch where the loop has a mask:
    // one helper for both, masked, made the verifier walk far more
    // instructions (its `verified_insns`).
    if t.prev != 0 {
        if !RESP {
            check_token(s, t.h);
        }
        if t.in_target != 0 {
            t.target = (t.target ^ t.h).wrapping_mul(FNV_PRIME);
        }
        t.last = t.h;
    }
    let k = t.k & kind::MASK;
    s.target ^= mix(t.target) & ((TARGET_KINDS >> k) & 1).wrapping_neg();
    // The method is CSeq's last token ("CSeq: 1 REGISTER").
    let is_cseq = ((1u64 << kind::CSEQ >> k) & 1).wrapping_neg();
    s.cseq_method = (t.last & is_cseq) | (s.cseq_method & !is_cseq);
}

/// Per byte: its lower-case form if it is a token byte, else 0.
static TOKEN_LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        if is_token_byte(c as u8) {
            t[c] = (c as u8).to_ascii_lowercase();
        }
        c += 1;
    }
    t
};

/// Step `index` (`STEP` bytes) of a value (`start_tokenize`); true if the
/// value goes on past it and this was not its last step.
#[inline(always)]
pub fn step<const RESP: bool>(t: &mut Tokenize, msg: &Msg, scan: &mut Scan, index: u64) -> bool {
    let base = (t.from & MSG_MASK as u64) + index * STEP as u64;
    let to = t.to & MSG_MASK as u64;
    if base >= to || t.alive == 0 {
        return false;
    }
    // Only what every byte touches is kept in registers (BPF has few: more
    // live values spill to the stack and cost loads per byte); what changes
    // at token ends stays in map memory.
    let (mut h, mut prev) = (t.h, t.prev);
    for b in 0..STEP as u64 {
        let i = base + b;
        if i >= to {
            break;
        }
        let c = msg.byte(i as usize);
        // Token bytes (the common case) cost a table load and a multiply;
        // everything else happens at separators.
        let lower = TOKEN_LOWER[c as usize];
        if lower != 0 {
            h = (h ^ lower as u64).wrapping_mul(FNV_PRIME);
            prev = 1;
            continue;
        }
        if prev != 0 {
            // A token just ended: every token is checked, however many.
            if !RESP {
                check_token(scan, h);
            }
            // Into the target only while in it: a mask, not a branch.
            let keep = t.in_target.wrapping_neg();
            t.target = ((t.target ^ h).wrapping_mul(FNV_PRIME) & keep) | (t.target & !keep);
            t.last = h;
            h = t.offset;
            prev = 0;
        }
        if (t.stop_space != 0 && c == b' ')
            || (t.stop_uri != 0 && (c == b'@' || c == b';' || c == b'>'))
        {
            t.alive = 0;
            break;
        }
    }
    (t.h, t.prev) = (h, prev);
    t.alive != 0 && base + (STEP as u64) < to && index + 1 < STEPS_MAX
}

/// A 64-bit finalizer (MurmurHash3's fmix64) for a value's target hash
/// before it is xor-ed with the other's: the Request-URI and To of one
/// request usually name the same user, and two FNV chains over the same
/// tokens (seeded apart only in their low bits) xor to a value that barely
/// depends on the user.
#[inline(always)]
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Bloom filter first, then the slot table (`SigIndex`): array reads of one
/// map value, no helper call.
#[inline(always)]
fn check_token(s: &mut Scan, h: u64) {
    let Some(idx) = SIG_INDEX.get_ptr(0) else {
        return;
    };
    // SAFETY: an array map value, read only.
    let idx = unsafe { &*idx };
    if !idx.may_hold(h) {
        return;
    }
    let Some(sig) = idx.get(h) else {
        return;
    };
    if let Some(c) = SIG_HITS.get_ptr_mut(sig.id) {
        // SAFETY: an array map value; a lost add between CPUs loses a hit.
        unsafe { *c += 1 };
    }
    if s.sig_tier == 0 || (sig.tier == TIER_BAN && s.sig_tier != TIER_BAN) {
        s.sig_tier = sig.tier;
        s.sig_id = sig.id;
    }
}
