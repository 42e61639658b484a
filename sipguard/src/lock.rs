//! One agent per interface: an exclusive, non-blocking `flock` on
//! /run/sipguard/IFACE.lock, holding the owner's PID so other commands can
//! name it (errors) or signal it (`reload`, `detach`). And `ListsLock`,
//! which serialises the list-flag updates of all sipguard processes.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Where the lock files live.
pub const LOCK_DIR: &str = "/run/sipguard";

fn lock_path(iface: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{iface}.lock"))
}

/// The agent's claim on an interface, held for the agent's lifetime (the
/// kernel drops it when the process dies, however it dies).
pub struct IfaceLock {
    path: PathBuf,
    _file: File,
}

fn try_lock(file: &File) -> bool {
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl IfaceLock {
    pub fn acquire(iface: &str) -> Result<IfaceLock> {
        fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let path = lock_path(iface);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !try_lock(&file) {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "another sipguard agent (pid {}) is already running on {iface}; stop it first, or \
                 use `sipguard stats --iface {iface}` to watch it",
                pid.trim()
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

/// The PID of the agent running on `iface`, if one is.
pub fn running_agent(iface: &str) -> Option<i32> {
    let mut file = File::open(lock_path(iface)).ok()?;
    if try_lock(&file) {
        // Nobody holds it: no agent. Our lock goes with the file handle.
        return None;
    }
    let mut pid = String::new();
    file.read_to_string(&mut pid).ok()?;
    pid.trim().parse().ok()
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
