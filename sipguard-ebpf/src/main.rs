//! sipguard's XDP program: parse -> classify -> policy -> verdict -> counters.
#![no_std]
#![no_main]
// Atomic add (BPF XADD) for the shared global buckets (see limit.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod classify;
mod cursor;
mod limit;
mod maps;
mod parse;
mod policy;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use sipguard_common::{Class, Reason, Verdict};

use crate::parse::Transport;

#[xdp]
pub fn sipguard_xdp(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (verdict, reason, class) = inspect(&ctx);
    // The one exit: every packet is counted under exactly one reason.
    stats::record(verdict, reason, class, bytes);
    if verdict != Verdict::Pass {
        // Compiled in, but skipped unless the agent was started with
        // --log-level debug or trace (the level is a load-time constant).
        debug!(&ctx, "verdict {} reason {}", verdict as u32, reason as u32);
    }
    match verdict {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass | Verdict::WouldDrop => xdp_action::XDP_PASS,
    }
}

/// Return `v` as a value the verifier cannot see through. Without it every
/// class (and every parse path) reaches the policy code as a distinct
/// constant and the verifier walks the policy once per class, which blows its
/// 1M-instruction budget. Through a map word the class is one unknown scalar
/// and the policy is verified once.
#[inline(always)]
fn opaque(v: u32) -> u32 {
    match maps::SCRATCH.get_ptr_mut(0) {
        Some(p) => unsafe {
            core::ptr::write_volatile(p, v);
            core::ptr::read_volatile(p)
        },
        None => Class::NotSip as u32,
    }
}

#[inline(always)]
fn inspect(ctx: &XdpContext) -> (Verdict, Reason, Option<u32>) {
    let end = ctx.data_end();
    let flow = match parse::parse(ctx.data(), end) {
        Ok(flow) => flow,
        Err(reason) => return (Verdict::Pass, reason, None),
    };
    let class = match flow.transport {
        Transport::Tcp => Class::Tcp,
        Transport::Udp => classify::classify(flow.payload, end, flow.payload_len),
    };
    let class = opaque(class as u32);
    let (verdict, reason) = policy::evaluate(&flow, class);
    (verdict, reason, Some(class))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
