//! The Debian package, end to end: `cargo xtask dist` builds it, `dpkg -i`
//! installs it into this machine, and the installed unit's own `ExecStart`
//! (with the unit's capability bounding set and environment) starts the agent
//! on a veth in a namespace made here; SIGTERM must then detach it cleanly.
//! systemd is not needed (nor, in CI, running): the test reads the unit file.
//!
//! Slow (one release build, plus installing cargo-deb the first time) and
//! intrusive: it installs the package into the real system, so it needs root
//! and a throwaway machine, and runs only when asked (`cargo xtask test --
//! --include-ignored`, as CI does). It purges the package, deletes its namespace and
//! stops its agent on the way out, also when it fails. Only 198.18.0.0/15
//! addresses are used, and no traffic is sent.

use std::{
    collections::HashSet,
    fs,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use sipguard::config::Config;
use sipguard_tests::netns::{agent_key, pin_dir, run_bounded, stderr, wait_until};

/// One release build on a fresh 2-core machine, plus installing cargo-deb.
const DIST_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// dpkg, and waiting for another dpkg/apt to let go of its lock.
const DPKG_TIMEOUT: Duration = Duration::from_secs(180);
const SHORT: Duration = Duration::from_secs(30);
/// The agent loads, verifies and attaches the program (release build).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

const PACKAGE: &str = "sipguard";
const CONFFILE: &str = "/etc/sipguard/sipguard.toml";
const UNIT_NAME: &str = "sipguard@.service";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
}

/// contrib/sipguard.toml documents the defaults: loading it must give exactly
/// `Config::default()`. If a default changes, change it there too.
#[test]
fn shipped_config_is_the_defaults() -> Result<()> {
    let path = workspace().join("contrib/sipguard.toml");
    let cfg = Config::load(&path)?;
    assert_eq!(
        cfg,
        Config::default(),
        "{} no longer matches the built-in defaults (config.rs): update the file",
        path.display()
    );
    Ok(())
}

/// contrib/sipguard.toml sets every key of the configuration (the file is
/// the operator's reference): a key added to config.rs must be added there,
/// at its default and with a comment saying why.
#[test]
fn shipped_config_sets_every_key() -> Result<()> {
    let path = workspace().join("contrib/sipguard.toml");
    let text = fs::read_to_string(&path)?;
    let (tables, keys) = toml_keys(&text);
    let defaults = serde_json::to_value(Config::default())?;
    let mut missing = Vec::new();
    missing_keys(
        "",
        defaults
            .as_object()
            .context("Config serializes to a table")?,
        &tables,
        &keys,
        &mut missing,
    );
    assert!(
        missing.is_empty(),
        "{} does not set {}: add them at their defaults, with a comment saying why",
        path.display(),
        missing.join(", ")
    );
    Ok(())
}

/// The `[tables]` and `(table, key)` assignments of a simple TOML file (bare
/// keys, one per line; inline tables count as one key).
fn toml_keys(text: &str) -> (HashSet<String>, HashSet<(String, String)>) {
    let (mut tables, mut keys) = (HashSet::new(), HashSet::new());
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim().to_owned();
            tables.insert(table.clone());
        } else if let Some((key, _)) = line.split_once('=') {
            keys.insert((table.clone(), key.trim().to_owned()));
        }
    }
    (tables, keys)
}

/// Key paths of `defaults` that the file neither assigns nor opens as a table.
fn missing_keys(
    table: &str,
    defaults: &serde_json::Map<String, serde_json::Value>,
    tables: &HashSet<String>,
    keys: &HashSet<(String, String)>,
    missing: &mut Vec<String>,
) {
    for (key, value) in defaults {
        let path = if table.is_empty() {
            key.clone()
        } else {
            format!("{table}.{key}")
        };
        if keys.contains(&(table.to_owned(), key.clone())) {
            continue;
        }
        match value.as_object() {
            Some(sub) if tables.contains(&path) => missing_keys(&path, sub, tables, keys, missing),
            _ => missing.push(path),
        }
    }
}

/// What the packaging relies on in the unit, checked without building.
#[test]
fn unit_runs_the_agent_with_few_privileges() -> Result<()> {
    let unit = Unit::read(&workspace().join("contrib/systemd").join(UNIT_NAME))?;
    let argv = unit.exec_start("eth0")?;
    assert_eq!(
        argv,
        [
            "/usr/bin/sipguard",
            "run",
            "--iface",
            "eth0",
            "--config",
            CONFFILE
        ]
    );
    assert_eq!(unit.get("KillSignal"), ["SIGTERM"]);
    assert_eq!(unit.get("Restart"), ["on-failure"]);
    assert_eq!(unit.get("NoNewPrivileges"), ["yes"]);
    let caps = unit.capabilities()?;
    assert!(
        caps.iter()
            .all(|c| ["bpf", "perfmon", "net_admin"].contains(&c.as_str())),
        "unexpected capability in the bounding set: {caps:?}"
    );
    Ok(())
}

