//! sipguard-bench: what the XDP program (ingress) and the TC egress program
//! (the server's responses) cost per packet, as the kernel measures it with
//! BPF_PROG_TEST_RUN (`repeat` runs per call, the kernel's average per run;
//! median and minimum of several calls). This is the program alone on one
//! CPU: no NIC, driver or DMA cost.
//!
//! Each case also checks that the program took the path the case names (an
//! XDP case its verdict, reason and class counters; an egress case the table
//! events it must count and what it must learn), so a figure is never for
//! the wrong code path.
//!
//! Usage: sipguard-bench [--repeat N] [--runs N] [CASE-NAME-FILTER]
//! Needs root: `cargo xtask bench` or
//! `sudo cargo run --release -p sipguard-lab --bin sipguard-bench`.

use std::{fs, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use sipguard::config::{Config, Rate, RateLimit};
use sipguard_common::{Class, Reason, Verdict, maps::TableStat};
use sipguard_tests::{
    harness::{Delta, Harness, TC_ACT_OK, XDP_PASS, is_root},
    packet::{
        CLIENT_PORT, CLIENT_V4, CLIENT_V6, Pkt, SERVER_V4, SERVER_V6,
        response::{response, udp_v4},
        sip::Sip,
    },
};

const DEFAULT_REPEAT: u32 = 200_000;
const MIN_REPEAT: u32 = 100_000;
const DEFAULT_RUNS: usize = 5;

/// One benchmarked packet and the path it must take through the program.
struct Case {
    name: &'static str,
    packet: Vec<u8>,
    path: Path,
    /// Runs on a fresh harness before timing: configure maps so the packet
    /// takes the intended path (e.g. ban its source).
    setup: fn(&mut Harness) -> Result<()>,
}

/// Which program a case runs, and what proves it took the named path.
enum Path {
    /// `sipguard_xdp` on a packet the server receives: the one verdict,
    /// reason and class counter each run moves.
    Xdp {
        verdict: Verdict,
        reason: Reason,
        class: Option<Class>,
    },
    /// `sipguard_egress` (tail-calling `sipguard_resp`) on a response the
    /// server sends: the table events each run moves by one (every other
    /// stays put), and `learnt`, which checks the maps after `runs` runs.
    Egress {
        label: &'static str,
        events: &'static [TableStat],
        learnt: fn(&Harness, u64) -> Result<()>,
    },
}

impl Path {
    fn xdp(verdict: Verdict, reason: Reason, class: Option<Class>) -> Self {
        Path::Xdp {
            verdict,
            reason,
            class,
        }
    }
}

fn no_setup(_: &mut Harness) -> Result<()> {
    Ok(())
}

/// The default configuration with rate limits checked on every packet but
/// never reached (1 ns interval, a burst of a million), so an accepted case
/// times the whole policy path instead of tripping the default limits and
/// timing the ban path.
fn config_limits_never_reached() -> Config {
    // A burst of 1000 s at a million per second: every packet is charged to
    // the buckets, none is ever over. (A burst under two clock ticks would
    // time the exact-clock path instead; see sipguard_common::clock.)
    let huge = RateLimit {
        rate: Rate::per_sec(1_000_000),
        burst: 1_000_000_000,
    };
    let mut cfg = Config::default();
    let l = &mut cfg.limits;
    for limit in [
        &mut l.invite,
        &mut l.register,
        &mut l.other,
        &mut l.global.invite,
        &mut l.global.register,
        &mut l.global.other,
    ] {
        *limit = huge;
    }
    cfg
}

fn limits_never_reached(h: &mut Harness) -> Result<()> {
    h.maps_mut().apply(&config_limits_never_reached())
}

/// As `limits_never_reached`, with the request header scan off (no
/// signatures, no malformed-SIP checks, no enumeration): isolates its cost.
fn no_header_scan(h: &mut Harness) -> Result<()> {
    let mut cfg = config_limits_never_reached();
    cfg.scanner.signatures = false;
    cfg.scanner.enumeration_after = 0;
    cfg.malformed.drop = false;
    h.maps_mut().apply(&cfg)
}

/// The source of every benchmark packet, as the maps key it.
fn client_key() -> sipguard_common::source::SrcKey {
    sipguard::addr::src_key(std::net::IpAddr::V4(CLIENT_V4), &[0xff; 16])
}

fn banned_source(h: &mut Harness) -> Result<()> {
    limits_never_reached(h)?;
    h.ban_for(std::net::IpAddr::V4(CLIENT_V4), HOUR_NS)
}

/// A banned source while a capture of passed packets runs: the capture's
/// cost to a packet it does not select.
fn banned_capture_elsewhere(h: &mut Harness) -> Result<()> {
    banned_source(h)?;
    capture(h, Verdict::Pass, 1000)
}

/// A banned source whose drops a capture selects, at one packet a second:
/// each timed packet is selected and refused by the capture's rate (as in
/// a flood, where the rate bounds what is copied), after one copied.
fn banned_captured(h: &mut Harness) -> Result<()> {
    banned_source(h)?;
    capture(h, Verdict::Drop, 1)
}

fn capture(h: &mut Harness, verdict: Verdict, rate: u64) -> Result<()> {
    let until = sipguard::time::monotonic_ns() + HOUR_NS;
    h.set_capture(selection(verdict, rate).conf(until)?)
}

const HOUR_NS: u64 = 3_600_000_000_000;

/// Every reason with `verdict`, 512 bytes of each packet, at `rate`.
fn selection(verdict: Verdict, rate: u64) -> sipguard::capture::Selection {
    sipguard::capture::Selection {
        verdicts: vec![verdict],
        reasons: Reason::ALL.to_vec(),
        sources: Vec::new(),
        snaplen: 512,
        rate,
    }
}

/// A banned source, with 1 024 trunk networks on the allowlist (as on a
/// production SBC): the allowlist's LPM lookup is then on every path.
fn banned_with_allowlist(h: &mut Harness) -> Result<()> {
    banned_source(h)?;
    let trunks: Vec<ipnet::IpNet> = (0..1024u32)
        .map(|i| {
            let a = std::net::Ipv4Addr::new(198, 19, (i >> 2) as u8, ((i & 3) << 6) as u8);
            ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, 26).expect("a /26"))
        })
        .collect();
    h.maps_mut().allow_add(&trunks)?;
    Ok(())
}

