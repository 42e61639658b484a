//! The counting listener (`listener.py`): a UDP socket on the server that
//! counts datagrams by source and method and never answers.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::PathBuf,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;

use crate::netns::{Bg, Lab, wait_until};

const SCRIPT: &str = include_str!("listener.py");
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Let datagrams still in flight land before a dump. On veth the receive
/// path runs right after the sender's syscall, so this is a margin, not a
/// measured need.
const SETTLE: Duration = Duration::from_millis(150);

pub struct Listener {
    bg: Bg,
    ctl: PathBuf,
}

impl Listener {
    /// Start a listener on UDP `port` (IPv4 and IPv6) in the server namespace.
    pub fn start(lab: &Lab, port: u16) -> Result<Self> {
        let ctl = lab.dir().join(format!("listener-{port}.sock"));
        let bg = lab.spawn(
            &lab.server,
            &format!("listener-{port}"),
            "python3",
            [
                "-c",
                SCRIPT,
                &port.to_string(),
                ctl.to_str().context("lab dir not UTF-8")?,
            ],
        )?;
        lab.wait_udp_port(&lab.server, port, START_TIMEOUT)?;
        wait_until(START_TIMEOUT, || Ok(ctl.exists()))
            .with_context(|| format!("listener control socket never appeared:\n{}", bg.output()))?;
        Ok(Listener { bg, ctl })
    }

    /// Everything received so far, after the queue is drained.
    pub fn counts(&self) -> Result<Counts> {
        thread::sleep(SETTLE);
        let mut conn = UnixStream::connect(&self.ctl)
            .with_context(|| format!("listener gone? its log:\n{}", self.bg.output()))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        conn.write_all(b"dump\n")?;
        conn.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        let rows: Value = serde_json::from_str(&reply)
            .with_context(|| format!("listener reply {reply:?}; log:\n{}", self.bg.output()))?;
        let mut by = HashMap::new();
        for row in rows
            .as_array()
            .ok_or_else(|| anyhow!("reply is not a list"))?
        {
            let src: IpAddr = row[0].as_str().unwrap_or_default().parse()?;
            let method = row[1].as_str().unwrap_or_default().to_string();
            by.insert((src, method), row[2].as_u64().unwrap_or(0));
        }
        Ok(Counts { by })
    }
}

/// Datagrams the listener received, by (source, method).
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub by: HashMap<(IpAddr, String), u64>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.by.values().sum()
    }

    pub fn from(&self, src: IpAddr) -> u64 {
        self.by
            .iter()
            .filter(|((s, _), _)| *s == src)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn method(&self, method: &str) -> u64 {
        self.by
            .iter()
            .filter(|((_, m), _)| m == method)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn get(&self, src: IpAddr, method: &str) -> u64 {
        self.by
            .get(&(src, method.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Distinct sources anything was received from.
    pub fn sources(&self) -> usize {
        let mut s: Vec<IpAddr> = self.by.keys().map(|(s, _)| *s).collect();
        s.sort();
        s.dedup();
        s.len()
    }

    /// What arrived since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let by = self
            .by
            .iter()
            .map(|(k, n)| (k.clone(), n - earlier.by.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Counts { by }
    }
}
