//! One agent per interface: an exclusive, non-blocking `flock` on
//! /run/sipguard/IFACE.lock, holding the owner's PID so other commands can
//! name it (errors) or signal it (`reload`, `detach`). And `ListsLock`,
//! which serialises the list-flag updates of all sipguard processes.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd,
        unix::fs::{
            DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
        },
    },
    path::{Path, PathBuf},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Where the lock files live.
pub const LOCK_DIR: &str = "/run/sipguard";

fn lock_path(key: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{key}.lock"))
}

/// The agent's claim on an interface, held for the agent's lifetime (the
/// kernel drops it when the process dies, however it dies).
pub struct IfaceLock {
    path: PathBuf,
    _file: File,
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock(2) on a descriptor `file` keeps open.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Make `LOCK_DIR` root's own and closed to others: a user who could open
/// a lock file could hold its lock and keep agents from starting or
/// stopping, and one who could write the directory could replace the file.
fn private_lock_dir() -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(LOCK_DIR)
        .with_context(|| format!("creating {LOCK_DIR}"))?;
    let meta = fs::metadata(LOCK_DIR).with_context(|| format!("reading {LOCK_DIR}"))?;
    if meta.uid() != 0 {
        bail!(
            "{LOCK_DIR} belongs to uid {}, not root: another user could hold sipguard's locks. \
             Remove it (`rm -r {LOCK_DIR}`) and start again",
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(LOCK_DIR, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {LOCK_DIR} private (mode 0700)"))?;
    }
    Ok(())
}

/// Open (creating if needed) a lock file: mode 0600, never through a
/// symlink, and tightened to 0600 if an older sipguard made it wider.
fn open_lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file.metadata()?;
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Whether `path` still names the file `file` has open (it was not removed
/// or replaced since it was opened).
fn still_named(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl IfaceLock {
    pub fn acquire(key: &str) -> Result<IfaceLock> {
        private_lock_dir()?;
        let path = lock_path(key);
        let mut file = open_lock_file(&path)?;
        // The file may have been removed between our open and our lock (by
        // a clean exit of the agent we raced with): lock what the path names.
        if try_lock(&file) && !still_named(&path, &file) {
            file = open_lock_file(&path)?;
        }
        if !try_lock(&file) {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "another sipguard agent (pid {}) is already running on {key}; stop it first, or \
                 use `sipguard stats --iface {}` to watch it",
                pid.trim(),
                crate::ident::iface_of(key)
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(IfaceLock { path, _file: file })
    }

    /// Remove the lock file on a clean exit (still holding the lock, so no
    /// other agent can have taken it).
    pub fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether process `pid` is alive and runs the sipguard binary.
pub fn is_sipguard(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sipguard")
}

/// The PID of the agent running on the interface `key` names, if one is.
pub fn running_agent(key: &str) -> Option<i32> {
    let mut file = File::open(lock_path(key)).ok()?;
    if try_lock(&file) {
        // Nobody holds it: no agent. Our lock goes with the file handle.
        return None;
    }
    let mut pid = String::new();
    file.read_to_string(&mut pid).ok()?;
    pid.trim().parse().ok()
}

/// Every agent running, as (key, PID), from the lock files.
pub fn running_agents() -> Vec<(String, i32)> {
    let Ok(entries) = fs::read_dir(LOCK_DIR) else {
        return Vec::new();
    };
    let mut out: Vec<(String, i32)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = name.strip_suffix(".lock")?.to_string();
            let pid = running_agent(&key)?;
            Some((key, pid))
        })
        .collect();
    out.sort();
    out
}

/// How long a command waits for another to finish its list-flag update.
const LISTS_LOCK_WAIT: Duration = Duration::from_secs(5);

/// An exclusive `flock` on an interface's pin directory, held while a
/// process reads the allow and block lists and writes their `EMPTY_LISTS`
/// flags (`Maps::refresh_list_flags`). Without it, a command that read a
/// list as empty could write that flag after another command had added an
/// entry and cleared it, hiding the entry until the agent's next sweep.
/// Released when dropped (the kernel releases it if the process dies).
pub struct ListsLock {
    _dir: File,
}

impl ListsLock {
    pub fn acquire(dir: &Path) -> Result<ListsLock> {
        let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        let deadline = Instant::now() + LISTS_LOCK_WAIT;
        while !try_lock(&file) {
            if Instant::now() >= deadline {
                bail!(
                    "another sipguard process has held the list lock on {} for {} s; retry, \
                     and if it persists, look for a stuck `sipguard` process",
                    dir.display(),
                    LISTS_LOCK_WAIT.as_secs()
                );
            }
            sleep(Duration::from_millis(10));
        }
        Ok(ListsLock { _dir: file })
    }
}
