//! The global budget across cores: a lab whose server interface has two
//! queues (`Lab::with_queues`), so a spoofed flood sent from CPU 0 and one
//! sent from CPU 1 pass XDP on those two CPUs at once, as a many-queue NIC
//! spreads a flood. Measures drops per second with one sending (and so
//! receiving) core and with two, and how many packets the global INVITE
//! budget admitted against what its rate, burst and the per-CPU leases
//! allow (`sipguard_common::policy::GlobalShare`).

use std::{thread, time::Duration};

use anyhow::{Result, anyhow, ensure};
use sipguard::config::Config;
use sipguard_common::policy::Bucket;

use super::{
    cpus::{allowed, pin},
    discard_spoofed_replies,
    inplace::{self, Runs},
};
use crate::{
    flood::{Ctl, RawFlood, raw_flood},
    netns::{Lab, packets},
};

/// One run: `senders` floods at once, each from its own node and CPU.
#[derive(Clone, Debug)]
pub struct CoresRun {
    pub senders: usize,
    /// Seconds from the first flood's start to the last one's end.
    pub secs: f64,
    pub sent: u64,
    /// Dropped as `rate_global`, and admitted (`accepted`), by sipguard.
    pub dropped: u64,
    pub admitted: u64,
    /// `sipguard_xdp` in place over the run.
    pub xdp: Option<Runs>,
}

impl CoresRun {
    pub fn drops_per_sec(&self) -> f64 {
        self.dropped as f64 / self.secs.max(1e-9)
    }
}

/// The global INVITE limit the runs are held to (the default) and the
/// most the CPUs may admit over `secs` by the stated tolerance: the rate
/// over the time, the burst, a lease less one per CPU, and one packet per
/// other CPU (`conform_global`).
pub fn admitted_bound(secs: f64, cpus: u64) -> (f64, u64) {
    let limit = Config::default().policy().global[Bucket::Invite as usize];
    let lease = u64::from(limit.lease());
    let most = limit.rate_per_sec() * secs
        + limit.burst() as f64
        + (cpus * (lease - 1) + cpus.saturating_sub(1)) as f64;
    (most, lease)
}

/// Flood a fresh two-queue lab from `senders` nodes, each pinned to its own
/// CPU, for `duration`, with sipguard's defaults on the server.
pub fn run(senders: usize, duration: Duration) -> Result<CoresRun> {
    let cpus = allowed()?;
    ensure!(
        senders <= cpus.len(),
        "{senders} senders need as many CPUs; this process may use {cpus:?}"
    );
    let lab = Lab::with_queues(&format!("cores{senders}"), 2)?;
    discard_spoofed_replies(&lab)?;
    let _agent = lab.start_agent(&["--mode", "native"])?;
    let ctl = Ctl::new(lab.iface());
    let _stats = inplace::RunTimeStats::enable()?;
    let mut nodes = vec![lab.attacker.clone()];
    for i in 1..senders {
        nodes.push(lab.add_node(&format!("atk{i}"))?);
    }
    let before = ctl.stats()?;
    let programs = inplace::sample()?;
    let started = std::time::Instant::now();
    let sent = thread::scope(|s| -> Result<u64> {
        let floods: Vec<_> = nodes
            .iter()
            .zip(&cpus)
            .enumerate()
            .map(|(i, (node, &cpu))| {
                let lab = &lab;
                s.spawn(move || -> Result<u64> {
                    pin(&[cpu])?;
                    let flood = RawFlood {
                        count: 50_000_000,
                        duration,
                        sources: 65_536,
                        seed: 11 + i as u64,
                        later_fragments: false,
                    };
                    Ok(raw_flood(lab, node, &lab.server, &flood)?.sent)
                })
            })
            .collect();
        floods
            .into_iter()
            .map(|f| f.join().map_err(|_| anyhow!("a flood thread panicked"))?)
            .sum()
    })?;
    let secs = started.elapsed().as_secs_f64();
    let runs = inplace::since(&programs, &inplace::sample()?);
    let after = ctl.stats()?;
    let grew = |name: &str, verdict: &str| {
        packets(&after, "reasons", name, verdict) - packets(&before, "reasons", name, verdict)
    };
    Ok(CoresRun {
        senders,
        secs,
        sent,
        dropped: grew("rate_global", "drop"),
        admitted: grew("accepted", "pass"),
        xdp: inplace::of(&runs, "sipguard_xdp").cloned(),
    })
}
