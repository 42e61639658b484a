//! What a lab run measures besides the calls: Kamailio's CPU, the machine's
//! softirq time and the server's UDP counters, and the machine it ran on.

use std::{fs, process::Command, time::Instant};

use anyhow::{Context as _, Result, ensure};

use crate::{
    flood::{UdpMib, udp_mib},
    kamailio::Kamailio,
    netns::Lab,
};

/// Counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    at: Instant,
    kamailio_cpu: f64,
    softirq: f64,
    udp: UdpMib,
}

/// What was used between two samples.
#[derive(Clone, Copy, Debug)]
pub struct Used {
    /// Seconds of wall time.
    pub wall: f64,
    /// CPU seconds of Kamailio (all its processes).
    pub kamailio_cpu: f64,
    /// Softirq seconds of the machine, all CPUs together.
    pub softirq: f64,
    pub udp: UdpMib,
}

impl Sample {
    pub fn take(lab: &Lab, kamailio: &Kamailio) -> Result<Self> {
        Ok(Sample {
            kamailio_cpu: kamailio.cpu_seconds()?,
            softirq: softirq_seconds()?,
            udp: udp_mib(lab, &lab.server)?,
            at: Instant::now(),
        })
    }

    pub fn since(&self, earlier: &Sample) -> Used {
        Used {
            wall: self.at.duration_since(earlier.at).as_secs_f64(),
            kamailio_cpu: self.kamailio_cpu - earlier.kamailio_cpu,
            softirq: self.softirq - earlier.softirq,
            udp: self.udp.since(&earlier.udp),
        }
    }
}

/// Softirq time of all CPUs since boot, from the `cpu` line of /proc/stat
/// (user nice system idle iowait irq softirq ..., in clock ticks). It is
/// machine-wide: namespaces do not split it.
fn softirq_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let ticks: u64 = line
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no softirq column in /proc/stat: {line}"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(hz > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(ticks as f64 / hz as f64)
}

/// The machine a run was made on, for the record next to its figures.
#[derive(Clone, Debug)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    /// The sipguard commit, with "+changes" when the tree has uncommitted
    /// changes.
    pub commit: String,
    /// Versions of the peer tools and the SIP server.
    pub tools: String,
}

impl Machine {
    pub fn probe() -> Self {
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let commit = match first_line("git", &["-C", repo, "rev-parse", "--short", "HEAD"]) {
            Some(c) => {
                let dirty = output("git", &["-C", repo, "status", "--porcelain"])
                    .is_some_and(|s| !s.trim().is_empty());
                if dirty { format!("{c}+changes") } else { c }
            }
            None => "?".into(),
        };
        let tools = [
            first_line("iptables-legacy", &["--version"]),
            first_line("nft", &["--version"]),
            first_line("kamailio", &["-v"]),
        ]
        .map(|v| v.unwrap_or_else(|| "?".into()))
        .join(", ");
        Machine {
            kernel,
            cpu,
            cpus,
            commit,
            tools,
        }
    }
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    output(program, args)?
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}
