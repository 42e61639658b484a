//! `cargo xtask kernels`: the kernel matrix. Boots the Debian kernels SIP
//! hosts run, each in a throwaway VM (virtme-ng over qemu, the host's root
//! shared read-only), runs tests/kernels/guest.sh inside (every program
//! loaded, the fixture suites, a real attach with trust earned and a
//! restart adopted), and prints one line per kernel.
//!
//! Kernel packages come from Debian's archive by name with `apt-get
//! download` through private apt lists under target/kernels/apt (the host's
//! sources are not touched) and are unpacked with `dpkg-deb -x` under
//! target/kernels/x: nothing is installed into the host's /boot.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{cmd, setup};

/// A suite group with its own apt lists: Debian 12 or Debian 13 (with
/// trixie-backports, where Debian's newest kernels are).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dist {
    Bookworm,
    Trixie,
}

impl Dist {
    fn name(self) -> &'static str {
        match self {
            Dist::Bookworm => "bookworm",
            Dist::Trixie => "trixie",
        }
    }

    /// (archive suites, security suites)
    fn suites(self) -> (&'static str, &'static str) {
        match self {
            Dist::Bookworm => ("bookworm", "bookworm-security"),
            Dist::Trixie => ("trixie trixie-backports", "trixie-security"),
        }
    }
}

/// Which version of a package: apt's candidate (the suite's own kernel;
/// backports are pinned lower), or the newest any suite has.
#[derive(Clone, Copy)]
enum Pick {
    Candidate,
    Newest,
}

struct Kernel {
    label: &'static str,
    dist: Dist,
    package: &'static str,
    pick: Pick,
}

/// The matrix: Debian 12's kernels, Debian 13's, Debian's 6.18 and the
/// newest kernel Debian ships. Meta packages follow the archive as it moves.
const KERNELS: [Kernel; 5] = [
    Kernel {
        label: "debian12",
        dist: Dist::Bookworm,
        package: "linux-image-amd64",
        pick: Pick::Candidate,
    },
    Kernel {
        label: "debian12-6.12",
        dist: Dist::Bookworm,
        package: "linux-image-6.12-amd64",
        pick: Pick::Candidate,
    },
    Kernel {
        label: "debian13",
        dist: Dist::Trixie,
        package: "linux-image-amd64",
        pick: Pick::Candidate,
    },
    Kernel {
        label: "debian13-6.18",
        dist: Dist::Trixie,
        package: "linux-image-6.18.15+deb13-amd64",
        pick: Pick::Candidate,
    },
    Kernel {
        label: "debian13-newest",
        dist: Dist::Trixie,
        package: "linux-image-amd64",
        pick: Pick::Newest,
    },
];

/// Half the verifier's one-million-instruction budget: every program must
/// verify within it on every kernel, so a kernel with a less clever verifier
/// still has room.
const MAX_VERIFIED_INSNS: u64 = 500_000;

/// The fixture suites run inside each VM.
const FIXTURE_TESTS: [&str; 7] = [
    "fixtures",
    "fixtures_bans",
    "fixtures_scanner",
    "fixtures_trust",
    "fixtures_limits",
    "fixtures_explain",
    "fixtures_capture",
];

/// One VM's limit: boot, every program, the fixture suites and the attach
/// checks under emulation.
const VM_TIMEOUT: Duration = Duration::from_secs(1200);

pub struct Options {
    pub only: Vec<String>,
    pub jobs: usize,
    pub host: bool,
}

