//! What names a protected interface: its name *and* its network namespace.
//! Two namespaces can each have an `eth0`; pins, locks and status files are
//! kept under a key that tells them apart: `NAME@netns-INODE`, the inode of
//! the namespace as /proc/self/ns/net shows it. (The host's namespace cannot
//! be told apart reliably: /proc/1 is hidden from a sandboxed unit, and the
//! fixed inode of the initial namespace is recent.) Earlier versions keyed
//! by the name alone; the agent takes such pins over (agent.rs).

use std::{fs, os::unix::fs::MetadataExt as _};

/// Between an interface's name and its namespace's inode in a key. A name
/// may contain `@`; only this tag followed by digits alone is a namespace.
const NETNS_TAG: &str = "@netns-";

/// The inode of the caller's network namespace.
fn own_netns() -> Option<u64> {
    fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

/// The key of `iface` as the caller's namespace sees it.
pub fn key(iface: &str) -> String {
    match own_netns() {
        Some(ino) => format!("{iface}{NETNS_TAG}{ino}"),
        None => iface.to_string(),
    }
}

/// Whether the caller's namespace has an interface named `iface`.
pub fn exists_here(iface: &str) -> bool {
    // SAFETY: if_nametoindex(3) reads a valid C string.
    std::ffi::CString::new(iface).is_ok_and(|c| unsafe { libc::if_nametoindex(c.as_ptr()) } != 0)
}

/// The interface name inside a key.
pub fn iface_of(key: &str) -> &str {
    match key.rsplit_once(NETNS_TAG) {
        Some((iface, ino)) if !ino.is_empty() && ino.bytes().all(|b| b.is_ascii_digit()) => iface,
        _ => key,
    }
}

/// Whether `key` names an interface of the caller's namespace.
pub fn is_own(key: &str) -> bool {
    key == self::key(iface_of(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_interface_and_its_namespace() {
        assert_eq!(iface_of("eth0"), "eth0");
        assert_eq!(iface_of("eth0@netns-4026531840"), "eth0");
        assert_eq!(iface_of("odd@netns-x"), "odd@netns-x");
        assert!(is_own(&key("eth0")));
        assert_eq!(iface_of(&key("eth0")), "eth0");
        assert!(!is_own("eth0@netns-1"));
    }
}