/// Per-source INVITE limit of one packet an hour, bans off, and the one packet
/// spent here: every timed packet is over the limit.
fn over_limit(h: &mut Harness) -> Result<()> {
    let mut cfg = config_limits_never_reached();
    // One packet an hour: nothing refills during the run.
    cfg.limits.invite = RateLimit {
        rate: Rate {
            packets: 1,
            per_ns: 3_600_000_000_000,
        },
        burst: 1,
    };
    cfg.ban.after = 0;
    h.maps_mut().apply(&cfg)?;
    let first = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, Sip::invite_with_sdp().build()).build();
    h.run(&first)?;
    Ok(())
}

fn allowlisted(h: &mut Harness) -> Result<()> {
    limits_never_reached(h)?;
    h.maps_mut()
        .allow_add(&[ipnet::IpNet::from(std::net::IpAddr::V4(CLIENT_V4))])?;
    Ok(())
}

/// friendly-scanner as a count-tier signature: the whole header scan runs
/// and the signature is hit, but the source is not banned, so every timed
/// packet takes the same (full) path.
fn scanner_counted(h: &mut Harness) -> Result<()> {
    limits_never_reached(h)?;
    h.maps_mut().signatures_add(
        &["friendly-scanner".to_string()],
        sipguard_common::signature::TIER_COUNT,
    )?;
    Ok(())
}

/// An INVITE of about 1400 bytes whose header section is long (filler
/// headers) and whose User-Agent is the last header: the scan's worst case.
fn worst_case_invite() -> Vec<u8> {
    let mut sip = Sip::request("INVITE").user_agent(None);
    for i in 0..13 {
        sip = sip.header(
            &format!("X-Filler-{i:02}"),
            "abcdefghijklmnopqrstuvwxyz0123456789",
        );
    }
    sip.header("User-Agent", "friendly-scanner")
        .body_len(200)
        .build()
}

