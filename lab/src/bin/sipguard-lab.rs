//! sipguard-lab: the peer comparison (`cargo xtask bench --lab`).
//!
//! Under the same INVITE floods, a Kamailio proxy serves legitimate calls
//! behind each defence in turn: none, iptables, nftables, sipguard. Every
//! run is a fresh namespace lab (tests/src/lab.rs): 5 warm-up calls, then
//! the flood, and 2 s later 150 counted calls at 10/s; the flood lasts
//! until the last of them has succeeded or failed. Prints one table:
//! calls completed, flood packets sent, what the defence dropped, what
//! reached the server, Kamailio's CPU and the machine's softirq time.
//!
//! Usage: sipguard-lab [--flood real|spoofed|one|real50|register|scan100|scan2k]...
//! [--defence NAME]... (default: the real and spoofed floods against every
//! defence, about 5 minutes), or
//! sipguard-lab --cores: sipguard's drops per second with one receiving core
//! and with two, and the global budget they share (tests/src/lab/cores.rs).
//! Needs root; everything stays in namespaces on 198.18.0.0/15.

use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, bail, ensure};
use sipguard_tests::lab::{
    self, CALL_RECV_TIMEOUT, Defence, Flood, GLOBAL_INVITE_BURST, GLOBAL_INVITE_RATE, INVITE_BURST,
    INVITE_RATE, Machine, Outcome, Scenario, Split, inplace,
};

const CALLS: u64 = 150;
const CALL_RATE: u64 = 10;
const WARMUP_CALLS: u64 = 5;
/// The flood is on this long before the counted calls start.
const LEAD_S: u64 = 2;
const LEAD: Duration = Duration::from_secs(LEAD_S);
/// Covers the lead, the calls (15 s), and then the last call's whole life:
/// until it fails (`CALL_RECV_TIMEOUT`), retransmitting its INVITE, or is
/// answered and held 1 s. A flood ending earlier would let late calls'
/// retransmissions through and flatter every defence.
const FLOOD_DURATION: Duration =
    Duration::from_secs(LEAD_S + CALLS / CALL_RATE + CALL_RECV_TIMEOUT.as_secs() + 2);
/// A bound well above what one core sends in `FLOOD_DURATION`.
const FLOOD_MAX_PACKETS: u64 = 20_000_000;
/// A handful of real machines: each far over its per-source limit.
const REAL_SOURCES: u8 = 20;
/// Spoofed sources: nearly every address of the lab's 198.18.0.0/15 but its
/// own /24. Each sends about one INVITE a second, under any per-source
/// limit, and together they overflow every defence's source table
/// (`SOURCE_TABLE`).
const SPOOFED_SOURCES: u32 = 129_000;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn geteuid() -> u32;
}

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Args {
    floods: Vec<(&'static str, Flood)>,
    defences: Vec<Defence>,
    cores: bool,
}

fn parse_args() -> Result<Args> {
    let all_floods = [
        (
            "real",
            Flood::Real {
                sources: REAL_SOURCES,
            },
        ),
        (
            "spoofed",
            Flood::Spoofed {
                sources: SPOOFED_SOURCES,
            },
        ),
    ];
    // Not in the default set: the in-place cost of other floods.
    let more_floods = [
        ("one", Flood::Real { sources: 1 }),
        ("real50", Flood::Real { sources: 50 }),
        (
            "register",
            Flood::Register {
                sources: REAL_SOURCES,
            },
        ),
        (
            "scan100",
            Flood::Scanned {
                sources: 50,
                rate: 100,
            },
        ),
        // The same 20 times as often (40/s a source, under the default
        // 50/s): how much of a scan's cost at a scanner's rate is cold
        // caches.
        (
            "scan2k",
            Flood::Scanned {
                sources: 50,
                rate: 2000,
            },
        ),
    ];
    let (mut floods, mut defences) = (Vec::new(), Vec::new());
    let mut it = std::env::args().skip(1).peekable();
    if it.peek().map(String::as_str) == Some("--cores") {
        it.next();
        ensure!(it.next().is_none(), "--cores takes nothing else");
        return Ok(Args {
            floods,
            defences,
            cores: true,
        });
    }
    while let Some(arg) = it.next() {
        let value = it.next();
        match (arg.as_str(), value.as_deref()) {
            ("--flood", Some(v)) => {
                match all_floods.iter().chain(&more_floods).find(|(n, _)| *n == v) {
                    Some(f) => floods.push(*f),
                    None => {
                        bail!(
                            "--flood {v}: use real, spoofed, one, real50, register, scan100 or scan2k"
                        )
                    }
                }
            }
            ("--defence", Some(v)) => match Defence::ALL
                .iter()
                .chain(&Defence::REFERENCES)
                .find(|d| d.name() == v)
            {
                Some(d) => defences.push(*d),
                None => bail!("--defence {v}: use none, iptables, nftables, sipguard or xdp-pass"),
            },
            _ => bail!(
                "usage: sipguard-lab [--flood real|spoofed|one|real50|register|scan100|scan2k]... \
                 [--defence none|iptables|nftables|sipguard|xdp-pass]... | --cores"
            ),
        }
    }
    if floods.is_empty() {
        floods = all_floods.to_vec();
    }
    if defences.is_empty() {
        defences = Defence::ALL.to_vec();
    }
    Ok(Args {
        floods,
        defences,
        cores: false,
    })
}

/// One cell of the table: a flood against a defence.
struct Row {
    flood: &'static str,
    defence: Defence,
    result: Result<Outcome>,
}

fn main() -> ExitCode {
    // Drive the sipguard built next to this binary unless told otherwise
    // (the test crate's own lookup expects a test executable's path). Set
    // before any thread exists.
    if std::env::var_os("SIPGUARD_BIN").is_none()
        && let Some(bin) = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.join("sipguard")))
            .filter(|b| b.is_file())
    {
        unsafe { std::env::set_var("SIPGUARD_BIN", bin) };
    }
    // SIGINT and SIGTERM only set a flag, checked between runs; the lab's
    // children get Ctrl-C from the terminal themselves, so a run in progress
    // ends early and its lab is still removed.
    unsafe {
        signal(2, on_signal as extern "C" fn(i32) as usize);
        signal(15, on_signal as extern "C" fn(i32) as usize);
    }
    match bench() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sipguard-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; false if a run failed or it was interrupted.
