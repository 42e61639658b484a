//! Figures the end-to-end tests measure (propagation times, rates), kept
//! beside the build in `<target>/test-figures.log` as well as printed:
//! `cargo test` hides a passing test's output, and `cargo xtask test`
//! prints this file at the end so CI's log carries them.

use std::{fs::OpenOptions, io::Write as _, path::PathBuf};

/// The file, in the target directory of the running test binary
/// (`<target>/<profile>/deps/<test>`).
pub fn path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.ancestors().nth(3)?.join("test-figures.log"))
}

/// Print `line` and keep it, under the test's name.
pub fn record(test: &str, line: &str) {
    eprintln!("{line}");
    let Some(path) = path() else { return };
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&path) {
        let _ = writeln!(f, "{test}: {line}");
    }
}
