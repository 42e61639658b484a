//! Policy for a packet to a SIP port, in this order (ARCHITECTURE.md says why):
//! allowlist, blocklist, bans, per-source limits (with automatic bans), global
//! limits. Rules that want a packet dropped go through `deny`, which turns the
//! drop into `WouldDrop` in monitor mode.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use sipguard_common::{
    Class, Policy, Reason, Verdict,
    maps::TableStat,
    policy::Bucket,
    source::{Ban, BanEvent, BanReason, SrcKey, SrcState},
};

use crate::{
    limit,
    maps::{ALLOW, BAN_EVENTS, BANS, BLOCK, GLOBAL_STATE, POLICY, SRC_STATE},
    parse::{Flow, Transport},
    stats,
};

/// A rule matched: drop when enforcing, count as would-drop otherwise.
#[inline(always)]
fn deny(policy: &Policy, reason: Reason) -> (Verdict, Reason) {
    if policy.enforcing() {
        (Verdict::Drop, reason)
    } else {
        (Verdict::WouldDrop, reason)
    }
}

/// The bucket a class is charged to, by arithmetic rather than a match so
/// the class stays one unknown value for the verifier (see `opaque`).
#[inline(always)]
fn bucket_of(class: u32) -> u32 {
    const _: () = assert!(Class::Invite as u32 == Bucket::Invite as u32);
    const _: () = assert!(Class::Register as u32 == Bucket::Register as u32);
    if class <= Class::Register as u32 {
        class
    } else {
        Bucket::Other as u32
    }
}

/// The key bans and rate state use: IPv4 as is, IPv6 cut to the grouping
/// prefix.
#[inline(always)]
fn group(flow: &Flow, policy: &Policy) -> SrcKey {
    let mut key = SrcKey { addr: flow.src };
    if flow.is_v6 {
        for i in 0..16 {
            key.addr[i] &= policy.v6_mask[i];
        }
    }
    key
}

/// Decide on a packet to a SIP port.
#[inline(always)]
pub fn evaluate(flow: &Flow, class: u32) -> (Verdict, Reason) {
    // No policy written yet (controller still starting): pass, never drop.
    let Some(policy) = POLICY.get(0) else {
        return (Verdict::Pass, Reason::Accepted);
    };
    let cidr = Key::new(128, flow.src);
    if ALLOW.get(&cidr).is_some() {
        return (Verdict::Pass, Reason::Allowlisted);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(block) = BLOCK.get(&cidr)
        && (block.expires_ns == 0 || block.expires_ns > now)
    {
        return deny(policy, Reason::Blocklisted);
    }

    let src = group(flow, policy);
    if let Some(ban) = BANS.get_ptr_mut(&src) {
        // SAFETY: a valid map value pointer; a racing update only skews a counter.
        unsafe {
            if (*ban).expires_ns > now {
                (*ban).dropped += 1;
                return deny(policy, Reason::Banned);
            }
        }
        let _ = BANS.remove(&src);
        stats::table(TableStat::BanExpired);
    }

    // TCP carries a byte stream XDP cannot split into SIP messages: lists and
    // bans apply, request rate limits do not.
    if flow.transport == Transport::Tcp {
        return (Verdict::Pass, Reason::Accepted);
    }

    let bucket = bucket_of(class);
    if !per_source(policy, &src, bucket, now) {
        return deny(policy, Reason::RateSource);
    }
    let global = &policy.global[bucket as usize];
    if !global.unlimited()
        && let Some(tat) = GLOBAL_STATE.get_ptr_mut(bucket)
        && !limit::conform_shared(tat, now, global)
    {
        return deny(policy, Reason::RateGlobal);
    }
    (Verdict::Pass, Reason::Accepted)
}

/// Charge the packet to the source's bucket; count violations and ban the
/// source once it reaches `ban_after` of them within the window.
#[inline(always)]
fn per_source(policy: &Policy, src: &SrcKey, bucket: u32, now: u64) -> bool {
    let limit = &policy.source[bucket as usize];
    if limit.unlimited() {
        return true;
    }
    let state = match SRC_STATE.get_ptr_mut(src) {
        Some(s) => s,
        None => {
            let fresh = SrcState {
                window_start_ns: now,
                ..SrcState::default()
            };
            if SRC_STATE.insert(src, &fresh, 0).is_err() {
                stats::table(TableStat::SrcStateFull);
                return true;
            }
            stats::table(TableStat::SrcStateNew);
            match SRC_STATE.get_ptr_mut(src) {
                Some(s) => s,
                None => return true,
            }
        }
    };
    // SAFETY: valid map value pointer for the rest of this program run.
    let st = unsafe { &mut *state };
    if now - st.window_start_ns > policy.ban_window_ns {
        st.window_start_ns = now;
        st.window_pkts = 0;
        st.violations = 0;
    }
    st.window_pkts += 1;
    if limit::conform(&mut st.tat_ns[bucket as usize], now, limit) {
        return true;
    }
    st.violations += 1;
    if policy.ban_after != 0 && st.violations >= policy.ban_after {
        ban(policy, src, bucket, now, st);
        st.violations = 0;
    }
    false
}

#[inline(always)]
fn ban(policy: &Policy, src: &SrcKey, bucket: u32, now: u64, st: &SrcState) {
    let entry = Ban {
        expires_ns: now + policy.ban_for_ns,
        since_ns: now,
        reason: BanReason::Flood as u32,
        bucket,
        dropped: 0,
    };
    if BANS.insert(src, &entry, 0).is_err() {
        stats::table(TableStat::BanTableFull);
        return;
    }
    stats::table(TableStat::BanAdded);
    let event = BanEvent {
        src: *src,
        expires_ns: entry.expires_ns,
        window_pkts: st.window_pkts,
        window_ns: now - st.window_start_ns,
        reason: entry.reason,
        bucket: entry.bucket,
    };
    if BAN_EVENTS.output::<BanEvent>(&event, 0).is_err() {
        stats::table(TableStat::BanEventLost);
    }
}
