//! Every map the XDP program uses. Sizes come from `sipguard_common::maps`
//! so the controller and the program cannot disagree.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use sipguard_common::{
    Counter, Policy,
    class::CLASS_SLOTS,
    maps::{SIP_PORTS_LEN, VERDICT_SLOTS},
    verdict::REASON_SLOTS,
};

/// Destination port -> `PORT_UDP | PORT_TCP` bits. An array indexed by port
/// costs one bounds check instead of a hash; 64 Ki one-byte entries.
#[map]
pub static SIP_PORTS: Array<u8> = Array::with_max_entries(SIP_PORTS_LEN, 0);

/// The single live policy record (index 0), rewritten by the controller.
#[map]
pub static POLICY: Array<Policy> = Array::with_max_entries(1, 0);

/// Packets and bytes per (verdict, reason): index `verdict * REASON_SLOTS +
/// reason`. Per-CPU so the hot path never contends; userspace sums CPUs.
#[map]
pub static REASON_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(VERDICT_SLOTS * REASON_SLOTS, 0);

/// Packets and bytes per (verdict, class) for traffic to SIP ports: index
/// `verdict * CLASS_SLOTS + class`.
#[map]
pub static CLASS_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(VERDICT_SLOTS * CLASS_SLOTS, 0);
