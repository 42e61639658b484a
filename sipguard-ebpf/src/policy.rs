//! Policy: what happens to a classified SIP packet. Rules that want a packet
//! dropped go through `deny`, which turns the drop into `WouldDrop` when the
//! controller has switched enforcement off (monitor mode).

use sipguard_common::{Class, Policy, Reason, Verdict};

use crate::{maps::POLICY, parse::Flow};

/// The live policy; a zeroed record (enforce off) if the controller has not
/// written one yet, so a half-configured program never drops.
#[inline(always)]
pub fn current() -> Policy {
    match POLICY.get(0) {
        Some(p) => *p,
        None => Policy::default(),
    }
}

/// A rule matched: drop when enforcing, count as would-drop otherwise.
#[inline(always)]
#[allow(dead_code)]
pub fn deny(policy: &Policy, reason: Reason) -> (Verdict, Reason) {
    if policy.enforcing() {
        (Verdict::Drop, reason)
    } else {
        (Verdict::WouldDrop, reason)
    }
}

/// Decide on a packet to a SIP port.
#[inline(always)]
pub fn evaluate(_flow: &Flow, _class: Class) -> (Verdict, Reason) {
    let _policy = current();
    (Verdict::Pass, Reason::Accepted)
}
