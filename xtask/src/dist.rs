//! `cargo xtask dist`: the release binary and a Debian package of it, made by
//! cargo-deb from `[package.metadata.deb]` in sipguard/Cargo.toml: the
//! binary, the systemd unit (contrib/systemd/sipguard@.service), the default
//! configuration as a conffile (contrib/sipguard.toml) and the docs.
//!
//! The .deb's path is the one line on stdout, so scripts (and
//! tests/tests/package.rs) can take it; everything else goes to stderr.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

pub fn dist() -> Result<()> {
    let deb = build_deb()?;
    let size = fs::metadata(&deb)
        .with_context(|| format!("reading {}", deb.display()))?
        .len();
    let shown = deb.strip_prefix(cmd::root()).unwrap_or(&deb);
    eprintln!(
        "dist: {} ({size} bytes, {:.1} MiB)",
        shown.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    eprintln!(
        "dist: install it with `dpkg -i {}`, then `systemctl enable --now sipguard@IFACE`",
        shown.display()
    );
    println!("{}", deb.display());
    Ok(())
}

/// Build the release binary, then package it; returns the .deb's path.
fn build_deb() -> Result<PathBuf> {
    setup::setup(false)?;
    setup::cargo_deb()?;
    // Built here rather than by cargo-deb so the build shows the same way as
    // `cargo xtask build --release` and fails with cargo's own message.
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "sipguard"]))?;

    let out_dir = cmd::target_dir().join("debian");
    let mut c = cmd::cargo();
    c.args(["deb", "-p", "sipguard", "--no-build", "--output"])
        .arg(&out_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    cmd::echo(&c);
    let out = c
        .output()
        .context("could not start `cargo deb` (is cargo-deb on PATH?)")?;
    if !out.status.success() {
        bail!(
            "cargo deb failed ({}); see its output above. The package is described by \
             [package.metadata.deb] in sipguard/Cargo.toml",
            out.status
        );
    }
    // cargo-deb prints the path of the package it wrote as its last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(|l| cmd::root().join(Path::new(l)))
        .with_context(|| format!("cargo deb did not name the .deb it wrote: {stdout:?}"))?;
    if !deb.is_file() {
        bail!("cargo deb named {} but it is not there", deb.display());
    }
    Ok(deb)
}