pub fn kernels(opts: Options) -> Result<i32> {
    setup::setup(true)?;
    setup::vm_tools()?;
    let bin = build_sipguard()?;
    let fixtures = build_fixtures()?;
    let base = cmd::target_dir().join("kernels");
    let guest = cmd::root().join("tests/kernels/guest.sh");

    let chosen: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|k| opts.only.is_empty() || opts.only.iter().any(|o| o == k.label))
        .collect();
    if chosen.is_empty() && !opts.host {
        bail!(
            "no kernel matches {:?}; the matrix has: {}",
            opts.only,
            KERNELS
                .iter()
                .map(|k| k.label)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut images = Vec::new();
    for dist in [Dist::Bookworm, Dist::Trixie] {
        if chosen.iter().any(|k| k.dist == dist) {
            apt_update(&base, dist)?;
        }
    }
    for k in &chosen {
        let image = fetch(&base, k).with_context(|| format!("fetching {}", k.label))?;
        images.push((k.label, image));
    }

    let results: Arc<Mutex<BTreeMap<usize, Row>>> = Arc::default();
    if opts.host {
        let out = base.join("out/host");
        let t0 = Instant::now();
        let status = run_guest_script(&guest, &bin, &fixtures, &out, "198.18.251")
            .context("running the check on the host")?;
        let mut row = Row::read("host", &out, t0.elapsed());
        if !status.success() {
            row.failures.push(format!("guest.sh exited with {status}"));
        }
        results.lock().unwrap().insert(usize::MAX, row);
    }
    let queue = Arc::new(Mutex::new(
        images.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            let queue = Arc::clone(&queue);
            let results = Arc::clone(&results);
            let (bin, fixtures, guest, base) = (&bin, &fixtures, &guest, &base);
            s.spawn(move || {
                loop {
                    let Some((i, (label, (version, image)))) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let out = base.join("out").join(label);
                    eprintln!("kernels: booting {label} ({version}) under TCG");
                    let t0 = Instant::now();
                    let booted = boot(&image, guest, bin, fixtures, &out);
                    let mut row = Row::read(label, &out, t0.elapsed());
                    if let Err(e) = booted {
                        row.failures.push(format!("{e:#}"));
                    }
                    eprintln!("kernels: {}", row.line());
                    results.lock().unwrap().insert(i, row);
                }
            });
        }
    });

    let results = results.lock().unwrap();
    println!();
    println!(
        "== sipguard kernel matrix (each program must verify in < {MAX_VERIFIED_INSNS} instructions)"
    );
    println!("{:<16} | {:<24} | result", "kernel", "release");
    let mut failed = 0;
    for row in results.values() {
        println!("{}", row.line());
        if !row.failures.is_empty() {
            failed += 1;
        }
    }
    println!("(logs: {}/out/KERNEL/)", base.display());
    println!(
        "kernels: {} passed, {} failed",
        results.len() - failed,
        failed
    );
    Ok(if failed == 0 { 0 } else { 1 })
}

/// One kernel's outcome, from the files guest.sh left in its output folder.
struct Row {
    label: String,
    release: String,
    took: Duration,
    checks: Vec<(String, bool, String)>,
    failures: Vec<String>,
}

