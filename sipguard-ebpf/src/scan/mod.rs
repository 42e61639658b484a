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

mod headers;
mod search;
mod tokens;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_loop, bpf_skb_load_bytes, bpf_xdp_load_bytes},
};

pub use crate::scratch::{HDR_MANDATORY, Scan};
use crate::{
    maps::{SCAN_MSG, SCAN_STATE, TOKENIZE},
    scratch::{MSG_MASK, MSG_MAX, Msg, Tokenize},
};
use headers::{DONE, TOKENIZE_VALUE, kind, line};
use tokens::{STEPS_MAX, end_tokenize, start_tokenize, step};

/// `scan_line` calls (each one to `LINES_PER_CALL` header lines or pieces of
/// long lines, or one `STEP` of a value) before giving up; a SIP message has
/// 10-30 lines, and value steps past the first add at most `MSG_MAX / STEP`.
const MAX_LINES: u32 = 256;
/// Header lines one `scan_line` call may walk when they need no
/// tokenizing: fewer calls, while the verifier checks each copy of the
/// line code. A response's scan walks one: it runs with cold caches, where
/// each copy's machine code costs more to fetch than a call.
const LINES_PER_CALL: usize = 3;
const RESP_LINES_PER_CALL: usize = 1;

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

/// A response the server sends, on a socket buffer (the TC egress
/// program): read for its CSeq method only (`scan_line::<true>`).
#[inline(always)]
pub fn run_skb(skb: *mut __sk_buff, start: u64, limit: u64) -> Option<Scan> {
    run_on::<true>(skb as *mut c_void, start, limit)
}

/// `SKB` picks the load helper at compile time: a helper the program type
/// does not have is refused by the verifier even on a dead branch. Only
/// the egress program reads socket buffers, and only responses, so `SKB`
/// also picks the response scan.
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
    // SAFETY: `bpf_loop` calls `scan_line` with `ctx`, which outlives the
    // call; `st` is a per-CPU map value owned by this CPU during the run.
    unsafe {
        bpf_loop(
            MAX_LINES,
            scan_line::<SKB> as *mut c_void,
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

const CONTINUE: i64 = 0;
const STOP: i64 = 1;

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
///
/// `RESP`: a response the server sends (the egress program), read only for
/// its CSeq method: no other value is tokenized, no token is checked
/// against the signatures (the server's own words are no scanner's), and
/// the scan stops after CSeq. A separate instance, so the egress program
/// carries and runs only that much code: it runs at the server's rate of
/// responses, mostly with cold caches.
extern "C" fn scan_line<const RESP: bool>(_index: u64, ctx: *mut c_void) -> i64 {
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
        let per_call = if RESP {
            RESP_LINES_PER_CALL
        } else {
            LINES_PER_CALL
        };
        let mut got = line::<RESP>(s, msg);
        for _ in 1..per_call {
            if got.act == DONE {
                got = line::<RESP>(s, msg);
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
    if !step::<RESP>(t, msg, s, index) {
        end_tokenize::<RESP>(s, t);
        if RESP {
            // The one value a response is read for (CSeq) is done.
            return STOP;
        }
    }
    CONTINUE
}
