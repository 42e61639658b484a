//! `sipguard run`: load, configure, attach, pin, wait for a signal, clean up.

use std::{
    fs,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::SyncSender,
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    maps::{MapData, RingBuf},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use sipguard::{
    addr, bpffs,
    config::Config,
    egress::{self, EgressMode},
    ident, links, loader,
    lock::{self, IfaceLock},
    maps::{Maps, name},
    metrics::{self, AgentInfo, BanCounts},
    preflight,
    startup::HeldSignals,
    stats::Snapshot,
    status::AgentStatus,
    time,
    watcher::{AlertStats, Notice},
    widen::Widener,
};
use sipguard_common::{
    maps::PROG_XDP,
    source::{Ban, BanEvent, BanReason, SrcKey, WIDEN_AFTER},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

use crate::cli::{Mode, RunArgs};

pub async fn run(args: RunArgs) -> Result<()> {
    // Signals first: a SIGTERM or SIGINT while the agent starts is held
    // (startup.rs) and stops it cleanly, instead of killing a half-made
    // agent whose pins the next one would adopt.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let held = HeldSignals::hold();
    preflight::require_root("sipguard run")?;
    let ifindex = preflight::ifindex(&args.iface)?;
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if args.monitor {
        cfg.enforce = false;
    }
    // Before anything is loaded: a bouncer without its key is a config error.
    let crowdsec_key = if cfg.crowdsec.url.is_empty() {
        None
    } else {
        Some(sipguard::crowdsec::read_key(&cfg.crowdsec)?)
    };
    let watcher_password = if cfg.crowdsec.url.is_empty() || cfg.crowdsec.watcher_login.is_empty() {
        None
    } else {
        Some(sipguard::watcher::read_password(&cfg.crowdsec)?)
    };

    // Pins, lock and status are keyed by the interface and its namespace.
    let key = ident::key(&args.iface);
    let lock = IfaceLock::acquire(&key)?;
    // The lock is ours; a status file naming another live agent means that
    // agent's lock file was deleted under it.
    if let Some(pid) = AgentStatus::read(&key)
        .map(|s| s.pid)
        .filter(|pid| *pid != std::process::id() && lock::is_sipguard(*pid))
    {
        bail!(
            "sipguard agent pid {pid} still runs on {}, but its lock file was removed; stop it \
             (`kill {pid}`) before starting another",
            args.iface
        );
    }
    // A previous agent's status (it died without cleaning up) is not ours.
    AgentStatus::remove(&key);
    bpffs::ensure_mounted()?;
    let dir = bpffs::iface_dir(&key);
    let link_pin = dir.join(bpffs::LINK_PIN);
    take_over_unkeyed_pins(&dir, &args.iface)?;
    // State pinned by an agent that died (crash, kill -9, upgrade): its XDP
    // link is still attached and filtering with the last policy. Adopt it,
    // if it filters this very interface.
    let adopting = link_pin.exists() && pinned_link_filters(&dir, &args.iface)?;
    // A new interface's maps are built out of sight and published once
    // configured (see bpffs.rs); what a start that died half-way left there
    // is not anyone's state (we hold the interface's lock).
    let staging = bpffs::staging_dir(&key);
    if staging.exists() {
        bpffs::remove_pins(&staging)?;
    }
    let build_dir = if dir.is_dir() { dir.clone() } else { staging };
    fs::create_dir_all(&build_dir).with_context(|| format!("creating {}", build_dir.display()))?;

    // Maps are opened from their pins when present (bans, lists, counters
    // survive), created and pinned otherwise.
    let mut ebpf = loader::load_pinned(args.log_level, &build_dir, &cfg.tables)?;
    let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
    // Until attached, a failure removes what this agent pinned, but never
    // the state of a previous agent whose filter is still running.
    let mut guard = PinGuard((!adopting).then(|| build_dir.clone()));
    if held.stop_requested() {
        drop(guard);
        return stopped_while_starting(lock, &args.iface, adopting, &dir);
    }
    let mut live = Maps::from_ebpf(&mut ebpf)?.pinned_at(&build_dir);
    if adopting {
        let kept = live.bans_list().map(|b| b.len()).unwrap_or(0);
        info!(
            bans = kept,
            "adopting the state pinned by the previous agent on {}", args.iface
        );
        log_config_drift(&live, &cfg);
    }
    warn_table_drift(&live, &cfg);
    live.apply(&cfg)?;
    // Before the program is attached: the trust an earlier agent's clients
    // earned, and the bans it set, must be in the hints and ban slots the
    // first packets are judged by (an older agent's maps may have no
    // `BAN_SLOTS`; the first sweep would mend it, after the swap).
    let now = time::monotonic_ns();
    live.sync_trust_hints(now)?;
    live.sync_ban_slots(now)?;
    if build_dir != dir {
        bpffs::publish(&build_dir, &dir)?;
        guard.0 = Some(dir.clone());
        live = live.pinned_at(&dir);
    }
    if held.stop_requested() {
        drop(guard);
        return stopped_while_starting(lock, &args.iface, adopting, &dir);
    }
    // The fleet's bans before the first packet, if the Local API answers at
    // once; one that does not must not hold filtering back.
    if let Some(api_key) = &crowdsec_key {
        match sipguard::crowdsec::first_poll(&cfg.crowdsec, api_key, &dir, &key) {
            Ok(n) => info!("CrowdSec: {n} decisions in force before attaching"),
            Err(e) => warn!(
                "CrowdSec Local API not reached before attaching ({e:#}); its decisions follow \
                 once it answers"
            ),
        }
    }
    let ban_events: RingBuf<MapData> = ebpf
        .take_map(name::BAN_EVENTS)
        .ok_or_else(|| anyhow!("map {} missing", name::BAN_EVENTS))?
        .try_into()?;

    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP)
        .ok_or_else(|| anyhow!("program {PROG_XDP} missing"))?
        .try_into()?;
    let link = if adopting {
        // Swap the program inside the existing link (bpf_link_update): the
        // interface is never without a filter, not even for a packet.
        let old: XdpLink = links::pinned(&link_pin, "XDP")?;
        let id = prog
            .attach_to_link(old)
            .context("replacing the program in the pinned XDP link")?;
        info!("replaced the running XDP program atomically");
        FdLink::try_from(prog.take_link(id)?)
            .map_err(|_| anyhow!("XDP link without a bpf_link (needs Linux 5.9 or newer)"))?
    } else {
        let xdp_mode = match args.mode {
            Mode::Auto => XdpMode::Default,
            Mode::Native => XdpMode::Driver,
            Mode::Skb => XdpMode::Skb,
        };
        let link_id = prog
            .attach_to_if_index(ifindex, xdp_mode)
            .map_err(|e| attach_error(e, &args.iface, args.mode))?;
        let fd_link = FdLink::try_from(prog.take_link(link_id)?).map_err(|_| {
            anyhow!("this kernel attached XDP without a bpf_link (needs Linux 5.9 or newer)")
        })?;
        let pinned = fd_link.pin(&link_pin).context("pinning the XDP link")?;
        FdLink::from(pinned)
    };

    info!(
        iface = %args.iface,
        mode = ?args.mode,
        enforce = cfg.enforce,
        udp_ports = ?cfg.sip.udp_ports,
        tcp_ports = ?cfg.sip.tcp_ports,
        pins = %dir.display(),
        "sipguard attached"
    );
    let egress = egress::attach(&mut ebpf, &args.iface, &dir, args.tc_egress)?;
    let mode = xdp_mode_name(ifindex).unwrap_or("auto");
    let mut metrics_info = AgentInfo::new(&args.iface, mode);
    metrics_info.tc_egress = egress.mode.name().to_string();
    metrics_info.crowdsec_polled = crowdsec_key.as_ref().map(|_| Arc::default());
    let status = AgentStatus {
        pid: std::process::id(),
        kernel: metrics_info.kernel.clone(),
        xdp_mode: mode.to_string(),
        tc_egress: egress.mode,
        tc_egress_off_because: egress.why_off.clone(),
        addresses: sipguard::status::own_addresses().unwrap_or_else(|e| {
            warn!("blocklist feeds cannot be kept off this host's addresses: {e:#}");
            Vec::new()
        }),
    };
    // The status file is written last: `sipguard wait` returns when it
    // appears, as `systemctl start` does on READY=1.
    if let Err(e) = status.write(&key) {
        warn!("`sipguard stats` will not show which features are on: {e:#}");
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    // A stop requested from here on reaches the loop below.
    drop(held);
    match (egress.mode, &egress.why_off) {
        (EgressMode::Off, Some(why)) => warn!(
            "the TC egress program is not attached to {}: {why}. Trust earned from the \
             server's answers and credential-attack bans are off; everything else works",
            args.iface
        ),
        (mode, _) => info!(mode = mode.name(), "TC egress program attached"),
    }
    warn_about(&live, &cfg)?;

    let (metrics_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = if let Some(addr) = args.metrics.0 {
        // Filtering matters more than its metrics: a port that cannot be
        // bound is a loud error, not a reason to leave the interface open.
        match metrics::bind(addr).await {
            Ok(listener) => Some(tokio::spawn(metrics::serve_on(
                listener,
                dir.clone(),
                metrics_info.clone(),
                async move {
                    let _ = stopped.await;
                },
            ))),
            Err(e) => {
                error!("metrics are off: {e:#}");
                None
            }
        }
    } else {
        None
    };

    let crowdsec_stop = Arc::new(AtomicBool::new(false));
    let crowdsec = match crowdsec_key {
        Some(api_key) => match sipguard::crowdsec::spawn(
            &cfg.crowdsec,
            api_key,
            dir.clone(),
            key.clone(),
            crowdsec_stop.clone(),
            metrics_info.crowdsec_polled.clone().unwrap_or_default(),
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                error!("the CrowdSec bouncer is off: {e:#}");
                None
            }
        },
        None => None,
    };

    let watcher = match watcher_password {
        Some(password) => {
            match sipguard::watcher::spawn(&cfg.crowdsec, password, metrics_info.alerts.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    error!("sipguard's bans are not sent to CrowdSec: {e:#}");
                    None
                }
            }
        }
        None => None,
    };
    // The thread is not joined: it ends when the queue's sender is dropped
    // (below), or with the process when a request to an unreachable Local
    // API holds it at the stop (bans not yet sent are lost then).
    let alerts = watcher.map(|(tx, _thread)| tx);
    let report = alerts.map(|tx| Report {
        tx,
        stats: metrics_info.alerts.clone(),
    });

    let v6_prefix = cfg.ipv6_prefix;
    let log_task = logger.map(|logger| tokio::spawn(pump_kernel_logs(logger)));
    let names = Maps::from_pins(&dir)?;
    let counts = metrics_info.bans.clone();
    let ban_task = tokio::spawn(log_ban_events(ban_events, v6_prefix, names, report, counts));

    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut sweeps: u64 = 0;
    let mut sweeper: Option<std::thread::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT received"); break; }
            _ = sigterm.recv() => { info!("SIGTERM received"); break; }
            _ = sighup.recv() => reload(&mut live, &args, &mut cfg, &metrics_info),
            _ = sweep.tick() => {
                // On a thread of its own, with its own map handles: walking
                // large tables takes seconds, and signals and reloads must
                // not wait for it. A sweep still running skips the tick.
                if sweeper.as_ref().is_none_or(|t| t.is_finished()) {
                    let blocklist = sweeps.is_multiple_of(BLOCKLIST_SWEEP_TICKS);
                    sweeps += 1;
                    let (dir, info) = (dir.clone(), metrics_info.clone());
                    sweeper = Some(std::thread::spawn(move || {
                        sweep_expired(&dir, blocklist, &info)
                    }));
                }
            }
        }
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(task) = log_task {
        task.abort();
    }
    ban_task.abort();
    // The task, dropped, drops the queue's sender to the watcher.
    let _ = ban_task.await;
    crowdsec_stop.store(true, Ordering::Relaxed);
    if let Some(t) = crowdsec {
        let _ = t.join();
    }
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let total = Snapshot::counters(&live).map(|s| s.total).ok();
    // A clean stop removes everything: the link pin first (with our fd
    // closed right after, that detaches the program), then the maps.
    guard.0 = None;
    fs::remove_file(&link_pin).context("removing the XDP link pin")?;
    drop(link);
    egress.detach();
    AgentStatus::remove(&key);
    bpffs::remove_pins(&dir)?;
    sipguard::sets::forget(&key);
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

/// The program id of the XDP link pinned in `dir`.
fn pinned_link_prog(dir: &std::path::Path) -> Result<u32> {
    let link =
        PinnedLink::from_pin(dir.join(bpffs::LINK_PIN)).context("opening the pinned XDP link")?;
    Ok(FdLink::from(link).info()?.program_id())
}

/// Pins of an earlier sipguard, keyed by the interface name alone (an
/// upgrade's hand-over): moved to `dir` if their link filters this very
/// interface (or `ip` cannot tell), unless an agent of that version still
/// holds them. Another namespace's interface of that name is left alone.
fn take_over_unkeyed_pins(dir: &std::path::Path, iface: &str) -> Result<()> {
    let unkeyed = bpffs::iface_dir(iface);
    if unkeyed == dir || dir.exists() || !unkeyed.join(bpffs::LINK_PIN).exists() {
        return Ok(());
    }
    let ours = match xdp_prog_id(iface) {
        None => true,
        Some(attached) => attached.is_some() && attached == pinned_link_prog(&unkeyed).ok(),
    };
    if !ours {
        return Ok(());
    }
    if let Some(pid) = lock::running_agent(iface) {
        bail!(
            "an earlier sipguard agent (pid {pid}) still runs on {iface}; stop it first \
             (`kill {pid}`: its filter stays attached and this agent takes it over)"
        );
    }
    bpffs::publish(&unkeyed, dir)?;
    info!(
        "took over the pins of an earlier sipguard at {}",
        unkeyed.display()
    );
    Ok(())
}

/// Whether the XDP link pinned in `dir` is the one attached to `iface`. An
/// interface deleted and created again (a new ifindex) leaves the pinned
/// links severed: their pins are dropped, and the agent attaches anew with
/// the pinned maps (bans, lists, trust kept). Another program on `iface`
/// is not ours to replace.
fn pinned_link_filters(dir: &std::path::Path, iface: &str) -> Result<bool> {
    let pinned_prog = pinned_link_prog(dir)?;
    match xdp_prog_id(iface) {
        // `ip` could not say: adopt, as an agent without the check would.
        None => Ok(true),
        Some(Some(id)) if id == pinned_prog => Ok(true),
        Some(None) => {
            warn!(
                "the XDP link pinned by a previous agent no longer filters {iface} (was the \
                 interface deleted and created again?); attaching anew, keeping its bans, lists \
                 and trust"
            );
            for name in [bpffs::LINK_PIN, egress::LINK_PIN] {
                let pin = dir.join(name);
                if pin.exists() {
                    fs::remove_file(&pin)
                        .with_context(|| format!("removing the severed {}", pin.display()))?;
                }
            }
            Ok(false)
        }
        Some(Some(other)) => Err(anyhow!(
            "{iface} runs XDP program {other}, not the one sipguard pinned ({pinned_prog}); \
             something else attached it. Detach it (`ip link set dev {iface} xdp off`) or run \
             `sipguard detach --iface {iface}` to start from scratch"
        )),
    }
}

/// The id of the XDP program attached to `iface` (inner None: none), as
/// `ip -d link` reports it; None when `ip` cannot say (not installed).
fn xdp_prog_id(iface: &str) -> Option<Option<u32>> {
    let out = std::process::Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .ok()?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let xdp = &links.get(0)?["xdp"];
    Some(
        xdp["prog"]["id"]
            .as_u64()
            .or_else(|| xdp["attached"].get(0)?["prog"]["id"].as_u64())
            .and_then(|id| u32::try_from(id).ok()),
    )
}

/// SIGTERM or SIGINT came before the program was attached (and the caller
/// dropped its `PinGuard`, removing what this agent pinned): leave what a
/// clean stop leaves, nothing. An adopted state goes too, as a stop after
/// adopting would take it.
fn stopped_while_starting(
    lock: IfaceLock,
    iface: &str,
    adopting: bool,
    dir: &std::path::Path,
) -> Result<()> {
    if adopting {
        bpffs::remove_pins(dir)?;
        egress::remove_filter(iface);
    }
    lock.release();
    info!("stop requested while starting: nothing attached, pins removed");
    Ok(())
}

/// How often expired bans are removed from the maps.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Expired blocklist entries every this many sweeps: the walk of a large
/// list is long, and the programs already ignore expired entries.
const BLOCKLIST_SWEEP_TICKS: u64 = 12;

fn sweep_expired(dir: &std::path::Path, blocklist: bool, metrics: &AgentInfo) {
    let mut maps = match Maps::from_pins(dir) {
        Ok(maps) => maps,
        Err(e) => return warn!("sweeping expired bans failed: {e:#}"),
    };
    let prefix = maps
        .policy()
        .map(|p| addr::mask_len(&p.v6_mask))
        .unwrap_or(128);
    match maps.sweep_expired(time::monotonic_ns(), blocklist) {
        Ok((bans, blocks)) => {
            metrics
                .bans_swept
                .fetch_add(bans.len() as u64, std::sync::atomic::Ordering::Relaxed);
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

/// Log each ban the program sets, with the rate that triggered it, and
/// widen IPv6 bans to a /64 or /48 whose addresses keep being banned.
async fn log_ban_events(
    ring: RingBuf<MapData>,
    v6_prefix: u8,
    mut maps: Maps,
    report: Option<Report>,
    counts: Arc<BanCounts>,
) {
    let mut widener = Widener::default();
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
            counts.add(ev.reason);
            let detail = maps.ban_detail(ev.reason, ev.detail);
            let left = ev.expires_ns.saturating_sub(time::monotonic_ns());
            warn!(
                source = %addr::show_src(&ev.src, v6_prefix),
                reason = BanReason::name(ev.reason),
                %detail,
                %rate,
                expires_in = %humantime::format_duration(Duration::from_secs(left / 1_000_000_000)),
                "source banned"
            );
            if let Some(report) = &report {
                report.send(Notice {
                    net: addr::src_net(&ev.src, v6_prefix),
                    reason: ev.reason,
                    code: ev.detail,
                    detail,
                    rate: (ev.window_ns > 0)
                        .then(|| ev.window_pkts as f64 * 1e9 / ev.window_ns as f64),
                    expires_ns: ev.expires_ns,
                    at: SystemTime::now(),
                });
            }
            if v6_prefix > 64 {
                widen(&mut maps, &mut widener, &ev.src, report.as_ref(), &counts);
            }
        }
        guard.clear_ready();
    }
}

/// Ban the prefixes `widener` says `banned` completes (see widen.rs).
/// Where bans go to be reported to CrowdSec (watcher.rs).
struct Report {
    tx: SyncSender<Notice>,
    stats: Arc<AlertStats>,
}

impl Report {
    fn send(&self, notice: Notice) {
        sipguard::watcher::offer(&self.tx, notice, &self.stats);
    }
}

fn widen(
    maps: &mut Maps,
    widener: &mut Widener,
    banned: &SrcKey,
    report: Option<&Report>,
    counts: &BanCounts,
) {
    let Ok(policy) = maps.policy() else { return };
    let now = time::monotonic_ns();
    for group in widener.on_ban(banned, now, policy.ban_window_ns) {
        let bits = group.group_bits().unwrap_or(0);
        let ban = Ban {
            expires_ns: now + policy.ban_for_ns,
            since_ns: now,
            reason: BanReason::Widened as u32,
            detail: bits,
            dropped: 0,
        };
        match maps.ban_add(group, ban) {
            Ok(()) => {
                counts.add(ban.reason);
                warn!(
                    source = %addr::show_src(&group, 128),
                    reason = "widened",
                    after = WIDEN_AFTER,
                    "source banned: {WIDEN_AFTER} of its {} were banned",
                    if bits == 64 { "addresses" } else { "/64s" }
                );
                if let Some(report) = report {
                    report.send(Notice {
                        net: addr::src_net(&group, 128),
                        reason: ban.reason,
                        code: bits,
                        detail: format!("{WIDEN_AFTER} of its members banned"),
                        rate: None,
                        expires_ns: ban.expires_ns,
                        at: SystemTime::now(),
                    });
                }
            }
            Err(e) => warn!(
                "could not widen a ban to {}: {e:#}",
                addr::show_src(&group, 128)
            ),
        }
    }
}

/// The XDP mode the kernel reports for the interface (for metrics).
fn xdp_mode_name(ifindex: u32) -> Option<&'static str> {
    let out = std::process::Command::new("ip")
        .args(["-d", "-j", "link", "show"])
        .output()
        .ok()?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let link = links
        .as_array()?
        .iter()
        .find(|l| l["ifindex"].as_u64() == Some(u64::from(ifindex)))?;
    match link["xdp"]["mode"].as_u64()? {
        1 => Some("native"),
        2 => Some("skb"),
        3 => Some("hw"),
        _ => None,
    }
}

/// Warnings an operator must see at start and after a reload.
fn warn_about(live: &Maps, cfg: &Config) -> Result<()> {
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
    Ok(())
}

/// Table sizes apply when the maps are created: maps taken over from pins
/// (or running) keep theirs. Say so for each that differs from the file.
fn warn_table_drift(live: &Maps, cfg: &Config) {
    let Ok(have) = live.table_sizes() else { return };
    for ((key, _, has), (_, _, wants)) in have.entries().into_iter().zip(cfg.tables.entries()) {
        if has != wants {
            warn!(
                table = key,
                size = has,
                file = wants,
                "tables.{key} in the config file differs from the running table's size, which \
                 is kept; it applies after `sipguard detach` and a new start (bans and lists \
                 are then lost)"
            );
        }
    }
}

/// The config file is the source of truth when the agent starts or reloads:
/// settings changed live (`limits set`, `enforce`) since then are replaced by
/// the file's, and each one is logged so nothing changes silently. Lists are
/// additive: the file's entries are added; live entries stay.
fn log_config_drift(live: &Maps, cfg: &Config) {
    let Ok(current) = live.policy() else { return };
    let current = Config::from_policy(&current);
    let want = Config::from_policy(&cfg.policy());
    let (Ok(a), Ok(b)) = (
        toml::Value::try_from(&current),
        toml::Value::try_from(&want),
    ) else {
        return;
    };
    for (key, was, now) in diff_values("", &a, &b) {
        warn!(setting = %key, live = %was, file = %now, "the config file replaces a live change");
    }
}

fn diff_values(prefix: &str, a: &toml::Value, b: &toml::Value) -> Vec<(String, String, String)> {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => ta
            .iter()
            .flat_map(|(k, va)| {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match tb.get(k) {
                    Some(vb) => diff_values(&key, va, vb),
                    None => Vec::new(),
                }
            })
            .collect(),
        _ if a != b => vec![(prefix.to_string(), a.to_string(), b.to_string())],
        _ => Vec::new(),
    }
}

