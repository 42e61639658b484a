//! `cargo xtask setup [--test-deps]`: install what building and testing
//! sipguard needs, checking first so a machine that has it all is done in well
//! under a second.

use std::{fs, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, install};

/// The nightly that builds the eBPF object. Must equal `EBPF_TOOLCHAIN` in
/// sipguard/build.rs, which builds with it (bpf-linker 0.10.0 links its LLVM 22).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-07-20";

/// bpf-linker 0.11+ needs LLVM 23 and does not build here.
const BPF_LINKER_VERSION: &str = "0.10.0";

/// cargo-deb, which `cargo xtask dist` packages the .deb with. 3.8.0 builds on
/// the stable 1.95 host toolchain (it needs rustc >= 1.85).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages the tests drive: sipp, a real SIP server, raw floods,
/// captures, BPF inspection, namespaces and veths, UDP plumbing, promtool
/// (package prometheus) for the alert rules, curl, and the peer defences
/// `bench --lab` compares with (iptables, nftables).
const APT_PACKAGES: [&str; 11] = [
    "prometheus",
    "curl",
    "sip-tester",
    "kamailio",
    "hping3",
    "tshark",
    "bpftool",
    "iproute2",
    "socat",
    "iptables",
    "nftables",
];

/// PyPI packages the tests drive (scanner traffic, hand-built packets), and
/// the Python modules that show they are installed.
const PIP_PACKAGES: [&str; 2] = ["sipvicious", "scapy"];
const PIP_IMPORT_CHECK: &str = "import sipvicious, scapy";

const BPFFS: &str = "/sys/fs/bpf";

/// What the kernel matrix (`cargo xtask kernels`) boots its VMs with:
/// qemu, kmod (depmod) and busybox (virtme-ng's initramfs, which loads the
/// 9p and virtio modules of a distribution kernel) from Debian, virtme-ng
/// from PyPI.
const VM_APT_PACKAGES: [&str; 4] = ["qemu-system-x86", "kmod", "busybox-static", "file"];
const VM_PIP_PACKAGE: &str = "virtme-ng";

/// Print one line for a step that needed nothing, or that installed.
fn report(step: &str, what: &str) {
    eprintln!("setup: {step}: {what}");
}

pub fn setup(test_deps: bool) -> Result<()> {
    ebpf_toolchain(&["rust-src"])?;
    bpf_linker()?;
    if test_deps {
        apt_packages()?;
        pip_packages()?;
        crowdsec()?;
        bpffs()?;
    }
    Ok(())
}

/// Where the CrowdSec binaries the fleet tests run are unpacked.
fn crowdsec_root() -> std::path::PathBuf {
    cmd::target_dir().join("crowdsec/root")
}

/// Debian 12's CrowdSec (the Local API and cscli) unpacked under
/// target/crowdsec, not installed: its package's post-install step
/// registers with CrowdSec's central API, and a test machine must not.
fn crowdsec() -> Result<()> {
    let root = crowdsec_root();
    if root.join("usr/bin/crowdsec").is_file() {
        report("CrowdSec (unpacked)", "present");
        return Ok(());
    }
    require_root("CrowdSec (unpacked)")?;
    report(
        "CrowdSec (unpacked)",
        "downloading Debian 12's crowdsec package",
    );
    let deb = crate::kernels::bookworm_package("crowdsec")?;
    fs::create_dir_all(&root)?;
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(&deb).arg(&root);
    cmd::run(&mut c).context("unpacking crowdsec")?;
    Ok(())
}

fn installed_components(toolchain: &str) -> Option<String> {
    cmd::probe(
        "rustup",
        &["component", "list", "--installed", "--toolchain", toolchain],
    )
}

