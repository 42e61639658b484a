//! The bounded UDP SIP sender (`sender.py`): streams of requests from bound
//! source addresses, paced or as fast as possible.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, anyhow, ensure};
use serde_json::{Value, json};

use super::SIP_PORT;
use crate::netns::{Bg, Lab, Node, stderr};

const SCRIPT: &str = include_str!("sender.py");
/// Time allowed past the sender's own deadline (interpreter start, building
/// the packets, printing the report) before it is killed.
const GRACE: Duration = Duration::from_secs(15);

/// One stream: `method` requests from `sources` (taking turns), `count` at
/// most, at `rate` packets/s over the whole stream (0: as fast as possible).
#[derive(Clone, Debug)]
pub struct Stream {
    pub name: String,
    pub sources: Vec<IpAddr>,
    pub method: String,
    /// Request-URI user (Kamailio tells known from unknown users by it).
    pub user: String,
    pub rate: u64,
    pub count: u64,
    /// Body bytes: over the MTU, the kernel fragments each datagram.
    pub body: usize,
}

impl Stream {
    pub fn new(name: &str, sources: &[IpAddr], method: &str, rate: u64, count: u64) -> Self {
        Stream {
            name: name.to_string(),
            sources: sources.to_vec(),
            method: method.to_string(),
            user: "100".to_string(),
            rate,
            count,
            body: 0,
        }
    }

    /// Requests with a body of `bytes` (SDP-like lines).
    pub fn body(mut self, bytes: usize) -> Self {
        self.body = bytes;
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    fn spec(&self) -> Value {
        json!({
            "name": self.name,
            "sources": self.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "method": self.method,
            "user": self.user,
            "rate": self.rate,
            "count": self.count,
            "body": self.body,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    pub sent: u64,
    /// Sends the kernel refused (full queue, ICMP error pending).
    pub errors: u64,
    /// Seconds from the stream's first send to its last.
    pub active: f64,
}

impl StreamReport {
    /// Packets per second achieved.
    pub fn pps(&self) -> f64 {
        if self.active > 0.0 {
            self.sent as f64 / self.active
        } else {
            0.0
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SendReport {
    /// Seconds the sender ran.
    pub elapsed: f64,
    pub streams: HashMap<String, StreamReport>,
}

impl SendReport {
    pub fn stream(&self, name: &str) -> &StreamReport {
        self.streams
            .get(name)
            .unwrap_or_else(|| panic!("no stream {name} in {self:?}"))
    }

    fn parse(out: &str) -> Result<Self> {
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow!("sender printed no report:\n{out}"))?;
        let v: Value = serde_json::from_str(line)?;
        let mut streams = HashMap::new();
        for (name, s) in v["streams"].as_object().context("report has no streams")? {
            streams.insert(
                name.clone(),
                StreamReport {
                    sent: s["sent"].as_u64().unwrap_or(0),
                    errors: s["errors"].as_u64().unwrap_or(0),
                    active: s["active"].as_f64().unwrap_or(0.0),
                },
            );
        }
        Ok(SendReport {
            elapsed: v["elapsed"].as_f64().unwrap_or(0.0),
            streams,
        })
    }
}

fn spec(dst: IpAddr, streams: &[Stream], duration: Duration) -> String {
    json!({
        "dst": dst.to_string(),
        "port": SIP_PORT,
        "duration": duration.as_secs_f64(),
        "streams": streams.iter().map(Stream::spec).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Send `streams` from `node` to `dst`:5060 for at most `duration`, and wait
/// for the report.
pub fn send(
    lab: &Lab,
    node: &Node,
    dst: IpAddr,
    streams: &[Stream],
    duration: Duration,
) -> Result<SendReport> {
    let spec = spec(dst, streams, duration);
    let out = lab.run(node, "python3", ["-c", SCRIPT, &spec], duration + GRACE)?;
    ensure!(
        out.status.success(),
        "sender in {} failed ({}): {}",
        node.ns,
        out.status,
        stderr(&out)
    );
    SendReport::parse(&String::from_utf8_lossy(&out.stdout))
}

/// A sender running in the background; `finish` waits for its report.
pub struct Running<'lab> {
    lab: &'lab Lab,
    bg: Bg,
    bound: Duration,
}

/// Start `streams` in the background (see `send`).
pub fn spawn_send<'lab>(
    lab: &'lab Lab,
    node: &Node,
    name: &str,
    dst: IpAddr,
    streams: &[Stream],
    duration: Duration,
) -> Result<Running<'lab>> {
    let spec = spec(dst, streams, duration);
    let bg = lab.spawn(node, name, "python3", ["-c", SCRIPT, &spec])?;
    Ok(Running {
        lab,
        bg,
        bound: duration + GRACE,
    })
}

impl Running<'_> {
    /// Wait for the sender to end by itself (it is bounded), then read its
    /// report. Past its bound it is stopped and that is an error.
    pub fn finish(self) -> Result<SendReport> {
        let log = self.bg.log.clone();
        let ended = crate::netns::wait_until(self.bound, || {
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with('{')))
        });
        // The report is printed just before the sender exits: give it the
        // moment to exit by itself, so `stop` collects its own exit status
        // instead of killing it (a race under load).
        if ended.is_ok() {
            let pid = self.bg.pid;
            let _ =
                crate::netns::wait_until(Duration::from_secs(5), || Ok(crate::netns::exited(pid)));
        }
        let status = self.lab.stop(&self.bg)?;
        ended.with_context(|| format!("sender did not finish; output:\n{}", self.bg.output()))?;
        ensure!(
            status.success(),
            "sender failed ({status}):\n{}",
            self.bg.output()
        );
        SendReport::parse(&self.bg.output())
    }
}
