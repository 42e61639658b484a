//! `sipguard capture`: copy the packets a capture selects (by verdict,
//! reason and source) into `CAPTURE_RING`, at most at its rate. Called once
//! per packet, from each program's one exit; with no capture running it
//! costs one array read and a compare.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    programs::XdpContext,
};
use sipguard_common::{
    Reason, Verdict,
    capture::{CAPTURE_SNAP_MAX, CAPTURE_SOURCES, CaptureConf, CaptureRecord, NO_CLASS},
};

use crate::{
    clock, limit,
    maps::{CAPTURE, CAPTURE_RING},
};

/// Offer one decided packet to the capture, if one runs. `src`: the
/// source as the parser read it (words, IPv4-mapped).
#[inline(always)]
pub fn offer(
    ctx: &XdpContext,
    verdict: Verdict,
    reason: Reason,
    class: Option<u32>,
    src: [u64; 2],
) {
    let Some(conf) = CAPTURE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid map value pointer; the command writes the entry
    // whole, and a racing change only mis-selects a packet or two.
    let conf = unsafe { &mut *conf };
    if conf.until_ns == 0 {
        return;
    }
    let now = clock::now();
    if conf.until_ns <= now
        || conf.verdicts & (1 << (verdict as u32 & 31)) == 0
        || conf.reasons & (1 << (reason as u32 & 63)) == 0
        || !source_selected(conf, src)
    {
        return;
    }
    if !limit::conform(&mut conf.tat_ns, now, &conf.limit) {
        conf.missed += 1;
        return;
    }
    let Some(mut entry) = CAPTURE_RING.reserve::<CaptureRecord>(0) else {
        conf.missed += 1;
        return;
    };
    let rec = entry.as_mut_ptr();
    let len = (ctx.data_end() - ctx.data()) as u64;
    let want = if (conf.snaplen as u64) < len {
        conf.snaplen as u64
    } else {
        len
    };
    // 1..=CAPTURE_SNAP_MAX for the verifier (see opaque.rs); a 0-byte
    // frame cannot reach here.
    let caplen = crate::opaque::len_1_to::<{ CAPTURE_SNAP_MAX as u64 }>(want);
    // SAFETY: `rec` is the reserved record, `data` holds CAPTURE_SNAP_MAX
    // bytes and `caplen` is at most that.
    let copied = unsafe {
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).len = len as u32;
        (*rec).caplen = caplen as u32;
        (*rec).verdict = verdict as u32;
        (*rec).reason = reason as u32;
        (*rec).class = class.unwrap_or(NO_CLASS);
        (*rec)._pad = 0;
        bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            (*rec).data.as_mut_ptr() as *mut c_void,
            caplen as u32,
        )
    };
    if copied == 0 {
        entry.submit(0);
    } else {
        entry.discard(0);
    }
}

/// No source filter, or `src` inside one of them.
#[inline(always)]
fn source_selected(conf: &CaptureConf, [a, b]: [u64; 2]) -> bool {
    if conf.sources == 0 {
        return true;
    }
    let mut i = 0;
    while i < CAPTURE_SOURCES {
        if (i as u32) < conf.sources
            && a & conf.src_mask[i][0] == conf.src_addr[i][0]
            && b & conf.src_mask[i][1] == conf.src_addr[i][1]
        {
            return true;
        }
        i += 1;
    }
    false
}
