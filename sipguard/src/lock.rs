//! One agent per interface: an exclusive, non-blocking `flock` on
//! /run/sipguard/IFACE.lock, holding the owner's PID so other commands can
//! name it (errors) or signal it (`reload`, `detach`).

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
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
