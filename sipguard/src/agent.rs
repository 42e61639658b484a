//! `sipguard run`: load, configure, attach, pin, wait for a signal, clean up.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    maps::{MapData, RingBuf},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use sipguard::{addr, bpffs, config::Config, loader, maps, maps::Maps, preflight, stats::Snapshot};
use sipguard_common::{
    maps::{MAP_BAN_EVENTS, PROG_XDP},
    source::{BanEvent, BanReason},
};
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

    let lock = lock_iface(&args.iface)?;
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
    let ban_events: RingBuf<MapData> = ebpf
        .take_map(MAP_BAN_EVENTS)
        .ok_or_else(|| anyhow!("map {MAP_BAN_EVENTS} missing"))?
        .try_into()?;

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
    if live.allow_list()?.is_empty() {
        warn!(
            "the allowlist is empty: SIP trunks and peers are rate-limited and can be banned \
             like anyone else. Allowlist them with `sipguard allow add CIDR` or `allow = [...]` \
             in the config file"
        );
    }

    let v6_prefix = cfg.ipv6_prefix;
    let log_task = logger.map(|logger| tokio::spawn(pump_kernel_logs(logger)));
    let names = Maps::from_pins(&dir)?;
    let ban_task = tokio::spawn(log_ban_events(ban_events, v6_prefix, names));

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT received"); break; }
            _ = sigterm.recv() => { info!("SIGTERM received"); break; }
            _ = sweep.tick() => sweep_expired(&mut live),
        }
    }

    if let Some(task) = log_task {
        task.abort();
    }
    ban_task.abort();
    let total = Snapshot::read(&live).map(|s| s.total).ok();
    detach(pinned)?;
    drop(guard);
    lock.release();
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

/// How often expired bans and blocklist entries are removed from the maps.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

fn sweep_expired(maps: &mut Maps) {
    let prefix = maps
        .policy()
        .map(|p| addr::mask_len(&p.v6_mask))
        .unwrap_or(128);
    match maps.sweep_expired(addr::monotonic_ns()) {
        Ok((bans, blocks)) => {
            for (key, ban) in bans {
                info!(
                    source = %addr::show_src(&key, prefix),
                    dropped = ban.dropped,
                    "ban expired"
                );
            }
            if blocks > 0 {
                info!(entries = blocks, "blocklist entries expired");
            }
        }
        Err(e) => warn!("sweeping expired bans failed: {e:#}"),
    }
}

/// Log each ban the program sets, with the rate that triggered it.
async fn log_ban_events(ring: RingBuf<MapData>, v6_prefix: u8, maps: Maps) {
    // SAFETY: the ring buffer owns its fd and keeps it open while registered.
    let registered =
        unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let Ok(mut fd) = registered else {
        warn!("cannot watch ban events; bans still work, they are just not logged");
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<BanEvent>() {
                continue;
            }
            // SAFETY: the program writes whole `BanEvent`s; length checked.
            let ev: BanEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            // Scanner bans come from one packet: no rate to speak of.
            let rate = if ev.window_ns > 0 {
                format!("{:.0}/s", ev.window_pkts as f64 * 1e9 / ev.window_ns as f64)
            } else {
                "-".to_string()
            };
            let detail = maps.ban_detail(ev.reason, ev.bucket);
            let left = ev.expires_ns.saturating_sub(addr::monotonic_ns());
            warn!(
                source = %addr::show_src(&ev.src, v6_prefix),
                reason = BanReason::name(ev.reason),
                %detail,
                %rate,
                expires_in = %humantime::format_duration(Duration::from_secs(left / 1_000_000_000)),
                "source banned"
            );
        }
        guard.clear_ready();
    }
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

/// The agent's claim on an interface.
struct IfaceLock {
    path: PathBuf,
    _file: File,
}

impl IfaceLock {
    /// Remove the lock file on a clean exit (still holding the lock, so no
    /// other agent can have taken it).
    fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// One agent per interface: an exclusive, non-blocking flock on
/// /run/sipguard/IFACE.lock, holding the owner's PID for the error message.
fn lock_iface(iface: &str) -> Result<IfaceLock> {
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
    Ok(IfaceLock { path, _file: file })
}
