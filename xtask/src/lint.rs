//! `cargo xtask lint`: rustfmt, clippy on the host crates, and clippy on the
//! XDP program for its real target (it is no_std and only builds for BPF).
//! Every check runs even after one fails, so one pass shows every problem.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{cmd, setup};

pub fn lint() -> Result<()> {
    setup::setup(false)?;
    // The host toolchain's rustfmt and clippy (a minimal rustup profile has
    // neither), and clippy for the pinned nightly.
    host_components()?;
    setup::ebpf_toolchain(&["rust-src", "clippy"])?;

    let mut fmt = cmd::cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);

    let mut host = cmd::cargo();
    host.args([
        "clippy",
        "--workspace",
        "--exclude",
        "sipguard-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);

    // `rustup run` rather than `cargo +toolchain`: the cargo that started
    // xtask is the toolchain's own binary, not the rustup proxy.
    let mut ebpf = Command::new("rustup");
    ebpf.current_dir(cmd::root()).args([
        "run",
        setup::EBPF_TOOLCHAIN,
        "cargo",
        "clippy",
        "-p",
        "sipguard-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);

    let mut failed = Vec::new();
    for (name, mut c) in [
        ("rustfmt", fmt),
        ("clippy (host)", host),
        ("clippy (eBPF)", ebpf),
    ] {
        eprintln!("lint: {name}");
        if !cmd::status(&mut c)?.success() {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "lint failed: {}. Fix what is reported above (`cargo fmt --all` fixes formatting), \
             then rerun `cargo xtask lint`",
            failed.join(", ")
        );
    }
    eprintln!("lint: rustfmt, clippy (host), clippy (eBPF) are clean");
    Ok(())
}

/// rustfmt and clippy for the toolchain that runs xtask.
fn host_components() -> Result<()> {
    let have = |sub: &str| {
        let mut c = cmd::cargo();
        c.args([sub, "--version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.status().map(|s| s.success()).unwrap_or(false)
    };
    if have("fmt") && have("clippy") {
        return Ok(());
    }
    eprintln!("lint: adding rustfmt and clippy to the host toolchain");
    cmd::run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}
