//! A packet cursor in the style of xdp-tools' `parsing_helpers.h`: it only
//! moves forward, and every read is bounds-checked against `data_end` right
//! before the access, which is what the verifier wants to see.

use core::mem::size_of;

pub struct Cursor {
    pub pos: usize,
    pub end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(data: usize, end: usize) -> Self {
        Self { pos: data, end }
    }

    /// A pointer to a `T` at the cursor, advancing past it; `None` when the
    /// packet is too short.
    #[inline(always)]
    pub fn take<T>(&mut self) -> Option<*const T> {
        let at = self.pos;
        if at + size_of::<T>() > self.end {
            return None;
        }
        self.pos = at + size_of::<T>();
        Some(at as *const T)
    }

    /// Skip `len` bytes (an options area or extension header body). The
    /// caller bounds `len`; the next `take` checks the packet is long enough.
    #[inline(always)]
    pub fn skip(&mut self, len: usize) -> Option<()> {
        if self.pos + len > self.end {
            return None;
        }
        self.pos += len;
        Some(())
    }

    /// Bytes left between the cursor and the end of the packet.
    #[inline(always)]
    pub fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }
}
