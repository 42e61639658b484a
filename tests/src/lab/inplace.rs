//! What sipguard's programs cost in place, during a real flood: the
//! kernel's own run-time statistics (`BPF_ENABLE_STATS`: `run_time_ns` and
//! `run_cnt` of each program, what `bpftool prog show` prints). A tail call
//! counts in its caller, so `sipguard_xdp` holds the whole ingress path and
//! `sipguard_egress` the whole egress one.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use anyhow::{Context as _, Result};
use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};

/// The kernel keeps run-time statistics while this lives.
pub struct RunTimeStats(#[allow(dead_code)] OwnedFd);

impl RunTimeStats {
    pub fn enable() -> Result<Self> {
        Ok(RunTimeStats(
            enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (run time)")?,
        ))
    }
}

/// Runs of one program (or of every loaded program of one name) and the
/// time they took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    pub name: String,
    pub runs: u64,
    pub ns: u64,
}

impl Runs {
    pub fn ns_per_run(&self) -> f64 {
        self.ns as f64 / self.runs.max(1) as f64
    }
}

/// Every loaded program whose name starts with `sipguard_`, by id.
pub fn sample() -> Result<BTreeMap<u32, Runs>> {
    let mut out = BTreeMap::new();
    for info in loaded_programs() {
        // A program unloaded while listing is simply not there.
        let Ok(info) = info else { continue };
        let Some(name) = info.name_as_str().filter(|n| n.starts_with("sipguard_")) else {
            continue;
        };
        out.insert(
            info.id(),
            Runs {
                name: name.to_string(),
                runs: info.run_count(),
                ns: info.run_time().as_nanos() as u64,
            },
        );
    }
    Ok(out)
}

/// What each program name ran between two samples (programs in both).
pub fn since(before: &BTreeMap<u32, Runs>, after: &BTreeMap<u32, Runs>) -> Vec<Runs> {
    let mut by_name: BTreeMap<&str, Runs> = BTreeMap::new();
    for (id, a) in after {
        let Some(b) = before.get(id) else { continue };
        let e = by_name.entry(&a.name).or_insert_with(|| Runs {
            name: a.name.clone(),
            ..Runs::default()
        });
        e.runs += a.runs - b.runs;
        e.ns += a.ns - b.ns;
    }
    by_name.into_values().filter(|r| r.runs > 0).collect()
}

/// `runs` of the program named `name`, if it ran. The kernel keeps the
/// first 15 bytes of a program's name (`BPF_OBJ_NAME_LEN`, NUL included).
pub fn of<'a>(runs: &'a [Runs], name: &str) -> Option<&'a Runs> {
    let kept = name.get(..15).unwrap_or(name);
    runs.iter().find(|r| r.name == kept)
}
