//! sipguard's XDP programs: parse -> classify -> policy -> verdict -> counters.
//!
//! `sipguard_xdp` is attached to the interface. Requests whose headers must
//! be scanned continue, by tail call, in `sipguard_sip`: a program the
//! verifier checks from a single starting state, so the header scan is
//! verified once and not once per parse path.
#![no_std]
#![no_main]
// Atomic add (BPF XADD) for the shared global buckets (see limit.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]
// A one-instruction `asm!` as a compiler barrier (opaque::hide).
#![feature(asm_experimental_arch)]

mod capture;
mod classify;
mod clock;
mod cursor;
mod frags;
mod learn;
mod limit;
mod maps;
mod mem;
mod opaque;
mod parse;
mod policy;
mod scan;
mod scratch;
mod stats;
mod trust;
mod words;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use sipguard_common::{
    Class, Reason, Verdict,
    capture::NO_CLASS,
    maps::{PROG_SLOT_RESP, PROG_SLOT_SIP, TableStat},
    policy::POLICY_TRUST,
};

use crate::{
    maps::{PENDING, PENDING_RESP, PROGS, PROGS_TC},
    parse::{Skip, Transport},
    policy::Step,
};

/// Count and log one decision, and turn it into an XDP action.
#[inline(always)]
fn finish(ctx: &XdpContext, verdict: Verdict, reason: Reason, class: Option<u32>) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    // Every packet is counted under exactly one reason, in whichever of the
    // two programs decides it.
    stats::record(verdict, reason, class, bytes);
    if verdict != Verdict::Pass {
        // Compiled in, but skipped unless the agent was started with
        // --log-level debug or trace (the level is a load-time constant).
        debug!(ctx, "verdict {} reason {}", verdict as u32, reason as u32);
    }
    match verdict {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass | Verdict::WouldDrop => xdp_action::XDP_PASS,
    }
}

/// `finish` for a packet whose source was parsed, offered to a capture
/// first. Each program reaches it from one place, so the capture's code
/// is there once. `class` is `NO_CLASS` for none: a plain value, as an
/// `Option` built on several paths may reach it half undefined, which the
/// verifier refuses to read ("!read_ok").
#[inline(always)]
fn finish_parsed(
    ctx: &XdpContext,
    verdict: Verdict,
    reason: Reason,
    class: u32,
    src: [u64; 2],
) -> u32 {
    let class = (class != NO_CLASS).then_some(class);
    capture::offer(ctx, verdict, reason, class, src);
    finish(ctx, verdict, reason, class)
}

#[xdp]
pub fn sipguard_xdp(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    // Packets sipguard does not parse (not SIP ports, broken headers) and
    // those it cannot (later fragments, long header chains) are counted
    // but never captured.
    let flow = match parse::parse(data, end, false) {
        Ok(flow) => flow,
        Err(Skip::Pass(reason)) => return finish(&ctx, Verdict::Pass, reason, None),
        Err(Skip::Opaque {
            reason,
            src,
            is_v6,
            frag_id,
        }) => {
            let (verdict, reason) = policy::opaque(src, is_v6, reason, frag_id);
            return finish(&ctx, verdict, reason, None);
        }
    };
    let (verdict, reason, class) = judge(&ctx, &flow);
    finish_parsed(&ctx, verdict, reason, class, flow.src)
}

/// `sipguard_xdp`'s rules for a parsed packet: verdict, reason and class
/// (`NO_CLASS` for none). Requests that need the second stage leave by tail
/// call and do not come back.
#[inline(always)]
fn judge(ctx: &XdpContext, flow: &parse::Flow) -> (Verdict, Reason, u32) {
    let (data, end) = (ctx.data(), ctx.data_end());
    let class = match flow.transport {
        Transport::Tcp => Class::Tcp,
        Transport::Udp => classify::classify(
            ctx.ctx,
            flow.payload,
            flow.payload_off,
            end,
            flow.payload_len,
        ),
    };
    // The allowlist comes first (see policy.rs). `empty`: the lists known
    // to be empty, read once for the allowlist and the blocklist.
    let empty = policy::empty_lists();
    if policy::allowlisted(flow.src, empty) {
        return (Verdict::Pass, Reason::Allowlisted, class as u32);
    }
    // One unknown class for the verifier, not 18 constants (see opaque.rs),
    // hidden behind the frame's first 8 bytes. Parse read past them, so the
    // check always holds; it is there because the verifier wants it.
    if data + 8 > end {
        return (Verdict::Pass, Reason::Malformed, NO_CLASS);
    }
    // SAFETY: checked just above.
    let class = opaque::hide(class as u64, unsafe { cursor::load_u64(data) }) as u32;
    let (verdict, reason) = match policy::front(flow, class, empty) {
        Step::Done(v, r) => {
            if flow.fragmented && v == Verdict::Drop {
                frags::forget(flow.src, flow.frag_id);
            }
            (v, r)
        }
        Step::Next {
            src,
            bucket,
            deep,
            now,
        } => {
            if flow.fragmented {
                frags::hand_over(flow.src, flow.frag_id);
            }
            if let Some(p) = PENDING.get_ptr_mut(0) {
                // SAFETY: per-CPU map value, owned by this CPU during the program.
                unsafe {
                    *p = maps::Pending {
                        src,
                        class,
                        bucket,
                        deep: deep as u32,
                        fragmented: flow.fragmented as u32,
                        _pad: 0,
                        payload_off: flow.payload_off as u64,
                        payload_len: flow.payload_len as u64,
                        now,
                    };
                    // Does not return on success.
                    PROGS.tail_call(ctx, PROG_SLOT_SIP);
                }
            }
            // The loader always installs the second stage; if it is missing
            // the packet passes rather than being judged half-way.
            (Verdict::Pass, Reason::Accepted)
        }
    };
    (verdict, reason, class)
}