/// The frame the server sends to the benchmark client: a response from the
/// SIP port.
fn to_client(payload: &[u8]) -> Vec<u8> {
    udp_v4(SERVER_V4, CLIENT_V4, 5060, CLIENT_PORT, payload)
}

fn unauthorized() -> Vec<u8> {
    to_client(&response(401, "Unauthorized", "REGISTER"))
}

/// Auth failures counted but never reaching a ban (with the default six,
/// every sixth timed 401 would take the rarer, dearer ban path), and one
/// 401 sent first so the client's rate state exists: every timed run
/// updates it instead of the first creating it.
fn auth_failures_never_ban(h: &mut Harness) -> Result<()> {
    let mut cfg = Config::default();
    cfg.auth_fail.after = u32::MAX;
    h.maps_mut().apply(&cfg)?;
    h.egress(&unauthorized())?;
    Ok(())
}

/// Each 401 was counted, and none banned or trusted the client.
fn counted_not_banned(h: &Harness, _runs: u64) -> Result<()> {
    let bans = h.maps().bans_list()?;
    ensure!(bans.is_empty(), "a 401 banned: {bans:?}");
    let trusted = h.maps().trusted_list()?;
    ensure!(trusted.is_empty(), "a 401 earned trust: {trusted:?}");
    Ok(())
}

/// The client holds trust, renewed by every run.
fn trusted_every_run(h: &Harness, runs: u64) -> Result<()> {
    let trusted = h.maps().trusted_list()?;
    let renewals = trusted
        .iter()
        .find(|(k, _)| *k == client_key())
        .map(|(_, t)| t.renewals);
    ensure!(
        renewals == Some(runs) && trusted.len() == 1,
        "the client's trust is {renewals:?} renewals, want {runs}: {trusted:?}"
    );
    Ok(())
}

/// The egress table events (`TableStat`), by name.
fn events(h: &Harness) -> Result<Vec<(&'static str, u64)>> {
    TableStat::ALL
        .iter()
        .map(|&t| Ok((t.name(), h.table_stat(t)?)))
        .collect()
}

/// The benchmarked cases. Add one per interesting path through the program.
fn cases() -> Vec<Case> {
    let invite = Sip::invite_with_sdp().build();
    let scanner_options = Sip::request("OPTIONS")
        .user_agent(Some("friendly-scanner"))
        .from_user("sipvicious-free")
        .build();
    vec![
        Case {
            name: "INVITE from a banned source",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Drop, Reason::Banned, Some(Class::Invite)),
            setup: banned_source,
        },
        Case {
            name: "INVITE from a banned source, a capture runs (not selected)",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Drop, Reason::Banned, Some(Class::Invite)),
            setup: banned_capture_elsewhere,
        },
        Case {
            name: "INVITE from a banned source, captured (over the capture's rate)",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Drop, Reason::Banned, Some(Class::Invite)),
            setup: banned_captured,
        },
        Case {
            name: "INVITE from a banned source, 1024 allowlisted nets",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Drop, Reason::Banned, Some(Class::Invite)),
            setup: banned_with_allowlist,
        },
        Case {
            name: "INVITE over its per-source limit",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Drop, Reason::RateSource, Some(Class::Invite)),
            setup: over_limit,
        },
        Case {
            name: "INVITE over the global budget",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Drop, Reason::RateGlobal, Some(Class::Invite)),
            setup: global_spent,
        },
        Case {
            name: "INVITE from an allowlisted source",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Pass, Reason::Allowlisted, Some(Class::Invite)),
            setup: allowlisted,
        },
        Case {
            name: "scanner OPTIONS (full scan, signature hit)",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, scanner_options).build(),
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Options)),
            setup: scanner_counted,
        },
        Case {
            name: "1400-byte INVITE, User-Agent last (worst case)",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, worst_case_invite()).build(),
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Invite)),
            setup: scanner_counted,
        },
        Case {
            name: "udp/53 not SIP (port lookup only)",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 53, vec![0u8; 64]).build(),
            path: Path::xdp(Verdict::Pass, Reason::NotSipPort, None),
            setup: no_setup,
        },
        Case {
            name: "INVITE+SDP ipv4",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Invite)),
            setup: limits_never_reached,
        },
        Case {
            name: "INVITE+SDP ipv4, header scan off",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, invite.clone()).build(),
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Invite)),
            setup: no_header_scan,
        },
        Case {
            name: "INVITE+SDP ipv6 802.1Q",
            packet: Pkt::udp_v6(CLIENT_V6, SERVER_V6, 5060, invite)
                .vlan(100)
                .build(),
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Invite)),
            setup: limits_never_reached,
        },
        Case {
            name: "200 OK ipv4 (responses are not scanned)",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, Sip::response(200, "OK").build())
                .build(),
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Response)),
            setup: limits_never_reached,
        },
        Case {
            name: "OPTIONS ipv4",
            packet: Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, Sip::request("OPTIONS").build())
                .build(),
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Options)),
            setup: limits_never_reached,
        },
        Case {
            name: "401 to REGISTER (egress, failure counted)",
            packet: unauthorized(),
            path: Path::Egress {
                label: "tc/auth_failure",
                events: &[TableStat::ResponseSeen, TableStat::AuthFailure],
                learnt: counted_not_banned,
            },
            setup: auth_failures_never_ban,
        },
        Case {
            name: "200 OK to REGISTER (egress, trust earned)",
            packet: to_client(&response(200, "OK", "REGISTER")),
            path: Path::Egress {
                label: "tc/trust_earned",
                events: &[TableStat::ResponseSeen, TableStat::TrustEarned],
                learnt: trusted_every_run,
            },
            setup: no_setup,
        },
    ]
}