impl Row {
    fn read(label: &str, out: &Path, took: Duration) -> Row {
        let release = fs::read_to_string(out.join("kernel.txt"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
            .unwrap_or_else(|| "?".to_string());
        let mut checks = Vec::new();
        let mut failures = Vec::new();
        match fs::read_to_string(out.join("checks.txt")) {
            Ok(text) => {
                for line in text.lines() {
                    let mut f = line.splitn(4, ' ');
                    if f.next() != Some("CHECK") {
                        continue;
                    }
                    let name = f.next().unwrap_or("?").to_string();
                    let ok = f.next() == Some("ok");
                    let detail = f.next().unwrap_or("").to_string();
                    if !ok {
                        failures.push(format!("{name}: {detail}"));
                    }
                    checks.push((name, ok, detail));
                }
            }
            Err(_) => failures.push("no results (the VM did not boot or the check died)".into()),
        }
        for want in [
            "load",
            "attach",
            "tc_egress",
            "stats",
            "trust",
            "adopt",
            "clean_stop",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(FIXTURE_TESTS.iter().map(|t| format!("fixtures:{t}")))
        {
            if !checks.iter().any(|(n, _, _)| *n == want) {
                failures.push(format!("{want}: not reached"));
            }
        }
        for (name, insns) in verified_insns(out) {
            if insns >= MAX_VERIFIED_INSNS {
                failures.push(format!(
                    "{name} verified in {insns} instructions (limit {MAX_VERIFIED_INSNS})"
                ));
            }
        }
        Row {
            label: label.to_string(),
            release,
            took,
            checks,
            failures,
        }
    }

    fn line(&self) -> String {
        let get = |n: &str| {
            self.checks
                .iter()
                .find(|(name, _, _)| name == n)
                .map(|(_, ok, d)| (*ok, d.as_str()))
        };
        let fixtures = self
            .checks
            .iter()
            .filter(|(n, _, _)| n.starts_with("fixtures:"))
            .collect::<Vec<_>>();
        let fixtures_ok = fixtures.iter().filter(|(_, ok, _)| *ok).count();
        let tests: u64 = fixtures
            .iter()
            .filter_map(|(_, _, d)| {
                d.split(';')
                    .next()?
                    .split_whitespace()
                    .rev()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        let load = get("load").map_or("-", |(_, d)| d);
        let egress = get("tc_egress").map_or("-", |(_, d)| d);
        let verdict = if self.failures.is_empty() {
            "ok".to_string()
        } else {
            format!("FAILED: {}", self.failures.join("; "))
        };
        format!(
            "{:<16} | {:<24} | {verdict} | {}s | programs: {load} | fixtures {fixtures_ok}/{} suites, {tests} tests passed | tc_egress={egress}",
            self.label,
            self.release,
            self.took.as_secs(),
            FIXTURE_TESTS.len(),
        )
    }
}

/// (program, verified instructions) from `sipguard check-kernel --json`.
fn verified_insns(out: &Path) -> Vec<(String, u64)> {
    let Ok(text) = fs::read_to_string(out.join("programs.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v["programs"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p["name"].as_str()?.to_string(),
                        p["verified_insns"].as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The sipguard binary the guests run (debug: `cargo xtask test` builds it
/// too, so CI compiles it once).
fn build_sipguard() -> Result<PathBuf> {
    cmd::run(cmd::cargo().args(["build", "-p", "sipguard"]))?;
    Ok(cmd::target_dir().join("debug/sipguard"))
}

/// The fixture test binaries, built and not run; their paths from cargo's
/// JSON messages.
fn build_fixtures() -> Result<Vec<PathBuf>> {
    let mut c = cmd::cargo();
    c.args([
        "test",
        "-p",
        "sipguard-tests",
        "--no-run",
        "--message-format=json",
    ]);
    for t in FIXTURE_TESTS {
        c.args(["--test", t]);
    }
    cmd::echo(&c);
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the fixture tests failed");
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["profile"]["test"] == true
            && let Some(exe) = msg["executable"].as_str()
            && FIXTURE_TESTS.contains(&msg["target"]["name"].as_str().unwrap_or(""))
        {
            bins.push(PathBuf::from(exe));
        }
    }
    if bins.len() != FIXTURE_TESTS.len() {
        bail!(
            "expected {} fixture test binaries, cargo built {bins:?}",
            FIXTURE_TESTS.len()
        );
    }
    Ok(bins)
}

/// apt options for `dist`'s private lists.
fn apt_opts(base: &Path, dist: Dist) -> Vec<String> {
    let d = base.join("apt").join(dist.name());
    vec![
        "-o".into(),
        "Dir::Etc::SourceList=/dev/null".into(),
        "-o".into(),
        // The download lands in target/, which apt's sandbox user cannot write.
        "APT::Sandbox::User=root".into(),
        "-o".into(),
        format!("Dir::Etc::SourceParts={}", d.join("parts").display()),
        "-o".into(),
        format!("Dir::State::Lists={}", d.join("lists").display()),
        "-o".into(),
        format!("Dir::Cache={}", d.join("cache").display()),
    ]
}

/// The archive and security mirrors the host's apt already uses.
fn mirrors() -> Result<(String, String)> {
    let mut uris = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(u) = line.strip_prefix("URIs:") {
                uris.extend(u.split_whitespace().map(str::to_owned));
            } else if let Some(rest) = line.strip_prefix("deb ")
                && let Some(u) = rest.split_whitespace().find(|w| w.contains("://"))
            {
                uris.push(u.to_string());
            }
        }
    }
    let security = uris.iter().find(|u| u.contains("security"));
    let archive = uris
        .iter()
        .find(|u| !u.contains("security") && u.contains("debian"));
    match (archive, security) {
        (Some(a), Some(s)) => Ok((a.clone(), s.clone())),
        _ => bail!(
            "could not find Debian archive and security mirrors in /etc/apt/sources.list(.d); \
             the kernel matrix fetches Debian's kernels through them"
        ),
    }
}

fn apt_update(base: &Path, dist: Dist) -> Result<()> {
    let (archive, security) = mirrors()?;
    let d = base.join("apt").join(dist.name());
    for sub in ["parts", "lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(d.join(sub))?;
    }
    let (suites, sec) = dist.suites();
    let key = "/usr/share/keyrings/debian-archive-keyring.gpg";
    fs::write(
        d.join("parts/sipguard-kernels.sources"),
        format!(
            "Types: deb\nURIs: {archive}\nSuites: {suites}\nComponents: main\nSigned-By: {key}\n\n\
             Types: deb\nURIs: {security}\nSuites: {sec}\nComponents: main\nSigned-By: {key}\n"
        ),
    )?;
    let mut c = Command::new("apt-get");
    c.args(apt_opts(base, dist)).args(["update", "-qq"]);
    cmd::run(&mut c).with_context(|| format!("apt-get update for {}", dist.name()))
}

fn apt_stdout(base: &Path, dist: Dist, args: &[&str]) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(apt_opts(base, dist))
        .args(args)
        .stderr(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Follow a meta package down to the image package it depends on.
fn resolve(base: &Path, k: &Kernel) -> Result<String> {
    let mut pkg = k.package.to_string();
    let mut spec = pkg.clone();
    if let Pick::Newest = k.pick {
        let madison = apt_stdout(base, k.dist, &["madison", &pkg])?;
        let newest = madison
            .lines()
            .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_string()))
            .max_by(|a, b| {
                if dpkg_newer(a, b) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Less
                }
            })
            .ok_or_else(|| anyhow!("apt knows no version of {pkg}"))?;
        spec = format!("{pkg}={newest}");
    }
    for _ in 0..3 {
        let deps = apt_stdout(base, k.dist, &["depends", &spec])?;
        let next = deps.lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends: ")?;
            dep.starts_with("linux-image-")
                .then(|| dep.to_string())
                .filter(|d| d.chars().nth(12).is_some_and(|c| c.is_ascii_digit()))
        });
        match next {
            Some(n) => {
                pkg = n.clone();
                spec = n;
            }
            None => break,
        }
    }
    Ok(pkg)
}

fn dpkg_newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian 12's package `pkg`, downloaded through the matrix's private apt
/// lists into target/kernels/debs (never installed); its path. For test
/// tools Debian packages but the host must not install (CrowdSec).
pub fn bookworm_package(pkg: &str) -> Result<PathBuf> {
    let base = cmd::target_dir().join("kernels");
    apt_update(&base, Dist::Bookworm)?;
    download(&base, Dist::Bookworm, pkg)
}

/// Download `pkg` into target/kernels/debs once; its path.
fn download(base: &Path, dist: Dist, pkg: &str) -> Result<PathBuf> {
    let debs = base.join("debs");
    fs::create_dir_all(&debs)?;
    let find = || -> Option<PathBuf> {
        fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    let mut c = Command::new("apt-get");
    c.current_dir(&debs)
        .args(apt_opts(base, dist))
        .args(["download", "-qq", pkg]);
    cmd::run(&mut c).with_context(|| format!("apt-get download {pkg}"))?;
    find().ok_or_else(|| anyhow!("apt-get download {pkg} left no .deb"))
}

/// Resolve, download and unpack one kernel; (release, vmlinuz path).
fn fetch(base: &Path, k: &Kernel) -> Result<(String, PathBuf)> {
    let pkg = resolve(base, k)?;
    let deb = download(base, k.dist, &pkg)?;
    let dir = base.join("x").join(&pkg);
    if find_vmlinuz(&dir).is_none() {
        fs::create_dir_all(&dir)?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        // From 6.19 Debian splits a kernel: the image package depends on
        // linux-binary-V (vmlinuz) and linux-modules-V.
        if find_vmlinuz(&dir).is_none() {
            let deps = Command::new("dpkg-deb")
                .args(["-f"])
                .arg(&deb)
                .arg("Depends")
                .output()?;
            for dep in String::from_utf8_lossy(&deps.stdout).split([',', '|']) {
                let dep = dep.split_whitespace().next().unwrap_or("");
                if dep.starts_with("linux-binary-") || dep.starts_with("linux-modules-") {
                    let part = download(base, k.dist, dep)?;
                    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&part).arg(&dir))?;
                }
            }
        }
    }
    let image = find_vmlinuz(&dir).ok_or_else(|| anyhow!("no vmlinuz in {pkg}"))?;
    let release = release_of(&image).unwrap_or(pkg);
    Ok((release, image))
}

/// The kernel image in an unpacked package: boot/vmlinuz-V, or (Debian's
/// split packages from 6.19 on) usr/lib/modules/V/vmlinuz.
fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    let in_boot = fs::read_dir(dir.join("boot")).ok().and_then(|d| {
        d.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
    });
    in_boot.or_else(|| {
        fs::read_dir(dir.join("usr/lib/modules"))
            .ok()?
            .flatten()
            .map(|e| e.path().join("vmlinuz"))
            .find(|p| p.exists())
    })
}

