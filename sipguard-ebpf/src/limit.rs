//! GCRA rate limiting ("virtual scheduling"): a bucket is one timestamp, the
//! theoretical arrival time (TAT) of the next packet at the configured rate.
//! A packet conforms if, after it, the TAT is at most `burst_ns` ahead of now.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use sipguard_common::policy::Limit;

/// Charge one packet to a bucket owned by one source. Per-source state is
/// updated without atomics: a source's packets nearly always arrive on one
/// CPU (RSS hashes the flow), and a lost update only lets one extra packet by.
#[inline(always)]
pub fn conform(tat: &mut u64, now: u64, limit: &Limit) -> bool {
    let base = if *tat > now { *tat } else { now };
    let next = base + limit.interval_ns;
    if next - now > limit.burst_ns {
        return false;
    }
    *tat = next;
    true
}

/// Charge one packet to a bucket shared by every CPU (the global limits).
///
/// The BPF target here (cpu "generic") has no compare-and-swap, only atomic
/// add (XADD). So the TAT is advanced with an atomic add of one interval:
/// every admitted packet is accounted for exactly, and under a sustained
/// flood (TAT ahead of now) the long-run rate is exact. Two CPUs may both see
/// room for the last packet of a burst and both admit it: the burst can be
/// exceeded by at most (CPUs - 1) packets, which the TAT then repays. The
/// reset to `now` of an idle bucket is a plain store and may race with an add
/// (one extra packet), only when the bucket had spare credit anyway.
#[inline(always)]
pub fn conform_shared(tat: *mut u64, now: u64, limit: &Limit) -> bool {
    // SAFETY: `tat` points into an array map value, valid for this run.
    let mut cur = unsafe { core::ptr::read_volatile(tat) };
    if cur < now {
        unsafe { core::ptr::write_volatile(tat, now) };
        cur = now;
    }
    if cur + limit.interval_ns - now > limit.burst_ns {
        return false;
    }
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(tat, limit.interval_ns) };
    true
}
