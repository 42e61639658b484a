//! The TC egress program attached the way kernels without TCX (Debian 12's
//! 6.1) attach it, a netlink cls_bpf filter, forced here with
//! `--tc-egress netlink` so the host kernel runs the same path: trust is
//! earned from a 200 OK, a restarted agent replaces the filter's program
//! in place (one filter, a new program), a clean stop removes the filter,
//! and an agent that finds TCX removes the filter a netlink agent left.
//! The kernel matrix (`cargo xtask kernels`) runs the same on 6.1 itself.
//!
//! Needs root, python3, iproute2 (tc) and nsenter.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use sipguard_tests::{
    flood::Ctl,
    netns::{Agent, Lab, exited},
};

const RESPONDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/responder.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/client.py");

/// sipguard's egress filters on the server's interface: the program id of
/// each (`tc filter show` prints `sipguard_egress ... id N`).
fn egress_filters(lab: &Lab) -> Result<Vec<u64>> {
    let out = lab.run(
        &lab.server,
        "tc",
        ["filter", "show", "dev", lab.iface(), "egress"],
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(text
        .lines()
        .filter(|l| l.contains("sipguard_egress"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "id")?;
            words.next()?.parse().ok()
        })
        .collect())
}

/// Start an agent and wait until its egress program is attached (logged
/// after the XDP link is pinned, which is all `start_agent` waits for).
fn start<'l>(lab: &'l Lab, extra: &[&str]) -> Result<Agent<'l>> {
    let mut args = vec!["--metrics", "off"];
    args.extend_from_slice(extra);
    let agent = lab.start_agent(&args)?;
    let t0 = Instant::now();
    while !agent.log().contains("TC egress program") {
        ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "the agent did not attach its egress program; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(agent)
}

/// SIGKILL the agent, as a crash would, and wait until it is gone.
fn kill_9(agent: Agent<'_>) {
    let pid = agent.pid;
    // SAFETY: a signal to a child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    while !exited(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn register(lab: &Lab) -> Result<String> {
    let out = lab.run(
        &lab.client,
        "python3",
        [
            CLIENT,
            &lab.client.v4.to_string(),
            &lab.server.v4.to_string(),
            "register",
            "1",
        ],
        Duration::from_secs(20),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn trusted(ctl: &Ctl, src: IpAddr) -> Result<bool> {
    let list: Value = serde_json::from_str(&ctl.run(&["trusted", "list", "--json"])?)?;
    Ok(list
        .as_array()
        .context("trusted list --json is not an array")?
        .iter()
        .any(|r| r["source"] == src.to_string()))
}

#[test]
fn netlink_egress_earns_trust_is_adopted_after_a_crash_and_removed_at_stop() -> Result<()> {
    let lab = Lab::new("egress")?;
    let ctl = Ctl::new(lab.iface());
    let client = IpAddr::V4(lab.client.v4);
    lab.spawn(
        &lab.server,
        "responder",
        "python3",
        [RESPONDER, &lab.server.v4.to_string()],
    )?;
    lab.wait_udp_port(&lab.server, 5060, Duration::from_secs(10))?;

    let first = start(&lab, &["--tc-egress", "netlink"])?;
    let before = egress_filters(&lab)?;
    ensure!(
        before.len() == 1,
        "one sipguard egress filter expected, found {before:?}; agent log:\n{}",
        first.log()
    );
    let stats = first.stats()?;
    ensure!(
        stats["agent"]["tc_egress"] == "netlink",
        "stats --json says tc_egress={}",
        stats["agent"]["tc_egress"]
    );
    let answered = register(&lab)?;
    ensure!(
        answered.contains("200 OK"),
        "REGISTER not answered: {answered}"
    );
    ensure!(
        trusted(&ctl, client)?,
        "a 200 OK to REGISTER seen through the netlink filter did not make {client} trusted"
    );

    // kill -9: the filter stays on the interface with the old program.
    kill_9(first);
    ensure!(
        egress_filters(&lab)? == before,
        "the filter changed when the agent died"
    );

    let second = start(&lab, &["--tc-egress", "netlink"])?;
    let after = egress_filters(&lab)?;
    ensure!(
        after.len() == 1 && after != before,
        "a restarted agent must replace the program in sipguard's one filter: before \
         {before:?}, after {after:?}; log:\n{}",
        second.log()
    );
    ensure!(trusted(&ctl, client)?, "trust was lost across the restart");
    let status = second.stop()?;
    ensure!(status.success(), "the agent exited with {status}");
    ensure!(
        egress_filters(&lab)?.is_empty(),
        "a clean stop left sipguard's egress filter on the interface"
    );

    // A netlink agent dies; the next one runs with TCX (the host kernel has
    // it): the old filter must go, or every answer would be counted twice.
    let third = start(&lab, &["--tc-egress", "netlink"])?;
    kill_9(third);
    ensure!(
        egress_filters(&lab)?.len() == 1,
        "the killed agent's filter is gone"
    );
    let fourth = start(&lab, &[])?;
    ensure!(
        fourth.stats()?["agent"]["tc_egress"] == "tcx",
        "auto on this kernel should attach through TCX; log:\n{}",
        fourth.log()
    );
    ensure!(
        egress_filters(&lab)?.is_empty(),
        "the netlink filter of the dead agent stayed beside the TCX link"
    );
    fourth.stop()?;
    Ok(())
}
