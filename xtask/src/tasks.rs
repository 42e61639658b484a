//! `build`, `run`, `test` and `bench`: each makes sure the toolchain is there
//! (setup), then hands over to cargo or to the built binary.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};

use crate::{cmd, lab, setup};

fn profile_args(release: bool) -> &'static [&'static str] {
    if release { &["--release"] } else { &[] }
}

pub fn build(release: bool) -> Result<()> {
    setup::setup(false)?;
    cmd::run(
        cmd::cargo()
            .args(["build", "-p", "sipguard"])
            .args(profile_args(release)),
    )
}

/// Build, then become the sipguard binary (exec), so Ctrl-C and SIGTERM reach
/// the agent directly and it can detach and clean up its pins.
pub fn run(release: bool, args: Vec<OsString>) -> Result<()> {
    build(release)?;
    let bin = cmd::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("sipguard");
    let mut c = Command::new(&bin);
    c.args(&args);
    cmd::echo(&c);
    let err = c.exec();
    Err(err).with_context(|| format!("could not start {}", bin.display()))
}

/// All host tests. One test thread per binary: the end-to-end tests push
/// real traffic through namespaces and must not overlap on a small machine.
/// Returns the exit code of `cargo test`.
pub fn test(args: Vec<OsString>) -> Result<i32> {
    setup::setup(true)?;
    // What the end-to-end tests measured (tests/src/figures.rs), printed at
    // the end: cargo test hides a passing test's output.
    let figures = cmd::target_dir().join("test-figures.log");
    let _ = std::fs::remove_file(&figures);
    let mut c = cmd::cargo();
    c.args(["test", "--workspace", "--exclude", "sipguard-ebpf"])
        .args(["--", "--test-threads=1"])
        .args(&args);
    let code = cmd::exit_code(cmd::status(&mut c)?);
    if let Ok(text) = std::fs::read_to_string(&figures) {
        let kernel = cmd::probe_stdout("uname", &["-srm"]).unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "\n== figures measured by the tests ({}, {cpus} CPUs; `cargo xtask test`)",
            kernel.trim()
        );
        print!("{text}");
    }
    Ok(code)
}

/// The benchmark binary (lab/src/bin/sipguard-bench), in release mode;
/// with `--lab`, the peer comparison (lab/src/bin/sipguard-lab).
pub fn bench(args: Vec<OsString>) -> Result<i32> {
    if args.iter().any(|a| a == "--lab") {
        return lab::bench_lab(args);
    }
    setup::setup(false)?;
    let mut c = cmd::cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "sipguard-lab",
        "--bin",
        "sipguard-bench",
        "--",
    ])
    .args(&args);
    Ok(cmd::exit_code(cmd::status(&mut c)?))
}
