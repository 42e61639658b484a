//! A packet cursor in the style of xdp-tools' `parsing_helpers.h`: it only
//! moves forward, and every read is bounds-checked against `data_end` right
//! before the access, which is what the verifier wants to see.

use core::{arch::asm, mem::size_of};

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

// Packet loads of 2, 4 and 8 bytes at any alignment. The BPF backend splits
// every load it cannot prove aligned (all packet fields past the 14-byte
// Ethernet header) into byte loads, shifts and ors: 46 instructions for a
// 16-byte start line, 11 for an IPv4 address. One load instruction each
// here; the verifier allows unaligned packet access on CPUs that handle it
// (x86-64, arm64). The caller has checked `p + N <= data_end`.

/// The 8 bytes at `p`, as a native-endian (little-endian) word.
///
/// # Safety
/// `p..p + 8` is inside the packet, checked against `data_end` just before.
#[inline(always)]
pub unsafe fn load_u64(p: usize) -> u64 {
    let v: u64;
    // SAFETY: the caller's bounds check; a load has no other effect.
    unsafe { asm!("{0} = *(u64 *)({1} + 0)", out(reg) v, in(reg) p, options(readonly, nostack)) };
    v
}

/// The 4 bytes at `p`, native-endian. Safety as `load_u64`, for 4 bytes.
#[inline(always)]
pub unsafe fn load_u32(p: usize) -> u32 {
    let v: u64;
    // SAFETY: as `load_u64`.
    unsafe { asm!("{0} = *(u32 *)({1} + 0)", out(reg) v, in(reg) p, options(readonly, nostack)) };
    v as u32
}

/// The big-endian (network order) u16 at `p`. Safety as `load_u64`, for 2
/// bytes.
///
/// The swap and a mask are in the `asm!`: the verifiers of Debian's 6.1 to
/// 6.18 kernels forget a register's range across `be16` (7.x keeps it), and a
/// length from it added to a packet pointer is then rejected ("math between
/// pkt pointer and register with unbounded min value"). LLVM would drop a
/// mask written in Rust (it knows a swapped u16 fits 16 bits); the `&=`
/// gives the verifier the range back.
#[inline(always)]
/// # Safety
/// As `load_u64`: `p..p + 2` lies in the packet, checked by the caller.
pub unsafe fn load_be16(p: usize) -> u16 {
    let v: u64;
    // SAFETY: as `load_u64`; the swap and mask touch only the register.
    unsafe {
        asm!(
            "{0} = *(u16 *)({1} + 0)",
            "{0} = be16 {0}",
            "{0} &= 0xffff",
            out(reg) v,
            in(reg) p,
            options(readonly, nostack)
        )
    };
    v as u16
}
