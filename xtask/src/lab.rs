//! `cargo xtask bench --lab`: setup with the test tools, build sipguard and
//! sipguard-lab (release), then become `sipguard-lab`, the peer comparison:
//! Kamailio under INVITE floods behind no defence, iptables, nftables and
//! sipguard, in namespace labs, printed as one table.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, install, setup};

/// `args` are the bench's arguments; `--lab` is dropped, the rest go to
/// sipguard-lab (e.g. `--flood spoofed --defence iptables`).
pub fn bench_lab(args: Vec<OsString>) -> Result<i32> {
    if cmd::probe("id", &["-u"]).map(|s| s.trim().to_string()) != Some("0".into()) {
        bail!(
            "the lab builds network namespaces, loads netfilter rules and attaches XDP: run it as root"
        );
    }
    setup::setup(true)?;
    eprintln!("bench --lab: building sipguard and sipguard-lab (release)");
    let start = Instant::now();
    let mut build = cmd::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "sipguard",
        "-p",
        "sipguard-tests",
        "--bin",
        "sipguard",
        "--bin",
        "sipguard-lab",
    ]);
    install::run(
        "cargo build --release (sipguard, sipguard-lab)",
        "lab-build",
        build,
        "the build failed; its log is above",
    )?;
    eprintln!("  built in {}s", start.elapsed().as_secs());
    let release = cmd::target_dir().join("release");
    let mut c = Command::new(release.join("sipguard-lab"));
    c.args(args.iter().filter(|a| *a != "--lab"));
    // The lab drives this exact binary (no rebuild check in the lab code).
    c.env("SIPGUARD_BIN", release.join("sipguard"));
    cmd::echo(&c);
    // Become the lab, so Ctrl-C reaches it and it can remove its namespaces.
    let err = c.exec();
    Err(err).context("could not start sipguard-lab")
}