/// SIGHUP / `sipguard reload`: re-read the config file. A bad file is refused
/// and the running policy kept.
fn reload(live: &mut Maps, args: &RunArgs, cfg: &mut Config, metrics: &AgentInfo) {
    let Some(path) = &args.config else {
        warn!("reload requested, but the agent runs without --config: nothing to re-read");
        return;
    };
    let mut new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("reload refused, the running policy is kept: {e:#}");
            metrics.reload.record(false);
            return;
        }
    };
    if args.monitor {
        new.enforce = false;
    }
    if new.sip != cfg.sip {
        info!(udp_ports = ?new.sip.udp_ports, tcp_ports = ?new.sip.tcp_ports, "SIP ports changed");
    }
    log_config_drift(live, &new);
    warn_table_drift(live, &new);
    match live.apply(&new) {
        Ok(()) => {
            *cfg = new;
            metrics.reload.record(true);
            info!(config = %path.display(), "configuration reloaded");
            let _ = warn_about(live, cfg);
        }
        Err(e) => {
            metrics.reload.record(false);
            error!("reload refused, nothing was changed and the running policy is kept: {e:#}");
        }
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

/// Removes the interface's pin directory when the agent stops cleanly or
/// fails while starting. Not on a crash: then the pins keep the filter
/// running, and the next agent adopts them.
struct PinGuard(Option<PathBuf>);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(dir) = &self.0
            && let Err(e) = bpffs::remove_pins(dir)
        {
            warn!("could not remove {}: {e:#}", dir.display());
        }
    }
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
