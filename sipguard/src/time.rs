//! The controller's reading of CLOCK_MONOTONIC, the timebase of every
//! expiry and timestamp in the maps.

/// CLOCK_MONOTONIC in ns: the programs' timebase too (their calibrated
/// jiffies clock, see clock.rs), so expiries written by either side compare
/// correctly, to within a tick.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
