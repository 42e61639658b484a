//! Policy for a packet to a SIP port, in this order (ARCHITECTURE.md says why):
//! allowlist, blocklist, a global budget this CPU knows is spent (for
//! sources without trust), bans, [TCP: SYN limits], malformed SIP (not SIP,
//! oversized), per-source limits (with automatic bans), global limits; then,
//! for requests those pass, the header scan: scanner signatures, malformed
//! requests (truncated, missing headers), enumeration. Rules that want a
//! packet dropped go through `deny`, which turns the drop into `WouldDrop`
//! in monitor mode.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{bindings::xdp_md, maps::lpm_trie::Key};
use sipguard_common::{
    Class, Policy, Reason, Verdict,
    maps::{ALLOW_HOLE, LIST_ALLOW, LIST_BLOCK, TableStat},
    policy::{BUCKETS, Bucket, Limit, POLICY_MALFORMED, POLICY_SCAN, POLICY_TRUST},
    signature::TIER_BAN,
    source::{BAN_CONFIRMED, Ban, BanEvent, BanReason, SrcKey, SrcState},
};

use crate::{
    clock, frags, limit,
    maps::Pending,
    maps::{
        ALLOW, BAN_EVENTS, BAN_SLOTS, BANS, BLOCK, EMPTY_LISTS, GLOBAL_SHARE, GLOBAL_STATE, POLICY,
        SCAN_BAN_ROOM, SRC_STATE,
    },
    mem,
    parse::{Flow, Transport},
    scan, stats, trust,
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
pub fn bucket_of(class: u32) -> u32 {
    const _: () = assert!(Class::Invite as u32 == Bucket::Invite as u32);
    const _: () = assert!(Class::Register as u32 == Bucket::Register as u32);
    if class <= Class::Register as u32 {
        class
    } else {
        Bucket::Other as u32
    }
}

/// Requests that open something new (a call, a registration, a probe) and
/// so count towards enumeration; in-dialog requests do not.
#[inline(always)]
fn opens_target(class: u32) -> bool {
    class == Class::Invite as u32
        || class == Class::Register as u32
        || class == Class::Options as u32
        || class == Class::Subscribe as u32
        || class == Class::Message as u32
        || class == Class::Publish as u32
        || class == Class::OtherRequest as u32
}

/// The key bans and rate state use: IPv4 as is, IPv6 cut to the grouping
/// prefix.
#[inline(always)]
pub fn group(flow: &Flow, policy: &Policy) -> SrcKey {
    group_src(flow.src, flow.is_v6, policy)
}

#[inline(always)]
fn group_src(src: [u64; 2], is_v6: bool, policy: &Policy) -> SrcKey {
    let [a, b] = src;
    if is_v6 {
        let [ma, mb] = policy.v6_mask_words();
        SrcKey::from_words([a & ma, b & mb])
    } else {
        SrcKey::from_words([a, b])
    }
}

/// The source is on the allowlist: pass, never limited, banned or dropped.
/// `empty`: the `EMPTY_LISTS` word (`empty_lists`).
#[inline(always)]
pub fn allowlisted(src: [u64; 2], empty: u32) -> bool {
    empty & LIST_ALLOW == 0
        && ALLOW
            .get(lpm_key(src))
            .is_some_and(|f| *f & ALLOW_HOLE == 0)
}

/// The allow/block lists' key for the packet's source: the whole address.
#[inline(always)]
fn lpm_key(src: [u64; 2]) -> Key<[u8; 16]> {
    Key::new(128, SrcKey::from_words(src).addr)
}

/// The source is blocklisted now.
#[inline(always)]
fn blocklisted(src: [u64; 2], empty: u32, now: u64) -> bool {
    empty & LIST_BLOCK == 0
        && BLOCK
            .get(lpm_key(src))
            .is_some_and(|b| b.expires_ns == 0 || b.expires_ns > now)
}

/// A packet whose transport header is out of reach (`Skip::Opaque`): the
/// lists and bans apply whatever its headers, so no header trick walks a
/// blocklisted or banned source past them. Then a later fragment passes if
/// its first fragment did (it may belong to any protocol; frags.rs) and is
/// dropped as an orphan otherwise; an over-long IPv6 header chain is
/// dropped.
#[inline(always)]
pub fn opaque(src: [u64; 2], is_v6: bool, reason: Reason, frag_id: u32) -> (Verdict, Reason) {
    let empty = empty_lists();
    if allowlisted(src, empty) {
        return (Verdict::Pass, Reason::Allowlisted);
    }
    let Some(policy) = POLICY.get(0) else {
        return (Verdict::Pass, reason);
    };
    let now = clock::now();
    if blocklisted(src, empty, now) {
        return deny(policy, Reason::Blocklisted);
    }
    if banned(&group_src(src, is_v6, policy), now) {
        return deny(policy, Reason::Banned);
    }
    if reason == Reason::Fragment {
        if frags::known(src, frag_id) {
            return (Verdict::Pass, Reason::Fragment);
        }
        return deny(policy, Reason::FragmentOrphan);
    }
    deny(policy, reason)
}

/// The lists the controller has marked empty (`EMPTY_LISTS`), read once per
/// packet for both lists.
#[inline(always)]
pub fn empty_lists() -> u32 {
    EMPTY_LISTS.get(0).map_or(0, |e| *e)
}

/// `src` is banned now. Its `BAN_SLOTS` slot decides unless another key's
/// live ban shares the slot; then `BANS` does (see `BanSlot`).
#[inline(always)]
fn banned(src: &SrcKey, now: u64) -> bool {
    if let Some(h) = BAN_SLOTS.get_ptr_mut(src.ban_slot()) {
        // SAFETY: a valid map value pointer; a racing update only skews a counter.
        let h = unsafe { &mut *h };
        let mine = h.key.same(src);
        if mine && h.until_ns > now {
            h.dropped += 1;
            return true;
        }
        if h.any_until_ns <= now {
            if mine && h.until_ns != 0 {
                // The source's own ban ran out: remove it now, not at the
                // next sweep, and only once.
                h.until_ns = 0;
                expire(src);
            }
            return false;
        }
    }
    let Some(ban) = BANS.get_ptr_mut(src) else {
        return false;
    };
    // SAFETY: as above.
    unsafe {
        if (*ban).expires_ns > now {
            (*ban).dropped += 1;
            return true;
        }
    }
    expire(src);
    false
}

/// IPv6 keyed narrower than a /64 (per address by default): the agent bans
/// a whole /64 or /48 once `WIDEN_AFTER` of its addresses (or /64s) were
/// banned. A trusted source and a REGISTER (how a phone sharing the prefix
/// with an attacker earns trust) still pass it; their own bans and limits
/// apply as to anyone.
#[inline(always)]
fn group_banned(flow: &Flow, policy: &Policy, src: &SrcKey, class: u32, now: u64) -> bool {
    if !flow.is_v6 || policy.v6_mask[8] == 0 || class == Class::Register as u32 {
        return false;
    }
    let (g64, g48) = (
        SrcKey::v6_group(flow.src[0], 64),
        SrcKey::v6_group(flow.src[0], 48),
    );
    // The slots first (no count, no lookup); trust only for a prefix that
    // may be banned.
    (maybe_banned(&g64, now) || maybe_banned(&g48, now))
        && !trust::is_trusted(src, now)
        && (banned(&g64, now) || banned(&g48, now))
}

/// A banned source's REGISTERs while the ban is on evidence a forger can
/// produce (any but a manual ban): one per `PROBATION` interval is judged
/// like anyone's (`Some(true)`), the rest dropped (`Some(false)`). The
/// client whose address was used registers, gets its 2xx, earns trust, and
/// the trust lifts the ban (`learn::learn`); a forger never sees the 2xx.
/// `None`: not banned, or banned without probation (by hand, or confirmed
/// while banned): then `banned` decides.
#[inline(always)]
fn probation(src: &SrcKey, now: u64) -> Option<bool> {
    let slot = BAN_SLOTS.get_ptr_mut(src.ban_slot())?;
    // SAFETY: a valid map value pointer; a racing update only skews a
    // counter or lets one more REGISTER by.
    let slot = unsafe { &mut *slot };
    if slot.any_until_ns <= now {
        return None;
    }
    if slot.key.same(src) && slot.until_ns > now {
        // The slot holds the ban and its probation bucket: decided
        // without a lookup, as a banned INVITE is.
        if slot.probation == 0 {
            return None;
        }
        let pass = limit::conform(&mut slot.probation_tat_ns, now, &PROBATION);
        if pass {
            stats::table(TableStat::ProbationPass);
        } else {
            slot.dropped += 1;
        }
        return Some(pass);
    }
    probation_shared(src, now)
}

/// `probation` for a source whose slot another key's live ban holds:
/// `BANS` decides, and the bucket is the source's rate state (charged to
/// its SYN bucket, which a banned source cannot use: its SYNs are dropped
/// as banned; they may wait a few seconds once the ban lifts).
#[inline(always)]
fn probation_shared(src: &SrcKey, now: u64) -> Option<bool> {
    let ban = BANS.get_ptr_mut(src)?;
    // SAFETY: a valid map value pointer; a racing update only skews a counter.
    let ban = unsafe { &mut *ban };
    if ban.expires_ns <= now || ban.reason == BanReason::Manual as u32 {
        return None;
    }
    if !ban.on_probation() {
        ban.dropped += 1;
        return Some(false);
    }
    let pass = src_state(src, now).is_some_and(|st| {
        limit::conform(
            &mut st.tat_ns[Bucket::Syn as usize & (BUCKETS - 1)],
            now,
            &PROBATION,
        )
    });
    if pass {
        stats::table(TableStat::ProbationPass);
    } else {
        ban.dropped += 1;
    }
    Some(pass)
}

/// The REGISTERs a banned source gets through on probation: a client's
/// challenge and answer (two) within ten seconds, then one per five.
const PROBATION: Limit = Limit::new(1, 5_000_000_000, 2);

/// Some ban of `key`'s `BAN_SLOTS` slot is live: `key` may be banned.
#[inline(always)]
pub fn maybe_banned(key: &SrcKey, now: u64) -> bool {
    BAN_SLOTS
        .get(key.ban_slot())
        .is_some_and(|h| h.any_until_ns > now)
}

/// Remove `src`'s expired ban; counted once even if two CPUs race here.
#[inline(always)]
fn expire(src: &SrcKey) {
    if BANS.remove(src).is_ok() {
        stats::table(TableStat::BanExpired);
    }
}

/// The spoofed flood's fast path: the packet would be charged to a global
/// budget this CPU knows is spent (`limit::spent`), and its source surely
/// holds no trust (`trust::maybe_trusted`), so the second stage would drop
/// it as `rate_global`. Decided here on per-CPU memory and one small
/// table, before the bans and rate state are looked up (random reads into
/// large tables, each a cache miss when every packet has a new source):
/// the drop then costs what a banned packet does. A banned or rate-limited
/// source's packets are counted `rate_global` while the budget is spent,
/// and count towards its ban only once it has room again. Packets the first
/// stage judges otherwise (TCP other than SYN, malformed) are left to it.
#[inline(always)]
fn over_spent_budget(flow: &Flow, class: u32, policy: &Policy, src: &SrcKey, now: u64) -> bool {
    let bucket = if flow.transport == Transport::Tcp {
        if !flow.syn {
            return false;
        }
        Bucket::Syn as u32
    } else {
        if policy.flags & POLICY_MALFORMED != 0
            && (class == Class::NotSip as u32
                || (policy.max_message_bytes != 0
                    && flow.stated_len > policy.max_message_bytes as usize))
        {
            return false;
        }
        bucket_of(class)
    };
    let b = bucket & (BUCKETS as u32 - 1);
    let limit = &policy.global[b as usize];
    !limit.unlimited()
        && GLOBAL_SHARE
            .get(b)
            .is_some_and(|s| limit::spent(s, clock::for_limit(limit, now), limit))
        && (policy.flags & POLICY_TRUST == 0 || !trust::maybe_trusted(src))
}

/// What the first stage decided.
pub enum Step {
    /// Decided: pass or deny.
    Done(Verdict, Reason),
    /// Continue in the tail-called `sipguard_sip` program: the rate limits
    /// for `bucket`, after the header scan if `deep`.
    Next {
        src: SrcKey,
        bucket: u32,
        deep: bool,
        now: u64,
    },
}

/// First stage, in the main program, after `allowlisted`: the blocklist,
/// bans and the cheap malformed checks, so banned and blocklisted floods
/// cost only these lookups. The header scan and the rate limits (the bulk of
/// the code) run in the second stage, which the verifier checks once rather
/// than once per parse path.
#[inline(always)]
pub fn front(flow: &Flow, class: u32, empty: u32) -> Step {
    // No policy written yet (controller still starting): pass, never drop.
    let Some(policy) = POLICY.get(0) else {
        return Step::Done(Verdict::Pass, Reason::Accepted);
    };
    let now = clock::now();
    if blocklisted(flow.src, empty, now) {
        let (v, r) = deny(policy, Reason::Blocklisted);
        return Step::Done(v, r);
    }

    let src = group(flow, policy);
    if over_spent_budget(flow, class, policy, &src, now) {
        let (v, r) = deny(policy, Reason::RateGlobal);
        return Step::Done(v, r);
    }
    if class == Class::Register as u32
        && let Some(let_through) = probation(&src, now)
    {
        if !let_through {
            let (v, r) = deny(policy, Reason::Banned);
            return Step::Done(v, r);
        }
    } else if banned(&src, now) || group_banned(flow, policy, &src, class, now) {
        let (v, r) = deny(policy, Reason::Banned);
        return Step::Done(v, r);
    }

    // TCP carries a byte stream XDP cannot split into SIP messages: lists,
    // bans and connection-attempt (SYN) limits apply, message rules do not.
    if flow.transport == Transport::Tcp {
        if !flow.syn {
            return Step::Done(Verdict::Pass, Reason::Accepted);
        }
        return Step::Next {
            src,
            bucket: Bucket::Syn as u32,
            deep: false,
            now,
        };
    }

    let malformed = policy.flags & POLICY_MALFORMED != 0;
    if malformed {
        if class == Class::NotSip as u32 {
            let (v, r) = deny(policy, Reason::NotSip);
            return Step::Done(v, r);
        }
        // The stated length: a datagram over the limit arrives as fragments
        // whose first one alone is always under it.
        if policy.max_message_bytes != 0 && flow.stated_len > policy.max_message_bytes as usize {
            let (v, r) = deny(policy, Reason::Oversized);
            return Step::Done(v, r);
        }
    }
    let is_request = class <= Class::OtherRequest as u32;
    Step::Next {
        src,
        bucket: bucket_of(class),
        deep: is_request
            && (malformed || policy.flags & POLICY_SCAN != 0 || policy.enum_after != 0),
        now,
    }
}

/// Second stage, in `sipguard_sip`: the rate limits first, so a flood over
/// its limits costs no header scan; then, for requests that pass, scan the
/// headers and apply signatures, malformed-request checks and enumeration
/// (a scanner's first packet is within any limit, so it is still caught).
#[inline(always)]
pub fn second(xdp: *mut xdp_md, policy: &Policy, p: &Pending) -> (Verdict, Reason) {
    let now = p.now;
    let (limited, trusted) = limits(policy, &p.src, p.bucket, now);
    if limited.0 != Verdict::Pass {
        return limited;
    }
    // One unknown for the verifier, not 0 and 1: the header scan below is
    // then walked once, not once per value (see opaque.rs).
    let trusted = crate::opaque::hide(trusted as u64, now) != 0;
    if p.deep != 0
        && let Some(decided) = deep(xdp, policy, p, now, trusted)
    {
        return decided;
    }
    limited
}

/// The header scan's rules. A `trusted` source has shown it receives the
/// server's answers; evidence any off-path forger can produce with its
/// address (one packet's User-Agent, a burst of targets) drops the packet
/// but never bans it.
#[inline(always)]
fn deep(
    xdp: *mut xdp_md,
    policy: &Policy,
    p: &Pending,
    now: u64,
    trusted: bool,
) -> Option<(Verdict, Reason)> {
    let (src, class, fragmented) = (&p.src, p.class, p.fragmented != 0);
    let sc = scan::run(xdp, p.payload_off, p.payload_off + p.payload_len)?;
    if policy.flags & POLICY_SCAN != 0 && sc.sig_tier == TIER_BAN {
        if !trusted {
            if scanner_ban_room() {
                ban(policy, src, BanReason::Scanner, sc.sig_id, now, None);
            } else {
                stats::table(TableStat::ScannerBanNoRoom);
            }
        }
        return Some(deny(policy, Reason::Scanner));
    }
    // A first fragment holds only part of the message: judge only whole
    // datagrams.
    if policy.flags & POLICY_MALFORMED != 0 && !fragmented {
        if sc.complete == 0 {
            return Some(deny(policy, Reason::Truncated));
        }
        if sc.seen & scan::HDR_MANDATORY != scan::HDR_MANDATORY {
            return Some(deny(policy, Reason::MissingHeader));
        }
    }
    if policy.enum_after != 0
        && !trusted
        && opens_target(class)
        && let Some(st) = src_state(src, now)
        && enumerating(policy, st, sc.target, now)
    {
        ban(policy, src, BanReason::Enumeration, p.bucket, now, Some(st));
        return Some(deny(policy, Reason::Enumeration));
    }
    None
}

/// Per-source limit, then the global one, for `bucket`; and whether the
/// source is trusted.
#[inline(always)]
pub fn limits(policy: &Policy, src: &SrcKey, bucket: u32, now: u64) -> ((Verdict, Reason), bool) {
    // A source the server has recently answered with a 2xx to REGISTER or
    // INVITE has proved it receives the server's packets (a spoofed source
    // never sees the 2xx): it gets its own, higher per-source limits and
    // skips the global budgets, which are then spent only on unknown sources.
    let b = bucket as usize & (BUCKETS - 1);
    let trust_on = policy.flags & POLICY_TRUST != 0;
    let wants_state = trust_on || !policy.source[b].unlimited();
    let mut st = if wants_state { find_state(src) } else { None };
    // Trust is cached in the rate state; without state (a new source, or
    // the table full), ask `TRUSTED`.
    let trust_until = match &st {
        Some(s) => s.trusted_until_ns,
        None if trust_on => trust::until(src),
        None => 0,
    };
    let trusted = trust_on && trust_until > now;
    let global = &policy.global[b];
    let charge_global = !trusted && !global.unlimited();
    // A source without state passes its own limit (a fresh bucket holds a
    // whole burst), so the global budget decides first, and a packet it
    // drops leaves nothing behind: a spoofed flood of new sources neither
    // creates rate state nor evicts the state of real sources.
    let new_source = st.is_none();
    if charge_global && new_source && !global_conform(policy, bucket, global, now) {
        return (deny(policy, Reason::RateGlobal), false);
    }
    if wants_state && new_source {
        st = new_state(src, now, trust_until);
    }
    let own = if trusted {
        &policy.trusted[b]
    } else {
        &policy.source[b]
    };
    if !per_source(policy, own, st, src, bucket, now, trusted) {
        return (deny(policy, Reason::RateSource), trusted);
    }
    if trusted {
        stats::table(TableStat::TrustedPass);
        return ((Verdict::Pass, Reason::Accepted), true);
    }
    if charge_global && !new_source && !global_conform(policy, bucket, global, now) {
        return (deny(policy, Reason::RateGlobal), false);
    }
    ((Verdict::Pass, Reason::Accepted), false)
}

/// Charge one packet to the global bucket `bucket` through this CPU's share.
#[inline(always)]
fn global_conform(policy: &Policy, bucket: u32, limit: &Limit, now: u64) -> bool {
    let b = bucket & (BUCKETS as u32 - 1);
    let (Some(tat), Some(share)) = (GLOBAL_STATE.get_ptr_mut(b), GLOBAL_SHARE.get_ptr_mut(b))
    else {
        return true;
    };
    let lease = u64::from(policy.global_lease[b as usize]);
    // SAFETY: a per-CPU map value: only this CPU's program runs touch it,
    // one at a time.
    let share = unsafe { &mut *share };
    limit::conform_global(share, tat, clock::for_limit(limit, now), limit, lease)
}

/// The source's rate state, created on first sight.
#[inline(always)]
pub fn src_state(src: &SrcKey, now: u64) -> Option<&'static mut SrcState> {
    match find_state(src) {
        Some(s) => Some(s),
        None => new_state(src, now, trust::until(src)),
    }
}

