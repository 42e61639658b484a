//! Driving the real `sipguard` binary in a lab: `sipguard run` on the
//! server's interface, `sipguard stats --json` read back, and finding (or
//! building) the binary.

use std::{
    ffi::OsStr,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::Value;
use sipguard_common::maps::{LAYOUT_VERSION, PIN_ROOT};

use super::{
    Lab, Node, SHORT_TIMEOUT,
    process::{run_bounded, stderr, terminate, wait_until},
};

/// Time allowed for the agent to load, attach and pin (the verifier can be
/// slow on a loaded 2-core machine).
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for building the sipguard binary when it is missing or stale.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Where `sipguard run` keeps its per-interface lock files.
const LOCK_DIR: &str = "/run/sipguard";

impl Lab {
    /// Start `sipguard run --iface <server iface> <extra>` in the server's
    /// namespace and wait until it has attached and pinned its state.
    pub fn start_agent(&self, extra: &[&str]) -> Result<Agent<'_>> {
        self.start_agent_on(&self.server, extra)
    }

    /// `start_agent` on `server` (the lab's, or one of `add_server`).
    pub fn start_agent_on(&self, server: &Node, extra: &[&str]) -> Result<Agent<'_>> {
        let mut agent = self.spawn_agent_on(server, extra)?;
        let ready = wait_until(AGENT_START_TIMEOUT, || {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait()? {
                bail!("sipguard run exited with {status}");
            }
            // The link is pinned last, after the maps are configured and the
            // program attached: its pin means the agent is ready. Found by
            // the interface's name, keyed or not (an older agent's, run with
            // SIPGUARD_BIN to compare).
            Ok(pin_dir(&server.iface).join("link").exists())
        });
        if let Err(e) = ready {
            let log = agent.log();
            return Err(e.context(format!(
                "sipguard run did not attach within {AGENT_START_TIMEOUT:?} (an empty log \
                 means it was still loading: run it by hand to see how long the verifier \
                 takes); its log:\n{log}"
            )));
        }
        Ok(agent)
    }

    /// Start `sipguard run --iface <server iface> <extra>` in the server's
    /// namespace and return at once.
    pub fn spawn_agent(&self, extra: &[&str]) -> Result<Agent<'_>> {
        self.spawn_agent_on(&self.server, extra)
    }

    /// `spawn_agent` on `server`.
    pub fn spawn_agent_on(&self, server: &Node, extra: &[&str]) -> Result<Agent<'_>> {
        let bin = sipguard_bin()?;
        static AGENTS: AtomicU32 = AtomicU32::new(0);
        let log = self.dir().join(format!(
            "agent-{}.log",
            AGENTS.fetch_add(1, Ordering::Relaxed)
        ));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = server
            .command(&bin)
            .args(["run", "--iface", &server.iface])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Agent {
            iface: server.iface.clone(),
            _lab: std::marker::PhantomData,
            pid: child.id(),
            child: Some(child),
            log,
        })
    }

    /// The key sipguard files the server interface's agent under (pins,
    /// lock, status): its name tagged with the server's network namespace.
    pub fn agent_key(&self) -> String {
        let ino = fs::metadata(self.server.netns_path()).map_or(0, |m| m.ino());
        format!("{}@netns-{ino}", self.iface())
    }

    /// Where the server interface's agent pins its maps, whether or not it
    /// has yet.
    pub fn agent_pin_dir(&self) -> PathBuf {
        layout_dir().join(self.agent_key())
    }

    /// How XDP is attached to the server's interface, from `ip -j link`;
    /// None when nothing is attached.
    pub fn xdp_attach_mode(&self) -> Result<Option<XdpAttach>> {
        let out = self.run(
            &self.server,
            "ip",
            ["-j", "link", "show", "dev", self.iface()],
            SHORT_TIMEOUT,
        )?;
        ensure!(
            out.status.success(),
            "ip link show failed: {}",
            stderr(&out)
        );
        let links: Value = serde_json::from_slice(&out.stdout).context("parsing `ip -j link`")?;
        // iproute2 prints the kernel's XDP_ATTACHED_* value.
        Ok(match links[0]["xdp"]["mode"].as_u64() {
            None | Some(0) => None,
            Some(1) => Some(XdpAttach::Native),
            Some(2) => Some(XdpAttach::Skb),
            Some(3) => Some(XdpAttach::Offload),
            Some(_) => Some(XdpAttach::Multi),
        })
    }
}

