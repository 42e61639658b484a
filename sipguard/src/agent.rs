//! `sipguard run`: load, configure, attach, pin, wait for a signal, clean up.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{
    ProgramError, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
};
use sipguard::{bpffs, config::Config, loader, maps, maps::Maps, preflight, stats::Snapshot};
use sipguard_common::maps::PROG_XDP;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

use crate::cli::{Mode, RunArgs};

/// Name of the pinned XDP link inside the interface's pin directory.
const LINK_PIN: &str = "link";
/// Lock files that stop two agents from claiming one interface.
const LOCK_DIR: &str = "/run/sipguard";

pub async fn run(args: RunArgs) -> Result<()> {
    preflight::require_root("sipguard run")?;
    let ifindex = preflight::ifindex(&args.iface)?;
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if args.monitor {
        cfg.enforce = false;
    }

    let _lock = lock_iface(&args.iface)?;
    bpffs::ensure_mounted()?;
    let dir = bpffs::iface_dir(&args.iface);
    if dir.exists() {
        warn!(
            "found state pinned by an earlier agent on {} that did not clean up; replacing it",
            args.iface
        );
        remove_pins(&dir)?;
    }

    let mut ebpf = loader::load(args.log_level)?;
    let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();

    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let guard = PinGuard(dir.clone());
    maps::pin_all(&ebpf, &dir)?;
    let mut live = Maps::from_ebpf(&mut ebpf)?;
    live.apply(&cfg)?;

    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP)
        .ok_or_else(|| anyhow!("program {PROG_XDP} missing"))?
        .try_into()?;
    let xdp_mode = match args.mode {
        Mode::Auto => XdpMode::Default,
        Mode::Native => XdpMode::Driver,
        Mode::Skb => XdpMode::Skb,
    };
    let link_id = prog
        .attach_to_if_index(ifindex, xdp_mode)
        .map_err(|e| attach_error(e, &args.iface, args.mode))?;
    let link = prog.take_link(link_id)?;
    let fd_link: FdLink = link.try_into().map_err(|_| {
        anyhow!("this kernel attached XDP without a bpf_link (needs Linux 5.9 or newer)")
    })?;
    let pinned = fd_link
        .pin(dir.join(LINK_PIN))
        .context("pinning the XDP link")?;

    info!(
        iface = %args.iface,
        mode = ?args.mode,
        enforce = cfg.enforce,
        udp_ports = ?cfg.sip.udp_ports,
        tcp_ports = ?cfg.sip.tcp_ports,
        pins = %dir.display(),
        "sipguard attached"
    );
    if !cfg.enforce {
        warn!("monitor mode: nothing is dropped; matches are counted as would_drop");
    }

    let log_task = logger.map(|logger| tokio::spawn(pump_kernel_logs(logger)));

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = sigint.recv() => info!("SIGINT received"),
        _ = sigterm.recv() => info!("SIGTERM received"),
    }

    if let Some(task) = log_task {
        task.abort();
    }
    let total = Snapshot::read(&live).map(|s| s.total).ok();
    detach(pinned)?;
    drop(guard);
    if let Some(t) = total {
        info!(
            passed = t.pass.packets,
            dropped = t.drop.packets,
            would_drop = t.would_drop.packets,
            "sipguard detached from {} and removed its pins",
            args.iface
        );
    }
    Ok(())
}

async fn pump_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd and keeps it open for as long
    // as the AsyncFd holds the logger.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let Ok(mut fd) = registered else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

fn detach(pinned: PinnedLink) -> Result<()> {
    // Unpinning gives the link back to this process; dropping it detaches.
    let link = pinned.unpin().context("unpinning the XDP link")?;
    drop(link);
    Ok(())
}

/// Removes the interface's pin directory when the agent stops (also on an
/// error path after the pins were made).
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(e) = remove_pins(&self.0) {
            warn!("could not remove {}: {e:#}", self.0.display());
        }
    }
}

fn remove_pins(dir: &Path) -> Result<()> {
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

fn attach_error(err: ProgramError, iface: &str, mode: Mode) -> anyhow::Error {
    let errno = match &err {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EBUSY) | Some(libc::EEXIST) => anyhow!(
            "{iface} already has an XDP program attached by something else (see `ip link show \
             {iface}`); detach it first"
        ),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) if mode == Mode::Native => anyhow!(
            "the driver of {iface} does not support native XDP; use --mode skb (generic) or \
             --mode auto"
        ),
        _ => anyhow::Error::new(err).context(format!("attaching XDP to {iface}")),
    }
}

/// One agent per interface: an exclusive, non-blocking flock on
/// /run/sipguard/IFACE.lock, holding the owner's PID for the error message.
fn lock_iface(iface: &str) -> Result<File> {
    fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
    let path = Path::new(LOCK_DIR).join(format!("{iface}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
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
    Ok(file)
}
