//! Runs the embedded XDP program on test packets with BPF_PROG_TEST_RUN and
//! reads what it counted. Each `Harness` loads its own copy of the program
//! and maps, so tests running in parallel never see each other's counters.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use sipguard::{
    config::Config,
    loader::{self, KernelLog},
    maps::Maps,
    stats::{Snapshot, Totals},
};
use sipguard_common::{Class, Reason, Verdict, maps::PROG_XDP};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The kernel refuses BPF_PROG_TEST_RUN on less than an Ethernet header.
pub const MIN_TEST_RUN_LEN: usize = 14;

pub struct Harness {
    ebpf: Ebpf,
    maps: Maps,
}

impl Harness {
    /// Load the program with `Config::default()` (enforce on, UDP 5060, TCP
    /// 5060 and 5061, the default rate limits). Needs root.
    pub fn new() -> Result<Self> {
        Self::with_config(&Config::default())
    }

    pub fn with_config(cfg: &Config) -> Result<Self> {
        anyhow::ensure!(
            is_root(),
            "BPF_PROG_TEST_RUN needs root to load the XDP program: run as root \
             (e.g. sudo -E cargo test)"
        );
        let mut ebpf = loader::load(KernelLog::Off)?;
        let mut maps = Maps::from_ebpf(&mut ebpf)?;
        maps.apply(cfg)?;
        Ok(Self { ebpf, maps })
    }

    fn prog(&mut self) -> Result<&mut Xdp> {
        let prog = self
            .ebpf
            .program_mut(PROG_XDP)
            .ok_or_else(|| anyhow!("program {PROG_XDP} missing from the object"))?;
        Ok(prog.try_into()?)
    }

    /// Run the program once on `pkt`; returns the XDP action.
    pub fn run(&mut self, pkt: &[u8]) -> Result<u32> {
        Ok(self.run_repeat(pkt, 1)?.0)
    }

    /// Run the program `repeat` times on `pkt` in the kernel; returns the
    /// action and the kernel's average time per run.
    pub fn run_repeat(&mut self, pkt: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        anyhow::ensure!(
            pkt.len() >= MIN_TEST_RUN_LEN,
            "BPF_PROG_TEST_RUN needs at least {MIN_TEST_RUN_LEN} bytes, got {}",
            pkt.len()
        );
        let r = self
            .prog()?
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                repeat,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN on the XDP program")?;
        Ok((r.return_value, r.duration))
    }

    /// Run once and return the action with the counter changes it caused.
    pub fn run_counted(&mut self, pkt: &[u8]) -> Result<(u32, Delta)> {
        let before = self.snapshot()?;
        let action = self.run(pkt)?;
        Ok((action, Delta::between(&before, &self.snapshot()?)))
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::read(&self.maps)
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// For tests that change the configuration (ports, enforce) at run time.
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }
}

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    // "Uid:\treal\teffective\tsaved\tfs"
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// A (verdict name, reason or class name) counter key.
pub type Key = (&'static str, &'static str);

/// The counters that changed between two snapshots; unchanged ones are left
/// out, so equality with an expected `Delta` also proves nothing else moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub reasons: BTreeMap<Key, Totals>,
    pub classes: BTreeMap<Key, Totals>,
}

impl Delta {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        Self {
            reasons: changed(&before.reasons, &after.reasons),
            classes: changed(&before.classes, &after.classes),
        }
    }

    /// What one packet of `bytes` bytes should change: its reason counter
    /// and, for traffic to a SIP port, its class counter.
    pub fn one(verdict: Verdict, reason: Reason, class: Option<Class>, bytes: usize) -> Self {
        let t = Totals {
            packets: 1,
            bytes: bytes as u64,
        };
        let mut d = Self::default();
        d.reasons.insert((verdict.name(), reason.name()), t);
        if let Some(c) = class {
            d.classes.insert((verdict.name(), c.name()), t);
        }
        d
    }

    /// The same changes, `n` times over (for `run_repeat`).
    pub fn times(mut self, n: u64) -> Self {
        for t in self.reasons.values_mut().chain(self.classes.values_mut()) {
            t.packets *= n;
            t.bytes *= n;
        }
        self
    }
}

fn changed(
    before: &BTreeMap<&'static str, sipguard::stats::ByVerdict>,
    after: &BTreeMap<&'static str, sipguard::stats::ByVerdict>,
) -> BTreeMap<Key, Totals> {
    let mut out = BTreeMap::new();
    for (name, now) in after {
        let was = before.get(name).copied().unwrap_or_default();
        for v in Verdict::ALL {
            let (a, b) = (was.get(v), now.get(v));
            // Counters only grow; a shrink means the maps were swapped under us.
            let d = Totals {
                packets: b.packets.checked_sub(a.packets).expect("counter went down"),
                bytes: b.bytes.checked_sub(a.bytes).expect("counter went down"),
            };
            if d != Totals::default() {
                out.insert((v.name(), *name), d);
            }
        }
    }
    out
}