/// A case whose source changes every packet, as in a spoofed flood:
/// BPF_PROG_TEST_RUN repeats one packet, so each source gets a call of one
/// run, and the figure is the mean of the kernel's time for each.
struct NewSources {
    name: &'static str,
    path: Path,
    setup: fn(&mut Harness) -> Result<()>,
    /// Rate states each run must create (0 or 1).
    new_states: u64,
}

/// Distinct sources (one call each) per new-source case.
const NEW_SOURCES: u32 = 50_000;

/// The global INVITE budget spent (one packet an hour, burst 1, taken
/// here): every new source's INVITE is over it.
fn global_spent(h: &mut Harness) -> Result<()> {
    let mut cfg = Config::default();
    cfg.limits.global.invite = RateLimit {
        rate: Rate {
            packets: 1,
            per_ns: 3_600_000_000_000,
        },
        burst: 1,
    };
    h.maps_mut().apply(&cfg)?;
    h.run(&new_source_invite(u32::MAX))?;
    Ok(())
}

/// An INVITE from source `n` of 2001:db8:0:1::/64 (keyed per address).
fn new_source_invite(n: u32) -> Vec<u8> {
    Pkt::udp_v6(
        sipguard_tests::packet::v6(n),
        SERVER_V6,
        5060,
        Sip::invite_with_sdp().build(),
    )
    .build()
}

fn new_source_cases() -> Vec<NewSources> {
    vec![
        NewSources {
            name: "INVITE, new source, over the global budget",
            path: Path::xdp(Verdict::Drop, Reason::RateGlobal, Some(Class::Invite)),
            setup: global_spent,
            new_states: 0,
        },
        NewSources {
            name: "INVITE, new source, under the global budget",
            path: Path::xdp(Verdict::Pass, Reason::Accepted, Some(Class::Invite)),
            setup: limits_never_reached,
            new_states: 1,
        },
    ]
}

