//! The SIP header scan. The message is copied once into a per-CPU buffer
//! (`bpf_xdp_load_bytes`: no packet-pointer range games, and non-linear
//! frames work), then walked with `bpf_loop`, up to `LINES_PER_CALL` header
//! lines per iteration (a line whose value is tokenized ends one, and each
//! further 32 bytes of that value take one), so the verifier checks the
//! line handler a fixed number of times, not per line.
//! Each iteration finds the end of its line eight bytes at a time (aligned
//! word loads, a SWAR byte test), recognises the header name (a word
//! compare, case folded) and only for the headers that matter (User-Agent,
//! From, To, Contact, CSeq and the Request-URI) walks the value byte by byte
//! to hash its tokens against the signature set.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_loop, bpf_skb_load_bytes, bpf_xdp_load_bytes},
};
use sipguard_common::signature::{FNV_OFFSET, FNV_PRIME, TIER_BAN, is_token_byte};

use crate::{
    maps::{SCAN_MSG, SCAN_STATE, SIG_HITS, SIG_INDEX, TOKENIZE},
    opaque,
};

/// `scan_line` calls (each one to `LINES_PER_CALL` header lines or pieces of
/// long lines, or one `STEP` of a value) before giving up; a SIP message has
/// 10-30 lines, and value steps past the first add at most `MSG_MAX / STEP`.
const MAX_LINES: u32 = 256;
/// Header lines one `scan_line` call may walk when they need no
/// tokenizing: fewer calls (~10 % off a 1400-byte INVITE's scan at 3),
/// while the verifier checks each copy of the line code.
const LINES_PER_CALL: usize = 3;
/// Bytes of a message scanned: a UDP datagram on a 1500-byte MTU, and the
/// header section of any sane one on a jumbo MTU. A longer message is
/// scanned up to here and not judged truncated.
pub const MSG_MAX: usize = 4096;
const MSG_MASK: usize = MSG_MAX - 1;
const WORD_MASK: usize = MSG_MAX / 8 - 1;
/// Words of one line searched per iteration: a longer line is judged by its
/// start and skipped in the following iterations.
const LINE_WORDS: usize = 32;
/// The buffer, in words so the line walk loads whole aligned words. Spare
/// words: the newline sentinel after a full buffer, and a line search from
/// any masked word index reads its `LINE_WORDS` words without a mask each.
pub const MSG_WORDS: usize = MSG_MAX / 8 + LINE_WORDS;

#[repr(C)]
pub struct Msg {
    w: [u64; MSG_WORDS],
}

impl Msg {
    /// Byte `i` (masked into the message).
    #[inline(always)]
    fn byte(&self, i: usize) -> u8 {
        // SAFETY: i & MSG_MASK < MSG_MAX <= size_of::<Msg>().
        unsafe { *(self as *const Msg as *const u8).add(i & MSG_MASK) }
    }

    /// The eight bytes from `i` as a little-endian word (from two aligned
    /// loads: a load at an unaligned offset would be split into byte loads).
    #[inline(always)]
    fn word_at(&self, i: usize) -> u64 {
        let wi = (i >> 3) & WORD_MASK;
        let r = ((i & 7) * 8) as u64;
        let (a, b) = (self.w[wi], self.w[wi + 1]);
        // Two shifts for the high part: a shift by 64 is not a zero on BPF.
        (a >> r) | ((b << (63 - r)) << 1)
    }
}

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
    /// Offset (in the message buffer) of the next line.
    pos: u64,
    /// Bytes of the message in the buffer.
    len: u64,
    /// Hash of the request target (Request-URI and To value), for the
    /// enumeration rule.
    pub target: u64,
    /// `HDR_*` bits of the headers seen.
    pub seen: u32,
    /// Strongest signature matched: tier (0 = none) and id.
    pub sig_tier: u32,
    pub sig_id: u32,
    /// The empty line ending the header section was found (or the message
    /// is longer than `MSG_MAX`, and so not judged).
    pub complete: u32,
    /// Still on the start line.
    first: u32,
    /// The next line piece continues a long line (not a header start).
    continued: u32,
    /// The message was longer than the buffer.
    capped: u32,
    /// The kind of the last header line: a folded line (one starting with
    /// SP or HTAB) continues its value.
    last_kind: u32,
    /// FNV-1a of the CSeq method (lower-cased), e.g. to tell a 200 to
    /// REGISTER from a 200 to OPTIONS.
    pub cseq_method: u64,
}

