//! The SIP header scan: one `bpf_loop` iteration per header line, so the
//! verifier checks the line handler once instead of once per line. Each
//! iteration copies up to `WINDOW` bytes of the line into a per-CPU buffer
//! (`bpf_xdp_load_bytes`: no packet-pointer range games), recognises the
//! header name (a word compare, case folded), finds the end of the line eight
//! bytes at a time, and only for the headers that matter (User-Agent, From,
//! To, Contact, and the Request-URI) walks the value byte by byte to hash its
//! tokens against the signature set.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_loop, bpf_skb_load_bytes, bpf_xdp_load_bytes},
};
use sipguard_common::signature::{
    BLOOM_BITS, FNV_OFFSET, FNV_PRIME, SigEntry, TIER_BAN, is_token_byte,
};

use crate::{
    maps::{SCAN_BUF, SCAN_STATE, SIG_BLOOM, SIG_HITS, SIGNATURES, TOKENIZE},
    opaque,
};

/// Header lines (and 256-byte pieces of long lines) looked at before giving
/// up; a SIP message has 10-30 lines, a UDP datagram at most a few hundred.
const MAX_LINES: u32 = 256;
/// Offsets are masked to this so the verifier knows their range; a UDP SIP
/// datagram on a 1500-byte MTU ends well before it.
const OFFSET_MASK: u64 = 0xfff;
/// Bytes of a line looked at per iteration (the per-CPU buffer size); a
/// longer line continues in the next iteration. Values are tokenized only
/// within this window.
pub const WINDOW: usize = 256;
const WINDOW_MASK: usize = WINDOW - 1;
/// The buffer is twice the window so `start + k` indexes (start < WINDOW,
/// k < VALUE_MAX) stay inside it whatever the compiler does with the masks.
pub const BUF: usize = 2 * WINDOW;
const BUF_MASK: usize = BUF - 1;

pub const HDR_VIA: u32 = 1 << 0;
pub const HDR_FROM: u32 = 1 << 1;
pub const HDR_TO: u32 = 1 << 2;
pub const HDR_CALL_ID: u32 = 1 << 3;
pub const HDR_CSEQ: u32 = 1 << 4;
/// Headers RFC 3261 §8.1.1 requires in every request.
pub const HDR_MANDATORY: u32 = HDR_VIA | HDR_FROM | HDR_TO | HDR_CALL_ID | HDR_CSEQ;

/// The scan's state and results. It lives in a per-CPU map value
/// (`SCAN_STATE`), not on the stack: the verifier does not track map memory,
/// so every callback iteration starts from the same abstract state and the
/// callback is verified once. On the stack, each combination of constants
/// (headers seen so far, start line or not, ...) would be a new state to
/// walk.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scan {
    /// Offset (from the frame start) of the next line.
    pos: u64,
    /// Offset where the UDP payload ends.
    limit: u64,
    /// Hash of the request target (Request-URI and To value), for the
    /// enumeration rule.
    pub target: u64,
    /// `HDR_*` bits of the headers seen.
    pub seen: u32,
    /// Strongest signature matched: tier (0 = none) and id.
    pub sig_tier: u32,
    pub sig_id: u32,
    /// The empty line ending the header section was found.
    pub complete: u32,
    /// Still on the start line.
    first: u32,
    /// The next window continues a long line (not a header start).
    continued: u32,
    _pad: u32,
    /// FNV-1a of the CSeq method (lower-cased), e.g. to tell a 200 to
    /// REGISTER from a 200 to OPTIONS.
    pub cseq_method: u64,
}

/// What the callback gets: only the packet context (an `xdp_md` or, for
/// the TC egress program, an `__sk_buff`).
#[repr(C)]
struct Ctx {
    ctx: *mut c_void,
}

/// Scan the SIP request whose payload spans `[start, limit)` (offsets from
/// the frame start). `None` if the per-CPU state is missing (never).
///
/// Runs in the tail-called `sipguard_sip` program, which starts from one
/// state whatever path the parser took, so the verifier checks it once.
#[inline(always)]
pub fn run(xdp: *mut xdp_md, start: u64, limit: u64) -> Option<Scan> {
    run_on::<false>(xdp as *mut c_void, start, limit)
}