/// Mean kernel time per run over `NEW_SOURCES` calls of one run each, a new
/// source each, and the same for the empty program.
fn measure_new_sources(case: &NewSources) -> Result<(Duration, Duration)> {
    let mut h = Harness::new()?;
    (case.setup)(&mut h).with_context(|| format!("setting up case {:?}", case.name))?;
    let packets: Vec<Vec<u8>> = (0..NEW_SOURCES).map(new_source_invite).collect();
    let before = h.snapshot()?;
    let new_before = h.table_stat(TableStat::SrcStateNew)?;
    let (mut total, mut empty) = (Duration::ZERO, Duration::ZERO);
    for pkt in &packets {
        total += h.run_repeat(pkt, 1)?.1;
    }
    let got = Delta::between(&before, &h.snapshot()?);
    let new_states = h.table_stat(TableStat::SrcStateNew)? - new_before;
    for pkt in &packets {
        empty += h.empty_repeat(pkt, 1)?.1;
    }
    let Path::Xdp {
        verdict,
        reason,
        class,
    } = case.path
    else {
        bail!("case {:?}: only XDP cases take new sources", case.name);
    };
    let want = Delta::one(verdict, reason, class, packets[0].len()).times(NEW_SOURCES.into());
    ensure!(
        got == want && new_states == case.new_states * u64::from(NEW_SOURCES),
        "case {:?} took another path than it names:\n  got  {got:?}, {new_states} new rate \
         states\n  want {want:?}, {} new rate states",
        case.name,
        case.new_states * u64::from(NEW_SOURCES)
    );
    Ok((total / NEW_SOURCES, empty / NEW_SOURCES))
}

struct Args {
    repeat: u32,
    runs: usize,
    filter: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        repeat: DEFAULT_REPEAT,
        runs: DEFAULT_RUNS,
        filter: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().with_context(|| format!("{flag} needs a number"));
        match a.as_str() {
            "--repeat" => args.repeat = value("--repeat")?.parse()?,
            "--runs" => args.runs = value("--runs")?.parse()?,
            "-h" | "--help" => {
                println!("usage: sipguard-bench [--repeat N] [--runs N] [CASE-NAME-FILTER]");
                std::process::exit(0);
            }
            f if f.starts_with('-') => bail!("unknown option {f}; try --help"),
            f => args.filter = Some(f.to_string()),
        }
    }
    ensure!(
        args.repeat >= MIN_REPEAT,
        "--repeat must be at least {MIN_REPEAT}: fewer runs give the kernel's clock too little to average"
    );
    ensure!(args.runs >= 1, "--runs must be at least 1");
    Ok(args)
}

fn machine() -> String {
    let read = |p: &str| {
        fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("?");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "kernel {}, CPU {model} ({cpus} CPUs), bpf_jit_enable={}",
        read("/proc/sys/kernel/osrelease"),
        read("/proc/sys/net/core/bpf_jit_enable"),
    )
}

struct Figures {
    median: Duration,
    min: Duration,
    /// Median over the timed calls of (the call minus the empty program's
    /// call right after it): the program's own cost, each pair measured
    /// under the same conditions. Zero when not paired.
    program: Duration,
}

impl Figures {
    /// From the per-run times of the timed calls (at least one), each with
    /// the per-run time of the empty program timed right after it.
    fn of(pairs: &[(Duration, Duration)]) -> Self {
        let mut times: Vec<Duration> = pairs.iter().map(|p| p.0).collect();
        times.sort();
        let mut own: Vec<Duration> = pairs.iter().map(|(t, e)| t.saturating_sub(*e)).collect();
        own.sort();
        Figures {
            median: times[times.len() / 2],
            min: times[0],
            program: own[own.len() / 2],
        }
    }
}

