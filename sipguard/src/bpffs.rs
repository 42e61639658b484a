//! bpffs: where the agent pins its maps and link, so other `sipguard`
//! processes (stats, live control) can find them.
//!
//! Layout: `/sys/fs/bpf/sipguard/v<LAYOUT_VERSION>/<iface>/<MAP or link>`.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use sipguard_common::maps::{BPFFS, LAYOUT_VERSION, PIN_ROOT};

/// bpffs magic number from `statfs(2)`.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The versioned directory holding one directory per protected interface.
pub fn layout_dir() -> PathBuf {
    Path::new(PIN_ROOT).join(format!("v{LAYOUT_VERSION}"))
}

/// The pin directory of the agent on `iface`.
pub fn iface_dir(iface: &str) -> PathBuf {
    layout_dir().join(iface)
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(false);
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Make sure bpffs is mounted at /sys/fs/bpf, mounting it if it is not (many
/// minimal hosts and containers boot without it).
pub fn ensure_mounted() -> Result<()> {
    let root = Path::new(BPFFS);
    if is_bpffs(root)? {
        return Ok(());
    }
    fs::create_dir_all(root).with_context(|| format!("creating {BPFFS}"))?;
    let src = CString::new("bpffs")?;
    let target = CString::new(BPFFS)?;
    let fstype = CString::new("bpf")?;
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "bpffs is not mounted at {BPFFS} and mounting it failed ({err}); mount it with \
             `mount -t bpf bpffs {BPFFS}` and try again"
        );
    }
    tracing::info!("mounted bpffs at {BPFFS}");
    Ok(())
}

/// Interfaces that have pinned state under the current layout.
pub fn pinned_ifaces() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(layout_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Find the pin directory a client command should use: `iface` if given,
/// else the only agent running.
pub fn find_agent(iface: Option<&str>) -> Result<PathBuf> {
    if let Some(iface) = iface {
        let dir = iface_dir(iface);
        if !dir.is_dir() {
            bail!(
                "no sipguard agent is running on {iface} (nothing pinned at {}); start one with \
                 `sipguard run --iface {iface}`",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let ifaces = pinned_ifaces();
    match ifaces.as_slice() {
        [] => bail!(
            "no sipguard agent is running (nothing pinned under {}); start one with \
             `sipguard run --iface IFACE`",
            layout_dir().display()
        ),
        [one] => Ok(iface_dir(one)),
        many => bail!(
            "sipguard agents run on several interfaces ({}); pick one with --iface",
            many.join(", ")
        ),
    }
}

/// Name of the pinned XDP link inside an interface's pin directory.
pub const LINK_PIN: &str = "link";

/// Remove an interface's pins: the link first (detaching the program when no
/// process holds it), then the maps.
pub fn remove_pins(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // The link first: removing its pin (with no process holding it) detaches
    // the program.
    let link = dir.join(LINK_PIN);
    if link.exists() {
        fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}