/// The same on a socket buffer (the TC egress program).
#[inline(always)]
pub fn run_skb(skb: *mut __sk_buff, start: u64, limit: u64) -> Option<Scan> {
    run_on::<true>(skb as *mut c_void, start, limit)
}

/// `SKB` picks the load helper at compile time: a helper the program type
/// does not have is refused by the verifier even on a dead branch.
#[inline(always)]
fn run_on<const SKB: bool>(ctx: *mut c_void, start: u64, limit: u64) -> Option<Scan> {
    let st = SCAN_STATE.get_ptr_mut(0)?;
    // SAFETY: per-CPU map value, owned by this CPU during the program.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile as w};
        // Field by field: see `tokenize` (no byte-wise memset).
        let st = &mut *st;
        w(addr_of_mut!(st.pos), start);
        w(addr_of_mut!(st.limit), limit);
        w(addr_of_mut!(st.target), 0);
        w(addr_of_mut!(st.seen), 0);
        w(addr_of_mut!(st.sig_tier), 0);
        w(addr_of_mut!(st.sig_id), 0);
        w(addr_of_mut!(st.complete), 0);
        w(addr_of_mut!(st.first), 1);
        w(addr_of_mut!(st.continued), 0);
        w(addr_of_mut!(st.cseq_method), 0);
    }
    let mut ctx = Ctx { ctx };
    unsafe {
        bpf_loop(
            MAX_LINES,
            scan_line::<SKB> as *mut c_void,
            &mut ctx as *mut Ctx as *mut c_void,
            0,
        );
        Some(*st)
    }
}

/// Line kinds, as small integers so the per-kind behaviour is table
/// lookups and shifts on one (laundered) value, not a branch per kind.
mod kind {
    pub const OTHER: u64 = 0;
    pub const USER_AGENT: u64 = 1;
    pub const FROM: u64 = 2;
    pub const TO: u64 = 3;
    pub const CONTACT: u64 = 4;
    pub const VIA: u64 = 5;
    pub const CALL_ID: u64 = 6;
    pub const CSEQ: u64 = 7;
    /// The start line's Request-URI.
    pub const REQUEST_URI: u64 = 8;
}

/// Per kind: the `HDR_*` bit it sets.
const SEEN_BY_KIND: [u32; 16] = {
    let mut t = [0u32; 16];
    t[kind::FROM as usize] = HDR_FROM;
    t[kind::TO as usize] = HDR_TO;
    t[kind::VIA as usize] = HDR_VIA;
    t[kind::CALL_ID as usize] = HDR_CALL_ID;
    t[kind::CSEQ as usize] = HDR_CSEQ;
    t
};
/// Kinds whose value is tokenized against the signatures.
const TOKENIZE_KINDS: u64 = 1 << kind::USER_AGENT
    | 1 << kind::FROM
    | 1 << kind::TO
    | 1 << kind::CONTACT
    | 1 << kind::REQUEST_URI
    | 1 << kind::CSEQ;
/// Kinds that feed the enumeration target hash.
const TARGET_KINDS: u64 = 1 << kind::TO | 1 << kind::REQUEST_URI;

/// A header name as a case-folded prefix of the first 16 bytes of a line.
struct Name {
    w0: u64,
    m0: u64,
    w1: u64,
    m1: u64,
    len: u64,
    kind: u64,
}

const fn name(s: &[u8], kind: u64) -> Name {
    let mut n = Name {
        w0: 0,
        m0: 0,
        w1: 0,
        m1: 0,
        len: s.len() as u64,
        kind,
    };
    let mut i = 0;
    while i < s.len() {
        let b = s[i] as u64;
        if i < 8 {
            n.w0 |= b << (8 * i);
            n.m0 |= 0xff << (8 * i);
        } else {
            n.w1 |= b << (8 * (i - 8));
            n.m1 |= 0xff << (8 * (i - 8));
        }
        i += 1;
    }
    n
}

/// Header names we act on, long and compact forms (RFC 3261 §7.3.3),
/// without the colon: whitespace may stand before it. Long forms first, so
/// "from" wins over "f" (which then needs its colon right after).
const NAMES: [Name; 12] = [
    name(b"user-agent", kind::USER_AGENT),
    name(b"call-id", kind::CALL_ID),
    name(b"contact", kind::CONTACT),
    name(b"from", kind::FROM),
    name(b"cseq", kind::CSEQ),
    name(b"via", kind::VIA),
    name(b"to", kind::TO),
    name(b"v", kind::VIA),
    name(b"f", kind::FROM),
    name(b"t", kind::TO),
    name(b"i", kind::CALL_ID),
    name(b"m", kind::CONTACT),
];

