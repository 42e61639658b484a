//! Map names, sizes and pin layout shared by the program and the controller.

/// Version of the pinned-map layout. Bump it whenever a key or value type
/// changes, so a new controller never misreads maps pinned by an old one.
pub const LAYOUT_VERSION: u32 = 1;

/// bpffs mount point and the directory under it that sipguard owns.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_ROOT: &str = "/sys/fs/bpf/sipguard";

/// Map names as they appear in the object file and in the pin directory.
pub const MAP_SIP_PORTS: &str = "SIP_PORTS";
pub const MAP_POLICY: &str = "POLICY";
pub const MAP_REASON_STATS: &str = "REASON_STATS";
pub const MAP_CLASS_STATS: &str = "CLASS_STATS";

/// Name of the XDP program in the object file.
pub const PROG_XDP: &str = "sipguard_xdp";

/// `SIP_PORTS` is indexed directly by destination port.
pub const SIP_PORTS_LEN: u32 = 65536;
/// `SIP_PORTS` value bits: which transports are SIP on that port.
pub const PORT_UDP: u8 = 1 << 0;
pub const PORT_TCP: u8 = 1 << 1;

/// Number of verdicts (pass, drop, would-drop) the stats maps are split by.
pub const VERDICT_SLOTS: u32 = 3;

/// Packets and bytes, one per CPU in the per-CPU stats maps; userspace sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}
