//! Start-up as scripts and systemd see it (issue 16), in a namespace lab:
//!
//! * the agent's pins appear only once its policy and signatures are in
//!   place: a command that finds them never reads a half-made agent, and
//!   `sipguard run &` + `sipguard wait` + `sipguard limits set` works on
//!   every one of many starts;
//! * a SIGTERM at any moment of start-up stops the agent as cleanly as one
//!   after it: no pins, no staging directory, no XDP program, no lock;
//! * the interface lock is root's alone, and deleting its file does not let
//!   a second agent in.
//!
//! Needs root, iproute2 and nsenter. No traffic. `SIPGUARD_START_LOOPS`
//! sets the number of starts of each test (default 50).

use std::{
    os::unix::process::ExitStatusExt as _,
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use sipguard::{config::Config, maps::Maps};
use sipguard_tests::{
    flood::Ctl,
    netns::{Lab, pin_dir, run_bounded, sipguard_bin, staging_dir, stderr},
};

fn starts() -> usize {
    std::env::var("SIPGUARD_START_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// What a command reads of an agent: its policy (as the config file would
/// say it) and how many signatures it holds.
fn agent_view(maps: &Maps) -> Result<(String, usize)> {
    let policy = toml::to_string(&Config::from_policy(&maps.policy()?))?;
    let signatures = maps.signatures.keys().count();
    Ok((policy, signatures))
}

#[test]
fn every_start_is_ready_for_commands_when_its_pins_appear() -> Result<()> {
    let lab = Lab::new("ready")?;
    let iface = lab.iface().to_string();
    let ctl = Ctl::new(&iface);
    let bin = sipguard_bin()?;
    let want = {
        let defaults = Config::default();
        toml::to_string(&Config::from_policy(&defaults.policy()))?
    };
    for i in 0..starts() {
        let mut agent = lab.spawn_agent(&["--metrics", "off"])?;
        // Read the pins the moment they appear, as a script's command would.
        let dir = lab.agent_pin_dir();
        let t0 = Instant::now();
        let first = loop {
            if dir.is_dir() {
                break Maps::from_pins(&dir).and_then(|m| agent_view(&m));
            }
            if let Some(status) = agent.exited()? {
                bail!(
                    "start {i}: the agent exited ({status}); log:\n{}",
                    agent.log()
                );
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "start {i}: no pins after 60 s; log:\n{}",
                agent.log()
            );
            sleep(Duration::from_millis(1));
        };
        let (policy, signatures) = first.with_context(|| {
            format!("start {i}: the pins appeared before the agent could be read")
        })?;
        ensure!(
            policy == want,
            "start {i}: the pins appeared before the policy was written:\n{policy}\nwanted:\n{want}"
        );
        ensure!(
            signatures > 0,
            "start {i}: the pins appeared before the signatures were written"
        );

        let out = run_bounded(
            Command::new(&bin).args(["wait", "--iface", &iface, "--timeout", "60s"]),
            Duration::from_secs(70),
        )?;
        ensure!(
            out.status.success(),
            "start {i}: sipguard wait failed: {}; log:\n{}",
            stderr(&out),
            agent.log()
        );
        ensure!(
            lab.xdp_attach_mode()?.is_some(),
            "start {i}: `sipguard wait` returned before the program was attached"
        );
        let rate = format!("{}/s", 10 + i);
        ctl.limits_set(&[&format!("invite.rate={rate}")])?;
        let limits = ctl.limits()?;
        ensure!(
            limits["limits"]["invite"]["rate"].as_str() == Some(rate.as_str()),
            "start {i}: limits set did not take: {limits}"
        );
        let status = agent.stop()?;
        ensure!(
            status.success(),
            "start {i}: the agent exited with {status}"
        );
        ensure!(
            !dir.exists(),
            "start {i}: a clean stop left {}",
            dir.display()
        );
    }
    Ok(())
}

#[test]
fn a_sigterm_at_any_moment_of_start_up_leaves_nothing_behind() -> Result<()> {
    let lab = Lab::new("sigterm")?;
    let iface = lab.iface().to_string();
    // How long a start takes here: the signals are spread over it.
    let t0 = Instant::now();
    let agent = lab.start_agent(&["--metrics", "off"])?;
    let start_up = t0.elapsed();
    ensure!(
        agent.stop()?.success(),
        "the first agent did not stop cleanly"
    );

    let n = starts();
    for i in 0..n {
        // From right after the exec to a little past the attach.
        let delay = start_up.mul_f64(1.2 * i as f64 / n as f64);
        let agent = lab.spawn_agent(&["--metrics", "off"])?;
        let log_path = agent.log_path();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        sleep(delay);
        let status = agent.stop()?;
        // Killed by the signal only if it came before the agent set up its
        // handlers, when it has created nothing yet.
        ensure!(
            status.success() || status.signal() == Some(libc::SIGTERM),
            "SIGTERM {delay:?} into start {i}: the agent exited with {status}; log:\n{}",
            log()
        );
        for dir in [pin_dir(&iface), staging_dir(&iface)] {
            ensure!(
                !dir.exists(),
                "SIGTERM {delay:?} into start {i} ({status}) left {}; log:\n{}",
                dir.display(),
                log()
            );
        }
        ensure!(
            lab.xdp_attach_mode()?.is_none(),
            "SIGTERM {delay:?} into start {i} ({status}) left the XDP program attached"
        );
        ensure!(
            sipguard::lock::running_agent(&iface).is_none(),
            "SIGTERM {delay:?} into start {i}: the interface is still locked"
        );
    }
    Ok(())
}

/// The interface lock cannot be taken from the agent: its directory and
/// file are root's alone (an older sipguard's wider modes are tightened),
/// another user cannot open the file to hold it, and deleting the file under
/// a running agent does not let a second agent in.
#[test]
fn the_interface_lock_is_private_and_survives_its_file_being_deleted() -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let lab = Lab::new("lock")?;
    let iface = lab.iface().to_string();
    let lock_dir = std::path::Path::new(sipguard::lock::LOCK_DIR);
    let lock_file = lock_dir.join(format!("{}.lock", lab.agent_key()));
    // What an older sipguard left: a world-readable directory and file.
    std::fs::create_dir_all(lock_dir)?;
    std::fs::set_permissions(lock_dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(&lock_file, "")?;
    std::fs::set_permissions(&lock_file, std::fs::Permissions::from_mode(0o644))?;

    let agent = lab.start_agent(&["--metrics", "off"])?;
    let dir_mode = std::fs::metadata(lock_dir)?.mode() & 0o777;
    let file_mode = std::fs::metadata(&lock_file)?.mode() & 0o777;
    ensure!(dir_mode == 0o700, "{} is {dir_mode:o}", lock_dir.display());
    ensure!(
        file_mode == 0o600,
        "{} is {file_mode:o}",
        lock_file.display()
    );
    let out = run_bounded(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(&lock_file),
        Duration::from_secs(10),
    )?;
    ensure!(
        !out.status.success(),
        "user nobody could open the lock file: {out:?}"
    );

    std::fs::remove_file(&lock_file)?;
    let second = run_bounded(
        lab.server
            .command(sipguard_bin()?)
            .args(["run", "--iface", &iface, "--metrics", "off"]),
        Duration::from_secs(60),
    )?;
    ensure!(
        !second.status.success() && stderr(&second).contains("still runs"),
        "a second agent started while the first runs ({}): {}",
        second.status,
        stderr(&second)
    );
    ensure!(
        lab.xdp_attach_mode()?.is_some(),
        "the first agent's program is gone"
    );
    ensure!(
        agent.stop()?.success(),
        "the first agent did not stop cleanly"
    );
    Ok(())
}