/// XDP attach modes as the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// Driver mode (`--mode native`).
    Native,
    /// Generic mode (`--mode skb`).
    Skb,
    Offload,
    /// Programs in several modes at once.
    Multi,
}

/// A running `sipguard run`; stopped with SIGTERM when dropped.
pub struct Agent<'lab> {
    /// The interface it protects.
    iface: String,
    /// An agent ends before its lab does.
    _lab: std::marker::PhantomData<&'lab Lab>,
    pub pid: u32,
    child: Option<Child>,
    log: PathBuf,
}

impl Agent<'_> {
    /// The agent's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `sipguard stats --iface <iface> --json`, parsed.
    pub fn stats(&self) -> Result<Value> {
        sipguard_stats(&self.iface)
    }

    /// Where the agent pins its maps and link.
    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.iface)
    }

    /// The file its stdout and stderr go to (readable after `stop`).
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// Whether the agent has exited (without reaping it twice).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("agent already stopped"),
        }
    }

    /// Stop the agent with SIGTERM and wait for it to exit.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().expect("agent already stopped");
        terminate(&mut child)
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        match terminate(&mut child) {
            Ok(status) if status.success() => {}
            other => eprintln!(
                "sipguard agent (pid {}) did not stop cleanly: {other:?}; log:\n{}",
                self.pid,
                self.log()
            ),
        }
        // Anything it left behind is removed with the lab (`remove_leftovers`).
    }
}

/// After every agent on `iface` has exited: remove pins a killed agent could
/// not (the link first, which detaches the program) and its lock file,
/// which `sipguard run` leaves in place by design. The interface name is
/// unique to one lab, so nothing else uses these paths.
pub(super) fn remove_leftovers(iface: &str) {
    for dir in [pin_dir(iface), staging_dir(iface)] {
        if dir.exists() {
            eprintln!("removing pins left behind at {}", dir.display());
            let _ = fs::remove_file(dir.join("link"));
            let _ = fs::remove_dir_all(&dir);
        }
    }
    for key in keys_in(Path::new(LOCK_DIR), iface) {
        let key = key.trim_end_matches(".lock").trim_end_matches(".status");
        let _ = fs::remove_file(Path::new(LOCK_DIR).join(format!("{key}.lock")));
        sipguard::status::AgentStatus::remove(key);
    }
}

/// Names in `dir` that belong to `iface`: its own, or tagged with a network
/// namespace (`IFACE@netns-N`, sipguard's ident.rs), files with a suffix too.
fn keys_in(dir: &Path, iface: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let stem = name.trim_end_matches(".lock").trim_end_matches(".status");
            sipguard::ident::iface_of(stem) == iface
        })
        .collect()
}

fn layout_dir() -> PathBuf {
    Path::new(PIN_ROOT).join(format!("v{LAYOUT_VERSION}"))
}

/// The key sipguard files `iface`'s agent under (see `Lab::agent_key`), as
/// found among its pins and locks; `iface` itself when there are none.
pub fn agent_key(iface: &str) -> String {
    keys_in(&layout_dir(), iface)
        .into_iter()
        .chain(
            keys_in(Path::new(LOCK_DIR), iface)
                .into_iter()
                .filter(|n| n.ends_with(".lock"))
                .map(|n| n.trim_end_matches(".lock").to_string()),
        )
        .next()
        .unwrap_or_else(|| iface.to_string())
}

/// The pin directory of the agent on `iface`.
pub fn pin_dir(iface: &str) -> PathBuf {
    keys_in(&layout_dir(), iface)
        .into_iter()
        .next()
        .map_or_else(|| layout_dir().join(iface), |key| layout_dir().join(key))
}