fn measure(case: &Case, args: &Args) -> Result<Figures> {
    let mut h = Harness::new()?;
    (case.setup)(&mut h).with_context(|| format!("setting up case {:?}", case.name))?;
    let before = h.snapshot()?;
    let events_before = events(&h)?;
    // One untimed call first: warms caches and the JIT image.
    let calls = args.runs + 1;
    let runs = calls as u64 * args.repeat as u64;
    let mut pairs = Vec::with_capacity(args.runs);
    for i in 0..calls {
        let per_run = match case.path {
            Path::Xdp { .. } => h.run_repeat(&case.packet, args.repeat)?.1,
            Path::Egress { .. } => {
                let (action, per_run) = h.egress_repeat(&case.packet, args.repeat)?;
                ensure!(
                    action == TC_ACT_OK,
                    "egress returned {action}, not TC_ACT_OK"
                );
                per_run
            }
        };
        // The floor right after, on the same packet, CPU and conditions.
        let (_, empty) = h.empty_repeat(&case.packet, args.repeat)?;
        if i > 0 {
            pairs.push((per_run, empty));
        }
    }
    let got = Delta::between(&before, &h.snapshot()?);
    let took_path = |what: &str, got: &dyn std::fmt::Debug, want: &dyn std::fmt::Debug| {
        anyhow::anyhow!(
            "case {:?} took another path than it names ({what}):\n  got  {got:?}\n  want {want:?}",
            case.name
        )
    };
    match &case.path {
        Path::Xdp {
            verdict,
            reason,
            class,
        } => {
            let want = Delta::one(*verdict, *reason, *class, case.packet.len()).times(runs);
            if got != want {
                return Err(took_path("counters", &got, &want));
            }
        }
        Path::Egress {
            events: want,
            learnt,
            ..
        } => {
            // The egress program counts nothing per verdict or reason.
            if got != Delta::default() {
                return Err(took_path("XDP counters", &got, &Delta::default()));
            }
            let moved: Vec<(&str, u64)> = events(&h)?
                .into_iter()
                .zip(&events_before)
                .map(|((name, now), (_, was))| (name, now - was))
                .filter(|(_, d)| *d > 0)
                .collect();
            let want: Vec<(&str, u64)> = TableStat::ALL
                .iter()
                .filter(|t| want.contains(t))
                .map(|t| (t.name(), runs))
                .collect();
            if moved != want {
                return Err(took_path("table events", &moved, &want));
            }
            learnt(&h, runs).with_context(|| format!("case {:?}", case.name))?;
        }
    }
    Ok(Figures::of(&pairs))
}

/// Runs per call while a capture copies every packet: fewer than the
/// capture ring holds (each record reserves room for the largest snap),
/// which is drained after each call, so that every timed run copies its
/// packet.
const CAPTURE_REPEAT: u32 = 200;
/// Calls timed for the copying capture (their median and min).
const CAPTURE_CALLS: usize = 2_000;

/// A banned source's INVITE (950 bytes) while a capture selects its drops
/// at a rate no call reaches: each run copies 512 bytes into the ring.
/// The cost per copied packet is this against "INVITE from a banned source".
fn measure_captured() -> Result<Figures> {
    let mut h = Harness::new()?;
    banned_source(&mut h)?;
    // Past the command's bound (`capture::RATE_MAX`): no timed run may be
    // over the rate.
    let mut conf = selection(Verdict::Drop, 1).conf(sipguard::time::monotonic_ns() + HOUR_NS)?;
    conf.limit = sipguard_common::policy::Limit::new(1, 1, 1_000_000);
    h.set_capture(conf)?;
    let pkt = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, Sip::invite_with_sdp().build()).build();
    let mut pairs = Vec::with_capacity(CAPTURE_CALLS);
    for i in 0..=CAPTURE_CALLS {
        let per_run = h.run_repeat(&pkt, CAPTURE_REPEAT)?.1;
        let copied = h.captured()?;
        ensure!(
            copied.len() == CAPTURE_REPEAT as usize && copied.iter().all(|r| r.caplen == 512),
            "a call of {CAPTURE_REPEAT} runs copied {} packets, not one of 512 bytes each",
            copied.len()
        );
        let (_, empty) = h.empty_repeat(&pkt, CAPTURE_REPEAT)?;
        if i > 0 {
            pairs.push((per_run, empty));
        }
    }
    ensure!(h.capture()?.missed == 0, "the capture missed packets");
    Ok(Figures::of(&pairs))
}

/// The copying capture's row.
const CAPTURED: &str = "INVITE from a banned source, copied";

/// The empty program on a 950-byte INVITE: the test-run floor.
fn floor(args: &Args) -> Result<Figures> {
    let mut h = Harness::new()?;
    let pkt = Pkt::udp_v4(CLIENT_V4, SERVER_V4, 5060, Sip::invite_with_sdp().build()).build();
    let mut pairs = Vec::with_capacity(args.runs);
    for i in 0..=args.runs {
        let (action, per_run) = h.empty_repeat(&pkt, args.repeat)?;
        ensure!(action == XDP_PASS, "the empty program returned {action}");
        if i > 0 {
            pairs.push((per_run, per_run));
        }
    }
    Ok(Figures::of(&pairs))
}