/// Whitespace allowed between a header name and its colon.
const NAME_WS_MAX: usize = 4;

/// Setting bit 5 folds ASCII letters to lower case and leaves the other
/// bytes of a header name (`-`, `:`, digits) as they are.
const FOLD: u64 = 0x2020_2020_2020_2020;

const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// Little-endian word `i` (0..WINDOW/8) of the buffer.
#[inline(always)]
fn word(buf: &[u8; BUF], i: usize) -> u64 {
    let at = (i * 8) & (WINDOW_MASK & !7);
    u64::from_le_bytes([
        buf[at],
        buf[at + 1],
        buf[at + 2],
        buf[at + 3],
        buf[at + 4],
        buf[at + 5],
        buf[at + 6],
        buf[at + 7],
    ])
}

extern "C" fn scan_line<const SKB: bool>(_index: u64, ctx: *mut c_void) -> i64 {
    let pkt = unsafe { (*(ctx as *mut Ctx)).ctx };
    let Some(st) = SCAN_STATE.get_ptr_mut(0) else {
        return STOP;
    };
    // SAFETY: per-CPU map value, owned by this CPU during the program.
    let s = unsafe { &mut *st };
    let pos = (s.pos & OFFSET_MASK) as usize;
    let limit = (s.limit & OFFSET_MASK) as usize;
    if pos + 2 > limit {
        return STOP;
    }
    let avail = limit - pos;
    let n = if avail < WINDOW { avail } else { WINDOW };
    // 1..=WINDOW in a form the verifier can see (a zero-length load is refused).
    let n = ((n - 1) & WINDOW_MASK) + 1;
    let Some(buf) = SCAN_BUF.get_ptr_mut(0) else {
        return STOP;
    };
    // SAFETY: a per-CPU map value of WINDOW bytes, owned by this CPU for the
    // duration of the program.
    let rc = unsafe {
        if SKB {
            bpf_skb_load_bytes(
                pkt as *const c_void,
                pos as u32,
                buf as *mut c_void,
                n as u32,
            )
        } else {
            bpf_xdp_load_bytes(pkt as *mut xdp_md, pos as u32, buf as *mut c_void, n as u32)
        }
    };
    if rc != 0 {
        return STOP;
    }
    let buf = unsafe { &*buf };

    let (nl, long) = match find_newline(buf, n) {
        Some(nl) => (nl, false),
        // A line longer than the window: judge its start (name, first part
        // of the value) now and skip the rest of it in the next iterations.
        None if n == WINDOW => (WINDOW - 1, true),
        None => return STOP,
    };
    // One unknown index for the verifier, not one constant per position the
    // search could have stopped at (see opaque.rs).
    let nl = opaque::launder(nl as u64, 0) as usize & WINDOW_MASK;
    let continued = s.continued != 0;
    if long {
        s.pos = (pos + WINDOW) as u64;
        s.continued = 1;
    } else {
        s.continued = 0;
        s.pos = (pos + nl + 1) as u64;
    }
    if continued {
        return CONTINUE;
    }
    if buf[0] == b'\r' || buf[0] == b'\n' {
        s.complete = 1;
        return STOP;
    }

    // What the line is, and where its value starts.
    let mut k = kind::OTHER;
    let mut value = 0;
    if s.first != 0 {
        s.first = 0;
        // Request-URI: from after the method's SP to the next SP.
        if let Some(sp) = find_byte(buf, nl, b' ') {
            k = kind::REQUEST_URI;
            value = sp + 1;
        }
    } else {
        let (w0, w1) = (word(buf, 0) | FOLD, word(buf, 1) | FOLD);
        for h in NAMES.iter() {
            if w0 & h.m0 == h.w0 && w1 & h.m1 == h.w1 {
                k = h.kind;
                value = h.len as usize;
                break;
            }
        }
        // The name must end here: optional SP/HTAB, then ':' (RFC 3261
        // §7.3.1). Otherwise it was only a prefix ("f" of "foo:").
        let mut at = value & 15;
        for _ in 0..NAME_WS_MAX {
            if buf[at] == b' ' || buf[at] == b'\t' {
                at += 1;
            }
        }
        if k != kind::OTHER && buf[at & 31] == b':' {
            value = (at & 31) + 1;
        } else {
            k = kind::OTHER;
            value = 0;
        }
    }
    // One unknown kind and offset from here on: the verifier walks the rest
    // once, not once per header name (see opaque.rs).
    let k = opaque::launder(k, kind::OTHER) & 15;
    let value = opaque::launder(value as u64, 0) as usize & WINDOW_MASK;
    s.seen |= SEEN_BY_KIND[k as usize];
    if (TOKENIZE_KINDS >> k) & 1 != 0 && value < nl {
        let (t, last) = tokenize(s, value, nl, k);
        s.target ^= t & ((TARGET_KINDS >> k) & 1).wrapping_neg();
        // The method is CSeq's last token ("CSeq: 1 REGISTER").
        let is_cseq = ((1u64 << kind::CSEQ >> k) & 1).wrapping_neg();
        s.cseq_method = (last & is_cseq) | (s.cseq_method & !is_cseq);
    }
    CONTINUE
}