fn bench() -> Result<bool> {
    ensure!(
        unsafe { geteuid() } == 0,
        "run as root (namespaces, XDP, netfilter): `cargo xtask bench --lab`"
    );
    let args = parse_args()?;
    let machine = Machine::probe();
    let started = Instant::now();
    if args.cores {
        let ok = cores()?;
        print_footer(
            &machine,
            started.elapsed(),
            "cargo xtask bench --lab --cores",
        );
        return Ok(ok);
    }
    print_setup(&args, Split::new()?.as_ref());

    let mut rows = Vec::new();
    for &(flood_name, flood) in &args.floods {
        for &defence in &args.defences {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            let sc = scenario(flood_name, flood, defence);
            println!("run: {} vs {} …", flood.describe(), defence.name());
            let t = Instant::now();
            let result = lab::run(&sc, defence);
            match &result {
                Ok(o) => println!("  {} ({:.0} s)", detail(o), t.elapsed().as_secs_f64()),
                Err(e) => println!("  FAILED: {e:#}"),
            }
            rows.push(Row {
                flood: flood_name,
                defence,
                result,
            });
        }
    }

    print_table(&rows);
    print_footer(&machine, started.elapsed(), "cargo xtask bench --lab");
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    if interrupted {
        println!("interrupted: the table is incomplete");
    }
    Ok(!interrupted && rows.iter().all(|r| r.result.is_ok()))
}

fn scenario(flood_name: &str, flood: Flood, defence: Defence) -> Scenario {
    Scenario {
        // Letters and digits only, at most 12 (`Lab::new`).
        tag: format!("lab{}{}", alnum(flood_name, 5), alnum(defence.name(), 4)),
        calls: CALLS,
        call_rate: CALL_RATE,
        warmup_calls: WARMUP_CALLS,
        flood,
        flood_duration: FLOOD_DURATION,
        flood_max_packets: FLOOD_MAX_PACKETS,
        lead: LEAD,
        split_cpus: true,
    }
}

/// The first `n` letters and digits of `s`.
fn alnum(s: &str, n: usize) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(n)
        .collect()
}