fn path(case: &Case) -> String {
    path_of(&case.path)
}

fn path_of(path: &Path) -> String {
    match path {
        Path::Xdp {
            verdict,
            reason,
            class,
        } => {
            let class = class.map_or("-", |c| c.name());
            format!("{}/{}/{class}", verdict.name(), reason.name())
        }
        Path::Egress { label, .. } => label.to_string(),
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if !is_root() {
        bail!(
            "sipguard-bench must run as root (it loads the XDP program and uses \
             BPF_PROG_TEST_RUN): use `cargo xtask bench` or \
             `sudo cargo run --release -p sipguard-lab --bin sipguard-bench`"
        );
    }
    println!("machine: {}", machine());
    println!(
        "BPF_PROG_TEST_RUN, repeat {} per call, median and min of {} calls; ns per packet",
        args.repeat, args.runs
    );
    println!();
    let floor = floor(&args)?;
    println!(
        "an empty XDP program costs {} ns (median; min {}) here: BPF_PROG_TEST_RUN's own \
         cost per run, in every median and min below. program_ns: the program's own cost, \
         the median of (each timed call minus the empty program's call right after it)",
        floor.median.as_nanos(),
        floor.min.as_nanos()
    );
    let mut insns = Harness::new()?.verified_insns();
    insns.sort();
    let insns: Vec<String> = insns.iter().map(|(n, c)| format!("{n} {c}")).collect();
    println!(
        "instructions the verifier walked (budget 1000000 each): {}",
        insns.join(", ")
    );
    println!();
    println!(
        "{:<42} {:>6} {:<32} {:>9} {:>9} {:>10} {:>10}",
        "case", "bytes", "verdict/reason/class", "median_ns", "min_ns", "program_ns", "Mpps/core"
    );
    let wanted = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let cases: Vec<Case> = cases().into_iter().filter(|c| wanted(c.name)).collect();
    let new_sources: Vec<NewSources> = new_source_cases()
        .into_iter()
        .filter(|c| wanted(c.name))
        .collect();
    ensure!(
        !cases.is_empty() || !new_sources.is_empty() || wanted(CAPTURED),
        "no case matches the filter; run without one to list all"
    );
    for case in &cases {
        let f = measure(case, &args)?;
        let median_ns = f.median.as_nanos();
        let mpps = if median_ns > 0 {
            format!("{:.1}", 1_000.0 / median_ns as f64)
        } else {
            "-".into()
        };
        println!(
            "{:<42} {:>6} {:<32} {:>9} {:>9} {:>10} {:>10}",
            case.name,
            case.packet.len(),
            path(case),
            median_ns,
            f.min.as_nanos(),
            f.program.as_nanos(),
            mpps
        );
    }
    if wanted(CAPTURED) {
        let f = measure_captured()?;
        println!();
        println!(
            "a capture copying every packet it selects (512 bytes each into its ring, drained \
             between calls): {CAPTURE_REPEAT} runs per call, median and min of {CAPTURE_CALLS} \
             calls; its cost per copied packet is its program_ns against the banned INVITE's"
        );
        println!(
            "{:<42} {:>6} {:<32} {:>9} {:>9} {:>10}",
            CAPTURED,
            950,
            "drop/banned/invite",
            f.median.as_nanos(),
            f.min.as_nanos(),
            f.program.as_nanos()
        );
    }
    if !new_sources.is_empty() {
        println!();
        println!(
            "a new IPv6 source every packet (keyed per address), {NEW_SOURCES} sources, one \
             call of one run each: mean ns per run as the kernel times a single run (its clock \
             read twice per run is in it), and the empty program's mean timed the same way"
        );
        println!(
            "{:<42} {:>6} {:<32} {:>9} {:>9}",
            "case", "bytes", "verdict/reason/class", "mean_ns", "empty_ns"
        );
        for case in &new_sources {
            let (mean, empty) = measure_new_sources(case)?;
            println!(
                "{:<42} {:>6} {:<32} {:>9} {:>9}",
                case.name,
                new_source_invite(0).len(),
                path_of(&case.path),
                mean.as_nanos(),
                empty.as_nanos()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipguard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
