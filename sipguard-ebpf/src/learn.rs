//! Earned trust and credential-attack defence, from the server's own
//! responses (the TC egress programs). A 2xx to a client's REGISTER or
//! INVITE makes it trusted for `trust_for_ns`; 401/403/407 answers (and 404
//! to REGISTER: extension probing) count against it, and too many within the
//! window ban it unless it is trusted. A 2xx clears the count: digest
//! authentication always starts with one 401, and a user who mistypes once
//! then succeeds is fine.

use sipguard_common::{
    Policy,
    maps::TableStat,
    policy::POLICY_TRUST,
    signature::token_hash,
    source::{BanReason, SrcKey, Trust, word_of},
};

use crate::{
    maps::{BAN_SLOTS, BANS, SRC_STATE, TRUST_HINTS, TRUSTED},
    policy, stats,
};

const INVITE: u64 = token_hash(b"invite");
const REGISTER: u64 = token_hash(b"register");

/// A refusal of the client's credentials (or of its right to use them).
#[inline(always)]
fn refuses_credentials(status: u32) -> bool {
    status == 401 || status == 403 || status == 407
}

/// Whether a response with `status` can teach `learn` anything: a 2xx, a
/// refusal of credentials, or a 404 (to REGISTER: extension probing).
#[inline(always)]
pub fn worth_learning(status: u32) -> bool {
    (200..300).contains(&status) || refuses_credentials(status) || status == 404
}

/// Learn from one response with `status` to a request whose CSeq method
/// hashes to `method`, sent to `client`.
#[inline(always)]
pub fn learn(policy: &Policy, client: &SrcKey, status: u32, method: u64, now: u64) {
    let for_us = method == INVITE || method == REGISTER;
    if (200..300).contains(&status) && for_us {
        let until = if policy.flags & POLICY_TRUST != 0 {
            lift_ban(client, now);
            earn(policy, client, now)
        } else {
            0
        };
        if let Some(st) = SRC_STATE.get_ptr_mut(client) {
            // SAFETY: valid map value pointer for this program run.
            unsafe {
                (*st).auth_fails = 0;
                if until != 0 {
                    (*st).trusted_until_ns = until;
                }
            }
        }
        return;
    }
    let auth_fail = refuses_credentials(status) || (status == 404 && method == REGISTER);
    if !auth_fail || policy.auth_fail_after == 0 {
        return;
    }
    stats::table(TableStat::AuthFailure);
    let Some(st) = policy::src_state(client, now) else {
        return;
    };
    if now.saturating_sub(st.auth_start_ns) > policy.auth_fail_window_ns {
        st.auth_start_ns = now;
        st.auth_fails = 0;
    }
    st.auth_fails += 1;
    // A trusted client has had a 2xx; a forger can make the server send
    // its address any number of 401s (forged REGISTERs), so failures never
    // withdraw trust or ban while trust holds. They count, and a client
    // whose trust lapses is judged on them again.
    if st.auth_fails >= policy.auth_fail_after as u64 && st.trusted_until_ns <= now {
        st.auth_fails = 0;
        policy::ban(policy, client, BanReason::AuthFailure, 0, now, None);
    }
}

/// The server answered `client` with a 2xx: it receives the server's
/// packets, which no off-path forger does, so a ban on evidence a forger can
/// produce (every kind but a manual ban) is lifted at once.
#[inline(always)]
fn lift_ban(client: &SrcKey, now: u64) {
    // Most clients answered have no ban: their slot says so without a
    // `BANS` lookup (as it does for their packets, `policy::banned`).
    if !policy::maybe_banned(client, now) {
        return;
    }
    let Some(ban) = BANS.get_ptr(client) else {
        return;
    };
    // SAFETY: a valid map value pointer for this program run.
    if unsafe { (*ban).reason } == BanReason::Manual as u32 {
        return;
    }
    if BANS.remove(client).is_ok() {
        if let Some(h) = BAN_SLOTS.get_ptr_mut(client.ban_slot()) {
            // SAFETY: a valid map value pointer.
            unsafe {
                if (*h).key.same(client) {
                    (*h).until_ns = 0;
                }
            }
        }
        stats::table(TableStat::BanLifted);
    }
}

/// Trust `client` (anew or for longer); returns until when.
#[inline(always)]
fn earn(policy: &Policy, client: &SrcKey, now: u64) -> u64 {
    let expires_ns = now + policy.trust_for_ns;
    if let Some(t) = TRUSTED.get_ptr_mut(client) {
        // SAFETY: valid map value pointer for this program run.
        unsafe {
            (*t).expires_ns = expires_ns;
            (*t).renewals += 1;
        }
    } else {
        let fresh = Trust {
            expires_ns,
            since_ns: now,
            renewals: 1,
        };
        let _ = TRUSTED.insert(client, fresh, 0);
    }
    let bit = client.trust_bit();
    for i in 0..2 {
        if let Some(bits) = TRUST_HINTS.get_ptr_mut(i) {
            // SAFETY: a valid map value pointer. Not atomic (the target has
            // no atomic or): two CPUs setting bits of one word at once may
            // lose one, until the controller's next sweep rebuilds it.
            unsafe { (*bits).words[word_of(bit)] |= 1 << (bit & 63) };
        }
    }
    stats::table(TableStat::TrustEarned);
    expires_ns
}
