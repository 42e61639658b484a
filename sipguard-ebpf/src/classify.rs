//! SIP start-line classification from the first 16 bytes of a UDP payload,
//! compared a word at a time (two u64 loads and masks per method) rather than
//! byte by byte: cheap, and small enough for the verifier.

use core::ffi::c_void;

use aya_ebpf::{bindings::xdp_md, helpers::generated::bpf_xdp_load_bytes};
use sipguard_common::Class;

use crate::{
    cursor::load_u64,
    words::{Prefix, prefix},
};

/// Bytes of the start line we look at: enough for "SUBSCRIBE " and for
/// "SIP/2.0 NNN ".
const PEEK: usize = 16;

/// Method tokens followed by SP (RFC 3261 §7.1; methods are case-sensitive).
/// Ordered by how common they are on a busy server.
const METHODS: [(Prefix, Class); 14] = [
    (prefix(b"INVITE "), Class::Invite),
    (prefix(b"REGISTER "), Class::Register),
    (prefix(b"OPTIONS "), Class::Options),
    (prefix(b"ACK "), Class::Ack),
    (prefix(b"BYE "), Class::Bye),
    (prefix(b"CANCEL "), Class::Cancel),
    (prefix(b"SUBSCRIBE "), Class::Subscribe),
    (prefix(b"NOTIFY "), Class::Notify),
    (prefix(b"MESSAGE "), Class::Message),
    (prefix(b"INFO "), Class::Info),
    (prefix(b"PRACK "), Class::Prack),
    (prefix(b"UPDATE "), Class::Update),
    (prefix(b"REFER "), Class::Refer),
    (prefix(b"PUBLISH "), Class::Publish),
];

/// "SIP/2.0 " as a word, lower-cased: RFC 3261 §7.1 makes the version
/// case-insensitive, so the first three bytes are folded before comparing.
const SIP_VERSION: Prefix = prefix(b"sip/2.0 ");
/// Sets bit 5 of bytes 0-2 ("SIP" -> "sip"; '/' '2' '.' untouched).
const VERSION_FOLD: u64 = 0x0020_2020;

/// Classify the UDP payload of `len` bytes at `at` (`off` from the frame
/// start). `end` is the end of the frame, checked before the load.
#[inline(always)]
pub fn classify(xdp: *mut xdp_md, at: usize, off: usize, end: usize, len: usize) -> Class {
    let (mut w0, mut w1) = if at + PEEK <= end {
        // SAFETY: checked just above.
        unsafe { (load_u64(at), load_u64(at + 8)) }
    } else {
        // A frame ending within 16 bytes of the payload start: one helper
        // copy instead of a checked loop per byte, whose paths (one per
        // length) the verifier would walk through everything after.
        // Not `[0u64; 2]`: see mem.rs.
        let mut slot = core::mem::MaybeUninit::<[u64; 2]>::uninit();
        let buf = crate::mem::zero_init(&mut slot);
        let p = buf.as_mut_ptr();
        let n = end.saturating_sub(at) & (PEEK - 1);
        if n > 0 {
            let n = crate::opaque::len_1_to::<{ PEEK as u64 }>(n as u64);
            // SAFETY: `buf` holds PEEK bytes, n <= PEEK.
            unsafe {
                bpf_xdp_load_bytes(xdp, off as u32, p as *mut c_void, n as u32);
            }
        }
        (buf[0], buf[1])
    };
    // Bytes past the UDP length (Ethernet padding) are not payload: mask
    // them off a word at a time.
    if len < 8 {
        w0 &= (1u64 << (8 * len)) - 1;
        w1 = 0;
    } else if len < PEEK {
        w1 &= (1u64 << (8 * (len - 8))) - 1;
    }
    if is_keepalive(w0, len) {
        return Class::Keepalive;
    }
    classify_words(w0, w1)
}

