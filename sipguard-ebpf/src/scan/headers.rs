//! One header line: where it ends, which header it is (a case-folded word
//! compare against the names we act on), and what of its value to tokenize.

use crate::{
    opaque,
    scratch::{HDR_CALL_ID, HDR_CSEQ, HDR_FROM, HDR_TO, HDR_VIA, MSG_MASK, MSG_MAX, Msg, Scan},
    words::{Prefix, prefix},
};

use super::search::{Found, ONES, find_byte, find_newline, first_flagged, nonzero_bytes};

/// Line kinds, as small integers so the per-kind behaviour is table
/// lookups and shifts on one (laundered) value, not a branch per kind.
pub mod kind {
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
    /// Kinds fit in four bits: a kind read back from map memory or out of
    /// the laundered word is masked with this before it indexes a table.
    pub const MASK: u64 = 15;
    const _: () = assert!(REQUEST_URI <= MASK);
}

/// Per kind: the `HDR_*` bit it sets.
const SEEN_BY_KIND: [u32; kind::MASK as usize + 1] = {
    let mut t = [0u32; kind::MASK as usize + 1];
    t[kind::FROM as usize] = HDR_FROM;
    t[kind::TO as usize] = HDR_TO;
    t[kind::VIA as usize] = HDR_VIA;
    t[kind::CALL_ID as usize] = HDR_CALL_ID;
    t[kind::CSEQ as usize] = HDR_CSEQ;
    t
};
/// Kinds whose value is tokenized against the signatures (in a request;
/// a response's CSeq only, see `scan_line`).
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
pub const URI_KINDS: u64 =
    1 << kind::FROM | 1 << kind::TO | 1 << kind::CONTACT | 1 << kind::REQUEST_URI;
/// Kinds that feed the enumeration target hash.
pub const TARGET_KINDS: u64 = 1 << kind::TO | 1 << kind::REQUEST_URI;

/// A header name as a case-folded prefix of the first 16 bytes of a line.
struct Name {
    p: Prefix,
    len: u64,
    kind: u64,
}

const fn name(s: &[u8], kind: u64) -> Name {
    Name {
        p: prefix(s),
        len: s.len() as u64,
        kind,
    }
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

/// The one name a response is read for (see `scan_line`): its scan
/// compares no other.
const RESP_NAMES: [Name; 1] = [name(b"cseq", kind::CSEQ)];

/// A folded letter's index in `NAME_FIRST`.
const LETTER: u64 = 31;
/// Bytes that may be a folded letter (`FOLD` maps A-Z onto a-z, 0x61-0x7a).
const FOLDED_LETTERS: core::ops::Range<u32> = 0x60..0x80;
/// The first letters of `NAMES` (folded), as bits `letter & LETTER`.
const NAME_FIRST: u32 = first_letters(&NAMES);
const RESP_NAME_FIRST: u32 = first_letters(&RESP_NAMES);

const fn first_letters(names: &[Name]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < names.len() {
        m |= 1 << (names[i].p.w0 & LETTER);
        i += 1;
    }
    m
}

/// Whitespace allowed between a header name and its colon.
const NAME_WS_MAX: usize = 4;
/// A name's length as an offset into the 16 bytes compared, masked for the
/// verifier before it reaches a load.
const NAME_LEN_MASK: usize = 15;
const _: () = {
    let mut i = 0;
    while i < NAMES.len() {
        assert!(NAMES[i].len as usize <= NAME_LEN_MASK);
        i += 1;
    }
};

/// Setting bit 5 folds ASCII letters to lower case and leaves the other
/// bytes of a header name (`-`, `:`, digits) as they are.
const FOLD: u64 = 0x2020_2020_2020_2020;

/// What one header line asked for: `act` is `END` (the header section or
/// the buffer ended), `DONE` (nothing more to do for this line) or
/// `TOKENIZE_VALUE` (tokenize `msg[value..nl]`, a value of kind `k`). Plain
/// integers set on every path: an enum's payload is undefined where it is
/// not used, and a spill of it is a read of an unset register to the
/// verifier, which refuses the program.
pub struct Line {
    pub act: u64,
    pub k: u64,
    pub value: usize,
    pub nl: usize,
}

pub const DONE: u64 = 0;
pub const END: u64 = 1;
pub const TOKENIZE_VALUE: u64 = 2;

impl Line {
    const END: Line = Line::only(END);
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

/// Read the next header line: find its end, recognise its name, record it
/// in `seen`, and say whether its value is to be tokenized.
#[inline(always)]
pub fn line<const RESP: bool>(s: &mut Scan, msg: &Msg) -> Line {
    // Read from map memory, not forwarded from the line before: one
    // `scan_line` call reads up to `LINES_PER_CALL` lines, and a value the
    // compiler carried over (`continued` as 0 or 1, `pos` as `nl` or
    // `nl + 1`) would make each line start from another verifier state, so
    // every copy of this code would be walked once per path of the previous
    // one: with three lines a call that is over the 1 M instruction budget.
    // SAFETY: `s` is a per-CPU map value owned by this CPU during the run.
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
        return Line::END;
    }
    let pos = pos & MSG_MASK;

    let (nl, long) = match find_newline(msg, pos, len) {
        Found::At(nl) => (nl, false),
        // A line longer than the search: judge its start (name, first part
        // of the value) now and skip the rest of it in the next iterations.
        Found::Long(to) => (to, true),
        Found::End => return Line::END,
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
        return Line::END;
    }

    // What the line is, and where its value starts.
    let mut k = kind::OTHER;
    let mut value = 0;
    if first != 0 {
        s.first = 0;
        // Request-URI: from after the method's SP to the next SP (a
        // response's status line has none to read).
        if !RESP && let Found::At(sp) = find_byte(msg, pos, nl, b' ') {
            k = kind::REQUEST_URI;
            value = sp + 1 - pos;
        }
    } else if c0 == b' ' || c0 == b'\t' {
        // A folded line (RFC 3261 §7.3.1): more of the value of the header
        // before it, tokenized as that header's (its leading blanks are
        // separators). Without this, `User-Agent:` and the scanner's name
        // on the next line would pass unseen.
        k = last_kind as u64 & kind::MASK;
        value = 1;
    } else {
        let (w0, w1) = (msg.word_at(pos) | FOLD, msg.word_at(pos + 8) | FOLD);
        // Most lines (Via aside) are headers we ignore: one test on the
        // first letter skips the name compares for them.
        let (names, name_first) = if RESP {
            (&RESP_NAMES[..], RESP_NAME_FIRST)
        } else {
            (&NAMES[..], NAME_FIRST)
        };
        let first = (w0 & 0xff) as u32;
        let maybe =
            FOLDED_LETTERS.contains(&first) && (name_first >> (first & LETTER as u32)) & 1 != 0;
        for h in names.iter() {
            if !maybe {
                break;
            }
            if h.p.starts(w0, w1) {
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
            let at = value & NAME_LEN_MASK;
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
    let k = kv & kind::MASK;
    let value = (pos + (kv >> 8) as usize) & MSG_MASK;
    s.last_kind = k as u32;
    s.seen |= SEEN_BY_KIND[k as usize];
    let tokenized = if RESP {
        1 << kind::CSEQ
    } else {
        TOKENIZE_KINDS
    };
    if (tokenized >> k) & 1 != 0 && value < nl {
        return Line {
            act: TOKENIZE_VALUE,
            k,
            value,
            nl,
        };
    }
    Line::DONE
}