fn print_setup(args: &Args, split: Option<&Split>) {
    println!("== sipguard peer comparison: Kamailio under INVITE floods ==");
    println!(
        "each run: a fresh lab; {WARMUP_CALLS} warm-up calls (not counted), then the flood for \
         {}s (<= {FLOOD_MAX_PACKETS} packets), and {}s into it {CALLS} counted calls at \
         {CALL_RATE}/s from the client (sipp through Kamailio to a UAS; each held 1 s)",
        FLOOD_DURATION.as_secs(),
        LEAD.as_secs()
    );
    match split {
        Some(s) => println!(
            "CPUs: the attacker on CPU {} (nice -20), the client on {:?} (nice -20), the server \
             (Kamailio, its backend, the agent) on {:?}. On veth a packet's receive path runs \
             as softirq on the core that sent it: the flood's (bridge, XDP, netfilter, UDP \
             stack) on the attacker's core, so a defence that drops more cheaply lets the \
             attacker send more",
            s.attacker, s.client, s.server
        ),
        None => println!(
            "CPUs: one, shared by everything (the flood will pause, and figures are not \
             comparable with a multi-core run)"
        ),
    }
    println!("floods (to an unserved number, so Kamailio answers each with a stateless 404):");
    for (name, flood) in &args.floods {
        println!("  {name:<8} {}", flood.describe());
    }
    println!("defences:");
    for d in &args.defences {
        println!("  {:<8} {}", d.name(), d.describe());
    }
    println!(
        "the same INVITE limits in iptables, nftables and sipguard: {INVITE_RATE}/s burst \
         {INVITE_BURST} per source, {GLOBAL_INVITE_RATE}/s burst {GLOBAL_INVITE_BURST} for all \
         sources; no defence allowlists the client"
    );
    if args.defences.contains(&Defence::Iptables) {
        println!("iptables rules (iptables-legacy-restore, in the server's namespace):");
        indent(&lab::iptables_rules());
    }
    if args.defences.contains(&Defence::Nftables) {
        println!("nftables rules (nft -f, in the server's namespace):");
        indent(&lab::nftables_rules());
    }
    println!();
}

fn indent(text: &str) {
    for l in text.lines() {
        println!("    {}", l.replace('\t', "    "));
    }
}

/// The per-run line printed as it finishes.
fn detail(o: &Outcome) -> String {
    let mut s = format!(
        "calls {}/{CALLS} ok, {} failed, {} retransmissions; flood {} at {:.0} pps; dropped \
         {}",
        o.calls.successful,
        o.calls.failed,
        o.calls.retransmissions,
        o.flood_sent,
        o.flood_pps,
        o.dropped,
    );
    if let Some((reasons, bans)) = &o.sipguard {
        s += &format!("; sipguard: {reasons}; {} bans", bans.len());
    }
    if let Some((new, evicted)) = o.sources_new_evicted {
        s += &format!("; rate states {new} new, {evicted} evicted");
    }
    for r in &o.in_place {
        s += &format!(
            "; {} in place {:.0} ns/run ({} runs)",
            r.name,
            r.ns_per_run(),
            r.runs
        );
    }
    s
}