#[test]
#[ignore = "installs sipguard's .deb into this machine (and purges it): CI runs it with \
            `cargo xtask test -- --include-ignored`"]
fn deb_installs_and_its_unit_starts_the_agent() -> Result<()> {
    // /proc/self belongs to our effective user.
    ensure!(
        fs::metadata("/proc/self")?.uid() == 0,
        "this test installs a package and attaches XDP: run it as root"
    );

    let deb = build_deb()?;
    println!(
        "package: {} ({} bytes)",
        deb.display(),
        fs::metadata(&deb)?.len()
    );
    let contents = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb), SHORT)?;
    println!("{contents}");

    // Declared first, dropped last: purge the package after the agent and
    // the namespace are gone.
    let _package = Installed::install(&deb)?;

    // The files landed, the config is a conffile.
    let bin = Path::new("/usr/bin/sipguard");
    ensure!(bin.is_file(), "{} is not installed", bin.display());
    let listed = run_ok(Command::new("dpkg").args(["-L", PACKAGE]), SHORT)?;
    let unit_path = listed
        .lines()
        .map(Path::new)
        .find(|p| p.file_name().is_some_and(|n| n == UNIT_NAME))
        .with_context(|| format!("the package installs no {UNIT_NAME}:\n{listed}"))?
        .to_path_buf();
    ensure!(
        unit_path.starts_with("/lib/systemd/system") || unit_path.starts_with("/usr/lib/systemd"),
        "{} is not where systemd looks for units",
        unit_path.display()
    );
    ensure!(unit_path.is_file(), "{} is missing", unit_path.display());
    let conffiles = run_ok(
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}\n", PACKAGE]),
        SHORT,
    )?;
    ensure!(
        conffiles.contains(CONFFILE),
        "{CONFFILE} is not a conffile: {conffiles:?}"
    );
    assert_eq!(
        fs::read_to_string(CONFFILE)?,
        fs::read_to_string(workspace().join("contrib/sipguard.toml"))?,
        "the installed {CONFFILE} is not contrib/sipguard.toml"
    );
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let p = Path::new("/usr/share/doc/sipguard").join(doc);
        ensure!(p.is_file(), "{} is not installed", p.display());
    }

    // The installed binary runs and accepts the installed config.
    let version = run_ok(Command::new(bin).arg("--version"), SHORT)?;
    assert_eq!(
        version.trim(),
        format!("sipguard {}", env!("CARGO_PKG_VERSION"))
    );
    let checked = run_ok(Command::new(bin).args(["check-config", CONFFILE]), SHORT)?;
    println!("{}", checked.trim());

    // systemd's own parser, where its tools are installed (systemd need not
    // be running).
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        let out = run_bounded(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(&unit_path),
            SHORT,
        )?;
        // It reports problems in our unit as warnings on stderr with exit
        // code 0; lines about other units of the host are not ours to judge.
        let err = stderr(&out);
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("sipguard")).collect();
        ensure!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {}: {}\n{err}",
            unit_path.display(),
            out.status
        );
        println!("systemd-analyze verify {}: clean", unit_path.display());
    } else {
        println!("systemd-analyze not installed: unit syntax not checked by systemd");
    }

    // Start what the unit starts, as the unit would: its ExecStart with %i
    // (%I) set to a veth in a namespace of ours, its environment, and only
    // the capabilities of its bounding set.
    let unit = Unit::read(&unit_path)?;
    let net = Netns::new()?;
    let argv = unit.exec_start(&net.iface)?;
    let caps = unit.capabilities()?;
    let log = std::env::temp_dir().join(format!("sipguard-package-{}.log", std::process::id()));
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", net.path().display()))
        .arg("setpriv")
        .arg(format!(
            "--bounding-set=-all{}",
            caps.iter().map(|c| format!(",+{c}")).collect::<String>()
        ))
        .arg("--inh-caps=-all");
    if unit.get("NoNewPrivileges") == ["yes"] {
        cmd.arg("--no-new-privs");
    }
    cmd.arg("--").args(&argv);
    for (k, v) in unit.environment() {
        cmd.env(k, v);
    }
    println!("starting the unit's command: {cmd:?}");
    let mut agent = Agent::spawn(cmd, &log, &net.iface)?;

    // Keyed by the interface and its namespace: found once they exist.
    let attached = wait_until(ATTACH_TIMEOUT, || {
        if let Some(st) = agent.try_wait()? {
            bail!("the agent exited ({st}) before attaching");
        }
        Ok(pin_dir(&net.iface).join("link").exists())
    });
    if let Err(e) = attached {
        bail!(
            "the agent did not attach to {}: {e:#}\nits log:\n{}",
            net.iface,
            agent.log()
        );
    }
    let pins = pin_dir(&net.iface);
    let link = run_ok(
        Command::new("ip").args(["-n", &net.ns, "-d", "link", "show", &net.iface]),
        SHORT,
    )?;
    ensure!(
        link.contains("xdp"),
        "pins are there but {} has no XDP program:\n{link}",
        net.iface
    );
    // The installed CLI finds the running agent.
    let stats = run_ok(
        Command::new(bin).args(["stats", "--iface", &net.iface, "--json"]),
        SHORT,
    )?;
    let stats: serde_json::Value = serde_json::from_str(&stats).context("stats --json")?;
    ensure!(stats["total"].is_object(), "odd stats: {stats}");
    println!("attached: pins at {}, XDP on {}", pins.display(), net.iface);

    // SIGTERM (the unit's KillSignal) detaches and removes the pins.
    assert_eq!(unit.get("KillSignal"), ["SIGTERM"]);
    let status = agent.sigterm_and_wait(STOP_TIMEOUT)?;
    ensure!(
        status.success(),
        "the agent exited with {status} on SIGTERM; its log:\n{}",
        agent.log()
    );
    ensure!(
        !pins.exists(),
        "{} is still there after a clean stop",
        pins.display()
    );
    let link = run_ok(
        Command::new("ip").args(["-n", &net.ns, "-d", "link", "show", &net.iface]),
        SHORT,
    )?;
    ensure!(
        !link.contains("xdp"),
        "{} still has an XDP program after a clean stop:\n{link}",
        net.iface
    );
    let log_text = agent.log();
    ensure!(
        log_text.contains("sipguard attached") && log_text.contains("SIGTERM received"),
        "unexpected agent log:\n{log_text}"
    );
    ensure!(
        !log_text.contains('\u{1b}'),
        "colour codes in the agent's log (the unit sets NO_COLOR=1):\n{log_text}"
    );
    println!("stopped cleanly on SIGTERM: pins and XDP gone");
    let _ = fs::remove_file(&log);
    Ok(())
}

