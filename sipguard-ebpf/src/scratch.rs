//! The header scan's per-CPU working memory: the types of the `SCAN_MSG`,
//! `SCAN_STATE` and `TOKENIZE` map values (`maps.rs`), apart from the scan's
//! code so that the map declarations and the scan each depend on them and
//! not on each other.

/// Bytes of a message scanned: a UDP datagram on a 1500-byte MTU, and the
/// header section of any sane one on a jumbo MTU. A longer message is
/// scanned up to here and not judged truncated.
pub const MSG_MAX: usize = 4096;
pub const MSG_MASK: usize = MSG_MAX - 1;
pub const WORD_MASK: usize = MSG_MAX / 8 - 1;
/// Words of one line searched per iteration: a longer line is judged by its
/// start and skipped in the following iterations.
pub const LINE_WORDS: usize = 32;
/// The buffer, in words so the line walk loads whole aligned words. Spare
/// words: the newline sentinel after a full buffer, and a line search from
/// any masked word index reads its `LINE_WORDS` words without a mask each.
pub const MSG_WORDS: usize = MSG_MAX / 8 + LINE_WORDS;

#[repr(C)]
pub struct Msg {
    pub(crate) w: [u64; MSG_WORDS],
}

impl Msg {
    /// Byte `i` (masked into the message).
    #[inline(always)]
    pub fn byte(&self, i: usize) -> u8 {
        // SAFETY: i & MSG_MASK < MSG_MAX <= size_of::<Msg>().
        unsafe { *(self as *const Msg as *const u8).add(i & MSG_MASK) }
    }

    /// The eight bytes from `i` as a little-endian word (from two aligned
    /// loads: a load at an unaligned offset would be split into byte loads).
    #[inline(always)]
    pub fn word_at(&self, i: usize) -> u64 {
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
    pub(crate) pos: u64,
    /// Bytes of the message in the buffer.
    pub(crate) len: u64,
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
    pub(crate) first: u32,
    /// The next line piece continues a long line (not a header start).
    pub(crate) continued: u32,
    /// The message was longer than the buffer.
    pub(crate) capped: u32,
    /// The kind of the last header line: a folded line (one starting with
    /// SP or HTAB) continues its value.
    pub(crate) last_kind: u32,
    /// FNV-1a of the CSeq method (lower-cased), e.g. to tell a 200 to
    /// REGISTER from a 200 to OPTIONS.
    pub cseq_method: u64,
}

/// Running state of a value's tokenizing (per CPU, see `start_tokenize`).
#[repr(C)]
pub struct Tokenize {
    /// `FNV_OFFSET`, read back from map memory so that a reset hash is an
    /// unknown value to the verifier, not a constant that splits its paths.
    pub(crate) offset: u64,
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) h: u64,
    pub(crate) target: u64,
    pub(crate) prev: u64,
    /// Hash of the last complete token (CSeq's method).
    pub(crate) last: u64,
    pub(crate) alive: u64,
    pub(crate) in_target: u64,
    /// The value ends at SP (the Request-URI).
    pub(crate) stop_space: u64,
    /// The value ends with the URI's user part (see `URI_KINDS`).
    pub(crate) stop_uri: u64,
    /// The value's kind.
    pub(crate) k: u64,
    /// The next step.
    pub(crate) index: u64,
    /// A value is being tokenized: `scan_line` steps it before reading on.
    pub(crate) active: u64,
}
