//! `cargo xtask demo`: sipguard defending a real SIP server, live.
//!
//! Builds a namespace lab (server with Kamailio, a legitimate sipp client
//! placing calls at 10/s, an attacker), starts `sipguard run` on the server's
//! interface, then the attacker scans with SIPVicious svmap, floods INVITEs
//! from one address, then from forged random sources at the machine's top
//! rate while the client keeps calling (trusted: the server answered it
//! 2xx). Prints a status line every second, a summary, and `sipguard
//! explain` of the client and of the banned flooder at the end; the
//! lab (namespaces, processes, pins) is removed on exit, on error, on panic
//! and on Ctrl-C. Needs root; everything stays in 198.18.0.0/15.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use serde_json::Value;
use sipguard_tests::{
    flood::{Ctl, RawFlood, SIP_PORT, Stream, isolate_server, spawn_raw_flood, spawn_send},
    kamailio::Kamailio,
    lab::start_backend,
    netns::{Bg, Lab, packets, sipguard_bin, terminate},
    sipp::{Calls, parse_trace_stat, scenario},
};

const CALL_RATE: u64 = 10;
/// 10 calls/s for 80 s: the calls span the scan, both floods and after.
const CALLS: u64 = 800;
/// Per-source INVITE limit: the default 10/s (burst 20) would leave a
/// caller placing 10 calls/s no room for retransmissions.
const LIMITS: [&str; 2] = ["invite.rate=20/s", "invite.burst=40"];
const FLOOD: Duration = Duration::from_secs(20);
const FLOOD_MAX_PACKETS: u64 = 2_000_000;
const FLOOD_USER: &str = "4021555";
/// The flood comes from a second address of the attacker (the first is
/// already banned as a scanner by then).
const FLOOD_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 66);
/// The forged-source flood: as fast as the machine sends, this long, from
/// this many random sources of 198.18.0.0/15, at most this many packets.
const SPOOFED: Duration = Duration::from_secs(10);
const SPOOFED_SOURCES: u32 = 65_536;
const SPOOFED_MAX_PACKETS: u64 = 10_000_000;
/// Hard bound on the whole demo after setup.
const DEMO_BOUND: Duration = Duration::from_secs(180);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn main() {
    // SIGINT and SIGTERM only set a flag: the main loop sees it and returns,
    // so every guard (agent, lab) is dropped and cleans up.
    unsafe {
        signal(2, on_signal as extern "C" fn(i32) as usize);
        signal(15, on_signal as extern "C" fn(i32) as usize);
    }
    let start = Instant::now();
    let code = match demo() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sipguard-demo: error: {e:#}");
            1
        }
    };
    println!(
        "lab removed; demo took {:.0} s{}",
        start.elapsed().as_secs_f64(),
        if interrupted() { " (interrupted)" } else { "" }
    );
    std::process::exit(code);
}

/// Is the process alive (not exited, not a zombie)?
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .is_some_and(|st| st != 'Z' && st != 'X'),
        Err(_) => false,
    }
}

fn svmap_command() -> Vec<String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if on_path("sipvicious_svmap") {
        vec!["sipvicious_svmap".into()]
    } else {
        vec!["python3".into(), "-m".into(), "sipvicious.svmap".into()]
    }
}

fn drops_by_reason(stats: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Some(reasons) = stats["reasons"].as_object() {
        for name in reasons.keys() {
            out.insert(name.clone(), packets(stats, "reasons", name, "drop"));
        }
    }
    out
}