/// The source's rate state, if it has one.
#[inline(always)]
fn find_state(src: &SrcKey) -> Option<&'static mut SrcState> {
    // SAFETY: valid map value pointer for the rest of this program run.
    SRC_STATE.get_ptr_mut(src).map(|s| unsafe { &mut *s })
}

/// Create `src`'s rate state (it has none), trusted until `trusted_until_ns`.
#[inline(always)]
fn new_state(src: &SrcKey, now: u64, trusted_until_ns: u64) -> Option<&'static mut SrcState> {
    // Not a struct literal: see mem.rs (a new source is one packet of a
    // spoofed flood).
    let mut slot = core::mem::MaybeUninit::<SrcState>::uninit();
    let fresh = mem::zero_init(&mut slot);
    fresh.window_start_ns = now;
    fresh.targets_start_ns = now;
    fresh.trusted_until_ns = trusted_until_ns;
    if SRC_STATE.insert(src, fresh, 0).is_err() {
        stats::table(TableStat::SrcStateFull);
        return None;
    }
    stats::table(TableStat::SrcStateNew);
    find_state(src)
}

/// Record a request target; true once the source has asked for more distinct
/// targets in the window than `enum_after`.
#[inline(always)]
fn enumerating(policy: &Policy, st: &mut SrcState, target: u64, now: u64) -> bool {
    if now.saturating_sub(st.targets_start_ns) > policy.enum_window_ns {
        st.targets_start_ns = now;
        mem::zero(&mut st.targets);
    }
    // The hash's top bits: FNV-1a's low bits mix poorly for targets that
    // differ only in a digit or two.
    let bit = target >> 57;
    st.targets[(bit / 64) as usize & 1] |= 1 << (bit % 64);
    let distinct = st.targets[0].count_ones() + st.targets[1].count_ones();
    if distinct >= policy.enum_after {
        mem::zero(&mut st.targets);
        return true;
    }
    false
}