/// Second stage for UDP SIP requests (see the crate doc), entered only by
/// tail call from `sipguard_xdp`, which left the request in `PENDING`.
#[xdp]
pub fn sipguard_sip(ctx: XdpContext) -> u32 {
    let (Some(p), Some(policy)) = (PENDING.get(0), maps::POLICY.get(0)) else {
        return finish(&ctx, Verdict::Pass, Reason::Accepted, None);
    };
    let p = *p;
    let (verdict, reason) = policy::second(ctx.ctx, policy, &p);
    if p.fragmented != 0 && verdict == Verdict::Drop {
        frags::forget_handed_over();
    }
    // The source as the first stage keyed it (an IPv6 address grouped by
    // `ipv6_prefix`).
    finish_parsed(&ctx, verdict, reason, p.class, p.src.words())
}

/// TC egress on the protected interface: the server's responses. Never
/// changes what the server sends (always `TC_ACT_OK`); it only learns from
/// the relevant answers (2xx, 401/403/407, 404), which continue by tail call
/// in `sipguard_resp`.
#[classifier]
pub fn sipguard_egress(ctx: TcContext) -> i32 {
    egress(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn egress(ctx: &TcContext) {
    let Some(policy) = maps::POLICY.get(0) else {
        return;
    };
    if policy.flags & POLICY_TRUST == 0 && policy.auth_fail_after == 0 {
        return;
    }
    let end = ctx.data_end();
    let Ok(flow) = parse::parse(ctx.data(), end, true) else {
        return;
    };
    if flow.transport != Transport::Udp {
        return;
    }
    // The status line is read 16 bytes at a time: a payload shorter than that
    // (by its UDP or IP length) is not a response worth learning from.
    if flow.payload_len < 16 {
        return;
    }
    let Some(status) = classify::status_code(flow.payload, end) else {
        return;
    };
    stats::table(TableStat::ResponseSeen);
    if !learn::worth_learning(status) {
        return;
    }
    if let Some(p) = PENDING_RESP.get_ptr_mut(0) {
        // SAFETY: per-CPU map value, owned by this CPU during the program.
        unsafe {
            *p = maps::PendingResp {
                client: policy::group(&flow, policy),
                status,
                _pad: 0,
                payload_off: flow.payload_off as u64,
                payload_len: flow.payload_len as u64,
            };
            PROGS_TC.tail_call(ctx, PROG_SLOT_RESP);
        }
    }
}

/// Second stage of the egress path: read the response's CSeq method and
/// learn trust or authentication failures from it (learn.rs).
#[classifier]
pub fn sipguard_resp(ctx: TcContext) -> i32 {
    if let (Some(p), Some(policy)) = (PENDING_RESP.get(0), maps::POLICY.get(0)) {
        let p = *p;
        if let Some(sc) = scan::run_skb(ctx.skb.skb, p.payload_off, p.payload_off + p.payload_len) {
            let now = clock::now();
            learn::learn(policy, &p.client, p.status, sc.cseq_method, now);
        }
    }
    TC_ACT_OK
}

/// Does nothing: `cargo xtask bench` times it to show what BPF_PROG_TEST_RUN
/// itself costs per packet on the machine, the floor under every figure.
/// Never attached.
#[xdp]
pub fn sipguard_bench_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Reads jiffies and the exact clock back to back into `CLOCK_SAMPLE`: the
/// controller runs it (BPF_PROG_TEST_RUN) to calibrate `CLOCK`. Never
/// attached.
#[xdp]
pub fn sipguard_clock(_ctx: XdpContext) -> u32 {
    if let Some(s) = maps::CLOCK_SAMPLE.get_ptr_mut(0) {
        // SAFETY: a valid map value pointer; helpers without side effects.
        unsafe {
            (*s).jiffies = bpf_jiffies64();
            (*s).mono_ns = bpf_ktime_get_ns();
        }
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
