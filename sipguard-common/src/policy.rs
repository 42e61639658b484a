//! The policy record the controller writes and the XDP program reads on
//! every packet (one entry in the `POLICY` array map).

/// `Policy::flags` bit: drop what the rules say to drop. When clear the
/// program runs in monitor mode and counts `WouldDrop` instead.
pub const POLICY_ENFORCE: u32 = 1 << 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `POLICY_*` bits.
    pub flags: u32,
    pub _pad0: u32,
}

impl Policy {
    pub const fn enforcing(&self) -> bool {
        self.flags & POLICY_ENFORCE != 0
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Policy {}
