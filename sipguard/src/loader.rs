//! The embedded XDP object: loading it (with the kernel log level chosen at
//! load time) and turning verifier rejections into readable errors.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray},
    programs::{ProgramError, SchedClassifier, Xdp},
};
use sipguard_common::maps::{
    PROG_EGRESS, PROG_RESP, PROG_SIP, PROG_SLOT_RESP, PROG_SLOT_SIP, PROG_XDP,
};

use crate::{maps, tables::Tables};

/// The XDP object built from `sipguard-ebpf` by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sipguard"));

/// Kernel-side log levels (aya-log). The program logs per-packet detail only
/// at `debug` and `trace`, so the default `warn` keeps logging off the hot path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelLog {
    Off,
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

impl KernelLog {
    /// The value of aya-log-ebpf's `AYA_LOG_LEVEL` global (0 = off).
    fn level(self) -> u8 {
        match self {
            KernelLog::Off => 0,
            KernelLog::Error => 1,
            KernelLog::Warn => 2,
            KernelLog::Info => 3,
            KernelLog::Debug => 4,
            KernelLog::Trace => 5,
        }
    }
}

/// Load the object and the XDP programs into the kernel (not attached),
/// with fresh maps.
pub fn load(log: KernelLog) -> Result<Ebpf> {
    load_with(log, None, &Tables::default())
}

/// Like `load`, but every map in `maps::ALL` lives at `dir/NAME`: opened
/// from its pin if one is there (an earlier agent's bans, lists and counters
/// carry over), created with the sizes of `tables` and pinned otherwise.
pub fn load_pinned(log: KernelLog, dir: &Path, tables: &Tables) -> Result<Ebpf> {
    load_with(log, Some(dir), tables)
}

fn load_with(log: KernelLog, pins: Option<&Path>, tables: &Tables) -> Result<Ebpf> {
    let level = log.level();
    let mut loader = EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, &level, true);
    tables.apply_to(&mut loader);
    let paths: Vec<(&str, PathBuf)> = pins
        .map(|dir| crate::maps::ALL.iter().map(|n| (*n, dir.join(n))).collect())
        .unwrap_or_default();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT).context(
        "loading the sipguard eBPF object (if maps were pinned by a different sipguard version, \
         run `sipguard detach` first)",
    )?;
    for name in [PROG_SIP, PROG_XDP] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?;
        prog.load().map_err(|e| verifier_error(name, e))?;
    }
    for name in [PROG_RESP, PROG_EGRESS] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?;
        prog.load().map_err(|e| verifier_error(name, e))?;
    }
    // Install the second stages in the tail-call table.
    for (map, slot, name) in [
        (maps::name::PROGS, PROG_SLOT_SIP, PROG_SIP),
        (maps::name::PROGS_TC, PROG_SLOT_RESP, PROG_RESP),
    ] {
        let fd = ebpf
            .program(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .fd()?
            .try_clone()?;
        let mut progs: ProgramArray<&mut MapData> = ebpf
            .map_mut(map)
            .ok_or_else(|| anyhow!("map {map} missing from the eBPF object"))?
            .try_into()?;
        progs.set(slot, &fd, 0)?;
    }
    match crate::clock::calibrate(&mut ebpf) {
        Ok(clock) => tracing::debug!(
            "program clock: jiffies, {} ns per tick (offset {})",
            clock.tick_ns,
            clock.offset_ns
        ),
        // Correct either way: the programs then read the exact clock.
        Err(e) => tracing::warn!(
            "could not calibrate the program clock ({e:#}); the XDP program reads the exact \
             clock instead, ~40 ns more per packet"
        ),
    }
    Ok(ebpf)
}

/// Keep the last lines of a verifier log: the rejection reason is at the end,
/// and the full log can run to a million lines.
const VERIFIER_TAIL_LINES: usize = 30;

fn verifier_error(name: &str, err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // For debugging rejections: the whole log, which can be huge.
            if let Some(path) = std::env::var_os("SIPGUARD_VERIFIER_LOG") {
                let _ = std::fs::write(path, &log);
            }
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(VERIFIER_TAIL_LINES)..].join("\n");
            let hint = crate::kernel::unsupported_hint(&crate::kernel::Release::running());
            anyhow!(
                "the kernel verifier rejected the sipguard program {name} ({io_error}). Last \
                 lines of its log:\n{tail}\n{hint}"
            )
        }
        other => anyhow::Error::new(other).context(format!("loading the XDP program {name}")),
    }
}
