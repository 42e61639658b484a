//! bpffs: where the agent pins its maps and link, so other `sipguard`
//! processes (stats, live control) can find them.
//!
//! Layout: `/sys/fs/bpf/sipguard/v<LAYOUT_VERSION>/<key>/<MAP or link>`,
//! where the key is the interface's name tagged with its network namespace
//! (ident.rs). A starting agent builds a new interface's
//! directory under `starting-v<LAYOUT_VERSION>/<key>` and renames it into place once its
//! policy, lists and signatures are written: a command that finds the
//! directory finds a complete agent.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sipguard_common::maps::{BPFFS, LAYOUT_VERSION, PIN_ROOT};

use crate::{ident, lock};

/// bpffs magic number from `statfs(2)`.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The versioned directory holding one directory per protected interface.
pub fn layout_dir() -> PathBuf {
    Path::new(PIN_ROOT).join(format!("v{LAYOUT_VERSION}"))
}

/// The pin directory of the agent on the interface `key` names (ident.rs).
pub fn iface_dir(key: &str) -> PathBuf {
    layout_dir().join(key)
}

/// Where the agent on the interface `key` names builds its pins before
/// publishing them.
pub fn staging_dir(key: &str) -> PathBuf {
    Path::new(PIN_ROOT)
        .join(format!("starting-v{LAYOUT_VERSION}"))
        .join(key)
}

/// Move a staging directory into place. One rename on one bpffs: other
/// processes see either no directory or the whole of it.
pub fn publish(staging: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(layout_dir())
        .with_context(|| format!("creating {}", layout_dir().display()))?;
    fs::rename(staging, dir).with_context(|| {
        format!(
            "publishing the pins: renaming {} to {}",
            staging.display(),
            dir.display()
        )
    })
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs is plain integers (zero is a value); `c` is a valid C
    // string and `st` writable.
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
    // SAFETY: valid C strings; a null data pointer is allowed for bpffs.
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

/// Keys (see ident.rs) of the interfaces that have pinned state under the
/// current layout.
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

/// How long a command waits for an agent that is still starting (loading
/// its programs can take seconds on a busy host).
pub const START_WAIT: Duration = Duration::from_secs(60);

/// Wait until the agent `pid`, which holds `key`'s lock, publishes its pins.
fn wait_for_start(key: &str, pid: i32) -> Result<PathBuf> {
    let dir = iface_dir(key);
    let iface = ident::iface_of(key);
    let deadline = Instant::now() + START_WAIT;
    loop {
        if dir.is_dir() {
            return Ok(dir);
        }
        if lock::running_agent(key).is_none() {
            bail!(
                "the sipguard agent on {key} (pid {pid}) exited while starting; its log says \
                 why (`journalctl -u sipguard@{iface}`)"
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the sipguard agent on {key} (pid {pid}) is still starting after {} s; retry \
                 once `sipguard wait --iface {iface}` returns",
                START_WAIT.as_secs()
            );
        }
        sleep(Duration::from_millis(20));
    }
}

/// The key (see ident.rs) a command given `iface` means: the interface of
/// the command's own network namespace when it has one of that name (or an
/// agent is pinned or starting for it), else the one agent on an interface
/// of that name in another namespace (a command run from the host for an
/// agent in a container).
pub fn resolve(iface: &str) -> Result<Option<String>> {
    let own = ident::key(iface);
    if ident::exists_here(iface) || iface_dir(&own).is_dir() || lock::running_agent(&own).is_some()
    {
        return Ok(Some(own));
    }
    let mut others: Vec<String> = pinned_ifaces()
        .into_iter()
        .chain(lock::running_agents().into_iter().map(|(key, _)| key))
        .filter(|key| ident::iface_of(key) == iface)
        .collect();
    others.sort();
    others.dedup();
    match others.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => bail!(
            "agents on interfaces named {iface} run in {} network namespaces ({}); run the \
             command inside the agent's namespace (`nsenter --net=/run/netns/NAME sipguard \
             ...`)",
            many.len(),
            many.join(", ")
        ),
    }
}

/// Find the pin directory a client command should use: `iface` if given,
/// else the only agent running (of the command's own network namespace
/// first). An agent still starting is waited for.
pub fn find_agent(iface: Option<&str>) -> Result<PathBuf> {
    if let Some(iface) = iface {
        let key = resolve(iface)?.unwrap_or_else(|| ident::key(iface));
        let dir = iface_dir(&key);
        if !dir.is_dir() {
            if let Some(pid) = lock::running_agent(&key) {
                return wait_for_start(&key, pid);
            }
            bail!(
                "no sipguard agent is running on {iface} (nothing pinned at {}); start one with \
                 `sipguard run --iface {iface}`",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let own_first = |keys: Vec<String>| -> Vec<String> {
        let own: Vec<String> = keys.iter().filter(|k| ident::is_own(k)).cloned().collect();
        if own.is_empty() { keys } else { own }
    };
    let keys = own_first(pinned_ifaces());
    if keys.is_empty() {
        let starting = own_first(lock::running_agents().into_iter().map(|(k, _)| k).collect());
        if let [key] = starting.as_slice()
            && let Some(pid) = lock::running_agent(key)
        {
            return wait_for_start(key, pid);
        }
    }
    match keys.as_slice() {
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