fn bans_by_reason(bans: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in bans.as_array().into_iter().flatten() {
        out.entry(row["reason"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(match row["detail"].as_str() {
                Some(d) if !d.is_empty() => {
                    format!("{} ({d})", row["source"].as_str().unwrap_or("?"))
                }
                _ => row["source"].as_str().unwrap_or("?").to_string(),
            });
    }
    out
}

fn fmt_bans(b: &BTreeMap<String, Vec<String>>) -> String {
    if b.is_empty() {
        return "none".into();
    }
    b.iter()
        .map(|(r, s)| format!("{r}: {}", s.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Phase {
    Calls,
    Scan,
    Flood,
    Spoofed,
    After,
}

/// What one phase did: drops by reason and the client's calls.
struct PhaseRecord {
    stats: Value,
    calls: Calls,
}

fn demo() -> Result<()> {
    ensure!(
        unsafe { libc_geteuid() } == 0,
        "run as root (namespaces, XDP)"
    );
    println!("== sipguard demo: Kamailio under a scan and an INVITE flood ==");
    println!("setting up the lab: server (Kamailio -x tlsf), client (sipp), attacker …");
    let lab = Lab::new("demo")?;
    isolate_server(&lab)?;
    let server = IpAddr::V4(lab.server.v4);
    lab.add_addr(&lab.attacker, &format!("{FLOOD_SRC}/16"))?;
    let backend = start_backend(&lab)?;
    let kamailio = Kamailio::start(&lab, &lab.server, server, backend)?;
    println!(
        "  server   {server}:5060  Kamailio proxy (user `service` -> sipp UAS {backend}, others 404)"
    );
    println!(
        "  client   {}  sipp: {CALLS} calls at {CALL_RATE}/s",
        lab.client.v4
    );
    println!(
        "  attacker {} (svmap) and {FLOOD_SRC} (INVITE flood)",
        lab.attacker.v4
    );

    let agent = lab.start_agent(&["--mode", "native"])?;
    let ctl = Ctl::new(lab.iface());
    ctl.limits_set(&LIMITS)?;
    println!(
        "sipguard run --iface {} --mode native: enforcing, defaults except {} (fits a 10 calls/s client with retransmissions)",
        lab.iface(),
        LIMITS.join(" ")
    );
    if interrupted() {
        return Ok(());
    }

    // The legitimate client, writing its statistics every second.
    let csv = lab.dir().join("uac.csv");
    let sipp = lab.spawn(
        &lab.client,
        "uac",
        "sipp",
        [
            "-sf".to_string(),
            scenario("uac_proxied.xml").display().to_string(),
            SocketAddr::new(server, SIP_PORT).to_string(),
            "-i".into(),
            lab.client.v4.to_string(),
            "-p".into(),
            SIP_PORT.to_string(),
            "-m".into(),
            CALLS.to_string(),
            "-r".into(),
            CALL_RATE.to_string(),
            "-timeout".into(),
            "110s".into(),
            "-recv_timeout".into(),
            "10000".into(),
            "-nostdin".into(),
            "-trace_stat".into(),
            "-fd".into(),
            "1".into(),
            "-stf".into(),
            csv.display().to_string(),
        ],
    )?;

    let stats0 = ctl.stats()?;
    let mut prev = stats0.clone();
    let mut cpu_prev = kamailio.cpu_seconds()?;
    let cpu0 = cpu_prev;
    let t0 = Instant::now();
    let mut last = t0;
    let mut phase = Phase::Calls;
    let mut svmap: Option<Bg> = None;
    let mut flood = None;
    let mut flood_started = t0;
    let mut metrics_shown = false;
    let mut calls = Calls::default();
    let mut cpu_peak: f64 = 0.0;
    let mut scan_bans = BTreeMap::new();
    let mut spoofed = None;
    let mut spoofed_start: Option<PhaseRecord> = None;
    let mut spoofed_end: Option<PhaseRecord> = None;
    let mut spoofed_ended: Option<Instant> = None;
    let mut client_capture: Option<std::process::Child> = None;
    let mut client_dropped: Option<String> = None;

    println!(
        "\n  t | phase | dropped pkt/s by reason           | bans | legit calls ok/ended (ok %), placed | Kamailio CPU"
    );
    loop {
        std::thread::sleep(Duration::from_millis(1000).saturating_sub(last.elapsed()));
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let t = now.duration_since(t0);
        if interrupted() {
            println!("interrupted: cleaning up");
            return Ok(());
        }
        ensure!(t < DEMO_BOUND, "demo exceeded {DEMO_BOUND:?}");

        // Phase changes.
        match phase {
            Phase::Calls if t >= Duration::from_secs(4) => {
                let mut cmd = svmap_command();
                cmd.push(lab.server.v4.to_string());
                println!("--- phase 1: attacker scans with `{}`", cmd.join(" "));
                svmap = Some(lab.spawn(&lab.attacker, "svmap", &cmd[0], &cmd[1..])?);
                phase = Phase::Scan;
            }
            Phase::Scan => {
                let bg = svmap.as_ref().unwrap();
                if !alive(bg.pid) || t >= Duration::from_secs(30) {
                    if alive(bg.pid) {
                        lab.stop(bg)?;
                    }
                    let out = bg.output();
                    let found: Vec<&str> = out
                        .lines()
                        .filter(|l| l.contains(&lab.server.v4.to_string()) && l.contains(':'))
                        .filter(|l| l.trim_start().starts_with('|'))
                        .collect();
                    println!("--- svmap output:");
                    for l in out.lines().filter(|l| !l.trim().is_empty()).take(12) {
                        println!("    {l}");
                    }
                    if found.is_empty() {
                        println!("    => svmap found no SIP device");
                    } else {
                        println!("    => svmap found: {found:?}");
                    }
                    scan_bans = bans_by_reason(&ctl.bans()?);
                    println!("    bans now: {}", fmt_bans(&scan_bans));
                    println!(
                        "--- phase 2: INVITE flood from {FLOOD_SRC}, flat out, {}s (≤ {FLOOD_MAX_PACKETS} packets)",
                        FLOOD.as_secs()
                    );
                    flood = Some(spawn_send(
                        &lab,
                        &lab.attacker,
                        "flood",
                        server,
                        &[Stream::new(
                            "flood",
                            &[IpAddr::V4(FLOOD_SRC)],
                            "INVITE",
                            0,
                            FLOOD_MAX_PACKETS,
                        )
                        .user(FLOOD_USER)],
                        FLOOD,
                    )?);
                    flood_started = now;
                    phase = Phase::Flood;
                }
            }
            _ => {}
        }

        // Status line.
        let stats = ctl.stats()?;
        let d0 = drops_by_reason(&prev);
        let d1 = drops_by_reason(&stats);
        let mut rates: Vec<String> = d1
            .iter()
            .filter_map(|(r, n)| {
                let d = n - d0.get(r).copied().unwrap_or(0);
                (d > 0).then(|| format!("{r} {:.0}", d as f64 / dt))
            })
            .collect();
        if rates.is_empty() {
            rates.push("-".into());
        }
        prev = stats;
        let bans = ctl.bans()?.as_array().map_or(0, Vec::len);
        if let Ok(c) = parse_trace_stat(&csv) {
            calls = c;
        }
        let cpu = kamailio.cpu_seconds()?;
        let cpu_pct = 100.0 * (cpu - cpu_prev) / dt;
        cpu_prev = cpu;
        cpu_peak = cpu_peak.max(cpu_pct);
        let done = calls.successful + calls.failed;
        println!(
            "{:>3} | {:<5} | {:<33} | {:>4} | {:>3}/{:<3} ({:>5.1} %), {:>3} placed        | {:>5.1} %",
            t.as_secs(),
            format!("{phase:?}").to_lowercase(),
            rates.join(", "),
            bans,
            calls.successful,
            done,
            if done > 0 {
                100.0 * calls.successful as f64 / done as f64
            } else {
                100.0
            },
            calls.outgoing,
            cpu_pct
        );

        if phase == Phase::Flood {
            let ft = now.duration_since(flood_started);
            if !metrics_shown && ft >= Duration::from_secs(8) {
                metrics_shown = true;
                show_metrics(&lab)?;
            }
            if ft >= FLOOD {
                let report = flood.take().unwrap().finish()?;
                let s = report.stream("flood");
                println!(
                    "--- flood over: {} INVITEs sent at {:.0} pps",
                    s.sent,
                    s.pps()
                );
                println!(
                    "--- phase 3: INVITE flood from {SPOOFED_SOURCES} forged random sources, as fast \
                     as this machine sends, {}s (≤ {SPOOFED_MAX_PACKETS} packets); the client keeps \
                     calling",
                    SPOOFED.as_secs()
                );
                spoofed_start = Some(PhaseRecord {
                    stats: ctl.stats()?,
                    calls: parse_trace_stat(&csv).unwrap_or_default(),
                });
                // What sipguard drops of the client's own packets, if any.
                client_capture = Some(
                    std::process::Command::new(sipguard_bin()?)
                        .args(["capture", "--source", &lab.client.v4.to_string()])
                        .args([
                            "-w",
                            &lab.dir().join("client-drops.pcapng").to_string_lossy(),
                        ])
                        .args(["--iface", lab.iface()])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()?,
                );
                spoofed = Some(spawn_raw_flood(
                    &lab,
                    &lab.attacker,
                    &lab.server,
                    &RawFlood {
                        count: SPOOFED_MAX_PACKETS,
                        duration: SPOOFED,
                        sources: SPOOFED_SOURCES,
                        seed: 7,
                        later_fragments: false,
                    },
                )?);
                phase = Phase::Spoofed;
            }
        }
        if phase == Phase::Spoofed && spoofed.as_ref().is_some_and(|f| f.done()) {
            let report = spoofed.take().unwrap().finish()?;
            spoofed_ended = Some(now);
            println!(
                "--- forged flood over: {} INVITEs sent at {:.0} pps from {} sources",
                report.sent,
                report.pps(),
                report.sources
            );
            phase = Phase::After;
        }
        // The calls the forged flood caught end within sipp's receive
        // timeout (10 s) after it: the phase's record is taken then.
        if let Some(ended) = spoofed_ended
            && spoofed_end.is_none()
            && now.duration_since(ended) >= Duration::from_secs(11)
        {
            spoofed_end = Some(PhaseRecord {
                stats: ctl.stats()?,
                calls: parse_trace_stat(&csv).unwrap_or_default(),
            });
            if let Some(mut c) = client_capture.take() {
                terminate(&mut c)?;
                let mut said = String::new();
                if let Some(mut e) = c.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut said)?;
                }
                client_dropped = said
                    .lines()
                    .find(|l| l.contains(" packets captured"))
                    .and_then(|l| l.split_whitespace().next())
                    .map(str::to_string);
            }
        }
        if phase == Phase::After && spoofed_end.is_some() && !alive(sipp.pid) {
            break;
        }
    }

    // Summary.
    if let Ok(c) = parse_trace_stat(&csv) {
        calls = c;
    }
    let stats = ctl.stats()?;
    let d0 = drops_by_reason(&stats0);
    let d1 = drops_by_reason(&stats);
    let bans = bans_by_reason(&ctl.bans()?);
    let mut all_bans = scan_bans;
    for (r, s) in bans {
        let e = all_bans.entry(r).or_default();
        for src in s {
            if !e.contains(&src) {
                e.push(src);
            }
        }
    }
    println!("\n== summary ==");
    println!(
        "legitimate calls: {}/{CALLS} completed ({:.1} %), {} failed, {} retransmissions",
        calls.successful,
        100.0 * calls.successful as f64 / CALLS as f64,
        calls.failed,
        calls.retransmissions
    );
    let total: u64 = d1
        .iter()
        .map(|(r, n)| n - d0.get(r).copied().unwrap_or(0))
        .sum();
    println!("packets dropped by sipguard: {total}");
    for (r, n) in &d1 {
        let d = n - d0.get(r).copied().unwrap_or(0);
        if d > 0 {
            println!("  {r:<16} {d:>10}");
        }
    }
    println!("bans by reason: {}", fmt_bans(&all_bans));
    println!(
        "Kamailio CPU: {:.2} s over the run, peak {:.0} % of a core",
        kamailio.cpu_seconds()? - cpu0,
        cpu_peak
    );
    if let (Some(a), Some(b)) = (&spoofed_start, &spoofed_end) {
        let (d0, d1) = (drops_by_reason(&a.stats), drops_by_reason(&b.stats));
        let ok = b.calls.successful - a.calls.successful;
        let failed = b.calls.failed - a.calls.failed;
        println!(
            "during the forged-source flood (and the 10 s its calls may take to fail): client \
             calls {ok} completed, {failed} failed; client packets sipguard dropped: {} \
             (`sipguard capture --source {}`); dropped by reason:",
            client_dropped.as_deref().unwrap_or("?"),
            lab.client.v4
        );
        for (r, n) in &d1 {
            let d = n - d0.get(r).copied().unwrap_or(0);
            if d > 0 {
                println!("  {r:<16} {d:>10}");
            }
        }
    }
    for (who, addr) in [
        ("the client", lab.client.v4.to_string()),
        ("the flooder", FLOOD_SRC.to_string()),
    ] {
        println!("\n$ sipguard explain {addr}    # {who}");
        print!("{}", ctl.run(&["explain", &addr])?);
    }
    println!("cleaning up (agent detaches, namespaces removed) …");
    drop(agent);
    drop(lab);
    Ok(())
}

fn show_metrics(lab: &Lab) -> Result<()> {
    let out = lab.run(
        &lab.server,
        "curl",
        ["-s", "--max-time", "5", "http://127.0.0.1:9464/metrics"],
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("--- curl -s 127.0.0.1:9464/metrics (in the server namespace), non-zero drops:");
    let mut n = 0;
    for l in text.lines() {
        if l.starts_with("sipguard_packets_total{")
            && l.contains("verdict=\"drop\"")
            && !l.trim_end().ends_with(" 0")
        {
            println!("    {l}");
            n += 1;
        }
    }
    if n == 0 {
        println!("    (none; curl exit {})", out.status);
    }
    Ok(())
}

unsafe fn libc_geteuid() -> u32 {
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() }
}
