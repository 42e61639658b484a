//! The programs' clock. `bpf_ktime_get_ns` is a helper call that costs tens
//! of ns per packet; `bpf_jiffies64` is inlined by the JIT to one load. The
//! controller measures once, at load, how jiffies map onto CLOCK_MONOTONIC
//! (`Clock`) so the programs can keep every timestamp in CLOCK_MONOTONIC ns
//! at the price of one tick of resolution (4 ms at HZ=250), which bans,
//! lists, trust and windows of seconds do not notice. Rate limits whose
//! burst spans less than `FINE_TICKS` ticks read the exact clock instead.

/// `CLOCK[0]`, written by the controller after loading the object.
/// `tick_ns == 0` (not calibrated) makes the programs read the exact clock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Nanoseconds per jiffy (1e9 / CONFIG_HZ).
    pub tick_ns: u64,
    /// CLOCK_MONOTONIC ns = jiffies * tick_ns + offset_ns (wrapping).
    pub offset_ns: u64,
}

impl Clock {
    /// CLOCK_MONOTONIC ns at `jiffies`, within half a tick.
    #[inline(always)]
    pub const fn ns(&self, jiffies: u64) -> u64 {
        jiffies
            .wrapping_mul(self.tick_ns)
            .wrapping_add(self.offset_ns)
    }
}

/// A GCRA limit needs a clock finer than its burst: with a coarse clock,
/// credit the bucket could have earned within a tick is lost when the burst
/// is shorter than a tick. Limits with `burst_ns < FINE_TICKS * tick_ns`
/// use the exact clock.
pub const FINE_TICKS: u64 = 2;

/// `CLOCK_SAMPLE[0]`: both clocks, read back to back by `sipguard_clock`
/// (run by the controller with BPF_PROG_TEST_RUN while calibrating).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSample {
    pub jiffies: u64,
    pub mono_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] plain integers, no padding: any bytes are a value.
    unsafe impl aya::Pod for super::Clock {}
    unsafe impl aya::Pod for super::ClockSample {}
}
