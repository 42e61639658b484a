//! What the running agent could switch on on this kernel, published in
//! /run/sipguard/IFACE.status (JSON) for `sipguard stats`: the maps say
//! what the programs counted, not which programs this kernel runs.

use std::{
    fs,
    path::PathBuf,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    bpffs,
    egress::EgressMode,
    ident,
    lock::{self, LOCK_DIR},
};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentStatus {
    /// The agent's PID: the status is current only while that agent holds
    /// the interface's lock.
    #[serde(default)]
    pub pid: u32,
    /// `uname -r`.
    pub kernel: String,
    /// XDP attach mode as the kernel reports it: native, skb or auto.
    pub xdp_mode: String,
    /// How the TC egress program is attached.
    pub tc_egress: EgressMode,
    /// Why it is off, when it is.
    pub tc_egress_off_because: Option<String>,
    /// The addresses of the agent's network namespace at start: what a
    /// blocklist feed may never block (guards.rs).
    #[serde(default)]
    pub addresses: Vec<std::net::IpAddr>,
}

/// The addresses of every interface of this network namespace.
pub fn own_addresses() -> Result<Vec<std::net::IpAddr>> {
    Ok(if_addrs::get_if_addrs()
        .context("listing this host's addresses")?
        .into_iter()
        .map(|i| i.ip())
        .collect())
}

impl AgentStatus {
    /// The features that need the egress program, and whether they are on.
    pub fn features(&self) -> [(&'static str, bool); 2] {
        let on = self.tc_egress != EgressMode::Off;
        [("earned_trust", on), ("auth_failure_bans", on)]
    }

    /// One line for `sipguard stats`.
    pub fn line(&self) -> String {
        let features: Vec<String> = self
            .features()
            .iter()
            .map(|(name, on)| format!("{name}={}", if *on { "on" } else { "off" }))
            .collect();
        let mut line = format!(
            "kernel {}: xdp={} tc_egress={} {}",
            self.kernel,
            self.xdp_mode,
            self.tc_egress.name(),
            features.join(" ")
        );
        if let Some(why) = &self.tc_egress_off_because {
            line.push_str(&format!(" ({why})"));
        }
        line
    }

    pub fn write(&self, key: &str) -> Result<()> {
        let path = path(key);
        fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The status the agent on the interface `key` names published, if it did.
    pub fn read(key: &str) -> Option<AgentStatus> {
        serde_json::from_slice(&fs::read(path(key)).ok()?).ok()
    }

    /// The status of the agent now running on `iface` (resolved as commands
    /// resolve it, `bpffs::resolve`), once it has attached (it writes the
    /// status last): waits up to `timeout`.
    pub fn wait(iface: &str, timeout: Duration) -> Result<AgentStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let key = bpffs::resolve(iface)?.unwrap_or_else(|| ident::key(iface));
            let running = lock::running_agent(&key);
            if let (Some(pid), Some(status)) = (running, AgentStatus::read(&key))
                && status.pid == pid as u32
            {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                match running {
                    Some(pid) => bail!(
                        "the sipguard agent on {key} (pid {pid}) has not attached within {}",
                        humantime::format_duration(timeout)
                    ),
                    None => bail!(
                        "no sipguard agent started on {iface} within {}; start one with \
                         `sipguard run --iface {iface}` (or see why it stopped: `journalctl -u \
                         sipguard@{iface}`)",
                        humantime::format_duration(timeout)
                    ),
                }
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn remove(key: &str) {
        let _ = fs::remove_file(path(key));
    }
}

fn path(key: &str) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{key}.status"))
}
