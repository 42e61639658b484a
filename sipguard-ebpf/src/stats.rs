//! Counting: every exit of the program goes through `record`, so every packet
//! lands in exactly one (verdict, reason) counter.

use sipguard_common::{
    Counter, Reason, Verdict, class::CLASS_SLOTS, maps::TableStat, verdict::REASON_SLOTS,
};

use crate::maps::{CLASS_STATS, REASON_STATS, TABLE_STATS};

#[inline(always)]
fn bump(counter: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = counter {
        // SAFETY: a per-CPU map value: no other CPU writes it, plain adds
        // are safe.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Record the program's decision for one packet of `bytes` bytes.
#[inline(always)]
pub fn record(verdict: Verdict, reason: Reason, class: Option<u32>, bytes: u64) {
    let v = verdict as u32;
    bump(
        REASON_STATS.get_ptr_mut(v * REASON_SLOTS + reason as u32),
        bytes,
    );
    if let Some(class) = class {
        bump(CLASS_STATS.get_ptr_mut(v * CLASS_SLOTS + class), bytes);
    }
}

/// Count one table event.
#[inline(always)]
pub fn table(stat: TableStat) {
    if let Some(c) = TABLE_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU map value (as in `bump`).
        unsafe { *c += 1 };
    }
}
