//! Carrier-scale tables (issue 16), end to end in a namespace lab: an agent
//! started with `[tables]` sized for a carrier takes a blocklist of a
//! million entries from a list file, lists them, enforces them, and reports
//! each table's capacity and memory. Prints the load and list times and the
//! memory (figures for docs/, not assertions).
//!
//! Needs root, python3, iproute2 and nsenter. About a million `bpf(2)`
//! calls; a few packets of traffic.

use std::{
    fmt::Write as _,
    fs,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use sipguard_tests::{
    flood::{Ctl, SIP_PORT, Stream, isolate_server, send},
    netns::{Lab, packets},
};

/// Blocklist entries loaded: a million, less the one slot each list keeps.
const ENTRIES: usize = 1024 * 1024 - 1;

/// A million entries take seconds in a release build and many more in a
/// debug one: a bound of minutes, not the control commands' seconds.
const LONG: Duration = Duration::from_secs(300);

/// `sipguard stats --json` (it walks every table), bounded by `LONG`.
fn stats(ctl: &Ctl) -> Result<Value> {
    Ok(serde_json::from_str(
        &ctl.run_within(&["stats", "--json"], LONG)?,
    )?)
}

fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{} CPUs, kernel {}", cpus, kernel.trim())
}

#[test]
fn a_million_blocklist_entries_load_list_and_are_enforced() -> Result<()> {
    let lab = Lab::new("tables")?;
    isolate_server(&lab)?;
    let ctl = Ctl::new(lab.iface());
    let cfg = lab.dir().join("sipguard.toml");
    fs::write(
        &cfg,
        "[tables]\ntrusted = 1048576\nblock = 1048576\nbans = 262144\n",
    )?;
    let agent = lab.start_agent(&["--metrics", "off", "--config", cfg.to_str().unwrap()])?;

    // The lab's attacker, then IPv6 documentation addresses (no traffic goes
    // to them: they only fill the table).
    let mut list = String::with_capacity(ENTRIES * 28);
    let _ = writeln!(list, "{}", lab.attacker.v4);
    for i in 1..ENTRIES as u64 {
        let _ = writeln!(
            list,
            "2001:db8:ffff::{:x}:{:x}",
            (i >> 16) & 0xffff,
            i & 0xffff
        );
    }
    let file = lab.dir().join("feed.txt");
    fs::write(&file, &list)?;

    let t0 = Instant::now();
    ctl.run_within(&["block", "add", "-f", file.to_str().unwrap()], LONG)?;
    let load = t0.elapsed();
    // One more does not fit: refused whole, the table unchanged.
    let more = ctl.run_within(&["block", "add", "2001:db8:fffe::1"], LONG);
    ensure!(more.is_err(), "an entry past the table's size was accepted");

    let t0 = Instant::now();
    let listed: Value = serde_json::from_str(&ctl.run_within(&["block", "list", "--json"], LONG)?)?;
    let list_time = t0.elapsed();
    let n = listed.as_array().context("block list --json")?.len();
    ensure!(
        n == ENTRIES,
        "block list shows {n} entries, {ENTRIES} loaded"
    );

    let full = stats(&ctl)?;
    let block = &full["tables"]["block"];
    ensure!(
        block["entries"].as_u64() == Some(ENTRIES as u64)
            && block["capacity"].as_u64() == Some(1 << 20),
        "stats: {block}"
    );
    let memory = |t: &str| full["tables"][t]["memory_bytes"].as_u64().unwrap_or(0);
    ensure!(memory("block") > 0, "no memory reported for the blocklist");

    // Enforced: the listed attacker's INVITEs are dropped, a client's pass.
    let server = IpAddr::V4(lab.server.v4);
    let before = stats(&ctl)?;
    for (node, name) in [(&lab.attacker, "attacker"), (&lab.client, "client")] {
        let s = Stream::new(name, &[IpAddr::V4(node.v4)], "INVITE", 20, 10);
        send(&lab, node, server, &[s], Duration::from_secs(5))?;
    }
    let after = stats(&ctl)?;
    let delta = |reason: &str, verdict: &str| {
        packets(&after, "reasons", reason, verdict) - packets(&before, "reasons", reason, verdict)
    };
    // Every attacker packet dropped as blocklisted, none of the client's
    // dropped (some of its first may wait on neighbour resolution).
    let drops = after["total"]["drop"]["packets"].as_u64().unwrap_or(0)
        - before["total"]["drop"]["packets"].as_u64().unwrap_or(0);
    ensure!(
        delta("blocklisted", "drop") == 10 && drops == 10 && delta("accepted", "pass") > 0,
        "blocklisted drops {}, all drops {drops}, accepted {} (10, 10, > 0 expected, port \
         {SIP_PORT}); reasons after: {}",
        delta("blocklisted", "drop"),
        delta("accepted", "pass"),
        after["reasons"]
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "carrier tables on {} ({} build): `sipguard block add -f` of {ENTRIES} entries {:.1} s, \
         `block list --json` {:.1} s; memory: block {:.0} MiB, trusted (1 Mi) {:.0} MiB, bans (256 Ki) \
         {:.0} MiB, sources {:.0} MiB",
        machine(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        load.as_secs_f64(),
        list_time.as_secs_f64(),
        mib(memory("block")),
        mib(memory("trusted")),
        mib(memory("bans")),
        mib(memory("sources")),
    );
    ensure!(agent.stop()?.success(), "the agent did not stop cleanly");
    Ok(())
}