/// Index of the first `byte` in `buf[..n]`, eight bytes a step: a SWAR
/// zero-byte test on `word ^ byte×8` finds the word, and the lowest flagged
/// byte (always a true match) gives the index by a multiply, not a loop, so
/// the verifier sees one branch per word instead of one per byte.
#[inline(always)]
fn find_byte(buf: &[u8; BUF], n: usize, byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * byte as u64;
    for i in 0..WINDOW / 8 {
        if i * 8 >= n {
            return None;
        }
        let x = word(buf, i) ^ pattern;
        let z = x.wrapping_sub(ONES) & !x & HIGH;
        if z != 0 {
            // z & -z is 0x80 << 8k for the first matching byte k.
            let low = z.isolate_lowest_one() >> 7;
            let k = (low.wrapping_mul(0x0102_0304_0506_0708) >> 56) as usize - 1;
            let at = i * 8 + (k & 7);
            return if at < n { Some(at) } else { None };
        }
    }
    None
}

#[inline(always)]
fn find_newline(buf: &[u8; BUF], n: usize) -> Option<usize> {
    find_byte(buf, n, b'\n')
}

/// Bytes of a value tokenized (User-Agent, From, To, Contact values and
/// Request-URIs are far shorter in practice).
const VALUE_MAX: usize = 128;
/// Value bytes per `tokenize_word` call: each `bpf_loop` iteration costs a
/// call, so fewer, longer steps are faster; the step is verified once.
const STEP: usize = 32;