/// Charge the packet to the source's bucket; count violations and ban the
/// source once it reaches `ban_after` of them within the window, unless it
/// is `trusted` (a forger flooding with its address must not ban it).
#[inline(always)]
fn per_source(
    policy: &Policy,
    limit: &Limit,
    st: Option<&mut SrcState>,
    src: &SrcKey,
    bucket: u32,
    now: u64,
    trusted: bool,
) -> bool {
    if limit.unlimited() {
        return true;
    }
    let Some(st) = st else {
        return true;
    };
    if now.saturating_sub(st.window_start_ns) > policy.ban_window_ns {
        st.window_start_ns = now;
        st.window_pkts = 0;
        st.violations = 0;
    }
    st.window_pkts += 1;
    if limit::conform(
        &mut st.tat_ns[bucket as usize & (BUCKETS - 1)],
        clock::for_limit(limit, now),
        limit,
    ) {
        return true;
    }
    st.violations += 1;
    if policy.ban_after != 0 && st.violations >= policy.ban_after && !trusted {
        ban(policy, src, BanReason::Flood, bucket, now, Some(st));
        st.violations = 0;
    }
    false
}

/// Take one place in the scanner bans' share of `BANS` (`SCAN_BAN_ROOM`).
/// Without one, the packet is still dropped (its signature says what it
/// is); only the ban, which any forger could have asked for, is skipped.
#[inline(always)]
fn scanner_ban_room() -> bool {
    let Some(room) = SCAN_BAN_ROOM.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: a valid map value pointer. Read, then take one: CPUs racing
    // may overshoot the share by one each (the generic BPF CPU has no
    // atomic fetch-and-add to do both at once).
    unsafe {
        if core::ptr::read_volatile(room) <= 0 {
            return false;
        }
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(room as *mut u64, u64::MAX);
    }
    true
}

