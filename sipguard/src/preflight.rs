//! Checks made before touching the kernel, so the operator gets a plain
//! sentence instead of an errno.

use std::ffi::CString;

use anyhow::{Result, bail};

/// sipguard loads BPF programs and writes pinned maps: that needs root (or
/// CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN for the bpffs mount).
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "{what} needs root (CAP_BPF, CAP_NET_ADMIN): run it with sudo or from the sipguard \
             systemd unit"
        );
    }
    Ok(())
}

/// The interface index of `iface`, or an error naming the interface.
pub fn ifindex(iface: &str) -> Result<u32> {
    let c = CString::new(iface)?;
    // SAFETY: if_nametoindex(3) reads a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no such interface: {iface} (see `ip link show` for the names on this host)");
    }
    Ok(idx)
}
