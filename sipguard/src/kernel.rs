//! The running kernel: its version against the oldest sipguard supports,
//! and `sipguard check-kernel`, which loads every program (attaching
//! nothing) and reports what the verifier made of each.

use std::time::Instant;

use serde::Serialize;

use crate::{
    egress::EgressMode,
    loader::{self, KernelLog},
};

/// The oldest kernel sipguard is tested on (Debian 12's 6.1); the kernel
/// matrix (`cargo xtask kernels`) boots it on every change.
pub const MIN_KERNEL: (u32, u32) = (6, 1);
/// TCX links (the egress program's pinned link) came with Linux 6.6;
/// older kernels get a netlink cls_bpf filter instead.
pub const TCX_KERNEL: (u32, u32) = (6, 6);

/// `uname -r` and its major.minor.
#[derive(Clone, Debug)]
pub struct Release {
    pub text: String,
    pub version: (u32, u32),
}

impl Release {
    pub fn running() -> Release {
        let text = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let version = parse_version(&text).unwrap_or((0, 0));
        Release { text, version }
    }

    pub fn is_supported(&self) -> bool {
        self.version >= MIN_KERNEL
    }
}

/// "6.1.0-57-amd64" -> (6, 1).
pub fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What the operator should read when a program does not load: the kernel
/// is too old, or (on a supported one) a sipguard bug to report.
pub fn unsupported_hint(release: &Release) -> String {
    let (maj, min) = MIN_KERNEL;
    if release.is_supported() {
        format!(
            "this kernel ({}) is supported (Linux {maj}.{min} or newer), so this is a sipguard \
             bug: report it with `uname -r` and this log",
            release.text
        )
    } else {
        format!(
            "this kernel ({}) is older than Linux {maj}.{min}, the oldest sipguard supports: \
             run sipguard on a newer kernel",
            release.text
        )
    }
}

/// One program's verdict.
#[derive(Debug, Serialize)]
pub struct ProgramReport {
    pub name: String,
    /// Instructions the verifier walked to accept it (Linux 5.16+).
    pub verified_insns: Option<u32>,
}

/// `sipguard check-kernel --json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub supported: bool,
    /// Every program loaded.
    pub ok: bool,
    pub error: Option<String>,
    pub load_ms: u64,
    pub programs: Vec<ProgramReport>,
    /// How the agent will attach the egress program on this kernel (it
    /// falls back to `netlink` should a TCX attach fail anyway).
    pub tc_egress: EgressMode,
}

/// Load every program with fresh maps, report, unload.
pub fn check() -> Report {
    let release = Release::running();
    let started = Instant::now();
    let loaded = loader::load(KernelLog::Off);
    let load_ms = started.elapsed().as_millis() as u64;
    let tc_egress = if release.version >= TCX_KERNEL {
        EgressMode::Tcx
    } else {
        EgressMode::Netlink
    };
    let (programs, error) = match &loaded {
        Ok(ebpf) => {
            let mut programs: Vec<ProgramReport> = ebpf
                .programs()
                .filter_map(|(name, p)| {
                    let info = p.info().ok()?;
                    Some(ProgramReport {
                        name: name.to_string(),
                        verified_insns: info.verified_instruction_count(),
                    })
                })
                .collect();
            programs.sort_by(|a, b| a.name.cmp(&b.name));
            (programs, None)
        }
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    Report {
        kernel: release.text.clone(),
        supported: release.is_supported(),
        ok: loaded.is_ok(),
        error,
        load_ms,
        programs,
        tc_egress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_distribution_releases() {
        assert_eq!(parse_version("6.1.0-57-amd64"), Some((6, 1)));
        assert_eq!(parse_version("6.12.118+deb13-amd64"), Some((6, 12)));
        assert_eq!(parse_version("7.3.4+deb13-amd64"), Some((7, 3)));
        assert_eq!(parse_version("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(parse_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_version("garbage"), None);
        assert!((5, 15) < MIN_KERNEL && (6, 12) >= MIN_KERNEL && (6, 5) < TCX_KERNEL);
    }
}