/// Ban `src` for `ban_for_ns` and tell the agent. `detail` is the bucket
/// (rate and enumeration bans) or the signature id (scanner bans).
#[inline(always)]
pub fn ban(
    policy: &Policy,
    src: &SrcKey,
    reason: BanReason,
    detail: u32,
    now: u64,
    st: Option<&SrcState>,
) {
    let expires_ns = now + policy.ban_for_ns;
    let entry = match BANS.get_ptr_mut(src) {
        // Caught again while banned (a REGISTER on probation): it is no
        // forger's victim. The ban stands, longer, with what it dropped so
        // far, and without probation from now on.
        // SAFETY: a valid map value pointer for this program run.
        Some(b) if unsafe { (*b).expires_ns } > now => unsafe {
            (*b).expires_ns = expires_ns;
            (*b).detail |= BAN_CONFIRMED;
            *b
        },
        _ => {
            let fresh = Ban {
                expires_ns,
                since_ns: now,
                reason: reason as u32,
                detail,
                dropped: 0,
            };
            if BANS.insert(src, fresh, 0).is_err() {
                stats::table(TableStat::BanTableFull);
                return;
            }
            stats::table(TableStat::BanAdded);
            fresh
        }
    };
    if let Some(h) = BAN_SLOTS.get_ptr_mut(src.ban_slot()) {
        // SAFETY: a valid map value pointer. Two CPUs banning into one slot
        // at once may leave it short; the controller's sweep repairs it.
        unsafe { (*h).record(src, &entry, now) };
    }
    let (window_pkts, window_ns) = match st {
        Some(st) => (st.window_pkts, now.saturating_sub(st.window_start_ns)),
        None => (1, 0),
    };
    let event = BanEvent {
        src: *src,
        expires_ns: entry.expires_ns,
        window_pkts,
        window_ns,
        reason: entry.reason,
        detail: entry.detail,
    };
    if BAN_EVENTS.output::<BanEvent>(&event, 0).is_err() {
        stats::table(TableStat::BanEventLost);
    }
}