/// Scan the SIP request whose payload spans `[start, limit)` (offsets from
/// the frame start). `None` if the per-CPU state is missing (never) or the
/// payload cannot be read.
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
    let msg = SCAN_MSG.get_ptr_mut(0)?;
    let t = TOKENIZE.get_ptr_mut(0)?;
    if limit <= start {
        return None;
    }
    let whole = limit - start;
    let n = if whole < MSG_MAX as u64 {
        whole
    } else {
        MSG_MAX as u64
    };
    // 1..=MSG_MAX in a form the verifier can see (a zero-length load is refused).
    let n = ((n - 1) & MSG_MASK as u64) + 1;
    // SAFETY: a per-CPU map value of at least MSG_MAX bytes.
    let rc = unsafe {
        if SKB {
            bpf_skb_load_bytes(ctx, start as u32, msg as *mut c_void, n as u32)
        } else {
            bpf_xdp_load_bytes(
                ctx as *mut xdp_md,
                start as u32,
                msg as *mut c_void,
                n as u32,
            )
        }
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: per-CPU map value, owned by this CPU during the program;
    // n <= MSG_MAX < its size. A '\n' right after the message ends every
    // newline search there, so the search needs no end test per word.
    unsafe { *(msg as *mut u8).add(n as usize & (MSG_MASK | MSG_MAX)) = b'\n' };
    // SAFETY: per-CPU map value, owned by this CPU during the program.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile as w};
        // Field by field: see `start_tokenize` (no byte-wise memset).
        let st = &mut *st;
        w(addr_of_mut!(st.pos), 0);
        w(addr_of_mut!(st.len), n);
        w(addr_of_mut!(st.target), 0);
        w(addr_of_mut!(st.seen), 0);
        w(addr_of_mut!(st.sig_tier), 0);
        w(addr_of_mut!(st.sig_id), 0);
        w(addr_of_mut!(st.complete), 0);
        w(addr_of_mut!(st.first), 1);
        w(addr_of_mut!(st.continued), 0);
        w(addr_of_mut!(st.capped), (n < whole) as u32);
        w(addr_of_mut!(st.last_kind), kind::OTHER as u32);
        w(addr_of_mut!(st.cseq_method), 0);
        w(addr_of_mut!((*t).active), 0);
    }
    // The callback gets the map values through its context argument (a
    // stack slot of this frame) instead of looking them up per iteration.
    let mut ctx = Bufs { st, msg, t };
    unsafe {
        bpf_loop(
            MAX_LINES,
            scan_line as *mut c_void,
            &mut ctx as *mut Bufs as *mut c_void,
            0,
        );
        let st = &mut *st;
        if st.capped != 0 {
            st.complete = 1;
        }
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
/// Kinds whose value is a name-addr or URI, tokenized up to the end of the
/// URI's user part: the first '@', or ';' or '>' if it has none (then the
/// host is the user-visible part). The display name and user are where
/// tools show (`"sipvicious" <sip:100@...>`, `sip:nm@...`) and what an
/// enumeration varies; hosts and parameters (tags, `+sip.instance`) are
/// most of the bytes and carry no signature.
const URI_KINDS: u64 =
    1 << kind::FROM | 1 << kind::TO | 1 << kind::CONTACT | 1 << kind::REQUEST_URI;
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

/// The first letters of `NAMES` (folded), as bits `letter & 31`.
const NAME_FIRST: u32 = {
    let mut m = 0;
    let mut i = 0;
    while i < NAMES.len() {
        m |= 1 << (NAMES[i].w0 & 31);
        i += 1;
    }
    m
};

/// Whitespace allowed between a header name and its colon.
const NAME_WS_MAX: usize = 4;

/// Setting bit 5 folds ASCII letters to lower case and leaves the other
/// bytes of a header name (`-`, `:`, digits) as they are.
const FOLD: u64 = 0x2020_2020_2020_2020;

const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// Where a search for a byte ended.
enum Found {
    At(usize),
    /// Not before the end of the message.
    End,
    /// Not within `LINE_WORDS` words: a long line.
    Long(usize),
}

/// What one header line asked for: `act` is `STOP` (the header section or
/// the buffer ended), `DONE` (nothing more to do for this line) or
/// `TOKENIZE_VALUE` (tokenize `msg[value..nl]`, a value of kind `k`). Plain
/// integers set on every path: an enum's payload is undefined where it is
/// not used, and a spill of it is a read of an unset register to the
/// verifier, which refuses the program.
struct Line {
    act: u64,
    k: u64,
    value: usize,
    nl: usize,
}

const DONE: u64 = 0;
const TOKENIZE_VALUE: u64 = 2;
const _: () = assert!(STOP as u64 != DONE && STOP as u64 != TOKENIZE_VALUE);

impl Line {
    const STOP: Line = Line::only(STOP as u64);
    const DONE: Line = Line::only(DONE);

    const fn only(act: u64) -> Line {
        Line {
            act,
            k: 0,
            value: 0,
            nl: 0,
        }
    }
}

/// `scan_line`'s context: the scan's per-CPU map values.
struct Bufs {
    st: *mut Scan,
    msg: *mut Msg,
    t: *mut Tokenize,
}

/// One `bpf_loop` iteration: up to `LINES_PER_CALL` header lines, or one
/// `STEP` of a value being tokenized. A value's first step runs in the
/// iteration that found its line, any further ones in the next iterations:
/// one loop, not a loop nested in another, whose inner callback the verifier
/// would walk again for every state the outer one reaches it in.
extern "C" fn scan_line(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is `run_on`'s `Bufs`, live across the `bpf_loop`; its
    // pointers are per-CPU map values, owned by this CPU during the program.
    let (s, msg, t) = unsafe {
        let b = &*(ctx as *const Bufs);
        (&mut *b.st, &*b.msg, &mut *b.t)
    };
    if t.active == 0 {
        // Up to `LINES_PER_CALL` lines per iteration while they need no
        // tokenizing: each iteration is a call, and most header lines are
        // skipped.
        let mut got = line(s, msg);
        for _ in 1..LINES_PER_CALL {
            if got.act == DONE {
                got = line(s, msg);
            }
        }
        match got.act {
            DONE => return CONTINUE,
            TOKENIZE_VALUE => start_tokenize(t, got.value, got.nl, got.k),
            _ => return STOP,
        }
    }
    let index = t.index & (STEPS_MAX - 1);
    t.index = index + 1;
    if !step(t, msg, s, index) {
        end_tokenize(s, t);
    }
    CONTINUE
}

/// Read the next header line: find its end, recognise its name, record it
/// in `seen`, and say whether its value is to be tokenized.
#[inline(always)]
fn line(s: &mut Scan, msg: &Msg) -> Line {
    // Read from map memory, not forwarded from the line before: one
    // `scan_line` call reads up to `LINES_PER_CALL` lines, and a value the
    // compiler carried over (`continued` as 0 or 1, `pos` as `nl` or
    // `nl + 1`) would make each line start from another verifier state, so
    // every copy of this code would be walked once per path of the previous
    // one (measured: 196 k, 585 k and over 1 M instructions for 1, 2 and 3).
    let (pos, len, continued, first, last_kind) = unsafe {
        use core::ptr::{addr_of, read_volatile as r};
        (
            r(addr_of!(s.pos)) as usize,
            r(addr_of!(s.len)) as usize,
            r(addr_of!(s.continued)),
            r(addr_of!(s.first)),
            r(addr_of!(s.last_kind)),
        )
    };
    let len = len & (MSG_MASK | MSG_MAX);
    if pos + 2 > len {
        return Line::STOP;
    }
    let pos = pos & MSG_MASK;

    let (nl, long) = match find_newline(msg, pos, len) {
        Found::At(nl) => (nl, false),
        // A line longer than the search: judge its start (name, first part
        // of the value) now and skip the rest of it in the next iterations.
        Found::Long(to) => (to, true),
        Found::End => return Line::STOP,
    };
    let nl = nl & MSG_MASK;
    let continued = continued != 0;
    s.continued = long as u32;
    s.pos = if long { nl } else { nl + 1 } as u64;
    if continued {
        return Line::DONE;
    }
    let c0 = msg.byte(pos);
    if c0 == b'\r' || c0 == b'\n' {
        s.complete = 1;
        return Line::STOP;
    }

    // What the line is, and where its value starts.
    let mut k = kind::OTHER;
    let mut value = 0;
    if first != 0 {
        s.first = 0;
        // Request-URI: from after the method's SP to the next SP.
        if let Found::At(sp) = find_byte(msg, pos, nl, b' ') {
            k = kind::REQUEST_URI;
            value = sp + 1 - pos;
        }
    } else if c0 == b' ' || c0 == b'\t' {
        // A folded line (RFC 3261 §7.3.1): more of the value of the header
        // before it, tokenized as that header's (its leading blanks are
        // separators). Without this, `User-Agent:` and the scanner's name
        // on the next line would pass unseen.
        k = last_kind as u64 & 15;
        value = 1;
    } else {
        let (w0, w1) = (msg.word_at(pos) | FOLD, msg.word_at(pos + 8) | FOLD);
        // Most lines (Via aside) are headers we ignore: one test on the
        // first letter skips the name compares for them.
        let first = (w0 & 0xff) as u32;
        let maybe = (0x60..0x80).contains(&first) && (NAME_FIRST >> (first & 31)) & 1 != 0;
        for h in NAMES.iter() {
            if !maybe {
                break;
            }
            if w0 & h.m0 == h.w0 && w1 & h.m1 == h.w1 {
                k = h.kind;
                value = h.len as usize;
                break;
            }
        }
        // The name must end here: optional SP/HTAB, then ':' (RFC 3261
        // §7.3.1). Otherwise it was only a prefix ("f" of "foo:").
        // In one word, without a branch per byte: a loop over the bytes
        // gave the verifier a path per count of blanks for every name.
        if k != kind::OTHER {
            let at = value & 15;
            let after = msg.word_at(pos + at);
            // The first byte that is neither SP nor HTAB; the last byte is
            // flagged regardless so that the count stops there.
            let stop = nonzero_bytes(after ^ (ONES * b' ' as u64))
                & nonzero_bytes(after ^ (ONES * b'\t' as u64))
                | 0x80 << 56;
            let blanks = first_flagged(stop);
            if blanks <= NAME_WS_MAX && (after >> (blanks * 8)) & 0xff == b':' as u64 {
                value = at + blanks + 1;
            } else {
                k = kind::OTHER;
                value = 0;
            }
        }
    }
    // One unknown kind and offset from here on: the verifier walks the rest
    // once, not once per header name (see opaque.rs). The message's first
    // word is as unknown to the verifier as anything.
    let kv = opaque::hide(k | (value as u64) << 8, msg.w[0]);
    let k = kv & 15;
    let value = (pos + (kv >> 8) as usize) & MSG_MASK;
    s.last_kind = k as u32;
    s.seen |= SEEN_BY_KIND[k as usize];
    if (TOKENIZE_KINDS >> k) & 1 != 0 && value < nl {
        return Line {
            act: TOKENIZE_VALUE,
            k,
            value,
            nl,
        };
    }
    Line::DONE
}

/// The first '\n' at or after `from` (< `len`). As `find_byte`, but the
/// sentinel after the message (see `run_on`) stops the search, so a word
/// costs a load, the SWAR test and the loop branch.
#[inline(always)]
fn find_newline(msg: &Msg, from: usize, len: usize) -> Found {
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

const ONES: u64 = 0x0101_0101_0101_0101;
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
fn nonzero_bytes(x: u64) -> u64 {
    (((x & !HIGH).wrapping_add(!HIGH)) | x) & HIGH
}

/// Index (0-7) of the lowest byte flagged 0x80 in a SWAR zero-byte test
/// `z` (`zero_bytes`): `z & -z` is 0x80 << 8k for that byte k, and a multiply turns it
/// into k + 1 in the top byte (no loop, so no branch per byte).
#[inline(always)]
fn first_flagged(z: u64) -> usize {
    let low = z.isolate_lowest_one() >> 7;
    ((low.wrapping_mul(0x0102_0304_0506_0708) >> 56) as usize - 1) & 7
}

/// The first `byte` in `msg[from..to]`, eight bytes a step: aligned word
/// loads, a SWAR zero-byte test on `word ^ byte×8`, and the lowest flagged
/// byte (always a true match) turned into its index by a multiply, not a
/// loop, so the verifier sees one branch per word instead of one per byte.
#[inline(always)]
fn find_byte(msg: &Msg, from: usize, to: usize, byte: u8) -> Found {
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

/// Bytes of a value tokenized (User-Agent, From, To, Contact values and
/// Request-URIs are far shorter in practice).
const VALUE_MAX: usize = 128;
/// Value bytes per step (one `scan_line` iteration each after the first):
/// each `bpf_loop` iteration costs a call, so fewer, longer steps are
/// faster; the step is verified once.
const STEP: usize = 32;

/// Value steps at most (`VALUE_MAX / STEP`), a power of two.
const STEPS_MAX: u64 = (VALUE_MAX / STEP) as u64;
const _: () = assert!(STEPS_MAX.is_power_of_two());

/// Start hashing the tokens of `msg[from..to]`, a value of kind `k`, and
/// checking them against the signatures. The bytes are walked `STEP` at a
/// time by `step`, one per `scan_line` iteration, with the running state in
/// `TOKENIZE` (map memory), so the verifier checks the step once, not once
/// per byte of a value; `end_tokenize` folds the result into the scan.
#[inline(always)]
fn start_tokenize(t: &mut Tokenize, from: usize, to: usize, k: u64) {
    // Field by field with volatile stores: a struct literal of mostly zeros
    // becomes a call to a byte-at-a-time `memset` on this target, which
    // costs more than the tokenizing.
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
fn end_tokenize(s: &mut Scan, t: &mut Tokenize) {
    t.active = 0;
    // A token running to the end of the value. The same as the byte loop's
    // end of a token (`step`), but with a branch where the loop has a mask:
    // one helper for both, masked, made the verifier walk 489 k
    // instructions instead of 355 k (measured; `verified_insns`).
    if t.prev != 0 {
        check_token(s, t.h);
        if t.in_target != 0 {
            t.target = (t.target ^ t.h).wrapping_mul(FNV_PRIME);
        }
        t.last = t.h;
    }
    let k = t.k & 15;
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

/// Running state of a value's tokenizing (per CPU, see `start_tokenize`).
#[repr(C)]
pub struct Tokenize {
    /// `FNV_OFFSET`, read back from map memory so that a reset hash is an
    /// unknown value to the verifier, not a constant that splits its paths.
    offset: u64,
    from: u64,
    to: u64,
    h: u64,
    target: u64,
    prev: u64,
    /// Hash of the last complete token (CSeq's method).
    last: u64,
    alive: u64,
    in_target: u64,
    /// The value ends at SP (the Request-URI).
    stop_space: u64,
    /// The value ends with the URI's user part (see `URI_KINDS`).
    stop_uri: u64,
    /// The value's kind.
    k: u64,
    /// The next step.
    index: u64,
    /// A value is being tokenized: `scan_line` steps it before reading on.
    active: u64,
}

/// Step `index` (`STEP` bytes) of a value (`start_tokenize`); true if the
/// value goes on past it and this was not its last step.
#[inline(always)]
fn step(t: &mut Tokenize, msg: &Msg, scan: &mut Scan, index: u64) -> bool {
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
            check_token(scan, h);
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
        unsafe { *c += 1 };
    }
    if s.sig_tier == 0 || (sig.tier == TIER_BAN && s.sig_tier != TIER_BAN) {
        s.sig_tier = sig.tier;
        s.sig_id = sig.id;
    }
}