/// The pinned nightly with `components` (rust-src to build core for the BPF
/// target; clippy for `lint`).
pub fn ebpf_toolchain(components: &[&str]) -> Result<()> {
    let step = format!("{EBPF_TOOLCHAIN} with {}", components.join(", "));
    let have = installed_components(EBPF_TOOLCHAIN).unwrap_or_default();
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| {
            !have
                .lines()
                .any(|l| l.starts_with(&format!("{c}-")) || l == *c)
        })
        .collect();
    if !have.is_empty() && missing.is_empty() {
        report(&step, "present");
        return Ok(());
    }
    if cmd::probe("rustup", &["--version"]).is_none() {
        bail!("rustup is not on PATH; install Rust with rustup (https://rustup.rs) and retry");
    }
    let mut c = Command::new("rustup");
    c.args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--no-self-update",
    ]);
    for comp in components {
        c.args(["--component", comp]);
    }
    let took = install::run(
        &step,
        "rustup",
        c,
        "check the network and disk space, then rerun `cargo xtask setup`",
    )?;
    report(&step, &format!("installed in {}s", took.as_secs()));
    Ok(())
}

/// bpf-linker, the linker aya-build uses for the BPF target.
fn bpf_linker() -> Result<()> {
    let step = format!("bpf-linker {BPF_LINKER_VERSION}");
    let found = cmd::probe("bpf-linker", &["--version"]);
    let version = found
        .as_deref()
        .and_then(|v| v.split_whitespace().nth(1))
        .map(str::to_owned);
    if version.as_deref() == Some(BPF_LINKER_VERSION) {
        report(&step, "present");
        return Ok(());
    }
    if let Some(v) = &version {
        eprintln!("setup: {step}: found bpf-linker {v}, replacing it");
    }
    let mut c = cmd::cargo();
    c.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
    ]);
    let took = install::run(
        &step,
        "cargo-install-bpf-linker",
        c,
        "check the network and disk space, then rerun `cargo xtask setup`",
    )?;
    if cmd::probe("bpf-linker", &["--version"]).is_none() {
        bail!(
            "bpf-linker was installed but is not on PATH: add cargo's bin directory \
             (usually ~/.cargo/bin) to PATH and retry"
        );
    }
    report(&step, &format!("installed in {}s", took.as_secs()));
    Ok(())
}

/// cargo-deb, for `cargo xtask dist` only (the .deb); not part of `setup`,
/// so building and testing never wait for it.
pub fn cargo_deb() -> Result<()> {
    let step = format!("cargo-deb {CARGO_DEB_VERSION}");
    // `cargo-deb --version` prints "cargo-deb 3.8.0" (older ones "3.8.0").
    let found = cmd::probe("cargo-deb", &["--version"]);
    let version = found
        .as_deref()
        .and_then(|v| v.split_whitespace().last())
        .map(str::to_owned);
    if version.as_deref() == Some(CARGO_DEB_VERSION) {
        report(&step, "present");
        return Ok(());
    }
    if let Some(v) = &version {
        eprintln!("setup: {step}: found cargo-deb {v}, replacing it");
    }
    let mut c = cmd::cargo();
    c.args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
        "--force",
    ]);
    let took = install::run(
        &step,
        "cargo-install-cargo-deb",
        c,
        "check the network and disk space, then rerun `cargo xtask dist`",
    )?;
    if cmd::probe("cargo-deb", &["--version"]).is_none() {
        bail!(
            "cargo-deb was installed but is not on PATH: add cargo's bin directory \
             (usually ~/.cargo/bin) to PATH and retry"
        );
    }
    report(&step, &format!("installed in {}s", took.as_secs()));
    Ok(())
}

/// The VM tools of the kernel matrix (not part of `setup --test-deps`:
/// only `cargo xtask kernels` needs them).
pub fn vm_tools() -> Result<()> {
    install_apt("VM tools", &VM_APT_PACKAGES)?;
    pip_install(
        &format!("PyPI {VM_PIP_PACKAGE}"),
        &[VM_PIP_PACKAGE],
        || cmd::probe("vng", &["--version"]).is_some(),
        &format!("pip installed {VM_PIP_PACKAGE} but `vng` is not on PATH"),
    )
}

/// The APT packages of `wanted` that dpkg does not report as installed.
fn missing_apt_packages(wanted: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec!["-W", "-f=${Package} ${Status}\n"];
    args.extend(wanted);
    let listed = cmd::probe_stdout("dpkg-query", &args).unwrap_or_default();
    wanted
        .iter()
        .copied()
        .filter(|pkg| {
            !listed
                .lines()
                .any(|l| l.starts_with(&format!("{pkg} ")) && l.ends_with("install ok installed"))
        })
        .collect()
}

