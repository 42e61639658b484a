//! Fragmented datagrams. A later fragment carries no transport header, so
//! its port and request are unknown; it passes only if its datagram's
//! first fragment was seen and not dropped (`FRAGS`). Orphans (a spoofed
//! flood of later fragments, or the rest of a datagram whose first fragment
//! a rule dropped) would only hold the kernel's reassembly memory until it
//! times out, and legitimate fragmented requests need that memory.

use crate::maps::{FRAG_PENDING, FRAGS, FragKey};

#[inline(always)]
fn key(src: [u64; 2], id: u32) -> FragKey {
    FragKey { src, id, _pad: 0 }
}

/// A first fragment, whatever its port or protocol (its later fragments
/// must pass, SIP or not). Forgotten again if a rule drops it.
#[inline(always)]
pub fn first(src: [u64; 2], id: u32) {
    let _ = FRAGS.insert(key(src, id), 1, 0);
}

/// Whether a later fragment's first fragment was seen and not dropped.
#[inline(always)]
pub fn known(src: [u64; 2], id: u32) -> bool {
    // SAFETY: the value is read only for its presence.
    unsafe { FRAGS.get(key(src, id)).is_some() }
}

/// A first fragment was dropped: its later fragments are orphans.
#[inline(always)]
pub fn forget(src: [u64; 2], id: u32) {
    let _ = FRAGS.remove(key(src, id));
}

/// Hand a first fragment's datagram to the second stage (`sipguard_sip`).
#[inline(always)]
pub fn hand_over(src: [u64; 2], id: u32) {
    if let Some(p) = FRAG_PENDING.get_ptr_mut(0) {
        // SAFETY: per-CPU map value, owned by this CPU during the program.
        unsafe { *p = key(src, id) };
    }
}

/// The second stage dropped the first fragment it was handed.
#[inline(always)]
pub fn forget_handed_over() {
    if let Some(p) = FRAG_PENDING.get(0) {
        let _ = FRAGS.remove(p);
    }
}