/// Run a command (bounded); its stdout if it succeeds, else an error with its
/// stderr.
fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd, timeout)?;
    ensure!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo xtask dist`, its progress on our stderr; the .deb is the last line
/// of its stdout.
fn build_deb() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(workspace())
        .args(["xtask", "dist"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting `cargo xtask dist`")?;
    let mut pipe = child.stdout.take().context("stdout")?;
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + DIST_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`cargo xtask dist` did not finish within {DIST_TIMEOUT:?}; killed it");
        }
        thread::sleep(Duration::from_millis(200));
    };
    let stdout = reader.join().unwrap_or_default();
    ensure!(
        status.success(),
        "`cargo xtask dist` failed ({status}); its output is above"
    );
    let deb = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .with_context(|| format!("`cargo xtask dist` printed no path: {stdout:?}"))?;
    ensure!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "`cargo xtask dist` printed {}, not a .deb",
        deb.display()
    );
    Ok(deb)
}

/// The installed package; purged on drop.
struct Installed;

impl Installed {
    fn install(deb: &Path) -> Result<Self> {
        let before = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", PACKAGE])
            .stderr(Stdio::null())
            .output()?;
        if String::from_utf8_lossy(&before.stdout).contains("installed") {
            println!("note: {PACKAGE} was already installed; it is replaced, then purged");
        }
        // From here on the package may be (partly) installed: purge on drop.
        let guard = Installed;
        let deadline = Instant::now() + DPKG_TIMEOUT;
        loop {
            let out = run_bounded(
                Command::new("dpkg")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    // The shipped config, even if an earlier run left an
                    // edited one behind.
                    .args(["--force-confnew", "-i"])
                    .arg(deb),
                DPKG_TIMEOUT,
            )?;
            if out.status.success() {
                println!("dpkg -i {}: installed", deb.display());
                return Ok(guard);
            }
            let err = stderr(&out);
            // Another dpkg or apt is running: wait for it, bounded.
            if err.contains("lock") && Instant::now() < deadline {
                thread::sleep(Duration::from_secs(2));
                continue;
            }
            bail!("dpkg -i {} failed ({}):\n{err}", deb.display(), out.status);
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        match run_bounded(
            Command::new("dpkg")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["--purge", PACKAGE]),
            DPKG_TIMEOUT,
        ) {
            Ok(out) if out.status.success() => println!("dpkg --purge {PACKAGE}: removed"),
            Ok(out) => eprintln!(
                "dpkg --purge {PACKAGE} failed ({}); remove it by hand:\n{}",
                out.status,
                stderr(&out)
            ),
            Err(e) => eprintln!("dpkg --purge {PACKAGE}: {e:#}; remove it by hand"),
        }
    }
}

/// A network namespace with one veth pair (198.18.250.1/30 and .2); deleted
/// on drop, which also removes the veths.
struct Netns {
    ns: String,
    /// The interface the agent protects. Pins and locks are named after it
    /// host-wide, so it carries our PID.
    iface: String,
}

impl Netns {
    fn new() -> Result<Self> {
        let pid = std::process::id();
        let net = Netns {
            ns: format!("sgpkg-{pid}"),
            iface: format!("sgpkg{pid:x}"),
        };
        let peer = format!("sgpkp{pid:x}");
        ensure!(net.iface.len() <= 15, "interface name too long");
        // A namespace left by a killed earlier run with our PID.
        let _ = run_bounded(Command::new("ip").args(["netns", "del", &net.ns]), SHORT);
        run_ok(Command::new("ip").args(["netns", "add", &net.ns]), SHORT)?;
        let ip =
            |args: &[&str]| run_ok(Command::new("ip").arg("-n").arg(&net.ns).args(args), SHORT);
        ip(&["link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &net.iface, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["addr", "add", "198.18.250.1/30", "dev", &net.iface])?;
        ip(&["addr", "add", "198.18.250.2/30", "dev", &peer])?;
        ip(&["link", "set", &net.iface, "up"])?;
        ip(&["link", "set", &peer, "up"])?;
        Ok(net)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_ok(Command::new("ip").args(["netns", "del", &self.ns]), SHORT) {
            eprintln!("deleting namespace {}: {e:#}", self.ns);
        }
    }
}

/// The agent we started; on drop (a failed test) it is killed by PID and its
/// pins and lock removed, so nothing of ours outlives the test.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
    iface: String,
}

impl Agent {
    fn spawn(mut cmd: Command, log: &Path, iface: &str) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting the agent")?;
        Ok(Agent {
            child: Some(child),
            log: log.to_path_buf(),
            iface: iface.to_owned(),
        })
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("agent already reaped"),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm_and_wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("agent already reaped")?;
        if let Some(st) = child.try_wait()? {
            bail!("the agent had already exited ({st})");
        }
        // nsenter and setpriv exec, so this PID is the agent's.
        run_ok(
            Command::new("kill").args(["-s", "TERM", &child.id().to_string()]),
            SHORT,
        )?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the agent did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        // After a kill the pins stay (that is the crash-safety design);
        // they are ours, named after our interface.
        let pins = pin_dir(&self.iface);
        if pins.exists() {
            let _ = fs::remove_dir_all(&pins);
        }
        let key = agent_key(&self.iface);
        let _ = fs::remove_file(Path::new("/run/sipguard").join(format!("{key}.lock")));
    }
}

/// The few things this test reads from a unit file: `[Service]` keys.
struct Unit {
    lines: Vec<(String, String)>,
}

impl Unit {
    fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut section = String::new();
        let mut lines = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            ensure!(
                !line.ends_with('\\'),
                "continued lines are not handled: {line}"
            );
            if section == "[Service]"
                && let Some((k, v)) = line.split_once('=')
            {
                lines.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        Ok(Unit { lines })
    }

    fn get(&self, key: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// ExecStart's argv with the instance (`%i`, `%I`) set to `iface`.
    fn exec_start(&self, iface: &str) -> Result<Vec<String>> {
        let [line] = self.get("ExecStart")[..] else {
            bail!("expected one ExecStart=, found {:?}", self.get("ExecStart"));
        };
        ensure!(
            !line.contains(['"', '\'', '$']) && !line.starts_with(['-', '@', ':', '+', '!']),
            "ExecStart= uses quoting or prefixes this test does not handle: {line}"
        );
        Ok(line
            .split_whitespace()
            .map(|w| w.replace("%i", iface).replace("%I", iface))
            .collect())
    }

    /// CapabilityBoundingSet= as setpriv names (`CAP_NET_ADMIN` ->
    /// `net_admin`).
    fn capabilities(&self) -> Result<Vec<String>> {
        let mut caps = Vec::new();
        for v in self.get("CapabilityBoundingSet") {
            ensure!(
                !v.starts_with('~'),
                "inverted bounding set not handled: {v}"
            );
            for cap in v.split_whitespace() {
                let name = cap
                    .strip_prefix("CAP_")
                    .with_context(|| format!("odd capability {cap}"))?;
                caps.push(name.to_ascii_lowercase());
            }
        }
        ensure!(!caps.is_empty(), "the unit sets no CapabilityBoundingSet=");
        Ok(caps)
    }

    /// Environment= assignments (unquoted `KEY=VALUE` words).
    fn environment(&self) -> Vec<(String, String)> {
        self.get("Environment")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}
