//! Kamailio as the SIP server in a lab: the proxy in tests/kamailio/proxy.cfg
//! started on the server's address, and the CPU time its processes used.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};

use crate::netns::{Bg, Lab, Node};

/// Shared memory for transactions (MB), with room for a flood's worth of
/// in-flight ones.
const SHM_MB: &str = "256";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The user the proxy relays calls for; everyone else gets 404.
pub const KNOWN_USER: &str = "service";

pub struct Kamailio {
    pub bg: Bg,
}

impl Kamailio {
    /// Start the proxy in `node`'s namespace on `listen`:5060, relaying calls
    /// for `KNOWN_USER` to `uas`. Runs with `-x tlsf`: with Debian's default
    /// shared-memory allocator Kamailio thrashes under a flood.
    pub fn start(lab: &Lab, node: &Node, listen: IpAddr, uas: SocketAddr) -> Result<Self> {
        let (listen, uas) = (listen.to_string(), uas.to_string());
        let subs = [
            ("@LISTEN@", listen.as_str()),
            ("@UAS@", uas.as_str()),
            ("@KNOWN_USER@", KNOWN_USER),
        ];
        let bg = start_config(lab, node, "proxy.cfg", &subs, SHM_MB)?;
        Ok(Kamailio { bg })
    }

    /// CPU seconds (user + system) used so far by Kamailio's main process
    /// and every process it forked.
    pub fn cpu_seconds(&self) -> Result<f64> {
        tree_cpu_seconds(self.bg.pid)
    }
}

/// User + system CPU seconds of `root` and all its live descendants, from
/// /proc/PID/stat (fields 14 and 15, in clock ticks).
pub fn tree_cpu_seconds(root: u32) -> Result<f64> {
    let mut parent = HashMap::new();
    let mut ticks = HashMap::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit while we read: skip it.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name (field 2) is in parentheses and may hold spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
        if f.len() < 13 {
            continue;
        }
        parent.insert(pid, f[1].parse::<u32>().unwrap_or(0));
        ticks.insert(
            pid,
            f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0),
        );
    }
    ensure!(ticks.contains_key(&root), "process {root} is not running");
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parent.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    let total: u64 = ticks
        .iter()
        .filter(|(pid, _)| in_tree(**pid))
        .map(|(_, t)| t)
        .sum();
    Ok(total as f64 / clock_ticks()? as f64)
}

fn clock_ticks() -> Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK")
}

/// Start Kamailio in `node`'s namespace with tests/kamailio/`cfg`, each
/// `@KEY@` placeholder of `subs` replaced, and `shm_mb` MB of shared memory;
/// wait for UDP 5060. The lab stops it (by PID) when dropped. Runs with
/// `-x tlsf`: with Debian's default allocator Kamailio thrashes under a flood.
pub fn start_config(
    lab: &Lab,
    node: &Node,
    cfg: &str,
    subs: &[(&str, &str)],
    shm_mb: &str,
) -> Result<Bg> {
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kamailio")
        .join(cfg);
    let mut text =
        fs::read_to_string(&template).with_context(|| format!("reading {}", template.display()))?;
    for (key, value) in subs {
        text = text.replace(key, value);
    }
    let dir = lab.dir().join("kamailio");
    fs::create_dir_all(&dir)?;
    let cfg_path = dir.join(cfg);
    fs::write(&cfg_path, text)?;
    let dir = dir.to_str().context("lab dir is not UTF-8")?;
    let cfg_path = cfg_path.to_str().context("lab dir is not UTF-8")?;
    // -DD: the main process stays in the foreground (the PID we track),
    // -E: log to stderr (our log file), -Y/-w: runtime files in the lab.
    let bg = lab.spawn(
        node,
        "kamailio",
        "kamailio",
        [
            "-f", cfg_path, "-DD", "-E", "-x", "tlsf", "-m", shm_mb, "-Y", dir, "-w", dir,
        ],
    )?;
    lab.wait_udp_port(node, 5060, START_TIMEOUT)
        .with_context(|| format!("kamailio did not start; its log:\n{}", bg.output()))?;
    Ok(bg)
}