/// RFC 5626 keep-alives: a double-CRLF ping or a CRLF pong alone in the
/// datagram, or a STUN binding request (RFC 8489: type 0x0001, the magic
/// cookie, a length that accounts for the rest of the datagram).
#[inline(always)]
fn is_keepalive(w0: u64, len: usize) -> bool {
    if len == 4 {
        return w0 & 0xffff_ffff == CRLF_CRLF;
    }
    if len == 2 {
        return w0 & 0xffff == CRLF_CRLF & 0xffff;
    }
    // Bytes 2-3: the attributes' length, big-endian.
    let stun_len = ((w0 >> 8) & 0xff00) | ((w0 >> 24) & 0xff);
    len >= STUN_HEADER
        && w0 & 0xffff == STUN_BINDING_REQUEST
        && w0 >> 32 == STUN_MAGIC_COOKIE
        && stun_len as usize == len - STUN_HEADER
}

/// "\r\n\r\n" as a little-endian word.
const CRLF_CRLF: u64 = 0x0a0d_0a0d;
/// STUN's 20-byte header; its first two bytes 0x00 0x01 (a binding
/// request) and bytes 4-7 the magic cookie 0x2112A442, little-endian.
const STUN_HEADER: usize = 20;
const STUN_BINDING_REQUEST: u64 = 0x0100;
const STUN_MAGIC_COOKIE: u64 = 0x42a4_1221;

/// Byte `i` (0..16) of the two words.
#[inline(always)]
fn byte(w0: u64, w1: u64, i: usize) -> u8 {
    if i < 8 {
        (w0 >> (8 * i)) as u8
    } else {
        (w1 >> (8 * (i - 8))) as u8
    }
}

#[inline(always)]
fn classify_words(w0: u64, w1: u64) -> Class {
    if w0 | VERSION_FOLD == SIP_VERSION.w0 {
        return if is_status_code(w0, w1) {
            Class::Response
        } else {
            Class::NotSip
        };
    }
    for (p, class) in METHODS.iter() {
        if p.starts(w0, w1) {
            return *class;
        }
    }
    if is_extension_request(w0, w1) {
        Class::OtherRequest
    } else {
        Class::NotSip
    }
}

/// "NNN " after "SIP/2.0 ", with N a digit and the first one 1-6.
#[inline(always)]
fn is_status_code(w0: u64, w1: u64) -> bool {
    (b'1'..=b'6').contains(&byte(w0, w1, 8))
        && byte(w0, w1, 9).is_ascii_digit()
        && byte(w0, w1, 10).is_ascii_digit()
        && byte(w0, w1, 11) == b' '
}

/// An unnamed method: 1-10 upper-case letters, SP, then a `sip:`, `sips:` or
/// `tel:` Request-URI (scheme compared case-insensitively).
#[inline(always)]
fn is_extension_request(w0: u64, w1: u64) -> bool {
    let mut buf = [0u8; PEEK];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte(w0, w1, i);
    }
    let mut sp = 0;
    for (i, b) in buf.iter().enumerate().take(11) {
        if *b == b' ' {
            sp = i;
            break;
        }
        if !b.is_ascii_uppercase() {
            return false;
        }
    }
    if sp == 0 {
        return false;
    }
    let scheme = |i: usize| buf[(sp + 1 + i) & (PEEK - 1)] | 0x20;
    let sip = scheme(0) == b's' && scheme(1) == b'i' && scheme(2) == b'p';
    let at = |i: usize| buf[(sp + 1 + i) & (PEEK - 1)];
    let sip_uri = sip && (at(3) == b':' || (scheme(3) == b's' && at(4) == b':'));
    let tel = scheme(0) == b't' && scheme(1) == b'e' && scheme(2) == b'l' && at(3) == b':';
    sip_uri || tel
}

/// The status code of a SIP response starting at `at` ("SIP/2.0 NNN "), or
/// `None` if the payload is not one. For the egress program, which only
/// needs responses.
#[inline(always)]
pub fn status_code(at: usize, end: usize) -> Option<u32> {
    if at + PEEK > end {
        return None;
    }
    // SAFETY: checked just above.
    let w = unsafe { [load_u64(at), load_u64(at + 8)] };
    if w[0] | VERSION_FOLD != SIP_VERSION.w0 || !is_status_code(w[0], w[1]) {
        return None;
    }
    let d = |i: usize| (byte(w[0], w[1], i) - b'0') as u32;
    Some(d(8) * 100 + d(9) * 10 + d(10))
}
