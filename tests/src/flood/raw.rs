//! The spoofed-source flood (`rawflood.py`): prebuilt Ethernet frames with
//! random sources in 198.18.0.0/15, sent through an AF_PACKET socket.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::{SIP_PORT, net::mac};
use crate::netns::{Lab, Node, stderr};

const SCRIPT: &str = include_str!("rawflood.py");
/// Interpreter start and building the frames, past the flood's own deadline.
const GRACE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct RawFlood {
    /// Frames to send at most.
    pub count: u64,
    /// And for at most this long.
    pub duration: Duration,
    /// Distinct random sources (one prebuilt frame each, cycled).
    pub sources: u32,
    pub seed: u64,
    /// Later fragments (no first fragment ever) instead of INVITEs.
    pub later_fragments: bool,
}

#[derive(Clone, Debug)]
pub struct RawReport {
    pub sent: u64,
    /// Frames the socket refused (ENOBUFS).
    pub errors: u64,
    pub elapsed: f64,
    pub sources: u64,
}

impl RawReport {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.max(1e-9)
    }
}

/// Send `flood` from `from`'s interface to `to` (its MAC and IPv4 address)
/// on the SIP port.
pub fn raw_flood(lab: &Lab, from: &Node, to: &Node, flood: &RawFlood) -> Result<RawReport> {
    let args = args(lab, from, to, flood)?;
    let out = lab.run(from, "python3", &args, flood.duration + GRACE)?;
    ensure!(
        out.status.success(),
        "raw flood from {} failed ({}): {}",
        from.ns,
        out.status,
        stderr(&out)
    );
    report(&String::from_utf8_lossy(&out.stdout))
}

/// A raw flood running in the background (a lab process).
pub struct RawRunning<'lab> {
    lab: &'lab Lab,
    bg: crate::netns::Bg,
    bound: Duration,
}

/// `raw_flood`, started in the background.
pub fn spawn_raw_flood<'lab>(
    lab: &'lab Lab,
    from: &Node,
    to: &Node,
    flood: &RawFlood,
) -> Result<RawRunning<'lab>> {
    let args = args(lab, from, to, flood)?;
    let bg = lab.spawn(from, "rawflood", "python3", &args)?;
    Ok(RawRunning {
        lab,
        bg,
        bound: flood.duration + GRACE,
    })
}

impl RawRunning<'_> {
    /// Whether it has printed its report (it is done).
    pub fn done(&self) -> bool {
        self.bg.output().lines().any(|l| l.starts_with('{'))
    }

    /// Wait for it to end by itself (it is bounded), and read its report.
    pub fn finish(self) -> Result<RawReport> {
        let ended = crate::netns::wait_until(self.bound, || Ok(self.done()));
        self.lab.stop(&self.bg)?;
        ended?;
        let out = self.bg.output();
        let line = out.lines().find(|l| l.starts_with('{')).unwrap_or("");
        report(line)
    }
}

fn report(text: &str) -> Result<RawReport> {
    let v: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("raw flood printed no report: {text}"))?;
    Ok(RawReport {
        sent: v["sent"].as_u64().unwrap_or(0),
        errors: v["errors"].as_u64().unwrap_or(0),
        elapsed: v["elapsed"].as_f64().unwrap_or(0.0),
        sources: v["sources"].as_u64().unwrap_or(0),
    })
}

/// The sender's arguments.
fn args(lab: &Lab, from: &Node, to: &Node, flood: &RawFlood) -> Result<Vec<String>> {
    let dst: Ipv4Addr = to.v4;
    ensure!(
        dst.octets()[..2] == [198, 18] || dst.octets()[..2] == [198, 19],
        "flood target {dst} is outside 198.18.0.0/15"
    );
    let args = [
        "-c".to_string(),
        SCRIPT.to_string(),
        from.iface.clone(),
        mac(lab, from)?,
        mac(lab, to)?,
        dst.to_string(),
        SIP_PORT.to_string(),
        flood.count.to_string(),
        flood.duration.as_secs_f64().to_string(),
        flood.sources.to_string(),
        flood.seed.to_string(),
        if flood.later_fragments {
            "later-fragments"
        } else {
            "invite"
        }
        .to_string(),
    ];
    Ok(args.to_vec())
}