/// Hash the tokens of `buf[from..to]` and check them against the signatures;
/// return the target hash kind `k` asks for, and the last token's hash.
///
/// The bytes are walked by a nested `bpf_loop`, `STEP` bytes per iteration,
/// with the running state in `TOKENIZE` (map memory): the verifier checks
/// the step once.
#[inline(always)]
fn tokenize(s: &mut Scan, from: usize, to: usize, k: u64) -> (u64, u64) {
    let Some(t) = TOKENIZE.get_ptr_mut(0) else {
        return (0, 0);
    };
    // SAFETY: per-CPU map value, owned by this CPU during the program.
    let t = unsafe { &mut *t };
    // The Request-URI ends at SP; the To target ends at the first ';' (the
    // address without its parameters). Shifts, not compares.
    // Field by field with volatile stores: a struct literal of mostly zeros
    // becomes a call to a byte-at-a-time `memset` on this target, which
    // costs more than the tokenizing.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile as w};
        w(addr_of_mut!(t.from), from as u64);
        w(addr_of_mut!(t.to), to as u64);
        w(addr_of_mut!(t.h), FNV_OFFSET);
        w(addr_of_mut!(t.target), FNV_OFFSET);
        w(addr_of_mut!(t.prev), 0);
        w(addr_of_mut!(t.last), FNV_OFFSET);
        w(addr_of_mut!(t.alive), 1);
        w(addr_of_mut!(t.in_target), (TARGET_KINDS >> k) & 1);
        // The Request-URI ends at SP; the To target ends at the first ';'
        // (the address without its parameters). Shifts, not compares.
        w(
            addr_of_mut!(t.stop_space),
            (1 << kind::REQUEST_URI >> k) & 1,
        );
        w(addr_of_mut!(t.stop_semi), (1 << kind::TO >> k) & 1);
    }
    unsafe {
        bpf_loop(
            (VALUE_MAX / STEP) as u32,
            tokenize_word as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // A token running to the end of the value.
    if t.prev != 0 {
        check_token(s, t.h);
        t.last = t.h;
    }
    (t.target, t.last)
}

/// Running state of `tokenize` (per CPU, see there).
#[repr(C)]
pub struct Tokenize {
    from: u64,
    to: u64,
    h: u64,
    target: u64,
    prev: u64,
    /// Hash of the last complete token (CSeq's method).
    last: u64,
    alive: u64,
    in_target: u64,
    stop_space: u64,
    stop_semi: u64,
}

/// One `STEP`-byte step of `tokenize`.
extern "C" fn tokenize_word(index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(t), Some(buf)) = (TOKENIZE.get_ptr_mut(0), SCAN_BUF.get_ptr(0)) else {
        return STOP;
    };
    // SAFETY: per-CPU map values, owned by this CPU during the program.
    let (t, buf) = unsafe { (&mut *t, &*buf) };
    let base = (t.from & WINDOW_MASK as u64) + index * STEP as u64;
    let to = t.to & WINDOW_MASK as u64;
    if base >= to {
        return STOP;
    }
    // Work on locals and write back once: the state lives in map memory.
    let Some(st) = SCAN_STATE.get_ptr_mut(0) else {
        return STOP;
    };
    // SAFETY: per-CPU map value, owned by this CPU during the program.
    let scan = unsafe { &mut *st };
    let (mut h, mut target, mut prev, mut last) = (t.h, t.target, t.prev, t.last);
    let (mut alive, mut in_target) = (t.alive, t.in_target);
    let (stop_space, stop_semi) = (t.stop_space, t.stop_semi);
    for b in 0..STEP as u64 {
        let i = base + b;
        if i >= to || alive == 0 {
            break;
        }
        let c = buf[i as usize & BUF_MASK];
        // Plain branches are fine here: the loop state comes from map
        // memory, so the verifier holds no constants to split paths on,
        // and a branch costs fewer instructions per byte than masks.
        if stop_space != 0 && c == b' ' {
            alive = 0;
            break;
        }
        if stop_semi != 0 && c == b';' {
            in_target = 0;
        }
        if in_target != 0 && c != b'\r' {
            target = (target ^ c as u64).wrapping_mul(FNV_PRIME);
        }
        if is_token_byte(c) {
            h = (h ^ c.to_ascii_lowercase() as u64).wrapping_mul(FNV_PRIME);
            prev = 1;
        } else if prev != 0 {
            // A token just ended: every token is checked, however many.
            check_token(scan, h);
            last = h;
            h = FNV_OFFSET;
            prev = 0;
        }
    }
    (t.h, t.target, t.prev, t.last) = (h, target, prev, last);
    (t.alive, t.in_target) = (alive, in_target);
    CONTINUE
}

/// Bloom filter first (no helper call), then the signature hash.
#[inline(always)]
fn check_token(s: &mut Scan, h: u64) {
    let Some(bloom) = SIG_BLOOM.get_ptr(0) else {
        return;
    };
    let (a, b) = (h % BLOOM_BITS, (h >> 32) % BLOOM_BITS);
    let words = unsafe { &(*bloom).words };
    let hit_a = words[(a / 64) as usize & 63] & (1 << (a % 64)) != 0;
    let hit_b = words[(b / 64) as usize & 63] & (1 << (b % 64)) != 0;
    if !(hit_a && hit_b) {
        return;
    }
    let Some(sig) = (unsafe { SIGNATURES.get(h) }) else {
        return;
    };
    let sig: SigEntry = *sig;
    if let Some(c) = SIG_HITS.get_ptr_mut(sig.id) {
        unsafe { *c += 1 };
    }
    if s.sig_tier == 0 || (sig.tier == TIER_BAN && s.sig_tier != TIER_BAN) {
        s.sig_tier = sig.tier;
        s.sig_id = sig.id;
    }
}
