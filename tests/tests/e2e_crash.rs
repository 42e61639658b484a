//! Crash safety and hot reload, end to end in a namespace lab (issue 5):
//!
//! * `kill -9` of the agent during a flood: the pinned programs keep
//!   dropping the banned source, its ban survives, and a new `sipguard run`
//!   adopts the pinned state (counters carry on from where they were), also
//!   with pins an older agent left that this one no longer uses;
//! * `sipguard reload` (SIGHUP) applies a changed config file at once, and a
//!   broken file is refused while the running policy is kept;
//! * a list change waits while another process holds the list lock, so
//!   concurrent commands cannot leave a list's "empty" flag stale.
//!
//! Needs root, python3, iproute2 and nsenter. Bounded: a few seconds of
//! traffic at 2000 packets/s.

use std::{
    fs,
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::maps::MapData;
use serde_json::Value;
use sipguard::{lock::ListsLock, maps::Maps};
use sipguard_common::maps::LIST_ALLOW;
use sipguard_tests::{
    flood::{Ctl, Delta, Stream, ban_sources, send, spawn_send},
    netns::{Lab, agent_key, exited, packets, pin_dir, sipguard_bin, sipguard_stats},
};

const FLOOD_RATE: u64 = 2000;

fn banned_drops(stats: &Value) -> u64 {
    packets(stats, "reasons", "banned", "drop")
}

/// The agent's PID from its lock file.
fn agent_pid(iface: &str) -> Result<i32> {
    let text = fs::read_to_string(format!("/run/sipguard/{}.lock", agent_key(iface)))
        .context("reading the agent's lock file")?;
    text.trim().parse().context("parsing the agent's PID")
}

#[test]
fn kill_9_keeps_filtering_and_the_next_agent_adopts_the_bans() -> Result<()> {
    let lab = Lab::new("crash")?;
    let iface = lab.iface().to_string();
    let ctl = Ctl::new(&iface);
    let server = IpAddr::V4(lab.server.v4);
    let attacker = IpAddr::V4(lab.attacker.v4);

    let first = lab.start_agent(&["--metrics", "off"])?;
    ctl.run(&["bans", "add", &attacker.to_string(), "--for", "10m"])?;

    // Flood for 6 s; kill the agent with SIGKILL after 2.
    let flood = Stream::new("flood", &[attacker], "INVITE", FLOOD_RATE, 12_000);
    let running = spawn_send(
        &lab,
        &lab.attacker,
        "flood",
        server,
        &[flood],
        Duration::from_secs(6),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent_pid(&iface)?;
    ensure!(
        pid as u32 == first.pid,
        "lock names pid {pid}, agent is {}",
        first.pid
    );
    let before_kill = sipguard_stats(&iface)?;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t0 = Instant::now();
    // The test's handle reaps it later.
    let dead = || exited(pid as u32);
    while !dead() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(dead(), "the agent survived SIGKILL");
    // The agent is gone; its pins are not, so stats still reads the maps.
    ensure!(
        pin_dir(&iface).join("link").exists(),
        "the link pin vanished with the agent"
    );
    std::thread::sleep(Duration::from_secs(1));
    let after_kill = sipguard_stats(&iface)?;
    let report = running.finish()?;
    let end = sipguard_stats(&iface)?;
    let dropped_while_dead = banned_drops(&end) - banned_drops(&after_kill);
    println!(
        "sent {} INVITEs; banned drops: {} before the kill, {} just after, {} at the end \
         ({} while no agent ran)",
        report.stream("flood").sent,
        banned_drops(&before_kill),
        banned_drops(&after_kill),
        banned_drops(&end),
        dropped_while_dead
    );
    ensure!(
        banned_drops(&before_kill) > 0,
        "nothing was dropped before the kill"
    );
    ensure!(
        dropped_while_dead > 0,
        "no packet was dropped while the agent was dead: the filter went with it"
    );
    ensure!(
        packets(&end, "reasons", "accepted", "pass")
            == packets(&before_kill, "reasons", "accepted", "pass"),
        "the banned source got packets through after the kill"
    );
    drop(first); // already dead; nothing to stop

    // Pins an older agent of the same layout left that this one no longer
    // uses (the two-slot `LIST_EMPTY`, the scan's `TOKENIZE`, pinned until
    // their layouts changed, `BAN_HINTS` below): adoption must ignore them,
    // a clean stop remove them.
    let leftovers = ["LIST_EMPTY", "TOKENIZE"];
    let any_map = MapData::from_pin(pin_dir(&iface).join("GLOBAL_STATE"))?;
    for name in leftovers {
        any_map.pin(pin_dir(&iface).join(name))?;
    }
    // An older agent kept the bans' fast path as `BAN_HINTS`: the new one
    // makes a fresh `BAN_SLOTS`, which must hold the adopted ban before its
    // program judges a packet.
    std::fs::rename(
        pin_dir(&iface).join("BAN_SLOTS"),
        pin_dir(&iface).join("BAN_HINTS"),
    )?;

    // A new agent adopts the pinned state: the ban and the counters survive.
    let second = lab.start_agent(&["--metrics", "off"])?;
    // The old link pin is already there, so `start_agent` returns at once:
    // wait for the new agent to say it attached.
    let t0 = Instant::now();
    while !second.log().contains("sipguard attached") && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = second.log();
    ensure!(
        log.contains("adopting the state pinned"),
        "the new agent did not adopt:\n{log}"
    );
    ensure!(
        log.contains("replaced the running XDP program atomically"),
        "no atomic swap:\n{log}"
    );
    let bans = ctl.bans()?;
    ensure!(
        ban_sources(&bans).contains(&attacker.to_string()),
        "the ban did not survive: {bans}"
    );
    let adopted = sipguard_stats(&iface)?;
    ensure!(
        banned_drops(&adopted) >= banned_drops(&end),
        "counters went back after adoption"
    );
    // And it still filters.
    let again = Stream::new("again", &[attacker], "INVITE", 500, 200);
    send(
        &lab,
        &lab.attacker,
        server,
        &[again],
        Duration::from_secs(3),
    )?;
    let last = sipguard_stats(&iface)?;
    let d = Delta::new(&adopted, &last);
    println!(
        "after adoption: banned drops +{}",
        d.reason("banned", "drop")
    );
    ensure!(
        d.reason("banned", "drop") >= 200 && d.reason("accepted", "pass") == 0,
        "the adopted filter did not drop the banned source: banned +{}, accepted +{}",
        d.reason("banned", "drop"),
        d.reason("accepted", "pass")
    );
    second.stop()?;
    ensure!(!pin_dir(&iface).exists(), "a clean stop left pins behind");
    Ok(())
}

fn write_config(path: &std::path::Path, invite_rate: &str) -> Result<()> {
    fs::write(
        path,
        format!("[limits]\ninvite = {{ rate = \"{invite_rate}\", burst = 20 }}\n"),
    )?;
    Ok(())
}

fn invite_rate(ctl: &Ctl) -> Result<String> {
    let limits = ctl.limits()?;
    Ok(limits["limits"]["invite"]["rate"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn reload_applies_a_good_file_and_refuses_a_bad_one() -> Result<()> {
    let lab = Lab::new("reload")?;
    let iface = lab.iface().to_string();
    let ctl = Ctl::new(&iface);
    let cfg = lab.dir().join("sipguard.toml");
    write_config(&cfg, "10/s")?;
    let agent = lab.start_agent(&["--metrics", "off", "--config", cfg.to_str().unwrap()])?;
    ensure!(
        invite_rate(&ctl)? == "10/s",
        "start: {}",
        invite_rate(&ctl)?
    );

    // A live change, then a reload: the file wins, and the log says so.
    ctl.limits_set(&["invite.rate=30/s"])?;
    write_config(&cfg, "20/s")?;
    ctl.run(&["reload"])?;
    let t0 = Instant::now();
    while invite_rate(&ctl)? != "20/s" && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        invite_rate(&ctl)? == "20/s",
        "reload not applied: {}",
        invite_rate(&ctl)?
    );
    let log = agent.log();
    ensure!(
        log.contains("configuration reloaded"),
        "no reload in the log:\n{log}"
    );
    ensure!(
        log.contains("the config file replaces a live change"),
        "the replaced live change was not logged:\n{log}"
    );

    // A broken file: refused, the running policy kept, the agent alive.
    fs::write(&cfg, "[limits]\ninvite = { rate = \"fast\", burst = 20 }\n")?;
    let status = Command::new("kill")
        .args(["-HUP", &agent.pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -HUP failed");
    let t0 = Instant::now();
    while !agent.log().contains("reload refused") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.log();
    ensure!(
        log.contains("reload refused"),
        "a bad file was not refused:\n{log}"
    );
    ensure!(
        invite_rate(&ctl)? == "20/s",
        "the bad file changed the policy"
    );
    ensure!(pin_dir(&iface).join("link").exists(), "the agent went away");
    agent.stop()?;
    Ok(())
}

/// `sipguard allow add` while another process holds the interface's list
/// lock (`ListsLock`): it waits, and once the lock is released it finishes
/// and the allowlist's flag says "not empty".
#[test]
fn a_list_change_waits_for_the_list_lock() -> Result<()> {
    let lab = Lab::new("listlock")?;
    let iface = lab.iface().to_string();
    let agent = lab.start_agent(&["--metrics", "off"])?;
    let allow_empty = || -> Result<bool> {
        let word = Maps::from_pins(&pin_dir(&iface))?.empty_lists.get(&0, 0)?;
        Ok(word & LIST_ALLOW != 0)
    };
    ensure!(
        allow_empty()?,
        "a fresh agent's allowlist is not marked empty"
    );

    let held = ListsLock::acquire(&pin_dir(&iface))?;
    let mut add = Command::new(sipguard_bin()?)
        .args(["allow", "add", "198.18.77.0/24", "--iface", &iface])
        .spawn()
        .context("starting sipguard allow add")?;
    std::thread::sleep(Duration::from_secs(1));
    let early = add.try_wait()?;
    drop(held);
    ensure!(
        early.is_none(),
        "allow add finished ({early:?}) while another process held the list lock"
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = add.try_wait()? {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = add.kill();
            anyhow::bail!("allow add did not finish after the lock was released");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(status.success(), "allow add failed: {status}");
    ensure!(
        !allow_empty()?,
        "the allowlist holds an entry but is marked empty"
    );
    agent.stop()?;
    Ok(())
}
