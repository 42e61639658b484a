//! The programs' clock (see `sipguard_common::clock`): jiffies scaled to
//! CLOCK_MONOTONIC ns once calibrated, the exact clock until then.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};
use sipguard_common::{clock::FINE_TICKS, policy::Limit};

use crate::maps::CLOCK;

/// CLOCK_MONOTONIC ns, to within a tick once the controller calibrated
/// `CLOCK` (an inlined load), exact otherwise (a helper call).
#[inline(always)]
pub fn now() -> u64 {
    if let Some(c) = CLOCK.get(0)
        && c.tick_ns != 0
    {
        // SAFETY: helpers without arguments or side effects.
        return c.ns(unsafe { bpf_jiffies64() });
    }
    unsafe { bpf_ktime_get_ns() }
}

/// The time to charge `limit` at: `now` unless the limit's burst is too
/// short for a tick-resolution clock, then the exact clock.
#[inline(always)]
pub fn for_limit(limit: &Limit, now: u64) -> u64 {
    if let Some(c) = CLOCK.get(0)
        && limit.burst_ns < FINE_TICKS * c.tick_ns
    {
        // SAFETY: a helper without arguments.
        return unsafe { bpf_ktime_get_ns() };
    }
    now
}
