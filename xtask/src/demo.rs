//! `cargo xtask demo`: setup with the test tools, build sipguard and the demo
//! (release), then become `sipguard-demo`, which shows sipguard defending
//! Kamailio from a SIPVicious scan and an INVITE flood in a namespace lab.

use std::{os::unix::process::CommandExt as _, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, install, setup};

pub fn demo() -> Result<()> {
    if cmd::probe("id", &["-u"]).map(|s| s.trim().to_string()) != Some("0".into()) {
        bail!("the demo builds network namespaces and attaches XDP: run it as root");
    }
    setup::setup(true)?;
    eprintln!("demo: building sipguard and sipguard-demo (release)");
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
        "sipguard-demo",
    ]);
    install::run(
        "cargo build --release (sipguard, sipguard-demo)",
        "demo-build",
        build,
        "the build failed; its log is above",
    )?;
    eprintln!("  built in {}s", start.elapsed().as_secs());
    let release = cmd::target_dir().join("release");
    let mut c = Command::new(release.join("sipguard-demo"));
    // The demo drives this exact binary (no rebuild check in the lab code).
    c.env("SIPGUARD_BIN", release.join("sipguard"));
    cmd::echo(&c);
    // Become the demo, so Ctrl-C reaches it and it can clean up its lab.
    let err = c.exec();
    Err(err).context("could not start sipguard-demo")
}