/// `name`'s cost per run in place, or "-" (a peer, or it did not run).
fn in_place(o: &Outcome, name: Option<&str>) -> String {
    name.and_then(|n| inplace::of(&o.in_place, n))
        .map_or("-".into(), |r| format!("{:.0} ns", r.ns_per_run()))
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<8} {:<9} {:>18} {:>18} {:>9} {:>10} {:>10} {:>8} {:>8} {:>11} {:>9} {:>9}",
        "flood",
        "defence",
        "legit calls ok",
        "flood sent (pps)",
        "dropped",
        "server UDP",
        "rcvbuf drop",
        "Kamailio",
        "softirq",
        "softirq/pkt",
        "XDP/pkt",
        "egress/pkt"
    );
    for r in rows {
        let head = format!("{:<8} {:<9}", r.flood, r.defence.name());
        let o = match &r.result {
            Ok(o) => o,
            Err(_) => {
                println!("{head} failed (see above)");
                continue;
            }
        };
        // The bench always has a lead, so the flood window is measured.
        let w = o.flood_window.unwrap_or(o.run);
        let dropped = match r.defence {
            Defence::None => "-".to_string(),
            _ => o.dropped.to_string(),
        };
        println!(
            "{head} {:>18} {:>18} {:>9} {:>10} {:>10} {:>7.0}% {:>7.0}% {:>8.1} µs {:>9} {:>9}",
            format!(
                "{}/{CALLS} ({:.1}%)",
                o.calls.successful,
                100.0 * o.calls.success_ratio(CALLS)
            ),
            format!("{} ({:.0})", o.flood_sent, o.flood_pps),
            dropped,
            w.udp.in_datagrams,
            w.udp.rcvbuf_errors,
            percent(w.kamailio_cpu, w.wall),
            percent(w.softirq, w.wall),
            1e6 * w.softirq / o.flood_sent.max(1) as f64,
            in_place(o, r.defence.xdp_program()),
            in_place(
                o,
                (r.defence == Defence::Sipguard).then_some("sipguard_egress")
            ),
        );
    }
    println!(
        "legit calls ok: completed calls (INVITE, 200, ACK, BYE, 200 by sipp's count) of those \
         placed. flood sent: packets, and packets/s while sending. dropped: packets the \
         defence's drop rules (or sipguard) dropped. While the flood lasted: server UDP, \
         datagrams delivered to the server's sockets (Kamailio's, and both ways on its backend \
         leg); rcvbuf drop, datagrams lost to a full socket buffer; Kamailio and softirq, CPU \
         time as % of one CPU; softirq/pkt, softirq time per flood packet sent. softirq is \
         machine-wide, and on veth the receive path runs on the sending core: for the flood, \
         the attacker's core (it includes the lab's bridge hop, the same for every defence). \
         XDP/pkt and egress/pkt: sipguard's programs in place while the flood was on, the \
         kernel's run time per run (BPF_ENABLE_STATS; tail calls count in the caller): \
         sipguard_xdp on every packet the server's interface received, sipguard_egress on \
         every packet it sent; for xdp-pass, its empty program: the floor under sipguard's."
    );
}

fn percent(seconds: f64, window: f64) -> f64 {
    100.0 * seconds / window.max(1e-9)
}

fn print_footer(m: &Machine, took: Duration, command: &str) {
    println!(
        "machine: Linux {}, {}, {} CPUs; sipguard {}; {}",
        m.kernel, m.cpu, m.cpus, m.commit, m.tools
    );
    println!(
        "command: {command} (as root); took {:.0} s",
        took.as_secs_f64()
    );
}

/// How long each `--cores` run floods.
const CORES_FLOOD: Duration = Duration::from_secs(10);

/// `--cores`: one sending core, then two; false if the global budget
/// admitted more than its tolerance allows.
fn cores() -> Result<bool> {
    println!(
        "== sipguard across cores: a spoofed INVITE flood (65536 sources) for {} s, over the \
         default global INVITE budget, into a server interface with two queues (XPS: each \
         sending CPU's packets on its own queue, so each pass XDP on the CPU that sent them) ==",
        CORES_FLOOD.as_secs()
    );
    let mut ok = true;
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>10} {:>12} {:>9}",
        "senders", "sent", "dropped", "drops/s", "admitted", "most allowed", "XDP/pkt"
    );
    for senders in [1, 2] {
        if senders > lab::allowed_cpus()?.len() {
            println!("{senders:<8} skipped: this process may use fewer CPUs");
            continue;
        }
        let r = lab::cores::run(senders, CORES_FLOOD)?;
        let (most, _) = lab::cores::admitted_bound(r.secs, senders as u64);
        let within = (r.admitted as f64) <= most;
        ok &= within;
        println!(
            "{:<8} {:>10} {:>12} {:>12.0} {:>10} {:>12.0} {:>9}{}",
            senders,
            r.sent,
            r.dropped,
            r.drops_per_sec(),
            r.admitted,
            most,
            r.xdp
                .as_ref()
                .map_or("-".into(), |x| format!("{:.0} ns", x.ns_per_run())),
            if within { "" } else { "  OVER THE TOLERANCE" }
        );
    }
    let (_, lease) = lab::cores::admitted_bound(1.0, 1);
    println!(
        "admitted: INVITEs the global budget let through (default 1000/s, burst 2000); most \
         allowed: rate x time + burst + per CPU a lease ({lease} packets) less one, + one per \
         other CPU (two may take the burst's last room at once). drops/s: packets dropped as \
         rate_global per second of flood; with the sender on the same core, a cheaper drop \
         lets it send more. XDP/pkt: sipguard_xdp in place (BPF_ENABLE_STATS)."
    );
    Ok(ok)
}