/// "6.1.0-57-amd64" from boot/vmlinuz-6.1.0-57-amd64 or from
/// usr/lib/modules/7.3.4+deb13-amd64/vmlinuz.
fn release_of(image: &Path) -> Option<String> {
    let name = image.file_name()?.to_str()?;
    match name.strip_prefix("vmlinuz-") {
        Some(r) => Some(r.to_string()),
        None => Some(image.parent()?.file_name()?.to_str()?.to_string()),
    }
}

fn guest_args(guest: &Path, bin: &Path, fixtures: &[PathBuf], out: &Path, net: &str) -> String {
    let fixtures: Vec<String> = fixtures.iter().map(|f| f.display().to_string()).collect();
    format!(
        "bash {} --bin {} --out {} --net {net} --fixtures '{}'",
        guest.display(),
        bin.display(),
        out.display(),
        fixtures.join(" ")
    )
}

/// Boot `image` under TCG (KVM does not boot Debian kernels on the project's
/// Firecracker VMs) with 1 vCPU and 2 GiB, run guest.sh, wait for it.
fn boot(image: &Path, guest: &Path, bin: &Path, fixtures: &[PathBuf], out: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out)?;
    let console = fs::File::create(out.join("console.log"))?;
    let mut c = Command::new("timeout");
    c.arg(format!("{}s", VM_TIMEOUT.as_secs()))
        .arg("vng")
        .arg("--run")
        .arg(image)
        .args([
            "--cpus",
            "1",
            "--memory",
            "2G",
            "--disable-kvm",
            "--verbose",
        ])
        .arg(format!("--rwdir={}", out.display()))
        .arg("--exec")
        .arg(guest_args(guest, bin, fixtures, out, "198.18.250"))
        // vng treats its working directory as a kernel tree: keep it neutral.
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    let status = c.status().context("starting vng (virtme-ng)")?;
    if !out.join("checks.txt").exists() {
        bail!(
            "the VM ended ({status}) without results; see {}",
            out.join("console.log").display()
        );
    }
    Ok(())
}

/// The same check on the running kernel, in namespaces (a control).
fn run_guest_script(
    guest: &Path,
    bin: &Path,
    fixtures: &[PathBuf],
    out: &Path,
    net: &str,
) -> Result<std::process::ExitStatus> {
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out)?;
    Ok(Command::new("bash")
        .arg("-c")
        .arg(guest_args(guest, bin, fixtures, out, net))
        .stdin(Stdio::null())
        .status()?)
}
