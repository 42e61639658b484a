//! Driving sipp in a namespace lab: a UAS in one namespace, a UAC placing a
//! bounded number of calls from another, and the UAC's final statistics
//! (`-trace_stat`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::{Bg, Lab, Node, run_bounded, stderr};

/// Time for a UAS to bind its port.
const UAS_START: Duration = Duration::from_secs(10);

/// Scenario files shipped with the tests (tests/scenarios/NAME).
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// What sipp's UAC reports at the end of a run (`-trace_stat`, cumulative).
#[derive(Clone, Debug, Default)]
pub struct Calls {
    pub outgoing: u64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
}

impl Calls {
    pub fn plus(&self, o: &Calls) -> Calls {
        Calls {
            outgoing: self.outgoing + o.outgoing,
            successful: self.successful + o.successful,
            failed: self.failed + o.failed,
            retransmissions: self.retransmissions + o.retransmissions,
        }
    }

    /// Successful calls out of `placed` (the calls the run was asked for:
    /// a call never placed counts as failed too).
    pub fn success_ratio(&self, placed: u64) -> f64 {
        self.successful as f64 / placed.max(1) as f64
    }
}

/// A sipp UAS: the built-in one (`-sn uas`) or a scenario file.
#[derive(Clone, Debug)]
pub struct Uas {
    pub addr: IpAddr,
    pub port: u16,
    pub scenario: Option<PathBuf>,
}

impl Uas {
    pub fn builtin(addr: IpAddr, port: u16) -> Self {
        Uas {
            addr,
            port,
            scenario: None,
        }
    }

    /// Start it in `node`'s namespace as a lab process named `name`, and
    /// wait until it listens.
    pub fn start(&self, lab: &Lab, node: &Node, name: &str) -> Result<Bg> {
        let mut args: Vec<String> = match &self.scenario {
            Some(sf) => vec!["-sf".into(), sf.display().to_string()],
            None => vec!["-sn".into(), "uas".into()],
        };
        args.extend([
            "-i".into(),
            self.addr.to_string(),
            "-p".into(),
            self.port.to_string(),
            "-nostdin".into(),
        ]);
        let bg = lab.spawn(node, name, "sipp", &args)?;
        lab.wait_udp_port(node, self.port, UAS_START)
            .with_context(|| format!("sipp UAS did not start:\n{}", bg.output()))?;
        Ok(bg)
    }
}

/// A sipp UAC run: `calls` calls at `rate` calls/s to `target`.
#[derive(Clone, Debug)]
pub struct Uac {
    pub target: SocketAddr,
    pub local: IpAddr,
    pub local_port: u16,
    pub calls: u64,
    pub rate: u64,
    pub scenario: Option<PathBuf>,
    /// sipp's own global timeout (`-timeout`).
    pub timeout: Duration,
    /// A call waiting longer than this for a message fails (`-recv_timeout`);
    /// None keeps sipp's retransmission-based default.
    pub recv_timeout: Option<Duration>,
    /// Our harder bound around the whole run.
    pub bound: Duration,
    /// Name of the statistics file in the lab directory.
    pub name: String,
}

impl Uac {
    /// Run it in `node`'s namespace and return its exit status and final
    /// statistics. Never fails because calls failed: the caller judges.
    pub fn run(&self, lab: &Lab, node: &Node) -> Result<(ExitStatus, Calls)> {
        let csv = lab.dir().join(format!("{}.csv", self.name));
        let mut cmd = node.command("sipp");
        cmd.current_dir(lab.dir());
        match &self.scenario {
            Some(sf) => cmd.arg("-sf").arg(sf),
            None => cmd.args(["-sn", "uac"]),
        };
        cmd.arg(self.target.to_string())
            .args(["-i", &self.local.to_string()])
            .args(["-p", &self.local_port.to_string()])
            .args(["-m", &self.calls.to_string(), "-r", &self.rate.to_string()])
            .arg("-timeout")
            .arg(format!("{}s", self.timeout.as_secs()));
        if let Some(t) = self.recv_timeout {
            cmd.args(["-recv_timeout", &t.as_millis().to_string()]);
        }
        cmd.args(["-nostdin", "-trace_stat", "-stf"]).arg(&csv);
        let out = run_bounded(&mut cmd, self.bound)?;
        let calls = parse_trace_stat(&csv).with_context(|| {
            format!("sipp wrote no usable statistics; stderr:\n{}", stderr(&out))
        })?;
        Ok((out.status, calls))
    }
}

/// The last (cumulative) row of sipp's `-trace_stat` CSV, by column name.
pub fn parse_trace_stat(path: &Path) -> Result<Calls> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [header, .., last] = lines.as_slice() else {
        bail!("{} has no header and data row:\n{text}", path.display());
    };
    let (header, last) = (header.split(';'), last.split(';'));
    let row: HashMap<&str, &str> = header.into_iter().zip(last).collect();
    let get = |col: &str| -> Result<u64> {
        row.get(col)
            .with_context(|| format!("column {col} missing"))?
            .trim()
            .parse()
            .with_context(|| format!("column {col} is not a number"))
    };
    Ok(Calls {
        outgoing: get("OutgoingCall(C)")?,
        successful: get("SuccessfulCall(C)")?,
        failed: get("FailedCall(C)")?,
        retransmissions: get("Retransmissions(C)")?,
    })
}
