//! The namespace-lab binaries of the sipguard-lab crate, lab/
//! (`sipguard-demo`, `sipguard-lab`): check root, set up the test tools,
//! build sipguard and the binary (release), then become the binary, so
//! Ctrl-C reaches it and it can remove its namespaces.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, install, setup};

/// Run `bin` with `args`; `why_root` tells the user what needs root. Returns
/// only on failure.
pub fn exec(bin: &str, why_root: &str, args: &[OsString]) -> Result<()> {
    if cmd::probe("id", &["-u"]).map(|s| s.trim().to_string()) != Some("0".into()) {
        bail!("{why_root}: run it as root");
    }
    setup::setup(true)?;
    eprintln!("{bin}: building sipguard and {bin} (release)");
    let start = Instant::now();
    let mut build = cmd::cargo();
    build.args(["build", "--release", "-p", "sipguard", "-p", "sipguard-lab"]);
    build.args(["--bin", "sipguard", "--bin", bin]);
    install::run(
        &format!("cargo build --release (sipguard, {bin})"),
        &format!("{bin}-build"),
        build,
        "the build failed; its log is above",
    )?;
    eprintln!("  built in {}s", start.elapsed().as_secs());
    let release = cmd::target_dir().join("release");
    let mut c = Command::new(release.join(bin));
    c.args(args);
    // It drives this exact agent binary (no rebuild check in the lab code).
    c.env("SIPGUARD_BIN", release.join("sipguard"));
    cmd::echo(&c);
    let err = c.exec();
    Err(err).with_context(|| format!("could not start {bin}"))
}