/// Where an agent on `iface` builds its pins before publishing them.
pub fn staging_dir(iface: &str) -> PathBuf {
    let dir = Path::new(PIN_ROOT).join(format!("starting-v{LAYOUT_VERSION}"));
    keys_in(&dir, iface)
        .into_iter()
        .next()
        .map_or_else(|| dir.join(iface), |key| dir.join(key))
}

/// `sipguard stats --iface <iface> --json`, parsed. Shape:
/// `classes.<class>.<pass|drop|would_drop>.{packets,bytes}`, the same under
/// `reasons.<reason>`, and `total.<verdict>`.
pub fn sipguard_stats(iface: &str) -> Result<Value> {
    let out = run_bounded(
        Command::new(sipguard_bin()?).args(["stats", "--iface", iface, "--json"]),
        SHORT_TIMEOUT,
    )?;
    ensure!(
        out.status.success(),
        "sipguard stats --iface {iface} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).context("parsing `sipguard stats --json` output")
}

/// Packets counted under `group` ("classes" or "reasons") / `name` /
/// `verdict` in a stats snapshot. Panics naming the path if it is absent, so
/// a renamed counter fails loudly instead of reading as zero.
pub fn packets(stats: &Value, group: &str, name: &str, verdict: &str) -> u64 {
    stats[group][name][verdict]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("stats have no {group}.{name}.{verdict}.packets: {stats}"))
}

/// Total packets under `group` for `verdict`, over every name (so counters
/// added later are included).
pub fn group_packets(stats: &Value, group: &str, verdict: &str) -> u64 {
    let names = stats[group]
        .as_object()
        .unwrap_or_else(|| panic!("stats have no {group}: {stats}"));
    names
        .keys()
        .map(|name| packets(stats, group, name, verdict))
        .sum()
}

/// The `sipguard` binary the tests drive.
///
/// Integration tests of sipguard-tests cannot use `CARGO_BIN_EXE_sipguard`
/// (that only exists for the binary's own crate), so we look for it in the
/// same target directory and profile as the running test executable
/// (`<target>/<profile>/deps/<test>`). If it is missing or older than the
/// sources it is built from, we run `cargo build -p sipguard` for that
/// profile first, so a test never runs an old agent against new code.
/// Cross-target layouts (`<target>/<triple>/<profile>`) are not handled.
///
/// `SIPGUARD_BIN=/path/to/sipguard` overrides all of this, to test an
/// installed or separately built binary.
pub fn sipguard_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let found = match std::env::var_os("SIPGUARD_BIN") {
            Some(path) => {
                let path = PathBuf::from(path);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(anyhow!("SIPGUARD_BIN={} is not a file", path.display()))
                }
            }
            None => locate_or_build(),
        };
        found.map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn locate_or_build() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!("unexpected profile directory {}", profile_dir.display()),
    };
    let bin = profile_dir.join("sipguard");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace");
    let built = fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest_source = newest_mtime(workspace)?;
    if built.is_some_and(|b| b >= newest_source) {
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building sipguard ({profile}): {} is missing or older than its sources",
        bin.display()
    );
    let out = run_bounded(
        Command::new(cargo)
            .current_dir(workspace)
            .args([
                "build",
                "-p",
                "sipguard",
                "--bin",
                "sipguard",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir),
        BUILD_TIMEOUT,
    )?;
    ensure!(
        out.status.success() && bin.exists(),
        "`cargo build -p sipguard --profile {profile}` failed; fix the build and rerun:\n{}",
        stderr(&out)
    );
    Ok(bin)
}

/// Newest modification time of the files the sipguard binary is built from.
fn newest_mtime(workspace: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = ["Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|f| workspace.join(f))
        .collect();
    for krate in ["sipguard", "sipguard-common", "sipguard-ebpf"] {
        for part in ["src", "Cargo.toml", "build.rs"] {
            stack.push(workspace.join(krate).join(part));
        }
    }
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else {
            newest = newest.max(meta.modified()?);
        }
    }
    Ok(newest)
}