fn apt_command(args: &[&str]) -> Command {
    let mut c = Command::new("apt-get");
    c.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Keep a changed config file rather than ask which one to keep.
        .args([
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ]);
    c
}

fn apt_packages() -> Result<()> {
    install_apt("Debian packages", &APT_PACKAGES)
}

fn install_apt(step: &str, wanted: &[&'static str]) -> Result<()> {
    let missing = missing_apt_packages(wanted);
    if missing.is_empty() {
        report(step, &format!("present ({})", wanted.join(" ")));
        return Ok(());
    }
    require_root(step)?;
    if missing.contains(&"tshark") {
        preseed_tshark()?;
    }
    let hint = "check the network and `apt-get` (is another apt running?), then rerun \
                `cargo xtask setup --test-deps`";
    let updated = install::run(
        "apt-get update",
        "apt",
        apt_command(&["update", "-q"]),
        hint,
    )?;
    let mut c = apt_command(&["install", "-y", "-q", "--no-install-recommends"]);
    c.args(&missing);
    let took = install::run(
        &format!("apt-get install {}", missing.join(" ")),
        "apt",
        c,
        hint,
    )?;
    let still = missing_apt_packages(wanted);
    if !still.is_empty() {
        bail!(
            "apt-get reported success but {} are still not installed; see target/xtask/apt.log",
            still.join(" ")
        );
    }
    report(
        step,
        &format!(
            "installed {} in {}s",
            missing.join(" "),
            (updated + took).as_secs()
        ),
    );
    Ok(())
}

/// tshark's package asks whether non-root users may capture; answer "no"
/// up front so the install never stops at that question.
fn preseed_tshark() -> Result<()> {
    use std::io::Write as _;
    let mut child = match Command::new("debconf-set-selections")
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        // No debconf: nothing would ask the question either.
        Err(_) => return Ok(()),
    };
    child
        .stdin
        .take()
        .context("debconf-set-selections stdin")?
        .write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n")?;
    child.wait()?;
    Ok(())
}

fn pip_packages() -> Result<()> {
    pip_install(
        &format!("PyPI {}", PIP_PACKAGES.join(", ")),
        &PIP_PACKAGES,
        || cmd::probe("python3", &["-c", PIP_IMPORT_CHECK]).is_some(),
        &format!(
            "pip installed {} but `python3 -c '{PIP_IMPORT_CHECK}'` still fails: is `python3` \
             the interpreter pip installed into?",
            PIP_PACKAGES.join(", ")
        ),
    )
}

/// `python3 -m pip install PACKAGES` unless `present()`; after it,
/// `present()` must hold, else `still_missing` is the error.
fn pip_install(
    step: &str,
    packages: &[&str],
    present: impl Fn() -> bool,
    still_missing: &str,
) -> Result<()> {
    if present() {
        report(step, "present");
        return Ok(());
    }
    let mut c = Command::new("python3");
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--root-user-action=ignore",
    ])
    .args(packages);
    let took = install::run(
        step,
        "pip",
        c,
        "check the network and that `python3 -m pip` works, then rerun the command",
    )?;
    // pyenv only puts new console scripts (sipvicious_svmap, vng...) on
    // PATH after a rehash; harmless elsewhere.
    let _ = cmd::probe("pyenv", &["rehash"]);
    if !present() {
        bail!("{still_missing}");
    }
    report(step, &format!("installed in {}s", took.as_secs()));
    Ok(())
}

/// sipguard pins its maps on bpffs; the tests read them there.
fn bpffs() -> Result<()> {
    let step = format!("bpffs at {BPFFS}");
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_src, dir, fstype) = (f.next(), f.next(), f.next());
        dir == Some(BPFFS) && fstype == Some("bpf")
    });
    if mounted {
        report(&step, "mounted");
        return Ok(());
    }
    require_root(&step)?;
    fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpffs", BPFFS]))
        .with_context(|| format!("mounting bpffs; try `mount -t bpf bpffs {BPFFS}` as root"))?;
    report(&step, "mounted it now");
    Ok(())
}

fn require_root(step: &str) -> Result<()> {
    let uid = cmd::probe("id", &["-u"]).unwrap_or_default();
    if uid.trim() != "0" {
        bail!("{step}: installing needs root; rerun as root (e.g. `sudo -E cargo xtask ...`)");
    }
    Ok(())
}
