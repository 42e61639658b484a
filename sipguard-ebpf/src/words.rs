//! Fixed byte strings as little-endian words and masks, to compare the
//! first 16 bytes of a line with two loads and masks instead of a loop.

/// Up to 16 bytes as two little-endian words and the masks of the bytes
/// they hold.
#[derive(Clone, Copy)]
pub struct Prefix {
    pub w0: u64,
    pub m0: u64,
    pub w1: u64,
    pub m1: u64,
}

impl Prefix {
    /// Whether the words `w0`, `w1` (the line's first 16 bytes, folded as
    /// the prefix was) start with this prefix.
    #[inline(always)]
    pub fn starts(&self, w0: u64, w1: u64) -> bool {
        w0 & self.m0 == self.w0 && w1 & self.m1 == self.w1
    }
}

/// `s` (at most 16 bytes) as a `Prefix`.
pub const fn prefix(s: &[u8]) -> Prefix {
    assert!(s.len() <= 16);
    let mut p = Prefix {
        w0: 0,
        m0: 0,
        w1: 0,
        m1: 0,
    };
    let mut i = 0;
    while i < s.len() {
        let b = s[i] as u64;
        if i < 8 {
            p.w0 |= b << (8 * i);
            p.m0 |= 0xff << (8 * i);
        } else {
            p.w1 |= b << (8 * (i - 8));
            p.m1 |= 0xff << (8 * (i - 8));
        }
        i += 1;
    }
    p
}
