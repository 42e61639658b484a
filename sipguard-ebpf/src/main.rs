//! sipguard's XDP program: parse -> classify -> policy -> verdict -> counters.
#![no_std]
#![no_main]

mod classify;
mod cursor;
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

#[inline(always)]
fn inspect(ctx: &XdpContext) -> (Verdict, Reason, Option<Class>) {
    let end = ctx.data_end();
    let flow = match parse::parse(ctx.data(), end) {
        Ok(flow) => flow,
        Err(reason) => return (Verdict::Pass, reason, None),
    };
    let class = match flow.transport {
        Transport::Tcp => Class::Tcp,
        Transport::Udp => classify::classify(flow.payload, end, flow.payload_len),
    };
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
