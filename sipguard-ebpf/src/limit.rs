//! GCRA rate limiting ("virtual scheduling"): a bucket is one timestamp, the
//! theoretical arrival time (TAT) of the next packet at the configured rate.
//! A packet conforms if, after it, the TAT is at most `burst_ns` ahead of now.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use sipguard_common::policy::{GlobalShare, Limit};

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

/// This CPU's `share` of a global bucket shows it spent: no lease left and
/// the shared bucket known to have no room before a later time. Read-only;
/// a share taken under another limit shows nothing.
#[inline(always)]
pub fn spent(share: &GlobalShare, now: u64, limit: &Limit) -> bool {
    share.interval_ns == limit.interval_ns
        && share.burst_ns == limit.burst_ns
        && (share.tokens == 0 || share.tokens_until_ns <= now)
        && share.dry_until_ns > now
}

/// Charge one packet to a global bucket, shared by every CPU (`tat`),
/// through this CPU's `share` of it.
///
/// A CPU takes `lease` packets from the shared bucket at once (one atomic
/// add of `lease` intervals) and spends them on its own; once the shared
/// bucket has no room, it notes when the next packet's room comes and
/// denies until then without reading the shared bucket. So a flood over
/// the budget is decided on per-CPU memory, and the shared cache line is
/// written once per lease, not once per packet.
///
/// Tolerance: every admitted packet is charged to the shared TAT, so the
/// long-run rate is exact. Over any stretch of time the CPUs together may
/// admit more than the rate and burst allow by the leases they hold (at
/// most `lease - 1` each) plus one lease per other CPU: the target here
/// (cpu "generic") has no compare-and-swap, so a CPU decides on the TAT as
/// it read it, and the other CPUs' adds in flight at that moment (one each,
/// at most a lease) land as well. An idle bucket is reset by a plain store,
/// which may overwrite adds made between its read and its store: more than
/// one lease only if that CPU stalls there (a preempted vCPU). A lease
/// unspent after one burst window is void: that CPU's share goes unused,
/// at most `lease - 1` packets.
#[inline(always)]
pub fn conform_global(
    share: &mut GlobalShare,
    tat: *mut u64,
    now: u64,
    limit: &Limit,
    lease: u64,
) -> bool {
    if share.interval_ns != limit.interval_ns || share.burst_ns != limit.burst_ns {
        // First use, or the limit changed live: what the share holds was
        // taken under another limit.
        *share = GlobalShare {
            interval_ns: limit.interval_ns,
            burst_ns: limit.burst_ns,
            ..GlobalShare::default()
        };
    }
    if share.tokens != 0 && share.tokens_until_ns > now {
        share.tokens -= 1;
        return true;
    }
    if share.dry_until_ns > now {
        return false;
    }
    // SAFETY: `tat` points into an array map value, valid for this run.
    let mut cur = unsafe { core::ptr::read_volatile(tat) };
    if cur < now {
        // An idle bucket: its credit is full. A plain store that may race
        // with another CPU's add (one extra packet, with credit to spare).
        unsafe { core::ptr::write_volatile(tat, now) };
        cur = now;
    }
    let ahead = cur - now;
    let lease = if lease == 0 { 1 } else { lease };
    let take = if ahead + lease * limit.interval_ns <= limit.burst_ns {
        lease
    } else if ahead + limit.interval_ns <= limit.burst_ns {
        1
    } else {
        // Room for one more packet once the TAT is back within the burst.
        share.dry_until_ns = cur + limit.interval_ns - limit.burst_ns;
        share.tokens = 0;
        return false;
    };
    // SAFETY: as above.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(tat, take * limit.interval_ns) };
    share.tokens = take - 1;
    share.tokens_until_ns = now + limit.burst_ns;
    true
}
